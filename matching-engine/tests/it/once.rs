//! Idempotency keys for deposits and withdrawal requests: a retry is a typed duplicate that
//! changes nothing, a different request under a used key is refused.

use contract::{Command, IdempotencyKey, Rejection};

use crate::support::*;

const ADDRESS: &str = "cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4";

fn deposit_once(amount: &str, key: u128) -> Command {
    Command::DepositOnce {
        account: BUYER,
        amount: amt(amount),
        key: IdempotencyKey(key),
    }
}

fn withdraw_once(amount: &str, key: u128) -> Command {
    Command::RequestWithdrawalOnce {
        account: BUYER,
        amount: amt(amount),
        key: IdempotencyKey(key),
    }
}

#[test]
fn a_retried_deposit_is_a_duplicate_and_another_under_its_key_a_mistake() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(deposit_once("5", 1)).then_kinds(&["deposited"]);
    s.when(deposit_once("5", 1))
        .then_rejected(Rejection::AlreadyApplied {
            key: IdempotencyKey(1),
        });
    s.when(deposit_once("6", 1))
        .then_rejected(Rejection::IdempotencyKeyReused {
            key: IdempotencyKey(1),
        });
    assert_eq!(s.engine.balance(BUYER).available, amt("1005"));
    // Keys are per account, and a refused request does not use its key up.
    s.when(Command::DepositOnce {
        account: BUYER2,
        amount: amt("5"),
        key: IdempotencyKey(1),
    })
    .accepted();
    s.when(deposit_once("0", 2))
        .then_rejected_with(ErrorCode::NonPositiveAmount);
    s.when(deposit_once("1", 2)).accepted();
}

#[test]
fn a_retried_withdrawal_request_moves_the_money_once_and_keys_survive_a_snapshot() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(withdraw_once("10", 7))
        .then_rejected_with(ErrorCode::NoPayoutAddress);
    s.when(Command::SetPayoutAddress {
        account: BUYER,
        address: contract::ChainAddress::parse(ADDRESS).unwrap(),
    });
    s.when(withdraw_once("10", 7))
        .then_kinds(&["withdrawal_requested"]);
    s.engine = matching_engine::Engine::restore(&s.engine.snapshot()).unwrap();
    s.when(withdraw_once("10", 7))
        .then_rejected(Rejection::AlreadyApplied {
            key: IdempotencyKey(7),
        });
    // One key space for both kinds of request.
    s.when(deposit_once("10", 7))
        .then_rejected(Rejection::IdempotencyKeyReused {
            key: IdempotencyKey(7),
        });
    assert_eq!(s.engine.balance(BUYER).settling, amt("10"));
    assert_eq!(s.engine.balance(BUYER).available, amt("990"));
}
