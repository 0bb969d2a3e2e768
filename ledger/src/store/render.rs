//! `render_jobs`: each render job's request and its coordinator's state, which the API's
//! render loop rewrites as the job moves; and the charges of the leases a job bought.

use chrono::{DateTime, Utc};
use contract::{AccountId, LeaseId};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Numeric, Text, Timestamptz};
use rust_decimal::Decimal;

use crate::read::param;
use crate::LedgerError;

/// A render job as stored: the request and state as their JSON (the `render` crate's types,
/// which the API parses), `version` moving with every write of the state.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct RenderJobRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub buyer: i64,
    #[diesel(sql_type = Text)]
    pub client_id: String,
    #[diesel(sql_type = Text)]
    pub spec: String,
    #[diesel(sql_type = Text)]
    pub purchase: String,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Timestamptz)]
    pub submitted_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub done_at: Option<DateTime<Utc>>,
}

/// What submitting a render job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderSubmitted {
    New(u64),
    /// The same request under the same client id: the job it made before.
    Again(u64),
    /// The client id names another request.
    Other(u64),
}

const COLUMNS: &str = "id, buyer, client_id, spec, purchase, state, version, status, \
                       submitted_at, updated_at, done_at";

/// Stores a new render job, once per buyer and client id.
pub fn submit_render_job(
    conn: &mut PgConnection,
    buyer: AccountId,
    client_id: &str,
    spec: &str,
    purchase: &str,
    state: &str,
) -> Result<RenderSubmitted, LedgerError> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    conn.transaction(|conn| {
        let inserted: Option<Id> = diesel::sql_query(
            "INSERT INTO render_jobs (buyer, client_id, spec, purchase, state) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (buyer, client_id) DO NOTHING RETURNING id",
        )
        .bind::<BigInt, _>(param(buyer.0)?)
        .bind::<Text, _>(client_id)
        .bind::<Text, _>(spec)
        .bind::<Text, _>(purchase)
        .bind::<Text, _>(state)
        .get_result(conn)
        .optional()?;
        if let Some(row) = inserted {
            return Ok(RenderSubmitted::New(row.id as u64));
        }
        let existing: RenderJobRow = diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM render_jobs WHERE buyer = $1 AND client_id = $2"
        ))
        .bind::<BigInt, _>(param(buyer.0)?)
        .bind::<Text, _>(client_id)
        .get_result(conn)?;
        let id = existing.id as u64;
        Ok(if existing.spec == spec && existing.purchase == purchase {
            RenderSubmitted::Again(id)
        } else {
            RenderSubmitted::Other(id)
        })
    })
}

/// One render job.
pub fn render_job(conn: &mut PgConnection, id: u64) -> Result<Option<RenderJobRow>, LedgerError> {
    Ok(
        diesel::sql_query(format!("SELECT {COLUMNS} FROM render_jobs WHERE id = $1"))
            .bind::<BigInt, _>(param(id)?)
            .get_result(conn)
            .optional()?,
    )
}

/// A buyer's render jobs, newest first, before `before` (ids), at most `limit`.
pub fn render_jobs_of(
    conn: &mut PgConnection,
    buyer: AccountId,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<RenderJobRow>, LedgerError> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM render_jobs WHERE buyer = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
    ))
    .bind::<BigInt, _>(param(buyer.0)?)
    .bind::<BigInt, _>(param(before.unwrap_or(i64::MAX as u64))?)
    .bind::<BigInt, _>(i64::from(limit))
    .load(conn)?)
}

/// The ids of the jobs still running, oldest first.
pub fn running_render_jobs(conn: &mut PgConnection) -> Result<Vec<u64>, LedgerError> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let rows: Vec<Id> =
        diesel::sql_query("SELECT id FROM render_jobs WHERE status = 'running' ORDER BY id")
            .load(conn)?;
    Ok(rows.into_iter().map(|r| r.id as u64).collect())
}

/// Writes a job's new state if it is still at `version` (false: another writer moved it
/// first, and nothing is written), and marks it done when `done`.
pub fn save_render_job(
    conn: &mut PgConnection,
    id: u64,
    version: i64,
    state: &str,
    done: bool,
) -> Result<bool, LedgerError> {
    let updated = diesel::sql_query(
        "UPDATE render_jobs SET state = $3, version = version + 1, updated_at = now(), \
         status = CASE WHEN $4 THEN 'done' ELSE status END, \
         done_at = CASE WHEN $4 THEN coalesce(done_at, now()) ELSE done_at END \
         WHERE id = $1 AND version = $2",
    )
    .bind::<BigInt, _>(param(id)?)
    .bind::<BigInt, _>(version)
    .bind::<Text, _>(state)
    .bind::<Bool, _>(done)
    .execute(conn)?;
    Ok(updated == 1)
}

/// What each of `leases` was charged, once ended (`None` while it runs or before the
/// activity projection has it).
pub fn lease_charges(
    conn: &mut PgConnection,
    leases: &[LeaseId],
) -> Result<Vec<(LeaseId, Option<Decimal>)>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        lease_id: i64,
        #[diesel(sql_type = Nullable<Numeric>)]
        charged: Option<Decimal>,
    }
    let ids = leases
        .iter()
        .map(|l| param(l.0))
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT lease_id, charged FROM leases WHERE partition = 0 AND lease_id = ANY ($1) \
         ORDER BY lease_id",
    )
    .bind::<Array<BigInt>, _>(ids)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| (LeaseId(r.lease_id as u64), r.charged))
        .collect())
}
