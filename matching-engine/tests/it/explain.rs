//! Why did my order not match?

use contract::{Exclusion, OrderId, Reputation, Timestamp};

use crate::support::*;

#[test]
fn a_resting_bid_lists_each_better_priced_ask_and_what_excluded_it() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "1.50", 4).in_region("us-east")); // 1
    s.when(ask(PROVIDER, 2, "1.60", 4).vram(48)); // 2
    s.when(ask(PROVIDER2, 1, "1.70", 2)); // 3
    s.when(ask(PROVIDER2, 2, "1.80", 8).until(T0 + 3 * HOUR)); // 4
    s.when(ask(PROVIDER2, 3, "2.50", 8)); // 5: priced above the bid, not listed
    s.when(
        bid(BUYER, 1, "2.00", 8)
            .hours(4)
            .regions(&["eu-west"])
            .min_vram(80)
            .single_node(),
    ); // 6
    let why = s.engine.explain(OrderId(6), 10).unwrap();
    let reasons: Vec<_> = why
        .skipped
        .iter()
        .map(|k| (k.order_id.0, k.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (
                1,
                Exclusion::RegionNotAllowed {
                    ask: region("us-east")
                }
            ),
            (
                2,
                Exclusion::VramTooLow {
                    ask_gb: 48,
                    min_gb: 80
                }
            ),
            (
                3,
                Exclusion::NodeTooSmall {
                    ask_gpus: 2,
                    needed: 8
                }
            ),
            (
                4,
                Exclusion::NotAvailableLongEnough {
                    available_until: Timestamp(T0 + 3 * HOUR),
                    needed_until: Timestamp(T0 + 8 + 4 * HOUR),
                }
            ),
        ]
    );
    assert!(!why.truncated);
    assert_eq!(s.engine.explain(OrderId(6), 2).unwrap().skipped.len(), 2);
    assert!(s.engine.explain(OrderId(6), 2).unwrap().truncated);
}

#[test]
fn a_resting_ask_lists_the_bids_that_would_pay_its_price() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(bid(BUYER, 1, "3.00", 2).min_reputation(700)); // 1
    s.when(ask(PROVIDER, 1, "2.00", 2)); // 2
    let why = s.engine.explain(OrderId(2), 10).unwrap();
    assert_eq!(why.skipped.len(), 1);
    assert_eq!(
        why.skipped[0].reason,
        Exclusion::ReputationTooLow {
            ask: Reputation::MIN,
            min: Reputation::new(700).unwrap()
        }
    );
    assert!(s.engine.explain(OrderId(9), 10).is_err());
}
