//! `loadtest render`: one render job of the demo's animation against a whole running market
//! (`gpumarket up`, whose API drives render jobs), once for each count of simulated
//! providers (`--providers 1,2,4`: one GPU each, the real provider agent rendering with real
//! Blender in its sandbox), and Blender alone on the same frames as the baseline.
//!
//! Each run has a market of its own, so no other run's asks or leases count. Figures per run:
//! frames per second (from the submission to the job's end, the review window set to zero),
//! time to first frame (until a frame is first delivered), the GPU-seconds the leases were
//! charged against the seconds their jobs ran (the difference, per frame, is what the market's
//! scheduling costs the buyer: a lease waiting for its agent to start the job, and for the
//! outputs to be sealed and checked before it ends), and verification's share: the charged
//! GPU-seconds of check and referee tasks against those of render tasks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use api_client::Client;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The market's base URL (what `gpumarket up` printed).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The admin key file (`DATA_DIR/admin.key` of `gpumarket up`).
    #[arg(long)]
    api_key_file: PathBuf,
    /// Provider counts to run, one job each.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    providers: Vec<u32>,
    /// Frames of the demo's animation (1 to 24).
    #[arg(long, default_value_t = 24)]
    frames: u32,
    /// The most frames one lease renders.
    #[arg(long, default_value_t = 4)]
    frames_per_task: u32,
    /// How long a check waits for a lease on another provider before its frames go
    /// unchecked, in seconds (with one provider no check can be placed: this is its cost).
    #[arg(long, default_value_t = 10)]
    check_within: u32,
    /// The scratch folder (scene, agents' state).
    #[arg(long, default_value = "target/loadtest-render")]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    providers: u32,
    frames: u32,
    seconds: f64,
    frames_per_sec: f64,
    time_to_first_frame_s: f64,
    leases: usize,
    leased_gpu_seconds: f64,
    job_gpu_seconds: f64,
    scheduling_overhead_per_frame_s: f64,
    verification_gpu_seconds: f64,
    verification_share: f64,
    check_within_s: u32,
}

fn raw(client: &Client, document: &str, variables: Value) -> Result<Value> {
    let (status, body) = client.post_raw(document, variables)?;
    if let Some(errors) = body.get("errors") {
        bail!("HTTP {status}: {errors}");
    }
    Ok(body["data"].clone())
}

fn between(from: &str, to: &str) -> Option<f64> {
    let from = chrono::DateTime::parse_from_rfc3339(from).ok()?;
    let to = chrono::DateTime::parse_from_rfc3339(to).ok()?;
    Some((to - from).num_milliseconds() as f64 / 1e3)
}

pub fn run(args: &Args) -> Result<()> {
    if !render::local::installed() {
        bail!("`loadtest render` needs Blender: apt-get install --no-install-recommends blender");
    }
    if !(1..=24).contains(&args.frames) {
        bail!("--frames: 1 to 24 (the demo's animation)");
    }
    std::fs::create_dir_all(&args.out)?;
    let out = args.out.canonicalize()?;
    let admin_key = std::fs::read_to_string(&args.api_key_file)
        .with_context(|| format!("reading {}", args.api_key_file.display()))?;
    let admin = Client::new(&args.url, admin_key.trim());
    let scene_path = out.join("scene.blend");
    if !scene_path.exists() {
        render::local::make_demo_scene(&scene_path)?;
    }
    let scene = std::fs::read(&scene_path)?;

    // The baseline: Blender alone, one process, the providers' command line.
    let spec = render::RenderSpec::new(
        contract::Digest::of(&scene),
        render::FrameRange::new(1, args.frames)?,
        render::OutputFormat::Png,
        render::EngineVersion::Cycles3_4,
        None,
    )?;
    let all: Vec<u32> = (1..=args.frames).collect();
    let local = out.join("local");
    let _ = std::fs::remove_dir_all(&local);
    let started = Instant::now();
    render::local::render_frames(&spec, &scene, &all, &local)?;
    let alone = started.elapsed().as_secs_f64();
    let per_task = out.join("local-per-task");
    let _ = std::fs::remove_dir_all(&per_task);
    let started = Instant::now();
    for chunk in all.chunks(args.frames_per_task as usize) {
        render::local::render_frames(&spec, &scene, chunk, &per_task)?;
    }
    let alone_per_task = started.elapsed().as_secs_f64();
    let baseline = json!({
        "baseline": "blender alone",
        "frames": args.frames,
        "one_process_seconds": alone,
        "one_process_per_task_seconds": alone_per_task,
        "frames_per_sec": f64::from(args.frames) / alone_per_task,
    });
    if args.json {
        println!("{baseline}");
    } else {
        eprintln!(
            "Blender alone: {} frames in {alone:.1} s in one process, {alone_per_task:.1} s \
             as tasks of {} ({:.2} frames/s)",
            args.frames,
            args.frames_per_task,
            f64::from(args.frames) / alone_per_task
        );
    }

    let stamp = chrono::Utc::now().timestamp() % 1_000_000;
    for (i, &providers) in args.providers.iter().enumerate() {
        let report = one_run(args, &admin, &out, &scene, providers, stamp, i as u64)?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            eprintln!(
                "{providers} provider(s): {} frames in {:.1} s ({:.2} frames/s), first frame \
                 after {:.1} s; {} leases charged {:.1} GPU-s for {:.1} GPU-s of jobs \
                 ({:.2} s per frame of scheduling); verification {:.1} GPU-s ({:.0}% of \
                 rendering)",
                report.frames,
                report.seconds,
                report.frames_per_sec,
                report.time_to_first_frame_s,
                report.leases,
                report.leased_gpu_seconds,
                report.job_gpu_seconds,
                report.scheduling_overhead_per_frame_s,
                report.verification_gpu_seconds,
                report.verification_share * 100.0,
            );
        }
    }
    Ok(())
}

fn one_run(
    args: &Args,
    admin: &Client,
    out: &std::path::Path,
    scene: &[u8],
    providers: u32,
    stamp: i64,
    run: u64,
) -> Result<Report> {
    let market = format!("RENDER-BENCH-{stamp}-{providers}-{run}");
    raw(
        admin,
        "mutation($m: String!) { createMarket(market: $m, tick: \"0.01\", feeBps: 100) }",
        json!({"m": market}),
    )?;
    raw(
        admin,
        "mutation($m: String!) { configureMarket(market: $m, config: {simulated: true, \
         modelNames: [\"H100-80GB (simulated)\"]}) { market } }",
        json!({"m": market}),
    )?;
    let base = 8_000_000 + (stamp as u64 % 100_000) * 100 + run * 10;
    let key = |role: &str, account: u64| -> Result<String> {
        let made = raw(
            admin,
            "mutation($r: Role!, $a: ID!) { createApiKey(role: $r, account: $a, label: \"loadtest render\") { key } }",
            json!({"r": role, "a": account.to_string()}),
        )?;
        Ok(made["createApiKey"]["key"]
            .as_str()
            .context("a key")?
            .to_owned())
    };
    let fund = |account: u64| {
        raw(
            admin,
            "mutation($a: ID!) { creditDeposit(account: $a, amount: \"10000\") { amount } }",
            json!({"a": account.to_string()}),
        )
    };

    // The agents: one simulated GPU each, stepping every 250 ms in a thread of its own.
    let dir = out.join(&market);
    let running = Arc::new(AtomicBool::new(true));
    let mut agents = Vec::new();
    for p in 0..providers {
        let account = base + u64::from(p);
        let k = key("PROVIDER", account)?;
        let home = dir.join(format!("provider-{account}"));
        std::fs::create_dir_all(&home)?;
        let key_file = home.join("provider.key");
        provider_agent::durable::write_atomic(&key_file, k.as_bytes(), 0o600)?;
        let config = provider_agent::config::Config {
            api_url: args.url.clone(),
            api_key_file: key_file,
            node: format!("render-bench-{account}"),
            class: market.clone(),
            region: "eu-west".to_owned(),
            source: "simulated".to_owned(),
            interval_secs: 1,
            state_dir: home.join("state"),
            outbox_capacity: 10_000,
            simulated: provider_agent::config::Simulated {
                name: "H100-80GB".to_owned(),
                count: 1,
                vram_mb: 80 * 1024,
            },
            // Uids of its own: a job's uid is swept when it stops.
            sandbox: provider_agent::sandbox::SandboxConfig {
                uid_base: provider_agent::sandbox::SandboxConfig::default().uid_base + 4 * p,
                ..Default::default()
            },
            offer: Some(provider_agent::config::Offer {
                price: format!("1.{:02}", p),
                gpus: None,
                vram_gb: 80,
                interconnect: "nvlink".to_owned(),
                vendor: "nvidia".to_owned(),
                hours_ahead: 720,
                max_temperature_c: 1_000.0,
                max_ecc_errors: 0,
            }),
            wrong_frames: None,
        };
        let mut agent = provider_agent::Agent::open(config)?;
        agent.register()?;
        let running = running.clone();
        agents.push(std::thread::spawn(move || -> Result<()> {
            while running.load(Ordering::Relaxed) {
                let t = Instant::now();
                agent.step()?;
                std::thread::sleep(Duration::from_millis(250).saturating_sub(t.elapsed()));
            }
            Ok(())
        }));
    }
    let buyer_account = base + 9;
    let buyer = Client::new(&args.url, &key("TRADER", buyer_account)?);
    fund(buyer_account)?;
    let cid = buyer.put_blob(scene.to_vec().into(), None, None)?.cid;
    // The agents' first reports and asks, before the clock starts.
    std::thread::sleep(Duration::from_secs(3));

    let started = Instant::now();
    let submitted = raw(
        &buyer,
        "mutation($i: RenderJobInput!) { submitRenderJob(input: $i) { id } }",
        json!({"i": {"clientJobId": market, "scene": cid, "frameStart": 1,
            "frameEnd": args.frames, "engineVersion": "3.4", "market": market,
            "limitPrice": "2.00", "budget": "1000", "frameSeconds": 120,
            "framesPerTask": args.frames_per_task, "reviewSeconds": 0,
            "checkWithinSeconds": args.check_within}}),
    )?;
    let id = submitted["submitRenderJob"]["id"].clone();
    let mut first_frame = None;
    let job = loop {
        let job = raw(
            &buyer,
            "query($id: ID!) { renderJob(id: $id) { status progress { delivered checking accepted failed } \
             tasks { role lease } } }",
            json!({"id": id}),
        )?["renderJob"]
            .clone();
        let p = &job["progress"];
        let delivered: i64 = ["delivered", "checking", "accepted"]
            .iter()
            .map(|k| p[k].as_i64().unwrap_or(0))
            .sum();
        if first_frame.is_none() && delivered > 0 {
            first_frame = Some(started.elapsed().as_secs_f64());
        }
        if job["status"] == "DONE" {
            break job;
        }
        if started.elapsed() > Duration::from_secs(1_800) {
            bail!("the render job did not finish in 30 minutes: {job}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let seconds = started.elapsed().as_secs_f64();
    running.store(false, Ordering::Relaxed);
    for a in agents {
        a.join().expect("an agent thread does not panic")?;
    }
    if job["progress"]["failed"].as_i64() != Some(0) {
        bail!("frames failed: {job}");
    }

    // Charged and job time per lease, once the projections have every lease ended.
    let roles: BTreeMap<String, String> = job["tasks"]
        .as_array()
        .context("tasks")?
        .iter()
        .filter_map(|t| {
            Some((
                t["lease"].as_str()?.to_owned(),
                t["role"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let leases = loop {
        let leases = raw(
            &buyer,
            "{ leases(role: BUYER, first: 500) { nodes { id status chargedMs startedAt job { logAt } } } }",
            json!({}),
        )?["leases"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if leases.iter().all(|l| l["chargedMs"].is_i64()) || Instant::now() > deadline {
            break leases;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (mut leased, mut ran, mut checks, mut renders) = (0.0, 0.0, 0.0, 0.0);
    for l in &leases {
        let charged = l["chargedMs"].as_f64().unwrap_or(0.0) / 1e3;
        leased += charged;
        if let (Some(from), Some(to)) = (l["startedAt"].as_str(), l["job"]["logAt"].as_str()) {
            ran += between(from, to).unwrap_or(0.0);
        }
        match roles.get(&l["id"].to_string()).map(String::as_str) {
            Some("RENDER") => renders += charged,
            Some(_) => checks += charged,
            None => {}
        }
    }
    Ok(Report {
        providers,
        frames: args.frames,
        seconds,
        frames_per_sec: f64::from(args.frames) / seconds,
        time_to_first_frame_s: first_frame.unwrap_or(seconds),
        leases: leases.len(),
        leased_gpu_seconds: leased,
        job_gpu_seconds: ran,
        scheduling_overhead_per_frame_s: (leased - ran) / f64::from(args.frames),
        verification_gpu_seconds: checks,
        verification_share: if renders > 0.0 { checks / renders } else { 0.0 },
        check_within_s: args.check_within,
    })
}
