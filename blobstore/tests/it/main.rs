//! The blob store on the local filesystem: names, digests checked before anything is
//! visible, the same bytes at once, limits, and a kill -9 in the middle of an upload.

use std::path::Path;
use std::time::{Duration, Instant};

use blobstore::{BlobError, BlobStore, Digest};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};

fn chunks(data: &[u8], size: usize) -> impl futures_util::Stream<Item = Result<Bytes, String>> {
    let parts: Vec<Result<Bytes, String>> = data
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(parts)
}

/// Every file under `dir`, relative.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_digest_is_written_as_a_cidv1_raw_and_read_in_either_spelling() {
    // The CID every IPFS implementation gives the empty raw block.
    let empty = Digest::of(b"");
    assert_eq!(
        empty.cid(),
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    );
    assert_eq!(
        empty.oci(),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(Digest::parse(&empty.cid()).unwrap(), empty);
    assert_eq!(Digest::parse(&empty.oci()).unwrap(), empty);
    let hello = Digest::of(b"hello");
    assert_eq!(hello.to_string().parse::<Digest>().unwrap(), hello);
    for bad in [
        "",
        "b",
        "../../etc/passwd",
        "blobs/x",
        "sha256:",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
        "BAFKREIHDWDCEFGH4DQKJV67UZCMW7OJEE6XEDZDETOJUZJEVTENXQUVYKU",
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk",
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykua",
        // A CIDv1 of another codec (dag-pb) over the same digest.
        "bafybeihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    ] {
        assert!(Digest::parse(bad).is_err(), "{bad:?} was read as a digest");
    }
}

#[tokio::test]
async fn a_blob_is_stored_under_its_digest_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path()).unwrap();
    let data: Vec<u8> = (0..20_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let stored = store
        .put(chunks(&data, 65_536), None, u64::MAX)
        .await
        .unwrap();
    assert_eq!(stored.digest, Digest::of(&data));
    assert_eq!(stored.size, data.len() as u64);
    assert!(stored.new);
    assert_eq!(
        store.size(stored.digest).await.unwrap(),
        Some(data.len() as u64)
    );
    let (size, mut body) = store.get(stored.digest).await.unwrap();
    assert_eq!(size, data.len() as u64);
    let mut back = Vec::new();
    while let Some(chunk) = body.next().await {
        back.extend_from_slice(&chunk.unwrap());
    }
    assert!(back == data, "the bytes read back are the bytes stored");
    assert_eq!(
        files(dir.path()),
        vec![format!("blobs/{}", stored.digest.cid())],
        "one object, under its name, nothing staged"
    );
    // Claimed correctly: stored (again: the same blob).
    let again = store
        .put(chunks(&data, 1 << 20), Some(Digest::of(&data)), u64::MAX)
        .await
        .unwrap();
    assert_eq!(again.digest, stored.digest);
    assert!(!again.new);
    let missing = Digest::of(b"never stored");
    assert!(matches!(
        store.get(missing).await,
        Err(BlobError::NotFound(d)) if d == missing
    ));
    assert_eq!(store.size(missing).await.unwrap(), None);
    store.delete(stored.digest).await.unwrap();
    assert_eq!(store.size(stored.digest).await.unwrap(), None);
}

#[tokio::test]
async fn a_wrong_digest_an_oversize_body_or_a_cut_off_one_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path()).unwrap();
    let data = vec![42u8; 3_000_000];
    let claimed = Digest::of(b"something else");
    match store
        .put(chunks(&data, 100_000), Some(claimed), u64::MAX)
        .await
    {
        Err(BlobError::DigestMismatch { claimed: c, actual }) => {
            assert_eq!(c, claimed);
            assert_eq!(actual, Digest::of(&data));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.put(chunks(&data, 100_000), None, 2_999_999).await,
        Err(BlobError::TooLarge { limit: 2_999_999 })
    ));
    let cut = stream::iter(vec![
        Ok(Bytes::from_static(b"half of it")),
        Err("connection reset".to_owned()),
    ]);
    assert!(matches!(
        store.put(cut, None, u64::MAX).await,
        Err(BlobError::Body(m)) if m.contains("reset")
    ));
    assert_eq!(
        files(dir.path()),
        Vec::<String>::new(),
        "nothing left anywhere"
    );
    assert_eq!(store.size(Digest::of(&data)).await.unwrap(), None);
}

#[tokio::test(flavor = "current_thread")]
async fn the_same_bytes_uploaded_at_once_are_one_whole_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path()).unwrap();
    let data: Vec<u8> = (0..9_000_000u32).map(|i| (i % 253) as u8).collect();
    let uploads = (0..6).map(|i| store.put(chunks(&data, 10_000 + i * 1_000), None, u64::MAX));
    let stored = futures_util::future::join_all(uploads).await;
    for s in &stored {
        assert_eq!(s.as_ref().unwrap().digest, Digest::of(&data));
    }
    assert_eq!(files(dir.path()).len(), 1);
    let back = store.read(Digest::of(&data)).await.unwrap();
    assert!(back == data);
}

/// Run only as the child of the kill -9 test: uploads forever, saying when it is halfway.
#[tokio::test]
#[ignore = "the kill -9 test's child"]
async fn child_uploading_until_killed() {
    let Ok(dir) = std::env::var("BLOBSTORE_CHILD_DIR") else {
        return;
    };
    let store = BlobStore::local(Path::new(&dir)).unwrap();
    let marker = Path::new(&dir).join("../halfway");
    let body = stream::unfold(0u64, move |sent| {
        let marker = marker.clone();
        async move {
            if sent == 40 {
                std::fs::write(&marker, b"").unwrap();
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Some((Ok::<_, String>(Bytes::from(vec![7u8; 1 << 20])), sent + 1))
        }
    });
    store.put(body, None, u64::MAX).await.unwrap();
}

#[test]
fn a_kill_9_in_the_middle_of_an_upload_leaves_no_partial_object() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_uploading_until_killed",
            "--exact",
            "--include-ignored",
            "--nocapture",
        ])
        .env("BLOBSTORE_CHILD_DIR", &dir)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !scratch.path().join("halfway").exists() {
        assert!(Instant::now() < deadline, "the child never got halfway");
        assert!(child.try_wait().unwrap().is_none(), "the child ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let staged = files(&dir);
    assert!(
        staged.iter().all(|f| f.starts_with("staging/")) && !staged.is_empty(),
        "40 MiB were written, all in staging: {staged:?}"
    );
    let _store = BlobStore::local(&dir).unwrap();
    assert_eq!(
        files(&dir),
        Vec::<String>::new(),
        "reopening removes the staged part"
    );
}
