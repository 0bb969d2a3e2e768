//! Runs one engine over one workload and turns the timings into a [`Report`].

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::workload::{Expected, Workload};

/// How the figures are taken; printed with every report.
const METHOD: &str = "three passes over the same pre-converted commands, each on a fresh \
engine after untimed setup: a throughput pass timed as a whole (msgs_per_sec), a latency pass \
timing each message with Instant::now into a preallocated vector (p50/p99/p999/max/mean_ns), and \
an untimed pass that inspects every outcome (trades, rejections, depth)";

/// Which of the three passes an engine is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Timed,
    Observed,
}

/// An order book under test, driven through its own command type.
pub trait Book: Sized {
    const NAME: &'static str;
    type Command;

    /// Translates the workload's messages into this engine's commands, ahead of timing.
    fn convert(workload: &Workload) -> anyhow::Result<Vec<Self::Command>>;

    /// A fresh engine with the workload's markets, accounts and reputations set up.
    fn open(workload: &Workload, pass: Pass) -> anyhow::Result<Self>;

    /// Executes one command, keeping its outcome for [`Book::observe`].
    fn execute(&mut self, command: &Self::Command);

    /// Adds the last command's outcome, and the book's depth after it, to `seen`.
    fn observe(&mut self, seen: &mut Observed);

    fn resting_orders(&self) -> usize;
}

/// What the untimed pass saw.
#[derive(Debug, Default)]
pub struct Observed {
    pub trades: u64,
    /// Refused commands by the engine's own error name or code.
    pub rejections: BTreeMap<String, u64>,
    pub price_levels_max: usize,
}

impl Observed {
    pub fn reject(&mut self, code: &str) {
        *self.rejections.entry(code.to_owned()).or_default() += 1;
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub engine: &'static str,
    pub workload: &'static str,
    pub seed: u64,
    pub messages: usize,
    pub new_orders: u64,
    pub msgs_per_sec: u64,
    pub throughput_ms: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: u64,
    pub trades: u64,
    pub rejections: BTreeMap<String, u64>,
    /// Counting the preloaded orders, which stay.
    pub resting_orders_at_end: usize,
    pub price_levels_max: usize,
    /// Resting orders and open leases set up before the first message.
    pub preloaded: u64,
    /// The generator's reference book's figures, to check the engine against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expected>,
    pub method: &'static str,
}

pub fn measure<B: Book>(workload: &Workload) -> anyhow::Result<Report> {
    let progress = |step: &str| eprintln!("[{} / {}] {step}", B::NAME, workload.name);
    progress("converting messages");
    let commands = B::convert(workload)?;

    progress("throughput pass");
    let mut book = B::open(workload, Pass::Timed)?;
    let start = Instant::now();
    for command in &commands {
        book.execute(command);
    }
    let elapsed = start.elapsed();
    // Tearing the book down is not part of the run.
    drop(book);

    progress("latency pass");
    let mut book = B::open(workload, Pass::Timed)?;
    let mut latencies = Vec::with_capacity(commands.len());
    for command in &commands {
        let start = Instant::now();
        book.execute(command);
        latencies.push(nanos(start.elapsed()));
    }
    drop(book);

    progress("observing pass");
    let mut book = B::open(workload, Pass::Observed)?;
    let mut seen = Observed::default();
    for command in &commands {
        book.execute(command);
        book.observe(&mut seen);
    }

    latencies.sort_unstable();
    let n = latencies.len();
    let percentile = |p: f64| {
        // Nearest rank: the smallest latency that at least `p` of the messages stayed under.
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
        latencies.get(rank - 1).copied().unwrap_or(0)
    };
    let total: u64 = latencies.iter().sum();
    Ok(Report {
        engine: B::NAME,
        workload: workload.name,
        seed: workload.seed,
        messages: n,
        new_orders: workload.new_orders,
        msgs_per_sec: (n as f64 / elapsed.as_secs_f64()).round() as u64,
        throughput_ms: nanos(elapsed) / 1_000_000,
        p50_ns: percentile(0.50),
        p99_ns: percentile(0.99),
        p999_ns: percentile(0.999),
        max_ns: latencies.last().copied().unwrap_or(0),
        mean_ns: total / n.max(1) as u64,
        trades: seen.trades,
        rejections: seen.rejections,
        resting_orders_at_end: book.resting_orders(),
        price_levels_max: seen.price_levels_max,
        preloaded: workload.preload,
        expected: workload.expected,
        method: METHOD,
    })
}

fn nanos(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}
