//! Nodes: their signed heartbeats, which keep them alive and their leases healthy, and the
//! heartbeat timeout, which makes a node silent: its asks are withdrawn, its leases fail
//! (charged to their last healthy heartbeat), and it cannot be matched until it reports
//! again. Liveness counts by the engine's clock at each heartbeat, never the report's.

use std::collections::BTreeSet;

use contract::{
    AccountId, CancelReason, Event, Gpus, LeaseEndCause, LeaseId, MarketId, NodeId, NodeRef,
    OrderId, Rejection, SignedHeartbeat, Timestamp,
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

    /// A node's signed report: it is alive until the timeout of its market (by the engine's
    /// clock), the leases it lists are healthy until the report was made (never later than
    /// now), and a lease it listed before and lists no more fails.
    pub(crate) fn signed_heartbeat(
        &mut self,
        heartbeat: &SignedHeartbeat,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let provider = heartbeat.provider;
        if provider == AccountId::MARKET {
            return Err(Rejection::ReservedAccount { account: provider });
        }
        let market = self.market_of(heartbeat.market)?;
        let config = &self.markets[market as usize].config;
        config.admits_report(
            heartbeat.market,
            heartbeat.simulated,
            heartbeat.reported_at,
            Timestamp(self.now),
        )?;
        let timeout = config.heartbeat_timeout();
        let key = NodeRef {
            provider,
            node: heartbeat.node,
        };
        // A report resent, or overtaken by a newer one, says nothing new; one that could be
        // counted again would stretch its leases' health.
        if let Some(node) = self.nodes.get(&key) {
            if heartbeat.sequence <= node.sequence && node.last_seen.is_some() {
                return Err(Rejection::StaleReport {
                    node: heartbeat.node,
                    sequence: heartbeat.sequence,
                    last: node.sequence,
                });
            }
        }

        let now = self.now;
        let index = self.nodes.entry(key);
        let node = self.nodes.at_mut(index);
        node.sequence = heartbeat.sequence;
        node.last_seen = Some(now);
        node.silent = false;
        node.deadline = now + timeout;
        let leases: Vec<LeaseId> = node.leases.iter().copied().collect();
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
        Ok(())
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
