//! One suite for both backends: every test in `both_backends!` runs as `file::NAME` and as
//! `kafka::NAME` against the same expectations. Tests of what only the file backend has
//! (recovery, retention, the writer lock) follow in `file_only`.

mod support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use eventlog::{FsyncPolicy, LogError, NewRecord, Record};
use support::Backend;

/// Generates `file::NAME` and `kafka::NAME` for every `fn NAME(&mut Backend) -> Result<()>`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(#[test] fn $name() -> anyhow::Result<()> { super::$name(&mut super::Backend::file()) })*
        }
        mod kafka {
            $(#[test] fn $name() -> anyhow::Result<()> { super::$name(&mut super::Backend::kafka()) })*
        }
    };
}

both_backends!(
    round_trip_keeps_kind_schema_and_payload,
    offsets_are_contiguous_across_batches,
    reads_start_anywhere_and_go_on_sequentially,
    read_waits_then_times_out_empty,
    read_waits_for_a_record_another_handle_appends,
    end_offset_is_the_next_offset,
    partitions_are_independent,
    large_batches_and_large_records,
    unknown_and_invalid_names_are_typed_errors,
    reading_past_the_end_is_out_of_range,
    create_topic_is_idempotent,
);

const NO_WAIT: Duration = Duration::ZERO;
const WAIT: Duration = Duration::from_secs(5);

/// `n` records from `start`, each with a payload naming its number.
fn payloads(start: usize, n: usize) -> Vec<Vec<u8>> {
    (start..start + n)
        .map(|i| format!("payload {i}").into_bytes())
        .collect()
}

fn batch(payloads: &[Vec<u8>]) -> Vec<NewRecord<'_>> {
    payloads
        .iter()
        .map(|payload| NewRecord {
            kind: "test_event",
            schema: 1,
            payload,
        })
        .collect()
}

/// Reads `n` records from `from`, in as many reads as it takes.
fn read_n(
    log: &mut dyn eventlog::Log,
    topic: &str,
    partition: u32,
    from: u64,
    n: usize,
) -> Result<Vec<Record>> {
    let mut records = Vec::with_capacity(n);
    while records.len() < n {
        let next = from + records.len() as u64;
        let got = log.read(topic, partition, next, n - records.len(), WAIT)?;
        ensure!(!got.is_empty(), "no record at {next} after {WAIT:?}");
        records.extend(got);
    }
    Ok(records)
}

fn round_trip_keeps_kind_schema_and_payload(backend: &mut Backend) -> Result<()> {
    let mut log = backend.open();
    let topic = backend.topic("round-trip");
    log.create_topic(&topic, 1)?;
    let binary: Vec<u8> = (0..=255).collect();
    let records = [
        NewRecord {
            kind: "order_accepted",
            schema: 1,
            payload: b"{\"order\":1}",
        },
        NewRecord {
            kind: "lease_created",
            schema: 65535,
            payload: &binary,
        },
        NewRecord {
            kind: "order_cancelled",
            schema: 0,
            payload: b"",
        },
    ];
    assert_eq!(log.append(&topic, 0, &records)?, 0);
    let read = log.read(&topic, 0, 0, 10, WAIT)?;
    let expected: Vec<Record> = records
        .iter()
        .zip(0..)
        .map(|(r, offset)| Record {
            offset,
            kind: r.kind.to_owned(),
            schema: r.schema,
            payload: r.payload.to_vec(),
        })
        .collect();
    assert_eq!(read, expected);
    Ok(())
}

fn offsets_are_contiguous_across_batches(backend: &mut Backend) -> Result<()> {
    let mut log = backend.open();
    let topic = backend.topic("contiguous");
    log.create_topic(&topic, 1)?;
    let all = payloads(0, 9);
    assert_eq!(log.append(&topic, 0, &batch(&all[0..1]))?, 0);
    assert_eq!(log.append(&topic, 0, &batch(&all[1..6]))?, 1);
    assert_eq!(log.append(&topic, 0, &batch(&all[6..9]))?, 6);
    let read = read_n(&mut *log, &topic, 0, 0, 9)?;
    assert_eq!(
        read.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    assert_eq!(
        read.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
        all
    );
    Ok(())
}

fn reads_start_anywhere_and_go_on_sequentially(backend: &mut Backend) -> Result<()> {
    let mut log = backend.open();
    let topic = backend.topic("middle");
    log.create_topic(&topic, 1)?;
    // Two batches, so that reads start inside the last batch and inside an earlier one.
    let all = payloads(0, 20);
    log.append(&topic, 0, &batch(&all[..10]))?;
    log.append(&topic, 0, &batch(&all[10..]))?;
    let offsets = |records: &[Record]| records.iter().map(|r| r.offset).collect::<Vec<_>>();
    assert_eq!(offsets(&read_n(&mut *log, &topic, 0, 4, 3)?), [4, 5, 6]);
    assert_eq!(
        offsets(&read_n(&mut *log, &topic, 0, 7, 5)?),
        [7, 8, 9, 10, 11]
    );
    let back = read_n(&mut *log, &topic, 0, 2, 2)?;
    assert_eq!(offsets(&back), [2, 3]);
    assert_eq!(back[0].payload, all[2]);
    assert_eq!(
        offsets(&read_n(&mut *log, &topic, 0, 15, 5)?),
        [15, 16, 17, 18, 19]
    );
    // A fresh handle starts in the middle too.
    let mut other = backend.open();
    assert_eq!(read_n(&mut *other, &topic, 0, 19, 1)?[0].payload, all[19]);
    assert_eq!(read_n(&mut *other, &topic, 0, 3, 1)?[0].payload, all[3]);
    assert_eq!(
        other.read(&topic, 0, 20, 1, Duration::from_millis(50))?,
        [],
        "nothing after the end"
    );
    Ok(())
}

fn read_waits_then_times_out_empty(backend: &mut Backend) -> Result<()> {
    let mut log = backend.open();
    let topic = backend.topic("timeout");
    log.create_topic(&topic, 1)?;
    let wait = Duration::from_millis(200);
    let started = Instant::now();
    assert_eq!(log.read(&topic, 0, 0, 10, wait)?, []);
    let waited = started.elapsed();
    ensure!(
        waited >= wait && waited < wait + Duration::from_secs(2),
        "waited {waited:?} for {wait:?}"
    );
    // At the end of a partition that has records, too.
    log.append(&topic, 0, &batch(&payloads(0, 2)))?;
    assert_eq!(read_n(&mut *log, &topic, 0, 0, 2)?.len(), 2);
    assert_eq!(log.read(&topic, 0, 2, 10, wait)?, []);
    assert_eq!(log.read(&topic, 0, 2, 10, NO_WAIT)?, []);
    Ok(())
}

fn read_waits_for_a_record_another_handle_appends(backend: &mut Backend) -> Result<()> {
    let mut reader = backend.open();
    let topic = backend.topic("tail");
    reader.create_topic(&topic, 1)?;
    let mut writer = backend.open();
    let appender = {
        let topic = topic.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            writer.append(
                &topic,
                0,
                &[NewRecord {
                    kind: "late",
                    schema: 2,
                    payload: b"here",
                }],
            )
        })
    };
    let started = Instant::now();
    let read = reader.read(&topic, 0, 0, 10, WAIT)?;
    let waited = started.elapsed();
    assert_eq!(appender.join().expect("the appender thread")?, 0);
    assert_eq!(read.len(), 1);
    assert_eq!(
        (
            read[0].kind.as_str(),
            read[0].schema,
            read[0].payload.as_slice()
        ),
        ("late", 2, &b"here"[..])
    );
    ensure!(waited < WAIT, "the record came only when the wait ran out");
    Ok(())
}

fn end_offset_is_the_next_offset(backend: &mut Backend) -> Result<()> {
    let mut log = backend.open();
    let topic = backend.topic("end");
    log.create_topic(&topic, 1)?;
    assert_eq!(log.end_offset(&topic, 0)?, 0);
    assert_eq!(
        log.append(&topic, 0, &[])?,
        0,
        "an empty batch returns the end offset"
    );
    log.append(&topic, 0, &batch(&payloads(0, 4)))?;
    assert_eq!(log.end_offset(&topic, 0)?, 4);
    assert_eq!(log.append(&topic, 0, &[])?, 4);
    assert_eq!(
        backend.open().end_offset(&topic, 0)?,
        4,
        "another handle sees the same end"
    );
    Ok(())
}

fn partitions_are_independent(backend: &mut Backend) -> Result<()> {
    let mut log = backend.open();
    let topic = backend.topic("partitions");
    log.create_topic(&topic, 3)?;
    for partition in 0..3u32 {
        let own = payloads(100 * partition as usize, partition as usize + 1);
        assert_eq!(log.append(&topic, partition, &batch(&own))?, 0);
    }
    for partition in 0..3u32 {
        assert_eq!(log.end_offset(&topic, partition)?, u64::from(partition) + 1);
    }
    // Alternate between partitions, one record at a time, as a reader of several would.
    for offset in 0..3u64 {
        for partition in 0..3u32 {
            if offset > u64::from(partition) {
                continue;
            }
            let read = read_n(&mut *log, &topic, partition, offset, 1)?;
            assert_eq!(
                read[0].payload,
                format!("payload {}", 100 * partition as u64 + offset).into_bytes()
            );
        }
    }
    Ok(())
}

fn large_batches_and_large_records(backend: &mut Backend) -> Result<()> {
    let mut log = backend.open();
    let topic = backend.topic("large");
    log.create_topic(&topic, 1)?;
    let many: Vec<Vec<u8>> = (0..20_000)
        .map(|i| format!("{i:0>120}").into_bytes())
        .collect();
    assert_eq!(log.append(&topic, 0, &batch(&many))?, 0);
    let big = vec![0x5a; 256 << 10];
    assert_eq!(
        log.append(
            &topic,
            0,
            &[NewRecord {
                kind: "big",
                schema: 1,
                payload: &big
            }]
        )?,
        20_000
    );
    let mut next = 0;
    while next < 20_000 {
        let read = log.read(&topic, 0, next, 1_000, WAIT)?;
        ensure!(!read.is_empty(), "nothing at {next}");
        for record in &read {
            assert_eq!(record.offset, next);
            assert_eq!(record.payload, many[next as usize]);
            next += 1;
        }
    }
    let read = read_n(&mut *log, &topic, 0, 20_000, 1)?;
    assert_eq!(
        (read[0].kind.as_str(), read[0].payload.len()),
        ("big", big.len())
    );
    assert!(read[0].payload == big);
    Ok(())
}

fn unknown_and_invalid_names_are_typed_errors(backend: &mut Backend) -> Result<()> {
    let mut log = backend.open();
    let missing = backend.topic("missing");
    let record = [NewRecord {
        kind: "k",
        schema: 1,
        payload: b"p",
    }];
    assert!(
        matches!(log.append(&missing, 0, &record), Err(LogError::UnknownTopic(t)) if t == missing)
    );
    assert!(matches!(
        log.read(&missing, 0, 0, 1, NO_WAIT),
        Err(LogError::UnknownTopic(_))
    ));
    assert!(matches!(
        log.end_offset(&missing, 0),
        Err(LogError::UnknownTopic(_))
    ));
    let topic = backend.topic("two");
    log.create_topic(&topic, 2)?;
    let unknown = |result| {
        matches!(
            result,
            Err(LogError::UnknownPartition {
                partition: 2,
                partitions: 2,
                ..
            })
        )
    };
    assert!(unknown(log.append(&topic, 2, &record).map(drop)));
    assert!(unknown(log.read(&topic, 2, 0, 1, NO_WAIT).map(drop)));
    assert!(unknown(log.end_offset(&topic, 2).map(drop)));
    for bad in ["", "a/b", "..", "spaces are not allowed", &"x".repeat(250)] {
        assert!(
            matches!(log.create_topic(bad, 1), Err(LogError::InvalidTopic(_))),
            "{bad:?} was accepted"
        );
    }
    assert!(matches!(
        log.create_topic(&backend.topic("none"), 0),
        Err(LogError::NoPartitions)
    ));
    Ok(())
}

fn reading_past_the_end_is_out_of_range(backend: &mut Backend) -> Result<()> {
    let mut log = backend.open();
    let topic = backend.topic("past-end");
    log.create_topic(&topic, 1)?;
    log.append(&topic, 0, &batch(&payloads(0, 3)))?;
    match log.read(&topic, 0, 4, 1, NO_WAIT) {
        Err(LogError::OffsetOutOfRange {
            offset: 4,
            earliest: 0,
            end: 3,
            ..
        }) => Ok(()),
        other => anyhow::bail!("expected OffsetOutOfRange, got {other:?}"),
    }
}

fn create_topic_is_idempotent(backend: &mut Backend) -> Result<()> {
    let mut log = backend.open();
    let topic = backend.topic("idempotent");
    log.create_topic(&topic, 2)?;
    log.append(&topic, 1, &batch(&payloads(0, 2)))?;
    log.create_topic(&topic, 2)?;
    backend.open().create_topic(&topic, 2)?;
    assert_eq!(
        log.end_offset(&topic, 1)?,
        2,
        "creating it again kept its records"
    );
    Ok(())
}

mod file_only {
    use super::*;

    /// The active segment file of partition 0, the only one these tests write.
    fn segment(backend: &Backend, topic: &str) -> std::path::PathBuf {
        backend
            .partition_dir(topic, 0)
            .join("00000000000000000000.log")
    }

    #[test]
    fn a_torn_batch_is_dropped_whole_when_a_writer_reopens() -> Result<()> {
        // What a crash in the middle of appending a batch of four can leave behind.
        for (torn, kept) in [
            ("a batch cut short", 5),
            ("garbage after the last batch", 9),
        ] {
            let mut backend = Backend::file();
            backend.config.fsync = FsyncPolicy::Always;
            let topic = backend.topic("torn");
            let path = segment(&backend, &topic);
            let whole = {
                let mut log = backend.open();
                log.create_topic(&topic, 1)?;
                log.append(&topic, 0, &batch(&payloads(0, 5)))?;
                let whole = fs::metadata(&path)?.len();
                log.append(&topic, 0, &batch(&payloads(5, 4)))?;
                whole
            };
            let full = fs::metadata(&path)?.len();
            let file = OpenOptions::new().append(true).open(&path)?;
            if kept == 5 {
                // Two and a half of the four records made it.
                file.set_len(whole + (full - whole) * 5 / 8)?;
            } else {
                (&file).write_all(&[0xab; 37])?;
            }

            let mut reader = backend.open();
            assert_eq!(
                reader.end_offset(&topic, 0)?,
                kept,
                "{torn}: readers stop before it"
            );
            assert_eq!(
                read_n(&mut *reader, &topic, 0, 0, kept as usize)?.len(),
                kept as usize
            );
            let nothing = reader.read(&topic, 0, kept, 10, Duration::from_millis(20))?;
            assert_eq!(nothing, [], "{torn}: no record of a torn batch is visible");

            let mut writer = backend.open();
            let at = writer.append(&topic, 0, &batch(&payloads(50, 1)))?;
            assert_eq!(
                at, kept,
                "{torn}: recovery cut the log after the last whole batch"
            );
            let after = read_n(&mut *reader, &topic, 0, kept, 1)?;
            assert_eq!(
                after[0].payload, b"payload 50",
                "{torn}: the reader goes on"
            );
        }
        Ok(())
    }

    #[test]
    fn a_roll_cut_short_by_a_crash_is_finished_by_the_next_writer() -> Result<()> {
        let backend = Backend::file();
        let topic = backend.topic("roll");
        let mut log = backend.open();
        log.create_topic(&topic, 1)?;
        log.append(&topic, 0, &batch(&payloads(0, 3)))?;
        drop(log);
        // The writer sealed the segment (the format's end-of-segment marker), then died before
        // creating the next one.
        OpenOptions::new()
            .append(true)
            .open(segment(&backend, &topic))?
            .write_all(b"\0\0\0\0SEAL")?;

        let mut reader = backend.open();
        assert_eq!(read_n(&mut *reader, &topic, 0, 0, 3)?.len(), 3);
        assert_eq!(reader.read(&topic, 0, 3, 1, Duration::from_millis(20))?, []);
        let mut writer = backend.open();
        assert_eq!(writer.append(&topic, 0, &batch(&payloads(3, 1)))?, 3);
        let next = backend
            .partition_dir(&topic, 0)
            .join("00000000000000000003.log");
        ensure!(next.exists(), "recovery did not create the next segment");
        assert_eq!(
            read_n(&mut *reader, &topic, 0, 3, 1)?[0].payload,
            b"payload 3"
        );
        Ok(())
    }

    #[test]
    fn a_corrupt_record_in_the_middle_is_a_typed_error() -> Result<()> {
        let backend = Backend::file();
        let topic = backend.topic("corrupt");
        let mut log = backend.open();
        log.create_topic(&topic, 1)?;
        log.append(&topic, 0, &batch(&payloads(0, 10)))?;
        // A later batch proves the damaged one was complete: this is no torn write.
        log.append(&topic, 0, &batch(&payloads(10, 5)))?;
        drop(log);
        let path = segment(&backend, &topic);
        let mut bytes = fs::read(&path)?;
        let at = bytes
            .windows(9)
            .position(|w| w == b"payload 4")
            .expect("record 4 on disk");
        bytes[at + 8] ^= 0x01;
        fs::write(&path, bytes)?;

        let mut log = backend.open();
        let before = log.read(&topic, 0, 0, 100, NO_WAIT)?;
        assert_eq!(
            before.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [0, 1, 2, 3],
            "records before the damage are readable"
        );
        let is_corrupt_4 = |result: Result<_, LogError>| {
            matches!(result, Err(LogError::Corrupt { offset: 4, .. }))
        };
        assert!(is_corrupt_4(log.read(&topic, 0, 4, 100, NO_WAIT).map(drop)));
        assert!(
            is_corrupt_4(log.read(&topic, 0, 7, 100, NO_WAIT).map(drop)),
            "seeking past it meets it too"
        );
        assert!(
            is_corrupt_4(log.append(&topic, 0, &batch(&payloads(10, 1))).map(drop)),
            "recovery refuses to truncate valid records"
        );
        Ok(())
    }

    #[test]
    fn retention_deletes_the_oldest_whole_segments() -> Result<()> {
        let mut backend = Backend::file();
        backend.config.segment_bytes = 1 << 10;
        backend.config.retention_bytes = Some(4 << 10);
        let topic = backend.topic("retention");
        let mut log = backend.open();
        log.create_topic(&topic, 1)?;
        let mut early = backend.open();
        log.append(&topic, 0, &batch(&payloads(0, 1)))?;
        assert_eq!(
            early.read(&topic, 0, 0, 1, WAIT)?.len(),
            1,
            "a reader positioned in the first segment"
        );
        for i in 1..200 {
            log.append(&topic, 0, &batch(&payloads(i, 1)))?;
        }
        let segments = fs::read_dir(backend.partition_dir(&topic, 0))?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
            })
            .count();
        let bytes: u64 = fs::read_dir(backend.partition_dir(&topic, 0))?
            .map(|e| e.and_then(|e| e.metadata()).map_or(0, |m| m.len()))
            .sum();
        ensure!((4..=7).contains(&segments), "{segments} segments kept");
        // At least the retention, and less than one more segment (plus a frame and the lock file).
        ensure!(
            (4 << 10..(5 << 10) + 100).contains(&bytes),
            "{bytes} bytes kept"
        );

        let earliest = match log.read(&topic, 0, 0, 1, NO_WAIT) {
            Err(LogError::OffsetOutOfRange {
                offset: 0,
                earliest,
                end: 200,
                ..
            }) => earliest,
            other => anyhow::bail!("expected OffsetOutOfRange, got {other:?}"),
        };
        // About 41 bytes a record: 4 to 5 KiB keep 100 to 125 records.
        ensure!(
            (60..=110).contains(&earliest),
            "the earliest offset kept is {earliest}"
        );
        let rest = read_n(&mut *log, &topic, 0, earliest, (200 - earliest) as usize)?;
        assert_eq!(
            rest.last().map(|r| r.payload.clone()),
            Some(b"payload 199".to_vec())
        );
        assert!(matches!(
            backend.open().read(&topic, 0, 3, 1, NO_WAIT),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // A reader inside a deleted segment finishes it, then learns that it fell behind.
        assert_eq!(read_n(&mut *early, &topic, 0, 1, 5)?.len(), 5);
        let mut next = 6;
        let behind = loop {
            match early.read(&topic, 0, next, 100, NO_WAIT) {
                Ok(records) if !records.is_empty() => next += records.len() as u64,
                other => break other,
            }
        };
        assert!(
            matches!(behind, Err(LogError::OffsetOutOfRange { offset, earliest: e, .. }) if offset == next && e == earliest),
            "{behind:?}"
        );
        Ok(())
    }

    #[test]
    fn a_second_writer_is_refused_until_the_first_closes() -> Result<()> {
        let backend = Backend::file();
        let topic = backend.topic("lock");
        let mut first = backend.open();
        first.create_topic(&topic, 2)?;
        first.append(&topic, 0, &batch(&payloads(0, 2)))?;
        let mut second = backend.open();
        let refused = second.append(&topic, 0, &batch(&payloads(2, 1)));
        assert!(
            matches!(&refused, Err(LogError::WriterConflict { partition: 0, .. })),
            "{refused:?}"
        );
        assert_eq!(
            second.append(&topic, 1, &batch(&payloads(0, 1)))?,
            0,
            "another partition is free"
        );
        assert_eq!(
            read_n(&mut *second, &topic, 0, 0, 2)?.len(),
            2,
            "reading needs no lock"
        );
        drop(first);
        assert_eq!(second.append(&topic, 0, &batch(&payloads(2, 1)))?, 2);
        Ok(())
    }

    #[test]
    fn a_reader_follows_a_writer_across_segment_rolls() -> Result<()> {
        let mut backend = Backend::file();
        backend.config.segment_bytes = 2 << 10;
        let topic = backend.topic("follow");
        let mut writer = backend.open();
        writer.create_topic(&topic, 1)?;
        let mut reader = backend.open();
        let total = 2_000;
        let appender = {
            let topic = topic.clone();
            std::thread::spawn(move || -> Result<(), LogError> {
                for start in (0..total).step_by(20) {
                    writer.append(&topic, 0, &batch(&payloads(start, 20)))?;
                }
                Ok(())
            })
        };
        let read = read_n(&mut *reader, &topic, 0, 0, total)?;
        appender.join().expect("the appender thread")?;
        for (i, record) in read.iter().enumerate() {
            assert_eq!(
                (record.offset, record.payload.clone()),
                (i as u64, format!("payload {i}").into_bytes())
            );
        }
        ensure!(
            fs::read_dir(backend.partition_dir(&topic, 0))?.count() > 10,
            "the test did not roll segments"
        );
        Ok(())
    }

    #[test]
    fn a_reopened_log_continues_where_it_stopped_under_every_policy() -> Result<()> {
        for fsync in [
            FsyncPolicy::Always,
            FsyncPolicy::EveryMillis(1),
            FsyncPolicy::Never,
        ] {
            let mut backend = Backend::file();
            backend.config.fsync = fsync;
            backend.config.segment_bytes = 4 << 10;
            let topic = backend.topic("reopen");
            for round in 0..3 {
                let mut log = backend.open();
                log.create_topic(&topic, 1)?;
                assert_eq!(
                    log.append(&topic, 0, &batch(&payloads(100 * round, 100)))?,
                    100 * round as u64,
                    "{fsync:?}"
                );
                log.flush()?;
            }
            let read = read_n(&mut *backend.open(), &topic, 0, 0, 300)?;
            assert_eq!(read[299].payload, b"payload 299", "{fsync:?}");
        }
        Ok(())
    }

    #[test]
    fn bad_urls_are_refused() {
        let config = eventlog::LogConfig::default();
        for url in [
            "file://relative/path",
            "kafka://",
            "kafka://host",
            "kafka://host:port",
            "http://x",
            "/plain/path",
        ] {
            assert!(
                matches!(eventlog::open(url, &config), Err(LogError::BadUrl { .. })),
                "{url} was accepted"
            );
        }
    }
}
