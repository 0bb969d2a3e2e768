use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    AccountId, ClientOrderId, FeeRate, Gpus, Hours, IdempotencyKey, LeaseEndReason, LeaseId,
    MarketConfig, MarketId, NodeId, NodeRef, OrderId, Price, Region, Reputation, SignedHeartbeat,
    Timestamp,
};
use crate::{Amount, ChainAddress, FailureReason, ParseError, SettlementId, TxHash};

/// Everything the matching engine can be asked to do. Time is not part of a command: the
/// log stamps each command with the time it was accepted, and the engine reads it from there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Open a market for one GPU class (admin).
    CreateMarket {
        market: MarketId,
        /// Every price in this market is a whole multiple of the tick.
        tick: Price,
        /// Taken from the provider's side of every lease charge, paid to [`AccountId::MARKET`].
        fee: FeeRate,
    },
    /// Credit an account (issued by the chain bridge once a transfer is final).
    Deposit {
        account: AccountId,
        amount: Amount,
    },
    /// Debit an account's available balance (paid out by the chain bridge).
    Withdraw {
        account: AccountId,
        amount: Amount,
    },
    Place(NewOrder),
    Cancel {
        account: AccountId,
        order_id: OrderId,
    },
    /// Change a resting order. A smaller quantity keeps time priority; a new price or a
    /// larger quantity moves the order to the back of its new level (and it may trade).
    Amend {
        account: AccountId,
        order_id: OrderId,
        price: Option<Price>,
        gpus: Option<Gpus>,
    },
    /// Schema 1's lease end, kept so that older logs replay as they ran: `hours_used` (at
    /// most six decimal places) is charged, the rest of the cost goes back to the buyer.
    /// Nothing sends it any more: a party never states hours. Leases of bids placed with
    /// [`Command::PlaceWith`] refuse it (`LEASE_METERED`); they end by [`Command::StopLease`],
    /// [`Command::AdminEndLease`] or by themselves.
    EndLease {
        /// The buyer, the provider or [`AccountId::MARKET`] (the operator).
        by: AccountId,
        lease_id: LeaseId,
        #[serde(with = "rust_decimal::serde::str")]
        hours_used: Decimal,
        reason: LeaseEndReason,
    },
    /// The reputation projection's score for a provider. New asks carry the score in force
    /// when they are accepted; a lower score also cancels the provider's resting asks that
    /// advertise more than it now has.
    SetReputation {
        provider: AccountId,
        score: Reputation,
    },
    /// The provider's agent started the lease's job (its first report for the lease). The
    /// delay since the fill feeds the provider's reputation.
    StartLease {
        provider: AccountId,
        lease_id: LeaseId,
    },
    /// Schema 1's heartbeat, kept for older logs: recorded as stated (`NodeHeartbeat`), with
    /// no effect on the engine's state. Signed reports arrive as
    /// [`Command::SignedHeartbeat`].
    Heartbeat {
        provider: AccountId,
        node: NodeId,
        /// The GPU class (a market id) the reported hardware identifies as.
        class: MarketId,
        gpus: Gpus,
    },
    /// Only moves time forward, so that deadlines (GTT expiry, lease terms, heartbeat
    /// timeouts, charge periods) happen without traffic. The engine client appends one when
    /// it has appended nothing for a while (`ClientConfig::tick_every`). A tick stamped
    /// before the engine's clock is refused (`CLOCK_WENT_BACKWARDS`) and changes nothing;
    /// every other command stamped before the clock counts as stamped at it.
    Tick,
    // Schema 2 appends the chain bridge's commands; earlier variants keep their positions
    // so schema-1 records still decode.
    /// Where the account's payouts and withdrawals are sent on chain.
    SetPayoutAddress {
        account: AccountId,
        address: ChainAddress,
    },
    /// Moves `amount` from available to settling; the next settlement batch sends it to the
    /// account's payout address.
    RequestWithdrawal {
        account: AccountId,
        amount: Amount,
    },
    /// A transfer to the escrow address, final on chain, whose memo named `account`. Each
    /// (transaction, message) credits once: the engine refuses a second one.
    ChainDeposit {
        account: AccountId,
        amount: Amount,
        tx_hash: TxHash,
        msg_index: u32,
    },
    /// Opens a settlement batch (one at a time): every requested withdrawal, and the unpaid
    /// earnings of accounts with a payout address where they reach `min_payout`; at most
    /// `max_payouts` accounts, the rest wait for the next batch.
    OpenSettlement {
        min_payout: Amount,
        max_payouts: u32,
    },
    /// The batch's transaction is included on chain with success: the money left the market.
    ConfirmSettlement {
        batch: SettlementId,
        tx_hash: TxHash,
        height: u64,
    },
    /// The batch's transaction failed for good: the amounts go back to available.
    FailSettlement {
        batch: SettlementId,
        reason: FailureReason,
    },
    // Schema 3 appends metered leases, node liveness and idempotent money commands; earlier
    // variants keep their positions and their behaviour.
    /// Sets a market's parameters (admin). A market that never got one has
    /// `MarketConfig::default()`. A change applies from the next deadline it sets: running
    /// leases keep the timers already set.
    ConfigureMarket {
        market: MarketId,
        config: MarketConfig,
    },
    /// A new order with options; every order the API places since schema 3 is one. A bid
    /// placed this way makes **metered** leases: they end at their term, by
    /// [`Command::StopLease`] or [`Command::AdminEndLease`], or when their node fails,
    /// and are charged by the engine's clock. Client ids in the engine's own range
    /// (`ClientOrderId::is_reserved`) are refused.
    PlaceWith {
        order: NewOrder,
        options: OrderOptions,
    },
    /// A party stops a metered lease. The buyer: charged to now. The provider: a provider
    /// failure, charged only to the last moment a heartbeat showed the lease healthy.
    StopLease {
        by: AccountId,
        lease_id: LeaseId,
    },
    /// The operator ends a lease, charged to now (admin).
    AdminEndLease {
        lease_id: LeaseId,
        reason: FailureReason,
    },
    /// A node's signed report: it is alive, its GPUs are these, these of its leases are
    /// healthy.
    /// Boxed: inline, the report's evidence would make every command as large as a
    /// heartbeat (256 bytes instead of 160).
    SignedHeartbeat(Box<SignedHeartbeat>),
    /// [`Command::Deposit`] once per key: a retry with the same key and amount is answered
    /// `ALREADY_APPLIED` and changes nothing; the same key with another amount, or a key
    /// the account used for a withdrawal, is `IDEMPOTENCY_KEY_REUSED`.
    DepositOnce {
        account: AccountId,
        amount: Amount,
        key: IdempotencyKey,
    },
    /// [`Command::RequestWithdrawal`] once per key, as [`Command::DepositOnce`] is for
    /// deposits (one key space per account for both).
    RequestWithdrawalOnce {
        account: AccountId,
        amount: Amount,
        key: IdempotencyKey,
    },
    /// Moves `amount` of the provider's available balance into its bond in `market`. An
    /// ask placed with [`Command::PlaceWith`] holds the market's bond per GPU from the free
    /// bond while its GPUs are offered or leased; a provider failure slashes a share of it.
    PostBond {
        provider: AccountId,
        market: MarketId,
        amount: Amount,
    },
    /// Starts unbonding `amount` of the provider's free bond in `market`: it returns to
    /// available after the market's unbonding delay (`BondUnbonding`, then `BondReleased`),
    /// so a bond cannot be pulled just before a failure it should answer for.
    WithdrawBond {
        provider: AccountId,
        market: MarketId,
        amount: Amount,
    },
    /// [`Command::StartLease`] for a job the buyer submitted at `job_submitted_at` (the
    /// API's record of `submitJob`): the delay that feeds the provider's punctuality runs
    /// from the later of the fill and the submission, so a buyer's late job is never the
    /// provider's lateness.
    StartLeaseJob {
        provider: AccountId,
        lease_id: LeaseId,
        job_submitted_at: Timestamp,
    },
    /// Charges `account` for the blobs it held in the hour from `hour` (a whole hour, over
    /// by the command's time): `bytes` held, `amount` at the market's storage price. The
    /// API that ticks the clock sends it, only where storage has a price; each account pays
    /// each hour once, in order: an hour not after the last one charged is refused.
    ChargeStorage {
        account: AccountId,
        hour: Timestamp,
        bytes: u64,
        amount: Amount,
    },
    /// The market rejects a running lease's work: its provider failed verification (a
    /// referee's render contradicted its pixels). A provider failure that charges nothing
    /// more than is already accrued and credits the buyer what it was charged, up to the
    /// slash (`LeaseEndCause::WorkRejected`). Sent by the API's render loop, never by a party.
    RejectWork {
        lease_id: LeaseId,
        reason: FailureReason,
    },
    /// Makes `account` the market's checker (admin). From then on every node's asks in the
    /// market are on probation, trading only with the checker's bids for that node, until
    /// the checker records a passed check of the node ([`Command::RecordCheck`]): no buyer
    /// is sold a node the market has not tested. A failed check puts the node back on it.
    AppointChecker {
        market: MarketId,
        account: AccountId,
    },
    /// The market's checker buys from one node: `order` (the checker's own immediate-or-
    /// cancel bid) takes only `node`'s asks, on probation or not, at their prices: an
    /// ordinary order, paid and settled as any other. Sent by the API's checker loop.
    PlaceCheck {
        order: NewOrder,
        node: NodeRef,
    },
    /// The checker's verdict on the known-answer job it ran on a lease it bought: `passed`,
    /// the lease is stopped as paid work and its node leaves probation in the lease's
    /// market; failed, the work is rejected as [`Command::RejectWork`] rejects it (a slashed
    /// provider failure) and the node is on probation again. Sent by the checker loop.
    RecordCheck {
        lease_id: LeaseId,
        passed: bool,
        detail: FailureReason,
    },
    /// The buyer stops a running lease as [`Command::StopLease`] does (its GPUs free at once,
    /// charged to now) but holds its payment for review: the charge and the provider's bond
    /// behind the lease stay held until the buyer releases them ([`Command::ReleasePayment`]),
    /// the market rejects the work ([`Command::RejectWork`], slashed as a running lease's
    /// rejection is), or `hold_ms` has passed (1 ms to [`Command::MAX_PAYMENT_HOLD_MS`]),
    /// whichever comes first. The render loop ends its leases so: a provider's GPU can check
    /// another provider's frames while the payment for its own waits for their check.
    StopLeaseHeld {
        by: AccountId,
        lease_id: LeaseId,
        hold_ms: u64,
    },
    /// The buyer releases the payment it held with [`Command::StopLeaseHeld`]: the lease
    /// ends paid, as a buyer's stop is.
    ReleasePayment {
        by: AccountId,
        lease_id: LeaseId,
    },
}

impl Command {
    /// The longest a buyer may hold a lease's payment for review: eight days (a render
    /// job's review window is at most seven).
    pub const MAX_PAYMENT_HOLD_MS: u64 = 8 * 24 * 3_600_000;
}

/// How an order placed with [`Command::PlaceWith`] behaves beyond its terms. Both options
/// are for bids; an ask with any of them is refused (`BID_OPTION_ON_ASK`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderOptions {
    /// When a lease of this bid fails through the provider, the engine places the unused
    /// whole GPU-hours again as a new bid (same constraints, limit price and time in force,
    /// held from the refund, the failed node excluded, itself re-bidding on failure). Its
    /// client id is `ClientOrderId::rebid(lease)`; the `OrderRebid` event links the two.
    #[serde(default)]
    pub rebid_on_failure: bool,
    /// Nodes whose asks this bid never takes (at most [`OrderOptions::MAX_EXCLUDED`]).
    #[serde(default)]
    pub exclude_nodes: Vec<NodeRef>,
}

impl OrderOptions {
    pub const MAX_EXCLUDED: usize = 32;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// A buyer's order for GPU time.
    Bid,
    /// A provider's offer of GPUs on one node.
    Ask,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Good till cancelled.
    Gtc,
    /// Good till the given time; the order is cancelled at it (by the first command at or
    /// after it, a tick when nothing else arrives).
    Gtt { expires_at: Timestamp },
    /// Immediate or cancel: fill what is possible now, cancel the rest.
    Ioc,
    /// Fill or kill: fill everything now, or reject the order without a trace.
    Fok,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    Nvidia,
    Amd,
}

/// How the GPUs of one node talk to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interconnect {
    Pcie,
    NvLink,
    NvSwitch,
    InfinityFabric,
}

impl Command {
    /// The record's type, as written in its header (Kafka `type`, the file log's frame).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateMarket { .. } => "create_market",
            Command::Deposit { .. } => "deposit",
            Command::Withdraw { .. } => "withdraw",
            Command::Place(_) => "place",
            Command::Cancel { .. } => "cancel",
            Command::Amend { .. } => "amend",
            Command::EndLease { .. } => "end_lease",
            Command::SetReputation { .. } => "set_reputation",
            Command::StartLease { .. } => "start_lease",
            Command::Heartbeat { .. } => "heartbeat",
            Command::Tick => "tick",
            Command::SetPayoutAddress { .. } => "set_payout_address",
            Command::RequestWithdrawal { .. } => "request_withdrawal",
            Command::ChainDeposit { .. } => "chain_deposit",
            Command::OpenSettlement { .. } => "open_settlement",
            Command::ConfirmSettlement { .. } => "confirm_settlement",
            Command::FailSettlement { .. } => "fail_settlement",
            Command::ConfigureMarket { .. } => "configure_market",
            Command::PlaceWith { .. } => "place_with",
            Command::StopLease { .. } => "stop_lease",
            Command::AdminEndLease { .. } => "admin_end_lease",
            Command::SignedHeartbeat(_) => "signed_heartbeat",
            Command::DepositOnce { .. } => "deposit_once",
            Command::RequestWithdrawalOnce { .. } => "request_withdrawal_once",
            Command::PostBond { .. } => "post_bond",
            Command::WithdrawBond { .. } => "withdraw_bond",
            Command::StartLeaseJob { .. } => "start_lease_job",
            Command::ChargeStorage { .. } => "charge_storage",
            Command::RejectWork { .. } => "reject_work",
            Command::StopLeaseHeld { .. } => "stop_lease_held",
            Command::ReleasePayment { .. } => "release_payment",
            Command::AppointChecker { .. } => "appoint_checker",
            Command::PlaceCheck { .. } => "place_check",
            Command::RecordCheck { .. } => "record_check",
        }
    }
}

impl Side {
    /// The name in the JSON form (`bid`, `ask`).
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Bid => "bid",
            Side::Ask => "ask",
        }
    }
}

impl TimeInForce {
    /// The name in the JSON form (`gtc`, `gtt`, `ioc`, `fok`).
    pub fn as_str(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "gtc",
            TimeInForce::Gtt { .. } => "gtt",
            TimeInForce::Ioc => "ioc",
            TimeInForce::Fok => "fok",
        }
    }
}

impl Interconnect {
    pub const ALL: [Interconnect; 4] = [
        Interconnect::Pcie,
        Interconnect::NvLink,
        Interconnect::NvSwitch,
        Interconnect::InfinityFabric,
    ];
}

/// A new bid or ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub account: AccountId,
    /// Unique per account: a second order with the same id is rejected, so a retried
    /// request can never place two orders.
    pub client_id: ClientOrderId,
    pub market: MarketId,
    /// The most a bid pays, or the least an ask accepts, per GPU-hour.
    pub price: Price,
    pub gpus: Gpus,
    pub tif: TimeInForce,
    /// Rejected instead of trading on arrival: the order may only rest.
    pub post_only: bool,
    pub terms: OrderTerms,
}

impl NewOrder {
    pub fn side(&self) -> Side {
        match self.terms {
            OrderTerms::Bid(_) => Side::Bid,
            OrderTerms::Ask(_) => Side::Ask,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderTerms {
    Bid(BidSpec),
    Ask(AskSpec),
}

/// What a buyer needs. Every constraint left at its default admits any ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidSpec {
    /// How long each lease runs; the bid holds `price × gpus × hours`.
    pub hours: Hours,
    #[serde(default)]
    pub min_vram_gb: u32,
    /// Allowed regions; empty means any.
    #[serde(default)]
    pub regions: Vec<Region>,
    /// Allowed interconnects; empty means any.
    #[serde(default)]
    pub interconnects: Vec<Interconnect>,
    /// Allowed vendor; `None` means either.
    #[serde(default)]
    pub vendor: Option<Vendor>,
    #[serde(default = "no_reputation")]
    pub min_reputation: Reputation,
    /// All GPUs on one node: every fill covers the whole remaining quantity from one ask.
    #[serde(default)]
    pub single_node: bool,
    /// The whole quantity or nothing. On arrival it may combine several asks; once resting
    /// it is filled only by a single ask large enough for all of it.
    #[serde(default)]
    pub all_or_none: bool,
    /// The fewest GPUs any one lease may have (the last lease may be smaller only when
    /// less than this remains).
    #[serde(default)]
    pub min_fill: Option<Gpus>,
}

fn no_reputation() -> Reputation {
    Reputation::MIN
}

impl BidSpec {
    /// A bid for `hours` with no constraints.
    pub fn any(hours: Hours) -> Self {
        BidSpec {
            hours,
            min_vram_gb: 0,
            regions: Vec::new(),
            interconnects: Vec::new(),
            vendor: None,
            min_reputation: Reputation::MIN,
            single_node: false,
            all_or_none: false,
            min_fill: None,
        }
    }
}

/// What a provider offers: GPUs on one node, with the node's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskSpec {
    pub node: NodeId,
    pub vendor: Vendor,
    pub vram_gb: u32,
    pub interconnect: Interconnect,
    pub region: Region,
    /// The node is offered until this time; a lease must end by then.
    pub available_until: Timestamp,
}

impl std::str::FromStr for Interconnect {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "pcie" => Ok(Interconnect::Pcie),
            "nvlink" => Ok(Interconnect::NvLink),
            "nvswitch" => Ok(Interconnect::NvSwitch),
            "infinity_fabric" => Ok(Interconnect::InfinityFabric),
            _ => Err(ParseError::UnknownName {
                kind: "interconnect (pcie, nvlink, nvswitch, infinity_fabric)",
                input: s.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bid_reads_from_json_with_defaults() {
        let json = r#"{
            "account": 7, "client_id": "1", "market": "H100-80GB", "price": "2.10",
            "gpus": 8, "tif": "gtc", "post_only": false,
            "terms": {"bid": {"hours": 4, "regions": ["eu-west"], "single_node": true}}
        }"#;
        let order: NewOrder = serde_json::from_str(json).unwrap();
        assert_eq!(order.side(), Side::Bid);
        let OrderTerms::Bid(spec) = &order.terms else {
            panic!("expected a bid")
        };
        assert!(spec.single_node && !spec.all_or_none);
        assert_eq!(spec.regions, vec![Region::parse("eu-west").unwrap()]);
        assert_eq!(order.price, Price::parse("2.1").unwrap());
    }

    #[test]
    fn zero_gpus_never_parse() {
        let json = r#"{
            "account": 7, "client_id": "1", "market": "H100-80GB", "price": "2.10",
            "gpus": 0, "tif": "ioc", "post_only": false,
            "terms": {"bid": {"hours": 4}}
        }"#;
        let err = serde_json::from_str::<NewOrder>(json).unwrap_err();
        assert!(err.to_string().contains("GPU count"), "{err}");
    }

    #[test]
    fn names_are_the_json_names() {
        use crate::{CancelReason, LeaseEndReason};
        let json = |v: serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_default();
        for side in [Side::Bid, Side::Ask] {
            assert_eq!(side.as_str(), json(serde_json::to_value(side).unwrap()));
        }
        for tif in [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok] {
            assert_eq!(tif.as_str(), json(serde_json::to_value(tif).unwrap()));
        }
        let gtt = serde_json::to_value(TimeInForce::Gtt {
            expires_at: Timestamp(1),
        })
        .unwrap();
        assert!(gtt.get("gtt").is_some(), "{gtt}");
        for reason in [
            CancelReason::Requested,
            CancelReason::ImmediateRemainder,
            CancelReason::Expired,
            CancelReason::SelfTrade,
            CancelReason::ReputationDropped,
        ] {
            assert_eq!(reason.as_str(), json(serde_json::to_value(reason).unwrap()));
        }
        for reason in [
            LeaseEndReason::Completed,
            LeaseEndReason::BuyerStopped,
            LeaseEndReason::ProviderFailed,
        ] {
            assert_eq!(reason.as_str(), json(serde_json::to_value(reason).unwrap()));
        }
    }
}

stored_form!(Side, "side", [Bid, Ask]);
