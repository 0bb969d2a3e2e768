//! `blobs`, `blob_refs` and `blob_quotas`: which blobs the store holds, who holds each, and
//! how much each account may hold. The bytes are the blob store's; a row here is written
//! only after the store has the whole object under its digest.

use chrono::{DateTime, Utc};
use contract::{AccountId, LeaseId};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamptz};

use crate::read::param;
use crate::LedgerError;

/// Why an account holds a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// It uploaded it.
    Upload,
    /// A job on its lease wrote it (uploaded by the provider's agent).
    Output(LeaseId),
}

/// What adding a reference did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefAdded {
    New,
    /// The account held the blob already: nothing counted twice.
    Again,
    /// The blob's bytes are being removed (its last hold went): nothing changed; the
    /// upload is to be sent again once they are gone.
    Deleting,
    /// It would take the account's references over its quota: nothing changed.
    OverQuota {
        max_bytes: u64,
        used: u64,
    },
}

/// One of an account's blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    pub cid: String,
    pub size: u64,
    pub kind: BlobKind,
    pub created_at: DateTime<Utc>,
}

/// How much an account may hold, and holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub max_bytes: u64,
    pub used: u64,
    /// Days its blobs are kept; `None`: until deleted.
    pub retention_days: Option<u32>,
}

/// Who may read a blob, as far as the ledger knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No such blob.
    Unknown,
    /// The account holds it.
    Owner,
    /// The account is the provider of these leases, whose jobs name the blob (as an input
    /// or a part of their image): readable while one of them runs.
    JobInput(Vec<LeaseId>),
    /// It exists and is not the account's.
    None,
}

fn size(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The account's quota: its own row, else `default_max` bytes kept until deleted.
pub fn quota(
    conn: &mut PgConnection,
    owner: AccountId,
    default_max: u64,
) -> Result<Quota, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<BigInt>)]
        max_bytes: Option<i64>,
        #[diesel(sql_type = Nullable<Integer>)]
        retention_days: Option<i32>,
        #[diesel(sql_type = BigInt)]
        used: i64,
    }
    let row: Row = diesel::sql_query(
        "SELECT q.max_bytes, q.retention_days, \
                (SELECT coalesce(sum(b.size), 0)::bigint FROM blob_refs r \
                 JOIN blobs b USING (cid) WHERE r.owner = $1) AS used \
         FROM (SELECT 1) one LEFT JOIN blob_quotas q ON q.owner = $1",
    )
    .bind::<BigInt, _>(param(owner.0)?)
    .get_result(conn)?;
    Ok(Quota {
        max_bytes: row.max_bytes.map_or(default_max, size),
        used: size(row.used),
        retention_days: row.retention_days.and_then(|d| u32::try_from(d).ok()),
    })
}

/// Every account that holds blobs, with the bytes it holds, by account.
pub fn held_bytes(conn: &mut PgConnection) -> Result<Vec<(AccountId, u64)>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        owner: i64,
        #[diesel(sql_type = BigInt)]
        bytes: i64,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT r.owner, sum(b.size)::bigint AS bytes FROM blob_refs r JOIN blobs b USING (cid) \
         GROUP BY r.owner ORDER BY r.owner",
    )
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| (AccountId(size(r.owner)), size(r.bytes)))
        .collect())
}

/// Sets an account's quota (`None`: the market's default) and retention (`None`: kept until
/// deleted).
pub fn set_quota(
    conn: &mut PgConnection,
    owner: AccountId,
    max_bytes: Option<u64>,
    retention_days: Option<u32>,
) -> Result<(), LedgerError> {
    diesel::sql_query(
        "INSERT INTO blob_quotas (owner, max_bytes, retention_days) VALUES ($1, $2, $3) \
         ON CONFLICT (owner) DO UPDATE SET max_bytes = $2, retention_days = $3",
    )
    .bind::<BigInt, _>(param(owner.0)?)
    .bind::<Nullable<BigInt>, _>(max_bytes.map(param).transpose()?)
    .bind::<Nullable<Integer>, _>(retention_days.map(|d| i32::try_from(d).unwrap_or(i32::MAX)))
    .execute(conn)?;
    Ok(())
}

/// Records that the store holds `cid` (`size` bytes) and that `owner` holds it, unless that
/// would take the owner over its quota. One owner's additions are serialized (an advisory
/// lock on the account), so two uploads at once cannot both squeeze under the quota.
pub fn add_ref(
    conn: &mut PgConnection,
    owner: AccountId,
    cid: &str,
    bytes: u64,
    kind: BlobKind,
    default_max: u64,
) -> Result<RefAdded, LedgerError> {
    conn.transaction(|conn| {
        // Two-key form, first key 7718 ("blob quota"): apart from any other advisory lock.
        diesel::sql_query("SELECT pg_advisory_xact_lock(7718, hashint8($1))")
            .bind::<BigInt, _>(param(owner.0)?)
            .execute(conn)?;
        #[derive(QueryableByName)]
        struct Held {
            #[diesel(sql_type = Bool)]
            held: bool,
        }
        let held: Held = diesel::sql_query(
            "SELECT EXISTS (SELECT 1 FROM blob_refs WHERE owner = $1 AND cid = $2) AS held",
        )
        .bind::<BigInt, _>(param(owner.0)?)
        .bind::<Text, _>(cid)
        .get_result(conn)?;
        if held.held {
            return Ok(RefAdded::Again);
        }
        lock_cid(conn, cid)?;
        #[derive(QueryableByName)]
        struct Deleting {
            #[diesel(sql_type = Bool)]
            deleting: bool,
        }
        let deleting: Option<Deleting> =
            diesel::sql_query("SELECT deleting FROM blobs WHERE cid = $1")
                .bind::<Text, _>(cid)
                .get_result(conn)
                .optional()?;
        if deleting.is_some_and(|d| d.deleting) {
            return Ok(RefAdded::Deleting);
        }
        let q = quota(conn, owner, default_max)?;
        if q.used.saturating_add(bytes) > q.max_bytes {
            return Ok(RefAdded::OverQuota {
                max_bytes: q.max_bytes,
                used: q.used,
            });
        }
        diesel::sql_query("INSERT INTO blobs (cid, size) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind::<Text, _>(cid)
            .bind::<BigInt, _>(param(bytes)?)
            .execute(conn)?;
        let (kind, lease) = match kind {
            BlobKind::Upload => ("upload", None),
            BlobKind::Output(lease) => ("output", Some(param(lease.0)?)),
        };
        diesel::sql_query(
            "INSERT INTO blob_refs (owner, cid, kind, lease_id) VALUES ($1, $2, $3, $4)",
        )
        .bind::<BigInt, _>(param(owner.0)?)
        .bind::<Text, _>(cid)
        .bind::<Text, _>(kind)
        .bind::<Nullable<BigInt>, _>(lease)
        .execute(conn)?;
        Ok(RefAdded::New)
    })
}

/// The blob's size, if the ledger knows it.
pub fn blob_size(conn: &mut PgConnection, cid: &str) -> Result<Option<u64>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        size: i64,
    }
    let row: Option<Row> =
        diesel::sql_query("SELECT size FROM blobs WHERE cid = $1 AND NOT deleting")
            .bind::<Text, _>(cid)
            .get_result(conn)
            .optional()?;
    Ok(row.map(|r| size(r.size)))
}

/// May `account` read `cid`?
pub fn access(
    conn: &mut PgConnection,
    account: AccountId,
    cid: &str,
) -> Result<Access, LedgerError> {
    if blob_size(conn, cid)?.is_none() {
        return Ok(Access::Unknown);
    }
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bool)]
        owner: bool,
        #[diesel(sql_type = diesel::sql_types::Array<BigInt>)]
        leases: Vec<i64>,
    }
    let row: Row = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM blob_refs WHERE owner = $1 AND cid = $2) AS owner, \
                ARRAY(SELECT lease_id FROM lease_jobs WHERE provider = $1 \
                      AND ($2 = ANY (input_cids) OR $2 = ANY (image_blobs)) \
                      ORDER BY lease_id) AS leases",
    )
    .bind::<BigInt, _>(param(account.0)?)
    .bind::<Text, _>(cid)
    .get_result(conn)?;
    Ok(if row.owner {
        Access::Owner
    } else if !row.leases.is_empty() {
        Access::JobInput(row.leases.into_iter().map(|l| LeaseId(size(l))).collect())
    } else {
        Access::None
    })
}

/// The account's blobs, newest first, `first` of them after the cid `after` (in that order).
pub fn blobs(
    conn: &mut PgConnection,
    owner: AccountId,
    after: Option<&str>,
    first: u32,
) -> Result<Vec<BlobRow>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        cid: String,
        #[diesel(sql_type = BigInt)]
        size: i64,
        #[diesel(sql_type = Text)]
        kind: String,
        #[diesel(sql_type = Nullable<BigInt>)]
        lease_id: Option<i64>,
        #[diesel(sql_type = Timestamptz)]
        created_at: DateTime<Utc>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT r.cid, b.size, r.kind, r.lease_id, r.created_at FROM blob_refs r \
         JOIN blobs b USING (cid) WHERE r.owner = $1 AND ($2::text IS NULL OR \
         (r.created_at, r.cid) < (SELECT created_at, cid FROM blob_refs WHERE owner = $1 AND cid = $2)) \
         ORDER BY r.created_at DESC, r.cid DESC LIMIT $3",
    )
    .bind::<BigInt, _>(param(owner.0)?)
    .bind::<Nullable<Text>, _>(after)
    .bind::<BigInt, _>(i64::from(first))
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| BlobRow {
            cid: r.cid,
            size: size(r.size),
            kind: match (r.kind.as_str(), r.lease_id) {
                ("output", Some(lease)) => BlobKind::Output(LeaseId(size(lease))),
                _ => BlobKind::Upload,
            },
            created_at: r.created_at,
        })
        .collect())
}

/// What deleting a reference did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The account held no such blob.
    NotHeld,
    /// Others still hold it.
    Unreferenced,
    /// Nobody holds it any more: it is marked `deleting`, for its bytes to be removed and
    /// then [`forget_blob`].
    Last,
}

/// Serializes everything that adds or drops the last hold on `cid` (two-key form, first
/// key 7719, "blob"), so a blob's bytes are never removed under a hold that was just added.
fn lock_cid(conn: &mut PgConnection, cid: &str) -> Result<(), LedgerError> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(7719, hashtext($1))")
        .bind::<Text, _>(cid)
        .execute(conn)?;
    Ok(())
}

/// Drops `owner`'s hold on `cid`. The last hold marks the blob `deleting`: its bytes are the
/// caller's to remove, then [`forget_blob`] drops the row. Until then an upload of the same
/// bytes is told to retry (the removal may take the bytes it stored).
pub fn delete_ref(
    conn: &mut PgConnection,
    owner: AccountId,
    cid: &str,
) -> Result<Deleted, LedgerError> {
    conn.transaction(|conn| {
        lock_cid(conn, cid)?;
        let removed = diesel::sql_query("DELETE FROM blob_refs WHERE owner = $1 AND cid = $2")
            .bind::<BigInt, _>(param(owner.0)?)
            .bind::<Text, _>(cid)
            .execute(conn)?;
        if removed == 0 {
            return Ok(Deleted::NotHeld);
        }
        let marked = diesel::sql_query(
            "UPDATE blobs SET deleting = true WHERE cid = $1 AND NOT EXISTS \
             (SELECT 1 FROM blob_refs WHERE cid = $1)",
        )
        .bind::<Text, _>(cid)
        .execute(conn)?;
        Ok(if marked == 1 {
            Deleted::Last
        } else {
            Deleted::Unreferenced
        })
    })
}

/// Marks bytes the store holds but nobody does (an upload refused after it was stored) as
/// `deleting`, for the caller to remove; `false` when someone holds them after all.
pub fn claim_unheld(conn: &mut PgConnection, cid: &str) -> Result<bool, LedgerError> {
    conn.transaction(|conn| {
        lock_cid(conn, cid)?;
        let claimed = diesel::sql_query(
            "INSERT INTO blobs (cid, size, deleting) VALUES ($1, 0, true) ON CONFLICT DO NOTHING",
        )
        .bind::<Text, _>(cid)
        .execute(conn)?;
        Ok(claimed == 1)
    })
}

/// Removes a blob marked `deleting`: `remove_bytes` takes its bytes from the store (true:
/// they are gone), then its row goes, all under the blob's lock, so no hold can be added
/// between the check and the removal. A blob no longer marked (removed and stored again
/// since it was listed) is left alone, nothing being left to do. `false`: its bytes stayed
/// (the store did not answer), to be tried again later.
pub fn forget_blob(
    conn: &mut PgConnection,
    cid: &str,
    remove_bytes: impl FnOnce() -> bool,
) -> Result<bool, LedgerError> {
    #[derive(QueryableByName)]
    struct Marked {
        #[diesel(sql_type = Bool)]
        marked: bool,
    }
    conn.transaction(|conn| {
        lock_cid(conn, cid)?;
        let marked: Marked = diesel::sql_query(
            "SELECT EXISTS (SELECT 1 FROM blobs WHERE cid = $1 AND deleting) \
             AND NOT EXISTS (SELECT 1 FROM blob_refs WHERE cid = $1) AS marked",
        )
        .bind::<Text, _>(cid)
        .get_result(conn)?;
        if !marked.marked {
            return Ok(true);
        }
        if !remove_bytes() {
            return Ok(false);
        }
        diesel::sql_query("DELETE FROM blobs WHERE cid = $1")
            .bind::<Text, _>(cid)
            .execute(conn)?;
        Ok(true)
    })
}

/// Drops every hold older than its account's retention (`blob_quotas.retention_days`; none:
/// kept until deleted) as of `now`, but for blobs a job of a lease that has not ended names
/// (its image or inputs): those wait for the lease's end. Returns the blobs marked
/// `deleting` (these, and any an earlier removal left marked), whose bytes the caller
/// removes from the store before [`forget_blob`].
pub fn expire_refs(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Vec<String>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        cid: String,
    }
    conn.transaction(|conn| {
        let due: Vec<Row> = diesel::sql_query(
            "SELECT DISTINCT r.cid FROM blob_refs r JOIN blob_quotas q ON q.owner = r.owner \
             WHERE q.retention_days IS NOT NULL \
               AND r.created_at < $1 - make_interval(days => q.retention_days) \
             ORDER BY r.cid",
        )
        .bind::<Timestamptz, _>(now)
        .load(conn)?;
        for row in &due {
            lock_cid(conn, &row.cid)?;
        }
        diesel::sql_query(
            "DELETE FROM blob_refs r USING blob_quotas q \
             WHERE q.owner = r.owner AND q.retention_days IS NOT NULL \
               AND r.created_at < $1 - make_interval(days => q.retention_days) \
               AND r.cid = ANY ($2) \
               AND NOT EXISTS (SELECT 1 FROM lease_jobs j JOIN leases l \
                   ON l.partition = j.partition AND l.lease_id = j.lease_id \
                   WHERE l.status <> 'ended' \
                     AND (r.cid = ANY (j.input_cids) OR r.cid = ANY (j.image_blobs)))",
        )
        .bind::<Timestamptz, _>(now)
        .bind::<diesel::sql_types::Array<Text>, _>(due.iter().map(|r| &r.cid).collect::<Vec<_>>())
        .execute(conn)?;
        diesel::sql_query(
            "UPDATE blobs b SET deleting = true WHERE b.cid = ANY ($1) \
             AND NOT EXISTS (SELECT 1 FROM blob_refs WHERE cid = b.cid)",
        )
        .bind::<diesel::sql_types::Array<Text>, _>(due.iter().map(|r| &r.cid).collect::<Vec<_>>())
        .execute(conn)?;
        let marked: Vec<Row> =
            diesel::sql_query("SELECT cid FROM blobs WHERE deleting ORDER BY cid").load(conn)?;
        Ok(marked.into_iter().map(|r| r.cid).collect())
    })
}

/// The buyer whose lease `lease`'s job `provider` may still upload outputs for: the job
/// exists on the provider's node and its outputs are not yet sealed by a signed report.
pub fn output_owner(
    conn: &mut PgConnection,
    lease: LeaseId,
    provider: AccountId,
) -> Result<Option<AccountId>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        buyer: i64,
    }
    let row: Option<Row> = diesel::sql_query(
        "SELECT buyer FROM lease_jobs WHERE partition = 0 AND lease_id = $1 \
         AND provider = $2 AND output_manifest IS NULL",
    )
    .bind::<BigInt, _>(param(lease.0)?)
    .bind::<BigInt, _>(param(provider.0)?)
    .get_result(conn)
    .optional()?;
    Ok(row.map(|r| AccountId(size(r.buyer))))
}

/// Seals a job's outputs as the node's signed report `sequence` named them: its manifest,
/// its whole log and the GPUs it ran on, once (a later report naming others changes nothing).
pub fn seal_outputs(
    conn: &mut PgConnection,
    lease: LeaseId,
    provider: AccountId,
    manifest: &str,
    log: &str,
    gpus: &[String],
    sequence: u64,
) -> Result<bool, LedgerError> {
    let sealed = diesel::sql_query(
        "UPDATE lease_jobs SET output_manifest = $3, output_log = $4, report_sequence = $5, \
         output_gpus = $6 \
         WHERE partition = 0 AND lease_id = $1 AND provider = $2 AND output_manifest IS NULL",
    )
    .bind::<BigInt, _>(param(lease.0)?)
    .bind::<BigInt, _>(param(provider.0)?)
    .bind::<Text, _>(manifest)
    .bind::<Text, _>(log)
    .bind::<BigInt, _>(param(sequence)?)
    .bind::<diesel::sql_types::Array<Text>, _>(gpus)
    .execute(conn)?;
    Ok(sealed == 1)
}
