//! A node's signed report, as its agent writes it and the API reads it: the exact JSON
//! bytes are what the node's ed25519 key signs, so this type is the one definition of
//! those bytes' meaning on both sides.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One GPU as the agent read it. A capability the agent could not read is absent (null),
/// never zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSample {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub utilisation_pct: Option<f32>,
    pub memory_used_mb: Option<u64>,
    pub memory_total_mb: Option<u64>,
    pub temperature_c: Option<f32>,
    pub power_w: Option<f32>,
    pub power_limit_w: Option<f32>,
    pub sm_clock_mhz: Option<u32>,
    pub ecc_errors: Option<u64>,
    /// The GPU's PCI bus id (e.g. `00000000:17:00.0`), where the driver gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
}

/// What an agent signs and sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeReport {
    pub node: String,
    /// Increases with every report the node sends.
    pub sequence: u64,
    pub at: DateTime<Utc>,
    /// The GPU class the hardware identifies as (a market id, e.g. `H100-80GB`).
    pub class: String,
    /// True when the samples come from the agent's simulated source, not real hardware.
    pub simulated: bool,
    pub gpus: Vec<GpuSample>,
    /// Leases whose jobs the node started since its last report.
    #[serde(default)]
    pub leases_started: Vec<u64>,
    /// The node's running leases whose jobs are alive on GPUs present and healthy in this
    /// report. This is the evidence a metered lease is charged by: a lease the node listed
    /// before and no longer lists fails at its last listing (an agent that predates the
    /// field lists none, so its leases are never charged past acknowledgement).
    #[serde(default)]
    pub healthy_leases: Vec<u64>,
}
