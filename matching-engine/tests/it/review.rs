//! Payment held for review: a buyer's held stop frees the GPU at once and keeps the money
//! and the bond behind the lease until the buyer releases it, the market rejects the work
//! (slashed) or the hold runs out.

use contract::{
    Command, Event, FailureReason, LeaseEndCause, LeaseEndReason, LeaseId, NodeId, Rejection,
    Timestamp,
};
use matching_engine::Engine;

use crate::support::*;

/// 2026-01-31T10:20:00Z.
const START: i64 = 1_769_854_800_000;

fn node_a() -> NodeId {
    NodeId::parse("node-a").unwrap()
}

/// The proven market (100 bond per GPU, a quarter slashed) with node A reporting two H100s,
/// one offered at 3.60 (order 1) and leased to BUYER (lease 1, from order 2).
fn leased() -> Scenario {
    let mut commands = market_with_buyers();
    commands.push(proven_market("100"));
    commands.push(deposit(PROVIDER, "1000"));
    commands.push(post_bond(PROVIDER, "200"));
    let mut s = Scenario::given(commands);
    s.at(START);
    s.when(beat_with(
        PROVIDER,
        node_a(),
        1,
        &[],
        h100s(node_a(), 2),
        MADE_ON_ARRIVAL,
    ))
    .accepted();
    s.when(offer(PROVIDER, 1, "3.60", 1).on_node(node_a()).metered())
        .accepted();
    s.when(bid(BUYER, 1, "3.60", 1).metered())
        .then_fills(&[(2, 1, 1, "3.60")]);
    s
}

fn hold(lease: u64, hold_ms: u64) -> Command {
    Command::StopLeaseHeld {
        by: BUYER,
        lease_id: LeaseId(lease),
        hold_ms,
    }
}

fn release(by: contract::AccountId, lease: u64) -> Command {
    Command::ReleasePayment {
        by,
        lease_id: LeaseId(lease),
    }
}

fn reject(lease: u64, reason: &str) -> Command {
    Command::RejectWork {
        lease_id: LeaseId(lease),
        reason: FailureReason::new(reason).unwrap(),
    }
}

#[test]
fn a_held_stop_frees_the_gpu_at_once_and_pays_only_when_the_buyer_releases_it() {
    // Given a lease ten minutes in,
    let mut s = leased();
    let provider_before = s.engine.balance(PROVIDER);
    s.at(START + 600_000);
    // a hold of nothing or of more than eight days is refused, and only the buyer holds;
    s.when(hold(1, 0)).then_rejected(Rejection::BadPaymentHold {
        hold_ms: 0,
        max_ms: Command::MAX_PAYMENT_HOLD_MS,
    });
    s.when(hold(1, Command::MAX_PAYMENT_HOLD_MS + 1))
        .then_rejected_with(contract::ErrorCode::Validation);
    s.when(Command::StopLeaseHeld {
        by: PROVIDER,
        lease_id: LeaseId(1),
        hold_ms: 60_000,
    })
    .then_rejected(Rejection::NotLeaseParty {
        lease_id: LeaseId(1),
        by: PROVIDER,
    });
    // and a running lease has no payment to release.
    s.when(release(BUYER, 1))
        .then_rejected(Rejection::PaymentNotHeld {
            lease_id: LeaseId(1),
        });

    // When the buyer stops it holding the payment for an hour,
    let at = s.now;
    let out = s.when(hold(1, 3_600_000));
    // then the lease closes as the buyer's stop, charged to now, and nothing is paid yet:
    out.accepted();
    assert_eq!(
        out.kinds(),
        ["lease_accrued", "lease_closed", "payment_held"],
        "{:#?}",
        out.events
    );
    assert!(matches!(
        out.events[1],
        Event::LeaseClosed {
            cause: LeaseEndCause::BuyerStopped,
            ..
        }
    ));
    let (until, charged_when_held) = s.engine.held_payment(LeaseId(1)).unwrap();
    assert_eq!(until, Timestamp(at + 3_600_000));
    assert!(
        charged_when_held >= amt("0.60") && charged_when_held < amt("0.61"),
        "ten minutes at 3.60: {charged_when_held}"
    );
    assert_eq!(s.engine.balance(PROVIDER), provider_before);
    assert_eq!(
        s.engine.bond(PROVIDER, h100()).unwrap().held,
        amt("100"),
        "the bond stays behind the work under review"
    );
    assert!(s.engine.lease(LeaseId(1)).is_none(), "it no longer runs");
    // the GPU sells again at once;
    s.when(offer(PROVIDER, 3, "3.60", 1).on_node(node_a()).metered())
        .accepted();
    s.when(bid(BUYER2, 1, "3.60", 1).metered())
        .then_fills(&[(4, 3, 1, "3.60")]);
    // the provider cannot release it, nor stop it again;
    s.when(release(PROVIDER, 1))
        .then_rejected(Rejection::NotLeaseParty {
            lease_id: LeaseId(1),
            by: PROVIDER,
        });
    s.when(stop(PROVIDER, 1))
        .then_rejected(Rejection::LeaseEnded {
            lease_id: LeaseId(1),
        });
    // a restored engine holds the same.
    let restored = Engine::restore(&s.engine.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), s.engine.state_hash());
    s.engine = restored;

    // When the buyer releases it,
    let out = s.when(release(BUYER, 1));
    // then it ends paid, and is released once.
    out.then_kinds(&["lease_ended"]);
    let Event::LeaseEnded {
        charged,
        provider_earned,
        reason,
        ..
    } = &out.events[0]
    else {
        unreachable!()
    };
    assert_eq!(*reason, LeaseEndReason::BuyerStopped);
    assert_eq!(*charged, charged_when_held, "charged to the held stop");
    assert_eq!(
        s.engine.balance(PROVIDER).available.micros(),
        provider_before.available.micros() + provider_earned.micros()
    );
    assert_eq!(s.engine.held_payment(LeaseId(1)), None);
    s.when(release(BUYER, 1))
        .then_rejected(Rejection::LeaseEnded {
            lease_id: LeaseId(1),
        });
}

#[test]
fn held_work_the_market_rejects_is_slashed_and_a_hold_that_runs_out_pays() {
    // Given a lease whose payment the buyer holds,
    let mut s = leased();
    let b = s.engine.balance(BUYER);
    let buyer_before = amt("0")
        .checked_add(b.available)
        .unwrap()
        .checked_add(b.in_lease)
        .unwrap();
    s.at(START + 600_000);
    s.when(hold(1, 3_600_000)).accepted();
    // when the market rejects its work,
    let out = s.when(reject(1, "frame 3: a referee rendered the other pixels"));
    // then the bond behind it is slashed, the buyer gets back what it was charged, and the
    // lease ends as a provider failure;
    out.then_kinds(&["bond_slashed", "lease_ended"]);
    assert!(matches!(
        &out.events[0],
        Event::BondSlashed {
            cause: LeaseEndCause::WorkRejected { .. },
            ..
        }
    ));
    assert!(matches!(
        &out.events[1],
        Event::LeaseEnded {
            reason: LeaseEndReason::ProviderFailed,
            ..
        }
    ));
    let Event::BondSlashed { slashed, .. } = &out.events[0] else {
        unreachable!()
    };
    assert_eq!(*slashed, amt("25"));
    assert_eq!(
        s.engine.balance(BUYER).available,
        buyer_before,
        "rejected work costs the buyer nothing: all it paid into the lease is back"
    );
    s.when(reject(1, "again"))
        .then_rejected(Rejection::LeaseEnded {
            lease_id: LeaseId(1),
        });

    // Given another lease held for a minute,
    s.when(offer(PROVIDER, 3, "3.60", 1).on_node(node_a()).metered())
        .accepted();
    s.when(bid(BUYER, 3, "3.60", 1).metered())
        .then_fills(&[(4, 3, 1, "3.60")]);
    s.when(hold(2, 60_000)).accepted();
    let (until, _) = s.engine.held_payment(LeaseId(2)).unwrap();
    // when the minute passes with no verdict (and across a restore),
    let restored = Engine::restore(&s.engine.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), s.engine.state_hash());
    s.engine = restored;
    s.at(until.0 - 1);
    s.when(Command::Tick).then_kinds(&[]);
    let out = s.at(until.0).when(Command::Tick);
    // then the provider is paid as for a buyer's stop, and a late rejection finds it ended.
    out.then_kinds(&["lease_ended"]);
    s.when(reject(2, "late"))
        .then_rejected(Rejection::LeaseEnded {
            lease_id: LeaseId(2),
        });
}
