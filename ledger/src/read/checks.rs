//! Whole-table reads that judge the read models rather than serve them: what the load tests
//! report as written, and whether the books of a run check out.

use std::ops::Range;

use contract::{AccountId, MarketId};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Numeric, Text};
use rust_decimal::Decimal;

use super::{param, unsigned};
use crate::LedgerError;

/// The rows the projections have written as the ledger benchmark counts them: journal
/// transactions and their legs, orders and their history, trades, usage lines, nodes and
/// reputation history. On a database only one projection fills, they are its rows.
pub fn projected_rows(conn: &mut PgConnection) -> Result<u64, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let row: Row = diesel::sql_query(
        "SELECT (SELECT count(*) FROM postings) + (SELECT count(*) FROM journal_transactions) \
         + (SELECT count(*) FROM orders) + (SELECT count(*) FROM order_history) \
         + (SELECT count(*) FROM trades) + (SELECT count(*) FROM usage_lines) \
         + (SELECT count(*) FROM nodes) + (SELECT count(*) FROM reputation_history) AS n",
    )
    .get_result(conn)?;
    unsigned("projections", "rows", row.n)
}

/// What the books say after a run in one market: each count is of something that should
/// not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Books {
    /// Every journal leg summed: zero when every transaction balances.
    pub journal_sum: Decimal,
    /// The market's fills without their lease.
    pub fills_without_lease: u64,
    /// The market's leases without a usage line, but for those charged no time at all (a
    /// metered lease stopped within its first millisecond has nothing to bill).
    pub leases_without_usage: u64,
    /// Of the buyers asked about, those with usage and no invoice.
    pub buyers_without_invoice: u64,
    /// The signed reports stored from the providers asked about.
    pub provider_reports: u64,
}

/// The books of `market` after a run by `buyers` and `providers`. Refreshes the planner's
/// statistics first: planned on the empty tables of the start, the anti-joins run a nested
/// loop over every row (minutes instead of milliseconds after a long run).
pub fn books(
    conn: &mut PgConnection,
    market: &MarketId,
    buyers: &[AccountId],
    providers: Range<AccountId>,
) -> Result<Books, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Numeric)]
        journal_sum: Decimal,
        #[diesel(sql_type = BigInt)]
        fills_without_lease: i64,
        #[diesel(sql_type = BigInt)]
        leases_without_usage: i64,
        #[diesel(sql_type = BigInt)]
        buyers_without_invoice: i64,
        #[diesel(sql_type = BigInt)]
        provider_reports: i64,
    }
    diesel::sql_query("ANALYZE trades, leases, usage_lines, invoices, journal_transactions")
        .execute(conn)?;
    let buyers = buyers
        .iter()
        .map(|a| param(a.0))
        .collect::<Result<Vec<_>, _>>()?;
    let row: Row = diesel::sql_query(
        "SELECT (SELECT coalesce(sum(x), 0) FROM journal_transactions, unnest(amounts) x) \
                AS journal_sum, \
            (SELECT count(*) FROM trades t WHERE t.market = $1 \
             AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.lease_id = t.lease_id)) \
                AS fills_without_lease, \
            (SELECT count(*) FROM leases l WHERE l.market = $1 \
             AND coalesce(l.charged_ms, 1) > 0 \
             AND NOT EXISTS (SELECT 1 FROM usage_lines u WHERE u.lease_id = l.lease_id)) \
                AS leases_without_usage, \
            (SELECT count(DISTINCT u.account) FROM usage_lines u WHERE u.account = ANY ($2) \
             AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.account = u.account)) \
                AS buyers_without_invoice, \
            (SELECT count(*) FROM node_reports WHERE provider >= $3 AND provider < $4) \
                AS provider_reports",
    )
    .bind::<Text, _>(market.as_str())
    .bind::<Array<BigInt>, _>(&buyers)
    .bind::<BigInt, _>(param(providers.start.0)?)
    .bind::<BigInt, _>(param(providers.end.0)?)
    .get_result(conn)?;
    let count = |value: i64| unsigned("books", "count", value);
    Ok(Books {
        journal_sum: row.journal_sum,
        fills_without_lease: count(row.fills_without_lease)?,
        leases_without_usage: count(row.leases_without_usage)?,
        buyers_without_invoice: count(row.buyers_without_invoice)?,
        provider_reports: count(row.provider_reports)?,
    })
}
