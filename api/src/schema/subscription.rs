//! The subscription root: feeds from the event log as the engine client reads it.

use std::sync::Arc;

use async_graphql::{Context, SimpleObject, Subscription as GraphQLSubscription, ID};
use chrono::{DateTime, Utc};
use contract::codec::{EventBody, EventRecord};
use contract::{AccountId, Event, NodeId};
use futures_util::Stream;
use rust_decimal::Decimal;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::Role;
use crate::schema::input::parse_name;
use crate::schema::types::market::{depth, Depth};
use crate::schema::types::order::{rebid_of, Trade};
use crate::schema::types::provider::TelemetrySample;
use crate::schema::{parse_account, parse_market, principal, six, state, to_time};

/// A change of one of the caller's orders.
#[derive(Debug, Clone, SimpleObject)]
pub struct OrderUpdate {
    pub order_id: u64,
    /// `accepted`, `filled`, `amended`, `cancelled`, or `rebid`: the engine placed this
    /// order for the unused hours of the caller's lease `leaseId`, which failed through its
    /// provider (the order's `accepted`, and any fills, follow).
    pub change: String,
    /// GPUs still open after the change (0 for `rebid`: the order is not in the book yet).
    pub remaining: u32,
    pub price: Option<Decimal>,
    /// The lease a fill made; for `rebid`, the failed lease.
    pub lease_id: Option<u64>,
    /// The failed lease this order re-bids (on its `rebid` and `accepted`).
    pub rebid_of: Option<u64>,
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
    let update =
        |order_id: contract::OrderId, change: &str, remaining, price, lease_id| OrderUpdate {
            order_id: order_id.0,
            change: change.to_owned(),
            remaining,
            price,
            lease_id,
            rebid_of: None,
            at,
        };
    match event {
        Event::OrderAccepted {
            order_id, order, ..
        } if order.account == account => vec![OrderUpdate {
            rebid_of: rebid_of(order.client_id),
            ..update(
                *order_id,
                "accepted",
                order.gpus.get(),
                Some(six(order.price.to_decimal())),
                None,
            )
        }],
        Event::OrderRebid {
            lease_id,
            buyer,
            order_id,
            ..
        } if *buyer == account => vec![OrderUpdate {
            rebid_of: Some(lease_id.0),
            ..update(*order_id, "rebid", 0, None, Some(lease_id.0))
        }],
        Event::OrderAmended {
            order_id,
            account: a,
            price,
            remaining,
            ..
        } if *a == account => vec![update(
            *order_id,
            "amended",
            remaining.get(),
            Some(six(price.to_decimal())),
            None,
        )],
        Event::OrderCancelled {
            order_id,
            account: a,
            remaining,
            ..
        } if *a == account => vec![update(*order_id, "cancelled", *remaining, None, None)],
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
        .map(|(_, order_id, remaining)| {
            update(
                order_id,
                "filled",
                remaining,
                Some(six(price.to_decimal())),
                Some(lease_id.0),
            )
        })
        .collect(),
        _ => Vec::new(),
    }
}

#[derive(Debug)]
pub struct Subscription;

#[GraphQLSubscription]
impl Subscription {
    /// Every fill of a market as it happens.
    async fn trades(
        &self,
        ctx: &Context<'_>,
        market: String,
    ) -> async_graphql::Result<impl Stream<Item = Trade>> {
        let id = parse_market(&market)?;
        let mut rx = state(ctx).engine.subscribe();
        Ok(fed_by(move |tx| async move {
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
                    if *m != id {
                        continue;
                    }
                    let trade = Trade {
                        key: ledger::read::Key::default(),
                        lease_id: lease_id.0,
                        market: m.to_string(),
                        price: six(price.to_decimal()),
                        gpus: gpus.get(),
                        hours: hours.get(),
                        taker: taker.as_str().to_owned(),
                        at: to_time(record.at),
                    };
                    if tx.send(trade).await.is_err() {
                        return;
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
        let mut progress = st.engine.progress();
        Ok(fed_by(move |tx| async move {
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

    /// Changes of the caller's orders: accepted, filled, amended, cancelled, and the
    /// re-bids the engine places for the caller's failed leases.
    async fn my_order_updates(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = OrderUpdate>> {
        let account = principal(ctx)?.own_account()?;
        let mut rx = state(ctx).engine.subscribe_account(account);
        Ok(fed_by(move |tx| async move {
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
        let provider = parse_account(Some(&provider))?.expect("given");
        let node = node
            .map(|n| parse_name::<NodeId>("node", &n))
            .transpose()?
            .map(|n| n.to_string());
        let mut rx = state(ctx).telemetry.subscribe();
        Ok(fed_by(move |tx| async move {
            loop {
                let samples = match rx.recv().await {
                    Ok(s) => s,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
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

    /// A render job of the caller's each time it changes (frames rendered, checked,
    /// accepted), the last when it is done.
    async fn render_job_updates(
        &self,
        ctx: &Context<'_>,
        job_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = crate::schema::render::RenderJob>> {
        Ok(crate::schema::render::updates(ctx, job_id).await?)
    }

    /// New leases on the caller's nodes (providers).
    async fn lease_offers(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = LeaseOffer>> {
        let p = principal(ctx)?;
        p.require(&[Role::Provider], "lease offers")?;
        let account = p.own_account()?;
        let mut rx = state(ctx).engine.subscribe_account(account);
        Ok(fed_by(move |tx| async move {
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
                    if *provider != account {
                        continue;
                    }
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
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "a subscription fell behind");
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

/// A stream fed by a task through a small channel; the task ends when the client goes.
fn fed_by<T, F, Fut>(body: F) -> impl Stream<Item = T>
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
