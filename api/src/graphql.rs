//! The GraphQL schema: queries over the ledger's read models (Postgres) and the gateway's
//! replica engine (live depth, explanations, balances), mutations that go through the engine,
//! and subscriptions fed by the event log.

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{
    ComplexObject, Context, Enum, InputObject, Object, SimpleObject, Subscription, ID,
};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use contract::codec::{EventBody, EventRecord};
use contract::{
    AccountId, Amount, AskSpec, BidSpec, ChainAddress, ClientOrderId, Command, Event,
    FailureReason, FeeRate, Gpus, Hours, Interconnect, LeaseEndReason, LeaseId, MarketId, NewOrder,
    NodeId, OrderId, OrderTerms, Price, Region, Reputation, SettlementId, SettlementPayout,
    TimeInForce as EngineTif, Timestamp, TxHash, Vendor,
};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Date, Double, Integer, Nullable, Numeric, Text, Timestamptz,
};
use futures_util::Stream;
use rust_decimal::Decimal;

use crate::auth::{Principal, Role};
use crate::errors::ApiError;
use crate::AppState;

pub type MarketSchema = async_graphql::Schema<Query, Mutation, Subscription>;

/// The most rows one page of a list returns.
const MAX_PAGE: i64 = 500;
const DEFAULT_PAGE: i64 = 50;

fn state<'a>(ctx: &Context<'a>) -> &'a Arc<AppState> {
    ctx.data_unchecked::<Arc<AppState>>()
}

/// The caller, or `UNAUTHENTICATED`.
fn principal(ctx: &Context<'_>) -> Result<Principal, ApiError> {
    ctx.data_opt::<Principal>().copied().ok_or_else(|| {
        ApiError::unauthenticated("this needs an API key (Authorization: Bearer gpm_…)")
    })
}

fn page_size(first: Option<i32>) -> Result<i64, ApiError> {
    match first {
        None => Ok(DEFAULT_PAGE),
        Some(n) if n >= 1 && i64::from(n) <= MAX_PAGE => Ok(i64::from(n)),
        Some(n) => Err(ApiError::validation(format!(
            "first must be between 1 and {MAX_PAGE} (got {n})"
        ))),
    }
}

/// Cursors are the row's key in the log: `partition:id`.
fn parse_cursor(after: Option<&str>) -> Result<(i32, i64), ApiError> {
    let Some(after) = after else {
        return Ok((-1, -1));
    };
    after
        .split_once(':')
        .and_then(|(p, id)| Some((p.parse().ok()?, id.parse().ok()?)))
        .ok_or_else(|| ApiError::validation(format!("malformed cursor {after:?}")))
}

fn connection<T: async_graphql::OutputType>(
    mut rows: Vec<T>,
    limit: i64,
    had_cursor: bool,
    key: impl Fn(&T) -> (i32, i64),
) -> Connection<String, T, EmptyFields, EmptyFields> {
    let has_next = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let mut connection = Connection::new(had_cursor, has_next);
    connection.edges.extend(rows.into_iter().map(|row| {
        let (partition, id) = key(&row);
        Edge::new(format!("{partition}:{id}"), row)
    }));
    connection
}

/// A page of an account's monthly rows, newest first: `sql` takes the account ($1), the
/// month the page continues below ($2) and the row limit ($3).
async fn monthly<T>(
    ctx: &Context<'_>,
    sql: &'static str,
    account: Option<&ID>,
    first: Option<i32>,
    after: Option<&str>,
    period: fn(&T) -> NaiveDate,
) -> Result<Connection<String, T, EmptyFields, EmptyFields>, ApiError>
where
    T: async_graphql::OutputType + QueryableByName<diesel::pg::Pg> + Send + 'static,
{
    let account = account_to_read(ctx, account)?;
    let limit = page_size(first)?;
    let before = month_cursor(after)?;
    let rows: Vec<T> = state(ctx)
        .db(move |conn| {
            Ok(diesel::sql_query(sql)
                .bind::<BigInt, _>(account)
                .bind::<Date, _>(before)
                .bind::<BigInt, _>(limit + 1)
                .load(conn)?)
        })
        .await?;
    Ok(connection(rows, limit, after.is_some(), |row| {
        (0, days(period(row)))
    }))
}

/// A month's key in a cursor: days since 1970-01-01.
fn days(period: NaiveDate) -> i64 {
    period
        .signed_duration_since(NaiveDate::default())
        .num_days()
}

/// Newest-first lists of months continue below the cursor's month.
fn month_cursor(after: Option<&str>) -> Result<NaiveDate, ApiError> {
    let Some(after) = after else {
        return Ok(NaiveDate::from_ymd_opt(9999, 12, 31).expect("a date"));
    };
    let (_, days) = parse_cursor(Some(after))?;
    u64::try_from(days)
        .ok()
        .and_then(|d| NaiveDate::default().checked_add_days(chrono::Days::new(d)))
        .ok_or_else(|| ApiError::validation(format!("malformed cursor {after:?}")))
}

fn account_param(account: AccountId) -> Result<i64, ApiError> {
    i64::try_from(account.0).map_err(|_| ApiError::validation("account id out of range"))
}

fn parse_account(id: Option<&ID>) -> Result<Option<AccountId>, ApiError> {
    id.map(|id| AccountId::parse(id).map_err(|e| ApiError::validation(format!("account: {e}"))))
        .transpose()
}

/// The account a query reads, as a database id: the caller's own, or the one finance and
/// admin name.
fn account_to_read(ctx: &Context<'_>, account: Option<&ID>) -> Result<i64, ApiError> {
    account_param(principal(ctx)?.account_to_read(parse_account(account)?)?)
}

fn parse_market(market: &str) -> Result<MarketId, ApiError> {
    MarketId::parse(market).map_err(|e| ApiError::validation(format!("market: {e}")))
}

fn time_range(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    // Open ends as dates Postgres can hold (chrono's extremes are outside its range).
    let from = from.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let to = to.unwrap_or_else(|| Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).unwrap());
    if from >= to {
        return Err(ApiError::validation("`from` must be before `to`"));
    }
    Ok((from, to))
}

/// Money and prices at the ledger's six places, as the read models show them, so a value
/// reads the same whichever source answered.
fn six(value: Decimal) -> Decimal {
    let mut value = value;
    value.rescale(6);
    value
}

fn to_time(ts: Timestamp) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ts.0).single().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Output types.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Side {
    Bid,
    Ask,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum TimeInForce {
    /// Good till cancelled.
    Gtc,
    /// Good till `expiresAt`.
    Gtt,
    /// Immediate or cancel.
    Ioc,
    /// Fill or kill.
    Fok,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum OrderStatus {
    Open,
    Filled,
    Cancelled,
}

impl OrderStatus {
    fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Open => "open",
            OrderStatus::Filled => "filled",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Market {
    pub id: String,
    pub tick: Decimal,
    /// Basis points of each lease charge, paid by the provider.
    pub fee_bps: i32,
    pub created_at: DateTime<Utc>,
}

#[ComplexObject]
impl Market {
    /// The live book (from the engine's replica).
    async fn depth(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10)] levels: i32,
    ) -> async_graphql::Result<Depth> {
        Ok(depth(state(ctx), &self.id, levels)?)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct DepthLevel {
    pub price: Decimal,
    pub gpus: u64,
    pub orders: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct Depth {
    pub market: String,
    /// Best (highest) first.
    pub bids: Vec<DepthLevel>,
    /// Best (lowest) first.
    pub asks: Vec<DepthLevel>,
    /// Event records the replica had read when this was taken.
    pub as_of_event: u64,
}

fn depth(state: &AppState, market: &str, levels: i32) -> Result<Depth, ApiError> {
    if !(1..=1_000).contains(&levels) {
        return Err(ApiError::validation(format!(
            "levels must be between 1 and 1000 (got {levels})"
        )));
    }
    let id = parse_market(market)?;
    let as_of_event = state.gateway.events_read();
    let engine = state.gateway.replica();
    let depth = engine
        .depth(id, levels as usize)
        .ok_or_else(|| ApiError::not_found(format!("unknown market {market}")))?;
    let side = |levels: Vec<matching_engine::DepthLevel>| {
        levels
            .into_iter()
            .map(|l| DepthLevel {
                price: six(l.price.to_decimal()),
                gpus: l.gpus,
                orders: l.orders,
            })
            .collect()
    };
    Ok(Depth {
        market: market.to_owned(),
        bids: side(depth.bids),
        asks: side(depth.asks),
        as_of_event,
    })
}

#[derive(Debug, Clone, QueryableByName, SimpleObject)]
pub struct Trade {
    #[diesel(sql_type = Integer)]
    #[graphql(skip)]
    pub partition: i32,
    #[diesel(sql_type = BigInt)]
    pub lease_id: i64,
    #[diesel(sql_type = Text)]
    pub market: String,
    #[diesel(sql_type = Numeric)]
    pub price: Decimal,
    #[diesel(sql_type = Integer)]
    pub gpus: i32,
    #[diesel(sql_type = Integer)]
    pub hours: i32,
    /// Which side took liquidity (`bid` or `ask`).
    #[diesel(sql_type = Text)]
    pub taker: String,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, QueryableByName, SimpleObject)]
#[graphql(complex)]
pub struct Order {
    #[diesel(sql_type = Integer)]
    #[graphql(skip)]
    pub partition: i32,
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub account: i64,
    #[diesel(sql_type = Text)]
    pub client_order_id: String,
    #[diesel(sql_type = Text)]
    pub market: String,
    #[diesel(sql_type = Text)]
    pub side: String,
    #[diesel(sql_type = Numeric)]
    pub price: Decimal,
    #[diesel(sql_type = Integer)]
    pub gpus: i32,
    #[diesel(sql_type = Integer)]
    pub remaining: i32,
    #[diesel(sql_type = Text)]
    pub time_in_force: String,
    /// A bid's lease length in hours.
    #[diesel(sql_type = Nullable<Integer>)]
    pub hours: Option<i32>,
    /// An ask's node and region.
    #[diesel(sql_type = Nullable<Text>)]
    pub node: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub region: Option<String>,
    /// The provider reputation an ask carries (0 for bids).
    #[diesel(sql_type = Integer)]
    pub reputation: i32,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub cancel_reason: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

/// One counter-order the resting order could not trade with, and why.
#[derive(Debug, Clone, SimpleObject)]
pub struct SkippedOrder {
    pub order_id: u64,
    pub price: Decimal,
    pub gpus: u32,
    /// The first constraint that keeps the two apart, e.g. `region_not_allowed`.
    pub reason: String,
    /// The constraint's values as JSON, e.g. `{"ask":"us-east"}`.
    pub detail: String,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Explanation {
    pub skipped: Vec<SkippedOrder>,
    /// More counter-orders were skipped than listed.
    pub truncated: bool,
}

#[derive(Debug, Clone, QueryableByName, SimpleObject)]
pub struct OrderChange {
    #[diesel(sql_type = BigInt)]
    pub event_seq: i64,
    /// `accepted`, `filled`, `amended` or `cancelled`.
    #[diesel(sql_type = Text)]
    pub change: String,
    #[diesel(sql_type = Nullable<Numeric>)]
    pub price: Option<Decimal>,
    #[diesel(sql_type = Integer)]
    pub remaining: i32,
    #[diesel(sql_type = Nullable<Text>)]
    pub detail: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
}

#[ComplexObject]
impl Order {
    /// Why this resting order has not matched: every counter-order at a price it would
    /// accept, with the constraint that kept them apart. Null once the order is not open.
    async fn explanation(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] limit: i32,
    ) -> async_graphql::Result<Option<Explanation>> {
        if self.status != "open" {
            return Ok(None);
        }
        let limit = usize::try_from(limit.clamp(1, 200)).unwrap_or(20);
        let engine = state(ctx).gateway.replica();
        let Ok(explanation) = engine.explain(OrderId(self.id as u64), limit) else {
            // The projection still shows it open, the engine has moved on.
            return Ok(None);
        };
        Ok(Some(Explanation {
            skipped: explanation
                .skipped
                .into_iter()
                .map(|s| {
                    let detail = serde_json::to_value(s.reason).unwrap_or_default();
                    let (reason, detail) = match &detail {
                        serde_json::Value::String(name) => (name.clone(), "{}".to_owned()),
                        serde_json::Value::Object(map) => map
                            .iter()
                            .next()
                            .map(|(k, v)| (k.clone(), v.to_string()))
                            .unwrap_or_default(),
                        _ => (detail.to_string(), "{}".to_owned()),
                    };
                    SkippedOrder {
                        order_id: s.order_id.0,
                        price: six(s.price.to_decimal()),
                        gpus: s.gpus,
                        reason,
                        detail,
                    }
                })
                .collect(),
            truncated: explanation.truncated,
        }))
    }

    /// Every change of the order, oldest first.
    async fn history(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<OrderChange>> {
        let (partition, id) = (self.partition, self.id);
        Ok(state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT event_seq, change, price, remaining, detail, at FROM order_history \
                     WHERE partition = $1 AND order_id = $2 ORDER BY event_seq",
                )
                .bind::<Integer, _>(partition)
                .bind::<BigInt, _>(id)
                .load(conn)?)
            })
            .await?)
    }
}

#[derive(Debug, Clone, QueryableByName, SimpleObject)]
#[graphql(complex)]
pub struct Lease {
    #[diesel(sql_type = Integer)]
    #[graphql(skip)]
    pub partition: i32,
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub market: String,
    #[diesel(sql_type = BigInt)]
    pub buyer: i64,
    #[diesel(sql_type = BigInt)]
    pub provider: i64,
    #[diesel(sql_type = Text)]
    pub node: String,
    #[diesel(sql_type = Text)]
    pub region: String,
    #[diesel(sql_type = Integer)]
    pub gpus: i32,
    #[diesel(sql_type = Numeric)]
    pub price: Decimal,
    #[diesel(sql_type = Integer)]
    pub hours: i32,
    #[diesel(sql_type = Numeric)]
    pub cost: Decimal,
    /// `created`, `running` or `ended`.
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub started_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub ended_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Numeric>)]
    pub hours_used: Option<Decimal>,
    #[diesel(sql_type = Nullable<Numeric>)]
    pub charged: Option<Decimal>,
    #[diesel(sql_type = Nullable<Numeric>)]
    pub provider_earned: Option<Decimal>,
    #[diesel(sql_type = Nullable<Text>)]
    pub end_reason: Option<String>,
}

/// A job for a lease, as its buyer submitted it.
#[derive(Debug, Clone, QueryableByName, SimpleObject)]
#[graphql(complex)]
pub struct Job {
    #[diesel(sql_type = Text)]
    pub command: String,
    #[diesel(sql_type = Array<Text>)]
    pub args: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    #[graphql(skip)]
    pub env_names: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    #[graphql(skip)]
    pub env_values: Vec<String>,
    #[diesel(sql_type = Timestamptz)]
    pub submitted_at: DateTime<Utc>,
    /// The end of the job's output (at most 48 KiB) as the provider's agent last sent it.
    #[diesel(sql_type = Text)]
    pub log_tail: String,
    /// How the job ended, e.g. `exited 0` or `killed: the lease's time ran out`.
    #[diesel(sql_type = Nullable<Text>)]
    pub outcome: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub log_at: Option<DateTime<Utc>>,
}

#[ComplexObject]
impl Job {
    async fn env(&self) -> Vec<EnvVar> {
        self.env_names
            .iter()
            .zip(&self.env_values)
            .map(|(name, value)| EnvVar {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, SimpleObject, InputObject)]
#[graphql(input_name = "EnvVarInput")]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[ComplexObject]
impl Lease {
    /// The job its buyer submitted, if any (only the buyer and the provider see leases).
    async fn job(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Job>> {
        let (partition, id) = (self.partition, self.id);
        Ok(state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT command, args, env_names, env_values, submitted_at, log_tail, outcome, \
                     log_at FROM lease_jobs \
                     WHERE partition = $1 AND lease_id = $2",
                )
                .bind::<Integer, _>(partition)
                .bind::<BigInt, _>(id)
                .get_result(conn)
                .optional()?)
            })
            .await?)
    }
}

#[derive(Debug, Clone, QueryableByName, SimpleObject)]
pub struct Node {
    #[diesel(sql_type = Text)]
    pub node: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub advertised_class: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub advertised_gpus: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub reported_class: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub reported_gpus: Option<i32>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_heartbeat: Option<DateTime<Utc>>,
    #[diesel(sql_type = BigInt)]
    pub heartbeats: i64,
    #[diesel(sql_type = BigInt)]
    pub up_ms: i64,
    #[diesel(sql_type = BigInt)]
    pub down_ms: i64,
    /// The node's reported hardware differs from what its asks advertise.
    #[diesel(sql_type = Bool)]
    pub mismatching: bool,
}

#[derive(Debug, Clone, QueryableByName, SimpleObject)]
pub struct ReputationChange {
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
    /// What changed the record, e.g. `lease_ended:completed` or `spec_mismatch`.
    #[diesel(sql_type = Text)]
    pub cause: String,
    #[diesel(sql_type = Integer)]
    pub score: i32,
    #[diesel(sql_type = Double)]
    pub completion: f64,
    #[diesel(sql_type = Double)]
    pub uptime: f64,
    #[diesel(sql_type = Double)]
    pub punctuality: f64,
    #[diesel(sql_type = Double)]
    pub integrity: f64,
}

/// One GPU's reading from a signed node report. Null: the agent could not read it.
#[derive(Debug, Clone, QueryableByName, SimpleObject)]
pub struct TelemetrySample {
    #[diesel(sql_type = Text)]
    pub node: String,
    #[diesel(sql_type = Integer)]
    pub gpu: i32,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub uuid: String,
    #[diesel(sql_type = Nullable<diesel::sql_types::Float>)]
    pub utilisation_pct: Option<f32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub memory_used_mb: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub memory_total_mb: Option<i64>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Float>)]
    pub temperature_c: Option<f32>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Float>)]
    pub power_w: Option<f32>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Float>)]
    pub power_limit_w: Option<f32>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub sm_clock_mhz: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub ecc_errors: Option<i64>,
    /// From the agent's simulated source, not real hardware.
    #[diesel(sql_type = Bool)]
    pub simulated: bool,
}

impl TelemetrySample {
    fn of(report: &crate::reports::NodeReport) -> Vec<TelemetrySample> {
        let big = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        report
            .gpus
            .iter()
            .map(|g| TelemetrySample {
                node: report.node.clone(),
                gpu: g.index as i32,
                at: report.at,
                name: g.name.clone(),
                uuid: g.uuid.clone(),
                utilisation_pct: g.utilisation_pct,
                memory_used_mb: big(g.memory_used_mb),
                memory_total_mb: big(g.memory_total_mb),
                temperature_c: g.temperature_c,
                power_w: g.power_w,
                power_limit_w: g.power_limit_w,
                sm_clock_mhz: g.sm_clock_mhz.map(|c| c as i32),
                ecc_errors: big(g.ecc_errors),
                simulated: report.simulated,
            })
            .collect()
    }
}

/// A provider, its score with the components it is computed from, and its nodes.
#[derive(Debug, Clone, QueryableByName, SimpleObject)]
#[graphql(complex)]
pub struct Provider {
    #[diesel(sql_type = BigInt)]
    pub account: i64,
    /// 0 to 1000: round(1000 × (0.5 completion + 0.3 uptime + 0.2 punctuality) × integrity).
    #[diesel(sql_type = Integer)]
    pub score: i32,
    #[diesel(sql_type = Double)]
    pub completion: f64,
    #[diesel(sql_type = Double)]
    pub uptime: f64,
    #[diesel(sql_type = Double)]
    pub punctuality: f64,
    #[diesel(sql_type = Double)]
    pub integrity: f64,
    #[diesel(sql_type = Integer)]
    pub leases_completed: i32,
    #[diesel(sql_type = Integer)]
    pub leases_failed: i32,
    #[diesel(sql_type = Integer)]
    pub starts: i32,
    #[diesel(sql_type = Integer)]
    pub starts_on_time: i32,
    #[diesel(sql_type = Integer)]
    pub spec_mismatches: i32,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

#[ComplexObject]
impl Provider {
    async fn nodes(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Node>> {
        let provider = self.account;
        Ok(state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT node, advertised_class, advertised_gpus, reported_class, \
                     reported_gpus, last_heartbeat, heartbeats, up_ms, down_ms, mismatching \
                     FROM nodes WHERE provider = $1 ORDER BY node",
                )
                .bind::<BigInt, _>(provider)
                .load(conn)?)
            })
            .await?)
    }

    /// The latest GPU samples of the provider's nodes (signed reports), newest first.
    async fn telemetry(
        &self,
        ctx: &Context<'_>,
        node: Option<String>,
        #[graphql(default = 60)] last: i32,
    ) -> async_graphql::Result<Vec<TelemetrySample>> {
        let provider = self.account;
        let last = i64::from(last.clamp(1, MAX_PAGE as i32));
        Ok(state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT s.node, s.gpu, s.at, s.name, s.uuid, s.utilisation_pct, \
                     s.memory_used_mb, s.memory_total_mb, s.temperature_c, s.power_w, \
                     s.power_limit_w, s.sm_clock_mhz, s.ecc_errors, r.simulated \
                     FROM gpu_samples s JOIN node_reports r USING (provider, node, sequence) \
                     WHERE s.provider = $1 AND ($2::text IS NULL OR s.node = $2) \
                     ORDER BY s.at DESC, s.node, s.gpu LIMIT $3",
                )
                .bind::<BigInt, _>(provider)
                .bind::<Nullable<Text>, _>(node)
                .bind::<BigInt, _>(last)
                .load(conn)?)
            })
            .await?)
    }

    /// Why the score is what it is: the latest changes, newest first.
    async fn history(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] last: i32,
    ) -> async_graphql::Result<Vec<ReputationChange>> {
        let provider = self.account;
        let last = i64::from(last.clamp(1, MAX_PAGE as i32));
        Ok(state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT at, cause, score, completion, uptime, punctuality, integrity \
                     FROM reputation_history WHERE provider = $1 \
                     ORDER BY at DESC, partition DESC, event_seq DESC LIMIT $2",
                )
                .bind::<BigInt, _>(provider)
                .bind::<BigInt, _>(last)
                .load(conn)?)
            })
            .await?)
    }
}

/// An account's money as the engine holds it now.
#[derive(Debug, Clone, SimpleObject)]
pub struct Balance {
    pub account: u64,
    pub available: Decimal,
    /// Held for open bids.
    pub held: Decimal,
    /// Paid into running leases.
    pub in_lease: Decimal,
    /// Requested withdrawals and payouts of the open settlement batch, on their way out.
    pub settling: Decimal,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Posting {
    pub account: i64,
    pub bucket: String,
    pub amount: Decimal,
}

#[derive(Debug, Clone, QueryableByName)]
struct JournalRow {
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    event_seq: i64,
    #[diesel(sql_type = BigInt)]
    command_offset: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
    #[diesel(sql_type = Array<BigInt>)]
    accounts: Vec<i64>,
    #[diesel(sql_type = Array<Text>)]
    buckets: Vec<String>,
    #[diesel(sql_type = Array<Numeric>)]
    amounts: Vec<Decimal>,
}

/// A journal transaction: legs that sum to zero, with the event and command that caused it.
#[derive(Debug, Clone, SimpleObject)]
pub struct JournalEntry {
    pub partition: i32,
    pub event_seq: i64,
    pub command_offset: i64,
    pub kind: String,
    pub at: DateTime<Utc>,
    pub postings: Vec<Posting>,
}

#[derive(Debug, Clone, QueryableByName, SimpleObject)]
pub struct Invoice {
    #[diesel(sql_type = BigInt)]
    pub account: i64,
    #[diesel(sql_type = Date)]
    pub period: NaiveDate,
    /// `open` or `closed`.
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Integer)]
    pub lines: i32,
    #[diesel(sql_type = Numeric)]
    pub gpu_hours: Decimal,
    #[diesel(sql_type = Numeric)]
    pub amount: Decimal,
}

/// A provider's statement for a calendar month (UTC).
#[derive(Debug, Clone, QueryableByName, SimpleObject)]
pub struct Earning {
    #[diesel(sql_type = Date)]
    pub period: NaiveDate,
    #[diesel(sql_type = Integer)]
    pub leases: i32,
    #[diesel(sql_type = Numeric)]
    pub gpu_hours: Decimal,
    #[diesel(sql_type = Numeric)]
    pub gross: Decimal,
    #[diesel(sql_type = Numeric)]
    pub fees: Decimal,
    #[diesel(sql_type = Numeric)]
    pub net: Decimal,
}

/// A node in the engine, at one instant.
#[derive(Debug, Clone, SimpleObject)]
pub struct NodeState {
    /// GPUs in the provider's running leases on the node.
    pub leased_gpus: u32,
    /// The ask asked about, if it is still resting.
    pub ask: Option<RestingOrder>,
}

/// A resting order in the engine.
#[derive(Debug, Clone, SimpleObject)]
pub struct RestingOrder {
    pub id: u64,
    pub market: String,
    /// `bid` or `ask`.
    pub side: String,
    pub price: Decimal,
    pub filled: u32,
    pub remaining: u32,
}

impl From<matching_engine::RestingOrder> for RestingOrder {
    fn from(o: matching_engine::RestingOrder) -> RestingOrder {
        RestingOrder {
            id: o.id.0,
            market: o.market.to_string(),
            side: o.side.as_str().to_owned(),
            price: six(o.price.to_decimal()),
            filled: o.filled,
            remaining: o.remaining,
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Me {
    pub key_id: i64,
    pub role: Role,
    pub account: Option<u64>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct DepositInstructions {
    /// Send funds here on the settlement chain...
    pub escrow_address: String,
    /// ...with exactly this memo, or they cannot be credited automatically.
    pub memo: String,
}

/// A settlement batch: payouts sent in one transaction from the escrow account.
#[derive(Debug, Clone, QueryableByName, SimpleObject)]
#[graphql(complex)]
pub struct Settlement {
    #[diesel(sql_type = BigInt)]
    pub batch: i64,
    /// `open` (waiting for its transaction), `confirmed` or `failed`.
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = Numeric)]
    pub total: Decimal,
    /// How many accounts it pays.
    #[diesel(sql_type = Integer)]
    pub payouts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub opened_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub closed_at: Option<DateTime<Utc>>,
    /// The transaction that paid it (confirmed batches).
    #[diesel(sql_type = Nullable<Text>)]
    pub tx_hash: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub height: Option<i64>,
    /// Why it failed (failed batches); the amounts went back to available.
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
    /// Whose lines the caller may see: `None` for finance and admin (all).
    #[graphql(skip)]
    #[diesel(sql_type = Nullable<BigInt>)]
    pub visible_to: Option<i64>,
}

/// One account's payout in a settlement batch.
#[derive(Debug, Clone, QueryableByName, SimpleObject)]
pub struct SettlementLine {
    #[diesel(sql_type = BigInt)]
    pub account: i64,
    #[diesel(sql_type = Text)]
    pub address: String,
    #[diesel(sql_type = Numeric)]
    pub amount: Decimal,
    /// The part paid from available earnings; the rest was requested as withdrawals.
    #[diesel(sql_type = Numeric)]
    pub from_available: Decimal,
}

impl From<&SettlementPayout> for SettlementLine {
    fn from(p: &SettlementPayout) -> SettlementLine {
        SettlementLine {
            account: p.account.0 as i64,
            address: p.address.to_string(),
            amount: six(p.amount.to_decimal()),
            from_available: six(p.from_available.to_decimal()),
        }
    }
}

#[ComplexObject]
impl Settlement {
    /// The payouts (a trader or provider sees its own line only).
    async fn lines(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SettlementLine>> {
        let (batch, only) = (self.batch, self.visible_to.unwrap_or(-1));
        Ok(state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT account, address, amount, from_available FROM settlement_payouts \
                     WHERE batch = $1 AND ($2 < 0 OR account = $2) ORDER BY account",
                )
                .bind::<BigInt, _>(batch)
                .bind::<BigInt, _>(only)
                .load(conn)?)
            })
            .await?)
    }
}

/// The engine's open settlement batch, or what a batch opened now would pay.
#[derive(Debug, Clone, SimpleObject)]
pub struct SettlementBatch {
    /// `None` for a preview.
    pub batch: Option<u64>,
    pub total: Decimal,
    pub lines: Vec<SettlementLine>,
}

impl SettlementBatch {
    fn new(batch: Option<SettlementId>, payouts: &[SettlementPayout]) -> SettlementBatch {
        SettlementBatch {
            batch: batch.map(|b| b.0),
            total: six(payouts.iter().map(|p| p.amount.to_decimal()).sum()),
            lines: payouts.iter().map(SettlementLine::from).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SettlementState {
    Open,
    Confirmed,
    Failed,
}

/// A chain deposit as the engine took it.
#[derive(Debug, Clone, SimpleObject)]
pub struct ChainDepositResult {
    pub account: u64,
    pub amount: Decimal,
    /// The engine had already credited this (transaction, message): nothing changed.
    pub duplicate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum LeaseRole {
    Buyer,
    Provider,
    Either,
}

// ---------------------------------------------------------------------------------------
// Queries.

#[derive(Debug)]
pub struct Query;

#[Object]
impl Query {
    /// The key making the request.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Me> {
        let p = principal(ctx)?;
        Ok(Me {
            key_id: p.key_id,
            role: p.role,
            account: p.account.map(|a| a.0),
        })
    }

    async fn markets(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Market>> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            market: String,
            #[diesel(sql_type = Numeric)]
            tick: Decimal,
            #[diesel(sql_type = Integer)]
            fee_bps: i32,
            #[diesel(sql_type = Timestamptz)]
            created_at: DateTime<Utc>,
        }
        let rows: Vec<Row> = state(ctx)
            .db(|conn| {
                Ok(diesel::sql_query(
                    "SELECT market, tick, fee_bps, created_at FROM markets ORDER BY market",
                )
                .load(conn)?)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Market {
                id: r.market,
                tick: r.tick,
                fee_bps: r.fee_bps,
                created_at: r.created_at,
            })
            .collect())
    }

    /// The live book of a market: the best `levels` prices of each side.
    async fn depth(
        &self,
        ctx: &Context<'_>,
        market: String,
        #[graphql(default = 10)] levels: i32,
    ) -> async_graphql::Result<Depth> {
        Ok(depth(state(ctx), &market, levels)?)
    }

    /// Trades (fills), oldest first, optionally of one market and within `[from, to)`.
    async fn trades(
        &self,
        ctx: &Context<'_>,
        market: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Trade, EmptyFields, EmptyFields>> {
        let limit = page_size(first)?;
        let cursor = parse_cursor(after.as_deref())?;
        if let Some(market) = &market {
            parse_market(market)?;
        }
        let (from, to) = time_range(from, to)?;
        let rows: Vec<Trade> = state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT partition, lease_id, market, price, gpus, hours, taker, at FROM trades \
                     WHERE ($1::text IS NULL OR market = $1) AND at >= $2 AND at < $3 \
                     AND (partition, lease_id) > ($4, $5) \
                     ORDER BY partition, lease_id LIMIT $6",
                )
                .bind::<Nullable<Text>, _>(market)
                .bind::<Timestamptz, _>(from)
                .bind::<Timestamptz, _>(to)
                .bind::<Integer, _>(cursor.0)
                .bind::<BigInt, _>(cursor.1)
                .bind::<BigInt, _>(limit + 1)
                .load(conn)?)
            })
            .await?;
        Ok(connection(rows, limit, after.is_some(), |t| {
            (t.partition, t.lease_id)
        }))
    }

    /// Orders of an account (a trader's or provider's own; finance and admin name one),
    /// oldest first, optionally of one market and status.
    #[allow(clippy::too_many_arguments)]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        market: Option<String>,
        status: Option<OrderStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Order, EmptyFields, EmptyFields>> {
        let account = account_to_read(ctx, account.as_ref())?;
        let limit = page_size(first)?;
        let cursor = parse_cursor(after.as_deref())?;
        if let Some(market) = &market {
            parse_market(market)?;
        }
        let status = status.map(OrderStatus::as_str);
        let rows: Vec<Order> = state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT partition, order_id AS id, account, client_id AS client_order_id, \
                     market, side, price, gpus, remaining, tif AS time_in_force, hours, node, region, \
                     reputation, status, \
                     cancel_reason, created_at, updated_at FROM orders \
                     WHERE account = $1 AND ($2::text IS NULL OR market = $2) \
                     AND ($3::text IS NULL OR status = $3) AND (partition, order_id) > ($4, $5) \
                     ORDER BY partition, order_id LIMIT $6",
                )
                .bind::<BigInt, _>(account)
                .bind::<Nullable<Text>, _>(market)
                .bind::<Nullable<Text>, _>(status)
                .bind::<Integer, _>(cursor.0)
                .bind::<BigInt, _>(cursor.1)
                .bind::<BigInt, _>(limit + 1)
                .load(conn)?)
            })
            .await?;
        Ok(connection(rows, limit, after.is_some(), |o| {
            (o.partition, o.id)
        }))
    }

    /// Leases an account bought or provided, oldest first.
    #[allow(clippy::too_many_arguments)]
    async fn leases(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        #[graphql(default_with = "LeaseRole::Either")] role: LeaseRole,
        status: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Lease, EmptyFields, EmptyFields>> {
        let account = account_to_read(ctx, account.as_ref())?;
        let limit = page_size(first)?;
        let cursor = parse_cursor(after.as_deref())?;
        if let Some(s) = &status {
            if !["created", "running", "ended"].contains(&s.as_str()) {
                return Err(ApiError::validation(format!(
                    "unknown lease status {s:?} (created, running, ended)"
                ))
                .into());
            }
        }
        let (as_buyer, as_provider) = match role {
            LeaseRole::Buyer => (true, false),
            LeaseRole::Provider => (false, true),
            LeaseRole::Either => (true, true),
        };
        let rows: Vec<Lease> = state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT partition, lease_id AS id, market, buyer, provider, node, region, gpus, \
                     price, hours, cost, status, created_at, started_at, ended_at, hours_used, \
                     charged, provider_earned, end_reason FROM leases \
                     WHERE (($2 AND buyer = $1) OR ($3 AND provider = $1)) \
                     AND ($4::text IS NULL OR status = $4) AND (partition, lease_id) > ($5, $6) \
                     ORDER BY partition, lease_id LIMIT $7",
                )
                .bind::<BigInt, _>(account)
                .bind::<Bool, _>(as_buyer)
                .bind::<Bool, _>(as_provider)
                .bind::<Nullable<Text>, _>(status)
                .bind::<Integer, _>(cursor.0)
                .bind::<BigInt, _>(cursor.1)
                .bind::<BigInt, _>(limit + 1)
                .load(conn)?)
            })
            .await?;
        Ok(connection(rows, limit, after.is_some(), |l| {
            (l.partition, l.id)
        }))
    }

    /// Providers by score (best first), with the components, nodes and history.
    async fn providers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Provider, EmptyFields, EmptyFields>> {
        let limit = page_size(first)?;
        // Ordered by account so the cursor is stable while scores move.
        let cursor = parse_cursor(after.as_deref())?;
        let rows: Vec<Provider> = state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT provider AS account, score, completion, uptime, punctuality, integrity, \
                     leases_completed, leases_failed, starts, starts_on_time, spec_mismatches, \
                     updated_at FROM provider_reputation WHERE provider > $1 \
                     ORDER BY provider LIMIT $2",
                )
                .bind::<BigInt, _>(cursor.1)
                .bind::<BigInt, _>(limit + 1)
                .load(conn)?)
            })
            .await?;
        Ok(connection(rows, limit, after.is_some(), |p| (0, p.account)))
    }

    /// One provider by account, with its nodes, telemetry and reputation.
    async fn provider(
        &self,
        ctx: &Context<'_>,
        account: ID,
    ) -> async_graphql::Result<Option<Provider>> {
        let account = account_param(parse_account(Some(&account))?.expect("given"))?;
        Ok(state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT provider AS account, score, completion, uptime, punctuality, integrity, \
                     leases_completed, leases_failed, starts, starts_on_time, spec_mismatches, \
                     updated_at FROM provider_reputation WHERE provider = $1",
                )
                .bind::<BigInt, _>(account)
                .get_result(conn)
                .optional()?)
            })
            .await?)
    }

    /// An account's balance as the engine holds it now (a trader's or provider's own;
    /// finance and admin name one).
    async fn balance(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
    ) -> async_graphql::Result<Balance> {
        let account = principal(ctx)?.account_to_read(parse_account(account.as_ref())?)?;
        let b = state(ctx).gateway.replica().balance(account);
        Ok(Balance {
            account: account.0,
            available: six(b.available.to_decimal()),
            held: six(b.held.to_decimal()),
            in_lease: six(b.in_lease.to_decimal()),
            settling: six(b.settling.to_decimal()),
        })
    }

    /// Journal transactions that touch an account, oldest first, within `[from, to)`.
    async fn journal(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, JournalEntry, EmptyFields, EmptyFields>> {
        let account = account_to_read(ctx, account.as_ref())?;
        let limit = page_size(first)?;
        let cursor = parse_cursor(after.as_deref())?;
        let (from, to) = time_range(from, to)?;
        let rows: Vec<JournalRow> = state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT partition, event_seq, command_offset, kind, at, accounts, buckets, \
                     amounts FROM journal_transactions WHERE $1 = ANY (accounts) \
                     AND at >= $2 AND at < $3 AND (partition, event_seq) > ($4, $5) \
                     ORDER BY partition, event_seq LIMIT $6",
                )
                .bind::<BigInt, _>(account)
                .bind::<Timestamptz, _>(from)
                .bind::<Timestamptz, _>(to)
                .bind::<Integer, _>(cursor.0)
                .bind::<BigInt, _>(cursor.1)
                .bind::<BigInt, _>(limit + 1)
                .load(conn)?)
            })
            .await?;
        let entries = rows
            .into_iter()
            .map(|r| JournalEntry {
                partition: r.partition,
                event_seq: r.event_seq,
                command_offset: r.command_offset,
                kind: r.kind,
                at: r.at,
                postings: r
                    .accounts
                    .into_iter()
                    .zip(r.buckets)
                    .zip(r.amounts)
                    .map(|((account, bucket), amount)| Posting {
                        account,
                        bucket,
                        amount,
                    })
                    .collect(),
            })
            .collect();
        Ok(connection(entries, limit, after.is_some(), |e| {
            (e.partition, e.event_seq)
        }))
    }

    /// An account's monthly invoices, newest first.
    async fn invoices(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Invoice, EmptyFields, EmptyFields>> {
        Ok(monthly(
            ctx,
            "SELECT account, period, status, lines, gpu_hours, amount FROM invoices \
             WHERE account = $1 AND period < $2 ORDER BY period DESC LIMIT $3",
            account.as_ref(),
            first,
            after.as_deref(),
            |i: &Invoice| i.period,
        )
        .await?)
    }

    /// A provider's monthly statements (earnings), newest first.
    async fn earnings(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Earning, EmptyFields, EmptyFields>> {
        Ok(monthly(
            ctx,
            "SELECT period, leases, gpu_hours, gross, fees, net FROM earnings \
             WHERE provider = $1 AND period < $2 ORDER BY period DESC LIMIT $3",
            account.as_ref(),
            first,
            after.as_deref(),
            |e: &Earning| e.period,
        )
        .await?)
    }

    /// A resting order as the engine holds it now (the caller's own; finance and admin any):
    /// null once it is filled, cancelled or expired. Unlike `orders`, which reads the
    /// projections, this never lags the engine.
    async fn resting_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<RestingOrder>> {
        let p = principal(ctx)?;
        let id = parse_order_id(&id)?;
        let engine = state(ctx).gateway.replica();
        let Some(order) = engine.order(id) else {
            return Ok(None);
        };
        if p.account_to_read(Some(order.account)).is_err() {
            // Another account's order reads as absent, as if unknown.
            return Ok(None);
        }
        Ok(Some(RestingOrder::from(order)))
    }

    /// A provider's node as the engine holds it now, read at one instant: the GPUs in its
    /// running leases and, given the node's ask, that ask. An agent sizes its ask from this
    /// without racing fills.
    async fn node_state(
        &self,
        ctx: &Context<'_>,
        node: String,
        ask: Option<ID>,
    ) -> async_graphql::Result<NodeState> {
        let p = principal(ctx)?;
        p.require(&[Role::Provider], "a node's state")?;
        let provider = p.own_account()?;
        let node = parse_name::<NodeId>("node", &node)?;
        let ask = ask.as_ref().map(parse_order_id).transpose()?;
        let engine = state(ctx).gateway.replica();
        let leased_gpus = engine
            .leases()
            .filter(|l| l.provider == provider && l.node == node)
            .map(|l| l.gpus)
            .sum();
        let ask = ask
            .and_then(|id| engine.order(id))
            .filter(|o| o.account == provider)
            .map(RestingOrder::from);
        Ok(NodeState { leased_gpus, ask })
    }

    /// Events the API has read that the slowest projection has not applied yet: zero means
    /// every query over the projections is as new as the engine's answers so far.
    async fn projection_lag(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        let st = state(ctx);
        let read = st.gateway.events_read();
        let positions = st.projector_positions().await?;
        Ok(positions
            .iter()
            .map(|(_, next)| read.saturating_sub(*next))
            .max()
            .unwrap_or(read))
    }

    /// Settlement batches, newest first. Traders and providers see the batches that pay
    /// them; finance and admin see all (or one account's with `account`).
    async fn settlements(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        state_is: Option<SettlementState>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Settlement, EmptyFields, EmptyFields>> {
        let p = principal(ctx)?;
        let (filter, visible_to) = match p.role {
            Role::Trader | Role::Provider => {
                let own = account_to_read(ctx, account.as_ref())?;
                (own, Some(own))
            }
            Role::Finance | Role::Admin => match parse_account(account.as_ref())? {
                Some(a) => (account_param(a)?, None),
                None => (-1, None),
            },
        };
        let state_is = state_is.map(|s| match s {
            SettlementState::Open => "open",
            SettlementState::Confirmed => "confirmed",
            SettlementState::Failed => "failed",
        });
        let limit = page_size(first)?;
        let before = match after.as_deref() {
            None => i64::MAX,
            Some(_) => parse_cursor(after.as_deref())?.1,
        };
        let mut rows: Vec<Settlement> = state(ctx)
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT batch, state, total, payouts, opened_at, closed_at, tx_hash, height, \
                     reason, NULL::bigint AS visible_to FROM settlements s \
                     WHERE batch < $1 AND ($2::text IS NULL OR state = $2) \
                     AND ($3 < 0 OR EXISTS (SELECT 1 FROM settlement_payouts p \
                                            WHERE p.batch = s.batch AND p.account = $3)) \
                     ORDER BY batch DESC LIMIT $4",
                )
                .bind::<BigInt, _>(before)
                .bind::<Nullable<Text>, _>(state_is)
                .bind::<BigInt, _>(filter)
                .bind::<BigInt, _>(limit + 1)
                .load(conn)?)
            })
            .await?;
        for row in &mut rows {
            row.visible_to = visible_to;
        }
        Ok(connection(rows, limit, after.is_some(), |s| (0, s.batch)))
    }

    /// The engine's open settlement batch, if any (finance, admin).
    async fn pending_settlement(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<SettlementBatch>> {
        principal(ctx)?.require(&[Role::Finance, Role::Admin], "the open settlement")?;
        Ok(state(ctx)
            .gateway
            .replica()
            .open_settlement_batch()
            .map(|(batch, payouts)| SettlementBatch::new(Some(batch), payouts)))
    }

    /// What a settlement batch opened now would pay (finance, admin).
    async fn settlement_due(
        &self,
        ctx: &Context<'_>,
        min_payout: String,
        #[graphql(default = 100)] max_payouts: u32,
    ) -> async_graphql::Result<SettlementBatch> {
        principal(ctx)?.require(&[Role::Finance, Role::Admin], "settlement previews")?;
        let min_payout = money("minPayout", Amount::parse(&min_payout))?;
        let due = state(ctx)
            .gateway
            .replica()
            .settlement_due(min_payout, max_payouts);
        Ok(SettlementBatch::new(None, &due))
    }

    /// Where and how the caller deposits funds.
    async fn deposit_instructions(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<DepositInstructions> {
        let account = principal(ctx)?.own_account()?;
        let escrow = state(ctx).escrow_address.clone().ok_or_else(|| {
            ApiError::unavailable("no settlement chain is configured (--escrow-address)")
        })?;
        Ok(DepositInstructions {
            escrow_address: escrow,
            memo: account.0.to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Mutations.

#[derive(Debug, InputObject)]
pub struct BidInput {
    /// Lease length in whole hours.
    pub hours: u32,
    #[graphql(default)]
    pub min_vram_gb: u32,
    /// Allowed regions; empty means any.
    #[graphql(default)]
    pub regions: Vec<String>,
    /// Allowed interconnects (`pcie`, `nvlink`, `nvswitch`, `infinity_fabric`); empty: any.
    #[graphql(default)]
    pub interconnects: Vec<String>,
    /// `nvidia` or `amd`; absent: either.
    pub vendor: Option<String>,
    #[graphql(default)]
    pub min_reputation: u32,
    #[graphql(default)]
    pub single_node: bool,
    #[graphql(default)]
    pub all_or_none: bool,
    pub min_fill: Option<u32>,
}

#[derive(Debug, InputObject)]
pub struct AskInput {
    pub node: String,
    /// `nvidia` or `amd`.
    pub vendor: String,
    pub vram_gb: u32,
    /// `pcie`, `nvlink`, `nvswitch` or `infinity_fabric`.
    pub interconnect: String,
    pub region: String,
    pub available_until: DateTime<Utc>,
}

#[derive(Debug, InputObject)]
pub struct PlaceOrderInput {
    pub market: String,
    /// Your idempotency key, unique per account: a decimal up to 2^128 or a UUID. A retry
    /// with the same key returns the first order, never a second one.
    pub client_order_id: String,
    /// Per GPU-hour, a decimal string on the market's tick, e.g. "2.10".
    pub price: String,
    pub gpus: u32,
    #[graphql(default_with = "TimeInForce::Gtc")]
    pub time_in_force: TimeInForce,
    /// Required with `GTT`.
    pub expires_at: Option<DateTime<Utc>>,
    #[graphql(default)]
    pub post_only: bool,
    /// Exactly one of `bid` (traders) and `ask` (providers).
    pub bid: Option<BidInput>,
    pub ask: Option<AskInput>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Fill {
    pub lease_id: u64,
    pub price: Decimal,
    pub gpus: u32,
    pub hours: u32,
    pub cost: Decimal,
    /// The other side's order.
    pub counter_order_id: u64,
}

/// The engine's answer to an order.
#[derive(Debug, Clone, SimpleObject)]
pub struct OrderResult {
    pub order_id: u64,
    pub client_order_id: String,
    pub status: OrderStatus,
    pub remaining: u32,
    pub fills: Vec<Fill>,
    /// Why the rest was cancelled (`immediate_remainder` for IOC, `self_trade`, ...).
    pub cancel_reason: Option<String>,
    /// True when this is the answer to an earlier request with the same client order id.
    pub replayed: bool,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct CancelResult {
    pub order_id: u64,
    /// GPUs that were still open.
    pub remaining: u32,
    /// Money the cancel released from the hold.
    pub released: Decimal,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct AmendResult {
    pub order_id: u64,
    pub price: Decimal,
    pub remaining: u32,
    /// Smaller quantity keeps time priority; a new price or more GPUs loses it.
    pub priority_kept: bool,
    pub fills: Vec<Fill>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct MoneyResult {
    pub account: u64,
    pub amount: Decimal,
}

/// What became of a node report.
#[derive(Debug, Clone, SimpleObject)]
pub struct ReportReceipt {
    /// The report's sequence number was received before: nothing was applied again.
    pub duplicate: bool,
    pub lease_starts: Vec<LeaseStart>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct LeaseStart {
    pub lease_id: u64,
    /// The engine's rejection code when the start was refused (e.g. `NOT_LEASE_PROVIDER`).
    pub refused: Option<String>,
}

/// A new key: `key` is shown only this once.
#[derive(Debug, Clone, SimpleObject)]
pub struct NewApiKey {
    pub id: i64,
    pub key: String,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct LeaseEndResult {
    pub lease_id: u64,
    pub hours_used: Decimal,
    pub charged: Decimal,
    pub refunded: Decimal,
    pub provider_earned: Decimal,
}

fn parse_name<T: std::str::FromStr<Err = contract::ParseError>>(
    what: &str,
    s: &str,
) -> Result<T, ApiError> {
    s.parse()
        .map_err(|e: contract::ParseError| ApiError::validation(format!("{what}: {e}")))
}

fn parse_vendor(s: &str) -> Result<Vendor, ApiError> {
    match s {
        "nvidia" => Ok(Vendor::Nvidia),
        "amd" => Ok(Vendor::Amd),
        _ => Err(ApiError::validation(format!(
            "vendor: unknown {s:?} (nvidia, amd)"
        ))),
    }
}

fn money<T>(what: &str, r: Result<T, contract::MoneyError>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::validation(format!("{what}: {e}")))
}

fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp(at.timestamp_millis())
}

/// Builds the engine's order from the input; every syntax check happens here.
fn new_order(p: &Principal, input: PlaceOrderInput) -> Result<NewOrder, ApiError> {
    let account = p.own_account()?;
    let terms = match (input.bid, input.ask) {
        (Some(bid), None) => {
            p.require(&[Role::Trader], "placing a bid")?;
            OrderTerms::Bid(BidSpec {
                hours: money("hours", Hours::new(u64::from(bid.hours)))?,
                min_vram_gb: bid.min_vram_gb,
                regions: bid
                    .regions
                    .iter()
                    .map(|r| parse_name::<Region>("region", r))
                    .collect::<Result<_, _>>()?,
                interconnects: bid
                    .interconnects
                    .iter()
                    .map(|i| parse_name::<Interconnect>("interconnect", i))
                    .collect::<Result<_, _>>()?,
                vendor: bid.vendor.as_deref().map(parse_vendor).transpose()?,
                min_reputation: money(
                    "minReputation",
                    Reputation::new(u64::from(bid.min_reputation)),
                )?,
                single_node: bid.single_node,
                all_or_none: bid.all_or_none,
                min_fill: bid
                    .min_fill
                    .map(|g| money("minFill", Gpus::new(u64::from(g))))
                    .transpose()?,
            })
        }
        (None, Some(ask)) => {
            p.require(&[Role::Provider], "placing an ask")?;
            OrderTerms::Ask(AskSpec {
                node: parse_name::<NodeId>("node", &ask.node)?,
                vendor: parse_vendor(&ask.vendor)?,
                vram_gb: ask.vram_gb,
                interconnect: parse_name::<Interconnect>("interconnect", &ask.interconnect)?,
                region: parse_name::<Region>("region", &ask.region)?,
                available_until: timestamp(ask.available_until),
            })
        }
        _ => return Err(ApiError::validation("give exactly one of `bid` and `ask`")),
    };
    let tif = match (input.time_in_force, input.expires_at) {
        (TimeInForce::Gtt, Some(at)) => EngineTif::Gtt {
            expires_at: timestamp(at),
        },
        (TimeInForce::Gtt, None) => {
            return Err(ApiError::validation("GTT needs `expiresAt`"));
        }
        (_, Some(_)) => {
            return Err(ApiError::validation("`expiresAt` goes only with GTT"));
        }
        (TimeInForce::Gtc, None) => EngineTif::Gtc,
        (TimeInForce::Ioc, None) => EngineTif::Ioc,
        (TimeInForce::Fok, None) => EngineTif::Fok,
    };
    Ok(NewOrder {
        account,
        client_id: ClientOrderId::parse(&input.client_order_id)
            .map_err(|e| ApiError::validation(format!("clientOrderId: {e}")))?,
        market: parse_market(&input.market)?,
        price: money("price", Price::parse(&input.price))?,
        gpus: money("gpus", Gpus::new(u64::from(input.gpus)))?,
        tif,
        post_only: input.post_only,
        terms,
    })
}

/// The events of an answer, or its rejection as the error.
fn events(answer: Vec<EventBody>) -> Result<Vec<Event>, ApiError> {
    answer
        .into_iter()
        .map(|body| match body {
            EventBody::Event(e) => Ok(e),
            EventBody::Rejected(r) => Err(ApiError::rejected(&r)),
        })
        .collect()
}

fn fills_of(order_id: OrderId, events: &[Event]) -> Vec<Fill> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::LeaseCreated {
                lease_id,
                bid_order,
                ask_order,
                gpus,
                price,
                hours,
                cost,
                ..
            } if *bid_order == order_id || *ask_order == order_id => Some(Fill {
                lease_id: lease_id.0,
                price: six(price.to_decimal()),
                gpus: gpus.get(),
                hours: hours.get(),
                cost: six(cost.to_decimal()),
                counter_order_id: if *bid_order == order_id {
                    ask_order.0
                } else {
                    bid_order.0
                },
            }),
            _ => None,
        })
        .collect()
}

fn order_result(client_id: String, events: &[Event]) -> Result<OrderResult, ApiError> {
    let (order_id, gpus) = events
        .iter()
        .find_map(|e| match e {
            Event::OrderAccepted {
                order_id, order, ..
            } => Some((*order_id, order.gpus.get())),
            _ => None,
        })
        .ok_or_else(|| ApiError::internal("the engine accepted no order"))?;
    let fills = fills_of(order_id, events);
    let filled: u32 = fills.iter().map(|f| f.gpus).sum();
    let cancel_reason = events.iter().find_map(|e| match e {
        Event::OrderCancelled {
            order_id: id,
            reason,
            ..
        } if *id == order_id => Some(reason.as_str().to_owned()),
        _ => None,
    });
    let remaining = gpus - filled;
    let status = match (&cancel_reason, remaining) {
        (Some(_), _) => OrderStatus::Cancelled,
        (None, 0) => OrderStatus::Filled,
        (None, _) => OrderStatus::Open,
    };
    Ok(OrderResult {
        order_id: order_id.0,
        client_order_id: client_id,
        status,
        remaining: if cancel_reason.is_some() {
            0
        } else {
            remaining
        },
        fills,
        cancel_reason,
        replayed: false,
    })
}

/// The first answer to a retried order, from the read models (waiting, within the answer
/// timeout, for the projection to catch up with it).
async fn first_answer(
    state: &AppState,
    account: AccountId,
    client_id: String,
) -> Result<OrderResult, ApiError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        order_id: i64,
        #[diesel(sql_type = Integer)]
        remaining: i32,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = Nullable<Text>)]
        cancel_reason: Option<String>,
    }
    let account = account_param(account)?;
    let deadline = tokio::time::Instant::now() + state.answer_timeout;
    loop {
        let key = client_id.clone();
        let row: Option<Row> = state
            .db(move |conn| {
                Ok(diesel::sql_query(
                    "SELECT order_id, remaining, status, cancel_reason FROM orders \
                     WHERE account = $1 AND client_id = $2",
                )
                .bind::<BigInt, _>(account)
                .bind::<Text, _>(key)
                .get_result(conn)
                .optional()?)
            })
            .await?;
        if let Some(row) = row {
            let order_id = row.order_id;
            let fills: Vec<Trade> = state
                .db(move |conn| {
                    Ok(diesel::sql_query(
                        "SELECT partition, lease_id, market, price, gpus, hours, taker, at \
                         FROM trades WHERE bid_order = $1 OR ask_order = $1 ORDER BY lease_id",
                    )
                    .bind::<BigInt, _>(order_id)
                    .load(conn)?)
                })
                .await?;
            let status = match row.status.as_str() {
                "filled" => OrderStatus::Filled,
                "cancelled" => OrderStatus::Cancelled,
                _ => OrderStatus::Open,
            };
            return Ok(OrderResult {
                order_id: order_id as u64,
                client_order_id: client_id,
                status,
                remaining: row.remaining.max(0) as u32,
                fills: fills
                    .into_iter()
                    .map(|t| Fill {
                        lease_id: t.lease_id as u64,
                        price: t.price,
                        gpus: t.gpus.max(0) as u32,
                        hours: t.hours.max(0) as u32,
                        cost: six(t.price * Decimal::from(t.gpus) * Decimal::from(t.hours)),
                        counter_order_id: 0,
                    })
                    .collect(),
                cancel_reason: row.cancel_reason,
                replayed: true,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::engine_timeout(
                "the client order id was used before, but its order is not in the read models yet",
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn parse_order_id(id: &ID) -> Result<OrderId, ApiError> {
    OrderId::parse(id).map_err(|e| ApiError::validation(format!("orderId: {e}")))
}

#[derive(Debug)]
pub struct Mutation;

#[Object]
impl Mutation {
    /// Places a bid (trader) or an ask (provider) and returns the engine's answer: accepted
    /// with its fills, or the typed rejection. A retry with the same `clientOrderId` returns
    /// the first answer (`replayed: true`) and never places a second order.
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
    ) -> async_graphql::Result<OrderResult> {
        let p = principal(ctx)?;
        let client_id = input.client_order_id.clone();
        let order = new_order(&p, input)?;
        let st = state(ctx);
        let answer = st.gateway.submit(Command::Place(order)).await?;
        match events(answer) {
            Ok(events) => Ok(order_result(client_id, &events)?),
            Err(e) if e.code == "DUPLICATE_CLIENT_ORDER_ID" => {
                Ok(first_answer(st, p.own_account()?, client_id).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Cancels a resting order of the caller.
    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> async_graphql::Result<CancelResult> {
        let p = principal(ctx)?;
        p.require(&[Role::Trader, Role::Provider], "cancelling an order")?;
        let order_id = parse_order_id(&order_id)?;
        let answer = state(ctx)
            .gateway
            .submit(Command::Cancel {
                account: p.own_account()?,
                order_id,
            })
            .await?;
        let events = events(answer)?;
        events
            .iter()
            .find_map(|e| match e {
                Event::OrderCancelled {
                    order_id,
                    remaining,
                    released,
                    ..
                } => Some(CancelResult {
                    order_id: order_id.0,
                    remaining: *remaining,
                    released: six(released.to_decimal()),
                }),
                _ => None,
            })
            .ok_or_else(|| ApiError::internal("the engine cancelled nothing").into())
    }

    /// Changes a resting order's price and/or quantity.
    async fn amend_order(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        price: Option<String>,
        gpus: Option<u32>,
    ) -> async_graphql::Result<AmendResult> {
        let p = principal(ctx)?;
        p.require(&[Role::Trader, Role::Provider], "amending an order")?;
        let order_id = parse_order_id(&order_id)?;
        let price = price
            .map(|s| money("price", Price::parse(&s)))
            .transpose()?;
        let gpus = gpus
            .map(|g| money("gpus", Gpus::new(u64::from(g))))
            .transpose()?;
        let answer = state(ctx)
            .gateway
            .submit(Command::Amend {
                account: p.own_account()?,
                order_id,
                price,
                gpus,
            })
            .await?;
        let events = events(answer)?;
        let fills = fills_of(order_id, &events);
        events
            .iter()
            .find_map(|e| match e {
                Event::OrderAmended {
                    order_id,
                    price,
                    remaining,
                    priority_kept,
                    ..
                } => Some(AmendResult {
                    order_id: order_id.0,
                    price: six(price.to_decimal()),
                    remaining: remaining.get(),
                    priority_kept: *priority_kept,
                    fills: fills.clone(),
                }),
                _ => None,
            })
            .ok_or_else(|| ApiError::internal("the engine amended nothing").into())
    }

    /// Sets where the caller's payouts and withdrawals are sent on the settlement chain (a
    /// bech32 address with the chain's prefix).
    async fn set_payout_address(
        &self,
        ctx: &Context<'_>,
        address: String,
    ) -> async_graphql::Result<String> {
        let p = principal(ctx)?;
        p.require(&[Role::Trader, Role::Provider], "setting a payout address")?;
        let account = p.own_account()?;
        let address = ChainAddress::parse(address.trim())
            .map_err(|e| ApiError::validation(format!("address: {e}")))?;
        let st = state(ctx);
        if let Some(escrow) = &st.escrow_address {
            let prefix = escrow.rsplit_once('1').map_or("", |(hrp, _)| hrp);
            if address.prefix() != prefix {
                return Err(ApiError::validation(format!(
                    "address: {address} is not an address of the settlement chain (prefix {prefix})"
                ))
                .into());
            }
        }
        events(
            st.gateway
                .submit(Command::SetPayoutAddress {
                    account,
                    address: address.clone(),
                })
                .await?,
        )?;
        Ok(address.to_string())
    }

    /// Moves `amount` of the caller's available balance to settling; the next settlement
    /// batch sends it to the caller's payout address.
    async fn request_withdrawal(
        &self,
        ctx: &Context<'_>,
        amount: String,
    ) -> async_graphql::Result<MoneyResult> {
        let p = principal(ctx)?;
        p.require(&[Role::Trader, Role::Provider], "withdrawing")?;
        let account = p.own_account()?;
        let amount = money("amount", Amount::parse(&amount))?;
        let answer = state(ctx)
            .gateway
            .submit(Command::RequestWithdrawal { account, amount })
            .await?;
        events(answer)?;
        Ok(MoneyResult {
            account: account.0,
            amount: six(amount.to_decimal()),
        })
    }

    /// Ends a lease the caller bought or provided, charging `hoursUsed`.
    async fn end_lease(
        &self,
        ctx: &Context<'_>,
        lease_id: ID,
        hours_used: String,
        #[graphql(default)] provider_failed: bool,
    ) -> async_graphql::Result<LeaseEndResult> {
        let p = principal(ctx)?;
        p.require(&[Role::Trader, Role::Provider], "ending a lease")?;
        let lease_id =
            LeaseId::parse(&lease_id).map_err(|e| ApiError::validation(format!("leaseId: {e}")))?;
        let hours_used = Decimal::from_str_exact(hours_used.trim()).map_err(|_| {
            ApiError::validation(format!("hoursUsed: not a decimal: {hours_used:?}"))
        })?;
        let reason = match (p.role, provider_failed) {
            (Role::Trader, false) => LeaseEndReason::BuyerStopped,
            (Role::Provider, false) => LeaseEndReason::Completed,
            (Role::Provider, true) => LeaseEndReason::ProviderFailed,
            _ => {
                return Err(ApiError::forbidden("only the provider reports its own failure").into())
            }
        };
        let answer = state(ctx)
            .gateway
            .submit(Command::EndLease {
                by: p.own_account()?,
                lease_id,
                hours_used,
                reason,
            })
            .await?;
        events(answer)?
            .iter()
            .find_map(|e| match e {
                Event::LeaseEnded {
                    lease_id,
                    hours_used,
                    charged,
                    refunded,
                    provider_earned,
                    ..
                } => Some(LeaseEndResult {
                    lease_id: lease_id.0,
                    hours_used: *hours_used,
                    charged: six(charged.to_decimal()),
                    refunded: six(refunded.to_decimal()),
                    provider_earned: six(provider_earned.to_decimal()),
                }),
                _ => None,
            })
            .ok_or_else(|| ApiError::internal("the engine ended no lease").into())
    }

    /// Registers a node's ed25519 public key (hex) for the calling provider; its agent signs
    /// every report with the private key.
    async fn register_node(
        &self,
        ctx: &Context<'_>,
        node: String,
        public_key: String,
    ) -> async_graphql::Result<bool> {
        let p = principal(ctx)?;
        p.require(&[Role::Provider], "registering a node")?;
        let provider = account_param(p.own_account()?)?;
        parse_name::<NodeId>("node", &node)?;
        let key = crate::reports::parse_public_key(&public_key)?;
        state(ctx)
            .db(move |conn| crate::reports::register(conn, provider, &node, &key))
            .await?;
        Ok(true)
    }

    /// Takes a node's signed report (`report`: the JSON exactly as signed; `signature`: the
    /// ed25519 signature in hex): a heartbeat for the engine, GPU samples, lease starts.
    async fn submit_node_report(
        &self,
        ctx: &Context<'_>,
        report: String,
        signature: String,
    ) -> async_graphql::Result<ReportReceipt> {
        #[derive(serde::Deserialize)]
        struct Addressed {
            node: String,
        }
        let p = principal(ctx)?;
        p.require(&[Role::Provider], "reporting for a node")?;
        let account = p.own_account()?;
        let provider = account_param(account)?;
        let node = serde_json::from_str::<Addressed>(&report)
            .map_err(|e| ApiError::validation(format!("report: {e}")))?
            .node;
        let node_id = parse_name::<NodeId>("node", &node)?;
        let st = state(ctx);
        let lookup = node.clone();
        let key = st
            .db(move |conn| crate::reports::node_key(conn, provider, &lookup))
            .await?
            .ok_or_else(|| {
                ApiError::forbidden(format!("node {node} is not registered for this provider"))
            })?;
        let report = crate::reports::verify(&key, &report, &signature)?;
        let class = parse_market(&report.class)?;
        let sequence = i64::try_from(report.sequence)
            .map_err(|_| ApiError::validation("report: sequence out of range"))?;
        let seen_node = node.clone();
        if st
            .db(move |conn| crate::reports::seen(conn, provider, &seen_node, sequence))
            .await?
        {
            return Ok(ReportReceipt {
                duplicate: true,
                lease_starts: Vec::new(),
            });
        }
        let gpus = money("gpus", Gpus::new(report.gpus.len() as u64))?;
        events(
            st.gateway
                .submit(Command::Heartbeat {
                    provider: account,
                    node: node_id,
                    class,
                    gpus,
                })
                .await?,
        )?;
        let mut lease_starts = Vec::new();
        for &lease in &report.leases_started {
            let answer = st
                .gateway
                .submit(Command::StartLease {
                    provider: account,
                    lease_id: LeaseId(lease),
                })
                .await?;
            // A start the engine already has is the resend of an earlier report.
            let code = match events(answer) {
                Ok(_) => None,
                Err(e) if e.code == "LEASE_ALREADY_STARTED" => None,
                Err(e) => Some(e.code.to_owned()),
            };
            lease_starts.push(LeaseStart {
                lease_id: lease,
                refused: code,
            });
        }
        let recorded = report.clone();
        let fresh = st
            .db(move |conn| crate::reports::record(conn, provider, &recorded))
            .await?;
        if fresh {
            let _ = st
                .telemetry
                .send(Arc::new((provider, TelemetrySample::of(&report))));
        }
        Ok(ReportReceipt {
            duplicate: !fresh,
            lease_starts,
        })
    }

    /// Gives a running lease the job to run (the lease's buyer, once; the same job again is
    /// accepted as a retry). The provider's agent runs it on the leased GPUs.
    async fn submit_job(
        &self,
        ctx: &Context<'_>,
        lease_id: ID,
        command: String,
        #[graphql(default)] args: Vec<String>,
        #[graphql(default)] env: Vec<EnvVar>,
    ) -> async_graphql::Result<bool> {
        let p = principal(ctx)?;
        p.require(&[Role::Trader], "submitting a job")?;
        let buyer = p.own_account()?;
        let lease =
            LeaseId::parse(&lease_id).map_err(|e| ApiError::validation(format!("leaseId: {e}")))?;
        if command.is_empty() || command.len() > 4_096 {
            return Err(ApiError::validation("command: 1 to 4096 bytes").into());
        }
        if args.len() > 256 || env.len() > 256 {
            return Err(ApiError::validation("at most 256 arguments and 256 variables").into());
        }
        for var in &env {
            let valid = !var.name.is_empty()
                && !var.name.starts_with(|c: char| c.is_ascii_digit())
                && var
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(ApiError::validation(format!(
                    "env: {:?} is not a variable name",
                    var.name
                ))
                .into());
            }
            if var.name.ends_with("VISIBLE_DEVICES") || var.name.starts_with("GPUMARKET_") {
                return Err(
                    ApiError::validation(format!("env: {} is set by the agent", var.name)).into(),
                );
            }
        }
        let provider = {
            let engine = state(ctx).gateway.replica();
            let lease = engine
                .lease(lease)
                .ok_or_else(|| ApiError::not_found(format!("no running lease {}", lease.0)))?;
            if lease.buyer != buyer {
                return Err(ApiError::forbidden("the lease is another account's").into());
            }
            account_param(lease.provider)?
        };
        let (buyer, id) = (account_param(buyer)?, account_param(AccountId(lease.0))?);
        let names: Vec<String> = env.iter().map(|v| v.name.clone()).collect();
        let values: Vec<String> = env.iter().map(|v| v.value.clone()).collect();
        state(ctx)
            .db(move |conn| {
                let inserted = diesel::sql_query(
                    "INSERT INTO lease_jobs (partition, lease_id, buyer, provider, command, args, \
                     env_names, env_values) VALUES (0, $1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT DO NOTHING",
                )
                .bind::<BigInt, _>(id)
                .bind::<BigInt, _>(buyer)
                .bind::<BigInt, _>(provider)
                .bind::<Text, _>(&command)
                .bind::<Array<Text>, _>(&args)
                .bind::<Array<Text>, _>(&names)
                .bind::<Array<Text>, _>(&values)
                .execute(conn)?;
                if inserted == 1 {
                    return Ok(());
                }
                let existing: Job = diesel::sql_query(
                    "SELECT command, args, env_names, env_values, submitted_at, log_tail, outcome, \
                     log_at FROM lease_jobs \
                     WHERE partition = 0 AND lease_id = $1",
                )
                .bind::<BigInt, _>(id)
                .get_result(conn)?;
                if (
                    existing.command,
                    existing.args,
                    existing.env_names,
                    existing.env_values,
                ) == (command, args, names, values)
                {
                    Ok(())
                } else {
                    Err(ApiError::validation(
                        "the lease has another job already; a job is never replaced",
                    ))
                }
            })
            .await?;
        Ok(true)
    }

    /// The provider's agent sends the end of a job's output and, once over, how it ended;
    /// the lease's buyer reads them on the lease's `job`.
    async fn submit_job_log(
        &self,
        ctx: &Context<'_>,
        lease_id: ID,
        log_tail: String,
        outcome: Option<String>,
    ) -> async_graphql::Result<bool> {
        const MAX_TAIL: usize = 48 << 10;
        let p = principal(ctx)?;
        p.require(&[Role::Provider], "sending a job's log")?;
        let provider = account_param(p.own_account()?)?;
        let lease =
            LeaseId::parse(&lease_id).map_err(|e| ApiError::validation(format!("leaseId: {e}")))?;
        let id = account_param(AccountId(lease.0))?;
        if log_tail.len() > MAX_TAIL || outcome.as_ref().is_some_and(|o| o.len() > 1_024) {
            return Err(ApiError::validation(format!(
                "logTail: at most {MAX_TAIL} bytes; outcome: at most 1024"
            ))
            .into());
        }
        state(ctx)
            .db(move |conn| {
                let updated = diesel::sql_query(
                    "UPDATE lease_jobs SET log_tail = $3, outcome = coalesce($4, outcome), \
                     log_at = now() WHERE partition = 0 AND lease_id = $1 AND provider = $2",
                )
                .bind::<BigInt, _>(id)
                .bind::<BigInt, _>(provider)
                .bind::<Text, _>(log_tail)
                .bind::<Nullable<Text>, _>(outcome)
                .execute(conn)?;
                if updated == 1 {
                    Ok(())
                } else {
                    Err(ApiError::not_found(format!(
                        "no job for lease {} on this provider's nodes",
                        lease.0
                    )))
                }
            })
            .await?;
        Ok(true)
    }

    /// Opens a market (admin).
    async fn create_market(
        &self,
        ctx: &Context<'_>,
        market: String,
        tick: String,
        fee_bps: u32,
    ) -> async_graphql::Result<String> {
        principal(ctx)?.require(&[Role::Admin], "creating a market")?;
        let id = parse_market(&market)?;
        let command = Command::CreateMarket {
            market: id,
            tick: money("tick", Price::parse(&tick))?,
            fee: money("feeBps", FeeRate::new(u64::from(fee_bps)))?,
        };
        events(state(ctx).gateway.submit(command).await?)?;
        Ok(market)
    }

    /// Creates an API key (admin); the key is in the answer only this once.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        role: Role,
        account: Option<ID>,
        #[graphql(default)] label: String,
    ) -> async_graphql::Result<NewApiKey> {
        principal(ctx)?.require(&[Role::Admin], "creating keys")?;
        let account = parse_account(account.as_ref())?;
        if label.len() > 200 {
            return Err(ApiError::validation("label: at most 200 bytes").into());
        }
        let (id, key) = state(ctx)
            .db(move |conn| crate::auth::create_key(conn, role, account, &label))
            .await?;
        Ok(NewApiKey { id, key })
    }

    /// Revokes an API key (admin); API processes refuse it within seconds.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        principal(ctx)?.require(&[Role::Admin], "revoking keys")?;
        let id: i64 = id
            .parse()
            .map_err(|_| ApiError::validation(format!("id: not a key id: {:?}", id.as_str())))?;
        let revoked = state(ctx)
            .db(move |conn| crate::auth::revoke_key(conn, id))
            .await?;
        if revoked {
            Ok(true)
        } else {
            Err(ApiError::not_found(format!("no active key {id}")).into())
        }
    }

    /// Credits a final chain transfer to the account its memo named (admin: the Cosmos
    /// bridge). A (transaction, message) already credited answers `duplicate` and changes
    /// nothing, so the bridge may retry freely.
    async fn credit_chain_deposit(
        &self,
        ctx: &Context<'_>,
        account: ID,
        amount: String,
        tx_hash: String,
        msg_index: u32,
    ) -> async_graphql::Result<ChainDepositResult> {
        principal(ctx)?.require(&[Role::Admin], "crediting a chain deposit")?;
        let account = parse_account(Some(&account))?.expect("given");
        let amount = money("amount", Amount::parse(&amount))?;
        let tx_hash =
            TxHash::parse(&tx_hash).map_err(|e| ApiError::validation(format!("txHash: {e}")))?;
        let answer = state(ctx)
            .gateway
            .submit(Command::ChainDeposit {
                account,
                amount,
                tx_hash,
                msg_index,
            })
            .await?;
        let duplicate = match events(answer) {
            Ok(_) => false,
            Err(e) if e.code == "DUPLICATE_DEPOSIT" => true,
            Err(e) => return Err(e.into()),
        };
        Ok(ChainDepositResult {
            account: account.0,
            amount: six(amount.to_decimal()),
            duplicate,
        })
    }

    /// Opens a settlement batch (admin: the Cosmos bridge): requested withdrawals and unpaid
    /// earnings of at least `minPayout`, at most `maxPayouts` accounts.
    async fn open_settlement(
        &self,
        ctx: &Context<'_>,
        min_payout: String,
        #[graphql(default = 100)] max_payouts: u32,
    ) -> async_graphql::Result<SettlementBatch> {
        principal(ctx)?.require(&[Role::Admin], "opening a settlement")?;
        let min_payout = money("minPayout", Amount::parse(&min_payout))?;
        let answer = state(ctx)
            .gateway
            .submit(Command::OpenSettlement {
                min_payout,
                max_payouts,
            })
            .await?;
        events(answer)?
            .iter()
            .find_map(|e| match e {
                Event::SettlementOpened { batch, payouts } => {
                    Some(SettlementBatch::new(Some(*batch), payouts))
                }
                _ => None,
            })
            .ok_or_else(|| ApiError::internal("the engine opened no batch").into())
    }

    /// The batch's transaction is included with success at `height` (admin: the bridge).
    async fn confirm_settlement(
        &self,
        ctx: &Context<'_>,
        batch: ID,
        tx_hash: String,
        height: u64,
    ) -> async_graphql::Result<bool> {
        principal(ctx)?.require(&[Role::Admin], "confirming a settlement")?;
        let batch =
            SettlementId::parse(&batch).map_err(|e| ApiError::validation(format!("batch: {e}")))?;
        let tx_hash =
            TxHash::parse(&tx_hash).map_err(|e| ApiError::validation(format!("txHash: {e}")))?;
        events(
            state(ctx)
                .gateway
                .submit(Command::ConfirmSettlement {
                    batch,
                    tx_hash,
                    height,
                })
                .await?,
        )?;
        Ok(true)
    }

    /// The batch's transaction failed for good (admin: the bridge); its amounts go back.
    async fn fail_settlement(
        &self,
        ctx: &Context<'_>,
        batch: ID,
        reason: String,
    ) -> async_graphql::Result<bool> {
        principal(ctx)?.require(&[Role::Admin], "failing a settlement")?;
        let batch =
            SettlementId::parse(&batch).map_err(|e| ApiError::validation(format!("batch: {e}")))?;
        let reason = FailureReason::new(&reason)
            .map_err(|e| ApiError::validation(format!("reason: {e}")))?;
        events(
            state(ctx)
                .gateway
                .submit(Command::FailSettlement { batch, reason })
                .await?,
        )?;
        Ok(true)
    }

    /// Credits an account (admin; the Cosmos bridge does this for on-chain deposits).
    async fn credit_deposit(
        &self,
        ctx: &Context<'_>,
        account: ID,
        amount: String,
    ) -> async_graphql::Result<MoneyResult> {
        principal(ctx)?.require(&[Role::Admin], "crediting a deposit")?;
        let account = parse_account(Some(&account))?.expect("given");
        let amount = money("amount", Amount::parse(&amount))?;
        events(
            state(ctx)
                .gateway
                .submit(Command::Deposit { account, amount })
                .await?,
        )?;
        Ok(MoneyResult {
            account: account.0,
            amount: six(amount.to_decimal()),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Subscriptions.

/// A change of one of the caller's orders.
#[derive(Debug, Clone, SimpleObject)]
pub struct OrderUpdate {
    pub order_id: u64,
    /// `accepted`, `filled`, `amended` or `cancelled`.
    pub change: String,
    /// GPUs still open after the change.
    pub remaining: u32,
    pub price: Option<Decimal>,
    pub lease_id: Option<u64>,
    pub at: DateTime<Utc>,
}

/// A new lease, as its provider sees it.
#[derive(Debug, Clone, SimpleObject)]
pub struct LeaseOffer {
    pub lease_id: u64,
    pub market: String,
    pub node: String,
    pub gpus: u32,
    pub hours: u32,
    pub price: Decimal,
    pub buyer: u64,
    pub at: DateTime<Utc>,
}

fn order_updates(account: AccountId, record: &EventRecord) -> Vec<OrderUpdate> {
    let EventBody::Event(event) = &record.body else {
        return Vec::new();
    };
    let at = to_time(record.at);
    match event {
        Event::OrderAccepted {
            order_id, order, ..
        } if order.account == account => {
            vec![OrderUpdate {
                order_id: order_id.0,
                change: "accepted".into(),
                remaining: order.gpus.get(),
                price: Some(six(order.price.to_decimal())),
                lease_id: None,
                at,
            }]
        }
        Event::OrderAmended {
            order_id,
            account: a,
            price,
            remaining,
            ..
        } if *a == account => vec![OrderUpdate {
            order_id: order_id.0,
            change: "amended".into(),
            remaining: remaining.get(),
            price: Some(six(price.to_decimal())),
            lease_id: None,
            at,
        }],
        Event::OrderCancelled {
            order_id,
            account: a,
            remaining,
            ..
        } if *a == account => vec![OrderUpdate {
            order_id: order_id.0,
            change: "cancelled".into(),
            remaining: *remaining,
            price: None,
            lease_id: None,
            at,
        }],
        Event::LeaseCreated {
            lease_id,
            buyer,
            provider,
            bid_order,
            ask_order,
            price,
            bid_remaining,
            ask_remaining,
            ..
        } => [
            (*buyer, *bid_order, *bid_remaining),
            (*provider, *ask_order, *ask_remaining),
        ]
        .into_iter()
        .filter(|(owner, _, _)| *owner == account)
        .map(|(_, order_id, remaining)| OrderUpdate {
            order_id: order_id.0,
            change: "filled".into(),
            remaining,
            price: Some(six(price.to_decimal())),
            lease_id: Some(lease_id.0),
            at,
        })
        .collect(),
        _ => Vec::new(),
    }
}

#[derive(Debug)]
pub struct Subscription;

#[Subscription]
impl Subscription {
    /// Every fill of a market as it happens.
    async fn trades(
        &self,
        ctx: &Context<'_>,
        market: String,
    ) -> async_graphql::Result<impl Stream<Item = Trade>> {
        let id = parse_market(&market)?;
        let mut rx = state(ctx).gateway.subscribe();
        Ok(async_stream_like(move |tx| async move {
            while let Some(record) = next(&mut rx).await {
                if let EventBody::Event(Event::LeaseCreated {
                    lease_id,
                    market: m,
                    price,
                    gpus,
                    hours,
                    taker,
                    ..
                }) = &record.body
                {
                    if *m == id {
                        let trade = Trade {
                            partition: 0,
                            lease_id: lease_id.0 as i64,
                            market: m.to_string(),
                            price: six(price.to_decimal()),
                            gpus: gpus.get() as i32,
                            hours: hours.get() as i32,
                            taker: taker.as_str().to_owned(),
                            at: to_time(record.at),
                        };
                        if tx.send(trade).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }))
    }

    /// The book of a market: now, then after every change of it.
    async fn depth(
        &self,
        ctx: &Context<'_>,
        market: String,
        #[graphql(default = 10)] levels: i32,
    ) -> async_graphql::Result<impl Stream<Item = Depth>> {
        let st = state(ctx).clone();
        let first = depth(&st, &market, levels)?;
        let mut progress = st.gateway.progress();
        Ok(async_stream_like(move |tx| async move {
            let mut last = first.clone();
            if tx.send(first).await.is_err() {
                return;
            }
            while progress.changed().await.is_ok() {
                let Ok(now) = depth(&st, &market, levels) else {
                    return;
                };
                if (&now.bids, &now.asks) != (&last.bids, &last.asks) {
                    last = now.clone();
                    if tx.send(now).await.is_err() {
                        return;
                    }
                }
            }
        }))
    }

    /// Changes of the caller's orders: accepted, filled, amended, cancelled.
    async fn my_order_updates(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = OrderUpdate>> {
        let account = principal(ctx)?.own_account()?;
        let mut rx = state(ctx).gateway.subscribe_account(account);
        Ok(async_stream_like(move |tx| async move {
            while let Some(record) = rx.recv().await {
                for update in order_updates(account, &record) {
                    if tx.send(update).await.is_err() {
                        return;
                    }
                }
            }
        }))
    }

    /// A provider's GPU samples as its nodes report them.
    async fn telemetry(
        &self,
        ctx: &Context<'_>,
        provider: ID,
        node: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = TelemetrySample>> {
        let provider = account_param(parse_account(Some(&provider))?.expect("given"))?;
        let mut rx = state(ctx).telemetry.subscribe();
        Ok(async_stream_like(move |tx| async move {
            loop {
                let samples = match rx.recv().await {
                    Ok(s) => s,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if samples.0 != provider {
                    continue;
                }
                for sample in &samples.1 {
                    if node.as_ref().is_none_or(|n| *n == sample.node)
                        && tx.send(sample.clone()).await.is_err()
                    {
                        return;
                    }
                }
            }
        }))
    }

    /// New leases on the caller's nodes (providers).
    async fn lease_offers(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = LeaseOffer>> {
        let p = principal(ctx)?;
        p.require(&[Role::Provider], "lease offers")?;
        let account = p.own_account()?;
        let mut rx = state(ctx).gateway.subscribe_account(account);
        Ok(async_stream_like(move |tx| async move {
            while let Some(record) = rx.recv().await {
                if let EventBody::Event(Event::LeaseCreated {
                    lease_id,
                    market,
                    provider,
                    node,
                    buyer,
                    gpus,
                    hours,
                    price,
                    ..
                }) = &record.body
                {
                    if *provider == account {
                        let offer = LeaseOffer {
                            lease_id: lease_id.0,
                            market: market.to_string(),
                            node: node.to_string(),
                            gpus: gpus.get(),
                            hours: hours.get(),
                            price: six(price.to_decimal()),
                            buyer: buyer.0,
                            at: to_time(record.at),
                        };
                        if tx.send(offer).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }))
    }
}

/// The next record for a subscriber; a subscriber too slow for the broadcast buffer loses
/// the records it missed (logged) and goes on, rather than holding everyone back.
async fn next(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<EventRecord>>,
) -> Option<Arc<EventRecord>> {
    loop {
        match rx.recv().await {
            Ok(record) => return Some(record),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "a subscription fell behind");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// A stream fed by a task through a small channel; the task ends when the client goes.
fn async_stream_like<T, F, Fut>(body: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(body(tx));
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Builds the schema with the limits.
pub fn schema(state: Arc<AppState>) -> MarketSchema {
    async_graphql::Schema::build(Query, Mutation, Subscription)
        .data(state.clone())
        .limit_depth(state.limits.max_depth)
        .limit_complexity(state.limits.max_complexity)
        .finish()
}

/// The schema in SDL, as published in `api/schema.graphql`.
pub fn sdl() -> String {
    async_graphql::Schema::build(Query, Mutation, Subscription)
        .finish()
        .sdl()
}
