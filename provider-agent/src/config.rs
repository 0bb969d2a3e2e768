//! The agent's configuration file (TOML), one per node.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a configuration file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("source must be auto, nvml, rocm or simulated (got {0:?})")]
    UnknownSource(String),
    #[error("interval_secs must be at least 1")]
    ZeroInterval,
    #[error("a simulated node needs at least one GPU")]
    NoSimulatedGpus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The market's API, e.g. `http://127.0.0.1:8080`.
    pub api_url: String,
    /// A file holding the provider's API key (role `provider`), relative to this file.
    pub api_key_file: PathBuf,
    /// This node's name in the market (what its asks and reports say).
    pub node: String,
    /// The GPU class the node's GPUs are (the market id, e.g. `H100-80GB`).
    pub class: String,
    pub region: String,
    /// `auto` (NVML), `nvml`, `rocm` or `simulated`. `auto` never falls back to a simulation.
    #[serde(default = "auto")]
    pub source: String,
    /// Seconds between reports (default 10). The market fails the node's leases and
    /// withdraws its asks when it hears nothing for its heartbeat timeout (30 s by default,
    /// three default intervals), so keep this well under that: a round that cannot read the
    /// GPUs sends no report, and one lost round must not make the node silent.
    #[serde(default = "ten")]
    pub interval_secs: u64,
    /// Where the key, the outbox and the sequence number live, relative to this file.
    #[serde(default = "state")]
    pub state_dir: PathBuf,
    /// Reports kept while the API is unreachable.
    #[serde(default = "ten_thousand")]
    pub outbox_capacity: usize,
    /// The made-up node when `source = "simulated"`.
    #[serde(default)]
    pub simulated: Simulated,
    /// How jobs are isolated (`[sandbox]`; bubblewrap with defaults that fit most hosts).
    #[serde(default)]
    pub sandbox: crate::sandbox::SandboxConfig,
    /// What the agent offers in the book; without it the agent places no asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<Offer>,
    /// A cheat, for tests and the demo of verification only: every `wrong_frames`-th
    /// rendered frame (`frame_NNNNNNN.png` in a job's outputs, by frame number) has one
    /// pixel changed before it is uploaded, as a provider that skips work would deliver.
    /// The agent logs a warning at start when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrong_frames: Option<std::num::NonZeroU32>,
}

/// The ask the agent keeps in the book for the node's free, healthy GPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// The least price per GPU-hour, a decimal on the market's tick.
    pub price: String,
    /// The GPU indices offered (default: every GPU found); leased jobs run only on these.
    pub gpus: Option<Vec<u32>>,
    pub vram_gb: u32,
    /// `pcie`, `nvlink`, `nvswitch` or `infinity_fabric`.
    pub interconnect: String,
    /// `nvidia` or `amd`.
    pub vendor: String,
    /// Each ask is offered until this many hours after it is placed.
    #[serde(default = "month_hours")]
    pub hours_ahead: u32,
    /// A GPU hotter than this is withdrawn.
    #[serde(default = "eighty_five")]
    pub max_temperature_c: f32,
    /// A GPU with more uncorrected ECC errors than this is withdrawn.
    #[serde(default)]
    pub max_ecc_errors: u64,
}

fn month_hours() -> u32 {
    720
}
fn eighty_five() -> f32 {
    85.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Simulated {
    pub name: String,
    pub count: u32,
    pub vram_mb: u64,
}

impl Default for Simulated {
    fn default() -> Self {
        Simulated {
            name: "H100-80GB".to_owned(),
            count: 8,
            vram_mb: 81_920,
        }
    }
}

fn auto() -> String {
    "auto".to_owned()
}
/// The default report interval, in seconds: a third of the markets' default heartbeat
/// timeout.
pub const DEFAULT_INTERVAL_SECS: u64 = 10;

fn ten() -> u64 {
    DEFAULT_INTERVAL_SECS
}
fn state() -> PathBuf {
    PathBuf::from("state")
}
fn ten_thousand() -> usize {
    10_000
}

impl Config {
    /// Reads and checks the file; relative paths in it are taken from its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.api_key_file = base.join(&config.api_key_file);
        config.state_dir = base.join(&config.state_dir);
        if !["auto", "nvml", "rocm", "simulated"].contains(&config.source.as_str()) {
            return Err(ConfigError::UnknownSource(config.source));
        }
        if config.interval_secs == 0 {
            return Err(ConfigError::ZeroInterval);
        }
        if config.source == "simulated" && config.simulated.count == 0 {
            return Err(ConfigError::NoSimulatedGpus);
        }
        Ok(config)
    }
}
