//! `gpumarket`'s integration tests: the real binary against real logs and a real Postgres.

mod bridge;
mod cosmjs;
mod crash;
mod e2e;
mod metered;
mod projector_crash;
