//! The cosmos-bridge's tests. Here: the escrow key and payout transactions (derivation,
//! conversion to base units, signing, and the checks a chain makes of the signature). In
//! the modules: the devnet's chain ([`devnet`]), its JSON-RPC against CometBFT 0.38's
//! documented shapes ([`rpc`]), the chain client against it ([`chain`]), and CosmJS, the
//! standard JavaScript client, against it ([`cosmjs`]).

mod chain;
mod cosmjs;
mod devnet;
mod rpc;

use std::os::unix::fs::PermissionsExt;

use cosmos_bridge::devnet::server::DevnetServer;
use cosmos_bridge::devnet::Devnet;
use cosmos_bridge::keys::EscrowKey;
use cosmos_bridge::tx::{base_units, hash, sign_payouts, verify, Account, Chain, Fees, Payout};
use cosmos_bridge::BridgeError;
use rust_decimal::Decimal;

/// The BIP-39 test mnemonic (all "abandon", then "about").
const MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

fn chain() -> Chain {
    Chain {
        chain_id: "gpumarket-devnet-1".into(),
        prefix: "cosmos".into(),
        denom: "uusdc".into(),
        decimals: 6,
    }
}

const FEES: Fees = Fees {
    amount: 5_000,
    gas_limit: 200_000,
};

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[test]
fn the_escrow_key_derives_on_the_cosmos_path_and_never_prints_its_secret() {
    let key = EscrowKey::from_mnemonic(MNEMONIC, "", "cosmos").unwrap();
    // The well-known address of this mnemonic on m/44'/118'/0'/0/0.
    assert_eq!(
        key.address().to_string(),
        "cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4"
    );
    let other = EscrowKey::from_mnemonic(MNEMONIC, "passphrase", "cosmos").unwrap();
    assert_ne!(other.address(), key.address());
    let noble = EscrowKey::from_mnemonic(MNEMONIC, "", "noble").unwrap();
    assert!(noble.address().to_string().starts_with("noble1"));
    let debug = format!("{key:?}");
    assert!(
        debug.contains("cosmos19rl4") && !debug.contains("abandon"),
        "{debug}"
    );
    assert!(matches!(
        EscrowKey::from_mnemonic("not a mnemonic", "", "cosmos"),
        Err(BridgeError::Key(_))
    ));
}

#[test]
fn a_key_file_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("escrow.key");
    std::fs::write(&path, format!("{}\n", "11".repeat(32))).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = EscrowKey::from_file(&path, "cosmos")
        .unwrap_err()
        .to_string();
    assert!(err.contains("readable by others"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = EscrowKey::from_file(&path, "cosmos").unwrap();
    assert!(key.address().to_string().starts_with("cosmos1"));
    std::fs::write(&path, "zz").unwrap();
    assert!(EscrowKey::from_file(&path, "cosmos").is_err());
}

#[test]
fn amounts_convert_to_base_units_exactly_or_not_at_all() {
    assert_eq!(base_units(dec("12.5"), 6).unwrap(), 12_500_000);
    assert_eq!(base_units(dec("0.000001"), 6).unwrap(), 1);
    for bad in ["0", "-1", "0.0000001"] {
        assert!(base_units(dec(bad), 6).is_err(), "{bad}");
    }
}

#[test]
fn a_signed_multisend_verifies_as_a_chain_checks_it_and_any_change_breaks_it() {
    let key = EscrowKey::from_mnemonic(MNEMONIC, "", "cosmos").unwrap();
    let alice = EscrowKey::from_mnemonic(MNEMONIC, "alice", "cosmos").unwrap();
    let bob = EscrowKey::from_mnemonic(MNEMONIC, "bob", "cosmos").unwrap();
    let payouts = [
        Payout {
            address: alice.address().to_string(),
            amount: dec("12.5"),
        },
        Payout {
            address: bob.address().to_string(),
            amount: dec("0.25"),
        },
    ];
    let sign = || {
        sign_payouts(
            &key,
            &chain(),
            &payouts,
            "settlement 7",
            FEES,
            Account {
                number: 42,
                sequence: 3,
            },
        )
        .unwrap()
    };
    let signed = sign();
    assert_eq!(signed.hash, hash(&signed.bytes));
    assert_eq!(signed.hash.len(), 64);

    let (tx, signer) = verify(&signed.bytes, "gpumarket-devnet-1", 42, "cosmos").unwrap();
    assert_eq!(&signer, key.address());
    assert_eq!(tx.body.memo, "settlement 7");
    assert_eq!(tx.auth_info.signer_infos[0].sequence, 3);
    let msg =
        <cosmrs::bank::MsgMultiSend as cosmrs::tx::Msg>::from_any(&tx.body.messages[0]).unwrap();
    assert_eq!(
        msg.inputs[0].coins[0].amount, 12_750_000,
        "the input is the sum of the outputs"
    );
    assert_eq!(msg.outputs[1].coins[0].amount, 250_000);

    // What a chain refuses: another chain, another account number, changed bytes.
    assert!(verify(&signed.bytes, "other-chain", 42, "cosmos").is_err());
    assert!(verify(&signed.bytes, "gpumarket-devnet-1", 43, "cosmos").is_err());
    let mut tampered = signed.bytes.clone();
    // The first payout's amount, as the protobuf carries it (a decimal string).
    let at = tampered
        .windows(8)
        .position(|w| w == b"12500000")
        .expect("the amount is in the bytes");
    tampered[at] ^= 1;
    assert!(verify(&tampered, "gpumarket-devnet-1", 42, "cosmos").is_err());

    // Signing is deterministic (RFC 6979): the same batch gives the same bytes and hash, so
    // a restarted bridge can recognise its own transaction.
    let again = sign();
    assert_eq!(again, signed);
}

#[test]
fn bad_payouts_are_refused_before_signing() {
    let key = EscrowKey::from_mnemonic(MNEMONIC, "", "cosmos").unwrap();
    let sign = |payouts: &[Payout]| {
        sign_payouts(
            &key,
            &chain(),
            payouts,
            "",
            FEES,
            Account {
                number: 0,
                sequence: 0,
            },
        )
    };
    assert!(matches!(sign(&[]), Err(BridgeError::Tx(_))));
    let noble = EscrowKey::from_mnemonic(MNEMONIC, "", "noble").unwrap();
    assert!(matches!(
        sign(&[Payout {
            address: noble.address().to_string(),
            amount: dec("1")
        }]),
        Err(BridgeError::BadAddress(_))
    ));
    assert!(matches!(
        sign(&[Payout {
            address: "cosmos1notanaddress".into(),
            amount: dec("1")
        }]),
        Err(BridgeError::BadAddress(_))
    ));
    assert!(matches!(
        sign(&[Payout {
            address: key.address().to_string(),
            amount: dec("0.0000001")
        }]),
        Err(BridgeError::BadAmount { .. })
    ));
}

/// A devnet with the escrow funded (100 USDC, account 0), the escrow key, and a second key
/// (a provider's, not on chain yet).
fn setup() -> (Devnet, EscrowKey, EscrowKey) {
    let escrow = EscrowKey::from_mnemonic(MNEMONIC, "", "cosmos").unwrap();
    let provider = EscrowKey::from_mnemonic(MNEMONIC, "provider", "cosmos").unwrap();
    let mut devnet = Devnet::new("gpumarket-devnet-1", "cosmos", "uusdc", 5_000);
    devnet.fund(escrow.address().as_ref(), 100_000_000);
    (devnet, escrow, provider)
}

/// A signed payout of `amount` USDC from `from` to `to`.
fn pay(from: &EscrowKey, to: &EscrowKey, amount: &str, fees: Fees, account: Account) -> Vec<u8> {
    let payout = Payout {
        address: to.address().to_string(),
        amount: dec(amount),
    };
    sign_payouts(from, &chain(), &[payout], "", fees, account)
        .unwrap()
        .bytes
}

/// Waits until the served chain has included the transaction `hash`.
fn wait_for(server: &DevnetServer, hash: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while server.with(|net| net.tx(hash).is_none()) {
        assert!(std::time::Instant::now() < deadline, "{hash} not included");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
