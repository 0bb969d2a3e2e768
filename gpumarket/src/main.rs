//! `gpumarket`: the market's command-line entry point.
//!
//! One module per subcommand, each with its arguments and its `run`: `up` runs the whole
//! market in one process (`demo` adds simulated providers and bots to it); `engine` runs one
//! shard's matching engine against the event log (embedded or Kafka); `apply` drives an
//! in-process engine over a file of commands; `migrate` brings a ledger database's schema up
//! to date; `project` runs the ledger's projectors (journal, activity, reputation) on one
//! events partition; `export` writes the finance exports; `api` serves the GraphQL API and
//! `keys` manages its keys; `bridge` runs and inspects the Cosmos bridge and `devnet` serves
//! the local chain simulator. `common` holds what several of them use and none owns.

use clap::{Parser, Subcommand};

mod api;
mod apply;
mod audit;
mod bridge;
mod common;
mod demo;
mod devnet;
mod engine;
mod export;
mod keys;
mod migrate;
mod project;
mod render_farm;
mod up;

#[derive(Parser)]
#[command(name = "gpumarket", version, about = "The open GPU-compute exchange")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

// Each subcommand's help text is its arguments' doc comment, in its module.
#[derive(Subcommand)]
enum Cmd {
    Up(up::Args),
    Engine(engine::Args),
    Migrate(migrate::Args),
    Project(project::Args),
    Export(export::Args),
    Api(api::Args),
    Bridge(bridge::Args),
    Devnet(devnet::Args),
    Keys(keys::Args),
    Apply(apply::Args),
    Audit(audit::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Up(args) => up::run(args),
        Cmd::Audit(args) => audit::run(args),
        Cmd::Engine(args) => engine::run(args),
        Cmd::Migrate(args) => migrate::run(args),
        Cmd::Project(args) => project::run(args),
        Cmd::Export(args) => export::run(args),
        Cmd::Api(args) => api::run(args),
        Cmd::Bridge(args) => bridge::run(args),
        Cmd::Devnet(args) => devnet::run(args),
        Cmd::Keys(args) => keys::run(args),
        Cmd::Apply(args) => apply::run(args),
    }
}
