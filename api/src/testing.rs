//! A whole market for tests (feature `testing`): the engine runner and the three projectors
//! on threads over an embedded log, a fresh Postgres database, and the API on a loopback
//! port, with one key per role. Used by this crate's tests and the provider agent's.
//! GraphQL goes through `api-client`, the market's one client, as raw documents: the tests
//! send what no typed operation would (hostile, invalid or unknown documents).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use contract::AccountId;
use diesel::r2d2::{ConnectionManager, Pool};
use engine_service::{Runner, RunnerConfig, Topics};
use eventlog::LogConfig;
use ledger::testing::TestDb;
use ledger::{Activity, Journal, Projection, Reputation};
use serde_json::Value;

use crate::auth::{self, Role};
use engine_service::client::{ClientConfig, EngineClient};

use crate::{ApiConfig, AppState, Limits};

/// The buyer's and the provider's accounts.
pub const T_BUYER: u64 = 1;
pub const T_PROVIDER: u64 = 11;

/// A whole market on one machine, as the API sees it.
pub struct Market {
    pub db: TestDb,
    /// The log and snapshots; removed with the market.
    pub dir: tempfile::TempDir,
    pub log_url: String,
    pub url: String,
    pub stop: Arc<AtomicBool>,
    pub threads: Vec<thread::JoinHandle<()>>,
    pub server: actix_web::dev::ServerHandle,
    /// For the routes that are not GraphQL (health, metrics, exports).
    pub http: reqwest::blocking::Client,
    /// The API without a key; [`Market::gql_status`] adds one.
    pub client: api_client::Client,
    pub admin: String,
    pub finance: String,
    pub buyer: String,
    pub provider: String,
}

fn spawn_projector<P: Projection + Send + 'static>(
    db: &TestDb,
    log_url: &str,
    projection: P,
    stop: &Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    let mut projector = db.projector(log_url, "events", projection);
    let stop = stop.clone();
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            projector.run_batch(4_096).expect("projecting");
        }
    })
}

/// The model name the tests' simulated GPUs report; [`Market::prove_market`] makes it the
/// H100 market's class.
pub const SIM_MODEL: &str = "sim H100";

/// A signed report of `node` as an agent of `gpus` simulated H100s sends it (UUIDs
/// `GPU-<node>-<i>`, 81,920 MB each, the same readings on each), made now, listing
/// `healthy` leases and the jobs of `starts` started.
pub fn node_report(
    node: &str,
    sequence: u64,
    gpus: u32,
    healthy: &[u64],
    starts: &[u64],
) -> String {
    serde_json::json!({
        "node": node, "sequence": sequence, "at": chrono::Utc::now().to_rfc3339(),
        "class": "H100-80GB", "simulated": true,
        "leases_started": starts, "healthy_leases": healthy,
        "gpus": (0..gpus).map(|g| serde_json::json!({
            "index": g, "name": SIM_MODEL, "uuid": format!("GPU-{node}-{g}"),
            "utilisation_pct": 87.5, "memory_used_mb": 40960, "memory_total_mb": 81920,
            "temperature_c": 71.0, "power_w": 612.0, "power_limit_w": 700.0,
            "sm_clock_mhz": 1980, "ecc_errors": null})).collect::<Vec<_>>(),
    })
    .to_string()
}

/// `submitNodeReport`'s variables for `report` signed with `key`.
pub fn signed_report(key: &ed25519_dalek::SigningKey, report: &str) -> Value {
    use ed25519_dalek::Signer;
    let signature: String = key
        .sign(report.as_bytes())
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    serde_json::json!({"r": report, "s": signature})
}

/// The key of the tests' node `node-a`.
pub fn node_a_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42; 32])
}

pub const SUBMIT_REPORT: &str =
    "mutation($r: String!, $s: String!) { submitNodeReport(report: $r, \
    signature: $s) { duplicate leaseStarts { leaseId refused } } }";

impl Market {
    /// Lets the H100 market take the tests' simulated GPUs: created as simulated, with
    /// [`SIM_MODEL`] its class.
    pub fn prove_market(&self) {
        self.ok(
            &self.admin,
            &format!(
                "mutation {{ configureMarket(market: \"H100-80GB\", config: {{simulated: true, \
                 modelNames: [\"{SIM_MODEL}\"]}}) {{ market }} }}"
            ),
            serde_json::json!({}),
        );
    }

    /// Registers the provider's `node` with `key` and sends its report 0 of `gpus` simulated
    /// H100s, which asks on the node stand on.
    pub fn prove_node(&self, node: &str, key: &ed25519_dalek::SigningKey, gpus: u32) {
        let public: String = key
            .verifying_key()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.ok(
            &self.provider,
            &format!("mutation {{ registerNode(node: \"{node}\", publicKey: \"{public}\") }}"),
            serde_json::json!({}),
        );
        let report = node_report(node, 0, gpus, &[], &[]);
        self.ok(&self.provider, SUBMIT_REPORT, signed_report(key, &report));
    }

    pub fn start(tag: &str, limits: Limits) -> Market {
        Market::start_with(
            tag,
            ApiConfig {
                limits,
                escrow_address: Some("cosmos1escrowtestaddress".to_owned()),
                ..ApiConfig::default()
            },
        )
    }

    pub fn start_with(tag: &str, mut config: ApiConfig) -> Market {
        let db = TestDb::migrated(tag);
        let dir = tempfile::tempdir().unwrap();
        if config.blobs.is_none() {
            config.blobs = Some(blobstore::BlobStore::local(&dir.path().join("blobs")).unwrap());
        }
        let log_url = format!("file://{}", dir.path().join("log").display());
        let stop = Arc::new(AtomicBool::new(false));
        let topics = Topics::with_prefix("");
        let log_config = LogConfig::default();
        let mut runner = Runner::open(
            RunnerConfig {
                topics: topics.clone(),
                shard: 0,
                shards: 1,
                snapshot_every: 1_000_000,
                snapshot_dir: dir.path().join("snapshots"),
                batch: 1_024,
                poll: Duration::from_millis(20),
            },
            eventlog::open(&log_url, &log_config).unwrap(),
        )
        .unwrap();
        let mut threads = Vec::new();
        let runner_stop = stop.clone();
        threads.push(thread::spawn(move || runner.run(&runner_stop).unwrap()));
        threads.push(spawn_projector(&db, &log_url, Journal, &stop));
        threads.push(spawn_projector(&db, &log_url, Activity, &stop));
        threads.push(spawn_projector(&db, &log_url, Reputation, &stop));

        let key = |role, account: Option<u64>| {
            auth::create_key(&mut db.connect(), role, account.map(AccountId), "test")
                .unwrap()
                .1
        };
        let (admin, finance) = (key(Role::Admin, None), key(Role::Finance, None));
        let (buyer, provider) = (
            key(Role::Trader, Some(T_BUYER)),
            key(Role::Provider, Some(T_PROVIDER)),
        );

        let engine = EngineClient::start(ClientConfig {
            log_url: log_url.clone(),
            log: log_config,
            topics,
            shard: 0,
            shards: 1,
            answer_timeout: config.answer_timeout,
            // No clock: tests that count what a refusal appended stay exact.
            tick_every: None,
        })
        .unwrap();
        let pool = Pool::builder()
            .max_size(4)
            .build(ConnectionManager::new(db.url()))
            .unwrap();
        let state = Arc::new(AppState::new(pool, engine, config));
        let (tx, rx) = std::sync::mpsc::channel();
        threads.push(thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let (server, addr) = crate::serve(state.clone(), "127.0.0.1:0", 2).unwrap();
                tx.send((server.handle(), addr)).unwrap();
                server.await.unwrap();
                state.engine.shutdown();
            });
        }));
        let (server, addr) = rx.recv().unwrap();
        let url = format!("http://{addr}");
        Market {
            db,
            dir,
            log_url,
            client: api_client::Client::anonymous(&url),
            url,
            stop,
            threads,
            server,
            http: reqwest::blocking::Client::new(),
            admin,
            finance,
            buyer,
            provider,
        }
    }

    /// Posts a GraphQL request with `key` (or none); returns the HTTP status and the body.
    pub fn gql_status(&self, key: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let client = key.map_or_else(|| self.client.clone(), |k| self.client.with_key(k));
        client
            .post_raw(query, variables)
            .unwrap_or_else(|e| panic!("{query}: no JSON answer: {e}"))
    }

    pub fn gql(&self, key: Option<&str>, query: &str, variables: Value) -> Value {
        self.gql_status(key, query, variables).1
    }

    /// The data of a request that must succeed.
    pub fn ok(&self, key: &str, query: &str, variables: Value) -> Value {
        let body = self.gql(Some(key), query, variables);
        assert!(body.get("errors").is_none(), "{query}: {body}");
        body["data"].clone()
    }

    /// The first error code of a request that must fail.
    pub fn code(&self, key: Option<&str>, query: &str, variables: Value) -> String {
        let body = self.gql(key, query, variables);
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{query}: expected an error, got {body}"))
            .to_owned()
    }

    /// Commands in the log so far: a refused request must not add one.
    pub fn commands(&self) -> u64 {
        eventlog::open(&self.log_url, &LogConfig::default())
            .unwrap()
            .end_offset("commands", 0)
            .unwrap()
    }

    /// Waits until every projector has applied every event written so far.
    pub fn projected(&self) {
        let events = eventlog::open(&self.log_url, &LogConfig::default())
            .unwrap()
            .end_offset("events", 0)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let positions = self.db.positions();
            if positions.len() == 3 && positions.values().all(|p| *p as u64 >= events) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "projectors stuck at {positions:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl std::fmt::Debug for Market {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Market")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for Market {
    fn drop(&mut self) {
        let server = self.server.clone();
        actix_web::rt::System::new().block_on(server.stop(true));
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
