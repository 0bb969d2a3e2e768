//! Each job's control groups, where the host has them and the agent is root: a memory limit
//! that counts what the job really uses (unlike `RLIMIT_DATA`, which GPU runtimes' address
//! space reservations exhaust), a process limit for the whole job (not per uid), and a
//! certain end: every process in the group is killed by the group, wherever it went.
//!
//! cgroup v2 (`cgroup.controllers` naming `memory` or `pids`, at `/sys/fs/cgroup` or the
//! hybrid `/sys/fs/cgroup/unified`) is used where it has the controllers; else the v1
//! `memory` and `pids` hierarchies. A job's group is `gpumarket/NAME` under each, NAME being
//! its unit's name ([`crate::sandbox::Sandbox::unit`]: the agent's and the lease's).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where a job's groups are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// One v2 hierarchy with these controllers (of `memory` and `pids`).
    V2 {
        root: PathBuf,
        memory: bool,
        pids: bool,
    },
    /// v1 hierarchies, one per controller.
    V1 {
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
}

/// What a job's groups hold it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub processes: u64,
}

impl Cgroups {
    /// The hierarchies under `base` (`/sys/fs/cgroup` on a host) an agent can make groups
    /// in; `None` where there are none it may write.
    pub fn detect(base: &Path) -> Option<Cgroups> {
        for root in [base.to_owned(), base.join("unified")] {
            let Ok(controllers) = fs::read_to_string(root.join("cgroup.controllers")) else {
                continue;
            };
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if has("memory") || has("pids") {
                return Some(Cgroups::V2 {
                    memory: has("memory"),
                    pids: has("pids"),
                    root,
                });
            }
        }
        let v1 = |c: &str| {
            let dir = base.join(c);
            dir.join("cgroup.procs").exists().then_some(dir)
        };
        let (memory, pids) = (v1("memory"), v1("pids"));
        (memory.is_some() || pids.is_some()).then_some(Cgroups::V1 { memory, pids })
    }

    /// The job's group directories, one per hierarchy.
    fn dirs(&self, unit: &str) -> Vec<PathBuf> {
        let name = format!("gpumarket/{unit}");
        match self {
            Cgroups::V2 { root, .. } => vec![root.join(name)],
            Cgroups::V1 { memory, pids } => {
                memory.iter().chain(pids).map(|h| h.join(&name)).collect()
            }
        }
    }

    /// Makes the job's groups with `limits`; returns the `cgroup.procs` files its wrapper
    /// writes its pid to before it starts the job, so everything the job starts is inside.
    pub fn create(&self, unit: &str, limits: Limits) -> io::Result<Vec<PathBuf>> {
        let set = |file: PathBuf, value: String| {
            fs::write(&file, value)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))
        };
        let mut procs = Vec::new();
        match self {
            Cgroups::V2 { root, memory, pids } => {
                let parent = root.join("gpumarket");
                fs::create_dir_all(&parent)?;
                // Children get the controllers only when every level down enables them.
                let wanted: Vec<&str> = [(*memory, "+memory"), (*pids, "+pids")]
                    .iter()
                    .filter_map(|(on, c)| on.then_some(*c))
                    .collect();
                for dir in [root.as_path(), parent.as_path()] {
                    let _ = fs::write(dir.join("cgroup.subtree_control"), wanted.join(" "));
                }
                let dir = parent.join(unit);
                fs::create_dir_all(&dir)?;
                if let (true, Some(bytes)) = (*memory, limits.memory_bytes) {
                    set(dir.join("memory.max"), bytes.to_string())?;
                    // What it cannot keep in memory is not kept in swap either.
                    let _ = fs::write(dir.join("memory.swap.max"), "0");
                }
                if *pids {
                    set(dir.join("pids.max"), limits.processes.to_string())?;
                }
                procs.push(dir.join("cgroup.procs"));
            }
            Cgroups::V1 { memory, pids } => {
                if let Some(hierarchy) = memory {
                    let dir = hierarchy.join("gpumarket").join(unit);
                    fs::create_dir_all(&dir)?;
                    if let Some(bytes) = limits.memory_bytes {
                        set(dir.join("memory.limit_in_bytes"), bytes.to_string())?;
                        let _ =
                            fs::write(dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
                    }
                    procs.push(dir.join("cgroup.procs"));
                }
                if let Some(hierarchy) = pids {
                    let dir = hierarchy.join("gpumarket").join(unit);
                    fs::create_dir_all(&dir)?;
                    set(dir.join("pids.max"), limits.processes.to_string())?;
                    procs.push(dir.join("cgroup.procs"));
                }
            }
        }
        Ok(procs)
    }

    /// Kills every process in the job's groups and removes them. v2's `cgroup.kill` takes
    /// the whole group at once; elsewhere the members are killed until none is left (a
    /// process forking meanwhile is met on the next pass).
    pub fn kill_and_remove(&self, unit: &str) {
        for dir in self.dirs(unit) {
            if !dir.is_dir() {
                continue;
            }
            let _ = fs::write(dir.join("cgroup.kill"), "1");
            for _ in 0..50 {
                let members = members(&dir);
                if members.is_empty() {
                    break;
                }
                for pid in members {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // Removable once its last member has been reaped.
            for _ in 0..100 {
                if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    /// Whether the kernel killed a process of the job for its memory group's limit
    /// (`oom_kill` in v2's `memory.events`, v1's `memory.oom_control`).
    pub fn ran_out_of_memory(&self, unit: &str) -> bool {
        self.dirs(unit).iter().any(|dir| {
            ["memory.events", "memory.oom_control"].iter().any(|file| {
                fs::read_to_string(dir.join(file))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"))
            })
        })
    }
}

fn members(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
