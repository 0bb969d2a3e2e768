//! Money at the edge of its range: an account holds at most `i64::MAX` micro-units in all
//! its buckets together, money coming into an account past that is refused with
//! `AMOUNT_OVERFLOW` and changes nothing (`Scenario::when` checks the state hash and the
//! audit after every command), and totals across accounts count past it.

use contract::{AccountId, Command, LeaseId, Rejection};

use crate::support::*;

/// `MAX` less the 1.00 a bid holds.
const MAX_LESS_ONE: &str = "9223372036853.775807";
/// `MAX` less `BIG`.
const MAX_LESS_BIG: &str = "4223372036854.775807";

/// Issue #15's case: before, the refused deposit was accepted (available had room) and the
/// cancel wrapped available to -9,223,372,036,853.775809.
#[test]
fn a_full_account_refuses_a_deposit_so_a_cancel_cannot_wrap() {
    let mut s = Scenario::given(limit_markets());
    s.when(deposit(BUYER, MAX)).accepted();
    s.when(bid(BUYER, 1, "1.00", 1)).accepted();
    // Available has room, the account does not: the hold comes back to available.
    s.when(deposit(BUYER, "1"))
        .then_rejected(Rejection::AmountOverflow);
    s.when(deposit(BUYER, "0.000001"))
        .then_rejected(Rejection::AmountOverflow);
    s.when(chain_deposit(BUYER, "1", 1))
        .then_rejected(Rejection::AmountOverflow);
    let b = s.engine.balance(BUYER);
    assert_eq!((b.available, b.held), (amt(MAX_LESS_ONE), amt("1")));
    s.when(cancel(BUYER, 1)).accepted();
    assert_eq!(s.engine.balance(BUYER).available, amt(MAX));
    assert_eq!(s.engine.total_money(), micros(MAX));
}

/// Before, the second bid's hold took held past the range and it read negative.
#[test]
fn a_second_large_bid_cannot_push_held_past_the_limit() {
    let mut s = Scenario::given(limit_markets());
    s.when(deposit(BUYER, MAX)).accepted();
    s.when(bid(BUYER, 1, BIG, 1)).accepted();
    s.when(deposit(BUYER, BIG))
        .then_rejected(Rejection::AmountOverflow);
    s.when(bid(BUYER, 2, BIG, 1))
        .then_rejected(Rejection::InsufficientFunds {
            needed: amt(BIG),
            available: amt(MAX_LESS_BIG),
        });
    let b = s.engine.balance(BUYER);
    assert_eq!((b.available, b.held), (amt(MAX_LESS_BIG), amt(BIG)));
    assert_eq!(s.engine.total_money(), micros(MAX));
}

#[test]
fn a_hold_or_an_amend_that_does_not_fit_is_refused() {
    let mut s = Scenario::given(limit_markets());
    s.when(deposit(BUYER, MAX)).accepted();
    for order in [
        bid(BUYER, 1, MAX, 2),
        bid(BUYER, 1, MAX, 1).hours(2),
        bid(BUYER, 1, "200000", 65_536).hours(8_760),
    ] {
        s.when(order).then_rejected(Rejection::AmountOverflow);
    }
    s.when(bid(BUYER, 1, MAX, 1)).accepted();
    s.when(amend(BUYER, 1, None, Some(2)))
        .then_rejected(Rejection::AmountOverflow);
    assert_eq!(s.engine.balance(BUYER).held, amt(MAX));
    assert_eq!(s.engine.total_money(), micros(MAX));
}

#[test]
fn a_lease_of_the_whole_range_fills_and_ends_exactly() {
    let mut s = Scenario::given(limit_markets());
    s.when(deposit(BUYER, MAX)).accepted();
    s.when(ask(PROVIDER, 1, MAX, 1)).accepted();
    s.when(bid(BUYER, 1, MAX, 1)).then_fills(&[(2, 1, 1, MAX)]);
    assert_eq!(s.engine.balance(BUYER).in_lease, amt(MAX));
    // Half an hour of i64::MAX micro-units rounds down; the buyer gets the rest back.
    s.when(end(BUYER, 1, "0.5")).accepted();
    assert_eq!(
        (
            s.engine.balance(PROVIDER).available,
            s.engine.balance(BUYER).available
        ),
        (amt("4611686018427.387903"), amt("4611686018427.387904"))
    );
    assert_eq!(s.engine.total_money(), micros(MAX));
}

#[test]
fn earnings_past_the_limit_wait_until_the_provider_has_room() {
    let mut s = Scenario::given(limit_markets());
    s.when(deposit(PROVIDER, "9223372036854")).accepted();
    s.when(deposit(BUYER, "10")).accepted();
    s.when(ask(PROVIDER, 1, "1", 1)).accepted();
    s.when(bid(BUYER, 1, "1", 1)).then_fills(&[(2, 1, 1, "1")]);
    s.when(end(BUYER, 1, "1"))
        .then_rejected(Rejection::AmountOverflow);
    assert!(s.engine.lease(LeaseId(1)).is_some(), "the lease still runs");
    s.when(Command::Withdraw {
        account: PROVIDER,
        amount: amt("1"),
    })
    .accepted();
    s.when(end(BUYER, 1, "1")).accepted();
    assert_eq!(s.engine.balance(PROVIDER).available, amt("9223372036854"));
    // Together past one account's range: 9,223,372,036,854 + 10 deposited, 1 withdrawn.
    assert_eq!(
        s.engine.total_money(),
        micros("9223372036854") + micros("9")
    );
}

#[test]
fn fees_past_the_limit_wait_until_the_market_withdraws() {
    let mut s = Scenario::given(limit_markets());
    // Two leases of BIG each, leases 1 and 2, in the market that takes all of a charge.
    for (buyer, provider) in [(BUYER, PROVIDER), (BUYER2, PROVIDER2)] {
        s.when(deposit(buyer, BIG)).accepted();
        s.when(ask(provider, 1, BIG, 1).market("MI300X-192GB"))
            .accepted();
        s.when(bid(buyer, 1, BIG, 1).market("MI300X-192GB"))
            .accepted();
    }
    s.when(end(BUYER, 1, "1")).accepted();
    s.when(end(BUYER2, 2, "1"))
        .then_rejected(Rejection::AmountOverflow);
    s.when(Command::Withdraw {
        account: AccountId::MARKET,
        amount: amt(BIG),
    })
    .accepted();
    s.when(end(BUYER2, 2, "1")).accepted();
    assert_eq!(s.engine.balance(AccountId::MARKET).available, amt(BIG));
    assert_eq!(s.engine.balance(PROVIDER2).available, amt("0"));
    assert_eq!(s.engine.total_money(), micros(BIG));
}

#[test]
fn the_market_total_counts_past_one_accounts_range() {
    let mut s = Scenario::given(limit_markets());
    s.when(deposit(BUYER, MAX)).accepted();
    s.when(deposit(BUYER2, MAX)).accepted();
    assert_eq!(s.engine.total_money(), 2 * micros(MAX));
}
