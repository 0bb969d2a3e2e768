//! The devnet's JSON-RPC against CometBFT 0.38's documented shapes (its OpenAPI schema and
//! the Go types behind it, written out here by hand): every method over POST and the GET
//! URI form ([`methods`]), errors ([`errors`]), broadcasts, refusals and pagination
//! ([`txs`]), and the application's queries ([`abci`]).

mod abci;
mod errors;
mod methods;
mod txs;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmos_bridge::devnet::server::DevnetServer;
use cosmos_bridge::tx::Account;
use serde_json::{json, Value};

use super::{pay, setup, FEES};

/// Checks `actual` against a shape: objects must have exactly the keys shown; `[T]` is a
/// non-empty array of `T`s; strings in angle brackets are kinds (`<int64>`: a 64-bit
/// integer as a string; `<hex32>`, `<hex20>`: upper-case hex of 32 or 20 bytes; `<id>`:
/// lower-case hex of 20 bytes; `<base64>`; `<time>`: RFC 3339 in UTC; `<u32>`: a JSON
/// number; `<bool>`; `<string>`); anything else must be equal.
fn check(actual: &Value, shape: &Value, path: &str) {
    let fail = |why: &str| panic!("{path}: {why}: {actual} (shape {shape})");
    match shape {
        Value::Object(fields) => {
            let Some(got) = actual.as_object() else {
                return fail("not an object");
            };
            let mut want: Vec<&String> = fields.keys().collect();
            let mut have: Vec<&String> = got.keys().collect();
            want.sort();
            have.sort();
            if want != have {
                fail(&format!("keys {have:?}, not {want:?}"));
            }
            for (k, s) in fields {
                check(&got[k], s, &format!("{path}.{k}"));
            }
        }
        Value::Array(items) => {
            let Some(got) = actual.as_array() else {
                return fail("not an array");
            };
            match items.as_slice() {
                [] if !got.is_empty() => fail("not empty"),
                [] => {}
                [item] if got.is_empty() => fail(&format!("empty, expected {item}")),
                [item] => {
                    for (i, v) in got.iter().enumerate() {
                        check(v, item, &format!("{path}[{i}]"));
                    }
                }
                _ => unreachable!("shapes have one item per array"),
            }
        }
        Value::String(kind) if kind.starts_with('<') => {
            let text = actual.as_str().unwrap_or_default();
            let hex_of = |len: usize, upper: bool| {
                text.len() == len
                    && text.chars().all(|c| {
                        c.is_ascii_digit()
                            || (if upper {
                                ('A'..='F').contains(&c)
                            } else {
                                ('a'..='f').contains(&c)
                            })
                    })
            };
            let ok = match kind.as_str() {
                "<int64>" => actual.is_string() && text.parse::<i64>().is_ok(),
                "<hex32>" => hex_of(64, true),
                "<hex20>" => hex_of(40, true),
                "<id>" => hex_of(40, false),
                "<base64>" => actual.is_string() && BASE64.decode(text).is_ok(),
                "<time>" => {
                    text.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(text).is_ok()
                }
                "<u32>" => actual.as_u64().is_some_and(|n| n <= u32::MAX as u64),
                "<bool>" => actual.is_boolean(),
                "<string>" => actual.is_string(),
                other => panic!("no kind {other}"),
            };
            if !ok {
                fail(&format!("not {kind}"));
            }
        }
        literal => {
            if actual != literal {
                fail("differs");
            }
        }
    }
}

fn block_id() -> Value {
    json!({"hash": "<hex32>", "parts": {"total": "<u32>", "hash": "<hex32>"}})
}

fn no_block_id() -> Value {
    json!({"hash": "", "parts": {"total": 0, "hash": ""}})
}

fn header(last_block_id: Value) -> Value {
    json!({
        "version": {"block": "11", "app": "<int64>"},
        "chain_id": "gpumarket-devnet-1",
        "height": "<int64>",
        "time": "<time>",
        "last_block_id": last_block_id,
        "last_commit_hash": "<hex32>",
        "data_hash": "<hex32>",
        "validators_hash": "<hex32>",
        "next_validators_hash": "<hex32>",
        "consensus_hash": "<hex32>",
        "app_hash": "<hex32>",
        "last_results_hash": "<hex32>",
        "evidence_hash": "<hex32>",
        "proposer_address": "<hex20>",
    })
}

fn commit() -> Value {
    json!({
        "height": "<int64>",
        "round": "<u32>",
        "block_id": block_id(),
        "signatures": [{
            "block_id_flag": 2,
            "validator_address": "<hex20>",
            "timestamp": "<time>",
            "signature": "<base64>",
        }],
    })
}

fn events() -> Value {
    json!([{"type": "<string>", "attributes": [{"key": "<string>", "value": "<string>", "index": "<bool>"}]}])
}

/// `ExecTxResult`, and `ResponseCheckTx` (the same fields since 0.38).
fn exec_result() -> Value {
    json!({
        "code": "<u32>",
        "data": "<base64>",
        "log": "<string>",
        "info": "<string>",
        "gas_wanted": "<int64>",
        "gas_used": "<int64>",
        "events": events(),
        "codespace": "<string>",
    })
}

fn tx_response() -> Value {
    json!({
        "hash": "<hex32>",
        "height": "<int64>",
        "index": "<u32>",
        "tx_result": exec_result(),
        "tx": "<base64>",
    })
}

fn validator() -> Value {
    json!({
        "address": "<hex20>",
        "pub_key": {"type": "tendermint/PubKeyEd25519", "value": "<base64>"},
        "voting_power": "<int64>",
        "proposer_priority": "<int64>",
    })
}

/// A JSON-RPC call over POST: the whole response.
fn post(url: &str, method: &str, params: Value) -> Value {
    let response = reqwest::blocking::Client::new()
        .post(url)
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{method}");
    response.json().unwrap()
}

/// The result of a call that must succeed.
fn call(url: &str, method: &str, params: Value) -> Value {
    let response = post(url, method, params);
    assert_eq!(
        (&response["jsonrpc"], &response["id"]),
        (&json!("2.0"), &json!(7))
    );
    assert!(response.get("error").is_none(), "{method}: {response}");
    response["result"].clone()
}

/// A call in the URI form: HTTP status and response.
fn get(url: &str, target: &str) -> (u16, Value) {
    let response = reqwest::blocking::get(format!("{url}/{target}")).unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// A devnet on loopback that makes blocks only when told: block 1 empty, block 2 with two
/// payouts broadcast over JSON-RPC. It stays as it is while the shapes are checked.
fn serving() -> (DevnetServer, String, Vec<String>) {
    let (net, escrow, provider) = setup();
    let server = DevnetServer::start(net, "127.0.0.1:0", 3_600_000).unwrap();
    let url = server.url().to_owned();
    server.with(|net| net.produce_block(1_700_000_000_000, true));
    let mut hashes = Vec::new();
    for sequence in 0..2 {
        let bytes = pay(
            &escrow,
            &provider,
            "1",
            FEES,
            Account {
                number: 0,
                sequence,
            },
        );
        let answer = call(
            &url,
            "broadcast_tx_sync",
            json!({"tx": BASE64.encode(&bytes)}),
        );
        check(
            &answer,
            &json!({"code": 0, "data": "", "log": "", "codespace": "", "hash": "<hex32>"}),
            "broadcast_tx_sync",
        );
        hashes.push(answer["hash"].as_str().unwrap().to_owned());
    }
    server.with(|net| net.produce_block(1_700_000_001_250, true));
    (server, url, hashes)
}

fn error(response: &Value, code: i64, message: &str) -> String {
    check(
        &response["error"],
        &json!({"code": code, "message": message, "data": "<string>"}),
        "error",
    );
    assert!(response.get("result").is_none(), "{response}");
    response["error"]["data"].as_str().unwrap().to_owned()
}
