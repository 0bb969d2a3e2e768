//! `loadtest log`: commands appended to the event log, applied by a running engine runner,
//! and their answers read back, on the embedded log or on Kafka.
//!
//! Three threads share the process, each with its own log handle as separate processes
//! would have: the producer appends command batches, the engine runner (the same
//! `engine_service::Runner` that `gpumarket engine` runs) applies them and appends events,
//! and the reader follows the event partition. Two phases, each on fresh topics:
//!
//! 1. **throughput**: the producer appends as fast as the log takes it; `commands_per_sec` is
//!    commands over the time from the first append to the last answer read.
//! 2. **latency**: the producer paces batches at `--latency-rate` commands/s (default: half
//!    the measured throughput) and every command's latency is from the start of its batch's
//!    append to its first event being readable (`p50_us`, `p99_us`, `p999_us`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use contract::codec::{self, CommandRecord, EventRecord, SCHEMA};
use engine_service::{Runner, RunnerConfig, Topics};
use eventlog::{LogConfig, NewRecord};
use serde::Serialize;

use crate::engine::commands_for_log;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    File,
    Kafka,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "file")]
    backend: Backend,
    /// Kafka bootstrap brokers (`host:port`), for `--backend kafka`.
    #[arg(long)]
    brokers: Option<String>,
    /// Where the embedded log and snapshots go (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Commands in each phase (market setup included).
    #[arg(long, default_value_t = 500_000)]
    commands: u64,
    /// Commands per append.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Commands per second in the latency phase (default: half the measured throughput).
    #[arg(long)]
    latency_rate: Option<u64>,
    /// Kafka `fetch.wait.max.ms` for the engine's and the reader's consumers.
    #[arg(long, default_value_t = 5)]
    fetch_wait_ms: u64,
    #[arg(long, default_value_t = 0x6770_756d_6b74)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    backend: &'static str,
    commands: usize,
    commands_per_sec: u64,
    events: u64,
    latency_rate: u64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    method: &'static str,
}

const METHOD: &str = "producer, engine runner and event reader in one process with a log \
handle each; throughput phase unpaced (commands / first append to last answer read); latency \
phase paced, from the start of a command's batch append to its first event readable";

struct Phase {
    elapsed: Duration,
    events: u64,
    latencies_ns: Vec<u64>,
}

pub fn run(args: &Args) -> Result<()> {
    let (url, _tmp, data) = match args.backend {
        Backend::File => {
            let tmp = tempfile::tempdir()?;
            let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
            let url = format!("file://{}", dir.join("log").display());
            (url, Some(tmp), dir)
        }
        Backend::Kafka => {
            let Some(brokers) = &args.brokers else {
                bail!("--backend kafka needs --brokers HOST:PORT");
            };
            let tmp = tempfile::tempdir()?;
            let data = tmp.path().to_owned();
            (format!("kafka://{brokers}"), Some(tmp), data)
        }
    };
    // The plain workload makes about 1.75 messages per new order.
    let orders = (args.commands as f64 / 1.75).ceil() as u64;
    eprintln!(
        "generating about {} commands (seed {})",
        args.commands, args.seed
    );
    let payloads: Vec<Vec<u8>> = commands_for_log(orders, args.seed)?
        .into_iter()
        .take(args.commands as usize)
        .map(|(at, command)| codec::encode(&CommandRecord { at, command }))
        .collect();

    eprintln!("[{url}] throughput phase: {} commands", payloads.len());
    let config = LogConfig {
        kafka_fetch_wait: Duration::from_millis(args.fetch_wait_ms),
        ..LogConfig::default()
    };
    let fast = phase(
        &url,
        &config,
        &data.join("fast"),
        &payloads,
        args.batch,
        None,
    )?;
    let commands_per_sec = (payloads.len() as f64 / fast.elapsed.as_secs_f64()) as u64;
    let rate = args.latency_rate.unwrap_or(commands_per_sec / 2).max(1);
    eprintln!("[{url}] latency phase at {rate} commands/s");
    let mut paced = phase(
        &url,
        &config,
        &data.join("paced"),
        &payloads,
        args.batch,
        Some(rate),
    )?;
    paced.latencies_ns.sort_unstable();
    let pct = |p: f64| {
        let n = paced.latencies_ns.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        paced.latencies_ns[rank - 1] as f64 / 1_000.0
    };
    let report = Report {
        backend: match args.backend {
            Backend::File => "file",
            Backend::Kafka => "kafka",
        },
        commands: payloads.len(),
        commands_per_sec,
        events: fast.events,
        latency_rate: rate,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        max_us: pct(1.0),
        method: METHOD,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} backend: {} commands/s ({} commands, {} events); at {} commands/s: p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs",
            report.backend, report.commands_per_sec, report.commands, report.events,
            report.latency_rate, report.p50_us, report.p99_us, report.p999_us
        );
    }
    Ok(())
}

/// One run on fresh topics: returns the wall time, the events read and each command's latency.
fn phase(
    url: &str,
    config: &LogConfig,
    data: &std::path::Path,
    payloads: &[Vec<u8>],
    batch: usize,
    rate: Option<u64>,
) -> Result<Phase> {
    // Fresh topics for every phase of every run, so a shared broker never mixes them.
    static PHASES: AtomicU64 = AtomicU64::new(0);
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let prefix = format!(
        "bench-{started_at}-{}-{}-",
        std::process::id(),
        PHASES.fetch_add(1, Ordering::Relaxed)
    );
    let topics = Topics::with_prefix(&prefix);
    let total = payloads.len();
    let origin = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));

    let mut producer_log = eventlog::open(url, config)?;
    producer_log.create_topic(&topics.commands, 1)?;
    producer_log.create_topic(&topics.events, 1)?;

    let engine = {
        let log = eventlog::open(url, config)?;
        let config = RunnerConfig {
            topics: topics.clone(),
            shard: 0,
            shards: 1,
            snapshot_every: 100_000,
            snapshot_dir: data.join("snapshots"),
            batch: 4_096,
            poll: Duration::from_millis(20),
        };
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || -> Result<()> {
            let mut runner = Runner::open(config, log)?;
            runner.run(&stop)?;
            Ok(())
        })
    };

    let reader = {
        let mut log = eventlog::open(url, config)?;
        let sent = Arc::clone(&sent);
        let events_topic = topics.events.clone();
        std::thread::spawn(move || -> Result<(u64, Vec<u64>, Duration)> {
            let mut latencies = Vec::with_capacity(total);
            let mut next = 0u64;
            let mut answered = 0usize;
            let deadline = Instant::now() + Duration::from_secs(600);
            while answered < total {
                let records =
                    log.read(&events_topic, 0, next, 10_000, Duration::from_millis(50))?;
                let now = origin.elapsed().as_nanos() as u64;
                for record in &records {
                    let event: EventRecord = codec::decode(record.schema, &record.payload)?;
                    let command = event.command_offset as usize;
                    if command >= answered {
                        latencies.push(now.saturating_sub(sent[command].load(Ordering::Acquire)));
                        answered = command + 1;
                    }
                }
                next += records.len() as u64;
                if Instant::now() > deadline {
                    bail!("only {answered} of {total} commands answered in 10 minutes");
                }
            }
            Ok((next, latencies, origin.elapsed()))
        })
    };

    let started = origin.elapsed();
    let mut progress = 0usize;
    for (i, chunk) in payloads.chunks(batch).enumerate() {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64((i * batch) as f64 / rate as f64);
            if let Some(wait) = (started + due).checked_sub(origin.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let at = origin.elapsed().as_nanos() as u64;
        for k in 0..chunk.len() {
            sent[i * batch + k].store(at, Ordering::Release);
        }
        let records: Vec<NewRecord<'_>> = chunk
            .iter()
            .map(|p| NewRecord {
                kind: "command",
                schema: SCHEMA,
                payload: p,
            })
            .collect();
        producer_log.append(&topics.commands, 0, &records)?;
        if (i * batch) * 10 / total > progress {
            progress = (i * batch) * 10 / total;
            eprint!("{}0% ", progress);
        }
    }
    let (events, latencies_ns, finished) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))?
        .context("reading events")?;
    eprintln!("100%");
    stop.store(true, Ordering::Relaxed);
    engine
        .join()
        .map_err(|_| anyhow::anyhow!("the engine panicked"))?
        .context("the engine runner")?;
    Ok(Phase {
        elapsed: finished - started,
        events,
        latencies_ns,
    })
}
