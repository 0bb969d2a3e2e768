//! The bridge itself: scans the chain for transfers into and out of the escrow account,
//! credits deposits through the market's API exactly once, and settles batches.
//!
//! Exactly once, across crashes anywhere:
//! - A deposit is keyed by (transaction hash, message index). The engine refuses a second
//!   credit of the same key, so a restart that credits again changes nothing.
//! - A settlement batch lives in the engine (one open at a time) from `openSettlement` to
//!   `confirmSettlement`/`failSettlement`. Its signed transaction is stored here *before* it
//!   is broadcast; a restart finds the stored bytes and either finds them on chain or sends
//!   the same bytes again, never new ones, while they can still land. Bytes are replaced
//!   only once the escrow account's sequence has moved past them without including them.
//!
//! `GPUMARKET_BRIDGE_KILL_AT=<step>` makes the bridge `kill -9` itself at that step (see
//! [`Step`]), for the crash tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use api_client::mutations::{
    ConfirmSettlement, ConfirmSettlementVariables, CreditChainDeposit, CreditChainDepositVariables,
    FailSettlement, FailSettlementVariables, OpenSettlement, OpenSettlementVariables,
};
use api_client::queries::{PendingSettlementQuery, SettlementDueQuery, SettlementDueVariables};
use api_client::types::SettlementBatch;
use api_client::{ClientError, ErrorCode, Id, MutationBuilder, QueryBuilder, U64};
use contract::{AccountId, Amount, SettlementId, TxHash};
use cosmrs::proto::tendermint::abci::Event;
use diesel::{Connection, PgConnection};
use ledger::read::SettlementFilter;
use ledger::store::{self, Seen, SeenTransfer, TxState};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::chain::ChainClient;
use crate::keys::EscrowKey;
use crate::tx::{sign_payouts, Account, Chain, Fees, Payout};
use crate::BridgeError;

/// Everything the bridge is told.
#[derive(Debug, Clone)]
pub struct Config {
    pub chain: Chain,
    /// The node's CometBFT JSON-RPC endpoint.
    pub rpc_url: String,
    /// The market's API and an admin key for it.
    pub api_url: String,
    pub api_key: String,
    /// Postgres with the market's migrations (the bridge's tables are there).
    pub database_url: String,
    /// Base units of the denom per unit of gas.
    pub gas_price: Decimal,
    /// Gas for a payout transaction: `gas_base` plus `gas_per_payout` per output.
    pub gas_base: u64,
    pub gas_per_payout: u64,
    /// Blocks on top of a transaction's before it counts (1: included is final, as on
    /// CometBFT chains with instant finality).
    pub confirmations: u64,
    /// A batch opens at least this long after the previous one...
    pub period: Duration,
    /// ...or as soon as the amount due reaches this.
    pub threshold: Decimal,
    /// Earnings below this wait for the next batch (withdrawals are always paid).
    pub min_payout: Decimal,
    /// Accounts per batch (one transaction); the rest go in the next batch.
    pub max_payouts: u32,
    /// How often the bridge looks at the chain and the market.
    pub poll: Duration,
    /// A broadcast transaction not included after this long is sent again (same bytes).
    pub rebroadcast_after: Duration,
}

/// The steps of the bridge's work where a crash test may kill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A deposit was credited by the engine, not yet marked here.
    Credited,
    /// The engine opened a batch, nothing is signed yet.
    Opened,
    /// The transaction is signed and stored, not broadcast.
    Signed,
    /// The node took the broadcast, not yet marked here.
    Broadcast,
    /// The transaction is final on chain, the engine not yet told.
    Included,
    /// The engine confirmed the batch, not yet marked here.
    Confirmed,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Credited => "credited",
            Step::Opened => "opened",
            Step::Signed => "signed",
            Step::Broadcast => "broadcast",
            Step::Included => "included",
            Step::Confirmed => "confirmed",
        }
    }
}

fn checkpoint(step: Step) {
    if std::env::var("GPUMARKET_BRIDGE_KILL_AT").is_ok_and(|s| s == step.name()) {
        warn!(
            step = step.name(),
            "GPUMARKET_BRIDGE_KILL_AT: kill -9 of the bridge"
        );
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

/// A settlement batch as the engine holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub id: u64,
    pub payouts: Vec<Payout>,
}

/// The engine's batch as the bridge pays it: every batch the engine holds has its id (only
/// a preview of one has none).
fn batch_of(batch: SettlementBatch) -> Result<Batch, BridgeError> {
    let id = batch
        .batch
        .ok_or_else(|| BridgeError::Api("a settlement batch without its id".into()))?;
    let payouts = batch
        .lines
        .into_iter()
        .map(|l| Payout {
            address: l.address,
            amount: l.amount,
        })
        .collect();
    Ok(Batch { id: id.0, payouts })
}

/// A transfer into or out of escrow, as seen in a final block.
#[derive(Debug, Clone)]
struct Transfer {
    msg_index: i32,
    output_index: i32,
    direction: &'static str,
    counterparty: String,
    base_amount: u128,
}

/// The running bridge.
pub struct Bridge {
    config: Config,
    key: EscrowKey,
    chain: ChainClient,
    api: api_client::Client,
    db: PgConnection,
    started: Instant,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("chain", &self.config.chain)
            .field("escrow", &self.key)
            .finish_non_exhaustive()
    }
}

fn ts(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Bridge {
    pub fn new(config: Config, key: EscrowKey) -> Result<Bridge, BridgeError> {
        if key.address().prefix() != config.chain.prefix {
            return Err(BridgeError::Config(format!(
                "the escrow key's address has prefix {}, the chain {}",
                key.address().prefix(),
                config.chain.prefix
            )));
        }
        if config.max_payouts == 0 || config.confirmations == 0 {
            return Err(BridgeError::Config(
                "max payouts and confirmations must be at least 1".into(),
            ));
        }
        Ok(Bridge {
            chain: ChainClient::new(&config.rpc_url),
            api: api_client::Client::new(&config.api_url, &config.api_key)
                .with_timeout(Duration::from_secs(15)),
            db: PgConnection::establish(&config.database_url)?,
            key,
            config,
            started: Instant::now(),
        })
    }

    pub fn escrow(&self) -> String {
        self.key.address().to_string()
    }

    /// Runs until `stop`, one round every `poll`; errors are logged and retried.
    pub fn run(&mut self, stop: &std::sync::atomic::AtomicBool) {
        info!(escrow = %self.escrow(), chain = %self.config.chain.chain_id, "bridge running");
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = self.round() {
                warn!(error = %e, "bridge round failed; retrying");
            }
            std::thread::sleep(self.config.poll);
        }
    }

    /// One round: scan, credit, settle.
    pub fn round(&mut self) -> Result<(), BridgeError> {
        self.scan()?;
        self.credit()?;
        self.settle()
    }

    // ----- Deposits and the chain's record of escrow transfers. -----

    fn scan(&mut self) -> Result<(), BridgeError> {
        let head = self.chain.head()?;
        if head.chain_id != self.config.chain.chain_id {
            return Err(BridgeError::Config(format!(
                "the node serves chain {}, not {}",
                head.chain_id, self.config.chain.chain_id
            )));
        }
        let Some(last_final) = (head.height + 1).checked_sub(self.config.confirmations) else {
            return Ok(());
        };
        let from = store::scanned_height(&mut self.db, &self.config.chain.chain_id)? + 1;
        if last_final < from {
            return Ok(());
        }
        let escrow = self.escrow();
        let mut rows = Vec::new();
        let mut times: HashMap<u64, i64> = HashMap::new();
        // The standard events: every transfer to escrow names it as recipient, and every
        // message escrow signs names it as sender.
        for (direction, condition) in [
            ("in", format!("transfer.recipient='{escrow}'")),
            ("out", format!("message.sender='{escrow}'")),
        ] {
            let query = format!("{condition} AND tx.height>={from} AND tx.height<={last_final}");
            for tx in self.chain.tx_search(&query)? {
                if tx.code != 0 {
                    continue;
                }
                let time = match times.get(&tx.height) {
                    Some(t) => *t,
                    None => {
                        let t = self.chain.block_time_ms(tx.height)?;
                        times.insert(tx.height, t);
                        t
                    }
                };
                // The memo is in no event: the deposit's account is read from the bytes.
                let memo = cosmrs::Tx::from_bytes(&tx.bytes)
                    .map_err(|e| BridgeError::Chain(format!("tx {}: {e}", tx.hash)))?
                    .body
                    .memo;
                let hash = TxHash::parse(&tx.hash)
                    .map_err(|e| BridgeError::Chain(format!("tx {}: {e}", tx.hash)))?;
                for t in transfers(&tx.events, &escrow, &self.config.chain.denom, direction) {
                    rows.push((hash, tx.height, time, memo.clone(), t));
                }
            }
        }
        let decimals = self.config.chain.decimals;
        let mut seen = Vec::with_capacity(rows.len());
        for (tx_hash, height, time, memo, t) in rows {
            let amount = market_amount(t.base_amount, decimals);
            let what = if t.direction == "out" {
                Seen::Payout
            } else {
                match (memo.trim().parse::<AccountId>(), amount) {
                    (_, None) => {
                        Seen::Unmatched("the amount is finer than the market's unit".to_owned())
                    }
                    (Err(_), _) => Seen::Unmatched("the memo is not an account id".to_owned()),
                    (Ok(account), Some(_)) => {
                        if account != AccountId::MARKET
                            && store::is_market_account(&mut self.db, account)?
                        {
                            Seen::Deposit(account)
                        } else {
                            Seen::Unmatched(format!("no account {account} in this market"))
                        }
                    }
                }
            };
            // Indexes count up from zero; a negative one is a node's mistake.
            let index = |i: i32| {
                u32::try_from(i).map_err(|_| BridgeError::Chain(format!("tx {tx_hash}: index {i}")))
            };
            seen.push(SeenTransfer {
                msg_index: index(t.msg_index)?,
                output_index: index(t.output_index)?,
                tx_hash,
                height,
                block_time: ts(time),
                counterparty: t.counterparty,
                memo,
                base_amount: t.base_amount,
                amount,
                seen: what,
            });
        }
        store::record_scan(&mut self.db, &self.config.chain.chain_id, last_final, &seen)?;
        if !seen.is_empty() {
            info!(
                transfers = seen.len(),
                through = last_final,
                "escrow transfers seen"
            );
        }
        Ok(())
    }

    fn credit(&mut self) -> Result<(), BridgeError> {
        for d in store::pending_deposits(&mut self.db)? {
            let answer = self
                .api
                .run(&CreditChainDeposit::build(CreditChainDepositVariables {
                    account: Id::new(d.account.to_string()),
                    amount: d.amount.normalize().to_string(),
                    tx_hash: d.tx_hash.to_string(),
                    msg_index: U64(d.msg_index.into()),
                }))?
                .credit_chain_deposit;
            checkpoint(Step::Credited);
            store::deposit_credited(&mut self.db, &d.tx_hash, d.msg_index)?;
            info!(tx = %d.tx_hash, msg = d.msg_index, account = d.account.0, amount = %d.amount,
                  duplicate = answer.duplicate, "deposit credited");
        }
        Ok(())
    }

    // ----- Settlement. -----

    fn settle(&mut self) -> Result<(), BridgeError> {
        let open = self
            .api
            .run(&PendingSettlementQuery::build(()))?
            .pending_settlement
            .map(batch_of)
            .transpose()?;
        self.close_finished(open.as_ref().map(|b| b.id))?;
        let batch = match open {
            Some(batch) => batch,
            None => {
                if !self.due()? {
                    return Ok(());
                }
                match self.open_batch() {
                    Ok(Some(batch)) => batch,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        };
        self.drive(&batch)
    }

    /// Opens a batch now; `None` when there is nothing to settle.
    pub fn open_batch(&mut self) -> Result<Option<Batch>, BridgeError> {
        let opened = self
            .api
            .run(&OpenSettlement::build(OpenSettlementVariables {
                min_payout: self.config.min_payout.to_string(),
                max_payouts: U64(self.config.max_payouts.into()),
            }));
        let batch = match opened {
            Ok(opened) => Some(batch_of(opened.open_settlement)?),
            Err(ClientError::Refused {
                code: ErrorCode::NothingToSettle,
                ..
            }) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(b) = &batch {
            info!(
                batch = b.id,
                payouts = b.payouts.len(),
                "settlement batch opened"
            );
            checkpoint(Step::Opened);
        }
        Ok(batch)
    }

    /// Local transactions of batches the engine has closed (a crash between telling the
    /// engine and marking it here) are marked from the chain's record.
    fn close_finished(&mut self, open: Option<u64>) -> Result<(), BridgeError> {
        let open = open.map(SettlementId);
        for (batch, tx_hash) in store::unfinished_settlement_txs(&mut self.db, open)? {
            let (state, height) = match self.chain.tx(&tx_hash.to_string())? {
                Some(c) if c.code == 0 => (TxState::Confirmed, Some(c.height)),
                other => (TxState::Failed, other.map(|c| c.height)),
            };
            store::settlement_tx_finished(
                &mut self.db,
                batch,
                state,
                height,
                "closed by the engine before a restart",
            )?;
        }
        Ok(())
    }

    fn due(&mut self) -> Result<bool, BridgeError> {
        let preview = self
            .api
            .run(&SettlementDueQuery::build(SettlementDueVariables {
                min_payout: self.config.min_payout.to_string(),
                max_payouts: U64(self.config.max_payouts.into()),
            }))?
            .settlement_due;
        if preview.lines.is_empty() {
            return Ok(false);
        }
        if preview.total >= self.config.threshold {
            return Ok(true);
        }
        let since =
            store::since_last_signed(&mut self.db)?.unwrap_or_else(|| self.started.elapsed());
        Ok(since >= self.config.period)
    }

    fn fees(&self, outputs: usize) -> Fees {
        let gas_limit = self.config.gas_base + self.config.gas_per_payout * outputs as u64;
        let amount = (self.config.gas_price * Decimal::from(gas_limit)).ceil();
        Fees {
            amount: u128::try_from(amount).unwrap_or(u128::MAX),
            gas_limit,
        }
    }

    fn sign(&self, batch: &Batch, account: Account) -> Result<crate::tx::SignedTx, BridgeError> {
        sign_payouts(
            &self.key,
            &self.config.chain,
            &batch.payouts,
            &format!("gpumarket settlement {}", batch.id),
            self.fees(batch.payouts.len()),
            account,
        )
    }

    fn fail(&mut self, batch: u64, reason: &str) -> Result<(), BridgeError> {
        warn!(
            batch,
            reason, "settlement failed for good; amounts return to the accounts"
        );
        match self
            .api
            .run(&FailSettlement::build(FailSettlementVariables {
                batch: Id::new(batch.to_string()),
                reason: reason.to_owned(),
            })) {
            Ok(_)
            | Err(ClientError::Refused {
                code: ErrorCode::SettlementNotOpen,
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        store::settlement_tx_finished(
            &mut self.db,
            SettlementId(batch),
            TxState::Failed,
            None,
            reason,
        )?;
        Ok(())
    }

    fn store(
        &mut self,
        batch: SettlementId,
        signed: &crate::tx::SignedTx,
        account: Account,
    ) -> Result<(), BridgeError> {
        let hash = TxHash::parse(&signed.hash).map_err(|e| BridgeError::Tx(e.to_string()))?;
        store::store_settlement_tx(
            &mut self.db,
            batch,
            &hash,
            &signed.bytes,
            account.number,
            account.sequence,
        )?;
        Ok(())
    }

    /// Takes the open batch one step further.
    fn drive(&mut self, batch: &Batch) -> Result<(), BridgeError> {
        let escrow = self.escrow();
        let id = SettlementId(batch.id);
        let stored = match store::settlement_tx(&mut self.db, id)? {
            Some(s) => s,
            None => {
                let Some(account) = self.chain.account(&escrow)? else {
                    return self.fail(
                        batch.id,
                        "the escrow account does not exist on chain (never funded)",
                    );
                };
                let signed = match self.sign(batch, account) {
                    Ok(s) => s,
                    Err(e @ (BridgeError::BadAmount { .. } | BridgeError::BadAddress(_))) => {
                        return self.fail(batch.id, &e.to_string());
                    }
                    Err(e) => return Err(e),
                };
                self.store(id, &signed, account)?;
                info!(batch = batch.id, tx = %signed.hash, sequence = account.sequence, "settlement signed and stored");
                checkpoint(Step::Signed);
                store::settlement_tx(&mut self.db, id)?.expect("just stored")
            }
        };
        let tx_hash = stored.tx_hash.to_string();
        if let Some(committed) = self.chain.tx(&tx_hash)? {
            let head = self.chain.head()?.height;
            if head + 1 < committed.height + self.config.confirmations {
                return Ok(());
            }
            checkpoint(Step::Included);
            if committed.code != 0 {
                let reason = format!(
                    "the chain included the transaction with code {}: {}",
                    committed.code, committed.log
                );
                return self.fail(batch.id, &reason);
            }
            match self
                .api
                .run(&ConfirmSettlement::build(ConfirmSettlementVariables {
                    batch: Id::new(batch.id.to_string()),
                    tx_hash: tx_hash.clone(),
                    height: U64(committed.height),
                })) {
                Ok(_)
                | Err(ClientError::Refused {
                    code: ErrorCode::SettlementNotOpen,
                    ..
                }) => {}
                Err(e) => return Err(e.into()),
            }
            checkpoint(Step::Confirmed);
            info!(batch = batch.id, tx = %tx_hash, height = committed.height, "settlement confirmed");
            store::settlement_tx_finished(
                &mut self.db,
                id,
                TxState::Confirmed,
                Some(committed.height),
                "",
            )?;
            return Ok(());
        }
        if stored.state == TxState::Broadcast && stored.idle < self.config.rebroadcast_after {
            return Ok(());
        }
        let answer = self.chain.broadcast(&stored.tx_bytes)?;
        match answer.code {
            // Accepted, or already in the mempool or the chain: the same bytes either way.
            0 | 19 => {
                checkpoint(Step::Broadcast);
                store::settlement_tx_broadcast(&mut self.db, id)?;
                info!(batch = batch.id, tx = %tx_hash, "settlement broadcast");
                Ok(())
            }
            32 => {
                // The sequence first, then the transaction: if it landed in between, the
                // lookup finds it; if the sequence moved past ours and it is not on chain,
                // these bytes can never land, and only then are new ones signed.
                let account = self.chain.account(&escrow)?.ok_or_else(|| {
                    BridgeError::Chain("the escrow account vanished from the chain".into())
                })?;
                if account.sequence > stored.sequence && self.chain.tx(&tx_hash)?.is_none() {
                    let signed = self.sign(batch, account)?;
                    warn!(batch = batch.id, old = %tx_hash, new = %signed.hash,
                          sequence = account.sequence, "the escrow's sequence moved past the stored transaction; signed again");
                    self.store(id, &signed, account)?;
                } else {
                    warn!(batch = batch.id, log = %answer.log, "sequence mismatch at broadcast; the stored transaction is still valid, retrying later");
                    store::settlement_tx_waits(&mut self.db, id)?;
                }
                Ok(())
            }
            code => self.fail(
                batch.id,
                &format!(
                    "the chain refused the transaction: code {code}: {}",
                    answer.log
                ),
            ),
        }
    }

    /// The bridge's state for `gpumarket bridge status`.
    pub fn status(&mut self) -> Result<Value, BridgeError> {
        let escrow = self.escrow();
        let head = self.chain.head();
        let balance = self.chain.balance(&escrow, &self.config.chain.denom);
        let open_batch = match self.api.run(&PendingSettlementQuery::build(())) {
            Ok(pending) => pending.pending_settlement.map_or(Value::Null, |b| {
                let lines: Vec<Value> = b
                    .lines
                    .iter()
                    .map(
                        |l| json!({"account": l.account, "address": l.address, "amount": l.amount}),
                    )
                    .collect();
                json!({"batch": b.batch, "total": b.total, "lines": lines})
            }),
            Err(e) => json!(BridgeError::from(e).to_string()),
        };
        let scanned = store::scanned_height(&mut self.db, &self.config.chain.chain_id)?;
        let backlog = store::bridge_backlog(&mut self.db)?;
        let every = SettlementFilter {
            account: None,
            state: None,
        };
        let last = ledger::read::settlements(&mut self.db, &every, None, 1)?
            .rows
            .into_iter()
            .next()
            .map_or_else(
                || "none".to_owned(),
                |s| {
                    let tx = s.tx_hash.map_or_else(|| "-".to_owned(), |h| h.to_string());
                    let at = s.closed_at.unwrap_or(s.opened_at);
                    format!("batch {} {} at {at}, tx {tx}", s.batch, s.state.as_str())
                },
            );
        Ok(json!({
            "escrow_address": escrow,
            "chain_id": self.config.chain.chain_id,
            "chain_height": head.as_ref().map(|h| json!(h.height)).unwrap_or_else(|e| json!(e.to_string())),
            "escrow_balance": balance
                .map(|b| json!(format!("{} {}", market_amount(b, self.config.chain.decimals).map_or(b.to_string(), |a| a.to_string()), self.config.chain.denom)))
                .unwrap_or_else(|e| json!(e.to_string())),
            "open_batch": open_batch,
            "scanned_height": scanned.to_string(),
            "unmatched_deposits": backlog.unmatched_deposits.to_string(),
            "uncredited_deposits": backlog.uncredited_deposits.to_string(),
            "unfinished_transactions": backlog.unfinished_transactions.to_string(),
            "last_settlement": last,
        }))
    }
}

/// Base units as the market's amount, when it converts exactly (six decimal places).
pub fn market_amount(base: u128, decimals: u32) -> Option<Decimal> {
    let base = i128::try_from(base).ok()?;
    let value = Decimal::try_from_i128_with_scale(base, decimals)
        .ok()?
        .normalize();
    Amount::from_decimal(value).ok().map(|a| a.to_decimal())
}

/// The transfers into (`in`) or out of (`out`) `escrow` in `denom`, read from a committed
/// transaction's events as the bank module emits them. Each `message` event with an
/// `action` starts a message (its `msg_index`, where the SDK gives one, else the next
/// index); the events before the first are the ante handler's, whose fee transfer is not
/// a deposit or a payout. Within a message, the sender is the transfer's `sender` or, for
/// a multi-send (whose transfers name none), the spender of its `coin_spent`; a transfer's
/// place among the message's transfers is its output index.
fn transfers(
    events: &[Event],
    escrow: &str,
    denom: &str,
    direction: &'static str,
) -> Vec<Transfer> {
    let mut out = Vec::new();
    let mut message: Option<i32> = None;
    let (mut output, mut spender) = (0, None);
    for e in events {
        let attribute = |key: &str| {
            e.attributes
                .iter()
                .find(|a| a.key == key)
                .map(|a| a.value.as_str())
        };
        if e.r#type == "message" && attribute("action").is_some() {
            let next = message.map_or(0, |m| m + 1);
            message = Some(
                attribute("msg_index")
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(next),
            );
            (output, spender) = (0, None);
            continue;
        }
        let Some(msg_index) = message else {
            continue;
        };
        match e.r#type.as_str() {
            "coin_spent" if spender.is_none() => spender = attribute("spender").map(str::to_owned),
            "transfer" => {
                let output_index = output;
                output += 1;
                let recipient = attribute("recipient").unwrap_or_default();
                let sender = attribute("sender")
                    .map(str::to_owned)
                    .or_else(|| spender.clone())
                    .unwrap_or_default();
                let counterparty = match direction {
                    "in" if recipient == escrow && sender != escrow => sender,
                    "out" if sender == escrow && recipient != escrow => recipient.to_owned(),
                    _ => continue,
                };
                let base_amount = coin_amount(attribute("amount").unwrap_or_default(), denom);
                if base_amount > 0 {
                    out.push(Transfer {
                        msg_index,
                        output_index,
                        direction,
                        counterparty,
                        base_amount,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// The amount of `denom` in coins as the SDK prints them: `12uusdc,5ibc/27A6...`.
fn coin_amount(coins: &str, denom: &str) -> u128 {
    coins
        .split(',')
        .filter_map(|coin| {
            let digits = coin.trim().find(|c: char| !c.is_ascii_digit())?;
            let (amount, coin_denom) = coin.trim().split_at(digits);
            (coin_denom == denom).then(|| amount.parse::<u128>().ok())?
        })
        .sum()
}
