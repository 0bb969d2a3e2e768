//! Render jobs in the schema: `submitRenderJob` (a scene's frames, how to buy the GPUs, how
//! to check them), `renderJob`/`renderJobs` (progress per frame, the manifest, the cost per
//! frame), `rejectRenderFrame` (the buyer's review) and, in the subscription root,
//! `renderJobUpdates`. The render loop ([`crate::render`]) does the work.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use contract::{Amount, ErrorCode, LeaseId, Price, Region, Reputation};
use futures_util::StreamExt;
use rand_core::RngCore;
use render::coordinator::{FrameState, TaskState};
use render::{Coordinator, EngineVersion, FrameRange, OutputFormat, Policy, Purchase, RenderSpec};
use rust_decimal::Decimal;

use crate::auth::Role;
use crate::errors::ApiError;
use crate::render::RenderJob as Stored;
use crate::schema::input::{parse_digest, parse_lease_id, parse_name};
use crate::schema::mutation::require_held;
use crate::schema::query::DB;
use crate::schema::{principal, six, state};
use crate::AppState;

/// What a buyer asks to render and how to buy the GPUs for it.
#[derive(Debug, InputObject)]
pub struct RenderJobInput {
    /// The buyer's own name for the job: the same input again returns the same job.
    pub client_job_id: String,
    /// The `.blend` scene: a blob the buyer holds.
    pub scene: String,
    pub frame_start: u32,
    pub frame_end: u32,
    /// `PNG` (8 bits per channel) or `PNG16`.
    #[graphql(default_with = "\"PNG\".to_string()")]
    pub format: String,
    #[graphql(default_with = "\"cycles\".to_string()")]
    pub engine: String,
    /// The engine's version: `3.4` (Blender 3.4's Cycles).
    pub engine_version: String,
    /// Samples per pixel, replacing the scene's.
    pub samples: Option<u32>,
    /// The market (GPU class) whose GPUs render.
    pub market: String,
    /// The most paid per GPU-hour.
    pub limit_price: String,
    /// The most the whole job may cost.
    pub budget: String,
    /// The longest one frame may take on one GPU, in seconds.
    pub frame_seconds: u32,
    #[graphql(default)]
    pub min_vram_gb: u32,
    #[graphql(default)]
    pub regions: Vec<String>,
    #[graphql(default)]
    pub min_reputation: u32,
    /// The buyer's running leases (without a job) to render the first tasks on.
    #[graphql(default)]
    pub leases: Vec<ID>,
    /// The share of frames rendered again on another provider (default 0.05; at least
    /// one frame of every provider is).
    #[graphql(default_with = "Decimal::new(5, 2)")]
    pub check_share: Decimal,
    /// Failed renders of a frame before it is reported failed.
    #[graphql(default = 3)]
    pub max_attempts: u32,
    /// The most frames one lease renders.
    #[graphql(default = 8)]
    pub frames_per_task: u32,
    /// How long the buyer may reject a delivered frame.
    #[graphql(default = 600)]
    pub review_seconds: u32,
    /// How far two renders' samples may be apart and match (8-bit steps; 0: identical).
    #[graphql(default)]
    pub tolerance: u8,
    /// How long a render task may wait for a lease before its frames fail.
    #[graphql(default = 600)]
    pub place_within_seconds: u32,
    /// How long a check (or referee) may wait for a lease on another provider; after it a
    /// check's frames are delivered unchecked (a market with one provider cannot check).
    #[graphql(default = 60)]
    pub check_within_seconds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum RenderStatus {
    Running,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum RenderFrameState {
    /// A task will render it.
    Rendering,
    /// Delivered; another provider renders it again to check (or a referee decides).
    Checking,
    /// Delivered, in the buyer's review window.
    Delivered,
    Accepted,
    /// Every attempt failed; `reason` says why.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum RenderRole {
    Render,
    Check,
    Referee,
}

/// A frame and, once delivered, its manifest entry.
#[derive(Debug, Clone, SimpleObject)]
pub struct RenderFrame {
    pub number: u32,
    pub state: RenderFrameState,
    /// The frame's file in the blob store (the buyer's).
    pub output: Option<String>,
    /// The digest of its decoded pixels (`px1-…`), what checks compare.
    pub pixel_digest: Option<String>,
    pub provider: Option<ID>,
    pub node: Option<String>,
    pub lease: Option<ID>,
    /// The GPU it was rendered on, as the node's signed report named it.
    pub gpu: Option<String>,
    /// Another provider rendered the same pixels.
    pub confirmed: bool,
    /// Renders of it so far (checks and referees included).
    pub renders: u32,
    pub failures: u32,
    pub reason: Option<String>,
    /// Until when the buyer may reject it.
    pub review_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct RenderTask {
    pub id: u32,
    pub role: RenderRole,
    pub frames: Vec<u32>,
    pub provider: Option<ID>,
    pub node: Option<String>,
    pub lease: Option<ID>,
    /// `waiting`, `running`, `finished` or `failed`.
    pub state: String,
    pub reason: Option<String>,
    pub gpus: Vec<String>,
    /// The buyer's rejection this check answers.
    pub dispute: Option<String>,
    /// Its lease's payment: `held` (the lease ended; the payment waits until none of its
    /// frames waits for a check or the buyer's review), `paid`, or `rejected` (its provider
    /// failed verification: slashed, the buyer credited), or `lease_end` (the market settled
    /// it before the job did: the hold ran out, or the lease ended on its own, by its term or
    /// its node, and that end decided the payment); none while the lease runs.
    pub payment: Option<String>,
}

/// A provider that failed verification in this job.
#[derive(Debug, Clone, SimpleObject)]
pub struct RenderVerdict {
    pub provider: ID,
    pub frame: u32,
    pub reason: String,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct RenderProgress {
    pub frames: u32,
    pub rendering: u32,
    pub checking: u32,
    pub delivered: u32,
    pub accepted: u32,
    pub failed: u32,
}

/// What the job's leases cost: all of them, and the part that checked (checks and
/// referees); per successful frame (accepted or delivered). Leases still running, or not
/// yet in the read models, count once they end.
#[derive(Debug, Clone, SimpleObject)]
pub struct RenderCost {
    pub leases: u32,
    pub leases_ended: u32,
    pub charged: Decimal,
    pub verification: Decimal,
    pub per_frame: Option<Decimal>,
}

pub struct RenderJob(pub Stored);

impl std::fmt::Debug for RenderJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RenderJob({})", self.0.id)
    }
}

#[Object]
impl RenderJob {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn client_job_id(&self) -> &str {
        &self.0.client_id
    }
    async fn status(&self) -> RenderStatus {
        if self.0.done {
            RenderStatus::Done
        } else {
            RenderStatus::Running
        }
    }
    async fn scene(&self) -> String {
        self.0.spec.scene.cid()
    }
    async fn frame_start(&self) -> u32 {
        self.0.spec.frames.start()
    }
    async fn frame_end(&self) -> u32 {
        self.0.spec.frames.end()
    }
    async fn engine(&self) -> String {
        self.0.spec.engine.to_string()
    }
    async fn submitted_at(&self) -> DateTime<Utc> {
        self.0.submitted_at
    }
    async fn done_at(&self) -> Option<DateTime<Utc>> {
        self.0.done_at
    }
    async fn progress(&self) -> RenderProgress {
        let mut p = RenderProgress {
            frames: 0,
            rendering: 0,
            checking: 0,
            delivered: 0,
            accepted: 0,
            failed: 0,
        };
        for f in &self.0.coordinator.frames {
            p.frames += 1;
            match f.state {
                FrameState::Rendering { .. } => p.rendering += 1,
                FrameState::Checking { .. } => p.checking += 1,
                FrameState::Delivered { .. } => p.delivered += 1,
                FrameState::Accepted { .. } => p.accepted += 1,
                FrameState::Failed { .. } => p.failed += 1,
            }
        }
        p
    }
    /// The frames from `from` (a frame number), at most `first` (up to 1,000).
    async fn frames(
        &self,
        from: Option<u32>,
        #[graphql(default = 100)] first: u32,
    ) -> async_graphql::Result<Vec<RenderFrame>> {
        if first > 1_000 {
            return Err(ApiError::validation("first: at most 1000").into());
        }
        let c = &self.0.coordinator;
        let from = from.unwrap_or(self.0.spec.frames.start());
        Ok(c.frames
            .iter()
            .filter(|f| f.number >= from)
            .take(first as usize)
            .map(|f| frame(c, f))
            .collect())
    }
    async fn tasks(&self) -> Vec<RenderTask> {
        self.0
            .coordinator
            .tasks
            .iter()
            .map(|t| RenderTask {
                id: t.id,
                role: match t.role {
                    render::Role::Render => RenderRole::Render,
                    render::Role::Check => RenderRole::Check,
                    render::Role::Referee => RenderRole::Referee,
                },
                frames: t.frames.clone(),
                provider: t.placement.map(|p| ID(p.provider.0.to_string())),
                node: t.placement.map(|p| p.node.to_string()),
                lease: t.placement.map(|p| ID(p.lease.0.to_string())),
                state: match &t.state {
                    TaskState::Waiting => "waiting",
                    TaskState::Running => "running",
                    TaskState::Finished => "finished",
                    TaskState::Failed { .. } => "failed",
                }
                .into(),
                reason: match &t.state {
                    TaskState::Failed { reason } => Some(reason.clone()),
                    _ => None,
                },
                gpus: t.gpus.clone(),
                dispute: t.dispute.clone(),
                payment: match (t.placement, t.lease_ended, t.settled) {
                    (Some(_), _, Some(render::Settled::Rejected)) => Some("rejected"),
                    (Some(_), _, Some(render::Settled::Paid)) => Some("paid"),
                    (Some(_), _, Some(render::Settled::LeaseEnd)) => Some("lease_end"),
                    (Some(_), true, None) => Some("held"),
                    _ => None,
                }
                .map(str::to_owned),
            })
            .collect()
    }
    async fn verdicts(&self) -> Vec<RenderVerdict> {
        self.0
            .coordinator
            .verdicts
            .iter()
            .map(|v| RenderVerdict {
                provider: ID(v.provider.0.to_string()),
                frame: v.frame,
                reason: v.reason.clone(),
            })
            .collect()
    }
    /// The manifest, once every frame is over: JSON, one entry per frame with its output's
    /// cid and pixel digest, provider, node, GPU and lease (or why it failed).
    async fn manifest(&self) -> Option<String> {
        if !self.0.coordinator.frames.iter().all(|f| f.is_over()) {
            return None;
        }
        let c = &self.0.coordinator;
        let entries: Vec<serde_json::Value> = c
            .frames
            .iter()
            .map(|f| {
                let fr = frame(c, f);
                serde_json::json!({
                    "frame": fr.number,
                    "output": fr.output,
                    "pixel_digest": fr.pixel_digest,
                    "provider": fr.provider.map(|p| p.0),
                    "node": fr.node,
                    "gpu": fr.gpu,
                    "lease": fr.lease.map(|l| l.0),
                    "confirmed": fr.confirmed,
                    "failed": fr.reason,
                })
            })
            .collect();
        Some(
            serde_json::to_string(&serde_json::json!({
                "job": self.0.id,
                "scene": self.0.spec.scene.cid(),
                "frames": entries,
            }))
            .expect("JSON"),
        )
    }
    #[graphql(complexity = "DB")]
    async fn cost(&self, ctx: &Context<'_>) -> async_graphql::Result<RenderCost> {
        let c = &self.0.coordinator;
        let leases: Vec<(LeaseId, bool)> = c
            .tasks
            .iter()
            .filter_map(|t| {
                t.placement
                    .map(|p| (p.lease, t.role != render::Role::Render))
            })
            .collect();
        let ids: Vec<LeaseId> = leases.iter().map(|(l, _)| *l).collect();
        let charges = state(ctx)
            .db(move |conn| ledger::store::lease_charges(conn, &ids))
            .await?;
        let mut cost = RenderCost {
            leases: leases.len() as u32,
            leases_ended: 0,
            charged: Decimal::ZERO,
            verification: Decimal::ZERO,
            per_frame: None,
        };
        for (lease, charged) in charges {
            let Some(charged) = charged else { continue };
            cost.leases_ended += 1;
            cost.charged += charged;
            if leases.iter().any(|(l, checks)| *l == lease && *checks) {
                cost.verification += charged;
            }
        }
        let good = c
            .frames
            .iter()
            .filter(|f| {
                matches!(
                    f.state,
                    FrameState::Accepted { .. } | FrameState::Delivered { .. }
                )
            })
            .count();
        cost.per_frame = (good > 0).then(|| six(cost.charged / Decimal::from(good)));
        cost.charged = six(cost.charged);
        cost.verification = six(cost.verification);
        Ok(cost)
    }
}

/// A frame as the schema shows it, with its delivered render's manifest entry.
fn frame(c: &Coordinator, f: &render::coordinator::Frame) -> RenderFrame {
    let delivered = f.delivered();
    let task = delivered.and_then(|r| c.task(r.task));
    let placement = task.and_then(|t| t.placement);
    let output = delivered.and_then(|r| r.output.as_ref().ok());
    RenderFrame {
        number: f.number,
        state: match f.state {
            FrameState::Rendering { .. } => RenderFrameState::Rendering,
            FrameState::Checking { .. } => RenderFrameState::Checking,
            FrameState::Delivered { .. } => RenderFrameState::Delivered,
            FrameState::Accepted { .. } => RenderFrameState::Accepted,
            FrameState::Failed { .. } => RenderFrameState::Failed,
        },
        output: output.map(|o| o.cid.clone()),
        pixel_digest: output.map(|o| o.pixels.to_string()),
        provider: placement.map(|p| ID(p.provider.0.to_string())),
        node: placement.map(|p| p.node.to_string()),
        lease: placement.map(|p| ID(p.lease.0.to_string())),
        gpu: task.and_then(|t| t.gpus.first().cloned()),
        confirmed: f.confirmed,
        renders: f.renders.len() as u32,
        failures: f.failures,
        reason: match &f.state {
            FrameState::Failed { reason } => Some(reason.clone()),
            _ => None,
        },
        review_until: match f.state {
            FrameState::Delivered { at, .. } | FrameState::Checking { at, .. } => {
                DateTime::from_timestamp_millis(at.saturating_add(c.policy.review_ms))
            }
            _ => None,
        },
    }
}

/// The job `id` if `ctx`'s caller may see it (its buyer, or the admin).
async fn visible(ctx: &Context<'_>, id: &ID) -> Result<Stored, ApiError> {
    let p = principal(ctx)?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::validation("jobId: not a render job id"))?;
    let row = state(ctx)
        .db(move |c| ledger::store::render_job(c, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no render job {id}")))?;
    let job = Stored::parse(row)?;
    if p.role != Role::Admin && p.own_account()? != job.buyer {
        return Err(ApiError::not_found(format!("no render job {id}")));
    }
    Ok(job)
}

#[derive(Debug, Default)]
pub struct RenderQuery;

#[Object]
impl RenderQuery {
    /// A render job of the caller's.
    #[graphql(complexity = "DB + child_complexity")]
    async fn render_job(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<RenderJob> {
        Ok(RenderJob(visible(ctx, &id).await?))
    }

    /// The caller's render jobs, newest first, before the job `before`.
    #[graphql(complexity = "DB + child_complexity")]
    async fn render_jobs(
        &self,
        ctx: &Context<'_>,
        before: Option<ID>,
        #[graphql(default = 20)] first: u32,
    ) -> async_graphql::Result<Vec<RenderJob>> {
        let p = principal(ctx)?;
        let buyer = p.own_account()?;
        if first > 100 {
            return Err(ApiError::validation("first: at most 100").into());
        }
        let before = before
            .map(|b| b.parse::<u64>())
            .transpose()
            .map_err(|_| ApiError::validation("before: not a render job id"))?;
        let rows = state(ctx)
            .db(move |c| ledger::store::render_jobs_of(c, buyer, before, first))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Stored::parse(r).map(RenderJob))
            .collect::<Result<_, _>>()?)
    }
}

#[derive(Debug, Default)]
pub struct RenderMutation;

#[Object]
impl RenderMutation {
    /// Renders a scene's frames across providers: the market buys one-GPU leases at the
    /// limit price (or uses the leases given), renders each task's frames with Blender in
    /// the providers' sandboxes, renders a share of them again on other providers and
    /// compares the pixels, a third provider refereeing a mismatch (the provider it
    /// contradicts is slashed and its frames rendered again elsewhere). Nothing is bought
    /// when the budget cannot cover the frames (`BUDGET_TOO_LOW`).
    async fn submit_render_job(
        &self,
        ctx: &Context<'_>,
        input: RenderJobInput,
    ) -> async_graphql::Result<RenderJob> {
        let p = principal(ctx)?;
        p.require(&[Role::Trader], "submitting a render job")?;
        let buyer = p.own_account()?;
        let st = state(ctx);
        let (spec, purchase, policy) = parse(st, buyer, &input)?;
        require_held(ctx, buyer, &[spec.scene]).await?;
        check_scene(st, &spec).await?;
        let seed = rand_core::OsRng.next_u64();
        let coordinator = Coordinator::new(spec.frames, policy, seed);
        let texts = (
            serde_json::to_string(&spec).expect("JSON"),
            serde_json::to_string(&purchase).expect("JSON"),
            serde_json::to_string(&coordinator).expect("JSON"),
        );
        let client_id = input.client_job_id.clone();
        let submitted = st
            .db(move |c| {
                ledger::store::submit_render_job(c, buyer, &client_id, &texts.0, &texts.1, &texts.2)
            })
            .await?;
        let id = match submitted {
            ledger::store::RenderSubmitted::New(id) | ledger::store::RenderSubmitted::Again(id) => {
                id
            }
            ledger::store::RenderSubmitted::Other(_) => {
                return Err(ApiError::validation(
                    "clientJobId: a render job of another input has this id",
                )
                .into())
            }
        };
        let row = st
            .db(move |c| ledger::store::render_job(c, id))
            .await?
            .ok_or_else(|| ApiError::internal("a render job just stored is missing"))?;
        Ok(RenderJob(Stored::parse(row)?))
    }

    /// The buyer rejects a delivered frame in its review window, saying why: another
    /// provider renders it again and, if the pixels differ, a referee decides.
    async fn reject_render_frame(
        &self,
        ctx: &Context<'_>,
        job_id: ID,
        frame: u32,
        reason: String,
    ) -> async_graphql::Result<RenderFrame> {
        principal(ctx)?.require(&[Role::Trader], "rejecting a frame")?;
        if reason.trim().is_empty() || reason.len() > 1_024 || reason.chars().any(char::is_control)
        {
            return Err(
                ApiError::validation("reason: 1 to 1024 bytes, no control characters").into(),
            );
        }
        // The render loop writes the same row: read, change and write over the version read,
        // again if it moved.
        for _ in 0..5 {
            let job = visible(ctx, &job_id).await?;
            let mut c = job.coordinator.clone();
            c.reject(frame, &reason).map_err(|e| match e {
                render::Refused::NoFrame(_) => ApiError::not_found(e.to_string()),
                _ => ApiError::new(ErrorCode::Validation, e.to_string()),
            })?;
            let text = serde_json::to_string(&c).expect("JSON");
            let (id, version) = (job.id, job.version);
            let saved = state(ctx)
                .db(move |conn| ledger::store::save_render_job(conn, id, version, &text, false))
                .await?;
            if saved {
                let f = c.frame(frame).expect("rejected above");
                return Ok(self::frame(&c, f));
            }
        }
        Err(ApiError::unavailable("the job is changing fast; retry").into())
    }
}

/// The job's updates: its state each time it changes, until it is done.
pub async fn updates(
    ctx: &Context<'_>,
    id: ID,
) -> Result<impl futures_util::Stream<Item = RenderJob>, ApiError> {
    let first = visible(ctx, &id).await?;
    let st = state(ctx).clone();
    Ok(futures_util::stream::unfold(
        (Some(first), st, -1i64),
        |(next, st, seen): (Option<Stored>, std::sync::Arc<AppState>, i64)| async move {
            let mut job = next?;
            loop {
                if job.version != seen {
                    let version = job.version;
                    let done = job.done;
                    let again = if done { None } else { Some(job.clone()) };
                    return Some((RenderJob(job), (again, st, version)));
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                let id = job.id;
                let row = st
                    .db(move |c| ledger::store::render_job(c, id))
                    .await
                    .ok()??;
                job = Stored::parse(row).ok()?;
            }
        },
    )
    .boxed())
}

/// The request's every syntax and range check.
fn parse(
    st: &AppState,
    buyer: contract::AccountId,
    input: &RenderJobInput,
) -> Result<(RenderSpec, Purchase, Policy), ApiError> {
    let v = |e: render::RenderError| match e {
        render::RenderError::Budget { .. } => ApiError::new(ErrorCode::BudgetTooLow, e.to_string()),
        e => ApiError::validation(e.to_string()),
    };
    let id = &input.client_job_id;
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "clientJobId: 1 to 128 bytes, no control characters",
        ));
    }
    let frames = FrameRange::new(input.frame_start, input.frame_end).map_err(v)?;
    let spec = RenderSpec::new(
        parse_digest(&input.scene)?,
        frames,
        OutputFormat::parse(&input.format).map_err(v)?,
        EngineVersion::parse(&input.engine, &input.engine_version).map_err(v)?,
        input.samples,
    )
    .map_err(v)?;
    let ppm = (input.check_share * Decimal::from(1_000_000)).trunc();
    if input.check_share < Decimal::ZERO || input.check_share > Decimal::ONE {
        return Err(ApiError::validation("checkShare: 0 to 1"));
    }
    let policy = Policy {
        check_ppm: u32::try_from(ppm.mantissa()).unwrap_or(u32::MAX),
        max_attempts: input.max_attempts,
        frames_per_task: input.frames_per_task,
        review_ms: i64::from(input.review_seconds) * 1_000,
        tolerance: input.tolerance,
        place_within_ms: i64::from(input.place_within_seconds) * 1_000,
        check_within_ms: i64::from(input.check_within_seconds) * 1_000,
    };
    policy.validate().map_err(v)?;
    let regions = input
        .regions
        .iter()
        .map(|r| parse_name::<Region>("regions", r))
        .collect::<Result<Vec<_>, _>>()?;
    let leases = input
        .leases
        .iter()
        .map(parse_lease_id)
        .collect::<Result<Vec<_>, _>>()?;
    {
        let engine = st.engine.replica();
        for l in &leases {
            match engine.lease(*l) {
                Some(lease) if lease.buyer == buyer => {}
                Some(_) => {
                    return Err(ApiError::forbidden(format!(
                        "lease {} is another account's",
                        l.0
                    )))
                }
                None => return Err(ApiError::not_found(format!("no running lease {}", l.0))),
            }
        }
    }
    let purchase = Purchase {
        market: crate::schema::parse_market(&input.market)?,
        limit_price: Price::parse(&input.limit_price)
            .map_err(|e| ApiError::validation(format!("limitPrice: {e}")))?,
        budget: Amount::parse(&input.budget)
            .ok()
            .filter(|a| a.is_positive())
            .ok_or_else(|| ApiError::validation("budget: a positive amount"))?,
        frame_seconds: input.frame_seconds,
        min_vram_gb: input.min_vram_gb,
        regions,
        min_reputation: Reputation::new(u64::from(input.min_reputation))
            .map_err(|e| ApiError::validation(format!("minReputation: {e}")))?,
        leases,
    };
    if st.engine.replica().market_config(purchase.market).is_none() {
        return Err(ApiError::new(
            ErrorCode::UnknownMarket,
            format!("no market {}", purchase.market),
        ));
    }
    purchase.check(frames, &policy).map_err(v)?;
    Ok((spec, purchase, policy))
}

/// The scene is a `.blend` no newer than the engine: its first bytes, from the store.
async fn check_scene(st: &AppState, spec: &RenderSpec) -> Result<(), ApiError> {
    let store = st
        .config
        .blobs
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this market keeps no blob store"))?;
    let unreachable = |e: blobstore::BlobError| {
        tracing::error!(error = %e, "reading the blob store");
        ApiError::unavailable("the blob store is not reachable; retry")
    };
    let (_, mut stream) = store.get(spec.scene).await.map_err(unreachable)?;
    let mut prefix = Vec::new();
    while prefix.len() < 4_096 {
        match stream.next().await {
            Some(chunk) => prefix.extend_from_slice(&chunk.map_err(unreachable)?),
            None => break,
        }
    }
    let (major, minor) =
        render::spec::blend_version(&prefix).map_err(|e| ApiError::validation(e.to_string()))?;
    if (major, minor) > spec.engine.blender() {
        return Err(ApiError::validation(format!(
            "scene: saved by Blender {major}.{minor}, newer than the engine ({})",
            spec.engine
        )));
    }
    Ok(())
}
