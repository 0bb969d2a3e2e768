//! Metered leases end to end (issue 16): `gpumarket up --demo` and one more provider agent,
//! the `provider-agent` binary in its own process, offering H100s cheaper than the demo's
//! nodes. A buyer's bid that re-bids on failure fills on that node; once the agent's signed
//! report has shown the lease healthy, the agent is killed with SIGKILL in the middle of the
//! lease. Within the market's heartbeat timeout the lease fails as `node_silent`, charged by
//! the engine's rule up to its last healthy heartbeat and the rest refunded; the re-bid of
//! its unused hours fills on a demo node; the invoice, the FOCUS export and the accrued
//! revenue show the running re-bid's usage; after `up` stops, the books reconcile.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use api_client::mutations::{
    BondVariables, ConfigureMarket, ConfigureMarketVariables, CreateApiKey, CreateApiKeyVariables,
    CreditDeposit, CreditDepositVariables, PlaceOrder, PlaceOrderVariables, PostBond,
};
use api_client::queries::{
    Balance, BalanceQuery, DepthQuery, DepthVariables, Lease as ApiLease, LeasesQuery,
    LeasesVariables, OrdersQuery, OrdersVariables,
};
use api_client::types::{
    BidInput, LeaseRole as ApiRole, MarketConfigInput, PlaceOrderInput, Role, TimeInForce,
};
use api_client::{Client, Id, MutationBuilder, QueryBuilder, U64};
use chrono::{DateTime, Utc};
use contract::{AccountId, LeaseEndReason, LeaseId};
use ledger::read::{Key, Lease, LeaseFilter, LeaseRole, UsageLine};
use ledger::testing::TestDb;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

const MARKET: &str = "H100-80GB";
/// The market's settings for the test: nodes are silent after 10 s without a report (two
/// of the demo agents' 5 s intervals), and usage accrues per 5 s period, so a lease crosses
/// periods within seconds and a running one shows accrued usage soon.
const TIMEOUT_MS: i64 = 10_000;
const PERIOD_S: i64 = 5;
/// The agent run as its own process: its provider account and node, and its ask, below the
/// demo's H100 asks (2.40 on `sim-eu-west-1`, 2.25 on `sim-us-east-2`). Its 64 GPUs (the most
/// a report may carry) keep its ask from running dry under the demo's bots, which take the
/// cheapest H100s first, so the demo's H100 nodes stay free for the re-bid.
const PROVIDER: u64 = 201;
const NODE: &str = "ext-h100-1";
const ASK: &str = "2.00";
/// The market's bond per GPU in this test.
const BOND_PER_GPU: &str = "25";
/// The buyer's bid: a limit both the agent's ask and the demo's H100 asks satisfy.
const BUYER: u64 = 901;
const LIMIT: &str = "2.50";
const GPUS: u64 = 2;
const HOURS: u64 = 3;
const DEPOSIT: i64 = 1_000;
/// The demo's H100 nodes: (provider, node, price).
const DEMO_H100: [(u64, &str, &str); 2] = [
    (101, "sim-eu-west-1", "2.40"),
    (102, "sim-us-east-2", "2.25"),
];

/// A child process killed (SIGKILL) if the test fails while it runs.
struct Running(Option<Child>);

impl Running {
    fn take(mut self) -> Child {
        self.0.take().expect("the process is held")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `up --demo` on the embedded log in `dir`; returns it and its API URL once it said
/// it is up.
fn up(dir: &Path, db: &TestDb, log: &str, prefix: &str) -> (Running, String) {
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
        .args(["--block-ms", "200", "--demo"])
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the gpumarket binary starts");
    let stdout = child.stdout.take().unwrap();
    let market = Running(Some(child));
    let mut url = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("API and GraphiQL") {
            url = Some(rest.trim().trim_end_matches("/graphql").to_owned());
        }
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    (market, url.expect("`up` printed its API URL"))
}

/// Stops `up` as Ctrl-C does and waits for it to finish cleanly.
fn stop(market: Running) {
    let mut child = market.take();
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
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`up` did not stop on Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `done` every 250 ms for up to `secs`; its first `Some`.
fn wait<T>(what: &str, secs: u64, mut done: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(t) = done() {
            eprintln!("metered: {what} ({:.1} s)", started.elapsed().as_secs_f64());
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The `provider-agent` binary beside `gpumarket`'s. Cargo builds it for provider-agent's
/// own tests (`cargo nextest run --workspace` does); `-p gpumarket` alone does not, so a
/// missing or stale one is said so, not run.
fn agent_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_gpumarket")).with_file_name("provider-agent");
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build it first: cargo build -p provider-agent",
                path.display()
            )
        });
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../provider-agent");
    let mut newer = Vec::new();
    let mut dirs = vec![sources.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else if entry.metadata().unwrap().modified().unwrap() > built {
                newer.push(entry.path());
            }
        }
    }
    assert!(
        newer.is_empty(),
        "{} is older than {newer:?}; rebuild it: cargo build -p provider-agent",
        path.display()
    );
    path
}

/// Starts the agent of `dir/agent.toml`, its log in `dir/agent.log`.
fn start_agent(dir: &Path) -> Running {
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let child = Process::new(agent_binary())
        .arg("run")
        .arg("--config")
        .arg(dir.join("agent.toml"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the provider-agent binary starts");
    Running(Some(child))
}

/// How many rounds in the agent's log had a report that listed `lease` healthy and was
/// taken by the API (sent, none left waiting).
fn healthy_reports(dir: &Path, lease: u64) -> usize {
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("reported"))
        .filter(|line| {
            let listed = line
                .split_once("healthy_leases: Some([")
                .and_then(|(_, rest)| rest.split_once(']'))
                .is_some_and(|(ids, _)| ids.split(", ").any(|id| id == lease.to_string()));
            let sent = line
                .split_once("flushed: Flushed { sent: ")
                .and_then(|(_, rest)| rest.split_once(','))
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok_and(|n| n > 0));
            listed && sent && line.contains("waiting: 0")
        })
        .count()
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn ms(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

/// The charging rule (`contract::market`): `floor(price × gpus × ms / 3,600,000)` in
/// micro-units.
fn rule(price: Decimal, gpus: u32, ms: i64) -> Decimal {
    let micros = (price * Decimal::from(1_000_000))
        .to_i128()
        .expect("a price in micro-units");
    Decimal::from_i128_with_scale(micros * i128::from(gpus) * i128::from(ms) / 3_600_000, 6)
}

/// The buyer's leases as the API lists them, of every status.
fn api_leases(buyer: &Client) -> Vec<ApiLease> {
    let mut all = Vec::new();
    for status in ["created", "running", "ended"] {
        let page = buyer
            .run(&LeasesQuery::build(LeasesVariables {
                role: ApiRole::Buyer,
                status: status.to_owned(),
                first: U64(100),
            }))
            .unwrap();
        all.extend(page.leases.nodes);
    }
    all
}

/// The buyer's leases as the activity projection holds them.
fn ledger_leases(db: &TestDb) -> Vec<Lease> {
    let filter = LeaseFilter {
        account: AccountId(BUYER),
        role: LeaseRole::Buyer,
        state: None,
    };
    ledger::read::leases(&mut db.connect(), &filter, Key::START, 100)
        .unwrap()
        .rows
}

/// `account`'s usage lines as `role`, of the last and next day.
fn usage(conn: &mut diesel::PgConnection, account: u64, role: LeaseRole) -> Vec<UsageLine> {
    let now = Utc::now();
    let page = ledger::read::account_usage(
        conn,
        AccountId(account),
        role,
        (
            now - chrono::Duration::days(1),
            now + chrono::Duration::days(1),
        ),
        None,
        10_000,
    )
    .unwrap();
    assert!(!page.more);
    page.rows
}

/// Checks that `lines` are `lease`'s usage from its start to `to`, without a gap, each inside
/// one charge period and charged by the rule; returns their sum.
fn check_lines(lease: &Lease, lines: &[&UsageLine], to: DateTime<Utc>) -> Decimal {
    let mut at = lease.created_at;
    let mut sum = Decimal::ZERO;
    for line in lines {
        assert_eq!(
            line.usage_start, at,
            "lease {} runs on without a gap",
            lease.id.0
        );
        assert!(line.usage_end > line.usage_start);
        let start = line.charge_start.timestamp_millis();
        assert_eq!(start % (PERIOD_S * 1_000), 0, "periods align to the epoch");
        assert_eq!(ms(line.charge_start, line.charge_end), PERIOD_S * 1_000);
        assert!(line.charge_start <= line.usage_start && line.usage_end <= line.charge_end);
        assert_eq!(
            (line.gpus, line.unit_price, line.node, line.provider),
            (lease.gpus, lease.price, lease.node, lease.provider)
        );
        let charge = rule(
            lease.price,
            lease.gpus,
            ms(line.usage_start, line.usage_end),
        );
        assert_eq!(line.amount, charge, "{line:?} is charged by the rule");
        assert_eq!(line.fee + line.provider_earned, line.amount);
        sum += line.amount;
        at = line.usage_end;
    }
    assert_eq!(at, to, "lease {}'s lines reach {to}", lease.id.0);
    sum
}

/// A CSV record's fields (RFC 4180: quoted fields may hold commas and doubled quotes).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[test]
fn a_killed_agent_fails_its_lease_to_the_last_heartbeat_and_the_rebid_runs_elsewhere() {
    let db = TestDb::new("metered_e2e");
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("metered-{}-", std::process::id());
    let log = format!("file://{}", dir.path().join("log").display());
    let (market, url) = up(dir.path(), &db, &log, &prefix);
    let admin_key = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    let admin = Client::new(&url, admin_key.trim());
    wait("the demo's providers registered", 60, || {
        (db.count("SELECT count(*) AS n FROM node_keys") == 8).then_some(())
    });
    let config = admin
        .run(&ConfigureMarket::build(ConfigureMarketVariables {
            market: MARKET.to_owned(),
            config: MarketConfigInput {
                charge_period_seconds: Some(U64(PERIOD_S as u64)),
                report_interval_ms: Some(U64(5_000)),
                heartbeat_timeout_ms: Some(U64(TIMEOUT_MS as u64)),
                simulated: Some(true),
                bond_per_gpu: Some(BOND_PER_GPU.to_owned()),
                model_names: Some(vec![format!("{MARKET} (simulated)")]),
                ..MarketConfigInput::default()
            },
        }))
        .unwrap()
        .configure_market;
    assert_eq!(
        (config.heartbeat_timeout_ms, config.charge_period_seconds),
        (U64(TIMEOUT_MS as u64), U64(PERIOD_S as u64))
    );

    // The buyer, with money.
    let key = |role, account: u64, label: &str| {
        admin
            .run(&CreateApiKey::build(CreateApiKeyVariables {
                role,
                account: Some(Id::new(account.to_string())),
                label: label.to_owned(),
            }))
            .unwrap()
            .create_api_key
            .key
    };
    let buyer = Client::new(&url, &key(Role::Trader, BUYER, "metered buyer"));
    admin
        .run(&CreditDeposit::build(CreditDepositVariables {
            account: Id::new(BUYER.to_string()),
            amount: DEPOSIT.to_string(),
            idempotency_key: Some("1".to_owned()),
        }))
        .unwrap();
    let balance = || buyer.run(&BalanceQuery::build(())).unwrap().balance;
    let funded = balance();
    assert_eq!(
        (funded.available, funded.held, funded.in_lease),
        (Decimal::from(DEPOSIT), Decimal::ZERO, Decimal::ZERO)
    );

    // The agent in its own process: its folder, provider key (0600) and configuration.
    let node_dir = dir.path().join("ext-agent");
    std::fs::create_dir_all(&node_dir).unwrap();
    provider_agent::durable::write_atomic(
        &node_dir.join("provider.key"),
        key(Role::Provider, PROVIDER, "metered agent").as_bytes(),
        0o600,
    )
    .unwrap();
    // Its bond, behind all 64 of its GPUs.
    let provider_key = std::fs::read_to_string(node_dir.join("provider.key")).unwrap();
    admin
        .run(&CreditDeposit::build(CreditDepositVariables {
            account: Id::new(PROVIDER.to_string()),
            amount: "1600".to_owned(),
            idempotency_key: Some("2".to_owned()),
        }))
        .unwrap();
    Client::new(&url, &provider_key)
        .run(&PostBond::build(BondVariables {
            market: MARKET.to_owned(),
            amount: "1600".to_owned(),
        }))
        .unwrap();
    let toml = format!(
        "api_url = \"{url}\"\napi_key_file = \"provider.key\"\nnode = \"{NODE}\"\n\
         class = \"{MARKET}\"\nregion = \"eu-north\"\nsource = \"simulated\"\n\
         interval_secs = 1\nstate_dir = \"state\"\n\n\
         [simulated]\nname = \"{MARKET}\"\ncount = 64\nvram_mb = 81920\n\n\
         [offer]\nprice = \"{ASK}\"\nvram_gb = 80\ninterconnect = \"nvlink\"\nvendor = \"nvidia\"\n\
         hours_ahead = 720\nmax_temperature_c = 90.0\nmax_ecc_errors = 0\n"
    );
    std::fs::write(node_dir.join("agent.toml"), toml).unwrap();
    let agent = start_agent(&node_dir);
    wait("the agent's ask in the book, with room", 30, || {
        let depth = buyer
            .run(&DepthQuery::build(DepthVariables {
                market: MARKET.to_owned(),
                levels: U64(10),
            }))
            .ok()?
            .depth;
        depth
            .asks
            .iter()
            .any(|level| level.price == dec(ASK) && level.gpus.0 >= 8 * GPUS)
            .then_some(())
    });

    // The bid fills on the agent's node, the cheapest.
    let placed = buyer
        .run(&PlaceOrder::build(PlaceOrderVariables {
            input: PlaceOrderInput {
                market: MARKET.to_owned(),
                client_order_id: "1".to_owned(),
                price: LIMIT.to_owned(),
                gpus: U64(GPUS),
                time_in_force: TimeInForce::Gtc,
                bid: Some(BidInput {
                    rebid_on_failure: true,
                    ..BidInput::new(U64(HOURS))
                }),
                ask: None,
            },
        }))
        .unwrap()
        .place_order;
    let filled_at = Instant::now();
    assert_eq!(placed.remaining, U64(0), "{placed:?}");
    let [fill] = placed.fills.as_slice() else {
        panic!("one fill: {placed:?}");
    };
    assert_eq!(
        (fill.price, fill.gpus, fill.hours),
        (dec(ASK), U64(GPUS), U64(HOURS))
    );
    let first = fill.lease_id.0;
    let cost = dec(ASK) * Decimal::from(GPUS * HOURS);
    let leased = balance();
    assert_eq!(
        (leased.available, leased.held, leased.in_lease),
        (Decimal::from(DEPOSIT) - cost, Decimal::ZERO, cost),
        "the hold at the limit price is released to the trade's cost"
    );
    // Six rounds of the agent (one a second) whose reports showed the lease healthy: the
    // last healthy heartbeat is 5 s or more into the lease however late a loaded machine
    // ran the agent.
    wait(
        "six of the agent's signed reports showed the lease healthy",
        30,
        || (healthy_reports(&node_dir, first) >= 6).then_some(()),
    );
    // Some seconds into the lease, across a charge period's end.
    std::thread::sleep(Duration::from_secs(7).saturating_sub(filled_at.elapsed()));

    let mut agent = agent.take();
    agent.kill().unwrap();
    let killed = Utc::now();
    agent.wait().unwrap();

    // The node goes silent and the lease fails, charged to its last healthy heartbeat.
    let failed = wait("the lease failed", (TIMEOUT_MS / 1_000 + 8) as u64, || {
        api_leases(&buyer)
            .into_iter()
            .find(|l| l.id.0 == first && l.status == "ended")
    });
    assert_eq!(failed.node, NODE);
    assert_eq!(
        failed.close_cause.as_deref(),
        Some("node_silent"),
        "{failed:?}"
    );
    let charged_until = failed
        .charged_until
        .expect("a closed lease is charged to a time");
    let last_seen: DateTime<Utc> = failed
        .close_detail
        .as_deref()
        .expect("the node's last heartbeat")
        .parse()
        .unwrap();
    let rebid_order = failed.rebid_order.expect("the failure re-bid").0;
    assert_eq!(failed.rebid_refused, None);
    let lease = wait("the failed lease's money projected", 10, || {
        ledger_leases(&db)
            .into_iter()
            .find(|l| l.id == LeaseId(first) && l.charged.is_some())
    });
    let ended_at = lease.ended_at.unwrap();
    assert_eq!(lease.end_reason, Some(LeaseEndReason::ProviderFailed));
    assert_eq!(
        (lease.charged_until, lease.charged_ms),
        (Some(charged_until), failed.charged_ms.map(|m| m.0))
    );
    assert!(
        lease.created_at < charged_until && charged_until <= last_seen && charged_until <= killed,
        "charged to the last healthy heartbeat, after the start ({}) and before the kill \
         ({killed}): {charged_until}, last heartbeat {last_seen}",
        lease.created_at
    );
    assert!(
        last_seen <= killed + chrono::Duration::seconds(1),
        "{last_seen} after the kill at {killed}"
    );
    assert!(
        ms(last_seen, ended_at) >= TIMEOUT_MS && ms(killed, ended_at) <= TIMEOUT_MS + 2_000,
        "silent a timeout after its last heartbeat ({last_seen}), within it after the kill \
         ({killed}): {ended_at}"
    );
    // Healthy from its start to its last heartbeat: all of that time is charged.
    assert_eq!(
        lease.charged_ms,
        Some(ms(lease.created_at, charged_until) as u64)
    );
    assert!(ms(lease.created_at, charged_until) >= 5_000, "{lease:?}");
    let mut conn = db.connect();
    let lines = usage(&mut conn, BUYER, LeaseRole::Buyer);
    let first_lines: Vec<&UsageLine> = lines.iter().filter(|l| l.lease == lease.id).collect();
    assert!(first_lines.len() >= 2, "{first_lines:?}");
    let charged = check_lines(&lease, &first_lines, charged_until);
    assert_eq!(
        lease.charged,
        Some(charged),
        "the lease's charge is its lines' sum"
    );
    assert!(first_lines
        .iter()
        .all(|l| l.settled_at.is_some() && l.end_reason == Some(LeaseEndReason::ProviderFailed)));
    assert!(charged > Decimal::ZERO && charged < cost);

    // The failure slashed a quarter of the bond behind the lease's two GPUs (12.50): the
    // buyer is credited a quarter of what it was charged, the insurance fund the rest, and
    // both parties read it, with its cause and evidence.
    let slash = wait("the slash projected", 10, || {
        ledger::read::slashes(&mut conn, Some(AccountId(BUYER)), None, 10)
            .unwrap()
            .rows
            .into_iter()
            .find(|s| s.lease_id == LeaseId(first))
    });
    let credit = Decimal::new(
        (charged * Decimal::from(1_000_000)).to_i64().unwrap() / 4,
        6,
    );
    assert_eq!(
        (slash.slashed, slash.buyer_credit, slash.insurance),
        (dec("12.5"), credit, dec("12.5") - credit)
    );
    assert_eq!(
        (slash.provider, slash.node.as_str(), slash.cause.as_str()),
        (AccountId(PROVIDER), NODE, "node_silent")
    );
    assert!(
        slash
            .evidence
            .as_deref()
            .is_some_and(|e| e.starts_with("last heartbeat")),
        "{slash:?}"
    );
    let seen_by_provider = ledger::read::slashes(&mut conn, Some(AccountId(PROVIDER)), None, 10)
        .unwrap()
        .rows;
    assert!(
        seen_by_provider.contains(&slash),
        "the provider reads it too (with the demo bots' leases on its node): {seen_by_provider:?}"
    );

    // The re-bid of the unused whole hours fills on one of the demo's H100 nodes.
    let second = wait("the re-bid filled", 45, || {
        ledger_leases(&db)
            .into_iter()
            .find(|l| l.bid_order.0 == rebid_order)
    });
    let orders = buyer
        .run(&OrdersQuery::build(OrdersVariables {
            status: None,
            first: U64(100),
        }))
        .unwrap()
        .orders
        .nodes;
    let order = orders.iter().find(|o| o.id.0 == rebid_order).unwrap();
    assert_eq!(order.rebid_of, Some(U64(first)), "{order:?}");
    assert_eq!(
        (
            order.side.as_str(),
            order.price,
            order.gpus,
            order.remaining
        ),
        ("bid", dec(LIMIT), U64(GPUS), U64(0))
    );
    let demo = DEMO_H100
        .iter()
        .find(|(_, node, _)| second.node.as_str() == *node)
        .unwrap_or_else(|| panic!("the re-bid filled on a demo H100 node: {second:?}"));
    assert_eq!(
        (second.provider, second.price, second.gpus, second.hours),
        (
            AccountId(demo.0),
            dec(demo.2),
            GPUS as u32,
            HOURS as u32 - 1
        )
    );
    let api_second = wait("the re-bid's lease listed", 10, || {
        api_leases(&buyer)
            .into_iter()
            .find(|l| l.id.0 == second.id.0)
    });
    assert_eq!(api_second.bid_order, U64(rebid_order));
    let cost2 = second.cost;
    assert_eq!(cost2, second.price * Decimal::from(GPUS * (HOURS - 1)));
    // The buyer paid the failed lease's charge, and the rest came back to pay the re-bid.
    let Balance {
        available,
        held,
        in_lease,
        ..
    } = balance();
    assert_eq!(
        (available, held, in_lease),
        (
            Decimal::from(DEPOSIT) - charged - cost2 + slash.buyer_credit,
            Decimal::ZERO,
            cost2
        ),
        "and the slash credited the buyer"
    );

    // The running re-bid accrues: its usage is on the invoice, in the accrued revenue and in
    // the FOCUS export before it ends.
    wait(
        "the re-bid's first period accrued",
        (PERIOD_S + TIMEOUT_MS / 1_000 + 10) as u64,
        || {
            usage(&mut conn, BUYER, LeaseRole::Buyer)
                .iter()
                .any(|l| l.lease == second.id)
                .then_some(())
        },
    );
    let now = Utc::now();
    let focus = reqwest::blocking::Client::new()
        .get(format!("{url}/exports/focus"))
        .query(&[
            ("from", (now - chrono::Duration::days(1)).to_rfc3339()),
            ("to", (now + chrono::Duration::days(1)).to_rfc3339()),
        ])
        .bearer_auth(admin_key.trim())
        .send()
        .unwrap();
    assert!(focus.status().is_success(), "{focus:?}");
    let focus = focus.text().unwrap();
    let (lines, invoices, accrued, provider_lines) = conn
        .build_transaction()
        .read_only()
        .repeatable_read()
        .run(|c| {
            let lines = usage(c, BUYER, LeaseRole::Buyer);
            let month = (Utc::now() + chrono::Duration::days(40)).date_naive();
            let invoices = ledger::read::invoices(c, AccountId(BUYER), month, 12)?.rows;
            let accrued = ledger::read::accrued(c, Some(second.provider))?;
            let provider_lines = usage(c, second.provider.0, LeaseRole::Provider);
            Ok::<_, ledger::LedgerError>((lines, invoices, accrued, provider_lines))
        })
        .unwrap();
    let second_lines: Vec<&UsageLine> = lines.iter().filter(|l| l.lease == second.id).collect();
    assert!(second_lines
        .iter()
        .all(|l| l.settled_at.is_none() && l.end_reason.is_none()));
    let last = second_lines.last().expect("the re-bid accrued").usage_end;
    let accrued_second = check_lines(&second, &second_lines, last);
    assert!(accrued_second > Decimal::ZERO);
    assert_eq!(
        lines
            .iter()
            .map(|l| l.lease)
            .collect::<std::collections::BTreeSet<_>>(),
        [lease.id, second.id].into(),
        "the buyer's usage is its two leases'"
    );
    // The invoice counts the settled and the accrued lines alike.
    assert_eq!(
        (
            invoices.iter().map(|i| i.amount).sum::<Decimal>(),
            invoices.iter().map(|i| i.lines).sum::<u32>() as usize,
            invoices.iter().map(|i| i.gpu_hours).sum::<Decimal>(),
        ),
        (
            charged + accrued_second,
            lines.len(),
            lines.iter().map(|l| l.gpu_hours).sum::<Decimal>()
        ),
        "{invoices:?}"
    );
    assert!(invoices
        .iter()
        .all(|i| i.status == ledger::read::InvoiceStatus::Open));
    // The provider's accrued revenue is its lines not settled yet, the re-bid's among them.
    let unsettled: Vec<&UsageLine> = provider_lines
        .iter()
        .filter(|l| l.settled_at.is_none())
        .collect();
    assert!(unsettled.iter().any(|l| l.lease == second.id));
    assert_eq!(
        (
            accrued.lines as usize,
            accrued.gross,
            accrued.fees,
            accrued.net
        ),
        (
            unsettled.len(),
            unsettled.iter().map(|l| l.amount).sum::<Decimal>(),
            unsettled.iter().map(|l| l.fee).sum::<Decimal>(),
            unsettled.iter().map(|l| l.provider_earned).sum::<Decimal>(),
        )
    );
    // FOCUS: a row per line of the buyer's, as the ledger has it, the accrued ones unsettled.
    let mut rows = focus.lines();
    let header = csv_fields(rows.next().unwrap());
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<Vec<String>> = rows
        .map(csv_fields)
        .filter(|r| r[column("BillingAccountId")] == format!("account/{BUYER}"))
        .collect();
    let resource = |l: &Lease| format!("lease/{}/{}", l.key.partition, l.id.0);
    for (lease, want_settled) in [(&lease, true), (&second, false)] {
        let of_lease: Vec<&Vec<String>> = rows
            .iter()
            .filter(|r| r[column("ResourceId")] == resource(lease))
            .collect();
        assert!(
            !of_lease.is_empty(),
            "lease {} is in the FOCUS export",
            lease.id.0
        );
        for row in of_lease {
            let start = row[column("x_UsageStart")]
                .parse::<DateTime<Utc>>()
                .unwrap();
            let line = lines
                .iter()
                .find(|l| l.lease == lease.id && l.usage_start == start)
                .unwrap_or_else(|| panic!("a ledger line for {row:?}"));
            for name in ["BilledCost", "ListCost", "ContractedCost", "EffectiveCost"] {
                assert_eq!(dec(&row[column(name)]), line.amount, "{name} of {row:?}");
            }
            assert_eq!(
                row[column("x_UsageEnd")].parse::<DateTime<Utc>>().unwrap(),
                line.usage_end
            );
            assert_eq!(
                row[column("x_SettledAt")].is_empty(),
                !want_settled,
                "{row:?}"
            );
            assert_eq!(row[column("x_FocusVersion")], "1.2");
        }
    }
    assert_eq!(
        rows.iter()
            .filter(|r| r[column("ResourceId")] == resource(&lease))
            .map(|r| dec(&r[column("BilledCost")]))
            .sum::<Decimal>(),
        charged
    );
    // All of that while the re-bid runs.
    let running = api_leases(&buyer)
        .into_iter()
        .find(|l| l.id == api_second.id)
        .unwrap();
    assert_ne!(running.status, "ended", "{running:?}");

    // Every event projected, the books reconcile.
    stop(market);
    db.project_all(&log, &format!("{prefix}events"), 4_096);
    let period = ledger::export::Period::new(
        Utc::now() - chrono::Duration::days(1),
        Utc::now() + chrono::Duration::days(1),
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

    // Every heartbeat the bills rest on verifies from the log alone; a forged one does not.
    let audit = |to: Option<u64>| {
        let mut command = Process::new(env!("CARGO_BIN_EXE_gpumarket"));
        command.args(["audit", "--log", &log, "--topic-prefix", &prefix]);
        if let Some(to) = to {
            command.args(["--to", &to.to_string()]);
        }
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, printed) = audit(None);
    let summary = printed.lines().last().unwrap_or_default().to_owned();
    let verified: u64 = summary
        .split(" verified")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        ok && verified >= 10 && summary.ends_with(" 0 failed"),
        "{printed}"
    );
    let mut commands = eventlog::open(&log, &eventlog::LogConfig::default()).unwrap();
    let topic = format!("{prefix}commands");
    let end = commands.end_offset(&topic, 0).unwrap();
    let first_beat = (0..end)
        .find_map(|offset| {
            let record = commands
                .read(&topic, 0, offset, 1, Duration::ZERO)
                .unwrap()
                .remove(0);
            let stamped: contract::codec::CommandRecord =
                contract::codec::decode(record.schema, &record.payload).unwrap();
            matches!(stamped.command, contract::Command::SignedHeartbeat(_)).then_some(stamped)
        })
        .unwrap();
    let mut forged = first_beat.clone();
    if let contract::Command::SignedHeartbeat(beat) = &mut forged.command {
        beat.healthy_leases.push(contract::LeaseId(999_999));
    }
    let payload = contract::codec::encode(&forged);
    commands
        .append(
            &topic,
            0,
            &[eventlog::NewRecord {
                kind: forged.command.kind(),
                schema: contract::codec::SCHEMA,
                payload: &payload,
            }],
        )
        .unwrap();
    let (ok, printed) = audit(None);
    assert!(!ok, "{printed}");
    assert!(
        printed.contains(&format!("FAILED command {end}:"))
            && printed.trim_end().ends_with(" 1 failed"),
        "{printed}"
    );
    // A range that stops before the forgery verifies.
    assert!(audit(Some(end)).0);
}
