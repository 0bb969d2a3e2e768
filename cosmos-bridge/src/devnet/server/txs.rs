//! The transaction methods: `tx`, `tx_search`, and `broadcast_tx_sync`, `_async` and
//! `_commit`, in CometBFT 0.38's shapes, with the injected faults.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmrs::proto::tendermint::abci::Event;
use serde_json::{json, Value};

use super::rpc::{self, Args, RpcError};
use super::Node;
use crate::devnet::query::Query;
use crate::devnet::{consensus, Devnet, Refused, TxResult};

/// How long `broadcast_tx_commit` waits for the block (CometBFT's default
/// `timeout_broadcast_tx_commit`).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn events(events: &[Event]) -> Value {
    events
        .iter()
        .map(|e| {
            let attributes: Vec<Value> = e
                .attributes
                .iter()
                .map(|a| json!({"key": a.key, "value": a.value, "index": a.index}))
                .collect();
            json!({"type": e.r#type, "attributes": attributes})
        })
        .collect()
}

/// An `ExecTxResult`.
pub(super) fn result(r: &TxResult) -> Value {
    json!({
        "code": r.code,
        "data": BASE64.encode(&r.data),
        "log": r.log,
        "info": "",
        "gas_wanted": r.gas_wanted.to_string(),
        "gas_used": r.gas_used.to_string(),
        "events": events(&r.events),
        "codespace": r.codespace,
    })
}

/// A committed transaction, with its inclusion proof when asked.
fn committed(net: &Devnet, hash: &str, bytes: &[u8], r: &TxResult, prove: bool) -> Value {
    let mut tx = json!({
        "hash": hash,
        "height": r.height.to_string(),
        "index": r.index,
        "tx_result": result(r),
        "tx": BASE64.encode(bytes),
    });
    if prove {
        let block = net.block(r.height).expect("a result's block exists");
        let leaves: Vec<Vec<u8>> = block
            .txs
            .iter()
            .map(|h| hex::decode(h).expect("hashes are hex"))
            .collect();
        let (aunts, leaf) = consensus::merkle_proof(&leaves, r.index as usize);
        tx["proof"] = json!({
            "root_hash": hex::encode_upper(&block.sealed.header.data_hash),
            "data": BASE64.encode(bytes),
            "proof": {
                "total": leaves.len().to_string(),
                "index": r.index.to_string(),
                "leaf_hash": BASE64.encode(leaf),
                "aunts": aunts.iter().map(|a| BASE64.encode(a)).collect::<Vec<_>>(),
            },
        });
    }
    tx
}

pub(super) fn tx(args: &Args, node: &Node) -> Result<Value, RpcError> {
    let hash = hex::encode_upper(args.bytes("hash").unwrap_or_default());
    let net = node.chain();
    net.tx(&hash)
        .map(|(bytes, r)| committed(&net, &hash, bytes, r, args.flag("prove")))
        .ok_or_else(|| RpcError::internal(format!("tx ({hash}) not found")))
}

pub(super) fn search(args: &Args, node: &Node) -> Result<Value, RpcError> {
    let query = Query::parse(args.text("query").unwrap_or_default())
        .map_err(|e| RpcError::internal(e.to_string()))?;
    let descending = match args.text("order_by").unwrap_or_default() {
        "" | "asc" => false,
        "desc" => true,
        _ => {
            return Err(RpcError::internal(
                "expected order_by to be either `asc` or `desc` or empty".into(),
            ))
        }
    };
    let cap = node.faults().max_per_page;
    let net = node.chain();
    let mut found = net.search(&query);
    if descending {
        found.reverse();
    }
    let per_page = cap.map_or(rpc::per_page(args), |cap| {
        rpc::per_page(args).min(cap.max(1))
    });
    let page = rpc::page(args, per_page, found.len())?;
    let txs: Vec<Value> = found
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(hash, bytes, r)| committed(&net, hash, bytes, r, args.flag("prove")))
        .collect();
    Ok(json!({"txs": txs, "total_count": found.len().to_string()}))
}

/// A `ResponseCheckTx`.
fn check_tx(code: u32, codespace: &str, log: &str, gas: (u64, u64), events: &[Event]) -> Value {
    json!({
        "code": code,
        "data": "",
        "log": log,
        "info": "",
        "gas_wanted": gas.0.to_string(),
        "gas_used": gas.1.to_string(),
        "events": self::events(events),
        "codespace": codespace,
    })
}

pub(super) fn broadcast(method: &str, args: &Args, node: &Node) -> Result<Value, RpcError> {
    let bytes = args
        .bytes("tx")
        .ok_or_else(|| RpcError::invalid_params("tx is missing".into()))?;
    let hash = crate::tx::hash(bytes);
    let answer = |code: u32, log: &str, codespace: &str| -> Value {
        json!({
            "code": code,
            "data": "",
            "log": log,
            "codespace": codespace,
            "hash": hash,
        })
    };
    {
        let mut f = node.faults();
        if f.drop_broadcasts > 0 {
            f.drop_broadcasts -= 1;
            return Ok(answer(0, "", ""));
        }
        if f.sequence_mismatches > 0 {
            f.sequence_mismatches -= 1;
            return Ok(answer(
                32,
                "account sequence mismatch (injected by the devnet): incorrect account sequence",
                "sdk",
            ));
        }
    }
    let checked = node.chain().broadcast(bytes);
    let checked = match checked {
        // CometBFT's mempool cache answers a transaction it has seen before the
        // application does, with an error rather than a code.
        Err(Refused { code: 19, .. }) => {
            return Err(RpcError::internal("tx already exists in cache".into()))
        }
        other => other,
    };
    match method {
        "broadcast_tx_sync" => Ok(match &checked {
            Ok(_) => answer(0, "", ""),
            Err(r) => answer(r.code, &r.log, r.codespace),
        }),
        // The async form does not wait for CheckTx: a refused transaction just never lands.
        "broadcast_tx_async" => Ok(answer(0, "", "")),
        _ => {
            let accepted = match checked {
                Ok(a) => a,
                Err(r) => {
                    let gas = (r.gas_wanted, r.gas_used);
                    // CometBFT answers the refusal and an empty result at height 0.
                    let empty = TxResult {
                        height: 0,
                        index: 0,
                        code: 0,
                        codespace: "",
                        log: String::new(),
                        data: Vec::new(),
                        gas_wanted: 0,
                        gas_used: 0,
                        events: Vec::new(),
                    };
                    return Ok(json!({
                        "check_tx": check_tx(r.code, r.codespace, &r.log, gas, &[]),
                        "tx_result": result(&empty),
                        "hash": hash,
                        "height": "0",
                    }));
                }
            };
            let check = check_tx(
                0,
                "",
                "",
                (accepted.gas_wanted, accepted.gas_used),
                &accepted.events,
            );
            let deadline = Instant::now() + COMMIT_TIMEOUT;
            let mut net = node.chain();
            loop {
                if let Some((_, r)) = net.tx(&hash) {
                    return Ok(json!({
                        "check_tx": check,
                        "tx_result": result(r),
                        "hash": hash,
                        "height": r.height.to_string(),
                    }));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(RpcError::internal(
                        "timed out waiting for tx to be included in a block".into(),
                    ));
                }
                net = node
                    .new_block
                    .wait_timeout(net, left)
                    .expect("chain lock")
                    .0;
            }
        }
    }
}
