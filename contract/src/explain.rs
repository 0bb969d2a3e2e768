use serde::{Deserialize, Serialize};

use crate::{Interconnect, NodeId, OrderId, Price, Region, Reputation, Timestamp, Vendor};

/// Why a resting order has not traded: every counter-order at a price it would accept, in
/// priority order, with the constraint that kept the two apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub order_id: OrderId,
    pub skipped: Vec<SkippedOrder>,
    /// True when more counter-orders were skipped than the explanation lists.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedOrder {
    pub order_id: OrderId,
    pub price: Price,
    pub gpus: u32,
    pub reason: Exclusion,
}

/// The first constraint that keeps a bid and an ask apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    SameAccount,
    Vendor {
        ask: Vendor,
    },
    VramTooLow {
        ask_gb: u32,
        min_gb: u32,
    },
    RegionNotAllowed {
        ask: Region,
    },
    InterconnectNotAllowed {
        ask: Interconnect,
    },
    ReputationTooLow {
        ask: Reputation,
        min: Reputation,
    },
    /// The node is not offered for the bid's whole duration.
    NotAvailableLongEnough {
        available_until: Timestamp,
        needed_until: Timestamp,
    },
    /// A single-node or all-or-none bid needs more GPUs than the ask has.
    NodeTooSmall {
        ask_gpus: u32,
        needed: u32,
    },
    /// The bid's minimum fill is larger than the ask.
    BelowMinFill {
        ask_gpus: u32,
        min_fill: u32,
    },
    /// The bid excludes the ask's node (one of its leases failed there, or its buyer chose so).
    NodeExcluded {
        node: NodeId,
    },
    /// The ask's node is on probation: the market's checker has not yet passed it, and
    /// only the checker's bid for that node may take it.
    OnProbation {
        node: NodeId,
    },
}
