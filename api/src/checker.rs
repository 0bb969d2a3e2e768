//! The checker loop: the market's checker account tests every node offering in the markets
//! it was appointed to (`AppointChecker`), a new node before its first sale (the engine keeps
//! it on probation until then) and every node again on a schedule. A check is an ordinary
//! purchase: an immediate-or-cancel bid for one GPU of that node at its ask's price
//! (`PlaceCheck`), paid and settled as any lease. Its job is a known-answer job: Blender
//! renders one frame, chosen at random, of the checker's scene with Cycles' noise seed drawn
//! for this check (so no answer can be rendered ahead of time), which the market renders
//! itself to judge it, and then runs a compute kernel (SHA-256 iterated from the same random
//! seed) whose result the market computes. A provider can tell this job from a render task
//! (its kernel), so a check proves a node can do the work, not that it always does: the
//! redundant renders of render jobs check the rest.
//! The verdict (`RecordCheck`) ends the lease: a pass stops it as paid work and takes the
//! node off probation; a wrong or missing answer is failed verification, a slashed provider
//! failure, and the node goes back on probation.
//!
//! Everything a check needs after a crash is in the engine (the checker's running leases)
//! and in `lease_jobs` (each check's frame and seed are its job's arguments), so the loop
//! keeps no state of its own beyond when it last tried each node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use contract::{
    AccountId, BidSpec, ClientOrderId, Command, ErrorCode, FailureReason, Gpus, Hours, LeaseId,
    MarketId, NewOrder, NodeRef, OrderTerms, OutputManifest, TimeInForce,
};
use ledger::store::{BlobKind, JobFiles, JobRequest, RefAdded};
use rand_core::RngCore;
use render::{EngineVersion, FrameRange, OutputFormat, PixelDigest, RenderSpec};
use sha2::{Digest as _, Sha256};
use tracing::{info, warn};

use crate::errors::ApiError;
use crate::render::{blobs, decode, read_blob};
use crate::schema::answer::events;
use crate::AppState;

/// The checker: who it is and how often it checks. It checks the markets it was appointed
/// to (`appointChecker`), as the engine knows them.
#[derive(Debug, Clone)]
pub struct CheckerConfig {
    pub account: AccountId,
    /// How often the loop runs.
    pub every: Duration,
    /// A node that passed is checked again this long after.
    pub recheck_after: Duration,
    /// A node that failed is checked again (and may pass) this long after.
    pub retry_failed_after: Duration,
    /// A check whose answer is not sealed this long after its job was given fails.
    pub answer_within: Duration,
    /// The most a check pays per GPU-hour: a node whose cheapest ask is dearer is not
    /// checked (and stays on probation), so nobody drains the checker with an ask priced at
    /// its balance.
    pub max_price: contract::Price,
}

impl CheckerConfig {
    pub fn new(account: AccountId) -> CheckerConfig {
        CheckerConfig {
            account,
            every: Duration::from_secs(1),
            recheck_after: Duration::from_secs(24 * 3600),
            retry_failed_after: Duration::from_secs(600),
            answer_within: Duration::from_secs(180),
            max_price: contract::Price::parse("20").expect("a price"),
        }
    }
}

/// The kernel's rounds of SHA-256: a fraction of a second in Blender's Python.
const KERNEL_ROUNDS: u32 = 200_000;

/// The file the kernel writes its answer to.
const KERNEL_FILE: &str = "kernel.txt";

/// The largest answer file read back.
const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// What the market knows the answers by: its scene, in the blob store (held by the checker)
/// and here, which it renders itself with each check's seed.
struct Kit {
    spec: RenderSpec,
    scene: Vec<u8>,
}

impl Kit {
    /// Makes the demo animation and stores it as the checker's blob.
    async fn prepare(state: &AppState, checker: AccountId) -> Result<Kit, String> {
        let dir = scratch()?;
        let scene = {
            let path = dir.join(render::spec::SCENE_PATH);
            tokio::task::spawn_blocking(move || {
                render::local::make_demo_scene(&path).map_err(|e| e.to_string())?;
                std::fs::read(&path).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())??
        };
        let store = blobs(state).map_err(|e| e.message)?;
        let size = scene.len() as u64;
        let bytes = bytes::Bytes::from(scene.clone());
        let body =
            futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
        let stored = store
            .put(body, None, u64::MAX)
            .await
            .map_err(|e| e.to_string())?;
        let cid = stored.digest.cid();
        let quota = state.config.blob_quota_bytes;
        let held = {
            let cid = cid.clone();
            state
                .db(move |c| {
                    ledger::store::add_ref(c, checker, &cid, size, BlobKind::Upload, quota)
                })
                .await
                .map_err(|e| e.message)?
        };
        if !matches!(held, RefAdded::New | RefAdded::Again) {
            return Err(format!("the checker cannot hold its scene {cid}: {held:?}"));
        }
        let spec = RenderSpec::new(
            stored.digest,
            FrameRange::new(1, 24).expect("the demo has 24 frames"),
            OutputFormat::Png,
            EngineVersion::Cycles3_4,
            None,
        )
        .map_err(|e| e.to_string())?;
        Ok(Kit { spec, scene })
    }

    /// The pixels of `frame` rendered here with the check's seed: the answer.
    async fn reference(&self, frame: u32, seed: &[u8; 16]) -> Result<PixelDigest, String> {
        let (spec, scene) = (
            self.spec.clone().with_seed(cycles_seed(seed)),
            self.scene.clone(),
        );
        let dir = scratch()?.join(format!("reference-{}", hex::encode(seed)));
        tokio::task::spawn_blocking(move || {
            let digest = render::local::render_frames(&spec, &scene, &[frame], &dir)
                .map_err(|e| e.to_string())
                .map(|d| d[0]);
            let _ = std::fs::remove_dir_all(&dir);
            digest
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The job of a check: frame `frame` of the scene, then the kernel from `seed`.
    fn job(&self, frame: u32, seed: &[u8; 16]) -> JobRequest {
        let spec = self.spec.clone().with_seed(cycles_seed(seed));
        let mut args = spec.blender_args(&[frame]);
        args.push("--python-expr".into());
        args.push(kernel_script(seed));
        JobRequest {
            command: "blender".into(),
            args,
            env: Vec::new(),
            files: JobFiles {
                image: None,
                image_blobs: Vec::new(),
                inputs: vec![(self.spec.scene.cid(), render::spec::SCENE_PATH.into())],
            },
            network: false,
        }
    }

    /// The frame and seed of a check job this kit made; `None` for any other job.
    fn parse(&self, job: &ledger::store::Job) -> Option<(u32, [u8; 16])> {
        let frame: u32 = job
            .args
            .iter()
            .position(|a| a == "-f")
            .and_then(|i| job.args.get(i + 1))?
            .parse()
            .ok()?;
        let script = job.args.last()?;
        let hex = script.split("bytes.fromhex('").nth(1)?.get(..32)?;
        let mut seed = [0u8; 16];
        hex::decode_to_slice(hex, &mut seed).ok()?;
        job.is(&self.job(frame, &seed)).then_some((frame, seed))
    }
}

/// Cycles' noise seed of a check: from its seed, so the frame's pixels are new each time.
fn cycles_seed(seed: &[u8; 16]) -> u32 {
    u32::from_le_bytes([seed[0], seed[1], seed[2], seed[3]]) & 0x7fff_ffff
}

fn scratch() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("gpumarket-checker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// The kernel as Blender's Python runs it after the frame.
fn kernel_script(seed: &[u8; 16]) -> String {
    format!(
        "import hashlib\n\
         d = bytes.fromhex('{}')\n\
         for _ in range({KERNEL_ROUNDS}):\n    d = hashlib.sha256(d).digest()\n\
         open('/job/out/{KERNEL_FILE}', 'w').write(d.hex())\n",
        hex::encode(seed)
    )
}

/// The kernel's answer, computed here.
fn kernel_answer(seed: &[u8; 16]) -> String {
    let mut d: Vec<u8> = seed.to_vec();
    for _ in 0..KERNEL_ROUNDS {
        d = Sha256::digest(&d).to_vec();
    }
    hex::encode(d)
}

/// Runs the checker until the API stops. Without Blender here the market cannot know a
/// frame's answer: it says so and checks nothing (and the nodes of its markets stay on
/// probation).
pub async fn drive(state: Arc<AppState>, config: CheckerConfig) {
    if !render::local::installed() {
        warn!("the checker needs Blender to know its answers (apt-get install --no-install-recommends blender): no checks");
        return;
    }
    let kit = loop {
        match Kit::prepare(&state, config.account).await {
            Ok(kit) => break kit,
            Err(e) => {
                warn!(error = %e, "preparing the checker's known answers; trying again");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    info!(scene = %kit.spec.scene.cid(), account = config.account.0, "checker ready");
    let mut tried: HashMap<(MarketId, NodeRef), Instant> = HashMap::new();
    let mut ticks = tokio::time::interval(config.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        if let Err(e) = round(&state, &config, &kit, &mut tried).await {
            warn!(error = %e.message, "a checker round");
        }
    }
}

/// One round: every running check moves on (its job given, its answer judged), then every
/// node that is due gets a check.
async fn round(
    state: &AppState,
    config: &CheckerConfig,
    kit: &Kit,
    tried: &mut HashMap<(MarketId, NodeRef), Instant>,
) -> Result<(), ApiError> {
    let running: Vec<(LeaseId, AccountId, MarketId, NodeRef)> = state
        .engine
        .replica()
        .leases()
        .filter(|l| l.buyer == config.account)
        .map(|l| {
            let node = NodeRef {
                provider: l.provider,
                node: l.node,
            };
            (l.id, l.provider, l.market, node)
        })
        .collect();
    let now = chrono::Utc::now().timestamp_millis();
    for (lease, provider, market, node) in &running {
        // One check's trouble (the store or the database not answering) holds up no other.
        match judge(state, config, kit, *lease, *provider, now).await {
            Ok(Some((passed, detail))) => {
                record(state, *lease, passed, &detail).await;
                info!(lease = lease.0, provider = node.provider.0, node = %node.node, %market, passed, %detail, "node checked");
            }
            Ok(None) => {}
            Err(e) => warn!(lease = lease.0, error = %e.message, "a check's answer"),
        }
    }
    let checking: std::collections::HashSet<(MarketId, NodeRef)> =
        running.iter().map(|r| (r.2, r.3)).collect();
    let markets = state.engine.replica().checked_by(config.account);
    for market in &markets {
        let nodes = state.engine.replica().checkable(*market);
        let market_id = *market;
        let last: HashMap<NodeRef, (bool, chrono::DateTime<chrono::Utc>)> = state
            .db(move |c| ledger::read::latest_checks(c, market_id))
            .await?
            .into_iter()
            .map(|c| {
                let node = NodeRef {
                    provider: c.provider,
                    node: c.node,
                };
                (node, (c.passed, c.at))
            })
            .collect();
        for (node, price, probation) in nodes {
            if checking.contains(&(*market, node))
                || tried
                    .get(&(*market, node))
                    .is_some_and(|t| t.elapsed() < config.every.max(Duration::from_secs(30)))
            {
                continue;
            }
            let age = |at: chrono::DateTime<chrono::Utc>| {
                (chrono::Utc::now() - at).to_std().unwrap_or_default()
            };
            // A passed node waits for its next check even while a post-only ask of it
            // stays on probation (a pass would have made it trade).
            let due = match last.get(&node) {
                None => probation,
                Some((true, at)) => age(*at) >= config.recheck_after,
                Some((false, at)) => age(*at) >= config.retry_failed_after,
            };
            if !due {
                continue;
            }
            if price > config.max_price {
                tried.insert((*market, node), Instant::now());
                warn!(provider = node.provider.0, node = %node.node, %market, %price, "a node's ask is dearer than a check pays: not checked");
                continue;
            }
            tried.insert((*market, node), Instant::now());
            buy(state, config, *market, node, price).await?;
        }
    }
    Ok(())
}

/// Where check `lease` stands: its job given if it has none yet (`None`), its answer
/// judged once sealed, or a failure once it cannot come.
async fn judge(
    state: &AppState,
    config: &CheckerConfig,
    kit: &Kit,
    lease: LeaseId,
    provider: AccountId,
    now: i64,
) -> Result<Option<(bool, String)>, ApiError> {
    let found = state.db(move |c| ledger::store::job(c, 0, lease)).await?;
    let Some(job) = found else {
        let mut seed = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut seed);
        let frame = 1 + rand_core::OsRng.next_u32() % kit.spec.frames.len();
        let request = kit.job(frame, &seed);
        let checker = config.account;
        state
            .db(move |c| ledger::store::submit_job(c, lease, checker, provider, &request))
            .await?;
        return Ok(None);
    };
    let Some((frame, seed)) = kit.parse(&job) else {
        // Only the loop gives the checker's leases their jobs, so this is nobody's verdict
        // on the provider: the lease ends as paid.
        warn!(
            lease = lease.0,
            "a checker lease runs a job that is not a check: stopped"
        );
        let stop = Command::StopLease {
            by: config.account,
            lease_id: lease,
        };
        let _ = state.engine.submit(stop).await;
        return Ok(None);
    };
    // From when the job was given, so an outage of the market's own is not the provider's.
    let late = now - job.submitted_at.timestamp_millis() > config.answer_within.as_millis() as i64;
    match (&job.output_manifest, &job.outcome) {
        (Some(manifest), _) => {
            let verdict = answer(state, kit, lease, manifest, frame, &seed).await?;
            Ok(Some(verdict))
        }
        (None, Some(outcome)) if outcome.starts_with("refused") || late => {
            Ok(Some((false, format!("no answer: the job {outcome}"))))
        }
        (None, _) if late => Ok(Some((
            false,
            format!("no answer within {} s", config.answer_within.as_secs()),
        ))),
        _ => Ok(None),
    }
}

/// Compares a sealed answer with what the market knows: the frame's pixels and the kernel's
/// result.
async fn answer(
    state: &AppState,
    kit: &Kit,
    lease: LeaseId,
    manifest_cid: &str,
    frame: u32,
    seed: &[u8; 16],
) -> Result<(bool, String), ApiError> {
    let store = blobs(state)?;
    let manifest = match read_blob(store, manifest_cid, 1 << 20).await? {
        Ok(bytes) => match serde_json::from_slice::<OutputManifest>(&bytes) {
            Ok(m) if m.lease == lease.0 => m,
            Ok(_) => return Ok((false, "the output manifest is another lease's".into())),
            Err(e) => return Ok((false, format!("the output manifest does not parse: {e}"))),
        },
        Err(e) => return Ok((false, e)),
    };
    let file = |name: &str| manifest.files.iter().find(|f| f.path == name).cloned();
    let frame_name = format!("frame_{frame:07}.png");
    let Some(picture) = file(&frame_name) else {
        return Ok((false, format!("no {frame_name}")));
    };
    let pixels = match read_blob(store, &picture.cid, 256 << 20).await? {
        Ok(bytes) => decode(bytes).await.map(|p| p.digest()),
        Err(e) => Err(e),
    };
    let expected = match kit.reference(frame, seed).await {
        Ok(digest) => digest,
        // The market not knowing its answer is nobody's failure: judged again next round.
        Err(e) => {
            return Err(ApiError::unavailable(format!(
                "the checker's reference render: {e}"
            )))
        }
    };
    match pixels {
        Ok(digest) if digest == expected => {}
        Ok(digest) => {
            return Ok((
                false,
                format!("frame {frame}: pixels {digest}, the reference is {expected}"),
            ))
        }
        Err(e) => return Ok((false, format!("frame {frame}: {e}"))),
    }
    let Some(kernel) = file(KERNEL_FILE) else {
        return Ok((false, format!("no {KERNEL_FILE}")));
    };
    let got = match read_blob(store, &kernel.cid, MAX_ANSWER_BYTES).await? {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(e) => return Ok((false, format!("{KERNEL_FILE}: {e}"))),
    };
    let want = {
        let seed = *seed;
        tokio::task::spawn_blocking(move || kernel_answer(&seed))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
    };
    if got != want {
        let shown: String = got.chars().take(64).collect();
        return Ok((false, format!("the kernel answered {shown:?}, not {want}")));
    }
    Ok((
        true,
        format!("frame {frame} matched its reference and the kernel its answer"),
    ))
}

/// The check's IOC bid for one GPU of `node` at its ask's price, for an hour (it is
/// stopped, and paid by the second, as soon as the answer is judged).
async fn buy(
    state: &AppState,
    config: &CheckerConfig,
    market: MarketId,
    node: NodeRef,
    price: contract::Price,
) -> Result<(), ApiError> {
    let hours = Hours::new(1).expect("one");
    let client_id = ClientOrderId(
        0x43u128 << 120
            | u128::from(chrono::Utc::now().timestamp_millis() as u64) << 32
            | u128::from(rand_core::OsRng.next_u32()),
    );
    let order = NewOrder {
        account: config.account,
        client_id,
        market,
        price,
        gpus: Gpus::new(1).expect("one"),
        tif: TimeInForce::Ioc,
        post_only: false,
        terms: OrderTerms::Bid(BidSpec::any(hours)),
    };
    let answer = state
        .engine
        .submit(Command::PlaceCheck { order, node })
        .await?;
    match events(answer) {
        Ok(events) => {
            let leased = events
                .iter()
                .any(|e| matches!(e, contract::Event::LeaseCreated { buyer, .. } if *buyer == config.account));
            info!(provider = node.provider.0, node = %node.node, %market, leased, "check bought");
        }
        Err(e) => {
            warn!(provider = node.provider.0, node = %node.node, code = %e.code.as_str(), "a check refused")
        }
    }
    Ok(())
}

/// Records a verdict, which ends the lease; one already ended is judged already.
async fn record(state: &AppState, lease_id: LeaseId, passed: bool, detail: &str) {
    let detail = FailureReason::new(detail)
        .unwrap_or_else(|_| FailureReason::new("no detail").expect("not empty"));
    let command = Command::RecordCheck {
        lease_id,
        passed,
        detail,
    };
    match state.engine.submit(command).await.map_err(ApiError::from) {
        Ok(answer) => {
            if let Err(e) = events(answer) {
                if !matches!(e.code, ErrorCode::LeaseEnded | ErrorCode::UnknownLease) {
                    warn!(lease = lease_id.0, code = %e.code.as_str(), "a check's verdict refused");
                }
            }
        }
        Err(e) => warn!(lease = lease_id.0, error = %e.message, "recording a check"),
    }
}
