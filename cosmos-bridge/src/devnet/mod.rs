//! The devnet simulator: a local stand-in for a Cosmos SDK chain on CometBFT 0.38, for tests
//! and demos.
//!
//! This module is its deterministic core: accounts with one denom, a mempool, and blocks.
//! [`ante`] and [`bank`] are the application (the SDK's ante handler and bank messages,
//! with their result codes, gas and events), [`consensus`] the chain of signed blocks,
//! [`query`] the event queries of `tx_search`, and [`server`] serves all of it over
//! CometBFT's JSON-RPC on loopback, with fault injection.
//!
//! Result codes are the Cosmos SDK's (codespace `sdk` unless noted): 2 tx decode, 4
//! unauthorized (signature), 5 insufficient funds, 7 invalid address, 8 invalid public key,
//! 9 unknown address, 10 invalid coins, 11 out of gas, 12 memo too large, 13 insufficient
//! fee, 15 no signatures, 18 invalid request, 19 tx already in mempool, 30 tx timeout
//! height, 32 wrong sequence; bank's 2 to 4 and 9 for malformed multi-sends.

use std::collections::{BTreeMap, HashMap};

use cosmrs::proto::prost::bytes::Bytes;
use cosmrs::proto::prost::Message;
use cosmrs::proto::tendermint::abci::{Event, ExecTxResult};
use sha2::{Digest, Sha256};

use crate::tx;

mod ante;
mod bank;
pub mod consensus;
pub mod query;
pub mod server;

use ante::Mode;
use consensus::{Proposal, Sealed, Validator};

/// A refusal, with the SDK's code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("code {code}: {log}")]
pub struct Refused {
    pub code: u32,
    /// `sdk` or the module that refused (`bank`).
    pub codespace: &'static str,
    pub log: String,
    /// The transaction's gas limit, and the gas used when it was refused.
    pub gas_wanted: u64,
    pub gas_used: u64,
}

/// What CheckTx says of a transaction it took into the mempool.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The transaction's hash (upper-case hex).
    pub hash: String,
    pub gas_wanted: u64,
    /// Gas of the ante handler (CheckTx does not run the messages).
    pub gas_used: u64,
    /// The ante handler's events (fee, sequence, signature).
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub number: u64,
    pub sequence: u64,
    pub balance: u128,
    /// The compressed secp256k1 key, once the account has signed a transaction.
    pub pub_key: Option<Vec<u8>>,
}

/// A transaction's fate once it is in a block (or what a simulation says it would be).
#[derive(Debug, Clone, PartialEq)]
pub struct TxResult {
    pub height: u64,
    pub index: u32,
    /// 0 for success, else the SDK's code (the fee is still charged once the ante handler
    /// passed, as on a chain).
    pub code: u32,
    pub codespace: &'static str,
    pub log: String,
    /// The messages' responses (`TxMsgData`), on success.
    pub data: Vec<u8>,
    pub gas_wanted: u64,
    pub gas_used: u64,
    pub events: Vec<Event>,
}

/// A committed block.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub height: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Transaction hashes, in order.
    pub txs: Vec<String>,
    /// The header, the block id and the commits, as CometBFT has them.
    pub sealed: Sealed,
    /// The application's state hash after this block (the next header carries it).
    pub app_hash: Vec<u8>,
    /// The Merkle root of this block's deterministic results (the next header carries it).
    pub results_hash: Vec<u8>,
}

/// A waiting transaction.
#[derive(Debug, Clone)]
struct Pending {
    hash: String,
    bytes: Vec<u8>,
    signer: String,
}

/// A chain with one denom and one validator.
#[derive(Debug, Clone)]
pub struct Devnet {
    pub chain_id: String,
    pub prefix: String,
    pub denom: String,
    /// The least fee CheckTx takes, in base units.
    pub min_fee: u128,
    accounts: BTreeMap<String, AccountState>,
    /// The fee collector module's address and balance. It is kept apart from the accounts
    /// so that it takes no account number: replayed chains keep the numbers their
    /// transactions were signed with.
    fee_collector: String,
    fees_collected: u128,
    /// Every base unit funded at genesis or by the faucet. Transactions only move money, so
    /// every balance, and every sum of balances, is at most this, which fits a `u128`.
    supply: u128,
    mempool: Vec<Pending>,
    results: HashMap<String, (Vec<u8>, TxResult)>,
    blocks: Vec<Block>,
    validator: Validator,
}

impl Devnet {
    pub fn new(chain_id: &str, prefix: &str, denom: &str, min_fee: u128) -> Devnet {
        // A module account's address is the hash of its name. With a prefix bech32 refuses,
        // no signer has an address either, so no event ever names the fee collector.
        let module: [u8; 20] = Sha256::digest(b"fee_collector")[..20]
            .try_into()
            .expect("20 bytes");
        let fee_collector = cosmrs::AccountId::new(prefix, &module)
            .map(|a| a.to_string())
            .unwrap_or_default();
        Devnet {
            chain_id: chain_id.to_owned(),
            prefix: prefix.to_owned(),
            denom: denom.to_owned(),
            min_fee,
            accounts: BTreeMap::new(),
            fee_collector,
            fees_collected: 0,
            supply: 0,
            mempool: Vec::new(),
            results: HashMap::new(),
            blocks: Vec::new(),
            validator: Validator::for_chain(chain_id),
        }
    }

    /// Genesis and faucet: credits `address`, creating its account.
    ///
    /// # Panics
    ///
    /// When the chain's supply would pass `u128::MAX` base units: a chain of one `u128`
    /// denom holds no more, and only this way in could ever make a balance overflow.
    pub fn fund(&mut self, address: &str, amount: u128) {
        self.supply = self
            .supply
            .checked_add(amount)
            .expect("a devnet's supply fits a u128");
        self.credit(address, amount);
    }

    /// Credits `address` with money that moved there (the supply is unchanged), creating
    /// its account.
    fn credit(&mut self, address: &str, amount: u128) {
        let next = self.accounts.len() as u64;
        let account = self
            .accounts
            .entry(address.to_owned())
            .or_insert(AccountState {
                number: next,
                sequence: 0,
                balance: 0,
                pub_key: None,
            });
        // At most the supply, which fits (see `supply`).
        account.balance += amount;
    }

    pub fn account(&self, address: &str) -> Option<&AccountState> {
        self.accounts.get(address)
    }

    /// The balance of `address` in the chain's denom, the fee collector's included.
    pub fn balance(&self, address: &str) -> u128 {
        let held = self.account(address).map_or(0, |a| a.balance);
        if address == self.fee_collector {
            held + self.fees_collected
        } else {
            held
        }
    }

    pub fn fee_collector(&self) -> &str {
        &self.fee_collector
    }

    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    pub fn height(&self) -> u64 {
        self.blocks.len() as u64
    }

    pub fn block(&self, height: u64) -> Option<&Block> {
        self.blocks
            .get(usize::try_from(height).ok()?.checked_sub(1)?)
    }

    /// A committed transaction: its bytes and result.
    pub fn tx(&self, hash: &str) -> Option<(&[u8], &TxResult)> {
        self.results.get(hash).map(|(b, r)| (b.as_slice(), r))
    }

    /// The committed transactions `query` matches, in chain order: hash, bytes, result.
    pub fn search(&self, query: &query::Query) -> Vec<(&str, &[u8], &TxResult)> {
        // A lookup by hash (how clients find their transaction) needs no walk of the chain.
        if let Some(hash) = query.hash() {
            return self
                .results
                .get_key_value(&hash)
                .filter(|(h, (_, r))| query.matches(r.height, h, &r.events))
                .map(|(h, (bytes, r))| (h.as_str(), bytes.as_slice(), r))
                .into_iter()
                .collect();
        }
        let heights = query.heights();
        let (from, to) = (
            (*heights.start()).max(1),
            (*heights.end()).min(self.height()),
        );
        (from..=to)
            .filter_map(|h| self.block(h))
            .flat_map(|b| b.txs.iter())
            .filter_map(|hash| {
                let (bytes, result) = self.results.get(hash)?;
                query
                    .matches(result.height, hash, &result.events)
                    .then_some((hash.as_str(), bytes.as_slice(), result))
            })
            .collect()
    }

    /// Waiting transactions.
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// The application's state hash now: after the latest block, or at genesis.
    pub fn app_hash(&self) -> Vec<u8> {
        self.blocks
            .last()
            .map_or_else(|| self.state_hash(), |b| b.app_hash.clone())
    }

    /// CheckTx and into the mempool.
    pub fn broadcast(&mut self, bytes: &[u8]) -> Result<Accepted, Refused> {
        let hash = tx::hash(bytes);
        if self.results.contains_key(&hash) || self.mempool.iter().any(|p| p.hash == hash) {
            return Err(Refused {
                code: 19,
                codespace: "sdk",
                log: "tx already in mempool".into(),
                gas_wanted: 0,
                gas_used: 0,
            });
        }
        let ante = self.ante(bytes, Mode::Check, self.height() + 1)?;
        self.mempool.push(Pending {
            hash: hash.clone(),
            bytes: bytes.to_vec(),
            signer: ante.signer,
        });
        Ok(Accepted {
            hash,
            gas_wanted: ante.gas_wanted,
            gas_used: ante.gas_used,
            events: ante.events,
        })
    }

    /// What delivering `bytes` in the next block would do, changing nothing: the SDK's
    /// simulation (signatures are not checked, the gas limit is not enforced).
    pub fn simulate(&self, bytes: &[u8]) -> Result<TxResult, Refused> {
        let height = self.height() + 1;
        let ante = self.ante(bytes, Mode::Simulate, height)?;
        let available = self.balance(&ante.signer) - ante.fee;
        let run = self.execute(&ante, available, u64::MAX)?;
        let mut events = ante.events;
        events.extend(run.events);
        Ok(TxResult {
            height,
            index: 0,
            code: 0,
            codespace: "",
            log: String::new(),
            data: run.data,
            gas_wanted: ante.gas_wanted,
            gas_used: run.gas_used,
            events,
        })
    }

    /// Re-applies a committed block (from [`server`]'s chain file): its transactions are
    /// delivered as they were, without CheckTx, so the state is rebuilt exactly.
    pub fn replay_block(&mut self, time_ms: i64, txs: Vec<Vec<u8>>) -> u64 {
        let txs = txs.into_iter().map(|b| (tx::hash(&b), b)).collect();
        self.commit(time_ms, txs)
    }

    /// Includes the mempool in a new block at `time_ms`, in order; returns its height.
    /// `include: false` commits an empty block and keeps the mempool (delayed inclusion).
    pub fn produce_block(&mut self, time_ms: i64, include: bool) -> u64 {
        let txs = if include {
            std::mem::take(&mut self.mempool)
                .into_iter()
                .map(|p| (p.hash, p.bytes))
                .collect()
        } else {
            Vec::new()
        };
        self.commit(time_ms, txs)
    }

    fn commit(&mut self, time_ms: i64, txs: Vec<(String, Vec<u8>)>) -> u64 {
        let height = self.height() + 1;
        // The header commits to the state before this block's transactions: CometBFT's
        // app hash lags a block.
        let app_hash = self.app_hash();
        let last_results_hash = self.blocks.last().map_or_else(
            || consensus::merkle_root::<Vec<u8>>(&[]),
            |b| b.results_hash.clone(),
        );
        let mut hashes = Vec::with_capacity(txs.len());
        let mut bytes = Vec::with_capacity(txs.len());
        let mut deterministic = Vec::with_capacity(txs.len());
        for (index, (hash, tx)) in txs.into_iter().enumerate() {
            let result = self.deliver(&tx, height, index as u32);
            // What CometBFT hashes of a result: the parts every node computes alike.
            // CometBFT's results carry gas as int64. The ante handler refuses limits past
            // it, so a count past it is an out-of-gas count, stated as the most it can be.
            let int64 = |gas: u64| i64::try_from(gas).unwrap_or(i64::MAX);
            deterministic.push(
                ExecTxResult {
                    code: result.code,
                    data: Bytes::from(result.data.clone()),
                    gas_wanted: int64(result.gas_wanted),
                    gas_used: int64(result.gas_used),
                    ..Default::default()
                }
                .encode_to_vec(),
            );
            hashes.push(hash.clone());
            bytes.push(tx.clone());
            self.results.insert(hash, (tx, result));
        }
        let sealed = consensus::seal(
            &self.validator,
            Proposal {
                chain_id: &self.chain_id,
                height: i64::try_from(height).expect("fewer blocks than i64::MAX"),
                time_ms,
                last: self.blocks.last().map(|b| &b.sealed),
                app_hash,
                last_results_hash,
            },
            &bytes,
        );
        let app_hash = self.state_hash();
        self.blocks.push(Block {
            height,
            time_ms,
            txs: hashes,
            sealed,
            app_hash,
            results_hash: consensus::merkle_root(&deterministic),
        });
        height
    }

    /// A hash of every account and the fee collector, in address order.
    fn state_hash(&self) -> Vec<u8> {
        let mut hasher = Sha256::new();
        for (address, a) in &self.accounts {
            let key = a.pub_key.as_deref().unwrap_or_default();
            hasher.update((address.len() as u64).to_be_bytes());
            hasher.update(address);
            hasher.update(a.number.to_be_bytes());
            hasher.update(a.sequence.to_be_bytes());
            hasher.update(a.balance.to_be_bytes());
            hasher.update((key.len() as u64).to_be_bytes());
            hasher.update(key);
        }
        hasher.update(self.fees_collected.to_be_bytes());
        hasher.finalize().to_vec()
    }
}
