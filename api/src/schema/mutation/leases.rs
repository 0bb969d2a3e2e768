//! Ending leases, and the jobs that run on them.

use async_graphql::{Context, Object, ID};
use contract::image::{ImageManifest, MAX_MANIFEST_BYTES};
use contract::Digest;
use contract::{Command, FailureReason};
use ledger::store::{Access, JobFiles, JobLogged, JobSubmitted};

use crate::auth::Role;
use crate::errors::ApiError;
use crate::schema::answer::{events, lease_end, LeaseEndResult};
use crate::schema::input::{parse_digest, parse_lease_id};
use crate::schema::types::lease::{EnvVar, JobInput};
use crate::schema::{principal, state};

/// The most of a job's log the provider sends: its end.
const MAX_TAIL: usize = 48 << 10;

#[derive(Debug, Default)]
pub struct LeaseMutation;

#[Object]
impl LeaseMutation {
    /// Stops a running lease the caller bought or provided; nobody states hours. The buyer
    /// stopping it is charged to now and refunded the rest. The provider stopping it is a
    /// provider failure: charged only to the last heartbeat of its node that showed it
    /// healthy, the rest refunded (and re-bid when the bid asked for it). Another account's
    /// lease is `NOT_LEASE_PARTY`, an ended one `LEASE_ENDED`; neither changes anything.
    async fn end_lease(
        &self,
        ctx: &Context<'_>,
        lease_id: ID,
    ) -> async_graphql::Result<LeaseEndResult> {
        let p = principal(ctx)?;
        p.require(&[Role::Trader, Role::Provider], "ending a lease")?;
        let lease_id = parse_lease_id(&lease_id)?;
        let answer = state(ctx)
            .engine
            .submit(Command::StopLease {
                by: p.own_account()?,
                lease_id,
            })
            .await?;
        Ok(lease_end(lease_id, &events(answer)?)?)
    }

    /// Ends a running lease as the operator (admin), charged to now, with the reason its
    /// `closeDetail` shows.
    async fn admin_end_lease(
        &self,
        ctx: &Context<'_>,
        lease_id: ID,
        reason: String,
    ) -> async_graphql::Result<LeaseEndResult> {
        principal(ctx)?.require(&[Role::Admin], "ending a lease as the operator")?;
        let lease_id = parse_lease_id(&lease_id)?;
        // The reason is stored as text: a NUL would stop the projection that writes it.
        if reason.chars().any(char::is_control) {
            return Err(ApiError::validation("reason: no control characters").into());
        }
        let reason = FailureReason::new(&reason)
            .map_err(|e| ApiError::validation(format!("reason: {e}")))?;
        let answer = state(ctx)
            .engine
            .submit(Command::AdminEndLease { lease_id, reason })
            .await?;
        Ok(lease_end(lease_id, &events(answer)?)?)
    }

    /// Gives a running lease the job to run (the lease's buyer, once; the same job again is
    /// accepted as a retry). The provider's agent runs it on the leased GPUs, sandboxed:
    /// from `image` (the cid of an OCI image manifest whose config and layers the buyer
    /// uploaded; none: the provider's base system, read-only), with each of `inputs` at
    /// `/job/in/<path>` (blobs the buyer holds, fetched and verified by digest before the
    /// job starts), writing what it leaves in `/job/out` back to the store, by digest, for
    /// the buyer.
    #[allow(clippy::too_many_arguments)]
    async fn submit_job(
        &self,
        ctx: &Context<'_>,
        lease_id: ID,
        command: String,
        #[graphql(default)] args: Vec<String>,
        #[graphql(default)] env: Vec<EnvVar>,
        image: Option<String>,
        #[graphql(default)] inputs: Vec<JobInput>,
        #[graphql(
            default,
            desc = "The job may reach the network; a provider whose agent does not offer that refuses the job (its outcome says so)."
        )]
        network: bool,
    ) -> async_graphql::Result<bool> {
        let p = principal(ctx)?;
        p.require(&[Role::Trader], "submitting a job")?;
        let buyer = p.own_account()?;
        let lease = parse_lease_id(&lease_id)?;
        if command.is_empty() || command.len() > 4_096 {
            return Err(ApiError::validation("command: 1 to 4096 bytes").into());
        }
        if args.len() > 256 || env.len() > 256 {
            return Err(ApiError::validation("at most 256 arguments and 256 variables").into());
        }
        for var in &env {
            let valid = !var.name.is_empty()
                && !var.name.starts_with(|c: char| c.is_ascii_digit())
                && var
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(ApiError::validation(format!(
                    "env: {:?} is not a variable name",
                    var.name
                ))
                .into());
            }
            if var.name.ends_with("VISIBLE_DEVICES")
                || var.name.starts_with("GPUMARKET_")
                || var.name.starts_with("NVIDIA_")
            {
                return Err(
                    ApiError::validation(format!("env: {} is set by the agent", var.name)).into(),
                );
            }
        }
        let provider = {
            let engine = state(ctx).engine.replica();
            let lease = engine
                .lease(lease)
                .ok_or_else(|| ApiError::not_found(format!("no running lease {}", lease.0)))?;
            if lease.buyer != buyer {
                return Err(ApiError::forbidden("the lease is another account's").into());
            }
            lease.provider
        };
        let files = job_files(ctx, buyer, image, inputs).await?;
        let job = ledger::store::JobRequest {
            command,
            args,
            env: env.into_iter().map(|v| (v.name, v.value)).collect(),
            files,
            network,
        };
        let submitted = state(ctx)
            .db(move |c| ledger::store::submit_job(c, lease, buyer, provider, &job))
            .await?;
        match submitted {
            JobSubmitted::New | JobSubmitted::Again => Ok(true),
            JobSubmitted::Other => Err(ApiError::validation(
                "the lease has another job already; a job is never replaced",
            )
            .into()),
        }
    }

    /// The provider's agent sends the end of a job's output and, once over, how it ended;
    /// the lease's buyer reads them on the lease's `job`.
    async fn submit_job_log(
        &self,
        ctx: &Context<'_>,
        lease_id: ID,
        log_tail: String,
        outcome: Option<String>,
    ) -> async_graphql::Result<bool> {
        let p = principal(ctx)?;
        p.require(&[Role::Provider], "sending a job's log")?;
        let provider = p.own_account()?;
        let lease = parse_lease_id(&lease_id)?;
        if log_tail.len() > MAX_TAIL || outcome.as_ref().is_some_and(|o| o.len() > 1_024) {
            return Err(ApiError::validation(format!(
                "logTail: at most {MAX_TAIL} bytes; outcome: at most 1024"
            ))
            .into());
        }
        let logged = state(ctx)
            .db(move |c| ledger::store::job_log(c, lease, provider, &log_tail, outcome.as_deref()))
            .await?;
        match logged {
            JobLogged::Stored => Ok(true),
            JobLogged::NoJob => Err(ApiError::not_found(format!(
                "no job for lease {} on this provider's nodes",
                lease.0
            ))
            .into()),
        }
    }
}

/// Checks a job's image and inputs: every blob the buyer's own, the image a valid OCI
/// manifest whose config and layers the buyer holds too, the paths relative and distinct.
async fn job_files(
    ctx: &Context<'_>,
    buyer: contract::AccountId,
    image: Option<String>,
    inputs: Vec<JobInput>,
) -> Result<JobFiles, ApiError> {
    if inputs.len() > 256 {
        return Err(ApiError::validation("inputs: at most 256"));
    }
    let mut paths = std::collections::BTreeSet::new();
    let mut files = JobFiles::default();
    for input in inputs {
        let digest = parse_digest(&input.cid)?;
        if !contract::is_relative_path(&input.path) {
            return Err(ApiError::validation(format!(
                "inputs: {:?} is not a relative path (no `..`, `.`, empty parts or leading `/`)",
                input.path
            )));
        }
        if !paths.insert(input.path.clone()) {
            return Err(ApiError::validation(format!(
                "inputs: {:?} is named twice",
                input.path
            )));
        }
        files.inputs.push((digest.cid(), input.path));
    }
    let mut held: Vec<Digest> = files
        .inputs
        .iter()
        .map(|(cid, _)| Digest::parse(cid).expect("parsed above"))
        .collect();
    if let Some(image) = image {
        let manifest = parse_digest(&image)?;
        require_held(ctx, buyer, &[manifest]).await?;
        let store = state(ctx)
            .config
            .blobs
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("this market keeps no blob store"))?;
        let size = store.size(manifest).await.map_err(|e| {
            tracing::error!(error = %e, "reading the blob store");
            ApiError::unavailable("the blob store is not reachable; retry")
        })?;
        if size.is_none_or(|s| s > MAX_MANIFEST_BYTES) {
            return Err(ApiError::validation(format!(
                "image: {manifest} is not an image manifest (at most {MAX_MANIFEST_BYTES} bytes)"
            )));
        }
        let bytes = store.read(manifest).await.map_err(|e| {
            tracing::error!(error = %e, "reading the blob store");
            ApiError::unavailable("the blob store is not reachable; retry")
        })?;
        let parsed = ImageManifest::parse(&bytes)
            .map_err(|e| ApiError::validation(format!("image: {e}")))?;
        let parts = parsed
            .blobs()
            .map_err(|e| ApiError::validation(format!("image: {e}")))?;
        files.image = Some(manifest.cid());
        files.image_blobs = std::iter::once(manifest)
            .chain(parts.iter().copied())
            .map(|d| d.cid())
            .collect();
        held.extend(parts);
    }
    require_held(ctx, buyer, &held).await?;
    Ok(files)
}

/// Every one of `digests` is a blob `account` holds: else `NOT_FOUND` (nobody stored it) or
/// `FORBIDDEN` (another account's).
pub(crate) async fn require_held(
    ctx: &Context<'_>,
    account: contract::AccountId,
    digests: &[Digest],
) -> Result<(), ApiError> {
    let cids: Vec<String> = digests.iter().map(Digest::cid).collect();
    state(ctx)
        .db(move |c| -> Result<(), ApiError> {
            for cid in &cids {
                match ledger::store::access(c, account, cid)? {
                    Access::Owner => {}
                    Access::Unknown => return Err(ApiError::not_found(format!("no blob {cid}"))),
                    _ => {
                        return Err(ApiError::forbidden(format!(
                            "blob {cid} is another account's"
                        )))
                    }
                }
            }
            Ok(())
        })
        .await
}
