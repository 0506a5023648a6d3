//! The setup as data: a pure function turns a [`Spec`] into the ordered [`Action`]s the sandbox's
//! first process and its workload run (see `kernel` for how each step runs).
//!
//! Everything the child needs is computed here, in the parent, before `clone(2)`: C strings,
//! paths split for `mkdir -p`, `PATH` candidates, the `argv`/`envp` arrays and the seccomp
//! program. The child then only reads this memory and makes system calls (see `child`).
//!
//! The order follows runc's `prepareRootfs`/`finalizeNamespace` and Docker's defaults (moby
//! `oci/defaults.go`): the kernel file systems, then the spec's mounts (binds, overlays,
//! tmpfs) sorted by depth so a parent is mounted before its children, the working directory,
//! `pivot_root`, then the masked and read-only paths (which must be applied to the final `/proc`
//! and `/sys`), then the read-only root. A privileged spec (BuildKit's insecure mode, see
//! [`Spec::privileged`]) changes only what that mode changes: no masks, no read-only paths,
//! writable `/sys` and cgroupfs, BuildKit's extra devices, every capability, no seccomp.

use super::sandbox::RuntimeError;
use super::seccomp;
use super::spec::{Mount, MountSource, Network, Spec, UpperDir};
use super::tty::WindowSize;
use libc::{c_char, c_int, c_ulong, sock_filter};
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The `PATH` Docker gives a container whose environment has none (moby `oci.DefaultPathEnv`).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set (moby `oci.DefaultCapabilities`): CHOWN, DAC_OVERRIDE, FSETID,
/// FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL,
/// AUDIT_WRITE, as a bit mask of capability numbers (linux/capability.h).
pub(crate) const DEFAULT_CAPABILITIES: u64 = (1 << 0) // CAP_CHOWN
    | (1 << 1) // CAP_DAC_OVERRIDE
    | (1 << 3) // CAP_FOWNER
    | (1 << 4) // CAP_FSETID
    | (1 << 5) // CAP_KILL
    | (1 << 6) // CAP_SETGID
    | (1 << 7) // CAP_SETUID
    | (1 << 8) // CAP_SETPCAP
    | (1 << 10) // CAP_NET_BIND_SERVICE
    | (1 << 13) // CAP_NET_RAW
    | (1 << 18) // CAP_SYS_CHROOT
    | (1 << 27) // CAP_MKNOD
    | (1 << 29) // CAP_AUDIT_WRITE
    | (1 << 31); // CAP_SETFCAP

/// Docker's masked paths: files get `/dev/null` bound over them, directories an empty read-only
/// tmpfs. Missing ones are skipped (they depend on the kernel's configuration).
pub(crate) const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths: bound onto themselves and made read-only.
pub(crate) const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The device nodes of the OCI runtime spec's default set (config-linux.md "Default Devices"):
/// name, major, minor. `/dev/ptmx` is a symlink to the devpts instance's `ptmx`.
pub(crate) const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The extra device nodes BuildKit's insecure mode gives outside a user namespace
/// (`entitlements.WithInsecureSpec`): path under `/dev`, major, minor; all character devices.
/// The `/dev/loopN` block devices come on top (see [`Context::loop_devices`]).
pub(crate) const PRIVILEGED_DEVICES: &[(&str, u32, u32)] = &[
    ("kmsg", 1, 11),
    ("cuse", 10, 203),
    ("fuse", 10, 229),
    ("kvm", 10, 232),
    ("net/tun", 10, 200),
    ("loop-control", 10, 237),
];

/// The major number of loop block devices (devices.txt).
const LOOP_MAJOR: u32 = 7;

/// `HOST_NAME_MAX` (limits.h).
const HOST_NAME_MAX: usize = 64;

/// The legacy mount(2) `data` argument is copied as at most one page, NUL included.
const MOUNT_DATA_MAX: usize = 4095;

/// overlayfs's limit on lower directories (`OVL_MAX_STACK`, fs/overlayfs/params.h).
const OVL_MAX_STACK: usize = 500;

/// How the sandbox's user namespace maps ids, decided by the parent from the spec and its euid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserNamespace {
    /// No user namespace: container ids are host ids (kiln runs as root).
    None,
    /// Rootless: the caller's euid/egid are root inside, nothing else is mapped, and `setgroups`
    /// is denied (user_namespaces(7): an unprivileged process may map only itself).
    Rootless { host_uid: u32, host_gid: u32 },
    /// Root asked for a user namespace: container ids `0..count` are host ids `base..base+count`.
    Remapped { base: u32, count: u32 },
    /// kiln runs as root of a user namespace already (its rootless namespace with subordinate
    /// ids, `sys::privilege`): the sandbox makes no new one, and its ids `0..uids`/`0..gids` are
    /// the ones mapped. Devices cannot be made and overlayfs needs `userxattr` as in a new one.
    Inherited { uids: u32, gids: u32 },
}

impl UserNamespace {
    /// Whether the sandbox runs in a user namespace at all (a new one or kiln's own).
    pub(crate) fn active(self) -> bool {
        self != UserNamespace::None
    }

    /// Whether the sandbox gets a new user namespace, whose id maps the parent writes.
    pub(crate) fn creates(self) -> bool {
        matches!(
            self,
            UserNamespace::Rootless { .. } | UserNamespace::Remapped { .. }
        )
    }

    /// Whether container gid `gid` has a host id (devpts refuses an unmapped `gid=`).
    fn maps_gid(self, gid: u32) -> bool {
        match self {
            UserNamespace::None => true,
            UserNamespace::Rootless { .. } => gid == 0,
            UserNamespace::Remapped { count, .. } => gid < count,
            UserNamespace::Inherited { gids, .. } => gid < gids,
        }
    }
}

/// What the plan depends on besides the spec.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// An empty host directory the root filesystem is mounted on (in the child's mount namespace
    /// only); created by the parent for this one sandbox.
    pub staging: PathBuf,
    /// The id mapping.
    pub user_namespace: UserNamespace,
    /// The workload's standard streams (descriptor numbers in the parent, all ≥ 3) and the
    /// error-report pipe it keeps until `execve`.
    pub fds: WorkloadFds,
    /// How many `/dev/loopN` block devices a privileged sandbox outside a user namespace gets:
    /// BuildKit gives `loop0` up to 7 past the host's first free one (`LOOP_CTL_GET_FREE`, 0
    /// when that fails), so a build can set up a few loop devices; unused otherwise.
    pub loop_devices: u32,
}

/// Descriptor numbers the workload inherits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkloadFds {
    /// Where its standard streams come from.
    pub stdio: StdioFds,
    /// The close-on-exec pipe errors are reported through.
    pub report: c_int,
}

/// The workload's standard streams, as the parent prepared them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StdioFds {
    /// The caller's descriptors.
    Streams {
        /// Standard input, or `None` for the container's `/dev/null`.
        stdin: Option<c_int>,
        /// Standard output.
        stdout: c_int,
        /// Standard error.
        stderr: c_int,
    },
    /// A terminal the workload allocates in the container's devpts ([`Action::Terminal`]).
    Terminal {
        /// The child's end of the socket pair the master is sent through.
        socket: c_int,
        /// The initial window size.
        size: Option<WindowSize>,
    },
}

/// The two step lists: the sandbox's first process runs `setup`, the workload runs `workload`
/// (the same process without an init, its child with one).
#[derive(Debug)]
pub(crate) struct Setup {
    /// Namespaces, mounts, `pivot_root`, hostname, loopback.
    pub setup: Vec<Action>,
    /// Stdio, credentials, capabilities, seccomp, `execve`.
    pub workload: Vec<Action>,
}

/// What to create when a mount target is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// Nothing: a missing target is an error (or, for masks, skipped).
    Nothing,
    /// Directories all the way down (`mkdir -p`, mode 0755).
    Directory,
    /// Directories, then an empty file as the last component (to bind a file onto).
    File,
}

/// A path inside the container, resolved with `openat2(RESOLVE_IN_ROOT)` from the root's
/// descriptor, so neither `..` nor a symlink in the image can lead it out of the root.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The container path, for messages (`/dev/null`).
    pub shown: String,
    /// The path relative to the root (`dev/null`); `.` for the root itself.
    pub path: CString,
    /// For `mkdir -p`: each prefix (`dev`, `dev/null`) and its last component (`dev`, `null`).
    pub prefixes: Vec<(CString, CString)>,
    /// What to create when missing.
    pub create: Create,
    /// Refuse any symlink on the way (`RESOLVE_NO_SYMLINKS`): used for the kernel file systems'
    /// mount points, as runc refuses a `/proc` that is a symlink (CVE-2019-19921).
    pub no_symlinks: bool,
}

impl Target {
    /// `path` (absolute, inside the container) cleaned lexically like Go's `filepath.Clean`.
    pub(crate) fn new(
        what: &'static str,
        path: &str,
        create: Create,
        no_symlinks: bool,
    ) -> Result<Target, RuntimeError> {
        let components = clean(what, path)?;
        let mut prefixes = Vec::with_capacity(components.len());
        let mut prefix = String::new();
        for component in &components {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(component);
            prefixes.push((c_string(what, &prefix)?, c_string(what, component)?));
        }
        let relative = if components.is_empty() { "." } else { &prefix };
        Ok(Target {
            shown: format!("/{}", components.join("/")),
            path: c_string(what, relative)?,
            prefixes,
            create,
            no_symlinks,
        })
    }

    /// Whether this is the root directory itself.
    pub(crate) fn is_root(&self) -> bool {
        self.prefixes.is_empty()
    }
}

/// The components of absolute `path` after removing empty and `.` components and resolving `..`
/// lexically (`..` at the root stays at the root, as in `filepath.Clean`).
pub(crate) fn clean<'a>(what: &'static str, path: &'a str) -> Result<Vec<&'a str>, RuntimeError> {
    if !path.starts_with('/') {
        return Err(RuntimeError::NotAbsolute {
            what,
            path: path.to_string(),
        });
    }
    let mut components = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                components.pop();
            }
            name => components.push(name),
        }
    }
    Ok(components)
}

/// The arguments of `execve(2)`, prepared in the parent.
#[derive(Debug)]
pub(crate) struct ExecArgs {
    /// `args[0]` as given, for messages.
    pub program: String,
    /// Whether `program` was looked up in `PATH` (it has no `/`).
    pub searched: bool,
    /// The paths to try: `program` itself, or each `PATH` directory joined with it.
    pub candidates: Vec<CString>,
    /// The NUL-terminated `argv` array; points into `args`.
    pub argv: Vec<*const c_char>,
    /// The NUL-terminated `envp` array; points into `env`.
    pub envp: Vec<*const c_char>,
    /// Owns the strings `argv` points to (only read through `argv`).
    _args: Vec<CString>,
    /// Owns the strings `envp` points to (only read through `envp`).
    _env: Vec<CString>,
}

#[cfg(test)]
impl ExecArgs {
    /// The argument strings (what `argv` points to).
    pub(crate) fn args(&self) -> &[CString] {
        &self._args
    }

    /// The environment strings (what `envp` points to).
    pub(crate) fn env(&self) -> &[CString] {
        &self._env
    }
}

/// Where an overlay built through fsconfig is moved to.
#[derive(Debug)]
pub(crate) enum MountPoint {
    /// The host's staging directory (the root filesystem).
    Staging(CString),
    /// A mount point inside the root (a spec's overlay mount).
    InRoot(Target),
}

/// One action of the setup, run by `kernel::run` through the `Kernel` trait.
#[derive(Debug)]
pub(crate) enum Action {
    /// After the parent wrote the id maps: `setresgid`/`setresuid` to 0 (and clear the host's
    /// supplementary groups when `setgroups` is allowed), so files are created as root of the
    /// namespace rather than as an unmapped id.
    BecomeRoot { clear_groups: bool },
    /// `unshare(CLONE_NEWCGROUP)`, once the parent has moved us into our cgroups, so the
    /// namespace's root is the sandbox's own cgroup (runc does the same, after joining).
    UnshareCgroup,
    /// `mount(NULL, "/", NULL, MS_REC|MS_PRIVATE)`: nothing mounted from here on propagates to
    /// the host's peer groups (mount_namespaces(7) "Shared subtrees").
    MakeMountsPrivate,
    /// `mount("overlay", target, "overlay", MS_NODEV[|MS_RDONLY], options)`.
    MountOverlay {
        target: CString,
        options: CString,
        readonly: bool,
    },
    /// An overlay through the new mount API, one `lowerdir+` per layer (Linux 6.8), for a
    /// stack whose `lowerdir=` option would not fit in mount(2)'s one page of data:
    /// fsopen("overlay"), fsconfig per option, FSCONFIG_CMD_CREATE, fsmount (nodev[, rdonly]),
    /// move_mount onto `target`.
    MountOverlayLayers {
        target: MountPoint,
        /// Top-most first, as `lowerdir=` lists them.
        lowers: Vec<CString>,
        /// The upper and work directories.
        upper: Option<(CString, CString)>,
        /// The `userxattr` flag (inside a user namespace).
        userxattr: bool,
        readonly: bool,
    },
    /// A single lower directory and no upper one: bind it (recursively), read-only and nodev.
    BindRoot { source: CString, target: CString },
    /// Opens the staging directory (now the new root) as the base of every later [`Target`].
    OpenRoot { path: CString },
    /// A new kernel file system (`proc`, `tmpfs`, `devpts`, `mqueue`, `sysfs`) on `target`.
    Mount {
        target: Target,
        fstype: &'static CStr,
        flags: c_ulong,
        data: Option<CString>,
    },
    /// `mknodat` of a character (or block) device named by `target`'s last component, mode
    /// 0666 (root outside a user namespace; in one, the kernel refuses mknod and the host's node
    /// is bound instead).
    MakeDevice {
        target: Target,
        major: u32,
        minor: u32,
        block: bool,
    },
    /// `mkdir -p` of a directory for device nodes (`/dev/net`), as runc makes a device's parent.
    DeviceDirectory(Target),
    /// A bind mount of the host path `source`, then `mount_setattr(2)` of `attrs` (`MOUNT_ATTR_*`)
    /// on the new mount (recursively when `recursive`), when non-zero.
    Bind {
        source: CString,
        target: Target,
        recursive: bool,
        attrs: u64,
    },
    /// `symlinkat(points_to, dir, name)`.
    Symlink {
        dir: Target,
        name: CString,
        points_to: CString,
    },
    /// `mkdir -p` of the working directory inside the root (mode 0755, owned by root).
    MakeDirectory(Target),
    /// `pivot_root(".", ".")` then `umount2(".", MNT_DETACH)` (pivot_root(2) NOTES: the old root
    /// is stacked on the new one and detached, no directory for it needed; runc does this).
    PivotRoot,
    /// Hide a path: `/dev/null` over a file, an empty read-only tmpfs over a directory.
    Mask(Target),
    /// Bind a path onto itself and make that mount read-only, nosuid, nodev, noexec.
    ReadOnlyPath(Target),
    /// `mount_setattr(MOUNT_ATTR_RDONLY)` on `/` (not recursive: `/dev`, `/proc` stay writable).
    RootReadOnly,
    /// `sethostname(2)` in the new UTS namespace.
    Hostname(CString),
    /// `SIOCSIFFLAGS` with `IFF_UP` on `lo` of the new network namespace.
    LoopbackUp,
    /// `setns(fd, CLONE_NEWNET)`: join a prepared network namespace (the descriptor is the
    /// parent's, inherited through clone(2) and closed with the others before the workload runs).
    JoinNetwork(c_int),
    /// `dup2` the workload's streams onto 0, 1, 2 (`/dev/null` for a missing stdin).
    Stdio {
        stdin: Option<c_int>,
        stdout: c_int,
        stderr: c_int,
    },
    /// Allocate a pty in the sandbox's own devpts instance (after `pivot_root`, `/dev/ptmx` is
    /// the symlink to it), send its master to the parent over `socket`, and `dup2` its slave onto
    /// 0, 1, 2: runc's console socket (`--console-socket`). A pty opened by the parent in the
    /// host's devpts would work as a terminal, but its slave has no name in the container's
    /// `/dev/pts`, so `tty` would say "not a tty". The sequence is in `kernel`.
    Terminal {
        socket: c_int,
        size: Option<WindowSize>,
    },
    /// `setsid(2)`; with a tty also `ioctl(1, TIOCSCTTY)` to make it the controlling terminal.
    NewSession { controlling_tty: bool },
    /// Close every descriptor above 2 except the report pipe, BEFORE `chdir`: a leaked directory
    /// descriptor would let a working directory `/proc/self/fd/N` reach the host
    /// (CVE-2024-21626, runc "Leaky Vessels").
    CloseFds { keep: c_int },
    /// `prctl(PR_CAPBSET_DROP)` of every capability not in `keep`.
    DropBoundingSet { keep: u64 },
    /// `setgroups` (when `groups` is `Some`), `setresgid`, `setresuid`. Without `PR_SET_KEEPCAPS`
    /// a non-zero uid loses its permitted and effective capabilities here, as in Docker.
    SetIds {
        uid: u32,
        gid: u32,
        groups: Option<Vec<libc::gid_t>>,
    },
    /// `chdir` to the working directory (after the uid change: permissions are the user's).
    Chdir(CString),
    /// `getcwd(2)` must give a path inside the root; the kernel prefixes an unreachable one with
    /// `(unreachable)` (runc's CVE-2024-21626 check).
    VerifyCwd(CString),
    /// `capset(2)`: effective = permitted = this set, inheritable empty (CVE-2022-24769); the
    /// ambient set is cleared.
    Capabilities(u64),
    /// `prctl(PR_SET_KEEPCAPS)` before [`Action::SetIds`] of a privileged spec: a switch to a
    /// non-root uid then keeps the permitted set, which [`Action::AllCapabilities`] needs (runc
    /// sets it around its user switch for the same reason). execve(2) clears the flag.
    KeepCapabilities,
    /// A privileged spec's capabilities: every one the process holds (capget's permitted set,
    /// what containerd's `cap.Current` reads) becomes effective, permitted, inheritable and
    /// ambient, so they survive the execve of a non-root user's program as in BuildKit's
    /// insecure spec.
    AllCapabilities,
    /// `prctl(PR_SET_NO_NEW_PRIVS)`: setuid binaries cannot regain what was dropped.
    NoNewPrivileges,
    /// `umask(2)` to Docker's 0022 (setup runs with 0 so modes are exact).
    Umask(libc::mode_t),
    /// Install the seccomp filter (see `seccomp`), while the process still has `CAP_SYS_ADMIN`
    /// so no `no_new_privs` is needed (seccomp(2); runc orders it so without no_new_privs). The
    /// later steps only use calls the filter allows.
    Seccomp(Vec<sock_filter>),
    /// `execve(2)`.
    Exec(ExecArgs),
    /// `setns(pidfd, flags)` (Linux 5.8): join the namespaces `flags` names of the process the
    /// pidfd pins, all at once (the kernel enters a user namespace first). `kiln exec`'s first
    /// step; a pidfd cannot name a process that took a dead container's pid.
    JoinNamespaces { pidfd: c_int, flags: c_int },
    /// `setrlimit(2)` of `resource` (an `RLIMIT_*`) to the container's own limits, so an exec'd
    /// process gets what the container's pid 1 has rather than what `kiln exec` had.
    SetRlimit {
        resource: c_int,
        soft: u64,
        hard: u64,
    },
}

impl Action {
    /// What the step does, for an error message ("mounting proc on /proc: EPERM").
    pub(crate) fn describe(&self) -> String {
        let lossy = |s: &CStr| s.to_string_lossy().into_owned();
        match self {
            Action::BecomeRoot { .. } => "becoming root of the new user namespace".into(),
            Action::UnshareCgroup => "creating the cgroup namespace".into(),
            Action::MakeMountsPrivate => "making the mounts private".into(),
            Action::MountOverlay {
                target, options, ..
            } => format!(
                "mounting the overlay root filesystem on {} (options {})",
                lossy(target),
                lossy(options)
            ),
            Action::MountOverlayLayers {
                target,
                lowers,
                upper,
                ..
            } => format!(
                "mounting {} ({} lower directories through fsconfig lowerdir+{})",
                match target {
                    MountPoint::Staging(path) =>
                        format!("the overlay root filesystem on {}", lossy(path)),
                    MountPoint::InRoot(target) => format!("an overlay on {}", target.shown),
                },
                lowers.len(),
                upper
                    .as_ref()
                    .map(|(upper, _)| format!(", upper {}", lossy(upper)))
                    .unwrap_or_default()
            ),
            Action::BindRoot { source, target } => format!(
                "bind mounting the root filesystem {} on {}",
                lossy(source),
                lossy(target)
            ),
            Action::OpenRoot { path } => format!("opening the root filesystem at {}", lossy(path)),
            Action::Mount { target, fstype, .. } => {
                format!("mounting {} on {}", lossy(fstype), target.shown)
            }
            Action::MakeDevice { target, .. } => format!("creating the device {}", target.shown),
            Action::DeviceDirectory(target) => {
                format!("creating the device directory {}", target.shown)
            }
            Action::Bind { source, target, .. } => {
                format!("bind mounting {} on {}", lossy(source), target.shown)
            }
            Action::Symlink {
                dir,
                name,
                points_to,
            } => format!(
                "creating the symlink {}/{} -> {}",
                dir.shown,
                lossy(name),
                lossy(points_to)
            ),
            Action::MakeDirectory(target) => {
                format!("creating the working directory {}", target.shown)
            }
            Action::PivotRoot => "changing into the new root (pivot_root)".into(),
            Action::Mask(target) => format!("masking {}", target.shown),
            Action::ReadOnlyPath(target) => format!("making {} read-only", target.shown),
            Action::RootReadOnly => "making the root filesystem read-only".into(),
            Action::Hostname(name) => format!("setting the hostname to {:?}", lossy(name)),
            Action::LoopbackUp => "bringing up the loopback interface".into(),
            Action::JoinNetwork(_) => "joining the private network's namespace".into(),
            Action::Stdio { .. } => "setting up stdin, stdout and stderr".into(),
            Action::Terminal { .. } => "allocating the terminal in the container's /dev/pts".into(),
            Action::NewSession { controlling_tty } => if *controlling_tty {
                "making the tty the controlling terminal of a new session"
            } else {
                "creating a new session"
            }
            .into(),
            Action::CloseFds { .. } => "closing inherited file descriptors".into(),
            Action::DropBoundingSet { .. } => "dropping capabilities from the bounding set".into(),
            Action::SetIds { uid, gid, .. } => format!("switching to user {uid}:{gid}"),
            Action::Chdir(cwd) => format!("changing to the working directory {}", lossy(cwd)),
            Action::VerifyCwd(cwd) => format!(
                "checking the working directory {}: it is outside the container",
                lossy(cwd)
            ),
            Action::Capabilities(_) => "setting the capabilities".into(),
            Action::KeepCapabilities => "keeping the capabilities across the user switch".into(),
            Action::AllCapabilities => "setting all capabilities (privileged)".into(),
            Action::NoNewPrivileges => "setting no_new_privs".into(),
            Action::Umask(_) => "setting the umask".into(),
            Action::Seccomp(_) => "installing the seccomp filter".into(),
            Action::Exec(exec) => format!("executing {:?}", exec.program),
            Action::JoinNamespaces { .. } => "joining the container's namespaces (setns)".into(),
            Action::SetRlimit { resource, .. } => {
                format!("setting the resource limit {resource} to the container's")
            }
        }
    }
}

/// A C string from `value`, or an error naming `what` when it holds a NUL byte.
fn c_string(what: &'static str, value: &str) -> Result<CString, RuntimeError> {
    CString::new(value).map_err(|_| RuntimeError::Nul {
        what,
        value: value.to_string(),
    })
}

/// A C string from a host path.
fn c_path(what: &'static str, path: &Path) -> Result<CString, RuntimeError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| RuntimeError::Nul {
        what,
        value: path.display().to_string(),
    })
}

/// `path` escaped for overlayfs options: `\`, `,` and `:` are separators there.
fn escape_overlay(path: &Path) -> Vec<u8> {
    let mut escaped = Vec::new();
    for &byte in path.as_os_str().as_bytes() {
        if matches!(byte, b'\\' | b',' | b':') {
            escaped.push(b'\\');
        }
        escaped.push(byte);
    }
    escaped
}

/// An overlay's options as the kernel takes them.
enum OverlayOptions {
    /// mount(2)'s data: `lowerdir=…[,upperdir=…,workdir=…],index=off[,userxattr]`.
    Data(CString),
    /// One fsconfig `lowerdir+` per directory, for a stack whose `lowerdir=` would not fit in
    /// mount(2)'s page (about 45 layers of kiln's snapshot paths fill one).
    Layers {
        lowers: Vec<CString>,
        upper: Option<(CString, CString)>,
    },
}

/// `dirs` without repeats, each at its top-most place. A directory may stand in a stack more
/// than once (two steps whose layers are byte-identical share one snapshot), which overlayfs
/// refuses (ELOOP: overlapping layers). The place below changes nothing in the merged view,
/// since the top one's files and whiteouts cover all it covers.
fn distinct(dirs: &[PathBuf]) -> Vec<&PathBuf> {
    let mut kept: Vec<&PathBuf> = Vec::with_capacity(dirs.len());
    for dir in dirs {
        if !kept.contains(&dir) {
            kept.push(dir);
        }
    }
    kept
}

/// The options of an overlay of `lower_dirs` (distinct, top-most first, at most
/// [`OVL_MAX_STACK`]) and `upper`.
fn overlay_options(
    lower_dirs: &[&PathBuf],
    upper: Option<&UpperDir>,
    ctx: &Context,
) -> Result<OverlayOptions, RuntimeError> {
    let mut options = b"lowerdir=".to_vec();
    for (i, lower) in lower_dirs.iter().enumerate() {
        if i > 0 {
            options.push(b':');
        }
        options.extend(escape_overlay(lower));
    }
    if let Some(upper) = upper {
        options.extend(b",upperdir=");
        options.extend(escape_overlay(&upper.upper_dir));
        options.extend(b",workdir=");
        options.extend(escape_overlay(&upper.work_dir));
    }
    // index=off: the inode index only serves hard-link copy-up and NFS export, and refuses a
    // lower directory once mounted with another upper one (overlayfs.rst "Sharing and copying").
    options.extend(b",index=off");
    if ctx.user_namespace.active() {
        // Inside a user namespace trusted.* xattrs cannot be written: overlayfs must keep
        // whiteouts and opaque markers in user.overlay.* instead (overlayfs.rst "userxattr").
        options.extend(b",userxattr");
    }
    if options.len() > MOUNT_DATA_MAX {
        let lowers = lower_dirs
            .iter()
            .map(|dir| c_path("a lower directory", dir))
            .collect::<Result<_, _>>()?;
        let upper = match upper {
            Some(upper) => Some((
                c_path("the upper directory", &upper.upper_dir)?,
                c_path("the work directory", &upper.work_dir)?,
            )),
            None => None,
        };
        return Ok(OverlayOptions::Layers { lowers, upper });
    }
    Ok(OverlayOptions::Data(CString::new(options).map_err(
        |_| RuntimeError::Nul {
            what: "a layer directory",
            value: format!("{lower_dirs:?}"),
        },
    )?))
}

/// The step that mounts the root filesystem on the staging directory.
fn rootfs_step(spec: &Spec, ctx: &Context) -> Result<Action, RuntimeError> {
    let rootfs = &spec.rootfs;
    if rootfs.lower_dirs.is_empty() {
        return Err(RuntimeError::NoLowerDirs);
    }
    if rootfs.upper.is_none() && !rootfs.readonly {
        return Err(RuntimeError::NoUpperDir);
    }
    let target = c_path("the staging directory", &ctx.staging)?;
    let lower_dirs = distinct(&rootfs.lower_dirs);
    if let ([lower], None) = (lower_dirs.as_slice(), &rootfs.upper) {
        // overlayfs refuses a single lower directory without an upper one.
        return Ok(Action::BindRoot {
            source: c_path("a lower directory", lower)?,
            target,
        });
    }
    if lower_dirs.len() > OVL_MAX_STACK {
        return Err(RuntimeError::TooManyLayers {
            count: lower_dirs.len(),
            max: OVL_MAX_STACK,
        });
    }
    let readonly = rootfs.upper.is_none();
    Ok(
        match overlay_options(&lower_dirs, rootfs.upper.as_ref(), ctx)? {
            OverlayOptions::Data(options) => Action::MountOverlay {
                target,
                options,
                readonly,
            },
            OverlayOptions::Layers { lowers, upper } => Action::MountOverlayLayers {
                target: MountPoint::Staging(target),
                lowers,
                upper,
                userxattr: ctx.user_namespace.active(),
                readonly,
            },
        },
    )
}

/// `MOUNT_ATTR_*` bits (linux/mount.h).
pub(crate) const ATTR_RDONLY: u64 = libc::MOUNT_ATTR_RDONLY;
pub(crate) const ATTR_NOSUID: u64 = libc::MOUNT_ATTR_NOSUID;
pub(crate) const ATTR_NODEV: u64 = libc::MOUNT_ATTR_NODEV;
pub(crate) const ATTR_NOEXEC: u64 = libc::MOUNT_ATTR_NOEXEC;

/// The steps that build `/dev`: Docker's tmpfs, the default devices (and a privileged spec's
/// extra ones), the standard symlinks, devpts, shm and mqueue.
fn dev_steps(spec: &Spec, ctx: &Context, steps: &mut Vec<Action>) -> Result<(), RuntimeError> {
    let system = |path: &str, create| Target::new("system mount point", path, create, true);
    steps.push(Action::Mount {
        target: system("/dev", Create::Directory)?,
        fstype: c"tmpfs",
        flags: libc::MS_NOSUID | libc::MS_STRICTATIME,
        data: Some(c"mode=755,size=65536k".into()),
    });
    for &(name, major, minor) in DEVICES {
        let path = format!("/dev/{name}");
        if ctx.user_namespace.active() {
            // mknod(2) needs CAP_MKNOD in the initial user namespace: bind the host's node.
            steps.push(Action::Bind {
                source: c_string("a device path", &path)?,
                target: system(&path, Create::File)?,
                recursive: false,
                attrs: 0,
            });
        } else {
            steps.push(Action::MakeDevice {
                target: system(&path, Create::Nothing)?,
                major,
                minor,
                block: false,
            });
        }
    }
    // BuildKit adds these only when it does not itself run in a user namespace (mknod needs
    // CAP_MKNOD in the initial one); the sandbox's own user namespace is the same condition here.
    if spec.privileged && !ctx.user_namespace.active() {
        steps.push(Action::DeviceDirectory(system(
            "/dev/net",
            Create::Directory,
        )?));
        for &(name, major, minor) in PRIVILEGED_DEVICES {
            steps.push(Action::MakeDevice {
                target: system(&format!("/dev/{name}"), Create::Nothing)?,
                major,
                minor,
                block: false,
            });
        }
        for minor in 0..ctx.loop_devices {
            steps.push(Action::MakeDevice {
                target: system(&format!("/dev/loop{minor}"), Create::Nothing)?,
                major: LOOP_MAJOR,
                minor,
                block: true,
            });
        }
    }
    for (name, points_to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        steps.push(Action::Symlink {
            dir: system("/dev", Create::Nothing)?,
            name: c_string("a device name", name)?,
            points_to: c_string("a symlink target", points_to)?,
        });
    }
    // gid=5 is the conventional tty group (Docker's default); devpts refuses an unmapped gid.
    let devpts = if ctx.user_namespace.maps_gid(5) {
        c"newinstance,ptmxmode=0666,mode=0620,gid=5"
    } else {
        c"newinstance,ptmxmode=0666,mode=0620"
    };
    steps.push(Action::Mount {
        target: system("/dev/pts", Create::Directory)?,
        fstype: c"devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: Some(devpts.into()),
    });
    steps.push(Action::Mount {
        target: system("/dev/shm", Create::Directory)?,
        fstype: c"tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: Some(c"mode=1777,size=65536k".into()),
    });
    steps.push(Action::Mount {
        target: system("/dev/mqueue", Create::Directory)?,
        fstype: c"mqueue",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    });
    Ok(())
}

/// The spec's mounts, sorted by depth (moby `sortMounts`: a parent before its children, whatever
/// their kinds; the sort is stable, so mounts of one depth keep the spec's order). `is_dir`
/// tells whether a bind source on the host is a directory (it must exist).
fn mount_steps(
    spec: &Spec,
    ctx: &Context,
    is_dir: &dyn Fn(&Path) -> std::io::Result<bool>,
    steps: &mut Vec<Action>,
) -> Result<(), RuntimeError> {
    let mut mounts: Vec<(usize, &Mount)> = Vec::new();
    for mount in &spec.mounts {
        let depth = clean("mount destination", &mount.destination)?.len();
        mounts.push((depth, mount));
    }
    mounts.sort_by_key(|&(depth, _)| depth);
    for (depth, mount) in mounts {
        let invalid = |reason| RuntimeError::InvalidMount {
            destination: mount.destination.clone(),
            reason,
        };
        if depth == 0 {
            return Err(invalid("it is the container's root"));
        }
        let cleaned = clean("mount destination", &mount.destination)?;
        if cleaned.first() == Some(&"proc") {
            // runc refuses mounts over /proc (checkProcMount): they could undo the masks.
            return Err(invalid("mounts inside /proc are not allowed"));
        }
        steps.push(mount_step(mount, ctx, is_dir)?);
    }
    Ok(())
}

/// The step of one of the spec's mounts (its destination already checked).
fn mount_step(
    mount: &Mount,
    ctx: &Context,
    is_dir: &dyn Fn(&Path) -> std::io::Result<bool>,
) -> Result<Action, RuntimeError> {
    let directory = || {
        Target::new(
            "mount destination",
            &mount.destination,
            Create::Directory,
            false,
        )
    };
    let readonly = if mount.readonly { ATTR_RDONLY } else { 0 };
    match &mount.source {
        MountSource::Bind(source) => {
            let source_is_dir = is_dir(source).map_err(|err| RuntimeError::BindSource {
                path: source.clone(),
                source: err,
            })?;
            let create = if source_is_dir {
                Create::Directory
            } else {
                Create::File
            };
            Ok(Action::Bind {
                source: c_path("a bind mount source", source)?,
                target: Target::new("mount destination", &mount.destination, create, false)?,
                recursive: true,
                attrs: readonly,
            })
        }
        MountSource::Tmpfs { size } => {
            // BuildKit's tmpfs mount: nosuid, ro when asked, size= when given.
            let mut flags = libc::MS_NOSUID;
            if mount.readonly {
                flags |= libc::MS_RDONLY;
            }
            let data = match size {
                Some(size) => Some(c_string("a tmpfs option", &format!("size={size}"))?),
                None => None,
            };
            Ok(Action::Mount {
                target: directory()?,
                fstype: c"tmpfs",
                flags,
                data,
            })
        }
        // Layers are mounted nodev, as the root filesystem is: a device node in an image never
        // reaches a host device.
        MountSource::Overlay { lowers, upper } => {
            let lowers = distinct(lowers);
            match (lowers.as_slice(), upper) {
                ([], None) => Ok(Action::Mount {
                    target: directory()?,
                    fstype: c"tmpfs",
                    flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                    data: Some(c"mode=755".into()),
                }),
                // overlayfs needs a lower directory: the upper one alone is the empty writable
                // directory whose writes go to the upper dir.
                ([], Some(upper)) => Ok(Action::Bind {
                    source: c_path("an upper directory", &upper.upper_dir)?,
                    target: directory()?,
                    recursive: true,
                    attrs: ATTR_NODEV | readonly,
                }),
                // overlayfs refuses a single lower directory without an upper one.
                ([lower], None) => Ok(Action::Bind {
                    source: c_path("a lower directory", lower)?,
                    target: directory()?,
                    recursive: true,
                    attrs: ATTR_NODEV | ATTR_RDONLY,
                }),
                (lower_dirs, upper) => {
                    if lower_dirs.len() > OVL_MAX_STACK {
                        return Err(RuntimeError::MountTooManyLayers {
                            destination: mount.destination.clone(),
                            count: lower_dirs.len(),
                            max: OVL_MAX_STACK,
                        });
                    }
                    let readonly = mount.readonly || upper.is_none();
                    Ok(match overlay_options(lower_dirs, upper.as_ref(), ctx)? {
                        OverlayOptions::Data(options) => {
                            let mut flags = libc::MS_NODEV;
                            if readonly {
                                flags |= libc::MS_RDONLY;
                            }
                            Action::Mount {
                                target: directory()?,
                                fstype: c"overlay",
                                flags,
                                data: Some(options),
                            }
                        }
                        OverlayOptions::Layers { lowers, upper } => Action::MountOverlayLayers {
                            target: MountPoint::InRoot(directory()?),
                            lowers,
                            upper,
                            userxattr: ctx.user_namespace.active(),
                            readonly,
                        },
                    })
                }
            }
        }
    }
}

/// The setup steps, run by the sandbox's first process before anything else.
fn setup_steps(
    spec: &Spec,
    ctx: &Context,
    is_dir: &dyn Fn(&Path) -> std::io::Result<bool>,
) -> Result<Vec<Action>, RuntimeError> {
    let system = |path: &str, create| Target::new("system mount point", path, create, true);
    let mut steps = Vec::new();
    if let Network::Private(namespace) = &spec.network {
        // Before anything else: the namespace belongs to kiln's own user namespace (the host's as
        // root, kiln's rootless one), which a new user namespace would no longer be privileged in.
        if ctx.user_namespace.creates() {
            return Err(RuntimeError::PrivateNetworkUserNamespace);
        }
        steps.push(Action::JoinNetwork(namespace.raw_fd()));
    }
    match ctx.user_namespace {
        UserNamespace::None => {}
        UserNamespace::Rootless { .. } => steps.push(Action::BecomeRoot {
            clear_groups: false,
        }),
        UserNamespace::Remapped { .. } => steps.push(Action::BecomeRoot { clear_groups: true }),
        // Root of kiln's namespace already.
        UserNamespace::Inherited { .. } => {}
    }
    steps.push(Action::UnshareCgroup);
    steps.push(Action::MakeMountsPrivate);
    steps.push(rootfs_step(spec, ctx)?);
    steps.push(Action::OpenRoot {
        path: c_path("the staging directory", &ctx.staging)?,
    });
    steps.push(Action::Mount {
        target: system("/proc", Create::Directory)?,
        fstype: c"proc",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    });
    dev_steps(spec, ctx, &mut steps)?;
    // Privileged: containerd's WithWriteableSysfs drops the "ro" of the /sys mount.
    let sys_readonly = if spec.privileged { 0 } else { libc::MS_RDONLY };
    let sys_flags = sys_readonly | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if spec.network == Network::Host && ctx.user_namespace.active() {
        // sysfs may only be mounted by the owner of the current network namespace; the host's
        // is not ours. Bind the host's /sys, read-only down to its submounts (cgroup file
        // systems). Recursively: a user namespace may not bind a mount without its locked
        // children (EINVAL, mount_namespaces(7) "restrictions on mount namespaces").
        steps.push(Action::Bind {
            source: c"/sys".into(),
            target: system("/sys", Create::Directory)?,
            recursive: true,
            attrs: if spec.privileged { 0 } else { ATTR_RDONLY }
                | ATTR_NOSUID
                | ATTR_NODEV
                | ATTR_NOEXEC,
        });
    } else {
        steps.push(Action::Mount {
            target: system("/sys", Create::Directory)?,
            fstype: c"sysfs",
            flags: sys_flags,
            data: None,
        });
    }
    if spec.privileged {
        // BuildKit mounts the cgroup file system on /sys/fs/cgroup (read-only, withCGroup) and
        // makes it writable in insecure mode (WithWriteableCgroupfs). In the sandbox's cgroup
        // namespace its root is the sandbox's own cgroup.
        steps.push(Action::Mount {
            target: system("/sys/fs/cgroup", Create::Nothing)?,
            fstype: c"cgroup2",
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: None,
        });
    }
    mount_steps(spec, ctx, is_dir, &mut steps)?;
    let cwd = Target::new("working directory", &spec.cwd, Create::Directory, false)?;
    if !cwd.is_root() {
        steps.push(Action::MakeDirectory(cwd));
    }
    steps.push(Action::PivotRoot);
    // Privileged: BuildKit's insecure spec empties both lists.
    if !spec.privileged {
        for path in MASKED_PATHS {
            steps.push(Action::Mask(system(path, Create::Nothing)?));
        }
        for path in READONLY_PATHS {
            steps.push(Action::ReadOnlyPath(system(path, Create::Nothing)?));
        }
    }
    if spec.rootfs.readonly && spec.rootfs.upper.is_some() {
        steps.push(Action::RootReadOnly);
    }
    if spec.hostname.len() > HOST_NAME_MAX {
        return Err(RuntimeError::HostnameTooLong {
            len: spec.hostname.len(),
            max: HOST_NAME_MAX,
        });
    }
    steps.push(Action::Hostname(c_string("the hostname", &spec.hostname)?));
    if matches!(spec.network, Network::None | Network::Private(_)) {
        steps.push(Action::LoopbackUp);
    }
    Ok(steps)
}

/// The `execve` arguments: Docker's lookup of `args[0]` in the container's `PATH` (the last
/// `PATH=` entry wins, as when the runtime sets the variables in order; empty entries mean the
/// working directory, as in Go's `LookPath`).
fn exec_args(spec: &Spec) -> Result<ExecArgs, RuntimeError> {
    let program = spec.args.first().ok_or(RuntimeError::NoCommand)?.clone();
    let args = spec
        .args
        .iter()
        .map(|arg| c_string("an argument", arg))
        .collect::<Result<Vec<_>, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|var| c_string("an environment variable", var))
        .collect::<Result<Vec<_>, _>>()?;
    let searched = !program.contains('/');
    let candidates = if searched {
        let path = spec
            .env
            .iter()
            .rev()
            .find_map(|var| var.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .map(|dir| {
                let dir = if dir.is_empty() { "." } else { dir };
                c_string(
                    "a PATH entry",
                    &format!("{}/{program}", dir.trim_end_matches('/')),
                )
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![c_string("the program", &program)?]
    };
    let pointers = |strings: &[CString]| -> Vec<*const c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    Ok(ExecArgs {
        program,
        searched,
        candidates,
        argv: pointers(&args),
        envp: pointers(&env),
        _args: args,
        _env: env,
    })
}

/// The workload's steps.
fn workload_steps(spec: &Spec, ctx: &Context) -> Result<Vec<Action>, RuntimeError> {
    let user = &spec.user;
    let groups = match ctx.user_namespace {
        UserNamespace::Rootless { .. } => {
            if user.uid != 0 || user.gid != 0 {
                return Err(RuntimeError::RootlessUser {
                    uid: user.uid,
                    gid: user.gid,
                });
            }
            None
        }
        UserNamespace::Inherited { uids, gids } => {
            let unmapped = user.uid >= uids
                || user.gid >= gids
                || user.additional_gids.iter().any(|&gid| gid >= gids);
            if unmapped {
                return Err(RuntimeError::UnmappedUser {
                    uid: user.uid,
                    gid: user.gid,
                    uids,
                    gids,
                });
            }
            // One gid: the namespace's creator may have denied setgroups (`unshare -r`).
            (gids > 1).then(|| user.additional_gids.clone())
        }
        UserNamespace::None | UserNamespace::Remapped { .. } => Some(user.additional_gids.clone()),
    };
    let cwd = Target::new("working directory", &spec.cwd, Create::Nothing, false)?;
    let cwd = c_string("the working directory", &cwd.shown)?;
    let program = if spec.privileged {
        None
    } else {
        Some(
            seccomp::program().ok_or(RuntimeError::UnsupportedArchitecture {
                arch: std::env::consts::ARCH,
            })?,
        )
    };
    let stdio = match (ctx.fds.stdio, spec.tty) {
        (
            StdioFds::Streams {
                stdin,
                stdout,
                stderr,
            },
            false,
        ) => Action::Stdio {
            stdin,
            stdout,
            stderr,
        },
        (StdioFds::Terminal { socket, size }, true) => Action::Terminal { socket, size },
        (StdioFds::Streams { .. }, true) => return Err(RuntimeError::TtyWithoutTerminal),
        (StdioFds::Terminal { .. }, false) => return Err(RuntimeError::TerminalWithoutTty),
    };
    let mut steps = vec![
        stdio,
        Action::NewSession {
            controlling_tty: spec.tty,
        },
        Action::CloseFds {
            keep: ctx.fds.report,
        },
    ];
    match program {
        Some(program) => {
            steps.push(Action::DropBoundingSet {
                keep: DEFAULT_CAPABILITIES,
            });
            steps.push(Action::Seccomp(program));
        }
        // Privileged: the bounding set stays whole and no filter is installed.
        None => steps.push(Action::KeepCapabilities),
    }
    steps.extend([
        Action::SetIds {
            uid: user.uid,
            gid: user.gid,
            groups,
        },
        Action::Chdir(cwd.clone()),
        Action::VerifyCwd(cwd),
    ]);
    steps.push(if spec.privileged {
        Action::AllCapabilities
    } else if user.uid == 0 {
        Action::Capabilities(DEFAULT_CAPABILITIES)
    } else {
        Action::Capabilities(0)
    });
    if spec.no_new_privileges {
        steps.push(Action::NoNewPrivileges);
    }
    steps.push(Action::Umask(0o022));
    steps.push(Action::Exec(exec_args(spec)?));
    Ok(steps)
}

/// What `kiln exec` joins: the container's pid 1 (as a pidfd in the parent, inherited by the
/// child), the namespaces to enter and the resource limits to take.
#[derive(Debug, Clone)]
pub(crate) struct Join {
    /// The pidfd's descriptor number.
    pub pidfd: c_int,
    /// `CLONE_NEW*` flags.
    pub namespaces: c_int,
    /// `(RLIMIT_*, soft, hard)`, `RLIM_INFINITY` for unlimited.
    pub rlimits: Vec<(c_int, u64, u64)>,
}

/// The plan of a process started in a running container (`kiln exec`): `setup` joins its
/// namespaces and takes its limits (run by a first child, which then forks so the workload is in
/// the pid namespace), `workload` is the same as a sandbox's (the user, capabilities, seccomp,
/// no_new_privs, working directory and exec of `spec`); the root, mounts, masks and read-only
/// paths are the container's already. `spec.rootfs` and the mounts are not used.
pub(crate) fn prepare_exec(spec: &Spec, ctx: &Context, join: &Join) -> Result<Setup, RuntimeError> {
    let mut setup = vec![Action::JoinNamespaces {
        pidfd: join.pidfd,
        flags: join.namespaces,
    }];
    setup.extend(
        join.rlimits
            .iter()
            .map(|&(resource, soft, hard)| Action::SetRlimit {
                resource,
                soft,
                hard,
            }),
    );
    Ok(Setup {
        setup,
        workload: workload_steps(spec, ctx)?,
    })
}

/// The whole setup for `spec`. `is_dir` stats a bind mount source on the host.
pub(crate) fn prepare(
    spec: &Spec,
    ctx: &Context,
    is_dir: &dyn Fn(&Path) -> std::io::Result<bool>,
) -> Result<Setup, RuntimeError> {
    Ok(Setup {
        setup: setup_steps(spec, ctx, is_dir)?,
        workload: workload_steps(spec, ctx)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::{RootFs, User};

    fn spec() -> Spec {
        Spec {
            rootfs: RootFs {
                lower_dirs: vec!["/layers/b".into(), "/layers/a".into()],
                upper: Some(UpperDir {
                    upper_dir: "/c/upper".into(),
                    work_dir: "/c/work".into(),
                }),
                readonly: false,
            },
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/usr/bin:/bin".into(), "A=b".into()],
            cwd: "/work/dir".into(),
            user: User::root(),
            hostname: "box".into(),
            network: Network::None,
            mounts: Vec::new(),
            user_namespace: false,
            cgroup_procs: Vec::new(),
            tty: false,
            no_new_privileges: false,
            init: false,
            privileged: false,
        }
    }

    fn ctx(user_namespace: UserNamespace) -> Context {
        Context {
            staging: "/tmp/stage".into(),
            user_namespace,
            fds: WorkloadFds {
                stdio: StdioFds::Streams {
                    stdin: None,
                    stdout: 5,
                    stderr: 6,
                },
                report: 7,
            },
            loop_devices: 0,
        }
    }

    fn bind(source: &str, destination: &str, readonly: bool) -> Mount {
        Mount {
            destination: destination.into(),
            source: MountSource::Bind(source.into()),
            readonly,
        }
    }

    fn dirs(path: &Path) -> std::io::Result<bool> {
        Ok(!path.to_string_lossy().ends_with(".txt"))
    }

    fn setup(spec: &Spec, ctx: &Context) -> Vec<String> {
        prepare(spec, ctx, &dirs)
            .expect("plan")
            .setup
            .iter()
            .map(Action::describe)
            .collect()
    }

    fn position(steps: &[String], wanted: &str) -> usize {
        steps
            .iter()
            .position(|s| s == wanted)
            .unwrap_or_else(|| panic!("no step {wanted:?} in {steps:#?}"))
    }

    #[test]
    fn setup_order_follows_runc() {
        let steps = setup(&spec(), &ctx(UserNamespace::None));
        let order = [
            "creating the cgroup namespace",
            "making the mounts private",
            "mounting the overlay root filesystem on /tmp/stage (options \
             lowerdir=/layers/b:/layers/a,upperdir=/c/upper,workdir=/c/work,index=off)",
            "opening the root filesystem at /tmp/stage",
            "mounting proc on /proc",
            "mounting tmpfs on /dev",
            "creating the device /dev/null",
            "mounting devpts on /dev/pts",
            "mounting sysfs on /sys",
            "creating the working directory /work/dir",
            "changing into the new root (pivot_root)",
            "masking /proc/kcore",
            "masking /sys/firmware",
            "making /proc/sysrq-trigger read-only",
            "setting the hostname to \"box\"",
            "bringing up the loopback interface",
        ];
        let positions: Vec<usize> = order.iter().map(|s| position(&steps, s)).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "out of order: {steps:#?}"
        );
        for path in MASKED_PATHS {
            position(&steps, &format!("masking {path}"));
        }
        for path in READONLY_PATHS {
            position(&steps, &format!("making {path} read-only"));
        }
        assert!(!steps.iter().any(|s| s.contains("becoming root")));
        assert!(
            !steps
                .iter()
                .any(|s| s.contains("read-only") && s.contains("root filesystem"))
        );
    }

    #[test]
    fn kernel_mounts_use_docker_flags() {
        let plan = prepare(&spec(), &ctx(UserNamespace::None), &dirs).expect("plan");
        let mut seen = Vec::new();
        for step in &plan.setup {
            if let Action::Mount {
                target,
                fstype,
                flags,
                data,
            } = step
            {
                seen.push((
                    target.shown.clone(),
                    fstype.to_str().unwrap().to_string(),
                    *flags,
                    data.as_ref().map(|d| d.to_str().unwrap().to_string()),
                ));
                assert!(target.no_symlinks, "{} must refuse symlinks", target.shown);
            }
        }
        let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let want = vec![
            ("/proc".into(), "proc".into(), nosuid_nodev_noexec, None),
            (
                "/dev".into(),
                "tmpfs".into(),
                libc::MS_NOSUID | libc::MS_STRICTATIME,
                Some("mode=755,size=65536k".into()),
            ),
            (
                "/dev/pts".into(),
                "devpts".into(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=0620,gid=5".into()),
            ),
            (
                "/dev/shm".into(),
                "tmpfs".into(),
                nosuid_nodev_noexec,
                Some("mode=1777,size=65536k".into()),
            ),
            (
                "/dev/mqueue".into(),
                "mqueue".into(),
                nosuid_nodev_noexec,
                None,
            ),
            (
                "/sys".into(),
                "sysfs".into(),
                libc::MS_RDONLY | nosuid_nodev_noexec,
                None,
            ),
        ];
        assert_eq!(seen, want);
    }

    #[test]
    fn devices_are_made_as_root_and_bound_in_a_user_namespace() {
        let as_root = prepare(&spec(), &ctx(UserNamespace::None), &dirs).expect("plan");
        let made: Vec<(String, u32, u32)> = as_root
            .setup
            .iter()
            .filter_map(|s| match s {
                Action::MakeDevice {
                    target,
                    major,
                    minor,
                    block: false,
                } => Some((target.shown.clone(), *major, *minor)),
                _ => None,
            })
            .collect();
        assert_eq!(made.len(), DEVICES.len());
        assert!(made.contains(&("/dev/tty".into(), 5, 0)));

        let rootless = UserNamespace::Rootless {
            host_uid: 1000,
            host_gid: 1000,
        };
        let steps = setup(&spec(), &ctx(rootless));
        for (name, _, _) in DEVICES {
            position(&steps, &format!("bind mounting /dev/{name} on /dev/{name}"));
        }
        assert!(steps.iter().all(|s| !s.starts_with("creating the device")));
        assert_eq!(
            position(&steps, "becoming root of the new user namespace"),
            0
        );
    }

    #[test]
    fn rootless_overlay_uses_userxattr_and_devpts_has_no_gid() {
        let rootless = UserNamespace::Rootless {
            host_uid: 1000,
            host_gid: 1000,
        };
        let plan = prepare(&spec(), &ctx(rootless), &dirs).expect("plan");
        let overlay = plan.setup.iter().find_map(|s| match s {
            Action::MountOverlay { options, .. } => Some(options.to_str().unwrap().to_string()),
            _ => None,
        });
        assert!(
            overlay
                .expect("an overlay")
                .ends_with(",index=off,userxattr")
        );
        let devpts = plan.setup.iter().find_map(|s| match s {
            Action::Mount { fstype, data, .. } if fstype.to_bytes() == b"devpts" => data.clone(),
            _ => None,
        });
        assert_eq!(
            devpts.expect("devpts").to_str().unwrap(),
            "newinstance,ptmxmode=0666,mode=0620"
        );
    }

    #[test]
    fn host_network_in_a_user_namespace_binds_sys() {
        let mut spec = spec();
        spec.network = Network::Host;
        let remapped = UserNamespace::Remapped {
            base: 100_000,
            count: 65536,
        };
        let plan = prepare(&spec, &ctx(remapped), &dirs).expect("plan");
        let sys = plan.setup.iter().find_map(|s| match s {
            Action::Bind {
                source,
                target,
                recursive,
                attrs,
            } if target.shown == "/sys" => Some((source.clone(), *recursive, *attrs)),
            _ => None,
        });
        let (source, recursive, attrs) = sys.expect("/sys is bound");
        assert_eq!(source.to_str().unwrap(), "/sys");
        assert!(
            recursive,
            "submounts are locked in a user namespace, and made read-only"
        );
        assert_eq!(attrs, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC);
        let described: Vec<String> = plan.setup.iter().map(Action::describe).collect();
        assert!(!described.iter().any(|s| s.contains("loopback")));
    }

    #[test]
    fn bind_mounts_sorted_by_depth_with_readonly_attrs() {
        let mut spec = spec();
        spec.mounts = vec![
            bind("/h/deep", "/data/x/y", false),
            bind("/h/data", "/data/", true),
            bind("/h/conf.txt", "/etc/../conf.txt", false),
        ];
        let plan = prepare(&spec, &ctx(UserNamespace::None), &dirs).expect("plan");
        let binds: Vec<(String, String, Create, u64)> = plan
            .setup
            .iter()
            .filter_map(|s| match s {
                Action::Bind {
                    source,
                    target,
                    attrs,
                    recursive: true,
                } => Some((
                    source.to_str().unwrap().into(),
                    target.shown.clone(),
                    target.create,
                    *attrs,
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            binds,
            vec![
                (
                    "/h/data".into(),
                    "/data".into(),
                    Create::Directory,
                    ATTR_RDONLY
                ),
                ("/h/conf.txt".into(), "/conf.txt".into(), Create::File, 0),
                ("/h/deep".into(), "/data/x/y".into(), Create::Directory, 0),
            ]
        );
        let described: Vec<String> = plan.setup.iter().map(Action::describe).collect();
        assert!(
            position(&described, "bind mounting /h/deep on /data/x/y")
                < position(&described, "changing into the new root (pivot_root)")
        );
        assert!(
            position(&described, "mounting sysfs on /sys")
                < position(&described, "bind mounting /h/data on /data")
        );
    }

    #[test]
    fn invalid_mounts_are_refused() {
        let cases: &[(&str, &str)] = &[
            (
                "/",
                "invalid mount destination \"/\": it is the container's root",
            ),
            (
                "/a/..",
                "invalid mount destination \"/a/..\": it is the container's root",
            ),
            (
                "/proc/sys",
                "invalid mount destination \"/proc/sys\": mounts inside /proc are not allowed",
            ),
            ("data", "mount destination \"data\" is not an absolute path"),
        ];
        for (destination, message) in cases {
            let mut spec = spec();
            spec.mounts = vec![bind("/h", destination, false)];
            let err = prepare(&spec, &ctx(UserNamespace::None), &dirs).unwrap_err();
            assert_eq!(crate::error::chain(&err), *message, "{destination}");
        }
        let mut spec = spec();
        spec.mounts = vec![bind("/missing", "/m", false)];
        let missing = |_: &Path| Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let err = prepare(&spec, &ctx(UserNamespace::None), &missing).unwrap_err();
        assert!(
            crate::error::chain(&err).starts_with("bind mount source /missing: "),
            "{err}"
        );
    }

    #[test]
    fn target_paths_are_cleaned_and_split() {
        let target = Target::new("t", "//a/./b/../c/", Create::Directory, false).expect("target");
        assert_eq!(target.shown, "/a/c");
        assert_eq!(target.path.to_str().unwrap(), "a/c");
        let prefixes: Vec<(&str, &str)> = target
            .prefixes
            .iter()
            .map(|(p, n)| (p.to_str().unwrap(), n.to_str().unwrap()))
            .collect();
        assert_eq!(prefixes, vec![("a", "a"), ("a/c", "c")]);
        let root = Target::new("t", "/../..", Create::Directory, false).expect("root");
        assert!(root.is_root());
        assert_eq!(root.path.to_str().unwrap(), ".");
        assert!(Target::new("t", "a/b", Create::Nothing, false).is_err());
    }

    #[test]
    fn root_cwd_needs_no_directory_and_readonly_root_is_last_mount_step() {
        let mut spec = spec();
        spec.cwd = "/".into();
        spec.rootfs.readonly = true;
        let steps = setup(&spec, &ctx(UserNamespace::None));
        assert!(
            !steps
                .iter()
                .any(|s| s.starts_with("creating the working directory"))
        );
        assert!(
            position(&steps, "making /proc/sysrq-trigger read-only")
                < position(&steps, "making the root filesystem read-only")
        );
    }

    #[test]
    fn root_without_upper_dir() {
        let mut spec = spec();
        spec.rootfs.upper = None;
        let err = prepare(&spec, &ctx(UserNamespace::None), &dirs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a root filesystem without an upper dir must be read-only"
        );
        spec.rootfs.readonly = true;
        let steps = setup(&spec, &ctx(UserNamespace::None));
        position(
            &steps,
            "mounting the overlay root filesystem on /tmp/stage (options \
             lowerdir=/layers/b:/layers/a,index=off)",
        );
        // Read-only by construction: no remount step.
        assert!(
            !steps
                .iter()
                .any(|s| s == "making the root filesystem read-only")
        );
        spec.rootfs.lower_dirs.truncate(1);
        let steps = setup(&spec, &ctx(UserNamespace::None));
        position(
            &steps,
            "bind mounting the root filesystem /layers/b on /tmp/stage",
        );
    }

    /// Two steps with byte-identical layers share a snapshot: it is mounted once, at its top-most
    /// place (issue 12, item 7).
    #[test]
    fn a_lower_dir_listed_twice_is_mounted_once_at_its_top_most_place() {
        let mut spec = spec();
        spec.rootfs.lower_dirs = ["/l/x", "/l/run", "/l/same", "/l/run2", "/l/same", "/l/base"]
            .map(PathBuf::from)
            .to_vec();
        let steps = setup(&spec, &ctx(UserNamespace::None));
        assert!(
            steps
                .iter()
                .any(|s| s.contains("lowerdir=/l/x:/l/run:/l/same:/l/run2:/l/base,upperdir=")),
            "{steps:#?}"
        );
        spec.rootfs.lower_dirs = ["/l/same", "/l/same"].map(PathBuf::from).to_vec();
        spec.rootfs.upper = None;
        spec.rootfs.readonly = true;
        let steps = setup(&spec, &ctx(UserNamespace::None));
        position(
            &steps,
            "bind mounting the root filesystem /l/same on /tmp/stage",
        );
    }

    #[test]
    fn overlay_paths_are_escaped_and_length_checked() {
        let mut spec = spec();
        spec.rootfs.lower_dirs = vec!["/l/a:b,c\\d".into()];
        let steps = setup(&spec, &ctx(UserNamespace::None));
        assert!(
            steps
                .iter()
                .any(|s| s.contains(r"lowerdir=/l/a\:b\,c\\d,upperdir=")),
            "{steps:#?}"
        );
        // A stack whose lowerdir= would not fit in a page goes through fsconfig lowerdir+
        // (issue 12, item 7: deep images).
        spec.rootfs.lower_dirs = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/kiln/layers/{i:064}")))
            .collect();
        let setup = prepare(&spec, &ctx(UserNamespace::None), &dirs).unwrap();
        let overlay = setup.setup.iter().find_map(|action| match action {
            Action::MountOverlayLayers {
                lowers,
                upper,
                readonly,
                userxattr,
                ..
            } => Some((lowers.clone(), upper.is_some(), *readonly, *userxattr)),
            _ => None,
        });
        let (lowers, has_upper, readonly, userxattr) = overlay.expect("an fsconfig overlay");
        assert_eq!(lowers.len(), 100);
        assert_eq!(
            lowers[0].to_str().unwrap(),
            format!("/var/lib/kiln/layers/{:064}", 0)
        );
        assert!(has_upper && !readonly && !userxattr);
        // Past overlayfs's 500 lower directories: a clear error.
        spec.rootfs.lower_dirs = (0..501).map(|i| PathBuf::from(format!("/l/{i}"))).collect();
        let err = prepare(&spec, &ctx(UserNamespace::None), &dirs).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the image has 501 distinct layers, over overlayfs's limit of 500"),
            "{err}"
        );
    }

    fn overlay(lowers: &[&str], upper: Option<&str>, destination: &str, readonly: bool) -> Mount {
        Mount {
            destination: destination.into(),
            source: MountSource::Overlay {
                lowers: lowers.iter().map(PathBuf::from).collect(),
                upper: upper.map(|u| UpperDir {
                    upper_dir: format!("{u}/upper").into(),
                    work_dir: format!("{u}/work").into(),
                }),
            },
            readonly,
        }
    }

    fn tmpfs(destination: &str, size: Option<u64>, readonly: bool) -> Mount {
        Mount {
            destination: destination.into(),
            source: MountSource::Tmpfs { size },
            readonly,
        }
    }

    /// The one step `mount` makes, with the spec's other defaults.
    fn mount_action(mount: Mount, user_namespace: UserNamespace) -> Action {
        let mut spec = spec();
        spec.mounts = vec![mount];
        let plan = prepare(&spec, &ctx(user_namespace), &dirs).expect("plan");
        let sys = plan
            .setup
            .iter()
            .position(|s| s.describe() == "mounting sysfs on /sys")
            .expect("sysfs");
        plan.setup.into_iter().nth(sys + 1).expect("the mount step")
    }

    #[test]
    fn mounts_of_every_kind_sort_parent_before_child() {
        let mut spec = spec();
        spec.mounts = vec![
            tmpfs("/cache/a/tmp", None, false),
            bind("/h/src", "/cache/a", true),
            overlay(&["/l/1", "/l/2"], None, "/cache", false),
            tmpfs("/t", Some(4096), false),
        ];
        let steps = setup(&spec, &ctx(UserNamespace::None));
        let sys = position(&steps, "mounting sysfs on /sys");
        assert_eq!(
            steps[sys + 1..sys + 5],
            [
                "mounting overlay on /cache",
                "mounting tmpfs on /t",
                "bind mounting /h/src on /cache/a",
                "mounting tmpfs on /cache/a/tmp",
            ]
        );
        // Every kind refuses the root and /proc alike.
        for mount in [
            tmpfs("/proc/x", None, false),
            overlay(&["/l/1"], None, "/../proc", false),
            overlay(&[], None, "/", false),
        ] {
            let mut spec = self::spec();
            spec.mounts = vec![mount];
            let err = prepare(&spec, &ctx(UserNamespace::None), &dirs).unwrap_err();
            assert!(matches!(err, RuntimeError::InvalidMount { .. }), "{err:?}");
        }
    }

    #[test]
    fn overlay_mounts_by_their_number_of_lowers_and_upper() {
        let none = UserNamespace::None;
        let nodev_ro = libc::MS_NODEV | libc::MS_RDONLY;
        // Two lowers, no upper: a read-only overlay through mount(2) data.
        let action = mount_action(overlay(&["/l/top", "/l/base"], None, "/m", false), none);
        let Action::Mount {
            target,
            fstype,
            flags,
            data,
        } = action
        else {
            panic!("{action:?}")
        };
        assert_eq!(
            (target.shown.as_str(), fstype, flags, target.create),
            ("/m", c"overlay", nodev_ro, Create::Directory)
        );
        assert_eq!(
            data.unwrap().to_str().unwrap(),
            "lowerdir=/l/top:/l/base,index=off"
        );
        // With an upper: writable, unless asked read-only; userxattr in a user namespace.
        for (readonly, flags) in [(false, libc::MS_NODEV), (true, nodev_ro)] {
            let action = mount_action(overlay(&["/l/a"], Some("/u"), "/m", readonly), none);
            let Action::Mount {
                flags: got, data, ..
            } = action
            else {
                panic!("{action:?}")
            };
            assert_eq!(got, flags);
            assert_eq!(
                data.unwrap().to_str().unwrap(),
                "lowerdir=/l/a,upperdir=/u/upper,workdir=/u/work,index=off"
            );
        }
        let rootless = UserNamespace::Rootless {
            host_uid: 1000,
            host_gid: 1000,
        };
        let action = mount_action(overlay(&["/l/a", "/l/b"], None, "/m", false), rootless);
        let Action::Mount { data, .. } = action else {
            panic!("{action:?}")
        };
        assert!(
            data.unwrap()
                .to_str()
                .unwrap()
                .ends_with(",index=off,userxattr")
        );
        // A directory listed twice counts once: one lower left, a read-only recursive bind.
        let action = mount_action(overlay(&["/l/a", "/l/a"], None, "/m", false), none);
        let Action::Bind {
            source,
            target,
            recursive,
            attrs,
        } = action
        else {
            panic!("{action:?}")
        };
        assert_eq!(source.to_str().unwrap(), "/l/a");
        assert_eq!(target.create, Create::Directory);
        assert!(recursive);
        assert_eq!(attrs, ATTR_NODEV | ATTR_RDONLY);
        // No lower: an empty read-only tmpfs, or the upper dir itself.
        let action = mount_action(overlay(&[], None, "/m", false), none);
        let Action::Mount {
            fstype,
            flags,
            data,
            ..
        } = action
        else {
            panic!("{action:?}")
        };
        assert_eq!(fstype, c"tmpfs");
        assert_eq!(flags, libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV);
        assert_eq!(data.unwrap().to_str().unwrap(), "mode=755");
        for (readonly, want) in [(false, ATTR_NODEV), (true, ATTR_NODEV | ATTR_RDONLY)] {
            let action = mount_action(overlay(&[], Some("/u"), "/m", readonly), none);
            let Action::Bind { source, attrs, .. } = action else {
                panic!("{action:?}")
            };
            assert_eq!(source.to_str().unwrap(), "/u/upper");
            assert_eq!(attrs, want);
        }
    }

    #[test]
    fn deep_overlay_mounts_go_through_fsconfig_and_are_bounded() {
        let lowers: Vec<String> = (0..100)
            .map(|i| format!("/var/lib/kiln/layers/{i:064}"))
            .collect();
        let lowers: Vec<&str> = lowers.iter().map(String::as_str).collect();
        let action = mount_action(
            overlay(&lowers, Some("/u"), "/deep", true),
            UserNamespace::None,
        );
        let Action::MountOverlayLayers {
            target: MountPoint::InRoot(target),
            lowers: got,
            upper,
            userxattr,
            readonly,
        } = &action
        else {
            panic!("{action:?}")
        };
        assert_eq!(target.shown, "/deep");
        assert!(!target.no_symlinks, "resolved in the root, like any mount");
        assert_eq!(got.len(), 100);
        assert_eq!(got[99].to_str().unwrap(), lowers[99]);
        assert_eq!(
            upper
                .as_ref()
                .map(|(u, w)| (u.to_str().unwrap(), w.to_str().unwrap())),
            Some(("/u/upper", "/u/work"))
        );
        assert!(*readonly && !userxattr);
        assert_eq!(
            action.describe(),
            "mounting an overlay on /deep (100 lower directories through fsconfig \
             lowerdir+, upper /u/upper)"
        );
        let many: Vec<String> = (0..501).map(|i| format!("/l/{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut spec = spec();
        spec.mounts = vec![overlay(&many, None, "/m", false)];
        let err = prepare(&spec, &ctx(UserNamespace::None), &dirs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the mount on /m has 501 distinct lower directories, over overlayfs's limit of 500 \
             (OVL_MAX_STACK)"
        );
    }

    #[test]
    fn tmpfs_mounts_are_nosuid_with_their_size() {
        let cases = [
            (Some(1 << 20), false, libc::MS_NOSUID, Some("size=1048576")),
            (None, false, libc::MS_NOSUID, None),
            (
                Some(0),
                true,
                libc::MS_NOSUID | libc::MS_RDONLY,
                Some("size=0"),
            ),
        ];
        for (size, readonly, want_flags, want_data) in cases {
            let action = mount_action(tmpfs("/t", size, readonly), UserNamespace::None);
            let Action::Mount {
                target,
                fstype,
                flags,
                data,
            } = action
            else {
                panic!("{action:?}")
            };
            assert_eq!((target.shown.as_str(), fstype), ("/t", c"tmpfs"));
            assert_eq!(flags, want_flags, "{size:?}");
            assert_eq!(
                data.as_ref().map(|d| d.to_str().unwrap()),
                want_data,
                "{size:?}"
            );
        }
    }

    #[test]
    fn privileged_drops_masks_seccomp_and_the_capability_bounds() {
        let mut spec = spec();
        spec.privileged = true;
        spec.user.uid = 1000;
        let mut context = ctx(UserNamespace::None);
        context.loop_devices = 3;
        let plan = prepare(&spec, &context, &dirs).expect("plan");
        let steps: Vec<String> = plan.setup.iter().map(Action::describe).collect();
        assert!(
            !plan
                .setup
                .iter()
                .any(|s| matches!(s, Action::Mask(_) | Action::ReadOnlyPath(_))),
            "{steps:#?}"
        );
        let mounts: Vec<(String, &CStr, c_ulong)> = plan
            .setup
            .iter()
            .filter_map(|s| match s {
                Action::Mount {
                    target,
                    fstype,
                    flags,
                    ..
                } if target.shown.starts_with("/sys") => {
                    Some((target.shown.clone(), *fstype, *flags))
                }
                _ => None,
            })
            .collect();
        let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        assert_eq!(
            mounts,
            [
                ("/sys".to_string(), c"sysfs", nosuid_nodev_noexec),
                (
                    "/sys/fs/cgroup".to_string(),
                    c"cgroup2",
                    nosuid_nodev_noexec
                ),
            ]
        );
        let devices: Vec<(String, u32, u32, bool)> = plan
            .setup
            .iter()
            .filter_map(|s| match s {
                Action::MakeDevice {
                    target,
                    major,
                    minor,
                    block,
                } => Some((target.shown.clone(), *major, *minor, *block)),
                _ => None,
            })
            .skip(DEVICES.len())
            .collect();
        let want: Vec<(String, u32, u32, bool)> = [
            ("/dev/kmsg", 1, 11, false),
            ("/dev/cuse", 10, 203, false),
            ("/dev/fuse", 10, 229, false),
            ("/dev/kvm", 10, 232, false),
            ("/dev/net/tun", 10, 200, false),
            ("/dev/loop-control", 10, 237, false),
            ("/dev/loop0", 7, 0, true),
            ("/dev/loop1", 7, 1, true),
            ("/dev/loop2", 7, 2, true),
        ]
        .into_iter()
        .map(|(p, a, b, c)| (p.to_string(), a, b, c))
        .collect();
        assert_eq!(devices, want);
        assert!(
            position(&steps, "creating the device directory /dev/net")
                < position(&steps, "creating the device /dev/net/tun")
        );
        let workload: Vec<String> = plan.workload.iter().map(Action::describe).collect();
        assert_eq!(
            workload,
            [
                "setting up stdin, stdout and stderr",
                "creating a new session",
                "closing inherited file descriptors",
                "keeping the capabilities across the user switch",
                "switching to user 1000:0",
                "changing to the working directory /work/dir",
                "checking the working directory /work/dir: it is outside the container",
                "setting all capabilities (privileged)",
                "setting the umask",
                "executing \"sh\"",
            ]
        );
        // In a user namespace: no extra devices (mknod is refused there), /sys bound writable.
        spec.network = Network::Host;
        let remapped = UserNamespace::Remapped {
            base: 100_000,
            count: 65536,
        };
        let plan = prepare(&spec, &ctx(remapped), &dirs).expect("plan");
        assert!(
            !plan
                .setup
                .iter()
                .any(|s| matches!(s, Action::MakeDevice { .. } | Action::DeviceDirectory(_)))
        );
        let sys = plan.setup.iter().find_map(|s| match s {
            Action::Bind { target, attrs, .. } if target.shown == "/sys" => Some(*attrs),
            _ => None,
        });
        assert_eq!(sys, Some(ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC));
    }

    #[test]
    fn workload_order_and_credentials() {
        let mut spec = spec();
        spec.user = User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![27],
        };
        let plan = prepare(&spec, &ctx(UserNamespace::None), &dirs).expect("plan");
        let described: Vec<String> = plan.workload.iter().map(Action::describe).collect();
        assert_eq!(
            described,
            vec![
                "setting up stdin, stdout and stderr",
                "creating a new session",
                "closing inherited file descriptors",
                "dropping capabilities from the bounding set",
                "installing the seccomp filter",
                "switching to user 1000:1000",
                "changing to the working directory /work/dir",
                "checking the working directory /work/dir: it is outside the container",
                "setting the capabilities",
                "setting the umask",
                "executing \"sh\"",
            ]
        );
        spec.no_new_privileges = true;
        let with_nnp = super::prepare(&spec, &ctx(UserNamespace::None), &dirs).expect("plan");
        let described: Vec<String> = with_nnp.workload.iter().map(Action::describe).collect();
        assert!(
            position(&described, "setting the capabilities")
                < position(&described, "setting no_new_privs")
        );
        assert!(
            plan.workload
                .iter()
                .any(|s| matches!(s, Action::Capabilities(0)))
        );
        assert!(plan.workload.iter().any(|s| matches!(
            s,
            Action::SetIds { groups: Some(g), .. } if g == &[27]
        )));
        assert!(
            plan.workload
                .iter()
                .any(|s| matches!(s, Action::CloseFds { keep: 7 }))
        );
        let root = super::prepare(&self::spec(), &ctx(UserNamespace::None), &dirs).expect("plan");
        assert!(
            root.workload
                .iter()
                .any(|s| matches!(s, Action::Capabilities(DEFAULT_CAPABILITIES)))
        );
    }

    #[test]
    fn terminal_is_allocated_by_the_workload_and_must_match_the_spec() {
        let mut spec = spec();
        spec.tty = true;
        let size = WindowSize { rows: 1, cols: 2 };
        let mut terminal = ctx(UserNamespace::None);
        terminal.fds.stdio = StdioFds::Terminal {
            socket: 9,
            size: Some(size),
        };
        let with_tty = prepare(&spec, &terminal, &dirs).expect("plan");
        assert!(matches!(
            with_tty.workload.first(),
            Some(Action::Terminal { socket: 9, size: Some(s) }) if *s == size
        ));
        assert!(matches!(
            with_tty.workload.get(1),
            Some(Action::NewSession {
                controlling_tty: true
            })
        ));
        // Nothing of the terminal is in the setup: the init (when there is one) gets none.
        assert!(
            !with_tty
                .setup
                .iter()
                .any(|s| matches!(s, Action::Terminal { .. }))
        );
        let err = prepare(&spec, &ctx(UserNamespace::None), &dirs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the spec asks for a terminal (tty) but the stdio given is streams: pass Stdio::Terminal"
        );
        spec.tty = false;
        let err = prepare(&spec, &terminal, &dirs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the stdio given is a terminal but the spec does not ask for one: set Spec::tty"
        );
    }

    #[test]
    fn docker_default_capabilities() {
        assert_eq!(DEFAULT_CAPABILITIES, 0xa804_25fb);
    }

    #[test]
    fn rootless_runs_only_as_root_without_groups() {
        let rootless = UserNamespace::Rootless {
            host_uid: 1000,
            host_gid: 1000,
        };
        let mut spec = spec();
        spec.user.additional_gids = vec![10];
        let plan = prepare(&spec, &ctx(rootless), &dirs).expect("plan");
        assert!(plan.workload.iter().any(|s| matches!(
            s,
            Action::SetIds {
                groups: None,
                uid: 0,
                gid: 0
            }
        )));
        spec.user.uid = 1000;
        let err = super::prepare(&spec, &ctx(rootless), &dirs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a rootless sandbox without subordinate ids maps only root: cannot run as 1000:0 \
             (give the user ranges in /etc/subuid and /etc/subgid with newuidmap installed, or \
             run kiln as root)"
        );
    }

    #[test]
    fn kiln_s_own_namespace_runs_any_mapped_user_with_groups() {
        let inherited = UserNamespace::Inherited {
            uids: 65_537,
            gids: 65_537,
        };
        let mut spec = spec();
        spec.user.uid = 1000;
        spec.user.gid = 1000;
        spec.user.additional_gids = vec![3000];
        let plan = prepare(&spec, &ctx(inherited), &dirs).expect("plan");
        assert!(plan.workload.iter().any(|s| matches!(
            s,
            Action::SetIds {
                groups: Some(groups),
                uid: 1000,
                gid: 1000
            } if groups == &[3000]
        )));
        // No new user namespace to become root of; devices bound, overlayfs with userxattr.
        let steps = plan.setup;
        assert!(!steps.iter().any(|s| matches!(s, Action::BecomeRoot { .. })));
        assert!(!steps.iter().any(|s| matches!(s, Action::MakeDevice { .. })));
        spec.user.additional_gids = vec![70_000];
        let err = super::prepare(&spec, &ctx(inherited), &dirs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot run as 1000:1000: kiln's user namespace maps only uids 0-65536 and gids \
             0-65536 (the user's ranges in /etc/subuid and /etc/subgid; widen them for higher ids)"
        );
    }

    #[test]
    fn path_lookup_candidates() {
        let cases: &[(&[&str], &str, bool, &[&str])] = &[
            (
                &["PATH=/usr/bin:/bin"],
                "sh",
                true,
                &["/usr/bin/sh", "/bin/sh"],
            ),
            (&["PATH=/a", "PATH=/b/"], "sh", true, &["/b/sh"]),
            (&["PATH=:/x"], "sh", true, &["./sh", "/x/sh"]),
            (
                &[],
                "sh",
                true,
                &[
                    "/usr/local/sbin/sh",
                    "/usr/local/bin/sh",
                    "/usr/sbin/sh",
                    "/usr/bin/sh",
                    "/sbin/sh",
                    "/bin/sh",
                ],
            ),
            (&["PATH=/usr/bin"], "/bin/sh", false, &["/bin/sh"]),
            (&["PATH=/usr/bin"], "./run", false, &["./run"]),
        ];
        for (env, program, searched, candidates) in cases {
            let mut spec = spec();
            spec.env = env.iter().map(|s| s.to_string()).collect();
            spec.args = vec![program.to_string(), "arg".into()];
            let exec = exec_args(&spec).expect("exec args");
            let got: Vec<&str> = exec
                .candidates
                .iter()
                .map(|c| c.to_str().unwrap())
                .collect();
            assert_eq!(&got, candidates, "{env:?} {program}");
            assert_eq!(exec.searched, *searched);
            assert_eq!(exec.argv.len(), 3);
            assert!(exec.argv[2].is_null());
            assert_eq!(exec.envp.len(), env.len() + 1);
        }
    }

    #[test]
    fn invalid_specs() {
        type Edit = Box<dyn Fn(&mut Spec)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|s| s.args.clear()),
                "no command to run: the argument list is empty",
            ),
            (
                Box::new(|s| s.args = vec!["a\0b".into()]),
                "an argument contains a NUL byte: \"a\\0b\"",
            ),
            (
                Box::new(|s| s.env.push("X=\0".into())),
                "an environment variable contains a NUL byte: \"X=\\0\"",
            ),
            (
                Box::new(|s| s.cwd = "rel".into()),
                "working directory \"rel\" is not an absolute path",
            ),
            (
                Box::new(|s| s.hostname = "h".repeat(65)),
                "the hostname is 65 bytes long, over the kernel's limit of 64",
            ),
            (
                Box::new(|s| s.rootfs.lower_dirs.clear()),
                "the root filesystem has no lower directory",
            ),
        ];
        let count = cases.len();
        for (edit, message) in cases {
            let mut spec = spec();
            edit(&mut spec);
            let err = prepare(&spec, &ctx(UserNamespace::None), &dirs).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        assert_eq!(count, 6);
    }

    #[test]
    fn a_private_network_is_joined_first_and_its_loopback_brought_up() {
        let namespace = crate::runtime::network::NetworkNamespace::from_fd(
            std::fs::File::open("/dev/null")
                .expect("a descriptor")
                .into(),
        );
        let fd = namespace.raw_fd();
        let mut spec = spec();
        spec.network = Network::Private(namespace);
        let inherited = UserNamespace::Inherited {
            uids: 65536,
            gids: 65536,
        };
        for user_namespace in [UserNamespace::None, inherited] {
            let plan = prepare(&spec, &ctx(user_namespace), &dirs).expect("plan");
            assert!(
                matches!(plan.setup.first(), Some(Action::JoinNetwork(joined)) if *joined == fd),
                "{:?}",
                plan.setup.first()
            );
            assert!(matches!(plan.setup.last(), Some(Action::LoopbackUp)));
        }
        // A new user namespace could not join it: refused by name.
        let rootless = UserNamespace::Rootless {
            host_uid: 1000,
            host_gid: 1000,
        };
        let err = prepare(&spec, &ctx(rootless), &dirs).unwrap_err();
        assert!(matches!(err, RuntimeError::PrivateNetworkUserNamespace));
    }
}
