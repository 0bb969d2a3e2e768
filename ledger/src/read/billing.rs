//! Usage lines (one lease's usage in one charge period) and the revenue they accrue before
//! their lease settles.

use chrono::{DateTime, NaiveDate, Utc};
use contract::{AccountId, LeaseEndReason, LeaseId, MarketId, NodeId, Region};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Date, Integer, Nullable, Numeric, Text, Timestamptz};
use rust_decimal::Decimal;

use super::{param, parsed, plus_one, unsigned, Key, LeaseRole, Page};
use crate::LedgerError;

/// A lease's usage in one charge period. A lease ended by the old `EndLease` has one line
/// for all of it, its charge period being its whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageLine {
    /// The lease's key.
    pub key: Key,
    pub lease: LeaseId,
    /// The charge period, `[charge_start, charge_end)`.
    pub charge_start: DateTime<Utc>,
    pub charge_end: DateTime<Utc>,
    /// The charged time inside it, `[usage_start, usage_end)`.
    pub usage_start: DateTime<Utc>,
    pub usage_end: DateTime<Utc>,
    /// The first day of the month (UTC) the line is invoiced in.
    pub month: NaiveDate,
    pub buyer: AccountId,
    pub provider: AccountId,
    pub market: MarketId,
    pub node: NodeId,
    pub region: Region,
    pub gpus: u32,
    pub gpu_hours: Decimal,
    pub unit_price: Decimal,
    /// What the buyer is charged for the line; the market's fee and the provider's share of
    /// it.
    pub amount: Decimal,
    pub fee: Decimal,
    pub provider_earned: Decimal,
    /// The event that recorded the line (the accrual, or the old lease end) and the command
    /// that caused it.
    pub event_seq: u64,
    pub command_offset: u64,
    /// When the lease's end moved the money; `None` while the line is accrued revenue.
    pub settled_at: Option<DateTime<Utc>>,
    /// How the lease ended, once it has.
    pub end_reason: Option<LeaseEndReason>,
}

/// Where a page of usage lines continues: lines are in the order of their charge periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UsageKey {
    pub charge_start: DateTime<Utc>,
    pub lease: Key,
}

impl UsageLine {
    pub fn usage_key(&self) -> UsageKey {
        UsageKey {
            charge_start: self.charge_start,
            lease: self.key,
        }
    }
}

/// The lines whose charge period starts within `[from, to)`, of one buyer or of everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageFilter {
    pub buyer: Option<AccountId>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct UsageRow {
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    lease_id: i64,
    #[diesel(sql_type = Timestamptz)]
    charge_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    charge_end: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    usage_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    usage_end: DateTime<Utc>,
    #[diesel(sql_type = Date)]
    period: NaiveDate,
    #[diesel(sql_type = BigInt)]
    account: i64,
    #[diesel(sql_type = BigInt)]
    provider: i64,
    #[diesel(sql_type = Text)]
    market: String,
    #[diesel(sql_type = Text)]
    node: String,
    #[diesel(sql_type = Text)]
    region: String,
    #[diesel(sql_type = Integer)]
    gpus: i32,
    #[diesel(sql_type = Numeric)]
    gpu_hours: Decimal,
    #[diesel(sql_type = Numeric)]
    unit_price: Decimal,
    #[diesel(sql_type = Numeric)]
    amount: Decimal,
    #[diesel(sql_type = Numeric)]
    fee: Decimal,
    #[diesel(sql_type = Numeric)]
    provider_earned: Decimal,
    #[diesel(sql_type = BigInt)]
    event_seq: i64,
    #[diesel(sql_type = BigInt)]
    command_offset: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    settled_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    end_reason: Option<String>,
}

/// The columns of a [`UsageRow`], from `usage_lines u` joined with its lease `l`.
const USAGE_COLUMNS: &str = "u.partition, u.lease_id, u.charge_start, u.charge_end, \
    u.usage_start, u.usage_end, u.period, u.account, u.provider, u.market, u.node, u.region, \
    u.gpus, u.gpu_hours, u.unit_price, u.amount, u.fee, u.provider_earned, u.event_seq, \
    u.command_offset, u.settled_at, l.end_reason \
    FROM usage_lines u JOIN leases l ON l.partition = u.partition AND l.lease_id = u.lease_id";

impl UsageRow {
    fn line(self) -> Result<UsageLine, LedgerError> {
        const T: &str = "usage_lines";
        Ok(UsageLine {
            key: Key {
                partition: self.partition,
                id: self.lease_id,
            },
            lease: LeaseId(unsigned(T, "lease_id", self.lease_id)?),
            charge_start: self.charge_start,
            charge_end: self.charge_end,
            usage_start: self.usage_start,
            usage_end: self.usage_end,
            month: self.period,
            buyer: AccountId(unsigned(T, "account", self.account)?),
            provider: AccountId(unsigned(T, "provider", self.provider)?),
            market: parsed(T, "market", &self.market)?,
            node: parsed(T, "node", &self.node)?,
            region: parsed(T, "region", &self.region)?,
            gpus: unsigned(T, "gpus", self.gpus)?,
            gpu_hours: self.gpu_hours,
            unit_price: self.unit_price,
            amount: self.amount,
            fee: self.fee,
            provider_earned: self.provider_earned,
            event_seq: unsigned(T, "event_seq", self.event_seq)?,
            command_offset: unsigned(T, "command_offset", self.command_offset)?,
            settled_at: self.settled_at,
            end_reason: self
                .end_reason
                .map(|e| parsed("leases", "end_reason", &e))
                .transpose()?,
        })
    }
}

/// Usage lines in the order of their charge periods, after `after` (or from the filter's
/// start). The FOCUS export pages through it.
pub fn usage_lines(
    conn: &mut PgConnection,
    filter: &UsageFilter,
    after: Option<UsageKey>,
    limit: u32,
) -> Result<Page<UsageLine>, LedgerError> {
    let after = after.unwrap_or(UsageKey {
        charge_start: filter.from,
        lease: Key::START,
    });
    let rows: Vec<UsageRow> = diesel::sql_query(format!(
        "SELECT {USAGE_COLUMNS} \
         WHERE ($1::bigint IS NULL OR u.account = $1) AND u.charge_start >= $2 \
         AND u.charge_start < $3 AND (u.charge_start, u.partition, u.lease_id) > ($4, $5, $6) \
         ORDER BY u.charge_start, u.partition, u.lease_id LIMIT $7"
    ))
    .bind::<Nullable<BigInt>, _>(filter.buyer.map(|a| param(a.0)).transpose()?)
    .bind::<Timestamptz, _>(filter.from)
    .bind::<Timestamptz, _>(filter.to)
    .bind::<Timestamptz, _>(after.charge_start)
    .bind::<Integer, _>(after.lease.partition)
    .bind::<BigInt, _>(after.lease.id)
    .bind::<BigInt, _>(plus_one(limit))
    .load(conn)?;
    let rows = rows
        .into_iter()
        .map(UsageRow::line)
        .collect::<Result<_, LedgerError>>()?;
    Ok(Page::of(rows, limit))
}

/// One account's usage lines (as the buyer, the provider or either) whose charge period
/// starts within `[from, to)`, in the order of their charge periods, after `after`: what an
/// invoice or a provider's statement is made of, settled or still accruing.
pub fn account_usage(
    conn: &mut PgConnection,
    account: AccountId,
    role: LeaseRole,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    after: Option<UsageKey>,
    limit: u32,
) -> Result<Page<UsageLine>, LedgerError> {
    let (as_buyer, as_provider) = match role {
        LeaseRole::Buyer => (true, false),
        LeaseRole::Provider => (false, true),
        LeaseRole::Either => (true, true),
    };
    let after = after.unwrap_or(UsageKey {
        charge_start: from,
        lease: Key::START,
    });
    let rows: Vec<UsageRow> = diesel::sql_query(format!(
        "SELECT {USAGE_COLUMNS} \
         WHERE (($2 AND u.account = $1) OR ($3 AND u.provider = $1)) AND u.charge_start >= $4 \
         AND u.charge_start < $5 AND (u.charge_start, u.partition, u.lease_id) > ($6, $7, $8) \
         ORDER BY u.charge_start, u.partition, u.lease_id LIMIT $9"
    ))
    .bind::<BigInt, _>(param(account.0)?)
    .bind::<Bool, _>(as_buyer)
    .bind::<Bool, _>(as_provider)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Timestamptz, _>(after.charge_start)
    .bind::<Integer, _>(after.lease.partition)
    .bind::<BigInt, _>(after.lease.id)
    .bind::<BigInt, _>(plus_one(limit))
    .load(conn)?;
    let rows = rows
        .into_iter()
        .map(UsageRow::line)
        .collect::<Result<_, LedgerError>>()?;
    Ok(Page::of(rows, limit))
}

/// Revenue accrued and not yet settled: the usage of leases whose money has not moved yet
/// (they still run, mostly). It is what their buyers will be charged for it, of which the
/// market's fees and the providers' share.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Accrued {
    pub leases: u64,
    pub lines: u64,
    pub gpu_hours: Decimal,
    pub gross: Decimal,
    pub fees: Decimal,
    pub net: Decimal,
    /// The start of the oldest usage not settled.
    pub since: Option<DateTime<Utc>>,
}

/// A provider's accrued revenue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAccrued {
    pub provider: AccountId,
    pub accrued: Accrued,
}

#[derive(QueryableByName)]
struct AccruedRow {
    #[diesel(sql_type = BigInt)]
    provider: i64,
    #[diesel(sql_type = BigInt)]
    leases: i64,
    #[diesel(sql_type = BigInt)]
    lines: i64,
    #[diesel(sql_type = Numeric)]
    gpu_hours: Decimal,
    #[diesel(sql_type = Numeric)]
    gross: Decimal,
    #[diesel(sql_type = Numeric)]
    fees: Decimal,
    #[diesel(sql_type = Numeric)]
    net: Decimal,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    since: Option<DateTime<Utc>>,
}

impl AccruedRow {
    fn accrued(self) -> Result<Accrued, LedgerError> {
        Ok(Accrued {
            leases: unsigned("usage_lines", "leases", self.leases)?,
            lines: unsigned("usage_lines", "lines", self.lines)?,
            gpu_hours: self.gpu_hours,
            gross: self.gross,
            fees: self.fees,
            net: self.net,
            since: self.since,
        })
    }
}

/// The sums over the unsettled lines (the partial index holds exactly those).
const ACCRUED: &str = "count(DISTINCT (partition, lease_id)) AS leases, count(*) AS lines, \
    coalesce(sum(gpu_hours), 0) AS gpu_hours, coalesce(sum(amount), 0) AS gross, \
    coalesce(sum(fee), 0) AS fees, coalesce(sum(provider_earned), 0) AS net, \
    min(usage_start) AS since FROM usage_lines WHERE settled_seq IS NULL";

/// The market's revenue accrued and not settled, or one provider's.
pub fn accrued(
    conn: &mut PgConnection,
    provider: Option<AccountId>,
) -> Result<Accrued, LedgerError> {
    let row: AccruedRow = diesel::sql_query(format!(
        "SELECT coalesce($1, -1) AS provider, {ACCRUED} AND ($1::bigint IS NULL OR provider = $1)"
    ))
    .bind::<Nullable<BigInt>, _>(provider.map(|a| param(a.0)).transpose()?)
    .get_result(conn)?;
    row.accrued()
}

/// Each provider's revenue accrued and not settled, by account, after `after`.
pub fn accrued_by_provider(
    conn: &mut PgConnection,
    after: Option<AccountId>,
    limit: u32,
) -> Result<Page<ProviderAccrued>, LedgerError> {
    let rows: Vec<AccruedRow> = diesel::sql_query(format!(
        "SELECT provider, {ACCRUED} AND provider > $1 GROUP BY provider ORDER BY provider LIMIT $2"
    ))
    .bind::<BigInt, _>(after.map(|a| param(a.0)).transpose()?.unwrap_or(-1))
    .bind::<BigInt, _>(plus_one(limit))
    .load(conn)?;
    let rows = rows
        .into_iter()
        .map(|r| {
            Ok(ProviderAccrued {
                provider: AccountId(unsigned("usage_lines", "provider", r.provider)?),
                accrued: r.accrued()?,
            })
        })
        .collect::<Result<_, LedgerError>>()?;
    Ok(Page::of(rows, limit))
}
