use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    AccountId, Amount, ChainAddress, FailureReason, FeeRate, Gpus, Hours, LeaseId, MarketId,
    NewOrder, NodeId, OrderId, Price, Reputation, SettlementId, SettlementPayout, Side, Timestamp,
    TxHash,
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
    /// (back to the buyer's available balance).
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
    /// The node failed or went silent.
    ProviderFailed,
}

impl LeaseEndReason {
    /// The name in the JSON form, e.g. `provider_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseEndReason::Completed => "completed",
            LeaseEndReason::BuyerStopped => "buyer_stopped",
            LeaseEndReason::ProviderFailed => "provider_failed",
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
        ReputationDropped
    ]
);
stored_form!(
    LeaseEndReason,
    "lease end reason",
    [Completed, BuyerStopped, ProviderFailed]
);
