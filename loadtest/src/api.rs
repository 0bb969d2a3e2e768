//! `loadtest api`: many concurrent GraphQL clients against a running `gpumarket api`.
//!
//! Set-up (untimed), with the admin key: a market of its own (`--market`, created if
//! missing), one trader key and deposit per client, and a provider whose ask rests far above
//! every bid, so the bids rest and every `placeOrder` is a full engine round trip without
//! fills. Then one phase per operation, each `--duration` seconds with `--clients`
//! concurrent clients over keep-alive connections:
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
use api_client::types::{AskInput, BidInput, PlaceOrderInput, Role, TimeInForce};
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

/// A GTC ask by `provider` for `gpus` on `node`, available until 2099; its order id.
pub(crate) async fn place_ask(
    provider: &AsyncClient,
    market: &str,
    node: &str,
    client_order_id: String,
    price: &str,
    gpus: u64,
) -> Result<u64, ClientError> {
    let ask = AskInput {
        node: node.to_owned(),
        vendor: "nvidia".to_owned(),
        vram_gb: U64(80),
        interconnect: "nvlink".to_owned(),
        region: "eu-west".to_owned(),
        available_until: "2099-01-01T00:00:00Z".parse().expect("a valid time"),
    };
    let placed = provider
        .run(&PlaceOrder::build(PlaceOrderVariables {
            input: PlaceOrderInput {
                market: market.to_owned(),
                client_order_id,
                price: price.to_owned(),
                gpus: U64(gpus),
                time_in_force: TimeInForce::Gtc,
                bid: None,
                ask: Some(ask),
            },
        }))
        .await?;
    Ok(placed.place_order.order_id.0)
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
    let market = args.market.clone();
    eprintln!("set-up: market {market}, {} trader keys", args.clients);
    create_market(&admin, &market).await?;
    let provider_account = args.first_account + u64::from(args.clients);
    let provider = admin.with_key(&new_key(&admin, Role::Provider, provider_account).await?);
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    place_ask(
        &provider,
        &market,
        "loadtest-node",
        run_id.to_string(),
        "999.00",
        8,
    )
    .await
    .context("placing the provider's ask")?;
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
        for trader in &traders {
            let (trader, market, counter) = (trader.clone(), market.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let depth = DepthQuery::build(DepthVariables {
                    market: market.clone(),
                    levels: U64(10),
                });
                let my_orders = OrdersQuery::build(OrdersVariables {
                    status: None,
                    first: U64(20),
                });
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while started.elapsed() < duration {
                    let t = Instant::now();
                    let answered = match operation {
                        "depth" => trader.run(&depth).await.map(drop),
                        "my_orders" => trader.run(&my_orders).await.map(drop),
                        _ => {
                            let id = counter.fetch_add(1, Ordering::Relaxed);
                            let place = PlaceOrder::build(bid(
                                &market,
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
