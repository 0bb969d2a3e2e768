//! Providers proven through the API: every spoofing attempt refused with its code, bonds
//! posted, held and withdrawn through the unbonding delay, and buyers finding providers by
//! verified model and bond.

use ed25519_dalek::SigningKey;
use serde_json::json;

use super::*;

/// A report of `node` whose GPUs are `gpus` (name, uuid, memory in MB).
fn report_of(node: &str, sequence: u64, gpus: &[(&str, &str, u64)]) -> String {
    json!({
        "node": node, "sequence": sequence, "at": chrono::Utc::now().to_rfc3339(),
        "class": "H100-80GB", "simulated": true,
        "gpus": gpus.iter().enumerate().map(|(i, (name, uuid, mb))| json!({
            "index": i, "name": name, "uuid": uuid, "utilisation_pct": null,
            "memory_used_mb": null, "memory_total_mb": mb, "temperature_c": null,
            "power_w": null, "power_limit_w": null, "sm_clock_mhz": null,
            "ecc_errors": null})).collect::<Vec<_>>(),
    })
    .to_string()
}

fn register(m: &Market, node: &str, key: &SigningKey) {
    let public: String = key
        .verifying_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    m.ok(
        &m.provider,
        &format!("mutation {{ registerNode(node: \"{node}\", publicKey: \"{public}\") }}"),
        json!({}),
    );
}

fn ask_on(node: &str, client: &str, gpus: u32) -> Value {
    let mut ask = ask_input(client, "2.00", gpus);
    ask["input"]["ask"]["node"] = json!(node);
    ask
}

#[test]
fn each_spoofing_attempt_is_refused_with_its_code_and_changes_nothing() {
    let m = Market::start("api_spoofing", Limits::default());
    m.seed();
    // A config claiming H100s on a node whose signed report says RTX 4090.
    let rtx = SigningKey::from_bytes(&[21; 32]);
    register(&m, "node-rtx", &rtx);
    let report = report_of(
        "node-rtx",
        1,
        &[("NVIDIA GeForce RTX 4090", "GPU-rtx-0", 24_564)],
    );
    m.ok(&m.provider, SUBMIT_REPORT, signed_report(&rtx, &report));
    let before = m.commands();
    let refused = m.gql(Some(&m.provider), PLACE, ask_on("node-rtx", "201", 1));
    assert_eq!(refused["errors"][0]["extensions"]["code"], "SPEC_MISMATCH");
    let message = refused["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("model reported \"NVIDIA GeForce RTX 4090\""),
        "{message}"
    );
    // Memory below the ask's VRAM, named.
    let small = SigningKey::from_bytes(&[22; 32]);
    register(&m, "node-small", &small);
    let report = report_of(
        "node-small",
        1,
        &[(api::testing::SIM_MODEL, "GPU-small-0", 40_960)],
    );
    m.ok(&m.provider, SUBMIT_REPORT, signed_report(&small, &report));
    let refused = m.gql(Some(&m.provider), PLACE, ask_on("node-small", "202", 1));
    assert_eq!(refused["errors"][0]["extensions"]["code"], "SPEC_MISMATCH");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("memory_mb reported 40960"),
        "{refused}"
    );
    // An ask on a node that never reported.
    assert_eq!(
        m.code(Some(&m.provider), PLACE, ask_on("node-never", "203", 1)),
        "NODE_NOT_REPORTING"
    );
    // A GPU node-a already has, claimed by a second node: refused before the log, and
    // both nodes flagged.
    let twin = SigningKey::from_bytes(&[23; 32]);
    register(&m, "node-twin", &twin);
    let commands = m.commands();
    let report = report_of(
        "node-twin",
        1,
        &[(api::testing::SIM_MODEL, "GPU-node-a-3", 81_920)],
    );
    assert_eq!(
        m.code(
            Some(&m.provider),
            SUBMIT_REPORT,
            signed_report(&twin, &report)
        ),
        "GPU_ALREADY_REGISTERED"
    );
    assert_eq!(
        m.commands(),
        commands,
        "the refused report appended nothing"
    );
    let flags_query =
        format!("{{ provider(account: \"{T_PROVIDER}\") {{ flags {{ node uuid otherNode }} }} }}");
    let flags = m.ok(&m.provider, &flags_query, json!({}));
    assert_eq!(
        flags["provider"]["flags"],
        json!([
            {"node": "node-a", "uuid": "GPU-node-a-3", "otherNode": "node-twin"},
            {"node": "node-twin", "uuid": "GPU-node-a-3", "otherNode": "node-a"}
        ])
    );
    // The flags are the provider's to read, not the public's: anyone may claim any UUID.
    assert_eq!(m.code(Some(&m.buyer), &flags_query, json!({})), "FORBIDDEN");
    // The refused asks appended their rejections only (three commands), nothing else moved.
    assert!(m.commands() >= before);
    let depth = m.ok(
        &m.buyer,
        "{ depth(market: \"H100-80GB\") { asks { gpus } } }",
        json!({}),
    );
    assert_eq!(
        depth["depth"]["asks"],
        json!([{"gpus": 8}]),
        "only the seed's ask"
    );
    // The verified GPUs are the reports', with their UUIDs.
    let verified = m.ok(
        &m.buyer,
        &format!("{{ provider(account: \"{T_PROVIDER}\") {{ verifiedNodes {{ node gpus {{ model uuid memoryMb }} }} }} }}"),
        json!({}),
    );
    let nodes = &verified["provider"]["verifiedNodes"];
    assert_eq!(nodes[0]["node"], "node-a");
    assert_eq!(
        nodes[0]["gpus"][7],
        json!({"model": api::testing::SIM_MODEL, "uuid": "GPU-node-a-7", "memoryMb": 81920})
    );
    assert_eq!(
        nodes[1]["gpus"][0]["model"], "NVIDIA GeForce RTX 4090",
        "{nodes}"
    );
}

#[test]
fn bonds_are_posted_held_by_asks_and_withdrawn_after_the_delay() {
    let m = Market::start("api_bonds", Limits::default());
    m.seed();
    // A bond of 10 per GPU, released a day after it is withdrawn.
    m.ok(
        &m.admin,
        &format!(
            "mutation {{ configureMarket(market: \"H100-80GB\", config: {{simulated: true, \
             modelNames: [\"{}\"], bondPerGpu: \"10\", unbondingDelayMs: 86400000}}) {{ market }} }}",
            api::testing::SIM_MODEL
        ),
        json!({}),
    );
    m.ok(
        &m.admin,
        &format!(
            "mutation {{ creditDeposit(account: \"{T_PROVIDER}\", amount: \"100\") {{ amount }} }}"
        ),
        json!({}),
    );
    let post = "mutation($a: String!) { postBond(market: \"H100-80GB\", amount: $a) { market amount releaseAt } }";
    let withdraw = "mutation($a: String!) { withdrawBond(market: \"H100-80GB\", amount: $a) { market amount releaseAt } }";
    let before = m.commands();
    for bad in ["0", "-1", "1.0000001", "lots"] {
        assert_eq!(
            m.code(Some(&m.provider), post, json!({"a": bad})),
            "VALIDATION",
            "{bad}"
        );
    }
    assert_eq!(m.code(Some(&m.buyer), post, json!({"a": "1"})), "FORBIDDEN");
    assert_eq!(m.commands(), before, "refused before the log");
    assert_eq!(
        m.ok(&m.provider, post, json!({"a": "35"}))["postBond"],
        json!({"market": "H100-80GB", "amount": "35.000000", "releaseAt": null})
    );
    // The seed's ask came before the bond; a new ask of 3 GPUs on another node holds 30,
    // and one of 4 would need 40.
    m.prove_node("node-b", &SigningKey::from_bytes(&[31; 32]), 4);
    assert_eq!(
        m.code(Some(&m.provider), PLACE, ask_on("node-b", "301", 4)),
        "INSUFFICIENT_BOND"
    );
    m.ok(&m.provider, PLACE, ask_on("node-b", "302", 3));
    let bonds = format!("{{ bonds(provider: \"{T_PROVIDER}\") {{ market free held unbonding releases {{ amount releaseAt }} }} }}");
    assert_eq!(
        m.ok(&m.buyer, &bonds, json!({}))["bonds"],
        json!([{"market": "H100-80GB", "free": "5.000000", "held": "30.000000",
                "unbonding": "0.000000", "releases": []}])
    );
    // Only free bond can be withdrawn, and it waits a day.
    assert_eq!(
        m.code(Some(&m.provider), withdraw, json!({"a": "6"})),
        "INSUFFICIENT_BOND"
    );
    let asked = chrono::Utc::now();
    let withdrawn = m.ok(&m.provider, withdraw, json!({"a": "5"}))["withdrawBond"].clone();
    let answered = chrono::Utc::now();
    let release_at: chrono::DateTime<chrono::Utc> =
        withdrawn["releaseAt"].as_str().unwrap().parse().unwrap();
    // A day after the engine took the command (its clock counts whole milliseconds).
    let day = chrono::Duration::hours(24);
    assert!(
        release_at >= asked + day - chrono::Duration::milliseconds(1)
            && release_at <= answered + day,
        "{withdrawn}, asked at {asked}"
    );
    let bond = m.ok(&m.buyer, &bonds, json!({}))["bonds"][0].clone();
    assert_eq!(
        (
            &bond["free"],
            &bond["unbonding"],
            &bond["releases"][0]["amount"]
        ),
        (&json!("0.000000"), &json!("5.000000"), &json!("5.000000"))
    );
    let balance = m.ok(&m.provider, "{ balance { available bonded } }", json!({}));
    assert_eq!(
        balance["balance"],
        json!({"available": "65.000000", "bonded": "35.000000"})
    );

    // Buyers find providers by verified model and by bond.
    let providers = |filter: &str| {
        m.ok(
            &m.buyer,
            &format!("{{ providers({filter}) {{ edges {{ node {{ account }} }} }} }}"),
            json!({}),
        )["providers"]["edges"]
            .clone()
    };
    m.projected();
    let listed = json!([{"node": {"account": T_PROVIDER}}]);
    assert_eq!(
        providers(&format!("model: \"{}\"", api::testing::SIM_MODEL)),
        listed
    );
    assert_eq!(providers("model: \"NVIDIA B200\""), json!([]));
    assert_eq!(providers("minBond: \"30\""), listed);
    assert_eq!(providers("minBond: \"30.000001\""), json!([]));
    assert_eq!(
        m.code(
            Some(&m.buyer),
            "{ providers(minBond: \"-1\") { edges { cursor } } }",
            json!({})
        ),
        "VALIDATION"
    );
}

#[test]
fn a_checker_holds_back_unchecked_nodes_and_bad_appointments_are_typed_errors() {
    let m = Market::start("api_checker", Limits::default());
    m.seed();
    let appoint = |market: &str, account: &str| {
        format!("mutation {{ appointChecker(market: \"{market}\", account: \"{account}\") }}")
    };
    // Only an admin appoints, a real account: refused by the API, nothing appended.
    let before = m.commands();
    for (key, account, code) in [
        (&m.buyer, "9", "FORBIDDEN"),
        (&m.provider, "9", "FORBIDDEN"),
        (&m.admin, "nine", "VALIDATION"),
        (&m.admin, "-1", "VALIDATION"),
        (&m.admin, "18446744073709551616", "VALIDATION"),
    ] {
        assert_eq!(
            m.code(Some(key), &appoint("H100-80GB", account), json!({})),
            code,
            "{account}"
        );
    }
    assert_eq!(m.commands(), before);
    // An existing market, an account that is not the market's own: the engine's refusals.
    assert_eq!(
        m.code(Some(&m.admin), &appoint("H200-141GB", "9"), json!({})),
        "UNKNOWN_MARKET"
    );
    assert_eq!(
        m.code(Some(&m.admin), &appoint("H100-80GB", "0"), json!({})),
        "RESERVED_ACCOUNT"
    );

    // Once a checker is appointed, node-a (never checked) sells to no buyer: the bid rests,
    // and the explanation says why.
    m.ok(&m.admin, &appoint("H100-80GB", "9"), json!({}));
    let placed = m.ok(&m.buyer, PLACE, bid_input("301", "2.10", 1))["placeOrder"].clone();
    assert_eq!(placed["status"], "OPEN", "{placed}");
    m.projected();
    let explained = m.ok(
        &m.buyer,
        "{ orders(status: OPEN) { edges { node { explanation { skipped { reason } } } } } }",
        json!({}),
    );
    assert!(
        explained.to_string().contains("on_probation"),
        "{explained}"
    );
    // Its provider's page lists no check yet.
    let checks = m.ok(
        &m.buyer,
        &format!("{{ provider(account: \"{T_PROVIDER}\") {{ checks {{ passed }} }} }}"),
        json!({}),
    );
    assert_eq!(checks["provider"]["checks"], json!([]), "{checks}");
}
