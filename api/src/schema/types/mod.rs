//! The schema's object types, one module per subject. Each is built from the ledger's typed
//! rows or the engine's answers; fields that need more (a job, an explanation) resolve
//! through the same read functions as the queries.

pub mod lease;
pub mod market;
pub mod money;
pub mod order;
pub mod provider;
pub mod settlement;
