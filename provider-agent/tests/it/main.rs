//! The agent on simulated GPUs against a real market (engine, projectors, API), and on a real
//! NVIDIA GPU when one is present.

mod files;
mod jobs;
mod render;
mod sandbox;
mod torn;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use api::testing::{Market, T_PROVIDER};
use api::Limits;
use provider_agent::config::Config;
use provider_agent::gpu::{GpuSource, Nvml, SimulatedGpus, SourceKind};
use provider_agent::jobs::JobStatus;
use provider_agent::report::SignedReport;
use provider_agent::sandbox::SandboxConfig;
use provider_agent::{durable, keys, Agent, AgentError};
use serde_json::{json, Value};

/// Nothing listens on the discard port on loopback: the API is away.
pub const AWAY: &str = "http://127.0.0.1:9";

/// Whether `pid` runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// The live processes running as `uid`.
pub fn of_uid(uid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| {
            e.metadata()
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid)
        })
        .filter(|e| alive(e.file_name().to_str().unwrap().parse().unwrap()))
        .count()
}

/// The sandbox's settings, with job uids no other test process uses at the same time (each
/// test is a process of its own, and a job's uid is swept of processes when it ends).
pub fn sandbox() -> SandboxConfig {
    SandboxConfig {
        uid_base: 300_000 + (std::process::id() % 20_000) * 16,
        ..SandboxConfig::default()
    }
}

pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

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

#[test]
fn a_provider_key_readable_by_others_is_refused_and_init_says_how_to_make_it_private() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("agent");
    let init = std::process::Command::new(env!("CARGO_BIN_EXE_provider-agent"))
        .args(["init", "--source", "simulated", "--dir"])
        .arg(&folder)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let printed = String::from_utf8(init.stdout).unwrap();
    // The command init prints (README's too), with `echo` standing in for `gpumarket keys
    // create`, run from a shell with the usual umask.
    let command = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("(umask 077; gpumarket keys create"))
        .unwrap_or_else(|| panic!("no key command in {printed:?}"))
        .replace(
            "gpumarket keys create --role provider --account N",
            "echo gpm_1_secret",
        );
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask 022; {command}"))
        .status()
        .unwrap();
    assert!(made.success());
    let key = folder.join("provider.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let config = Config::load(&folder.join("agent.toml")).unwrap();
    assert_eq!(
        config.interval_secs, 10,
        "three reports within the markets' default heartbeat timeout of 30 s"
    );
    Agent::open(config.clone()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = Agent::open(config).unwrap_err();
    assert!(
        matches!(
            &refused,
            AgentError::Key(keys::KeyError::Exposed { path, mode: 0o644 }) if *path == key
        ),
        "{refused:?}"
    );
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
    durable::write_atomic(&dir.join("provider.key"), key.as_bytes(), 0o600).unwrap();
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "api_url = \"{url}\"\napi_key_file = \"provider.key\"\nnode = \"{node}\"\n\
             class = \"H100-80GB\"\nregion = \"eu-west\"\nsource = \"simulated\"\n\
             outbox_capacity = {capacity}\n[simulated]\nname = \"H100-80GB\"\ncount = 2\nvram_mb = 81920\n\
             [sandbox]\nuid_base = {}\n{offer}",
            sandbox().uid_base
        ),
    )
    .unwrap();
    Agent::open(Config::load(&dir.join("agent.toml")).unwrap()).unwrap()
}

#[test]
fn reports_wait_on_disk_while_the_api_is_away_and_arrive_once_in_order() {
    // The API takes reports only for a class the market trades.
    let m = h100_market("agent_outbox");
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

/// A market with the H100 market open (simulated, as these agents' GPUs are, and their
/// model its class) and 1,000 for the buyer.
fn h100_market(tag: &str) -> Market {
    let m = Market::start(tag, Limits::default());
    h100_market_on(&m);
    m
}

/// The same on a market started otherwise.
fn h100_market_on(m: &Market) {
    m.ok(
        &m.admin,
        "mutation { createMarket(market: \"H100-80GB\", tick: \"0.01\", feeBps: 300) }",
        json!({}),
    );
    m.ok(
        &m.admin,
        "mutation { configureMarket(market: \"H100-80GB\", config: {simulated: true, \
         modelNames: [\"H100-80GB (simulated)\"]}) { market } }",
        json!({}),
    );
    m.ok(
        &m.admin,
        "mutation { creditDeposit(account: \"1\", amount: \"1000\") { amount } }",
        json!({}),
    );
}

/// An agent for `node`, registered and reporting once: asks on its node stand on its
/// signed report.
fn reporting_agent(m: &Market, dir: &Path, node: &str) -> Agent {
    let mut a = agent(dir, &m.url, &m.provider, node, 100);
    a.register().unwrap();
    a.step().unwrap();
    a
}

/// An ask of `gpus` GPUs on `node`, then `leases` bids of one GPU for an hour, each filled:
/// leases 1 to `leases`.
fn leases_on(m: &Market, node: &str, gpus: u32, leases: u32) {
    let place = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { status } }";
    m.ok(&m.provider, place, json!({"i": {"market": "H100-80GB", "clientOrderId": "1", "price": "2.00",
        "gpus": gpus, "ask": {"node": node, "vendor": "nvidia", "vramGb": 80, "interconnect": "nvlink",
        "region": "eu-west", "availableUntil": "2099-01-01T00:00:00Z"}}}));
    for i in 0..leases {
        let bid = m.ok(
            &m.buyer,
            place,
            json!({"i": {"market": "H100-80GB", "clientOrderId": format!("{}", 100 + i),
            "price": "2.00", "gpus": 1, "bid": {"hours": 1}}}),
        );
        assert_eq!(bid["placeOrder"]["status"], "FILLED");
    }
}

/// The buyer gives lease `id` the job `sh -c script`.
fn submit(m: &Market, id: u64, script: &str) {
    let submit = "mutation($l: ID!, $a: [String!]!) { submitJob(leaseId: $l, command: \"/bin/sh\", args: $a) }";
    let job = json!({"l": id.to_string(), "a": ["-c", script]});
    assert_eq!(m.ok(&m.buyer, submit, job)["submitJob"], true);
}

/// The buyer stops lease `id`. `endLease` is losing its `hoursUsed` argument: the form the
/// API takes is the one that goes through.
fn stop_lease(m: &Market, id: u64) {
    let metered = format!("mutation {{ endLease(leaseId: \"{id}\") {{ leaseId }} }}");
    if m.gql(Some(&m.buyer), &metered, json!({}))
        .get("errors")
        .is_some()
    {
        let claimed =
            format!("mutation {{ endLease(leaseId: \"{id}\", hoursUsed: \"0\") {{ leaseId }} }}");
        m.ok(&m.buyer, &claimed, json!({}));
    }
}

/// Lease `id` as its buyer reads it, once the projections have caught up.
fn lease(m: &Market, id: u64) -> Value {
    m.projected();
    let leases = m.ok(
        &m.buyer,
        "{ leases { edges { node { id status startedAt endsAt endedAt endReason job { logTail outcome } } } } }",
        json!({}),
    );
    leases["leases"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .find(|l| l["id"] == id)
        .unwrap_or_else(|| panic!("no lease {id} in {leases}"))
}

/// The newest report in the agent's outbox: its signed text and what it says.
fn newest_report(dir: &Path) -> (String, contract::NodeReport) {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("state/outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let signed: SignedReport =
        serde_json::from_slice(&std::fs::read(files.last().expect("a report")).unwrap()).unwrap();
    let report = serde_json::from_str(&signed.report).unwrap();
    (signed.report, report)
}

#[test]
fn the_agent_runs_a_leased_job_until_the_lease_ends_and_never_ends_the_lease() {
    let m = h100_market("agent_jobs");
    let dir = tempfile::tempdir().unwrap();
    let mut a = reporting_agent(&m, dir.path(), "node-j");
    leases_on(&m, "node-j", 2, 1);

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

    let mut started = 0;
    let mut sent = 0;
    for _ in 0..100 {
        let step = a.step().unwrap();
        started += step.started;
        sent += step.outcomes_sent;
        if sent == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!((started, sent), (1, 1));
    assert_eq!(
        std::fs::read_to_string(a.jobs.log_path(1)).unwrap(),
        "training 3 epochs on GPU 0\n"
    );
    // The job's deadline is the lease's end, as the market has it.
    let ends_at: chrono::DateTime<chrono::Utc> =
        lease(&m, 1)["endsAt"].as_str().unwrap().parse().unwrap();
    let job = a.jobs.get(1).unwrap().unwrap();
    assert_eq!(job.deadline_ms, ends_at.timestamp_millis() as u64);
    assert_eq!(job.status, JobStatus::Exited { code: 0 });
    // The job is over, the lease is not: it is the buyer's time, and still served.
    assert_eq!(a.step().unwrap().healthy_leases, Some(vec![1]));

    // A restarted agent neither runs the job again nor sends its outcome twice.
    drop(a);
    let mut a = agent(dir.path(), &m.url, &m.provider, "node-j", 100);
    let step = a.step().unwrap();
    assert_eq!((step.started, step.outcomes_sent), (0, 0));
    assert_eq!(step.healthy_leases, Some(vec![1]));

    let lease = lease(&m, 1);
    assert_eq!(
        lease["status"], "running",
        "not ended by the agent: {lease}"
    );
    assert!(
        lease["endedAt"].is_null() && lease["endReason"].is_null(),
        "{lease}"
    );
    assert!(
        !lease["startedAt"].is_null(),
        "the start was reported: {lease}"
    );
    assert_eq!(
        lease["job"],
        json!({"logTail": "training 3 epochs on GPU 0\n", "outcome": "exited 0"}),
        "the buyer reads the job's output"
    );
}

#[test]
fn reports_list_the_healthy_leases_and_drop_one_whose_job_was_lost() {
    let m = h100_market("agent_healthy");
    let dir = tempfile::tempdir().unwrap();
    let mut a = reporting_agent(&m, dir.path(), "node-h");
    leases_on(&m, "node-h", 2, 2);
    submit(&m, 2, "sleep 30");
    m.projected();
    let step = a.step().unwrap();
    assert_eq!(step.started, 1);
    let job = a.jobs.get(2).unwrap().unwrap();
    assert_eq!(job.gpus, vec![0]);
    assert_eq!(
        step.healthy_leases,
        Some(vec![1, 2]),
        "lease 1 has no job yet: its GPU is reserved and idle"
    );

    // With the market away the known leases are listed; the report waits in the outbox,
    // signed, with no hours in it.
    a.set_api_url(AWAY, &m.provider);
    assert_eq!(a.step().unwrap().healthy_leases, Some(vec![1, 2]));
    let (text, report) = newest_report(dir.path());
    assert_eq!(
        (
            report.node.as_str(),
            report.healthy_leases,
            report.leases_started
        ),
        ("node-h", vec![1, 2], vec![])
    );
    assert!(!text.contains("hours"), "{text}");
    a.set_api_url(&m.url, &m.provider);
    assert_eq!(a.flush().unwrap().sent, 1);

    // The agent dies mid-job, and the job with it, before its exit status was written.
    let JobStatus::Running { pid, .. } = job.status else {
        panic!("{job:?}")
    };
    drop(a);
    let group = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process_group(group, rustix::process::Signal::KILL).unwrap();
    wait_until("the job's group gone", || jobs::group_left(pid) == 0);

    let mut a = agent(dir.path(), &m.url, &m.provider, "node-h", 100);
    let step = a.step().unwrap();
    assert_eq!(a.jobs.get(2).unwrap().unwrap().status, JobStatus::Lost);
    assert_eq!(
        step.healthy_leases,
        Some(vec![1]),
        "the lost job's lease is no longer listed: the engine fails it at its last listing"
    );
    assert_eq!(step.outcomes_sent, 1);
    let lost = lease(&m, 2);
    assert_eq!(lost["job"]["outcome"], "lost", "{lost}");
    assert_ne!(lost["endReason"], "completed", "{lost}");
    let state = std::fs::read_to_string(dir.path().join("state/jobs/2.json")).unwrap();
    assert!(!state.contains("hours"), "{state}");
}

#[test]
fn a_lease_on_a_missing_gpu_is_dropped_and_one_the_market_ended_stops_its_job() {
    let m = h100_market("agent_gpu_gone");
    let dir = tempfile::tempdir().unwrap();
    let mut a = reporting_agent(&m, dir.path(), "node-g");
    leases_on(&m, "node-g", 2, 2);
    submit(&m, 1, "sleep 30");
    submit(&m, 2, "sleep 30");
    m.projected();
    let step = a.step().unwrap();
    assert_eq!(step.started, 2);
    assert_eq!(step.healthy_leases, Some(vec![1, 2]));
    let gpus = |a: &Agent, id| a.jobs.get(id).unwrap().unwrap().gpus;
    assert_eq!((gpus(&a, 1), gpus(&a, 2)), (vec![0], vec![1]));

    // GPU 1 no longer answers: the lease on it is no longer listed, the other one is.
    a.source = Box::new(SimulatedGpus::new("H100-80GB", 1, 81_920, 7));
    assert_eq!(a.step().unwrap().healthy_leases, Some(vec![1]));

    // The buyer stops lease 1: its job is stopped, its outcome sent, and it is listed no more.
    a.source = Box::new(SimulatedGpus::new("H100-80GB", 2, 81_920, 7));
    let JobStatus::Running { pid, .. } = a.jobs.get(1).unwrap().unwrap().status else {
        panic!("lease 1's job is not running")
    };
    stop_lease(&m, 1);
    m.projected();
    let step = a.step().unwrap();
    assert!(step.cancelled >= 1, "{step:?}");
    let job = a.jobs.get(1).unwrap().unwrap();
    assert_eq!(
        job.status,
        JobStatus::Killed {
            reason: "the lease ended in the market".into()
        }
    );
    assert!(job.lease_ended && job.outcome_sent);
    assert_eq!(jobs::group_left(pid), 0);
    assert!(!step.healthy_leases.unwrap().contains(&1));
    assert!(a.open_leases().iter().all(|l| l.id != 1));
    assert_eq!(
        lease(&m, 1)["job"]["outcome"],
        "killed: the lease ended in the market"
    );
    a.jobs.lease_ended(2).unwrap();
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
