//! The marketplace API: GraphQL (async-graphql) on actix-web for bots, people and
//! dashboards.
//!
//! - Queries read the ledger's read models in Postgres (orders, trades, leases, journal,
//!   invoices, reputation) through `ledger::read`, and the engine client's replica engine
//!   (live depth, balances, and why a resting order has not matched).
//! - Mutations become engine commands through `engine_service::client` and return the
//!   engine's answer: accepted with fills, or the typed rejection.
//! - Subscriptions (`graphql-transport-ws`) follow the event log.
//!
//! Every error carries a code from `contract::ErrorCode`, with its HTTP status.

pub mod auth;
pub mod errors;
mod http;
pub mod reports;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contract::AccountId;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool};
use engine_service::client::EngineClient;

pub use errors::ApiError;
pub use http::serve;

/// Caps on what one request may ask.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body in bytes.
    pub max_body: usize,
    pub max_depth: usize,
    pub max_complexity: usize,
    /// Requests per second per API key (anonymous requests: per client address).
    pub rate_per_sec: u32,
    /// Requests a key may send at once above its rate.
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 64 << 10,
            max_depth: 12,
            max_complexity: 1_000,
            rate_per_sec: 2_000,
            burst: 4_000,
        }
    }
}

/// How the API serves, beside its pool and engine client.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub limits: Limits,
    /// Where deposits go on the settlement chain (shown by `depositInstructions`).
    pub escrow_address: Option<String>,
    /// The longest a mutation waits for the engine's answer (and a replay for its order to
    /// reach the read models).
    pub answer_timeout: Duration,
    /// A `node_modules` folder with `graphiql@4`, `react@18` and `react-dom@18`, served at
    /// `/graphiql/…` for GraphiQL; without one those files redirect to the unpkg CDN.
    pub graphiql_assets: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            limits: Limits::default(),
            escrow_address: None,
            answer_timeout: Duration::from_secs(5),
            graphiql_assets: None,
        }
    }
}

/// What every request handler shares.
pub struct AppState {
    pub pool: Pool<ConnectionManager<PgConnection>>,
    pub engine: EngineClient,
    pub keys: auth::KeyCache,
    pub config: ApiConfig,
    pub metrics: Metrics,
    /// Each accepted node report's samples, for the telemetry subscription.
    pub telemetry: tokio::sync::broadcast::Sender<
        Arc<(AccountId, Vec<schema::types::provider::TelemetrySample>)>,
    >,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl AppState {
    pub fn new(
        pool: Pool<ConnectionManager<PgConnection>>,
        engine: EngineClient,
        config: ApiConfig,
    ) -> AppState {
        AppState {
            pool,
            engine,
            keys: auth::KeyCache::default(),
            config,
            metrics: Metrics::default(),
            telemetry: tokio::sync::broadcast::channel(1_024).0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` with a pooled connection on the blocking threads: a `ledger::read` or
    /// `ledger::store` function, or anything that fails with an [`ApiError`].
    pub async fn db<T, E, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        E: Into<ApiError>,
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| {
                tracing::warn!(error = %e, "no database connection");
                ApiError::unavailable("the database is not reachable; retry")
            })?;
            f(&mut conn).map_err(Into::into)
        })
        .await
        .map_err(|e| ApiError::internal(format!("database task: {e}")))?
    }

    /// Takes one token from `who`'s bucket, or says when to retry.
    pub fn admit(&self, who: &str) -> Result<(), ApiError> {
        let rate = f64::from(self.config.limits.rate_per_sec);
        let burst = f64::from(self.config.limits.burst.max(1));
        let mut buckets = self.buckets.lock().expect("rate buckets lock");
        let now = Instant::now();
        let bucket = buckets.entry(who.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            Err(ApiError::new(contract::ErrorCode::RateLimited, format!(
                "more than {} requests/s (burst {}); retry in {} ms",
                self.config.limits.rate_per_sec,
                self.config.limits.burst,
                ((1.0 - bucket.tokens) / rate * 1000.0).ceil()
            )))
        }
    }
}

/// Latency buckets of the request histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// A Prometheus histogram kept with atomics.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; 13],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        use std::fmt::Write;
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// The API's own metrics (`/metrics`).
#[derive(Debug, Default)]
pub struct Metrics {
    pub queries: Histogram,
    pub mutations: Histogram,
    pub errors: AtomicU64,
    pub rate_limited: AtomicU64,
}
