//! Resource limits for a sandbox: a cgroup `kiln/<name>` under this process's own cgroup.
//!
//! Both hierarchies are supported (cgroups(7), Documentation/admin-guide/cgroup-v1 and
//! cgroup-v2.rst):
//! - v1 (also "hybrid", where a cgroup2 mount at /sys/fs/cgroup/unified holds no controllers):
//!   one directory per controller mount, `<mount>/<own path>/kiln/<name>`;
//! - v2 (a cgroup2 mount AT /sys/fs/cgroup): one directory, a child of the current cgroup, with
//!   the controllers enabled in `cgroup.subtree_control` on the way down.
//!
//! The memory and pids controllers are joined whenever they are mounted, limit or not: they
//! count the sandbox's processes and memory ([`Cgroup::pids_current`], [`Cgroup::memory_peak`],
//! [`Cgroup::oom_killed`]) and find every process to kill at the end. cpu is joined only for a
//! cpu limit. Every filesystem and kill operation goes through the small `Fs` trait, so the
//! logic is unit-tested without root.

use crate::sys::process;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The CFS period docker uses for `--cpus` (100ms, in microseconds).
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel accepts (1ms), so `--cpus` is at least 0.01, as in docker.
const MIN_CPU_QUOTA_US: u64 = 1_000;
/// Docker's minimum memory limit ("Minimum memory limit allowed is 6MB").
const MIN_MEMORY: u64 = 6 * 1024 * 1024;
/// How many times destroy re-reads `cgroup.procs` and kills what is left before giving up.
const KILL_PASSES: u32 = 2_000;
/// How many times destroy retries an `rmdir` that fails with EBUSY (processes still exiting).
const RMDIR_TRIES: u32 = 500;
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// Resource limits, as `docker run --memory/--pids-limit/--cpus` give them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Memory in bytes (RAM + swap: swap cannot be used to dodge it). At least 6 MiB, as docker.
    pub memory: Option<u64>,
    /// The most processes (threads included) at once; at least 1.
    pub pids: Option<u64>,
    /// CPU time as a number of CPUs, like docker's `--cpus` (1.5 = 150ms every 100ms); at least
    /// 0.01.
    pub cpus: Option<f64>,
}

/// Why a cgroup could not be set up, queried or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A name that is not one path component.
    #[error("invalid cgroup name {0:?}: use one path component, without '/', NUL, '.' or '..'")]
    InvalidName(String),
    /// A memory size that does not parse.
    #[error(
        "invalid memory size {text:?}: {reason}; use a number with an optional unit b, k, m, g, t or p, such as 64m or 1.5g"
    )]
    InvalidMemory {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A limit outside what docker and the kernel accept.
    #[error("invalid {what} limit {value}: {reason}")]
    InvalidLimit {
        /// `memory`, `pids` or `cpus`.
        what: &'static str,
        /// The value given.
        value: String,
        /// The accepted range.
        reason: &'static str,
    },
    /// The cgroup filesystem refused to create a directory: not root, and no delegated hierarchy.
    #[error(
        "cannot create cgroup {}: {cause}; resource limits need root, or a delegated cgroup v2 hierarchy (for example systemd-run --user --scope -p Delegate=yes kiln ...)",
        path.display()
    )]
    NotWritable {
        /// The directory.
        path: PathBuf,
        /// The underlying error; it is part of this message, not a `source()`: the hint has to follow it, which a chain
        /// (`a: b: c`) cannot say; it is printed once all the same.
        cause: io::Error,
    },
    /// kiln runs without real root, and no cgroup subtree is delegated to the user.
    #[error(
        "cgroup limits need a delegated cgroup v2 subtree (systemd user slice) when kiln runs \
         without root, and {reason}: run kiln as root, or drop {flags}"
    )]
    Undelegated {
        /// Why there is none here.
        reason: String,
        /// The flags of the limits asked for (`--memory`, `--pids-limit`, `--cpus`).
        flags: String,
    },
    /// The cgroup already exists.
    #[error(
        "cgroup {} already exists: a sandbox with this name is running, or one was not cleaned up (remove it with rmdir once it is empty)",
        path.display()
    )]
    Exists {
        /// The directory.
        path: PathBuf,
    },
    /// A controller a limit needs is not mounted (v1) or not available (v2).
    #[error("the {controller} controller is not available: {reason}")]
    NoController {
        /// `memory`, `pids` or `cpu`.
        controller: &'static str,
        /// Where it was looked for.
        reason: String,
    },
    /// cgroup v2 lets a cgroup enable controllers for its children only while it has no
    /// processes of its own ("no internal processes" rule).
    #[error(
        "cannot enable the {controller} controller in {}: this process's own cgroup holds processes, so cgroup v2 will not delegate it; run kiln in a cgroup of its own (for example systemd-run --scope -p Delegate=yes kiln ...)",
        path.display()
    )]
    Busy {
        /// `memory`, `pids` or `cpu`.
        controller: &'static str,
        /// The `cgroup.subtree_control` file.
        path: PathBuf,
    },
    /// No usable cgroup mount was found for this process.
    #[error("cannot find this process's cgroup: {0}")]
    Layout(String),
    /// Reading a cgroup or /proc file failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Writing a cgroup file failed.
    #[error("cannot write {value:?} to {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Creating a cgroup directory failed for another reason than permissions.
    #[error("cannot create cgroup {}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Killing a process of the cgroup failed.
    #[error("cannot kill process {pid} of cgroup {}", path.display())]
    Kill {
        /// The process.
        pid: i32,
        /// The cgroup directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The cgroup kept gaining processes while it was being emptied.
    #[error("cgroup {} still has processes after killing them repeatedly (a fork bomb without a pids limit?)", path.display())]
    NotEmptied {
        /// The directory.
        path: PathBuf,
    },
    /// Removing the directory failed.
    #[error("cannot remove cgroup {}", path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Parses a docker-style memory size (go-units `RAMInBytes`): a decimal number, an optional
/// space, then an optional binary unit `b`, `k`, `m`, `g`, `t` or `p` (case-insensitive), which
/// may be followed by `b` or `ib` ("64m", "64mb", "64MiB", "1.5g", "100b", "512 k"). A fraction
/// is truncated to whole bytes, as docker does.
pub fn parse_memory(text: &str) -> Result<u64, CgroupError> {
    let fail = |reason| CgroupError::InvalidMemory {
        text: text.chars().take(100).collect(),
        reason,
    };
    let number_len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, rest) = text.split_at(number_len);
    let suffix = rest.strip_prefix(' ').unwrap_or(rest).to_ascii_lowercase();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let well_formed = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && (!number.contains('.')
            || (!fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit())));
    if !well_formed {
        return Err(fail("expected a number such as 64 or 1.5"));
    }
    let shift = match suffix.as_str() {
        "" | "b" => 0,
        _ => {
            let (unit, tail) = suffix.split_at(suffix.chars().next().map_or(0, char::len_utf8));
            if !matches!(tail, "" | "b" | "ib") {
                return Err(fail("unknown unit"));
            }
            match unit {
                "k" => 10,
                "m" => 20,
                "g" => 30,
                "t" => 40,
                "p" => 50,
                _ => return Err(fail("unknown unit")),
            }
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| fail("expected a number such as 64 or 1.5"))?;
    let bytes = value * f64::from(1u32 << 10).powi(shift / 10);
    // i64::MAX is what docker (and the kernel's page counters) can hold.
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(fail("too large"));
    }
    Ok(bytes as u64)
}

/// The kernel interface a [`Cgroup`] uses: cgroupfs files and directories, and killing a
/// process only while it is still a member of the cgroup.
trait Fs: Sync {
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `value` to an existing cgroup file in one write(2) (cgroupfs takes one value per
    /// write).
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Whether a file exists (optional interface files such as `memory.memsw.limit_in_bytes`).
    fn exists(&self, path: &Path) -> bool;
    /// mkdir(2); an existing directory is `ErrorKind::AlreadyExists`.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// rmdir(2).
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Sends SIGKILL to `pid` if it is still in one of the cgroups `cgroup_paths` (paths as
    /// /proc/PID/cgroup shows them); a process that is gone is not an error.
    fn kill_member(&self, pid: i32, cgroup_paths: &[String]) -> io::Result<()>;
}

/// The real kernel.
struct KernelFs;

impl Fs for KernelFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        use std::io::Write as _;
        // No O_CREAT: cgroupfs files exist or the controller is missing; a typo must not
        // silently create a plain file.
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.write_all(value.as_bytes())
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn kill_member(&self, pid: i32, cgroup_paths: &[String]) -> io::Result<()> {
        kill_member(pid, cgroup_paths)
    }
}

/// SIGKILLs `pid` only if it is (still) in one of `cgroup_paths`. A pid read from `cgroup.procs`
/// may be reused by an unrelated process before the kill; a pidfd (pidfd_open(2)) pins the process
/// first, membership is then checked in /proc/PID/cgroup, and pidfd_send_signal(2) can only reach
/// the pinned process (ESRCH once it has exited), never a successor with the same pid.
fn kill_member(pid: i32, cgroup_paths: &[String]) -> io::Result<()> {
    use std::os::fd::AsFd;
    let pidfd = match process::pidfd_open(pid) {
        Ok(pidfd) => pidfd,
        Err(Errno::ESRCH) => return Ok(()),
        Err(errno) => return Err(errno.into()),
    };
    let membership = match std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let member = membership
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .any(|path| cgroup_paths.iter().any(|p| p == path));
    if !member {
        return Ok(());
    }
    match process::pidfd_send_signal(pidfd.as_fd(), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => return Err(errno.into()),
    }
    Ok(())
}

/// Which cgroup hierarchy the controllers live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// One directory of the sandbox's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dir {
    /// The directory in the cgroup filesystem.
    path: PathBuf,
    /// The cgroup as /proc/PID/cgroup names it, to check a process's membership before a kill.
    proc_path: String,
    /// The controllers it serves (several when they are co-mounted in v1, all in v2).
    controllers: Vec<&'static str>,
}

/// A sandbox's cgroup: a directory per v1 controller, or one v2 directory. Dropping it kills its
/// processes and removes it, best-effort; [`Cgroup::destroy`] does the same and reports errors.
pub struct Cgroup {
    version: Version,
    dirs: Vec<Dir>,
    memory_limit: Option<u64>,
    fs: &'static dyn Fs,
}

impl std::fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cgroup")
            .field("version", &self.version)
            .field("dirs", &self.dirs)
            .field("memory_limit", &self.memory_limit)
            .finish()
    }
}

impl Cgroup {
    /// Creates `kiln/<name>` under THIS process's own cgroup for each needed controller and
    /// applies the limits: v1 `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, same
    /// value, when swap accounting exists), `pids.max`, `cpu.cfs_quota_us`/`cpu.cfs_period_us`;
    /// v2 `memory.max` (and `memory.swap.max` = 0), `pids.max`, `cpu.max`.
    ///
    /// Without write access to the cgroup filesystem (rootless on v1) this is
    /// [`CgroupError::NotWritable`]; a caller without limits to apply may go on without a cgroup.
    pub fn create(name: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let mountinfo = read_proc("/proc/self/mountinfo")?;
        let own = read_proc("/proc/self/cgroup")?;
        let layout = Layout::parse(&mountinfo, &own)?;
        let privilege = crate::sys::privilege::current();
        let layout = if privilege.is_real_root() {
            layout
        } else {
            rootless_layout(layout, crate::sys::privilege::real_uid(), limits)?
        };
        create_in(&KernelFs, &layout, name, limits)
    }

    /// The `cgroup.procs` files a pid must be written to (the sandbox parent writes the child's
    /// pid there before the workload starts).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.path.join("cgroup.procs"))
            .collect()
    }

    /// Moves process `pid` (and, in v1 and v2 alike, all its threads) into the cgroup.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        for file in self.procs_files() {
            write(self.fs, &file, &pid.to_string())?;
        }
        Ok(())
    }

    /// True when the kernel's OOM killer killed a process in this cgroup: v2 `memory.events`
    /// `oom_kill`; v1 `memory.oom_control` `oom_kill` (Linux 4.13+), or on older kernels the limit
    /// having been hit (`memory.failcnt` > 0 with `memory.max_usage_in_bytes` at the limit).
    pub fn oom_killed(&self) -> bool {
        let Some(dir) = self.dir_for("memory") else {
            return false;
        };
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        let text = self.fs.read(&dir.join(file)).unwrap_or_default();
        if let Some(kills) = keyed_value(&text, "oom_kill") {
            return kills > 0;
        }
        if self.version == Version::V2 {
            return false;
        }
        let failures = self.read_number(&dir.join("memory.failcnt")).unwrap_or(0);
        let peak = self.read_number(&dir.join("memory.max_usage_in_bytes"));
        failures > 0 && matches!((peak, self.memory_limit), (Some(p), Some(l)) if p >= l)
    }

    /// How many processes (threads included) are in the cgroup now (`pids.current`).
    pub fn pids_current(&self) -> Option<u64> {
        self.read_number(&self.dir_for("pids")?.join("pids.current"))
    }

    /// The most memory the cgroup has used (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`,
    /// which needs Linux 5.19).
    pub fn memory_peak(&self) -> Option<u64> {
        let file = match self.version {
            Version::V2 => "memory.peak",
            Version::V1 => "memory.max_usage_in_bytes",
        };
        self.read_number(&self.dir_for("memory")?.join(file))
    }

    /// Kills every process left in the cgroup and removes its directories (the `kiln` parent
    /// stays: other sandboxes share it). v2 `cgroup.kill` (Linux 5.14) kills all at once;
    /// otherwise each pid of `cgroup.procs` is killed until none are left. `rmdir` is retried
    /// briefly while it fails with EBUSY (killed processes still exiting).
    pub fn destroy(mut self) -> Result<(), CgroupError> {
        self.remove()
    }

    fn remove(&mut self) -> Result<(), CgroupError> {
        let mut first_error = self.kill_all().err();
        for dir in std::mem::take(&mut self.dirs).iter().rev() {
            if let Err(e) = rmdir_retrying(self.fs, &dir.path) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        if self.version == Version::V2 {
            for dir in &self.dirs {
                let kill = dir.path.join("cgroup.kill");
                if self.fs.exists(&kill) {
                    write(self.fs, &kill, "1")?;
                }
            }
        }
        let members: Vec<String> = self.dirs.iter().map(|d| d.proc_path.clone()).collect();
        for dir in &self.dirs {
            let procs = dir.path.join("cgroup.procs");
            let mut passes = 0;
            loop {
                let text = match self.fs.read(&procs) {
                    Ok(text) => text,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(source) => {
                        return Err(CgroupError::Read {
                            path: procs,
                            source,
                        });
                    }
                };
                let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
                if pids.is_empty() {
                    break;
                }
                passes += 1;
                if passes > KILL_PASSES {
                    return Err(CgroupError::NotEmptied {
                        path: dir.path.clone(),
                    });
                }
                for pid in pids {
                    self.fs
                        .kill_member(pid, &members)
                        .map_err(|source| CgroupError::Kill {
                            pid,
                            path: dir.path.clone(),
                            source,
                        })?;
                }
                std::thread::sleep(RETRY_PAUSE);
            }
        }
        Ok(())
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let fs = self.fs;
        if let (Some(memory), Some(dir)) = (limits.memory, self.dir_for("memory")) {
            let value = memory.to_string();
            match self.version {
                Version::V1 => {
                    // The RAM limit first: memsw may never be below it (cgroup-v1/memory.rst).
                    write(fs, &dir.join("memory.limit_in_bytes"), &value)?;
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if fs.exists(&memsw) {
                        write(fs, &memsw, &value)?;
                    }
                }
                Version::V2 => {
                    write(fs, &dir.join("memory.max"), &value)?;
                    let swap = dir.join("memory.swap.max");
                    if fs.exists(&swap) {
                        write(fs, &swap, "0")?;
                    }
                }
            }
        }
        if let (Some(pids), Some(dir)) = (limits.pids, self.dir_for("pids")) {
            write(fs, &dir.join("pids.max"), &pids.to_string())?;
        }
        if let (Some(quota), Some(dir)) = (limits.cpus.and_then(cpu_quota), self.dir_for("cpu")) {
            match self.version {
                Version::V1 => {
                    write(
                        fs,
                        &dir.join("cpu.cfs_period_us"),
                        &CPU_PERIOD_US.to_string(),
                    )?;
                    write(fs, &dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                Version::V2 => write(
                    fs,
                    &dir.join("cpu.max"),
                    &format!("{quota} {CPU_PERIOD_US}"),
                )?,
            }
        }
        Ok(())
    }

    fn dir_for(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&controller))
            .map(|d| d.path.as_path())
    }

    fn read_number(&self, path: &Path) -> Option<u64> {
        self.fs.read(path).ok()?.trim().parse().ok()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Best-effort: errors have nowhere to go here; destroy() reports them.
        let _ = self.remove();
    }
}

/// The value of `key N` in a flat-keyed cgroup file (memory.events, memory.oom_control).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn rmdir_retrying(fs: &dyn Fs, path: &Path) -> Result<(), CgroupError> {
    let mut tries = 0;
    loop {
        match fs.rmdir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < RMDIR_TRIES => {
                tries += 1;
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

fn read_proc(path: &str) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: PathBuf::from(path),
        source,
    })
}

fn write(fs: &dyn Fs, path: &Path, value: &str) -> Result<(), CgroupError> {
    fs.write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// The `cgroup.procs` files of the cgroup `kiln/<name>` that a process whose `/proc/PID/cgroup`
/// is `proc_cgroup` is in, found through this process's mounts (`mountinfo`, from
/// /proc/self/mountinfo): how `kiln exec` joins a running sandbox's cgroup. Empty when the
/// process is in no such cgroup (a sandbox without limits shares its `kiln run`'s cgroup).
pub(crate) fn procs_files_of(
    mountinfo: &str,
    proc_cgroup: &str,
    name: &str,
) -> Result<Vec<PathBuf>, CgroupError> {
    let suffix = format!("/kiln/{name}");
    let own = match Layout::parse(mountinfo, proc_cgroup)? {
        Layout::V1(own) => own,
        Layout::V2(own) => vec![own],
    };
    Ok(own
        .into_iter()
        .filter(|cgroup| cgroup.proc_path.ends_with(&suffix))
        .map(|cgroup| cgroup.dir.join("cgroup.procs"))
        .collect())
}

/// Where this process's cgroups are, from /proc/self/mountinfo and /proc/self/cgroup.
#[derive(Debug, PartialEq)]
enum Layout {
    /// Each v1 hierarchy with its controllers and this process's cgroup in it.
    V1(Vec<OwnCgroup>),
    /// This process's v2 cgroup.
    V2(OwnCgroup),
}

/// This process's cgroup in one hierarchy.
#[derive(Debug, PartialEq)]
struct OwnCgroup {
    controllers: Vec<String>,
    /// The directory in the mounted cgroup filesystem.
    dir: PathBuf,
    /// The path as /proc/self/cgroup gives it.
    proc_path: String,
}

impl Layout {
    /// v2 when a cgroup2 filesystem is mounted at /sys/fs/cgroup, else v1 from the cgroup
    /// mounts and the matching /proc/self/cgroup lines.
    fn parse(mountinfo: &str, proc_cgroup: &str) -> Result<Layout, CgroupError> {
        let mounts = parse_mountinfo(mountinfo);
        let lines = parse_proc_cgroup(proc_cgroup)?;
        let unified = mounts
            .iter()
            .find(|m| m.controllers.is_none() && m.mount_point == Path::new("/sys/fs/cgroup"));
        if let Some(mount) = unified {
            let line = lines
                .iter()
                .find(|l| l.hierarchy == 0 && l.controllers.is_empty())
                .ok_or_else(|| {
                    CgroupError::Layout(
                        "/sys/fs/cgroup is cgroup2 but /proc/self/cgroup has no 0::/PATH line"
                            .to_string(),
                    )
                })?;
            return Ok(Layout::V2(OwnCgroup {
                controllers: Vec::new(),
                dir: mount.dir_of(&line.path)?,
                proc_path: line.path.clone(),
            }));
        }
        let mut own = Vec::new();
        for mount in &mounts {
            let Some(controllers) = &mount.controllers else {
                continue;
            };
            let Some(line) = lines.iter().find(|l| {
                l.hierarchy != 0 && l.controllers.iter().any(|c| controllers.contains(c))
            }) else {
                continue;
            };
            // A hierarchy mounted twice (a bind mount) is used at its first mount.
            if own
                .iter()
                .any(|o: &OwnCgroup| o.controllers == line.controllers)
            {
                continue;
            }
            own.push(OwnCgroup {
                controllers: line.controllers.clone(),
                dir: mount.dir_of(&line.path)?,
                proc_path: line.path.clone(),
            });
        }
        Ok(Layout::V1(own))
    }
}

/// A cgroup filesystem mount from /proc/self/mountinfo.
#[derive(Debug, PartialEq)]
struct CgroupMount {
    /// The cgroup path mounted there (field 4; `/` unless a sub-tree or a cgroup namespace).
    root: String,
    mount_point: PathBuf,
    /// The v1 super options naming controllers; `None` for cgroup2.
    controllers: Option<Vec<String>>,
}

impl CgroupMount {
    /// Where cgroup `path` (from /proc/self/cgroup) is under this mount.
    fn dir_of(&self, path: &str) -> Result<PathBuf, CgroupError> {
        let root = self.root.trim_end_matches('/');
        let relative = path
            .strip_prefix(root)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .ok_or_else(|| {
                CgroupError::Layout(format!(
                    "cgroup {path} is outside the part {} of the hierarchy mounted at {}",
                    self.root,
                    self.mount_point.display()
                ))
            })?;
        let relative = relative.trim_start_matches('/');
        if relative.split('/').any(|c| c == "..") {
            return Err(CgroupError::Layout(format!(
                "cgroup path {path} contains '..'"
            )));
        }
        Ok(if relative.is_empty() {
            self.mount_point.clone()
        } else {
            self.mount_point.join(relative)
        })
    }
}

/// The cgroup and cgroup2 mounts of a /proc/PID/mountinfo (proc(5)): `ID PARENT MAJ:MIN ROOT
/// MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`. Other lines are skipped.
fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let separator = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            let fs_type = *fields.get(separator + 1)?;
            let super_options = *fields.get(separator + 3)?;
            let root = unescape_mountinfo(fields.get(3)?);
            let mount_point = PathBuf::from(unescape_mountinfo(fields.get(4)?));
            let controllers = match fs_type {
                "cgroup2" => None,
                "cgroup" => Some(super_options.split(',').map(str::to_string).collect()),
                _ => return None,
            };
            Some(CgroupMount {
                root,
                mount_point,
                controllers,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| b == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
            .and_then(|n| u8::try_from(n).ok());
        match octal {
            Some(decoded) => {
                out.push(decoded);
                i += 4;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of /proc/PID/cgroup (cgroups(7)): `HIERARCHY-ID:CONTROLLERS:PATH`.
#[derive(Debug, PartialEq)]
struct ProcCgroupLine {
    hierarchy: u32,
    /// v1 controllers (`name=systemd` included); empty for the v2 line `0::PATH`.
    controllers: Vec<String>,
    path: String,
}

fn parse_proc_cgroup(text: &str) -> Result<Vec<ProcCgroupLine>, CgroupError> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let malformed =
                || CgroupError::Layout(format!("malformed line in /proc/self/cgroup: {line:?}"));
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts
                .next()
                .and_then(|h| h.parse().ok())
                .ok_or_else(malformed)?;
            let controllers = parts.next().ok_or_else(malformed)?;
            let path = parts
                .next()
                .filter(|p| p.starts_with('/'))
                .ok_or_else(malformed)?;
            Ok(ProcCgroupLine {
                hierarchy,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// `parent/child` of cgroup paths as /proc/PID/cgroup writes them.
fn child_path(parent: &str, child: &str) -> String {
    format!("{}/{child}", parent.trim_end_matches('/'))
}

fn validate(name: &str, limits: &Limits) -> Result<(), CgroupError> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 255
        || name.contains(['/', '\0', '\n'])
    {
        return Err(CgroupError::InvalidName(name.to_string()));
    }
    if let Some(memory) = limits.memory.filter(|m| *m < MIN_MEMORY) {
        return Err(CgroupError::InvalidLimit {
            what: "memory",
            value: memory.to_string(),
            reason: "the minimum memory limit is 6m (6291456 bytes), as in docker",
        });
    }
    if limits.pids == Some(0) {
        return Err(CgroupError::InvalidLimit {
            what: "pids",
            value: "0".to_string(),
            reason: "a pids limit is at least 1 (no limit is no value)",
        });
    }
    if let Some(cpus) = limits.cpus.filter(|c| cpu_quota(*c).is_none()) {
        return Err(CgroupError::InvalidLimit {
            what: "cpus",
            value: cpus.to_string(),
            reason: "the number of CPUs is at least 0.01",
        });
    }
    Ok(())
}

/// The CFS quota for `cpus` CPUs per docker's 100ms period, if the kernel accepts it.
fn cpu_quota(cpus: f64) -> Option<u64> {
    let quota = (cpus * CPU_PERIOD_US as f64).round();
    (quota.is_finite() && quota >= MIN_CPU_QUOTA_US as f64 && quota < u64::MAX as f64)
        .then_some(quota as u64)
}

/// [`Cgroup::create`] against a given layout and kernel interface.
/// Where a user who is not real root may make cgroups: the systemd user manager's delegated
/// cgroup v2 subtree (`…/user@UID.service`, owned by the user, controllers delegated), when this
/// process runs inside it (a process may only be moved between cgroups whose common ancestor's
/// `cgroup.procs` it may write). cgroup v1 is never delegated to a user. Only limits asked for
/// make this an error: without, the caller goes on without a cgroup.
fn rootless_layout(layout: Layout, uid: u32, limits: &Limits) -> Result<Layout, CgroupError> {
    let flags: Vec<&str> = [
        (limits.memory.is_some(), "--memory"),
        (limits.pids.is_some(), "--pids-limit"),
        (limits.cpus.is_some(), "--cpus"),
    ]
    .into_iter()
    .filter_map(|(asked, flag)| asked.then_some(flag))
    .collect();
    let undelegated = |reason: String| CgroupError::Undelegated {
        reason,
        flags: flags.join(", "),
    };
    let own = match layout {
        Layout::V1(_) => {
            return Err(undelegated(
                "this machine has cgroup v1 (a controller per mount under /sys/fs/cgroup), \
                 which is not delegated to users"
                    .to_string(),
            ));
        }
        Layout::V2(own) => own,
    };
    let service = format!("user@{uid}.service");
    let components: Vec<&str> = own.proc_path.split('/').collect();
    let Some(at) = components.iter().position(|c| *c == service) else {
        return Err(undelegated(format!(
            "this process's cgroup {} is outside the user's systemd service {service} (start \
             kiln from a user session, or with systemd-run --user --scope)",
            own.proc_path
        )));
    };
    let proc_path = components.get(..=at).unwrap_or_default().join("/");
    let below = components.len().saturating_sub(at + 1);
    let mut dir = own.dir.clone();
    for _ in 0..below {
        dir.pop();
    }
    Ok(Layout::V2(OwnCgroup {
        controllers: own.controllers,
        dir,
        proc_path,
    }))
}

fn create_in(
    fs: &'static dyn Fs,
    layout: &Layout,
    name: &str,
    limits: &Limits,
) -> Result<Cgroup, CgroupError> {
    validate(name, limits)?;
    let mut wanted: Vec<(&'static str, bool)> = vec![
        ("memory", limits.memory.is_some()),
        ("pids", limits.pids.is_some()),
    ];
    if limits.cpus.is_some() {
        wanted.push(("cpu", true));
    }
    let mut cgroup = match layout {
        Layout::V1(hierarchies) => create_v1(fs, hierarchies, name, &wanted)?,
        Layout::V2(own) => create_v2(fs, own, name, &wanted)?,
    };
    cgroup.memory_limit = limits.memory;
    // From here on a failure drops `cgroup`, which removes what was created.
    cgroup.apply(limits)?;
    Ok(cgroup)
}

fn create_v1(
    fs: &'static dyn Fs,
    hierarchies: &[OwnCgroup],
    name: &str,
    wanted: &[(&'static str, bool)],
) -> Result<Cgroup, CgroupError> {
    let mut cgroup = Cgroup {
        version: Version::V1,
        dirs: Vec::new(),
        memory_limit: None,
        fs,
    };
    for &(controller, required) in wanted {
        let Some(own) = hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
        else {
            if required {
                return Err(CgroupError::NoController {
                    controller,
                    reason: "no cgroup v1 hierarchy has it mounted (see /proc/self/mountinfo)"
                        .to_string(),
                });
            }
            continue;
        };
        let path = own.dir.join("kiln").join(name);
        if let Some(dir) = cgroup.dirs.iter_mut().find(|d| d.path == path) {
            // Co-mounted controllers (such as cpu,cpuacct) share one directory.
            dir.controllers.push(controller);
            continue;
        }
        make_dir(fs, &own.dir.join("kiln"), true)?;
        make_dir(fs, &path, false)?;
        cgroup.dirs.push(Dir {
            path,
            proc_path: child_path(&child_path(&own.proc_path, "kiln"), name),
            controllers: vec![controller],
        });
    }
    Ok(cgroup)
}

fn create_v2(
    fs: &'static dyn Fs,
    own: &OwnCgroup,
    name: &str,
    wanted: &[(&'static str, bool)],
) -> Result<Cgroup, CgroupError> {
    let available = fs
        .read(&own.dir.join("cgroup.controllers"))
        .map_err(|source| CgroupError::Read {
            path: own.dir.join("cgroup.controllers"),
            source,
        })?;
    let available: Vec<&str> = available.split_whitespace().collect();
    let mut controllers = Vec::new();
    for &(controller, required) in wanted {
        if available.contains(&controller) {
            controllers.push(controller);
        } else if required {
            return Err(CgroupError::NoController {
                controller,
                reason: format!(
                    "{} does not list it; ask for it to be delegated to this cgroup",
                    own.dir.join("cgroup.controllers").display()
                ),
            });
        }
    }
    // A controller reaches kiln/<name> only when it is enabled in the subtree_control of both
    // ancestors. The own cgroup holds processes (this one), so there it can only be enabled if it
    // already is, or if the kernel allows it (the root cgroup); kiln/ holds none.
    enable_controllers(fs, &own.dir, &controllers)?;
    let kiln = own.dir.join("kiln");
    make_dir(fs, &kiln, true)?;
    enable_controllers(fs, &kiln, &controllers)?;
    let path = kiln.join(name);
    make_dir(fs, &path, false)?;
    Ok(Cgroup {
        version: Version::V2,
        dirs: vec![Dir {
            path,
            proc_path: child_path(&child_path(&own.proc_path, "kiln"), name),
            controllers,
        }],
        memory_limit: None,
        fs,
    })
}

/// Enables `controllers` for the children of `dir` (cgroup.subtree_control), those not already on.
fn enable_controllers(
    fs: &dyn Fs,
    dir: &Path,
    controllers: &[&'static str],
) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = fs.read(&file).map_err(|source| CgroupError::Read {
        path: file.clone(),
        source,
    })?;
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    for controller in controllers.iter().filter(|c| !enabled.contains(c)) {
        match fs.write(&file, &format!("+{controller}")) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(CgroupError::Busy {
                    controller,
                    path: file,
                });
            }
            Err(source) => {
                return Err(CgroupError::Write {
                    path: file,
                    value: format!("+{controller}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// mkdir for a cgroup; `shared` directories (kiln/) may exist already.
fn make_dir(fs: &dyn Fs, path: &Path, shared: bool) -> Result<(), CgroupError> {
    match fs.mkdir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && shared => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CgroupError::Exists {
            path: path.to_path_buf(),
        }),
        Err(source)
            if matches!(
                source.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS)
            ) =>
        {
            Err(CgroupError::NotWritable {
                path: path.to_path_buf(),
                cause: source,
            })
        }
        Err(source) => Err(CgroupError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod rootless_tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            memory: Some(64 << 20),
            pids: None,
            cpus: Some(1.0),
        }
    }

    #[test]
    fn cgroup_v1_is_not_delegated_to_a_user() {
        let err = rootless_layout(Layout::V1(Vec::new()), 1000, &limits()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cgroup limits need a delegated cgroup v2 subtree (systemd user slice) when kiln \
             runs without root, and this machine has cgroup v1 (a controller per mount under \
             /sys/fs/cgroup), which is not delegated to users: run kiln as root, or drop \
             --memory, --cpus"
        );
    }

    #[test]
    fn cgroup_v2_uses_the_user_service_subtree() {
        let proc_path = "/user.slice/user-1000.slice/user@1000.service/app.slice/term.scope";
        let own = OwnCgroup {
            controllers: Vec::new(),
            dir: PathBuf::from("/sys/fs/cgroup").join(proc_path.trim_start_matches('/')),
            proc_path: proc_path.to_string(),
        };
        let Layout::V2(base) = rootless_layout(Layout::V2(own), 1000, &limits()).unwrap() else {
            panic!("v2 stays v2");
        };
        assert_eq!(
            base.dir,
            Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service")
        );
        assert_eq!(
            base.proc_path,
            "/user.slice/user-1000.slice/user@1000.service"
        );
        let session = OwnCgroup {
            controllers: Vec::new(),
            dir: PathBuf::from("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope"),
            proc_path: "/user.slice/user-1000.slice/session-2.scope".to_string(),
        };
        let err = rootless_layout(Layout::V2(session), 1000, &limits()).unwrap_err();
        assert!(
            err.to_string().contains(
                "this process's cgroup /user.slice/user-1000.slice/session-2.scope is outside \
                 the user's systemd service user@1000.service"
            ),
            "{err}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    /// An in-memory cgroupfs: `mkdir` creates a directory holding the `interface` files, writes to
    /// missing files fail with ENOENT as in the kernel, and every change is logged.
    struct FakeFs {
        state: Mutex<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        files: BTreeMap<PathBuf, String>,
        dirs: BTreeSet<PathBuf>,
        interface: Vec<&'static str>,
        /// An errno every mkdir fails with.
        mkdir_errno: Option<i32>,
        /// subtree_control files that refuse writes with EBUSY.
        busy: Vec<PathBuf>,
        log: Vec<String>,
    }

    impl FakeFs {
        fn leak(state: FakeState) -> &'static FakeFs {
            Box::leak(Box::new(FakeFs {
                state: Mutex::new(state),
            }))
        }

        fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
            f(&mut self.state.lock().expect("fake fs lock"))
        }

        fn log(&self) -> Vec<String> {
            self.with(|s| s.log.clone())
        }

        fn file(&self, path: &str) -> Option<String> {
            self.with(|s| s.files.get(Path::new(path)).cloned())
        }

        fn set(&self, path: &str, contents: &str) {
            self.with(|s| s.files.insert(PathBuf::from(path), contents.to_string()));
        }
    }

    impl Fs for FakeFs {
        fn read(&self, path: &Path) -> io::Result<String> {
            self.with(|s| s.files.get(path).cloned())
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
        }

        fn write(&self, path: &Path, value: &str) -> io::Result<()> {
            self.with(|s| {
                if s.busy.iter().any(|b| b == path) {
                    return Err(io::Error::from_raw_os_error(libc::EBUSY));
                }
                let file = s
                    .files
                    .get_mut(path)
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
                if path.ends_with("cgroup.subtree_control") {
                    file.push_str(value.trim_start_matches('+'));
                    file.push(' ');
                } else {
                    *file = value.to_string();
                }
                s.log.push(format!("write {} {value}", path.display()));
                Ok(())
            })
        }

        fn exists(&self, path: &Path) -> bool {
            self.with(|s| s.files.contains_key(path) || s.dirs.contains(path))
        }

        fn mkdir(&self, path: &Path) -> io::Result<()> {
            self.with(|s| {
                if let Some(errno) = s.mkdir_errno {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                if !s.dirs.insert(path.to_path_buf()) {
                    return Err(io::Error::from_raw_os_error(libc::EEXIST));
                }
                for name in s.interface.clone() {
                    s.files.insert(path.join(name), String::new());
                }
                s.log.push(format!("mkdir {}", path.display()));
                Ok(())
            })
        }

        fn rmdir(&self, path: &Path) -> io::Result<()> {
            self.with(|s| {
                if !s.dirs.remove(path) {
                    return Err(io::Error::from_raw_os_error(libc::ENOENT));
                }
                s.files.retain(|file, _| file.parent() != Some(path));
                s.log.push(format!("rmdir {}", path.display()));
                Ok(())
            })
        }

        fn kill_member(&self, pid: i32, cgroup_paths: &[String]) -> io::Result<()> {
            self.with(|s| {
                s.log
                    .push(format!("kill {pid} in {}", cgroup_paths.join(",")));
                // The process exits: it leaves every cgroup.procs.
                for (path, contents) in s.files.iter_mut() {
                    if path.ends_with("cgroup.procs") {
                        *contents = contents
                            .lines()
                            .filter(|l| l.trim() != pid.to_string())
                            .map(|l| format!("{l}\n"))
                            .collect();
                    }
                }
                Ok(())
            })
        }
    }

    /// This machine's layout: cgroup v1 with a cgroup2 mount at /sys/fs/cgroup/unified (hybrid),
    /// the memory cgroup nested, the others at the root.
    const HYBRID_MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:7 master:3 - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/aee5
2:cpuacct:/
1:cpu:/
0::/
";

    /// `kiln exec` finds a container's cgroup from its pid 1's /proc/PID/cgroup and kiln's own
    /// mounts: only the hierarchies where it is in `kiln/<name>`.
    #[test]
    fn a_sandboxs_cgroup_is_found_for_exec() {
        let sandbox = "\
9:name=systemd:/
8:pids:/kiln/abc
4:memory:/process_api/aee5/kiln/abc
2:cpuacct:/
1:cpu:/
0::/
";
        assert_eq!(
            procs_files_of(HYBRID_MOUNTINFO, sandbox, "abc").expect("files"),
            [
                PathBuf::from("/sys/fs/cgroup/memory/process_api/aee5/kiln/abc/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/pids/kiln/abc/cgroup.procs"),
            ]
        );
        assert!(
            procs_files_of(HYBRID_MOUNTINFO, sandbox, "ab")
                .expect("files")
                .is_empty()
        );
        let v2_mounts = "41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            procs_files_of(v2_mounts, "0::/user.slice/kiln/abc\n", "abc").expect("files"),
            [PathBuf::from(
                "/sys/fs/cgroup/user.slice/kiln/abc/cgroup.procs"
            )]
        );
        assert!(
            procs_files_of(v2_mounts, "0::/user.slice/session.scope\n", "abc")
                .expect("files")
                .is_empty()
        );
    }

    fn hybrid_layout() -> Layout {
        Layout::parse(HYBRID_MOUNTINFO, HYBRID_CGROUP).expect("layout")
    }

    fn v2_layout() -> Layout {
        Layout::V2(OwnCgroup {
            controllers: Vec::new(),
            dir: PathBuf::from("/cg/user.slice/app"),
            proc_path: "/user.slice/app".to_string(),
        })
    }

    const V1_INTERFACE: &[&str] = &[
        "cgroup.procs",
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "pids.max",
        "cpu.cfs_period_us",
        "cpu.cfs_quota_us",
    ];
    const V2_INTERFACE: &[&str] = &[
        "cgroup.procs",
        "cgroup.kill",
        "cgroup.controllers",
        "cgroup.subtree_control",
        "memory.max",
        "memory.swap.max",
        "pids.max",
        "cpu.max",
    ];

    fn v2_fs(controllers: &str, own_subtree: &str) -> &'static FakeFs {
        let fs = FakeFs::leak(FakeState {
            interface: V2_INTERFACE.to_vec(),
            ..FakeState::default()
        });
        fs.with(|s| s.dirs.insert(PathBuf::from("/cg/user.slice/app")));
        fs.set("/cg/user.slice/app/cgroup.controllers", controllers);
        fs.set("/cg/user.slice/app/cgroup.subtree_control", own_subtree);
        fs
    }

    #[test]
    fn parses_proc_self_cgroup() {
        let lines = parse_proc_cgroup(HYBRID_CGROUP).expect("hybrid");
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[2],
            ProcCgroupLine {
                hierarchy: 4,
                controllers: vec!["memory".to_string()],
                path: "/process_api/aee5".to_string(),
            }
        );
        assert_eq!(lines[0].controllers, ["name=systemd"]);
        assert_eq!(
            lines[5],
            ProcCgroupLine {
                hierarchy: 0,
                controllers: Vec::new(),
                path: "/".to_string(),
            }
        );
        type Expected = Option<(u32, &'static [&'static str], &'static str)>;
        let cases: &[(&str, Expected)] = &[
            (
                "0::/user.slice/user-1000.slice/session-2.scope",
                Some((0, &[], "/user.slice/user-1000.slice/session-2.scope")),
            ),
            ("0::/", Some((0, &[], "/"))),
            (
                "3:cpu,cpuacct:/docker/abc",
                Some((3, &["cpu", "cpuacct"], "/docker/abc")),
            ),
            // A path may contain ':'.
            ("5:pids:/a:b", Some((5, &["pids"], "/a:b"))),
            ("x:memory:/", None),
            ("4:memory", None),
            ("4:memory:relative", None),
            ("", Some((0, &[], ""))),
        ];
        let mut failures = Vec::new();
        for (line, expected) in cases {
            let got = parse_proc_cgroup(line);
            let ok = match (&got, expected) {
                (Ok(lines), Some((_, _, ""))) => lines.is_empty(),
                (Ok(lines), Some((h, c, p))) => {
                    lines.len() == 1
                        && lines[0].hierarchy == *h
                        && lines[0].controllers == *c
                        && lines[0].path == *p
                }
                (Err(e), None) => e
                    .to_string()
                    .contains("malformed line in /proc/self/cgroup"),
                _ => false,
            };
            if !ok {
                failures.push(format!("{line:?}: {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn parses_mountinfo() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        let summary: Vec<(String, Option<Vec<String>>)> = mounts
            .iter()
            .map(|m| (m.mount_point.display().to_string(), m.controllers.clone()))
            .collect();
        let v1 = |c: &[&str]| Some(c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            summary,
            [
                ("/sys/fs/cgroup/cpu".to_string(), v1(&["rw", "cpu"])),
                ("/sys/fs/cgroup/cpuacct".to_string(), v1(&["rw", "cpuacct"])),
                ("/sys/fs/cgroup/memory".to_string(), v1(&["rw", "memory"])),
                ("/sys/fs/cgroup/pids".to_string(), v1(&["rw", "pids"])),
                (
                    "/sys/fs/cgroup/systemd".to_string(),
                    v1(&["rw", "xattr", "name=systemd"])
                ),
                ("/sys/fs/cgroup/unified".to_string(), None),
            ]
        );
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            (
                "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot",
                Some(("/", "/sys/fs/cgroup")),
            ),
            (
                "100 99 0:30 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory",
                Some(("/docker/abc", "/sys/fs/cgroup/memory")),
            ),
            (
                "101 99 0:30 / /mnt/with\\040space rw - cgroup2 none rw",
                Some(("/", "/mnt/with space")),
            ),
            ("102 99 0:31 / /tmp rw - tmpfs tmpfs rw", None),
            ("garbage", None),
            ("1 2 3 4 5 6 - cgroup2", None),
        ];
        let mut failures = Vec::new();
        for (line, expected) in cases {
            let got = parse_mountinfo(line);
            let ok = match expected {
                None => got.is_empty(),
                Some((root, point)) => {
                    got.len() == 1 && got[0].root == *root && got[0].mount_point == Path::new(point)
                }
            };
            if !ok {
                failures.push(format!("{line:?}: {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn finds_this_process_cgroups() {
        let Layout::V1(own) = hybrid_layout() else {
            panic!("hybrid is v1");
        };
        let dirs: Vec<(Vec<String>, String, String)> = own
            .iter()
            .map(|o| {
                (
                    o.controllers.clone(),
                    o.dir.display().to_string(),
                    o.proc_path.clone(),
                )
            })
            .collect();
        let s = |v: &str| v.to_string();
        assert_eq!(
            dirs,
            [
                (vec![s("cpu")], s("/sys/fs/cgroup/cpu"), s("/")),
                (vec![s("cpuacct")], s("/sys/fs/cgroup/cpuacct"), s("/")),
                (
                    vec![s("memory")],
                    s("/sys/fs/cgroup/memory/process_api/aee5"),
                    s("/process_api/aee5")
                ),
                (vec![s("pids")], s("/sys/fs/cgroup/pids"), s("/")),
                (vec![s("name=systemd")], s("/sys/fs/cgroup/systemd"), s("/")),
            ]
        );

        let v2_mounts = "30 25 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let layout = Layout::parse(v2_mounts, "0::/user.slice/app.scope\n").expect("v2");
        assert_eq!(
            layout,
            Layout::V2(OwnCgroup {
                controllers: Vec::new(),
                dir: PathBuf::from("/sys/fs/cgroup/user.slice/app.scope"),
                proc_path: "/user.slice/app.scope".to_string(),
            })
        );
        let Layout::V2(root) = Layout::parse(v2_mounts, "0::/\n").expect("v2 root") else {
            panic!("v2");
        };
        assert_eq!(root.dir, Path::new("/sys/fs/cgroup"));
        let err = Layout::parse(v2_mounts, "4:memory:/x\n").expect_err("no 0:: line");
        assert!(err.to_string().contains("no 0::/PATH line"), "{err}");

        // A mount of a sub-tree (a container's view): paths are relative to its root.
        let sub = "100 99 0:30 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let Layout::V1(own) = Layout::parse(sub, "4:memory:/docker/abc/inner\n").expect("sub")
        else {
            panic!("v1");
        };
        assert_eq!(own[0].dir, Path::new("/sys/fs/cgroup/memory/inner"));
        let err = Layout::parse(sub, "4:memory:/docker/abcdef\n").expect_err("outside");
        assert!(
            err.to_string().contains("outside the part /docker/abc"),
            "{err}"
        );
        let err = Layout::parse(sub, "4:memory:/docker/abc/../x\n").expect_err("dot dot");
        assert!(err.to_string().contains("'..'"), "{err}");
    }

    #[test]
    fn creates_v1_cgroups_under_the_own_path() {
        let fs = FakeFs::leak(FakeState {
            interface: V1_INTERFACE.to_vec(),
            ..FakeState::default()
        });
        let limits = Limits {
            memory: Some(64 << 20),
            pids: Some(10),
            cpus: Some(1.5),
        };
        let cgroup = create_in(fs, &hybrid_layout(), "box", &limits).expect("create");
        assert_eq!(
            fs.log(),
            [
                "mkdir /sys/fs/cgroup/memory/process_api/aee5/kiln",
                "mkdir /sys/fs/cgroup/memory/process_api/aee5/kiln/box",
                "mkdir /sys/fs/cgroup/pids/kiln",
                "mkdir /sys/fs/cgroup/pids/kiln/box",
                "mkdir /sys/fs/cgroup/cpu/kiln",
                "mkdir /sys/fs/cgroup/cpu/kiln/box",
                "write /sys/fs/cgroup/memory/process_api/aee5/kiln/box/memory.limit_in_bytes 67108864",
                "write /sys/fs/cgroup/memory/process_api/aee5/kiln/box/memory.memsw.limit_in_bytes 67108864",
                "write /sys/fs/cgroup/pids/kiln/box/pids.max 10",
                "write /sys/fs/cgroup/cpu/kiln/box/cpu.cfs_period_us 100000",
                "write /sys/fs/cgroup/cpu/kiln/box/cpu.cfs_quota_us 150000",
            ]
        );
        assert_eq!(
            cgroup.procs_files(),
            [
                PathBuf::from("/sys/fs/cgroup/memory/process_api/aee5/kiln/box/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/pids/kiln/box/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/cpu/kiln/box/cgroup.procs"),
            ]
        );
        cgroup.add_pid(42).expect("add pid");
        assert_eq!(
            fs.file("/sys/fs/cgroup/pids/kiln/box/cgroup.procs")
                .as_deref(),
            Some("42")
        );

        // Kill what is left, then rmdir in reverse order; kiln/ stays.
        let before = fs.log().len();
        cgroup.destroy().expect("destroy");
        assert_eq!(
            fs.log()[before..],
            [
                "kill 42 in /process_api/aee5/kiln/box,/kiln/box,/kiln/box",
                "rmdir /sys/fs/cgroup/cpu/kiln/box",
                "rmdir /sys/fs/cgroup/pids/kiln/box",
                "rmdir /sys/fs/cgroup/memory/process_api/aee5/kiln/box",
            ]
        );
    }

    #[test]
    fn v1_without_swap_accounting_and_co_mounted_controllers() {
        let fs = FakeFs::leak(FakeState {
            interface: vec![
                "cgroup.procs",
                "memory.limit_in_bytes",
                "cpu.cfs_period_us",
                "cpu.cfs_quota_us",
            ],
            ..FakeState::default()
        });
        let layout = Layout::parse(
            "1 0 0:1 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n2 0 0:2 / /cg/memory rw - cgroup cgroup rw,memory\n",
            "3:cpu,cpuacct:/a\n4:memory:/a\n",
        )
        .expect("layout");
        let limits = Limits {
            memory: Some(10 << 20),
            pids: None,
            cpus: Some(0.25),
        };
        let cgroup = create_in(fs, &layout, "b", &limits).expect("create without pids");
        let log = fs.log();
        assert!(!log.iter().any(|l| l.contains("memsw")), "{log:?}");
        assert!(
            log.contains(&"write /cg/cpu,cpuacct/a/kiln/b/cpu.cfs_quota_us 25000".to_string()),
            "{log:?}"
        );
        assert_eq!(cgroup.procs_files().len(), 2);
        assert_eq!(cgroup.pids_current(), None);
        drop(cgroup);
        assert!(
            fs.log().last().is_some_and(|l| l.starts_with("rmdir")),
            "drop cleans up"
        );
        assert!(!fs.exists(Path::new("/cg/memory/a/kiln/b")));

        // A pids limit without a pids hierarchy is an error.
        let limits = Limits {
            pids: Some(5),
            ..Limits::default()
        };
        let err = create_in(fs, &layout, "c", &limits).expect_err("no pids");
        assert_eq!(
            err.to_string(),
            "the pids controller is not available: no cgroup v1 hierarchy has it mounted (see /proc/self/mountinfo)"
        );
        // What was created before the error is removed.
        assert!(!fs.exists(Path::new("/cg/memory/a/kiln/c")));
    }

    #[test]
    fn creates_v2_cgroups_enabling_controllers() {
        let fs = v2_fs("cpuset cpu io memory pids\n", "");
        let limits = Limits {
            memory: Some(64 << 20),
            pids: Some(10),
            cpus: Some(2.0),
        };
        let cgroup = create_in(fs, &v2_layout(), "box", &limits).expect("create");
        assert_eq!(
            fs.log(),
            [
                "write /cg/user.slice/app/cgroup.subtree_control +memory",
                "write /cg/user.slice/app/cgroup.subtree_control +pids",
                "write /cg/user.slice/app/cgroup.subtree_control +cpu",
                "mkdir /cg/user.slice/app/kiln",
                "write /cg/user.slice/app/kiln/cgroup.subtree_control +memory",
                "write /cg/user.slice/app/kiln/cgroup.subtree_control +pids",
                "write /cg/user.slice/app/kiln/cgroup.subtree_control +cpu",
                "mkdir /cg/user.slice/app/kiln/box",
                "write /cg/user.slice/app/kiln/box/memory.max 67108864",
                "write /cg/user.slice/app/kiln/box/memory.swap.max 0",
                "write /cg/user.slice/app/kiln/box/pids.max 10",
                "write /cg/user.slice/app/kiln/box/cpu.max 200000 100000",
            ]
        );
        fs.set(
            "/cg/user.slice/app/kiln/box/memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        );
        fs.set("/cg/user.slice/app/kiln/box/memory.peak", "67100000\n");
        fs.set("/cg/user.slice/app/kiln/box/pids.current", "4\n");
        assert!(cgroup.oom_killed());
        assert_eq!(cgroup.memory_peak(), Some(67_100_000));
        assert_eq!(cgroup.pids_current(), Some(4));

        fs.set("/cg/user.slice/app/kiln/box/cgroup.procs", "7\n8\n");
        let before = fs.log().len();
        cgroup.destroy().expect("destroy");
        assert_eq!(
            fs.log()[before..],
            [
                "write /cg/user.slice/app/kiln/box/cgroup.kill 1",
                "kill 7 in /user.slice/app/kiln/box",
                "kill 8 in /user.slice/app/kiln/box",
                "rmdir /cg/user.slice/app/kiln/box",
            ]
        );
    }

    #[test]
    fn v2_controllers_already_enabled_missing_or_refused() {
        // Already delegated: only kiln/ needs them.
        let fs = v2_fs("memory pids", "memory pids");
        let cgroup = create_in(fs, &v2_layout(), "a", &Limits::default()).expect("create");
        assert!(
            !fs.log()
                .iter()
                .any(|l| l.starts_with("write /cg/user.slice/app/cgroup.subtree_control"))
        );
        assert!(!cgroup.oom_killed());
        drop(cgroup);

        // Memory is not delegated: fine without a memory limit, an error with one.
        let fs = v2_fs("pids", "");
        let cgroup = create_in(fs, &v2_layout(), "a", &Limits::default()).expect("pids only");
        assert_eq!(cgroup.memory_peak(), None);
        drop(cgroup);
        let limits = Limits {
            memory: Some(64 << 20),
            ..Limits::default()
        };
        let err = create_in(fs, &v2_layout(), "b", &limits).expect_err("no memory");
        assert_eq!(
            err.to_string(),
            "the memory controller is not available: /cg/user.slice/app/cgroup.controllers does not list it; ask for it to be delegated to this cgroup"
        );

        // The own cgroup holds processes: the kernel refuses (no internal processes rule).
        let fs = v2_fs("memory pids", "");
        fs.with(|s| {
            s.busy
                .push(PathBuf::from("/cg/user.slice/app/cgroup.subtree_control"))
        });
        let err = create_in(fs, &v2_layout(), "a", &limits).expect_err("busy");
        assert!(
            matches!(
                err,
                CgroupError::Busy {
                    controller: "memory",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("run kiln in a cgroup of its own"),
            "{err}"
        );
    }

    #[test]
    fn creation_errors() {
        let fs = FakeFs::leak(FakeState {
            interface: V1_INTERFACE.to_vec(),
            mkdir_errno: Some(libc::EACCES),
            ..FakeState::default()
        });
        let err = create_in(fs, &hybrid_layout(), "box", &Limits::default()).expect_err("rootless");
        assert_eq!(
            err.to_string(),
            "cannot create cgroup /sys/fs/cgroup/memory/process_api/aee5/kiln: Permission denied (os error 13); resource limits need root, or a delegated cgroup v2 hierarchy (for example systemd-run --user --scope -p Delegate=yes kiln ...)"
        );

        let fs = FakeFs::leak(FakeState {
            interface: V1_INTERFACE.to_vec(),
            ..FakeState::default()
        });
        let first = create_in(fs, &hybrid_layout(), "same", &Limits::default()).expect("first");
        let err = create_in(fs, &hybrid_layout(), "same", &Limits::default()).expect_err("twice");
        assert!(matches!(err, CgroupError::Exists { .. }), "{err:?}");
        // The failed second attempt removed nothing of the first.
        assert!(fs.exists(Path::new(
            "/sys/fs/cgroup/memory/process_api/aee5/kiln/same"
        )));
        assert!(fs.exists(Path::new("/sys/fs/cgroup/pids/kiln/same")));
        first.destroy().expect("destroy");

        // A write that fails after the directories exist removes them again.
        let fs = FakeFs::leak(FakeState {
            interface: vec!["cgroup.procs"],
            ..FakeState::default()
        });
        let limits = Limits {
            pids: Some(3),
            ..Limits::default()
        };
        let err = create_in(fs, &hybrid_layout(), "w", &limits).expect_err("no pids.max");
        assert!(
            err.to_string()
                .starts_with("cannot write \"3\" to /sys/fs/cgroup/pids/kiln/w/pids.max"),
            "{err}"
        );
        assert!(
            fs.log().ends_with(&[
                "rmdir /sys/fs/cgroup/pids/kiln/w".to_string(),
                "rmdir /sys/fs/cgroup/memory/process_api/aee5/kiln/w".to_string(),
            ]),
            "{:?}",
            fs.log()
        );
    }

    #[test]
    fn validates_names_and_limits() {
        let fs = FakeFs::leak(FakeState {
            interface: V1_INTERFACE.to_vec(),
            ..FakeState::default()
        });
        let mut failures = Vec::new();
        for name in ["", ".", "..", "a/b", "../x", "a\0b", &"x".repeat(256)] {
            match create_in(fs, &hybrid_layout(), name, &Limits::default()) {
                Err(CgroupError::InvalidName(_)) => {}
                other => failures.push(format!("name {name:?}: {other:?}")),
            }
        }
        let bad = [
            Limits {
                memory: Some(MIN_MEMORY - 1),
                ..Limits::default()
            },
            Limits {
                pids: Some(0),
                ..Limits::default()
            },
            Limits {
                cpus: Some(0.004),
                ..Limits::default()
            },
            Limits {
                cpus: Some(-1.0),
                ..Limits::default()
            },
            Limits {
                cpus: Some(f64::NAN),
                ..Limits::default()
            },
            Limits {
                cpus: Some(f64::INFINITY),
                ..Limits::default()
            },
        ];
        for limits in &bad {
            match create_in(fs, &hybrid_layout(), "x", limits) {
                Err(CgroupError::InvalidLimit { .. }) => {}
                other => failures.push(format!("{limits:?}: {other:?}")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(fs.log().is_empty(), "nothing created: {:?}", fs.log());
        assert_eq!(cpu_quota(0.01), Some(1_000));
        assert_eq!(cpu_quota(1.0 / 3.0), Some(33_333));
    }

    #[test]
    fn detects_v1_oom_kills() {
        let fs = FakeFs::leak(FakeState {
            interface: V1_INTERFACE.to_vec(),
            ..FakeState::default()
        });
        let limits = Limits {
            memory: Some(64 << 20),
            ..Limits::default()
        };
        let cgroup = create_in(fs, &hybrid_layout(), "o", &limits).expect("create");
        let dir = "/sys/fs/cgroup/memory/process_api/aee5/kiln/o";
        let cases = [
            (
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                "0",
                "0",
                true,
            ),
            (
                "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                "5",
                "67108864",
                false,
            ),
            // Kernels before 4.13 have no oom_kill line: the limit having been hit counts.
            ("oom_kill_disable 0\nunder_oom 0\n", "5", "67108864", true),
            ("oom_kill_disable 0\nunder_oom 0\n", "5", "1000", false),
            ("oom_kill_disable 0\nunder_oom 0\n", "0", "67108864", false),
        ];
        for (control, failcnt, max_usage, expected) in cases {
            fs.set(&format!("{dir}/memory.oom_control"), control);
            fs.set(&format!("{dir}/memory.failcnt"), failcnt);
            fs.set(&format!("{dir}/memory.max_usage_in_bytes"), max_usage);
            assert_eq!(
                cgroup.oom_killed(),
                expected,
                "{control:?} {failcnt} {max_usage}"
            );
        }
        assert_eq!(cgroup.memory_peak(), Some(67_108_864));
    }

    #[test]
    fn parses_docker_memory_sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("100b", Some(100)),
            ("100", Some(100)),
            ("512k", Some(512 << 10)),
            ("512K", Some(512 << 10)),
            ("64m", Some(64 << 20)),
            ("64mb", Some(64 << 20)),
            ("64MB", Some(64 << 20)),
            ("64MiB", Some(64 << 20)),
            ("64 m", Some(64 << 20)),
            ("1g", Some(1 << 30)),
            ("1.5g", Some(1_610_612_736)),
            ("0.5k", Some(512)),
            ("1.0000001k", Some(1024)),
            ("2t", Some(2 << 40)),
            ("1p", Some(1 << 50)),
            ("0", Some(0)),
            ("", None),
            ("m", None),
            ("-1m", None),
            ("1.m", None),
            (".5m", None),
            ("1.2.3m", None),
            ("64x", None),
            ("64mm", None),
            ("64mib ", None),
            ("64  m", None),
            (" 64m", None),
            ("64bb", None),
            ("64kb2", None),
            ("1e3", None),
            ("9999999p", None),
            ("１m", None),
            ("64é", None),
        ];
        let mut failures = Vec::new();
        for (text, expected) in cases {
            let got = parse_memory(text);
            if got.as_ref().ok() != expected.as_ref() {
                failures.push(format!("{text:?}: got {got:?}, expected {expected:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert_eq!(cases.len(), 33);
        assert_eq!(
            parse_memory("64x").expect_err("bad unit").to_string(),
            "invalid memory size \"64x\": unknown unit; use a number with an optional unit b, k, m, g, t or p, such as 64m or 1.5g"
        );
    }
}
