//! Balances, the journal, invoices and earnings, and who is asking.

use async_graphql::SimpleObject;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::auth::Role;

/// An account's money as the engine holds it now.
#[derive(Debug, Clone, SimpleObject)]
pub struct Balance {
    pub account: u64,
    pub available: Decimal,
    /// Held for open bids.
    pub held: Decimal,
    /// Paid into running leases.
    pub in_lease: Decimal,
    /// Requested withdrawals and payouts of the open settlement batch, on their way out.
    pub settling: Decimal,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Posting {
    pub account: u64,
    pub bucket: String,
    pub amount: Decimal,
}

/// A journal transaction: legs that sum to zero, with the event and command that caused it.
#[derive(Debug, Clone, SimpleObject)]
pub struct JournalEntry {
    pub partition: u32,
    pub event_seq: u64,
    pub command_offset: u64,
    pub kind: String,
    pub at: DateTime<Utc>,
    pub postings: Vec<Posting>,
}

impl From<ledger::read::JournalEntry> for JournalEntry {
    fn from(e: ledger::read::JournalEntry) -> JournalEntry {
        JournalEntry {
            partition: e.partition,
            event_seq: e.event_seq,
            command_offset: e.command_offset,
            kind: e.kind,
            at: e.at,
            postings: e
                .postings
                .into_iter()
                .map(|p| Posting {
                    account: p.account.0,
                    bucket: p.bucket.as_str().to_owned(),
                    amount: p.amount,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Invoice {
    pub account: u64,
    pub period: NaiveDate,
    /// `open` or `closed`.
    pub status: String,
    pub lines: u32,
    pub gpu_hours: Decimal,
    pub amount: Decimal,
}

impl From<ledger::read::Invoice> for Invoice {
    fn from(i: ledger::read::Invoice) -> Invoice {
        Invoice {
            account: i.account.0,
            period: i.period,
            status: i.status.as_str().to_owned(),
            lines: i.lines,
            gpu_hours: i.gpu_hours,
            amount: i.amount,
        }
    }
}

/// A provider's statement for a calendar month (UTC).
#[derive(Debug, Clone, SimpleObject)]
pub struct Earning {
    pub period: NaiveDate,
    pub leases: u32,
    pub gpu_hours: Decimal,
    pub gross: Decimal,
    pub fees: Decimal,
    pub net: Decimal,
}

impl From<ledger::read::Earning> for Earning {
    fn from(e: ledger::read::Earning) -> Earning {
        Earning {
            period: e.period,
            leases: e.leases,
            gpu_hours: e.gpu_hours,
            gross: e.gross,
            fees: e.fees,
            net: e.net,
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Me {
    pub key_id: i64,
    pub role: Role,
    pub account: Option<u64>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct DepositInstructions {
    /// Send funds here on the settlement chain...
    pub escrow_address: String,
    /// ...with exactly this memo, or they cannot be credited automatically.
    pub memo: String,
}
