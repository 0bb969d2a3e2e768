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
    /// What jobs that ended since the last report wrote: by signing this the node states
    /// which of its GPUs produced which output, when. Absent when empty, so reports of agents
    /// that predate it keep their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<JobOutputs>,
}

/// A job's output, by content: its manifest (an [`OutputManifest`]'s JSON) and its whole
/// log, as CIDv1 strings of blobs in the market's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOutputs {
    pub lease: u64,
    pub manifest: String,
    pub log: String,
    /// The UUIDs of the GPUs the job ran on.
    pub gpus: Vec<String>,
}

/// The files a job left in its output directory (`/job/out`): each relative path (normalized,
/// `/`-separated, never `..` or absolute) with the cid and size of its bytes, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputManifest {
    pub lease: u64,
    pub files: Vec<OutputFile>,
    /// What was left out, and why (a link, a device, a name that is not UTF-8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputFile {
    pub path: String,
    pub cid: String,
    pub size: u64,
}

/// Whether `path` is a relative, normalized path (what job inputs and output manifests
/// name): `/`-separated parts, none empty, `.` or `..`, no NUL, at most 1,024 bytes.
pub fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 1_024
        && !path.contains('\0')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && part.len() <= 255)
}
