//! Markets and their live books.

use async_graphql::{ComplexObject, Context, SimpleObject};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::errors::ApiError;
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
}

impl From<ledger::read::Market> for Market {
    fn from(m: ledger::read::Market) -> Market {
        Market {
            id: m.market.to_string(),
            tick: m.tick,
            fee_bps: m.fee_bps,
            created_at: m.created_at,
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
