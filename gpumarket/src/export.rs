//! `gpumarket export`: the finance exports of the ledger database.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::{Connection, PgConnection};
use tracing::info;

/// Write a finance export of the ledger database for a period: the journal (every
/// posting, traceable to its event and command), usage in the FOCUS format, or the
/// reconciliation report (which fails the command when it finds a break). Given the chain's
/// node and the escrow address, the reconciliation checks the ledger against the chain
/// itself and reports solvency: customer liabilities against the escrow's holdings.
#[derive(clap::Args)]
pub struct Args {
    what: ExportKind,
    /// The ledger database, e.g. `postgres://user@host:5432/gpumarket`.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Start of the period (inclusive): `YYYY-MM-DD` (UTC midnight) or RFC 3339.
    #[arg(long, value_parser = parse_time)]
    from: DateTime<Utc>,
    /// End of the period (exclusive), in the same forms.
    #[arg(long, value_parser = parse_time)]
    to: DateTime<Utc>,
    /// The file to write; standard output when absent.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The ISO 4217 code the market's amounts are in (FOCUS `BillingCurrency`).
    #[arg(long, default_value = "USD")]
    currency: String,
    /// How the reconciliation report cuts the period.
    #[arg(long, default_value = "day")]
    granularity: GranularityArg,
    /// The chain node's CometBFT JSON-RPC endpoint: the reconciliation reads the escrow's
    /// balance and transfers from it.
    #[arg(long, env = "GPUMARKET_CHAIN_RPC", requires = "escrow_address")]
    chain_rpc: Option<String>,
    /// The escrow account's address on the chain.
    #[arg(long, env = "GPUMARKET_ESCROW_ADDRESS", requires = "chain_rpc")]
    escrow_address: Option<String>,
    /// The bank denom the market settles in.
    #[arg(long, env = "GPUMARKET_CHAIN_DENOM", default_value = "uusdc")]
    denom: String,
    /// Decimal places between the market's unit and the denom.
    #[arg(long, env = "GPUMARKET_CHAIN_DECIMALS", default_value_t = 6)]
    decimals: u32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportKind {
    Journal,
    Focus,
    Reconciliation,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GranularityArg {
    Day,
    Month,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is neither YYYY-MM-DD nor RFC 3339: {e}"))
}

pub fn run(args: Args) -> Result<()> {
    let period = ledger::export::Period::new(args.from, args.to)?;
    let mut conn =
        PgConnection::establish(&args.database_url).context("connecting to the ledger database")?;
    let sink: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    match args.what {
        ExportKind::Journal => {
            let rows = ledger::export::journal_csv(&mut conn, period, sink)?;
            info!(rows, "journal exported");
        }
        ExportKind::Focus => {
            let currency = &args.currency;
            anyhow::ensure!(
                currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()),
                "--currency must be an ISO 4217 code such as USD (got {currency:?})"
            );
            let rows = ledger::export::focus_csv(&mut conn, period, currency, sink)?;
            info!(rows, "FOCUS usage exported");
        }
        ExportKind::Reconciliation => {
            let granularity = match args.granularity {
                GranularityArg::Day => ledger::export::Granularity::Day,
                GranularityArg::Month => ledger::export::Granularity::Month,
            };
            // The chain first: the report's snapshot is then at least as new as the view, and
            // what the view cannot show yet is told apart by height.
            let chain = match (&args.chain_rpc, &args.escrow_address) {
                (Some(rpc), Some(escrow)) => Some(
                    cosmos_bridge::bridge::chain_view(
                        &cosmos_bridge::chain::ChainClient::new(rpc),
                        &args.denom,
                        args.decimals,
                        escrow,
                    )
                    .with_context(|| format!("reading the escrow {escrow} from {rpc}"))?,
                ),
                _ => None,
            };
            let report =
                ledger::export::reconciliation(&mut conn, period, granularity, chain.as_ref())?;
            report.write_csv(sink)?;
            if let Some(s) = &report.solvency {
                info!(liabilities = %s.liabilities, in_flight = %s.in_flight,
                      holdings = %s.holdings, height = s.height, "solvency");
            }
            info!(
                lines = report.lines.len(),
                transactions = report.transactions,
                breaks = report.breaks.len(),
                "reconciliation written"
            );
            for b in &report.breaks {
                tracing::error!(check = b.check, period_start = %b.period_start, "{}", b.detail);
            }
            anyhow::ensure!(
                report.breaks.is_empty(),
                "the reconciliation found {} breaks (listed in the report)",
                report.breaks.len()
            );
        }
    }
    Ok(())
}
