//! How a lease's time becomes charges: its meter, the accrual of each charge period, and
//! the wake-ups that end it at its term or when its node never acknowledged it.
//!
//! A lease's time is cut at charge-period boundaries and each piece is charged by the
//! market's rule (`contract::market`): `floor(price × gpus × ms / 3,600,000)`, and the fee
//! `floor(charge × bps / 10,000)`. A period accrues once its verification is final: at its
//! end plus the market's heartbeat timeout, every node that is not silent has reported past
//! the end, so the lease's verified time in the period (up to its last healthy heartbeat)
//! is known and a later failure never needs a correction. Time of a closed period that was
//! not verified by then is never charged. When a lease closes, its open periods accrue at
//! once up to the time it is charged to.

use contract::{
    BidSpec, ChargePeriod, Event, Gpus, LeaseEndCause, LeaseId, MarketConfig, NodeRef, Price,
    TimeInForce, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::clock::Span;
use crate::timers::Due;
use crate::{Engine, Lease};

/// What the engine's clock and the node's heartbeats have established about a lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meter {
    /// The lease's bid came through `PlaceWith`: heartbeats, deadlines and accruals apply.
    /// Other leases (older logs) end only by a command and accrue when they do.
    pub metered: bool,
    /// The last time a heartbeat of its node listed it healthy; its start until one does.
    pub healthy_until: i64,
    /// It fails unless a heartbeat lists it by then; `i64::MAX` once one has.
    pub ack_by: i64,
    /// Everything before this is accrued, or forgiven as never verified.
    pub accrued_to: i64,
    /// When the accrual of the period holding `accrued_to` is final.
    pub accrue_at: i64,
    /// The earliest of `ack_by`, `accrue_at` and the term's end: its one timer entry.
    pub deadline: i64,
    pub charged_ms: u64,
    pub charged: i64,
    pub fee: i64,
    /// Set when its bid re-bids on failure.
    pub rebid: Option<Box<Rebid>>,
    /// The provider's bond held behind its GPUs, released (or slashed) when it closes.
    /// Snapshots write it beside the meter (format 6), so the meter's image is format 5's.
    #[serde(skip)]
    pub bond: i64,
    /// Its ask was backed by its node's report: a later report that no longer shows its
    /// GPUs fails it. Written with `bond`.
    #[serde(skip)]
    pub backed: bool,
}

/// What a provider failure places again: the bid as it was, for the unused hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rebid {
    /// The bid's limit price when it filled.
    pub price: Price,
    pub tif: TimeInForce,
    pub spec: BidSpec,
    pub exclude: Vec<NodeRef>,
}

/// A closed lease whose money waits for room in the provider's or the market's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingEnd {
    pub lease: Lease,
    pub meter: Meter,
    pub cause: LeaseEndCause,
}

impl Meter {
    /// A lease of a `Place` bid: nothing is set to happen on its own.
    pub fn unmetered(start: i64) -> Meter {
        Meter {
            healthy_until: start,
            ack_by: i64::MAX,
            accrued_to: start,
            accrue_at: i64::MAX,
            deadline: i64::MAX,
            ..Meter::default()
        }
    }

    /// A metered lease starting at `start` and ending at `end`, under `config`.
    pub fn metered(
        start: i64,
        end: i64,
        config: &MarketConfig,
        rebid: Option<Box<Rebid>>,
    ) -> Meter {
        let timeout = config.heartbeat_timeout();
        let ack_by = start + timeout;
        let accrue_at = config.charge_period.end_of(Timestamp(start)).0 + timeout;
        Meter {
            metered: true,
            healthy_until: start,
            ack_by,
            accrued_to: start,
            accrue_at,
            deadline: ack_by.min(accrue_at).min(end),
            charged_ms: 0,
            charged: 0,
            fee: 0,
            rebid,
            bond: 0,
            backed: false,
        }
    }
}

/// One accrual: the part `[from, to)` of a lease's time inside one charge period.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece {
    period_start: i64,
    period_end: i64,
    from: i64,
    to: i64,
    charged: i64,
    fee: i64,
}

/// The sums of some pieces.
pub(crate) fn totals(pieces: &[Piece]) -> (i64, i64) {
    // Each piece is at most the lease's cost, and so are they together (their time is
    // within the term).
    pieces
        .iter()
        .fold((0, 0), |(c, f), p| (c + p.charged, f + p.fee))
}

/// Adds `pieces` to the lease's meter and states them.
pub(crate) fn accrue(lease: &mut Lease, pieces: &[Piece], out: &mut Vec<Event>) {
    let gpus = Gpus::new(u64::from(lease.gpus)).expect("a lease has at least one GPU");
    for p in pieces {
        let m = &mut lease.meter;
        m.charged_ms += p.to.abs_diff(p.from);
        m.charged += p.charged;
        m.fee += p.fee;
        m.accrued_to = m.accrued_to.max(p.to);
        out.push(Event::LeaseAccrued {
            lease_id: lease.id,
            market: lease.market,
            buyer: lease.buyer,
            provider: lease.provider,
            node: lease.node,
            gpus,
            price: lease.price,
            period_start: Timestamp(p.period_start),
            period_end: Timestamp(p.period_end),
            from: Timestamp(p.from),
            to: Timestamp(p.to),
            charged: contract::Amount::from_micros(p.charged),
            fee: contract::Amount::from_micros(p.fee),
            provider_earned: contract::Amount::from_micros(p.charged - p.fee),
        });
    }
}

impl Engine {
    /// The pieces of the lease's time from what it accrued so far up to `to`, cut at its
    /// market's period boundaries and charged by the rule. Reads only.
    pub(crate) fn pieces(&self, lease: &Lease, to: i64) -> Vec<Piece> {
        let market = self.market(lease.market);
        let period: ChargePeriod = market.config.charge_period;
        let gpus = Gpus::new(u64::from(lease.gpus)).expect("a lease has at least one GPU");
        let mut pieces = Vec::new();
        let mut from = lease.meter.accrued_to;
        while from < to {
            let period_end = period.end_of(Timestamp(from)).0;
            let piece_to = to.min(period_end);
            // Within the term, so at most the lease's cost, which fits.
            let charged = lease
                .price
                .charge_for(gpus, piece_to.abs_diff(from))
                .expect("a piece of the term costs at most the lease")
                .micros();
            pieces.push(Piece {
                period_start: period.start_of(Timestamp(from)).0,
                period_end,
                from,
                to: piece_to,
                charged,
                fee: market
                    .fee
                    .fee_on(contract::Amount::from_micros(charged))
                    .micros(),
            });
            from = piece_to;
        }
        pieces
    }

    /// A metered lease's wake-up at `at`: it fails if no heartbeat acknowledged it in
    /// time, ends at its term, or accrues the period whose verification is now final.
    pub(crate) fn lease_due(&mut self, id: LeaseId, at: i64, span: Span, out: &mut Vec<Event>) {
        let Some(lease) = self.leases.get(id) else {
            return;
        };
        if lease.meter.deadline != at {
            return;
        }
        let config = &self.market(lease.market).config;
        let (timeout, period) = (config.heartbeat_timeout(), config.charge_period);
        let end = lease.ends_at().0;
        if lease.meter.ack_by <= at {
            if span.outage_longer_than(timeout) {
                // Nobody could report while the market was down: its node gets a whole
                // timeout from when the market is back.
                let lease = self.leases.get_mut(id).expect("looked up above");
                lease.meter.ack_by = span.to + timeout;
            } else {
                let healthy_until = lease.meter.healthy_until;
                self.close_lease(id, LeaseEndCause::NotAcknowledged, healthy_until, out);
                return;
            }
        }
        if end <= at {
            self.close_lease(id, LeaseEndCause::TermReached, end, out);
            return;
        }
        let lease = self.leases.get(id).expect("looked up above");
        if lease.meter.accrue_at <= at {
            let closing = period.start_of(Timestamp(at - timeout)).0;
            if closing > lease.meter.accrued_to {
                let pieces = self.pieces(lease, closing.min(lease.meter.healthy_until));
                let lease = self.leases.get_mut(id).expect("looked up above");
                accrue(lease, &pieces, out);
                lease.meter.accrued_to = closing;
            }
            let lease = self.leases.get_mut(id).expect("looked up above");
            lease.meter.accrue_at = period.end_of(Timestamp(lease.meter.accrued_to)).0 + timeout;
        }
        let lease = self.leases.get_mut(id).expect("looked up above");
        let m = &mut lease.meter;
        m.deadline = m.ack_by.min(m.accrue_at).min(end);
        let deadline = m.deadline;
        self.arm(deadline, Due::Lease, id.0);
    }
}
