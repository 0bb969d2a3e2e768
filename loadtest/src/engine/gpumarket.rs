//! Our engine, `matching_engine::Engine`: every market of a shard in one deterministic state
//! machine, with pre-trade funds holds, constraint matching and lease creation on each fill.

use anyhow::{bail, Context};
use contract::{
    Amount, ClientOrderId, Command, Event, FeeRate, Gpus, NewOrder, OrderId, OrderTerms, Price,
    Rejection, TimeInForce, Timestamp,
};
use matching_engine::Engine;

use super::measure::{Book, Observed, Pass};
use super::workload::{Change, MsgKind, Terms, Workload};
use super::START;

/// Each buyer's deposit: far more than its bids can ever hold, and a thousand of them still
/// fit the engine's `i64` micro-units.
const BUYER_DEPOSIT: Amount = Amount::from_micros(1_000_000_000_000_000);
/// The market's cut of each lease in basis points, as a realistic exchange would charge.
const FEE_BPS: u64 = 10;

#[derive(Debug)]
pub struct Gpumarket {
    engine: Engine,
    out: Vec<Event>,
    last: Result<(), Rejection>,
    markets: Vec<contract::MarketId>,
}

impl Book for Gpumarket {
    const NAME: &'static str = "gpumarket";
    /// Each command with the time the log stamped on it, one millisecond apart.
    type Command = (Timestamp, Command);

    fn convert(workload: &Workload) -> anyhow::Result<Vec<(Timestamp, Command)>> {
        // Each account numbers its own orders, as a bot does.
        let mut client_ids: std::collections::HashMap<contract::AccountId, u128> =
            std::collections::HashMap::new();
        (1i64..)
            .zip(&workload.msgs)
            .map(|(i, msg)| {
                let market = &workload.markets[msg.market];
                let command = match &msg.kind {
                    MsgKind::Place(place) => Command::Place(NewOrder {
                        account: place.account,
                        client_id: ClientOrderId({
                            let next = client_ids.entry(place.account).or_insert(0);
                            *next += 1;
                            *next
                        }),
                        market: market.id,
                        price: ticks(market.tick, place.price)?,
                        gpus: Gpus::new(u64::from(place.qty))?,
                        tif: if place.ioc {
                            TimeInForce::Ioc
                        } else {
                            TimeInForce::Gtc
                        },
                        post_only: false,
                        terms: match &place.terms {
                            Terms::Bid(spec) => OrderTerms::Bid(spec.clone()),
                            Terms::Ask(node) => OrderTerms::Ask(workload.nodes[*node].spec.clone()),
                        },
                    }),
                    MsgKind::Cancel { order, account } => Command::Cancel {
                        account: *account,
                        order_id: OrderId(*order),
                    },
                    MsgKind::Amend {
                        order,
                        account,
                        change,
                    } => {
                        let (price, gpus) = match *change {
                            Change::Price(price) => (Some(ticks(market.tick, price)?), None),
                            Change::Quantity(qty) => (None, Some(Gpus::new(u64::from(qty))?)),
                        };
                        Command::Amend {
                            account: *account,
                            order_id: OrderId(*order),
                            price,
                            gpus,
                        }
                    }
                };
                Ok((Timestamp(START.0 + i), command))
            })
            .collect()
    }

    fn open(workload: &Workload, _pass: Pass) -> anyhow::Result<Self> {
        let setup = setup(workload)?;
        let mut engine = Engine::new();
        let mut out = Vec::with_capacity(64);
        for command in setup {
            engine
                .apply(START, &command, &mut out)
                .with_context(|| format!("setting up with {command:?}"))?;
            out.clear();
        }
        Ok(Gpumarket {
            engine,
            out,
            last: Ok(()),
            markets: workload.markets.iter().map(|m| m.id).collect(),
        })
    }

    fn execute(&mut self, (at, command): &(Timestamp, Command)) {
        self.out.clear();
        self.last = self.engine.apply(*at, command, &mut self.out);
    }

    fn observe(&mut self, seen: &mut Observed) {
        if let Err(rejection) = &self.last {
            seen.reject(rejection.code().as_str());
        }
        seen.trades += self
            .out
            .iter()
            .filter(|e| matches!(e, Event::LeaseCreated { .. }))
            .count() as u64;
        let levels = self.depths().map(|d| d.bids.len() + d.asks.len()).sum();
        seen.price_levels_max = seen.price_levels_max.max(levels);
    }

    fn resting_orders(&self) -> usize {
        self.depths()
            .flat_map(|d| d.bids.into_iter().chain(d.asks))
            .map(|level| level.orders as usize)
            .sum()
    }
}

/// The commands that open the workload's markets, fund its buyers and rate its providers.
pub fn setup(workload: &Workload) -> anyhow::Result<Vec<Command>> {
    let fee = FeeRate::new(FEE_BPS)?;
    Ok(workload
        .markets
        .iter()
        .map(|m| Command::CreateMarket {
            market: m.id,
            tick: m.tick,
            fee,
        })
        .chain(workload.buyers.iter().map(|&account| Command::Deposit {
            account,
            amount: BUYER_DEPOSIT,
        }))
        .chain(workload.providers.iter().map(|p| Command::SetReputation {
            provider: p.account,
            score: p.reputation,
        }))
        .collect())
}

impl Gpumarket {
    /// Every level of every market, as the engine publishes them.
    fn depths(&self) -> impl Iterator<Item = matching_engine::Depth> + '_ {
        self.markets
            .iter()
            .filter_map(|&m| self.engine.depth(m, usize::MAX))
    }
}

fn ticks(tick: Price, ticks: u64) -> anyhow::Result<Price> {
    let Some(micros) = i64::try_from(ticks)
        .ok()
        .and_then(|t| t.checked_mul(tick.micros()))
    else {
        bail!("{ticks} ticks of {tick} overflow a price");
    };
    Ok(Price::from_micros(micros))
}
