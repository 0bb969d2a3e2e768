//! Balances, the journal, invoices and earnings, and who is asking.

use async_graphql::{ComplexObject, Context, SimpleObject};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use contract::AccountId;
use ledger::read::{LeaseRole, UsageKey};
use rust_decimal::Decimal;

use crate::auth::Role;
use crate::errors::ApiError;
use crate::schema::{connection, page_size, parse_cursor, state, Page};

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
    /// Posted bond in every market together (free, held behind GPUs, unbonding).
    pub bonded: Decimal,
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
#[graphql(complex)]
pub struct Invoice {
    pub account: u64,
    pub period: NaiveDate,
    /// `open` or `closed`.
    pub status: String,
    /// Its GPU usage: lines (one lease in one charge period each), GPU-hours, amount.
    pub lines: u32,
    pub gpu_hours: Decimal,
    pub amount: Decimal,
    /// Its storage line, zero unless the market prices storage: GB-hours of blobs held
    /// (10^9 bytes for an hour, measured hourly), what was paid for them, and what the
    /// available balance did not cover (not collected).
    pub storage_gb_hours: Decimal,
    pub storage_amount: Decimal,
    pub storage_unpaid: Decimal,
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
            storage_gb_hours: i.storage_gb_hours,
            storage_amount: i.storage_amount,
            storage_unpaid: i.storage_unpaid,
        }
    }
}

/// A provider's statement for a calendar month (UTC).
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Earning {
    #[graphql(skip)]
    pub provider: AccountId,
    pub period: NaiveDate,
    pub leases: u32,
    pub gpu_hours: Decimal,
    pub gross: Decimal,
    pub fees: Decimal,
    pub net: Decimal,
}

impl Earning {
    pub fn of(provider: AccountId, e: ledger::read::Earning) -> Earning {
        Earning {
            provider,
            period: e.period,
            leases: e.leases,
            gpu_hours: e.gpu_hours,
            gross: e.gross,
            fees: e.fees,
            net: e.net,
        }
    }
}

#[ComplexObject]
impl Invoice {
    /// The month's usage, one line per lease and charge period, in period order: lines
    /// whose lease still runs are accrued (`settled: false`) and already counted above.
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn usage(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<UsageLine>> {
        Ok(usage_page(
            ctx,
            AccountId(self.account),
            LeaseRole::Buyer,
            month(self.period)?,
            first,
            after,
        )
        .await?)
    }
}

#[ComplexObject]
impl Earning {
    /// The month's usage of the provider's leases, one line per lease and charge period:
    /// lines whose lease still runs are accrued revenue (`settled: false`).
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn usage(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<UsageLine>> {
        Ok(usage_page(
            ctx,
            self.provider,
            LeaseRole::Provider,
            month(self.period)?,
            first,
            after,
        )
        .await?)
    }
}

/// The month starting on `first_day`, as times.
fn month(first_day: NaiveDate) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let next = first_day
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(|| ApiError::internal(format!("no month after {first_day}")))?;
    let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
    Ok((at(first_day), at(next)))
}

/// A page of an account's usage lines within `range`, in period order.
pub(crate) async fn usage_page(
    ctx: &Context<'_>,
    account: AccountId,
    role: LeaseRole,
    range: (DateTime<Utc>, DateTime<Utc>),
    first: Option<i32>,
    after: Option<String>,
) -> Result<Page<UsageLine>, ApiError> {
    let limit = page_size(first)?;
    let cursor = after
        .as_deref()
        .map(|a| {
            let malformed = || ApiError::validation(format!("malformed cursor {a:?}"));
            let [micros, partition, lease] = parse_cursor::<3>(a)?;
            Ok::<_, ApiError>(UsageKey {
                charge_start: DateTime::from_timestamp_micros(micros).ok_or_else(malformed)?,
                lease: ledger::read::Key {
                    partition: i32::try_from(partition).map_err(|_| malformed())?,
                    id: lease,
                },
            })
        })
        .transpose()?;
    let page = state(ctx)
        .db(move |c| ledger::read::account_usage(c, account, role, range, cursor, limit))
        .await?;
    Ok(connection(
        page,
        after.is_some(),
        |l| {
            let key = l.usage_key();
            format!(
                "{}:{}:{}",
                key.charge_start.timestamp_micros(),
                key.lease.partition,
                key.lease.id
            )
        },
        UsageLine::from,
    ))
}

/// One lease's usage within one charge period.
#[derive(Debug, Clone, SimpleObject)]
pub struct UsageLine {
    pub lease_id: u64,
    pub buyer: u64,
    pub provider: u64,
    pub market: String,
    pub node: String,
    pub region: String,
    /// The charge period, `[chargeStart, chargeEnd)`.
    pub charge_start: DateTime<Utc>,
    pub charge_end: DateTime<Utc>,
    /// The charged time within it, `[usageStart, usageEnd)`.
    pub usage_start: DateTime<Utc>,
    pub usage_end: DateTime<Utc>,
    /// The month (its first day) the line is invoiced in.
    pub month: NaiveDate,
    pub gpus: u32,
    pub gpu_hours: Decimal,
    pub unit_price: Decimal,
    /// What the buyer is charged for it; the market's fee and the provider's share of it.
    pub amount: Decimal,
    pub fee: Decimal,
    pub provider_earned: Decimal,
    /// False while the lease runs: accrued revenue, paid when the lease ends.
    pub settled: bool,
    pub settled_at: Option<DateTime<Utc>>,
    /// The event that recorded the line and the command that caused it.
    pub event_seq: u64,
    pub command_offset: u64,
}

impl From<ledger::read::UsageLine> for UsageLine {
    fn from(l: ledger::read::UsageLine) -> UsageLine {
        UsageLine {
            lease_id: l.lease.0,
            buyer: l.buyer.0,
            provider: l.provider.0,
            market: l.market.to_string(),
            node: l.node.to_string(),
            region: l.region.to_string(),
            charge_start: l.charge_start,
            charge_end: l.charge_end,
            usage_start: l.usage_start,
            usage_end: l.usage_end,
            month: l.month,
            gpus: l.gpus,
            gpu_hours: l.gpu_hours,
            unit_price: l.unit_price,
            amount: l.amount,
            fee: l.fee,
            provider_earned: l.provider_earned,
            settled: l.settled_at.is_some(),
            settled_at: l.settled_at,
            event_seq: l.event_seq,
            command_offset: l.command_offset,
        }
    }
}

/// Revenue accrued and not yet settled: the usage of running leases, which their buyers
/// will be charged when they end. `gross` is what the buyers owe for it, `fees` the
/// market's part and `net` the providers'.
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct Accrued {
    /// The provider it is of; null for the whole market.
    pub provider: Option<u64>,
    pub leases: u64,
    pub lines: u64,
    pub gpu_hours: Decimal,
    pub gross: Decimal,
    pub fees: Decimal,
    pub net: Decimal,
    /// The start of the oldest usage not settled.
    pub since: Option<DateTime<Utc>>,
}

impl Accrued {
    pub fn of(provider: Option<AccountId>, a: ledger::read::Accrued) -> Accrued {
        Accrued {
            provider: provider.map(|p| p.0),
            leases: a.leases,
            lines: a.lines,
            gpu_hours: a.gpu_hours,
            gross: a.gross,
            fees: a.fees,
            net: a.net,
            since: a.since,
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

/// A provider's bond in one market, as the engine holds it now.
#[derive(Debug, Clone, SimpleObject)]
pub struct Bond {
    pub market: String,
    /// Posted and behind no GPU: what new asks can hold and `withdrawBond` can take.
    pub free: Decimal,
    /// Behind resting asks' GPUs and running leases; a provider failure slashes from it.
    pub held: Decimal,
    /// Withdrawn, waiting for the market's unbonding delay.
    pub unbonding: Decimal,
    /// The withdrawals waiting, soonest first.
    pub releases: Vec<BondRelease>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct BondRelease {
    pub amount: Decimal,
    /// When it becomes available again.
    pub release_at: DateTime<Utc>,
}

/// What `postBond` or `withdrawBond` did.
#[derive(Debug, Clone, SimpleObject)]
pub struct BondChange {
    pub market: String,
    pub amount: Decimal,
    /// For a withdrawal: when the amount is available again.
    pub release_at: Option<DateTime<Utc>>,
}

/// A provider failure that cost the provider's bond: the buyer's credit and the insurance
/// fund's part, the cause and the evidence it was judged by.
#[derive(Debug, Clone, SimpleObject)]
pub struct Slash {
    pub lease_id: u64,
    pub market: String,
    pub provider: u64,
    pub node: String,
    /// The buyer's account, for the parties (and finance and admin) only; null to others.
    pub buyer: Option<u64>,
    pub slashed: Decimal,
    pub buyer_credit: Decimal,
    pub insurance: Decimal,
    /// Why the lease failed, e.g. `node_silent`, `unhealthy`, `spec_mismatch`.
    pub cause: String,
    /// The report's sequence number, or the node's last heartbeat.
    pub evidence: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<ledger::read::Slash> for Slash {
    fn from(s: ledger::read::Slash) -> Slash {
        Slash {
            lease_id: s.lease_id.0,
            market: s.market.to_string(),
            provider: s.provider.0,
            node: s.node.to_string(),
            buyer: Some(s.buyer.0),
            slashed: s.slashed,
            buyer_credit: s.buyer_credit,
            insurance: s.insurance,
            cause: s.cause,
            evidence: s.evidence,
            at: s.at,
        }
    }
}

/// A provider's bonds in every market, with the withdrawals waiting, from the engine.
pub fn bonds_of(engine: &matching_engine::Engine, provider: AccountId) -> Vec<Bond> {
    let releases = engine.unbondings_of(provider);
    engine
        .bonds_of(provider)
        .into_iter()
        .map(|(market, b)| {
            let mut waiting: Vec<BondRelease> = releases
                .iter()
                .filter(|(m, ..)| *m == market)
                .map(|(_, amount, at)| BondRelease {
                    amount: crate::schema::six(amount.to_decimal()),
                    release_at: Utc
                        .timestamp_millis_opt(at.0)
                        .single()
                        .unwrap_or(DateTime::<Utc>::MAX_UTC),
                })
                .collect();
            waiting.sort_by_key(|r| r.release_at);
            Bond {
                market: market.to_string(),
                free: crate::schema::six(b.free.to_decimal()),
                held: crate::schema::six(b.held.to_decimal()),
                unbonding: crate::schema::six(b.unbonding.to_decimal()),
                releases: waiting,
            }
        })
        .collect()
}
