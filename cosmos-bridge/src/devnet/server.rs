//! The devnet over HTTP: the CometBFT JSON-RPC subset the bridge uses (`status`,
//! `broadcast_tx_sync`, `tx`, `tx_search`, `abci_query` for accounts and balances, `block`)
//! on a loopback port, a block every `block_ms`, and the failures real chains have on
//! command ([`Faults`]).
//!
//! HTTP is served by hand (one short-lived connection per request): the bridge's client
//! needs nothing more, and the simulator then adds no web framework to the build.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmrs::proto::cosmos::auth::v1beta1::{
    BaseAccount, QueryAccountRequest, QueryAccountResponse,
};
use cosmrs::proto::cosmos::bank::v1beta1::{QueryBalanceRequest, QueryBalanceResponse};
use cosmrs::proto::cosmos::base::v1beta1::Coin;
use cosmrs::proto::prost::Message;
use serde_json::{json, Value};

use super::{Devnet, TxResult};

/// Failures to inject, as real chains and their nodes have them.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// The next N broadcasts answer success with the hash but the node loses the
    /// transaction (a crashed node, a full mempool that evicts it).
    pub drop_broadcasts: u32,
    /// The next N broadcasts are refused with code 32 (account sequence mismatch), as a
    /// node with a stale view refuses them.
    pub sequence_mismatches: u32,
    /// The next N blocks include nothing (congestion): transactions wait in the mempool.
    pub delay_blocks: u32,
    /// The node is down: connections are closed unanswered and no blocks are made.
    pub down: bool,
}

/// A devnet served on loopback. Stops when dropped.
#[derive(Debug)]
pub struct DevnetServer {
    url: String,
    chain: Arc<Mutex<Devnet>>,
    faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl DevnetServer {
    /// Serves `devnet` on `addr` (e.g. `127.0.0.1:0` for any free port), making a block
    /// every `block_ms` milliseconds.
    pub fn start(devnet: Devnet, addr: &str, block_ms: u64) -> std::io::Result<DevnetServer> {
        Self::serve(devnet, addr, block_ms, None)
    }

    /// As [`DevnetServer::start`], keeping the chain in `path` (one JSON line per block):
    /// the blocks already there are replayed onto `genesis` first, so a restarted devnet
    /// resumes its chain (only the mempool is lost, as on a real node).
    pub fn start_persistent(
        mut genesis: Devnet,
        addr: &str,
        block_ms: u64,
        path: &std::path::Path,
    ) -> std::io::Result<DevnetServer> {
        if let Ok(file) = std::fs::File::open(path) {
            for line in BufReader::new(file).lines() {
                let line = line?;
                // A line cut short by a crash is the last one; its block was never served.
                let Ok(block) = serde_json::from_str::<Value>(&line) else {
                    break;
                };
                let txs = block["txs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| BASE64.decode(t.as_str()?).ok())
                    .collect();
                genesis.replay_block(block["time_ms"].as_i64().unwrap_or(0), txs);
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Self::serve(genesis, addr, block_ms, Some(file))
    }

    fn serve(
        devnet: Devnet,
        addr: &str,
        block_ms: u64,
        mut chain_file: Option<std::fs::File>,
    ) -> std::io::Result<DevnetServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let chain = Arc::new(Mutex::new(devnet));
        let faults = Arc::new(Mutex::new(Faults::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (chain, faults, stop) = (chain.clone(), faults.clone(), stop.clone());
            std::thread::Builder::new()
                .name("devnet-rpc".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                let (chain, faults) = (chain.clone(), faults.clone());
                                std::thread::spawn(move || serve(stream, &chain, &faults));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })?
        };
        let blocks = {
            let (chain, faults, stop) = (chain.clone(), faults.clone(), stop.clone());
            std::thread::Builder::new()
                .name("devnet-blocks".into())
                .spawn(move || {
                    let mut next = std::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        // Short naps, so a stop is seen soon whatever the block time.
                        next += Duration::from_millis(block_ms);
                        while std::time::Instant::now() < next && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(block_ms.clamp(1, 50)));
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let include = {
                            let mut f = faults.lock().expect("faults lock");
                            if f.down {
                                continue;
                            }
                            let delayed = f.delay_blocks > 0;
                            f.delay_blocks = f.delay_blocks.saturating_sub(1);
                            !delayed
                        };
                        let mut net = chain.lock().expect("chain lock");
                        let height = net.produce_block(now_ms(), include);
                        if let Some(file) = chain_file.as_mut() {
                            let block = net.block(height).expect("just made");
                            let txs: Vec<String> = block
                                .txs
                                .iter()
                                .filter_map(|h| net.tx(h).map(|(b, _)| BASE64.encode(b)))
                                .collect();
                            // Written before the block is served: the lock is held.
                            let line = json!({"time_ms": block.time_ms, "txs": txs});
                            if writeln!(file, "{line}").is_err() {
                                tracing::error!("the devnet could not write its chain file");
                            }
                        }
                    }
                })?
        };
        Ok(DevnetServer {
            url,
            chain,
            faults,
            stop,
            threads: vec![accept, blocks],
        })
    }

    /// The JSON-RPC endpoint, e.g. `http://127.0.0.1:26657`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reads or changes the chain (genesis funding, assertions).
    pub fn with<T>(&self, f: impl FnOnce(&mut Devnet) -> T) -> T {
        f(&mut self.chain.lock().expect("chain lock"))
    }

    /// Sets the failures to inject.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.faults.lock().expect("faults lock"));
    }
}

impl Drop for DevnetServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The largest request body taken: a transaction is far smaller.
const MAX_BODY: usize = 1 << 20;

fn serve(stream: TcpStream, chain: &Mutex<Devnet>, faults: &Mutex<Faults>) {
    if faults.lock().expect("faults lock").down {
        return; // dropped: the client sees the connection closed
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
        }
    }
    let mut body = vec![0u8; length.min(MAX_BODY)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let answer = match serde_json::from_slice::<Value>(&body) {
        Ok(request) => {
            let id = request["id"].clone();
            match handle(&request, chain, faults) {
                Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                Err((code, message, data)) => json!({
                    "jsonrpc": "2.0", "id": id,
                    "error": {"code": code, "message": message, "data": data},
                }),
            }
        }
        Err(e) => json!({
            "jsonrpc": "2.0", "id": -1,
            "error": {"code": -32700, "message": "Parse error", "data": e.to_string()},
        }),
    }
    .to_string();
    let _ = write!(
        &stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{answer}",
        answer.len()
    );
}

type RpcError = (i64, &'static str, String);

fn invalid(data: impl Into<String>) -> RpcError {
    (-32602, "Invalid params", data.into())
}

fn internal(data: impl Into<String>) -> RpcError {
    (-32603, "Internal error", data.into())
}

fn tx_json(hash: &str, bytes: &[u8], result: &TxResult) -> Value {
    json!({
        "hash": hash,
        "height": result.height.to_string(),
        "index": result.index,
        "tx_result": {"code": result.code, "log": result.log, "codespace": if result.code == 0 { "" } else { "sdk" }},
        "tx": BASE64.encode(bytes),
    })
}

fn handle(
    request: &Value,
    chain: &Mutex<Devnet>,
    faults: &Mutex<Faults>,
) -> Result<Value, RpcError> {
    let params = &request["params"];
    let text = |name: &str| {
        params[name]
            .as_str()
            .ok_or_else(|| invalid(format!("{name} missing")))
    };
    match request["method"].as_str().unwrap_or_default() {
        "status" => {
            let net = chain.lock().expect("chain lock");
            let height = net.height();
            let time = net.block(height).map_or(0, |b| b.time_ms);
            Ok(json!({
                "node_info": {"network": net.chain_id, "moniker": "gpumarket-devnet"},
                "sync_info": {
                    "latest_block_height": height.to_string(),
                    "latest_block_time": rfc3339(time),
                    "catching_up": false,
                },
            }))
        }
        "broadcast_tx_sync" => {
            let bytes = BASE64
                .decode(text("tx")?)
                .map_err(|e| invalid(e.to_string()))?;
            let hash = crate::tx::hash(&bytes);
            {
                let mut f = faults.lock().expect("faults lock");
                if f.drop_broadcasts > 0 {
                    f.drop_broadcasts -= 1;
                    return Ok(
                        json!({"code": 0, "data": "", "log": "", "codespace": "", "hash": hash}),
                    );
                }
                if f.sequence_mismatches > 0 {
                    f.sequence_mismatches -= 1;
                    return Ok(json!({
                        "code": 32, "data": "", "codespace": "sdk", "hash": hash,
                        "log": "account sequence mismatch (injected by the devnet)",
                    }));
                }
            }
            let answer = chain.lock().expect("chain lock").broadcast(&bytes);
            Ok(match answer {
                Ok(hash) => {
                    json!({"code": 0, "data": "", "log": "", "codespace": "", "hash": hash})
                }
                Err(r) => {
                    json!({"code": r.code, "data": "", "log": r.log, "codespace": "sdk", "hash": hash})
                }
            })
        }
        "tx" => {
            let hash = BASE64
                .decode(text("hash")?)
                .map_err(|e| invalid(e.to_string()))?;
            let hash: String = hash.iter().map(|b| format!("{b:02X}")).collect();
            let net = chain.lock().expect("chain lock");
            net.tx(&hash)
                .map(|(bytes, result)| tx_json(&hash, bytes, result))
                .ok_or_else(|| internal(format!("tx ({hash}) not found")))
        }
        "tx_search" => {
            let query = text("query")?;
            let (address, as_sender, heights) = parse_query(query)?;
            let page: usize = params["page"]
                .as_str()
                .unwrap_or("1")
                .parse()
                .map_err(|_| invalid("page"))?;
            let per_page: usize = params["per_page"]
                .as_str()
                .unwrap_or("30")
                .parse()
                .map_err(|_| invalid("per_page"))?;
            if page == 0 || !(1..=100).contains(&per_page) {
                return Err(invalid("page starts at 1; per_page is 1 to 100"));
            }
            let net = chain.lock().expect("chain lock");
            let all = net.txs_of(&address, as_sender, heights);
            let txs: Vec<Value> = all
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|(hash, bytes, result)| tx_json(hash, bytes, result))
                .collect();
            Ok(json!({"txs": txs, "total_count": all.len().to_string()}))
        }
        "abci_query" => {
            let data = hex::decode(text("data")?).map_err(|e| invalid(e.to_string()))?;
            let net = chain.lock().expect("chain lock");
            let height = net.height().to_string();
            let (code, log, value) = match text("path")? {
                "/cosmos.auth.v1beta1.Query/Account" => {
                    let request = QueryAccountRequest::decode(data.as_slice())
                        .map_err(|e| invalid(e.to_string()))?;
                    match net.account(&request.address) {
                        Some(account) => {
                            let base = BaseAccount {
                                address: request.address.clone(),
                                pub_key: None,
                                account_number: account.number,
                                sequence: account.sequence,
                            };
                            let any = cosmrs::Any {
                                type_url: "/cosmos.auth.v1beta1.BaseAccount".into(),
                                value: base.encode_to_vec(),
                            };
                            (
                                0,
                                String::new(),
                                QueryAccountResponse { account: Some(any) }.encode_to_vec(),
                            )
                        }
                        None => (
                            22,
                            format!("account {} not found: key not found", request.address),
                            Vec::new(),
                        ),
                    }
                }
                "/cosmos.bank.v1beta1.Query/Balance" => {
                    let request = QueryBalanceRequest::decode(data.as_slice())
                        .map_err(|e| invalid(e.to_string()))?;
                    let amount = if request.denom == net.denom {
                        net.account(&request.address).map_or(0, |a| a.balance)
                    } else {
                        0
                    };
                    let coin = Coin {
                        denom: request.denom,
                        amount: amount.to_string(),
                    };
                    (
                        0,
                        String::new(),
                        QueryBalanceResponse {
                            balance: Some(coin),
                        }
                        .encode_to_vec(),
                    )
                }
                other => (6, format!("unknown query path {other}"), Vec::new()),
            };
            Ok(
                json!({"response": {"code": code, "log": log, "value": BASE64.encode(value), "height": height}}),
            )
        }
        "block" => {
            let net = chain.lock().expect("chain lock");
            let height = match params["height"].as_str() {
                Some(h) => h.parse().map_err(|_| invalid("height"))?,
                None => net.height(),
            };
            let block = net
                .block(height)
                .ok_or_else(|| internal(format!("height {height} is not available")))?;
            let txs: Vec<String> = block
                .txs
                .iter()
                .filter_map(|h| net.tx(h).map(|(bytes, _)| BASE64.encode(bytes)))
                .collect();
            Ok(json!({
                "block_id": {"hash": ""},
                "block": {
                    "header": {"chain_id": net.chain_id, "height": height.to_string(), "time": rfc3339(block.time_ms)},
                    "data": {"txs": txs},
                },
            }))
        }
        other => Err((-32601, "Method not found", other.to_owned())),
    }
}

/// The event queries the bridge sends: `transfer.recipient='ADDR'` or
/// `transfer.sender='ADDR'`, optionally `AND tx.height>=N AND tx.height<=M`.
fn parse_query(query: &str) -> Result<(String, bool, std::ops::RangeInclusive<u64>), RpcError> {
    let (mut address, mut as_sender, mut from, mut to) = (None, false, 1u64, u64::MAX);
    for part in query.split(" AND ") {
        let part = part.trim();
        let quoted = |s: &str| s.trim_matches('\'').to_owned();
        if let Some(v) = part.strip_prefix("transfer.recipient=") {
            address = Some(quoted(v));
        } else if let Some(v) = part.strip_prefix("transfer.sender=") {
            address = Some(quoted(v));
            as_sender = true;
        } else if let Some(v) = part.strip_prefix("tx.height>=") {
            from = v
                .parse()
                .map_err(|_| invalid(format!("bad condition {part}")))?;
        } else if let Some(v) = part.strip_prefix("tx.height<=") {
            to = v
                .parse()
                .map_err(|_| invalid(format!("bad condition {part}")))?;
        } else {
            return Err(invalid(format!("the devnet does not index {part}")));
        }
    }
    let address = address
        .ok_or_else(|| invalid("a transfer.recipient or transfer.sender condition is needed"))?;
    Ok((address, as_sender, from..=to))
}
