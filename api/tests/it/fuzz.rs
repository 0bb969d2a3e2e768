//! A bounded fuzz of the API's inputs: documents and variables built from the schema's own
//! operations, then cut, spliced, nested, inflated and poisoned, sent as every role. Every
//! answer must be below 500, every error must carry a code and a status, and a request
//! the API refused (not the engine) must append nothing to the command log.

use super::*;

/// Operations a client sends, with their variables: the material every case starts from.
fn seeds() -> Vec<(&'static str, Value)> {
    vec![
        (PLACE, bid_input("1", "2.10", 2)),
        (PLACE, ask_input("2", "2.00", 4)),
        ("mutation($o: ID!) { cancelOrder(orderId: $o) { remaining released } }", json!({"o": "1"})),
        ("mutation($o: ID!, $p: String) { amendOrder(orderId: $o, price: $p) { price } }", json!({"o": "1", "p": "2.20"})),
        ("mutation($l: ID!) { endLease(leaseId: $l) { charged chargedMs cause } }", json!({"l": "1"})),
        ("mutation($l: ID!, $r: String!) { adminEndLease(leaseId: $l, reason: $r) { charged } }", json!({"l": "1", "r": "maintenance"})),
        ("mutation($m: String!, $c: MarketConfigInput!) { configureMarket(market: $m, config: $c) { chargePeriodSeconds } }", json!({"m": "H100-80GB", "c": {"chargePeriodSeconds": 60, "heartbeatTimeoutMs": 40000, "bondPerGpu": "1.5", "modelNames": ["NVIDIA H100 80GB HBM3"]}})),
        ("mutation($a: ID!, $m: String!, $k: String) { creditDeposit(account: $a, amount: $m, idempotencyKey: $k) { amount replayed } }", json!({"a": "1", "m": "10", "k": "3f2b8c1e-9a4d-4e6f-8b21-0c5d7e9f1a2b"})),
        ("mutation($m: String!, $k: String) { requestWithdrawal(amount: $m, idempotencyKey: $k) { amount replayed } }", json!({"m": "1.000001", "k": "7"})),
        ("mutation($l: ID!, $c: String!, $e: [EnvVarInput!]) { submitJob(leaseId: $l, command: $c, env: $e) }", json!({"l": "1", "c": "echo", "e": [{"name": "A", "value": "b"}]})),
        ("mutation($n: String!, $k: String!) { registerNode(node: $n, publicKey: $k) }", json!({"n": "node-z", "k": "00"})),
        ("mutation($r: String!, $s: String!) { submitNodeReport(report: $r, signature: $s) { duplicate } }", json!({"r": "{}", "s": "00"})),
        ("mutation { createMarket(market: \"X-1\", tick: \"0.01\", feeBps: 10) }", json!({})),
        ("{ orders(first: 5) { edges { cursor node { id status history { change } } } pageInfo { hasNextPage } } }", json!({})),
        ("query($a: String) { trades(first: 3, after: $a) { edges { cursor node { price } } } }", json!({"a": "0:1"})),
        ("{ journal(first: 2) { edges { node { kind postings { amount } } } } }", json!({})),
        ("{ depth(market: \"H100-80GB\", levels: 5) { bids { price gpus } } }", json!({})),
        ("query($i: ID!) { restingOrder(id: $i) { remaining } }", json!({"i": "1"})),
        ("{ providers(first: 3) { edges { node { score nodes { node } telemetry(last: 2) { gpu } } } } }", json!({})),
        ("{ settlements { edges { node { batch lines { amount } } } } }", json!({})),
        ("query($p: ID) { accrued(provider: $p) { leases gross since } accruedByProvider { edges { node { provider net } } } }", json!({"p": "11"})),
        ("query($a: ID) { usage(account: $a, role: BUYER) { edges { node { leaseId amount settled } } } invoices(account: $a) { edges { node { usage(first: 2) { edges { node { amount } } } } } } }", json!({"a": "1"})),
        ("{ leases { edges { node { closeCause chargedMs rebidOrder rebidChain { leaseId depth } } } } orders { edges { node { rebidOf } } } }", json!({})),
        ("{ __schema { types { name fields { name args { name } } } } }", json!({})),
    ]
}

/// A small deterministic generator, so a failing case can be replayed by its number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Hostile values for a variable.
fn poison(rng: &mut Rng) -> Value {
    let values = [
        json!(""),
        json!("\u{0}"),
        json!("1_000"),
        json!(" 2.10 "),
        json!("+2.10"),
        json!("-0"),
        json!("1e308"),
        json!("9223372036854.775807"),
        json!("9223372036854.775808"),
        json!("0.0000001"),
        json!("NaN"),
        json!("\u{202e}evil"),
        json!("x".repeat(70_000)),
        json!(-1),
        json!(4_294_967_296u64),
        json!(18_446_744_073_709_551_615u64),
        json!(1.5),
        json!(null),
        json!(true),
        json!([1, [2, [3]]]),
        json!({"__proto__": {"a": 1}}),
        json!("+3f2b8c1e-9a4d-4e6f-8b21-0c5d7e9f1a2b"),
    ];
    values[rng.below(values.len())].clone()
}

/// One corruption of a seed.
fn mutate(rng: &mut Rng, (query, variables): (&str, Value)) -> (String, Value) {
    let mut query = query.to_owned();
    let mut variables = variables;
    match rng.below(8) {
        0 => {
            let cut = rng.below(query.len().max(1));
            query.truncate(query.floor_char_boundary(cut));
        }
        1 => {
            let at = query.floor_char_boundary(rng.below(query.len()));
            let junk = [
                "{", "}", "(", ")", "$", "\"", "\\u0000", "...", "@skip", "#", "\u{ff}",
            ];
            query.insert_str(at, junk[rng.below(junk.len())]);
        }
        2 => {
            let depth = 2 + rng.below(40);
            query = format!(
                "{{ {}{} }}",
                "markets { depth { market } } orders { edges { node { history { change } } } } "
                    .repeat(1 + rng.below(3)),
                "__type(name: \"Query\") { fields { type { ofType { ".repeat(depth)
                    + &"} } } }".repeat(depth)
                    + " }"
            );
        }
        3 => {
            let n = 1 + rng.below(1_200);
            query = format!(
                "{{ {} }}",
                (0..n)
                    .map(|i| format!("a{i}: me {{ role }}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        4 => query = format!("{query} fragment F on Query {{ ...F }}"),
        _ => {
            if let Some(object) = variables.as_object_mut() {
                let keys: Vec<String> = object.keys().cloned().collect();
                if !keys.is_empty() {
                    let key = &keys[rng.below(keys.len())];
                    object.insert(key.clone(), poison(rng));
                } else {
                    object.insert("x".into(), poison(rng));
                }
            }
            if let Some(input) = variables
                .pointer_mut("/input")
                .and_then(Value::as_object_mut)
            {
                let fields = [
                    "price",
                    "gpus",
                    "clientOrderId",
                    "market",
                    "expiresAt",
                    "bid",
                    "ask",
                ];
                if let Some(bid) = input.get_mut("bid").and_then(Value::as_object_mut) {
                    let options = ["rebidOnFailure", "excludeNodes"];
                    bid.insert(options[rng.below(2)].to_owned(), poison(rng));
                }
                input.insert(fields[rng.below(fields.len())].to_owned(), poison(rng));
            }
        }
    }
    (query, variables)
}

#[test]
fn generated_hostile_requests_get_coded_answers_and_change_nothing_when_refused() {
    let m = Market::start("api_fuzz", Limits::default());
    m.seed();
    let seeds = seeds();
    let keys = [
        None,
        Some(m.admin.as_str()),
        Some(m.finance.as_str()),
        Some(m.buyer.as_str()),
        Some(m.provider.as_str()),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cases = 1_000;
    for case in 0..cases {
        let seed = seeds[rng.below(seeds.len())].clone();
        let (query, variables) = mutate(&mut rng, seed);
        let key = keys[rng.below(keys.len())];
        let before = m.commands();
        let (status, body) = m.gql_status(key, &query, variables.clone());
        let context =
            || format!("case {case}: {status} {body} for {query:.300} with {variables:.300}");
        assert!(status < 500, "{}", context());
        let errors = body["errors"].as_array().cloned().unwrap_or_default();
        for error in &errors {
            let code = error["extensions"]["code"].as_str();
            assert!(
                code.is_some_and(|c| c.parse::<contract::ErrorCode>().is_ok()),
                "an error without a known code: {}",
                context()
            );
            assert!(
                error["extensions"]["status"].as_u64().is_some(),
                "no status: {}",
                context()
            );
            let message = error["message"].as_str().unwrap_or_default();
            assert!(
                !message.contains("diesel") && !message.contains("SQLSTATE"),
                "database text reached a client: {}",
                context()
            );
        }
        // The engine's rejections are answers to commands in the log; anything else the API
        // refused before appending.
        let by_the_api = errors.iter().any(|e| {
            e["extensions"]["code"]
                .as_str()
                .and_then(|c| c.parse::<contract::ErrorCode>().ok())
                .is_some_and(|c| !c.is_rejection())
        });
        if by_the_api && body["data"].is_null() {
            assert_eq!(
                m.commands(),
                before,
                "a refused request appended: {}",
                context()
            );
        }
    }
}
