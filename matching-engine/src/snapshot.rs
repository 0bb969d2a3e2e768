//! Snapshots: the whole engine state as canonical bytes.
//!
//! The image lists everything in a canonical order (books level by level in priority order,
//! maps sorted by key, nodes in the order the engine met them), so two engines in the same
//! state produce the same bytes, and [`Engine::state_hash`] can compare a live engine with a
//! replay. Deadlines are not written: a restore sets them again from the state.

use std::borrow::Cow;

use contract::{
    AccountId, ChainAddress, FeeRate, GpuStatus, IdempotencyKey, LeaseId, MarketConfig, MarketId,
    NodeRef, OrderId, Region, Reputation, SettlementId, SettlementPayout, ShortText, Side, TxHash,
};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::bonds::{Bond, Unbonding};
use crate::book::{BidExtras, Ladder, Order, Terms};
use crate::funds::Applied;
use crate::index::{ClientIds, Leases};
use crate::liveness::{Node, Nodes};
use crate::metering::{Meter, PendingEnd};
use crate::review::HeldImage;
use crate::settlement::Settlement;
use crate::timers::Due;
use crate::{Engine, Funds, Lease, Market};

/// Format 9: format 4's image, then what metering added ([`Additions`]), then what proving
/// providers added ([`Proofs`]), then storage charges ([`Storage`]), then checks
/// ([`Checks`]), then payments held for review ([`Review`]), then the CRC-32 of all (4
/// bytes). Formats 8 (without held payments), 7 (without checks), 6 (without
/// storage), 5 (without the proofs), 4 (the image and its CRC-32) and 3 (the image with an 8-byte FNV-1a trailer,
/// which ran a byte at a time and took about half of the engine's pause to write a 66 MB
/// snapshot) still restore, with what later formats add at its defaults: markets
/// unconfigured, leases unmetered, no nodes, no bonds.
const MAGIC: &[u8; 8] = b"GPUMKT\x00\x09";
const MAGIC_V8: &[u8; 8] = b"GPUMKT\x00\x08";
const MAGIC_V7: &[u8; 8] = b"GPUMKT\x00\x07";
const MAGIC_V6: &[u8; 8] = b"GPUMKT\x00\x06";
const MAGIC_V5: &[u8; 8] = b"GPUMKT\x00\x05";
const MAGIC_V4: &[u8; 8] = b"GPUMKT\x00\x04";
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

/// Format 5's part after the image. It borrows, as the image does.
#[derive(Default, Serialize, Deserialize)]
struct Additions<'a> {
    /// One per market, in the image's order.
    configs: Vec<Cow<'a, MarketConfig>>,
    /// One per lease, in the image's order.
    meters: Vec<Cow<'a, Meter>>,
    /// The resting bids placed with `PlaceWith`, by order id, with their options.
    metered_bids: Vec<(OrderId, Option<Cow<'a, BidExtras>>)>,
    nodes: Vec<Cow<'a, Node>>,
    pending_ends: Vec<Cow<'a, PendingEnd>>,
    /// Sorted.
    applied: Vec<((AccountId, IdempotencyKey), Applied)>,
}

/// Format 7's part after the proofs: the last hour each account's storage was charged for.
#[derive(Default, Serialize, Deserialize)]
struct Storage {
    /// Sorted.
    charged: Vec<(AccountId, i64)>,
}

/// Format 8's part after storage: each market's checker, the nodes it passed, and the
/// resting asks on probation (written, not derived: a post-only ask whose pass would have
/// made it trade stays on probation).
#[derive(Default, Serialize, Deserialize)]
struct Checks {
    /// One per market, in the image's order.
    checkers: Vec<Option<AccountId>>,
    /// Sorted: (market index, node).
    passed: Vec<(u32, NodeRef)>,
    /// Sorted.
    on_probation: Vec<OrderId>,
}

/// Format 9's part after checks: the closed leases whose payment is held, by lease id.
#[derive(Default, Serialize, Deserialize)]
struct Review {
    held: Vec<HeldImage>,
}

/// Format 6's part after the additions: bonds, the insurance fund and what nodes' reports
/// established.
#[derive(Default, Serialize, Deserialize)]
struct Proofs<'a> {
    /// Sorted.
    bonds: Vec<((AccountId, u32), Bond)>,
    /// By id.
    unbondings: Vec<(u64, Unbonding)>,
    next_unbonding: u64,
    insurance: i64,
    /// Sorted.
    gpu_owners: Vec<(ShortText, u32)>,
    /// One per node, in the additions' order: its reported GPUs and its live asks.
    node_gpus: Vec<Cow<'a, [GpuStatus]>>,
    node_asks: Vec<Vec<OrderId>>,
    /// The running leases of backed asks, with the bond behind them.
    lease_bonds: Vec<(LeaseId, i64)>,
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
        bincode::serialize_into(&mut *out, &image).expect("the engine image always serializes");
        let mut metered_bids: Vec<(OrderId, Option<Cow<'_, BidExtras>>)> = self
            .markets
            .iter()
            .flat_map(|m| m.bids.iter(&self.orders))
            .map(|slot| self.orders.get(slot))
            .filter_map(|o| match &o.terms {
                Terms::Bid(b) if b.metered => Some((o.id, b.extras.as_deref().map(Cow::Borrowed))),
                _ => None,
            })
            .collect();
        metered_bids.sort_unstable_by_key(|(id, _)| *id);
        let additions = Additions {
            configs: self
                .markets
                .iter()
                .map(|m| Cow::Borrowed(&m.config))
                .collect(),
            meters: self
                .leases
                .iter()
                .map(|l| Cow::Borrowed(&l.meter))
                .collect(),
            metered_bids,
            nodes: self.nodes.list().iter().map(Cow::Borrowed).collect(),
            pending_ends: self.pending_ends.iter().map(Cow::Borrowed).collect(),
            applied: sorted(self.applied.iter().map(|(k, v)| (*k, *v))),
        };
        bincode::serialize_into(&mut *out, &additions).expect("the engine image always serializes");
        let live = |ids: &Vec<OrderId>| -> Vec<OrderId> {
            let mut ids: Vec<OrderId> = ids
                .iter()
                .copied()
                .filter(|id| self.order_index.get(*id).is_some())
                .collect();
            ids.sort_unstable();
            ids
        };
        let proofs = Proofs {
            bonds: sorted(self.bonds.iter().map(|(k, v)| (*k, *v))),
            unbondings: self.unbondings.iter().map(|(k, v)| (*k, *v)).collect(),
            next_unbonding: self.next_unbonding,
            insurance: self.insurance,
            gpu_owners: {
                let mut v: Vec<(ShortText, u32)> = self
                    .gpu_owners
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                v.sort_unstable();
                v
            },
            node_gpus: self
                .nodes
                .list()
                .iter()
                .map(|n| Cow::Borrowed(&n.gpus[..]))
                .collect(),
            node_asks: self.nodes.list().iter().map(|n| live(&n.asks)).collect(),
            lease_bonds: self
                .leases
                .iter()
                .filter(|l| l.meter.backed)
                .map(|l| (l.id, l.meter.bond))
                .collect(),
        };
        bincode::serialize_into(&mut *out, &proofs).expect("the engine image always serializes");
        let storage = Storage {
            charged: sorted(self.storage_charged.iter().map(|(k, v)| (*k, *v))),
        };
        bincode::serialize_into(&mut *out, &storage).expect("the engine image always serializes");
        let mut on_probation: Vec<OrderId> = self
            .orders
            .live()
            .filter(|(_, o)| matches!(&o.terms, Terms::Ask(a) if a.probation))
            .map(|(_, o)| o.id)
            .collect();
        on_probation.sort_unstable();
        let checks = Checks {
            checkers: self.markets.iter().map(|m| m.checker).collect(),
            passed: self.passed.iter().copied().collect(),
            on_probation,
        };
        bincode::serialize_into(&mut *out, &checks).expect("the engine image always serializes");
        let review = Review {
            held: self.held.values().map(HeldImage::from).collect(),
        };
        bincode::serialize_into(out, &review).expect("the engine image always serializes");
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
            m if [MAGIC, MAGIC_V8, MAGIC_V7, MAGIC_V6, MAGIC_V5, MAGIC_V4]
                .iter()
                .any(|t| m == &t[..]) =>
            {
                4
            }
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
        let mut reader = image;
        let image: Image = bincode::deserialize_from(&mut reader)?;
        let one_of = |tags: &[&[u8; 8]]| tags.iter().any(|t| magic == &t[..]);
        let additions: Additions = if one_of(&[MAGIC, MAGIC_V8, MAGIC_V7, MAGIC_V6, MAGIC_V5]) {
            bincode::deserialize_from(&mut reader)?
        } else {
            Additions::default()
        };
        let proofs: Proofs = if one_of(&[MAGIC, MAGIC_V8, MAGIC_V7, MAGIC_V6]) {
            bincode::deserialize_from(&mut reader)?
        } else {
            Proofs::default()
        };
        let storage: Storage = if one_of(&[MAGIC, MAGIC_V8, MAGIC_V7]) {
            bincode::deserialize_from(&mut reader)?
        } else {
            Storage::default()
        };
        let checks: Checks = if one_of(&[MAGIC, MAGIC_V8]) {
            bincode::deserialize_from(&mut reader)?
        } else {
            Checks::default()
        };
        let review: Review = if magic == MAGIC {
            bincode::deserialize_from(&mut reader)?
        } else {
            Review::default()
        };
        let lease_bonds: FxHashMap<LeaseId, i64> = proofs.lease_bonds.into_iter().collect();
        let mut metered_bids: FxHashMap<OrderId, Option<Box<BidExtras>>> = additions
            .metered_bids
            .into_iter()
            .map(|(id, extras)| (id, extras.map(|x| Box::new(x.into_owned()))))
            .collect();
        let mut leases: Vec<Lease> = image.leases.into_iter().map(Cow::into_owned).collect();
        if additions.meters.is_empty() {
            for lease in &mut leases {
                lease.meter = Meter::unmetered(lease.start.0);
            }
        } else {
            for (lease, meter) in leases.iter_mut().zip(additions.meters) {
                lease.meter = meter.into_owned();
                if let Some(&bond) = lease_bonds.get(&lease.id) {
                    lease.meter.bond = bond;
                    lease.meter.backed = true;
                }
            }
        }
        let mut nodes: Vec<Node> = additions.nodes.into_iter().map(Cow::into_owned).collect();
        let mut node_gpus = proofs.node_gpus.into_iter();
        let mut node_asks = proofs.node_asks.into_iter();
        for node in &mut nodes {
            node.gpus = node_gpus.next().map(Cow::into_owned).unwrap_or_default();
            node.asks = node_asks.next().unwrap_or_default();
        }
        let backed_asks: rustc_hash::FxHashSet<OrderId> =
            nodes.iter().flat_map(|n| n.asks.iter().copied()).collect();
        let mut funds: FxHashMap<AccountId, Funds> = image.funds.into_iter().collect();
        for ((account, _), bond) in &proofs.bonds {
            funds.entry(*account).or_default().bonded += bond.free + bond.held + bond.unbonding;
        }
        let mut engine = Engine {
            now: image.now,
            next_order_id: image.next_order_id,
            next_lease_id: image.next_lease_id,
            regions: image.regions,
            funds,
            reputations: image.reputations.into_iter().collect(),
            client_ids: image
                .client_ids
                .into_iter()
                .map(|(account, ids)| (account, ids.into_owned()))
                .collect(),
            leases: Leases::restore(leases, image.next_lease_id),
            settlement: Settlement {
                addresses: image.payout_addresses.into_iter().collect(),
                deposits: image.chain_deposits.into_iter().collect(),
                open: image.open_settlement,
                last_batch: image.last_settlement,
            },
            nodes: Nodes::restore(nodes),
            pending_ends: additions
                .pending_ends
                .into_iter()
                .map(Cow::into_owned)
                .collect(),
            applied: additions.applied.into_iter().collect(),
            bonds: proofs.bonds.into_iter().collect(),
            unbondings: proofs.unbondings.into_iter().collect(),
            next_unbonding: proofs.next_unbonding,
            insurance: proofs.insurance,
            gpu_owners: proofs.gpu_owners.into_iter().collect(),
            storage_charged: storage.charged.into_iter().collect(),
            passed: checks.passed.into_iter().collect(),
            held: review
                .held
                .into_iter()
                .map(|h| (h.lease.id, h.into()))
                .collect(),
            ..Engine::default()
        };
        let holds: Vec<(LeaseId, i64)> = engine.held.iter().map(|(id, h)| (*id, h.until)).collect();
        for (id, until) in holds {
            engine.timers.push(until, Due::Held, id.0);
        }
        let unbondings: Vec<(u64, i64)> = engine
            .unbondings
            .iter()
            .map(|(id, u)| (*id, u.release_at))
            .collect();
        for (id, release_at) in unbondings {
            engine.timers.push(release_at, Due::Unbond, id);
        }
        let mut configs = additions.configs.into_iter().map(Cow::into_owned);
        let mut checkers = checks.checkers.into_iter();
        let on_probation: rustc_hash::FxHashSet<OrderId> =
            checks.on_probation.into_iter().collect();
        for (index, m) in image.markets.into_iter().enumerate() {
            let mut market = Market {
                id: m.id,
                tick: m.tick,
                fee: m.fee,
                config: configs.next().unwrap_or_default(),
                checker: checkers.next().flatten(),
                bids: Ladder::new(Side::Bid),
                asks: Ladder::new(Side::Ask),
            };
            for mut order in m.bids.into_iter().chain(m.asks) {
                if let (Terms::Bid(terms), Some(extras)) =
                    (&mut order.terms, metered_bids.remove(&order.id))
                {
                    terms.metered = true;
                    terms.extras = extras;
                }
                if let Terms::Ask(terms) = &mut order.terms {
                    terms.backed = backed_asks.contains(&order.id);
                    terms.probation = on_probation.contains(&order.id);
                }
                let (id, side, expires_at) = (order.id, order.side, order.expires_at);
                let slot = engine.orders.insert(order);
                market.ladder_mut(side).push_back(&mut engine.orders, slot);
                engine.order_index.insert(id, slot);
                if expires_at != i64::MAX {
                    engine.timers.push(expires_at, Due::Order { slot }, id.0);
                }
            }
            engine.market_index.insert(market.id, index as u32);
            engine.markets.push(market);
        }
        for index in 0..engine.nodes.len() as u32 {
            if let Some(deadline) = engine.nodes.deadline(index) {
                engine.timers.push(deadline, Due::Node, u64::from(index));
            }
        }
        let metered: Vec<(NodeRef, contract::LeaseId, i64)> = engine
            .leases
            .iter()
            .filter(|l| l.meter.metered)
            .map(|l| {
                let node = NodeRef {
                    provider: l.provider,
                    node: l.node,
                };
                (node, l.id, l.meter.deadline)
            })
            .collect();
        for (node, id, deadline) in metered {
            engine.nodes.add_lease(node, id);
            engine.timers.push(deadline, Due::Lease, id.0);
        }
        Ok(engine)
    }
}
