//! The Cosmos bridge as a process (`gpumarket bridge run`) against a whole market (engine,
//! projectors and API on threads, real Postgres) and the devnet simulator over JSON-RPC:
//! deposits credited once, unmatched deposits set aside, withdrawals settled on chain,
//! `kill -9` of the bridge at each step of its work, the chain's failures, and at the end
//! the on-chain balances equal to the ledger and a reconciliation with no break.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use api::testing::{Market, T_BUYER};
use cosmos_bridge::devnet::server::DevnetServer;
use cosmos_bridge::devnet::Devnet;
use cosmos_bridge::keys::EscrowKey;
use cosmos_bridge::tx::{sign_payouts, Account, Chain, Fees, Payout};
use rust_decimal::Decimal;
use serde_json::json;

const MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
const USDC: u128 = 1_000_000;

fn chain() -> Chain {
    Chain {
        chain_id: "gpumarket-devnet-1".into(),
        prefix: "cosmos".into(),
        denom: "uusdc".into(),
        decimals: 6,
    }
}

fn key_file(dir: &std::path::Path, name: &str, hex: &str) -> EscrowKey {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, hex).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    EscrowKey::from_file(&path, "cosmos").unwrap()
}

struct World {
    market: Market,
    chain: DevnetServer,
    escrow: EscrowKey,
    wallet: EscrowKey,
    payout_to: String,
    api_key_file: std::path::PathBuf,
}

impl World {
    fn bridge(&self, kill_at: Option<&str>) -> Child {
        let mut process = Process::new(env!("CARGO_BIN_EXE_gpumarket"));
        process
            .args([
                "bridge",
                "--api-url",
                &self.market.url,
                "--rpc-url",
                self.chain.url(),
            ])
            .arg("--api-key-file")
            .arg(&self.api_key_file)
            .args(["--database-url", self.market.db.url()])
            .args([
                "--period-secs",
                "0",
                "--min-payout",
                "1",
                "--poll-ms",
                "100",
            ])
            .args(["--rebroadcast-secs", "1", "--gas-price", "0.01"])
            .arg("run")
            .env("GPUMARKET_ESCROW_MNEMONIC", MNEMONIC)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(step) = kill_at {
            process.env("GPUMARKET_BRIDGE_KILL_AT", step);
        }
        process.spawn().expect("the gpumarket binary starts")
    }

    /// A deposit from the buyer's wallet to escrow with `memo`, signed and broadcast.
    fn deposit(&self, usdc: u128, memo: &str) {
        let wallet = self.wallet.address().to_string();
        let account = self.chain.with(|net| {
            let a = net.account(&wallet).unwrap();
            // Transactions still in the mempool count, as the chain counts them.
            Account {
                number: a.number,
                sequence: a.sequence + net.mempool_len() as u64,
            }
        });
        let tx = sign_payouts(
            &self.wallet,
            &chain(),
            &[Payout {
                address: self.escrow.address().to_string(),
                amount: Decimal::from(usdc as u64),
            }],
            memo,
            Fees {
                amount: 2_000,
                gas_limit: 200_000,
            },
            account,
        )
        .unwrap();
        self.chain.with(|net| net.broadcast(&tx.bytes)).unwrap();
    }

    fn balance(&self, field: &str) -> Decimal {
        let data = self.market.ok(
            &self.market.buyer,
            &format!("{{ balance {{ {field} }} }}"),
            json!({}),
        );
        data["balance"][field].as_str().unwrap().parse().unwrap()
    }

    fn on_chain(&self, address: &str) -> u128 {
        self.chain
            .with(|net| net.account(address).map_or(0, |a| a.balance))
    }

    fn withdraw(&self, usdc: &str) {
        self.market.ok(
            &self.market.buyer,
            "mutation($a: String!) { requestWithdrawal(amount: $a) { amount } }",
            json!({"a": usdc}),
        );
    }

    fn confirmed_batches(&self) -> i64 {
        self.market
            .db
            .count("SELECT count(*) AS n FROM settlements WHERE state = 'confirmed'")
    }
}

fn wait(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut bridge: Child) {
    let _ = bridge.kill();
    let _ = bridge.wait();
}

#[test]
fn the_bridge_credits_and_settles_exactly_once_through_crashes_and_chain_failures() {
    let market = Market::start("bridge", api::Limits::default());
    let api_key_file = market.dir.path().join("admin.key");
    std::fs::write(&api_key_file, &market.admin).unwrap();
    let escrow = EscrowKey::from_mnemonic(MNEMONIC, "", "cosmos").unwrap();
    let wallet = key_file(market.dir.path(), "wallet.key", &"11".repeat(32));
    let payout_key = key_file(market.dir.path(), "payout.key", &"22".repeat(32));
    let mut devnet = Devnet::new("gpumarket-devnet-1", "cosmos", "uusdc", 1_000);
    devnet.fund(wallet.address().as_ref(), 10_000 * USDC);
    // The escrow's own float for fees.
    devnet.fund(escrow.address().as_ref(), 5 * USDC);
    let chain = DevnetServer::start(devnet, "127.0.0.1:0", 100).unwrap();
    let world = World {
        market,
        chain,
        payout_to: payout_key.address().to_string(),
        escrow,
        wallet,
        api_key_file,
    };
    let m = &world.market;

    // Given deposits: one for the buyer, one without a usable memo, one for no account.
    world.deposit(500, &T_BUYER.to_string());
    world.deposit(7, "please credit me");
    world.deposit(3, "999999");
    // When the bridge is killed right after the engine credited the first...
    let crashed = world.bridge(Some("credited"));
    let status = wait_exit(crashed);
    assert_eq!(status.signal(), Some(9), "killed at `credited`");
    // ...then restarted: the deposit is credited once, the others are set aside.
    let bridge = world.bridge(None);
    wait("the deposit", 30, || {
        world.balance("available") == Decimal::from(500)
    });
    wait("the transfers recorded", 30, || {
        m.db.count("SELECT count(*) AS n FROM bridge_transfers WHERE state = 'credited'") == 1
            && m.db
                .count("SELECT count(*) AS n FROM bridge_transfers WHERE state = 'unmatched'")
                == 2
    });
    m.projected();
    assert_eq!(m.db.count("SELECT count(*) AS n FROM chain_deposits"), 1);
    stop(bridge);
    assert_eq!(
        world.balance("available"),
        Decimal::from(500),
        "never twice"
    );

    // A withdrawal needs a payout address of the chain.
    assert_eq!(
        m.code(
            Some(&m.buyer),
            "mutation { requestWithdrawal(amount: \"1\") { amount } }",
            json!({})
        ),
        "NO_PAYOUT_ADDRESS"
    );
    assert_eq!(
        m.code(
            Some(&m.buyer),
            "mutation($a: String!) { setPayoutAddress(address: $a) }",
            json!({"a": EscrowKey::from_mnemonic(MNEMONIC, "", "noble").unwrap().address().to_string()})
        ),
        "VALIDATION"
    );
    m.ok(
        &m.buyer,
        "mutation($a: String!) { setPayoutAddress(address: $a) }",
        json!({"a": world.payout_to}),
    );

    // Kill the bridge at each step of a settlement; a restart finishes it exactly once.
    let mut paid = 0u128;
    for (round, step) in ["opened", "signed", "broadcast", "included", "confirmed"]
        .into_iter()
        .enumerate()
    {
        world.withdraw("10");
        paid += 10 * USDC;
        let crashed = world.bridge(Some(step));
        assert_eq!(wait_exit(crashed).signal(), Some(9), "killed at `{step}`");
        let bridge = world.bridge(None);
        wait(&format!("settlement after a kill at `{step}`"), 30, || {
            world.on_chain(&world.payout_to) == paid && world.balance("settling").is_zero()
        });
        m.projected();
        assert_eq!(
            world.confirmed_batches(),
            round as i64 + 1,
            "after `{step}`"
        );
        stop(bridge);
    }

    // The chain's failures: a dropped broadcast, a refused sequence, delayed inclusion, and
    // a node that is down for a while. Each batch still lands once.
    type Fault = fn(&mut cosmos_bridge::devnet::server::Faults);
    let faults: [(&str, Fault); 4] = [
        ("a dropped broadcast", |f| f.drop_broadcasts = 1),
        ("a sequence mismatch", |f| f.sequence_mismatches = 2),
        ("delayed inclusion", |f| f.delay_blocks = 15),
        ("the node down", |f| f.down = true),
    ];
    let bridge = world.bridge(None);
    for (name, fault) in faults {
        world.chain.faults(fault);
        world.withdraw("10");
        paid += 10 * USDC;
        if name == "the node down" {
            std::thread::sleep(Duration::from_secs(2));
            assert_eq!(world.on_chain(&world.payout_to), paid - 10 * USDC);
            world.chain.faults(|f| f.down = false);
        }
        wait(&format!("settlement despite {name}"), 40, || {
            world.on_chain(&world.payout_to) == paid && world.balance("settling").is_zero()
        });
    }

    // More than the escrow holds on chain (an off-chain credit): refused for insufficient
    // funds, failed for good, and the amount is back in the buyer's balance.
    m.ok(
        &m.admin,
        "mutation($a: ID!) { creditDeposit(account: $a, amount: \"100000\") { amount } }",
        json!({"a": T_BUYER.to_string()}),
    );
    let before = world.balance("available");
    world.withdraw("50000");
    wait("the failed settlement", 30, || {
        m.db.count("SELECT count(*) AS n FROM settlements WHERE state = 'failed'") == 1
    });
    wait("the amount returned", 10, || {
        world.balance("available") == before
    });
    stop(bridge);
    m.projected();

    // The chain and the ledger agree: every confirmed payout arrived once.
    let settled = m.db.count(
        "SELECT (coalesce(sum(p.amount), 0) * 1000000)::bigint AS n FROM settlement_payouts p \
         JOIN settlements s USING (batch) WHERE s.state = 'confirmed'",
    );
    assert_eq!(settled as u128, paid);
    assert_eq!(world.on_chain(&world.payout_to), paid);
    assert_eq!(
        m.db.count("SELECT count(*) AS n FROM bridge_transfers WHERE direction = 'out'"),
        9,
        "nine payouts on chain, none twice"
    );
    let period = ledger::export::Period::new(
        chrono::Utc::now() - chrono::Duration::days(1),
        chrono::Utc::now() + chrono::Duration::days(1),
    )
    .unwrap();
    // Against the chain itself: every payout the ledger confirmed is there, and the
    // 100,000 credited off chain shows as what the escrow cannot cover.
    let view = cosmos_bridge::bridge::chain_view(
        &cosmos_bridge::chain::ChainClient::new(world.chain.url()),
        "uusdc",
        6,
        world.escrow.address().as_ref(),
    )
    .unwrap();
    let report = ledger::export::reconciliation(
        &mut m.db.connect(),
        period,
        ledger::export::Granularity::Day,
        Some(&view),
    )
    .unwrap();
    let breaks: Vec<_> = report
        .breaks
        .iter()
        .filter(|b| b.check != "unmatched deposits")
        .collect();
    assert_eq!(breaks.len(), 1, "{breaks:#?}");
    assert_eq!(breaks[0].check, "customer liabilities <= escrow holdings");
    let solvency = report.solvency.as_ref().unwrap();
    assert_eq!(solvency.holdings, view.balance);
    assert!(
        solvency.liabilities - solvency.in_flight - solvency.holdings
            >= rust_decimal::Decimal::from(99_000)
    );
    assert_eq!(
        report
            .breaks
            .iter()
            .filter(|b| b.check == "unmatched deposits")
            .count(),
        2,
        "the two deposits nobody could credit are listed for manual handling"
    );

    // The operator's view: `bridge status` and `bridge settle-now`.
    let cli = |action: &str| {
        let output = Process::new(env!("CARGO_BIN_EXE_gpumarket"))
            .args([
                "bridge",
                "--api-url",
                &m.url,
                "--rpc-url",
                world.chain.url(),
            ])
            .arg("--api-key-file")
            .arg(&world.api_key_file)
            .args(["--database-url", m.db.url(), action])
            .env("GPUMARKET_ESCROW_MNEMONIC", MNEMONIC)
            .output()
            .unwrap();
        assert!(output.status.success(), "bridge {action}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let status: serde_json::Value = serde_json::from_str(&cli("status")).unwrap();
    assert_eq!(status["escrow_address"], world.escrow.address().to_string());
    assert_eq!(status["unmatched_deposits"], "2");
    assert_eq!(status["unfinished_transactions"], "0");
    assert!(status["open_batch"].is_null(), "{status}");
    assert!(
        status["last_settlement"]
            .as_str()
            .is_some_and(|s| s.starts_with("batch 10 failed")),
        "{status}"
    );
    assert!(
        status["escrow_balance"]
            .as_str()
            .is_some_and(|b| b.ends_with(" uusdc")),
        "{status}"
    );
    assert_eq!(cli("settle-now").trim(), "nothing to settle");

    // The settlements query: the buyer sees its batches, with its line.
    let data = m.ok(
        &m.buyer,
        "{ settlements(stateIs: CONFIRMED, first: 100) { edges { node { batch txHash lines { account amount } } } } }",
        json!({}),
    );
    let edges = data["settlements"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 9);
    for edge in edges {
        let node = &edge["node"];
        let amount: Decimal = node["lines"][0]["amount"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(amount, Decimal::from(10), "{node}");
        assert_eq!(node["lines"].as_array().unwrap().len(), 1, "{node}");
        assert!(
            node["txHash"].as_str().is_some_and(|h| h.len() == 64),
            "{node}"
        );
    }
}

fn wait_exit(mut child: Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the bridge did not reach its kill point");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
