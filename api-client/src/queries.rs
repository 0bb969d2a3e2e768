//! Reads. Each `…Query` is one query document; its `…Variables`, where it has any, are its
//! arguments. Build one with [`crate::QueryBuilder`].

// The `QueryVariables` derive adds a `…Fields` type without `Debug` beside each struct.
#![allow(missing_debug_implementations)]

use rust_decimal::Decimal;

use crate::types::{LeaseRole, OrderStatus, SettlementBatch};
use crate::{schema, Id, U64};

/// The markets that exist (`gpumarket up` opens its own when there are none).
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Query")]
pub struct MarketsQuery {
    pub markets: Vec<Market>,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct Market {
    pub id: String,
    pub tick: Decimal,
    pub fee_bps: U64,
    /// Usage accrues per charge period of this many seconds.
    pub charge_period_seconds: U64,
    /// A node silent for longer fails its leases.
    pub heartbeat_timeout_ms: U64,
    /// How often an agent should send its signed report.
    pub report_interval_ms: U64,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct DepthVariables {
    pub market: String,
    /// Price levels of each side.
    pub levels: U64,
}

/// A market's live book, from the API's replica engine.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Query", variables = "DepthVariables")]
pub struct DepthQuery {
    #[arguments(market: $market, levels: $levels)]
    pub depth: Depth,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct Depth {
    pub market: String,
    /// Best (highest) first.
    pub bids: Vec<DepthLevel>,
    /// Best (lowest) first.
    pub asks: Vec<DepthLevel>,
    pub as_of_event: U64,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct DepthLevel {
    pub price: Decimal,
    pub gpus: U64,
    pub orders: U64,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct OrdersVariables {
    /// Any status when `None`.
    pub status: Option<OrderStatus>,
    pub first: U64,
}

/// The caller's orders, oldest first, from the projections.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Query", variables = "OrdersVariables")]
pub struct OrdersQuery {
    #[arguments(status: $status, first: $first)]
    pub orders: OrderConnection,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct OrderConnection {
    pub nodes: Vec<Order>,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct Order {
    pub id: U64,
    /// `bid` or `ask`.
    pub side: String,
    /// An ask's node.
    pub node: Option<String>,
    pub price: Decimal,
    pub gpus: U64,
    pub remaining: U64,
    pub status: String,
    /// The failed lease whose unused hours the engine re-bid as this order.
    pub rebid_of: Option<U64>,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct LeasesVariables {
    pub role: LeaseRole,
    /// `created`, `running` or `ended`.
    pub status: String,
    pub first: U64,
}

/// Leases the caller bought or provided, oldest first, with their jobs.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Query", variables = "LeasesVariables")]
pub struct LeasesQuery {
    #[arguments(role: $role, status: $status, first: $first)]
    pub leases: LeaseConnection,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct LeaseConnection {
    pub nodes: Vec<Lease>,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct Lease {
    pub id: U64,
    pub node: String,
    pub gpus: U64,
    pub hours: U64,
    pub status: String,
    /// The end of its term: a job still running then is killed.
    pub ends_at: chrono::DateTime<chrono::Utc>,
    /// The bid it filled.
    pub bid_order: U64,
    /// Why it closed (`term_reached`, `buyer_stopped`, `provider_stopped`, `node_silent`,
    /// `unhealthy`, `not_acknowledged`, `operator`), and what that rests on.
    pub close_cause: Option<String>,
    pub close_detail: Option<String>,
    /// Charged up to here, for this long.
    pub charged_until: Option<chrono::DateTime<chrono::Utc>>,
    pub charged_ms: Option<U64>,
    /// The order its provider failure placed for its unused hours, or why that was refused.
    pub rebid_order: Option<U64>,
    pub rebid_refused: Option<String>,
    pub job: Option<Job>,
}

/// The job a lease's buyer gave it.
#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct Job {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub image: Option<String>,
    pub inputs: Vec<JobInput>,
    pub network: bool,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct JobInput {
    pub cid: String,
    pub path: String,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct RestingOrderVariables {
    pub id: Id,
}

/// A resting order as the engine holds it now; `None` once filled, cancelled or expired.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Query", variables = "RestingOrderVariables")]
pub struct RestingOrderQuery {
    #[arguments(id: $id)]
    pub resting_order: Option<RestingOrder>,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct RestingOrder {
    pub id: U64,
    pub market: String,
    /// `bid` or `ask`.
    pub side: String,
    pub price: Decimal,
    pub filled: U64,
    pub remaining: U64,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct NodeStateVariables {
    pub node: String,
    /// The node's ask, if it has one.
    pub ask: Option<Id>,
}

/// A provider's node as the engine holds it, at one instant.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Query", variables = "NodeStateVariables")]
pub struct NodeStateQuery {
    #[arguments(node: $node, ask: $ask)]
    pub node_state: NodeState,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct NodeState {
    /// GPUs in the provider's running leases on the node.
    pub leased_gpus: U64,
    /// The ask asked about, while it rests.
    pub ask: Option<RestingOrder>,
}

/// The caller's balance as the engine holds it now.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Query")]
pub struct BalanceQuery {
    pub balance: Balance,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct Balance {
    pub account: U64,
    pub available: Decimal,
    pub held: Decimal,
    pub in_lease: Decimal,
    pub settling: Decimal,
}

/// The engine's open settlement batch, if any (the Cosmos bridge).
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Query")]
pub struct PendingSettlementQuery {
    pub pending_settlement: Option<SettlementBatch>,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct SettlementDueVariables {
    /// A decimal amount.
    pub min_payout: String,
    pub max_payouts: U64,
}

/// What a settlement batch opened now would pay (the Cosmos bridge).
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Query", variables = "SettlementDueVariables")]
pub struct SettlementDueQuery {
    #[arguments(minPayout: $min_payout, maxPayouts: $max_payouts)]
    pub settlement_due: SettlementBatch,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct BondsVariables {
    pub provider: Id,
}

/// A provider's bonds per market, from the engine.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Query", variables = "BondsVariables")]
pub struct BondsQuery {
    #[arguments(provider: $provider)]
    pub bonds: Vec<Bond>,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct Bond {
    pub market: String,
    pub free: Decimal,
    pub held: Decimal,
    pub unbonding: Decimal,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct RenderJobVariables {
    pub id: Id,
}

/// One of the caller's render jobs.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Query", variables = "RenderJobVariables")]
pub struct RenderJobQuery {
    #[arguments(id: $id)]
    pub render_job: crate::types::RenderJob,
}
