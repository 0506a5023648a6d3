//! Content checksums of build-context files, the part of a cache key that says what a COPY or
//! ADD read.
//!
//! A file's checksum covers what ends up in the image: its path, its type and permission bits,
//! its content (regular files) or link target (symlinks). It never covers the modification
//! time or the inode, as for Docker: touching a file keeps the cache, `chmod` busts it.
//! (BuildKit hashes a tar header without the time; kiln does not hash extended attributes.)
//! The owner is covered only for a context whose files keep their owners in the image
//! ([`ContextOwners::OnDisk`], a context unpacked from a tar): a tar that differs only in an
//! entry's owner gives another image, so it must not hit the other's cache. A local directory's
//! files are root's in the image whoever owns them on disk (BuildKit's client resets the owner
//! to 0:0), so their owner is not covered and a `chown` on the host keeps the cache.
//!
//! Reading every file on every build would make a large context slow, so a [`StatCache`]
//! remembers, per path, the content digest of a file together with what `stat` said about it
//! (size, modification and change times, inode, device, mode). A file whose stat is unchanged
//! is not read again.
//!
//! # Racy-clean files
//!
//! A stat is only proof of unchanged content if a later write must change it. A write in the
//! same clock tick as the stat (file timestamps come from the kernel's coarse clock, one tick
//! is up to 10 ms; some filesystems keep only whole seconds) leaves the size, both times and
//! the inode as they were, so the new content would look unchanged. Git's rule ("racy git")
//! re-checks every entry whose modification time is not strictly older than the moment the
//! index was written. kiln takes its moment *before* it hashes instead of when it saves, which
//! also closes git's window between hashing a file and writing the index: an entry is
//! remembered only when the file's modification and change times are both older than the
//! whole second before the checksum started. Any later write to the file then stamps a newer
//! time (the coarse clock lags the real one by under a tick, and a second of slack also covers
//! filesystems with two-second timestamps), so the stat no longer matches. Files changed within
//! the last second or two are simply hashed again next time. The change time is included
//! because it cannot be set back: restoring an old modification time after a write (`touch -r`,
//! `tar -x`) still moves it.
//!
//! # Never outside the context
//!
//! The directories that lead to a path are opened one component at a time, each beneath the
//! one above it (the first beneath a descriptor of the context root), with `openat2(2)` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: a symlink anywhere on the way (say a directory
//! swapped for a link to `/` between the context walk and the checksum) makes the open fail
//! instead of leaving the context. The entry itself is then reached by its bare name from that
//! directory, never followed: `fstatat(2)` with `AT_SYMLINK_NOFOLLOW` (no open at all when the
//! stat cache knows the file), `readlinkat(2)` for a link's target, and `openat(2)` with
//! `O_NOFOLLOW` to read a regular file, whose descriptor must be the inode just stat'ed, so a
//! file swapped for a fifo or a device in between is an error, not a hang or a side effect. Each
//! rayon job keeps the chain of directories it has open, so sorted paths cost about one
//! `fstatat` each when the stat cache knows them, and each directory one `openat2`.

use crate::cache::CacheError;
use crate::frontend::context::ContextOwners;
use crate::oci::{Digest, Hashing};
use crate::sys::FsError;
use crate::sys::atomic::{Staging, atomic_write_in};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// The checksum of one context path, kept so a cache miss can name the files that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// Slash-separated path relative to the context root.
    pub path: String,
    /// The digest of the path, its type and permission bits and its content or link target.
    pub digest: Digest,
    /// The type and permission bits (`st_mode & (S_IFMT | 0o7777)`), already part of `digest`;
    /// kept apart so an incremental COPY can tell that a changed path is still (and was) a
    /// regular file. 0 (unknown) in records written before kiln kept it.
    #[serde(default)]
    pub mode: u32,
}

/// The checksum of a set of context paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentSum {
    /// The digest of all [`ContentSum::files`]: the part of a cache key that stands for them.
    pub digest: Digest,
    /// One checksum per path, sorted by path.
    pub files: Vec<FileSum>,
}

impl ContentSum {
    /// The checksum of no path: what [`checksum_paths`] gives for an empty list, without a
    /// context to open (a COPY of heredocs only in a build that reads no context).
    pub fn of_nothing() -> ContentSum {
        ContentSum {
            digest: combined_digest(&[]),
            files: Vec::new(),
        }
    }

    /// The paths whose checksum is the same in `before`, when a COPY that read `before` and now
    /// reads `self` maps its sources to the same destinations both times: the same set of
    /// paths, and every path that changed a regular file both before and now (a changed type
    /// or symlink target can move what lands where). `None` otherwise, or when `before` does not
    /// know the type of a changed path (a record from before [`FileSum::mode`]).
    pub fn unchanged_since(&self, before: &ContentSum) -> Option<HashSet<String>> {
        if self.files.len() != before.files.len() {
            return None;
        }
        let regular = |mode: u32| mode & libc::S_IFMT == libc::S_IFREG;
        let mut unchanged = HashSet::with_capacity(self.files.len());
        // Both lists are sorted by path (see `checksum_paths`).
        for (now, then) in self.files.iter().zip(&before.files) {
            if now.path != then.path {
                return None;
            }
            if now.digest == then.digest {
                unchanged.insert(now.path.clone());
            } else if !(regular(now.mode) && regular(then.mode)) {
                return None;
            }
        }
        Some(unchanged)
    }
}

/// The checksum of exactly `paths` (context-relative, as [`crate::frontend::context::SourceMatch`] lists
/// them) in the context at `root`.
///
/// The paths are taken as a set: sorted and deduplicated first, so the order in which a COPY
/// lists its sources does not change the checksum (the instruction itself is in the op).
///
/// Per path the checksum covers the path, the file type and permission bits
/// (`st_mode & (S_IFMT | 0o7777)`), the content of a regular file, the target of a symlink and
/// the device number of a device node, and with [`ContextOwners::OnDisk`] the owner (uid and
/// gid); never times or inode (see the [module documentation](self)). Regular files whose stat `cache` knows unchanged are not
/// read; the others are read and hashed in parallel (rayon) and, unless racily clean, added to
/// `cache`. Symlinks are never followed and nothing outside `root` is ever opened.
///
/// A path that is gone, or that stopped being what it was while kiln looked at it, is an error
/// naming it.
pub fn checksum_paths(
    root: &Path,
    paths: &[String],
    owners: ContextOwners,
    cache: &StatCache,
) -> Result<ContentSum, CacheError> {
    checksum_paths_at(root, paths, owners, cache, clean_before(SystemTime::now()))
}

/// [`checksum_paths`] for a checksum that started at a moment whose racy-clean threshold is
/// `clean_before` (nanoseconds since the epoch): a file with a modification or change time at
/// or after it is hashed but not remembered.
fn checksum_paths_at(
    root: &Path,
    paths: &[String],
    owners: ContextOwners,
    cache: &StatCache,
    clean_before: i64,
) -> Result<ContentSum, CacheError> {
    let mut sorted: Vec<&str> = paths.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| FsError::new("open build context", root, errno.into()))?;
    let files = sorted
        .par_iter()
        .map_init(LastDir::default, |last_dir, path| {
            sum_path(root_fd.as_fd(), last_dir, path, owners, cache, clean_before)
        })
        .collect::<Result<Vec<FileSum>, CacheError>>()?;
    Ok(ContentSum {
        digest: combined_digest(&files),
        files,
    })
}

/// The directories a rayon job has open: the chain from the root down to the directory of the
/// last path, each opened beneath the one above it, kept for the next path (sorted paths mostly
/// share their parent, or a part of it, with the one before).
#[derive(Default)]
struct LastDir {
    /// `(directory path, descriptor)`, outermost first; each path extends the one before by
    /// one component.
    chain: Vec<(String, OwnedFd)>,
}

impl LastDir {
    /// A descriptor of the directory `dir` (`""` is the root) beneath `root`; `path` is the
    /// entry it is needed for, to name in errors. Each component is opened from its parent
    /// with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, one component at a time.
    fn open<'a>(
        &'a mut self,
        root: BorrowedFd<'a>,
        dir: &str,
        path: &str,
    ) -> Result<BorrowedFd<'a>, CacheError> {
        // Keep the open directories that lead to `dir`.
        while let Some((open, _)) = self.chain.last() {
            let leads = dir == open.as_str()
                || dir
                    .strip_prefix(open.as_str())
                    .is_some_and(|rest| rest.starts_with('/'));
            if leads {
                break;
            }
            self.chain.pop();
        }
        let done = self.chain.last().map_or(0, |(open, _)| open.len());
        let rest = dir.get(done..).unwrap_or_default().trim_start_matches('/');
        if !rest.is_empty() {
            for component in rest.split('/') {
                let parent = self.chain.last().map_or(root, |(_, fd)| fd.as_fd());
                let how = OpenHow::new()
                    .flags(
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    )
                    .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
                let fd =
                    openat2(parent, component, how).map_err(|errno| entry_error(path, errno))?;
                let opened = match self.chain.last() {
                    Some((above, _)) => format!("{above}/{component}"),
                    None => component.to_string(),
                };
                self.chain.push((opened, fd));
            }
        }
        Ok(self.chain.last().map_or(root, |(_, fd)| fd.as_fd()))
    }
}

/// The racy-clean threshold for a checksum starting at `now`: the start of the whole second
/// before it, in nanoseconds since the epoch (see the module documentation).
fn clean_before(now: SystemTime) -> i64 {
    let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(seconds.saturating_sub(1))
        .unwrap_or(i64::MAX)
        .saturating_mul(NANOS_PER_SECOND)
}

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// The digest of a set of per-path checksums. The encoding, fixed for cache compatibility:
/// `kiln-context-v1\n`, then for each file in order its digest (`sha256:<hex>`) and `\n`. The
/// path is part of each file's digest already.
fn combined_digest(files: &[FileSum]) -> Digest {
    let mut text = String::with_capacity(16 + files.len() * 72);
    text.push_str("kiln-context-v1\n");
    for file in files {
        text.push_str(&file.digest.to_string());
        text.push('\n');
    }
    Digest::of(text.as_bytes())
}

/// The checksum of one path. The encoding, fixed for cache compatibility, is NUL-separated
/// (no path, target or digest can hold a NUL): `kiln-context-entry-v1`, the path, the mode
/// (type and permission bits, octal), then the kind with `file` and the content digest,
/// `dir`, `symlink` and the target bytes, or `other` and the device number; with
/// [`ContextOwners::OnDisk`] then `owner` and `UID:GID` (decimal).
fn sum_path(
    root: BorrowedFd<'_>,
    last_dir: &mut LastDir,
    path: &str,
    owners: ContextOwners,
    cache: &StatCache,
    clean_before: i64,
) -> Result<FileSum, CacheError> {
    check_path(path)?;
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let dir = last_dir.open(root, dir, path)?;
    let stat = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|errno| entry_error(path, errno))?;
    let stamp = FileStamp::of(&stat);
    let file_type = stat.st_mode & libc::S_IFMT;
    let mode = stat.st_mode & (libc::S_IFMT | 0o7777);

    let mut record = Vec::with_capacity(path.len() + 128);
    record.extend_from_slice(b"kiln-context-entry-v1\0");
    record.extend_from_slice(path.as_bytes());
    record.extend_from_slice(format!("\0{mode:o}\0").as_bytes());
    match file_type {
        libc::S_IFREG => {
            let content = match cache.lookup(path, &stamp) {
                Some(digest) => digest,
                None => {
                    let (digest, unchanged) = hash_file(dir, name, path, &stat)?;
                    if unchanged && !stamp.is_racy(clean_before) {
                        cache.insert(path, stamp, digest.clone());
                    }
                    digest
                }
            };
            record.extend_from_slice(b"file\0");
            record.extend_from_slice(content.to_string().as_bytes());
        }
        libc::S_IFDIR => record.extend_from_slice(b"dir"),
        libc::S_IFLNK => {
            // readlinkat(2) reads the link itself; a bare name has no component to follow.
            let target = readlinkat(dir, name).map_err(|errno| entry_error(path, errno))?;
            record.extend_from_slice(b"symlink\0");
            record.extend_from_slice(target.as_bytes());
        }
        _ => record.extend_from_slice(format!("other\0{}", stat.st_rdev).as_bytes()),
    }
    if owners == ContextOwners::OnDisk {
        record.extend_from_slice(format!("\0owner\0{}:{}", stat.st_uid, stat.st_gid).as_bytes());
    }
    Ok(FileSum {
        path: path.to_string(),
        digest: Digest::of(&record),
        mode,
    })
}

/// Reads and hashes the regular file `name` in `dir` (the context's `path`), which `expected`
/// showed to be one. Returns the content digest and whether the file's stat was the same before
/// and after the read (only then may the stat cache remember it).
fn hash_file(
    dir: BorrowedFd<'_>,
    name: &str,
    path: &str,
    expected: &FileStat,
) -> Result<(Digest, bool), CacheError> {
    // O_NOFOLLOW: a symlink swapped in fails with ELOOP (open(2)). O_NONBLOCK: a fifo swapped
    // in must not make the open wait for a writer; O_NOCTTY: nor may a terminal become ours.
    // The inode check below then rejects either.
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty()).map_err(|errno| entry_error(path, errno))?;
    let before = fstat(&fd).map_err(|errno| entry_error(path, errno))?;
    if (before.st_dev, before.st_ino) != (expected.st_dev, expected.st_ino)
        || before.st_mode & libc::S_IFMT != libc::S_IFREG
    {
        return Err(CacheError::Changed {
            path: path.to_string(),
            what: "it was replaced by another file",
        });
    }
    let mut file = File::from(fd);
    let size = usize::try_from(before.st_size).unwrap_or(0);
    let mut buffer = vec![0; size.saturating_add(1).clamp(1, 256 << 10)];
    let mut hashing = Hashing::new(io::sink());
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(CacheError::Read {
                    path: path.to_string(),
                    cause: source,
                });
            }
        };
        hashing
            .write_all(buffer.get(..read).unwrap_or_default())
            .map_err(|cause| CacheError::Read {
                path: path.to_string(),
                cause,
            })?;
    }
    let after = fstat(file.as_fd()).map_err(|errno| entry_error(path, errno))?;
    let unchanged = FileStamp::of(expected) == FileStamp::of(&before)
        && FileStamp::of(&before) == FileStamp::of(&after);
    Ok((hashing.finish().0, unchanged))
}

/// The error for a failed open or stat of the context's `path` (or of a directory above it).
fn entry_error(path: &str, errno: Errno) -> CacheError {
    let path = path.to_string();
    match errno {
        Errno::ENOENT => CacheError::Vanished { path },
        Errno::ENOTDIR => CacheError::Changed {
            path,
            what: "a directory above it is no longer a directory",
        },
        Errno::ELOOP => CacheError::Changed {
            path,
            what: "a symlink now stands where a directory or file was, and kiln never follows one",
        },
        errno => CacheError::Read {
            path,
            cause: errno.into(),
        },
    }
}

/// Accepts a clean slash-separated relative path: not empty, not absolute, no empty, `.` or
/// `..` segment, no NUL.
fn check_path(path: &str) -> Result<(), CacheError> {
    let reason = if path.is_empty() {
        "it is empty"
    } else if path.starts_with('/') {
        "it is absolute"
    } else if path.contains('\0') {
        "it contains a NUL byte"
    } else if path.split('/').any(str::is_empty) {
        "it has an empty segment"
    } else if path.split('/').any(|s| s == "." || s == "..") {
        "it has a `.` or `..` segment"
    } else {
        return Ok(());
    };
    Err(CacheError::BadPath {
        path: path.to_string(),
        reason,
    })
}

/// What `stat` says about a file that a content change would alter. Times are nanoseconds
/// since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    size: u64,
    mtime: i64,
    ctime: i64,
    inode: u64,
    device: u64,
    mode: u32,
}

impl FileStamp {
    fn of(stat: &FileStat) -> FileStamp {
        let nanos = |seconds: i64, nanos: i64| {
            seconds
                .saturating_mul(NANOS_PER_SECOND)
                .saturating_add(nanos)
        };
        FileStamp {
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mtime: nanos(stat.st_mtime, stat.st_mtime_nsec),
            ctime: nanos(stat.st_ctime, stat.st_ctime_nsec),
            inode: stat.st_ino,
            device: stat.st_dev,
            mode: stat.st_mode,
        }
    }

    /// Whether a write after the stat might not change it (see the module documentation).
    fn is_racy(&self, clean_before: i64) -> bool {
        self.mtime.max(self.ctime) >= clean_before
    }
}

/// A remembered content digest.
#[derive(Debug)]
struct StatEntry {
    stamp: FileStamp,
    digest: Digest,
    /// The last [`StatCache::generation`] that used it.
    last_used: AtomicU32,
}

/// The persistent stat cache of one build context: per relative path, the content digest of
/// the file as it was when its stat (size, times, inode, device, mode) was the one recorded.
///
/// Safe to share between threads: lookups take a read lock, new entries a write lock.
///
/// On disk it is one file per context, `<dir>/<hex digest of the canonical context path>.stat`,
/// in a compact little-endian binary format (see [`StatCache::save`]). Every entry carries its
/// file's inode and device, so an entry can only ever match the very file it was made from;
/// a damaged file that still parses can cost a re-hash, never a wrong digest. Entries not used
/// by the last [`StatCache::KEEP_GENERATIONS`] saves are dropped, so renamed and deleted files
/// do not pile up.
#[derive(Debug)]
pub struct StatCache {
    /// `<dir>/<hex>.stat`.
    file: PathBuf,
    /// The directory that holds it.
    dir: PathBuf,
    /// The canonical context root (recorded in the file and checked on load).
    root: PathBuf,
    /// One more than the generation of the file that was loaded; the one a save writes.
    generation: u32,
    entries: RwLock<HashMap<String, StatEntry>>,
    /// Whether an entry was added or replaced since the load or the last save.
    dirty: AtomicBool,
}

/// `kiln-stat-cache` and the format version.
const MAGIC: &[u8; 16] = b"kiln-stat-cache\n";
const FORMAT_VERSION: u32 = 1;
/// Larger stat cache files are not read (a million entries take about 150 MB).
const MAX_FILE_SIZE: u64 = 1 << 30;
/// The fixed part of an entry: the path length, size, times, inode, device, mode,
/// generation and the 64 hex digits of the digest.
const ENTRY_FIXED_SIZE: usize = 4 + 8 * 5 + 4 + 4 + 64;

impl StatCache {
    /// Entries unused for more saves than this are dropped on save.
    pub const KEEP_GENERATIONS: u32 = 16;

    /// Loads the stat cache of the context at `context_root` from `dir` (such as
    /// `<store>/cache/stat`). A missing, unreadable or damaged file gives an empty cache: a
    /// cache may always be dropped, so bad content is never an error.
    pub fn load(dir: &Path, context_root: &Path) -> StatCache {
        let root = context_root
            .canonicalize()
            .unwrap_or_else(|_| context_root.to_path_buf());
        let name = Digest::of(root.as_os_str().as_bytes());
        let file = dir.join(format!("{}.stat", name.hex()));
        let (generation, entries) = read_stat_file(&file, &root).unwrap_or_default();
        StatCache {
            file,
            dir: dir.to_path_buf(),
            root,
            generation: generation.saturating_add(1),
            entries: RwLock::new(entries),
            dirty: AtomicBool::new(false),
        }
    }

    /// The file this cache loads from and saves to.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// The number of remembered files.
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no file is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the cache back atomically (temporary file in `<dir>/tmp`, fsync, rename), only if
    /// an entry was added or replaced since it was loaded or last saved.
    ///
    /// The format (all integers little-endian): the 16 bytes `kiln-stat-cache\n`, the version
    /// (u32, 1), the generation (u32), the context root (u32 length, bytes), the entry count
    /// (u32), then per entry, sorted by path: the path (u32 length, UTF-8 bytes), the size
    /// (u64), modification and change times (i64 nanoseconds), inode and device (u64), mode
    /// (u32), the generation that last used it (u32) and the content digest (64 hex digits).
    pub fn save(&self) -> Result<(), CacheError> {
        if !self.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        let bytes = self.encode();
        let staging = Staging::open(&self.dir.join("tmp"))?;
        // Best effort: junk from a killed writer costs disk space, never correctness.
        let _ = staging.remove_stale(Staging::STALE_AGE);
        atomic_write_in(&staging, &self.file, &bytes)?;
        self.dirty.store(false, Ordering::Release);
        Ok(())
    }

    /// The content digest remembered for `path`, if its stamp is `stamp`.
    fn lookup(&self, path: &str, stamp: &FileStamp) -> Option<Digest> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(path).filter(|e| e.stamp == *stamp)?;
        entry.last_used.store(self.generation, Ordering::Relaxed);
        Some(entry.digest.clone())
    }

    /// Remembers `digest` as the content of `path` while its stat is `stamp`.
    fn insert(&self, path: &str, stamp: FileStamp, digest: Digest) {
        let entry = StatEntry {
            stamp,
            digest,
            last_used: AtomicU32::new(self.generation),
        };
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_string(), entry);
        self.dirty.store(true, Ordering::Release);
    }

    fn encode(&self) -> Vec<u8> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let mut kept: Vec<(&String, &StatEntry, u32)> = entries
            .iter()
            .map(|(path, entry)| (path, entry, entry.last_used.load(Ordering::Relaxed)))
            .filter(|(_, _, used)| self.generation.saturating_sub(*used) < Self::KEEP_GENERATIONS)
            .collect();
        kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let root = self.root.as_os_str().as_bytes();
        let mut out = Vec::with_capacity(64 + root.len() + kept.len() * (ENTRY_FIXED_SIZE + 48));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        put_bytes(&mut out, root);
        put_len(&mut out, kept.len());
        for (path, entry, used) in kept {
            let stamp = &entry.stamp;
            put_bytes(&mut out, path.as_bytes());
            out.extend_from_slice(&stamp.size.to_le_bytes());
            out.extend_from_slice(&stamp.mtime.to_le_bytes());
            out.extend_from_slice(&stamp.ctime.to_le_bytes());
            out.extend_from_slice(&stamp.inode.to_le_bytes());
            out.extend_from_slice(&stamp.device.to_le_bytes());
            out.extend_from_slice(&stamp.mode.to_le_bytes());
            out.extend_from_slice(&used.to_le_bytes());
            out.extend_from_slice(entry.digest.hex().as_bytes());
        }
        out
    }
}

/// Appends a u32 length and `bytes`. Lengths beyond u32 never occur: paths are at most
/// PATH_MAX and entry counts are bounded by memory long before 4 billion.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

/// The generation and entries of the stat cache file at `file`, or `None` when it is missing,
/// unreadable, too large, damaged or made for another context root.
fn read_stat_file(file: &Path, root: &Path) -> Option<(u32, HashMap<String, StatEntry>)> {
    let mut bytes = Vec::new();
    File::open(file)
        .ok()?
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return None;
    }
    let mut input = Reader { rest: &bytes };
    if input.take(MAGIC.len())? != MAGIC || input.u32()? != FORMAT_VERSION {
        return None;
    }
    let generation = input.u32()?;
    let stored_root = input.sized()?;
    if stored_root != root.as_os_str().as_bytes() {
        return None;
    }
    let count = usize::try_from(input.u32()?).ok()?;
    // Never trust the count for an allocation larger than the file could fill.
    let mut entries = HashMap::with_capacity(count.min(input.rest.len() / ENTRY_FIXED_SIZE));
    for _ in 0..count {
        let path = std::str::from_utf8(input.sized()?).ok()?;
        check_path(path).ok()?;
        let stamp = FileStamp {
            size: input.u64()?,
            mtime: input.i64()?,
            ctime: input.i64()?,
            inode: input.u64()?,
            device: input.u64()?,
            mode: input.u32()?,
        };
        let last_used = AtomicU32::new(input.u32()?);
        let hex = std::str::from_utf8(input.take(64)?).ok()?;
        let digest = Digest::from_hex(hex).ok()?;
        let entry = StatEntry {
            stamp,
            digest,
            last_used,
        };
        entries.insert(path.to_string(), entry);
    }
    input.rest.is_empty().then_some((generation, entries))
}

/// A cursor over the bytes of a stat cache file; every read is bounds-checked.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    /// A u32 length and that many bytes.
    fn sized(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::Duration;

    /// Every file remembered, however recent (the racy rule is tested on its own).
    const ALL_CLEAN: i64 = i64::MAX;

    /// A context directory and a stat cache directory.
    struct Fixture {
        _dir: tempfile::TempDir,
        ctx: PathBuf,
        stat: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let ctx = dir.path().join("ctx");
            let stat = dir.path().join("store/cache/stat");
            fs::create_dir_all(&ctx).unwrap();
            Fixture {
                ctx: ctx.canonicalize().unwrap(),
                stat,
                _dir: dir,
            }
        }

        fn write(&self, path: &str, content: &str) {
            let path = self.ctx.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }

        fn cache(&self) -> StatCache {
            StatCache::load(&self.stat, &self.ctx)
        }

        fn sum(&self, paths: &[&str], cache: &StatCache) -> ContentSum {
            checksum_paths(&self.ctx, &owned(paths), ContextOwners::Root, cache).unwrap()
        }

        fn sum_clean(&self, paths: &[&str], cache: &StatCache) -> ContentSum {
            checksum_paths_at(
                &self.ctx,
                &owned(paths),
                ContextOwners::Root,
                cache,
                ALL_CLEAN,
            )
            .unwrap()
        }
    }

    fn owned(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    /// The names of files read (inotify `IN_ACCESS`, which read(2) raises) in the watched
    /// directories: kernel-side proof of which files a checksum read, without touching them.
    struct Reads {
        fd: OwnedFd,
    }

    impl Reads {
        fn watch(dirs: &[&Path]) -> Reads {
            use rustix::fs::inotify;
            let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
                .unwrap_or_else(|err| panic!("inotify_init1: {err}"));
            for dir in dirs {
                inotify::add_watch(&fd, *dir, inotify::WatchFlags::ACCESS)
                    .unwrap_or_else(|err| panic!("inotify_add_watch: {err}"));
            }
            Reads { fd }
        }

        /// The sorted, deduplicated names read since the last call.
        fn take(&self) -> Vec<String> {
            let mut file = File::from(self.fd.try_clone().unwrap());
            let mut names = Vec::new();
            let mut buffer = vec![0u8; 64 << 10];
            loop {
                let len = match file.read(&mut buffer) {
                    Ok(len) => len,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) => panic!("reading inotify events: {err}"),
                };
                // struct inotify_event: wd, mask, cookie, len (4 bytes each), then `len` bytes
                // of NUL-padded name (inotify(7)).
                let mut at = 0;
                while at + 16 <= len {
                    let name_len =
                        u32::from_ne_bytes(buffer[at + 12..at + 16].try_into().unwrap()) as usize;
                    let name = &buffer[at + 16..at + 16 + name_len];
                    let name = name.split(|&b| b == 0).next().unwrap();
                    names.push(String::from_utf8(name.to_vec()).unwrap());
                    at += 16 + name_len;
                }
            }
            names.sort();
            names.dedup();
            names
        }
    }

    #[test]
    fn only_path_mode_content_and_link_target_count() {
        type Change = fn(&Path);
        let cases: &[(&str, Change, bool)] = &[
            ("nothing", |_| {}, false),
            (
                "mtime only",
                |ctx| {
                    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
                    File::options()
                        .write(true)
                        .open(ctx.join("f"))
                        .unwrap()
                        .set_modified(old)
                        .unwrap();
                },
                false,
            ),
            (
                "owner only",
                |ctx| std::os::unix::fs::lchown(ctx.join("f"), Some(1234), Some(5678)).unwrap(),
                false,
            ),
            (
                "rewritten with the same content",
                |ctx| fs::write(ctx.join("f"), "hello").unwrap(),
                false,
            ),
            (
                "chmod",
                |ctx| {
                    fs::set_permissions(ctx.join("f"), fs::Permissions::from_mode(0o755)).unwrap()
                },
                true,
            ),
            (
                "setuid bit",
                |ctx| {
                    fs::set_permissions(ctx.join("f"), fs::Permissions::from_mode(0o4644)).unwrap()
                },
                true,
            ),
            (
                "directory chmod",
                |ctx| {
                    fs::set_permissions(ctx.join("d"), fs::Permissions::from_mode(0o700)).unwrap()
                },
                true,
            ),
            (
                "content, same size",
                |ctx| fs::write(ctx.join("f"), "jello").unwrap(),
                true,
            ),
            (
                "content appended",
                |ctx| fs::write(ctx.join("f"), "hello!").unwrap(),
                true,
            ),
            (
                "file in a directory",
                |ctx| fs::write(ctx.join("d/g"), "other").unwrap(),
                true,
            ),
            (
                "symlink target",
                |ctx| {
                    fs::remove_file(ctx.join("l")).unwrap();
                    symlink("d/g", ctx.join("l")).unwrap();
                },
                true,
            ),
            (
                "symlink replaced by the file it named",
                |ctx| {
                    fs::remove_file(ctx.join("l")).unwrap();
                    fs::write(ctx.join("l"), "hello").unwrap();
                },
                true,
            ),
            (
                "file replaced by a directory",
                |ctx| {
                    fs::remove_file(ctx.join("f")).unwrap();
                    fs::create_dir(ctx.join("f")).unwrap();
                },
                true,
            ),
        ];
        let paths = ["d", "d/g", "f", "l"];
        let mut failures = Vec::new();
        for (name, change, busts) in cases {
            let fx = Fixture::new();
            fx.write("f", "hello");
            fx.write("d/g", "inner");
            fs::set_permissions(fx.ctx.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
            fs::set_permissions(fx.ctx.join("d"), fs::Permissions::from_mode(0o755)).unwrap();
            symlink("f", fx.ctx.join("l")).unwrap();
            let cache = fx.cache();
            let before = fx.sum(&paths, &cache);
            change(&fx.ctx);
            // Both with the same stat cache and with a cold one.
            for after in [fx.sum(&paths, &cache), fx.sum(&paths, &fx.cache())] {
                if (after.digest != before.digest) != *busts {
                    failures.push(format!("{name}: expected changed={busts}"));
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 13);
    }

    #[test]
    #[allow(clippy::disallowed_macros)] // A test's skip notice, not kiln's output.
    fn owners_count_for_a_context_that_keeps_them() {
        if !crate::sys::privilege::current().can_chown() {
            eprintln!("notice: skipping, chown needs root");
            return;
        }
        let fx = Fixture::new();
        fx.write("f", "hello");
        fx.write("d/g", "inner");
        symlink("f", fx.ctx.join("l")).unwrap();
        let paths = owned(&["d", "d/g", "f", "l"]);
        let sum = |owners| checksum_paths(&fx.ctx, &paths, owners, &fx.cache()).unwrap();
        let (root_before, kept_before) = (sum(ContextOwners::Root), sum(ContextOwners::OnDisk));
        assert_ne!(root_before.digest, kept_before.digest);
        for (path, uid, gid) in [("f", 1234, 0), ("f", 1234, 4321), ("d", 7, 7), ("l", 9, 9)] {
            std::os::unix::fs::lchown(fx.ctx.join(path), Some(uid), Some(gid)).unwrap();
            let kept = sum(ContextOwners::OnDisk);
            assert_ne!(kept.digest, kept_before.digest, "{path} {uid}:{gid}");
            // Only the changed path's own sum moved.
            let changed: Vec<&str> = kept
                .files
                .iter()
                .zip(&kept_before.files)
                .filter(|(now, then)| now.digest != then.digest)
                .map(|(now, _)| now.path.as_str())
                .collect();
            assert_eq!(changed, [path]);
            assert_eq!(sum(ContextOwners::Root), root_before, "{path} {uid}:{gid}");
            std::os::unix::fs::lchown(fx.ctx.join(path), Some(0), Some(0)).unwrap();
            assert_eq!(sum(ContextOwners::OnDisk), kept_before);
        }
    }

    #[test]
    fn per_file_sums_name_the_changed_file_and_order_does_not_matter() {
        let fx = Fixture::new();
        fx.write("a", "1");
        fx.write("b", "2");
        let cache = fx.cache();
        let before = fx.sum(&["a", "b"], &cache);
        assert_eq!(fx.sum(&["b", "a", "b"], &cache), before);
        assert_eq!(
            before
                .files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        fx.write("b", "3");
        let after = fx.sum(&["a", "b"], &cache);
        assert_eq!(after.files[0], before.files[0]);
        assert_ne!(after.files[1].digest, before.files[1].digest);
        assert_ne!(after.digest, before.digest);
    }

    #[test]
    fn warm_stat_cache_reads_no_file() {
        let fx = Fixture::new();
        let names = ["a", "b", "c", "sub/d", "sub/e"];
        for name in names {
            fx.write(name, &format!("content of {name}"));
        }
        let paths = ["a", "b", "c", "sub", "sub/d", "sub/e"];
        let reads = Reads::watch(&[&fx.ctx, &fx.ctx.join("sub")]);
        let cache = fx.cache();

        let cold = fx.sum_clean(&paths, &cache);
        assert_eq!(
            reads.take(),
            ["a", "b", "c", "d", "e"],
            "a cold cache reads all"
        );
        assert_eq!(cache.len(), 5);

        let warm = fx.sum_clean(&paths, &cache);
        assert_eq!(
            reads.take(),
            Vec::<String>::new(),
            "a warm cache reads none"
        );
        assert_eq!(warm, cold);

        fx.write("sub/d", "a longer content of sub/d");
        let changed = fx.sum_clean(&paths, &cache);
        assert_eq!(reads.take(), ["d"], "only the changed file is read");
        assert_ne!(changed.digest, cold.digest);
    }

    #[test]
    fn racily_clean_files_are_hashed_again() {
        let fx = Fixture::new();
        fx.write("f", "content");
        let stat = fs::metadata(fx.ctx.join("f")).unwrap();
        use std::os::unix::fs::MetadataExt;
        let ctime = stat.ctime() * NANOS_PER_SECOND + stat.ctime_nsec();
        let mtime = stat.mtime() * NANOS_PER_SECOND + stat.mtime_nsec();
        let newest = ctime.max(mtime);
        let reads = Reads::watch(&[&fx.ctx]);
        let paths = owned(&["f"]);

        // Not strictly older than the threshold: hashed, never remembered, so hashed again.
        let cache = fx.cache();
        for _ in 0..2 {
            checksum_paths_at(&fx.ctx, &paths, ContextOwners::Root, &cache, newest).unwrap();
            assert_eq!(reads.take(), ["f"]);
        }
        assert!(cache.is_empty());
        cache.save().unwrap();
        assert!(!cache.path().exists(), "nothing changed, nothing written");

        // Strictly older: remembered, saved, and not read again after a load.
        checksum_paths_at(&fx.ctx, &paths, ContextOwners::Root, &cache, newest + 1).unwrap();
        assert_eq!(reads.take(), ["f"]);
        cache.save().unwrap();
        let loaded = fx.cache();
        checksum_paths(&fx.ctx, &paths, ContextOwners::Root, &loaded).unwrap();
        assert_eq!(reads.take(), Vec::<String>::new());

        // A file just written is racy at the real clock: remembered only once it is older than
        // the second before a checksum starts.
        fx.write("g", "fresh");
        for _ in 0..2 {
            fx.sum(&["g"], &loaded);
            assert_eq!(reads.take(), ["g"]);
        }
        assert_eq!(loaded.len(), 1, "only f is remembered");
    }

    #[test]
    fn a_modification_time_in_the_future_keeps_a_file_racy() {
        let fx = Fixture::new();
        fx.write("f", "content");
        let future = SystemTime::now() + Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(fx.ctx.join("f"))
            .unwrap()
            .set_modified(future)
            .unwrap();
        let cache = fx.cache();
        let now = clean_before(SystemTime::now() + Duration::from_secs(60));
        checksum_paths_at(&fx.ctx, &owned(&["f"]), ContextOwners::Root, &cache, now).unwrap();
        assert!(cache.is_empty());
    }

    #[test]
    fn one_stat_cache_serves_many_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<StatCache>();
        let fx = Fixture::new();
        for i in 0..64 {
            fx.write(&format!("d{}/f{i}", i % 4), &"x".repeat(i));
        }
        let paths: Vec<String> = (0..64).map(|i| format!("d{}/f{i}", i % 4)).collect();
        let cache = fx.cache();
        let sums: Vec<ContentSum> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        checksum_paths_at(&fx.ctx, &paths, ContextOwners::Root, &cache, ALL_CLEAN)
                            .unwrap()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert!(sums.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(cache.len(), 64);
    }

    #[test]
    fn the_racy_threshold_is_the_whole_second_before() {
        let at = |secs, nanos| SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        assert_eq!(clean_before(at(100, 700_000_000)), 99 * NANOS_PER_SECOND);
        assert_eq!(clean_before(at(100, 0)), 99 * NANOS_PER_SECOND);
        assert_eq!(clean_before(at(0, 5)), 0);
    }

    #[test]
    fn stat_cache_survives_save_and_load() {
        let fx = Fixture::new();
        fx.write("a", "1");
        fx.write("dir/b", "22");
        let paths = ["a", "dir", "dir/b"];
        let cache = fx.cache();
        let first = fx.sum_clean(&paths, &cache);
        cache.save().unwrap();
        let file = cache.path().to_path_buf();
        assert!(file.starts_with(&fx.stat));
        let name = file.file_name().unwrap().to_str().unwrap();
        let expected = Digest::of(fx.ctx.as_os_str().as_bytes());
        assert_eq!(name, format!("{}.stat", expected.hex()));

        let loaded = fx.cache();
        assert_eq!(loaded.len(), 2);
        let reads = Reads::watch(&[&fx.ctx, &fx.ctx.join("dir")]);
        assert_eq!(fx.sum_clean(&paths, &loaded), first);
        assert_eq!(reads.take(), Vec::<String>::new());

        // An unchanged cache is not written again: the file is the same inode.
        use std::os::unix::fs::MetadataExt;
        let inode = fs::metadata(&file).unwrap().ino();
        loaded.save().unwrap();
        assert_eq!(fs::metadata(&file).unwrap().ino(), inode);
        assert_eq!(
            fs::read_dir(fx.stat.join("tmp")).unwrap().count(),
            0,
            "no staging junk"
        );
    }

    #[test]
    fn the_cache_of_another_context_is_not_used() {
        let fx = Fixture::new();
        fx.write("a", "1");
        let cache = fx.cache();
        fx.sum_clean(&["a"], &cache);
        cache.save().unwrap();
        let other = fx.ctx.parent().unwrap().join("other");
        fs::create_dir(&other).unwrap();
        // Its own file name, and a file claiming another root is dropped.
        assert!(StatCache::load(&fx.stat, &other).is_empty());
        fs::copy(cache.path(), StatCache::load(&fx.stat, &other).path()).unwrap();
        assert!(StatCache::load(&fx.stat, &other).is_empty());
    }

    #[test]
    fn unused_entries_expire_after_keep_generations_saves() {
        let fx = Fixture::new();
        fx.write("old", "never used again");
        let cache = fx.cache();
        fx.sum_clean(&["old"], &cache);
        cache.save().unwrap();
        let mut saves = 0;
        loop {
            let cache = fx.cache();
            if cache.len() == 1 && saves > 0 {
                break;
            }
            assert!(saves <= StatCache::KEEP_GENERATIONS, "old never expired");
            // A file of a new size each time, so every session has something to save.
            fx.write("busy", &"x".repeat(saves as usize + 1));
            fx.sum_clean(&["busy"], &cache);
            cache.save().unwrap();
            saves += 1;
        }
        assert_eq!(saves, StatCache::KEEP_GENERATIONS);
    }

    #[test]
    fn a_damaged_stat_cache_is_ignored() {
        let fx = Fixture::new();
        fx.write("a", "1");
        fx.write("b", "2");
        let cache = fx.cache();
        let good = fx.sum_clean(&["a", "b"], &cache);
        cache.save().unwrap();
        let valid = fs::read(cache.path()).unwrap();
        let mut huge_count = valid.clone();
        let count_at = 16 + 4 + 4 + 4 + fx.ctx.as_os_str().len();
        huge_count[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut bad_hex = valid.clone();
        let last = bad_hex.len() - 1;
        bad_hex[last] = b'G';
        let mut bad_path = valid.clone();
        let path_at = count_at + 4 + 4;
        bad_path[path_at] = b'/';
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("garbage", b"not a stat cache at all".to_vec()),
            ("truncated", valid[..valid.len() - 10].to_vec()),
            ("header only", valid[..count_at].to_vec()),
            ("trailing byte", [valid.as_slice(), b"x"].concat()),
            ("other version", {
                let mut v = valid.clone();
                v[16] = 9;
                v
            }),
            ("huge entry count", huge_count),
            ("bad digest", bad_hex),
            ("absolute path", bad_path),
        ];
        let mut failures = Vec::new();
        for (name, bytes) in &cases {
            fs::write(cache.path(), bytes).unwrap();
            let loaded = fx.cache();
            if !loaded.is_empty() {
                failures.push(format!("{name}: {} entries loaded", loaded.len()));
            }
            if fx.sum_clean(&["a", "b"], &loaded) != good {
                failures.push(format!("{name}: wrong checksum"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 9);
        fs::write(cache.path(), &valid).unwrap();
        assert_eq!(fx.cache().len(), 2, "the undamaged file loads");
    }

    #[test]
    fn a_symlinked_directory_below_an_open_one_is_refused() {
        let fx = Fixture::new();
        let outside = fx.ctx.parent().unwrap().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), "secret").unwrap();
        fs::create_dir_all(fx.ctx.join("d/real")).unwrap();
        fs::write(fx.ctx.join("d/real/x"), "x").unwrap();
        symlink("../../outside", fx.ctx.join("d/sym")).unwrap();
        let reads = Reads::watch(&[&outside]);
        let cache = fx.cache();
        // Whether `d` is still open from `d/real/x` (the same rayon job) or opened anew, `sym`
        // is opened beneath it without following.
        let err = checksum_paths_at(
            &fx.ctx,
            &owned(&["d/real/x", "d/sym/secret"]),
            ContextOwners::Root,
            &cache,
            ALL_CLEAN,
        )
        .unwrap_err();
        assert!(
            matches!(&err, CacheError::Changed { path, .. } if path == "d/sym/secret"),
            "{err}"
        );
        assert_eq!(
            reads.take(),
            Vec::<String>::new(),
            "nothing outside was read"
        );
    }

    #[test]
    fn symlinks_never_lead_outside_the_context() {
        let fx = Fixture::new();
        let outside = fx.ctx.parent().unwrap().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), "secret").unwrap();
        symlink(outside.join("secret"), fx.ctx.join("abs")).unwrap();
        symlink("../outside/secret", fx.ctx.join("rel")).unwrap();
        symlink("../outside", fx.ctx.join("dir")).unwrap();
        let reads = Reads::watch(&[&outside]);
        let cache = fx.cache();

        let before = fx.sum_clean(&["abs", "rel", "dir"], &cache);
        fs::write(outside.join("secret"), "changed secret").unwrap();
        assert_eq!(
            fx.sum_clean(&["abs", "rel", "dir"], &cache),
            before,
            "a link's target content is never part of the checksum"
        );
        let err = checksum_paths_at(
            &fx.ctx,
            &owned(&["dir/secret"]),
            ContextOwners::Root,
            &cache,
            ALL_CLEAN,
        )
        .unwrap_err();
        assert!(
            matches!(&err, CacheError::Changed { path, .. } if path == "dir/secret"),
            "{err}"
        );
        assert_eq!(
            reads.take(),
            Vec::<String>::new(),
            "nothing outside was read"
        );
    }

    #[test]
    fn special_files_are_never_opened() {
        let fx = Fixture::new();
        nix::unistd::mkfifo(&fx.ctx.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        // Opening a fifo for reading would wait for a writer forever.
        let sum = fx.sum(&["fifo"], &fx.cache());
        assert_eq!(sum.files.len(), 1);
    }

    #[test]
    fn bad_and_missing_paths_are_errors_naming_them() {
        let fx = Fixture::new();
        fx.write("a", "1");
        let cache = fx.cache();
        let cases = [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("a/../../etc/passwd", "`..`"),
            ("./a", "`.`"),
            ("a//b", "empty segment"),
            ("a/", "empty segment"),
            ("..", "`..`"),
        ];
        let mut failures = Vec::new();
        for (path, reason) in cases {
            match checksum_paths(&fx.ctx, &owned(&["a", path]), ContextOwners::Root, &cache) {
                Err(err @ CacheError::BadPath { .. }) if err.to_string().contains(reason) => {}
                other => failures.push(format!("{path:?}: {other:?}")),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");

        let err = checksum_paths(&fx.ctx, &owned(&["a", "gone"]), ContextOwners::Root, &cache)
            .unwrap_err();
        assert!(matches!(&err, CacheError::Vanished { path } if path == "gone"));
        assert!(err.to_string().contains("gone"), "{err}");
        let err =
            checksum_paths(&fx.ctx, &owned(&["a/b"]), ContextOwners::Root, &cache).unwrap_err();
        assert!(
            matches!(&err, CacheError::Changed { path, .. } if path == "a/b"),
            "{err}"
        );
    }

    #[test]
    fn files_left_out_by_dockerignore_never_count() {
        let fx = Fixture::new();
        fx.write(".dockerignore", "**/*.log\n");
        fx.write("app/main.rs", "fn main() {}");
        fx.write("app/debug.log", "noise");
        let ctx = crate::frontend::context::BuildContext::open(&fx.ctx, None).unwrap();
        let paths = ctx
            .select_sources(&owned(&["app"]))
            .unwrap()
            .remove(0)
            .paths;
        assert_eq!(paths, ["app", "app/main.rs"]);
        let cache = fx.cache();
        let before = checksum_paths(ctx.root(), &paths, ContextOwners::Root, &cache).unwrap();
        fx.write("app/debug.log", "more noise");
        assert_eq!(
            checksum_paths(ctx.root(), &paths, ContextOwners::Root, &cache).unwrap(),
            before
        );
    }

    #[test]
    fn the_sum_of_nothing_needs_no_context() {
        let fx = Fixture::new();
        fx.write("a", "x");
        let cache = fx.cache();
        assert_eq!(
            checksum_paths(&fx.ctx, &[], ContextOwners::Root, &cache).unwrap(),
            ContentSum::of_nothing()
        );
        assert_ne!(
            checksum_paths(&fx.ctx, &owned(&["a"]), ContextOwners::Root, &cache).unwrap(),
            ContentSum::of_nothing()
        );
    }
}

#[cfg(test)]
mod unchanged_since_tests {
    use super::*;

    const FILE: u32 = libc::S_IFREG | 0o644;
    const LINK: u32 = libc::S_IFLNK | 0o777;
    const DIR: u32 = libc::S_IFDIR | 0o755;

    /// A checksum of `(path, what it holds, mode)` entries, given sorted.
    fn sum(files: &[(&str, &str, u32)]) -> ContentSum {
        let files: Vec<FileSum> = files
            .iter()
            .map(|(path, data, mode)| FileSum {
                path: path.to_string(),
                digest: Digest::of(format!("{path}\0{data}\0{mode:o}").as_bytes()),
                mode: *mode,
            })
            .collect();
        ContentSum {
            digest: combined_digest(&files),
            files,
        }
    }

    #[test]
    fn only_changed_regular_files_in_the_same_set_of_paths_keep_the_mapping() {
        let before = sum(&[("a", "1", FILE), ("b", "2", FILE), ("l", "a", LINK)]);
        let cases: &[(&str, ContentSum, Option<&[&str]>)] = &[
            ("nothing changed", before.clone(), Some(&["a", "b", "l"])),
            (
                "a file's content changed",
                sum(&[("a", "9", FILE), ("b", "2", FILE), ("l", "a", LINK)]),
                Some(&["b", "l"]),
            ),
            (
                "a file's mode changed",
                sum(&[("a", "1", FILE | 0o100), ("b", "2", FILE), ("l", "a", LINK)]),
                Some(&["b", "l"]),
            ),
            (
                "a symlink's target changed",
                sum(&[("a", "1", FILE), ("b", "2", FILE), ("l", "b", LINK)]),
                None,
            ),
            (
                "a file became a symlink",
                sum(&[("a", "b", LINK), ("b", "2", FILE), ("l", "a", LINK)]),
                None,
            ),
            (
                "a file became a directory",
                sum(&[("a", "", DIR), ("b", "2", FILE), ("l", "a", LINK)]),
                None,
            ),
            (
                "a file was added",
                sum(&[
                    ("a", "1", FILE),
                    ("b", "2", FILE),
                    ("c", "3", FILE),
                    ("l", "a", LINK),
                ]),
                None,
            ),
            (
                "a file was removed",
                sum(&[("a", "1", FILE), ("l", "a", LINK)]),
                None,
            ),
            (
                "a file was renamed",
                sum(&[("a", "1", FILE), ("c", "2", FILE), ("l", "a", LINK)]),
                None,
            ),
        ];
        let mut failures = Vec::new();
        for (name, now, expected) in cases {
            let got = now.unchanged_since(&before).map(|set| {
                let mut paths: Vec<String> = set.into_iter().collect();
                paths.sort();
                paths
            });
            let expected = expected.map(|paths| paths.iter().map(|p| p.to_string()).collect());
            if got != expected {
                failures.push(format!("{name}: {got:?}, expected {expected:?}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 9);
    }

    #[test]
    fn a_record_without_modes_lends_nothing_when_something_changed() {
        let mut before = sum(&[("a", "1", FILE), ("b", "2", FILE)]);
        for file in &mut before.files {
            file.mode = 0;
        }
        let now = sum(&[("a", "9", FILE), ("b", "2", FILE)]);
        assert_eq!(now.unchanged_since(&before), None);
    }

    #[test]
    fn the_mode_is_what_stat_says() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let cache = StatCache::load(&dir.path().join("stat"), dir.path());
        let sum = checksum_paths(
            dir.path(),
            &["f".to_string(), "l".to_string()],
            ContextOwners::Root,
            &cache,
        )
        .unwrap();
        let modes: Vec<u32> = sum.files.iter().map(|f| f.mode & libc::S_IFMT).collect();
        assert_eq!(modes, [libc::S_IFREG, libc::S_IFLNK]);
    }
}
