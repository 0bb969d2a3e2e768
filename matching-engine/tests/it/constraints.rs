//! A bid's constraints against asks' attributes.

use contract::{Command, Interconnect, Reputation, Vendor};

use crate::support::*;

#[test]
fn a_bid_skips_asks_outside_its_regions_even_when_cheaper() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "1.50", 4).in_region("us-east"));
    s.when(ask(PROVIDER2, 1, "2.00", 4).in_region("eu-west"));
    s.when(bid(BUYER, 1, "2.00", 4).regions(&["eu-west", "eu-north"]))
        .then_fills(&[(3, 2, 4, "2.00")]);
}

#[test]
fn a_bid_skips_asks_with_too_little_vram_the_wrong_vendor_or_interconnect() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "1.50", 1).vram(40));
    s.when(ask(PROVIDER, 2, "1.60", 1).made_by(Vendor::Amd));
    s.when(ask(PROVIDER, 3, "1.70", 1).interconnect(Interconnect::Pcie));
    s.when(ask(PROVIDER2, 1, "1.80", 1));
    s.when(
        bid(BUYER, 1, "2.00", 1)
            .min_vram(80)
            .vendor(Vendor::Nvidia)
            .interconnects(&[Interconnect::NvLink, Interconnect::NvSwitch]),
    )
    .then_fills(&[(5, 4, 1, "1.80")]);
}

#[test]
fn a_bid_skips_providers_below_its_reputation_floor() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(Command::SetReputation {
        provider: PROVIDER2,
        score: Reputation::new(900).unwrap(),
    });
    s.when(ask(PROVIDER, 1, "1.50", 2));
    s.when(ask(PROVIDER2, 1, "1.90", 2));
    s.when(bid(BUYER, 1, "2.00", 2).min_reputation(800))
        .then_fills(&[(3, 2, 2, "1.90")]);
}

#[test]
fn a_lower_reputation_keeps_the_asks_resting_with_the_lower_score() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(Command::SetReputation {
        provider: PROVIDER,
        score: Reputation::new(900).unwrap(),
    });
    s.when(ask(PROVIDER, 1, "1.90", 2));
    s.when(ask(PROVIDER, 2, "1.95", 2));
    s.when(Command::SetReputation {
        provider: PROVIDER,
        score: Reputation::new(500).unwrap(),
    })
    .then_cancels(&[])
    .then_fills(&[]);
    // The asks now advertise 500: a bid demanding 800 rests beside them.
    s.when(bid(BUYER, 1, "2.00", 2).min_reputation(800))
        .then_fills(&[]);
    s.when(bid(BUYER, 2, "2.00", 2).min_reputation(500))
        .then_fills(&[(4, 1, 2, "1.90")]);
}

#[test]
fn a_higher_reputation_fills_the_resting_bids_that_demanded_it_at_their_prices() {
    // Given a provider's ask at 0 and two resting bids that demand more
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "1.50", 3));
    s.when(bid(BUYER, 1, "2.00", 2).min_reputation(700))
        .then_fills(&[]);
    s.when(bid(BUYER2, 1, "1.80", 2).min_reputation(900))
        .then_fills(&[]);
    // When the provider earns 750, the ask takes the bid it now satisfies, where it rests
    s.when(Command::SetReputation {
        provider: PROVIDER,
        score: Reputation::new(750).unwrap(),
    })
    .then_fills(&[(2, 1, 2, "2.00")]);
    // And when it earns 950, the rest of the ask takes the other bid's first GPU
    s.when(Command::SetReputation {
        provider: PROVIDER,
        score: Reputation::new(950).unwrap(),
    })
    .then_fills(&[(3, 1, 1, "1.80")]);
}

#[test]
fn a_post_only_ask_keeps_its_old_score_rather_than_take() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "1.50", 2).post_only());
    s.when(bid(BUYER, 1, "2.00", 2).min_reputation(700));
    s.when(Command::SetReputation {
        provider: PROVIDER,
        score: Reputation::new(750).unwrap(),
    })
    .then_fills(&[])
    .then_cancels(&[]);
    // A new ask advertises the new score and fills.
    s.when(ask(PROVIDER, 2, "1.60", 2))
        .then_fills(&[(2, 3, 2, "2.00")]);
}

#[test]
fn a_bid_only_takes_nodes_available_for_its_whole_duration() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "1.50", 2).until(T0 + 5 * HOUR));
    s.when(ask(PROVIDER2, 1, "1.90", 2).until(T0 + 50 * HOUR));
    s.when(bid(BUYER, 1, "2.00", 2).hours(10))
        .then_fills(&[(3, 2, 2, "1.90")]);
}

#[test]
fn a_single_node_bid_takes_all_its_gpus_from_one_ask() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "1.50", 4));
    s.when(ask(PROVIDER, 2, "1.60", 4));
    s.when(ask(PROVIDER2, 1, "1.90", 8));
    s.when(bid(BUYER, 1, "2.00", 8).single_node())
        .then_fills(&[(4, 3, 8, "1.90")]);
}

#[test]
fn a_resting_single_node_bid_waits_for_a_node_large_enough() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(bid(BUYER, 1, "2.00", 8).single_node()); // 1
    s.when(ask(PROVIDER, 1, "1.50", 4)).then_fills(&[]);
    s.when(ask(PROVIDER2, 1, "1.90", 8))
        .then_fills(&[(1, 3, 8, "2.00")]);
}

#[test]
fn shrinking_a_single_node_bid_lets_it_take_a_node_that_now_fits() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(bid(BUYER, 1, "2.00", 8).single_node()); // 1
    s.when(ask(PROVIDER, 1, "1.50", 4)); // 2
    s.when(amend(BUYER, 1, None, Some(4)))
        .then_fills(&[(1, 2, 4, "1.50")]);
}

#[test]
fn all_or_none_combines_asks_on_arrival_or_takes_nothing() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "1.50", 4));
    s.when(ask(PROVIDER2, 1, "1.60", 3));
    s.when(bid(BUYER, 1, "2.00", 8).all_or_none())
        .then_fills(&[]);
    s.when(bid(BUYER2, 1, "2.00", 7).all_or_none())
        .then_fills(&[(4, 1, 4, "1.50"), (4, 2, 3, "1.60")]);
    // The resting all-or-none bid is only filled by one ask covering all of it.
    s.when(ask(PROVIDER, 2, "1.50", 7)).then_fills(&[]);
    s.when(ask(PROVIDER2, 2, "1.50", 8))
        .then_fills(&[(3, 6, 8, "2.00")]);
}

#[test]
fn no_lease_is_smaller_than_the_minimum_fill_and_no_smaller_remainder_is_left() {
    let mut s = Scenario::given(market_with_buyers());
    s.when(ask(PROVIDER, 1, "1.50", 1)); // 1: too small
    s.when(ask(PROVIDER2, 1, "1.60", 5)); // 2: 4 of its 5, so that 2 remain
    s.when(ask(PROVIDER2, 2, "1.70", 4)); // 3
    s.when(bid(BUYER, 1, "2.00", 6).min_fill(2))
        .then_fills(&[(4, 2, 4, "1.60"), (4, 3, 2, "1.70")]);
    // An amend may not leave less than the minimum fill either.
    s.when(bid(BUYER, 2, "1.00", 6).min_fill(3)); // 5
    s.when(amend(BUYER, 5, None, Some(2)))
        .then_rejected_with(ErrorCode::MinFillAboveQuantity);
}
