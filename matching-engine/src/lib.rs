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

mod book;
mod index;
mod matching;
mod settlement;
mod snapshot;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use contract::{
    AccountId, Amount, AskSpec, BidSpec, CancelReason, Command, Event, Exclusion, Explanation,
    FeeRate, Gpus, Hours, LeaseEndReason, LeaseId, MarketId, NewOrder, OrderId, OrderTerms, Price,
    Region, Rejection, Reputation, Side, SkippedOrder, TimeInForce, Timestamp,
};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use book::{AskTerms, BidTerms, Ladder, Order, Orders, Terms, NIL};
use index::{ClientIds, Leases, OrderIndex};
use matching::{
    attribute_exclusion, fill_quantity, interconnect_bit, region_bit, vendor_bit, ANY_REGION,
    MAX_REGIONS,
};
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

fn overflow<T>(value: Option<T>) -> Result<T, Rejection> {
    value.ok_or(Rejection::AmountOverflow)
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
            } => {
                // The engine keeps no node state: a heartbeat is a fact for the projections,
                // ordered with the trades it is judged against.
                if *provider == AccountId::MARKET {
                    return Err(Rejection::ReservedAccount { account: *provider });
                }
                out.push(Event::NodeHeartbeat {
                    provider: *provider,
                    node: *node,
                    class: *class,
                    gpus: *gpus,
                });
                Ok(())
            }
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

    fn deposit(
        &mut self,
        account: AccountId,
        amount: Amount,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        self.credit(account, amount)?;
        out.push(Event::Deposited { account, amount });
        Ok(())
    }

    /// Adds money that entered the market (a deposit, from the admin or the chain) to the
    /// account's available balance. The account's entry is made only once nothing can fail,
    /// so a refusal leaves no empty entry behind.
    fn credit(&mut self, account: AccountId, amount: Amount) -> Result<(), Rejection> {
        if !amount.is_positive() {
            return Err(Rejection::NonPositiveAmount { amount });
        }
        if account == AccountId::MARKET {
            return Err(Rejection::ReservedAccount { account });
        }
        let available = self.funds.get(&account).map_or(0, |f| f.available);
        let available = overflow(available.checked_add(amount.micros()))?;
        self.funds.entry(account).or_default().available = available;
        Ok(())
    }

    fn withdraw(
        &mut self,
        account: AccountId,
        amount: Amount,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if !amount.is_positive() {
            return Err(Rejection::NonPositiveAmount { amount });
        }
        let available = self.funds.get(&account).map_or(0, |f| f.available);
        if available < amount.micros() {
            return Err(Rejection::InsufficientFunds {
                needed: amount,
                available: Amount::from_micros(available),
            });
        }
        if let Some(funds) = self.funds.get_mut(&account) {
            funds.available -= amount.micros();
        }
        out.push(Event::Withdrawn { account, amount });
        Ok(())
    }

    fn market_of(&self, market: MarketId) -> Result<u32, Rejection> {
        self.market_index
            .get(&market)
            .copied()
            .ok_or(Rejection::UnknownMarket { market })
    }

    fn check_tick(&self, market: u32, price: Price) -> Result<(), Rejection> {
        let tick = self.markets[market as usize].tick;
        if price.micros() % tick != 0 {
            return Err(Rejection::PriceOffTick {
                price,
                tick: Price::from_micros(tick),
            });
        }
        Ok(())
    }

    fn available(&self, account: AccountId) -> i64 {
        self.funds.get(&account).map_or(0, |f| f.available)
    }

    fn ensure_funds(&self, account: AccountId, needed: i64) -> Result<(), Rejection> {
        let available = self.available(account);
        if needed > available {
            return Err(Rejection::InsufficientFunds {
                needed: Amount::from_micros(needed),
                available: Amount::from_micros(available),
            });
        }
        Ok(())
    }

    /// The regions a command names that the engine has not seen, checked against capacity.
    fn new_regions<'a>(
        &self,
        names: impl Iterator<Item = &'a Region>,
    ) -> Result<Vec<Region>, Rejection> {
        let mut fresh: Vec<Region> = Vec::new();
        for r in names {
            if region_bit(&self.regions, *r).is_none() && !fresh.contains(r) {
                fresh.push(*r);
            }
        }
        if self.regions.len() + fresh.len() > MAX_REGIONS {
            return Err(Rejection::TooManyRegions {
                max: MAX_REGIONS as u32,
            });
        }
        Ok(fresh)
    }

    fn bid_terms(&self, spec: &BidSpec, gpus: Gpus) -> Result<BidTerms, Rejection> {
        if let Some(min_fill) = spec.min_fill {
            if min_fill > gpus {
                return Err(Rejection::MinFillAboveQuantity { min_fill, gpus });
            }
        }
        let region_mask = if spec.regions.is_empty() {
            ANY_REGION
        } else {
            // Regions nobody has offered yet get their bit when the order is accepted.
            spec.regions
                .iter()
                .filter_map(|r| region_bit(&self.regions, *r))
                .fold(0, |mask, bit| mask | (1u64 << bit))
        };
        let interconnect_mask = if spec.interconnects.is_empty() {
            u8::MAX
        } else {
            spec.interconnects
                .iter()
                .fold(0, |mask, i| mask | interconnect_bit(*i))
        };
        Ok(BidTerms {
            hours: spec.hours.get(),
            min_vram_gb: spec.min_vram_gb,
            region_mask,
            interconnect_mask,
            vendor_mask: spec.vendor.map_or(u8::MAX, vendor_bit),
            min_reputation: spec.min_reputation,
            single_node: spec.single_node,
            all_or_none: spec.all_or_none,
            min_fill: spec.min_fill.map_or(0, Gpus::get),
        })
    }

    fn ask_terms(&self, provider: AccountId, spec: &AskSpec) -> Result<AskTerms, Rejection> {
        if spec.available_until.0 < self.now.saturating_add(Timestamp::MS_PER_HOUR) {
            return Err(Rejection::AvailabilityTooShort {
                available_until: spec.available_until,
                now: Timestamp(self.now),
            });
        }
        Ok(AskTerms {
            node: spec.node,
            vendor: spec.vendor,
            vram_gb: spec.vram_gb,
            interconnect: spec.interconnect,
            region: spec.region,
            // A new region gets the next bit, which no bid's mask can name yet.
            region_bit: region_bit(&self.regions, spec.region).unwrap_or(self.regions.len() as u8),
            available_until: spec.available_until.0,
            reputation: self
                .reputations
                .get(&provider)
                .copied()
                .unwrap_or(Reputation::MIN),
        })
    }

    fn place(&mut self, new: &NewOrder, out: &mut Vec<Event>) -> Result<(), Rejection> {
        let market = self.market_of(new.market)?;
        if new.account == AccountId::MARKET {
            return Err(Rejection::ReservedAccount {
                account: new.account,
            });
        }
        self.check_tick(market, new.price)?;
        if self
            .client_ids
            .get(&new.account)
            .is_some_and(|ids| ids.contains(new.client_id))
        {
            return Err(Rejection::DuplicateClientOrderId {
                client_id: new.client_id,
            });
        }
        let mut expires_at = match new.tif {
            TimeInForce::Gtt { expires_at } if expires_at.0 <= self.now => {
                return Err(Rejection::Expired {
                    expires_at,
                    now: Timestamp(self.now),
                })
            }
            TimeInForce::Gtt { expires_at } => expires_at.0,
            _ => i64::MAX,
        };
        let (terms, hold, fresh_regions) = match &new.terms {
            OrderTerms::Bid(spec) => {
                let hold = overflow(new.price.cost(new.gpus, spec.hours))?.micros();
                self.ensure_funds(new.account, hold)?;
                let fresh = self.new_regions(spec.regions.iter())?;
                (Terms::Bid(self.bid_terms(spec, new.gpus)?), hold, fresh)
            }
            OrderTerms::Ask(spec) => {
                let fresh = self.new_regions(std::iter::once(&spec.region))?;
                let terms = self.ask_terms(new.account, spec)?;
                // An ask that can no longer fit a one-hour lease leaves the book.
                expires_at = expires_at.min(terms.available_until - Timestamp::MS_PER_HOUR);
                (Terms::Ask(terms), 0, fresh)
            }
        };
        let mut order = Order {
            id: OrderId(self.next_order_id),
            account: new.account,
            client_id: new.client_id,
            market,
            side: new.side(),
            price: new.price.micros(),
            remaining: new.gpus.get(),
            filled: 0,
            hold,
            expires_at,
            post_only: new.post_only,
            terms,
            level: NIL,
            prev: NIL,
            next: NIL,
        };
        let mut plan = std::mem::take(&mut self.plan);
        let planned = self.plan_match(&order, &mut plan);
        let checked = self.check_plan(&order, new.tif, planned, &mut plan);
        if let Err(rejection) = checked {
            plan.clear();
            self.plan = plan;
            return Err(rejection);
        }

        // Nothing can fail from here on.
        for region in fresh_regions {
            self.regions.push(region);
        }
        if let (Terms::Bid(terms), OrderTerms::Bid(spec)) = (&mut order.terms, &new.terms) {
            if !spec.regions.is_empty() {
                terms.region_mask = spec
                    .regions
                    .iter()
                    .filter_map(|r| region_bit(&self.regions, *r))
                    .fold(0, |mask, bit| mask | (1u64 << bit));
            }
        }
        self.client_ids
            .entry(new.account)
            .or_default()
            .insert(new.client_id);
        self.next_order_id += 1;
        if hold > 0 {
            let funds = self.funds.entry(new.account).or_default();
            funds.available -= hold;
            funds.held += hold;
        }
        let reputation = match &order.terms {
            Terms::Ask(a) => a.reputation,
            Terms::Bid(_) => Reputation::MIN,
        };
        out.push(Event::OrderAccepted {
            order_id: order.id,
            order: new.clone(),
            hold: Amount::from_micros(hold),
            reputation,
        });
        let slot = self.orders.insert(order);
        self.execute(slot, false, &plan, out);
        plan.clear();
        self.plan = plan;
        let immediate = matches!(new.tif, TimeInForce::Ioc | TimeInForce::Fok);
        self.settle_taker(slot, immediate, out);
        Ok(())
    }

    /// Applies the order type's rules to a plan: rejects what must be rejected and drops
    /// the fills of an all-or-none order that cannot complete.
    fn check_plan(
        &self,
        order: &Order,
        tif: TimeInForce,
        planned: u32,
        plan: &mut Vec<Step>,
    ) -> Result<(), Rejection> {
        let complete = planned == order.remaining;
        if order.post_only && planned > 0 {
            return Err(Rejection::PostOnlyWouldTrade);
        }
        if tif == TimeInForce::Fok && !complete {
            return Err(Rejection::FillOrKillUnfilled);
        }
        if !complete && order.bid().is_some_and(|b| b.all_or_none) {
            plan.retain(|s| matches!(s, Step::SelfTrade { .. }));
        }
        Ok(())
    }

    /// Walks the opposite side in price-time priority and plans what `taker` would trade,
    /// without changing anything. Returns the GPUs planned.
    fn plan_match(&self, taker: &Order, plan: &mut Vec<Step>) -> u32 {
        let market = &self.markets[taker.market as usize];
        let opposite = match taker.side {
            Side::Bid => Side::Ask,
            Side::Ask => Side::Bid,
        };
        let mut remaining = taker.remaining;
        for slot in market.ladder(opposite).iter(&self.orders) {
            let maker = self.orders.get(slot);
            let crosses = match taker.side {
                Side::Bid => maker.price <= taker.price,
                Side::Ask => maker.price >= taker.price,
            };
            if !crosses {
                break;
            }
            let (bid, ask, bid_remaining, ask_remaining) = match (&taker.terms, &maker.terms) {
                (Terms::Bid(b), Terms::Ask(a)) => (b, a, remaining, maker.remaining),
                (Terms::Ask(a), Terms::Bid(b)) => (b, a, maker.remaining, remaining),
                _ => unreachable!("ladders hold one side each"),
            };
            if attribute_exclusion(bid, ask, self.now).is_some() {
                continue;
            }
            if maker.account == taker.account {
                plan.push(Step::SelfTrade { maker: slot });
                continue;
            }
            let bid_is_taker = taker.side == Side::Bid;
            if let Ok(gpus) = fill_quantity(bid, bid_remaining, ask_remaining, bid_is_taker) {
                plan.push(Step::Fill { maker: slot, gpus });
                remaining -= gpus;
                if remaining == 0 {
                    break;
                }
            }
        }
        taker.remaining - remaining
    }

    /// Carries out a plan for the order in `taker` (stored in the slab; `in_book` when it
    /// is also linked into its ladder).
    fn execute(&mut self, taker: u32, in_book: bool, plan: &[Step], out: &mut Vec<Event>) {
        for step in plan {
            match *step {
                Step::SelfTrade { maker } => self.retire(maker, true, CancelReason::SelfTrade, out),
                Step::Fill { maker, gpus } => self.fill(taker, maker, gpus, in_book, out),
            }
        }
    }

    fn fill(
        &mut self,
        taker: u32,
        maker: u32,
        gpus: u32,
        taker_in_book: bool,
        out: &mut Vec<Event>,
    ) {
        let (taker_side, market) = {
            let t = self.orders.get(taker);
            (t.side, t.market)
        };
        let (bid_slot, ask_slot) = match taker_side {
            Side::Bid => (taker, maker),
            Side::Ask => (maker, taker),
        };
        let price = self.orders.get(maker).price;
        let (hours, bid_price, buyer, bid_id) = {
            let b = self.orders.get(bid_slot);
            let hours = b.bid().map_or(0, |t| t.hours);
            (hours, b.price, b.account, b.id)
        };
        let (provider, node, ask_id) = {
            let a = self.orders.get(ask_slot);
            let node = match &a.terms {
                Terms::Ask(t) => t.node,
                Terms::Bid(_) => unreachable!("ask slot holds an ask"),
            };
            (a.account, node, a.id)
        };
        // Both products fit: the bid's whole hold was computed with checked arithmetic, and
        // the fill price is at most the bid's price.
        let units = i64::from(gpus) * i64::from(hours);
        let cost = price * units;
        let bid_part = bid_price * units;
        let released = bid_part - cost;

        for (slot, in_book) in [(maker, true), (taker, taker_in_book)] {
            let o = self.orders.get(slot);
            let (side, level, remaining) = (o.side, o.level, o.remaining);
            if in_book {
                let ladder = self.markets[market as usize].ladder_mut(side);
                if remaining == gpus {
                    ladder.unlink(&mut self.orders, slot);
                } else {
                    ladder.reduce(level, gpus);
                }
            }
            let o = self.orders.get_mut(slot);
            o.remaining -= gpus;
            o.filled += gpus;
            if o.side == Side::Bid {
                o.hold -= bid_part;
            }
        }
        let funds = self.funds.entry(buyer).or_default();
        funds.held -= bid_part;
        funds.in_lease += cost;
        funds.available += released;

        let lease_id = LeaseId(self.next_lease_id);
        self.next_lease_id += 1;
        let market_id = self.markets[market as usize].id;
        let bid_remaining = self.orders.get(bid_slot).remaining;
        let ask_remaining = self.orders.get(ask_slot).remaining;
        let lease = Lease {
            id: lease_id,
            market: market_id,
            buyer,
            provider,
            node,
            gpus,
            price: Price::from_micros(price),
            start: Timestamp(self.now),
            hours,
            cost: Amount::from_micros(cost),
            started_at: None,
        };
        out.push(Event::LeaseCreated {
            lease_id,
            market: market_id,
            buyer,
            provider,
            node,
            bid_order: bid_id,
            ask_order: ask_id,
            gpus: Gpus::new(u64::from(gpus)).expect("a fill has at least one GPU"),
            price: lease.price,
            start: lease.start,
            hours: Hours::new(u64::from(hours)).expect("a bid's hours are valid"),
            cost: lease.cost,
            released: Amount::from_micros(released),
            taker: taker_side,
            bid_remaining,
            ask_remaining,
        });
        self.leases.push(lease);
        if self.orders.get(maker).remaining == 0 {
            let done = self.orders.remove(maker);
            self.order_index.remove(done.id);
        }
    }

    /// After its fills, a taker rests, or (IOC) cancels its rest, or is done.
    fn settle_taker(&mut self, slot: u32, immediate: bool, out: &mut Vec<Event>) {
        let order = self.orders.get(slot);
        if order.remaining == 0 {
            self.orders.remove(slot);
        } else if immediate {
            self.retire(slot, false, CancelReason::ImmediateRemainder, out);
        } else {
            let (id, side, market, expires_at) =
                (order.id, order.side, order.market, order.expires_at);
            self.markets[market as usize]
                .ladder_mut(side)
                .push_back(&mut self.orders, slot);
            self.order_index.insert(id, slot);
            if expires_at != i64::MAX {
                self.expiries.push(Reverse((expires_at, id)));
                // Orders that left early leave their entries behind; drop them once they
                // outnumber the live orders, so the heap stays proportional to the book.
                if self.expiries.len() > 2 * self.orders.live_count() + 1_024 {
                    let (index, orders) = (&self.order_index, &self.orders);
                    self.expiries.retain(|Reverse((at, id))| {
                        index
                            .get(*id)
                            .is_some_and(|slot| orders.get(slot).expires_at == *at)
                    });
                }
            }
        }
    }

    /// Removes an order with its remainder unfilled and releases its hold.
    fn retire(&mut self, slot: u32, in_book: bool, reason: CancelReason, out: &mut Vec<Event>) {
        if in_book {
            let (market, side) = {
                let o = self.orders.get(slot);
                (o.market, o.side)
            };
            self.markets[market as usize]
                .ladder_mut(side)
                .unlink(&mut self.orders, slot);
        }
        let order = self.orders.remove(slot);
        self.order_index.remove(order.id);
        if order.hold > 0 {
            let funds = self.funds.entry(order.account).or_default();
            funds.held -= order.hold;
            funds.available += order.hold;
        }
        out.push(Event::OrderCancelled {
            order_id: order.id,
            account: order.account,
            remaining: order.remaining,
            released: Amount::from_micros(order.hold),
            reason,
        });
    }

    fn owned_slot(&self, account: AccountId, order_id: OrderId) -> Result<u32, Rejection> {
        let slot = self
            .order_index
            .get(order_id)
            .ok_or(Rejection::UnknownOrder { order_id })?;
        if self.orders.get(slot).account != account {
            return Err(Rejection::NotOwner { order_id });
        }
        Ok(slot)
    }

    fn cancel(
        &mut self,
        account: AccountId,
        order_id: OrderId,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let slot = self.owned_slot(account, order_id)?;
        self.retire(slot, true, CancelReason::Requested, out);
        Ok(())
    }

    fn amend(
        &mut self,
        account: AccountId,
        order_id: OrderId,
        price: Option<Price>,
        gpus: Option<Gpus>,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let slot = self.owned_slot(account, order_id)?;
        let current = self.orders.get(slot);
        if let Some(p) = price {
            self.check_tick(current.market, p)?;
        }
        let new_price = price.map_or(current.price, Price::micros);
        let total = current.filled + current.remaining;
        let new_total = gpus.map_or(total, Gpus::get);
        if new_price == current.price && new_total == total {
            return Err(Rejection::NothingToAmend);
        }
        if new_total <= current.filled {
            return Err(Rejection::AmendBelowFilled {
                filled: current.filled,
                requested: gpus.unwrap_or(Gpus::MIN),
            });
        }
        let new_remaining = new_total - current.filled;
        let mut amended = current.clone();
        amended.price = new_price;
        amended.remaining = new_remaining;
        if let Some(bid) = current.bid() {
            // The remainder must stay fillable: never below the minimum fill.
            if bid.min_fill > new_remaining {
                return Err(Rejection::MinFillAboveQuantity {
                    min_fill: Gpus::new(u64::from(bid.min_fill)).unwrap_or(Gpus::MAX),
                    gpus: Gpus::new(u64::from(new_remaining)).unwrap_or(Gpus::MAX),
                });
            }
            let units = i64::from(new_remaining) * i64::from(bid.hours);
            amended.hold = overflow(new_price.checked_mul(units))?;
            self.ensure_funds(account, amended.hold - current.hold)?;
        }
        let keeps_priority = new_price == current.price && new_remaining < current.remaining;
        let hold_change = amended.hold - current.hold;
        let reduced_by = current.remaining.saturating_sub(new_remaining);

        // A smaller single-node, all-or-none or min-fill bid may now fit an ask it could
        // not before, and a new price may cross: either way the order trades now.
        let mut plan = std::mem::take(&mut self.plan);
        let planned = self.plan_match(&amended, &mut plan);
        if let Err(rejection) = self.check_plan(&amended, TimeInForce::Gtc, planned, &mut plan) {
            plan.clear();
            self.plan = plan;
            return Err(rejection);
        }

        let market = amended.market;
        let side = amended.side;
        if keeps_priority {
            self.markets[market as usize]
                .ladder_mut(side)
                .reduce(self.orders.get(slot).level, reduced_by);
        } else {
            self.markets[market as usize]
                .ladder_mut(side)
                .unlink(&mut self.orders, slot);
        }
        {
            let o = self.orders.get_mut(slot);
            o.price = amended.price;
            o.remaining = amended.remaining;
            o.hold = amended.hold;
        }
        if hold_change != 0 {
            let funds = self.funds.entry(account).or_default();
            funds.available -= hold_change;
            funds.held += hold_change;
        }
        out.push(Event::OrderAmended {
            order_id,
            account,
            price: Price::from_micros(new_price),
            remaining: Gpus::new(u64::from(new_remaining)).expect("checked above filled"),
            hold_change: Amount::from_micros(hold_change),
            priority_kept: keeps_priority,
        });
        self.execute(slot, keeps_priority, &plan, out);
        plan.clear();
        self.plan = plan;
        if keeps_priority {
            if self.orders.get(slot).remaining == 0 {
                let done = self.orders.remove(slot);
                self.order_index.remove(done.id);
            }
        } else {
            // Leaves the index while it trades; `settle_taker` puts it back if it rests.
            self.order_index.remove(order_id);
            self.settle_taker(slot, false, out);
        }
        Ok(())
    }

    fn end_lease(
        &mut self,
        by: AccountId,
        lease_id: LeaseId,
        hours_used: Decimal,
        reason: LeaseEndReason,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let lease = self
            .leases
            .get(lease_id)
            .ok_or(Rejection::UnknownLease { lease_id })?;
        if by != lease.buyer && by != lease.provider && by != AccountId::MARKET {
            return Err(Rejection::NotLeaseParty { lease_id, by });
        }
        let used = hours_used.normalize();
        let bad = || Rejection::BadHoursUsed {
            hours_used,
            hours: lease.hours,
        };
        if used.is_sign_negative() || used.scale() > 6 || used > Decimal::from(lease.hours) {
            return Err(bad());
        }
        // Micro-hours are exact because at most six decimal places are allowed.
        let micro_hours = used.mantissa() * 10i128.pow(6 - used.scale());
        let charged =
            i128::from(lease.price.micros()) * i128::from(lease.gpus) * micro_hours / 1_000_000;
        let charged = i64::try_from(charged).map_err(|_| bad())?;
        let fee_rate = self.markets[self.market_index[&lease.market] as usize].fee;
        let fee = i64::try_from(i128::from(charged) * i128::from(fee_rate.get()) / 10_000)
            .expect("a fee is at most the charge");
        let refunded = lease.cost.micros() - charged;
        let provider_earned = charged - fee;

        let lease = self.leases.remove(lease_id).expect("looked up above");
        let buyer = self.funds.entry(lease.buyer).or_default();
        buyer.in_lease -= lease.cost.micros();
        buyer.available += refunded;
        let provider = self.funds.entry(lease.provider).or_default();
        provider.available += provider_earned;
        provider.unpaid_earnings += provider_earned;
        self.funds.entry(AccountId::MARKET).or_default().available += fee;
        out.push(Event::LeaseEnded {
            lease_id,
            buyer: lease.buyer,
            provider: lease.provider,
            hours_used: used,
            charged: Amount::from_micros(charged),
            fee: Amount::from_micros(fee),
            provider_earned: Amount::from_micros(provider_earned),
            refunded: Amount::from_micros(refunded),
            reason,
        });
        Ok(())
    }

    fn start_lease(
        &mut self,
        provider: AccountId,
        lease_id: LeaseId,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let now = self.now;
        let lease = self
            .leases
            .get_mut(lease_id)
            .ok_or(Rejection::UnknownLease { lease_id })?;
        if provider != lease.provider {
            return Err(Rejection::NotLeaseProvider {
                lease_id,
                by: provider,
            });
        }
        if let Some(started_at) = lease.started_at {
            return Err(Rejection::LeaseAlreadyStarted {
                lease_id,
                started_at,
            });
        }
        lease.started_at = Some(Timestamp(now));
        out.push(Event::LeaseStarted {
            lease_id,
            provider,
            node: lease.node,
            // The clock never goes back, so the start is never before the fill.
            after_ms: now.abs_diff(lease.start.0),
        });
        Ok(())
    }

    fn set_reputation(&mut self, provider: AccountId, score: Reputation, out: &mut Vec<Event>) {
        self.reputations.insert(provider, score);
        out.push(Event::ReputationSet { provider, score });
        let mut dropped: Vec<(OrderId, u32)> = self
            .orders
            .live()
            .filter(|(_, o)| {
                o.account == provider && matches!(&o.terms, Terms::Ask(a) if a.reputation > score)
            })
            .map(|(slot, o)| (o.id, slot))
            .collect();
        // Slots differ after a restore; order ids do not.
        dropped.sort_unstable();
        for (_, slot) in dropped {
            self.retire(slot, true, CancelReason::ReputationDropped, out);
        }
    }

    // ----- Queries. They read state and never change it. -----

    pub fn balance(&self, account: AccountId) -> Balance {
        let f = self.funds.get(&account).copied().unwrap_or_default();
        Balance {
            available: Amount::from_micros(f.available),
            held: Amount::from_micros(f.held),
            in_lease: Amount::from_micros(f.in_lease),
            settling: Amount::from_micros(f.settling),
        }
    }

    /// The sum of every account's buckets: changes only with deposits and withdrawals.
    pub fn total_money(&self) -> Amount {
        Amount::from_micros(
            self.funds
                .values()
                .map(|f| f.available + f.held + f.in_lease + f.settling)
                .sum(),
        )
    }

    pub fn order(&self, order_id: OrderId) -> Option<RestingOrder> {
        let slot = self.order_index.get(order_id)?;
        let o = self.orders.get(slot);
        Some(RestingOrder {
            id: o.id,
            account: o.account,
            market: self.markets[o.market as usize].id,
            side: o.side,
            price: Price::from_micros(o.price),
            remaining: o.remaining,
            filled: o.filled,
            hold: Amount::from_micros(o.hold),
        })
    }

    pub fn lease(&self, lease_id: LeaseId) -> Option<&Lease> {
        self.leases.get(lease_id)
    }

    /// Every running lease, in no particular order.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.iter()
    }

    pub fn reputation(&self, provider: AccountId) -> Reputation {
        self.reputations
            .get(&provider)
            .copied()
            .unwrap_or(Reputation::MIN)
    }

    /// The best `levels` price levels of each side of a market.
    pub fn depth(&self, market: MarketId, levels: usize) -> Option<Depth> {
        let m = &self.markets[*self.market_index.get(&market)? as usize];
        let side = |ladder: &Ladder| {
            ladder
                .levels()
                .take(levels)
                .map(|l| DepthLevel {
                    price: Price::from_micros(l.price),
                    gpus: l.gpus,
                    orders: l.orders,
                })
                .collect()
        };
        Some(Depth {
            market,
            bids: side(&m.bids),
            asks: side(&m.asks),
        })
    }

    /// Every counter-order at a price the resting order would accept, in priority order,
    /// with the constraint that keeps them apart (at most `limit` of them).
    pub fn explain(&self, order_id: OrderId, limit: usize) -> Result<Explanation, Rejection> {
        let slot = self
            .order_index
            .get(order_id)
            .ok_or(Rejection::UnknownOrder { order_id })?;
        let order = self.orders.get(slot);
        let market = &self.markets[order.market as usize];
        let opposite = match order.side {
            Side::Bid => &market.asks,
            Side::Ask => &market.bids,
        };
        let mut skipped = Vec::new();
        let mut truncated = false;
        for other_slot in opposite.iter(&self.orders) {
            let other = self.orders.get(other_slot);
            let crosses = match order.side {
                Side::Bid => other.price <= order.price,
                Side::Ask => other.price >= order.price,
            };
            if !crosses {
                break;
            }
            if skipped.len() == limit {
                truncated = true;
                break;
            }
            let (bid, b, a) = match order.side {
                Side::Bid => (order.bid(), order, other),
                Side::Ask => (other.bid(), other, order),
            };
            let (Some(bid), Terms::Ask(ask)) = (bid, &a.terms) else {
                unreachable!("ladders hold one side each")
            };
            let reason = attribute_exclusion(bid, ask, self.now)
                .or((b.account == a.account).then_some(Exclusion::SameAccount))
                .or_else(|| fill_quantity(bid, b.remaining, a.remaining, false).err());
            if let Some(reason) = reason {
                skipped.push(SkippedOrder {
                    order_id: other.id,
                    price: Price::from_micros(other.price),
                    gpus: other.remaining,
                    reason,
                });
            }
        }
        Ok(Explanation {
            order_id,
            skipped,
            truncated,
        })
    }

    /// Checks the engine's invariants and lists every violation (empty when sound): holds
    /// match resting bids, level totals match their orders, and no resting bid could trade
    /// with a resting ask.
    pub fn audit(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut held: FxHashMap<AccountId, i64> = FxHashMap::default();
        for market in &self.markets {
            for ladder in [&market.bids, &market.asks] {
                for level in ladder.levels() {
                    let (mut gpus, mut count, mut slot) = (0u64, 0u32, level.head);
                    while slot != NIL {
                        let o = self.orders.get(slot);
                        gpus += u64::from(o.remaining);
                        count += 1;
                        if o.price != level.price {
                            problems.push(format!("order {} sits at a wrong level", o.id));
                        }
                        if let Some(b) = o.bid() {
                            let expected = o.price * i64::from(o.remaining) * i64::from(b.hours);
                            if o.hold != expected {
                                problems.push(format!(
                                    "order {} holds {} instead of {expected}",
                                    o.id, o.hold
                                ));
                            }
                            *held.entry(o.account).or_default() += o.hold;
                        }
                        slot = o.next;
                    }
                    if gpus != level.gpus || count != level.orders {
                        problems.push(format!(
                            "{} level {} counts {}/{} but holds {gpus}/{count}",
                            market.id, level.price, level.gpus, level.orders
                        ));
                    }
                }
            }
            for b in market.bids.iter(&self.orders).map(|s| self.orders.get(s)) {
                let bid = b.bid().expect("the bid ladder holds bids");
                for a in market.asks.iter(&self.orders).map(|s| self.orders.get(s)) {
                    if a.price > b.price {
                        break;
                    }
                    let Terms::Ask(ask) = &a.terms else {
                        unreachable!("the ask ladder holds asks")
                    };
                    let apart = attribute_exclusion(bid, ask, self.now).is_some()
                        || fill_quantity(bid, b.remaining, a.remaining, false).is_err();
                    if !apart {
                        problems.push(format!(
                            "{} is crossed: bid {} at {} could trade with ask {} at {}",
                            market.id, b.id, b.price, a.id, a.price
                        ));
                    }
                }
            }
        }
        for (account, funds) in &self.funds {
            let expected = held.get(account).copied().unwrap_or(0);
            if funds.held != expected {
                problems.push(format!(
                    "account {account} has {} held but its bids hold {expected}",
                    funds.held
                ));
            }
            if funds.available < 0
                || funds.in_lease < 0
                || funds.requested < 0
                || funds.unpaid_earnings < 0
            {
                problems.push(format!("account {account} is negative: {funds:?}"));
            }
            let in_batch = self
                .open_settlement_batch()
                .and_then(|(_, payouts)| payouts.iter().find(|p| p.account == *account))
                .map_or(0, |p| p.amount.micros());
            if funds.settling != funds.requested + in_batch {
                problems.push(format!(
                    "account {account} has {} settling but {} requested and {in_batch} in the open batch",
                    funds.settling, funds.requested
                ));
            }
        }
        let in_leases: i64 = self.leases.iter().map(|l| l.cost.micros()).sum();
        let in_lease_funds: i64 = self.funds.values().map(|f| f.in_lease).sum();
        if in_leases != in_lease_funds {
            problems.push(format!(
                "leases hold {in_leases} but accounts count {in_lease_funds} in leases"
            ));
        }
        problems
    }
}
