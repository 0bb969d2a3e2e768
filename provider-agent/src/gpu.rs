//! GPU discovery and sampling behind one trait, with three sources: NVML (NVIDIA), ROCm SMI
//! (AMD, behind the `rocm` feature because it links `librocm_smi64`) and a simulation for
//! machines without GPUs, which says so in every sample it produces.

use serde::Serialize;

/// Which kind of source produced a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Nvml,
    Rocm,
    /// Invented values: never to be taken for real hardware.
    Simulated,
}

/// What a GPU is. Fields a source cannot read are `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuIdentity {
    pub index: u32,
    pub name: String,
    /// NVIDIA UUID, or the AMD serial / unique id.
    pub uuid: String,
    pub pci_bus_id: Option<String>,
    pub vram_total_mb: Option<u64>,
    pub driver_version: Option<String>,
    /// Its own device node under `/dev`: `nvidiaN` by NVML's minor number (not its index,
    /// which orders by PCI address), AMD's `dri/renderDN` found by its PCI address in sysfs;
    /// `None`: named after its index (`nvidiaI`, `renderD(128+I)`), as simulated ones are.
    pub device_node: Option<String>,
}

/// One reading of one GPU. A capability the source or the GPU does not offer is `None`,
/// never zero.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuReading {
    pub index: u32,
    pub utilisation_pct: Option<f32>,
    pub memory_used_mb: Option<u64>,
    pub memory_total_mb: Option<u64>,
    pub temperature_c: Option<f32>,
    pub power_w: Option<f32>,
    pub power_limit_w: Option<f32>,
    pub sm_clock_mhz: Option<u32>,
    pub ecc_errors: Option<u64>,
    /// Process ids using the GPU, where the source can list them.
    pub processes: Option<Vec<u32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("NVML is not available: {0}")]
    NvmlUnavailable(String),
    #[error("NVML: {0}")]
    Nvml(String),
    #[error("this build has no ROCm SMI support: build with `--features rocm` (needs Debian's librocm-smi-dev)")]
    RocmNotBuilt,
    #[error("ROCm SMI: {0}")]
    Rocm(String),
    #[error("no GPU found by {0:?}")]
    NoGpus(SourceKind),
}

/// A place GPUs are read from.
pub trait GpuSource: Send {
    fn kind(&self) -> SourceKind;
    fn discover(&mut self) -> Result<Vec<GpuIdentity>, GpuError>;
    fn sample(&mut self) -> Result<Vec<GpuReading>, GpuError>;
}

/// A made-up node: `count` GPUs of `name` with `vram_mb` each, whose load moves slowly with
/// time so charts have something to show. Deterministic for a given `seed` and tick.
#[derive(Debug, Clone)]
pub struct SimulatedGpus {
    pub name: String,
    pub count: u32,
    pub vram_mb: u64,
    pub seed: u64,
    tick: u64,
}

impl SimulatedGpus {
    pub fn new(name: &str, count: u32, vram_mb: u64, seed: u64) -> SimulatedGpus {
        SimulatedGpus {
            name: name.to_owned(),
            count,
            vram_mb,
            seed,
            tick: 0,
        }
    }
}

impl GpuSource for SimulatedGpus {
    fn kind(&self) -> SourceKind {
        SourceKind::Simulated
    }

    fn discover(&mut self) -> Result<Vec<GpuIdentity>, GpuError> {
        Ok((0..self.count)
            .map(|index| GpuIdentity {
                index,
                name: format!("{} (simulated)", self.name),
                uuid: format!("SIM-{:016x}-{index}", self.seed),
                pci_bus_id: None,
                vram_total_mb: Some(self.vram_mb),
                driver_version: None,
                device_node: None,
            })
            .collect())
    }

    fn sample(&mut self) -> Result<Vec<GpuReading>, GpuError> {
        self.tick += 1;
        let t = self.tick as f32;
        Ok((0..self.count)
            .map(|index| {
                let phase = (self.seed % 97) as f32 + index as f32 * 1.7;
                let load = 0.5 + 0.45 * ((t / 9.0) + phase).sin();
                GpuReading {
                    index,
                    utilisation_pct: Some((load * 100.0).round()),
                    memory_used_mb: Some((self.vram_mb as f32 * (0.1 + 0.8 * load)) as u64),
                    memory_total_mb: Some(self.vram_mb),
                    temperature_c: Some((35.0 + 45.0 * load).round()),
                    power_w: Some((80.0 + 520.0 * load).round()),
                    power_limit_w: Some(700.0),
                    sm_clock_mhz: Some(1_000 + (980.0 * load) as u32),
                    // A simulated GPU has no ECC memory to count errors in.
                    ecc_errors: None,
                    processes: None,
                }
            })
            .collect())
    }
}

/// NVIDIA GPUs through NVML (`libnvidia-ml.so.1`, loaded at run time).
pub struct Nvml {
    nvml: nvml_wrapper::Nvml,
}

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nvml").finish_non_exhaustive()
    }
}

impl Nvml {
    /// Loads NVML; fails (without panicking) where there is no NVIDIA driver.
    pub fn open() -> Result<Nvml, GpuError> {
        nvml_wrapper::Nvml::init()
            .map(|nvml| Nvml { nvml })
            .map_err(|e| GpuError::NvmlUnavailable(e.to_string()))
    }
}

fn nvml_error(e: nvml_wrapper::error::NvmlError) -> GpuError {
    GpuError::Nvml(e.to_string())
}

impl GpuSource for Nvml {
    fn kind(&self) -> SourceKind {
        SourceKind::Nvml
    }

    fn discover(&mut self) -> Result<Vec<GpuIdentity>, GpuError> {
        let driver = self.nvml.sys_driver_version().ok();
        let count = self.nvml.device_count().map_err(nvml_error)?;
        (0..count)
            .map(|index| {
                let device = self.nvml.device_by_index(index).map_err(nvml_error)?;
                Ok(GpuIdentity {
                    index,
                    name: device.name().map_err(nvml_error)?,
                    uuid: device.uuid().map_err(nvml_error)?,
                    pci_bus_id: device.pci_info().ok().map(|p| p.bus_id),
                    vram_total_mb: device.memory_info().ok().map(|m| m.total >> 20),
                    driver_version: driver.clone(),
                    device_node: device.minor_number().ok().map(|m| format!("nvidia{m}")),
                })
            })
            .collect()
    }

    fn sample(&mut self) -> Result<Vec<GpuReading>, GpuError> {
        use nvml_wrapper::enum_wrappers::device::{
            Clock, EccCounter, MemoryError, TemperatureSensor,
        };
        let count = self.nvml.device_count().map_err(nvml_error)?;
        // A GPU NVML cannot open (fallen off the bus, say) is left out: it is missing from
        // this sample, and only the leases on it fail.
        Ok((0..count)
            .filter_map(|index| {
                let d = self.nvml.device_by_index(index).ok()?;
                let memory = d.memory_info().ok();
                Some(GpuReading {
                    index,
                    utilisation_pct: d.utilization_rates().ok().map(|u| u.gpu as f32),
                    memory_used_mb: memory.as_ref().map(|m| m.used >> 20),
                    memory_total_mb: memory.as_ref().map(|m| m.total >> 20),
                    temperature_c: d.temperature(TemperatureSensor::Gpu).ok().map(|t| t as f32),
                    power_w: d.power_usage().ok().map(|mw| mw as f32 / 1000.0),
                    power_limit_w: d.enforced_power_limit().ok().map(|mw| mw as f32 / 1000.0),
                    sm_clock_mhz: d.clock_info(Clock::SM).ok(),
                    ecc_errors: d
                        .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate)
                        .ok(),
                    processes: d
                        .running_compute_processes()
                        .ok()
                        .map(|ps| ps.into_iter().map(|p| p.pid).collect()),
                })
            })
            .collect())
    }
}

/// Picks the source: `simulated`, `nvml`, `rocm`, or `auto` (NVML if it loads and finds a GPU,
/// else ROCm where built in, else an error: the agent never silently simulates).
pub fn open_source(
    choice: &str,
    simulated: Option<SimulatedGpus>,
) -> Result<Box<dyn GpuSource>, GpuError> {
    match choice {
        "simulated" => {
            Ok(Box::new(simulated.unwrap_or_else(|| {
                SimulatedGpus::new("H100-80GB", 8, 81_920, 1)
            })))
        }
        "nvml" => Ok(Box::new(Nvml::open()?)),
        "rocm" => rocm::open(),
        _ => {
            if let Ok(mut nvml) = Nvml::open() {
                if nvml.discover().is_ok_and(|g| !g.is_empty()) {
                    return Ok(Box::new(nvml));
                }
            }
            let mut rocm = rocm::open()?;
            if rocm.discover()?.is_empty() {
                return Err(GpuError::NoGpus(SourceKind::Rocm));
            }
            Ok(rocm)
        }
    }
}

#[cfg(not(feature = "rocm"))]
mod rocm {
    use super::{GpuError, GpuSource};

    pub fn open() -> Result<Box<dyn GpuSource>, GpuError> {
        Err(GpuError::RocmNotBuilt)
    }
}

/// AMD GPUs through ROCm SMI (`librocm_smi64`; Debian's `librocm-smi-dev`).
#[cfg(feature = "rocm")]
mod rocm {
    use rocm_smi_lib::{RocmSmi, RsmiClkType, RsmiTemperatureMetric, RsmiTemperatureType};

    use super::{GpuError, GpuIdentity, GpuReading, GpuSource, SourceKind};

    pub struct Rocm {
        smi: RocmSmi,
    }

    pub fn open() -> Result<Box<dyn GpuSource>, GpuError> {
        let smi = RocmSmi::init().map_err(|e| GpuError::Rocm(format!("{e:?}")))?;
        Ok(Box::new(Rocm { smi }))
    }

    /// ROCm's packed PCI id: domain << 32 | bus << 8 | device << 3 | function.
    /// The render node of the GPU at PCI address `bus`, as sysfs lists it: an integrated
    /// GPU takes `renderD128` too, so the number is not the ROCm index plus 128.
    fn render_node(bus: &str) -> Option<String> {
        std::fs::read_dir(format!("/sys/bus/pci/devices/{bus}/drm"))
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .find(|n| n.starts_with("renderD"))
            .map(|n| format!("dri/{n}"))
    }

    fn bus_id(bdf: u64) -> String {
        format!(
            "{:04x}:{:02x}:{:02x}.{:x}",
            bdf >> 32,
            (bdf >> 8) & 0xff,
            (bdf >> 3) & 0x1f,
            bdf & 0x7
        )
    }

    impl GpuSource for Rocm {
        fn kind(&self) -> SourceKind {
            SourceKind::Rocm
        }

        // The crate's identifier and power queries call functions Debian's ROCm SMI 5.2 does
        // not have (they would not link), so the name is generic, the id comes from the PCI
        // address, and power is reported missing.
        fn discover(&mut self) -> Result<Vec<GpuIdentity>, GpuError> {
            let count = self.smi.get_device_count();
            Ok((0..count)
                .map(|index| {
                    let pci_bus_id = self
                        .smi
                        .get_device_pcie_data(index)
                        .ok()
                        .map(|p| bus_id(p.id));
                    GpuIdentity {
                        index,
                        name: self.smi.get_device_vbios_version(index).map_or_else(
                            |_| "AMD GPU".to_owned(),
                            |v| format!("AMD GPU (VBIOS {v})"),
                        ),
                        uuid: pci_bus_id
                            .as_ref()
                            .map_or_else(|| format!("AMD-{index}"), |b| format!("AMD-{b}")),
                        device_node: pci_bus_id.as_deref().and_then(render_node),
                        pci_bus_id,
                        vram_total_mb: self
                            .smi
                            .get_device_memory_data(index)
                            .ok()
                            .map(|m| m.vram_total >> 20),
                        driver_version: None,
                    }
                })
                .collect())
        }

        fn sample(&mut self) -> Result<Vec<GpuReading>, GpuError> {
            let count = self.smi.get_device_count();
            Ok((0..count)
                .map(|index| {
                    let memory = self.smi.get_device_memory_data(index).ok();
                    let clock = self
                        .smi
                        .get_device_frequency(index, RsmiClkType::RsmiClkTypeSys)
                        .ok()
                        .and_then(|f| f.supported.get(f.current as usize).copied())
                        .map(|hz| (hz / 1_000_000) as u32);
                    let ecc: u64 = self
                        .smi
                        .get_device_ecc_data(index)
                        .blocks
                        .iter()
                        .filter_map(|s| s.block.as_ref())
                        .map(|b| b.counters.uncorrectable_err)
                        .sum();
                    GpuReading {
                        index,
                        utilisation_pct: self
                            .smi
                            .get_device_busy_percent(index)
                            .ok()
                            .map(|b| b as f32),
                        memory_used_mb: memory.as_ref().map(|m| m.vram_used >> 20),
                        memory_total_mb: memory.as_ref().map(|m| m.vram_total >> 20),
                        temperature_c: self
                            .smi
                            .get_device_temperature_metric(
                                index,
                                RsmiTemperatureType::Edge,
                                RsmiTemperatureMetric::Current,
                            )
                            .ok()
                            .map(|t| t as f32),
                        power_w: None,
                        power_limit_w: None,
                        sm_clock_mhz: clock,
                        ecc_errors: Some(ecc),
                        // The crate does not expose ROCm's process list.
                        processes: None,
                    }
                })
                .collect())
        }
    }
}
