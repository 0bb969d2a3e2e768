//! The newest snapshot torn at every byte offset (a disk that lost the end of a file the
//! rename had already made visible): the runner restores the snapshot before it, or replays
//! from the start, and ends with the same state and the same events, nothing written twice.

use contract::codec::SCHEMA;
use engine_service::{Runner, RunnerConfig, Topics};

use super::{deposits, drain, Setup};

/// The offsets to cut at: every one for a small file; for a large one every one in its
/// first and last 512 bytes (header, lengths, checksum) and every 61st in between, which
/// keeps the test to seconds.
fn offsets(len: usize) -> Vec<usize> {
    if len <= 4_096 {
        return (0..len).collect();
    }
    (0..512)
        .chain((512..len - 512).step_by(61))
        .chain(len - 512..len)
        .collect()
}

#[test]
fn a_torn_newest_snapshot_restores_the_one_before_with_the_same_state_and_events() {
    let s = Setup::new();
    let mut log = s.log();
    let mut runner = s.runner();
    s.append(log.as_mut(), &deposits(30), SCHEMA);
    drain(&mut runner);
    let hash = runner.engine().state_hash();
    drop(runner);
    let events = s.events();
    let mut snaps: Vec<_> = std::fs::read_dir(s.dir.path().join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    snaps.sort();
    assert_eq!(snaps.len(), 2, "the newest and the one before: {snaps:?}");
    let newest = snaps.last().unwrap();
    let whole = std::fs::read(newest).unwrap();
    for len in offsets(whole.len()) {
        let dir = tempfile::tempdir().unwrap();
        for snap in &snaps {
            std::fs::copy(snap, dir.path().join(snap.file_name().unwrap())).unwrap();
        }
        std::fs::write(dir.path().join(newest.file_name().unwrap()), &whole[..len]).unwrap();
        let config = RunnerConfig {
            topics: Topics::with_prefix(""),
            shard: 0,
            shards: 1,
            snapshot_every: 10,
            snapshot_dir: dir.path().to_owned(),
            batch: 7,
            poll: std::time::Duration::from_millis(10),
        };
        let mut runner = Runner::open(config, s.log()).unwrap();
        assert!(
            runner.next_command() < 28,
            "cut at {len}: restored from the torn snapshot (at {})",
            runner.next_command()
        );
        drain(&mut runner);
        assert_eq!(runner.engine().state_hash(), hash, "cut at {len}");
        assert_eq!(runner.next_command(), 30, "cut at {len}");
        drop(runner);
        assert_eq!(
            s.events(),
            events,
            "cut at {len}: the same events, none twice"
        );
    }
}
