//! `loadtest ledger`: the engine's events projected into Postgres by the ledger's
//! projectors (`ledger::Projector` with `Journal`, `Activity` and `Reputation`, the code
//! `gpumarket project` runs), on the embedded log.
//!
//! Untimed set-up: a generated market (`engine_service::testing::market_day`: orders with
//! constraints, cancels, amends, fills, lease starts and ends, heartbeats, deposits and
//! withdrawals) goes through one in-process engine until it has answered with at least
//! `--events` event records, which are encoded as the engine runner encodes them and kept in
//! memory. The stream is appended to one events topic, then three phases, each on fresh,
//! migrated databases:
//!
//! 1. **each projection alone**: one projector catches up from offset zero in batches of
//!    `--batch`; `events_per_sec` is events over the time from its first read to its last
//!    commit.
//! 2. **all together** (`projector: "all"`): the three projectors on their own threads and
//!    connections, as `gpumarket project` runs them; `events_per_sec` is events over the time
//!    until the last of them has committed the last event, so every event went through every
//!    projection.
//! 3. **lag**: a writer thread appends the stream to a second topic at `--lag-rate` events/s
//!    (default: half the all-together throughput) in appends of `--append-batch`, while the
//!    three projectors follow it together. An event's lag runs from the start of the append
//!    that writes it to the return of the commit of the batch that holds it, per projector
//!    (`lag_p50_ms`, `lag_p99_ms`, `lag_p999_ms`, `lag_max_ms`).
//!
//! Beside each throughput figure: the CPU time per event of the projector's thread and of
//! its Postgres backend (`/proc/<id>/stat`, utime + stime, in 10 ms ticks), and the
//! machine's own limit for the same rows, the **copy limit**: every row the phase left in
//! the projection's tables, read out untimed in Postgres's binary `COPY` format, then loaded
//! into the same tables (indexes, constraints and triggers as migrated) of a fresh database
//! by `COPY … FROM STDIN (FORMAT binary)` in one transaction with nothing else
//! (`copy_rows_per_sec`, and `copy_events_per_sec`: the phase's events over that load's
//! time, to set against `events_per_sec`).
//!
//! The benchmark databases are dropped at the end unless `--keep`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use contract::codec::{self, EventBody, EventRecord, SCHEMA};
use diesel::prelude::*;
use engine_service::testing::{market_day, Rng};
use eventlog::{LogConfig, NewRecord};
use ledger::{Activity, Journal, Projection, Projector, ProjectorConfig, Reputation};
use matching_engine::Engine;
use serde::Serialize;

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
    batch: usize,
    events_per_sec: u64,
    /// Rows the projection holds after its throughput phase.
    rows: u64,
    /// CPU time per event of the projector thread(s) and of their Postgres backends
    /// (absent where the backend is not a local process).
    projector_cpu_us_per_event: f64,
    postgres_cpu_us_per_event: Option<f64>,
    /// The copy limit: the rows in the projection's tables after the phase, bulk-loaded.
    copy_rows: u64,
    copy_rows_per_sec: u64,
    copy_events_per_sec: u64,
    lag_rate: u64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_p999_ms: f64,
    lag_max_ms: f64,
    method: &'static str,
}

const METHOD: &str = "ledger projectors on the embedded log, fresh migrated database per \
phase; alone: the whole stream in the log first, events / first read to last commit; all: \
the three projectors on their own threads and connections, events / time until the last \
commits the last event; lag: events appended at lag_rate by another thread while the three \
follow together, an event's lag from the start of the append that writes it to the return \
of the commit of the projector's batch holding it (all: the slowest projector's); cpu: \
/proc utime+stime of the projector threads and their Postgres backends over the phase; copy \
limit: the phase's rows in its tables, binary COPY out (untimed), then COPY FROM STDIN \
(FORMAT binary) into the same tables of a fresh migrated database, one transaction, rows / \
load time";

/// The projections, by name.
const PROJECTIONS: [&str; 3] = ["journal", "activity", "reputation"];

/// The tables a projection owns, by its name.
fn tables(name: &str) -> &'static [&'static str] {
    match name {
        "journal" => Journal::TABLES,
        "activity" => Activity::TABLES,
        _ => Reputation::TABLES,
    }
}

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

    let topic = format!("bench-{}-throughput", std::process::id());
    let mut log = eventlog::open(&url, &LogConfig::default())?;
    log.create_topic(&topic, 1)?;
    for chunk in payloads.chunks(10_000) {
        log.append(&topic, 0, &records(chunk))?;
    }
    log.flush()?;
    let quiet = |_: u64, _: u64| {};

    let mut phases = Vec::new();
    for name in PROJECTIONS {
        eprintln!("{name} alone: {events} events, batch {}", args.batch);
        let db = server.create(name)?;
        let run = follow(name, &db, &url, &topic, args.batch, events, None, &quiet)?;
        // The database is this projection's alone: every row counted is its.
        let rows = ledger::read::projected_rows(&mut PgConnection::establish(&db)?)?;
        let copy = copy_limit(&server, &db, name, tables(name))?;
        phases.push((name, run.per_sec(events), rows, run.cpu, copy));
    }

    eprintln!("all together: {events} events, batch {}", args.batch);
    let db = server.create("all")?;
    let started = Instant::now();
    let runs = std::thread::scope(|scope| {
        let threads: Vec<_> = PROJECTIONS
            .iter()
            .map(|name| {
                let (db, url, topic, quiet) = (&db, &url, &topic, &quiet);
                scope.spawn(move || follow(name, db, url, topic, args.batch, events, None, quiet))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a projector thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    let all = Run {
        elapsed: started.elapsed(),
        cpu: runs
            .iter()
            .fold(Cpu::default(), |sum, run| sum.plus(run.cpu)),
    };
    let all_rows = ledger::read::projected_rows(&mut PgConnection::establish(&db)?)?;
    let all_tables: Vec<&str> = PROJECTIONS
        .iter()
        .flat_map(|name| tables(name))
        .copied()
        .collect();
    let copy = copy_limit(&server, &db, "all", &all_tables)?;
    phases.push(("all", all.per_sec(events), all_rows, all.cpu, copy));

    let rate = args.lag_rate.unwrap_or(all.per_sec(events) / 2).max(1);
    eprintln!("lag: {events} events appended at {rate} events/s, the three projectors following");
    let mut lags = lag_phase(&server, &url, &payloads, rate, args)?;
    // An event is projected everywhere once its slowest projector has committed it.
    let mut slowest = vec![0u64; events as usize];
    for per_event in lags.values() {
        for (worst, lag) in slowest.iter_mut().zip(per_event) {
            *worst = (*worst).max(*lag);
        }
    }
    lags.insert("all", slowest);

    let pct = |lags: &[u64], p: f64| {
        let rank = ((p * lags.len() as f64).ceil() as usize).clamp(1, lags.len());
        lags[rank - 1] as f64 / 1e6
    };
    let per_event = |cpu: Duration| cpu.as_secs_f64() * 1e6 / events as f64;
    for (projector, events_per_sec, rows, cpu, copy) in phases {
        let mut sorted = lags.remove(projector).unwrap_or_default();
        sorted.sort_unstable();
        let copy_secs = copy.elapsed.as_secs_f64();
        let report = Report {
            projector,
            backend: "file",
            events,
            batch: args.batch,
            events_per_sec,
            rows,
            projector_cpu_us_per_event: per_event(cpu.projector),
            postgres_cpu_us_per_event: cpu.postgres.map(per_event),
            copy_rows: copy.rows,
            copy_rows_per_sec: (copy.rows as f64 / copy_secs) as u64,
            copy_events_per_sec: (events as f64 / copy_secs) as u64,
            lag_rate: rate,
            lag_p50_ms: pct(&sorted, 0.50),
            lag_p99_ms: pct(&sorted, 0.99),
            lag_p999_ms: pct(&sorted, 0.999),
            lag_max_ms: pct(&sorted, 1.0),
            method: METHOD,
        };
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "{:<10} {:>7} events/s ({} events, {} rows, batch {}); cpu/event: projector {:.2} µs, postgres {}; copy limit {} rows/s = {} events/s; at {} events/s: lag p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
                report.projector, report.events_per_sec, report.events, report.rows,
                report.batch, report.projector_cpu_us_per_event,
                report.postgres_cpu_us_per_event.map_or("?".to_owned(), |us| format!("{us:.2} µs")),
                report.copy_rows_per_sec, report.copy_events_per_sec, report.lag_rate,
                report.lag_p50_ms, report.lag_p99_ms, report.lag_p999_ms, report.lag_max_ms
            );
        }
    }
    Ok(())
}

/// A generated market's answers from the engine, encoded as event records, until there are
/// at least `events` of them.
fn generate(events: u64, seed: u64) -> Result<Vec<Encoded>> {
    eprintln!("generating at least {events} events (seed {seed})");
    let mut engine = Engine::new();
    let mut answers = Vec::new();
    let mut payloads = Vec::with_capacity(events as usize + 64);
    // A command answers with about one event; a quarter more commands than events is ample.
    let commands = market_day(&mut Rng(seed), events as usize + events as usize / 4);
    for (command_offset, record) in commands.iter().enumerate() {
        if payloads.len() as u64 >= events {
            break;
        }
        answers.clear();
        let result = engine.apply(record.at, &record.command, &mut answers);
        for body in answers
            .drain(..)
            .map(EventBody::Event)
            .chain(result.err().map(EventBody::Rejected))
        {
            let kind = body.kind();
            let payload = codec::encode(&EventRecord {
                seq: payloads.len() as u64,
                command_offset: command_offset as u64,
                at: record.at,
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

/// How long a projector took and the CPU it and its database backend used.
#[derive(Debug, Clone, Copy)]
struct Run {
    elapsed: Duration,
    cpu: Cpu,
}

impl Run {
    fn per_sec(&self, events: u64) -> u64 {
        (events as f64 / self.elapsed.as_secs_f64()) as u64
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    projector: Duration,
    /// `None` where the backend is not a local process.
    postgres: Option<Duration>,
}

impl Cpu {
    fn plus(self, other: Cpu) -> Cpu {
        Cpu {
            projector: self.projector + other.projector,
            postgres: self.postgres.zip(other.postgres).map(|(a, b)| a + b),
        }
    }
}

/// The CPU time the thread or process `/proc/<id>` names has used: utime + stime, counted
/// in Linux's USER_HZ ticks, which are 10 ms on every architecture it runs on.
fn cpu_time(id: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{id}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The local process serving `conn`, if it is one: a remote server's pid names nothing
/// here, or something else.
fn backend(conn: &mut PgConnection) -> Result<Option<String>> {
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)?
        .pid
        .to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    Ok(cmdline.starts_with(b"postgres").then_some(pid))
}

/// Runs the projection called `name` from offset zero until it has projected `events`
/// events, calling `committed(from, to)` after each commit; returns the time it took and
/// the CPU it used. `deadline` bounds a run that follows a writer.
#[allow(clippy::too_many_arguments)]
fn follow(
    name: &str,
    db: &str,
    url: &str,
    topic: &str,
    batch: usize,
    events: u64,
    deadline: Option<Instant>,
    committed: &(dyn Fn(u64, u64) + Sync),
) -> Result<Run> {
    let log = eventlog::open(url, &LogConfig::default())?;
    let config = ProjectorConfig {
        topic: topic.to_owned(),
        partition: 0,
        poll: Duration::from_millis(20),
    };
    let mut conn = PgConnection::establish(db)?;
    let backend = backend(&mut conn)?;
    let used = || {
        let postgres = backend.as_deref().and_then(cpu_time);
        (cpu_time("thread-self").unwrap_or_default(), postgres)
    };
    let (thread_before, postgres_before) = used();
    let elapsed = match name {
        "journal" => drive(
            Projector::open(conn, log, config, Journal)?,
            batch,
            events,
            deadline,
            committed,
        ),
        "activity" => drive(
            Projector::open(conn, log, config, Activity)?,
            batch,
            events,
            deadline,
            committed,
        ),
        "reputation" => drive(
            Projector::open(conn, log, config, Reputation)?,
            batch,
            events,
            deadline,
            committed,
        ),
        other => bail!("no projection {other}"),
    }?;
    let (thread_after, postgres_after) = used();
    Ok(Run {
        elapsed,
        cpu: Cpu {
            projector: thread_after.saturating_sub(thread_before),
            postgres: postgres_after
                .zip(postgres_before)
                .map(|(after, before)| after.saturating_sub(before)),
        },
    })
}

/// What bulk-loading a phase's rows took.
#[derive(Debug)]
struct Copied {
    rows: u64,
    elapsed: Duration,
}

/// The copy limit: every row of `tables` in the database at `source`, read out in binary
/// `COPY` format (untimed), then loaded into the same tables of a fresh migrated database
/// by `COPY … FROM STDIN (FORMAT binary)`, all in one transaction and nothing else.
/// `tables` are in an order where a referenced table comes before the ones referencing it.
fn copy_limit(server: &Server, source: &str, phase: &str, tables: &[&str]) -> Result<Copied> {
    use std::io::{Read, Write};

    let mut from = postgres::Client::connect(source, postgres::NoTls)?;
    let mut dumps = Vec::with_capacity(tables.len());
    for table in tables {
        let mut bytes = Vec::new();
        from.copy_out(&format!("COPY {table} TO STDOUT (FORMAT binary)"))?
            .read_to_end(&mut bytes)?;
        dumps.push((table, bytes));
    }
    let target = server.create(&format!("copy_{phase}"))?;
    let mut to = postgres::Client::connect(&target, postgres::NoTls)?;
    // Migrations may seed a table; the load starts from empty ones.
    to.batch_execute(&format!("TRUNCATE {}", tables.join(", ")))?;
    let started = Instant::now();
    let mut tx = to.transaction()?;
    let mut rows = 0;
    for (table, bytes) in &dumps {
        let mut writer = tx.copy_in(&format!("COPY {table} FROM STDIN (FORMAT binary)"))?;
        writer.write_all(bytes)?;
        rows += writer
            .finish()
            .with_context(|| format!("loading {table}"))?;
    }
    tx.commit()?;
    Ok(Copied {
        rows,
        elapsed: started.elapsed(),
    })
}

fn drive<P: Projection>(
    mut projector: Projector<P>,
    batch: usize,
    events: u64,
    deadline: Option<Instant>,
    committed: &(dyn Fn(u64, u64) + Sync),
) -> Result<Duration> {
    let started = Instant::now();
    let mut shown = 0;
    while projector.next_offset() < events {
        let from = projector.next_offset();
        projector.run_batch(batch)?;
        committed(from, projector.next_offset());
        let tenth = projector.next_offset() * 10 / events;
        if tenth > shown {
            eprintln!("  {}: {tenth}0%", P::NAME);
            shown = tenth;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            bail!(
                "{}: only {} of {events} events projected in time",
                P::NAME,
                projector.next_offset()
            );
        }
    }
    Ok(started.elapsed())
}

/// Returns every event's lag in nanoseconds, per projector.
fn lag_phase(
    server: &Server,
    url: &str,
    payloads: &Arc<Vec<Encoded>>,
    rate: u64,
    args: &Args,
) -> Result<BTreeMap<&'static str, Vec<u64>>> {
    let topic = format!("bench-{}-lag", std::process::id());
    let total = payloads.len();
    let mut log = eventlog::open(url, &LogConfig::default())?;
    log.create_topic(&topic, 1)?;
    let db = server.create("lag")?;
    let origin = Instant::now();
    let appended: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let writer = {
        let (payloads, appended, topic) =
            (Arc::clone(payloads), Arc::clone(&appended), topic.clone());
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
    let deadline = Instant::now() + Duration::from_secs(600);
    let lags = std::thread::scope(|scope| {
        let threads: Vec<_> = PROJECTIONS
            .iter()
            .map(|name| {
                let (db, topic, appended) = (&db, &topic, &appended);
                scope.spawn(move || {
                    let lags = Mutex::new(vec![0u64; total]);
                    let record = |from: u64, to: u64| {
                        let now = origin.elapsed().as_nanos() as u64;
                        let mut lags = lags.lock().expect("only this thread records");
                        for offset in from..to {
                            let sent = appended[offset as usize].load(Ordering::Acquire);
                            lags[offset as usize] = now.saturating_sub(sent);
                        }
                    };
                    let (batch, events) = (args.batch, total as u64);
                    follow(name, db, url, topic, batch, events, Some(deadline), &record)?;
                    Ok::<_, anyhow::Error>((*name, lags.into_inner().expect("not poisoned")))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a projector thread panicked"))
            .collect::<Result<BTreeMap<_, _>>>()
    })?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))?
        .context("appending events")?;
    Ok(lags)
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
