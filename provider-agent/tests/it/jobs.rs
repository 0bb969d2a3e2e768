//! The job runner with real child processes: success, crash, the lease's end, the market
//! ending the lease, and an agent restart in the middle of a job.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use provider_agent::jobs::{deadline_reason, Job, JobSpec, JobStatus, Runner, Vendor};

use super::{alive, sandbox, wait_until};

fn sh(script: &str) -> JobSpec {
    JobSpec {
        command: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: BTreeMap::from([("FOO".to_owned(), "bar".to_owned())]),
        ..JobSpec::default()
    }
}

/// The lease's end, `millis` from now.
pub fn ends_in(millis: i64) -> DateTime<Utc> {
    Utc::now() + TimeDelta::milliseconds(millis)
}

/// Polls until the lease's job is over.
pub fn finished(runner: &Runner, lease: u64) -> Job {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        runner.poll().unwrap();
        let job = runner.get(lease).unwrap().unwrap();
        if job.status.is_over() {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {lease} still {:?}",
            job.status
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid(job: &Job) -> u32 {
    match job.status {
        JobStatus::Running { pid, .. } => pid,
        _ => panic!("not running: {job:?}"),
    }
}

/// The fields of `/proc/PID/stat` after the command name, if the process exists.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// The live (not zombie) processes of the job whose wrapper leads process group `group`:
/// the group's, and the wrapper's descendants (the sandbox runs the job in a session and pid
/// namespace of its own, under the wrapper).
pub fn group_left(group: u32) -> usize {
    let live: Vec<(u32, Vec<String>)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat_fields(pid)?)))
        .filter(|(_, f)| f.first().map(String::as_str) != Some("Z"))
        .collect();
    let mut found: Vec<u32> = live
        .iter()
        .filter(|(_, f)| f.get(2) == Some(&group.to_string()))
        .map(|(pid, _)| *pid)
        .collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i].to_string();
        for (pid, f) in &live {
            if f.get(1) == Some(&parent) && !found.contains(pid) {
                found.push(*pid);
            }
        }
        i += 1;
    }
    found.len()
}

#[test]
fn a_job_sees_only_its_gpus_and_its_output_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    let script =
        "echo hello; echo gpus=$CUDA_VISIBLE_DEVICES; echo foo=$FOO lease=$GPUMARKET_LEASE";
    runner
        .start(1, sh(script), vec![0, 2], ends_in(60_000), None)
        .unwrap();
    let job = finished(&runner, 1);
    assert_eq!(job.status, JobStatus::Exited { code: 0 });
    assert_eq!(job.outcome().as_deref(), Some("exited 0"));
    let log = std::fs::read_to_string(runner.log_path(1)).unwrap();
    assert_eq!(log, "hello\ngpus=0,2\nfoo=bar lease=1\n");

    let amd = Runner::open(&dir.path().join("amd"), Vendor::Amd, &sandbox()).unwrap();
    amd.start(
        2,
        sh("echo $HIP_VISIBLE_DEVICES $ROCR_VISIBLE_DEVICES"),
        vec![1],
        ends_in(60_000),
        None,
    )
    .unwrap();
    finished(&amd, 2);
    assert_eq!(std::fs::read_to_string(amd.log_path(2)).unwrap(), "1 1\n");
}

#[test]
fn a_crashing_job_reports_its_status_and_never_runs_twice() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    runner
        .start(
            7,
            sh("echo dying >&2; exit 3"),
            vec![0],
            ends_in(60_000),
            None,
        )
        .unwrap();
    assert_eq!(finished(&runner, 7).status, JobStatus::Exited { code: 3 });
    assert_eq!(
        std::fs::read_to_string(runner.log_path(7)).unwrap(),
        "dying\n"
    );
    let again = runner.start(7, sh("echo twice"), vec![0], ends_in(60_000), None);
    assert!(again.unwrap_err().to_string().contains("never runs twice"));
    let missing = runner
        .start(
            8,
            JobSpec {
                command: "/nonexistent/binary".into(),
                ..JobSpec::default()
            },
            vec![0],
            ends_in(60_000),
            None,
        )
        .unwrap();
    assert!(matches!(missing.status, JobStatus::Running { .. }));
    assert_eq!(
        finished(&runner, 8).status,
        JobStatus::Exited { code: 1 },
        "bubblewrap's 'not found'"
    );
    assert!(std::fs::read_to_string(runner.log_path(8))
        .unwrap()
        .contains("No such file"));
}

#[test]
fn a_job_still_running_at_its_lease_end_is_killed_with_its_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    // One job ends on SIGTERM (and says so); the other ignores it, and so do the children it
    // forked, which only SIGKILL after the grace stops.
    let polite = "trap 'echo term; exit 0' TERM; sleep 30 & wait $!";
    let stubborn = "trap '' TERM; sleep 30 & sleep 30 & wait";
    let ends_at = ends_in(300);
    let jobs = [
        runner.start(3, sh(polite), vec![0], ends_at, None).unwrap(),
        runner
            .start(4, sh(stubborn), vec![1], ends_at, None)
            .unwrap(),
    ];
    for job in &jobs {
        assert_eq!(job.deadline_ms, ends_at.timestamp_millis() as u64);
        let group = pid(job);
        wait_until("the job's children", || group_left(group) >= 3);
    }
    for job in &jobs {
        let ended = finished(&runner, job.lease);
        assert_eq!(
            ended.status,
            JobStatus::Killed {
                reason: deadline_reason(ends_at.timestamp_millis() as u64)
            }
        );
        assert_eq!(
            ended.outcome().unwrap(),
            format!(
                "killed: the lease ended at {}",
                ends_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )
        );
        assert_eq!(
            group_left(pid(job)),
            0,
            "no process of lease {}'s group is left",
            job.lease
        );
        assert_eq!(
            super::of_uid(job.uid.unwrap()),
            0,
            "nothing runs as its uid"
        );
    }
    // The shell may also say its background sleep was "Terminated".
    let log = std::fs::read_to_string(runner.log_path(3)).unwrap();
    assert!(
        log.lines().any(|l| l == "term"),
        "SIGTERM came first: {log:?}"
    );
    assert!(
        runner.poll().unwrap().is_empty(),
        "killed once, recorded once"
    );
}

#[test]
fn a_job_that_ends_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    let job = runner
        .start(
            9,
            sh("sleep 30 & echo forked"),
            vec![0],
            ends_in(60_000),
            None,
        )
        .unwrap();
    let ended = finished(&runner, 9);
    assert_eq!(ended.status, JobStatus::Exited { code: 0 });
    assert_eq!(group_left(pid(&job)), 0, "the forked sleep is stopped too");
}

#[test]
fn a_lease_the_market_ended_stops_its_job_and_frees_its_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    let job = runner
        .start(4, sh("sleep 30 & sleep 30"), vec![0], ends_in(60_000), None)
        .unwrap();
    let now_ms = Utc::now().timestamp_millis() as u64;
    assert!(job.holds_gpus(now_ms));
    let ended = runner.lease_ended(4).unwrap().unwrap();
    assert_eq!(
        ended.status,
        JobStatus::Killed {
            reason: "the lease ended in the market".into()
        }
    );
    assert!(ended.lease_ended && !ended.holds_gpus(now_ms));
    assert_eq!(group_left(pid(&job)), 0);
    assert_eq!(
        super::of_uid(job.uid.unwrap()),
        0,
        "nothing runs as the job's uid"
    );
    assert_eq!(runner.get(4).unwrap().unwrap(), ended, "recorded");
    assert!(runner.lease_ended(99).unwrap().is_none());
}

#[test]
fn a_job_whose_process_is_gone_without_an_exit_status_is_lost_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let job = {
        let runner = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
        let job = runner
            .start(5, sh("sleep 30"), vec![0], ends_in(60_000), None)
            .unwrap();
        wait_until("the job's sleep", || group_left(pid(&job)) >= 2);
        job
        // The agent dies here, with its runner; the job goes on without it.
    };
    // The wrapper that would have written the exit status is killed (as a reboot or the
    // OOM killer would); the job's own process lives on.
    let wrapper = rustix::process::Pid::from_raw(pid(&job) as i32).unwrap();
    rustix::process::kill_process(wrapper, rustix::process::Signal::KILL).unwrap();
    wait_until("the wrapper gone", || !alive(pid(&job)));
    // The sandbox dies with its wrapper (`--die-with-parent`), unless the wrapper died before
    // bubblewrap could ask for that: then the sandbox's monitor lives on in the job's group.

    let restarted = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    let changed = restarted.poll().unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].status, JobStatus::Lost, "never completed");
    assert_eq!(changed[0].outcome().as_deref(), Some("lost"));
    assert!(!dir.path().join("jobs/5.exit").exists());
    assert_eq!(group_left(pid(&job)), 0, "what it left running is stopped");
    assert_eq!(super::of_uid(job.uid.unwrap()), 0);
    assert!(restarted
        .start(5, sh("echo again"), vec![0], ends_in(60_000), None)
        .is_err());
    assert_eq!(
        Runner::open(dir.path(), Vendor::Nvidia, &sandbox())
            .unwrap()
            .get(5)
            .unwrap()
            .unwrap()
            .status,
        JobStatus::Lost,
        "recorded"
    );
}

#[test]
fn a_pid_given_to_another_process_is_not_taken_for_the_job_nor_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    let job = runner
        .start(6, sh("exit 0"), vec![0], ends_in(60_000), None)
        .unwrap();
    let JobStatus::Running { since, .. } = &job.status else {
        panic!("{job:?}")
    };
    let mut since = since.clone().expect("the process's start is recorded");
    finished(&runner, 6);
    // The recorded process started before the one that has its pid now.
    since.ticks -= 1;
    // Another process, leading its own group, now has the pid the record names (as after
    // the pid wrapped around while the agent was down).
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    let stale = serde_json::json!({"lease": 6, "spec": {"command": "/bin/true"}, "gpus": [0],
        "started_ms": 1, "deadline_ms": 2, "start_reported": true,
        "status": {"running": {"pid": other.id(), "since": since}}});
    std::fs::write(dir.path().join("jobs/6.json"), stale.to_string()).unwrap();
    std::fs::remove_file(dir.path().join("jobs/6.exit")).unwrap();
    let restarted = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    restarted.poll().unwrap();
    assert_eq!(restarted.get(6).unwrap().unwrap().status, JobStatus::Lost);
    assert_eq!(
        other.try_wait().unwrap(),
        None,
        "the other process runs on, unsignalled"
    );
    other.kill().unwrap();
    other.wait().unwrap();
}

#[test]
fn a_restarted_agent_finds_its_jobs_and_runs_none_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let runner = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
        runner
            .start(5, sh("sleep 0.5; exit 7"), vec![0], ends_in(60_000), None)
            .unwrap();
        // The agent dies here; the job goes on without it.
    }
    // A crash between recording a job and spawning it leaves it `starting`.
    let starting = serde_json::json!({"lease": 6, "spec": {"command": "/bin/true"}, "gpus": [0],
        "started_ms": 1, "deadline_ms": 2, "status": "starting"});
    std::fs::write(dir.path().join("jobs/6.json"), starting.to_string()).unwrap();

    let restarted = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    assert_eq!(
        finished(&restarted, 5).status,
        JobStatus::Exited { code: 7 },
        "its exit file tells how it ended"
    );
    assert_eq!(restarted.get(6).unwrap().unwrap().status, JobStatus::Lost);
    assert!(restarted
        .start(6, sh("echo again"), vec![0], ends_in(1_000), None)
        .is_err());
    assert!(
        !dir.path().join("jobs/6.log").exists(),
        "the lost job was not run"
    );

    // Its outcome is sent once: the mark survives another restart.
    restarted.mark_outcome_sent(5).unwrap();
    let again = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    assert!(again.get(5).unwrap().unwrap().outcome_sent);
    assert!(
        again.poll().unwrap().is_empty(),
        "nothing changes for ended jobs"
    );
}

#[test]
fn a_record_from_before_the_lease_meter_reads_its_end_as_sent() {
    // Written by an agent that ended leases itself (`end_reported`) and knew no process
    // start: still read, and not sent again.
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    let old = serde_json::json!({"lease": 2, "spec": {"command": "/bin/true"}, "gpus": [1],
        "started_ms": 1, "deadline_ms": 2, "status": {"exited": {"code": 0}},
        "start_reported": true, "end_reported": true});
    std::fs::write(dir.path().join("jobs/2.json"), old.to_string()).unwrap();
    let job = runner.get(2).unwrap().unwrap();
    assert!(job.outcome_sent && !job.lease_ended);
    assert_eq!(job.status, JobStatus::Exited { code: 0 });
}
