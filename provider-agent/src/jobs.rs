//! Running a lease's job: a command with arguments and environment, restricted to the leased
//! GPUs, limited to the lease's wall-clock time, its output in a log the buyer can read, its
//! exit status recorded.
//!
//! Crash safety: every job has a state file (`jobs/<lease>.json`, written with fsync and
//! rename) that says `starting` *before* the process is spawned and gets its pid after. The
//! job runs under a small `sh` wrapper in its own session that writes the exit status to a
//! file when the command ends, so a restarted agent learns how a job it did not see end
//! ended. A job whose state says `starting` without a pid may or may not have started before
//! the crash: it is never started again, only reported as lost.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Why a job could not be started or its state kept.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("lease {0} already has a job: a job never runs twice")]
    AlreadyStarted(u64),
    #[error("the job has no command")]
    NoCommand,
    #[error("starting the job of lease {lease}")]
    Spawn {
        lease: u64,
        #[source]
        source: std::io::Error,
    },
    /// A state, log or exit file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A job's state file does not parse.
    #[error(transparent)]
    State(#[from] serde_json::Error),
}

/// What the buyer wants run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Recorded, not yet known to be spawned.
    Starting,
    Running {
        pid: u32,
    },
    Exited {
        code: i32,
    },
    /// Stopped by the agent: over its time, or the lease was cancelled.
    Killed {
        reason: String,
    },
    /// The agent crashed between recording and spawning; whether it ran is unknown, so it
    /// is not run again.
    Lost,
}

impl JobStatus {
    pub fn is_over(&self) -> bool {
        !matches!(self, JobStatus::Starting | JobStatus::Running { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub lease: u64,
    pub spec: JobSpec,
    pub gpus: Vec<u32>,
    /// Unix milliseconds.
    pub started_ms: u64,
    pub deadline_ms: u64,
    pub status: JobStatus,
    /// The start is in a signed report in the outbox (so it reaches the market once).
    #[serde(default)]
    pub start_reported: bool,
    /// The end has been reported to the market (set by the caller once it has).
    #[serde(default)]
    pub end_reported: bool,
}

impl Job {
    /// Hours from start to now or to the deadline, whichever is first, at six places.
    pub fn hours_used(&self, now_ms: u64) -> f64 {
        let end = now_ms.min(self.deadline_ms).max(self.started_ms);
        ((end - self.started_ms) as f64 / 3_600_000.0 * 1e6).floor() / 1e6
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The GPU vendor decides which variables restrict a job to its GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Nvidia,
    Amd,
}

/// The jobs of one node, kept under `state_dir/jobs/`.
#[derive(Debug)]
pub struct Runner {
    dir: PathBuf,
    vendor: Vendor,
    /// Jobs this process spawned, waited for so they leave no zombie. Jobs found at a
    /// restart belong to init by then.
    children: Mutex<HashMap<u64, Child>>,
}

impl Runner {
    pub fn open(state_dir: &Path, vendor: Vendor) -> Result<Runner, JobError> {
        let dir = state_dir.join("jobs");
        fs::create_dir_all(&dir)?;
        Ok(Runner {
            dir,
            vendor,
            children: Mutex::new(HashMap::new()),
        })
    }

    fn state_path(&self, lease: u64) -> PathBuf {
        self.dir.join(format!("{lease}.json"))
    }

    /// The buyer's log of the lease's job.
    pub fn log_path(&self, lease: u64) -> PathBuf {
        self.dir.join(format!("{lease}.log"))
    }

    fn exit_path(&self, lease: u64) -> PathBuf {
        self.dir.join(format!("{lease}.exit"))
    }

    fn save(&self, job: &Job) -> Result<(), JobError> {
        let path = self.state_path(job.lease);
        let tmp = path.with_extension("tmp");
        let mut file = fs::File::create(&tmp)?;
        file.write_all(serde_json::to_string_pretty(job)?.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(())
    }

    pub fn get(&self, lease: u64) -> Result<Option<Job>, JobError> {
        match fs::read_to_string(self.state_path(lease)) {
            Ok(text) => Ok(Some(serde_json::from_str(&text)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every job this node has a record of, by lease.
    pub fn jobs(&self) -> Result<Vec<Job>, JobError> {
        let mut jobs = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                jobs.push(serde_json::from_str(&fs::read_to_string(&path)?)?);
            }
        }
        jobs.sort_by_key(|j: &Job| j.lease);
        Ok(jobs)
    }

    /// Starts the lease's job, once: a lease that already has a job is refused.
    pub fn start(
        &self,
        lease: u64,
        spec: JobSpec,
        gpus: Vec<u32>,
        limit: Duration,
    ) -> Result<Job, JobError> {
        if self.get(lease)?.is_some() {
            return Err(JobError::AlreadyStarted(lease));
        }
        if spec.command.is_empty() {
            return Err(JobError::NoCommand);
        }
        let started_ms = now_ms();
        let mut job = Job {
            lease,
            spec,
            gpus,
            started_ms,
            deadline_ms: started_ms + limit.as_millis() as u64,
            status: JobStatus::Starting,
            start_reported: false,
            end_reported: false,
        };
        self.save(&job)?;
        let log = fs::File::create(self.log_path(lease))?;
        let visible = job
            .gpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new("/bin/sh");
        // The wrapper records the exit status where a restarted agent can read it.
        command
            .arg("-c")
            .arg("\"$@\"; echo $? > \"$GPUMARKET_EXIT_FILE\"")
            .arg("gpumarket-job")
            .arg(&job.spec.command)
            .args(&job.spec.args)
            .env("GPUMARKET_EXIT_FILE", self.exit_path(lease))
            .env("GPUMARKET_LEASE", lease.to_string())
            .envs(&job.spec.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own session: the job outlives an agent crash and is killed as a group.
            .process_group(0);
        match self.vendor {
            Vendor::Nvidia => {
                command.env("CUDA_VISIBLE_DEVICES", &visible);
            }
            Vendor::Amd => {
                command
                    .env("HIP_VISIBLE_DEVICES", &visible)
                    .env("ROCR_VISIBLE_DEVICES", &visible);
            }
        }
        let child = command
            .spawn()
            .map_err(|source| JobError::Spawn { lease, source })?;
        job.status = JobStatus::Running { pid: child.id() };
        self.save(&job)?;
        self.children
            .lock()
            .expect("children lock")
            .insert(lease, child);
        Ok(job)
    }

    /// Brings every running job's status up to date: ended (exit file), over time (killed),
    /// gone without a trace (the agent's machine rebooted), or lost before spawning.
    pub fn poll(&self) -> Result<Vec<Job>, JobError> {
        let now = now_ms();
        let mut changed = Vec::new();
        for mut job in self.jobs()? {
            let before = job.status.clone();
            match &job.status {
                JobStatus::Starting => job.status = JobStatus::Lost,
                JobStatus::Running { pid } => {
                    let pid = *pid;
                    self.reap(job.lease);
                    if let Some(code) = self.exit_code(job.lease)? {
                        job.status = JobStatus::Exited { code };
                    } else if !alive(pid) {
                        job.status = JobStatus::Killed {
                            reason: "the job disappeared (machine restarted?)".into(),
                        };
                    } else if now >= job.deadline_ms {
                        kill_group(pid);
                        job.status = JobStatus::Killed {
                            reason: "the lease's time ran out".into(),
                        };
                    }
                }
                _ => {}
            }
            if job.status != before {
                self.save(&job)?;
                changed.push(job);
            }
        }
        Ok(changed)
    }

    /// Kills the lease's job (the lease was cancelled).
    pub fn cancel(&self, lease: u64) -> Result<Option<Job>, JobError> {
        let Some(mut job) = self.get(lease)? else {
            return Ok(None);
        };
        if let JobStatus::Running { pid } = job.status {
            kill_group(pid);
            self.reap(lease);
            job.status = JobStatus::Killed {
                reason: "the lease was cancelled".into(),
            };
            self.save(&job)?;
        }
        Ok(Some(job))
    }

    /// Marks the job's end as reported, so a restart does not report it again.
    pub fn mark_reported(&self, lease: u64) -> Result<(), JobError> {
        if let Some(mut job) = self.get(lease)? {
            job.end_reported = true;
            self.save(&job)?;
        }
        Ok(())
    }

    /// Marks the job's start as carried by a report in the outbox.
    pub fn mark_start_reported(&self, lease: u64) -> Result<(), JobError> {
        if let Some(mut job) = self.get(lease)? {
            job.start_reported = true;
            self.save(&job)?;
        }
        Ok(())
    }

    /// The last 48 KiB of the job's output (cut at a character boundary).
    pub fn log_tail(&self, lease: u64) -> Result<String, JobError> {
        const TAIL: usize = 48 << 10;
        let bytes = match fs::read(self.log_path(lease)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let start = bytes.len().saturating_sub(TAIL);
        let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
        Ok(text.trim_start_matches('\u{fffd}').to_owned())
    }

    /// Waits for the lease's process if this agent spawned it and it has ended.
    fn reap(&self, lease: u64) {
        let mut children = self.children.lock().expect("children lock");
        if let Some(child) = children.get_mut(&lease) {
            if matches!(child.try_wait(), Ok(Some(_))) {
                children.remove(&lease);
            }
        }
    }

    fn exit_code(&self, lease: u64) -> Result<Option<i32>, JobError> {
        match fs::read_to_string(self.exit_path(lease)) {
            // The wrapper writes the number and a newline; a half-written file reads as not
            // yet ended and is read again at the next poll.
            Ok(text) if text.ends_with('\n') => Ok(text.trim().parse().ok()),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether the process exists (and is not a zombie).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

fn kill_group(pid: u32) {
    // The job leads its own process group: kill everything it started. It may have ended
    // on its own since the last look, which is fine.
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
