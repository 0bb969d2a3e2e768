//! Our engine, `matching_engine::Engine`: every market of a shard in one deterministic state
//! machine, with pre-trade funds holds, constraint matching and lease creation on each fill.

use anyhow::{bail, Context};
use contract::{
    Amount, BidSpec, ClientOrderId, Command, Event, FeeRate, Gpus, Hours, NewOrder, OrderId,
    OrderTerms, Price, Rejection, TimeInForce, Timestamp,
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
        // The preload's orders take the first ids.
        let id_offset = PRELOAD_ORDERS_PER_UNIT * workload.preload;
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
                        order_id: OrderId(*order + id_offset),
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
                            order_id: OrderId(*order + id_offset),
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
        let setup = setup(workload)?.into_iter().chain(preload(workload)?);
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

/// Orders the preload places per resting order and open lease it makes: a resting order,
/// and a bid with the ask that fills it.
const PRELOAD_ORDERS_PER_UNIT: u64 = 3;

/// The preload (`--preload N`) of the workload's markets, in turn: `N` open leases, each a
/// one-GPU bid at one tick filled by an IOC ask (made first, while no other order rests),
/// then `N` resting orders, half bids on up to 100 levels from one tick up (below the
/// workload's lowest price) and half asks on 100 levels from ten times its highest price
/// up, so nothing the workload sends
/// trades with them or meets them before its own levels. Its own buyer and provider, each
/// numbering its client ids from one.
fn preload(workload: &Workload) -> anyhow::Result<Vec<Command>> {
    const LEVELS: u64 = 100;
    let n = workload.preload;
    if n == 0 {
        return Ok(Vec::new());
    }
    let (buyer, provider) = (
        contract::AccountId(990_000_001),
        contract::AccountId(990_000_002),
    );
    let node = &workload.nodes[0].spec;
    let prices = workload.msgs.iter().filter_map(|m| match &m.kind {
        MsgKind::Place(place) => Some(place.price),
        _ => None,
    });
    let (lowest, highest) = prices.fold((u64::MAX, 1), |(lo, hi), p| (lo.min(p), hi.max(p)));
    // Bids stay below every price the workload sends.
    let bid_levels = LEVELS.min(lowest.saturating_sub(1)).max(1);
    let bid = BidSpec {
        hours: Hours::new(1)?,
        min_vram_gb: 0,
        regions: Vec::new(),
        interconnects: Vec::new(),
        vendor: None,
        min_reputation: contract::Reputation::MIN,
        single_node: false,
        all_or_none: false,
        min_fill: None,
    };
    let mut next_client = [0u128; 2];
    let mut order = |i: u64, account, tif, price: u64, terms| -> anyhow::Result<Command> {
        let market = &workload.markets[(i % workload.markets.len() as u64) as usize];
        let counter = &mut next_client[usize::from(account == provider)];
        *counter += 1;
        Ok(Command::Place(NewOrder {
            account,
            client_id: ClientOrderId(*counter),
            market: market.id,
            price: ticks(market.tick, price)?,
            gpus: Gpus::new(1)?,
            tif,
            post_only: false,
            terms,
        }))
    };
    let mut commands = vec![Command::Deposit {
        account: buyer,
        amount: BUYER_DEPOSIT,
    }];
    for i in 0..n {
        commands.push(order(
            i,
            buyer,
            TimeInForce::Gtc,
            1,
            OrderTerms::Bid(bid.clone()),
        )?);
        commands.push(order(
            i,
            provider,
            TimeInForce::Ioc,
            1,
            OrderTerms::Ask(node.clone()),
        )?);
    }
    for i in 0..n {
        let level = i / 2;
        commands.push(if i % 2 == 0 {
            let price = 1 + level % bid_levels;
            order(
                level,
                buyer,
                TimeInForce::Gtc,
                price,
                OrderTerms::Bid(bid.clone()),
            )?
        } else {
            let price = 10 * highest + level % LEVELS;
            order(
                level,
                provider,
                TimeInForce::Gtc,
                price,
                OrderTerms::Ask(node.clone()),
            )?
        });
    }
    Ok(commands)
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
