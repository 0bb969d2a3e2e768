//! Every read of the read models, as typed rows: the API's queries and the finance exports
//! go through these functions, so a table's shape is known in one place, next to the
//! migrations that define it.
//!
//! Lists are keyset-paginated: a function returns at most `limit` rows after a key and says
//! whether more follow; callers never build SQL. Text columns come back as the contract's
//! enums and ids, counts as unsigned integers, money as exact decimals; a stored value that
//! does not parse is [`LedgerError::BadRow`], never a default.

mod billing;
mod checks;
mod leases;
mod money;
mod orders;
mod providers;
mod rebids;
mod settlement;
mod slashes;

use std::str::FromStr;

use chrono::{DateTime, Utc};
use contract::{MarketConfig, MarketId};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Numeric, Text, Timestamptz};
use rust_decimal::Decimal;

use crate::LedgerError;

pub use billing::{
    account_usage, accrued, accrued_by_provider, usage_lines, Accrued, ProviderAccrued,
    UsageFilter, UsageKey, UsageLine,
};
pub use checks::{books, projected_rows, Books};
pub use leases::{leases, Lease, LeaseFilter, LeaseRole};
pub use money::{
    earnings, invoices, journal, Earning, Invoice, InvoiceStatus, JournalEntry, JournalFilter,
    JournalKey, Posting,
};
pub use orders::{
    order_history, orders, placement, trades, Order, OrderChange, OrderChangeKind, OrderFilter,
    Placement, Trade, TradeFilter,
};
pub use providers::{
    nodes, provider, providers, reputation_history, telemetry, Node, Provider, ReputationChange,
    TelemetrySample,
};
pub use rebids::{rebid_chain, rebid_of, ChainLease};
pub use settlement::{
    settlement_lines, settlements, Settlement, SettlementFilter, SettlementLine, SettlementState,
};
pub use slashes::{latest_checks, node_checks, node_flags, slashes, NodeCheck, NodeFlag, Slash};

/// A page of rows and whether more follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub more: bool,
}

impl<T> Page<T> {
    /// Cuts the one extra row each query asks for, which only says that more follow.
    fn of(mut rows: Vec<T>, limit: u32) -> Page<T> {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Page { rows, more }
    }
}

/// A row's key in the log, `(partition, id)`: the order lists continue after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Key {
    pub partition: i32,
    pub id: i64,
}

impl Key {
    /// Before every row.
    pub const START: Key = Key {
        partition: -1,
        id: -1,
    };
}

/// A stored value that does not read back as its type.
pub(crate) fn bad(
    table: &'static str,
    column: &'static str,
    value: impl std::fmt::Display,
) -> LedgerError {
    LedgerError::BadRow {
        table,
        detail: format!("{column} holds {value}"),
    }
}

/// A text column as the type it stores.
pub(crate) fn parsed<T: FromStr>(
    table: &'static str,
    column: &'static str,
    s: &str,
) -> Result<T, LedgerError> {
    s.parse().map_err(|_| bad(table, column, format!("{s:?}")))
}

/// A non-negative integer column.
pub(crate) fn unsigned<T: TryFrom<i64>>(
    table: &'static str,
    column: &'static str,
    value: impl Into<i64>,
) -> Result<T, LedgerError> {
    let value = value.into();
    T::try_from(value).map_err(|_| bad(table, column, value))
}

/// An id the engine gave, as a query parameter: ids never exceed `i64::MAX` in the tables.
pub(crate) fn param(value: u64) -> Result<i64, LedgerError> {
    i64::try_from(value).map_err(|_| LedgerError::OutOfRange {
        what: "id",
        value: value.into(),
    })
}

/// Rows ask for one more than the page holds.
fn plus_one(limit: u32) -> i64 {
    i64::from(limit) + 1
}

/// A market as created, with its configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Market {
    pub market: MarketId,
    pub tick: Decimal,
    pub fee_bps: u32,
    pub created_at: DateTime<Utc>,
    /// Its parameters: the last `ConfigureMarket`'s, or the contract's defaults
    /// (`MarketConfig::default()`) until one arrives.
    pub config: MarketConfig,
    /// When a `ConfigureMarket` last set them.
    pub configured_at: Option<DateTime<Utc>>,
}

pub fn markets(conn: &mut PgConnection) -> Result<Vec<Market>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        market: String,
        #[diesel(sql_type = Numeric)]
        tick: Decimal,
        #[diesel(sql_type = Integer)]
        fee_bps: i32,
        #[diesel(sql_type = Timestamptz)]
        created_at: DateTime<Utc>,
        #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
        config: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Nullable<Timestamptz>)]
        configured_at: Option<DateTime<Utc>>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT market, tick, fee_bps, created_at, config::text AS config, configured_at \
         FROM markets ORDER BY market",
    )
    .load(conn)?;
    rows.into_iter()
        .map(|r| {
            let config = match &r.config {
                None => MarketConfig::default(),
                // The contract's JSON form, checked again as it is read.
                Some(json) => serde_json::from_str(json)
                    .map_err(|e| bad("markets", "config", format!("{json}: {e}")))?,
            };
            Ok(Market {
                market: parsed("markets", "market", &r.market)?,
                tick: r.tick,
                fee_bps: unsigned("markets", "fee_bps", r.fee_bps)?,
                created_at: r.created_at,
                config,
                configured_at: r.configured_at,
            })
        })
        .collect()
}

/// Each projector's position in the events topic: the lowest over its partitions.
pub fn projector_positions(conn: &mut PgConnection) -> Result<Vec<(String, u64)>, LedgerError> {
    #[derive(QueryableByName)]
    struct Position {
        #[diesel(sql_type = Text)]
        projector: String,
        #[diesel(sql_type = BigInt)]
        next_offset: i64,
    }
    let rows: Vec<Position> = diesel::sql_query(
        "SELECT projector, min(next_offset)::bigint AS next_offset \
         FROM projector_offsets GROUP BY projector ORDER BY projector",
    )
    .load(conn)?;
    rows.into_iter()
        .map(|p| {
            let next = unsigned("projector_offsets", "next_offset", p.next_offset)?;
            Ok((p.projector, next))
        })
        .collect()
}
