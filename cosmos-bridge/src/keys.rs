//! The market's escrow key. It comes from a BIP-39 mnemonic (derived on the Cosmos path
//! `m/44'/118'/0'/0/0`) or a key file holding the 32-byte secret in hex; never from a
//! command-line argument (visible in `ps`), and its `Debug` form shows only the address.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cosmrs::crypto::secp256k1::SigningKey;
use cosmrs::AccountId;
use zeroize::Zeroizing;

use crate::BridgeError;

/// The Cosmos derivation path (coin type 118), first account.
pub const COSMOS_PATH: &str = "m/44'/118'/0'/0/0";

pub struct EscrowKey {
    key: SigningKey,
    address: AccountId,
}

impl std::fmt::Debug for EscrowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscrowKey")
            .field("address", &self.address.to_string())
            .finish_non_exhaustive()
    }
}

fn key_error(e: impl std::fmt::Display) -> BridgeError {
    BridgeError::Key(e.to_string())
}

impl EscrowKey {
    /// From a BIP-39 English mnemonic and optional passphrase.
    pub fn from_mnemonic(
        phrase: &str,
        passphrase: &str,
        prefix: &str,
    ) -> Result<EscrowKey, BridgeError> {
        let mnemonic = bip39::Mnemonic::parse_in(bip39::Language::English, phrase.trim())
            .map_err(key_error)?;
        let seed = Zeroizing::new(mnemonic.to_seed(passphrase));
        let path = COSMOS_PATH.parse().map_err(key_error)?;
        let key = SigningKey::derive_from_path(&seed[..], &path).map_err(key_error)?;
        EscrowKey::new(key, prefix)
    }

    /// From a file holding the secret key in hex (64 digits) or a BIP-39 mnemonic (no
    /// passphrase); the file must be private to its owner.
    pub fn from_file(path: &Path, prefix: &str) -> Result<EscrowKey, BridgeError> {
        let mode = std::fs::metadata(path)
            .map_err(key_error)?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(BridgeError::Key(format!(
                "{} is readable by others (mode {mode:o}); chmod 600 it",
                path.display()
            )));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(key_error)?);
        let hex = text.trim();
        if hex.split_whitespace().count() >= 12 {
            return EscrowKey::from_mnemonic(hex, "", prefix);
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BridgeError::Key(format!(
                "{} does not hold a 32-byte hex key",
                path.display()
            )));
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        for (i, byte) in secret.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(key_error)?;
        }
        EscrowKey::new(
            SigningKey::from_slice(&secret[..]).map_err(key_error)?,
            prefix,
        )
    }

    fn new(key: SigningKey, prefix: &str) -> Result<EscrowKey, BridgeError> {
        let address = key.public_key().account_id(prefix).map_err(key_error)?;
        Ok(EscrowKey { key, address })
    }

    pub fn address(&self) -> &AccountId {
        &self.address
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}
