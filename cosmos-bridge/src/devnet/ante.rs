//! The ante handler of a Cosmos SDK 0.50 chain, which is all CheckTx runs: it decodes the
//! transaction, charges gas for its size, checks the memo, the timeout height, the messages
//! and the signer, takes the fee, and checks the sequence and the signature (not when
//! simulating: clients simulate before they sign). Its events come first in a result: the
//! fee's `coin_spent`, `coin_received`, `transfer`, `message` and `tx` events, then the
//! `tx` events with `acc_seq` and `signature`.
//!
//! Gas follows the SDK's auth parameters where they are simple (10 per byte, 1,000 for a
//! secp256k1 signature) and a flat figure for the account's reads and writes.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmrs::proto::cosmos::tx::v1beta1::TxRaw;
use cosmrs::proto::prost::Message;
use cosmrs::proto::tendermint::abci::Event;
use cosmrs::tx::SignerPublicKey;

use super::bank::{coins, event, Send};
use super::{Devnet, Refused};
use crate::tx;

const GAS_PER_TX_BYTE: u64 = 10;
const GAS_SECP256K1: u64 = 1_000;
/// Reading the signer's account and balance, writing the fee and the sequence.
const GAS_ANTE: u64 = 20_000;
const MAX_MEMO_CHARS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Check,
    Deliver,
    Simulate,
}

/// A transaction the ante handler passed.
#[derive(Debug)]
pub(super) struct Ante {
    pub(super) signer: String,
    pub(super) pub_key: Vec<u8>,
    pub(super) fee: u128,
    pub(super) gas_wanted: u64,
    pub(super) gas_used: u64,
    pub(super) events: Vec<Event>,
    pub(super) sends: Vec<Send>,
}

impl Devnet {
    /// The ante handler, for a transaction going into block `height`.
    pub(super) fn ante(&self, bytes: &[u8], mode: Mode, height: u64) -> Result<Ante, Refused> {
        // Gas counts saturate: a count at the end of the numbers is over any limit.
        let mut gas =
            u64::try_from(bytes.len()).map_or(u64::MAX, |n| n.saturating_mul(GAS_PER_TX_BYTE));
        let refuse = |code: u32, codespace: &'static str, log: String, gas_wanted, gas_used| {
            Err(Refused {
                code,
                codespace,
                log,
                gas_wanted,
                gas_used,
            })
        };
        let decoded = TxRaw::decode(bytes)
            .map_err(|e| e.to_string())
            .and_then(|raw| {
                cosmrs::Tx::from_bytes(bytes)
                    .map(|tx| (raw, tx))
                    .map_err(|e| e.to_string())
            });
        let (raw, decoded) = match decoded {
            Ok(d) => d,
            Err(e) => return refuse(2, "sdk", format!("{e}: tx parse error"), 0, 0),
        };
        let gas_wanted = decoded.auth_info.fee.gas_limit;
        // The SDK's `ValidateBasic`: results carry gas as int64.
        if i64::try_from(gas_wanted).is_err() {
            return refuse(
                18,
                "sdk",
                format!(
                    "invalid gas supplied; {gas_wanted} > {}: invalid request",
                    i64::MAX
                ),
                0,
                0,
            );
        }
        // Simulations run with no gas limit: they are how a client learns what to ask for.
        let limit = if mode == Mode::Simulate {
            u64::MAX
        } else {
            gas_wanted
        };
        let out_of_gas = |gas: u64, location: &str| {
            refuse(
                11,
                "sdk",
                format!(
                    "out of gas in location: {location}; gasWanted: {gas_wanted}, gasUsed: {gas}: out of gas"
                ),
                gas_wanted,
                gas,
            )
        };
        if gas > limit {
            return out_of_gas(gas, "txSize");
        }
        let memo = decoded.body.memo.chars().count();
        if memo > MAX_MEMO_CHARS {
            return refuse(
                12,
                "sdk",
                format!("maximum number of characters is {MAX_MEMO_CHARS} but received {memo} characters: memo too large"),
                gas_wanted,
                gas,
            );
        }
        let timeout = u64::from(decoded.body.timeout_height);
        if timeout > 0 && height > timeout {
            return refuse(
                30,
                "sdk",
                format!("block height: {height}, timeout height: {timeout}: tx timeout height"),
                gas_wanted,
                gas,
            );
        }
        if decoded.body.messages.is_empty() {
            return refuse(
                18,
                "sdk",
                "must contain at least one message: invalid request".into(),
                gas_wanted,
                gas,
            );
        }
        let mut sends = Vec::with_capacity(decoded.body.messages.len());
        for any in &decoded.body.messages {
            match self.decode_send(any) {
                Ok(send) => sends.push(send),
                Err((code, codespace, log)) => {
                    return refuse(code, codespace, log, gas_wanted, gas)
                }
            }
        }
        let senders = sends.iter().fold(Vec::<&str>::new(), |mut all, s| {
            if !all.contains(&s.from.as_str()) {
                all.push(&s.from);
            }
            all
        });
        let given = decoded.auth_info.signer_infos.len();
        if decoded.signatures.is_empty() {
            return refuse(15, "sdk", "no signatures supplied".into(), gas_wanted, gas);
        }
        if senders.len() != 1 || given != 1 || decoded.signatures.len() != 1 {
            return refuse(
                4,
                "sdk",
                format!(
                    "wrong number of signers; expected {}, got {given}: unauthorized",
                    senders.len()
                ),
                gas_wanted,
                gas,
            );
        }
        let signer = senders[0].to_owned();
        let account = match self.accounts.get(&signer) {
            Some(a) => a,
            None => {
                return refuse(
                    9,
                    "sdk",
                    format!("fee payer address: {signer} does not exist: unknown address"),
                    gas_wanted,
                    gas,
                )
            }
        };
        let info = &decoded.auth_info.signer_infos[0];
        let pub_key = match (&info.public_key, &account.pub_key) {
            (Some(SignerPublicKey::Single(key)), _)
                if key.type_url() == cosmrs::crypto::PublicKey::SECP256K1_TYPE_URL =>
            {
                key.to_bytes()
            }
            (Some(_), _) => {
                return refuse(
                    8,
                    "sdk",
                    "the devnet verifies single secp256k1 keys only: invalid pubkey".into(),
                    gas_wanted,
                    gas,
                )
            }
            (None, Some(known)) => known.clone(),
            (None, None) => {
                return refuse(
                    8,
                    "sdk",
                    "pubkey on account is not set: invalid pubkey".into(),
                    gas_wanted,
                    gas,
                )
            }
        };
        let key_address = k256::ecdsa::VerifyingKey::from_sec1_bytes(&pub_key)
            .ok()
            .and_then(|k| {
                cosmrs::crypto::PublicKey::from(k)
                    .account_id(&self.prefix)
                    .ok()
            })
            .map(|a| a.to_string());
        if key_address.as_deref() != Some(signer.as_str()) {
            return refuse(
                8,
                "sdk",
                format!("pubKey does not match signer address {signer} with signer index: 0: invalid pubkey"),
                gas_wanted,
                gas,
            );
        }
        // The fee: the validator's minimum applies at CheckTx only, as in the SDK.
        let (fee_text, fee, foreign_fee) = match coins(&decoded.auth_info.fee.amount, &self.denom) {
            Ok(fee) => fee,
            Err((text, why)) => {
                return refuse(
                    13,
                    "sdk",
                    format!("invalid fee amount: {text}: {why}: insufficient fee"),
                    gas_wanted,
                    gas,
                )
            }
        };
        if mode == Mode::Check && fee < self.min_fee {
            return refuse(
                13,
                "sdk",
                format!(
                    "insufficient fees; got: {fee_text} required: {}{}: insufficient fee",
                    self.min_fee, self.denom
                ),
                gas_wanted,
                gas,
            );
        }
        if foreign_fee || fee > account.balance {
            return refuse(
                5,
                "sdk",
                format!(
                    "spendable balance {}{} is smaller than {fee_text}: insufficient funds",
                    account.balance, self.denom
                ),
                gas_wanted,
                gas,
            );
        }
        gas = gas.saturating_add(GAS_ANTE);
        // Transactions of this signer already waiting count, as in the SDK's check state.
        let waiting = if mode == Mode::Deliver {
            0
        } else {
            self.mempool.iter().filter(|p| p.signer == signer).count() as u64
        };
        let expected = account.sequence + waiting;
        if info.sequence != expected {
            return refuse(
                32,
                "sdk",
                format!(
                    "account sequence mismatch, expected {expected}, got {}: incorrect account sequence",
                    info.sequence
                ),
                gas_wanted,
                gas,
            );
        }
        gas = gas.saturating_add(GAS_SECP256K1);
        if mode != Mode::Simulate
            && tx::verify_raw(&raw, &pub_key, &self.chain_id, account.number).is_err()
        {
            return refuse(
                4,
                "sdk",
                format!(
                    "signature verification failed; please verify account number ({}), sequence ({}) and chain-id ({}): unauthorized",
                    account.number, info.sequence, self.chain_id
                ),
                gas_wanted,
                gas,
            );
        }
        if gas > limit {
            return out_of_gas(gas, "ante");
        }
        let mut events = Vec::new();
        if !decoded.auth_info.fee.amount.is_empty() {
            events.extend([
                event(
                    "coin_spent",
                    &[("spender", &signer), ("amount", &fee_text)],
                    None,
                ),
                event(
                    "coin_received",
                    &[("receiver", &self.fee_collector), ("amount", &fee_text)],
                    None,
                ),
                event(
                    "transfer",
                    &[
                        ("recipient", &self.fee_collector),
                        ("sender", &signer),
                        ("amount", &fee_text),
                    ],
                    None,
                ),
                event("message", &[("sender", &signer)], None),
            ]);
        }
        let sequence = format!("{signer}/{}", info.sequence);
        let signature = BASE64.encode(&decoded.signatures[0]);
        events.extend([
            event("tx", &[("fee", &fee_text), ("fee_payer", &signer)], None),
            event("tx", &[("acc_seq", &sequence)], None),
            event("tx", &[("signature", &signature)], None),
        ]);
        Ok(Ante {
            signer,
            pub_key,
            fee,
            gas_wanted,
            gas_used: gas,
            events,
            sends,
        })
    }
}
