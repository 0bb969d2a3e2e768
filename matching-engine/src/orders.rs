//! Orders in and out of the book: placing (validation, then the match), cancelling and
//! amending, retiring an order with its hold released (which every cancellation goes
//! through), and a new reputation, which resting asks advertise at once.

use contract::{
    AccountId, Amount, AskSpec, BidSpec, CancelReason, Event, Gpus, NewOrder, NodeRef, OrderId,
    OrderOptions, OrderTerms, Price, Region, Rejection, Reputation, Side, TimeInForce, Timestamp,
};

use crate::book::{AskTerms, BidExtras, BidTerms, Order, Terms, NIL};
use crate::funds::overflow;
use crate::matching::{interconnect_bit, region_bit, vendor_bit, ANY_REGION, MAX_REGIONS};
use crate::Engine;

impl Engine {
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

    /// The regions a command names that the engine has not seen, checked against capacity.
    fn new_regions(&self, names: &[Region]) -> Result<Vec<Region>, Rejection> {
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

    /// A bid's constraints compiled; `options` is set for `PlaceWith` bids, `check` for the
    /// checker's.
    fn bid_terms(
        &self,
        spec: &BidSpec,
        gpus: Gpus,
        tif: TimeInForce,
        options: Option<&OrderOptions>,
        check: Option<NodeRef>,
    ) -> Result<BidTerms, Rejection> {
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
            metered: options.is_some(),
            extras: options
                .filter(|o| o.rebid_on_failure || !o.exclude_nodes.is_empty() || check.is_some())
                .map(|o| {
                    Box::new(BidExtras {
                        exclude: o.exclude_nodes.clone(),
                        rebid: o.rebid_on_failure.then(|| (tif, spec.clone())),
                        check,
                    })
                }),
        })
    }

    /// `region_bit` is the ask's region's bit, `None` for a region the engine has not seen.
    fn ask_terms(
        &self,
        provider: AccountId,
        market: u32,
        spec: &AskSpec,
        region_bit: Option<u8>,
    ) -> Result<AskTerms, Rejection> {
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
            region_bit: region_bit.unwrap_or(self.regions.len() as u8),
            available_until: spec.available_until.0,
            reputation: self
                .reputations
                .get(&provider)
                .copied()
                .unwrap_or(Reputation::MIN),
            backed: false,
            probation: self.on_probation(
                market,
                NodeRef {
                    provider,
                    node: spec.node,
                },
            ),
        })
    }

    /// `PlaceWith`: the options' own checks, then the order as `place` takes it.
    pub(crate) fn place_with(
        &mut self,
        order: &NewOrder,
        options: &OrderOptions,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if order.client_id.is_reserved() {
            return Err(Rejection::ReservedClientOrderId {
                client_id: order.client_id,
            });
        }
        if matches!(order.terms, OrderTerms::Ask(_)) && *options != OrderOptions::default() {
            return Err(Rejection::BidOptionOnAsk);
        }
        if options.exclude_nodes.len() > OrderOptions::MAX_EXCLUDED {
            return Err(Rejection::TooManyExcludedNodes {
                max: OrderOptions::MAX_EXCLUDED as u32,
            });
        }
        self.place(order, Some(options), None, out)
    }

    /// Places an order: `options` is `None` for schema 1's `Place`, whose leases are not
    /// metered; `check` is the node a checker's bid is for (`PlaceCheck`).
    pub(crate) fn place(
        &mut self,
        new: &NewOrder,
        options: Option<&OrderOptions>,
        check: Option<NodeRef>,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
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
        // A bid holds money (`hold`); an ask placed with `PlaceWith` holds bond (`bond`).
        let (terms, hold, bond, fresh_regions) = match &new.terms {
            OrderTerms::Bid(spec) => {
                let hold = overflow(new.price.cost(new.gpus, spec.hours))?.micros();
                self.ensure_funds(new.account, hold)?;
                // Most bids name no region: they skip the search.
                let fresh = if spec.regions.is_empty() {
                    Vec::new()
                } else {
                    self.new_regions(&spec.regions)?
                };
                let terms = self.bid_terms(spec, new.gpus, new.tif, options, check)?;
                (Terms::Bid(terms), hold, 0, fresh)
            }
            OrderTerms::Ask(spec) => {
                self.check_node_reporting(NodeRef {
                    provider: new.account,
                    node: spec.node,
                })?;
                // Schema 1's `Place` took the ask's word for its GPUs; `PlaceWith`, which
                // the API sends, needs the node's signed report and the bond.
                let bond = match options {
                    Some(_) => self.check_backing(new.account, market, spec, new.gpus.get())?,
                    None => 0,
                };
                // One search for the ask's region serves both the check and its terms.
                let bit = region_bit(&self.regions, spec.region);
                let fresh = match bit {
                    Some(_) => Vec::new(),
                    None => self.new_regions(std::slice::from_ref(&spec.region))?,
                };
                let mut terms = self.ask_terms(new.account, market, spec, bit)?;
                terms.backed = options.is_some();
                // An ask that can no longer fit a one-hour lease leaves the book.
                expires_at = expires_at.min(terms.available_until - Timestamp::MS_PER_HOUR);
                (Terms::Ask(terms), 0, bond, fresh)
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
            hold: hold + bond,
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
            // `ensure_funds` bounded the hold by available; within one account the total
            // stays in range (the `Funds` invariant), so neither bucket overflows.
            let funds = self.funds.entry(new.account).or_default();
            funds.available -= hold;
            funds.held += hold;
        }
        if let Terms::Ask(ask) = &order.terms {
            if ask.backed {
                let key = NodeRef {
                    provider: new.account,
                    node: ask.node,
                };
                self.hold_bond(new.account, market, bond);
                self.add_node_ask(key, order.id);
            }
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

    /// Removes an order with its remainder unfilled and releases its hold.
    pub(crate) fn retire(
        &mut self,
        slot: u32,
        in_book: bool,
        reason: CancelReason,
        out: &mut Vec<Event>,
    ) {
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
        let mut released = 0;
        if order.side == Side::Ask {
            // An ask's hold is bond, which stays bond.
            self.release_bond(order.account, order.market, order.hold);
        } else if order.hold > 0 {
            // Back within one account: the total, which fits (the `Funds` invariant), is
            // unchanged.
            let funds = self.funds.entry(order.account).or_default();
            funds.held -= order.hold;
            funds.available += order.hold;
            released = order.hold;
        }
        out.push(Event::OrderCancelled {
            order_id: order.id,
            account: order.account,
            remaining: order.remaining,
            released: Amount::from_micros(released),
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

    pub(crate) fn cancel(
        &mut self,
        account: AccountId,
        order_id: OrderId,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let slot = self.owned_slot(account, order_id)?;
        self.retire(slot, true, CancelReason::Requested, out);
        Ok(())
    }

    pub(crate) fn amend(
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
        // Both parts of one order's GPUs, at most `Gpus::MAX` together.
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
            // At most 65,536 GPUs × 8,760 hours; only the price can take it past i64.
            let units = i64::from(new_remaining) * i64::from(bid.hours);
            amended.hold = overflow(new_price.checked_mul(units))?;
            self.ensure_funds(account, amended.hold - current.hold)?;
        }
        if let Terms::Ask(ask) = &current.terms {
            let grows = ask.backed && new_remaining > current.remaining;
            if grows {
                // More GPUs need the report, and the whole ask is held at the market's bond
                // per GPU now (an ask placed before a raise pays the raise to grow).
                let spec = contract::AskSpec {
                    node: ask.node,
                    vendor: ask.vendor,
                    vram_gb: ask.vram_gb,
                    interconnect: ask.interconnect,
                    region: ask.region,
                    available_until: Timestamp(ask.available_until),
                };
                let more = new_remaining - current.remaining;
                self.check_backing(account, current.market, &spec, more)?;
                let rate = self.markets[current.market as usize].config.bond_per_gpu;
                amended.hold = overflow(rate.micros().checked_mul(i64::from(new_remaining)))?;
                let extra = amended.hold - current.hold;
                let free = self.free_bond(account, current.market);
                if extra > free {
                    return Err(Rejection::InsufficientBond {
                        needed: Amount::from_micros(extra),
                        free: Amount::from_micros(free),
                    });
                }
            } else {
                // Fewer GPUs (or a new price) keep the ask's own bond per GPU: at most the
                // hold it has.
                amended.hold =
                    current.hold / i64::from(current.remaining) * i64::from(new_remaining);
            }
        }
        let keeps_priority = new_price == current.price && new_remaining < current.remaining;
        // Two holds, each in 0..=i64::MAX: their difference fits. An ask's is bond.
        let hold_change = amended.hold - current.hold;
        let (hold_change, bond_change) = match amended.side {
            Side::Bid => (hold_change, 0),
            Side::Ask => (0, hold_change),
        };
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
            // Within one account, and a rise is at most what is available (checked above).
            let funds = self.funds.entry(account).or_default();
            funds.available -= hold_change;
            funds.held += hold_change;
        }
        if bond_change > 0 {
            self.hold_bond(account, market, bond_change);
        } else {
            self.release_bond(account, market, -bond_change);
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

    /// A provider's score, which its resting asks advertise at once. A lower score only
    /// excludes trades. A higher one can make a resting bid that demanded more accept one of
    /// those asks, so each ask whose score rose is matched again where it rests
    /// ([`Engine::rematch_asks`]).
    pub(crate) fn set_reputation(
        &mut self,
        provider: AccountId,
        score: Reputation,
        out: &mut Vec<Event>,
    ) {
        self.reputations.insert(provider, score);
        out.push(Event::ReputationSet { provider, score });
        self.rematch_asks(
            |o| o.account == provider,
            |terms| {
                let before = std::mem::replace(&mut terms.reputation, score);
                (score > before).then(|| AskTerms {
                    reputation: before,
                    ..terms.clone()
                })
            },
            out,
        );
    }

    /// Changes the terms of the resting asks `select` picks (in id order) with `change`,
    /// which returns the terms as they were where the change lets more bids take the ask:
    /// each such ask is matched again where it rests, as an amended order is: it keeps its
    /// place and takes what now accepts it, at the bids' prices. A post-only ask never
    /// takes: where the change would make it trade, it keeps its old terms.
    pub(crate) fn rematch_asks(
        &mut self,
        select: impl Fn(&Order) -> bool,
        change: impl Fn(&mut AskTerms) -> Option<AskTerms>,
        out: &mut Vec<Event>,
    ) {
        let mut asks: Vec<(OrderId, u32)> = self
            .orders
            .live()
            .filter(|(_, o)| matches!(o.terms, Terms::Ask(_)) && select(o))
            .map(|(slot, o)| (o.id, slot))
            .collect();
        // Slots differ after a restore; order ids do not.
        asks.sort_unstable();
        for (_, slot) in asks {
            let Terms::Ask(terms) = &mut self.orders.get_mut(slot).terms else {
                unreachable!("filtered to asks")
            };
            let Some(before) = change(terms) else {
                continue;
            };
            let mut plan = std::mem::take(&mut self.plan);
            let order = self.orders.get(slot);
            let planned = self.plan_match(order, &mut plan);
            if self
                .check_plan(order, TimeInForce::Gtc, planned, &mut plan)
                .is_err()
            {
                self.orders.get_mut(slot).terms = Terms::Ask(before);
            } else {
                self.execute(slot, true, &plan, out);
                if self.orders.get(slot).remaining == 0 {
                    let done = self.orders.remove(slot);
                    self.order_index.remove(done.id);
                }
            }
            plan.clear();
            self.plan = plan;
        }
    }
}
