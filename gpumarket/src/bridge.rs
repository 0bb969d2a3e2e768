//! `gpumarket bridge`: runs and inspects the Cosmos bridge.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use tracing::info;

use crate::common::stop_on_signals;

/// The Cosmos bridge: credits deposits to the escrow address and settles payouts
/// on chain, exactly once.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    setup: BridgeArgs,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Scan the chain, credit deposits, settle batches, until SIGTERM or Ctrl-C.
    Run,
    /// Escrow balance, open batch, unfinished transactions, last settlement (JSON).
    Status,
    /// Open a settlement batch now (a running bridge signs and sends it).
    SettleNow,
}

/// The chain, the escrow key and the market the bridge works for.
#[derive(clap::Args)]
struct BridgeArgs {
    /// The market's API.
    #[arg(
        long,
        env = "GPUMARKET_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api_url: String,
    /// A file holding an admin API key.
    #[arg(
        long,
        env = "GPUMARKET_API_KEY_FILE",
        default_value = "./data/admin.key"
    )]
    api_key_file: PathBuf,
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The chain node's CometBFT JSON-RPC endpoint.
    #[arg(
        long,
        env = "GPUMARKET_CHAIN_RPC",
        default_value = "http://127.0.0.1:26657"
    )]
    rpc_url: String,
    #[arg(long, env = "GPUMARKET_CHAIN_ID", default_value = "gpumarket-devnet-1")]
    chain_id: String,
    /// The chain's bech32 account prefix.
    #[arg(long, env = "GPUMARKET_CHAIN_PREFIX", default_value = "cosmos")]
    prefix: String,
    /// The bank denom the market settles in.
    #[arg(long, env = "GPUMARKET_CHAIN_DENOM", default_value = "uusdc")]
    denom: String,
    /// Decimal places between the market's unit and the denom.
    #[arg(long, env = "GPUMARKET_CHAIN_DECIMALS", default_value_t = 6)]
    decimals: u32,
    /// Base units per unit of gas.
    #[arg(long, env = "GPUMARKET_GAS_PRICE", default_value = "0.025")]
    gas_price: rust_decimal::Decimal,
    #[arg(long, default_value_t = 100_000)]
    gas_base: u64,
    #[arg(long, default_value_t = 25_000)]
    gas_per_payout: u64,
    /// Blocks from inclusion (1) before a transfer or payout counts.
    #[arg(long, env = "GPUMARKET_CONFIRMATIONS", default_value_t = 1)]
    confirmations: u64,
    /// Seconds between settlement batches.
    #[arg(long, env = "GPUMARKET_SETTLE_EVERY", default_value_t = 3_600)]
    period_secs: u64,
    /// A batch opens at once when this much is due.
    #[arg(long, default_value = "10000")]
    threshold: rust_decimal::Decimal,
    /// Earnings below this wait for a later batch.
    #[arg(long, env = "GPUMARKET_MIN_PAYOUT", default_value = "10")]
    min_payout: rust_decimal::Decimal,
    /// Accounts paid per batch (one transaction).
    #[arg(long, default_value_t = 100)]
    max_payouts: u32,
    #[arg(long, default_value_t = 1_000)]
    poll_ms: u64,
    /// Seconds before a broadcast transaction not yet included is sent again.
    #[arg(long, default_value_t = 30)]
    rebroadcast_secs: u64,
    /// A 0600 file with the escrow key (64 hex digits) or its BIP-39 mnemonic. Without it,
    /// the mnemonic comes from GPUMARKET_ESCROW_MNEMONIC (never from an argument).
    #[arg(long, env = "GPUMARKET_ESCROW_KEY_FILE")]
    escrow_key_file: Option<PathBuf>,
}

impl BridgeArgs {
    fn bridge(self) -> Result<cosmos_bridge::bridge::Bridge> {
        let key = match &self.escrow_key_file {
            Some(path) => cosmos_bridge::keys::EscrowKey::from_file(path, &self.prefix)?,
            None => {
                let phrase = std::env::var("GPUMARKET_ESCROW_MNEMONIC")
                    .context("no escrow key: set --escrow-key-file or GPUMARKET_ESCROW_MNEMONIC")?;
                let passphrase = std::env::var("GPUMARKET_ESCROW_PASSPHRASE").unwrap_or_default();
                cosmos_bridge::keys::EscrowKey::from_mnemonic(&phrase, &passphrase, &self.prefix)?
            }
        };
        let api_key = std::fs::read_to_string(&self.api_key_file)
            .with_context(|| format!("reading the API key {}", self.api_key_file.display()))?;
        let config = cosmos_bridge::bridge::Config {
            chain: cosmos_bridge::tx::Chain {
                chain_id: self.chain_id,
                prefix: self.prefix,
                denom: self.denom,
                decimals: self.decimals,
            },
            rpc_url: self.rpc_url,
            api_url: self.api_url,
            api_key,
            database_url: self.database_url,
            gas_price: self.gas_price,
            gas_base: self.gas_base,
            gas_per_payout: self.gas_per_payout,
            confirmations: self.confirmations,
            period: Duration::from_secs(self.period_secs),
            threshold: self.threshold,
            min_payout: self.min_payout,
            max_payouts: self.max_payouts,
            poll: Duration::from_millis(self.poll_ms),
            rebroadcast_after: Duration::from_secs(self.rebroadcast_secs),
        };
        Ok(cosmos_bridge::bridge::Bridge::new(config, key)?)
    }
}

pub fn run(args: Args) -> Result<()> {
    let mut bridge = args.setup.bridge()?;
    match args.action {
        Action::Run => {
            let stop = stop_on_signals()?;
            bridge.run(&stop);
            info!("bridge stopped");
        }
        Action::Status => {
            println!("{}", serde_json::to_string_pretty(&bridge.status()?)?);
        }
        Action::SettleNow => match bridge.open_batch()? {
            Some(batch) => println!(
                "opened settlement batch {} paying {} accounts; the running bridge sends it",
                batch.id,
                batch.payouts.len()
            ),
            None => println!("nothing to settle"),
        },
    }
    Ok(())
}
