//! Slashes (the provider failures that cost a bond, read by both parties), flags and the
//! checker's verdicts on nodes (public).

use chrono::{DateTime, Utc};
use contract::{AccountId, LeaseId, MarketId, NodeId};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Numeric, Text, Timestamptz};
use rust_decimal::Decimal;

use super::{param, parsed, plus_one, unsigned, Page};
use crate::LedgerError;

/// One `BondSlashed`: what a provider failure of a lease cost the provider's bond, what the
/// buyer was credited and what went to the insurance fund, why, and the evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Slash {
    pub lease_id: LeaseId,
    pub market: MarketId,
    pub provider: AccountId,
    pub node: NodeId,
    pub buyer: AccountId,
    pub slashed: Decimal,
    pub buyer_credit: Decimal,
    pub insurance: Decimal,
    /// The lease's end cause, e.g. `node_silent`.
    pub cause: String,
    /// The report's sequence number, or the node's last heartbeat.
    pub evidence: Option<String>,
    pub at: DateTime<Utc>,
}

/// The slashes `account` took part in (as provider or buyer; every slash for `None`), by
/// lease id after `after`.
pub fn slashes(
    conn: &mut PgConnection,
    account: Option<AccountId>,
    after: Option<LeaseId>,
    limit: u32,
) -> Result<Page<Slash>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        lease_id: i64,
        #[diesel(sql_type = Text)]
        market: String,
        #[diesel(sql_type = BigInt)]
        provider: i64,
        #[diesel(sql_type = Text)]
        node: String,
        #[diesel(sql_type = BigInt)]
        buyer: i64,
        #[diesel(sql_type = Numeric)]
        slashed: Decimal,
        #[diesel(sql_type = Numeric)]
        buyer_credit: Decimal,
        #[diesel(sql_type = Numeric)]
        insurance: Decimal,
        #[diesel(sql_type = Text)]
        cause: String,
        #[diesel(sql_type = Nullable<Text>)]
        evidence: Option<String>,
        #[diesel(sql_type = Timestamptz)]
        at: DateTime<Utc>,
    }
    const T: &str = "slashes";
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT lease_id, market, provider, node, buyer, slashed, buyer_credit, insurance, \
         cause, evidence, at FROM slashes \
         WHERE ($1 < 0 OR provider = $1 OR buyer = $1) AND lease_id > $2 \
         ORDER BY lease_id LIMIT $3",
    )
    .bind::<BigInt, _>(account.map(|a| param(a.0)).transpose()?.unwrap_or(-1))
    .bind::<BigInt, _>(after.map(|l| param(l.0)).transpose()?.unwrap_or(0))
    .bind::<BigInt, _>(plus_one(limit))
    .load(conn)?;
    let rows = rows
        .into_iter()
        .map(|r| {
            Ok(Slash {
                lease_id: LeaseId(unsigned(T, "lease_id", r.lease_id)?),
                market: parsed(T, "market", &r.market)?,
                provider: AccountId(unsigned(T, "provider", r.provider)?),
                node: parsed(T, "node", &r.node)?,
                buyer: AccountId(unsigned(T, "buyer", r.buyer)?),
                slashed: r.slashed,
                buyer_credit: r.buyer_credit,
                insurance: r.insurance,
                cause: r.cause,
                evidence: r.evidence,
                at: r.at,
            })
        })
        .collect::<Result<_, LedgerError>>()?;
    Ok(Page::of(rows, limit))
}

/// A node of the provider flagged because its report named a GPU UUID another node
/// reported too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFlag {
    pub node: NodeId,
    pub uuid: String,
    pub other_provider: AccountId,
    pub other_node: NodeId,
    /// The latest such report.
    pub last_at: DateTime<Utc>,
}

/// The provider's flagged nodes.
pub fn node_flags(
    conn: &mut PgConnection,
    provider: AccountId,
) -> Result<Vec<NodeFlag>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        node: String,
        #[diesel(sql_type = Text)]
        uuid: String,
        #[diesel(sql_type = BigInt)]
        other_provider: i64,
        #[diesel(sql_type = Text)]
        other_node: String,
        #[diesel(sql_type = Timestamptz)]
        last_at: DateTime<Utc>,
    }
    const T: &str = "node_flags";
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT node, uuid, other_provider, other_node, last_at FROM node_flags \
         WHERE provider = $1 ORDER BY node, uuid, other_provider, other_node",
    )
    .bind::<BigInt, _>(param(provider.0)?)
    .load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(NodeFlag {
                node: parsed(T, "node", &r.node)?,
                uuid: r.uuid,
                other_provider: AccountId(unsigned(T, "other_provider", r.other_provider)?),
                other_node: parsed(T, "other_node", &r.other_node)?,
                last_at: r.last_at,
            })
        })
        .collect()
}

/// One `NodeChecked`: the market's checker's verdict on a known-answer job it ran on a
/// lease it bought from the node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCheck {
    pub market: MarketId,
    pub provider: AccountId,
    pub node: NodeId,
    pub lease_id: LeaseId,
    pub passed: bool,
    /// What the checker found, e.g. which answer differed.
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// The provider's latest `limit` checks, newest first.
pub fn node_checks(
    conn: &mut PgConnection,
    provider: AccountId,
    limit: u32,
) -> Result<Vec<NodeCheck>, LedgerError> {
    checks_where(
        conn,
        "SELECT market, provider, node, lease_id, passed, detail, at FROM node_checks \
         WHERE provider = $1::bigint ORDER BY at DESC, event_seq DESC LIMIT $2",
        &param(provider.0)?.to_string(),
        limit,
    )
}

/// Each node's latest check in `market`.
pub fn latest_checks(
    conn: &mut PgConnection,
    market: MarketId,
) -> Result<Vec<NodeCheck>, LedgerError> {
    checks_where(
        conn,
        "SELECT DISTINCT ON (provider, node) market, provider, node, lease_id, passed, detail, \
         at FROM node_checks WHERE market = $1 ORDER BY provider, node, at DESC, event_seq DESC \
         LIMIT $2",
        market.as_str(),
        u32::MAX,
    )
}

/// The checks `query` selects, its `$1` bound to `key` (as text) and its `$2` to `limit`.
fn checks_where(
    conn: &mut PgConnection,
    query: &str,
    key: &str,
    limit: u32,
) -> Result<Vec<NodeCheck>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        market: String,
        #[diesel(sql_type = BigInt)]
        provider: i64,
        #[diesel(sql_type = Text)]
        node: String,
        #[diesel(sql_type = BigInt)]
        lease_id: i64,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        passed: bool,
        #[diesel(sql_type = Text)]
        detail: String,
        #[diesel(sql_type = Timestamptz)]
        at: DateTime<Utc>,
    }
    const T: &str = "node_checks";
    let rows: Vec<Row> = diesel::sql_query(query)
        .bind::<Text, _>(key)
        .bind::<BigInt, _>(i64::from(limit))
        .load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(NodeCheck {
                market: parsed(T, "market", &r.market)?,
                provider: AccountId(unsigned(T, "provider", r.provider)?),
                node: parsed(T, "node", &r.node)?,
                lease_id: LeaseId(unsigned(T, "lease_id", r.lease_id)?),
                passed: r.passed,
                detail: r.detail,
                at: r.at,
            })
        })
        .collect()
}
