//! Reads confined to an image's root filesystem: named files resolve with openat2's
//! RESOLVE_IN_ROOT (symlinks and `..` stay inside the root, absolute symlinks start at it), and
//! the walk enters directories by descriptor without following any symlink. Every file is first
//! opened `O_PATH` and only reopened for reading once `fstat` says it is a regular file, so a
//! FIFO or a device node planted where a database is expected is never opened for I/O.

use super::SbomError;
use crate::sys::dirfd::{lstat_child, open_child, open_in_root, proc_fd_path};
use nix::fcntl::OFlag;
use nix::sys::stat::{SFlag, fstat};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How deep the walk descends below the root. Real trees (nested `node_modules` included) stay
/// far below this; a deeper one is a crafted image.
pub(super) const MAX_WALK_DEPTH: usize = 128;

/// How many directory entries the walk visits before giving up on the image.
pub(super) const MAX_WALK_ENTRIES: u64 = 2_000_000;

/// The top-level directories the walk skips: kernel interfaces, never package data (an image's
/// are normally empty, and a mounted root's would be the host's).
const SKIPPED_TOP_DIRECTORIES: [&str; 3] = ["proc", "sys", "dev"];

/// An open root filesystem.
pub(super) struct Root {
    dir: OwnedFd,
    limits: WalkLimits,
}

/// The walk's bounds (tests lower them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WalkLimits {
    pub max_depth: usize,
    pub max_entries: u64,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits {
            max_depth: MAX_WALK_DEPTH,
            max_entries: MAX_WALK_ENTRIES,
        }
    }
}

/// What a walked entry is; symlinks and special files are not reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EntryKind {
    Directory,
    File,
}

/// One entry met by [`Root::walk`].
pub(super) struct Entry<'a> {
    /// Its directory's descriptor.
    dir: BorrowedFd<'a>,
    /// Its name in that directory.
    pub name: &'a OsStr,
    /// Its absolute path as seen in the image (`/usr/bin/rg`).
    pub path: &'a Path,
    pub kind: EntryKind,
}

impl Entry<'_> {
    /// The entry's file-type and permission bits and its size (lstat).
    pub fn stat(&self) -> Result<Option<(u32, u64)>, SbomError> {
        let stat =
            lstat_child(self.dir, self.name).map_err(|source| read_error(self.path, source))?;
        Ok(stat.map(|stat| (stat.st_mode, u64::try_from(stat.st_size).unwrap_or(0))))
    }

    /// The entry opened for reading, if it is (still) a regular file.
    pub fn open(&self) -> Result<Option<File>, SbomError> {
        let fd = match open_child(self.dir, self.name, OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(error) if is_absent(&error) => return Ok(None),
            Err(source) => return Err(read_error(self.path, source)),
        };
        reopen_regular(fd, self.path)
    }

    /// The entry's content, at most `limit` bytes; a larger file is an error.
    pub fn read(&self, limit: u64) -> Result<Option<Vec<u8>>, SbomError> {
        match self.open()? {
            Some(file) => read_file(file, self.path, limit).map(Some),
            None => Ok(None),
        }
    }

    /// The first `limit` bytes of the entry (all of it when smaller).
    pub fn read_prefix(&self, limit: u64) -> Result<Option<Vec<u8>>, SbomError> {
        match self.open()? {
            Some(file) => read_prefix(file, self.path, limit).map(Some),
            None => Ok(None),
        }
    }
}

impl Root {
    /// Opens the root filesystem at `host_path`.
    pub fn open(host_path: &Path) -> Result<Root, SbomError> {
        let dir = File::open(host_path)
            .and_then(|file| {
                if file.metadata()?.is_dir() {
                    Ok(OwnedFd::from(file))
                } else {
                    Err(io::Error::from(io::ErrorKind::NotADirectory))
                }
            })
            .map_err(|source| SbomError::OpenRoot {
                path: host_path.to_path_buf(),
                source,
            })?;
        Ok(Root {
            dir,
            limits: WalkLimits::default(),
        })
    }

    /// The same root, walked within `limits`.
    #[cfg(test)]
    pub fn with_limits(self, limits: WalkLimits) -> Root {
        Root { limits, ..self }
    }

    /// The whole content of the regular file at `path` (absolute, as seen in the image), at most
    /// `limit` bytes (a larger file is an error); `None` when nothing is there or it is not a
    /// regular file.
    pub fn read(&self, path: &Path, limit: u64) -> Result<Option<Vec<u8>>, SbomError> {
        match self.open_file(path)? {
            Some(file) => read_file(file, path, limit).map(Some),
            None => Ok(None),
        }
    }

    /// The regular files directly in the directory at `path` (resolved inside the root), by
    /// name, sorted; symlinks and everything else are left out. Empty when there is no such
    /// directory.
    pub fn files_in(&self, path: &Path) -> Result<Vec<(OsString, File)>, SbomError> {
        let dir = match open_in_root(
            self.dir.as_fd(),
            relative(path),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        ) {
            Ok(dir) => dir,
            Err(error) if is_absent(&error) => return Ok(Vec::new()),
            Err(source) => return Err(read_error(path, source)),
        };
        let mut entries = list(dir.as_fd(), path, &mut 0, self.limits.max_entries)?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut files = Vec::new();
        for (name, kind) in entries {
            if kind != Some(EntryKind::File) {
                continue;
            }
            let file_path = path.join(&name);
            let fd = match open_child(dir.as_fd(), &name, OFlag::O_PATH) {
                Ok(fd) => fd,
                Err(error) if is_absent(&error) => continue,
                Err(source) => return Err(read_error(&file_path, source)),
            };
            if let Some(file) = reopen_regular(fd, &file_path)? {
                files.push((name, file));
            }
        }
        Ok(files)
    }

    /// Visits every directory and regular file under the root (depth first, names sorted),
    /// without following symlinks and skipping `/proc`, `/sys` and `/dev`. More than
    /// [`MAX_WALK_ENTRIES`] entries or a tree deeper than [`MAX_WALK_DEPTH`] (by default) is an
    /// error.
    pub fn walk(
        &self,
        visit: &mut dyn FnMut(&Entry<'_>) -> Result<(), SbomError>,
    ) -> Result<(), SbomError> {
        let mut visited = 0;
        self.walk_dir(self.dir.as_fd(), Path::new("/"), 0, &mut visited, visit)
    }

    fn walk_dir(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        depth: usize,
        visited: &mut u64,
        visit: &mut dyn FnMut(&Entry<'_>) -> Result<(), SbomError>,
    ) -> Result<(), SbomError> {
        if depth > self.limits.max_depth {
            return Err(SbomError::TooDeep {
                path: path.to_path_buf(),
                limit: self.limits.max_depth,
            });
        }
        let mut entries = list(dir, path, visited, self.limits.max_entries)?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in entries {
            let Some(kind) = kind else { continue };
            if depth == 0
                && kind == EntryKind::Directory
                && SKIPPED_TOP_DIRECTORIES
                    .iter()
                    .any(|skipped| name.as_bytes() == skipped.as_bytes())
            {
                continue;
            }
            let child_path = path.join(&name);
            visit(&Entry {
                dir,
                name: &name,
                path: &child_path,
                kind,
            })?;
            if kind == EntryKind::Directory {
                let child = match open_child(dir, &name, OFlag::O_PATH | OFlag::O_DIRECTORY) {
                    Ok(child) => child,
                    // Gone, or replaced by something that is not a directory since the listing.
                    Err(error)
                        if is_absent(&error) || error.raw_os_error() == Some(libc::ELOOP) =>
                    {
                        continue;
                    }
                    Err(source) => return Err(read_error(&child_path, source)),
                };
                self.walk_dir(child.as_fd(), &child_path, depth + 1, visited, visit)?;
            }
        }
        Ok(())
    }

    fn open_file(&self, path: &Path) -> Result<Option<File>, SbomError> {
        let fd = match open_in_root(self.dir.as_fd(), relative(path), OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(error) if is_absent(&error) => return Ok(None),
            Err(source) => return Err(read_error(path, source)),
        };
        reopen_regular(fd, path)
    }
}

/// The names in `dir` with what they are (`None`: a symlink or special file), counting each
/// against `max_entries` in `visited`.
fn list(
    dir: BorrowedFd<'_>,
    path: &Path,
    visited: &mut u64,
    max_entries: u64,
) -> Result<Vec<(OsString, Option<EntryKind>)>, SbomError> {
    let reader = std::fs::read_dir(proc_fd_path(dir)).map_err(|source| read_error(path, source))?;
    let mut entries = Vec::new();
    for entry in reader {
        let entry = entry.map_err(|source| read_error(path, source))?;
        *visited += 1;
        if *visited > max_entries {
            return Err(SbomError::TooManyEntries { limit: max_entries });
        }
        // d_type, or an lstat of `/proc/self/fd/N/name` (which does not follow the last
        // component) when the file system does not report it.
        let file_type = entry
            .file_type()
            .map_err(|source| read_error(&path.join(entry.file_name()), source))?;
        let kind = if file_type.is_dir() {
            Some(EntryKind::Directory)
        } else if file_type.is_file() {
            Some(EntryKind::File)
        } else {
            None
        };
        entries.push((entry.file_name(), kind));
    }
    Ok(entries)
}

/// `fd` (an `O_PATH` descriptor) reopened for reading when it is a regular file.
fn reopen_regular(fd: OwnedFd, path: &Path) -> Result<Option<File>, SbomError> {
    let stat = fstat(&fd).map_err(|errno| read_error(path, errno.into()))?;
    if SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Ok(None);
    }
    // Opening the descriptor's magic link reaches exactly the inode `fd` refers to.
    File::open(proc_fd_path(fd.as_fd()))
        .map(Some)
        .map_err(|source| read_error(path, source))
}

pub(super) fn read_file(file: File, path: &Path, limit: u64) -> Result<Vec<u8>, SbomError> {
    let mut content = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut content)
        .map_err(|source| read_error(path, source))?;
    if content.len() as u64 > limit {
        return Err(SbomError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(content)
}

fn read_prefix(file: File, path: &Path, limit: u64) -> Result<Vec<u8>, SbomError> {
    let mut content = Vec::new();
    file.take(limit)
        .read_to_end(&mut content)
        .map_err(|source| read_error(path, source))?;
    Ok(content)
}

/// `path` without its leading `/`, for resolving under the root.
fn relative(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

/// Nothing there: no such entry, or a component on the way is not a directory.
fn is_absent(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}

pub(super) fn read_error(path: &Path, source: io::Error) -> SbomError {
    SbomError::Read {
        path: path.to_path_buf(),
        source,
    }
}
