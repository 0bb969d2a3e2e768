//! The sandbox every job runs in: bubblewrap (Debian's `bubblewrap`), never the agent's own
//! view of the machine.
//!
//! A job sees a root made of its image's root (read-only) or, for a job that names no image,
//! the host's `/usr` (read-only: programs, never `/etc`, `/home`, `/root`, `/var` or the
//! agent's state) with `/etc/alternatives` only (Debian's links to the chosen
//! implementation of a library or program inside `/usr`, without which programs such as
//! Blender do not load: `liblapack.so.3` is one); `/job`, its own writable work directory; `/job/in`, its inputs
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
//!
//! A provider may run jobs under an OCI runtime instead (`runtime = "podman"` or
//! `"docker"`, with the NVIDIA container toolkit for NVIDIA GPUs): the same view (the image's
//! root read-only, `/job`, `/job/in` read-only, a sized `/tmp` and `/dev/shm`), the same uid,
//! limits and clean environment, no capabilities, no network unless allowed, each leased
//! GPU by the runtime's own device mechanism (CDI `nvidia.com/gpu=N` for podman, `--gpus`
//! for docker; AMD's nodes by path). The image is the one the agent fetched and verified
//! from the market's store: podman runs its unpacked root (`--rootfs`), docker an image
//! imported from that root once. The container is named after its lease and is stopped and
//! removed by name, since its processes are the runtime's children, not the agent's.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::cgroups::{Cgroups, Limits};
use crate::jobs::Vendor;

/// `[sandbox]` in `agent.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// What isolates jobs: bubblewrap (the default) or an OCI runtime.
    pub runtime: Runtime,
    /// The bubblewrap binary.
    pub bwrap: PathBuf,
    /// The OCI runtime's binary (default: `podman` or `docker`, from `PATH`).
    pub runtime_binary: Option<PathBuf>,
    /// Global options given to that binary before each subcommand (e.g. `["--runtime=runc"]`
    /// where podman's default crun cannot run on the host's control groups).
    pub runtime_options: Vec<String>,
    /// A root agent runs each job as `uid_base` + its lowest GPU index (uid and gid). Pick a
    /// range no account of the host uses.
    pub uid_base: u32,
    /// Whether jobs that ask for it may reach the network (default: no network at all,
    /// loopback only; a job that asks is refused).
    pub network: bool,
    /// The most processes a job's uid may have (`RLIMIT_NPROC`).
    pub max_processes: u64,
    /// The largest file a job may write, in MiB (`RLIMIT_FSIZE`).
    pub max_file_mb: u64,
    /// The most files a job's process may hold open (`RLIMIT_NOFILE`; at most the host's
    /// hard limit).
    pub max_open_files: u64,
    /// The most memory a job may use, in MiB (unset: no limit): its memory control group's
    /// limit where it has one, else `RLIMIT_DATA` (which counts address space GPU runtimes
    /// reserve and never use, so set it with care there).
    pub max_memory_mb: Option<u64>,
    /// The size of the job's `/tmp`, in MiB (memory-backed).
    pub tmp_mb: u64,
    /// The most a job may keep under `/job`, in MiB (0: no limit): a job past it is stopped
    /// at the agent's next look (`RLIMIT_FSIZE` bounds each file between looks).
    pub max_disk_mb: u64,
    /// The most an image may unpack to, in MiB: a larger one is refused as the buyer's.
    pub max_image_mb: u64,
    /// Whether a root agent puts each job in control groups of its own where the host has
    /// them (a memory limit that counts real use, `max_processes` for the whole job, and a
    /// kill that reaches every process).
    pub cgroups: bool,
    /// Where the GPUs' device nodes are (`nvidia0`, `nvidiactl`, `kfd`, `dri/renderD128`…).
    pub dev_dir: PathBuf,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            runtime: Runtime::Bubblewrap,
            bwrap: PathBuf::from("bwrap"),
            runtime_binary: None,
            runtime_options: Vec::new(),
            uid_base: 200_000,
            network: false,
            max_processes: 1_024,
            max_file_mb: 256 << 10,
            max_open_files: 4_096,
            max_memory_mb: None,
            tmp_mb: 1_024,
            max_disk_mb: 100 << 10,
            max_image_mb: 64 << 10,
            cgroups: true,
            dev_dir: PathBuf::from("/dev"),
        }
    }
}

/// What a job's sandbox is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    Bubblewrap,
    Podman,
    Docker,
}

/// The range jobs' uids are taken from (`uid_base` + a GPU index).
const MIN_JOB_UID: u32 = 65_536;
const MAX_JOB_UID: u32 = 0xfff0_0000;

/// Why no job can run here.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "no sandbox: {0}. Jobs never run unsandboxed: install bubblewrap (Debian: \
     `apt-get install bubblewrap`) on a kernel that allows user namespaces, or configure \
     `[sandbox] runtime` as an OCI runtime that can start containers here"
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
    /// Where jobs' control groups are made, where the host has them.
    cgroups: Option<Cgroups>,
    /// Names this agent's jobs' control groups and containers apart from another agent's
    /// on the same host, whose lease ids may be the same (another market's, another test's).
    scope: String,
}

/// How a GPU is named on the host: its device node (relative to `dev_dir`) and the id the
/// runtime's visible-devices variable takes (NVIDIA: its UUID, which CUDA's own ordering
/// cannot confuse).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuName {
    pub node: Option<String>,
    pub visible_id: Option<String>,
}

/// What a job is given.
#[derive(Debug)]
pub struct Plan<'a> {
    /// The lease the job is for: its container's name under an OCI runtime.
    pub lease: u64,
    /// The unpacked image's root directory; `None`: the host's `/usr`.
    pub image: Option<&'a Path>,
    pub work: &'a Path,
    pub inputs: Option<&'a Path>,
    pub gpus: &'a [u32],
    /// Each GPU's own device node under `dev_dir` and the id the visible-devices variables
    /// name it by, where the GPU source knows them (index → (`nvidia3`, `GPU-…`)); else by
    /// its index.
    pub names: &'a std::collections::BTreeMap<u32, GpuName>,
    pub vendor: Vendor,
    /// The job asked for the network (it gets it only where the provider allows it).
    pub network: bool,
    pub env: &'a std::collections::BTreeMap<String, String>,
    pub command: &'a str,
    pub args: &'a [String],
}

impl Plan<'_> {
    /// The leased GPUs as the visible-devices variables take them: their ids where known
    /// (`GPU-8f3…,GPU-1a2…`), else their indices (`0,3`).
    fn visible(&self) -> String {
        let ids: Vec<String> = self.gpus.iter().map(|g| self.id(*g)).collect();
        ids.join(",")
    }

    /// The id GPU `index` goes by in visible-devices variables and CDI names.
    fn id(&self, index: u32) -> String {
        self.names
            .get(&index)
            .and_then(|n| n.visible_id.clone())
            .unwrap_or_else(|| index.to_string())
    }

    /// The device node of GPU `index`, relative to `dev_dir`.
    fn node(&self, index: u32) -> String {
        self.names
            .get(&index)
            .and_then(|n| n.node.clone())
            .unwrap_or_else(|| match self.vendor {
                Vendor::Nvidia => format!("nvidia{index}"),
                Vendor::Amd => format!("dri/renderD{}", 128 + index),
            })
    }
}

impl Sandbox {
    /// Checks that the sandbox runs here, as jobs will run, by running `true` in it. `scope`
    /// names the agent among others on the host (its jobs' groups and containers carry it).
    pub fn probe(config: &SandboxConfig, scope: &str) -> Result<Sandbox, NoSandbox> {
        // Below it are the host's own accounts (root among them: a sweep of a job's uid
        // would kill them); near `u32::MAX`, `setresuid` reads "no change".
        if !(MIN_JOB_UID..=MAX_JOB_UID - 1_024).contains(&config.uid_base) {
            return Err(NoSandbox(format!(
                "uid_base {} must lie in {MIN_JOB_UID}..={}",
                config.uid_base,
                MAX_JOB_UID - 1_024
            )));
        }
        let root = rustix::process::geteuid().is_root();
        let sandbox = Sandbox {
            config: config.clone(),
            root,
            cgroups: (root && config.cgroups)
                .then(|| Cgroups::detect(Path::new("/sys/fs/cgroup")))
                .flatten(),
            scope: scope.to_owned(),
        };
        let env = std::collections::BTreeMap::new();
        let empty = tempfile::tempdir().map_err(|e| NoSandbox(format!("a temporary dir: {e}")))?;
        let work = empty.path().join("work");
        passable(empty.path())
            .and_then(|()| sandbox.prepare(&work, sandbox.uid(&[])))
            .map_err(|e| NoSandbox(format!("preparing a work dir: {e}")))?;
        let argv = sandbox
            .argv(&Plan {
                // No lease has this id: the probe's container never meets a job's.
                lease: u64::MAX - u64::from(std::process::id()),
                image: None,
                work: &work,
                inputs: None,
                gpus: &[],
                names: &std::collections::BTreeMap::new(),
                vendor: Vendor::Nvidia,
                network: false,
                env: &env,
                command: "/usr/bin/true",
                args: &[],
            })
            .map_err(|e| NoSandbox(format!("preparing the probe's root: {e}")))?;
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| NoSandbox(format!("{}: {e}", argv[0].to_string_lossy())))?;
        if !out.status.success() {
            return Err(NoSandbox(format!(
                "{} failed ({}): {}",
                argv[0].to_string_lossy(),
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

    /// The most a job may keep under `/job`, in bytes (`None`: no limit).
    pub fn max_disk_bytes(&self) -> Option<u64> {
        (self.config.max_disk_mb > 0).then(|| self.config.max_disk_mb.saturating_mul(1 << 20))
    }

    /// Makes lease `lease`'s control groups, where there are any: the `cgroup.procs` files
    /// the job's wrapper enters before the job starts.
    pub fn enter_cgroups(&self, lease: u64) -> std::io::Result<Vec<PathBuf>> {
        let Some(cgroups) = &self.cgroups else {
            return Ok(Vec::new());
        };
        cgroups.create(
            &self.unit(lease),
            Limits {
                memory_bytes: self
                    .config
                    .max_memory_mb
                    .map(|mb| mb.saturating_mul(1 << 20)),
                processes: self.config.max_processes,
            },
        )
    }

    /// Kills whatever is left in lease `lease`'s control groups and removes them.
    pub fn kill_cgroups(&self, lease: u64) {
        if let Some(cgroups) = &self.cgroups {
            cgroups.kill_and_remove(&self.unit(lease));
        }
    }

    /// The memory limit (MiB) the job of lease `lease` hit, as its control group counted.
    pub fn out_of_memory(&self, lease: u64) -> Option<u64> {
        let cgroups = self.cgroups.as_ref()?;
        self.config
            .max_memory_mb
            .filter(|_| cgroups.ran_out_of_memory(&self.unit(lease)))
    }

    /// The name of lease `lease`'s job on this host: its control groups' and its container's.
    pub fn unit(&self, lease: u64) -> String {
        format!("gpumarket-{}-lease-{lease}", self.scope)
    }

    /// The OCI runtime's binary, where one is configured.
    fn oci_binary(&self) -> Option<PathBuf> {
        let default = match self.config.runtime {
            Runtime::Bubblewrap => return None,
            Runtime::Podman => "podman",
            Runtime::Docker => "docker",
        };
        Some(
            self.config
                .runtime_binary
                .clone()
                .unwrap_or_else(|| PathBuf::from(default)),
        )
    }

    /// Stops lease `lease`'s container, if an OCI runtime runs it: `SIGTERM`, up to `grace`,
    /// then `SIGKILL`, and removes it. Its processes are the runtime's, not the agent's
    /// children, so signalling the job's group alone would leave them running.
    pub fn stop_container(&self, lease: u64, grace: std::time::Duration) {
        let Some(binary) = self.oci_binary() else {
            return;
        };
        let name = self.unit(lease);
        let secs = grace.as_secs().max(1).to_string();
        for args in [
            vec!["stop", "--time", &secs, &name],
            vec!["rm", "--force", &name],
        ] {
            let ran = Command::new(&binary)
                .args(&self.config.runtime_options)
                .args(&args)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if let Err(e) = ran {
                tracing::warn!(lease, error = %e, "the job's container was not stopped");
            }
        }
    }

    /// The command line that runs the job in its sandbox. Bubblewrap: `setpriv` (a root
    /// agent: the job's uid, no supplementary groups), `prlimit` (the limits), then `bwrap`.
    /// An OCI runtime: its `run`, with the same view and limits as its own options.
    pub fn argv(&self, plan: &Plan) -> std::io::Result<Vec<OsString>> {
        match self.oci_binary() {
            Some(binary) => self.oci_argv(&binary, plan),
            None => Ok(self.bwrap_argv(plan)),
        }
    }

    fn bwrap_argv(&self, plan: &Plan) -> Vec<OsString> {
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
            &format!("--nofile={0}:{0}", c.max_open_files),
            &"--core=0:0",
        ]);
        // Without a memory group, the data segment is what can be limited.
        if let (Some(mb), None) = (c.max_memory_mb, &self.cgroups) {
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
                if Path::new("/etc/alternatives").is_dir() {
                    push(&[&"--ro-bind", &"/etc/alternatives", &"/etc/alternatives"]);
                }
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
        for node in self.devices(plan) {
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
        if plan.network && c.network {
            push(&[&"--share-net"]);
        }
        for (name, value) in plan.env {
            push(&[&"--setenv", name, value]);
        }
        let visible = plan.visible();
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

    fn oci_argv(&self, binary: &Path, plan: &Plan) -> std::io::Result<Vec<OsString>> {
        let c = &self.config;
        let root = match plan.image {
            Some(root) => root.to_owned(),
            None => host_usr_root(&plan.work.with_file_name("root"))?,
        };
        let mut v: Vec<OsString> = vec![binary.into()];
        v.extend(c.runtime_options.iter().map(OsString::from));
        let mut push = |arg: String| v.push(arg.into());
        for arg in [
            "run",
            "--rm",
            "--interactive=false",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--hostname=job",
            "--workdir=/job",
            "--env=PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "--env=HOME=/job",
            "--ulimit=core=0:0",
        ] {
            push(arg.to_owned());
        }
        push(format!("--name={}", self.unit(plan.lease)));
        push(format!("--pids-limit={}", c.max_processes));
        push(format!("--ulimit=nproc={0}:{0}", c.max_processes));
        push(format!("--ulimit=fsize={0}:{0}", c.max_file_mb << 20));
        push(format!("--ulimit=nofile={0}:{0}", c.max_open_files));
        if let Some(mb) = c.max_memory_mb {
            push(format!("--memory={mb}m"));
        }
        push(format!("--tmpfs=/tmp:rw,nosuid,nodev,size={}m", c.tmp_mb));
        push(format!("--shm-size={}m", c.tmp_mb));
        if !(plan.network && c.network) {
            push("--network=none".to_owned());
        }
        // Never the runtime's default (root in the image): the job's own uid, or the agent's.
        let uid = self
            .uid(plan.gpus)
            .unwrap_or_else(|| rustix::process::geteuid().as_raw());
        push(format!("--user={uid}:{uid}"));
        if c.runtime == Runtime::Podman {
            // No unsized tmpfs on /run and /var/tmp, no /etc/passwd entry written into the
            // image's root (shared by every job on the image).
            push("--read-only-tmpfs=false".to_owned());
            push("--passwd=false".to_owned());
        }
        push(format!("--volume={}:/job:rw", plan.work.display()));
        if let Some(inputs) = plan.inputs {
            push(format!("--volume={}:/job/in:ro", inputs.display()));
        }
        for (name, value) in plan.env {
            push(format!("--env={name}={value}"));
        }
        let visible = plan.visible();
        match (plan.vendor, c.runtime) {
            (Vendor::Nvidia, Runtime::Docker) if !plan.gpus.is_empty() => {
                push(format!("--gpus=\"device={visible}\""))
            }
            (Vendor::Nvidia, _) => {
                for gpu in plan.gpus {
                    push(format!("--device=nvidia.com/gpu={}", plan.id(*gpu)));
                }
            }
            (Vendor::Amd, _) => {
                // Only the leased GPUs' nodes are there: the runtime numbers them from 0, so
                // no visible-devices variable names host indices.
                for node in self.devices(plan) {
                    push(format!("--device={}", node.display()));
                }
            }
        }
        if plan.image.is_none() {
            push("--volume=/usr:/usr:ro".to_owned());
            if Path::new("/etc/alternatives").is_dir() {
                push("--volume=/etc/alternatives:/etc/alternatives:ro".to_owned());
            }
        }
        // The runtimes stop reading options at the image (or the root): every option comes
        // before it, the command right after it.
        match c.runtime {
            Runtime::Docker => {
                push("--pull=never".to_owned());
                push(docker_import(binary, &c.runtime_options, &root)?);
            }
            _ => {
                // An overlay on the shared root: what the runtime writes stays this job's.
                push("--rootfs".to_owned());
                push(format!("{}:O", root.display()));
            }
        }
        push(plan.command.to_owned());
        v.extend(plan.args.iter().map(OsString::from));
        Ok(v)
    }

    /// The device nodes of the plan's GPUs that exist: each GPU's own ([`Plan::node`]) and
    /// the shared ones (NVIDIA's control nodes, AMD's `kfd`).
    fn devices(&self, plan: &Plan) -> Vec<PathBuf> {
        let dir = &self.config.dev_dir;
        let shared: &[&str] = match plan.vendor {
            Vendor::Nvidia => &[
                "nvidiactl",
                "nvidia-uvm",
                "nvidia-uvm-tools",
                "nvidia-modeset",
            ],
            Vendor::Amd => &["kfd"],
        };
        let mut nodes: Vec<PathBuf> = shared
            .iter()
            .map(|n| dir.join(n))
            .chain(plan.gpus.iter().map(|g| dir.join(plan.node(*g))))
            .collect();
        nodes.retain(|n| n.exists());
        nodes
    }
}

/// A root holding only the mount point for the host's `/usr` and the links into it, for a
/// job that names no image under an OCI runtime (which needs a root of its own).
fn host_usr_root(root: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(root.join("usr"))?;
    for dir in ["bin", "sbin", "lib", "lib64"] {
        let link = root.join(dir);
        if Path::new("/usr").join(dir).exists() && std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("usr/{dir}"), link)?;
        }
    }
    Ok(root.to_owned())
}

/// The docker image made from the unpacked root `root`, imported the first time: docker runs
/// images only, never a directory. Named after the root's directory (the image's cid).
fn docker_import(binary: &Path, options: &[String], root: &Path) -> std::io::Result<String> {
    // An image's root is `images/<cid>/rootfs`; a job without one gets the same links
    // into the host's /usr as every other, so one image serves them all.
    let tag = root
        .parent()
        .filter(|_| root.file_name().is_some_and(|n| n == "rootfs"))
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .filter(|n| n.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("host-usr");
    let image = format!("gpumarket-job:{tag}");
    let docker = |args: &[&str]| {
        let mut c = Command::new(binary);
        c.args(options)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    if docker(&["image", "inspect", &image]).status()?.success() {
        return Ok(image);
    }
    // Imported under a tag of its own, named as the image only once all of it is in: an
    // import cut short never passes for the image.
    let partial = format!("{image}-partial");
    let mut child = docker(&["import", "-", &partial])
        .stdin(Stdio::piped())
        .spawn()?;
    let mut tar = tar::Builder::new(child.stdin.take().expect("piped"));
    tar.follow_symlinks(false);
    let written = tar
        .append_dir_all(".", root)
        .and_then(|()| tar.into_inner());
    let imported = match written {
        Ok(stdin) => {
            drop(stdin);
            child.wait()?.success()
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let tagged = imported
        && docker(&["image", "tag", &partial, &image])
            .status()?
            .success();
    let _ = docker(&["image", "rm", &partial]).status();
    if !tagged {
        return Err(std::io::Error::other(format!(
            "{} import of {} failed",
            binary.display(),
            root.display()
        )));
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(sandbox: &Sandbox, plan: &Plan) -> Vec<String> {
        sandbox
            .argv(plan)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn an_oci_runtime_gets_the_same_view_limits_and_devices_as_bubblewrap() {
        let dir = tempfile::tempdir().unwrap();
        let (work, inputs, image) = (
            dir.path().join("7/work"),
            dir.path().join("7/in"),
            dir.path().join("img/rootfs"),
        );
        let env = std::collections::BTreeMap::from([("SEED".to_owned(), "1".to_owned())]);
        // GPU 3 is known by its UUID; GPU 1 by its index.
        let names = std::collections::BTreeMap::from([(
            3,
            GpuName {
                node: Some("nvidia0".to_owned()),
                visible_id: Some("GPU-3333".to_owned()),
            },
        )]);
        let plan = |image| Plan {
            lease: 7,
            image,
            work: &work,
            inputs: Some(&inputs),
            gpus: &[1, 3],
            names: &names,
            vendor: Vendor::Nvidia,
            network: true,
            env: &env,
            command: "/bin/render",
            args: &[],
        };
        let podman = Sandbox {
            config: SandboxConfig {
                runtime: Runtime::Podman,
                runtime_options: vec!["--runtime=runc".to_owned()],
                max_memory_mb: Some(512),
                ..SandboxConfig::default()
            },
            root: true,
            cgroups: None,
            scope: "agent".to_owned(),
        };
        let v = args(&podman, &plan(Some(image.as_path())));
        assert_eq!(v[..4], ["podman", "--runtime=runc", "run", "--rm"]);
        for want in [
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--network=none",
            "--name=gpumarket-agent-lease-7",
            "--user=200001:200001",
            "--pids-limit=1024",
            "--memory=512m",
            "--device=nvidia.com/gpu=1",
            "--device=nvidia.com/gpu=GPU-3333",
            "--env=SEED=1",
            "--rootfs",
        ] {
            assert!(v.iter().any(|a| a == want), "{want} in {v:?}");
        }
        assert!(v.contains(&format!("--volume={}:/job:rw", work.display())));
        assert!(v.contains(&format!("--volume={}:/job/in:ro", inputs.display())));
        // Options, then the root, then the command: the runtime reads no option after it.
        let rootfs = v.iter().position(|a| a == "--rootfs").unwrap();
        assert_eq!(v[rootfs + 1], format!("{}:O", image.display()));
        assert_eq!(v[rootfs + 2..], ["/bin/render"]);
        assert!(v[..rootfs]
            .iter()
            .all(|a| a.starts_with("--") || a == "podman" || a == "run"));
        assert!(v.contains(&"--ulimit=nofile=4096:4096".to_owned()), "{v:?}");
        assert!(
            !v.iter().any(|a| a.contains("VISIBLE_DEVICES")),
            "the runtime numbers the leased GPUs itself: {v:?}"
        );

        // No image: a root of links into the host's /usr, mounted read-only.
        let v = args(&podman, &plan(None));
        let usr = v.iter().position(|a| a == "--volume=/usr:/usr:ro").unwrap();
        assert!(
            usr < v.iter().position(|a| a == "--rootfs").unwrap(),
            "{v:?}"
        );
        assert!(work.with_file_name("root/usr").is_dir());

        // Network only where the provider allows it.
        let open = Sandbox {
            config: SandboxConfig {
                runtime: Runtime::Podman,
                network: true,
                ..SandboxConfig::default()
            },
            root: false,
            cgroups: None,
            scope: "agent".to_owned(),
        };
        let v = args(&open, &plan(Some(image.as_path())));
        assert!(!v.iter().any(|a| a.starts_with("--network")), "{v:?}");
        let own = rustix::process::geteuid().as_raw();
        assert!(
            v.contains(&format!("--user={own}:{own}")),
            "the agent's uid: {v:?}"
        );

        // Docker takes NVIDIA GPUs by `--gpus` and runs an image imported from the root
        // (`true` stands in for a docker that already holds it).
        let docker = Sandbox {
            config: SandboxConfig {
                runtime: Runtime::Docker,
                runtime_binary: Some(PathBuf::from("/bin/true")),
                ..SandboxConfig::default()
            },
            root: true,
            cgroups: None,
            scope: "agent".to_owned(),
        };
        let v = args(&docker, &plan(Some(image.as_path())));
        assert!(
            v.contains(&"--gpus=\"device=1,GPU-3333\"".to_owned()),
            "{v:?}"
        );
        assert!(v.contains(&"--pull=never".to_owned()), "{v:?}");
        assert_eq!(v[v.len() - 2..], ["gpumarket-job:img", "/bin/render"]);
        assert!(!v.iter().any(|a| a == "--rootfs"), "{v:?}");
    }

    #[test]
    fn a_gpu_gets_the_device_node_its_source_names_not_the_one_of_its_index() {
        let dev = tempfile::tempdir().unwrap();
        for node in ["nvidia0", "nvidia3", "nvidiactl"] {
            std::fs::write(dev.path().join(node), "").unwrap();
        }
        let sandbox = Sandbox {
            config: SandboxConfig {
                dev_dir: dev.path().to_owned(),
                ..SandboxConfig::default()
            },
            root: false,
            cgroups: None,
            scope: "agent".to_owned(),
        };
        // NVML index 3 is minor number 0 here (indices follow PCI order, minors do not).
        let names = std::collections::BTreeMap::from([(
            3,
            GpuName {
                node: Some("nvidia0".to_owned()),
                visible_id: Some("GPU-3333".to_owned()),
            },
        )]);
        let (work, env) = (dev.path().join("work"), std::collections::BTreeMap::new());
        let plan = Plan {
            lease: 1,
            image: None,
            work: &work,
            inputs: None,
            gpus: &[3],
            names: &names,
            vendor: Vendor::Nvidia,
            network: false,
            env: &env,
            command: "/bin/true",
            args: &[],
        };
        assert_eq!(
            sandbox.devices(&plan),
            [dev.path().join("nvidiactl"), dev.path().join("nvidia0")]
        );
        assert_eq!(plan.visible(), "GPU-3333");
    }
}
