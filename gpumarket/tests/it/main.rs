//! `gpumarket`'s integration tests: the real binary against real logs and a real Postgres.

mod bridge;
mod crash;
mod projector_crash;
