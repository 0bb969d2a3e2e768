//! The chain's methods: `status`, `abci_info`, `block`, `block_results`, `blockchain`,
//! `commit` and `validators`, in CometBFT 0.38's shapes (64-bit integers as strings,
//! hashes and addresses as upper-case hex, signatures and transactions in base64).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmrs::proto::tendermint::google::protobuf::Timestamp;
use cosmrs::proto::tendermint::types as pb;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::rpc::{self, Args, RpcError};
use super::{txs, Node};
use crate::devnet::consensus::{BLOCK_PROTOCOL, VOTING_POWER};
use crate::devnet::{Block, Devnet};

/// The CometBFT release whose RPC the devnet answers as; clients pick their dialect by it.
const COMETBFT_VERSION: &str = "0.38.17";
/// CometBFT 0.38's p2p protocol version.
const P2P_PROTOCOL: u64 = 8;
const MONIKER: &str = "gpumarket-devnet";
/// `blockchain` answers at most this many headers.
const MAX_HEADERS: u64 = 20;

fn hex(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

/// RFC 3339 with nanoseconds and no trailing zeros, as Go's `RFC3339Nano` prints.
pub(super) fn time(t: Option<Timestamp>) -> String {
    let t = t.unwrap_or_default();
    let Some(at) = chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32) else {
        return String::new();
    };
    let fraction = format!("{:09}", at.timestamp_subsec_nanos());
    let fraction = fraction.trim_end_matches('0');
    let dot = if fraction.is_empty() { "" } else { "." };
    format!("{}{dot}{fraction}Z", at.format("%Y-%m-%dT%H:%M:%S"))
}

fn block_id(id: Option<&pb::BlockId>) -> Value {
    let id = id.cloned().unwrap_or_default();
    let parts = id.part_set_header.unwrap_or_default();
    json!({
        "hash": hex(&id.hash),
        "parts": {"total": parts.total, "hash": hex(&parts.hash)},
    })
}

fn header(h: &pb::Header) -> Value {
    let version = h.version.unwrap_or_default();
    json!({
        "version": {"block": version.block.to_string(), "app": version.app.to_string()},
        "chain_id": h.chain_id,
        "height": h.height.to_string(),
        "time": time(h.time),
        "last_block_id": block_id(h.last_block_id.as_ref()),
        "last_commit_hash": hex(&h.last_commit_hash),
        "data_hash": hex(&h.data_hash),
        "validators_hash": hex(&h.validators_hash),
        "next_validators_hash": hex(&h.next_validators_hash),
        "consensus_hash": hex(&h.consensus_hash),
        "app_hash": hex(&h.app_hash),
        "last_results_hash": hex(&h.last_results_hash),
        "evidence_hash": hex(&h.evidence_hash),
        "proposer_address": hex(&h.proposer_address),
    })
}

fn commit(c: &pb::Commit) -> Value {
    let signatures: Vec<Value> = c
        .signatures
        .iter()
        .map(|s| {
            json!({
                "block_id_flag": s.block_id_flag,
                "validator_address": hex(&s.validator_address),
                "timestamp": time(s.timestamp),
                "signature": BASE64.encode(&s.signature),
            })
        })
        .collect();
    json!({
        "height": c.height.to_string(),
        "round": c.round,
        "block_id": block_id(c.block_id.as_ref()),
        "signatures": signatures,
    })
}

fn pub_key(net: &Devnet) -> Value {
    json!({
        "type": "tendermint/PubKeyEd25519",
        "value": BASE64.encode(net.validator().public_key()),
    })
}

fn at<'a>(args: &Args, net: &'a Devnet) -> Result<&'a Block, RpcError> {
    let height = rpc::height(args, net.height())?;
    Ok(net.block(height).expect("heights up to the latest exist"))
}

pub(super) fn status(node: &Node) -> Value {
    let net = node.chain();
    // What CometBFT reads from its block store: the latest block's hash and header (its app
    // hash is the state before it), and empty values before the first block.
    let describe = |b: Option<&Block>| match b {
        Some(b) => (
            hex(&b.sealed.id.hash),
            hex(&b.sealed.header.app_hash),
            b.height.to_string(),
            time(b.sealed.header.time),
        ),
        None => (
            String::new(),
            String::new(),
            "0".to_owned(),
            "1970-01-01T00:00:00Z".to_owned(),
        ),
    };
    let (latest_hash, latest_app_hash, latest_height, latest_time) =
        describe(net.block(net.height()));
    let (earliest_hash, earliest_app_hash, earliest_height, earliest_time) = describe(net.block(1));
    let sync_info = json!({
        "latest_block_hash": latest_hash,
        "latest_app_hash": latest_app_hash,
        "latest_block_height": latest_height,
        "latest_block_time": latest_time,
        "earliest_block_hash": earliest_hash,
        "earliest_app_hash": earliest_app_hash,
        "earliest_block_height": earliest_height,
        "earliest_block_time": earliest_time,
        "catching_up": false,
    });
    let node_id = Sha256::digest(format!("gpumarket devnet node\0{}", net.chain_id));
    json!({
        "node_info": {
            "protocol_version": {
                "p2p": P2P_PROTOCOL.to_string(),
                "block": BLOCK_PROTOCOL.to_string(),
                "app": "0",
            },
            "id": hex::encode(&node_id[..20]),
            // No p2p: the RPC's is the only listener.
            "listen_addr": format!("tcp://{}", node.address),
            "network": net.chain_id,
            "version": COMETBFT_VERSION,
            "channels": "",
            "moniker": MONIKER,
            "other": {"tx_index": "on", "rpc_address": format!("tcp://{}", node.address)},
        },
        "sync_info": sync_info,
        "validator_info": {
            "address": hex(&net.validator().address()),
            "pub_key": pub_key(&net),
            "voting_power": VOTING_POWER.to_string(),
        },
    })
}

pub(super) fn abci_info(node: &Node) -> Value {
    let net = node.chain();
    json!({"response": {
        "data": MONIKER,
        "version": env!("CARGO_PKG_VERSION"),
        "app_version": "0",
        "last_block_height": net.height().to_string(),
        "last_block_app_hash": BASE64.encode(net.app_hash()),
    }})
}

pub(super) fn block(args: &Args, node: &Node) -> Result<Value, RpcError> {
    let net = node.chain();
    let b = at(args, &net)?;
    let txs: Vec<String> = b
        .txs
        .iter()
        .filter_map(|h| net.tx(h).map(|(bytes, _)| BASE64.encode(bytes)))
        .collect();
    Ok(json!({
        "block_id": block_id(Some(&b.sealed.id)),
        "block": {
            "header": header(&b.sealed.header),
            "data": {"txs": txs},
            "evidence": {"evidence": []},
            "last_commit": commit(&b.sealed.last_commit),
        },
    }))
}

pub(super) fn block_results(args: &Args, node: &Node) -> Result<Value, RpcError> {
    let net = node.chain();
    let b = at(args, &net)?;
    let results: Vec<Value> = b
        .txs
        .iter()
        .filter_map(|h| net.tx(h).map(|(_, r)| txs::result(r)))
        .collect();
    Ok(json!({
        "height": b.height.to_string(),
        "txs_results": if results.is_empty() { Value::Null } else { json!(results) },
        "finalize_block_events": [],
        "validator_updates": null,
        "consensus_param_updates": null,
        "app_hash": BASE64.encode(&b.app_hash),
    }))
}

pub(super) fn blockchain(args: &Args, node: &Node) -> Result<Value, RpcError> {
    let net = node.chain();
    let latest = net.height();
    // CometBFT's `filterMinMax`: 0 means "from the first" and "to the latest", and at most
    // 20 headers, the highest first.
    let (min, max) = (
        args.int("minHeight").unwrap_or(0),
        args.int("maxHeight").unwrap_or(0),
    );
    if min < 0 || max < 0 {
        return Err(RpcError::internal("heights must be non-negative".into()));
    }
    let max = if max == 0 {
        latest
    } else {
        (max as u64).min(latest)
    };
    let min = (min as u64)
        .max(1)
        .max((max + 1).saturating_sub(MAX_HEADERS));
    if min > max {
        return Err(RpcError::internal(format!(
            "min height {min} can't be greater than max height {max}"
        )));
    }
    let metas: Vec<Value> = (min..=max)
        .rev()
        .filter_map(|h| net.block(h))
        .map(|b| {
            json!({
                "block_id": block_id(Some(&b.sealed.id)),
                "block_size": b.sealed.size.to_string(),
                "header": header(&b.sealed.header),
                "num_txs": b.txs.len().to_string(),
            })
        })
        .collect();
    Ok(json!({"last_height": latest.to_string(), "block_metas": metas}))
}

pub(super) fn commit_at(args: &Args, node: &Node) -> Result<Value, RpcError> {
    let net = node.chain();
    let b = at(args, &net)?;
    Ok(json!({
        "signed_header": {"header": header(&b.sealed.header), "commit": commit(&b.sealed.commit)},
        // The latest block's commit is only this node's view until the next block carries it.
        "canonical": b.height < net.height(),
    }))
}

pub(super) fn validators(args: &Args, node: &Node) -> Result<Value, RpcError> {
    let net = node.chain();
    let b = at(args, &net)?;
    let per_page = rpc::per_page(args);
    let page = rpc::page(args, per_page, 1)?;
    let all = [json!({
        "address": hex(&net.validator().address()),
        "pub_key": pub_key(&net),
        "voting_power": VOTING_POWER.to_string(),
        "proposer_priority": "0",
    })];
    let shown: Vec<&Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    Ok(json!({
        "block_height": b.height.to_string(),
        "validators": shown,
        "count": shown.len().to_string(),
        "total": all.len().to_string(),
    }))
}
