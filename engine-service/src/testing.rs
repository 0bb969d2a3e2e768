//! Test support for crates that drive the engine service: seeded generators of realistic
//! command streams, [`market_day`] (schema 1's trading, leases ended by stated hours) and
//! [`metered_day`] (metered leases, signed heartbeats, silent nodes, the clock). Behind the
//! `testing` feature; the services never use it.

use contract::codec::CommandRecord;
use contract::{
    AccountId, Amount, AskSpec, BidSpec, ClientOrderId, Command, FeeRate, Gpus, Hours,
    Interconnect, LeaseEndReason, LeaseId, MarketId, NewOrder, NodeId, OrderId, OrderTerms, Price,
    Region, Reputation, TimeInForce, Timestamp, Vendor,
};

/// The time of the first command.
pub const T0: i64 = 1_767_225_600_000;
/// Buyers are accounts `1..=BUYERS`.
pub const BUYERS: u64 = 20;
/// Provider accounts.
pub const PROVIDERS: std::ops::RangeInclusive<u64> = 101..=110;

/// splitmix64: a tiny deterministic generator so a failing seed can be replayed.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A market's day: deposits, withdrawals (the market's fees too), asks and constrained bids,
/// cancels, amends and lease ends, so every kind of money movement occurs.
pub fn market_day(rng: &mut Rng, count: usize) -> Vec<CommandRecord> {
    let market = MarketId::parse("H100-80GB").unwrap();
    let regions = ["eu-west", "us-east", "ap-south"].map(|r| Region::parse(r).unwrap());
    let mut out = vec![Command::CreateMarket {
        market,
        tick: Price::parse("0.01").unwrap(),
        fee: FeeRate::new(300).unwrap(),
    }];
    for account in 1..=BUYERS {
        out.push(Command::Deposit {
            account: AccountId(account),
            amount: Amount::parse("1000000").unwrap(),
        });
    }
    for provider in PROVIDERS {
        out.push(Command::SetReputation {
            provider: AccountId(provider),
            score: Reputation::new(500 + provider % 5 * 100).unwrap(),
        });
    }
    let mut placed = 0u64;
    while out.len() < count {
        let roll = rng.below(100);
        let cents = 180 + rng.below(40) as i64;
        let command = match roll {
            0..=37 => {
                placed += 1;
                let mut spec = BidSpec::any(Hours::new(1 + rng.below(4)).unwrap());
                if rng.below(3) == 0 {
                    spec.regions = vec![regions[rng.below(3) as usize]];
                }
                spec.single_node = rng.below(8) == 0;
                spec.min_reputation = Reputation::new(rng.below(3) * 300).unwrap();
                Command::Place(NewOrder {
                    account: AccountId(1 + rng.below(BUYERS)),
                    client_id: ClientOrderId(u128::from(placed)),
                    market,
                    price: Price::from_micros(cents * 10_000),
                    gpus: Gpus::new(1 + rng.below(8)).unwrap(),
                    tif: match rng.below(10) {
                        0..=1 => TimeInForce::Ioc,
                        2 => TimeInForce::Gtt {
                            expires_at: Timestamp(T0 + out.len() as i64 * 10 + 5_000),
                        },
                        _ => TimeInForce::Gtc,
                    },
                    post_only: false,
                    terms: OrderTerms::Bid(spec),
                })
            }
            38..=72 => {
                placed += 1;
                Command::Place(NewOrder {
                    account: AccountId(101 + rng.below(10)),
                    client_id: ClientOrderId(u128::from(placed)),
                    market,
                    price: Price::from_micros((cents + 5) * 10_000),
                    gpus: Gpus::new(1 + rng.below(8)).unwrap(),
                    tif: TimeInForce::Gtc,
                    post_only: rng.below(10) == 0,
                    terms: OrderTerms::Ask(AskSpec {
                        node: NodeId::parse(&format!("node-{}", rng.below(50))).unwrap(),
                        vendor: Vendor::Nvidia,
                        vram_gb: 80,
                        interconnect: Interconnect::NvLink,
                        region: regions[rng.below(3) as usize],
                        available_until: Timestamp(T0 + 100 * 3_600_000),
                    }),
                })
            }
            73..=84 => Command::Cancel {
                account: AccountId(if rng.below(2) == 0 {
                    1 + rng.below(BUYERS)
                } else {
                    101 + rng.below(10)
                }),
                order_id: OrderId(1 + rng.below(placed.max(1))),
            },
            85..=90 => Command::Amend {
                account: AccountId(1 + rng.below(BUYERS)),
                order_id: OrderId(1 + rng.below(placed.max(1))),
                price: (rng.below(2) == 0).then(|| Price::from_micros(cents * 10_000)),
                gpus: Some(Gpus::new(1 + rng.below(6)).unwrap()),
            },
            91 => Command::StartLease {
                provider: AccountId(101 + rng.below(10)),
                lease_id: LeaseId(1 + rng.below(placed.max(1) / 2 + 1)),
            },
            92 => Command::Heartbeat {
                provider: AccountId(101 + rng.below(10)),
                node: NodeId::parse(&format!("node-{}", rng.below(50))).unwrap(),
                // Now and then a node's hardware is not what its asks say.
                class: if rng.below(20) == 0 {
                    MarketId::parse("A100-40GB").unwrap()
                } else {
                    market
                },
                gpus: Gpus::new(8).unwrap(),
            },
            93..=95 => Command::EndLease {
                by: AccountId::MARKET,
                lease_id: LeaseId(1 + rng.below(placed.max(1) / 2 + 1)),
                hours_used: rust_decimal::Decimal::new(rng.below(4_000) as i64, 3),
                reason: if rng.below(4) == 0 {
                    LeaseEndReason::ProviderFailed
                } else {
                    LeaseEndReason::Completed
                },
            },
            // An hour's storage charge, for one of the two hours before the day: the first
            // of each buyer is taken (as far as its balance goes), the rest refused.
            97 => {
                const HOUR: i64 = 3_600_000;
                let at = T0 + out.len() as i64 * 10;
                Command::ChargeStorage {
                    account: AccountId(1 + rng.below(BUYERS)),
                    hour: Timestamp((at / HOUR - 1 - rng.below(2) as i64) * HOUR),
                    bytes: rng.below(1 << 40),
                    amount: Amount::from_micros(1 + rng.below(5_000_000) as i64),
                }
            }
            96 => Command::Withdraw {
                account: AccountId(if rng.below(2) == 0 {
                    1 + rng.below(BUYERS)
                } else {
                    101 + rng.below(10)
                }),
                amount: Amount::from_micros(1 + rng.below(50_000_000) as i64),
            },
            98 => Command::Withdraw {
                account: AccountId::MARKET,
                amount: Amount::from_micros(1 + rng.below(1_000_000) as i64),
            },
            _ => Command::Deposit {
                account: AccountId(1 + rng.below(BUYERS)),
                amount: Amount::from_micros(1 + rng.below(500_000_000) as i64),
            },
        };
        out.push(command);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, command)| CommandRecord {
            at: Timestamp(T0 + i as i64 * 10),
            command,
        })
        .collect()
}

/// When [`metered_day`]'s trading starts (its markets and deposits come a second before):
/// noon UTC the day before [`T0`], so the day crosses midnight, which is also a month's and
/// a year's end.
pub const METERED_START: i64 = T0 - 12 * HOUR_MS;
/// How long [`metered_day`] runs.
pub const METERED_SPAN: i64 = 24 * HOUR_MS;

const HOUR_MS: i64 = 3_600_000;

/// A node of [`metered_day`]: its provider, name, market (an index into the day's
/// markets), GPUs, ask price in cents per GPU-hour and region, and when it is silent
/// (seconds since [`METERED_START`], `[from, to)`).
struct Site {
    provider: u64,
    name: &'static str,
    market: usize,
    gpus: u32,
    cents: i64,
    region: &'static str,
    silent: &'static [(i64, i64)],
}

/// Four nodes: three H100 nodes, one of which drops out twice (9 and 25 minutes), and an
/// RTX 4090 node that goes silent after twenty hours and never returns.
const SITES: [Site; 4] = [
    Site {
        provider: 101,
        name: "fra-h100-1",
        market: 0,
        gpus: 4,
        cents: 200,
        region: "eu-west",
        silent: &[],
    },
    Site {
        provider: 102,
        name: "iad-h100-1",
        market: 0,
        gpus: 4,
        cents: 210,
        region: "us-east",
        silent: &[],
    },
    Site {
        provider: 103,
        name: "bom-h100-1",
        market: 0,
        gpus: 2,
        cents: 190,
        region: "ap-south",
        silent: &[
            (5 * 3_600, 5 * 3_600 + 540),
            (14 * 3_600, 14 * 3_600 + 1_500),
        ],
    },
    Site {
        provider: 104,
        name: "fra-4090-1",
        market: 1,
        gpus: 2,
        cents: 45,
        region: "eu-west",
        silent: &[(20 * 3_600, i64::MAX)],
    },
];

/// What the day's agents and buyers know of a running lease.
struct Running {
    site: usize,
    gpus: u32,
    buyer: AccountId,
    /// When its buyer stops it, if before its term.
    stop_at: Option<i64>,
    /// Its node has listed it in a heartbeat (and started its job).
    listed: bool,
}

/// The agents' and buyers' view of a [`metered_day`]: the commands so far, and an engine
/// that answered them.
struct Day {
    engine: matching_engine::Engine,
    commands: Vec<CommandRecord>,
    events: Vec<contract::Event>,
    /// Open asks: order id → (site, GPUs left).
    asks: std::collections::BTreeMap<u64, (usize, u32)>,
    leases: std::collections::BTreeMap<u64, Running>,
}

impl Day {
    /// Appends `command` at `at` (or just after the last command, so times increase),
    /// answers it, and follows what it did to asks and leases. A rejection is an answer
    /// like any other: the buyer or agent moves on.
    fn send(&mut self, rng: &mut Rng, at: i64, command: Command) {
        use contract::Event;
        let last = self.commands.last().map_or(i64::MIN, |c| c.at.0);
        let record = CommandRecord {
            at: Timestamp(at.max(last.saturating_add(1))),
            command,
        };
        self.events.clear();
        let _ = self
            .engine
            .apply(record.at, &record.command, &mut self.events);
        for event in &self.events {
            match event {
                Event::OrderAccepted {
                    order_id, order, ..
                } => {
                    if let OrderTerms::Ask(spec) = &order.terms {
                        let site = site_of(spec.node);
                        self.asks.insert(order_id.0, (site, order.gpus.get()));
                    }
                }
                Event::OrderCancelled { order_id, .. } => {
                    self.asks.remove(&order_id.0);
                }
                Event::LeaseCreated {
                    lease_id,
                    buyer,
                    node,
                    ask_order,
                    ask_remaining,
                    gpus,
                    start,
                    hours,
                    ..
                } => {
                    if *ask_remaining == 0 {
                        self.asks.remove(&ask_order.0);
                    } else if let Some(ask) = self.asks.get_mut(&ask_order.0) {
                        ask.1 = *ask_remaining;
                    }
                    // A third of the leases are stopped by their buyers, five minutes or
                    // more into the term.
                    let term = hours.get() as i64 * HOUR_MS;
                    let stop_at = (rng.below(3) == 0)
                        .then(|| start.0 + 300_000 + rng.below((term - 300_000) as u64) as i64);
                    self.leases.insert(
                        lease_id.0,
                        Running {
                            site: site_of(*node),
                            gpus: gpus.get(),
                            buyer: *buyer,
                            stop_at,
                            listed: false,
                        },
                    );
                }
                Event::LeaseClosed { lease_id, .. } | Event::LeaseEnded { lease_id, .. } => {
                    self.leases.remove(&lease_id.0);
                }
                _ => {}
            }
        }
        self.commands.push(record);
    }
}

fn site_of(node: NodeId) -> usize {
    SITES
        .iter()
        .position(|s| s.name == node.as_str())
        .expect("the day's orders are on its nodes")
}

/// A day of metered trading, [`METERED_SPAN`] from [`METERED_START`]: two markets
/// configured with hourly charge periods; four nodes whose agents send a signed heartbeat
/// every 10 s listing their running leases (starting each lease's job as they first list
/// it) and offer their free GPUs; buyers placing about 200 metered bids
/// (`Command::PlaceWith`, half of them re-bidding on failure; GTC, IOC and GTT) and
/// stopping about a third of their leases early; a node that drops out twice and one that
/// goes silent for good; now and then a node reporting a lease unhealthy; and a `Tick` in
/// every second no other command arrives, as the engine client sends them.
///
/// The agents and buyers act on what the engine answered, as the real ones watch theirs:
/// the generator answers each command with an engine of its own as it makes them, and a
/// replay of the commands answers the same.
pub fn metered_day(rng: &mut Rng) -> Vec<CommandRecord> {
    use contract::{
        ChargePeriod, GpuStatus, MarketConfig, MarketConfigFields, NodeKey, OrderOptions,
        ReportEvidence, ShortText, Signature, SignedHeartbeat,
    };

    let markets = [
        (
            MarketId::parse("H100-80GB").unwrap(),
            "NVIDIA H100 80GB HBM3",
            81_559,
        ),
        (
            MarketId::parse("RTX4090-24GB").unwrap(),
            "NVIDIA GeForce RTX 4090",
            24_564,
        ),
    ];
    let mut day = Day {
        engine: matching_engine::Engine::new(),
        commands: Vec::new(),
        events: Vec::new(),
        asks: Default::default(),
        leases: Default::default(),
    };
    let mut sequence = [0u64; SITES.len()];
    let mut offered_at = [i64::MIN / 2; SITES.len()];
    let mut client = 0u128;
    let setup = METERED_START - 1_000;
    for (market, _, _) in markets {
        day.send(
            rng,
            setup,
            Command::CreateMarket {
                market,
                tick: Price::parse("0.01").unwrap(),
                fee: FeeRate::new(300).unwrap(),
            },
        );
        let config = MarketConfig::new(MarketConfigFields {
            charge_period: ChargePeriod::HOUR,
            ..MarketConfigFields::default()
        })
        .expect("the defaults with hourly periods are valid");
        day.send(rng, setup, Command::ConfigureMarket { market, config });
    }
    for account in 1..=BUYERS {
        day.send(
            rng,
            setup,
            Command::Deposit {
                account: AccountId(account),
                amount: Amount::parse("5000").unwrap(),
            },
        );
    }

    for second in 0..METERED_SPAN / 1_000 {
        let now = METERED_START + second * 1_000;
        let before = day.commands.len();
        for (i, site) in SITES.iter().enumerate() {
            // The agents report every 10 s, a second apart.
            let silent = site
                .silent
                .iter()
                .any(|(from, to)| (*from..*to).contains(&second));
            if silent || second % 10 != i as i64 {
                continue;
            }
            let (market, model, memory_mb) = markets[site.market];
            let provider = AccountId(site.provider);
            let node = NodeId::parse(site.name).unwrap();
            let running: Vec<(u64, bool)> = day
                .leases
                .iter()
                .filter(|(_, l)| l.site == i)
                .map(|(id, l)| (*id, l.listed))
                .collect();
            for &(id, listed) in &running {
                if !listed {
                    day.leases.get_mut(&id).expect("just listed").listed = true;
                    let lease_id = LeaseId(id);
                    day.send(rng, now, Command::StartLease { provider, lease_id });
                }
            }
            // Now and then a GPU faults: the agent stops listing a lease it listed before.
            let faulty = running
                .iter()
                .find(|(_, listed)| *listed)
                .filter(|_| rng.below(1_500) == 0)
                .map(|(id, _)| *id);
            sequence[i] += 1;
            let heartbeat = SignedHeartbeat {
                provider,
                node,
                market,
                sequence: sequence[i],
                reported_at: Timestamp(now),
                simulated: false,
                gpus: (0..site.gpus)
                    .map(|index| GpuStatus {
                        index,
                        vendor: Vendor::Nvidia,
                        model: ShortText::parse(model).unwrap(),
                        uuid: ShortText::parse(&format!("GPU-{}-{index}", site.name)).unwrap(),
                        memory_mb: Some(memory_mb),
                        pci_bus_id: None,
                        healthy: true,
                    })
                    .collect(),
                healthy_leases: running
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| Some(*id) != faulty)
                    .map(LeaseId)
                    .collect(),
                evidence: ReportEvidence {
                    node_key: NodeKey([i as u8 + 1; 32]),
                    signed: b"{}".to_vec(),
                    signature: Signature([i as u8 + 1; 64]),
                },
            };
            day.send(rng, now, Command::SignedHeartbeat(Box::new(heartbeat)));
            // The agent offers its free GPUs, at most once a minute.
            let busy: u32 = day
                .leases
                .values()
                .filter(|l| l.site == i)
                .map(|l| l.gpus)
                .chain(day.asks.values().filter(|a| a.0 == i).map(|a| a.1))
                .sum();
            if busy < site.gpus && now - offered_at[i] >= 60_000 {
                offered_at[i] = now;
                client += 1;
                let ask = NewOrder {
                    account: provider,
                    client_id: ClientOrderId(client),
                    market,
                    price: Price::from_micros((site.cents + rng.below(10) as i64) * 10_000),
                    gpus: Gpus::new(u64::from(site.gpus - busy)).unwrap(),
                    tif: TimeInForce::Gtc,
                    post_only: false,
                    terms: OrderTerms::Ask(AskSpec {
                        node,
                        vendor: Vendor::Nvidia,
                        vram_gb: (memory_mb / 1_000) as u32,
                        interconnect: Interconnect::Pcie,
                        region: Region::parse(site.region).unwrap(),
                        available_until: Timestamp(METERED_START + 10 * METERED_SPAN),
                    }),
                };
                day.send(rng, now, Command::Place(ask));
            }
        }
        if rng.below(400) == 0 {
            let h100 = rng.below(5) != 0;
            let (market, cents) = if h100 {
                (markets[0].0, 190 + rng.below(70) as i64)
            } else {
                (markets[1].0, 40 + rng.below(20) as i64)
            };
            client += 1;
            let order = NewOrder {
                account: AccountId(1 + rng.below(BUYERS)),
                client_id: ClientOrderId(client),
                market,
                price: Price::from_micros(cents * 10_000),
                gpus: Gpus::new(1 + rng.below(if h100 { 4 } else { 2 })).unwrap(),
                tif: match rng.below(6) {
                    0 => TimeInForce::Ioc,
                    1 => TimeInForce::Gtt {
                        expires_at: Timestamp(now + 1_800_000),
                    },
                    _ => TimeInForce::Gtc,
                },
                post_only: false,
                terms: OrderTerms::Bid(BidSpec::any(Hours::new(1 + rng.below(3)).unwrap())),
            };
            let options = OrderOptions {
                rebid_on_failure: rng.below(2) == 0,
                exclude_nodes: Vec::new(),
            };
            day.send(rng, now, Command::PlaceWith { order, options });
        }
        let stopping: Vec<(u64, AccountId)> = day
            .leases
            .iter()
            .filter(|(_, l)| l.stop_at.is_some_and(|at| at <= now))
            .map(|(id, l)| (*id, l.buyer))
            .collect();
        for (id, by) in stopping {
            day.leases.get_mut(&id).expect("just found").stop_at = None;
            let lease_id = LeaseId(id);
            day.send(rng, now, Command::StopLease { by, lease_id });
        }
        if day.commands.len() == before {
            day.send(rng, now, Command::Tick);
        }
    }
    day.commands
}
