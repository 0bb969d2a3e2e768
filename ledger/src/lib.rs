//! The ledger: Postgres projections of the event log.
//!
//! The projector framework ([`Projector`]: exactly once, positions stored in the same
//! transaction as the rows; rebuild from offset zero) runs three projections:
//!
//! - [`Journal`]: every event that moves money becomes a journal transaction whose postings
//!   sum to zero, with balances per account and bucket and net positions per account kept in
//!   the same transaction;
//! - [`Activity`]: markets, orders and their history, trades, leases, and billing (usage
//!   lines, invoices, provider earnings);
//! - [`Reputation`]: nodes, provider scores with their components, and the history that
//!   explains them.
//!
//! [`export`] writes the finance files (journal CSV, FOCUS usage, reconciliation) from them.
//! I/O stays at the edges: [`journal::postings`] (event → postings) and the reputation
//! formula are pure; the projector reads the log and writes Postgres around them.

mod activity;
mod columns;
pub mod export;
pub mod journal;
mod journal_projection;
mod projector;
pub mod read;
pub mod reputation;
pub mod schema;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

use std::error::Error;

use contract::codec::DecodeError;
use diesel::migration::MigrationSource;
use diesel::pg::{Pg, PgConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use eventlog::LogError;
use tracing::info;

pub use activity::{Activity, ActivityBatch};
pub use journal_projection::{Journal, JournalBatch};
pub use projector::{Projection, Projector, ProjectorConfig, Refusal};
pub use reputation::{Reputation, ReputationBatch};

/// The workspace's `migrations/`, compiled in so a binary migrates its database without
/// the source tree.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Applies the migrations the database does not have yet; returns how many it applied.
pub fn migrate(conn: &mut PgConnection) -> Result<usize, LedgerError> {
    Ok(migrate_listed(conn)?.len())
}

/// Applies the migrations the database does not have yet; returns the names (folder names
/// under `migrations/`) of those it applied, in order.
pub fn migrate_listed(conn: &mut PgConnection) -> Result<Vec<String>, LedgerError> {
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(LedgerError::Migrations)?;
    let known = MigrationSource::<Pg>::migrations(&MIGRATIONS).map_err(LedgerError::Migrations)?;
    Ok(applied
        .iter()
        .map(|version| {
            let name = known
                .iter()
                .map(|m| m.name())
                .find(|name| name.version() == *version)
                .map_or_else(|| version.to_string(), |name| name.to_string());
            info!(migration = %name, "migration applied");
            name
        })
        .collect())
}

/// Everything that stops a projector. The variants about a record say where it is; the
/// projector's stored position is then that record's offset.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("applying migrations: {0}")]
    Migrations(#[source] Box<dyn Error + Send + Sync>),
    /// An unknown schema version or damaged bytes.
    #[error("{topic}/{partition} offset {offset} cannot be decoded: {source}")]
    Undecodable {
        topic: String,
        partition: u32,
        offset: u64,
        source: DecodeError,
    },
    #[error("{topic}/{partition} offset {offset} holds seq {seq}: this is not the gap-free event log of one engine")]
    SeqMismatch {
        topic: String,
        partition: u32,
        offset: u64,
        seq: u64,
    },
    #[error("{projector} cannot project {topic}/{partition} offset {offset}: {source}")]
    Refused {
        projector: &'static str,
        topic: String,
        partition: u32,
        offset: u64,
        source: Refusal,
    },
    /// Another instance of the projector moved the stored position: this one is stale.
    #[error("{projector} on {topic}/{partition} expected to stand at {expected} but the database says {found:?}: another instance is projecting; reopen")]
    PositionMoved {
        projector: &'static str,
        topic: String,
        partition: u32,
        expected: u64,
        found: Option<i64>,
    },
    #[error("{projector} already projects topic {existing:?} into this database, not {requested:?}: use one database per events topic")]
    OtherTopic {
        projector: &'static str,
        existing: String,
        requested: String,
    },
    /// A stored value that does not read back as its type: the table was changed by hand
    /// or by another version.
    #[error("table {table}: {detail}")]
    BadRow { table: &'static str, detail: String },
    #[error("{what} {value} does not fit its database column")]
    OutOfRange { what: &'static str, value: i128 },
    #[error("an export period must end after it starts (from {from}, to {to})")]
    BadPeriod {
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    },
    #[error("writing an export: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing an export: {0}")]
    Export(String),
    /// The log refers to something the projection never saw (e.g. a lease end without its
    /// lease): the log is not complete from offset zero, or the tables were changed by hand.
    #[error("{projector} on partition {partition}: {detail}")]
    Inconsistent {
        projector: &'static str,
        partition: i32,
        detail: String,
    },
}
