//! `gpumarket`: the market's command-line entry point.
//!
//! `engine` runs one shard's matching engine against the event log (embedded or Kafka);
//! `apply` drives an in-process engine over a file of commands. The projections, the API
//! and the bridge join as their issues land (see README.md).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use contract::{Command, MarketId, OrderId, Timestamp};
use engine_service::{Runner, RunnerConfig, Topics};
use eventlog::LogConfig;
use matching_engine::Engine;
use serde::Deserialize;

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
        Cmd::Apply {
            commands,
            depth,
            explain,
            snapshot,
        } => apply(commands, &depth, &explain, snapshot),
    }
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
