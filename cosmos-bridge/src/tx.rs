//! Payout transactions: one `MsgMultiSend` from the escrow account, signed in
//! SIGN_MODE_DIRECT. [`SignedTx`] holds the exact bytes and their hash, which the bridge
//! stores before broadcasting, so a restart can send the same bytes again or find them on
//! chain instead of paying twice.

use cosmrs::bank::{MsgMultiSend, MultiSendIo};
use cosmrs::proto::cosmos::tx::v1beta1::TxRaw;
use cosmrs::proto::prost::Message;
use cosmrs::tx::{self, Fee, Msg, SignDoc, SignerInfo};
use cosmrs::{AccountId, Coin, Denom};
use k256::ecdsa::signature::Verifier;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use crate::keys::EscrowKey;
use crate::BridgeError;

/// One transfer out of escrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payout {
    /// A bech32 account address on the chain.
    pub address: String,
    /// In the market's unit (e.g. `12.5` USDC), converted with the denom's decimals.
    pub amount: Decimal,
}

/// The chain facts a transaction needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub chain_id: String,
    pub prefix: String,
    /// The bank denom, e.g. `uusdc`.
    pub denom: String,
    /// Decimal places between the market's unit and the denom (6 for uusdc).
    pub decimals: u32,
}

/// A signed transaction: the bytes to broadcast and their hash (the chain's tx hash:
/// SHA-256 of the bytes, upper-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    pub bytes: Vec<u8>,
    pub hash: String,
}

fn tx_error(e: impl std::fmt::Display) -> BridgeError {
    BridgeError::Tx(e.to_string())
}

/// Base units per unit of the market's amount: `10^decimals`. A scale past `u64` (20
/// places or more, which no chain's denom has) is refused as a configuration error.
pub fn base_unit(decimals: u32) -> Result<Decimal, BridgeError> {
    10u64
        .checked_pow(decimals)
        .map(Decimal::from)
        .ok_or_else(|| {
            BridgeError::Config(format!(
                "a denom of {decimals} decimal places: at most 19 are taken"
            ))
        })
}

/// An amount in the denom's base units, refusing anything finer than the denom can hold.
pub fn base_units(amount: Decimal, decimals: u32) -> Result<u128, BridgeError> {
    let bad = || BridgeError::BadAmount { amount, decimals };
    if amount <= Decimal::ZERO {
        return Err(bad());
    }
    let scaled = amount.checked_mul(base_unit(decimals)?).ok_or_else(bad)?;
    if scaled.fract() != Decimal::ZERO {
        return Err(bad());
    }
    u128::try_from(scaled.trunc()).map_err(|_| bad())
}

fn address(text: &str, prefix: &str) -> Result<AccountId, BridgeError> {
    let id: AccountId = text
        .parse()
        .map_err(|_| BridgeError::BadAddress(text.to_owned()))?;
    if id.prefix() != prefix {
        return Err(BridgeError::BadAddress(text.to_owned()));
    }
    Ok(id)
}

/// The escrow account as the chain knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub number: u64,
    pub sequence: u64,
}

/// What the transaction pays for its gas, in the chain's denom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    pub amount: u128,
    pub gas_limit: u64,
}

/// Builds and signs one `MsgMultiSend` paying `payouts` from the escrow account.
pub fn sign_payouts(
    key: &EscrowKey,
    chain: &Chain,
    payouts: &[Payout],
    memo: &str,
    fees: Fees,
    account: Account,
) -> Result<SignedTx, BridgeError> {
    if payouts.is_empty() {
        return Err(BridgeError::Tx("no payouts".into()));
    }
    let denom: Denom = chain.denom.parse().map_err(tx_error)?;
    let coin = |amount: u128| Coin {
        denom: denom.clone(),
        amount,
    };
    let mut total = 0u128;
    let mut outputs = Vec::with_capacity(payouts.len());
    for payout in payouts {
        let amount = base_units(payout.amount, chain.decimals)?;
        total = total
            .checked_add(amount)
            .ok_or_else(|| BridgeError::Tx("the payouts overflow".into()))?;
        outputs.push(MultiSendIo {
            address: address(&payout.address, &chain.prefix)?,
            coins: vec![coin(amount)],
        });
    }
    let msg = MsgMultiSend {
        inputs: vec![MultiSendIo {
            address: key.address().clone(),
            coins: vec![coin(total)],
        }],
        outputs,
    }
    .to_any()
    .map_err(tx_error)?;
    let body = tx::Body::new(vec![msg], memo, 0u32);
    let auth_info =
        SignerInfo::single_direct(Some(key.signing_key().public_key()), account.sequence)
            .auth_info(Fee::from_amount_and_gas(coin(fees.amount), fees.gas_limit));
    let chain_id = chain.chain_id.parse().map_err(tx_error)?;
    let raw = SignDoc::new(&body, &auth_info, &chain_id, account.number)
        .map_err(tx_error)?
        .sign(key.signing_key())
        .map_err(tx_error)?;
    let bytes = raw.to_bytes().map_err(tx_error)?;
    Ok(SignedTx {
        hash: hash(&bytes),
        bytes,
    })
}

/// The chain's hash of transaction bytes.
pub fn hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// What a chain checks of a transaction's signature: decodes `bytes`, rebuilds the sign doc
/// for `chain_id` and `account_number` from the body and auth info bytes as signed, and
/// verifies the single signer's signature. Returns the decoded transaction and the
/// signer's address.
pub fn verify(
    bytes: &[u8],
    chain_id: &str,
    account_number: u64,
    prefix: &str,
) -> Result<(cosmrs::Tx, AccountId), BridgeError> {
    let tx = cosmrs::Tx::from_bytes(bytes).map_err(tx_error)?;
    let raw = TxRaw::decode(bytes).map_err(tx_error)?;
    let [signer] = tx.auth_info.signer_infos.as_slice() else {
        return Err(BridgeError::Signature("exactly one signer expected".into()));
    };
    let public_key = match &signer.public_key {
        Some(tx::SignerPublicKey::Single(key)) => *key,
        _ => {
            return Err(BridgeError::Signature(
                "a single public key expected".into(),
            ))
        }
    };
    verify_raw(&raw, &public_key.to_bytes(), chain_id, account_number)?;
    let signer = public_key.account_id(prefix).map_err(tx_error)?;
    Ok((tx, signer))
}

/// Verifies the one signature of `raw` with a SEC1 secp256k1 `public_key`, over the
/// SIGN_MODE_DIRECT sign doc of the bytes as they were signed (re-encoding a decoded body
/// could differ from what another client encoded).
pub fn verify_raw(
    raw: &TxRaw,
    public_key: &[u8],
    chain_id: &str,
    account_number: u64,
) -> Result<(), BridgeError> {
    let [signature] = raw.signatures.as_slice() else {
        return Err(BridgeError::Signature(
            "exactly one signature expected".into(),
        ));
    };
    let doc = cosmrs::proto::cosmos::tx::v1beta1::SignDoc {
        body_bytes: raw.body_bytes.clone(),
        auth_info_bytes: raw.auth_info_bytes.clone(),
        chain_id: chain_id.to_owned(),
        account_number,
    }
    .encode_to_vec();
    let verifying = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
        .map_err(|e| BridgeError::Signature(e.to_string()))?;
    let signature = k256::ecdsa::Signature::from_slice(signature)
        .map_err(|e| BridgeError::Signature(e.to_string()))?;
    verifying
        .verify(&doc, &signature)
        .map_err(|_| BridgeError::Signature("does not verify".into()))
}
