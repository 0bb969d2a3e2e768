//! `/blobs` and the blob fields: digests checked, quotas, the access matrix (owner; the
//! provider of a running lease whose job names the blob; nobody else), job inputs and
//! outputs, deletion, and bad input at every door.

use api::testing::{Market, T_BUYER};
use api::Limits;
use contract::Digest;
use serde_json::{json, Value};

use super::{bid_input, Seed, PLACE};

/// `PUT /blobs` with `key`; the status and the JSON answer.
fn put(m: &Market, key: &str, body: Vec<u8>, query: &str) -> (u16, Value) {
    let response = m
        .http
        .put(format!("{}/blobs{query}", m.url))
        .bearer_auth(key)
        .body(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

/// `GET /blobs/{path}` with `key`; the status and the bytes.
fn get(m: &Market, key: Option<&str>, path: &str) -> (u16, Vec<u8>) {
    let request = m.http.get(format!("{}/blobs/{path}", m.url));
    let request = match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    };
    let response = request.send().unwrap();
    (
        response.status().as_u16(),
        response.bytes().unwrap().to_vec(),
    )
}

fn code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every object file under the store's `blobs/`.
fn stored(m: &Market) -> usize {
    std::fs::read_dir(m.dir.path().join("blobs/blobs")).map_or(0, |d| d.count())
}

/// A lease on the seeded ask for the buyer: its id.
fn lease(m: &Market) -> String {
    m.seed();
    let placed = m.ok(&m.buyer, PLACE, bid_input("301", "2.10", 1))["placeOrder"].clone();
    let id = &placed["fills"][0]["leaseId"];
    id.as_str().map_or_else(|| id.to_string(), str::to_owned)
}

const SUBMIT: &str = "mutation($l: ID!, $c: String!, $a: [String!], $i: String, \
    $in: [JobInputInput!]) { submitJob(leaseId: $l, command: $c, args: $a, image: $i, inputs: $in) }";

#[test]
fn an_upload_is_named_by_its_digest_and_read_back_by_its_owner_only() {
    let m = Market::start("blobs_owner", Limits::default());
    let data = b"frame 0001 of the buyer's scene".to_vec();
    let digest = Digest::of(&data);
    let (status, answer) = put(&m, &m.buyer, data.clone(), "");
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["cid"], digest.cid());
    assert_eq!(answer["sha256"], digest.hex());
    assert_eq!(answer["size"], data.len());
    // The same bytes again, claimed in either spelling: the same blob, counted once.
    for claim in [digest.cid(), digest.oci()] {
        let (status, again) = put(&m, &m.buyer, data.clone(), &format!("?digest={claim}"));
        assert_eq!((status, &again["cid"]), (200, &json!(digest.cid())));
    }
    assert_eq!(stored(&m), 1);

    assert_eq!(get(&m, Some(&m.buyer), &digest.cid()), (200, data.clone()));
    assert_eq!(get(&m, Some(&m.buyer), &digest.oci()).1, data);
    let (status, body) = get(&m, Some(&m.provider), &digest.cid());
    assert_eq!((status, code(&body)), (403, "FORBIDDEN".to_owned()));
    let (status, body) = get(&m, Some(&m.admin), &digest.cid());
    assert_eq!(
        status, 403,
        "not even the admin reads a buyer's data: {body:?}"
    );
    let (status, body) = get(&m, None, &digest.cid());
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED".to_owned()));
    let (status, body) = get(&m, Some(&m.buyer), &Digest::of(b"nobody").cid());
    assert_eq!((status, code(&body)), (404, "NOT_FOUND".to_owned()));
    for bad in ["%2e%2e%2f%2e%2e%2fetc%2fpasswd", "bafkreiX", "sha256:00"] {
        let (status, body) = get(&m, Some(&m.buyer), bad);
        assert_eq!(
            (status, code(&body)),
            (400, "VALIDATION".to_owned()),
            "{bad}"
        );
    }

    let listed = m.ok(
        &m.buyer,
        "{ blobs { cid size origin leaseId downloadPath } blobQuota { maxBytes usedBytes retentionDays } }",
        json!({}),
    );
    assert_eq!(
        listed["blobs"],
        json!([{"cid": digest.cid(), "size": data.len(), "origin": "UPLOAD", "leaseId": null,
                "downloadPath": format!("/blobs/{}", digest.cid())}])
    );
    assert_eq!(listed["blobQuota"]["usedBytes"], data.len());
    assert_eq!(
        listed["blobQuota"]["retentionDays"],
        Value::Null,
        "kept until deleted"
    );
    assert_eq!(
        m.code(
            Some(&m.provider),
            "query($c: String!) { blob(cid: $c) { size } }",
            json!({"c": digest.cid()})
        ),
        "FORBIDDEN"
    );

    // Deleting the last hold removes the bytes.
    assert_eq!(
        m.ok(
            &m.buyer,
            "mutation($c: String!) { deleteBlob(cid: $c) }",
            json!({"c": digest.cid()})
        )["deleteBlob"],
        true
    );
    assert_eq!(stored(&m), 0);
    assert_eq!(get(&m, Some(&m.buyer), &digest.cid()).0, 404);
    assert_eq!(
        m.code(
            Some(&m.buyer),
            "mutation($c: String!) { deleteBlob(cid: $c) }",
            json!({"c": digest.cid()})
        ),
        "NOT_FOUND"
    );
}

#[test]
fn a_wrong_digest_or_an_upload_over_quota_stores_nothing() {
    let m = Market::start("blobs_refused", Limits::default());
    let (status, answer) = put(
        &m,
        &m.buyer,
        b"the real bytes".to_vec(),
        &format!("?digest={}", Digest::of(b"other bytes").cid()),
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("DIGEST_MISMATCH")),
        "{answer}"
    );
    let (status, answer) = put(&m, &m.buyer, b"x".to_vec(), "?digest=../../x");
    assert_eq!((status, answer["code"].as_str()), (400, Some("VALIDATION")));
    assert_eq!(stored(&m), 0);

    m.ok(
        &m.admin,
        "mutation($a: ID!) { setBlobQuota(account: $a, maxBytes: 1000) }",
        json!({"a": T_BUYER.to_string()}),
    );
    assert_eq!(
        m.code(
            Some(&m.buyer),
            "mutation($a: ID!) { setBlobQuota(account: $a, maxBytes: 1) }",
            json!({"a": "1"})
        ),
        "FORBIDDEN"
    );
    assert_eq!(put(&m, &m.buyer, vec![1; 600], "").0, 201);
    // Declared too large: refused before the body is read.
    let (status, answer) = put(&m, &m.buyer, vec![2; 600], "");
    assert_eq!(
        (status, answer["code"].as_str()),
        (413, Some("QUOTA_EXCEEDED")),
        "{answer}"
    );
    // Streamed without a length: refused when the count passes the room.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![3u8; 100])).collect();
    let response = m
        .http
        .put(format!("{}/blobs", m.url))
        .bearer_auth(&m.buyer)
        .body(reqwest::blocking::Body::new(ChunkedReader(
            chunks.into_iter(),
        )))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(stored(&m), 1, "only the first upload is kept");
    let quota = m.ok(&m.buyer, "{ blobQuota { maxBytes usedBytes } }", json!({}));
    assert_eq!(
        quota["blobQuota"],
        json!({"maxBytes": 1000, "usedBytes": 600})
    );
}

/// A body of unknown length, as a client streaming from a pipe sends it.
struct ChunkedReader(std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>);

impl std::io::Read for ChunkedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.next() {
            None => Ok(0),
            Some(Err(e)) => Err(e),
            Some(Ok(chunk)) => {
                buf[..chunk.len()].copy_from_slice(&chunk);
                Ok(chunk.len())
            }
        }
    }
}

#[test]
fn the_provider_reads_a_jobs_inputs_only_while_its_lease_runs_and_writes_its_outputs_for_the_buyer()
{
    let m = Market::start("blobs_jobs", Limits::default());
    let lease = lease(&m);
    let input = b"scene.blend bytes".to_vec();
    let other = b"the buyer's other data".to_vec();
    let cid = put(&m, &m.buyer, input.clone(), "").1["cid"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_cid = put(&m, &m.buyer, other, "").1["cid"]
        .as_str()
        .unwrap()
        .to_owned();
    let provider_own = put(&m, &m.provider, b"provider's".to_vec(), "").1["cid"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bad job files: typed, nothing stored.
    let job = |inputs: Value, image: Value| json!({"l": lease, "c": "/bin/cat", "a": ["/job/in/scene.blend"], "i": image, "in": inputs});
    for (inputs, image, code) in [
        (
            json!([{"cid": cid, "path": "../scene.blend"}]),
            Value::Null,
            "VALIDATION",
        ),
        (
            json!([{"cid": cid, "path": "/etc/scene.blend"}]),
            Value::Null,
            "VALIDATION",
        ),
        (
            json!([{"cid": cid, "path": "a//b"}]),
            Value::Null,
            "VALIDATION",
        ),
        (
            json!([{"cid": cid, "path": "a"}, {"cid": other_cid, "path": "a"}]),
            Value::Null,
            "VALIDATION",
        ),
        (
            json!([{"cid": "nope", "path": "a"}]),
            Value::Null,
            "VALIDATION",
        ),
        (
            json!([{"cid": provider_own, "path": "a"}]),
            Value::Null,
            "FORBIDDEN",
        ),
        (
            json!([{"cid": Digest::of(b"never").cid(), "path": "a"}]),
            Value::Null,
            "NOT_FOUND",
        ),
        // An image must be an OCI manifest.
        (json!([]), json!(cid), "VALIDATION"),
    ] {
        assert_eq!(
            m.code(Some(&m.buyer), SUBMIT, job(inputs.clone(), image)),
            code,
            "{inputs}"
        );
    }
    let nul = json!({"l": lease, "c": "/bin/echo\u{0}x", "a": [], "i": null, "in": []});
    assert_eq!(m.code(Some(&m.buyer), SUBMIT, nul), "VALIDATION");
    assert_eq!(
        get(&m, Some(&m.provider), &cid).0,
        403,
        "no job names it yet"
    );

    let inputs = json!([{"cid": cid, "path": "scene.blend"}]);
    m.ok(&m.buyer, SUBMIT, job(inputs.clone(), Value::Null));
    assert_eq!(get(&m, Some(&m.provider), &cid), (200, input.clone()));
    assert_eq!(
        get(&m, Some(&m.provider), &other_cid).0,
        403,
        "only what the job names"
    );
    m.projected();
    let shown = m.ok(
        &m.buyer,
        "{ leases(role: BUYER) { nodes { id job { image inputs { cid path } } } } }",
        json!({}),
    );
    assert_eq!(shown["leases"]["nodes"][0]["job"]["inputs"], inputs);

    // The provider's agent uploads an output for the buyer.
    let output = b"rendered frame".to_vec();
    let (status, stored_output) = put(&m, &m.provider, output.clone(), &format!("?lease={lease}"));
    assert_eq!(status, 201, "{stored_output}");
    let out_cid = stored_output["cid"].as_str().unwrap().to_owned();
    assert_eq!(
        put(&m, &m.buyer, b"x".to_vec(), &format!("?lease={lease}")).0,
        403,
        "buyers upload their own"
    );
    assert_eq!(
        put(&m, &m.provider, b"x".to_vec(), "?lease=999").0,
        403,
        "no job of this provider"
    );
    let listed = m.ok(&m.buyer, "{ blobs { cid origin leaseId } }", json!({}));
    assert!(
        listed["blobs"]
            .as_array()
            .unwrap()
            .contains(&json!({"cid": out_cid, "origin": "OUTPUT", "leaseId": lease})),
        "{listed}"
    );
    assert_eq!(get(&m, Some(&m.buyer), &out_cid), (200, output));

    // The lease ends: the provider reads the input no more.
    m.ok(
        &m.buyer,
        "mutation($l: ID!) { endLease(leaseId: $l) { cause } }",
        json!({"l": lease}),
    );
    assert_eq!(get(&m, Some(&m.provider), &cid).0, 403);
    assert_eq!(get(&m, Some(&m.buyer), &cid), (200, input));
}

#[test]
fn blobs_outlive_nothing_but_their_accounts_retention_and_a_running_job_keeps_its_inputs() {
    let m = Market::start_with(
        "blobs_retention",
        api::ApiConfig {
            blob_expiry_every: Some(std::time::Duration::from_millis(100)),
            ..api::ApiConfig::default()
        },
    );
    let lease = lease(&m);
    let cid = |key: &str, body: &[u8]| {
        put(&m, key, body.to_vec(), "").1["cid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let old = cid(&m.buyer, b"last year's frames");
    let input = cid(&m.buyer, b"the running job's scene");
    let fresh = cid(&m.buyer, b"today's frames");
    let kept = cid(&m.provider, b"the provider keeps everything");
    m.ok(
        &m.buyer,
        SUBMIT,
        json!({"l": lease, "c": "/bin/cat", "a": [], "i": null, "in": [{"cid": input, "path": "scene"}]}),
    );
    m.projected();
    // Three days pass for everything but `fresh` (the holds are dated back).
    let mut conn = m.db.connect();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(
            "UPDATE blob_refs SET created_at = now() - interval '3 days' WHERE cid <> $1",
        )
        .bind::<diesel::sql_types::Text, _>(&fresh),
        &mut conn,
    )
    .unwrap();
    let before = stored(&m);
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(stored(&m), before, "no account has a retention: all kept");

    m.ok(
        &m.admin,
        "mutation($a: ID!) { setBlobQuota(account: $a, retentionDays: 2) }",
        json!({"a": T_BUYER.to_string()}),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(&m, Some(&m.buyer), &old).0 != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "the old blob outlived its retention"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(stored(&m), before - 1, "its bytes are gone from the store");
    assert_eq!(
        get(&m, Some(&m.buyer), &fresh).0,
        200,
        "younger than the retention"
    );
    assert_eq!(
        get(&m, Some(&m.provider), &kept).0,
        200,
        "another account's retention"
    );
    assert_eq!(
        get(&m, Some(&m.buyer), &input).0,
        200,
        "named by a job whose lease runs"
    );

    m.ok(
        &m.buyer,
        "mutation($l: ID!) { endLease(leaseId: $l) { cause } }",
        json!({"l": lease}),
    );
    m.projected();
    while get(&m, Some(&m.buyer), &input).0 != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "the input outlived its lease"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn where_storage_has_a_price_each_hour_is_charged_once_as_its_own_invoice_line() {
    // 730,000 a GB-month is one micro-unit a byte-hour: 5,000 bytes cost 0.005 an hour.
    let m = Market::start_with(
        "blobs_storage_price",
        api::ApiConfig {
            blob_expiry_every: Some(std::time::Duration::from_millis(100)),
            storage_price: Some(contract::Price::parse("730000").unwrap()),
            ..api::ApiConfig::default()
        },
    );
    m.seed();
    let available = |key: &str| {
        m.ok(key, "{ balance { available } }", json!({}))["balance"]["available"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = available(&m.buyer);
    let (status, _) = put(&m, &m.buyer, vec![7; 5_000], "");
    assert_eq!(status, 201);
    let invoice = || {
        m.projected();
        m.ok(
            &m.buyer,
            "{ invoices { edges { node { lines amount storageGbHours storageAmount storageUnpaid } } } }",
            json!({}),
        )["invoices"]["edges"][0]["node"]
            .clone()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while invoice().is_null() {
        assert!(std::time::Instant::now() < deadline, "no storage charge");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // More rounds of the biller within the hour charge nothing more.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let line = invoice();
    assert_eq!(
        line,
        json!({"lines": 0, "amount": "0.000000", "storageGbHours": "0.000005",
               "storageAmount": "0.005000", "storageUnpaid": "0.000000"}),
        "the storage line beside no GPU usage"
    );
    let paid = rust_decimal::Decimal::from_str_exact(&before).unwrap()
        - rust_decimal::Decimal::from_str_exact(&available(&m.buyer)).unwrap();
    assert_eq!(
        paid.normalize().to_string(),
        "0.005",
        "paid from the balance"
    );
    let provider = m.ok(&m.provider, "{ invoices { edges { cursor } } }", json!({}));
    assert_eq!(
        provider["invoices"]["edges"],
        json!([]),
        "holds nothing, pays nothing"
    );
    // The money moved by postings that balance, like every other: buyer to the market's fees.
    let journal = m.ok(
        &m.buyer,
        "{ journal { edges { node { kind postings { account bucket amount } } } } }",
        json!({}),
    );
    let charged: Vec<&Value> = journal["journal"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["node"]["kind"] == "storage_charged")
        .collect();
    assert_eq!(charged.len(), 1, "{journal}");
    assert_eq!(
        charged[0]["node"]["postings"],
        json!([{"account": T_BUYER, "bucket": "available", "amount": "-0.005000"},
               {"account": 0, "bucket": "fees", "amount": "0.005000"}])
    );
}

/// One account deletes the bytes another uploads at the same time, over and over, while the
/// upkeep removes what is marked for deletion every few milliseconds: every upload that was
/// answered yes can be read back whole, and nothing is left half-removed.
#[test]
fn bytes_deleted_while_another_account_uploads_them_are_never_lost_under_its_hold() {
    let m = Market::start_with(
        "blobs_delete_race",
        api::ApiConfig {
            blob_expiry_every: Some(std::time::Duration::from_millis(5)),
            ..api::ApiConfig::default()
        },
    );
    let body = b"the same frame, uploaded and deleted at once".to_vec();
    let cid = Digest::of(&body).cid();
    let delete = "mutation($c: String!) { deleteBlob(cid: $c) }";
    let held = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..40 {
                put(&m, &m.buyer, body.clone(), "");
                m.gql(Some(&m.buyer), delete, json!({"c": cid}));
            }
        });
        s.spawn(|| {
            for _ in 0..40 {
                let (status, answer) = put(&m, &m.provider, body.clone(), "");
                match status {
                    200 | 201 => {
                        held.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        assert_eq!(get(&m, Some(&m.provider), &cid), (200, body.clone()));
                        m.ok(&m.provider, delete, json!({"c": cid}));
                    }
                    // The bytes were being removed: told to send them again.
                    503 => assert_eq!(answer["code"], "UNAVAILABLE", "{answer}"),
                    other => panic!("{other}: {answer}"),
                }
            }
        });
    });
    assert!(held.into_inner() > 0, "some uploads were held");
    // Both holds gone: nothing listed, no bytes left behind.
    assert_eq!(get(&m, Some(&m.buyer), &cid).0, 404);
    assert_eq!(stored(&m), 0);
}
