//! Leases as the activity projection holds them.

use chrono::{DateTime, Utc};
use contract::{
    AccountId, ErrorCode, LeaseEndReason, LeaseId, LeaseState, MarketId, NodeId, OrderId, Region,
};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Numeric, Text, Timestamptz};
use rust_decimal::Decimal;

use super::{param, parsed, plus_one, unsigned, Key, Page};
use crate::LedgerError;

#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub key: Key,
    pub id: LeaseId,
    pub market: MarketId,
    pub buyer: AccountId,
    pub provider: AccountId,
    pub node: NodeId,
    pub region: Region,
    pub gpus: u32,
    pub price: Decimal,
    pub hours: u32,
    pub cost: Decimal,
    pub state: LeaseState,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub hours_used: Option<Decimal>,
    pub charged: Option<Decimal>,
    pub provider_earned: Option<Decimal>,
    pub end_reason: Option<LeaseEndReason>,
    /// The bid it filled.
    pub bid_order: OrderId,
    /// Why a metered lease closed, as the engine judged it (`LeaseEndCause::as_str`, e.g.
    /// `node_silent`), and what it judged by: the node's last heartbeat (RFC 3339), the
    /// report's sequence number, or the operator's reason.
    pub close_cause: Option<String>,
    pub close_detail: Option<String>,
    /// Up to when a closed metered lease is charged, and the milliseconds charged.
    pub charged_until: Option<DateTime<Utc>>,
    pub charged_ms: Option<u64>,
    /// The order its failure placed for its unused hours, or why that was refused.
    pub rebid_order: Option<OrderId>,
    pub rebid_refused: Option<ErrorCode>,
    /// Its buyer held its payment for review, to be paid by then at the latest.
    pub payment_held_until: Option<DateTime<Utc>>,
}

/// Which side of its leases an account lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRole {
    Buyer,
    Provider,
    Either,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LeaseFilter {
    pub account: AccountId,
    pub role: LeaseRole,
    pub state: Option<LeaseState>,
}

/// An account's leases, oldest first, after `after`.
pub fn leases(
    conn: &mut PgConnection,
    filter: &LeaseFilter,
    after: Key,
    limit: u32,
) -> Result<Page<Lease>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        partition: i32,
        #[diesel(sql_type = BigInt)]
        lease_id: i64,
        #[diesel(sql_type = Text)]
        market: String,
        #[diesel(sql_type = BigInt)]
        buyer: i64,
        #[diesel(sql_type = BigInt)]
        provider: i64,
        #[diesel(sql_type = Text)]
        node: String,
        #[diesel(sql_type = Text)]
        region: String,
        #[diesel(sql_type = Integer)]
        gpus: i32,
        #[diesel(sql_type = Numeric)]
        price: Decimal,
        #[diesel(sql_type = Integer)]
        hours: i32,
        #[diesel(sql_type = Numeric)]
        cost: Decimal,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = Timestamptz)]
        created_at: DateTime<Utc>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        started_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        ended_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Numeric>)]
        hours_used: Option<Decimal>,
        #[diesel(sql_type = Nullable<Numeric>)]
        charged: Option<Decimal>,
        #[diesel(sql_type = Nullable<Numeric>)]
        provider_earned: Option<Decimal>,
        #[diesel(sql_type = Nullable<Text>)]
        end_reason: Option<String>,
        #[diesel(sql_type = BigInt)]
        bid_order: i64,
        #[diesel(sql_type = Nullable<Text>)]
        close_cause: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        close_detail: Option<String>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        charged_until: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<BigInt>)]
        charged_ms: Option<i64>,
        #[diesel(sql_type = Nullable<BigInt>)]
        rebid_order: Option<i64>,
        #[diesel(sql_type = Nullable<Text>)]
        rebid_refused: Option<String>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        payment_held_until: Option<DateTime<Utc>>,
    }
    const T: &str = "leases";
    let (as_buyer, as_provider) = match filter.role {
        LeaseRole::Buyer => (true, false),
        LeaseRole::Provider => (false, true),
        LeaseRole::Either => (true, true),
    };
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT partition, lease_id, market, buyer, provider, node, region, gpus, price, hours, \
         cost, status, created_at, started_at, ended_at, hours_used, charged, provider_earned, \
         end_reason, bid_order, close_cause, close_detail, charged_until, charged_ms, \
         rebid_order, rebid_refused, payment_held_until FROM leases \
         WHERE (($2 AND buyer = $1) OR ($3 AND provider = $1)) \
         AND ($4::text IS NULL OR status = $4) AND (partition, lease_id) > ($5, $6) \
         ORDER BY partition, lease_id LIMIT $7",
    )
    .bind::<BigInt, _>(param(filter.account.0)?)
    .bind::<Bool, _>(as_buyer)
    .bind::<Bool, _>(as_provider)
    .bind::<Nullable<Text>, _>(filter.state.map(LeaseState::as_str))
    .bind::<Integer, _>(after.partition)
    .bind::<BigInt, _>(after.id)
    .bind::<BigInt, _>(plus_one(limit))
    .load(conn)?;
    let rows = rows
        .into_iter()
        .map(|r| {
            Ok(Lease {
                key: Key {
                    partition: r.partition,
                    id: r.lease_id,
                },
                id: LeaseId(unsigned(T, "lease_id", r.lease_id)?),
                market: parsed(T, "market", &r.market)?,
                buyer: AccountId(unsigned(T, "buyer", r.buyer)?),
                provider: AccountId(unsigned(T, "provider", r.provider)?),
                node: parsed(T, "node", &r.node)?,
                region: parsed(T, "region", &r.region)?,
                gpus: unsigned(T, "gpus", r.gpus)?,
                price: r.price,
                hours: unsigned(T, "hours", r.hours)?,
                cost: r.cost,
                state: parsed(T, "status", &r.status)?,
                created_at: r.created_at,
                started_at: r.started_at,
                ended_at: r.ended_at,
                hours_used: r.hours_used,
                charged: r.charged,
                provider_earned: r.provider_earned,
                end_reason: r
                    .end_reason
                    .map(|e| parsed(T, "end_reason", &e))
                    .transpose()?,
                bid_order: OrderId(unsigned(T, "bid_order", r.bid_order)?),
                close_cause: r.close_cause,
                close_detail: r.close_detail,
                charged_until: r.charged_until,
                charged_ms: r
                    .charged_ms
                    .map(|ms| unsigned(T, "charged_ms", ms))
                    .transpose()?,
                rebid_order: r
                    .rebid_order
                    .map(|o| unsigned(T, "rebid_order", o).map(OrderId))
                    .transpose()?,
                rebid_refused: r
                    .rebid_refused
                    .map(|c| parsed(T, "rebid_refused", &c))
                    .transpose()?,
                payment_held_until: r.payment_held_until,
            })
        })
        .collect::<Result<_, LedgerError>>()?;
    Ok(Page::of(rows, limit))
}
