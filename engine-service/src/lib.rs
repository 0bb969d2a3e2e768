//! The engine as a service: one runner per shard consumes the shard's command partition in
//! order, applies the pure engine, and appends the answers to the shard's event partition.
//!
//! Exactly once, across crashes, without coordination:
//! - The event partition has one writer (this runner) and one record per event or
//!   rejection, so a record's offset is its `seq`, and the log's end offset says how many
//!   answers are already written.
//! - A snapshot records the next command offset and the next `seq` it covers. It is encoded
//!   after the events it covers are appended and written atomically (temporary file, fsync,
//!   rename) on a thread of its own; a restart uses it only if those events are in the log.
//! - A restart loads the newest valid snapshot whose events are all in the log, replays the
//!   commands after it, and for every answer whose `seq` is below the log's end offset checks
//!   that the log already holds exactly that record instead of writing it again. Only then
//!   does it write. The engine is deterministic, so the replay reproduces the same answers;
//!   a difference is reported as divergence and the runner stops.

pub mod client;
#[cfg(feature = "testing")]
pub mod testing;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use contract::codec::{self, CommandRecord, DecodeError, EventBody, EventRecord, SCHEMA};
use eventlog::{Log, LogError, NewRecord};
use matching_engine::Engine;
use tracing::{debug, error, info, warn};

/// The topics of one market: commands and events, one partition per shard each. A prefix
/// lets several markets (or test runs) share a Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub commands: String,
    pub events: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Topics {
        Topics {
            commands: format!("{prefix}commands"),
            events: format!("{prefix}events"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error("command at offset {offset} cannot be decoded: {source}")]
    BadCommand { offset: u64, source: DecodeError },
    #[error("event at offset {offset} cannot be decoded: {source}")]
    BadEvent { offset: u64, source: DecodeError },
    #[error(
        "replay diverged at event {seq}: the log holds {logged:?} but the engine now answers {replayed:?}"
    )]
    Diverged {
        seq: u64,
        logged: Box<EventRecord>,
        replayed: Box<EventRecord>,
    },
    #[error("the event log ends at {end} but holds no record there")]
    MissingEvent { end: u64 },
    #[error("events were appended at {got}, not {expected}: the partition has another writer")]
    OtherWriter { expected: u64, got: u64 },
    #[error("snapshot {path}: {source}")]
    Snapshot {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The shard (partition) that owns `market` among `shards`: a stable hash of the market's
/// name, so every producer routes a market's commands to the same engine without asking it.
/// Changing the number of shards moves markets; that is a migration, not a restart.
pub fn shard_of(market: contract::MarketId, shards: u32) -> u32 {
    // FNV-1a over the name: stable across builds and platforms, unlike std's hasher.
    let hash = market
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (hash % u64::from(shards.max(1))) as u32
}

/// Applies one command to `engine` and appends its answer to `out`: one record per event,
/// then the rejection if there is one, numbered from `first_seq`; returns the next `seq`.
/// The runner writes these records and the API's replica checks them against the log, so
/// both turn a command into its answer with this one function. `events` is scratch space,
/// reused across calls.
pub fn answer(
    engine: &mut Engine,
    command_offset: u64,
    first_seq: u64,
    command: &CommandRecord,
    events: &mut Vec<contract::Event>,
    out: &mut Vec<EventRecord>,
) -> u64 {
    events.clear();
    let result = engine.apply(command.at, &command.command, events);
    let bodies = events
        .drain(..)
        .map(EventBody::Event)
        .chain(result.err().map(EventBody::Rejected));
    let mut seq = first_seq;
    for body in bodies {
        out.push(EventRecord {
            seq,
            command_offset,
            at: command.at,
            body,
        });
        seq += 1;
    }
    seq
}

/// How a runner runs.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub topics: Topics,
    pub shard: u32,
    /// Partitions of each topic (created when missing); `shard` must be below it.
    pub shards: u32,
    /// Write a snapshot after this many commands.
    pub snapshot_every: u64,
    pub snapshot_dir: PathBuf,
    /// The most commands read and answered in one batch.
    pub batch: usize,
    /// How long one read waits for new commands before checking for shutdown.
    pub poll: Duration,
}

/// A snapshot file's header, then the engine's own snapshot bytes.
struct SnapshotPoint {
    next_command: u64,
    next_seq: u64,
}

/// One shard's engine with its position in the log.
pub struct Runner {
    config: RunnerConfig,
    log: Box<dyn Log>,
    engine: Engine,
    next_command: u64,
    next_seq: u64,
    /// Answers below this `seq` are already in the log (found at start-up).
    written_end: u64,
    commands_since_snapshot: u64,
    /// The snapshot being written in the background, if any.
    writing: Option<JoinHandle<Result<(), RunnerError>>>,
}

/// A dropped runner's last snapshot is on disk: the drop waits for a write in flight.
impl Drop for Runner {
    fn drop(&mut self) {
        if let Err(e) = self.finish_snapshot() {
            warn!(error = %e, "the last snapshot was not written");
        }
    }
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("shard", &self.config.shard)
            .field("next_command", &self.next_command)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

fn snapshot_name(point: &SnapshotPoint) -> String {
    format!("{:020}-{:020}.snap", point.next_command, point.next_seq)
}

fn parse_snapshot_name(name: &str) -> Option<SnapshotPoint> {
    let stem = name.strip_suffix(".snap")?;
    let (command, seq) = stem.split_once('-')?;
    Some(SnapshotPoint {
        next_command: command.parse().ok()?,
        next_seq: seq.parse().ok()?,
    })
}

/// The snapshot files in `dir` (an unreadable directory has none; `.tmp` files are not
/// snapshots).
fn snapshots_in(dir: &Path) -> impl Iterator<Item = (SnapshotPoint, PathBuf)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((parse_snapshot_name(e.file_name().to_str()?)?, e.path())))
}

/// Keeps the two newest snapshots: the newest, and one to fall back on if it is damaged.
fn prune_snapshots(dir: &Path, newest: &SnapshotPoint) {
    let mut older: Vec<(u64, PathBuf)> = snapshots_in(dir)
        .filter(|(p, _)| p.next_command < newest.next_command)
        .map(|(p, path)| (p.next_command, path))
        .collect();
    older.sort_by_key(|(c, _)| std::cmp::Reverse(*c));
    for (_, path) in older.into_iter().skip(1) {
        if let Err(e) = fs::remove_file(&path) {
            warn!(path = %path.display(), error = %e, "could not remove an old snapshot");
        }
    }
}

impl Runner {
    /// Opens the shard: creates topics if missing, restores the newest usable snapshot and
    /// finds out how far the event log already got.
    pub fn open(config: RunnerConfig, mut log: Box<dyn Log>) -> Result<Runner, RunnerError> {
        log.create_topic(&config.topics.commands, config.shards)?;
        log.create_topic(&config.topics.events, config.shards)?;
        let written_end = log.end_offset(&config.topics.events, config.shard)?;
        let dir = config.snapshot_dir.clone();
        fs::create_dir_all(&dir).map_err(|source| RunnerError::Snapshot {
            path: dir.clone(),
            source,
        })?;
        let (engine, point) = Self::restore_newest(&dir, written_end);
        info!(
            shard = config.shard,
            next_command = point.next_command,
            next_seq = point.next_seq,
            events_in_log = written_end,
            "engine restored"
        );
        Ok(Runner {
            config,
            log,
            engine,
            next_command: point.next_command,
            next_seq: point.next_seq,
            written_end,
            commands_since_snapshot: 0,
            writing: None,
        })
    }

    /// The newest snapshot that restores cleanly and whose events are all in the log; a
    /// fresh engine when there is none.
    fn restore_newest(dir: &Path, written_end: u64) -> (Engine, SnapshotPoint) {
        let mut found: Vec<(SnapshotPoint, PathBuf)> = snapshots_in(dir)
            .filter(|(p, _)| p.next_seq <= written_end)
            .collect();
        found.sort_by_key(|(p, _)| std::cmp::Reverse(p.next_command));
        for (point, path) in found {
            let restored = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| Engine::restore(&bytes).map_err(|e| e.to_string()));
            match restored {
                Ok(engine) => return (engine, point),
                Err(e) => warn!(path = %path.display(), error = %e, "skipping unusable snapshot"),
            }
        }
        (
            Engine::new(),
            SnapshotPoint {
                next_command: 0,
                next_seq: 0,
            },
        )
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The offset of the next command this runner will apply.
    pub fn next_command(&self) -> u64 {
        self.next_command
    }

    /// Reads, applies and answers one batch of commands; returns how many it applied.
    pub fn step(&mut self) -> Result<usize, RunnerError> {
        let shard = self.config.shard;
        let commands = self.log.read(
            &self.config.topics.commands,
            shard,
            self.next_command,
            self.config.batch,
            self.config.poll,
        )?;
        if commands.is_empty() {
            return Ok(0);
        }
        let mut answers: Vec<EventRecord> = Vec::with_capacity(commands.len() * 2);
        let mut events = Vec::new();
        for record in &commands {
            let command: CommandRecord =
                codec::decode(record.schema, &record.payload).map_err(|source| {
                    RunnerError::BadCommand {
                        offset: record.offset,
                        source,
                    }
                })?;
            self.next_seq = answer(
                &mut self.engine,
                record.offset,
                self.next_seq,
                &command,
                &mut events,
                &mut answers,
            );
        }
        self.write(answers)?;
        self.next_command += commands.len() as u64;
        self.commands_since_snapshot += commands.len() as u64;
        if self.commands_since_snapshot >= self.config.snapshot_every {
            self.start_snapshot()?;
        }
        Ok(commands.len())
    }

    /// Appends the answers the log does not hold yet, after checking the ones it does.
    fn write(&mut self, answers: Vec<EventRecord>) -> Result<(), RunnerError> {
        let shard = self.config.shard;
        let already = answers
            .iter()
            .take_while(|a| a.seq < self.written_end)
            .count();
        if already > 0 {
            let first = answers[0].seq;
            let mut logged = Vec::with_capacity(already);
            while logged.len() < already {
                let from = first + logged.len() as u64;
                let batch = self.log.read(
                    &self.config.topics.events,
                    shard,
                    from,
                    already - logged.len(),
                    Duration::from_secs(5),
                )?;
                if batch.is_empty() {
                    return Err(RunnerError::MissingEvent { end: from });
                }
                logged.extend(batch);
            }
            for (answer, record) in answers.iter().zip(&logged) {
                let decoded: EventRecord =
                    codec::decode(record.schema, &record.payload).map_err(|source| {
                        RunnerError::BadEvent {
                            offset: record.offset,
                            source,
                        }
                    })?;
                if &decoded != answer || record.offset != answer.seq {
                    error!(seq = answer.seq, "replay diverged from the event log");
                    return Err(RunnerError::Diverged {
                        seq: answer.seq,
                        logged: Box::new(decoded),
                        replayed: Box::new(answer.clone()),
                    });
                }
            }
            debug!(
                shard,
                count = already,
                "answers already in the log, not written again"
            );
        }
        let fresh = &answers[already..];
        if fresh.is_empty() {
            return Ok(());
        }
        let payloads: Vec<Vec<u8>> = fresh.iter().map(codec::encode).collect();
        let records: Vec<NewRecord<'_>> = fresh
            .iter()
            .zip(&payloads)
            .map(|(a, p)| NewRecord {
                kind: a.body.kind(),
                schema: SCHEMA,
                payload: p,
            })
            .collect();
        let first = self
            .log
            .append(&self.config.topics.events, shard, &records)?;
        if first != fresh[0].seq {
            // Another writer appended to this shard's events: nothing can be trusted.
            error!(
                shard,
                expected = fresh[0].seq,
                got = first,
                "event partition has another writer"
            );
            return Err(RunnerError::OtherWriter {
                expected: fresh[0].seq,
                got: first,
            });
        }
        self.written_end = self.written_end.max(first + fresh.len() as u64);
        Ok(())
    }

    /// Writes a snapshot of everything applied so far and waits until it is durable.
    pub fn snapshot(&mut self) -> Result<(), RunnerError> {
        self.start_snapshot()?;
        self.finish_snapshot()
    }

    /// Encodes the engine's state here, and writes and syncs the file on a thread of its own:
    /// a snapshot grows with the open orders and leases (tens of megabytes under load), and
    /// its `fsync` competes with Postgres for the disk, so doing it inline stalled every
    /// order behind it. The previous write must finish first, so at most one is in flight.
    /// A crash mid-write leaves a `.tmp` file that restore ignores.
    fn start_snapshot(&mut self) -> Result<(), RunnerError> {
        self.finish_snapshot()?;
        let point = SnapshotPoint {
            next_command: self.next_command,
            next_seq: self.next_seq,
        };
        let encoding = Instant::now();
        let bytes = self.engine.snapshot();
        let encode_ms = encoding.elapsed().as_millis() as u64;
        self.commands_since_snapshot = 0;
        let (dir, shard) = (self.config.snapshot_dir.clone(), self.config.shard);
        let path = dir.join(snapshot_name(&point));
        let writer = std::thread::Builder::new()
            .name("engine-snapshot".to_owned())
            .spawn(move || {
                let writing = Instant::now();
                let tmp = path.with_extension("snap.tmp");
                let written = (|| {
                    let mut file = fs::File::create(&tmp)?;
                    file.write_all(&bytes)?;
                    file.sync_all()?;
                    fs::rename(&tmp, &path)?;
                    fs::File::open(&dir)?.sync_all()
                })();
                written.map_err(|source| RunnerError::Snapshot {
                    path: path.clone(),
                    source,
                })?;
                prune_snapshots(&dir, &point);
                info!(
                    shard,
                    next_command = point.next_command,
                    bytes = bytes.len(),
                    encode_ms,
                    write_ms = writing.elapsed().as_millis() as u64,
                    "snapshot written"
                );
                Ok(())
            })
            .map_err(|source| RunnerError::Snapshot {
                path: self.config.snapshot_dir.clone(),
                source,
            })?;
        self.writing = Some(writer);
        Ok(())
    }

    /// Waits for the snapshot in flight, if any.
    fn finish_snapshot(&mut self) -> Result<(), RunnerError> {
        match self.writing.take() {
            Some(writer) => writer.join().expect("the snapshot writer panicked"),
            None => Ok(()),
        }
    }

    /// Runs until `stop` is set, then writes a final snapshot.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), RunnerError> {
        while !stop.load(Ordering::Relaxed) {
            self.step()?;
        }
        self.log.flush()?;
        self.snapshot()?;
        info!(
            shard = self.config.shard,
            next_command = self.next_command,
            "engine stopped"
        );
        Ok(())
    }
}
