//! The real [`Kernel`]: one Linux system call per method.
//!
//! Runs in the child of `clone(2)`, so it follows the child's rules (see `child`): no allocation,
//! no locks. Credentials are changed with raw `syscall(SYS_set*)` rather than glibc's wrappers:
//! those broadcast the change to every thread glibc believes exists (`__nptl_setxid`), and after
//! a raw `clone` the child's copy of glibc still lists the parent's threads, which do not exist
//! in the child, so the wrapper would signal stale thread ids and wait forever (runc and crun
//! use raw system calls for the same reason).
//!
//! Requires Linux ≥ 5.12 (`mount_setattr(2)`; `openat2(2)` is 5.6, `close_range(2)` 5.9).

use super::kernel::{At, Fd, Kernel};
use super::setup::ExecArgs;
use super::tty::WindowSize;
use libc::{c_int, c_ulong, c_void, gid_t, mode_t, sock_filter};
use nix::errno::Errno;
use std::ffi::CStr;
use std::mem::size_of;

/// How often a lookup racing with mounts elsewhere is retried before its EAGAIN is reported.
const OPENAT2_RETRIES: u32 = 64;

/// `_LINUX_CAPABILITY_VERSION_3` (linux/capability.h): 64-bit capability sets in two words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// One `SCM_RIGHTS` control message carrying one descriptor, laid out as `CMSG_SPACE(sizeof
/// (int))` bytes with the descriptor at `CMSG_DATA` (cmsg(3)): a fixed struct instead of the
/// `CMSG_*` walk over a byte buffer, so the child needs no allocation and the buffer is aligned
/// for `cmsghdr`. (The parent, which may allocate, receives it with rustix's `recvmsg`.)
#[repr(C)]
pub(crate) struct FdMessage {
    /// The header: `cmsg_len` is `CMSG_LEN(sizeof(int))`.
    pub header: libc::cmsghdr,
    /// The descriptor.
    pub fd: c_int,
}

impl FdMessage {
    /// A message carrying `fd`.
    pub(crate) fn new(fd: c_int) -> FdMessage {
        // SAFETY: an all-zero cmsghdr is valid (plain integers); the fields are set below.
        let mut header: libc::cmsghdr = unsafe { std::mem::zeroed() };
        // SAFETY: CMSG_LEN is arithmetic; the cast cannot truncate (a few bytes).
        header.cmsg_len = unsafe { libc::CMSG_LEN(size_of::<c_int>() as u32) } as _;
        header.cmsg_level = libc::SOL_SOCKET;
        header.cmsg_type = libc::SCM_RIGHTS;
        FdMessage { header, fd }
    }
}

/// The kernel itself.
pub(crate) struct Linux;

/// `fd` itself when above 2, else a copy at the lowest free number from 3 (the original closed).
/// A descriptor opened while the caller's 0, 1 or 2 were closed takes that number, and the
/// terminal step's `dup2`s onto 0, 1, 2 would then replace it.
fn above_stdio(fd: Fd) -> Result<Fd, Errno> {
    if fd > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl and close on a descriptor we own.
    let moved = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) }.into());
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    // A descriptor number fits in c_int.
    moved.map(|moved| moved as Fd)
}

/// `-1` → the current `errno`, anything else → `Ok`.
/// linux/mount.h: fsopen(2), fsconfig(2), fsmount(2) and move_mount(2) flags and commands.
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
/// `LOOP_CTL_GET_FREE` (linux/loop.h).
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

fn check(result: libc::c_long) -> Result<libc::c_long, Errno> {
    if result == -1 {
        Err(Errno::last())
    } else {
        Ok(result)
    }
}

/// `/proc/self/fd/N` for `fd`, written into `buf` (no allocation). The link names the file the
/// descriptor refers to, so mount(2) operates on exactly what `openat2` resolved.
fn fd_path(fd: Fd, buf: &mut [u8; 32]) -> Result<&CStr, Errno> {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    let mut digits = [0u8; 12];
    let mut n = u32::try_from(fd).map_err(|_| Errno::EBADF)?;
    let mut len = 0;
    loop {
        // n % 10 < 10: the cast cannot truncate.
        *digits.get_mut(len).ok_or(Errno::EBADF)? = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut at = 0;
    for &byte in PREFIX.iter().chain(digits.iter().take(len).rev()) {
        *buf.get_mut(at).ok_or(Errno::ENAMETOOLONG)? = byte;
        at += 1;
    }
    *buf.get_mut(at).ok_or(Errno::ENAMETOOLONG)? = 0;
    CStr::from_bytes_until_nul(buf).map_err(|_| Errno::EINVAL)
}

/// The path mount(2) gets for `at`.
fn at_path<'a>(at: At<'a>, buf: &'a mut [u8; 32]) -> Result<&'a CStr, Errno> {
    match at {
        At::Path(path) => Ok(path),
        At::Fd(fd) => fd_path(fd, buf),
    }
}

/// The host's first free loop device (`LOOP_CTL_GET_FREE` on `/dev/loop-control`, which
/// creates one when none is free), as BuildKit's insecure spec asks before it lists the
/// `/dev/loopN` nodes; `None` when there is no loop control. Called by the parent, before
/// `clone(2)` (it may allocate).
pub(crate) fn free_loop_device() -> Option<u32> {
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .ok()?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1; the
    // descriptor is open for the whole call.
    let free = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&control),
            LOOP_CTL_GET_FREE as _,
            0,
        )
    };
    u32::try_from(free).ok()
}

impl Kernel for Linux {
    fn unshare(&mut self, flags: c_int) -> Result<(), Errno> {
        // SAFETY: unshare takes flags only.
        check(unsafe { libc::unshare(flags) }.into()).map(drop)
    }

    fn set_groups(&mut self, groups: &[gid_t]) -> Result<(), Errno> {
        // SAFETY: the pointer and length describe a live slice.
        check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })
            .map(drop)
    }

    fn set_gid(&mut self, gid: u32) -> Result<(), Errno> {
        let armed = super::child::parent_death_armed();
        // SAFETY: plain integers.
        check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
        // The id change cleared the parent-death signal (prctl(2)): armed again when it was
        // (a detached `kiln exec` process has none, and must outlive kiln).
        if armed {
            super::child::die_with_parent();
        }
        Ok(())
    }

    fn set_uid(&mut self, uid: u32) -> Result<(), Errno> {
        let armed = super::child::parent_death_armed();
        // SAFETY: plain integers.
        check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })?;
        // The id change cleared the parent-death signal (prctl(2)): armed again when it was
        // (a detached `kiln exec` process has none, and must outlive kiln).
        if armed {
            super::child::die_with_parent();
        }
        Ok(())
    }

    fn mount(
        &mut self,
        source: Option<At<'_>>,
        target: At<'_>,
        fstype: Option<&CStr>,
        flags: c_ulong,
        data: Option<&CStr>,
    ) -> Result<(), Errno> {
        let mut source_buf = [0u8; 32];
        let mut target_buf = [0u8; 32];
        let source = match source {
            Some(at) => at_path(at, &mut source_buf)?.as_ptr(),
            None => std::ptr::null(),
        };
        let target = at_path(target, &mut target_buf)?;
        let fstype = fstype.map_or(std::ptr::null(), CStr::as_ptr);
        let data = data.map_or(std::ptr::null(), |d| d.as_ptr().cast::<c_void>());
        // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null.
        check(unsafe { libc::mount(source, target.as_ptr(), fstype, flags, data) }.into()).map(drop)
    }

    fn fs_open(&mut self, fstype: &CStr) -> Result<Fd, Errno> {
        // SAFETY: `fstype` is a NUL-terminated string that outlives the call.
        let fd =
            check(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
        Ok(fd as Fd)
    }

    fn fs_config(&mut self, fs: Fd, key: &CStr, value: Option<&CStr>) -> Result<(), Errno> {
        let (command, value) = match value {
            Some(value) => (FSCONFIG_SET_STRING, value.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: `key` and `value` are NUL-terminated strings that outlive the call (a flag
        // takes a null value); `aux` is unused for these commands and must be 0.
        check(unsafe { libc::syscall(libc::SYS_fsconfig, fs, command, key.as_ptr(), value, 0) })
            .map(drop)
    }

    fn fs_create(&mut self, fs: Fd) -> Result<(), Errno> {
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: FSCONFIG_CMD_CREATE takes no key or value: both null, aux 0.
        check(unsafe { libc::syscall(libc::SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, null, null, 0) })
            .map(drop)
    }

    fn fs_mount(&mut self, fs: Fd, attrs: u64) -> Result<Fd, Errno> {
        // SAFETY: plain integer arguments; the kernel validates `fs` and the flags.
        let fd = check(unsafe { libc::syscall(libc::SYS_fsmount, fs, FSMOUNT_CLOEXEC, attrs) })?;
        Ok(fd as Fd)
    }

    fn move_mount(&mut self, mount: Fd, target: At<'_>) -> Result<(), Errno> {
        let (dir, path, flags) = match target {
            At::Path(path) => (libc::AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH),
            At::Fd(fd) => (fd, c"", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH),
        };
        // SAFETY: the empty string with MOVE_MOUNT_F_EMPTY_PATH names `mount`; `path` is a
        // NUL-terminated string that outlives the call, resolved from the current directory, or
        // empty with MOVE_MOUNT_T_EMPTY_PATH to name the directory `dir` itself.
        check(unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mount,
                c"".as_ptr(),
                dir,
                path.as_ptr(),
                flags,
            )
        })
        .map(drop)
    }

    fn mount_setattr(&mut self, fd: Fd, attrs: u64, recursive: bool) -> Result<(), Errno> {
        let attr = libc::mount_attr {
            attr_set: attrs,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        let mut flags = libc::AT_EMPTY_PATH;
        if recursive {
            flags |= libc::AT_RECURSIVE;
        }
        // SAFETY: an empty path with AT_EMPTY_PATH names `fd`; `attr` is a live mount_attr of
        // the size passed.
        check(unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                fd,
                c"".as_ptr(),
                flags,
                &attr as *const libc::mount_attr,
                size_of::<libc::mount_attr>(),
            )
        })
        .map(drop)
    }

    fn open_dir(&mut self, path: &CStr) -> Result<Fd, Errno> {
        // SAFETY: a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        check(fd.into()).map(|_| fd)
    }

    fn open_in_root(&mut self, root: Fd, path: &CStr, no_symlinks: bool) -> Result<Fd, Errno> {
        // RESOLVE_IN_ROOT treats `root` as "/" for absolute symlinks and "..", so nothing
        // resolves outside it; magic links (/proc/self/fd/N, /proc/N/root) are refused because
        // they jump anywhere (openat2(2)).
        let mut resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        if no_symlinks {
            resolve |= libc::RESOLVE_NO_SYMLINKS;
        }
        // libc's open_how is non-exhaustive (the kernel may grow it): start from zeroes.
        // SAFETY: an all-zero open_how is valid (no flags, mode 0, no resolve flags).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
        how.resolve = resolve;
        // RESOLVE_IN_ROOT fails with EAGAIN when any mount or rename happened on the system
        // during the lookup (the kernel cannot prove it stayed inside the root); openat2(2) says
        // to retry. Other sandboxes starting in parallel mount all the time, so this is common.
        let mut attempts = 0;
        loop {
            // SAFETY: a NUL-terminated path and a live open_how of the size passed.
            let result = check(unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    root,
                    path.as_ptr(),
                    &how as *const libc::open_how,
                    size_of::<libc::open_how>(),
                )
            });
            match result {
                Err(Errno::EAGAIN) if attempts < OPENAT2_RETRIES => attempts += 1,
                result => return c_int::try_from(result?).map_err(|_| Errno::EBADF),
            }
        }
    }

    fn is_dir(&mut self, fd: Fd) -> Result<bool, Errno> {
        // SAFETY: an all-zero stat is a valid value for the kernel to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a live, writable stat.
        check(unsafe { libc::fstat(fd, &mut st) }.into())?;
        Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
    }

    fn mkdir_at(&mut self, dir: Fd, name: &CStr, mode: mode_t) -> Result<(), Errno> {
        // SAFETY: a NUL-terminated name.
        check(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) }.into()).map(drop)
    }

    fn mknod_at(
        &mut self,
        dir: Fd,
        name: &CStr,
        mode: mode_t,
        dev: libc::dev_t,
    ) -> Result<(), Errno> {
        // SAFETY: a NUL-terminated name.
        check(unsafe { libc::mknodat(dir, name.as_ptr(), mode, dev) }.into()).map(drop)
    }

    fn symlink_at(&mut self, points_to: &CStr, dir: Fd, name: &CStr) -> Result<(), Errno> {
        // SAFETY: NUL-terminated strings.
        check(unsafe { libc::symlinkat(points_to.as_ptr(), dir, name.as_ptr()) }.into()).map(drop)
    }

    fn close(&mut self, fd: Fd) {
        // SAFETY: closing a descriptor this code opened; errors change nothing here.
        unsafe { libc::close(fd) };
    }

    fn fchdir(&mut self, fd: Fd) -> Result<(), Errno> {
        // SAFETY: plain descriptor.
        check(unsafe { libc::fchdir(fd) }.into()).map(drop)
    }

    fn chdir(&mut self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: a NUL-terminated path.
        check(unsafe { libc::chdir(path.as_ptr()) }.into()).map(drop)
    }

    fn pivot_root_here(&mut self) -> Result<(), Errno> {
        // SAFETY: NUL-terminated paths.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) })
            .map(drop)
    }

    fn detach_here(&mut self) -> Result<(), Errno> {
        // SAFETY: a NUL-terminated path.
        check(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) }.into()).map(drop)
    }

    fn sethostname(&mut self, name: &CStr) -> Result<(), Errno> {
        let bytes = name.to_bytes();
        // SAFETY: pointer and length of a live byte string.
        check(unsafe { libc::sethostname(bytes.as_ptr().cast(), bytes.len()) }.into()).map(drop)
    }

    fn loopback_up(&mut self) -> Result<(), Errno> {
        // SAFETY: socket takes integers only.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        check(sock.into())?;
        // SAFETY: an all-zero ifreq is valid (empty name, zero flags).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, &byte) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = byte as libc::c_char;
        }
        // SAFETY: `req` is a live ifreq; SIOCGIFFLAGS fills ifru_flags.
        let result = check(unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) }.into())
            .and_then(|_| {
                // SAFETY: the union member SIOCGIFFLAGS wrote.
                unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
                // SAFETY: as above.
                check(unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) }.into())
            });
        self.close(sock);
        result.map(drop)
    }

    fn join_network(&mut self, fd: Fd) -> Result<(), Errno> {
        // SAFETY: setns takes a descriptor and flags only.
        check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }.into()).map(drop)
    }

    fn open_dev_null(&mut self) -> Result<Fd, Errno> {
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        check(fd.into()).map(|_| fd)
    }

    fn dup2(&mut self, from: Fd, to: Fd) -> Result<(), Errno> {
        // SAFETY: plain descriptors.
        check(unsafe { libc::dup2(from, to) }.into()).map(drop)
    }

    fn setsid(&mut self) -> Result<(), Errno> {
        // SAFETY: no arguments.
        check(unsafe { libc::setsid() }.into()).map(drop)
    }

    fn set_controlling_tty(&mut self, fd: Fd) -> Result<(), Errno> {
        // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal from another session).
        check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }.into()).map(drop)
    }

    fn open_ptmx(&mut self) -> Result<Fd, Errno> {
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(c"/dev/ptmx".as_ptr(), flags) };
        check(fd.into())?;
        above_stdio(fd)
    }

    fn unlock_pty(&mut self, master: Fd) -> Result<(), Errno> {
        let unlock: c_int = 0;
        // SAFETY: TIOCSPTLCK reads one int from the live variable.
        check(unsafe { libc::ioctl(master, libc::TIOCSPTLCK, &unlock) }.into()).map(drop)
    }

    fn open_pty_peer(&mut self, master: Fd) -> Result<Fd, Errno> {
        let flags = libc::O_RDWR | libc::O_NOCTTY;
        // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor.
        let fd = unsafe { libc::ioctl(master, libc::TIOCGPTPEER, flags) };
        check(fd.into())?;
        above_stdio(fd)
    }

    fn set_window_size(&mut self, fd: Fd, size: WindowSize) -> Result<(), Errno> {
        let size = libc::winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the live struct.
        check(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) }.into()).map(drop)
    }

    fn send_fd(&mut self, socket: Fd, fd: Fd) -> Result<(), Errno> {
        // unix(7): ancillary data travels with real data; one byte of it.
        let mut byte = 0u8;
        let mut iov = libc::iovec {
            iov_base: (&raw mut byte).cast(),
            iov_len: 1,
        };
        let mut control = FdMessage::new(fd);
        // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths); filled below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = (&raw mut control).cast();
        msg.msg_controllen = size_of::<FdMessage>() as _;
        loop {
            // SAFETY: msg points to live stack buffers; MSG_NOSIGNAL: a closed peer is EPIPE,
            // not a SIGPIPE.
            match check(unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) } as libc::c_long)
            {
                Err(Errno::EINTR) => continue,
                other => return other.map(drop),
            }
        }
    }

    fn close_from(&mut self, first: Fd, keep: Fd) -> Result<(), Errno> {
        let close_range = |from: Fd, to: u32| -> Result<(), Errno> {
            let from = u32::try_from(from).map_err(|_| Errno::EBADF)?;
            if from > to {
                return Ok(());
            }
            // SAFETY: close_range takes integers only.
            check(unsafe { libc::syscall(libc::SYS_close_range, from, to, 0) }).map(drop)
        };
        if keep >= first {
            if let Ok(below) = u32::try_from(keep - 1) {
                close_range(first, below)?;
            }
            close_range(keep.saturating_add(1), u32::MAX)
        } else {
            close_range(first, u32::MAX)
        }
    }

    fn drop_bounding(&mut self, cap: u32) -> Result<(), Errno> {
        // SAFETY: prctl with integer arguments.
        check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c_ulong::from(cap), 0, 0, 0) }.into())
            .map(drop)
    }

    fn capset(&mut self, caps: u64, inheritable: u64) -> Result<(), Errno> {
        let header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        // Low and high 32 bits of each set; the casts keep exactly those bits.
        let data = [
            CapData {
                effective: caps as u32,
                permitted: caps as u32,
                inheritable: inheritable as u32,
            },
            CapData {
                effective: (caps >> 32) as u32,
                permitted: (caps >> 32) as u32,
                inheritable: (inheritable >> 32) as u32,
            },
        ];
        // SAFETY: a version-3 header and the two data words it requires.
        check(unsafe {
            libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr())
        })
        .map(drop)
    }

    fn permitted_capabilities(&mut self) -> Result<u64, Errno> {
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: a version-3 header and room for the two data words the kernel writes.
        check(unsafe {
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapHeader,
                data.as_mut_ptr(),
            )
        })?;
        let [low, high] = data;
        Ok(u64::from(low.permitted) | (u64::from(high.permitted) << 32))
    }

    fn raise_ambient(&mut self, cap: u32) -> Result<(), Errno> {
        // SAFETY: prctl with integer arguments.
        check(
            unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as c_ulong,
                    c_ulong::from(cap),
                    0,
                    0,
                )
            }
            .into(),
        )
        .map(drop)
    }

    fn keep_capabilities(&mut self) -> Result<(), Errno> {
        // SAFETY: prctl with integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1 as c_ulong, 0, 0, 0) }.into()).map(drop)
    }

    fn clear_ambient(&mut self) -> Result<(), Errno> {
        // SAFETY: prctl with integer arguments.
        check(
            unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as c_ulong,
                    0,
                    0,
                    0,
                )
            }
            .into(),
        )
        .map(drop)
    }

    fn no_new_privs(&mut self) -> Result<(), Errno> {
        // SAFETY: prctl with integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as c_ulong, 0, 0, 0) }.into())
            .map(drop)
    }

    fn umask(&mut self, mask: mode_t) {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(mask) };
    }

    fn cwd_reachable(&mut self) -> Result<bool, Errno> {
        let mut buf = [0u8; 4096];
        // The raw system call, not glibc's getcwd (which hides the prefix): a directory outside
        // the process's root comes back as "(unreachable)/..." (getcwd(2) NOTES).
        // SAFETY: the buffer is live and writable for its length.
        check(unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) })?;
        Ok(buf.first() == Some(&b'/'))
    }

    fn seccomp(&mut self, program: &[sock_filter]) -> Result<(), Errno> {
        let len = u16::try_from(program.len()).map_err(|_| Errno::EINVAL)?;
        let fprog = libc::sock_fprog {
            len,
            // The kernel only reads the program.
            filter: program.as_ptr().cast_mut(),
        };
        // SAFETY: a live sock_fprog describing a live program.
        check(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const libc::sock_fprog,
            )
        })
        .map(drop)
    }

    fn is_executable(&mut self, path: &CStr) -> bool {
        // SAFETY: an all-zero stat is a valid value for the kernel to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a writable stat.
        let found = unsafe { libc::stat(path.as_ptr(), &mut st) } == 0;
        found && st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0
    }

    fn execve(&mut self, path: &CStr, exec: &ExecArgs) -> Errno {
        // SAFETY: argv and envp are NUL-terminated arrays of pointers into strings `exec` owns.
        unsafe { libc::execve(path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr()) };
        Errno::last()
    }

    fn setns(&mut self, pidfd: Fd, flags: c_int) -> Result<(), Errno> {
        // SAFETY: integers only.
        check(unsafe { libc::setns(pidfd, flags) }.into()).map(drop)
    }

    fn set_rlimit(&mut self, resource: c_int, soft: u64, hard: u64) -> Result<(), Errno> {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: a live rlimit; the resource is an integer the kernel checks (EINVAL).
        check(unsafe { libc::syscall(libc::SYS_setrlimit, resource, &limit) }).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths() {
        let mut buf = [0u8; 32];
        for (fd, want) in [
            (0, "/proc/self/fd/0"),
            (7, "/proc/self/fd/7"),
            (10, "/proc/self/fd/10"),
            (i32::MAX, "/proc/self/fd/2147483647"),
        ] {
            assert_eq!(fd_path(fd, &mut buf).unwrap().to_str().unwrap(), want);
        }
        assert_eq!(fd_path(-1, &mut buf), Err(Errno::EBADF));
    }

    #[test]
    fn fd_message_has_the_cmsg_layout() {
        // SAFETY: CMSG_* are arithmetic on their argument (and the null header's address).
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(size_of::<c_int>() as u32) as usize,
                libc::CMSG_LEN(size_of::<c_int>() as u32) as usize,
            )
        };
        assert_eq!(size_of::<FdMessage>(), space);
        // CMSG_DATA is at CMSG_LEN(0) from the header.
        assert_eq!(
            std::mem::offset_of!(FdMessage, fd),
            len - size_of::<c_int>()
        );
        assert_eq!(FdMessage::new(7).header.cmsg_len as u64, len as u64);
    }
}
