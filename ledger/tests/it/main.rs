//! The projections against a real Postgres and a real event log: each test creates its own
//! database (from `DATABASE_URL`, default the local server) and drops it at the end. This
//! file holds the projector framework's and the journal's tests; `projections` the activity,
//! billing, reputation and rebuild tests; `metering` those of metered leases and node
//! silence; `exports` and `focus_validator` the finance exports.

mod exports;
mod focus_validator;
mod metering;
mod projections;
mod stream;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use contract::codec::{self, EventBody, EventRecord, SCHEMA};
use contract::{
    AccountId, Amount, CancelReason, Event, LeaseEndReason, LeaseId, OrderId, Rejection, Timestamp,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use eventlog::{LogConfig, NewRecord};
use ledger::journal::{Bucket, PostingError};
use ledger::testing::TestDb;
use ledger::{Journal, LedgerError, Projector, ProjectorConfig, Refusal};
use rust_decimal::Decimal;

use stream::EngineRun;

fn balances(db: &TestDb) -> BTreeMap<(i64, String), Decimal> {
    use ledger::schema::balances::dsl::*;
    balances
        .select((account, bucket, amount))
        .load::<(i64, String, Decimal)>(&mut db.connect())
        .unwrap()
        .into_iter()
        .map(|(a, b, m)| ((a, b), m))
        .collect()
}

fn journal_position(db: &TestDb) -> i64 {
    db.positions()["journal"]
}

fn decimal(micros: i64) -> Decimal {
    Decimal::new(micros, 6)
}

/// The journal's books against the engine's and against themselves.
fn check_books(db: &TestDb, run: &EngineRun) {
    let balances = balances(db);
    let get = |account: u64, bucket: Bucket| {
        balances
            .get(&(account as i64, bucket.as_str().to_owned()))
            .copied()
            .unwrap_or_default()
    };
    for &account in &run.accounts {
        let engine = run.engine_balance(AccountId(account));
        let spendable = if account == 0 {
            Bucket::Fees
        } else {
            Bucket::Available
        };
        assert_eq!(
            (
                get(account, spendable),
                get(account, Bucket::Held),
                get(account, Bucket::InLease)
            ),
            (
                decimal(engine.available.micros()),
                decimal(engine.held.micros()),
                decimal(engine.in_lease.micros())
            ),
            "account {account}"
        );
    }
    // Every transaction balances, has at least two legs, and the books sum to zero.
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM (SELECT 1 FROM postings GROUP BY partition, event_seq \
             HAVING sum(amount) <> 0 OR count(*) < 2) t"
        ),
        0
    );
    let total: Decimal = balances.values().sum();
    assert_eq!(total, Decimal::ZERO);
    // Balances are exactly the sums of the postings.
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM balances b FULL JOIN \
             (SELECT account, bucket, sum(amount) AS amount FROM postings GROUP BY account, bucket) p \
             USING (account, bucket) WHERE b.amount IS DISTINCT FROM p.amount"
        ),
        0
    );
    // Every transaction traces back to its event and command.
    #[derive(QueryableByName)]
    struct Trace {
        #[diesel(sql_type = BigInt)]
        event_seq: i64,
        #[diesel(sql_type = BigInt)]
        command_offset: i64,
        #[diesel(sql_type = Text)]
        kind: String,
    }
    let traces: Vec<Trace> = diesel::sql_query(
        "SELECT event_seq, command_offset, kind FROM journal_transactions ORDER BY event_seq",
    )
    .load(&mut db.connect())
    .unwrap();
    assert!(!traces.is_empty());
    let events = run.events();
    for trace in &traces {
        let event = &events[trace.event_seq as usize];
        assert_eq!(event.command_offset as i64, trace.command_offset);
        assert_eq!(event.body.kind(), trace.kind);
    }
    let moving = events
        .iter()
        .filter(|e| matches!(&e.body, EventBody::Event(event) if !ledger::journal::postings(event).unwrap().is_empty()))
        .count();
    assert_eq!(traces.len(), moving);
}

#[test]
fn the_journal_of_an_engine_stream_matches_the_engine() {
    let run = EngineRun::file(1, 20_000);
    let db = TestDb::migrated("ledger");
    let mut projector = db.projector(&run.log_url, &run.events_topic, Journal);
    let started = Instant::now();
    let end = projector.catch_up(4096).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(end, run.events_end());
    eprintln!(
        "journal: {end} events in {elapsed:.2?} ({:.0} events/s, {} build)",
        end as f64 / elapsed.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert_eq!(journal_position(&db), end as i64);
    check_books(&db, &run);
    // The stream exercises every kind of money movement, the market's fee withdrawals too.
    assert_eq!(
        db.count("SELECT count(DISTINCT kind) AS n FROM journal_transactions"),
        8
    );
    assert!(
        db.count("SELECT count(*) AS n FROM postings WHERE account = 0 AND bucket = 'external'")
            > 0
    );
    // Nothing new: a batch waits for the poll time and projects nothing.
    assert_eq!(projector.run_batch(100).unwrap(), 0);
}

#[test]
fn a_committed_batch_is_never_applied_twice() {
    let run = EngineRun::file(3, 3_000);
    let db = TestDb::migrated("ledger");
    let mut first = db.projector(&run.log_url, &run.events_topic, Journal);
    let mut stale = db.projector(&run.log_url, &run.events_topic, Journal);
    assert_eq!(first.run_batch(1_000).unwrap(), 1_000);
    let after_first = db.checksums();
    // The second instance still believes it stands at zero: it must not write the batch again.
    let err = stale.run_batch(1_000).unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::PositionMoved {
                expected: 0,
                found: Some(1_000),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(db.checksums(), after_first);
    // Reopened, it resumes where the first left off.
    let mut reopened = db.projector(&run.log_url, &run.events_topic, Journal);
    assert_eq!(reopened.next_offset(), 1_000);
    reopened.catch_up(1_000).unwrap();
    check_books(&db, &run);
}

#[test]
fn a_batch_that_fails_midway_leaves_no_trace() {
    let run = EngineRun::file(4, 3_000);
    let reference = TestDb::migrated("ledger");
    reference
        .projector(&run.log_url, &run.events_topic, Journal)
        .catch_up(100_000)
        .unwrap();

    let db = TestDb::migrated("ledger");
    let mut projector = db.projector(&run.log_url, &run.events_topic, Journal);
    projector.run_batch(500).unwrap();
    let before = db.checksums();
    // The batch's last statement fails, after its position, transactions and postings are
    // written: the crash the transaction must undo.
    db.connect()
        .batch_execute(
            "CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
             CREATE TRIGGER fail BEFORE INSERT ON balances \
             FOR EACH STATEMENT EXECUTE FUNCTION fail()",
        )
        .unwrap();
    let err = projector.run_batch(500).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(db.checksums(), before);
    assert_eq!(projector.next_offset(), 500);
    diesel::sql_query("DROP TRIGGER fail ON balances")
        .execute(&mut db.connect())
        .unwrap();
    projector.catch_up(500).unwrap();
    assert_eq!(db.checksums(), reference.checksums());
}

/// A hand-written events topic: two deposits, the record under test, one more deposit.
fn bad_record_log(bad: NewRecord<'_>) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("log").display());
    let mut log = eventlog::open(&url, &LogConfig::default()).unwrap();
    log.create_topic("events", 1).unwrap();
    let deposit = |seq: u64, account: u64, amount: &str| {
        codec::encode(&EventRecord {
            seq,
            command_offset: seq,
            at: Timestamp(1_767_225_600_000),
            body: EventBody::Event(Event::Deposited {
                account: AccountId(account),
                amount: Amount::parse(amount).unwrap(),
            }),
        })
    };
    let (first, second, last) = (
        deposit(0, 1, "100"),
        deposit(1, 2, "50"),
        deposit(3, 1, "1"),
    );
    let good = |payload| NewRecord {
        kind: "deposited",
        schema: SCHEMA,
        payload,
    };
    log.append(
        "events",
        0,
        &[good(&first), good(&second), bad, good(&last)],
    )
    .unwrap();
    log.flush().unwrap();
    (dir, url)
}

#[test]
fn bad_records_stop_the_projector_before_them() {
    let unbalanced = codec::encode(&EventRecord {
        seq: 2,
        command_offset: 2,
        at: Timestamp(1_767_225_600_000),
        body: EventBody::Event(Event::LeaseEnded {
            lease_id: LeaseId(1),
            buyer: AccountId(1),
            provider: AccountId(2),
            hours_used: Decimal::ONE,
            charged: Amount::parse("10").unwrap(),
            fee: Amount::parse("1").unwrap(),
            provider_earned: Amount::parse("8").unwrap(),
            refunded: Amount::ZERO,
            reason: LeaseEndReason::Completed,
        }),
    });
    let misnumbered = codec::encode(&EventRecord {
        seq: 7,
        command_offset: 2,
        at: Timestamp(1_767_225_600_000),
        body: EventBody::Rejected(Rejection::NothingToAmend),
    });
    let far_future = codec::encode(&EventRecord {
        seq: 2,
        command_offset: 2,
        at: Timestamp(i64::MAX),
        body: EventBody::Event(Event::OrderCancelled {
            order_id: OrderId(1),
            account: AccountId(1),
            remaining: 1,
            released: Amount::parse("1").unwrap(),
            reason: CancelReason::Expired,
        }),
    });
    let record = |schema, payload| NewRecord {
        kind: "bad",
        schema,
        payload,
    };
    type Expect = fn(&LedgerError) -> bool;
    let cases: [(&str, NewRecord<'_>, Expect); 5] = [
        (
            "unknown schema",
            record(SCHEMA + 1, &unbalanced),
            |e| matches!(e, LedgerError::Undecodable { offset: 2, source: codec::DecodeError::UnknownSchema { found }, .. } if *found == SCHEMA + 1),
        ),
        ("corrupt payload", record(SCHEMA, &[0xff; 9]), |e| {
            matches!(
                e,
                LedgerError::Undecodable {
                    offset: 2,
                    source: codec::DecodeError::Corrupt { .. },
                    ..
                }
            )
        }),
        ("unbalanced", record(SCHEMA, &unbalanced), |e| {
            matches!(
                e,
                LedgerError::Refused {
                    offset: 2,
                    source: Refusal::Posting(PostingError::Unbalanced {
                        kind: "lease_ended",
                        total: -1_000_000
                    }),
                    ..
                }
            )
        }),
        ("seq is not the offset", record(SCHEMA, &misnumbered), |e| {
            matches!(
                e,
                LedgerError::SeqMismatch {
                    offset: 2,
                    seq: 7,
                    ..
                }
            )
        }),
        ("timestamp out of range", record(SCHEMA, &far_future), |e| {
            matches!(
                e,
                LedgerError::Refused {
                    offset: 2,
                    source: Refusal::OutOfRange {
                        what: "timestamp (ms)",
                        ..
                    },
                    ..
                }
            )
        }),
    ];
    for (name, bad, expected) in cases {
        let (_dir, url) = bad_record_log(bad);
        let db = TestDb::migrated("ledger");
        let mut projector = db.projector(&url, "events", Journal);
        // The bad record sits inside the batch: the two before it are committed.
        let err = projector.run_batch(10).unwrap_err();
        assert!(expected(&err), "{name}: {err:?}");
        assert_eq!(projector.next_offset(), 2, "{name}");
        assert_eq!(journal_position(&db), 2, "{name}");
        let deposited = BTreeMap::from([
            ((1, "available".to_owned()), decimal(100_000_000)),
            ((1, "external".to_owned()), decimal(-100_000_000)),
            ((2, "available".to_owned()), decimal(50_000_000)),
            ((2, "external".to_owned()), decimal(-50_000_000)),
        ]);
        assert_eq!(balances(&db), deposited, "{name}");
        // It stays stopped, also after a restart, and changes nothing more.
        let err = projector.run_batch(10).unwrap_err();
        assert!(expected(&err), "{name} again: {err:?}");
        let err = db
            .projector(&url, "events", Journal)
            .catch_up(10)
            .unwrap_err();
        assert!(expected(&err), "{name} after reopening: {err:?}");
        assert_eq!(journal_position(&db), 2, "{name}");
        assert_eq!(balances(&db), deposited, "{name}");
    }
}

#[test]
fn a_database_projects_one_topic() {
    let run = EngineRun::file(5, 100);
    let db = TestDb::migrated("ledger");
    db.projector(&run.log_url, &run.events_topic, Journal);
    let log = eventlog::open(&run.log_url, &LogConfig::default()).unwrap();
    let config = ProjectorConfig {
        topic: "other-events".to_owned(),
        partition: 0,
        poll: Duration::from_millis(10),
    };
    let err = Projector::open(db.connect(), log, config, Journal).unwrap_err();
    assert!(
        matches!(&err, LedgerError::OtherTopic { existing, requested, .. } if existing == "events" && requested == "other-events"),
        "{err}"
    );
}

#[test]
fn migrations_are_applied_once_and_the_database_guards_the_journal() {
    let db = TestDb::migrated("ledger");
    assert_eq!(ledger::migrate(&mut db.connect()).unwrap(), 0);
    // The database itself refuses an unbalanced or malformed transaction, whoever writes it.
    let mut conn = db.connect();
    for (legs, refused) in [
        (
            "'{1,1}', '{available,external}', '{5,-4}'",
            "does not balance",
        ),
        ("'{1}', '{available}', '{0}'", "does not balance"),
        (
            "'{1,1}', '{available,pocket}', '{5,-5}'",
            "does not balance",
        ),
        (
            "'{1,1}', '{available,external}', '{5,-5,0}'",
            "does not balance",
        ),
    ] {
        let err = conn
            .batch_execute(&format!(
                "INSERT INTO journal_transactions VALUES (0, 1, 1, 'manual', now(), {legs})"
            ))
            .unwrap_err();
        assert!(err.to_string().contains(refused), "{legs}: {err}");
    }
    conn.batch_execute(
        "INSERT INTO journal_transactions \
         VALUES (0, 3, 3, 'manual', now(), '{1,1}', '{available,external}', '{5,-5}')",
    )
    .unwrap();
    assert_eq!(
        db.count("SELECT count(*) AS n FROM postings WHERE event_seq = 3"),
        2
    );
    for change in [
        "UPDATE journal_transactions SET amounts = '{6,-6}'",
        "DELETE FROM journal_transactions",
    ] {
        let err = conn.batch_execute(change).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    let err = diesel::sql_query("INSERT INTO balances VALUES (1, 'pocket', 5)")
        .execute(&mut conn)
        .unwrap_err();
    assert!(err.to_string().contains("bucket"), "{err}");
}

#[test]
fn the_kafka_backend_projects_the_same_tables() {
    let commands = 3_000;
    let on_kafka = EngineRun::kafka(6, commands);
    let on_file = EngineRun::file(6, commands);
    let (kafka_db, file_db) = (TestDb::migrated("ledger"), TestDb::migrated("ledger"));
    kafka_db.project_all(&on_kafka.log_url, &on_kafka.events_topic, 1_000);
    file_db.project_all(&on_file.log_url, &on_file.events_topic, 1_000);
    check_books(&kafka_db, &on_kafka);
    // Same commands, same events, same tables; only the topic name in the offsets differs.
    let (mut kafka_sums, mut file_sums) = (kafka_db.checksums(), file_db.checksums());
    kafka_sums.remove("projector_offsets");
    file_sums.remove("projector_offsets");
    assert_eq!(kafka_sums, file_sums);
}

#[test]
fn the_books_of_a_projected_stream_check_out() {
    let run = EngineRun::file(7, 5_000);
    let db = TestDb::migrated("ledger");
    let mut conn = db.connect();
    assert_eq!(ledger::read::projected_rows(&mut conn).unwrap(), 0);
    db.project_all(&run.log_url, &run.events_topic, 1_000);
    assert!(ledger::read::projected_rows(&mut conn).unwrap() > 0);
    let buyers: Vec<AccountId> = run.accounts.iter().map(|a| AccountId(*a)).collect();
    let markets = ledger::read::markets(&mut conn).unwrap();
    assert!(!markets.is_empty());
    for m in markets {
        let books = ledger::read::books(
            &mut conn,
            &m.market,
            &buyers,
            AccountId(0)..AccountId(i64::MAX as u64),
        )
        .unwrap();
        // No agent reports in this stream; everything else that should not exist, does not.
        assert_eq!(
            (
                books.journal_sum,
                books.fills_without_lease,
                books.buyers_without_invoice,
                books.provider_reports
            ),
            (Decimal::ZERO, 0, 0, 0),
            "{}",
            m.market
        );
    }
}
