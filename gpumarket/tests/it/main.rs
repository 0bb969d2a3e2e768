//! `gpumarket`'s integration tests: the real binary against real logs and a real Postgres.

mod crash;
mod projector_crash;
