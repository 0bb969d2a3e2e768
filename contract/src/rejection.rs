use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    AccountId, Amount, ClientOrderId, ErrorCode, Gpus, IdempotencyKey, LeaseId, MarketId, NodeId,
    OrderId, Price, SettlementId, ShortText, Timestamp, TxHash,
};

/// Why the engine refused a command. A rejected command changes nothing.
///
/// Each variant has a stable machine-readable [`Rejection::code`]; the API maps the codes to
/// GraphQL `extensions.code` and HTTP statuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Rejection {
    #[error("unknown market {market}")]
    UnknownMarket { market: MarketId },
    #[error("market {market} already exists")]
    MarketExists { market: MarketId },
    #[error("price {price} is not a multiple of the market's tick {tick}")]
    PriceOffTick { price: Price, tick: Price },
    #[error("amount must be positive (got {amount})")]
    NonPositiveAmount { amount: Amount },
    #[error("insufficient funds: {needed} needed, {available} available")]
    InsufficientFunds { needed: Amount, available: Amount },
    #[error("the amount does not fit the engine's range")]
    AmountOverflow,
    #[error("account {account} is the market's own account and cannot do this")]
    ReservedAccount { account: AccountId },
    #[error("client order id {client_id} was already used by this account")]
    DuplicateClientOrderId { client_id: ClientOrderId },
    #[error("unknown order {order_id}")]
    UnknownOrder { order_id: OrderId },
    #[error("order {order_id} belongs to another account")]
    NotOwner { order_id: OrderId },
    #[error("the order's time in force already ended at {expires_at} (now {now})")]
    Expired {
        expires_at: Timestamp,
        now: Timestamp,
    },
    #[error("the node is available until {available_until}, less than one hour after {now}")]
    AvailabilityTooShort {
        available_until: Timestamp,
        now: Timestamp,
    },
    #[error("a post-only order would trade on arrival")]
    PostOnlyWouldTrade,
    #[error("a fill-or-kill order cannot be filled completely now")]
    FillOrKillUnfilled,
    #[error("min fill {min_fill} is larger than the order's {gpus} GPUs")]
    MinFillAboveQuantity { min_fill: Gpus, gpus: Gpus },
    #[error("an amend must change the price or lower or raise the quantity")]
    NothingToAmend,
    #[error("the order has {filled} GPUs filled; an amend cannot go to {requested} or below")]
    AmendBelowFilled { filled: u32, requested: Gpus },
    #[error("this engine shard already knows {max} regions, the most it can match on")]
    TooManyRegions { max: u32 },
    #[error("unknown or already ended lease {lease_id}")]
    UnknownLease { lease_id: LeaseId },
    #[error("account {by} is neither the buyer nor the provider of lease {lease_id}")]
    NotLeaseParty { lease_id: LeaseId, by: AccountId },
    #[error("account {by} is not the provider of lease {lease_id}")]
    NotLeaseProvider { lease_id: LeaseId, by: AccountId },
    #[error("lease {lease_id} already started at {started_at}")]
    LeaseAlreadyStarted {
        lease_id: LeaseId,
        started_at: Timestamp,
    },
    #[error("hours used must be between 0 and the lease's {hours} hours, with at most six decimal places (got {hours_used})")]
    BadHoursUsed {
        #[serde(with = "rust_decimal::serde::str")]
        hours_used: Decimal,
        hours: u32,
    },
    #[error("account {account} has no payout address; set one first")]
    NoPayoutAddress { account: AccountId },
    #[error("message {msg_index} of transaction {tx_hash} was already credited")]
    DuplicateDeposit { tx_hash: TxHash, msg_index: u32 },
    #[error("settlement batch {batch} is still open; one batch settles at a time")]
    SettlementInProgress { batch: SettlementId },
    #[error("nothing to settle: no withdrawal requested and no earnings reach the minimum payout")]
    NothingToSettle,
    #[error("settlement batch {batch} is not open")]
    SettlementNotOpen { batch: SettlementId },
    #[error("a settlement batch holds 1 to 10000 payouts (got {max_payouts})")]
    BadBatchSize { max_payouts: u32 },
    // Schema 3, appended.
    #[error("a tick at {at} is before the engine's clock {now}")]
    ClockWentBackwards { at: Timestamp, now: Timestamp },
    #[error("lease {lease_id} has ended")]
    LeaseEnded { lease_id: LeaseId },
    #[error("lease {lease_id} is metered: it is stopped, never ended by stating hours")]
    LeaseMetered { lease_id: LeaseId },
    #[error("node {node} is silent since its last heartbeat at {last_seen}; it cannot be matched until it reports again")]
    NodeSilent { node: NodeId, last_seen: Timestamp },
    #[error("client order id {client_id} is in the engine's own range")]
    ReservedClientOrderId { client_id: ClientOrderId },
    #[error("a bid excludes at most {max} nodes")]
    TooManyExcludedNodes { max: u32 },
    #[error("re-bidding and excluded nodes are options of bids, not asks")]
    BidOptionOnAsk,
    #[error("the request with idempotency key {key} was applied before; nothing changed")]
    AlreadyApplied { key: IdempotencyKey },
    #[error("idempotency key {key} was used for a different request")]
    IdempotencyKeyReused { key: IdempotencyKey },
    #[error("node {node}'s report {sequence} is not after its last one, {last}")]
    StaleReport {
        node: NodeId,
        sequence: u64,
        last: u64,
    },
    #[error("a report from simulated GPUs, but market {market} was not created as simulated")]
    SimulatedReport { market: MarketId },
    #[error(
        "the report is dated {reported_at}, more than {window_ms} ms from the market's clock {now}"
    )]
    ReportClockSkew {
        reported_at: Timestamp,
        now: Timestamp,
        window_ms: u32,
    },
    #[error("node {node} has sent no signed report yet; an ask needs a reporting node")]
    NodeNotReporting { node: NodeId },
    #[error("node {node}'s latest signed report does not back the ask: {what} reported {reported}, the ask needs {required}")]
    SpecMismatch {
        node: NodeId,
        /// `model`, `memory_mb`, `vendor` or `free_gpus`.
        what: String,
        reported: String,
        required: String,
    },
    #[error("GPU {uuid} is already registered to node {node} of account {provider}")]
    GpuAlreadyRegistered {
        uuid: ShortText,
        provider: AccountId,
        node: NodeId,
    },
    #[error("insufficient free bond in this market: {needed} needed, {free} free")]
    InsufficientBond { needed: Amount, free: Amount },
    #[error(
        "at most {max} withdrawals of bond wait at once in a market; wait for one to be released"
    )]
    TooManyUnbondings { max: u32 },
    #[error("account {account}'s storage is charged up to the hour from {last}: the hour from {hour} is not after it")]
    StorageCharged {
        account: AccountId,
        hour: Timestamp,
        last: Timestamp,
    },
    #[error("a storage charge is for a whole hour that is over: {hour} is not one at {now}")]
    BadStorageHour { hour: Timestamp, now: Timestamp },
    #[error("account {account} is not market {market}'s checker")]
    NotTheChecker {
        account: AccountId,
        market: MarketId,
    },
    #[error("a check is an immediate-or-cancel bid")]
    CheckNotImmediate,
    #[error("a payment is held for 1 ms to {max_ms} ms, not {hold_ms} ms")]
    BadPaymentHold { hold_ms: u64, max_ms: u64 },
    #[error("lease {lease_id} runs: its payment is not held")]
    PaymentNotHeld { lease_id: LeaseId },
}

impl Rejection {
    /// The stable code of this rejection, e.g. `PRICE_OFF_TICK`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Rejection::UnknownMarket { .. } => ErrorCode::UnknownMarket,
            Rejection::LeaseAlreadyStarted { .. } => ErrorCode::LeaseAlreadyStarted,
            Rejection::MarketExists { .. } => ErrorCode::MarketExists,
            Rejection::PriceOffTick { .. } => ErrorCode::PriceOffTick,
            Rejection::NonPositiveAmount { .. } => ErrorCode::NonPositiveAmount,
            Rejection::InsufficientFunds { .. } => ErrorCode::InsufficientFunds,
            Rejection::AmountOverflow => ErrorCode::AmountOverflow,
            Rejection::ReservedAccount { .. } => ErrorCode::ReservedAccount,
            Rejection::DuplicateClientOrderId { .. } => ErrorCode::DuplicateClientOrderId,
            Rejection::UnknownOrder { .. } => ErrorCode::UnknownOrder,
            Rejection::NotOwner { .. } => ErrorCode::NotOwner,
            Rejection::Expired { .. } => ErrorCode::Expired,
            Rejection::AvailabilityTooShort { .. } => ErrorCode::AvailabilityTooShort,
            Rejection::PostOnlyWouldTrade => ErrorCode::PostOnlyWouldTrade,
            Rejection::FillOrKillUnfilled => ErrorCode::FillOrKillUnfilled,
            Rejection::MinFillAboveQuantity { .. } => ErrorCode::MinFillAboveQuantity,
            Rejection::NothingToAmend => ErrorCode::NothingToAmend,
            Rejection::AmendBelowFilled { .. } => ErrorCode::AmendBelowFilled,
            Rejection::TooManyRegions { .. } => ErrorCode::TooManyRegions,
            Rejection::UnknownLease { .. } => ErrorCode::UnknownLease,
            Rejection::NotLeaseParty { .. } => ErrorCode::NotLeaseParty,
            Rejection::NotLeaseProvider { .. } => ErrorCode::NotLeaseProvider,
            Rejection::BadHoursUsed { .. } => ErrorCode::BadHoursUsed,
            Rejection::NoPayoutAddress { .. } => ErrorCode::NoPayoutAddress,
            Rejection::DuplicateDeposit { .. } => ErrorCode::DuplicateDeposit,
            Rejection::SettlementInProgress { .. } => ErrorCode::SettlementInProgress,
            Rejection::NothingToSettle => ErrorCode::NothingToSettle,
            Rejection::SettlementNotOpen { .. } => ErrorCode::SettlementNotOpen,
            Rejection::BadBatchSize { .. } => ErrorCode::BadBatchSize,
            Rejection::ClockWentBackwards { .. } => ErrorCode::ClockWentBackwards,
            Rejection::LeaseEnded { .. } => ErrorCode::LeaseEnded,
            Rejection::LeaseMetered { .. } => ErrorCode::LeaseMetered,
            Rejection::NodeSilent { .. } => ErrorCode::NodeSilent,
            Rejection::ReservedClientOrderId { .. } => ErrorCode::ReservedClientOrderId,
            Rejection::TooManyExcludedNodes { .. } => ErrorCode::TooManyExcludedNodes,
            Rejection::BidOptionOnAsk => ErrorCode::BidOptionOnAsk,
            Rejection::AlreadyApplied { .. } => ErrorCode::AlreadyApplied,
            Rejection::IdempotencyKeyReused { .. } => ErrorCode::IdempotencyKeyReused,
            Rejection::StaleReport { .. } => ErrorCode::StaleReport,
            Rejection::SimulatedReport { .. } => ErrorCode::SimulatedReport,
            Rejection::ReportClockSkew { .. } => ErrorCode::ReportClockSkew,
            Rejection::NodeNotReporting { .. } => ErrorCode::NodeNotReporting,
            Rejection::SpecMismatch { .. } => ErrorCode::SpecMismatch,
            Rejection::GpuAlreadyRegistered { .. } => ErrorCode::GpuAlreadyRegistered,
            Rejection::InsufficientBond { .. } => ErrorCode::InsufficientBond,
            Rejection::TooManyUnbondings { .. } => ErrorCode::TooManyUnbondings,
            Rejection::StorageCharged { .. } => ErrorCode::AlreadyApplied,
            Rejection::BadStorageHour { .. } => ErrorCode::Validation,
            Rejection::NotTheChecker { .. } => ErrorCode::NotTheChecker,
            Rejection::CheckNotImmediate => ErrorCode::Validation,
            Rejection::BadPaymentHold { .. } => ErrorCode::Validation,
            Rejection::PaymentNotHeld { .. } => ErrorCode::PaymentNotHeld,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serialized_code_is_the_code() {
        let r = Rejection::PriceOffTick {
            price: Price::parse("1.005").unwrap(),
            tick: Price::parse("0.01").unwrap(),
        };
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get(r.code().as_str()).is_some(), "{json}");
        assert_eq!(
            r.to_string(),
            "price 1.005 is not a multiple of the market's tick 0.01"
        );
    }
}
