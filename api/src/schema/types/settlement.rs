//! Settlement batches on the chain.

use async_graphql::{ComplexObject, Context, Enum, SimpleObject};
use chrono::{DateTime, Utc};
use contract::{AccountId, SettlementId, SettlementPayout};
use rust_decimal::Decimal;

use crate::schema::{six, state};

/// Where a batch stands (`ledger::read::SettlementState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "ledger::read::SettlementState")]
pub enum SettlementState {
    Open,
    Confirmed,
    Failed,
}

/// A settlement batch: payouts sent in one transaction from the escrow account.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Settlement {
    pub batch: u64,
    /// `open` (waiting for its transaction), `confirmed` or `failed`.
    pub state: String,
    pub total: Decimal,
    /// How many accounts it pays.
    pub payouts: u32,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// The transaction that paid it (confirmed batches).
    pub tx_hash: Option<String>,
    pub height: Option<u64>,
    /// Why it failed (failed batches); the amounts went back to available.
    pub reason: Option<String>,
    /// Whose lines the caller may see: `None` for finance and admin (all).
    #[graphql(skip)]
    pub visible_to: Option<AccountId>,
}

impl Settlement {
    pub fn of(s: ledger::read::Settlement, visible_to: Option<AccountId>) -> Settlement {
        Settlement {
            batch: s.batch.0,
            state: s.state.as_str().to_owned(),
            total: s.total,
            payouts: s.payouts,
            opened_at: s.opened_at,
            closed_at: s.closed_at,
            tx_hash: s.tx_hash.map(|h| h.to_string()),
            height: s.height,
            reason: s.reason,
            visible_to,
        }
    }
}

/// One account's payout in a settlement batch.
#[derive(Debug, Clone, SimpleObject)]
pub struct SettlementLine {
    pub account: u64,
    pub address: String,
    pub amount: Decimal,
    /// The part paid from available earnings; the rest was requested as withdrawals.
    pub from_available: Decimal,
}

impl From<&SettlementPayout> for SettlementLine {
    fn from(p: &SettlementPayout) -> SettlementLine {
        SettlementLine {
            account: p.account.0,
            address: p.address.to_string(),
            amount: six(p.amount.to_decimal()),
            from_available: six(p.from_available.to_decimal()),
        }
    }
}

impl From<ledger::read::SettlementLine> for SettlementLine {
    fn from(l: ledger::read::SettlementLine) -> SettlementLine {
        SettlementLine {
            account: l.account.0,
            address: l.address.to_string(),
            amount: l.amount,
            from_available: l.from_available,
        }
    }
}

#[ComplexObject]
impl Settlement {
    /// The payouts (a trader or provider sees its own line only).
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn lines(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SettlementLine>> {
        let (batch, only) = (SettlementId(self.batch), self.visible_to);
        let lines = state(ctx)
            .db(move |c| ledger::read::settlement_lines(c, batch, only))
            .await?;
        Ok(lines.into_iter().map(SettlementLine::from).collect())
    }
}

/// The engine's open settlement batch, or what a batch opened now would pay.
#[derive(Debug, Clone, SimpleObject)]
pub struct SettlementBatch {
    /// `None` for a preview.
    pub batch: Option<u64>,
    pub total: Decimal,
    pub lines: Vec<SettlementLine>,
}

impl SettlementBatch {
    pub fn new(batch: Option<SettlementId>, payouts: &[SettlementPayout]) -> SettlementBatch {
        SettlementBatch {
            batch: batch.map(|b| b.0),
            total: six(payouts.iter().map(|p| p.amount.to_decimal()).sum()),
            lines: payouts.iter().map(SettlementLine::from).collect(),
        }
    }
}

/// A chain deposit as the engine took it.
#[derive(Debug, Clone, SimpleObject)]
pub struct ChainDepositResult {
    pub account: u64,
    pub amount: Decimal,
    /// The engine had already credited this (transaction, message): nothing changed.
    pub duplicate: bool,
}
