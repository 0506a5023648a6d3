//! Writing a layer tar of an overlay upper directory (or a snapshot in overlay format).
//!
//! The walk never follows a symlink (entries are `lstat`ed, files opened with O_NOFOLLOW), visits
//! each directory's names in byte order, and writes only what defines the tree (type, path, mode,
//! uid/gid, mtime in seconds, contents, link targets, device numbers, xattrs), never atime or
//! ctime, user or group names: the same tree always gives the same bytes, which the build cache
//! relies on.

use super::apply::AppliedLayer;
use super::{LayerError, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};
use crate::oci::Hashing;
use crate::sys::dirfd::c_string;
use crate::sys::xattr;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// xattr name prefixes never written into a layer: overlayfs's own bookkeeping (whiteouts and
/// opaque directories are written as `.wh.` entries instead; redirects and origins are host
/// specific), and SELinux labels of the building host (the runtime labels a container's files;
/// Docker keeps only `security.capability`).
const EXCLUDED_XATTRS: [&str; 3] = ["trusted.overlay.", "user.overlay.", "security.selinux"];
/// The xattrs that mark an overlay directory opaque (the second with `userxattr`).
const OPAQUE_XATTRS: [&std::ffi::CStr; 2] = [c"trusted.overlay.opaque", c"user.overlay.opaque"];

/// Writes an uncompressed OCI layer tar of `dir`, an overlay upper dir (or a snapshot dir in
/// overlay format): 0/0 char devices become `.wh.NAME` entries; dirs with
/// `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`) get a `.wh..wh..opq` entry after their
/// dir entry. Entries are sorted by path so the same tree always gives the same bytes. A file
/// linked twice (same device and inode) is written once, then as hardlink entries to the first
/// path. Sockets are skipped. Returns the diff_id and size of the bytes written.
pub fn write_layer(dir: &Path, out: impl Write) -> Result<AppliedLayer, LayerError> {
    write_layer_mapped(dir, out, None)
}

/// Owners to write differently from the disk's: files kiln made without the privilege to give
/// them their owner (`--isolation=chroot` as an unprivileged user: everything a step makes is
/// kiln's user's) are written as the owner they stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerMap {
    /// The uid on disk that stands for [`OwnerMap::to_uid`].
    pub from_uid: u32,
    /// The gid on disk that stands for [`OwnerMap::to_gid`].
    pub from_gid: u32,
    /// The uid written instead.
    pub to_uid: u32,
    /// The gid written instead.
    pub to_gid: u32,
    /// Paths (relative to the layer's root) whose kiln-owned entries stand for root instead:
    /// entries that existed before the step and were copied up (kiln's files stand for root's
    /// in an unprivileged store).
    pub root_owned: std::sync::Arc<std::collections::HashSet<PathBuf>>,
}

impl OwnerMap {
    /// The ids written for `uid`/`gid` on disk at `path`.
    pub fn apply(&self, path: &Path, uid: u32, gid: u32) -> (u32, u32) {
        let (to_uid, to_gid) = if self.root_owned.contains(path) {
            (0, 0)
        } else {
            (self.to_uid, self.to_gid)
        };
        (
            if uid == self.from_uid { to_uid } else { uid },
            if gid == self.from_gid { to_gid } else { gid },
        )
    }
}

/// [`write_layer`], with the owners `owners` maps written as it says.
pub fn write_layer_mapped(
    dir: &Path,
    out: impl Write,
    owners: Option<OwnerMap>,
) -> Result<AppliedLayer, LayerError> {
    write_layer_inner(dir, out, owners, &std::collections::HashSet::new())
}

/// [`write_layer`] without the entries at `excluded` (paths relative to `dir`) and what is
/// under them: a container's mount points, which are kiln's, not the container's changes.
pub fn write_layer_excluding(
    dir: &Path,
    out: impl Write,
    excluded: &std::collections::HashSet<PathBuf>,
) -> Result<AppliedLayer, LayerError> {
    write_layer_inner(dir, out, None, excluded)
}

fn write_layer_inner(
    dir: &Path,
    out: impl Write,
    owners: Option<OwnerMap>,
    excluded: &std::collections::HashSet<PathBuf>,
) -> Result<AppliedLayer, LayerError> {
    let mut writer = Writer {
        excluded,
        owners,
        root: dir,
        builder: tar::Builder::new(Hashing::new(BufWriter::with_capacity(COPY_BUFFER, out))),
        links: HashMap::new(),
        buffer: vec![0; COPY_BUFFER],
    };
    writer.walk(Path::new(""))?;
    let hashing = writer.builder.into_inner().map_err(output_error)?;
    let (diff_id, size, mut buffered) = hashing.finish();
    buffered.flush().map_err(output_error)?;
    Ok(AppliedLayer {
        diff_id,
        size,
        skipped_devices: 0,
        skipped_xattrs: 0,
    })
}

struct Writer<'a, W: Write> {
    /// Paths (relative) left out, with everything under them.
    excluded: &'a std::collections::HashSet<PathBuf>,
    /// Owners written differently from the disk's.
    owners: Option<OwnerMap>,
    root: &'a Path,
    builder: tar::Builder<Hashing<BufWriter<W>>>,
    /// (dev, inode) of files already written, with their paths in the layer.
    links: HashMap<(u64, u64), PathBuf>,
    /// File contents pass through here on their way into the tar.
    buffer: Vec<u8>,
}

/// The names in directory `dir`, in byte order: the order a layer lists a directory's entries in.
fn sorted_names(dir: &Path) -> Result<Vec<OsString>, LayerError> {
    let mut names = fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|entry| entry.map(|e| e.file_name()))
                .collect::<io::Result<Vec<OsString>>>()
        })
        .map_err(|source| LayerError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// A tar block: entries' contents are padded to a multiple of it.
const TAR_BLOCK: u64 = 512;
/// How much of a file is read at once.
const COPY_BUFFER: usize = 1 << 20;

impl<W: Write> Writer<'_, W> {
    fn walk(&mut self, relative: &Path) -> Result<(), LayerError> {
        let absolute = self.root.join(relative);
        let names = sorted_names(&absolute)?;
        for name in names {
            let relative = relative.join(&name);
            if self.excluded.contains(&relative) {
                continue;
            }
            let path = self.root.join(&relative);
            let metadata = fs::symlink_metadata(&path).map_err(|source| LayerError::Io {
                path: path.clone(),
                source,
            })?;
            if name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) && !is_whiteout(&metadata) {
                return Err(LayerError::Unsupported {
                    entry: relative.to_string_lossy().into_owned(),
                    reason: format!(
                        "a file named {WHITEOUT_PREFIX}* would read as a whiteout in the layer; \
                         rename it"
                    ),
                });
            }
            self.entry(&path, &relative, &metadata)?;
            if metadata.is_dir() {
                self.walk(&relative)?;
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        path: &Path,
        relative: &Path,
        metadata: &Metadata,
    ) -> Result<(), LayerError> {
        let file_type = metadata.file_type();
        if file_type.is_socket() {
            return Ok(());
        }
        let io = |source: io::Error| LayerError::Io {
            path: path.to_path_buf(),
            source,
        };
        if is_whiteout(metadata) {
            let mut name = OsString::from(WHITEOUT_PREFIX);
            name.push(relative.file_name().unwrap_or_default());
            let mut header = self.header(metadata, tar::EntryType::Regular, relative);
            header.set_mode(0o600);
            return self
                .builder
                .append_data(&mut header, relative.with_file_name(name), io::empty())
                .map_err(output_error);
        }
        if file_type.is_dir() {
            self.xattrs(path)?;
            let mut header = self.header(metadata, tar::EntryType::Directory, relative);
            let mut name = relative.as_os_str().to_owned();
            name.push("/");
            self.builder
                .append_data(&mut header, name, io::empty())
                .map_err(output_error)?;
            if is_opaque(path) {
                let mut marker =
                    self.header_from(metadata, tar::EntryType::Regular, 0o777, relative);
                return self
                    .builder
                    .append_data(&mut marker, relative.join(WHITEOUT_OPAQUE), io::empty())
                    .map_err(output_error);
            }
            return Ok(());
        }
        if metadata.nlink() > 1 {
            let inode = (metadata.dev(), metadata.ino());
            if let Some(first) = self.links.get(&inode) {
                let mut header = self.header(metadata, tar::EntryType::Link, relative);
                return self
                    .builder
                    .append_link(&mut header, relative, first)
                    .map_err(output_error);
            }
            self.links.insert(inode, relative.to_path_buf());
        }
        self.xattrs(path)?;
        if file_type.is_symlink() {
            let target = fs::read_link(path).map_err(io)?;
            let mut header = self.header(metadata, tar::EntryType::Symlink, relative);
            return self
                .builder
                .append_link(&mut header, relative, target)
                .map_err(output_error);
        }
        if file_type.is_file() {
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(io)?;
            let mut header = self.header(metadata, tar::EntryType::Regular, relative);
            header.set_size(metadata.len());
            // The header (with any long-name entries) through the tar builder, which pads
            // nothing after an empty body; then the contents in large chunks straight to its
            // output, padded to the 512-byte block (the builder would copy through an 8 KiB
            // buffer behind a `dyn Read`).
            self.builder
                .append_data(&mut header, relative, io::empty())
                .map_err(output_error)?;
            let mut contents = Exact {
                file,
                left: metadata.len(),
                path,
            };
            let out = self.builder.get_mut();
            loop {
                let read = contents.read(&mut self.buffer).map_err(io)?;
                if read == 0 {
                    break;
                }
                out.write_all(self.buffer.get(..read).unwrap_or_default())
                    .map_err(output_error)?;
            }
            let padding = (TAR_BLOCK - metadata.len() % TAR_BLOCK) % TAR_BLOCK;
            let zeros = [0u8; TAR_BLOCK as usize];
            return out
                .write_all(zeros.get(..padding as usize).unwrap_or_default())
                .map_err(output_error);
        }
        let kind = if file_type.is_char_device() {
            tar::EntryType::Char
        } else if file_type.is_block_device() {
            tar::EntryType::Block
        } else {
            tar::EntryType::Fifo
        };
        let mut header = self.header(metadata, kind, relative);
        if kind != tar::EntryType::Fifo {
            let device = metadata.rdev();
            let (major, minor) = (nix::sys::stat::major(device), nix::sys::stat::minor(device));
            let fits =
                |n: u64| u32::try_from(n).map_err(|_| io::Error::other("device number too large"));
            header
                .set_device_major(fits(major).map_err(io)?)
                .map_err(io)?;
            header
                .set_device_minor(fits(minor).map_err(io)?)
                .map_err(io)?;
        }
        self.builder
            .append_data(&mut header, relative, io::empty())
            .map_err(output_error)
    }

    /// A header with `metadata`'s mode, owner (through the writer's [`OwnerMap`]) and mtime
    /// (seconds; before 1970 is written as 0).
    fn header(&self, metadata: &Metadata, kind: tar::EntryType, path: &Path) -> tar::Header {
        header_from(
            metadata,
            kind,
            0o7777,
            self.owners.as_ref().map(|map| (map, path)),
        )
    }

    fn header_from(
        &self,
        metadata: &Metadata,
        kind: tar::EntryType,
        mask: u32,
        path: &Path,
    ) -> tar::Header {
        header_from(
            metadata,
            kind,
            mask,
            self.owners.as_ref().map(|map| (map, path)),
        )
    }

    /// Writes `path`'s xattrs (those not excluded) as a PAX header for the entry that follows.
    fn xattrs(&mut self, path: &Path) -> Result<(), LayerError> {
        let io = |source: io::Error| LayerError::Io {
            path: path.to_path_buf(),
            source,
        };
        let names = match xattr::list(path) {
            Ok(names) => names,
            Err(error) if error.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
            Err(error) => return Err(io(error)),
        };
        let mut records = Vec::new();
        for name in names {
            let Ok(text) = std::str::from_utf8(&name) else {
                return Err(LayerError::Unsupported {
                    entry: path.to_string_lossy().into_owned(),
                    reason: format!(
                        "xattr name {:?} is not UTF-8, which a PAX header cannot hold",
                        String::from_utf8_lossy(&name)
                    ),
                });
            };
            if EXCLUDED_XATTRS
                .iter()
                .any(|prefix| text.starts_with(prefix))
            {
                continue;
            }
            let value = xattr::get(path, &c_string(&name).map_err(io)?).map_err(io)?;
            records.push((format!("SCHILY.xattr.{text}"), value));
        }
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(output_error)
    }
}

/// What an entry of an overlay upper directory means for the merged tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpperKind {
    /// A whiteout: the name is deleted from the layers below.
    Whiteout,
    /// A directory; `opaque` when it hides the layers' directory of its name below.
    Dir {
        /// `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`).
        opaque: bool,
    },
    /// A regular file.
    File,
    /// Anything else (a symbolic link, a device, a fifo, a socket).
    Other,
}

/// One entry of an overlay upper directory (see [`upper_entries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpperEntry {
    /// Its path relative to the upper directory.
    pub path: PathBuf,
    /// What it is.
    pub kind: UpperKind,
    /// `st_mode & 0o7777`, uid, gid, size and mtime (seconds), as `lstat` gives them.
    pub mode: u32,
    /// The owner.
    pub uid: u32,
    /// The group.
    pub gid: u32,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (seconds).
    pub mtime: i64,
}

/// Every entry of the overlay upper directory `dir`, in the order [`write_layer`] writes them
/// (each directory's names in byte order, a directory before its contents), read with the same
/// rules: symlinks never followed, 0/0 character devices are whiteouts, the opaque xattrs mark
/// opaque directories. `kiln diff` reads a container's changes through this.
pub fn upper_entries(dir: &Path) -> Result<Vec<UpperEntry>, LayerError> {
    let mut entries = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let absolute = dir.join(&relative);
        let names = sorted_names(&absolute)?;
        let mut subdirs = Vec::new();
        for name in names {
            let relative = relative.join(&name);
            let path = dir.join(&relative);
            let metadata = fs::symlink_metadata(&path).map_err(|source| LayerError::Io {
                path: path.clone(),
                source,
            })?;
            let kind = if is_whiteout(&metadata) {
                UpperKind::Whiteout
            } else if metadata.is_dir() {
                subdirs.push(relative.clone());
                UpperKind::Dir {
                    opaque: is_opaque(&path),
                }
            } else if metadata.is_file() {
                UpperKind::File
            } else {
                UpperKind::Other
            };
            entries.push(UpperEntry {
                path: relative,
                kind,
                mode: metadata.mode() & 0o7777,
                uid: metadata.uid(),
                gid: metadata.gid(),
                size: metadata.len(),
                mtime: metadata.mtime(),
            });
        }
        // Depth first, in name order: the last pushed is visited next.
        pending.extend(subdirs.into_iter().rev());
    }
    // The stack visits a directory's subdirectories after all its own names; order the list
    // as the layer walk does (by path components).
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// A 0/0 character device: overlayfs's whiteout.
fn is_whiteout(metadata: &Metadata) -> bool {
    metadata.file_type().is_char_device() && metadata.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    OPAQUE_XATTRS
        .iter()
        .any(|name| xattr::get(path, name).is_ok_and(|value| value == b"y"))
}

fn header_from(
    metadata: &Metadata,
    kind: tar::EntryType,
    mode_mask: u32,
    owners: Option<(&OwnerMap, &Path)>,
) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(metadata.mode() & mode_mask);
    // A chroot-mode step's map says whose files are whose; else, with one id (rootless without a
    // range) the caller's files are root's in the sandbox.
    let (uid, gid) = match owners {
        Some((map, path)) => map.apply(path, metadata.uid(), metadata.gid()),
        None => crate::sys::privilege::current().container_owner(metadata.uid(), metadata.gid()),
    };
    header.set_uid(u64::from(uid));
    header.set_gid(u64::from(gid));
    header.set_mtime(u64::try_from(metadata.mtime()).unwrap_or(0));
    header.set_size(0);
    header
}

fn output_error(source: io::Error) -> LayerError {
    LayerError::Io {
        path: PathBuf::from("<layer output>"),
        source,
    }
}

/// Reads exactly `left` bytes of `file` (its size when the header was written), failing if the
/// file shrank meanwhile, which would corrupt the tar; bytes past it are not read.
struct Exact<'p> {
    file: File,
    left: u64,
    path: &'p Path,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let read = self
            .file
            .read(buf.get_mut(..want).unwrap_or_default())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while the layer was written", self.path.display()),
            ));
        }
        self.left -= read as u64;
        Ok(read)
    }
}
