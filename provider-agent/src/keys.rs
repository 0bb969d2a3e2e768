//! The agent's secrets: the node's ed25519 key (made at first start) and the provider's API
//! key (put there by the operator), each in a file only its owner can read.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore};

/// Why a key (the node's, or the provider's API key) could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{} is readable by others (mode {mode:o}); chmod 600 it", path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{} does not hold a 32-byte hex key", path.display())]
    Malformed { path: PathBuf },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The text of the secret in `path`, refused when the file is readable by others: whoever
/// can read the node key can report as the node, and whoever can read the API key can act
/// as the provider.
pub fn read_private(path: &Path) -> Result<String, KeyError> {
    let read = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let mode = fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(read)
}

/// Loads the key at `path`, creating it (mode 0600) when there is none. A key file readable
/// by others is refused, and so is one that does not hold a whole key (never replaced by a
/// new one: the API knows the node by this key).
pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
    if path.exists() {
        let text = read_private(path)?;
        let malformed = || KeyError::Malformed {
            path: path.to_owned(),
        };
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| malformed())?;
        }
        return Ok(SigningKey::from_bytes(&seed));
    }
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let create = |source| KeyError::Create {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(create)?;
    }
    // Whole or not at all (a crash while creating it leaves no half key to refuse at the
    // next start), and 0600 from its first instant.
    crate::durable::write_atomic(path, format!("{}\n", hex(&seed)).as_bytes(), 0o600)
        .map_err(create)?;
    Ok(SigningKey::from_bytes(&seed))
}
