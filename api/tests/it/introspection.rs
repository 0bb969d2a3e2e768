//! Standard GraphQL tooling, installed from npm and PyPI into the target folder and run
//! against the real server: graphql-js's `getIntrospectionQuery()` and Python `gql`'s
//! `fetch_schema_from_transport` get the whole schema, equal to `api/schema.graphql`;
//! GraphiQL's docs explorer shows it in headless Chromium; abusive introspection and the
//! GraphQL library's own errors get the API's codes and statuses.

use std::process::Command;

use api::ApiConfig;
use testkit::{npm_modules, python_env};

use super::*;

const GRAPHQL_JS: &str = "graphql@16.9.0";
const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/outside.cjs");

/// The browser tests' npm packages: GraphiQL's files and playwright-core, which drives the
/// machine's Chromium.
pub const BROWSER: &[&str] = &[
    "graphiql@4.1.2",
    "react@18.3.1",
    "react-dom@18.3.1",
    "playwright-core@1.49.1",
];

pub fn node(modules: &std::path::Path, args: &[&str]) -> Value {
    let output = Command::new("node")
        .arg(SCRIPT)
        .args(args)
        .env("NODE_PATH", modules)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn standard_introspection_is_answered_in_full_and_equals_the_published_schema() {
    let m = Market::start("api_introspection", Limits::default());
    let url = format!("{}/graphql", m.url);
    let graphql_js = npm_modules("graphql-js", &[GRAPHQL_JS]);
    let results = node(&graphql_js, &["introspect", &url, SCHEMA]);
    for result in results.as_array().unwrap() {
        assert_eq!(result["status"], 200, "{result}");
        assert_eq!(
            result["equal"], true,
            "graphql-js sees another schema: {result}"
        );
        assert!(result["types"].as_u64().unwrap() > 50, "{result}");
    }

    let python = python_env(
        "python-gql",
        &["gql[requests]==3.5.0", "graphql-core==3.2.5"],
    );
    let output = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/outside_gql.py"
        ))
        .args([&url, SCHEMA])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python gql: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let gql: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(gql["equal"], true, "Python gql sees another schema: {gql}");
}

/// The protocol's reference client, graphql-ws, as a bidding bot would use it.
const GRAPHQL_WS: &[&str] = &["graphql@16.9.0", "graphql-ws@5.16.0", "ws@8.18.0"];

#[test]
fn the_graphql_ws_client_places_and_cancels_over_one_socket() {
    let m = Market::start("api_graphql_ws", Limits::default());
    m.seed();
    let modules = npm_modules("graphql-ws", GRAPHQL_WS);
    let url = format!("{}/graphql", m.url.replace("http://", "ws://"));
    let result = node(&modules, &["trade", &url, &m.buyer]);
    let placed = &result["placed"]["data"]["placeOrder"];
    assert_eq!(placed["status"], "OPEN", "{result}");
    assert_eq!(placed["remaining"], 1, "{result}");
    assert_eq!(
        result["cancelled"]["data"]["cancelOrder"],
        json!({"orderId": placed["orderId"], "remaining": 1}),
        "{result}"
    );
    // Then the market holds what the socket did: the bid was accepted and cancelled.
    m.projected();
    let orders = m.ok(
        &m.buyer,
        "{ orders(first: 5) { edges { node { id status } } } }",
        json!({}),
    );
    let edges = orders["orders"]["edges"].as_array().unwrap();
    assert!(
        edges
            .iter()
            .any(|e| e["node"]["id"] == placed["orderId"] && e["node"]["status"] == "cancelled"),
        "{orders}"
    );
}

#[test]
fn graphiql_shows_the_docs_explorer() {
    let modules = npm_modules("browser", BROWSER);
    let m = Market::start_with(
        "api_graphiql",
        ApiConfig {
            graphiql_assets: Some(modules.clone()),
            ..ApiConfig::default()
        },
    );
    let screenshot = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/graphiql.png");
    let seen = node(
        &modules,
        &["graphiql", &m.url, &testkit::chromium(), screenshot],
    );
    let (roots, query) = (
        seen["roots"].as_str().unwrap(),
        seen["query"].as_str().unwrap(),
    );
    assert!(roots.contains("Root Types"), "{seen}");
    for root in [
        "query: Query",
        "mutation: Mutation",
        "subscription: Subscription",
    ] {
        assert!(roots.contains(root), "{root} missing: {seen}");
    }
    for field in ["markets", "orders", "providers"] {
        assert!(query.contains(field), "Query.{field} missing: {seen}");
    }
    assert_eq!(seen["problems"], json!([]), "errors in the page");
}

#[test]
fn abusive_introspection_and_the_library_s_own_errors_are_coded() {
    let m = Market::start("api_library_errors", Limits::default());
    let status_and_code = |query: &str, variables: Value| {
        let (_, body) = m.gql_status(None, query, variables);
        let extensions = &body["errors"][0]["extensions"];
        (
            extensions["code"].as_str().map(str::to_owned),
            extensions["status"].as_u64(),
        )
    };
    let fields_of_fields =
        "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
    assert_eq!(
        status_and_code(fields_of_fields, json!({})),
        (Some("QUERY_TOO_COMPLEX".into()), Some(400)),
        "type lists inside type lists multiply the answer"
    );
    let validation = (Some("VALIDATION".into()), Some(400));
    assert_eq!(
        status_and_code("{ markets { id ", json!({})),
        validation,
        "syntax"
    );
    assert_eq!(
        status_and_code("{ nothingHere }", json!({})),
        validation,
        "unknown field"
    );
    assert_eq!(
        status_and_code(
            "query($n: Int!) { depth(market: \"H100-80GB\", levels: $n) { market } }",
            json!({"n": "ten"}),
        ),
        validation,
        "a variable that is not an Int"
    );
    assert_eq!(
        status_and_code(
            "{ depth(market: \"H100-80GB\", levels: 99999999999) { market } }",
            json!({})
        ),
        validation,
        "an Int out of range"
    );
    let wide = format!(
        "{{ {} }}",
        (0..400)
            .map(|i| format!("a{i}: markets {{ id }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(
        status_and_code(&wide, json!({})),
        (Some("QUERY_TOO_COMPLEX".into()), Some(400)),
        "aliases of a database field add up"
    );
}
