//! The engine's answers as mutation results. Each result is computed from the answer's
//! records only, so the first answer to a command and its replay read the same.

use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};
use contract::codec::EventBody;
use contract::{
    AccountId, Amount, ClientOrderId, ErrorCode, Event, LeaseId, OrderId, OrderStatus as Status,
};
use rust_decimal::Decimal;

use crate::errors::ApiError;
use crate::schema::types::order::OrderStatus;
use crate::schema::{six, to_time};

/// The events of an answer, or its rejection as the error.
pub fn events(answer: Vec<EventBody>) -> Result<Vec<Event>, ApiError> {
    answer
        .into_iter()
        .map(|body| match body {
            EventBody::Event(e) => Ok(e),
            EventBody::Rejected(r) => Err(ApiError::rejected(&r)),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct Fill {
    pub lease_id: u64,
    pub price: Decimal,
    pub gpus: u32,
    pub hours: u32,
    pub cost: Decimal,
    /// The other side's order.
    pub counter_order_id: u64,
}

/// The fills of `order_id` among `events`.
pub fn fills_of(order_id: OrderId, events: &[Event]) -> Vec<Fill> {
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

/// The engine's answer to an order.
#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct OrderResult {
    pub order_id: u64,
    /// As this request gave it.
    pub client_order_id: String,
    pub status: OrderStatus,
    pub remaining: u32,
    pub fills: Vec<Fill>,
    /// Why the rest was cancelled (`immediate_remainder` for IOC, `self_trade`, ...).
    pub cancel_reason: Option<String>,
    /// True when this is the answer to an earlier request with the same client order id.
    pub replayed: bool,
}

/// The result of `account`'s order `client_id` in an answer: the answer to a `Place`, or
/// (replayed) the first answer read back. The caller's own `OrderAccepted` is looked for,
/// not the first one: deadlines that fell due before the command come first in its answer,
/// and one of them may be a re-bid the engine placed for another account.
pub fn order_result(
    (account, client_id): (AccountId, ClientOrderId),
    echo: String,
    events: &[Event],
    replayed: bool,
) -> Result<OrderResult, ApiError> {
    let (order_id, gpus) = events
        .iter()
        .find_map(|e| match e {
            Event::OrderAccepted {
                order_id, order, ..
            } if order.account == account && order.client_id == client_id => {
                Some((*order_id, order.gpus.get()))
            }
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
    let cancelled = cancel_reason.is_some();
    let remaining = if cancelled { 0 } else { gpus - filled };
    Ok(OrderResult {
        order_id: order_id.0,
        client_order_id: echo,
        status: Status::of(remaining, cancelled).into(),
        remaining,
        fills,
        cancel_reason,
        replayed,
    })
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

#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct MoneyResult {
    pub account: u64,
    pub amount: Decimal,
    /// True when this is the answer to an earlier request with the same idempotency key:
    /// nothing moved this time.
    pub replayed: bool,
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

/// How a lease ended: why, up to when the engine charged it, and where its money went.
#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct LeaseEndResult {
    pub lease_id: u64,
    /// Why, as the engine judged it (`buyer_stopped`, `provider_stopped`, `operator`, ...).
    pub cause: String,
    pub ended_at: DateTime<Utc>,
    /// Charged up to here: now when the buyer or the operator stops it, the last heartbeat
    /// that showed it healthy when its provider does.
    pub charged_until: DateTime<Utc>,
    pub charged_ms: u64,
    /// The charged time in hours, rounded down to six places (for display).
    pub hours_used: Decimal,
    /// Price × GPUs × charged time, each charge period's part rounded down to the
    /// micro-unit (the engine's one rule, `contract::market`).
    pub charged: Decimal,
    pub refunded: Decimal,
    pub provider_earned: Decimal,
    /// The bid the engine placed for the unused hours (a provider failure of a bid placed
    /// with `rebidOnFailure`).
    pub rebid_order_id: Option<u64>,
}

/// The end of lease `lease` among an answer's events: its `LeaseClosed` and the
/// `LeaseEnded` that moved its money (a stop the money cannot follow is refused, so both are
/// in the answer), and its re-bid if one was placed. Other leases' ends may come first
/// (deadlines that fell due before the command).
pub fn lease_end(lease: LeaseId, events: &[Event]) -> Result<LeaseEndResult, ApiError> {
    let closed = events.iter().find_map(|e| match e {
        Event::LeaseClosed {
            lease_id,
            cause,
            ended_at,
            charged_until,
            charged_ms,
            ..
        } if *lease_id == lease => Some((*lease_id, cause, *ended_at, *charged_until, *charged_ms)),
        _ => None,
    });
    let Some((lease, cause, ended_at, charged_until, charged_ms)) = closed else {
        return Err(ApiError::internal("the engine closed no lease"));
    };
    let rebid_order_id = events.iter().find_map(|e| match e {
        Event::OrderRebid {
            lease_id, order_id, ..
        } if *lease_id == lease => Some(order_id.0),
        _ => None,
    });
    events
        .iter()
        .find_map(|e| match e {
            Event::LeaseEnded {
                lease_id,
                hours_used,
                charged,
                refunded,
                provider_earned,
                ..
            } if *lease_id == lease => Some(LeaseEndResult {
                lease_id: lease.0,
                cause: cause.as_str().to_owned(),
                ended_at: to_time(ended_at),
                charged_until: to_time(charged_until),
                charged_ms,
                hours_used: *hours_used,
                charged: six(charged.to_decimal()),
                refunded: six(refunded.to_decimal()),
                provider_earned: six(provider_earned.to_decimal()),
                rebid_order_id,
            }),
            _ => None,
        })
        .ok_or_else(|| ApiError::internal("the engine closed the lease but moved no money"))
}

/// The result of a money command: its own answer, or, for a retry the engine answered
/// `ALREADY_APPLIED` (same key, same content), the same result marked `replayed`.
pub fn money_result(
    answer: Vec<EventBody>,
    account: AccountId,
    amount: Amount,
) -> Result<MoneyResult, ApiError> {
    let replayed = match events(answer) {
        Ok(_) => false,
        Err(e) if e.code == ErrorCode::AlreadyApplied => true,
        Err(e) => return Err(e),
    };
    Ok(MoneyResult {
        account: account.0,
        amount: six(amount.to_decimal()),
        replayed,
    })
}
