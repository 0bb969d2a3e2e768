//! The journal as a projection: the postings of [`crate::journal::postings`] written to
//! `journal_transactions`, `postings` and `balances`, and the net positions per account
//! (`net_positions`) that settlement pays out from.
//!
//! A batch is written with three statements whatever its size: each table gets one
//! multi-row `INSERT … SELECT FROM unnest(arrays)`, and balances get one upsert per touched
//! (account, bucket) with the batch's net change. Column arrays bind as single parameters,
//! so a batch is not limited by Postgres's 65,535 parameters per statement.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use contract::codec::{EventBody, EventRecord};
use contract::{AccountId, Event};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Numeric, SmallInt, Text, Timestamptz};
use rust_decimal::Decimal;

use crate::columns::{fit, micros_sum, timestamp, MICROS_SCALE};
use crate::journal::{self, Bucket};
use crate::projector::{Projection, Refusal};
use crate::LedgerError;

/// The double-entry journal of every money movement, with balances per account and bucket.
#[derive(Debug, Default, Clone, Copy)]
pub struct Journal;

/// A batch of journal rows, column by column as they are bound to `unnest`.
#[derive(Debug, Default)]
pub struct JournalBatch {
    seqs: Vec<i64>,
    command_offsets: Vec<i64>,
    kinds: Vec<&'static str>,
    ats: Vec<DateTime<Utc>>,
    posting_seqs: Vec<i64>,
    legs: Vec<i16>,
    accounts: Vec<i64>,
    buckets: Vec<&'static str>,
    amounts: Vec<Decimal>,
    /// Net change per (account, bucket) in micro-units. Ordered, so that concurrent
    /// projectors of different partitions (which share the market account's fee row) lock
    /// balance rows in the same order and cannot deadlock.
    deltas: BTreeMap<(i64, Bucket), i128>,
    /// Net position changes per account, in micro-units: deposits, withdrawals, earnings,
    /// usage charges, fees (the `net_positions` columns, in order).
    positions: BTreeMap<i64, [i128; 5]>,
}

const DEPOSITS: usize = 0;
const WITHDRAWALS: usize = 1;
const EARNINGS: usize = 2;
const USAGE_CHARGES: usize = 3;
const FEES: usize = 4;

impl Projection for Journal {
    const NAME: &'static str = "journal";
    const TABLES: &'static [&'static str] = &[
        "journal_transactions",
        "postings",
        "balances",
        "net_positions",
    ];
    type Batch = JournalBatch;

    fn add(&self, batch: &mut JournalBatch, record: &EventRecord) -> Result<(), Refusal> {
        let EventBody::Event(event) = &record.body else {
            // A rejected command moved nothing.
            return Ok(());
        };
        let postings = journal::postings(event)?;
        if postings.is_empty() {
            return Ok(());
        }
        // Check everything before pushing anything, so a refusal leaves the batch as it was.
        let seq = fit("seq", record.seq)?;
        let command_offset = fit("command offset", record.command_offset)?;
        let at = timestamp(record.at.0)?;
        let accounts = postings
            .iter()
            .map(|p| fit("account", p.account.0))
            .collect::<Result<Vec<i64>, Refusal>>()?;

        let positions = match *event {
            Event::Deposited { account, amount } => vec![(account, DEPOSITS, amount)],
            Event::Withdrawn { account, amount } => vec![(account, WITHDRAWALS, amount)],
            Event::LeaseEnded {
                buyer,
                provider,
                charged,
                fee,
                provider_earned,
                ..
            } => vec![
                (provider, EARNINGS, provider_earned),
                (buyer, USAGE_CHARGES, charged),
                (AccountId::MARKET, FEES, fee),
            ],
            _ => Vec::new(),
        };
        let positions = positions
            .into_iter()
            .map(|(account, column, amount)| {
                Ok((fit("account", account.0)?, column, amount.micros()))
            })
            .collect::<Result<Vec<_>, Refusal>>()?;

        for (account, column, micros) in positions {
            batch.positions.entry(account).or_default()[column] += i128::from(micros);
        }
        batch.seqs.push(seq);
        batch.command_offsets.push(command_offset);
        batch.kinds.push(event.kind());
        batch.ats.push(at);
        for ((leg, posting), account) in (0i16..).zip(&postings).zip(accounts) {
            batch.posting_seqs.push(seq);
            batch.legs.push(leg);
            batch.accounts.push(account);
            batch.buckets.push(posting.bucket.as_str());
            batch
                .amounts
                .push(Decimal::new(posting.amount.micros(), MICROS_SCALE));
            *batch.deltas.entry((account, posting.bucket)).or_default() +=
                i128::from(posting.amount.micros());
        }
        Ok(())
    }

    fn write(
        &mut self,
        conn: &mut PgConnection,
        partition: i32,
        batch: JournalBatch,
    ) -> Result<(), LedgerError> {
        if batch.seqs.is_empty() {
            return Ok(());
        }
        diesel::sql_query(
            "INSERT INTO journal_transactions (partition, event_seq, command_offset, kind, at) \
             SELECT $1, * FROM unnest($2, $3, $4, $5)",
        )
        .bind::<Integer, _>(partition)
        .bind::<Array<BigInt>, _>(&batch.seqs)
        .bind::<Array<BigInt>, _>(&batch.command_offsets)
        .bind::<Array<Text>, _>(&batch.kinds)
        .bind::<Array<Timestamptz>, _>(&batch.ats)
        .execute(conn)?;
        diesel::sql_query(
            "INSERT INTO postings (partition, event_seq, leg, account, bucket, amount) \
             SELECT $1, * FROM unnest($2, $3, $4, $5, $6)",
        )
        .bind::<Integer, _>(partition)
        .bind::<Array<BigInt>, _>(&batch.posting_seqs)
        .bind::<Array<SmallInt>, _>(&batch.legs)
        .bind::<Array<BigInt>, _>(&batch.accounts)
        .bind::<Array<Text>, _>(&batch.buckets)
        .bind::<Array<Numeric>, _>(&batch.amounts)
        .execute(conn)?;
        // Every touched row is upserted, a zero net change included, so the set of balance
        // rows does not depend on where batch boundaries fell.
        let mut accounts = Vec::with_capacity(batch.deltas.len());
        let mut buckets = Vec::with_capacity(batch.deltas.len());
        let mut amounts = Vec::with_capacity(batch.deltas.len());
        for ((account, bucket), delta) in batch.deltas {
            accounts.push(account);
            buckets.push(bucket.as_str());
            amounts.push(micros_sum(delta)?);
        }
        diesel::sql_query(
            "INSERT INTO balances (account, bucket, amount) \
             SELECT * FROM unnest($1, $2, $3) \
             ON CONFLICT (account, bucket) DO UPDATE SET amount = balances.amount + excluded.amount",
        )
        .bind::<Array<BigInt>, _>(&accounts)
        .bind::<Array<Text>, _>(&buckets)
        .bind::<Array<Numeric>, _>(&amounts)
        .execute(conn)?;

        let mut accounts = Vec::with_capacity(batch.positions.len());
        let mut columns: [Vec<Decimal>; 6] = Default::default();
        for (account, change) in batch.positions {
            accounts.push(account);
            for (column, micros) in columns.iter_mut().zip(change) {
                column.push(micros_sum(micros)?);
            }
            columns[5].push(micros_sum(change[WITHDRAWALS] - change[DEPOSITS])?);
        }
        if !accounts.is_empty() {
            diesel::sql_query(
                "INSERT INTO net_positions \
                 (account, deposits, withdrawals, earnings, usage_charges, fees, net_payable) \
                 SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (account) DO UPDATE SET \
                 deposits = net_positions.deposits + excluded.deposits, \
                 withdrawals = net_positions.withdrawals + excluded.withdrawals, \
                 earnings = net_positions.earnings + excluded.earnings, \
                 usage_charges = net_positions.usage_charges + excluded.usage_charges, \
                 fees = net_positions.fees + excluded.fees, \
                 net_payable = net_positions.net_payable + excluded.net_payable",
            )
            .bind::<Array<BigInt>, _>(&accounts)
            .bind::<Array<Numeric>, _>(&columns[0])
            .bind::<Array<Numeric>, _>(&columns[1])
            .bind::<Array<Numeric>, _>(&columns[2])
            .bind::<Array<Numeric>, _>(&columns[3])
            .bind::<Array<Numeric>, _>(&columns[4])
            .bind::<Array<Numeric>, _>(&columns[5])
            .execute(conn)?;
        }
        Ok(())
    }
}
