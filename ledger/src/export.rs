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
use diesel::sql_types::{BigInt, Integer, Nullable, Numeric, Text, Timestamptz};
use rust_decimal::Decimal;

use contract::{AccountId, TxHash};

use crate::journal::Bucket;
use crate::{read, LedgerError};

mod focus;
pub use focus::{focus_csv, FOCUS_COLUMNS, FOCUS_VERSION};

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
    /// What the market owes its customers against what the escrow holds on chain, when the
    /// report was given a [`ChainView`].
    pub solvency: Option<Solvency>,
}

/// The escrow account as the chain itself reports it, read by the caller from the chain's
/// node (the ledger does no network I/O). With one, the reconciliation checks the ledger
/// against the chain instead of against the bridge's own record of it, and reports
/// solvency.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainView {
    /// The height the view was read at: transfers above it are not in it.
    pub height: u64,
    /// The escrow's balance, in the ledger's unit (exactly: a remainder finer than the
    /// ledger's micro-unit is kept).
    pub balance: Decimal,
    /// Transfers into escrow, one per (transaction, message), its outputs to escrow summed.
    pub incoming: Vec<ChainTransfer>,
    /// Transfers out of escrow, one per (transaction, message), its outputs summed.
    pub outgoing: Vec<ChainTransfer>,
}

/// One message's transfer into or out of escrow, as the chain has it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainTransfer {
    pub tx_hash: TxHash,
    pub msg_index: u32,
    /// In the ledger's unit, exactly.
    pub amount: Decimal,
    pub height: u64,
    pub block_time: DateTime<Utc>,
}

/// Customer liabilities against escrow holdings, at the end of the report's period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solvency {
    /// The end of the report's period, where the liabilities are counted.
    pub at: DateTime<Utc>,
    /// What every account but the market's holds: available, held, in leases and settling.
    pub liabilities: Decimal,
    /// The part of `liabilities` the chain view cannot show yet: deposits credited from
    /// blocks above its height, and payouts it shows whose batch the ledger has not closed.
    pub in_flight: Decimal,
    /// The escrow's balance on chain.
    pub holdings: Decimal,
    /// The height the holdings were read at.
    pub height: u64,
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

/// The hashes of the bridge's stored transactions (and the ones they replaced) whose batch
/// the ledger has not closed: a payout on chain under one of them is on its way to being
/// confirmed, not a payout without a settlement.
const IN_FLIGHT_HASHES: &str = "\
SELECT h.tx_hash FROM bridge_settlement_txs b \
CROSS JOIN LATERAL unnest(b.replaced_hashes || b.tx_hash) AS h(tx_hash) \
WHERE NOT EXISTS (SELECT 1 FROM settlements s WHERE s.batch = b.batch AND s.state <> 'open')";

/// The ledger against the bridge's record of the chain, for one period: settlements the
/// ledger confirmed against the escrow account's outgoing transfers the bridge saw on chain
/// (per transaction hash), and credited chain deposits against the incoming transfers. What
/// the bridge cannot have seen yet is no break: a settlement confirmed above the height it
/// has scanned, a payout of a batch the ledger has not closed.
const BRIDGE_CHECKS: &str = "\
SELECT 'settlements = on-chain payouts' AS check, \
       format('settlement %s (tx %s) pays %s in the ledger but %s on chain', \
              s.batch, s.tx_hash, s.total, coalesce(o.total, 0)) AS detail \
FROM settlements s \
LEFT JOIN (SELECT tx_hash, sum(amount) AS total FROM bridge_transfers \
           WHERE direction = 'out' GROUP BY tx_hash) o ON o.tx_hash = s.tx_hash \
WHERE s.state = 'confirmed' AND s.closed_at >= $1 AND s.closed_at < $2 \
  AND o.total IS DISTINCT FROM s.total \
  AND s.height <= (SELECT coalesce(max(scanned_height), 0) FROM bridge_cursor) \
UNION ALL \
SELECT 'settlements = on-chain payouts', \
       format('transaction %s at height %s sent %s out of escrow, and no confirmed settlement has it', \
              t.tx_hash, min(t.height), sum(t.amount)) \
FROM bridge_transfers t \
WHERE t.direction = 'out' AND t.block_time >= $1 AND t.block_time < $2 \
  AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.tx_hash = t.tx_hash AND s.state = 'confirmed') \
  AND t.tx_hash NOT IN (SELECT tx_hash FROM in_flight) \
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
ORDER BY 1, 2";

/// Incoming transfers nobody could credit (missing or unknown memo), which wait for manual
/// handling: only the bridge knows why it could not credit one.
const UNMATCHED: &str = "\
SELECT 'unmatched deposits' AS check, \
       format('transfer %s/%s of %s base units from %s (memo %s) at height %s: %s; handle by hand', \
              tx_hash, msg_index, base_amount, counterparty, quote_literal(memo), height, \
              coalesce(note, 'unknown account')) AS detail \
FROM bridge_transfers \
WHERE direction = 'in' AND state = 'unmatched' AND block_time >= $1 AND block_time < $2 \
ORDER BY 2";

#[derive(QueryableByName)]
struct Settled {
    #[diesel(sql_type = BigInt)]
    batch: i64,
    #[diesel(sql_type = Text)]
    tx_hash: String,
    #[diesel(sql_type = Numeric)]
    total: Decimal,
    #[diesel(sql_type = BigInt)]
    height: i64,
    #[diesel(sql_type = Timestamptz)]
    closed_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Credited {
    #[diesel(sql_type = Text)]
    tx_hash: String,
    #[diesel(sql_type = Integer)]
    msg_index: i32,
    #[diesel(sql_type = BigInt)]
    account: i64,
    #[diesel(sql_type = Numeric)]
    amount: Decimal,
    /// Where the bridge saw it on chain, if it recorded it.
    #[diesel(sql_type = Nullable<BigInt>)]
    height: Option<i64>,
}

#[derive(QueryableByName)]
struct Hash {
    #[diesel(sql_type = Text)]
    tx_hash: String,
}

/// What the ledger says went through the chain, for checking it against a [`ChainView`]:
/// every confirmed settlement and the hashes of payouts in flight.
struct LedgerChain {
    confirmed: Vec<(u64, TxHash, Decimal, u64, DateTime<Utc>)>,
    in_flight: std::collections::BTreeSet<TxHash>,
}

impl LedgerChain {
    fn read(conn: &mut PgConnection) -> Result<LedgerChain, LedgerError> {
        let confirmed = diesel::sql_query(
            "SELECT batch, tx_hash, total, height, closed_at FROM settlements \
             WHERE state = 'confirmed' ORDER BY batch",
        )
        .load::<Settled>(conn)?
        .into_iter()
        .map(|s| {
            Ok((
                read::unsigned("settlements", "batch", s.batch)?,
                read::parsed("settlements", "tx_hash", &s.tx_hash)?,
                s.total,
                read::unsigned("settlements", "height", s.height)?,
                s.closed_at,
            ))
        })
        .collect::<Result<_, LedgerError>>()?;
        let in_flight = diesel::sql_query(IN_FLIGHT_HASHES)
            .load::<Hash>(conn)?
            .iter()
            .map(|h| read::parsed("bridge_settlement_txs", "tx_hash", &h.tx_hash))
            .collect::<Result<_, LedgerError>>()?;
        Ok(LedgerChain {
            confirmed,
            in_flight,
        })
    }
}

/// A credited chain deposit: its transaction and message, the account and amount credited,
/// and the height the bridge saw it at (if it recorded it).
type CreditedDeposit = (TxHash, u32, i64, Decimal, Option<u64>);

/// The chain deposits credited in `[from, to)`, with the height the bridge saw each at.
fn credited(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<CreditedDeposit>, LedgerError> {
    diesel::sql_query(
        "SELECT d.tx_hash, d.msg_index, d.account, d.amount, \
           (SELECT max(t.height) FROM bridge_transfers t WHERE t.tx_hash = d.tx_hash \
            AND t.msg_index = d.msg_index AND t.direction = 'in') AS height \
         FROM chain_deposits d \
         WHERE d.at >= $1 AND d.at < $2 ORDER BY d.tx_hash, d.msg_index",
    )
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .load::<Credited>(conn)?
    .into_iter()
    .map(|d| {
        Ok((
            read::parsed("chain_deposits", "tx_hash", &d.tx_hash)?,
            read::unsigned("chain_deposits", "msg_index", d.msg_index)?,
            d.account,
            d.amount,
            d.height
                .map(|h| read::unsigned("bridge_transfers", "height", h))
                .transpose()?,
        ))
    })
    .collect()
}

/// The ledger against the chain itself, for one period: confirmed settlements against the
/// escrow's outgoing transfers per transaction hash, payouts on chain that no confirmed
/// settlement has, and credited deposits against the incoming transfers. What the view
/// cannot show (a settlement confirmed or a deposit seen above the height it was read at)
/// and payouts of batches the ledger has not closed yet are no break. Amounts in the breaks
/// are written without trailing zeros, the ledger's (six places) and the chain's (its own
/// scale) alike, so the two read the same.
fn against_chain(
    conn: &mut PgConnection,
    view: &ChainView,
    ledger: &LedgerChain,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<Break>, LedgerError> {
    use std::collections::BTreeMap;
    let mut breaks = Vec::new();
    let mut chain_break = |check, detail| {
        breaks.push(Break {
            period_start: start,
            check,
            detail,
        })
    };
    let mut paid: BTreeMap<TxHash, Decimal> = BTreeMap::new();
    for t in &view.outgoing {
        *paid.entry(t.tx_hash).or_default() += t.amount;
    }
    for (batch, tx_hash, total, height, closed_at) in &ledger.confirmed {
        if *closed_at < start || *closed_at >= end || *height > view.height {
            continue;
        }
        let on_chain = paid.get(tx_hash).copied().unwrap_or_default();
        if on_chain != *total {
            chain_break(
                "settlements = on-chain payouts",
                format!(
                    "settlement {batch} (tx {tx_hash}) pays {} in the ledger but {} on chain \
                     (read at height {})",
                    total.normalize(),
                    on_chain.normalize(),
                    view.height
                ),
            );
        }
    }
    let settled: std::collections::BTreeSet<&TxHash> =
        ledger.confirmed.iter().map(|(_, hash, ..)| hash).collect();
    let mut orphans: BTreeMap<TxHash, (u64, Decimal)> = BTreeMap::new();
    for t in &view.outgoing {
        if t.block_time >= start
            && t.block_time < end
            && !settled.contains(&t.tx_hash)
            && !ledger.in_flight.contains(&t.tx_hash)
        {
            let orphan = orphans
                .entry(t.tx_hash)
                .or_insert((t.height, Decimal::ZERO));
            orphan.1 += t.amount;
        }
    }
    for (tx_hash, (height, amount)) in orphans {
        chain_break(
            "settlements = on-chain payouts",
            format!(
                "transaction {tx_hash} at height {height} sent {} out of escrow, and no \
                 confirmed settlement has it",
                amount.normalize()
            ),
        );
    }
    let received: BTreeMap<(TxHash, u32), Decimal> = view
        .incoming
        .iter()
        .map(|t| ((t.tx_hash, t.msg_index), t.amount))
        .collect();
    for (tx_hash, msg_index, account, amount, seen_at) in credited(conn, start, end)? {
        let shown = match received.get(&(tx_hash, msg_index)) {
            Some(on_chain) if *on_chain == amount => continue,
            Some(on_chain) => on_chain.normalize().to_string(),
            None if seen_at.is_some_and(|h| h > view.height) => continue,
            None => "no transfer".to_owned(),
        };
        chain_break(
            "deposits = on-chain transfers",
            format!(
                "deposit {tx_hash}/{msg_index} credits {} to account {account}, but the chain \
                 shows {shown} (read at height {})",
                amount.normalize(),
                view.height
            ),
        );
    }
    Ok(breaks)
}

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
struct Total {
    #[diesel(sql_type = Numeric)]
    total: Decimal,
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

/// Builds the reconciliation report of `period`, cut by `granularity`, against `chain` when
/// the caller read the chain (else against the bridge's record of it).
///
/// Checks, each period: opening + movements = closing per account and bucket (the closing
/// balance is summed on its own, so a posting counted twice or lost between periods shows);
/// the closing balances of all accounts sum to zero; every journal transaction in the
/// period sums to zero and has postings; the fees the journal booked on lease ends equal the
/// fees on the usage lines those ends settled (billing), over the events both projectors
/// have applied; the ledger agrees with the chain ([`against_chain`], or [`BRIDGE_CHECKS`]
/// without a view); the deposits nobody could credit ([`UNMATCHED`]). At the end: when the
/// period reaches past the last transaction, the closing balances equal the projector's
/// running `balances`; with a view, customer liabilities at the period's end do not exceed
/// the escrow's holdings ([`Solvency`]), which is meaningful for a period that ends now.
///
/// Every statement reads one snapshot (a read-only `REPEATABLE READ` transaction): the
/// projectors commit while the report runs, and sums read at different moments would
/// disagree by whatever committed in between, a break that is not one.
pub fn reconciliation(
    conn: &mut PgConnection,
    period: Period,
    granularity: Granularity,
    chain: Option<&ChainView>,
) -> Result<Reconciliation, LedgerError> {
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(|conn| reconcile(conn, period, granularity, chain))
}

fn reconcile(
    conn: &mut PgConnection,
    period: Period,
    granularity: Granularity,
    chain: Option<&ChainView>,
) -> Result<Reconciliation, LedgerError> {
    let mut lines = Vec::new();
    let mut breaks = Vec::new();
    let ledger_chain = chain.map(|_| LedgerChain::read(conn)).transpose()?;
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
        // The journal and activity projectors move on their own: compared over the events
        // both have applied, a lease end one of them has not reached yet is no break. The
        // journal books a lease's fee when its money moves, so the usage lines compared are
        // those that lease end settled, whatever periods they bill (a running lease's lines
        // are accrued, not booked).
        let fees: Compared = diesel::sql_query(
            "WITH applied AS (SELECT partition, min(next_offset) AS upto \
                              FROM projector_offsets WHERE projector IN ('journal', 'activity') \
                              GROUP BY partition HAVING count(*) = 2) \
             SELECT \
               (SELECT coalesce(sum(l.amount), 0) FROM journal_transactions j \
                JOIN applied a ON a.partition = j.partition AND j.event_seq < a.upto \
                CROSS JOIN LATERAL unnest(j.buckets, j.amounts) AS l(bucket, amount) \
                WHERE j.kind = 'lease_ended' AND l.bucket = 'fees' \
                AND j.at >= $1 AND j.at < $2) AS journal, \
               (SELECT coalesce(sum(u.fee), 0) FROM usage_lines u \
                JOIN applied a ON a.partition = u.partition AND u.settled_seq < a.upto \
                WHERE u.settled_at >= $1 AND u.settled_at < $2) AS billing",
        )
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(end)
        .get_result(conn)?;
        if fees.journal != fees.billing {
            breaks.push(Break {
                period_start: start,
                check: "journal fees = billed fees",
                detail: format!(
                    "the journal booked {} of lease fees, the usage lines bill {}",
                    fees.journal, fees.billing
                ),
            });
        }
        let mut recorded: Vec<ChainBreak> = Vec::new();
        match chain.zip(ledger_chain.as_ref()) {
            Some((view, ledger)) => {
                breaks.extend(against_chain(conn, view, ledger, start, end)?);
            }
            None => {
                recorded.extend(
                    diesel::sql_query(format!(
                        "WITH in_flight AS ({IN_FLIGHT_HASHES}) {BRIDGE_CHECKS}"
                    ))
                    .bind::<Timestamptz, _>(start)
                    .bind::<Timestamptz, _>(end)
                    .load(conn)?,
                );
            }
        }
        recorded.extend(
            diesel::sql_query(UNMATCHED)
                .bind::<Timestamptz, _>(start)
                .bind::<Timestamptz, _>(end)
                .load::<ChainBreak>(conn)?,
        );
        breaks.extend(recorded.into_iter().map(|b| Break {
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
    let solvency = match chain.zip(ledger_chain.as_ref()) {
        None => None,
        Some((view, ledger)) => {
            let customer = [
                Bucket::Available,
                Bucket::Held,
                Bucket::InLease,
                Bucket::Settling,
            ]
            .map(Bucket::as_str);
            let market = read::param(AccountId::MARKET.0)?;
            let liabilities: Decimal = opening
                .iter()
                .filter(|((account, bucket), _)| {
                    *account != market && customer.contains(&bucket.as_str())
                })
                .map(|(_, amount)| *amount)
                .sum();
            let credited_since: Total = diesel::sql_query(
                "SELECT coalesce(sum(d.amount), 0) AS total \
                 FROM chain_deposits d WHERE d.at < $1 AND \
                 (SELECT max(t.height) FROM bridge_transfers t WHERE t.tx_hash = d.tx_hash \
                  AND t.msg_index = d.msg_index AND t.direction = 'in') > $2",
            )
            .bind::<Timestamptz, _>(period.to)
            .bind::<BigInt, _>(read::param(view.height)?)
            .get_result(conn)?;
            let paying: Decimal = view
                .outgoing
                .iter()
                .filter(|t| ledger.in_flight.contains(&t.tx_hash))
                .map(|t| t.amount)
                .sum();
            let solvency = Solvency {
                at: period.to,
                liabilities,
                in_flight: credited_since.total + paying,
                holdings: view.balance,
                height: view.height,
            };
            let short = solvency.liabilities - solvency.in_flight - solvency.holdings;
            if short > Decimal::ZERO {
                breaks.push(Break {
                    period_start: period.from,
                    check: "customer liabilities <= escrow holdings",
                    detail: format!(
                        "the ledger owes customers {} ({} of it moving on chain), the escrow \
                         holds {} on chain at height {}: {short} short",
                        solvency.liabilities,
                        solvency.in_flight,
                        solvency.holdings,
                        solvency.height
                    ),
                });
            }
            Some(solvency)
        }
    };
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
        solvency,
    })
}

impl Reconciliation {
    /// The report as CSV: one row per account, bucket and period; with a chain view, the
    /// solvency figures (`status` = `solvency`, the amount as `closing`: the customers'
    /// liabilities, then the escrow's holdings); then one row per break (`account` empty,
    /// `status` = the check that failed, `detail` what it found).
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
        if let Some(s) = &self.solvency {
            for (account, bucket, amount, detail) in [
                (
                    "customers",
                    "liabilities",
                    s.liabilities,
                    format!("{} of it moving on chain", s.in_flight),
                ),
                (
                    "escrow",
                    "on chain",
                    s.holdings,
                    format!("at height {}", s.height),
                ),
            ] {
                csv.write_record([
                    String::new(),
                    iso(s.at),
                    account.to_owned(),
                    bucket.to_owned(),
                    String::new(),
                    String::new(),
                    amount.to_string(),
                    "solvency".to_owned(),
                    detail,
                ])
                .map_err(csv_error)?;
            }
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
