//! `gpumarket keys`: creates, lists and revokes the API's keys.

use std::io::{self, Write};

use anyhow::{Context, Result};
use clap::Subcommand;
use diesel::{Connection, PgConnection};
use tracing::info;

/// Create, list and revoke API keys (stored as argon2id hashes in the ledger database).
#[derive(clap::Args)]
pub struct Args {
    /// The ledger database, e.g. `postgres://user@host:5432/gpumarket`.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Create a key and print it (shown only this once).
    Create {
        /// trader, provider, finance or admin.
        #[arg(long)]
        role: String,
        /// The market account a trader or provider acts as.
        #[arg(long)]
        account: Option<u64>,
        /// A note to recognise the key by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List every key (never the secrets).
    List,
    /// Revoke a key by its id; API processes stop accepting it within seconds.
    Revoke { id: i64 },
}

pub fn run(args: Args) -> Result<()> {
    let mut conn =
        PgConnection::establish(&args.database_url).context("connecting to the ledger database")?;
    ledger::migrate(&mut conn)?;
    let describe = |e: api::ApiError| anyhow::anyhow!(e.describe());
    let mut out = io::stdout().lock();
    match args.action {
        Action::Create {
            role,
            account,
            label,
        } => {
            let role: api::auth::Role = role.parse().map_err(describe)?;
            let (id, key) =
                api::auth::create_key(&mut conn, role, account.map(contract::AccountId), &label)
                    .map_err(describe)?;
            writeln!(out, "{key}")?;
            info!(
                id,
                role = role.as_str(),
                "key created: it is shown only this once"
            );
        }
        Action::List => {
            for k in api::auth::list_keys(&mut conn).map_err(describe)? {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.role,
                    k.account.map_or("-".to_owned(), |a| a.to_string()),
                    k.created_at.to_rfc3339(),
                    k.revoked_at.map_or("active".to_owned(), |t| format!(
                        "revoked {}",
                        t.to_rfc3339()
                    )),
                    k.label
                )?;
            }
        }
        Action::Revoke { id } => {
            let revoked = api::auth::revoke_key(&mut conn, id).map_err(describe)?;
            anyhow::ensure!(revoked, "no active key {id}");
            writeln!(out, "revoked {id}")?;
        }
    }
    Ok(())
}
