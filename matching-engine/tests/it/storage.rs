//! Storage charges: an hour's charge moves from the holder's available balance to the
//! market's fees, as much as is available (the rest stated unpaid), once per account and
//! hour, in order, and only for an hour that is over.

use contract::{Command, Event, Rejection, Timestamp};

use crate::support::*;

/// T0 is not on an hour: the first whole hour after it.
const H1: i64 = (T0 / HOUR + 1) * HOUR;

fn charge(account: contract::AccountId, hour: i64, amount: &str) -> Command {
    Command::ChargeStorage {
        account,
        hour: Timestamp(hour),
        bytes: 5_000_000_000,
        amount: amt(amount),
    }
}

#[test]
fn an_hour_of_storage_is_paid_once_in_order_and_never_beyond_the_balance() {
    let mut s = Scenario::given(market_with_buyers());
    // Given an hour that is over,
    s.at(H1 + HOUR + 5);
    // when its charge arrives, then the buyer pays it to the market.
    let out = s.when(charge(BUYER, H1, "2.5"));
    assert_eq!(
        out.events,
        [Event::StorageCharged {
            account: BUYER,
            hour: Timestamp(H1),
            bytes: 5_000_000_000,
            amount: amt("2.5"),
            unpaid: amt("0"),
        }]
    );
    assert_eq!(s.engine.balance(BUYER).available, amt("997.5"));
    assert_eq!(
        s.engine.balance(contract::AccountId::MARKET).available,
        amt("2.5")
    );
    assert_eq!(s.engine.storage_charged(BUYER), Some(Timestamp(H1)));

    // The same hour again, or an earlier one, is refused, also after a restart.
    s.engine = matching_engine::Engine::restore(&s.engine.snapshot()).unwrap();
    for hour in [H1, H1 - HOUR] {
        s.when(charge(BUYER, hour, "2.5"))
            .then_rejected(Rejection::StorageCharged {
                account: BUYER,
                hour: Timestamp(hour),
                last: Timestamp(H1),
            });
    }
    // An hour not over yet, or not a whole hour, is refused; so is nothing to pay, and the
    // market's own account.
    let now = s.now;
    s.when(charge(BUYER, H1 + HOUR, "1"))
        .then_rejected(Rejection::BadStorageHour {
            hour: Timestamp(H1 + HOUR),
            now: Timestamp(now),
        });
    s.when(charge(BUYER2, H1 + 1, "1"))
        .then_rejected_with(contract::ErrorCode::Validation);
    s.when(charge(BUYER2, H1, "0"))
        .then_rejected_with(contract::ErrorCode::NonPositiveAmount);
    s.when(charge(contract::AccountId::MARKET, H1, "1"))
        .then_rejected_with(contract::ErrorCode::ReservedAccount);
    // A byte count the ledger cannot hold.
    s.when(Command::ChargeStorage {
        account: BUYER2,
        hour: Timestamp(H1),
        bytes: u64::MAX,
        amount: amt("1"),
    })
    .then_rejected(Rejection::AmountOverflow);

    // A charge beyond the balance takes what is available and states the rest unpaid.
    s.at(H1 + 3 * HOUR);
    let out = s.when(charge(BUYER2, H1 + HOUR, "1500"));
    assert!(
        matches!(
            &out.events[..],
            [Event::StorageCharged { amount, unpaid, .. }]
                if *amount == amt("1000") && *unpaid == amt("500")
        ),
        "{:?}",
        out.events
    );
    assert_eq!(s.engine.balance(BUYER2).available, amt("0"));
    // An account with nothing available pays nothing, and the hour counts as charged.
    s.when(charge(BUYER2, H1 + 2 * HOUR, "1")).accepted();
    assert_eq!(
        s.engine.storage_charged(BUYER2),
        Some(Timestamp(H1 + 2 * HOUR))
    );
}
