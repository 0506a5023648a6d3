//! Incremental COPY from the build context: when the same COPY (same instruction, same input
//! filesystem) ran before and only some context files changed since, each unchanged file of the
//! new layer is a hard link to the same file of the previous COPY's snapshot instead of a new
//! copy of its bytes.
//!
//! A link stands for a copy only when the previous snapshot's file is exactly what a copy would
//! write now, so that the layer's tar is byte for byte the one a full copy gives:
//!
//! - the previous COPY put the same source at the same destination: the caller passes a
//!   previous run only when it read the same set of context paths, and every path that changed
//!   is a regular file now and was one then ([`crate::cache::ContentSum::unchanged_since`]), so
//!   what lands where is decided alike;
//! - the context checksum of the source path (its path, type, permission bits and content
//!   digest; see [`crate::cache::checksum`]) is the one it had when the previous COPY ran;
//! - the previous file is a regular file at the same destination path with the size, mode,
//!   owner, modification time (to the nanosecond) and extended attributes the copy would give it
//!   now (a `touch`ed or `chmod`ed source is copied again);
//! - the source has a single link (sources linked together are copied, so the copy's own link
//!   bookkeeping stays as it is), and no previous inode is linked twice into one layer (a layer
//!   tar writes a second path of one inode as a hardlink entry, which a copy would not).
//!
//! # Why linking is safe
//!
//! A committed snapshot is immutable: it is only ever an overlayfs lower directory (overlayfs(5):
//! a write copies the file up into the upper directory, a new inode; the lower is never written),
//! a source of `COPY --from` (read only), or read by the layer writer. kiln's own writers never
//! open an existing upper file for writing either: the copy creates every file with
//! `O_CREAT|O_EXCL` and clears a name by unlinking it (which drops the name, not the inode's
//! data), the mount stub cleaner works on a RUN step's fresh upper directory, and a snapshot is
//! removed by unlinking its tree. A linked file's attributes are never set here (they match
//! already): a chown, chmod or utimes on the link would change the previous snapshot too.
//! `linkat(2)` itself changes only the inode's link count and change time, which no layer
//! records.
//!
//! The previous snapshot is reached from a descriptor of its root with `openat2(2)` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, and its files by bare name with
//! `AT_SYMLINK_NOFOLLOW`; `linkat(2)` without `AT_SYMLINK_FOLLOW` links the entry itself. Nothing
//! outside it is read or linked.

use super::CopyError;
use super::target::Attributes;
use crate::builder::steps::union::{FileKind, Metadata, read_xattrs};
use crate::sys::dirfd::{lstat_child, proc_fd_path};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The previous run of a COPY from the build context, whose snapshot may lend its unchanged
/// files to this run: pass it only when that run had the same instruction and inputs and read
/// the same set of context paths, with only regular files changed since
/// ([`crate::cache::ContentSum::unchanged_since`] gives `unchanged` then). A file is linked only
/// when the previous one is exactly what a copy would write now (size, mode, owner, mtime,
/// xattrs), so the layer is the one a full copy gives.
#[derive(Debug, Clone, Copy)]
pub struct PreviousCopy<'a> {
    /// The previous run's snapshot directory: the layer it added, in overlay format.
    pub snapshot: &'a Path,
    /// The context paths whose checksum is the same now as when the previous run read them.
    pub unchanged: &'a HashSet<String>,
}

/// The state of linking from a [`PreviousCopy`] during one copy.
pub(crate) struct Reuse<'a> {
    /// An `O_PATH` descriptor of the previous snapshot's root.
    root: OwnedFd,
    unchanged: &'a HashSet<String>,
    /// The previous snapshot's directory last looked in (`None`: it has none there).
    last: Option<(Vec<OsString>, Option<OwnedFd>)>,
    /// (device, inode) of every previous file linked so far.
    linked: HashSet<(u64, u64)>,
}

impl<'a> Reuse<'a> {
    /// Opens the previous snapshot.
    pub(crate) fn open(previous: &PreviousCopy<'a>) -> Result<Reuse<'a>, CopyError> {
        let root = nix::fcntl::open(
            previous.snapshot,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|errno| CopyError::Io {
            op: "open the previous snapshot",
            path: previous.snapshot.display().to_string(),
            source: errno.into(),
        })?;
        Ok(Reuse {
            root,
            unchanged: previous.unchanged,
            last: None,
            linked: HashSet::new(),
        })
    }

    /// The directory of the previous snapshot and the name in it to link for a copy of the
    /// context file at `source` (`meta` its stat) to `name` in the destination directory
    /// `components` with `attributes`; `None` when a copy must be made.
    pub(crate) fn candidate(
        &mut self,
        source: &Path,
        meta: &Metadata,
        components: &[OsString],
        name: &OsStr,
        attributes: &Attributes,
    ) -> Result<Option<BorrowedFd<'_>>, CopyError> {
        if meta.kind != FileKind::File
            || meta.nlink != 1
            || !source.to_str().is_some_and(|p| self.unchanged.contains(p))
        {
            return Ok(None);
        }
        if !self.enter(components)? {
            return Ok(None);
        }
        let Some(dir) = self.last.as_ref().and_then(|(_, fd)| fd.as_ref()) else {
            return Ok(None);
        };
        let dir = dir.as_fd();
        let path = || {
            let mut path = PathBuf::from("/");
            path.extend(components);
            path.join(name).display().to_string()
        };
        let io_error = |source: io::Error| CopyError::Io {
            op: "inspect the previous copy of",
            path: path(),
            source,
        };
        let Some(stat) = lstat_child(dir, name).map_err(io_error)? else {
            return Ok(None);
        };
        let inode = (stat.st_dev, stat.st_ino);
        let same = stat.st_mode & libc::S_IFMT == libc::S_IFREG
            && u64::try_from(stat.st_size).ok() == Some(meta.size)
            && stat.st_mode & 0o7777 == attributes.mode
            && (stat.st_uid, stat.st_gid) == (attributes.uid, attributes.gid)
            && attributes
                .mtime
                .is_some_and(|t| (stat.st_mtime, stat.st_mtime_nsec) == (t.tv_sec(), t.tv_nsec()))
            && !self.linked.contains(&inode);
        if !same
            || read_xattrs(&proc_fd_path(dir).join(name)).map_err(io_error)? != attributes.xattrs
        {
            return Ok(None);
        }
        self.linked.insert(inode);
        Ok(Some(dir))
    }

    /// Makes the previous snapshot's directory at `components` the current one, opened beneath
    /// its root without following any symlink; false when it has no directory there.
    fn enter(&mut self, components: &[OsString]) -> Result<bool, CopyError> {
        let cached = self
            .last
            .as_ref()
            .is_some_and(|(path, _)| path.as_slice() == components);
        if !cached {
            let fd = if components.is_empty() {
                Some(
                    self.root
                        .try_clone()
                        .map_err(|e| open_error(components, e))?,
                )
            } else {
                let relative: PathBuf = components.iter().collect();
                let how = OpenHow::new()
                    .flags(
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    )
                    .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
                match openat2(self.root.as_fd(), relative.as_path(), how) {
                    Ok(fd) => Some(fd),
                    // No directory there (or a symlink on the way): nothing to link from.
                    Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV) => None,
                    Err(errno) => return Err(open_error(components, errno.into())),
                }
            };
            self.last = Some((components.to_vec(), fd));
        }
        Ok(self.last.as_ref().is_some_and(|(_, fd)| fd.is_some()))
    }
}

fn open_error(components: &[OsString], source: io::Error) -> CopyError {
    let mut path = PathBuf::from("/");
    path.extend(components);
    CopyError::Io {
        op: "open the previous copy of",
        path: path.display().to_string(),
        source,
    }
}
