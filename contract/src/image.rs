//! The part of an OCI image manifest (image-spec v1.1) the market reads: which config and
//! which layers, in order, by digest. A job names its image by the manifest's digest; the
//! API checks the buyer holds every blob it lists, and the agent fetches, verifies and
//! unpacks them.

use serde::{Deserialize, Serialize};

use crate::Digest;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// Layer media types the agent unpacks: tar, plain or gzip-compressed (OCI's and Docker's).
pub const LAYER_MEDIA_TYPES: [&str; 3] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// The largest manifest read (the spec suggests registries accept 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// An OCI image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A blob an image refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

/// Why bytes are not an image manifest the market runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("not an OCI image manifest: {0}")]
    NotAManifest(String),
    #[error("unsupported media type {0:?}")]
    MediaType(String),
    #[error("a descriptor's digest: {0}")]
    Digest(#[from] crate::BadDigest),
    #[error("an image needs at least one layer and at most 128")]
    Layers,
}

impl ImageManifest {
    /// Reads and checks a manifest: schema 2, the OCI media types, sha256 digests.
    pub fn parse(bytes: &[u8]) -> Result<ImageManifest, ImageError> {
        let manifest: ImageManifest =
            serde_json::from_slice(bytes).map_err(|e| ImageError::NotAManifest(e.to_string()))?;
        if manifest.schema_version != 2 {
            return Err(ImageError::NotAManifest(format!(
                "schemaVersion {}",
                manifest.schema_version
            )));
        }
        if let Some(t) = manifest
            .media_type
            .as_ref()
            .filter(|t| *t != MANIFEST_MEDIA_TYPE)
        {
            return Err(ImageError::MediaType(t.clone()));
        }
        if manifest.config.media_type != CONFIG_MEDIA_TYPE {
            return Err(ImageError::MediaType(manifest.config.media_type.clone()));
        }
        if manifest.layers.is_empty() || manifest.layers.len() > 128 {
            return Err(ImageError::Layers);
        }
        for layer in &manifest.layers {
            if !LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
                return Err(ImageError::MediaType(layer.media_type.clone()));
            }
        }
        manifest.blobs()?;
        Ok(manifest)
    }

    /// The config's digest, then each layer's, in order.
    pub fn blobs(&self) -> Result<Vec<Digest>, ImageError> {
        std::iter::once(&self.config)
            .chain(&self.layers)
            .map(|d| Digest::parse(&d.digest).map_err(Into::into))
            .collect()
    }
}
