//! The job runner with real child processes: success, crash, overtime, cancel, and an agent
//! restart in the middle of a job.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use provider_agent::jobs::{Job, JobSpec, JobStatus, Runner, Vendor};

fn sh(script: &str) -> JobSpec {
    JobSpec {
        command: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: BTreeMap::from([("FOO".to_owned(), "bar".to_owned())]),
    }
}

/// Polls until the lease's job is over.
fn finished(runner: &Runner, lease: u64) -> Job {
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

#[test]
fn a_job_sees_only_its_gpus_and_its_output_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia).unwrap();
    let script =
        "echo hello; echo gpus=$CUDA_VISIBLE_DEVICES; echo foo=$FOO lease=$GPUMARKET_LEASE";
    runner
        .start(1, sh(script), vec![0, 2], Duration::from_secs(60))
        .unwrap();
    assert_eq!(finished(&runner, 1).status, JobStatus::Exited { code: 0 });
    let log = std::fs::read_to_string(runner.log_path(1)).unwrap();
    assert_eq!(log, "hello\ngpus=0,2\nfoo=bar lease=1\n");

    let amd = Runner::open(&dir.path().join("amd"), Vendor::Amd).unwrap();
    amd.start(
        2,
        sh("echo $HIP_VISIBLE_DEVICES $ROCR_VISIBLE_DEVICES"),
        vec![1],
        Duration::from_secs(60),
    )
    .unwrap();
    finished(&amd, 2);
    assert_eq!(std::fs::read_to_string(amd.log_path(2)).unwrap(), "1 1\n");
}

#[test]
fn a_crashing_job_reports_its_status_and_never_runs_twice() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia).unwrap();
    runner
        .start(
            7,
            sh("echo dying >&2; exit 3"),
            vec![0],
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(finished(&runner, 7).status, JobStatus::Exited { code: 3 });
    assert_eq!(
        std::fs::read_to_string(runner.log_path(7)).unwrap(),
        "dying\n"
    );
    let again = runner.start(7, sh("echo twice"), vec![0], Duration::from_secs(60));
    assert!(again.unwrap_err().to_string().contains("never runs twice"));
    let missing = runner
        .start(
            8,
            JobSpec {
                command: "/nonexistent/binary".into(),
                args: vec![],
                env: BTreeMap::new(),
            },
            vec![0],
            Duration::from_secs(60),
        )
        .unwrap();
    assert!(matches!(missing.status, JobStatus::Running { .. }));
    assert_eq!(
        finished(&runner, 8).status,
        JobStatus::Exited { code: 127 },
        "the shell's 'not found'"
    );
}

#[test]
fn a_job_over_its_time_is_killed_with_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia).unwrap();
    let job = runner
        .start(
            3,
            sh("sleep 30 & sleep 30; wait"),
            vec![0],
            Duration::from_millis(300),
        )
        .unwrap();
    let JobStatus::Running { pid } = job.status else {
        panic!("{job:?}")
    };
    let ended = finished(&runner, 3);
    assert_eq!(
        ended.status,
        JobStatus::Killed {
            reason: "the lease's time ran out".into()
        }
    );
    assert!(
        ended.hours_used(u64::MAX) > 0.0
            && ended.hours_used(u64::MAX) <= 300.0 / 3_600_000.0 + 1e-6
    );
    std::thread::sleep(Duration::from_millis(100));
    runner.poll().unwrap();
    let group_left = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                let fields: Vec<&str> = s
                    .rsplit_once(')')
                    .map_or("", |(_, r)| r)
                    .split_whitespace()
                    .collect();
                fields.get(2) == Some(&pid.to_string().as_str()) && fields.first() != Some(&"Z")
            })
        })
        .count();
    assert_eq!(group_left, 0, "no process of the job's group is left");
}

#[test]
fn a_cancelled_lease_stops_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia).unwrap();
    runner
        .start(4, sh("sleep 30"), vec![0], Duration::from_secs(60))
        .unwrap();
    let job = runner.cancel(4).unwrap().unwrap();
    assert_eq!(
        job.status,
        JobStatus::Killed {
            reason: "the lease was cancelled".into()
        }
    );
    assert!(runner.cancel(99).unwrap().is_none());
}

#[test]
fn a_restarted_agent_finds_its_jobs_and_runs_none_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let runner = Runner::open(dir.path(), Vendor::Nvidia).unwrap();
        runner
            .start(5, sh("sleep 0.5; exit 7"), vec![0], Duration::from_secs(60))
            .unwrap();
        // The agent dies here; the job goes on without it.
    }
    // A crash between recording a job and spawning it leaves it `starting`.
    let starting = serde_json::json!({"lease": 6, "spec": {"command": "/bin/true"}, "gpus": [0],
        "started_ms": 1, "deadline_ms": 2, "status": "starting"});
    std::fs::write(dir.path().join("jobs/6.json"), starting.to_string()).unwrap();

    let restarted = Runner::open(dir.path(), Vendor::Nvidia).unwrap();
    assert_eq!(
        finished(&restarted, 5).status,
        JobStatus::Exited { code: 7 }
    );
    assert_eq!(restarted.get(6).unwrap().unwrap().status, JobStatus::Lost);
    assert!(restarted
        .start(6, sh("echo again"), vec![0], Duration::from_secs(1))
        .is_err());
    assert!(
        !dir.path().join("jobs/6.log").exists(),
        "the lost job was not run"
    );

    // Its end is reported once: the mark survives another restart.
    restarted.mark_reported(5).unwrap();
    let again = Runner::open(dir.path(), Vendor::Nvidia).unwrap();
    assert!(again.get(5).unwrap().unwrap().end_reported);
    assert!(
        again.poll().unwrap().is_empty(),
        "nothing changes for ended jobs"
    );
}
