//! The activity (orders, trades, leases, billing), reputation and net-position projections
//! against the engine that produced their events, and rebuilds.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use contract::codec::{self, CommandRecord, EventBody, EventRecord, SCHEMA};
use contract::{
    AccountId, Amount, AskSpec, BidSpec, Command, Event, FeeRate, Gpus, Hours, Interconnect,
    LeaseEndReason, LeaseId, MarketId, NewOrder, NodeId, OrderId, OrderTerms, Price, Region, Side,
    TimeInForce, Timestamp, Vendor,
};
use diesel::prelude::*;
use ledger::reputation::Record;
use ledger::testing::TestDb;
use ledger::{Activity, Journal, LedgerError, Projection, Reputation};
use rust_decimal::Decimal;

use crate::stream::EngineRun;
use crate::{bad_record_log, check_books, decimal};

fn events(run: &EngineRun) -> Vec<Event> {
    run.events()
        .into_iter()
        .filter_map(|r| match r.body {
            EventBody::Event(e) => Some(e),
            EventBody::Rejected(_) => None,
        })
        .collect()
}

#[test]
fn orders_trades_leases_and_billing_match_the_engine() {
    let run = EngineRun::file(11, 20_000);
    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 4_096);
    let engine = run.engine();
    let events = events(&run);
    let mut conn = db.connect();

    // Open orders are exactly the engine's resting orders, at their remaining size and price.
    let orders: Vec<(i64, String, i32, Decimal)> = {
        use ledger::schema::orders::dsl::*;
        orders
            .select((order_id, status, remaining, price))
            .order(order_id)
            .load(&mut conn)
            .unwrap()
    };
    let accepted = events
        .iter()
        .filter(|e| matches!(e, Event::OrderAccepted { .. }))
        .count();
    assert_eq!(orders.len(), accepted);
    let mut open = 0;
    for (id, status, remaining, price) in &orders {
        match engine.order(OrderId(*id as u64)) {
            Some(resting) => {
                open += 1;
                assert_eq!(status, "open", "order {id}");
                assert_eq!(*remaining as u32, resting.remaining, "order {id}");
                assert_eq!(*price, decimal(resting.price.micros()), "order {id}");
            }
            None => assert_ne!(status, "open", "order {id} left the engine's book"),
        }
    }
    assert!(open > 10, "the stream leaves a book: {open} open orders");

    // Leases: the running ones are the engine's, with the same start.
    let leases: Vec<(i64, String, Option<chrono::DateTime<chrono::Utc>>)> = {
        use ledger::schema::leases::dsl::*;
        leases
            .select((lease_id, status, started_at))
            .load(&mut conn)
            .unwrap()
    };
    let created = events
        .iter()
        .filter(|e| matches!(e, Event::LeaseCreated { .. }))
        .count();
    assert_eq!(leases.len(), created);
    for (id, status, started) in &leases {
        match engine.lease(LeaseId(*id as u64)) {
            Some(lease) => {
                assert_ne!(status, "ended", "lease {id}");
                assert_eq!(
                    started.map(|t| t.timestamp_millis()),
                    lease.started_at.map(|t| t.0),
                    "lease {id}"
                );
            }
            None => assert_eq!(status, "ended", "lease {id}"),
        }
    }
    assert!(leases.iter().any(|l| l.2.is_some()), "some leases started");

    // One trade per fill, one usage line per ended lease, and the bills add up to the
    // charges the engine made.
    assert_eq!(db.count("SELECT count(*) AS n FROM trades"), created as i64);
    let (mut ended, mut charged, mut earned) = (0i64, 0i64, 0i64);
    for e in &events {
        if let Event::LeaseEnded {
            charged: c,
            provider_earned: p,
            ..
        } = e
        {
            ended += 1;
            charged += c.micros();
            earned += p.micros();
        }
    }
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_lines"), ended);
    let sum = |sql: &str| {
        #[derive(QueryableByName)]
        struct Sum {
            #[diesel(sql_type = diesel::sql_types::Numeric)]
            s: Decimal,
        }
        diesel::sql_query(sql)
            .get_result::<Sum>(&mut db.connect())
            .unwrap()
            .s
    };
    assert_eq!(
        sum("SELECT coalesce(sum(amount), 0) AS s FROM usage_lines"),
        decimal(charged)
    );
    assert_eq!(
        sum("SELECT coalesce(sum(amount), 0) AS s FROM invoices"),
        decimal(charged)
    );
    assert_eq!(
        sum("SELECT coalesce(sum(net), 0) AS s FROM earnings"),
        decimal(earned)
    );
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM usage_lines \
             WHERE gpu_hours <> gpus * hours_used OR amount > list_cost \
             OR amount <> fee + provider_earned OR charge_end < charge_start"
        ),
        0
    );
    // Every change of every order is in its history.
    let changes = events
        .iter()
        .map(|e| match e {
            Event::OrderAccepted { .. }
            | Event::OrderAmended { .. }
            | Event::OrderCancelled { .. } => 1,
            Event::LeaseCreated { .. } => 2,
            _ => 0,
        })
        .sum::<i64>();
    assert_eq!(db.count("SELECT count(*) AS n FROM order_history"), changes);

    // The top of the book is the engine's best level on each side.
    #[derive(QueryableByName)]
    struct Top {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Numeric>)]
        best_bid: Option<Decimal>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
        bid_gpus: Option<i64>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Numeric>)]
        best_ask: Option<Decimal>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
        ask_gpus: Option<i64>,
    }
    let top: Top = diesel::sql_query("SELECT * FROM top_of_book WHERE market = 'H100-80GB'")
        .get_result(&mut conn)
        .unwrap();
    let depth = engine
        .depth(MarketId::parse("H100-80GB").unwrap(), 1)
        .unwrap();
    let level = |levels: &[matching_engine::DepthLevel]| {
        levels
            .first()
            .map(|l| (decimal(l.price.micros()), l.gpus as i64))
    };
    assert_eq!(top.best_bid.zip(top.bid_gpus), level(&depth.bids));
    assert_eq!(top.best_ask.zip(top.ask_gpus), level(&depth.asks));

    // Net positions: what crossed the market's edge and what was earned and spent.
    let mut expected: BTreeMap<i64, [i64; 5]> = BTreeMap::new();
    for e in &events {
        let mut add = |account: AccountId, column: usize, amount: Amount| {
            expected.entry(account.0 as i64).or_default()[column] += amount.micros();
        };
        match *e {
            Event::Deposited { account, amount } => add(account, 0, amount),
            Event::Withdrawn { account, amount } => add(account, 1, amount),
            Event::LeaseEnded {
                buyer,
                provider,
                charged,
                fee,
                provider_earned,
                ..
            } => {
                add(provider, 2, provider_earned);
                add(buyer, 3, charged);
                add(AccountId::MARKET, 4, fee);
            }
            _ => {}
        }
    }
    let positions: Vec<(i64, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal)> = {
        use ledger::schema::net_positions::dsl::*;
        net_positions
            .select((
                account,
                deposits,
                withdrawals,
                earnings,
                usage_charges,
                fees,
                net_payable,
            ))
            .order(account)
            .load(&mut conn)
            .unwrap()
    };
    assert_eq!(positions.len(), expected.len());
    for (row, (account, want)) in positions.iter().zip(&expected) {
        assert_eq!(row.0, *account);
        assert_eq!(
            [row.1, row.2, row.3, row.4, row.5, row.6],
            [
                decimal(want[0]),
                decimal(want[1]),
                decimal(want[2]),
                decimal(want[3]),
                decimal(want[4]),
                decimal(want[1] - want[0])
            ],
            "account {account}"
        );
    }
    check_books(&db, &run);
}

#[test]
fn reputation_follows_each_providers_record() {
    let run = EngineRun::file(12, 20_000);
    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 4_096);
    let events = events(&run);

    // The record of each provider, counted from the events.
    let mut expected: BTreeMap<i64, (i32, i32, i32, i32)> = BTreeMap::new();
    let mut engine_scores: BTreeMap<i64, i32> = BTreeMap::new();
    let mut heartbeats = 0i64;
    for e in &events {
        match e {
            Event::LeaseEnded {
                provider, reason, ..
            } => {
                let counts = expected.entry(provider.0 as i64).or_default();
                match reason {
                    LeaseEndReason::Completed => counts.0 += 1,
                    LeaseEndReason::ProviderFailed => counts.1 += 1,
                    LeaseEndReason::BuyerStopped | LeaseEndReason::Operator => counts.2 += 1,
                }
            }
            Event::LeaseStarted { provider, .. } => {
                expected.entry(provider.0 as i64).or_default().3 += 1;
            }
            Event::NodeHeartbeat { .. } => heartbeats += 1,
            Event::ReputationSet { provider, score } => {
                engine_scores.insert(provider.0 as i64, i32::from(score.get()));
            }
            _ => {}
        }
    }
    #[derive(Queryable, Debug)]
    struct Row {
        provider: i64,
        leases_completed: i32,
        leases_failed: i32,
        leases_stopped: i32,
        starts: i32,
        starts_on_time: i32,
        start_delay_ms: i64,
        up_ms: i64,
        down_ms: i64,
        spec_mismatches: i32,
        slashes: i32,
        score: i32,
        engine_score: Option<i32>,
    }
    let rows: Vec<Row> = {
        use ledger::schema::provider_reputation::dsl::*;
        provider_reputation
            .select((
                provider,
                leases_completed,
                leases_failed,
                leases_stopped,
                starts,
                starts_on_time,
                start_delay_ms,
                up_ms,
                down_ms,
                spec_mismatches,
                slashes,
                score,
                engine_score,
            ))
            .order(provider)
            .load(&mut db.connect())
            .unwrap()
    };
    assert_eq!(rows.len(), 10, "the ten providers");
    for row in &rows {
        let counts = expected.get(&row.provider).copied().unwrap_or_default();
        assert_eq!(
            (
                row.leases_completed,
                row.leases_failed,
                row.leases_stopped,
                row.starts
            ),
            counts,
            "provider {}",
            row.provider
        );
        let record = Record {
            leases_completed: row.leases_completed,
            leases_failed: row.leases_failed,
            leases_stopped: row.leases_stopped,
            starts: row.starts,
            starts_on_time: row.starts_on_time,
            start_delay_ms: row.start_delay_ms,
            up_ms: row.up_ms,
            down_ms: row.down_ms,
            spec_mismatches: row.spec_mismatches,
            slashes: row.slashes,
        };
        assert_eq!(row.score, record.score().score, "{row:?}");
        assert_eq!(row.engine_score, engine_scores.get(&row.provider).copied());
    }
    assert!(rows.iter().any(|r| r.spec_mismatches > 0), "{rows:#?}");
    assert!(rows.iter().any(|r| r.up_ms > 0), "{rows:#?}");
    assert_eq!(
        db.count("SELECT coalesce(sum(heartbeats), 0)::bigint AS n FROM nodes"),
        heartbeats
    );
    assert_eq!(
        db.count("SELECT coalesce(sum(mismatches), 0)::bigint AS n FROM nodes"),
        db.count("SELECT coalesce(sum(spec_mismatches), 0)::bigint AS n FROM provider_reputation")
    );
    // Every lease start and end is in the history, and the latest history row of each
    // provider carries its current score.
    let counted: i64 = expected
        .values()
        .map(|c| i64::from(c.0 + c.1 + c.2 + c.3))
        .sum();
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM reputation_history \
             WHERE cause IN ('completed', 'provider_failed', 'buyer_stopped', 'lease_started')"
        ),
        counted
    );
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM provider_reputation p JOIN LATERAL \
             (SELECT score FROM reputation_history h WHERE h.provider = p.provider \
              ORDER BY partition DESC, event_seq DESC LIMIT 1) h ON true \
             WHERE h.score <> p.score"
        ),
        0
    );
}

#[test]
fn stopping_resuming_and_rebuilding_give_identical_tables() {
    let run = EngineRun::file(2, 8_000);
    let live = TestDb::migrated("ledger");
    // Stop and reopen the projectors several times, with different batch sizes.
    for (runs, batch) in [(3, 7), (2, 500), (1, 1)] {
        let mut journal = live.projector(&run.log_url, &run.events_topic, Journal);
        let mut activity = live.projector(&run.log_url, &run.events_topic, Activity);
        let mut reputation = live.projector(&run.log_url, &run.events_topic, Reputation);
        for _ in 0..runs {
            journal.run_batch(batch).unwrap();
            activity.run_batch(batch).unwrap();
            reputation.run_batch(batch).unwrap();
        }
    }
    let stopped_at = 3 * 7 + 2 * 500 + 1;
    assert_eq!(
        live.positions(),
        BTreeMap::from(
            [Journal::NAME, Activity::NAME, Reputation::NAME].map(|p| (p.to_owned(), stopped_at))
        )
    );
    live.project_all(&run.log_url, &run.events_topic, 333);
    check_books(&live, &run);

    // A projection from offset zero into a fresh database, in one go, is the same.
    let fresh = TestDb::migrated("ledger");
    fresh.project_all(&run.log_url, &run.events_topic, 100_000);
    let sums = live.checksums();
    assert_eq!(sums, fresh.checksums());
    assert_eq!(sums.len(), 37, "every table is compared: {sums:?}");

    // So is a rebuild in place.
    let mut journal = live.projector(&run.log_url, &run.events_topic, Journal);
    journal.rebuild().unwrap();
    assert_eq!(journal.next_offset(), 0);
    assert_eq!(live.count("SELECT count(*) AS n FROM postings"), 0);
    journal.catch_up(2_000).unwrap();
    live.projector(&run.log_url, &run.events_topic, Activity)
        .rebuild()
        .unwrap();
    live.projector(&run.log_url, &run.events_topic, Reputation)
        .rebuild()
        .unwrap();
    assert_eq!(live.count("SELECT count(*) AS n FROM orders"), 0);
    live.project_all(&run.log_url, &run.events_topic, 2_000);
    assert_eq!(live.checksums(), fresh.checksums());
}

const H100: &str = "H100-80GB";

fn at(date: &str, hms: (u32, u32, u32)) -> Timestamp {
    let t = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(hms.0, hms.1, hms.2)
        .unwrap()
        .and_utc();
    Timestamp(t.timestamp_millis())
}

/// A `Place` of `gpus` GPUs at `price` on H100-80GB: a bid for `hours`, or an ask on node
/// `fra-1` until March 2026.
fn place(account: u64, side: Side, price: Price, gpus: u64, hours: u64) -> Command {
    Command::Place(NewOrder {
        account: AccountId(account),
        client_id: contract::ClientOrderId(1),
        market: MarketId::parse(H100).unwrap(),
        price,
        gpus: Gpus::new(gpus).unwrap(),
        tif: TimeInForce::Gtc,
        post_only: false,
        terms: match side {
            Side::Bid => OrderTerms::Bid(BidSpec::any(Hours::new(hours).unwrap())),
            Side::Ask => OrderTerms::Ask(AskSpec {
                node: NodeId::parse("fra-1").unwrap(),
                vendor: Vendor::Nvidia,
                vram_gb: 80,
                interconnect: Interconnect::NvLink,
                region: Region::parse("eu-west").unwrap(),
                available_until: at("2026-03-01", (0, 0, 0)),
            }),
        },
    })
}

/// A buyer (1) and a provider (11) trade four GPUs for three hours at 2.00 on 31 January;
/// the lease starts two minutes later and ends after 1.5 hours, in February's first hour.
fn across_a_month_end() -> Vec<CommandRecord> {
    let market = MarketId::parse(H100).unwrap();
    let two = Price::parse("2.00").unwrap();
    let day = "2026-01-31";
    vec![
        (
            at(day, (22, 0, 0)),
            Command::CreateMarket {
                market,
                tick: Price::parse("0.01").unwrap(),
                fee: FeeRate::new(300).unwrap(),
            },
        ),
        (
            at(day, (22, 0, 1)),
            Command::Deposit {
                account: AccountId(1),
                amount: Amount::parse("100").unwrap(),
            },
        ),
        (at(day, (22, 0, 2)), place(11, Side::Ask, two, 4, 3)),
        (at(day, (23, 0, 0)), place(1, Side::Bid, two, 4, 3)),
        (
            at(day, (23, 2, 0)),
            Command::StartLease {
                provider: AccountId(11),
                lease_id: LeaseId(1),
            },
        ),
        (
            at("2026-02-01", (0, 30, 0)),
            Command::EndLease {
                by: AccountId(1),
                lease_id: LeaseId(1),
                hours_used: Decimal::new(15, 1),
                reason: LeaseEndReason::BuyerStopped,
            },
        ),
    ]
    .into_iter()
    .map(|(at, command)| CommandRecord { at, command })
    .collect()
}

#[test]
fn a_lease_is_billed_in_the_month_it_ends_and_invoices_close_after_it() {
    let mut commands = across_a_month_end();
    let run = EngineRun::file_of(commands.clone());
    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 100);

    #[derive(Queryable, Debug, PartialEq)]
    struct Line {
        account: i64,
        provider: i64,
        region: String,
        gpus: i32,
        hours_used: Decimal,
        gpu_hours: Decimal,
        unit_price: Decimal,
        amount: Decimal,
        fee: Decimal,
        list_cost: Decimal,
        refunded: Option<Decimal>,
        period: NaiveDate,
    }
    let lines: Vec<Line> = {
        use ledger::schema::usage_lines::dsl::*;
        usage_lines
            .select((
                account, provider, region, gpus, hours_used, gpu_hours, unit_price, amount, fee,
                list_cost, refunded, period,
            ))
            .load(&mut db.connect())
            .unwrap()
    };
    let d = |s: &str| s.parse::<Decimal>().unwrap();
    let february = NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
    assert_eq!(
        lines,
        [Line {
            account: 1,
            provider: 11,
            region: "eu-west".to_owned(),
            gpus: 4,
            hours_used: d("1.5"),
            gpu_hours: d("6"),
            unit_price: d("2"),
            amount: d("12"),
            fee: d("0.36"),
            list_cost: d("24"),
            refunded: Some(d("12")),
            period: february,
        }]
    );
    let invoices = |db: &TestDb| -> Vec<(i64, NaiveDate, String, i32, Decimal)> {
        use ledger::schema::invoices::dsl::*;
        invoices
            .select((account, period, status, lines, amount))
            .order(period)
            .load(&mut db.connect())
            .unwrap()
    };
    assert_eq!(
        invoices(&db),
        [(1, february, "open".to_owned(), 1, d("12"))]
    );
    let started: (String, Option<i64>) = {
        use ledger::schema::leases::dsl::*;
        leases
            .select((status, start_delay_ms))
            .first(&mut db.connect())
            .unwrap()
    };
    assert_eq!(started, ("ended".to_owned(), Some(120_000)));

    // February's invoice closes once every partition's clock is a heartbeat timeout (the
    // market's default, 30 s) into March: until then, February's last charge periods may
    // still accrue.
    let deposit = |hms| CommandRecord {
        at: at("2026-03-01", hms),
        command: Command::Deposit {
            account: AccountId(1),
            amount: Amount::parse("1").unwrap(),
        },
    };
    commands.push(CommandRecord {
        at: at("2026-03-01", (0, 0, 5)),
        command: Command::Tick,
    });
    commands.push(deposit((0, 0, 6)));
    let run = EngineRun::file_of(commands.clone());
    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 100);
    assert_eq!(
        invoices(&db),
        [(1, february, "open".to_owned(), 1, d("12"))]
    );
    commands.push(deposit((0, 0, 30)));
    let run = EngineRun::file_of(commands);
    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 100);
    assert_eq!(
        invoices(&db),
        [(1, february, "closed".to_owned(), 1, d("12"))]
    );
}

#[test]
fn a_lease_end_without_its_lease_stops_the_activity_projector_before_it() {
    let orphan = codec::encode(&EventRecord {
        seq: 2,
        command_offset: 2,
        at: Timestamp(1_767_225_600_000),
        body: EventBody::Event(Event::LeaseEnded {
            lease_id: LeaseId(41),
            buyer: AccountId(1),
            provider: AccountId(2),
            hours_used: Decimal::ONE,
            charged: Amount::parse("10").unwrap(),
            fee: Amount::parse("1").unwrap(),
            provider_earned: Amount::parse("9").unwrap(),
            refunded: Amount::ZERO,
            reason: LeaseEndReason::Completed,
        }),
    });
    let (_dir, url) = bad_record_log(eventlog::NewRecord {
        kind: "lease_ended",
        schema: SCHEMA,
        payload: &orphan,
    });
    let db = TestDb::migrated("ledger");
    let mut activity = db.projector(&url, "events", Activity);
    // The two deposits before it commit on their own; the batch with the orphan does not.
    activity.run_batch(2).unwrap();
    let err = activity.run_batch(10).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Inconsistent { projector: "activity", detail, .. } if detail.contains("1 of 1 changed leases are unknown")),
        "{err}"
    );
    assert_eq!(activity.next_offset(), 2);
    assert_eq!(db.positions()["activity"], 2);
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_lines"), 0);
}

/// The most one account holds, `i64::MAX` micro-units, through the engine and all three
/// projections: a lease that costs all of it, its fee and earnings, withdrawals, and the
/// buyer depositing it a second time, so that its deposits add up past `i64` in the
/// database. Postings, balances, net positions and billing are exact, and the
/// reconciliation finds no break.
#[test]
fn the_most_an_account_holds_is_booked_exactly() {
    let max = Amount::from_micros(i64::MAX);
    let price = Price::from_micros(i64::MAX);
    // 2.5% of the charge, rounded down; the provider earns the rest.
    let (fee, earned) = (
        Amount::from_micros(230_584_300_921_369_395),
        Amount::from_micros(8_992_787_735_933_406_412),
    );
    let day = "2026-02-10";
    let commands: Vec<CommandRecord> = [
        Command::CreateMarket {
            market: MarketId::parse(H100).unwrap(),
            tick: Price::from_micros(1),
            fee: FeeRate::new(250).unwrap(),
        },
        Command::Deposit {
            account: AccountId(1),
            amount: max,
        },
        place(101, Side::Ask, price, 1, 1),
        place(1, Side::Bid, price, 1, 1),
        Command::EndLease {
            by: AccountId(1),
            lease_id: LeaseId(1),
            hours_used: Decimal::ONE,
            reason: LeaseEndReason::Completed,
        },
        Command::Withdraw {
            account: AccountId(101),
            amount: earned,
        },
        Command::Withdraw {
            account: AccountId::MARKET,
            amount: fee,
        },
        Command::Deposit {
            account: AccountId(1),
            amount: max,
        },
    ]
    .into_iter()
    .enumerate()
    .map(|(i, command)| CommandRecord {
        at: at(day, (12, 0, i as u32)),
        command,
    })
    .collect();
    let run = EngineRun::file_of(commands);
    // The engine accepted all eight.
    assert!(run
        .events()
        .iter()
        .all(|e| matches!(e.body, EventBody::Event(_))));
    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 100);
    check_books(&db, &run);

    let positions: BTreeMap<i64, (Decimal, Decimal, Decimal, Decimal, Decimal)> = {
        use ledger::schema::net_positions::dsl::*;
        net_positions
            .select((
                account,
                (deposits, withdrawals, earnings, usage_charges, fees),
            ))
            .load(&mut db.connect())
            .unwrap()
            .into_iter()
            .collect()
    };
    let d = |a: Amount| decimal(a.micros());
    let zero = Decimal::ZERO;
    assert_eq!(
        positions,
        BTreeMap::from([
            (0, (zero, d(fee), zero, zero, d(fee))),
            (1, (d(max) + d(max), zero, zero, d(max), zero)),
            (101, (zero, d(earned), d(earned), zero, zero)),
        ])
    );
    let billed: (Decimal, Decimal) = {
        use ledger::schema::usage_lines::dsl::*;
        usage_lines
            .select((amount, provider_earned))
            .first(&mut db.connect())
            .unwrap()
    };
    assert_eq!(billed, (d(max), d(earned)));
    let utc = |t: Timestamp| chrono::DateTime::from_timestamp_millis(t.0).unwrap();
    let period =
        ledger::export::Period::new(utc(at(day, (0, 0, 0))), utc(at("2026-02-11", (0, 0, 0))))
            .unwrap();
    let report = ledger::export::reconciliation(
        &mut db.connect(),
        period,
        ledger::export::Granularity::Day,
        None,
    )
    .unwrap();
    assert!(report.breaks.is_empty(), "{:#?}", report.breaks);
}

#[test]
fn a_count_past_its_column_stops_the_reputation_projector_before_the_batch() {
    let started = codec::encode(&EventRecord {
        seq: 2,
        command_offset: 2,
        at: Timestamp(1_767_225_600_000),
        body: EventBody::Event(Event::LeaseStarted {
            lease_id: LeaseId(1),
            provider: AccountId(2),
            node: NodeId::parse("fra-1").unwrap(),
            after_ms: i64::MAX as u64,
        }),
    });
    let (_dir, url) = bad_record_log(eventlog::NewRecord {
        kind: "lease_started",
        schema: SCHEMA,
        payload: &started,
    });
    let db = TestDb::migrated("ledger");
    // A provider whose start delays already add up to a millisecond.
    diesel::sql_query(
        "INSERT INTO provider_reputation VALUES \
         (2, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0.7, 0.8, 0.7, 1, 730, NULL, now())",
    )
    .execute(&mut db.connect())
    .unwrap();
    let mut reputation = db.projector(&url, "events", Reputation);
    let before = db.checksums();
    let err = reputation.run_batch(10).unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::OutOfRange {
                what: "start delays (ms)",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(reputation.next_offset(), 0);
    assert_eq!(db.checksums(), before);
}
