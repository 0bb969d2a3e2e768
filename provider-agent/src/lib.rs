//! The provider agent: reads the node's GPUs (NVML, or a clearly labelled simulation), signs
//! a report every interval with the node's ed25519 key, and sends it to the market's API,
//! keeping reports on disk, in order, while the API is unreachable.
//!
//! [`Agent::step`] also keeps the node's ask in the book and runs leased jobs ([`jobs`]),
//! restricted to their GPUs and killed at their lease's end, crash-safely.
//!
//! The engine meters every lease from these reports: each lists the node's leases that are
//! healthy now (`healthy_leases`), and a lease is charged up to the last report that listed
//! it. A lease listed before and missing from a report fails as the provider's failure at
//! its last listing; a node that does not report within its market's heartbeat timeout
//! (default 30 s, three of the agent's default 10 s intervals) goes silent and its leases
//! fail. So the agent reports every interval, lists every lease it has no reason to doubt,
//! and drops a lease from the list only when it knows the lease is not being served: its
//! job was lost, or its GPUs are missing. It never ends a lease and never states hours.

pub mod cgroups;
pub mod client;
pub mod config;
pub mod durable;
pub mod files;
pub mod gpu;
pub mod jobs;
pub mod keys;
pub mod report;
pub mod sandbox;

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::SigningKey;
use tracing::{error, info, warn};

use crate::client::{Client, ClientError, LeaseInfo};
use crate::config::Config;
use crate::gpu::{GpuIdentity, GpuSource, SimulatedGpus};
use crate::report::{Flushed, Outbox, Sequence};

/// Why the agent could not open or do a round of its work.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Gpu(#[from] gpu::GpuError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Job(#[from] jobs::JobError),
    #[error(transparent)]
    Store(#[from] report::StoreError),
    #[error(transparent)]
    Api(#[from] ClientError),
    /// The ask's state file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The ask's state file does not parse: the ask it named is unknown, so every open ask
    /// of the node is withdrawn and a new one placed.
    #[error("the ask's state file {} is damaged", path.display())]
    DamagedAsk {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The configured GPU source; a simulated node's ids derive from its name, so they stay the
/// same across restarts.
pub fn open_source(config: &Config) -> Result<Box<dyn GpuSource>, gpu::GpuError> {
    let simulated = (config.source == "simulated").then(|| {
        SimulatedGpus::new(
            &config.simulated.name,
            config.simulated.count,
            config.simulated.vram_mb,
            config
                .node
                .bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b)),
        )
    });
    gpu::open_source(&config.source, simulated)
}

/// The ask the agent keeps: its client order id (taken before placing) and, once placed,
/// its order id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct AskState {
    client_id: String,
    order: Option<u64>,
}

/// Writes the ask's state whole and durably ([`durable::write_atomic`]).
fn save_ask(path: &Path, ask: &AskState) -> Result<(), AgentError> {
    let json = serde_json::to_vec(ask).expect("a string and a number serialize");
    durable::write_atomic(path, &json, 0o600)?;
    Ok(())
}

/// How far the agent's clock may be from the engine's. A lease the market has not shown
/// ended is listed until this long after its end by the agent's clock, so a clock that runs
/// ahead never drops a lease the engine still holds (listing one the engine has ended is
/// ignored by it).
const CLOCK_SKEW: TimeDelta = TimeDelta::seconds(60);

/// A lease the market holds open on this node (created or running), as the agent last read
/// it. Kept in `state/leases.json`, so a restarted agent lists the leases it knew before the
/// API answers again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenLease {
    pub id: u64,
    pub gpus: u32,
    pub ends_at: DateTime<Utc>,
    /// The buyer gave it a job.
    pub job: bool,
}

impl From<&LeaseInfo> for OpenLease {
    fn from(l: &LeaseInfo) -> OpenLease {
        OpenLease {
            id: l.id,
            gpus: l.gpus,
            ends_at: l.ends_at,
            job: l.job.is_some(),
        }
    }
}

/// The known open leases in `path`. A damaged file is read as none (and said so): the
/// next read of the market gives them again.
fn load_leases(path: &Path) -> Result<Vec<OpenLease>, AgentError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            error!(path = %path.display(), error = %e,
                   "the known leases' file is damaged; they are read from the market again");
            Vec::new()
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// The node's open leases as the market has them now.
struct MarketLeases {
    /// By id, each once.
    leases: Vec<LeaseInfo>,
    /// They are all of them: every page was whole, and their GPUs add up to what the engine
    /// holds in the node's leases. Only then does a lease's absence mean it ended.
    all: bool,
}

/// What one [`Agent::step`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// Asks placed, resized or withdrawn.
    pub asks_changed: usize,
    pub started: usize,
    /// Jobs refused through the buyer's fault ([`jobs::JobStatus::Refused`]).
    pub refused: usize,
    /// Jobs stopped because the market ended their lease.
    pub cancelled: usize,
    /// Jobs whose log tail and outcome went to the buyer.
    pub outcomes_sent: usize,
    /// The leases this round's report listed healthy; `None` when there was no report (the
    /// GPUs could not be read).
    pub healthy_leases: Option<Vec<u64>>,
    pub flushed: Flushed,
}

/// A running agent: its source, key, outbox and API client.
pub struct Agent {
    pub config: Config,
    pub source: Box<dyn GpuSource>,
    pub gpus: Vec<GpuIdentity>,
    pub key: SigningKey,
    pub outbox: Outbox,
    pub jobs: jobs::Runner,
    sequence: Sequence,
    /// Client order ids for asks.
    ask_ids: Sequence,
    /// The latest readings, for the health of each GPU.
    last: Vec<gpu::GpuReading>,
    /// The node's open leases as last read from the market, by id.
    leases: Vec<OpenLease>,
    /// What the latest report listed healthy.
    last_healthy: Vec<u64>,
    client: Client,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node", &self.config.node)
            .field("source", &self.source.kind())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Opens the GPU source, the key (made at first start) and the state.
    pub fn open(config: Config) -> Result<Agent, AgentError> {
        let mut source = open_source(&config)?;
        let gpus = source.discover()?;
        if gpus.is_empty() {
            return Err(gpu::GpuError::NoGpus(source.kind()).into());
        }
        info!(source = ?source.kind(), gpus = gpus.len(), "GPUs discovered");
        if let Some(every) = config.wrong_frames {
            warn!(
                every,
                "DISHONEST MODE: rendered frames are changed before upload (tests and demos only)"
            );
        }
        let key = keys::load_or_create(&config.state_dir.join("node.key"))?;
        let api_key = keys::read_private(&config.api_key_file)?;
        let outbox = Outbox::open(&config.state_dir, config.outbox_capacity)?;
        let sequence = Sequence::open(config.state_dir.join("sequence"))?;
        let ask_ids = Sequence::open(config.state_dir.join("ask-ids"))?;
        let vendor = if config.source == "rocm" {
            jobs::Vendor::Amd
        } else {
            jobs::Vendor::Nvidia
        };
        let mut jobs = jobs::Runner::open(&config.state_dir, vendor, &config.sandbox)?;
        jobs.name_gpus(
            gpus.iter()
                .map(|g| {
                    let name = sandbox::GpuName {
                        node: g.device_node.clone(),
                        // NVML's UUIDs, which CUDA takes in CUDA_VISIBLE_DEVICES.
                        visible_id: (vendor == jobs::Vendor::Nvidia && g.uuid.starts_with("GPU-"))
                            .then(|| g.uuid.clone()),
                    };
                    (g.index, name)
                })
                .collect(),
        );
        if outbox.set_aside_damaged()? > 0 {
            jobs.report_starts_again()?;
        }
        let leases = load_leases(&config.state_dir.join("leases.json"))?;
        let client = Client::new(&config.api_url, api_key.trim());
        Ok(Agent {
            config,
            source,
            gpus,
            key,
            outbox,
            jobs,
            sequence,
            ask_ids,
            last: Vec::new(),
            leases,
            last_healthy: Vec::new(),
            client,
        })
    }

    /// Points the agent at another API address (after a move, or in tests).
    pub fn set_api_url(&mut self, url: &str, api_key: &str) {
        self.client = Client::new(url, api_key);
    }

    /// Registers the node's public key with the API (again is harmless).
    pub fn register(&self) -> Result<(), ClientError> {
        self.client.register_node(
            &self.config.node,
            &keys::hex(self.key.verifying_key().as_bytes()),
        )
    }

    /// The node's open leases as the agent knows them (from the market, or from before a
    /// restart until the market answers).
    pub fn open_leases(&self) -> &[OpenLease] {
        &self.leases
    }

    /// Samples the GPUs, signs a report (the GPUs, `leases_started`, the leases healthy
    /// now, the outputs of jobs that ended and no report named yet) and puts it in the
    /// outbox.
    pub fn report(&mut self, leases_started: &[u64]) -> Result<u64, AgentError> {
        let readings = self.source.sample()?;
        let healthy = self.healthy_leases(&readings)?;
        let outputs: Vec<contract::JobOutputs> = self
            .jobs
            .jobs()?
            .into_iter()
            .filter(|j| !j.outputs_reported)
            .filter_map(|j| j.outputs)
            .collect();
        let sequence = self.sequence.take()?;
        let signed = report::sign(
            &self.key,
            &self.config.node,
            &self.config.class,
            sequence,
            Utc::now(),
            self.source.kind(),
            &self.gpus,
            &readings,
            leases_started,
            &healthy,
            &outputs,
        );
        self.outbox.push(&signed)?;
        for out in &outputs {
            self.jobs.mark_outputs_reported(out.lease)?;
        }
        self.last = readings;
        self.last_healthy = healthy;
        Ok(sequence)
    }

    /// The known open leases this node serves now, by id: every one not past its end (by
    /// [`CLOCK_SKEW`]) whose job is not lost and whose GPUs are in `readings`. A lease
    /// whose job has not been given is healthy while enough offered GPUs are present and
    /// idle for it (lowest lease first); one whose job was given but never started here
    /// (no free GPU, or it did not spawn) is not.
    ///
    /// A GPU is present when `readings` read it, its memory size included: a GPU that
    /// answers nothing (fallen off the bus) is missing. Heat and ECC errors only withdraw
    /// the ask; they do not fail a buyer's lease.
    fn healthy_leases(&self, readings: &[gpu::GpuReading]) -> Result<Vec<u64>, AgentError> {
        let now = Utc::now();
        let now_ms = now.timestamp_millis().max(0) as u64;
        let present = |index: u32| {
            readings
                .iter()
                .any(|r| r.index == index && r.memory_total_mb.is_some())
        };
        let jobs = self.jobs.jobs()?;
        let held: Vec<u32> = jobs
            .iter()
            .filter(|j| j.holds_gpus(now_ms))
            .flat_map(|j| j.gpus.iter().copied())
            .collect();
        let mut idle = self
            .offered()
            .into_iter()
            .filter(|i| present(*i) && !held.contains(i));
        let mut healthy = Vec::new();
        for lease in self.leases.iter().filter(|l| now < l.ends_at + CLOCK_SKEW) {
            let serving = match jobs.iter().find(|j| j.lease == lease.id) {
                // A job still `starting` did not spawn: it is lost at the next poll.
                Some(job) => {
                    !job.lease_ended
                        && !matches!(
                            job.status,
                            jobs::JobStatus::Lost | jobs::JobStatus::Starting
                        )
                        && job.gpus.iter().all(|g| present(*g))
                }
                // Given, and not started though its term is not over.
                None if lease.job && now < lease.ends_at => false,
                None => idle.by_ref().take(lease.gpus as usize).count() == lease.gpus as usize,
            };
            if serving {
                healthy.push(lease.id);
            }
        }
        Ok(healthy)
    }

    /// One round of the agent's work, meant to run every `interval_secs`:
    ///
    /// 1. brings the jobs up to date (exits; jobs at their lease's end killed with their
    ///    process group; jobs whose process is gone without an exit status lost);
    /// 2. reads the node's open leases from the market: stops the jobs of leases it ended
    ///    and starts the jobs of new ones, to be killed at the lease's end (`ends_at`);
    /// 3. reports: telemetry, the heartbeat, the starts not yet reported, and the leases
    ///    healthy now;
    /// 4. sends the outbox, and keeps the ask to the free healthy GPUs;
    /// 5. sends the log tail and outcome of each job that ended, for its buyer. The lease
    ///    goes on (it is the buyer's time) until the buyer stops it or its term ends.
    ///
    /// The API being away only postpones the parts that need it; the report is made all
    /// the same, from the leases known before, and waits in the outbox.
    pub fn step(&mut self) -> Result<Step, AgentError> {
        let mut step = Step::default();
        self.jobs.poll()?;
        self.send_outputs()?;
        match self.read_leases() {
            Ok(market) => self.follow(market, &mut step)?,
            Err(e) => info!(error = %e, "leases not read this round; the known ones are listed"),
        }
        let unreported: Vec<u64> = self
            .jobs
            .jobs()?
            .iter()
            // Spawned: never one still `starting` (it did not spawn) or lost.
            .filter(|j| {
                !j.start_reported
                    && !matches!(j.status, jobs::JobStatus::Lost | jobs::JobStatus::Starting)
            })
            .map(|j| j.lease)
            .collect();
        match self.report(&unreported) {
            Ok(_) => {
                for lease in &unreported {
                    self.jobs.mark_start_reported(*lease)?;
                }
                step.healthy_leases = Some(self.last_healthy.clone());
            }
            // Nothing is known of the GPUs this round: no report rather than a false one.
            // The heartbeat timeout is three intervals, so one such round fails nothing.
            Err(AgentError::Gpu(e)) => {
                warn!(error = %e, "the GPUs could not be read: no report this round")
            }
            Err(e) => return Err(e),
        }
        // The heartbeat goes out before anything else waits on the API.
        step.flushed = self.flush()?;
        if step.flushed.damaged > 0 {
            self.jobs.report_starts_again()?;
        }
        // After the report: the health checks use this round's readings.
        if self.config.offer.is_some() {
            if let Err(e) = self.keep_ask(&mut step) {
                info!(error = %e, "the ask was not updated this round");
            }
        }
        for job in self.jobs.jobs()? {
            let Some(outcome) = job.outcome().filter(|_| !job.outcome_sent) else {
                continue;
            };
            match self
                .client
                .job_log(job.lease, &self.jobs.log_tail(job.lease)?, Some(&outcome))
            {
                Ok(()) => {
                    self.jobs.mark_outcome_sent(job.lease)?;
                    step.outcomes_sent += 1;
                }
                Err(ClientError::Refused { code, message }) => {
                    // Asking again gets the same answer.
                    warn!(lease = job.lease, %code, message, "the job's outcome was refused");
                    self.jobs.mark_outcome_sent(job.lease)?;
                }
                Err(e) => info!(lease = job.lease, error = %e, "the job's outcome not sent yet"),
            }
        }
        Ok(step)
    }

    /// Uploads what each job that is over wrote (its `/job/out`, its whole log), so the next
    /// report can name it. The API being away postpones it; a refusal (the buyer's quota,
    /// outputs already sealed) is recorded and not tried again.
    fn send_outputs(&self) -> Result<(), AgentError> {
        for job in self.jobs.jobs()? {
            if !job.status.is_over()
                || matches!(job.status, jobs::JobStatus::Refused { .. })
                || job.outputs.is_some()
                || job.outputs_refused.is_some()
            {
                continue;
            }
            let gpus = job
                .gpus
                .iter()
                .filter_map(|i| self.gpus.iter().find(|g| g.index == *i))
                .map(|g| g.uuid.clone())
                .collect();
            if let Some(every) = self.config.wrong_frames {
                files::spoil_frames(&self.jobs.work_dir(job.lease).join("out"), every);
            }
            let sent = files::upload_outputs(
                self.client.api(),
                job.lease,
                &self.jobs.work_dir(job.lease).join("out"),
                &self.jobs.log_path(job.lease),
                gpus,
            );
            match sent {
                Ok(outputs) => {
                    info!(lease = job.lease, manifest = %outputs.manifest, "the job's outputs are stored");
                    self.jobs.set_outputs(job.lease, Ok(outputs))?;
                    // Kept in the store now: the node's disk is freed.
                    let sandbox = self.jobs.work_dir(job.lease);
                    if let Err(e) = std::fs::remove_dir_all(sandbox.parent().expect("per lease")) {
                        warn!(lease = job.lease, error = %e, "the job's directory was not removed");
                    }
                }
                Err(e) if e.is_transient() => {
                    info!(lease = job.lease, error = %e, "the job's outputs not sent yet")
                }
                Err(e) => {
                    warn!(lease = job.lease, error = %e, "the job's outputs were refused");
                    self.jobs.set_outputs(job.lease, Err(e.to_string()))?;
                }
            }
        }
        Ok(())
    }

    /// The node's open leases as the market has them: `created` read before `running` (a
    /// lease only moves forward, so one open through both reads is in at least one), then
    /// the GPUs the engine holds in the node's leases, to tell whether that is all of them.
    fn read_leases(&self) -> Result<MarketLeases, ClientError> {
        let created = self.client.leases("created")?;
        let running = self.client.leases("running")?;
        let whole = created.complete && running.complete;
        let mut by_id = std::collections::BTreeMap::new();
        for lease in created.leases.into_iter().chain(running.leases) {
            if lease.node == self.config.node {
                // Read as running after created: the later state.
                by_id.insert(lease.id, lease);
            }
        }
        let leases: Vec<LeaseInfo> = by_id.into_values().collect();
        let gpus: u64 = leases.iter().map(|l| u64::from(l.gpus)).sum();
        let all = whole
            && match self.client.node_state(&self.config.node, None) {
                Ok((leased, _)) => u64::from(leased) == gpus,
                Err(e) => {
                    info!(error = %e, "the engine's count of leased GPUs not read this round");
                    false
                }
            };
        Ok(MarketLeases { leases, all })
    }

    /// Follows the market's leases: stops the jobs of leases it ended (only when the read
    /// is known to hold all of them), starts the jobs of new ones, and keeps the leases
    /// known.
    fn follow(&mut self, market: MarketLeases, step: &mut Step) -> Result<(), AgentError> {
        let now = Utc::now();
        if market.all {
            for job in self.jobs.jobs()? {
                if job.lease_ended || market.leases.iter().any(|l| l.id == job.lease) {
                    continue;
                }
                let was_running = !job.status.is_over();
                self.jobs.lease_ended(job.lease)?;
                if was_running {
                    info!(lease = job.lease, "the market ended the lease: job stopped");
                    step.cancelled += 1;
                }
            }
        }
        for lease in market.leases.iter().filter(|l| l.status == "created") {
            let Some(spec) = lease.job.clone() else {
                continue;
            };
            if lease.ends_at <= now || self.jobs.get(lease.id)?.is_some() {
                continue;
            }
            // Its image and inputs, fetched and verified before anything runs. What the
            // buyer got wrong is a refusal, never a provider failure: the lease keeps its
            // GPUs and stays healthy, and the buyer is told why nothing ran.
            let prepared = if spec.network && !self.config.sandbox.network {
                Err(
                    "the job asks to reach the network, which this provider does not offer"
                        .to_owned(),
                )
            } else {
                match self.prepare(lease.id, &spec) {
                    Ok(image) => Ok(image),
                    Err(e) if e.is_buyer_fault() => Err(e.to_string()),
                    Err(e) => {
                        warn!(lease = lease.id, error = %e,
                              "the job's files are not ready: it is not started this round");
                        continue;
                    }
                }
            };
            let image = match prepared {
                Ok(image) => image,
                Err(why) => {
                    if let Some(gpus) = self.free_gpus(lease.gpus)? {
                        warn!(lease = lease.id, %why, "the job is refused");
                        self.jobs.refuse(lease.id, spec, gpus, lease.ends_at, why)?;
                        step.refused += 1;
                    }
                    continue;
                }
            };
            let Some(gpus) = self.free_gpus(lease.gpus)? else {
                warn!(
                    lease = lease.id,
                    gpus = lease.gpus,
                    "not enough free GPUs for the lease: it is not listed healthy"
                );
                continue;
            };
            match self
                .jobs
                .start(lease.id, spec, gpus, lease.ends_at, image.as_deref())
            {
                Ok(_) => {
                    info!(lease = lease.id, ends_at = %lease.ends_at, "job started");
                    step.started += 1;
                }
                Err(e) => warn!(
                    lease = lease.id,
                    error = %e,
                    "the job did not start: its lease is not listed healthy"
                ),
            }
        }
        let mut known: Vec<OpenLease> = market.leases.iter().map(OpenLease::from).collect();
        if !market.all {
            // Not shown now, but not known to have ended either: kept to its end.
            for old in &self.leases {
                if now < old.ends_at + CLOCK_SKEW && !known.iter().any(|l| l.id == old.id) {
                    known.push(old.clone());
                }
            }
            known.sort_by_key(|l| l.id);
        }
        if known != self.leases {
            let json = serde_json::to_vec(&known).expect("numbers, times and flags serialize");
            durable::write_atomic(&self.config.state_dir.join("leases.json"), &json, 0o600)?;
            self.leases = known;
        }
        Ok(())
    }

    /// The job's image, unpacked (none: the host's base), and its inputs in place.
    fn prepare(
        &self,
        lease: u64,
        spec: &jobs::JobSpec,
    ) -> Result<Option<PathBuf>, files::FileError> {
        let image = match &spec.image {
            Some(cid) => {
                let manifest =
                    contract::Digest::parse(cid).map_err(|e| files::FileError::BadImage {
                        manifest: contract::Digest::of(cid.as_bytes()),
                        why: e.to_string(),
                    })?;
                Some(files::image(
                    self.client.api(),
                    &self.config.state_dir.join("images"),
                    manifest,
                    self.config.sandbox.max_image_mb.saturating_mul(1 << 20),
                )?)
            }
            None => None,
        };
        if !spec.inputs.is_empty() {
            let dir = self.jobs.input_dir(lease);
            std::fs::create_dir_all(&dir).map_err(|source| files::FileError::Io {
                path: dir.clone(),
                source,
            })?;
            files::fetch_inputs(self.client.api(), &dir, &spec.inputs)?;
        }
        Ok(image)
    }

    /// Keeps one ask in the book for the GPUs that are offered, healthy, and not in a lease
    /// that has not ended: places it, resizes it, or withdraws it.
    ///
    /// The ask and the GPUs in running leases come from the engine in one read
    /// (`nodeState`), never from the projections, so neither a lagging projection nor a fill
    /// between two reads can make the agent place a second ask or offer a GPU a lease took.
    fn keep_ask(&mut self, step: &mut Step) -> Result<(), AgentError> {
        let offer = self.config.offer.clone().expect("called with an offer");
        let ours = self.gpus_in_jobs()?;
        // Healthy: not too hot, no more ECC errors than allowed, and not busy with a process
        // that is not one of our jobs (the owner gaming on it, say).
        let healthy = |index: u32| {
            self.last.iter().find(|r| r.index == index).is_none_or(|r| {
                r.temperature_c.is_none_or(|t| t <= offer.max_temperature_c)
                    && r.ecc_errors.is_none_or(|e| e <= offer.max_ecc_errors)
                    && (ours.contains(&index) || r.processes.as_ref().is_none_or(Vec::is_empty))
            })
        };
        let usable = self.offered().into_iter().filter(|i| healthy(*i)).count() as u32;
        let path = self.config.state_dir.join("ask.json");
        let mut ask: Option<AskState> = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(ask) => Some(ask),
                Err(source) => {
                    let damage = AgentError::DamagedAsk {
                        path: path.clone(),
                        source,
                    };
                    error!(error = %damage, "withdrawing every open ask of the node");
                    // The file goes only once they are withdrawn: an API that is away leaves
                    // it for the next round.
                    for (order, _, _) in self.client.open_asks(&self.config.node)? {
                        self.client.cancel_order(order)?;
                    }
                    std::fs::remove_file(&path)?;
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        // A placement a crash interrupted: placing again with the same client order id
        // returns the first order if there was one.
        if let Some(AskState {
            client_id,
            order: None,
        }) = &ask
        {
            let placed = AskState {
                client_id: client_id.clone(),
                order: Some(self.place(client_id, &offer, usable.max(1))?),
            };
            save_ask(&path, &placed)?;
            ask = Some(placed);
        }
        // One read of the engine: the leases and the ask at the same instant, so a fill is
        // seen in both or in neither.
        let order = ask.as_ref().and_then(|a| a.order);
        let (leased, resting) = self.client.node_state(&self.config.node, order)?;
        let resting = order.zip(resting);
        let wanted = usable.saturating_sub(leased);
        match resting {
            Some((order, _)) if wanted == 0 => {
                self.client.cancel_order(order)?;
                std::fs::remove_file(&path)?;
                info!(order, "ask withdrawn: no free healthy GPU");
                step.asks_changed += 1;
            }
            Some((order, (filled, remaining))) if wanted != remaining => {
                self.client.amend_ask(order, filled + wanted)?;
                info!(order, from = remaining, to = wanted, "ask resized");
                step.asks_changed += 1;
            }
            Some(_) => {}
            None if wanted > 0 => {
                let node_hash = self
                    .config
                    .node
                    .bytes()
                    .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
                    });
                // Unique per provider account across its nodes and restarts.
                let client_id =
                    ((u128::from(node_hash) << 64) | u128::from(self.ask_ids.take()?)).to_string();
                save_ask(
                    &path,
                    &AskState {
                        client_id: client_id.clone(),
                        order: None,
                    },
                )?;
                let order = self.place(&client_id, &offer, wanted)?;
                save_ask(
                    &path,
                    &AskState {
                        client_id,
                        order: Some(order),
                    },
                )?;
                info!(order, gpus = wanted, "ask placed");
                step.asks_changed += 1;
            }
            None => {
                if ask.is_some() {
                    // Filled, cancelled or expired in the market.
                    std::fs::remove_file(&path)?;
                }
            }
        }
        Ok(())
    }

    fn place(&self, client_id: &str, offer: &config::Offer, gpus: u32) -> Result<u64, ClientError> {
        let until = Utc::now() + chrono::TimeDelta::hours(i64::from(offer.hours_ahead));
        self.client.place_ask(
            client_id,
            &self.config.class,
            offer,
            &self.config.node,
            &self.config.region,
            gpus,
            until,
        )
    }

    /// The GPUs the node's unfinished jobs run on.
    fn gpus_in_jobs(&self) -> Result<Vec<u32>, AgentError> {
        Ok(self
            .jobs
            .jobs()?
            .iter()
            .filter(|j| !j.status.is_over())
            .flat_map(|j| j.gpus.clone())
            .collect())
    }

    /// The GPUs the node offers: the configured ones that exist, or all.
    fn offered(&self) -> Vec<u32> {
        let chosen = self.config.offer.as_ref().and_then(|o| o.gpus.as_ref());
        self.gpus
            .iter()
            .map(|g| g.index)
            .filter(|i| chosen.is_none_or(|c| c.contains(i)))
            .collect()
    }

    /// `count` offered GPU indices no other lease's job holds and the last readings did
    /// not miss, lowest first.
    fn free_gpus(&self, count: u32) -> Result<Option<Vec<u32>>, AgentError> {
        let now_ms = Utc::now().timestamp_millis().max(0) as u64;
        let held: Vec<u32> = self
            .jobs
            .jobs()?
            .iter()
            .filter(|j| j.holds_gpus(now_ms))
            .flat_map(|j| j.gpus.clone())
            .collect();
        let missing = |i: u32| {
            !self.last.is_empty()
                && !self
                    .last
                    .iter()
                    .any(|r| r.index == i && r.memory_total_mb.is_some())
        };
        let free: Vec<u32> = self
            .offered()
            .into_iter()
            .filter(|i| !held.contains(i) && !missing(*i))
            .take(count as usize)
            .collect();
        Ok((free.len() == count as usize).then_some(free))
    }

    /// Sends what the outbox holds.
    pub fn flush(&self) -> Result<Flushed, report::StoreError> {
        self.outbox.flush(&self.client)
    }
}
