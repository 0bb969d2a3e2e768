//! `loadtest ledger`: the engine's events projected into Postgres by the journal projector
//! (`ledger::Projector<Journal>`, the code `gpumarket project` runs), on the embedded log.
//!
//! Untimed set-up: the plain workload's commands (see [`commands_for_log`]) go through one
//! in-process engine until it has answered with at least `--events` event records, which are
//! encoded as the engine runner encodes them and kept in memory. Then two phases, each on a
//! fresh events topic and a fresh, migrated database:
//!
//! 1. **throughput**: the whole stream is appended to the log first, then the projector
//!    catches up from offset zero in batches of `--batch`; `events_per_sec` is events over
//!    the time from its first read to its last commit.
//! 2. **lag**: a writer thread appends the same records at `--lag-rate` events/s (default:
//!    half the measured throughput) in appends of `--append-batch`, while the projector
//!    follows. An event's lag runs from the start of the append that writes it to the log to
//!    the return of the projector's commit of the batch that holds it (`lag_p50_ms`,
//!    `lag_p99_ms`, `lag_p999_ms`, `lag_max_ms`).
//!
//! The benchmark databases are dropped at the end unless `--keep`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use contract::codec::{self, EventBody, EventRecord, SCHEMA};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use eventlog::{LogConfig, NewRecord};
use ledger::{Journal, Projector, ProjectorConfig};
use matching_engine::Engine;
use serde::Serialize;

use crate::engine::commands_for_log;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Event records to project, at least (the last command's answers are all kept).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events read and committed per database transaction, at most.
    #[arg(long, default_value_t = 4_096)]
    batch: usize,
    /// Events per second the writer appends in the lag phase (default: half the throughput).
    #[arg(long)]
    lag_rate: Option<u64>,
    /// Events per append in the lag phase.
    #[arg(long, default_value_t = 500)]
    append_batch: usize,
    /// The Postgres server, as a URL to a database that exists (the benchmark creates its
    /// own databases beside it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Keep the benchmark databases instead of dropping them at the end.
    #[arg(long)]
    keep: bool,
    /// Where the embedded log goes (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value_t = 0x6770_756d_6b74)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    projector: &'static str,
    backend: &'static str,
    events: u64,
    journal_transactions: i64,
    postings: i64,
    batch: usize,
    events_per_sec: u64,
    lag_rate: u64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_p999_ms: f64,
    lag_max_ms: f64,
    method: &'static str,
}

const METHOD: &str = "journal projector (ledger::Projector<Journal>) on the embedded log, \
fresh migrated database per phase; throughput: the whole stream in the log first, events / \
first read to last commit; lag: events appended at lag_rate by another thread, an event's lag \
from the start of the append that writes it to the return of the commit of the projector's \
batch holding it";

pub fn run(args: &Args) -> Result<()> {
    anyhow::ensure!(
        args.batch > 0 && args.append_batch > 0,
        "batch sizes are at least 1"
    );
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let url = format!("file://{}", dir.join("log").display());
    let payloads = Arc::new(generate(args.events, args.seed)?);
    let events = payloads.len() as u64;
    let server = Server::new(&args.database_url, args.keep);

    eprintln!("throughput phase: {events} events, batch {}", args.batch);
    let topic = format!("bench-{}-throughput", std::process::id());
    let mut log = eventlog::open(&url, &LogConfig::default())?;
    log.create_topic(&topic, 1)?;
    for chunk in payloads.chunks(10_000) {
        log.append(&topic, 0, &records(chunk))?;
    }
    log.flush()?;
    let db = server.create("throughput")?;
    let mut projector = open_projector(&db, &url, &topic)?;
    let started = Instant::now();
    let mut progress = 0;
    while projector.next_offset() < events {
        projector.run_batch(args.batch)?;
        progress = report_progress(progress, projector.next_offset(), events);
    }
    let elapsed = started.elapsed();
    eprintln!("100%");
    let events_per_sec = (events as f64 / elapsed.as_secs_f64()) as u64;
    let mut conn = PgConnection::establish(&db)?;
    let journal_transactions = count(&mut conn, "journal_transactions")?;
    let postings = count(&mut conn, "postings")?;

    let rate = args.lag_rate.unwrap_or(events_per_sec / 2).max(1);
    eprintln!("lag phase: {events} events appended at {rate} events/s");
    let mut lags = lag_phase(&server, &url, &payloads, rate, args)?;
    lags.sort_unstable();
    let pct = |p: f64| {
        let rank = ((p * lags.len() as f64).ceil() as usize).clamp(1, lags.len());
        lags[rank - 1] as f64 / 1e6
    };
    let report = Report {
        projector: "journal",
        backend: "file",
        events,
        journal_transactions,
        postings,
        batch: args.batch,
        events_per_sec,
        lag_rate: rate,
        lag_p50_ms: pct(0.50),
        lag_p99_ms: pct(0.99),
        lag_p999_ms: pct(0.999),
        lag_max_ms: pct(1.0),
        method: METHOD,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "journal: {} events/s ({} events, {} transactions, {} postings, batch {}); at {} events/s: lag p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
            report.events_per_sec, report.events, report.journal_transactions, report.postings,
            report.batch, report.lag_rate, report.lag_p50_ms, report.lag_p99_ms,
            report.lag_p999_ms, report.lag_max_ms
        );
    }
    Ok(())
}

/// The engine's answers to the plain workload, encoded as event records, until there are at
/// least `events` of them.
fn generate(events: u64, seed: u64) -> Result<Vec<Encoded>> {
    eprintln!("generating at least {events} events (seed {seed})");
    let mut engine = Engine::new();
    let mut answers = Vec::new();
    let mut payloads = Vec::with_capacity(events as usize + 64);
    for (command_offset, (at, command)) in commands_for_log(events, seed)?.iter().enumerate() {
        if payloads.len() as u64 >= events {
            break;
        }
        answers.clear();
        let result = engine.apply(*at, command, &mut answers);
        for body in answers
            .drain(..)
            .map(EventBody::Event)
            .chain(result.err().map(EventBody::Rejected))
        {
            let kind = body.kind();
            let payload = codec::encode(&EventRecord {
                seq: payloads.len() as u64,
                command_offset: command_offset as u64,
                at: *at,
                body,
            });
            payloads.push((kind, payload));
        }
    }
    if (payloads.len() as u64) < events {
        bail!("the workload made only {} events", payloads.len());
    }
    Ok(payloads)
}

/// An event record as the engine runner appends it: its kind and its encoded payload.
type Encoded = (&'static str, Vec<u8>);

fn records(payloads: &[Encoded]) -> Vec<NewRecord<'_>> {
    payloads
        .iter()
        .map(|(kind, payload)| NewRecord {
            kind,
            schema: SCHEMA,
            payload,
        })
        .collect()
}

fn report_progress(shown: u64, done: u64, total: u64) -> u64 {
    let tenth = done * 10 / total;
    if tenth > shown && tenth < 10 {
        eprint!("{tenth}0% ");
    }
    tenth.max(shown)
}

/// Returns every event's lag in nanoseconds.
fn lag_phase(
    server: &Server,
    url: &str,
    payloads: &Arc<Vec<Encoded>>,
    rate: u64,
    args: &Args,
) -> Result<Vec<u64>> {
    let topic = format!("bench-{}-lag", std::process::id());
    let total = payloads.len();
    let mut log = eventlog::open(url, &LogConfig::default())?;
    log.create_topic(&topic, 1)?;
    let db = server.create("lag")?;
    let mut projector = open_projector(&db, url, &topic)?;
    let origin = Instant::now();
    let appended: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let writer = {
        let (payloads, appended, topic) = (Arc::clone(payloads), Arc::clone(&appended), topic);
        let append_batch = args.append_batch;
        std::thread::spawn(move || -> Result<()> {
            for (i, chunk) in payloads.chunks(append_batch).enumerate() {
                let due = Duration::from_secs_f64((i * append_batch) as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(origin.elapsed()) {
                    std::thread::sleep(wait);
                }
                let at = origin.elapsed().as_nanos() as u64;
                for k in 0..chunk.len() {
                    appended[i * append_batch + k].store(at, Ordering::Release);
                }
                log.append(&topic, 0, &records(chunk))?;
            }
            Ok(())
        })
    };
    let mut lags = Vec::with_capacity(total);
    let mut progress = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while projector.next_offset() < total as u64 {
        let from = projector.next_offset();
        projector.run_batch(args.batch)?;
        let now = origin.elapsed().as_nanos() as u64;
        for offset in from..projector.next_offset() {
            lags.push(now.saturating_sub(appended[offset as usize].load(Ordering::Acquire)));
        }
        progress = report_progress(progress, projector.next_offset(), total as u64);
        if Instant::now() > deadline {
            bail!(
                "only {} of {total} events projected in 10 minutes",
                lags.len()
            );
        }
    }
    eprintln!("100%");
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))?
        .context("appending events")?;
    Ok(lags)
}

fn open_projector(db: &str, url: &str, topic: &str) -> Result<Projector<Journal>> {
    let log = eventlog::open(url, &LogConfig::default())?;
    let config = ProjectorConfig {
        topic: topic.to_owned(),
        partition: 0,
        poll: Duration::from_millis(20),
    };
    Ok(Projector::open(
        PgConnection::establish(db)?,
        log,
        config,
        Journal,
    )?)
}

fn count(conn: &mut PgConnection, table: &str) -> Result<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    Ok(
        diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
            .get_result::<Count>(conn)?
            .n,
    )
}

/// The Postgres server: creates migrated benchmark databases and drops them at the end
/// (unless kept).
struct Server {
    admin_url: String,
    keep: bool,
    created: std::cell::RefCell<Vec<String>>,
}

impl Server {
    fn new(admin_url: &str, keep: bool) -> Server {
        Server {
            admin_url: admin_url.to_owned(),
            keep,
            created: Default::default(),
        }
    }

    /// Creates and migrates a fresh database; returns its URL.
    fn create(&self, phase: &str) -> Result<String> {
        let started_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let name = format!(
            "loadtest_ledger_{phase}_{started_at}_{}",
            std::process::id()
        );
        let mut admin = PgConnection::establish(&self.admin_url)
            .with_context(|| format!("connecting to {}", self.admin_url))?;
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin)?;
        self.created.borrow_mut().push(name.clone());
        let base = self
            .admin_url
            .rsplit_once('/')
            .map_or(self.admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        ledger::migrate(&mut PgConnection::establish(&url)?)?;
        if self.keep {
            eprintln!("database {url} (kept)");
        }
        Ok(url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let Ok(mut admin) = PgConnection::establish(&self.admin_url) else {
            eprintln!(
                "cannot reach {} to drop the benchmark databases",
                self.admin_url
            );
            return;
        };
        for name in self.created.borrow().iter() {
            if let Err(e) =
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
            {
                eprintln!("dropping {name}: {e}");
            }
        }
    }
}
