//! `gpumarket engine`: one shard's matching engine on the event log.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use engine_service::{Runner, RunnerConfig, Topics};
use eventlog::LogConfig;

use crate::common::{stop_on_signals, ShardArgs};

/// Commands between engine snapshots (`engine --snapshot-every`, and `up`).
pub const SNAPSHOT_EVERY: u64 = 500_000;

/// Run one shard's matching engine: read its command partition, append its answers to
/// the event partition, snapshot every N commands. Stops cleanly on SIGTERM or Ctrl-C.
#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(args: Args) -> Result<()> {
    let place = args.place.checked()?;
    let (log, shard, shards) = (place.log, place.shard, place.shards);
    let stop = stop_on_signals()?;
    let log = eventlog::open(&log, &LogConfig::default())
        .with_context(|| format!("opening the event log {log}"))?;
    let config = RunnerConfig {
        topics: Topics::with_prefix(&place.topic_prefix),
        shard,
        shards,
        snapshot_every: args.snapshot_every,
        snapshot_dir: args
            .data_dir
            .join("snapshots")
            .join(format!("shard-{shard}")),
        batch: args.batch,
        poll: Duration::from_millis(50),
    };
    let mut runner = Runner::open(config, log)?;
    runner.run(&stop)?;
    Ok(())
}
