//! Blobs in GraphQL: their metadata, listing, deletion and quotas. The bytes go over plain
//! HTTP (`PUT /blobs`, `GET /blobs/{cid}`: `crate::http`), streamed.

use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use ledger::store::{Access, BlobKind, BlobRow, Deleted};

use crate::auth::Role;
use crate::errors::ApiError;
use crate::schema::input::parse_digest;
use crate::schema::query::DB;
use crate::schema::{account_to_read, page_size, parse_account, principal, state};

/// Why an account holds a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum BlobOrigin {
    /// The account uploaded it.
    Upload,
    /// A job on one of the account's leases wrote it.
    Output,
}

/// A blob an account holds: named by its content (CIDv1, raw codec, SHA-256).
#[derive(Debug, Clone, SimpleObject)]
pub struct Blob {
    pub cid: String,
    /// The SHA-256 digest in hex (`sha256:` + this is the OCI spelling).
    pub sha256: String,
    pub size: u64,
    pub origin: BlobOrigin,
    /// The lease whose job wrote it (outputs).
    pub lease_id: Option<ID>,
    pub created_at: DateTime<Utc>,
    /// Where its bytes are: `GET` this path with the same key.
    pub download_path: String,
}

impl From<BlobRow> for Blob {
    fn from(row: BlobRow) -> Blob {
        let digest = contract::Digest::parse(&row.cid).expect("the ledger keeps valid cids");
        let (origin, lease_id) = match row.kind {
            BlobKind::Upload => (BlobOrigin::Upload, None),
            BlobKind::Output(lease) => (BlobOrigin::Output, Some(ID(lease.0.to_string()))),
        };
        Blob {
            download_path: format!("/blobs/{}", row.cid),
            sha256: digest.hex(),
            cid: row.cid,
            size: row.size,
            origin,
            lease_id,
            created_at: row.created_at,
        }
    }
}

/// How many bytes of blobs an account may hold and holds.
#[derive(Debug, Clone, SimpleObject)]
pub struct BlobQuota {
    pub max_bytes: u64,
    pub used_bytes: u64,
    /// Days the account's blobs are kept; null: until deleted.
    pub retention_days: Option<u32>,
}

fn cid_of(text: &str) -> Result<String, ApiError> {
    parse_digest(text).map(|d| d.cid())
}

#[derive(Debug, Default)]
pub struct BlobQuery;

#[Object]
impl BlobQuery {
    /// The caller's blobs (or the named account's, for finance and admin), newest first:
    /// `first` of them (default 50) after the blob `after`.
    #[graphql(complexity = "DB + child_complexity")]
    async fn blobs(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Vec<Blob>> {
        let owner = account_to_read(ctx, account.as_ref())?;
        let first = page_size(first)?;
        let after = after.as_deref().map(cid_of).transpose()?;
        let rows = state(ctx)
            .db(move |c| ledger::store::blobs(c, owner, after.as_deref(), first))
            .await?;
        Ok(rows.into_iter().map(Blob::from).collect())
    }

    /// One blob the caller holds; another account's is `FORBIDDEN`, one nobody stored
    /// `NOT_FOUND`.
    #[graphql(complexity = "DB + child_complexity")]
    async fn blob(&self, ctx: &Context<'_>, cid: String) -> async_graphql::Result<Blob> {
        let p = principal(ctx)?;
        let account = p.own_account()?;
        let cid = cid_of(&cid)?;
        let found = state(ctx)
            .db(move |c| -> Result<_, ApiError> {
                match ledger::store::access(c, account, &cid)? {
                    Access::Unknown => Err(ApiError::not_found(format!("no blob {cid}"))),
                    Access::Owner => Ok(ledger::store::blobs(c, account, None, u32::MAX)?
                        .into_iter()
                        .find(|b| b.cid == cid)),
                    Access::JobInput(_) | Access::None => Err(ApiError::forbidden(format!(
                        "blob {cid} is another account's"
                    ))),
                }
            })
            .await?;
        found
            .map(Blob::from)
            .ok_or_else(|| ApiError::not_found("no such blob").into())
    }

    /// How many bytes of blobs the caller (or the named account, for finance and admin) may
    /// hold and holds.
    #[graphql(complexity = "DB")]
    async fn blob_quota(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
    ) -> async_graphql::Result<BlobQuota> {
        let owner = account_to_read(ctx, account.as_ref())?;
        let default_max = state(ctx).config.blob_quota_bytes;
        let q = state(ctx)
            .db(move |c| ledger::store::quota(c, owner, default_max))
            .await?;
        Ok(BlobQuota {
            max_bytes: q.max_bytes,
            used_bytes: q.used,
            retention_days: q.retention_days,
        })
    }
}

#[derive(Debug, Default)]
pub struct BlobMutation;

#[Object]
impl BlobMutation {
    /// Drops the caller's hold on a blob; the bytes go once nobody holds them. A blob the
    /// caller does not hold is `NOT_FOUND`.
    async fn delete_blob(&self, ctx: &Context<'_>, cid: String) -> async_graphql::Result<bool> {
        let p = principal(ctx)?;
        p.require(&[Role::Trader, Role::Provider], "deleting a blob")?;
        let owner = p.own_account()?;
        let cid = cid_of(&cid)?;
        let for_db = cid.clone();
        let deleted = state(ctx)
            .db(move |c| ledger::store::delete_ref(c, owner, &for_db))
            .await?;
        match deleted {
            Deleted::NotHeld => {
                Err(ApiError::not_found(format!("the account holds no blob {cid}")).into())
            }
            Deleted::Unreferenced => Ok(true),
            Deleted::Last => {
                // The hold is gone; bytes the store keeps are removed by the upkeep if not now.
                if let Some(store) = &state(ctx).config.blobs {
                    if !crate::http::blobs::remove(state(ctx), store, &cid).await? {
                        return Err(ApiError::unavailable(
                            "the blob store is not reachable; the blob is no longer held and \
                             its bytes are removed later",
                        )
                        .into());
                    }
                }
                Ok(true)
            }
        }
    }

    /// Sets an account's blob quota in bytes (null: the market's default) and how many days
    /// its blobs are kept (null: until deleted) (admin).
    async fn set_blob_quota(
        &self,
        ctx: &Context<'_>,
        account: ID,
        max_bytes: Option<u64>,
        retention_days: Option<u32>,
    ) -> async_graphql::Result<bool> {
        principal(ctx)?.require(&[Role::Admin], "setting a blob quota")?;
        let owner = parse_account(Some(&account))?.expect("given");
        if retention_days == Some(0) {
            return Err(ApiError::validation("retentionDays: at least 1, or null").into());
        }
        if max_bytes.is_some_and(|b| b > i64::MAX as u64) {
            return Err(ApiError::validation("maxBytes: at most 2^63 - 1").into());
        }
        state(ctx)
            .db(move |c| ledger::store::set_quota(c, owner, max_bytes, retention_days))
            .await?;
        Ok(true)
    }
}
