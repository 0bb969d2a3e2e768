//! `gpumarket`'s integration tests: the real binary against real logs.

mod crash;
