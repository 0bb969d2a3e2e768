//! The journal, invoices and earnings.

use chrono::{DateTime, NaiveDate, Utc};
use contract::AccountId;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, Integer, Nullable, Numeric, Text, Timestamptz};
use rust_decimal::Decimal;

use super::{bad, param, parsed, plus_one, unsigned, Page};
use crate::journal::Bucket;
use crate::LedgerError;

/// One leg of a journal transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Posting {
    pub account: AccountId,
    pub bucket: Bucket,
    pub amount: Decimal,
}

/// A journal transaction: legs that sum to zero, with the event and command that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub partition: u32,
    pub event_seq: u64,
    pub command_offset: u64,
    /// The event's kind, e.g. `lease_created`.
    pub kind: String,
    pub at: DateTime<Utc>,
    pub postings: Vec<Posting>,
}

impl JournalEntry {
    /// Where the next page continues.
    pub fn key(&self) -> JournalKey {
        JournalKey {
            at: self.at,
            partition: self.partition,
            event_seq: self.event_seq,
        }
    }
}

/// The journal's order: by time, then by log position, so transactions of several
/// partitions interleave as they happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct JournalKey {
    pub at: DateTime<Utc>,
    pub partition: u32,
    pub event_seq: u64,
}

/// Which transactions: those touching `account` (or all), within `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalFilter {
    pub account: Option<AccountId>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Journal transactions in time order after `after` (or from the filter's start). The
/// finance export pages through the same function.
pub fn journal(
    conn: &mut PgConnection,
    filter: &JournalFilter,
    after: Option<JournalKey>,
    limit: u32,
) -> Result<Page<JournalEntry>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        partition: i32,
        #[diesel(sql_type = BigInt)]
        event_seq: i64,
        #[diesel(sql_type = BigInt)]
        command_offset: i64,
        #[diesel(sql_type = Text)]
        kind: String,
        #[diesel(sql_type = Timestamptz)]
        at: DateTime<Utc>,
        #[diesel(sql_type = Array<BigInt>)]
        accounts: Vec<i64>,
        #[diesel(sql_type = Array<Text>)]
        buckets: Vec<String>,
        #[diesel(sql_type = Array<Numeric>)]
        amounts: Vec<Decimal>,
    }
    const T: &str = "journal_transactions";
    let (at, partition, seq) = match after {
        Some(k) => (k.at, i64::from(k.partition), param(k.event_seq)?),
        None => (filter.from, -1, -1),
    };
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT partition, event_seq, command_offset, kind, at, accounts, buckets, amounts \
         FROM journal_transactions \
         WHERE ($1::bigint IS NULL OR $1 = ANY (accounts)) AND at >= $2 AND at < $3 \
         AND (at, partition, event_seq) > ($4, $5, $6) \
         ORDER BY at, partition, event_seq LIMIT $7",
    )
    .bind::<Nullable<BigInt>, _>(filter.account.map(|a| param(a.0)).transpose()?)
    .bind::<Timestamptz, _>(filter.from)
    .bind::<Timestamptz, _>(filter.to)
    .bind::<Timestamptz, _>(at)
    .bind::<BigInt, _>(partition)
    .bind::<BigInt, _>(seq)
    .bind::<BigInt, _>(plus_one(limit))
    .load(conn)?;
    let rows = rows
        .into_iter()
        .map(|r| {
            if r.buckets.len() != r.accounts.len() || r.amounts.len() != r.accounts.len() {
                return Err(bad(
                    T,
                    "legs",
                    format!("uneven arrays at seq {}", r.event_seq),
                ));
            }
            let postings = r
                .accounts
                .into_iter()
                .zip(r.buckets)
                .zip(r.amounts)
                .map(|((account, bucket), amount)| {
                    Ok(Posting {
                        account: AccountId(unsigned(T, "accounts", account)?),
                        bucket: parsed(T, "buckets", &bucket)?,
                        amount,
                    })
                })
                .collect::<Result<_, LedgerError>>()?;
            Ok(JournalEntry {
                partition: unsigned(T, "partition", r.partition)?,
                event_seq: unsigned(T, "event_seq", r.event_seq)?,
                command_offset: unsigned(T, "command_offset", r.command_offset)?,
                kind: r.kind,
                at: r.at,
                postings,
            })
        })
        .collect::<Result<_, LedgerError>>()?;
    Ok(Page::of(rows, limit))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceStatus {
    /// The month is still running on some shard.
    Open,
    /// Every shard's clock has left the month: the invoice no longer changes.
    Closed,
}

impl std::str::FromStr for InvoiceStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "open" => Ok(InvoiceStatus::Open),
            "closed" => Ok(InvoiceStatus::Closed),
            _ => Err(()),
        }
    }
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Open => "open",
            InvoiceStatus::Closed => "closed",
        }
    }
}

/// A buyer's usage for a calendar month (UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct Invoice {
    pub account: AccountId,
    pub period: NaiveDate,
    pub status: InvoiceStatus,
    pub lines: u32,
    pub gpu_hours: Decimal,
    pub amount: Decimal,
    /// Its storage line, where the market prices storage: GB-hours held, what was paid for
    /// them, and what the balance did not cover.
    pub storage_gb_hours: Decimal,
    pub storage_amount: Decimal,
    pub storage_unpaid: Decimal,
}

/// An account's invoices for months before `before`, newest first.
pub fn invoices(
    conn: &mut PgConnection,
    account: AccountId,
    before: NaiveDate,
    limit: u32,
) -> Result<Page<Invoice>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        account: i64,
        #[diesel(sql_type = Date)]
        period: NaiveDate,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = Integer)]
        lines: i32,
        #[diesel(sql_type = Numeric)]
        gpu_hours: Decimal,
        #[diesel(sql_type = Numeric)]
        amount: Decimal,
        #[diesel(sql_type = Numeric)]
        storage_gb_hours: Decimal,
        #[diesel(sql_type = Numeric)]
        storage_amount: Decimal,
        #[diesel(sql_type = Numeric)]
        storage_unpaid: Decimal,
    }
    const T: &str = "invoices";
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT account, period, status, lines, gpu_hours, amount, storage_gb_hours, \
         storage_amount, storage_unpaid FROM invoices \
         WHERE account = $1 AND period < $2 ORDER BY period DESC LIMIT $3",
    )
    .bind::<BigInt, _>(param(account.0)?)
    .bind::<Date, _>(before)
    .bind::<BigInt, _>(plus_one(limit))
    .load(conn)?;
    let rows = rows
        .into_iter()
        .map(|r| {
            Ok(Invoice {
                account: AccountId(unsigned(T, "account", r.account)?),
                period: r.period,
                status: parsed(T, "status", &r.status)?,
                lines: unsigned(T, "lines", r.lines)?,
                gpu_hours: r.gpu_hours,
                amount: r.amount,
                storage_gb_hours: r.storage_gb_hours,
                storage_amount: r.storage_amount,
                storage_unpaid: r.storage_unpaid,
            })
        })
        .collect::<Result<_, LedgerError>>()?;
    Ok(Page::of(rows, limit))
}

/// A provider's statement for a calendar month (UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct Earning {
    pub period: NaiveDate,
    pub leases: u32,
    pub gpu_hours: Decimal,
    pub gross: Decimal,
    pub fees: Decimal,
    pub net: Decimal,
}

/// A provider's statements for months before `before`, newest first.
pub fn earnings(
    conn: &mut PgConnection,
    provider: AccountId,
    before: NaiveDate,
    limit: u32,
) -> Result<Page<Earning>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Date)]
        period: NaiveDate,
        #[diesel(sql_type = Integer)]
        leases: i32,
        #[diesel(sql_type = Numeric)]
        gpu_hours: Decimal,
        #[diesel(sql_type = Numeric)]
        gross: Decimal,
        #[diesel(sql_type = Numeric)]
        fees: Decimal,
        #[diesel(sql_type = Numeric)]
        net: Decimal,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT period, leases, gpu_hours, gross, fees, net FROM earnings \
         WHERE provider = $1 AND period < $2 ORDER BY period DESC LIMIT $3",
    )
    .bind::<BigInt, _>(param(provider.0)?)
    .bind::<Date, _>(before)
    .bind::<BigInt, _>(plus_one(limit))
    .load(conn)?;
    let rows = rows
        .into_iter()
        .map(|r| {
            Ok(Earning {
                period: r.period,
                leases: unsigned("earnings", "leases", r.leases)?,
                gpu_hours: r.gpu_hours,
                gross: r.gross,
                fees: r.fees,
                net: r.net,
            })
        })
        .collect::<Result<_, LedgerError>>()?;
    Ok(Page::of(rows, limit))
}
