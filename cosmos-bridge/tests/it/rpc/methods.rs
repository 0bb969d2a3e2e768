//! Every method, in CometBFT's shapes, over POST and the GET URI form.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{
    block_id, call, check, commit, exec_result, get, header, no_block_id, serving, tx_response,
    validator,
};

#[test]
fn every_method_answers_in_cometbfts_shapes_over_post_and_get() {
    let (_server, url, hashes) = serving();
    let status = call(&url, "status", json!({}));
    check(
        &status,
        &json!({
            "node_info": {
                "protocol_version": {"p2p": "8", "block": "11", "app": "0"},
                "id": "<id>",
                "listen_addr": "<string>",
                "network": "gpumarket-devnet-1",
                "version": "<string>",
                "channels": "<string>",
                "moniker": "<string>",
                "other": {"tx_index": "on", "rpc_address": "<string>"},
            },
            "sync_info": {
                "latest_block_hash": "<hex32>",
                "latest_app_hash": "<hex32>",
                "latest_block_height": "2",
                "latest_block_time": "2023-11-14T22:13:21.25Z",
                "earliest_block_hash": "<hex32>",
                "earliest_app_hash": "<hex32>",
                "earliest_block_height": "1",
                "earliest_block_time": "2023-11-14T22:13:20Z",
                "catching_up": false,
            },
            "validator_info": {
                "address": "<hex20>",
                "pub_key": {"type": "tendermint/PubKeyEd25519", "value": "<base64>"},
                "voting_power": "10",
            },
        }),
        "status",
    );
    assert!(status["node_info"]["version"]
        .as_str()
        .unwrap()
        .starts_with("0.38."));
    assert_eq!(call(&url, "health", json!({})), json!({}));
    check(
        &call(&url, "abci_info", json!({})),
        &json!({"response": {
            "data": "<string>", "version": "<string>", "app_version": "0",
            "last_block_height": "2", "last_block_app_hash": "<base64>",
        }}),
        "abci_info",
    );

    // Block 1 has no block or commit before it: CometBFT shows them empty.
    check(
        &call(&url, "block", json!({"height": "1"})),
        &json!({
            "block_id": block_id(),
            "block": {
                "header": header(no_block_id()),
                "data": {"txs": []},
                "evidence": {"evidence": []},
                "last_commit": {"height": "0", "round": 0, "block_id": no_block_id(), "signatures": []},
            },
        }),
        "block 1",
    );
    let block = call(&url, "block", json!({}));
    check(
        &block,
        &json!({
            "block_id": block_id(),
            "block": {
                "header": header(block_id()),
                "data": {"txs": ["<base64>"]},
                "evidence": {"evidence": []},
                "last_commit": commit(),
            },
        }),
        "block",
    );
    assert_eq!(block["block"]["header"]["height"], "2");
    assert_eq!(block["block"]["data"]["txs"].as_array().unwrap().len(), 2);
    check(
        &call(&url, "block_results", json!({"height": "2"})),
        &json!({
            "height": "2",
            "txs_results": [exec_result()],
            "finalize_block_events": [],
            "validator_updates": null,
            "consensus_param_updates": null,
            "app_hash": "<base64>",
        }),
        "block_results",
    );
    check(
        &call(&url, "block_results", json!({"height": "1"}))["txs_results"],
        &Value::Null,
        "block_results of an empty block",
    );
    let chain = call(
        &url,
        "blockchain",
        json!({"minHeight": "2", "maxHeight": "2"}),
    );
    check(
        &chain,
        &json!({
            "last_height": "2",
            "block_metas": [{
                "block_id": block_id(),
                "block_size": "<int64>",
                "header": header(block_id()),
                "num_txs": "2",
            }],
        }),
        "blockchain",
    );
    let heights: Vec<Value> = call(&url, "blockchain", json!({}))["block_metas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["header"]["height"].clone())
        .collect();
    assert_eq!(heights, [json!("2"), json!("1")], "the highest first");
    // A block's commit is canonical once the next block carries it.
    for (height, last, canonical) in [("1", no_block_id(), true), ("2", block_id(), false)] {
        check(
            &call(&url, "commit", json!({"height": height})),
            &json!({"signed_header": {"header": header(last), "commit": commit()}, "canonical": canonical}),
            "commit",
        );
    }
    assert_eq!(
        call(&url, "commit", json!({"height": "1"}))["signed_header"]["commit"],
        block["block"]["last_commit"],
        "block 2 carries block 1's commit"
    );
    check(
        &call(&url, "validators", json!({})),
        &json!({"block_height": "2", "validators": [validator()], "count": "1", "total": "1"}),
        "validators",
    );

    let raw_hash = hex::decode(&hashes[0]).unwrap();
    let tx = call(
        &url,
        "tx",
        json!({"hash": BASE64.encode(&raw_hash), "prove": false}),
    );
    check(&tx, &tx_response(), "tx");
    assert_eq!(
        (&tx["hash"], &tx["height"], &tx["index"]),
        (&json!(hashes[0]), &json!("2"), &json!(0))
    );
    let mut proven_shape = tx_response();
    proven_shape["proof"] = json!({
        "root_hash": "<hex32>",
        "data": "<base64>",
        "proof": {"total": "2", "index": "0", "leaf_hash": "<base64>", "aunts": ["<base64>"]},
    });
    let proven = call(
        &url,
        "tx",
        json!({"hash": BASE64.encode(&raw_hash), "prove": true}),
    );
    check(&proven, &proven_shape, "tx with proof");
    assert_eq!(
        proven["proof"]["root_hash"],
        block["block"]["header"]["data_hash"]
    );
    // The proof leads from the transaction's hash to the block's data hash (RFC 6962 leaf
    // and inner nodes).
    let decode = |v: &Value| BASE64.decode(v.as_str().unwrap()).unwrap();
    let leaf = decode(&proven["proof"]["proof"]["leaf_hash"]);
    assert_eq!(
        leaf,
        Sha256::new()
            .chain_update([0])
            .chain_update(&raw_hash)
            .finalize()
            .to_vec()
    );
    let aunt = decode(&proven["proof"]["proof"]["aunts"][0]);
    let root = Sha256::new()
        .chain_update([1])
        .chain_update(&leaf)
        .chain_update(&aunt)
        .finalize();
    assert_eq!(json!(hex::encode_upper(root)), proven["proof"]["root_hash"]);
    check(
        &call(&url, "tx_search", json!({"query": "tx.height>=1"})),
        &json!({"txs": [tx_response()], "total_count": "2"}),
        "tx_search",
    );

    // The URI form gives the same answers, with CometBFT's argument syntax, and the id -1.
    let same = |target: &str, method: &str, params: Value| {
        let (code, response) = get(&url, target);
        assert_eq!(code, 200, "{target}: {response}");
        assert_eq!(response["id"], -1, "{target}");
        assert_eq!(response["result"], call(&url, method, params), "{target}");
    };
    same("status", "status", json!({}));
    same("health", "health", json!([]));
    same("abci_info", "abci_info", json!(null));
    same("block?height=2", "block", json!({"height": 2}));
    same("block_results?height=2", "block_results", json!(["2"]));
    same("commit?height=%221%22", "commit", json!({"height": "1"}));
    same(
        "validators?height=2&per_page=5",
        "validators",
        json!({"height": "2", "per_page": 5}),
    );
    same(
        "blockchain?minHeight=1&maxHeight=2",
        "blockchain",
        json!({"minHeight": 1, "maxHeight": 2}),
    );
    same(
        &format!("tx?hash=0x{}", hashes[1]),
        "tx",
        json!([BASE64.encode(hex::decode(&hashes[1]).unwrap())]),
    );
    same(
        "tx_search?query=%22tx.height%3E%3D1%22&order_by=%22desc%22&per_page=1&page=2",
        "tx_search",
        json!({"query": "tx.height>=1", "order_by": "desc", "per_page": "1", "page": "2"}),
    );
}
