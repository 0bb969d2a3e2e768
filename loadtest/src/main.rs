//! `loadtest`: programs that put load on the market and print figures. Benchmarks live
//! here, never as timed assertions in tests.

use clap::{Parser, Subcommand};

mod api;
mod blobs;
mod chart;
mod clock;
mod e2e;
mod engine;
mod ledger;
mod log;
mod render;

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
    /// Time the engine's clock tick with many metered leases open: when nothing is due,
    /// and when thousands of leases fail at once.
    Clock(clock::Args),
    /// Push commands through the event log into a running engine and read the events back.
    Log(log::Args),
    /// Many concurrent GraphQL clients against a running `gpumarket api`: depth, my orders,
    /// placeOrder.
    Api(api::Args),
    /// Project a generated engine event stream into Postgres through the ledger's projectors.
    Ledger(ledger::Args),
    /// Bidding bots and providers against a whole running market (`gpumarket up`) for a
    /// fixed time; prints figures, draws latency over time, then verifies the books.
    E2e(e2e::Args),
    /// One large blob up and down through a running market's `/blobs`: MB/s each way and
    /// the server's memory while it streams.
    Blobs(blobs::Args),
    /// A render job against a running market with 1, 2 and 4 simulated providers rendering
    /// with real Blender: frames/s, time to first frame, scheduling overhead per frame,
    /// verification's cost; and Blender alone on the same frames.
    Render(render::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Api(args) => api::run(&args),
        Command::Blobs(args) => blobs::run(&args),
        Command::Render(args) => render::run(&args),
        Command::E2e(args) => e2e::run(&args),
        Command::Clock(args) => clock::run(&args),
        Command::Engine(args) => engine::run(&args),
        Command::Log(args) => log::run(&args),
        Command::Ledger(args) => ledger::run(&args),
    }
}
