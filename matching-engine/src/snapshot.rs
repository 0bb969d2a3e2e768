//! Snapshots: the whole engine state as canonical bytes.
//!
//! The image lists everything in a canonical order (books level by level in priority order,
//! maps sorted by key), so two engines in the same state produce the same bytes whatever
//! their history, and [`Engine::state_hash`] can compare a live engine with a replay.

use std::borrow::Cow;
use std::cmp::Reverse;

use contract::{
    AccountId, ChainAddress, FeeRate, MarketId, Region, Reputation, SettlementId, SettlementPayout,
    Side, TxHash,
};
use serde::{Deserialize, Serialize};

use crate::book::{Ladder, Order};
use crate::index::{ClientIds, Leases};
use crate::settlement::Settlement;
use crate::{Engine, Funds, Lease, Market};

/// Format 4: the image, then its CRC-32 (4 bytes). Format 3, the same image with an 8-byte
/// FNV-1a trailer, still restores: FNV-1a runs a byte at a time and took about half of the
/// engine's pause to write a 66 MB snapshot.
const MAGIC: &[u8; 8] = b"GPUMKT\x00\x04";
const MAGIC_V3: &[u8; 8] = b"GPUMKT\x00\x03";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not an engine snapshot, or one of another format version")]
    BadMagic,
    #[error("the snapshot is truncated or corrupt (checksum mismatch)")]
    Corrupt,
    #[error("the snapshot cannot be decoded: {0}")]
    Decode(#[from] bincode::Error),
}

/// The image borrows the big collections (every lease, every account's client ids) when it is
/// written, instead of copying them first; restored, they are owned.
#[derive(Serialize, Deserialize)]
struct Image<'a> {
    now: i64,
    next_order_id: u64,
    next_lease_id: u64,
    regions: Vec<Region>,
    markets: Vec<MarketImage>,
    funds: Vec<(AccountId, Funds)>,
    reputations: Vec<(AccountId, Reputation)>,
    client_ids: Vec<(AccountId, Cow<'a, ClientIds>)>,
    leases: Vec<Cow<'a, Lease>>,
    payout_addresses: Vec<(AccountId, ChainAddress)>,
    /// Sorted.
    chain_deposits: Vec<(TxHash, u32)>,
    open_settlement: Option<(SettlementId, Vec<SettlementPayout>)>,
    last_settlement: u64,
}

#[derive(Serialize, Deserialize)]
struct MarketImage {
    id: MarketId,
    tick: i64,
    fee: FeeRate,
    /// Worst level first, each level in time priority.
    bids: Vec<Order>,
    asks: Vec<Order>,
}

/// FNV-1a: small, dependency-free and stable across platforms and releases.
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn sorted<K: Ord + Copy, V: Clone>(map: impl Iterator<Item = (K, V)>) -> Vec<(K, V)> {
    let mut v: Vec<(K, V)> = map.collect();
    v.sort_unstable_by_key(|(k, _)| *k);
    v
}

impl Engine {
    /// Appends the canonical image to `out`.
    fn write_image(&self, out: &mut Vec<u8>) {
        let ladder_orders = |ladder: &Ladder| -> Vec<Order> {
            let mut orders: Vec<Order> = ladder
                .iter(&self.orders)
                .map(|s| self.orders.get(s).clone())
                .collect();
            // `iter` walks best level first; the image stores worst first so a restore
            // appends levels in order.
            let mut by_level: Vec<Vec<Order>> = Vec::new();
            for o in orders.drain(..) {
                match by_level.last_mut() {
                    Some(level) if level[0].price == o.price => level.push(o),
                    _ => by_level.push(vec![o]),
                }
            }
            by_level.into_iter().rev().flatten().collect()
        };
        let image = Image {
            now: self.now,
            next_order_id: self.next_order_id,
            next_lease_id: self.next_lease_id,
            regions: self.regions.clone(),
            markets: self
                .markets
                .iter()
                .map(|m| MarketImage {
                    id: m.id,
                    tick: m.tick,
                    fee: m.fee,
                    bids: ladder_orders(&m.bids),
                    asks: ladder_orders(&m.asks),
                })
                .collect(),
            funds: sorted(self.funds.iter().map(|(k, v)| (*k, *v))),
            reputations: sorted(self.reputations.iter().map(|(k, v)| (*k, *v))),
            client_ids: sorted(self.client_ids.iter().map(|(k, v)| (*k, Cow::Borrowed(v)))),
            leases: self.leases.iter().map(Cow::Borrowed).collect(),
            payout_addresses: sorted(
                self.settlement
                    .addresses
                    .iter()
                    .map(|(k, v)| (*k, v.clone())),
            ),
            chain_deposits: {
                let mut v: Vec<_> = self.settlement.deposits.iter().copied().collect();
                v.sort_unstable();
                v
            },
            open_settlement: self.settlement.open.clone(),
            last_settlement: self.settlement.last_batch,
        };
        bincode::serialize_into(out, &image).expect("the engine image always serializes");
    }

    /// The whole state as self-checking bytes: a format tag, the canonical image and its
    /// checksum.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        self.write_image(&mut bytes);
        let sum = crc32fast::hash(&bytes[MAGIC.len()..]);
        bytes.extend_from_slice(&sum.to_le_bytes());
        bytes
    }

    /// A hash of the canonical state: equal for equal states, whatever their history.
    pub fn state_hash(&self) -> u64 {
        let mut image = Vec::new();
        self.write_image(&mut image);
        fnv64(&image)
    }

    /// Rebuilds an engine from [`Engine::snapshot`] bytes, refusing anything damaged.
    pub fn restore(bytes: &[u8]) -> Result<Engine, SnapshotError> {
        let magic = bytes.get(..MAGIC.len()).ok_or(SnapshotError::BadMagic)?;
        let trailer = match magic {
            m if m == MAGIC => 4,
            m if m == MAGIC_V3 => 8,
            _ => return Err(SnapshotError::BadMagic),
        };
        let body = &bytes[MAGIC.len()..];
        let split = body
            .len()
            .checked_sub(trailer)
            .ok_or(SnapshotError::Corrupt)?;
        let (image, sum) = body.split_at(split);
        let intact = match trailer {
            4 => crc32fast::hash(image).to_le_bytes() == sum,
            _ => fnv64(image).to_le_bytes() == sum,
        };
        if !intact {
            return Err(SnapshotError::Corrupt);
        }
        let image: Image = bincode::deserialize(image)?;
        let mut engine = Engine {
            now: image.now,
            next_order_id: image.next_order_id,
            next_lease_id: image.next_lease_id,
            regions: image.regions,
            funds: image.funds.into_iter().collect(),
            reputations: image.reputations.into_iter().collect(),
            client_ids: image
                .client_ids
                .into_iter()
                .map(|(account, ids)| (account, ids.into_owned()))
                .collect(),
            leases: Leases::restore(
                image.leases.into_iter().map(Cow::into_owned).collect(),
                image.next_lease_id,
            ),
            settlement: Settlement {
                addresses: image.payout_addresses.into_iter().collect(),
                deposits: image.chain_deposits.into_iter().collect(),
                open: image.open_settlement,
                last_batch: image.last_settlement,
            },
            ..Engine::default()
        };
        for (index, m) in image.markets.into_iter().enumerate() {
            let mut market = Market {
                id: m.id,
                tick: m.tick,
                fee: m.fee,
                bids: Ladder::new(Side::Bid),
                asks: Ladder::new(Side::Ask),
            };
            for order in m.bids.into_iter().chain(m.asks) {
                let (id, side, expires_at) = (order.id, order.side, order.expires_at);
                let slot = engine.orders.insert(order);
                market.ladder_mut(side).push_back(&mut engine.orders, slot);
                engine.order_index.insert(id, slot);
                if expires_at != i64::MAX {
                    engine.expiries.push(Reverse((expires_at, id)));
                }
            }
            engine.market_index.insert(market.id, index as u32);
            engine.markets.push(market);
        }
        Ok(engine)
    }
}
