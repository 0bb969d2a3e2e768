//! A render job end to end against a whole market, with Blender for real: three agents on
//! simulated GPUs offer them, one of them cheapest and dishonest (its frames' pixels are
//! changed before upload). The market buys the leases, the agents render the frames in their
//! sandboxes, the market checks a share of them on other providers, a referee catches the
//! liar, its leases end rejected and slashed, and its frames are rendered again elsewhere:
//! the buyer gets every frame with the pixels of a local render of the same scene.

use std::path::Path;
use std::time::{Duration, Instant};

use api::testing::Market;
use provider_agent::config::Config;
use provider_agent::{durable, Agent};
use render::{EngineVersion, FrameRange, OutputFormat, Pixels, RenderSpec};
use serde_json::{json, Value};

use super::{h100_market_on, sandbox};

const LIAR: u64 = 23;

/// A reporting agent for provider `account` offering its two GPUs at `price`.
fn render_agent(m: &Market, dir: &Path, account: u64, price: &str, uid: u32, lies: bool) -> Agent {
    let key = m.ok(
        &m.admin,
        "mutation($a: ID!) { createApiKey(role: PROVIDER, account: $a) { key } }",
        json!({"a": account.to_string()}),
    )["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    m.ok(
        &m.admin,
        "mutation($a: ID!) { creditDeposit(account: $a, amount: \"100\") { amount } }",
        json!({"a": account.to_string()}),
    );
    m.ok(
        &key,
        "mutation { postBond(market: \"H100-80GB\", amount: \"50\") { amount } }",
        json!({}),
    );
    durable::write_atomic(&dir.join("provider.key"), key.as_bytes(), 0o600).unwrap();
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "api_url = \"{url}\"\napi_key_file = \"provider.key\"\nnode = \"node-{account}\"\n\
             class = \"H100-80GB\"\nregion = \"eu-west\"\nsource = \"simulated\"\n{lie}\
             [simulated]\nname = \"H100-80GB\"\ncount = 2\nvram_mb = 81920\n\
             [sandbox]\nuid_base = {uid}\n\
             [offer]\nprice = \"{price}\"\nvram_gb = 80\ninterconnect = \"nvlink\"\nvendor = \"nvidia\"\n",
            url = m.url,
            lie = if lies { "wrong_frames = 1\n" } else { "" },
        ),
    )
    .unwrap();
    let mut a = Agent::open(Config::load(&dir.join("agent.toml")).unwrap()).unwrap();
    a.register().unwrap();
    a.step().unwrap();
    a
}

/// The scene (Blender's demo animation, made here) and each frame's pixel digest as Blender
/// renders it here with the providers' command line.
fn scene_and_reference(dir: &Path, frames: FrameRange) -> (Vec<u8>, Vec<String>) {
    assert!(
        render::local::installed(),
        "the render test needs Blender (scripts/test installs it)"
    );
    let path = dir.join("scene.blend");
    render::local::make_demo_scene(&path).unwrap();
    let scene = std::fs::read(path).unwrap();
    let spec = RenderSpec::new(
        contract::Digest::of(&scene),
        frames,
        OutputFormat::Png,
        EngineVersion::Cycles3_4,
        None,
    )
    .unwrap();
    let all: Vec<u32> = frames.iter().collect();
    let digests = render::local::render_frames(&spec, &scene, &all, &dir.join("reference"))
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    (scene, digests)
}

const JOB: &str = "query($id: ID!) { renderJob(id: $id) { status progress { frames accepted failed } \
    frames(first: 100) { number state output pixelDigest provider node lease gpu confirmed reason } \
    tasks { id role frames provider lease state reason payment } verdicts { provider frame reason } \
    manifest cost { leases leasesEnded charged verification perFrame } } }";

#[test]
fn a_render_job_across_three_providers_catches_the_liar_and_delivers_true_frames() {
    // The API drives render jobs, as the one that ticks the clock does.
    let m = Market::start_with(
        "agent_render",
        api::ApiConfig {
            render_every: Some(Duration::from_millis(200)),
            ..api::ApiConfig::default()
        },
    );
    h100_market_on(&m);
    m.ok(
        &m.admin,
        "mutation { configureMarket(market: \"H100-80GB\", config: {simulated: true, \
         bondPerGpu: \"10\", modelNames: [\"H100-80GB (simulated)\"]}) { market } }",
        json!({}),
    );
    let dir = tempfile::tempdir().unwrap();
    let uid = sandbox().uid_base;
    let mut agents: Vec<Agent> = [
        (21, "1.50", false),
        (22, "1.60", false),
        (LIAR, "1.00", true),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (account, price, lies))| {
        let home = dir.path().join(format!("agent-{account}"));
        std::fs::create_dir_all(&home).unwrap();
        render_agent(&m, &home, account, price, uid + 4 * i as u32, lies)
    })
    .collect();
    let frames = FrameRange::new(1, 8).unwrap();
    let (scene, expected) = scene_and_reference(dir.path(), frames);
    let cid = m
        .http
        .put(format!("{}/blobs", m.url))
        .bearer_auth(&m.buyer)
        .body(scene.clone())
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()["cid"]
        .as_str()
        .unwrap()
        .to_owned();

    let submitted = m.ok(
        &m.buyer,
        "mutation($i: RenderJobInput!) { submitRenderJob(input: $i) { id status progress { frames rendering } } }",
        json!({"i": {"clientJobId": "film-1", "scene": cid, "frameStart": 1, "frameEnd": 8,
            "engineVersion": "3.4", "market": "H100-80GB", "limitPrice": "2.00", "budget": "100",
            "frameSeconds": 120, "framesPerTask": 2, "reviewSeconds": 2}}),
    );
    let id = submitted["submitRenderJob"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        submitted["submitRenderJob"]["progress"],
        json!({"frames": 8, "rendering": 8})
    );

    let deadline = Instant::now() + Duration::from_secs(420);
    let job = loop {
        for a in &mut agents {
            a.step().unwrap();
        }
        let job = m.ok(&m.buyer, JOB, json!({"id": id}))["renderJob"].clone();
        if job["status"] == "DONE" {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "the render job did not finish: {job:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // The liar was caught by a referee, once, with the frame as evidence.
    let verdicts = job["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 1, "{job:#}");
    assert_eq!(verdicts[0]["provider"], json!(LIAR.to_string()));
    // Every frame is the true picture, from an honest provider, with its GPU and lease named.
    assert_eq!(
        job["progress"],
        json!({"frames": 8, "accepted": 8, "failed": 0}),
        "{job:#}"
    );
    for (f, want) in job["frames"].as_array().unwrap().iter().zip(&expected) {
        assert_eq!(f["pixelDigest"], json!(want), "frame {}", f["number"]);
        assert_ne!(
            f["provider"],
            json!(LIAR.to_string()),
            "frame {}",
            f["number"]
        );
        // The simulated GPU's UUID (`SIM-…`), as its node's signed report named it.
        assert!(
            f["gpu"].as_str().is_some_and(|g| g.starts_with("SIM-")),
            "{f}"
        );
        assert!(f["lease"].is_string() && f["node"].is_string(), "{f}");
    }
    let manifest: Value = serde_json::from_str(job["manifest"].as_str().unwrap()).unwrap();
    assert_eq!(manifest["frames"].as_array().unwrap().len(), 8);
    // Checks and the referee ran on providers other than the one they checked.
    let tasks = job["tasks"].as_array().unwrap();
    assert!(tasks.iter().any(|t| t["role"] == "CHECK"));
    assert!(tasks.iter().any(|t| t["role"] == "REFEREE"));
    // Every task's lease ended as soon as its job was over, its payment held for review:
    // the honest providers' paid once their frames were checked and reviewed, the liar's
    // rejected, which slashed its bond.
    for t in tasks {
        let want = if t["provider"] == json!(LIAR.to_string()) {
            "rejected"
        } else {
            "paid"
        };
        if t["lease"].is_string() {
            assert_eq!(t["payment"], want, "{t}");
        }
    }
    let leases = m.ok(
        &m.buyer,
        "{ leases(role: BUYER, first: 100) { nodes { id provider status closeCause endReason \
         paymentHeldUntil } } }",
        json!({}),
    )["leases"]["nodes"]
        .clone();
    let leases = leases.as_array().unwrap();
    assert!(leases.iter().all(|l| l["status"] == "ended"), "{leases:#?}");
    assert!(
        leases.iter().any(|l| l["provider"] == json!(LIAR)
            && l["endReason"] == "provider_failed"
            && l["paymentHeldUntil"].is_string()),
        "{leases:#?}"
    );
    let slashes = m.ok(
        &m.buyer,
        "{ slashes { nodes { provider cause slashed buyerCredit } } }",
        json!({}),
    );
    assert!(
        slashes["slashes"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["provider"] == json!(LIAR) && s["cause"] == "work_rejected"),
        "{slashes:#}"
    );
    // The buyer sees what the job cost, per frame and for the checks, once the projection
    // has every lease's charge.
    let mut cost = job["cost"].clone();
    crate::wait_until("every lease's charge projected", || {
        cost = m.ok(&m.buyer, JOB, json!({"id": id}))["renderJob"]["cost"].clone();
        cost["leases"] == cost["leasesEnded"]
    });
    assert!(cost["perFrame"].is_string(), "{cost}");
    // A delivered frame reads back by its cid, and its pixels are the reference's.
    let first = &job["frames"][0];
    let bytes = m
        .http
        .get(format!(
            "{}/blobs/{}",
            m.url,
            first["output"].as_str().unwrap()
        ))
        .bearer_auth(&m.buyer)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(
        Pixels::decode_png(&bytes).unwrap().digest().to_string(),
        expected[0]
    );
}
