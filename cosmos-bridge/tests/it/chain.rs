//! The bridge's chain client against the devnet: pages however the node cuts them, the
//! mempool cache's answer to a repeated broadcast, accounts and balances.

use cosmos_bridge::chain::ChainClient;
use cosmos_bridge::devnet::server::DevnetServer;
use cosmos_bridge::tx::Account;

use super::{pay, setup, wait_for, FEES};

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
    assert_eq!(
        client
            .balance(provider.address().as_ref(), "uusdc")
            .unwrap(),
        2_000_000
    );
    assert_eq!(
        client.broadcast(&bytes).unwrap().code,
        19,
        "already on chain"
    );
    let time = client.block_time_ms(client.head().unwrap().height).unwrap();
    assert!(time > 0);
}
