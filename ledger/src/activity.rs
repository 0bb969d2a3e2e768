//! The market's activity as a projection: markets, orders (current state and history),
//! trades, leases and billing (usage lines, invoices, provider earnings). The top of each
//! book is the `top_of_book` view over the open orders.
//!
//! A batch folds its events in memory first: an order or lease created in the batch is
//! written once in its final state, and one that existed before gets one patch with its
//! latest values (events state remaining quantities absolutely, so no row is read back).
//!
//! Billing follows the money's two steps. A metered lease's usage lands as it accrues: each
//! `LeaseAccrued` is one usage line (one lease, one charge period, in the period's month), and
//! the buyer's invoice and the provider's earnings of that month grow with it, while the
//! lease still runs. Its `LeaseEnded`, which moves the money, settles its lines; until then
//! they are revenue accrued but not settled. A lease ended by the old `EndLease` (no
//! accruals) gets one line at its end, as before. Lines are written in SQL joined with
//! their lease rows after those rows are final, so a line always carries the lease's own
//! region, and one that contradicts its lease (other terms, a period accrued twice, an
//! accrual after the lease closed, settled sums that are not the end's) stops the projector.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use contract::codec::{EventBody, EventRecord};
use contract::{hours_of_ms, Event, LeaseEndCause, MarketConfig, OrderTerms, TimeInForce};
use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Numeric, Text, Timestamptz};
use rust_decimal::Decimal;

use crate::columns::{amount, fit, fit_i32, micros_sum, price, timestamp};
use crate::projector::{Projection, Refusal};
use crate::LedgerError;

/// Markets, orders, trades, leases and billing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Activity;

#[derive(Debug)]
struct OrderRow {
    account: i64,
    client_id: String,
    market: String,
    side: &'static str,
    price: Decimal,
    gpus: i32,
    tif: &'static str,
    expires_at: Option<DateTime<Utc>>,
    post_only: bool,
    hours: Option<i32>,
    node: Option<String>,
    region: Option<String>,
    reputation: i32,
    hold: Decimal,
    change: OrderChange,
    created_at: DateTime<Utc>,
}

/// The latest values of an order that changed in the batch.
#[derive(Debug, Clone)]
struct OrderChange {
    /// `None`: the price did not change in this batch.
    price: Option<Decimal>,
    remaining: i32,
    status: &'static str,
    cancel_reason: Option<&'static str>,
    at: DateTime<Utc>,
    seq: i64,
}

#[derive(Debug)]
struct LeaseRow {
    market: String,
    buyer: i64,
    provider: i64,
    node: String,
    bid_order: i64,
    ask_order: i64,
    gpus: i32,
    price: Decimal,
    hours: i32,
    cost: Decimal,
    created_at: DateTime<Utc>,
    change: LeaseChange,
}

/// What happened to a lease after its creation, as far as the batch knows.
#[derive(Debug, Clone, Default)]
struct LeaseChange {
    status: Option<&'static str>,
    started_at: Option<DateTime<Utc>>,
    start_delay_ms: Option<i64>,
    close: Option<LeaseClose>,
    end: Option<LeaseEnd>,
    rebid_order: Option<i64>,
    /// The code of the rejection that refused the re-bid.
    rebid_refused: Option<&'static str>,
    /// Its buyer holds its payment for review until then.
    payment_held_until: Option<DateTime<Utc>>,
}

/// A metered lease's `LeaseClosed`.
#[derive(Debug, Clone)]
struct LeaseClose {
    seq: i64,
    cause: &'static str,
    /// What the engine judged the cause by: the node's last heartbeat, the report's
    /// sequence number, or the operator's reason.
    detail: Option<String>,
    ended_at: DateTime<Utc>,
    charged_until: DateTime<Utc>,
    charged_ms: i64,
}

#[derive(Debug, Clone)]
struct LeaseEnd {
    seq: i64,
    command_offset: i64,
    at: DateTime<Utc>,
    hours_used: Decimal,
    charged: Decimal,
    fee: Decimal,
    provider_earned: Decimal,
    refunded: Decimal,
    reason: &'static str,
}

#[derive(Debug)]
struct HistoryRow {
    seq: i64,
    order_id: i64,
    change: &'static str,
    price: Option<Decimal>,
    remaining: i32,
    detail: Option<String>,
    at: DateTime<Utc>,
}

#[derive(Debug)]
struct TradeRow {
    lease_id: i64,
    seq: i64,
    market: String,
    price: Decimal,
    gpus: i32,
    hours: i32,
    buyer: i64,
    provider: i64,
    bid_order: i64,
    ask_order: i64,
    taker: &'static str,
    at: DateTime<Utc>,
}

#[derive(Debug)]
struct MarketRow {
    market: String,
    tick: Decimal,
    fee_bps: i32,
    seq: i64,
    at: DateTime<Utc>,
}

/// A market's configuration as its row keeps it.
#[derive(Debug)]
struct ConfigRow {
    seq: i64,
    at: DateTime<Utc>,
    charge_period_s: i32,
    heartbeat_timeout_ms: i32,
    /// The whole configuration in the contract's JSON form.
    json: String,
}

/// One `LeaseAccrued`: a usage line to be.
#[derive(Debug)]
struct AccrualRow {
    lease_id: i64,
    seq: i64,
    command_offset: i64,
    market: String,
    buyer: i64,
    provider: i64,
    node: String,
    gpus: i32,
    price: Decimal,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// The charged time in hours and GPU-hours, rounded down to six places as the contract
    /// rounds every quantity it shows (`hours_of_ms`).
    hours: Decimal,
    gpu_hours: Decimal,
    charged: Decimal,
    fee: Decimal,
    provider_earned: Decimal,
}

/// A batch of activity, folded by order and lease.
#[derive(Debug, Default)]
pub struct ActivityBatch {
    markets: Vec<MarketRow>,
    /// The latest configuration of each market configured in the batch.
    configs: BTreeMap<String, ConfigRow>,
    accruals: Vec<AccrualRow>,
    new_orders: BTreeMap<i64, OrderRow>,
    order_changes: BTreeMap<i64, OrderChange>,
    history: Vec<HistoryRow>,
    trades: Vec<TradeRow>,
    new_leases: BTreeMap<i64, LeaseRow>,
    lease_changes: BTreeMap<i64, LeaseChange>,
    /// The chain bridge's and the bonds' events, in order: rare, so written one by one.
    settlement: Vec<(i64, DateTime<Utc>, Event)>,
    /// The latest event time of the batch: the partition's clock.
    clock: Option<DateTime<Utc>>,
}

impl ActivityBatch {
    /// Applies `change` to the order, wherever the batch keeps it.
    fn change_order(&mut self, order_id: i64, change: OrderChange) {
        if let Some(row) = self.new_orders.get_mut(&order_id) {
            if let Some(price) = change.price {
                row.price = price;
            }
            row.change = OrderChange {
                price: Some(row.price),
                ..change
            };
        } else {
            let earlier_price = self.order_changes.get(&order_id).and_then(|c| c.price);
            self.order_changes.insert(
                order_id,
                OrderChange {
                    price: change.price.or(earlier_price),
                    ..change
                },
            );
        }
    }

    fn change_lease(&mut self, lease_id: i64, apply: impl FnOnce(&mut LeaseChange)) {
        match self.new_leases.get_mut(&lease_id) {
            Some(row) => apply(&mut row.change),
            None => apply(self.lease_changes.entry(lease_id).or_default()),
        }
    }
}

fn status(remaining: u32) -> &'static str {
    if remaining == 0 {
        "filled"
    } else {
        "open"
    }
}

impl Projection for Activity {
    const NAME: &'static str = "activity";
    const TABLES: &'static [&'static str] = &[
        "projection_clocks",
        "markets",
        "orders",
        "order_history",
        "trades",
        "leases",
        "usage_lines",
        "invoices",
        "earnings",
        "payout_addresses",
        "chain_deposits",
        // Before the payouts that reference it: a bulk load of these tables (the copy limit
        // of `loadtest ledger`) fills them in this order.
        "settlements",
        "settlement_payouts",
        "bond_movements",
        "slashes",
        "storage_charges",
        "node_checks",
    ];
    type Batch = ActivityBatch;

    fn add(&self, batch: &mut ActivityBatch, record: &EventRecord) -> Result<(), Refusal> {
        let EventBody::Event(event) = &record.body else {
            return Ok(());
        };
        // Every conversion that can refuse happens before the batch changes.
        let seq = fit("seq", record.seq)?;
        let at = timestamp(record.at.0)?;
        match event {
            Event::MarketCreated { market, tick, fee } => batch.markets.push(MarketRow {
                market: market.to_string(),
                tick: price(*tick),
                fee_bps: fit_i32("fee", fee.get())?,
                seq,
                at,
            }),
            Event::OrderAccepted {
                order_id,
                order,
                hold,
                reputation,
            } => {
                let id = fit("order id", order_id.0)?;
                let gpus = fit_i32("gpus", order.gpus.get())?;
                let expires_at = match order.tif {
                    TimeInForce::Gtt { expires_at } => Some(timestamp(expires_at.0)?),
                    _ => None,
                };
                let (hours, node, region) = match &order.terms {
                    OrderTerms::Bid(spec) => {
                        (Some(fit_i32("hours", spec.hours.get())?), None, None)
                    }
                    OrderTerms::Ask(spec) => (
                        None,
                        Some(spec.node.to_string()),
                        Some(spec.region.to_string()),
                    ),
                };
                let row = OrderRow {
                    account: fit("account", order.account.0)?,
                    client_id: order.client_id.to_string(),
                    market: order.market.to_string(),
                    side: order.side().as_str(),
                    price: price(order.price),
                    gpus,
                    tif: order.tif.as_str(),
                    expires_at,
                    post_only: order.post_only,
                    hours,
                    node,
                    region,
                    reputation: fit_i32("reputation", reputation.get())?,
                    hold: amount(*hold),
                    change: OrderChange {
                        price: Some(price(order.price)),
                        remaining: gpus,
                        status: "open",
                        cancel_reason: None,
                        at,
                        seq,
                    },
                    created_at: at,
                };
                batch.history.push(HistoryRow {
                    seq,
                    order_id: id,
                    change: "accepted",
                    price: Some(row.price),
                    remaining: gpus,
                    detail: None,
                    at,
                });
                batch.new_orders.insert(id, row);
            }
            Event::OrderAmended {
                order_id,
                price: new_price,
                remaining,
                hold_change,
                priority_kept,
                ..
            } => {
                let id = fit("order id", order_id.0)?;
                let remaining = fit_i32("gpus", remaining.get())?;
                batch.change_order(
                    id,
                    OrderChange {
                        price: Some(price(*new_price)),
                        remaining,
                        status: "open",
                        cancel_reason: None,
                        at,
                        seq,
                    },
                );
                batch.history.push(HistoryRow {
                    seq,
                    order_id: id,
                    change: "amended",
                    price: Some(price(*new_price)),
                    remaining,
                    detail: Some(format!(
                        "hold_change={hold_change} priority_kept={priority_kept}"
                    )),
                    at,
                });
            }
            Event::OrderCancelled {
                order_id,
                remaining,
                reason,
                ..
            } => {
                let id = fit("order id", order_id.0)?;
                let remaining = fit_i32("gpus", *remaining)?;
                batch.change_order(
                    id,
                    OrderChange {
                        price: None,
                        remaining,
                        status: "cancelled",
                        cancel_reason: Some(reason.as_str()),
                        at,
                        seq,
                    },
                );
                batch.history.push(HistoryRow {
                    seq,
                    order_id: id,
                    change: "cancelled",
                    price: None,
                    remaining,
                    detail: Some(reason.as_str().to_owned()),
                    at,
                });
            }
            Event::LeaseCreated {
                lease_id,
                market,
                buyer,
                provider,
                node,
                bid_order,
                ask_order,
                gpus,
                price: fill_price,
                start,
                hours,
                cost,
                taker,
                bid_remaining,
                ask_remaining,
                ..
            } => {
                let id = fit("lease id", lease_id.0)?;
                let gpus = fit_i32("gpus", gpus.get())?;
                let hours = fit_i32("hours", hours.get())?;
                let (bid, ask) = (fit("order id", bid_order.0)?, fit("order id", ask_order.0)?);
                let (buyer, provider) = (fit("account", buyer.0)?, fit("account", provider.0)?);
                let created_at = timestamp(start.0)?;
                let bid_left = fit_i32("gpus", *bid_remaining)?;
                let ask_left = fit_i32("gpus", *ask_remaining)?;
                let fill_price = price(*fill_price);
                for (order_id, left, raw_left) in [
                    (bid, bid_left, *bid_remaining),
                    (ask, ask_left, *ask_remaining),
                ] {
                    batch.change_order(
                        order_id,
                        OrderChange {
                            price: None,
                            remaining: left,
                            status: status(raw_left),
                            cancel_reason: None,
                            at,
                            seq,
                        },
                    );
                    batch.history.push(HistoryRow {
                        seq,
                        order_id,
                        change: "filled",
                        price: Some(fill_price),
                        remaining: left,
                        detail: Some(format!("lease={id} gpus={gpus}")),
                        at,
                    });
                }
                batch.trades.push(TradeRow {
                    lease_id: id,
                    seq,
                    market: market.to_string(),
                    price: fill_price,
                    gpus,
                    hours,
                    buyer,
                    provider,
                    bid_order: bid,
                    ask_order: ask,
                    taker: taker.as_str(),
                    at,
                });
                batch.new_leases.insert(
                    id,
                    LeaseRow {
                        market: market.to_string(),
                        buyer,
                        provider,
                        node: node.to_string(),
                        bid_order: bid,
                        ask_order: ask,
                        gpus,
                        price: fill_price,
                        hours,
                        cost: amount(*cost),
                        created_at,
                        change: LeaseChange::default(),
                    },
                );
            }
            Event::LeaseStarted {
                lease_id, after_ms, ..
            } => {
                let id = fit("lease id", lease_id.0)?;
                let delay = fit("start delay", *after_ms)?;
                batch.change_lease(id, |c| {
                    c.status = Some("running");
                    c.started_at = Some(at);
                    c.start_delay_ms = Some(delay);
                });
            }
            Event::LeaseEnded {
                lease_id,
                hours_used,
                charged,
                fee,
                provider_earned,
                refunded,
                reason,
                ..
            } => {
                let id = fit("lease id", lease_id.0)?;
                let end = LeaseEnd {
                    seq,
                    command_offset: fit("command offset", record.command_offset)?,
                    at,
                    hours_used: *hours_used,
                    charged: amount(*charged),
                    fee: amount(*fee),
                    provider_earned: amount(*provider_earned),
                    refunded: amount(*refunded),
                    reason: reason.as_str(),
                };
                batch.change_lease(id, |c| {
                    c.status = Some("ended");
                    c.end = Some(end);
                });
            }
            Event::MarketConfigured { market, config } => {
                let row = ConfigRow {
                    seq,
                    at,
                    charge_period_s: fit_i32("charge period (s)", config.charge_period.seconds())?,
                    heartbeat_timeout_ms: fit_i32(
                        "heartbeat timeout (ms)",
                        config.heartbeat_timeout_ms,
                    )?,
                    json: serde_json::to_string(config).expect("a market config serializes"),
                };
                batch.configs.insert(market.to_string(), row);
            }
            Event::LeaseAccrued {
                lease_id,
                market,
                buyer,
                provider,
                node,
                gpus,
                price: unit_price,
                period_start,
                period_end,
                from,
                to,
                charged,
                fee,
                provider_earned,
            } => {
                let ms = to.0.checked_sub(from.0).and_then(|ms| u64::try_from(ms).ok());
                let ms = ms.ok_or(Refusal::OutOfRange {
                    what: "accrued time (ms)",
                    value: i128::from(to.0) - i128::from(from.0),
                })?;
                let gpu_ms = ms.checked_mul(u64::from(gpus.get())).ok_or(Refusal::OutOfRange {
                    what: "accrued GPU time (ms)",
                    value: i128::from(ms) * i128::from(gpus.get()),
                })?;
                batch.accruals.push(AccrualRow {
                    lease_id: fit("lease id", lease_id.0)?,
                    seq,
                    command_offset: fit("command offset", record.command_offset)?,
                    market: market.to_string(),
                    buyer: fit("account", buyer.0)?,
                    provider: fit("account", provider.0)?,
                    node: node.to_string(),
                    gpus: fit_i32("gpus", gpus.get())?,
                    price: price(*unit_price),
                    period_start: timestamp(period_start.0)?,
                    period_end: timestamp(period_end.0)?,
                    from: timestamp(from.0)?,
                    to: timestamp(to.0)?,
                    hours: hours_of_ms(ms),
                    gpu_hours: hours_of_ms(gpu_ms),
                    charged: amount(*charged),
                    fee: amount(*fee),
                    provider_earned: amount(*provider_earned),
                });
            }
            Event::LeaseClosed {
                lease_id,
                cause,
                ended_at,
                charged_until,
                charged_ms,
                ..
            } => {
                let id = fit("lease id", lease_id.0)?;
                let close = LeaseClose {
                    seq,
                    cause: cause.as_str(),
                    detail: match cause {
                        LeaseEndCause::NodeSilent { last_seen } => {
                            Some(timestamp(last_seen.0)?.to_rfc3339())
                        }
                        LeaseEndCause::Unhealthy { sequence }
                        | LeaseEndCause::SpecMismatch { sequence } => Some(sequence.to_string()),
                        LeaseEndCause::Operator { reason }
                        | LeaseEndCause::WorkRejected { reason } => Some(reason.as_str().to_owned()),
                        LeaseEndCause::TermReached
                        | LeaseEndCause::BuyerStopped
                        | LeaseEndCause::ProviderStopped
                        | LeaseEndCause::NotAcknowledged => None,
                    },
                    ended_at: timestamp(ended_at.0)?,
                    charged_until: timestamp(charged_until.0)?,
                    charged_ms: fit("charged time (ms)", *charged_ms)?,
                };
                batch.change_lease(id, |c| {
                    c.status = Some("ended");
                    c.close = Some(close);
                });
            }
            Event::OrderRebid {
                lease_id, order_id, ..
            } => {
                let (id, order) = (fit("lease id", lease_id.0)?, fit("order id", order_id.0)?);
                batch.change_lease(id, |c| c.rebid_order = Some(order));
            }
            Event::RebidRefused {
                lease_id, reason, ..
            } => {
                let id = fit("lease id", lease_id.0)?;
                batch.change_lease(id, |c| c.rebid_refused = Some(reason.code().as_str()));
            }
            Event::PaymentHeld {
                lease_id, until, ..
            } => {
                let (id, until) = (fit("lease id", lease_id.0)?, timestamp(until.0)?);
                batch.change_lease(id, |c| c.payment_held_until = Some(until));
            }
            Event::BondPosted { provider, .. }
            | Event::BondUnbonding { provider, .. }
            | Event::BondReleased { provider, .. } => {
                fit("provider", provider.0)?;
                if let Event::BondUnbonding { release_at, .. } = event {
                    timestamp(release_at.0)?;
                }
                batch.settlement.push((seq, at, event.clone()));
            }
            Event::BondSlashed {
                lease_id,
                provider,
                buyer,
                ..
            } => {
                for id in [lease_id.0, provider.0, buyer.0] {
                    fit("id", id)?;
                }
                if let Event::BondSlashed {
                    cause: LeaseEndCause::NodeSilent { last_seen },
                    ..
                } = event
                {
                    timestamp(last_seen.0)?;
                }
                batch.settlement.push((seq, at, event.clone()));
            }
            Event::StorageCharged {
                account,
                hour,
                bytes,
                ..
            } => {
                fit("account", account.0)?;
                fit("bytes", *bytes)?;
                timestamp(hour.0)?;
                batch.settlement.push((seq, at, event.clone()));
            }
            Event::NodeChecked {
                provider,
                lease_id,
                checker,
                ..
            } => {
                for id in [provider.0, lease_id.0, checker.0] {
                    fit("id", id)?;
                }
                batch.settlement.push((seq, at, event.clone()));
            }
            Event::PayoutAddressSet { .. }
            | Event::ChainDeposited { .. }
            | Event::SettlementOpened { .. }
            | Event::SettlementConfirmed { .. }
            | Event::SettlementFailed { .. } => {
                for id in settlement_ids(event) {
                    fit("id", id)?;
                }
                match event {
                    Event::ChainDeposited { msg_index, .. } => {
                        fit_i32("message index", *msg_index)?;
                    }
                    Event::SettlementOpened { payouts, .. } => {
                        fit_i32("payouts", payouts.len() as u64)?;
                    }
                    _ => {}
                }
                batch.settlement.push((seq, at, event.clone()));
            }
            Event::Deposited { .. }
            | Event::Withdrawn { .. }
            | Event::WithdrawalRequested { .. }
            | Event::ReputationSet { .. }
            | Event::CheckerAppointed { .. }
            | Event::NodeHeartbeat { .. }
            // Nodes are the reputation projection's; their leases' ends arrive as
            // `LeaseClosed`.
            | Event::NodeReported { .. }
            | Event::NodeSilent { .. } => {}
        }
        batch.clock = Some(batch.clock.map_or(at, |c| c.max(at)));
        Ok(())
    }

    fn write(
        &mut self,
        conn: &mut PgConnection,
        partition: i32,
        batch: ActivityBatch,
    ) -> Result<(), LedgerError> {
        let Some(clock) = batch.clock else {
            return Ok(());
        };
        write_markets(conn, partition, &batch)?;
        write_orders(conn, partition, &batch)?;
        write_trades(conn, partition, &batch.trades)?;
        let ended = write_leases(conn, partition, &batch)?;
        write_accruals(conn, partition, &batch.accruals)?;
        write_usage(conn, partition, &ended)?;
        write_settlement(conn, partition, &batch.settlement)?;
        // The partition's clock moves, and invoices whose month every partition has left
        // close. A month's last accruals come up to a heartbeat timeout after its end (a
        // period's accrual is final once every node could have reported past it), so a
        // month closes only once every clock is that much past it.
        diesel::sql_query(
            "INSERT INTO projection_clocks (projector, partition, at) VALUES ($1, $2, $3) \
             ON CONFLICT (projector, partition) DO UPDATE \
             SET at = greatest(projection_clocks.at, excluded.at)",
        )
        .bind::<Text, _>(Self::NAME)
        .bind::<Integer, _>(partition)
        .bind::<Timestamptz, _>(clock)
        .execute(conn)?;
        diesel::sql_query(
            "UPDATE invoices SET status = 'closed' \
             WHERE status = 'open' AND period + interval '1 month' \
             + (SELECT coalesce(max(heartbeat_timeout_ms), 0) FROM markets) \
               * interval '1 millisecond' \
             <= (SELECT min(at) AT TIME ZONE 'UTC' FROM projection_clocks WHERE projector = $1)",
        )
        .bind::<Text, _>(Self::NAME)
        .execute(conn)?;
        Ok(())
    }
}

/// Every id a bridge event stores, so `add` can refuse one that does not fit a `bigint`.
fn settlement_ids(event: &Event) -> Vec<u64> {
    match event {
        Event::PayoutAddressSet { account, .. } | Event::ChainDeposited { account, .. } => {
            vec![account.0]
        }
        Event::SettlementOpened { batch, payouts }
        | Event::SettlementFailed { batch, payouts, .. } => std::iter::once(batch.0)
            .chain(payouts.iter().map(|p| p.account.0))
            .collect(),
        Event::SettlementConfirmed { batch, height, .. } => vec![batch.0, *height],
        _ => Vec::new(),
    }
}

/// Ids were checked by `add`.
fn id(value: u64) -> i64 {
    value as i64
}

fn write_settlement(
    conn: &mut PgConnection,
    partition: i32,
    events: &[(i64, DateTime<Utc>, Event)],
) -> Result<(), LedgerError> {
    for (seq, at, event) in events {
        match event {
            Event::PayoutAddressSet { account, address } => {
                diesel::sql_query(
                    "INSERT INTO payout_addresses (account, address, partition, event_seq, set_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account) DO UPDATE \
                     SET address = excluded.address, partition = excluded.partition, \
                     event_seq = excluded.event_seq, set_at = excluded.set_at",
                )
                .bind::<BigInt, _>(id(account.0))
                .bind::<Text, _>(address.as_str())
                .bind::<Integer, _>(partition)
                .bind::<BigInt, _>(*seq)
                .bind::<Timestamptz, _>(*at)
                .execute(conn)?;
            }
            Event::ChainDeposited {
                account,
                amount: credited,
                tx_hash,
                msg_index,
            } => {
                diesel::sql_query(
                    "INSERT INTO chain_deposits \
                     (tx_hash, msg_index, account, amount, partition, event_seq, at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind::<Text, _>(tx_hash.to_string())
                // Checked by `add`, as the payout count below.
                .bind::<Integer, _>(*msg_index as i32)
                .bind::<BigInt, _>(id(account.0))
                .bind::<Numeric, _>(amount(*credited))
                .bind::<Integer, _>(partition)
                .bind::<BigInt, _>(*seq)
                .bind::<Timestamptz, _>(*at)
                .execute(conn)?;
            }
            Event::SettlementOpened { batch, payouts } => {
                // Each payout fits i64 micro-units; their sum may not, and the column holds it.
                let total =
                    micros_sum(payouts.iter().map(|p| i128::from(p.amount.micros())).sum())?;
                diesel::sql_query(
                    "INSERT INTO settlements (batch, partition, state, total, payouts, opened_at) \
                     VALUES ($1, $2, 'open', $3, $4, $5)",
                )
                .bind::<BigInt, _>(id(batch.0))
                .bind::<Integer, _>(partition)
                .bind::<Numeric, _>(total)
                .bind::<Integer, _>(payouts.len() as i32)
                .bind::<Timestamptz, _>(*at)
                .execute(conn)?;
                diesel::sql_query(
                    "INSERT INTO settlement_payouts (batch, account, address, amount, from_available) \
                     SELECT $1, a, d, m, f FROM unnest($2, $3, $4, $5) AS u(a, d, m, f)",
                )
                .bind::<BigInt, _>(id(batch.0))
                .bind::<Array<BigInt>, _>(payouts.iter().map(|p| id(p.account.0)).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(payouts.iter().map(|p| p.address.as_str()).collect::<Vec<_>>())
                .bind::<Array<Numeric>, _>(payouts.iter().map(|p| amount(p.amount)).collect::<Vec<_>>())
                .bind::<Array<Numeric>, _>(
                    payouts.iter().map(|p| amount(p.from_available)).collect::<Vec<_>>(),
                )
                .execute(conn)?;
            }
            Event::SettlementConfirmed {
                batch,
                tx_hash,
                height,
                ..
            } => {
                diesel::sql_query(
                    "UPDATE settlements SET state = 'confirmed', closed_at = $2, tx_hash = $3, \
                     height = $4 WHERE batch = $1",
                )
                .bind::<BigInt, _>(id(batch.0))
                .bind::<Timestamptz, _>(*at)
                .bind::<Text, _>(tx_hash.to_string())
                .bind::<BigInt, _>(id(*height))
                .execute(conn)?;
            }
            Event::SettlementFailed { batch, reason, .. } => {
                diesel::sql_query(
                    "UPDATE settlements SET state = 'failed', closed_at = $2, reason = $3 \
                     WHERE batch = $1",
                )
                .bind::<BigInt, _>(id(batch.0))
                .bind::<Timestamptz, _>(*at)
                .bind::<Text, _>(reason.as_str())
                .execute(conn)?;
            }
            Event::BondPosted {
                provider,
                market,
                amount: moved,
            }
            | Event::BondUnbonding {
                provider,
                market,
                amount: moved,
                ..
            }
            | Event::BondReleased {
                provider,
                market,
                amount: moved,
            } => {
                let release_at = match event {
                    // Checked by `add`, as the slash's last heartbeat below.
                    Event::BondUnbonding { release_at, .. } => timestamp(release_at.0).ok(),
                    _ => None,
                };
                diesel::sql_query(
                    "INSERT INTO bond_movements \
                     (partition, event_seq, provider, market, kind, amount, release_at, at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind::<Integer, _>(partition)
                .bind::<BigInt, _>(*seq)
                .bind::<BigInt, _>(id(provider.0))
                .bind::<Text, _>(market.as_str())
                .bind::<Text, _>(event.kind())
                .bind::<Numeric, _>(amount(*moved))
                .bind::<Nullable<Timestamptz>, _>(release_at)
                .bind::<Timestamptz, _>(*at)
                .execute(conn)?;
            }
            Event::BondSlashed {
                lease_id,
                market,
                provider,
                node,
                buyer,
                slashed,
                buyer_credit,
                insurance,
                cause,
            } => {
                // The evidence the failure was judged by: the heartbeat's sequence number or
                // the node's last heartbeat.
                let evidence = match cause {
                    LeaseEndCause::NodeSilent { last_seen } => timestamp(last_seen.0)
                        .ok()
                        .map(|t| format!("last heartbeat {}", t.to_rfc3339())),
                    LeaseEndCause::Unhealthy { sequence }
                    | LeaseEndCause::SpecMismatch { sequence } => {
                        Some(format!("report {sequence}"))
                    }
                    _ => None,
                };
                diesel::sql_query(
                    "INSERT INTO slashes (lease_id, partition, event_seq, market, provider, node, \
                     buyer, slashed, buyer_credit, insurance, cause, evidence, at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind::<BigInt, _>(id(lease_id.0))
                .bind::<Integer, _>(partition)
                .bind::<BigInt, _>(*seq)
                .bind::<Text, _>(market.as_str())
                .bind::<BigInt, _>(id(provider.0))
                .bind::<Text, _>(node.as_str())
                .bind::<BigInt, _>(id(buyer.0))
                .bind::<Numeric, _>(amount(*slashed))
                .bind::<Numeric, _>(amount(*buyer_credit))
                .bind::<Numeric, _>(amount(*insurance))
                .bind::<Text, _>(cause.as_str())
                .bind::<Nullable<Text>, _>(evidence)
                .bind::<Timestamptz, _>(*at)
                .execute(conn)?;
            }
            Event::StorageCharged {
                account,
                hour,
                bytes,
                amount: paid,
                unpaid,
            } => {
                // Its own line on the invoice of the month it was charged in (the last hour of a
                // month is charged after the month closed, so it goes on the next one):
                // GB-hours (10^9 bytes for an hour), what was paid and what the balance did
                // not cover.
                diesel::sql_query(
                    "WITH charge AS ( \
                       INSERT INTO storage_charges \
                         (partition, event_seq, account, hour, bytes, amount, unpaid, period) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, \
                         date_trunc('month', $8 AT TIME ZONE 'UTC')::date) \
                       ON CONFLICT DO NOTHING RETURNING account, period, bytes, amount, unpaid \
                     ) INSERT INTO invoices (account, period, status, lines, gpu_hours, amount, \
                         storage_gb_hours, storage_amount, storage_unpaid) \
                     SELECT account, period, 'open', 0, 0, 0, round(bytes / 1e9, 6), amount, \
                       unpaid FROM charge \
                     ON CONFLICT (account, period) DO UPDATE SET \
                       storage_gb_hours = invoices.storage_gb_hours + excluded.storage_gb_hours, \
                       storage_amount = invoices.storage_amount + excluded.storage_amount, \
                       storage_unpaid = invoices.storage_unpaid + excluded.storage_unpaid",
                )
                .bind::<Integer, _>(partition)
                .bind::<BigInt, _>(*seq)
                .bind::<BigInt, _>(id(account.0))
                .bind::<Timestamptz, _>(timestamp(hour.0).expect("checked by `add`"))
                .bind::<BigInt, _>(id(*bytes))
                .bind::<Numeric, _>(amount(*paid))
                .bind::<Numeric, _>(amount(*unpaid))
                .bind::<Timestamptz, _>(*at)
                .execute(conn)?;
            }
            Event::NodeChecked {
                market,
                provider,
                node,
                lease_id,
                checker,
                passed,
                detail,
            } => {
                diesel::sql_query(
                    "INSERT INTO node_checks (partition, event_seq, market, provider, node, \
                     lease_id, checker, passed, detail, at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind::<Integer, _>(partition)
                .bind::<BigInt, _>(*seq)
                .bind::<Text, _>(market.as_str())
                .bind::<BigInt, _>(id(provider.0))
                .bind::<Text, _>(node.as_str())
                .bind::<BigInt, _>(id(lease_id.0))
                .bind::<BigInt, _>(id(checker.0))
                .bind::<diesel::sql_types::Bool, _>(*passed)
                .bind::<Text, _>(detail.as_str())
                .bind::<Timestamptz, _>(*at)
                .execute(conn)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// New markets with the contract's default configuration, then the configurations the
/// batch set (of new markets or older ones).
fn write_markets(
    conn: &mut PgConnection,
    partition: i32,
    batch: &ActivityBatch,
) -> Result<(), LedgerError> {
    let markets = &batch.markets;
    if !markets.is_empty() {
        let default = MarketConfig::default();
        diesel::sql_query(
            "INSERT INTO markets (market, tick, fee_bps, partition, event_seq, created_at, \
             charge_period_s, heartbeat_timeout_ms) \
             SELECT m, t, f, $1, s, a, $7, $8 FROM unnest($2, $3, $4, $5, $6) AS u(m, t, f, s, a)",
        )
        .bind::<Integer, _>(partition)
        .bind::<Array<Text>, _>(markets.iter().map(|m| &m.market).collect::<Vec<_>>())
        .bind::<Array<Numeric>, _>(markets.iter().map(|m| m.tick).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(markets.iter().map(|m| m.fee_bps).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(markets.iter().map(|m| m.seq).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(markets.iter().map(|m| m.at).collect::<Vec<_>>())
        // A period is at most a day, the default timeout 30 s: both fit.
        .bind::<Integer, _>(default.charge_period.seconds() as i32)
        .bind::<Integer, _>(default.heartbeat_timeout_ms as i32)
        .execute(conn)?;
    }
    let configs: Vec<(&String, &ConfigRow)> = batch.configs.iter().collect();
    if !configs.is_empty() {
        let updated = diesel::sql_query(
            "UPDATE markets m SET charge_period_s = u.p, heartbeat_timeout_ms = u.h, \
             config = u.c::jsonb, configured_seq = u.s, configured_at = u.a \
             FROM unnest($1, $2, $3, $4, $5, $6) AS u(market, p, h, c, s, a) \
             WHERE m.market = u.market",
        )
        .bind::<Array<Text>, _>(configs.iter().map(|(m, _)| *m).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(
            configs
                .iter()
                .map(|(_, c)| c.charge_period_s)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Integer>, _>(
            configs
                .iter()
                .map(|(_, c)| c.heartbeat_timeout_ms)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Text>, _>(
            configs
                .iter()
                .map(|(_, c)| c.json.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<BigInt>, _>(configs.iter().map(|(_, c)| c.seq).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(configs.iter().map(|(_, c)| c.at).collect::<Vec<_>>())
        .execute(conn)?;
        if updated != configs.len() {
            return Err(LedgerError::Inconsistent {
                projector: Activity::NAME,
                partition,
                detail: format!(
                    "{} of {} configured markets are unknown",
                    configs.len() - updated,
                    configs.len()
                ),
            });
        }
    }
    Ok(())
}

fn write_orders(
    conn: &mut PgConnection,
    partition: i32,
    batch: &ActivityBatch,
) -> Result<(), LedgerError> {
    if !batch.new_orders.is_empty() {
        let rows: Vec<(&i64, &OrderRow)> = batch.new_orders.iter().collect();
        let col = |f: fn(&OrderRow) -> i64| rows.iter().map(|(_, r)| f(r)).collect::<Vec<_>>();
        diesel::sql_query(
            "INSERT INTO orders (partition, order_id, account, client_id, market, side, price, \
             gpus, remaining, tif, expires_at, post_only, hours, node, region, reputation, hold, \
             status, cancel_reason, created_at, updated_at, updated_seq) \
             SELECT $1, * FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16, $17, $18, $19, $20, $21, $22)",
        )
        .bind::<Integer, _>(partition)
        .bind::<Array<BigInt>, _>(rows.iter().map(|(id, _)| **id).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(col(|r| r.account))
        .bind::<Array<Text>, _>(rows.iter().map(|(_, r)| &r.client_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(rows.iter().map(|(_, r)| &r.market).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(rows.iter().map(|(_, r)| r.side).collect::<Vec<_>>())
        .bind::<Array<Numeric>, _>(rows.iter().map(|(_, r)| r.price).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(rows.iter().map(|(_, r)| r.gpus).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(
            rows.iter()
                .map(|(_, r)| r.change.remaining)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Text>, _>(rows.iter().map(|(_, r)| r.tif).collect::<Vec<_>>())
        .bind::<Array<Nullable<Timestamptz>>, _>(
            rows.iter().map(|(_, r)| r.expires_at).collect::<Vec<_>>(),
        )
        .bind::<Array<Bool>, _>(rows.iter().map(|(_, r)| r.post_only).collect::<Vec<_>>())
        .bind::<Array<Nullable<Integer>>, _>(rows.iter().map(|(_, r)| r.hours).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            rows.iter()
                .map(|(_, r)| r.node.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            rows.iter()
                .map(|(_, r)| r.region.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Integer>, _>(rows.iter().map(|(_, r)| r.reputation).collect::<Vec<_>>())
        .bind::<Array<Numeric>, _>(rows.iter().map(|(_, r)| r.hold).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            rows.iter()
                .map(|(_, r)| r.change.status)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            rows.iter()
                .map(|(_, r)| r.change.cancel_reason)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Timestamptz>, _>(rows.iter().map(|(_, r)| r.created_at).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(rows.iter().map(|(_, r)| r.change.at).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(rows.iter().map(|(_, r)| r.change.seq).collect::<Vec<_>>())
        .execute(conn)?;
    }
    if !batch.order_changes.is_empty() {
        let changes: Vec<(&i64, &OrderChange)> = batch.order_changes.iter().collect();
        let updated = diesel::sql_query(
            "UPDATE orders o SET price = coalesce(u.price, o.price), remaining = u.remaining, \
             status = u.status, cancel_reason = u.cancel_reason, updated_at = u.at, \
             updated_seq = u.seq \
             FROM unnest(array_fill($1, ARRAY[cardinality($2)]), $2, $3, $4, $5, $6, $7, $8) \
             AS u(partition, order_id, price, remaining, status, cancel_reason, at, seq) \
             WHERE o.partition = u.partition AND o.order_id = u.order_id",
        )
        .bind::<Integer, _>(partition)
        .bind::<Array<BigInt>, _>(changes.iter().map(|(id, _)| **id).collect::<Vec<_>>())
        .bind::<Array<Nullable<Numeric>>, _>(
            changes.iter().map(|(_, c)| c.price).collect::<Vec<_>>(),
        )
        .bind::<Array<Integer>, _>(changes.iter().map(|(_, c)| c.remaining).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(changes.iter().map(|(_, c)| c.status).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            changes
                .iter()
                .map(|(_, c)| c.cancel_reason)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Timestamptz>, _>(changes.iter().map(|(_, c)| c.at).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(changes.iter().map(|(_, c)| c.seq).collect::<Vec<_>>())
        .execute(conn)?;
        if updated != changes.len() {
            return Err(LedgerError::Inconsistent {
                projector: Activity::NAME,
                partition,
                detail: format!(
                    "{} of {} changed orders are unknown",
                    changes.len() - updated,
                    changes.len()
                ),
            });
        }
    }
    let history = &batch.history;
    if !history.is_empty() {
        diesel::sql_query(
            "INSERT INTO order_history (partition, event_seq, order_id, change, price, remaining, \
             detail, at) SELECT $1, * FROM unnest($2, $3, $4, $5, $6, $7, $8)",
        )
        .bind::<Integer, _>(partition)
        .bind::<Array<BigInt>, _>(history.iter().map(|h| h.seq).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(history.iter().map(|h| h.order_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(history.iter().map(|h| h.change).collect::<Vec<_>>())
        .bind::<Array<Nullable<Numeric>>, _>(history.iter().map(|h| h.price).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(history.iter().map(|h| h.remaining).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            history
                .iter()
                .map(|h| h.detail.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Timestamptz>, _>(history.iter().map(|h| h.at).collect::<Vec<_>>())
        .execute(conn)?;
    }
    Ok(())
}

fn write_trades(
    conn: &mut PgConnection,
    partition: i32,
    trades: &[TradeRow],
) -> Result<(), LedgerError> {
    if trades.is_empty() {
        return Ok(());
    }
    diesel::sql_query(
        "INSERT INTO trades (partition, lease_id, event_seq, market, price, gpus, hours, buyer, \
         provider, bid_order, ask_order, taker, at) \
         SELECT $1, * FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind::<Integer, _>(partition)
    .bind::<Array<BigInt>, _>(trades.iter().map(|t| t.lease_id).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(trades.iter().map(|t| t.seq).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(trades.iter().map(|t| &t.market).collect::<Vec<_>>())
    .bind::<Array<Numeric>, _>(trades.iter().map(|t| t.price).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(trades.iter().map(|t| t.gpus).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(trades.iter().map(|t| t.hours).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(trades.iter().map(|t| t.buyer).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(trades.iter().map(|t| t.provider).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(trades.iter().map(|t| t.bid_order).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(trades.iter().map(|t| t.ask_order).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(trades.iter().map(|t| t.taker).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(trades.iter().map(|t| t.at).collect::<Vec<_>>())
    .execute(conn)?;
    Ok(())
}

/// A batch's lease changes as parallel columns for `unnest`, shared by the insert of new
/// leases and the patch of older ones. A metered lease ends when it closes; one ended by the
/// old `EndLease` when its money moves.
#[derive(Debug, Default)]
struct ChangeColumns<'a> {
    status: Vec<Option<&'static str>>,
    started_at: Vec<Option<DateTime<Utc>>>,
    start_delay_ms: Vec<Option<i64>>,
    closed_at: Vec<Option<DateTime<Utc>>>,
    end_at: Vec<Option<DateTime<Utc>>>,
    hours_used: Vec<Option<Decimal>>,
    charged: Vec<Option<Decimal>>,
    fee: Vec<Option<Decimal>>,
    provider_earned: Vec<Option<Decimal>>,
    refunded: Vec<Option<Decimal>>,
    end_reason: Vec<Option<&'static str>>,
    close_cause: Vec<Option<&'static str>>,
    close_detail: Vec<Option<&'a str>>,
    charged_until: Vec<Option<DateTime<Utc>>>,
    charged_ms: Vec<Option<i64>>,
    closed_seq: Vec<Option<i64>>,
    rebid_order: Vec<Option<i64>>,
    rebid_refused: Vec<Option<&'static str>>,
    payment_held_until: Vec<Option<DateTime<Utc>>>,
}

impl<'a> ChangeColumns<'a> {
    fn of(changes: impl Iterator<Item = &'a LeaseChange>) -> ChangeColumns<'a> {
        let mut c = ChangeColumns::default();
        for change in changes {
            let (close, end) = (change.close.as_ref(), change.end.as_ref());
            c.status.push(change.status);
            c.started_at.push(change.started_at);
            c.start_delay_ms.push(change.start_delay_ms);
            c.closed_at.push(close.map(|x| x.ended_at));
            c.end_at.push(end.map(|e| e.at));
            c.hours_used.push(end.map(|e| e.hours_used));
            c.charged.push(end.map(|e| e.charged));
            c.fee.push(end.map(|e| e.fee));
            c.provider_earned.push(end.map(|e| e.provider_earned));
            c.refunded.push(end.map(|e| e.refunded));
            c.end_reason.push(end.map(|e| e.reason));
            c.close_cause.push(close.map(|x| x.cause));
            c.close_detail.push(close.and_then(|x| x.detail.as_deref()));
            c.charged_until.push(close.map(|x| x.charged_until));
            c.charged_ms.push(close.map(|x| x.charged_ms));
            c.closed_seq.push(close.map(|x| x.seq));
            c.rebid_order.push(change.rebid_order);
            c.rebid_refused.push(change.rebid_refused);
            c.payment_held_until.push(change.payment_held_until);
        }
        c
    }

    /// Binds the columns, in the order of their names in [`ChangeColumns::NAMES`].
    fn bind(self, query: BoxedSqlQuery<'a, Pg, SqlQuery>) -> BoxedSqlQuery<'a, Pg, SqlQuery> {
        query
            .bind::<Array<Nullable<Text>>, _>(self.status)
            .bind::<Array<Nullable<Timestamptz>>, _>(self.started_at)
            .bind::<Array<Nullable<BigInt>>, _>(self.start_delay_ms)
            .bind::<Array<Nullable<Timestamptz>>, _>(self.closed_at)
            .bind::<Array<Nullable<Timestamptz>>, _>(self.end_at)
            .bind::<Array<Nullable<Numeric>>, _>(self.hours_used)
            .bind::<Array<Nullable<Numeric>>, _>(self.charged)
            .bind::<Array<Nullable<Numeric>>, _>(self.fee)
            .bind::<Array<Nullable<Numeric>>, _>(self.provider_earned)
            .bind::<Array<Nullable<Numeric>>, _>(self.refunded)
            .bind::<Array<Nullable<Text>>, _>(self.end_reason)
            .bind::<Array<Nullable<Text>>, _>(self.close_cause)
            .bind::<Array<Nullable<Text>>, _>(self.close_detail)
            .bind::<Array<Nullable<Timestamptz>>, _>(self.charged_until)
            .bind::<Array<Nullable<BigInt>>, _>(self.charged_ms)
            .bind::<Array<Nullable<BigInt>>, _>(self.closed_seq)
            .bind::<Array<Nullable<BigInt>>, _>(self.rebid_order)
            .bind::<Array<Nullable<Text>>, _>(self.rebid_refused)
            .bind::<Array<Nullable<Timestamptz>>, _>(self.payment_held_until)
    }

    const NAMES: &'static str = "status, started_at, start_delay_ms, closed_at, end_at, \
        hours_used, charged, fee, provider_earned, refunded, end_reason, close_cause, \
        close_detail, charged_until, charged_ms, closed_seq, rebid_order, rebid_refused, \
        payment_held_until";
}

/// Writes new leases in their final state and patches older ones; returns every lease that
/// ended in the batch, for billing.
fn write_leases(
    conn: &mut PgConnection,
    partition: i32,
    batch: &ActivityBatch,
) -> Result<Vec<(i64, LeaseEnd)>, LedgerError> {
    let ended: Vec<(i64, LeaseEnd)> = batch
        .new_leases
        .iter()
        .map(|(id, row)| (id, &row.change))
        .chain(batch.lease_changes.iter())
        .filter_map(|(id, change)| Some((*id, change.end.clone()?)))
        .collect();
    if !batch.new_leases.is_empty() {
        let rows: Vec<(&i64, &LeaseRow)> = batch.new_leases.iter().collect();
        let query = diesel::sql_query(format!(
            // The region comes from the ask, written earlier in this transaction. A scalar
            // subquery per lease is a primary-key lookup; a join let the planner hash the
            // whole orders table for every batch, which grew with the table.
            "INSERT INTO leases (partition, lease_id, market, buyer, provider, node, region, \
             bid_order, ask_order, gpus, price, hours, cost, created_at, status, started_at, \
             start_delay_ms, ended_at, hours_used, charged, fee, provider_earned, refunded, \
             end_reason, close_cause, close_detail, charged_until, charged_ms, closed_seq, \
             rebid_order, rebid_refused, payment_held_until) \
             SELECT $1, u.lease_id, u.market, u.buyer, u.provider, u.node, u.region, \
             u.bid_order, u.ask_order, u.gpus, u.price, u.hours, u.cost, u.created_at, \
             coalesce(u.status, 'created'), u.started_at, u.start_delay_ms, \
             coalesce(u.closed_at, u.end_at), u.hours_used, u.charged, u.fee, \
             u.provider_earned, u.refunded, u.end_reason, u.close_cause, u.close_detail, \
             u.charged_until, u.charged_ms, u.closed_seq, u.rebid_order, u.rebid_refused, \
             u.payment_held_until \
             FROM (SELECT n.*, (SELECT o.region FROM orders o \
                   WHERE o.partition = $1 AND o.order_id = n.ask_order) AS region \
             FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32) \
             AS n(lease_id, market, buyer, provider, node, bid_order, ask_order, gpus, price, \
             hours, cost, created_at, {})) u \
             WHERE u.region IS NOT NULL",
            ChangeColumns::NAMES
        ))
        .into_boxed()
        .bind::<Integer, _>(partition)
        .bind::<Array<BigInt>, _>(rows.iter().map(|(id, _)| **id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(rows.iter().map(|(_, r)| &r.market).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(rows.iter().map(|(_, r)| r.buyer).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(rows.iter().map(|(_, r)| r.provider).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(rows.iter().map(|(_, r)| &r.node).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(rows.iter().map(|(_, r)| r.bid_order).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(rows.iter().map(|(_, r)| r.ask_order).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(rows.iter().map(|(_, r)| r.gpus).collect::<Vec<_>>())
        .bind::<Array<Numeric>, _>(rows.iter().map(|(_, r)| r.price).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(rows.iter().map(|(_, r)| r.hours).collect::<Vec<_>>())
        .bind::<Array<Numeric>, _>(rows.iter().map(|(_, r)| r.cost).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(rows.iter().map(|(_, r)| r.created_at).collect::<Vec<_>>());
        let inserted = ChangeColumns::of(rows.iter().map(|(_, r)| &r.change))
            .bind(query)
            .execute(conn)?;
        if inserted != rows.len() {
            return Err(LedgerError::Inconsistent {
                projector: Activity::NAME,
                partition,
                detail: format!(
                    "{} of {} new leases fill an unknown ask",
                    rows.len() - inserted,
                    rows.len()
                ),
            });
        }
    }
    if !batch.lease_changes.is_empty() {
        let rows: Vec<(&i64, &LeaseChange)> = batch.lease_changes.iter().collect();
        // A change sets only what its events said: a lease closed in one batch may end (its
        // money move) in a later one, and a re-bid follows its end. A metered lease ended
        // when it closed, so its close's end time wins over its money's.
        let query = diesel::sql_query(format!(
            "UPDATE leases l SET status = coalesce(u.status, l.status), \
             started_at = coalesce(u.started_at, l.started_at), \
             start_delay_ms = coalesce(u.start_delay_ms, l.start_delay_ms), \
             ended_at = coalesce(u.closed_at, l.ended_at, u.end_at), \
             hours_used = coalesce(u.hours_used, l.hours_used), \
             charged = coalesce(u.charged, l.charged), fee = coalesce(u.fee, l.fee), \
             provider_earned = coalesce(u.provider_earned, l.provider_earned), \
             refunded = coalesce(u.refunded, l.refunded), \
             end_reason = coalesce(u.end_reason, l.end_reason), \
             close_cause = coalesce(u.close_cause, l.close_cause), \
             close_detail = coalesce(u.close_detail, l.close_detail), \
             charged_until = coalesce(u.charged_until, l.charged_until), \
             charged_ms = coalesce(u.charged_ms, l.charged_ms), \
             closed_seq = coalesce(u.closed_seq, l.closed_seq), \
             rebid_order = coalesce(u.rebid_order, l.rebid_order), \
             rebid_refused = coalesce(u.rebid_refused, l.rebid_refused), \
             payment_held_until = coalesce(u.payment_held_until, l.payment_held_until) \
             FROM unnest(array_fill($1, ARRAY[cardinality($2)]), $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) \
             AS u(partition, lease_id, {}) \
             WHERE l.partition = u.partition AND l.lease_id = u.lease_id",
            ChangeColumns::NAMES
        ))
        .into_boxed()
        .bind::<Integer, _>(partition)
        .bind::<Array<BigInt>, _>(rows.iter().map(|(id, _)| **id).collect::<Vec<_>>());
        let updated = ChangeColumns::of(rows.iter().map(|(_, c)| *c))
            .bind(query)
            .execute(conn)?;
        if updated != rows.len() {
            return Err(LedgerError::Inconsistent {
                projector: Activity::NAME,
                partition,
                detail: format!(
                    "{} of {} changed leases are unknown",
                    rows.len() - updated,
                    rows.len()
                ),
            });
        }
    }
    Ok(ended)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// One usage line per accrual, in its period's month, and the invoice and earnings totals
/// of those months. The line takes its region from the lease row and is written only if the
/// accrual agrees with its lease (same terms, its time inside its period, before the lease
/// closed, the period not accrued yet); the count proves every accrual was.
fn write_accruals(
    conn: &mut PgConnection,
    partition: i32,
    accruals: &[AccrualRow],
) -> Result<(), LedgerError> {
    if accruals.is_empty() {
        return Ok(());
    }
    // Each accrual finds its lease by a lateral primary-key probe. `LIMIT 1` (a key finds
    // one row anyway) keeps the planner from flattening it into a join, which without
    // statistics it plans with the whole leases table as the outer side.
    let lines: Count = diesel::sql_query(
        "WITH a AS ( \
           SELECT * FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18, $19) AS a(lease_id, event_seq, command_offset, market, buyer, \
             provider, node, gpus, price, period_start, period_end, usage_start, usage_end, \
             hours_used, gpu_hours, charged, fee, provider_earned) \
         ), lines AS ( \
           INSERT INTO usage_lines (partition, lease_id, event_seq, command_offset, account, \
             provider, market, node, region, gpus, hours_used, gpu_hours, unit_price, amount, \
             fee, provider_earned, list_cost, charge_start, charge_end, period, usage_start, \
             usage_end) \
           SELECT $1, a.lease_id, a.event_seq, a.command_offset, a.buyer, a.provider, a.market, \
             a.node, l.region, a.gpus, a.hours_used, a.gpu_hours, a.price, a.charged, a.fee, \
             a.provider_earned, a.charged, a.period_start, a.period_end, \
             date_trunc('month', a.period_start AT TIME ZONE 'UTC')::date, a.usage_start, \
             a.usage_end \
           FROM a CROSS JOIN LATERAL (SELECT * FROM leases l \
             WHERE l.partition = $1 AND l.lease_id = a.lease_id LIMIT 1) l \
           WHERE (l.market, l.buyer, l.provider, l.node, l.gpus, l.price) \
               = (a.market, a.buyer, a.provider, a.node, a.gpus, a.price) \
             AND a.period_start <= a.usage_start AND a.usage_start <= a.usage_end \
             AND a.usage_end <= a.period_end \
             AND date_trunc('month', a.period_start AT TIME ZONE 'UTC') \
               = date_trunc('month', (a.period_end - interval '1 millisecond') AT TIME ZONE 'UTC') \
             AND (l.closed_seq IS NULL OR a.event_seq < l.closed_seq) \
           ON CONFLICT DO NOTHING \
           RETURNING lease_id, account, provider, period, gpu_hours, amount, fee, provider_earned \
         ), new_in_month AS ( \
           SELECT n.provider, n.period, count(*) AS leases \
           FROM (SELECT DISTINCT lease_id, provider, period FROM lines) n \
           WHERE NOT EXISTS (SELECT 1 FROM usage_lines u \
             WHERE u.partition = $1 AND u.lease_id = n.lease_id AND u.period = n.period) \
           GROUP BY n.provider, n.period \
         ), invoiced AS ( \
           INSERT INTO invoices (account, period, status, lines, gpu_hours, amount) \
           SELECT account, period, 'open', count(*), sum(gpu_hours), sum(amount) \
           FROM lines GROUP BY account, period ORDER BY account, period \
           ON CONFLICT (account, period) DO UPDATE SET lines = invoices.lines + excluded.lines, \
             gpu_hours = invoices.gpu_hours + excluded.gpu_hours, \
             amount = invoices.amount + excluded.amount \
         ), earned AS ( \
           INSERT INTO earnings (provider, period, leases, gpu_hours, gross, fees, net) \
           SELECT t.provider, t.period, coalesce(n.leases, 0), t.gpu_hours, t.gross, t.fees, \
             t.net \
           FROM (SELECT provider, period, sum(gpu_hours) AS gpu_hours, sum(amount) AS gross, \
                   sum(fee) AS fees, sum(provider_earned) AS net \
                 FROM lines GROUP BY provider, period) t \
           LEFT JOIN new_in_month n ON n.provider = t.provider AND n.period = t.period \
           ORDER BY t.provider, t.period \
           ON CONFLICT (provider, period) DO UPDATE SET leases = earnings.leases + excluded.leases, \
             gpu_hours = earnings.gpu_hours + excluded.gpu_hours, \
             gross = earnings.gross + excluded.gross, fees = earnings.fees + excluded.fees, \
             net = earnings.net + excluded.net \
         ) SELECT count(*) AS n FROM lines",
    )
    .bind::<Integer, _>(partition)
    .bind::<Array<BigInt>, _>(accruals.iter().map(|a| a.lease_id).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(accruals.iter().map(|a| a.seq).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(accruals.iter().map(|a| a.command_offset).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(accruals.iter().map(|a| &a.market).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(accruals.iter().map(|a| a.buyer).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(accruals.iter().map(|a| a.provider).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(accruals.iter().map(|a| &a.node).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(accruals.iter().map(|a| a.gpus).collect::<Vec<_>>())
    .bind::<Array<Numeric>, _>(accruals.iter().map(|a| a.price).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(accruals.iter().map(|a| a.period_start).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(accruals.iter().map(|a| a.period_end).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(accruals.iter().map(|a| a.from).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(accruals.iter().map(|a| a.to).collect::<Vec<_>>())
    .bind::<Array<Numeric>, _>(accruals.iter().map(|a| a.hours).collect::<Vec<_>>())
    .bind::<Array<Numeric>, _>(accruals.iter().map(|a| a.gpu_hours).collect::<Vec<_>>())
    .bind::<Array<Numeric>, _>(accruals.iter().map(|a| a.charged).collect::<Vec<_>>())
    .bind::<Array<Numeric>, _>(accruals.iter().map(|a| a.fee).collect::<Vec<_>>())
    .bind::<Array<Numeric>, _>(accruals.iter().map(|a| a.provider_earned).collect::<Vec<_>>())
    .get_result(conn)?;
    if lines.n != accruals.len() as i64 {
        return Err(LedgerError::Inconsistent {
            projector: Activity::NAME,
            partition,
            detail: format!(
                "{} of {} accruals name an unknown lease or another lease's terms, lie outside \
                 their charge period, follow their lease's close or repeat an accrued period",
                accruals.len() as i64 - lines.n,
                accruals.len()
            ),
        });
    }
    Ok(())
}

/// A metered lease's end against the usage lines it settles.
#[derive(QueryableByName)]
struct Settled {
    #[diesel(sql_type = BigInt)]
    lease_id: i64,
    #[diesel(sql_type = Numeric)]
    charged: Decimal,
    #[diesel(sql_type = Numeric)]
    fee: Decimal,
    #[diesel(sql_type = Numeric)]
    provider_earned: Decimal,
    #[diesel(sql_type = Numeric)]
    lines_charged: Decimal,
    #[diesel(sql_type = Numeric)]
    lines_fee: Decimal,
    #[diesel(sql_type = Numeric)]
    lines_earned: Decimal,
}

/// Bills the leases whose money moved in the batch. A metered lease (one that closed) settles
/// its accrued lines, whose sums must be what its end moved; a lease ended by the old
/// `EndLease` gets its one line now, in the month it ended, with the invoice and earnings
/// totals of that month. Together the two account for every ended lease.
fn write_usage(
    conn: &mut PgConnection,
    partition: i32,
    ended: &[(i64, LeaseEnd)],
) -> Result<(), LedgerError> {
    if ended.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&LeaseEnd) -> Decimal| ended.iter().map(|(_, e)| f(e)).collect::<Vec<_>>();
    let settled: Vec<Settled> = diesel::sql_query(
        "WITH m AS ( \
           SELECT $1 AS partition, e.* FROM unnest($2, $3, $4, $5, $6, $7) \
             AS e(lease_id, event_seq, at, charged, fee, provider_earned) \
           WHERE (SELECT l.close_cause IS NOT NULL FROM leases l \
             WHERE l.partition = $1 AND l.lease_id = e.lease_id) \
         ), settled AS ( \
           UPDATE usage_lines u SET settled_seq = m.event_seq, settled_at = m.at FROM m \
           WHERE u.partition = m.partition AND u.lease_id = m.lease_id \
             AND u.settled_seq IS NULL \
           RETURNING u.lease_id, u.amount, u.fee, u.provider_earned \
         ) SELECT m.lease_id, m.charged, m.fee, m.provider_earned, \
           coalesce(sum(s.amount), 0) AS lines_charged, coalesce(sum(s.fee), 0) AS lines_fee, \
           coalesce(sum(s.provider_earned), 0) AS lines_earned \
         FROM m LEFT JOIN settled s ON s.lease_id = m.lease_id \
         GROUP BY m.lease_id, m.charged, m.fee, m.provider_earned ORDER BY m.lease_id",
    )
    .bind::<Integer, _>(partition)
    .bind::<Array<BigInt>, _>(ended.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(ended.iter().map(|(_, e)| e.seq).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(ended.iter().map(|(_, e)| e.at).collect::<Vec<_>>())
    .bind::<Array<Numeric>, _>(col(|e| e.charged))
    .bind::<Array<Numeric>, _>(col(|e| e.fee))
    .bind::<Array<Numeric>, _>(col(|e| e.provider_earned))
    .load(conn)?;
    if let Some(s) = settled.iter().find(|s| {
        (s.charged, s.fee, s.provider_earned) != (s.lines_charged, s.lines_fee, s.lines_earned)
    }) {
        return Err(LedgerError::Inconsistent {
            projector: Activity::NAME,
            partition,
            detail: format!(
                "lease {} ends charging {} (fee {}, provider {}), but its unsettled usage lines \
                 sum to {} (fee {}, provider {})",
                s.lease_id,
                s.charged,
                s.fee,
                s.provider_earned,
                s.lines_charged,
                s.lines_fee,
                s.lines_earned
            ),
        });
    }
    // The data-modifying CTEs all run; the final count proves every other ended lease was
    // found. Each ended lease finds its row by a lateral key probe, as accruals do.
    let lines: Count = diesel::sql_query(
        "WITH ended AS ( \
           SELECT * FROM unnest($2, $3, $4, $5) AS e(lease_id, event_seq, command_offset, at) \
         ), lines AS ( \
           INSERT INTO usage_lines (partition, lease_id, event_seq, command_offset, account, \
             provider, market, node, region, gpus, hours_used, gpu_hours, unit_price, amount, \
             fee, provider_earned, list_cost, refunded, end_reason, charge_start, charge_end, \
             period, usage_start, usage_end, settled_seq, settled_at) \
           SELECT $1, l.lease_id, e.event_seq, e.command_offset, l.buyer, l.provider, l.market, \
             l.node, l.region, l.gpus, l.hours_used, l.gpus * l.hours_used, l.price, l.charged, \
             l.fee, l.provider_earned, l.cost, l.refunded, l.end_reason, \
             coalesce(l.started_at, l.created_at), l.ended_at, \
             date_trunc('month', l.ended_at AT TIME ZONE 'UTC')::date, \
             coalesce(l.started_at, l.created_at), l.ended_at, e.event_seq, e.at \
           FROM ended e CROSS JOIN LATERAL (SELECT * FROM leases l \
             WHERE l.partition = $1 AND l.lease_id = e.lease_id LIMIT 1) l \
           WHERE l.close_cause IS NULL \
           RETURNING account, provider, period, gpu_hours, amount, fee, provider_earned \
         ), invoiced AS ( \
           INSERT INTO invoices (account, period, status, lines, gpu_hours, amount) \
           SELECT account, period, 'open', count(*), sum(gpu_hours), sum(amount) \
           FROM lines GROUP BY account, period ORDER BY account, period \
           ON CONFLICT (account, period) DO UPDATE SET lines = invoices.lines + excluded.lines, \
             gpu_hours = invoices.gpu_hours + excluded.gpu_hours, \
             amount = invoices.amount + excluded.amount \
         ), earned AS ( \
           INSERT INTO earnings (provider, period, leases, gpu_hours, gross, fees, net) \
           SELECT provider, period, count(*), sum(gpu_hours), sum(amount), sum(fee), \
             sum(provider_earned) \
           FROM lines GROUP BY provider, period ORDER BY provider, period \
           ON CONFLICT (provider, period) DO UPDATE SET leases = earnings.leases + excluded.leases, \
             gpu_hours = earnings.gpu_hours + excluded.gpu_hours, \
             gross = earnings.gross + excluded.gross, fees = earnings.fees + excluded.fees, \
             net = earnings.net + excluded.net \
         ) SELECT count(*) AS n FROM lines",
    )
    .bind::<Integer, _>(partition)
    .bind::<Array<BigInt>, _>(ended.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(ended.iter().map(|(_, e)| e.seq).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(ended.iter().map(|(_, e)| e.command_offset).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(ended.iter().map(|(_, e)| e.at).collect::<Vec<_>>())
    .get_result(conn)?;
    let found = lines.n + settled.len() as i64;
    if found != ended.len() as i64 {
        return Err(LedgerError::Inconsistent {
            projector: Activity::NAME,
            partition,
            detail: format!(
                "{} of {} ended leases are unknown",
                ended.len() as i64 - found,
                ended.len()
            ),
        });
    }
    Ok(())
}
