//! `gpumarket api`: the GraphQL API for one engine shard. This module shares its name with
//! the `api` crate it serves, hence the `::api` paths.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use diesel::{Connection, PgConnection};
use engine_service::client::{ClientConfig, EngineClient};
use engine_service::Topics;
use eventlog::LogConfig;
use tracing::info;

use crate::common::ShardArgs;

/// Serve the GraphQL API (GraphiQL at /graphql, /healthz, /readyz, /metrics) for one
/// engine shard: commands go to the log, reads come from the ledger database and a
/// replica engine. Stops cleanly on SIGTERM or Ctrl-C.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    place: ShardArgs,
    /// The ledger database, e.g. `postgres://user@host:5432/gpumarket`.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Where to listen.
    #[arg(long, env = "GPUMARKET_HTTP", default_value = "127.0.0.1:8080")]
    http: String,
    /// HTTP worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Postgres connections the API may hold.
    #[arg(long, default_value_t = 8)]
    pool: u32,
    /// Milliseconds a mutation waits for the engine's answer.
    #[arg(long, default_value_t = 5_000)]
    answer_timeout_ms: u64,
    /// Requests per second per API key.
    #[arg(long, env = "GPUMARKET_RATE", default_value_t = 2_000)]
    rate: u32,
    /// Requests a key may send at once above its rate.
    #[arg(long, default_value_t = 4_000)]
    burst: u32,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 65_536)]
    max_body: usize,
    /// The settlement chain's escrow address shown as deposit instructions.
    #[arg(long, env = "GPUMARKET_ESCROW_ADDRESS")]
    escrow_address: Option<String>,
    /// A `node_modules` folder holding graphiql@4, react@18 and react-dom@18, so GraphiQL
    /// works without reaching the unpkg CDN.
    #[arg(long, env = "GPUMARKET_GRAPHIQL_ASSETS")]
    graphiql_assets: Option<std::path::PathBuf>,
    /// Milliseconds without an appended command after which this API appends a clock tick,
    /// so deadlines happen without traffic. Exactly one API of a shard ticks: give every
    /// other replica 0.
    #[arg(long, default_value_t = 1_000)]
    tick_every_ms: u64,
    /// Milliseconds between sending the reputation projection's scores to the engine (each
    /// score the engine does not hold yet). The API that ticks publishes too: give every
    /// other replica 0.
    #[arg(long, default_value_t = 10_000)]
    reputation_every_ms: u64,
    /// Where blobs are kept: a directory every replica shares, or `s3://bucket/prefix` (a
    /// build with the `s3` feature; credentials and endpoint from the `AWS_*` variables).
    /// Without it, `/blobs` answers UNAVAILABLE.
    #[arg(long, env = "GPUMARKET_BLOB_STORE")]
    blob_store: Option<String>,
    /// The most bytes of blobs an account may hold unless its own quota says otherwise.
    #[arg(long, default_value_t = ::api::DEFAULT_BLOB_QUOTA)]
    blob_quota_bytes: u64,
    /// Seconds between removals of blobs past their account's retention (no account has one
    /// unless an admin sets it). The API that ticks removes: give every other replica 0.
    #[arg(long, default_value_t = 600)]
    blob_expiry_every_secs: u64,
    /// What a GB (10^9 bytes) of blobs costs its holder per month (730 hours), charged
    /// hourly by the API that ticks and shown as its own line on invoices. Default: free.
    #[arg(long, value_parser = parse_price)]
    storage_price_per_gb_month: Option<contract::Price>,
    /// Milliseconds between rounds of the render loop (render jobs: buying their leases,
    /// checking their frames). The API that ticks drives them: give every other replica 0.
    #[arg(long, default_value_t = 1_000)]
    render_every_ms: u64,
    /// The account this API checks nodes as, in the markets an admin appointed it to
    /// (`appointChecker`); it needs Blender here to know its answers. Only the API that
    /// ticks checks.
    #[arg(long)]
    checker_account: Option<u64>,
    /// Seconds after a node passed its check before the checker checks it again.
    #[arg(long, default_value_t = 86_400)]
    checker_recheck_secs: u64,
    /// Seconds after a node failed its check before the checker tries it again.
    #[arg(long, default_value_t = 600)]
    checker_retry_failed_secs: u64,
    /// The most a check pays per GPU-hour; dearer nodes are not checked (nor sold).
    #[arg(long, value_parser = parse_price, default_value = "20")]
    checker_max_price: contract::Price,
}

/// A price as the API takes one: a decimal with at most six places, never negative.
pub fn parse_price(s: &str) -> Result<contract::Price, String> {
    contract::Price::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        place,
        database_url,
        http,
        workers,
        pool,
        answer_timeout_ms,
        rate,
        burst,
        max_body,
        escrow_address,
        graphiql_assets,
        tick_every_ms,
        reputation_every_ms,
        blob_store,
        blob_quota_bytes,
        blob_expiry_every_secs,
        storage_price_per_gb_month,
        render_every_ms,
        checker_account,
        checker_recheck_secs,
        checker_retry_failed_secs,
        checker_max_price,
    } = args;
    let place = place.checked()?;
    let (log, shard, shards) = (place.log, place.shard, place.shards);
    let mut conn =
        PgConnection::establish(&database_url).context("connecting to the ledger database")?;
    ledger::migrate(&mut conn)?;
    drop(conn);
    let answer_timeout = Duration::from_millis(answer_timeout_ms);
    let engine = EngineClient::start(ClientConfig {
        log_url: log.clone(),
        log: LogConfig::default(),
        topics: Topics::with_prefix(&place.topic_prefix),
        shard,
        shards,
        answer_timeout,
        tick_every: Some(Duration::from_millis(tick_every_ms)),
    })
    .context("starting the engine client")?;
    let pool = diesel::r2d2::Pool::builder()
        .max_size(pool)
        .build(diesel::r2d2::ConnectionManager::new(database_url))
        .context("opening the database pool")?;
    let state = Arc::new(::api::AppState::new(
        pool,
        engine,
        ::api::ApiConfig {
            limits: ::api::Limits {
                max_body,
                rate_per_sec: rate,
                burst,
                ..::api::Limits::default()
            },
            escrow_address,
            answer_timeout,
            graphiql_assets,
            reputation_every: (reputation_every_ms > 0)
                .then(|| Duration::from_millis(reputation_every_ms)),
            blobs: blob_store
                .map(|at| blobstore::BlobStore::open(&at))
                .transpose()
                .context("opening the blob store")?,
            blob_quota_bytes,
            blob_expiry_every: (blob_expiry_every_secs > 0)
                .then(|| Duration::from_secs(blob_expiry_every_secs)),
            // An account's storage is charged once, by shard 0's engine (its balance there).
            storage_price: storage_price_per_gb_month.filter(|_| shard == 0),
            render_every: (render_every_ms > 0).then(|| Duration::from_millis(render_every_ms)),
            // One loop per shard: the API that ticks.
            checker: checker_account.filter(|_| tick_every_ms > 0).map(|a| {
                ::api::checker::CheckerConfig {
                    recheck_after: Duration::from_secs(checker_recheck_secs),
                    retry_failed_after: Duration::from_secs(checker_retry_failed_secs),
                    max_price: checker_max_price,
                    ..::api::checker::CheckerConfig::new(contract::AccountId(a))
                }
            }),
        },
    ));
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    actix_web::rt::System::new().block_on(async move {
        let (server, addr) = ::api::serve(state.clone(), &http, workers)?;
        info!(%addr, log = %log, "API up: GraphiQL at http://{addr}/graphql");
        let handle = server.handle();
        let stopping = tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            info!("stopping: finishing requests in flight");
            handle.stop(true).await;
            std::io::Result::Ok(())
        });
        server.await?;
        stopping.abort();
        state.engine.shutdown();
        info!("API stopped");
        anyhow::Ok(())
    })
}
