//! `loadtest clock`: what one clock tick costs the engine with many metered leases open.
//!
//! The setup, untimed: one market (daily charge periods, a 30 s heartbeat timeout), nodes
//! of 65,536 GPUs each with one ask, and `--leases` metered one-GPU bids filling them at
//! the run's start; every node then reports, listing its leases, so each lease is
//! acknowledged and its one timer entry is its next accrual or its term, hours away.
//!
//! - **quiet**: `--ticks` ticks one millisecond apart, inside the heartbeat timeout, when
//!   nothing is due: the cost of looking at the deadline structure.
//! - **expiring**: `--expiring` more leases, on a node that reports but never lists them,
//!   all reach their acknowledgement deadline in the same millisecond; one tick fails them
//!   all (a close, a refund and, with no re-bid, nothing more per lease). The first
//!   leases' own acknowledgement deadlines pass in an untimed tick before. Each repeat
//!   builds the whole setup again.

use std::time::Instant;

use anyhow::{ensure, Context};
use contract::{
    AccountId, Amount, AskSpec, BidSpec, ChargePeriod, ClientOrderId, Command, Event, FeeRate,
    GpuStatus, Gpus, Hours, Interconnect, LeaseId, MarketConfig, MarketConfigFields, MarketId,
    NewOrder, NodeId, NodeKey, OrderOptions, OrderTerms, Price, Region, ReportEvidence, ShortText,
    Signature, SignedHeartbeat, TimeInForce, Timestamp, Vendor,
};
use matching_engine::Engine;
use serde::Serialize;

/// 2026-01-01T00:00:00Z: a day's start, so the first charge period ends a day later.
const T0: i64 = 1_767_225_600_000;
const TIMEOUT_MS: i64 = 30_000;
const NODE_GPUS: u64 = 65_536;
const BUYER_BIDS: u64 = 10_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Metered leases open during the run.
    #[arg(long, default_value_t = 1_000_000)]
    leases: u64,
    /// Ticks timed when nothing is due.
    #[arg(long, default_value_t = 20_000)]
    ticks: u64,
    /// Leases that fail in one tick.
    #[arg(long, default_value_t = 10_000)]
    expiring: u64,
    /// Setups built for the expiring figure (one tick each).
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// One JSON object per figure instead of lines of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Figure {
    case: &'static str,
    open_leases: u64,
    ticks: usize,
    expired_per_tick: u64,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
    setup_ms: u128,
}

fn market() -> MarketId {
    MarketId::parse("H100-80GB").expect("a market id")
}

fn node(i: u64) -> NodeId {
    NodeId::parse(&format!("node-{i}")).expect("a node name")
}

const PROVIDER: AccountId = AccountId(1_000_000);

/// Applies one command, which must be accepted.
fn apply(
    engine: &mut Engine,
    at: i64,
    command: &Command,
    out: &mut Vec<Event>,
) -> anyhow::Result<()> {
    out.clear();
    engine
        .apply(Timestamp(at), command, out)
        .map_err(|r| anyhow::anyhow!("{r}"))
        .with_context(|| format!("setup command {}", command.kind()))
}

fn ask(node_index: u64, gpus: u64) -> anyhow::Result<Command> {
    Ok(Command::Place(NewOrder {
        account: PROVIDER,
        client_id: ClientOrderId(u128::from(node_index)),
        market: market(),
        price: Price::parse("1.00")?,
        gpus: Gpus::new(gpus)?,
        tif: TimeInForce::Gtc,
        post_only: false,
        terms: OrderTerms::Ask(AskSpec {
            node: node(node_index),
            vendor: Vendor::Nvidia,
            vram_gb: 80,
            interconnect: Interconnect::NvLink,
            region: Region::parse("eu-west")?,
            available_until: Timestamp(T0 + 400 * Timestamp::MS_PER_HOUR),
        }),
    }))
}

fn report(node_index: u64, sequence: u64, leases: Vec<LeaseId>) -> anyhow::Result<Command> {
    Ok(Command::SignedHeartbeat(Box::new(SignedHeartbeat {
        provider: PROVIDER,
        node: node(node_index),
        market: market(),
        sequence,
        reported_at: Timestamp(T0),
        simulated: true,
        gpus: vec![GpuStatus {
            index: 0,
            vendor: Vendor::Nvidia,
            model: ShortText::parse("NVIDIA H100 80GB HBM3")?,
            uuid: ShortText::parse(&format!("GPU-{node_index}"))?,
            memory_mb: Some(81_559),
            pci_bus_id: None,
            healthy: true,
        }],
        healthy_leases: leases,
        evidence: ReportEvidence {
            node_key: NodeKey([1; 32]),
            signed: b"{}".to_vec(),
            signature: Signature([2; 64]),
        },
    })))
}

/// `leases` acknowledged one-GPU leases at `T0`, then (with `expiring` > 0) that many more
/// at `T0 + 10 s` on a node that reports without listing them, the clock at `T0 + 11 s`.
fn setup(leases: u64, expiring: u64) -> anyhow::Result<Engine> {
    let mut engine = Engine::new();
    let mut out = Vec::new();
    let fields = MarketConfigFields {
        charge_period: ChargePeriod::new(86_400)?,
        report_interval_ms: 10_000,
        heartbeat_timeout_ms: TIMEOUT_MS as u32,
        // Its nodes are this program's, labelled simulated.
        simulated: true,
        ..MarketConfigFields::default()
    };
    for command in [
        Command::CreateMarket {
            market: market(),
            tick: Price::parse("0.01")?,
            fee: FeeRate::new(1_000)?,
        },
        Command::ConfigureMarket {
            market: market(),
            config: MarketConfig::new(fields)?,
        },
    ] {
        apply(&mut engine, T0, &command, &mut out)?;
    }
    let bid = |n: u64| -> anyhow::Result<Command> {
        Ok(Command::PlaceWith {
            order: NewOrder {
                account: AccountId(1 + n / BUYER_BIDS),
                client_id: ClientOrderId(u128::from(n % BUYER_BIDS)),
                market: market(),
                price: Price::parse("1.00")?,
                gpus: Gpus::new(1)?,
                tif: TimeInForce::Gtc,
                post_only: false,
                terms: OrderTerms::Bid(BidSpec::any(Hours::new(24)?)),
            },
            options: OrderOptions::default(),
        })
    };
    let total = leases + expiring;
    for buyer in 0..total.div_ceil(BUYER_BIDS) {
        let deposit = Command::Deposit {
            account: AccountId(1 + buyer),
            amount: Amount::parse(&(BUYER_BIDS * 24).to_string())?,
        };
        apply(&mut engine, T0, &deposit, &mut out)?;
    }
    let nodes = leases.div_ceil(NODE_GPUS);
    let mut by_node: Vec<Vec<LeaseId>> = vec![Vec::new(); nodes as usize];
    for n in 0..nodes {
        apply(
            &mut engine,
            T0,
            &ask(n, NODE_GPUS.min(leases - n * NODE_GPUS))?,
            &mut out,
        )?;
    }
    for n in 0..leases {
        apply(&mut engine, T0, &bid(n)?, &mut out)?;
        for event in &out {
            if let Event::LeaseCreated { lease_id, node, .. } = event {
                let index: u64 = node.as_str()["node-".len()..].parse()?;
                by_node[index as usize].push(*lease_id);
            }
        }
    }
    for (n, leases) in by_node.into_iter().enumerate() {
        apply(
            &mut engine,
            T0 + 1_000,
            &report(n as u64, 1, leases)?,
            &mut out,
        )?;
    }
    if expiring > 0 {
        let late = nodes;
        apply(&mut engine, T0 + 10_000, &ask(late, expiring)?, &mut out)?;
        for n in leases..total {
            apply(&mut engine, T0 + 10_000, &bid(n)?, &mut out)?;
        }
        apply(
            &mut engine,
            T0 + 11_000,
            &report(late, 1, Vec::new())?,
            &mut out,
        )?;
        // The other nodes report again, so that only the acknowledgements are due.
        for n in 0..nodes {
            let name = node(n);
            let listed = engine
                .leases()
                .filter(|l| l.node == name)
                .map(|l| l.id)
                .collect();
            apply(&mut engine, T0 + 11_000, &report(n, 2, listed)?, &mut out)?;
        }
        // The first leases' acknowledgement deadlines (T0 + 30 s) pass, untimed: each
        // acknowledged lease moves its one timer entry on to its next accrual.
        apply(&mut engine, T0 + 35_000, &Command::Tick, &mut out)?;
        ensure!(
            out.is_empty(),
            "nothing ends before the late leases' deadline"
        );
    }
    let open = engine.leases().count() as u64;
    ensure!(open == total, "{open} leases open, {total} wanted");
    Ok(engine)
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn figure(case: &'static str, open: u64, expired: u64, mut ns: Vec<u64>, setup_ms: u128) -> Figure {
    ns.sort_unstable();
    let at = |p: f64| ns[((p * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1];
    Figure {
        case,
        open_leases: open,
        ticks: ns.len(),
        expired_per_tick: expired,
        p50_ns: at(0.50),
        p99_ns: at(0.99),
        p999_ns: at(0.999),
        max_ns: *ns.last().expect("at least one tick"),
        setup_ms,
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(
        args.leases > 0 && args.ticks > 0 && args.repeats > 0,
        "nothing to measure"
    );
    let print =
        |f: &Figure| -> anyhow::Result<()> {
            if args.json {
                println!("{}", serde_json::to_string(f)?);
            } else {
                println!(
                "{:<9} {:>9} open, {:>6} ticks, {:>6} expiring per tick: p50 {} ns, p99 {} ns, \
                 p99.9 {} ns, max {} ns (setup {} ms)",
                f.case, f.open_leases, f.ticks, f.expired_per_tick, f.p50_ns, f.p99_ns,
                f.p999_ns, f.max_ns, f.setup_ms
            );
            }
            Ok(())
        };
    let mut out = Vec::new();

    eprintln!("quiet: opening {} leases", args.leases);
    let started = Instant::now();
    let mut engine = setup(args.leases, 0)?;
    let setup_ms = started.elapsed().as_millis();
    let first = T0 + 1_001;
    ensure!(
        (args.ticks as i64) < TIMEOUT_MS - 1_000,
        "at most {} quiet ticks fit inside the heartbeat timeout",
        TIMEOUT_MS - 1_001
    );
    let mut ns = Vec::with_capacity(args.ticks as usize);
    for k in 0..args.ticks as i64 {
        out.clear();
        let start = Instant::now();
        let answer = engine.apply(Timestamp(first + k), &Command::Tick, &mut out);
        ns.push(nanos(start.elapsed()));
        ensure!(
            answer.is_ok() && out.is_empty(),
            "a quiet tick did something: {out:?}"
        );
    }
    print(&figure("quiet", args.leases, 0, ns, setup_ms))?;
    drop(engine);

    // One node of 65,536 leases goes silent while the others report: its asks are
    // withdrawn and every lease on it fails in one tick.
    if args.leases > NODE_GPUS {
        eprintln!("silent: opening {} leases", args.leases);
        let started = Instant::now();
        let mut engine = setup(args.leases, 0)?;
        let nodes = args.leases.div_ceil(NODE_GPUS);
        for n in 1..nodes {
            let name = node(n);
            let listed = engine
                .leases()
                .filter(|l| l.node == name)
                .map(|l| l.id)
                .collect();
            apply(&mut engine, T0 + 20_000, &report(n, 2, listed)?, &mut out)?;
        }
        apply(&mut engine, T0 + 30_500, &Command::Tick, &mut out)?;
        ensure!(out.is_empty(), "nothing ends before node 0 falls silent");
        let setup_ms = started.elapsed().as_millis();
        out.clear();
        let start = Instant::now();
        let answer = engine.apply(Timestamp(T0 + 1_000 + TIMEOUT_MS), &Command::Tick, &mut out);
        let ns = vec![nanos(start.elapsed())];
        let failed = out
            .iter()
            .filter(|e| matches!(e, Event::LeaseEnded { .. }))
            .count() as u64;
        ensure!(answer.is_ok(), "the silent tick was refused");
        ensure!(
            failed == NODE_GPUS,
            "{failed} leases ended, {NODE_GPUS} wanted"
        );
        print(&figure("silent", args.leases, failed, ns, setup_ms))?;
    }

    if args.expiring > 0 {
        let mut ns = Vec::new();
        let mut setup_ms = 0;
        for repeat in 1..=args.repeats {
            eprintln!(
                "expiring {repeat}/{}: opening {} + {} leases",
                args.repeats, args.leases, args.expiring
            );
            let started = Instant::now();
            let mut engine = setup(args.leases, args.expiring)?;
            setup_ms = started.elapsed().as_millis();
            out.clear();
            let start = Instant::now();
            // The late leases were filled at T0 + 10 s: their acknowledgement is due 30 s on.
            let answer = engine.apply(
                Timestamp(T0 + 10_000 + TIMEOUT_MS),
                &Command::Tick,
                &mut out,
            );
            ns.push(nanos(start.elapsed()));
            let failed = out
                .iter()
                .filter(|e| matches!(e, Event::LeaseEnded { .. }))
                .count() as u64;
            ensure!(answer.is_ok(), "the expiring tick was refused");
            ensure!(
                failed == args.expiring,
                "{failed} leases ended, {} wanted",
                args.expiring
            );
        }
        print(&figure(
            "expiring",
            args.leases + args.expiring,
            args.expiring,
            ns,
            setup_ms,
        ))?;
    }
    Ok(())
}
