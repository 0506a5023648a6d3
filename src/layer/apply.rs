//! Unpacking a layer tar under a root directory, confined to it.
//!
//! Every entry is placed relative to a directory descriptor: its parent directory is opened with
//! openat2(2) RESOLVE_IN_ROOT (so `..` and symlinks, absolute ones too, resolve as if the root
//! were `/`, Docker's `FollowSymlinkInScope` done by the kernel), and the last component is made
//! with the `*at` calls and never followed (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW, O_EXCL). So `l -> /`
//! followed by `l/etc/passwd` writes `ROOT/etc/passwd`, as Docker does, and nothing outside the
//! root is created, changed or followed. Lexical `..` that would climb above the root is refused.
//! Resolving in the kernel, in one call, leaves no window between checking a path and using it,
//! the race of userspace scoped resolution behind CVE-2018-15664 (`docker cp`).
//!
//! A failed apply leaves the root partly written: callers unpack into a fresh directory and
//! rename it into place on success.
//!
//! Device nodes in a layer are created only when the caller asks ([`ApplyOptions::device_nodes`],
//! which needs root); the runtime mounts the root filesystem `nodev`, so an image's device
//! nodes cannot be opened anyway.
//!
//! A hardlink entry's owner, mode and times are set on the file it links to (they share an
//! inode), as Docker's and containerd's unpack set them: the last entry naming the inode
//! decides (mode and times only when the target is not a symlink, as Docker's `Lstat` check).

use super::{LayerError, Limited, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};
use crate::oci::{Digest, Hashing};
use crate::sys::dirfd::{self, file_type, lstat_child, open_child, open_in_root};
use crate::sys::xattr;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, futimens,
    makedev, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, linkat, symlinkat};
use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The most entries one layer may have. Every entry takes at least one 512-byte tar block, so
/// `max_bytes` bounds the count already; this cap bounds the bookkeeping (about 100 bytes per
/// entry) independently of it. Docker has no such cap; real layers stay far below it (a large
/// `node_modules` layer has a few hundred thousand entries).
pub const MAX_ENTRIES: u64 = 1 << 22;

/// How whiteout entries (`.wh.NAME`, `.wh..wh..opq`) are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// The layer is unpacked into its own empty directory that becomes an overlay lower dir:
    /// `.wh.NAME` becomes a 0/0 character device NAME, `.wh..wh..opq` sets
    /// `trusted.overlay.opaque=y` (or `user.overlay.opaque=y` when [`ApplyOptions::user_xattr`],
    /// for rootless overlay).
    Overlay,
    /// The layer is applied on top of a directory that already holds the layers below
    /// (flattening, `kiln export`, umoci-style): `.wh.NAME` deletes NAME, an opaque marker deletes
    /// the directory's entries that came from lower layers (not those this layer adds, wherever
    /// in the stream the marker is).
    Apply,
    /// The tar is not an image layer but plain files (a build context, cache-mount contents):
    /// `.wh.`-names are files like any other, as BuildKit unpacks an http context.
    Literal,
}

/// How [`apply_layer`] unpacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// What whiteouts become.
    pub whiteouts: Whiteouts,
    /// The most uncompressed bytes the layer stream (and all file contents written) may have.
    pub max_bytes: u64,
    /// Give entries the uid/gid of the tar (lchown); `false` when not running as root.
    pub same_owner: bool,
    /// Create the character and block devices of the tar (mknod needs root); `false` skips
    /// them (counted in [`AppliedLayer::skipped_devices`]). Fifos are always made.
    pub device_nodes: bool,
    /// Mark opaque directories with `user.overlay.opaque` instead of `trusted.overlay.opaque`
    /// (overlayfs mounted with `userxattr`, for rootless).
    pub user_xattr: bool,
}

/// What unpacking (or writing) a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLayer {
    /// The sha256 of the uncompressed tar stream (the OCI `diff_id`).
    pub diff_id: Digest,
    /// The uncompressed tar stream's length in bytes.
    pub size: u64,
    /// Character and block devices not created because `device_nodes` was off.
    pub skipped_devices: u64,
    /// Extended attributes the filesystem or the caller's privileges refused (ENOTSUP, EPERM),
    /// skipped as Docker does (e.g. `trusted.*` or `security.capability` without root).
    pub skipped_xattrs: u64,
}

/// Unpacks the UNCOMPRESSED layer tar `reader` under `root` (callers wrap compressed blobs with
/// [`super::decompressed`]). The diff_id is hashed in the same pass, including any bytes after
/// the tar's end blocks. More than `options.max_bytes` bytes in the stream, or in file contents
/// written (a sparse entry expands), fail with [`LayerError::TooLarge`].
pub fn apply_layer(
    reader: impl Read,
    root: &Path,
    options: &ApplyOptions,
) -> Result<AppliedLayer, LayerError> {
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| LayerError::Io {
        path: root.to_path_buf(),
        source: errno.into(),
    })?;
    let mut applier = Applier {
        root: root_fd,
        options,
        ours: HashSet::new(),
        touched: HashSet::new(),
        deferred_dirs: HashMap::new(),
        written: 0,
        buffer: vec![0; 64 * 1024],
        skipped_devices: 0,
        skipped_xattrs: 0,
    };
    let mut stream = Hashing::new(Limited::new(reader, options.max_bytes));
    {
        let mut archive = tar::Archive::new(&mut stream);
        let mut count = 0u64;
        for entry in archive.entries().map_err(LayerError::from_read)? {
            let mut entry = entry.map_err(LayerError::from_read)?;
            count += 1;
            if count > MAX_ENTRIES {
                return Err(LayerError::TooManyEntries { limit: MAX_ENTRIES });
            }
            applier.entry(&mut entry)?;
        }
    }
    applier.finish_dirs()?;
    // The diff_id covers the whole stream: the end blocks and any record padding after them.
    io::copy(&mut stream, &mut io::sink()).map_err(LayerError::from_read)?;
    let (diff_id, size, _) = stream.finish();
    Ok(AppliedLayer {
        diff_id,
        size,
        skipped_devices: applier.skipped_devices,
        skipped_xattrs: applier.skipped_xattrs,
    })
}

/// What a (cleaned) entry name means.
#[derive(Debug, PartialEq, Eq)]
enum Name<'a> {
    /// A file to create.
    Plain,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.NAME`: NAME is deleted.
    Whiteout(&'a [u8]),
}

/// Classifies the last component of an entry path.
fn classify(name: &[u8]) -> Result<Name<'_>, &'static str> {
    if name == WHITEOUT_OPAQUE.as_bytes() {
        return Ok(Name::Opaque);
    }
    if name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
        // AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`): Docker skips it at the top level; it
        // has no meaning in an OCI layer and is never created as a file.
        return Err(
            "`.wh..wh.` names are AUFS whiteout metadata, not files; only .wh..wh..opq is allowed",
        );
    }
    match name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        Some(b"" | b"." | b"..") => Err("a whiteout must name a file (not empty, `.` or `..`)"),
        Some(target) => Ok(Name::Whiteout(target)),
        None => Ok(Name::Plain),
    }
}

/// Why a tar entry path cannot be used: see [`tar_path_components`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TarPathError {
    /// The path contains a NUL byte.
    Nul,
    /// A `..` climbs above the root.
    Climbs,
}

/// Splits a tar path into its normal components: a leading `/` and `.` components are dropped
/// (Docker treats absolute entry paths as relative to the root), `..` removes the previous
/// component, and a `..` with nothing left to remove (climbing above the root) is refused.
/// Layers and ADD's archives both go through this; each words the refusal for its own reader.
pub(crate) fn tar_path_components(raw: &[u8]) -> Result<Vec<OsString>, TarPathError> {
    if raw.contains(&0) {
        return Err(TarPathError::Nul);
    }
    let mut components: Vec<OsString> = Vec::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if components.pop().is_none() {
                    return Err(TarPathError::Climbs);
                }
            }
            name => components.push(OsString::from_vec(name.to_vec())),
        }
    }
    Ok(components)
}

/// [`tar_path_components`] with the layer's wording of a refusal.
fn clean_path(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    tar_path_components(raw).map_err(|err| match err {
        TarPathError::Nul => "the path contains a NUL byte",
        TarPathError::Climbs => "`..` climbs above the root",
    })
}

/// `components` joined with `/`.
fn join(components: &[OsString]) -> PathBuf {
    components.iter().collect()
}

/// Parses a PAX `mtime` record (`[-]SECONDS[.FRACTION]`) into seconds and nanoseconds.
pub(crate) fn parse_pax_time(text: &str) -> Option<(i64, i64)> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = seconds.parse().ok()?;
    let mut nanos: i64 = 0;
    for (index, digit) in fraction.bytes().take(9).enumerate() {
        nanos += i64::from(digit - b'0') * 10i64.pow(8 - index as u32);
    }
    Some(if !negative {
        (seconds, nanos)
    } else if nanos == 0 {
        (-seconds, 0)
    } else {
        (-seconds - 1, 1_000_000_000 - nanos)
    })
}

/// A numeric header field's value, with an empty field (only NULs and spaces, as some writers
/// leave uid, gid or mtime) read as 0 the way Go's archive/tar, and so Docker, reads it.
fn or_blank(parsed: io::Result<u64>, field: &[u8]) -> io::Result<u64> {
    match parsed {
        Err(_) if field.iter().all(|b| matches!(b, 0 | b' ')) => Ok(0),
        other => other,
    }
}

/// The metadata of a tar entry that is applied to what it creates.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// Deferred metadata of a directory: set after the whole layer, since later entries in it
/// change its mtime, and a read-only mode would stop them being created without root.
struct DirMeta {
    mode: u32,
    mtime: TimeSpec,
}

struct Applier<'o> {
    /// The root, `O_PATH`.
    root: OwnedFd,
    options: &'o ApplyOptions,
    /// (dev, inode) of everything this layer created, and (Apply mode) of the lower directories
    /// its entries were placed in: what an opaque marker keeps and what a hardlink may target.
    /// A lower layer's live inode can never be reused for a new file, so membership is exact.
    ours: HashSet<(u64, u64)>,
    /// Parent paths whose directories are already in `ours` (Apply mode); cleared whenever
    /// anything is removed, since a path may then name a different directory.
    touched: HashSet<PathBuf>,
    deferred_dirs: HashMap<PathBuf, DirMeta>,
    /// File content bytes written so far (a sparse entry writes more than the stream holds).
    written: u64,
    /// The copy buffer for file contents, reused across entries.
    buffer: Vec<u8>,
    skipped_devices: u64,
    skipped_xattrs: u64,
}

/// The (dev, inode) key of a stat.
fn key(stat: &FileStat) -> (u64, u64) {
    (stat.st_dev, stat.st_ino)
}

impl Applier<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), LayerError> {
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // A global PAX header (`g`) carries no file; Go's archive/tar, and so Docker, ignore it.
            return Ok(());
        }
        if entry.size() > self.options.max_bytes {
            return Err(LayerError::TooLarge {
                limit: self.options.max_bytes,
            });
        }
        let path = clean_path(&raw).map_err(|reason| LayerError::unsafe_entry(&raw, reason))?;
        let Some((name, parents)) = path.split_last() else {
            return self.root_entry(entry, &raw);
        };
        if self.options.whiteouts == Whiteouts::Literal {
            return self.create(entry, parents, name, &raw);
        }
        if parents
            .iter()
            .any(|parent| parent.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()))
        {
            // A whiteout is never a directory; Docker would create one named `.wh.*` (or
            // `.wh..wh.plnk`), which then reads as a whiteout when the tree is diffed again.
            return Err(LayerError::unsafe_entry(
                &raw,
                "a directory on the path has a whiteout name (.wh.*)",
            ));
        }
        let name_class =
            classify(name.as_bytes()).map_err(|reason| LayerError::unsafe_entry(&raw, reason))?;
        match name_class {
            Name::Opaque => self.opaque(parents, &raw),
            Name::Whiteout(target) => {
                let meta = self.meta(entry, &raw)?;
                self.whiteout(parents, OsStr::from_bytes(target), &meta, &raw)
            }
            Name::Plain => self.create(entry, parents, name, &raw),
        }
    }

    /// An entry naming the root itself (`./`, `/`): a directory entry sets the root's metadata.
    fn root_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        if entry.header().entry_type() != tar::EntryType::Directory {
            return Err(LayerError::unsafe_entry(
                raw,
                "only a directory may name the root",
            ));
        }
        let meta = self.meta(entry, raw)?;
        let dir = dirfd::reopen_dir(self.root.as_fd()).map_err(|e| io_error(raw, e))?;
        self.dir_metadata(&dir, &meta, PathBuf::new(), raw)
    }

    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parents: &[OsString],
        name: &OsStr,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        let kind = entry.header().entry_type();
        let meta = self.meta(entry, raw)?;
        let parent = self.parent(parents, raw)?;
        let parent = parent.as_fd();
        match kind {
            tar::EntryType::Directory => self.directory(parent, parents, name, &meta, raw),
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.regular(entry, parent, name, &meta, raw)
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                self.symlink(parent, name, &target, &meta, raw)
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                self.hardlink(parent, name, &target, &meta, raw)
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.node(entry, parent, name, &meta, raw)
            }
            other => Err(LayerError::Unsupported {
                entry: String::from_utf8_lossy(raw).into_owned(),
                reason: format!("tar entry type {:?} cannot be unpacked", other.as_byte()),
            }),
        }
    }

    /// Reads the metadata fields of `entry`, with PAX `mtime` and `SCHILY.xattr.*` records
    /// (PAX uid/gid/size/path/linkpath the tar crate applies itself).
    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<Meta, LayerError> {
        let header = entry.header();
        let bad = |field: &str, error: io::Error| LayerError::Malformed {
            entry: String::from_utf8_lossy(raw).into_owned(),
            reason: format!("bad {field} field: {error}"),
        };
        let old = header.as_old();
        let mode = or_blank(header.mode().map(u64::from), &old.mode).map_err(|e| bad("mode", e))?;
        let mode = u32::try_from(mode & 0o7777).unwrap_or_default();
        let id = |value: io::Result<u64>, blank: &[u8], field: &str| -> Result<u32, LayerError> {
            let value = or_blank(value, blank).map_err(|e| bad(field, e))?;
            // u32::MAX is chown(2)'s "leave unchanged", not an id.
            u32::try_from(value)
                .ok()
                .filter(|id| *id != u32::MAX)
                .ok_or_else(|| LayerError::Malformed {
                    entry: String::from_utf8_lossy(raw).into_owned(),
                    reason: format!("{field} {value} is out of range"),
                })
        };
        let uid = id(header.uid(), &old.uid, "uid")?;
        let gid = id(header.gid(), &old.gid, "gid")?;
        let header_mtime = or_blank(header.mtime(), &old.mtime).map_err(|e| bad("mtime", e))?;
        let mut mtime = TimeSpec::new(i64::try_from(header_mtime).unwrap_or(i64::MAX), 0);
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry
            .pax_extensions()
            .map_err(|e| bad("PAX extension", e))?
        {
            for extension in extensions {
                let extension = extension.map_err(|e| bad("PAX extension", e))?;
                let Ok(key) = extension.key() else {
                    continue;
                };
                if key == "mtime" {
                    let text = extension.value().unwrap_or("");
                    let (seconds, nanos) =
                        parse_pax_time(text).ok_or_else(|| LayerError::Malformed {
                            entry: String::from_utf8_lossy(raw).into_owned(),
                            reason: format!("bad PAX mtime {text:?}"),
                        })?;
                    mtime = TimeSpec::new(seconds, nanos);
                } else if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    // An image must not fake overlay whiteouts or redirects through xattrs.
                    if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                        continue;
                    }
                    let name = dirfd::c_string(name.as_bytes()).map_err(|_| {
                        LayerError::unsafe_entry(raw, "an xattr name contains a NUL byte")
                    })?;
                    xattrs.push((name, extension.value_bytes().to_vec()));
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    /// The directory an entry goes in, opened `O_PATH` inside the root. Missing directories are
    /// created (0755, as Docker's `MkdirAll`); one whose name is taken by something that is not a
    /// directory (or a dangling symlink) is an error.
    fn parent(&mut self, parents: &[OsString], raw: &[u8]) -> Result<OwnedFd, LayerError> {
        let path = join(parents);
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let dir = match open_in_root(self.root.as_fd(), &path, flags) {
            Ok(dir) => dir,
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {
                self.create_parents(parents, raw)?
            }
            Err(error) => return Err(parent_error(raw, error)),
        };
        if self.options.whiteouts == Whiteouts::Apply && !self.touched.contains(&path) {
            self.touch_parents(parents, raw)?;
        }
        Ok(dir)
    }

    /// Creates the missing directories of `parents`, each found again from the root so that a
    /// symlink among them resolves inside it.
    fn create_parents(&mut self, parents: &[OsString], raw: &[u8]) -> Result<OwnedFd, LayerError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let mut dir =
            open_in_root(self.root.as_fd(), Path::new(""), flags).map_err(|e| io_error(raw, e))?;
        for (index, name) in parents.iter().enumerate() {
            let prefix = join(&parents[..=index]);
            dir = match open_in_root(self.root.as_fd(), &prefix, flags) {
                Ok(next) => next,
                Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {
                    match mkdirat(&dir, name.as_os_str(), Mode::from_bits_truncate(0o700)) {
                        Ok(()) => {}
                        Err(Errno::EEXIST) => {
                            return Err(LayerError::unsafe_entry(
                                raw,
                                format!(
                                    "parent {:?} is a dangling symlink",
                                    prefix.to_string_lossy()
                                ),
                            ));
                        }
                        Err(errno) => return Err(io_error(raw, errno.into())),
                    }
                    let created =
                        open_child(dir.as_fd(), name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                            .map_err(|e| io_error(raw, e))?;
                    // Set explicitly: mkdirat's mode is masked by the umask.
                    fchmod(&created, Mode::from_bits_truncate(0o755))
                        .map_err(|e| io_error(raw, e.into()))?;
                    self.record_fd(created.as_fd(), raw)?;
                    open_child(dir.as_fd(), name, flags).map_err(|e| io_error(raw, e))?
                }
                Err(error) => return Err(parent_error(raw, error)),
            };
        }
        Ok(dir)
    }

    /// Records the existing directories on the way to `parents` as this layer's (Apply mode), so
    /// that an opaque marker above them keeps what this layer put in them.
    fn touch_parents(&mut self, parents: &[OsString], raw: &[u8]) -> Result<(), LayerError> {
        for end in 0..=parents.len() {
            let prefix = join(&parents[..end]);
            if self.touched.contains(&prefix) {
                continue;
            }
            let dir = open_in_root(
                self.root.as_fd(),
                &prefix,
                OFlag::O_PATH | OFlag::O_DIRECTORY,
            )
            .map_err(|e| parent_error(raw, e))?;
            self.record_fd(dir.as_fd(), raw)?;
            self.touched.insert(prefix);
        }
        Ok(())
    }

    fn record_fd(&mut self, fd: BorrowedFd<'_>, raw: &[u8]) -> Result<(), LayerError> {
        let stat = fstat(fd).map_err(|e| io_error(raw, e.into()))?;
        self.ours.insert(key(&stat));
        Ok(())
    }

    fn record_child(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        if let Some(stat) = lstat_child(parent, name).map_err(|e| io_error(raw, e))? {
            self.ours.insert(key(&stat));
        }
        Ok(())
    }

    /// Removes whatever `name` in `parent` is (a tree, a symlink itself), never following it.
    fn clear(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        if lstat_child(parent, name)
            .map_err(|e| io_error(raw, e))?
            .is_some()
        {
            dirfd::remove_all(parent, name).map_err(|e| io_error(raw, e))?;
            self.touched.clear();
        }
        Ok(())
    }

    fn directory(
        &mut self,
        parent: BorrowedFd<'_>,
        parents: &[OsString],
        name: &OsStr,
        meta: &Meta,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        let existing = lstat_child(parent, name).map_err(|e| io_error(raw, e))?;
        // A directory over a directory merges (only the metadata changes); anything else in the
        // way is removed first, as Docker does.
        if existing.is_none_or(|stat| file_type(&stat) != SFlag::S_IFDIR) {
            self.clear(parent, name, raw)?;
            mkdirat(parent, name, Mode::from_bits_truncate(0o700))
                .map_err(|e| io_error(raw, e.into()))?;
        }
        let dir = open_child(parent, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| io_error(raw, e))?;
        let mut path = join(parents);
        path.push(name);
        self.dir_metadata(&dir, meta, path, raw)
    }

    /// Owner and xattrs now; mode and mtime after the layer (see [`DirMeta`]).
    fn dir_metadata(
        &mut self,
        dir: &OwnedFd,
        meta: &Meta,
        path: PathBuf,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        if self.options.same_owner {
            fchown(
                dir,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| chown_error(raw, meta, e))?;
        }
        for (name, value) in &meta.xattrs {
            let result = xattr::set_fd(dir.as_fd(), name, value);
            self.xattr_result(result, raw)?;
        }
        self.record_fd(dir.as_fd(), raw)?;
        self.deferred_dirs.insert(
            path,
            DirMeta {
                mode: meta.mode,
                mtime: meta.mtime,
            },
        );
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        self.clear(parent, name, raw)?;
        // O_CREAT|O_EXCL never opens an existing file and, with O_NOFOLLOW, never a symlink's
        // target (open(2)); the name was just cleared.
        let fd = nix::fcntl::openat(
            parent,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| io_error(raw, e.into()))?;
        let mut file = File::from(fd);
        loop {
            let read = entry
                .read(&mut self.buffer)
                .map_err(LayerError::from_read)?;
            if read == 0 {
                break;
            }
            self.written = self.written.saturating_add(read as u64);
            if self.written > self.options.max_bytes {
                return Err(LayerError::TooLarge {
                    limit: self.options.max_bytes,
                });
            }
            let chunk = self.buffer.get(..read).unwrap_or_default();
            file.write_all(chunk).map_err(|e| io_error(raw, e))?;
        }
        // chown before chmod: chown(2) clears the setuid and setgid bits (and
        // security.capability, so xattrs come after it too).
        if self.options.same_owner {
            fchown(
                &file,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| chown_error(raw, meta, e))?;
        }
        for (xattr_name, value) in &meta.xattrs {
            let result = xattr::set_fd(file.as_fd(), xattr_name, value);
            self.xattr_result(result, raw)?;
        }
        fchmod(&file, Mode::from_bits_truncate(meta.mode)).map_err(|e| io_error(raw, e.into()))?;
        futimens(&file, &meta.mtime, &meta.mtime).map_err(|e| io_error(raw, e.into()))?;
        self.record_fd(file.as_fd(), raw)
    }

    fn symlink(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        target: &[u8],
        meta: &Meta,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        if target.is_empty() || target.contains(&0) {
            return Err(LayerError::Malformed {
                entry: String::from_utf8_lossy(raw).into_owned(),
                reason: "a symlink needs a target without NUL bytes".to_string(),
            });
        }
        self.clear(parent, name, raw)?;
        // The target is data: stored as is, never resolved while applying.
        symlinkat(OsStr::from_bytes(target), parent, name).map_err(|e| io_error(raw, e.into()))?;
        self.node_metadata(parent, name, meta, false, raw)?;
        self.record_child(parent, name, raw)
    }

    fn hardlink(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        target: &[u8],
        meta: &Meta,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        let refuse = |reason: String| LayerError::unsafe_entry(raw, reason);
        let shown = String::from_utf8_lossy(target).into_owned();
        let components = clean_path(target)
            .map_err(|reason| refuse(format!("hardlink target {shown:?}: {reason}")))?;
        let Some((target_name, target_parents)) = components.split_last() else {
            return Err(refuse("a hardlink cannot target the root".to_string()));
        };
        let missing = || {
            refuse(format!(
                "hardlink target {shown:?} is not an earlier entry of this layer"
            ))
        };
        let target_dir = match open_in_root(
            self.root.as_fd(),
            &join(target_parents),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        ) {
            Ok(dir) => dir,
            Err(error) if matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Err(missing());
            }
            Err(error) => return Err(parent_error(raw, error)),
        };
        let Some(target_stat) =
            lstat_child(target_dir.as_fd(), target_name).map_err(|e| io_error(raw, e))?
        else {
            return Err(missing());
        };
        if file_type(&target_stat) == SFlag::S_IFDIR {
            return Err(refuse(format!("hardlink target {shown:?} is a directory")));
        }
        // Only files of this layer: a layer is unpacked alone (overlay) or must mean the same
        // when flattened, and Docker's overlay2 driver cannot link to a lower layer either.
        if !self.ours.contains(&key(&target_stat)) {
            return Err(missing());
        }
        let linked = lstat_child(parent, name)
            .map_err(|e| io_error(raw, e))?
            .is_some_and(|existing| key(&existing) == key(&target_stat));
        if !linked {
            self.clear(parent, name, raw)?;
            // linkat(2) without AT_SYMLINK_FOLLOW links a symlink itself, never its target.
            linkat(
                target_dir.as_fd(),
                target_name.as_os_str(),
                parent,
                name,
                AtFlags::empty(),
            )
            .map_err(|e| io_error(raw, e.into()))?;
        }
        // The entry's metadata goes to the shared inode (see the module documentation); a
        // link to a symlink gets only its owner and xattrs, as in Docker's unpack.
        if file_type(&target_stat) == SFlag::S_IFLNK {
            self.owner_and_xattrs(parent, name, meta, raw)
        } else {
            self.node_metadata(parent, name, meta, true, raw)
        }
    }

    fn node<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        let header = entry.header();
        let (kind, device) = match header.entry_type() {
            tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
            device_kind => {
                if !self.options.device_nodes {
                    // mknod(2) of a device needs CAP_MKNOD; Docker skips them in a user namespace.
                    self.skipped_devices += 1;
                    return Ok(());
                }
                let number = |value: io::Result<Option<u32>>| {
                    value.ok().flatten().ok_or_else(|| LayerError::Malformed {
                        entry: String::from_utf8_lossy(raw).into_owned(),
                        reason: "a device entry needs major and minor numbers".to_string(),
                    })
                };
                let major = number(header.device_major())?;
                let minor = number(header.device_minor())?;
                let kind = if device_kind == tar::EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                (kind, makedev(u64::from(major), u64::from(minor)))
            }
        };
        self.clear(parent, name, raw)?;
        mknodat(parent, name, kind, Mode::from_bits_truncate(0o600), device)
            .map_err(|e| io_error(raw, e.into()))?;
        self.node_metadata(parent, name, meta, true, raw)?;
        self.record_child(parent, name, raw)
    }

    /// Owner, xattrs, mode (unless a symlink) and times of `name` in `parent`, which was just
    /// created by this layer, without following it.
    fn node_metadata(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        set_mode: bool,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        self.owner_and_xattrs(parent, name, meta, raw)?;
        if set_mode {
            // fchmodat(2) follows a symlink and Linux before 6.6 has no AT_SYMLINK_NOFOLLOW for
            // it; `name` is the device node or fifo mknodat(2) just created (it fails with EEXIST
            // rather than replace anything) or a hardlink to a non-symlink this layer made, and
            // nothing else writes in the root meanwhile.
            fchmodat(
                parent,
                name,
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| io_error(raw, e.into()))?;
        }
        utimensat(
            parent,
            name,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| io_error(raw, e.into()))
    }

    /// Owner (when `same_owner`) and xattrs of `name` in `parent`, never following it; chown
    /// first, since chown(2) clears setuid, setgid and `security.capability`.
    fn owner_and_xattrs(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        if self.options.same_owner {
            fchownat(
                parent,
                name,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| chown_error(raw, meta, e))?;
        }
        for (xattr_name, value) in &meta.xattrs {
            let result = xattr::set_child(parent, name, xattr_name, value);
            self.xattr_result(result, raw)?;
        }
        Ok(())
    }

    /// Docker ignores ENOTSUP and EPERM from setting an xattr (a filesystem without them, or a
    /// `trusted.*`/`security.*` name without root); kiln counts them.
    fn xattr_result(&mut self, result: io::Result<()>, raw: &[u8]) -> Result<(), LayerError> {
        match result {
            Ok(()) => Ok(()),
            Err(error) if matches!(error.raw_os_error(), Some(libc::ENOTSUP | libc::EPERM)) => {
                self.skipped_xattrs += 1;
                Ok(())
            }
            Err(error) => Err(io_error(raw, error)),
        }
    }

    fn whiteout(
        &mut self,
        parents: &[OsString],
        target: &OsStr,
        meta: &Meta,
        raw: &[u8],
    ) -> Result<(), LayerError> {
        match self.options.whiteouts {
            Whiteouts::Overlay => {
                let parent = self.parent(parents, raw)?;
                self.clear(parent.as_fd(), target, raw)?;
                // overlayfs(5): a whiteout is a character device with device number 0/0.
                mknodat(
                    &parent,
                    target,
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    makedev(0, 0),
                )
                .map_err(|e| io_error(raw, e.into()))?;
                let owner = Meta {
                    xattrs: Vec::new(),
                    ..*meta
                };
                self.node_metadata(parent.as_fd(), target, &owner, false, raw)?;
                self.record_child(parent.as_fd(), target, raw)
            }
            Whiteouts::Apply => {
                let parent = match open_in_root(
                    self.root.as_fd(),
                    &join(parents),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                ) {
                    Ok(parent) => parent,
                    // Nothing is there to delete.
                    Err(error)
                        if matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) =>
                    {
                        return Ok(());
                    }
                    Err(error) => return Err(parent_error(raw, error)),
                };
                // The deletion would stamp the parent with the time of the unpack; keep the
                // image's time instead, so a flattened tree (`kiln export`) depends only on the
                // image. When the layer also carries the parent, `finish_dirs` sets its time.
                let before = fstat(&parent).map_err(|e| io_error(raw, e.into()))?;
                self.clear(parent.as_fd(), target, raw)?;
                let mtime = TimeSpec::new(before.st_mtime, before.st_mtime_nsec);
                futimens(&parent, &TimeSpec::UTIME_OMIT, &mtime)
                    .map_err(|e| io_error(raw, e.into()))
            }
            // Not reached: a literal unpack creates `.wh.` names as files.
            Whiteouts::Literal => Ok(()),
        }
    }

    fn opaque(&mut self, parents: &[OsString], raw: &[u8]) -> Result<(), LayerError> {
        match self.options.whiteouts {
            Whiteouts::Overlay => {
                let parent = self.parent(parents, raw)?;
                let dir = dirfd::reopen_dir(parent.as_fd()).map_err(|e| io_error(raw, e))?;
                let name = if self.options.user_xattr {
                    c"user.overlay.opaque"
                } else {
                    c"trusted.overlay.opaque"
                };
                xattr::set_fd(dir.as_fd(), name, b"y").map_err(|e| io_error(raw, e))?;
                self.record_fd(dir.as_fd(), raw)
            }
            Whiteouts::Apply => {
                let parent = match open_in_root(
                    self.root.as_fd(),
                    &join(parents),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                ) {
                    Ok(parent) => parent,
                    Err(error)
                        if matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) =>
                    {
                        return Ok(());
                    }
                    Err(error) => return Err(parent_error(raw, error)),
                };
                self.touched.clear();
                self.clear_lower(parent.as_fd(), raw)
            }
            // Not reached: a literal unpack creates `.wh..wh..opq` as a file.
            Whiteouts::Literal => Ok(()),
        }
    }

    /// Removes what lower layers put in `dir`, keeping this layer's entries and, inside this
    /// layer's directories, clearing the lower entries too (overlayfs shows nothing of the lower
    /// layers below an opaque directory).
    fn clear_lower(&mut self, dir: BorrowedFd<'_>, raw: &[u8]) -> Result<(), LayerError> {
        for name in dirfd::list_dir(dir).map_err(|e| io_error(raw, e))? {
            let Some(stat) = lstat_child(dir, &name).map_err(|e| io_error(raw, e))? else {
                continue;
            };
            if !self.ours.contains(&key(&stat)) {
                dirfd::remove_all(dir, &name).map_err(|e| io_error(raw, e))?;
            } else if file_type(&stat) == SFlag::S_IFDIR {
                let child = open_child(dir, &name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                    .map_err(|e| io_error(raw, e))?;
                self.clear_lower(child.as_fd(), raw)?;
            }
        }
        Ok(())
    }

    /// Sets the deferred modes and mtimes of directories, deepest first (so a read-only parent
    /// does not stop its children being opened without root). A directory a later entry
    /// replaced is skipped.
    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        let mut dirs: Vec<(&PathBuf, &DirMeta)> = self.deferred_dirs.iter().collect();
        dirs.sort_by(|a, b| {
            b.0.components()
                .count()
                .cmp(&a.0.components().count())
                .then_with(|| a.0.cmp(b.0))
        });
        for (path, meta) in dirs {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
            let dir = match open_in_root(self.root.as_fd(), path, flags) {
                Ok(dir) => dir,
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                    ) =>
                {
                    continue;
                }
                Err(error) => return Err(io_error(path.as_os_str().as_bytes(), error)),
            };
            let fail = |e: Errno| io_error(path.as_os_str().as_bytes(), e.into());
            fchmod(&dir, Mode::from_bits_truncate(meta.mode)).map_err(fail)?;
            futimens(&dir, &meta.mtime, &meta.mtime).map_err(fail)?;
        }
        Ok(())
    }
}

fn io_error(raw: &[u8], source: io::Error) -> LayerError {
    LayerError::Io {
        path: PathBuf::from(OsStr::from_bytes(raw)),
        source,
    }
}

/// The error of a chown to `meta`'s owner: in a user namespace, EINVAL means an id it does not
/// map (chown(2)), which says more than the errno.
fn chown_error(raw: &[u8], meta: &Meta, errno: nix::errno::Errno) -> LayerError {
    match crate::sys::privilege::current() {
        crate::sys::privilege::Privilege::NamespaceRoot { uids, gids }
            if errno == nix::errno::Errno::EINVAL =>
        {
            LayerError::UnmappedOwner {
                entry: String::from_utf8_lossy(raw).into_owned(),
                uid: meta.uid,
                gid: meta.gid,
                uids,
                gids,
            }
        }
        _ => io_error(raw, errno.into()),
    }
}

/// An error opening an entry's parent directory inside the root.
fn parent_error(raw: &[u8], error: io::Error) -> LayerError {
    let reason = match error.raw_os_error() {
        Some(libc::ENOTDIR) => "a parent directory is not a directory",
        Some(libc::ELOOP) => "a parent directory is a symlink loop",
        Some(libc::EXDEV) => "a parent directory resolves outside the root",
        _ => return io_error(raw, error),
    };
    LayerError::unsafe_entry(raw, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleaned(raw: &str) -> Result<String, &'static str> {
        clean_path(raw.as_bytes()).map(|c| join(&c).to_string_lossy().into_owned())
    }

    #[test]
    fn clean_path_strips_roots_and_refuses_climbing() {
        for (raw, expected) in [
            ("etc/passwd", Ok("etc/passwd")),
            ("/etc/passwd", Ok("etc/passwd")),
            ("./usr//bin/./sh", Ok("usr/bin/sh")),
            ("a/b/../c", Ok("a/c")),
            ("a/..", Ok("")),
            ("./", Ok("")),
            ("/", Ok("")),
            ("dir/", Ok("dir")),
            ("../escape", Err("`..` climbs above the root")),
            ("a/../../escape", Err("`..` climbs above the root")),
            ("/../etc", Err("`..` climbs above the root")),
            ("a\0b", Err("the path contains a NUL byte")),
        ] {
            assert_eq!(cleaned(raw), expected.map(str::to_string), "{raw:?}");
        }
    }

    #[test]
    fn classify_knows_whiteouts_and_refuses_metadata_names() {
        assert_eq!(classify(b"file"), Ok(Name::Plain));
        assert_eq!(classify(b"a.wh.b"), Ok(Name::Plain));
        assert_eq!(classify(b".wh..wh..opq"), Ok(Name::Opaque));
        assert_eq!(classify(b".wh.gone"), Ok(Name::Whiteout(b"gone")));
        // Docker writes `.wh..bashrc` when `.bashrc` is deleted.
        assert_eq!(classify(b".wh..bashrc"), Ok(Name::Whiteout(b".bashrc")));
        for refused in [
            &b".wh..wh.plnk"[..],
            b".wh..wh.aufs",
            b".wh..wh..opq2",
            b".wh.",
            b".wh..",
            b".wh...",
        ] {
            assert!(
                classify(refused).is_err(),
                "{:?}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    #[test]
    fn blank_numeric_fields_read_as_zero_and_garbage_is_an_error() {
        let garbage = || Err(io::Error::other("not a number"));
        assert_eq!(or_blank(garbage(), b"\0\0\0  \0").unwrap(), 0);
        assert_eq!(or_blank(garbage(), b"").unwrap(), 0);
        assert!(or_blank(garbage(), b"12x\0").is_err());
        assert_eq!(or_blank(Ok(7), b"0000007\0").unwrap(), 7);
    }

    #[test]
    fn pax_times_parse_with_fractions_and_signs() {
        for (text, expected) in [
            ("1700000000", Some((1_700_000_000, 0))),
            ("1700000000.5", Some((1_700_000_000, 500_000_000))),
            ("1.123456789123", Some((1, 123_456_789))),
            ("-1.25", Some((-2, 750_000_000))),
            ("-3", Some((-3, 0))),
            ("", None),
            ("1e9", None),
            ("1.2.3", None),
            ("-", None),
            ("99999999999999999999999", None),
        ] {
            assert_eq!(parse_pax_time(text), expected, "{text:?}");
        }
    }
}
