//! `/blobs`: uploads and downloads of blobs named by content ([`blobstore`]).
//!
//! - `PUT /blobs[?digest=CID]` streams the body into the store as the caller's blob and
//!   answers its digest (`201`, or `200` when the caller held it already). A claimed digest
//!   the body does not have is `DIGEST_MISMATCH`; a body that would take the account over its
//!   quota is `QUOTA_EXCEEDED` (413); neither stores anything.
//! - `PUT /blobs?lease=N` is the provider's agent uploading a job's output: the blob is the
//!   lease's buyer's, counted on the buyer's quota, and accepted only until the node's signed
//!   report seals the job's outputs.
//! - `GET /blobs/{digest}` streams a blob to its owner, or to the provider of a running lease
//!   whose job names it (an input, or a part of the job's image). Anyone else gets
//!   `FORBIDDEN`; a digest nobody stored, `NOT_FOUND`.
//!
//! Bodies stream both ways: a 1 GiB blob never sits in the server's memory.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use blobstore::BlobError;
use contract::{AccountId, ErrorCode, LeaseId};
use futures_util::StreamExt;
use ledger::store::{Access, BlobKind, RefAdded};

use super::{keyed_caller, status_of};
use crate::auth::Role;
use crate::errors::ApiError;
use crate::schema::input::parse_digest;
use crate::AppState;

#[derive(Debug, serde::Deserialize)]
pub(super) struct PutParams {
    digest: Option<String>,
    lease: Option<String>,
}

fn answer(result: Result<HttpResponse, ApiError>) -> HttpResponse {
    result.unwrap_or_else(|e| {
        HttpResponse::build(status_of(&e)).json(serde_json::json!({
            "code": e.code, "message": e.message
        }))
    })
}

fn store(state: &AppState) -> Result<&blobstore::BlobStore, ApiError> {
    state
        .config
        .blobs
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this market keeps no blob store"))
}

fn blob_error(e: BlobError) -> ApiError {
    match e {
        BlobError::DigestMismatch { .. } => ApiError::new(ErrorCode::DigestMismatch, e.to_string()),
        BlobError::TooLarge { .. } => ApiError::new(ErrorCode::QuotaExceeded, e.to_string()),
        BlobError::NotFound(_) => ApiError::not_found(e.to_string()),
        BlobError::Body(_) => ApiError::new(ErrorCode::RequestTimeout, e.to_string()),
        BlobError::Store(_) | BlobError::Io(_) => {
            tracing::error!(error = %e, "the blob store failed");
            ApiError::unavailable("the blob store is not reachable; retry")
        }
    }
}

/// `PUT /blobs`.
pub(super) async fn put(
    state: web::Data<Arc<AppState>>,
    req: HttpRequest,
    params: web::Query<PutParams>,
    body: web::Payload,
) -> HttpResponse {
    answer(put_blob(&state, &req, &params, body).await)
}

async fn put_blob(
    state: &Arc<AppState>,
    req: &HttpRequest,
    params: &PutParams,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = keyed_caller(state, req, "blobs").await?;
    let store = store(state)?;
    let claimed = params.digest.as_deref().map(parse_digest).transpose()?;
    let account = principal.own_account()?;
    // Whose blob it becomes, and as what.
    let (owner, kind) = match &params.lease {
        None => {
            principal.require(&[Role::Trader, Role::Provider], "uploading a blob")?;
            (account, BlobKind::Upload)
        }
        Some(lease) => {
            principal.require(&[Role::Provider], "uploading a job's output")?;
            let lease = crate::schema::input::parse_lease_id(&lease.as_str().into())?;
            let buyer = state
                .db(move |c| ledger::store::output_owner(c, lease, account))
                .await?
                .ok_or_else(|| {
                    ApiError::forbidden(format!(
                        "lease {} has no job on this provider's nodes whose outputs are open",
                        lease.0
                    ))
                })?;
            (buyer, BlobKind::Output(lease))
        }
    };
    let default_max = state.config.blob_quota_bytes;
    let quota = state
        .db(move |c| ledger::store::quota(c, owner, default_max))
        .await?;
    let room = quota.max_bytes.saturating_sub(quota.used);
    // A declared length over the room is refused before a byte is read.
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > room) {
        return Err(over_quota(quota.max_bytes, quota.used));
    }
    // A body that stops arriving is cut off (a slow client cannot hold an upload open).
    let idle = state.config.limits.body_timeout;
    let body = futures_util::stream::unfold(body, move |mut body| async move {
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(chunk)) => Some((chunk.map_err(|e| e.to_string()), body)),
            Ok(None) => None,
            Err(_) => Some((
                Err(format!("no bytes arrived for {} ms", idle.as_millis())),
                body,
            )),
        }
    });
    let stored = store.put(body, claimed, room).await.map_err(|e| match e {
        BlobError::TooLarge { .. } => over_quota(quota.max_bytes, quota.used),
        e => blob_error(e),
    })?;
    let cid = stored.digest.cid();
    let (size, for_db) = (stored.size, cid.clone());
    let added = state
        .db(move |c| ledger::store::add_ref(c, owner, &for_db, size, kind, default_max))
        .await?;
    let retry = || ApiError::unavailable("the same bytes are being deleted; send them again");
    let status = match added {
        // A deletion of the same bytes may have removed them between the store's write and
        // the hold: then the hold goes again and the upload is to be retried.
        RefAdded::New
            if store
                .size(stored.digest)
                .await
                .map_err(blob_error)?
                .is_none() =>
        {
            let for_db = cid.clone();
            let undone = state
                .db(move |c| ledger::store::delete_ref(c, owner, &for_db))
                .await?;
            if undone == ledger::store::Deleted::Last {
                remove(state, store, &cid).await?;
            }
            return Err(retry());
        }
        RefAdded::New => actix_web::http::StatusCode::CREATED,
        RefAdded::Again => actix_web::http::StatusCode::OK,
        RefAdded::Deleting => return Err(retry()),
        RefAdded::OverQuota { max_bytes, used } => {
            // Another upload of the account's took the room meanwhile. The bytes stay only
            // if someone holds them.
            let for_db = cid.clone();
            if stored.new
                && state
                    .db(move |c| ledger::store::claim_unheld(c, &for_db))
                    .await?
            {
                remove(state, store, &cid).await?;
            }
            return Err(over_quota(max_bytes, used));
        }
    };
    tracing::info!(owner = owner.0, %cid, size, ?kind, "blob stored");
    Ok(HttpResponse::build(status).json(serde_json::json!({
        "cid": cid,
        "sha256": stored.digest.hex(),
        "size": size,
    })))
}

/// Removes the bytes of `cid`, marked `deleting` in the ledger, then its row, holding the
/// blob's lock throughout (the store's delete runs on the database task's thread). `false`:
/// the store did not answer, and the blob stays marked for the upkeep to retry.
pub(crate) async fn remove(
    state: &AppState,
    store: &blobstore::BlobStore,
    cid: &str,
) -> Result<bool, ApiError> {
    let digest = contract::Digest::parse(cid).expect("the ledger holds only cids");
    let (store, cid) = (store.clone(), cid.to_owned());
    let runtime = tokio::runtime::Handle::current();
    state
        .db(move |c| {
            ledger::store::forget_blob(c, &cid, || match runtime.block_on(store.delete(digest)) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, %cid, "a blob's bytes were not removed");
                    false
                }
            })
        })
        .await
}

fn over_quota(max_bytes: u64, used: u64) -> ApiError {
    ApiError::new(
        ErrorCode::QuotaExceeded,
        format!("the account holds {used} of its {max_bytes} bytes of blobs: no room for this one"),
    )
}

/// `GET /blobs/{digest}`.
pub(super) async fn get(
    state: web::Data<Arc<AppState>>,
    req: HttpRequest,
    digest: web::Path<String>,
) -> HttpResponse {
    answer(get_blob(&state, &req, &digest).await)
}

async fn get_blob(
    state: &Arc<AppState>,
    req: &HttpRequest,
    digest: &str,
) -> Result<HttpResponse, ApiError> {
    let principal = keyed_caller(state, req, "blobs").await?;
    let store = store(state)?;
    let digest = parse_digest(digest)?;
    let account = principal.own_account()?;
    let cid = digest.cid();
    let access = state
        .db(move |c| ledger::store::access(c, account, &cid))
        .await?;
    let allowed = match access {
        Access::Unknown => return Err(ApiError::not_found(format!("no blob {digest}"))),
        Access::Owner => true,
        Access::JobInput(leases) => running(state, account, &leases),
        Access::None => false,
    };
    if !allowed {
        return Err(ApiError::forbidden(format!(
            "blob {digest} is another account's"
        )));
    }
    let (size, bytes) = store.get(digest).await.map_err(blob_error)?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("Content-Length", size.to_string()))
        .insert_header(("ETag", format!("\"{digest}\"")))
        .insert_header(("Cache-Control", "private, max-age=31536000, immutable"))
        .streaming(bytes.map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())))))
}

/// Whether one of `leases` is running now with `provider` as its provider.
fn running(state: &AppState, provider: AccountId, leases: &[LeaseId]) -> bool {
    let engine = state.engine.replica();
    leases
        .iter()
        .any(|id| engine.lease(*id).is_some_and(|l| l.provider == provider))
}

/// Every `every`: removes the blobs whose holds have outlived their accounts' retention
/// (`setBlobQuota`'s `retentionDays`; by default blobs are kept until deleted), and where
/// storage has a price, charges each account for the last whole hour (`ChargeStorage`). One
/// task per shard, beside the clock.
///
/// A blob still named by a job whose lease has not ended is kept to the lease's end. Bytes
/// whose removal fails stay in the store, unlisted (a later upload of the same content lists
/// them again). An hour is charged on the bytes held when its charge is made; the engine
/// takes each account's hours once and in order, so a restart never charges twice, and
/// hours while no API ticked are not charged.
pub async fn upkeep(state: Arc<AppState>, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        if let Err(e) = expire(&state).await {
            tracing::warn!(error = %e.message, "expiring blobs");
        }
        if let Some(price) = state.config.storage_price {
            if let Err(e) = charge_storage(&state, price).await {
                tracing::warn!(error = %e.message, "charging storage");
            }
        }
    }
}

async fn expire(state: &AppState) -> Result<(), ApiError> {
    let gone = state
        .db(|c| ledger::store::expire_refs(c, chrono::Utc::now()))
        .await?;
    if let Some(store) = &state.config.blobs {
        for cid in &gone {
            // Left marked, it is tried again next time; the others go on.
            if let Err(e) = remove(state, store, cid).await {
                tracing::warn!(error = %e.message, %cid, "removing an expired blob");
            }
        }
    }
    if !gone.is_empty() {
        tracing::info!(blobs = gone.len(), "blobs past their retention removed");
    }
    Ok(())
}

/// Hours a month has, for a price per GB-month.
const HOURS_PER_MONTH: i128 = 730;

/// The last whole hour's charge for every account that holds blobs and was not charged for
/// it: `floor(bytes × price / (10^9 × 730))` micro-units, the market's one rounding rule
/// (down), so an account holding less than an hour's micro-unit pays nothing.
async fn charge_storage(state: &AppState, price: contract::Price) -> Result<(), ApiError> {
    const HOUR_MS: i64 = 3_600_000;
    let now = chrono::Utc::now().timestamp_millis();
    let hour = contract::Timestamp((now / HOUR_MS - 1) * HOUR_MS);
    let held = state.db(ledger::store::held_bytes).await?;
    let due: Vec<(AccountId, u64)> = {
        let engine = state.engine.replica();
        held.into_iter()
            .filter(|(account, _)| engine.storage_charged(*account).is_none_or(|h| h < hour))
            .collect()
    };
    let mut charged = 0;
    for (account, bytes) in due {
        let micros =
            i128::from(bytes) * i128::from(price.micros()) / (1_000_000_000 * HOURS_PER_MONTH);
        let Ok(micros) = i64::try_from(micros) else {
            continue;
        };
        if micros == 0 {
            continue;
        }
        let answer = state
            .engine
            .submit(contract::Command::ChargeStorage {
                account,
                hour,
                bytes,
                amount: contract::Amount::from_micros(micros),
            })
            .await?;
        match crate::schema::answer::events(answer) {
            Ok(_) => charged += 1,
            // Charged by an earlier run whose answer the replica had not shown yet.
            Err(e) if e.code == ErrorCode::AlreadyApplied => {}
            Err(e) => tracing::warn!(error = %e.message, %account, "a storage charge was refused"),
        }
    }
    if charged > 0 {
        tracing::info!(accounts = charged, hour = hour.0, "storage charged");
    }
    Ok(())
}
