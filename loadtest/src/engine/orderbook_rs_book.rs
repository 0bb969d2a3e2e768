//! The published `orderbook-rs` crate: a concurrent (lock-free, `&self`) limit order book
//! for one instrument, no accounts or funds checks. It stamps orders from its own clock and
//! takes order ids from the caller, built with its default features and configuration, as
//! its own benchmarks do.
//!
//! An immediate-or-cancel order that leaves a remainder returns
//! `Err(InsufficientLiquidity)` even when it traded; those show up under that name in
//! `rejections` although they are the normal end of an IOC order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::ensure;
use orderbook_rs::{Id, OrderBook, OrderBookError, Side, TimeInForce, TradeResult};
use pricelevel::{OrderUpdate, Price, Quantity};

use super::measure::{Book, Observed, Pass};
use super::workload::{self, Change, MsgKind, Workload};

#[derive(Debug)]
pub enum Op {
    Add {
        id: Id,
        price: u128,
        qty: u64,
        side: Side,
        tif: TimeInForce,
    },
    Cancel(Id),
    Update(OrderUpdate),
}

/// How the last operation went, in the terms the book reports.
#[derive(Debug)]
enum Outcome {
    Done,
    /// A cancel or update of an order that is not resting (`Ok(None)`).
    NotFound,
    Failed(OrderBookError),
}

pub struct OrderbookRs {
    book: OrderBook<()>,
    last: Outcome,
    /// The book reports every trade of an immediate-or-cancel order only to a trade
    /// listener (an unfilled remainder makes the call return an error), so trades are
    /// counted there, in the observing pass only.
    trades: Arc<AtomicU64>,
}

impl std::fmt::Debug for OrderbookRs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderbookRs")
            .field("symbol", &self.book.symbol())
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Book for OrderbookRs {
    const NAME: &'static str = "orderbook-rs";
    type Command = Op;

    fn convert(workload: &Workload) -> anyhow::Result<Vec<Op>> {
        ensure!(
            workload.markets.len() == 1,
            "orderbook-rs runs one market per book"
        );
        Ok(workload
            .msgs
            .iter()
            .map(|msg| match &msg.kind {
                MsgKind::Place(place) => Op::Add {
                    id: Id::from_u64(place.order),
                    price: u128::from(place.price),
                    qty: u64::from(place.qty),
                    side: match place.side() {
                        workload::Side::Bid => Side::Buy,
                        workload::Side::Ask => Side::Sell,
                    },
                    tif: if place.ioc {
                        TimeInForce::Ioc
                    } else {
                        TimeInForce::Gtc
                    },
                },
                MsgKind::Cancel { order, .. } => Op::Cancel(Id::from_u64(*order)),
                MsgKind::Amend { order, change, .. } => {
                    let order_id = Id::from_u64(*order);
                    Op::Update(match *change {
                        Change::Price(price) => OrderUpdate::UpdatePrice {
                            order_id,
                            new_price: Price::new(u128::from(price)),
                        },
                        Change::Quantity(qty) => OrderUpdate::UpdateQuantity {
                            order_id,
                            new_quantity: Quantity::new(u64::from(qty)),
                        },
                    })
                }
            })
            .collect())
    }

    fn open(workload: &Workload, pass: Pass) -> anyhow::Result<Self> {
        let mut book = OrderBook::new(workload.markets[0].id.as_str());
        let trades = Arc::new(AtomicU64::new(0));
        if pass == Pass::Observed {
            let counter = Arc::clone(&trades);
            book.set_trade_listener(Arc::new(move |result: &TradeResult| {
                let n = result.match_result.trades().len() as u64;
                counter.fetch_add(n, Ordering::Relaxed);
            }));
        }
        Ok(OrderbookRs {
            book,
            last: Outcome::Done,
            trades,
        })
    }

    fn execute(&mut self, op: &Op) {
        self.last = match *op {
            Op::Add {
                id,
                price,
                qty,
                side,
                tif,
            } => match self.book.add_limit_order(id, price, qty, side, tif, None) {
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Failed(e),
            },
            Op::Cancel(id) => found(self.book.cancel_order(id)),
            Op::Update(update) => found(self.book.update_order(update)),
        };
    }

    fn observe(&mut self, seen: &mut Observed) {
        match &self.last {
            Outcome::Done => {}
            Outcome::NotFound => seen.reject("NotFound"),
            Outcome::Failed(e) => {
                // The variant's name, without its fields.
                let e = format!("{e:?}");
                seen.reject(e.split(['(', ' ', '{']).next().unwrap_or_default());
            }
        }
        seen.trades = self.trades.load(Ordering::Relaxed);
        let levels = self.book.levels_with_cumulative_depth(Side::Buy).count()
            + self.book.levels_with_cumulative_depth(Side::Sell).count();
        seen.price_levels_max = seen.price_levels_max.max(levels);
    }

    fn resting_orders(&self) -> usize {
        self.book.get_all_orders().len()
    }
}

fn found<T>(result: Result<Option<T>, OrderBookError>) -> Outcome {
    match result {
        Ok(Some(_)) => Outcome::Done,
        Ok(None) => Outcome::NotFound,
        Err(e) => Outcome::Failed(e),
    }
}
