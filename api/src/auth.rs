//! API keys and roles.
//!
//! A key is `gpm_{id}_{secret}` with 32 random bytes of secret in hex. The `api_keys` row
//! keeps the argon2id hash of the secret, never the secret. Verifying argon2 costs tens of
//! milliseconds on purpose, so a verified key is remembered in memory for
//! [`RECHECK_AFTER`]; after that the row is read again (a cheap primary-key lookup), so a
//! revocation takes effect within that time, in every API process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use contract::AccountId;
use diesel::pg::PgConnection;
use ledger::store;
use rand_core::{OsRng, RngCore};

use crate::errors::ApiError;

/// How long a verified key is trusted before its row is read again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(5);

/// What a key may do (the stored role, `ledger::store::Role`, as GraphQL shows it). A trader
/// and a provider act as one market account; finance reads balances, journals and exports
/// of every account; admin manages markets and keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, async_graphql::Enum)]
#[graphql(remote = "ledger::store::Role")]
pub enum Role {
    Trader,
    Provider,
    Finance,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        store::Role::from(self).as_str()
    }
}

impl std::str::FromStr for Role {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Role, ApiError> {
        s.parse::<store::Role>().map(Role::from).map_err(|()| {
            ApiError::validation(format!(
                "unknown role {s:?} (trader, provider, finance, admin)"
            ))
        })
    }
}

/// Who is calling: the key's id, role and account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub key_id: i64,
    pub role: Role,
    pub account: Option<AccountId>,
}

impl Principal {
    /// The account a trader or provider acts as; others have none and are refused.
    pub fn own_account(&self) -> Result<AccountId, ApiError> {
        self.account.ok_or_else(|| {
            ApiError::forbidden(format!(
                "the {} role acts for no market account",
                self.role.as_str()
            ))
        })
    }

    /// Refuses unless the key has one of `roles`.
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "{what} needs the role {}; this key is {}",
                allowed.join(" or "),
                self.role.as_str()
            )))
        }
    }

    /// The account whose data a query reads: a trader's or provider's own (asking for
    /// another is forbidden), any for finance and admin (which must name one).
    pub fn account_to_read(&self, asked: Option<AccountId>) -> Result<AccountId, ApiError> {
        match (self.role, self.account, asked) {
            (Role::Trader | Role::Provider, Some(own), None) => Ok(own),
            (Role::Trader | Role::Provider, Some(own), Some(asked)) if asked == own => Ok(own),
            (Role::Trader | Role::Provider, _, Some(asked)) => Err(ApiError::forbidden(format!(
                "account {asked} is not this key's account"
            ))),
            (Role::Finance | Role::Admin, _, Some(asked)) => Ok(asked),
            _ => Err(ApiError::validation(
                "this role acts for no account: name one with `account`",
            )),
        }
    }
}

pub use ledger::store::KeyInfo;

/// Creates a key and returns its id and the whole key, which is shown only this once.
pub fn create_key(
    conn: &mut PgConnection,
    role: Role,
    account: Option<AccountId>,
    label: &str,
) -> Result<(i64, String), ApiError> {
    match (role, account) {
        (Role::Trader | Role::Provider, None) => {
            return Err(ApiError::validation(format!(
                "a {} key needs the account it acts as",
                role.as_str()
            )))
        }
        (Role::Finance | Role::Admin, Some(_)) => {
            return Err(ApiError::validation(format!(
                "a {} key acts for no account",
                role.as_str()
            )))
        }
        (_, Some(AccountId::MARKET)) => {
            return Err(ApiError::validation(
                "account 0 is the market's own account",
            ))
        }
        _ => {}
    }
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map_err(|e| ApiError::internal(format!("argon2: {e}")))?
        .to_string();
    let id = store::insert_key(conn, role.into(), account, label, &hash)?;
    Ok((id, format!("gpm_{id}_{secret}")))
}

/// Revokes a key; `false` when there is no such key or it was revoked already.
pub fn revoke_key(conn: &mut PgConnection, id: i64) -> Result<bool, ApiError> {
    Ok(store::revoke_key(conn, id)?)
}

pub fn list_keys(conn: &mut PgConnection) -> Result<Vec<KeyInfo>, ApiError> {
    Ok(store::keys(conn)?)
}

/// The id of a well-formed key (its row), before anything is looked up or hashed.
pub fn key_id(key: &str) -> Result<i64, ApiError> {
    parse_key(key).map(|(id, _)| id)
}

/// Splits `gpm_{id}_{secret}`.
fn parse_key(key: &str) -> Result<(i64, &str), ApiError> {
    let malformed = || ApiError::unauthenticated("malformed API key (expected gpm_ID_SECRET)");
    let rest = key.strip_prefix("gpm_").ok_or_else(malformed)?;
    let (id, secret) = rest.split_once('_').ok_or_else(malformed)?;
    let id = id.parse::<i64>().map_err(|_| malformed())?;
    if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    Ok((id, secret))
}

struct Verified {
    secret: String,
    principal: Principal,
    at: Instant,
}

/// Verifies keys against the database, remembering verified ones for [`RECHECK_AFTER`].
#[derive(Default)]
pub struct KeyCache {
    verified: Mutex<HashMap<i64, Verified>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").finish_non_exhaustive()
    }
}

impl KeyCache {
    /// The principal of `key` if it was verified recently; `Err` if it is malformed.
    pub fn cached(&self, key: &str) -> Result<Option<Principal>, ApiError> {
        let (id, secret) = parse_key(key)?;
        let verified = self.verified.lock().expect("key cache lock");
        Ok(verified
            .get(&id)
            .filter(|v| v.at.elapsed() < RECHECK_AFTER && v.secret == secret)
            .map(|v| v.principal))
    }

    /// Whether `key` was verified before (however long ago): checking it again reads its row
    /// but hashes nothing, so it need not wait behind someone else's failures.
    pub fn known(&self, key: &str) -> bool {
        let Ok((id, secret)) = parse_key(key) else {
            return false;
        };
        let verified = self.verified.lock().expect("key cache lock");
        verified.get(&id).is_some_and(|v| v.secret == secret)
    }

    /// Reads the key's row and checks the secret (blocking: call off the async threads).
    pub fn verify(&self, conn: &mut PgConnection, key: &str) -> Result<Principal, ApiError> {
        let (id, secret) = parse_key(key)?;
        let unknown = || ApiError::unauthenticated("unknown or revoked API key");
        let row = store::key(conn, id)?.ok_or_else(unknown)?;
        if row.revoked {
            self.verified.lock().expect("key cache lock").remove(&id);
            return Err(unknown());
        }
        let remembered = {
            let verified = self.verified.lock().expect("key cache lock");
            verified.get(&id).is_some_and(|v| v.secret == secret)
        };
        if !remembered {
            let hash = PasswordHash::new(&row.secret_hash)
                .map_err(|e| ApiError::internal(format!("stored hash of key {id}: {e}")))?;
            Argon2::default()
                .verify_password(secret.as_bytes(), &hash)
                .map_err(|_| unknown())?;
        }
        let principal = Principal {
            key_id: id,
            role: row.role.into(),
            account: row.account,
        };
        self.verified.lock().expect("key cache lock").insert(
            id,
            Verified {
                secret: secret.to_owned(),
                principal,
                at: Instant::now(),
            },
        );
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::ErrorCode;

    #[test]
    fn malformed_keys_are_refused_before_any_lookup() {
        for key in [
            "",
            "gpm_",
            "gpm_x_00",
            "gpm_1_short",
            "xyz_1_0000000000000000000000000000000000000000000000000000000000000000",
            "gpm_1_zz00000000000000000000000000000000000000000000000000000000000000",
        ] {
            let err = KeyCache::default().cached(key).unwrap_err();
            assert_eq!(err.code, ErrorCode::Unauthenticated, "{key}");
        }
        let fine = format!("gpm_12_{}", "ab".repeat(32));
        assert_eq!(KeyCache::default().cached(&fine).unwrap(), None);
    }

    #[test]
    fn roles_read_only_their_own_account_unless_finance_or_admin() {
        let trader = Principal {
            key_id: 1,
            role: Role::Trader,
            account: Some(AccountId(7)),
        };
        assert_eq!(trader.account_to_read(None).unwrap(), AccountId(7));
        assert_eq!(
            trader.account_to_read(Some(AccountId(7))).unwrap(),
            AccountId(7)
        );
        assert_eq!(
            trader.account_to_read(Some(AccountId(8))).unwrap_err().code,
            ErrorCode::Forbidden
        );
        let finance = Principal {
            key_id: 2,
            role: Role::Finance,
            account: None,
        };
        assert_eq!(
            finance.account_to_read(Some(AccountId(8))).unwrap(),
            AccountId(8)
        );
        assert_eq!(
            finance.account_to_read(None).unwrap_err().code,
            ErrorCode::Validation
        );
        assert_eq!(
            finance.own_account().unwrap_err().code,
            ErrorCode::Forbidden
        );
    }
}
