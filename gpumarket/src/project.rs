//! `gpumarket project`: the ledger's projectors on one events partition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use diesel::{Connection, PgConnection};
use engine_service::Topics;
use eventlog::{LogConfig, LogError};
use ledger::{Activity, Journal, LedgerError, Projection, Projector, ProjectorConfig, Reputation};
use tracing::info;

use crate::common::stop_on_signals;

/// How often a caught-up projector commits (`project --linger-ms`, and `up`).
pub const LINGER_MS: u64 = 50;

/// Run the ledger's projectors on one events partition: apply pending migrations, then
/// project events into the database, each projection exactly once in its own
/// transactions, until SIGTERM or Ctrl-C.
#[derive(clap::Args)]
pub struct Args {
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
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProjectionName {
    Journal,
    Activity,
    Reputation,
}

/// Where and how a projector runs (for `project`, and `up`).
pub struct Config<'a> {
    pub log_url: &'a str,
    pub database_url: &'a str,
    pub topic_prefix: &'a str,
    pub shard: u32,
    pub rebuild: bool,
    pub batch: usize,
    pub linger: Duration,
    pub progress_every: Duration,
}

/// The chosen projectors, each on its own thread, until a stop signal or the first error
/// (which stops the others and is returned).
pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    // Listen for the stop signals before anything else, so a stop is always clean: each
    // projector finishes (or never starts) its batch and the process exits with success.
    let stop = stop_on_signals()?;
    let mut conn =
        PgConnection::establish(&args.database_url).context("connecting to the ledger database")?;
    ledger::migrate(&mut conn)?;
    drop(conn);
    let config = &Config {
        log_url: &args.log,
        database_url: &args.database_url,
        topic_prefix: &args.topic_prefix,
        shard: args.shard,
        rebuild: args.rebuild,
        batch: args.batch,
        linger: Duration::from_millis(args.linger_ms),
        progress_every: Duration::from_secs(args.progress_secs),
    };
    let mut chosen = args.projections;
    chosen.dedup();
    std::thread::scope(|scope| {
        let threads: Vec<_> = chosen
            .iter()
            .map(|name| {
                let stop = &stop;
                scope.spawn(move || {
                    let result = match name {
                        ProjectionName::Journal => run_projector(config, Journal, stop),
                        ProjectionName::Activity => run_projector(config, Activity, stop),
                        ProjectionName::Reputation => run_projector(config, Reputation, stop),
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

/// One projector on the calling thread until `stop` is set or it fails, logging its progress
/// every `progress_every`.
pub fn run_projector<P: Projection>(
    args: &Config<'_>,
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
