use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {max} characters")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} may only contain ASCII letters, digits, '.', '_' and '-' (found {found:?})")]
    BadCharacter { kind: &'static str, found: char },
    #[error("{kind} must be a non-negative integer below 2^64 (got {input:?})")]
    NotAnInteger { kind: &'static str, input: String },
    #[error("unknown {kind}: {input:?}")]
    UnknownName { kind: &'static str, input: String },
    #[error("{kind} must be an integer or a UUID (got {input:?})")]
    BadClientOrderId { kind: &'static str, input: String },
    #[error("{input:?} is not a bech32 account address with a valid checksum")]
    BadAddress { input: String },
    #[error("{input:?} is not a transaction hash (64 hex digits)")]
    BadTxHash { input: String },
    #[error("{kind} must be {len} bytes as {} hex digits (got {input:?})", 2 * len)]
    BadHex {
        kind: &'static str,
        len: usize,
        input: String,
    },
}

/// Whether `s` is one or more ASCII digits: the whole grammar of a number in text, with no
/// sign, whitespace or separator (`str::parse` alone would take a leading `+`).
pub(crate) fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A short ASCII name stored inline, so ids that are names stay `Copy` and cost no allocation
/// in the engine's hot path.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Symbol {
    len: u8,
    bytes: [u8; Symbol::MAX],
}

/// Three words instead of a length and 23 single bytes: the engine hashes a market or node
/// name on every order, and the derived hash wrote a length, a slice length and 23 bytes. Equal
/// symbols have equal bytes (the unused tail is always zero), so this agrees with `Eq`.
impl std::hash::Hash for Symbol {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut all = [0u8; Symbol::MAX + 1];
        all[0] = self.len;
        all[1..].copy_from_slice(&self.bytes);
        for word in all.chunks_exact(8) {
            let word: [u8; 8] = word.try_into().expect("chunks of 8");
            state.write_u64(u64::from_le_bytes(word));
        }
    }
}

impl Symbol {
    const MAX: usize = 23;

    fn parse(kind: &'static str, s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::Empty { kind });
        }
        if s.len() > Self::MAX {
            return Err(ParseError::TooLong {
                kind,
                max: Self::MAX,
            });
        }
        if let Some(found) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(ParseError::BadCharacter { kind, found });
        }
        let mut bytes = [0u8; Self::MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Symbol {
            len: s.len() as u8,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `parse`), so this cannot fail.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

macro_rules! symbol_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Symbol);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                Symbol::parse($kind, s).map($name)
            }

            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
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

symbol_id!(
    /// A market is one GPU class, e.g. `H100-80GB` or `MI300X-192GB`.
    MarketId,
    "market id"
);
symbol_id!(
    /// A provider's machine; all GPUs of one ask sit on one node.
    NodeId,
    "node id"
);
symbol_id!(
    /// Where a node runs, e.g. `eu-west` or `us-east-2`.
    Region,
    "region"
);

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// Reads `DIGITS`: ASCII digits below 2^64, leading zeros allowed (`007` is
            /// 7); no sign, no whitespace.
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                let bad = || ParseError::NotAnInteger {
                    kind: $kind,
                    input: s.to_owned(),
                };
                if !all_digits(s) {
                    return Err(bad());
                }
                s.parse::<u64>().map($name).map_err(|_| bad())
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

numeric_id!(
    /// A trading account: a buyer, a provider, or both.
    AccountId,
    "account id"
);
numeric_id!(
    /// Assigned by the engine, in acceptance order, starting at 1.
    OrderId,
    "order id"
);
numeric_id!(
    /// Assigned by the engine for every fill, in fill order, starting at 1.
    LeaseId,
    "lease id"
);

numeric_id!(
    /// A settlement batch, assigned by the engine in order, starting at 1.
    SettlementId,
    "settlement id"
);

impl AccountId {
    /// The market's own account: it collects fees and is never a trader.
    pub const MARKET: AccountId = AccountId(0);
}

/// Reads a 128-bit key in either of its text forms, nothing around it:
///
/// - a UUID: 36 characters, 32 hex digits (either case) in groups of 8-4-4-4-12 with a
///   `-` between groups, and nothing else (no sign, no braces, no `urn:uuid:`);
/// - a decimal: ASCII digits below 2^128, leading zeros allowed. `007` and `7` are the
///   same key, so a client that pads its counters still replays the same request.
fn parse_key(kind: &'static str, s: &str) -> Result<u128, ParseError> {
    let bad = || ParseError::BadClientOrderId {
        kind,
        input: s.to_owned(),
    };
    if s.len() == 36 && s.as_bytes()[8] == b'-' {
        let well_formed = s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
        if !well_formed {
            return Err(bad());
        }
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        return u128::from_str_radix(&hex, 16).map_err(|_| bad());
    }
    if !all_digits(s) {
        return Err(bad());
    }
    s.parse::<u128>().map_err(|_| bad())
}

/// A 128-bit key written as a decimal or a UUID: the canonical text form is the decimal,
/// binary forms carry the integer.
macro_rules! key_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(pub u128);

        impl $name {
            /// Reads a UUID (8-4-4-4-12 hex digits, either case) or ASCII digits below
            /// 2^128, nothing around it; `007` and `7` are the same key.
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                parse_key($kind, s).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    s.serialize_u128(self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    Self::parse(&s).map_err(serde::de::Error::custom)
                } else {
                    u128::deserialize(d).map($name)
                }
            }
        }
    };
}

key_id!(
    /// The client's idempotency key for an order, unique per account for the engine's
    /// lifetime.
    ///
    /// Stored as 128 bits so that both counters (`42`) and UUIDs
    /// (`67e55044-10b1-426f-9247-bb680e5fe0c8`) fit without allocation.
    ///
    /// Ids whose upper 64 bits are all ones are the engine's own (see
    /// [`ClientOrderId::rebid`]); `PlaceWith` refuses them, so a buyer's id never collides
    /// with an order the engine places for it.
    ClientOrderId,
    "client order id"
);

key_id!(
    /// The caller's key for a deposit or a withdrawal request (`DepositOnce`,
    /// `RequestWithdrawalOnce`), unique per account: a retry with the same key and the same
    /// content is answered as a duplicate and changes nothing.
    IdempotencyKey,
    "idempotency key"
);

impl ClientOrderId {
    /// The id of the bid the engine places again for the unused hours of `lease` after a
    /// provider failure: the upper 64 bits all ones, the lower the lease id. Each lease
    /// fails at most once, so no two re-bids share an id.
    pub fn rebid(lease: LeaseId) -> ClientOrderId {
        ClientOrderId(u128::from(u64::MAX) << 64 | u128::from(lease.0))
    }

    /// Whether the id is in the engine's own range (see [`ClientOrderId::rebid`]).
    pub fn is_reserved(self) -> bool {
        self.0 >> 64 == u128::from(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_parse_and_reject() {
        assert_eq!(MarketId::parse("H100-80GB").unwrap().as_str(), "H100-80GB");
        assert_eq!(
            MarketId::parse(""),
            Err(ParseError::Empty { kind: "market id" })
        );
        assert!(matches!(
            Region::parse("eu west"),
            Err(ParseError::BadCharacter { found: ' ', .. })
        ));
        assert!(matches!(
            NodeId::parse(&"n".repeat(24)),
            Err(ParseError::TooLong { max: 23, .. })
        ));
    }

    #[test]
    fn client_order_ids_accept_integers_and_uuids() {
        assert_eq!(ClientOrderId::parse("42").unwrap(), ClientOrderId(42));
        assert_eq!(
            ClientOrderId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap(),
            ClientOrderId(0x67e5504410b1426f9247bb680e5fe0c8)
        );
        for bad in [
            "",
            "-1",
            "abc",
            "67e55044-10b1-426f-9247-bb680e5fe0cg",
            "1.5",
        ] {
            assert!(
                ClientOrderId::parse(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn numeric_ids_are_digits_only() {
        assert_eq!(OrderId::parse("42"), Ok(OrderId(42)));
        assert_eq!(AccountId::parse("007"), Ok(AccountId(7)));
        assert_eq!(
            LeaseId::parse("18446744073709551615"),
            Ok(LeaseId(u64::MAX))
        );
        for bad in [
            "",
            "+5",
            " 5",
            "5 ",
            "-1",
            "1_000",
            "1e3",
            "5.0",
            "0x5",
            "18446744073709551616",
        ] {
            assert_eq!(
                SettlementId::parse(bad),
                Err(ParseError::NotAnInteger {
                    kind: "settlement id",
                    input: bad.to_owned()
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn client_order_ids_are_a_uuid_or_digits_and_nothing_else() {
        let uuid = ClientOrderId(0x67e5504410b1426f9247bb680e5fe0c8);
        assert_eq!(
            ClientOrderId::parse("67E55044-10B1-426F-9247-BB680E5FE0C8"),
            Ok(uuid)
        );
        // Leading zeros name the same key, which is what a replayed order is found by.
        assert_eq!(ClientOrderId::parse("0042"), Ok(ClientOrderId(42)));
        assert_eq!(
            ClientOrderId::parse("340282366920938463463374607431768211455"),
            Ok(ClientOrderId(u128::MAX))
        );
        for bad in [
            "+7e55044-10b1-426f-9247-bb680e5fe0c8",
            "67e55044-+0b1-426f-9247-bb680e5fe0c8",
            "67e55044-10b1-426f-9247-bb680e5fe0c+",
            "67e55044-10b1-426f-9247+bb680e5fe0c8",
            "67e55044-10b1-426f-9247-bb680e5fe0c8 ",
            " 67e55044-10b1-426f-9247-bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "67e5504410b1426f9247bb680e5fe0c8",
            "+42",
            " 42",
            "42 ",
            "4_2",
            "340282366920938463463374607431768211456",
        ] {
            assert!(
                ClientOrderId::parse(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn ids_round_trip_through_json() {
        let m = MarketId::parse("MI300X-192GB").unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"MI300X-192GB\"");
        assert_eq!(serde_json::from_str::<MarketId>(&json).unwrap(), m);
        assert!(serde_json::from_str::<MarketId>("\"a b\"").is_err());
        let c = ClientOrderId(7);
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"7\"");
    }
}
