//! The provider agent: GPU telemetry (NVML, ROCm SMI, or a clearly labelled simulation),
//! signed reports, capacity offers and leased jobs.
//!
//! Not built yet: issue 5/7 builds it. Until then this crate is empty on purpose.
