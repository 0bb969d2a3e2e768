//! The render loop: drives every running render job through its coordinator
//! (`render::Coordinator`, pure): it buys each waiting task a lease as the job's buyer (an
//! IOC bid of one GPU at the job's limit price, the nodes of every provider the task must
//! avoid excluded) or gives it one of the buyer's own leases, gives the lease the task's
//! Blender job, reads the frames back from the blob store once a signed report sealed them,
//! compares their pixels, and ends each lease as the coordinator says: stopped as soon as
//! its job is over with the payment held for review (`StopLeaseHeld`, so the GPU can check
//! other providers' frames), the payment released once the lease's frames are checked and
//! reviewed (`ReleasePayment`), or the work rejected (`RejectWork`: a slashed provider
//! failure) when its provider failed verification.
//!
//! One task per shard, in the API that ticks the clock. Every step is repeatable: a bid's
//! client order id is the job's, the task's and the attempt's, so a bid a crash interrupted
//! is found again by that id (its first answer, from the log) rather than placed twice; a
//! job given to a lease again is the same job; a lease ended twice answers `LEASE_ENDED`;
//! and the state is written only over the version it was read at.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use contract::{
    AccountId, BidSpec, ClientOrderId, Command, Digest, ErrorCode, Event, FailureReason, Gpus,
    LeaseId, NewOrder, NodeRef, OrderOptions, OrderTerms, OutputManifest, TimeInForce,
};
use ledger::store::{JobFiles, JobRequest, RenderJobRow};
use render::{Coordinator, Ending, Output, Pixels, Placement, Purchase, RenderSpec, Role};
use tracing::{info, warn};

use crate::errors::ApiError;
use crate::schema::answer::events;
use crate::AppState;

/// How long a task's outputs may take to be sealed after its job's outcome arrived.
const SEAL_GRACE_MS: i64 = 120_000;

/// The largest frame file read back.
const MAX_FRAME_BYTES: u64 = 256 << 20;

/// A render job as stored, parsed.
#[derive(Debug, Clone)]
pub struct RenderJob {
    pub id: u64,
    pub buyer: AccountId,
    pub client_id: String,
    pub spec: RenderSpec,
    pub purchase: Purchase,
    pub coordinator: Coordinator,
    pub version: i64,
    pub done: bool,
    pub submitted_at: chrono::DateTime<chrono::Utc>,
    pub done_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl RenderJob {
    /// A stored row that does not parse is a bug or a damaged row: `INTERNAL`, logged.
    pub fn parse(row: RenderJobRow) -> Result<RenderJob, ApiError> {
        let bad = |what: &str, e: serde_json::Error| {
            tracing::error!(job = row.id, error = %e, "render job {what} does not parse");
            ApiError::internal("a stored render job does not parse")
        };
        Ok(RenderJob {
            id: row.id as u64,
            buyer: AccountId(row.buyer as u64),
            spec: serde_json::from_str(&row.spec).map_err(|e| bad("spec", e))?,
            purchase: serde_json::from_str(&row.purchase).map_err(|e| bad("purchase", e))?,
            coordinator: serde_json::from_str(&row.state).map_err(|e| bad("state", e))?,
            client_id: row.client_id,
            version: row.version,
            done: row.status == "done",
            submitted_at: row.submitted_at,
            done_at: row.done_at,
        })
    }
}

/// Drives the running render jobs every `every`, until the API stops.
pub async fn drive(state: Arc<AppState>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let running = match state.db(ledger::store::running_render_jobs).await {
            Ok(ids) => ids,
            Err(e) => {
                warn!(error = %e.message, "listing render jobs");
                continue;
            }
        };
        for id in running {
            if let Err(e) = step(&state, id).await {
                warn!(job = id, error = %e.message, "driving a render job");
            }
        }
    }
}

/// One round of job `id`: what came back, what to buy, which leases end; the state is
/// written when it changed.
pub async fn step(state: &AppState, id: u64) -> Result<(), ApiError> {
    let Some(row) = state.db(move |c| ledger::store::render_job(c, id)).await? else {
        return Ok(());
    };
    let job = RenderJob::parse(row)?;
    if job.done {
        return Ok(());
    }
    let mut c = job.coordinator.clone();
    let now = chrono::Utc::now().timestamp_millis();
    collect(state, &job, &mut c, now).await?;
    buy(state, &job, &mut c, now).await?;
    submit(state, &job, &c).await?;
    end_leases(state, &job, &mut c).await;
    c.tick(now);
    if c != job.coordinator {
        let text = serde_json::to_string(&c).expect("the state serializes");
        let done = c.is_done();
        let version = job.version;
        let saved = state
            .db(move |conn| ledger::store::save_render_job(conn, id, version, &text, done))
            .await?;
        if done && saved {
            info!(job = id, "render job done");
        }
    }
    Ok(())
}

/// Running tasks whose job came back (outputs sealed), failed, or ran out of time.
async fn collect(
    state: &AppState,
    job: &RenderJob,
    c: &mut Coordinator,
    now: i64,
) -> Result<(), ApiError> {
    let running: Vec<(u32, Placement, i64, Vec<u32>)> = c
        .tasks
        .iter()
        .filter(|t| t.state == render::coordinator::TaskState::Running)
        .map(|t| {
            (
                t.id,
                t.placement.expect("running"),
                t.placed_at,
                t.frames.clone(),
            )
        })
        .collect();
    for (task, placement, placed_at, frames) in running {
        // An earlier task's verdict in this round may have failed this one's provider,
        // which ends its task: nothing more to collect for it.
        if c.task(task).map(|t| &t.state) != Some(&render::coordinator::TaskState::Running) {
            continue;
        }
        let lease = placement.lease;
        let found = state
            .db(move |conn| ledger::store::job(conn, 0, lease))
            .await?;
        let open = state.engine.replica().lease(lease).is_some();
        let limit = placed_at
            + i64::from(job.purchase.frame_seconds) * 1_000 * frames.len() as i64
            + SEAL_GRACE_MS;
        match found {
            // The buyer gave the lease a job of its own (one of its leases it named, or
            // one the loop bought, before the loop's job reached it): its outputs are not
            // this task's frames, whatever their names.
            Some(j) if !j.is(&blender_job(job, &frames)) => {
                c.task_failed(task, "its lease runs a job that is not the task's", now)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            }
            Some(j) if j.output_manifest.is_some() => {
                let results = frames_of(state, job, c, task, &j).await?;
                let mut same = comparer(state, job, c, task, &results).await?;
                c.finished(task, results, j.output_gpus.clone(), now, &mut *same)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            }
            Some(j)
                if j.outcome
                    .as_deref()
                    .is_some_and(|o| o.starts_with("refused")) =>
            {
                let outcome = j.outcome.unwrap_or_default();
                c.task_failed(task, &outcome, now)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            }
            Some(j)
                if j.outcome.is_some()
                    && j.log_at
                        .is_some_and(|at| now - at.timestamp_millis() > SEAL_GRACE_MS) =>
            {
                let outcome = j.outcome.unwrap_or_default();
                c.task_failed(task, &format!("{outcome}; no outputs sealed"), now)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            }
            _ if !open => {
                c.task_failed(task, "its lease ended before the job's outputs came", now)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            }
            _ if now > limit => {
                c.task_failed(task, "it ran past its frames' time", now)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The frames a finished task's job left, each fetched and decoded: a file that is not a
/// frame of the task is ignored; one that does not decode is that frame's failure.
async fn frames_of(
    state: &AppState,
    job: &RenderJob,
    c: &Coordinator,
    task: u32,
    j: &ledger::store::Job,
) -> Result<BTreeMap<u32, Result<Output, String>>, ApiError> {
    let store = blobs(state)?;
    let wanted: BTreeSet<u32> = c
        .task(task)
        .map(|t| t.frames.iter().copied().collect())
        .unwrap_or_default();
    let outcome = j.outcome.clone().unwrap_or_else(|| "no outcome".into());
    let manifest_cid = j.output_manifest.as_deref().expect("sealed");
    let mut results: BTreeMap<u32, Result<Output, String>> = wanted
        .iter()
        .map(|n| (*n, Err(format!("the job left no file for it ({outcome})"))))
        .collect();
    let manifest = match read_blob(store, manifest_cid, 1 << 20).await? {
        Ok(bytes) => serde_json::from_slice::<OutputManifest>(&bytes)
            .map_err(|e| format!("the output manifest does not parse: {e}")),
        Err(e) => Err(e),
    };
    let manifest = match manifest {
        Ok(m) if m.lease == j_lease(c, task) => m,
        Ok(_) => {
            warn!(job = job.id, task, "an output manifest of another lease");
            return Ok(results);
        }
        Err(e) => {
            for r in results.values_mut() {
                *r = Err(e.clone());
            }
            return Ok(results);
        }
    };
    for file in manifest.files {
        let Some(n) = render::spec::frame_of(&file.path).filter(|n| wanted.contains(n)) else {
            continue;
        };
        let result = match read_blob(store, &file.cid, MAX_FRAME_BYTES).await? {
            Ok(bytes) => decode(bytes)
                .await
                .map(|p| Output {
                    cid: file.cid.clone(),
                    pixels: p.digest(),
                })
                .map_err(|e| format!("{}: {e}", file.path)),
            Err(e) => Err(e),
        };
        results.insert(n, result);
    }
    Ok(results)
}

fn j_lease(c: &Coordinator, task: u32) -> u64 {
    c.task(task)
        .and_then(|t| t.placement)
        .map_or(0, |p| p.lease.0)
}

/// How two outputs are compared: by pixel digest where the job's tolerance is zero, else
/// by their decoded pixels (each output this task may be compared with is fetched first).
async fn comparer(
    state: &AppState,
    job: &RenderJob,
    c: &Coordinator,
    task: u32,
    results: &BTreeMap<u32, Result<Output, String>>,
) -> Result<Box<dyn FnMut(&Output, &Output) -> bool + Send>, ApiError> {
    let tolerance = job.coordinator.policy.tolerance;
    if tolerance == 0 {
        return Ok(Box::new(|a: &Output, b: &Output| a.pixels == b.pixels));
    }
    let store = blobs(state)?;
    let mut cids: BTreeSet<String> = results
        .values()
        .filter_map(|r| r.as_ref().ok().map(|o| o.cid.clone()))
        .collect();
    if let Some(t) = c.task(task) {
        for n in &t.frames {
            if let Some(f) = c.frame(*n) {
                cids.extend(
                    f.renders
                        .iter()
                        .filter_map(|r| r.output.as_ref().ok().map(|o| o.cid.clone())),
                );
            }
        }
    }
    let mut pixels = BTreeMap::new();
    for cid in cids {
        if let Ok(bytes) = read_blob(store, &cid, MAX_FRAME_BYTES).await? {
            if let Ok(p) = decode(bytes).await {
                pixels.insert(cid, p);
            }
        }
    }
    Ok(Box::new(move |a: &Output, b: &Output| {
        match (pixels.get(&a.cid), pixels.get(&b.cid)) {
            (Some(pa), Some(pb)) => pa.matches(pb, tolerance),
            _ => a.pixels == b.pixels,
        }
    }))
}

/// A frame's pixels, decoded on a blocking thread: an 8K frame takes a CPU for a while, and
/// the API's request threads must not wait behind it.
pub(crate) async fn decode(bytes: bytes::Bytes) -> Result<Pixels, String> {
    tokio::task::spawn_blocking(move || Pixels::decode_png(&bytes))
        .await
        .map_err(|e| format!("decoding stopped: {e}"))?
        .map_err(|e| e.to_string())
}

pub(crate) fn blobs(state: &AppState) -> Result<&blobstore::BlobStore, ApiError> {
    state
        .config
        .blobs
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this market keeps no blob store"))
}

/// A blob's bytes, or why the provider's file is unusable (not a cid, missing, too large);
/// the store not answering is the loop's error, tried again next round.
pub(crate) async fn read_blob(
    store: &blobstore::BlobStore,
    cid: &str,
    max: u64,
) -> Result<Result<bytes::Bytes, String>, ApiError> {
    let Ok(digest) = Digest::parse(cid) else {
        return Ok(Err(format!("{cid:?} is not a cid")));
    };
    let unreachable = |e: blobstore::BlobError| {
        warn!(error = %e, "reading the blob store");
        ApiError::unavailable("the blob store is not reachable; retry")
    };
    match store.size(digest).await.map_err(unreachable)? {
        None => return Ok(Err(format!("{cid} is not in the store"))),
        Some(size) if size > max => return Ok(Err(format!("{cid} is over {max} bytes"))),
        Some(_) => {}
    }
    Ok(Ok(store.read(digest).await.map_err(unreachable)?))
}

/// Gives each waiting task a lease: one of the buyer's own (render tasks only), or an IOC
/// bid's fill.
async fn buy(
    state: &AppState,
    job: &RenderJob,
    c: &mut Coordinator,
    now: i64,
) -> Result<(), ApiError> {
    let waiting: Vec<(u32, Role, BTreeSet<AccountId>, u32)> = c
        .waiting()
        .map(|t| (t.id, t.role, t.avoid.clone(), t.buys))
        .collect();
    for (task, role, mut avoid, buys) in waiting {
        avoid.extend(c.failed.iter().copied());
        if role == Role::Render {
            if let Some(own) = own_lease(state, job, c, &avoid) {
                c.placed(task, own, now)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                continue;
            }
        }
        let hours = job
            .purchase
            .lease_hours(&c.policy)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let hold = job
            .purchase
            .limit_price
            .cost(Gpus::new(1).expect("one"), hours)
            .ok_or_else(|| ApiError::internal("a lease's hold overflows"))?;
        let committed = committed(state, job, c).await?;
        if committed + i128::from(hold.micros()) > i128::from(job.purchase.budget.micros()) {
            let running = c
                .tasks
                .iter()
                .any(|t| t.placement.is_some() && !t.lease_ended);
            if !running {
                c.unplaceable(task, "the job's budget is spent")
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            }
            continue;
        }
        let exclude: Vec<NodeRef> = {
            let engine = state.engine.replica();
            avoid
                .iter()
                .flat_map(|p| {
                    engine
                        .nodes_of(*p)
                        .into_iter()
                        .map(|(node, _, _)| NodeRef { provider: *p, node })
                        .collect::<Vec<_>>()
                })
                .take(OrderOptions::MAX_EXCLUDED)
                .collect()
        };
        let client_id = ClientOrderId(
            0x52u128 << 120 | u128::from(job.id) << 64 | u128::from(task) << 32 | u128::from(buys),
        );
        let order = NewOrder {
            account: job.buyer,
            client_id,
            market: job.purchase.market,
            price: job.purchase.limit_price,
            gpus: Gpus::new(1).expect("one"),
            tif: TimeInForce::Ioc,
            post_only: false,
            terms: OrderTerms::Bid(BidSpec {
                hours,
                min_vram_gb: job.purchase.min_vram_gb,
                regions: job.purchase.regions.clone(),
                interconnects: Vec::new(),
                vendor: None,
                min_reputation: job.purchase.min_reputation,
                single_node: false,
                all_or_none: false,
                min_fill: None,
            }),
        };
        let options = OrderOptions {
            rebid_on_failure: false,
            exclude_nodes: exclude,
        };
        let answer = state
            .engine
            .submit(Command::PlaceWith { order, options })
            .await?;
        let answered = match events(answer) {
            Ok(events) => events,
            Err(e) if e.code == ErrorCode::DuplicateClientOrderId => {
                crate::schema::mutation::first_answer_events(state, job.buyer, client_id).await?
            }
            Err(e) => {
                // Funds or the market refused it: tried again, up to the task's bids.
                warn!(job = job.id, task, code = %e.code.as_str(), "a render bid refused");
                Vec::new()
            }
        };
        let filled = answered.iter().find_map(|e| match e {
            Event::LeaseCreated {
                lease_id,
                provider,
                node,
                buyer,
                ..
            } if *buyer == job.buyer => Some(Placement {
                lease: *lease_id,
                provider: *provider,
                node: *node,
            }),
            _ => None,
        });
        match filled {
            Some(p) if c.placed(task, p, now).is_ok() => {
                info!(
                    job = job.id,
                    task,
                    lease = p.lease.0,
                    provider = p.provider.0,
                    "render task leased"
                );
            }
            Some(p) => {
                // A provider the task avoids, on a node the exclusions could not name: the
                // lease ends at once and the task bids again.
                stop(state, job.buyer, p.lease).await;
                c.not_filled(task);
            }
            // The policy's wait for a lease runs out in the coordinator's tick.
            None => c.not_filled(task),
        }
    }
    Ok(())
}

/// One of the buyer's own leases the job was given: running, the buyer's, no job yet, on a
/// provider the task may use, not already a task's.
fn own_lease(
    state: &AppState,
    job: &RenderJob,
    c: &Coordinator,
    avoid: &BTreeSet<AccountId>,
) -> Option<Placement> {
    let used: BTreeSet<LeaseId> = c
        .tasks
        .iter()
        .filter_map(|t| t.placement.map(|p| p.lease))
        .collect();
    let engine = state.engine.replica();
    job.purchase.leases.iter().find_map(|id| {
        let lease = engine.lease(*id)?;
        (lease.buyer == job.buyer && !used.contains(id) && !avoid.contains(&lease.provider))
            .then_some(Placement {
                lease: *id,
                provider: lease.provider,
                node: lease.node,
            })
    })
}

/// What the job's leases may cost at most so far, in micro-units: ended ones what they were
/// charged (held ones as the engine charged them; the hold until the projection has it),
/// running ones their hold.
async fn committed(state: &AppState, job: &RenderJob, c: &Coordinator) -> Result<i128, ApiError> {
    let own: BTreeSet<LeaseId> = job.purchase.leases.iter().copied().collect();
    let bought: Vec<LeaseId> = c
        .tasks
        .iter()
        .filter_map(|t| t.placement.map(|p| p.lease))
        .filter(|l| !own.contains(l))
        .collect();
    let hold = job
        .purchase
        .lease_hours(&c.policy)
        .ok()
        .and_then(|h| job.purchase.limit_price.cost(Gpus::new(1).expect("one"), h))
        .map_or(i128::MAX / 4, |a| i128::from(a.micros()));
    let ids = bought.clone();
    let charges: BTreeMap<LeaseId, Option<rust_decimal::Decimal>> = state
        .db(move |conn| ledger::store::lease_charges(conn, &ids))
        .await?
        .into_iter()
        .collect();
    // A lease whose payment is held has its charge in the engine, not yet in the projection.
    let engine = state.engine.replica();
    Ok(bought
        .iter()
        .map(|l| match (charges.get(l), engine.held_payment(*l)) {
            (Some(Some(charged)), _) => {
                contract::Amount::from_decimal(*charged).map_or(hold, |a| i128::from(a.micros()))
            }
            (_, Some((_, charged))) => i128::from(charged.micros()),
            _ => hold,
        })
        .sum())
}

/// The Blender job that renders `frames`: what a task's lease is given, and what the loop
/// finds there before it trusts the lease's outputs as the task's.
fn blender_job(job: &RenderJob, frames: &[u32]) -> JobRequest {
    JobRequest {
        command: "blender".into(),
        args: job.spec.blender_args(frames),
        env: Vec::new(),
        files: JobFiles {
            image: None,
            image_blobs: Vec::new(),
            inputs: vec![(job.spec.scene.cid(), render::spec::SCENE_PATH.into())],
        },
        network: false,
    }
}

/// Gives every running task's lease its Blender job (again after a crash: the same job is a
/// retry).
async fn submit(state: &AppState, job: &RenderJob, c: &Coordinator) -> Result<(), ApiError> {
    for t in &c.tasks {
        let (Some(p), render::coordinator::TaskState::Running) = (t.placement, &t.state) else {
            continue;
        };
        let request = blender_job(job, &t.frames);
        let buyer = job.buyer;
        let submitted = state
            .db(move |conn| ledger::store::submit_job(conn, p.lease, buyer, p.provider, &request))
            .await?;
        if submitted == ledger::store::JobSubmitted::Other {
            // Collected next round as a failed task (its outputs are not the task's).
            warn!(job = job.id, lease = p.lease.0, "the lease has another job");
        }
    }
    Ok(())
}

/// Ends the leases the coordinator is done with (stopped by the buyer holding the payment,
/// or rejected: a slashed provider failure), then settles the held payments it is done
/// with (paid, or rejected). One the engine has ended or paid already is done too, and the
/// coordinator is told so: the engine ended the lease itself (its term, its node) or the
/// hold ran out, so the lease's own end decided its payment, not this job's ask.
async fn end_leases(state: &AppState, job: &RenderJob, c: &mut Coordinator) {
    for (task, lease_id, ending) in c.leases_to_end() {
        let asked = match finish(state, job, lease_id, &ending).await {
            None => continue,
            Some(Finished::AsAsked) => Some(&ending),
            // A hold sent again after a restart finds its lease ended by the first: the
            // payment still held says the hold is this job's.
            Some(Finished::AlreadyOver)
                if matches!(ending, Ending::Hold { .. })
                    && state.engine.replica().held_payment(lease_id).is_some() =>
            {
                Some(&ending)
            }
            Some(Finished::AlreadyOver) => None,
        };
        let _ = c.lease_ended(task, asked);
    }
    for (task, lease_id, ending) in c.payments_to_settle() {
        if let Some(finished) = finish(state, job, lease_id, &ending).await {
            let _ = c.settled(task, (finished == Finished::AsAsked).then_some(&ending));
        }
    }
}

/// How the engine answered an ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finished {
    AsAsked,
    /// The lease had ended, or its payment had been settled, already.
    AlreadyOver,
}

/// Sends the command that ends `lease_id` or its held payment as `ending` says; `None` when
/// the engine did not answer (asked again next round).
async fn finish(
    state: &AppState,
    job: &RenderJob,
    lease_id: LeaseId,
    ending: &Ending,
) -> Option<Finished> {
    let command = match ending {
        Ending::Hold { hold_ms } => Command::StopLeaseHeld {
            by: job.buyer,
            lease_id,
            hold_ms: *hold_ms,
        },
        Ending::Release => Command::ReleasePayment {
            by: job.buyer,
            lease_id,
        },
        Ending::Reject { reason } => Command::RejectWork {
            lease_id,
            reason: FailureReason::new(reason)
                .unwrap_or_else(|_| FailureReason::new("failed verification").expect("not empty")),
        },
    };
    let finished = match state.engine.submit(command).await.map_err(ApiError::from) {
        Ok(answer) => match events(answer) {
            Ok(_) => Some(Finished::AsAsked),
            Err(e) if matches!(e.code, ErrorCode::LeaseEnded | ErrorCode::UnknownLease) => {
                Some(Finished::AlreadyOver)
            }
            Err(e) => {
                warn!(job = job.id, lease = lease_id.0, error = %e.message, "ending a render lease refused");
                None
            }
        },
        Err(e) => {
            warn!(job = job.id, lease = lease_id.0, error = %e.message, "ending a render lease");
            None
        }
    };
    if let Some(finished) = finished {
        info!(job = job.id, lease = lease_id.0, ending = ?ending, ?finished, "a render lease ended or paid");
    }
    finished
}

/// Stops a lease as its buyer; a lease already ended is fine.
async fn stop(state: &AppState, buyer: AccountId, lease_id: LeaseId) {
    let command = Command::StopLease {
        by: buyer,
        lease_id,
    };
    if let Err(e) = state.engine.submit(command).await.map_err(ApiError::from) {
        warn!(lease = lease_id.0, error = %e.message, "stopping a render lease");
    }
}
