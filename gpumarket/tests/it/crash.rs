//! Kill the engine process with SIGKILL at random points while commands stream in, restart
//! it each time, and check that the event stream is exactly what one uninterrupted engine
//! would have written: no gap, no duplicate, every command answered once, same final state.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use contract::codec::{self, CommandRecord, EventBody, EventRecord, SCHEMA};
use engine_service::testing::{market_day, Rng};
use engine_service::Topics;
use eventlog::{Log, LogConfig, NewRecord};
use matching_engine::Engine;

const COMMAND_COUNT: u64 = 30_000;
const KILLS: usize = 6;

fn spawn_engine(url: &str, prefix: &str, data: &Path) -> Child {
    Process::new(env!("CARGO_BIN_EXE_gpumarket"))
        .args([
            "engine",
            "--log",
            url,
            "--snapshot-every",
            "1000",
            "--batch",
            "256",
        ])
        .args(["--topic-prefix", prefix])
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gpumarket binary starts")
}

pub fn read_all(log: &mut dyn Log, topic: &str, end: u64) -> Vec<eventlog::Record> {
    let mut records = Vec::new();
    while (records.len() as u64) < end {
        let batch = log
            .read(
                topic,
                0,
                records.len() as u64,
                10_000,
                Duration::from_secs(5),
            )
            .unwrap();
        assert!(!batch.is_empty(), "{topic} ends early at {}", records.len());
        records.extend(batch);
    }
    records
}

/// The whole crash test against the log at `url`, keeping snapshots under `data`.
pub fn survive_kills(url: &str, prefix: &str, data: &Path, seed: u64) {
    eprintln!("crash test: log {url}, topics {prefix}*, seed {seed}");
    let topics = Topics::with_prefix(prefix);
    let (commands_topic, events_topic) = (topics.commands.as_str(), topics.events.as_str());
    let mut rng = Rng(seed);
    let all = market_day(&mut rng, COMMAND_COUNT as usize);
    let mut log = eventlog::open(url, &LogConfig::default()).unwrap();
    log.create_topic(commands_topic, 1).unwrap();
    log.create_topic(events_topic, 1).unwrap();

    // Commands stream in from another thread while the engine is killed and restarted.
    let done = Arc::new(AtomicBool::new(false));
    let feeder = {
        let url = url.to_owned();
        let commands_topic = topics.commands.clone();
        let all = all.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut log = eventlog::open(&url, &LogConfig::default()).unwrap();
            for chunk in all.chunks(500) {
                let payloads: Vec<Vec<u8>> = chunk.iter().map(codec::encode).collect();
                let records: Vec<NewRecord<'_>> = payloads
                    .iter()
                    .map(|p| NewRecord {
                        kind: "command",
                        schema: SCHEMA,
                        payload: p,
                    })
                    .collect();
                log.append(&commands_topic, 0, &records).unwrap();
                std::thread::sleep(Duration::from_millis(40));
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    for kill in 0..KILLS {
        let mut engine = spawn_engine(url, prefix, data);
        let alive = 150 + rng.below(600);
        std::thread::sleep(Duration::from_millis(alive));
        engine.kill().unwrap(); // SIGKILL
        engine.wait().unwrap();
        let events = log.end_offset(events_topic, 0).unwrap();
        eprintln!("kill {kill}: SIGKILL after {alive} ms, {events} events in the log");
    }
    feeder.join().unwrap();
    assert!(done.load(Ordering::SeqCst));

    // The last run catches up, then stops cleanly on SIGTERM (once it listens for it).
    let mut engine = spawn_engine(url, prefix, data);
    let stderr = BufReader::new(engine.stderr.take().unwrap());
    let mut lines = stderr.lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("engine restored") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let end = log.end_offset(events_topic, 0).unwrap();
        if end > 0 {
            let last = log
                .read(events_topic, 0, end - 1, 1, Duration::from_secs(5))
                .unwrap();
            let last: EventRecord = codec::decode(last[0].schema, &last[0].payload).unwrap();
            if last.command_offset == COMMAND_COUNT - 1 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the engine did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Process::new("kill")
        .args(["-TERM", &engine.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(engine.wait().unwrap().success(), "SIGTERM is a clean stop");

    // The stream: one record per answer, `seq` = offset, gap-free, commands in order, each
    // answered by one contiguous run.
    let end = log.end_offset(events_topic, 0).unwrap();
    let logged: Vec<EventRecord> = read_all(log.as_mut(), events_topic, end)
        .iter()
        .map(|r| codec::decode(r.schema, &r.payload).unwrap())
        .collect();
    let mut expected_command = 0;
    for (offset, record) in logged.iter().enumerate() {
        assert_eq!(record.seq, offset as u64, "seq has a gap or duplicate");
        if record.command_offset != expected_command {
            assert_eq!(
                record.command_offset,
                expected_command + 1,
                "command {expected_command} answered out of order or twice"
            );
            expected_command += 1;
        }
    }
    assert_eq!(
        expected_command,
        COMMAND_COUNT - 1,
        "every command answered"
    );
    let rejections = logged
        .iter()
        .filter(|r| matches!(r.body, EventBody::Rejected(_)))
        .count();
    eprintln!(
        "{} records for {COMMAND_COUNT} commands, {rejections} rejections",
        logged.len()
    );

    // One engine replaying the whole command log from scratch says exactly the same.
    let stored: Vec<CommandRecord> = read_all(log.as_mut(), commands_topic, COMMAND_COUNT)
        .iter()
        .map(|r| codec::decode(r.schema, &r.payload).unwrap())
        .collect();
    assert_eq!(stored, all, "commands are stored exactly once, in order");
    let mut replay = Engine::new();
    let mut replayed = Vec::new();
    let mut events = Vec::new();
    for (offset, c) in stored.iter().enumerate() {
        events.clear();
        let result = replay.apply(c.at, &c.command, &mut events);
        for body in events
            .drain(..)
            .map(EventBody::Event)
            .chain(result.err().map(EventBody::Rejected))
        {
            replayed.push(EventRecord {
                seq: replayed.len() as u64,
                command_offset: offset as u64,
                at: c.at,
                body,
            });
        }
    }
    assert_eq!(replayed.len(), logged.len());
    assert!(replayed == logged, "the logged events differ from a replay");

    // The engine's state: its newest snapshot (written on SIGTERM) plus the commands after
    // it, exactly what a restart would rebuild, equals the single replay's.
    let dir = data.join("snapshots").join("shard-0");
    let newest = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .max()
        .unwrap();
    let covered: usize = newest.file_name().unwrap().to_str().unwrap()[..20]
        .parse()
        .unwrap();
    let mut live = Engine::restore(&std::fs::read(&newest).unwrap()).unwrap();
    for c in &stored[covered..] {
        let _ = live.apply(c.at, &c.command, &mut events);
    }
    assert_eq!(live.state_hash(), replay.state_hash());
}

pub fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

#[test]
fn the_engine_survives_sigkill_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("log").display());
    survive_kills(&url, "", &dir.path().join("data"), seed());
}

#[test]
fn the_engine_survives_sigkill_on_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let url = eventlog::testing::kafka_url();
    // Fresh topics on a broker that other tests may share.
    let prefix = format!("crash-{}-", std::process::id());
    survive_kills(&url, &prefix, &dir.path().join("data"), seed());
}
