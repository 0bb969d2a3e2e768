//! Pre-trade risk, holds, lease settlement and money conservation.

use contract::{AccountId, Command, Event, Gpus, LeaseId, NodeId, Rejection, Timestamp};

use crate::support::*;

#[test]
fn a_bid_holds_price_times_gpus_times_hours() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(bid(BUYER, 1, "2.50", 8).hours(10));
    let b = s.engine.balance(BUYER);
    assert_eq!((b.available, b.held), (amt("800"), amt("200")));
    s.when(bid(BUYER, 2, "2.50", 8).hours(41))
        .then_rejected(Rejection::InsufficientFunds {
            needed: amt("820"),
            available: amt("800"),
        });
}

#[test]
fn a_fill_at_a_better_price_releases_the_difference() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 4));
    let out = s.when(bid(BUYER, 1, "2.50", 4).hours(10));
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::LeaseCreated { cost, released, .. } if *cost == amt("80") && *released == amt("20")
    )));
    let b = s.engine.balance(BUYER);
    assert_eq!(
        (b.available, b.held, b.in_lease),
        (amt("920"), amt("0"), amt("80"))
    );
}

#[test]
fn an_early_end_refunds_the_buyer_and_pays_the_provider_less_the_fee() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 4));
    s.when(bid(BUYER, 1, "2.00", 4).hours(10)); // lease 1 costs 80
    s.when(end(BUYER, 1, "2.5")).accepted();
    // 2.00 × 4 GPUs × 2.5 h = 20 charged; 10% fee; 60 refunded.
    assert_eq!(s.engine.balance(BUYER).available, amt("980"));
    assert_eq!(s.engine.balance(BUYER).in_lease, amt("0"));
    assert_eq!(s.engine.balance(PROVIDER).available, amt("18"));
    assert_eq!(s.engine.balance(AccountId::MARKET).available, amt("2"));
    assert_eq!(s.engine.total_money(), micros("2000"));
    s.when(end(BUYER, 1, "1"))
        .then_rejected(Rejection::UnknownLease {
            lease_id: LeaseId(1),
        });
}

#[test]
fn charges_round_down_to_the_micro_unit_and_the_remainder_is_refunded() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "0.01", 1));
    s.when(bid(BUYER, 1, "0.01", 1).hours(1));
    let out = s.when(end(PROVIDER, 1, "0.333333"));
    assert!(
        out.events.iter().any(|e| matches!(
            e,
            Event::LeaseEnded { charged, refunded, .. }
                if *charged == amt("0.003333") && *refunded == amt("0.006667")
        )),
        "{:#?}",
        out.events
    );
    assert_eq!(s.engine.total_money(), micros("2000"));
}

#[test]
fn only_the_lease_parties_may_end_it_and_only_within_its_hours() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 1));
    s.when(bid(BUYER, 1, "2.00", 1).hours(2));
    s.when(end(BUYER2, 1, "1"))
        .then_rejected(Rejection::NotLeaseParty {
            lease_id: LeaseId(1),
            by: BUYER2,
        });
    for bad in ["2.5", "-1", "0.0000001"] {
        s.when(end(BUYER, 1, bad))
            .then_rejected_with(ErrorCode::BadHoursUsed);
    }
    s.when(end(AccountId::MARKET, 1, "2")).accepted();
    assert_eq!(s.engine.balance(PROVIDER).available, amt("3.6"));
}

#[test]
fn deposits_and_withdrawals_move_available_money_only() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(Command::Deposit {
        account: BUYER,
        amount: amt("0"),
    })
    .then_rejected_with(ErrorCode::NonPositiveAmount);
    s.when(Command::Deposit {
        account: BUYER,
        amount: amt("-5"),
    })
    .then_rejected_with(ErrorCode::NonPositiveAmount);
    s.when(bid(BUYER, 1, "1.00", 1).hours(100)); // holds 100
    s.when(Command::Withdraw {
        account: BUYER,
        amount: amt("901"),
    })
    .then_rejected(Rejection::InsufficientFunds {
        needed: amt("901"),
        available: amt("900"),
    });
    s.when(Command::Withdraw {
        account: BUYER,
        amount: amt("900"),
    })
    .accepted();
    assert_eq!(s.engine.balance(BUYER).available, amt("0"));
    assert_eq!(s.engine.total_money(), micros("1100"));
}

#[test]
fn a_late_job_s_start_counts_from_its_submission_not_the_fill() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 2));
    s.at(T0 + 1_000).when(bid(BUYER, 1, "2.00", 1).hours(2));
    s.at(T0 + 1_001).when(bid(BUYER, 2, "2.00", 1).hours(2));
    let start = |lease, submitted: i64| Command::StartLeaseJob {
        provider: PROVIDER,
        lease_id: LeaseId(lease),
        job_submitted_at: Timestamp(submitted),
    };
    let after = |out: &crate::support::Outcome| match out.events[..] {
        [Event::LeaseStarted { after_ms, .. }] => after_ms,
        _ => panic!("{:?}", out.events),
    };
    // The buyer submitted its job ten minutes after the fill; the agent started it 20 s
    // later: the provider was 20 s late, not ten minutes.
    let out = s.at(T0 + 620_000).when(start(1, T0 + 600_000));
    assert_eq!(after(&out), 20_000);
    // A submission stamped ahead of the engine's clock counts as now.
    let out = s.at(T0 + 630_000).when(start(2, T0 + 10_000_000));
    assert_eq!(after(&out), 0);
    s.when(start(1, T0))
        .then_rejected_with(ErrorCode::LeaseAlreadyStarted);
}

#[test]
fn only_the_provider_starts_a_lease_and_only_once() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 1));
    s.at(T0 + 1_000).when(bid(BUYER, 1, "2.00", 1).hours(2));
    let start = |by| Command::StartLease {
        provider: by,
        lease_id: LeaseId(1),
    };
    s.when(start(BUYER))
        .then_rejected(Rejection::NotLeaseProvider {
            lease_id: LeaseId(1),
            by: BUYER,
        });
    s.when(Command::StartLease {
        provider: PROVIDER,
        lease_id: LeaseId(9),
    })
    .then_rejected(Rejection::UnknownLease {
        lease_id: LeaseId(9),
    });
    let started = s.at(T0 + 91_000).when(start(PROVIDER));
    started.accepted();
    assert_eq!(
        started.events,
        [Event::LeaseStarted {
            lease_id: LeaseId(1),
            provider: PROVIDER,
            node: s.engine.lease(LeaseId(1)).unwrap().node,
            after_ms: 90_000,
        }]
    );
    s.when(start(PROVIDER))
        .then_rejected(Rejection::LeaseAlreadyStarted {
            lease_id: LeaseId(1),
            started_at: Timestamp(T0 + 91_000),
        });
    // A snapshot keeps the start, so a restarted engine refuses a second one too.
    let restored = matching_engine::Engine::restore(&s.engine.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), s.engine.state_hash());
    assert_eq!(
        restored.lease(LeaseId(1)).unwrap().started_at,
        Some(Timestamp(T0 + 91_000))
    );
}

#[test]
fn a_heartbeat_is_recorded_as_stated_and_changes_no_state() {
    let mut s = Scenario::given(market_with_buyers());
    let node = NodeId::parse("fra-1").unwrap();
    let beat = |provider| Command::Heartbeat {
        provider,
        node,
        class: h100(),
        gpus: Gpus::new(8).unwrap(),
    };
    let before = s.engine.state_hash();
    s.when(beat(PROVIDER)).accepted();
    assert_eq!(
        s.when(beat(PROVIDER)).events,
        [Event::NodeHeartbeat {
            provider: PROVIDER,
            node,
            class: h100(),
            gpus: Gpus::new(8).unwrap(),
        }]
    );
    // Only the clock moved.
    s.when(Command::Tick);
    let mut idle = Scenario::given(market_with_buyers());
    idle.at(s.now - 1).when(Command::Tick);
    assert_eq!(idle.engine.state_hash(), s.engine.state_hash());
    assert_ne!(before, s.engine.state_hash(), "the clock moved");
    s.when(beat(AccountId::MARKET))
        .then_rejected_with(ErrorCode::ReservedAccount);
}
