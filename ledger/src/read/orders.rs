//! Orders, their history, trades, and where an order's first answer is in the log.

use chrono::{DateTime, Utc};
use contract::{
    AccountId, CancelReason, ClientOrderId, LeaseId, MarketId, NodeId, OrderId, OrderStatus,
    Region, Side,
};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Numeric, Text, Timestamptz};
use rust_decimal::Decimal;

use super::{param, parsed, plus_one, unsigned, Key, Page};
use crate::LedgerError;

/// An order as the projection holds it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub key: Key,
    pub id: OrderId,
    pub account: AccountId,
    /// In its canonical form (a decimal).
    pub client_order_id: ClientOrderId,
    pub market: MarketId,
    pub side: Side,
    pub price: Decimal,
    pub gpus: u32,
    pub remaining: u32,
    /// `gtc`, `gtt`, `ioc` or `fok`.
    pub time_in_force: String,
    /// A bid's lease length.
    pub hours: Option<u32>,
    /// An ask's node and region.
    pub node: Option<NodeId>,
    pub region: Option<Region>,
    /// The reputation an ask carries (0 for bids).
    pub reputation: u32,
    pub status: OrderStatus,
    pub cancel_reason: Option<CancelReason>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which of an account's orders to list.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderFilter {
    pub account: AccountId,
    pub market: Option<MarketId>,
    pub status: Option<OrderStatus>,
}

#[derive(QueryableByName)]
struct OrderRow {
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    order_id: i64,
    #[diesel(sql_type = BigInt)]
    account: i64,
    #[diesel(sql_type = Text)]
    client_id: String,
    #[diesel(sql_type = Text)]
    market: String,
    #[diesel(sql_type = Text)]
    side: String,
    #[diesel(sql_type = Numeric)]
    price: Decimal,
    #[diesel(sql_type = Integer)]
    gpus: i32,
    #[diesel(sql_type = Integer)]
    remaining: i32,
    #[diesel(sql_type = Text)]
    tif: String,
    #[diesel(sql_type = Nullable<Integer>)]
    hours: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    node: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    region: Option<String>,
    #[diesel(sql_type = Integer)]
    reputation: i32,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    cancel_reason: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
}

impl TryFrom<OrderRow> for Order {
    type Error = LedgerError;
    fn try_from(r: OrderRow) -> Result<Order, LedgerError> {
        const T: &str = "orders";
        Ok(Order {
            key: Key {
                partition: r.partition,
                id: r.order_id,
            },
            id: OrderId(unsigned(T, "order_id", r.order_id)?),
            account: AccountId(unsigned(T, "account", r.account)?),
            client_order_id: parsed(T, "client_id", &r.client_id)?,
            market: parsed(T, "market", &r.market)?,
            side: parsed(T, "side", &r.side)?,
            price: r.price,
            gpus: unsigned(T, "gpus", r.gpus)?,
            remaining: unsigned(T, "remaining", r.remaining)?,
            time_in_force: r.tif,
            hours: r.hours.map(|h| unsigned(T, "hours", h)).transpose()?,
            node: r.node.map(|n| parsed(T, "node", &n)).transpose()?,
            region: r.region.map(|n| parsed(T, "region", &n)).transpose()?,
            reputation: unsigned(T, "reputation", r.reputation)?,
            status: parsed(T, "status", &r.status)?,
            cancel_reason: r
                .cancel_reason
                .map(|c| parsed(T, "cancel_reason", &c))
                .transpose()?,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// An account's orders, oldest first, after `after`.
pub fn orders(
    conn: &mut PgConnection,
    filter: &OrderFilter,
    after: Key,
    limit: u32,
) -> Result<Page<Order>, LedgerError> {
    let rows: Vec<OrderRow> = diesel::sql_query(
        "SELECT partition, order_id, account, client_id, market, side, price, gpus, remaining, \
         tif, hours, node, region, reputation, status, cancel_reason, created_at, updated_at \
         FROM orders WHERE account = $1 AND ($2::text IS NULL OR market = $2) \
         AND ($3::text IS NULL OR status = $3) AND (partition, order_id) > ($4, $5) \
         ORDER BY partition, order_id LIMIT $6",
    )
    .bind::<BigInt, _>(param(filter.account.0)?)
    .bind::<Nullable<Text>, _>(filter.market.map(|m| m.to_string()))
    .bind::<Nullable<Text>, _>(filter.status.map(OrderStatus::as_str))
    .bind::<Integer, _>(after.partition)
    .bind::<BigInt, _>(after.id)
    .bind::<BigInt, _>(plus_one(limit))
    .load(conn)?;
    let rows = rows
        .into_iter()
        .map(Order::try_from)
        .collect::<Result<_, _>>()?;
    Ok(Page::of(rows, limit))
}

/// What changed an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderChangeKind {
    Accepted,
    Filled,
    Amended,
    Cancelled,
}

impl OrderChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderChangeKind::Accepted => "accepted",
            OrderChangeKind::Filled => "filled",
            OrderChangeKind::Amended => "amended",
            OrderChangeKind::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for OrderChangeKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        [
            OrderChangeKind::Accepted,
            OrderChangeKind::Filled,
            OrderChangeKind::Amended,
            OrderChangeKind::Cancelled,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or(())
    }
}

/// One change of an order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderChange {
    pub event_seq: u64,
    pub change: OrderChangeKind,
    /// Accepted and amended: the order's price; filled: the trade's; cancelled: none.
    pub price: Option<Decimal>,
    pub remaining: u32,
    /// Filled: the GPUs of the fill; amended: the hold change; cancelled: the reason.
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// Every change of an order, oldest first.
pub fn order_history(conn: &mut PgConnection, order: Key) -> Result<Vec<OrderChange>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        event_seq: i64,
        #[diesel(sql_type = Text)]
        change: String,
        #[diesel(sql_type = Nullable<Numeric>)]
        price: Option<Decimal>,
        #[diesel(sql_type = Integer)]
        remaining: i32,
        #[diesel(sql_type = Nullable<Text>)]
        detail: Option<String>,
        #[diesel(sql_type = Timestamptz)]
        at: DateTime<Utc>,
    }
    const T: &str = "order_history";
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT event_seq, change, price, remaining, detail, at FROM order_history \
         WHERE partition = $1 AND order_id = $2 ORDER BY event_seq",
    )
    .bind::<Integer, _>(order.partition)
    .bind::<BigInt, _>(order.id)
    .load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(OrderChange {
                event_seq: unsigned(T, "event_seq", r.event_seq)?,
                change: parsed(T, "change", &r.change)?,
                price: r.price,
                remaining: unsigned(T, "remaining", r.remaining)?,
                detail: r.detail,
                at: r.at,
            })
        })
        .collect()
}

/// Where the answer to the command that placed an order begins in the events partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub order: OrderId,
    pub partition: u32,
    /// The order's `OrderAccepted` record: the answer's records about the order start here.
    pub accepted_seq: u64,
}

/// The order an account placed with `client_id`, if the projection has it.
pub fn placement(
    conn: &mut PgConnection,
    account: AccountId,
    client_id: ClientOrderId,
) -> Result<Option<Placement>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        partition: i32,
        #[diesel(sql_type = BigInt)]
        order_id: i64,
        #[diesel(sql_type = BigInt)]
        event_seq: i64,
    }
    const T: &str = "order_history";
    let row: Option<Row> = diesel::sql_query(
        "SELECT o.partition, o.order_id, h.event_seq FROM orders o \
         JOIN order_history h ON h.partition = o.partition AND h.order_id = o.order_id \
         AND h.change = 'accepted' WHERE o.account = $1 AND o.client_id = $2",
    )
    .bind::<BigInt, _>(param(account.0)?)
    .bind::<Text, _>(client_id.to_string())
    .get_result(conn)
    .optional()?;
    row.map(|r| {
        Ok(Placement {
            order: OrderId(unsigned(T, "order_id", r.order_id)?),
            partition: unsigned(T, "partition", r.partition)?,
            accepted_seq: unsigned(T, "event_seq", r.event_seq)?,
        })
    })
    .transpose()
}

/// A fill: one trade, one lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    pub key: Key,
    pub lease_id: LeaseId,
    pub market: MarketId,
    pub price: Decimal,
    pub gpus: u32,
    pub hours: u32,
    /// The side that took liquidity.
    pub taker: Side,
    pub at: DateTime<Utc>,
}

/// Which trades to list: one market or all, within `[from, to)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeFilter {
    pub market: Option<MarketId>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Trades, oldest first, after `after`.
pub fn trades(
    conn: &mut PgConnection,
    filter: &TradeFilter,
    after: Key,
    limit: u32,
) -> Result<Page<Trade>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        partition: i32,
        #[diesel(sql_type = BigInt)]
        lease_id: i64,
        #[diesel(sql_type = Text)]
        market: String,
        #[diesel(sql_type = Numeric)]
        price: Decimal,
        #[diesel(sql_type = Integer)]
        gpus: i32,
        #[diesel(sql_type = Integer)]
        hours: i32,
        #[diesel(sql_type = Text)]
        taker: String,
        #[diesel(sql_type = Timestamptz)]
        at: DateTime<Utc>,
    }
    const T: &str = "trades";
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT partition, lease_id, market, price, gpus, hours, taker, at FROM trades \
         WHERE ($1::text IS NULL OR market = $1) AND at >= $2 AND at < $3 \
         AND (partition, lease_id) > ($4, $5) ORDER BY partition, lease_id LIMIT $6",
    )
    .bind::<Nullable<Text>, _>(filter.market.map(|m| m.to_string()))
    .bind::<Timestamptz, _>(filter.from)
    .bind::<Timestamptz, _>(filter.to)
    .bind::<Integer, _>(after.partition)
    .bind::<BigInt, _>(after.id)
    .bind::<BigInt, _>(plus_one(limit))
    .load(conn)?;
    let rows = rows
        .into_iter()
        .map(|r| {
            Ok(Trade {
                key: Key {
                    partition: r.partition,
                    id: r.lease_id,
                },
                lease_id: LeaseId(unsigned(T, "lease_id", r.lease_id)?),
                market: parsed(T, "market", &r.market)?,
                price: r.price,
                gpus: unsigned(T, "gpus", r.gpus)?,
                hours: unsigned(T, "hours", r.hours)?,
                taker: parsed(T, "taker", &r.taker)?,
                at: r.at,
            })
        })
        .collect::<Result<_, LedgerError>>()?;
    Ok(Page::of(rows, limit))
}
