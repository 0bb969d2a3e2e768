//! The finance exports over a projected stream: the journal CSV traces to events and
//! commands, the FOCUS export adds up to the invoices, the reconciliation balances and lists
//! the breaks someone makes by hand.

use chrono::{DateTime, TimeDelta};
use contract::codec::EventBody;
use diesel::connection::SimpleConnection;
use engine_service::testing::T0;
use ledger::export::{self, Granularity, Period, FOCUS_COLUMNS};
use ledger::testing::TestDb;
use ledger::LedgerError;
use rust_decimal::Decimal;

use crate::stream::EngineRun;

fn day_of_the_stream() -> Period {
    let t0 = DateTime::from_timestamp_millis(T0).unwrap();
    Period::new(t0 - TimeDelta::days(1), t0 + TimeDelta::days(1)).unwrap()
}

fn read_csv(bytes: &[u8]) -> (csv::StringRecord, Vec<csv::StringRecord>) {
    let mut reader = csv::Reader::from_reader(bytes);
    let header = reader.headers().unwrap().clone();
    let rows = reader.records().map(Result::unwrap).collect();
    (header, rows)
}

#[test]
fn the_journal_export_traces_every_posting_to_its_event_and_command() {
    let run = EngineRun::file(13, 10_000);
    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 4_096);
    let mut bytes = Vec::new();
    let written = export::journal_csv(&mut db.connect(), day_of_the_stream(), &mut bytes).unwrap();
    let (header, rows) = read_csv(&bytes);
    assert_eq!(
        header.iter().collect::<Vec<_>>(),
        [
            "at",
            "partition",
            "event_seq",
            "command_offset",
            "kind",
            "leg",
            "account",
            "bucket",
            "amount"
        ]
    );
    assert_eq!(written, rows.len() as u64);
    assert_eq!(
        rows.len() as i64,
        db.count("SELECT count(*) AS n FROM postings")
    );
    let events = run.events();
    let mut total = Decimal::ZERO;
    for row in &rows {
        let event = &events[row[2].parse::<usize>().unwrap()];
        assert_eq!(row[3].parse::<u64>().unwrap(), event.command_offset);
        assert_eq!(&row[4], event.body.kind());
        assert!(matches!(event.body, EventBody::Event(_)));
        total += row[8].parse::<Decimal>().unwrap();
    }
    assert_eq!(total, Decimal::ZERO);
    // Pages never split or repeat a transaction: rows come in (time, seq, leg) order.
    let keys: Vec<(String, u64, u16)> = rows
        .iter()
        .map(|r| {
            (
                r[0].to_owned(),
                r[2].parse().unwrap(),
                r[5].parse().unwrap(),
            )
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));

    // A period before the stream holds nothing; a reversed one is refused.
    let t0 = DateTime::from_timestamp_millis(T0).unwrap();
    let before = Period::new(t0 - TimeDelta::days(2), t0 - TimeDelta::days(1)).unwrap();
    let mut empty = Vec::new();
    assert_eq!(
        export::journal_csv(&mut db.connect(), before, &mut empty).unwrap(),
        0
    );
    assert_eq!(read_csv(&empty).1.len(), 0);
    assert!(matches!(
        Period::new(t0, t0),
        Err(LedgerError::BadPeriod { .. })
    ));
}

#[test]
fn the_focus_export_bills_what_the_invoices_say() {
    let run = EngineRun::file(14, 10_000);
    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 4_096);
    let mut bytes = Vec::new();
    let written =
        export::focus_csv(&mut db.connect(), day_of_the_stream(), "USD", &mut bytes).unwrap();
    let (header, rows) = read_csv(&bytes);
    assert_eq!(header.iter().collect::<Vec<_>>(), FOCUS_COLUMNS);
    assert_eq!(written, rows.len() as u64);
    assert!(!rows.is_empty());
    assert_eq!(
        rows.len() as i64,
        db.count("SELECT count(*) AS n FROM usage_lines")
    );
    let column = |name: &str| FOCUS_COLUMNS.iter().position(|c| *c == name).unwrap();
    let (billed, effective, quantity, unit_price, list) = (
        column("BilledCost"),
        column("EffectiveCost"),
        column("PricingQuantity"),
        column("ListUnitPrice"),
        column("ListCost"),
    );
    let mut total = Decimal::ZERO;
    for row in &rows {
        let cost: Decimal = row[billed].parse().unwrap();
        assert_eq!(row[effective], row[billed]);
        assert_eq!(&row[column("BillingCurrency")], "USD");
        assert_eq!(&row[column("PricingUnit")], "GPU-Hours");
        assert_eq!(&row[column("ChargeCategory")], "Usage");
        assert!(row[column("ResourceId")].starts_with("lease/0/"));
        assert!(row[column("ChargePeriodStart")] <= row[column("ChargePeriodEnd")]);
        // The charge is the list cost rounded down to the micro-unit.
        let list_cost: Decimal = row[list].parse().unwrap();
        let priced =
            row[unit_price].parse::<Decimal>().unwrap() * row[quantity].parse::<Decimal>().unwrap();
        assert_eq!(list_cost, priced.round_dp(6));
        assert!(cost <= list_cost && list_cost - cost < Decimal::new(1, 6));
        serde_json::from_str::<serde_json::Value>(&row[column("Tags")]).unwrap();
        total += cost;
    }
    #[derive(diesel::QueryableByName)]
    struct Sum {
        #[diesel(sql_type = diesel::sql_types::Numeric)]
        s: Decimal,
    }
    let invoiced: Sum = diesel::RunQueryDsl::get_result(
        diesel::sql_query("SELECT coalesce(sum(amount), 0) AS s FROM invoices"),
        &mut db.connect(),
    )
    .unwrap();
    assert_eq!(total, invoiced.s);
}

#[test]
fn the_reconciliation_balances_and_lists_every_break() {
    let run = EngineRun::file(15, 10_000);
    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 4_096);
    let period = day_of_the_stream();
    let report = export::reconciliation(&mut db.connect(), period, Granularity::Day).unwrap();
    assert!(report.breaks.is_empty(), "{:#?}", report.breaks);
    assert!(report.transactions > 1_000);
    // The stream's day (the day before it has no balances, so no lines), every account and
    // bucket in it.
    let periods: std::collections::BTreeSet<_> =
        report.lines.iter().map(|l| l.period_start).collect();
    let t0 = DateTime::from_timestamp_millis(T0).unwrap();
    assert_eq!(periods.into_iter().collect::<Vec<_>>(), [t0]);
    assert_eq!(
        report.lines.len() as i64,
        db.count("SELECT count(*) AS n FROM balances")
    );
    let closing: Decimal = report.lines.iter().map(|l| l.closing).sum();
    assert_eq!(closing, Decimal::ZERO);
    let mut bytes = Vec::new();
    report.write_csv(&mut bytes).unwrap();
    let (_, rows) = read_csv(&bytes);
    assert_eq!(rows.len(), report.lines.len());
    assert!(rows.iter().all(|r| &r[7] == "ok"));

    // Someone edits a running balance and a bill by hand: both show as breaks.
    db.connect()
        .batch_execute(
            "UPDATE balances SET amount = amount + 1 WHERE account = 1 AND bucket = 'available'; \
             UPDATE usage_lines SET fee = fee + 0.5 \
             WHERE lease_id = (SELECT min(lease_id) FROM usage_lines)",
        )
        .unwrap();
    let report = export::reconciliation(&mut db.connect(), period, Granularity::Month).unwrap();
    let checks: Vec<&str> = report.breaks.iter().map(|b| b.check).collect();
    assert_eq!(
        checks,
        ["journal fees = billed fees", "closing = running balances"],
        "{:#?}",
        report.breaks
    );
    assert!(
        report.breaks[1].detail.contains("account 1 available"),
        "{:#?}",
        report.breaks
    );
    let mut bytes = Vec::new();
    report.write_csv(&mut bytes).unwrap();
    let (_, rows) = read_csv(&bytes);
    assert_eq!(
        rows.iter().filter(|r| r[7].starts_with("break: ")).count(),
        2
    );
}
