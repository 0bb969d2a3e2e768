//! Signed node reports: registration, signature checks, replays, heartbeats and lease starts
//! reaching the engine, samples reaching queries and subscriptions.

use ed25519_dalek::SigningKey;
use serde_json::json;

use super::subscriptions::{receive, subscribe};
use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A report of `node` with the 8 GPUs the seeded node-a reports.
fn report(node: &str, sequence: u64, starts: &[u64]) -> String {
    node_report(node, sequence, 8, &[], starts)
}

const SUBMIT: &str = SUBMIT_REPORT;

fn signed(key: &SigningKey, report: &str) -> Value {
    signed_report(key, report)
}

#[test]
fn signed_reports_feed_the_engine_and_the_telemetry_once() {
    let m = Market::start("api_reports", Limits::default());
    m.seed();
    m.ok(&m.buyer, PLACE, bid_input("801", "2.10", 2));
    let node_key = node_a_key();
    let public = hex(node_key.verifying_key().as_bytes());
    let register =
        format!("mutation {{ registerNode(node: \"node-a\", publicKey: \"{public}\") }}");
    assert_eq!(
        m.ok(&m.provider, &register, json!({}))["registerNode"],
        true
    );
    assert_eq!(
        m.ok(&m.provider, &register, json!({}))["registerNode"],
        true,
        "same key again"
    );
    let other_key = SigningKey::from_bytes(&[43; 32]);
    let swap = format!(
        "mutation {{ registerNode(node: \"node-a\", publicKey: \"{}\") }}",
        hex(other_key.verifying_key().as_bytes())
    );
    assert_eq!(m.code(Some(&m.provider), &swap, json!({})), "FORBIDDEN");
    assert_eq!(m.code(Some(&m.buyer), &register, json!({})), "FORBIDDEN");

    let mut live = subscribe(
        &m,
        None,
        &format!("subscription {{ telemetry(provider: \"{T_PROVIDER}\") {{ node gpu utilisationPct eccErrors simulated }} }}"),
    );
    thread::sleep(Duration::from_millis(300));

    let first = report("node-a", 1, &[1, 999]);
    let before = m.commands();
    let receipt = m.ok(&m.provider, SUBMIT, signed(&node_key, &first))["submitNodeReport"].clone();
    assert_eq!(
        receipt,
        json!({"duplicate": false, "leaseStarts": [{"leaseId": 1, "refused": null},
               {"leaseId": 999, "refused": "UNKNOWN_LEASE"}]})
    );
    assert_eq!(m.commands(), before + 3, "a heartbeat and two starts");
    assert_eq!(
        receive(&mut live)["payload"]["data"]["telemetry"],
        json!({"node": "node-a", "gpu": 0, "utilisationPct": 87.5, "eccErrors": null, "simulated": true})
    );

    // The same report again (an agent resending after a lost answer) applies nothing.
    let again = m.ok(&m.provider, SUBMIT, signed(&node_key, &first))["submitNodeReport"].clone();
    assert_eq!(again, json!({"duplicate": true, "leaseStarts": []}));
    assert_eq!(m.commands(), before + 3);

    // Refusals change nothing.
    let second = report("node-a", 2, &[]);
    for (key, variables, code) in [
        (&m.provider, signed(&other_key, &second), "FORBIDDEN"),
        // A node nobody registered for this provider is not known here.
        (
            &m.provider,
            signed(&node_key, &report("node-b", 1, &[])),
            "UNKNOWN_NODE",
        ),
        // A class no market trades: refused here, before the engine would refuse it.
        (
            &m.provider,
            signed(&node_key, &second.replace("H100-80GB", "A100-40GB")),
            "UNKNOWN_MARKET",
        ),
        // Text the signed heartbeat cannot carry (more than 128 bytes).
        (
            &m.provider,
            signed(
                &node_key,
                &second.replace(api::testing::SIM_MODEL, &"H".repeat(200)),
            ),
            "VALIDATION",
        ),
        (&m.buyer, signed(&node_key, &second), "FORBIDDEN"),
        (&m.provider, json!({"r": second, "s": "00"}), "VALIDATION"),
        (
            &m.provider,
            signed(&node_key, &second.replace("H100-80GB", "")),
            "VALIDATION",
        ),
    ] {
        assert_eq!(m.code(Some(key), SUBMIT, variables), code);
    }
    assert_eq!(m.commands(), before + 3);

    m.projected();
    let provider = m.ok(
        &m.buyer,
        &format!("{{ provider(account: \"{T_PROVIDER}\") {{ starts nodes {{ node reportedClass heartbeats }} telemetry {{ gpu powerW temperatureC memoryTotalMb }} }} }}"),
        json!({}),
    )["provider"]
        .clone();
    assert_eq!(provider["starts"], 1);
    assert_eq!(
        provider["nodes"],
        json!([{"node": "node-a", "reportedClass": "H100-80GB", "heartbeats": 2}]),
        "the seed's report and this one"
    );
    assert_eq!(
        provider["telemetry"],
        json!((0..16).map(|g| json!({"gpu": g % 8, "powerW": 612.0, "temperatureC": 71.0, "memoryTotalMb": 81920})).collect::<Vec<_>>()),
        "the seed's report 0 and report 1"
    );
    let lease = m.ok(
        &m.buyer,
        "{ leases { edges { node { status } } } }",
        json!({}),
    );
    assert_eq!(lease["leases"]["edges"][0]["node"]["status"], "running");
}

#[test]
fn simulated_gpus_on_a_real_market_a_wrong_clock_and_a_weak_key_are_refused_before_the_log() {
    // Given a market no longer taking simulated GPUs and a registered node
    let m = Market::start("api_reports_refused", Limits::default());
    m.seed();
    m.ok(
        &m.admin,
        &format!(
            "mutation {{ configureMarket(market: \"H100-80GB\", config: {{simulated: false, \
             modelNames: [\"{}\"]}}) {{ market }} }}",
            api::testing::SIM_MODEL
        ),
        json!({}),
    );
    let node_key = node_a_key();
    let identity = format!("01{}", "00".repeat(31));
    let weak = format!("mutation {{ registerNode(node: \"node-w\", publicKey: \"{identity}\") }}");
    assert_eq!(m.code(Some(&m.provider), &weak, json!({})), "VALIDATION");
    let before = m.commands();
    // When its agent sends simulated GPUs, then real ones dated 2999 and an hour ago
    let simulated = report("node-a", 1, &[]);
    let real = |at: &str| {
        simulated
            .replace("\"simulated\":true", "\"simulated\":false")
            .replace(&chrono_at(&simulated), at)
    };
    let an_hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    for (text, code) in [
        (simulated.clone(), "SIMULATED_REPORT"),
        (real("2999-01-01T00:00:00Z"), "REPORT_CLOCK_SKEW"),
        (real(&an_hour_ago), "REPORT_CLOCK_SKEW"),
    ] {
        // Then each is refused with its code and nothing reaches the log
        assert_eq!(
            m.code(Some(&m.provider), SUBMIT, signed(&node_key, &text)),
            code,
            "{text}"
        );
    }
    assert_eq!(m.commands(), before, "refused reports append nothing");
    // And a real report dated now is taken
    let now = real(&chrono::Utc::now().to_rfc3339());
    m.ok(&m.provider, SUBMIT, signed(&node_key, &now));
    assert!(m.commands() > before);
}

/// The `at` a report's JSON carries.
fn chrono_at(report: &str) -> String {
    let value: Value = serde_json::from_str(report).unwrap();
    value["at"].as_str().unwrap().to_owned()
}
