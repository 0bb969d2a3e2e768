//! The devnet simulator: a local stand-in for a Cosmos SDK chain, for tests and demos.
//!
//! This module is its deterministic core: a bank module that checks real Cosmos SDK
//! transactions the way a chain does (decode, signer's account number and sequence,
//! signature, fee, balances), keeps a mempool, and includes transactions in blocks.
//! [`server`] serves it over a CometBFT JSON-RPC subset on loopback, with fault injection.
//!
//! Result codes are the Cosmos SDK's: 2 tx decode, 4 unauthorized (signature), 5 insufficient
//! funds, 9 unknown address, 13 insufficient fee, 19 tx already in mempool, 32 wrong sequence.

use std::collections::{BTreeMap, HashMap};

use cosmrs::bank::{MsgMultiSend, MsgSend};
use cosmrs::tx::Msg;

use crate::tx;

pub mod server;

/// A refusal, with the SDK's code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("code {code}: {log}")]
pub struct Refused {
    pub code: u32,
    pub log: String,
}

fn refused(code: u32, log: impl Into<String>) -> Refused {
    Refused {
        code,
        log: log.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub number: u64,
    pub sequence: u64,
    pub balance: u128,
}

/// A transaction's fate once it is in a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxResult {
    pub height: u64,
    pub index: u32,
    /// 0 for success, else the SDK's code (the fee is still charged, as on a chain).
    pub code: u32,
    pub log: String,
    /// The signer.
    pub sender: String,
    /// The payouts it made: (address, amount in base units).
    pub transfers: Vec<(String, u128)>,
}

/// A committed block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub height: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Transaction hashes, in order.
    pub txs: Vec<String>,
}

/// A chain with one denom.
#[derive(Debug, Clone)]
pub struct Devnet {
    pub chain_id: String,
    pub prefix: String,
    pub denom: String,
    /// The least fee a transaction must pay, in base units.
    pub min_fee: u128,
    accounts: BTreeMap<String, AccountState>,
    mempool: Vec<(String, Vec<u8>)>,
    results: HashMap<String, (Vec<u8>, TxResult)>,
    blocks: Vec<Block>,
}

/// What a transaction asks for, once decoded and checked against the signer's account.
struct Checked {
    signer: String,
    fee: u128,
    debit: u128,
    /// The balance covers the messages as well as the fee.
    funded: bool,
    transfers: Vec<(String, u128)>,
}

impl Devnet {
    pub fn new(chain_id: &str, prefix: &str, denom: &str, min_fee: u128) -> Devnet {
        Devnet {
            chain_id: chain_id.to_owned(),
            prefix: prefix.to_owned(),
            denom: denom.to_owned(),
            min_fee,
            accounts: BTreeMap::new(),
            mempool: Vec::new(),
            results: HashMap::new(),
            blocks: Vec::new(),
        }
    }

    /// Genesis and faucet: credits `address`, creating its account.
    pub fn fund(&mut self, address: &str, amount: u128) {
        let next = self.accounts.len() as u64;
        let account = self
            .accounts
            .entry(address.to_owned())
            .or_insert(AccountState {
                number: next,
                sequence: 0,
                balance: 0,
            });
        account.balance += amount;
    }

    pub fn account(&self, address: &str) -> Option<&AccountState> {
        self.accounts.get(address)
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

    /// Committed transactions touching `address` (as signer, or as recipient of a transfer),
    /// in `heights`, in chain order.
    pub fn txs_of(
        &self,
        address: &str,
        as_sender: bool,
        heights: std::ops::RangeInclusive<u64>,
    ) -> Vec<(&str, &[u8], &TxResult)> {
        let (from, to) = (*heights.start().max(&1), *heights.end().min(&self.height()));
        (from..=to)
            .filter_map(|h| self.block(h))
            .flat_map(|b| b.txs.iter())
            .filter_map(|hash| {
                let (bytes, result) = self.results.get(hash)?;
                let touches = if as_sender {
                    result.sender == address
                } else {
                    result.transfers.iter().any(|(to, _)| to == address)
                };
                touches.then_some((hash.as_str(), bytes.as_slice(), result))
            })
            .collect()
    }

    /// Waiting transactions.
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// CheckTx and into the mempool; returns the hash.
    pub fn broadcast(&mut self, bytes: &[u8]) -> Result<String, Refused> {
        let hash = tx::hash(bytes);
        if self.results.contains_key(&hash) || self.mempool.iter().any(|(h, _)| *h == hash) {
            return Err(refused(19, "tx already in mempool or committed"));
        }
        // Sequences of this signer's transactions already waiting count, as in a mempool.
        self.check(bytes, true)?;
        self.mempool.push((hash.clone(), bytes.to_vec()));
        Ok(hash)
    }

    /// Re-applies a committed block (from [`server`]'s chain file): its transactions are
    /// delivered as they were, without CheckTx, so the state is rebuilt exactly.
    pub fn replay_block(&mut self, time_ms: i64, txs: Vec<Vec<u8>>) -> u64 {
        let waiting = std::mem::take(&mut self.mempool);
        self.mempool = txs.into_iter().map(|b| (tx::hash(&b), b)).collect();
        let height = self.produce_block(time_ms, true);
        self.mempool = waiting;
        height
    }

    /// Includes the mempool in a new block at `time_ms`, in order; returns its height.
    /// `include: false` commits an empty block and keeps the mempool (delayed inclusion).
    pub fn produce_block(&mut self, time_ms: i64, include: bool) -> u64 {
        let height = self.height() + 1;
        let pending = if include {
            std::mem::take(&mut self.mempool)
        } else {
            Vec::new()
        };
        let mut hashes = Vec::with_capacity(pending.len());
        for (index, (hash, bytes)) in pending.into_iter().enumerate() {
            let result = match self.check(&bytes, false) {
                Ok(checked) => {
                    // As on a chain: once the ante handler passed, the fee is charged and the
                    // sequence used even if the messages then fail.
                    let account = self
                        .accounts
                        .get_mut(&checked.signer)
                        .expect("checked signers exist");
                    account.sequence += 1;
                    account.balance -= checked.fee;
                    if checked.funded {
                        account.balance -= checked.debit;
                        for (to, amount) in &checked.transfers {
                            self.fund(to, *amount);
                        }
                        TxResult {
                            height,
                            index: index as u32,
                            code: 0,
                            log: String::new(),
                            sender: checked.signer,
                            transfers: checked.transfers,
                        }
                    } else {
                        TxResult {
                            height,
                            index: index as u32,
                            code: 5,
                            log: "insufficient funds".to_owned(),
                            sender: checked.signer,
                            transfers: Vec::new(),
                        }
                    }
                }
                // Refused by the ante handler at delivery (e.g. a wrong sequence after an
                // earlier transaction): recorded as failed, nothing charged.
                Err(r) => TxResult {
                    height,
                    index: index as u32,
                    code: r.code,
                    log: r.log,
                    sender: self.signer_of(&bytes).unwrap_or_default(),
                    transfers: Vec::new(),
                },
            };
            hashes.push(hash.clone());
            self.results.insert(hash, (bytes, result));
        }
        self.blocks.push(Block {
            height,
            time_ms,
            txs: hashes,
        });
        height
    }

    fn check(&self, bytes: &[u8], in_mempool: bool) -> Result<Checked, Refused> {
        let decoded = cosmrs::Tx::from_bytes(bytes)
            .map_err(|e| refused(2, format!("tx parse error: {e}")))?;
        let signer_key = match decoded.auth_info.signer_infos.as_slice() {
            [info] => match &info.public_key {
                Some(cosmrs::tx::SignerPublicKey::Single(key)) => *key,
                _ => return Err(refused(4, "a single public key is required")),
            },
            _ => return Err(refused(4, "exactly one signer is required")),
        };
        let signer = signer_key
            .account_id(&self.prefix)
            .map_err(|e| refused(4, e.to_string()))?
            .to_string();
        let account = self
            .accounts
            .get(&signer)
            .ok_or_else(|| refused(9, format!("account {signer} not found")))?;
        let waiting = if in_mempool {
            self.mempool
                .iter()
                .filter_map(|(_, b)| self.signer_of(b))
                .filter(|s| *s == signer)
                .count() as u64
        } else {
            0
        };
        let expected = account.sequence + waiting;
        let sequence = decoded.auth_info.signer_infos[0].sequence;
        if sequence != expected {
            return Err(refused(
                32,
                format!("account sequence mismatch, expected {expected}, got {sequence}"),
            ));
        }
        tx::verify(bytes, &self.chain_id, account.number, &self.prefix)
            .map_err(|e| refused(4, format!("signature verification failed: {e}")))?;
        let fee: u128 = decoded
            .auth_info
            .fee
            .amount
            .iter()
            .filter(|c| c.denom.as_ref() == self.denom)
            .map(|c| c.amount)
            .sum();
        if fee < self.min_fee {
            return Err(refused(
                13,
                format!(
                    "insufficient fee: got {fee}{} required {}{}",
                    self.denom, self.min_fee, self.denom
                ),
            ));
        }
        let mut transfers = Vec::new();
        let mut debit = 0u128;
        for any in &decoded.body.messages {
            let (inputs, outputs) = if let Ok(m) = MsgMultiSend::from_any(any) {
                (
                    m.inputs
                        .into_iter()
                        .map(|io| (io.address.to_string(), io.coins))
                        .collect::<Vec<_>>(),
                    m.outputs
                        .into_iter()
                        .map(|io| (io.address.to_string(), io.coins))
                        .collect::<Vec<_>>(),
                )
            } else if let Ok(m) = MsgSend::from_any(any) {
                (
                    vec![(m.from_address.to_string(), m.amount.clone())],
                    vec![(m.to_address.to_string(), m.amount)],
                )
            } else {
                return Err(refused(2, format!("unsupported message {}", any.type_url)));
            };
            let sum = |coins: &[cosmrs::Coin]| -> u128 {
                coins
                    .iter()
                    .filter(|c| c.denom.as_ref() == self.denom)
                    .map(|c| c.amount)
                    .sum()
            };
            let mut paid_in = 0u128;
            for (from, coins) in &inputs {
                if *from != signer {
                    return Err(refused(4, format!("{from} did not sign the transaction")));
                }
                paid_in += sum(coins);
            }
            let mut paid_out = 0u128;
            for (to, coins) in outputs {
                let amount = sum(&coins);
                paid_out += amount;
                transfers.push((to, amount));
            }
            if paid_in != paid_out {
                return Err(refused(4, "sum inputs != sum outputs".to_owned()));
            }
            debit += paid_in;
        }
        // The ante handler: the fee must be payable, or nothing happens at all.
        if account.balance < fee {
            return Err(refused(
                5,
                format!(
                    "insufficient funds for the fee: {}{}",
                    account.balance, self.denom
                ),
            ));
        }
        let funded = account.balance >= fee + debit;
        if in_mempool && !funded {
            return Err(refused(
                5,
                format!(
                    "insufficient funds: {}{} < {}{}",
                    account.balance,
                    self.denom,
                    fee + debit,
                    self.denom
                ),
            ));
        }
        Ok(Checked {
            signer,
            fee,
            debit,
            funded,
            transfers,
        })
    }

    fn signer_of(&self, bytes: &[u8]) -> Option<String> {
        let decoded = cosmrs::Tx::from_bytes(bytes).ok()?;
        match &decoded.auth_info.signer_infos.first()?.public_key {
            Some(cosmrs::tx::SignerPublicKey::Single(key)) => {
                Some(key.account_id(&self.prefix).ok()?.to_string())
            }
            _ => None,
        }
    }
}
