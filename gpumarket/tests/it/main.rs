//! `gpumarket`'s integration tests: the real binary against real logs and a real Postgres.

mod bridge;
mod cosmjs;
mod crash;
mod e2e;
mod projector_crash;
