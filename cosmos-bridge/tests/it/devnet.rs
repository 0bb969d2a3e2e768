//! The devnet's chain: what it takes and refuses, with the SDK's codes; the events, gas and
//! results of delivery; blocks hashed and signed as CometBFT does (checked with
//! tendermint-rs); determinism and replay; and the event query language.

use cosmos_bridge::devnet::consensus::{consensus_hash, merkle_root};
use cosmos_bridge::devnet::query::Query;
use cosmos_bridge::devnet::server::DevnetServer;
use cosmos_bridge::devnet::{Devnet, TxResult};
use cosmos_bridge::keys::EscrowKey;
use cosmos_bridge::tx::{sign_payouts, Account, Fees, Payout};
use cosmrs::proto::cosmos::tx::v1beta1::TxRaw;
use cosmrs::proto::prost::Message;
use cosmrs::proto::tendermint::abci::Event;
use cosmrs::tendermint;

use super::{chain, dec, pay, setup, wait_for, FEES, MNEMONIC};

/// Events as (type, [(key, value)]), for comparing with what the SDK emits.
fn flat(events: &[Event]) -> Vec<(String, Vec<(String, String)>)> {
    events
        .iter()
        .map(|e| {
            let attributes = e
                .attributes
                .iter()
                .map(|a| {
                    assert!(a.index, "the SDK indexes every attribute: {e:?}");
                    (a.key.clone(), a.value.clone())
                })
                .collect();
            (e.r#type.clone(), attributes)
        })
        .collect()
}

fn expect(kind: &str, attributes: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    let attributes = attributes
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (kind.to_owned(), attributes)
}

fn at(number: u64, sequence: u64) -> Account {
    Account { number, sequence }
}

fn delivered<'a>(net: &'a Devnet, hash: &str) -> &'a TxResult {
    net.tx(hash).expect("in a block").1
}

#[test]
fn a_payout_moves_the_balances_once_and_advances_the_sequence() {
    let (mut net, escrow, provider) = setup();
    let from = escrow.address().to_string();
    let to = provider.address().to_string();
    let bytes = pay(&escrow, &provider, "12.5", FEES, at(0, 0));
    let hash = net.broadcast(&bytes).unwrap().hash;
    assert!(net.tx(&hash).is_none(), "not in a block yet");
    assert_eq!(net.produce_block(0, true), 1);
    let result = delivered(&net, &hash);
    assert_eq!(
        (result.code, result.height, result.index),
        (0, 1, 0),
        "{result:?}"
    );
    assert_eq!(net.balance(&from), 100_000_000 - 12_500_000 - 5_000);
    assert_eq!(net.account(&from).unwrap().sequence, 1);
    assert_eq!(net.balance(&to), 12_500_000);
    assert_eq!(
        net.balance(net.fee_collector()),
        5_000,
        "the fee went to the fee collector"
    );
    assert!(
        net.account(&from).unwrap().pub_key.is_some(),
        "the signer's key is on its account after its first transaction"
    );
    // The same bytes again are refused: the chain never pays twice.
    assert_eq!(net.broadcast(&bytes).unwrap_err().code, 19);
}

#[test]
fn the_devnet_refuses_what_a_chain_refuses() {
    let (mut net, escrow, provider) = setup();
    let refused = |net: &mut Devnet, bytes: &[u8]| {
        let r = net.broadcast(bytes).unwrap_err();
        (r.code, r.codespace)
    };
    // Wrong sequence.
    let wrong_sequence = pay(&escrow, &provider, "1", FEES, at(0, 5));
    assert_eq!(refused(&mut net, &wrong_sequence), (32, "sdk"));
    // Wrong account number: the signature does not verify.
    assert_eq!(
        refused(&mut net, &pay(&escrow, &provider, "1", FEES, at(1, 0))),
        (4, "sdk")
    );
    // Too small a fee.
    let cheap = Fees {
        amount: 1,
        gas_limit: 200_000,
    };
    assert_eq!(
        refused(&mut net, &pay(&escrow, &provider, "1", cheap, at(0, 0))),
        (13, "sdk")
    );
    // Too little gas for the transaction's size.
    let starved = Fees {
        amount: 5_000,
        gas_limit: 100,
    };
    assert_eq!(
        refused(&mut net, &pay(&escrow, &provider, "1", starved, at(0, 0))),
        (11, "sdk")
    );
    // A memo longer than 256 characters.
    let payout = Payout {
        address: provider.address().to_string(),
        amount: dec("1"),
    };
    let long = sign_payouts(
        &escrow,
        &chain(),
        &[payout],
        &"m".repeat(257),
        FEES,
        at(0, 0),
    )
    .unwrap();
    assert_eq!(refused(&mut net, &long.bytes), (12, "sdk"));
    // An unfunded signer.
    assert_eq!(
        refused(&mut net, &pay(&provider, &escrow, "1", FEES, at(0, 0))),
        (9, "sdk")
    );
    // Garbage.
    assert_eq!(refused(&mut net, b"not a transaction"), (2, "sdk"));
    assert_eq!(net.mempool_len(), 0);
    assert_eq!(net.produce_block(0, true), 1);
    assert_eq!(
        net.balance(escrow.address().as_ref()),
        100_000_000,
        "nothing moved"
    );

    // More than the escrow holds: CheckTx runs the ante handler only, so it takes the
    // transaction; delivery then fails it for insufficient funds and charges the fee.
    let too_much = pay(&escrow, &provider, "1000", FEES, at(0, 0));
    let hash = net.broadcast(&too_much).unwrap().hash;
    net.produce_block(0, true);
    let result = delivered(&net, &hash);
    assert_eq!((result.code, result.codespace), (5, "sdk"), "{result:?}");
    assert!(
        result
            .log
            .starts_with("failed to execute message; message index: 0: "),
        "{}",
        result.log
    );
    assert_eq!(net.balance(escrow.address().as_ref()), 100_000_000 - 5_000);
    assert_eq!(net.account(escrow.address().as_ref()).unwrap().sequence, 1);
    assert_eq!(net.balance(provider.address().as_ref()), 0);
    let types: Vec<String> = result.events.iter().map(|e| e.r#type.clone()).collect();
    assert_eq!(
        types,
        [
            "coin_spent",
            "coin_received",
            "transfer",
            "message",
            "tx",
            "tx",
            "tx"
        ],
        "a failed transaction keeps the ante handler's events only"
    );
}

#[test]
fn queued_transactions_take_consecutive_sequences_and_fail_alone_in_the_block() {
    let (mut net, escrow, provider) = setup();
    let payout = |amount, sequence| pay(&escrow, &provider, amount, FEES, at(0, sequence));
    let h1 = net.broadcast(&payout("60", 0)).unwrap().hash;
    let h2 = net.broadcast(&payout("30", 1)).unwrap().hash;
    net.produce_block(0, true);
    assert_eq!(
        (delivered(&net, &h1).code, delivered(&net, &h2).code),
        (0, 0)
    );
    // Both fit at CheckTx; at delivery the second finds the balance spent by the first.
    let h3 = net.broadcast(&payout("9", 2)).unwrap().hash;
    let h4 = net.broadcast(&payout("9", 3)).unwrap().hash;
    net.produce_block(0, true);
    assert_eq!(delivered(&net, &h3).code, 0);
    assert_eq!(delivered(&net, &h4).code, 5, "{:?}", delivered(&net, &h4));
    assert_eq!(net.balance(provider.address().as_ref()), 99_000_000);
    let escrow_left = net.account(escrow.address().as_ref()).unwrap();
    assert_eq!(
        (escrow_left.balance, escrow_left.sequence),
        (1_000_000 - 4 * 5_000, 4),
        "the failed payout still paid its fee and used its sequence, as on a chain"
    );
}

#[test]
fn delivery_emits_the_bank_modules_events_and_reports_gas() {
    let (mut net, escrow, provider) = setup();
    let alice = EscrowKey::from_mnemonic(MNEMONIC, "alice", "cosmos").unwrap();
    let payouts = [
        Payout {
            address: alice.address().to_string(),
            amount: dec("12.5"),
        },
        Payout {
            address: provider.address().to_string(),
            amount: dec("0.25"),
        },
    ];
    let signed = sign_payouts(&escrow, &chain(), &payouts, "batch 1", FEES, at(0, 0)).unwrap();
    let simulated = net.simulate(&signed.bytes).unwrap();
    let accepted = net.broadcast(&signed.bytes).unwrap();
    net.produce_block(0, true);
    let result = delivered(&net, &signed.hash);
    assert_eq!(result.code, 0, "{result:?}");

    let (e, a, p, fc) = (
        escrow.address().to_string(),
        alice.address().to_string(),
        provider.address().to_string(),
        net.fee_collector().to_owned(),
    );
    let signature = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        &TxRaw::decode(signed.bytes.as_slice()).unwrap().signatures[0],
    );
    let sequence = format!("{e}/0");
    // As Cosmos SDK 0.50 emits them: the fee and the signer first, then the message.
    let expected = vec![
        expect("coin_spent", &[("spender", &e), ("amount", "5000uusdc")]),
        expect(
            "coin_received",
            &[("receiver", &fc), ("amount", "5000uusdc")],
        ),
        expect(
            "transfer",
            &[("recipient", &fc), ("sender", &e), ("amount", "5000uusdc")],
        ),
        expect("message", &[("sender", &e)]),
        expect("tx", &[("fee", "5000uusdc"), ("fee_payer", &e)]),
        expect("tx", &[("acc_seq", &sequence)]),
        expect("tx", &[("signature", &signature)]),
        expect(
            "message",
            &[
                ("action", "/cosmos.bank.v1beta1.MsgMultiSend"),
                ("sender", &e),
                ("module", "bank"),
                ("msg_index", "0"),
            ],
        ),
        expect(
            "coin_spent",
            &[
                ("spender", &e),
                ("amount", "12750000uusdc"),
                ("msg_index", "0"),
            ],
        ),
        expect("message", &[("sender", &e), ("msg_index", "0")]),
        expect(
            "coin_received",
            &[
                ("receiver", &a),
                ("amount", "12500000uusdc"),
                ("msg_index", "0"),
            ],
        ),
        expect(
            "transfer",
            &[
                ("recipient", &a),
                ("amount", "12500000uusdc"),
                ("msg_index", "0"),
            ],
        ),
        expect(
            "coin_received",
            &[
                ("receiver", &p),
                ("amount", "250000uusdc"),
                ("msg_index", "0"),
            ],
        ),
        expect(
            "transfer",
            &[
                ("recipient", &p),
                ("amount", "250000uusdc"),
                ("msg_index", "0"),
            ],
        ),
    ];
    assert_eq!(flat(&result.events), expected);
    assert_eq!(
        flat(&accepted.events),
        expected[..7],
        "CheckTx: the ante handler's events"
    );

    // Gas: what was asked, what was used; CheckTx runs the ante handler only, and a
    // simulation of the same bytes uses what delivery used.
    assert_eq!((result.gas_wanted, accepted.gas_wanted), (200_000, 200_000));
    assert!(accepted.gas_used < result.gas_used && result.gas_used < result.gas_wanted);
    assert_eq!(simulated.gas_used, result.gas_used);
    assert_eq!(flat(&simulated.events), expected);
    // The data is the messages' responses.
    let data =
        cosmrs::proto::cosmos::base::abci::v1beta1::TxMsgData::decode(result.data.as_slice())
            .unwrap();
    assert_eq!(
        data.msg_responses
            .iter()
            .map(|r| r.type_url.as_str())
            .collect::<Vec<_>>(),
        ["/cosmos.bank.v1beta1.MsgMultiSendResponse"]
    );
}

#[test]
fn a_simulation_changes_nothing_and_skips_the_signature() {
    let (net, escrow, provider) = setup();
    // Signed for another account number: a simulation does not check signatures (clients
    // simulate before they sign), but it does check the sequence.
    let unsigned = pay(&escrow, &provider, "1", FEES, at(7, 0));
    let before = net.clone();
    assert_eq!(net.simulate(&unsigned).unwrap().code, 0);
    assert_eq!(net.app_hash(), before.app_hash());
    let stale = pay(&escrow, &provider, "1", FEES, at(0, 3));
    assert_eq!(net.simulate(&stale).unwrap_err().code, 32);
    let too_much = pay(&escrow, &provider, "1000", FEES, at(0, 0));
    assert_eq!(net.simulate(&too_much).unwrap_err().code, 5);
}

#[test]
fn blocks_are_hashed_and_signed_as_cometbft_does() {
    let (mut net, escrow, provider) = setup();
    net.produce_block(1_700_000_000_000, true);
    let hash = net
        .broadcast(&pay(&escrow, &provider, "1", FEES, at(0, 0)))
        .unwrap()
        .hash;
    net.produce_block(1_700_000_001_500, true);
    let (one, two) = (net.block(1).unwrap(), net.block(2).unwrap());

    // The header hash, as tendermint-rs computes it from the same header.
    for block in [one, two] {
        let header = tendermint::block::Header::try_from(block.sealed.header.clone()).unwrap();
        assert_eq!(header.hash().as_bytes(), block.sealed.id.hash.as_slice());
    }
    // Well-known values: the hash of nothing, and of CometBFT's default block limits.
    let empty = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
    assert_eq!(hex::encode_upper(merkle_root::<Vec<u8>>(&[])), empty);
    assert_eq!(
        hex::encode_upper(consensus_hash()),
        "048091BC7DDC283F77BFBF91D73C44DA58C3DF8A9CBC867405D8B7F3DAADA22F"
    );
    let h1 = &one.sealed.header;
    assert_eq!(hex::encode_upper(&h1.data_hash), empty, "no transactions");
    assert_eq!(
        hex::encode_upper(&h1.last_commit_hash),
        empty,
        "no last commit"
    );
    assert!(
        h1.last_block_id.as_ref().unwrap().hash.is_empty(),
        "no block before"
    );
    // Block 2 links to block 1 and commits to its transaction and to block 1's state.
    let h2 = &two.sealed.header;
    assert_eq!(h2.last_block_id.as_ref(), Some(&one.sealed.id));
    assert_eq!(two.sealed.last_commit, one.sealed.commit);
    assert_eq!(h2.data_hash, merkle_root(&[hex::decode(&hash).unwrap()]));
    assert_eq!(h2.app_hash, one.app_hash);
    assert_eq!(h2.time.unwrap().seconds, 1_700_000_001);
    assert_eq!(h2.time.unwrap().nanos, 500_000_000);

    // The validator's precommit verifies over CometBFT's canonical vote bytes.
    let commit = &two.sealed.commit;
    let sig = &commit.signatures[0];
    let vote = tendermint::vote::Vote::try_from(cosmrs::proto::tendermint::types::Vote {
        r#type: 2,
        height: commit.height,
        round: commit.round,
        block_id: commit.block_id.clone(),
        timestamp: sig.timestamp,
        validator_address: sig.validator_address.clone(),
        validator_index: 0,
        signature: sig.signature.clone(),
        extension: Vec::new(),
        extension_signature: Vec::new(),
    })
    .unwrap();
    let chain_id = tendermint::chain::Id::try_from("gpumarket-devnet-1").unwrap();
    let key = ed25519_consensus::VerificationKey::try_from(net.validator().public_key()).unwrap();
    let signature = ed25519_consensus::Signature::try_from(sig.signature.as_slice()).unwrap();
    key.verify(&signature, &vote.into_signable_vec(chain_id))
        .expect("the precommit verifies");
    assert_eq!(sig.validator_address, net.validator().address());
    let set = tendermint::validator::Set::new(
        vec![tendermint::validator::Info::new(
            tendermint::PublicKey::from_raw_ed25519(&net.validator().public_key()).unwrap(),
            10u32.into(),
        )],
        None,
    );
    assert_eq!(set.hash().as_bytes(), h2.validators_hash.as_slice());
}

#[test]
fn the_same_transactions_make_the_same_chain_and_a_replay_rebuilds_it() {
    let run = || {
        let (mut net, escrow, provider) = setup();
        net.broadcast(&pay(&escrow, &provider, "2", FEES, at(0, 0)))
            .unwrap();
        net.produce_block(1_000, true);
        net.broadcast(&pay(&escrow, &provider, "3", FEES, at(0, 1)))
            .unwrap();
        net.broadcast(&pay(&escrow, &provider, "500", FEES, at(0, 2)))
            .unwrap();
        net.produce_block(2_000, true);
        net
    };
    let (a, b) = (run(), run());
    let mut replayed = setup().0;
    for h in 1..=a.height() {
        let block = a.block(h).unwrap();
        let txs = block
            .txs
            .iter()
            .map(|hash| a.tx(hash).unwrap().0.to_vec())
            .collect();
        replayed.replay_block(block.time_ms, txs);
    }
    for net in [&b, &replayed] {
        for h in 1..=2 {
            assert_eq!(net.block(h), a.block(h), "block {h}");
        }
        assert_eq!(net.app_hash(), a.app_hash());
        let hashes = &a.block(2).unwrap().txs;
        assert_eq!(net.tx(&hashes[1]), a.tx(&hashes[1]));
    }
}

#[test]
fn queries_take_cometbfts_syntax_and_match_within_one_event() {
    let (mut net, escrow, provider) = setup();
    let e = escrow.address().to_string();
    let p = provider.address().to_string();
    for (sequence, amount) in [(0, "1"), (1, "2")] {
        net.broadcast(&pay(&escrow, &provider, amount, FEES, at(0, sequence)))
            .unwrap();
        net.produce_block(0, true);
    }
    let found = |q: &str| -> Vec<u64> {
        let query = Query::parse(q).unwrap_or_else(|e| panic!("{e}"));
        net.search(&query)
            .iter()
            .map(|(_, _, r)| r.height)
            .collect()
    };
    assert_eq!(found("tx.height>=1"), [1, 2]);
    assert_eq!(found("tx.height > 1"), [2]);
    assert_eq!(found("tx.height=1"), [1]);
    assert_eq!(found("tx.height<2 AND tx.height>=1"), [1]);
    assert_eq!(found(&format!("transfer.recipient='{p}'")), [1, 2]);
    assert_eq!(
        found(&format!("message.sender='{e}' AND tx.height<=1")),
        [1]
    );
    assert_eq!(found("transfer.amount='2000000uusdc'"), [2]);
    assert_eq!(found("transfer.amount CONTAINS '2000000'"), [2]);
    assert_eq!(found("coin_received.receiver EXISTS"), [1, 2]);
    assert_eq!(
        found("message.msg_index=0"),
        [1, 2],
        "numbers compare as numbers"
    );
    let hash = &net.block(2).unwrap().txs[0];
    assert_eq!(found(&format!("tx.hash='{}'", hash.to_lowercase())), [2]);
    // Conditions on one event type hold in the same event: the fee transfer has the escrow
    // as sender but pays 5000uusdc, the payout the other way round.
    assert_eq!(
        found(&format!(
            "transfer.sender='{e}' AND transfer.amount='1000000uusdc'"
        )),
        Vec::<u64>::new()
    );
    assert_eq!(
        found(&format!(
            "transfer.recipient='{p}' AND transfer.amount='1000000uusdc'"
        )),
        [1]
    );
    for bad in [
        "",
        "tx.height",
        "tx.height>='1'",
        "transfer.recipient='unterminated",
        "transfer.recipient<'x'",
        "tx.height>=1 OR tx.height<1",
        "tx.height>=1 AND",
        &format!("tx.height>=1 AND message.sender='{}'", "x".repeat(600)),
    ] {
        assert!(Query::parse(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn a_persistent_devnet_resumes_its_chain_and_cuts_a_torn_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devnet-chain.jsonl");
    let (net, escrow, provider) = setup();
    let server = DevnetServer::start_persistent(net, "127.0.0.1:0", 20, &path).unwrap();
    let bytes = pay(&escrow, &provider, "4", FEES, at(0, 0));
    let hash = server.with(|net| net.broadcast(&bytes)).unwrap().hash;
    wait_for(&server, &hash);
    drop(server);
    let written = std::fs::read(&path).unwrap();
    let lines = written.iter().filter(|b| **b == b'\n').count() as u64;

    let restart =
        |block_ms| DevnetServer::start_persistent(setup().0, "127.0.0.1:0", block_ms, &path);
    // A crash in the middle of writing the next block: cut short, or garbage before its
    // newline. Either way the line is cut off and the chain resumes.
    for torn in [&b"{\"time_ms\":17"[..], b"\0\0\0\0\n"] {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, torn).unwrap();
        let server = restart(3_600_000).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            written,
            "the torn line is cut"
        );
        server.with(|net| {
            assert_eq!(net.height(), lines);
            assert_eq!(net.tx(&hash).unwrap().1.code, 0);
            assert_eq!(net.balance(provider.address().as_ref()), 4_000_000);
            assert_eq!(net.account(escrow.address().as_ref()).unwrap().sequence, 1);
        });
    }
    // Anywhere but last, a line that is not a block means the file is not a chain.
    let mut broken = b"not a block\n".to_vec();
    broken.extend(&written);
    std::fs::write(&path, broken).unwrap();
    let refused = restart(3_600_000).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidData, "{refused}");
}

#[test]
fn a_chain_file_torn_anywhere_in_its_last_block_restarts_at_the_block_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devnet-chain.jsonl");
    let (net, escrow, provider) = setup();
    let server = DevnetServer::start_persistent(net, "127.0.0.1:0", 50, &path).unwrap();
    let mut hashes = Vec::new();
    for (sequence, amount) in [(0, "3"), (1, "4")] {
        let bytes = pay(&escrow, &provider, amount, FEES, at(0, sequence));
        let hash = server.with(|net| net.broadcast(&bytes)).unwrap().hash;
        wait_for(&server, &hash);
        hashes.push(hash);
    }
    let last_height = server.with(|net| delivered(net, &hashes[1]).height);
    drop(server);
    // The file as it was when the second payout's block was the last one written.
    let written = std::fs::read(&path).unwrap();
    let ends: Vec<usize> = written
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    let last = ends[last_height as usize - 1];
    let before = ends[last_height as usize - 2];
    let provider_address = provider.address().to_string();
    for cut in before..=last {
        std::fs::write(&path, &written[..cut]).unwrap();
        let server =
            DevnetServer::start_persistent(setup().0, "127.0.0.1:0", 3_600_000, &path).unwrap();
        let whole = cut == last;
        let (height, second, balance, sequence) = server.with(|net| {
            (
                net.height(),
                net.tx(&hashes[1]).map(|(_, r)| r.code),
                net.balance(&provider_address),
                net.account(escrow.address().as_ref()).unwrap().sequence,
            )
        });
        drop(server);
        if whole {
            assert_eq!((height, second, balance), (last_height, Some(0), 7_000_000));
            continue;
        }
        // The torn block is gone, and nothing before it.
        assert_eq!(height, last_height - 1, "cut at {cut}");
        assert_eq!(second, None, "cut at {cut}: the torn block's payout");
        assert_eq!(balance, 3_000_000, "cut at {cut}: the first payout stays");
        assert_eq!(sequence, 1, "cut at {cut}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            &written[..before],
            "cut at {cut}: the torn line is cut off"
        );
    }
}

/// A transaction no client would build: any coins, any fee, any gas, signed by `key`.
fn crafted(
    key: &cosmrs::crypto::secp256k1::SigningKey,
    msgs: Vec<cosmrs::Any>,
    fee: Vec<cosmrs::Coin>,
    gas_limit: u64,
    account: Account,
) -> Vec<u8> {
    let body = cosmrs::tx::Body::new(msgs, "", 0u32);
    let auth = cosmrs::tx::SignerInfo::single_direct(Some(key.public_key()), account.sequence)
        .auth_info(cosmrs::tx::Fee {
            amount: fee,
            gas_limit,
            payer: None,
            granter: None,
        });
    cosmrs::tx::SignDoc::new(
        &body,
        &auth,
        &"gpumarket-devnet-1".parse().unwrap(),
        account.number,
    )
    .unwrap()
    .sign(key)
    .unwrap()
    .to_bytes()
    .unwrap()
}

#[test]
fn amounts_at_the_limits_are_refused_with_the_sdks_codes_never_a_panic() {
    use cosmrs::bank::{MsgMultiSend, MsgSend, MultiSendIo};
    use cosmrs::tx::Msg;
    let key = cosmrs::crypto::secp256k1::SigningKey::from_slice(&[7; 32]).unwrap();
    let signer = key.public_key().account_id("cosmos").unwrap();
    let (mut net, _, provider) = setup();
    net.fund(signer.as_ref(), 1_000_000_000);
    let usdc = |amount: u128| cosmrs::Coin {
        denom: "uusdc".parse().unwrap(),
        amount,
    };
    let other = |amount: u128| cosmrs::Coin {
        denom: "uatom".parse().unwrap(),
        amount,
    };
    let to = provider.address().clone();
    let send = |amount: Vec<cosmrs::Coin>| {
        MsgSend {
            from_address: signer.clone(),
            to_address: to.clone(),
            amount,
        }
        .to_any()
        .unwrap()
    };
    let multi = |input: Vec<cosmrs::Coin>, outputs: Vec<Vec<cosmrs::Coin>>| {
        MsgMultiSend {
            inputs: vec![MultiSendIo {
                address: signer.clone(),
                coins: input,
            }],
            outputs: outputs
                .into_iter()
                .map(|coins| MultiSendIo {
                    address: to.clone(),
                    coins,
                })
                .collect(),
        }
        .to_any()
        .unwrap()
    };
    let fee = || vec![usdc(5_000)];
    let me = at(1, 0);
    let max = u128::MAX;
    // (what, transaction, CheckTx's code, delivery's code when CheckTx takes it)
    type Code<'a> = (u32, &'a str);
    type Case<'a> = (&'a str, Vec<u8>, Result<(), Code<'a>>, Code<'a>);
    let cases: Vec<Case> = vec![
        (
            "a send of u128::MAX",
            crafted(&key, vec![send(vec![usdc(max)])], fee(), 200_000, me),
            Ok(()),
            (5, "sdk"),
        ),
        (
            "a send of one denom twice, summing past u128",
            crafted(
                &key,
                vec![send(vec![usdc(max), usdc(1)])],
                fee(),
                200_000,
                me,
            ),
            Err((10, "sdk")),
            (10, "sdk"),
        ),
        (
            "coins out of order",
            crafted(
                &key,
                vec![send(vec![usdc(1), other(1)])],
                fee(),
                200_000,
                me,
            ),
            Err((10, "sdk")),
            (10, "sdk"),
        ),
        (
            "multi-send outputs summing past u128",
            crafted(
                &key,
                vec![multi(vec![usdc(max)], vec![vec![usdc(max)], vec![usdc(1)]])],
                fee(),
                200_000,
                me,
            ),
            Err((4, "bank")),
            (4, "bank"),
        ),
        (
            "a multi-send of u128::MAX in two outputs",
            crafted(
                &key,
                vec![multi(
                    vec![usdc(max)],
                    vec![vec![usdc(max - 1)], vec![usdc(1)]],
                )],
                fee(),
                200_000,
                me,
            ),
            Ok(()),
            (5, "sdk"),
        ),
        (
            "two messages of u128::MAX",
            crafted(
                &key,
                vec![send(vec![usdc(max)]), send(vec![usdc(max)])],
                fee(),
                200_000,
                me,
            ),
            Ok(()),
            (5, "sdk"),
        ),
        (
            "a fee of u128::MAX",
            crafted(
                &key,
                vec![send(vec![usdc(1)])],
                vec![usdc(max)],
                200_000,
                me,
            ),
            Err((5, "sdk")),
            (5, "sdk"),
        ),
        (
            "a fee of one denom twice",
            crafted(
                &key,
                vec![send(vec![usdc(1)])],
                vec![usdc(max), usdc(max)],
                200_000,
                me,
            ),
            Err((13, "sdk")),
            (13, "sdk"),
        ),
        (
            "a gas limit past int64",
            crafted(&key, vec![send(vec![usdc(1)])], fee(), u64::MAX, me),
            Err((18, "sdk")),
            (18, "sdk"),
        ),
    ];
    for (what, bytes, check, deliver) in cases {
        let checked = net.clone().broadcast(&bytes).map(drop);
        assert_eq!(
            checked.map_err(|r| (r.code, r.codespace)),
            check,
            "CheckTx of {what}"
        );
        let simulated = net.simulate(&bytes);
        assert!(simulated.is_err(), "a simulation of {what}: {simulated:?}");
        // Delivered without CheckTx (as a replayed block is): a failed result, the fee
        // charged when the ante handler passed.
        let mut replayed = net.clone();
        replayed.replay_block(0, vec![bytes.clone()]);
        let result = delivered(&replayed, &cosmos_bridge::tx::hash(&bytes)).clone();
        assert_eq!(
            (result.code, result.codespace),
            deliver,
            "delivery of {what}: {}",
            result.log
        );
        assert_eq!(
            replayed.balance(provider.address().as_ref()),
            0,
            "{what} moved nothing"
        );
    }

    // The most a chain of one u128 denom holds, moved whole: exact, no overflow.
    let mut full = setup().0;
    full.fund(signer.as_ref(), u128::MAX - 100_000_000 - 10_000);
    full.fund(provider.address().as_ref(), 10_000);
    let everything = u128::MAX - 100_000_000 - 10_000 - 5_000;
    let bytes = crafted(&key, vec![send(vec![usdc(everything)])], fee(), 200_000, me);
    full.broadcast(&bytes).unwrap();
    full.produce_block(0, true);
    assert_eq!(delivered(&full, &cosmos_bridge::tx::hash(&bytes)).code, 0);
    assert_eq!(
        full.balance(provider.address().as_ref()),
        u128::MAX - 100_000_000 - 5_000
    );
    assert_eq!(full.balance(signer.as_ref()), 0);
    // A gas limit of exactly int64's largest is taken.
    let mut net = setup().0;
    net.fund(signer.as_ref(), 1_000_000_000);
    let bytes = crafted(&key, vec![send(vec![usdc(1)])], fee(), i64::MAX as u64, me);
    net.broadcast(&bytes).unwrap();
    net.produce_block(0, true);
    let result = delivered(&net, &cosmos_bridge::tx::hash(&bytes));
    assert_eq!((result.code, result.gas_wanted), (0, i64::MAX as u64));
}
