//! Every role against every mutation and every sensitive query: allowed ones get past the
//! role check (an answer, or the engine's own verdict), the others a typed
//! `UNAUTHENTICATED`/`FORBIDDEN` (or `VALIDATION` where the role must name an account) and no
//! command in the log.

use serde_json::json;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Trader,
    Provider,
    Finance,
    Admin,
}

const EVERYONE: [Who; 5] = [
    Who::Anonymous,
    Who::Trader,
    Who::Provider,
    Who::Finance,
    Who::Admin,
];

/// What a caller gets: past the checks (`None`), or refused with this code.
fn expect(allowed: &[Who], who: Who, account_needed: bool) -> Option<&'static str> {
    if allowed.contains(&who) {
        None
    } else if who == Who::Anonymous {
        Some("UNAUTHENTICATED")
    } else if account_needed && matches!(who, Who::Finance | Who::Admin) {
        Some("VALIDATION")
    } else {
        Some("FORBIDDEN")
    }
}

#[test]
fn every_role_against_every_mutation_and_sensitive_query() {
    let m = Market::start("api_roles", Limits::default());
    m.seed();
    let key = |who: Who| match who {
        Who::Anonymous => None,
        Who::Trader => Some(m.buyer.as_str()),
        Who::Provider => Some(m.provider.as_str()),
        Who::Finance => Some(m.finance.as_str()),
        Who::Admin => Some(m.admin.as_str()),
    };
    use Who::*;
    let other = T_PROVIDER + 100;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let node_key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let node_public = hex(node_key.verifying_key().as_bytes());
    let node_report =
        json!({"node": "node-r", "sequence": 1, "at": chrono::Utc::now().to_rfc3339(),
        "class": "H100-80GB", "simulated": true, "gpus": [{"index": 0, "name": "sim",
        "uuid": "GPU-r", "utilisation_pct": null, "memory_used_mb": null, "memory_total_mb": null,
        "temperature_c": null, "power_w": null, "power_limit_w": null, "sm_clock_mhz": null,
        "ecc_errors": null}]})
        .to_string();
    let node_signature =
        hex(&ed25519_dalek::Signer::sign(&node_key, node_report.as_bytes()).to_bytes());
    let mutations: Vec<(&str, String, serde_json::Value, Vec<Who>)> = vec![
        (
            "place a bid",
            PLACE.to_owned(),
            bid_input("301", "1.00", 1),
            vec![Trader],
        ),
        (
            "place an ask",
            PLACE.to_owned(),
            ask_input("302", "9.00", 1),
            vec![Provider],
        ),
        (
            "cancel",
            "mutation { cancelOrder(orderId: \"999\") { orderId } }".into(),
            json!({}),
            vec![Trader, Provider],
        ),
        (
            "amend",
            "mutation { amendOrder(orderId: \"999\", gpus: 1) { orderId } }".into(),
            json!({}),
            vec![Trader, Provider],
        ),
        (
            "set a payout address",
            "mutation { setPayoutAddress(address: \"cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4\") }".into(),
            json!({}),
            vec![Trader, Provider],
        ),
        (
            "withdraw",
            "mutation { requestWithdrawal(amount: \"1\") { amount } }".into(),
            json!({}),
            vec![Trader, Provider],
        ),
        (
            "end a lease",
            "mutation { endLease(leaseId: \"999\") { leaseId } }".into(),
            json!({}),
            vec![Trader, Provider],
        ),
        (
            "end a lease as the operator",
            "mutation { adminEndLease(leaseId: \"999\", reason: \"maintenance\") { leaseId } }"
                .into(),
            json!({}),
            vec![Admin],
        ),
        (
            "configure a market",
            "mutation { configureMarket(market: \"H100-80GB\", config: {chargePeriodSeconds: 3600}) { market } }"
                .into(),
            json!({}),
            vec![Admin],
        ),
        (
            "create a market",
            "mutation { createMarket(market: \"MI300X-192GB\", tick: \"0.01\", feeBps: 100) }"
                .into(),
            json!({}),
            vec![Admin],
        ),
        (
            "register a node",
            format!("mutation {{ registerNode(node: \"node-r\", publicKey: \"{node_public}\") }}"),
            json!({}),
            vec![Provider],
        ),
        (
            "submit a node report",
            "mutation($r: String!, $s: String!) { submitNodeReport(report: $r, signature: $s) { duplicate } }".into(),
            json!({"r": node_report, "s": node_signature}),
            vec![Provider],
        ),
        (
            "create a key",
            format!("mutation {{ createApiKey(role: TRADER, account: \"{other}\") {{ id }} }}"),
            json!({}),
            vec![Admin],
        ),
        (
            "revoke a key",
            "mutation { revokeApiKey(id: \"999\") }".into(),
            json!({}),
            vec![Admin],
        ),
        (
            "credit a chain deposit",
            format!(
                "mutation {{ creditChainDeposit(account: \"{other}\", amount: \"5\", txHash: \"{}\", msgIndex: 0) {{ duplicate }} }}",
                "AB".repeat(32)
            ),
            json!({}),
            vec![Admin],
        ),
        (
            "open a settlement",
            "mutation { openSettlement(minPayout: \"1\") { batch } }".into(),
            json!({}),
            vec![Admin],
        ),
        (
            "confirm a settlement",
            format!(
                "mutation {{ confirmSettlement(batch: \"999\", txHash: \"{}\", height: 1) }}",
                "AB".repeat(32)
            ),
            json!({}),
            vec![Admin],
        ),
        (
            "fail a settlement",
            "mutation { failSettlement(batch: \"999\", reason: \"out of gas\") }".into(),
            json!({}),
            vec![Admin],
        ),
        (
            "credit a deposit",
            format!(
                "mutation {{ creditDeposit(account: \"{other}\", amount: \"5\") {{ amount }} }}"
            ),
            json!({}),
            vec![Admin],
        ),
    ];
    for (what, query, variables, allowed) in &mutations {
        for who in EVERYONE {
            let before = m.commands();
            let body = m.gql(key(who), query, variables.clone());
            let code = body["errors"][0]["extensions"]["code"].as_str();
            match expect(allowed, who, false) {
                None => assert!(
                    !matches!(code, Some("FORBIDDEN" | "UNAUTHENTICATED" | "VALIDATION")),
                    "{what} as {who:?} must pass the role check: {body}"
                ),
                Some(expected) => {
                    assert_eq!(code, Some(expected), "{what} as {who:?}: {body}");
                    assert_eq!(m.commands(), before, "{what} as {who:?} changed the log");
                }
            }
        }
    }

    let queries: Vec<(&str, String, Vec<Who>, bool)> = vec![
        (
            "me",
            "{ me { role } }".into(),
            vec![Trader, Provider, Finance, Admin],
            false,
        ),
        (
            "own orders",
            "{ orders { edges { cursor } } }".into(),
            vec![Trader, Provider],
            true,
        ),
        (
            "another's orders",
            format!("{{ orders(account: \"{other}\") {{ edges {{ cursor }} }} }}"),
            vec![Finance, Admin],
            false,
        ),
        (
            "another's leases",
            format!("{{ leases(account: \"{other}\") {{ edges {{ cursor }} }} }}"),
            vec![Finance, Admin],
            false,
        ),
        (
            "another's balance",
            format!("{{ balance(account: \"{other}\") {{ available }} }}"),
            vec![Finance, Admin],
            false,
        ),
        (
            "another's journal",
            format!("{{ journal(account: \"{other}\") {{ edges {{ cursor }} }} }}"),
            vec![Finance, Admin],
            false,
        ),
        (
            "another's invoices",
            format!("{{ invoices(account: \"{other}\") {{ edges {{ cursor }} }} }}"),
            vec![Finance, Admin],
            false,
        ),
        (
            "own balance",
            "{ balance { available } }".into(),
            vec![Trader, Provider],
            true,
        ),
        (
            "own settlements",
            "{ settlements { edges { node { batch lines { amount } } } } }".into(),
            vec![Trader, Provider, Finance, Admin],
            false,
        ),
        (
            "another's settlements",
            format!("{{ settlements(account: \"{other}\") {{ edges {{ cursor }} }} }}"),
            vec![Finance, Admin],
            false,
        ),
        (
            "the open settlement",
            "{ pendingSettlement { batch } }".into(),
            vec![Finance, Admin],
            false,
        ),
        (
            "settlement preview",
            "{ settlementDue(minPayout: \"1\") { total } }".into(),
            vec![Finance, Admin],
            false,
        ),
        (
            "deposit instructions",
            "{ depositInstructions { escrowAddress memo } }".into(),
            vec![Trader, Provider],
            false,
        ),
        (
            "markets",
            "{ markets { id } }".into(),
            EVERYONE.to_vec(),
            false,
        ),
        (
            "depth",
            "{ depth(market: \"H100-80GB\") { asks { price } } }".into(),
            EVERYONE.to_vec(),
            false,
        ),
        (
            "trades",
            "{ trades { edges { cursor } } }".into(),
            EVERYONE.to_vec(),
            false,
        ),
        (
            "providers",
            "{ providers { edges { node { score } } } }".into(),
            EVERYONE.to_vec(),
            false,
        ),
    ];
    for (what, query, allowed, account_needed) in &queries {
        for who in EVERYONE {
            let body = m.gql(key(who), query, json!({}));
            let code = body["errors"][0]["extensions"]["code"].as_str();
            assert_eq!(
                code,
                expect(allowed, who, *account_needed),
                "{what} as {who:?}: {body}"
            );
        }
    }
    // The trader's own deposit memo is its account.
    let instructions = m.ok(&m.buyer, "{ depositInstructions { memo } }", json!({}));
    assert_eq!(
        instructions["depositInstructions"]["memo"],
        T_BUYER.to_string()
    );
}
