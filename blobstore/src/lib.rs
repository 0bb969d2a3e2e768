//! Blobs named by their content: a blob's name is the SHA-256 digest of its bytes, written
//! as a CIDv1 with the raw codec (`bafkrei…`), so any content-addressed store (IPFS, say)
//! can serve the same objects under the same names.
//!
//! The bytes live in an `object_store` store: the local filesystem by default, S3-compatible
//! storage with the `s3` feature (`s3://bucket/prefix`, credentials from the usual `AWS_*`
//! variables). An upload streams into `staging/<random>` while it is hashed and counted;
//! only when its digest is known (and matches the one claimed, if any) is it renamed to
//! `blobs/<cid>`. So no object is ever visible under a name its bytes do not have, and an
//! upload cut off at any point (a client gone, a crash, kill -9) leaves nothing under
//! `blobs/`: the staging area is emptied when a local store is opened.
//!
//! Who may read a blob is not this crate's concern: the API keeps owners and references in
//! the ledger, and calls this store only for bytes.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use sha2::{Digest as _, Sha256};

pub use contract::{BadDigest, Digest};

/// The parts an upload is written in (object stores' multipart uploads want 5 MiB or more).
const PART: usize = 8 << 20;

/// Why a blob was not stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the body's digest is {actual}, not the {claimed} claimed: nothing stored")]
    DigestMismatch { claimed: Digest, actual: Digest },
    #[error("the body is over the {limit} bytes allowed: nothing stored")]
    TooLarge { limit: u64 },
    #[error("no blob {0}")]
    NotFound(Digest),
    /// The body could not be read to its end (the client went away): nothing stored.
    #[error("the body was cut off: {0}")]
    Body(String),
    #[error("the blob store: {0}")]
    Store(#[from] object_store::Error),
    #[error("the blob store's directory: {0}")]
    Io(#[from] std::io::Error),
}

/// What an upload stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub digest: Digest,
    pub size: u64,
    /// The store had no such blob before.
    pub new: bool,
}

fn path(digest: &Digest) -> ObjectPath {
    ObjectPath::from(format!("blobs/{}", digest.cid()))
}

/// The blobs of a market.
#[derive(Debug, Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
}

impl BlobStore {
    /// A store on the local filesystem under `dir` (made if missing); what an interrupted
    /// upload left in its staging area is removed.
    pub fn local(dir: &Path) -> Result<BlobStore, BlobError> {
        let staging = dir.join("staging");
        match std::fs::remove_dir_all(&staging) {
            Ok(()) => tracing::info!(dir = %staging.display(), "interrupted uploads removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        std::fs::create_dir_all(dir.join("blobs"))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
        Ok(BlobStore {
            store: Arc::new(store),
        })
    }

    /// A store from its location: a directory, or (feature `s3`) an `s3://bucket/prefix`
    /// URL with credentials and endpoint from the `AWS_*` environment variables.
    pub fn open(location: &str) -> Result<BlobStore, BlobError> {
        #[cfg(feature = "s3")]
        if location.starts_with("s3://") {
            let url = location.strip_prefix("s3://").unwrap_or_default();
            let (bucket, prefix) = url.split_once('/').unwrap_or((url, ""));
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            };
            return Ok(BlobStore { store });
        }
        BlobStore::local(Path::new(location))
    }

    /// Streams `body` into the store, at most `limit` bytes. Nothing is visible until the
    /// whole body is in and its digest is known (and equal to `claimed`, when given); a body
    /// over the limit, with another digest, or cut off leaves nothing behind. The same bytes
    /// uploaded twice, even at once, are one blob.
    pub async fn put<S, E>(
        &self,
        body: S,
        claimed: Option<Digest>,
        limit: u64,
    ) -> Result<Stored, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: fmt::Display,
    {
        let staging = ObjectPath::from(format!("staging/{:032x}", rand::random::<u128>()));
        let upload = self.store.put_multipart(&staging).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        let failed = loop {
            match body.next().await {
                None => break None,
                Some(Err(e)) => break Some(BlobError::Body(e.to_string())),
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if size > limit {
                        break Some(BlobError::TooLarge { limit });
                    }
                    hasher.update(&chunk);
                    // Backpressure: at most two parts in flight, so memory stays bounded
                    // however large the blob.
                    if let Err(e) = writer.wait_for_capacity(2).await {
                        break Some(e.into());
                    }
                    writer.put(chunk);
                }
            }
        };
        if let Some(e) = failed {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.finish().await?;
        let digest = Digest::from_sha256(hasher.finalize().into());
        if let Some(claimed) = claimed.filter(|c| *c != digest) {
            self.store.delete(&staging).await?;
            return Err(BlobError::DigestMismatch {
                claimed,
                actual: digest,
            });
        }
        let new = match self.store.head(&path(&digest)).await {
            Ok(_) => {
                self.store.delete(&staging).await?;
                false
            }
            Err(object_store::Error::NotFound { .. }) => {
                // Another upload of the same bytes may land first; either rename leaves
                // the whole object under its name.
                self.store.rename(&staging, &path(&digest)).await?;
                true
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Stored { digest, size, new })
    }

    /// The blob's size, if the store has it.
    pub async fn size(&self, digest: Digest) -> Result<Option<u64>, BlobError> {
        match self.store.head(&path(&digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The blob's bytes, streamed, with its size.
    pub async fn get(
        &self,
        digest: Digest,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, BlobError>>), BlobError> {
        match self.store.get(&path(&digest)).await {
            Ok(got) => {
                let size = got.meta.size;
                Ok((
                    size,
                    got.into_stream().map(|r| r.map_err(Into::into)).boxed(),
                ))
            }
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(digest)),
            Err(e) => Err(e.into()),
        }
    }

    /// The blob's bytes, whole (for small blobs: manifests, image configs).
    pub async fn read(&self, digest: Digest) -> Result<Bytes, BlobError> {
        match self.store.get(&path(&digest)).await {
            Ok(got) => Ok(got.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(digest)),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the blob's bytes (the ledger decides when nothing refers to it any more).
    pub async fn delete(&self, digest: Digest) -> Result<(), BlobError> {
        match self.store.delete(&path(&digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
