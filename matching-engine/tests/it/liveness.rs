//! Nodes going silent, the market's own outages, and the re-bid of a failed lease's
//! unused hours on another node.

use contract::{
    CancelReason, ClientOrderId, Command, Event, LeaseEndCause, LeaseId, NodeId, OrderId,
    OrderOptions, Rejection, Timestamp,
};

use crate::support::*;

const MINUTE: i64 = 60_000;
/// 2026-01-31T10:20:00Z.
const START: i64 = 1_769_854_800_000;

fn node_a() -> NodeId {
    node_of(PROVIDER, 1)
}

/// Lease 1 from START for `hours` on node A, PROVIDER's ask 1, which also offers a second
/// ask (order 3) of two GPUs on the same node.
fn leased_with_a_spare(hours: u64) -> Scenario {
    let mut s = Scenario::given(metered_market());
    s.at(START).when(offer(PROVIDER, 1, "3.60", 1)).accepted();
    s.at(START)
        .when(bid(BUYER, 1, "3.60", 1).hours(hours).metered())
        .then_fills(&[(2, 1, 1, "3.60")]);
    s.at(START)
        .when(offer(PROVIDER, 2, "9.00", 2).on_node(node_a()))
        .accepted();
    s
}

#[test]
fn a_silent_node_fails_its_leases_withdraws_its_asks_and_cannot_be_matched() {
    let mut s = leased_with_a_spare(3);
    s.beats(
        PROVIDER,
        node_a(),
        &[1],
        (START + MINUTE, MINUTE, START + 3 * MINUTE),
    );
    let last_seen = START + 2 * MINUTE;
    s.at(last_seen + TIMEOUT - 1)
        .when(Command::Tick)
        .then_kinds(&[]);
    let out = s.at(last_seen + TIMEOUT).when(Command::Tick);
    out.then_kinds(&[
        "node_silent",
        "order_cancelled",
        "lease_accrued",
        "lease_closed",
        "lease_ended",
    ]);
    assert_eq!(
        out.events[0],
        Event::NodeSilent {
            provider: PROVIDER,
            node: node_a(),
            last_seen: Timestamp(last_seen),
            at: Timestamp(last_seen + TIMEOUT),
        }
    );
    out.then_cancels(&[(3, CancelReason::NodeSilent)]);
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::LeaseClosed { cause: LeaseEndCause::NodeSilent { last_seen: seen }, charged_ms: 120_000, .. }
            if *seen == Timestamp(last_seen)
    )));
    s.when(offer(PROVIDER, 3, "3.60", 1).on_node(node_a()))
        .then_rejected(Rejection::NodeSilent {
            node: node_a(),
            last_seen: Timestamp(last_seen),
        });
    // Another node of the same provider is not concerned, and the node is back once it
    // reports.
    s.when(offer(PROVIDER, 4, "3.60", 1)).accepted();
    s.when(beat(PROVIDER, node_a(), 9, &[])).accepted();
    s.when(offer(PROVIDER, 3, "3.60", 1).on_node(node_a()))
        .accepted();
}

#[test]
fn a_node_is_not_blamed_for_an_outage_of_the_market() {
    let mut s = leased_with_a_spare(3);
    s.beats(
        PROVIDER,
        node_a(),
        &[1],
        (START + MINUTE, MINUTE, START + 2 * MINUTE),
    );
    // Nothing reaches the engine for ten minutes, ticks included: the market was down.
    let back = START + 12 * MINUTE;
    s.at(back).when(Command::Tick).then_kinds(&[]);
    assert!(s.engine.lease(LeaseId(1)).is_some());
    // From when it is back, the node has a whole timeout to report, and it does.
    s.at(back + TIMEOUT - 1)
        .when(beat(PROVIDER, node_a(), 5, &[1]))
        .then_kinds(&["node_reported"]);
    assert_eq!(
        s.engine.lease(LeaseId(1)).unwrap().healthy_until(),
        Timestamp(back + TIMEOUT - 1)
    );
    // Had it not reported, it would have gone silent a timeout after the market was back.
    let mut quiet = leased_with_a_spare(3);
    quiet.beats(
        PROVIDER,
        node_a(),
        &[1],
        (START + MINUTE, MINUTE, START + 2 * MINUTE),
    );
    quiet.at(back).when(Command::Tick).then_kinds(&[]);
    quiet
        .at(back + TIMEOUT)
        .when(Command::Tick)
        .events
        .first()
        .map(|e| assert!(matches!(e, Event::NodeSilent { last_seen, .. } if *last_seen == Timestamp(START + MINUTE))))
        .expect("the node went silent");
}

#[test]
fn a_failed_lease_rebids_its_unused_hours_on_another_node() {
    let mut s = Scenario::given(metered_market());
    s.at(START).when(offer(PROVIDER, 1, "3.60", 1)).accepted();
    s.at(START)
        .when(bid(BUYER, 1, "4.00", 1).hours(3).rebid())
        .then_fills(&[(2, 1, 1, "3.60")]);
    // Later a cheaper ask on the failing node, and another provider's dearer one.
    s.at(START)
        .when(offer(PROVIDER, 2, "3.00", 1).on_node(node_a()))
        .accepted();
    s.at(START).when(offer(PROVIDER2, 1, "3.90", 1)).accepted();
    s.beats(
        PROVIDER,
        node_a(),
        &[1],
        (START + MINUTE, MINUTE, START + 81 * MINUTE),
    );
    let out = s.at(START + 90 * MINUTE).when(stop(PROVIDER, 1));
    out.then_kinds(&[
        "lease_accrued",
        "lease_closed",
        "lease_ended",
        "order_rebid",
        "order_accepted",
        "lease_created",
    ]);
    // 80 minutes charged of 3 hours: one whole hour is placed again, order 5.
    assert!(out.events.contains(&Event::OrderRebid {
        lease_id: LeaseId(1),
        buyer: BUYER,
        order_id: OrderId(5),
        hours: contract::Hours::new(1).unwrap(),
    }));
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::OrderAccepted { order_id: OrderId(5), order, hold, .. }
            if order.client_id == ClientOrderId::rebid(LeaseId(1))
                && order.price == px("4.00")
                && *hold == amt("4.00")
    )));
    // It skips the cheaper ask on the failed node and takes the other provider's.
    out.then_fills(&[(5, 4, 1, "3.90")]);
    let second = s.engine.lease(LeaseId(2)).unwrap();
    assert_eq!((second.provider, second.hours), (PROVIDER2, 1));
    assert!(second.metered());
    assert!(
        s.engine.order(OrderId(3)).is_some(),
        "the excluded ask still rests"
    );
}

#[test]
fn a_rebid_needs_an_hour_left_and_the_funds() {
    // Less than an hour unused: nothing is placed again.
    let mut s = Scenario::given(metered_market());
    s.at(START).when(offer(PROVIDER, 1, "3.60", 1)).accepted();
    s.at(START)
        .when(bid(BUYER, 1, "3.60", 1).rebid())
        .then_fills(&[(2, 1, 1, "3.60")]);
    s.beats(
        PROVIDER,
        node_a(),
        &[1],
        (START + MINUTE, MINUTE, START + 11 * MINUTE),
    );
    s.at(START + 11 * MINUTE)
        .when(stop(PROVIDER, 1))
        .then_kinds(&["lease_accrued", "lease_closed", "lease_ended"]);

    // A limit price whose hold the buyer no longer has: the re-bid is refused, and says so.
    let mut s = Scenario::given(metered_market());
    s.at(START).when(offer(PROVIDER, 1, "3.60", 1)).accepted();
    s.at(START)
        .when(bid(BUYER, 1, "300", 1).hours(3).rebid())
        .then_fills(&[(2, 1, 1, "3.60")]);
    s.when(bid(BUYER, 2, "1", 1).hours(985)).accepted();
    let out = s.when(stop(PROVIDER, 1));
    assert!(matches!(
        out.events.last(),
        Some(Event::RebidRefused {
            lease_id: LeaseId(1),
            reason: Rejection::InsufficientFunds { .. },
            ..
        })
    ));
}

#[test]
fn options_are_for_bids_and_engine_ids_are_the_engines() {
    let mut s = Scenario::given(metered_market());
    s.when(offer(PROVIDER, 1, "3.60", 1).rebid())
        .then_rejected(Rejection::BidOptionOnAsk);
    let reserved = ClientOrderId::rebid(LeaseId(7));
    assert!(reserved.is_reserved());
    s.when(bid(BUYER, reserved.0, "3.60", 1).metered())
        .then_rejected(Rejection::ReservedClientOrderId {
            client_id: reserved,
        });
    let mut crowded = bid(BUYER, 1, "3.60", 1);
    for i in 0..=OrderOptions::MAX_EXCLUDED {
        crowded = crowded.exclude(PROVIDER, NodeId::parse(&format!("n{i}")).unwrap());
    }
    s.when(crowded)
        .then_rejected(Rejection::TooManyExcludedNodes { max: 32 });
    // An excluded node is one of the reasons `explain` gives.
    s.at(START).when(offer(PROVIDER, 1, "3.60", 1)).accepted();
    s.at(START)
        .when(bid(BUYER, 1, "3.60", 1).exclude(PROVIDER, node_a()))
        .then_fills(&[]);
    let why = s.engine.explain(OrderId(2), 10).unwrap();
    assert_eq!(
        why.skipped[0].reason,
        contract::Exclusion::NodeExcluded { node: node_a() }
    );
}

#[test]
fn a_report_resent_or_overtaken_is_stale_and_changes_nothing() {
    let mut s = leased_with_a_spare(3);
    s.at(START + MINUTE)
        .when(beat(PROVIDER, node_a(), 7, &[1]))
        .accepted();
    let healthy = s.engine.lease(LeaseId(1)).unwrap().healthy_until();
    for sequence in [7, 6] {
        s.at(START + 2 * MINUTE)
            .when(beat(PROVIDER, node_a(), sequence, &[1]))
            .then_rejected(Rejection::StaleReport {
                node: node_a(),
                sequence,
                last: 7,
            });
    }
    assert_eq!(s.engine.lease(LeaseId(1)).unwrap().healthy_until(), healthy);
    s.when(beat(PROVIDER, node_a(), 8, &[1])).accepted();
}

#[test]
fn a_report_of_simulated_gpus_or_from_a_wrong_clock_is_refused_and_changes_nothing() {
    // Given a lease on node A, in a market not created as simulated
    let mut s = leased_with_a_spare(3);
    let at = START + MINUTE;
    // When its node reports simulated GPUs
    let mut simulated = beat(PROVIDER, node_a(), 1, &[1]);
    if let Command::SignedHeartbeat(b) = &mut simulated {
        b.simulated = true;
    }
    s.at(at)
        .when(simulated)
        .then_rejected(Rejection::SimulatedReport { market: h100() });
    // Or reports dated in 2999, or five minutes and a second before the market's clock
    for (i, made) in [32_472_144_000_000, at + 1 - 301_000]
        .into_iter()
        .enumerate()
    {
        let now = at + 1 + i as i64;
        s.at(now)
            .when(beat_made(PROVIDER, node_a(), 1, &[1], made))
            .then_rejected(Rejection::ReportClockSkew {
                reported_at: Timestamp(made),
                now: Timestamp(now),
                window_ms: 300_000,
            });
    }
    // Then a report made five minutes before its arrival is still taken
    s.at(at + 3)
        .when(beat_made(PROVIDER, node_a(), 1, &[1], at + 3 - 300_000))
        .accepted();
}
