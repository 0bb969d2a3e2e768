//! Leases and their jobs.

use async_graphql::{ComplexObject, Context, Enum, InputObject, SimpleObject};
use chrono::{DateTime, Utc};
use contract::LeaseId;
use ledger::read::Key;
use rust_decimal::Decimal;

use crate::errors::ApiError;
use crate::schema::state;

/// Which side of its leases an account lists (`ledger::read::LeaseRole`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "ledger::read::LeaseRole")]
pub enum LeaseRole {
    Buyer,
    Provider,
    Either,
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Lease {
    #[graphql(skip)]
    pub key: Key,
    pub id: u64,
    pub market: String,
    pub buyer: u64,
    pub provider: u64,
    pub node: String,
    pub region: String,
    pub gpus: u32,
    pub price: Decimal,
    pub hours: u32,
    pub cost: Decimal,
    /// `created`, `running` or `ended`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// The end of its term (`createdAt` + `hours`): the engine ends it then, and the
    /// provider's agent kills its job then.
    pub ends_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub hours_used: Option<Decimal>,
    pub charged: Option<Decimal>,
    pub provider_earned: Option<Decimal>,
    pub end_reason: Option<String>,
    /// The bid it filled: for a re-bid's lease, the order a failed lease placed.
    pub bid_order: u64,
    /// Why it closed, as the engine judged it: `term_reached`, `buyer_stopped`,
    /// `provider_stopped`, `node_silent`, `unhealthy`, `not_acknowledged` or `operator`.
    pub close_cause: Option<String>,
    /// What the cause rests on: the silent node's last heartbeat (RFC 3339), the sequence
    /// number of the report that did not show it healthy, or the operator's reason.
    pub close_detail: Option<String>,
    /// It is charged up to here (its end, or, after a provider failure, the last heartbeat
    /// that showed it healthy).
    pub charged_until: Option<DateTime<Utc>>,
    pub charged_ms: Option<u64>,
    /// The order its provider failure placed for its unused hours (its bid asked to
    /// re-bid); that order's `rebidOf` is this lease.
    pub rebid_order: Option<u64>,
    /// Why the re-bid its failure asked for was refused (e.g. `INSUFFICIENT_FUNDS`).
    pub rebid_refused: Option<String>,
    /// Its buyer stopped it holding the payment for review (a render job's leases wait so
    /// for their frames' checks): paid by then at the latest, earlier when the buyer
    /// releases it, and not at all where the market rejects the work (a slashed provider
    /// failure). `charged` is set once it is paid.
    pub payment_held_until: Option<DateTime<Utc>>,
}

impl From<ledger::read::Lease> for Lease {
    fn from(l: ledger::read::Lease) -> Lease {
        Lease {
            key: l.key,
            id: l.id.0,
            market: l.market.to_string(),
            buyer: l.buyer.0,
            provider: l.provider.0,
            node: l.node.to_string(),
            region: l.region.to_string(),
            gpus: l.gpus,
            price: l.price,
            hours: l.hours,
            cost: l.cost,
            status: l.state.as_str().to_owned(),
            created_at: l.created_at,
            ends_at: l.created_at + chrono::Duration::hours(i64::from(l.hours)),
            started_at: l.started_at,
            ended_at: l.ended_at,
            hours_used: l.hours_used,
            charged: l.charged,
            provider_earned: l.provider_earned,
            end_reason: l.end_reason.map(|r| r.as_str().to_owned()),
            bid_order: l.bid_order.0,
            close_cause: l.close_cause,
            close_detail: l.close_detail,
            charged_until: l.charged_until,
            charged_ms: l.charged_ms,
            rebid_order: l.rebid_order.map(|o| o.0),
            rebid_refused: l.rebid_refused.map(|c| c.as_str().to_owned()),
            payment_held_until: l.payment_held_until,
        }
    }
}

#[ComplexObject]
impl Lease {
    /// The job its buyer submitted, if any (only the buyer and the provider see leases).
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn job(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Job>> {
        let (partition, lease) = (self.key.partition, LeaseId(self.id));
        let job = state(ctx)
            .db(move |c| ledger::store::job(c, partition, lease))
            .await?;
        Ok(job.map(|j| Job::of(lease.0, j)))
    }

    /// This lease and every lease its provider failures' re-bids filled, nearest first:
    /// lease → failure → re-bid order → new lease → ...
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn rebid_chain(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ChainLink>> {
        let key = self.key;
        let chain = state(ctx)
            .db(move |c| ledger::read::rebid_chain(c, key))
            .await?;
        Ok(chain.into_iter().map(ChainLink::from).collect())
    }
}

/// One lease of a re-bid chain.
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct ChainLink {
    pub lease_id: u64,
    /// The order it filled.
    pub bid_order: u64,
    /// 0 for the lease asked about, one more for each re-bid on the way to this one.
    pub depth: u32,
    pub status: String,
    pub close_cause: Option<String>,
    /// The order its failure placed.
    pub rebid_order: Option<u64>,
    pub rebid_refused: Option<String>,
}

impl From<ledger::read::ChainLease> for ChainLink {
    fn from(l: ledger::read::ChainLease) -> ChainLink {
        ChainLink {
            lease_id: l.lease.0,
            bid_order: l.bid_order.0,
            depth: l.depth,
            status: l.state.as_str().to_owned(),
            close_cause: l.close_cause,
            rebid_order: l.rebid_order.map(|o| o.0),
            rebid_refused: l.rebid_refused.map(|c| c.as_str().to_owned()),
        }
    }
}

/// A job for a lease, as its buyer submitted it, and what it wrote.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Job {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    /// The cid of the OCI image manifest it runs from; null: the provider's base system.
    pub image: Option<String>,
    /// Its inputs, each at `/job/in/<path>` in its sandbox.
    pub inputs: Vec<JobInput>,
    /// It asked to reach the network; without, its sandbox has none.
    pub network: bool,
    pub submitted_at: DateTime<Utc>,
    /// The end of the job's output (at most 48 KiB) as the provider's agent last sent it;
    /// bytes that are not UTF-8, NUL and other control characters but tab and newline
    /// appear escaped (`\xNN`). The whole log is the blob `outputLog`.
    pub log_tail: String,
    /// How the job ended, e.g. `exited 0` or `killed: the lease's time ran out`.
    pub outcome: Option<String>,
    pub log_at: Option<DateTime<Utc>>,
    /// The cid of its output manifest (path → cid, size of each file it left in
    /// `/job/out`), as the node's signed report `reportSequence` named it.
    pub output_manifest: Option<String>,
    /// The cid of its whole log, byte for byte.
    pub output_log: Option<String>,
    /// The node's signed report that named the outputs (its heartbeat is in the log, with
    /// the signature: anyone can check which node, which GPUs, when).
    pub report_sequence: Option<u64>,
    #[graphql(skip)]
    lease: u64,
}

/// One of a job's inputs.
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject, InputObject)]
#[graphql(input_name = "JobInputInput")]
pub struct JobInput {
    /// The blob (CIDv1, or `sha256:<hex>` when given).
    pub cid: String,
    /// Where the job finds it, under `/job/in/`: relative, no `..`.
    pub path: String,
}

/// A file a job wrote.
#[derive(Debug, Clone, SimpleObject)]
pub struct OutputFile {
    /// Relative to the job's `/job/out`.
    pub path: String,
    pub cid: String,
    pub size: u64,
    /// `GET` it with the buyer's key.
    pub download_path: String,
}

#[ComplexObject]
impl Job {
    /// The files of its output manifest (read from the store); empty until the node's
    /// signed report named them.
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn outputs(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<OutputFile>> {
        let Some(cid) = &self.output_manifest else {
            return Ok(Vec::new());
        };
        let store = state(ctx)
            .config
            .blobs
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("this market keeps no blob store"))?;
        let digest = contract::Digest::parse(cid).map_err(|e| ApiError::internal(e.to_string()))?;
        let bytes = store.read(digest).await.map_err(|e| {
            tracing::error!(error = %e, %cid, "reading an output manifest");
            ApiError::unavailable("the blob store is not reachable; retry")
        })?;
        let manifest: contract::OutputManifest = serde_json::from_slice(&bytes)
            .ok()
            .filter(|m: &contract::OutputManifest| m.lease == self.lease)
            .ok_or_else(|| {
                ApiError::internal(format!("{cid} is not lease {}'s manifest", self.lease))
            })?;
        Ok(manifest
            .files
            .into_iter()
            .map(|f| OutputFile {
                download_path: format!("/blobs/{}", f.cid),
                path: f.path,
                cid: f.cid,
                size: f.size,
            })
            .collect())
    }
}

impl Job {
    pub fn of(lease: u64, j: ledger::store::Job) -> Job {
        Job {
            command: j.command,
            args: j.args,
            env: j
                .env
                .into_iter()
                .map(|(name, value)| EnvVar { name, value })
                .collect(),
            image: j.files.image,
            inputs: j
                .files
                .inputs
                .into_iter()
                .map(|(cid, path)| JobInput { cid, path })
                .collect(),
            network: j.network,
            submitted_at: j.submitted_at,
            log_tail: j.log_tail,
            outcome: j.outcome,
            log_at: j.log_at,
            output_manifest: j.output_manifest,
            output_log: j.output_log,
            report_sequence: j.report_sequence,
            lease,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, SimpleObject, InputObject)]
#[graphql(input_name = "EnvVarInput")]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}
