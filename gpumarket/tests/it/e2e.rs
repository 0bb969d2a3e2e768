//! The whole market on a small scale, as a newcomer runs it: `gpumarket up --demo` (engine,
//! projectors, API, devnet, bridge, simulated providers and bidding bots in one process)
//! until providers have reported telemetry, bots have traded, leases have run real short
//! jobs through the provider agents, usage is billed, reputation has moved and the bridge
//! has settled on the devnet; then a second `up` (no demo) resumes the same market and
//! finishes what was in flight. At the end the on-chain balances equal the ledger and the
//! reconciliation report has no break. Along the way (on the embedded log) the demo's checker
//! tests the render farm's three providers before their first sale and catches the one that
//! lies (slashed, it never sells), and the render buyer has its 24-frame animation rendered
//! across the two honest ones: every frame the buyer gets has the pixels of a render of the
//! same scene here. Once on the embedded log, once on Kafka.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use api_client::queries::PendingSettlementQuery;
use api_client::QueryBuilder;
use cosmos_bridge::devnet::server::DevnetServer;
use cosmos_bridge::devnet::Devnet;
use cosmos_bridge::keys::EscrowKey;
use ledger::testing::TestDb;

/// Starts `up` and returns it with its API URL once it printed that it is up, and the line
/// it printed about the admin key.
fn up(dir: &Path, db: &TestDb, log: &str, prefix: &str, extra: &[&str]) -> (Child, String, String) {
    let mut child = Process::new(env!("CARGO_BIN_EXE_gpumarket"))
        .arg("up")
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--http",
            "127.0.0.1:0",
            "--log",
            log,
            "--topic-prefix",
            prefix,
        ])
        .args(["--block-ms", "200", "--min-payout", "0.01"])
        .args(extra)
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the gpumarket binary starts");
    let (mut url, mut admin) = (None, None);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("API and GraphiQL") {
            url = Some(rest.trim().trim_end_matches("/graphql").to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("admin API key") {
            admin = Some(rest.trim().to_owned());
        }
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    (
        child,
        url.expect("`up` printed its API URL"),
        admin.expect("`up` printed where the admin key is"),
    )
}

fn stop(mut child: Child) {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "`up` stopped with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "`up` did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("e2e: {what}");
}

fn whole_market(tag: &str, kafka: Option<String>) {
    let db = TestDb::new(tag);
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("{tag}-{}-", std::process::id());
    let log = kafka
        .clone()
        .unwrap_or_else(|| format!("file://{}", dir.path().join("log").display()));

    let (market, market_url, admin_line) = up(
        dir.path(),
        &db,
        &log,
        &prefix,
        &["--demo", "--settle-every-secs", "2"],
    );
    let admin_key = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    assert!(
        admin_line.starts_with(admin_key.trim()) && admin_line.contains("shown once"),
        "the first `up` shows the key it made: {admin_line}"
    );
    wait("providers registered and reporting telemetry", 60, || {
        db.count("SELECT count(*) AS n FROM node_keys") == PROVIDERS
            && db.count("SELECT count(DISTINCT node) AS n FROM gpu_samples") == PROVIDERS
    });
    wait("bots trading", 60, || {
        db.count("SELECT count(*) AS n FROM trades") >= 5
    });
    wait("a real job run through a provider agent", 90, || {
        db.count(
            "SELECT count(*) AS n FROM lease_jobs WHERE outcome IS NOT NULL AND log_tail LIKE '%done%'",
        ) >= 1
    });
    job_files_end_to_end(&db, dir.path(), &url_of(&market_url), &log, &prefix);
    wait("usage billed", 60, || {
        db.count("SELECT count(*) AS n FROM usage_lines") >= 3
    });
    wait("reputation moved", 60, || {
        db.count("SELECT count(*) AS n FROM reputation_history") >= 1
    });
    // The bots' two-hour bids demand a score of 700: they fill once the scores the providers
    // of their markets earned reach the engine.
    wait("every provider's score in the engine", 60, || {
        db.count(
            "SELECT count(*) AS n FROM provider_reputation \
             WHERE engine_score >= 700 AND provider BETWEEN 101 AND 105",
        ) == 5
    });
    wait("a bid with a reputation floor filled", 90, || {
        db.count("SELECT count(*) AS n FROM leases WHERE hours = 2") >= 1
    });
    wait("a settlement confirmed on the devnet", 90, || {
        db.count("SELECT count(*) AS n FROM settlements WHERE state = 'confirmed'") >= 1
    });
    demo_render_job(&db, dir.path(), &url_of(&market_url));
    stop(market);

    // A second `up` resumes the market; without bots it only finishes what was in flight.
    let (market, url, admin_line) = up(
        dir.path(),
        &db,
        &log,
        &prefix,
        &["--settle-every-secs", "3600"],
    );
    assert!(
        !admin_line.contains(admin_key.trim()) && admin_line.contains("admin.key"),
        "a later `up` names the key's file only: {admin_line}"
    );
    let admin = api_client::Client::new(
        &url,
        &std::fs::read_to_string(dir.path().join("admin.key")).unwrap(),
    );
    wait("no settlement in flight and the chain scanned", 60, || {
        let open = admin
            .run(&PendingSettlementQuery::build(()))
            .is_ok_and(|q| q.pending_settlement.is_none());
        open && db.count(
            "SELECT count(*) AS n FROM bridge_settlement_txs WHERE state NOT IN ('confirmed', 'failed')",
        ) == 0
            && db.count(
                "SELECT (coalesce((SELECT max(scanned_height) FROM bridge_cursor), 0) \
                 >= coalesce((SELECT max(height) FROM settlements), 0))::int::bigint AS n",
            ) == 1
    });
    stop(market);

    // Every event projected, then the books.
    db.project_all(&log, &format!("{prefix}events"), 4_096);
    let period = ledger::export::Period::new(
        chrono::Utc::now() - chrono::Duration::days(1),
        chrono::Utc::now() + chrono::Duration::days(1),
    )
    .unwrap();
    let report = ledger::export::reconciliation(
        &mut db.connect(),
        period,
        ledger::export::Granularity::Day,
        None,
    )
    .unwrap();
    assert!(report.breaks.is_empty(), "{:#?}", report.breaks);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM leases l WHERE NOT EXISTS (SELECT 1 FROM trades t WHERE t.lease_id = l.lease_id)"),
        0,
        "every lease comes from a fill"
    );

    // The devnet's chain, replayed from its file, pays each provider what the ledger settled.
    let escrow = EscrowKey::from_file(&dir.path().join("escrow.key"), "cosmos").unwrap();
    let mut genesis = Devnet::new("gpumarket-devnet-1", "cosmos", "uusdc", 1_000);
    genesis.fund(escrow.address().as_ref(), 100_000_000);
    let chain = DevnetServer::start_persistent(
        genesis,
        "127.0.0.1:0",
        3_600_000,
        &dir.path().join("devnet-chain.jsonl"),
    )
    .unwrap();
    for account in 101..101 + PROVIDERS {
        let settled = db.count(&format!(
            "SELECT (coalesce(sum(p.amount), 0) * 1000000)::bigint AS n FROM settlement_payouts p \
             JOIN settlements s USING (batch) WHERE s.state = 'confirmed' AND p.account = {account}"
        ));
        let address = db_text(
            &db,
            &format!("SELECT address AS t FROM payout_addresses WHERE account = {account}"),
        );
        let on_chain = chain.with(|net| net.account(&address).map_or(0, |a| a.balance));
        assert_eq!(on_chain as i64, settled, "provider {account} at {address}");
    }
}

/// The demo's providers: five in the bots' markets, three in the render farm's.
const PROVIDERS: i64 = 8;
/// The render farm's dishonest provider.
const LIAR: u64 = 108;

/// The demo's checker and render job: the checker passed the two honest farm providers and
/// failed the liar with its known-answer job before any sale (its lease rejected work,
/// slashed, the buyer never leasing from it, its failed check public on its provider page);
/// the render job is done, every frame the pixels of a render of the same scene here, from
/// an honest provider whose GPU and lease it names.
fn demo_render_job(db: &TestDb, dir: &Path, url: &str) {
    wait("the demo's render job done", 420, || {
        db.count("SELECT count(*) AS n FROM render_jobs WHERE status = 'done'") == 1
    });
    let key = std::fs::read_to_string(dir.join("demo/render-buyer.key")).unwrap();
    let id = db.count("SELECT id AS n FROM render_jobs");
    let graphql = |query: &str, variables: serde_json::Value| -> serde_json::Value {
        reqwest::blocking::Client::new()
            .post(format!("{url}/graphql"))
            .bearer_auth(key.trim())
            .json(&serde_json::json!({"query": query, "variables": variables}))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let answer = graphql(
        "query($id: ID!) { renderJob(id: $id) { progress { frames accepted failed } \
         frames(first: 100) { number pixelDigest provider lease gpu } \
         tasks { role provider } verdicts { provider frame reason } manifest } }",
        serde_json::json!({"id": id.to_string()}),
    );
    let job = &answer["data"]["renderJob"];
    assert_eq!(
        job["progress"],
        serde_json::json!({"frames": 24, "accepted": 24, "failed": 0}),
        "{answer:#}"
    );
    let liar = serde_json::json!(LIAR.to_string());
    let providers: std::collections::BTreeSet<String> = job["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["provider"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        providers,
        ["106", "107"].map(str::to_owned).into(),
        "the two providers that passed their checks rendered and checked each other"
    );
    // The checker's verdicts, on the providers' public pages.
    let checks = |provider: u64| {
        graphql(
            "query($p: ID!) { provider(account: $p) { checks { market node passed detail lease } } }",
            serde_json::json!({"p": provider.to_string()}),
        )["data"]["provider"]["checks"]
            .clone()
    };
    for honest in [106, 107] {
        let c = checks(honest);
        assert!(
            c.as_array().unwrap().iter().any(|c| c["passed"] == true),
            "{c:#}"
        );
    }
    let failed = checks(LIAR);
    let failed = failed.as_array().unwrap();
    assert!(
        !failed.is_empty() && failed.iter().all(|c| c["passed"] == false),
        "{failed:#?}"
    );
    assert!(
        failed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("the reference is"),
        "{failed:#?}"
    );
    // Its check lease ended as rejected work and slashed; no buyer ever leased from it.
    wait("the liar's failed check projected and slashed", 60, || {
        db.count(&format!(
            "SELECT count(*) AS n FROM leases l JOIN slashes s USING (lease_id) \
             JOIN node_checks c USING (lease_id) \
             WHERE l.provider = {LIAR} AND l.close_cause = 'work_rejected' AND NOT c.passed"
        )) >= 1
    });
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS n FROM leases WHERE provider = {LIAR} AND buyer <> 5"
        )),
        0,
        "a node that failed its check sells to nobody"
    );

    let scene = std::fs::read(dir.join("demo/scene.blend")).unwrap();
    let frames = render::FrameRange::new(1, 24).unwrap();
    let spec = render::RenderSpec::new(
        contract::Digest::of(&scene),
        frames,
        render::OutputFormat::Png,
        render::EngineVersion::Cycles3_4,
        None,
    )
    .unwrap();
    let all: Vec<u32> = frames.iter().collect();
    let here = tempfile::tempdir().unwrap();
    let expected = render::local::render_frames(&spec, &scene, &all, here.path()).unwrap();
    let delivered = job["frames"].as_array().unwrap();
    assert_eq!(delivered.len(), 24);
    for (f, want) in delivered.iter().zip(&expected) {
        assert_eq!(f["pixelDigest"], serde_json::json!(want.to_string()), "{f}");
        assert_ne!(f["provider"], liar, "{f}");
        // The simulated GPU's UUID (`SIM-…`), as its node's signed report named it.
        assert!(
            f["gpu"].as_str().is_some_and(|g| g.starts_with("SIM-")),
            "{f}"
        );
        assert!(f["lease"].is_string(), "{f}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(job["manifest"].as_str().unwrap()).unwrap();
    assert_eq!(manifest["frames"].as_array().unwrap().len(), 24);
}

fn url_of(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// A demo bot's job ran from the OCI image the bot uploaded, on the input it uploaded; after
/// its lease ended the bot downloads each output by digest, and the manifest's digest is in a
/// heartbeat of the market's log, signed by the node's key.
fn job_files_end_to_end(db: &TestDb, dir: &Path, url: &str, log: &str, prefix: &str) {
    wait(
        "a job from an image wrote outputs, sealed by a signed report",
        90,
        || {
            db.count(
                "SELECT count(*) AS n FROM lease_jobs j JOIN leases l USING (lease_id) \
             WHERE j.image IS NOT NULL AND j.output_manifest IS NOT NULL AND l.status = 'ended'",
            ) >= 1
        },
    );
    let row = db_text(
        db,
        "SELECT j.buyer || ' ' || j.output_manifest || ' ' || j.report_sequence || ' ' || j.log_tail AS t \
         FROM lease_jobs j JOIN leases l USING (lease_id) WHERE j.image IS NOT NULL \
         AND j.output_manifest IS NOT NULL AND l.status = 'ended' ORDER BY lease_id LIMIT 1",
    );
    let mut parts = row.splitn(4, ' ');
    let (buyer, manifest, sequence, tail) = (
        parts.next().unwrap(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().parse::<u64>().unwrap(),
        parts.next().unwrap_or_default(),
    );
    assert!(
        tail.starts_with(&format!("demo scene of bot {buyer}")),
        "the input was read: {tail}"
    );
    let key = std::fs::read_to_string(dir.join(format!("demo/bot-{buyer}.key"))).unwrap();
    let http = reqwest::blocking::Client::new();
    let get = |cid: &str| -> Vec<u8> {
        let response = http
            .get(format!("{url}/blobs/{cid}"))
            .bearer_auth(key.trim())
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{cid}");
        let bytes = response.bytes().unwrap().to_vec();
        assert_eq!(
            contract::Digest::of(&bytes).cid(),
            cid,
            "the bytes are the digest's"
        );
        bytes
    };
    let files: contract::OutputManifest = serde_json::from_slice(&get(&manifest)).unwrap();
    assert_eq!(files.files.len(), 1, "{files:?}");
    let frame = String::from_utf8(get(&files.files[0].cid)).unwrap();
    assert!(frame.starts_with("frame rendered on GPUs"), "{frame}");

    // The log: the heartbeat whose signed report named the manifest, its signature checked.
    let topic = format!("{prefix}commands");
    let mut events = eventlog::open(log, &eventlog::LogConfig::default()).unwrap();
    let end = events.end_offset(&topic, 0).unwrap();
    let mut found = false;
    let mut offset = 0;
    while offset < end && !found {
        let records = events
            .read(&topic, 0, offset, 4_096, Duration::ZERO)
            .unwrap();
        offset += records.len() as u64;
        for record in records {
            let stamped: contract::codec::CommandRecord =
                contract::codec::decode(record.schema, &record.payload).unwrap();
            let contract::Command::SignedHeartbeat(beat) = stamped.command else {
                continue;
            };
            let report: contract::NodeReport =
                serde_json::from_slice(&beat.evidence.signed).unwrap();
            if report.sequence == sequence && report.outputs.iter().any(|o| o.manifest == manifest)
            {
                let key =
                    ed25519_dalek::VerifyingKey::from_bytes(&beat.evidence.node_key.0).unwrap();
                key.verify_strict(
                    &beat.evidence.signed,
                    &ed25519_dalek::Signature::from_bytes(&beat.evidence.signature.0),
                )
                .expect("the node's signature over the report that names the outputs");
                found = true;
            }
        }
    }
    assert!(
        found,
        "a signed heartbeat in the log names manifest {manifest}"
    );
}

fn db_text(db: &TestDb, sql: &str) -> String {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        t: String,
    }
    diesel::sql_query(sql)
        .get_result::<Row>(&mut db.connect())
        .unwrap()
        .t
}

#[test]
fn the_whole_market_runs_end_to_end_on_the_embedded_log() {
    whole_market("e2e_file", None);
}

#[test]
fn kafka_the_whole_market_runs_end_to_end_on_kafka() {
    whole_market("e2e_kafka", Some(eventlog::testing::kafka_url()));
}

#[test]
fn a_demo_part_that_cannot_start_stops_up_before_it_says_it_is_up() {
    let db = TestDb::new("e2e_bad_demo_key");
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    std::fs::create_dir_all(&demo).unwrap();
    // A key file the market has never issued, as a hand-edited or stale one would be.
    provider_agent::durable::write_atomic(
        &demo.join("provider-101.key"),
        b"gm_0000000000000000_not-a-key",
        0o600,
    )
    .unwrap();
    let out = Process::new(env!("CARGO_BIN_EXE_gpumarket"))
        .arg("up")
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--http",
            "127.0.0.1:0",
            "--chain-rpc",
            "127.0.0.1:0",
            "--demo",
        ])
        .arg("--log")
        .arg(format!("file://{}", dir.path().join("log").display()))
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("the gpumarket binary runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("gpumarket is up"), "{stdout}");
    assert!(stderr.contains("demo provider 101"), "{stderr}");
}
