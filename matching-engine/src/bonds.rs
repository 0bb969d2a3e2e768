//! Providers' bonds, per market: posted from available, held behind the GPUs a provider
//! offers or leases, slashed by a provider failure, and withdrawn through the market's
//! unbonding delay.
//!
//! An ask placed with `PlaceWith` holds the market's bond per GPU (in its `hold`) from the
//! provider's free bond; each fill moves the part behind the filled GPUs to the lease; the
//! ask's unfilled rest goes back to free bond when it leaves the book, and a lease's part
//! when the lease closes. A provider failure slashes the market's share of the lease's
//! part: the buyer is credited the same share of what it was charged (at most the slash),
//! the insurance fund takes the rest. Every amount is an exact micro-unit; the bond's buckets always sum to the
//! account's `bonded`.

use contract::{AccountId, Amount, Event, LeaseEndCause, LeaseEndReason, MarketId, Rejection};
use serde::{Deserialize, Serialize};

use crate::{Engine, Lease};

/// One provider's bond in one market.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bond {
    /// Posted and not behind any GPU: asks can hold it, `WithdrawBond` can take it.
    pub free: i64,
    /// Behind resting asks' GPUs and running leases.
    pub held: i64,
    /// Withdrawn, waiting for the unbonding delay.
    pub unbonding: i64,
    /// How many withdrawals wait: at most [`MAX_UNBONDINGS`], so a provider cannot grow
    /// the engine's state (and the snapshot) one micro-unit withdrawal at a time.
    pub pending: u32,
}

/// The most withdrawals of bond that wait at once per provider and market.
pub(crate) const MAX_UNBONDINGS: u32 = 32;

/// Withdrawn bond on its way back to available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Unbonding {
    pub provider: AccountId,
    pub market: u32,
    pub amount: i64,
    pub release_at: i64,
}

impl Engine {
    pub(crate) fn free_bond(&self, provider: AccountId, market: u32) -> i64 {
        self.bonds.get(&(provider, market)).map_or(0, |b| b.free)
    }

    pub(crate) fn post_bond(
        &mut self,
        provider: AccountId,
        market: MarketId,
        amount: Amount,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if !amount.is_positive() {
            return Err(Rejection::NonPositiveAmount { amount });
        }
        if provider == AccountId::MARKET {
            return Err(Rejection::ReservedAccount { account: provider });
        }
        let index = self.market_of(market)?;
        self.ensure_funds(provider, amount.micros())?;
        // Within one account: its total is unchanged.
        let funds = self.funds.entry(provider).or_default();
        funds.available -= amount.micros();
        funds.bonded += amount.micros();
        self.bonds.entry((provider, index)).or_default().free += amount.micros();
        out.push(Event::BondPosted {
            provider,
            market,
            amount,
        });
        Ok(())
    }

    pub(crate) fn withdraw_bond(
        &mut self,
        provider: AccountId,
        market: MarketId,
        amount: Amount,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if !amount.is_positive() {
            return Err(Rejection::NonPositiveAmount { amount });
        }
        let index = self.market_of(market)?;
        let free = self.free_bond(provider, index);
        if free < amount.micros() {
            return Err(Rejection::InsufficientBond {
                needed: amount,
                free: Amount::from_micros(free),
            });
        }
        if self.bonds.get(&(provider, index)).map_or(0, |b| b.pending) >= MAX_UNBONDINGS {
            return Err(Rejection::TooManyUnbondings {
                max: MAX_UNBONDINGS,
            });
        }
        let delay = self.markets[index as usize].config.unbonding_delay_ms;
        let release_at = self
            .now
            .saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
        let bond = self
            .bonds
            .get_mut(&(provider, index))
            .expect("free bond was found");
        bond.free -= amount.micros();
        bond.unbonding += amount.micros();
        bond.pending += 1;
        let id = self.next_unbonding;
        self.next_unbonding += 1;
        self.unbondings.insert(
            id,
            Unbonding {
                provider,
                market: index,
                amount: amount.micros(),
                release_at,
            },
        );
        self.arm(release_at, crate::timers::Due::Unbond, id);
        out.push(Event::BondUnbonding {
            provider,
            market,
            amount,
            release_at: contract::Timestamp(release_at),
        });
        Ok(())
    }

    /// An unbonding's delay passed: the amount is available again.
    pub(crate) fn unbond_due(&mut self, id: u64, out: &mut Vec<Event>) {
        let Some(u) = self.unbondings.remove(&id) else {
            return;
        };
        let bond = self
            .bonds
            .get_mut(&(u.provider, u.market))
            .expect("an unbonding has its bond");
        bond.unbonding -= u.amount;
        bond.pending -= 1;
        // Within one account.
        let funds = self.funds.entry(u.provider).or_default();
        funds.bonded -= u.amount;
        funds.available += u.amount;
        out.push(Event::BondReleased {
            provider: u.provider,
            market: self.markets[u.market as usize].id,
            amount: Amount::from_micros(u.amount),
        });
    }

    /// Moves `amount` of free bond behind an ask's GPUs (the caller checked it is free).
    pub(crate) fn hold_bond(&mut self, provider: AccountId, market: u32, amount: i64) {
        if amount > 0 {
            let bond = self.bonds.entry((provider, market)).or_default();
            bond.free -= amount;
            bond.held += amount;
        }
    }

    /// Moves `amount` held behind GPUs back to free bond (an ask's rest left the book).
    pub(crate) fn release_bond(&mut self, provider: AccountId, market: u32, amount: i64) {
        if amount > 0 {
            let bond = self
                .bonds
                .get_mut(&(provider, market))
                .expect("held bond has its bond");
            bond.held -= amount;
            bond.free += amount;
        }
    }

    /// A closing lease's bond: back to free, less the slash when the `cause` is a provider
    /// failure (`None`: schema 1's stated end, which slashes nothing).
    pub(crate) fn close_bond(
        &mut self,
        lease: &mut Lease,
        cause: Option<&LeaseEndCause>,
        out: &mut Vec<Event>,
    ) {
        let held = std::mem::take(&mut lease.meter.bond);
        if held == 0 {
            return;
        }
        let market = self
            .market_of(lease.market)
            .expect("a lease's market exists");
        let config = &self.markets[market as usize].config;
        let failure = cause.filter(|c| c.reason() == LeaseEndReason::ProviderFailed);
        let mut slashed = if failure.is_some() {
            // Below 2^63 × 10^4: exact in i128, and at most `held`.
            (i128::from(held) * i128::from(config.slash_share_bps) / 10_000) as i64
        } else {
            0
        };
        // The buyer is credited the same share of what it was charged (so a buyer never
        // profits from a failure it could provoke; for rejected work, which a referee on a
        // third provider decided, all of it), the fund takes the rest. Where either has
        // no room left in its range (never in practice), nothing is slashed.
        let share = match failure {
            // Rejected work is not paid: the buyer gets back all it was charged.
            Some(LeaseEndCause::WorkRejected { .. }) => lease.meter.charged,
            _ => {
                (i128::from(lease.meter.charged) * i128::from(config.slash_share_bps) / 10_000)
                    as i64
            }
        };
        let buyer_credit = slashed.min(share);
        let buyer_room = self
            .funds
            .get(&lease.buyer)
            .copied()
            .unwrap_or_default()
            .can_receive(buyer_credit)
            .is_ok();
        let fund_room = self.insurance.checked_add(slashed - buyer_credit).is_some();
        if !(buyer_room && fund_room) {
            slashed = 0;
        }
        self.release_bond(lease.provider, market, held - slashed);
        if slashed == 0 {
            return;
        }
        let bond = self
            .bonds
            .get_mut(&(lease.provider, market))
            .expect("held bond has its bond");
        bond.held -= slashed;
        self.funds.entry(lease.provider).or_default().bonded -= slashed;
        self.funds.entry(lease.buyer).or_default().available += buyer_credit;
        self.insurance += slashed - buyer_credit;
        out.push(Event::BondSlashed {
            lease_id: lease.id,
            market: lease.market,
            provider: lease.provider,
            node: lease.node,
            buyer: lease.buyer,
            slashed: Amount::from_micros(slashed),
            buyer_credit: Amount::from_micros(buyer_credit),
            insurance: Amount::from_micros(slashed - buyer_credit),
            cause: failure.cloned().expect("only a provider failure slashes"),
        });
    }
}
