//! A job's files, all named by content in the market's blob store: its image (an OCI
//! manifest, config and layers) unpacked once per node and verified layer by layer, its
//! inputs fetched and verified before it starts, and its outputs uploaded by digest when it
//! ends, with a manifest the node's next signed report names.
//!
//! Nothing is trusted on its way in: every blob is hashed as it arrives and kept only when
//! its digest is the one asked for (written beside, renamed into place, so a crash leaves
//! no half file under a real name); a layer's entries that would land outside the root
//! (`..`, absolute paths, links through which a later entry would escape) are refused by
//! the `tar` crate's `unpack_in`, and device nodes and FIFOs are skipped.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use api_client::ClientError;
use contract::image::{ImageManifest, MAX_MANIFEST_BYTES};
use contract::{Digest, JobOutputs, OutputFile, OutputManifest};
use sha2::{Digest as _, Sha256};

/// The most files a job's output may have; past that the rest are listed as refused.
pub const MAX_OUTPUT_FILES: usize = 10_000;

/// Why a job's files could not be made ready or sent.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("blob {cid}: {source}")]
    Api {
        cid: String,
        #[source]
        source: ClientError,
    },
    #[error("blob {asked}: the bytes received have digest {got}: refused")]
    DigestMismatch { asked: Digest, got: Digest },
    #[error("image {manifest}: {why}")]
    BadImage { manifest: Digest, why: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    /// Asking again later may succeed (the API was away).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FileError::Api {
                source: ClientError::Unreachable { .. },
                ..
            }
        )
    }

    /// The buyer's doing, not the provider's: the image does not unpack, or a file the job
    /// names is gone from the store (the buyer deleted it after submitting).
    pub fn is_buyer_fault(&self) -> bool {
        matches!(
            self,
            FileError::BadImage { .. }
                | FileError::Api {
                    source: ClientError::Refused {
                        code: contract::ErrorCode::NotFound,
                        ..
                    },
                    ..
                }
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Downloads `digest` to `to` (mode 0644), hashing as it arrives; a file whose digest is
/// not `digest` is removed, never renamed into place. Returns its size.
pub fn fetch(client: &api_client::Client, digest: Digest, to: &Path) -> Result<u64, FileError> {
    let cid = digest.cid();
    let mut body = client.get_blob(&cid).map_err(|source| FileError::Api {
        cid: cid.clone(),
        source,
    })?;
    let partial = to.with_file_name(format!(
        ".{}.partial",
        to.file_name().and_then(|n| n.to_str()).unwrap_or("blob")
    ));
    let mut file = fs::File::create(&partial).map_err(io(&partial))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut buf).map_err(io(&partial))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(io(&partial))?;
        size += n as u64;
    }
    let got = Digest::from_sha256(hasher.finalize().into());
    if got != digest {
        let _ = fs::remove_file(&partial);
        return Err(FileError::DigestMismatch { asked: digest, got });
    }
    file.sync_all().map_err(io(&partial))?;
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o644)).map_err(io(&partial))?;
    fs::rename(&partial, to).map_err(io(to))?;
    Ok(size)
}

/// Puts each input at `dir/<path>` (readable by the job's uid), fetched and verified.
pub fn fetch_inputs(
    client: &api_client::Client,
    dir: &Path,
    inputs: &[(String, String)],
) -> Result<(), FileError> {
    for (cid, path) in inputs {
        let digest = Digest::parse(cid).map_err(|e| FileError::Api {
            cid: cid.clone(),
            source: ClientError::Refused {
                code: contract::ErrorCode::Validation,
                message: e.to_string(),
            },
        })?;
        // The API checked the path; the agent checks again, since it writes as root.
        if !contract::is_relative_path(path) {
            return Err(FileError::Io {
                path: dir.join(path),
                source: std::io::Error::other("not a relative path"),
            });
        }
        let to = dir.join(path);
        if to.exists() {
            continue;
        }
        let mut parent = to.parent().expect("under dir").to_owned();
        fs::create_dir_all(&parent).map_err(io(&parent))?;
        while parent.starts_with(dir) {
            fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)).map_err(io(&parent))?;
            if !parent.pop() {
                break;
            }
        }
        fetch(client, digest, &to)?;
    }
    Ok(())
}

/// The unpacked root of image `manifest` under `images` (`images/<cid>/rootfs`), fetched,
/// verified and unpacked the first time it is asked for, then kept. An image whose layers
/// unpack to more than `max_bytes` is refused (a small layer can expand a thousandfold).
pub fn image(
    client: &api_client::Client,
    images: &Path,
    manifest: Digest,
    max_bytes: u64,
) -> Result<PathBuf, FileError> {
    let dir = images.join(manifest.cid());
    let root = dir.join("rootfs");
    if root.is_dir() {
        return Ok(root);
    }
    let bad = |why: String| FileError::BadImage { manifest, why };
    for d in [images, dir.as_path()] {
        fs::create_dir_all(d).map_err(io(d))?;
        fs::set_permissions(d, fs::Permissions::from_mode(0o711)).map_err(io(d))?;
    }
    let manifest_path = dir.join("manifest.json");
    fetch(client, manifest, &manifest_path)?;
    if fs::metadata(&manifest_path)
        .map_err(io(&manifest_path))?
        .len()
        > MAX_MANIFEST_BYTES
    {
        return Err(bad("the manifest is too large".into()));
    }
    let parsed = ImageManifest::parse(&fs::read(&manifest_path).map_err(io(&manifest_path))?)
        .map_err(|e| bad(e.to_string()))?;
    let blobs = parsed.blobs().map_err(|e| bad(e.to_string()))?;
    let partial = dir.join("rootfs.partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    fs::create_dir_all(&partial).map_err(io(&partial))?;
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755)).map_err(io(&partial))?;
    // The config is fetched and verified too: it is part of what the manifest's digest
    // vouches for, though the sandbox sets the job's command and environment itself.
    let config = dir.join("config.json");
    fetch(client, blobs[0], &config)?;
    let mut budget = max_bytes;
    for (layer, descriptor) in blobs[1..].iter().zip(&parsed.layers) {
        let path = dir.join(format!("layer-{}", layer.cid()));
        fetch(client, *layer, &path)?;
        let file = fs::File::open(&path).map_err(io(&path))?;
        let reader: Box<dyn Read> = if descriptor.media_type.ends_with("gzip") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        unpack_layer(reader, &partial, &mut budget).map_err(|e| {
            // A full disk is the provider's; anything else is the layer's own.
            if matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) {
                io(&partial)(e)
            } else {
                bad(format!("layer {layer}: {e}"))
            }
        })?;
        fs::remove_file(&path).map_err(io(&path))?;
    }
    fs::rename(&partial, &root).map_err(io(&root))?;
    tracing::info!(image = %manifest, layers = parsed.layers.len(), "image unpacked");
    Ok(root)
}

/// Applies one layer to `root`: its whiteouts (`.wh.NAME` removes NAME, `.wh..wh..opq`
/// empties its directory), then its entries, each kept inside `root`.
fn unpack_layer(reader: impl Read, root: &Path, budget: &mut u64) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            continue;
        }
        // Each entry takes at least a block (and an inode) however small: a layer of
        // millions of empty files is not free.
        *budget = budget
            .checked_sub(entry.size().saturating_add(4_096))
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the image unpacks to more than this provider's limit",
                )
            })?;
        let path = entry.path()?.into_owned();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = path.parent().unwrap_or(Path::new(""));
            if parent
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                continue;
            }
            // Every directory on the way must be a real one: a link an earlier entry made
            // (to `/`, say) would turn the whiteout into a delete on the host.
            let Some(dir) = real_dir_under(root, parent) else {
                continue;
            };
            if hidden == ".wh..opq" {
                for child in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    remove(&child.path())?;
                }
            } else if !hidden.is_empty() && hidden != "." && hidden != ".." {
                remove(&dir.join(hidden))?;
            }
            continue;
        }
        // Refuses `..`, absolute paths and writes through links out of `root`.
        entry.unpack_in(root)?;
    }
    Ok(())
}

/// `root/relative` when every component of it is a directory, never a link; `None` else.
fn real_dir_under(root: &Path, relative: &Path) -> Option<PathBuf> {
    let mut dir = root.to_path_buf();
    for part in relative.components() {
        dir.push(part);
        if !fs::symlink_metadata(&dir).ok()?.is_dir() {
            return None;
        }
    }
    Some(dir)
}

/// Opens a regular file, refusing a link in its last component.
fn open_no_follow(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Removes `path`; a link is removed itself, never what it points to (`remove_dir_all`
/// does not follow links either).
fn remove(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// An OCI image's blobs: what a buyer uploads to run jobs from it (the manifest's cid names
/// the image).
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
}

/// An image of one gzip layer: `/bin/busybox` (a static one: the image has no libraries)
/// with `applets` as links to it. `up --demo` and the tests build theirs so, from Debian's
/// busybox-static, since no registry is reachable.
pub fn busybox_image(busybox: &[u8], applets: &[&str]) -> Image {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(busybox.len() as u64);
    header.set_mode(0o755);
    tar.append_data(&mut header, "bin/busybox", busybox)
        .expect("writing to memory");
    for applet in applets {
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        tar.append_link(&mut link, format!("bin/{applet}"), "busybox")
            .expect("writing to memory");
    }
    let layer_tar = tar.into_inner().expect("writing to memory");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer_tar).expect("writing to memory");
    let layer = gz.finish().expect("writing to memory");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer_tar).oci()]},
    }))
    .expect("JSON");
    let manifest = serde_json::to_vec(&ImageManifest {
        schema_version: 2,
        media_type: Some(contract::image::MANIFEST_MEDIA_TYPE.to_owned()),
        config: contract::image::Descriptor {
            media_type: contract::image::CONFIG_MEDIA_TYPE.to_owned(),
            digest: Digest::of(&config).oci(),
            size: config.len() as u64,
        },
        layers: vec![contract::image::Descriptor {
            media_type: contract::image::LAYER_MEDIA_TYPES[1].to_owned(),
            digest: Digest::of(&layer).oci(),
            size: layer.len() as u64,
        }],
    })
    .expect("JSON");
    Image {
        manifest,
        config,
        layer,
    }
}

/// Uploads one file as lease `lease`'s output (the buyer's blob), claiming the digest it
/// read, so the store keeps it only if the bytes it receives are those.
fn upload(
    client: &api_client::Client,
    lease: u64,
    path: &Path,
) -> Result<(Digest, u64), FileError> {
    let mut hasher = Sha256::new();
    let mut file = open_no_follow(path).map_err(io(path))?;
    let size = std::io::copy(&mut file, &mut hasher).map_err(io(path))?;
    let digest = Digest::from_sha256(hasher.finalize().into());
    let file = open_no_follow(path).map_err(io(path))?;
    client
        .put_blob(
            api_client::BlobBody::sized(file, size),
            Some(&digest.cid()),
            Some(lease),
        )
        .map_err(|source| FileError::Api {
            cid: digest.cid(),
            source,
        })?;
    Ok((digest, size))
}

/// Uploads what the job left in `out` (regular files only, never following a link), its
/// manifest and its whole log; returns what the node's report names.
/// The dishonest mode ([`crate::config::Config::wrong_frames`]): every `every`-th frame
/// file directly in `out` gets one pixel changed, written back in place. A file that is not a
/// readable PNG is left as it is.
pub fn spoil_frames(out: &Path, every: std::num::NonZeroU32) {
    // As for the upload: a real directory only, never a link the job made.
    if !fs::symlink_metadata(out).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let Ok(entries) = fs::read_dir(out) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(render::spec::frame_of) else {
            continue;
        };
        let path = entry.path();
        let is_file = fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
        if n % every.get() != 0 || !is_file {
            continue;
        }
        if let Ok(Ok(pixels)) = fs::read(&path).map(|b| render::Pixels::decode_png(&b)) {
            let _ = fs::write(&path, pixels.tampered(4_096).encode_png());
            tracing::warn!(frame = n, "the dishonest mode changed a frame");
        }
    }
}

pub fn upload_outputs(
    client: &api_client::Client,
    lease: u64,
    out: &Path,
    log: &Path,
    gpus: Vec<String>,
) -> Result<JobOutputs, FileError> {
    let mut files = Vec::new();
    let mut refused = Vec::new();
    // Only real directories are walked, from a real `out`: the job may have made `out`, or
    // anything in it, a link to the host's files, and the agent reads them as root. Nothing
    // of the job runs any more (its sandbox is gone), so what is checked stays so.
    let mut stack = Vec::new();
    match fs::symlink_metadata(out) {
        Ok(meta) if meta.is_dir() => stack.push(out.to_path_buf()),
        Ok(_) => refused.push("out: not a directory (a link?): nothing taken".to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(out)(e)),
    }
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let relative = path.strip_prefix(out).expect("under out");
            let Some(name) = relative.to_str().filter(|n| contract::is_relative_path(n)) else {
                refused.push(format!("{}: not a UTF-8 relative name", relative.display()));
                continue;
            };
            let meta = fs::symlink_metadata(&path).map_err(io(&path))?;
            if meta.is_dir() {
                stack.push(path);
            } else if !meta.is_file() {
                refused.push(format!("{name}: not a regular file (a link or a device)"));
            } else if files.len() >= MAX_OUTPUT_FILES {
                refused.push(format!("{name}: over {MAX_OUTPUT_FILES} files"));
            } else {
                let (digest, size) = upload(client, lease, &path)?;
                files.push(OutputFile {
                    path: name.to_owned(),
                    cid: digest.cid(),
                    size,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    refused.sort();
    let manifest = OutputManifest {
        lease,
        files,
        refused,
    };
    let bytes = serde_json::to_vec(&manifest).expect("strings and numbers serialize");
    let digest = Digest::of(&bytes);
    client
        .put_blob(bytes.into(), Some(&digest.cid()), Some(lease))
        .map_err(|source| FileError::Api {
            cid: digest.cid(),
            source,
        })?;
    let (log, _) = upload(client, lease, log)?;
    Ok(JobOutputs {
        lease,
        manifest: digest.cid(),
        log: log.cid(),
        gpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of raw entries: (name as stored, type, link target, bytes).
    fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, kind, target, bytes) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            let raw = &mut header.as_gnu_mut().expect("gnu").name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if !target.is_empty() {
                header.set_link_name(target).expect("a short target");
            }
            header.set_cksum();
            tar.append(&header, *bytes).expect("writing to memory");
        }
        tar.into_inner().expect("writing to memory")
    }

    #[test]
    fn an_image_that_unpacks_past_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layer = raw_tar(&[
            ("a.bin", tar::EntryType::Regular, "", b"12345"),
            ("b.bin", tar::EntryType::Regular, "", b"67890"),
        ]);
        // Two 5-byte files, each counted with a 4 KiB block.
        let mut budget = 2 * (5 + 4_096) - 1;
        let refused = unpack_layer(&layer[..], dir.path(), &mut budget).unwrap_err();
        assert!(refused.to_string().contains("limit"), "{refused}");
        let mut budget = 2 * (5 + 4_096);
        unpack_layer(&layer[..], dir.path(), &mut budget).unwrap();
        assert_eq!(budget, 0);
    }

    #[test]
    fn a_layer_cannot_write_outside_the_root_nor_make_devices() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(&root).unwrap();
        let layer = raw_tar(&[
            ("ok.txt", tar::EntryType::Regular, "", b"fine"),
            ("../../up.txt", tar::EntryType::Regular, "", b"evil"),
            ("/abs.txt", tar::EntryType::Regular, "", b"evil"),
            ("out", tar::EntryType::Symlink, "../..", b""),
            ("out/through.txt", tar::EntryType::Regular, "", b"evil"),
            ("sda", tar::EntryType::Block, "", b""),
            ("fifo", tar::EntryType::Fifo, "", b""),
        ]);
        // The link through which a write would escape stops the layer: refused whole.
        assert!(unpack_layer(&layer[..], &root, &mut { u64::MAX }).is_err());
        assert_eq!(fs::read(root.join("ok.txt")).unwrap(), b"fine");
        assert!(
            !dir.path().join("up.txt").exists()
                && !dir.path().parent().unwrap().join("up.txt").exists()
        );
        assert!(!dir.path().join("through.txt").exists());
        assert!(!root.join("sda").exists() && !root.join("fifo").exists());
        // `/abs.txt` lands inside the root, never at the host's `/`.
        assert!(!Path::new("/abs.txt").exists());
    }

    #[test]
    fn a_whiteout_never_deletes_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let (root, victim) = (dir.path().join("root"), dir.path().join("victim"));
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(victim.join("sub")).unwrap();
        fs::write(victim.join("secret"), "key").unwrap();
        let target = victim.to_str().unwrap();
        let layer = raw_tar(&[
            ("evil", tar::EntryType::Symlink, target, b""),
            ("evil/.wh.secret", tar::EntryType::Regular, "", b""),
            ("evil/.wh..wh..opq", tar::EntryType::Regular, "", b""),
        ]);
        unpack_layer(&layer[..], &root, &mut { u64::MAX }).unwrap();
        assert_eq!(fs::read_to_string(victim.join("secret")).unwrap(), "key");
        assert!(victim.join("sub").is_dir());
    }

    #[test]
    fn whiteouts_remove_what_earlier_layers_put() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let first = raw_tar(&[
            ("etc/", tar::EntryType::Directory, "", b""),
            ("etc/a", tar::EntryType::Regular, "", b"a"),
            ("etc/b", tar::EntryType::Regular, "", b"b"),
            ("var/", tar::EntryType::Directory, "", b""),
            ("var/x", tar::EntryType::Regular, "", b"x"),
        ]);
        unpack_layer(&first[..], root, &mut { u64::MAX }).unwrap();
        let second = raw_tar(&[
            ("etc/.wh.a", tar::EntryType::Regular, "", b""),
            ("var/.wh..wh..opq", tar::EntryType::Regular, "", b""),
            ("var/y", tar::EntryType::Regular, "", b"y"),
        ]);
        unpack_layer(&second[..], root, &mut { u64::MAX }).unwrap();
        assert!(!root.join("etc/a").exists());
        assert!(root.join("etc/b").exists());
        assert!(!root.join("var/x").exists());
        assert_eq!(fs::read(root.join("var/y")).unwrap(), b"y");
        assert!(!root.join("etc/.wh.a").exists());
    }
}
