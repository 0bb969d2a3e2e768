//! Providers proven, not believed: an ask placed with `PlaceWith` stands on its node's
//! latest signed report (model, memory, vendor, free GPUs) and on the provider's bond; one
//! GPU UUID belongs to one node; a report that stops backing an ask withdraws it and fails
//! the leases beyond the node's GPUs; bonds unbond after the market's delay; a provider
//! failure slashes the bond behind the lease, crediting the buyer and the insurance fund.

use contract::{
    Amount, CancelReason, Command, Event, LeaseEndCause, LeaseId, NodeId, Rejection, ShortText,
    Timestamp,
};

use crate::support::*;

/// 2026-01-31T10:20:00Z.
const START: i64 = 1_769_854_800_000;
const MINUTE: i64 = 60_000;

fn node_a() -> NodeId {
    NodeId::parse("node-a").unwrap()
}

/// The proven market with a bond of 100 per GPU; PROVIDER has 1,000 and posted 300 of it.
fn proven() -> Scenario {
    let mut commands = market_with_buyers();
    commands.push(proven_market("100"));
    commands.push(deposit(PROVIDER, "1000"));
    commands.push(post_bond(PROVIDER, "300"));
    let mut s = Scenario::given(commands);
    s.at(START);
    s
}

/// Node A's report `sequence` with `gpus`, made as it arrives.
fn report(
    s: &mut Scenario,
    sequence: u64,
    gpus: Vec<contract::GpuStatus>,
) -> crate::support::Outcome {
    s.when(beat_with(
        PROVIDER,
        node_a(),
        sequence,
        &[],
        gpus,
        MADE_ON_ARRIVAL,
    ))
}

fn ask_on_a(client: u128, gpus: u64) -> OrderBuilder {
    offer(PROVIDER, client, "3.60", gpus)
        .on_node(node_a())
        .metered()
}

#[test]
fn an_ask_needs_a_node_that_reported() {
    let mut s = proven();
    s.when(ask_on_a(1, 1))
        .then_rejected(Rejection::NodeNotReporting { node: node_a() });
}

#[test]
fn a_node_whose_reports_say_rtx_4090_cannot_offer_h100s() {
    let mut s = proven();
    let rtx = vec![gpu(0, "NVIDIA GeForce RTX 4090", "GPU-rtx", 24_564)];
    report(&mut s, 1, rtx).accepted();
    s.when(ask_on_a(1, 1))
        .then_rejected(Rejection::SpecMismatch {
            node: node_a(),
            what: "model".into(),
            reported: "\"NVIDIA GeForce RTX 4090\"".into(),
            required: format!("one of [{H100_NAME:?}]"),
        });
}

#[test]
fn memory_below_the_ask_s_vram_names_the_reported_memory() {
    let mut s = proven();
    report(&mut s, 1, vec![gpu(0, H100_NAME, "GPU-small", 40_960)]).accepted();
    s.when(ask_on_a(1, 1))
        .then_rejected(Rejection::SpecMismatch {
            node: node_a(),
            what: "memory_mb".into(),
            reported: "40960".into(),
            required: "80000 (the ask's 80 GB)".into(),
        });
}

#[test]
fn an_ask_offers_at_most_the_free_gpus_its_node_reported() {
    let mut s = proven();
    report(&mut s, 1, h100s(node_a(), 2)).accepted();
    s.when(ask_on_a(1, 3))
        .then_rejected(Rejection::SpecMismatch {
            node: node_a(),
            what: "free_gpus".into(),
            reported: "2 of 2".into(),
            required: "3".into(),
        });
    s.when(ask_on_a(1, 2)).accepted();
    s.when(ask_on_a(2, 1))
        .then_rejected(Rejection::SpecMismatch {
            node: node_a(),
            what: "free_gpus".into(),
            reported: "0 of 2".into(),
            required: "1".into(),
        });
    // A lease keeps its GPUs taken once the ask that offered them is gone.
    s.when(bid(BUYER, 1, "3.60", 1).metered())
        .then_fills(&[(2, 1, 1, "3.60")]);
    s.when(cancel(PROVIDER, 1)).accepted();
    s.when(ask_on_a(3, 2))
        .then_rejected_with(ErrorCode::SpecMismatch);
    s.when(ask_on_a(3, 1)).accepted();
}

#[test]
fn one_gpu_on_two_nodes_is_refused_unless_it_moved_between_one_provider_s_nodes() {
    let mut s = proven();
    let shared = || vec![gpu(0, H100_NAME, "GPU-shared", 81_559)];
    report(&mut s, 1, shared()).accepted();
    // Another provider's node claims the same GPU.
    let node_b = NodeId::parse("node-b").unwrap();
    s.when(beat_with(
        PROVIDER2,
        node_b,
        1,
        &[],
        shared(),
        MADE_ON_ARRIVAL,
    ))
    .then_rejected(Rejection::GpuAlreadyRegistered {
        uuid: ShortText::parse("GPU-shared").unwrap(),
        provider: PROVIDER,
        node: node_a(),
    });
    // So does the same provider's second node while the first still reports.
    let node_c = NodeId::parse("node-c").unwrap();
    s.when(beat_with(
        PROVIDER,
        node_c,
        1,
        &[],
        shared(),
        MADE_ON_ARRIVAL,
    ))
    .then_rejected_with(ErrorCode::GpuAlreadyRegistered);
    // A report naming one GPU twice is refused as well.
    let twice = vec![
        gpu(0, H100_NAME, "GPU-twice", 81_559),
        gpu(1, H100_NAME, "GPU-twice", 81_559),
    ];
    s.when(beat_with(PROVIDER2, node_b, 2, &[], twice, MADE_ON_ARRIVAL))
        .then_rejected_with(ErrorCode::GpuAlreadyRegistered);
    // Once node A is silent, the GPU may move to the provider's other node, and node A
    // cannot take it back.
    s.at(START + TIMEOUT + 1).when(Command::Tick).accepted();
    s.when(beat_with(
        PROVIDER,
        node_c,
        1,
        &[],
        shared(),
        MADE_ON_ARRIVAL,
    ))
    .accepted();
    report(&mut s, 2, shared()).then_rejected_with(ErrorCode::GpuAlreadyRegistered);
}

#[test]
fn a_gpu_left_out_of_one_report_stays_its_node_s_until_the_node_is_silent_a_week() {
    let mut s = proven();
    report(&mut s, 1, h100s(node_a(), 2)).accepted();
    // Node A's next report misses GPU 1 (it fell off the bus); another provider's node
    // reporting it is still refused.
    report(&mut s, 2, h100s(node_a(), 1)).accepted();
    let node_b = NodeId::parse("node-b").unwrap();
    let taken = vec![gpu(0, H100_NAME, &format!("GPU-{}-1", node_a()), 81_559)];
    s.when(beat_with(
        PROVIDER2,
        node_b,
        1,
        &[],
        taken.clone(),
        MADE_ON_ARRIVAL,
    ))
    .then_rejected_with(ErrorCode::GpuAlreadyRegistered);
    report(&mut s, 3, h100s(node_a(), 2)).accepted();
    // Silent for a day, the GPU is still node A's; silent for a week, it may be resold.
    let last = s.now - 1;
    s.at(last + TIMEOUT).when(Command::Tick).accepted();
    s.at(last + 24 * HOUR).when(Command::Tick).accepted();
    s.when(beat_with(
        PROVIDER2,
        node_b,
        1,
        &[],
        taken.clone(),
        MADE_ON_ARRIVAL,
    ))
    .then_rejected_with(ErrorCode::GpuAlreadyRegistered);
    s.at(last + 7 * 24 * HOUR).when(Command::Tick).accepted();
    s.when(beat_with(PROVIDER2, node_b, 1, &[], taken, MADE_ON_ARRIVAL))
        .accepted();
}

#[test]
fn a_bond_is_held_behind_offered_gpus_and_released_when_they_leave_the_book() {
    let mut s = proven();
    report(&mut s, 1, h100s(node_a(), 8)).accepted();
    s.when(ask_on_a(1, 4))
        .then_rejected(Rejection::InsufficientBond {
            needed: amt("400"),
            free: amt("300"),
        });
    s.when(ask_on_a(1, 3)).accepted();
    assert_eq!(s.engine.bond(PROVIDER, h100()).unwrap().held, amt("300"));
    s.when(withdraw_bond(PROVIDER, "1"))
        .then_rejected(Rejection::InsufficientBond {
            needed: amt("1"),
            free: Amount::ZERO,
        });
    // Cancelling the ask frees its bond: nothing of it shows as released money.
    let out = s.when(cancel(PROVIDER, 1));
    assert!(matches!(
        out.events[..],
        [Event::OrderCancelled { released, .. }] if released == Amount::ZERO
    ));
    let bond = s.engine.bond(PROVIDER, h100()).unwrap();
    assert_eq!((bond.free, bond.held), (amt("300"), Amount::ZERO));
    // The market's bad input: nothing changes.
    for amount in ["0", "-1"] {
        s.when(post_bond(PROVIDER, amount))
            .then_rejected_with(ErrorCode::NonPositiveAmount);
    }
    s.when(post_bond(PROVIDER, "701"))
        .then_rejected_with(ErrorCode::InsufficientFunds);
}

#[test]
fn withdrawn_bond_waits_the_unbonding_delay_before_it_is_available() {
    let mut s = proven();
    let out = s.when(withdraw_bond(PROVIDER, "120"));
    let release_at = START + 24 * HOUR;
    assert_eq!(
        out.events,
        vec![Event::BondUnbonding {
            provider: PROVIDER,
            market: h100(),
            amount: amt("120"),
            release_at: Timestamp(release_at),
        }]
    );
    assert_eq!(s.engine.balance(PROVIDER).available, amt("700"));
    assert_eq!(s.engine.balance(PROVIDER).bonded, amt("300"));
    s.at(release_at - 1).when(Command::Tick).then_kinds(&[]);
    s.at(release_at)
        .when(Command::Tick)
        .then_kinds(&["bond_released"]);
    let balance = s.engine.balance(PROVIDER);
    assert_eq!(
        (balance.available, balance.bonded),
        (amt("820"), amt("180"))
    );
    // The delay survives a restart: a snapshot taken while unbonding releases on time.
    s.when(withdraw_bond(PROVIDER, "80")).accepted();
    let mut restored = matching_engine::Engine::restore(&s.engine.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), s.engine.state_hash());
    let mut out = Vec::new();
    restored
        .apply(Timestamp(release_at + 25 * HOUR), &Command::Tick, &mut out)
        .unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(restored.balance(PROVIDER).available, amt("900"));
}

#[test]
fn at_most_thirty_two_withdrawals_of_bond_wait_at_once() {
    let mut s = proven();
    for _ in 0..32 {
        s.when(withdraw_bond(PROVIDER, "0.000001")).accepted();
    }
    s.when(withdraw_bond(PROVIDER, "0.000001"))
        .then_rejected(Rejection::TooManyUnbondings { max: 32 });
    // Once one is released, another may wait.
    s.at(START + 24 * HOUR + 1_000)
        .when(Command::Tick)
        .accepted();
    s.when(withdraw_bond(PROVIDER, "1")).accepted();
}

#[test]
fn a_silent_node_s_lease_is_slashed_and_the_buyer_credited() {
    let mut s = proven();
    report(&mut s, 1, h100s(node_a(), 2)).accepted();
    s.when(ask_on_a(1, 2)).accepted();
    // Two GPUs for one hour at 3.60: the lease cost 7.20.
    s.when(bid(BUYER, 1, "3.60", 2).metered())
        .then_fills(&[(2, 1, 2, "3.60")]);
    let buyer_before = s.engine.balance(BUYER);
    let money = s.engine.total_money();
    let last_seen = START + MINUTE;
    s.at(last_seen)
        .when(beat_with(
            PROVIDER,
            node_a(),
            2,
            &[1],
            h100s(node_a(), 2),
            MADE_ON_ARRIVAL,
        ))
        .accepted();
    let out = s.at(last_seen + TIMEOUT).when(Command::Tick);
    // A quarter of the 200 behind the two GPUs: the buyer is credited a quarter of what it
    // was charged (the minute to the last healthy heartbeat), the insurance fund the rest.
    let slash = out
        .events
        .iter()
        .find(|e| matches!(e, Event::BondSlashed { .. }))
        .expect("a slash");
    let charged = out
        .events
        .iter()
        .find_map(|e| match e {
            Event::LeaseEnded { charged, .. } => Some(*charged),
            _ => None,
        })
        .unwrap();
    assert!(charged.is_positive());
    let credit = Amount::from_micros(charged.micros() / 4);
    assert_eq!(
        *slash,
        Event::BondSlashed {
            lease_id: LeaseId(1),
            market: h100(),
            provider: PROVIDER,
            node: node_a(),
            buyer: BUYER,
            slashed: amt("50"),
            buyer_credit: credit,
            insurance: Amount::from_micros(amt("50").micros() - credit.micros()),
            cause: LeaseEndCause::NodeSilent {
                last_seen: Timestamp(last_seen),
            },
        }
    );
    let kinds = out.kinds();
    let at = |kind| kinds.iter().position(|k| *k == kind).unwrap();
    assert!(at("bond_slashed") < at("lease_closed"));
    let bond = s.engine.bond(PROVIDER, h100()).unwrap();
    assert_eq!((bond.free, bond.held), (amt("250"), Amount::ZERO));
    let buyer = s.engine.balance(BUYER);
    let ended = out
        .events
        .iter()
        .find_map(|e| match e {
            Event::LeaseEnded { refunded, .. } => Some(*refunded),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        buyer.available.micros(),
        buyer_before.available.micros() + ended.micros() + credit.micros()
    );
    assert_eq!(
        s.engine.insurance().micros(),
        amt("50").micros() - credit.micros()
    );
    assert_eq!(
        s.engine.total_money(),
        money,
        "a slash moves money, it makes none"
    );
}

#[test]
fn rejected_work_is_a_provider_failure_that_gives_the_buyer_back_what_it_paid() {
    let mut s = proven();
    report(&mut s, 1, h100s(node_a(), 1)).accepted();
    s.when(ask_on_a(1, 1)).accepted();
    s.when(bid(BUYER, 1, "3.60", 1).hours(2).metered())
        .then_fills(&[(2, 1, 1, "3.60")]);
    // Given a two-hour lease whose first charge period accrued, its node reporting it
    // healthy.
    for i in 1..=35 {
        s.at(START + 2 * i * MINUTE)
            .when(beat_with(
                PROVIDER,
                node_a(),
                1 + i as u64,
                &[1],
                h100s(node_a(), 1),
                MADE_ON_ARRIVAL,
            ))
            .accepted();
    }
    let reason =
        contract::FailureReason::new("frame 9: a referee contradicted its pixels").unwrap();
    let buyer_before = s.engine.balance(BUYER);
    let money = s.engine.total_money();
    // When the market rejects its work.
    let out = s.at(START + 71 * MINUTE).when(Command::RejectWork {
        lease_id: LeaseId(1),
        reason: reason.clone(),
    });
    out.accepted();
    // Then the bond is slashed and the buyer credited everything it was charged.
    let (charged, refunded) = out
        .events
        .iter()
        .find_map(|e| match e {
            Event::LeaseEnded {
                charged,
                refunded,
                reason,
                ..
            } => {
                assert_eq!(*reason, contract::LeaseEndReason::ProviderFailed);
                Some((*charged, *refunded))
            }
            _ => None,
        })
        .unwrap();
    let slash = out
        .events
        .iter()
        .find_map(|e| match e {
            Event::BondSlashed {
                slashed,
                buyer_credit,
                cause,
                ..
            } => Some((*slashed, *buyer_credit, cause.clone())),
            _ => None,
        })
        .expect("a slash");
    // Charged what accrued: from the fill (2 ms after START, which is 20 minutes past an
    // hour) to the hour's end, the one period that closed; nothing after it.
    assert_eq!(
        charged,
        amt("2.399998"),
        "the closed period, nothing after it"
    );
    assert_eq!(slash.0, amt("25"), "a quarter of the 100 behind the GPU");
    assert_eq!(slash.1, charged, "the buyer gets back all it paid");
    assert_eq!(slash.2, LeaseEndCause::WorkRejected { reason });
    assert_eq!(
        s.engine.balance(BUYER).available.micros(),
        buyer_before.available.micros() + refunded.micros() + charged.micros()
    );
    assert_eq!(
        s.engine.total_money(),
        money,
        "a slash moves money, it makes none"
    );
    // And a second rejection, or one of a lease that is not running, changes nothing.
    s.when(Command::RejectWork {
        lease_id: LeaseId(1),
        reason: contract::FailureReason::new("again").unwrap(),
    })
    .then_rejected(Rejection::LeaseEnded {
        lease_id: LeaseId(1),
    });
    s.when(Command::RejectWork {
        lease_id: LeaseId(7),
        reason: contract::FailureReason::new("never leased").unwrap(),
    })
    .then_rejected(Rejection::UnknownLease {
        lease_id: LeaseId(7),
    });
}

#[test]
fn a_buyer_s_stop_slashes_nothing_and_frees_the_bond() {
    let mut s = proven();
    report(&mut s, 1, h100s(node_a(), 1)).accepted();
    s.when(ask_on_a(1, 1)).accepted();
    s.when(bid(BUYER, 1, "3.60", 1).metered())
        .then_fills(&[(2, 1, 1, "3.60")]);
    s.when(stop(BUYER, 1))
        .accepted()
        .then_kinds(&["lease_accrued", "lease_closed", "lease_ended"]);
    assert_eq!(s.engine.bond(PROVIDER, h100()).unwrap().free, amt("300"));
}

#[test]
fn a_report_that_loses_a_gpu_withdraws_the_asks_and_fails_the_lease_beyond_it() {
    let mut s = proven();
    report(&mut s, 1, h100s(node_a(), 2)).accepted();
    s.when(ask_on_a(1, 1)).accepted();
    s.when(ask_on_a(2, 1)).accepted();
    s.when(bid(BUYER, 1, "3.60", 1).metered())
        .then_fills(&[(3, 1, 1, "3.60")]);
    // The node now reports one GPU, with less memory than an H100's.
    let shrunk = vec![gpu(0, H100_NAME, &format!("GPU-{}-0", node_a()), 40_960)];
    let out = s.when(beat_with(
        PROVIDER,
        node_a(),
        2,
        &[1],
        shrunk,
        MADE_ON_ARRIVAL,
    ));
    out.accepted();
    assert_eq!(out.cancels(), vec![(2, CancelReason::SpecMismatch)]);
    let closed = out.events.iter().find_map(|e| match e {
        Event::LeaseClosed {
            lease_id, cause, ..
        } => Some((*lease_id, cause.clone())),
        _ => None,
    });
    // Its class is by model: the lease's GPU is still there, so it runs on.
    assert_eq!(closed, None);
    // Then the GPU is gone altogether: the lease fails as a provider failure, slashed.
    let other = vec![gpu(0, "NVIDIA GeForce RTX 4090", "GPU-rtx", 24_564)];
    let out = s.when(beat_with(
        PROVIDER,
        node_a(),
        3,
        &[1],
        other,
        MADE_ON_ARRIVAL,
    ));
    let kinds = out.kinds();
    assert!(kinds.contains(&"bond_slashed"), "{kinds:?}");
    let closed = out.events.iter().find_map(|e| match e {
        Event::LeaseClosed { cause, .. } => Some(cause.clone()),
        _ => None,
    });
    assert_eq!(closed, Some(LeaseEndCause::SpecMismatch { sequence: 3 }));
}

#[test]
fn an_ask_s_amend_upward_needs_the_gpus_and_the_bond() {
    let mut s = proven();
    report(&mut s, 1, h100s(node_a(), 4)).accepted();
    s.when(ask_on_a(1, 2)).accepted();
    s.when(amend(PROVIDER, 1, None, Some(4)))
        .then_rejected_with(ErrorCode::InsufficientBond);
    s.when(post_bond(PROVIDER, "100")).accepted();
    s.when(amend(PROVIDER, 1, None, Some(5)))
        .then_rejected_with(ErrorCode::SpecMismatch);
    s.when(amend(PROVIDER, 1, None, Some(4))).accepted();
    assert_eq!(s.engine.bond(PROVIDER, h100()).unwrap().held, amt("400"));
    s.when(amend(PROVIDER, 1, None, Some(1))).accepted();
    assert_eq!(s.engine.bond(PROVIDER, h100()).unwrap().held, amt("100"));
    // After the market raises its bond, growing the ask holds all of it at the new rate.
    let mut raised = proven_market("150");
    if let Command::ConfigureMarket { config, .. } = &mut raised {
        assert_eq!(config.bond_per_gpu, amt("150"));
    }
    s.when(raised).accepted();
    s.when(amend(PROVIDER, 1, None, Some(2))).accepted();
    assert_eq!(s.engine.bond(PROVIDER, h100()).unwrap().held, amt("300"));
}

#[test]
fn bonds_and_proofs_survive_a_snapshot() {
    let mut s = proven();
    report(&mut s, 1, h100s(node_a(), 2)).accepted();
    s.when(ask_on_a(1, 1)).accepted();
    s.when(bid(BUYER, 1, "3.60", 1).metered()).accepted();
    s.when(ask_on_a(2, 1)).accepted();
    s.when(withdraw_bond(PROVIDER, "10")).accepted();
    let restored = matching_engine::Engine::restore(&s.engine.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), s.engine.state_hash());
    assert!(restored.audit().is_empty(), "{:?}", restored.audit());
    assert_eq!(
        restored.bond(PROVIDER, h100()),
        s.engine.bond(PROVIDER, h100())
    );
    // The restored engine still knows the node's GPUs are all taken.
    s.engine = restored;
    s.when(ask_on_a(3, 1))
        .then_rejected_with(ErrorCode::SpecMismatch);
}
