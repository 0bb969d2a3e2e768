//! `node_keys`, `node_reports`, `gpu_samples` and `node_flags`: the keys nodes sign with,
//! what their signed reports said, and the nodes flagged for naming another node's GPU.

use contract::{AccountId, NodeId, NodeReport};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Bytea, Float, Integer, Nullable, Text, Timestamptz};

use crate::read::{bad, param};
use crate::LedgerError;

/// What registering a node's key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    New,
    /// The node had this key already.
    Again,
    /// The node is registered with another key: nothing changed.
    OtherKey,
}

/// The ed25519 public key a provider registered for `node`, if any.
pub fn node_key(
    conn: &mut PgConnection,
    provider: AccountId,
    node: NodeId,
) -> Result<Option<[u8; 32]>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bytea)]
        public_key: Vec<u8>,
    }
    let row: Option<Row> =
        diesel::sql_query("SELECT public_key FROM node_keys WHERE provider = $1 AND node = $2")
            .bind::<BigInt, _>(param(provider.0)?)
            .bind::<Text, _>(node.as_str())
            .get_result(conn)
            .optional()?;
    row.map(|r| {
        let len = r.public_key.len();
        r.public_key
            .try_into()
            .map_err(|_| bad("node_keys", "public_key", format!("{len} bytes")))
    })
    .transpose()
}

/// Registers `key` for the provider's node, unless the node has another key: a stolen
/// provider key must not be able to swap a node's identity silently.
pub fn register_node_key(
    conn: &mut PgConnection,
    provider: AccountId,
    node: NodeId,
    key: [u8; 32],
) -> Result<Registered, LedgerError> {
    conn.transaction(|conn| {
        let inserted = diesel::sql_query(
            "INSERT INTO node_keys (provider, node, public_key) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind::<BigInt, _>(param(provider.0)?)
        .bind::<Text, _>(node.as_str())
        .bind::<Bytea, _>(key.to_vec())
        .execute(conn)?;
        if inserted == 1 {
            return Ok(Registered::New);
        }
        Ok(match node_key(conn, provider, node)? {
            Some(existing) if existing == key => Registered::Again,
            _ => Registered::OtherKey,
        })
    })
}

/// Flags both nodes of a GPU UUID that two nodes reported (`GPU_ALREADY_REGISTERED`): each
/// row names the other node; a repeat moves its `last_at`.
pub fn flag_nodes(
    conn: &mut PgConnection,
    uuid: &str,
    reporter: (AccountId, NodeId),
    owner: (AccountId, NodeId),
) -> Result<(), LedgerError> {
    for ((provider, node), (other_provider, other_node)) in [(reporter, owner), (owner, reporter)] {
        diesel::sql_query(
            "INSERT INTO node_flags (provider, node, uuid, other_provider, other_node) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider, node, uuid, other_provider, \
             other_node) DO UPDATE SET last_at = now()",
        )
        .bind::<BigInt, _>(param(provider.0)?)
        .bind::<Text, _>(node.as_str())
        .bind::<Text, _>(uuid)
        .bind::<BigInt, _>(param(other_provider.0)?)
        .bind::<Text, _>(other_node.as_str())
        .execute(conn)?;
    }
    Ok(())
}

/// Whether the node's report `sequence` was recorded already.
pub fn report_seen(
    conn: &mut PgConnection,
    provider: AccountId,
    node: NodeId,
    sequence: u64,
) -> Result<bool, LedgerError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Bool)]
        found: bool,
    }
    let found: Found = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM node_reports WHERE provider = $1 AND node = $2 \
         AND sequence = $3) AS found",
    )
    .bind::<BigInt, _>(param(provider.0)?)
    .bind::<Text, _>(node.as_str())
    .bind::<BigInt, _>(param(sequence)?)
    .get_result(conn)?;
    Ok(found.found)
}

/// Records a verified report and its samples in one transaction; `false` when it was there
/// already.
pub fn record_report(
    conn: &mut PgConnection,
    provider: AccountId,
    report: &NodeReport,
) -> Result<bool, LedgerError> {
    let provider = param(provider.0)?;
    let sequence = param(report.sequence)?;
    let big = |v: Option<u64>| v.map(param).transpose();
    conn.transaction(|conn| {
        let inserted = diesel::sql_query(
            "INSERT INTO node_reports (provider, node, sequence, at, class, gpus, simulated) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind::<BigInt, _>(provider)
        .bind::<Text, _>(&report.node)
        .bind::<BigInt, _>(sequence)
        .bind::<Timestamptz, _>(report.at)
        .bind::<Text, _>(&report.class)
        .bind::<Integer, _>(i32::try_from(report.gpus.len()).unwrap_or(i32::MAX))
        .bind::<Bool, _>(report.simulated)
        .execute(conn)?;
        if inserted == 0 {
            return Ok(false);
        }
        for gpu in &report.gpus {
            diesel::sql_query(
                "INSERT INTO gpu_samples (provider, node, sequence, gpu, at, name, uuid, \
                 utilisation_pct, memory_used_mb, memory_total_mb, temperature_c, power_w, \
                 power_limit_w, sm_clock_mhz, ecc_errors) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind::<BigInt, _>(provider)
            .bind::<Text, _>(&report.node)
            .bind::<BigInt, _>(sequence)
            .bind::<Integer, _>(i32::try_from(gpu.index).unwrap_or(i32::MAX))
            .bind::<Timestamptz, _>(report.at)
            .bind::<Text, _>(&gpu.name)
            .bind::<Text, _>(&gpu.uuid)
            .bind::<Nullable<Float>, _>(gpu.utilisation_pct)
            .bind::<Nullable<BigInt>, _>(big(gpu.memory_used_mb)?)
            .bind::<Nullable<BigInt>, _>(big(gpu.memory_total_mb)?)
            .bind::<Nullable<Float>, _>(gpu.temperature_c)
            .bind::<Nullable<Float>, _>(gpu.power_w)
            .bind::<Nullable<Float>, _>(gpu.power_limit_w)
            .bind::<Nullable<Integer>, _>(
                gpu.sm_clock_mhz
                    .map(|c| i32::try_from(c).unwrap_or(i32::MAX)),
            )
            .bind::<Nullable<BigInt>, _>(big(gpu.ecc_errors)?)
            .execute(conn)?;
        }
        Ok(true)
    })
}
