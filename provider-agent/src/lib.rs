//! The provider agent: reads the node's GPUs (NVML, or a clearly labelled simulation), signs
//! a report every interval with the node's ed25519 key, and sends it to the market's API,
//! keeping reports on disk, in order, while the API is unreachable.
//!
//! [`jobs`] runs a lease's job restricted to its GPUs and time, crash-safely. Not built yet
//! (issue 5/7 continues): keeping asks in the book, taking job specs from the API, ROCm SMI.

pub mod client;
pub mod config;
pub mod gpu;
pub mod jobs;
pub mod keys;
pub mod report;

use anyhow::{Context, Result};
use chrono::Utc;
use ed25519_dalek::SigningKey;
use tracing::info;

use crate::client::Client;
use crate::config::Config;
use crate::gpu::{GpuIdentity, GpuSource, SimulatedGpus};
use crate::report::{Flushed, Outbox, Sequence};

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

/// A running agent: its source, key, outbox and API client.
pub struct Agent {
    pub config: Config,
    pub source: Box<dyn GpuSource>,
    pub gpus: Vec<GpuIdentity>,
    pub key: SigningKey,
    pub outbox: Outbox,
    sequence: Sequence,
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
    pub fn open(config: Config) -> Result<Agent> {
        let mut source = open_source(&config)?;
        let gpus = source.discover()?;
        info!(source = ?source.kind(), gpus = gpus.len(), "GPUs discovered");
        let key = keys::load_or_create(&config.state_dir.join("node.key"))?;
        let outbox = Outbox::open(&config.state_dir, config.outbox_capacity)?;
        let sequence = Sequence::open(&config.state_dir)?;
        let api_key = std::fs::read_to_string(&config.api_key_file)
            .with_context(|| format!("reading the API key {}", config.api_key_file.display()))?;
        let client = Client::new(&config.api_url, &api_key);
        Ok(Agent {
            config,
            source,
            gpus,
            key,
            outbox,
            sequence,
            client,
        })
    }

    /// Points the agent at another API address (after a move, or in tests).
    pub fn set_api_url(&mut self, url: &str, api_key: &str) {
        self.client = Client::new(url, api_key);
    }

    /// Registers the node's public key with the API (again is harmless).
    pub fn register(&self) -> Result<(), client::ClientError> {
        self.client.register_node(
            &self.config.node,
            &keys::hex(self.key.verifying_key().as_bytes()),
        )
    }

    /// Samples the GPUs, signs a report and puts it in the outbox.
    pub fn report(&mut self, leases_started: &[u64]) -> Result<u64> {
        let readings = self.source.sample()?;
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
        );
        self.outbox.push(&signed)?;
        Ok(sequence)
    }

    /// Sends what the outbox holds.
    pub fn flush(&self) -> Result<Flushed> {
        self.outbox.flush(&self.client)
    }
}
