//! Money in and out through the chain bridge: deposits credited once, withdrawals and
//! earnings paid in batches, one batch at a time, and failed batches returned.

use contract::{
    AccountId, Amount, ChainAddress, Command, Event, FailureReason, Rejection, SettlementId,
    SettlementPayout, TxHash,
};

use crate::support::*;

const ADDRESS: &str = "cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4";

fn address() -> ChainAddress {
    ChainAddress::parse(ADDRESS).unwrap()
}

fn set_address(account: AccountId) -> Command {
    Command::SetPayoutAddress {
        account,
        address: address(),
    }
}

fn withdraw(account: AccountId, amount: &str) -> Command {
    Command::RequestWithdrawal {
        account,
        amount: amt(amount),
    }
}

fn open(min_payout: &str) -> Command {
    Command::OpenSettlement {
        min_payout: amt(min_payout),
        max_payouts: 100,
    }
}

fn confirm(batch: u64) -> Command {
    Command::ConfirmSettlement {
        batch: SettlementId(batch),
        tx_hash: TxHash([7; 32]),
        height: 42,
    }
}

fn fail(batch: u64) -> Command {
    Command::FailSettlement {
        batch: SettlementId(batch),
        reason: FailureReason::new("insufficient funds").unwrap(),
    }
}

fn payout(account: AccountId, amount: &str, from_available: &str) -> SettlementPayout {
    SettlementPayout {
        account,
        address: address(),
        amount: amt(amount),
        from_available: amt(from_available),
    }
}

fn opened(out: &crate::support::Outcome) -> Vec<SettlementPayout> {
    out.events
        .iter()
        .find_map(|e| match e {
            Event::SettlementOpened { payouts, .. } => Some(payouts.clone()),
            _ => None,
        })
        .expect("a batch opened")
}

/// The buyer funded, the provider earned 18 from a lease (20 charged, 10% fee).
fn provider_with_earnings() -> Scenario {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 4));
    s.when(bid(BUYER, 1, "2.00", 4).hours(10));
    s.when(end(BUYER, 1, "2.5")).accepted();
    s
}

#[test]
fn a_chain_deposit_is_credited_once_per_transaction_message() {
    let mut s = Scenario::given(market_with_buyers());
    let deposit = |msg_index| Command::ChainDeposit {
        account: BUYER,
        amount: amt("25"),
        tx_hash: TxHash([1; 32]),
        msg_index,
    };
    s.when(deposit(0)).accepted();
    s.when(deposit(0))
        .then_rejected(Rejection::DuplicateDeposit {
            tx_hash: TxHash([1; 32]),
            msg_index: 0,
        });
    s.when(deposit(1)).accepted();
    assert_eq!(s.engine.balance(BUYER).available, amt("1050"));
    s.when(chain_deposit(AccountId::MARKET, "1", 2))
        .then_rejected(Rejection::ReservedAccount {
            account: AccountId::MARKET,
        });
}

#[test]
fn a_withdrawal_needs_a_payout_address_and_the_funds() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(withdraw(BUYER, "10"))
        .then_rejected(Rejection::NoPayoutAddress { account: BUYER });
    s.when(set_address(BUYER)).accepted();
    s.when(withdraw(BUYER, "1000.000001"))
        .then_rejected_with(ErrorCode::InsufficientFunds);
    s.when(withdraw(BUYER, "0"))
        .then_rejected_with(ErrorCode::NonPositiveAmount);
    s.when(withdraw(BUYER, "300")).accepted();
    let b = s.engine.balance(BUYER);
    assert_eq!((b.available, b.settling), (amt("700"), amt("300")));
}

#[test]
fn a_batch_pays_requested_withdrawals_and_earnings_above_the_minimum() {
    let mut s = provider_with_earnings();
    for account in [BUYER, BUYER2, PROVIDER] {
        s.when(set_address(account)).accepted();
    }
    s.when(withdraw(BUYER, "100")).accepted();
    // BUYER2's available balance is not earnings: it is never paid out unasked.
    let out = s.when(open("5"));
    assert_eq!(
        opened(&out),
        vec![payout(BUYER, "100", "0"), payout(PROVIDER, "18", "18")]
    );
    assert_eq!(s.engine.balance(PROVIDER).available, amt("0"));
    assert_eq!(s.engine.balance(PROVIDER).settling, amt("18"));
    s.when(open("5"))
        .then_rejected(Rejection::SettlementInProgress {
            batch: SettlementId(1),
        });
    s.when(confirm(2))
        .then_rejected(Rejection::SettlementNotOpen {
            batch: SettlementId(2),
        });
    s.when(confirm(1)).accepted();
    assert_eq!(s.engine.balance(PROVIDER).settling, amt("0"));
    assert_eq!(s.engine.balance(BUYER).settling, amt("0"));
    // 2000 deposited, 118 left on chain.
    assert_eq!(s.engine.total_money(), micros("1882"));
    s.when(confirm(1))
        .then_rejected(Rejection::SettlementNotOpen {
            batch: SettlementId(1),
        });
    s.when(open("5")).then_rejected(Rejection::NothingToSettle);
    assert!(s.engine.audit().is_empty(), "{:?}", s.engine.audit());
}

#[test]
fn earnings_below_the_minimum_wait_and_a_failed_batch_returns_everything() {
    let mut s = provider_with_earnings();
    s.when(set_address(PROVIDER)).accepted();
    s.when(open("18.000001"))
        .then_rejected(Rejection::NothingToSettle);
    s.when(open("18")).accepted();
    s.when(fail(1)).accepted();
    let p = s.engine.balance(PROVIDER);
    assert_eq!((p.available, p.settling), (amt("18"), amt("0")));
    assert_eq!(s.engine.total_money(), micros("2000"));
    // Still owed: the next batch pays it.
    let out = s.when(open("1"));
    assert_eq!(opened(&out), vec![payout(PROVIDER, "18", "18")]);
    assert!(matches!(
        s.when(confirm(2)).events.last(),
        Some(Event::SettlementConfirmed {
            batch: SettlementId(2),
            height: 42,
            ..
        })
    ));
}

#[test]
fn earnings_spent_on_bids_are_not_paid_out() {
    let mut s = provider_with_earnings();
    s.when(set_address(PROVIDER)).accepted();
    // The provider buys with 10 of its 18.
    s.when(bid(PROVIDER, 2, "1.00", 1).hours(10)).accepted();
    let out = s.when(open("1"));
    assert_eq!(opened(&out), vec![payout(PROVIDER, "8", "8")]);
}

#[test]
fn a_batch_holds_at_most_max_payouts_and_the_rest_wait() {
    let mut s = Scenario::given(market_with_buyers());
    for account in [BUYER, BUYER2] {
        s.when(set_address(account)).accepted();
        s.when(withdraw(account, "1")).accepted();
    }
    s.when(Command::OpenSettlement {
        min_payout: Amount::ZERO,
        max_payouts: 0,
    })
    .then_rejected(Rejection::BadBatchSize { max_payouts: 0 });
    let first = s.when(Command::OpenSettlement {
        min_payout: Amount::ZERO,
        max_payouts: 1,
    });
    assert_eq!(opened(&first), vec![payout(BUYER, "1", "0")]);
    s.when(confirm(1)).accepted();
    let second = s.when(open("0"));
    assert_eq!(opened(&second), vec![payout(BUYER2, "1", "0")]);
}

#[test]
fn settlement_state_survives_a_snapshot() {
    let mut s = provider_with_earnings();
    s.when(set_address(PROVIDER)).accepted();
    s.when(chain_deposit(BUYER, "5", 3)).accepted();
    s.when(open("1")).accepted();
    let restored = matching_engine::Engine::restore(&s.engine.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), s.engine.state_hash());
    assert_eq!(
        restored
            .open_settlement_batch()
            .map(|(id, p)| (id, p.to_vec())),
        Some((SettlementId(1), vec![payout(PROVIDER, "18", "18")]))
    );
    s.engine = restored;
    s.when(chain_deposit(BUYER, "5", 3))
        .then_rejected_with(ErrorCode::DuplicateDeposit);
}

#[test]
fn money_on_its_way_out_still_counts_toward_the_accounts_limit() {
    let mut s = Scenario::given(limit_markets());
    s.when(set_address(BUYER)).accepted();
    s.when(deposit(BUYER, MAX)).accepted();
    s.when(withdraw(BUYER, MAX)).accepted();
    // Settling money comes back if its batch fails, so it leaves no room.
    s.when(deposit(BUYER, "0.000001"))
        .then_rejected(Rejection::AmountOverflow);
    s.when(chain_deposit(BUYER, "1", 1))
        .then_rejected(Rejection::AmountOverflow);
    s.when(open("0")).accepted();
    s.when(fail(1)).accepted();
    assert_eq!(s.engine.balance(BUYER).available, amt(MAX));
    s.when(withdraw(BUYER, MAX)).accepted();
    assert_eq!(opened(&s.when(open("0"))), vec![payout(BUYER, MAX, "0")]);
    s.when(confirm(2)).accepted();
    assert_eq!(s.engine.total_money(), 0);
    s.when(deposit(BUYER, MAX)).accepted();
}

#[test]
fn owed_earnings_past_the_limit_wait_until_a_withdrawal_settles_them() {
    let mut s = Scenario::given(limit_markets());
    // The provider earns BIG (lease 1) and spends it on a lease from another provider
    // (lease 2): its account is empty, yet BIG is still owed to it as earnings.
    s.when(deposit(BUYER, BIG)).accepted();
    s.when(ask(PROVIDER, 1, BIG, 1)).accepted();
    s.when(bid(BUYER, 1, BIG, 1)).accepted();
    s.when(end(BUYER, 1, "1")).accepted();
    s.when(ask(PROVIDER2, 1, BIG, 1)).accepted();
    s.when(bid(PROVIDER, 2, BIG, 1)).accepted();
    s.when(end(PROVIDER, 2, "1")).accepted();
    assert_eq!(
        s.engine.balance(PROVIDER),
        matching_engine::Balance::default()
    );
    // Another BIG earned (lease 3) would be owed past the range.
    s.when(deposit(BUYER2, BIG)).accepted();
    s.when(ask(PROVIDER, 3, BIG, 1)).accepted();
    s.when(bid(BUYER2, 1, BIG, 1)).accepted();
    s.when(end(BUYER2, 3, "1"))
        .then_rejected(Rejection::AmountOverflow);
    // A withdrawal request settles what is owed against what is there: nothing.
    s.when(set_address(PROVIDER)).accepted();
    s.when(deposit(PROVIDER, "1")).accepted();
    s.when(withdraw(PROVIDER, "1")).accepted();
    s.when(end(BUYER2, 3, "1")).accepted();
    assert_eq!(
        opened(&s.when(open("0"))),
        vec![payout(PROVIDER, "5000000000001", BIG)]
    );
    assert_eq!(s.engine.total_money(), 2 * micros(BIG) + micros("1"));
}
