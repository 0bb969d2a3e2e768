//! The GraphQL schema. The roots live in their own modules: [`query`] (the ledger's read
//! models and the engine client's replica), [`mutation`] (commands for the engine, split by
//! what they act on) and [`subscription`] (feeds from the event log). The object types are
//! in [`types`], one module per subject; [`input`] turns arguments into commands and
//! [`answer`] turns the engine's answers into results. `api` holds no SQL: every read and
//! write of a table goes through `ledger::read` or `ledger::store`.

pub mod answer;
pub mod blobs;
pub mod input;
pub mod limits;
pub mod mutation;
pub mod query;
pub mod render;
pub mod subscription;
pub mod types;

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, ID};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use contract::{AccountId, MarketId, Timestamp};
use rust_decimal::Decimal;

use crate::auth::Principal;
use crate::errors::ApiError;
use crate::AppState;

pub use mutation::Mutation;
pub use subscription::Subscription;

/// The query root.
#[derive(Debug, Default, async_graphql::MergedObject)]
pub struct Query(query::MarketQuery, blobs::BlobQuery, render::RenderQuery);
pub type MarketSchema = async_graphql::Schema<Query, Mutation, Subscription>;

/// Builds the schema with the limits.
pub fn schema(state: Arc<AppState>) -> MarketSchema {
    let limits = state.config.limits.clone();
    async_graphql::Schema::build(Query::default(), Mutation::default(), Subscription)
        .data(state)
        .extension(limits::LimitsExtension(limits))
        .finish()
}

/// The schema in SDL, as published in `api/schema.graphql`: exactly what introspection
/// serves. async-graphql's SDL printer leaves out three things its introspection serves:
/// each scalar's `@specifiedBy` (an option), the description it gives the schema itself,
/// and directives the schema does not use beyond the spec's own (`@oneOf`, which not every
/// client knows); the latter two are asked for here.
/// Blocks on a runtime of its own: call it outside one.
pub fn sdl() -> String {
    let schema =
        async_graphql::Schema::build(Query::default(), Mutation::default(), Subscription).finish();
    let answer = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime for one query")
        .block_on(schema.execute(
            "{ __schema { description directives { name description isRepeatable locations \
             args { name } } } }",
        ));
    let served = answer.data.into_json().expect("a JSON answer")["__schema"].clone();
    let mut sdl =
        schema.sdl_with_options(async_graphql::SDLExportOptions::new().include_specified_by());
    let mut missing = String::new();
    for directive in served["directives"].as_array().into_iter().flatten() {
        let name = directive["name"].as_str().unwrap_or_default();
        // The spec's own directives are known to every client, printed or not.
        const SPECIFIED: [&str; 4] = ["include", "skip", "deprecated", "specifiedBy"];
        if SPECIFIED.contains(&name) || sdl.contains(&format!("directive @{name}")) {
            continue;
        }
        assert!(
            directive["args"].as_array().is_none_or(Vec::is_empty),
            "@{name} has arguments: print them here"
        );
        let locations: Vec<&str> = directive["locations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str())
            .collect();
        if let Some(text) = directive["description"].as_str() {
            missing.push_str(&format!("\"\"\"\n{text}\n\"\"\"\n"));
        }
        let repeatable = if directive["isRepeatable"] == true {
            " repeatable"
        } else {
            ""
        };
        missing.push_str(&format!(
            "directive @{name}{repeatable} on {}\n",
            locations.join(" | ")
        ));
    }
    let schema_block = match served["description"].as_str() {
        Some(text) => format!("{missing}\"\"\"\n{text}\n\"\"\"\nschema {{"),
        None => format!("{missing}schema {{"),
    };
    sdl = sdl.replacen("schema {", &schema_block, 1);
    sdl
}

/// A page of a list: the caller's `first` and `after`, and the connection it becomes.
pub type Page<T> = Connection<String, T, EmptyFields, EmptyFields>;

/// The most rows one page of a list returns.
pub const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 50;

pub(crate) fn state<'a>(ctx: &Context<'a>) -> &'a Arc<AppState> {
    ctx.data_unchecked::<Arc<AppState>>()
}

/// The caller, or `UNAUTHENTICATED`.
pub(crate) fn principal(ctx: &Context<'_>) -> Result<Principal, ApiError> {
    ctx.data_opt::<Principal>().copied().ok_or_else(|| {
        ApiError::unauthenticated("this needs an API key (Authorization: Bearer gpm_…)")
    })
}

pub(crate) fn page_size(first: Option<i32>) -> Result<u32, ApiError> {
    match first {
        None => Ok(DEFAULT_PAGE),
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::validation(format!("first must be between 1 and {MAX_PAGE} (got {n})"))
            }),
    }
}

/// A cursor: the row's key as numbers separated by `:`.
pub(crate) fn parse_cursor<const N: usize>(after: &str) -> Result<[i64; N], ApiError> {
    let malformed = || ApiError::validation(format!("malformed cursor {after:?}"));
    let mut parts = [0i64; N];
    let mut fields = after.split(':');
    for part in &mut parts {
        let field = fields.next().ok_or_else(malformed)?;
        if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            return Err(malformed());
        }
        *part = field.parse().map_err(|_| malformed())?;
    }
    if fields.next().is_some() {
        return Err(malformed());
    }
    Ok(parts)
}

/// The row key a list continues after.
pub(crate) fn key_cursor(after: Option<&str>) -> Result<ledger::read::Key, ApiError> {
    Ok(match after {
        None => ledger::read::Key::START,
        Some(after) => {
            let [partition, id] = parse_cursor::<2>(after)?;
            ledger::read::Key {
                partition: i32::try_from(partition)
                    .map_err(|_| ApiError::validation(format!("malformed cursor {after:?}")))?,
                id,
            }
        }
    })
}

/// A GraphQL connection from a page of the ledger's rows.
pub(crate) fn connection<R, T: async_graphql::OutputType>(
    page: ledger::read::Page<R>,
    had_cursor: bool,
    cursor: impl Fn(&R) -> String,
    node: impl Fn(R) -> T,
) -> Page<T> {
    let mut connection = Connection::new(had_cursor, page.more);
    connection.edges.extend(
        page.rows
            .into_iter()
            .map(|row| Edge::new(cursor(&row), node(row))),
    );
    connection
}

pub(crate) fn key_string(key: ledger::read::Key) -> String {
    format!("{}:{}", key.partition, key.id)
}

/// Newest-first lists of months continue below the cursor's month (days since 1970-01-01).
pub(crate) fn month_cursor(after: Option<&str>) -> Result<NaiveDate, ApiError> {
    let Some(after) = after else {
        return Ok(NaiveDate::from_ymd_opt(9999, 12, 31).expect("a date"));
    };
    let [_, days] = parse_cursor::<2>(after)?;
    u64::try_from(days)
        .ok()
        .and_then(|d| NaiveDate::default().checked_add_days(chrono::Days::new(d)))
        .ok_or_else(|| ApiError::validation(format!("malformed cursor {after:?}")))
}

pub(crate) fn month_string(period: NaiveDate) -> String {
    format!(
        "0:{}",
        period
            .signed_duration_since(NaiveDate::default())
            .num_days()
    )
}

pub(crate) fn parse_account(id: Option<&ID>) -> Result<Option<AccountId>, ApiError> {
    id.map(|id| AccountId::parse(id).map_err(|e| ApiError::validation(format!("account: {e}"))))
        .transpose()
}

/// The account a query reads: the caller's own, or the one finance and admin name.
pub(crate) fn account_to_read(
    ctx: &Context<'_>,
    account: Option<&ID>,
) -> Result<AccountId, ApiError> {
    principal(ctx)?.account_to_read(parse_account(account)?)
}

pub(crate) fn parse_market(market: &str) -> Result<MarketId, ApiError> {
    MarketId::parse(market).map_err(|e| ApiError::validation(format!("market: {e}")))
}

pub(crate) fn time_range(
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
pub(crate) fn six(value: Decimal) -> Decimal {
    let mut value = value;
    value.rescale(6);
    value
}

pub(crate) fn to_time(ts: Timestamp) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ts.0).single().unwrap_or_default()
}
