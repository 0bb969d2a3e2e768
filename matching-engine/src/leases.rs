//! The life of a lease after its fill: the provider reports the job started; the lease
//! closes (stopped by a party or the operator, at its term, or when its node fails), its
//! last periods accrue, and its cost splits into charge, fee and refund; and a provider
//! failure places the unused hours again when the bid asked for it.

use contract::{
    AccountId, Amount, BidSpec, ClientOrderId, Event, FailureReason, Hours, LeaseEndCause,
    LeaseEndReason, LeaseId, NewOrder, NodeRef, OrderOptions, OrderTerms, Rejection, Timestamp,
};
use rust_decimal::Decimal;

use crate::funds::overflow;
use crate::metering::{accrue, totals, PendingEnd};
use crate::{Engine, Lease};

impl Engine {
    /// The refusal for a lease that is not running: ended if its id was ever given.
    pub(crate) fn not_running(&self, lease_id: LeaseId) -> Rejection {
        if lease_id.0 >= 1 && lease_id.0 < self.next_lease_id {
            Rejection::LeaseEnded { lease_id }
        } else {
            Rejection::UnknownLease { lease_id }
        }
    }

    /// Refuses the end of `lease` when its money does not fit: the provider's earnings
    /// (its total and its owed earnings, the `Funds` invariant) or the market's fee. The
    /// buyer's refund comes out of its own lease; self-trade prevention means the buyer is
    /// never the provider.
    fn room_for(&self, lease: &Lease, charged: i64, fee: i64) -> Result<(), Rejection> {
        let provider_earned = charged - fee;
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
        market.can_receive(fee)
    }

    /// Moves the money of an ended lease (`room_for` said it fits) and states it.
    fn settle(
        &mut self,
        lease: &Lease,
        charged: i64,
        fee: i64,
        hours_used: Decimal,
        reason: LeaseEndReason,
        out: &mut Vec<Event>,
    ) {
        let refunded = lease.cost.micros() - charged;
        let provider_earned = charged - fee;
        let buyer = self.funds.entry(lease.buyer).or_default();
        buyer.in_lease -= lease.cost.micros();
        buyer.available += refunded;
        let provider = self.funds.entry(lease.provider).or_default();
        provider.available += provider_earned;
        provider.unpaid_earnings += provider_earned;
        self.funds.entry(AccountId::MARKET).or_default().available += fee;
        out.push(Event::LeaseEnded {
            lease_id: lease.id,
            buyer: lease.buyer,
            provider: lease.provider,
            hours_used,
            charged: Amount::from_micros(charged),
            fee: Amount::from_micros(fee),
            provider_earned: Amount::from_micros(provider_earned),
            refunded: Amount::from_micros(refunded),
            reason,
        });
    }

    /// Schema 1's end with stated hours, unchanged for leases of `Place` bids.
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
        if lease.meter.metered {
            return Err(Rejection::LeaseMetered { lease_id });
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
        let fee = self
            .market(lease.market)
            .fee
            .fee_on(Amount::from_micros(charged))
            .micros();
        self.room_for(lease, charged, fee)?;

        let mut lease = self.leases.remove(lease_id).expect("looked up above");
        // A stated end is a party's word, so it releases the bond and slashes nothing.
        self.close_bond(&mut lease, None, out);
        self.settle(&lease, charged, fee, used, reason, out);
        Ok(())
    }

    /// A party stops a lease: the buyer pays to now; the provider's stop is a provider
    /// failure, charged to the last healthy heartbeat.
    pub(crate) fn stop_lease(
        &mut self,
        by: AccountId,
        lease_id: LeaseId,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let lease = self
            .leases
            .get(lease_id)
            .ok_or_else(|| self.not_running(lease_id))?;
        let (cause, charge_to) = if by == lease.buyer {
            (LeaseEndCause::BuyerStopped, self.now)
        } else if by == lease.provider {
            (LeaseEndCause::ProviderStopped, lease.meter.healthy_until)
        } else {
            return Err(Rejection::NotLeaseParty { lease_id, by });
        };
        self.check_room_to_close(lease_id, charge_to)?;
        self.close_lease(lease_id, cause, charge_to, out);
        Ok(())
    }

    pub(crate) fn admin_end_lease(
        &mut self,
        lease_id: LeaseId,
        reason: &FailureReason,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if self.leases.get(lease_id).is_none() {
            return Err(self.not_running(lease_id));
        }
        let now = self.now;
        self.check_room_to_close(lease_id, now)?;
        let cause = LeaseEndCause::Operator {
            reason: reason.clone(),
        };
        self.close_lease(lease_id, cause, now, out);
        Ok(())
    }

    /// The market rejects a lease's work (its provider failed verification): a provider
    /// failure charged to what is already accrued, nothing more; or, for a lease whose
    /// payment is held for review, the end of that review.
    pub(crate) fn reject_work(
        &mut self,
        lease_id: LeaseId,
        reason: &FailureReason,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if self.is_held(lease_id) {
            // Its payment waits for review: the rejection is that review's verdict.
            self.settle_held(lease_id, Some(reason), out);
            return Ok(());
        }
        let lease = self
            .leases
            .get(lease_id)
            .ok_or_else(|| self.not_running(lease_id))?;
        let charge_to = lease.meter.accrued_to;
        self.check_room_to_close(lease_id, charge_to)?;
        let cause = LeaseEndCause::WorkRejected {
            reason: reason.clone(),
        };
        self.close_lease(lease_id, cause, charge_to, out);
        Ok(())
    }

    /// Refuses a command's close whose money would not fit (engine-made closes wait
    /// instead, in `close_lease`).
    fn check_room_to_close(&self, lease_id: LeaseId, charge_to: i64) -> Result<(), Rejection> {
        let lease = self.leases.get(lease_id).expect("the caller looked it up");
        let (charged, fee) = totals(&self.pieces(lease, charge_to));
        self.room_for(lease, lease.meter.charged + charged, lease.meter.fee + fee)
    }

    /// Closes a running lease: its open periods accrue up to `charge_to`, `LeaseClosed`
    /// says why, and its money moves (or waits for room, see `pending_ends`).
    pub(crate) fn close_lease(
        &mut self,
        lease_id: LeaseId,
        cause: LeaseEndCause,
        charge_to: i64,
        out: &mut Vec<Event>,
    ) {
        self.close_lease_held(lease_id, cause, charge_to, None, out);
    }

    /// [`Engine::close_lease`], or with `hold_until`, a close whose bond and money wait
    /// for review until then (`review`).
    pub(crate) fn close_lease_held(
        &mut self,
        lease_id: LeaseId,
        cause: LeaseEndCause,
        charge_to: i64,
        hold_until: Option<i64>,
        out: &mut Vec<Event>,
    ) {
        let mut lease = self
            .leases
            .remove(lease_id)
            .expect("the caller looked it up");
        let pieces = self.pieces(&lease, charge_to);
        accrue(&mut lease, &pieces, out);
        if hold_until.is_none() {
            self.close_bond(&mut lease, Some(&cause), out);
        }
        out.push(Event::LeaseClosed {
            lease_id,
            buyer: lease.buyer,
            provider: lease.provider,
            node: lease.node,
            cause: cause.clone(),
            ended_at: Timestamp(self.now),
            charged_until: Timestamp(charge_to),
            charged_ms: lease.meter.charged_ms,
        });
        if lease.meter.metered {
            self.nodes.remove_lease(
                NodeRef {
                    provider: lease.provider,
                    node: lease.node,
                },
                lease_id,
            );
        }
        match hold_until {
            Some(until) => self.hold_payment(lease, until, out),
            None => self.pay_or_wait(lease, cause, out),
        }
    }

    /// Pays a closed lease if the provider's and the market's accounts have room for its
    /// money, or keeps it among the ends waiting for room (in the order they closed).
    pub(crate) fn pay_or_wait(
        &mut self,
        mut lease: Lease,
        cause: LeaseEndCause,
        out: &mut Vec<Event>,
    ) {
        if self
            .room_for(&lease, lease.meter.charged, lease.meter.fee)
            .is_ok()
        {
            self.pay(lease, &cause, out);
        } else {
            let meter = std::mem::take(&mut lease.meter);
            self.pending_ends.push(PendingEnd {
                lease,
                meter,
                cause,
            });
        }
    }

    /// The closed lease's `LeaseEnded`, and its re-bid after a provider failure.
    fn pay(&mut self, lease: Lease, cause: &LeaseEndCause, out: &mut Vec<Event>) {
        let m = &lease.meter;
        let hours_used = contract::hours_of_ms(m.charged_ms);
        self.settle(&lease, m.charged, m.fee, hours_used, cause.reason(), out);
        if cause.reason() == LeaseEndReason::ProviderFailed {
            self.rebid(&lease, out);
        }
    }

    /// Pays the closed leases whose accounts have room now, in the order they closed.
    pub(crate) fn pay_pending(&mut self, out: &mut Vec<Event>) {
        for pending in std::mem::take(&mut self.pending_ends) {
            let PendingEnd {
                mut lease,
                meter,
                cause,
            } = pending;
            lease.meter = meter;
            self.pay_or_wait(lease, cause, out);
        }
    }

    /// Places the unused whole hours of a lease that failed through its provider again,
    /// as its bid was, without the failed node. The refund is already available, so the
    /// new bid's hold comes from it (or the re-bid is refused, and says why).
    fn rebid(&mut self, lease: &Lease, out: &mut Vec<Event>) {
        let Some(rebid) = &lease.meter.rebid else {
            return;
        };
        let term_ms = u64::from(lease.hours) * Timestamp::MS_PER_HOUR as u64;
        let unused_ms = term_ms.saturating_sub(lease.meter.charged_ms);
        let unused_hours = unused_ms / Timestamp::MS_PER_HOUR as u64;
        let Ok(hours) = Hours::new(unused_hours) else {
            // Less than an hour is left (or, never, more than a lease can have).
            return;
        };
        let gpus = contract::Gpus::new(u64::from(lease.gpus)).expect("a lease has GPUs");
        let failed = NodeRef {
            provider: lease.provider,
            node: lease.node,
        };
        let mut exclude = rebid.exclude.clone();
        if !exclude.contains(&failed) {
            exclude.push(failed);
        }
        // The most recent failures matter most when the list is full.
        let over = exclude.len().saturating_sub(OrderOptions::MAX_EXCLUDED);
        exclude.drain(..over);
        let order = NewOrder {
            account: lease.buyer,
            client_id: ClientOrderId::rebid(lease.id),
            market: lease.market,
            price: rebid.price,
            gpus,
            tif: rebid.tif,
            post_only: false,
            terms: OrderTerms::Bid(BidSpec {
                hours,
                min_fill: rebid.spec.min_fill.map(|m| m.min(gpus)),
                ..rebid.spec.clone()
            }),
        };
        let options = OrderOptions {
            rebid_on_failure: true,
            exclude_nodes: exclude,
        };
        let order_id = contract::OrderId(self.next_order_id);
        let mut placed = Vec::new();
        match self.place(&order, Some(&options), None, &mut placed) {
            Ok(()) => {
                out.push(Event::OrderRebid {
                    lease_id: lease.id,
                    buyer: lease.buyer,
                    order_id,
                    hours,
                });
                out.append(&mut placed);
            }
            Err(reason) => out.push(Event::RebidRefused {
                lease_id: lease.id,
                buyer: lease.buyer,
                reason,
            }),
        }
    }

    /// The provider's agent started the lease's job: the delay since the fill, or since the
    /// buyer submitted the job where that came later (never later than now), is the
    /// provider's.
    pub(crate) fn start_lease(
        &mut self,
        provider: AccountId,
        lease_id: LeaseId,
        job_submitted_at: Option<Timestamp>,
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
        // The clock never goes back, so the start is never before the fill; a submission
        // stamped after now counts as now.
        let ready = job_submitted_at.map_or(lease.start.0, |t| t.0.clamp(lease.start.0, now));
        out.push(Event::LeaseStarted {
            lease_id,
            provider,
            node: lease.node,
            after_ms: now.abs_diff(ready),
        });
        Ok(())
    }
}
