//! The market's source of truth: an append-only log of topics split into partitions, each
//! partition a sequence of records with contiguous offsets from 0.
//!
//! Two backends sit behind the one [`Log`] trait and pass the same test suite:
//!
//! - `file://` keeps each partition as segment files in a directory on one machine. One process
//!   writes a partition (an exclusive lock enforces it); any number of processes read it and
//!   follow it as it grows.
//! - `kafka://` speaks to a Kafka-protocol cluster through librdkafka with an idempotent producer
//!   (`acks=all`) and a consumer that manages offsets itself (no consumer-group commits). It
//!   also works with brokers that store produced batches whole, such as tansu with `memory://`
//!   storage.
//!
//! The interface is synchronous because its main user, the engine runner, is a single-threaded
//! loop: read a batch of commands, apply them, append the events.

mod file;
mod kafka;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A record to append. `kind` names what the payload is (for example `"order_accepted"`) and
/// `schema` is the version of the payload's encoding; the log stores both beside the payload
/// (Kafka headers `type` and `schema`) so that a reader can route and decode without parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRecord<'a> {
    pub kind: &'a str,
    pub schema: u16,
    pub payload: &'a [u8],
}

/// A record read back, at its offset in the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub kind: String,
    pub schema: u16,
    pub payload: Vec<u8>,
}

/// An append-only partitioned log. Every method works on one partition of one topic.
pub trait Log: Send + fmt::Debug {
    /// Creates the topic with `partitions` partitions if it does not exist yet. Calling it again
    /// for an existing topic succeeds and changes nothing (the partition count is not checked).
    fn create_topic(&mut self, topic: &str, partitions: u32) -> Result<(), LogError>;

    /// Appends `records` in order to one partition and returns the offset of the first one,
    /// once the batch is durable per the backend's policy (file: written, then synced per
    /// [`FsyncPolicy`]; Kafka: acknowledged by all in-sync replicas). Offsets within a partition
    /// are contiguous from 0. An empty batch appends nothing and returns the end offset.
    ///
    /// The file backend appends a batch atomically: readers see all of it or none of it, even
    /// when a crash interrupts the write. On Kafka a batch larger than one produce request
    /// (about 1 MB or 10,000 records) is not atomic, so after an error a prefix of it may be in
    /// the log: read [`Log::end_offset`] before retrying.
    fn append(
        &mut self,
        topic: &str,
        partition: u32,
        records: &[NewRecord<'_>],
    ) -> Result<u64, LogError>;

    /// Reads up to `max` records starting at offset `from`. When none is available yet it waits
    /// up to `wait` for at least one, and returns an empty `Vec` if none came. `from` may be the
    /// end offset (to wait for the next record) but not beyond it, nor below the earliest
    /// retained offset: both are [`LogError::OffsetOutOfRange`].
    fn read(
        &mut self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError>;

    /// The offset the next appended record will get (the high watermark).
    fn end_offset(&mut self, topic: &str, partition: u32) -> Result<u64, LogError>;

    /// Makes every record appended through this handle durable now, whatever the fsync policy,
    /// for a clean shutdown. Kafka appends are acknowledged already, so there it does nothing.
    fn flush(&mut self) -> Result<(), LogError>;
}

/// When the file backend forces appended data to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `append` returns after the batch is written and `fdatasync`ed (and a new segment's
    /// directory entry synced). An acknowledged record survives a power loss.
    Always,
    /// `append` returns once the batch is in the page cache; a background thread syncs written
    /// data every this many milliseconds. A process crash loses nothing acknowledged; a power
    /// loss loses at most the records appended in the last interval (plus a sync's duration).
    EveryMillis(u64),
    /// The operating system writes back when it likes. A process crash loses nothing
    /// acknowledged; a power loss can lose or tear any recent data, which recovery then drops
    /// as a torn last batch or, when it is older, reports as corruption.
    Never,
}

/// Settings for [`open`]. Fields a backend does not use are ignored by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// File backend: durability of appends.
    pub fsync: FsyncPolicy,
    /// File backend: a batch that would grow the active segment past this many bytes starts a
    /// new segment (a larger batch gets a segment of its own). Recovery verifies the active
    /// segment on open, so this also bounds the work of opening a partition for writing.
    pub segment_bytes: u64,
    /// File backend: the oldest whole segments are deleted as long as the partition still keeps
    /// at least this many bytes without them (the active segment never is). `None` keeps all.
    pub retention_bytes: Option<u64>,
    /// Kafka backend: the `client.id` the broker sees.
    pub kafka_client_id: String,
    /// Kafka backend: the longest one operation may take (delivery of an appended batch,
    /// metadata, topic creation, offset queries) before it fails.
    pub kafka_timeout: Duration,
    /// Kafka backend: the longest the broker may hold a fetch that has no new data
    /// (`fetch.wait.max.ms`). Shorter means lower latency and more idle fetches.
    pub kafka_fetch_wait: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            fsync: FsyncPolicy::EveryMillis(5),
            segment_bytes: 64 << 20,
            retention_bytes: None,
            kafka_client_id: "gpumarket".to_owned(),
            kafka_timeout: Duration::from_secs(30),
            kafka_fetch_wait: Duration::from_millis(5),
        }
    }
}

/// Everything that can go wrong with the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("bad log URL {url:?}: {reason} (expected file:///abs/path, file://./rel/path or kafka://host:port[,host:port])")]
    BadUrl { url: String, reason: &'static str },
    #[error("invalid topic name {0:?}: a topic name has 1 to 249 characters from [A-Za-z0-9._-] and is not \".\" or \"..\"")]
    InvalidTopic(String),
    #[error("a topic needs at least one partition")]
    NoPartitions,
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    /// `read` below the earliest retained offset (retention deleted it) or beyond the end.
    #[error("offset {offset} is outside {topic}/{partition}, whose readable offsets are {earliest}..={end}")]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        earliest: u64,
        end: u64,
    },
    /// A record that cannot be read as written. Records before it stay readable; recovery
    /// refuses to cut it off, since acknowledged records follow it.
    #[error("corrupt record at {topic}/{partition} offset {offset}: {reason}")]
    Corrupt {
        topic: String,
        partition: u32,
        offset: u64,
        reason: String,
    },
    /// The file backend's partition lock is held by another handle or process, or a Kafka
    /// append found records of another producer inside its batch.
    #[error("{topic}/{partition} has another writer: {detail}")]
    WriterConflict {
        topic: String,
        partition: u32,
        detail: String,
    },
    #[error("record {index} of the batch is too large: {reason}")]
    RecordTooLarge { index: usize, reason: String },
    #[error("the batch takes {bytes} bytes in a segment, at most {limit} fit: split it")]
    BatchTooLarge { bytes: u64, limit: u64 },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// After a failed fsync the kernel may have dropped the unsynced data, and a later fsync can
    /// succeed without it: the handle accepts no more appends.
    #[error("fsync failed ({0}): records appended through this handle may be lost, so it accepts no more appends; reopen the log")]
    SyncFailed(String),
    #[error("Kafka: {context}: {source}")]
    Kafka {
        context: String,
        source: rdkafka::error::KafkaError,
    },
}

/// Opens a log. `url` is `file:///abs/path` or `file://./rel/path` (the directory is created if
/// missing) or `kafka://host:port[,host:port…]` (the bootstrap brokers).
pub fn open(url: &str, config: &LogConfig) -> Result<Box<dyn Log>, LogError> {
    let bad = |reason| LogError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    if let Some(path) = url.strip_prefix("file://") {
        if !(path.starts_with('/') || path.starts_with("./") || path.starts_with("../")) {
            return Err(bad("a file path must be absolute or start with ./ or ../"));
        }
        Ok(Box::new(file::FileLog::open(
            PathBuf::from(path),
            config.clone(),
        )?))
    } else if let Some(brokers) = url.strip_prefix("kafka://") {
        let valid = brokers.split(',').all(|broker| {
            broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        });
        if !valid {
            return Err(bad("every broker must be host:port"));
        }
        Ok(Box::new(kafka::KafkaLog::connect(brokers, config)?))
    } else {
        Err(bad("unknown scheme"))
    }
}

/// Kafka's rule for topic names, applied to both backends so a topic can move between them (and
/// so that a file-backend topic name is always one safe directory name).
fn check_topic(topic: &str) -> Result<(), LogError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty()
        || topic.len() > 249
        || topic == "."
        || topic == ".."
        || !topic.chars().all(legal)
    {
        return Err(LogError::InvalidTopic(topic.to_owned()));
    }
    Ok(())
}
