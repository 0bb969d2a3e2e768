//! Test support (feature `testing`): a database of its own per test, checksums of every
//! table, and the three projections run to the end of a log. Shared by this crate's tests
//! and the `gpumarket` process tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use eventlog::LogConfig;

use crate::{Activity, Journal, Projection, Projector, ProjectorConfig, Reputation};

/// A database of its own for one test, created on the server of `DATABASE_URL` (default the
/// local server) and dropped with `FORCE` when the value is dropped.
#[derive(Debug)]
pub struct TestDb {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDb {
    /// A new, empty database; `tag` goes into its name.
    pub fn new(tag: &str) -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let admin_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .subsec_nanos();
        let name = format!(
            "test_{tag}_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::establish(&admin_url)
            .unwrap_or_else(|e| panic!("connecting to {admin_url}: {e}"));
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .expect("creating the test database");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        TestDb {
            admin_url,
            name,
            url,
        }
    }

    /// A new database with every migration applied.
    pub fn migrated(tag: &str) -> TestDb {
        let db = TestDb::new(tag);
        crate::migrate(&mut db.connect()).expect("migrating the test database");
        db
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.url).expect("connecting to the test database")
    }

    /// `md5` of every row of every table (diesel's migration bookkeeping, which records
    /// when each migration ran, aside), by table name.
    pub fn checksums(&self) -> BTreeMap<String, String> {
        #[derive(QueryableByName)]
        struct Table {
            #[diesel(sql_type = Text)]
            name: String,
        }
        #[derive(QueryableByName)]
        struct Sum {
            #[diesel(sql_type = Text)]
            md5: String,
        }
        let mut conn = self.connect();
        let tables: Vec<Table> = diesel::sql_query(
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
             AND table_name <> '__diesel_schema_migrations' ORDER BY 1",
        )
        .load(&mut conn)
        .expect("listing the tables");
        tables
            .into_iter()
            .map(|t| {
                let sum: Sum = diesel::sql_query(format!(
                    "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) AS md5 \
                     FROM {} t",
                    t.name
                ))
                .get_result(&mut conn)
                .expect("summing a table");
                (t.name, sum.md5)
            })
            .collect()
    }

    /// The `n` column of the single row `sql` returns.
    pub fn count(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        diesel::sql_query(sql)
            .get_result::<Count>(&mut self.connect())
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .n
    }

    /// Each projector's stored position on partition 0; empty before the first migration.
    pub fn positions(&self) -> BTreeMap<String, i64> {
        use crate::schema::projector_offsets::dsl::*;
        projector_offsets
            .filter(partition.eq(0))
            .select((projector, next_offset))
            .load::<(String, i64)>(&mut self.connect())
            .map(|rows| rows.into_iter().collect())
            .unwrap_or_default()
    }

    /// Opens `projection` on partition 0 of `topic`.
    pub fn projector<P: Projection>(
        &self,
        log_url: &str,
        topic: &str,
        projection: P,
    ) -> Projector<P> {
        let log = eventlog::open(log_url, &LogConfig::default()).expect("opening the log");
        Projector::open(
            self.connect(),
            log,
            ProjectorConfig {
                topic: topic.to_owned(),
                partition: 0,
                poll: Duration::from_millis(200),
            },
            projection,
        )
        .expect("opening the projector")
    }

    /// Runs every projection over all of partition 0 of `topic`, `batch` events per
    /// transaction; returns the position they all reach.
    pub fn project_all(&self, log_url: &str, topic: &str, batch: usize) -> u64 {
        let journal = self
            .projector(log_url, topic, Journal)
            .catch_up(batch)
            .expect("projecting the journal");
        let activity = self
            .projector(log_url, topic, Activity)
            .catch_up(batch)
            .expect("projecting the activity");
        let reputation = self
            .projector(log_url, topic, Reputation)
            .catch_up(batch)
            .expect("projecting the reputation");
        assert_eq!((journal, activity), (reputation, reputation));
        journal
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort: a failing drop must not hide the test's own failure.
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin);
        }
    }
}
