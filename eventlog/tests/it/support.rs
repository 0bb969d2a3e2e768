//! What the tests run against: a fresh directory for the file backend, a Kafka-protocol broker
//! for the Kafka backend (`GPUMARKET_KAFKA`, or a `tansu` this process starts).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventlog::{open, Log, LogConfig};
use tempfile::TempDir;

/// Opens handles on one log, and names topics no other test uses.
#[derive(Debug)]
pub struct Backend {
    url: String,
    pub config: LogConfig,
    /// The file backend's directory, removed when the test ends.
    dir: Option<TempDir>,
}

impl Backend {
    pub fn file() -> Backend {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("file://{}", dir.path().display());
        Backend {
            url,
            config: LogConfig::default(),
            dir: Some(dir),
        }
    }

    pub fn kafka() -> Backend {
        let config = LogConfig {
            kafka_timeout: Duration::from_secs(10),
            ..LogConfig::default()
        };
        Backend {
            url: eventlog::testing::kafka_url(),
            config,
            dir: None,
        }
    }

    /// A new handle on the log.
    pub fn open(&self) -> Box<dyn Log> {
        open(&self.url, &self.config).unwrap_or_else(|e| panic!("opening {}: {e}", self.url))
    }

    /// A topic name unique across tests and test runs, so that tests can share a broker.
    pub fn topic(&self, name: &str) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{name}-{}-{nanos}-{n}", std::process::id())
    }

    /// The file backend's directory for one partition.
    pub fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        let dir = self
            .dir
            .as_ref()
            .expect("only the file backend has a directory");
        dir.path().join(topic).join(partition.to_string())
    }
}
