//! `loadtest e2e`: bidding bots and simulated provider agents against a whole running market
//! (`gpumarket up`) for a fixed time, then the books are checked.
//!
//! Set-up (untimed), with the admin key: a market of its own (`--market`), `--providers`
//! provider keys and `--bots` trader keys with deposits. Each provider runs the real provider
//! agent (`provider_agent::Agent`) with its simulated GPU source, labelled simulated in every
//! report: it registers its node's key and sends a signed telemetry report every second,
//! which the API verifies, stores and turns into the node's heartbeat in the engine. Asks
//! stand on those reports: each agent offers its node's free GPUs (64, the most a report
//! carries) through its `[offer]`, as a provider's does, so the market can fill at most the
//! GPUs that exist. During the run every bot sends `placeOrder` IOC bids that cross the asks,
//! stops each lease it gets at once (so its GPU is free for the agent's next ask), and follows
//! its own orders on a `myOrderUpdates` subscription (websocket, graphql-transport-ws). Bids
//! that find no free GPU are answered unfilled and count in the order latency only.
//!
//! With `--rate`, the bots send on a fixed schedule (open loop) and latency runs from the
//! time an order was due, so a stalled server is charged for the orders it held up
//! (no coordinated omission); without it each bot sends its next order when the last is
//! answered (closed loop, the most the machine takes). Order-to-fill latency ends when the
//! engine's answer with its fills is held; the subscription latency when the `filled`
//! update arrives on the websocket. A subscription whose connection drops (the market
//! restarted) subscribes again and goes on counting; what the market sent while it was away
//! is not seen, and the report says how often that happened. A probe measures projection
//! lag as the time until every projector has applied the events the API had read when the
//! probe looked. Afterwards the providers end every lease (untimed), the projectors catch up,
//! and the books are verified: the journal sums to zero, every fill is a lease, every lease
//! has a usage line and an invoice, every report the agents sent is stored, and the
//! reconciliation report has no break.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use api_client::mutations::{
    ConfigureMarket, ConfigureMarketVariables, EndLease, EndLeaseVariables, PlaceOrder,
};
use api_client::queries::{LeasesQuery, LeasesVariables};
use api_client::subscriptions::MyOrderUpdates;
use api_client::types::{LeaseRole, MarketConfigInput, Role, TimeInForce};
use api_client::{
    AsyncClient, ClientError, ErrorCode, Id, MutationBuilder, QueryBuilder, SubscriptionBuilder,
    U64,
};
use contract::AccountId;
use diesel::{Connection, PgConnection};
use serde::Serialize;

use crate::api::{bid, create_market, fund, new_key};

/// What the agents' simulated GPUs report as their model: the run's market's class.
const SIMULATED_MODEL: &str = "H100-80GB (simulated)";
/// Each agent's GPUs: the most one signed report may carry.
const GPUS_PER_NODE: u32 = 64;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The market's base URL (what `gpumarket up` printed).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The admin key file (`DATA_DIR/admin.key` of `gpumarket up`).
    #[arg(long)]
    api_key_file: PathBuf,
    /// The market's database, for the checks after the run (`gpumarket up` prints it).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    #[arg(long, default_value_t = 48)]
    bots: u32,
    /// Orders per second from all bots together, on a fixed schedule; unset, each bot sends
    /// as soon as its last order is answered.
    #[arg(long)]
    rate: Option<u32>,
    /// Simulated provider agents (8 simulated GPUs each, a signed report every second).
    #[arg(long, default_value_t = 4)]
    providers: u32,
    #[arg(long, default_value = "LOADTEST-E2E")]
    market: String,
    /// Where the JSON report and the latency chart are written.
    #[arg(long, default_value = "target/loadtest-e2e")]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    bots: u32,
    /// The order rate asked for (`--rate`); absent for a closed-loop run.
    rate: Option<u32>,
    providers: u32,
    /// When the clock started (UTC), to line the chart up with the market's logs.
    started_at: String,
    /// Signed telemetry reports the provider agents sent and the API accepted.
    provider_reports: u64,
    duration_s: f64,
    orders: u64,
    orders_per_sec: f64,
    fills: u64,
    order_to_fill_p50_ms: f64,
    order_to_fill_p99_ms: f64,
    order_to_fill_p999_ms: f64,
    order_to_fill_max_ms: f64,
    /// Fills seen on the bots' `myOrderUpdates` subscriptions, across reconnects.
    subscription_fills: u64,
    /// Times a bot's subscription lost its connection and subscribed again.
    subscription_reconnects: u64,
    subscription_fill_p50_ms: f64,
    subscription_fill_p99_ms: f64,
    projection_lag_p50_ms: f64,
    projection_lag_p99_ms: f64,
    errors: u64,
    leases_ended_after: u64,
    drain_s: f64,
    checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    detail: String,
}

/// The lowest projector position and the events the API has read, from `/readyz` at
/// `readyz`.
async fn positions(http: &reqwest::Client, readyz: &str) -> Result<(u64, u64)> {
    let text = http.get(readyz).send().await?.text().await?;
    let mut read: Option<u64> = None;
    let mut behind = 0u64;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["events_read", n] => read = n.parse().ok(),
            ["projector", _, "behind", n] => behind = behind.max(n.parse().unwrap_or(0)),
            _ => {}
        }
    }
    let read = read.context("/readyz shows no events_read")?;
    Ok((read.saturating_sub(behind), read))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

pub fn run(args: &Args) -> Result<()> {
    let admin = std::fs::read_to_string(&args.api_key_file)
        .with_context(|| format!("reading {}", args.api_key_file.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(load(args, AsyncClient::new(&args.url, &admin)))
}

/// Sent times of a bot's orders, by order id.
type Sent = Arc<Mutex<std::collections::HashMap<u64, Instant>>>;

/// Follows a bot's `myOrderUpdates` until `running` ends: for each `filled` update, the time
/// since its order was sent, and how many times the connection dropped and the bot
/// subscribed again (a market restart).
fn follow(
    url: &str,
    key: &str,
    sent: Sent,
    running: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) -> Result<(Vec<f64>, u64)> {
    let client = api_client::Client::new(url, key).with_timeout(Duration::from_secs(10));
    let operation = MyOrderUpdates::build(());
    let mut subscription = client.subscribe(&operation)?;
    ready.send(()).ok();
    let mut latencies = Vec::new();
    let mut reconnects = 0;
    // After the run, updates still on their way are read for half a second more.
    let mut grace: Option<Instant> = None;
    loop {
        if !running.load(Ordering::Relaxed) {
            let end = *grace.get_or_insert_with(|| Instant::now() + Duration::from_millis(500));
            if Instant::now() > end {
                break;
            }
        }
        let update = match subscription.next(Duration::from_millis(200)) {
            Ok(Some(update)) => update.my_order_updates,
            Ok(None) => continue,
            Err(ClientError::Unreachable { .. }) => {
                // Until the market is back, each round tries once more.
                std::thread::sleep(Duration::from_millis(200));
                if let Ok(again) = client.subscribe(&operation) {
                    subscription = again;
                    reconnects += 1;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if update.change != "filled" {
            continue;
        }
        let order = update.order_id.0;
        // The update can overtake the mutation's answer, which records the send time.
        let deadline = Instant::now() + Duration::from_millis(100);
        loop {
            if let Some(at) = sent.lock().expect("sent").remove(&order) {
                latencies.push(at.elapsed().as_secs_f64() * 1e3);
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok((latencies, reconnects))
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn load(args: &Args, admin: AsyncClient) -> Result<()> {
    let http = reqwest::Client::new();
    let readyz = format!("{}/readyz", args.url.trim_end_matches('/'));
    let market = args.market.clone();
    create_market(&admin, &market).await?;
    // Its providers report simulated GPUs, which only a simulated market takes.
    admin
        .run(&ConfigureMarket::build(ConfigureMarketVariables {
            market: market.clone(),
            config: MarketConfigInput {
                simulated: Some(true),
                model_names: Some(vec![SIMULATED_MODEL.to_owned()]),
                ..MarketConfigInput::default()
            },
        }))
        .await
        .context("making the market simulated")?;
    // Accounts of this run only, so a second run on the same market checks its own books.
    let base = 7_000_000 + (nanos() / 1_000_000_000 % 100_000) as u64 * 1_000;
    eprintln!(
        "set-up: market {market}, {} provider and {} bot keys (accounts from {base})",
        args.providers, args.bots
    );
    let running = Arc::new(AtomicBool::new(true));
    let errors = Arc::new(AtomicU64::new(0));
    // Each provider agent reports from its own thread (the agent's client is blocking): node
    // key, outbox and report sequence in a fresh state directory per run.
    let agents_dir = args.out.join("providers");
    if agents_dir.exists() {
        std::fs::remove_dir_all(&agents_dir)?;
    }
    std::fs::create_dir_all(&agents_dir)?;
    let reports = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut providers = Vec::new();
    let mut agents = Vec::new();
    for i in 0..args.providers {
        let account = base + 900 + u64::from(i);
        let k = new_key(&admin, Role::Provider, account).await?;
        let node = format!("lt-node-{account}");
        let key_file = agents_dir.join(format!("provider-{account}.key"));
        // The agent refuses a key file others can read.
        provider_agent::durable::write_atomic(&key_file, k.as_bytes(), 0o600)?;
        let config = provider_agent::config::Config {
            api_url: args.url.clone(),
            api_key_file: key_file,
            node: node.clone(),
            class: market.clone(),
            region: "eu-west".to_owned(),
            source: "simulated".to_owned(),
            interval_secs: 1,
            state_dir: agents_dir.join(&node),
            outbox_capacity: 10_000,
            simulated: provider_agent::config::Simulated {
                name: "H100-80GB".to_owned(),
                count: GPUS_PER_NODE,
                vram_mb: 80 * 1024,
            },
            sandbox: Default::default(),
            offer: Some(provider_agent::config::Offer {
                price: "1.00".to_owned(),
                gpus: None,
                vram_gb: 80,
                interconnect: "nvlink".to_owned(),
                vendor: "nvidia".to_owned(),
                hours_ahead: 720,
                // Simulated GPUs run warm under the made-up load; never withdraw one for it.
                max_temperature_c: 1_000.0,
                max_ecc_errors: 0,
            }),
            wrong_frames: None,
        };
        let (running, reports, errors, ready) = (
            running.clone(),
            reports.clone(),
            errors.clone(),
            ready_tx.clone(),
        );
        agents.push(std::thread::spawn(move || -> Result<()> {
            let mut agent = provider_agent::Agent::open(config)?;
            agent.register()?;
            ready.send(()).ok();
            let mut last = false;
            while !last {
                last = !running.load(Ordering::Relaxed);
                let t = Instant::now();
                // A round reports, follows the node's leases and keeps its ask; the last
                // only sends what is still in the outbox.
                let flushed = if last {
                    agent.flush()?
                } else {
                    agent.step()?.flushed
                };
                reports.fetch_add(flushed.sent as u64, Ordering::Relaxed);
                errors.fetch_add(flushed.rejected as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
            Ok(())
        }));
        providers.push(admin.with_key(&k));
    }
    for _ in &providers {
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("a provider agent did not register")?;
    }
    let mut bots = Vec::new();
    for i in 0..args.bots {
        let account = base + u64::from(i);
        let k = new_key(&admin, Role::Trader, account).await?;
        fund(&admin, account).await?;
        bots.push((account, k));
    }

    let duration = Duration::from_secs(args.duration);
    // Every bot's subscription is in place before the clock starts.
    let sents: Vec<Sent> = bots.iter().map(|_| Sent::default()).collect();
    let mut followers = Vec::new();
    for ((_, k), sent) in bots.iter().zip(&sents) {
        let (url, k, sent, running, ready) = (
            args.url.clone(),
            k.clone(),
            sent.clone(),
            running.clone(),
            ready_tx.clone(),
        );
        followers.push(std::thread::spawn(move || {
            follow(&url, &k, sent, running, ready)
        }));
    }
    for _ in &bots {
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("a bot's subscription did not start")?;
    }
    // The server registers a subscription just after it reads the request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    let (orders, fills) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Open loop: each bot's orders are due every `bots / rate` seconds, the bots spread
    // evenly over that interval.
    let every = args
        .rate
        .map(|rate| Duration::from_secs_f64(f64::from(args.bots) / f64::from(rate.max(1))));
    let samples: Arc<Mutex<Vec<(f64, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let lags: Arc<Mutex<Vec<(f64, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, ((_, k), sent)) in bots.clone().into_iter().zip(sents).enumerate() {
        let (bot, market, running) = (admin.with_key(&k), market.clone(), running.clone());
        // This bot's first due time and its interval.
        let schedule = every.map(|e| (started + e.mul_f64(i as f64 / f64::from(args.bots)), e));
        let (orders, fills, errors, samples) = (
            orders.clone(),
            fills.clone(),
            errors.clone(),
            samples.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                n += 1;
                let t = match schedule {
                    Some((first, every)) => {
                        let due = first + every * (n - 1) as u32;
                        tokio::time::sleep_until(due.into()).await;
                        if !running.load(Ordering::Relaxed) {
                            break;
                        }
                        due
                    }
                    None => Instant::now(),
                };
                let place = PlaceOrder::build(bid(
                    &market,
                    format!("{}{n}", nanos() % 1_000_000_000),
                    format!("1.0{}", n % 6),
                    TimeInForce::Ioc,
                ));
                let answer = bot.run(&place).await;
                orders.fetch_add(1, Ordering::Relaxed);
                match answer {
                    Ok(placed) => {
                        let placed = placed.place_order;
                        sent.lock().expect("sent").insert(placed.order_id.0, t);
                        let filled = placed.fills.len() as u64;
                        fills.fetch_add(filled, Ordering::Relaxed);
                        // The GPU goes back to its node at once, for the agent's next ask.
                        for fill in &placed.fills {
                            let stop = EndLease::build(EndLeaseVariables {
                                lease_id: Id::new(fill.lease_id.0.to_string()),
                            });
                            let bot = bot.clone();
                            tokio::spawn(async move { bot.run(&stop).await });
                        }
                        if filled > 0 {
                            mine.push((
                                started.elapsed().as_secs_f64(),
                                t.elapsed().as_secs_f64() * 1e3,
                            ));
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            samples.lock().expect("samples").extend(mine);
        }));
    }
    {
        let (http, readyz, running, lags) =
            (http.clone(), readyz.clone(), running.clone(), lags.clone());
        tasks.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let Ok((_, target)) = positions(&http, &readyz).await else {
                    continue;
                };
                let t = Instant::now();
                while let Ok((reached, _)) = positions(&http, &readyz).await {
                    if reached >= target {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                lags.lock().expect("lags").push((
                    started.elapsed().as_secs_f64(),
                    t.elapsed().as_secs_f64() * 1e3,
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // Progress.
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let done = (started.elapsed().as_secs_f64() / duration.as_secs_f64()).min(1.0);
        let bar: String = (0..30)
            .map(|i| if (i as f64) < done * 30.0 { '#' } else { '.' })
            .collect();
        eprint!(
            "\r[{bar}] {:>3.0} s  orders {:>8}  fills {:>8}  errors {}",
            started.elapsed().as_secs_f64(),
            orders.load(Ordering::Relaxed),
            fills.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed)
        );
    }
    running.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in tasks {
        t.await?;
    }
    let (mut subscribed, mut reconnects) = (Vec::new(), 0);
    for f in followers {
        match f.join().expect("a subscription thread") {
            Ok((l, r)) => {
                subscribed.extend(l);
                reconnects += r;
            }
            Err(e) => {
                eprintln!("\na subscription failed: {e}");
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    subscribed.sort_by(f64::total_cmp);
    for a in agents {
        if let Err(e) = a.join().expect("a provider agent thread") {
            eprintln!("\na provider agent failed: {e:#}");
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    eprintln!();

    // Untimed: the providers end every lease, then the projectors catch up.
    eprintln!("ending every lease of the run and waiting for the projections");
    let drain = Instant::now();
    let mut ended = 0u64;
    let created = LeasesQuery::build(LeasesVariables {
        role: LeaseRole::Provider,
        status: "created".to_owned(),
        first: U64(500),
    });
    for provider in &providers {
        loop {
            let page = provider.run(&created).await?.leases.nodes;
            if page.is_empty() {
                break;
            }
            let mut ends = Vec::new();
            for chunk in page.chunks(32) {
                for lease in chunk {
                    let provider = provider.clone();
                    let end = EndLease::build(EndLeaseVariables {
                        lease_id: Id::new(lease.id.0.to_string()),
                    });
                    ends.push(tokio::spawn(async move {
                        loop {
                            match provider.run(&end).await {
                                // The drain goes as fast as the key's rate limit allows.
                                Err(ClientError::Unreachable {
                                    code: Some(ErrorCode::RateLimited),
                                    ..
                                }) => {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                                other => return other,
                            }
                        }
                    }));
                }
                for e in ends.drain(..) {
                    e.await??;
                    ended += 1;
                }
            }
            // The lease list is a projection: wait until it shows the ends.
            let (_, target) = positions(&http, &readyz).await?;
            while positions(&http, &readyz).await?.0 < target {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let (_, target) = positions(&http, &readyz).await?;
    while positions(&http, &readyz).await?.0 < target {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let drained = drain.elapsed();
    let accounts: Vec<AccountId> = bots.iter().map(|(a, _)| AccountId(*a)).collect();
    let provider_reports = reports.load(Ordering::Relaxed);
    let checks = verify(
        &args.database_url,
        &market,
        &accounts,
        (base + 900, args.providers, provider_reports),
    )?;
    let mut latencies: Vec<f64> = samples
        .lock()
        .expect("samples")
        .iter()
        .map(|s| s.1)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mut lag: Vec<f64> = lags.lock().expect("lags").iter().map(|s| s.1).collect();
    lag.sort_by(f64::total_cmp);
    let report = Report {
        bots: args.bots,
        rate: args.rate,
        providers: args.providers,
        started_at,
        provider_reports,
        duration_s: elapsed,
        orders: orders.load(Ordering::Relaxed),
        orders_per_sec: (orders.load(Ordering::Relaxed) as f64 / elapsed).round(),
        fills: fills.load(Ordering::Relaxed),
        order_to_fill_p50_ms: quantile(&latencies, 0.50),
        order_to_fill_p99_ms: quantile(&latencies, 0.99),
        order_to_fill_p999_ms: quantile(&latencies, 0.999),
        order_to_fill_max_ms: latencies.last().copied().unwrap_or(0.0),
        subscription_fills: subscribed.len() as u64,
        subscription_reconnects: reconnects,
        subscription_fill_p50_ms: quantile(&subscribed, 0.50),
        subscription_fill_p99_ms: quantile(&subscribed, 0.99),
        projection_lag_p50_ms: quantile(&lag, 0.50),
        projection_lag_p99_ms: quantile(&lag, 0.99),
        errors: errors.load(Ordering::Relaxed),
        leases_ended_after: ended,
        drain_s: drained.as_secs_f64(),
        checks,
    };
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    crate::chart::latency_png(
        &args.out.join("latency.png"),
        &format!(
            "loadtest e2e: {} bots, {:.0} orders/s ({})",
            args.bots,
            report.orders_per_sec,
            args.rate
                .map_or("closed loop".to_owned(), |r| format!("open loop at {r}/s"))
        ),
        &samples.lock().expect("samples"),
        &lags.lock().expect("lags"),
        elapsed,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    eprintln!(
        "report: {}  chart: {}",
        args.out.join("report.json").display(),
        args.out.join("latency.png").display()
    );
    if report.checks.iter().any(|c| !c.ok) {
        bail!("the books do not check out: see the report");
    }
    Ok(())
}

/// `providers`: the first provider account, how many, and the reports they sent.
fn verify(
    database_url: &str,
    market: &str,
    bots: &[AccountId],
    providers: (u64, u32, u64),
) -> Result<Vec<Check>> {
    let mut conn = PgConnection::establish(database_url)?;
    let (first, n, sent) = providers;
    let books = ledger::read::books(
        &mut conn,
        &market.parse()?,
        bots,
        AccountId(first)..AccountId(first + u64::from(n)),
    )?;
    let journal_micros = contract::Amount::from_decimal(books.journal_sum).map_or_else(
        |_| books.journal_sum.to_string(),
        |a| a.micros().to_string(),
    );
    let mut checks = vec![Check {
        check: "the journal sums to zero (micro-units)",
        ok: books.journal_sum.is_zero(),
        detail: format!("{journal_micros} (want 0)"),
    }];
    for (check, got, want) in [
        ("every fill has a lease", books.fills_without_lease, 0),
        (
            "every lease has a usage line",
            books.leases_without_usage,
            0,
        ),
        (
            "every buyer with usage has an invoice",
            books.buyers_without_invoice,
            0,
        ),
        (
            "every report the provider agents sent is stored",
            books.provider_reports,
            sent,
        ),
    ] {
        checks.push(Check {
            check,
            ok: got == want,
            detail: format!("{got} (want {want})"),
        });
    }
    let now = chrono::Utc::now();
    let period = ledger::export::Period::new(
        now - chrono::Duration::days(1),
        now + chrono::Duration::days(1),
    )?;
    let report =
        ledger::export::reconciliation(&mut conn, period, ledger::export::Granularity::Day, None)?;
    checks.push(Check {
        check: "the reconciliation report has no break",
        ok: report.breaks.is_empty(),
        detail: report
            .breaks
            .iter()
            .map(|b| format!("{}: {}", b.check, b.detail))
            .collect::<Vec<_>>()
            .join("; "),
    });
    Ok(checks)
}
