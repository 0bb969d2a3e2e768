//! Broadcasts and their refusals, and `tx_search`'s pages, order and event conditions.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmos_bridge::devnet::server::DevnetServer;
use cosmos_bridge::tx::Account;
use serde_json::{json, Value};

use super::{call, check, error, exec_result, get, post};
use crate::{pay, setup, wait_for, FEES};

#[test]
fn broadcasts_answer_as_cometbft_does() {
    let (net, escrow, provider) = setup();
    let server = DevnetServer::start(net, "127.0.0.1:0", 50).unwrap();
    let url = server.url();
    let payout = |sequence| {
        pay(
            &escrow,
            &provider,
            "1",
            FEES,
            Account {
                number: 0,
                sequence,
            },
        )
    };

    // A refusal is a result with the SDK's code, not an error.
    let stale = call(
        url,
        "broadcast_tx_sync",
        json!({"tx": BASE64.encode(payout(4))}),
    );
    check(
        &stale,
        &json!({"code": 32, "data": "", "log": "<string>", "codespace": "sdk", "hash": "<hex32>"}),
        "refused",
    );
    assert!(stale["log"]
        .as_str()
        .unwrap()
        .contains("account sequence mismatch, expected 0, got 4"));

    // broadcast_tx_commit waits for the block and answers both results.
    let committed = call(
        url,
        "broadcast_tx_commit",
        json!({"tx": BASE64.encode(payout(0))}),
    );
    check(
        &committed,
        &json!({"check_tx": exec_result(), "tx_result": exec_result(), "hash": "<hex32>", "height": "<int64>"}),
        "broadcast_tx_commit",
    );
    assert_eq!(
        (
            &committed["check_tx"]["code"],
            &committed["tx_result"]["code"]
        ),
        (&json!(0), &json!(0))
    );
    assert!(
        committed["height"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // The same bytes again: CometBFT's cache answers before the application.
    let again = post(
        url,
        "broadcast_tx_sync",
        json!({"tx": BASE64.encode(payout(0))}),
    );
    assert_eq!(
        error(&again, -32603, "Internal error"),
        "tx already exists in cache"
    );
    // A refusal at commit: the check result, an empty result, height 0.
    let refused = call(
        url,
        "broadcast_tx_commit",
        json!({"tx": BASE64.encode(payout(9))}),
    );
    assert_eq!(
        (
            &refused["check_tx"]["code"],
            &refused["height"],
            &refused["tx_result"]["code"]
        ),
        (&json!(32), &json!("0"), &json!(0))
    );
    // The async form does not wait for CheckTx.
    let (code, response) = get(
        url,
        &format!("broadcast_tx_async?tx=0x{}", hex::encode(payout(1))),
    );
    assert_eq!(code, 200, "{response}");
    check(
        &response["result"],
        &json!({"code": 0, "data": "", "log": "", "codespace": "", "hash": "<hex32>"}),
        "broadcast_tx_async",
    );
    wait_for(&server, response["result"]["hash"].as_str().unwrap());
}

#[test]
fn tx_search_pages_orders_and_filters_by_events() {
    let (net, escrow, provider) = setup();
    let server = DevnetServer::start(net, "127.0.0.1:0", 3_600_000).unwrap();
    let url = server.url();
    let mut hashes = Vec::new();
    for sequence in 0..5 {
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
        hashes.push(server.with(|net| net.broadcast(&bytes)).unwrap().hash);
        server.with(|net| net.produce_block(0, true));
    }
    let search = |params: Value| -> (Vec<String>, String) {
        let found = call(url, "tx_search", params);
        let hashes = found["txs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["hash"].as_str().unwrap().to_owned())
            .collect();
        (hashes, found["total_count"].as_str().unwrap().to_owned())
    };
    let q = format!(
        "transfer.recipient='{}' AND tx.height>=2",
        provider.address()
    );
    assert_eq!(
        search(json!({"query": q})),
        (hashes[1..].to_vec(), "4".into())
    );
    assert_eq!(
        search(json!({"query": q, "per_page": 3, "page": 2})).0,
        hashes[4..].to_vec()
    );
    let mut reversed = hashes[1..].to_vec();
    reversed.reverse();
    assert_eq!(search(json!({"query": q, "order_by": "desc"})).0, reversed);
    // per_page below 1 means the default (30); above 100 means 100.
    assert_eq!(search(json!({"query": q, "per_page": 0})).0.len(), 4);
    assert_eq!(search(json!({"query": q, "per_page": 500})).0.len(), 4);
    // A node with a stricter page limit makes shorter pages than asked.
    server.faults(|f| f.max_per_page = Some(2));
    assert_eq!(
        search(json!({"query": q, "per_page": 100, "page": 2})).0,
        hashes[3..].to_vec()
    );
    let by_hash = format!("tx.hash='{}'", hashes[2]);
    assert_eq!(
        search(json!({"query": by_hash})),
        (vec![hashes[2].clone()], "1".into())
    );
    let escrow_query = format!("message.sender='{}' AND tx.height<=1", escrow.address());
    assert_eq!(
        search(json!({"query": escrow_query})).0,
        hashes[..1].to_vec()
    );
}
