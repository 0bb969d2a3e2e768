//! CosmJS, the standard JavaScript client, against the devnet (`cosmjs.cjs` does the
//! client's side). `testkit` installs `@cosmjs/stargate` and `@cosmjs/proto-signing` from
//! npm once into the target folder; later runs, and the other crate's CosmJS tests, reuse
//! them.

use std::process::Command;

use cosmos_bridge::devnet::server::DevnetServer;
use cosmos_bridge::keys::EscrowKey;
use cosmos_bridge::tx::{sign_payouts, Account, Payout};
use serde_json::{json, Value};

use super::{chain, dec, setup, wait_for, FEES, MNEMONIC};

/// CosmJS's packages, and the folder they are installed in.
const COSMJS: (&str, [&str; 2]) = (
    "cosmjs-0.39.0",
    ["@cosmjs/stargate@0.39.0", "@cosmjs/proto-signing@0.39.0"],
);
/// A BIP-39 test vector: the buyer's wallet.
const WALLET: &str = "legal winner thank year wave sausage worth useful legal winner thank yellow";

#[test]
fn cosmjs_reads_the_chain_sends_a_deposit_and_finds_transactions() {
    let (mut net, escrow, provider) = setup();
    let wallet = EscrowKey::from_mnemonic(WALLET, "", "cosmos").unwrap();
    net.fund(wallet.address().as_ref(), 50_000_000);
    let server = DevnetServer::start(net, "127.0.0.1:0", 100).unwrap();
    // A payout the market signed, for CosmJS to find and decode.
    let alice = EscrowKey::from_mnemonic(MNEMONIC, "alice", "cosmos").unwrap();
    let payouts = [
        Payout {
            address: alice.address().to_string(),
            amount: dec("3"),
        },
        Payout {
            address: provider.address().to_string(),
            amount: dec("0.5"),
        },
    ];
    let account = Account {
        number: 0,
        sequence: 0,
    };
    let settlement = sign_payouts(
        &escrow,
        &chain(),
        &payouts,
        "gpumarket settlement 1",
        FEES,
        account,
    )
    .unwrap();
    server.with(|net| net.broadcast(&settlement.bytes)).unwrap();
    wait_for(&server, &settlement.hash);

    let output = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/cosmjs.cjs"))
        .env("NODE_PATH", testkit::npm_modules(COSMJS.0, &COSMJS.1))
        .env("RPC", server.url())
        .env("MNEMONIC", WALLET)
        .env("TO", escrow.address().to_string())
        .env("MEMO", "1")
        .env("SETTLEMENT", &settlement.hash)
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();

    // connectComet picked its CometBFT 0.38 client, and every call decoded.
    assert_eq!(out["comet"], "Comet38Client");
    assert_eq!(
        (&out["network"], &out["chainId"]),
        (&json!("gpumarket-devnet-1"), &json!("gpumarket-devnet-1"))
    );
    assert!(out["height"].as_u64().unwrap() >= 1);
    assert_eq!(out["block1"]["height"], 1);
    assert_eq!(
        (&out["validators"], &out["commit"], &out["blockchain"]),
        (&json!(1), &json!(true), &json!(2))
    );
    assert_eq!(out["address"], wallet.address().to_string());
    assert_eq!(out["before"], "50000000");
    assert_eq!(
        out["allBalances"],
        json!([{"denom": "uusdc", "amount": "50000000"}])
    );

    // The send: gas from a simulation, included, found again by hash and by event.
    let sent = &out["sent"];
    assert_eq!(sent["code"], 0, "{sent}");
    let (wanted, used): (u64, u64) = (
        sent["gasWanted"].as_str().unwrap().parse().unwrap(),
        sent["gasUsed"].as_str().unwrap().parse().unwrap(),
    );
    assert!(0 < used && used < wanted, "{sent}");
    let hash = sent["hash"].as_str().unwrap();
    assert_eq!(
        (&out["tx"]["hash"], &out["tx"]["height"]),
        (&json!(hash), &sent["height"])
    );
    assert_eq!(out["tx"]["events"], sent["events"]);
    let escrow_address = escrow.address().to_string();
    let transfer = json!({"type": "transfer", "attributes": [
        ["recipient", escrow_address], ["sender", wallet.address().to_string()],
        ["amount", "2500000uusdc"], ["msg_index", "0"],
    ]});
    assert!(
        sent["events"].as_array().unwrap().contains(&transfer),
        "{}",
        sent["events"]
    );
    assert_eq!(out["searched"], json!([hash]));
    assert_eq!(
        out["received"],
        server.with(|net| net.balance(&escrow_address)).to_string()
    );
    let fee = 50_000_000 - 2_500_000 - out["after"].as_str().unwrap().parse::<u128>().unwrap();
    assert!(fee >= 5_000, "the fee CosmJS paid: {fee}");
    assert_eq!(out["sequence"], 1);
    let stored = server.with(|net| net.tx(hash).map(|(_, r)| r.code));
    assert_eq!(stored, Some(0));

    // A stale sequence is refused at CheckTx with the SDK's code.
    assert_eq!(out["refused"]["code"], 32, "{}", out["refused"]);
    assert_eq!(out["refused"]["codespace"], "sdk");

    // The market's payout, as CosmJS decodes it: inputs equal outputs.
    let payout = &out["settlement"];
    assert_eq!(payout["code"], 0);
    assert_eq!(payout["typeUrl"], "/cosmos.bank.v1beta1.MsgMultiSend");
    assert_eq!(payout["memo"], "gpumarket settlement 1");
    assert_eq!(payout["inputs"], json!([[escrow_address, "3500000uusdc"]]));
    assert_eq!(
        payout["outputs"],
        json!([
            [alice.address().to_string(), "3000000uusdc"],
            [provider.address().to_string(), "500000uusdc"]
        ])
    );
    assert!(payout["events"]
        .as_array()
        .unwrap()
        .contains(&json!("coin_received")));
}
