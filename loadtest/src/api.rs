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

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

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

/// A GraphQL client (also `loadtest e2e`'s): `url` is the `/graphql` endpoint.
pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
}

impl Client {
    /// Posts a GraphQL request; the data, or the first error as text.
    pub(crate) async fn gql(&self, key: &str, query: &str, variables: Value) -> Result<Value> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(key)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if let Some(error) = body["errors"].get(0) {
            bail!("HTTP {status}: {error}");
        }
        Ok(body["data"].clone())
    }
}

const DEPTH: &str = "query($m: String!) { depth(market: $m, levels: 10) { bids { price gpus orders } asks { price gpus orders } } }";
const MY_ORDERS: &str = "{ orders(first: 20) { edges { node { id status remaining price } } } }";
const PLACE: &str =
    "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { orderId status remaining } }";

pub fn run(args: &Args) -> Result<()> {
    let admin = std::fs::read_to_string(&args.api_key_file)
        .with_context(|| format!("reading {}", args.api_key_file.display()))?
        .trim()
        .to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args, admin))
}

async fn bench(args: &Args, admin: String) -> Result<()> {
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(args.clients as usize)
            .build()?,
        url: format!("{}/graphql", args.url.trim_end_matches('/')),
    });
    let market = args.market.clone();
    eprintln!("set-up: market {market}, {} trader keys", args.clients);
    if let Err(e) = client
        .gql(
            &admin,
            "mutation($m: String!) { createMarket(market: $m, tick: \"0.01\", feeBps: 100) }",
            json!({"m": market}),
        )
        .await
    {
        if !e.to_string().contains("MARKET_EXISTS") {
            return Err(e.context("creating the market"));
        }
    }
    let provider_account = args.first_account + u64::from(args.clients);
    let provider = new_key(&client, &admin, "PROVIDER", provider_account).await?;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    client
        .gql(
            &provider,
            PLACE,
            json!({"i": {"market": market, "clientOrderId": run_id.to_string(), "price": "999.00",
                "gpus": 8, "ask": {"node": "loadtest-node", "vendor": "nvidia", "vramGb": 80,
                "interconnect": "nvlink", "region": "eu-west",
                "availableUntil": "2099-01-01T00:00:00Z"}}}),
        )
        .await
        .context("placing the provider's ask")?;
    let mut traders = Vec::new();
    for i in 0..args.clients {
        let account = args.first_account + u64::from(i);
        let key = new_key(&client, &admin, "TRADER", account).await?;
        client
            .gql(
                &admin,
                "mutation($a: ID!) { creditDeposit(account: $a, amount: \"1000000000\") { amount } }",
                json!({"a": account.to_string()}),
            )
            .await
            .context("crediting a trader")?;
        traders.push(key);
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
        for key in &traders {
            let (client, key, market, counter) =
                (client.clone(), key.clone(), market.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while started.elapsed() < duration {
                    let t = Instant::now();
                    let result = match operation {
                        "depth" => client.gql(&key, DEPTH, json!({"m": market})).await,
                        "my_orders" => client.gql(&key, MY_ORDERS, json!({})).await,
                        _ => {
                            let id = counter.fetch_add(1, Ordering::Relaxed);
                            client
                                .gql(
                                    &key,
                                    PLACE,
                                    json!({"i": {"market": market, "clientOrderId": id.to_string(),
                                        "price": "1.00", "gpus": 1, "bid": {"hours": 1}}}),
                                )
                                .await
                        }
                    };
                    match result {
                        Ok(_) => latencies.push(t.elapsed()),
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

pub(crate) async fn new_key(
    client: &Client,
    admin: &str,
    role: &str,
    account: u64,
) -> Result<String> {
    let data = client
        .gql(
            admin,
            &format!(
                "mutation($a: ID!) {{ createApiKey(role: {role}, account: $a, label: \"loadtest\") {{ key }} }}"
            ),
            json!({"a": account.to_string()}),
        )
        .await
        .context("creating a key")?;
    data["createApiKey"]["key"]
        .as_str()
        .map(str::to_owned)
        .context("no key in the answer")
}
