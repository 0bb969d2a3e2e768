//! `submitRenderJob`'s boundary: every malformed request is a typed error that appends
//! nothing and stores nothing; a budget that cannot cover the frames is `BUDGET_TOO_LOW`
//! before anything is bought; the same request again is the same job; another account's
//! job is not found.

use api::testing::Market;
use api::Limits;
use serde_json::{json, Value};

use crate::Seed;

const SUBMIT: &str = "mutation($i: RenderJobInput!) { submitRenderJob(input: $i) { id status \
    progress { frames rendering } tasks { role frames state } } }";

/// A file that starts like a Blender 3.4 scene (the API reads only the header).
fn scene_bytes() -> Vec<u8> {
    let mut bytes = b"BLENDER-v304REND".to_vec();
    bytes.extend_from_slice(&[0; 64]);
    bytes
}

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
    answer["cid"].as_str().unwrap().to_owned()
}

fn input(scene: &str) -> Value {
    json!({"clientJobId": "job-1", "scene": scene, "frameStart": 1, "frameEnd": 24,
        "engineVersion": "3.4", "market": "H100-80GB", "limitPrice": "2.00", "budget": "10",
        "frameSeconds": 60})
}

#[test]
fn bad_render_jobs_are_typed_errors_that_change_nothing() {
    let m = Market::start("api_render", Limits::default());
    m.seed();
    let scene = upload(&m, &m.buyer, scene_bytes());
    let not_blend = upload(&m, &m.buyer, b"PK\x03\x04 a zip, not a scene".to_vec());
    let mut newer = b"BLENDER-v402REND".to_vec();
    newer.extend_from_slice(&[0; 64]);
    let newer = upload(&m, &m.buyer, newer);
    let theirs = upload(
        &m,
        &m.provider,
        scene_bytes().into_iter().chain([1]).collect(),
    );
    let with = |change: Value| {
        let mut i = input(&scene);
        for (k, v) in change.as_object().unwrap() {
            i[k] = v.clone();
        }
        json!({"i": i})
    };
    let before = m.commands();
    for (change, code) in [
        (json!({"scene": not_blend}), "VALIDATION"),
        (json!({"scene": newer}), "VALIDATION"),
        (json!({"scene": "bafkreinotacid"}), "VALIDATION"),
        (json!({"scene": theirs}), "FORBIDDEN"),
        (json!({"frameStart": 10, "frameEnd": 9}), "VALIDATION"),
        (json!({"frameStart": 0, "frameEnd": 100_000}), "VALIDATION"),
        (json!({"engineVersion": "4.2"}), "VALIDATION"),
        (json!({"engine": "eevee"}), "VALIDATION"),
        (json!({"format": "JPEG"}), "VALIDATION"),
        (json!({"samples": 0}), "VALIDATION"),
        (json!({"checkShare": "1.5"}), "VALIDATION"),
        (json!({"framesPerTask": 0}), "VALIDATION"),
        (json!({"maxAttempts": 0}), "VALIDATION"),
        (json!({"frameSeconds": 0}), "VALIDATION"),
        (json!({"limitPrice": "-1"}), "VALIDATION"),
        (json!({"budget": "0"}), "VALIDATION"),
        (json!({"clientJobId": ""}), "VALIDATION"),
        (json!({"market": "NOPE"}), "UNKNOWN_MARKET"),
        (json!({"leases": ["7"]}), "NOT_FOUND"),
        // 24 frames of a minute at 2.00 per GPU-hour, 5% twice: 0.84, but a lease holds 2.00.
        (json!({"budget": "1.99"}), "BUDGET_TOO_LOW"),
        (
            json!({"frameSeconds": 3600, "budget": "40"}),
            "BUDGET_TOO_LOW",
        ),
    ] {
        assert_eq!(
            m.code(Some(&m.buyer), SUBMIT, with(change.clone())),
            code,
            "{change}"
        );
    }
    assert_eq!(
        m.code(Some(&m.provider), SUBMIT, with(json!({}))),
        "FORBIDDEN",
        "a provider key buys nothing"
    );
    assert_eq!(m.commands(), before, "nothing appended");
    let listed = m.ok(&m.buyer, "{ renderJobs { id } }", json!({}));
    assert_eq!(listed["renderJobs"], json!([]), "nothing stored");

    // A good job: its frames in tasks of the default eight; the same request again is the
    // same job, another under the same client id is refused.
    let first = m.ok(&m.buyer, SUBMIT, with(json!({})))["submitRenderJob"].clone();
    assert_eq!(first["status"], "RUNNING");
    assert_eq!(first["progress"], json!({"frames": 24, "rendering": 24}));
    let tasks = first["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    assert!(tasks
        .iter()
        .all(|t| t["role"] == "RENDER" && t["state"] == "waiting"));
    let again = m.ok(&m.buyer, SUBMIT, with(json!({})))["submitRenderJob"].clone();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(
        m.code(Some(&m.buyer), SUBMIT, with(json!({"frameEnd": 12}))),
        "VALIDATION"
    );
    // The job is its buyer's: nobody else finds it.
    let read = json!({"id": first["id"]});
    assert_eq!(
        m.code(
            Some(&m.provider),
            "query($id: ID!) { renderJob(id: $id) { id } }",
            read.clone()
        ),
        "NOT_FOUND"
    );
    // A frame not yet delivered cannot be rejected.
    let reject = "mutation($id: ID!) { rejectRenderFrame(jobId: $id, frame: 3, reason: \"blurry\") { number } }";
    assert_eq!(m.code(Some(&m.buyer), reject, read), "VALIDATION");
}
