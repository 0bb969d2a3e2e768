//! `gpumarket up`: the whole market in one process on embedded defaults: Postgres (from
//! `DATABASE_URL`, or a private cluster it starts with `initdb`/`pg_ctl`), the embedded log,
//! the engine, the projectors, the API with GraphiQL and the dashboard, the devnet simulator
//! and the Cosmos bridge; with `--demo`, simulated providers and bidding bots too.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use api_client::mutations::{
    ConfigureMarket, ConfigureMarketVariables, CreateMarket, CreateMarketVariables,
};
use api_client::queries::MarketsQuery;
use api_client::types::MarketConfigInput;
use api_client::{MutationBuilder, QueryBuilder, U64};
use diesel::{Connection, PgConnection, RunQueryDsl};
use engine_service::client::{ClientConfig, EngineClient};
use engine_service::{Runner, RunnerConfig, Topics};
use eventlog::LogConfig;
use ledger::{Activity, Journal, Reputation};
use tracing::{info, warn};

use crate::common::{key_file, spawn_part, stop_on_signals, Part};
use crate::engine::SNAPSHOT_EVERY;
use crate::project::{self, run_projector, LINGER_MS};

/// The whole market on this machine: Postgres (DATABASE_URL, or a private cluster made
/// with initdb/pg_ctl), the embedded log, engine, projectors, API, dashboard, devnet and
/// bridge. Prints where everything is; Ctrl-C stops; a second `up` resumes.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Everything the market keeps: log, snapshots, Postgres (when private), keys, the
    /// devnet's chain. A second `up` with the same folder resumes the same market.
    #[arg(long, env = "GPUMARKET_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Where the API, GraphiQL and the dashboard listen.
    #[arg(long, env = "GPUMARKET_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// The event log; default `file://DATA_DIR/log` (embedded).
    #[arg(long, env = "GPUMARKET_LOG")]
    pub log: Option<String>,
    /// Also run simulated providers (several GPU classes and regions) and bidding bots.
    #[arg(long)]
    pub demo: bool,
    /// Where the devnet simulator serves its JSON-RPC.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub chain_rpc: String,
    /// Milliseconds between devnet blocks.
    #[arg(long, default_value_t = 1_000)]
    pub block_ms: u64,
    /// Seconds between settlement batches.
    #[arg(long, default_value_t = 3_600)]
    pub settle_every_secs: u64,
    /// Earnings below this wait for a later settlement batch.
    #[arg(long, default_value = "10")]
    pub min_payout: rust_decimal::Decimal,
    /// Prefix of the log's topic names (for a Kafka broker shared with other markets).
    #[arg(long, env = "GPUMARKET_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// A `node_modules` folder holding graphiql@4, react@18 and react-dom@18, so GraphiQL
    /// works without reaching the unpkg CDN.
    #[arg(long, env = "GPUMARKET_GRAPHIQL_ASSETS")]
    pub graphiql_assets: Option<PathBuf>,
    /// Where blobs (job inputs, outputs, images) are kept: a directory, or `s3://bucket/prefix`
    /// with the `AWS_*` variables (a build with the `s3` feature). Default `DATA_DIR/blobs`.
    #[arg(long, env = "GPUMARKET_BLOB_STORE")]
    pub blob_store: Option<String>,
    /// What a GB of blobs costs its holder per month, charged hourly and shown as its own
    /// line on invoices. Default: storage is free.
    #[arg(long, value_parser = crate::api::parse_price)]
    pub storage_price_per_gb_month: Option<contract::Price>,
}

/// A Postgres cluster `up` started itself; stopped when dropped.
struct PrivatePostgres {
    data: PathBuf,
    pg_ctl: PathBuf,
    as_user: Option<&'static str>,
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let status = command(&self.pg_ctl, self.as_user)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .output();
        match status {
            Ok(o) if o.status.success() => info!("private Postgres stopped"),
            other => warn!(?other, "stopping the private Postgres failed"),
        }
    }
}

/// `program`, run as `user` (via runuser) when given: initdb and pg_ctl refuse root.
fn command(program: &Path, user: Option<&str>) -> Process {
    match user {
        Some(user) => {
            let mut c = Process::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Process::new(program),
    }
}

/// The machine's PostgreSQL server programs: on the PATH, or Debian's versioned folders.
fn postgres_bin(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin").join(name)))
            .filter(|p| p.is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts (creating it the first time) the private cluster in `dir`; returns its URL.
fn private_postgres(dir: &Path) -> Result<(String, PrivatePostgres)> {
    let advice =
        "install PostgreSQL's server programs (Debian/Ubuntu: apt-get install postgresql) \
                  or set DATABASE_URL to a running server";
    let initdb = postgres_bin("initdb").with_context(|| format!("no initdb found: {advice}"))?;
    let pg_ctl = postgres_bin("pg_ctl").with_context(|| format!("no pg_ctl found: {advice}"))?;
    let as_user = rustix::process::getuid().is_root().then_some("postgres");
    let data = dir.join("postgres");
    if !data.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&data)?;
        if let Some(user) = as_user {
            let ok = Process::new("chown")
                .arg(user)
                .arg(&data)
                .status()?
                .success();
            anyhow::ensure!(ok, "chown {user} {} failed", data.display());
        }
        info!(dir = %data.display(), "creating a private Postgres cluster (initdb)");
        let out = command(&initdb, as_user)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .output()?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    // The port is kept, so a resumed market's URL stays the same.
    let port_file = dir.join("postgres.port");
    let port = match std::fs::read_to_string(&port_file) {
        Ok(p) => p.trim().parse()?,
        Err(_) => {
            let p = free_port()?;
            std::fs::write(&port_file, p.to_string())?;
            p
        }
    };
    let guard = PrivatePostgres {
        data: data.clone(),
        pg_ctl: pg_ctl.clone(),
        as_user,
    };
    let out = command(&pg_ctl, as_user)
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(data.join("server.log"))
        .args(["-w", "-o"])
        .arg(format!("-p {port} -c listen_addresses=127.0.0.1 -k /tmp"))
        .arg("start")
        .output()?;
    if !out.status.success() {
        std::mem::forget(guard);
        bail!(
            "pg_ctl start failed (see {}): {}",
            data.join("server.log").display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let server = format!("postgres://postgres@127.0.0.1:{port}");
    let mut conn = PgConnection::establish(&format!("{server}/postgres"))?;
    let exists: i64 = diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "SELECT count(*) FROM pg_database WHERE datname = 'gpumarket'",
    )
    .get_result(&mut conn)?;
    if exists == 0 {
        diesel::sql_query("CREATE DATABASE gpumarket").execute(&mut conn)?;
    }
    Ok((format!("{server}/gpumarket"), guard))
}

/// The escrow key of the devnet, made once: 32 random bytes in hex.
fn escrow_key(path: &Path) -> Result<cosmos_bridge::keys::EscrowKey> {
    if !path.exists() {
        let mut secret = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        provider_agent::durable::write_atomic(path, hex.as_bytes(), 0o600)?;
    }
    Ok(cosmos_bridge::keys::EscrowKey::from_file(path, "cosmos")?)
}

/// How often the reputation projection's scores go to the engine: a demo's providers earn
/// theirs within seconds of trading.
const REPUTATION_EVERY: Duration = Duration::from_secs(5);

/// The markets a new `up` opens: (class, tick, fee in basis points).
const MARKETS: [(&str, &str, u32); 5] = [
    ("H100-80GB", "0.01", 100),
    ("A100-80GB", "0.01", 100),
    ("RTX4090-24GB", "0.01", 100),
    ("MI300X-192GB", "0.01", 100),
    ("L40S-48GB", "0.01", 100),
];

/// What NVML and ROCm SMI call each market's GPUs.
const MODEL_NAMES: [(&str, &[&str]); 5] = [
    ("H100-80GB", &["NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"]),
    (
        "A100-80GB",
        &["NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"],
    ),
    ("RTX4090-24GB", &["NVIDIA GeForce RTX 4090"]),
    ("MI300X-192GB", &["AMD Instinct MI300X"]),
    ("L40S-48GB", &["NVIDIA L40S"]),
];

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let stop = stop_on_signals()?;

    // Postgres.
    let (database_url, postgres) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let (url, guard) = private_postgres(&dir)?;
            (url, Some(guard))
        }
    };
    let mut conn = PgConnection::establish(&database_url)
        .with_context(|| format!("connecting to {database_url}"))?;
    ledger::migrate(&mut conn)?;
    drop(conn);
    info!("[1/6] Postgres ready, migrations applied");

    // The engine on the log.
    let log_url = args
        .log
        .clone()
        .unwrap_or_else(|| format!("file://{}", dir.join("log").display()));
    let topics = Topics::with_prefix(&args.topic_prefix);
    let mut runner = Runner::open(
        RunnerConfig {
            topics: topics.clone(),
            shard: 0,
            shards: 1,
            snapshot_every: SNAPSHOT_EVERY,
            snapshot_dir: dir.join("snapshots"),
            batch: 2_048,
            poll: Duration::from_millis(5),
        },
        eventlog::open(&log_url, &LogConfig::default())?,
    )?;
    let mut threads: Vec<Part> = Vec::new();
    {
        let stop = stop.clone();
        threads.push(spawn_part("engine", move || {
            runner.run(&stop)?;
            Ok(())
        })?);
    }
    info!("[2/6] engine running on {log_url}");

    // The projectors.
    for name in ["journal", "activity", "reputation"] {
        let (db, log, stop) = (database_url.clone(), log_url.clone(), stop.clone());
        let prefix = args.topic_prefix.clone();
        threads.push(spawn_part(name, move || {
            let args = project::Config {
                log_url: &log,
                database_url: &db,
                topic_prefix: &prefix,
                shard: 0,
                batch: 4_096,
                linger: Duration::from_millis(LINGER_MS),
                rebuild: false,
                progress_every: Duration::from_secs(60),
            };
            match name {
                "journal" => run_projector(&args, Journal, &stop),
                "activity" => run_projector(&args, Activity, &stop),
                _ => run_projector(&args, Reputation, &stop),
            }
        })?);
    }
    info!("[3/6] projectors running");

    // Keys and the chain. The admin key is shown once, when it is made; after that only
    // its file is named, so it is not in every terminal's scrollback and every log.
    let admin_path = dir.join("admin.key");
    let admin_created = !admin_path.exists();
    let admin_key = key_file(
        &database_url,
        &admin_path,
        api::auth::Role::Admin,
        None,
        "up admin",
    )?;
    let escrow = escrow_key(&dir.join("escrow.key"))?;
    let mut genesis =
        cosmos_bridge::devnet::Devnet::new("gpumarket-devnet-1", "cosmos", "uusdc", 1_000);
    // The escrow's float for fees: 100 USDC.
    genesis.fund(escrow.address().as_ref(), 100_000_000);
    let chain = cosmos_bridge::devnet::server::DevnetServer::start_persistent(
        genesis,
        &args.chain_rpc,
        args.block_ms,
        &dir.join("devnet-chain.jsonl"),
    )?;
    info!(
        "[4/6] devnet simulator (a simulated chain) at {}",
        chain.url()
    );

    // The API.
    let engine = EngineClient::start(ClientConfig {
        log_url: log_url.clone(),
        log: LogConfig::default(),
        topics,
        shard: 0,
        shards: 1,
        answer_timeout: Duration::from_secs(5),
        tick_every: Some(ClientConfig::DEFAULT_TICK_EVERY),
    })
    .context("starting the engine client")?;
    let pool = diesel::r2d2::Pool::builder()
        .max_size(8)
        .build(diesel::r2d2::ConnectionManager::new(database_url.clone()))?;
    let state = Arc::new(api::AppState::new(
        pool,
        engine,
        api::ApiConfig {
            escrow_address: Some(escrow.address().to_string()),
            graphiql_assets: args.graphiql_assets.clone(),
            reputation_every: Some(REPUTATION_EVERY),
            blob_expiry_every: Some(Duration::from_secs(600)),
            render_every: Some(Duration::from_secs(1)),
            checker: args.demo.then(|| {
                api::checker::CheckerConfig::new(contract::AccountId(crate::render_farm::CHECKER))
            }),
            storage_price: args.storage_price_per_gb_month,
            blobs: Some(
                blobstore::BlobStore::open(
                    &args
                        .blob_store
                        .clone()
                        .unwrap_or_else(|| args.data_dir.join("blobs").display().to_string()),
                )
                .context("opening the blob store")?,
            ),
            ..api::ApiConfig::default()
        },
    ));
    let (tx, rx) = std::sync::mpsc::channel();
    let http_addr = args.http.clone();
    let api_thread = {
        let state = state.clone();
        std::thread::Builder::new()
            .name("api".to_owned())
            .spawn(move || -> Result<()> {
                actix_web::rt::System::new().block_on(async move {
                    let (server, addr) = api::serve(state.clone(), &http_addr, 2)?;
                    tx.send((server.handle(), addr)).ok();
                    server.await?;
                    state.engine.shutdown();
                    anyhow::Ok(())
                })
            })?
    };
    let Ok((server, addr)) = rx.recv() else {
        return Err(api_thread
            .join()
            .expect("the API thread")
            .expect_err("the API stopped"));
    };
    let url = format!("http://{addr}");
    let http = reqwest::blocking::Client::new();
    // Ready once Postgres, the log and the projectors answer.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http
        .get(format!("{url}/readyz"))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the API did not become ready in 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let api = api_client::Client::new(&url, &admin_key);
    // Markets a data directory made by an older `up` lacks are opened too.
    let open = api.run(&MarketsQuery::build(()))?.markets;
    for (market, tick, fee) in MARKETS {
        if open.iter().all(|m| m.id != market) {
            api.run(&CreateMarket::build(CreateMarketVariables {
                market: market.to_owned(),
                tick: tick.to_owned(),
                fee_bps: U64(fee.into()),
            }))?;
        }
    }
    // Each market's class is the model names its GPUs' drivers report. The demo's
    // providers report simulated GPUs (`<class> (simulated)`), which only a simulated market
    // takes, and post a bond of 25 per GPU, a quarter of which a provider failure slashes.
    for (market, names) in MODEL_NAMES {
        let mut model_names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        if args.demo {
            model_names.push(format!("{market} (simulated)"));
        }
        api.run(&ConfigureMarket::build(ConfigureMarketVariables {
            market: market.to_owned(),
            config: MarketConfigInput {
                simulated: Some(args.demo),
                bond_per_gpu: args.demo.then(|| crate::demo::BOND_PER_GPU.to_owned()),
                model_names: Some(model_names),
                ..MarketConfigInput::default()
            },
        }))?;
    }
    info!("[5/6] API ready at {url}");

    // The bridge.
    let bridge_config = cosmos_bridge::bridge::Config {
        chain: cosmos_bridge::tx::Chain {
            chain_id: "gpumarket-devnet-1".into(),
            prefix: "cosmos".into(),
            denom: "uusdc".into(),
            decimals: 6,
        },
        rpc_url: chain.url().to_owned(),
        api_url: url.clone(),
        api_key: admin_key.clone(),
        database_url: database_url.clone(),
        gas_price: "0.025".parse()?,
        gas_base: 100_000,
        gas_per_payout: 25_000,
        confirmations: 1,
        period: Duration::from_secs(args.settle_every_secs),
        threshold: "10000".parse()?,
        min_payout: args.min_payout,
        max_payouts: 100,
        poll: Duration::from_secs(1),
        rebroadcast_after: Duration::from_secs(30),
    };
    let mut bridge = cosmos_bridge::bridge::Bridge::new(bridge_config, escrow)?;
    {
        let stop = stop.clone();
        threads.push(spawn_part("bridge", move || {
            bridge.run(&stop);
            Ok(())
        })?);
    }
    info!("[6/6] Cosmos bridge running");

    // Every demo part is started and checked before `up` says it is up: one that cannot
    // start stops `up` here, with its reason, instead of after the announcement.
    let mut failed = None;
    let mut demo = Vec::new();
    if args.demo {
        match crate::demo::start(&dir, &database_url, &url, &stop) {
            Ok(parts) => demo = parts,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                failed = Some(e.context("the demo did not start; stopping"));
            }
        }
    }

    if failed.is_none() {
        println!();
        println!("gpumarket is up ({:.1} s)", started.elapsed().as_secs_f64());
        println!("  API and GraphiQL   {url}/graphql");
        println!("  provider dashboard {url}/dashboard");
        println!("  health             {url}/readyz   metrics {url}/metrics");
        println!("  devnet chain RPC   {} (simulated chain)", chain.url());
        println!("  data directory     {}", dir.display());
        println!("  database           {database_url}");
        if admin_created {
            println!(
                "  admin API key      {admin_key}   (shown once; kept in {})",
                admin_path.display()
            );
        } else {
            println!("  admin API key      in {}", admin_path.display());
        }
        if args.demo {
            println!(
                "  demo               simulated providers and bidding bots are trading; keys in {}",
                dir.join("demo").display()
            );
        }
        println!("Ctrl-C stops everything; `gpumarket up` again resumes this market.");
    }

    while !stop.load(Ordering::Relaxed) {
        if let Some((name, _)) = threads.iter().find(|(_, t)| t.is_finished()) {
            warn!(
                part = name,
                "a part of the market stopped; stopping everything"
            );
            stop.store(true, Ordering::Relaxed);
            break;
        }
        // A demo part that stops is reported and left out; the market runs on.
        if let Some(i) = demo.iter().position(|(_, t)| t.is_finished()) {
            let (name, thread) = demo.swap_remove(i);
            match thread.join() {
                Ok(Ok(())) => warn!(part = name, "a demo part stopped; the market runs on"),
                Ok(Err(e)) => {
                    tracing::error!(part = name, error = %e, "a demo part failed; the market runs on")
                }
                Err(_) => tracing::error!(part = name, "a demo part panicked; the market runs on"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    info!("stopping");
    actix_web::rt::System::new().block_on(server.stop(true));
    for (name, thread) in threads.into_iter().chain(demo) {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(part = name, error = %e, "stopped with an error");
                failed.get_or_insert(e);
            }
            Err(_) => warn!(part = name, "panicked"),
        }
    }
    let _ = api_thread.join();
    drop(chain);
    drop(postgres);
    info!("stopped");
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
