//! Orders, their changes and explanations, and trades.

use async_graphql::{ComplexObject, Context, Enum, SimpleObject};
use chrono::{DateTime, Utc};
use contract::{ClientOrderId, OrderId, OrderStatus as Status};
use ledger::read::Key;
use rust_decimal::Decimal;

use crate::schema::{six, state};

/// Where an order stands (`contract::OrderStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "contract::OrderStatus")]
pub enum OrderStatus {
    Open,
    Filled,
    Cancelled,
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

#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Order {
    #[graphql(skip)]
    pub key: Key,
    pub id: u64,
    pub account: u64,
    pub client_order_id: String,
    pub market: String,
    pub side: String,
    pub price: Decimal,
    pub gpus: u32,
    pub remaining: u32,
    pub time_in_force: String,
    /// A bid's lease length in hours.
    pub hours: Option<u32>,
    /// An ask's node and region.
    pub node: Option<String>,
    pub region: Option<String>,
    /// The provider reputation an ask carries (0 for bids).
    pub reputation: u32,
    pub status: String,
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The lease whose provider failure placed this bid (the engine re-bid its unused
    /// hours); that lease's `rebidOrder` is this order.
    pub rebid_of: Option<u64>,
}

impl From<ledger::read::Order> for Order {
    fn from(o: ledger::read::Order) -> Order {
        Order {
            key: o.key,
            id: o.id.0,
            account: o.account.0,
            client_order_id: o.client_order_id.to_string(),
            market: o.market.to_string(),
            side: o.side.as_str().to_owned(),
            price: o.price,
            gpus: o.gpus,
            remaining: o.remaining,
            time_in_force: o.time_in_force,
            hours: o.hours,
            node: o.node.map(|n| n.to_string()),
            region: o.region.map(|r| r.to_string()),
            reputation: o.reputation,
            status: o.status.as_str().to_owned(),
            cancel_reason: o.cancel_reason.map(|c| c.as_str().to_owned()),
            created_at: o.created_at,
            updated_at: o.updated_at,
            rebid_of: rebid_of(o.client_order_id),
        }
    }
}

/// The failed lease an order re-bids, read from its client id: the engine places re-bids
/// with `ClientOrderId::rebid(lease)`, and refuses ids in that range from anyone else.
pub fn rebid_of(client_id: ClientOrderId) -> Option<u64> {
    client_id.is_reserved().then_some(client_id.0 as u64)
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

impl From<contract::Explanation> for Explanation {
    fn from(explanation: contract::Explanation) -> Explanation {
        Explanation {
            skipped: explanation
                .skipped
                .into_iter()
                .map(|s| {
                    // An exclusion serializes as its name, or as {name: values}.
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
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct OrderChange {
    pub event_seq: u64,
    /// `accepted`, `filled`, `amended` or `cancelled`.
    pub change: String,
    pub price: Option<Decimal>,
    pub remaining: u32,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<ledger::read::OrderChange> for OrderChange {
    fn from(c: ledger::read::OrderChange) -> OrderChange {
        OrderChange {
            event_seq: c.event_seq,
            change: c.change.as_str().to_owned(),
            price: c.price,
            remaining: c.remaining,
            detail: c.detail,
            at: c.at,
        }
    }
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
        if self.status != Status::Open.as_str() {
            return Ok(None);
        }
        let limit = usize::try_from(limit.clamp(1, 200)).unwrap_or(20);
        let engine = state(ctx).engine.replica();
        // Err: the projection still shows it open, the engine has moved on.
        Ok(engine
            .explain(OrderId(self.id), limit)
            .ok()
            .map(Explanation::from))
    }

    /// Every change of the order, oldest first.
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn history(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<OrderChange>> {
        let key = self.key;
        let changes = state(ctx)
            .db(move |c| ledger::read::order_history(c, key))
            .await?;
        Ok(changes.into_iter().map(OrderChange::from).collect())
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Trade {
    #[graphql(skip)]
    pub key: Key,
    pub lease_id: u64,
    pub market: String,
    pub price: Decimal,
    pub gpus: u32,
    pub hours: u32,
    /// Which side took liquidity (`bid` or `ask`).
    pub taker: String,
    pub at: DateTime<Utc>,
}

impl From<ledger::read::Trade> for Trade {
    fn from(t: ledger::read::Trade) -> Trade {
        Trade {
            key: t.key,
            lease_id: t.lease_id.0,
            market: t.market.to_string(),
            price: t.price,
            gpus: t.gpus,
            hours: t.hours,
            taker: t.taker.as_str().to_owned(),
            at: t.at,
        }
    }
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
