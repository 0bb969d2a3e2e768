//! `api_keys`: one row per key, holding the hash of its secret, never the secret.

use chrono::{DateTime, Utc};
use contract::AccountId;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};

use crate::read::{param, parsed, unsigned};
use crate::LedgerError;

/// What a key may do. A trader and a provider act as one market account; finance reads
/// balances, journals and exports of every account; admin manages markets and keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Trader,
    Provider,
    Finance,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Trader, Role::Provider, Role::Finance, Role::Admin];

    /// The stored name (`trader`, `provider`, `finance`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Trader => "trader",
            Role::Provider => "provider",
            Role::Finance => "finance",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Role, ()> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// A key as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: i64,
    pub role: Role,
    pub account: Option<AccountId>,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What checking a key needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub role: Role,
    pub account: Option<AccountId>,
    /// The argon2id hash of the secret (PHC string).
    pub secret_hash: String,
    pub revoked: bool,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Stores a new key; returns its id.
pub fn insert_key(
    conn: &mut PgConnection,
    role: Role,
    account: Option<AccountId>,
    label: &str,
    secret_hash: &str,
) -> Result<i64, LedgerError> {
    let account = account.map(|a| param(a.0)).transpose()?;
    let row: Id = diesel::sql_query(
        "INSERT INTO api_keys (role, account, label, secret_hash) VALUES ($1, $2, $3, $4) \
         RETURNING id",
    )
    .bind::<Text, _>(role.as_str())
    .bind::<Nullable<BigInt>, _>(account)
    .bind::<Text, _>(label)
    .bind::<Text, _>(secret_hash)
    .get_result(conn)?;
    Ok(row.id)
}

/// Revokes a key; `false` when there is no such key or it was revoked already.
pub fn revoke_key(conn: &mut PgConnection, id: i64) -> Result<bool, LedgerError> {
    let changed = diesel::sql_query(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind::<BigInt, _>(id)
    .execute(conn)?;
    Ok(changed == 1)
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    account: Option<i64>,
    #[diesel(sql_type = Text)]
    label: String,
    #[diesel(sql_type = Text)]
    secret_hash: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    revoked_at: Option<DateTime<Utc>>,
}

const T: &str = "api_keys";

impl KeyRow {
    fn account(&self) -> Result<Option<AccountId>, LedgerError> {
        self.account
            .map(|a| unsigned(T, "account", a).map(AccountId))
            .transpose()
    }
}

const KEY_COLUMNS: &str =
    "SELECT id, role, account, label, secret_hash, created_at, revoked_at FROM api_keys";

/// Every key, oldest first.
pub fn keys(conn: &mut PgConnection) -> Result<Vec<KeyInfo>, LedgerError> {
    let rows: Vec<KeyRow> = diesel::sql_query(format!("{KEY_COLUMNS} ORDER BY id")).load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(KeyInfo {
                id: r.id,
                role: parsed(T, "role", &r.role)?,
                account: r.account()?,
                label: r.label,
                created_at: r.created_at,
                revoked_at: r.revoked_at,
            })
        })
        .collect()
}

/// The key `id`, revoked or not.
pub fn key(conn: &mut PgConnection, id: i64) -> Result<Option<KeyRecord>, LedgerError> {
    let row: Option<KeyRow> = diesel::sql_query(format!("{KEY_COLUMNS} WHERE id = $1"))
        .bind::<BigInt, _>(id)
        .get_result(conn)
        .optional()?;
    row.map(|r| {
        Ok(KeyRecord {
            role: parsed(T, "role", &r.role)?,
            account: r.account()?,
            secret_hash: r.secret_hash,
            revoked: r.revoked_at.is_some(),
        })
    })
    .transpose()
}
