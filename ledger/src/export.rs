//! Finance exports, read from the projections: the journal as CSV, usage in the FOCUS format,
//! and the reconciliation report.
//!
//! Each export streams: rows are read in pages by key and written as they come, so a period
//! of any size needs memory for one page. Times are UTC, amounts are decimal strings with six
//! places, exactly as stored.

use std::io::Write;

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeDelta, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Integer, Nullable, Numeric, Text, Timestamptz};
use rust_decimal::Decimal;

use crate::{read, LedgerError};

/// Rows (journal transactions, usage lines) read per round trip.
const PAGE: u32 = 5_000;

/// A half-open time range `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl Period {
    /// Refuses an empty or reversed range.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Period, LedgerError> {
        if from >= to {
            return Err(LedgerError::BadPeriod { from, to });
        }
        Ok(Period { from, to })
    }

    pub fn from(&self) -> DateTime<Utc> {
        self.from
    }

    pub fn to(&self) -> DateTime<Utc> {
        self.to
    }
}

/// How the reconciliation report cuts its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Day,
    Month,
}

impl Granularity {
    /// The start of the next period after `at`: the next midnight or first of a month (UTC).
    fn next(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.date_naive();
        let next: NaiveDate = match self {
            Granularity::Day => day + TimeDelta::days(1),
            Granularity::Month => {
                day.with_day(1).expect("every month has a first day") + Months::new(1)
            }
        };
        next.and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
    }
}

fn csv_error(e: csv::Error) -> LedgerError {
    LedgerError::Export(e.to_string())
}

/// Writes every posting of the journal transactions in `period` as CSV, in log time order;
/// returns the number of postings. `event` is the events-topic record (`partition/seq`) and
/// `command_offset` the commands-topic record that caused it, so every row traces back to
/// both.
pub fn journal_csv(
    conn: &mut PgConnection,
    period: Period,
    out: impl Write,
) -> Result<u64, LedgerError> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record([
        "at",
        "partition",
        "event_seq",
        "command_offset",
        "kind",
        "leg",
        "account",
        "bucket",
        "amount",
    ])
    .map_err(csv_error)?;
    let filter = read::JournalFilter {
        account: None,
        from: period.from,
        to: period.to,
    };
    let mut after = None;
    let mut written = 0u64;
    loop {
        let page = read::journal(conn, &filter, after, PAGE)?;
        for entry in &page.rows {
            for (leg, posting) in entry.postings.iter().enumerate() {
                csv.write_record([
                    entry
                        .at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    entry.partition.to_string(),
                    entry.event_seq.to_string(),
                    entry.command_offset.to_string(),
                    entry.kind.clone(),
                    leg.to_string(),
                    posting.account.to_string(),
                    posting.bucket.as_str().to_owned(),
                    posting.amount.to_string(),
                ])
                .map_err(csv_error)?;
                written += 1;
            }
        }
        match page.rows.last() {
            Some(last) if page.more => after = Some(last.key()),
            _ => break,
        }
    }
    csv.flush()?;
    Ok(written)
}

#[derive(QueryableByName)]
struct UsageRow {
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    lease_id: i64,
    #[diesel(sql_type = BigInt)]
    event_seq: i64,
    #[diesel(sql_type = BigInt)]
    command_offset: i64,
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
    #[diesel(sql_type = Text)]
    end_reason: String,
    #[diesel(sql_type = Timestamptz)]
    charge_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    charge_end: DateTime<Utc>,
    #[diesel(sql_type = Date)]
    period: NaiveDate,
}

/// The FOCUS 1.0 columns this export fills (the required ones that apply to usage charges,
/// then the market's own `x_` columns).
pub const FOCUS_COLUMNS: [&str; 40] = [
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "Tags",
    "x_EventSeq",
    "x_CommandOffset",
    "x_MarketFee",
];

/// Writes the usage lines whose charge ended in `period` in the FOCUS format; returns the
/// number of lines. `currency` is the ISO 4217 code of the market's unit (e.g. `USD` for a
/// USDC market).
///
/// A lease is one resource (`ResourceId` = `lease/<partition>/<lease id>`), priced per
/// GPU-hour at the price it traded at, which is list, contracted and effective price at
/// once: the market has no discounts or commitments, so those columns are null.
pub fn focus_csv(
    conn: &mut PgConnection,
    period: Period,
    currency: &str,
    out: impl Write,
) -> Result<u64, LedgerError> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(FOCUS_COLUMNS).map_err(csv_error)?;
    let mut after: (DateTime<Utc>, i32, i64) = (period.from, -1, -1);
    let mut written = 0u64;
    let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    loop {
        let rows: Vec<UsageRow> = diesel::sql_query(
            "SELECT partition, lease_id, event_seq, command_offset, account, provider, market, \
             node, region, gpus, gpu_hours, unit_price, amount, fee, end_reason, charge_start, \
             charge_end, period FROM usage_lines \
             WHERE charge_end < $2 AND (charge_end, partition, lease_id) > ($1, $3, $4) \
             ORDER BY charge_end, partition, lease_id LIMIT $5",
        )
        .bind::<Timestamptz, _>(after.0)
        .bind::<Timestamptz, _>(period.to)
        .bind::<Integer, _>(after.1)
        .bind::<BigInt, _>(after.2)
        .bind::<BigInt, _>(i64::from(PAGE))
        .load(conn)?;
        let Some(last) = rows.last() else {
            break;
        };
        after = (last.charge_end, last.partition, last.lease_id);
        for row in &rows {
            let billing_start = row
                .period
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc();
            let billing_end = Granularity::Month.next(billing_start);
            // FOCUS prices and costs are plain decimals; the list cost is what the lease
            // would cost at its price, the billed cost what the engine charged (rounded down
            // to the micro-unit).
            let list_cost = (row.unit_price * row.gpu_hours).round_dp(6);
            let tags = serde_json::json!({
                "provider": row.provider.to_string(),
                "node": row.node,
                "end_reason": row.end_reason,
            });
            csv.write_record([
                row.amount.to_string(),
                row.account.to_string(),
                format!("account {}", row.account),
                currency.to_owned(),
                iso(billing_end),
                iso(billing_start),
                "Usage".to_owned(),
                String::new(),
                format!(
                    "{} x {} GPU-hours on {} ({})",
                    row.gpus, row.market, row.node, row.end_reason
                ),
                "Usage-Based".to_owned(),
                iso(row.charge_end),
                iso(row.charge_start),
                String::new(),
                String::new(),
                row.gpu_hours.to_string(),
                "GPU-Hours".to_owned(),
                row.amount.to_string(),
                row.unit_price.to_string(),
                row.amount.to_string(),
                "gpumarket".to_owned(),
                list_cost.to_string(),
                row.unit_price.to_string(),
                "Dynamic".to_owned(),
                row.gpu_hours.to_string(),
                "GPU-Hours".to_owned(),
                "gpumarket".to_owned(),
                format!("provider {}", row.provider),
                row.region.clone(),
                row.region.clone(),
                format!("lease/{}/{}", row.partition, row.lease_id),
                format!("{} x{} on {}", row.market, row.gpus, row.node),
                "GPU Lease".to_owned(),
                "Compute".to_owned(),
                "GPU compute".to_owned(),
                row.market.clone(),
                format!("{}@{}", row.market, row.unit_price),
                tags.to_string(),
                row.event_seq.to_string(),
                row.command_offset.to_string(),
                row.fee.to_string(),
            ])
            .map_err(csv_error)?;
        }
        written += rows.len() as u64;
    }
    csv.flush()?;
    Ok(written)
}

/// One account bucket over one period of the reconciliation report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub account: i64,
    pub bucket: String,
    pub opening: Decimal,
    pub movements: Decimal,
    /// Summed independently of `opening` and `movements`.
    pub closing: Decimal,
}

/// Something that does not add up. A report with breaks is still written in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub period_start: DateTime<Utc>,
    pub check: &'static str,
    pub detail: String,
}

/// Opening balance + movements = closing balance per account and bucket for each period, and
/// the checks across accounts. Breaks are listed, never hidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    pub lines: Vec<Line>,
    pub breaks: Vec<Break>,
    /// How many journal transactions fell in the report's period.
    pub transactions: i64,
}

#[derive(QueryableByName)]
struct Sum {
    #[diesel(sql_type = BigInt)]
    account: i64,
    #[diesel(sql_type = Text)]
    bucket: String,
    #[diesel(sql_type = Numeric)]
    amount: Decimal,
}

#[derive(QueryableByName)]
struct ChainBreak {
    #[diesel(sql_type = Text)]
    check: String,
    #[diesel(sql_type = Text)]
    detail: String,
}

/// The ledger against the chain, for one period: settlements the ledger confirmed against
/// the escrow account's outgoing transfers the bridge saw on chain (per transaction hash),
/// credited chain deposits against the incoming transfers, and incoming transfers nobody
/// could credit (missing or unknown memo), which wait for manual handling.
const CHAIN_CHECKS: &str = "\
SELECT 'settlements = on-chain payouts' AS check, \
       format('settlement %s (tx %s) pays %s in the ledger but %s on chain', \
              s.batch, s.tx_hash, s.total, coalesce(o.total, 0)) AS detail \
FROM settlements s \
LEFT JOIN (SELECT tx_hash, sum(amount) AS total FROM bridge_transfers \
           WHERE direction = 'out' GROUP BY tx_hash) o ON o.tx_hash = s.tx_hash \
WHERE s.state = 'confirmed' AND s.closed_at >= $1 AND s.closed_at < $2 \
  AND o.total IS DISTINCT FROM s.total \
UNION ALL \
SELECT 'settlements = on-chain payouts', \
       format('transaction %s at height %s sent %s out of escrow, and no confirmed settlement has it', \
              t.tx_hash, min(t.height), sum(t.amount)) \
FROM bridge_transfers t \
WHERE t.direction = 'out' AND t.block_time >= $1 AND t.block_time < $2 \
  AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.tx_hash = t.tx_hash AND s.state = 'confirmed') \
GROUP BY t.tx_hash \
UNION ALL \
SELECT 'deposits = on-chain transfers', \
       format('deposit %s/%s credits %s to account %s, but the chain shows %s', \
              d.tx_hash, d.msg_index, d.amount, d.account, coalesce(t.total::text, 'no transfer')) \
FROM chain_deposits d \
LEFT JOIN (SELECT tx_hash, msg_index, sum(amount) AS total FROM bridge_transfers \
           WHERE direction = 'in' GROUP BY tx_hash, msg_index) t \
       ON t.tx_hash = d.tx_hash AND t.msg_index = d.msg_index \
WHERE d.at >= $1 AND d.at < $2 AND t.total IS DISTINCT FROM d.amount \
UNION ALL \
SELECT 'unmatched deposits', \
       format('transfer %s/%s of %s base units from %s (memo %s) at height %s: %s; handle by hand', \
              tx_hash, msg_index, base_amount, counterparty, quote_literal(memo), height, \
              coalesce(note, 'unknown account')) \
FROM bridge_transfers \
WHERE direction = 'in' AND state = 'unmatched' AND block_time >= $1 AND block_time < $2 \
ORDER BY 1, 2";

#[derive(QueryableByName)]
struct Unbalanced {
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    event_seq: i64,
    #[diesel(sql_type = Nullable<Numeric>)]
    total: Option<Decimal>,
}

#[derive(QueryableByName)]
struct Compared {
    #[diesel(sql_type = Numeric)]
    journal: Decimal,
    #[diesel(sql_type = Numeric)]
    billing: Decimal,
}

#[derive(QueryableByName)]
struct Latest {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    at: Option<DateTime<Utc>>,
    #[diesel(sql_type = BigInt)]
    transactions: i64,
}

type Balances = std::collections::BTreeMap<(i64, String), Decimal>;

/// The sum of the postings per account and bucket over `[from, to)`; from the beginning when
/// `from` is `None`.
fn sums(
    conn: &mut PgConnection,
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
) -> Result<Balances, LedgerError> {
    Ok(diesel::sql_query(
        "SELECT l.account, l.bucket, sum(l.amount) AS amount \
         FROM journal_transactions j \
         CROSS JOIN LATERAL unnest(j.accounts, j.buckets, j.amounts) AS l(account, bucket, amount) \
         WHERE j.at >= coalesce($1, '-infinity') AND j.at < $2 GROUP BY l.account, l.bucket",
    )
    .bind::<Nullable<Timestamptz>, _>(from)
    .bind::<Timestamptz, _>(to)
    .load::<Sum>(conn)?
    .into_iter()
    .map(|s| ((s.account, s.bucket), s.amount))
    .collect())
}

/// Builds the reconciliation report of `period`, cut by `granularity`.
///
/// Checks, each period: opening + movements = closing per account and bucket (the closing
/// balance is summed on its own, so a posting counted twice or lost between periods shows);
/// the closing balances of all accounts sum to zero; every journal transaction in the
/// period sums to zero and has postings; the fees the journal booked on lease ends equal the
/// fees on the period's usage lines (billing); the ledger agrees with the chain ([`CHAIN_CHECKS`]).
/// At the end: when the period reaches past the
/// last transaction, the closing balances equal the projector's running `balances`.
///
/// Every statement reads one snapshot (a read-only `REPEATABLE READ` transaction): the
/// projectors commit while the report runs, and sums read at different moments would
/// disagree by whatever committed in between, a break that is not one.
pub fn reconciliation(
    conn: &mut PgConnection,
    period: Period,
    granularity: Granularity,
) -> Result<Reconciliation, LedgerError> {
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(|conn| reconcile(conn, period, granularity))
}

fn reconcile(
    conn: &mut PgConnection,
    period: Period,
    granularity: Granularity,
) -> Result<Reconciliation, LedgerError> {
    let mut lines = Vec::new();
    let mut breaks = Vec::new();
    let mut opening = sums(conn, None, period.from)?;
    let mut start = period.from;
    while start < period.to {
        let end = granularity.next(start).min(period.to);
        let movements = sums(conn, Some(start), end)?;
        let closing = sums(conn, None, end)?;
        let keys: std::collections::BTreeSet<&(i64, String)> = opening
            .keys()
            .chain(movements.keys())
            .chain(closing.keys())
            .collect();
        for key in keys {
            let get = |m: &Balances| m.get(key).copied().unwrap_or_default();
            let line = Line {
                period_start: start,
                period_end: end,
                account: key.0,
                bucket: key.1.clone(),
                opening: get(&opening),
                movements: get(&movements),
                closing: get(&closing),
            };
            if line.opening + line.movements != line.closing {
                breaks.push(Break {
                    period_start: start,
                    check: "opening + movements = closing",
                    detail: format!(
                        "account {} {}: {} + {} = {}, but the closing balance is {}",
                        line.account,
                        line.bucket,
                        line.opening,
                        line.movements,
                        line.opening + line.movements,
                        line.closing
                    ),
                });
            }
            lines.push(line);
        }
        let total: Decimal = closing.values().copied().sum();
        if !total.is_zero() {
            breaks.push(Break {
                period_start: start,
                check: "all accounts sum to zero",
                detail: format!("the closing balances sum to {total}"),
            });
        }
        let unbalanced: Vec<Unbalanced> = diesel::sql_query(
            "SELECT partition, event_seq, total FROM ( \
               SELECT partition, event_seq, (SELECT sum(x) FROM unnest(amounts) x) AS total \
               FROM journal_transactions WHERE at >= $1 AND at < $2) t \
             WHERE total IS DISTINCT FROM 0 ORDER BY 1, 2",
        )
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(end)
        .load(conn)?;
        breaks.extend(unbalanced.into_iter().map(|u| Break {
            period_start: start,
            check: "every transaction balances",
            detail: match u.total {
                Some(total) => format!(
                    "transaction {}/{} sums to {total}",
                    u.partition, u.event_seq
                ),
                None => format!(
                    "transaction {}/{} has no postings",
                    u.partition, u.event_seq
                ),
            },
        }));
        let fees: Compared = diesel::sql_query(
            "SELECT \
               (SELECT coalesce(sum(l.amount), 0) FROM journal_transactions j \
                CROSS JOIN LATERAL unnest(j.buckets, j.amounts) AS l(bucket, amount) \
                WHERE j.kind = 'lease_ended' AND l.bucket = 'fees' \
                AND j.at >= $1 AND j.at < $2) AS journal, \
               (SELECT coalesce(sum(fee), 0) FROM usage_lines \
                WHERE charge_end >= $1 AND charge_end < $2) AS billing",
        )
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(end)
        .get_result(conn)?;
        if fees.journal != fees.billing {
            breaks.push(Break {
                period_start: start,
                check: "journal fees = billed fees",
                detail: format!(
                    "the journal booked {} of lease fees, the usage lines bill {} \
                     (are the journal and activity projectors at the same position?)",
                    fees.journal, fees.billing
                ),
            });
        }
        let chain: Vec<ChainBreak> = diesel::sql_query(CHAIN_CHECKS)
            .bind::<Timestamptz, _>(start)
            .bind::<Timestamptz, _>(end)
            .load(conn)?;
        breaks.extend(chain.into_iter().map(|b| Break {
            period_start: start,
            check: match b.check.as_str() {
                "settlements = on-chain payouts" => "settlements = on-chain payouts",
                "deposits = on-chain transfers" => "deposits = on-chain transfers",
                _ => "unmatched deposits",
            },
            detail: b.detail,
        }));
        opening = closing;
        start = end;
    }
    let latest: Latest = diesel::sql_query(
        "SELECT (SELECT max(at) FROM journal_transactions) AS at, \
         (SELECT count(*) FROM journal_transactions WHERE at >= $1 AND at < $2) AS transactions",
    )
    .bind::<Timestamptz, _>(period.from)
    .bind::<Timestamptz, _>(period.to)
    .get_result(conn)?;
    if latest.at.is_some_and(|at| at < period.to) {
        use crate::schema::balances::dsl as b;
        let running: Balances = b::balances
            .filter(b::amount.ne(Decimal::ZERO))
            .select((b::account, b::bucket, b::amount))
            .load::<(i64, String, Decimal)>(conn)?
            .into_iter()
            .map(|(account, bucket, amount)| ((account, bucket), amount))
            .collect();
        let closing: Balances = opening.into_iter().filter(|(_, a)| !a.is_zero()).collect();
        if running != closing {
            let keys: std::collections::BTreeSet<_> =
                running.keys().chain(closing.keys()).collect();
            for key in keys {
                let (r, c) = (running.get(key), closing.get(key));
                if r != c {
                    breaks.push(Break {
                        period_start: period.from,
                        check: "closing = running balances",
                        detail: format!(
                            "account {} {}: the journal sums to {}, the balances table holds {}",
                            key.0,
                            key.1,
                            c.copied().unwrap_or_default(),
                            r.copied().unwrap_or_default()
                        ),
                    });
                }
            }
        }
    }
    Ok(Reconciliation {
        lines,
        breaks,
        transactions: latest.transactions,
    })
}

impl Reconciliation {
    /// The report as CSV: one row per account, bucket and period, then one row per break
    /// (`account` empty, `status` = the check that failed, `detail` what it found).
    pub fn write_csv(&self, out: impl Write) -> Result<(), LedgerError> {
        let mut csv = csv::Writer::from_writer(out);
        let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        csv.write_record([
            "period_start",
            "period_end",
            "account",
            "bucket",
            "opening",
            "movements",
            "closing",
            "status",
            "detail",
        ])
        .map_err(csv_error)?;
        for line in &self.lines {
            let ok = line.opening + line.movements == line.closing;
            csv.write_record([
                iso(line.period_start),
                iso(line.period_end),
                line.account.to_string(),
                line.bucket.clone(),
                line.opening.to_string(),
                line.movements.to_string(),
                line.closing.to_string(),
                if ok { "ok" } else { "break" }.to_owned(),
                String::new(),
            ])
            .map_err(csv_error)?;
        }
        for b in &self.breaks {
            csv.write_record([
                iso(b.period_start),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                format!("break: {}", b.check),
                b.detail.clone(),
            ])
            .map_err(csv_error)?;
        }
        csv.flush()?;
        Ok(())
    }
}
