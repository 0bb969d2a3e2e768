//! Properties over random command streams: the book never stays crossed, money and GPUs are
//! conserved, fills follow price-time priority, and snapshots and replays are exact.

use std::collections::HashMap;

use contract::{
    AccountId, Amount, AskSpec, BidSpec, ClientOrderId, Command, Event, FeeRate, Gpus, Hours,
    Interconnect, LeaseEndReason, LeaseId, MarketId, NewOrder, NodeId, OrderId, OrderTerms, Price,
    Region, Reputation, Side, TimeInForce, Timestamp, Vendor,
};
use matching_engine::Engine;
use proptest::prelude::*;
use rust_decimal::Decimal;

use crate::support::{HOUR, T0};

const MARKETS: [&str; 2] = ["H100-80GB", "MI300X-192GB"];
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

fn market(i: usize) -> MarketId {
    MarketId::parse(MARKETS[i]).unwrap()
}

fn setup() -> Vec<Command> {
    let mut commands = vec![
        Command::CreateMarket {
            market: market(0),
            tick: Price::parse("0.01").unwrap(),
            fee: FeeRate::new(250).unwrap(),
        },
        Command::CreateMarket {
            market: market(1),
            tick: Price::parse("0.05").unwrap(),
            fee: FeeRate::new(0).unwrap(),
        },
    ];
    for account in 1..=6 {
        commands.push(Command::Deposit {
            account: AccountId(account),
            amount: Amount::parse("300").unwrap(),
        });
    }
    commands
}

fn bid_spec() -> impl Strategy<Value = BidSpec> {
    (
        1u64..=4,
        prop::sample::select(vec![0u32, 48, 80]),
        prop::sample::subsequence(REGIONS.to_vec(), 0..=2),
        prop::sample::subsequence(Interconnect::ALL.to_vec(), 0..=2),
        prop::option::weighted(0.2, prop::sample::select(vec![Vendor::Nvidia, Vendor::Amd])),
        prop::sample::select(vec![0u64, 0, 500, 800]),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.2, 1u64..=3),
    )
        .prop_map(
            |(hours, vram, regions, interconnects, vendor, rep, single, aon, min_fill)| BidSpec {
                hours: Hours::new(hours).unwrap(),
                min_vram_gb: vram,
                regions: regions.iter().map(|r| Region::parse(r).unwrap()).collect(),
                interconnects,
                vendor,
                min_reputation: Reputation::new(rep).unwrap(),
                single_node: single,
                all_or_none: aon,
                min_fill: min_fill.map(|g| Gpus::new(g).unwrap()),
            },
        )
}

fn ask_spec() -> impl Strategy<Value = AskSpec> {
    (
        0u32..4,
        prop::sample::select(vec![Vendor::Nvidia, Vendor::Nvidia, Vendor::Amd]),
        prop::sample::select(vec![48u32, 80, 192]),
        prop::sample::select(Interconnect::ALL.to_vec()),
        prop::sample::select(REGIONS.to_vec()),
        2i64..=30,
    )
        .prop_map(
            |(node, vendor, vram, interconnect, region, hours)| AskSpec {
                node: NodeId::parse(&format!("node-{node}")).unwrap(),
                vendor,
                vram_gb: vram,
                interconnect,
                region: Region::parse(region).unwrap(),
                available_until: Timestamp(T0 + hours * HOUR),
            },
        )
}

fn tif() -> impl Strategy<Value = TimeInForce> {
    prop_oneof![
        6 => Just(TimeInForce::Gtc),
        2 => Just(TimeInForce::Ioc),
        1 => Just(TimeInForce::Fok),
        2 => (1i64..=20).prop_map(|h| TimeInForce::Gtt { expires_at: Timestamp(T0 + h * HOUR / 2) }),
    ]
}

fn place() -> impl Strategy<Value = Command> {
    (
        1u64..=6,
        0u128..400,
        0usize..2,
        180i64..=220,
        1u64..=8,
        tif(),
        prop::bool::weighted(0.1),
        prop_oneof![
            bid_spec().prop_map(OrderTerms::Bid),
            ask_spec().prop_map(OrderTerms::Ask)
        ],
    )
        .prop_map(|(account, client, m, cents, gpus, tif, post_only, terms)| {
            Command::Place(NewOrder {
                account: AccountId(account),
                client_id: ClientOrderId(client),
                market: market(m),
                price: Price::from_micros(cents * 10_000),
                gpus: Gpus::new(gpus).unwrap(),
                tif,
                post_only,
                terms,
            })
        })
}

const PAYOUT_ADDRESSES: [&str; 2] = [
    "cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4",
    "cosmos1qypqxpq9qcrsszg2pvxq6rs0zqg3yyc5lzv7xu",
];

fn command() -> impl Strategy<Value = Command> {
    let account = || (1u64..=6).prop_map(AccountId);
    prop_oneof![
        30 => place(),
        6 => (account(), 1u64..=60).prop_map(|(account, id)| Command::Cancel { account, order_id: OrderId(id) }),
        5 => (account(), 1u64..=60, prop::option::of(180i64..=220), prop::option::of(1u64..=8))
            .prop_map(|(account, id, cents, gpus)| Command::Amend {
                account,
                order_id: OrderId(id),
                price: cents.map(|c| Price::from_micros(c * 10_000)),
                gpus: gpus.map(|g| Gpus::new(g).unwrap()),
            }),
        4 => (0u64..=6, 1u64..=40, 0u32..=4000).prop_map(|(by, lease, milli)| Command::EndLease {
            by: AccountId(by),
            lease_id: LeaseId(lease),
            hours_used: Decimal::new(i64::from(milli), 3),
            reason: LeaseEndReason::Completed,
        }),
        2 => (account(), 1i64..=100).prop_map(|(account, units)| Command::Deposit { account, amount: Amount::from_micros(units * 1_000_000) }),
        2 => (0u64..=6, 1i64..=100).prop_map(|(a, units)| Command::Withdraw { account: AccountId(a), amount: Amount::from_micros(units * 1_000_000) }),
        1 => (4u64..=6, 0u64..=1000).prop_map(|(p, score)| Command::SetReputation { provider: AccountId(p), score: Reputation::new(score).unwrap() }),
        2 => (0u64..=6, 1u64..=40).prop_map(|(p, lease)| Command::StartLease { provider: AccountId(p), lease_id: LeaseId(lease) }),
        1 => (0u64..=6, 0u64..=3, 1u64..=8).prop_map(|(p, node, gpus)| Command::Heartbeat {
            provider: AccountId(p),
            node: contract::NodeId::parse(&format!("node-{node}")).unwrap(),
            class: contract::MarketId::parse("H100-80GB").unwrap(),
            gpus: Gpus::new(gpus).unwrap(),
        }),
        1 => Just(Command::Tick),
        1 => (0u64..=6, 0usize..2).prop_map(|(a, i)| Command::SetPayoutAddress {
            account: AccountId(a),
            address: contract::ChainAddress::parse(PAYOUT_ADDRESSES[i]).unwrap(),
        }),
        2 => (0u64..=6, 1i64..=50).prop_map(|(a, units)| Command::RequestWithdrawal { account: AccountId(a), amount: Amount::from_micros(units * 1_000_000) }),
        1 => (account(), 1i64..=100, 0u8..4, 0u32..2).prop_map(|(account, units, tx, msg_index)| Command::ChainDeposit {
            account,
            amount: Amount::from_micros(units * 1_000_000),
            tx_hash: contract::TxHash([tx; 32]),
            msg_index,
        }),
        1 => (0i64..=20, 1u32..=4).prop_map(|(units, max_payouts)| Command::OpenSettlement { min_payout: Amount::from_micros(units * 1_000_000), max_payouts }),
        1 => (1u64..=4).prop_map(|batch| Command::ConfirmSettlement { batch: contract::SettlementId(batch), tx_hash: contract::TxHash([9; 32]), height: 7 }),
        1 => (1u64..=4).prop_map(|batch| Command::FailSettlement { batch: contract::SettlementId(batch), reason: contract::FailureReason::new("out of gas").unwrap() }),
    ]
}

/// `setup`, then up to `most` generated commands, with the time each is stamped with.
fn stream_of(
    setup: Vec<Command>,
    command: impl Strategy<Value = Command>,
    most: usize,
) -> impl Strategy<Value = Vec<(i64, Command)>> {
    prop::collection::vec((0i64..=20 * 60_000, command), 1..most).prop_map(move |steps| {
        let mut at = T0;
        setup
            .iter()
            .map(|c| (T0, c.clone()))
            .chain(steps.into_iter().map(|(dt, c)| {
                at += dt;
                (at, c)
            }))
            .collect()
    })
}

fn stream() -> impl Strategy<Value = Vec<(i64, Command)>> {
    stream_of(setup(), command(), 200)
}

/// Micro-units at and near the limits: `i64::MAX` and just below it, just over half of it
/// (two of them do not fit one account), and ordinary amounts.
fn micros_near_limit() -> impl Strategy<Value = i64> {
    prop_oneof![
        (0i64..=2_000_000).prop_map(|k| i64::MAX - k),
        (0i64..=2_000_000).prop_map(|k| i64::MAX / 2 + 1 + k),
        (1i64..=100).prop_map(|units| units * 1_000_000),
    ]
}

/// The most GPUs and hours, and a few ordinary ones.
fn gpus_near_limit() -> impl Strategy<Value = u64> {
    prop::sample::select(vec![1, 2, 3, 8, Gpus::MAX.get().into()])
}

fn hours_near_limit() -> impl Strategy<Value = u64> {
    prop::sample::select(vec![1, 2, Hours::MAX.get().into()])
}

/// Prices whose hold (`price × GPUs × hours`) lands just below or just above `i64::MAX`
/// for the GPUs and hours above, `i64::MAX` itself, and ordinary prices.
fn price_near_limit() -> impl Strategy<Value = Price> {
    let max = Gpus::MAX.get() as i64 * Hours::MAX.get() as i64;
    (
        prop::sample::select(vec![1, 2, 3, 8, 65_536, 8_760, 2 * 65_536, max]),
        0i64..=2,
    )
        .prop_map(|(divisor, below)| Price::from_micros((i64::MAX / divisor - below).max(1)))
}

/// Orders without constraints (the limits are the point), in markets on a one-micro-unit
/// tick, with asks available longer than the longest bid.
fn place_near_limit() -> impl Strategy<Value = Command> {
    (
        1u64..=4,
        0u128..100,
        0usize..2,
        prop_oneof![
            price_near_limit(),
            (1i64..=300).prop_map(|c| Price::from_micros(c * 10_000))
        ],
        gpus_near_limit(),
        prop_oneof![4 => Just(TimeInForce::Gtc), 1 => Just(TimeInForce::Ioc)],
        prop_oneof![
            hours_near_limit().prop_map(|h| OrderTerms::Bid(BidSpec::any(Hours::new(h).unwrap()))),
            (0u32..3).prop_map(|node| OrderTerms::Ask(AskSpec {
                node: NodeId::parse(&format!("node-{node}")).unwrap(),
                vendor: Vendor::Nvidia,
                vram_gb: 80,
                interconnect: Interconnect::NvLink,
                region: Region::parse(REGIONS[0]).unwrap(),
                available_until: Timestamp(T0 + 9_000 * HOUR),
            })),
        ],
    )
        .prop_map(|(account, client, m, price, gpus, tif, terms)| {
            Command::Place(NewOrder {
                account: AccountId(account),
                client_id: ClientOrderId(client),
                market: market(m),
                price,
                gpus: Gpus::new(gpus).unwrap(),
                tif,
                post_only: false,
                terms,
            })
        })
}

/// Two markets on a one-micro-unit tick; the second takes all of a charge as its fee, so the
/// market's own account fills up too.
fn limit_setup() -> Vec<Command> {
    [(0, 250), (1, 10_000)]
        .map(|(m, fee)| Command::CreateMarket {
            market: market(m),
            tick: Price::from_micros(1),
            fee: FeeRate::new(fee).unwrap(),
        })
        .into()
}

/// Commands whose amounts, prices, GPUs and hours sit at the limits.
fn limit_command() -> impl Strategy<Value = Command> {
    let account = || (1u64..=4).prop_map(AccountId);
    let amount = || micros_near_limit().prop_map(Amount::from_micros);
    prop_oneof![
        12 => place_near_limit(),
        3 => (account(), 1u64..=40).prop_map(|(account, id)| Command::Cancel { account, order_id: OrderId(id) }),
        3 => (account(), 1u64..=40, prop::option::of(price_near_limit()), prop::option::of(gpus_near_limit()))
            .prop_map(|(account, id, price, gpus)| Command::Amend {
                account,
                order_id: OrderId(id),
                price,
                gpus: gpus.map(|g| Gpus::new(g).unwrap()),
            }),
        4 => (0u64..=4, 1u64..=20, prop_oneof![0i64..=2_000, Just(8_760_000), 0i64..=8_760_000])
            .prop_map(|(by, lease, milli)| Command::EndLease {
                by: AccountId(by),
                lease_id: LeaseId(lease),
                hours_used: Decimal::new(milli, 3),
                reason: LeaseEndReason::Completed,
            }),
        4 => (account(), amount()).prop_map(|(account, amount)| Command::Deposit { account, amount }),
        2 => (0u64..=4, amount()).prop_map(|(a, amount)| Command::Withdraw { account: AccountId(a), amount }),
        2 => (account(), amount(), 0u8..4).prop_map(|(account, amount, tx)| Command::ChainDeposit {
            account,
            amount,
            tx_hash: contract::TxHash([tx; 32]),
            msg_index: 0,
        }),
        1 => (0u64..=4).prop_map(|a| Command::SetPayoutAddress {
            account: AccountId(a),
            address: contract::ChainAddress::parse(PAYOUT_ADDRESSES[0]).unwrap(),
        }),
        2 => (0u64..=4, amount()).prop_map(|(a, amount)| Command::RequestWithdrawal { account: AccountId(a), amount }),
        1 => prop_oneof![Just(0), micros_near_limit()].prop_map(|min| Command::OpenSettlement { min_payout: Amount::from_micros(min), max_payouts: 4 }),
        1 => (1u64..=4).prop_map(|batch| Command::ConfirmSettlement { batch: contract::SettlementId(batch), tx_hash: contract::TxHash([9; 32]), height: 7 }),
        1 => (1u64..=4).prop_map(|batch| Command::FailSettlement { batch: contract::SettlementId(batch), reason: contract::FailureReason::new("out of gas").unwrap() }),
        1 => Just(Command::Tick),
    ]
}

/// Runs a stream, returning each command's events and the final engine.
fn run(engine: &mut Engine, steps: &[(i64, Command)]) -> Vec<Vec<Event>> {
    steps
        .iter()
        .map(|(at, c)| {
            let mut out = Vec::new();
            let _ = engine.apply(Timestamp(*at), c, &mut out);
            out
        })
        .collect()
}

/// What the events say about one order.
struct Tracked {
    side: Side,
    price: Price,
    remaining: u32,
    /// Increases every time the order joins the back of a level.
    arrival: u64,
}

/// Runs a stream and checks, after every command, that a rejection changed nothing but
/// time, that the audit is empty and money is conserved, and that fills follow price-time
/// priority with GPUs conserved. Any panic inside the engine fails the property too.
fn check(steps: &[(i64, Command)]) -> Result<(), TestCaseError> {
    let mut engine = Engine::new();
    let mut outside = 0i128; // deposits minus withdrawals
    let mut orders: HashMap<OrderId, Tracked> = HashMap::new();
    let mut arrivals = 0u64;
    for (at, command) in steps {
        let mut out = Vec::new();
        let before = engine.snapshot();
        if engine.apply(Timestamp(*at), command, &mut out).is_err() {
            // A rejection leaves what time alone would have left.
            let mut timed = Engine::restore(&before).unwrap();
            let mut expired = Vec::new();
            timed
                .apply(Timestamp(*at), &Command::Tick, &mut expired)
                .unwrap();
            prop_assert_eq!(&out, &expired);
            prop_assert_eq!(timed.state_hash(), engine.state_hash());
        }
        let problems = engine.audit();
        prop_assert!(problems.is_empty(), "after {command:?}: {problems:#?}");

        // Within one command, a taker's fills walk the book in priority order.
        let mut last_fill: Option<(OrderId, i64, u64)> = None;
        for event in &out {
            match event {
                Event::Deposited { amount, .. } => outside += i128::from(amount.micros()),
                Event::Withdrawn { amount, .. } => outside -= i128::from(amount.micros()),
                Event::ChainDeposited { amount, .. } => outside += i128::from(amount.micros()),
                Event::SettlementConfirmed { payouts, .. } => {
                    outside -= payouts
                        .iter()
                        .map(|p| i128::from(p.amount.micros()))
                        .sum::<i128>();
                }
                Event::OrderAccepted {
                    order_id, order, ..
                } => {
                    arrivals += 1;
                    orders.insert(
                        *order_id,
                        Tracked {
                            side: order.side(),
                            price: order.price,
                            remaining: order.gpus.get(),
                            arrival: arrivals,
                        },
                    );
                }
                Event::OrderAmended {
                    order_id,
                    price,
                    remaining,
                    priority_kept,
                    ..
                } => {
                    let o = orders.get_mut(order_id).expect("amended order is known");
                    o.price = *price;
                    o.remaining = remaining.get();
                    if !priority_kept {
                        arrivals += 1;
                        o.arrival = arrivals;
                    }
                }
                Event::LeaseCreated {
                    bid_order,
                    ask_order,
                    gpus,
                    price,
                    taker,
                    bid_remaining,
                    ask_remaining,
                    ..
                } => {
                    let (taker_id, maker_id) = match taker {
                        Side::Bid => (*bid_order, *ask_order),
                        Side::Ask => (*ask_order, *bid_order),
                    };
                    let maker = &orders[&maker_id];
                    prop_assert_eq!(*price, maker.price, "fills happen at the resting price");
                    let t = &orders[&taker_id];
                    match taker {
                        Side::Bid => prop_assert!(t.price >= *price),
                        Side::Ask => prop_assert!(t.price <= *price),
                    }
                    // Better price first (lower for asks, higher for bids), then earlier.
                    let key = match taker {
                        Side::Bid => price.micros(),
                        Side::Ask => -price.micros(),
                    };
                    if let Some((last_taker, last_key, last_arrival)) = last_fill {
                        if last_taker == taker_id {
                            prop_assert!(
                                key > last_key || (key == last_key && maker.arrival > last_arrival),
                                "fill out of priority in {out:#?}"
                            );
                        }
                    }
                    last_fill = Some((taker_id, key, maker.arrival));
                    for (id, left) in [(*bid_order, *bid_remaining), (*ask_order, *ask_remaining)] {
                        let o = orders.get_mut(&id).unwrap();
                        prop_assert_eq!(o.remaining - gpus.get(), left, "GPUs are conserved");
                        o.remaining = left;
                    }
                    prop_assert_eq!(orders[bid_order].side, Side::Bid);
                }
                Event::OrderCancelled {
                    order_id,
                    remaining,
                    ..
                } => {
                    let o = orders.remove(order_id).expect("cancelled order is known");
                    prop_assert_eq!(o.remaining, *remaining);
                }
                _ => {}
            }
        }
        orders.retain(|_, o| o.remaining > 0);
        prop_assert_eq!(engine.total_money(), outside, "money is conserved");
    }
    for (id, o) in &orders {
        let resting = engine.order(*id).expect("a tracked order rests");
        prop_assert_eq!(resting.remaining, o.remaining);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_book_money_and_gpus_stay_consistent(steps in stream()) {
        check(&steps)?;
    }

    #[test]
    fn money_at_its_limits_is_refused_or_conserved(
        steps in stream_of(limit_setup(), limit_command(), 150),
    ) {
        check(&steps)?;
    }

    #[test]
    fn snapshot_restore_and_replay_give_identical_state_and_events(
        steps in stream(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut whole = Engine::new();
        let events = run(&mut whole, &steps);

        let mut replayed = Engine::new();
        prop_assert_eq!(&run(&mut replayed, &steps), &events);
        prop_assert_eq!(replayed.snapshot(), whole.snapshot());

        let cut = cut.index(steps.len());
        let mut first = Engine::new();
        let head = run(&mut first, &steps[..cut]);
        let mut restored = Engine::restore(&first.snapshot()).unwrap();
        let tail = run(&mut restored, &steps[cut..]);
        prop_assert_eq!(head.into_iter().chain(tail).collect::<Vec<_>>(), events);
        prop_assert_eq!(restored.state_hash(), whole.state_hash());
    }
}
