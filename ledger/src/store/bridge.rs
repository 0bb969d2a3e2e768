//! The Cosmos bridge's own state: `bridge_transfers` (every transfer into or out of escrow
//! it saw in a final block), `bridge_cursor` (how far it has scanned) and
//! `bridge_settlement_txs` (each batch's signed transaction, stored before it is broadcast).
//! The bridge decides what a transfer means and when a batch moves on; these statements
//! record it. A projection rebuild leaves these tables alone.

use std::time::Duration;

use chrono::{DateTime, Utc};
use contract::{AccountId, SettlementId, TxHash};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{
    BigInt, Bool, Bytea, Double, Integer, Nullable, Numeric, Text, Timestamptz,
};
use rust_decimal::Decimal;

use crate::read::{param, parsed, unsigned};
use crate::LedgerError;

/// What a transfer seen on chain is to the market.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Into escrow for this account of the market, not yet credited.
    Deposit(AccountId),
    /// Into escrow for no account of the market (no memo, an unknown one, an amount finer
    /// than the market's unit): kept for manual handling, never guessed. The note says why.
    Unmatched(String),
    /// Out of escrow: a settlement's payout.
    Payout,
}

/// A transfer into or out of the escrow account, as seen in a final block.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenTransfer {
    pub tx_hash: TxHash,
    pub msg_index: u32,
    /// The output of a multi-send message (0 for a plain send).
    pub output_index: u32,
    pub height: u64,
    pub block_time: DateTime<Utc>,
    pub counterparty: String,
    pub memo: String,
    /// In the denom's base units.
    pub base_amount: u128,
    /// In the market's unit, when it converts exactly.
    pub amount: Option<Decimal>,
    pub seen: Seen,
}

/// A deposit seen on chain and not yet credited: one per (transaction, message), the
/// message's outputs to escrow summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDeposit {
    pub tx_hash: TxHash,
    pub msg_index: u32,
    pub account: AccountId,
    pub amount: Decimal,
}

/// Where a batch's stored transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    /// Stored, never sent.
    Signed,
    /// The node took it.
    Broadcast,
    Included,
    Confirmed,
    Failed,
}

impl TxState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Signed => "signed",
            TxState::Broadcast => "broadcast",
            TxState::Included => "included",
            TxState::Confirmed => "confirmed",
            TxState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for TxState {
    type Err = ();
    fn from_str(s: &str) -> Result<TxState, ()> {
        [
            TxState::Signed,
            TxState::Broadcast,
            TxState::Included,
            TxState::Confirmed,
            TxState::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or(())
    }
}

/// A batch's signed transaction as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementTx {
    pub tx_hash: TxHash,
    /// Exactly the bytes signed: what is sent, and sent again.
    pub tx_bytes: Vec<u8>,
    /// The escrow account's sequence the transaction uses.
    pub sequence: u64,
    pub state: TxState,
    /// Since it was stored, sent or last looked at.
    pub idle: Duration,
}

/// What is waiting for the bridge or an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeBacklog {
    /// Deposits for no account of the market, for manual handling.
    pub unmatched_deposits: u64,
    pub uncredited_deposits: u64,
    /// Batches' transactions neither confirmed nor failed.
    pub unfinished_transactions: u64,
}

const TRANSFERS: &str = "bridge_transfers";
const TXS: &str = "bridge_settlement_txs";

/// An index of a chain transaction's messages or outputs, as its `integer` column.
fn index(what: &'static str, value: u32) -> Result<i32, LedgerError> {
    i32::try_from(value).map_err(|_| LedgerError::OutOfRange {
        what,
        value: value.into(),
    })
}

#[derive(QueryableByName)]
struct Height {
    #[diesel(sql_type = BigInt)]
    height: i64,
}

/// The last final height of `chain_id` whose transfers are recorded (0 before the first scan).
pub fn scanned_height(conn: &mut PgConnection, chain_id: &str) -> Result<u64, LedgerError> {
    let row: Height = diesel::sql_query(
        "SELECT coalesce((SELECT scanned_height FROM bridge_cursor WHERE chain_id = $1), 0) \
         AS height",
    )
    .bind::<Text, _>(chain_id)
    .get_result(conn)?;
    unsigned("bridge_cursor", "scanned_height", row.height)
}

/// Records the transfers of `chain_id`'s blocks through `height` and moves the cursor there,
/// in one transaction, so a crash records a scan whole or not at all; a transfer recorded
/// before is kept as it was (a deposit credited since stays credited).
pub fn record_scan(
    conn: &mut PgConnection,
    chain_id: &str,
    height: u64,
    transfers: &[SeenTransfer],
) -> Result<(), LedgerError> {
    conn.transaction(|conn| {
        for t in transfers {
            let (direction, state, account, note) = match &t.seen {
                Seen::Deposit(account) => ("in", "pending", Some(param(account.0)?), None),
                Seen::Unmatched(note) => ("in", "unmatched", None, Some(note.as_str())),
                Seen::Payout => ("out", "payout", None, None),
            };
            diesel::sql_query(
                "INSERT INTO bridge_transfers (tx_hash, msg_index, output_index, direction, \
                 height, block_time, counterparty, memo, base_amount, amount, account, state, \
                 note) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::numeric, $10, $11, $12, $13) \
                 ON CONFLICT DO NOTHING",
            )
            .bind::<Text, _>(t.tx_hash.to_string())
            .bind::<Integer, _>(index("message index", t.msg_index)?)
            .bind::<Integer, _>(index("output index", t.output_index)?)
            .bind::<Text, _>(direction)
            .bind::<BigInt, _>(param(t.height)?)
            .bind::<Timestamptz, _>(t.block_time)
            .bind::<Text, _>(&t.counterparty)
            .bind::<Text, _>(&t.memo)
            .bind::<Text, _>(t.base_amount.to_string())
            .bind::<Nullable<Numeric>, _>(t.amount)
            .bind::<Nullable<BigInt>, _>(account)
            .bind::<Text, _>(state)
            .bind::<Nullable<Text>, _>(note)
            .execute(conn)?;
        }
        diesel::sql_query(
            "INSERT INTO bridge_cursor (chain_id, scanned_height) VALUES ($1, $2) \
             ON CONFLICT (chain_id) DO UPDATE SET scanned_height = excluded.scanned_height",
        )
        .bind::<Text, _>(chain_id)
        .bind::<BigInt, _>(param(height)?)
        .execute(conn)?;
        Ok(())
    })
}

/// Whether `account` is an account of this market: one that a key acts as.
pub fn is_market_account(conn: &mut PgConnection, account: AccountId) -> Result<bool, LedgerError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Bool)]
        found: bool,
    }
    let row: Found =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM api_keys WHERE account = $1) AS found")
            .bind::<BigInt, _>(param(account.0)?)
            .get_result(conn)?;
    Ok(row.found)
}

/// The deposits not yet credited, in the order the chain made them.
pub fn pending_deposits(conn: &mut PgConnection) -> Result<Vec<PendingDeposit>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        tx_hash: String,
        #[diesel(sql_type = Integer)]
        msg_index: i32,
        #[diesel(sql_type = BigInt)]
        account: i64,
        #[diesel(sql_type = Numeric)]
        amount: Decimal,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT tx_hash, msg_index, min(account) AS account, sum(amount) AS amount \
         FROM bridge_transfers WHERE direction = 'in' AND state = 'pending' \
         GROUP BY tx_hash, msg_index ORDER BY min(height), tx_hash, msg_index",
    )
    .load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(PendingDeposit {
                tx_hash: parsed(TRANSFERS, "tx_hash", &r.tx_hash)?,
                msg_index: unsigned(TRANSFERS, "msg_index", r.msg_index)?,
                account: AccountId(unsigned(TRANSFERS, "account", r.account)?),
                amount: r.amount,
            })
        })
        .collect()
}

/// The engine has the deposit of (`tx_hash`, `msg_index`).
pub fn deposit_credited(
    conn: &mut PgConnection,
    tx_hash: &TxHash,
    msg_index: u32,
) -> Result<(), LedgerError> {
    diesel::sql_query(
        "UPDATE bridge_transfers SET state = 'credited' \
         WHERE tx_hash = $1 AND msg_index = $2 AND direction = 'in'",
    )
    .bind::<Text, _>(tx_hash.to_string())
    .bind::<Integer, _>(index("message index", msg_index)?)
    .execute(conn)?;
    Ok(())
}

/// The transaction stored for `batch`, if one is.
pub fn settlement_tx(
    conn: &mut PgConnection,
    batch: SettlementId,
) -> Result<Option<SettlementTx>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        tx_hash: String,
        #[diesel(sql_type = Bytea)]
        tx_bytes: Vec<u8>,
        #[diesel(sql_type = BigInt)]
        sequence: i64,
        #[diesel(sql_type = Text)]
        state: String,
        #[diesel(sql_type = Double)]
        idle_s: f64,
    }
    let row: Option<Row> = diesel::sql_query(
        "SELECT tx_hash, tx_bytes, sequence, state, \
         extract(epoch FROM now() - updated_at)::float8 AS idle_s \
         FROM bridge_settlement_txs WHERE batch = $1",
    )
    .bind::<BigInt, _>(param(batch.0)?)
    .get_result(conn)
    .optional()?;
    row.map(|r| {
        Ok(SettlementTx {
            tx_hash: parsed(TXS, "tx_hash", &r.tx_hash)?,
            tx_bytes: r.tx_bytes,
            sequence: unsigned(TXS, "sequence", r.sequence)?,
            state: parsed(TXS, "state", &r.state)?,
            idle: seconds(r.idle_s),
        })
    })
    .transpose()
}

/// A span the database measured; a clock that stepped back reads as none.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}

/// Stores `batch`'s signed transaction, before it is broadcast. Bytes stored before for the
/// batch are replaced, their hash kept in `replaced_hashes`: the bridge replaces them only
/// once they can never land.
pub fn store_settlement_tx(
    conn: &mut PgConnection,
    batch: SettlementId,
    tx_hash: &TxHash,
    tx_bytes: &[u8],
    account_number: u64,
    sequence: u64,
) -> Result<(), LedgerError> {
    diesel::sql_query(
        "INSERT INTO bridge_settlement_txs (batch, tx_hash, tx_bytes, account_number, sequence, \
         state) VALUES ($1, $2, $3, $4, $5, 'signed') \
         ON CONFLICT (batch) DO UPDATE SET tx_hash = excluded.tx_hash, \
         tx_bytes = excluded.tx_bytes, account_number = excluded.account_number, \
         sequence = excluded.sequence, state = 'signed', \
         replaced_hashes = bridge_settlement_txs.replaced_hashes || bridge_settlement_txs.tx_hash, \
         updated_at = now()",
    )
    .bind::<BigInt, _>(param(batch.0)?)
    .bind::<Text, _>(tx_hash.to_string())
    .bind::<Bytea, _>(tx_bytes)
    .bind::<BigInt, _>(param(account_number)?)
    .bind::<BigInt, _>(param(sequence)?)
    .execute(conn)?;
    Ok(())
}

/// The node took `batch`'s transaction (again).
pub fn settlement_tx_broadcast(
    conn: &mut PgConnection,
    batch: SettlementId,
) -> Result<(), LedgerError> {
    diesel::sql_query(
        "UPDATE bridge_settlement_txs SET state = 'broadcast', broadcasts = broadcasts + 1, \
         updated_at = now() WHERE batch = $1",
    )
    .bind::<BigInt, _>(param(batch.0)?)
    .execute(conn)?;
    Ok(())
}

/// Starts `batch`'s transaction's wait for inclusion over, unchanged.
pub fn settlement_tx_waits(
    conn: &mut PgConnection,
    batch: SettlementId,
) -> Result<(), LedgerError> {
    diesel::sql_query("UPDATE bridge_settlement_txs SET updated_at = now() WHERE batch = $1")
        .bind::<BigInt, _>(param(batch.0)?)
        .execute(conn)?;
    Ok(())
}

/// `batch` is over: its transaction is in `state` (included at `height`, when it was), for
/// the reason `result`. A batch that ended before anything was signed has no row and keeps
/// none.
pub fn settlement_tx_finished(
    conn: &mut PgConnection,
    batch: SettlementId,
    state: TxState,
    height: Option<u64>,
    result: &str,
) -> Result<(), LedgerError> {
    diesel::sql_query(
        "UPDATE bridge_settlement_txs SET state = $2, height = coalesce($3, height), \
         result = $4, updated_at = now() WHERE batch = $1",
    )
    .bind::<BigInt, _>(param(batch.0)?)
    .bind::<Text, _>(state.as_str())
    .bind::<Nullable<BigInt>, _>(height.map(param).transpose()?)
    .bind::<Text, _>(result)
    .execute(conn)?;
    Ok(())
}

/// The batches other than `except` whose transaction is neither confirmed nor failed, with
/// its hash: batches the engine closed before the bridge marked them (a crash in between).
pub fn unfinished_settlement_txs(
    conn: &mut PgConnection,
    except: Option<SettlementId>,
) -> Result<Vec<(SettlementId, TxHash)>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        batch: i64,
        #[diesel(sql_type = Text)]
        tx_hash: String,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT batch, tx_hash FROM bridge_settlement_txs \
         WHERE state NOT IN ('confirmed', 'failed') AND batch IS DISTINCT FROM $1 ORDER BY batch",
    )
    .bind::<Nullable<BigInt>, _>(except.map(|b| param(b.0)).transpose()?)
    .load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok((
                SettlementId(unsigned(TXS, "batch", r.batch)?),
                parsed(TXS, "tx_hash", &r.tx_hash)?,
            ))
        })
        .collect()
}

/// How long ago the last batch's transaction was first signed; `None` before the first.
pub fn since_last_signed(conn: &mut PgConnection) -> Result<Option<Duration>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<Double>)]
        s: Option<f64>,
    }
    let row: Row = diesel::sql_query(
        "SELECT extract(epoch FROM now() - max(signed_at))::float8 AS s FROM bridge_settlement_txs",
    )
    .get_result(conn)?;
    Ok(row.s.map(seconds))
}

/// What is waiting for the bridge or an operator, for `gpumarket bridge status`.
pub fn bridge_backlog(conn: &mut PgConnection) -> Result<BridgeBacklog, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        unmatched: i64,
        #[diesel(sql_type = BigInt)]
        pending: i64,
        #[diesel(sql_type = BigInt)]
        unfinished: i64,
    }
    let row: Row = diesel::sql_query(
        "SELECT (SELECT count(*) FROM bridge_transfers WHERE direction = 'in' \
                 AND state = 'unmatched') AS unmatched, \
                (SELECT count(*) FROM bridge_transfers WHERE direction = 'in' \
                 AND state = 'pending') AS pending, \
                (SELECT count(*) FROM bridge_settlement_txs \
                 WHERE state NOT IN ('confirmed', 'failed')) AS unfinished",
    )
    .get_result(conn)?;
    Ok(BridgeBacklog {
        unmatched_deposits: unsigned(TRANSFERS, "count", row.unmatched)?,
        uncredited_deposits: unsigned(TRANSFERS, "count", row.pending)?,
        unfinished_transactions: unsigned(TXS, "count", row.unfinished)?,
    })
}
