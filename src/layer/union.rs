//! A read-only union view of a layer stack: what an overlay mount of the snapshot directories
//! would show, read without mounting anything.
//!
//! The layers are snapshot directories in overlay format, TOP-MOST FIRST (as overlayfs's
//! `lowerdir=`). As in Documentation/filesystems/overlayfs.rst: the top-most layer holding a name
//! wins; a whiteout (a character device 0/0) hides the name in the layers below; a directory merges
//! with the directories of the same name below it, unless it is opaque
//! (`trusted.overlay.opaque=y`, or `user.overlay.opaque=y` for rootless snapshots), and a
//! non-directory ends the merge (nothing below it shows).
//!
//! Every lookup goes one component at a time from directory descriptors with `O_NOFOLLOW`, so a
//! symlink inside a layer is never followed by the kernel. Symlinks are followed only by
//! [`UnionFs::resolve`], in the merged view and with the union's root as `/`: an absolute target
//! and `..` at the top stay inside, the way openat2(2) RESOLVE_IN_ROOT resolves, and more than 40
//! links (MAXSYMLINKS, path_resolution(7)) is an error. Nothing outside the layer directories is
//! ever opened.

use crate::sys::dirfd::{file_type, list_dir, lstat_child, open_child, proc_fd_path};
use crate::sys::xattr;
use nix::fcntl::{AT_FDCWD, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use std::collections::{HashSet, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// How many symbolic links one resolution may follow (Linux's MAXSYMLINKS, path_resolution(7)).
pub const MAX_SYMLINKS: usize = 40;

/// The xattrs that mark an overlay directory opaque (the second for `userxattr` mounts).
const OPAQUE_XATTRS: [&std::ffi::CStr; 2] = [c"trusted.overlay.opaque", c"user.overlay.opaque"];

/// xattr name prefixes that are overlayfs's own bookkeeping, never a file's data: copying them
/// would turn a copied directory opaque (hiding what lower layers hold) or fake a redirect.
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Why the union could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UnionError {
    /// A layer directory cannot be opened.
    #[error("cannot open layer directory {}: {source}", path.display())]
    OpenLayer {
        /// The layer directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading a path in one of the layers failed.
    #[error("cannot read {path} in layer {}: {source}", layer.display())]
    Io {
        /// The path inside the union.
        path: String,
        /// The layer directory being read.
        layer: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Resolving the path followed more than [`MAX_SYMLINKS`] symbolic links.
    #[error("too many levels of symbolic links resolving {path} (more than 40: a symlink loop?)")]
    SymlinkLoop {
        /// The path being resolved.
        path: String,
    },
    /// A component on the way is a file, not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The offending prefix of the path.
        path: String,
    },
    /// The path names nothing.
    #[error("{path} not found")]
    NotFound {
        /// The path.
        path: String,
    },
    /// The path names a directory, device, fifo or socket where a regular file is needed.
    #[error("{path} is not a regular file")]
    NotRegular {
        /// The path.
        path: String,
    },
    /// A resolved path that has a name that is not UTF-8 where a string is needed.
    #[error("path {path} is not valid UTF-8")]
    NonUtf8 {
        /// The path, lossily converted.
        path: String,
    },
}

/// The type of a file in the union.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// What `lstat` says about a file in the union (of the top-most layer that shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    pub kind: FileKind,
    /// Permission and special bits (`mode & 07777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    /// The device number of a character or block device.
    pub rdev: u64,
    pub nlink: u64,
    /// The device and inode in the layer directory that holds the file (hardlink detection).
    pub dev: u64,
    pub ino: u64,
}

impl Metadata {
    pub(crate) fn from_stat(stat: &FileStat) -> Metadata {
        let kind = match file_type(stat) {
            SFlag::S_IFDIR => FileKind::Dir,
            SFlag::S_IFLNK => FileKind::Symlink,
            SFlag::S_IFIFO => FileKind::Fifo,
            SFlag::S_IFSOCK => FileKind::Socket,
            SFlag::S_IFCHR => FileKind::CharDevice,
            SFlag::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::File,
        };
        Metadata {
            kind,
            mode: stat.st_mode & 0o7777,
            uid: stat.st_uid,
            gid: stat.st_gid,
            size: u64::try_from(stat.st_size).unwrap_or_default(),
            mtime: stat.st_mtime,
            mtime_nsec: stat.st_mtime_nsec,
            rdev: stat.st_rdev,
            nlink: stat.st_nlink,
            dev: stat.st_dev,
            ino: stat.st_ino,
        }
    }

    /// An overlay whiteout: a character device with device number 0/0 (overlayfs(5)).
    pub fn is_whiteout(&self) -> bool {
        self.kind == FileKind::CharDevice && self.rdev == 0
    }
}

struct Layer {
    path: PathBuf,
    fd: OwnedFd,
}

/// A read-only union of snapshot directories, top-most first.
pub struct UnionFs {
    layers: Vec<Layer>,
    /// When set, only these relative paths (sorted) exist: a build context with its
    /// `.dockerignore` applied, seen as a one-layer union.
    allowed: Option<Vec<String>>,
}

impl std::fmt::Debug for UnionFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnionFs")
            .field(
                "layers",
                &self.layers.iter().map(|l| &l.path).collect::<Vec<_>>(),
            )
            .field("filtered", &self.allowed.is_some())
            .finish()
    }
}

/// One layer's directory in a merged directory.
struct Part {
    layer: usize,
    fd: OwnedFd,
}

/// A directory of the union: the same-named directories of the layers that merge into it, top
/// first.
pub(crate) struct MergedDir {
    /// The directory's path relative to the union root (`""` for the root).
    path: PathBuf,
    parts: Vec<Part>,
}

impl MergedDir {
    /// The index of the top-most layer holding this directory.
    pub(crate) fn top_layer(&self) -> Option<usize> {
        self.parts.first().map(|p| p.layer)
    }

    /// The top-most layer's directory descriptor (readable).
    pub(crate) fn top_fd(&self) -> Option<BorrowedFd<'_>> {
        self.parts.first().map(|p| p.fd.as_fd())
    }

    /// This directory as it is after `fd` (of layer `layer`, above all others) was created on top
    /// of it: how a writable upper layer's new directory merges with the lower ones.
    pub(crate) fn with_top(self, layer: usize, fd: OwnedFd) -> MergedDir {
        let mut parts = Vec::with_capacity(self.parts.len() + 1);
        parts.push(Part { layer, fd });
        parts.extend(self.parts.into_iter().filter(|p| p.layer != layer));
        MergedDir {
            path: self.path,
            parts,
        }
    }

    /// A directory that exists only in layer `layer` (a new directory of a writable layer).
    pub(crate) fn single(path: PathBuf, layer: usize, fd: OwnedFd) -> MergedDir {
        MergedDir {
            path,
            parts: vec![Part { layer, fd }],
        }
    }
}

/// A non-directory of the union, with the layer directory that holds it.
pub(crate) struct Node {
    pub(crate) meta: Metadata,
    pub(crate) layer: usize,
    parent: OwnedFd,
    name: OsString,
    path: PathBuf,
}

impl Node {
    /// The descriptor of the directory holding the node, in its layer.
    pub(crate) fn parent(&self) -> BorrowedFd<'_> {
        self.parent.as_fd()
    }

    /// The node's name in its parent.
    pub(crate) fn name(&self) -> &OsStr {
        &self.name
    }

    /// The node's path relative to the union root.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// What a name is in the union.
pub(crate) enum Found {
    Missing,
    Dir(MergedDir, Metadata),
    Node(Node),
}

/// One entry of a merged directory listing.
#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub(crate) name: OsString,
    pub(crate) meta: Metadata,
    /// The index, in the listed directory's parts, of the layer directory the entry is from.
    part: usize,
}

impl UnionFs {
    /// Opens the layer directories, TOP-MOST FIRST. The directories themselves are the caller's
    /// trusted paths (followed if they are links); nothing inside them is followed.
    pub fn new(layers: Vec<PathBuf>) -> Result<UnionFs, UnionError> {
        let layers = layers
            .into_iter()
            .map(|path| {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
                match openat(AT_FDCWD, path.as_path(), flags, Mode::empty()) {
                    Ok(fd) => Ok(Layer { path, fd }),
                    Err(errno) => Err(UnionError::OpenLayer {
                        path,
                        source: errno.into(),
                    }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UnionFs {
            layers,
            allowed: None,
        })
    }

    /// A one-layer union of `root` in which only the relative paths `allowed` exist (a build
    /// context after `.dockerignore`); `allowed` is sorted here.
    pub(crate) fn filtered(root: PathBuf, mut allowed: Vec<String>) -> Result<UnionFs, UnionError> {
        allowed.sort();
        let mut union = UnionFs::new(vec![root])?;
        union.allowed = Some(allowed);
        Ok(union)
    }

    /// The layer directories, top first.
    pub fn layers(&self) -> Vec<&Path> {
        self.layers.iter().map(|l| l.path.as_path()).collect()
    }

    /// `lstat` of `path` (absolute or relative to the union root): symlinks on the way are
    /// followed, a symlink as the last component is described itself. `None` when nothing is
    /// there.
    pub fn lstat(&self, path: &str) -> Result<Option<Metadata>, UnionError> {
        let components = self.resolve_components(&[], path.as_bytes(), false)?;
        Ok(match self.walk(&components)? {
            Found::Missing => None,
            Found::Dir(_, meta) => Some(meta),
            Found::Node(node) => Some(node.meta),
        })
    }

    /// The merged listing of the directory `path` (symlinks followed), sorted by name, without
    /// whited-out names.
    pub fn read_dir(&self, path: &str) -> Result<Vec<(OsString, Metadata)>, UnionError> {
        let components = self.resolve_components(&[], path.as_bytes(), true)?;
        match self.walk(&components)? {
            Found::Dir(dir, _) => Ok(self
                .children(&dir)?
                .into_iter()
                .map(|c| (c.name, c.meta))
                .collect()),
            Found::Missing => Err(UnionError::NotFound {
                path: display(&components),
            }),
            Found::Node(_) => Err(UnionError::NotADirectory {
                path: display(&components),
            }),
        }
    }

    /// Resolves `path` in the union as openat2(2) with RESOLVE_IN_ROOT would: symlinks on the way
    /// (and the last one when `follow_last`) are followed with the union's root as `/`, `..` never
    /// climbs above it. Components that do not exist are kept as written. Returns the cleaned
    /// absolute path.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<String, UnionError> {
        let components = self.resolve_components(&[], path.as_bytes(), follow_last)?;
        let mut out = String::new();
        for component in &components {
            let Some(name) = component.to_str() else {
                return Err(UnionError::NonUtf8 {
                    path: display(&components),
                });
            };
            out.push('/');
            out.push_str(name);
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(out)
    }

    /// The layer directories that merge into the directory `path` (symlinks followed inside the
    /// union), top first: what an overlay mount of just that directory takes as its lower
    /// directories. `None` when `path` is not a directory. The directories were reached one
    /// component at a time without following a link, so each path names the directory the walk
    /// found (snapshot directories do not change).
    pub fn dir_layers(&self, path: &str) -> Result<Option<Vec<PathBuf>>, UnionError> {
        if self.allowed.is_some() {
            // A filtered union has files a mount of the real directory would show.
            return Ok(None);
        }
        let components = self.resolve_components(&[], path.as_bytes(), true)?;
        let Found::Dir(dir, _) = self.walk(&components)? else {
            return Ok(None);
        };
        let relative: PathBuf = components.iter().collect();
        Ok(Some(
            dir.parts
                .iter()
                .filter_map(|part| self.layers.get(part.layer))
                .map(|layer| layer.path.join(&relative))
                .collect(),
        ))
    }

    /// Opens the regular file at `path` (symlinks followed, inside the union) for reading.
    pub fn open_file(&self, path: &str) -> Result<File, UnionError> {
        let components = self.resolve_components(&[], path.as_bytes(), true)?;
        match self.walk(&components)? {
            Found::Node(node) if node.meta.kind == FileKind::File => self.open_node(&node),
            Found::Missing => Err(UnionError::NotFound {
                path: display(&components),
            }),
            _ => Err(UnionError::NotRegular {
                path: display(&components),
            }),
        }
    }

    /// The merged root directory.
    pub(crate) fn root_dir(&self) -> Result<MergedDir, UnionError> {
        let parts = self
            .layers
            .iter()
            .enumerate()
            .map(|(layer, l)| {
                l.fd.try_clone()
                    .map(|fd| Part { layer, fd })
                    .map_err(|source| self.io_error(layer, Path::new(""), source))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MergedDir {
            path: PathBuf::new(),
            parts,
        })
    }

    /// Looks up the already resolved `components` (no symlink is followed): a missing or
    /// non-directory component on the way gives [`Found::Missing`].
    pub(crate) fn walk(&self, components: &[OsString]) -> Result<Found, UnionError> {
        let mut dir = self.root_dir()?;
        let mut meta = None;
        for (index, name) in components.iter().enumerate() {
            match self.lookup_in(&dir, name)? {
                Found::Dir(next, next_meta) => {
                    dir = next;
                    meta = Some(next_meta);
                }
                Found::Node(node) if index + 1 == components.len() => return Ok(Found::Node(node)),
                _ => return Ok(Found::Missing),
            }
        }
        match meta {
            Some(meta) => Ok(Found::Dir(dir, meta)),
            None => {
                // The root: described by the top layer's root directory.
                let fd = dir.top_fd().ok_or_else(|| UnionError::NotFound {
                    path: "/".to_string(),
                })?;
                let stat = fstat(fd).map_err(|e| self.io_error(0, Path::new(""), e.into()))?;
                Ok(Found::Dir(dir, Metadata::from_stat(&stat)))
            }
        }
    }

    /// Looks `name` up in `dir` as overlayfs does (see the module docs).
    pub(crate) fn lookup_in(&self, dir: &MergedDir, name: &OsStr) -> Result<Found, UnionError> {
        let path = dir.path.join(name);
        if !self.is_allowed(&path) {
            return Ok(Found::Missing);
        }
        let mut dirs = Vec::new();
        let mut top_meta = None;
        for part in &dir.parts {
            let Some(stat) = lstat_child(part.fd.as_fd(), name)
                .map_err(|e| self.io_error(part.layer, &path, e))?
            else {
                continue;
            };
            let meta = Metadata::from_stat(&stat);
            if meta.is_whiteout() {
                break;
            }
            if meta.kind != FileKind::Dir {
                if dirs.is_empty() {
                    let parent = part
                        .fd
                        .try_clone()
                        .map_err(|e| self.io_error(part.layer, &path, e))?;
                    return Ok(Found::Node(Node {
                        meta,
                        layer: part.layer,
                        parent,
                        name: name.to_os_string(),
                        path,
                    }));
                }
                // A non-directory below a directory ends the merge.
                break;
            }
            let opaque = self.is_opaque(part.fd.as_fd(), name);
            let fd = open_child(part.fd.as_fd(), name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .map_err(|e| self.io_error(part.layer, &path, e))?;
            dirs.push(Part {
                layer: part.layer,
                fd,
            });
            top_meta.get_or_insert(meta);
            if opaque {
                break;
            }
        }
        Ok(match top_meta {
            Some(meta) => Found::Dir(MergedDir { path, parts: dirs }, meta),
            None => Found::Missing,
        })
    }

    /// [`UnionFs::lookup_in`] of an entry `children(dir)` listed: a non-directory is the node
    /// the listing saw (the top-most layer's entry, as `lookup_in` finds it) without a second
    /// stat, which a copy of thousands of files notices; a directory is looked up, to merge it.
    pub(crate) fn lookup_child(&self, dir: &MergedDir, child: &Child) -> Result<Found, UnionError> {
        let part = dir.parts.get(child.part);
        match part {
            Some(part) if child.meta.kind != FileKind::Dir => {
                let path = dir.path.join(&child.name);
                let parent = part
                    .fd
                    .try_clone()
                    .map_err(|e| self.io_error(part.layer, &path, e))?;
                Ok(Found::Node(Node {
                    meta: child.meta,
                    layer: part.layer,
                    parent,
                    name: child.name.clone(),
                    path,
                }))
            }
            _ => self.lookup_in(dir, &child.name),
        }
    }

    /// The merged listing of `dir`, sorted by name: the top-most layer's entry for each name,
    /// whited-out names left out.
    pub(crate) fn children(&self, dir: &MergedDir) -> Result<Vec<Child>, UnionError> {
        let mut seen = HashSet::new();
        let mut children = Vec::new();
        for (index, part) in dir.parts.iter().enumerate() {
            let names =
                list_dir(part.fd.as_fd()).map_err(|e| self.io_error(part.layer, &dir.path, e))?;
            for name in names {
                if seen.contains(&name) {
                    continue;
                }
                let path = dir.path.join(&name);
                let Some(stat) = lstat_child(part.fd.as_fd(), &name)
                    .map_err(|e| self.io_error(part.layer, &path, e))?
                else {
                    continue; // removed since the listing
                };
                seen.insert(name.clone());
                let meta = Metadata::from_stat(&stat);
                if meta.is_whiteout() || !self.is_allowed(&path) {
                    continue;
                }
                children.push(Child {
                    name,
                    meta,
                    part: index,
                });
            }
        }
        children.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(children)
    }

    /// Resolves `path` relative to the directory `base` (already resolved components), as if
    /// `base` were the root (see [`UnionFs::resolve`]); returns components relative to `base`.
    pub(crate) fn resolve_components(
        &self,
        base: &[OsString],
        path: &[u8],
        follow_last: bool,
    ) -> Result<Vec<OsString>, UnionError> {
        let full = |resolved: &[OsString]| -> Vec<OsString> {
            base.iter().chain(resolved).cloned().collect()
        };
        // The directory the next component is looked up in; `None` below a missing name (whose
        // descendants are missing too). Only this one is kept open: `..` and absolute link
        // targets walk again from the root, so a resolution holds one directory's descriptors.
        let mut current = self.walk_dir(base)?;
        let mut resolved: Vec<OsString> = Vec::new();
        let mut pending: VecDeque<OsString> = split(path).collect();
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                if resolved.pop().is_some() {
                    current = self.walk_dir(&full(&resolved))?;
                }
                continue;
            }
            let last = pending.is_empty();
            let found = match &current {
                Some(dir) => self.lookup_in(dir, &name)?,
                None => Found::Missing,
            };
            match found {
                Found::Node(node)
                    if node.meta.kind == FileKind::Symlink && (!last || follow_last) =>
                {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(UnionError::SymlinkLoop {
                            path: String::from_utf8_lossy(path).into_owned(),
                        });
                    }
                    let target = self.read_link(&node)?;
                    if target.as_bytes().starts_with(b"/") {
                        resolved.clear();
                        current = self.walk_dir(base)?;
                    }
                    for component in split(target.as_bytes())
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                    {
                        pending.push_front(component);
                    }
                }
                Found::Node(_) if !last => {
                    resolved.push(name);
                    return Err(UnionError::NotADirectory {
                        path: display(&full(&resolved)),
                    });
                }
                Found::Dir(dir, _) => {
                    resolved.push(name);
                    current = Some(dir);
                }
                Found::Node(_) | Found::Missing => {
                    resolved.push(name);
                    current = None;
                }
            }
        }
        Ok(resolved)
    }

    /// The merged directory at `components`, if it is one.
    fn walk_dir(&self, components: &[OsString]) -> Result<Option<MergedDir>, UnionError> {
        Ok(match self.walk(components)? {
            Found::Dir(dir, _) => Some(dir),
            _ => None,
        })
    }

    /// The target of the symlink `node`, as stored.
    pub(crate) fn read_link(&self, node: &Node) -> Result<OsString, UnionError> {
        readlinkat(node.parent.as_fd(), node.name.as_os_str())
            .map_err(|e| self.io_error(node.layer, &node.path, e.into()))
    }

    /// Opens the regular file `node` for reading (never through a symlink).
    pub(crate) fn open_node(&self, node: &Node) -> Result<File, UnionError> {
        let fd = open_child(node.parent.as_fd(), &node.name, OFlag::O_RDONLY)
            .map_err(|e| self.io_error(node.layer, &node.path, e))?;
        let stat = fstat(&fd).map_err(|e| self.io_error(node.layer, &node.path, e.into()))?;
        if file_type(&stat) != SFlag::S_IFREG {
            return Err(UnionError::NotRegular {
                path: format!("/{}", node.path.display()),
            });
        }
        Ok(File::from(fd))
    }

    /// The extended attributes of `node`, without overlayfs's own.
    pub(crate) fn node_xattrs(&self, node: &Node) -> Result<Vec<(CString, Vec<u8>)>, UnionError> {
        read_xattrs(&proc_fd_path(node.parent.as_fd()).join(&node.name))
            .map_err(|e| self.io_error(node.layer, &node.path, e))
    }

    /// The extended attributes of the directory `dir` (of its top-most layer), without overlayfs's
    /// own.
    pub(crate) fn dir_xattrs(
        &self,
        dir: &MergedDir,
    ) -> Result<Vec<(CString, Vec<u8>)>, UnionError> {
        let Some(part) = dir.parts.first() else {
            return Ok(Vec::new());
        };
        // `.` makes the directory itself the last component, so lgetxattr(2) reads it and not
        // the /proc magic link.
        read_xattrs(&proc_fd_path(part.fd.as_fd()).join("."))
            .map_err(|e| self.io_error(part.layer, &dir.path, e))
    }

    fn is_allowed(&self, path: &Path) -> bool {
        match &self.allowed {
            None => true,
            Some(allowed) => path
                .to_str()
                .is_some_and(|p| allowed.binary_search_by(|a| a.as_str().cmp(p)).is_ok()),
        }
    }

    fn is_opaque(&self, parent: BorrowedFd<'_>, name: &OsStr) -> bool {
        let path = proc_fd_path(parent).join(name);
        OPAQUE_XATTRS
            .iter()
            .any(|attr| xattr::get(&path, attr).is_ok_and(|value| value == b"y"))
    }

    fn io_error(&self, layer: usize, path: &Path, source: io::Error) -> UnionError {
        UnionError::Io {
            path: format!("/{}", path.display()),
            layer: self
                .layers
                .get(layer)
                .map(|l| l.path.clone())
                .unwrap_or_default(),
            source,
        }
    }
}

/// The xattrs of the file at `path` (not following a last symlink), overlay bookkeeping left out.
/// A filesystem without xattrs has none.
pub(crate) fn read_xattrs(path: &Path) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(error) if error.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut out = Vec::new();
    for name in names {
        if OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let Ok(name) = CString::new(name) else {
            continue;
        };
        match xattr::get(path, &name) {
            Ok(value) => out.push((name, value)),
            // Removed since the listing.
            Err(error) if error.raw_os_error() == Some(libc::ENODATA) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(out)
}

/// The components of a `/`-separated path, without empty and `.` components.
pub(crate) fn split(path: &[u8]) -> impl Iterator<Item = OsString> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsString::from_vec(c.to_vec()))
}

/// `components` as an absolute path for messages.
pub(crate) fn display(components: &[OsString]) -> String {
    let mut out = String::new();
    for component in components {
        out.push('/');
        out.push_str(&component.to_string_lossy());
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}
