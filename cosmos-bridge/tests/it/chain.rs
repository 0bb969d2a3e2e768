//! The bridge's chain client against the devnet: pages however the node cuts them, the
//! mempool cache's answer to a repeated broadcast, accounts and balances; and against a node
//! that answers nonsense: typed errors, never a success or a panic.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use cosmos_bridge::bridge::{Bridge, Config};
use cosmos_bridge::chain::ChainClient;
use cosmos_bridge::devnet::server::DevnetServer;
use cosmos_bridge::keys::EscrowKey;
use cosmos_bridge::tx::{Account, Chain};
use cosmos_bridge::BridgeError;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::{pay, setup, wait_for, FEES, MNEMONIC};

#[test]
fn the_client_reads_every_page_however_the_node_cuts_them() {
    let (net, escrow, provider) = setup();
    let server = DevnetServer::start(net, "127.0.0.1:0", 3_600_000).unwrap();
    let mut hashes = Vec::new();
    for sequence in 0..7 {
        let bytes = pay(
            &escrow,
            &provider,
            "1",
            FEES,
            Account {
                number: 0,
                sequence,
            },
        );
        hashes.push(server.with(|net| net.broadcast(&bytes)).unwrap().hash);
        if sequence % 2 == 0 {
            server.with(|net| net.produce_block(0, true));
        }
    }
    server.with(|net| net.produce_block(0, true));
    let client = ChainClient::new(server.url());
    let query = format!(
        "transfer.recipient='{}' AND tx.height>=1",
        provider.address()
    );
    for cap in [None, Some(1), Some(3)] {
        server.faults(|f| f.max_per_page = cap);
        let found: Vec<String> = client
            .tx_search(&query)
            .unwrap()
            .into_iter()
            .map(|t| t.hash)
            .collect();
        assert_eq!(found, hashes, "pages of at most {cap:?}");
    }
    let one = client.tx(&hashes[3]).unwrap().unwrap();
    assert_eq!((one.code, one.height), (0, 3));
    assert!(one.events.iter().any(|e| e.r#type == "transfer"));
    assert_eq!(client.tx(&"AB".repeat(32)).unwrap(), None);
}

#[test]
fn the_client_reads_accounts_and_takes_a_repeated_broadcast_as_known() {
    let (net, escrow, provider) = setup();
    let server = DevnetServer::start(net, "127.0.0.1:0", 50).unwrap();
    let client = ChainClient::new(server.url());
    let head = client.head().unwrap();
    assert_eq!(head.chain_id, "gpumarket-devnet-1");
    let account = client.account(escrow.address().as_ref()).unwrap().unwrap();
    assert_eq!(
        account,
        Account {
            number: 0,
            sequence: 0
        }
    );
    assert_eq!(client.account(provider.address().as_ref()).unwrap(), None);
    let bytes = pay(&escrow, &provider, "2", FEES, account);
    let first = client.broadcast(&bytes).unwrap();
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(client.broadcast(&bytes).unwrap().code, 19, "already known");
    wait_for(&server, &cosmos_bridge::tx::hash(&bytes));
    let (balance, height) = client
        .balance(provider.address().as_ref(), "uusdc")
        .unwrap();
    assert_eq!(balance, 2_000_000);
    assert!(height >= 1, "read at the height that holds it");
    assert_eq!(
        client.broadcast(&bytes).unwrap().code,
        19,
        "already on chain"
    );
    let time = client.block_time(client.head().unwrap().height).unwrap();
    assert!(time.timestamp_millis() > 0);
}

/// A node that answers every JSON-RPC call with `answer(method)`: the stand-in for one that
/// reports nonsense.
fn lying_node(answer: impl Fn(&str) -> Value + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let (mut line, mut length) = (String::new(), 0);
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                line.clear();
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let call: Value = serde_json::from_slice(&body).unwrap();
            let text = json!({"jsonrpc": "2.0", "id": call["id"],
                              "result": answer(call["method"].as_str().unwrap())})
            .to_string();
            let _ = write!(
                &stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    url
}

fn chain_error<T: std::fmt::Debug>(result: Result<T, BridgeError>) -> String {
    match result {
        Err(BridgeError::Chain(message)) => message,
        other => panic!("not a chain error: {other:?}"),
    }
}

#[test]
fn a_node_reporting_absurd_codes_and_counts_is_an_error_never_a_success() {
    for code in [Value::Null, json!(1u64 << 40), json!(-1), json!("0")] {
        let answer = {
            let code = code.clone();
            move |method: &str| match method {
                "broadcast_tx_sync" => json!({"code": code, "log": "", "hash": "AB"}),
                "tx" => json!({"hash": "AB".repeat(32), "height": "5", "index": 0,
                               "tx_result": {"code": code, "log": "", "events": []}, "tx": ""}),
                _ => json!({"response": {"code": code, "log": "", "value": "", "height": "5"}}),
            }
        };
        let client = ChainClient::new(&lying_node(answer));
        for message in [
            chain_error(client.broadcast(b"bytes")),
            chain_error(client.tx(&"AB".repeat(32))),
            chain_error(client.account("cosmos1x")),
            chain_error(client.balance("cosmos1x", "uusdc")),
        ] {
            assert!(message.contains("result code"), "{code}: {message}");
        }
    }
    let client = ChainClient::new(&lying_node(
        |_| json!({"total_count": "-1", "txs": [], "sync_info": {"latest_block_height": "-1"}}),
    ));
    assert!(chain_error(client.tx_search("tx.height>=1")).contains("expected a number"));
    assert!(chain_error(client.head()).contains("expected a number"));
}

fn config(rpc_url: String, database_url: &str) -> Config {
    Config {
        chain: Chain {
            chain_id: "gpumarket-devnet-1".into(),
            prefix: "cosmos".into(),
            denom: "uusdc".into(),
            decimals: 6,
        },
        rpc_url,
        api_url: "http://127.0.0.1:9".into(),
        api_key: "gpm_1_x".into(),
        database_url: database_url.to_owned(),
        gas_price: "0.025".parse().unwrap(),
        gas_base: 100_000,
        gas_per_payout: 25_000,
        confirmations: 1,
        period: Duration::from_secs(3_600),
        threshold: 10_000.into(),
        min_payout: 10.into(),
        max_payouts: 100,
        poll: Duration::from_secs(1),
        rebroadcast_after: Duration::from_secs(30),
    }
}

#[test]
fn a_node_at_the_last_height_is_an_error_and_impossible_settings_are_refused() {
    let key = || EscrowKey::from_mnemonic(MNEMONIC, "", "cosmos").unwrap();
    let db = ledger::testing::TestDb::migrated("bridge");
    let url = lying_node(|_| {
        json!({"node_info": {"network": "gpumarket-devnet-1"},
               "sync_info": {"latest_block_height": u64::MAX.to_string()}})
    });
    let mut bridge = Bridge::new(config(url.clone(), db.url()), key()).unwrap();
    let message = chain_error(bridge.round());
    assert!(message.contains("no next height"), "{message}");

    // Settings whose numbers cannot work are refused before anything runs.
    let refused = |change: fn(&mut Config)| {
        let mut c = config(url.clone(), db.url());
        change(&mut c);
        match Bridge::new(c, key()) {
            Err(BridgeError::Config(message)) => message,
            other => panic!("not refused: {other:?}"),
        }
    };
    assert!(refused(|c| c.chain.decimals = 20).contains("20 decimal places"));
    assert!(refused(|c| c.gas_per_payout = u64::MAX).contains("does not fit"));
    assert!(refused(|c| c.gas_price = Decimal::MAX).contains("does not fit"));
    assert!(refused(|c| c.gas_price = "-1".parse().unwrap()).contains("does not fit"));
    assert!(matches!(
        cosmos_bridge::tx::base_units(Decimal::ONE, 20),
        Err(BridgeError::Config(_))
    ));
}
