//! Payment held for review. A buyer that checks a lease's work before its provider is paid
//! stops the lease with a hold (`StopLeaseHeld`): the lease closes as a buyer's stop does
//! (its GPUs free at once, charged to now), but its money stays in the buyer's lease funds
//! and the provider's bond stays behind it until the buyer releases the payment
//! (`ReleasePayment`), the market rejects the work (`RejectWork`: slashed as a running
//! lease's rejection is), or the hold runs out, whichever comes first. No buyer keeps a
//! provider's pay past the hold it chose, and no hold is longer than
//! `Command::MAX_PAYMENT_HOLD_MS`.
//!
//! Render jobs end their leases this way: holding a lease until its frames were checked
//! elsewhere kept the GPU too, so with one GPU per provider no check could ever be leased.

use contract::{
    AccountId, Amount, Command, Event, FailureReason, LeaseEndCause, LeaseId, Rejection, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::timers::Due;
use crate::{Engine, Lease};

/// A closed lease whose payment waits for review. `lease.meter` is the meter as it closed,
/// its bond included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldEnd {
    pub lease: Lease,
    /// When the hold runs out and the lease is paid.
    pub until: i64,
}

/// How a snapshot writes a held end: the meter and its bond beside the lease, as for
/// running leases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HeldImage {
    pub lease: Lease,
    pub meter: crate::metering::Meter,
    pub bond: i64,
    pub until: i64,
}

impl From<&HeldEnd> for HeldImage {
    fn from(h: &HeldEnd) -> HeldImage {
        HeldImage {
            lease: h.lease.clone(),
            meter: h.lease.meter.clone(),
            bond: h.lease.meter.bond,
            until: h.until,
        }
    }
}

impl From<HeldImage> for HeldEnd {
    fn from(image: HeldImage) -> HeldEnd {
        let mut lease = image.lease;
        lease.meter = image.meter;
        lease.meter.bond = image.bond;
        HeldEnd {
            lease,
            until: image.until,
        }
    }
}

impl Engine {
    pub(crate) fn stop_lease_held(
        &mut self,
        by: AccountId,
        lease_id: LeaseId,
        hold_ms: u64,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let lease = self
            .leases
            .get(lease_id)
            .ok_or_else(|| self.not_running(lease_id))?;
        if by != lease.buyer {
            return Err(Rejection::NotLeaseParty { lease_id, by });
        }
        if !(1..=Command::MAX_PAYMENT_HOLD_MS).contains(&hold_ms) {
            return Err(Rejection::BadPaymentHold {
                hold_ms,
                max_ms: Command::MAX_PAYMENT_HOLD_MS,
            });
        }
        let until = self.now + hold_ms as i64;
        let now = self.now;
        self.close_lease_held(lease_id, LeaseEndCause::BuyerStopped, now, Some(until), out);
        Ok(())
    }

    /// Keeps a lease that `close_lease_held` closed with a hold: its payment waits for
    /// review until `until`.
    pub(crate) fn hold_payment(&mut self, lease: Lease, until: i64, out: &mut Vec<Event>) {
        out.push(Event::PaymentHeld {
            lease_id: lease.id,
            buyer: lease.buyer,
            provider: lease.provider,
            until: Timestamp(until),
        });
        let id = lease.id;
        self.held.insert(id, HeldEnd { lease, until });
        self.arm(until, Due::Held, id.0);
    }

    pub(crate) fn release_payment(
        &mut self,
        by: AccountId,
        lease_id: LeaseId,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let Some(held) = self.held.get(&lease_id) else {
            return Err(if self.leases.get(lease_id).is_some() {
                Rejection::PaymentNotHeld { lease_id }
            } else {
                self.not_running(lease_id)
            });
        };
        if by != held.lease.buyer {
            return Err(Rejection::NotLeaseParty { lease_id, by });
        }
        self.settle_held(lease_id, None, out);
        Ok(())
    }

    /// Whether `lease_id`'s payment is held (then `RejectWork` rejects it here).
    pub(crate) fn is_held(&self, lease_id: LeaseId) -> bool {
        self.held.contains_key(&lease_id)
    }

    /// The held payment of closed lease `lease_id`: when it is paid at the latest, and what
    /// the lease was charged; `None` when it is not held (running, paid, or never held).
    pub fn held_payment(&self, lease_id: LeaseId) -> Option<(Timestamp, Amount)> {
        self.held.get(&lease_id).map(|h| {
            (
                Timestamp(h.until),
                Amount::from_micros(h.lease.meter.charged),
            )
        })
    }

    /// Ends a held lease: paid as the buyer's stop it was, or, `rejected`, as a provider
    /// failure whose bond is slashed (the buyer credited what it was charged, up to the
    /// slash).
    pub(crate) fn settle_held(
        &mut self,
        lease_id: LeaseId,
        rejected: Option<&FailureReason>,
        out: &mut Vec<Event>,
    ) {
        let HeldEnd { mut lease, .. } = self.held.remove(&lease_id).expect("the caller checked");
        let cause = match rejected {
            Some(reason) => LeaseEndCause::WorkRejected {
                reason: reason.clone(),
            },
            None => LeaseEndCause::BuyerStopped,
        };
        self.close_bond(&mut lease, Some(&cause), out);
        self.pay_or_wait(lease, cause, out);
    }

    /// A hold's timer: the lease is paid if it is still held until then.
    pub(crate) fn hold_due(&mut self, lease_id: LeaseId, at: i64, out: &mut Vec<Event>) {
        if self.held.get(&lease_id).is_some_and(|h| h.until == at) {
            self.settle_held(lease_id, None, out);
        }
    }
}
