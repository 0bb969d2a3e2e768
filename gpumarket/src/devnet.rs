//! `gpumarket devnet`: the local chain simulator, for demos and tests.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use tracing::info;

use crate::common::stop_on_signals;

/// Serve a local devnet simulator (a Cosmos SDK bank chain over CometBFT JSON-RPC) for
/// demos and tests: it checks real signed transactions and makes a block every
/// `--block-ms`.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:26657")]
    listen: String,
    #[arg(long, default_value = "gpumarket-devnet-1")]
    chain_id: String,
    #[arg(long, default_value = "cosmos")]
    prefix: String,
    #[arg(long, default_value = "uusdc")]
    denom: String,
    /// The least fee a transaction must pay, in base units.
    #[arg(long, default_value_t = 1_000)]
    min_fee: u128,
    #[arg(long, default_value_t = 1_000)]
    block_ms: u64,
    /// Genesis balances: `ADDRESS=BASE_UNITS`, repeatable.
    #[arg(long = "fund", value_name = "ADDRESS=BASE_UNITS")]
    fund: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let mut devnet =
        cosmos_bridge::devnet::Devnet::new(&args.chain_id, &args.prefix, &args.denom, args.min_fee);
    for grant in &args.fund {
        let (address, amount) = grant
            .split_once('=')
            .with_context(|| format!("--fund {grant:?}: expected ADDRESS=BASE_UNITS"))?;
        devnet.fund(
            address,
            amount
                .parse()
                .with_context(|| format!("--fund {grant:?}"))?,
        );
    }
    let server =
        cosmos_bridge::devnet::server::DevnetServer::start(devnet, &args.listen, args.block_ms)?;
    info!(
        url = server.url(),
        chain_id = args.chain_id,
        "devnet simulator serving (simulated chain, not a real network)"
    );
    let stop = stop_on_signals()?;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
