//! Test support for crates that drive the engine service: a seeded generator of realistic
//! command streams. Behind the `testing` feature; the services never use it.

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
            96..=97 => Command::Withdraw {
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
