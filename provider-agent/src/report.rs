//! Reports as the API takes them (`submitNodeReport`): JSON signed as bytes, numbered, and
//! kept in an on-disk outbox until the API has acknowledged them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use contract::{GpuSample, NodeReport};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::client::{Client, ClientError};
use crate::gpu::{GpuIdentity, GpuReading, SourceKind};
use crate::keys::hex;

/// Why the outbox or a counter could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A queued report does not parse.
    #[error(transparent)]
    Report(#[from] serde_json::Error),
    #[error("the sequence file is damaged")]
    DamagedSequence(#[source] std::num::ParseIntError),
}

/// A report ready to send: the exact signed text and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    pub sequence: u64,
    pub report: String,
    pub signature: String,
    /// Whether it carries lease starts, which must never be dropped.
    pub starts: bool,
}

/// Builds and signs the report of one sample.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    key: &SigningKey,
    node: &str,
    class: &str,
    sequence: u64,
    at: DateTime<Utc>,
    source: SourceKind,
    gpus: &[GpuIdentity],
    readings: &[GpuReading],
    leases_started: &[u64],
) -> SignedReport {
    let samples = readings
        .iter()
        .map(|r| {
            let identity = gpus.iter().find(|g| g.index == r.index);
            GpuSample {
                index: r.index,
                name: identity.map_or("unknown", |g| g.name.as_str()).to_owned(),
                uuid: identity.map_or("unknown", |g| g.uuid.as_str()).to_owned(),
                utilisation_pct: r.utilisation_pct,
                memory_used_mb: r.memory_used_mb,
                memory_total_mb: r.memory_total_mb,
                temperature_c: r.temperature_c,
                power_w: r.power_w,
                power_limit_w: r.power_limit_w,
                sm_clock_mhz: r.sm_clock_mhz,
                ecc_errors: r.ecc_errors,
            }
        })
        .collect();
    let report = serde_json::to_string(&NodeReport {
        node: node.to_owned(),
        sequence,
        at,
        class: class.to_owned(),
        simulated: source == SourceKind::Simulated,
        gpus: samples,
        leases_started: leases_started.to_vec(),
    })
    .expect("strings, numbers and lists always serialize");
    let signature = hex(&key.sign(report.as_bytes()).to_bytes());
    SignedReport {
        sequence,
        report,
        signature,
        starts: !leases_started.is_empty(),
    }
}

/// Signed reports waiting for the API, one file each, sent in sequence order. At most
/// `capacity` are kept: past that the oldest telemetry-only reports go (with a warning);
/// reports with lease starts are never dropped.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    rejected: PathBuf,
    capacity: usize,
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    pub duplicates: usize,
    pub rejected: usize,
    /// Reports still waiting (the API is unreachable).
    pub waiting: usize,
}

impl Outbox {
    pub fn open(state_dir: &Path, capacity: usize) -> Result<Outbox, StoreError> {
        let dir = state_dir.join("outbox");
        let rejected = state_dir.join("rejected");
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(&rejected)?;
        Ok(Outbox {
            dir,
            rejected,
            capacity: capacity.max(1),
        })
    }

    fn files(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        // Names are zero-padded sequence numbers: name order is sequence order.
        files.sort();
        Ok(files)
    }

    pub fn len(&self) -> Result<usize, StoreError> {
        Ok(self.files()?.len())
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Puts a report in the outbox, durably (temporary file, fsync, rename).
    pub fn push(&self, report: &SignedReport) -> Result<(), StoreError> {
        let name = format!("{:020}.json", report.sequence);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(serde_json::to_string(report)?.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(name))?;
        let files = self.files()?;
        let mut over = files.len().saturating_sub(self.capacity);
        for path in files {
            if over == 0 {
                break;
            }
            let queued: SignedReport = serde_json::from_str(&fs::read_to_string(&path)?)?;
            if !queued.starts {
                warn!(
                    sequence = queued.sequence,
                    "outbox full: dropping the oldest telemetry report"
                );
                fs::remove_file(&path)?;
                over -= 1;
            }
        }
        Ok(())
    }

    /// Sends what is waiting, oldest first, until the outbox is empty or the API is away.
    pub fn flush(&self, client: &Client) -> Result<Flushed, StoreError> {
        let mut done = Flushed::default();
        let files = self.files()?;
        for (i, path) in files.iter().enumerate() {
            let text = fs::read_to_string(path).map_err(|source| StoreError::Read {
                path: path.clone(),
                source,
            })?;
            let queued: SignedReport = serde_json::from_str(&text)?;
            match client.submit_report(&queued.report, &queued.signature) {
                Ok(receipt) => {
                    if receipt.duplicate {
                        done.duplicates += 1;
                    } else {
                        done.sent += 1;
                    }
                    for (lease, code) in receipt.refused_starts {
                        warn!(lease, code, "the engine refused a lease start");
                    }
                    fs::remove_file(path)?;
                }
                Err(ClientError::Unreachable { message, .. }) => {
                    done.waiting = files.len() - i;
                    info!(
                        waiting = done.waiting,
                        reason = message,
                        "API unreachable: reports stay in the outbox"
                    );
                    return Ok(done);
                }
                Err(refused) => {
                    // The API will never take it: set it aside instead of retrying forever.
                    warn!(
                        sequence = queued.sequence,
                        error = %refused,
                        "report refused, kept in rejected/"
                    );
                    fs::rename(path, self.rejected.join(path.file_name().expect("a file")))?;
                    done.rejected += 1;
                }
            }
        }
        Ok(done)
    }
}

/// A counter kept in a file so numbers never repeat across restarts: report sequence numbers
/// (a repeated one would make the API drop a new report as a duplicate) and the client order
/// ids of asks (a repeated one would be refused by the engine).
#[derive(Debug)]
pub struct Sequence {
    path: PathBuf,
    next: u64,
}

impl Sequence {
    /// The counter kept in `path`.
    pub fn open(path: PathBuf) -> Result<Sequence, StoreError> {
        let next = match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(StoreError::DamagedSequence)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(e.into()),
        };
        Ok(Sequence { path, next })
    }

    /// Takes a number; it is on disk before it is used, so a crash can skip a number but
    /// never reuse one.
    pub fn take(&mut self) -> Result<u64, StoreError> {
        let taken = self.next;
        let tmp = self.path.with_extension("tmp");
        let mut file = fs::File::create(&tmp)?;
        writeln!(file, "{}", taken + 1)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        self.next = taken + 1;
        Ok(taken)
    }
}
