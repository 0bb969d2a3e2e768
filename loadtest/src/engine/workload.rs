//! The benchmark's message streams, generated once per run from a seed and shared by every
//! engine, so each engine is timed on exactly the same messages.
//!
//! A message refers to orders by their placement number (1, 2, …), which is also the id our
//! engine assigns to accepted orders; each engine adapter maps it to its own ids. While
//! generating, a small reference book (price-time priority, no constraints) tracks which
//! orders rest and what they have left, so cancels and amends target live orders. For the
//! plain workload that book is exact; for the gpu workload it ignores the bids' constraints,
//! so it only approximates what our engine fills, and some cancels and amends reach orders
//! that were already filled.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use contract::{
    AccountId, AskSpec, BidSpec, Hours, Interconnect, MarketId, NodeId, Price, Region, Reputation,
    Timestamp, Vendor,
};

/// Share of new orders that are immediate-or-cancel takers priced through the spread.
const IOC_SHARE: f64 = 0.15;
/// Share of resting orders that are cancelled at some point (the rest stay to the end).
const CANCEL_SHARE: f64 = 0.95;
/// Share of resting orders amended once before their cancel.
const AMEND_SHARE: f64 = 0.20;
/// Share of cancels that are sent a second time, after the order is gone.
const REPEAT_CANCEL_SHARE: f64 = 0.001;
/// A resting order lives for up to this many messages before its cancel, 10,000 on
/// average, which keeps a few thousand orders resting at any time.
const MAX_LIFETIME: u64 = 20_000;
const BUYERS: u64 = 1_000;
const PROVIDERS: u64 = 1_000;
/// Providers' accounts follow the buyers' so no order can trade with its own account.
const FIRST_PROVIDER: u64 = BUYERS + 1;
const REGIONS: [&str; 6] = [
    "us-east",
    "us-west",
    "eu-west",
    "eu-central",
    "ap-northeast",
    "ap-southeast",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Bid,
    Ask,
}

/// One benchmark workload: what must exist before the first message, and the messages.
#[derive(Debug)]
pub struct Workload {
    pub name: &'static str,
    pub seed: u64,
    pub markets: Vec<Market>,
    pub buyers: Vec<AccountId>,
    pub providers: Vec<Provider>,
    pub nodes: Vec<Node>,
    pub msgs: Vec<Msg>,
    pub new_orders: u64,
    /// What the reference book predicts; only where it is exact (the plain workload).
    pub expected: Option<Expected>,
    /// Resting orders, and as many open leases, that the engine holds before the first
    /// message (`--preload`), priced where no message trades with them: how cost grows with
    /// the state's size.
    pub preload: u64,
}

#[derive(Debug)]
pub struct Market {
    pub id: MarketId,
    pub tick: Price,
}

#[derive(Debug)]
pub struct Provider {
    pub account: AccountId,
    pub reputation: Reputation,
}

/// A provider's machine; every ask offers GPUs on one node.
#[derive(Debug)]
pub struct Node {
    pub provider: AccountId,
    pub spec: AskSpec,
    /// The gpu workload's asks offer at most this many GPUs; the plain workload, like the
    /// public benchmarks it follows, draws quantities without regard to the node.
    gpus: u32,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Expected {
    pub trades: u64,
    pub resting_orders_at_end: usize,
    pub price_levels_max: usize,
}

#[derive(Debug)]
pub struct Msg {
    /// Index into [`Workload::markets`].
    pub market: usize,
    pub kind: MsgKind,
}

#[derive(Debug)]
pub enum MsgKind {
    Place(Place),
    Cancel {
        order: u64,
        account: AccountId,
    },
    Amend {
        order: u64,
        account: AccountId,
        change: Change,
    },
}

#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// A new price in ticks, on the order's own side of the reference book (it never trades
    /// there).
    Price(u64),
    /// A smaller quantity, sent only for orders that have not traded, so "new quantity"
    /// means the same (total or remaining) to every engine.
    Quantity(u32),
}

#[derive(Debug)]
pub struct Place {
    pub order: u64,
    pub account: AccountId,
    /// In ticks of the market.
    pub price: u64,
    pub qty: u32,
    pub ioc: bool,
    pub terms: Terms,
}

#[derive(Debug)]
pub enum Terms {
    Bid(BidSpec),
    /// Index into [`Workload::nodes`].
    Ask(usize),
}

impl Place {
    pub fn side(&self) -> Side {
        match self.terms {
            Terms::Bid(_) => Side::Bid,
            Terms::Ask(_) => Side::Ask,
        }
    }
}

/// One GPU class and how its orders are drawn.
struct Class {
    market: &'static str,
    vendor: Vendor,
    vram_gb: u32,
    interconnects: &'static [Interconnect],
    /// Share of the gpu workload's new orders, in percent.
    weight: u64,
    mid: u64,
}

struct Shape {
    name: &'static str,
    tick_micros: i64,
    /// Resting prices lie up to this many ticks from the mid, mostly near it.
    depth_ticks: u64,
    /// The mid wanders this far from where it starts, so newer orders sometimes cross
    /// older ones.
    drift_ticks: u64,
    classes: &'static [Class],
    constrained: bool,
}

const PLAIN: Shape = Shape {
    name: "plain",
    tick_micros: 10_000,
    depth_ticks: 100,
    drift_ticks: 40,
    classes: &[Class {
        market: "H100-80GB",
        vendor: Vendor::Nvidia,
        vram_gb: 80,
        interconnects: &[Interconnect::NvSwitch],
        weight: 100,
        mid: 200,
    }],
    constrained: false,
};

const GPU: Shape = Shape {
    name: "gpu",
    tick_micros: 1_000,
    depth_ticks: 150,
    drift_ticks: 50,
    classes: &[
        Class {
            market: "H100-80GB",
            vendor: Vendor::Nvidia,
            vram_gb: 80,
            interconnects: &[
                Interconnect::Pcie,
                Interconnect::NvLink,
                Interconnect::NvSwitch,
            ],
            weight: 40,
            mid: 2_500,
        },
        Class {
            market: "A100-80GB",
            vendor: Vendor::Nvidia,
            vram_gb: 80,
            interconnects: &[
                Interconnect::Pcie,
                Interconnect::NvLink,
                Interconnect::NvSwitch,
            ],
            weight: 25,
            mid: 1_400,
        },
        Class {
            market: "RTX4090-24GB",
            vendor: Vendor::Nvidia,
            vram_gb: 24,
            interconnects: &[Interconnect::Pcie],
            weight: 20,
            mid: 400,
        },
        Class {
            market: "MI300X-192GB",
            vendor: Vendor::Amd,
            vram_gb: 192,
            interconnects: &[Interconnect::Pcie, Interconnect::InfinityFabric],
            weight: 15,
            mid: 2_200,
        },
    ],
    constrained: true,
};

/// One market, unconstrained limit orders with one-hour bids, as in public order-book
/// benchmarks.
pub fn plain(orders: u64, seed: u64, start: Timestamp) -> Workload {
    let (mut workload, expected) = Generator::new(&PLAIN, seed, start).run(orders);
    workload.expected = Some(expected);
    workload
}

/// Four GPU markets with node attributes on asks and constraints on bids. The reference
/// book's figures are left out: it does not know the constraints.
pub fn gpu(orders: u64, seed: u64, start: Timestamp) -> Workload {
    Generator::new(&GPU, seed, start).run(orders).0
}

/// splitmix64: tiny, fast and good enough to draw a benchmark's message mix.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is far below what a benchmark notices).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) < p * (1u64 << 53) as f64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Cancel,
    Amend,
    /// The order is gone by then; the message goes out as the owner's first cancel did.
    RepeatCancel {
        market: usize,
        account: AccountId,
    },
}

#[derive(Debug)]
struct Live {
    market: usize,
    side: Side,
    price: u64,
    remaining: u32,
    account: AccountId,
    traded: bool,
    /// A bid's minimum fill (1 when it has none): an amend may not go below it.
    min_fill: u32,
}

#[derive(Debug, Default)]
struct Book {
    bids: BTreeMap<u64, VecDeque<u64>>,
    asks: BTreeMap<u64, VecDeque<u64>>,
    mid: u64,
}

impl Book {
    fn side(&mut self, side: Side) -> &mut BTreeMap<u64, VecDeque<u64>> {
        match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        }
    }

    fn best(&self, side: Side) -> Option<u64> {
        match side {
            Side::Bid => self.bids.keys().next_back().copied(),
            Side::Ask => self.asks.keys().next().copied(),
        }
    }

    fn unlink(&mut self, order: u64, side: Side, price: u64) {
        let levels = self.side(side);
        let queue = levels
            .get_mut(&price)
            .expect("a live order is on its price level");
        let at = queue
            .iter()
            .position(|&o| o == order)
            .expect("a live order is in its level's queue");
        queue.remove(at);
        if queue.is_empty() {
            levels.remove(&price);
        }
    }
}

struct Generator<'s> {
    shape: &'s Shape,
    rng: Rng,
    workload: Workload,
    /// Per class, the nodes that can carry its asks.
    class_nodes: Vec<Vec<usize>>,
    regions: Vec<Region>,
    books: Vec<Book>,
    live: HashMap<u64, Live>,
    /// Cancels and amends due at a message count; ties go to the older order.
    due: BinaryHeap<Reverse<(u64, u64, Action)>>,
    trades: u64,
    levels_max: usize,
}

impl<'s> Generator<'s> {
    fn new(shape: &'s Shape, seed: u64, start: Timestamp) -> Self {
        let mut rng = Rng(seed);
        let regions: Vec<Region> = REGIONS
            .iter()
            .map(|r| Region::parse(r).expect("region names are valid ids"))
            .collect();
        let markets = shape
            .classes
            .iter()
            .map(|class| Market {
                id: MarketId::parse(class.market).expect("class names are valid market ids"),
                tick: Price::from_micros(shape.tick_micros),
            })
            .collect();
        let buyers = (1..=BUYERS).map(AccountId).collect();
        let mut providers = Vec::new();
        let mut nodes = Vec::new();
        let mut class_nodes = vec![Vec::new(); shape.classes.len()];
        // A year past the start: far beyond the last message, whatever `--orders` is.
        let available_until = Timestamp(start.0 + 365 * 24 * Timestamp::MS_PER_HOUR);
        for account in (FIRST_PROVIDER..FIRST_PROVIDER + PROVIDERS).map(AccountId) {
            let reputation = if shape.constrained {
                rng.between(300, 1_000)
            } else {
                1_000
            };
            providers.push(Provider {
                account,
                reputation: Reputation::new(reputation).expect("reputations are at most 1000"),
            });
            let class_index = pick_weighted(&mut rng, shape.classes);
            let class = &shape.classes[class_index];
            let node_count = if shape.constrained {
                rng.between(1, 4)
            } else {
                1
            };
            for n in 0..node_count {
                let gpus = if shape.constrained {
                    *rng.pick(&[1, 2, 4, 8])
                } else {
                    8
                };
                class_nodes[class_index].push(nodes.len());
                nodes.push(Node {
                    provider: account,
                    gpus,
                    spec: AskSpec {
                        node: NodeId::parse(&format!("node-{}-{n}", account.0))
                            .expect("node names are valid ids"),
                        vendor: class.vendor,
                        vram_gb: class.vram_gb,
                        interconnect: *rng.pick(class.interconnects),
                        region: *rng.pick(&regions),
                        available_until,
                    },
                });
            }
        }
        let books = shape
            .classes
            .iter()
            .map(|class| Book {
                mid: class.mid,
                ..Book::default()
            })
            .collect();
        Generator {
            shape,
            rng,
            workload: Workload {
                name: shape.name,
                seed,
                markets,
                buyers,
                providers,
                nodes,
                msgs: Vec::new(),
                new_orders: 0,
                expected: None,
                preload: 0,
            },
            class_nodes,
            regions,
            books,
            live: HashMap::new(),
            due: BinaryHeap::new(),
            trades: 0,
            levels_max: 0,
        }
    }

    fn run(mut self, orders: u64) -> (Workload, Expected) {
        loop {
            let now = self.workload.msgs.len() as u64;
            let placed_all = self.workload.new_orders == orders;
            match self.due.peek() {
                Some(&Reverse((at, order, action))) if at <= now || placed_all => {
                    self.due.pop();
                    self.act(order, action);
                }
                _ if !placed_all => self.place(),
                _ => break,
            }
            let levels = self.books.iter().map(|b| b.bids.len() + b.asks.len()).sum();
            self.levels_max = self.levels_max.max(levels);
        }
        let expected = Expected {
            trades: self.trades,
            resting_orders_at_end: self.live.len(),
            price_levels_max: self.levels_max,
        };
        (self.workload, expected)
    }

    fn now(&self) -> u64 {
        self.workload.msgs.len() as u64
    }

    fn place(&mut self) {
        let market = pick_weighted(&mut self.rng, self.shape.classes);
        let side = if self.rng.chance(0.5) {
            Side::Bid
        } else {
            Side::Ask
        };
        let ioc = self.rng.chance(IOC_SHARE);
        let book = &mut self.books[market];
        let anchor = self.shape.classes[market].mid;
        if self.rng.chance(0.01) {
            let drift = self.shape.drift_ticks;
            book.mid = if self.rng.chance(0.5) {
                (book.mid + 1).min(anchor + drift)
            } else {
                (book.mid - 1).max(anchor - drift)
            };
        }
        let (price, qty) = if ioc {
            // Takers price a few ticks through the best opposite order, so they trade.
            let through = self.rng.below(4);
            let price = match (side, book.best(opposite(side))) {
                (Side::Bid, Some(ask)) => ask + through,
                (Side::Ask, Some(bid)) => bid.saturating_sub(through).max(1),
                (Side::Bid, None) => book.mid + 5,
                (Side::Ask, None) => book.mid - 5,
            };
            (price, self.rng.between(1, 64) as u32)
        } else {
            // Resting prices crowd near the mid, as in real books.
            let depth = self.shape.depth_ticks;
            let offset = 1 + self.rng.below(depth).min(self.rng.below(depth));
            let price = match side {
                Side::Bid => book.mid - offset,
                Side::Ask => book.mid + offset,
            };
            (price, self.rng.between(1, 32) as u32)
        };
        let (account, terms, qty) = match side {
            Side::Bid => {
                let account = *self.rng.pick(&self.workload.buyers);
                let spec = self.bid_spec(market, qty);
                let qty = if spec.single_node { qty.min(8) } else { qty };
                (account, Terms::Bid(spec), qty)
            }
            Side::Ask => {
                let node = *self.rng.pick(&self.class_nodes[market]);
                let node_gpus = self.workload.nodes[node].gpus;
                let qty = if self.shape.constrained {
                    self.rng.between(1, u64::from(node_gpus)) as u32
                } else {
                    qty
                };
                (self.workload.nodes[node].provider, Terms::Ask(node), qty)
            }
        };
        let min_fill = match &terms {
            Terms::Bid(spec) => spec.min_fill.map_or(1, |g| g.get()),
            Terms::Ask(_) => 1,
        };
        self.workload.new_orders += 1;
        let order = self.workload.new_orders;
        self.emit(
            market,
            MsgKind::Place(Place {
                order,
                account,
                price,
                qty,
                ioc,
                terms,
            }),
        );
        let remaining = self.take(market, side, price, qty);
        if remaining == 0 || ioc {
            return;
        }
        self.books[market]
            .side(side)
            .entry(price)
            .or_default()
            .push_back(order);
        self.live.insert(
            order,
            Live {
                market,
                side,
                price,
                remaining,
                account,
                traded: remaining < qty,
                min_fill,
            },
        );
        let now = self.now();
        let cancel_at = self
            .rng
            .chance(CANCEL_SHARE)
            .then(|| now + self.rng.between(1, MAX_LIFETIME));
        if let Some(at) = cancel_at {
            self.due.push(Reverse((at, order, Action::Cancel)));
        }
        if self.rng.chance(AMEND_SHARE) {
            let last = cancel_at.map_or(MAX_LIFETIME, |at| at - now);
            let at = now + self.rng.between(1, last);
            self.due.push(Reverse((at, order, Action::Amend)));
        }
    }

    /// The bid's constraints: none in the plain workload; in the gpu workload, a realistic
    /// mix drawn from the class's attributes.
    fn bid_spec(&mut self, market: usize, qty: u32) -> BidSpec {
        let rng = &mut self.rng;
        if !self.shape.constrained {
            return BidSpec::any(Hours::new(1).expect("one hour is valid"));
        }
        let class = &self.shape.classes[market];
        let mut spec = BidSpec::any(Hours::new(rng.between(1, 8)).expect("1..=8 hours is valid"));
        if rng.chance(0.5) {
            let wanted = rng.between(1, 3);
            while (spec.regions.len() as u64) < wanted {
                let region = *rng.pick(&self.regions);
                if !spec.regions.contains(&region) {
                    spec.regions.push(region);
                }
            }
        }
        if rng.chance(0.3) {
            spec.min_vram_gb = class.vram_gb;
        }
        if rng.chance(0.3) {
            let wanted = rng.between(1, class.interconnects.len() as u64);
            while (spec.interconnects.len() as u64) < wanted {
                let interconnect = *rng.pick(class.interconnects);
                if !spec.interconnects.contains(&interconnect) {
                    spec.interconnects.push(interconnect);
                }
            }
        }
        if rng.chance(0.2) {
            spec.vendor = Some(class.vendor);
        }
        if rng.chance(0.3) {
            spec.min_reputation =
                Reputation::new(rng.between(400, 900)).expect("reputations are at most 1000");
        }
        spec.single_node = rng.chance(0.10);
        spec.all_or_none = rng.chance(0.05);
        if rng.chance(0.10) {
            let most = if spec.single_node { qty.min(8) } else { qty };
            spec.min_fill = Some(
                contract::Gpus::new(rng.between(1, u64::from(most)))
                    .expect("min fill is at least one GPU"),
            );
        }
        spec
    }

    /// Matches an incoming order in the reference book and returns what is left of it.
    fn take(&mut self, market: usize, side: Side, limit: u64, mut qty: u32) -> u32 {
        let book = &mut self.books[market];
        let makers = book.side(opposite(side));
        while qty > 0 {
            let level = match side {
                Side::Bid => makers.first_entry(),
                Side::Ask => makers.last_entry(),
            };
            let Some(mut level) = level else { break };
            let crosses = match side {
                Side::Bid => *level.key() <= limit,
                Side::Ask => *level.key() >= limit,
            };
            if !crosses {
                break;
            }
            let queue = level.get_mut();
            while qty > 0 {
                let Some(&maker) = queue.front() else { break };
                let resting = self.live.get_mut(&maker).expect("queued orders are live");
                let fill = qty.min(resting.remaining);
                qty -= fill;
                resting.remaining -= fill;
                resting.traded = true;
                self.trades += 1;
                if resting.remaining == 0 {
                    self.live.remove(&maker);
                    queue.pop_front();
                }
            }
            if queue.is_empty() {
                level.remove();
            }
        }
        qty
    }

    fn act(&mut self, order: u64, action: Action) {
        if let Action::RepeatCancel { market, account } = action {
            self.emit(market, MsgKind::Cancel { order, account });
            return;
        }
        // The order may have been filled since the action was scheduled.
        let Some(live) = self.live.get(&order) else {
            return;
        };
        let (market, side, price, account) = (live.market, live.side, live.price, live.account);
        if action == Action::Amend {
            let change = self.amend(order);
            let kind = MsgKind::Amend {
                order,
                account,
                change,
            };
            self.emit(market, kind);
            return;
        }
        self.books[market].unlink(order, side, price);
        self.live.remove(&order);
        self.emit(market, MsgKind::Cancel { order, account });
        if self.rng.chance(REPEAT_CANCEL_SHARE) {
            let at = self.now() + self.rng.between(1, 1_000);
            let repeat = Action::RepeatCancel { market, account };
            self.due.push(Reverse((at, order, repeat)));
        }
    }

    /// Draws an amend for a live order and applies it to the reference book: half lower the
    /// quantity of an untouched order (keeping its place, and never below a bid's minimum
    /// fill); the rest move its price a few ticks, never across the spread (to the back of
    /// the new level).
    fn amend(&mut self, order: u64) -> Change {
        let live = &self.live[&order];
        let (market, side, price, remaining) = (live.market, live.side, live.price, live.remaining);
        if !live.traded && remaining > live.min_fill && self.rng.chance(0.5) {
            let qty = self
                .rng
                .between(u64::from(live.min_fill), u64::from(remaining) - 1)
                as u32;
            self.live.get_mut(&order).expect("checked above").remaining = qty;
            return Change::Quantity(qty);
        }
        let book = &mut self.books[market];
        let step = self.rng.between(1, 5);
        let toward = self.rng.chance(0.5);
        let mut new = match (side, toward) {
            (Side::Bid, true) | (Side::Ask, false) => price + step,
            (Side::Bid, false) | (Side::Ask, true) => price.saturating_sub(step).max(1),
        };
        // Stay on our side of the spread: an amend that trades is a different benchmark.
        new = match (side, book.best(opposite(side))) {
            (Side::Bid, Some(ask)) => new.min(ask - 1),
            (Side::Ask, Some(bid)) => new.max(bid + 1),
            (_, None) => new,
        };
        if new == price {
            new = match side {
                Side::Bid => price - 1,
                Side::Ask => price + 1,
            };
        }
        book.unlink(order, side, price);
        book.side(side).entry(new).or_default().push_back(order);
        self.live.get_mut(&order).expect("checked above").price = new;
        Change::Price(new)
    }

    fn emit(&mut self, market: usize, kind: MsgKind) {
        self.workload.msgs.push(Msg { market, kind });
    }
}

fn opposite(side: Side) -> Side {
    match side {
        Side::Bid => Side::Ask,
        Side::Ask => Side::Bid,
    }
}

fn pick_weighted(rng: &mut Rng, classes: &[Class]) -> usize {
    let total = classes.iter().map(|c| c.weight).sum();
    let mut roll = rng.below(total);
    classes
        .iter()
        .position(|c| {
            let hit = roll < c.weight;
            roll = roll.saturating_sub(c.weight);
            hit
        })
        .expect("the roll is below the total weight")
}
