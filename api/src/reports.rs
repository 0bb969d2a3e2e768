//! Signed reports from provider agents.
//!
//! A node registers its ed25519 public key once (`registerNode`). Each report is a JSON
//! document the agent signs as bytes; the API verifies the signature over exactly the bytes
//! it received, then parses them, so no re-serialisation can change what was signed. A
//! report proves three things at once: the node is alive (a `Heartbeat` command, which feeds
//! uptime and spec-mismatch checks in the reputation projection), what its GPUs measure now
//! (stored as samples), and which leases' jobs it started (`StartLease` commands).
//!
//! Exactly once where it matters: the commands go to the engine before the report is
//! recorded, so a crash in between makes the agent resend it; a resent report repeats a
//! heartbeat (a zero-length gap, harmless to uptime) and a start the engine already has
//! (`LEASE_ALREADY_STARTED`, ignored). Once recorded, its sequence number makes any later
//! copy an acknowledged no-op.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Bytea, Integer, Nullable, Text, Timestamptz};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::Deserialize;

use crate::errors::ApiError;

/// The most GPUs one node may report.
pub const MAX_GPUS: usize = 64;
/// The most lease starts one report may carry.
pub const MAX_STARTS: usize = 256;

/// One GPU as the agent read it. A capability the agent could not read is absent (null),
/// never zero.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSample {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub utilisation_pct: Option<f32>,
    pub memory_used_mb: Option<u64>,
    pub memory_total_mb: Option<u64>,
    pub temperature_c: Option<f32>,
    pub power_w: Option<f32>,
    pub power_limit_w: Option<f32>,
    pub sm_clock_mhz: Option<u32>,
    pub ecc_errors: Option<u64>,
}

/// What an agent signs and sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeReport {
    pub node: String,
    /// Increases with every report the node sends.
    pub sequence: u64,
    pub at: DateTime<Utc>,
    /// The GPU class the hardware identifies as (a market id, e.g. `H100-80GB`).
    pub class: String,
    /// True when the samples come from the agent's simulated source, not real hardware.
    pub simulated: bool,
    pub gpus: Vec<GpuSample>,
    /// Leases whose jobs the node started since its last report.
    #[serde(default)]
    pub leases_started: Vec<u64>,
}

/// Parses a hex string of exactly `N` bytes.
fn hex_bytes<const N: usize>(what: &str, hex: &str) -> Result<[u8; N], ApiError> {
    let bad = || ApiError::validation(format!("{what}: expected {} hex digits", N * 2));
    if hex.len() != N * 2 {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// A node's public key from its hex form.
pub fn parse_public_key(hex: &str) -> Result<VerifyingKey, ApiError> {
    let bytes = hex_bytes::<32>("publicKey", hex)?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| ApiError::validation("publicKey: not an ed25519 public key"))
}

/// Checks `signature` (hex) over `report` with `key`, then parses and validates the report.
pub fn verify(key: &VerifyingKey, report: &str, signature: &str) -> Result<NodeReport, ApiError> {
    let signature = Signature::from_bytes(&hex_bytes::<64>("signature", signature)?);
    key.verify(report.as_bytes(), &signature).map_err(|_| {
        ApiError::forbidden("the report's signature does not verify with the node's key")
    })?;
    let report: NodeReport =
        serde_json::from_str(report).map_err(|e| ApiError::validation(format!("report: {e}")))?;
    if report.gpus.is_empty() || report.gpus.len() > MAX_GPUS {
        return Err(ApiError::validation(format!(
            "report: 1 to {MAX_GPUS} GPUs (got {})",
            report.gpus.len()
        )));
    }
    if report.leases_started.len() > MAX_STARTS {
        return Err(ApiError::validation(format!(
            "report: at most {MAX_STARTS} lease starts"
        )));
    }
    Ok(report)
}

/// The key a provider registered for `node`, if any.
pub fn node_key(
    conn: &mut PgConnection,
    provider: i64,
    node: &str,
) -> Result<Option<VerifyingKey>, ApiError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bytea)]
        public_key: Vec<u8>,
    }
    let row: Option<Row> =
        diesel::sql_query("SELECT public_key FROM node_keys WHERE provider = $1 AND node = $2")
            .bind::<BigInt, _>(provider)
            .bind::<Text, _>(node)
            .get_result(conn)
            .optional()?;
    row.map(|r| {
        let bytes: [u8; 32] = r
            .public_key
            .try_into()
            .map_err(|_| ApiError::internal("a stored node key is not 32 bytes"))?;
        VerifyingKey::from_bytes(&bytes)
            .map_err(|_| ApiError::internal("a stored node key is not an ed25519 key"))
    })
    .transpose()
}

/// Registers `key` for the provider's node. Registering the same key again is a no-op; a
/// different key for a registered node is refused (a stolen provider key must not be able
/// to swap a node's identity silently).
pub fn register(
    conn: &mut PgConnection,
    provider: i64,
    node: &str,
    key: &VerifyingKey,
) -> Result<(), ApiError> {
    if let Some(existing) = node_key(conn, provider, node)? {
        return if existing == *key {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "node {node} is registered with another key"
            )))
        };
    }
    diesel::sql_query(
        "INSERT INTO node_keys (provider, node, public_key) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind::<BigInt, _>(provider)
    .bind::<Text, _>(node)
    .bind::<Bytea, _>(key.as_bytes().to_vec())
    .execute(conn)?;
    Ok(())
}

/// Whether the node's report `sequence` was recorded already.
pub fn seen(
    conn: &mut PgConnection,
    provider: i64,
    node: &str,
    sequence: i64,
) -> Result<bool, ApiError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Bool)]
        found: bool,
    }
    let found: Found = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM node_reports WHERE provider = $1 AND node = $2 \
         AND sequence = $3) AS found",
    )
    .bind::<BigInt, _>(provider)
    .bind::<Text, _>(node)
    .bind::<BigInt, _>(sequence)
    .get_result(conn)?;
    Ok(found.found)
}

/// Records the report and its samples in one transaction; `false` when it was there already.
pub fn record(
    conn: &mut PgConnection,
    provider: i64,
    report: &NodeReport,
) -> Result<bool, ApiError> {
    let sequence = i64::try_from(report.sequence)
        .map_err(|_| ApiError::validation("report: sequence out of range"))?;
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
        .bind::<Integer, _>(report.gpus.len() as i32)
        .bind::<Bool, _>(report.simulated)
        .execute(conn)?;
        if inserted == 0 {
            return Ok(false);
        }
        for gpu in &report.gpus {
            let big = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
            diesel::sql_query(
                "INSERT INTO gpu_samples (provider, node, sequence, gpu, at, name, uuid, \
                 utilisation_pct, memory_used_mb, memory_total_mb, temperature_c, power_w, \
                 power_limit_w, sm_clock_mhz, ecc_errors) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind::<BigInt, _>(provider)
            .bind::<Text, _>(&report.node)
            .bind::<BigInt, _>(sequence)
            .bind::<Integer, _>(gpu.index as i32)
            .bind::<Timestamptz, _>(report.at)
            .bind::<Text, _>(&gpu.name)
            .bind::<Text, _>(&gpu.uuid)
            .bind::<Nullable<diesel::sql_types::Float>, _>(gpu.utilisation_pct)
            .bind::<Nullable<BigInt>, _>(big(gpu.memory_used_mb))
            .bind::<Nullable<BigInt>, _>(big(gpu.memory_total_mb))
            .bind::<Nullable<diesel::sql_types::Float>, _>(gpu.temperature_c)
            .bind::<Nullable<diesel::sql_types::Float>, _>(gpu.power_w)
            .bind::<Nullable<diesel::sql_types::Float>, _>(gpu.power_limit_w)
            .bind::<Nullable<Integer>, _>(gpu.sm_clock_mhz.map(|c| c as i32))
            .bind::<Nullable<BigInt>, _>(big(gpu.ecc_errors))
            .execute(conn)?;
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn report(sequence: u64) -> String {
        format!(
            r#"{{"node":"node-a","sequence":{sequence},"at":"2026-11-30T12:00:00Z","class":"H100-80GB",
            "simulated":true,"gpus":[{{"index":0,"name":"sim H100","uuid":"GPU-0",
            "utilisation_pct":42.5,"memory_used_mb":1024,"memory_total_mb":81920,
            "temperature_c":55,"power_w":300,"power_limit_w":700,"sm_clock_mhz":1980,
            "ecc_errors":null}}]}}"#
        )
    }

    #[test]
    fn a_signed_report_verifies_and_a_changed_one_does_not() {
        let signer = SigningKey::from_bytes(&[7; 32]);
        let key = parse_public_key(&hex(signer.verifying_key().as_bytes())).unwrap();
        let text = report(1);
        let signature = hex(&signer.sign(text.as_bytes()).to_bytes());
        let parsed = verify(&key, &text, &signature).unwrap();
        assert_eq!(parsed.gpus[0].ecc_errors, None, "missing stays missing");
        assert_eq!(parsed.gpus[0].utilisation_pct, Some(42.5));

        let tampered = text.replace("42.5", "99.5");
        assert_eq!(
            verify(&key, &tampered, &signature).unwrap_err().code,
            "FORBIDDEN"
        );
        let other = SigningKey::from_bytes(&[8; 32]);
        let forged = hex(&other.sign(text.as_bytes()).to_bytes());
        assert_eq!(verify(&key, &text, &forged).unwrap_err().code, "FORBIDDEN");
        assert_eq!(verify(&key, &text, "abc").unwrap_err().code, "VALIDATION");
        assert_eq!(parse_public_key("zz").unwrap_err().code, "VALIDATION");
    }

    #[test]
    fn malformed_reports_are_refused_even_when_signed() {
        let signer = SigningKey::from_bytes(&[9; 32]);
        let key = signer.verifying_key();
        for text in [
            "not json".to_owned(),
            report(1).replace("\"simulated\":true,", ""),
            report(1).replace("\"class\"", "\"colour\":1,\"class\""),
            r#"{"node":"n","sequence":1,"at":"2026-11-30T12:00:00Z","class":"X","simulated":false,"gpus":[]}"#.to_owned(),
        ] {
            let signature = hex(&signer.sign(text.as_bytes()).to_bytes());
            assert_eq!(verify(&key, &text, &signature).unwrap_err().code, "VALIDATION", "{text}");
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
