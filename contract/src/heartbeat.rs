//! What a node's signed report tells the engine ([`SignedHeartbeat`]), with the report's
//! bytes and signature as evidence, and the small text and key types it is made of.
//!
//! The API checks the signature and turns a report into this command; the engine uses the
//! command's own time for liveness and for how long a lease was healthy, never the time the
//! report claims. The evidence travels into the log so that anyone replaying it can verify
//! every heartbeat a bill rests on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{AccountId, LeaseId, MarketId, NodeId, ParseError, Timestamp, Vendor};

/// A short text a node reports about its hardware (a model name, a GPU UUID, a PCI bus
/// id): 1 to 128 bytes, no control characters, surrounding whitespace trimmed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ShortText(String);

impl ShortText {
    pub const MAX: usize = 128;

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let kind = "reported text";
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseError::Empty { kind });
        }
        if s.len() > Self::MAX {
            return Err(ParseError::TooLong {
                kind,
                max: Self::MAX,
            });
        }
        if let Some(found) = s.chars().find(|c| c.is_control()) {
            return Err(ParseError::BadCharacter { kind, found });
        }
        Ok(ShortText(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ShortText {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        ShortText::parse(&s)
    }
}

impl From<ShortText> for String {
    fn from(t: ShortText) -> String {
        t.0
    }
}

impl fmt::Display for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Fixed-size bytes whose text form is lower-case hex and whose binary form is the bytes.
macro_rules! hex_bytes {
    ($(#[$doc:meta])* $name:ident, $len:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Reads exactly `2 × len` hex digits (either case).
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                let bad = || ParseError::BadHex {
                    kind: $kind,
                    len: $len,
                    input: s.chars().take(2 * $len + 8).collect(),
                };
                if s.len() != 2 * $len || !s.is_ascii() {
                    return Err(bad());
                }
                let mut bytes = [0u8; $len];
                for (i, byte) in bytes.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
                }
                Ok($name(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
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
                    self.0[..].serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    Self::parse(&s).map_err(serde::de::Error::custom)
                } else {
                    let bytes = Vec::<u8>::deserialize(d)?;
                    bytes.try_into().map($name).map_err(|_| {
                        serde::de::Error::custom(concat!($kind, " has the wrong length"))
                    })
                }
            }
        }
    };
}

hex_bytes!(
    /// A node's ed25519 public key, as registered for it.
    NodeKey,
    32,
    "node key"
);
hex_bytes!(
    /// An ed25519 signature over a report's exact bytes.
    Signature,
    64,
    "signature"
);

/// A node by its provider and name: node names are the provider's own, so two providers
/// may both have a `node-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeRef {
    pub provider: AccountId,
    pub node: NodeId,
}

/// One GPU as the node's report identifies it (read by NVML or ROCm SMI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuStatus {
    pub index: u32,
    pub vendor: Vendor,
    /// The model name the driver reports, e.g. `NVIDIA H100 80GB HBM3`.
    pub model: ShortText,
    pub uuid: ShortText,
    /// Total memory; `None` when the driver could not read it.
    pub memory_mb: Option<u64>,
    pub pci_bus_id: Option<ShortText>,
    /// Present and without faults in this report.
    pub healthy: bool,
}

/// The signed report a heartbeat was made from, exactly as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEvidence {
    /// The key the report was checked against.
    pub node_key: NodeKey,
    /// The report's bytes as signed (the JSON of `NodeReport`).
    pub signed: Vec<u8>,
    pub signature: Signature,
}

/// A node's heartbeat from its signed report: what the engine judges liveness and lease
/// health by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHeartbeat {
    pub provider: AccountId,
    pub node: NodeId,
    /// The GPU class the report states; the node's heartbeat timeout is this market's.
    pub market: MarketId,
    /// The report's sequence number (increasing per node).
    pub sequence: u64,
    /// The time the report claims. The engine never bills or judges liveness by it.
    pub reported_at: Timestamp,
    /// The report came from the agent's simulated GPU source.
    pub simulated: bool,
    pub gpus: Vec<GpuStatus>,
    /// The node's leases whose GPUs the report shows healthy. A running lease the node has
    /// listed before (or one older than the heartbeat timeout) that is missing here fails.
    pub healthy_leases: Vec<LeaseId>,
    pub evidence: ReportEvidence,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_text_is_bounded_and_printable() {
        assert_eq!(
            ShortText::parse("  NVIDIA H100 80GB HBM3 ")
                .unwrap()
                .as_str(),
            "NVIDIA H100 80GB HBM3"
        );
        assert!(ShortText::parse(" ").is_err());
        assert!(ShortText::parse("a\u{7}b").is_err());
        assert!(ShortText::parse(&"x".repeat(129)).is_err());
        assert!(serde_json::from_str::<ShortText>("\"\"").is_err());
    }

    #[test]
    fn keys_and_signatures_are_hex_in_text_and_bytes_in_binary() {
        let key = NodeKey([0xab; 32]);
        let text = key.to_string();
        assert_eq!(text, "ab".repeat(32));
        assert_eq!(NodeKey::parse(&text.to_uppercase()), Ok(key));
        assert!(NodeKey::parse(&"ab".repeat(31)).is_err());
        assert!(Signature::parse(&"zz".repeat(64)).is_err());
        let sig = Signature([7; 64]);
        let bytes = crate::codec::encode(&sig);
        assert_eq!(bytes.len(), 65, "a length byte, then the bytes");
        assert_eq!(crate::codec::decode(crate::codec::SCHEMA, &bytes), Ok(sig));
        let short = crate::codec::encode(&vec![7u8; 63]);
        assert!(crate::codec::decode::<Signature>(crate::codec::SCHEMA, &short).is_err());
        assert_eq!(serde_json::to_string(&key).unwrap(), format!("\"{text}\""));
    }
}
