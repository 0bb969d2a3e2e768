//! Scores reach matching: the reputation projection computes a provider's score from the log,
//! the API sends it to the engine, and a bid's `minReputation` fills against the providers
//! who earned it, with `explain` showing the scores the engine matches by.

use std::thread;
use std::time::{Duration, Instant};

use api::testing::{Market, T_PROVIDER};
use api::ApiConfig;
use serde_json::{json, Value};

use crate::{bid_input, Seed, PLACE};

const LEASES: &str = "{ leases(role: BUYER) { edges { node { id gpus price } } } }";

fn wait_for(what: &str, mut done: impl FnMut() -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bid_with_a_reputation_floor_fills_once_the_earned_score_reaches_the_engine() {
    let m = Market::start_with(
        "api_reputation",
        ApiConfig {
            reputation_every: Some(Duration::from_millis(100)),
            ..ApiConfig::default()
        },
    );
    // Given a provider whose ask the projection has scored (a new provider's prior)
    let ask_id = m.seed();
    let provider = wait_for("the engine's copy of the provider's score", || {
        let p = m.ok(
            &m.buyer,
            &format!("{{ provider(account: \"{T_PROVIDER}\") {{ score matchingScore }} }}"),
            json!({}),
        );
        p["provider"]["matchingScore"]
            .as_u64()
            .map(|_| p["provider"].clone())
    });
    assert_eq!(
        provider,
        json!({"score": 730, "matchingScore": 730}),
        "a new provider starts at the prior's 730, and the engine matches by it"
    );

    // Buyers can list the providers who meet a floor
    let listed = |min: u32| {
        m.ok(
            &m.buyer,
            &format!("{{ providers(minScore: {min}) {{ edges {{ node {{ account }} }} }} }}"),
            json!({}),
        )["providers"]["edges"]
            .clone()
    };
    assert_eq!(listed(730), json!([{"node": {"account": T_PROVIDER}}]));
    assert_eq!(listed(731), json!([]));
    assert_eq!(
        m.code(
            Some(&m.buyer),
            "{ providers(minScore: 1001) { edges { cursor } } }",
            json!({})
        ),
        "VALIDATION"
    );

    // When a buyer bids with a floor the provider meets, and one with a floor it does not
    let mut floor = bid_input("301", "2.50", 2);
    floor["input"]["bid"]["minReputation"] = json!(700);
    m.ok(&m.buyer, PLACE, floor);
    let mut high = bid_input("302", "2.50", 1);
    high["input"]["bid"]["minReputation"] = json!(900);
    m.ok(&m.buyer, PLACE, high);

    // Then the first fills at the ask's price, by the score that reached the engine
    let leases = wait_for("the lease of the bid with a floor of 700", || {
        let l = m.ok(&m.buyer, LEASES, json!({}));
        let edges = l["leases"]["edges"].as_array()?.clone();
        (!edges.is_empty()).then_some(Value::Array(edges))
    });
    assert_eq!(
        leases,
        json!([{"node": {"id": 1, "gpus": 2, "price": "2.000000"}}])
    );
    // And the second explains itself with the provider's true score
    m.projected();
    let explained = m.ok(
        &m.buyer,
        "{ orders(status: OPEN) { edges { node { clientOrderId explanation { skipped { orderId reason detail } } } } } }",
        json!({}),
    );
    assert_eq!(
        explained["orders"]["edges"][0]["node"],
        json!({"clientOrderId": "302", "explanation": {"skipped": [{"orderId": ask_id,
            "reason": "reputation_too_low", "detail": "{\"ask\":730,\"min\":900}"}]}})
    );
}
