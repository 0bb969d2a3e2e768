//! The provider agent: reads the node's GPUs (NVML, or a clearly labelled simulation), signs
//! a report every interval with the node's ed25519 key, and sends it to the market's API,
//! keeping reports on disk, in order, while the API is unreachable.
//!
//! [`Agent::step`] also keeps the node's ask in the book and runs leased jobs ([`jobs`]),
//! restricted to their GPUs and time, crash-safely.

pub mod client;
pub mod config;
pub mod gpu;
pub mod jobs;
pub mod keys;
pub mod report;

use std::path::{Path, PathBuf};

use api_client::ErrorCode;
use chrono::Utc;
use ed25519_dalek::SigningKey;
use tracing::info;

use crate::client::{Client, ClientError};
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
    #[error("reading the API key {}", path.display())]
    ApiKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The ask's state file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The ask's state file does not parse.
    #[error(transparent)]
    AskState(#[from] serde_json::Error),
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

/// Writes `value` as JSON durably (temporary file, fsync, rename).
fn save_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), AgentError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(serde_json::to_string(value)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// What one [`Agent::step`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Asks placed, resized or withdrawn.
    pub asks_changed: usize,
    pub started: usize,
    pub cancelled: usize,
    pub ended: usize,
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
        let key = keys::load_or_create(&config.state_dir.join("node.key"))?;
        let outbox = Outbox::open(&config.state_dir, config.outbox_capacity)?;
        let sequence = Sequence::open(config.state_dir.join("sequence"))?;
        let ask_ids = Sequence::open(config.state_dir.join("ask-ids"))?;
        let vendor = if config.source == "rocm" {
            jobs::Vendor::Amd
        } else {
            jobs::Vendor::Nvidia
        };
        let jobs = jobs::Runner::open(&config.state_dir, vendor)?;
        let api_key =
            std::fs::read_to_string(&config.api_key_file).map_err(|source| AgentError::ApiKey {
                path: config.api_key_file.clone(),
                source,
            })?;
        let client = Client::new(&config.api_url, &api_key);
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

    /// Samples the GPUs, signs a report and puts it in the outbox.
    pub fn report(&mut self, leases_started: &[u64]) -> Result<u64, AgentError> {
        let readings = self.source.sample()?;
        let sequence = self.sequence.take()?;
        self.last = readings.clone();
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
        );
        self.outbox.push(&signed)?;
        Ok(sequence)
    }

    /// One round of the agent's work: start the jobs of new leases on this node, stop jobs
    /// whose lease ended in the market, report (telemetry, heartbeat, the starts not yet
    /// reported), keep the ask to the free healthy GPUs, send the outbox, and end in the
    /// market the leases whose jobs are over. The
    /// API being away only postpones the parts that need it.
    pub fn step(&mut self) -> Result<Step, AgentError> {
        let mut step = Step::default();
        match self.client.leases("created") {
            Ok(leases) => {
                for lease in leases.into_iter().filter(|l| l.node == self.config.node) {
                    let (Some(spec), None) = (lease.job.clone(), self.jobs.get(lease.id)?) else {
                        continue;
                    };
                    let Some(gpus) = self.free_gpus(lease.gpus)? else {
                        tracing::warn!(
                            lease = lease.id,
                            gpus = lease.gpus,
                            "not enough free GPUs for the lease"
                        );
                        continue;
                    };
                    let limit = std::time::Duration::from_secs(u64::from(lease.hours) * 3_600);
                    self.jobs.start(lease.id, spec, gpus, limit)?;
                    info!(lease = lease.id, "job started");
                    step.started += 1;
                }
            }
            Err(e) => info!(error = %e, "leases not read this round"),
        }
        if let Ok(ended) = self.client.leases("ended") {
            for lease in ended {
                if let Some(job) = self.jobs.get(lease.id)? {
                    if !job.status.is_over() {
                        self.jobs.cancel(lease.id)?;
                        // The market ended it: nothing to report back.
                        self.jobs.mark_reported(lease.id)?;
                        step.cancelled += 1;
                    }
                }
            }
        }
        self.jobs.poll()?;
        let unreported: Vec<u64> = self
            .jobs
            .jobs()?
            .iter()
            .filter(|j| !j.start_reported && !matches!(j.status, jobs::JobStatus::Lost))
            .map(|j| j.lease)
            .collect();
        self.report(&unreported)?;
        for lease in &unreported {
            self.jobs.mark_start_reported(*lease)?;
        }
        // After the report: the health checks use this round's readings.
        if self.config.offer.is_some() {
            if let Err(e) = self.keep_ask(&mut step) {
                info!(error = %e, "the ask was not updated this round");
            }
        }
        step.flushed = self.flush()?;
        let now = Utc::now().timestamp_millis().max(0) as u64;
        for job in self.jobs.jobs()? {
            if !job.status.is_over() || job.end_reported || !job.start_reported {
                continue;
            }
            let failed = job.status == jobs::JobStatus::Lost;
            // The buyer's copy of the output first; a failure here only loses the copy.
            let outcome = match &job.status {
                jobs::JobStatus::Exited { code } => format!("exited {code}"),
                jobs::JobStatus::Killed { reason } => format!("killed: {reason}"),
                other => format!("{other:?}").to_lowercase(),
            };
            if let Err(e) =
                self.client
                    .job_log(job.lease, &self.jobs.log_tail(job.lease)?, Some(&outcome))
            {
                info!(lease = job.lease, error = %e, "the job's log was not sent");
            }
            match self
                .client
                .end_lease(job.lease, job.hours_used(now), failed)
            {
                Ok(()) => {
                    self.jobs.mark_reported(job.lease)?;
                    step.ended += 1;
                }
                Err(ClientError::Refused {
                    code: ErrorCode::UnknownLease,
                    ..
                }) => {
                    // Ended already (by the buyer, or by this agent before a crash).
                    self.jobs.mark_reported(job.lease)?;
                }
                Err(e) => info!(lease = job.lease, error = %e, "lease end not reported yet"),
            }
        }
        Ok(step)
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
        let mut ask: Option<AskState> = match std::fs::read_to_string(&path) {
            Ok(text) => Some(serde_json::from_str(&text)?),
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
            let order = self.place(client_id, &offer, usable.max(1))?;
            ask = Some(AskState {
                client_id: client_id.clone(),
                order: Some(order),
            });
            save_json(&path, &ask)?;
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
                save_json(
                    &path,
                    &AskState {
                        client_id: client_id.clone(),
                        order: None,
                    },
                )?;
                let order = self.place(&client_id, &offer, wanted)?;
                save_json(
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

    /// The GPUs the node's unfinished jobs hold.
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

    /// `count` GPU indices no running job uses, lowest first.
    fn free_gpus(&self, count: u32) -> Result<Option<Vec<u32>>, AgentError> {
        let busy = self.gpus_in_jobs()?;
        let free: Vec<u32> = self
            .offered()
            .into_iter()
            .filter(|i| !busy.contains(i))
            .take(count as usize)
            .collect();
        Ok((free.len() == count as usize).then_some(free))
    }

    /// Sends what the outbox holds.
    pub fn flush(&self) -> Result<Flushed, report::StoreError> {
        self.outbox.flush(&self.client)
    }
}
