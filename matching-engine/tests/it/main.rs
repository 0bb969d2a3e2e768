//! The engine's integration tests: one binary, one module per concern.

mod support;

mod checks;
mod constraints;
mod explain;
mod limits;
mod liveness;
mod metering;
mod metering_properties;
mod once;
mod orders;
mod properties;
mod proving;
mod review;
mod risk;
mod settlement;
mod snapshot;
mod storage;
