//! Snapshots restore the exact state and refuse damaged bytes.

use contract::{Command, Timestamp};
use matching_engine::{Engine, SnapshotError};

use crate::support::*;

fn busy_market() -> Scenario {
    Scenario::given(
        market_with_buyers().into_iter().chain([
            ask(PROVIDER, 1, "1.50", 4).in_region("us-east").into(),
            ask(PROVIDER2, 1, "1.60", 8).into(),
            bid(BUYER, 1, "1.40", 2).hours(3).into(),
            bid(BUYER, 2, "2.00", 8)
                .single_node()
                .regions(&["eu-west"])
                .into(),
            bid(BUYER2, 1, "1.45", 2).into(),
        ]),
    )
}

#[test]
fn a_restored_engine_has_the_same_state_and_answers_the_same() {
    let mut live = busy_market();
    let mut restored = Engine::restore(&live.engine.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), live.engine.state_hash());
    assert_eq!(restored.snapshot(), live.engine.snapshot());
    let next: Command = ask(PROVIDER, 2, "1.40", 4).into();
    let mut from_restored = Vec::new();
    restored
        .apply(Timestamp(live.now), &next, &mut from_restored)
        .unwrap();
    let from_live = live.when(next);
    assert_eq!(from_live.events, from_restored);
    assert!(!from_restored.is_empty());
    assert_eq!(restored.state_hash(), live.engine.state_hash());
}

#[test]
fn damaged_snapshots_are_refused() {
    let bytes = busy_market().engine.snapshot();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    assert!(matches!(
        Engine::restore(&flipped),
        Err(SnapshotError::Corrupt)
    ));
    assert!(matches!(
        Engine::restore(&bytes[..bytes.len() - 3]),
        Err(SnapshotError::Corrupt)
    ));
    assert!(matches!(
        Engine::restore(b"not a snapshot at all"),
        Err(SnapshotError::BadMagic)
    ));
}

/// `format4.snap` is `busy_market`'s snapshot as the engine wrote it before format 5 (the
/// last commit with format 4), so old snapshots stay readable whatever the image becomes.
const FORMAT_4: &[u8] = include_bytes!("format4.snap");

#[test]
fn format_8_7_6_5_4_and_3_snapshots_still_restore_without_what_came_later() {
    let mut live = busy_market();
    assert_eq!(&FORMAT_4[..8], b"GPUMKT\x00\x04");
    let mut restored = Engine::restore(FORMAT_4).unwrap();
    assert_eq!(restored.state_hash(), live.engine.state_hash());
    let v9 = live.engine.snapshot();
    assert_eq!(&v9[..8], b"GPUMKT\x00\x09");
    assert_eq!(restored.snapshot(), v9, "written again in format 9");
    // Format 8: format 9 without its held payments, which for a market that held none are
    // one empty list (8 bytes); format 7, without the checks too, which for one market
    // without a checker are a list of one `None` and two empty lists (25 bytes); format 6,
    // without the storage charges too, which for a market that charged none are one empty
    // list (8 bytes); format 5, without the proofs too, which for a market without nodes or
    // bonds are eight empty or zero fields of 8 bytes each.
    let end_of = |drop: usize| v9.len() - 4 - drop;
    assert_eq!(&v9[end_of(8)..end_of(0)], &[0; 8]);
    let mut checks = vec![1, 0, 0, 0, 0, 0, 0, 0, 0];
    checks.extend([0; 16]);
    assert_eq!(&v9[end_of(8 + 25)..end_of(8)], &checks[..]);
    assert!(v9[end_of(8 + 25 + 8 + 64)..end_of(8 + 25)]
        .iter()
        .all(|b| *b == 0));
    for (magic, drop) in [
        (b"GPUMKT\x00\x08", 8),
        (b"GPUMKT\x00\x07", 8 + 25),
        (b"GPUMKT\x00\x06", 8 + 25 + 8),
        (b"GPUMKT\x00\x05", 8 + 25 + 8 + 64),
    ] {
        let mut old = magic.to_vec();
        old.extend_from_slice(&v9[8..end_of(drop)]);
        let sum = crc32fast::hash(&old[8..]);
        old.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(Engine::restore(&old).unwrap().snapshot(), v9);
    }
    // Format 3: the same image, with FNV-1a (64-bit) as its trailer.
    let image = &FORMAT_4[8..FORMAT_4.len() - 4];
    let fnv = image.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut v3 = b"GPUMKT\x00\x03".to_vec();
    v3.extend_from_slice(image);
    v3.extend_from_slice(&fnv.to_le_bytes());
    assert_eq!(Engine::restore(&v3).unwrap().snapshot(), v9);
    v3[100] ^= 1;
    assert!(matches!(Engine::restore(&v3), Err(SnapshotError::Corrupt)));
    // Its lease is one of `Place`: it still ends by stated hours.
    let end = end(BUYER, 1, "1");
    let mut from_restored = Vec::new();
    restored
        .apply(Timestamp(live.now), &end, &mut from_restored)
        .unwrap();
    assert_eq!(live.when(end).events, from_restored);
}
