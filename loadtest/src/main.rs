//! `loadtest`: programs that put load on the market and print figures. Benchmarks live
//! here, never as timed assertions in tests.

use clap::{Parser, Subcommand};

mod api;
mod engine;
mod ledger;
mod log;

#[derive(Debug, Parser)]
#[command(about, version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Time the matching engine, and published order books on the same messages.
    Engine(engine::Args),
    /// Push commands through the event log into a running engine and read the events back.
    Log(log::Args),
    /// Many concurrent GraphQL clients against a running `gpumarket api`: depth, my orders,
    /// placeOrder.
    Api(api::Args),
    /// Project a generated engine event stream into Postgres through the ledger's projectors.
    Ledger(ledger::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Api(args) => api::run(&args),
        Command::Engine(args) => engine::run(&args),
        Command::Log(args) => log::run(&args),
        Command::Ledger(args) => ledger::run(&args),
    }
}
