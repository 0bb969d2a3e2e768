//! The node's ed25519 key: made at first start, kept in a file only its owner can read.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore};

/// Why the node's key could not be had.
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

/// Loads the key at `path`, creating it (mode 0600) when there is none. A key file readable
/// by others is refused: anyone who can read it can report as this node.
pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
    let read = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        let mode = fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(read)?;
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
    // Created with 0600 from the start, never world-readable for an instant.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(create)?;
    writeln!(file, "{}", hex(&seed)).map_err(create)?;
    file.sync_all().map_err(create)?;
    Ok(SigningKey::from_bytes(&seed))
}
