//! Placing, cancelling and amending orders.

use async_graphql::{Context, Object, ID};
use contract::{AccountId, ClientOrderId, Command, ErrorCode, Event, Gpus, Price};

use crate::auth::Role;
use crate::errors::ApiError;
use crate::schema::answer::{
    events, fills_of, order_result, AmendResult, CancelResult, OrderResult,
};
use crate::schema::input::{money, new_order, parse_order_id, PlaceOrderInput};
use crate::schema::{principal, six, state};
use crate::AppState;

#[derive(Debug, Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Places a bid (trader) or an ask (provider) and returns the engine's answer: accepted
    /// with its fills, or the typed rejection. A retry with the same `clientOrderId` (in any
    /// of its forms) returns the first answer (`replayed: true`), whatever happened to the
    /// order since, and never places a second order. A bid's leases are metered: charged by
    /// the engine's clock up to when they end (their term, `endLease`, or their node's
    /// failure), never by a number of hours anyone states.
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
    ) -> async_graphql::Result<OrderResult> {
        let p = principal(ctx)?;
        let echo = input.client_order_id.clone();
        let (order, options) = new_order(&p, input)?;
        let (account, client_id) = (order.account, order.client_id);
        let st = state(ctx);
        let answer = st
            .engine
            .submit(Command::PlaceWith { order, options })
            .await?;
        match events(answer) {
            Ok(events) => Ok(order_result((account, client_id), echo, &events, false)?),
            Err(e) if e.code == ErrorCode::DuplicateClientOrderId => {
                Ok(first_answer(st, account, client_id, echo).await?)
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
            .engine
            .submit(Command::Cancel {
                account: p.own_account()?,
                order_id,
            })
            .await?;
        // The caller's order, not the first cancel: expiries due before the command come
        // first in its answer.
        events(answer)?
            .iter()
            .find_map(|e| match e {
                Event::OrderCancelled {
                    order_id: id,
                    remaining,
                    released,
                    ..
                } if *id == order_id => Some(CancelResult {
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
            .engine
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
                    order_id: id,
                    price,
                    remaining,
                    priority_kept,
                    ..
                } if *id == order_id => Some(AmendResult {
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
}

/// The first answer to a retried order, as its result.
async fn first_answer(
    state: &AppState,
    account: AccountId,
    client_id: ClientOrderId,
    echo: String,
) -> Result<OrderResult, ApiError> {
    let answer = first_answer_events(state, account, client_id).await?;
    order_result((account, client_id), echo, &answer, true)
}

/// The first answer to an order placed before under `client_id`: the projection says where
/// the order's `OrderAccepted` is in the log (waiting, within the answer timeout, for it to
/// get there), and the engine client reads that answer's records back, so the result is
/// computed from exactly what the engine answered then.
pub(crate) async fn first_answer_events(
    state: &AppState,
    account: AccountId,
    client_id: ClientOrderId,
) -> Result<Vec<Event>, ApiError> {
    let deadline = tokio::time::Instant::now() + state.config.answer_timeout;
    loop {
        let placement = state
            .db(move |c| ledger::read::placement(c, account, client_id))
            .await?;
        if let Some(placement) = placement {
            let records = state.engine.answer_at(placement.accepted_seq).await?;
            return events(records.into_iter().map(|r| r.body).collect());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                ErrorCode::EngineTimeout,
                "the client order id was used before, but its order is not in the read models yet",
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
