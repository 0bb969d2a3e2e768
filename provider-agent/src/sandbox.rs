//! The sandbox every job runs in: bubblewrap (Debian's `bubblewrap`), never the agent's own
//! view of the machine.
//!
//! A job sees a root made of its image's root (read-only) or, for a job that names no image,
//! the host's `/usr` (read-only: programs, never `/etc`, `/home`, `/root`, `/var` or the
//! agent's state); `/job`, its own writable work directory; `/job/in`, its inputs
//! (read-only); a fresh `/proc`, a minimal `/dev` plus the device nodes of its leased GPUs
//! only, and a small `/tmp`. It has its own user, pid, mount, IPC, UTS and network
//! namespaces (the network only where the provider allows it), no capabilities, no further
//! user namespaces, a clean environment, and a new session (no terminal to inject into).
//!
//! Its uid is its own: an agent running as root starts bubblewrap as `uid_base` plus the
//! lowest GPU index the job holds. A GPU is held by one job at a time, so no two running
//! jobs of a node share a uid, and the per-uid process limit is per job. An agent that is
//! not root cannot change uid: its jobs run as its uid inside their user namespace, which
//! sees nothing of the agent's files all the same.
//!
//! Its end is certain: bubblewrap's monitor is the wrapper's child, the job is pid 1's tree
//! in its own pid namespace, and `--die-with-parent` ties that namespace to the wrapper, so
//! killing the job's process group (the wrapper and the monitor) kills every process the job
//! started, `setsid` and double forks included; a root agent also kills whatever still runs
//! under the job's uid.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::jobs::Vendor;

/// `[sandbox]` in `agent.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// The bubblewrap binary.
    pub bwrap: PathBuf,
    /// A root agent runs each job as `uid_base` + its lowest GPU index (uid and gid). Pick a
    /// range no account of the host uses.
    pub uid_base: u32,
    /// Whether jobs may reach the network (default: no network at all, loopback only).
    pub network: bool,
    /// The most processes a job's uid may have (`RLIMIT_NPROC`).
    pub max_processes: u64,
    /// The largest file a job may write, in MiB (`RLIMIT_FSIZE`).
    pub max_file_mb: u64,
    /// The most memory a job may allocate, in MiB (`RLIMIT_DATA`; unset: no limit, since
    /// GPU runtimes map far more than they use).
    pub max_memory_mb: Option<u64>,
    /// The size of the job's `/tmp`, in MiB (memory-backed).
    pub tmp_mb: u64,
    /// Where the GPUs' device nodes are (`nvidia0`, `nvidiactl`, `kfd`, `dri/renderD128`…).
    pub dev_dir: PathBuf,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            bwrap: PathBuf::from("bwrap"),
            uid_base: 200_000,
            network: false,
            max_processes: 1_024,
            max_file_mb: 256 << 10,
            max_memory_mb: None,
            tmp_mb: 1_024,
            dev_dir: PathBuf::from("/dev"),
        }
    }
}

/// The range jobs' uids are taken from (`uid_base` + a GPU index).
const MIN_JOB_UID: u32 = 65_536;
const MAX_JOB_UID: u32 = 0xfff0_0000;

/// Why no job can run here.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "no sandbox: {0}. Jobs never run unsandboxed: install bubblewrap (Debian: \
     `apt-get install bubblewrap`) on a kernel that allows user namespaces"
)]
pub struct NoSandbox(String);

/// Lets jobs' uids pass through `dir` to what is bound into their sandboxes, without
/// listing it (mode 0711): bubblewrap opens those paths as the job's uid.
pub fn passable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

/// A sandbox that was seen to work on this host.
#[derive(Debug, Clone)]
pub struct Sandbox {
    config: SandboxConfig,
    /// The agent can give jobs uids of their own.
    root: bool,
}

/// What a job is given.
#[derive(Debug)]
pub struct Plan<'a> {
    /// The unpacked image's root directory; `None`: the host's `/usr`.
    pub image: Option<&'a Path>,
    pub work: &'a Path,
    pub inputs: Option<&'a Path>,
    pub gpus: &'a [u32],
    pub vendor: Vendor,
    pub env: &'a std::collections::BTreeMap<String, String>,
    pub command: &'a str,
    pub args: &'a [String],
}

impl Sandbox {
    /// Checks that bubblewrap runs here, as jobs will run, by running `true` in it.
    pub fn probe(config: &SandboxConfig) -> Result<Sandbox, NoSandbox> {
        // Below it are the host's own accounts (root among them: a sweep of a job's uid
        // would kill them); near `u32::MAX`, `setresuid` reads "no change".
        if !(MIN_JOB_UID..=MAX_JOB_UID - 1_024).contains(&config.uid_base) {
            return Err(NoSandbox(format!(
                "uid_base {} must lie in {MIN_JOB_UID}..={}",
                config.uid_base,
                MAX_JOB_UID - 1_024
            )));
        }
        let sandbox = Sandbox {
            config: config.clone(),
            root: rustix::process::geteuid().is_root(),
        };
        let env = std::collections::BTreeMap::new();
        let empty = tempfile::tempdir().map_err(|e| NoSandbox(format!("a temporary dir: {e}")))?;
        let work = empty.path().join("work");
        passable(empty.path())
            .and_then(|()| sandbox.prepare(&work, sandbox.uid(&[])))
            .map_err(|e| NoSandbox(format!("preparing a work dir: {e}")))?;
        let argv = sandbox.argv(&Plan {
            image: None,
            work: &work,
            inputs: None,
            gpus: &[],
            vendor: Vendor::Nvidia,
            env: &env,
            command: "/usr/bin/true",
            args: &[],
        });
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| NoSandbox(format!("{}: {e}", argv[0].to_string_lossy())))?;
        if !out.status.success() {
            return Err(NoSandbox(format!(
                "bubblewrap failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(sandbox)
    }

    /// The uid (and gid) the job on `gpus` runs as, where the agent can choose one.
    pub fn uid(&self, gpus: &[u32]) -> Option<u32> {
        self.root.then(|| {
            self.config
                .uid_base
                .saturating_add(gpus.iter().copied().min().unwrap_or(0))
                .min(MAX_JOB_UID)
        })
    }

    /// Makes `work` the job's own: created, owned by its uid, closed to everyone else. Its
    /// parent must let the uid pass (mode 0711), since bubblewrap opens it as that uid.
    pub fn prepare(&self, work: &Path, uid: Option<u32>) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(work)?;
        if let Some(uid) = uid {
            std::os::unix::fs::chown(work, Some(uid), Some(uid))?;
        }
        std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o700))
    }

    /// Kills every process still running as `uid`: the last sweep after a job's group is
    /// stopped (only a root agent gives jobs uids of their own).
    pub fn kill_uid(uid: u32) {
        use std::os::unix::fs::MetadataExt;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw)
            else {
                continue;
            };
            if entry.metadata().is_ok_and(|m| m.uid() == uid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }

    /// The command line that runs the job in its sandbox: `setpriv` (a root agent: the job's
    /// uid, no supplementary groups), `prlimit` (the limits), then `bwrap`.
    pub fn argv(&self, plan: &Plan) -> Vec<OsString> {
        let c = &self.config;
        let mut v: Vec<OsString> = Vec::new();
        let mut push = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
            v.extend(args.iter().map(|a| a.as_ref().to_owned()));
        };
        if let Some(uid) = self.uid(plan.gpus) {
            push(&[
                &"setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                &"--clear-groups",
                &"--",
            ]);
        }
        push(&[
            &"prlimit",
            &format!("--nproc={0}:{0}", c.max_processes),
            &format!("--fsize={0}:{0}", c.max_file_mb << 20),
            &"--core=0:0",
        ]);
        if let Some(mb) = c.max_memory_mb {
            push(&[&format!("--data={0}:{0}", mb << 20)]);
        }
        push(&[&"--", &c.bwrap]);
        match plan.image {
            Some(root) => {
                // The image's top-level entries on bubblewrap's own (tmpfs) root, so the
                // mount points below can be made; the root is made read-only after.
                for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
                    let name = entry.file_name();
                    if ["proc", "dev", "tmp", "job", "sys"]
                        .iter()
                        .any(|n| name == *n)
                    {
                        continue;
                    }
                    let to = Path::new("/").join(&name);
                    match std::fs::read_link(entry.path()) {
                        Ok(target) => push(&[&"--symlink", &target, &to]),
                        Err(_) => push(&[&"--ro-bind", &entry.path(), &to]),
                    }
                }
            }
            None => {
                push(&[&"--ro-bind", &"/usr", &"/usr"]);
                for dir in ["bin", "sbin", "lib", "lib64"] {
                    if Path::new("/usr").join(dir).exists() {
                        push(&[&"--symlink", &format!("usr/{dir}"), &format!("/{dir}")]);
                    }
                }
            }
        }
        push(&[
            &"--proc",
            &"/proc",
            &"--dev",
            &"/dev",
            &"--size",
            &(c.tmp_mb << 20).to_string(),
            &"--tmpfs",
            &"/tmp",
            &"--bind",
            &plan.work,
            &"/job",
        ]);
        if let Some(inputs) = plan.inputs {
            push(&[&"--ro-bind", &inputs, &"/job/in"]);
        }
        for node in self.devices(plan.vendor, plan.gpus) {
            let to = Path::new("/dev").join(node.strip_prefix(&c.dev_dir).unwrap_or(&node));
            push(&[&"--dev-bind", &node, &to]);
        }
        // /dev read-only (a job makes no nodes of its own), but for its shared memory.
        push(&[
            &"--size",
            &(c.tmp_mb << 20).to_string(),
            &"--tmpfs",
            &"/dev/shm",
            &"--remount-ro",
            &"/dev",
        ]);
        push(&[
            &"--remount-ro",
            &"/",
            &"--unshare-all",
            &"--unshare-user",
            &"--disable-userns",
            &"--die-with-parent",
            &"--new-session",
            &"--hostname",
            &"job",
            &"--chdir",
            &"/job",
            &"--clearenv",
            &"--setenv",
            &"PATH",
            &"/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            &"--setenv",
            &"HOME",
            &"/job",
        ]);
        if c.network {
            push(&[&"--share-net"]);
        }
        for (name, value) in plan.env {
            push(&[&"--setenv", name, value]);
        }
        let visible = plan
            .gpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let names: &[&str] = match plan.vendor {
            Vendor::Nvidia => &["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"],
            Vendor::Amd => &["HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"],
        };
        for name in names {
            push(&[&"--setenv", name, &visible]);
        }
        push(&[&"--", &plan.command]);
        v.extend(plan.args.iter().map(OsString::from));
        v
    }

    /// The device nodes of `gpus` that exist: NVIDIA's `nvidiaN` and the shared control
    /// nodes; AMD's `kfd` and each GPU's render node (`dri/renderD128` is GPU 0).
    fn devices(&self, vendor: Vendor, gpus: &[u32]) -> Vec<PathBuf> {
        let dir = &self.config.dev_dir;
        let mut nodes: Vec<PathBuf> = match vendor {
            Vendor::Nvidia => [
                "nvidiactl",
                "nvidia-uvm",
                "nvidia-uvm-tools",
                "nvidia-modeset",
            ]
            .iter()
            .map(|n| dir.join(n))
            .chain(gpus.iter().map(|g| dir.join(format!("nvidia{g}"))))
            .collect(),
            Vendor::Amd => std::iter::once(dir.join("kfd"))
                .chain(
                    gpus.iter()
                        .map(|g| dir.join(format!("dri/renderD{}", 128 + g))),
                )
                .collect(),
        };
        nodes.retain(|n| n.exists());
        nodes
    }
}
