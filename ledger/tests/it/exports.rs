//! The finance exports over a projected stream: the journal CSV traces to events and
//! commands, the FOCUS export adds up to the invoices, the reconciliation balances and lists
//! the breaks someone makes by hand.

use chrono::{DateTime, TimeDelta};
use contract::codec::EventBody;
use contract::TxHash;
use diesel::connection::SimpleConnection;
use engine_service::testing::T0;
use ledger::export::{
    self, ChainTransfer, ChainView, Granularity, Period, Solvency, FOCUS_COLUMNS,
};
use ledger::testing::TestDb;
use ledger::{Activity, Journal, LedgerError, Reputation};
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
    let report = export::reconciliation(&mut db.connect(), period, Granularity::Day, None).unwrap();
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
    let report =
        export::reconciliation(&mut db.connect(), period, Granularity::Month, None).unwrap();
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

#[test]
fn reconciliations_taken_while_the_projectors_write_show_no_break() {
    let run = EngineRun::file(16, 10_000);
    let db = TestDb::migrated("ledger");
    let period = day_of_the_stream();
    let (url, topic) = (run.log_url.as_str(), run.events_topic.as_str());
    let mut conn = db.connect();
    let mut taken = 0;
    std::thread::scope(|scope| {
        // Small batches: many commits, each one a moment a report could fall between.
        let writers = [
            scope.spawn(|| db.projector(url, topic, Journal).catch_up(32).map(drop)),
            scope.spawn(|| db.projector(url, topic, Activity).catch_up(32).map(drop)),
            scope.spawn(|| db.projector(url, topic, Reputation).catch_up(32).map(drop)),
        ];
        while writers.iter().any(|w| !w.is_finished()) {
            let report = export::reconciliation(&mut conn, period, Granularity::Day, None).unwrap();
            assert!(
                report.breaks.is_empty(),
                "report {taken}, taken while the projectors wrote: {:#?}",
                report.breaks
            );
            taken += 1;
        }
        for w in writers {
            w.join().unwrap().unwrap();
        }
    });
    assert!(
        taken >= 3,
        "only {taken} reports were taken while the projectors wrote"
    );
    let report = export::reconciliation(&mut conn, period, Granularity::Day, None).unwrap();
    assert!(report.breaks.is_empty(), "{:#?}", report.breaks);
    assert_eq!(
        db.positions().values().copied().collect::<Vec<_>>(),
        vec![run.events_end() as i64; 3]
    );
}

fn tx(n: u8) -> TxHash {
    TxHash([n; 32])
}

#[test]
fn the_reconciliation_checks_the_ledger_against_the_chain_and_reports_solvency() {
    let run = EngineRun::file(17, 5_000);
    let db = TestDb::migrated("ledger");
    db.project_all(&run.log_url, &run.events_topic, 4_096);
    let period = day_of_the_stream();
    let mut conn = db.connect();
    // Customer liabilities: every account's money but the market's, at the period's end.
    let owed: Decimal = {
        #[derive(diesel::QueryableByName)]
        struct Owed {
            #[diesel(sql_type = diesel::sql_types::Numeric)]
            owed: Decimal,
        }
        diesel::RunQueryDsl::get_result::<Owed>(
            diesel::sql_query(
                "SELECT coalesce(sum(amount), 0) AS owed FROM balances WHERE account <> 0 \
                 AND bucket IN ('available', 'held', 'in_lease', 'settling')",
            ),
            &mut conn,
        )
        .unwrap()
        .owed
    };
    assert!(owed > Decimal::ZERO);
    let t0 = DateTime::from_timestamp_millis(T0).unwrap();
    let at = t0.to_rfc3339();
    let view = |balance: Decimal, outgoing: Vec<ChainTransfer>, incoming| ChainView {
        height: 100,
        balance,
        incoming,
        outgoing,
    };
    let report = |view: &ChainView| {
        export::reconciliation(&mut db.connect(), period, Granularity::Day, Some(view)).unwrap()
    };

    // Holdings that cover what is owed: the figure, and no break.
    let covered = report(&view(owed, vec![], vec![]));
    assert!(covered.breaks.is_empty(), "{:#?}", covered.breaks);
    assert_eq!(
        covered.solvency,
        Some(Solvency {
            at: period.to(),
            liabilities: owed,
            in_flight: Decimal::ZERO,
            holdings: owed,
            height: 100,
        })
    );
    let mut bytes = Vec::new();
    covered.write_csv(&mut bytes).unwrap();
    let (_, rows) = read_csv(&bytes);
    let solvency: Vec<(String, String)> = rows
        .iter()
        .filter(|r| &r[7] == "solvency")
        .map(|r| (r[2].to_owned(), r[6].to_owned()))
        .collect();
    assert_eq!(
        solvency,
        [
            ("customers".to_owned(), owed.to_string()),
            ("escrow".to_owned(), owed.to_string())
        ]
    );

    // One micro-unit short: a break with both figures.
    let short = owed - Decimal::new(1, 6);
    let insolvent = report(&view(short, vec![], vec![]));
    let checks: Vec<&str> = insolvent.breaks.iter().map(|b| b.check).collect();
    assert_eq!(checks, ["customer liabilities <= escrow holdings"]);
    let detail = &insolvent.breaks[0].detail;
    assert!(
        detail.contains(&format!("owes customers {owed}"))
            && detail.contains(&format!("holds {short} on chain at height 100")),
        "{detail}"
    );

    // A confirmed settlement the chain does not show is a break naming it and its
    // transaction; one confirmed above the height the chain was read at is not checked yet.
    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        &format!(
            "INSERT INTO settlements VALUES \
             (1, 0, 'confirmed', 5, 1, '{at}', '{at}', '{}', 90, NULL), \
             (2, 0, 'confirmed', 7, 1, '{at}', '{at}', '{}', 101, NULL)",
            tx(1),
            tx(2)
        ),
    )
    .unwrap();
    let paid = |hash: TxHash, amount: i64| ChainTransfer {
        tx_hash: hash,
        msg_index: 0,
        amount: Decimal::from(amount),
        height: 90,
        block_time: t0,
    };
    let lost = report(&view(owed, vec![], vec![]));
    let details: Vec<&str> = lost.breaks.iter().map(|b| b.detail.as_str()).collect();
    assert_eq!(
        details,
        [format!(
            "settlement 1 (tx {}) pays 5 in the ledger but 0 on chain (read at height 100)",
            tx(1)
        )]
    );
    assert!(report(&view(owed, vec![paid(tx(1), 5)], vec![]))
        .breaks
        .is_empty());

    // A payout on chain: of no batch, a break; of a batch the ledger has not closed, on its
    // way (and already out of the holdings, so not owed).
    let orphan = report(&view(owed, vec![paid(tx(1), 5), paid(tx(3), 4)], vec![]));
    assert_eq!(
        orphan
            .breaks
            .iter()
            .map(|b| b.detail.as_str())
            .collect::<Vec<_>>(),
        [format!(
            "transaction {} at height 90 sent 4 out of escrow, and no confirmed settlement has it",
            tx(3)
        )]
    );
    ledger::store::store_settlement_tx(&mut conn, contract::SettlementId(3), &tx(3), b"", 0, 0)
        .unwrap();
    let paying = report(&view(
        owed - Decimal::from(4),
        vec![paid(tx(1), 5), paid(tx(3), 4)],
        vec![],
    ));
    assert!(paying.breaks.is_empty(), "{:#?}", paying.breaks);
    assert_eq!(paying.solvency.unwrap().in_flight, Decimal::from(4));

    // A credited deposit: against the chain's transfer; missing from the chain, a break,
    // unless the bridge saw it above the height the chain was read at.
    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        &format!(
            "INSERT INTO chain_deposits VALUES ('{}', 0, 1, 6, 0, 0, '{at}'), ('{}', 1, 1, 2, 0, 1, '{at}')",
            tx(4),
            tx(5)
        ),
    )
    .unwrap();
    let seen = |hash: TxHash, msg_index: u32, height: u64| ledger::store::SeenTransfer {
        tx_hash: hash,
        msg_index,
        output_index: 0,
        height,
        block_time: t0,
        counterparty: "cosmos1someone".into(),
        memo: "1".into(),
        base_amount: 1,
        amount: Some(Decimal::ONE),
        seen: ledger::store::Seen::Deposit(contract::AccountId(1)),
    };
    ledger::store::record_scan(
        &mut conn,
        "c",
        200,
        &[seen(tx(4), 0, 50), seen(tx(5), 1, 150)],
    )
    .unwrap();
    let received = ChainTransfer {
        msg_index: 0,
        ..paid(tx(4), 6)
    };
    let deposits = report(&view(
        owed + Decimal::ONE,
        vec![paid(tx(1), 5)],
        vec![received.clone()],
    ));
    assert!(deposits.breaks.is_empty(), "{:#?}", deposits.breaks);
    assert_eq!(
        deposits.solvency.unwrap().in_flight,
        Decimal::from(2),
        "seen at 150"
    );
    let missing = report(&view(owed, vec![paid(tx(1), 5)], vec![]));
    assert_eq!(
        missing.breaks.iter().map(|b| b.detail.as_str()).collect::<Vec<_>>(),
        [format!(
            "deposit {}/0 credits 6 to account 1, but the chain shows no transfer (read at height 100)",
            tx(4)
        )]
    );
    let wrong = report(&view(
        owed,
        vec![paid(tx(1), 5)],
        vec![ChainTransfer {
            amount: Decimal::from(3),
            ..received
        }],
    ));
    assert_eq!(
        wrong.breaks.iter().map(|b| b.check).collect::<Vec<_>>(),
        ["deposits = on-chain transfers"]
    );
    assert!(wrong.breaks[0].detail.contains("but the chain shows 3"));
}
