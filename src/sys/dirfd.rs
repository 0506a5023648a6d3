//! Directory-fd based file operations shared by apply and diff: resolving paths inside a root,
//! listing and removing trees without following symlinks (extended attributes are in
//! [`super::xattr`]).
//!
//! Everything here works relative to directory file descriptors and single path components, so
//! no path is re-resolved from the host's `/` once the root is open.

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How often an `openat2` that failed with EAGAIN is retried. openat2(2): with RESOLVE_IN_ROOT
/// the kernel returns EAGAIN when a rename or mount elsewhere raced the lookup, "the caller
/// should retry".
const OPENAT2_RETRIES: usize = 32;

/// Opens `path` (relative, `/`-separated) under `root` as if `root` were `/`: `..` cannot climb
/// above it and symlinks met on the way (absolute ones too) resolve inside it. This is
/// openat2(2) with RESOLVE_IN_ROOT, the kernel's version of Docker's `FollowSymlinkInScope`;
/// RESOLVE_NO_MAGICLINKS also refuses `/proc/*/fd`-style links should the root hold a procfs.
/// An empty `path` opens the root itself. Put `O_NOFOLLOW` in `flags` to refuse a symlink as the
/// last component.
pub(crate) fn open_in_root(root: BorrowedFd<'_>, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut attempts = 0;
    loop {
        match openat2(root, path, how) {
            Err(Errno::EAGAIN) if attempts < OPENAT2_RETRIES => attempts += 1,
            Err(Errno::ENOSYS) => {
                return Err(io::Error::other(
                    "openat2(2) is not available: kiln needs Linux 5.6 or later to unpack layers",
                ));
            }
            result => return result.map_err(io::Error::from),
        }
    }
}

/// Opens the directory entry `name` of `dir` without following a symlink there.
pub(crate) fn open_child(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// A readable descriptor of the directory `dir` refers to (which may be an `O_PATH` descriptor,
/// which fsetxattr(2), fchmod(2) and getdents(2) refuse).
pub(crate) fn reopen_dir(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    open_child(dir, OsStr::new("."), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
}

/// `lstat` of `name` in `dir`; `None` when nothing has that name.
pub(crate) fn lstat_child(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileStat>> {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::ENOENT) => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

/// The file type bits of a stat.
pub(crate) fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

/// The `/proc/self/fd/N` path of `fd`: opening it reaches exactly the object `fd` refers to (a
/// "magic link", proc(5)), not whatever a path to it names now.
pub(crate) fn proc_fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The names in directory `dir` (without `.` and `..`), read through its `/proc/self/fd` link so
/// the listing is of that very directory.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    std::fs::read_dir(proc_fd_path(dir))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect()
}

/// Removes `name` from `dir`, a whole tree if it is a directory, never following a symlink: a
/// symlink is unlinked itself, and a directory is entered by a descriptor opened with
/// O_NOFOLLOW (the sequence std's `remove_dir_all` adopted for CVE-2022-21658). Nothing there is
/// fine.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(stat) = lstat_child(dir, name)? else {
        return Ok(());
    };
    if file_type(&stat) != SFlag::S_IFDIR {
        return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(io::Error::from);
    }
    let child = open_child(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    // Without root, a lower layer's read-only directory (0555) would refuse the unlinks below;
    // it is being removed anyway, so its owner may open it up first.
    if stat.st_mode & 0o700 != 0o700 {
        let _ = fchmod(&child, Mode::from_bits_truncate(stat.st_mode | 0o700));
    }
    for grandchild in list_dir(child.as_fd())? {
        remove_all(child.as_fd(), &grandchild)?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir).map_err(io::Error::from)
}

/// A C string of `bytes`, or an InvalidInput error for an interior NUL.
pub(crate) fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

/// A C string of `path`, or an InvalidInput error for an interior NUL (see [`c_string`]).
pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    c_string(path.as_os_str().as_bytes())
}
