//! The demo's render buyer and checker: where Blender is installed, the render farm's market
//! (`demo::RENDER_MARKET`) gets a checker (account [`CHECKER`], which the API's checker loop
//! acts as), so none of its three providers sells before it passed a known-answer job, and
//! the one that spoils every frame never does. The buyer makes the demo's 24-frame animation
//! (`render::spec::DEMO_SCENE`), uploads it, and submits one render job; the market splits it
//! into frame tasks on the providers that passed, checks a share of them on each other, and
//! the buyer logs the job's progress until it is done. Where Blender is absent the demo says
//! how to install it and runs without render jobs or checks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use api_client::mutations::{
    AppointChecker, AppointCheckerVariables, CreditDeposit, CreditDepositVariables,
    SubmitRenderJob, SubmitRenderJobVariables,
};
use api_client::queries::{BalanceQuery, RenderJobQuery, RenderJobVariables};
use api_client::types::{RenderJob, RenderJobInput, RenderStatus};
use api_client::{Client, Id, MutationBuilder, QueryBuilder};
use rust_decimal::Decimal;
use tracing::{info, warn};

use crate::common::key_file;

/// The render buyer's account.
const BUYER: u64 = 4;
/// The account the API checks the render farm's nodes as: none sells before it passed a
/// known-answer job, so the farm's liar is caught before its first sale.
pub const CHECKER: u64 = 5;
/// Its job's name: a restarted demo finds the job it submitted before.
pub const CLIENT_JOB_ID: &str = "demo-film";

pub struct Buyer {
    client: Client,
    scene: PathBuf,
}

/// The render buyer, funded and with its key, and the farm's checker appointed and funded;
/// `None` (said why) where Blender is absent.
pub fn buyer(db: &str, demo: &Path, admin: &Client, url: &str) -> Result<Option<Buyer>> {
    if !render::local::installed() {
        info!(
            "no Blender: the demo runs without render jobs; \
             `apt-get install --no-install-recommends blender` adds them"
        );
        return Ok(None);
    }
    let key = key_file(
        db,
        &demo.join("render-buyer.key"),
        api::auth::Role::Trader,
        Some(BUYER),
        "demo render buyer",
    )
    .context("demo render buyer")?;
    let client = Client::new(url, &key);
    let balance = client
        .run(&BalanceQuery::build(()))
        .context("demo render buyer: reading its balance")?;
    if balance.balance.available < Decimal::from(100) {
        admin.run(&CreditDeposit::build(CreditDepositVariables {
            account: Id::new(BUYER.to_string()),
            amount: "1000".to_owned(),
            idempotency_key: None,
        }))?;
    }
    // The checker pays for its leases like any buyer: funded once (an idempotent credit).
    admin
        .run(&CreditDeposit::build(CreditDepositVariables {
            account: Id::new(CHECKER.to_string()),
            amount: "100".to_owned(),
            idempotency_key: Some("1".to_owned()),
        }))
        .context("funding the demo's checker")?;
    admin
        .run(&AppointChecker::build(AppointCheckerVariables {
            market: crate::demo::RENDER_MARKET.to_owned(),
            account: Id::new(CHECKER.to_string()),
        }))
        .context("appointing the demo's checker")?;
    Ok(Some(Buyer {
        client,
        scene: demo.join("scene.blend"),
    }))
}

impl Buyer {
    /// Submits the job (once: the same client job id answers the same job) and logs its
    /// progress until it is done, then waits for the demo to stop.
    pub fn run(self, stop: &AtomicBool) -> Result<()> {
        if !self.scene.exists() {
            info!("demo render buyer: making the demo scene with Blender");
            render::local::make_demo_scene(&self.scene).context("making the demo scene")?;
        }
        let scene = self
            .client
            .put_blob(std::fs::read(&self.scene)?.into(), None, None)
            .context("uploading the demo scene")?;
        let submitted = self
            .client
            .run(&SubmitRenderJob::build(SubmitRenderJobVariables {
                input: RenderJobInput {
                    client_job_id: CLIENT_JOB_ID.to_owned(),
                    scene: scene.cid,
                    frame_start: 1,
                    frame_end: 24,
                    engine_version: "3.4".to_owned(),
                    market: crate::demo::RENDER_MARKET.to_owned(),
                    limit_price: "1.50".to_owned(),
                    budget: "60".to_owned(),
                    frame_seconds: 60,
                    check_share: None,
                    frames_per_task: Some(4),
                    review_seconds: Some(10),
                    check_within_seconds: None,
                },
            }))
            .context("submitting the demo render job")?
            .submit_render_job;
        info!(
            job = %submitted.id.inner(),
            frames = submitted.progress.frames,
            market = crate::demo::RENDER_MARKET,
            "demo render job submitted: 24 frames across the render farm, one of whose providers lies"
        );
        let mut last: Option<RenderJob> = None;
        while !stop.load(Ordering::Relaxed) {
            let seen = self.client.run(&RenderJobQuery::build(RenderJobVariables {
                id: submitted.id.clone(),
            }));
            match seen {
                Ok(q) if last.as_ref() != Some(&q.render_job) => {
                    let job = q.render_job;
                    let p = &job.progress;
                    info!(
                        job = %job.id.inner(),
                        accepted = p.accepted,
                        delivered = p.delivered,
                        checking = p.checking,
                        rendering = p.rendering,
                        failed = p.failed,
                        of = p.frames,
                        "demo render job"
                    );
                    for v in job
                        .verdicts
                        .iter()
                        .skip(last.as_ref().map_or(0, |l| l.verdicts.len()))
                    {
                        info!(
                            provider = %v.provider.inner(),
                            frame = v.frame,
                            reason = %v.reason,
                            "demo render job: a provider failed verification"
                        );
                    }
                    if job.status == RenderStatus::Done {
                        info!(job = %job.id.inner(), "demo render job done: its manifest is in `renderJob`");
                    }
                    last = Some(job);
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "demo render buyer: reading its job"),
            }
            if last
                .as_ref()
                .is_some_and(|j| j.status == RenderStatus::Done)
            {
                break;
            }
            crate::demo::sleep_unless(stop, Duration::from_secs(2));
        }
        while !stop.load(Ordering::Relaxed) {
            crate::demo::sleep_unless(stop, Duration::from_secs(1));
        }
        Ok(())
    }
}
