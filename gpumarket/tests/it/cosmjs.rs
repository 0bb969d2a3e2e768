//! A buyer deposits with CosmJS, the standard JavaScript client, on the devnet; the real
//! `gpumarket bridge run` credits the deposit exactly once and the API shows it; CosmJS then
//! finds the market's settlement transaction and its events (`cosmjs.cjs` does the
//! client's side). `testkit` installs `@cosmjs/stargate` and `@cosmjs/proto-signing` from
//! npm once into the target folder; later runs, and the other crate's CosmJS tests, reuse
//! them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::testing::{Market, T_BUYER};
use cosmos_bridge::devnet::server::DevnetServer;
use cosmos_bridge::devnet::Devnet;
use cosmos_bridge::keys::EscrowKey;
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// CosmJS's packages, and the folder they are installed in.
const COSMJS: (&str, [&str; 2]) = (
    "cosmjs-0.39.0",
    ["@cosmjs/stargate@0.39.0", "@cosmjs/proto-signing@0.39.0"],
);
const ESCROW_MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
/// A BIP-39 test vector: the buyer's wallet.
const WALLET: &str = "legal winner thank year wave sausage worth useful legal winner thank yellow";

fn node(mode: &str, env: &[(&str, &str)]) -> Value {
    let output = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/cosmjs.cjs"))
        .arg(mode)
        .env("NODE_PATH", testkit::npm_modules(COSMJS.0, &COSMJS.1))
        .envs(env.iter().copied())
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "cosmjs {mode}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bridge(market: &Market, rpc_url: &str, api_key_file: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gpumarket"))
        .args(["bridge", "--api-url", &market.url, "--rpc-url", rpc_url])
        .arg("--api-key-file")
        .arg(api_key_file)
        .args(["--database-url", market.db.url()])
        .args([
            "--period-secs",
            "0",
            "--min-payout",
            "1",
            "--poll-ms",
            "100",
        ])
        .arg("run")
        .env("GPUMARKET_ESCROW_MNEMONIC", ESCROW_MNEMONIC)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("the gpumarket binary starts")
}

#[test]
fn a_cosmjs_deposit_is_credited_once_and_cosmjs_finds_the_settlement() {
    let market = Market::start("cosmjs", api::Limits::default());
    let api_key_file = market.dir.path().join("admin.key");
    std::fs::write(&api_key_file, &market.admin).unwrap();
    let escrow = EscrowKey::from_mnemonic(ESCROW_MNEMONIC, "", "cosmos").unwrap();
    let wallet = EscrowKey::from_mnemonic(WALLET, "", "cosmos").unwrap();
    let payout = EscrowKey::from_mnemonic(ESCROW_MNEMONIC, "payout", "cosmos").unwrap();
    let mut devnet = Devnet::new("gpumarket-devnet-1", "cosmos", "uusdc", 1_000);
    devnet.fund(wallet.address().as_ref(), 50_000_000);
    // The escrow's own float for fees.
    devnet.fund(escrow.address().as_ref(), 5_000_000);
    let chain = DevnetServer::start(devnet, "127.0.0.1:0", 100).unwrap();
    let mut bridge = bridge(&market, chain.url(), &api_key_file);
    let balance = |field: &str| -> Decimal {
        let data = market.ok(
            &market.buyer,
            &format!("{{ balance {{ {field} }} }}"),
            json!({}),
        );
        data["balance"][field].as_str().unwrap().parse().unwrap()
    };
    let escrow_address = escrow.address().to_string();
    let memo = T_BUYER.to_string();

    // The buyer deposits 25 USDC from a CosmJS wallet, its account id as memo.
    let sent = node(
        "deposit",
        &[
            ("RPC", chain.url()),
            ("MNEMONIC", WALLET),
            ("ESCROW", &escrow_address),
            ("MEMO", &memo),
            ("AMOUNT", "25000000"),
        ],
    );
    assert_eq!(sent["code"], 0, "{sent}");
    assert_eq!(sent["address"], wallet.address().to_string());
    assert_eq!(sent["before"], "50000000");
    // The bridge credits it once, and the API shows it.
    wait("the deposit credited", || {
        balance("available") == Decimal::from(25)
    });
    let credited = || {
        market.db.count(
            "SELECT count(*) AS n FROM bridge_transfers WHERE direction = 'in' AND state = 'credited'",
        )
    };
    assert_eq!(credited(), 1);
    let hash = sent["hash"].as_str().unwrap();
    assert_eq!(
        market.db.count(&format!(
            "SELECT count(*) AS n FROM bridge_transfers WHERE tx_hash = '{hash}' AND msg_index = 0"
        )),
        1
    );
    // More rounds change nothing.
    std::thread::sleep(Duration::from_secs(1));
    market.projected();
    assert_eq!(balance("available"), Decimal::from(25), "never twice");
    assert_eq!(credited(), 1);
    assert_eq!(
        market.db.count("SELECT count(*) AS n FROM chain_deposits"),
        1
    );

    // A withdrawal settles on chain; CosmJS finds the settlement and its events.
    market.ok(
        &market.buyer,
        "mutation($a: String!) { setPayoutAddress(address: $a) }",
        json!({"a": payout.address().to_string()}),
    );
    market.ok(
        &market.buyer,
        "mutation($a: String!) { requestWithdrawal(amount: $a) { amount } }",
        json!({"a": "10"}),
    );
    let paid = || chain.with(|net| net.balance(payout.address().as_ref()));
    wait("the settlement on chain", || paid() == 10_000_000);
    wait("the settlement confirmed", || {
        market
            .db
            .count("SELECT count(*) AS n FROM settlements WHERE state = 'confirmed'")
            == 1
    });
    let _ = bridge.kill();
    let _ = bridge.wait();
    let data = market.ok(
        &market.buyer,
        "{ settlements(stateIs: CONFIRMED, first: 10) { edges { node { txHash } } } }",
        json!({}),
    );
    let settlement = data["settlements"]["edges"][0]["node"]["txHash"]
        .as_str()
        .unwrap()
        .to_owned();
    let found = node(
        "inspect",
        &[
            ("RPC", chain.url()),
            ("ESCROW", &escrow_address),
            ("SETTLEMENT", &settlement),
        ],
    );
    let tx = &found["settlement"];
    assert_eq!((&tx["hash"], &tx["code"]), (&json!(settlement), &json!(0)));
    let transfer = json!({"type": "transfer", "attributes": [
        ["recipient", payout.address().to_string()], ["amount", "10000000uusdc"], ["msg_index", "0"],
    ]});
    assert!(
        tx["events"].as_array().unwrap().contains(&transfer),
        "{}",
        tx["events"]
    );
    assert_eq!(
        found["signed"],
        json!([settlement]),
        "the escrow signed only the settlement"
    );
}
