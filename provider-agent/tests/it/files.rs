//! A job's files end to end, against a whole market: the buyer uploads an image built here
//! from Debian's busybox-static and an input; the agent fetches and verifies both, runs the
//! job in its sandbox from that image, uploads what it wrote by digest with a manifest, and
//! its next signed report names the manifest, which the log keeps with the signature.

use std::path::Path;
use std::time::Duration;

use api::testing::Market;
use contract::codec::{decode, CommandRecord};
use contract::{Command, Digest, NodeReport};
use ed25519_dalek::Verifier;
use serde_json::{json, Value};

use super::{h100_market, leases_on, reporting_agent};

/// `PUT /blobs` as `key`: the cid.
fn upload(m: &Market, key: &str, bytes: Vec<u8>) -> String {
    let answer: Value = m
        .http
        .put(format!("{}/blobs", m.url))
        .bearer_auth(key)
        .body(bytes)
        .send()
        .unwrap()
        .json()
        .unwrap();
    answer["cid"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned()
}

/// An image of busybox and `applets`, uploaded as the buyer: the manifest's cid.
pub fn busybox_image(m: &Market, applets: &[&str]) -> String {
    let busybox = std::fs::read("/bin/busybox").expect("Debian's busybox-static");
    let image = provider_agent::files::busybox_image(&busybox, applets);
    upload(m, &m.buyer, image.config);
    upload(m, &m.buyer, image.layer);
    upload(m, &m.buyer, image.manifest)
}

/// `GET /blobs/{cid}` as `key`: the status and the bytes.
fn download(m: &Market, key: &str, cid: &str) -> (u16, Vec<u8>) {
    let response = m
        .http
        .get(format!("{}/blobs/{cid}", m.url))
        .bearer_auth(key)
        .send()
        .unwrap();
    (
        response.status().as_u16(),
        response.bytes().unwrap().to_vec(),
    )
}

/// Every signed heartbeat in the market's log: the report's bytes and its signature.
fn signed_reports(log_url: &str) -> Vec<(Vec<u8>, [u8; 64])> {
    let topics = engine_service::Topics::with_prefix("");
    let mut log = eventlog::open(log_url, &eventlog::LogConfig::default()).unwrap();
    let end = log.end_offset(&topics.commands, 0).unwrap();
    let records = log
        .read(&topics.commands, 0, 0, end as usize + 1, Duration::ZERO)
        .unwrap();
    records
        .into_iter()
        .filter_map(|r| {
            let stamped: CommandRecord = decode(r.schema, &r.payload).unwrap();
            match stamped.command {
                Command::SignedHeartbeat(beat) => {
                    Some((beat.evidence.signed.clone(), beat.evidence.signature.0))
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn a_job_runs_from_its_image_on_its_inputs_and_its_outputs_come_back_signed() {
    let m = h100_market("agent_files");
    let dir = tempfile::tempdir().unwrap();
    let mut a = reporting_agent(&m, dir.path(), "node-f");
    leases_on(&m, "node-f", 2, 2);
    let image = busybox_image(
        &m,
        &["sh", "cat", "mkdir", "wc", "echo", "ln", "printf", "ls"],
    );
    let input = b"twelve bytes".to_vec();
    let input_cid = upload(&m, &m.buyer, input.clone());
    let script = "cat /job/in/scene/input.txt; echo; ls /; \
                  mkdir -p /job/out/frames && wc -c < /job/in/scene/input.txt > /job/out/frames/0001.txt; \
                  echo done > /job/out/result.txt; ln -s /etc/passwd /job/out/link; \
                  printf 'nul:\\000 bad:\\377 end\\n'";
    let submit = "mutation($i: String, $in: [JobInputInput!], $a: [String!]) { \
                  submitJob(leaseId: \"1\", command: \"/bin/sh\", args: $a, image: $i, inputs: $in) }";
    m.ok(
        &m.buyer,
        submit,
        json!({"i": image, "in": [{"cid": input_cid, "path": "scene/input.txt"}], "a": ["-c", script]}),
    );
    // Another job makes its `/job/out` a link to the host's `/etc`: the agent, reading as
    // root, takes nothing through it.
    m.ok(
        &m.buyer,
        "mutation($i: String) { submitJob(leaseId: \"2\", command: \"/bin/ln\", args: [\"-s\", \"/etc\", \"/job/out\"], image: $i) }",
        json!({"i": image}),
    );
    m.projected();

    let mut outputs = None;
    for _ in 0..200 {
        let step = a.step().unwrap();
        let job = a.jobs.get(1).unwrap();
        let other = a.jobs.get(2).unwrap().is_some_and(|j| j.outputs_reported);
        if let Some(job) = job.filter(|j| j.outputs_reported && other && step.flushed.sent > 0) {
            outputs = job.outputs.clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let outputs = outputs.expect("the job's outputs reported");
    let log = std::fs::read(a.jobs.log_path(1)).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.starts_with("twelve bytes\n"),
        "the input, verified: {text}"
    );
    assert!(
        !text.contains("usr"),
        "the image's root, not the host's: {text}"
    );

    let linked = a.jobs.get(2).unwrap().unwrap().outputs.unwrap();
    let linked: contract::OutputManifest =
        serde_json::from_slice(&download(&m, &m.buyer, &linked.manifest).1).unwrap();
    assert!(linked.files.is_empty(), "nothing of /etc: {linked:?}");
    assert!(linked.refused[0].contains("not a directory"), "{linked:?}");

    // The buyer reads the outputs by digest after the lease ended, as the manifest says.
    m.ok(
        &m.buyer,
        "mutation { endLease(leaseId: \"1\") { cause } }",
        json!({}),
    );
    for _ in 0..20 {
        a.step().unwrap();
    }
    m.projected();
    let leases = m.ok(
        &m.buyer,
        "{ leases(role: BUYER) { nodes { id job { outputManifest outputLog reportSequence logTail \
         outputs { path cid size downloadPath } } } } }",
        json!({}),
    );
    let job = leases["leases"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == json!("1") || l["id"] == json!(1))
        .expect("lease 1")["job"]
        .clone();
    assert_eq!(job["outputManifest"], outputs.manifest);
    assert_eq!(job["outputLog"], outputs.log);
    let files = job["outputs"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["frames/0001.txt", "result.txt"],
        "the link is not an output"
    );
    for (file, want) in files.iter().zip([&b"12\n"[..], b"done\n"]) {
        let (status, bytes) = download(&m, &m.buyer, file["cid"].as_str().unwrap());
        assert_eq!((status, bytes.as_slice()), (200, want));
        assert_eq!(Digest::of(&bytes).cid(), file["cid"]);
    }
    let manifest: contract::OutputManifest =
        serde_json::from_slice(&download(&m, &m.buyer, &outputs.manifest).1).unwrap();
    assert_eq!(manifest.lease, 1);
    assert_eq!(manifest.refused.len(), 1, "{:?}", manifest.refused);
    // The whole log is kept byte for byte; the tail is shown escaped.
    let (_, whole) = download(&m, &m.buyer, &outputs.log);
    assert_eq!(whole, log);
    assert!(whole.windows(5).any(|w| w == b"nul:\0"));
    let tail = job["logTail"].as_str().unwrap();
    assert!(tail.contains("nul:\\x00 bad:\\xff end"), "{tail}");
    assert_eq!(
        download(&m, &m.provider, &outputs.manifest).0,
        403,
        "the buyer's, not the provider's"
    );

    // Anyone holding the log can check which node signed which outputs on which GPUs.
    let key = a.key.verifying_key();
    let naming: Vec<NodeReport> = signed_reports(&m.log_url)
        .into_iter()
        .filter_map(|(signed, signature)| {
            key.verify(&signed, &ed25519_dalek::Signature::from_bytes(&signature))
                .expect("every heartbeat's signature verifies");
            let report: NodeReport = serde_json::from_slice(&signed).unwrap();
            (!report.outputs.is_empty()).then_some(report)
        })
        .collect();
    let named: Vec<&NodeReport> = naming
        .iter()
        .filter(|r| r.outputs.iter().any(|o| o.lease == 1))
        .collect();
    assert_eq!(named.len(), 1, "one report named the outputs");
    let naming = named;
    assert_eq!(
        naming[0].outputs.iter().find(|o| o.lease == 1),
        Some(&outputs)
    );
    assert_eq!(Some(naming[0].sequence), job["reportSequence"].as_u64());
    let uuid = &a.gpus.iter().find(|g| g.index == 0).unwrap().uuid;
    assert_eq!(
        outputs.gpus,
        vec![uuid.clone()],
        "the GPU it ran on, by UUID"
    );
    assert!(Path::new(&dir.path().join("state/images")).is_dir());
}

/// A job whose files do not make a job is the buyer's fault: refused with the reason, its
/// lease kept healthy (so never failed, nor the provider slashed, for it), nothing run.
#[test]
fn a_job_whose_image_does_not_unpack_or_whose_input_is_gone_is_refused_not_failed() {
    let m = h100_market("agent_refused");
    let dir = tempfile::tempdir().unwrap();
    let mut a = reporting_agent(&m, dir.path(), "node-r");
    leases_on(&m, "node-r", 2, 2);
    // An image whose one layer is not a tar.gz, though its manifest is well formed.
    let good = provider_agent::files::busybox_image(b"#!", &["sh"]);
    let garbage = b"not a gzip stream at all".to_vec();
    let mut manifest: contract::image::ImageManifest =
        serde_json::from_slice(&good.manifest).unwrap();
    manifest.layers[0].digest = Digest::of(&garbage).oci();
    manifest.layers[0].size = garbage.len() as u64;
    upload(&m, &m.buyer, good.config);
    upload(&m, &m.buyer, garbage);
    let image = upload(&m, &m.buyer, serde_json::to_vec(&manifest).unwrap());
    m.ok(
        &m.buyer,
        "mutation($i: String) { submitJob(leaseId: \"1\", command: \"/bin/sh\", image: $i) }",
        json!({"i": image}),
    );
    // An input the buyer deletes after submitting.
    let input = upload(&m, &m.buyer, b"deleted before the job ran".to_vec());
    m.ok(
        &m.buyer,
        "mutation($in: [JobInputInput!]) { submitJob(leaseId: \"2\", command: \"/bin/cat\", inputs: $in) }",
        json!({"in": [{"cid": input, "path": "scene"}]}),
    );
    m.ok(
        &m.buyer,
        "mutation($c: String!) { deleteBlob(cid: $c) }",
        json!({"c": input}),
    );
    m.projected();

    let mut healthy = None;
    for _ in 0..200 {
        let step = a.step().unwrap();
        let sent = |l| a.jobs.get(l).unwrap().is_some_and(|j| j.outcome_sent);
        if sent(1) && sent(2) {
            healthy = step.healthy_leases;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(healthy, Some(vec![1, 2]), "the provider did its part");
    for (lease, why) in [(1, "layer"), (2, "NOT_FOUND")] {
        let job = a.jobs.get(lease).unwrap().unwrap();
        match &job.status {
            provider_agent::jobs::JobStatus::Refused { reason } => {
                assert!(reason.contains(why), "{reason}")
            }
            other => panic!("lease {lease}: {other:?}"),
        }
        assert_eq!(job.gpus.len(), 1, "the lease's GPU stays its own");
    }
    m.projected();
    let leases = m.ok(
        &m.buyer,
        "{ leases(role: BUYER) { nodes { id status job { outcome } } } }",
        json!({}),
    );
    for lease in leases["leases"]["nodes"].as_array().unwrap() {
        assert_ne!(lease["status"], "ended", "{lease}");
        let outcome = lease["job"]["outcome"].as_str().unwrap();
        assert!(outcome.starts_with("refused: "), "{outcome}");
    }
}

#[test]
fn a_job_that_asks_for_the_network_is_refused_where_the_provider_offers_none() {
    let m = h100_market("agent_no_network");
    let dir = tempfile::tempdir().unwrap();
    let mut a = reporting_agent(&m, dir.path(), "node-n");
    leases_on(&m, "node-n", 2, 1);
    m.ok(
        &m.buyer,
        "mutation { submitJob(leaseId: \"1\", command: \"/bin/true\", network: true) }",
        json!({}),
    );
    m.projected();
    let mut healthy = None;
    for _ in 0..200 {
        let step = a.step().unwrap();
        if a.jobs.get(1).unwrap().is_some_and(|j| j.outcome_sent) {
            healthy = step.healthy_leases;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(healthy, Some(vec![1]), "not the provider's failure");
    let job = a.jobs.get(1).unwrap().unwrap();
    assert!(
        matches!(&job.status, provider_agent::jobs::JobStatus::Refused { reason } if reason.contains("network")),
        "{job:?}"
    );
    m.projected();
    let leases = m.ok(
        &m.buyer,
        "{ leases(role: BUYER) { nodes { job { network outcome } } } }",
        json!({}),
    );
    let shown = &leases["leases"]["nodes"][0]["job"];
    assert_eq!(shown["network"], true);
    assert!(
        shown["outcome"].as_str().unwrap().contains("network"),
        "{shown}"
    );
}
