//! The life of a lease after its fill: the provider reports the job started, the lease ends
//! and its cost is split between charge, fee and refund; and node heartbeats, which the
//! projections judge leases against.

use contract::{
    AccountId, Amount, Event, Gpus, LeaseEndReason, LeaseId, MarketId, NodeId, Rejection, Timestamp,
};
use rust_decimal::Decimal;

use crate::funds::overflow;
use crate::Engine;

impl Engine {
    pub(crate) fn end_lease(
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
        if used.is_sign_negative() || used.scale() > 6 || used > Decimal::from(lease.hours) {
            return Err(Rejection::BadHoursUsed {
                hours_used,
                hours: lease.hours,
            });
        }
        // Micro-hours are exact because at most six decimal places are allowed. In i128 the
        // product cannot overflow (below 2^63 × 2^17 × 2^34), and since at most the lease's
        // hours are used, the charge is at most the lease's cost, which is an i64.
        let micro_hours = used.mantissa() * 10i128.pow(6 - used.scale());
        let charged =
            i128::from(lease.price.micros()) * i128::from(lease.gpus) * micro_hours / 1_000_000;
        let charged = i64::try_from(charged).expect("a charge is at most the lease's cost");
        let fee_rate = self.markets[self.market_index[&lease.market] as usize].fee;
        let fee = i64::try_from(i128::from(charged) * i128::from(fee_rate.get()) / 10_000)
            .expect("a fee is at most the charge");
        let refunded = lease.cost.micros() - charged;
        let provider_earned = charged - fee;
        // Money comes into two other accounts, so both must have room before anything
        // changes, and the provider's owed earnings too (the `Funds` invariant). The buyer's
        // refund comes out of its own lease; self-trade prevention means the buyer is never
        // the provider.
        let provider = self.funds.get(&lease.provider).copied().unwrap_or_default();
        provider.can_receive(provider_earned)?;
        overflow(
            provider
                .unpaid_earnings
                .checked_add(provider.settling)
                .and_then(|owed| owed.checked_add(provider_earned)),
        )?;
        let market = self
            .funds
            .get(&AccountId::MARKET)
            .copied()
            .unwrap_or_default();
        market.can_receive(fee)?;

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

    pub(crate) fn start_lease(
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

    pub(crate) fn heartbeat(
        &self,
        provider: AccountId,
        node: NodeId,
        class: MarketId,
        gpus: Gpus,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        // The engine keeps no node state: a heartbeat is a fact for the projections,
        // ordered with the trades it is judged against.
        if provider == AccountId::MARKET {
            return Err(Rejection::ReservedAccount { account: provider });
        }
        out.push(Event::NodeHeartbeat {
            provider,
            node,
            class,
            gpus,
        });
        Ok(())
    }
}
