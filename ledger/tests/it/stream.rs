//! A realistic event stream: generated commands appended to a log and answered by the real
//! engine service, in process.

use std::time::Duration;

use contract::codec::{self, CommandRecord, EventRecord, SCHEMA};
use contract::AccountId;
use engine_service::testing::{market_day, Rng, BUYERS, PROVIDERS};
use engine_service::{Runner, RunnerConfig, Topics};
use eventlog::{LogConfig, NewRecord};
use matching_engine::{Balance, Engine};

/// The engine's answers to a generated day of commands, in a log.
pub struct EngineRun {
    _dir: tempfile::TempDir,
    pub log_url: String,
    pub events_topic: String,
    /// Every account the commands name, the market's included.
    pub accounts: Vec<u64>,
    runner: Runner,
}

impl EngineRun {
    /// On the embedded log, in a temporary directory.
    pub fn file(seed: u64, commands: usize) -> EngineRun {
        EngineRun::file_of(market_day(&mut Rng(seed), commands))
    }

    /// These commands, on the embedded log.
    pub fn file_of(commands: Vec<CommandRecord>) -> EngineRun {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("log").display());
        EngineRun::run(dir, url, String::new(), commands)
    }

    /// On the test Kafka broker, under topics of its own.
    pub fn kafka(seed: u64, commands: usize) -> EngineRun {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let prefix = format!("ledger-{}-{nanos}-", std::process::id());
        EngineRun::run(
            tempfile::tempdir().unwrap(),
            eventlog::testing::kafka_url(),
            prefix,
            market_day(&mut Rng(seed), commands),
        )
    }

    fn run(
        dir: tempfile::TempDir,
        log_url: String,
        prefix: String,
        commands: Vec<CommandRecord>,
    ) -> EngineRun {
        let count = commands.len();
        let topics = Topics::with_prefix(&prefix);
        let mut log = eventlog::open(&log_url, &LogConfig::default()).unwrap();
        log.create_topic(&topics.commands, 1).unwrap();
        let payloads: Vec<Vec<u8>> = commands.iter().map(codec::encode).collect();
        for chunk in payloads.chunks(5_000) {
            let records: Vec<NewRecord<'_>> = chunk
                .iter()
                .map(|payload| NewRecord {
                    kind: "command",
                    schema: SCHEMA,
                    payload,
                })
                .collect();
            log.append(&topics.commands, 0, &records).unwrap();
        }
        log.flush().unwrap();
        let config = RunnerConfig {
            topics: topics.clone(),
            shard: 0,
            shards: 1,
            snapshot_every: u64::MAX,
            snapshot_dir: dir.path().join("snapshots"),
            batch: 2_048,
            poll: Duration::from_millis(50),
        };
        let mut runner = Runner::open(
            config,
            eventlog::open(&log_url, &LogConfig::default()).unwrap(),
        )
        .unwrap();
        while runner.next_command() < count as u64 {
            runner.step().unwrap();
        }
        let accounts = std::iter::once(0)
            .chain(1..=BUYERS)
            .chain(PROVIDERS)
            .collect();
        EngineRun {
            _dir: dir,
            log_url,
            events_topic: topics.events,
            accounts,
            runner,
        }
    }

    pub fn engine_balance(&self, account: AccountId) -> Balance {
        self.runner.engine().balance(account)
    }

    /// The engine after the last command.
    pub fn engine(&self) -> &Engine {
        self.runner.engine()
    }

    pub fn events_end(&self) -> u64 {
        eventlog::open(&self.log_url, &LogConfig::default())
            .unwrap()
            .end_offset(&self.events_topic, 0)
            .unwrap()
    }

    /// Every event record, in order.
    pub fn events(&self) -> Vec<EventRecord> {
        let mut log = eventlog::open(&self.log_url, &LogConfig::default()).unwrap();
        let end = self.events_end();
        let mut events = Vec::new();
        while (events.len() as u64) < end {
            let batch = log
                .read(
                    &self.events_topic,
                    0,
                    events.len() as u64,
                    10_000,
                    Duration::from_secs(5),
                )
                .unwrap();
            assert!(
                !batch.is_empty(),
                "the events topic ends early at {}",
                events.len()
            );
            events.extend(
                batch
                    .iter()
                    .map(|r| codec::decode::<EventRecord>(r.schema, &r.payload).unwrap()),
            );
        }
        events
    }
}
