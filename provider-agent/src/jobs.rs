//! Running a lease's job: a command with arguments and environment, in its sandbox
//! ([`crate::sandbox`]: its own uid, root, work directory and leased GPUs' devices only),
//! killed with everything it started when the lease ends (its `ends_at`, the moment the
//! engine ends the lease), its output in a log the buyer can read, its exit status recorded.
//! No sandbox, no job: a runner on a host where bubblewrap does not work refuses every job.
//!
//! Crash safety: every job has a state file (`jobs/<lease>.json`, written whole with
//! [`crate::durable::write_atomic`]) that says `starting` *before* the process is spawned
//! and gets its pid after. The job runs under a small `sh` wrapper in its own process group
//! that writes the exit status to a file when the command ends (a temporary file, synced,
//! renamed), so a restarted agent learns how a job it did not see end ended. A job whose
//! state says `starting` without a pid may or may not have started before the crash: it is
//! never started again, only reported as lost. A job whose process is gone without an exit
//! file (the machine rebooted, or something killed the wrapper) is lost too: how it ended is
//! unknown, so it is never reported as completed. The process is known by its pid, the
//! boot it ran in and its start time, so a pid the kernel gave to another process since is
//! never taken for the job, nor signalled.
//!
//! Damage (a file a disk tore despite all that) is never read as a good ending: an exit
//! file that is not a number and a newline makes the job lost once its process is gone, and
//! a state file that does not parse makes it lost at once, after any process still running
//! for it is killed.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::sandbox::{GpuName, NoSandbox, Plan, Sandbox, SandboxConfig};

/// How long a job has, after `SIGTERM` to its process group, before `SIGKILL`.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// Why a job could not be started or its state kept.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("lease {0} already has a job: a job never runs twice")]
    AlreadyStarted(u64),
    #[error("the job has no command")]
    NoCommand,
    #[error(transparent)]
    NoSandbox(#[from] NoSandbox),
    #[error("starting the job of lease {lease}")]
    Spawn {
        lease: u64,
        #[source]
        source: std::io::Error,
    },
    /// A state, log or exit file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A job's state file does not parse or names another lease: the job is recorded as
    /// lost in its place.
    #[error("the state file of lease {lease}'s job is damaged")]
    Damaged {
        lease: u64,
        #[source]
        source: Option<serde_json::Error>,
    },
}

/// What the buyer wants run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The cid of the OCI image manifest it runs from; none: the host's `/usr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Its inputs: each blob's cid and its path under `/job/in`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<(String, String)>,
    /// It asks to reach the network: given only where the provider offers it
    /// (`[sandbox] network`), refused elsewhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network: bool,
}

impl JobSpec {
    /// A command and its arguments, with no environment.
    pub fn new(command: &str, args: &[&str]) -> JobSpec {
        JobSpec {
            command: command.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..JobSpec::default()
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Recorded, not yet known to be spawned.
    Starting,
    /// Its wrapper, which leads the job's process group, is `pid`; `since` tells that
    /// process from a later one given the same pid (absent in records older than it).
    Running {
        pid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<ProcessStart>,
    },
    Exited {
        code: i32,
    },
    /// Stopped by the agent, with its whole process group: the lease's end was reached, or
    /// the market ended the lease.
    Killed {
        reason: String,
    },
    /// Whether it ran, or how it ended, is unknown: the agent crashed between recording and
    /// spawning, the job's process is gone without an exit file (after an agent restart,
    /// say), or the job's exit file or state file was damaged. It is not run again, never
    /// reported as completed, and its lease is no longer listed healthy.
    Lost,
    /// Never run, through the buyer's fault: its image is not one (a manifest or layer
    /// that does not parse or unpack), a file it names is gone from the store, or it asks
    /// for what this provider does not offer. Its GPUs stay the lease's, and the lease stays
    /// healthy: the provider did its part.
    Refused {
        reason: String,
    },
}

/// Which process a pid meant: the boot it ran in (`/proc/sys/kernel/random/boot_id`) and
/// its start time in clock ticks after that boot (`/proc/PID/stat`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStart {
    pub boot_id: String,
    pub ticks: u64,
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
    /// The uid its sandbox runs as, where the agent chose one (a root agent): whatever runs
    /// as it when the job is over is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// When the agent started it, Unix milliseconds.
    pub started_ms: u64,
    /// The lease's end (`ends_at`), Unix milliseconds: the job is killed then.
    pub deadline_ms: u64,
    pub status: JobStatus,
    /// The start is in a signed report in the outbox (so it reaches the market once).
    #[serde(default)]
    pub start_reported: bool,
    /// Its log tail and outcome have gone to the market (`submitJobLog`).
    #[serde(default, alias = "end_reported")]
    pub outcome_sent: bool,
    /// The market ended the lease: the job is stopped and its GPUs are free for others.
    #[serde(default)]
    pub lease_ended: bool,
    /// What it wrote, uploaded by digest once it was over ([`crate::files`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<contract::JobOutputs>,
    /// Its outputs are in a signed report in the outbox.
    #[serde(default)]
    pub outputs_reported: bool,
    /// Its outputs were refused for good (say, over the buyer's quota): not tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_refused: Option<String>,
}

impl Job {
    /// Whether the job's GPUs are still its lease's at `now_ms`: the market has not ended
    /// the lease, and the job runs or the lease's end is ahead.
    pub fn holds_gpus(&self, now_ms: u64) -> bool {
        !self.lease_ended && (!self.status.is_over() || now_ms < self.deadline_ms)
    }

    /// What the buyer is told of how it ended (`submitJobLog`'s outcome), once it is over.
    pub fn outcome(&self) -> Option<String> {
        match &self.status {
            JobStatus::Starting | JobStatus::Running { .. } => None,
            JobStatus::Exited { code } => Some(format!("exited {code}")),
            JobStatus::Killed { reason } => Some(format!("killed: {reason}")),
            JobStatus::Lost => Some("lost".to_owned()),
            JobStatus::Refused { reason } => Some(format!("refused: {reason}")),
        }
    }
}

/// Why a job is killed at its deadline: the lease's end, as RFC 3339 (UTC, milliseconds).
pub fn deadline_reason(deadline_ms: u64) -> String {
    let at = i64::try_from(deadline_ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    format!(
        "the lease ended at {}",
        at.to_rfc3339_opts(SecondsFormat::Millis, true)
    )
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

/// The jobs of one node, kept under `state_dir/jobs/`; their sandboxes' directories under
/// `state_dir/sandbox/<lease>/` (`work`, the job's `/job`; `in`, its inputs).
#[derive(Debug)]
pub struct Runner {
    dir: PathBuf,
    sandboxes: PathBuf,
    vendor: Vendor,
    sandbox: Result<Sandbox, NoSandbox>,
    /// How the GPU source names each GPU on the host (device node, visible-devices id).
    names: BTreeMap<u32, GpuName>,
    /// Jobs this process spawned, waited for so they leave no zombie. Jobs found at a
    /// restart belong to init by then.
    children: Mutex<HashMap<u64, Child>>,
}

impl Runner {
    /// Opens the node's jobs and checks that the sandbox works here; where it does not, the
    /// runner still follows the jobs it has, and refuses every new one (said at once).
    pub fn open(
        state_dir: &Path,
        vendor: Vendor,
        sandbox: &SandboxConfig,
    ) -> Result<Runner, JobError> {
        let dir = state_dir.join("jobs");
        fs::create_dir_all(&dir)?;
        let sandboxes = state_dir.join("sandbox");
        crate::sandbox::passable(state_dir)?;
        crate::sandbox::passable(&sandboxes)?;
        // The state directory is the agent's: its digest names the agent's jobs on the host.
        let scope =
            contract::Digest::of(fs::canonicalize(state_dir)?.as_os_str().as_encoded_bytes()).cid();
        let sandbox = Sandbox::probe(sandbox, &scope[scope.len() - 12..]);
        if let Err(e) = &sandbox {
            tracing::error!(error = %e, "this node runs no jobs");
        }
        Ok(Runner {
            dir,
            sandboxes,
            vendor,
            sandbox,
            names: BTreeMap::new(),
            children: Mutex::new(HashMap::new()),
        })
    }

    /// Tells the runner each GPU's device node and id as the GPU source read them; GPUs
    /// not named go by their index (`nvidiaI`, `renderD(128+I)`).
    pub fn name_gpus(&mut self, names: BTreeMap<u32, GpuName>) {
        self.names = names;
    }

    /// Whether jobs can run here: the sandbox worked when the runner opened, or why not.
    pub fn sandbox(&self) -> Result<(), &NoSandbox> {
        self.sandbox.as_ref().map(|_| ())
    }

    fn state_path(&self, lease: u64) -> PathBuf {
        self.dir.join(format!("{lease}.json"))
    }

    /// The buyer's log of the lease's job.
    pub fn log_path(&self, lease: u64) -> PathBuf {
        self.dir.join(format!("{lease}.log"))
    }

    /// The job's own directory, `/job` in its sandbox: what it leaves in `out/` is its output.
    pub fn work_dir(&self, lease: u64) -> PathBuf {
        self.sandboxes.join(lease.to_string()).join("work")
    }

    /// Where the job's inputs are put before it starts (`/job/in`, read-only, in its sandbox).
    pub fn input_dir(&self, lease: u64) -> PathBuf {
        self.sandboxes.join(lease.to_string()).join("in")
    }

    fn exit_path(&self, lease: u64) -> PathBuf {
        self.dir.join(format!("{lease}.exit"))
    }

    fn save(&self, job: &Job) -> Result<(), JobError> {
        let json = serde_json::to_vec_pretty(job).expect("strings, numbers and lists serialize");
        crate::durable::write_atomic(&self.state_path(job.lease), &json, 0o600)?;
        Ok(())
    }

    pub fn get(&self, lease: u64) -> Result<Option<Job>, JobError> {
        match fs::read(self.state_path(lease)) {
            Ok(bytes) => self.parse(lease, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A state file's job. A damaged one (it does not parse, or names another lease) is
    /// replaced by a lost job: whatever still runs for the lease is killed (found by the
    /// exit file its processes inherit in their environment), its outcome is sent as lost,
    /// and its lease is no longer listed healthy, since nothing is known of what it did.
    fn parse(&self, lease: u64, bytes: &[u8]) -> Result<Job, JobError> {
        let damage = match serde_json::from_slice::<Job>(bytes) {
            Ok(job) if job.lease == lease => return Ok(job),
            Ok(_) => JobError::Damaged {
                lease,
                source: None,
            },
            Err(e) => JobError::Damaged {
                lease,
                source: Some(e),
            },
        };
        tracing::error!(error = %damage, "recording the job as lost");
        self.kill_marked(lease);
        let job = Job {
            lease,
            spec: JobSpec::default(),
            gpus: Vec::new(),
            uid: None,
            started_ms: 0,
            deadline_ms: 0,
            status: JobStatus::Lost,
            // Whether its start was reported is unknown; it is not reported again (a lost
            // job is never reported started).
            start_reported: true,
            outcome_sent: false,
            lease_ended: false,
            outputs: None,
            outputs_reported: false,
            outputs_refused: Some("its record was damaged".to_owned()),
        };
        self.save(&job)?;
        Ok(job)
    }

    /// Every job this node has a record of, by lease.
    pub fn jobs(&self) -> Result<Vec<Job>, JobError> {
        let mut jobs = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let lease = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse().ok());
            if let Some(lease) = lease {
                jobs.push(self.parse(lease, &fs::read(&path)?)?);
            }
        }
        jobs.sort_by_key(|j: &Job| j.lease);
        Ok(jobs)
    }

    /// Starts the lease's job in its sandbox, once (a lease that already has a job is
    /// refused), to be killed at `ends_at`, the lease's end. `image` is the unpacked root of
    /// its image (`None`: the host's `/usr`); its inputs are whatever [`Runner::input_dir`]
    /// holds by then.
    pub fn start(
        &self,
        lease: u64,
        spec: JobSpec,
        gpus: Vec<u32>,
        ends_at: DateTime<Utc>,
        image: Option<&Path>,
    ) -> Result<Job, JobError> {
        let sandbox = self.sandbox.as_ref().map_err(Clone::clone)?;
        if self.get(lease)?.is_some() {
            return Err(JobError::AlreadyStarted(lease));
        }
        if spec.command.is_empty() {
            return Err(JobError::NoCommand);
        }
        let started_ms = now_ms();
        let uid = sandbox.uid(&gpus);
        let mut job = Job {
            lease,
            spec,
            gpus,
            uid,
            started_ms,
            deadline_ms: u64::try_from(ends_at.timestamp_millis()).unwrap_or(0),
            status: JobStatus::Starting,
            start_reported: false,
            outcome_sent: false,
            lease_ended: false,
            outputs: None,
            outputs_reported: false,
            outputs_refused: None,
        };
        self.save(&job)?;
        let log = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.log_path(lease))?;
        let work = self.work_dir(lease);
        crate::sandbox::passable(work.parent().expect("under the sandboxes' dir"))?;
        sandbox.prepare(&work, uid)?;
        let inputs = self.input_dir(lease);
        // What steers the GPU runtime is the agent's to set, whatever the spec says (the API
        // refuses such names; a spec read back from disk is checked again).
        let mut env = job.spec.env.clone();
        env.retain(|name, _| !name.starts_with("NVIDIA_") && !name.ends_with("VISIBLE_DEVICES"));
        env.insert("GPUMARKET_LEASE".to_owned(), lease.to_string());
        let argv = sandbox.argv(&Plan {
            lease,
            image,
            work: &work,
            inputs: inputs.is_dir().then_some(inputs.as_path()),
            gpus: &job.gpus,
            names: &self.names,
            vendor: self.vendor,
            network: job.spec.network,
            env: &env,
            command: &job.spec.command,
            args: &job.spec.args,
        })?;
        let cgroups = sandbox.enter_cgroups(lease)?;
        let mut command = Command::new("/bin/sh");
        // The wrapper enters the job's control groups (or runs nothing: a job outside its
        // limits is not started, and without an exit file it is lost), then records the
        // exit status where a restarted agent can read it, whole (written beside, synced
        // where `sync` takes a file, renamed into place).
        command
            .arg("-c")
            .arg(
                "set -f; IFS=:; for g in $GPUMARKET_CGROUPS; do \
                   printf '%s\\n' $$ > \"$g\" || exit 125; done; unset IFS; set +f; \
                 \"$@\"; code=$?; f=\"$GPUMARKET_EXIT_FILE\"; \
                 printf '%s\\n' \"$code\" > \"$f.tmp\"; sync \"$f.tmp\" 2>/dev/null; mv -f \"$f.tmp\" \"$f\"",
            )
            .arg("gpumarket-job")
            // The sandbox's pid 1 is bubblewrap's, whose environment a job can read: it gets
            // only PATH, never the wrapper's (where the exit file is).
            .args(["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
            .args(&argv)
            .current_dir("/")
            // Nothing of the agent's environment, even outside the sandbox.
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("GPUMARKET_EXIT_FILE", self.exit_path(lease))
            .env(
                "GPUMARKET_CGROUPS",
                std::env::join_paths(&cgroups).map_err(std::io::Error::other)?,
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: the job outlives an agent crash and is killed as a group.
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|source| JobError::Spawn { lease, source })?;
        // Read while the child cannot have been reaped: the pid is still this process.
        job.status = JobStatus::Running {
            pid: child.id(),
            since: process_start(child.id()),
        };
        self.save(&job)?;
        self.children
            .lock()
            .expect("children lock")
            .insert(lease, child);
        Ok(job)
    }

    /// Records that the lease's job is refused for `reason` (the buyer's fault: see
    /// [`JobStatus::Refused`]) and holds `gpus` for the lease to its end, once.
    pub fn refuse(
        &self,
        lease: u64,
        spec: JobSpec,
        gpus: Vec<u32>,
        ends_at: DateTime<Utc>,
        reason: String,
    ) -> Result<Job, JobError> {
        if self.get(lease)?.is_some() {
            return Err(JobError::AlreadyStarted(lease));
        }
        let job = Job {
            lease,
            spec,
            gpus,
            uid: None,
            started_ms: now_ms(),
            deadline_ms: u64::try_from(ends_at.timestamp_millis()).unwrap_or(0),
            status: JobStatus::Refused { reason },
            // Nothing ran: no start to report, no outputs to upload.
            start_reported: true,
            outcome_sent: false,
            lease_ended: false,
            outputs: None,
            outputs_reported: false,
            outputs_refused: None,
        };
        fs::write(self.log_path(lease), b"")?;
        self.save(&job)?;
        Ok(job)
    }

    /// Brings every running job's status up to date: ended (exit file), at its lease's end
    /// (killed with its group, `SIGTERM` then after [`KILL_GRACE`] `SIGKILL`), gone without
    /// an exit file (lost: the machine rebooted, or the wrapper was killed), or lost before
    /// spawning. A job that ended leaves nothing behind: what it started is stopped too.
    pub fn poll(&self) -> Result<Vec<Job>, JobError> {
        let now = now_ms();
        let mut changed = Vec::new();
        for mut job in self.jobs()? {
            let before = job.status.clone();
            match &job.status {
                JobStatus::Starting => {
                    self.kill_marked(job.lease);
                    job.status = JobStatus::Lost;
                }
                JobStatus::Running { pid, since } => {
                    let (pid, since) = (*pid, since.clone());
                    self.reap(job.lease);
                    // Alive first, then the exit file: a wrapper that was gone at the first
                    // look had written its exit file, if it ever would, by the second.
                    let alive = runs(pid, since.as_ref());
                    let sandbox = self.sandbox.as_ref().ok();
                    match self.exit_code(job.lease)? {
                        Some(Some(code)) => {
                            let oom = sandbox
                                .filter(|_| code != 0)
                                .and_then(|s| s.out_of_memory(job.lease));
                            job.status = match oom {
                                Some(mb) => JobStatus::Killed {
                                    reason: format!(
                                        "it used all of this provider's {mb} MiB of memory \
                                         (exited {code})"
                                    ),
                                },
                                None => JobStatus::Exited { code },
                            };
                            self.stop_leftovers(job.lease, pid, since.as_ref());
                        }
                        // No exit file, or one that is not a number and a newline, and nothing
                        // will write it again: how the job ended is unknown.
                        _ if !alive => {
                            job.status = JobStatus::Lost;
                            self.stop_leftovers(job.lease, pid, since.as_ref());
                        }
                        _ if now >= job.deadline_ms => {
                            self.stop_group(job.lease, pid);
                            job.status = JobStatus::Killed {
                                reason: deadline_reason(job.deadline_ms),
                            };
                        }
                        _ if sandbox
                            .and_then(Sandbox::max_disk_bytes)
                            .is_some_and(|max| disk_use(&self.work_dir(job.lease)) > max) =>
                        {
                            self.stop_group(job.lease, pid);
                            job.status = JobStatus::Killed {
                                reason: format!(
                                    "it kept more than this provider's {} MiB under /job",
                                    sandbox.and_then(Sandbox::max_disk_bytes).unwrap_or(0) >> 20
                                ),
                            };
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
            if job.status != before {
                self.sweep(&job)?;
                self.save(&job)?;
                changed.push(job);
            }
        }
        Ok(changed)
    }

    /// The market ended the lease: its job, if it still runs, is killed with its group
    /// (`SIGTERM`, then `SIGKILL` after [`KILL_GRACE`]), and its GPUs are free again.
    pub fn lease_ended(&self, lease: u64) -> Result<Option<Job>, JobError> {
        let Some(mut job) = self.get(lease)? else {
            return Ok(None);
        };
        if let JobStatus::Running { pid, since } = &job.status {
            if runs(*pid, since.as_ref()) {
                self.stop_group(lease, *pid);
            } else {
                self.stop_leftovers(lease, *pid, since.as_ref());
            }
            self.reap(lease);
            job.status = JobStatus::Killed {
                reason: "the lease ended in the market".into(),
            };
        }
        self.sweep(&job)?;
        job.lease_ended = true;
        self.save(&job)?;
        Ok(Some(job))
    }

    /// Kills whatever still runs as the job's own uid once it is over: its sandbox ends with
    /// its group, so this finds only what escaped that (nothing, unless bubblewrap changes).
    /// Never while another job that runs has the same uid (a later lease on the same GPU).
    fn sweep(&self, job: &Job) -> Result<(), JobError> {
        if let (Ok(sandbox), true) = (&self.sandbox, job.status.is_over()) {
            sandbox.stop_container(job.lease, Duration::ZERO);
            sandbox.kill_cgroups(job.lease);
        }
        let Some(uid) = job.uid.filter(|_| job.status.is_over()) else {
            return Ok(());
        };
        let shared = self
            .jobs()?
            .iter()
            .any(|j| j.lease != job.lease && j.uid == Some(uid) && !j.status.is_over());
        if !shared {
            Sandbox::kill_uid(uid);
        }
        Ok(())
    }

    /// Marks the job's outcome as sent, so a restart does not send it again.
    pub fn mark_outcome_sent(&self, lease: u64) -> Result<(), JobError> {
        if let Some(mut job) = self.get(lease)? {
            job.outcome_sent = true;
            self.save(&job)?;
        }
        Ok(())
    }

    /// Forgets that the starts of the jobs whose outcome is not sent were reported: a
    /// damaged report in the outbox may have carried them. A start the market has already
    /// is refused again harmlessly (`LEASE_ALREADY_STARTED`); one it never got arrives.
    pub fn report_starts_again(&self) -> Result<(), JobError> {
        for mut job in self.jobs()? {
            let mut changed = false;
            // A refused job never started: nothing to report again.
            if job.start_reported
                && !job.outcome_sent
                && !matches!(job.status, JobStatus::Lost | JobStatus::Refused { .. })
            {
                job.start_reported = false;
                changed = true;
            }
            // The same for the report that named its outputs: the API seals them once.
            if job.outputs_reported {
                job.outputs_reported = false;
                changed = true;
            }
            if changed {
                self.save(&job)?;
            }
        }
        Ok(())
    }

    /// Records what the job wrote, or why it will never be sent.
    pub fn set_outputs(
        &self,
        lease: u64,
        outputs: Result<contract::JobOutputs, String>,
    ) -> Result<(), JobError> {
        if let Some(mut job) = self.get(lease)? {
            match outputs {
                Ok(outputs) => job.outputs = Some(outputs),
                Err(why) => job.outputs_refused = Some(why),
            }
            self.save(&job)?;
        }
        Ok(())
    }

    /// Marks the job's outputs as carried by a report in the outbox.
    pub fn mark_outputs_reported(&self, lease: u64) -> Result<(), JobError> {
        if let Some(mut job) = self.get(lease)? {
            job.outputs_reported = true;
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

    /// The end of the job's output as text of at most 48 KiB: bytes that are not UTF-8, and
    /// control characters but newline and tab (NUL among them), written `\xNN`, so any
    /// output reads safely; the whole log, byte for byte, is a blob of its outputs.
    pub fn log_tail(&self, lease: u64) -> Result<String, JobError> {
        const TAIL: usize = 48 << 10;
        let bytes = match fs::read(self.log_path(lease)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        // Escaping at most quadruples a byte: a quarter of the room is enough bytes.
        let mut start = bytes.len().saturating_sub(TAIL);
        loop {
            // Never from the middle of a character.
            while bytes.get(start).is_some_and(|b| b & 0xc0 == 0x80) && start % TAIL != 0 {
                start += 1;
            }
            let text = escape(&bytes[start..]);
            if text.len() <= TAIL {
                return Ok(text);
            }
            start += (text.len() - TAIL).div_ceil(4).max(1);
        }
    }

    /// Kills whatever runs for the lease's job though its pid is not known (its record is
    /// damaged, or the agent crashed between spawning it and recording the pid): the
    /// processes that inherited the job's exit file in their environment, with their groups.
    fn kill_marked(&self, lease: u64) {
        let marker = format!("GPUMARKET_EXIT_FILE={}", self.exit_path(lease).display());
        let own_group = rustix::process::getpgrp();
        for pid in fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        {
            let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if !environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
                continue;
            }
            let Some(pid) = rustix::process::Pid::from_raw(pid) else {
                continue;
            };
            // Its whole group (the wrapper leads one), unless that is the agent's own.
            if let Ok(group) = rustix::process::getpgid(Some(pid)) {
                if group != own_group {
                    let _ =
                        rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                }
            }
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }

    /// Stops the process group `group` (the job's wrapper leads it): `SIGTERM`, up to
    /// [`KILL_GRACE`] for it to end, then `SIGKILL`, and up to a second more for it to be
    /// gone. Only called while the group is known to be the job's (its leader runs, or
    /// members of it do in the job's boot), so the signal reaches nobody else.
    fn stop_group(&self, lease: u64, group: u32) {
        let Some(pgid) = i32::try_from(group)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return;
        };
        // The job's processes are in its sandbox's own session and pid namespace, not in
        // the group: they are found as the group leader's descendants. SIGTERM goes to the
        // job's own (those in the sandbox's namespace but its init), so it sees SIGTERM
        // first, as it would outside a sandbox: signalled, bubblewrap would take the whole
        // namespace down with SIGKILL at once. SIGKILL then goes to everything.
        let kill = |pid: u32, signal: rustix::process::Signal| {
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, signal);
            }
        };
        let ours = fs::read_link("/proc/self/ns/pid").ok();
        let inside = |pid: u32| {
            let ns = |pid: u32| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
            let parent = stat(pid).map(|s| s.parent);
            ns(pid).is_some_and(|n| Some(&n) != ours.as_ref())
                && parent
                    .and_then(ns)
                    .is_some_and(|n| Some(&n) != ours.as_ref())
        };
        let gone_within = |limit: Duration| {
            let until = Instant::now() + limit;
            loop {
                self.reap(lease);
                if group_members(group) == 0 && tree(group).is_empty() {
                    return true;
                }
                if Instant::now() >= until {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        // Under an OCI runtime the job is the runtime's child, not the group's: stopped by
        // its container's name (SIGTERM, the grace, SIGKILL), which ends its client too.
        if let Ok(sandbox) = &self.sandbox {
            sandbox.stop_container(lease, KILL_GRACE);
        }
        // Ended on its own since the last look: nothing to signal.
        if group_members(group) == 0 && tree(group).is_empty() {
            return;
        }
        let job: Vec<u32> = tree(group).into_iter().filter(|p| inside(*p)).collect();
        if job.is_empty() {
            // Not started inside yet: the group.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::TERM);
        }
        for pid in job {
            kill(pid, rustix::process::Signal::TERM);
        }
        if gone_within(KILL_GRACE) {
            return;
        }
        tracing::info!(lease, "the job outlived SIGTERM's grace: SIGKILL");
        if let Ok(sandbox) = &self.sandbox {
            sandbox.kill_cgroups(lease);
        }
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        for pid in tree(group) {
            kill(pid, rustix::process::Signal::KILL);
        }
        gone_within(Duration::from_secs(1));
    }

    /// Stops what a job whose wrapper ended left running in its group, if the group is
    /// still the job's. It is not in another boot (every process of the job is gone, and
    /// the number may be another's), nor when another process has the wrapper's pid (the
    /// group emptied and the number went to that process, which may lead a group of its
    /// own). Otherwise a group with members is the job's: while it has members its number
    /// is given to no new process.
    fn stop_leftovers(&self, lease: u64, group: u32, since: Option<&ProcessStart>) {
        let same_boot = since.is_none_or(|s| boot_id().is_some_and(|b| b == s.boot_id));
        let leader_ours = stat(group).is_none_or(|s| s.state == 'Z') || runs(group, since);
        if same_boot && leader_ours && group_members(group) > 0 {
            tracing::info!(lease, "stopping what the ended job left running");
            self.stop_group(lease, group);
        }
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

    /// The exit file: `None` when there is none yet, `Some(None)` when it is not the number
    /// and newline the wrapper writes (damaged), else the code.
    fn exit_code(&self, lease: u64) -> Result<Option<Option<i32>>, JobError> {
        match fs::read(self.exit_path(lease)) {
            Ok(bytes) => Ok(Some(
                bytes
                    .strip_suffix(b"\n")
                    .and_then(|n| std::str::from_utf8(n).ok())
                    .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|n| n.parse().ok()),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// A process as `/proc/PID/stat` has it: its state letter, parent, process group and start
/// time.
struct Stat {
    state: char,
    parent: u32,
    group: u32,
    start_ticks: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command name (which may hold spaces and ')'):
    // state, ppid, pgrp, ..., the start time 20th (the line's 22nd field).
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        parent: fields.get(1)?.parse().ok()?,
        group: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|b| b.trim().to_owned())
}

/// The identity of the running process `pid`.
fn process_start(pid: u32) -> Option<ProcessStart> {
    Some(ProcessStart {
        boot_id: boot_id()?,
        ticks: stat(pid)?.start_ticks,
    })
}

/// Whether `pid` runs (not a zombie) and, when `since` is known, is the process it names.
fn runs(pid: u32, since: Option<&ProcessStart>) -> bool {
    let Some(now) = stat(pid) else {
        return false;
    };
    now.state != 'Z'
        && since
            .is_none_or(|s| now.start_ticks == s.ticks && boot_id().is_some_and(|b| b == s.boot_id))
}

/// The processes of group `group` that have not ended (zombies are over: a job's
/// grandchildren that ended may wait for a parent that never reaps them).
/// `root` and every live process descended from it (by parent links), when `root` runs.
fn tree(root: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
            (fields.first()? != &"Z").then_some((pid, fields.get(1)?.parse().ok()?))
        })
        .collect();
    if !parents.iter().any(|(pid, _)| *pid == root) {
        return Vec::new();
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        parents.retain(|(pid, ppid)| {
            if *ppid == parent {
                found.push(*pid);
                false
            } else {
                true
            }
        });
        i += 1;
    }
    found
}

fn group_members(group: u32) -> usize {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .filter(|s| s.group == group && s.state != 'Z')
        .count()
}

/// `bytes` as printable text: valid UTF-8 kept, newline and tab kept, other control
/// characters and bytes that are not UTF-8 written `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\n' && c != '\t' {
                for b in c.to_string().bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The bytes the files under `dir` take on disk (allocated blocks: a sparse file counts what
/// it holds), never following links.
fn disk_use(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total = total.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                todo.push(entry.path());
            }
        }
    }
    total
}
