//! The methods served, their parameters in both of CometBFT's forms, and its error shapes.
//!
//! JSON-RPC parameters come by name (an object) or by position (an array); integers as
//! numbers or strings, `[]byte` parameters in base64, `HexBytes` (`abci_query`'s `data`)
//! in hex. The URI form follows CometBFT's rules: integers bare (`height=5`), strings
//! quoted (`query="tx.height=5"`), bytes as `0x`-prefixed hex or as a quoted string taken
//! byte for byte. JSON-RPC errors answer HTTP 200; the URI form answers errors with 500 and
//! the id -1, as CometBFT does.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{abci, info, txs, Node};

/// A JSON-RPC error: CometBFT's code, message and the detail in `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RpcError {
    code: i64,
    message: &'static str,
    data: String,
}

impl RpcError {
    pub(super) fn parse(data: String) -> RpcError {
        RpcError {
            code: -32700,
            message: "Parse error",
            data,
        }
    }

    pub(super) fn invalid_params(data: String) -> RpcError {
        RpcError {
            code: -32602,
            message: "Invalid params",
            data,
        }
    }

    /// What CometBFT answers when a method fails (a height out of range, a hash not found).
    pub(super) fn internal(data: String) -> RpcError {
        RpcError {
            code: -32603,
            message: "Internal error",
            data,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Int,
    Text,
    /// `[]byte`: base64 in JSON.
    Bytes,
    /// `HexBytes`: hex in JSON.
    Hex,
    Bool,
}

use Kind::*;

/// Every method served, with its parameters in CometBFT's order.
pub(super) const METHODS: &[(&str, &[(&str, Kind)])] = &[
    ("health", &[]),
    ("status", &[]),
    ("abci_info", &[]),
    (
        "abci_query",
        &[
            ("path", Text),
            ("data", Hex),
            ("height", Int),
            ("prove", Bool),
        ],
    ),
    ("block", &[("height", Int)]),
    ("block_results", &[("height", Int)]),
    ("blockchain", &[("minHeight", Int), ("maxHeight", Int)]),
    ("commit", &[("height", Int)]),
    (
        "validators",
        &[("height", Int), ("page", Int), ("per_page", Int)],
    ),
    ("tx", &[("hash", Bytes), ("prove", Bool)]),
    (
        "tx_search",
        &[
            ("query", Text),
            ("prove", Bool),
            ("page", Int),
            ("per_page", Int),
            ("order_by", Text),
        ],
    ),
    ("broadcast_tx_sync", &[("tx", Bytes)]),
    ("broadcast_tx_async", &[("tx", Bytes)]),
    ("broadcast_tx_commit", &[("tx", Bytes)]),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    Bool(bool),
}

/// A call's parameters, typed.
#[derive(Debug, Default)]
pub(super) struct Args(HashMap<&'static str, Arg>);

impl Args {
    pub(super) fn int(&self, name: &str) -> Option<i64> {
        match self.0.get(name) {
            Some(Arg::Int(n)) => Some(*n),
            _ => None,
        }
    }

    pub(super) fn text(&self, name: &str) -> Option<&str> {
        match self.0.get(name) {
            Some(Arg::Text(t)) => Some(t),
            _ => None,
        }
    }

    pub(super) fn bytes(&self, name: &str) -> Option<&[u8]> {
        match self.0.get(name) {
            Some(Arg::Bytes(b)) => Some(b),
            _ => None,
        }
    }

    pub(super) fn flag(&self, name: &str) -> bool {
        matches!(self.0.get(name), Some(Arg::Bool(true)))
    }
}

fn spec(method: &str) -> Option<&'static [(&'static str, Kind)]> {
    METHODS
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, params)| *params)
}

fn from_json(params: &[(&'static str, Kind)], given: &Value) -> Result<Args, String> {
    let mut args = Args::default();
    for (i, (name, kind)) in params.iter().enumerate() {
        let value = match given {
            Value::Object(map) => map.get(*name),
            Value::Array(list) => list.get(i),
            Value::Null => None,
            other => return Err(format!("params must be an object or an array, got {other}")),
        };
        let value = match value {
            None | Some(Value::Null) => continue,
            Some(v) => v,
        };
        let bad = || format!("{name}: {value} is not {kind:?}");
        let arg = match (kind, value) {
            (Int, Value::Number(n)) => Arg::Int(n.as_i64().ok_or_else(bad)?),
            (Int, Value::String(s)) => Arg::Int(s.parse().map_err(|_| bad())?),
            (Text, Value::String(s)) => Arg::Text(s.clone()),
            (Bytes, Value::String(s)) => Arg::Bytes(BASE64.decode(s).map_err(|_| bad())?),
            (Hex, Value::String(s)) => Arg::Bytes(hex::decode(s).map_err(|_| bad())?),
            (Bool, Value::Bool(b)) => Arg::Bool(*b),
            _ => return Err(bad()),
        };
        args.0.insert(name, arg);
    }
    Ok(args)
}

fn from_uri(params: &[(&'static str, Kind)], query: &str) -> Result<Args, String> {
    let given: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let mut args = Args::default();
    for (name, kind) in params {
        let Some((_, value)) = given.iter().find(|(k, _)| k == name) else {
            continue;
        };
        let bad = || format!("{name}: {value:?} is not {kind:?}");
        let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
        let hex_digits = value
            .strip_prefix("0x")
            .or_else(|| value.strip_prefix("0X"));
        let arg = match kind {
            Int => Arg::Int(value.trim_matches('"').parse().map_err(|_| bad())?),
            Bool => Arg::Bool(value.parse().map_err(|_| bad())?),
            Text => match hex_digits {
                Some(h) => Arg::Text(
                    String::from_utf8(hex::decode(h).map_err(|_| bad())?).map_err(|_| bad())?,
                ),
                None if quoted => {
                    Arg::Text(serde_json::from_str::<String>(value).map_err(|_| bad())?)
                }
                None => return Err(bad()),
            },
            Bytes | Hex => match hex_digits {
                Some(h) => Arg::Bytes(hex::decode(h).map_err(|_| bad())?),
                None if quoted => Arg::Bytes(
                    serde_json::from_str::<String>(value)
                        .map_err(|_| bad())?
                        .into_bytes(),
                ),
                None => return Err(bad()),
            },
        };
        args.0.insert(name, arg);
    }
    Ok(args)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON-RPC response.
pub(super) fn response(id: &Value, answer: Result<Value, RpcError>) -> Value {
    match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({
            "jsonrpc": "2.0", "id": id,
            "error": {"code": e.code, "message": e.message, "data": e.data},
        }),
    }
}

/// One JSON-RPC call.
pub(super) fn json_call(call: &Value, node: &Node) -> Value {
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let method = call["method"].as_str().unwrap_or_default();
    let answer = match spec(method) {
        None => Err(RpcError {
            code: -32601,
            message: "Method not found",
            data: String::new(),
        }),
        Some(params) => from_json(params, &call["params"])
            .map_err(|e| {
                RpcError::invalid_params(format!("error converting json params to arguments: {e}"))
            })
            .and_then(|args| dispatch(method, &args, node)),
    };
    response(&id, answer)
}

/// A call in the URI form: the HTTP status and the response, or `None` for no such method.
pub(super) fn uri_call(method: &str, query: &str, node: &Node) -> Option<(u16, Value)> {
    let params = spec(method)?;
    let answer = from_uri(params, query)
        .map_err(|e| {
            RpcError::invalid_params(format!("error converting http params to arguments: {e}"))
        })
        .and_then(|args| dispatch(method, &args, node));
    let status = if answer.is_ok() { 200 } else { 500 };
    Some((status, response(&json!(-1), answer)))
}

fn dispatch(method: &str, args: &Args, node: &Node) -> Result<Value, RpcError> {
    match method {
        "health" => Ok(json!({})),
        "status" => Ok(info::status(node)),
        "abci_info" => Ok(info::abci_info(node)),
        "abci_query" => abci::query(args, node),
        "block" => info::block(args, node),
        "block_results" => info::block_results(args, node),
        "blockchain" => info::blockchain(args, node),
        "commit" => info::commit_at(args, node),
        "validators" => info::validators(args, node),
        "tx" => txs::tx(args, node),
        "tx_search" => txs::search(args, node),
        "broadcast_tx_sync" | "broadcast_tx_async" | "broadcast_tx_commit" => {
            txs::broadcast(method, args, node)
        }
        other => unreachable!("{other} is in METHODS without a handler"),
    }
}

/// CometBFT's `validatePage`: pages count from 1, and the last page may be empty only when
/// there is nothing at all.
pub(super) fn page(args: &Args, per_page: usize, total: usize) -> Result<usize, RpcError> {
    let Some(page) = args.int("page") else {
        return Ok(1);
    };
    let pages = total.saturating_sub(1) / per_page + 1;
    if page < 1 || page as usize > pages {
        return Err(RpcError::internal(format!(
            "page should be within [1, {pages}] range, given {page}"
        )));
    }
    Ok(page as usize)
}

/// CometBFT's `validatePerPage`: 30 unless asked, at most 100.
pub(super) fn per_page(args: &Args) -> usize {
    match args.int("per_page") {
        Some(n) if n >= 1 => (n as usize).min(100),
        _ => 30,
    }
}

/// CometBFT's `getHeight`: the latest unless asked, and only heights the node has.
pub(super) fn height(args: &Args, latest: u64) -> Result<u64, RpcError> {
    let Some(height) = args.int("height") else {
        return if latest == 0 {
            Err(RpcError::internal("the chain has no blocks yet".into()))
        } else {
            Ok(latest)
        };
    };
    if height <= 0 {
        return Err(RpcError::internal(format!(
            "height must be greater than 0, but got {height}"
        )));
    }
    if height as u64 > latest {
        return Err(RpcError::internal(format!(
            "height {height} must be less than or equal to the current blockchain height {latest}"
        )));
    }
    Ok(height as u64)
}
