//! `gpumarket`: the market's command-line entry point.
//!
//! `engine` runs one shard's matching engine against the event log (embedded or Kafka);
//! `apply` drives an in-process engine over a file of commands; `migrate` brings a ledger
//! database's schema up to date; `project` runs the ledger's projectors (journal, activity,
//! reputation) on one events partition; `export` writes the finance exports; `api` serves
//! the GraphQL API and `keys` manages its keys; `bridge` runs and inspects the Cosmos bridge
//! and `devnet` serves the local chain simulator.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, Subcommand};
use contract::{Command, MarketId, OrderId, Timestamp};
use diesel::{Connection, PgConnection};
use engine_service::{Runner, RunnerConfig, Topics};
use eventlog::{LogConfig, LogError};
use ledger::{Activity, Journal, LedgerError, Projection, Projector, ProjectorConfig, Reputation};
use matching_engine::Engine;
use serde::Deserialize;
use tracing::info;

mod demo;
mod up;

/// Commands between engine snapshots (`engine --snapshot-every`, and `up`).
const SNAPSHOT_EVERY: u64 = 500_000;
/// How often a caught-up projector commits (`project --linger-ms`, and `up`).
const LINGER_MS: u64 = 50;

#[derive(Parser)]
#[command(name = "gpumarket", version, about = "The open GPU-compute exchange")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The whole market on this machine: Postgres (DATABASE_URL, or a private cluster made
    /// with initdb/pg_ctl), the embedded log, engine, projectors, API, dashboard, devnet and
    /// bridge. Prints where everything is; Ctrl-C stops; a second `up` resumes.
    Up(up::UpArgs),
    /// Run one shard's matching engine: read its command partition, append its answers to
    /// the event partition, snapshot every N commands. Stops cleanly on SIGTERM or Ctrl-C.
    Engine {
        #[command(flatten)]
        place: ShardArgs,
        /// Where snapshots are kept (a folder per shard is made inside).
        #[arg(long, env = "GPUMARKET_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Commands between snapshots. A restart replays at most this many (about 250,000 a
        /// second here); encoding a snapshot pauses the engine for about 1.5 ms per megabyte of
        /// state (open orders and leases), so too frequent snapshots show in the latency.
        #[arg(long, env = "GPUMARKET_SNAPSHOT_EVERY", default_value_t = SNAPSHOT_EVERY)]
        snapshot_every: u64,
        /// Commands read and answered per batch.
        #[arg(long, default_value_t = 2_048)]
        batch: usize,
    },
    /// Apply the ledger migrations the database does not have yet and print each one applied.
    Migrate {
        /// The ledger database, e.g. `postgres://user@host:5432/gpumarket`.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Run the ledger's projectors on one events partition: apply pending migrations, then
    /// project events into the database, each projection exactly once in its own
    /// transactions, until SIGTERM or Ctrl-C.
    Project {
        /// The event log: `file://DIR` (embedded, the default) or `kafka://HOST:PORT`.
        #[arg(long, env = "GPUMARKET_LOG", default_value = "file://./data/log")]
        log: String,
        /// The ledger database, e.g. `postgres://user@host:5432/gpumarket`.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Prefix of the topic names (the projectors read `{prefix}events`).
        #[arg(long, env = "GPUMARKET_TOPIC_PREFIX", default_value = "")]
        topic_prefix: String,
        /// The events partition (the engine shard) to project.
        #[arg(long, env = "GPUMARKET_SHARD", default_value_t = 0)]
        shard: u32,
        /// Which projections to run (each on its own thread and connection).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "journal,activity,reputation"
        )]
        projections: Vec<ProjectionName>,
        /// Empty the chosen projections' tables first and rebuild them from offset zero.
        #[arg(long)]
        rebuild: bool,
        /// Events read and committed per database transaction, at most.
        #[arg(long, default_value_t = 4_096)]
        batch: usize,
        /// Once caught up, a projector commits at most this often (milliseconds): events that
        /// arrive meanwhile wait for the next transaction. Fewer, larger transactions cost
        /// Postgres far less per event; the price is up to this much more lag. 0: commit
        /// whatever each read finds.
        #[arg(long, default_value_t = LINGER_MS)]
        linger_ms: u64,
        /// Seconds between progress lines in the log.
        #[arg(long, default_value_t = 10)]
        progress_secs: u64,
    },
    /// Write a finance export of the ledger database for a period: the journal (every
    /// posting, traceable to its event and command), usage in the FOCUS format, or the
    /// reconciliation report (which fails the command when it finds a break).
    Export {
        what: ExportKind,
        /// The ledger database, e.g. `postgres://user@host:5432/gpumarket`.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Start of the period (inclusive): `YYYY-MM-DD` (UTC midnight) or RFC 3339.
        #[arg(long, value_parser = parse_time)]
        from: DateTime<Utc>,
        /// End of the period (exclusive), in the same forms.
        #[arg(long, value_parser = parse_time)]
        to: DateTime<Utc>,
        /// The file to write; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The ISO 4217 code the market's amounts are in (FOCUS `BillingCurrency`).
        #[arg(long, default_value = "USD")]
        currency: String,
        /// How the reconciliation report cuts the period.
        #[arg(long, default_value = "day")]
        granularity: GranularityArg,
    },
    /// Serve the GraphQL API (GraphiQL at /graphql, /healthz, /readyz, /metrics) for one
    /// engine shard: commands go to the log, reads come from the ledger database and a
    /// replica engine. Stops cleanly on SIGTERM or Ctrl-C.
    Api {
        #[command(flatten)]
        place: ShardArgs,
        /// The ledger database, e.g. `postgres://user@host:5432/gpumarket`.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Where to listen.
        #[arg(long, env = "GPUMARKET_HTTP", default_value = "127.0.0.1:8080")]
        http: String,
        /// HTTP worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Postgres connections the API may hold.
        #[arg(long, default_value_t = 8)]
        pool: u32,
        /// Milliseconds a mutation waits for the engine's answer.
        #[arg(long, default_value_t = 5_000)]
        answer_timeout_ms: u64,
        /// Requests per second per API key.
        #[arg(long, env = "GPUMARKET_RATE", default_value_t = 2_000)]
        rate: u32,
        /// Requests a key may send at once above its rate.
        #[arg(long, default_value_t = 4_000)]
        burst: u32,
        /// Largest request body in bytes.
        #[arg(long, default_value_t = 65_536)]
        max_body: usize,
        /// The settlement chain's escrow address shown as deposit instructions.
        #[arg(long, env = "GPUMARKET_ESCROW_ADDRESS")]
        escrow_address: Option<String>,
    },
    /// The Cosmos bridge: credits deposits to the escrow address and settles payouts
    /// on chain, exactly once.
    Bridge {
        #[command(flatten)]
        args: BridgeArgs,
        #[command(subcommand)]
        action: BridgeAction,
    },
    /// Serve a local devnet simulator (a Cosmos SDK bank chain over CometBFT JSON-RPC) for
    /// demos and tests: it checks real signed transactions and makes a block every
    /// `--block-ms`.
    Devnet {
        #[arg(long, default_value = "127.0.0.1:26657")]
        listen: String,
        #[arg(long, default_value = "gpumarket-devnet-1")]
        chain_id: String,
        #[arg(long, default_value = "cosmos")]
        prefix: String,
        #[arg(long, default_value = "uusdc")]
        denom: String,
        /// The least fee a transaction must pay, in base units.
        #[arg(long, default_value_t = 1_000)]
        min_fee: u128,
        #[arg(long, default_value_t = 1_000)]
        block_ms: u64,
        /// Genesis balances: `ADDRESS=BASE_UNITS`, repeatable.
        #[arg(long = "fund", value_name = "ADDRESS=BASE_UNITS")]
        fund: Vec<String>,
    },
    /// Create, list and revoke API keys (stored as argon2id hashes in the ledger database).
    Keys {
        /// The ledger database, e.g. `postgres://user@host:5432/gpumarket`.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Apply a file of commands (JSON lines: `{"at": MS, "type": ..., ...}`) to a fresh
    /// engine and print every command's events or rejection as JSON lines.
    Apply {
        /// The command file; `-` reads standard input.
        commands: PathBuf,
        /// Print these markets' depth (best 10 levels) at the end.
        #[arg(long = "depth", value_name = "MARKET")]
        depth: Vec<MarketId>,
        /// Explain why these resting orders have not matched, at the end.
        #[arg(long = "explain", value_name = "ORDER_ID")]
        explain: Vec<u64>,
        /// Write the engine's snapshot here at the end.
        #[arg(long)]
        snapshot: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BridgeAction {
    /// Scan the chain, credit deposits, settle batches, until SIGTERM or Ctrl-C.
    Run,
    /// Escrow balance, open batch, unfinished transactions, last settlement (JSON).
    Status,
    /// Open a settlement batch now (a running bridge signs and sends it).
    SettleNow,
}

/// The chain, the escrow key and the market the bridge works for.
#[derive(clap::Args)]
struct BridgeArgs {
    /// The market's API.
    #[arg(
        long,
        env = "GPUMARKET_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api_url: String,
    /// A file holding an admin API key.
    #[arg(
        long,
        env = "GPUMARKET_API_KEY_FILE",
        default_value = "./data/admin.key"
    )]
    api_key_file: PathBuf,
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The chain node's CometBFT JSON-RPC endpoint.
    #[arg(
        long,
        env = "GPUMARKET_CHAIN_RPC",
        default_value = "http://127.0.0.1:26657"
    )]
    rpc_url: String,
    #[arg(long, env = "GPUMARKET_CHAIN_ID", default_value = "gpumarket-devnet-1")]
    chain_id: String,
    /// The chain's bech32 account prefix.
    #[arg(long, env = "GPUMARKET_CHAIN_PREFIX", default_value = "cosmos")]
    prefix: String,
    /// The bank denom the market settles in.
    #[arg(long, env = "GPUMARKET_CHAIN_DENOM", default_value = "uusdc")]
    denom: String,
    /// Decimal places between the market's unit and the denom.
    #[arg(long, env = "GPUMARKET_CHAIN_DECIMALS", default_value_t = 6)]
    decimals: u32,
    /// Base units per unit of gas.
    #[arg(long, env = "GPUMARKET_GAS_PRICE", default_value = "0.025")]
    gas_price: rust_decimal::Decimal,
    #[arg(long, default_value_t = 100_000)]
    gas_base: u64,
    #[arg(long, default_value_t = 25_000)]
    gas_per_payout: u64,
    /// Blocks from inclusion (1) before a transfer or payout counts.
    #[arg(long, env = "GPUMARKET_CONFIRMATIONS", default_value_t = 1)]
    confirmations: u64,
    /// Seconds between settlement batches.
    #[arg(long, env = "GPUMARKET_SETTLE_EVERY", default_value_t = 3_600)]
    period_secs: u64,
    /// A batch opens at once when this much is due.
    #[arg(long, default_value = "10000")]
    threshold: rust_decimal::Decimal,
    /// Earnings below this wait for a later batch.
    #[arg(long, env = "GPUMARKET_MIN_PAYOUT", default_value = "10")]
    min_payout: rust_decimal::Decimal,
    /// Accounts paid per batch (one transaction).
    #[arg(long, default_value_t = 100)]
    max_payouts: u32,
    #[arg(long, default_value_t = 1_000)]
    poll_ms: u64,
    /// Seconds before a broadcast transaction not yet included is sent again.
    #[arg(long, default_value_t = 30)]
    rebroadcast_secs: u64,
    /// A 0600 file with the escrow key (64 hex digits) or its BIP-39 mnemonic. Without it,
    /// the mnemonic comes from GPUMARKET_ESCROW_MNEMONIC (never from an argument).
    #[arg(long, env = "GPUMARKET_ESCROW_KEY_FILE")]
    escrow_key_file: Option<PathBuf>,
}

impl BridgeArgs {
    fn bridge(self) -> Result<cosmos_bridge::bridge::Bridge> {
        let key = match &self.escrow_key_file {
            Some(path) => cosmos_bridge::keys::EscrowKey::from_file(path, &self.prefix)?,
            None => {
                let phrase = std::env::var("GPUMARKET_ESCROW_MNEMONIC")
                    .context("no escrow key: set --escrow-key-file or GPUMARKET_ESCROW_MNEMONIC")?;
                let passphrase = std::env::var("GPUMARKET_ESCROW_PASSPHRASE").unwrap_or_default();
                cosmos_bridge::keys::EscrowKey::from_mnemonic(&phrase, &passphrase, &self.prefix)?
            }
        };
        let api_key = std::fs::read_to_string(&self.api_key_file)
            .with_context(|| format!("reading the API key {}", self.api_key_file.display()))?;
        let config = cosmos_bridge::bridge::Config {
            chain: cosmos_bridge::tx::Chain {
                chain_id: self.chain_id,
                prefix: self.prefix,
                denom: self.denom,
                decimals: self.decimals,
            },
            rpc_url: self.rpc_url,
            api_url: self.api_url,
            api_key,
            database_url: self.database_url,
            gas_price: self.gas_price,
            gas_base: self.gas_base,
            gas_per_payout: self.gas_per_payout,
            confirmations: self.confirmations,
            period: Duration::from_secs(self.period_secs),
            threshold: self.threshold,
            min_payout: self.min_payout,
            max_payouts: self.max_payouts,
            poll: Duration::from_millis(self.poll_ms),
            rebroadcast_after: Duration::from_secs(self.rebroadcast_secs),
        };
        Ok(cosmos_bridge::bridge::Bridge::new(config, key)?)
    }
}

/// Where one engine shard lives: the log, the topics and the partition.
#[derive(clap::Args)]
struct ShardArgs {
    /// The event log: `file://DIR` (embedded, the default) or `kafka://HOST:PORT`.
    #[arg(long, env = "GPUMARKET_LOG", default_value = "file://./data/log")]
    log: String,
    /// Prefix of the topic names (`{prefix}commands`, `{prefix}events`).
    #[arg(long, env = "GPUMARKET_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// The shard: the partition of both topics this process works on.
    #[arg(long, env = "GPUMARKET_SHARD", default_value_t = 0)]
    shard: u32,
    /// Partitions per topic: the number of engine shards.
    #[arg(long, env = "GPUMARKET_SHARDS", default_value_t = 1)]
    shards: u32,
}

impl ShardArgs {
    /// Refuses a shard outside the topics' partitions.
    fn checked(self) -> Result<ShardArgs> {
        anyhow::ensure!(
            self.shard < self.shards,
            "--shard {} must be below --shards {}",
            self.shard,
            self.shards
        );
        Ok(self)
    }
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key and print it (shown only this once).
    Create {
        /// trader, provider, finance or admin.
        #[arg(long)]
        role: String,
        /// The market account a trader or provider acts as.
        #[arg(long)]
        account: Option<u64>,
        /// A note to recognise the key by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List every key (never the secrets).
    List,
    /// Revoke a key by its id; API processes stop accepting it within seconds.
    Revoke { id: i64 },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProjectionName {
    Journal,
    Activity,
    Reputation,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportKind {
    Journal,
    Focus,
    Reconciliation,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GranularityArg {
    Day,
    Month,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is neither YYYY-MM-DD nor RFC 3339: {e}"))
}

/// One line of a command file.
#[derive(Deserialize)]
struct Stamped {
    at: Timestamp,
    #[serde(flatten)]
    command: Command,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Engine {
            place,
            data_dir,
            snapshot_every,
            batch,
        } => {
            let place = place.checked()?;
            let (log, shard, shards) = (place.log, place.shard, place.shards);
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, Arc::clone(&stop))?;
            }
            let log = eventlog::open(&log, &LogConfig::default())
                .with_context(|| format!("opening the event log {log}"))?;
            let config = RunnerConfig {
                topics: Topics::with_prefix(&place.topic_prefix),
                shard,
                shards,
                snapshot_every,
                snapshot_dir: data_dir.join("snapshots").join(format!("shard-{shard}")),
                batch,
                poll: Duration::from_millis(50),
            };
            let mut runner = Runner::open(config, log)?;
            runner.run(&stop)?;
            Ok(())
        }
        Cmd::Migrate { database_url } => {
            let mut conn = PgConnection::establish(&database_url)
                .context("connecting to the ledger database")?;
            let applied = ledger::migrate_listed(&mut conn)?;
            let mut out = io::stdout().lock();
            for name in &applied {
                writeln!(out, "applied {name}")?;
            }
            if applied.is_empty() {
                writeln!(out, "up to date: no pending migrations")?;
            }
            Ok(())
        }
        Cmd::Project {
            log,
            database_url,
            topic_prefix,
            shard,
            projections,
            rebuild,
            batch,
            linger_ms,
            progress_secs,
        } => project(
            &ProjectArgs {
                log_url: &log,
                database_url: &database_url,
                topic_prefix: &topic_prefix,
                shard,
                rebuild,
                batch,
                linger: Duration::from_millis(linger_ms),
                progress_every: Duration::from_secs(progress_secs),
            },
            &projections,
        ),
        Cmd::Export {
            what,
            database_url,
            from,
            to,
            out,
            currency,
            granularity,
        } => {
            let period = ledger::export::Period::new(from, to)?;
            let mut conn = PgConnection::establish(&database_url)
                .context("connecting to the ledger database")?;
            let sink: Box<dyn Write> = match &out {
                Some(path) => Box::new(BufWriter::new(
                    File::create(path).with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(BufWriter::new(io::stdout().lock())),
            };
            match what {
                ExportKind::Journal => {
                    let rows = ledger::export::journal_csv(&mut conn, period, sink)?;
                    info!(rows, "journal exported");
                }
                ExportKind::Focus => {
                    anyhow::ensure!(
                        currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()),
                        "--currency must be an ISO 4217 code such as USD (got {currency:?})"
                    );
                    let rows = ledger::export::focus_csv(&mut conn, period, &currency, sink)?;
                    info!(rows, "FOCUS usage exported");
                }
                ExportKind::Reconciliation => {
                    let granularity = match granularity {
                        GranularityArg::Day => ledger::export::Granularity::Day,
                        GranularityArg::Month => ledger::export::Granularity::Month,
                    };
                    let report = ledger::export::reconciliation(&mut conn, period, granularity)?;
                    report.write_csv(sink)?;
                    info!(
                        lines = report.lines.len(),
                        transactions = report.transactions,
                        breaks = report.breaks.len(),
                        "reconciliation written"
                    );
                    for b in &report.breaks {
                        tracing::error!(check = b.check, period_start = %b.period_start, "{}", b.detail);
                    }
                    anyhow::ensure!(
                        report.breaks.is_empty(),
                        "the reconciliation found {} breaks (listed in the report)",
                        report.breaks.len()
                    );
                }
            }
            Ok(())
        }
        Cmd::Api {
            place,
            database_url,
            http,
            workers,
            pool,
            answer_timeout_ms,
            rate,
            burst,
            max_body,
            escrow_address,
        } => {
            let place = place.checked()?;
            let (log, shard, shards) = (place.log, place.shard, place.shards);
            let mut conn = PgConnection::establish(&database_url)
                .context("connecting to the ledger database")?;
            ledger::migrate(&mut conn)?;
            drop(conn);
            let answer_timeout = Duration::from_millis(answer_timeout_ms);
            let gateway = api::Gateway::start(api::GatewayConfig {
                log_url: log.clone(),
                log: LogConfig::default(),
                topics: Topics::with_prefix(&place.topic_prefix),
                shard,
                shards,
                answer_timeout,
            })
            .map_err(|e| anyhow::anyhow!(e.describe()))?;
            let pool = diesel::r2d2::Pool::builder()
                .max_size(pool)
                .build(diesel::r2d2::ConnectionManager::new(database_url))
                .context("opening the database pool")?;
            let state = Arc::new(api::AppState::new(
                pool,
                gateway,
                api::Limits {
                    max_body,
                    rate_per_sec: rate,
                    burst,
                    ..api::Limits::default()
                },
                escrow_address,
                answer_timeout,
            ));
            let workers = workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
            });
            actix_web::rt::System::new().block_on(async move {
                let (server, addr) = api::serve(state.clone(), &http, workers)?;
                info!(%addr, log = %log, "API up: GraphiQL at http://{addr}/graphql");
                let handle = server.handle();
                let stopping = tokio::spawn(async move {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    info!("stopping: finishing requests in flight");
                    handle.stop(true).await;
                    std::io::Result::Ok(())
                });
                server.await?;
                stopping.abort();
                state.gateway.shutdown();
                info!("API stopped");
                anyhow::Ok(())
            })
        }
        Cmd::Up(args) => up::up(args),
        Cmd::Bridge { args, action } => {
            let mut bridge = args.bridge()?;
            match action {
                BridgeAction::Run => {
                    let stop = Arc::new(AtomicBool::new(false));
                    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                        signal_hook::flag::register(signal, stop.clone())?;
                    }
                    bridge.run(&stop);
                    info!("bridge stopped");
                }
                BridgeAction::Status => {
                    println!("{}", serde_json::to_string_pretty(&bridge.status()?)?);
                }
                BridgeAction::SettleNow => match bridge.open_batch()? {
                    Some(batch) => println!(
                        "opened settlement batch {} paying {} accounts; the running bridge sends it",
                        batch.id,
                        batch.payouts.len()
                    ),
                    None => println!("nothing to settle"),
                },
            }
            Ok(())
        }
        Cmd::Devnet {
            listen,
            chain_id,
            prefix,
            denom,
            min_fee,
            block_ms,
            fund,
        } => {
            let mut devnet =
                cosmos_bridge::devnet::Devnet::new(&chain_id, &prefix, &denom, min_fee);
            for grant in &fund {
                let (address, amount) = grant
                    .split_once('=')
                    .with_context(|| format!("--fund {grant:?}: expected ADDRESS=BASE_UNITS"))?;
                devnet.fund(
                    address,
                    amount
                        .parse()
                        .with_context(|| format!("--fund {grant:?}"))?,
                );
            }
            let server =
                cosmos_bridge::devnet::server::DevnetServer::start(devnet, &listen, block_ms)?;
            info!(
                url = server.url(),
                chain_id, "devnet simulator serving (simulated chain, not a real network)"
            );
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, stop.clone())?;
            }
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        }
        Cmd::Keys {
            database_url,
            action,
        } => {
            let mut conn = PgConnection::establish(&database_url)
                .context("connecting to the ledger database")?;
            ledger::migrate(&mut conn)?;
            let describe = |e: api::ApiError| anyhow::anyhow!(e.describe());
            let mut out = io::stdout().lock();
            match action {
                KeysAction::Create {
                    role,
                    account,
                    label,
                } => {
                    let role: api::auth::Role = role.parse().map_err(describe)?;
                    let (id, key) = api::auth::create_key(
                        &mut conn,
                        role,
                        account.map(contract::AccountId),
                        &label,
                    )
                    .map_err(describe)?;
                    writeln!(out, "{key}")?;
                    info!(
                        id,
                        role = role.as_str(),
                        "key created: it is shown only this once"
                    );
                }
                KeysAction::List => {
                    for k in api::auth::list_keys(&mut conn).map_err(describe)? {
                        writeln!(
                            out,
                            "{}\t{}\t{}\t{}\t{}\t{}",
                            k.id,
                            k.role,
                            k.account.map_or("-".to_owned(), |a| a.to_string()),
                            k.created_at.to_rfc3339(),
                            k.revoked_at.map_or("active".to_owned(), |t| format!(
                                "revoked {}",
                                t.to_rfc3339()
                            )),
                            k.label
                        )?;
                    }
                }
                KeysAction::Revoke { id } => {
                    let revoked = api::auth::revoke_key(&mut conn, id).map_err(describe)?;
                    anyhow::ensure!(revoked, "no active key {id}");
                    writeln!(out, "revoked {id}")?;
                }
            }
            Ok(())
        }
        Cmd::Apply {
            commands,
            depth,
            explain,
            snapshot,
        } => apply(commands, &depth, &explain, snapshot),
    }
}

/// Where and how the `project` subcommand runs its projectors.
struct ProjectArgs<'a> {
    log_url: &'a str,
    database_url: &'a str,
    topic_prefix: &'a str,
    shard: u32,
    rebuild: bool,
    batch: usize,
    linger: Duration,
    progress_every: Duration,
}

/// The `project` subcommand: the chosen projectors, each on its own thread, until a stop
/// signal or the first error (which stops the others and is returned).
fn project(args: &ProjectArgs<'_>, projections: &[ProjectionName]) -> Result<()> {
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    // Listen for the stop signals before anything else, so a stop is always clean: each
    // projector finishes (or never starts) its batch and the process exits with success.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let mut conn =
        PgConnection::establish(args.database_url).context("connecting to the ledger database")?;
    ledger::migrate(&mut conn)?;
    drop(conn);
    let mut chosen = projections.to_vec();
    chosen.dedup();
    std::thread::scope(|scope| {
        let threads: Vec<_> = chosen
            .iter()
            .map(|name| {
                let stop = &stop;
                scope.spawn(move || {
                    let result = match name {
                        ProjectionName::Journal => run_projector(args, Journal, stop),
                        ProjectionName::Activity => run_projector(args, Activity, stop),
                        ProjectionName::Reputation => run_projector(args, Reputation, stop),
                    };
                    if result.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a projector thread panicked"))
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(())
}

fn run_projector<P: Projection>(
    args: &ProjectArgs<'_>,
    projection: P,
    stop: &AtomicBool,
) -> Result<()> {
    let conn =
        PgConnection::establish(args.database_url).context("connecting to the ledger database")?;
    let log = eventlog::open(args.log_url, &LogConfig::default())
        .with_context(|| format!("opening the event log {}", args.log_url))?;
    let config = ProjectorConfig {
        topic: Topics::with_prefix(args.topic_prefix).events,
        partition: args.shard,
        poll: Duration::from_millis(100),
    };
    let mut projector = Projector::open(conn, log, config, projection)?;
    if args.rebuild {
        projector.rebuild()?;
    }
    let (mut reported_at, mut reported_offset) = (Instant::now(), projector.next_offset());
    let mut waiting = false;
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        match projector.run_batch(args.batch) {
            Ok(projected) => {
                waiting = false;
                // A short batch means the projector is caught up: wait out the linger so
                // the next transaction carries what arrives meanwhile.
                if projected < args.batch {
                    std::thread::sleep(args.linger.saturating_sub(began.elapsed()));
                }
            }
            // The engine creates its topics when it starts; a projector may start first.
            Err(LedgerError::Log(LogError::UnknownTopic(topic))) => {
                if !waiting {
                    info!(%topic, "waiting for the engine to create the events topic");
                    waiting = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
        if reported_at.elapsed() >= args.progress_every {
            let next_offset = projector.next_offset();
            let per_sec =
                (next_offset - reported_offset) as f64 / reported_at.elapsed().as_secs_f64();
            info!(
                projector = P::NAME,
                shard = args.shard,
                next_offset,
                events_per_sec = per_sec as u64,
                "projector progress"
            );
            (reported_at, reported_offset) = (Instant::now(), next_offset);
        }
    }
    info!(
        projector = P::NAME,
        shard = args.shard,
        next_offset = projector.next_offset(),
        "projector stopped"
    );
    Ok(())
}

fn apply(
    path: PathBuf,
    depth: &[MarketId],
    explain: &[u64],
    snapshot: Option<PathBuf>,
) -> Result<()> {
    let input: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::new(io::stdin()))
    } else {
        Box::new(BufReader::new(
            File::open(&path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let mut engine = Engine::new();
    let mut events = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() || line.trim_start().starts_with("//") {
            continue;
        }
        let stamped: Stamped = serde_json::from_str(&line)
            .with_context(|| format!("line {}: not a command", n + 1))?;
        events.clear();
        let result = engine.apply(stamped.at, &stamped.command, &mut events);
        let answer = match result {
            Ok(()) => serde_json::json!({ "line": n + 1, "events": events }),
            Err(rejection) => serde_json::json!({
                "line": n + 1,
                "events": events,
                "rejected": { "message": rejection.to_string(), "detail": rejection },
            }),
        };
        writeln!(out, "{answer}")?;
    }
    for market in depth {
        let d = engine
            .depth(*market, 10)
            .with_context(|| format!("unknown market {market}"))?;
        writeln!(out, "{}", serde_json::json!({ "depth": d }))?;
    }
    for id in explain {
        let why = engine.explain(OrderId(*id), 20)?;
        writeln!(out, "{}", serde_json::json!({ "explain": why }))?;
    }
    if let Some(path) = snapshot {
        std::fs::write(&path, engine.snapshot())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    out.flush()?;
    Ok(())
}
