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
mod book;
mod execution;
mod funds;
mod index;
mod leases;
mod matching;
mod orders;
mod queries;
mod settlement;
mod snapshot;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use contract::{
    AccountId, Amount, CancelReason, Command, Event, FeeRate, LeaseId, MarketId, OrderId, Price,
    Region, Rejection, Reputation, Side, Timestamp,
};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use book::{Ladder, Orders};
use index::{ClientIds, Leases, OrderIndex};
pub use snapshot::SnapshotError;

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
}

impl Funds {
    /// Every bucket together, widened so that it is exact even where the invariant broke.
    fn total(&self) -> i128 {
        i128::from(self.available)
            + i128::from(self.held)
            + i128::from(self.in_lease)
            + i128::from(self.settling)
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
    expiries: BinaryHeap<Reverse<(i64, OrderId)>>,
    regions: Vec<Region>,
    settlement: settlement::Settlement,
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
    /// Time moves first: orders whose expiry is at or before `at` are cancelled (their
    /// events are appended) even when the command itself is then rejected. A time earlier
    /// than the engine's clock counts as the engine's clock, so the clock never goes back.
    pub fn apply(
        &mut self,
        at: Timestamp,
        command: &Command,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        self.advance(at.0, out);
        match command {
            Command::CreateMarket { market, tick, fee } => {
                self.create_market(*market, *tick, *fee, out)
            }
            Command::Deposit { account, amount } => self.deposit(*account, *amount, out),
            Command::Withdraw { account, amount } => self.withdraw(*account, *amount, out),
            Command::Place(order) => self.place(order, out),
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
                self.start_lease(*provider, *lease_id, out)
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
        }
    }

    fn advance(&mut self, at: i64, out: &mut Vec<Event>) {
        self.now = self.now.max(at);
        while let Some(&Reverse((expires_at, id))) = self.expiries.peek() {
            if expires_at > self.now {
                break;
            }
            self.expiries.pop();
            // Entries of orders that already left the book are skipped here.
            if let Some(slot) = self.order_index.get(id) {
                if self.orders.get(slot).expires_at == expires_at {
                    self.retire(slot, true, CancelReason::Expired, out);
                }
            }
        }
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
            bids: Ladder::new(Side::Bid),
            asks: Ladder::new(Side::Ask),
        });
        out.push(Event::MarketCreated { market, tick, fee });
        Ok(())
    }
}
