//! The provider dashboard in real headless Chromium against a running server with seeded
//! data: what it shows, and a screenshot (`target/dashboard.png`).

use ed25519_dalek::Signer;
use serde_json::json;

use super::*;

/// The dashboard in Chromium with `key` typed into its form (never in the URL): the page's
/// HTML once it has loaded (or said why not), and a screenshot at `shot`.
fn dashboard_page(m: &Market, key: &str, shot: &std::path::Path) -> String {
    let modules = testkit::npm_modules("browser", introspection::BROWSER);
    let seen = introspection::node(
        &modules,
        &[
            "dashboard",
            &m.url,
            &testkit::chromium(),
            shot.to_str().unwrap(),
            key,
        ],
    );
    assert!(
        !seen["url"].as_str().unwrap().contains("gpm_"),
        "the key is not in the URL: {seen}"
    );
    seen["html"].as_str().unwrap().to_owned()
}

#[test]
fn the_provider_dashboard_shows_nodes_telemetry_leases_reputation_and_asks() {
    let m = Market::start("api_dashboard", Limits::default());
    m.seed();
    m.ok(&m.buyer, PLACE, bid_input("901", "2.10", 2));
    let node_key = node_a_key();
    for sequence in 1..=12u64 {
        let report = json!({
            "node": "node-a", "sequence": sequence,
            "at": chrono::Utc::now().to_rfc3339(),
            "class": "H100-80GB", "simulated": true,
            "leases_started": if sequence == 1 { vec![1] } else { vec![] },
            "gpus": (0..8).map(|g| json!({"index": g, "name": api::testing::SIM_MODEL, "uuid": format!("GPU-node-a-{g}"),
                "utilisation_pct": 40.0 + (sequence * 4 + g * 10) as f64, "memory_used_mb": 20_000 + sequence * 1_000,
                "memory_total_mb": 81920, "temperature_c": 50.0 + sequence as f64, "power_w": 300.0 + (sequence * 20) as f64,
                "power_limit_w": 700.0, "sm_clock_mhz": 1980, "ecc_errors": null})).collect::<Vec<_>>()
        })
        .to_string();
        let signature: String = node_key
            .sign(report.as_bytes())
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        m.ok(
            &m.provider,
            "mutation($r: String!, $s: String!) { submitNodeReport(report: $r, signature: $s) { duplicate } }",
            json!({"r": report, "s": signature}),
        );
    }
    // A bond of 10 per GPU, an ask on node-b standing on it, and a lease the provider
    // stops early: a provider failure, slashed (a quarter of the 10 behind its GPU).
    m.ok(
        &m.admin,
        &format!(
            "mutation {{ configureMarket(market: \"H100-80GB\", config: {{simulated: true, \
             modelNames: [\"{}\"], bondPerGpu: \"10\"}}) {{ market }} }}",
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
    m.ok(
        &m.provider,
        "mutation { postBond(market: \"H100-80GB\", amount: \"50\") { amount } }",
        json!({}),
    );
    m.prove_node(
        "node-b",
        &ed25519_dalek::SigningKey::from_bytes(&[6; 32]),
        2,
    );
    let mut ask = ask_input("902", "1.50", 2);
    ask["input"]["ask"]["node"] = json!("node-b");
    m.ok(&m.provider, PLACE, ask);
    let placed = m.ok(&m.buyer, PLACE, bid_input("903", "1.60", 1))["placeOrder"].clone();
    let lease = placed["fills"][0]["leaseId"].as_u64().unwrap();
    let ended = m.ok(
        &m.provider,
        "mutation($l: ID!) { endLease(leaseId: $l) { cause } }",
        json!({"l": lease.to_string()}),
    );
    assert_eq!(ended["endLease"]["cause"], "provider_stopped");
    m.projected();
    // Anyone reads the slash; only the parties see who the buyer was.
    let slashes = format!(
        "{{ provider(account: \"{T_PROVIDER}\") {{ slashHistory {{ leaseId slashed cause buyer }} }} }}"
    );
    let public = m.gql(None, &slashes, json!({}));
    assert_eq!(
        public["data"]["provider"]["slashHistory"],
        json!([{"leaseId": lease, "slashed": "2.500000", "cause": "provider_stopped", "buyer": null}])
    );
    let own = m.ok(&m.provider, &slashes, json!({}));
    assert_eq!(own["provider"]["slashHistory"][0]["buyer"], T_BUYER);
    let bought = m.ok(&m.buyer, &slashes, json!({}));
    assert_eq!(bought["provider"]["slashHistory"][0]["buyer"], T_BUYER);

    let screenshot: std::path::PathBuf =
        [env!("CARGO_MANIFEST_DIR"), "..", "target", "dashboard.png"]
            .iter()
            .collect();
    let _ = std::fs::remove_file(&screenshot);
    let dom = dashboard_page(&m, &m.provider, &screenshot);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page loaded its data: {dom}"
    );
    for shown in [
        "provider account 11",
        "node-a",
        "sim H100 (simulated)",
        "8× H100-80GB",
        "running",
        "0.750", // punctuality after one on-time start: (1 + 3.5) / 6
        "polyline",
        "not reported", // ECC errors the agent could not read
        "GPU-node-a-7", // a verified GPU's UUID
        "held behind GPUs",
        "37.500000", // free bond: 50 − 10 behind node-b's other GPU − the slash
        "provider_stopped",
        "2.500000",     // the slash
        "bond_slashed", // why the score moved
    ] {
        assert!(dom.contains(shown), "the dashboard shows {shown:?}: {dom}");
    }
    // The provider's resting ask (8 − 2 filled = 6 open).
    assert!(
        dom.contains("<td>6</td>"),
        "the ask with 6 GPUs open: {dom}"
    );

    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "a screenshot with content at {}",
        screenshot.display()
    );

    // Another role's key is told so instead of shown a provider's page.
    let other: std::path::PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "target",
        "dashboard-trader.png",
    ]
    .iter()
    .collect();
    let dom = dashboard_page(&m, &m.buyer, &other);
    assert!(dom.contains("this dashboard is for provider keys"), "{dom}");
}
