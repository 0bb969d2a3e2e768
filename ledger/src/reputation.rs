//! Provider reputation: what each provider's record is, the score it earns, and the
//! projection that keeps both (with a history that explains every change).
//!
//! # The score
//!
//! Four components, each in `[0, 1]`:
//!
//! - **completion** = `(completed + 5 × 0.7) / (completed + failed + 5)`: leases that ran to
//!   their end against leases the provider failed (leases the buyer stopped count for
//!   neither);
//! - **uptime** = `(up_h + 24 × 0.8) / (up_h + down_h + 24)`: hours its nodes were heard from
//!   (heartbeats at most [`HEARTBEAT_TOLERANCE`] intervals apart) against hours they were
//!   silent. A node the engine found silent (`NodeSilent`) is down from its last heartbeat
//!   on, whether or not it ever returns: the time up to the silence's record counts at
//!   once, and while it stays silent its downtime grows with the time of every later record
//!   the projection sees (see [`Node::silent`]);
//! - **punctuality** = `(on_time + 5 × 0.7) / (starts + 5)`: leases started within
//!   [`ON_TIME_MS`] of the fill, or of the buyer's submission of the job where that came
//!   later (`Command::StartLeaseJob`): only the provider's part of the wait counts;
//! - **integrity** = `0.85 ^ spec_mismatches × 0.9 ^ slashes`: each time a node's reported
//!   hardware stops matching what its asks advertise (a GPU class other than the ask's
//!   market, or fewer GPUs than it offers), or the engine withdraws an ask its node's signed
//!   report no longer backs (`CancelReason::SpecMismatch`), costs 15 %, and each slash of
//!   the provider's bond (`BondSlashed`: a provider failure of a bonded lease, which also
//!   counts as a failed lease in completion) 10 %, for good.
//!
//! `score = round(1000 × (0.5 × completion + 0.3 × uptime + 0.2 × punctuality) × integrity)`.
//!
//! A job's exit code is not an input: it is the buyer's program's result, reported by the
//! provider's agent outside the signed report (`submitJobLog`), so it is neither evidence nor
//! the provider's doing. What the provider does own is in the log already: a job its agent
//! lost drops its lease from the node's signed report, which fails the lease (a provider
//! failure: completion, and a slash where bonded).
//!
//! The first three are Bayesian averages: each starts from a prior (70 % of 5 leases, 80 %
//! of 24 hours) that real history outweighs only gradually. A new provider starts at 730, below
//! an established good one, and cannot reach the top with a handful of quick leases; a
//! provider with one failure out of two leases is not ruined by it either.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use contract::codec::{EventBody, EventRecord};
use contract::{AccountId, CancelReason, Event, LeaseEndReason, OrderTerms};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::upsert::excluded;

use crate::columns::{checked_sum, fit, fit_i32, timestamp};
use crate::projector::{Projection, Refusal};
use crate::schema::{nodes, provider_reputation, reputation_history};
use crate::LedgerError;

/// How often an agent is expected to report.
pub const HEARTBEAT_INTERVAL_MS: i64 = 60_000;
/// A gap of up to this many intervals between two heartbeats counts as up; a longer one
/// counts one interval as up and the rest as down.
pub const HEARTBEAT_TOLERANCE: i64 = 3;
/// A lease started within this long of its fill is on time.
pub const ON_TIME_MS: u64 = 300_000;

const LEASE_PRIOR: (f64, f64) = (5.0, 0.7);
const UPTIME_PRIOR_HOURS: (f64, f64) = (24.0, 0.8);
const MISMATCH_FACTOR: f64 = 0.85;
const SLASH_FACTOR: f64 = 0.9;

/// A provider's record: the counts the score is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub leases_completed: i32,
    pub leases_failed: i32,
    pub leases_stopped: i32,
    pub starts: i32,
    pub starts_on_time: i32,
    pub start_delay_ms: i64,
    pub up_ms: i64,
    pub down_ms: i64,
    pub spec_mismatches: i32,
    pub slashes: i32,
}

/// A score and the components it is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub completion: f64,
    pub uptime: f64,
    pub punctuality: f64,
    pub integrity: f64,
    /// 0 to 1000, as the engine's `Reputation`.
    pub score: i32,
}

impl Record {
    /// The score of this record (the formula in the module documentation).
    pub fn score(&self) -> Score {
        let bayes = |good: f64, total: f64, (weight, prior): (f64, f64)| {
            (good + weight * prior) / (total + weight)
        };
        // Totals are added wider than the counts, so no record can overflow its score.
        let hours = |ms: i128| ms as f64 / 3_600_000.0;
        let completion = bayes(
            f64::from(self.leases_completed),
            f64::from(self.leases_completed) + f64::from(self.leases_failed),
            LEASE_PRIOR,
        );
        let uptime = bayes(
            hours(self.up_ms.into()),
            hours(i128::from(self.up_ms) + i128::from(self.down_ms)),
            UPTIME_PRIOR_HOURS,
        );
        let punctuality = bayes(
            f64::from(self.starts_on_time),
            f64::from(self.starts),
            LEASE_PRIOR,
        );
        let integrity =
            MISMATCH_FACTOR.powi(self.spec_mismatches) * SLASH_FACTOR.powi(self.slashes);
        let blended = 0.5 * completion + 0.3 * uptime + 0.2 * punctuality;
        Score {
            completion,
            uptime,
            punctuality,
            integrity,
            score: (1000.0 * blended * integrity).round().clamp(0.0, 1000.0) as i32,
        }
    }
}

/// What the projection knows of one node.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = nodes)]
pub struct Node {
    pub provider: i64,
    pub node: String,
    pub advertised_class: Option<String>,
    pub advertised_gpus: Option<i32>,
    pub reported_class: Option<String>,
    pub reported_gpus: Option<i32>,
    pub first_heartbeat: Option<DateTime<Utc>>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub heartbeats: i64,
    pub up_ms: i64,
    pub down_ms: i64,
    pub mismatching: bool,
    pub mismatches: i32,
    /// While the engine holds the node silent: the time up to which its downtime is
    /// counted. `None` while it reports.
    pub silent_through: Option<DateTime<Utc>>,
}

/// What one heartbeat did to its node's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    pub up_ms: i64,
    pub down_ms: i64,
    /// The node's hardware just stopped matching its asks.
    pub new_mismatch: bool,
}

impl Node {
    fn new(provider: i64, node: String) -> Node {
        Node {
            provider,
            node,
            advertised_class: None,
            advertised_gpus: None,
            reported_class: None,
            reported_gpus: None,
            first_heartbeat: None,
            last_heartbeat: None,
            heartbeats: 0,
            up_ms: 0,
            down_ms: 0,
            mismatching: false,
            mismatches: 0,
            silent_through: None,
        }
    }

    /// Records a heartbeat at `at` reporting `gpus` GPUs of `class`. A count that would
    /// leave its column's type is refused and the node is left as it was.
    pub fn heartbeat(
        &mut self,
        at: DateTime<Utc>,
        class: &str,
        gpus: i32,
    ) -> Result<Beat, LedgerError> {
        let (up_ms, down_ms) = match (self.silent_through, self.last_heartbeat) {
            // Back from a silence: the gap's downtime up to `through` is counted already.
            (Some(through), _) => (0, (at - through).num_milliseconds().max(0)),
            (None, None) => (0, 0),
            (None, Some(last)) => {
                let gap = (at - last).num_milliseconds().max(0);
                if gap <= HEARTBEAT_TOLERANCE * HEARTBEAT_INTERVAL_MS {
                    (gap, 0)
                } else {
                    (HEARTBEAT_INTERVAL_MS, gap - HEARTBEAT_INTERVAL_MS)
                }
            }
        };
        let mismatch = match (&self.advertised_class, self.advertised_gpus) {
            (Some(advertised), Some(offered)) => advertised != class || gpus < offered,
            // A node that advertised nothing claimed nothing.
            _ => false,
        };
        let new_mismatch = mismatch && !self.mismatching;
        let mismatches = checked_sum("spec mismatches", self.mismatches, new_mismatch.into())?;
        let heartbeats = checked_sum("heartbeats", self.heartbeats, 1)?;
        let up = checked_sum("up time (ms)", self.up_ms, up_ms)?;
        let down = checked_sum("down time (ms)", self.down_ms, down_ms)?;
        self.mismatching = mismatch;
        self.mismatches = mismatches;
        self.first_heartbeat.get_or_insert(at);
        self.last_heartbeat = Some(at);
        self.reported_class = Some(class.to_owned());
        self.reported_gpus = Some(gpus);
        self.heartbeats = heartbeats;
        self.up_ms = up;
        self.down_ms = down;
        self.silent_through = None;
        Ok(Beat {
            up_ms,
            down_ms,
            new_mismatch,
        })
    }

    /// Records the engine's finding, in a record at `at`, that the node went silent after
    /// its heartbeat at `last_seen`: it is down from its last heartbeat to `at`, counted at
    /// once, and stays down (see [`Node::still_silent`]) until it reports again. Returns
    /// the downtime counted. Time counted already (up to the last heartbeat this projection
    /// saw, or through an earlier silence) is not counted again.
    pub fn silent(
        &mut self,
        last_seen: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<i64, LedgerError> {
        let from = match (self.silent_through, self.last_heartbeat) {
            (Some(through), _) => through,
            (None, Some(last)) => last.max(last_seen),
            (None, None) => last_seen,
        };
        let through = from.max(at);
        let down_ms = (through - from).num_milliseconds();
        self.down_ms = checked_sum("down time (ms)", self.down_ms, down_ms)?;
        self.silent_through = Some(through);
        Ok(down_ms)
    }

    /// A silent node's downtime grows to `now`, the time of a later record; returns the
    /// downtime added (zero for a node that reports, or a time already counted).
    pub fn still_silent(&mut self, now: DateTime<Utc>) -> Result<i64, LedgerError> {
        let Some(through) = self.silent_through.filter(|t| *t < now) else {
            return Ok(0);
        };
        let down_ms = (now - through).num_milliseconds();
        self.down_ms = checked_sum("down time (ms)", self.down_ms, down_ms)?;
        self.silent_through = Some(now);
        Ok(down_ms)
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = provider_reputation)]
struct ProviderRow {
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
    completion: f64,
    uptime: f64,
    punctuality: f64,
    integrity: f64,
    score: i32,
    engine_score: Option<i32>,
    updated_at: DateTime<Utc>,
}

impl ProviderRow {
    fn record(&self) -> Record {
        Record {
            leases_completed: self.leases_completed,
            leases_failed: self.leases_failed,
            leases_stopped: self.leases_stopped,
            starts: self.starts,
            starts_on_time: self.starts_on_time,
            start_delay_ms: self.start_delay_ms,
            up_ms: self.up_ms,
            down_ms: self.down_ms,
            spec_mismatches: self.spec_mismatches,
            slashes: self.slashes,
        }
    }

    fn set(&mut self, record: &Record, score: &Score, at: DateTime<Utc>) {
        self.leases_completed = record.leases_completed;
        self.leases_failed = record.leases_failed;
        self.leases_stopped = record.leases_stopped;
        self.starts = record.starts;
        self.starts_on_time = record.starts_on_time;
        self.start_delay_ms = record.start_delay_ms;
        self.up_ms = record.up_ms;
        self.down_ms = record.down_ms;
        self.spec_mismatches = record.spec_mismatches;
        self.slashes = record.slashes;
        self.completion = score.completion;
        self.uptime = score.uptime;
        self.punctuality = score.punctuality;
        self.integrity = score.integrity;
        self.score = score.score;
        self.updated_at = at;
    }

    fn new(provider: i64, at: DateTime<Utc>) -> ProviderRow {
        let mut row = ProviderRow {
            provider,
            leases_completed: 0,
            leases_failed: 0,
            leases_stopped: 0,
            starts: 0,
            starts_on_time: 0,
            start_delay_ms: 0,
            up_ms: 0,
            down_ms: 0,
            spec_mismatches: 0,
            slashes: 0,
            completion: 0.0,
            uptime: 0.0,
            punctuality: 0.0,
            integrity: 0.0,
            score: 0,
            engine_score: None,
            updated_at: at,
        };
        let record = Record::default();
        row.set(&record, &record.score(), at);
        row
    }
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = reputation_history)]
struct HistoryRow {
    partition: i32,
    event_seq: i64,
    provider: i64,
    at: DateTime<Utc>,
    cause: &'static str,
    completion: f64,
    uptime: f64,
    punctuality: f64,
    integrity: f64,
    score: i32,
}

/// An event as the reputation projection needs it.
#[derive(Debug, Clone)]
enum Fact {
    Advertised {
        node: String,
        class: String,
        gpus: i32,
    },
    Heartbeat {
        node: String,
        class: String,
        gpus: i32,
    },
    /// The engine found the node silent after its heartbeat at `last_seen`.
    Silent {
        node: String,
        last_seen: DateTime<Utc>,
    },
    Started {
        after_ms: i64,
    },
    Ended {
        reason: LeaseEndReason,
    },
    /// The engine withdrew an ask its node's signed report no longer backs.
    Mismatched,
    /// A provider failure slashed the provider's bond.
    Slashed,
    EngineScore {
        score: i32,
    },
}

/// The facts of a batch, in log order: `(seq, at, provider, fact)`.
#[derive(Debug, Default)]
pub struct ReputationBatch {
    facts: Vec<(i64, DateTime<Utc>, i64, Fact)>,
    /// The latest time of any record in the batch: silent nodes are down up to it.
    latest: Option<DateTime<Utc>>,
}

/// What an event tells the reputation projection, and about which provider.
fn fact_of(event: &Event) -> Result<Option<(AccountId, Fact)>, Refusal> {
    Ok(Some(match event {
        Event::OrderAccepted { order, .. } => match &order.terms {
            OrderTerms::Ask(spec) => (
                order.account,
                Fact::Advertised {
                    node: spec.node.to_string(),
                    class: order.market.to_string(),
                    gpus: fit_i32("gpus", order.gpus.get())?,
                },
            ),
            OrderTerms::Bid(_) => return Ok(None),
        },
        Event::NodeHeartbeat {
            provider,
            node,
            class,
            gpus,
        } => (
            *provider,
            Fact::Heartbeat {
                node: node.to_string(),
                class: class.to_string(),
                gpus: fit_i32("gpus", gpus.get())?,
            },
        ),
        // The signed heartbeat counts as the schema-1 one does: the report's class is
        // its market, its GPUs the ones it lists.
        Event::NodeReported {
            provider,
            node,
            market,
            gpus,
            ..
        } => (
            *provider,
            Fact::Heartbeat {
                node: node.to_string(),
                class: market.to_string(),
                gpus: fit_i32("gpus", gpus.len() as u64)?,
            },
        ),
        Event::NodeSilent {
            provider,
            node,
            last_seen,
            ..
        } => (
            *provider,
            Fact::Silent {
                node: node.to_string(),
                last_seen: timestamp(last_seen.0)?,
            },
        ),
        Event::LeaseStarted {
            provider, after_ms, ..
        } => (
            *provider,
            Fact::Started {
                after_ms: fit("start delay", *after_ms)?,
            },
        ),
        Event::LeaseEnded {
            provider, reason, ..
        } => (*provider, Fact::Ended { reason: *reason }),
        Event::OrderCancelled {
            account,
            reason: CancelReason::SpecMismatch,
            ..
        } => (*account, Fact::Mismatched),
        Event::BondSlashed { provider, .. } => (*provider, Fact::Slashed),
        Event::ReputationSet { provider, score } => (
            *provider,
            Fact::EngineScore {
                score: fit_i32("reputation", score.get())?,
            },
        ),
        _ => return Ok(None),
    }))
}

/// Provider records, scores, node states and the score history.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reputation;

/// Rows per statement, well below Postgres's 65,535 bind parameters.
const CHUNK: usize = 1_000;

impl Projection for Reputation {
    const NAME: &'static str = "reputation";
    const TABLES: &'static [&'static str] = &["nodes", "provider_reputation", "reputation_history"];
    type Batch = ReputationBatch;

    fn add(&self, batch: &mut ReputationBatch, record: &EventRecord) -> Result<(), Refusal> {
        let fact = match &record.body {
            EventBody::Event(event) => fact_of(event)?,
            EventBody::Rejected(_) => None,
        };
        // Every record, a rejection too, is a moment silent nodes are still down at; one
        // that is no fact of this projection is not refused for its time.
        let at = match (timestamp(record.at.0), &fact) {
            (Ok(at), _) => at,
            (Err(refusal), Some(_)) => return Err(refusal),
            (Err(_), None) => return Ok(()),
        };
        if let Some((provider, fact)) = fact {
            let seq = fit("seq", record.seq)?;
            let provider = fit("account", provider.0)?;
            batch.facts.push((seq, at, provider, fact));
        }
        batch.latest = Some(batch.latest.map_or(at, |l| l.max(at)));
        Ok(())
    }

    fn write(
        &mut self,
        conn: &mut PgConnection,
        partition: i32,
        batch: ReputationBatch,
    ) -> Result<(), LedgerError> {
        let Some(latest) = batch.latest else {
            return Ok(());
        };
        // A node the engine holds silent is down until it reports again: its provider's
        // record changes with every batch.
        let silent: Vec<i64> = nodes::table
            .filter(nodes::silent_through.is_not_null())
            .select(nodes::provider)
            .distinct()
            .load(conn)?;
        let touched: BTreeSet<i64> = batch.facts.iter().map(|f| f.2).chain(silent).collect();
        if touched.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = touched.iter().copied().collect();
        let mut providers: BTreeMap<i64, ProviderRow> = BTreeMap::new();
        let mut node_rows: BTreeMap<(i64, String), Node> = BTreeMap::new();
        for chunk in ids.chunks(CHUNK) {
            for row in provider_reputation::table
                .filter(provider_reputation::provider.eq_any(chunk))
                .select(ProviderRow::as_select())
                .load(conn)?
            {
                providers.insert(row.provider, row);
            }
            for node in nodes::table
                .filter(nodes::provider.eq_any(chunk))
                .select(Node::as_select())
                .load(conn)?
            {
                node_rows.insert((node.provider, node.node.clone()), node);
            }
        }

        let mut history = Vec::new();
        for (seq, at, provider, fact) in batch.facts {
            let row = providers
                .entry(provider)
                .or_insert_with(|| ProviderRow::new(provider, at));
            // The provider's silent nodes were down up to this record.
            still_silent(&mut node_rows, row, at)?;
            let mut record = row.record();
            let cause = match fact {
                Fact::Advertised { node, class, gpus } => {
                    let node = node_rows
                        .entry((provider, node.clone()))
                        .or_insert_with(|| Node::new(provider, node));
                    node.advertised_class = Some(class);
                    node.advertised_gpus = Some(gpus);
                    None
                }
                Fact::Heartbeat { node, class, gpus } => {
                    let beat = node_rows
                        .entry((provider, node.clone()))
                        .or_insert_with(|| Node::new(provider, node))
                        .heartbeat(at, &class, gpus)?;
                    record.up_ms = checked_sum("up time (ms)", record.up_ms, beat.up_ms)?;
                    record.down_ms = checked_sum("down time (ms)", record.down_ms, beat.down_ms)?;
                    record.spec_mismatches = checked_sum(
                        "spec mismatches",
                        record.spec_mismatches,
                        beat.new_mismatch.into(),
                    )?;
                    Some(if beat.new_mismatch {
                        "spec_mismatch"
                    } else {
                        "heartbeat"
                    })
                }
                Fact::Silent { node, last_seen } => {
                    let down_ms = node_rows
                        .entry((provider, node.clone()))
                        .or_insert_with(|| Node::new(provider, node))
                        .silent(last_seen, at)?;
                    record.down_ms = checked_sum("down time (ms)", record.down_ms, down_ms)?;
                    Some("node_silent")
                }
                Fact::Started { after_ms } => {
                    record.starts = checked_sum("lease starts", record.starts, 1)?;
                    // `add` made the delay an i64 from a u64: it is not negative.
                    let on_time = i32::from(after_ms as u64 <= ON_TIME_MS);
                    record.starts_on_time =
                        checked_sum("starts on time", record.starts_on_time, on_time)?;
                    record.start_delay_ms =
                        checked_sum("start delays (ms)", record.start_delay_ms, after_ms)?;
                    Some("lease_started")
                }
                Fact::Ended { reason } => {
                    let count = match reason {
                        LeaseEndReason::Completed => &mut record.leases_completed,
                        LeaseEndReason::ProviderFailed => &mut record.leases_failed,
                        // The operator's ending judges neither side, as the buyer's does.
                        LeaseEndReason::BuyerStopped | LeaseEndReason::Operator => {
                            &mut record.leases_stopped
                        }
                    };
                    *count = checked_sum("leases ended", *count, 1)?;
                    Some(reason.as_str())
                }
                Fact::Mismatched => {
                    record.spec_mismatches =
                        checked_sum("spec mismatches", record.spec_mismatches, 1)?;
                    Some("spec_mismatch")
                }
                Fact::Slashed => {
                    record.slashes = checked_sum("slashes", record.slashes, 1)?;
                    Some("bond_slashed")
                }
                Fact::EngineScore { score } => {
                    row.engine_score = Some(score);
                    None
                }
            };
            let Some(cause) = cause else {
                continue;
            };
            let before = row.score;
            let score = record.score();
            row.set(&record, &score, at);
            // Routine heartbeats that leave the score as it was are not history.
            if cause != "heartbeat" || score.score != before {
                history.push(HistoryRow {
                    partition,
                    event_seq: seq,
                    provider,
                    at,
                    cause,
                    completion: score.completion,
                    uptime: score.uptime,
                    punctuality: score.punctuality,
                    integrity: score.integrity,
                    score: score.score,
                });
            }
        }

        // Every silent node is down up to the batch's latest record.
        for row in providers.values_mut() {
            still_silent(&mut node_rows, row, latest)?;
        }

        let rows: Vec<ProviderRow> = providers.into_values().collect();
        for chunk in rows.chunks(CHUNK) {
            use provider_reputation::dsl as p;
            diesel::insert_into(provider_reputation::table)
                .values(chunk)
                .on_conflict(p::provider)
                .do_update()
                .set((
                    p::leases_completed.eq(excluded(p::leases_completed)),
                    p::leases_failed.eq(excluded(p::leases_failed)),
                    p::leases_stopped.eq(excluded(p::leases_stopped)),
                    p::starts.eq(excluded(p::starts)),
                    p::starts_on_time.eq(excluded(p::starts_on_time)),
                    p::start_delay_ms.eq(excluded(p::start_delay_ms)),
                    p::up_ms.eq(excluded(p::up_ms)),
                    p::down_ms.eq(excluded(p::down_ms)),
                    p::spec_mismatches.eq(excluded(p::spec_mismatches)),
                    p::slashes.eq(excluded(p::slashes)),
                    p::completion.eq(excluded(p::completion)),
                    p::uptime.eq(excluded(p::uptime)),
                    p::punctuality.eq(excluded(p::punctuality)),
                    p::integrity.eq(excluded(p::integrity)),
                    p::score.eq(excluded(p::score)),
                    p::engine_score.eq(excluded(p::engine_score)),
                    p::updated_at.eq(excluded(p::updated_at)),
                ))
                .execute(conn)?;
        }
        let node_rows: Vec<Node> = node_rows.into_values().collect();
        for chunk in node_rows.chunks(CHUNK) {
            use nodes::dsl as n;
            diesel::insert_into(nodes::table)
                .values(chunk)
                .on_conflict((n::provider, n::node))
                .do_update()
                .set((
                    n::advertised_class.eq(excluded(n::advertised_class)),
                    n::advertised_gpus.eq(excluded(n::advertised_gpus)),
                    n::reported_class.eq(excluded(n::reported_class)),
                    n::reported_gpus.eq(excluded(n::reported_gpus)),
                    n::first_heartbeat.eq(excluded(n::first_heartbeat)),
                    n::last_heartbeat.eq(excluded(n::last_heartbeat)),
                    n::heartbeats.eq(excluded(n::heartbeats)),
                    n::up_ms.eq(excluded(n::up_ms)),
                    n::down_ms.eq(excluded(n::down_ms)),
                    n::mismatching.eq(excluded(n::mismatching)),
                    n::mismatches.eq(excluded(n::mismatches)),
                    n::silent_through.eq(excluded(n::silent_through)),
                ))
                .execute(conn)?;
        }
        for chunk in history.chunks(CHUNK) {
            diesel::insert_into(reputation_history::table)
                .values(chunk)
                .execute(conn)?;
        }
        Ok(())
    }
}

/// The provider's silent nodes are down up to `now`: their downtime, the provider's record
/// and its score grow (a score that changes only so is not history; the next event's row
/// shows it).
fn still_silent(
    node_rows: &mut BTreeMap<(i64, String), Node>,
    row: &mut ProviderRow,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let provider = row.provider;
    let mut down_ms = 0;
    for (_, node) in node_rows
        .range_mut((provider, String::new())..)
        .take_while(|((p, _), _)| *p == provider)
    {
        down_ms = checked_sum("down time (ms)", down_ms, node.still_silent(now)?)?;
    }
    if down_ms > 0 {
        let mut record = row.record();
        record.down_ms = checked_sum("down time (ms)", record.down_ms, down_ms)?;
        row.set(&record, &record.score(), now);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    #[test]
    fn a_new_provider_starts_at_the_priors_and_cannot_jump_to_the_top() {
        let new = Record::default().score();
        assert_eq!(new.score, 730);
        let lucky = Record {
            leases_completed: 3,
            starts: 3,
            starts_on_time: 3,
            up_ms: 3 * 3_600_000,
            ..Record::default()
        };
        assert!(lucky.score().score < 850, "{:?}", lucky.score());
        let veteran = Record {
            leases_completed: 500,
            leases_failed: 2,
            starts: 502,
            starts_on_time: 495,
            up_ms: 2_000 * 3_600_000,
            down_ms: 5 * 3_600_000,
            ..Record::default()
        };
        assert!(veteran.score().score > 980, "{:?}", veteran.score());
        let unreliable = Record {
            leases_completed: 10,
            leases_failed: 10,
            ..Record::default()
        };
        assert!(unreliable.score().score < new.score);
    }

    #[test]
    fn each_spec_mismatch_costs_fifteen_percent() {
        let honest = Record::default().score();
        let caught = Record {
            spec_mismatches: 2,
            ..Record::default()
        }
        .score();
        assert_eq!(caught.integrity, 0.85 * 0.85);
        assert_eq!(
            caught.score,
            (f64::from(honest.score) * 0.7225).round() as i32
        );
    }

    #[test]
    fn each_slash_costs_ten_percent_on_top_of_the_failed_lease() {
        let failed = Record {
            leases_failed: 1,
            ..Record::default()
        };
        let slashed = Record {
            slashes: 1,
            ..failed.clone()
        };
        assert_eq!(slashed.score().integrity, 0.9);
        assert_eq!(
            slashed.score().score,
            (f64::from(failed.score().score) * 0.9).round() as i32
        );
        assert!(failed.score().score < Record::default().score().score);
    }

    #[test]
    fn heartbeat_gaps_count_as_up_until_the_tolerance_then_as_down() {
        let mut node = Node::new(1, "fra-1".to_owned());
        let beat = |node: &mut Node, ms| node.heartbeat(at(ms), "H100-80GB", 8).unwrap();
        assert_eq!(beat(&mut node, 0).up_ms, 0);
        assert_eq!(beat(&mut node, 60_000).up_ms, 60_000);
        // Two missed beats are tolerated.
        assert_eq!(beat(&mut node, 240_000).up_ms, 180_000);
        // Ten minutes of silence: one interval up, the rest down.
        let long = beat(&mut node, 840_000);
        assert_eq!((long.up_ms, long.down_ms), (60_000, 540_000));
        assert_eq!(
            (node.up_ms, node.down_ms, node.heartbeats),
            (300_000, 540_000, 4)
        );
    }

    #[test]
    fn a_count_past_its_column_is_refused_and_leaves_the_node_as_it_was() {
        let mut node = Node::new(1, "fra-1".to_owned());
        node.heartbeat(at(0), "H100-80GB", 8).unwrap();
        node.up_ms = i64::MAX - 1;
        let before = node.clone();
        assert!(matches!(
            node.heartbeat(at(60_000), "H100-80GB", 8),
            Err(LedgerError::OutOfRange {
                what: "up time (ms)",
                ..
            })
        ));
        assert_eq!(node, before);
        // A record of counts at their limits still has a score.
        let full = Record {
            leases_completed: i32::MAX,
            leases_failed: i32::MAX,
            up_ms: i64::MAX,
            down_ms: i64::MAX,
            ..Record::default()
        }
        .score();
        assert!((0..=1000).contains(&full.score), "{full:?}");
    }

    /// What the projection sees of a node, at a time in ms.
    #[derive(Debug, Clone, Copy)]
    enum Seen {
        /// The node's heartbeat.
        Beat,
        /// The engine's `NodeSilent`: no heartbeat since the one at `last_seen`.
        Silent { last_seen: i64 },
        /// Any other record, anyone's: a silent node is down up to it.
        Record,
    }

    /// Given what the projection saw of one node, in order, then its up and down time (ms)
    /// and the time its downtime is counted through while it is silent.
    fn check(given: &[(i64, Seen)], then: (i64, i64, Option<i64>)) {
        let mut node = Node::new(1, "fra-1".to_owned());
        let mut down_counted = 0;
        for &(ms, seen) in given {
            down_counted += match seen {
                Seen::Beat => node.heartbeat(at(ms), "H100-80GB", 8).unwrap().down_ms,
                Seen::Silent { last_seen } => node.silent(at(last_seen), at(ms)).unwrap(),
                Seen::Record => node.still_silent(at(ms)).unwrap(),
            };
        }
        assert_eq!(
            (node.up_ms, node.down_ms, node.silent_through),
            (then.0, then.1, then.2.map(at)),
            "given {given:?}"
        );
        // What each step returned adds up to what the node holds.
        assert_eq!(down_counted, node.down_ms, "given {given:?}");
    }

    #[test]
    fn a_silent_node_that_returns_is_down_from_its_last_heartbeat_to_its_return() {
        use Seen::*;
        check(
            &[
                (0, Beat),
                (10_000, Beat),
                (20_000, Beat),
                // Silent 30 s after its last heartbeat, found by a record 5 s later.
                (55_000, Silent { last_seen: 20_000 }),
                (90_000, Record),
                (600_000, Record),
                // Back after ten minutes and more: no interval of the gap counts as up.
                (700_000, Beat),
                (710_000, Beat),
            ],
            (30_000, 680_000, None),
        );
    }

    #[test]
    fn a_node_silent_for_good_is_down_up_to_every_later_record() {
        use Seen::*;
        let silent = [
            (0, Beat),
            (10_000, Beat),
            (45_000, Silent { last_seen: 10_000 }),
        ];
        check(&silent, (10_000, 35_000, Some(45_000)));
        // Later records of anyone make its downtime grow with the market's clock.
        let later = [(60_000, Record), (3_600_000, Record), (86_400_000, Record)];
        check(
            &[&silent[..], &later[..]].concat(),
            (10_000, 86_390_000, Some(86_400_000)),
        );
    }

    #[test]
    fn no_stretch_of_downtime_is_counted_twice() {
        use Seen::*;
        check(
            &[
                (0, Beat),
                (100_000, Silent { last_seen: 0 }),
                // A record at the same time or earlier (another partition's, stamped late)
                // adds nothing; a second finding of the same silence neither.
                (100_000, Record),
                (80_000, Record),
                (120_000, Silent { last_seen: 0 }),
                (130_000, Record),
                // Back: only the rest of the gap.
                (140_000, Beat),
                (150_000, Record),
            ],
            (0, 140_000, None),
        );
        // Without a silence, a long gap counts as the tolerance rule says, as before.
        check(
            &[(0, Beat), (600_000, Beat)],
            (HEARTBEAT_INTERVAL_MS, 600_000 - HEARTBEAT_INTERVAL_MS, None),
        );
    }

    #[test]
    fn a_providers_silent_nodes_lower_its_score_as_time_passes() {
        let mut nodes = BTreeMap::new();
        let mut silent = Node::new(7, "fra-1".to_owned());
        silent.heartbeat(at(0), "H100-80GB", 8).unwrap();
        silent.silent(at(0), at(30_000)).unwrap();
        nodes.insert((7, "fra-1".to_owned()), silent);
        let mut other = Node::new(8, "ams-1".to_owned());
        other.heartbeat(at(0), "H100-80GB", 8).unwrap();
        other.silent(at(0), at(30_000)).unwrap();
        nodes.insert((8, "ams-1".to_owned()), other);
        let mut row = ProviderRow::new(7, at(0));
        row.down_ms = 30_000;
        let before = row.score;
        still_silent(&mut nodes, &mut row, at(10 * 3_600_000)).unwrap();
        assert_eq!(row.down_ms, 10 * 3_600_000);
        assert_eq!(row.updated_at, at(10 * 3_600_000));
        assert!(row.score < before, "{} after {before}", row.score);
        // Only this provider's nodes moved.
        assert_eq!(nodes[&(8, "ams-1".to_owned())].down_ms, 30_000);
        assert_eq!(nodes[&(7, "fra-1".to_owned())].down_ms, 10 * 3_600_000);
    }

    #[test]
    fn a_mismatch_counts_once_per_episode_and_only_against_advertised_hardware() {
        let mut node = Node::new(1, "fra-1".to_owned());
        // Nothing advertised: nothing to mismatch.
        assert!(!node.heartbeat(at(0), "A100-40GB", 1).unwrap().new_mismatch);
        node.advertised_class = Some("H100-80GB".to_owned());
        node.advertised_gpus = Some(8);
        // Given each report in turn, then whether it starts a mismatch episode; fewer GPUs
        // than offered is a mismatch too.
        for (ms, class, gpus, starts) in [
            (60_000, "H100-80GB", 8, false),
            (120_000, "A100-40GB", 8, true),
            (180_000, "A100-40GB", 8, false),
            (240_000, "H100-80GB", 8, false),
            (300_000, "H100-80GB", 4, true),
        ] {
            let beat = node.heartbeat(at(ms), class, gpus).unwrap();
            assert_eq!(beat.new_mismatch, starts, "at {ms} ms");
        }
        assert_eq!(node.mismatches, 2);
    }
}
