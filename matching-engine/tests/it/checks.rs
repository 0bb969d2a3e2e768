//! Checks: in a market with a checker, a node the checker has not passed sells only to the
//! checker's check of it; a passed check frees its asks (and pays for the lease), a failed
//! one slashes the provider and puts the node back on probation.

use contract::{
    AccountId, Command, Event, FailureReason, LeaseEndCause, LeaseId, NodeId, NodeRef, Rejection,
    TimeInForce,
};
use matching_engine::Engine;

use crate::support::*;

/// 2026-01-31T10:20:00Z.
const START: i64 = 1_769_854_800_000;
const CHECKER: AccountId = AccountId(21);

fn node_a() -> NodeId {
    NodeId::parse("node-a").unwrap()
}

fn a() -> NodeRef {
    NodeRef {
        provider: PROVIDER,
        node: node_a(),
    }
}

/// The proven market with CHECKER appointed and funded, and node A reporting four H100s
/// offered at 3.60 (order 1).
fn checked_market() -> Scenario {
    let mut commands = market_with_buyers();
    commands.push(proven_market("100"));
    commands.push(deposit(PROVIDER, "1000"));
    commands.push(post_bond(PROVIDER, "500"));
    commands.push(deposit(CHECKER, "100"));
    commands.push(Command::AppointChecker {
        market: h100(),
        account: CHECKER,
    });
    let mut s = Scenario::given(commands);
    s.at(START);
    s.when(beat_with(
        PROVIDER,
        node_a(),
        1,
        &[],
        h100s(node_a(), 4),
        MADE_ON_ARRIVAL,
    ))
    .accepted();
    s.when(offer(PROVIDER, 1, "3.60", 4).on_node(node_a()).metered())
        .accepted();
    s
}

fn check(account: AccountId, client_id: u128, node: NodeRef) -> Command {
    let b = bid(account, client_id, "3.60", 1).tif(TimeInForce::Ioc);
    Command::PlaceCheck {
        order: b.order,
        node,
    }
}

fn verdict(lease: u64, passed: bool, detail: &str) -> Command {
    Command::RecordCheck {
        lease_id: LeaseId(lease),
        passed,
        detail: FailureReason::new(detail).unwrap(),
    }
}

#[test]
fn a_node_on_probation_sells_only_to_the_checker_until_it_passes() {
    // Given a node the checker has not passed,
    let mut s = checked_market();
    // a buyer's bid does not take its ask, and rests;
    s.when(bid(BUYER, 1, "3.60", 1).metered()).then_fills(&[]);
    let explained = s.engine.explain(contract::OrderId(2), 10).unwrap();
    assert!(
        format!("{explained:?}").contains("OnProbation"),
        "{explained:?}"
    );
    // nobody but the checker places a check, and a check never rests.
    s.when(check(BUYER, 2, a()))
        .then_rejected(Rejection::NotTheChecker {
            account: BUYER,
            market: h100(),
        });
    let mut resting = bid(CHECKER, 1, "3.60", 1).order;
    resting.tif = TimeInForce::Gtc;
    s.when(Command::PlaceCheck {
        order: resting,
        node: a(),
    })
    .then_rejected(Rejection::CheckNotImmediate);
    // A check for another node takes nothing.
    let elsewhere = NodeRef {
        provider: PROVIDER,
        node: NodeId::parse("node-b").unwrap(),
    };
    s.when(check(CHECKER, 2, elsewhere)).then_fills(&[]);

    // When the checker's check of node A fills and its verdict is a pass,
    s.when(check(CHECKER, 3, a()))
        .then_fills(&[(4, 1, 1, "3.60")]);
    let out = s.when(verdict(
        1,
        true,
        "reference frame and kernel answer matched",
    ));
    out.accepted();
    // then the lease ends as the checker's paid stop, and the buyer's resting bid takes
    // the node's other GPU where it rests.
    assert!(matches!(
        out.events[0],
        Event::NodeChecked {
            passed: true,
            lease_id: LeaseId(1),
            checker: CHECKER,
            ..
        }
    ));
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::LeaseClosed {
            lease_id: LeaseId(1),
            cause: LeaseEndCause::BuyerStopped,
            ..
        }
    )));
    assert_eq!(out.fills(), vec![(2, 1, 1, px("3.60"))]);
    // A verdict is given once.
    s.when(verdict(1, true, "again"))
        .then_rejected(Rejection::LeaseEnded {
            lease_id: LeaseId(1),
        });
    // And only the checker's own leases get one.
    s.when(verdict(2, false, "not the checker's"))
        .then_rejected(Rejection::NotTheChecker {
            account: BUYER,
            market: h100(),
        });
}

#[test]
fn a_failed_check_slashes_the_provider_and_puts_the_node_back_on_probation() {
    // Given a node that passed once,
    let mut s = checked_market();
    s.when(check(CHECKER, 1, a()))
        .then_fills(&[(2, 1, 1, "3.60")]);
    s.when(verdict(1, true, "matched")).accepted();
    let checker_before = s.engine.balance(CHECKER);
    // when a later check finds a wrong answer,
    s.when(check(CHECKER, 2, a()))
        .then_fills(&[(3, 1, 1, "3.60")]);
    let out = s.when(verdict(2, false, "the reference frame's pixels differ"));
    out.accepted();
    // then the provider is slashed and the checker credited what it paid,
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
    assert_eq!(slash.0, amt("25"), "a quarter of the 100 behind the GPU");
    assert_eq!(
        slash.2,
        LeaseEndCause::WorkRejected {
            reason: FailureReason::new("the reference frame's pixels differ").unwrap()
        }
    );
    assert_eq!(
        s.engine.balance(CHECKER).available,
        checker_before.available,
        "work that failed its check costs the checker nothing"
    );
    // and the node sells to no buyer again until it passes, across a restore too.
    s.when(bid(BUYER, 1, "3.60", 1).metered()).then_fills(&[]);
    let restored = Engine::restore(&s.engine.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), s.engine.state_hash());
    s.engine = restored;
    s.when(bid(BUYER2, 1, "3.60", 1).metered()).then_fills(&[]);
    s.when(check(CHECKER, 3, a()))
        .then_fills(&[(6, 1, 1, "3.60")]);
    let passed = s.when(verdict(3, true, "matched"));
    assert_eq!(
        passed.fills(),
        vec![(4, 1, 1, px("3.60"))],
        "the earlier bid first"
    );
}

#[test]
fn a_market_without_a_checker_sells_every_node_and_an_appointment_holds_back_the_unchecked() {
    let mut s = Scenario::given({
        let mut c = market_with_buyers();
        c.push(proven_market("100"));
        c.push(deposit(PROVIDER, "1000"));
        c.push(post_bond(PROVIDER, "300"));
        c
    });
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
    s.when(offer(PROVIDER, 1, "3.60", 2).on_node(node_a()).metered())
        .accepted();
    s.when(bid(BUYER, 1, "3.60", 1).metered())
        .then_fills(&[(2, 1, 1, "3.60")]);
    // Appointing a checker puts the resting ask on probation at once.
    s.when(Command::AppointChecker {
        market: h100(),
        account: CHECKER,
    })
    .then_kinds(&["checker_appointed"]);
    s.when(bid(BUYER, 2, "3.60", 1).metered()).then_fills(&[]);
    s.when(Command::AppointChecker {
        market: h100(),
        account: AccountId::MARKET,
    })
    .then_rejected(Rejection::ReservedAccount {
        account: AccountId::MARKET,
    });
}

#[test]
fn a_post_only_ask_a_pass_would_make_trade_stays_on_probation_across_a_restore() {
    // Given node A reporting a fifth GPU, checked (its first ask's GPU leased to the
    // checker), then a post-only ask of that GPU and a buyer's bid resting at its price,
    // kept apart by probation,
    let mut s = checked_market();
    s.when(beat_with(
        PROVIDER,
        node_a(),
        2,
        &[],
        h100s(node_a(), 5),
        MADE_ON_ARRIVAL,
    ))
    .accepted();
    s.when(check(CHECKER, 1, a()))
        .then_fills(&[(2, 1, 1, "3.60")]);
    s.when(
        offer(PROVIDER, 2, "3.50", 1)
            .on_node(node_a())
            .post_only()
            .metered(),
    )
    .accepted();
    s.when(bid(BUYER, 1, "3.50", 1).metered()).then_fills(&[]);
    // when the node passes its check,
    let passed = s.when(verdict(1, true, "matched"));
    // then the post-only ask (order 3), which never takes, keeps its probation rather than
    // trade with the resting bid;
    assert_eq!(passed.fills(), vec![]);
    // a restored engine has the same asks on probation,
    let restored = Engine::restore(&s.engine.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), s.engine.state_hash());
    s.engine = restored;
    // and a new bid skips it for the node's plain ask, off probation since the pass.
    s.when(bid(BUYER2, 1, "3.60", 1).metered())
        .then_fills(&[(5, 1, 1, "3.60")]);
}
