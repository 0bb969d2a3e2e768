//! Content names: a blob's name is the SHA-256 digest of its bytes, written as a CIDv1 with
//! the raw codec (`bafkrei…`), so any content-addressed store (IPFS, say) can serve the same
//! objects under the same names. Job inputs, outputs, logs and image parts are named so, in
//! the API, the agent's reports and the ledger.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// The multicodec prefix of a CIDv1 naming raw bytes by SHA-256: version 1, codec `raw`
/// (0x55), multihash `sha2-256` (0x12) of 32 bytes.
const CID_PREFIX: [u8; 4] = [0x01, 0x55, 0x12, 0x20];

/// A blob's name: the SHA-256 digest of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// A string that names no blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a blob digest: write a CIDv1 (raw, sha2-256: `bafkrei…`) or `sha256:` and 64 hex digits")]
pub struct BadDigest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// Reads a CIDv1 (raw codec, SHA-256, base32 `b…`) or an OCI-style `sha256:<hex>`.
    pub fn parse(text: &str) -> Result<Digest, BadDigest> {
        let bad = || BadDigest(text.chars().take(100).collect());
        if let Some(hex) = text.strip_prefix("sha256:") {
            let mut digest = [0u8; 32];
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(bad());
            }
            hex::decode_to_slice(hex, &mut digest).map_err(|_| bad())?;
            return Ok(Digest(digest));
        }
        let bytes = text
            .strip_prefix('b')
            .and_then(base32_decode)
            .ok_or_else(bad)?;
        match bytes.strip_prefix(&CID_PREFIX[..]) {
            Some(digest) if digest.len() == 32 => {
                let digest = Digest(digest.try_into().expect("32 bytes"));
                // One spelling per blob: no trailing bits or other case slip through.
                (digest.cid() == text).then_some(digest).ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    }

    /// The CIDv1 (raw codec, SHA-256), base32 lowercase with the multibase prefix `b`.
    pub fn cid(&self) -> String {
        let mut bytes = CID_PREFIX.to_vec();
        bytes.extend_from_slice(&self.0);
        format!("b{}", base32_encode(&bytes))
    }

    /// `sha256:<hex>`, as OCI image layouts name blobs.
    pub fn oci(&self) -> String {
        format!("sha256:{}", hex::encode(self.0))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The digest SHA-256 gave.
    pub fn from_sha256(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cid())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.cid())
    }
}

impl std::str::FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Digest, BadDigest> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.cid())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lowercase, unpadded (multibase `b`).
fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = BASE32.iter().position(|&b| b == c)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
        buffer &= (1 << bits) - 1;
    }
    Some(out)
}
