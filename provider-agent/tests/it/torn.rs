//! Every file the agent keeps, torn at every byte offset of its last record: what a
//! restarted agent does with it. Never a panic, never a number given twice, never a job run
//! twice or reported completed without its exit status, never a second ask.

use std::path::Path;
use std::time::{Duration, Instant};

use provider_agent::jobs::{JobSpec, JobStatus, Runner, Vendor};
use provider_agent::keys;
use serde_json::json;

use super::jobs::ends_in;
use super::{agent, agent_offering, h100_market, sandbox};

/// Nothing listens on the discard port on loopback: the API is away.
const AWAY: &str = "http://127.0.0.1:9";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A fresh copy of the folder `template` with `file` (relative to it) cut to `len` bytes.
fn torn_copy(template: &Path, file: &str, len: usize) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(template, copy.path());
    let path = copy.path().join(file);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..len]).unwrap();
    copy
}

fn file_len(path: &Path) -> usize {
    std::fs::metadata(path).unwrap().len() as usize
}

fn sh(script: &str) -> JobSpec {
    JobSpec::new("/bin/sh", &["-c", script])
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_torn_report_in_the_outbox_is_set_aside_and_its_starts_are_reported_again() {
    let template = tempfile::tempdir().unwrap();
    let mut a = agent(template.path(), AWAY, "gpm_1_x", "node-t", 100);
    // A job whose start went out in the report about to be torn.
    a.jobs
        .start(7, sh("exit 0"), vec![0], ends_in(60_000), None)
        .unwrap();
    a.report(&[]).unwrap();
    a.report(&[7]).unwrap();
    a.jobs.mark_start_reported(7).unwrap();
    drop(a);
    let last = "state/outbox/00000000000000000002.json";
    let whole = file_len(&template.path().join(last));
    for len in 0..=whole {
        let copy = torn_copy(template.path(), last, len);
        let mut a = agent(copy.path(), AWAY, "gpm_1_x", "node-t", 100);
        let torn = len < whole;
        assert_eq!(
            a.outbox.len().unwrap(),
            if torn { 1 } else { 2 },
            "at {len}"
        );
        assert_eq!(
            copy.path()
                .join("state/damaged/00000000000000000002.json")
                .exists(),
            torn,
            "at {len}"
        );
        // Its start may not have reached the market: it goes out again with the next report.
        assert_eq!(
            a.jobs.get(7).unwrap().unwrap().start_reported,
            !torn,
            "at {len}"
        );
        assert_eq!(a.report(&[]).unwrap(), 3, "the numbering goes on at {len}");
    }
}

#[test]
fn a_torn_report_never_stops_the_ones_after_it() {
    let m = h100_market("agent_torn_outbox");
    let dir = tempfile::tempdir().unwrap();
    let mut a = agent(dir.path(), AWAY, &m.provider, "node-u", 100);
    for _ in 0..3 {
        a.report(&[]).unwrap();
    }
    drop(a);
    let a = agent(dir.path(), &m.url, &m.provider, "node-u", 100);
    // Damaged while the agent runs (by the disk, not a crash): the flush sets it aside.
    let middle = dir.path().join("state/outbox/00000000000000000002.json");
    std::fs::write(&middle, b"{\"sequence\":2,\"rep").unwrap();
    a.register().unwrap();
    let flushed = a.flush().unwrap();
    assert_eq!(
        (flushed.sent, flushed.damaged, flushed.waiting),
        (2, 1, 0),
        "{flushed:?}"
    );
    assert!(a.outbox.is_empty().unwrap());
    m.projected();
    let nodes = m.ok(
        &m.provider,
        &format!(
            "{{ provider(account: \"{}\") {{ nodes {{ node heartbeats }} }} }}",
            api::testing::T_PROVIDER
        ),
        json!({}),
    );
    assert_eq!(
        nodes["provider"]["nodes"],
        json!([{"node": "node-u", "heartbeats": 2}])
    );
}

#[test]
fn a_torn_counter_never_gives_a_number_again() {
    let template = tempfile::tempdir().unwrap();
    let mut a = agent(template.path(), AWAY, "gpm_1_x", "node-s", 100);
    for _ in 0..12 {
        a.report(&[]).unwrap();
    }
    drop(a);
    let file = "state/sequence";
    assert_eq!(std::fs::read(template.path().join(file)).unwrap(), b"13\n");
    for len in 0..=3 {
        let copy = torn_copy(template.path(), file, len);
        let mut a = agent(copy.path(), AWAY, "gpm_1_x", "node-s", 100);
        let next = a.report(&[]).unwrap();
        if len == 3 {
            assert_eq!(next, 13);
        } else {
            assert!(
                next > 1_000_000,
                "{next} at {len}: above every number given"
            );
        }
        assert!(a.report(&[]).unwrap() > next, "at {len}");
    }
    // Garbage of the right length, and a zero, are damage too.
    for garbage in [&b"1x\n"[..], b"0\n", b"\xff\xfe\n"] {
        let copy = torn_copy(template.path(), file, 3);
        std::fs::write(copy.path().join(file), garbage).unwrap();
        let mut a = agent(copy.path(), AWAY, "gpm_1_x", "node-s", 100);
        assert!(a.report(&[]).unwrap() > 1_000_000, "{garbage:?}");
    }
}

#[test]
fn a_torn_node_key_is_refused_never_replaced() {
    let template = tempfile::tempdir().unwrap();
    let key = keys::load_or_create(&template.path().join("node.key")).unwrap();
    let whole = file_len(&template.path().join("node.key"));
    assert_eq!(whole, 65, "64 hex digits and a newline");
    for len in 0..=whole {
        let copy = torn_copy(template.path(), "node.key", len);
        match keys::load_or_create(&copy.path().join("node.key")) {
            Ok(again) => {
                assert!(len >= 64, "a key from {len} bytes");
                assert_eq!(again.to_bytes(), key.to_bytes());
            }
            Err(e) => {
                assert!(len < 64, "refused at {len}: {e}");
                assert!(matches!(e, keys::KeyError::Malformed { .. }), "{e:?}");
            }
        }
    }
}

#[test]
fn a_torn_job_record_makes_the_job_lost_and_it_never_runs_again() {
    let template = tempfile::tempdir().unwrap();
    let runner = Runner::open(template.path(), Vendor::Nvidia, &sandbox()).unwrap();
    runner
        .start(5, sh("exit 0"), vec![0], ends_in(60_000), None)
        .unwrap();
    wait_until("the job's end", || {
        runner.poll().unwrap();
        runner.get(5).unwrap().unwrap().status.is_over()
    });
    runner.mark_start_reported(5).unwrap();
    drop(runner);
    let file = "jobs/5.json";
    let whole = file_len(&template.path().join(file));
    for len in 0..=whole {
        let copy = torn_copy(template.path(), file, len);
        let runner = Runner::open(copy.path(), Vendor::Nvidia, &sandbox()).unwrap();
        let jobs = runner.jobs().unwrap();
        assert_eq!(jobs.len(), 1, "at {len}");
        let job = &jobs[0];
        if len == whole {
            assert_eq!(job.status, JobStatus::Exited { code: 0 });
            continue;
        }
        assert_eq!(job.status, JobStatus::Lost, "at {len}");
        assert_eq!(job.lease, 5);
        assert!(
            job.start_reported && !job.outcome_sent,
            "its outcome is sent, its start never"
        );
        assert!(runner
            .start(5, sh("echo again"), vec![0], ends_in(1_000), None)
            .is_err());
        assert!(runner.poll().unwrap().is_empty(), "at {len}");
        assert_eq!(
            runner.get(5).unwrap().unwrap(),
            *job,
            "recorded as lost at {len}"
        );
    }
}

#[test]
fn a_running_job_whose_record_is_torn_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    runner
        .start(
            6,
            sh("sleep 30 & sleep 30; wait"),
            vec![0],
            ends_in(60_000),
            None,
        )
        .unwrap();
    let marker = format!(
        "GPUMARKET_EXIT_FILE={}",
        dir.path().join("jobs/6.exit").display()
    );
    // The wrapper, and the sleeps in its sandbox (as the job's uid) once forked.
    let uid = sandbox().uid_base;
    wait_until("the job's processes", || {
        running_with(&marker).len() == 1 && super::of_uid(uid) >= 2
    });
    let record = dir.path().join("jobs/6.json");
    let bytes = std::fs::read(&record).unwrap();
    std::fs::write(&record, &bytes[..bytes.len() / 2]).unwrap();
    let restarted = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    assert_eq!(restarted.get(6).unwrap().unwrap().status, JobStatus::Lost);
    wait_until("the job's processes killed", || {
        running_with(&marker).is_empty() && super::of_uid(uid) == 0
    });
    drop(runner);
}

/// The live processes whose environment holds `marker`.
fn running_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
        })
        .collect()
}

#[test]
fn a_torn_exit_file_makes_the_job_lost_never_completed() {
    let template = tempfile::tempdir().unwrap();
    let runner = Runner::open(template.path(), Vendor::Nvidia, &sandbox()).unwrap();
    let job = runner
        .start(3, sh("exit 3"), vec![0], ends_in(60_000), None)
        .unwrap();
    let JobStatus::Running { pid, .. } = job.status else {
        panic!("{job:?}")
    };
    // The wrapper has written the exit file and ended; the runner has not looked yet (and
    // keeps the process a zombie, so the pid is not reused).
    let exit = template.path().join("jobs/3.exit");
    wait_until("the exit file", || exit.exists() && !alive(pid));
    assert_eq!(std::fs::read(&exit).unwrap(), b"3\n");
    for len in 0..=2 {
        let copy = torn_copy(template.path(), "jobs/3.exit", len);
        let restarted = Runner::open(copy.path(), Vendor::Nvidia, &sandbox()).unwrap();
        restarted.poll().unwrap();
        let status = restarted.get(3).unwrap().unwrap().status;
        let expected = if len == 2 {
            JobStatus::Exited { code: 3 }
        } else {
            JobStatus::Lost
        };
        assert_eq!(status, expected, "at {len}");
    }
    for garbage in [&b"x\n"[..], b"-1\n", b"99999999999\n", b"3\n\n"] {
        let copy = torn_copy(template.path(), "jobs/3.exit", 2);
        std::fs::write(copy.path().join("jobs/3.exit"), garbage).unwrap();
        let restarted = Runner::open(copy.path(), Vendor::Nvidia, &sandbox()).unwrap();
        restarted.poll().unwrap();
        assert_eq!(
            restarted.get(3).unwrap().unwrap().status,
            JobStatus::Lost,
            "{garbage:?}"
        );
    }
    drop(runner);
}

#[test]
fn a_torn_ask_file_withdraws_the_nodes_asks_and_leaves_one() {
    let m = h100_market("agent_torn_ask");
    let offer =
        "[offer]\nprice = \"2.50\"\nvram_gb = 80\ninterconnect = \"nvlink\"\nvendor = \"nvidia\"\n";
    let depth = || {
        m.ok(
            &m.buyer,
            "{ depth(market: \"H100-80GB\") { asks { price gpus orders } } }",
            json!({}),
        )["depth"]["asks"]
            .clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut a = agent_offering(dir.path(), &m.url, &m.provider, "node-a", 100, offer);
    a.register().unwrap();
    assert_eq!(a.step().unwrap().asks_changed, 1);
    drop(a);
    let path = dir.path().join("state/ask.json");
    let whole = std::fs::read(&path).unwrap();
    for len in 0..whole.len() {
        // The asks placed so far are in the projections the agent reads them from.
        m.projected();
        std::fs::write(&path, &whole[..len]).unwrap();
        let mut a = agent_offering(dir.path(), &m.url, &m.provider, "node-a", 100, offer);
        let step = a.step().unwrap();
        assert_eq!(step.asks_changed, 1, "a new ask at {len}");
        assert_eq!(
            depth(),
            json!([{"price": "2.500000", "gpus": 2, "orders": 1}]),
            "one ask at {len}"
        );
    }
    // While the API is away the damaged file waits for it: nothing is lost, nothing placed.
    std::fs::write(&path, &whole[..5]).unwrap();
    let mut a = agent_offering(dir.path(), AWAY, &m.provider, "node-a", 100, offer);
    assert_eq!(a.step().unwrap().asks_changed, 0);
    assert_eq!(std::fs::read(&path).unwrap(), &whole[..5]);
}

#[test]
fn a_torn_known_leases_file_is_read_as_none_until_the_market_answers() {
    let template = tempfile::tempdir().unwrap();
    drop(agent(template.path(), AWAY, "gpm_1_x", "node-l", 100));
    // What an agent that read the market knew: one lease with no job yet.
    let leases = json!([{"id": 3, "gpus": 1, "ends_at": "2099-01-01T00:00:00Z", "job": false}]);
    let file = "state/leases.json";
    std::fs::write(template.path().join(file), leases.to_string()).unwrap();
    let whole = file_len(&template.path().join(file));
    for len in 0..=whole {
        let copy = torn_copy(template.path(), file, len);
        let mut a = agent(copy.path(), AWAY, "gpm_1_x", "node-l", 100);
        let listed = if len == whole { vec![3] } else { vec![] };
        assert_eq!(
            a.step().unwrap().healthy_leases,
            Some(listed),
            "while the market is away, at {len}"
        );
    }
}
