//! Kill the projector process (`gpumarket project`, all three projections on their own
//! threads) with SIGKILL at random points while the engine's events stream in, restart it
//! each time, and check that the ledger is exactly what one uninterrupted projection gives:
//! the engine's balances for every account, balanced transactions, one journal transaction
//! per money-moving event (none lost, none twice), the same checksum of every table as a
//! from-scratch projection into a fresh database, and a reconciliation without breaks.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use contract::codec::{self, CommandRecord, EventBody, EventRecord, SCHEMA};
use contract::AccountId;
use diesel::prelude::*;
use engine_service::{Runner, RunnerConfig, Topics};
use eventlog::{LogConfig, NewRecord};
use ledger::journal::Bucket;
use ledger::testing::TestDb;
use matching_engine::Engine;
use rust_decimal::Decimal;

use crate::crash::{read_all, seed};
use engine_service::testing::{market_day, Rng};

const COMMAND_COUNT: u64 = 30_000;
const KILLS: usize = 6;

fn spawn_projector(url: &str, prefix: &str, database_url: &str, batch: u64) -> Child {
    Process::new(env!("CARGO_BIN_EXE_gpumarket"))
        .args(["project", "--log", url, "--database-url", database_url])
        .args(["--topic-prefix", prefix, "--batch", &batch.to_string()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gpumarket binary starts")
}

/// The whole test against the log at `url`, on topics `{prefix}commands` and `{prefix}events`.
fn projector_survives_kills(url: &str, prefix: &str, seed: u64) {
    eprintln!("projector crash test: log {url}, topics {prefix}*, seed {seed}");
    let topics = Topics::with_prefix(prefix);
    let mut rng = Rng(seed);
    let all = market_day(&mut rng, COMMAND_COUNT as usize);
    let mut log = eventlog::open(url, &LogConfig::default()).unwrap();
    log.create_topic(&topics.commands, 1).unwrap();
    log.create_topic(&topics.events, 1).unwrap();
    let snapshots = tempfile::tempdir().unwrap();

    // The engine answers in this process while commands stream in from another thread, so
    // events keep arriving while the projector is killed and restarted.
    let stop_engine = Arc::new(AtomicBool::new(false));
    let engine = {
        let config = RunnerConfig {
            topics: topics.clone(),
            shard: 0,
            shards: 1,
            snapshot_every: u64::MAX,
            snapshot_dir: snapshots.path().to_owned(),
            batch: 256,
            poll: Duration::from_millis(20),
        };
        let log = eventlog::open(url, &LogConfig::default()).unwrap();
        let stop = Arc::clone(&stop_engine);
        std::thread::spawn(move || {
            let mut runner = Runner::open(config, log).unwrap();
            runner.run(&stop).unwrap();
            runner.next_command()
        })
    };
    let feeder = {
        let (url, topic, all) = (url.to_owned(), topics.commands.clone(), all.clone());
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
                log.append(&topic, 0, &records).unwrap();
                // About four seconds in all: as long as the kills take.
                std::thread::sleep(Duration::from_millis(65));
            }
        })
    };

    let live = TestDb::new("live");
    for kill in 0..KILLS {
        // Batches from one event per transaction to thousands, so kills land in every phase.
        let batch = [1, 64, 500, 4_096][rng.below(4) as usize];
        let mut projector = spawn_projector(url, prefix, live.url(), batch);
        let alive = 150 + rng.below(600);
        std::thread::sleep(Duration::from_millis(alive));
        projector.kill().unwrap(); // SIGKILL
        projector.wait().unwrap();
        let events = log.end_offset(&topics.events, 0).unwrap();
        eprintln!(
            "kill {kill}: SIGKILL after {alive} ms (batch {batch}), projected {:?} of {events} events",
            live.positions()
        );
    }
    feeder.join().unwrap();

    // The engine finishes answering; its events topic is then complete.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let end = log.end_offset(&topics.events, 0).unwrap();
        if end > 0 {
            let last = log
                .read(&topics.events, 0, end - 1, 1, Duration::from_secs(5))
                .unwrap();
            let last: EventRecord = codec::decode(last[0].schema, &last[0].payload).unwrap();
            if last.command_offset == COMMAND_COUNT - 1 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the engine did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_engine.store(true, Ordering::SeqCst);
    assert_eq!(engine.join().unwrap(), COMMAND_COUNT);
    let end = log.end_offset(&topics.events, 0).unwrap();

    // The last run catches up, then stops cleanly on SIGTERM.
    let mut projector = spawn_projector(url, prefix, live.url(), 1_000);
    let mut lines = BufReader::new(projector.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("projector opened") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let deadline = Instant::now() + Duration::from_secs(120);
    let all_at_end =
        BTreeMap::from(["activity", "journal", "reputation"].map(|p| (p.to_owned(), end as i64)));
    while live.positions() != all_at_end {
        assert!(Instant::now() < deadline, "the projector did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Process::new("kill")
        .args(["-TERM", &projector.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        projector.wait().unwrap().success(),
        "SIGTERM is a clean stop"
    );

    // The engine's state, restored by replaying the command log in one fresh engine; its
    // answers must be the logged events.
    let stored: Vec<CommandRecord> = read_all(log.as_mut(), &topics.commands, COMMAND_COUNT)
        .iter()
        .map(|r| codec::decode(r.schema, &r.payload).unwrap())
        .collect();
    assert_eq!(stored, all, "commands are stored exactly once, in order");
    let logged: Vec<EventRecord> = read_all(log.as_mut(), &topics.events, end)
        .iter()
        .map(|r| codec::decode(r.schema, &r.payload).unwrap())
        .collect();
    let mut engine = Engine::new();
    let mut events = Vec::new();
    let mut replayed = 0usize;
    for c in &stored {
        events.clear();
        let result = engine.apply(c.at, &c.command, &mut events);
        for body in events
            .drain(..)
            .map(EventBody::Event)
            .chain(result.err().map(EventBody::Rejected))
        {
            assert_eq!(body, logged[replayed].body, "event {replayed}");
            replayed += 1;
        }
    }
    assert_eq!(replayed, logged.len());

    // Balances: the engine's, account by account; nobody else has one.
    let balances: BTreeMap<(i64, String), Decimal> = {
        use ledger::schema::balances::dsl::*;
        balances
            .select((account, bucket, amount))
            .load::<(i64, String, Decimal)>(&mut live.connect())
            .unwrap()
            .into_iter()
            .map(|(a, b, m)| ((a, b), m))
            .collect()
    };
    let accounts: Vec<u64> = std::iter::once(0).chain(1..=20).chain(101..=110).collect();
    let get = |account: u64, bucket: Bucket| {
        balances
            .get(&(account as i64, bucket.as_str().to_owned()))
            .copied()
            .unwrap_or_default()
    };
    for &account in &accounts {
        let balance = engine.balance(AccountId(account));
        let spendable = if account == 0 {
            Bucket::Fees
        } else {
            Bucket::Available
        };
        assert_eq!(
            (
                get(account, spendable),
                get(account, Bucket::Held),
                get(account, Bucket::InLease)
            ),
            (
                Decimal::new(balance.available.micros(), 6),
                Decimal::new(balance.held.micros(), 6),
                Decimal::new(balance.in_lease.micros(), 6)
            ),
            "account {account}"
        );
    }
    assert!(balances
        .keys()
        .all(|(account, _)| accounts.contains(&(*account as u64))));
    assert_eq!(balances.values().sum::<Decimal>(), Decimal::ZERO);

    // Every journal transaction sums to zero over at least two legs.
    assert_eq!(
        live.count(
            "SELECT count(*) AS n FROM (SELECT 1 FROM postings GROUP BY partition, event_seq \
             HAVING sum(amount) <> 0 OR count(*) < 2) t"
        ),
        0
    );

    // Exactly one journal transaction per money-moving event, with exactly its legs.
    let (mut moving, mut legs) = (Vec::new(), 0);
    for record in &logged {
        if let EventBody::Event(event) = &record.body {
            let postings = ledger::journal::postings(event).unwrap();
            if !postings.is_empty() {
                moving.push(record.seq as i64);
                legs += postings.len() as i64;
            }
        }
    }
    let journaled: Vec<i64> = {
        use ledger::schema::journal_transactions::dsl::*;
        journal_transactions
            .select(event_seq)
            .order(event_seq)
            .load(&mut live.connect())
            .unwrap()
    };
    assert_eq!(journaled.len(), moving.len(), "journal transactions");
    assert!(
        journaled == moving,
        "the journaled events are the moving ones"
    );
    assert_eq!(live.count("SELECT count(*) AS n FROM postings"), legs);
    eprintln!(
        "{} events, {} journal transactions, {legs} postings",
        logged.len(),
        moving.len()
    );

    // A projection from scratch into a second database gives identical tables.
    let rebuilt = TestDb::migrated("rebuilt");
    assert_eq!(rebuilt.project_all(url, &topics.events, 100_000), end);
    assert_eq!(live.checksums(), rebuilt.checksums());

    // The finance reconciliation over the whole stream finds no break.
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = Process::new(env!("CARGO_BIN_EXE_gpumarket"))
        .args(["export", "reconciliation", "--database-url", live.url()])
        .args(["--from", "2025-12-31", "--to", "2026-01-02", "--out"])
        .arg(out.path())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the reconciliation found breaks");
    let report = std::fs::read_to_string(out.path()).unwrap();
    assert!(
        report.lines().count() > 10 && !report.contains("break"),
        "{report}"
    );
}

#[test]
fn the_projector_survives_sigkill_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("log").display());
    projector_survives_kills(&url, "", seed());
}

#[test]
fn the_projector_survives_sigkill_on_kafka() {
    // Fresh topics on a broker that other tests may share.
    let prefix = format!("projector-crash-{}-", std::process::id());
    projector_survives_kills(&eventlog::testing::kafka_url(), &prefix, seed());
}
