//! Providers as the reputation projection scores them: components, nodes, history, and the
//! telemetry of their signed reports.

use chrono::{DateTime, Utc};
use contract::{AccountId, MarketId, NodeId};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double, Float, Integer, Nullable, Text, Timestamptz};

use super::{param, parsed, plus_one, unsigned, Page};
use crate::LedgerError;

/// A provider's score and the components it is computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub account: AccountId,
    /// 0 to 1000 (the formula is in `reputation`'s docs).
    pub score: u32,
    pub completion: f64,
    pub uptime: f64,
    pub punctuality: f64,
    pub integrity: f64,
    pub leases_completed: u32,
    pub leases_failed: u32,
    pub starts: u32,
    pub starts_on_time: u32,
    pub spec_mismatches: u32,
    pub slashes: u32,
    /// The score the engine matches the provider's asks by: the last `SetReputation` it
    /// applied (`None` until one reached it).
    pub matching_score: Option<u32>,
    pub updated_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct ProviderRow {
    #[diesel(sql_type = BigInt)]
    provider: i64,
    #[diesel(sql_type = Integer)]
    score: i32,
    #[diesel(sql_type = Double)]
    completion: f64,
    #[diesel(sql_type = Double)]
    uptime: f64,
    #[diesel(sql_type = Double)]
    punctuality: f64,
    #[diesel(sql_type = Double)]
    integrity: f64,
    #[diesel(sql_type = Integer)]
    leases_completed: i32,
    #[diesel(sql_type = Integer)]
    leases_failed: i32,
    #[diesel(sql_type = Integer)]
    starts: i32,
    #[diesel(sql_type = Integer)]
    starts_on_time: i32,
    #[diesel(sql_type = Integer)]
    spec_mismatches: i32,
    #[diesel(sql_type = Integer)]
    slashes: i32,
    #[diesel(sql_type = Nullable<Integer>)]
    engine_score: Option<i32>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
}

impl TryFrom<ProviderRow> for Provider {
    type Error = LedgerError;
    fn try_from(r: ProviderRow) -> Result<Provider, LedgerError> {
        const T: &str = "provider_reputation";
        Ok(Provider {
            account: AccountId(unsigned(T, "provider", r.provider)?),
            score: unsigned(T, "score", r.score)?,
            completion: r.completion,
            uptime: r.uptime,
            punctuality: r.punctuality,
            integrity: r.integrity,
            leases_completed: unsigned(T, "leases_completed", r.leases_completed)?,
            leases_failed: unsigned(T, "leases_failed", r.leases_failed)?,
            starts: unsigned(T, "starts", r.starts)?,
            starts_on_time: unsigned(T, "starts_on_time", r.starts_on_time)?,
            spec_mismatches: unsigned(T, "spec_mismatches", r.spec_mismatches)?,
            slashes: unsigned(T, "slashes", r.slashes)?,
            matching_score: r
                .engine_score
                .map(|s| unsigned(T, "engine_score", s))
                .transpose()?,
            updated_at: r.updated_at,
        })
    }
}

const PROVIDER_COLUMNS: &str = "SELECT provider, score, completion, uptime, punctuality, \
     integrity, leases_completed, leases_failed, starts, starts_on_time, spec_mismatches, \
     slashes, engine_score, updated_at FROM provider_reputation";

/// Providers by account (a key that stays put while scores move), after `after`, with a
/// score of at least `min_score` (0: all).
pub fn providers(
    conn: &mut PgConnection,
    after: Option<AccountId>,
    min_score: u32,
    limit: u32,
) -> Result<Page<Provider>, LedgerError> {
    let after = after.map(|a| param(a.0)).transpose()?.unwrap_or(-1);
    let min_score = i32::try_from(min_score).unwrap_or(i32::MAX);
    let rows: Vec<ProviderRow> = diesel::sql_query(format!(
        "{PROVIDER_COLUMNS} WHERE provider > $1 AND score >= $2 ORDER BY provider LIMIT $3"
    ))
    .bind::<BigInt, _>(after)
    .bind::<Integer, _>(min_score)
    .bind::<BigInt, _>(plus_one(limit))
    .load(conn)?;
    let rows = rows
        .into_iter()
        .map(Provider::try_from)
        .collect::<Result<_, _>>()?;
    Ok(Page::of(rows, limit))
}

pub fn provider(
    conn: &mut PgConnection,
    account: AccountId,
) -> Result<Option<Provider>, LedgerError> {
    let row: Option<ProviderRow> =
        diesel::sql_query(format!("{PROVIDER_COLUMNS} WHERE provider = $1"))
            .bind::<BigInt, _>(param(account.0)?)
            .get_result(conn)
            .optional()?;
    row.map(Provider::try_from).transpose()
}

/// A node: what its asks advertise, what its reports say, and its heartbeat uptime.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub node: NodeId,
    pub advertised_class: Option<MarketId>,
    pub advertised_gpus: Option<u32>,
    pub reported_class: Option<MarketId>,
    pub reported_gpus: Option<u32>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub heartbeats: u64,
    pub up_ms: u64,
    pub down_ms: u64,
    /// The reported hardware differs from what the asks advertise.
    pub mismatching: bool,
}

pub fn nodes(conn: &mut PgConnection, provider: AccountId) -> Result<Vec<Node>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        node: String,
        #[diesel(sql_type = Nullable<Text>)]
        advertised_class: Option<String>,
        #[diesel(sql_type = Nullable<Integer>)]
        advertised_gpus: Option<i32>,
        #[diesel(sql_type = Nullable<Text>)]
        reported_class: Option<String>,
        #[diesel(sql_type = Nullable<Integer>)]
        reported_gpus: Option<i32>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        last_heartbeat: Option<DateTime<Utc>>,
        #[diesel(sql_type = BigInt)]
        heartbeats: i64,
        #[diesel(sql_type = BigInt)]
        up_ms: i64,
        #[diesel(sql_type = BigInt)]
        down_ms: i64,
        #[diesel(sql_type = Bool)]
        mismatching: bool,
    }
    const T: &str = "nodes";
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT node, advertised_class, advertised_gpus, reported_class, reported_gpus, \
         last_heartbeat, heartbeats, up_ms, down_ms, mismatching \
         FROM nodes WHERE provider = $1 ORDER BY node",
    )
    .bind::<BigInt, _>(param(provider.0)?)
    .load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(Node {
                node: parsed(T, "node", &r.node)?,
                advertised_class: r
                    .advertised_class
                    .map(|c| parsed(T, "advertised_class", &c))
                    .transpose()?,
                advertised_gpus: r
                    .advertised_gpus
                    .map(|g| unsigned(T, "advertised_gpus", g))
                    .transpose()?,
                reported_class: r
                    .reported_class
                    .map(|c| parsed(T, "reported_class", &c))
                    .transpose()?,
                reported_gpus: r
                    .reported_gpus
                    .map(|g| unsigned(T, "reported_gpus", g))
                    .transpose()?,
                last_heartbeat: r.last_heartbeat,
                heartbeats: unsigned(T, "heartbeats", r.heartbeats)?,
                up_ms: unsigned(T, "up_ms", r.up_ms)?,
                down_ms: unsigned(T, "down_ms", r.down_ms)?,
                mismatching: r.mismatching,
            })
        })
        .collect()
}

/// One GPU's reading from a signed node report. `None`: the agent could not read it.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySample {
    pub node: NodeId,
    pub gpu: u32,
    pub at: DateTime<Utc>,
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
    /// From the agent's simulated source, not real hardware.
    pub simulated: bool,
}

/// The latest samples of a provider's nodes (or one node), newest first.
pub fn telemetry(
    conn: &mut PgConnection,
    provider: AccountId,
    node: Option<NodeId>,
    last: u32,
) -> Result<Vec<TelemetrySample>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        node: String,
        #[diesel(sql_type = Integer)]
        gpu: i32,
        #[diesel(sql_type = Timestamptz)]
        at: DateTime<Utc>,
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Text)]
        uuid: String,
        #[diesel(sql_type = Nullable<Float>)]
        utilisation_pct: Option<f32>,
        #[diesel(sql_type = Nullable<BigInt>)]
        memory_used_mb: Option<i64>,
        #[diesel(sql_type = Nullable<BigInt>)]
        memory_total_mb: Option<i64>,
        #[diesel(sql_type = Nullable<Float>)]
        temperature_c: Option<f32>,
        #[diesel(sql_type = Nullable<Float>)]
        power_w: Option<f32>,
        #[diesel(sql_type = Nullable<Float>)]
        power_limit_w: Option<f32>,
        #[diesel(sql_type = Nullable<Integer>)]
        sm_clock_mhz: Option<i32>,
        #[diesel(sql_type = Nullable<BigInt>)]
        ecc_errors: Option<i64>,
        #[diesel(sql_type = Bool)]
        simulated: bool,
    }
    const T: &str = "gpu_samples";
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT s.node, s.gpu, s.at, s.name, s.uuid, s.utilisation_pct, s.memory_used_mb, \
         s.memory_total_mb, s.temperature_c, s.power_w, s.power_limit_w, s.sm_clock_mhz, \
         s.ecc_errors, r.simulated \
         FROM gpu_samples s JOIN node_reports r USING (provider, node, sequence) \
         WHERE s.provider = $1 AND ($2::text IS NULL OR s.node = $2) \
         ORDER BY s.at DESC, s.node, s.gpu LIMIT $3",
    )
    .bind::<BigInt, _>(param(provider.0)?)
    .bind::<Nullable<Text>, _>(node.map(|n| n.to_string()))
    .bind::<BigInt, _>(i64::from(last))
    .load(conn)?;
    let big = |column, v: Option<i64>| v.map(|v| unsigned(T, column, v)).transpose();
    rows.into_iter()
        .map(|r| {
            Ok(TelemetrySample {
                node: parsed(T, "node", &r.node)?,
                gpu: unsigned(T, "gpu", r.gpu)?,
                at: r.at,
                name: r.name,
                uuid: r.uuid,
                utilisation_pct: r.utilisation_pct,
                memory_used_mb: big("memory_used_mb", r.memory_used_mb)?,
                memory_total_mb: big("memory_total_mb", r.memory_total_mb)?,
                temperature_c: r.temperature_c,
                power_w: r.power_w,
                power_limit_w: r.power_limit_w,
                sm_clock_mhz: r
                    .sm_clock_mhz
                    .map(|c| unsigned(T, "sm_clock_mhz", c))
                    .transpose()?,
                ecc_errors: big("ecc_errors", r.ecc_errors)?,
                simulated: r.simulated,
            })
        })
        .collect()
}

/// A change of a provider's score and what caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReputationChange {
    pub at: DateTime<Utc>,
    /// e.g. `lease_ended:completed` or `spec_mismatch`.
    pub cause: String,
    pub score: u32,
    pub completion: f64,
    pub uptime: f64,
    pub punctuality: f64,
    pub integrity: f64,
}

/// The latest changes of a provider's score, newest first.
pub fn reputation_history(
    conn: &mut PgConnection,
    provider: AccountId,
    last: u32,
) -> Result<Vec<ReputationChange>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Timestamptz)]
        at: DateTime<Utc>,
        #[diesel(sql_type = Text)]
        cause: String,
        #[diesel(sql_type = Integer)]
        score: i32,
        #[diesel(sql_type = Double)]
        completion: f64,
        #[diesel(sql_type = Double)]
        uptime: f64,
        #[diesel(sql_type = Double)]
        punctuality: f64,
        #[diesel(sql_type = Double)]
        integrity: f64,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT at, cause, score, completion, uptime, punctuality, integrity \
         FROM reputation_history WHERE provider = $1 \
         ORDER BY at DESC, partition DESC, event_seq DESC LIMIT $2",
    )
    .bind::<BigInt, _>(param(provider.0)?)
    .bind::<BigInt, _>(i64::from(last))
    .load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(ReputationChange {
                at: r.at,
                cause: r.cause,
                score: unsigned("reputation_history", "score", r.score)?,
                completion: r.completion,
                uptime: r.uptime,
                punctuality: r.punctuality,
                integrity: r.integrity,
            })
        })
        .collect()
}
