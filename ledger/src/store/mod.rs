//! The tables the API writes itself (not projected from the log): API keys, node keys and
//! signed reports, and lease jobs. Their statements live here, beside the migrations that
//! define them; the API decides what to write, this module knows how.

mod jobs;
mod keys;
mod nodes;

pub use jobs::{job, job_log, submit_job, Job, JobLogged, JobSubmitted};
pub use keys::{insert_key, key, keys, revoke_key, KeyInfo, KeyRecord, Role};
pub use nodes::{node_key, record_report, register_node_key, report_seen, Registered};
