//! `gpumarket`: the market's command-line entry point.
//!
//! `engine` runs one shard's matching engine against the event log (embedded or Kafka);
//! `apply` drives an in-process engine over a file of commands; `migrate` brings a ledger
//! database's schema up to date; `project` runs the ledger's projectors (journal, activity,
//! reputation) on one events partition; `export` writes the finance exports. The API and
//! the bridge join as their issues land (see README.md).

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

#[derive(Parser)]
#[command(name = "gpumarket", version, about = "The open GPU-compute exchange")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one shard's matching engine: read its command partition, append its answers to
    /// the event partition, snapshot every N commands. Stops cleanly on SIGTERM or Ctrl-C.
    Engine {
        /// The event log: `file://DIR` (embedded, the default) or `kafka://HOST:PORT`.
        #[arg(long, env = "GPUMARKET_LOG", default_value = "file://./data/log")]
        log: String,
        /// Where snapshots are kept (a folder per shard is made inside).
        #[arg(long, env = "GPUMARKET_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Prefix of the topic names (`{prefix}commands`, `{prefix}events`).
        #[arg(long, env = "GPUMARKET_TOPIC_PREFIX", default_value = "")]
        topic_prefix: String,
        #[arg(long, env = "GPUMARKET_SHARD", default_value_t = 0)]
        shard: u32,
        /// Partitions per topic: the number of engine shards.
        #[arg(long, env = "GPUMARKET_SHARDS", default_value_t = 1)]
        shards: u32,
        #[arg(long, env = "GPUMARKET_SNAPSHOT_EVERY", default_value_t = 50_000)]
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
            log,
            data_dir,
            topic_prefix,
            shard,
            shards,
            snapshot_every,
            batch,
        } => {
            anyhow::ensure!(
                shard < shards,
                "--shard {shard} must be below --shards {shards}"
            );
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, Arc::clone(&stop))?;
            }
            let log = eventlog::open(&log, &LogConfig::default())
                .with_context(|| format!("opening the event log {log}"))?;
            let config = RunnerConfig {
                topics: Topics::with_prefix(&topic_prefix),
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
            progress_secs,
        } => project(
            &ProjectArgs {
                log_url: &log,
                database_url: &database_url,
                topic_prefix: &topic_prefix,
                shard,
                rebuild,
                batch,
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
        match projector.run_batch(args.batch) {
            Ok(_) => waiting = false,
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
