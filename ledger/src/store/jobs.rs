//! `lease_jobs`: the job a lease's buyer gave, and the end of its log as the provider's
//! agent sent it.

use chrono::{DateTime, Utc};
use contract::{AccountId, LeaseId};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamptz};

use crate::read::param;
use crate::LedgerError;

/// What a buyer asks a lease to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRequest {
    pub command: String,
    pub args: Vec<String>,
    /// Environment variables in the order given.
    pub env: Vec<(String, String)>,
    pub files: JobFiles,
    /// The job asks to reach the network (granted only by a provider that offers it).
    pub network: bool,
}

/// A lease's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub command: String,
    pub args: Vec<String>,
    /// Environment variables in the order given.
    pub env: Vec<(String, String)>,
    pub submitted_at: DateTime<Utc>,
    /// The end of the job's output as the provider's agent last sent it.
    pub log_tail: String,
    /// How the job ended, e.g. `exited 0`.
    pub outcome: Option<String>,
    pub log_at: Option<DateTime<Utc>>,
    /// What it runs in and reads: see [`JobFiles`].
    pub files: JobFiles,
    /// It asks to reach the network.
    pub network: bool,
    /// What it wrote, as the node's signed report `report_sequence` named it: the manifest
    /// of its output files and its whole log, by cid.
    pub output_manifest: Option<String>,
    pub output_log: Option<String>,
    pub report_sequence: Option<u64>,
    /// The UUIDs of the GPUs it ran on, as that report named them.
    pub output_gpus: Vec<String>,
}

impl Job {
    /// Whether this is the job `request` asks for (what a retry must repeat exactly).
    pub fn is(&self, request: &JobRequest) -> bool {
        self.command == request.command
            && self.args == request.args
            && self.env == request.env
            && self.files == request.files
            && self.network == request.network
    }
}

/// A job's image and inputs, by cid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFiles {
    /// The OCI image manifest the job runs from (`None`: the provider's base system).
    pub image: Option<String>,
    /// The manifest, config and layers of the image: the provider may read these.
    pub image_blobs: Vec<String>,
    /// Each input's cid and its path under the job's `/job/in`.
    pub inputs: Vec<(String, String)>,
}

/// What submitting a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSubmitted {
    New,
    /// The same job again: a retry.
    Again,
    /// The lease has another job; a job is never replaced.
    Other,
}

/// What sending a job's log did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobLogged {
    Stored,
    /// No job for that lease on this provider.
    NoJob,
}

/// The job of a lease, if its buyer gave one. `partition` is the lease's events partition.
pub fn job(
    conn: &mut PgConnection,
    partition: i32,
    lease: LeaseId,
) -> Result<Option<Job>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        command: String,
        #[diesel(sql_type = Array<Text>)]
        args: Vec<String>,
        #[diesel(sql_type = Array<Text>)]
        env_names: Vec<String>,
        #[diesel(sql_type = Array<Text>)]
        env_values: Vec<String>,
        #[diesel(sql_type = Timestamptz)]
        submitted_at: DateTime<Utc>,
        #[diesel(sql_type = Text)]
        log_tail: String,
        #[diesel(sql_type = Nullable<Text>)]
        outcome: Option<String>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        log_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Text>)]
        image: Option<String>,
        #[diesel(sql_type = Array<Text>)]
        image_blobs: Vec<String>,
        #[diesel(sql_type = Array<Text>)]
        input_cids: Vec<String>,
        #[diesel(sql_type = Array<Text>)]
        input_paths: Vec<String>,
        #[diesel(sql_type = Nullable<Text>)]
        output_manifest: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        output_log: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        report_sequence: Option<i64>,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        network: bool,
        #[diesel(sql_type = Array<Text>)]
        output_gpus: Vec<String>,
    }
    let row: Option<Row> = diesel::sql_query(
        "SELECT command, args, env_names, env_values, submitted_at, log_tail, outcome, log_at, \
         image, image_blobs, input_cids, input_paths, output_manifest, output_log, \
         report_sequence, network, output_gpus FROM lease_jobs WHERE partition = $1 AND lease_id = $2",
    )
    .bind::<Integer, _>(partition)
    .bind::<BigInt, _>(param(lease.0)?)
    .get_result(conn)
    .optional()?;
    Ok(row.map(|r| Job {
        command: r.command,
        args: r.args,
        env: r.env_names.into_iter().zip(r.env_values).collect(),
        submitted_at: r.submitted_at,
        log_tail: r.log_tail,
        outcome: r.outcome,
        log_at: r.log_at,
        files: JobFiles {
            image: r.image,
            image_blobs: r.image_blobs,
            inputs: r.input_cids.into_iter().zip(r.input_paths).collect(),
        },
        network: r.network,
        output_manifest: r.output_manifest,
        output_log: r.output_log,
        report_sequence: r.report_sequence.and_then(|s| u64::try_from(s).ok()),
        output_gpus: r.output_gpus,
    }))
}

/// Stores a running lease's job, once: the same job again is a retry, another is refused.
pub fn submit_job(
    conn: &mut PgConnection,
    lease: LeaseId,
    buyer: AccountId,
    provider: AccountId,
    request: &JobRequest,
) -> Result<JobSubmitted, LedgerError> {
    let JobRequest {
        command,
        args,
        env,
        files,
        network,
    } = request;
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    let values: Vec<&str> = env.iter().map(|(_, v)| v.as_str()).collect();
    let input_cids: Vec<&str> = files.inputs.iter().map(|(c, _)| c.as_str()).collect();
    let input_paths: Vec<&str> = files.inputs.iter().map(|(_, p)| p.as_str()).collect();
    conn.transaction(|conn| {
        let inserted = diesel::sql_query(
            "INSERT INTO lease_jobs (partition, lease_id, buyer, provider, command, args, \
             env_names, env_values, image, image_blobs, input_cids, input_paths, network) \
             VALUES (0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
        )
        .bind::<BigInt, _>(param(lease.0)?)
        .bind::<BigInt, _>(param(buyer.0)?)
        .bind::<BigInt, _>(param(provider.0)?)
        .bind::<Text, _>(command)
        .bind::<Array<Text>, _>(args)
        .bind::<Array<Text>, _>(&names)
        .bind::<Array<Text>, _>(&values)
        .bind::<Nullable<Text>, _>(files.image.as_deref())
        .bind::<Array<Text>, _>(&files.image_blobs)
        .bind::<Array<Text>, _>(&input_cids)
        .bind::<Array<Text>, _>(&input_paths)
        .bind::<diesel::sql_types::Bool, _>(*network)
        .execute(conn)?;
        if inserted == 1 {
            return Ok(JobSubmitted::New);
        }
        let same = job(conn, 0, lease)?.is_some_and(|existing| existing.is(request));
        Ok(if same {
            JobSubmitted::Again
        } else {
            JobSubmitted::Other
        })
    })
}

/// Stores the end of a job's log and, once over, its outcome (an earlier outcome stays when
/// none is given).
pub fn job_log(
    conn: &mut PgConnection,
    lease: LeaseId,
    provider: AccountId,
    log_tail: &str,
    outcome: Option<&str>,
) -> Result<JobLogged, LedgerError> {
    let updated = diesel::sql_query(
        "UPDATE lease_jobs SET log_tail = $3, outcome = coalesce($4, outcome), log_at = now() \
         WHERE partition = 0 AND lease_id = $1 AND provider = $2",
    )
    .bind::<BigInt, _>(param(lease.0)?)
    .bind::<BigInt, _>(param(provider.0)?)
    .bind::<Text, _>(log_tail)
    .bind::<Nullable<Text>, _>(outcome)
    .execute(conn)?;
    Ok(if updated == 1 {
        JobLogged::Stored
    } else {
        JobLogged::NoJob
    })
}
