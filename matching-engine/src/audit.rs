//! The engine checking its own invariants (`Engine::audit`); the tests run it after every
//! command.

use contract::{AccountId, NodeRef, Timestamp};
use rustc_hash::FxHashMap;

use crate::book::{Terms, NIL};
use crate::matching::{attribute_exclusion, fill_quantity};
use crate::Engine;

impl Engine {
    /// Checks the engine's invariants and lists every violation (empty when sound): holds
    /// match resting bids, level totals match their orders, no resting bid could trade
    /// with a resting ask, every account's money is non-negative and in range, money in
    /// leases is what the leases cost, and no lease is charged more than its cost, time
    /// or term. Sums are widened to i128, so a broken invariant is reported, never an
    /// overflow.
    pub fn audit(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut held: FxHashMap<AccountId, i128> = FxHashMap::default();
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
                            let expected =
                                i128::from(o.price) * i128::from(o.remaining) * i128::from(b.hours);
                            if i128::from(o.hold) != expected {
                                problems.push(format!(
                                    "order {} holds {} instead of {expected}",
                                    o.id, o.hold
                                ));
                            }
                            *held.entry(o.account).or_default() += i128::from(o.hold);
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
                    let apart = attribute_exclusion(bid, ask, a.account, self.now).is_some()
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
            if i128::from(funds.held) != expected {
                problems.push(format!(
                    "account {account} has {} held but its bids hold {expected}",
                    funds.held
                ));
            }
            if funds.available < 0
                || funds.held < 0
                || funds.in_lease < 0
                || funds.settling < 0
                || funds.requested < 0
                || funds.unpaid_earnings < 0
            {
                problems.push(format!("account {account} is negative: {funds:?}"));
            }
            let max = i128::from(i64::MAX);
            if funds.total() > max {
                problems.push(format!("account {account} holds more than i64: {funds:?}"));
            }
            if i128::from(funds.unpaid_earnings) + i128::from(funds.settling) > max {
                problems.push(format!(
                    "account {account} owes earnings and settles more than i64: {funds:?}"
                ));
            }
            let in_batch = self
                .open_settlement_batch()
                .and_then(|(_, payouts)| payouts.iter().find(|p| p.account == *account))
                .map_or(0, |p| p.amount.micros());
            if i128::from(funds.settling) != i128::from(funds.requested) + i128::from(in_batch) {
                problems.push(format!(
                    "account {account} has {} settling but {} requested and {in_batch} in the open batch",
                    funds.settling, funds.requested
                ));
            }
        }
        let waiting = self.pending_ends.iter().map(|p| (&p.lease, &p.meter));
        let held = self.held.values().map(|h| (&h.lease, &h.lease.meter));
        for (lease, m) in self
            .leases
            .iter()
            .map(|l| (l, &l.meter))
            .chain(waiting)
            .chain(held)
        {
            let term_ms = u64::from(lease.hours) * Timestamp::MS_PER_HOUR as u64;
            if m.charged > lease.cost.micros() || m.fee > m.charged || m.charged_ms > term_ms {
                problems.push(format!(
                    "lease {} charged {} (fee {}) for {} ms of a {} cost over {term_ms} ms",
                    lease.id, m.charged, m.fee, m.charged_ms, lease.cost
                ));
            }
            if m.accrued_to > lease.ends_at().0 {
                problems.push(format!("lease {} accrued past its term", lease.id));
            }
        }
        for lease in self.leases.iter().filter(|l| l.meter.metered) {
            let node = NodeRef {
                provider: lease.provider,
                node: lease.node,
            };
            if !self
                .nodes
                .get(&node)
                .is_some_and(|n| n.leases.contains(&lease.id))
            {
                problems.push(format!("lease {} is not among its node's", lease.id));
            }
        }
        let in_leases: i128 = self
            .leases
            .iter()
            .chain(self.pending_ends.iter().map(|p| &p.lease))
            .chain(self.held.values().map(|h| &h.lease))
            .map(|l| i128::from(l.cost.micros()))
            .sum();
        let in_lease_funds: i128 = self.funds.values().map(|f| i128::from(f.in_lease)).sum();
        if in_leases != in_lease_funds {
            problems.push(format!(
                "leases hold {in_leases} but accounts count {in_lease_funds} in leases"
            ));
        }
        self.audit_bonds(&mut problems);
        problems
    }

    /// Bonds: every bucket non-negative; what each provider's bond holds in a market is what
    /// its asks there and its leases hold; what unbonds is what waits to be released; and
    /// each account's `bonded` is the sum of its bonds.
    fn audit_bonds(&self, problems: &mut Vec<String>) {
        let mut held: FxHashMap<(AccountId, u32), i128> = FxHashMap::default();
        for (_, o) in self.orders.live() {
            if o.bid().is_none() && o.hold != 0 {
                *held.entry((o.account, o.market)).or_default() += i128::from(o.hold);
            }
        }
        let held_leases = self.held.values().map(|h| &h.lease);
        for lease in self
            .leases
            .iter()
            .chain(held_leases)
            .filter(|l| l.meter.bond != 0)
        {
            let market = self.market_index[&lease.market];
            *held.entry((lease.provider, market)).or_default() += i128::from(lease.meter.bond);
        }
        let mut unbonding: FxHashMap<(AccountId, u32), i128> = FxHashMap::default();
        let mut pending: FxHashMap<(AccountId, u32), u32> = FxHashMap::default();
        for u in self.unbondings.values() {
            *unbonding.entry((u.provider, u.market)).or_default() += i128::from(u.amount);
            *pending.entry((u.provider, u.market)).or_default() += 1;
        }
        let mut bonded: FxHashMap<AccountId, i128> = FxHashMap::default();
        for (key, bond) in &self.bonds {
            if bond.free < 0 || bond.held < 0 || bond.unbonding < 0 {
                problems.push(format!("bond {key:?} is negative: {bond:?}"));
            }
            if i128::from(bond.held) != held.remove(key).unwrap_or(0) {
                problems.push(format!(
                    "bond {key:?} holds {} but its asks and leases do not",
                    bond.held
                ));
            }
            if bond.pending != pending.get(key).copied().unwrap_or(0) {
                problems.push(format!(
                    "bond {key:?} counts {} withdrawals waiting",
                    bond.pending
                ));
            }
            if i128::from(bond.unbonding) != unbonding.remove(key).unwrap_or(0) {
                problems.push(format!(
                    "bond {key:?} unbonds {} but its unbondings do not",
                    bond.unbonding
                ));
            }
            *bonded.entry(key.0).or_default() +=
                i128::from(bond.free) + i128::from(bond.held) + i128::from(bond.unbonding);
        }
        for key in held.keys().chain(unbonding.keys()) {
            problems.push(format!("{key:?} holds or unbonds bond it has not posted"));
        }
        for (account, funds) in &self.funds {
            if i128::from(funds.bonded) != bonded.remove(account).unwrap_or(0) {
                problems.push(format!(
                    "account {account} counts {} bonded, its bonds do not",
                    funds.bonded
                ));
            }
        }
        if !bonded.is_empty() || self.insurance < 0 {
            problems.push(format!(
                "bonds without an account {bonded:?}, or a negative insurance fund"
            ));
        }
    }
}
