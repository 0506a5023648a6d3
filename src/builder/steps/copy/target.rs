//! Writing into the upper directory of a file operation, as the overlay mount of the target's
//! layers with `upper` on top would.
//!
//! Paths are resolved in the union of `upper` and the lowers (so symlinked directories of the image
//! such as `/bin -> usr/bin` are followed, inside the image), and every write lands in `upper`:
//! a directory that exists only in a lower layer is first created in `upper` with the lower one's
//! owner, mode, xattrs and time ("copy-up"), so the layer records it as it was. Lowers are never
//! modified.
//!
//! Every upper directory is reached from the upper root one component at a time with `O_NOFOLLOW`
//! and every entry is created with the `*at` calls relative to its parent's descriptor, never
//! following a symlink (`O_CREAT|O_EXCL|O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), so nothing outside
//! `upper` can be created or changed, whatever the lowers or the sources hold.

use super::CopyError;
use crate::builder::steps::union::{Found, MergedDir, Metadata, UnionError, UnionFs, display};
use crate::layer::WHITEOUT_PREFIX;
use crate::sys::dirfd::{self, open_child};
use crate::sys::xattr;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, futimens, mkdirat,
    mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The layer index of `upper` in the target union.
const UPPER: usize = 0;

/// A directory of the target, ready to be written into: its descriptor in `upper` and its merged
/// view.
pub(crate) struct DestDir {
    fd: OwnedFd,
    merged: MergedDir,
    components: Vec<OsString>,
}

impl DestDir {
    /// The directory's path components from the root.
    pub(crate) fn components(&self) -> &[OsString] {
        &self.components
    }

    fn child(&self, name: &OsStr) -> Vec<OsString> {
        let mut components = self.components.clone();
        components.push(name.to_os_string());
        components
    }
}

/// Who owns a new entry and what mode, xattrs and mtime it gets.
pub(crate) struct Attributes {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Permission and special bits.
    pub(crate) mode: u32,
    pub(crate) xattrs: Vec<(CString, Vec<u8>)>,
    /// `None`: leave the time the write gave it (now).
    pub(crate) mtime: Option<TimeSpec>,
}

/// The writable view of a target: its lowers with `upper` on top.
pub(crate) struct Target {
    union: UnionFs,
    /// The lowers alone, to know what a directory replaced in `upper` would let show through.
    lowers: UnionFs,
    upper: OwnedFd,
    /// Directory mtimes to set once everything below them is written (a write in a directory
    /// changes its mtime), by path.
    times: HashMap<Vec<OsString>, TimeSpec>,
}

impl Target {
    pub(crate) fn new(lowers: &[PathBuf], upper: &Path) -> Result<Target, CopyError> {
        let mut layers = vec![upper.to_path_buf()];
        layers.extend(lowers.iter().cloned());
        let union = UnionFs::new(layers)?;
        let lowers = UnionFs::new(lowers.to_vec())?;
        let upper = union
            .root_dir()?
            .top_fd()
            .map(|fd| fd.try_clone_to_owned())
            .transpose()
            .map_err(|source| io_error("open", Path::new("/"), source))?
            .ok_or_else(|| CopyError::from(UnionError::NotFound { path: "/".into() }))?;
        Ok(Target {
            union,
            lowers,
            upper,
            times: HashMap::new(),
        })
    }

    /// The union of `upper` and the lowers.
    pub(crate) fn union(&self) -> &UnionFs {
        &self.union
    }

    /// `path` (absolute) resolved in the target, every symlink (the last one too when
    /// `follow_last`) followed inside it.
    pub(crate) fn resolve(
        &self,
        path: &str,
        follow_last: bool,
    ) -> Result<Vec<OsString>, CopyError> {
        Ok(self
            .union
            .resolve_components(&[], path.as_bytes(), follow_last)?)
    }

    /// What `components` (resolved) name in the target.
    pub(crate) fn lookup(&self, components: &[OsString]) -> Result<Found, CopyError> {
        Ok(self.union.walk(components)?)
    }

    /// `mkdir -p` of the resolved `components` (fsutil's `MkdirAll`): nothing is written when
    /// they all exist as directories; otherwise the existing ones are copied up (as they are)
    /// and the missing ones created with `mode` and owned by `owner`. A non-directory on the way
    /// is an error.
    pub(crate) fn mkdir_all(
        &mut self,
        components: &[OsString],
        mode: u32,
        owner: (u32, u32),
    ) -> Result<(), CopyError> {
        let mut first_missing = None;
        let mut dir = self.union.root_dir()?;
        for (index, name) in components.iter().enumerate() {
            match self.union.lookup_in(&dir, name)? {
                Found::Dir(next, _) => dir = next,
                Found::Node(_) => {
                    return Err(CopyError::MkdirNotADirectory {
                        path: display(components.get(..=index).unwrap_or_default()),
                    });
                }
                Found::Missing => {
                    first_missing = Some(index);
                    break;
                }
            }
        }
        drop(dir);
        let Some(first_missing) = first_missing else {
            return Ok(());
        };
        let (existing, missing) = components.split_at(first_missing);
        let mut dir = self.dest_dir(existing)?;
        for name in missing {
            dir = self.new_dir(&dir, name, mode, owner)?;
        }
        Ok(())
    }

    /// The existing directory `components` (resolved) of the target, copied up into `upper`
    /// (with its parents) where only a lower layer has it.
    pub(crate) fn dest_dir(&mut self, components: &[OsString]) -> Result<DestDir, CopyError> {
        let root = self.union.root_dir()?;
        let mut dir = DestDir {
            fd: self
                .upper
                .try_clone()
                .map_err(|e| io_error("open", Path::new("/"), e))?,
            merged: root,
            components: Vec::new(),
        };
        for name in components {
            dir = match self.union.lookup_in(&dir.merged, name)? {
                Found::Dir(merged, meta) => self.enter_dir(&dir, name, merged, &meta)?,
                Found::Node(_) => {
                    return Err(CopyError::MkdirNotADirectory {
                        path: display(&dir.child(name)),
                    });
                }
                Found::Missing => {
                    return Err(UnionError::NotFound {
                        path: display(&dir.child(name)),
                    }
                    .into());
                }
            };
        }
        Ok(dir)
    }

    /// Makes room for a non-directory `name` in `dir`: what this operation put there before is
    /// removed (a lower layer's file needs nothing: the new one hides it). A directory there is
    /// fsutil's "cannot replace to directory ... with file" unless `replace_dirs` (tar extraction
    /// replaces anything, as BuildKit's `applyRootArchive` does).
    pub(crate) fn clear_for_file(
        &mut self,
        dir: &DestDir,
        name: &OsStr,
        replace_dirs: bool,
    ) -> Result<(), CopyError> {
        let path = dir.child(name);
        check_name(name, &path)?;
        match self.union.lookup_in(&dir.merged, name)? {
            Found::Missing => Ok(()),
            Found::Node(node) => {
                if node.layer == UPPER {
                    unlinkat(dir.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir)
                        .map_err(|e| io_error("remove", &path_of(&path), e.into()))?;
                }
                Ok(())
            }
            Found::Dir(merged, _) => {
                if !replace_dirs {
                    return Err(CopyError::ReplaceDirectory {
                        path: display(&path),
                    });
                }
                if merged.top_layer() == Some(UPPER) {
                    dirfd::remove_all(dir.fd.as_fd(), name)
                        .map_err(|e| io_error("remove", &path_of(&path), e))?;
                }
                Ok(())
            }
        }
    }

    /// The directory `name` in `dir`, for copying into: an existing one (copied up if it is only
    /// in a lower layer; `created` false) or a new one with `mode` and `owner`. A non-directory
    /// there is fsutil's "cannot copy to non-directory", unless `replace_files`; a directory
    /// that replaces this operation's own file over a lower directory is made opaque, so the
    /// lower directory's entries stay hidden as they were.
    pub(crate) fn child_dir(
        &mut self,
        dir: &DestDir,
        name: &OsStr,
        mode: u32,
        owner: (u32, u32),
        replace_files: bool,
    ) -> Result<(DestDir, bool), CopyError> {
        let path = dir.child(name);
        check_name(name, &path)?;
        match self.union.lookup_in(&dir.merged, name)? {
            Found::Dir(merged, meta) => Ok((self.enter_dir(dir, name, merged, &meta)?, false)),
            Found::Missing => Ok((self.new_dir(dir, name, mode, owner)?, true)),
            Found::Node(node) => {
                if !replace_files {
                    return Err(CopyError::NotADirectory {
                        path: display(&path),
                    });
                }
                if node.layer == UPPER {
                    unlinkat(dir.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir)
                        .map_err(|e| io_error("remove", &path_of(&path), e.into()))?;
                }
                let hides_lower_dir = matches!(self.lowers.walk(&path)?, Found::Dir(..));
                let new = self.new_dir(dir, name, mode, owner)?;
                if hides_lower_dir {
                    // overlayfs(5): a directory made over a whiteout is opaque.
                    xattr::set_fd(new.fd.as_fd(), c"trusted.overlay.opaque", b"y")
                        .map_err(|e| io_error("mark opaque", &path_of(&path), e))?;
                }
                Ok((new, true))
            }
        }
    }

    /// Sets a copied directory's owner, xattrs and mode now, and its mtime once everything below
    /// it is written.
    pub(crate) fn set_dir_attributes(
        &mut self,
        dir: &DestDir,
        attributes: &Attributes,
    ) -> Result<(), CopyError> {
        let path = path_of(&dir.components);
        set_fd_attributes(dir.fd.as_fd(), attributes, &path)?;
        if let Some(mtime) = attributes.mtime {
            self.times.insert(dir.components.clone(), mtime);
        }
        Ok(())
    }

    /// Creates the regular file `name` in `dir` (cleared first with [`Target::clear_for_file`])
    /// with the bytes of `content`, then its attributes. Returns the bytes written and the new
    /// file's (device, inode).
    pub(crate) fn write_file(
        &mut self,
        dir: &DestDir,
        name: &OsStr,
        content: &mut (impl Read + ?Sized),
        attributes: &Attributes,
    ) -> Result<(u64, (u64, u64)), CopyError> {
        let path = path_of(&dir.child(name));
        // O_CREAT|O_EXCL never opens an existing file and, with O_NOFOLLOW, never a symlink's
        // target (open(2)); the name was just cleared.
        let fd = nix::fcntl::openat(
            dir.fd.as_fd(),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| io_error("create", &path, e.into()))?;
        let mut file = File::from(fd);
        // std's copy between two files uses copy_file_range(2) (in the kernel, no trip through
        // user space) when it can; that needs the concrete `File` type, hence the generic
        // `content` (through a `dyn Read` it would fall back to an 8 KiB stack buffer).
        let bytes = io::copy(content, &mut file).map_err(|e| io_error("write", &path, e))?;
        let stat = fstat(&file).map_err(|e| io_error("stat", &path, e.into()))?;
        set_new_file_attributes(file.as_fd(), &stat, attributes, &path)?;
        Ok((bytes, (stat.st_dev, stat.st_ino)))
    }

    /// Creates the symlink `name -> target` in `dir` (cleared first); its mode is not set
    /// (symlinks have none on Linux).
    pub(crate) fn symlink(
        &mut self,
        dir: &DestDir,
        name: &OsStr,
        target: &OsStr,
        attributes: &Attributes,
    ) -> Result<(), CopyError> {
        let path = path_of(&dir.child(name));
        // The target is data: stored as is, never resolved here.
        symlinkat(target, dir.fd.as_fd(), name)
            .map_err(|e| io_error("create symlink", &path, e.into()))?;
        set_child_attributes(dir.fd.as_fd(), name, attributes, false, &path)
    }

    /// Creates a fifo or a device node `name` in `dir` (cleared first). A character device 0/0
    /// is refused: in a snapshot it is an overlay whiteout, and would delete the name from the
    /// image.
    pub(crate) fn node(
        &mut self,
        dir: &DestDir,
        name: &OsStr,
        kind: SFlag,
        rdev: u64,
        attributes: &Attributes,
    ) -> Result<(), CopyError> {
        let path = dir.child(name);
        if kind == SFlag::S_IFCHR && rdev == 0 {
            return Err(CopyError::WhiteoutDevice {
                path: display(&path),
            });
        }
        let path = path_of(&path);
        mknodat(
            dir.fd.as_fd(),
            name,
            kind,
            Mode::from_bits_truncate(0o600),
            rdev,
        )
        .map_err(|e| io_error("create", &path, e.into()))?;
        set_child_attributes(dir.fd.as_fd(), name, attributes, true, &path)
    }

    /// Links `name` in `dir` (cleared first) to the file at `existing` in `upper` when it is
    /// still the inode `expected` there. Returns false, writing nothing, when it is not (then
    /// the caller copies instead).
    pub(crate) fn hardlink(
        &mut self,
        dir: &DestDir,
        name: &OsStr,
        existing: &[OsString],
        expected: (u64, u64),
    ) -> Result<bool, CopyError> {
        let Some((existing_name, existing_parent)) = existing.split_last() else {
            return Ok(false);
        };
        let Some(parent) = self.open_upper(existing_parent)? else {
            return Ok(false);
        };
        match dirfd::lstat_child(parent.as_fd(), existing_name) {
            Ok(Some(stat)) if (stat.st_dev, stat.st_ino) == expected => {}
            _ => return Ok(false),
        }
        let path = path_of(&dir.child(name));
        // linkat(2) without AT_SYMLINK_FOLLOW links the entry itself, never a symlink's target.
        linkat(
            parent.as_fd(),
            existing_name.as_os_str(),
            dir.fd.as_fd(),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| io_error("link", &path, e.into()))?;
        Ok(true)
    }

    /// Links `name` in `dir` (cleared first) to `existing_name` in `existing_parent`, a
    /// directory of a committed snapshot (see [`super::reuse`]); false, with nothing written,
    /// when the two are on different filesystems or the file has too many links (the caller
    /// copies instead). Nothing of the linked file is changed.
    pub(crate) fn link_from(
        &mut self,
        dir: &DestDir,
        name: &OsStr,
        existing_parent: BorrowedFd<'_>,
        existing_name: &OsStr,
    ) -> Result<bool, CopyError> {
        // linkat(2) without AT_SYMLINK_FOLLOW links the entry itself, never a symlink's target.
        match linkat(
            existing_parent,
            existing_name,
            dir.fd.as_fd(),
            name,
            AtFlags::empty(),
        ) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::EXDEV | nix::errno::Errno::EMLINK) => Ok(false),
            Err(errno) => Err(io_error("link", &path_of(&dir.child(name)), errno.into())),
        }
    }

    /// Links `name` in `dir` (cleared first) to `existing_name` in the upper directory
    /// `existing_parent` (a descriptor from the union, of `upper`).
    pub(crate) fn hardlink_at(
        &mut self,
        dir: &DestDir,
        name: &OsStr,
        existing_parent: BorrowedFd<'_>,
        existing_name: &OsStr,
    ) -> Result<(), CopyError> {
        let path = path_of(&dir.child(name));
        linkat(
            existing_parent,
            existing_name,
            dir.fd.as_fd(),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| io_error("link", &path, e.into()))
    }

    /// Sets the attributes of the existing entry `name` of `dir` (a hardlink just made), not
    /// following a symlink; `set_mode` false for symlinks.
    pub(crate) fn set_attributes(
        &mut self,
        dir: &DestDir,
        name: &OsStr,
        attributes: &Attributes,
        set_mode: bool,
    ) -> Result<(), CopyError> {
        let path = path_of(&dir.child(name));
        if !set_mode {
            return set_child_attributes(dir.fd.as_fd(), name, attributes, false, &path);
        }
        // A regular file or node: opened without following, so the mode goes on it.
        let fd = open_child(dir.fd.as_fd(), name, OFlag::O_PATH)
            .map_err(|e| io_error("open", &path, e))?;
        let stat = fstat(&fd).map_err(|e| io_error("stat", &path, e.into()))?;
        if dirfd::file_type(&stat) == SFlag::S_IFREG {
            let file = open_child(dir.fd.as_fd(), name, OFlag::O_RDONLY)
                .map_err(|e| io_error("open", &path, e))?;
            return set_fd_attributes(file.as_fd(), attributes, &path);
        }
        set_child_attributes(dir.fd.as_fd(), name, attributes, true, &path)
    }

    /// Sets the deferred directory mtimes, deepest first. A directory gone since is skipped.
    pub(crate) fn finish(&mut self) -> Result<(), CopyError> {
        let mut times: Vec<(Vec<OsString>, TimeSpec)> = self.times.drain().collect();
        times.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        for (components, mtime) in times {
            let Some(fd) = self.open_upper(&components)? else {
                continue;
            };
            futimens(&fd, &mtime, &mtime)
                .map_err(|e| io_error("set times of", &path_of(&components), e.into()))?;
        }
        Ok(())
    }

    /// The upper directory at `components`, or `None` when it is not there (or not a directory),
    /// reached one component at a time without following symlinks.
    fn open_upper(&self, components: &[OsString]) -> Result<Option<OwnedFd>, CopyError> {
        let mut fd = self
            .upper
            .try_clone()
            .map_err(|e| io_error("open", Path::new("/"), e))?;
        for (index, name) in components.iter().enumerate() {
            fd = match open_child(fd.as_fd(), name, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
                Ok(fd) => fd,
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                    ) =>
                {
                    return Ok(None);
                }
                Err(error) => {
                    let prefix = components.get(..=index).unwrap_or_default();
                    return Err(io_error("open", &path_of(prefix), error));
                }
            };
        }
        Ok(Some(fd))
    }

    /// Opens the directory `name` of `dir` in `upper` for writing, copying it up first when only
    /// a lower layer has it.
    fn enter_dir(
        &mut self,
        dir: &DestDir,
        name: &OsStr,
        merged: MergedDir,
        meta: &Metadata,
    ) -> Result<DestDir, CopyError> {
        let components = dir.child(name);
        let path = path_of(&components);
        if merged.top_layer() == Some(UPPER) {
            let fd = open_child(dir.fd.as_fd(), name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .map_err(|e| io_error("open", &path, e))?;
            return Ok(DestDir {
                fd,
                merged,
                components,
            });
        }
        // Copy-up: the directory as the lower layer has it, and its time restored at the end.
        let attributes = Attributes {
            uid: meta.uid,
            gid: meta.gid,
            mode: meta.mode,
            xattrs: self.union.dir_xattrs(&merged)?,
            mtime: Some(TimeSpec::new(meta.mtime, meta.mtime_nsec)),
        };
        let fd = self.make_dir(dir, name, &path)?;
        let new = DestDir {
            merged: merged.with_top(
                UPPER,
                fd.try_clone().map_err(|e| io_error("open", &path, e))?,
            ),
            fd,
            components,
        };
        self.set_dir_attributes(&new, &attributes)?;
        Ok(new)
    }

    /// A new directory `name` in `dir` with `mode` and `owner` (and the time of its creation).
    fn new_dir(
        &mut self,
        dir: &DestDir,
        name: &OsStr,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<DestDir, CopyError> {
        let components = dir.child(name);
        check_name(name, &components)?;
        let path = path_of(&components);
        let fd = self.make_dir(dir, name, &path)?;
        set_fd_attributes(
            fd.as_fd(),
            &Attributes {
                uid: owner.0,
                gid: owner.1,
                mode,
                xattrs: Vec::new(),
                mtime: None,
            },
            &path,
        )?;
        Ok(DestDir {
            merged: MergedDir::single(
                components.iter().collect(),
                UPPER,
                fd.try_clone().map_err(|e| io_error("open", &path, e))?,
            ),
            fd,
            components,
        })
    }

    fn make_dir(&self, dir: &DestDir, name: &OsStr, path: &Path) -> Result<OwnedFd, CopyError> {
        // Made private (0700) and opened without following; the caller sets the real mode.
        mkdirat(dir.fd.as_fd(), name, Mode::from_bits_truncate(0o700))
            .map_err(|e| io_error("create directory", path, e.into()))?;
        open_child(dir.fd.as_fd(), name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| io_error("open", path, e))
    }
}

/// Refuses names that a layer would read as whiteouts (`.wh.NAME`): kiln's layer writer refuses
/// them too, so the error comes early and names the path.
fn check_name(name: &OsStr, path: &[OsString]) -> Result<(), CopyError> {
    if name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
        return Err(CopyError::WhiteoutName {
            path: display(path),
        });
    }
    Ok(())
}

/// Whether a file that should be root's is left to kiln's user instead: kiln runs unprivileged
/// without a user namespace (`--isolation=chroot` in an unprivileged container), cannot give
/// files away, and its own files stand for root's (the layer records them as 0:0, see
/// `crate::builder::worker`). Any other owner is still chowned (and refused by the kernel).
fn stands_for_root(attributes: &Attributes) -> bool {
    (attributes.uid, attributes.gid) == (0, 0) && !nix::unistd::geteuid().is_root()
}

/// Owner, xattrs, mode, then time, on an open file or directory. chown(2) clears the setuid and
/// setgid bits and `security.capability`, so it comes first.
fn set_fd_attributes(
    fd: BorrowedFd<'_>,
    attributes: &Attributes,
    path: &Path,
) -> Result<(), CopyError> {
    if !stands_for_root(attributes) {
        fchown(
            fd,
            Some(Uid::from_raw(attributes.uid)),
            Some(Gid::from_raw(attributes.gid)),
        )
        .map_err(|e| io_error("chown", path, e.into()))?;
    }
    for (name, value) in &attributes.xattrs {
        // Best effort, as BuildKit's copy (its xattr error handler only logs).
        let _ = xattr::set_fd(fd, name, value);
    }
    fchmod(fd, Mode::from_bits_truncate(attributes.mode))
        .map_err(|e| io_error("chmod", path, e.into()))?;
    if let Some(mtime) = attributes.mtime {
        let is_dir = fstat(fd).is_ok_and(|s| dirfd::file_type(&s) == SFlag::S_IFDIR);
        // A directory's time is set once its entries are written (`Target::times`).
        if !is_dir {
            futimens(fd, &mtime, &mtime).map_err(|e| io_error("set times of", path, e.into()))?;
        }
    }
    Ok(())
}

/// [`set_fd_attributes`] for a regular file just created by this copy, whose fstat is `stat`:
/// the same result with fewer calls, as a copy makes thousands of files. The owner is changed
/// only when it differs (a new file belongs to its creator, most often the owner wanted); an
/// unchanged owner needs no chown, so nothing needs clearing before the mode is set.
fn set_new_file_attributes(
    fd: BorrowedFd<'_>,
    stat: &nix::sys::stat::FileStat,
    attributes: &Attributes,
    path: &Path,
) -> Result<(), CopyError> {
    if (stat.st_uid, stat.st_gid) != (attributes.uid, attributes.gid)
        && !stands_for_root(attributes)
    {
        fchown(
            fd,
            Some(Uid::from_raw(attributes.uid)),
            Some(Gid::from_raw(attributes.gid)),
        )
        .map_err(|e| io_error("chown", path, e.into()))?;
    }
    for (name, value) in &attributes.xattrs {
        // Best effort, as BuildKit's copy (its xattr error handler only logs).
        let _ = xattr::set_fd(fd, name, value);
    }
    if stat.st_mode & 0o7777 != attributes.mode {
        fchmod(fd, Mode::from_bits_truncate(attributes.mode))
            .map_err(|e| io_error("chmod", path, e.into()))?;
    }
    if let Some(mtime) = attributes.mtime {
        futimens(fd, &mtime, &mtime).map_err(|e| io_error("set times of", path, e.into()))?;
    }
    Ok(())
}

/// The same for `name` in `dir` without opening it (symlinks, nodes), never following it.
fn set_child_attributes(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    attributes: &Attributes,
    set_mode: bool,
    path: &Path,
) -> Result<(), CopyError> {
    if !stands_for_root(attributes) {
        fchownat(
            dir,
            name,
            Some(Uid::from_raw(attributes.uid)),
            Some(Gid::from_raw(attributes.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_error("chown", path, e.into()))?;
    }
    for (xattr_name, value) in &attributes.xattrs {
        let _ = xattr::set_child(dir, name, xattr_name, value);
    }
    if set_mode {
        // fchmodat(2) follows a symlink and Linux before 6.6 has no AT_SYMLINK_NOFOLLOW for it;
        // `name` is the node or fifo just made by mknodat(2) (which never replaces anything)
        // or a hardlink to one, and nothing else writes in `upper` meanwhile.
        fchmodat(
            dir,
            name,
            Mode::from_bits_truncate(attributes.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| io_error("chmod", path, e.into()))?;
    }
    if let Some(mtime) = attributes.mtime {
        utimensat(dir, name, &mtime, &mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| io_error("set times of", path, e.into()))?;
    }
    Ok(())
}

/// `components` as an absolute path.
pub(crate) fn path_of(components: &[OsString]) -> PathBuf {
    let mut path = PathBuf::from("/");
    path.extend(components);
    path
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> CopyError {
    CopyError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}
