//! What the market knows of the chain it settles on: account addresses, transaction hashes
//! and settlement batches. Syntax only (bech32 with its checksum, 32-byte hashes); which
//! prefix a chain uses is the bridge's configuration, checked where a transaction is built.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{AccountId, Amount, ParseError};

/// A bech32 account address, e.g. `cosmos1…` or `noble1…`, with a valid checksum.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainAddress(String);

const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// BIP-173's checksum over the expanded human-readable part and the data.
fn bech32_polymod(hrp: &[u8], data: &[u8]) -> u32 {
    const GEN: [u32; 5] = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
    let expanded = hrp
        .iter()
        .map(|c| c >> 5)
        .chain([0])
        .chain(hrp.iter().map(|c| c & 31))
        .chain(data.iter().copied());
    expanded.fold(1u32, |chk, v| {
        let top = chk >> 25;
        let mut chk = ((chk & 0x1ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
        chk
    })
}

impl ChainAddress {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::BadAddress {
            input: s.to_owned(),
        };
        // Cosmos account addresses are 20 or 32 bytes: at most 90 characters, as in BIP-173.
        if s.len() > 90 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let (hrp, data) = s.rsplit_once('1').ok_or_else(bad)?;
        if hrp.is_empty() || !hrp.bytes().all(|b| b.is_ascii_lowercase()) || data.len() < 6 {
            return Err(bad());
        }
        let values = data
            .bytes()
            .map(|b| CHARSET.iter().position(|&c| c == b).map(|v| v as u8))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        if bech32_polymod(hrp.as_bytes(), &values) != 1 {
            return Err(bad());
        }
        Ok(ChainAddress(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The human-readable part, e.g. `cosmos`.
    pub fn prefix(&self) -> &str {
        self.0.rsplit_once('1').map_or("", |(hrp, _)| hrp)
    }
}

/// A transaction hash: SHA-256 of the transaction bytes, written as 64 upper-case hex digits
/// (CometBFT's form; lower case is accepted).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxHash(pub [u8; 32]);

impl TxHash {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::BadTxHash {
            input: s.to_owned(),
        };
        if s.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(TxHash(bytes))
    }
}

macro_rules! text_form {
    ($name:ident) => {
        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
text_form!(ChainAddress);
text_form!(TxHash);

impl fmt::Display for ChainAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

/// One account's line of a settlement batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementPayout {
    pub account: AccountId,
    pub address: ChainAddress,
    /// What is sent on chain.
    pub amount: Amount,
    /// The part that was still available when the batch opened (earnings paid out); the
    /// rest was requested as withdrawals and was already settling.
    pub from_available: Amount,
}

/// Why a settlement failed, as the chain or the bridge put it (at most 256 characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FailureReason(String);

impl FailureReason {
    pub const MAX: usize = 256;

    /// Takes the first [`FailureReason::MAX`] characters: a chain's log can be long, and the
    /// start says what happened.
    pub fn new(reason: &str) -> Result<Self, ParseError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ParseError::Empty {
                kind: "failure reason",
            });
        }
        Ok(FailureReason(reason.chars().take(Self::MAX).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FailureReason {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        FailureReason::new(&s)
    }
}

impl From<FailureReason> for String {
    fn from(r: FailureReason) -> String {
        r.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_a_valid_checksum() {
        let good = "cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4";
        let address = ChainAddress::parse(good).unwrap();
        assert_eq!(address.prefix(), "cosmos");
        assert_eq!(
            serde_json::to_string(&address).unwrap(),
            format!("\"{good}\"")
        );
        let typo = good.replace("dal4", "dal5");
        for bad in [
            "",
            "cosmos1",
            typo.as_str(),
            "COSMOS19RL4CM2HMR8AFY4KLDPXZ3FKA4JGUQ0AUQDAL4",
            "cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdalb",
            "noseparator",
        ] {
            assert!(ChainAddress::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hashes_are_64_hex_digits() {
        let text = "A".repeat(64);
        let hash = TxHash::parse(&text.to_lowercase()).unwrap();
        assert_eq!(hash.to_string(), text);
        assert!(TxHash::parse(&"A".repeat(63)).is_err());
        assert!(TxHash::parse(&"G".repeat(64)).is_err());
        assert!(TxHash::parse(&format!("{}é", "A".repeat(62))).is_err());
    }

    #[test]
    fn reasons_are_bounded() {
        assert!(FailureReason::new("  ").is_err());
        assert_eq!(
            FailureReason::new(&"x".repeat(999)).unwrap().as_str().len(),
            256
        );
    }
}
