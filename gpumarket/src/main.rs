//! `gpumarket`: the market's command-line entry point.
//!
//! `engine` runs one shard's matching engine against the event log (embedded or Kafka);
//! `apply` drives an in-process engine over a file of commands; `migrate` brings a ledger
//! database's schema up to date; `project` runs the journal projector on one events
//! partition. The other projections, the API and the bridge join as their issues land (see
//! README.md).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use contract::{Command, MarketId, OrderId, Timestamp};
use diesel::{Connection, PgConnection};
use engine_service::{Runner, RunnerConfig, Topics};
use eventlog::{LogConfig, LogError};
use ledger::{Journal, LedgerError, Projector, ProjectorConfig};
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
    /// Run the journal projector on one events partition: apply pending migrations, then
    /// project events into the database, exactly once, until SIGTERM or Ctrl-C.
    Project {
        /// The event log: `file://DIR` (embedded, the default) or `kafka://HOST:PORT`.
        #[arg(long, env = "GPUMARKET_LOG", default_value = "file://./data/log")]
        log: String,
        /// The ledger database, e.g. `postgres://user@host:5432/gpumarket`.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Prefix of the topic names (the projector reads `{prefix}events`).
        #[arg(long, env = "GPUMARKET_TOPIC_PREFIX", default_value = "")]
        topic_prefix: String,
        /// The events partition (the engine shard) to project.
        #[arg(long, env = "GPUMARKET_SHARD", default_value_t = 0)]
        shard: u32,
        /// Events read and committed per database transaction, at most.
        #[arg(long, default_value_t = 4_096)]
        batch: usize,
        /// Seconds between progress lines in the log.
        #[arg(long, default_value_t = 10)]
        progress_secs: u64,
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
            batch,
            progress_secs,
        } => project(
            &log,
            &database_url,
            &topic_prefix,
            shard,
            batch,
            Duration::from_secs(progress_secs),
        ),
        Cmd::Apply {
            commands,
            depth,
            explain,
            snapshot,
        } => apply(commands, &depth, &explain, snapshot),
    }
}

/// The `project` subcommand: one journal projector until a stop signal.
fn project(
    log_url: &str,
    database_url: &str,
    topic_prefix: &str,
    shard: u32,
    batch: usize,
    progress_every: Duration,
) -> Result<()> {
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    // Listen for the stop signals before anything else, so a stop is always clean: the
    // projector finishes (or never starts) its batch and the process exits with success.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let mut conn =
        PgConnection::establish(database_url).context("connecting to the ledger database")?;
    ledger::migrate(&mut conn)?;
    let log = eventlog::open(log_url, &LogConfig::default())
        .with_context(|| format!("opening the event log {log_url}"))?;
    let config = ProjectorConfig {
        topic: Topics::with_prefix(topic_prefix).events,
        partition: shard,
        poll: Duration::from_millis(100),
    };
    let mut projector = Projector::open(conn, log, config, Journal)?;
    let (mut reported_at, mut reported_offset) = (Instant::now(), projector.next_offset());
    let mut waiting = false;
    while !stop.load(Ordering::Relaxed) {
        match projector.run_batch(batch) {
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
        if reported_at.elapsed() >= progress_every {
            let next_offset = projector.next_offset();
            let per_sec =
                (next_offset - reported_offset) as f64 / reported_at.elapsed().as_secs_f64();
            info!(
                projector = "journal",
                shard,
                next_offset,
                events_per_sec = per_sec as u64,
                "projector progress"
            );
            (reported_at, reported_offset) = (Instant::now(), next_offset);
        }
    }
    info!(
        projector = "journal",
        shard,
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
