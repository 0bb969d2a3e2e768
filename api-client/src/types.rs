//! What several operations share: the schema's enums, the order inputs and settlement
//! batches.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::{schema, Id, U64};

#[derive(cynic::Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeInForce {
    Gtc,
    Gtt,
    Ioc,
    Fok,
}

#[derive(cynic::Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Open,
    Filled,
    Cancelled,
}

#[derive(cynic::Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRole {
    Buyer,
    Provider,
    Either,
}

#[derive(cynic::Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Trader,
    Provider,
    Finance,
    Admin,
}

/// One of a job's inputs: a blob the buyer holds, at `/job/in/<path>` in its sandbox.
#[derive(cynic::InputObject, Debug, Clone)]
#[cynic(graphql_type = "JobInputInput")]
pub struct JobInput {
    pub cid: String,
    pub path: String,
}

/// A bid or an ask. `expiresAt` (for `GTT`) and `postOnly` keep the schema's defaults: no
/// Rust caller sets them yet.
#[derive(cynic::InputObject, Debug, Clone)]
pub struct PlaceOrderInput {
    pub market: String,
    /// The caller's idempotency key: a retry with it returns the first answer.
    pub client_order_id: String,
    /// Per GPU-hour, a decimal on the market's tick.
    pub price: String,
    pub gpus: U64,
    pub time_in_force: TimeInForce,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub bid: Option<BidInput>,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub ask: Option<AskInput>,
}

/// A bid's terms; its other constraints (regions, VRAM, interconnects, ...) keep the
/// schema's defaults, "any": no Rust caller narrows them yet. [`BidInput::new`] is a bid
/// with no options.
#[derive(cynic::InputObject, Debug, Clone)]
pub struct BidInput {
    pub hours: U64,
    /// Only providers whose score is at least this (0 to 1000; `None`: any).
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub min_reputation: Option<U64>,
    /// Re-bid the unused hours when a lease fails through its provider.
    pub rebid_on_failure: bool,
    /// Nodes whose asks this bid never takes (at most 32).
    pub exclude_nodes: Vec<NodeRefInput>,
}

impl BidInput {
    /// A bid for `hours` with no options.
    pub fn new(hours: U64) -> BidInput {
        BidInput {
            hours,
            min_reputation: None,
            rebid_on_failure: false,
            exclude_nodes: Vec::new(),
        }
    }
}

/// A node by its provider's account and its name.
#[derive(cynic::InputObject, Debug, Clone)]
pub struct NodeRefInput {
    pub provider: Id,
    pub node: String,
}

/// A market's parameters for `configureMarket`; a field left `None` takes the market's
/// default (not its current value).
#[derive(cynic::InputObject, Debug, Clone, Default)]
pub struct MarketConfigInput {
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub charge_period_seconds: Option<U64>,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub report_interval_ms: Option<U64>,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_ms: Option<U64>,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub simulated: Option<bool>,
    /// A decimal.
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub bond_per_gpu: Option<String>,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub slash_share_bps: Option<U64>,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub unbonding_delay_ms: Option<U64>,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub report_clock_window_ms: Option<U64>,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub model_names: Option<Vec<String>>,
}

/// An ask's node and what it offers.
#[derive(cynic::InputObject, Debug, Clone)]
pub struct AskInput {
    pub node: String,
    /// `nvidia` or `amd`.
    pub vendor: String,
    pub vram_gb: U64,
    /// `pcie`, `nvlink`, `nvswitch` or `infinity_fabric`.
    pub interconnect: String,
    pub region: String,
    pub available_until: DateTime<Utc>,
}

/// A settlement batch: the engine's open one, one just opened, or a preview (no `batch`).
#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct SettlementBatch {
    pub batch: Option<U64>,
    pub total: Decimal,
    pub lines: Vec<SettlementLine>,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct SettlementLine {
    pub account: U64,
    pub address: String,
    pub amount: Decimal,
    pub from_available: Decimal,
}

/// A render job as `submitRenderJob` takes it. [`RenderJobInput::new`] fills what every
/// job names; the rest keep the schema's defaults where `None` (checks, attempts, frames per
/// lease, review window, tolerance).
#[derive(cynic::InputObject, Debug, Clone)]
pub struct RenderJobInput {
    pub client_job_id: String,
    /// The `.blend` scene's cid (a blob the buyer holds).
    pub scene: String,
    pub frame_start: i32,
    pub frame_end: i32,
    pub engine_version: String,
    pub market: String,
    pub limit_price: String,
    pub budget: String,
    pub frame_seconds: i32,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub check_share: Option<Decimal>,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub frames_per_task: Option<i32>,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub review_seconds: Option<i32>,
    #[cynic(skip_serializing_if = "Option::is_none")]
    pub check_within_seconds: Option<i32>,
}

#[derive(cynic::Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderStatus {
    Running,
    Done,
}

/// A render job's progress: frames in each state.
#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct RenderProgress {
    pub frames: i32,
    pub rendering: i32,
    pub checking: i32,
    pub delivered: i32,
    pub accepted: i32,
    pub failed: i32,
}

/// A provider that failed verification, on which frame, why.
#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct RenderVerdict {
    pub provider: Id,
    pub frame: i32,
    pub reason: String,
}

/// What a render job's buyer follows: its state, progress and verdicts.
#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct RenderJob {
    pub id: Id,
    pub status: RenderStatus,
    pub progress: RenderProgress,
    pub verdicts: Vec<RenderVerdict>,
}
