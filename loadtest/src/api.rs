//! `loadtest api`: many concurrent GraphQL clients against a running `gpumarket api`.
//!
//! Set-up (untimed), with the admin key: markets of its own (`--market`, or with
//! `--markets N` the N markets `--market`-1 … -N, created if missing), one trader key and
//! deposit per client. No ask is offered (one needs a node's signed report), so the bids
//! rest and every `placeOrder` is a full engine round trip without fills. Then one
//! phase per operation, each `--duration` seconds with `--clients` concurrent clients over
//! keep-alive connections, each client taking the markets in turn:
//!
//! - `depth`: `depth(market, levels: 10)`, served from the API's replica engine;
//! - `my_orders`: `orders(first: 20)` of the client's own account, from Postgres;
//! - `place_order`: `placeOrder` of a 1-GPU GTC bid, each with a new client order id.
//!
//! A request counts when it answered with HTTP 200 and no GraphQL error; anything else is
//! an error and is counted apart (rate limits included: raise `--rate` on the server).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use api_client::mutations::{
    CreateApiKey, CreateApiKeyVariables, CreateMarket, CreateMarketVariables, CreditDeposit,
    CreditDepositVariables, PlaceOrder, PlaceOrderVariables,
};
use api_client::queries::{DepthQuery, DepthVariables, OrdersQuery, OrdersVariables};
use api_client::types::{BidInput, PlaceOrderInput, Role, TimeInForce};
use api_client::{AsyncClient, ClientError, ErrorCode, Id, MutationBuilder, QueryBuilder, U64};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A file holding an admin API key (e.g. from `gpumarket keys create --role admin`).
    #[arg(long)]
    api_key_file: PathBuf,
    /// Concurrent clients per phase.
    #[arg(long, default_value_t = 64)]
    clients: u32,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// The market the benchmark trades in (created when missing).
    #[arg(long, default_value = "LOADTEST-GPU")]
    market: String,
    /// How many markets: with more than one, `--market` names them with a suffix -1 … -N.
    #[arg(long, default_value_t = 1)]
    markets: u32,
    /// The first trader account; client i trades as this + i.
    #[arg(long, default_value_t = 5_000_000)]
    first_account: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    operation: &'static str,
    clients: u32,
    markets: u32,
    requests: u64,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    errors: u64,
    method: &'static str,
}

pub fn run(args: &Args) -> Result<()> {
    let admin = std::fs::read_to_string(&args.api_key_file)
        .with_context(|| format!("reading {}", args.api_key_file.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args, AsyncClient::new(&args.url, &admin)))
}

/// Opens `market` (admin) unless it exists already.
pub(crate) async fn create_market(admin: &AsyncClient, market: &str) -> Result<()> {
    let created = admin
        .run(&CreateMarket::build(CreateMarketVariables {
            market: market.to_owned(),
            tick: "0.01".to_owned(),
            fee_bps: U64(100),
        }))
        .await;
    match created {
        Ok(_)
        | Err(ClientError::Refused {
            code: ErrorCode::MarketExists,
            ..
        }) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("creating the market")),
    }
}

/// Credits `account` generously (admin), so a bot never runs out.
pub(crate) async fn fund(admin: &AsyncClient, account: u64) -> Result<()> {
    admin
        .run(&CreditDeposit::build(CreditDepositVariables {
            account: Id::new(account.to_string()),
            amount: "1000000000".to_owned(),
            idempotency_key: None,
        }))
        .await
        .context("crediting a trader")?;
    Ok(())
}

/// A one-GPU bid for one hour.
pub(crate) fn bid(
    market: &str,
    client_order_id: String,
    price: String,
    time_in_force: TimeInForce,
) -> PlaceOrderVariables {
    PlaceOrderVariables {
        input: PlaceOrderInput {
            market: market.to_owned(),
            client_order_id,
            price,
            gpus: U64(1),
            time_in_force,
            bid: Some(BidInput::new(U64(1))),
            ask: None,
        },
    }
}

async fn bench(args: &Args, admin: AsyncClient) -> Result<()> {
    let markets: Arc<Vec<String>> = Arc::new(match args.markets {
        0 | 1 => vec![args.market.clone()],
        n => (1..=n).map(|i| format!("{}-{i}", args.market)).collect(),
    });
    eprintln!(
        "set-up: {} market(s) from {}, {} trader keys",
        markets.len(),
        markets[0],
        args.clients
    );
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for market in markets.iter() {
        create_market(&admin, market).await?;
    }
    let mut traders = Vec::new();
    for i in 0..args.clients {
        let account = args.first_account + u64::from(i);
        traders.push(admin.with_key(&new_key(&admin, Role::Trader, account).await?));
        fund(&admin, account).await?;
    }
    let duration = Duration::from_secs(args.duration);
    let counter = Arc::new(AtomicU64::new(run_id * 1_000_000_000));
    for operation in ["depth", "my_orders", "place_order"] {
        eprintln!(
            "{operation}: {} clients for {} s",
            args.clients, args.duration
        );
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (client, trader) in traders.iter().enumerate() {
            let (trader, markets, counter) = (trader.clone(), markets.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let depths: Vec<_> = markets
                    .iter()
                    .map(|market| {
                        DepthQuery::build(DepthVariables {
                            market: market.clone(),
                            levels: U64(10),
                        })
                    })
                    .collect();
                let mut turn = client;
                let my_orders = OrdersQuery::build(OrdersVariables {
                    status: None,
                    first: U64(20),
                });
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while started.elapsed() < duration {
                    turn = (turn + 1) % markets.len();
                    let t = Instant::now();
                    let answered = match operation {
                        "depth" => trader.run(&depths[turn]).await.map(drop),
                        "my_orders" => trader.run(&my_orders).await.map(drop),
                        _ => {
                            let id = counter.fetch_add(1, Ordering::Relaxed);
                            let place = PlaceOrder::build(bid(
                                &markets[turn],
                                id.to_string(),
                                "1.00".to_owned(),
                                TimeInForce::Gtc,
                            ));
                            trader.run(&place).await.map(drop)
                        }
                    };
                    match answered {
                        Ok(()) => latencies.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            }));
        }
        let mut latencies = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let (l, e) = task.await?;
            latencies.extend(l);
            errors += e;
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let quantile = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let report = Report {
            operation,
            clients: args.clients,
            markets: markets.len() as u32,
            requests: latencies.len() as u64,
            requests_per_sec: (latencies.len() as f64 / elapsed).round(),
            p50_ms: quantile(0.50),
            p99_ms: quantile(0.99),
            p999_ms: quantile(0.999),
            max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            errors,
            method: "concurrent keep-alive GraphQL clients over HTTP/1.1 for a fixed time; latency from send to parsed answer; successful answers only",
        };
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "{:<12} {:>9} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                report.operation,
                report.requests_per_sec,
                report.p50_ms,
                report.p99_ms,
                report.errors
            );
        }
    }
    Ok(())
}

/// A new key for `account` (admin).
pub(crate) async fn new_key(admin: &AsyncClient, role: Role, account: u64) -> Result<String> {
    let created = admin
        .run(&CreateApiKey::build(CreateApiKeyVariables {
            role,
            account: Some(Id::new(account.to_string())),
            label: "loadtest".to_owned(),
        }))
        .await
        .context("creating a key")?;
    Ok(created.create_api_key.key)
}
