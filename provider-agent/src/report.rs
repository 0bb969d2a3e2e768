//! Reports as the API takes them (`submitNodeReport`): JSON signed as bytes, numbered, and
//! kept in an on-disk outbox until the API has acknowledged them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use contract::{GpuSample, NodeReport};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

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
    /// A queued report does not parse (torn or damaged on disk): it is set aside in
    /// `damaged/`, never sent and never guessed at.
    #[error("the queued report {} is damaged", path.display())]
    DamagedReport {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// No number is known to be above every one the counter gave: its file is damaged and
    /// the clock reads before 1970, or it reached its end. Refused rather than risk a repeat.
    #[error("the counter {} has no next number that is sure to be new", path.display())]
    NoNextNumber { path: PathBuf },
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

/// Builds and signs the report of one sample: the GPUs, the lease starts not reported yet,
/// and the leases the node holds healthy now (`healthy_leases`, the evidence a lease is
/// charged by: the engine fails a lease it listed before and no longer lists).
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
    healthy_leases: &[u64],
    outputs: &[contract::JobOutputs],
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
                pci_bus_id: identity.and_then(|g| g.pci_bus_id.clone()),
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
        healthy_leases: healthy_leases.to_vec(),
        outputs: outputs.to_vec(),
    })
    .expect("strings, numbers and lists always serialize");
    let signature = hex(&key.sign(report.as_bytes()).to_bytes());
    SignedReport {
        sequence,
        report,
        signature,
        // Never dropped for room: a start, or outputs, are evidence a bill rests on.
        starts: !leases_started.is_empty() || !outputs.is_empty(),
    }
}

/// Signed reports waiting for the API, one file each, sent in sequence order. At most
/// `capacity` are kept: past that the oldest telemetry-only reports go (with a warning);
/// reports with lease starts are never dropped.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    rejected: PathBuf,
    damaged: PathBuf,
    capacity: usize,
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    pub duplicates: usize,
    pub rejected: usize,
    /// Reports found damaged on disk and set aside in `damaged/`.
    pub damaged: usize,
    /// Reports still waiting (the API is unreachable).
    pub waiting: usize,
}

impl Outbox {
    pub fn open(state_dir: &Path, capacity: usize) -> Result<Outbox, StoreError> {
        let dir = state_dir.join("outbox");
        let rejected = state_dir.join("rejected");
        let damaged = state_dir.join("damaged");
        for d in [&dir, &rejected, &damaged] {
            fs::create_dir_all(d)?;
        }
        Ok(Outbox {
            dir,
            rejected,
            damaged,
            capacity: capacity.max(1),
        })
    }

    /// Reads a queued report. One that does not parse is moved to `damaged/` and read as
    /// none: sending it could only be refused, and keeping it would stop every later one.
    fn read(&self, path: &Path) -> Result<Option<SignedReport>, StoreError> {
        let bytes = fs::read(path).map_err(|source| StoreError::Read {
            path: path.to_owned(),
            source,
        })?;
        match serde_json::from_slice(&bytes) {
            Ok(report) => Ok(Some(report)),
            Err(source) => {
                let damage = StoreError::DamagedReport {
                    path: path.to_owned(),
                    source,
                };
                error!(error = %damage, "a queued report is damaged; set aside in damaged/");
                fs::rename(path, self.damaged.join(path.file_name().expect("a file")))?;
                Ok(None)
            }
        }
    }

    /// Sets aside every damaged report (at start-up: a crash or a disk may have torn one);
    /// returns how many there were.
    pub fn set_aside_damaged(&self) -> Result<usize, StoreError> {
        let mut damaged = 0;
        for path in self.files()? {
            if self.read(&path)?.is_none() {
                damaged += 1;
            }
        }
        Ok(damaged)
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

    /// Puts a report in the outbox, durably and whole ([`crate::durable::write_atomic`]).
    pub fn push(&self, report: &SignedReport) -> Result<(), StoreError> {
        let name = format!("{:020}.json", report.sequence);
        let json = serde_json::to_vec(report).expect("strings, numbers and flags serialize");
        crate::durable::write_atomic(&self.dir.join(name), &json, 0o600)?;
        let files = self.files()?;
        let mut over = files.len().saturating_sub(self.capacity);
        for path in files {
            if over == 0 {
                break;
            }
            let Some(queued) = self.read(&path)? else {
                over -= 1;
                continue;
            };
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
            let Some(queued) = self.read(path)? else {
                done.damaged += 1;
                continue;
            };
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
    /// The counter kept in `path`: the next number, in digits, and a newline.
    ///
    /// A file that is not exactly that (torn, or damaged by the disk) must not be read as a
    /// smaller number, which would be given again. The counter then continues from the
    /// clock's microseconds since 1970, which are above every number it ever gave: each
    /// number taken costs a write and an fsync of this file, far more than a microsecond, so
    /// the counter never gains on the clock, whether it started at 1 or at an earlier
    /// recovery.
    pub fn open(path: PathBuf) -> Result<Sequence, StoreError> {
        let next = match fs::read(&path) {
            Ok(bytes) => match bytes
                .strip_suffix(b"\n")
                .filter(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
            {
                Some(digits) => std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .filter(|n| *n > 0),
                None => None,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(1),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let next = match next {
            Some(next) => next,
            None => {
                let floor = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .ok()
                    .and_then(|d| u64::try_from(d.as_micros()).ok())
                    .filter(|f| *f > 0)
                    .ok_or_else(|| StoreError::NoNextNumber { path: path.clone() })?;
                error!(path = %path.display(), next = floor,
                       "the counter's file is damaged; continuing from the clock, above every number it gave");
                floor
            }
        };
        Ok(Sequence { path, next })
    }

    /// Takes a number; it is on disk before it is used, so a crash can skip a number but
    /// never reuse one.
    pub fn take(&mut self) -> Result<u64, StoreError> {
        let taken = self.next;
        let next = taken
            .checked_add(1)
            .ok_or_else(|| StoreError::NoNextNumber {
                path: self.path.clone(),
            })?;
        crate::durable::write_atomic(&self.path, format!("{next}\n").as_bytes(), 0o600)?;
        self.next = next;
        Ok(taken)
    }
}
