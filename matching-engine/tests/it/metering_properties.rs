//! Properties of metered leases over random streams of offers (some backed by their node's
//! report and the provider's bond), metered bids (some re-bidding), signed heartbeats
//! listing random leases and a changing number of GPUs, stops by any party, operator ends,
//! payments held for review (released, rejected or run out), bonds posted and withdrawn, ticks and outages: for every lease, the time charged is at
//! most the time elapsed and at most its term, each accrual is charged by the market's one
//! rule, a lease's end moves exactly the sum of its accruals, and money is conserved
//! through holds, bonds, slashes and the insurance fund.

use std::collections::HashMap;

use contract::{
    AccountId, ChargePeriod, Command, Event, FailureReason, Gpus, LeaseId, MarketConfig,
    MarketConfigFields, NewOrder, OrderOptions, Price, ShortText, Timestamp,
};
use matching_engine::Engine;
use proptest::prelude::*;

use crate::support::*;

const BUYERS: [u64; 3] = [1, 2, 3];
const PROVIDERS: [u64; 2] = [11, 12];
/// Leases the generated commands name; more than a stream usually makes.
const LEASES: u64 = 30;

fn setup() -> Vec<Command> {
    let mut commands = market_with_buyers();
    commands.push(deposit(AccountId(3), "1000"));
    for p in PROVIDERS {
        commands.push(deposit(AccountId(p), "100"));
    }
    // Ten-minute periods, a report every 10 s, 30 s of grace: streams cross many periods
    // and many nodes fall silent. A bond of 3 per GPU, of which failures slash 40%.
    commands.push(Command::ConfigureMarket {
        market: h100(),
        config: MarketConfig::new(MarketConfigFields {
            charge_period: ChargePeriod::new(600).unwrap(),
            report_interval_ms: 10_000,
            heartbeat_timeout_ms: 30_000,
            bond_per_gpu: amt("3"),
            slash_share_bps: 4_000,
            unbonding_delay_ms: 60_000,
            model_names: vec![ShortText::parse(H100_NAME).unwrap()],
            ..MarketConfigFields::default()
        })
        .unwrap(),
    });
    commands
}

fn order(builder: OrderBuilder) -> NewOrder {
    builder.order
}

fn command() -> impl Strategy<Value = Command> {
    let provider = prop::sample::select(PROVIDERS.to_vec()).prop_map(AccountId);
    let buyer = prop::sample::select(BUYERS.to_vec()).prop_map(AccountId);
    let party = prop::sample::select([&BUYERS[..], &PROVIDERS[..]].concat()).prop_map(AccountId);
    prop_oneof![
        3 => (provider.clone(), 0u128..3, 300i64..=400, 1u64..=4, any::<bool>())
            .prop_map(|(p, node, cents, gpus, backed)| {
                let price = format!("{}.{:02}", cents / 100, cents % 100);
                let offer = offer(p, node, &price, gpus);
                if backed { offer.metered().into() } else { offer.into() }
            }),
        4 => (buyer.clone(), 0u128..1_000, 300i64..=400, 1u64..=3, 1u64..=3, any::<bool>())
            .prop_map(|(b, client, cents, gpus, hours, rebid)| {
                let price = format!("{}.{:02}", cents / 100, cents % 100);
                Command::PlaceWith {
                    order: order(bid(b, client, &price, gpus).hours(hours)),
                    options: OrderOptions { rebid_on_failure: rebid, exclude_nodes: Vec::new() },
                }
            }),
        // A node lists every lease but a few dropped ones (ids of other nodes' leases are
        // ignored), so most leases are healthy for a while and some fail.
        12 => (provider.clone(), 0u128..3, prop::collection::vec(1u64..=LEASES, 0..3), prop_oneof![6 => Just(4u32), 1 => 1u32..4])
            .prop_map(|(p, node, dropped, gpus)| {
                let listed: Vec<u64> = (1..=LEASES).filter(|l| !dropped.contains(l)).collect();
                let node = node_of(p, node);
                beat_with(p, node, 0, &listed, h100s(node, gpus), MADE_ON_ARRIVAL)
            }),
        2 => (provider.clone(), 1i64..=40).prop_map(|(p, units)| post_bond(p, &units.to_string())),
        1 => (provider, 1i64..=40).prop_map(|(p, units)| withdraw_bond(p, &units.to_string())),
        2 => (party, 1u64..=LEASES).prop_map(|(by, lease)| stop(by, lease)),
        1 => (1u64..=LEASES).prop_map(|lease| Command::AdminEndLease {
            lease_id: LeaseId(lease),
            reason: FailureReason::new("maintenance").unwrap(),
        }),
        // Payments held for review (up to ten minutes), released, rejected or left to run
        // out; rejections of running leases too.
        2 => (buyer.clone(), 1u64..=LEASES, 1u64..=600_000).prop_map(|(by, lease, hold_ms)| {
            Command::StopLeaseHeld { by, lease_id: LeaseId(lease), hold_ms }
        }),
        1 => (buyer, 1u64..=LEASES).prop_map(|(by, lease)| Command::ReleasePayment {
            by,
            lease_id: LeaseId(lease),
        }),
        1 => (1u64..=LEASES).prop_map(|lease| Command::RejectWork {
            lease_id: LeaseId(lease),
            reason: FailureReason::new("a referee rendered other pixels").unwrap(),
        }),
        3 => Just(Command::Tick),
    ]
}

/// `setup`, then up to 300 commands: mostly a second or two apart (each node reporting
/// about every 20 s, against a 30 s timeout), sometimes an outage of up to two hours.
fn stream() -> impl Strategy<Value = Vec<(i64, Command)>> {
    let gap = prop_oneof![80 => 0i64..=3_000, 1 => 0i64..=2 * HOUR];
    prop::collection::vec((gap, command()), 1..300).prop_map(|steps| {
        let mut at = T0;
        setup()
            .into_iter()
            .map(|c| (T0, c))
            .chain(steps.into_iter().map(|(dt, c)| {
                at += dt;
                (at, c)
            }))
            .collect()
    })
}

/// What the events said of one lease.
#[derive(Default)]
struct Seen {
    start: i64,
    term_ms: i64,
    price: Option<Price>,
    gpus: Option<Gpus>,
    accrued_ms: i64,
    accrued: i64,
    fee: i64,
    closed: bool,
    /// Its buyer held its payment when it closed, and it has not ended yet.
    held: bool,
    ended: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_lease_is_charged_at_most_its_elapsed_time_and_its_term_by_the_one_rule(steps in stream()) {
        let mut engine = Engine::new();
        let mut leases: HashMap<LeaseId, Seen> = HashMap::new();
        let mut money = None;
        let mut out = Vec::new();
        let mut sequence = 0;
        for (at, command) in &steps {
            // Reports carry increasing sequence numbers, as an agent's do.
            let mut command = command.clone();
            if let Command::SignedHeartbeat(beat) = &mut command {
                sequence += 1;
                beat.sequence = sequence;
                if beat.reported_at.0 == MADE_ON_ARRIVAL {
                    beat.reported_at = Timestamp(*at);
                }
            }
            out.clear();
            let _ = engine.apply(Timestamp(*at), &command, &mut out);
            let now = engine.now().0;
            for event in &out {
                match event {
                    Event::LeaseCreated { lease_id, price, gpus, start, hours, .. } => {
                        leases.insert(*lease_id, Seen {
                            start: start.0,
                            term_ms: i64::from(hours.get()) * HOUR,
                            price: Some(*price),
                            gpus: Some(*gpus),
                            ..Seen::default()
                        });
                    }
                    Event::LeaseAccrued { lease_id, price, gpus, period_start, period_end, from, to, charged, fee, provider_earned, .. } => {
                        let seen = leases.get_mut(lease_id).expect("an accrual of a known lease");
                        prop_assert!(!seen.closed, "no accrual after the lease closed");
                        prop_assert!(period_start.0 <= from.0 && from.0 < to.0 && to.0 <= period_end.0);
                        prop_assert!(to.0 <= now, "nothing is charged ahead of the clock");
                        prop_assert_eq!((Some(*price), Some(*gpus)), (seen.price, seen.gpus));
                        let ms = (to.0 - from.0) as u64;
                        prop_assert_eq!(Some(*charged), price.charge_for(*gpus, ms), "the rule");
                        prop_assert_eq!(charged.micros(), fee.micros() + provider_earned.micros());
                        seen.accrued_ms += to.0 - from.0;
                        seen.accrued += charged.micros();
                        seen.fee += fee.micros();
                    }
                    Event::LeaseClosed { lease_id, ended_at, charged_until, charged_ms, .. } => {
                        let seen = leases.get_mut(lease_id).expect("a known lease closes");
                        prop_assert!(!seen.closed, "a lease closes once");
                        seen.closed = true;
                        let elapsed = ended_at.0 - seen.start;
                        prop_assert!(*charged_ms as i64 <= elapsed, "charged {charged_ms} ms of {elapsed} elapsed");
                        prop_assert!(*charged_ms as i64 <= seen.term_ms, "charged past its term");
                        prop_assert!(charged_until.0 <= ended_at.0);
                        prop_assert_eq!(*charged_ms as i64, seen.accrued_ms, "closed = the sum of its accruals");
                    }
                    Event::PaymentHeld { lease_id, until, .. } => {
                        let seen = leases.get_mut(lease_id).expect("a known lease is held");
                        prop_assert!(seen.closed && !seen.ended, "held right after its close");
                        prop_assert!(until.0 > now);
                        seen.held = true;
                    }
                    Event::LeaseEnded { lease_id, charged, fee, .. } => {
                        let seen = leases.get_mut(lease_id).expect("a known lease ends");
                        prop_assert!(!seen.ended, "a lease ends once");
                        seen.ended = true;
                        seen.held = false;
                        if seen.closed {
                            prop_assert_eq!(charged.micros(), seen.accrued, "the end moves what accrued");
                            prop_assert_eq!(fee.micros(), seen.fee);
                        }
                    }
                    Event::BondSlashed { lease_id, slashed, buyer_credit, insurance, .. } => {
                        let seen = &leases[lease_id];
                        prop_assert!(!seen.closed || seen.held, "a slash comes before its lease's close, or while its payment is held");
                        prop_assert!(slashed.is_positive());
                        prop_assert_eq!(slashed.micros(), buyer_credit.micros() + insurance.micros());
                    }
                    _ => {}
                }
            }
            // No deposits or withdrawals after the setup: the total never changes.
            let total = engine.total_money();
            if matches!(&command, Command::ConfigureMarket { .. }) {
                money = Some(total);
            }
            prop_assert_eq!(money.unwrap_or(total), total, "money is conserved");
            let broken = engine.audit();
            prop_assert!(broken.is_empty(), "{:?}", broken);
        }
    }
}
