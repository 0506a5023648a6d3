//! Extended attributes (xattr(7)), always of the object itself, never of a symlink's target: the
//! one implementation kiln has, over rustix's safe wrappers of the `l*xattr`/`f*xattr` calls
//! (neither std nor nix wraps them).
//!
//! Used to carry xattrs through layers (`SCHILY.xattr.*` PAX records, as docker and BuildKit
//! write them), and to read overlayfs' own bookkeeping (`trusted.overlay.opaque`, or
//! `user.overlay.opaque` for a `userxattr` mount). Errors are the kernel's, unchanged: callers
//! decide what ENOTSUP (a file system without xattrs) or ENODATA (no such attribute) mean.

use super::dirfd::{c_path, proc_fd_path};
use rustix::io::Errno;
use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

/// The names of `path`'s extended attributes (llistxattr(2)), sorted.
pub(crate) fn list(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let path = c_path(path)?;
    let buffer = read_sized(
        || rustix::fs::llistxattr_query(&*path),
        |buf| rustix::fs::llistxattr(&*path, buf),
    )?;
    let mut names: Vec<Vec<u8>> = buffer
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    names.sort();
    Ok(names)
}

/// The value of `path`'s attribute `name` (lgetxattr(2)).
pub(crate) fn get(path: &Path, name: &CStr) -> io::Result<Vec<u8>> {
    let path = c_path(path)?;
    read_sized(
        || rustix::fs::lgetxattr_query(&*path, name),
        |buf| rustix::fs::lgetxattr(&*path, name, buf),
    )
}

/// The value of attribute `name` of the file `fd` is open on (fgetxattr(2)).
pub(crate) fn get_fd(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    read_sized(
        || rustix::fs::fgetxattr_query(fd, name),
        |buf| rustix::fs::fgetxattr(fd, name, buf),
    )
}

/// Sets attribute `name` of `path` (lsetxattr(2)), creating or replacing it.
pub(crate) fn set(path: &Path, name: &CStr, value: &[u8]) -> io::Result<()> {
    let path = c_path(path)?;
    rustix::fs::lsetxattr(&*path, name, value, rustix::fs::XattrFlags::empty())
        .map_err(io::Error::from)
}

/// Sets attribute `name` on the file `fd` is open on (fsetxattr(2)).
pub(crate) fn set_fd(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    rustix::fs::fsetxattr(fd, name, value, rustix::fs::XattrFlags::empty()).map_err(io::Error::from)
}

/// Sets attribute `name` on `child` of directory `dir`, not following a symlink there
/// (lsetxattr(2) on `/proc/self/fd/DIR/child`: the magic link pins the directory, and `child`
/// is one component, so this is the `*at` form that the xattr calls lack before Linux 6.13).
pub(crate) fn set_child(
    dir: BorrowedFd<'_>,
    child: &OsStr,
    name: &CStr,
    value: &[u8],
) -> io::Result<()> {
    set(&proc_fd_path(dir).join(child), name, value)
}

/// Runs a "size query, then fill" xattr call until the value fits (it can grow between the two
/// calls, which ERANGE reports).
fn read_sized(
    query: impl Fn() -> rustix::io::Result<usize>,
    fill: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<u8>> {
    loop {
        let size = query()?;
        if size == 0 {
            // Nothing there (most files have no xattrs): no second call.
            return Ok(Vec::new());
        }
        let mut buffer = vec![0u8; size];
        match fill(&mut buffer) {
            Ok(filled) => {
                buffer.truncate(filled);
                return Ok(buffer);
            }
            Err(Errno::RANGE) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Every call reads back what the others wrote, on the object itself and not a symlink's
    /// target; ENODATA and a NUL in a path come back as errors.
    #[test]
    #[allow(clippy::disallowed_macros)] // A test's skip notice, not kiln's output.
    fn set_get_and_list_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        std::os::unix::fs::symlink("file", dir.path().join("link")).unwrap();
        let (a, b) = (c"user.kiln.a", c"user.kiln.b");
        match set(&file, b, b"two") {
            Err(error) if error.raw_os_error() == Some(libc::ENOTSUP) => {
                eprintln!("notice: skipping, the temporary directory has no user xattrs");
                return;
            }
            result => result.unwrap(),
        }
        let opened = std::fs::File::open(&file).unwrap();
        set_fd(opened.as_fd(), a, b"one").unwrap();
        assert_eq!(
            list(&file).unwrap(),
            [b"user.kiln.a".to_vec(), b"user.kiln.b".to_vec()]
        );
        assert_eq!(get(&file, a).unwrap(), b"one");
        assert_eq!(get_fd(opened.as_fd(), b).unwrap(), b"two");
        let root = std::fs::File::open(dir.path()).unwrap();
        set_child(root.as_fd(), OsStr::new("file"), a, &[7; 300]).unwrap();
        assert_eq!(get(&file, a).unwrap(), [7; 300]);
        // The symlink itself has no user xattrs (the kernel refuses them on symlinks).
        assert!(list(&dir.path().join("link")).unwrap().is_empty());
        let missing = get(&file, c"user.kiln.missing").unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENODATA));
        let nul = get(Path::new("a\0b"), a).unwrap_err();
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput);
    }
}
