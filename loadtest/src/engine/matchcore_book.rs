//! The published `matchcore` crate: one instrument's limit order book, no accounts, no
//! funds checks, driven by sequenced commands.
//!
//! In 0.4.0 a limit order that crosses on arrival is matched with no price limit
//! (`submit_crossable_order` calls `match_order(.., None, ..)`), so once it has crossed it
//! keeps trading through worse levels, as a market order would. Its `trades` therefore
//! exceed the others' on the same messages, and the cancels of orders it filled that way
//! come back `OrderNotFound`.

use anyhow::ensure;
use matchcore::{
    AmendCmd, AmendPatch, CancelCmd, Command, CommandKind, CommandMeta, CommandOutcome,
    CommandReport, LimitOrder, LimitOrderPatch, NewOrder, OrderBook, OrderFlags, OrderId,
    OrderKind, Price, Quantity, QuantityPolicy, SequenceNumber, Side, SubmitCmd, TimeInForce,
    Timestamp,
};

use super::measure::{Book, Observed, Pass};
use super::workload::{self, Change, MsgKind, Workload};

#[derive(Debug)]
pub struct Matchcore {
    book: OrderBook,
    last: Option<CommandOutcome>,
}

impl Book for Matchcore {
    const NAME: &'static str = "matchcore";
    type Command = Command;

    fn convert(workload: &Workload) -> anyhow::Result<Vec<Command>> {
        ensure!(
            workload.markets.len() == 1,
            "matchcore runs one market per book"
        );
        // matchcore names an order by the sequence number of the command that submitted it.
        let mut submitted_at = vec![SequenceNumber(0); workload.new_orders as usize + 1];
        let mut commands = Vec::with_capacity(workload.msgs.len());
        for (seq, msg) in (0u64..).zip(&workload.msgs) {
            let kind = match &msg.kind {
                MsgKind::Place(place) => {
                    submitted_at[place.order as usize] = SequenceNumber(seq);
                    let side = match place.side() {
                        workload::Side::Bid => Side::Buy,
                        workload::Side::Ask => Side::Sell,
                    };
                    let tif = if place.ioc {
                        TimeInForce::Ioc
                    } else {
                        TimeInForce::Gtc
                    };
                    CommandKind::Submit(SubmitCmd {
                        order: NewOrder::Limit(LimitOrder::new(
                            Price(place.price),
                            standard(place.qty),
                            OrderFlags::new(side, false, tif),
                        )),
                    })
                }
                MsgKind::Cancel { order, .. } => CommandKind::Cancel(CancelCmd {
                    order_id: OrderId(submitted_at[*order as usize].0),
                    order_kind: OrderKind::Limit,
                }),
                MsgKind::Amend { order, change, .. } => {
                    let patch = match *change {
                        Change::Price(price) => LimitOrderPatch::new().with_price(Price(price)),
                        Change::Quantity(qty) => {
                            LimitOrderPatch::new().with_quantity_policy(standard(qty))
                        }
                    };
                    CommandKind::Amend(AmendCmd {
                        order_id: OrderId(submitted_at[*order as usize].0),
                        patch: AmendPatch::Limit(patch),
                    })
                }
            };
            commands.push(Command {
                meta: CommandMeta {
                    sequence_number: SequenceNumber(seq),
                    timestamp: Timestamp(seq),
                },
                kind,
            });
        }
        Ok(commands)
    }

    fn open(workload: &Workload, _pass: Pass) -> anyhow::Result<Self> {
        Ok(Matchcore {
            book: OrderBook::new(workload.markets[0].id.as_str()),
            last: None,
        })
    }

    fn execute(&mut self, command: &Command) {
        self.last = Some(self.book.execute(command));
    }

    fn observe(&mut self, seen: &mut Observed) {
        match &self.last {
            Some(CommandOutcome::Applied(
                CommandReport::Submit(effects) | CommandReport::Amend(effects),
            )) => {
                let orders =
                    std::iter::once(effects.target_order()).chain(effects.triggered_orders());
                seen.trades += orders
                    .filter_map(|o| o.match_result())
                    .map(|m| m.trades().len() as u64)
                    .sum::<u64>();
            }
            Some(CommandOutcome::Applied(CommandReport::Cancel)) | None => {}
            Some(CommandOutcome::Rejected(failure)) => {
                // The variant's name, without its fields.
                let failure = format!("{failure:?}");
                let name = failure.split(['(', ' ', '{']).next().unwrap_or_default();
                seen.reject(name);
            }
        }
        let limit = self.book.limit();
        let levels = limit.bids().len() + limit.asks().len();
        seen.price_levels_max = seen.price_levels_max.max(levels);
    }

    fn resting_orders(&self) -> usize {
        self.book.limit().orders().len()
    }
}

fn standard(qty: u32) -> QuantityPolicy {
    QuantityPolicy::Standard {
        quantity: Quantity(u64::from(qty)),
    }
}
