//! `gpumarket migrate`: brings a ledger database's schema up to date.

use std::io::{self, Write};

use anyhow::{Context, Result};
use diesel::{Connection, PgConnection};

/// Apply the ledger migrations the database does not have yet and print each one applied.
#[derive(clap::Args)]
pub struct Args {
    /// The ledger database, e.g. `postgres://user@host:5432/gpumarket`.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
}

pub fn run(args: Args) -> Result<()> {
    let mut conn =
        PgConnection::establish(&args.database_url).context("connecting to the ledger database")?;
    let applied = ledger::migrate_listed(&mut conn)?;
    let mut out = io::stdout().lock();
    for name in &applied {
        writeln!(out, "applied {name}")?;
    }
    if applied.is_empty() {
        writeln!(out, "up to date: no pending migrations")?;
    }
    Ok(())
}
