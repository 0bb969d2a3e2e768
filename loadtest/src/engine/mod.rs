//! `loadtest engine`: one run, in one process, of
//!
//! - the **plain** workload (one market, unconstrained limit orders, IOC takers, amends,
//!   cancels) through our engine, `matchcore` and `orderbook-rs`, on identical messages;
//! - the **gpu** workload (four GPU markets, node attributes, constrained bids) through our
//!   engine alone, since the others have no notion of constraints.
//!
//! Each engine gets the same messages converted ahead of time into its own command type;
//! see [`measure::measure`] for how the figures are taken.
//!
//! Reading the plain figures side by side: the engines do different work per message.
//! Ours checks and holds the buyer's funds, keeps client-id dedupe, emits events and creates
//! a lease per fill, for many markets at once. `matchcore` keeps one instrument's book and
//! nothing else, and 0.4.0 lets a crossing limit order trade past its own limit price, so
//! it makes more trades than the others on the same messages and later finds some orders
//! already gone. `orderbook-rs` is built for concurrent callers (atomics, lock-free maps)
//! and reads its own clock on every order. Each report carries `trades`, `rejections`,
//! `resting_orders_at_end` and, for the plain workload, the generator's `expected` figures,
//! so an engine that did different work shows it.

mod gpumarket;
mod matchcore_book;
mod measure;
mod orderbook_rs_book;
mod workload;

use contract::{Command, Timestamp};

use self::gpumarket::Gpumarket;
use self::matchcore_book::Matchcore;
use self::measure::{measure, Book, Report};
use self::orderbook_rs_book::OrderbookRs;

/// The run's clock starts here; message `i` is stamped one millisecond after message `i - 1`.
const START: Timestamp = Timestamp(1_700_000_000_000);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// New orders in each workload; cancels and amends come on top (about 1.8× in all).
    #[arg(long, default_value_t = 1_000_000)]
    orders: u64,
    /// Seed of the message generator; the same seed gives the same messages.
    // The default spells "gpumkt" in ASCII.
    #[arg(long, default_value_t = 0x6770_756d_6b74)]
    seed: u64,
    /// Print one JSON object per engine and workload, one per line, instead of a table.
    #[arg(long)]
    json: bool,
    /// Only these engines (gpumarket, matchcore, orderbook-rs); all when empty.
    #[arg(long, value_delimiter = ',')]
    engines: Vec<String>,
    /// Only these workloads (plain, gpu); both when empty.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Resting orders, and as many open leases, our engine holds before the first message,
    /// priced where no message trades with them (the other engines are skipped).
    #[arg(long, default_value_t = 0)]
    preload: u64,
}

impl Args {
    fn wants(list: &[String], name: &str) -> bool {
        list.is_empty() || list.iter().any(|n| n == name)
    }
}

/// The plain workload as log commands: market setup, then every message, each with its time.
pub fn commands_for_log(orders: u64, seed: u64) -> anyhow::Result<Vec<(Timestamp, Command)>> {
    let plain = workload::plain(orders, seed, START);
    let setup = gpumarket::setup(&plain)?;
    Ok(setup
        .into_iter()
        .map(|c| (START, c))
        .chain(Gpumarket::convert(&plain)?)
        .collect())
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    let mut publish = |report: Report| -> anyhow::Result<()> {
        // Lines go out as soon as they are ready: a full run takes a while.
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        }
        reports.push(report);
        Ok(())
    };

    let engine =
        |name| Args::wants(&args.engines, name) && (args.preload == 0 || name == "gpumarket");
    if Args::wants(&args.workloads, "plain") {
        eprintln!(
            "generating the plain workload: {} new orders, seed {}",
            args.orders, args.seed
        );
        let mut plain = workload::plain(args.orders, args.seed, START);
        plain.preload = args.preload;
        if engine("gpumarket") {
            publish(measure::<Gpumarket>(&plain)?)?;
        }
        if engine("matchcore") {
            publish(measure::<Matchcore>(&plain)?)?;
        }
        if engine("orderbook-rs") {
            publish(measure::<OrderbookRs>(&plain)?)?;
        }
    }
    if Args::wants(&args.workloads, "gpu") && engine("gpumarket") {
        eprintln!("generating the gpu workload");
        let mut gpu = workload::gpu(args.orders, args.seed, START);
        gpu.preload = args.preload;
        publish(measure::<Gpumarket>(&gpu)?)?;
    }

    if !args.json {
        print_table(&reports);
    }
    Ok(())
}

fn print_table(reports: &[Report]) {
    println!(
        "{:<13} {:<8} {:>9} {:>12} {:>8} {:>8} {:>9} {:>9} {:>10} {:>8} {:>7}",
        "engine",
        "workload",
        "messages",
        "msgs/s",
        "p50 ns",
        "p99 ns",
        "p99.9 ns",
        "trades",
        "rejections",
        "resting",
        "levels"
    );
    for r in reports {
        println!(
            "{:<13} {:<8} {:>9} {:>12} {:>8} {:>8} {:>9} {:>9} {:>10} {:>8} {:>7}",
            r.engine,
            r.workload,
            r.messages,
            r.msgs_per_sec,
            r.p50_ns,
            r.p99_ns,
            r.p999_ns,
            r.trades,
            r.rejections.values().sum::<u64>(),
            r.resting_orders_at_end,
            r.price_levels_max
        );
    }
    for r in reports.iter().filter(|r| !r.rejections.is_empty()) {
        println!(
            "{} / {} rejections: {:?}",
            r.engine, r.workload, r.rejections
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::workload::MsgKind;
    use super::*;

    /// On the plain workload the generator's reference book is exact, so our engine must
    /// trade, rest and spread over levels exactly as it predicts, and refuse only the
    /// deliberately repeated cancels; anything else means a broken order-id prediction or
    /// a matching difference.
    #[test]
    fn our_engine_matches_the_reference_book_on_the_plain_workload() {
        let plain = workload::plain(20_000, 7, START);
        let mut cancelled = HashSet::new();
        let repeated = plain
            .msgs
            .iter()
            .filter(|m| matches!(m.kind, MsgKind::Cancel { order, .. } if !cancelled.insert(order)))
            .count() as u64;
        let expected = plain.expected.expect("the plain workload has expectations");

        let report = measure::<Gpumarket>(&plain).unwrap();

        assert_eq!(
            (
                report.trades,
                report.resting_orders_at_end,
                report.price_levels_max
            ),
            (
                expected.trades,
                expected.resting_orders_at_end,
                expected.price_levels_max
            )
        );
        assert!(repeated > 0, "the workload repeats some cancels");
        assert_eq!(
            report.rejections,
            BTreeMap::from([("UNKNOWN_ORDER".to_owned(), repeated)])
        );
    }

    /// The preload must stay out of the workload's way: the same trades and refusals, and
    /// every preloaded order still resting at the end.
    #[test]
    fn a_preloaded_engine_trades_the_plain_workload_as_an_empty_one() {
        let mut plain = workload::plain(5_000, 7, START);
        let expected = plain.expected.expect("the plain workload has expectations");
        let bare = measure::<Gpumarket>(&plain).unwrap();
        plain.preload = 2_000;

        let report = measure::<Gpumarket>(&plain).unwrap();

        assert_eq!(report.trades, expected.trades);
        assert_eq!(report.rejections, bare.rejections);
        assert_eq!(
            report.resting_orders_at_end,
            expected.resting_orders_at_end + 2_000
        );
        assert_eq!(report.preloaded, 2_000);
    }
}
