//! Metered leases: every way one ends and what each is charged, the accrual of charge
//! periods (split at hour, day and month ends), and the clock that makes deadlines happen.
//!
//! The lease is one GPU at 3.60 per hour, a micro-unit per millisecond, so a charge in
//! micro-units reads as the milliseconds charged; the market takes a 10% fee.

use contract::{
    Amount, CancelReason, Command, Event, FailureReason, LeaseEndCause, LeaseEndReason, LeaseId,
    Rejection, TimeInForce, Timestamp,
};

use crate::support::*;

const MINUTE: i64 = 60_000;
/// 2026-01-31T10:20:00Z.
const START: i64 = 1_769_854_800_000;
/// 2026-01-31T23:30:00Z.
const BEFORE_MIDNIGHT: i64 = 1_769_902_200_000;
/// 2026-02-01T00:00:00Z.
const FEBRUARY: i64 = 1_769_904_000_000;

/// A metered market with one lease, id 1, from `start` for `hours`: BUYER's metered bid on
/// PROVIDER's GPU on `node_of(PROVIDER, 1)`.
fn leased(start: i64, hours: u64) -> Scenario {
    let mut s = Scenario::given(metered_market());
    s.at(start).when(offer(PROVIDER, 1, "3.60", 1)).accepted();
    s.at(start)
        .when(bid(BUYER, 1, "3.60", 1).hours(hours).metered())
        .then_fills(&[(2, 1, 1, "3.60")]);
    s
}

/// (period start, period end, from, to, charged, fee) of each accrual.
type Accrual = (i64, i64, i64, i64, i64, i64);

fn accruals<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<Accrual> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::LeaseAccrued {
                period_start,
                period_end,
                from,
                to,
                charged,
                fee,
                ..
            } => Some((
                period_start.0,
                period_end.0,
                from.0,
                to.0,
                charged.micros(),
                fee.micros(),
            )),
            _ => None,
        })
        .collect()
}

fn closed(events: &[Event]) -> (LeaseEndCause, i64, i64, u64) {
    events
        .iter()
        .find_map(|e| match e {
            Event::LeaseClosed {
                cause,
                ended_at,
                charged_until,
                charged_ms,
                ..
            } => Some((cause.clone(), ended_at.0, charged_until.0, *charged_ms)),
            _ => None,
        })
        .expect("the lease closed")
}

/// (charged, fee, refunded, reason) of the lease's end.
fn ended(events: &[Event]) -> (i64, i64, i64, LeaseEndReason) {
    events
        .iter()
        .find_map(|e| match e {
            Event::LeaseEnded {
                charged,
                fee,
                refunded,
                reason,
                ..
            } => Some((charged.micros(), fee.micros(), refunded.micros(), *reason)),
            _ => None,
        })
        .expect("the lease ended")
}

#[test]
fn a_lease_runs_its_term_and_each_period_accrues_in_its_own_day_and_month() {
    let mut s = leased(BEFORE_MIDNIGHT, 2);
    let end = BEFORE_MIDNIGHT + 2 * HOUR;
    let during = s.beats(
        PROVIDER,
        node_of(PROVIDER, 1),
        &[1],
        (BEFORE_MIDNIGHT + MINUTE, MINUTE, end),
    );
    // Each period accrues once its verification is final, a timeout after its end, and
    // nothing moves money before the end.
    let timed: Vec<(i64, Vec<Accrual>)> = during
        .iter()
        .filter(|(_, e)| matches!(e, Event::LeaseAccrued { .. }))
        .map(|(at, e)| (*at, accruals([e])))
        .collect();
    let (jan_31_2300, feb_1_0100) = (FEBRUARY - HOUR, FEBRUARY + HOUR);
    assert_eq!(
        timed,
        [
            (
                FEBRUARY + TIMEOUT,
                vec![(
                    jan_31_2300,
                    FEBRUARY,
                    BEFORE_MIDNIGHT,
                    FEBRUARY,
                    1_800_000,
                    180_000
                )]
            ),
            (
                feb_1_0100 + TIMEOUT,
                vec![(FEBRUARY, feb_1_0100, FEBRUARY, feb_1_0100, 3_600_000, 360_000)]
            ),
        ]
    );
    assert_eq!(s.engine.balance(BUYER).in_lease, amt("7.20"));
    assert_eq!(s.engine.balance(PROVIDER).available, amt("0"));

    let out = s.at(end).when(Command::Tick);
    out.then_kinds(&["lease_accrued", "lease_closed", "lease_ended"]);
    assert_eq!(
        accruals(&out.events),
        [(
            feb_1_0100,
            feb_1_0100 + HOUR,
            feb_1_0100,
            end,
            1_800_000,
            180_000
        )]
    );
    assert_eq!(
        closed(&out.events),
        (LeaseEndCause::TermReached, end, end, 7_200_000)
    );
    // The whole term: the sums of the three accruals.
    assert_eq!(
        ended(&out.events),
        (7_200_000, 720_000, 0, LeaseEndReason::Completed)
    );
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::LeaseEnded { hours_used, .. } if *hours_used == "2".parse().unwrap()
    )));
    assert_eq!(s.engine.balance(PROVIDER).available, amt("6.48"));
    assert_eq!(
        s.engine.balance(contract::AccountId::MARKET).available,
        amt("0.72")
    );
    assert_eq!(s.engine.total_money(), micros("2000"));
}

#[test]
fn the_buyer_stops_and_pays_to_now() {
    let mut s = leased(START, 3);
    s.beats(
        PROVIDER,
        node_of(PROVIDER, 1),
        &[1],
        (START + MINUTE, MINUTE, START + 10 * MINUTE),
    );
    let stopped = START + 10 * MINUTE + 30_000;
    let out = s.at(stopped).when(stop(BUYER, 1));
    out.then_kinds(&["lease_accrued", "lease_closed", "lease_ended"]);
    assert_eq!(
        closed(&out.events),
        (LeaseEndCause::BuyerStopped, stopped, stopped, 630_000)
    );
    // 3 hours paid in: 10,800,000; 630,000 charged, the rest back.
    assert_eq!(
        ended(&out.events),
        (630_000, 63_000, 10_170_000, LeaseEndReason::BuyerStopped)
    );
    assert_eq!(s.engine.balance(BUYER).available, amt("999.37"));
}

#[test]
fn the_provider_stops_and_its_failure_is_charged_to_the_last_healthy_heartbeat() {
    let mut s = leased(START, 3);
    // Heartbeats at one and two minutes.
    s.beats(
        PROVIDER,
        node_of(PROVIDER, 1),
        &[1],
        (START + MINUTE, MINUTE, START + 3 * MINUTE),
    );
    let out = s.at(START + 150_000).when(stop(PROVIDER, 1));
    assert_eq!(
        closed(&out.events),
        (
            LeaseEndCause::ProviderStopped,
            START + 150_000,
            START + 2 * MINUTE,
            120_000
        )
    );
    assert_eq!(
        ended(&out.events),
        (120_000, 12_000, 10_680_000, LeaseEndReason::ProviderFailed)
    );
}

#[test]
fn a_report_delivered_late_never_stretches_the_charge_past_when_it_was_made() {
    let mut s = leased(START, 3);
    s.at(START + MINUTE)
        .when(beat(PROVIDER, node_of(PROVIDER, 1), 1, &[1]))
        .accepted();
    // The agent's outbox delivers, at three and a half minutes, the report it made at two.
    s.at(START + 210_000)
        .when(beat_made(
            PROVIDER,
            node_of(PROVIDER, 1),
            2,
            &[1],
            START + 2 * MINUTE,
        ))
        .accepted();
    let out = s.at(START + 4 * MINUTE).when(stop(PROVIDER, 1));
    assert_eq!(
        closed(&out.events),
        (
            LeaseEndCause::ProviderStopped,
            START + 4 * MINUTE,
            START + 2 * MINUTE,
            120_000
        )
    );
}

#[test]
fn the_operator_ends_a_lease_with_a_reason_charged_to_now() {
    let mut s = leased(START, 1);
    s.beats(
        PROVIDER,
        node_of(PROVIDER, 1),
        &[1],
        (START + MINUTE, MINUTE, START + 2 * MINUTE),
    );
    let reason = FailureReason::new("the node's owner asked us to").unwrap();
    let out = s.at(START + 200_000).when(Command::AdminEndLease {
        lease_id: LeaseId(1),
        reason: reason.clone(),
    });
    assert_eq!(
        closed(&out.events),
        (
            LeaseEndCause::Operator { reason },
            START + 200_000,
            START + 200_000,
            200_000
        )
    );
    assert_eq!(ended(&out.events).3, LeaseEndReason::Operator);
}

#[test]
fn a_lease_no_heartbeat_acknowledged_fails_at_the_timeout_and_costs_nothing() {
    let mut s = leased(START, 1);
    // A report of the node that does not list the lease yet: it may not know of it.
    s.at(START + MINUTE)
        .when(beat(PROVIDER, node_of(PROVIDER, 1), 1, &[]))
        .then_kinds(&["node_reported"]);
    s.at(START + TIMEOUT - 1)
        .when(Command::Tick)
        .then_kinds(&[]);
    let out = s.at(START + TIMEOUT).when(Command::Tick);
    out.then_kinds(&["lease_closed", "lease_ended"]);
    assert_eq!(
        closed(&out.events),
        (LeaseEndCause::NotAcknowledged, START + TIMEOUT, START, 0)
    );
    assert_eq!(
        ended(&out.events),
        (0, 0, 3_600_000, LeaseEndReason::ProviderFailed)
    );
}

#[test]
fn a_heartbeat_that_no_longer_lists_a_lease_fails_it_at_its_last_healthy_one() {
    let mut s = leased(START, 1);
    let node = node_of(PROVIDER, 1);
    s.beats(
        PROVIDER,
        node,
        &[1],
        (START + MINUTE, MINUTE, START + 3 * MINUTE),
    );
    let out = s.at(START + 3 * MINUTE).when(beat(PROVIDER, node, 77, &[]));
    out.then_kinds(&[
        "node_reported",
        "lease_accrued",
        "lease_closed",
        "lease_ended",
    ]);
    assert_eq!(
        closed(&out.events),
        (
            LeaseEndCause::Unhealthy { sequence: 77 },
            START + 3 * MINUTE,
            START + 2 * MINUTE,
            120_000
        )
    );
}

#[test]
fn ending_a_lease_that_is_not_running_or_not_yours_is_refused() {
    let mut s = leased(START, 1);
    s.when(stop(BUYER2, 1))
        .then_rejected(Rejection::NotLeaseParty {
            lease_id: LeaseId(1),
            by: BUYER2,
        });
    // Hours are never stated for a metered lease.
    s.when(end(BUYER, 1, "0.5"))
        .then_rejected(Rejection::LeaseMetered {
            lease_id: LeaseId(1),
        });
    s.when(stop(BUYER, 1)).accepted();
    s.when(stop(BUYER, 1)).then_rejected(Rejection::LeaseEnded {
        lease_id: LeaseId(1),
    });
    s.when(Command::AdminEndLease {
        lease_id: LeaseId(1),
        reason: FailureReason::new("again").unwrap(),
    })
    .then_rejected(Rejection::LeaseEnded {
        lease_id: LeaseId(1),
    });
    s.when(stop(BUYER, 2))
        .then_rejected(Rejection::UnknownLease {
            lease_id: LeaseId(2),
        });
}

#[test]
fn a_gtt_order_expires_with_a_tick_alone() {
    let mut s = Scenario::given(metered_market());
    s.at(START)
        .when(bid(BUYER, 1, "3.60", 1).metered().tif(TimeInForce::Gtt {
            expires_at: Timestamp(START + MINUTE),
        }));
    s.at(START + MINUTE - 1).when(Command::Tick).then_kinds(&[]);
    s.at(START + MINUTE)
        .when(Command::Tick)
        .then_cancels(&[(1, CancelReason::Expired)]);
    assert_eq!(s.engine.balance(BUYER).held, amt("0"));
}

#[test]
fn a_tick_before_the_engines_clock_is_refused_and_changes_nothing() {
    let mut s = leased(START, 1);
    s.at(START + MINUTE).when(Command::Tick).accepted();
    s.at(START + MINUTE - 1)
        .when(Command::Tick)
        .then_rejected(Rejection::ClockWentBackwards {
            at: Timestamp(START + MINUTE - 1),
            now: Timestamp(START + MINUTE),
        });
    // Any other command stamped early counts as stamped now.
    s.at(START).when(stop(BUYER, 1)).accepted();
    assert_eq!(s.engine.now(), Timestamp(START + MINUTE));
}

#[test]
fn an_engine_made_end_waits_for_room_in_the_providers_account() {
    let mut s = Scenario::given(limit_markets());
    s.when(configure(3_600, 60_000, TIMEOUT as u32));
    s.when(deposit(PROVIDER, "9223372036854")).accepted();
    s.when(deposit(BUYER, "10")).accepted();
    s.at(START).when(offer(PROVIDER, 1, "1", 1)).accepted();
    s.at(START)
        .when(bid(BUYER, 1, "1", 1).metered())
        .then_fills(&[(2, 1, 1, "1")]);
    s.beats(
        PROVIDER,
        node_of(PROVIDER, 1),
        &[1],
        (START + MINUTE, MINUTE, START + HOUR),
    );
    // A party's stop that would not fit is refused, as a command is.
    s.when(stop(BUYER, 1))
        .then_rejected(Rejection::AmountOverflow);
    // The term cannot be refused: the lease closes, and its money waits.
    s.at(START + HOUR)
        .when(Command::Tick)
        .then_kinds(&["lease_accrued", "lease_closed"]);
    assert!(s.engine.lease(LeaseId(1)).is_none());
    assert_eq!(s.engine.balance(BUYER).in_lease, amt("1"));
    s.when(stop(BUYER, 1)).then_rejected(Rejection::LeaseEnded {
        lease_id: LeaseId(1),
    });
    s.when(Command::Withdraw {
        account: PROVIDER,
        amount: amt("1"),
    })
    .accepted();
    let paid = s.when(Command::Tick);
    paid.then_kinds(&["lease_ended"]);
    // 40 and 20 minutes of one unit an hour, each rounded down: a micro-unit stays with
    // the buyer.
    assert_eq!(
        ended(&paid.events),
        (999_999, 0, 1, LeaseEndReason::Completed)
    );
    assert_eq!(
        s.engine.balance(PROVIDER).available,
        amt("9223372036853.999999")
    );
    assert_eq!(s.engine.balance(BUYER).in_lease, Amount::ZERO);
}
