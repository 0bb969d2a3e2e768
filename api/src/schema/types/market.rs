//! Markets and their live books.

use async_graphql::{ComplexObject, Context, InputObject, SimpleObject};
use chrono::{DateTime, Utc};
use contract::{Amount, ChargePeriod, MarketConfigFields, MarketId, ShortText};
use rust_decimal::Decimal;

use crate::errors::ApiError;
use crate::schema::input::money;
use crate::schema::{parse_market, six, state};
use crate::AppState;

#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Market {
    pub id: String,
    pub tick: Decimal,
    /// Basis points of each lease charge, paid by the provider.
    pub fee_bps: u32,
    pub created_at: DateTime<Utc>,
    /// Usage accrues, and invoices and statements show it, per charge period of this many
    /// seconds.
    pub charge_period_seconds: u32,
    /// A node silent for longer is failed: its leases end, its asks are withdrawn.
    pub heartbeat_timeout_ms: u32,
    /// How often a node's agent sends its signed report.
    pub report_interval_ms: u32,
    /// When `configureMarket` last set these (null: the defaults).
    pub configured_at: Option<DateTime<Utc>>,
}

impl From<ledger::read::Market> for Market {
    fn from(m: ledger::read::Market) -> Market {
        Market {
            id: m.market.to_string(),
            tick: m.tick,
            fee_bps: m.fee_bps,
            created_at: m.created_at,
            charge_period_seconds: m.config.charge_period.seconds(),
            heartbeat_timeout_ms: m.config.heartbeat_timeout_ms,
            report_interval_ms: m.config.report_interval_ms,
            configured_at: m.configured_at,
        }
    }
}

/// A market's parameters, for `configureMarket`. A field left out takes the market's
/// default (shown with each field), not the value the market has now.
#[derive(Debug, Clone, Default, InputObject)]
pub struct MarketConfigInput {
    /// Seconds per charge period, dividing a day (default 3600).
    pub charge_period_seconds: Option<u32>,
    /// How often agents report (default 10000 ms).
    pub report_interval_ms: Option<u32>,
    /// A node silent for longer fails; at least the report interval (default 30000 ms).
    pub heartbeat_timeout_ms: Option<u32>,
    /// Whether simulated GPUs may serve this market (default false).
    pub simulated: Option<bool>,
    /// The bond a provider posts per offered GPU, a decimal (default 0).
    pub bond_per_gpu: Option<String>,
    /// The share of a failed lease's bond slashed, in basis points (default 2500).
    pub slash_share_bps: Option<u32>,
    /// How long a released bond stays bonded (default 604800000 ms, seven days).
    pub unbonding_delay_ms: Option<u64>,
    /// How far a report's own time may lie from the market's clock (default 300000 ms).
    pub report_clock_window_ms: Option<u32>,
    /// The GPU model names (as NVML or ROCm SMI report them) of this market's class
    /// (default none; at most 64).
    pub model_names: Option<Vec<String>>,
}

impl MarketConfigInput {
    /// The checked configuration, or `VALIDATION` saying which rule it breaks.
    pub fn config(self) -> Result<contract::MarketConfig, ApiError> {
        let default = MarketConfigFields::default();
        let charge_period = match self.charge_period_seconds {
            None => default.charge_period,
            Some(s) => ChargePeriod::new(s)
                .map_err(|e| ApiError::validation(format!("chargePeriodSeconds: {e}")))?,
        };
        let bond_per_gpu = match &self.bond_per_gpu {
            None => default.bond_per_gpu,
            Some(b) => money("bondPerGpu", Amount::parse(b))?,
        };
        let slash_share_bps = match self.slash_share_bps {
            None => default.slash_share_bps,
            Some(bps) => u16::try_from(bps).map_err(|_| {
                ApiError::validation(format!("slashShareBps: at most 10000 (got {bps})"))
            })?,
        };
        let model_names = match &self.model_names {
            None => default.model_names,
            Some(names) => {
                if names.len() > contract::MarketConfig::MAX_MODEL_NAMES {
                    return Err(ApiError::validation(format!(
                        "modelNames: at most {}",
                        contract::MarketConfig::MAX_MODEL_NAMES
                    )));
                }
                names
                    .iter()
                    .map(|n| {
                        ShortText::parse(n)
                            .map_err(|e| ApiError::validation(format!("modelNames: {e}")))
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let fields = MarketConfigFields {
            charge_period,
            report_interval_ms: self
                .report_interval_ms
                .unwrap_or(default.report_interval_ms),
            heartbeat_timeout_ms: self
                .heartbeat_timeout_ms
                .unwrap_or(default.heartbeat_timeout_ms),
            simulated: self.simulated.unwrap_or(default.simulated),
            bond_per_gpu,
            slash_share_bps,
            unbonding_delay_ms: self
                .unbonding_delay_ms
                .unwrap_or(default.unbonding_delay_ms),
            report_clock_window_ms: self
                .report_clock_window_ms
                .unwrap_or(default.report_clock_window_ms),
            model_names,
        };
        contract::MarketConfig::new(fields)
            .map_err(|e| ApiError::validation(format!("config: {e}")))
    }
}

/// A market's parameters as the engine took them.
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct MarketConfig {
    pub market: String,
    pub charge_period_seconds: u32,
    pub report_interval_ms: u32,
    pub heartbeat_timeout_ms: u32,
    pub simulated: bool,
    pub bond_per_gpu: Decimal,
    pub slash_share_bps: u32,
    pub unbonding_delay_ms: u64,
    pub report_clock_window_ms: u32,
    pub model_names: Vec<String>,
}

impl MarketConfig {
    pub fn of(market: MarketId, config: &contract::MarketConfig) -> MarketConfig {
        MarketConfig {
            market: market.to_string(),
            charge_period_seconds: config.charge_period.seconds(),
            report_interval_ms: config.report_interval_ms,
            heartbeat_timeout_ms: config.heartbeat_timeout_ms,
            simulated: config.simulated,
            bond_per_gpu: six(config.bond_per_gpu.to_decimal()),
            slash_share_bps: u32::from(config.slash_share_bps),
            unbonding_delay_ms: config.unbonding_delay_ms,
            report_clock_window_ms: config.report_clock_window_ms,
            model_names: config.model_names.iter().map(|n| n.to_string()).collect(),
        }
    }
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

/// The best `levels` prices of each side of a market, from the replica.
pub fn depth(state: &AppState, market: &str, levels: i32) -> Result<Depth, ApiError> {
    if !(1..=1_000).contains(&levels) {
        return Err(ApiError::validation(format!(
            "levels must be between 1 and 1000 (got {levels})"
        )));
    }
    let id = parse_market(market)?;
    let as_of_event = state.engine.events_read();
    let engine = state.engine.replica();
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
