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
pub mod checker;
pub mod errors;
mod http;
pub mod render;
pub mod reports;
pub mod reputation;
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
    /// Failed authentications an address or a key id may have per second, after
    /// `failed_auth_burst` at once: each costs an argon2 check.
    pub failed_auth_per_sec: f64,
    pub failed_auth_burst: u32,
    /// The longest a client may take to send a request's body, from its headers on.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 64 << 10,
            max_depth: 12,
            max_complexity: 1_000,
            rate_per_sec: 2_000,
            burst: 4_000,
            failed_auth_per_sec: 1.0,
            failed_auth_burst: 10,
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// How the API serves, beside its pool and engine client.
/// An account's blobs may add up to this by default: 100 GiB.
pub const DEFAULT_BLOB_QUOTA: u64 = 100 << 30;

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
    /// How often scores go from the reputation projection to the engine (`reputation`);
    /// `None` in every API of a shard but the one that also ticks its clock.
    pub reputation_every: Option<Duration>,
    /// Where blobs (job inputs, outputs, images) are kept; `None`: `/blobs` answers
    /// `UNAVAILABLE`.
    pub blobs: Option<blobstore::BlobStore>,
    /// The most bytes of blobs an account may hold unless its own quota says otherwise.
    pub blob_quota_bytes: u64,
    /// How often blobs past their account's retention are removed and, where storage has
    /// a price, the last hour's storage is charged; `None` in every API of a shard but the
    /// one that also ticks its clock.
    pub blob_expiry_every: Option<Duration>,
    /// What a GB (10^9 bytes) of blobs costs its holder per month (730 hours), charged
    /// hourly; `None`: storage is free.
    pub storage_price: Option<contract::Price>,
    /// How often the render loop drives the running render jobs ([`render`]); `None` in
    /// every API of a shard but the one that also ticks its clock.
    pub render_every: Option<Duration>,
    /// The market's checker ([`checker`]), run in the API that ticks the clock; `None`
    /// elsewhere, and where no account checks.
    pub checker: Option<checker::CheckerConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            limits: Limits::default(),
            escrow_address: None,
            answer_timeout: Duration::from_secs(5),
            graphiql_assets: None,
            reputation_every: None,
            blobs: None,
            blob_quota_bytes: DEFAULT_BLOB_QUOTA,
            blob_expiry_every: None,
            storage_price: None,
            render_every: None,
            checker: None,
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
    /// Requests per key (anonymous ones per address).
    pub requests: RateLimiter,
    /// Failed authentications per address and per key id.
    pub failed_auth: RateLimiter,
    /// Each accepted node report's samples, for the telemetry subscription.
    pub telemetry: tokio::sync::broadcast::Sender<
        Arc<(AccountId, Vec<schema::types::provider::TelemetrySample>)>,
    >,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
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
            requests: RateLimiter::new(f64::from(config.limits.rate_per_sec), config.limits.burst),
            failed_auth: RateLimiter::new(
                config.limits.failed_auth_per_sec,
                config.limits.failed_auth_burst,
            ),
            config,
            metrics: Metrics::default(),
            telemetry: tokio::sync::broadcast::channel(1_024).0,
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
}

/// Token buckets by caller: `rate` tokens a second up to `burst`. The request limiter
/// takes one per request; the failed-authentication limiter is checked before a key is
/// hashed and takes one per failure.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Callers remembered at most; past that, the full (idle) buckets are forgotten, which
/// costs nothing since a full bucket is what a new caller gets.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    pub fn new(rate_per_sec: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: rate_per_sec,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `who`'s tokens now, refilled since it was last seen.
    fn refill(&self, buckets: &mut HashMap<String, Bucket>, who: &str) -> f64 {
        let now = Instant::now();
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(who) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(who.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.rate)
            .min(self.burst);
        bucket.at = now;
        bucket.tokens
    }

    fn retry_after(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - tokens) / self.rate).max(0.001))
    }

    /// Takes a token from `who`'s bucket, or says when one will be there.
    pub fn take(&self, who: &str) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate buckets lock");
        let tokens = self.refill(&mut buckets, who);
        if tokens >= 1.0 {
            buckets.get_mut(who).expect("refilled").tokens -= 1.0;
            Ok(())
        } else {
            Err(self.retry_after(tokens))
        }
    }

    /// Whether `who` has a token, without taking it.
    pub fn check(&self, who: &str) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate buckets lock");
        let tokens = self.refill(&mut buckets, who);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.retry_after(tokens))
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
