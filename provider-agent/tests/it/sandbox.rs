//! The sandbox, for real (bubblewrap on this machine): a job reaches nothing of the agent,
//! the host or other jobs, opens only its leased GPUs' devices, has no network, and cannot
//! outlive its lease; its own work succeeds and its output comes back.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use provider_agent::jobs::{JobError, JobSpec, JobStatus, Runner, Vendor};
use provider_agent::keys;
use provider_agent::sandbox::SandboxConfig;

use super::jobs::{ends_in, finished};
use super::{of_uid, sandbox, wait_until};

fn sh(script: &str) -> JobSpec {
    JobSpec::new("/bin/sh", &["-c", script])
}

fn log(runner: &Runner, lease: u64) -> String {
    std::fs::read_to_string(runner.log_path(lease)).unwrap()
}

/// The processes whose command line contains `needle`.
fn running(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| super::alive(*pid))
        .filter(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .collect()
}

#[test]
fn a_job_reaches_nothing_of_the_agent_the_host_or_other_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // What a provider's node holds: its signing key, its API key, its configuration.
    let node_key = keys::load_or_create(&state.join("node.key")).unwrap();
    let node_key_hex = keys::hex(node_key.as_bytes());
    std::fs::write(
        dir.path().join("provider.key"),
        "gpm_provider_SECRET_KEY_42",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("agent.toml"),
        "api_key_file = \"provider.key\"",
    )
    .unwrap();
    std::env::set_var("DATABASE_URL", "postgres://secret-db-url");
    let runner = Runner::open(&state, Vendor::Nvidia, &sandbox()).unwrap();

    // Another buyer's job leaves a file in its work directory and keeps running.
    runner
        .start(
            1,
            sh("echo other-buyers-data > /job/private; sleep 30"),
            vec![0],
            ends_in(60_000),
            None,
        )
        .unwrap();
    wait_until("the other job's file", || {
        runner.work_dir(1).join("private").exists()
    });
    let state_s = state.display().to_string();
    let spy = format!(
        "for f in {state_s}/node.key {state_s}/../provider.key {state_s}/../agent.toml \
         {state_s}/jobs/1.json {state_s}/sandbox/1/work/private /etc/passwd /etc/shadow \
         /root /home; do \
           if cat $f 2>/dev/null; then echo READ $f; else echo denied $f; fi; \
         done; \
         env; tr '\\0' '\\n' < /proc/1/environ; id -u; ls /; \
         if touch /usr/planted 2>/dev/null; then echo WROTE /usr; else echo ro /usr; fi; \
         ls /proc | grep -c '^[0-9]' ; \
         mkdir -p /job/out && echo result > /job/out/answer.txt && echo own work done"
    );
    runner
        .start(2, sh(&spy), vec![1], ends_in(60_000), None)
        .unwrap();
    let job = finished(&runner, 2);
    let out = log(&runner, 2);
    assert_eq!(job.status, JobStatus::Exited { code: 0 }, "{out}");
    for secret in [
        node_key_hex.as_str(),
        "SECRET_KEY_42",
        "api_key_file",
        "other-buyers-data",
        "secret-db-url",
        "\"lease\"",
        "root:",
    ] {
        assert!(!out.contains(secret), "the job read {secret:?}: {out}");
    }
    assert!(!out.contains("READ "), "{out}");
    assert!(
        out.contains("ro /usr"),
        "the image root is read-only: {out}"
    );
    assert!(out.contains("own work done"), "{out}");
    // Its environment is what the job spec and the agent's visible-devices set, only.
    let env: Vec<&str> = out
        .lines()
        .filter(|l| l.contains('=') && !l.contains(' '))
        .collect();
    for var in &env {
        let name = var.split('=').next().unwrap();
        assert!(
            [
                "PATH",
                "HOME",
                "PWD",
                "SHLVL",
                "GPUMARKET_LEASE",
                "CUDA_VISIBLE_DEVICES",
                "NVIDIA_VISIBLE_DEVICES",
                "_",
                "OLDPWD"
            ]
            .contains(&name),
            "unexpected variable {var} in {out}"
        );
    }
    assert!(env.contains(&"CUDA_VISIBLE_DEVICES=1"), "{out}");
    // Its own uid (root agent: the base plus its lowest GPU), and pid 1 of its own.
    let uid = sandbox().uid_base + 1;
    assert!(out.lines().any(|l| l == uid.to_string()), "{out}");
    let work = runner.work_dir(2);
    assert_eq!(std::fs::metadata(&work).unwrap().uid(), uid);
    assert_eq!(
        std::fs::metadata(&work).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Its output is where the agent collects it.
    assert_eq!(
        std::fs::read_to_string(work.join("out/answer.txt")).unwrap(),
        "result\n"
    );
    runner.lease_ended(1).unwrap();
}

#[test]
fn a_job_opens_only_the_devices_of_its_leased_gpus() {
    let dir = tempfile::tempdir().unwrap();
    // Simulated device nodes, as a host's /dev has them.
    let dev = dir.path().join("dev");
    std::fs::create_dir_all(dev.join("dri")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o755)).unwrap();
    for node in [
        "nvidia0",
        "nvidia1",
        "nvidia2",
        "nvidia3",
        "nvidiactl",
        "nvidia-uvm",
        "kfd",
        "dri/renderD128",
        "dri/renderD129",
    ] {
        let path = dev.join(node);
        std::fs::write(&path, format!("device {node}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    std::fs::set_permissions(dev.join("dri"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = SandboxConfig {
        dev_dir: dev.clone(),
        ..sandbox()
    };
    // A node reached is the host's file (it says its name); one not bound is absent, and
    // /dev is read-only, so none can be made either.
    let probe = "for d in nvidia0 nvidia1 nvidia2 nvidia3 nvidiactl nvidia-uvm kfd \
                 dri/renderD128 dri/renderD129; do \
                   cat /dev/$d 2>/dev/null || echo no $d; \
                   echo planted >> /dev/$d 2>/dev/null; \
                 done; true";
    let nvidia = Runner::open(&dir.path().join("n"), Vendor::Nvidia, &config).unwrap();
    nvidia
        .start(1, sh(probe), vec![1, 2], ends_in(60_000), None)
        .unwrap();
    assert_eq!(finished(&nvidia, 1).status, JobStatus::Exited { code: 0 });
    let out = log(&nvidia, 1);
    for open in ["nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"] {
        assert!(out.contains(&format!("device {open}\n")), "{open}: {out}");
    }
    for closed in ["nvidia0", "nvidia3", "kfd", "dri/renderD128"] {
        assert!(out.contains(&format!("no {closed}\n")), "{closed}: {out}");
    }
    for untouched in ["nvidia0", "nvidia3", "kfd"] {
        assert_eq!(
            std::fs::read_to_string(dev.join(untouched)).unwrap(),
            format!("device {untouched}\n")
        );
    }

    let amd = Runner::open(&dir.path().join("a"), Vendor::Amd, &config).unwrap();
    amd.start(2, sh(probe), vec![1], ends_in(60_000), None)
        .unwrap();
    assert_eq!(finished(&amd, 2).status, JobStatus::Exited { code: 0 });
    let out = log(&amd, 2);
    for open in ["kfd", "dri/renderD129"] {
        assert!(out.contains(&format!("device {open}\n")), "{open}: {out}");
    }
    for closed in ["dri/renderD128", "nvidia1", "nvidiactl"] {
        assert!(out.contains(&format!("no {closed}\n")), "{closed}: {out}");
    }
}

#[test]
fn a_job_reaches_no_network_unless_it_asks_and_the_provider_allows_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    let dial = format!(
        "if /bin/bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' 2>/dev/null; \
         then echo connected; else echo unreachable; fi"
    );
    runner
        .start(1, sh(&dial), vec![0], ends_in(60_000), None)
        .unwrap();
    finished(&runner, 1);
    assert_eq!(log(&runner, 1), "unreachable\n");
    assert!(listener.accept().is_err(), "nothing arrived from the job");

    let open = SandboxConfig {
        network: true,
        ..sandbox()
    };
    let allowed = Runner::open(&dir.path().join("net"), Vendor::Nvidia, &open).unwrap();
    // Offered, but not asked for: still none.
    allowed
        .start(2, sh(&dial), vec![0], ends_in(60_000), None)
        .unwrap();
    finished(&allowed, 2);
    assert_eq!(log(&allowed, 2), "unreachable\n");
    let asking = JobSpec {
        network: true,
        ..sh(&dial)
    };
    allowed
        .start(3, asking, vec![0], ends_in(60_000), None)
        .unwrap();
    finished(&allowed, 3);
    assert_eq!(log(&allowed, 3), "connected\n");
}

#[test]
fn a_job_cannot_outlive_its_lease_by_setsid_or_a_double_fork() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &sandbox()).unwrap();
    let escape = "setsid sleep 301 & (sleep 302 &) ; nohup sleep 303 >/dev/null 2>&1 & \
                  echo escaped; sleep 300";
    let job = runner
        .start(4, sh(escape), vec![2], ends_in(1_500), None)
        .unwrap();
    wait_until("the escapes", || {
        ["sleep 301", "sleep 302", "sleep 303"]
            .iter()
            .all(|s| !running(s).is_empty())
    });
    let ended = finished(&runner, 4);
    assert!(
        matches!(ended.status, JobStatus::Killed { .. }),
        "{ended:?}"
    );
    wait_until("every process of the job gone", || {
        ["sleep 300", "sleep 301", "sleep 302", "sleep 303"]
            .iter()
            .all(|s| running(s).is_empty())
    });
    assert_eq!(of_uid(job.uid.expect("a root agent's job has its uid")), 0);
}

#[test]
fn a_job_runs_from_its_image_root_and_nothing_of_the_host() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny image root: Debian's busybox-static and its applets.
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    for applet in ["sh", "ls", "cat", "echo", "head"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/motd"), "from the image\n").unwrap();
    for d in [
        dir.path(),
        root.as_path(),
        &root.join("bin"),
        &root.join("etc"),
    ] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let runner = Runner::open(&dir.path().join("state"), Vendor::Nvidia, &sandbox()).unwrap();
    runner
        .start(
            5,
            sh("cat /etc/motd; ls /; ls /usr 2>&1 | head -1; echo > /etc/x || echo read-only"),
            vec![0],
            ends_in(60_000),
            Some(&root),
        )
        .unwrap();
    finished(&runner, 5);
    let out = log(&runner, 5);
    assert!(out.starts_with("from the image\n"), "{out}");
    assert!(
        !out.contains("usr\n"),
        "no host /usr in the image's root: {out}"
    );
    assert!(out.contains("read-only"), "{out}");
}

#[test]
fn without_a_working_sandbox_no_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let missing = SandboxConfig {
        bwrap: Path::new("/nonexistent/bwrap").into(),
        ..sandbox()
    };
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &missing).unwrap();
    let refused = runner
        .start(1, sh("echo ran"), vec![0], ends_in(60_000), None)
        .unwrap_err();
    assert!(matches!(refused, JobError::NoSandbox(_)), "{refused:?}");
    assert!(
        refused.to_string().contains("never run unsandboxed"),
        "{refused}"
    );
    assert!(
        runner.get(1).unwrap().is_none(),
        "nothing recorded, nothing ran"
    );
}

/// Under podman, for real where podman and runc are installed (`scripts/test` installs
/// them; crun, podman's default, cannot run on this machine's hybrid control groups): the
/// job runs from a read-only root as its own uid, writes its output, and is stopped with its
/// container at its lease's end. Where they are not, the agent refuses every job, saying why.
#[test]
fn an_oci_runtime_runs_jobs_where_it_can_and_is_refused_where_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let installed = |b: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let runnable = installed("podman") && installed("runc");
    let podman = SandboxConfig {
        runtime: provider_agent::sandbox::Runtime::Podman,
        runtime_options: vec!["--runtime=runc".to_owned()],
        ..sandbox()
    };
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &podman).unwrap();
    let script = "cat /etc/hostname 2>&1; id -u; touch /usr/x 2>&1 || echo usr-read-only; \
                  mkdir -p /job/out && echo frame > /job/out/0001.txt";
    assert_eq!(runner.sandbox().is_ok(), runnable, "{:?}", runner.sandbox());
    match runner.sandbox() {
        Err(why) => {
            eprintln!("podman cannot run jobs here: {why}");
            assert!(why.to_string().contains("podman"), "{why}");
            let refused = runner
                .start(1, sh(script), vec![0], ends_in(60_000), None)
                .unwrap_err();
            assert!(matches!(refused, JobError::NoSandbox(_)), "{refused:?}");
            assert!(runner.get(1).unwrap().is_none(), "nothing ran");
        }
        Ok(()) => {
            // No GPU: this host has no NVIDIA container toolkit to give one (CDI).
            runner
                .start(1, sh(script), vec![], ends_in(60_000), None)
                .unwrap();
            let job = finished(&runner, 1);
            let out = log(&runner, 1);
            assert_eq!(job.status, JobStatus::Exited { code: 0 }, "{out}");
            assert!(out.contains("usr-read-only"), "{out}");
            if let Some(uid) = job.uid {
                assert!(out.contains(&format!("{uid}\n")), "its own uid: {out}");
            }
            assert_eq!(
                std::fs::read_to_string(runner.work_dir(1).join("out/0001.txt")).unwrap(),
                "frame\n"
            );
            // A job past its lease's end is stopped with its container.
            runner
                .start(2, sh("sleep 600"), vec![], ends_in(1_000), None)
                .unwrap();
            let job = finished(&runner, 2);
            assert!(matches!(job.status, JobStatus::Killed { .. }), "{job:?}");
            assert!(running("sleep 600").is_empty(), "the container is gone");
        }
    }
}

/// Memory, processes and disk: held by the job's control groups where the host has them
/// (this one: cgroup v1 memory and pids, the agent root), else by rlimits; disk by the
/// agent's look under `/job`.
#[test]
fn a_job_is_held_to_its_memory_process_and_disk_limits() {
    let dir = tempfile::tempdir().unwrap();
    let limited = SandboxConfig {
        max_memory_mb: Some(64),
        max_processes: 16,
        max_disk_mb: 2,
        ..sandbox()
    };
    let runner = Runner::open(dir.path(), Vendor::Nvidia, &limited).unwrap();
    let grouped = rustix::process::geteuid().is_root()
        && provider_agent::cgroups::Cgroups::detect(Path::new("/sys/fs/cgroup")).is_some();

    // Within the limit, the work is done; past it, the job is stopped and told why.
    runner
        .start(
            1,
            sh("dd if=/dev/zero of=/dev/null bs=16M count=1 2>/dev/null && echo fits"),
            vec![0],
            ends_in(60_000),
            None,
        )
        .unwrap();
    assert_eq!(finished(&runner, 1).status, JobStatus::Exited { code: 0 });
    assert_eq!(log(&runner, 1), "fits\n");
    runner
        .start(
            2,
            sh("dd if=/dev/zero of=/dev/null bs=300M count=1 2>/dev/null && echo too-much"),
            vec![1],
            ends_in(60_000),
            None,
        )
        .unwrap();
    let job = finished(&runner, 2);
    assert!(!log(&runner, 2).contains("too-much"));
    if grouped {
        assert!(
            matches!(&job.status, JobStatus::Killed { reason } if reason.contains("64 MiB of memory")),
            "{job:?}"
        );
    } else {
        assert!(
            !matches!(job.status, JobStatus::Exited { code: 0 }),
            "{job:?}"
        );
    }

    // No more processes than the limit, however it forks: the shell counts its forks in a
    // file (a builtin, no process) until one fails.
    runner
        .start(
            3,
            sh("i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); echo $i > /job/forks; done"),
            vec![2],
            ends_in(3_000),
            None,
        )
        .unwrap();
    let job = finished(&runner, 3);
    let forks: u32 = std::fs::read_to_string(runner.work_dir(3).join("forks"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((1..16).contains(&forks), "{forks} forks: {job:?}");

    // More than 2 MiB under /job: stopped at the agent's next look.
    runner
        .start(
            4,
            sh("dd if=/dev/zero of=/job/big bs=1M count=8 2>/dev/null; sleep 60"),
            vec![3],
            ends_in(60_000),
            None,
        )
        .unwrap();
    let job = finished(&runner, 4);
    assert!(
        matches!(&job.status, JobStatus::Killed { reason } if reason.contains("2 MiB under /job")),
        "{job:?}"
    );
    if grouped {
        // The groups are named by the agent's state directory and the lease, and removed.
        let scope = contract::Digest::of(
            std::fs::canonicalize(dir.path())
                .unwrap()
                .as_os_str()
                .as_encoded_bytes(),
        )
        .cid();
        for lease in 1..=4 {
            for hierarchy in ["memory", "pids"] {
                let group = format!(
                    "/sys/fs/cgroup/{hierarchy}/gpumarket/gpumarket-{}-lease-{lease}",
                    &scope[scope.len() - 12..]
                );
                assert!(!Path::new(&group).exists(), "{group} removed");
            }
        }
    }
}
