//! The matcher: plan an order's match read-only, apply the order type's rules to the plan,
//! then carry it out (self-trade cancels and fills, each fill a lease) and rest, cancel or
//! finish the taker.

use contract::{
    Amount, CancelReason, Event, Gpus, Hours, LeaseId, NodeRef, Price, Rejection, Side,
    TimeInForce, Timestamp,
};

use crate::book::{Order, Terms};
use crate::matching::{attribute_exclusion, fill_quantity};
use crate::metering::{Meter, Rebid};
use crate::timers::Due;
use crate::{Engine, Lease, Step};

impl Engine {
    /// Applies the order type's rules to a plan: rejects what must be rejected and drops
    /// the fills of an all-or-none order that cannot complete.
    pub(crate) fn check_plan(
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
    pub(crate) fn plan_match(&self, taker: &Order, plan: &mut Vec<Step>) -> u32 {
        let market = &self.markets[taker.market as usize];
        let opposite = match taker.side {
            Side::Bid => Side::Ask,
            Side::Ask => Side::Bid,
        };
        let ladder = market.ladder(opposite);
        // Most orders do not cross on arrival: one look at the best level says so, before
        // the walk's iterator is even made.
        let crosses_best = ladder.best_price().is_some_and(|best| match taker.side {
            Side::Bid => best <= taker.price,
            Side::Ask => best >= taker.price,
        });
        if !crosses_best {
            return 0;
        }
        let mut remaining = taker.remaining;
        for slot in ladder.iter(&self.orders) {
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
            let provider = match taker.side {
                Side::Bid => maker.account,
                Side::Ask => taker.account,
            };
            if attribute_exclusion(bid, ask, provider, self.now).is_some() {
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
    pub(crate) fn execute(
        &mut self,
        taker: u32,
        in_book: bool,
        plan: &[Step],
        out: &mut Vec<Event>,
    ) {
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
        let (hours, bid_price, buyer, bid_id, metered, rebid) = {
            let b = self.orders.get(bid_slot);
            let terms = b.bid().expect("bid slot holds a bid");
            let rebid = terms.extras.as_ref().and_then(|x| {
                let (tif, spec) = x.rebid.as_ref()?;
                Some(Box::new(Rebid {
                    price: Price::from_micros(b.price),
                    tif: *tif,
                    spec: spec.clone(),
                    exclude: x.exclude.clone(),
                }))
            });
            (terms.hours, b.price, b.account, b.id, terms.metered, rebid)
        };
        let (provider, node, ask_id, bond, backed) = {
            let a = self.orders.get(ask_slot);
            let (node, backed) = match &a.terms {
                Terms::Ask(t) => (t.node, t.backed),
                Terms::Bid(_) => unreachable!("ask slot holds an ask"),
            };
            // The bond behind the filled GPUs moves from the ask to the lease (an ask holds
            // exactly its bond per GPU × its remaining GPUs).
            let bond = match a.hold {
                0 => 0,
                hold => hold / i64::from(a.remaining) * i64::from(gpus),
            };
            (a.account, node, a.id, bond, backed)
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
            o.hold -= match o.side {
                Side::Bid => bid_part,
                Side::Ask => bond,
            };
        }
        // The buyer's own money changes buckets: its total is unchanged.
        let funds = self.funds.entry(buyer).or_default();
        funds.held -= bid_part;
        funds.in_lease += cost;
        funds.available += released;

        let lease_id = LeaseId(self.next_lease_id);
        self.next_lease_id += 1;
        let market_id = self.markets[market as usize].id;
        let bid_remaining = self.orders.get(bid_slot).remaining;
        let ask_remaining = self.orders.get(ask_slot).remaining;
        let start = self.now;
        let end = start + i64::from(hours) * Timestamp::MS_PER_HOUR;
        let mut meter = if metered {
            Meter::metered(start, end, &self.markets[market as usize].config, rebid)
        } else {
            Meter::unmetered(start)
        };
        meter.bond = bond;
        meter.backed = backed;
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
            meter,
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
        let deadline = lease.meter.deadline;
        self.leases.push(lease);
        if metered {
            self.nodes.add_lease(NodeRef { provider, node }, lease_id);
            self.arm(deadline, Due::Lease, lease_id.0);
        }
        if self.orders.get(maker).remaining == 0 {
            let done = self.orders.remove(maker);
            self.order_index.remove(done.id);
        }
    }

    /// After its fills, a taker rests, or (IOC) cancels its rest, or is done.
    pub(crate) fn settle_taker(&mut self, slot: u32, immediate: bool, out: &mut Vec<Event>) {
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
                self.arm(expires_at, Due::Order { slot }, id.0);
            }
        }
    }
}
