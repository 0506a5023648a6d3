//! Starting, signalling and waiting for a sandbox: the parent's side.
//!
//! [`Sandbox::spawn`] prepares everything (the plan, pipes, a staging directory), then
//! `clone(2)`s the sandbox's first process into new mount, UTS, IPC, pid (and network, user)
//! namespaces, like `fork` (no `CLONE_VM`, no new stack). While the child waits on a pipe, the
//! parent writes its uid/gid maps and its pid into the requested `cgroup.procs` files; then the
//! child sets up its root (see `setup`) and executes the workload. Errors come back through a
//! close-on-exec pipe: end of file means `execve` succeeded. With a terminal, the workload sends
//! the master of the pty it allocated in the sandbox's devpts back through a socket pair (runc's
//! console socket), and [`Sandbox::take_terminal`] hands it to the caller.

use super::child::{self, Child, Report, STEP_FORK, STEP_SYNC};
use super::isolation::{Probe, Refused};
use super::linux;
use super::setup::{self, Action, Context, Setup, StdioFds, UserNamespace, WorkloadFds};
use super::spec::{MountSource, Network, Spec, Stdio};
use crate::sys::privilege::{self, Privilege};
use crate::sys::process;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SocketFlags,
    SocketType,
};
use std::fmt;
use std::fs;
use std::io::{self, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The highest first-free loop device a privileged sandbox's `/dev/loopN` list follows.
const MAX_FREE_LOOP: u32 = 1024;

/// Where root's user namespace maps container ids 0..65536 (see [`Spec::user_namespace`]).
pub const REMAP_BASE: u32 = 100_000;
/// How many ids root's user namespace maps.
pub const REMAP_COUNT: u32 = 65_536;

/// Why a sandbox could not be started or waited for.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// `args` is empty.
    #[error("no command to run: the argument list is empty")]
    NoCommand,
    /// A private network asked of a sandbox that makes its own user namespace (rootless kiln
    /// without subordinate ids, or root's remapped namespace), which could not join it.
    #[error(
        "the private network needs kiln's own user namespace: rootless kiln needs subordinate id \
         ranges in /etc/subuid and /etc/subgid for it (or use --network host or --network none)"
    )]
    PrivateNetworkUserNamespace,
    /// A container path that must be absolute is not.
    #[error("{what} {path:?} is not an absolute path")]
    NotAbsolute {
        /// What the path is ("working directory", "mount destination").
        what: &'static str,
        /// The path.
        path: String,
    },
    /// A string passed to the kernel contains a NUL byte.
    #[error("{what} contains a NUL byte: {value:?}")]
    Nul {
        /// What the string is.
        what: &'static str,
        /// The string.
        value: String,
    },
    /// `rootfs.lower_dirs` is empty.
    #[error("the root filesystem has no lower directory")]
    NoLowerDirs,
    /// No upper directory, but not read-only.
    #[error("a root filesystem without an upper dir must be read-only")]
    NoUpperDir,
    /// The overlay options do not fit the mount(2) data page.
    #[error(
        "the image has {count} distinct layers, over overlayfs's limit of {max} lower \
         directories (OVL_MAX_STACK); flatten it (kiln export | kiln import) or build it with \
         fewer layers"
    )]
    TooManyLayers {
        /// How many distinct layer directories the image has.
        count: usize,
        /// The kernel's limit.
        max: usize,
    },
    /// An overlay mount of more lower directories than overlayfs stacks.
    #[error(
        "the mount on {destination} has {count} distinct lower directories, over overlayfs's \
         limit of {max} (OVL_MAX_STACK)"
    )]
    MountTooManyLayers {
        /// The mount's destination, as given.
        destination: String,
        /// How many distinct lower directories it has.
        count: usize,
        /// The kernel's limit.
        max: usize,
    },
    /// A mount destination that cannot be used.
    #[error("invalid mount destination {destination:?}: {reason}")]
    InvalidMount {
        /// The destination as given.
        destination: String,
        /// Why.
        reason: &'static str,
    },
    /// A bind mount source that cannot be used.
    #[error("bind mount source {}", path.display())]
    BindSource {
        /// The host path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The hostname is longer than `HOST_NAME_MAX`.
    #[error("the hostname is {len} bytes long, over the kernel's limit of {max}")]
    HostnameTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Rootless sandboxes map one id.
    #[error(
        "a rootless sandbox without subordinate ids maps only root: cannot run as {uid}:{gid} \
         (give the user ranges in /etc/subuid and /etc/subgid with newuidmap installed, or run \
         kiln as root)"
    )]
    RootlessUser {
        /// The requested uid.
        uid: u32,
        /// The requested gid.
        gid: u32,
    },
    /// A user (or group) outside the ids of kiln's rootless namespace.
    #[error(
        "cannot run as {uid}:{gid}: kiln's user namespace maps only uids 0-{} and gids 0-{} \
         (the user's ranges in /etc/subuid and /etc/subgid; widen them for higher ids)",
        uids.saturating_sub(1),
        gids.saturating_sub(1)
    )]
    UnmappedUser {
        /// The requested uid.
        uid: u32,
        /// The requested gid.
        gid: u32,
        /// How many uids are mapped.
        uids: u32,
        /// How many gids are mapped.
        gids: u32,
    },
    /// No seccomp table for this CPU architecture.
    #[error("kiln has no seccomp filter for the {arch} architecture, so it cannot run sandboxes")]
    UnsupportedArchitecture {
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
    /// A host file operation of the parent failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done ("writing", "creating the staging directory").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A system call of the parent failed.
    #[error("{action}")]
    Sys {
        /// What was being done.
        action: &'static str,
        /// The kernel's error.
        #[source]
        errno: Errno,
    },
    /// A setup step failed inside the sandbox.
    #[error("{step}")]
    Setup {
        /// What the step was doing, with the paths involved.
        step: String,
        /// The kernel's error.
        #[source]
        errno: Errno,
    },
    /// The working directory could not be created (`reason` says why in words, see
    /// `runtime::workdir`).
    #[error(
        "cannot create the working directory {}: {reason}",
        crate::error::Escaped(cwd)
    )]
    Workdir {
        /// The working directory.
        cwd: String,
        /// Why.
        reason: String,
    },
    /// The working directory resolved outside the container (CVE-2024-21626's symptom).
    #[error("the working directory {cwd:?} is outside the container root")]
    CwdOutsideRoot {
        /// The working directory.
        cwd: String,
    },
    /// [`Spec::tty`] is set but the stdio is not [`Stdio::Terminal`].
    #[error(
        "the spec asks for a terminal (tty) but the stdio given is streams: pass Stdio::Terminal"
    )]
    TtyWithoutTerminal,
    /// [`Stdio::Terminal`] without [`Spec::tty`].
    #[error("the stdio given is a terminal but the spec does not ask for one: set Spec::tty")]
    TerminalWithoutTty,
    /// The workload executed without sending its terminal's master.
    #[error("the sandbox sent no terminal: {reason}")]
    NoTerminal {
        /// What arrived instead.
        reason: &'static str,
    },
    /// The sandbox reported something that is not a failure record.
    #[error("the sandbox process sent a truncated error report ({len} of 8 bytes)")]
    Report {
        /// How many bytes arrived.
        len: usize,
    },
    /// The kernel refused the sandbox's namespaces or mounts, and [`super::isolation::Probe`]
    /// found why: the explanation says what the environment needs.
    #[error("{explanation}")]
    Denied {
        /// What is wrong and what to change (or `--isolation=chroot`).
        explanation: String,
        /// The refused call.
        #[source]
        cause: Box<RuntimeError>,
    },
    /// `--isolation=chroot` cannot do what was asked.
    #[error("{what} is not possible with --isolation=chroot: {why}")]
    NotInChroot {
        /// The feature, as the user names it.
        what: String,
        /// Why not.
        why: String,
    },
    /// `kiln exec`'s target is not a running sandbox of this container (any more).
    #[error("cannot join process {pid}: {reason}")]
    ExecTarget {
        /// The recorded pid of the container's first process.
        pid: i32,
        /// Why not.
        reason: String,
    },
    /// `kiln exec` could not tell which cgroup the container is in.
    #[error("finding the container's cgroup")]
    ExecCgroup(#[source] Box<super::cgroup::CgroupError>),
    /// The workload could not be executed.
    #[error("exec: {program:?}: {kind}")]
    Exec {
        /// `args[0]`.
        program: String,
        /// Why.
        kind: ExecErrorKind,
        /// What a shell (and `docker run`) exits with: 127 not found, 126 not executable.
        exit_code: i32,
    },
}

impl RuntimeError {
    /// The exit code `docker run` uses for this error: 127/126 for exec errors, 125 otherwise
    /// (the runtime itself failed).
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Exec { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }
}

/// Why `execve` failed, worded as Docker (runc) words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecErrorKind {
    /// A name without `/` found in no `PATH` directory (as a regular file with an execute bit).
    NotFoundInPath,
    /// A path that does not exist (or whose `#!` interpreter does not).
    NotFound,
    /// Not executable (mode, `noexec` mount).
    PermissionDenied,
    /// Anything else (`ENOEXEC`: not a binary for this machine, ...).
    Other(Errno),
}

impl ExecErrorKind {
    /// The kind for `errno`, from a `PATH` search (`searched`) or a direct path.
    pub(super) fn new(errno: Errno, searched: bool) -> ExecErrorKind {
        match errno {
            Errno::ENOENT if searched => ExecErrorKind::NotFoundInPath,
            Errno::ENOENT => ExecErrorKind::NotFound,
            Errno::EACCES => ExecErrorKind::PermissionDenied,
            other => ExecErrorKind::Other(other),
        }
    }

    /// 127 for "not found", 126 for "found but not executable".
    pub fn exit_code(self) -> i32 {
        match self {
            ExecErrorKind::NotFoundInPath | ExecErrorKind::NotFound => 127,
            ExecErrorKind::PermissionDenied | ExecErrorKind::Other(_) => 126,
        }
    }
}

impl fmt::Display for ExecErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecErrorKind::NotFoundInPath => f.write_str("executable file not found in $PATH"),
            ExecErrorKind::NotFound => f.write_str("no such file or directory"),
            ExecErrorKind::PermissionDenied => f.write_str("permission denied"),
            // Go's lower-case strerror wording ("exec format error").
            ExecErrorKind::Other(errno) => {
                let desc = errno.desc();
                let mut chars = desc.chars();
                match chars.next() {
                    Some(first) => write!(f, "{}{}", first.to_lowercase(), chars.as_str()),
                    None => f.write_str(desc),
                }
            }
        }
    }
}

/// How the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this status.
    Exited(i32),
    /// A signal (this number) killed it. A number rather than [`Signal`] so real-time signals
    /// are represented too; see [`Outcome::signal`].
    Signaled(i32),
}

impl Outcome {
    /// The exit code a shell (and `docker run`) reports: the status, or 128 + the signal.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Exited(code) => code,
            Outcome::Signaled(signal) => 128 + signal,
        }
    }

    /// The signal that killed the workload, when it is one nix names.
    pub fn signal(self) -> Option<Signal> {
        match self {
            Outcome::Exited(_) => None,
            Outcome::Signaled(number) => Signal::try_from(number).ok(),
        }
    }

    /// From a `waitpid` status.
    fn from_wait_status(status: i32) -> Outcome {
        if libc::WIFSIGNALED(status) {
            Outcome::Signaled(libc::WTERMSIG(status))
        } else {
            Outcome::Exited(libc::WEXITSTATUS(status))
        }
    }
}

/// A running sandbox. Dropping it without [`Sandbox::wait`] kills and reaps it.
#[derive(Debug)]
pub struct Sandbox {
    /// Host pid of the sandbox's first process (pid 1 inside).
    pid: i32,
    /// A pidfd of that process: signals through it cannot hit a recycled pid.
    pidfd: Arc<OwnedFd>,
    /// With an init: the read end of the pipe it writes the workload's wait status to.
    status: Option<OwnedFd>,
    /// With [`Stdio::Terminal`]: the master of the workload's terminal, until taken.
    terminal: Option<OwnedFd>,
    /// Whether `waitpid` collected the process.
    reaped: bool,
    /// An adopted process ([`Sandbox::adopt`]) that leads its own process group: what the group
    /// still holds when it ends is killed, as the end of a pid namespace's init kills the rest.
    process_group: bool,
}

/// Signals a sandbox from another thread while one waits for it (cheap to clone). After the
/// sandbox is gone, signalling fails with `ESRCH` instead of reaching another process.
#[derive(Debug, Clone)]
pub struct SandboxHandle {
    pidfd: Arc<OwnedFd>,
}

impl SandboxHandle {
    /// Sends `signal` to the sandbox's pid 1 (see [`Sandbox::signal`]).
    pub fn signal(&self, signal: Signal) -> Result<(), RuntimeError> {
        send_signal(&self.pidfd, signal)
    }

    /// Kills every process of the sandbox (see [`Sandbox::kill`]).
    pub fn kill(&self) -> Result<(), RuntimeError> {
        send_signal(&self.pidfd, Signal::SIGKILL)
    }
}

/// `pidfd_send_signal(2)`.
fn send_signal(pidfd: &OwnedFd, signal: Signal) -> Result<(), RuntimeError> {
    process::pidfd_send_signal(pidfd.as_fd(), signal).map_err(|errno| RuntimeError::Sys {
        action: "signalling the sandbox",
        errno,
    })
}

/// A pipe whose ends are close-on-exec and above 2 (see [`above_stdio`]).
pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| RuntimeError::Sys {
            action: "creating a pipe",
            errno,
        })?;
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// `fd`, or a close-on-exec duplicate numbered 3 or more: the workload `dup2`s its streams onto
/// 0, 1 and 2, which must not overwrite a source still to be duplicated.
pub(super) fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, RuntimeError> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    rustix::io::fcntl_dupfd_cloexec(&fd, 3).map_err(|error| RuntimeError::Sys {
        action: "duplicating a descriptor",
        errno: errno(error),
    })
}

/// rustix's error number as nix's.
fn errno(error: rustix::io::Errno) -> Errno {
    Errno::from_raw(error.raw_os_error())
}

/// The empty directory the root is mounted on, in the sandbox's mount namespace only (on the
/// host it stays an empty directory). Removed when dropped: once the sandbox has pivoted, or
/// failed, nothing refers to it.
struct Staging(PathBuf);

impl Staging {
    fn create() -> Result<Staging, RuntimeError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("kiln-sandbox-{}-{n}", std::process::id()));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Staging(path)),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(RuntimeError::Io {
                        action: "creating the staging directory",
                        path,
                        source,
                    });
                }
            }
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// The workload's stdio as the child receives it: the descriptors it inherits (closed here once
/// it has them: the streams moved above 2, or for a terminal the child's end of the console
/// socket pair), what the child's setup is told of them, and the parent's end of the socket.
pub(super) fn child_stdio(
    stdio: Stdio,
) -> Result<(StdioFds, Vec<OwnedFd>, Option<OwnedFd>), RuntimeError> {
    let mut inherited: Vec<OwnedFd> = Vec::new();
    let mut terminal_socket = None;
    let stdio_fds = match stdio {
        Stdio::Streams {
            stdin,
            stdout,
            stderr,
        } => {
            let stdin = stdin.map(above_stdio).transpose()?;
            let stdout = above_stdio(stdout)?;
            let stderr = above_stdio(stderr)?;
            let fds = StdioFds::Streams {
                stdin: stdin.as_ref().map(AsRawFd::as_raw_fd),
                stdout: stdout.as_raw_fd(),
                stderr: stderr.as_raw_fd(),
            };
            inherited.extend(stdin);
            inherited.extend([stdout, stderr]);
            fds
        }
        Stdio::Terminal { size } => {
            let (ours, theirs) = socket_pair()?;
            let fds = StdioFds::Terminal {
                socket: theirs.as_raw_fd(),
                size,
            };
            terminal_socket = Some(ours);
            inherited.push(theirs);
            fds
        }
    };
    Ok((stdio_fds, inherited, terminal_socket))
}

/// A pidfd of `pid`, this process's own child not yet reaped (so no other process can hold its
/// pid); when none can be opened the child is killed and reaped, and the error says `action`.
pub(super) fn pidfd_of_child(pid: i32, action: &'static str) -> Result<OwnedFd, RuntimeError> {
    process::pidfd_open(pid).map_err(|errno| {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        RuntimeError::Sys { action, errno }
    })
}

/// The id mapping for `spec` when kiln runs with `privilege`.
fn user_namespace_for(spec: &Spec, privilege: Privilege) -> UserNamespace {
    match privilege {
        Privilege::Single { uid, gid } => UserNamespace::Rootless {
            host_uid: uid,
            host_gid: gid,
        },
        // A nested id map would need ids kiln's namespace has not got: reuse it.
        Privilege::NamespaceRoot { uids, gids } => UserNamespace::Inherited { uids, gids },
        Privilege::Root if spec.user_namespace => UserNamespace::Remapped {
            base: REMAP_BASE,
            count: REMAP_COUNT,
        },
        Privilege::Root => UserNamespace::None,
    }
}

/// Writes `contents` to `path` in one write(2), as /proc's id map files require.
fn write_file(path: &Path, contents: &str) -> Result<(), RuntimeError> {
    fs::write(path, contents).map_err(|source| RuntimeError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

/// The parent's side of the handshake: id maps, cgroups, then "go".
fn configure(
    pid: i32,
    user_namespace: UserNamespace,
    cgroup_procs: &[PathBuf],
) -> Result<(), RuntimeError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    match user_namespace {
        UserNamespace::None | UserNamespace::Inherited { .. } => {}
        UserNamespace::Rootless { host_uid, host_gid } => {
            // An unprivileged writer must deny setgroups before it may write gid_map
            // (user_namespaces(7), "The /proc/[pid]/setgroups file", since Linux 3.19).
            write_file(&proc.join("setgroups"), "deny")?;
            write_file(&proc.join("uid_map"), &format!("0 {host_uid} 1\n"))?;
            write_file(&proc.join("gid_map"), &format!("0 {host_gid} 1\n"))?;
        }
        UserNamespace::Remapped { base, count } => {
            write_file(&proc.join("uid_map"), &format!("0 {base} {count}\n"))?;
            write_file(&proc.join("gid_map"), &format!("0 {base} {count}\n"))?;
        }
    }
    for procs in cgroup_procs {
        fs::write(procs, pid.to_string()).map_err(|source| RuntimeError::Io {
            action: "adding the sandbox to the cgroup",
            path: procs.clone(),
            source,
        })?;
    }
    Ok(())
}

/// `error` with what [`Probe`] finds about why the kernel refused (`refused`, `errno`), when it
/// finds a cause.
fn explained(refused: Refused, errno: Errno, error: RuntimeError) -> RuntimeError {
    match Probe::read().explain(refused, errno) {
        Some(explanation) => RuntimeError::Denied {
            explanation,
            cause: Box::new(error),
        },
        None => error,
    }
}

/// The error a child's [`Report`] stands for.
pub(super) fn report_error(plan: &Setup, report: Report) -> RuntimeError {
    let errno = Errno::from_raw(report.errno);
    let setup = plan.setup.len();
    let step = usize::try_from(report.step)
        .ok()
        .and_then(|n| match n.checked_sub(setup) {
            None => plan.setup.get(n),
            Some(i) => plan.workload.get(i),
        });
    match (report.step, step) {
        (STEP_SYNC, _) => RuntimeError::Setup {
            step: "waiting for the parent to configure the sandbox".into(),
            errno,
        },
        (STEP_FORK, _) => RuntimeError::Setup {
            step: "starting the workload process".into(),
            errno,
        },
        (_, Some(Action::Exec(exec))) => {
            let kind = ExecErrorKind::new(errno, exec.searched);
            RuntimeError::Exec {
                program: exec.program.clone(),
                kind,
                exit_code: kind.exit_code(),
            }
        }
        (_, Some(Action::MakeDirectory(cwd))) => RuntimeError::Workdir {
            reason: super::workdir::reason(&cwd.shown, errno),
            cwd: cwd.shown.clone(),
        },
        (_, Some(Action::VerifyCwd(cwd))) => RuntimeError::CwdOutsideRoot {
            cwd: cwd.to_string_lossy().into_owned(),
        },
        (_, Some(step)) => RuntimeError::Setup {
            step: step.describe(),
            errno,
        },
        (n, None) => RuntimeError::Setup {
            step: format!("setup step {n}"),
            errno,
        },
    }
}

/// Receives the terminal master the workload sent before executing (`Action::Terminal`), as a new
/// close-on-exec descriptor (`MSG_CMSG_CLOEXEC`, unix(7)). Called once the workload executed: the
/// message is queued by then, and should it be missing, every copy of the child's end is closed
/// (close-on-exec or closed by the workload and the init), so this reads end of file rather than
/// waiting.
pub(super) fn receive_terminal(socket: &OwnedFd) -> Result<OwnedFd, RuntimeError> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(received) => break received,
            Err(rustix::io::Errno::INTR) => {}
            Err(error) => {
                return Err(RuntimeError::Sys {
                    action: "receiving the terminal from the sandbox",
                    errno: errno(error),
                });
            }
        }
    };
    // Complete: not truncated, and exactly one SCM_RIGHTS message with exactly one descriptor.
    // Whatever else arrived is closed when dropped.
    let mut messages = 0;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        messages += 1;
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let complete = !received.flags.contains(ReturnFlags::CTRUNC) && messages == 1 && fds.len() == 1;
    match (received.bytes, fds.pop()) {
        (_, Some(fd)) if complete => Ok(fd),
        (0, _) => Err(RuntimeError::NoTerminal {
            reason: "the socket was closed",
        }),
        _ => Err(RuntimeError::NoTerminal {
            reason: "a message without exactly one descriptor",
        }),
    }
}

/// A connected pair of `AF_UNIX` sequenced-packet sockets, close-on-exec.
pub(super) fn socket_pair() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|error| RuntimeError::Sys {
        action: "creating the terminal socket pair",
        errno: errno(error),
    })?;
    Ok((above_stdio(a)?, above_stdio(b)?))
}

/// Reads the child's report: `None` at end of file (the workload executed).
pub(super) fn read_report(fd: OwnedFd) -> Result<Option<Report>, RuntimeError> {
    let mut bytes = [0u8; 8];
    match read_until_full(fd, &mut bytes, "reading the sandbox's error report")? {
        0 => Ok(None),
        8 => Ok(Some(Report::decode(bytes))),
        len => Err(RuntimeError::Report { len }),
    }
}

/// Reads the pipe `fd` until `bytes` is full or the writer closed it (a child's message of a
/// fixed size, or nothing when it exec'd); returns how many bytes came.
pub(super) fn read_until_full(
    fd: OwnedFd,
    bytes: &mut [u8],
    action: &'static str,
) -> Result<usize, RuntimeError> {
    let mut pipe = fs::File::from(fd);
    let mut len = 0;
    while len < bytes.len() {
        let rest = bytes.get_mut(len..).unwrap_or_default();
        match pipe.read(rest) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(RuntimeError::Sys {
                    action,
                    errno: Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO)),
                });
            }
        }
    }
    Ok(len)
}

impl Sandbox {
    /// Starts `spec`'s process with `stdio` and returns once it has executed the workload, or
    /// with the error that prevented it (an exec failure is [`RuntimeError::Exec`]). With
    /// [`Stdio::Terminal`] (and [`Spec::tty`]) the terminal's master is then ready in
    /// [`Sandbox::take_terminal`].
    pub fn spawn(spec: &Spec, stdio: Stdio) -> Result<Sandbox, RuntimeError> {
        let user_namespace = user_namespace_for(spec, privilege::current());
        let (stdio_fds, inherited, terminal_socket) = child_stdio(stdio)?;
        let (sync_read, sync_write) = pipe()?;
        let (report_read, report_write) = pipe()?;
        let status = if spec.init { Some(pipe()?) } else { None };
        let staging = Staging::create()?;
        if let UserNamespace::Remapped { base, .. } = user_namespace {
            // overlayfs works in the upper and work directories with the mounter's credentials,
            // which are the remapped root's: the root's and every overlay mount's.
            let mount_uppers = spec.mounts.iter().filter_map(|mount| match &mount.source {
                MountSource::Overlay { upper, .. } => upper.as_ref(),
                _ => None,
            });
            let uppers = spec.rootfs.upper.iter().chain(mount_uppers);
            for dir in uppers.flat_map(|upper| [&upper.upper_dir, &upper.work_dir]) {
                std::os::unix::fs::chown(dir, Some(base), Some(base)).map_err(|source| {
                    RuntimeError::Io {
                        action: "giving the remapped root",
                        path: dir.clone(),
                        source,
                    }
                })?;
            }
        }
        // BuildKit's insecure mode: /dev/loop0 up to 7 past the host's first free one. Bounded
        // (BuildKit is not): a host with thousands of loop devices must not make the setup huge.
        let loop_devices = if spec.privileged && !user_namespace.active() {
            linux::free_loop_device()
                .unwrap_or(0)
                .min(MAX_FREE_LOOP)
                .saturating_add(8)
        } else {
            0
        };
        let ctx = Context {
            staging: staging.0.clone(),
            user_namespace,
            fds: WorkloadFds {
                stdio: stdio_fds,
                report: report_write.as_raw_fd(),
            },
            loop_devices,
        };
        let plan = setup::prepare(spec, &ctx, &|path| fs::metadata(path).map(|m| m.is_dir()))?;
        let status_write = status.as_ref().map(|(_, write)| write.as_raw_fd());
        let mut keep: Vec<RawFd> = vec![0, 1, 2, sync_read.as_raw_fd(), report_write.as_raw_fd()];
        keep.extend(inherited.iter().map(AsRawFd::as_raw_fd));
        keep.extend(status_write);
        // The private network's namespace, joined first thing (close-on-exec: the workload
        // does not get it).
        if let Network::Private(namespace) = &spec.network {
            keep.push(namespace.raw_fd());
        }
        keep.sort_unstable();
        keep.dedup();
        let child = Child {
            plan: &plan,
            sync: sync_read.as_raw_fd(),
            report: report_write.as_raw_fd(),
            status: status_write,
            keep: &keep,
        };

        // The cgroup namespace is created by the child after the parent moved it into its
        // cgroups (Action::UnshareCgroup), so it is rooted at the sandbox's own cgroup.
        let mut flags =
            libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
        if spec.network == Network::None {
            flags |= libc::CLONE_NEWNET;
        }
        if user_namespace.creates() {
            flags |= libc::CLONE_NEWUSER;
        }
        let pid = child::clone(flags, &child).map_err(|errno| {
            explained(
                Refused::Namespaces {
                    user: user_namespace.active(),
                },
                errno,
                RuntimeError::Sys {
                    action: "creating the sandbox process (clone)",
                    errno,
                },
            )
        })?;
        // The child's ends and the workload's streams belong to the child now.
        drop((sync_read, report_write, inherited));
        let (status_read, status_write) = status.unzip();
        drop(status_write);

        let pidfd = pidfd_of_child(pid, "opening a pidfd for the sandbox")?;
        let mut sandbox = Sandbox {
            pid,
            pidfd: Arc::new(pidfd),
            status: status_read,
            terminal: None,
            reaped: false,
            process_group: false,
        };
        // On an error from here on, dropping `sandbox` kills and reaps the child.
        configure(pid, user_namespace, &spec.cgroup_procs)?;
        nix::unistd::write(&sync_write, &[1]).map_err(|errno| RuntimeError::Sys {
            action: "starting the sandbox",
            errno,
        })?;
        drop(sync_write);
        if let Some(report) = read_report(report_read)? {
            let error = report_error(&plan, report);
            return Err(match &error {
                RuntimeError::Setup { step, errno } if step.starts_with("mounting") => {
                    explained(Refused::Mount, *errno, error)
                }
                _ => error,
            });
        }
        drop(staging);
        if let Some(socket) = terminal_socket {
            sandbox.terminal = Some(receive_terminal(&socket)?);
        }
        Ok(sandbox)
    }

    /// A sandbox of the child `pid` this process started otherwise (`--isolation=chroot`): it is
    /// waited for, signalled and killed through a pidfd as a sandbox is, without an init or a
    /// terminal.
    pub(super) fn adopt(pid: i32) -> Result<Sandbox, RuntimeError> {
        let pidfd = pidfd_of_child(pid, "opening a pidfd for the chroot process")?;
        Ok(Sandbox {
            pid,
            pidfd: Arc::new(pidfd),
            status: None,
            terminal: None,
            reaped: false,
            process_group: true,
        })
    }

    /// A process `kiln exec` started in a running container (see `runtime::exec`): this
    /// process's child, waited for, signalled and killed through its pidfd; with a terminal,
    /// its master.
    pub(super) fn joined(pid: i32, pidfd: OwnedFd, terminal: Option<OwnedFd>) -> Sandbox {
        Sandbox {
            pid,
            pidfd: Arc::new(pidfd),
            status: None,
            terminal,
            reaped: false,
            process_group: false,
        }
    }

    /// The terminal master of a joined process, received once it executed.
    pub(super) fn give_terminal(&mut self, master: OwnedFd) {
        self.terminal = Some(master);
    }

    /// Lets the process run on without this handle (`kiln exec -d`): it is neither killed nor
    /// waited for; once kiln exits, the process's parent is the host's init, which reaps it.
    pub fn detach(mut self) {
        self.reaped = true;
    }

    /// The master of the workload's terminal (with [`Stdio::Terminal`]), once: the caller
    /// relays it (`tty::relay`) and sets its window size. Reading it reports EIO once every
    /// process of the sandbox has closed the slave (pty(7)). Dropping it hangs the terminal up
    /// (the workload's session gets SIGHUP).
    pub fn take_terminal(&mut self) -> Option<OwnedFd> {
        self.terminal.take()
    }

    /// The host pid of the sandbox's pid 1: the workload itself, or kiln's init with
    /// [`Spec::init`].
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A handle to signal the sandbox from another thread.
    pub fn handle(&self) -> SandboxHandle {
        SandboxHandle {
            pidfd: Arc::clone(&self.pidfd),
        }
    }

    /// Sends `signal` to pid 1. With kiln's init it is forwarded to the workload if it is one of
    /// SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH. Without, the workload is
    /// pid 1 and the kernel delivers only signals it installed a handler for (SIGKILL always).
    pub fn signal(&self, signal: Signal) -> Result<(), RuntimeError> {
        send_signal(&self.pidfd, signal)
    }

    /// Kills every process of the sandbox: SIGKILL to pid 1, and the kernel kills the rest of a
    /// pid namespace when its init dies.
    pub fn kill(&self) -> Result<(), RuntimeError> {
        send_signal(&self.pidfd, Signal::SIGKILL)
    }

    /// Waits until the workload has ended and EVERY process of the sandbox is gone: when pid 1
    /// of a namespace exits, the kernel kills the others and pid 1's exit completes only after
    /// they are reaped (pid_namespaces(7); `zap_pid_ns_processes`), so daemons the workload
    /// started (`setsid sleep 1000 &`) never outlive this call and the upper directory is quiet.
    pub fn wait(mut self) -> Result<Outcome, RuntimeError> {
        let status = self.reap()?;
        if let Some(pipe) = self.status.take() {
            let mut bytes = [0u8; 4];
            let mut pipe = fs::File::from(pipe);
            // The init wrote the workload's status before exiting; nothing there means the init
            // itself was killed (Sandbox::kill), and its own status tells how.
            if pipe.read_exact(&mut bytes).is_ok() {
                return Ok(Outcome::from_wait_status(i32::from_ne_bytes(bytes)));
            }
        }
        Ok(Outcome::from_wait_status(status))
    }

    /// `waitpid` for pid 1 (for an adopted process, after killing what its group still holds).
    fn reap(&mut self) -> Result<i32, RuntimeError> {
        if self.process_group && process::wait_unreaped(self.pid).is_ok() {
            // Unreaped, the leader's pid cannot name another group yet.
            let _ = process::kill_process_group(self.pid);
        }
        let status = process::wait(self.pid).map_err(|errno| RuntimeError::Sys {
            action: "waiting for the sandbox",
            errno,
        })?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.kill();
            let _ = self.reap();
        }
    }
}

/// Runs `spec` to completion: [`Sandbox::spawn`] then [`Sandbox::wait`].
pub fn run(spec: &Spec, stdio: Stdio) -> Result<Outcome, RuntimeError> {
    Sandbox::spawn(spec, stdio)?.wait()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_errors_read_like_docker() {
        let cases = [
            (
                Errno::ENOENT,
                true,
                "exec: \"foo\": executable file not found in $PATH",
                127,
            ),
            (
                Errno::ENOENT,
                false,
                "exec: \"foo\": no such file or directory",
                127,
            ),
            (
                Errno::EACCES,
                false,
                "exec: \"foo\": permission denied",
                126,
            ),
            (
                Errno::ENOEXEC,
                false,
                "exec: \"foo\": exec format error",
                126,
            ),
        ];
        for (errno, searched, message, code) in cases {
            let kind = ExecErrorKind::new(errno, searched);
            let err = RuntimeError::Exec {
                program: "foo".into(),
                kind,
                exit_code: kind.exit_code(),
            };
            assert_eq!(err.to_string(), message);
            assert_eq!(err.exit_code(), code);
        }
        assert_eq!(RuntimeError::NoCommand.exit_code(), 125);
    }

    #[test]
    fn outcomes() {
        assert_eq!(Outcome::from_wait_status(3 << 8), Outcome::Exited(3));
        assert_eq!(
            Outcome::from_wait_status(libc::SIGKILL),
            Outcome::Signaled(9)
        );
        assert_eq!(Outcome::Signaled(9).exit_code(), 137);
        assert_eq!(Outcome::Signaled(15).signal(), Some(Signal::SIGTERM));
        assert_eq!(Outcome::Exited(0).exit_code(), 0);
    }

    #[test]
    fn user_namespace_choice() {
        let mut spec = crate::runtime::Spec {
            rootfs: crate::runtime::RootFs {
                lower_dirs: vec!["/l".into()],
                upper: None,
                readonly: true,
            },
            args: vec!["true".into()],
            env: Vec::new(),
            cwd: "/".into(),
            user: crate::runtime::User::root(),
            hostname: "h".into(),
            network: Network::None,
            mounts: Vec::new(),
            user_namespace: false,
            cgroup_procs: Vec::new(),
            tty: false,
            no_new_privileges: false,
            init: false,
            privileged: false,
        };
        assert_eq!(
            user_namespace_for(&spec, Privilege::Root),
            UserNamespace::None
        );
        assert_eq!(
            user_namespace_for(
                &spec,
                Privilege::Single {
                    uid: 1000,
                    gid: 100
                }
            ),
            UserNamespace::Rootless {
                host_uid: 1000,
                host_gid: 100
            }
        );
        let ranged = Privilege::NamespaceRoot {
            uids: 65_537,
            gids: 65_537,
        };
        let inherited = UserNamespace::Inherited {
            uids: 65_537,
            gids: 65_537,
        };
        assert_eq!(user_namespace_for(&spec, ranged), inherited);
        assert!(inherited.active() && !inherited.creates());
        spec.user_namespace = true;
        assert_eq!(user_namespace_for(&spec, ranged), inherited);
        assert_eq!(
            user_namespace_for(&spec, Privilege::Root),
            UserNamespace::Remapped {
                base: 100_000,
                count: 65_536
            }
        );
    }

    #[test]
    fn report_maps_to_the_step() {
        let spec = crate::runtime::Spec {
            rootfs: crate::runtime::RootFs {
                lower_dirs: vec!["/l".into()],
                upper: None,
                readonly: true,
            },
            args: vec!["nope".into()],
            env: Vec::new(),
            cwd: "/x".into(),
            user: crate::runtime::User::root(),
            hostname: "h".into(),
            network: Network::Host,
            mounts: Vec::new(),
            user_namespace: false,
            cgroup_procs: Vec::new(),
            tty: false,
            no_new_privileges: false,
            init: false,
            privileged: false,
        };
        let ctx = Context {
            staging: "/s".into(),
            user_namespace: UserNamespace::None,
            fds: WorkloadFds {
                stdio: StdioFds::Streams {
                    stdin: None,
                    stdout: 3,
                    stderr: 4,
                },
                report: 5,
            },
            loop_devices: 0,
        };
        let plan = setup::prepare(&spec, &ctx, &|_| Ok(true)).expect("plan");
        let last = u32::try_from(plan.setup.len() + plan.workload.len() - 1).unwrap();
        let exec = report_error(
            &plan,
            Report {
                step: last,
                errno: libc::ENOENT,
            },
        );
        assert_eq!(
            exec.to_string(),
            "exec: \"nope\": executable file not found in $PATH"
        );
        let verify = plan
            .workload
            .iter()
            .position(|s| matches!(s, Action::VerifyCwd(_)))
            .unwrap();
        let cwd = report_error(
            &plan,
            Report {
                step: u32::try_from(plan.setup.len() + verify).unwrap(),
                errno: libc::EXDEV,
            },
        );
        assert_eq!(
            cwd.to_string(),
            "the working directory \"/x\" is outside the container root"
        );
        let first = report_error(
            &plan,
            Report {
                step: 0,
                errno: libc::EPERM,
            },
        );
        assert_eq!(
            crate::error::chain(&first),
            "creating the cgroup namespace: EPERM: Operation not permitted"
        );
        let sync = report_error(
            &plan,
            Report {
                step: STEP_SYNC,
                errno: 0,
            },
        );
        assert!(
            sync.to_string().starts_with("waiting for the parent"),
            "{sync}"
        );
    }
}
