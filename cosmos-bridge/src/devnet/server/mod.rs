//! The devnet over HTTP: CometBFT 0.38's JSON-RPC, POSTed to `/` or as the URI form
//! (`GET /block?height=5`), on a loopback port; a block every `block_ms`; and the failures
//! real chains have, on command ([`Faults`]). [`rpc`] reads the parameters of both forms,
//! [`info`] serves the chain (`status`, `block`, `commit`, ...), [`txs`] the transactions
//! (`tx`, `tx_search`, `broadcast_tx_*`) and [`abci`] the application's queries.
//!
//! HTTP is served by hand, one short-lived connection per request: clients need nothing
//! more, and the simulator then adds no web framework to the build.

use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::Devnet;

mod abci;
mod info;
mod rpc;
mod txs;

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
    /// `tx_search` pages hold at most this many transactions, whatever `per_page` asks,
    /// as nodes behind a stricter limit answer (None: CometBFT's own limit of 100).
    pub max_per_page: Option<usize>,
}

/// What the request handlers share.
#[derive(Debug)]
struct Node {
    chain: Mutex<Devnet>,
    faults: Mutex<Faults>,
    /// Notified after each block, for `broadcast_tx_commit`.
    new_block: Condvar,
    /// The listener's address, e.g. `127.0.0.1:26657`.
    address: String,
}

impl Node {
    fn chain(&self) -> MutexGuard<'_, Devnet> {
        self.chain.lock().expect("chain lock")
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().expect("faults lock")
    }
}

/// A devnet served on loopback. Stops when dropped.
#[derive(Debug)]
pub struct DevnetServer {
    url: String,
    node: Arc<Node>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl DevnetServer {
    /// Serves `devnet` on `addr` (e.g. `127.0.0.1:0` for any free port), making a block
    /// every `block_ms` milliseconds.
    pub fn start(devnet: Devnet, addr: &str, block_ms: u64) -> std::io::Result<DevnetServer> {
        Self::serve(devnet, addr, block_ms, None)
    }

    /// As [`DevnetServer::start`], keeping the chain in `path` (one JSON line per block):
    /// the blocks already there are replayed onto `genesis` first, so a restarted devnet
    /// resumes its chain (only the mempool is lost, as on a real node). A last line cut
    /// short by a crash is cut off: its block was never served.
    pub fn start_persistent(
        mut genesis: Devnet,
        addr: &str,
        block_ms: u64,
        path: &std::path::Path,
    ) -> std::io::Result<DevnetServer> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut whole = 0u64;
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line)?;
            if read == 0 || line.last() != Some(&b'\n') {
                break;
            }
            let block: Value = match serde_json::from_slice(&line) {
                Ok(block) => block,
                // A torn write can also leave garbage before a newline: only as the last
                // line is that a crash; anywhere else the file is not a chain.
                Err(_) if reader.fill_buf()?.is_empty() => break,
                Err(e) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: block {}: {e}", path.display(), genesis.height() + 1),
                    ))
                }
            };
            let txs = block["txs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| BASE64.decode(t.as_str()?).ok())
                .collect();
            genesis.replay_block(block["time_ms"].as_i64().unwrap_or(0), txs);
            whole += read as u64;
        }
        drop(reader);
        if file.seek(std::io::SeekFrom::End(0))? != whole {
            file.set_len(whole)?;
            file.sync_data()?;
        }
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
        let address = listener.local_addr()?.to_string();
        let node = Arc::new(Node {
            chain: Mutex::new(devnet),
            faults: Mutex::new(Faults::default()),
            new_block: Condvar::new(),
            address: address.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (node, stop) = (node.clone(), stop.clone());
            std::thread::Builder::new()
                .name("devnet-rpc".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                let node = node.clone();
                                std::thread::spawn(move || serve(stream, &node));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })?
        };
        let blocks = {
            let (node, stop) = (node.clone(), stop.clone());
            std::thread::Builder::new()
                .name("devnet-blocks".into())
                .spawn(move || {
                    let mut next = std::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        // Parked until the block is due; a stop unparks it at once.
                        next += Duration::from_millis(block_ms);
                        while std::time::Instant::now() < next && !stop.load(Ordering::Relaxed) {
                            std::thread::park_timeout(
                                next.saturating_duration_since(std::time::Instant::now()),
                            );
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let include = {
                            let mut f = node.faults();
                            if f.down {
                                continue;
                            }
                            let delayed = f.delay_blocks > 0;
                            f.delay_blocks = f.delay_blocks.saturating_sub(1);
                            !delayed
                        };
                        let mut net = node.chain();
                        let height = net.produce_block(now_ms(), include);
                        if let Some(file) = chain_file.as_mut() {
                            let block = net.block(height).expect("just made");
                            let txs: Vec<String> = block
                                .txs
                                .iter()
                                .filter_map(|h| net.tx(h).map(|(b, _)| BASE64.encode(b)))
                                .collect();
                            // One write and a sync per block, before the block is served
                            // (the lock is held): a crash leaves at most a torn last line.
                            let line =
                                format!("{}\n", json!({"time_ms": block.time_ms, "txs": txs}));
                            if file
                                .write_all(line.as_bytes())
                                .and_then(|()| file.sync_data())
                                .is_err()
                            {
                                tracing::error!("the devnet could not write its chain file");
                            }
                        }
                        drop(net);
                        node.new_block.notify_all();
                    }
                })?
        };
        Ok(DevnetServer {
            url: format!("http://{address}"),
            node,
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
        f(&mut self.node.chain())
    }

    /// Sets the failures to inject.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.node.faults());
    }
}

impl Drop for DevnetServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The largest request body taken: a transaction is far smaller.
const MAX_BODY: usize = 1 << 20;

/// One request: JSON-RPC (a call or a batch) POSTed to `/`, or a method's URI form.
fn serve(stream: TcpStream, node: &Node) {
    if node.faults().down {
        return; // dropped: the client sees the connection closed
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (verb, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let (mut length, mut chunked) = (0usize, false);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    } else if name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = true;
                    }
                }
            }
        }
    }
    if chunked || length > MAX_BODY {
        return respond(
            &stream,
            411,
            "text/plain",
            "send the body with a Content-Length of at most 1 MiB",
        );
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let method = path.trim_start_matches('/');
    if verb == "POST" && method.is_empty() {
        let (status, answer) = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(calls)) => (
                200,
                Value::Array(calls.iter().map(|c| rpc::json_call(c, node)).collect()),
            ),
            Ok(call) => (200, rpc::json_call(&call, node)),
            Err(e) => (
                500,
                rpc::response(
                    &json!(-1),
                    Err(rpc::RpcError::parse(format!(
                        "error unmarshaling request: {e}"
                    ))),
                ),
            ),
        };
        return respond(&stream, status, "application/json", &answer.to_string());
    }
    if method.is_empty() {
        let routes: String = rpc::METHODS
            .iter()
            .map(|(name, _)| {
                format!(
                    "<a href=\"//{}/{name}\">//{}/{name}</a><br>",
                    node.address, node.address
                )
            })
            .collect();
        return respond(
            &stream,
            200,
            "text/html",
            &format!("<html><body>Available endpoints:<br>{routes}</body></html>"),
        );
    }
    match rpc::uri_call(method, query, node) {
        Some((status, answer)) => respond(&stream, status, "application/json", &answer.to_string()),
        None => respond(&stream, 404, "text/plain", "404 page not found\n"),
    }
}

fn respond(mut stream: &TcpStream, status: u16, content_type: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        411 => "Length Required",
        _ => "Internal Server Error",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}
