//! What to run and how: the plain data a caller (`kiln run`, a RUN step) gives [`Sandbox::spawn`].
//!
//! Everything here is already resolved by the caller: the user's ids come from the image's
//! `/etc/passwd` and `/etc/group` (`runtime::user`), the cgroup files from `runtime::cgroup`. The
//! sandbox itself reads nothing from the image before it runs.
//!
//! [`Sandbox::spawn`]: super::Sandbox::spawn

use super::tty::WindowSize;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// One process to run in fresh namespaces on an overlay root.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The root filesystem.
    pub rootfs: RootFs,
    /// The command line. `args[0]` is looked up in the `PATH` of [`Spec::env`] (inside the root)
    /// when it has no `/`, as Docker does; the default `PATH` applies when `env` has none.
    pub args: Vec<String>,
    /// The environment, `KEY=VALUE` entries passed to the process exactly as given.
    pub env: Vec<String>,
    /// The working directory: an absolute path inside the container. It is created (like
    /// `mkdir -p`, owned by root, mode 0755) when missing, as Docker creates a `WORKDIR`.
    pub cwd: String,
    /// Who the process runs as.
    pub user: User,
    /// The hostname inside the sandbox (its own UTS namespace).
    pub hostname: String,
    /// The network the process sees.
    pub network: Network,
    /// Mounts on top of the root filesystem (`kiln run -v`, a RUN step's `/etc` files and its
    /// `--mount`s), mounted parent before child whatever their order here.
    pub mounts: Vec<Mount>,
    /// Run in a new user namespace. It is used whatever this says when kiln is not root and has
    /// no subordinate ids (the caller's uid and gid become root inside, nothing else is mapped),
    /// and ignored in kiln's rootless namespace with subordinate ids (sandboxes reuse it). As root,
    /// container uids and gids 0..65536 map to host ids 100000..165536, the range Docker's
    /// `userns-remap` and `/etc/subuid` conventionally give the first remapped user; those host
    /// ids must not belong to anyone else, and kiln gives the upper and work directories
    /// themselves to host id 100000 (overlayfs works in them as the namespace's root). Image
    /// files owned by host root appear as `nobody` inside and cannot be changed.
    pub user_namespace: bool,
    /// `cgroup.procs` files the sandbox's first process is written into before the workload
    /// starts (so the workload is limited from its first instruction). From `runtime::cgroup`.
    pub cgroup_procs: Vec<PathBuf>,
    /// The process gets a terminal allocated inside the sandbox (`docker run -t`): its stdin,
    /// stdout and stderr are the slave of a pty of the sandbox's own devpts (so `tty` names it
    /// `/dev/pts/0`), and it is the controlling terminal of the process's new session. The caller
    /// passes [`Stdio::Terminal`] and gets the master from [`Sandbox::take_terminal`].
    ///
    /// [`Sandbox::take_terminal`]: super::Sandbox::take_terminal
    pub tty: bool,
    /// Set `no_new_privs` (`docker run --security-opt no-new-privileges`): setuid binaries and
    /// file capabilities no longer raise privileges. Off by default in Docker, since it breaks
    /// `sudo` and `su` in images; the seccomp filter does not need it.
    pub no_new_privileges: bool,
    /// Put kiln's tiny init at pid 1 (like `docker run --init`): it reaps orphaned zombies,
    /// forwards signals to the workload and exits with the workload's status. Without it the
    /// workload is pid 1, exactly as in a plain `docker run`: reaping zombies is then its job, and
    /// it receives only the signals it installed a handler for (pid_namespaces(7)).
    pub init: bool,
    /// BuildKit's `RUN --security=insecure` (`entitlements.WithInsecureSpec`, with
    /// `oci.WithWriteableSysfs` and `oci.WithWriteableCgroupfs`, executor/oci/spec_linux.go):
    /// - every capability the sandbox's first process holds (cap.Current) is kept in the
    ///   bounding set and given to the workload as effective, permitted, inheritable and ambient
    ///   capabilities, so a non-root user has them too;
    /// - no seccomp filter;
    /// - no masked and no read-only paths under `/proc` and `/sys`;
    /// - `/sys` is mounted writable, and a writable cgroup2 file system (of the sandbox's own
    ///   cgroup namespace) is mounted on `/sys/fs/cgroup`;
    /// - outside a user namespace, `/dev` also gets `kmsg`, `cuse`, `fuse`, `kvm`, `net/tun`,
    ///   `loop-control` and `loop0` up to 7 past the host's first free loop device (the nodes
    ///   BuildKit adds; kiln installs no device cgroup filter, so every device is allowed, as
    ///   BuildKit's `rwm` rules for `c` and `b` allow).
    ///
    /// AppArmor and SELinux labels, which BuildKit also turns off, kiln never sets.
    pub privileged: bool,
}

/// The root filesystem: an overlay of read-only lower directories and a writable upper one.
#[derive(Debug, Clone)]
pub struct RootFs {
    /// Lower directories, TOP-MOST FIRST (the order of overlayfs' `lowerdir=`). At least one.
    pub lower_dirs: Vec<PathBuf>,
    /// Where changes go. `None` makes a read-only root (then [`RootFs::readonly`] must be set,
    /// and every mount point the sandbox needs — `/proc`, `/dev`, `/sys`, bind destinations, the
    /// working directory — must already exist in the lower directories).
    pub upper: Option<UpperDir>,
    /// Mount the root read-only (`docker run --read-only`); `/dev`, `/proc` and bind mounts stay
    /// as they are.
    pub readonly: bool,
}

/// The writable layer of an overlay: `upperdir=` and `workdir=`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpperDir {
    /// Receives the changes (the new layer).
    pub upper_dir: PathBuf,
    /// overlayfs' scratch directory: empty, on the same filesystem as `upper_dir`.
    pub work_dir: PathBuf,
}

/// The ids the process runs with, already resolved from the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary groups (`setgroups(2)`). A rootless sandbox without subordinate ids cannot
    /// set them (only one id is mapped and `setgroups` is denied, user_namespaces(7)); they are
    /// then ignored.
    pub additional_gids: Vec<u32>,
}

impl User {
    /// uid 0, gid 0, no supplementary groups.
    pub fn root() -> User {
        User {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        }
    }
}

/// The network namespace of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A new network namespace with only the loopback interface, brought up (`--network none`).
    None,
    /// The host's network namespace (`--network host`).
    Host,
    /// A prepared network namespace with its own user-mode stack (the default,
    /// [`super::network::PrivateNetwork`]): the sandbox's first process joins it (setns(2)) before
    /// anything else and brings its loopback up.
    Private(super::network::NetworkNamespace),
}

/// A mount on top of the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// The absolute path inside the container (from the Dockerfile or the command line: not
    /// trusted). It is resolved inside the root, so a symlink in the image cannot lead it out;
    /// missing directories (or, for a file bound, the file) are created. Not `/`, nothing under
    /// `/proc` (as runc refuses).
    pub destination: String,
    /// What is mounted there.
    pub source: MountSource,
    /// Mount it read-only, recursively (submounts of a bind too). An overlay without an upper
    /// directory is read-only whatever this says.
    pub readonly: bool,
}

/// What a [`Mount`] mounts. Host paths here come from kiln itself (trusted).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MountSource {
    /// A host file or directory, bound recursively (`kiln run -v`, `RUN --mount=type=bind` of a
    /// context); it must exist.
    Bind(PathBuf),
    /// An overlay of host directories, TOP-MOST FIRST (overlayfs `lowerdir` order). With
    /// `upper`, writes go to its upper dir (the caller discards them:
    /// `RUN --mount=type=bind,rw`); without, the mount is read-only. One lower and no upper: a
    /// read-only bind of it (overlayfs needs two lowers without an upper). Zero lowers: an empty
    /// read-only dir (or, with an upper, an empty writable one: the upper dir bound).
    Overlay {
        /// The lower directories, top-most first; a directory listed twice counts once, at its
        /// top-most place (as for the root filesystem).
        lowers: Vec<PathBuf>,
        /// Where writes go.
        upper: Option<UpperDir>,
    },
    /// A fresh tmpfs (`RUN --mount=type=tmpfs,size=`), `nosuid` as BuildKit mounts it; `size`
    /// in bytes, `None` = the kernel's default (half of the memory).
    Tmpfs {
        /// The size limit in bytes.
        size: Option<u64>,
    },
}

/// The standard streams of the workload.
#[derive(Debug)]
pub enum Stdio {
    /// The caller's descriptors, for a spec without [`Spec::tty`]. They should be close-on-exec
    /// in the caller (as `pipe2(O_CLOEXEC)` and `OwnedFd::try_clone` make them), so that no other
    /// child of a multi-threaded caller keeps a pipe open; the workload gets them as 0, 1 and 2.
    Streams {
        /// Standard input; `None` is `/dev/null` (inside the container).
        stdin: Option<OwnedFd>,
        /// Standard output.
        stdout: OwnedFd,
        /// Standard error.
        stderr: OwnedFd,
    },
    /// A terminal allocated inside the sandbox, for a spec with [`Spec::tty`]: the workload's
    /// stdin, stdout and stderr are its slave, the caller gets its master from
    /// [`Sandbox::take_terminal`].
    ///
    /// [`Sandbox::take_terminal`]: super::Sandbox::take_terminal
    Terminal {
        /// The window size the terminal starts with, set before the workload runs (so a program
        /// that reads it first thing sees it); `None` leaves the kernel's 0x0.
        size: Option<WindowSize>,
    },
}
