//! The projector framework: one projection fed from one partition of an events topic,
//! exactly once.
//!
//! A batch of records is mapped without I/O first ([`Projection::add`]), then written in one
//! Postgres transaction together with the projector's new position in `projector_offsets`.
//! So a crash anywhere leaves either the whole batch and its position or neither, and a
//! restart resumes from the stored position: nothing is lost or applied twice.
//!
//! A record that cannot be projected (undecodable, a `seq` that is not its offset, refused by
//! the projection) stops the projector: the records before it in the batch are committed, its
//! position stays on the bad record, and every later call reports the same error until the
//! log or the code is fixed. Skipping it would make the books silently wrong.

use std::time::Duration;

use contract::codec::{self, EventRecord};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use eventlog::{Log, Record};
use tracing::{debug, error, info};

use crate::schema::projector_offsets;
use crate::LedgerError;

/// A read model built from events. Implementations keep I/O in [`Projection::write`].
pub trait Projection {
    /// The projector's name in `projector_offsets`.
    const NAME: &'static str;

    /// What a batch accumulates before it is written.
    type Batch: Default;

    /// Adds one record to the batch, or refuses it. A refusal must leave the batch as it was:
    /// the records added before it are still written.
    fn add(&self, batch: &mut Self::Batch, record: &EventRecord) -> Result<(), Refusal>;

    /// The tables this projection owns, emptied by [`Projector::rebuild`].
    const TABLES: &'static [&'static str];

    /// Writes a batch, inside the transaction that also moves the projector's position. An
    /// error rolls the whole batch back.
    fn write(
        &mut self,
        conn: &mut PgConnection,
        partition: i32,
        batch: Self::Batch,
    ) -> Result<(), LedgerError>;
}

/// Why a projection refuses a well-formed record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Posting(#[from] crate::journal::PostingError),
    #[error("{what} {value} does not fit its database column")]
    OutOfRange { what: &'static str, value: i128 },
}

/// Which partition a projector follows, and how long a read waits for new records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorConfig {
    pub topic: String,
    pub partition: u32,
    /// How long [`Projector::run_batch`] waits when the projector is at the log's end.
    pub poll: Duration,
}

/// A projection attached to its log partition and its database.
pub struct Projector<P: Projection> {
    conn: PgConnection,
    log: Box<dyn Log>,
    config: ProjectorConfig,
    /// The partition as stored (Postgres has no unsigned integers).
    partition: i32,
    projection: P,
    next_offset: u64,
}

impl<P: Projection> std::fmt::Debug for Projector<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("projector", &P::NAME)
            .field("topic", &self.config.topic)
            .field("partition", &self.config.partition)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

fn to_i64(what: &'static str, value: u64) -> Result<i64, LedgerError> {
    i64::try_from(value).map_err(|_| LedgerError::OutOfRange {
        what,
        value: value.into(),
    })
}

impl<P: Projection> Projector<P> {
    /// Attaches `projection` to its stored position (zero the first time). The database must
    /// be migrated ([`crate::migrate`]). A database holds one topic's projection: a projector
    /// that already follows another topic is refused rather than mixed with it.
    pub fn open(
        mut conn: PgConnection,
        log: Box<dyn Log>,
        config: ProjectorConfig,
        projection: P,
    ) -> Result<Self, LedgerError> {
        use projector_offsets::dsl;

        let partition = i32::try_from(config.partition).map_err(|_| LedgerError::OutOfRange {
            what: "partition",
            value: config.partition.into(),
        })?;
        let other: Option<String> = dsl::projector_offsets
            .filter(dsl::projector.eq(P::NAME))
            .filter(dsl::topic.ne(&config.topic))
            .select(dsl::topic)
            .first(&mut conn)
            .optional()?;
        if let Some(existing) = other {
            return Err(LedgerError::OtherTopic {
                projector: P::NAME,
                existing,
                requested: config.topic,
            });
        }
        // The log, not Postgres, is the source of truth, and a batch commits atomically with
        // its position: a commit that a Postgres crash loses takes its position with it, and
        // the projector projects those events again. So the projector need not wait for each
        // commit's WAL flush.
        diesel::sql_query("SET synchronous_commit = off").execute(&mut conn)?;
        // Every join a projection writes is a batch of keys against a table that only grows,
        // by its primary key. A hash or merge join reads the whole table for each batch, so
        // its cost grows with the table; the planner picks one whenever its statistics are
        // missing or stale (fresh tables, autovacuum off or behind). Without them the batch
        // drives a nested loop of index probes, as the queries are written for (the batch's
        // rows as the outer side: see `activity`).
        diesel::sql_query("SET enable_hashjoin = off").execute(&mut conn)?;
        diesel::sql_query("SET enable_mergejoin = off").execute(&mut conn)?;
        diesel::insert_into(dsl::projector_offsets)
            .values((
                dsl::projector.eq(P::NAME),
                dsl::topic.eq(&config.topic),
                dsl::partition.eq(partition),
                dsl::next_offset.eq(0),
            ))
            .on_conflict_do_nothing()
            .execute(&mut conn)?;
        let stored: i64 = dsl::projector_offsets
            .find((P::NAME, &config.topic, partition))
            .select(dsl::next_offset)
            .get_result(&mut conn)?;
        let next_offset = u64::try_from(stored).map_err(|_| LedgerError::OutOfRange {
            what: "stored offset",
            value: stored.into(),
        })?;
        info!(
            projector = P::NAME,
            topic = %config.topic,
            partition,
            next_offset,
            "projector opened"
        );
        Ok(Projector {
            conn,
            log,
            config,
            partition,
            projection,
            next_offset,
        })
    }

    /// The offset of the next record to project; every record before it is in the database.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Reads up to `max` records from the stored position and projects them in one
    /// transaction. Returns how many it projected: zero when none arrived within the poll
    /// time. A bad record is an error after the records before it are committed.
    pub fn run_batch(&mut self, max: usize) -> Result<usize, LedgerError> {
        let records = self.log.read(
            &self.config.topic,
            self.config.partition,
            self.next_offset,
            max,
            self.config.poll,
        )?;
        let mut batch = P::Batch::default();
        let mut taken: usize = 0;
        let mut refused = None;
        for record in &records {
            if let Err(e) = self.add(&mut batch, record) {
                refused = Some(e);
                break;
            }
            taken += 1;
        }
        if taken > 0 {
            self.commit(batch, taken as u64)?;
        }
        if let Some(e) = refused {
            error!(
                projector = P::NAME,
                topic = %self.config.topic,
                partition = self.config.partition,
                offset = self.next_offset,
                error = %e,
                "projector stopped before a record it cannot project"
            );
            return Err(e);
        }
        debug!(
            projector = P::NAME,
            records = taken,
            next_offset = self.next_offset,
            "batch projected"
        );
        Ok(taken)
    }

    /// Empties the projection's tables and every partition's position in one transaction,
    /// so the next batches rebuild them from offset zero. The journal's append-only guard
    /// refuses `UPDATE` and `DELETE`, not this: a rebuild is an operator's decision, and it
    /// reproduces the same rows from the same log.
    pub fn rebuild(&mut self) -> Result<(), LedgerError> {
        use projector_offsets::dsl;

        let truncate = format!("TRUNCATE {}", P::TABLES.join(", "));
        self.conn.transaction(|conn| {
            diesel::sql_query(&truncate).execute(conn)?;
            diesel::update(dsl::projector_offsets.filter(dsl::projector.eq(P::NAME)))
                .set(dsl::next_offset.eq(0))
                .execute(conn)?;
            Ok::<_, LedgerError>(())
        })?;
        info!(projector = P::NAME, tables = ?P::TABLES, "projection emptied for a rebuild");
        self.next_offset = 0;
        Ok(())
    }

    /// Projects every record the log holds now, `max` per batch; returns the new position.
    pub fn catch_up(&mut self, max: usize) -> Result<u64, LedgerError> {
        let end = self
            .log
            .end_offset(&self.config.topic, self.config.partition)?;
        while self.next_offset < end {
            self.run_batch(max)?;
        }
        Ok(self.next_offset)
    }

    fn add(&self, batch: &mut P::Batch, record: &Record) -> Result<(), LedgerError> {
        let event: EventRecord =
            codec::decode(record.schema, &record.payload).map_err(|source| {
                LedgerError::Undecodable {
                    topic: self.config.topic.clone(),
                    partition: self.config.partition,
                    offset: record.offset,
                    source,
                }
            })?;
        // The engine writes one record per answer and numbers them from zero, so a `seq`
        // that is not the offset means this is not (or no longer) that engine's log.
        if event.seq != record.offset {
            return Err(LedgerError::SeqMismatch {
                topic: self.config.topic.clone(),
                partition: self.config.partition,
                offset: record.offset,
                seq: event.seq,
            });
        }
        self.projection
            .add(batch, &event)
            .map_err(|source| LedgerError::Refused {
                projector: P::NAME,
                topic: self.config.topic.clone(),
                partition: self.config.partition,
                offset: record.offset,
                source,
            })
    }

    /// Writes the batch and moves the position from `next_offset` to `next_offset + count`
    /// in one transaction.
    fn commit(&mut self, batch: P::Batch, count: u64) -> Result<(), LedgerError> {
        use projector_offsets::dsl;

        let from = self.next_offset;
        let to = from + count;
        let (from_db, to_db) = (to_i64("offset", from)?, to_i64("offset", to)?);
        let Projector {
            conn,
            config,
            partition,
            projection,
            ..
        } = self;
        let key = (P::NAME, &config.topic, *partition);
        conn.transaction(|conn| {
            // Moving the position first takes the row's lock, so a second instance of this
            // projector waits here and then finds the position moved instead of writing the
            // same batch again.
            let moved = diesel::update(
                dsl::projector_offsets
                    .find(key)
                    .filter(dsl::next_offset.eq(from_db)),
            )
            .set(dsl::next_offset.eq(to_db))
            .execute(conn)?;
            if moved != 1 {
                let found: Option<i64> = dsl::projector_offsets
                    .find(key)
                    .select(dsl::next_offset)
                    .first(conn)
                    .optional()?;
                return Err(LedgerError::PositionMoved {
                    projector: P::NAME,
                    topic: config.topic.clone(),
                    partition: config.partition,
                    expected: from,
                    found,
                });
            }
            projection.write(conn, *partition, batch)?;
            Ok(())
        })?;
        self.next_offset = to;
        Ok(())
    }
}
