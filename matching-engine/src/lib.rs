//! The GPU market's matching engine: a pure, deterministic, single-writer state machine.
//!
//! Commands go in with the time the log stamped on them; events come out. The engine holds
//! every piece of state that moves money or capacity (markets, books, balances, holds,
//! leases) and does its own pre-trade risk checks, like exchange-core's risk and matching
//! engine in one. It reads no clock, no randomness, no environment and does no I/O, so
//! replaying the command log from a snapshot rebuilds byte-identical state and emits the
//! same events.
//!
//! Architecture Invariant: a rejected command leaves the state exactly as time alone would
//! have left it. Every handler validates first and mutates only after nothing can fail.

mod audit;
mod bonds;
mod book;
mod checks;
mod clock;
mod execution;
mod funds;
mod index;
mod leases;
mod liveness;
mod matching;
mod metering;
mod orders;
mod queries;
mod review;
mod settlement;
mod snapshot;
mod timers;

use contract::{
    AccountId, Amount, Command, Event, FeeRate, IdempotencyKey, LeaseId, MarketConfig, MarketId,
    OrderId, Price, Region, Rejection, Reputation, Side, Timestamp,
};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use book::{Ladder, Orders};
use index::{ClientIds, Leases, OrderIndex};
use liveness::Nodes;
use metering::{Meter, PendingEnd};
pub use snapshot::SnapshotError;
use timers::Timers;

/// An account's money, in the buckets the engine keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub available: Amount,
    /// Held for open bids.
    pub held: Amount,
    /// Paid into running leases, not yet charged or refunded.
    pub in_lease: Amount,
    /// Requested withdrawals and payouts of the open settlement batch, on their way out.
    pub settling: Amount,
    /// Bond in every market together: free, held behind GPUs, and unbonding.
    pub bonded: Amount,
}

/// A provider's bond in one market, by bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondBalance {
    /// Posted and behind no GPU: what asks can hold and `WithdrawBond` can take.
    pub free: Amount,
    /// Behind resting asks' GPUs and running leases.
    pub held: Amount,
    /// Withdrawn, waiting for the market's unbonding delay.
    pub unbonding: Amount,
}

/// A resting order as queries see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestingOrder {
    pub id: OrderId,
    pub account: AccountId,
    pub market: MarketId,
    pub side: Side,
    pub price: Price,
    pub remaining: u32,
    pub filled: u32,
    pub hold: Amount,
}

/// A running lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    pub market: MarketId,
    pub buyer: AccountId,
    pub provider: AccountId,
    pub node: contract::NodeId,
    pub gpus: u32,
    pub price: Price,
    pub start: Timestamp,
    pub hours: u32,
    pub cost: Amount,
    /// When the provider reported the job started; `None` until then.
    pub started_at: Option<Timestamp>,
    /// What the engine's clock and the node's heartbeats have established so far. Snapshots
    /// write it beside the lease (format 5), so the lease's own image is format 4's.
    #[serde(skip)]
    pub(crate) meter: Meter,
}

impl Lease {
    /// When its term ends: `start + hours`.
    pub fn ends_at(&self) -> Timestamp {
        Timestamp(self.start.0 + i64::from(self.hours) * Timestamp::MS_PER_HOUR)
    }

    /// Whether the engine meters it (its bid came through `PlaceWith`); other leases end
    /// only by a command.
    pub fn metered(&self) -> bool {
        self.meter.metered
    }

    /// The last time a heartbeat of its node showed it healthy (its start until one did).
    pub fn healthy_until(&self) -> Timestamp {
        Timestamp(self.meter.healthy_until)
    }

    /// What its accruals charged so far (paid when it ends).
    pub fn accrued(&self) -> Amount {
        Amount::from_micros(self.meter.charged)
    }
}

/// One price level of a market's published depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepthLevel {
    pub price: Price,
    pub gpus: u64,
    pub orders: u32,
}

/// The best levels of one market, best first on each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Depth {
    pub market: MarketId,
    pub bids: Vec<DepthLevel>,
    pub asks: Vec<DepthLevel>,
}

#[derive(Debug, Clone)]
struct Market {
    id: MarketId,
    tick: i64,
    fee: FeeRate,
    config: MarketConfig,
    /// The account whose checks take nodes off probation here (`AppointChecker`).
    checker: Option<AccountId>,
    bids: Ladder,
    asks: Ladder,
}

impl Market {
    fn ladder_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        }
    }

    fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Bid => &self.bids,
            Side::Ask => &self.asks,
        }
    }
}

/// One account's money, in micro-units.
///
/// Architecture Invariant: every bucket is non-negative, and two sums fit an `i64`: the
/// account's total (available + held + in-lease + settling) and its owed earnings with what
/// is on its way out (unpaid earnings + settling). So money moving between one account's
/// buckets never overflows; only money coming into an account (a deposit, earnings, a fee)
/// is checked, before anything changes. `Engine::audit` checks both sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Funds {
    available: i64,
    held: i64,
    in_lease: i64,
    settling: i64,
    /// Of `settling`: withdrawals requested and not yet in a batch.
    requested: i64,
    /// Earnings not yet paid out: what a settlement batch pays from available.
    unpaid_earnings: i64,
    /// The account's bonds in every market together (free, held and unbonding); the
    /// per-market split is in `Engine::bonds`, which it is rebuilt from on restore.
    #[serde(skip)]
    bonded: i64,
}

impl Funds {
    /// Every bucket together, widened so that it is exact even where the invariant broke.
    fn total(&self) -> i128 {
        i128::from(self.available)
            + i128::from(self.held)
            + i128::from(self.in_lease)
            + i128::from(self.settling)
            + i128::from(self.bonded)
    }

    /// Refuses `micros` coming into the account when its total would leave the `i64` range.
    fn can_receive(&self, micros: i64) -> Result<(), Rejection> {
        if self.total() + i128::from(micros) > i128::from(i64::MAX) {
            return Err(Rejection::AmountOverflow);
        }
        Ok(())
    }
}

/// One step of a planned match, computed before anything changes.
#[derive(Debug, Clone, Copy)]
enum Step {
    Fill { maker: u32, gpus: u32 },
    SelfTrade { maker: u32 },
}

/// The matching engine for one shard of markets.
#[derive(Debug, Default)]
pub struct Engine {
    now: i64,
    next_order_id: u64,
    next_lease_id: u64,
    markets: Vec<Market>,
    market_index: FxHashMap<MarketId, u32>,
    funds: FxHashMap<AccountId, Funds>,
    reputations: FxHashMap<AccountId, Reputation>,
    client_ids: FxHashMap<AccountId, ClientIds>,
    orders: Orders,
    order_index: OrderIndex,
    leases: Leases,
    /// Metered leases that closed while the provider's or the market's account had no room
    /// for their money, in closing order: they pay out with the first command that fits.
    pending_ends: Vec<PendingEnd>,
    /// Closed leases whose payment waits for the buyer's review, by lease id.
    held: std::collections::BTreeMap<LeaseId, review::HeldEnd>,
    /// Nodes that reported or have metered leases.
    nodes: Nodes,
    /// Every deadline; rebuilt from the state on restore, not part of it.
    timers: Timers,
    regions: Vec<Region>,
    settlement: settlement::Settlement,
    /// What each idempotency key of an account was used for (`DepositOnce`,
    /// `RequestWithdrawalOnce`).
    applied: FxHashMap<(AccountId, IdempotencyKey), funds::Applied>,
    /// Each provider's bond per market (by market index).
    bonds: FxHashMap<(AccountId, u32), bonds::Bond>,
    /// Withdrawn bond waiting for its release, by the id its timer carries.
    unbondings: std::collections::BTreeMap<u64, bonds::Unbonding>,
    next_unbonding: u64,
    /// The market's insurance fund: what slashes leave after the buyers' credit.
    insurance: i64,
    /// The last hour (its start, ms) each account's storage was charged for.
    storage_charged: FxHashMap<AccountId, i64>,
    /// Which node each reported GPU UUID belongs to (its index in `nodes`).
    gpu_owners: FxHashMap<contract::ShortText, u32>,
    /// The nodes each market's checker passed (market index, node); ordered for snapshots.
    passed: std::collections::BTreeSet<(u32, contract::NodeRef)>,
    /// Scratch space reused across commands; not state.
    plan: Vec<Step>,
}

impl Engine {
    pub fn new() -> Self {
        Engine {
            next_order_id: 1,
            next_lease_id: 1,
            ..Engine::default()
        }
    }

    /// The latest time the engine has seen.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.now)
    }

    /// Applies one command stamped with time `at`, appending its events to `out`.
    ///
    /// Time moves first: every deadline at or before `at` takes effect, in time order (GTT
    /// and ask expiries, heartbeat timeouts, lease terms and accruals), with its events
    /// appended even when the command itself is then rejected. A time earlier than the
    /// engine's clock counts as the engine's clock, so the clock never goes back; a `Tick`
    /// stamped before it is refused and changes nothing.
    pub fn apply(
        &mut self,
        at: Timestamp,
        command: &Command,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if matches!(command, Command::Tick) && at.0 < self.now {
            return Err(Rejection::ClockWentBackwards {
                at,
                now: Timestamp(self.now),
            });
        }
        self.advance(at.0, out);
        match command {
            Command::CreateMarket { market, tick, fee } => {
                self.create_market(*market, *tick, *fee, out)
            }
            Command::Deposit { account, amount } => self.deposit(*account, *amount, out),
            Command::Withdraw { account, amount } => self.withdraw(*account, *amount, out),
            Command::Place(order) => self.place(order, None, None, out),
            Command::Cancel { account, order_id } => self.cancel(*account, *order_id, out),
            Command::Amend {
                account,
                order_id,
                price,
                gpus,
            } => self.amend(*account, *order_id, *price, *gpus, out),
            Command::EndLease {
                by,
                lease_id,
                hours_used,
                reason,
            } => self.end_lease(*by, *lease_id, *hours_used, *reason, out),
            Command::SetReputation { provider, score } => {
                self.set_reputation(*provider, *score, out);
                Ok(())
            }
            Command::StartLease { provider, lease_id } => {
                self.start_lease(*provider, *lease_id, None, out)
            }
            Command::Heartbeat {
                provider,
                node,
                class,
                gpus,
            } => self.heartbeat(*provider, *node, *class, *gpus, out),
            Command::Tick => Ok(()),
            Command::SetPayoutAddress { account, address } => {
                self.set_payout_address(*account, address, out)
            }
            Command::RequestWithdrawal { account, amount } => {
                self.request_withdrawal(*account, *amount, out)
            }
            Command::ChainDeposit {
                account,
                amount,
                tx_hash,
                msg_index,
            } => self.chain_deposit(*account, *amount, *tx_hash, *msg_index, out),
            Command::OpenSettlement {
                min_payout,
                max_payouts,
            } => self.open_settlement(*min_payout, *max_payouts, out),
            Command::ConfirmSettlement {
                batch,
                tx_hash,
                height,
            } => self.confirm_settlement(*batch, *tx_hash, *height, out),
            Command::FailSettlement { batch, reason } => self.fail_settlement(*batch, reason, out),
            Command::ConfigureMarket { market, config } => {
                self.configure_market(*market, config, out)
            }
            Command::PlaceWith { order, options } => self.place_with(order, options, out),
            Command::StopLease { by, lease_id } => self.stop_lease(*by, *lease_id, out),
            Command::AdminEndLease { lease_id, reason } => {
                self.admin_end_lease(*lease_id, reason, out)
            }
            Command::RejectWork { lease_id, reason } => self.reject_work(*lease_id, reason, out),
            Command::AppointChecker { market, account } => {
                self.appoint_checker(*market, *account, out)
            }
            Command::PlaceCheck { order, node } => self.place_check(order, *node, out),
            Command::RecordCheck {
                lease_id,
                passed,
                detail,
            } => self.record_check(*lease_id, *passed, detail, out),
            Command::SignedHeartbeat(heartbeat) => self.signed_heartbeat(heartbeat, out),
            Command::DepositOnce {
                account,
                amount,
                key,
            } => self.deposit_once(*account, *amount, *key, out),
            Command::RequestWithdrawalOnce {
                account,
                amount,
                key,
            } => self.request_withdrawal_once(*account, *amount, *key, out),
            Command::PostBond {
                provider,
                market,
                amount,
            } => self.post_bond(*provider, *market, *amount, out),
            Command::WithdrawBond {
                provider,
                market,
                amount,
            } => self.withdraw_bond(*provider, *market, *amount, out),
            Command::StartLeaseJob {
                provider,
                lease_id,
                job_submitted_at,
            } => self.start_lease(*provider, *lease_id, Some(*job_submitted_at), out),
            Command::StopLeaseHeld {
                by,
                lease_id,
                hold_ms,
            } => self.stop_lease_held(*by, *lease_id, *hold_ms, out),
            Command::ReleasePayment { by, lease_id } => self.release_payment(*by, *lease_id, out),
            Command::ChargeStorage {
                account,
                hour,
                bytes,
                amount,
            } => self.charge_storage(*account, *hour, *bytes, *amount, out),
        }
    }

    fn market_of(&self, market: MarketId) -> Result<u32, Rejection> {
        self.market_index
            .get(&market)
            .copied()
            .ok_or(Rejection::UnknownMarket { market })
    }

    /// The market of a running lease, which always exists (markets are never removed).
    fn market(&self, market: MarketId) -> &Market {
        &self.markets[self.market_index[&market] as usize]
    }

    fn create_market(
        &mut self,
        market: MarketId,
        tick: Price,
        fee: FeeRate,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if self.market_index.contains_key(&market) {
            return Err(Rejection::MarketExists { market });
        }
        self.market_index.insert(market, self.markets.len() as u32);
        self.markets.push(Market {
            id: market,
            tick: tick.micros(),
            fee,
            config: MarketConfig::default(),
            checker: None,
            bids: Ladder::new(Side::Bid),
            asks: Ladder::new(Side::Ask),
        });
        out.push(Event::MarketCreated { market, tick, fee });
        Ok(())
    }

    fn configure_market(
        &mut self,
        market: MarketId,
        config: &MarketConfig,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let index = self.market_of(market)?;
        self.markets[index as usize].config = config.clone();
        out.push(Event::MarketConfigured {
            market,
            config: config.clone(),
        });
        Ok(())
    }
}
