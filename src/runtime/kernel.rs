//! Runs [`Action`]s through the [`Kernel`] trait: the real implementation (`linux::Linux`) makes
//! the system calls, the unit tests use a recording fake, so the sequence logic (in-root path
//! resolution and `mkdir -p`, masks that skip missing paths, the `pivot_root` dance, `PATH`
//! search) is tested without root.
//!
//! This code runs in the child after `clone(2)` of a possibly multi-threaded parent: it must not
//! allocate, lock or touch thread-locals (only the calling thread exists in the child; a lock
//! held by another thread of the parent stays held forever, fork(2) NOTES and
//! signal-safety(7)). It only reads the prepared [`Action`]s and calls the kernel.

use super::setup::{self, Action, Create, ExecArgs, MountPoint, Target};
use super::tty::WindowSize;
use libc::{c_int, c_ulong, gid_t, mode_t, sock_filter};
use nix::errno::Errno;
use std::ffi::{CStr, CString};

/// A descriptor number in the child (closed explicitly: no `OwnedFd` destructors there).
pub(crate) type Fd = c_int;

/// Where a mount's source or target is: a path, or an open descriptor (then mounted through
/// `/proc/self/fd/N`, the only way mount(2) takes a descriptor, so the path resolved safely by
/// `openat2` is the one mounted on).
#[derive(Debug, Clone, Copy)]
pub(crate) enum At<'a> {
    /// A path, resolved by the kernel from the current root and directory.
    Path(&'a CStr),
    /// An `O_PATH` descriptor.
    Fd(Fd),
}

/// The system calls the setup makes. Each method is one call (or a fixed tiny sequence) with
/// the kernel's error as [`Errno`].
pub(crate) trait Kernel {
    /// unshare(2).
    fn unshare(&mut self, flags: c_int) -> Result<(), Errno>;
    /// setgroups(2).
    fn set_groups(&mut self, groups: &[gid_t]) -> Result<(), Errno>;
    /// setresgid(2) with all three ids `gid`.
    fn set_gid(&mut self, gid: u32) -> Result<(), Errno>;
    /// setresuid(2) with all three ids `uid`.
    fn set_uid(&mut self, uid: u32) -> Result<(), Errno>;
    /// mount(2).
    fn mount(
        &mut self,
        source: Option<At<'_>>,
        target: At<'_>,
        fstype: Option<&CStr>,
        flags: c_ulong,
        data: Option<&CStr>,
    ) -> Result<(), Errno>;
    /// fsopen(2) of the file system type `fstype`, close-on-exec.
    fn fs_open(&mut self, fstype: &CStr) -> Result<Fd, Errno>;
    /// fsconfig(2) on `fs`: `FSCONFIG_SET_STRING` of `key` to `value`, or `FSCONFIG_SET_FLAG`
    /// of `key` when `value` is `None`.
    fn fs_config(&mut self, fs: Fd, key: &CStr, value: Option<&CStr>) -> Result<(), Errno>;
    /// fsconfig(2) `FSCONFIG_CMD_CREATE`: the superblock from the options set.
    fn fs_create(&mut self, fs: Fd) -> Result<(), Errno>;
    /// fsmount(2) of `fs` with the `MOUNT_ATTR_*` bits `attrs`, close-on-exec: a detached mount.
    fn fs_mount(&mut self, fs: Fd, attrs: u64) -> Result<Fd, Errno>;
    /// move_mount(2) of the detached mount `mount` onto `target` (a path, or the directory a
    /// descriptor refers to).
    fn move_mount(&mut self, mount: Fd, target: At<'_>) -> Result<(), Errno>;
    /// mount_setattr(2) setting `attrs` on the mount `fd` is the root of.
    fn mount_setattr(&mut self, fd: Fd, attrs: u64, recursive: bool) -> Result<(), Errno>;
    /// open(2) of a directory with `O_PATH`.
    fn open_dir(&mut self, path: &CStr) -> Result<Fd, Errno>;
    /// openat2(2) with `O_PATH` and `RESOLVE_IN_ROOT` (and `RESOLVE_NO_SYMLINKS`).
    fn open_in_root(&mut self, root: Fd, path: &CStr, no_symlinks: bool) -> Result<Fd, Errno>;
    /// fstat(2): whether `fd` is a directory.
    fn is_dir(&mut self, fd: Fd) -> Result<bool, Errno>;
    /// mkdirat(2).
    fn mkdir_at(&mut self, dir: Fd, name: &CStr, mode: mode_t) -> Result<(), Errno>;
    /// mknodat(2).
    fn mknod_at(
        &mut self,
        dir: Fd,
        name: &CStr,
        mode: mode_t,
        dev: libc::dev_t,
    ) -> Result<(), Errno>;
    /// symlinkat(2).
    fn symlink_at(&mut self, points_to: &CStr, dir: Fd, name: &CStr) -> Result<(), Errno>;
    /// close(2).
    fn close(&mut self, fd: Fd);
    /// fchdir(2).
    fn fchdir(&mut self, fd: Fd) -> Result<(), Errno>;
    /// chdir(2).
    fn chdir(&mut self, path: &CStr) -> Result<(), Errno>;
    /// pivot_root(".", ".").
    fn pivot_root_here(&mut self) -> Result<(), Errno>;
    /// umount2(".", MNT_DETACH).
    fn detach_here(&mut self) -> Result<(), Errno>;
    /// sethostname(2).
    fn sethostname(&mut self, name: &CStr) -> Result<(), Errno>;
    /// `SIOCGIFFLAGS`/`SIOCSIFFLAGS` adding `IFF_UP` to `lo`.
    fn loopback_up(&mut self) -> Result<(), Errno>;
    /// setns(2) into the network namespace `fd`.
    fn join_network(&mut self, fd: Fd) -> Result<(), Errno>;
    /// open(2) of `/dev/null` for reading and writing.
    fn open_dev_null(&mut self) -> Result<Fd, Errno>;
    /// dup2(2).
    fn dup2(&mut self, from: Fd, to: Fd) -> Result<(), Errno>;
    /// setsid(2).
    fn setsid(&mut self) -> Result<(), Errno>;
    /// ioctl(fd, TIOCSCTTY, 0).
    fn set_controlling_tty(&mut self, fd: Fd) -> Result<(), Errno>;
    /// open(2) of `/dev/ptmx` with `O_RDWR | O_NOCTTY | O_CLOEXEC`: a new pty master (pts(4)).
    /// The descriptor is ≥ 3 even when the caller's 0, 1 or 2 were closed.
    fn open_ptmx(&mut self) -> Result<Fd, Errno>;
    /// ioctl(master, TIOCSPTLCK, &0): unlocks the slave (what unlockpt(3) does).
    fn unlock_pty(&mut self, master: Fd) -> Result<(), Errno>;
    /// ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY): opens the master's slave (ioctl_tty(2)).
    /// The descriptor is ≥ 3, as for [`Kernel::open_ptmx`].
    fn open_pty_peer(&mut self, master: Fd) -> Result<Fd, Errno>;
    /// ioctl(fd, TIOCSWINSZ).
    fn set_window_size(&mut self, fd: Fd, size: WindowSize) -> Result<(), Errno>;
    /// sendmsg(2) of one byte carrying `fd` as `SCM_RIGHTS` ancillary data (unix(7)).
    fn send_fd(&mut self, socket: Fd, fd: Fd) -> Result<(), Errno>;
    /// close_range(2) of every descriptor from `first` up, except `keep`.
    fn close_from(&mut self, first: Fd, keep: Fd) -> Result<(), Errno>;
    /// prctl(PR_CAPBSET_DROP, cap): `EINVAL` past the kernel's last capability.
    fn drop_bounding(&mut self, cap: u32) -> Result<(), Errno>;
    /// capset(2): effective = permitted = `caps`, inheritable = `inheritable`.
    fn capset(&mut self, caps: u64, inheritable: u64) -> Result<(), Errno>;
    /// capget(2): the permitted set.
    fn permitted_capabilities(&mut self) -> Result<u64, Errno>;
    /// prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap): `EINVAL` past the kernel's last one.
    fn raise_ambient(&mut self, cap: u32) -> Result<(), Errno>;
    /// prctl(PR_SET_KEEPCAPS, 1).
    fn keep_capabilities(&mut self) -> Result<(), Errno>;
    /// prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL).
    fn clear_ambient(&mut self) -> Result<(), Errno>;
    /// prctl(PR_SET_NO_NEW_PRIVS, 1).
    fn no_new_privs(&mut self) -> Result<(), Errno>;
    /// umask(2).
    fn umask(&mut self, mask: mode_t);
    /// getcwd(2): whether the current directory is reachable from the root.
    fn cwd_reachable(&mut self) -> Result<bool, Errno>;
    /// seccomp(SECCOMP_SET_MODE_FILTER).
    fn seccomp(&mut self, program: &[sock_filter]) -> Result<(), Errno>;
    /// stat(2): whether `path` is a regular file with an execute bit (Go's `LookPath` test).
    fn is_executable(&mut self, path: &CStr) -> bool;
    /// execve(2); returns only on failure.
    fn execve(&mut self, path: &CStr, exec: &ExecArgs) -> Errno;
    /// setns(2) of a pidfd with `CLONE_NEW*` flags.
    fn setns(&mut self, pidfd: Fd, flags: c_int) -> Result<(), Errno>;
    /// setrlimit(2).
    fn set_rlimit(&mut self, resource: c_int, soft: u64, hard: u64) -> Result<(), Errno>;
}

/// The step that failed (its index in the whole plan) and the kernel's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Index of the step: setup steps first, then the workload's.
    pub step: usize,
    /// What the kernel said.
    pub errno: Errno,
}

/// Runs `steps`, numbered from `first`, and stops at the first failure. An [`Action::Exec`] step
/// only returns when `execve` failed, so a plan ending with one always returns a failure.
pub(crate) fn run<K: Kernel>(
    kernel: &mut K,
    steps: &[Action],
    first: usize,
) -> Result<(), Failure> {
    let mut root: Option<Fd> = None;
    let mut result = Ok(());
    for (i, step) in steps.iter().enumerate() {
        if let Err(errno) = run_step(kernel, step, &mut root) {
            result = Err(Failure {
                step: first + i,
                errno,
            });
            break;
        }
    }
    if let Some(fd) = root {
        kernel.close(fd);
    }
    result
}

/// [`Action::MountOverlayLayers`] on the file system context `fs` (closed by the caller).
fn mount_overlay_layers<K: Kernel>(
    kernel: &mut K,
    fs: Fd,
    target: At<'_>,
    lowers: &[CString],
    upper: &Option<(CString, CString)>,
    userxattr: bool,
    readonly: bool,
) -> Result<(), Errno> {
    for lower in lowers {
        kernel.fs_config(fs, c"lowerdir+", Some(lower))?;
    }
    if let Some((upper, work)) = upper {
        kernel.fs_config(fs, c"upperdir", Some(upper))?;
        kernel.fs_config(fs, c"workdir", Some(work))?;
    }
    // As the mount(2) path: see `setup::overlay_options` for index=off and userxattr.
    kernel.fs_config(fs, c"index", Some(c"off"))?;
    if userxattr {
        kernel.fs_config(fs, c"userxattr", None)?;
    }
    kernel.fs_create(fs)?;
    let mut attrs = setup::ATTR_NODEV;
    if readonly {
        attrs |= setup::ATTR_RDONLY;
    }
    let mount = kernel.fs_mount(fs, attrs)?;
    let moved = kernel.move_mount(mount, target);
    kernel.close(mount);
    moved
}

/// The root descriptor, or `EBADF` when no [`Action::OpenRoot`] ran yet (a plan bug).
fn root_of(root: &Option<Fd>) -> Result<Fd, Errno> {
    root.ok_or(Errno::EBADF)
}

/// Runs a closure on a descriptor and closes it whatever the result.
fn with_fd<K: Kernel, T>(
    kernel: &mut K,
    fd: Fd,
    f: impl FnOnce(&mut K) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let result = f(kernel);
    kernel.close(fd);
    result
}

fn run_step<K: Kernel>(kernel: &mut K, step: &Action, root: &mut Option<Fd>) -> Result<(), Errno> {
    match step {
        Action::BecomeRoot { clear_groups } => {
            if *clear_groups {
                kernel.set_groups(&[])?;
            }
            kernel.set_gid(0)?;
            kernel.set_uid(0)
        }
        Action::UnshareCgroup => kernel.unshare(libc::CLONE_NEWCGROUP),
        Action::MakeMountsPrivate => kernel.mount(
            None,
            At::Path(c"/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        ),
        Action::MountOverlay {
            target,
            options,
            readonly,
        } => {
            let mut flags = libc::MS_NODEV;
            if *readonly {
                flags |= libc::MS_RDONLY;
            }
            kernel.mount(
                Some(At::Path(c"overlay")),
                At::Path(target),
                Some(c"overlay"),
                flags,
                Some(options),
            )
        }
        Action::MountOverlayLayers {
            target,
            lowers,
            upper,
            userxattr,
            readonly,
        } => {
            let overlay = |k: &mut K, at: At<'_>| {
                let fs = k.fs_open(c"overlay")?;
                with_fd(k, fs, |k| {
                    mount_overlay_layers(k, fs, at, lowers, upper, *userxattr, *readonly)
                })
            };
            match target {
                MountPoint::Staging(path) => overlay(kernel, At::Path(path)),
                MountPoint::InRoot(target) => {
                    let fd = resolve(kernel, root_of(root)?, target)?;
                    with_fd(kernel, fd, |k| overlay(k, At::Fd(fd)))
                }
            }
        }
        Action::BindRoot { source, target } => {
            kernel.mount(
                Some(At::Path(source)),
                At::Path(target),
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )?;
            let fd = kernel.open_dir(target)?;
            with_fd(kernel, fd, |k| {
                k.mount_setattr(fd, libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NODEV, true)
            })
        }
        Action::OpenRoot { path } => {
            let fd = kernel.open_dir(path)?;
            if let Some(old) = root.replace(fd) {
                kernel.close(old);
            }
            Ok(())
        }
        Action::Mount {
            target,
            fstype,
            flags,
            data,
        } => {
            let fd = resolve(kernel, root_of(root)?, target)?;
            with_fd(kernel, fd, |k| {
                k.mount(
                    Some(At::Path(fstype)),
                    At::Fd(fd),
                    Some(fstype),
                    *flags,
                    data.as_deref(),
                )
            })
        }
        Action::MakeDevice {
            target,
            major,
            minor,
            block,
        } => {
            let root = root_of(root)?;
            // Devices live in a directory (/dev): a top-level target is a plan bug.
            let (name, Some(parent)) = split_last(target)? else {
                return Err(Errno::EINVAL);
            };
            let dir = kernel.open_in_root(root, parent, target.no_symlinks)?;
            let kind = if *block { libc::S_IFBLK } else { libc::S_IFCHR };
            with_fd(kernel, dir, |k| {
                k.mknod_at(dir, name, kind | 0o666, libc::makedev(*major, *minor))
            })
        }
        Action::Bind {
            source,
            target,
            recursive,
            attrs,
        } => {
            let root = root_of(root)?;
            let fd = resolve(kernel, root, target)?;
            let mut flags = libc::MS_BIND;
            if *recursive {
                flags |= libc::MS_REC;
            }
            with_fd(kernel, fd, |k| {
                k.mount(Some(At::Path(source)), At::Fd(fd), None, flags, None)
            })?;
            if *attrs != 0 {
                // The descriptor above is the directory under the new mount: open the path again
                // to get the mount's root, which mount_setattr(2) requires.
                let mounted = kernel.open_in_root(root, &target.path, target.no_symlinks)?;
                with_fd(kernel, mounted, |k| {
                    k.mount_setattr(mounted, *attrs, *recursive)
                })?;
            }
            Ok(())
        }
        Action::Symlink {
            dir,
            name,
            points_to,
        } => {
            let fd = resolve(kernel, root_of(root)?, dir)?;
            with_fd(kernel, fd, |k| k.symlink_at(points_to, fd, name))
        }
        Action::MakeDirectory(target) | Action::DeviceDirectory(target) => {
            let fd = resolve(kernel, root_of(root)?, target)?;
            kernel.close(fd);
            Ok(())
        }
        Action::PivotRoot => {
            kernel.fchdir(root_of(root)?)?;
            kernel.pivot_root_here()?;
            kernel.detach_here()?;
            kernel.chdir(c"/")?;
            let new_root = kernel.open_dir(c"/")?;
            if let Some(old) = root.replace(new_root) {
                kernel.close(old);
            }
            Ok(())
        }
        Action::Mask(target) => {
            let Some(fd) = open_existing(kernel, root_of(root)?, target)? else {
                return Ok(());
            };
            with_fd(kernel, fd, |k| {
                if k.is_dir(fd)? {
                    k.mount(
                        Some(At::Path(c"tmpfs")),
                        At::Fd(fd),
                        Some(c"tmpfs"),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        None,
                    )
                } else {
                    k.mount(
                        Some(At::Path(c"/dev/null")),
                        At::Fd(fd),
                        None,
                        libc::MS_BIND,
                        None,
                    )
                }
            })
        }
        Action::ReadOnlyPath(target) => {
            let root = root_of(root)?;
            let Some(fd) = open_existing(kernel, root, target)? else {
                return Ok(());
            };
            with_fd(kernel, fd, |k| {
                k.mount(
                    Some(At::Fd(fd)),
                    At::Fd(fd),
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
            })?;
            let mounted = kernel.open_in_root(root, &target.path, target.no_symlinks)?;
            with_fd(kernel, mounted, |k| {
                k.mount_setattr(
                    mounted,
                    libc::MOUNT_ATTR_RDONLY
                        | libc::MOUNT_ATTR_NOSUID
                        | libc::MOUNT_ATTR_NODEV
                        | libc::MOUNT_ATTR_NOEXEC,
                    true,
                )
            })
        }
        Action::RootReadOnly => {
            kernel.mount_setattr(root_of(root)?, libc::MOUNT_ATTR_RDONLY, false)
        }
        Action::Hostname(name) => kernel.sethostname(name),
        Action::LoopbackUp => kernel.loopback_up(),
        Action::JoinNetwork(fd) => kernel.join_network(*fd),
        Action::Stdio {
            stdin,
            stdout,
            stderr,
        } => {
            // The plan guarantees the sources are ≥ 3, so no dup2 clobbers a later source.
            let input = match stdin {
                Some(fd) => *fd,
                None => kernel.open_dev_null()?,
            };
            kernel.dup2(input, 0)?;
            kernel.dup2(*stdout, 1)?;
            kernel.dup2(*stderr, 2)
        }
        Action::Terminal { socket, size } => {
            // runc's console socket. pts(4): opening the multiplexer creates a master and a
            // locked slave /dev/pts/N in the devpts instance that ptmx belongs to; /dev/ptmx is
            // our symlink to pts/ptmx, the sandbox's own instance (mounted `newinstance`), so
            // the slave is /dev/pts/0 inside, as in Docker.
            let master = kernel.open_ptmx()?;
            with_fd(kernel, master, |k| {
                // No grantpt(3): devpts itself gives a new slave to the opener's uid and the
                // instance's gid= (and mode=), so there is nothing to grant.
                k.unlock_pty(master)?;
                // TIOCGPTPEER (ioctl_tty(2), Linux 4.13) opens the slave from the master itself,
                // without a lookup of /dev/pts/N that a bind mount could have redirected (the
                // reason the kernel added it, commit 54ebbfb16034, for runc).
                let slave = k.open_pty_peer(master)?;
                with_fd(k, slave, |k| {
                    if let Some(size) = size {
                        // Before the workload runs, so it sees the size in its first call.
                        k.set_window_size(master, *size)?;
                    }
                    // Both are ≥ 3 (see the trait), so these do not clobber one another.
                    k.dup2(slave, 0)?;
                    k.dup2(slave, 1)?;
                    k.dup2(slave, 2)?;
                    // unix(7) SCM_RIGHTS: the parent receives its own descriptor of the master;
                    // ours closes here (and is close-on-exec anyway), the socket with CloseFds.
                    k.send_fd(*socket, master)
                })
            })
        }
        Action::NewSession { controlling_tty } => {
            kernel.setsid()?;
            if *controlling_tty {
                kernel.set_controlling_tty(1)?;
            }
            Ok(())
        }
        Action::CloseFds { keep } => kernel.close_from(3, *keep),
        Action::DropBoundingSet { keep } => {
            for cap in 0..64u32 {
                if keep & (1 << cap) != 0 {
                    continue;
                }
                match kernel.drop_bounding(cap) {
                    Ok(()) => {}
                    // Past CAP_LAST_CAP of this kernel.
                    Err(Errno::EINVAL) => break,
                    Err(errno) => return Err(errno),
                }
            }
            Ok(())
        }
        Action::SetIds { uid, gid, groups } => {
            if let Some(groups) = groups {
                kernel.set_groups(groups)?;
            }
            kernel.set_gid(*gid)?;
            kernel.set_uid(*uid)
        }
        Action::Chdir(cwd) => kernel.chdir(cwd),
        Action::VerifyCwd(_) => {
            if kernel.cwd_reachable()? {
                Ok(())
            } else {
                Err(Errno::EXDEV)
            }
        }
        Action::Capabilities(caps) => {
            kernel.capset(*caps, 0)?;
            kernel.clear_ambient()
        }
        Action::KeepCapabilities => kernel.keep_capabilities(),
        Action::AllCapabilities => {
            let caps = kernel.permitted_capabilities()?;
            // Ambient capabilities must be permitted and inheritable (capabilities(7)).
            kernel.capset(caps, caps)?;
            for cap in 0..64u32 {
                if caps & (1 << cap) == 0 {
                    continue;
                }
                match kernel.raise_ambient(cap) {
                    Ok(()) => {}
                    // Past CAP_LAST_CAP of this kernel.
                    Err(Errno::EINVAL) => break,
                    Err(errno) => return Err(errno),
                }
            }
            Ok(())
        }
        Action::NoNewPrivileges => kernel.no_new_privs(),
        Action::Umask(mask) => {
            kernel.umask(*mask);
            Ok(())
        }
        Action::Seccomp(program) => kernel.seccomp(program),
        Action::Exec(exec) => Err(exec_program(kernel, exec)),
        Action::JoinNamespaces { pidfd, flags } => {
            kernel.setns(*pidfd, *flags)?;
            // The root and working directory are the mount namespace's root now (setns(2)); the
            // descriptor must not reach the workload.
            kernel.close(*pidfd);
            Ok(())
        }
        Action::SetRlimit {
            resource,
            soft,
            hard,
        } => kernel.set_rlimit(*resource, *soft, *hard),
    }
}

/// Tries the `PATH` candidates like Go's `exec.LookPath` (the first regular file with an execute
/// bit is run; its failure is the answer), or runs a path with a `/` directly. Returns why it
/// failed: `ENOENT` when nothing was found.
fn exec_program<K: Kernel>(kernel: &mut K, exec: &ExecArgs) -> Errno {
    if !exec.searched {
        return match exec.candidates.first() {
            Some(path) => kernel.execve(path, exec),
            None => Errno::ENOENT,
        };
    }
    for candidate in &exec.candidates {
        if kernel.is_executable(candidate) {
            return kernel.execve(candidate, exec);
        }
    }
    Errno::ENOENT
}

/// The last component of `target` and the path of its parent (`None` at the top level).
fn split_last(target: &Target) -> Result<(&CStr, Option<&CStr>), Errno> {
    let count = target.prefixes.len();
    let (_, name) = target.prefixes.last().ok_or(Errno::EINVAL)?;
    let parent = match count.checked_sub(2) {
        Some(i) => target.prefixes.get(i).map(|(path, _)| path.as_c_str()),
        None => None,
    };
    Ok((name, parent))
}

/// Opens `target`, or `None` when it does not exist.
fn open_existing<K: Kernel>(
    kernel: &mut K,
    root: Fd,
    target: &Target,
) -> Result<Option<Fd>, Errno> {
    match kernel.open_in_root(root, &target.path, target.no_symlinks) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(errno) => Err(errno),
    }
}

/// Opens `target` inside the root, creating what is missing as [`Target::create`] says. Each
/// missing component is made with `mkdirat`/`mknodat` relative to its parent, itself opened with
/// `RESOLVE_IN_ROOT`, so a symlink in the image can redirect the creation only to somewhere
/// inside the root. A component that exists but does not resolve (a dangling symlink) fails with
/// `EEXIST` instead of being followed.
fn resolve<K: Kernel>(kernel: &mut K, root: Fd, target: &Target) -> Result<Fd, Errno> {
    match kernel.open_in_root(root, &target.path, target.no_symlinks) {
        Err(Errno::ENOENT) if target.create != Create::Nothing => {}
        other => return other,
    }
    let last = target.prefixes.len().saturating_sub(1);
    let mut parent_path: Option<&CStr> = None;
    for (i, (prefix, name)) in target.prefixes.iter().enumerate() {
        match kernel.open_in_root(root, prefix, target.no_symlinks) {
            Ok(fd) => {
                kernel.close(fd);
                parent_path = Some(prefix);
                continue;
            }
            Err(Errno::ENOENT) => {}
            Err(errno) => return Err(errno),
        }
        let parent = match parent_path {
            Some(path) => Some(kernel.open_in_root(root, path, target.no_symlinks)?),
            None => None,
        };
        let dir = parent.unwrap_or(root);
        let made = if i == last && target.create == Create::File {
            kernel.mknod_at(dir, name, libc::S_IFREG | 0o644, 0)
        } else {
            kernel.mkdir_at(dir, name, 0o755)
        };
        if let Some(fd) = parent {
            kernel.close(fd);
        }
        made?;
        parent_path = Some(prefix);
    }
    kernel.open_in_root(root, &target.path, target.no_symlinks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::setup::{self, Context, StdioFds, UserNamespace, WorkloadFds};
    use crate::runtime::spec::{Mount, MountSource, Network, RootFs, Spec, UpperDir, User};
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    /// A kernel that records calls and keeps a tiny model of the container's paths.
    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
        /// Paths (relative to the root) that exist; `true` for directories.
        paths: BTreeMap<String, bool>,
        /// Open descriptors and the path each refers to.
        fds: BTreeMap<Fd, String>,
        next_fd: Fd,
        /// Calls (by their recorded text prefix) that fail, with the error.
        fail: Vec<(String, Errno)>,
        /// Executable files.
        executables: BTreeSet<String>,
        /// What getcwd(2) reports: `false` for a directory outside the root.
        cwd_outside: bool,
    }

    impl Fake {
        fn new(paths: &[&str]) -> Fake {
            let mut fake = Fake {
                next_fd: 10,
                ..Fake::default()
            };
            for path in paths {
                let dir = path.ends_with('/');
                fake.paths
                    .insert(path.trim_end_matches('/').to_string(), dir);
            }
            fake
        }

        fn record(&mut self, call: String) -> Result<(), Errno> {
            let failure = self
                .fail
                .iter()
                .find(|(prefix, _)| call.starts_with(prefix.as_str()))
                .map(|(_, errno)| *errno);
            self.calls.push(call);
            failure.map_or(Ok(()), Err)
        }

        fn open(&mut self, path: String) -> Fd {
            let fd = self.next_fd;
            self.next_fd += 1;
            self.fds.insert(fd, path);
            fd
        }

        fn name(&self, fd: Fd) -> String {
            self.fds
                .get(&fd)
                .cloned()
                .unwrap_or_else(|| format!("fd{fd}"))
        }

        fn at(&self, at: At<'_>) -> String {
            match at {
                At::Path(path) => path.to_string_lossy().into_owned(),
                At::Fd(fd) => format!("<{}>", self.name(fd)),
            }
        }

        fn join(&self, dir: Fd, name: &CStr) -> String {
            let base = self.name(dir);
            let name = name.to_string_lossy();
            // The root's descriptor is named by its host path (the staging directory).
            if base == "." || base.starts_with('/') {
                name.into_owned()
            } else {
                format!("{base}/{name}")
            }
        }
    }

    fn text(s: &CStr) -> String {
        s.to_string_lossy().into_owned()
    }

    impl Kernel for Fake {
        fn unshare(&mut self, flags: c_int) -> Result<(), Errno> {
            self.record(format!("unshare {flags:#x}"))
        }
        fn set_groups(&mut self, groups: &[gid_t]) -> Result<(), Errno> {
            self.record(format!("setgroups {groups:?}"))
        }
        fn set_gid(&mut self, gid: u32) -> Result<(), Errno> {
            self.record(format!("setresgid {gid}"))
        }
        fn set_uid(&mut self, uid: u32) -> Result<(), Errno> {
            self.record(format!("setresuid {uid}"))
        }
        fn mount(
            &mut self,
            source: Option<At<'_>>,
            target: At<'_>,
            fstype: Option<&CStr>,
            flags: c_ulong,
            data: Option<&CStr>,
        ) -> Result<(), Errno> {
            let source = source.map_or("-".into(), |s| self.at(s));
            let call = format!(
                "mount {source} {} {} {flags:#x} {}",
                self.at(target),
                fstype.map_or("-".into(), text),
                data.map_or("-".into(), text)
            );
            self.record(call)
        }
        fn fs_open(&mut self, fstype: &CStr) -> Result<Fd, Errno> {
            self.record(format!("fsopen {}", text(fstype)))?;
            Ok(self.open(format!("fs:{}", text(fstype))))
        }
        fn fs_config(&mut self, fs: Fd, key: &CStr, value: Option<&CStr>) -> Result<(), Errno> {
            let call = match value {
                Some(value) => {
                    format!("fsconfig <{}> {}={}", self.name(fs), text(key), text(value))
                }
                None => format!("fsconfig <{}> {}", self.name(fs), text(key)),
            };
            self.record(call)
        }
        fn fs_create(&mut self, fs: Fd) -> Result<(), Errno> {
            let call = format!("fsconfig <{}> create", self.name(fs));
            self.record(call)
        }
        fn fs_mount(&mut self, fs: Fd, attrs: u64) -> Result<Fd, Errno> {
            let call = format!("fsmount <{}> {attrs:#x}", self.name(fs));
            self.record(call)?;
            Ok(self.open("mnt:overlay".to_string()))
        }
        fn move_mount(&mut self, mount: Fd, target: At<'_>) -> Result<(), Errno> {
            let call = format!("move_mount <{}> {}", self.name(mount), self.at(target));
            self.record(call)
        }
        fn mount_setattr(&mut self, fd: Fd, attrs: u64, recursive: bool) -> Result<(), Errno> {
            let call = format!(
                "setattr <{}> {attrs:#x} recursive={recursive}",
                self.name(fd)
            );
            self.record(call)
        }
        fn open_dir(&mut self, path: &CStr) -> Result<Fd, Errno> {
            self.record(format!("open {}", text(path)))?;
            // After the pivot "/" is the container root, which the model calls ".".
            let path = if path.to_bytes() == b"/" {
                ".".into()
            } else {
                text(path)
            };
            Ok(self.open(path))
        }
        fn open_in_root(&mut self, root: Fd, path: &CStr, no_symlinks: bool) -> Result<Fd, Errno> {
            let path = text(path);
            let call = format!("openat2 <{}> {path} nosym={no_symlinks}", self.name(root));
            self.record(call)?;
            if path == "." || self.paths.contains_key(&path) {
                Ok(self.open(path))
            } else {
                Err(Errno::ENOENT)
            }
        }
        fn is_dir(&mut self, fd: Fd) -> Result<bool, Errno> {
            let path = self.name(fd);
            Ok(path == "." || self.paths.get(&path).copied().unwrap_or(false))
        }
        fn mkdir_at(&mut self, dir: Fd, name: &CStr, mode: mode_t) -> Result<(), Errno> {
            let path = self.join(dir, name);
            self.record(format!("mkdir {path} {mode:o}"))?;
            if self.paths.contains_key(&path) {
                return Err(Errno::EEXIST);
            }
            self.paths.insert(path, true);
            Ok(())
        }
        fn mknod_at(
            &mut self,
            dir: Fd,
            name: &CStr,
            mode: mode_t,
            dev: libc::dev_t,
        ) -> Result<(), Errno> {
            let path = self.join(dir, name);
            self.record(format!("mknod {path} {mode:o} {dev}"))?;
            self.paths.insert(path, false);
            Ok(())
        }
        fn symlink_at(&mut self, points_to: &CStr, dir: Fd, name: &CStr) -> Result<(), Errno> {
            let path = self.join(dir, name);
            self.record(format!("symlink {path} -> {}", text(points_to)))
        }
        fn close(&mut self, fd: Fd) {
            self.fds.remove(&fd);
        }
        fn fchdir(&mut self, fd: Fd) -> Result<(), Errno> {
            let call = format!("fchdir <{}>", self.name(fd));
            self.record(call)
        }
        fn chdir(&mut self, path: &CStr) -> Result<(), Errno> {
            self.record(format!("chdir {}", text(path)))
        }
        fn pivot_root_here(&mut self) -> Result<(), Errno> {
            self.record("pivot_root . .".into())
        }
        fn detach_here(&mut self) -> Result<(), Errno> {
            self.record("umount2 . MNT_DETACH".into())
        }
        fn sethostname(&mut self, name: &CStr) -> Result<(), Errno> {
            self.record(format!("sethostname {}", text(name)))
        }
        fn loopback_up(&mut self) -> Result<(), Errno> {
            self.record("lo up".into())
        }
        fn join_network(&mut self, fd: Fd) -> Result<(), Errno> {
            self.record(format!("setns net {fd}"))
        }
        fn open_dev_null(&mut self) -> Result<Fd, Errno> {
            self.record("open /dev/null".into())?;
            Ok(self.open("/dev/null".into()))
        }
        fn dup2(&mut self, from: Fd, to: Fd) -> Result<(), Errno> {
            self.record(format!("dup2 {from} {to}"))
        }
        fn setsid(&mut self) -> Result<(), Errno> {
            self.record("setsid".into())
        }
        fn set_controlling_tty(&mut self, fd: Fd) -> Result<(), Errno> {
            self.record(format!("TIOCSCTTY {fd}"))
        }
        fn open_ptmx(&mut self) -> Result<Fd, Errno> {
            self.record("open /dev/ptmx".into())?;
            Ok(self.open("ptmx".into()))
        }
        fn unlock_pty(&mut self, master: Fd) -> Result<(), Errno> {
            let call = format!("TIOCSPTLCK <{}> 0", self.name(master));
            self.record(call)
        }
        fn open_pty_peer(&mut self, master: Fd) -> Result<Fd, Errno> {
            let call = format!("TIOCGPTPEER <{}>", self.name(master));
            self.record(call)?;
            Ok(self.open("pts/0".into()))
        }
        fn set_window_size(&mut self, fd: Fd, size: WindowSize) -> Result<(), Errno> {
            let call = format!("TIOCSWINSZ <{}> {}x{}", self.name(fd), size.rows, size.cols);
            self.record(call)
        }
        fn send_fd(&mut self, socket: Fd, fd: Fd) -> Result<(), Errno> {
            let call = format!("sendmsg {socket} SCM_RIGHTS <{}>", self.name(fd));
            self.record(call)
        }
        fn close_from(&mut self, first: Fd, keep: Fd) -> Result<(), Errno> {
            self.record(format!("close_range {first}.. keep {keep}"))
        }
        fn drop_bounding(&mut self, cap: u32) -> Result<(), Errno> {
            // A kernel whose last capability is 40.
            if cap > 40 {
                return Err(Errno::EINVAL);
            }
            self.record(format!("capbset_drop {cap}"))
        }
        fn capset(&mut self, caps: u64, inheritable: u64) -> Result<(), Errno> {
            if inheritable == 0 {
                self.record(format!("capset {caps:#x}"))
            } else {
                self.record(format!("capset {caps:#x} inheritable {inheritable:#x}"))
            }
        }
        fn permitted_capabilities(&mut self) -> Result<u64, Errno> {
            self.record("capget".into())?;
            // Capabilities 0..=40 but 24, as a process some caps were taken from.
            Ok(((1 << 41) - 1) & !(1 << 24))
        }
        fn raise_ambient(&mut self, cap: u32) -> Result<(), Errno> {
            if cap > 40 {
                return Err(Errno::EINVAL);
            }
            self.record(format!("ambient raise {cap}"))
        }
        fn keep_capabilities(&mut self) -> Result<(), Errno> {
            self.record("keepcaps".into())
        }
        fn clear_ambient(&mut self) -> Result<(), Errno> {
            self.record("ambient clear".into())
        }
        fn no_new_privs(&mut self) -> Result<(), Errno> {
            self.record("no_new_privs".into())
        }
        fn umask(&mut self, mask: mode_t) {
            self.calls.push(format!("umask {mask:o}"));
        }
        fn cwd_reachable(&mut self) -> Result<bool, Errno> {
            self.record("getcwd".into())?;
            Ok(!self.cwd_outside)
        }
        fn seccomp(&mut self, program: &[sock_filter]) -> Result<(), Errno> {
            self.record(format!("seccomp {} instructions", program.len()))
        }
        fn is_executable(&mut self, path: &CStr) -> bool {
            self.executables.contains(&text(path))
        }
        fn execve(&mut self, path: &CStr, exec: &ExecArgs) -> Errno {
            let args: Vec<String> = exec.args().iter().map(|a| text(a)).collect();
            let env: Vec<String> = exec.env().iter().map(|a| text(a)).collect();
            let call = format!("execve {} {args:?} {env:?}", text(path));
            self.calls.push(call);
            if self.executables.contains(&text(path)) {
                // Pretend success: the real call would not return.
                Errno::UnknownErrno
            } else {
                Errno::EACCES
            }
        }
        fn setns(&mut self, pidfd: Fd, flags: c_int) -> Result<(), Errno> {
            self.record(format!("setns {} {flags:#x}", self.name(pidfd)))
        }
        fn set_rlimit(&mut self, resource: c_int, soft: u64, hard: u64) -> Result<(), Errno> {
            self.record(format!("setrlimit {resource} {soft} {hard}"))
        }
    }

    fn spec() -> Spec {
        Spec {
            rootfs: RootFs {
                lower_dirs: vec!["/l".into()],
                upper: Some(UpperDir {
                    upper_dir: "/u".into(),
                    work_dir: "/w".into(),
                }),
                readonly: false,
            },
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
            cwd: "/".into(),
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

    /// The context for `spec`: stream descriptors 4 and 5, or with a tty the socket 7 and a
    /// 30x100 terminal.
    fn context(spec: &Spec) -> Context {
        let stdio = if spec.tty {
            StdioFds::Terminal {
                socket: 7,
                size: Some(WindowSize {
                    rows: 30,
                    cols: 100,
                }),
            }
        } else {
            StdioFds::Streams {
                stdin: None,
                stdout: 4,
                stderr: 5,
            }
        };
        Context {
            staging: "/stage".into(),
            user_namespace: UserNamespace::None,
            fds: WorkloadFds { stdio, report: 6 },
            loop_devices: 0,
        }
    }

    /// An image with the usual mount points.
    fn image() -> Fake {
        Fake::new(&[
            "proc/",
            "dev/",
            "sys/",
            "etc/",
            "proc/kcore",
            "proc/sys/",
            "proc/sysrq-trigger",
            "proc/acpi/",
            "sys/firmware/",
        ])
    }

    fn plan_for(spec: &Spec) -> setup::Setup {
        setup::prepare(spec, &context(spec), &|p| {
            Ok(!p.to_string_lossy().ends_with(".txt"))
        })
        .expect("plan")
    }

    fn contains_in_order(calls: &[String], wanted: &[&str]) {
        let mut from = 0;
        for want in wanted {
            match calls.iter().skip(from).position(|c| c == want) {
                Some(at) => from += at + 1,
                None => {
                    panic!("{want:?} missing (or out of order) after call {from} in {calls:#?}")
                }
            }
        }
    }

    /// `kiln exec`'s plan: the first child joins the namespaces through the pidfd (then closes
    /// it) and takes the container's limits, and nothing of the sandbox's setup (no mounts, no
    /// pivot_root: the container's mount namespace has them); the workload is a sandbox's, the
    /// user, capabilities, seccomp and no_new_privs included, over a joined user namespace too.
    #[test]
    fn exec_joins_then_runs_a_sandboxs_workload() {
        let mut spec = spec();
        spec.user = User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![1000],
        };
        spec.no_new_privileges = true;
        let mut ctx = context(&spec);
        ctx.user_namespace = UserNamespace::Inherited {
            uids: 65_536,
            gids: 65_536,
        };
        let join = setup::Join {
            pidfd: 9,
            namespaces: libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUSER,
            rlimits: vec![(libc::RLIMIT_NOFILE as c_int, 1024, 4096)],
        };
        let plan = setup::prepare_exec(&spec, &ctx, &join).expect("plan");
        let mut fake = image();
        fake.fds.insert(9, "pidfd".into());
        run(&mut fake, &plan.setup, 0).expect("join");
        assert_eq!(
            fake.calls,
            [
                format!("setns pidfd {:#x}", join.namespaces),
                "setrlimit 7 1024 4096".to_string(),
            ]
        );
        assert!(!fake.fds.contains_key(&9), "the pidfd reaches the workload");
        let sandbox = setup::prepare(&spec, &ctx, &|_| Ok(true)).expect("sandbox plan");
        let describe = |steps: &[Action]| steps.iter().map(Action::describe).collect::<Vec<_>>();
        assert_eq!(describe(&plan.workload), describe(&sandbox.workload));
        let mut fake = image();
        fake.executables.insert("/usr/bin/sh".into());
        let _ = run(&mut fake, &plan.workload, plan.setup.len());
        let seccomp = fake
            .calls
            .iter()
            .find(|c| c.starts_with("seccomp "))
            .expect("a seccomp filter")
            .clone();
        contains_in_order(
            &fake.calls,
            &[
                "setsid",
                "capbset_drop 40",
                &seccomp,
                "setgroups [1000]",
                "setresgid 1000",
                "setresuid 1000",
                "chdir /",
                "capset 0x0",
                "no_new_privs",
            ],
        );
    }

    #[test]
    fn setup_sequence() {
        let mut fake = image();
        let plan = plan_for(&spec());
        run(&mut fake, &plan.setup, 0).expect("setup");
        contains_in_order(
            &fake.calls,
            &[
                "unshare 0x2000000",
                "mount - / - 0x44000 -",
                "mount overlay /stage overlay 0x4 lowerdir=/l,upperdir=/u,workdir=/w,index=off",
                "open /stage",
                "openat2 </stage> proc nosym=true",
                "mount proc <proc> proc 0xe -",
                "mount tmpfs <dev> tmpfs 0x1000002 mode=755,size=65536k",
                "openat2 </stage> dev nosym=true",
                "mknod dev/null 20666 259",
                "symlink dev/fd -> /proc/self/fd",
                "symlink dev/ptmx -> pts/ptmx",
                "mkdir dev/pts 755",
                "mount devpts <dev/pts> devpts 0xa newinstance,ptmxmode=0666,mode=0620,gid=5",
                "mount sysfs <sys> sysfs 0xf -",
                "fchdir </stage>",
                "pivot_root . .",
                "umount2 . MNT_DETACH",
                "chdir /",
                "open /",
                "mount tmpfs <proc/acpi> tmpfs 0xf -",
                "openat2 <.> proc/kcore nosym=true",
                "mount /dev/null <proc/kcore> - 0x1000 -",
                "mount tmpfs <sys/firmware> tmpfs 0xf -",
                "mount <proc/sys> <proc/sys> - 0x5000 -",
                "setattr <proc/sys> 0xf recursive=true",
                "mount <proc/sysrq-trigger> <proc/sysrq-trigger> - 0x5000 -",
                "sethostname box",
                "lo up",
            ],
        );
        // Masked paths the image's kernel does not have are skipped, not errors.
        assert!(
            fake.calls
                .contains(&"openat2 <.> proc/timer_stats nosym=true".to_string())
        );
        assert!(!fake.calls.iter().any(|c| c.contains("<proc/timer_stats>")));
        assert!(fake.fds.is_empty(), "descriptors left open: {:?}", fake.fds);
    }

    #[test]
    fn bind_destination_created_inside_the_root() {
        let mut spec = spec();
        spec.mounts = vec![
            Mount {
                destination: "/srv/data".into(),
                source: MountSource::Bind("/host/data".into()),
                readonly: true,
            },
            Mount {
                destination: "/etc/app/conf".into(),
                source: MountSource::Bind("/host/conf.txt".into()),
                readonly: false,
            },
        ];
        let mut fake = image();
        run(&mut fake, &plan_for(&spec).setup, 0).expect("setup");
        contains_in_order(
            &fake.calls,
            &[
                "openat2 </stage> srv/data nosym=false",
                "openat2 </stage> srv nosym=false",
                "mkdir srv 755",
                "openat2 </stage> srv/data nosym=false",
                "openat2 </stage> srv nosym=false",
                "mkdir srv/data 755",
                "openat2 </stage> srv/data nosym=false",
                "mount /host/data <srv/data> - 0x5000 -",
                "openat2 </stage> srv/data nosym=false",
                "setattr <srv/data> 0x1 recursive=true",
                "openat2 </stage> etc nosym=false",
                "mkdir etc/app 755",
                "mknod etc/app/conf 100644 0",
                "mount /host/conf.txt <etc/app/conf> - 0x5000 -",
                "pivot_root . .",
            ],
        );
        assert!(
            !fake
                .calls
                .iter()
                .any(|c| c.starts_with("setattr <etc/app/conf>"))
        );
        assert!(fake.fds.is_empty(), "descriptors left open: {:?}", fake.fds);
    }

    /// A deep image's overlay: one fsconfig lowerdir+ per layer, then a detached mount moved
    /// onto the staging directory; both descriptors closed, also when a step fails.
    #[test]
    fn overlay_of_many_layers_goes_through_fsconfig() {
        let action = Action::MountOverlayLayers {
            target: MountPoint::Staging(c"/stage".into()),
            lowers: vec![c"/l/top".into(), c"/l/a,b:c".into()],
            upper: Some((c"/u".into(), c"/w".into())),
            userxattr: true,
            readonly: false,
        };
        let mut fake = image();
        run(&mut fake, std::slice::from_ref(&action), 0).expect("mount");
        assert_eq!(
            fake.calls,
            [
                "fsopen overlay",
                "fsconfig <fs:overlay> lowerdir+=/l/top",
                "fsconfig <fs:overlay> lowerdir+=/l/a,b:c",
                "fsconfig <fs:overlay> upperdir=/u",
                "fsconfig <fs:overlay> workdir=/w",
                "fsconfig <fs:overlay> index=off",
                "fsconfig <fs:overlay> userxattr",
                "fsconfig <fs:overlay> create",
                "fsmount <fs:overlay> 0x4",
                "move_mount <mnt:overlay> /stage",
            ]
        );
        assert!(fake.fds.is_empty(), "descriptors left open: {:?}", fake.fds);
        let mut failing = image();
        failing
            .fail
            .push(("fsconfig <fs:overlay> create".into(), Errno::EINVAL));
        let failure = run(&mut failing, std::slice::from_ref(&action), 0).unwrap_err();
        assert_eq!(failure.errno, Errno::EINVAL);
        assert!(
            failing.fds.is_empty(),
            "descriptors left open: {:?}",
            failing.fds
        );
    }

    /// The spec's overlay and tmpfs mounts land on descriptors resolved inside the root
    /// (created when missing), a deep overlay through fsconfig moved onto its descriptor.
    #[test]
    fn overlay_and_tmpfs_mounts_resolve_inside_the_root() {
        let mut spec = spec();
        let deep: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/kiln/layers/{i:064}")))
            .collect();
        spec.mounts = vec![
            Mount {
                destination: "/srv/a".into(),
                source: MountSource::Overlay {
                    lowers: vec!["/l/top".into(), "/l/base".into()],
                    upper: None,
                },
                readonly: false,
            },
            Mount {
                destination: "/tmp/t".into(),
                source: MountSource::Tmpfs {
                    size: Some(1 << 20),
                },
                readonly: false,
            },
            Mount {
                destination: "/deep".into(),
                source: MountSource::Overlay {
                    lowers: deep,
                    upper: Some(UpperDir {
                        upper_dir: "/mu".into(),
                        work_dir: "/mw".into(),
                    }),
                },
                readonly: false,
            },
        ];
        let mut fake = image();
        run(&mut fake, &plan_for(&spec).setup, 0).expect("setup");
        // Depth first: /deep, then /srv/a and /tmp/t in the spec's order.
        let first_lower = format!(
            "fsconfig <fs:overlay> lowerdir+=/var/lib/kiln/layers/{:064}",
            0
        );
        contains_in_order(
            &fake.calls,
            &[
                "mkdir deep 755",
                "openat2 </stage> deep nosym=false",
                "fsopen overlay",
                &first_lower,
                "fsconfig <fs:overlay> upperdir=/mu",
                "fsconfig <fs:overlay> workdir=/mw",
                "fsconfig <fs:overlay> index=off",
                "fsconfig <fs:overlay> create",
                "fsmount <fs:overlay> 0x4",
                "move_mount <mnt:overlay> <deep>",
                "mkdir srv 755",
                "mkdir srv/a 755",
                "openat2 </stage> srv/a nosym=false",
                "mount overlay <srv/a> overlay 0x5 lowerdir=/l/top:/l/base,index=off",
                "mkdir tmp/t 755",
                "openat2 </stage> tmp/t nosym=false",
                "mount tmpfs <tmp/t> tmpfs 0x2 size=1048576",
                "pivot_root . .",
            ],
        );
        assert_eq!(
            fake.calls
                .iter()
                .filter(|c| c.starts_with("fsconfig <fs:overlay> lowerdir+="))
                .count(),
            100
        );
        assert!(fake.fds.is_empty(), "descriptors left open: {:?}", fake.fds);
        // A failing fsconfig still closes the mount point's and the context's descriptors.
        let mut failing = image();
        failing
            .fail
            .push(("fsconfig <fs:overlay> create".into(), Errno::EINVAL));
        let failure = run(&mut failing, &plan_for(&spec).setup, 0).unwrap_err();
        assert_eq!(failure.errno, Errno::EINVAL);
        assert!(
            failing.fds.is_empty(),
            "descriptors left open: {:?}",
            failing.fds
        );
    }

    #[test]
    fn privileged_workload_keeps_every_capability_without_seccomp() {
        let mut spec = spec();
        spec.privileged = true;
        spec.user = User {
            uid: 1000,
            gid: 1000,
            additional_gids: Vec::new(),
        };
        let plan = plan_for(&spec);
        let mut fake = image();
        fake.executables.insert("/bin/sh".into());
        let failure = run(&mut fake, &plan.workload, 0).unwrap_err();
        assert_eq!(
            failure.errno,
            Errno::UnknownErrno,
            "the fake exec 'succeeded'"
        );
        // Capabilities 0..=40 but 24 (see the fake's capget).
        let held: u64 = ((1 << 41) - 1) & !(1 << 24);
        let mut wanted: Vec<String> = [
            "open /dev/null",
            "dup2 10 0",
            "dup2 4 1",
            "dup2 5 2",
            "setsid",
            "close_range 3.. keep 6",
            "keepcaps",
            "setgroups []",
            "setresgid 1000",
            "setresuid 1000",
            "chdir /",
            "getcwd",
            "capget",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        wanted.push(format!("capset {held:#x} inheritable {held:#x}"));
        wanted.extend(
            (0..=40)
                .filter(|cap| *cap != 24)
                .map(|cap| format!("ambient raise {cap}")),
        );
        wanted.push("umask 22".into());
        wanted.push(r#"execve /bin/sh ["sh", "-c", "true"] ["PATH=/usr/bin:/bin"]"#.into());
        assert_eq!(fake.calls, wanted);
    }

    #[test]
    fn privileged_setup_makes_buildkits_devices_and_masks_nothing() {
        let mut spec = spec();
        spec.privileged = true;
        let mut ctx = context(&spec);
        ctx.loop_devices = 2;
        let plan = setup::prepare(&spec, &ctx, &|_| Ok(true)).expect("plan");
        let mut fake = image();
        // /sys/fs/cgroup exists once sysfs is mounted.
        fake.paths.insert("sys/fs/cgroup".into(), true);
        run(&mut fake, &plan.setup, 0).expect("setup");
        contains_in_order(
            &fake.calls,
            &[
                "mknod dev/tty 20666 1280",
                "mkdir dev/net 755",
                "mknod dev/kmsg 20666 267",
                "mknod dev/net/tun 20666 2760",
                "mknod dev/loop-control 20666 2797",
                "mknod dev/loop0 60666 1792",
                "mknod dev/loop1 60666 1793",
                "mount sysfs <sys> sysfs 0xe -",
                "mount cgroup2 <sys/fs/cgroup> cgroup2 0xe -",
                "pivot_root . .",
                "sethostname box",
            ],
        );
        assert!(!fake.calls.iter().any(|c| c.contains("proc/kcore")
            || c.contains("proc/sys")
            || c.starts_with("mount tmpfs <proc")));
    }

    #[test]
    fn failing_step_stops_with_its_error() {
        let plan = plan_for(&spec());
        let mut fake = image();
        fake.fail.push(("mount devpts".into(), Errno::EINVAL));
        let failure = run(&mut fake, &plan.setup, 0).unwrap_err();
        assert_eq!(failure.errno, Errno::EINVAL);
        let step = plan.setup.get(failure.step).expect("the failed step");
        assert_eq!(step.describe(), "mounting devpts on /dev/pts");
        assert!(fake.calls.last().unwrap().starts_with("mount devpts"));
        assert!(!fake.calls.iter().any(|c| c.starts_with("pivot_root")));
        assert!(fake.fds.is_empty(), "descriptors left open: {:?}", fake.fds);
    }

    #[test]
    fn failure_index_counts_from_first() {
        let plan = plan_for(&spec());
        let mut fake = image();
        fake.fail.push(("capset".into(), Errno::EPERM));
        let failure = run(&mut fake, &plan.workload, 100).unwrap_err();
        let index = failure.step - 100;
        assert_eq!(plan.workload[index].describe(), "setting the capabilities");
    }

    #[test]
    fn dangling_symlink_destination_is_not_followed() {
        let mut spec = spec();
        spec.mounts = vec![Mount {
            destination: "/link".into(),
            source: MountSource::Bind("/host".into()),
            readonly: false,
        }];
        let mut fake = image();
        // "link" exists (as a symlink) but resolves nowhere inside the root.
        fake.fail
            .push(("openat2 </stage> link ".into(), Errno::ENOENT));
        fake.paths.insert("link".into(), false);
        let failure = run(&mut fake, &plan_for(&spec).setup, 0).unwrap_err();
        assert_eq!(failure.errno, Errno::EEXIST);
        assert!(!fake.calls.iter().any(|c| c.starts_with("mount /host")));
    }

    #[test]
    fn workload_sequence() {
        let mut spec = spec();
        spec.user = User {
            uid: 1000,
            gid: 1001,
            additional_gids: vec![5, 6],
        };
        spec.tty = true;
        spec.no_new_privileges = true;
        spec.cwd = "/home/u".into();
        let plan = plan_for(&spec);
        let mut fake = image();
        fake.executables.insert("/bin/sh".into());
        let failure = run(&mut fake, &plan.workload, 0).unwrap_err();
        assert_eq!(
            failure.errno,
            Errno::UnknownErrno,
            "the fake exec 'succeeded'"
        );
        let mut wanted: Vec<String> = [
            "open /dev/ptmx",
            "TIOCSPTLCK <ptmx> 0",
            "TIOCGPTPEER <ptmx>",
            "TIOCSWINSZ <ptmx> 30x100",
            "dup2 11 0",
            "dup2 11 1",
            "dup2 11 2",
            "sendmsg 7 SCM_RIGHTS <ptmx>",
            "setsid",
            "TIOCSCTTY 1",
            "close_range 3.. keep 6",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for cap in 0..=40u32 {
            if setup::DEFAULT_CAPABILITIES & (1 << cap) == 0 {
                wanted.push(format!("capbset_drop {cap}"));
            }
        }
        let program_len = crate::runtime::seccomp::program().unwrap().len();
        wanted.push(format!("seccomp {program_len} instructions"));
        wanted.extend(
            [
                "setgroups [5, 6]",
                "setresgid 1001",
                "setresuid 1000",
                "chdir /home/u",
                "getcwd",
                "capset 0x0",
                "ambient clear",
                "no_new_privs",
                "umask 22",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        wanted.push(r#"execve /bin/sh ["sh", "-c", "true"] ["PATH=/usr/bin:/bin"]"#.into());
        assert_eq!(fake.calls, wanted);
    }

    #[test]
    fn streams_are_dup2ed_without_a_terminal() {
        let plan = plan_for(&spec());
        let mut fake = image();
        fake.executables.insert("/bin/sh".into());
        let _ = run(&mut fake, &plan.workload, 0);
        assert_eq!(
            fake.calls.get(..6).unwrap_or_default(),
            [
                "open /dev/null",
                "dup2 10 0",
                "dup2 4 1",
                "dup2 5 2",
                "setsid",
                "close_range 3.. keep 6",
            ]
        );
        assert!(!fake.calls.iter().any(|c| c.contains("ptmx")));
    }

    #[test]
    fn terminal_descriptors_are_closed_whatever_fails() {
        // The call that fails, and the calls made up to and including it.
        let cases: &[(&str, usize)] = &[
            ("", 10),
            ("TIOCSPTLCK", 2),
            ("TIOCGPTPEER", 3),
            ("TIOCSWINSZ", 4),
            ("dup2 11 1", 6),
            ("sendmsg", 8),
        ];
        for (failing, calls) in cases {
            let mut spec = spec();
            spec.tty = true;
            let plan = plan_for(&spec);
            let mut fake = image();
            if !failing.is_empty() {
                fake.fail.push((failing.to_string(), Errno::EIO));
            }
            let terminal = &plan.workload[..2];
            let result = run(&mut fake, terminal, 0);
            assert_eq!(result.is_err(), !failing.is_empty(), "{failing}");
            assert_eq!(fake.calls.len(), *calls, "{failing}: {:#?}", fake.calls);
            assert!(fake.fds.is_empty(), "{failing}: left open {:?}", fake.fds);
        }
        // Without a size the kernel's stays.
        let mut spec = spec();
        spec.tty = true;
        let mut ctx = context(&spec);
        ctx.fds.stdio = StdioFds::Terminal {
            socket: 7,
            size: None,
        };
        let plan = setup::prepare(&spec, &ctx, &|_| Ok(true)).expect("plan");
        let mut fake = image();
        run(&mut fake, &plan.workload[..2], 0).expect("terminal");
        assert!(!fake.calls.iter().any(|c| c.starts_with("TIOCSWINSZ")));
        assert_eq!(fake.calls.last().unwrap(), "TIOCSCTTY 1");
    }

    #[test]
    fn working_directory_outside_the_root_stops_before_exec() {
        let plan = plan_for(&spec());
        let mut fake = image();
        fake.cwd_outside = true;
        let failure = run(&mut fake, &plan.workload, 0).unwrap_err();
        assert_eq!(failure.errno, Errno::EXDEV);
        assert!(matches!(plan.workload[failure.step], Action::VerifyCwd(_)));
        // Descriptors were closed before the chdir (CVE-2024-21626), and nothing ran after.
        let close = fake
            .calls
            .iter()
            .position(|c| c.starts_with("close_range"))
            .unwrap();
        let chdir = fake
            .calls
            .iter()
            .position(|c| c.starts_with("chdir"))
            .unwrap();
        assert!(close < chdir);
        assert_eq!(fake.calls.last().unwrap(), "getcwd");
    }

    #[test]
    fn exec_follows_go_lookpath() {
        /// PATH, program, executables, the paths execve is called with, the result.
        type Case = (
            &'static str,
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
            Errno,
        );
        let cases: &[Case] = &[
            ("/a:/b", "x", &["/b/x"], &["/b/x"], Errno::UnknownErrno),
            (
                "/a:/b",
                "x",
                &["/a/x", "/b/x"],
                &["/a/x"],
                Errno::UnknownErrno,
            ),
            ("/a:/b", "x", &[], &[], Errno::ENOENT),
            ("/a", "/abs/x", &[], &["/abs/x"], Errno::EACCES),
        ];
        for (path, program, executables, execs, errno) in cases {
            let mut spec = spec();
            spec.env = vec![format!("PATH={path}")];
            spec.args = vec![program.to_string()];
            let plan = plan_for(&spec);
            let Some(Action::Exec(exec)) = plan.workload.last() else {
                panic!("the workload ends with exec");
            };
            let mut fake = Fake::new(&[]);
            fake.executables = executables.iter().map(|s| s.to_string()).collect();
            let got = exec_program(&mut fake, exec);
            assert_eq!(got, *errno, "{path} {program}");
            let called: Vec<String> = fake
                .calls
                .iter()
                .filter_map(|c| c.strip_prefix("execve "))
                .map(|c| c.split(' ').next().unwrap().to_string())
                .collect();
            assert_eq!(&called, execs, "{path} {program}");
        }
    }
}
