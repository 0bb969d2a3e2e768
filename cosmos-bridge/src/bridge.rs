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

use contract::{AccountId, Amount};
use cosmrs::proto::tendermint::abci::Event;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bytea, Double, Integer, Nullable, Numeric, Text, Timestamptz};
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

/// The market's GraphQL API, as an admin.
#[derive(Debug)]
pub struct Api {
    http: reqwest::blocking::Client,
    url: String,
    key: String,
}

impl Api {
    pub fn new(url: &str, key: &str) -> Api {
        Api {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("an HTTP client with default settings"),
            url: format!("{}/graphql", url.trim_end_matches('/')),
            key: key.trim().to_owned(),
        }
    }

    pub fn gql(&self, query: &str, variables: Value) -> Result<Value, BridgeError> {
        let body: Value = self
            .http
            .post(&self.url)
            .bearer_auth(&self.key)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .and_then(|r| r.json())
            .map_err(|e| BridgeError::Api(e.to_string()))?;
        if let Some(error) = body["errors"].get(0) {
            let code = error["extensions"]["code"]
                .as_str()
                .unwrap_or("UNKNOWN")
                .to_owned();
            let message = error["message"].as_str().unwrap_or_default().to_owned();
            return Err(match code.as_str() {
                "UNAVAILABLE" | "RATE_LIMITED" | "ENGINE_TIMEOUT" | "INTERNAL" => {
                    BridgeError::Api(format!("{code}: {message}"))
                }
                _ => BridgeError::Refused { code, message },
            });
        }
        Ok(body["data"].clone())
    }
}

/// A settlement batch as the engine holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub id: u64,
    pub payouts: Vec<Payout>,
}

const BATCH_FIELDS: &str = "batch total lines { account address amount }";

fn batch_of(v: &Value) -> Result<Option<Batch>, BridgeError> {
    if v.is_null() {
        return Ok(None);
    }
    let bad = |what: &str| BridgeError::Api(format!("malformed batch: {what} in {v}"));
    let id = v["batch"].as_u64().ok_or_else(|| bad("batch"))?;
    let payouts = v["lines"]
        .as_array()
        .ok_or_else(|| bad("lines"))?
        .iter()
        .map(|l| {
            Ok(Payout {
                address: l["address"]
                    .as_str()
                    .ok_or_else(|| bad("address"))?
                    .to_owned(),
                amount: decimal(&l["amount"]).ok_or_else(|| bad("amount"))?,
            })
        })
        .collect::<Result<_, BridgeError>>()?;
    Ok(Some(Batch { id, payouts }))
}

fn decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    }
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

#[derive(QueryableByName)]
struct StoredTx {
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

#[derive(QueryableByName)]
struct PendingDeposit {
    #[diesel(sql_type = Text)]
    tx_hash: String,
    #[diesel(sql_type = Integer)]
    msg_index: i32,
    #[diesel(sql_type = BigInt)]
    account: i64,
    #[diesel(sql_type = Numeric)]
    amount: Decimal,
}

/// The running bridge.
pub struct Bridge {
    config: Config,
    key: EscrowKey,
    chain: ChainClient,
    api: Api,
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
            api: Api::new(&config.api_url, &config.api_key),
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
        let scanned: i64 = diesel::sql_query(
            "SELECT coalesce((SELECT scanned_height FROM bridge_cursor WHERE chain_id = $1), 0) AS n",
        )
        .bind::<Text, _>(&self.config.chain.chain_id)
        .get_result::<Count>(&mut self.db)?
        .n;
        let from = scanned as u64 + 1;
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
                for t in transfers(&tx.events, &escrow, &self.config.chain.denom, direction) {
                    rows.push((tx.hash.clone(), tx.height, time, memo.clone(), t));
                }
            }
        }
        let decimals = self.config.chain.decimals;
        let chain_id = self.config.chain.chain_id.clone();
        self.db.transaction(|db| {
            for (hash, height, time, memo, t) in &rows {
                let amount = market_amount(t.base_amount, decimals);
                let (state, account, note) = if t.direction == "out" {
                    ("payout", None, None)
                } else {
                    match (memo.trim().parse::<AccountId>(), amount) {
                        (_, None) => ("unmatched", None, Some("the amount is finer than the market's unit".to_owned())),
                        (Err(_), _) => ("unmatched", None, Some("the memo is not an account id".to_owned())),
                        (Ok(account), Some(_)) => {
                            let known: Count = diesel::sql_query(
                                "SELECT count(*) AS n FROM api_keys WHERE account = $1",
                            )
                            .bind::<BigInt, _>(account.0 as i64)
                            .get_result(db)?;
                            if known.n > 0 && account != AccountId::MARKET {
                                ("pending", Some(account.0 as i64), None)
                            } else {
                                ("unmatched", None, Some(format!("no account {account} in this market")))
                            }
                        }
                    }
                };
                diesel::sql_query(
                    "INSERT INTO bridge_transfers (tx_hash, msg_index, output_index, direction, \
                     height, block_time, counterparty, memo, base_amount, amount, account, state, note) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::numeric, $10, $11, $12, $13) \
                     ON CONFLICT DO NOTHING",
                )
                .bind::<Text, _>(hash)
                .bind::<Integer, _>(t.msg_index)
                .bind::<Integer, _>(t.output_index)
                .bind::<Text, _>(t.direction)
                .bind::<BigInt, _>(*height as i64)
                .bind::<Timestamptz, _>(ts(*time))
                .bind::<Text, _>(&t.counterparty)
                .bind::<Text, _>(memo)
                .bind::<Text, _>(t.base_amount.to_string())
                .bind::<Nullable<Numeric>, _>(amount)
                .bind::<Nullable<BigInt>, _>(account)
                .bind::<Text, _>(state)
                .bind::<Nullable<Text>, _>(note)
                .execute(db)?;
            }
            diesel::sql_query(
                "INSERT INTO bridge_cursor (chain_id, scanned_height) VALUES ($1, $2) \
                 ON CONFLICT (chain_id) DO UPDATE SET scanned_height = excluded.scanned_height",
            )
            .bind::<Text, _>(&chain_id)
            .bind::<BigInt, _>(last_final as i64)
            .execute(db)?;
            Ok::<_, BridgeError>(())
        })?;
        if !rows.is_empty() {
            info!(
                transfers = rows.len(),
                through = last_final,
                "escrow transfers seen"
            );
        }
        Ok(())
    }

    fn credit(&mut self) -> Result<(), BridgeError> {
        let pending: Vec<PendingDeposit> = diesel::sql_query(
            "SELECT tx_hash, msg_index, min(account) AS account, sum(amount) AS amount \
             FROM bridge_transfers WHERE direction = 'in' AND state = 'pending' \
             GROUP BY tx_hash, msg_index ORDER BY min(height), tx_hash, msg_index",
        )
        .load(&mut self.db)?;
        for d in pending {
            let answer = self.api.gql(
                "mutation($a: ID!, $m: String!, $h: String!, $i: Int!) { \
                 creditChainDeposit(account: $a, amount: $m, txHash: $h, msgIndex: $i) { duplicate } }",
                json!({"a": d.account.to_string(), "m": d.amount.normalize().to_string(),
                       "h": d.tx_hash, "i": d.msg_index}),
            )?;
            checkpoint(Step::Credited);
            diesel::sql_query(
                "UPDATE bridge_transfers SET state = 'credited' \
                 WHERE tx_hash = $1 AND msg_index = $2 AND direction = 'in'",
            )
            .bind::<Text, _>(&d.tx_hash)
            .bind::<Integer, _>(d.msg_index)
            .execute(&mut self.db)?;
            info!(tx = %d.tx_hash, msg = d.msg_index, account = d.account, amount = %d.amount,
                  duplicate = answer["creditChainDeposit"]["duplicate"].as_bool(), "deposit credited");
        }
        Ok(())
    }

    // ----- Settlement. -----

    fn settle(&mut self) -> Result<(), BridgeError> {
        let open = batch_of(
            &self.api.gql(
                &format!("{{ pendingSettlement {{ {BATCH_FIELDS} }} }}"),
                json!({}),
            )?["pendingSettlement"],
        )?;
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
        let opened = self.api.gql(
            &format!(
                "mutation($m: String!, $n: Int!) {{ openSettlement(minPayout: $m, maxPayouts: $n) {{ {BATCH_FIELDS} }} }}"
            ),
            json!({"m": self.config.min_payout.to_string(), "n": self.config.max_payouts}),
        );
        let batch = match opened {
            Ok(v) => batch_of(&v["openSettlement"])?,
            Err(BridgeError::Refused { code, .. }) if code == "NOTHING_TO_SETTLE" => None,
            Err(e) => return Err(e),
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
        let stale: Vec<BatchTx> = diesel::sql_query(
            "SELECT batch, tx_hash FROM bridge_settlement_txs \
             WHERE state NOT IN ('confirmed', 'failed') AND batch IS DISTINCT FROM $1",
        )
        .bind::<Nullable<BigInt>, _>(open.map(|b| b as i64))
        .load(&mut self.db)?;
        for s in stale {
            let included = self.chain.tx(&s.tx_hash)?;
            let (state, height) = match included {
                Some(c) if c.code == 0 => ("confirmed", Some(c.height as i64)),
                other => ("failed", other.map(|c| c.height as i64)),
            };
            self.finish(
                s.batch as u64,
                state,
                height,
                "closed by the engine before a restart",
            )?;
        }
        Ok(())
    }

    fn due(&mut self) -> Result<bool, BridgeError> {
        let preview = self.api.gql(
            "query($m: String!, $n: Int!) { settlementDue(minPayout: $m, maxPayouts: $n) { total lines { account } } }",
            json!({"m": self.config.min_payout.to_string(), "n": self.config.max_payouts}),
        )?;
        let preview = &preview["settlementDue"];
        if preview["lines"].as_array().is_none_or(|l| l.is_empty()) {
            return Ok(false);
        }
        if decimal(&preview["total"]).is_some_and(|t| t >= self.config.threshold) {
            return Ok(true);
        }
        let last: Option<f64> = diesel::sql_query(
            "SELECT extract(epoch FROM now() - max(signed_at))::float8 AS s FROM bridge_settlement_txs",
        )
        .get_result::<Seconds>(&mut self.db)?
        .s;
        let since = last.map_or(self.started.elapsed(), Duration::from_secs_f64);
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
        match self.api.gql(
            "mutation($b: ID!, $r: String!) { failSettlement(batch: $b, reason: $r) }",
            json!({"b": batch.to_string(), "r": reason}),
        ) {
            Ok(_) => {}
            Err(BridgeError::Refused { code, .. }) if code == "SETTLEMENT_NOT_OPEN" => {}
            Err(e) => return Err(e),
        }
        self.finish(batch, "failed", None, reason)
    }

    fn finish(
        &mut self,
        batch: u64,
        state: &str,
        height: Option<i64>,
        result: &str,
    ) -> Result<(), BridgeError> {
        // A batch that failed before anything was signed has no row; keep none.
        diesel::sql_query(
            "UPDATE bridge_settlement_txs SET state = $2, height = coalesce($3, height), \
             result = $4, updated_at = now() WHERE batch = $1",
        )
        .bind::<BigInt, _>(batch as i64)
        .bind::<Text, _>(state)
        .bind::<Nullable<BigInt>, _>(height)
        .bind::<Text, _>(result)
        .execute(&mut self.db)?;
        Ok(())
    }

    fn stored(&mut self, batch: u64) -> Result<Option<StoredTx>, BridgeError> {
        Ok(diesel::sql_query(
            "SELECT tx_hash, tx_bytes, sequence, state, \
             extract(epoch FROM now() - updated_at)::float8 AS idle_s \
             FROM bridge_settlement_txs WHERE batch = $1",
        )
        .bind::<BigInt, _>(batch as i64)
        .get_result(&mut self.db)
        .optional()?)
    }

    fn store(
        &mut self,
        batch: u64,
        signed: &crate::tx::SignedTx,
        account: Account,
    ) -> Result<(), BridgeError> {
        diesel::sql_query(
            "INSERT INTO bridge_settlement_txs (batch, tx_hash, tx_bytes, account_number, sequence, state) \
             VALUES ($1, $2, $3, $4, $5, 'signed') \
             ON CONFLICT (batch) DO UPDATE SET tx_hash = excluded.tx_hash, tx_bytes = excluded.tx_bytes, \
             account_number = excluded.account_number, sequence = excluded.sequence, state = 'signed', \
             replaced_hashes = bridge_settlement_txs.replaced_hashes || bridge_settlement_txs.tx_hash, \
             updated_at = now()",
        )
        .bind::<BigInt, _>(batch as i64)
        .bind::<Text, _>(&signed.hash)
        .bind::<Bytea, _>(&signed.bytes)
        .bind::<BigInt, _>(account.number as i64)
        .bind::<BigInt, _>(account.sequence as i64)
        .execute(&mut self.db)?;
        Ok(())
    }

    /// Takes the open batch one step further.
    fn drive(&mut self, batch: &Batch) -> Result<(), BridgeError> {
        let escrow = self.escrow();
        let stored = match self.stored(batch.id)? {
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
                self.store(batch.id, &signed, account)?;
                info!(batch = batch.id, tx = %signed.hash, sequence = account.sequence, "settlement signed and stored");
                checkpoint(Step::Signed);
                self.stored(batch.id)?.expect("just stored")
            }
        };
        if let Some(committed) = self.chain.tx(&stored.tx_hash)? {
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
            match self.api.gql(
                "mutation($b: ID!, $h: String!, $n: Int!) { confirmSettlement(batch: $b, txHash: $h, height: $n) }",
                json!({"b": batch.id.to_string(), "h": stored.tx_hash, "n": committed.height}),
            ) {
                Ok(_) => {}
                Err(BridgeError::Refused { code, .. }) if code == "SETTLEMENT_NOT_OPEN" => {}
                Err(e) => return Err(e),
            }
            checkpoint(Step::Confirmed);
            info!(batch = batch.id, tx = %stored.tx_hash, height = committed.height, "settlement confirmed");
            return self.finish(batch.id, "confirmed", Some(committed.height as i64), "");
        }
        if stored.state == "broadcast"
            && stored.idle_s < self.config.rebroadcast_after.as_secs_f64()
        {
            return Ok(());
        }
        let answer = self.chain.broadcast(&stored.tx_bytes)?;
        match answer.code {
            // Accepted, or already in the mempool or the chain: the same bytes either way.
            0 | 19 => {
                checkpoint(Step::Broadcast);
                diesel::sql_query(
                    "UPDATE bridge_settlement_txs SET state = 'broadcast', broadcasts = broadcasts + 1, \
                     updated_at = now() WHERE batch = $1",
                )
                .bind::<BigInt, _>(batch.id as i64)
                .execute(&mut self.db)?;
                info!(batch = batch.id, tx = %stored.tx_hash, "settlement broadcast");
                Ok(())
            }
            32 => {
                // The sequence first, then the transaction: if it landed in between, the
                // lookup finds it; if the sequence moved past ours and it is not on chain,
                // these bytes can never land, and only then are new ones signed.
                let account = self.chain.account(&escrow)?.ok_or_else(|| {
                    BridgeError::Chain("the escrow account vanished from the chain".into())
                })?;
                if account.sequence > stored.sequence as u64
                    && self.chain.tx(&stored.tx_hash)?.is_none()
                {
                    let signed = self.sign(batch, account)?;
                    warn!(batch = batch.id, old = %stored.tx_hash, new = %signed.hash,
                          sequence = account.sequence, "the escrow's sequence moved past the stored transaction; signed again");
                    self.store(batch.id, &signed, account)?;
                } else {
                    warn!(batch = batch.id, log = %answer.log, "sequence mismatch at broadcast; the stored transaction is still valid, retrying later");
                    diesel::sql_query(
                        "UPDATE bridge_settlement_txs SET updated_at = now() WHERE batch = $1",
                    )
                    .bind::<BigInt, _>(batch.id as i64)
                    .execute(&mut self.db)?;
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
        let pending = self.api.gql(
            &format!("{{ pendingSettlement {{ {BATCH_FIELDS} }} }}"),
            json!({}),
        );
        let rows: Vec<StatusRow> = diesel::sql_query(
            "SELECT 'scanned_height' AS k, coalesce(max(scanned_height), 0)::text AS v FROM bridge_cursor WHERE chain_id = $1 \
             UNION ALL SELECT 'unmatched_deposits', count(*)::text FROM bridge_transfers WHERE direction = 'in' AND state = 'unmatched' \
             UNION ALL SELECT 'uncredited_deposits', count(*)::text FROM bridge_transfers WHERE direction = 'in' AND state = 'pending' \
             UNION ALL SELECT 'unfinished_transactions', count(*)::text FROM bridge_settlement_txs WHERE state NOT IN ('confirmed', 'failed') \
             UNION ALL SELECT 'last_settlement', coalesce((SELECT format('batch %s %s at %s, tx %s', batch, state, coalesce(closed_at, opened_at), coalesce(tx_hash, '-')) \
                FROM settlements ORDER BY batch DESC LIMIT 1), 'none')",
        )
        .bind::<Text, _>(&self.config.chain.chain_id)
        .load(&mut self.db)?;
        let mut status = json!({
            "escrow_address": escrow,
            "chain_id": self.config.chain.chain_id,
            "chain_height": head.as_ref().map(|h| json!(h.height)).unwrap_or_else(|e| json!(e.to_string())),
            "escrow_balance": balance
                .map(|b| json!(format!("{} {}", market_amount(b, self.config.chain.decimals).map_or(b.to_string(), |a| a.to_string()), self.config.chain.denom)))
                .unwrap_or_else(|e| json!(e.to_string())),
            "open_batch": pending.map(|p| p["pendingSettlement"].clone()).unwrap_or_else(|e| json!(e.to_string())),
        });
        for r in rows {
            status[r.k] = json!(r.v);
        }
        Ok(status)
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Seconds {
    #[diesel(sql_type = Nullable<Double>)]
    s: Option<f64>,
}

#[derive(QueryableByName)]
struct BatchTx {
    #[diesel(sql_type = BigInt)]
    batch: i64,
    #[diesel(sql_type = Text)]
    tx_hash: String,
}

#[derive(QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = Text)]
    k: String,
    #[diesel(sql_type = Text)]
    v: String,
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
