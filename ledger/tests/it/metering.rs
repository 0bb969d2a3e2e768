//! Metered leases through the projections: usage accrues per charge period while a lease
//! runs, lands in each period's month, and settles when the lease's money moves; the
//! reputation projection counts a silent node's downtime from its last heartbeat; a
//! realistic metered day bills, exports and reconciles.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use contract::codec::{CommandRecord, EventBody, EventRecord};
use contract::{
    AccountId, Amount, AskSpec, BidSpec, ChargePeriod, Command, Event, FeeRate, GpuStatus, Gpus,
    Hours, Interconnect, LeaseEndCause, LeaseId, MarketConfig, MarketConfigFields, MarketId,
    NewOrder, NodeId, NodeKey, OrderOptions, OrderTerms, Price, Region, ReportEvidence, ShortText,
    Signature, SignedHeartbeat, TimeInForce, Timestamp, Vendor,
};
use diesel::prelude::*;
use engine_service::testing::{metered_day, Rng, METERED_SPAN, METERED_START};
use ledger::export::{self, Granularity, Period, FOCUS_COLUMNS};
use ledger::testing::TestDb;
use ledger::{Activity, Journal, Projection, Reputation};
use rust_decimal::Decimal;

use crate::check_books;
use crate::stream::EngineRun;

const H100: &str = "H100-80GB";

fn at(date: &str, hms: (u32, u32, u32)) -> Timestamp {
    let t = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(hms.0, hms.1, hms.2)
        .unwrap()
        .and_utc();
    Timestamp(t.timestamp_millis())
}

fn utc(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.0).unwrap()
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// A signed heartbeat of `node` (one H100), made at `made`, listing `leases` as healthy.
fn beat(provider: u64, node: &str, sequence: u64, made: Timestamp, leases: &[u64]) -> Command {
    Command::SignedHeartbeat(Box::new(SignedHeartbeat {
        provider: AccountId(provider),
        node: NodeId::parse(node).unwrap(),
        market: MarketId::parse(H100).unwrap(),
        sequence,
        reported_at: made,
        simulated: false,
        gpus: vec![GpuStatus {
            index: 0,
            vendor: Vendor::Nvidia,
            model: ShortText::parse("NVIDIA H100 80GB HBM3").unwrap(),
            uuid: ShortText::parse(&format!("GPU-{node}")).unwrap(),
            memory_mb: Some(81_559),
            pci_bus_id: None,
            healthy: true,
        }],
        healthy_leases: leases.iter().map(|&l| LeaseId(l)).collect(),
        evidence: ReportEvidence {
            node_key: NodeKey([1; 32]),
            signed: b"{}".to_vec(),
            signature: Signature([2; 64]),
        },
    }))
}

/// Heartbeats of `node` every 10 s in `[from, until)`, listing `leases`, each sent as it is
/// made (its sequence number is its time in seconds, so later ones are newer).
fn beats(
    provider: u64,
    node: &'static str,
    leases: &'static [u64],
    (from, until): (Timestamp, Timestamp),
) -> impl Iterator<Item = (Timestamp, Command)> {
    (from.0..until.0).step_by(10_000).map(move |t| {
        let made = Timestamp(t);
        (made, beat(provider, node, t as u64 / 1_000, made, leases))
    })
}

fn market_opens(day: &str) -> Vec<(Timestamp, Command)> {
    let market = MarketId::parse(H100).unwrap();
    vec![
        (
            at(day, (20, 0, 0)),
            Command::CreateMarket {
                market,
                tick: Price::parse("0.01").unwrap(),
                fee: FeeRate::new(300).unwrap(),
            },
        ),
        (
            at(day, (20, 0, 0)),
            Command::ConfigureMarket {
                market,
                config: MarketConfig::new(MarketConfigFields {
                    charge_period: ChargePeriod::HOUR,
                    ..MarketConfigFields::default()
                })
                .unwrap(),
            },
        ),
    ]
}

fn ask(provider: u64, node: &str, price: &str, gpus: u64) -> Command {
    Command::Place(NewOrder {
        account: AccountId(provider),
        client_id: contract::ClientOrderId(1),
        market: MarketId::parse(H100).unwrap(),
        price: Price::parse(price).unwrap(),
        gpus: Gpus::new(gpus).unwrap(),
        tif: TimeInForce::Gtc,
        post_only: false,
        terms: OrderTerms::Ask(AskSpec {
            node: NodeId::parse(node).unwrap(),
            vendor: Vendor::Nvidia,
            vram_gb: 80,
            interconnect: Interconnect::NvLink,
            region: Region::parse("eu-west").unwrap(),
            available_until: at("2026-03-01", (0, 0, 0)),
        }),
    })
}

fn in_order(mut commands: Vec<(Timestamp, Command)>) -> Vec<CommandRecord> {
    // Stable: commands at the same time keep the order they were listed in.
    commands.sort_by_key(|(at, _)| *at);
    commands
        .into_iter()
        .map(|(at, command)| CommandRecord { at, command })
        .collect()
}

/// Runs each projection up to (not including) event record `end`.
fn project_to(db: &TestDb, run: &EngineRun, end: u64) {
    fn step<P: Projection>(db: &TestDb, run: &EngineRun, projection: P, end: u64) {
        let mut projector = db.projector(&run.log_url, &run.events_topic, projection);
        while projector.next_offset() < end {
            projector
                .run_batch((end - projector.next_offset()) as usize)
                .unwrap();
        }
    }
    step(db, run, Journal, end);
    step(db, run, Activity, end);
    step(db, run, Reputation, end);
}

/// The offset of the first event record at or after `t`.
fn first_at(records: &[EventRecord], t: Timestamp) -> u64 {
    records.iter().take_while(|r| r.at < t).count() as u64
}

fn focus_rows(db: &TestDb, period: Period) -> Vec<csv::StringRecord> {
    let mut bytes = Vec::new();
    export::focus_csv(&mut db.connect(), period, "USD", &mut bytes).unwrap();
    let mut reader = csv::Reader::from_reader(&bytes[..]);
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        FOCUS_COLUMNS
    );
    reader.records().map(Result::unwrap).collect()
}

fn column(name: &str) -> usize {
    FOCUS_COLUMNS.iter().position(|c| *c == name).unwrap()
}

/// Every cost of every FOCUS row is the one the contract's rule gives for the row's charged
/// time: list = contracted = effective = billed = `floor(price × GPUs × ms / 3,600,000)`,
/// the fee `floor(charge × 300 / 10,000)`, the provider the rest; all in micro-units.
fn check_focus_costs(rows: &[csv::StringRecord]) {
    let fee_rate = FeeRate::new(300).unwrap();
    for row in rows {
        let get = |name: &str| &row[column(name)];
        let time = |name: &str| DateTime::parse_from_rfc3339(get(name)).unwrap();
        let ms = (time("x_UsageEnd") - time("x_UsageStart")).num_milliseconds();
        let gpus = Gpus::new(get("x_Gpus").parse().unwrap()).unwrap();
        let charge = Price::parse(get("ListUnitPrice"))
            .unwrap()
            .charge_for(gpus, ms as u64)
            .unwrap();
        let fee = fee_rate.fee_on(charge);
        let micros = |name: &str| Amount::parse(get(name)).unwrap();
        for cost in ["ListCost", "ContractedCost", "EffectiveCost", "BilledCost"] {
            assert_eq!(micros(cost), charge, "{cost} of {row:?}");
        }
        assert_eq!(get("ContractedUnitPrice"), get("ListUnitPrice"));
        assert_eq!(micros("x_MarketFee"), fee, "{row:?}");
        assert_eq!(
            micros("x_ProviderEarned").micros(),
            charge.micros() - fee.micros(),
            "{row:?}"
        );
    }
}

type Invoice = (i64, NaiveDate, String, i32, Decimal);
type Earning = (i64, NaiveDate, i32, Decimal, Decimal, Decimal);

fn invoices(db: &TestDb) -> Vec<Invoice> {
    use ledger::schema::invoices::dsl::*;
    invoices
        .select((account, period, status, lines, amount))
        .order((account, period))
        .load(&mut db.connect())
        .unwrap()
}

fn earnings(db: &TestDb) -> Vec<Earning> {
    use ledger::schema::earnings::dsl::*;
    earnings
        .select((provider, period, leases, gross, fees, net))
        .order((provider, period))
        .load(&mut db.connect())
        .unwrap()
}

/// A usage line as the test states it: the charge period's start and end, the charged
/// time's, the month, the amount, and the event that settled it.
type Line = (
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
    NaiveDate,
    Decimal,
    Option<i64>,
);

fn lines(db: &TestDb) -> Vec<Line> {
    use ledger::schema::usage_lines::dsl::*;
    usage_lines
        .select((
            charge_start,
            charge_end,
            usage_start,
            usage_end,
            period,
            amount,
            settled_seq,
        ))
        .order(charge_start)
        .load(&mut db.connect())
        .unwrap()
}

/// A buyer (1) leases four GPUs of provider 11 for three hours at 2.00 from 22:30 on
/// 31 January, and stops the lease at 01:10 on 1 February. The node reports every 10 s.
#[test]
fn a_running_lease_bills_each_period_in_its_month_before_it_ends_and_settles_at_its_end() {
    let day = "2026-01-31";
    let mut commands = market_opens(day);
    commands.push((
        at(day, (20, 0, 1)),
        Command::Deposit {
            account: AccountId(1),
            amount: Amount::parse("100").unwrap(),
        },
    ));
    commands.push((at(day, (20, 0, 2)), ask(11, "fra-1", "2.00", 4)));
    let bid = NewOrder {
        account: AccountId(1),
        client_id: contract::ClientOrderId(1),
        market: MarketId::parse(H100).unwrap(),
        price: Price::parse("2.00").unwrap(),
        gpus: Gpus::new(4).unwrap(),
        tif: TimeInForce::Gtc,
        post_only: false,
        terms: OrderTerms::Bid(BidSpec::any(Hours::new(3).unwrap())),
    };
    commands.push((
        at(day, (22, 30, 0)),
        Command::PlaceWith {
            order: bid,
            options: OrderOptions::default(),
        },
    ));
    let stop = at("2026-02-01", (1, 10, 0));
    commands.push((
        stop,
        Command::StopLease {
            by: AccountId(1),
            lease_id: LeaseId(1),
        },
    ));
    // The node reports 5 s after each whole 10 s, listing the lease (before it exists too:
    // an id the node has no lease of is ignored).
    commands.extend(beats(
        11,
        "fra-1",
        &[1],
        (at(day, (20, 0, 5)), at("2026-02-01", (1, 20, 0))),
    ));
    let run = EngineRun::file_of(in_order(commands));
    let records = run.events();
    assert!(
        records
            .iter()
            .all(|r| matches!(r.body, EventBody::Event(_))),
        "every command is accepted"
    );
    let db = TestDb::migrated("ledger");
    let (january, february) = (
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(),
    );
    let t = |date, hms| utc(at(date, hms));
    let rule = |from: Timestamp, to: Timestamp| {
        let charge = Price::parse("2.00")
            .unwrap()
            .charge_for(Gpus::new(4).unwrap(), (to.0 - from.0) as u64)
            .unwrap();
        Decimal::new(charge.micros(), 6)
    };
    let export_period = Period::new(t(day, (0, 0, 0)), t("2026-02-02", (0, 0, 0))).unwrap();

    // 23:10: the lease runs; its first period accrued (at 23:00 and a heartbeat timeout)
    // and shows on January's open invoice, the provider's earnings, the FOCUS export and
    // the revenue accrued but not settled.
    project_to(&db, &run, first_at(&records, at(day, (23, 10, 0))));
    let first = (
        t(day, (22, 0, 0)),
        t(day, (23, 0, 0)),
        t(day, (22, 30, 0)),
        t(day, (23, 0, 0)),
        january,
        d("4"),
        None,
    );
    assert_eq!(lines(&db), [first]);
    assert_eq!(rule(at(day, (22, 30, 0)), at(day, (23, 0, 0))), d("4"));
    assert_eq!(invoices(&db), [(1, january, "open".to_owned(), 1, d("4"))]);
    assert_eq!(
        earnings(&db),
        [(11, january, 1, d("4"), d("0.12"), d("3.88"))]
    );
    let accrued = ledger::read::accrued(&mut db.connect(), None).unwrap();
    assert_eq!(
        (accrued.leases, accrued.lines, accrued.gross, accrued.fees),
        (1, 1, d("4"), d("0.12"))
    );
    let rows = focus_rows(&db, export_period);
    assert_eq!(rows.len(), 1);
    for (name, value) in [
        ("ChargePeriodStart", "2026-01-31T22:00:00Z"),
        ("ChargePeriodEnd", "2026-01-31T23:00:00Z"),
        ("BillingPeriodStart", "2026-01-01T00:00:00Z"),
        ("InvoiceId", "invoice/1/2026-01"),
        ("BilledCost", "4.000000"),
        ("ListCost", "4.000000"),
        ("x_SettledAt", ""),
        ("x_LeaseEndReason", ""),
    ] {
        assert_eq!(&rows[0][column(name)], value, "{name}");
    }
    check_focus_costs(&rows);

    // 01:05: the lease still runs; the period that crossed into February was cut at
    // midnight, January's part billed in January (whose invoice closed a heartbeat timeout
    // after the month's end), February's in February.
    project_to(&db, &run, first_at(&records, at("2026-02-01", (1, 5, 0))));
    let lines_then = lines(&db);
    assert_eq!(
        lines_then
            .iter()
            .map(|l| (l.0, l.4, l.5, l.6))
            .collect::<Vec<_>>(),
        [
            (t(day, (22, 0, 0)), january, d("4"), None),
            (t(day, (23, 0, 0)), january, d("8"), None),
            (t("2026-02-01", (0, 0, 0)), february, d("8"), None),
        ]
    );
    assert_eq!(
        invoices(&db),
        [
            (1, january, "closed".to_owned(), 2, d("12")),
            (1, february, "open".to_owned(), 1, d("8")),
        ]
    );
    // A lease counts once per month in the provider's statement, however many periods.
    assert_eq!(
        earnings(&db),
        [
            (11, january, 1, d("12"), d("0.36"), d("11.64")),
            (11, february, 1, d("8"), d("0.24"), d("7.76")),
        ]
    );
    let rows = focus_rows(&db, export_period);
    assert_eq!(
        rows.iter()
            .map(|r| (
                r[column("ChargePeriodStart")].to_owned(),
                r[column("InvoiceId")].to_owned(),
                r[column("x_SettledAt")].to_owned()
            ))
            .collect::<Vec<_>>(),
        [
            ("2026-01-31T22:00:00Z", "invoice/1/2026-01", ""),
            ("2026-01-31T23:00:00Z", "invoice/1/2026-01", ""),
            ("2026-02-01T00:00:00Z", "invoice/1/2026-02", ""),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    check_focus_costs(&rows);
    let status: String = {
        use ledger::schema::leases::dsl::*;
        leases.select(status).first(&mut db.connect()).unwrap()
    };
    assert_ne!(status, "ended");

    // The stop closes the lease: its open period accrues to the stop, and its end moves
    // the money and settles every line with its own event.
    project_to(&db, &run, records.len() as u64);
    let (end_seq, end_at, charged) = records
        .iter()
        .find_map(|r| match &r.body {
            EventBody::Event(Event::LeaseEnded { charged, .. }) => {
                Some((r.seq as i64, r.at, *charged))
            }
            _ => None,
        })
        .expect("the lease ended");
    let last = rule(at("2026-02-01", (1, 0, 0)), stop);
    assert_eq!(last, d("1.333333"));
    assert_eq!(
        lines(&db),
        [
            (
                first.0,
                first.1,
                first.2,
                first.3,
                january,
                d("4"),
                Some(end_seq)
            ),
            (
                t(day, (23, 0, 0)),
                t("2026-02-01", (0, 0, 0)),
                t(day, (23, 0, 0)),
                t("2026-02-01", (0, 0, 0)),
                january,
                d("8"),
                Some(end_seq)
            ),
            (
                t("2026-02-01", (0, 0, 0)),
                t("2026-02-01", (1, 0, 0)),
                t("2026-02-01", (0, 0, 0)),
                t("2026-02-01", (1, 0, 0)),
                february,
                d("8"),
                Some(end_seq)
            ),
            (
                t("2026-02-01", (1, 0, 0)),
                t("2026-02-01", (2, 0, 0)),
                t("2026-02-01", (1, 0, 0)),
                utc(stop),
                february,
                last,
                Some(end_seq)
            ),
        ]
    );
    assert_eq!(Decimal::new(charged.micros(), 6), d("21.333333"));
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS n FROM usage_lines WHERE settled_at = '{}'",
            utc(end_at).to_rfc3339()
        )),
        4
    );
    assert_eq!(
        invoices(&db),
        [
            (1, january, "closed".to_owned(), 2, d("12")),
            (1, february, "open".to_owned(), 2, d("9.333333")),
        ]
    );
    let accrued = ledger::read::accrued(&mut db.connect(), None).unwrap();
    assert_eq!((accrued.leases, accrued.gross), (0, Decimal::ZERO));
    let rows = focus_rows(&db, export_period);
    assert!(rows.iter().all(|r| !r[column("x_SettledAt")].is_empty()
        && &r[column("x_LeaseEndReason")] == "buyer_stopped"));
    check_focus_costs(&rows);
    let report =
        export::reconciliation(&mut db.connect(), export_period, Granularity::Day, None).unwrap();
    assert!(report.breaks.is_empty(), "{:#?}", report.breaks);
}

/// Node `fra-1` (provider 11) reports for ten minutes and never again; `bom-1` (13) drops
/// out for fifty minutes and returns; `ams-1` (12) reports for two hours throughout.
#[test]
fn a_silent_node_is_down_from_its_last_heartbeat_whether_or_not_it_returns() {
    let day = "2026-01-31";
    let mut commands = market_opens(day);
    let (from, to) = (at(day, (21, 0, 0)), at(day, (23, 0, 0)));
    let minutes = |m: i64| Timestamp(from.0 + m * 60_000);
    commands.extend(beats(11, "fra-1", &[], (from, minutes(10))));
    commands.extend(beats(12, "ams-1", &[], (Timestamp(from.0 + 1_000), to)));
    commands.extend(beats(
        13,
        "bom-1",
        &[],
        (Timestamp(from.0 + 2_000), minutes(10)),
    ));
    commands.extend(beats(
        13,
        "bom-1",
        &[],
        (Timestamp(minutes(60).0 + 2_000), to),
    ));
    let run = EngineRun::file_of(in_order(commands));
    let records = run.events();
    assert!(
        records
            .iter()
            .all(|r| matches!(r.body, EventBody::Event(_))),
        "every command is accepted"
    );
    let silent: Vec<(AccountId, Timestamp)> = records
        .iter()
        .filter_map(|r| match &r.body {
            EventBody::Event(Event::NodeSilent {
                provider,
                last_seen,
                ..
            }) => Some((*provider, *last_seen)),
            _ => None,
        })
        .collect();
    let last_beat = |offset: i64| Timestamp(minutes(10).0 - 10_000 + offset);
    assert_eq!(
        silent,
        [
            (AccountId(11), last_beat(0)),
            (AccountId(13), last_beat(2_000))
        ]
    );
    // The last heartbeats: ams-1's at 1 s and bom-1's at 2 s past the last whole 10 s.
    let (ams_last, bom_last) = (Timestamp(to.0 - 9_000), Timestamp(to.0 - 8_000));
    let latest = records.last().unwrap().at;
    assert_eq!(latest, bom_last);
    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 64);

    #[derive(Queryable, Debug, PartialEq)]
    struct NodeRow {
        provider: i64,
        up_ms: i64,
        down_ms: i64,
        silent_through: Option<DateTime<Utc>>,
    }
    let nodes: Vec<NodeRow> = {
        use ledger::schema::nodes::dsl::*;
        nodes
            .select((provider, up_ms, down_ms, silent_through))
            .order(provider)
            .load(&mut db.connect())
            .unwrap()
    };
    let ms = |a: Timestamp, b: Timestamp| b.0 - a.0;
    assert_eq!(
        nodes,
        [
            // Silent for good: down from its last heartbeat to the latest record anyone's
            // heartbeat made, and still counting.
            NodeRow {
                provider: 11,
                up_ms: ms(from, last_beat(0)),
                down_ms: ms(last_beat(0), latest),
                silent_through: Some(utc(latest)),
            },
            NodeRow {
                provider: 12,
                up_ms: ms(Timestamp(from.0 + 1_000), ams_last),
                down_ms: 0,
                silent_through: None,
            },
            // Back: the gap is down once, from the last heartbeat to the first one back.
            NodeRow {
                provider: 13,
                up_ms: ms(Timestamp(from.0 + 2_000), last_beat(2_000))
                    + ms(Timestamp(minutes(60).0 + 2_000), bom_last),
                down_ms: ms(last_beat(2_000), Timestamp(minutes(60).0 + 2_000)),
                silent_through: None,
            },
        ]
    );
    // The providers' records are their nodes', and the silences are history.
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM provider_reputation p JOIN nodes n USING (provider) \
             WHERE (p.up_ms, p.down_ms) <> (n.up_ms, n.down_ms)"
        ),
        0
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM reputation_history WHERE cause = 'node_silent'"),
        2
    );
    let uptime = |provider: i64| {
        ledger::read::provider(&mut db.connect(), AccountId(provider as u64))
            .unwrap()
            .unwrap()
            .uptime
    };
    assert!(uptime(11) < uptime(13) && uptime(13) < uptime(12));

    // However the records are batched, the tables are the same.
    let one_by_one = TestDb::migrated("ledger");
    one_by_one.project_all(&run.log_url, &run.events_topic, 1);
    assert_eq!(one_by_one.checksums(), db.checksums());
}

/// A day of metered trading across a month's end: the books match the engine, every FOCUS
/// row is costed by the rule, the export adds up to the invoices with running usage in
/// them, the reconciliation finds no break, and any batching gives the same tables.
#[test]
fn a_metered_day_bills_exports_and_reconciles() {
    let run = EngineRun::file_of(metered_day(&mut Rng(21)));
    let records = run.events();
    // The day has what it is meant to have.
    let mut causes = std::collections::BTreeSet::new();
    let (mut accruals, mut silences, mut rebids) = (0, 0, 0);
    for record in &records {
        match &record.body {
            EventBody::Event(Event::LeaseClosed { cause, .. }) => {
                causes.insert(cause.as_str());
            }
            EventBody::Event(Event::LeaseAccrued { .. }) => accruals += 1,
            EventBody::Event(Event::NodeSilent { .. }) => silences += 1,
            EventBody::Event(Event::OrderRebid { .. }) => rebids += 1,
            _ => {}
        }
    }
    for cause in [
        LeaseEndCause::TermReached.as_str(),
        LeaseEndCause::BuyerStopped.as_str(),
        "node_silent",
        "unhealthy",
    ] {
        assert!(
            causes.contains(cause),
            "no lease closed as {cause}: {causes:?}"
        );
    }
    assert!(
        accruals > 100 && silences == 3 && rebids > 0,
        "{accruals} {silences} {rebids}"
    );

    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 4_096);
    check_books(&db, &run);
    let start = utc(Timestamp(METERED_START));
    let day = Period::new(start, start + TimeDelta::milliseconds(METERED_SPAN)).unwrap();
    let rows = focus_rows(&db, day);
    check_focus_costs(&rows);
    assert_eq!(
        rows.len() as i64,
        db.count("SELECT count(*) AS n FROM usage_lines")
    );
    let billed: Decimal = rows
        .iter()
        .map(|r| r[column("BilledCost")].parse::<Decimal>().unwrap())
        .sum();
    #[derive(QueryableByName)]
    struct Sum {
        #[diesel(sql_type = diesel::sql_types::Numeric)]
        s: Decimal,
    }
    let invoiced: Sum = diesel::sql_query("SELECT coalesce(sum(amount), 0) AS s FROM invoices")
        .get_result(&mut db.connect())
        .unwrap();
    assert_eq!(billed, invoiced.s);
    // Running usage is in it, and the midnight between the two months.
    let unsettled = rows
        .iter()
        .filter(|r| r[column("x_SettledAt")].is_empty())
        .count();
    assert!(unsettled > 0 && unsettled < rows.len(), "{unsettled}");
    let months: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| &r[column("BillingPeriodStart")])
        .collect();
    assert_eq!(
        months.into_iter().collect::<Vec<_>>(),
        ["2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z"]
    );
    let accrued = ledger::read::accrued(&mut db.connect(), None).unwrap();
    assert!(accrued.gross > Decimal::ZERO && accrued.leases > 0);

    let around = Period::new(start - TimeDelta::hours(1), start + TimeDelta::hours(25)).unwrap();
    let report = export::reconciliation(&mut db.connect(), around, Granularity::Day, None).unwrap();
    assert!(report.breaks.is_empty(), "{:#?}", report.breaks);

    let batched = TestDb::migrated("ledger");
    batched.project_all(&run.log_url, &run.events_topic, 97);
    assert_eq!(batched.checksums(), db.checksums());
}
