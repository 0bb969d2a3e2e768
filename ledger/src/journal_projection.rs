//! The journal as a projection: the postings of [`crate::journal::postings`] written to
//! `journal_transactions` (one row per transaction, its legs as arrays; `postings` is a view
//! of them) and `balances`, and the net positions per account (`net_positions`) that
//! settlement pays out from.
//!
//! A batch is written with three statements whatever its size: the transactions with one
//! binary `COPY`, and balances and net positions with one upsert each per touched row, with
//! the batch's net change (column arrays bound to `unnest`, so a batch is not limited by
//! Postgres's 65,535 parameters per statement).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use contract::codec::{EventBody, EventRecord};
use contract::{AccountId, Event};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Numeric, Text};
use rust_decimal::Decimal;

use crate::columns::{amount, fit, micros_sum, timestamp};
use crate::journal::{self, Bucket};
use crate::projector::{Projection, Refusal};
use crate::schema::journal_transactions;
use crate::LedgerError;

/// The double-entry journal of every money movement, with balances per account and bucket.
#[derive(Debug, Default, Clone, Copy)]
pub struct Journal;

/// One journal transaction as it is copied into `journal_transactions`.
#[derive(Debug, Insertable)]
#[diesel(table_name = journal_transactions)]
#[diesel(treat_none_as_default_value = false)]
struct Transaction {
    partition: i32,
    event_seq: i64,
    command_offset: i64,
    kind: &'static str,
    at: DateTime<Utc>,
    accounts: Vec<i64>,
    buckets: Vec<&'static str>,
    amounts: Vec<Decimal>,
}

/// A batch of journal rows.
#[derive(Debug, Default)]
pub struct JournalBatch {
    /// The partition is only known when the batch is written.
    transactions: Vec<Transaction>,
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
    const TABLES: &'static [&'static str] = &["journal_transactions", "balances", "net_positions"];
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
            Event::Deposited { account, amount }
            | Event::ChainDeposited {
                account, amount, ..
            } => vec![(account, DEPOSITS, amount)],
            Event::Withdrawn { account, amount } => vec![(account, WITHDRAWALS, amount)],
            Event::SettlementConfirmed { ref payouts, .. } => payouts
                .iter()
                .map(|p| (p.account, WITHDRAWALS, p.amount))
                .collect(),
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
        for (posting, account) in postings.iter().zip(&accounts) {
            *batch.deltas.entry((*account, posting.bucket)).or_default() +=
                i128::from(posting.amount.micros());
        }
        batch.transactions.push(Transaction {
            partition: 0,
            event_seq: seq,
            command_offset,
            kind: event.kind(),
            at,
            amounts: postings.iter().map(|p| amount(p.amount)).collect(),
            buckets: postings.iter().map(|p| p.bucket.as_str()).collect(),
            accounts,
        });
        Ok(())
    }

    fn write(
        &mut self,
        conn: &mut PgConnection,
        partition: i32,
        batch: JournalBatch,
    ) -> Result<(), LedgerError> {
        if batch.transactions.is_empty() {
            return Ok(());
        }
        let mut transactions = batch.transactions;
        for t in &mut transactions {
            t.partition = partition;
        }
        diesel::copy_from(journal_transactions::table)
            .from_insertable(&transactions)
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
