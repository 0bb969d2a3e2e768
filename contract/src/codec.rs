//! The log's record format: what a command or event record holds and how it is encoded.
//!
//! Payloads are compact binary (bincode, variable-length integers); the schema version
//! travels beside the payload (a Kafka header, a field of the embedded log's frame) so a
//! reader can refuse what it does not understand before decoding. Decoding never panics:
//! an unknown version or damaged bytes are a [`DecodeError`].

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::{Command, Event, Rejection, Timestamp};

/// The schema version this build writes.
pub const SCHEMA: u16 = 3;

/// The oldest schema this build reads. Each schema since only appended enum variants, so
/// older payloads decode unchanged: schema 2 the chain bridge's commands, events and
/// rejections; schema 3 metered leases (`PlaceWith`, `StopLease`, `AdminEndLease`,
/// `LeaseAccrued`, `LeaseClosed`, …), node liveness (`SignedHeartbeat`, `NodeSilent`),
/// market parameters (`ConfigureMarket`) and idempotent money commands; later, bonds, and
/// storage charges (`ChargeStorage`, `StorageCharged`).
pub const OLDEST_SCHEMA: u16 = 1;

/// No record is larger: a corrupt length prefix cannot make a reader allocate more.
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// A command as it sits in the log: stamped with the time the market accepted it, which is
/// the only time the engine ever sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub at: Timestamp,
    pub command: Command,
}

/// One record of a shard's event partition. `seq` numbers every record of the shard from
/// zero without gaps; `command_offset` is the position of the command that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: u64,
    pub command_offset: u64,
    pub at: Timestamp,
    pub body: EventBody,
}

/// A command's answer: the events it caused, or its rejection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventBody {
    Event(Event),
    Rejected(Rejection),
}

impl EventBody {
    /// The record's type, as written in its header.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Event(e) => e.kind(),
            EventBody::Rejected(_) => "rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record schema version {found} is not supported (this build reads {OLDEST_SCHEMA} to {SCHEMA})")]
    UnknownSchema { found: u16 },
    #[error("corrupt record: {reason}")]
    Corrupt { reason: String },
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_limit(MAX_RECORD_BYTES)
        .reject_trailing_bytes()
}

/// Encodes a record payload for schema [`SCHEMA`].
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    options()
        .serialize(record)
        .expect("contract types always serialize")
}

/// Encodes into a reused buffer (cleared first), for hot paths.
pub fn encode_into<T: Serialize>(record: &T, buf: &mut Vec<u8>) {
    buf.clear();
    options()
        .serialize_into(buf, record)
        .expect("contract types always serialize");
}

/// Decodes a payload written with schema `schema`.
pub fn decode<T: for<'de> Deserialize<'de>>(schema: u16, payload: &[u8]) -> Result<T, DecodeError> {
    if !(OLDEST_SCHEMA..=SCHEMA).contains(&schema) {
        return Err(DecodeError::UnknownSchema { found: schema });
    }
    options()
        .deserialize(payload)
        .map_err(|e| DecodeError::Corrupt {
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        AccountId, AskSpec, BidSpec, CancelReason, ClientOrderId, Gpus, Hours, Interconnect,
        LeaseEndReason, LeaseId, MarketId, NewOrder, NodeId, OrderId, OrderTerms, Price, Region,
        TimeInForce, Vendor,
    };

    fn samples() -> Vec<CommandRecord> {
        let bid = NewOrder {
            account: AccountId(1),
            client_id: ClientOrderId(u128::MAX),
            market: MarketId::parse("H100-80GB").unwrap(),
            price: Price::parse("2.15").unwrap(),
            gpus: Gpus::new(8).unwrap(),
            tif: TimeInForce::Gtt {
                expires_at: Timestamp(99),
            },
            post_only: true,
            terms: OrderTerms::Bid(BidSpec {
                regions: vec![Region::parse("eu-west").unwrap()],
                interconnects: vec![Interconnect::NvLink],
                vendor: Some(Vendor::Nvidia),
                single_node: true,
                min_fill: Some(Gpus::new(2).unwrap()),
                ..BidSpec::any(Hours::new(3).unwrap())
            }),
        };
        let ask = NewOrder {
            terms: OrderTerms::Ask(AskSpec {
                node: NodeId::parse("fra-1").unwrap(),
                vendor: Vendor::Amd,
                vram_gb: 192,
                interconnect: Interconnect::InfinityFabric,
                region: Region::parse("eu-west").unwrap(),
                available_until: Timestamp(1 << 50),
            }),
            ..bid.clone()
        };
        [
            Command::Place(bid.clone()),
            Command::Place(ask),
            Command::EndLease {
                by: AccountId(3),
                lease_id: LeaseId(4),
                hours_used: "2.125".parse().unwrap(),
                reason: LeaseEndReason::ProviderFailed,
            },
            Command::Tick,
            Command::PlaceWith {
                order: bid.clone(),
                options: crate::OrderOptions {
                    rebid_on_failure: true,
                    exclude_nodes: vec![crate::NodeRef {
                        provider: AccountId(9),
                        node: NodeId::parse("fra-2").unwrap(),
                    }],
                },
            },
            Command::ConfigureMarket {
                market: MarketId::parse("H100-80GB").unwrap(),
                config: crate::MarketConfig::new(crate::MarketConfigFields {
                    charge_period: crate::ChargePeriod::new(60).unwrap(),
                    model_names: vec![crate::ShortText::parse("NVIDIA H100 80GB HBM3").unwrap()],
                    ..crate::MarketConfigFields::default()
                })
                .unwrap(),
            },
            Command::SignedHeartbeat(Box::new(crate::SignedHeartbeat {
                provider: AccountId(9),
                node: NodeId::parse("fra-1").unwrap(),
                market: MarketId::parse("H100-80GB").unwrap(),
                sequence: 12,
                reported_at: Timestamp(1_700_000_000_000),
                simulated: false,
                gpus: vec![crate::GpuStatus {
                    index: 0,
                    vendor: Vendor::Nvidia,
                    model: crate::ShortText::parse("NVIDIA H100 80GB HBM3").unwrap(),
                    uuid: crate::ShortText::parse("GPU-5c1b").unwrap(),
                    memory_mb: Some(81_559),
                    pci_bus_id: None,
                    healthy: true,
                }],
                healthy_leases: vec![LeaseId(4)],
                evidence: crate::ReportEvidence {
                    node_key: crate::NodeKey([1; 32]),
                    signed: b"{}".to_vec(),
                    signature: crate::Signature([2; 64]),
                },
            })),
            Command::DepositOnce {
                account: AccountId(1),
                amount: crate::Amount::parse("5").unwrap(),
                key: crate::IdempotencyKey(u128::MAX),
            },
        ]
        .into_iter()
        .map(|command| CommandRecord {
            at: Timestamp(1_700_000_000_000),
            command,
        })
        .collect()
    }

    #[test]
    fn records_round_trip() {
        for record in samples() {
            let bytes = encode(&record);
            assert_eq!(decode::<CommandRecord>(SCHEMA, &bytes), Ok(record));
        }
        let event = EventRecord {
            seq: 7,
            command_offset: 9,
            at: Timestamp(5),
            body: EventBody::Event(Event::OrderCancelled {
                order_id: OrderId(3),
                account: AccountId(1),
                remaining: 2,
                released: crate::Amount::parse("1.5").unwrap(),
                reason: CancelReason::Expired,
            }),
        };
        assert_eq!(event.body.kind(), "order_cancelled");
        assert_eq!(decode(SCHEMA, &encode(&event)), Ok(event));
        let rejected = EventBody::Rejected(Rejection::NothingToAmend);
        assert_eq!(decode(SCHEMA, &encode(&rejected)), Ok(rejected));
    }

    #[test]
    fn unknown_versions_and_damage_are_typed_errors() {
        let bytes = encode(&samples()[0]);
        assert_eq!(
            decode::<CommandRecord>(SCHEMA + 1, &bytes),
            Err(DecodeError::UnknownSchema { found: SCHEMA + 1 })
        );
        assert_eq!(
            decode::<CommandRecord>(0, &bytes),
            Err(DecodeError::UnknownSchema { found: 0 })
        );
        // Records of every older schema still read.
        for schema in OLDEST_SCHEMA..SCHEMA {
            assert_eq!(decode(schema, &bytes), Ok(samples().remove(0)));
        }
        for cut in 0..bytes.len() {
            assert!(decode::<CommandRecord>(SCHEMA, &bytes[..cut]).is_err());
        }
        let mut noisy = bytes.clone();
        noisy.push(0);
        assert!(decode::<CommandRecord>(SCHEMA, &noisy).is_err());
        // Garbage decodes to an error, never a panic or a huge allocation.
        let garbage: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        assert!(decode::<CommandRecord>(SCHEMA, &garbage).is_err());
    }
}
