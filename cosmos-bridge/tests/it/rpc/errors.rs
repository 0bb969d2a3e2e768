//! Errors, in CometBFT's shapes: JSON-RPC codes, HTTP statuses, the URI form's syntax.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{error, get, post, serving};

#[test]
fn errors_answer_in_cometbfts_shapes() {
    let (_server, url, _) = serving();
    error(
        &post(&url, "subscribe", json!({})),
        -32601,
        "Method not found",
    );
    let bad = error(
        &post(&url, "block", json!({"height": "two"})),
        -32602,
        "Invalid params",
    );
    assert!(
        bad.starts_with("error converting json params to arguments"),
        "{bad}"
    );
    let high = error(
        &post(&url, "block", json!({"height": "9"})),
        -32603,
        "Internal error",
    );
    assert_eq!(
        high,
        "height 9 must be less than or equal to the current blockchain height 2"
    );
    let low = error(
        &post(&url, "commit", json!({"height": "0"})),
        -32603,
        "Internal error",
    );
    assert_eq!(low, "height must be greater than 0, but got 0");
    let unknown = BASE64.encode([0xAB; 32]);
    let missing = error(
        &post(&url, "tx", json!({"hash": unknown})),
        -32603,
        "Internal error",
    );
    assert_eq!(missing, format!("tx ({}) not found", "AB".repeat(32)));
    let query = error(
        &post(&url, "tx_search", json!({"query": "tx.height>>1"})),
        -32603,
        "Internal error",
    );
    assert!(query.contains("invalid query"), "{query}");
    let page = error(
        &post(
            &url,
            "tx_search",
            json!({"query": "tx.height>=1", "page": "3", "per_page": "1"}),
        ),
        -32603,
        "Internal error",
    );
    assert_eq!(page, "page should be within [1, 2] range, given 3");
    let order = error(
        &post(
            &url,
            "tx_search",
            json!({"query": "tx.height>=1", "order_by": "up"}),
        ),
        -32603,
        "Internal error",
    );
    assert!(order.contains("asc"), "{order}");

    // The URI form: errors are HTTP 500; strings must be quoted; unknown paths are 404.
    let (code, response) = get(&url, "block?height=9");
    assert_eq!((code, &response["id"]), (500, &json!(-1)));
    error(&response, -32603, "Internal error");
    let (code, response) = get(&url, "tx_search?query=tx.height>=1");
    assert_eq!(code, 500);
    error(&response, -32602, "Invalid params");
    assert_eq!(get(&url, "no_such_method").0, 404);

    // A body that is not JSON; a batch of calls.
    let client = reqwest::blocking::Client::new();
    let garbage = client.post(&url).body("{not json").send().unwrap();
    assert_eq!(garbage.status(), 500);
    error(&garbage.json().unwrap(), -32700, "Parse error");
    let batch: Value = client
        .post(&url)
        .json(&json!([
            {"jsonrpc": "2.0", "id": 1, "method": "health"},
            {"jsonrpc": "2.0", "id": 2, "method": "nope"},
        ]))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(batch[0], json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
    assert_eq!(batch[1]["error"]["code"], -32601);
}
