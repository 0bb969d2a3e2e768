//! Order types, priority, cancel and amend.

use contract::{
    CancelReason, ClientOrderId, Command, Event, Gpus, MarketId, OrderId, Rejection, TimeInForce,
    Timestamp,
};

use crate::support::*;

#[test]
fn a_crossing_ask_fills_a_resting_bid_at_the_bid_price() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(bid(BUYER, 1, "2.50", 4)).then_fills(&[]);
    s.when(ask(PROVIDER, 1, "2.00", 4))
        .then_fills(&[(1, 2, 4, "2.50")]);
    assert!(s.engine.order(OrderId(1)).is_none() && s.engine.order(OrderId(2)).is_none());
}

#[test]
fn a_bid_takes_the_best_price_first_then_the_oldest_order() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.10", 2));
    s.when(ask(PROVIDER2, 1, "2.00", 2));
    s.when(ask(PROVIDER, 2, "2.00", 2));
    s.when(bid(BUYER, 1, "2.10", 5)).then_fills(&[
        (4, 2, 2, "2.00"),
        (4, 3, 2, "2.00"),
        (4, 1, 1, "2.10"),
    ]);
    assert_eq!(s.engine.order(OrderId(1)).unwrap().remaining, 1);
}

#[test]
fn a_bid_fills_partially_across_providers_and_rests_the_rest() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 3));
    s.when(ask(PROVIDER2, 1, "2.05", 2));
    s.when(bid(BUYER, 1, "2.05", 8))
        .then_fills(&[(3, 1, 3, "2.00"), (3, 2, 2, "2.05")]);
    let rest = s.engine.order(OrderId(3)).unwrap();
    assert_eq!((rest.remaining, rest.filled), (3, 5));
}

#[test]
fn ioc_fills_what_it_can_and_cancels_the_rest() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 3));
    s.when(bid(BUYER, 1, "2.00", 5).tif(TimeInForce::Ioc))
        .then_fills(&[(2, 1, 3, "2.00")])
        .then_cancels(&[(2, CancelReason::ImmediateRemainder)]);
    assert!(s.engine.order(OrderId(2)).is_none());
    assert_eq!(s.engine.balance(BUYER).held, amt("0"));
}

#[test]
fn ioc_with_nothing_to_take_is_accepted_then_cancelled() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(bid(BUYER, 1, "2.00", 5).tif(TimeInForce::Ioc))
        .then_fills(&[])
        .then_cancels(&[(1, CancelReason::ImmediateRemainder)]);
}

#[test]
fn fill_or_kill_fills_completely_or_is_rejected_without_a_trace() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 3));
    s.when(bid(BUYER, 1, "2.00", 4).tif(TimeInForce::Fok))
        .then_rejected(Rejection::FillOrKillUnfilled);
    // The rejected order consumed neither an order id nor its client id.
    s.when(bid(BUYER, 1, "2.00", 3).tif(TimeInForce::Fok))
        .then_fills(&[(2, 1, 3, "2.00")]);
}

#[test]
fn post_only_rests_or_is_rejected_if_it_would_trade() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 3));
    s.when(bid(BUYER, 1, "2.00", 1).post_only())
        .then_rejected(Rejection::PostOnlyWouldTrade);
    s.when(bid(BUYER, 1, "1.99", 1).post_only()).then_fills(&[]);
    assert!(s.engine.order(OrderId(2)).is_some());
}

#[test]
fn gtt_orders_expire_with_the_first_command_at_or_after_their_time() {
    let mut s = Scenario::given(market_with_buyers());
    let expires = T0 + 10_000;
    s.when(bid(BUYER, 1, "2.00", 2).tif(TimeInForce::Gtt {
        expires_at: Timestamp(expires),
    }));
    s.at(expires - 1).when(Command::Tick).then_cancels(&[]);
    s.at(expires)
        .when(Command::Tick)
        .then_cancels(&[(1, CancelReason::Expired)]);
    assert_eq!(s.engine.balance(BUYER).held, amt("0"));
    s.when(bid(BUYER, 2, "2.00", 2).tif(TimeInForce::Gtt {
        expires_at: Timestamp(expires),
    }))
    .then_rejected(Rejection::Expired {
        expires_at: Timestamp(expires),
        now: Timestamp(expires + 1),
    });
}

#[test]
fn an_expired_order_is_gone_before_the_command_that_passes_its_time() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 2).tif(TimeInForce::Gtt {
        expires_at: Timestamp(T0 + 100),
    }));
    let out = s.at(T0 + 100).when(bid(BUYER, 1, "2.00", 2));
    out.then_fills(&[])
        .then_cancels(&[(1, CancelReason::Expired)]);
}

#[test]
fn an_ask_leaves_the_book_when_it_can_no_longer_fit_an_hour() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 2).until(T0 + 3 * HOUR));
    s.at(T0 + 2 * HOUR)
        .when(Command::Tick)
        .then_cancels(&[(1, CancelReason::Expired)]);
    s.when(ask(PROVIDER, 2, "2.00", 2).until(T0 + 2 * HOUR + HOUR / 2))
        .then_rejected_with(ErrorCode::AvailabilityTooShort);
}

#[test]
fn cancel_releases_the_hold_and_checks_the_owner() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(bid(BUYER, 1, "2.00", 5).hours(10));
    assert_eq!(s.engine.balance(BUYER).held, amt("100"));
    s.when(cancel(BUYER2, 1))
        .then_rejected(Rejection::NotOwner {
            order_id: OrderId(1),
        });
    s.when(cancel(BUYER, 99))
        .then_rejected(Rejection::UnknownOrder {
            order_id: OrderId(99),
        });
    s.when(cancel(BUYER, 1))
        .then_cancels(&[(1, CancelReason::Requested)]);
    assert_eq!(s.engine.balance(BUYER).held, amt("0"));
    assert_eq!(s.engine.balance(BUYER).available, amt("1000"));
    s.when(cancel(BUYER, 1))
        .then_rejected(Rejection::UnknownOrder {
            order_id: OrderId(1),
        });
}

#[test]
fn a_smaller_quantity_keeps_priority_and_a_new_price_loses_it() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 4)); // order 1
    s.when(ask(PROVIDER2, 1, "2.00", 4)); // order 2
    s.when(amend(PROVIDER, 1, None, Some(2))).accepted();
    s.when(bid(BUYER, 1, "2.00", 1))
        .then_fills(&[(3, 1, 1, "2.00")]);
    // Same price, but a re-priced order goes to the back.
    s.when(amend(PROVIDER, 1, Some("2.01"), None)).accepted();
    s.when(amend(PROVIDER, 1, Some("2.00"), None)).accepted();
    s.when(bid(BUYER, 2, "2.00", 1))
        .then_fills(&[(4, 2, 1, "2.00")]);
    // A larger quantity loses priority too.
    s.when(amend(PROVIDER2, 2, None, Some(6))).accepted();
    s.when(bid(BUYER, 3, "2.00", 1))
        .then_fills(&[(5, 1, 1, "2.00")]);
}

#[test]
fn an_amend_that_crosses_trades_and_an_amend_must_change_something() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 4)); // 1
    s.when(bid(BUYER, 1, "1.90", 4)); // 2
    s.when(amend(BUYER, 2, Some("1.90"), Some(4)))
        .then_rejected(Rejection::NothingToAmend);
    s.when(amend(BUYER, 2, Some("2.10"), Some(3)))
        .then_fills(&[(2, 1, 3, "2.00")]);
    assert_eq!(s.engine.balance(BUYER).held, amt("0"));
    assert_eq!(s.engine.order(OrderId(1)).unwrap().remaining, 1);
}

#[test]
fn an_amend_cannot_go_to_or_below_what_has_filled() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "2.00", 2));
    s.when(bid(BUYER, 1, "2.00", 5)); // order 2, 2 filled
    s.when(amend(BUYER, 2, None, Some(2)))
        .then_rejected(Rejection::AmendBelowFilled {
            filled: 2,
            requested: Gpus::new(2).unwrap(),
        });
    s.when(amend(BUYER, 2, None, Some(3))).accepted();
    assert_eq!(s.engine.order(OrderId(2)).unwrap().remaining, 1);
    assert_eq!(s.engine.balance(BUYER).held, amt("2"));
}

#[test]
fn a_client_order_id_is_used_once_per_account() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(bid(BUYER, 7, "1.00", 1)).accepted();
    s.when(bid(BUYER, 7, "1.00", 1))
        .then_rejected(Rejection::DuplicateClientOrderId {
            client_id: ClientOrderId(7),
        });
    // Still used after the order is gone: a late retry must not place a second order.
    s.when(cancel(BUYER, 1)).accepted();
    s.when(bid(BUYER, 7, "1.00", 1))
        .then_rejected_with(ErrorCode::DuplicateClientOrderId);
    s.when(bid(BUYER2, 7, "1.00", 1)).accepted();
}

#[test]
fn self_trades_cancel_the_resting_order_and_the_taker_carries_on() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(BUYER, 1, "2.00", 2)); // 1: the buyer also sells
    s.when(ask(PROVIDER, 1, "2.01", 2)); // 2
    s.when(bid(BUYER, 2, "2.01", 2))
        .then_cancels(&[(1, CancelReason::SelfTrade)])
        .then_fills(&[(3, 2, 2, "2.01")]);
}

#[test]
fn invalid_orders_are_rejected_with_their_reason() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(bid(BUYER, 1, "2.005", 1))
        .then_rejected(Rejection::PriceOffTick {
            price: px("2.005"),
            tick: px("0.01"),
        });
    s.when(bid(BUYER, 1, "2.00", 1).market("B200-192GB"))
        .then_rejected(Rejection::UnknownMarket {
            market: MarketId::parse("B200-192GB").unwrap(),
        });
    s.when(bid(BUYER, 1, "2.00", 2).min_fill(3))
        .then_rejected_with(ErrorCode::MinFillAboveQuantity);
    s.when(bid(contract::AccountId::MARKET, 1, "2.00", 1))
        .then_rejected_with(ErrorCode::ReservedAccount);
    s.when(Command::CreateMarket {
        market: h100(),
        tick: px("0.01"),
        fee: contract::FeeRate::new(0).unwrap(),
    })
    .then_rejected_with(ErrorCode::MarketExists);
}

#[test]
fn order_ids_are_assigned_in_acceptance_order() {
    let mut s = Scenario::given(market_with_buyers());
    let out = s.when(bid(BUYER, 1, "1.00", 1));
    assert!(matches!(
        out.events[..],
        [Event::OrderAccepted {
            order_id: OrderId(1),
            ..
        }]
    ));
}
