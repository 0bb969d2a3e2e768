//! What several subcommands use and none of them owns: where an engine shard lives (`engine`
//! and `api`), the stop flag the long-running ones watch, and, for `up` and its demo, the
//! parts of the market on their threads and the key files in the data directory.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Result;
use diesel::{Connection, PgConnection};

/// Where one engine shard lives: the log, the topics and the partition.
#[derive(clap::Args)]
pub struct ShardArgs {
    /// The event log: `file://DIR` (embedded, the default) or `kafka://HOST:PORT`.
    #[arg(long, env = "GPUMARKET_LOG", default_value = "file://./data/log")]
    pub log: String,
    /// Prefix of the topic names (`{prefix}commands`, `{prefix}events`).
    #[arg(long, env = "GPUMARKET_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// The shard: the partition of both topics this process works on.
    #[arg(long, env = "GPUMARKET_SHARD", default_value_t = 0)]
    pub shard: u32,
    /// Partitions per topic: the number of engine shards.
    #[arg(long, env = "GPUMARKET_SHARDS", default_value_t = 1)]
    pub shards: u32,
}

impl ShardArgs {
    /// Refuses a shard outside the topics' partitions.
    pub fn checked(self) -> Result<ShardArgs> {
        anyhow::ensure!(
            self.shard < self.shards,
            "--shard {} must be below --shards {}",
            self.shard,
            self.shards
        );
        Ok(self)
    }
}

/// A flag that SIGTERM or SIGINT (Ctrl-C) sets: the long-running subcommands finish what
/// they are doing and stop cleanly once it is set.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// A part of the market and its thread.
pub type Part = (&'static str, JoinHandle<Result<()>>);

/// Starts a part of the market on a thread named after it, so `top -H` and a debugger show
/// which part is busy.
pub fn spawn_part(
    name: &'static str,
    f: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<Part> {
    let thread = std::thread::Builder::new().name(name.to_owned()).spawn(f)?;
    Ok((name, thread))
}

/// A key of `role` for `account`, made once and kept in `path` (whole, only its owner
/// reading it: a crash while writing it leaves no half key for the next start).
pub fn key_file(
    db: &str,
    path: &Path,
    role: api::auth::Role,
    account: Option<u64>,
    label: &str,
) -> Result<String> {
    if let Ok(key) = std::fs::read_to_string(path) {
        return Ok(key.trim().to_owned());
    }
    let mut conn = PgConnection::establish(db)?;
    let (_, secret) =
        api::auth::create_key(&mut conn, role, account.map(contract::AccountId), label)
            .map_err(|e| anyhow::anyhow!("creating the {label} key: {}", e.message))?;
    provider_agent::durable::write_atomic(path, secret.as_bytes(), 0o600)?;
    Ok(secret)
}
