//! Settlement batches and their payouts.

use chrono::{DateTime, Utc};
use contract::{AccountId, ChainAddress, SettlementId, TxHash};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Numeric, Text, Timestamptz};
use rust_decimal::Decimal;

use super::{param, parsed, plus_one, unsigned, Page};
use crate::LedgerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementState {
    /// Waiting for its transaction.
    Open,
    Confirmed,
    /// Failed for good; its amounts went back to available.
    Failed,
}

impl SettlementState {
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementState::Open => "open",
            SettlementState::Confirmed => "confirmed",
            SettlementState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for SettlementState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        [
            SettlementState::Open,
            SettlementState::Confirmed,
            SettlementState::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or(())
    }
}

/// A batch of payouts sent in one transaction from the escrow account.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub batch: SettlementId,
    pub state: SettlementState,
    pub total: Decimal,
    /// How many accounts it pays.
    pub payouts: u32,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub tx_hash: Option<TxHash>,
    pub height: Option<u64>,
    pub reason: Option<String>,
}

/// Which batches: those paying `account` (or all), in `state` (or any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettlementFilter {
    pub account: Option<AccountId>,
    pub state: Option<SettlementState>,
}

/// Batches below `before` (or all), newest first.
pub fn settlements(
    conn: &mut PgConnection,
    filter: &SettlementFilter,
    before: Option<SettlementId>,
    limit: u32,
) -> Result<Page<Settlement>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        batch: i64,
        #[diesel(sql_type = Text)]
        state: String,
        #[diesel(sql_type = Numeric)]
        total: Decimal,
        #[diesel(sql_type = Integer)]
        payouts: i32,
        #[diesel(sql_type = Timestamptz)]
        opened_at: DateTime<Utc>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        closed_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Text>)]
        tx_hash: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        height: Option<i64>,
        #[diesel(sql_type = Nullable<Text>)]
        reason: Option<String>,
    }
    const T: &str = "settlements";
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT batch, state, total, payouts, opened_at, closed_at, tx_hash, height, reason \
         FROM settlements s WHERE batch < $1 AND ($2::text IS NULL OR state = $2) \
         AND ($3::bigint IS NULL OR EXISTS (SELECT 1 FROM settlement_payouts p \
                                            WHERE p.batch = s.batch AND p.account = $3)) \
         ORDER BY batch DESC LIMIT $4",
    )
    .bind::<BigInt, _>(before.map(|b| param(b.0)).transpose()?.unwrap_or(i64::MAX))
    .bind::<Nullable<Text>, _>(filter.state.map(SettlementState::as_str))
    .bind::<Nullable<BigInt>, _>(filter.account.map(|a| param(a.0)).transpose()?)
    .bind::<BigInt, _>(plus_one(limit))
    .load(conn)?;
    let rows = rows
        .into_iter()
        .map(|r| {
            Ok(Settlement {
                batch: SettlementId(unsigned(T, "batch", r.batch)?),
                state: parsed(T, "state", &r.state)?,
                total: r.total,
                payouts: unsigned(T, "payouts", r.payouts)?,
                opened_at: r.opened_at,
                closed_at: r.closed_at,
                tx_hash: r.tx_hash.map(|h| parsed(T, "tx_hash", &h)).transpose()?,
                height: r.height.map(|h| unsigned(T, "height", h)).transpose()?,
                reason: r.reason,
            })
        })
        .collect::<Result<_, LedgerError>>()?;
    Ok(Page::of(rows, limit))
}

/// One account's payout in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SettlementLine {
    pub account: AccountId,
    pub address: ChainAddress,
    pub amount: Decimal,
    /// The part paid from available earnings; the rest was requested as withdrawals.
    pub from_available: Decimal,
}

/// A batch's payouts, of one account only when `only` is given.
pub fn settlement_lines(
    conn: &mut PgConnection,
    batch: SettlementId,
    only: Option<AccountId>,
) -> Result<Vec<SettlementLine>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        account: i64,
        #[diesel(sql_type = Text)]
        address: String,
        #[diesel(sql_type = Numeric)]
        amount: Decimal,
        #[diesel(sql_type = Numeric)]
        from_available: Decimal,
    }
    const T: &str = "settlement_payouts";
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT account, address, amount, from_available FROM settlement_payouts \
         WHERE batch = $1 AND ($2::bigint IS NULL OR account = $2) ORDER BY account",
    )
    .bind::<BigInt, _>(param(batch.0)?)
    .bind::<Nullable<BigInt>, _>(only.map(|a| param(a.0)).transpose()?)
    .load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(SettlementLine {
                account: AccountId(unsigned(T, "account", r.account)?),
                address: parsed(T, "address", &r.address)?,
                amount: r.amount,
                from_available: r.from_available,
            })
        })
        .collect()
}
