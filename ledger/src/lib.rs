//! The ledger: Postgres projections of the event log (double-entry journal, billing,
//! reputation, net positions) and the finance exports.
//!
//! Not built yet: issue 3/7 builds it. Until then this crate is empty on purpose, so that
//! nothing in the workspace pretends to keep books it does not keep.
