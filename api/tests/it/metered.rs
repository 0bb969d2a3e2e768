//! Metered leases through the API: nobody states hours. A lease ends when its buyer stops it
//! (charged to now), when its provider does (a provider failure, charged to the last healthy
//! heartbeat, and re-bid when the bid asked for it) or when the operator does; market
//! parameters; money commands retried with an idempotency key; usage accruing per charge
//! period while a lease runs.

use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use rust_decimal::Decimal;
use serde_json::json;

use super::subscriptions::{receive, subscribe};
use super::*;

const END: &str = "mutation($l: ID!) { endLease(leaseId: $l) { leaseId cause endedAt \
    chargedUntil chargedMs hoursUsed charged refunded providerEarned rebidOrderId } }";

const LEASES: &str = "{ leases { edges { node { id status bidOrder endReason closeCause \
    closeDetail chargedUntil chargedMs charged providerEarned rebidOrder rebidRefused \
    rebidChain { leaseId bidOrder depth status closeCause rebidOrder } } } } }";

const BALANCE: &str = "{ balance { available held inLease settling } }";

fn money(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("not an amount: {v}"))
        .parse()
        .unwrap()
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

/// What the engine's rule charges for `[from, to)` (ms): each piece between charge-period
/// boundaries is `floor(price_micros × gpus × ms / 3,600,000)`, and its fee
/// `floor(piece × fee_bps / 10,000)`; the totals in money.
fn charge(
    price: &str,
    gpus: i64,
    fee_bps: i64,
    (from, to): (i64, i64),
    period_ms: i64,
) -> (Decimal, Decimal) {
    let price_micros = (price.parse::<Decimal>().unwrap() * Decimal::from(1_000_000))
        .trunc()
        .to_string()
        .parse::<i128>()
        .unwrap();
    let (mut charged, mut fee, mut a) = (0i128, 0i128, from);
    while a < to {
        let b = ((a.div_euclid(period_ms) + 1) * period_ms).min(to);
        let piece = price_micros * i128::from(gpus) * i128::from(b - a) / 3_600_000;
        charged += piece;
        fee += piece * i128::from(fee_bps) / 10_000;
        a = b;
    }
    let dec = |micros: i128| Decimal::from_i128_with_scale(micros, 6);
    (dec(charged), dec(fee))
}

fn lease_rows(m: &Market, key: &str) -> Vec<Value> {
    m.projected();
    m.ok(key, LEASES, json!({}))["leases"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

/// The key of `node`: node-a's as the seed registered it.
fn register(_m: &Market, node: &str, _seed: u8) -> SigningKey {
    assert_eq!(node, "node-a", "the seed registers node-a");
    node_a_key()
}

/// Sends `node`'s signed report number `sequence` (the seeded node's 8 GPUs), which lists
/// `healthy` as its healthy leases.
fn heartbeat(m: &Market, key: &SigningKey, node: &str, sequence: u64, healthy: &[u64]) -> Value {
    let report = node_report(node, sequence, 8, healthy, &[]);
    m.ok(&m.provider, SUBMIT_REPORT, signed_report(key, &report))["submitNodeReport"].clone()
}

fn a_trader_key(m: &Market, account: u64) -> String {
    m.ok(
        &m.admin,
        &format!("mutation {{ createApiKey(role: TRADER, account: \"{account}\") {{ key }} }}"),
        json!({}),
    )["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_buyer_stopping_a_lease_pays_to_now_and_nobody_else_can_stop_it() {
    // Given a lease of 3 GPUs at 2.00 for 2 hours (cost 12.00), placed as every bid is now.
    let m = Market::start("api_stop_lease", Limits::default());
    m.seed();
    let placed = m.ok(&m.buyer, PLACE, bid_input("1201", "2.10", 3))["placeOrder"].clone();
    let lease = placed["fills"][0]["leaseId"].as_u64().unwrap();
    assert_eq!(money(&placed["fills"][0]["cost"]), Decimal::from(12));
    let before_stop = Utc::now();
    thread::sleep(Duration::from_millis(250));
    let stranger = a_trader_key(&m, 77);
    let lease_var = json!({"l": lease.to_string()});

    // When another account stops it: refused, and nothing moved.
    assert_eq!(
        m.code(Some(&stranger), END, lease_var.clone()),
        "NOT_LEASE_PARTY"
    );
    assert_eq!(
        m.ok(&m.buyer, BALANCE, json!({}))["balance"],
        json!({"available": "988.000000", "held": "0.000000", "inLease": "12.000000",
               "settling": "0.000000"})
    );

    // When the buyer stops it: charged by the engine's rule up to now, the rest refunded.
    let ended = m.ok(&m.buyer, END, lease_var.clone())["endLease"].clone();
    let after_stop = Utc::now();
    assert_eq!(ended["cause"], "buyer_stopped");
    assert_eq!(ended["rebidOrderId"], Value::Null);
    let charged_ms = ended["chargedMs"].as_i64().unwrap();
    let until = time(&ended["chargedUntil"]);
    assert_eq!(
        until,
        time(&ended["endedAt"]),
        "the buyer pays to the moment it stopped"
    );
    assert!(
        charged_ms >= 250
            && until <= after_stop
            && until - chrono::Duration::milliseconds(charged_ms)
                >= before_stop - chrono::Duration::seconds(1),
        "charged {charged_ms} ms up to {until}"
    );
    let start = until.timestamp_millis() - charged_ms;
    let (charged, fee) = charge("2.00", 3, 300, (start, until.timestamp_millis()), 3_600_000);
    assert!(charged > Decimal::ZERO);
    assert_eq!(money(&ended["charged"]), charged, "{ended}");
    assert_eq!(money(&ended["refunded"]), Decimal::from(12) - charged);
    assert_eq!(money(&ended["providerEarned"]), charged - fee);
    let balance = m.ok(&m.buyer, BALANCE, json!({}))["balance"].clone();
    assert_eq!(money(&balance["available"]), Decimal::from(1000) - charged);
    assert_eq!(money(&balance["inLease"]), Decimal::ZERO);

    // When either party stops it again: it has ended, and nothing moves.
    assert_eq!(
        m.code(Some(&m.buyer), END, lease_var.clone()),
        "LEASE_ENDED"
    );
    assert_eq!(
        m.code(Some(&m.provider), END, lease_var.clone()),
        "LEASE_ENDED"
    );
    assert_eq!(m.ok(&m.buyer, BALANCE, json!({}))["balance"], balance);

    // Client ids in the engine's own range (its re-bids') are refused.
    assert_eq!(
        m.code(
            Some(&m.buyer),
            PLACE,
            bid_input("340282366920938463444927863358058659845", "2.10", 1)
        ),
        "RESERVED_CLIENT_ORDER_ID"
    );

    // Then the lease says how it ended, as the engine charged it.
    let rows = lease_rows(&m, &m.buyer);
    let row = &rows[0];
    assert_eq!(
        (
            &row["status"],
            &row["endReason"],
            &row["closeCause"],
            &row["closeDetail"]
        ),
        (
            &json!("ended"),
            &json!("buyer_stopped"),
            &json!("buyer_stopped"),
            &Value::Null
        )
    );
    assert_eq!(row["chargedMs"].as_i64(), Some(charged_ms));
    assert_eq!(time(&row["chargedUntil"]), until);
    assert_eq!(money(&row["charged"]), charged);
    assert_eq!(row["bidOrder"], placed["orderId"]);
    assert_eq!(
        row["rebidChain"],
        json!([{"leaseId": lease, "bidOrder": placed["orderId"], "depth": 0, "status": "ended",
                "closeCause": "buyer_stopped", "rebidOrder": null}])
    );
}

#[test]
fn the_operator_ends_a_lease_with_a_reason() {
    let m = Market::start("api_admin_end", Limits::default());
    m.seed();
    let placed = m.ok(&m.buyer, PLACE, bid_input("1301", "2.10", 1))["placeOrder"].clone();
    let lease = placed["fills"][0]["leaseId"].as_u64().unwrap().to_string();
    let end = "mutation($l: ID!, $r: String!) { adminEndLease(leaseId: $l, reason: $r) { \
        cause chargedMs charged refunded } }";
    let before = m.commands();
    for (key, reason, code) in [
        (&m.buyer, "maintenance", "FORBIDDEN"),
        (&m.provider, "maintenance", "FORBIDDEN"),
        (&m.admin, "", "VALIDATION"),
        (&m.admin, "bad\u{0}reason", "VALIDATION"),
    ] {
        assert_eq!(
            m.code(Some(key), end, json!({"l": lease, "r": reason})),
            code,
            "{reason:?}"
        );
    }
    assert_eq!(m.commands(), before, "refused before the log");
    thread::sleep(Duration::from_millis(20));

    let ended =
        m.ok(&m.admin, end, json!({"l": lease, "r": "host maintenance"}))["adminEndLease"].clone();
    assert_eq!(ended["cause"], "operator");
    let charged = money(&ended["charged"]);
    assert_eq!(
        money(&ended["refunded"]),
        Decimal::from(4) - charged,
        "{ended}"
    );
    assert_eq!(
        m.code(Some(&m.admin), end, json!({"l": lease, "r": "again"})),
        "LEASE_ENDED"
    );
    let row = &lease_rows(&m, &m.buyer)[0];
    assert_eq!(
        (&row["endReason"], &row["closeCause"], &row["closeDetail"]),
        (
            &json!("operator"),
            &json!("operator"),
            &json!("host maintenance")
        )
    );
    assert_eq!(row["chargedMs"], ended["chargedMs"]);
}

#[test]
fn an_admin_configures_a_market_and_every_reader_sees_it() {
    let m = Market::start("api_configure", Limits::default());
    m.seed();
    let configure = "mutation($m: String!, $c: MarketConfigInput!) { configureMarket(market: $m, config: $c) { \
        market chargePeriodSeconds reportIntervalMs heartbeatTimeoutMs simulated bondPerGpu \
        slashShareBps modelNames } }";
    let markets =
        "{ markets { id chargePeriodSeconds heartbeatTimeoutMs reportIntervalMs configuredAt } }";
    m.projected();
    let mut seeded = m.ok(&m.buyer, markets, json!({}))["markets"].clone();
    assert!(
        seeded[0]["configuredAt"].is_string(),
        "the seed configured it"
    );
    seeded[0]["configuredAt"] = Value::Null;
    assert_eq!(
        seeded,
        json!([{"id": "H100-80GB", "chargePeriodSeconds": 3600, "heartbeatTimeoutMs": 30000,
                "reportIntervalMs": 10000, "configuredAt": null}]),
        "the defaults where the seed set nothing"
    );
    let before = m.commands();
    for (key, market, config, code) in [
        (
            &m.provider,
            "H100-80GB",
            json!({"chargePeriodSeconds": 60}),
            "FORBIDDEN",
        ),
        (
            &m.admin,
            "H100-80GB",
            json!({"chargePeriodSeconds": 7}),
            "VALIDATION",
        ),
        (
            &m.admin,
            "H100-80GB",
            json!({"reportIntervalMs": 5000, "heartbeatTimeoutMs": 1000}),
            "VALIDATION",
        ),
        (
            &m.admin,
            "H100-80GB",
            json!({"slashShareBps": 10001}),
            "VALIDATION",
        ),
        (
            &m.admin,
            "H100-80GB",
            json!({"bondPerGpu": "-1"}),
            "VALIDATION",
        ),
        (
            &m.admin,
            "H100-80GB",
            json!({"modelNames": [""]}),
            "VALIDATION",
        ),
        (&m.admin, "", json!({}), "VALIDATION"),
    ] {
        assert_eq!(
            m.code(Some(key), configure, json!({"m": market, "c": config})),
            code,
            "{config}"
        );
    }
    assert_eq!(m.commands(), before, "refused before the log");
    assert_eq!(
        m.code(
            Some(&m.admin),
            configure,
            json!({"m": "A100-40GB", "c": {}})
        ),
        "UNKNOWN_MARKET"
    );

    let config = json!({"chargePeriodSeconds": 900, "reportIntervalMs": 5000,
        "heartbeatTimeoutMs": 15000, "bondPerGpu": "2.5", "modelNames": ["NVIDIA H100 80GB HBM3"]});
    assert_eq!(
        m.ok(&m.admin, configure, json!({"m": "H100-80GB", "c": config}))["configureMarket"],
        json!({"market": "H100-80GB", "chargePeriodSeconds": 900, "reportIntervalMs": 5000,
               "heartbeatTimeoutMs": 15000, "simulated": false, "bondPerGpu": "2.500000",
               "slashShareBps": 2500, "modelNames": ["NVIDIA H100 80GB HBM3"]})
    );
    m.projected();
    let shown = m.ok(&m.buyer, markets, json!({}))["markets"][0].clone();
    assert_eq!(
        (
            &shown["chargePeriodSeconds"],
            &shown["heartbeatTimeoutMs"],
            &shown["reportIntervalMs"]
        ),
        (&json!(900), &json!(15000), &json!(5000))
    );
    assert!(shown["configuredAt"].is_string(), "{shown}");
}

#[test]
fn money_retried_with_its_idempotency_key_moves_once() {
    let m = Market::start("api_money_once", Limits::default());
    m.seed();
    let credit = "mutation($a: ID!, $m: String!, $k: String) { creditDeposit(account: $a, amount: $m, idempotencyKey: $k) { account amount replayed } }";
    let withdraw = "mutation($m: String!, $k: String) { requestWithdrawal(amount: $m, idempotencyKey: $k) { account amount replayed } }";
    let available = || money(&m.ok(&m.buyer, BALANCE, json!({}))["balance"]["available"]);
    let buyer = T_BUYER.to_string();
    assert_eq!(available(), Decimal::from(1000));

    // A deposit and its retries, in every form the key takes: one credit.
    let uuid = "3f2b8c1e-9a4d-4e6f-8b21-0c5d7e9f1a2b";
    let first =
        m.ok(&m.admin, credit, json!({"a": buyer, "m": "10", "k": uuid}))["creditDeposit"].clone();
    assert_eq!(
        first,
        json!({"account": T_BUYER, "amount": "10.000000", "replayed": false})
    );
    for retry in [uuid.to_owned(), uuid.to_uppercase()] {
        let again = m.ok(&m.admin, credit, json!({"a": buyer, "m": "10", "k": retry}))
            ["creditDeposit"]
            .clone();
        assert_eq!(
            again,
            json!({"account": T_BUYER, "amount": "10.000000", "replayed": true})
        );
    }
    assert_eq!(available(), Decimal::from(1010));
    // The same key with another amount is another request: refused.
    assert_eq!(
        m.code(
            Some(&m.admin),
            credit,
            json!({"a": buyer, "m": "11", "k": uuid})
        ),
        "IDEMPOTENCY_KEY_REUSED"
    );
    // Keys are per account: another account may use the same one.
    let other =
        m.ok(&m.admin, credit, json!({"a": "77", "m": "10", "k": uuid}))["creditDeposit"].clone();
    assert_eq!(other["replayed"], false);
    // A malformed key is refused before anything reaches the log.
    let before = m.commands();
    for bad in ["+5", " 5", "1_000", "5.0", ""] {
        assert_eq!(
            m.code(
                Some(&m.admin),
                credit,
                json!({"a": buyer, "m": "10", "k": bad})
            ),
            "VALIDATION",
            "{bad:?}"
        );
    }
    assert_eq!(m.commands(), before);
    // Without a key every request credits (as before).
    m.ok(&m.admin, credit, json!({"a": buyer, "m": "1"}));
    m.ok(&m.admin, credit, json!({"a": buyer, "m": "1"}));
    assert_eq!(available(), Decimal::from(1012));

    // A withdrawal request and its retry: one request.
    m.ok(
        &m.buyer,
        "mutation { setPayoutAddress(address: \"cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4\") }",
        json!({}),
    );
    let asked = m.ok(&m.buyer, withdraw, json!({"m": "3", "k": "42"}))["requestWithdrawal"].clone();
    assert_eq!(
        asked,
        json!({"account": T_BUYER, "amount": "3.000000", "replayed": false})
    );
    let again =
        m.ok(&m.buyer, withdraw, json!({"m": "3", "k": "0042"}))["requestWithdrawal"].clone();
    assert_eq!(again["replayed"], true);
    assert_eq!(
        m.code(Some(&m.buyer), withdraw, json!({"m": "4", "k": "42"})),
        "IDEMPOTENCY_KEY_REUSED"
    );
    // One key space for the account's deposits and withdrawals.
    assert_eq!(
        m.code(Some(&m.buyer), withdraw, json!({"m": "10", "k": uuid})),
        "IDEMPOTENCY_KEY_REUSED"
    );
    let balance = m.ok(&m.buyer, BALANCE, json!({}))["balance"].clone();
    assert_eq!(
        (money(&balance["available"]), money(&balance["settling"])),
        (Decimal::from(1009), Decimal::from(3))
    );
}

#[test]
fn a_lease_its_provider_fails_is_re_bid_and_the_buyer_follows_the_chain() {
    // Given a bid that asks to be re-bid, filled on node-a, whose node reports it healthy.
    let m = Market::start("api_rebid", Limits::default());
    m.seed();
    let node_a = register(&m, "node-a", 61);
    let mut updates = subscribe(
        &m,
        Some(&m.buyer),
        "subscription { myOrderUpdates { orderId change remaining leaseId rebidOf } }",
    );
    thread::sleep(Duration::from_millis(300));
    let mut bid = bid_input("1501", "2.10", 2);
    bid["input"]["bid"]["rebidOnFailure"] = json!(true);
    bid["input"]["bid"]["excludeNodes"] = json!([{"provider": "99", "node": "node-z"}]);
    let placed = m.ok(&m.buyer, PLACE, bid)["placeOrder"].clone();
    let (order, first) = (
        placed["orderId"].as_u64().unwrap(),
        placed["fills"][0]["leaseId"].as_u64().unwrap(),
    );
    thread::sleep(Duration::from_millis(100));
    let before_beat = Utc::now();
    assert_eq!(
        heartbeat(&m, &node_a, "node-a", 1, &[first])["duplicate"],
        false
    );
    let after_beat = Utc::now();
    thread::sleep(Duration::from_millis(200));

    // When its provider stops it: a provider failure, charged only to that heartbeat.
    let ended = m.ok(&m.provider, END, json!({"l": first.to_string()}))["endLease"].clone();
    assert_eq!(ended["cause"], "provider_stopped");
    let until = time(&ended["chargedUntil"]);
    // The report's own time (at most its arrival), to the millisecond the engine keeps.
    assert!(
        before_beat.timestamp_millis() <= until.timestamp_millis() && until <= after_beat,
        "charged to the heartbeat: {until}"
    );
    assert!(time(&ended["endedAt"]) > until);
    let charged_ms = ended["chargedMs"].as_i64().unwrap();
    assert!(charged_ms >= 100, "{ended}");
    let (charged, _) = charge(
        "2.00",
        2,
        300,
        (
            until.timestamp_millis() - charged_ms,
            until.timestamp_millis(),
        ),
        3_600_000,
    );
    assert_eq!(money(&ended["charged"]), charged);
    assert_eq!(money(&ended["refunded"]), Decimal::from(8) - charged);
    // Its unused whole hour is bid again, without the failed node: node-a's ask does not
    // take it.
    let rebid = ended["rebidOrderId"].as_u64().expect("a re-bid");
    let depth = m.ok(
        &m.buyer,
        "{ depth(market: \"H100-80GB\") { bids { price gpus } asks { gpus } } }",
        json!({}),
    )["depth"]
        .clone();
    assert_eq!(
        depth,
        json!({"bids": [{"price": "2.100000", "gpus": 2}], "asks": [{"gpus": 6}]})
    );

    // Then an ask on another node fills the re-bid.
    m.prove_node("node-b", &SigningKey::from_bytes(&[62; 32]), 2);
    let mut ask = ask_input("1502", "2.05", 2);
    ask["input"]["ask"]["node"] = json!("node-b");
    let filled = m.ok(&m.provider, PLACE, ask)["placeOrder"].clone();
    let second = filled["fills"][0]["leaseId"].as_u64().unwrap();
    assert_eq!(filled["fills"][0]["counterOrderId"].as_u64(), Some(rebid));
    assert_eq!(filled["fills"][0]["hours"], 1, "{filled}");

    // The buyer's feed shows the chain as it happened.
    let seen: Vec<Value> = (0..5)
        .map(|_| receive(&mut updates)["payload"]["data"]["myOrderUpdates"].clone())
        .collect();
    assert_eq!(
        seen,
        vec![
            json!({"orderId": order, "change": "accepted", "remaining": 2, "leaseId": null, "rebidOf": null}),
            json!({"orderId": order, "change": "filled", "remaining": 0, "leaseId": first, "rebidOf": null}),
            json!({"orderId": rebid, "change": "rebid", "remaining": 0, "leaseId": first, "rebidOf": first}),
            json!({"orderId": rebid, "change": "accepted", "remaining": 2, "leaseId": null, "rebidOf": first}),
            json!({"orderId": rebid, "change": "filled", "remaining": 0, "leaseId": second, "rebidOf": null}),
        ]
    );

    // And the read models link lease → failure → re-bid → new lease, both ways.
    let rows = lease_rows(&m, &m.buyer);
    let (failed, replacement) = (&rows[0], &rows[1]);
    assert_eq!(
        (
            &failed["endReason"],
            &failed["closeCause"],
            &failed["rebidOrder"],
            &failed["rebidRefused"]
        ),
        (
            &json!("provider_failed"),
            &json!("provider_stopped"),
            &json!(rebid),
            &Value::Null
        )
    );
    assert_eq!(time(&failed["chargedUntil"]), until);
    assert_eq!(
        (
            &replacement["id"],
            &replacement["bidOrder"],
            &replacement["status"]
        ),
        (&json!(second), &json!(rebid), &json!("created"))
    );
    assert_eq!(
        failed["rebidChain"],
        json!([
            {"leaseId": first, "bidOrder": order, "depth": 0, "status": "ended",
             "closeCause": "provider_stopped", "rebidOrder": rebid},
            {"leaseId": second, "bidOrder": rebid, "depth": 1, "status": "created",
             "closeCause": null, "rebidOrder": null}
        ])
    );
    let orders = m.ok(
        &m.buyer,
        "{ orders { edges { node { id hours status rebidOf } } } }",
        json!({}),
    )["orders"]["edges"]
        .clone();
    assert_eq!(
        orders,
        json!([
            {"node": {"id": order, "hours": 2, "status": "filled", "rebidOf": null}},
            {"node": {"id": rebid, "hours": 1, "status": "filled", "rebidOf": first}}
        ])
    );
    // The buyer paid the first lease's healthy time and pays the new one's cost: 2.10 (the
    // resting re-bid's price) × 2 GPUs × 1 hour.
    let balance = m.ok(&m.buyer, BALANCE, json!({}))["balance"].clone();
    assert_eq!(
        money(&balance["available"]),
        Decimal::from(1000) - charged - Decimal::new(420, 2)
    );
    assert_eq!(money(&balance["inLease"]), Decimal::new(420, 2));
}

#[test]
fn usage_accrues_per_charge_period_while_a_lease_runs_and_settles_when_it_ends() {
    // Given a market with one-second charge periods, and a lease its node reports healthy.
    let m = Market::start("api_accrued", Limits::default());
    m.seed();
    m.ok(
        &m.admin,
        "mutation { configureMarket(market: \"H100-80GB\", config: {chargePeriodSeconds: 1, \
         reportIntervalMs: 1000, heartbeatTimeoutMs: 3000, simulated: true}) { market } }",
        json!({}),
    );
    let node = register(&m, "node-a", 71);
    let placed = m.ok(&m.buyer, PLACE, bid_input("1601", "2.10", 2))["placeOrder"].clone();
    let lease = placed["fills"][0]["leaseId"].as_u64().unwrap();
    // Each heartbeat moves the engine's clock; a period's usage is final one heartbeat
    // timeout after it ends.
    for sequence in 1..=16 {
        heartbeat(&m, &node, "node-a", sequence, &[lease]);
        thread::sleep(Duration::from_millis(300));
    }
    m.projected();

    // Finance and the provider see revenue accrued and not settled; a trader may not.
    let accrued_query = "query($p: ID) { accrued(provider: $p) { provider leases lines gpuHours gross fees net since } }";
    let market = m.ok(&m.finance, accrued_query, json!({}))["accrued"].clone();
    let own = m.ok(&m.provider, accrued_query, json!({}))["accrued"].clone();
    assert_eq!(market["provider"], Value::Null);
    assert_eq!(own["provider"], T_PROVIDER);
    assert_eq!(market["leases"], 1, "{market}");
    let lines = market["lines"].as_u64().unwrap();
    assert!(lines >= 1, "{market}");
    for field in ["lines", "gross", "fees", "net", "gpuHours", "since"] {
        assert_eq!(own[field], market[field], "{field}");
    }
    let gross = money(&market["gross"]);
    assert!(gross > Decimal::ZERO);
    assert_eq!(money(&market["net"]), gross - money(&market["fees"]));
    assert_eq!(
        m.code(Some(&m.buyer), accrued_query, json!({})),
        "FORBIDDEN"
    );
    assert_eq!(
        m.code(Some(&m.provider), accrued_query, json!({"p": "12"})),
        "FORBIDDEN"
    );
    let by_provider = m.ok(
        &m.finance,
        "{ accruedByProvider { edges { node { provider gross } } } }",
        json!({}),
    );
    assert_eq!(
        by_provider["accruedByProvider"]["edges"],
        json!([{"node": {"provider": T_PROVIDER, "gross": market["gross"]}}])
    );

    // Each line is one charge period, not settled, charged by the engine's rule.
    let usage = "query($a: ID, $r: LeaseRole!) { usage(account: $a, role: $r) { edges { node { \
        leaseId chargeStart chargeEnd usageStart usageEnd gpus amount fee providerEarned settled } } } }";
    let running: Vec<Value> = m.ok(&m.buyer, usage, json!({"r": "BUYER"}))["usage"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    assert_eq!(running.len() as u64, lines);
    let mut sum = Decimal::ZERO;
    for line in &running {
        let (start, end) = (time(&line["chargeStart"]), time(&line["chargeEnd"]));
        assert_eq!((end - start).num_milliseconds(), 1_000, "{line}");
        let (from, to) = (time(&line["usageStart"]), time(&line["usageEnd"]));
        assert!(start <= from && from <= to && to <= end, "{line}");
        let (amount, fee) = charge(
            "2.00",
            2,
            300,
            (from.timestamp_millis(), to.timestamp_millis()),
            1_000,
        );
        assert_eq!(
            (money(&line["amount"]), money(&line["fee"])),
            (amount, fee),
            "{line}"
        );
        assert_eq!(line["settled"], false);
        sum += amount;
    }
    assert_eq!(sum, gross);
    // The provider's statement and the buyer's invoice show the same running usage.
    let provider_usage =
        m.ok(&m.provider, usage, json!({"r": "PROVIDER"}))["usage"]["edges"].clone();
    assert_eq!(provider_usage.as_array().map(Vec::len), Some(running.len()));
    let invoice = m.ok(&m.buyer, "{ invoices { edges { node { amount lines usage { edges { node { amount settled } } } } } } }", json!({}))["invoices"]["edges"][0]["node"].clone();
    assert_eq!(money(&invoice["amount"]), gross);
    assert_eq!(
        invoice["usage"]["edges"].as_array().map(Vec::len),
        Some(running.len())
    );
    let earning = m.ok(
        &m.provider,
        "{ earnings { edges { node { gross net usage { edges { node { providerEarned } } } } } } }",
        json!({}),
    )["earnings"]["edges"][0]["node"]
        .clone();
    assert_eq!(money(&earning["gross"]), gross);
    assert_eq!(money(&earning["net"]), money(&market["net"]));

    // When the buyer stops it, every line settles with the lease's money.
    let ended = m.ok(&m.buyer, END, json!({"l": lease.to_string()}))["endLease"].clone();
    m.projected();
    let settled = m.ok(&m.finance, accrued_query, json!({}))["accrued"].clone();
    assert_eq!(
        (&settled["leases"], &settled["lines"], &settled["since"]),
        (&json!(0), &json!(0), &Value::Null),
        "{settled}"
    );
    assert_eq!(money(&settled["gross"]), Decimal::ZERO);
    let all: Vec<Value> = m.ok(&m.buyer, usage, json!({"r": "BUYER"}))["usage"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    assert!(all.len() as u64 >= lines);
    assert!(all.iter().all(|l| l["settled"] == true), "{all:?}");
    let total: Decimal = all.iter().map(|l| money(&l["amount"])).sum();
    assert_eq!(total, money(&ended["charged"]));
}
