//! Nodes: their signed heartbeats, which keep them alive and their leases healthy, and the
//! heartbeat timeout, which makes a node silent: its asks are withdrawn, its leases fail
//! (charged to their last healthy heartbeat), and it cannot be matched until it reports
//! again. Liveness counts by the engine's clock at each heartbeat, never the report's.
//!
//! A node's GPUs are what its latest signed report says, never what an ask claims: an ask
//! placed with `PlaceWith` needs a node that reported, and as many free GPUs of the market's
//! class (a reported model among the market's `model_names`, at least the ask's VRAM, the
//! ask's vendor) as it offers (`SPEC_MISMATCH` names the reported value otherwise). Each
//! GPU UUID belongs to one node, even while a report leaves it out: a report naming another
//! node's GPU is refused (`GPU_ALREADY_REGISTERED`), unless that node is silent and the same
//! provider's (the GPU moved), or silent for a week (`GPU_ABANDONED_AFTER_MS`). When a report changes what a node has, asks it no longer backs are withdrawn
//! and leases beyond its GPUs of their class fail (a provider failure).

use std::collections::BTreeSet;

use contract::{
    AccountId, AskSpec, CancelReason, Event, GpuStatus, Gpus, LeaseEndCause, LeaseId, MarketConfig,
    MarketId, NodeId, NodeRef, OrderId, Rejection, SignedHeartbeat, Timestamp, Vendor,
};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::book::Terms;
use crate::clock::Span;
use crate::timers::{Due, Timer};
use crate::Engine;

/// A node the engine knows: it reported, or has metered leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Node {
    pub key: NodeRef,
    /// The engine's clock at its last heartbeat; `None` before its first.
    pub last_seen: Option<i64>,
    /// When it goes silent unless it reports again; `i64::MAX` while it is not reporting
    /// (silent, or never reported).
    pub deadline: i64,
    pub silent: bool,
    /// The sequence number of its last report; each must be above it.
    pub sequence: u64,
    /// Its running metered leases in id order (a set: a node with thousands of leases
    /// loses them one by one in O(log n) each); rebuilt from the leases on restore.
    #[serde(skip)]
    pub leases: BTreeSet<LeaseId>,
    /// The GPUs of its latest accepted signed report. Snapshots write this and `asks`
    /// beside the node (format 6), so the node's own image is format 5's.
    #[serde(skip)]
    pub gpus: Vec<GpuStatus>,
    /// Its asks placed with `PlaceWith`, by id; ids of asks that left the book are dropped
    /// when the next one is added.
    #[serde(skip)]
    pub asks: Vec<OrderId>,
}

/// How long a GPU's node must have been silent before another provider's node may report
/// that GPU as its own.
pub(crate) const GPU_ABANDONED_AFTER_MS: i64 = 7 * 24 * 3_600_000;

/// An ask's or a lease's need the node's report did not meet: what, the reported value,
/// what was needed.
pub(crate) type Shortfall = (&'static str, String, String);

/// How many of `gpus` (a node's latest report) can serve `config`'s market: healthy, of a
/// model the market maps to its class, with at least `vram_gb` GB (the drivers report
/// MiB and a little less than the marketed size: an 80 GB H100 shows 81,559, a 24 GB RTX
/// 4090 24,564, so a GB counts as 1,000 MB), and of `vendor` where one is given. None at
/// all is a shortfall naming the first need no GPU met.
pub(crate) fn backing(
    gpus: &[GpuStatus],
    config: &MarketConfig,
    vendor: Option<Vendor>,
    vram_gb: u32,
) -> Result<u32, Shortfall> {
    let healthy: Vec<&GpuStatus> = gpus.iter().filter(|g| g.healthy).collect();
    let of_class: Vec<&GpuStatus> = healthy
        .iter()
        .copied()
        .filter(|g| config.model_names.contains(&g.model))
        .collect();
    if of_class.is_empty() {
        let reported = match healthy.first() {
            Some(g) => format!("{:?}", g.model.as_str()),
            None => "no healthy GPU".to_owned(),
        };
        let names: Vec<&str> = config.model_names.iter().map(|n| n.as_str()).collect();
        return Err(("model", reported, format!("one of {names:?}")));
    }
    let needed_mb = u64::from(vram_gb) * 1_000;
    let with_memory: Vec<&GpuStatus> = of_class
        .iter()
        .copied()
        .filter(|g| g.memory_mb.is_some_and(|mb| mb >= needed_mb))
        .collect();
    if with_memory.is_empty() {
        let reported = match of_class.iter().filter_map(|g| g.memory_mb).max() {
            Some(mb) => mb.to_string(),
            None => "unknown".to_owned(),
        };
        return Err((
            "memory_mb",
            reported,
            format!("{needed_mb} (the ask's {vram_gb} GB)"),
        ));
    }
    let count = with_memory
        .iter()
        .filter(|g| vendor.is_none_or(|v| g.vendor == v))
        .count();
    if count == 0 {
        let name = |v: Vendor| format!("{v:?}").to_lowercase();
        return Err((
            "vendor",
            name(with_memory[0].vendor),
            vendor.map(name).unwrap_or_default(),
        ));
    }
    Ok(count as u32)
}

/// The nodes in the order the engine first met them (their index is their timer's id, so
/// the order is part of the state, as region bits are).
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    list: Vec<Node>,
    index: FxHashMap<NodeRef, u32>,
    /// Running metered leases, over all nodes: each has one timer entry.
    metered_leases: usize,
}

impl Nodes {
    pub fn restore(list: Vec<Node>) -> Nodes {
        let index = list
            .iter()
            .enumerate()
            .map(|(i, n)| (n.key, i as u32))
            .collect();
        // `add_lease` counts the leases back in as they are restored.
        Nodes {
            list,
            index,
            metered_leases: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn metered_leases(&self) -> usize {
        self.metered_leases
    }

    pub fn list(&self) -> &[Node] {
        &self.list
    }

    pub fn get(&self, key: &NodeRef) -> Option<&Node> {
        self.index.get(key).map(|&i| &self.list[i as usize])
    }

    pub fn index_of(&self, key: &NodeRef) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// The node's index, adding it if it is new.
    pub fn entry(&mut self, key: NodeRef) -> u32 {
        let next = self.list.len() as u32;
        let index = *self.index.entry(key).or_insert(next);
        if index == next {
            self.list.push(Node {
                key,
                last_seen: None,
                deadline: i64::MAX,
                silent: false,
                sequence: 0,
                leases: BTreeSet::new(),
                gpus: Vec::new(),
                asks: Vec::new(),
            });
        }
        index
    }

    pub fn at_mut(&mut self, index: u32) -> &mut Node {
        &mut self.list[index as usize]
    }

    /// The deadline a timer entry must carry to count: set only while the node reports.
    pub fn deadline(&self, index: u32) -> Option<i64> {
        self.list
            .get(index as usize)
            .filter(|n| !n.silent && n.deadline != i64::MAX)
            .map(|n| n.deadline)
    }

    pub fn add_lease(&mut self, key: NodeRef, lease: LeaseId) {
        let index = self.entry(key);
        if self.list[index as usize].leases.insert(lease) {
            self.metered_leases += 1;
        }
    }

    pub fn remove_lease(&mut self, key: NodeRef, lease: LeaseId) {
        if let Some(&index) = self.index.get(&key) {
            if self.list[index as usize].leases.remove(&lease) {
                self.metered_leases -= 1;
            }
        }
    }
}

impl Engine {
    /// Schema 1's heartbeat: a fact for the projections, ordered with the trades it is
    /// judged against; the engine keeps nothing of it.
    pub(crate) fn heartbeat(
        &self,
        provider: AccountId,
        node: NodeId,
        class: MarketId,
        gpus: Gpus,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if provider == AccountId::MARKET {
            return Err(Rejection::ReservedAccount { account: provider });
        }
        out.push(Event::NodeHeartbeat {
            provider,
            node,
            class,
            gpus,
        });
        Ok(())
    }

    /// Whether `heartbeat` may be applied now, without applying it: the market exists and
    /// admits it (simulation, the report's time), it is newer than the node's last, and
    /// none of its GPU UUIDs is another node's. (The API checks the same rules before it
    /// appends a report: `MarketConfig::admits_report` and `Engine::gpu_conflict`.)
    fn admits_heartbeat(&self, heartbeat: &SignedHeartbeat) -> Result<(), Rejection> {
        let provider = heartbeat.provider;
        if provider == AccountId::MARKET {
            return Err(Rejection::ReservedAccount { account: provider });
        }
        let market = self.market_of(heartbeat.market)?;
        self.markets[market as usize].config.admits_report(
            heartbeat.market,
            heartbeat.simulated,
            heartbeat.reported_at,
            Timestamp(self.now),
        )?;
        let key = NodeRef {
            provider,
            node: heartbeat.node,
        };
        let this = self.nodes.index_of(&key);
        // A report resent, or overtaken by a newer one, says nothing new; one that could be
        // counted again would stretch its leases' health.
        if let Some(node) = this.map(|i| &self.nodes.list()[i as usize]) {
            if heartbeat.sequence <= node.sequence && node.last_seen.is_some() {
                return Err(Rejection::StaleReport {
                    node: heartbeat.node,
                    sequence: heartbeat.sequence,
                    last: node.sequence,
                });
            }
        }
        self.gpu_conflict(heartbeat)
    }

    /// Refuses a report naming a GPU UUID twice, or one another node has, unless that node
    /// is silent and the same provider's (the GPU moved) or silent for a week.
    pub fn gpu_conflict(&self, heartbeat: &SignedHeartbeat) -> Result<(), Rejection> {
        let provider = heartbeat.provider;
        let this = self.nodes.index_of(&NodeRef {
            provider,
            node: heartbeat.node,
        });
        for (i, gpu) in heartbeat.gpus.iter().enumerate() {
            if heartbeat.gpus[..i].iter().any(|g| g.uuid == gpu.uuid) {
                return Err(Rejection::GpuAlreadyRegistered {
                    uuid: gpu.uuid.clone(),
                    provider,
                    node: heartbeat.node,
                });
            }
            let Some(&owner) = self.gpu_owners.get(&gpu.uuid) else {
                continue;
            };
            let other = &self.nodes.list()[owner as usize];
            // A GPU moves from a silent node to another of the same provider's at once, to
            // another provider's only once its node has been silent for a week (resold
            // hardware, a reassigned cloud GPU).
            let abandoned = other.silent
                && other
                    .last_seen
                    .is_some_and(|seen| self.now - seen >= GPU_ABANDONED_AFTER_MS);
            let moved = other.silent && (other.key.provider == provider || abandoned);
            if Some(owner) != this && !moved {
                return Err(Rejection::GpuAlreadyRegistered {
                    uuid: gpu.uuid.clone(),
                    provider: other.key.provider,
                    node: other.key.node,
                });
            }
        }
        Ok(())
    }

    /// A node's signed report: it is alive until the timeout of its market (by the engine's
    /// clock), its GPUs are the report's, the leases it lists are healthy until the report
    /// was made (never later than now), and a lease it listed before and lists no more
    /// fails. A change of GPUs re-checks the node's asks and leases against them.
    pub(crate) fn signed_heartbeat(
        &mut self,
        heartbeat: &SignedHeartbeat,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        self.admits_heartbeat(heartbeat)?;
        let provider = heartbeat.provider;
        let market = self.market_of(heartbeat.market)?;
        let timeout = self.markets[market as usize].config.heartbeat_timeout();
        let key = NodeRef {
            provider,
            node: heartbeat.node,
        };

        let now = self.now;
        let index = self.nodes.entry(key);
        let node = self.nodes.at_mut(index);
        node.sequence = heartbeat.sequence;
        node.last_seen = Some(now);
        node.silent = false;
        node.deadline = now + timeout;
        let leases: Vec<LeaseId> = node.leases.iter().copied().collect();
        let old_gpus = std::mem::replace(&mut node.gpus, heartbeat.gpus.clone());
        // A GPU left out of a report stays the node's: a GPU that fell off the bus for one
        // report cannot be claimed by another provider's node meanwhile.
        for gpu in &heartbeat.gpus {
            self.gpu_owners.insert(gpu.uuid.clone(), index);
        }
        self.arm(now + timeout, Due::Node, u64::from(index));
        out.push(Event::NodeReported {
            provider,
            node: heartbeat.node,
            market: heartbeat.market,
            sequence: heartbeat.sequence,
            gpus: heartbeat.gpus.clone(),
            healthy_leases: heartbeat.healthy_leases.clone(),
        });
        let mut listed = heartbeat.healthy_leases.clone();
        listed.sort_unstable();
        for lease_id in leases {
            let lease = self
                .leases
                .get_mut(lease_id)
                .expect("a node lists its running leases");
            if listed.binary_search(&lease_id).is_ok() {
                // Healthy until the report was made, at most until now: an agent's outbox
                // delivering old reports after a network blip never stretches a lease's
                // charge over the blip, and a report claiming a later time counts as now.
                // The report's own time can only lower the charge, never raise it.
                let made = heartbeat.reported_at.0.min(now);
                lease.meter.healthy_until = lease.meter.healthy_until.max(made);
                lease.meter.ack_by = i64::MAX;
            } else if lease.meter.ack_by == i64::MAX {
                // Listed before, so the node knows it: it is no longer healthy. A lease not
                // listed yet has until its acknowledgement deadline.
                let healthy_until = lease.meter.healthy_until;
                let cause = LeaseEndCause::Unhealthy {
                    sequence: heartbeat.sequence,
                };
                self.close_lease(lease_id, cause, healthy_until, out);
            }
        }
        if old_gpus != heartbeat.gpus {
            self.recheck_node(index, heartbeat.sequence, out);
        }
        Ok(())
    }

    /// The GPUs a node has promised: the rest of its `PlaceWith` asks and its running
    /// metered leases.
    fn committed(&self, node: &Node) -> u32 {
        let offered: u32 = node
            .asks
            .iter()
            .filter_map(|id| self.order_index.get(*id))
            .map(|slot| self.orders.get(slot).remaining)
            .sum();
        let leased: u32 = node
            .leases
            .iter()
            .filter_map(|id| self.leases.get(*id))
            .map(|l| l.gpus)
            .sum();
        offered + leased
    }

    /// What an ask placed with `PlaceWith` needs, checked against its node's latest report
    /// and the provider's bond: the bond to hold for it.
    pub(crate) fn check_backing(
        &self,
        provider: AccountId,
        market: u32,
        spec: &AskSpec,
        gpus: u32,
    ) -> Result<i64, Rejection> {
        let node = self
            .nodes
            .get(&NodeRef {
                provider,
                node: spec.node,
            })
            .filter(|n| n.last_seen.is_some())
            .ok_or(Rejection::NodeNotReporting { node: spec.node })?;
        let config = &self.markets[market as usize].config;
        let mismatch = |(what, reported, required): Shortfall| Rejection::SpecMismatch {
            node: spec.node,
            what: what.to_owned(),
            reported,
            required,
        };
        let count =
            backing(&node.gpus, config, Some(spec.vendor), spec.vram_gb).map_err(mismatch)?;
        let free = count.saturating_sub(self.committed(node));
        if gpus > free {
            return Err(mismatch((
                "free_gpus",
                format!("{free} of {count}"),
                gpus.to_string(),
            )));
        }
        let bond =
            crate::funds::overflow(config.bond_per_gpu.micros().checked_mul(i64::from(gpus)))?;
        let free_bond = self.free_bond(provider, market);
        if bond > free_bond {
            return Err(Rejection::InsufficientBond {
                needed: contract::Amount::from_micros(bond),
                free: contract::Amount::from_micros(free_bond),
            });
        }
        Ok(bond)
    }

    /// Records a placed `PlaceWith` ask on its node.
    pub(crate) fn add_node_ask(&mut self, key: NodeRef, order_id: OrderId) {
        if let Some(index) = self.nodes.index_of(&key) {
            let order_index = &self.order_index;
            let node = self.nodes.at_mut(index);
            node.asks.retain(|id| order_index.get(*id).is_some());
            node.asks.push(order_id);
        }
    }

    /// After a report changed a node's GPUs: each ask (in id order) that its GPUs no longer
    /// back with what the node has promised is withdrawn, then its newest leases fail until
    /// the rest fit the GPUs of their class.
    fn recheck_node(&mut self, index: u32, sequence: u64, out: &mut Vec<Event>) {
        let mut asks: Vec<(OrderId, u32)> = self.nodes.list()[index as usize]
            .asks
            .iter()
            .filter_map(|id| self.order_index.get(*id).map(|slot| (*id, slot)))
            .collect();
        asks.sort_unstable();
        for (_, slot) in asks {
            let node = &self.nodes.list()[index as usize];
            let order = self.orders.get(slot);
            let Terms::Ask(terms) = &order.terms else {
                unreachable!("a node's asks are asks")
            };
            let config = &self.markets[order.market as usize].config;
            let backed = backing(&node.gpus, config, Some(terms.vendor), terms.vram_gb)
                .is_ok_and(|count| count >= self.committed(node));
            if !backed {
                self.retire(slot, true, CancelReason::SpecMismatch, out);
            }
        }
        let leases: Vec<LeaseId> = self.nodes.list()[index as usize]
            .leases
            .iter()
            .rev()
            .copied()
            .filter(|id| self.leases.get(*id).is_some_and(|l| l.meter.backed))
            .collect();
        for lease_id in leases {
            let node = &self.nodes.list()[index as usize];
            let lease = self
                .leases
                .get(lease_id)
                .expect("a node lists its running leases");
            let config = &self.market(lease.market).config;
            let count = backing(&node.gpus, config, None, 0).unwrap_or(0);
            let leased: u32 = node
                .leases
                .iter()
                .filter_map(|id| self.leases.get(*id))
                .filter(|l| l.market == lease.market && l.meter.backed)
                .map(|l| l.gpus)
                .sum();
            if leased > count {
                let healthy_until = lease.meter.healthy_until;
                let cause = LeaseEndCause::SpecMismatch { sequence };
                self.close_lease(lease_id, cause, healthy_until, out);
            }
        }
    }

    /// A node's heartbeat timeout passed: it is silent, unless the market itself was down.
    pub(crate) fn node_due(&mut self, timer: Timer, span: Span, out: &mut Vec<Event>) {
        let index = timer.id as u32;
        if self.nodes.deadline(index) != Some(timer.at) {
            return;
        }
        let node = self.nodes.at_mut(index);
        let last_seen = node.last_seen.expect("a reporting node was seen");
        let timeout = node.deadline - last_seen;
        if span.outage_longer_than(timeout) {
            // It could not report while the market was down: a whole timeout from when
            // the market is back.
            node.deadline = span.to + timeout;
            let deadline = node.deadline;
            self.arm(deadline, Due::Node, timer.id);
            return;
        }
        node.silent = true;
        node.deadline = i64::MAX;
        let (key, leases) = (node.key, node.leases.iter().copied().collect::<Vec<_>>());
        out.push(Event::NodeSilent {
            provider: key.provider,
            node: key.node,
            last_seen: Timestamp(last_seen),
            at: Timestamp(timer.at),
        });
        let mut asks: Vec<(OrderId, u32)> = self
            .orders
            .live()
            .filter(|(_, o)| {
                o.account == key.provider && matches!(&o.terms, Terms::Ask(a) if a.node == key.node)
            })
            .map(|(slot, o)| (o.id, slot))
            .collect();
        // Slots differ after a restore; order ids do not.
        asks.sort_unstable();
        for (_, slot) in asks {
            self.retire(slot, true, CancelReason::NodeSilent, out);
        }
        for lease_id in leases {
            let healthy_until = self
                .leases
                .get(lease_id)
                .expect("a node lists its running leases")
                .meter
                .healthy_until;
            let cause = LeaseEndCause::NodeSilent {
                last_seen: Timestamp(last_seen),
            };
            self.close_lease(lease_id, cause, healthy_until, out);
        }
    }

    /// Refuses an ask on a node that went silent and has not reported since.
    pub(crate) fn check_node_reporting(&self, key: NodeRef) -> Result<(), Rejection> {
        match self.nodes.get(&key) {
            Some(node) if node.silent => Err(Rejection::NodeSilent {
                node: key.node,
                last_seen: Timestamp(node.last_seen.unwrap_or_default()),
            }),
            _ => Ok(()),
        }
    }
}
