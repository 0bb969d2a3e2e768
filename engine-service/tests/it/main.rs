//! The runner against the embedded log: restarts, damaged snapshots, bad records.

use std::time::Duration;

use contract::codec::{self, CommandRecord, EventBody, EventRecord, SCHEMA};
use contract::{AccountId, Amount, Command, Timestamp};
use engine_service::{shard_of, Runner, RunnerConfig, RunnerError, Topics};
use eventlog::{Log, LogConfig, NewRecord};

mod torn_snapshot;

struct Setup {
    dir: tempfile::TempDir,
    url: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("log").display());
        Setup { dir, url }
    }

    fn log(&self) -> Box<dyn Log> {
        eventlog::open(&self.url, &LogConfig::default()).unwrap()
    }

    fn runner(&self) -> Runner {
        let config = RunnerConfig {
            topics: Topics::with_prefix(""),
            shard: 0,
            shards: 1,
            snapshot_every: 10,
            snapshot_dir: self.dir.path().join("snapshots"),
            batch: 7,
            poll: Duration::from_millis(10),
        };
        Runner::open(config, self.log()).unwrap()
    }

    fn append(&self, log: &mut dyn Log, payloads: &[Vec<u8>], schema: u16) {
        let records: Vec<NewRecord<'_>> = payloads
            .iter()
            .map(|p| NewRecord {
                kind: "command",
                schema,
                payload: p,
            })
            .collect();
        log.append("commands", 0, &records).unwrap();
    }

    fn events(&self) -> Vec<EventRecord> {
        let mut log = self.log();
        let end = log.end_offset("events", 0).unwrap();
        log.read("events", 0, 0, end as usize, Duration::from_secs(1))
            .unwrap()
            .iter()
            .map(|r| codec::decode(r.schema, &r.payload).unwrap())
            .collect()
    }
}

fn deposits(n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            codec::encode(&CommandRecord {
                at: Timestamp(1_000 + i as i64),
                command: Command::Deposit {
                    account: AccountId(1 + i % 3),
                    amount: Amount::parse(if i % 5 == 4 { "-1" } else { "10" }).unwrap(),
                },
            })
        })
        .collect()
}

fn drain(runner: &mut Runner) {
    while runner.step().unwrap() > 0 {}
}

#[test]
fn every_command_is_answered_once_in_order_across_restarts() {
    let s = Setup::new();
    let mut log = s.log();
    let mut runner = s.runner();
    s.append(log.as_mut(), &deposits(25), SCHEMA);
    drain(&mut runner);
    drop(runner);
    // Snapshots land after batches of 7 once 10 commands passed: at 14, then at 25.
    let mut runner = s.runner();
    assert_eq!(runner.next_command(), 25);
    s.append(log.as_mut(), &deposits(5), SCHEMA);
    drain(&mut runner);
    let events = s.events();
    assert_eq!(events.len(), 30);
    for (i, e) in events.iter().enumerate() {
        assert_eq!((e.seq, e.command_offset), (i as u64, i as u64));
        // Every fifth deposit is negative and rejected.
        assert_eq!(matches!(e.body, EventBody::Rejected(_)), i % 5 == 4);
    }
    assert_eq!(
        runner.engine().balance(AccountId(1)).available,
        Amount::parse("90").unwrap()
    );
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_one_before() {
    let s = Setup::new();
    let mut log = s.log();
    let mut runner = s.runner();
    s.append(log.as_mut(), &deposits(30), SCHEMA);
    drain(&mut runner);
    let hash = runner.engine().state_hash();
    drop(runner);
    let mut snaps: Vec<_> = std::fs::read_dir(s.dir.path().join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    snaps.sort();
    let newest = snaps.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(newest, bytes).unwrap();
    let mut runner = s.runner();
    assert!(
        runner.next_command() < 30,
        "restored from the older snapshot"
    );
    drain(&mut runner);
    assert_eq!(runner.engine().state_hash(), hash);
    assert_eq!(s.events().len(), 30, "nothing written twice");
}

#[test]
fn an_unknown_schema_stops_the_runner_before_the_command() {
    let s = Setup::new();
    let mut log = s.log();
    let mut runner = s.runner();
    s.append(log.as_mut(), &deposits(2), SCHEMA);
    s.append(log.as_mut(), &deposits(1), SCHEMA + 1);
    let err = loop {
        match runner.step() {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, RunnerError::BadCommand { offset: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("schema version"), "{err}");
    // The batch with the bad record was not answered at all.
    assert_eq!(s.events().len(), 0);
}

#[test]
fn garbage_is_a_typed_error_not_a_panic() {
    let s = Setup::new();
    let mut log = s.log();
    let mut runner = s.runner();
    s.append(log.as_mut(), &[vec![0xff; 40]], SCHEMA);
    assert!(matches!(
        runner.step(),
        Err(RunnerError::BadCommand { offset: 0, .. })
    ));
}

#[test]
fn markets_map_to_shards_stably() {
    let market = |m| contract::MarketId::parse(m).unwrap();
    assert_eq!(shard_of(market("H100-80GB"), 1), 0);
    // Fixed values: a change here would silently move markets between engines.
    let spread: Vec<u32> = ["H100-80GB", "A100-80GB", "RTX4090-24GB", "MI300X-192GB"]
        .iter()
        .map(|m| shard_of(market(m), 4))
        .collect();
    assert_eq!(spread, vec![0, 3, 0, 0]);
    assert!(spread.iter().all(|s| *s < 4));
}
