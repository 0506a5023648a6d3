//! A new process in a running sandbox (`kiln exec`): the parent's side.
//!
//! [`exec`] pins the sandbox's pid 1 with a pidfd (its start time read before and after, so the
//! pidfd is the process that was looked at) and checks that the process is the container's
//! (its root is the overlay of the container's upper directory, read from
//! `/proc/PID/mountinfo`). Then a fork-like child joins its namespaces with `setns(pidfd, …)`
//! (user first when the sandbox has its own, then mount, UTS, IPC, network, pid, cgroup), takes
//! pid 1's resource limits and forks the workload into the pid namespace (`child::spawn_joined`).
//! The parent writes the workload into the container's cgroup, if it has one, before letting it
//! go on; the workload then runs the same steps as a sandbox's workload (`setup::prepare_exec`):
//! a terminal from the container's devpts, the user, the default capability set, the seccomp
//! filter, `no_new_privs`, the working directory, and `execve`. The root, the mounts, the masked
//! and read-only paths are the container's already: they live in its mount namespace.
//!
//! A sandbox started with `--isolation=chroot` has no namespaces to join; [`exec`] refuses it
//! with [`RuntimeError::ExecTarget`].

use super::RuntimeError;
use super::child::{self, Child, Joiner};
use super::sandbox::{
    Sandbox, pidfd_of_child, pipe, read_report, read_until_full, receive_terminal, report_error,
};
use super::setup::{self, Context, Join, UserNamespace, WorkloadFds};
use super::spec::{Spec, Stdio};
use crate::sys::atomic::process_start_time;
use crate::sys::process;
use nix::errno::Errno;
use std::fs;
use std::io::Read as _;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The most bytes read from one `/proc/PID/{mountinfo,cgroup,limits,uid_map}` file (a sandbox
/// with thousands of mounts stays far below).
const MAX_PROC_FILE: u64 = 4 << 20;

/// The namespaces `kiln exec` joins, in the order setns(2) with a pidfd enters them (the user
/// namespace first): the name under `/proc/PID/ns/` and the `CLONE_NEW*` flag.
const NAMESPACES: [(&str, libc::c_int); 7] = [
    ("user", libc::CLONE_NEWUSER),
    ("mnt", libc::CLONE_NEWNS),
    ("uts", libc::CLONE_NEWUTS),
    ("ipc", libc::CLONE_NEWIPC),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("cgroup", libc::CLONE_NEWCGROUP),
];

/// The resource limits copied from the container's pid 1: `/proc/PID/limits`' row name and the
/// `RLIMIT_*` number.
const RLIMITS: [(&str, libc::__rlimit_resource_t); 16] = [
    ("Max cpu time", libc::RLIMIT_CPU),
    ("Max file size", libc::RLIMIT_FSIZE),
    ("Max data size", libc::RLIMIT_DATA),
    ("Max stack size", libc::RLIMIT_STACK),
    ("Max core file size", libc::RLIMIT_CORE),
    ("Max resident set", libc::RLIMIT_RSS),
    ("Max processes", libc::RLIMIT_NPROC),
    ("Max open files", libc::RLIMIT_NOFILE),
    ("Max locked memory", libc::RLIMIT_MEMLOCK),
    ("Max address space", libc::RLIMIT_AS),
    ("Max file locks", libc::RLIMIT_LOCKS),
    ("Max pending signals", libc::RLIMIT_SIGPENDING),
    ("Max msgqueue size", libc::RLIMIT_MSGQUEUE),
    ("Max nice priority", libc::RLIMIT_NICE),
    ("Max realtime priority", libc::RLIMIT_RTPRIO),
    ("Max realtime timeout", libc::RLIMIT_RTTIME),
];

/// What to start where.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// The host pid of the sandbox's pid 1.
    pub pid: i32,
    /// The sandbox's upper directory: pid 1's root must be the overlay writing there, so a pid
    /// taken by another process since the record was written is never joined.
    pub upper_dir: PathBuf,
    /// The name of the sandbox's cgroup (`runtime::cgroup`'s `kiln/<name>`), joined when pid 1
    /// is in it.
    pub cgroup_name: String,
    /// The process: `args`, `env`, `cwd`, `user`, `tty` and `no_new_privileges` are used; the
    /// root, mounts, hostname and network are the sandbox's own. `rootfs.lower_dirs` may name
    /// `/proc/PID/root` for error explanations (`container::exec_diagnosis`).
    pub process: Spec,
    /// The process outlives kiln (`kiln exec -d`): no parent-death signal.
    pub detach: bool,
}

/// The container's pid 1, pinned, and what joining it takes.
#[derive(Debug)]
struct Target {
    pidfd: OwnedFd,
    namespaces: libc::c_int,
    user_namespace: UserNamespace,
    cgroup_procs: Vec<PathBuf>,
    rlimits: Vec<(libc::c_int, u64, u64)>,
}

fn target_error(pid: i32, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::ExecTarget {
        pid,
        reason: reason.into(),
    }
}

/// Reads a `/proc` file of `pid`, bounded.
fn read_proc(pid: i32, name: &str) -> Result<String, RuntimeError> {
    let path = PathBuf::from(format!("/proc/{pid}/{name}"));
    let file = fs::File::open(&path).map_err(|source| RuntimeError::Io {
        action: "reading",
        path: path.clone(),
        source,
    })?;
    let mut text = String::new();
    file.take(MAX_PROC_FILE)
        .read_to_string(&mut text)
        .map_err(|source| RuntimeError::Io {
            action: "reading",
            path,
            source,
        })?;
    Ok(text)
}

impl Target {
    fn open(spec: &ExecSpec) -> Result<Target, RuntimeError> {
        let pid = spec.pid;
        let unsigned = u32::try_from(pid).map_err(|_| target_error(pid, "not a process id"))?;
        let before = process_start_time(unsigned);
        let pidfd = process::pidfd_open(pid).map_err(|errno| match errno {
            Errno::ESRCH => target_error(pid, "the process has exited"),
            errno => RuntimeError::Sys {
                action: "opening a pidfd for the container's first process",
                errno,
            },
        })?;
        // Read before and after the pidfd was opened: equal, the pidfd pins the process whose
        // files are read below (a pid reused in between would start later).
        if before.is_none() || process_start_time(unsigned) != before {
            return Err(target_error(pid, "the process has exited"));
        }
        if !root_is_upper(&read_proc(pid, "mountinfo")?, &spec.upper_dir) {
            return Err(target_error(
                pid,
                format!(
                    "its root is not the container's file system (upper directory {})",
                    spec.upper_dir.display()
                ),
            ));
        }
        let mut namespaces = 0;
        for (name, flag) in NAMESPACES {
            let theirs = namespace_id(&format!("/proc/{pid}/ns/{name}"))?;
            let ours = namespace_id(&format!("/proc/self/ns/{name}"))?;
            if theirs != ours {
                namespaces |= flag;
            }
        }
        if namespaces & libc::CLONE_NEWNS == 0 || namespaces & libc::CLONE_NEWPID == 0 {
            return Err(target_error(
                pid,
                "it shares kiln's mount and pid namespaces (a container run with \
                 --isolation=chroot has no namespaces for exec to join)",
            ));
        }
        let user_namespace = if namespaces & libc::CLONE_NEWUSER != 0 {
            UserNamespace::Inherited {
                uids: mapped_ids(&read_proc(pid, "uid_map")?),
                gids: mapped_ids(&read_proc(pid, "gid_map")?),
            }
        } else {
            UserNamespace::None
        };
        Ok(Target {
            pidfd,
            namespaces,
            user_namespace,
            cgroup_procs: super::cgroup::procs_files_of(
                &read_proc(std::process::id() as i32, "mountinfo")?,
                &read_proc(pid, "cgroup")?,
                &spec.cgroup_name,
            )
            .map_err(|err| RuntimeError::ExecCgroup(Box::new(err)))?,
            rlimits: rlimits(&read_proc(pid, "limits")?),
        })
    }
}

/// Whether `pid` is a live process whose root is the overlay of `upper_dir`: a sandbox's pid 1
/// (or any process of it). An exited process (a zombie not yet reaped too) has no mounts to read,
/// and a process that took a dead sandbox's pid has another root.
pub fn is_sandbox_of(pid: i32, upper_dir: &Path) -> bool {
    read_proc(pid, "mountinfo").is_ok_and(|mountinfo| root_is_upper(&mountinfo, upper_dir))
}

/// The device and inode of a namespace file: equal for the same namespace (namespaces(7)).
fn namespace_id(path: &str) -> Result<(u64, u64), RuntimeError> {
    let meta = fs::metadata(path).map_err(|source| RuntimeError::Io {
        action: "reading the namespace",
        path: PathBuf::from(path),
        source,
    })?;
    Ok((meta.dev(), meta.ino()))
}

/// How many ids a `/proc/PID/{uid,gid}_map` maps (the sum of its ranges' lengths).
fn mapped_ids(map: &str) -> u32 {
    map.lines()
        .filter_map(|line| line.split_whitespace().nth(2)?.parse::<u32>().ok())
        .fold(0u32, u32::saturating_add)
}

/// `/proc/PID/mountinfo`'s escaping of a path (proc(5): space, tab, newline and backslash as
/// three octal digits).
fn mountinfo_escape(path: &Path) -> String {
    let mut escaped = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            ' ' => escaped.push_str("\\040"),
            '\t' => escaped.push_str("\\011"),
            '\n' => escaped.push_str("\\012"),
            '\\' => escaped.push_str("\\134"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Whether the mount on `/` in `mountinfo` is an overlay whose upper directory is `upper_dir`
/// (overlayfs shows `upperdir=` among its super options; `,` within is escaped by kiln's own
/// option writer as `\,`, which `mountinfo` shows as it is).
fn root_is_upper(mountinfo: &str, upper_dir: &Path) -> bool {
    let wanted = format!("upperdir={}", mountinfo_escape(upper_dir));
    mountinfo.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(separator) = fields.iter().position(|f| *f == "-") else {
            return false;
        };
        let mount_point = fields.get(4);
        let fstype = fields.get(separator + 1);
        let options = fields.get(separator + 3).copied().unwrap_or_default();
        mount_point == Some(&"/")
            && fstype == Some(&"overlay")
            && options.split(',').any(|option| option == wanted)
    })
}

/// The limits of `/proc/PID/limits` (proc(5)): `(RLIMIT_*, soft, hard)`, `unlimited` as
/// `RLIM_INFINITY`. Rows that do not parse are left as kiln's own.
fn rlimits(limits: &str) -> Vec<(libc::c_int, u64, u64)> {
    let value = |text: &str| match text {
        "unlimited" => Some(libc::RLIM_INFINITY),
        number => number.parse::<u64>().ok(),
    };
    let mut found = Vec::new();
    for line in limits.lines() {
        for (name, resource) in RLIMITS {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            if let (Some(soft), Some(hard)) =
                (fields.next().and_then(value), fields.next().and_then(value))
                && let Ok(resource) = libc::c_int::try_from(resource)
            {
                found.push((resource, soft, hard));
            }
        }
    }
    found
}

/// Starts `spec.process` in the running sandbox whose pid 1 is `spec.pid` and returns once it
/// has executed (or with why it could not: an exec failure is [`RuntimeError::Exec`]). The
/// returned [`Sandbox`] is the new process: waited for, signalled and killed as a sandbox is;
/// with [`Stdio::Terminal`] its terminal's master is in [`Sandbox::take_terminal`].
pub fn exec(spec: &ExecSpec, stdio: Stdio) -> Result<Sandbox, RuntimeError> {
    let target = Target::open(spec)?;
    let (stdio_fds, inherited, terminal_socket) = super::sandbox::child_stdio(stdio)?;
    let (sync_read, sync_write) = pipe()?;
    let (report_read, report_write) = pipe()?;
    let (pid_read, pid_write) = pipe()?;
    let ctx = Context {
        staging: PathBuf::new(),
        user_namespace: target.user_namespace,
        fds: WorkloadFds {
            stdio: stdio_fds,
            report: report_write.as_raw_fd(),
        },
        loop_devices: 0,
    };
    let join = Join {
        pidfd: target.pidfd.as_raw_fd(),
        namespaces: target.namespaces,
        rlimits: target.rlimits.clone(),
    };
    let plan = setup::prepare_exec(&spec.process, &ctx, &join)?;
    let mut keep: Vec<RawFd> = vec![
        0,
        1,
        2,
        sync_read.as_raw_fd(),
        report_write.as_raw_fd(),
        pid_write.as_raw_fd(),
        target.pidfd.as_raw_fd(),
    ];
    keep.extend(inherited.iter().map(AsRawFd::as_raw_fd));
    keep.sort_unstable();
    keep.dedup();
    let joiner = Joiner {
        child: Child {
            plan: &plan,
            sync: sync_read.as_raw_fd(),
            report: report_write.as_raw_fd(),
            status: None,
            keep: &keep,
        },
        pid_pipe: pid_write.as_raw_fd(),
        detached: spec.detach,
    };
    let first = child::spawn_joined(&joiner).map_err(|errno| RuntimeError::Sys {
        action: "creating the process that joins the container (clone)",
        errno,
    })?;
    drop((sync_read, report_write, pid_write, inherited));
    let workload = read_pid(pid_read);
    // The first child exits right after sending the pid (or failing).
    process::wait(first).map_err(|errno| RuntimeError::Sys {
        action: "waiting for the process that joins the container",
        errno,
    })?;
    let pid = match workload? {
        Some(pid) => pid,
        None => {
            return Err(match read_report(report_read)? {
                Some(report) => report_error(&plan, report),
                None => RuntimeError::Setup {
                    step: "joining the container: the process ended without a report".into(),
                    errno: Errno::UnknownErrno,
                },
            });
        }
    };
    let pidfd = pidfd_of_child(pid, "opening a pidfd for the exec'd process")?;
    // Dropped on an error from here on, it kills and reaps the process.
    let mut sandbox = Sandbox::joined(pid, pidfd, None);
    for procs in &target.cgroup_procs {
        fs::write(procs, pid.to_string()).map_err(|source| RuntimeError::Io {
            action: "adding the process to the container's cgroup",
            path: procs.clone(),
            source,
        })?;
    }
    nix::unistd::write(&sync_write, &[1]).map_err(|errno| RuntimeError::Sys {
        action: "starting the exec'd process",
        errno,
    })?;
    drop(sync_write);
    if let Some(report) = read_report(report_read)? {
        return Err(report_error(&plan, report));
    }
    if let Some(socket) = terminal_socket {
        sandbox.give_terminal(receive_terminal(&socket)?);
    }
    Ok(sandbox)
}

/// The workload's pid the first child sends, or `None` when it ended without one (it failed and
/// sent a report instead).
fn read_pid(fd: OwnedFd) -> Result<Option<i32>, RuntimeError> {
    let mut bytes = [0u8; 4];
    let len = read_until_full(fd, &mut bytes, "reading the exec'd process's pid")?;
    Ok((len == 4).then(|| i32::from_ne_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_recognised_by_its_upper_directory() {
        let mountinfo = "\
1170 1169 0:97 / / rw,nodev,relatime - overlay overlay rw,lowerdir=/s/a:/s/b,upperdir=/store/containers/abc/upper,workdir=/store/containers/abc/work,index=off
1171 1170 0:99 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1180 1170 0:98 / /mnt rw,relatime - overlay overlay rw,lowerdir=/x,upperdir=/store/containers/other/upper,workdir=/w
";
        assert!(root_is_upper(
            mountinfo,
            Path::new("/store/containers/abc/upper")
        ));
        // Another container's upper, or the same one mounted elsewhere than `/`.
        assert!(!root_is_upper(
            mountinfo,
            Path::new("/store/containers/other/upper")
        ));
        assert!(!root_is_upper(mountinfo, Path::new("/store/containers/ab")));
        let spaced = "1 0 0:1 / / rw - overlay overlay rw,upperdir=/a\\040b/upper,workdir=/w\n";
        assert!(root_is_upper(spaced, Path::new("/a b/upper")));
        assert!(!root_is_upper("garbage\n", Path::new("/a")));
    }

    #[test]
    fn limits_and_maps_parse() {
        let limits = "\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max processes             garbage              1                    processes
";
        let infinity = libc::RLIM_INFINITY;
        assert_eq!(
            rlimits(limits),
            [
                (libc::RLIMIT_CPU as libc::c_int, infinity, infinity),
                (libc::RLIMIT_NOFILE as libc::c_int, 1024, 524_288),
            ]
        );
        assert_eq!(mapped_ids("0 1000 1\n1 100000 65536\n"), 65_537);
        assert_eq!(mapped_ids("0 0 4294967295\n"), u32::MAX);
    }
}
