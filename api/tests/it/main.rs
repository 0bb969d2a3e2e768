//! The API against a real market: the engine runner and the three projectors on threads over
//! an embedded log, a real Postgres database, and the actix server on a loopback port, driven
//! over HTTP.

mod blobs;
mod dashboard;
mod fuzz;
mod hardening;
mod introspection;
mod metered;
mod proving;
mod render;
mod reports;
mod reputation;
mod roles;
mod subscriptions;

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use api::auth;
use api::testing::{
    node_a_key, node_report, signed_report, Market, SUBMIT_REPORT, T_BUYER, T_PROVIDER,
};
use api::Limits;
use serde_json::{json, Value};

/// The H100 market (proven: simulated, `sim H100` its class), money for the buyer, node-a
/// registered and reporting 8 GPUs (report 0), and one ask of 8 GPUs at 2.00 on it.
trait Seed {
    fn seed(&self) -> u64;
}

impl Seed for Market {
    fn seed(&self) -> u64 {
        self.ok(
            &self.admin,
            "mutation { createMarket(market: \"H100-80GB\", tick: \"0.01\", feeBps: 300) }",
            json!({}),
        );
        self.ok(
            &self.admin,
            &format!("mutation {{ creditDeposit(account: \"{T_BUYER}\", amount: \"1000\") {{ amount }} }}"),
            json!({}),
        );
        self.prove_market();
        self.prove_node("node-a", &node_a_key(), 8);
        let ask = self.ok(&self.provider, PLACE, ask_input("101", "2.00", 8));
        ask["placeOrder"]["orderId"].as_u64().unwrap()
    }
}

const PLACE: &str = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { \
    orderId clientOrderId status remaining replayed cancelReason \
    fills { leaseId price gpus hours cost counterOrderId } } }";

fn bid_input(client: &str, price: &str, gpus: u32) -> Value {
    json!({"input": {"market": "H100-80GB", "clientOrderId": client, "price": price,
        "gpus": gpus, "bid": {"hours": 2, "regions": ["eu-west"]}}})
}

fn ask_input(client: &str, price: &str, gpus: u32) -> Value {
    json!({"input": {"market": "H100-80GB", "clientOrderId": client, "price": price,
        "gpus": gpus, "ask": {"node": "node-a", "vendor": "nvidia", "vramGb": 80,
        "interconnect": "nvlink", "region": "eu-west",
        "availableUntil": "2099-01-01T00:00:00Z"}}})
}

#[test]
fn the_published_schema_is_the_code_s_schema() {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "schema.graphql"]
        .iter()
        .collect();
    let sdl = api::schema::sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &sdl).unwrap();
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == sdl,
        "api/schema.graphql differs from the code's schema: run \
         `UPDATE_SCHEMA=1 cargo nextest run -p api the_published_schema` and review the diff"
    );
}

#[test]
fn a_bid_fills_against_an_ask_and_every_view_shows_it() {
    let m = Market::start("api_trade", Limits::default());
    let ask_id = m.seed();

    // Depth comes from the replica at once.
    let depth = m.ok(
        &m.buyer,
        "{ depth(market: \"H100-80GB\") { asks { price gpus orders } bids { price } } }",
        json!({}),
    );
    assert_eq!(
        depth["depth"]["asks"],
        json!([{"price": "2.000000", "gpus": 8, "orders": 1}])
    );

    let placed = m.ok(&m.buyer, PLACE, bid_input("201", "2.10", 3))["placeOrder"].clone();
    assert_eq!(placed["status"], "FILLED", "{placed}");
    assert_eq!(placed["remaining"], 0);
    assert_eq!(placed["replayed"], false);
    let fill = &placed["fills"][0];
    assert_eq!(
        (
            fill["price"].as_str(),
            fill["gpus"].as_u64(),
            fill["cost"].as_str()
        ),
        (Some("2.000000"), Some(3), Some("12.000000"))
    );
    assert_eq!(fill["counterOrderId"].as_u64(), Some(ask_id));

    let balance = m.ok(
        &m.buyer,
        "{ balance { available held inLease } }",
        json!({}),
    );
    assert_eq!(
        balance["balance"],
        json!({"available": "988.000000", "held": "0.000000", "inLease": "12.000000"})
    );

    m.projected();
    let orders = m.ok(
        &m.buyer,
        "{ orders { edges { cursor node { id clientOrderId side status remaining \
         history { change remaining } } } pageInfo { hasNextPage } } }",
        json!({}),
    );
    let edges = orders["orders"]["edges"].as_array().unwrap();
    assert_eq!(
        edges.len(),
        1,
        "the buyer sees only its own orders: {orders}"
    );
    assert_eq!(edges[0]["node"]["status"], "filled");
    assert_eq!(edges[0]["node"]["clientOrderId"], "201");
    assert_eq!(
        edges[0]["node"]["history"],
        json!([{"change": "accepted", "remaining": 3}, {"change": "filled", "remaining": 0}])
    );

    let leases = m.ok(
        &m.provider,
        "{ leases(role: PROVIDER) { edges { node { id buyer provider gpus price status } } } }",
        json!({}),
    );
    assert_eq!(
        leases["leases"]["edges"][0]["node"],
        json!({"id": 1, "buyer": T_BUYER, "provider": T_PROVIDER, "gpus": 3, "price": "2.000000",
               "status": "created"})
    );
    let trades = m.ok(
        &m.buyer,
        "{ trades(market: \"H100-80GB\") { edges { node { leaseId gpus taker } } } }",
        json!({}),
    );
    assert_eq!(
        trades["trades"]["edges"],
        json!([{"node": {"leaseId": 1, "gpus": 3, "taker": "bid"}}])
    );
    let journal = m.ok(
        &m.finance,
        &format!("{{ journal(account: \"{T_BUYER}\") {{ edges {{ node {{ kind postings {{ account bucket amount }} }} }} }} }}"),
        json!({}),
    );
    let kinds: Vec<&str> = journal["journal"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["deposited", "order_accepted", "lease_created"]);

    // The resting rest of the ask explains nothing (it is an ask nobody bids for); a bid
    // from another region explains why it does not match the ask.
    let resting = m.ok(
        &m.buyer,
        PLACE,
        json!({"input": {"market": "H100-80GB",
        "clientOrderId": "202", "price": "2.50", "gpus": 1,
        "bid": {"hours": 1, "regions": ["us-east"]}}}),
    )["placeOrder"]
        .clone();
    assert_eq!(resting["status"], "OPEN");
    m.projected();
    let explained = m.ok(
        &m.buyer,
        "{ orders(status: OPEN) { edges { node { id explanation { skipped { orderId reason detail } truncated } } } } }",
        json!({}),
    );
    assert_eq!(
        explained["orders"]["edges"][0]["node"]["explanation"],
        json!({"skipped": [{"orderId": ask_id, "reason": "region_not_allowed",
                "detail": "{\"ask\":\"eu-west\"}"}], "truncated": false})
    );
}

#[test]
fn a_retried_order_returns_the_first_answer_and_places_nothing_more() {
    let m = Market::start("api_retry", Limits::default());
    m.seed();
    let first = m.ok(&m.buyer, PLACE, bid_input("7007", "1.50", 2))["placeOrder"].clone();
    assert_eq!(first["status"], "OPEN");
    let again = m.ok(&m.buyer, PLACE, bid_input("7007", "1.50", 2))["placeOrder"].clone();
    assert_eq!(again["orderId"], first["orderId"]);
    assert_eq!(again["replayed"], true);
    assert_eq!(again["status"], "OPEN");
    let depth = m.ok(
        &m.buyer,
        "{ depth(market: \"H100-80GB\") { bids { gpus orders } } }",
        json!({}),
    );
    assert_eq!(depth["depth"]["bids"], json!([{"gpus": 2, "orders": 1}]));
}

/// Everything of an answer but what a replay changes.
fn decided(answer: &Value) -> Value {
    let mut answer = answer.clone();
    let object = answer.as_object_mut().unwrap();
    object.remove("replayed");
    object.remove("clientOrderId");
    answer
}

#[test]
fn a_retry_finds_its_first_answer_whatever_form_its_key_takes() {
    let m = Market::start("api_retry_forms", Limits::default());
    m.seed();
    let uuid = "3f2b8c1e-9a4d-4e6f-8b21-0c5d7e9f1a2b";
    for (first, retries) in [
        (uuid.to_owned(), vec![uuid.to_owned(), uuid.to_uppercase()]),
        ("42".to_owned(), vec!["42".to_owned(), "0042".to_owned()]),
        (
            "0000000000000000000000000000000000000017".to_owned(),
            vec!["17".to_owned()],
        ),
    ] {
        let placed = m.ok(&m.buyer, PLACE, bid_input(&first, "1.50", 1))["placeOrder"].clone();
        assert_eq!(placed["replayed"], false, "{placed}");
        for retry in retries {
            let started = std::time::Instant::now();
            let again = m.ok(&m.buyer, PLACE, bid_input(&retry, "1.50", 1))["placeOrder"].clone();
            assert_eq!(
                again["replayed"], true,
                "{first} retried as {retry}: {again}"
            );
            assert_eq!(
                decided(&again),
                decided(&placed),
                "{first} retried as {retry}"
            );
            assert_eq!(
                again["clientOrderId"],
                retry.as_str(),
                "echoes this request's form"
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{retry} waited {:?}: the replay found no first answer",
                started.elapsed()
            );
        }
    }
    let depth = m.ok(
        &m.buyer,
        "{ depth(market: \"H100-80GB\") { bids { gpus orders } } }",
        json!({}),
    );
    assert_eq!(
        depth["depth"]["bids"],
        json!([{"gpus": 3, "orders": 3}]),
        "three orders, not one more per retry"
    );
}

#[test]
fn a_retry_after_the_order_changed_still_returns_the_first_answer() {
    let m = Market::start("api_retry_changed", Limits::default());
    m.seed();
    // Rests below the ask; then a cheaper ask fills part of it, then it is cancelled.
    let first = m.ok(&m.buyer, PLACE, bid_input("8008", "1.50", 3))["placeOrder"].clone();
    assert_eq!(
        (first["status"].as_str(), first["remaining"].as_u64()),
        (Some("OPEN"), Some(3))
    );
    m.prove_node(
        "node-b",
        &ed25519_dalek::SigningKey::from_bytes(&[8; 32]),
        2,
    );
    let mut cheaper = ask_input("8009", "1.40", 2);
    cheaper["input"]["ask"]["node"] = json!("node-b");
    let cheap = m.ok(&m.provider, PLACE, cheaper)["placeOrder"].clone();
    assert_eq!(cheap["fills"][0]["gpus"], 2, "{cheap}");
    m.ok(
        &m.buyer,
        "mutation($o: ID!) { cancelOrder(orderId: $o) { remaining } }",
        json!({"o": first["orderId"].to_string()}),
    );
    m.projected();
    let again = m.ok(&m.buyer, PLACE, bid_input("8008", "1.50", 3))["placeOrder"].clone();
    assert_eq!(again["replayed"], true);
    assert_eq!(
        decided(&again),
        decided(&first),
        "the first answer (open, 3 remaining, no fills), not the order's state now"
    );
}

#[test]
fn bad_input_gets_a_typed_error_and_changes_nothing() {
    let m = Market::start(
        "api_bad_input",
        Limits {
            max_body: 4_096,
            ..Limits::default()
        },
    );
    m.seed();
    let before = m.commands();
    let bid = |client: &str, price: &str, gpus: i64| {
        json!({"input": {"market": "H100-80GB", "clientOrderId": client, "price": price,
            "gpus": gpus, "bid": {"hours": 1}}})
    };
    for (what, variables, code) in [
        ("zero GPUs", bid("401", "1.00", 0), "VALIDATION"),
        ("negative GPUs", bid("402", "1.00", -3), "VALIDATION"),
        ("negative price", bid("403", "-1.00", 1), "VALIDATION"),
        ("seven decimals", bid("404", "1.0000001", 1), "VALIDATION"),
        ("not a number", bid("405", "cheap", 1), "VALIDATION"),
        (
            "malformed client id",
            bid("not an id!", "1.00", 1),
            "VALIDATION",
        ),
        (
            "malformed market",
            json!({"input": {"market": "", "clientOrderId": "406", "price": "1.00", "gpus": 1,
                "bid": {"hours": 1}}}),
            "VALIDATION",
        ),
        (
            "both sides",
            json!({"input": {"market": "H100-80GB", "clientOrderId": "407", "price": "1.00",
                "gpus": 1, "bid": {"hours": 1}, "ask": {"node": "n", "vendor": "amd",
                "vramGb": 1, "interconnect": "pcie", "region": "eu", "availableUntil":
                "2099-01-01T00:00:00Z"}}}),
            "VALIDATION",
        ),
        (
            "unknown region syntax",
            json!({"input": {"market": "H100-80GB", "clientOrderId": "408", "price": "1.00",
                "gpus": 1, "bid": {"hours": 1, "interconnects": ["carrier-pigeon"]}}}),
            "VALIDATION",
        ),
    ] {
        assert_eq!(m.code(Some(&m.buyer), PLACE, variables), code, "{what}");
    }
    assert_eq!(m.commands(), before, "nothing reached the log");

    // What only the engine knows is the engine's typed rejection, and changes nothing either.
    assert_eq!(
        m.code(Some(&m.buyer), PLACE, bid("501", "1.005", 1)),
        "PRICE_OFF_TICK"
    );
    assert_eq!(
        m.code(
            Some(&m.buyer),
            PLACE,
            json!({"input": {"market": "A100-40GB", "clientOrderId": "502", "price": "1.00",
                "gpus": 1, "bid": {"hours": 1}}})
        ),
        "UNKNOWN_MARKET"
    );
    assert_eq!(
        m.code(Some(&m.buyer), PLACE, bid("503", "900.00", 8)),
        "INSUFFICIENT_FUNDS"
    );
    assert_eq!(
        m.code(
            Some(&m.buyer),
            "mutation { cancelOrder(orderId: \"999\") { orderId } }",
            json!({})
        ),
        "UNKNOWN_ORDER"
    );
    let balance = m.ok(&m.buyer, "{ balance { available held } }", json!({}));
    assert_eq!(
        balance["balance"],
        json!({"available": "1000.000000", "held": "0.000000"})
    );

    // Transport-level refusals.
    assert_eq!(
        m.code(Some("gpm_1_nothex"), "{ me { role } }", json!({})),
        "UNAUTHENTICATED"
    );
    let forged = format!("gpm_1_{}", "0".repeat(64));
    assert_eq!(
        m.code(Some(&forged), "{ me { role } }", json!({})),
        "UNAUTHENTICATED"
    );
    let (status, body) = m.gql_status(
        Some(&m.buyer),
        "{ me { role } }",
        json!({"padding": "x".repeat(5_000)}),
    );
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE"))
    );
    let deep = "{ markets { depth { market asks { price } } } orders { edges { node { history { change } explanation { skipped { reason } } } } } }";
    assert_eq!(
        m.ok(&m.buyer, deep, json!({}))["markets"][0]["depth"]["market"],
        "H100-80GB"
    );
    let nested = (0..14).fold("name".to_owned(), |inner, _| {
        format!("ofType {{ {inner} }}")
    });
    let too_deep = format!("{{ __schema {{ types {{ fields {{ type {{ {nested} }} }} }} }} }}");
    assert_eq!(
        m.code(Some(&m.buyer), &too_deep, json!({})),
        "QUERY_TOO_COMPLEX"
    );
    assert_eq!(
        m.commands(),
        before + 4,
        "only the four engine rejections were commands"
    );
}

#[test]
fn a_key_over_its_rate_is_refused_with_a_clear_error() {
    let m = Market::start(
        "api_rate",
        Limits {
            rate_per_sec: 1,
            burst: 3,
            ..Limits::default()
        },
    );
    let codes: Vec<Option<String>> = (0..5)
        .map(|_| {
            let (status, body) = m.gql_status(Some(&m.buyer), "{ me { role } }", json!({}));
            (status == 429).then(|| {
                body["errors"][0]["extensions"]["code"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    assert_eq!(&codes[..3], &[None, None, None]);
    assert_eq!(codes[3].as_deref(), Some("RATE_LIMITED"));
    // Another key has its own bucket.
    assert!(
        m.gql(Some(&m.finance), "{ me { role } }", json!({}))["data"]["me"]["role"] == "FINANCE"
    );
}

#[test]
fn revoked_keys_stop_working() {
    let m = Market::start("api_revoke", Limits::default());
    assert_eq!(
        m.ok(&m.buyer, "{ me { role account } }", json!({}))["me"],
        json!({"role": "TRADER", "account": T_BUYER})
    );
    let id: i64 = m.buyer.split('_').nth(1).unwrap().parse().unwrap();
    assert!(auth::revoke_key(&mut m.db.connect(), id).unwrap());
    assert!(
        !auth::revoke_key(&mut m.db.connect(), id).unwrap(),
        "revoking twice changes nothing"
    );
    thread::sleep(auth::RECHECK_AFTER + Duration::from_millis(100));
    assert_eq!(
        m.code(Some(&m.buyer), "{ me { role } }", json!({})),
        "UNAUTHENTICATED"
    );
}

#[test]
fn operations_endpoints_answer() {
    let m = Market::start("api_ops", Limits::default());
    let ask = m.seed();
    m.projected();
    assert_eq!(
        m.ok(&m.buyer, "{ projectionLag }", json!({}))["projectionLag"],
        0
    );
    let resting = format!("{{ restingOrder(id: \"{ask}\") {{ side filled remaining }} }}");
    assert_eq!(
        m.ok(&m.provider, &resting, json!({}))["restingOrder"],
        json!({"side": "ask", "filled": 0, "remaining": 8})
    );
    assert!(
        m.ok(&m.buyer, &resting, json!({}))["restingOrder"].is_null(),
        "another account's order reads as absent"
    );
    let node = format!(
        "{{ nodeState(node: \"node-a\", ask: \"{ask}\") {{ leasedGpus ask {{ remaining }} }} }}"
    );
    assert_eq!(
        m.ok(&m.provider, &node, json!({}))["nodeState"],
        json!({"leasedGpus": 0, "ask": {"remaining": 8}})
    );
    assert_eq!(m.code(Some(&m.buyer), &node, json!({})), "FORBIDDEN");
    let get = |path: &str| {
        let r = m.http.get(format!("{}{path}", m.url)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(get("/healthz").0, 200);
    let (status, ready) = get("/readyz");
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains("projector journal behind 0"), "{ready}");
    let (status, metrics) = get("/metrics");
    assert_eq!(status, 200);
    assert!(
        // The seed's four (configure, register, report, ask) and two more.
        metrics.contains("gpumarket_api_request_seconds_count{kind=\"mutation\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gpumarket_projector_lag_events{projector=\"activity\"} 0"),
        "{metrics}"
    );
    let (status, page) = get("/graphql");
    assert_eq!(status, 200);
    assert!(page.contains("graphiql"), "GraphiQL is served");
}

#[test]
fn finance_streams_the_exports_and_others_may_not() {
    let m = Market::start("api_exports", Limits::default());
    m.seed();
    m.ok(&m.buyer, PLACE, bid_input("701", "2.10", 2));
    thread::sleep(Duration::from_millis(20));
    m.ok(
        &m.buyer,
        "mutation { endLease(leaseId: \"1\") { charged } }",
        json!({}),
    );
    m.projected();
    let today = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).date_naive();
    let (from, to) = (today - chrono::Days::new(1), today + chrono::Days::new(2));
    let get = |key: &str, path: &str| {
        let r = m
            .http
            .get(format!("{}{path}", m.url))
            .bearer_auth(key)
            .send()
            .unwrap();
        let breaks = r
            .headers()
            .get("x-reconciliation-breaks")
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status().as_u16(), breaks, r.text().unwrap())
    };
    let (status, _, journal) = get(&m.finance, &format!("/exports/journal?from={from}&to={to}"));
    assert_eq!(status, 200, "{journal}");
    let lines: Vec<&str> = journal.lines().collect();
    assert!(
        lines[0].starts_with("at,partition,event_seq,command_offset,kind"),
        "{}",
        lines[0]
    );
    // deposit 2 legs, bid hold 2, fill 2-4, lease end: every leg a row.
    assert!(lines.len() > 8, "{journal}");
    assert!(journal.contains("lease_ended"), "{journal}");

    let (status, _, focus) = get(
        &m.admin,
        &format!("/exports/focus?from={from}&to={to}&currency=USD"),
    );
    assert_eq!(status, 200, "{focus}");
    assert_eq!(focus.lines().count(), 2, "one usage line: {focus}");
    assert!(focus.lines().next().unwrap().contains("BilledCost"));

    let (status, breaks, recon) = get(
        &m.finance,
        &format!("/exports/reconciliation?from={from}&to={to}"),
    );
    assert_eq!((status, breaks.as_deref()), (200, Some("0")), "{recon}");

    for (key, path, code) in [
        (
            &m.buyer,
            format!("/exports/journal?from={from}&to={to}"),
            "FORBIDDEN",
        ),
        (
            &m.provider,
            format!("/exports/focus?from={from}&to={to}"),
            "FORBIDDEN",
        ),
        (
            &m.finance,
            format!("/exports/journal?from={to}&to={from}"),
            "VALIDATION",
        ),
        (
            &m.finance,
            "/exports/journal?from=yesterday&to=today".to_owned(),
            "VALIDATION",
        ),
        (
            &m.finance,
            format!("/exports/focus?from={from}&to={to}&currency=usd"),
            "VALIDATION",
        ),
        (
            &m.finance,
            format!("/exports/ledger?from={from}&to={to}"),
            "NOT_FOUND",
        ),
        (
            &"gpm_1_x".to_owned(),
            format!("/exports/journal?from={from}&to={to}"),
            "UNAUTHENTICATED",
        ),
    ] {
        let (status, _, body) = get(key, &path);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], code, "{path}: {status} {body}");
    }
}

#[test]
fn an_answer_describes_the_callers_own_order_when_deadlines_come_first() {
    // Given the buyer's GTT bid that expires in a moment, and the provider's resting ask.
    let m = Market::start("api_own_answer", Limits::default());
    let ask = m.seed();
    let mut gtt = bid_input("7", "1.00", 1);
    gtt["input"]["timeInForce"] = json!("GTT");
    gtt["input"]["expiresAt"] =
        json!((chrono::Utc::now() + chrono::Duration::milliseconds(2_000)).to_rfc3339());
    let bid = m.ok(&m.buyer, PLACE, gtt)["placeOrder"]["orderId"]
        .as_u64()
        .unwrap();
    // Two seconds of room: on a loaded machine the bid itself may take a while to arrive.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    // When the provider's cancel is the first command after the expiry (this market has no
    // clock ticks), its answer starts with the buyer's order expiring.
    let cancelled = m.ok(
        &m.provider,
        "mutation($o: ID!) { cancelOrder(orderId: $o) { orderId remaining } }",
        json!({"o": ask.to_string()}),
    )["cancelOrder"]
        .clone();
    // Then the provider is told of its own order, and the buyer's bid expired.
    assert_eq!(cancelled, json!({"orderId": ask, "remaining": 8}));
    let order = m.ok(
        &m.buyer,
        "query($o: ID!) { restingOrder(id: $o) { remaining } }",
        json!({"o": bid.to_string()}),
    );
    assert_eq!(
        order["restingOrder"],
        Value::Null,
        "the bid expired: {order}"
    );
}
