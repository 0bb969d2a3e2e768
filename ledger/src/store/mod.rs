//! The tables the API and the Cosmos bridge write themselves (not projected from the log):
//! API keys, node keys and signed reports, lease jobs, render jobs, and the bridge's transfers, cursor
//! and settlement transactions. Their statements live here, beside the migrations that
//! define them; the API and the bridge decide what to write, this module knows how.

mod blobs;
mod bridge;
mod jobs;
mod keys;
mod nodes;
mod render;

pub use blobs::{
    access, add_ref, blob_size, blobs, claim_unheld, delete_ref, expire_refs, forget_blob,
    held_bytes, output_owner, quota, seal_outputs, set_quota, Access, BlobKind, BlobRow, Deleted,
    Quota, RefAdded,
};
pub use bridge::{
    bridge_backlog, deposit_credited, is_market_account, pending_deposits, record_scan,
    scanned_height, settlement_tx, settlement_tx_broadcast, settlement_tx_finished,
    settlement_tx_waits, since_last_signed, store_settlement_tx, unfinished_settlement_txs,
    BridgeBacklog, PendingDeposit, Seen, SeenTransfer, SettlementTx, TxState,
};
pub use jobs::{job, job_log, submit_job, Job, JobFiles, JobLogged, JobRequest, JobSubmitted};
pub use keys::{insert_key, key, keys, revoke_key, KeyInfo, KeyRecord, Role};
pub use nodes::{flag_nodes, node_key, record_report, register_node_key, report_seen, Registered};
pub use render::{
    lease_charges, render_job, render_jobs_of, running_render_jobs, save_render_job,
    submit_render_job, RenderJobRow, RenderSubmitted,
};
