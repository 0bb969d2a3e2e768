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

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use api_client::mutations::{
    ConfirmSettlement, ConfirmSettlementVariables, CreditChainDeposit, CreditChainDepositVariables,
    FailSettlement, FailSettlementVariables, OpenSettlement, OpenSettlementVariables,
};
use api_client::queries::{PendingSettlementQuery, SettlementDueQuery, SettlementDueVariables};
use api_client::types::SettlementBatch;
use api_client::{ClientError, ErrorCode, Id, MutationBuilder, QueryBuilder, U64};
use chrono::{DateTime, Utc};
use contract::{AccountId, Amount, SettlementId, TxHash};
use cosmrs::proto::tendermint::abci::Event;
use diesel::{Connection, PgConnection};
use ledger::export::{ChainTransfer, ChainView};
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

impl Config {
    /// What a payout transaction of `outputs` outputs pays: `gas_base + gas_per_payout ×
    /// outputs` gas at `gas_price`, rounded up to a base unit. A configuration whose fee does
    /// not fit the chain's numbers is refused, never wrapped or capped.
    pub fn fees(&self, outputs: u64) -> Result<Fees, BridgeError> {
        let too_much = || {
            BridgeError::Config(format!(
                "the fee of {outputs} payouts at gas price {} does not fit the chain's numbers",
                self.gas_price
            ))
        };
        let gas_limit = self
            .gas_per_payout
            .checked_mul(outputs)
            .and_then(|g| g.checked_add(self.gas_base))
            .ok_or_else(too_much)?;
        let amount = self
            .gas_price
            .checked_mul(Decimal::from(gas_limit))
            .ok_or_else(too_much)?
            .ceil();
        Ok(Fees {
            amount: u128::try_from(amount).map_err(|_| too_much())?,
            gas_limit,
        })
    }
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

/// A transfer into or out of escrow, as one transaction's events show it.
#[derive(Debug, Clone)]
struct Transfer {
    msg_index: u32,
    output_index: u32,
    direction: &'static str,
    counterparty: String,
    base_amount: u128,
}

/// A transfer into or out of escrow in a committed transaction.
#[derive(Debug, Clone)]
struct EscrowTransfer {
    tx_hash: TxHash,
    height: u64,
    block_time: DateTime<Utc>,
    /// The transaction's memo (in no event: read from its bytes).
    memo: String,
    transfer: Transfer,
}

/// Every transfer into and out of `escrow` in `denom` in the successful transactions of
/// blocks `from..=to`, found by the bank module's standard events: every transfer to escrow
/// names it as recipient, and every message escrow signs names it as sender.
fn escrow_transfers(
    chain: &ChainClient,
    escrow: &str,
    denom: &str,
    from: u64,
    to: u64,
) -> Result<Vec<EscrowTransfer>, BridgeError> {
    let mut found = Vec::new();
    let mut times: HashMap<u64, DateTime<Utc>> = HashMap::new();
    for (direction, condition) in [
        ("in", format!("transfer.recipient='{escrow}'")),
        ("out", format!("message.sender='{escrow}'")),
    ] {
        let query = format!("{condition} AND tx.height>={from} AND tx.height<={to}");
        for tx in chain.tx_search(&query)? {
            if tx.code != 0 {
                continue;
            }
            let block_time = match times.get(&tx.height) {
                Some(t) => *t,
                None => {
                    let t = chain.block_time(tx.height)?;
                    times.insert(tx.height, t);
                    t
                }
            };
            let bad =
                |e: &dyn std::fmt::Display| BridgeError::Chain(format!("tx {}: {e}", tx.hash));
            let memo = cosmrs::Tx::from_bytes(&tx.bytes)
                .map_err(|e| bad(&e))?
                .body
                .memo;
            let tx_hash = TxHash::parse(&tx.hash).map_err(|e| bad(&e))?;
            for transfer in transfers(&tx.events, escrow, denom, direction).map_err(|e| bad(&e))? {
                found.push(EscrowTransfer {
                    tx_hash,
                    height: tx.height,
                    block_time,
                    memo: memo.clone(),
                    transfer,
                });
            }
        }
    }
    Ok(found)
}

/// The escrow account as the chain reports it, for the reconciliation: its balance, and
/// every transfer into and out of it up to the height the balance was read at, one per
/// (transaction, message), in the market's unit exactly.
pub fn chain_view(
    chain: &ChainClient,
    denom: &str,
    decimals: u32,
    escrow: &str,
) -> Result<ChainView, BridgeError> {
    let in_units = |base: u128| {
        base_in_units(base, decimals).ok_or_else(|| {
            BridgeError::Chain(format!("{base} base units do not fit a decimal amount"))
        })
    };
    // The balance first, and the transfers of the blocks up to the height it was read at:
    // the two describe the same state however many blocks come meanwhile.
    let (balance, height) = chain.balance(escrow, denom)?;
    let mut view = ChainView {
        height,
        balance: in_units(balance)?,
        incoming: Vec::new(),
        outgoing: Vec::new(),
    };
    // (direction, transaction, message) → (height, block time, base units summed).
    type Message = (&'static str, TxHash, u32);
    let mut messages: BTreeMap<Message, (u64, DateTime<Utc>, u128)> = BTreeMap::new();
    for t in escrow_transfers(chain, escrow, denom, 1, height)? {
        let key = (t.transfer.direction, t.tx_hash, t.transfer.msg_index);
        let message = messages.entry(key).or_insert((t.height, t.block_time, 0));
        message.2 = message
            .2
            .checked_add(t.transfer.base_amount)
            .ok_or_else(|| BridgeError::Chain(format!("tx {}: the amounts overflow", t.tx_hash)))?;
    }
    for ((direction, tx_hash, msg_index), (height, block_time, base)) in messages {
        let transfer = ChainTransfer {
            tx_hash,
            msg_index,
            amount: in_units(base)?,
            height,
            block_time,
        };
        match direction {
            "in" => view.incoming.push(transfer),
            _ => view.outgoing.push(transfer),
        }
    }
    Ok(view)
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
        // Refused now rather than at the first batch: a denom's scale that overflows, a fee
        // that does not fit.
        crate::tx::base_unit(config.chain.decimals)?;
        config.fees(config.max_payouts.into())?;
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
        // Heights come from the node: one at the end of the numbers is its mistake, not a
        // reason to wrap or panic.
        let absurd = |what: &str| BridgeError::Chain(format!("{what} has no next height"));
        let Some(last_final) = head
            .height
            .checked_add(1)
            .ok_or_else(|| absurd("the chain's head"))?
            .checked_sub(self.config.confirmations)
        else {
            return Ok(());
        };
        let from = store::scanned_height(&mut self.db, &self.config.chain.chain_id)?
            .checked_add(1)
            .ok_or_else(|| absurd("the scanned height"))?;
        if last_final < from {
            return Ok(());
        }
        let escrow = self.escrow();
        let found = escrow_transfers(
            &self.chain,
            &escrow,
            &self.config.chain.denom,
            from,
            last_final,
        )?;
        let decimals = self.config.chain.decimals;
        let mut seen = Vec::with_capacity(found.len());
        for EscrowTransfer {
            tx_hash,
            height,
            block_time,
            memo,
            transfer: t,
        } in found
        {
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
            seen.push(SeenTransfer {
                msg_index: t.msg_index,
                output_index: t.output_index,
                tx_hash,
                height,
                block_time,
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

    fn sign(&self, batch: &Batch, account: Account) -> Result<crate::tx::SignedTx, BridgeError> {
        let outputs = u64::try_from(batch.payouts.len())
            .map_err(|_| BridgeError::Tx("more payouts than a transaction holds".into()))?;
        sign_payouts(
            &self.key,
            &self.config.chain,
            &batch.payouts,
            &format!("gpumarket settlement {}", batch.id),
            self.config.fees(outputs)?,
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
                .map(|(b, _)| json!(format!("{} {}", market_amount(b, self.config.chain.decimals).map_or(b.to_string(), |a| a.to_string()), self.config.chain.denom)))
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

/// Base units in the market's unit, exactly, however fine (`None` past what a decimal
/// holds).
pub fn base_in_units(base: u128, decimals: u32) -> Option<Decimal> {
    let base = i128::try_from(base).ok()?;
    Decimal::try_from_i128_with_scale(base, decimals)
        .ok()
        .map(|d| d.normalize())
}

/// Base units as the market's amount, when it converts exactly (six decimal places).
pub fn market_amount(base: u128, decimals: u32) -> Option<Decimal> {
    Amount::from_decimal(base_in_units(base, decimals)?)
        .ok()
        .map(|a| a.to_decimal())
}

/// The transfers into (`in`) or out of (`out`) `escrow` in `denom`, read from a committed
/// transaction's events as the bank module emits them. Each `message` event with an
/// `action` starts a message (its `msg_index`, where the SDK gives one, else the next
/// index); the events before the first are the ante handler's, whose fee transfer is not
/// a deposit or a payout. Within a message, the sender is the transfer's `sender` or, for
/// a multi-send (whose transfers name none), the spender of its `coin_spent`; a transfer's
/// place among the message's transfers is its output index. An index or an amount that is
/// not a number, or amounts past `u128`, are the node's error, never read as something else.
fn transfers(
    events: &[Event],
    escrow: &str,
    denom: &str,
    direction: &'static str,
) -> Result<Vec<Transfer>, String> {
    let mut out = Vec::new();
    let mut message: Option<u32> = None;
    let (mut output, mut spender) = (0u32, None);
    for e in events {
        let attribute = |key: &str| {
            e.attributes
                .iter()
                .find(|a| a.key == key)
                .map(|a| a.value.as_str())
        };
        if e.r#type == "message" && attribute("action").is_some() {
            message = Some(match attribute("msg_index") {
                Some(i) => i.parse().map_err(|_| format!("message index {i:?}"))?,
                None => match message {
                    None => 0,
                    Some(m) => m.checked_add(1).ok_or("too many messages")?,
                },
            });
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
                output = output.checked_add(1).ok_or("too many transfers")?;
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
                let base_amount = coin_amount(attribute("amount").unwrap_or_default(), denom)?;
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
    Ok(out)
}

/// The amount of `denom` in coins as the SDK prints them: `12uusdc,5ibc/27A6...`.
fn coin_amount(coins: &str, denom: &str) -> Result<u128, String> {
    let mut total = 0u128;
    for coin in coins.split(',').map(str::trim) {
        let digits = coin
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(coin.len());
        let (amount, coin_denom) = coin.split_at(digits);
        if coin_denom != denom {
            continue;
        }
        let amount: u128 = amount
            .parse()
            .map_err(|_| format!("the amount {coin:?} is not a u128"))?;
        total = total
            .checked_add(amount)
            .ok_or_else(|| format!("the amounts {coins:?} overflow u128"))?;
    }
    Ok(total)
}
