//! The agent on simulated GPUs against a real market (engine, projectors, API), and on a real
//! NVIDIA GPU when one is present.

mod jobs;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use api::testing::{Market, T_PROVIDER};
use api::Limits;
use provider_agent::config::Config;
use provider_agent::gpu::{GpuSource, Nvml, SimulatedGpus, SourceKind};
use provider_agent::{keys, Agent};
use serde_json::json;

#[test]
fn a_simulated_node_says_it_is_simulated_and_reads_plausible_values() {
    let mut sim = SimulatedGpus::new("RTX4090-24GB", 2, 24_576, 9);
    assert_eq!(sim.kind(), SourceKind::Simulated);
    let gpus = sim.discover().unwrap();
    assert_eq!(gpus.len(), 2);
    assert!(
        gpus.iter().all(|g| g.name.ends_with("(simulated)")),
        "{gpus:?}"
    );
    assert_ne!(gpus[0].uuid, gpus[1].uuid);
    for _ in 0..50 {
        for r in sim.sample().unwrap() {
            let util = r.utilisation_pct.unwrap();
            assert!((0.0..=100.0).contains(&util), "{r:?}");
            assert!(r.memory_used_mb.unwrap() <= r.memory_total_mb.unwrap());
            assert!(r.power_w.unwrap() <= r.power_limit_w.unwrap());
            assert_eq!(
                r.ecc_errors, None,
                "no ECC on a simulated GPU: missing, not zero"
            );
        }
    }
}

#[test]
fn nvml_reads_a_real_nvidia_gpu_when_there_is_one() {
    let Ok(mut nvml) = Nvml::open() else {
        eprintln!("SKIPPED: no NVIDIA driver here (NVML did not load); the NVML path runs on a GPU machine");
        return;
    };
    let gpus = nvml.discover().unwrap();
    if gpus.is_empty() {
        eprintln!("SKIPPED: NVML loaded but found no GPU");
        return;
    }
    let readings = nvml.sample().unwrap();
    eprintln!("NVML GPUs: {gpus:#?}\nNVML readings: {readings:#?}");
    assert_eq!(readings.len(), gpus.len());
    for (g, r) in gpus.iter().zip(&readings) {
        assert!(!g.name.is_empty() && g.uuid.starts_with("GPU-"), "{g:?}");
        assert!(g.vram_total_mb.unwrap_or(0) > 1_000, "{g:?}");
        assert!(
            r.memory_total_mb.is_some() && r.temperature_c.is_some(),
            "{r:?}"
        );
    }
}

#[test]
fn the_node_key_is_private_and_stable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/node.key");
    let key = keys::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        keys::load_or_create(&path).unwrap().to_bytes(),
        key.to_bytes()
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = keys::load_or_create(&path).unwrap_err().to_string();
    assert!(err.contains("readable by others"), "{err}");
}

/// An agent folder for `node` on simulated GPUs, talking to `url` with `key`.
fn agent(dir: &Path, url: &str, key: &str, node: &str, capacity: usize) -> Agent {
    agent_offering(dir, url, key, node, capacity, "")
}

/// The same, with `offer` (TOML lines of an `[offer]` table, or nothing).
fn agent_offering(
    dir: &Path,
    url: &str,
    key: &str,
    node: &str,
    capacity: usize,
    offer: &str,
) -> Agent {
    std::fs::write(dir.join("provider.key"), key).unwrap();
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "api_url = \"{url}\"\napi_key_file = \"provider.key\"\nnode = \"{node}\"\n\
             class = \"H100-80GB\"\nregion = \"eu-west\"\nsource = \"simulated\"\n\
             outbox_capacity = {capacity}\n[simulated]\nname = \"H100-80GB\"\ncount = 2\nvram_mb = 81920\n{offer}"
        ),
    )
    .unwrap();
    Agent::open(Config::load(&dir.join("agent.toml")).unwrap()).unwrap()
}

#[test]
fn reports_wait_on_disk_while_the_api_is_away_and_arrive_once_in_order() {
    let m = Market::start("agent_outbox", Limits::default());
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 (discard) on loopback here: the API is "away".
    let mut a = agent(
        dir.path(),
        "http://127.0.0.1:9",
        &m.provider,
        "node-z",
        1_000,
    );
    assert!(a.register().is_err());
    for _ in 0..5 {
        a.report(&[]).unwrap();
    }
    let flushed = a.flush().unwrap();
    assert_eq!((flushed.sent, flushed.waiting), (0, 5));
    assert_eq!(a.outbox.len().unwrap(), 5, "kept on disk");

    // A restarted agent finds them and sends them, oldest first, exactly once.
    drop(a);
    let mut a = agent(dir.path(), &m.url, &m.provider, "node-z", 1_000);
    a.register().unwrap();
    let before = m.commands();
    let flushed = a.flush().unwrap();
    assert_eq!(
        (flushed.sent, flushed.duplicates, flushed.waiting),
        (5, 0, 0)
    );
    assert_eq!(m.commands(), before + 5, "one heartbeat per report");
    assert!(a.outbox.is_empty().unwrap());
    // The next report continues the numbering.
    assert_eq!(a.report(&[]).unwrap(), 6);
    a.flush().unwrap();

    m.projected();
    let provider = m.ok(
        &m.buyer,
        &format!("{{ provider(account: \"{T_PROVIDER}\") {{ nodes {{ node heartbeats reportedGpus }} telemetry(last: 100) {{ gpu simulated eccErrors }} }} }}"),
        json!({}),
    )["provider"]
        .clone();
    assert_eq!(
        provider["nodes"],
        json!([{"node": "node-z", "heartbeats": 6, "reportedGpus": 2}])
    );
    let telemetry = provider["telemetry"].as_array().unwrap();
    assert_eq!(telemetry.len(), 12, "two GPUs in each of six reports");
    assert!(telemetry
        .iter()
        .all(|s| s["simulated"] == true && s["eccErrors"].is_null()));
}

#[test]
fn a_full_outbox_drops_the_oldest_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("provider.key"), "unused").unwrap();
    let mut a = agent(dir.path(), "http://127.0.0.1:9", "gpm_1_x", "node-y", 3);
    for _ in 0..5 {
        a.report(&[]).unwrap();
    }
    let mut left: Vec<String> = std::fs::read_dir(dir.path().join("state/outbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "00000000000000000003.json",
            "00000000000000000004.json",
            "00000000000000000005.json"
        ]
    );
}

/// A market with the H100 market open and 1,000 for the buyer.
fn h100_market(tag: &str) -> Market {
    let m = Market::start(tag, Limits::default());
    m.ok(
        &m.admin,
        "mutation { createMarket(market: \"H100-80GB\", tick: \"0.01\", feeBps: 300) }",
        json!({}),
    );
    m.ok(
        &m.admin,
        "mutation { creditDeposit(account: \"1\", amount: \"1000\") { amount } }",
        json!({}),
    );
    m
}

#[test]
fn the_agent_runs_a_leased_job_once_and_ends_the_lease_with_the_hours_used() {
    let m = h100_market("agent_jobs");
    let place = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { orderId status } }";
    m.ok(&m.provider, place, json!({"i": {"market": "H100-80GB", "clientOrderId": "1", "price": "2.00",
        "gpus": 2, "ask": {"node": "node-j", "vendor": "nvidia", "vramGb": 80, "interconnect": "nvlink",
        "region": "eu-west", "availableUntil": "2099-01-01T00:00:00Z"}}}));
    let bid = m.ok(
        &m.buyer,
        place,
        json!({"i": {"market": "H100-80GB", "clientOrderId": "2",
        "price": "2.00", "gpus": 1, "bid": {"hours": 1}}}),
    );
    assert_eq!(bid["placeOrder"]["status"], "FILLED");

    let submit = "mutation($c: String!, $a: [String!]!) { submitJob(leaseId: \"1\", command: $c, args: $a, env: [{name: \"EPOCHS\", value: \"3\"}]) }";
    let job = json!({"c": "/bin/sh", "a": ["-c", "echo training $EPOCHS epochs on GPU $CUDA_VISIBLE_DEVICES"]});
    assert_eq!(m.ok(&m.buyer, submit, job.clone())["submitJob"], true);
    assert_eq!(
        m.ok(&m.buyer, submit, job)["submitJob"],
        true,
        "the same job again is a retry"
    );
    assert_eq!(
        m.code(Some(&m.buyer), submit, json!({"c": "/bin/other", "a": []})),
        "VALIDATION"
    );
    assert_eq!(
        m.code(Some(&m.provider), submit, json!({"c": "/bin/sh", "a": []})),
        "FORBIDDEN"
    );
    let bad_env = "mutation { submitJob(leaseId: \"1\", command: \"x\", env: [{name: \"CUDA_VISIBLE_DEVICES\", value: \"0,1\"}]) }";
    assert_eq!(m.code(Some(&m.buyer), bad_env, json!({})), "VALIDATION");
    m.projected();

    let dir = tempfile::tempdir().unwrap();
    let mut a = agent(dir.path(), &m.url, &m.provider, "node-j", 100);
    a.register().unwrap();
    let mut started = 0;
    let mut ended = 0;
    for _ in 0..100 {
        let step = a.step().unwrap();
        started += step.started;
        ended += step.ended;
        if ended == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!((started, ended), (1, 1));
    assert_eq!(
        std::fs::read_to_string(a.jobs.log_path(1)).unwrap(),
        "training 3 epochs on GPU 0\n"
    );

    // A restarted agent neither runs the job again nor ends the lease twice.
    drop(a);
    let mut a = agent(dir.path(), &m.url, &m.provider, "node-j", 100);
    let step = a.step().unwrap();
    assert_eq!((step.started, step.ended), (0, 0));

    m.projected();
    let lease = m.ok(
        &m.buyer,
        "{ leases { edges { node { id status startedAt hoursUsed charged endReason job { logTail outcome } } } } }",
        json!({}),
    )["leases"]["edges"][0]["node"]
        .clone();
    assert_eq!(lease["status"], "ended", "{lease}");
    assert_eq!(lease["endReason"], "completed");
    assert_eq!(
        lease["job"],
        json!({"logTail": "training 3 epochs on GPU 0\n", "outcome": "exited 0"}),
        "the buyer reads the job's output"
    );
    assert!(
        !lease["startedAt"].is_null(),
        "the start was reported: {lease}"
    );
    let hours: f64 = lease["hoursUsed"].as_str().unwrap().parse().unwrap();
    assert!(hours < 0.01, "a job of seconds is charged seconds: {lease}");
}

#[test]
fn the_agent_keeps_one_ask_for_its_free_healthy_gpus() {
    let m = h100_market("agent_asks");
    let offer = |max_temp: f32| {
        format!(
            "[offer]\nprice = \"2.50\"\ngpus = [0, 1]\nvram_gb = 80\ninterconnect = \"nvlink\"\nvendor = \"nvidia\"\n\
             max_temperature_c = {max_temp:.1}\n"
        )
    };
    let asks = || {
        m.ok(
            &m.buyer,
            "{ depth(market: \"H100-80GB\") { asks { price gpus orders } } }",
            json!({}),
        )["depth"]["asks"]
            .clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut a = agent_offering(dir.path(), &m.url, &m.provider, "node-o", 100, &offer(85.0));
    a.register().unwrap();
    assert_eq!(a.step().unwrap().asks_changed, 1);
    assert_eq!(
        asks(),
        json!([{"price": "2.500000", "gpus": 2, "orders": 1}])
    );
    assert_eq!(a.step().unwrap().asks_changed, 0, "nothing to change");

    // A buyer takes one GPU: the ask shrinks by the fill, and the agent leaves it so.
    let place = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { status } }";
    let bid = m.ok(
        &m.buyer,
        place,
        json!({"i": {"market": "H100-80GB", "clientOrderId": "5",
        "price": "3.00", "gpus": 1, "bid": {"hours": 1}}}),
    );
    assert_eq!(bid["placeOrder"]["status"], "FILLED");
    m.projected();
    assert_eq!(a.step().unwrap().asks_changed, 0);
    assert_eq!(
        asks(),
        json!([{"price": "2.500000", "gpus": 1, "orders": 1}])
    );

    // Hot GPUs are withdrawn.
    drop(a);
    let mut a = agent_offering(dir.path(), &m.url, &m.provider, "node-o", 100, &offer(0.0));
    assert_eq!(a.step().unwrap().asks_changed, 1);
    assert_eq!(asks(), json!([]));

    // Cool again: one GPU is free (the other is leased), and a new ask offers it.
    drop(a);
    let mut a = agent_offering(dir.path(), &m.url, &m.provider, "node-o", 100, &offer(85.0));
    a.step().unwrap();
    assert_eq!(
        asks(),
        json!([{"price": "2.500000", "gpus": 1, "orders": 1}])
    );
}
