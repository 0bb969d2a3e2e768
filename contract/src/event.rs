use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    AccountId, Amount, ChainAddress, FailureReason, FeeRate, GpuStatus, Gpus, Hours, LeaseId,
    MarketConfig, MarketId, NewOrder, NodeId, OrderId, Price, Rejection, Reputation, SettlementId,
    SettlementPayout, Side, Timestamp, TxHash,
};

/// What the engine did. Events carry every amount that moved, so projections (the ledger,
/// billing) post them as they are and never recompute engine arithmetic.
///
/// Money moves between four buckets per account: *available*, *held* (open bids),
/// *in lease* (paid into running leases) and, for the market account, fees. Every event
/// below states its movement in its documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    MarketCreated {
        market: MarketId,
        tick: Price,
        fee: FeeRate,
    },
    /// available += amount.
    Deposited { account: AccountId, amount: Amount },
    /// available -= amount.
    Withdrawn { account: AccountId, amount: Amount },
    /// A bid moves `hold` from available to held; an ask holds nothing.
    OrderAccepted {
        order_id: OrderId,
        order: NewOrder,
        hold: Amount,
        /// The provider reputation this ask carries (zero for bids).
        reputation: Reputation,
    },
    /// A fill. The buyer's held money moves: `cost` into the lease and `released` (the
    /// difference a better price leaves) back to available.
    LeaseCreated {
        lease_id: LeaseId,
        market: MarketId,
        buyer: AccountId,
        provider: AccountId,
        node: NodeId,
        bid_order: OrderId,
        ask_order: OrderId,
        gpus: Gpus,
        /// The resting order's price.
        price: Price,
        start: Timestamp,
        hours: Hours,
        cost: Amount,
        released: Amount,
        /// The side of the order that arrived and traded against the resting one.
        taker: Side,
        bid_remaining: u32,
        ask_remaining: u32,
    },
    /// The order's hold changed by `hold_change` (positive: available → held).
    OrderAmended {
        order_id: OrderId,
        account: AccountId,
        price: Price,
        remaining: Gpus,
        hold_change: Amount,
        /// False when the order moved to the back of its (new) price level.
        priority_kept: bool,
    },
    /// The order left the book with `remaining` GPUs unfilled; held → available by
    /// `released`.
    OrderCancelled {
        order_id: OrderId,
        account: AccountId,
        remaining: u32,
        released: Amount,
        reason: CancelReason,
    },
    /// The lease's cost splits into `charged` (= `fee` + `provider_earned`) and `refunded`
    /// (back to the buyer's available balance). in lease −= cost; the buyer's available +=
    /// refunded, the provider's += provider_earned, the market's += fee.
    ///
    /// For a metered lease it follows its [`Event::LeaseClosed`], and its three amounts are
    /// the sums of the lease's [`Event::LeaseAccrued`] events; `hours_used` is the charged
    /// milliseconds in hours, rounded down to six places (display only).
    LeaseEnded {
        lease_id: LeaseId,
        buyer: AccountId,
        provider: AccountId,
        #[serde(with = "rust_decimal::serde::str")]
        hours_used: Decimal,
        charged: Amount,
        fee: Amount,
        provider_earned: Amount,
        refunded: Amount,
        reason: LeaseEndReason,
    },
    ReputationSet {
        provider: AccountId,
        score: Reputation,
    },
    /// The provider started the lease's job `after_ms` after the fill.
    LeaseStarted {
        lease_id: LeaseId,
        provider: AccountId,
        node: NodeId,
        after_ms: u64,
    },
    /// A node reported in; its hardware identified as `gpus` GPUs of class `class`.
    NodeHeartbeat {
        provider: AccountId,
        node: NodeId,
        class: MarketId,
        gpus: Gpus,
    },
    // Schema 2: the chain bridge's events, appended.
    PayoutAddressSet {
        account: AccountId,
        address: ChainAddress,
    },
    /// available → settling.
    WithdrawalRequested { account: AccountId, amount: Amount },
    /// available += amount, like [`Event::Deposited`], from a known chain transfer.
    ChainDeposited {
        account: AccountId,
        amount: Amount,
        tx_hash: TxHash,
        msg_index: u32,
    },
    /// Each payout's `from_available` moves available → settling.
    SettlementOpened {
        batch: SettlementId,
        payouts: Vec<SettlementPayout>,
    },
    /// settling → out of the market, for every payout of the batch.
    SettlementConfirmed {
        batch: SettlementId,
        tx_hash: TxHash,
        height: u64,
        payouts: Vec<SettlementPayout>,
    },
    /// settling → available, for every payout of the batch.
    SettlementFailed {
        batch: SettlementId,
        reason: FailureReason,
        payouts: Vec<SettlementPayout>,
    },
    // Schema 3: metered leases and node liveness, appended.
    MarketConfigured {
        market: MarketId,
        config: MarketConfig,
    },
    /// A node's signed heartbeat, as the report stated it (the report's bytes and signature
    /// are in the command, found by the record's command offset). Liveness and lease health
    /// count from the record's time, never the report's.
    NodeReported {
        provider: AccountId,
        node: NodeId,
        market: MarketId,
        sequence: u64,
        gpus: Vec<GpuStatus>,
        healthy_leases: Vec<LeaseId>,
    },
    /// No heartbeat from the node for longer than its heartbeat timeout: it went silent at
    /// `at` (its last heartbeat plus the timeout). The node's asks are cancelled
    /// (`CancelReason::NodeSilent`) and its leases closed (`LeaseEndCause::NodeSilent`) in
    /// the events that follow; it cannot be matched until it reports again. Its downtime
    /// runs from `last_seen`.
    NodeSilent {
        provider: AccountId,
        node: NodeId,
        last_seen: Timestamp,
        at: Timestamp,
    },
    /// Usage of a metered lease within one charge period, `[from, to)` inside
    /// `[period_start, period_end)`, charged by the market's rule (`contract::market`).
    /// Informational: no money moves until the lease's [`Event::LeaseEnded`], whose amounts
    /// are the sums of these. A lease accrues each period at most once: when the period's
    /// verification is final (`period_end` + the market's heartbeat timeout, up to the last
    /// healthy heartbeat; unverified time of a closed period is never charged), or when the
    /// lease closes (its open periods, up to where it is charged).
    LeaseAccrued {
        lease_id: LeaseId,
        market: MarketId,
        buyer: AccountId,
        provider: AccountId,
        node: NodeId,
        gpus: Gpus,
        price: Price,
        period_start: Timestamp,
        period_end: Timestamp,
        from: Timestamp,
        to: Timestamp,
        charged: Amount,
        fee: Amount,
        provider_earned: Amount,
    },
    /// A metered lease stopped: why, when, and up to when it is charged. Its last
    /// accruals come before this event; its [`Event::LeaseEnded`], which moves the money,
    /// comes right after (or, only when the provider's or the market's account has no room
    /// for the money, with the first later command after which they have).
    LeaseClosed {
        lease_id: LeaseId,
        buyer: AccountId,
        provider: AccountId,
        node: NodeId,
        cause: LeaseEndCause,
        ended_at: Timestamp,
        charged_until: Timestamp,
        /// The milliseconds charged, over all the lease's accruals.
        charged_ms: u64,
    },
    /// After a provider failure of a lease whose bid asked to re-bid, the engine placed
    /// order `order_id` (client id `ClientOrderId::rebid(lease_id)`) for `hours` whole unused
    /// hours. Its `OrderAccepted`, fills and rest follow.
    OrderRebid {
        lease_id: LeaseId,
        buyer: AccountId,
        order_id: OrderId,
        hours: Hours,
    },
    /// The re-bid for a failed lease's unused hours was refused, e.g. for funds.
    RebidRefused {
        lease_id: LeaseId,
        buyer: AccountId,
        reason: Rejection,
    },
    /// The provider moved `amount` from available into its free bond in `market`.
    BondPosted {
        provider: AccountId,
        market: MarketId,
        amount: Amount,
    },
    /// `amount` of free bond left the bond and waits in unbonding until `release_at`.
    BondUnbonding {
        provider: AccountId,
        market: MarketId,
        amount: Amount,
        release_at: Timestamp,
    },
    /// Unbonded `amount` reached its release time and is available again.
    BondReleased {
        provider: AccountId,
        market: MarketId,
        amount: Amount,
    },
    /// A provider failure of lease `lease_id` (its `cause`, with the heartbeat it was judged
    /// by) slashed `slashed` of the bond held behind its GPUs: `buyer_credit` to the buyer's
    /// available balance (compensation: the same share of what it was charged, at most the
    /// slash) and `insurance` to the market's insurance fund. Comes right before the lease's
    /// `LeaseClosed` (for a lease whose payment was held, right before its `LeaseEnded`).
    BondSlashed {
        lease_id: LeaseId,
        market: MarketId,
        provider: AccountId,
        node: NodeId,
        buyer: AccountId,
        slashed: Amount,
        buyer_credit: Amount,
        insurance: Amount,
        cause: LeaseEndCause,
    },
    /// `account` paid `amount` to the market for the `bytes` of blobs it held in the hour
    /// from `hour`; `unpaid`, the part its available balance did not cover, is not taken.
    StorageCharged {
        account: AccountId,
        hour: Timestamp,
        bytes: u64,
        amount: Amount,
        unpaid: Amount,
    },
    /// `account` is the market's checker; the market's nodes are on probation until checked.
    CheckerAppointed {
        market: MarketId,
        account: AccountId,
    },
    /// The market's checker judged the known-answer job of lease `lease_id` on `provider`'s
    /// `node`: `detail` says what it found. Comes before the lease's end (stopped when
    /// passed, rejected and slashed when not).
    NodeChecked {
        market: MarketId,
        provider: AccountId,
        node: NodeId,
        lease_id: LeaseId,
        checker: AccountId,
        passed: bool,
        detail: FailureReason,
    },
    /// The buyer stopped lease `lease_id` holding its payment for review
    /// (`StopLeaseHeld`): it follows the lease's `LeaseClosed`. The lease's `LeaseEnded`
    /// comes when the buyer releases the payment or the hold runs out at `until`; when the
    /// market rejects the work first, its `BondSlashed` comes right before that
    /// `LeaseEnded`, whose reason is then a provider failure.
    PaymentHeld {
        lease_id: LeaseId,
        buyer: AccountId,
        provider: AccountId,
        until: Timestamp,
    },
}

impl Event {
    /// The event's type name, as in its JSON form and the log's record header.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::MarketCreated { .. } => "market_created",
            Event::Deposited { .. } => "deposited",
            Event::Withdrawn { .. } => "withdrawn",
            Event::OrderAccepted { .. } => "order_accepted",
            Event::LeaseCreated { .. } => "lease_created",
            Event::OrderAmended { .. } => "order_amended",
            Event::OrderCancelled { .. } => "order_cancelled",
            Event::LeaseEnded { .. } => "lease_ended",
            Event::ReputationSet { .. } => "reputation_set",
            Event::LeaseStarted { .. } => "lease_started",
            Event::NodeHeartbeat { .. } => "node_heartbeat",
            Event::PayoutAddressSet { .. } => "payout_address_set",
            Event::WithdrawalRequested { .. } => "withdrawal_requested",
            Event::ChainDeposited { .. } => "chain_deposited",
            Event::SettlementOpened { .. } => "settlement_opened",
            Event::SettlementConfirmed { .. } => "settlement_confirmed",
            Event::SettlementFailed { .. } => "settlement_failed",
            Event::MarketConfigured { .. } => "market_configured",
            Event::NodeReported { .. } => "node_reported",
            Event::NodeSilent { .. } => "node_silent",
            Event::LeaseAccrued { .. } => "lease_accrued",
            Event::LeaseClosed { .. } => "lease_closed",
            Event::OrderRebid { .. } => "order_rebid",
            Event::RebidRefused { .. } => "rebid_refused",
            Event::BondPosted { .. } => "bond_posted",
            Event::BondUnbonding { .. } => "bond_unbonding",
            Event::BondReleased { .. } => "bond_released",
            Event::BondSlashed { .. } => "bond_slashed",
            Event::StorageCharged { .. } => "storage_charged",
            Event::CheckerAppointed { .. } => "checker_appointed",
            Event::NodeChecked { .. } => "node_checked",
            Event::PaymentHeld { .. } => "payment_held",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The owner asked.
    Requested,
    /// An IOC order's unfilled rest.
    ImmediateRemainder,
    /// A GTT order reached its time, or an ask could no longer fit a one-hour lease.
    Expired,
    /// Self-trade prevention: the resting order would have traded with an order of the
    /// same account, so the resting one is cancelled (the incoming one carries on).
    SelfTrade,
    /// The provider's reputation dropped below the score this ask advertised.
    ReputationDropped,
    /// The ask's node went silent (schema 3).
    NodeSilent,
    /// The node's latest signed report no longer backs the ask (a GPU gone or unhealthy,
    /// another model, less memory).
    SpecMismatch,
}

impl CancelReason {
    /// The name in the JSON form, e.g. `self_trade`.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Requested => "requested",
            CancelReason::ImmediateRemainder => "immediate_remainder",
            CancelReason::Expired => "expired",
            CancelReason::SelfTrade => "self_trade",
            CancelReason::ReputationDropped => "reputation_dropped",
            CancelReason::NodeSilent => "node_silent",
            CancelReason::SpecMismatch => "spec_mismatch",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseEndReason {
    /// The lease ran its hours, or the job finished.
    Completed,
    /// The buyer stopped it early.
    BuyerStopped,
    /// The node failed or went silent, or the provider stopped it early.
    ProviderFailed,
    /// The operator ended it (schema 3; the reason is in its `LeaseClosed`).
    Operator,
}

impl LeaseEndReason {
    /// The name in the JSON form, e.g. `provider_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseEndReason::Completed => "completed",
            LeaseEndReason::BuyerStopped => "buyer_stopped",
            LeaseEndReason::ProviderFailed => "provider_failed",
            LeaseEndReason::Operator => "operator",
        }
    }
}

/// Why a metered lease stopped, with what the engine judged it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseEndCause {
    /// It ran its hours: charged the whole term.
    TermReached,
    /// The buyer stopped it: charged to then.
    BuyerStopped,
    /// The provider stopped it early. Like every provider failure, charged only to the last
    /// heartbeat that showed it healthy.
    ProviderStopped,
    /// Its node went silent; `last_seen` is the node's last heartbeat.
    NodeSilent { last_seen: Timestamp },
    /// The node's report with this sequence number did not show the lease healthy.
    Unhealthy { sequence: u64 },
    /// No report of its node showed it healthy within the heartbeat timeout of its start:
    /// nothing is charged.
    NotAcknowledged,
    /// The operator ended it: charged to then.
    Operator { reason: FailureReason },
    /// The node's report with this sequence number no longer shows enough GPUs of the
    /// lease's class (one gone, another model, less memory): a provider failure.
    SpecMismatch { sequence: u64 },
    /// The market rejected its work: its provider failed verification, for this reason.
    WorkRejected { reason: FailureReason },
}

impl LeaseEndCause {
    /// The reason its `LeaseEnded` carries.
    pub fn reason(&self) -> LeaseEndReason {
        match self {
            LeaseEndCause::TermReached => LeaseEndReason::Completed,
            LeaseEndCause::BuyerStopped => LeaseEndReason::BuyerStopped,
            LeaseEndCause::ProviderStopped
            | LeaseEndCause::NodeSilent { .. }
            | LeaseEndCause::Unhealthy { .. }
            | LeaseEndCause::NotAcknowledged
            | LeaseEndCause::SpecMismatch { .. }
            | LeaseEndCause::WorkRejected { .. } => LeaseEndReason::ProviderFailed,
            LeaseEndCause::Operator { .. } => LeaseEndReason::Operator,
        }
    }

    /// The name in the JSON form, e.g. `node_silent`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaseEndCause::TermReached => "term_reached",
            LeaseEndCause::BuyerStopped => "buyer_stopped",
            LeaseEndCause::ProviderStopped => "provider_stopped",
            LeaseEndCause::NodeSilent { .. } => "node_silent",
            LeaseEndCause::Unhealthy { .. } => "unhealthy",
            LeaseEndCause::NotAcknowledged => "not_acknowledged",
            LeaseEndCause::Operator { .. } => "operator",
            LeaseEndCause::SpecMismatch { .. } => "spec_mismatch",
            LeaseEndCause::WorkRejected { .. } => "work_rejected",
        }
    }
}

stored_form!(
    CancelReason,
    "cancel reason",
    [
        Requested,
        ImmediateRemainder,
        Expired,
        SelfTrade,
        ReputationDropped,
        NodeSilent,
        SpecMismatch
    ]
);
stored_form!(
    LeaseEndReason,
    "lease end reason",
    [Completed, BuyerStopped, ProviderFailed, Operator]
);
