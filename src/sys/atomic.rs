//! Crash-safe file updates: everything kiln makes visible in its store appears whole or not at
//! all.
//!
//! The recipe (see rename(2) and fsync(2)): write the new content to a temporary file on the same
//! filesystem, `fsync` it, `rename` it over the final name (atomic for readers: they see the old
//! file or the new one, never a mix), then `fsync` the directory so the rename itself survives a
//! crash. [`Staging`] names the temporary files and directories (with the writer's pid, so a
//! later process can tell a dead writer's leftovers from a live writer's work) and removes stale
//! ones. [`BesideTemp`] does the same for a file the user named (`save -o F`): its temporary file
//! sits beside F, and the next write to F removes the ones dead writers left.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// A filesystem operation that failed, with the path it concerned.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", path.display())]
pub struct FsError {
    /// What kiln was doing, as a verb phrase (`create directory`, `rename`, ...).
    pub action: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FsError {
    /// Wraps `source` with what kiln was doing to `path`.
    pub fn new(action: &'static str, path: &Path, source: io::Error) -> FsError {
        FsError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Adds the action and path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn fs(self, action: &'static str, path: &Path) -> Result<T, FsError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn fs(self, action: &'static str, path: &Path) -> Result<T, FsError> {
        self.map_err(|source| FsError::new(action, path, source))
    }
}

/// Replaces `path` with `bytes` atomically, staging the new content beside it in the same
/// directory (so the rename never crosses a filesystem). A crash leaves either the old file or
/// the new one, and at worst a [`BesideTemp`] file, which the next write to `path` removes.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let mut temp = BesideTemp::create(path, file_mode_in(parent_dir(path)))?;
    temp.write_all(bytes).fs("write", temp.path())?;
    temp.commit()
}

/// A temporary file beside a file the user named (`save -o F`, `--metadata-file F`, docker's
/// `config.json`), renamed over it by [`BesideTemp::commit`]; dropped uncommitted, it is removed.
///
/// A writer killed with SIGKILL cannot remove its temporary file, so every temporary file says
/// who wrote it and the next [`BesideTemp::create`] for the same target removes the dead
/// writers' ones ([`remove_stale_beside`]). The name is `.NAME.kiln-PID-START-N.tmp`: the
/// writer's pid, its start time (field 22 of `/proc/PID/stat`, clock ticks since boot, which
/// tells a reused pid from the writer) and a counter. While it lives, the writer also holds an
/// exclusive flock(2) on the file, which the kernel drops when the process dies: a file is
/// removed only when its pid names no process started at that time *and* its lock is free, so
/// a live writer's file is never taken, not even one in another pid namespace sharing the
/// directory (whose pid kiln cannot see).
#[derive(Debug)]
pub struct BesideTemp {
    file: File,
    path: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl BesideTemp {
    /// Removes the stale temporary files of `target` (see [`remove_stale_beside`]), then creates
    /// a new one beside it, with permission bits `mode` (before the umask), locked.
    pub fn create(target: &Path, mode: u32) -> Result<BesideTemp, FsError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        remove_stale_beside(target);
        let name = temp_name(
            target,
            &format!(
                "kiln-{}-{}-{}",
                std::process::id(),
                own_start_time(),
                next_count()
            ),
        );
        let path = parent_dir(target).join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .fs("create", &path)?;
        let temp = BesideTemp {
            file,
            path,
            target: target.to_path_buf(),
            committed: false,
        };
        // A file system without flock(2) leaves the pid and start time to protect the file.
        let _ = temp.file.try_lock();
        Ok(temp)
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Syncs the file, renames it over the target and syncs the directory: the target then
    /// holds what was written, or (after a crash) what it held before.
    pub fn commit(mut self) -> Result<(), FsError> {
        self.file.sync_all().fs("sync", &self.path)?;
        fs::rename(&self.path, &self.target).fs("rename into place", &self.target)?;
        self.committed = true;
        fsync_dir(parent_dir(&self.target))
    }
}

impl Write for BesideTemp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for BesideTemp {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `.NAME.MIDDLE.tmp`, the temporary file of `target` (dot-prefixed, so `ls` hides it).
fn temp_name(target: &Path, middle: &str) -> std::ffi::OsString {
    let mut name = std::ffi::OsString::from(".");
    name.push(target.file_name().unwrap_or_default());
    name.push(format!(".{middle}.tmp"));
    name
}

/// Who wrote a temporary file, from its name: the pid, and the start time when the name has one.
/// Besides [`BesideTemp`]'s names, the forms earlier kilns wrote are read: `.NAME.kiln-PID.tmp`
/// (archives), `.NAME.PID-NANOS-N.tmp` (atomic writes), `.NAME.PID.tmp` (docker's config); a name
/// of none of these forms is not kiln's and is left alone.
fn temp_writer(target: &Path, candidate: &std::ffi::OsStr) -> Option<(u32, Option<u64>)> {
    use std::os::unix::ffi::OsStrExt as _;
    let prefix = temp_name(target, "");
    // `prefix` is `.NAME..tmp`: its part before `.tmp` starts every temporary file's name.
    let prefix = prefix.as_bytes().strip_suffix(b".tmp")?;
    let middle = candidate
        .as_bytes()
        .strip_prefix(prefix)?
        .strip_suffix(b".tmp")?;
    let middle = std::str::from_utf8(middle).ok()?;
    let numbers =
        |text: &str| -> Option<Vec<u64>> { text.split('-').map(|n| n.parse().ok()).collect() };
    let (pid, start) = match middle.strip_prefix("kiln-") {
        Some(rest) => match numbers(rest)?.as_slice() {
            [pid, start, _] => (*pid, Some(*start)),
            [pid] => (*pid, None),
            _ => return None,
        },
        None => match numbers(middle)?.as_slice() {
            [pid, _, _] | [pid] => (*pid, None),
            _ => return None,
        },
    };
    Some((u32::try_from(pid).ok()?, start))
}

/// Removes the temporary files beside `target` whose writers are dead (see [`BesideTemp`]) and
/// returns how many it removed. Best effort: a directory that cannot be read, or a file that
/// cannot be removed, is left as it is.
pub fn remove_stale_beside(target: &Path) -> usize {
    let dir = parent_dir(target);
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some((pid, start)) = temp_writer(target, &name) else {
            continue;
        };
        let path = entry.path();
        if writer_is_gone(&path, pid, start) && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether the writer of the temporary file `path` (pid `pid`, started at `start` when known)
/// is gone: no such process (started then), and the file's lock is free. Only regular files
/// count (a symlink or a FIFO of that name is not opened).
fn writer_is_gone(path: &Path, pid: u32, start: Option<u64>) -> bool {
    use std::os::unix::fs::OpenOptionsExt as _;
    let alive = match start {
        Some(start) => process_start_time(pid) == Some(start),
        None => process_alive(pid),
    };
    if alive {
        return false;
    }
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    file.metadata().is_ok_and(|m| m.is_file()) && file.try_lock().is_ok()
}

/// When process `pid` started (field 22 of `/proc/PID/stat`: clock ticks after boot), or `None`
/// when there is no such process.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// This process's start time ([`process_start_time`]), read once.
fn own_start_time() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(|| process_start_time(std::process::id()).unwrap_or(0))
}

fn next_count() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Like [`atomic_write`], but stages the new content in `staging` (which must be on the same
/// filesystem as `path`), so a crash leaves its junk where [`Staging::remove_stale`] finds it.
pub fn atomic_write_in(staging: &Staging, path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let temp = staging.new_path("write");
    write_synced(&temp, bytes, parent_dir(path))?;
    replace(&temp, path)
}

/// Like [`atomic_write_in`] (readers see the old or the new content, never a mix), but not
/// durable: nothing is fsynced, so after a power loss `path` may hold the old content or none.
/// For records whose loss then is harmless, such as a container's, which dies with the machine:
/// two fsyncs per write were a third of `kiln run`'s start-up time.
pub fn replace_in(staging: &Staging, path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let temp = staging.new_path("write");
    write_new(&temp, bytes, false, parent_dir(path))?;
    fs::rename(&temp, path)
        .fs("rename into place", path)
        .inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })
}

/// Writes `bytes` to a new file at `path` and fsyncs it; it will live in `final_dir`.
fn write_synced(path: &Path, bytes: &[u8], final_dir: &Path) -> Result<(), FsError> {
    write_new(path, bytes, true, final_dir)
}

/// Writes `bytes` to a new file at `path`, fsynced when `sync`; on failure the file is removed.
/// Its mode follows the directory it will live in, `final_dir` (see [`file_mode_in`]).
fn write_new(path: &Path, bytes: &[u8], sync: bool, final_dir: &Path) -> Result<(), FsError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(file_mode_in(final_dir))
        .open(path)
        .fs("create", path)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| if sync { file.sync_all() } else { Ok(()) })
        .fs("write", path);
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

/// Renames the synced file `temp` over `path` and fsyncs the directory of `path`. On failure the
/// temporary file is removed.
fn replace(temp: &Path, path: &Path) -> Result<(), FsError> {
    if let Err(err) = fs::rename(temp, path).fs("rename into place", path) {
        let _ = fs::remove_file(temp);
        return Err(err);
    }
    fsync_dir(parent_dir(path))
}

/// The mode a new file in `dir` is created with (before the umask): `0600` when `dir` grants
/// its group and others nothing (a private directory such as the store's keeps its files
/// private too, whatever the umask), else `0666` (the umask decides, as for any new file).
pub fn file_mode_in(dir: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    match fs::metadata(dir) {
        Ok(meta) if meta.permissions().mode() & 0o077 == 0 => 0o600,
        _ => 0o666,
    }
}

/// Creates `path` and its missing parents with mode `0700` (`mkdir -p -m 0700`): a directory of
/// kiln's own in a private store. An existing directory is left as it is.
pub fn create_private_dir_all(path: &Path) -> Result<(), FsError> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .fs("create directory", path)
}

/// Flushes a directory's entries (a rename, create or unlink in it) to disk. Without it a crash
/// can lose a rename whose file content was already synced (fsync(2): "calling fsync() on the
/// file does not ensure that the entry in the directory containing the file has also reached
/// disk").
pub fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .fs("sync directory", dir)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// `PID-NANOS-COUNTER`: unique among the threads of this process (the counter) and across
/// processes (the pid, and the clock for a pid reused after a crash).
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A staging directory for content on its way into a store (`ROOT/tmp`). Every entry is named
/// `PID-NANOS-COUNTER.KIND`; an entry whose writer is gone (or that is older than
/// [`Staging::STALE_AGE`]) is junk from a killed process and [`Staging::remove_stale`] deletes
/// it.
#[derive(Debug, Clone)]
pub struct Staging {
    dir: PathBuf,
}

/// What [`Staging::remove_stale`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleReport {
    /// Entries removed.
    pub entries: usize,
    /// Bytes of file content they held.
    pub bytes: u64,
}

impl Staging {
    /// Entries older than this are stale even when a process with the writer's pid exists (the
    /// pid may have been reused); a live writer keeps its file's mtime fresh while it writes.
    pub const STALE_AGE: Duration = Duration::from_secs(3600);

    /// A partial download (`NAME.partial`, see [`Staging::partial_path`]) is kept this long
    /// after it was last written, for the next pull to resume; then (and never while its writer
    /// holds its lock) it is stale.
    pub const PARTIAL_AGE: Duration = Duration::from_secs(24 * 3600);

    /// The extension of a partial download.
    pub const PARTIAL: &'static str = "partial";

    /// Opens (creating when missing, mode `0700`: what is staged is nobody else's business)
    /// the staging directory `dir`.
    pub fn open(dir: &Path) -> Result<Staging, FsError> {
        create_private_dir_all(dir)?;
        Ok(Staging {
            dir: dir.to_path_buf(),
        })
    }

    /// The staging directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh path in the staging directory for an entry of `kind` (a file extension such as
    /// `blob` or `snapshot`). Nothing is created.
    pub fn new_path(&self, kind: &str) -> PathBuf {
        self.dir.join(format!("{}.{kind}", unique_suffix()))
    }

    /// Where a download that outlives its process is kept: `NAME.partial`, named by what it
    /// will be (a blob's digest), not by its writer, so the next writer finds and resumes it.
    /// Whoever writes one holds an exclusive flock(2) on it.
    pub fn partial_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.{}", Staging::PARTIAL))
    }

    /// Removes entries left by dead writers: those whose pid is not a running process, those
    /// older than `max_age`, and those whose name kiln did not make. This process's own entries
    /// are never touched. A partial download is kept for the next pull to resume until it is
    /// older than `max_age` and [`Staging::PARTIAL_AGE`] both, and while a writer locks it.
    pub fn remove_stale(&self, max_age: Duration) -> Result<StaleReport, FsError> {
        let mut report = StaleReport::default();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(report),
            Err(err) => return Err(FsError::new("read directory", &self.dir, err)),
        };
        let me = std::process::id();
        for entry in entries {
            let entry = entry.fs("read directory", &self.dir)?;
            let path = entry.path();
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid == Some(me) {
                continue;
            }
            let age = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok());
            let old = age.is_some_and(|age| age > max_age);
            let partial = Path::new(&name)
                .extension()
                .is_some_and(|ext| ext == Staging::PARTIAL);
            let stale = match pid {
                _ if partial => {
                    age.is_some_and(|age| age > max_age.max(Staging::PARTIAL_AGE))
                        && !is_locked(&path)
                }
                Some(pid) => old || !process_alive(pid),
                None => true,
            };
            if stale {
                report.bytes += tree_size(&path);
                remove_tree(&path)?;
                report.entries += 1;
            }
        }
        Ok(report)
    }
}

/// Whether another open file holds a flock(2) on `path` (a file that cannot be opened counts as
/// unlocked).
fn is_locked(path: &Path) -> bool {
    File::open(path).is_ok_and(|file| matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock)))
}

/// Whether a process with this pid exists (kill(2) with signal 0 checks without sending; EPERM
/// means it exists but belongs to someone else).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(errno) => errno == nix::errno::Errno::EPERM,
    }
}

/// The apparent size of a file or directory tree: the lengths of its files and symlinks, each
/// inode counted once (hard links share their content), without following symlinks. Unreadable
/// parts count as empty.
pub fn tree_size(path: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    tree_size_inner(path, &mut seen)
}

fn tree_size_inner(path: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        let Ok(entries) = fs::read_dir(path) else {
            return 0;
        };
        return entries
            .filter_map(Result::ok)
            .map(|e| tree_size_inner(&e.path(), seen))
            .sum();
    }
    if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
        return 0;
    }
    meta.len()
}

/// Removes a file or a whole directory tree (without following symlinks: an unpacked layer's
/// `etc -> /etc` loses the link, never `/etc`; std's `remove_dir_all` opens each level with
/// `O_NOFOLLOW` relative to its parent, the fix for CVE-2022-21658's race). Directories without
/// write permission (an unpacked layer may have them) are made writable first so an unprivileged
/// user can delete their entries. A path that is already gone is fine.
pub fn remove_tree(path: &Path) -> Result<(), FsError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(FsError::new("inspect", path, err)),
    };
    if !meta.is_dir() {
        return match fs::remove_file(path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(FsError::new("remove", path, err))
            }
            _ => Ok(()),
        };
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path);
            fs::remove_dir_all(path).fs("remove", path)
        }
        Err(err) => Err(FsError::new("remove", path, err)),
    }
}

/// Adds owner rwx to every directory under `path` (best effort).
fn make_dirs_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode() | 0o700;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.filter_map(Result::ok) {
            make_dirs_writable(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["index.json"]);
    }

    /// The names of `dir`'s entries, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_dead_writers_temp_files_are_removed_by_the_next_write_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.tar");
        // A pid above the kernel's maximum never exists; pid 1 exists but did not start at
        // tick 1 (a reused pid); the older forms carry only a pid.
        let dead = [
            ".out.tar.kiln-2147483647-5-0.tmp",
            ".out.tar.kiln-1-999999999999-0.tmp",
            ".out.tar.kiln-2147483647.tmp",
            ".out.tar.2147483647-123-4.tmp",
            ".out.tar.2147483647.tmp",
        ];
        // Another target's, a user's own, one whose pid-only name names a live process.
        let kept = [
            ".other.tar.kiln-2147483647-5-0.tmp",
            ".out.tar.backup.tmp",
            ".out.tar.kiln-1.tmp",
            "out.tar.kiln-2147483647-5-0.tmp",
        ];
        for name in dead.iter().chain(&kept) {
            fs::write(dir.path().join(name), b"partial").unwrap();
        }
        atomic_write(&target, b"whole").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"whole");
        let mut expected: Vec<String> = kept.iter().map(|n| n.to_string()).collect();
        expected.push("out.tar".into());
        expected.sort();
        assert_eq!(names(dir.path()), expected);
    }

    #[test]
    fn a_concurrent_writers_temp_file_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("meta.json");
        // A writer of this process, mid-write (another thread's, say).
        let mut writing = BesideTemp::create(&target, 0o600).unwrap();
        writing.write_all(b"half").unwrap();
        // A live process of its own, at its real start time.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let start = process_start_time(child.id()).unwrap();
        let live = dir
            .path()
            .join(format!(".meta.json.kiln-{}-{start}-0.tmp", child.id()));
        fs::write(&live, b"live").unwrap();
        // A writer whose pid kiln cannot see (another pid namespace) but whose lock is held.
        let unseen = dir.path().join(".meta.json.kiln-2147483647-7-0.tmp");
        fs::write(&unseen, b"unseen").unwrap();
        let lock = File::open(&unseen).unwrap();
        lock.try_lock().unwrap();

        atomic_write(&target, b"done").unwrap();
        assert!(
            writing.path().exists(),
            "this process's live temp file stays"
        );
        assert!(live.exists(), "a live process's temp file stays");
        assert!(unseen.exists(), "a locked temp file stays");
        writing.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"half");

        // Once the other process is gone and the lock dropped, the next write cleans up.
        child.kill().unwrap();
        child.wait().unwrap();
        drop(lock);
        atomic_write(&target, b"last").unwrap();
        assert_eq!(names(dir.path()), ["meta.json"]);
    }

    #[test]
    fn an_uncommitted_temp_file_is_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        let temp = BesideTemp::create(&target, 0o666).unwrap();
        assert!(temp.path().exists());
        drop(temp);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn atomic_write_in_stages_in_the_staging_dir() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(&dir.path().join("tmp")).unwrap();
        let path = dir.path().join("file");
        atomic_write_in(&staging, &path, b"data").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"data");
        assert_eq!(fs::read_dir(staging.dir()).unwrap().count(), 0);
    }

    #[test]
    fn remove_stale_keeps_live_writers_and_removes_dead_ones() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path()).unwrap();
        let mine = staging.new_path("blob");
        fs::write(&mine, b"in progress").unwrap();
        // pid 1 always exists; a pid above the kernel's maximum never does.
        let live = dir.path().join("1-0-0.blob");
        fs::write(&live, b"other writer").unwrap();
        let dead = dir.path().join("2147483647-0-0.snapshot");
        fs::create_dir_all(dead.join("sub")).unwrap();
        fs::write(dead.join("sub/file"), b"12345").unwrap();
        let foreign = dir.path().join("not-ours");
        fs::write(&foreign, b"x").unwrap();

        let report = staging.remove_stale(Staging::STALE_AGE).unwrap();
        assert_eq!(
            report,
            StaleReport {
                entries: 2,
                bytes: 6
            }
        );
        assert!(mine.exists() && live.exists());
        assert!(!dead.exists() && !foreign.exists());

        let report = staging.remove_stale(Duration::ZERO).unwrap();
        assert_eq!(
            report.entries, 1,
            "an old entry is stale even if its pid lives"
        );
        assert!(mine.exists(), "this process's own entries stay");
    }

    #[test]
    fn partial_downloads_are_kept_until_old_and_unlocked() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path()).unwrap();
        let fresh = staging.partial_path("sha256-aa");
        let old = staging.partial_path("sha256-bb");
        let old_locked = staging.partial_path("sha256-cc");
        for path in [&fresh, &old, &old_locked] {
            fs::write(path, b"12345").unwrap();
        }
        let long_ago = SystemTime::now() - Staging::PARTIAL_AGE - Duration::from_secs(60);
        for path in [&old, &old_locked] {
            File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let lock = File::open(&old_locked).unwrap();
        lock.lock().unwrap();
        let report = staging.remove_stale(Duration::ZERO).unwrap();
        assert_eq!(report.entries, 1);
        assert!(fresh.exists() && !old.exists() && old_locked.exists());
        drop(lock);
        staging.remove_stale(Staging::STALE_AGE).unwrap();
        assert!(fresh.exists() && !old_locked.exists());
    }

    #[test]
    fn remove_tree_handles_read_only_directories_and_missing_paths() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("ro")).unwrap();
        fs::write(tree.join("ro/f"), b"x").unwrap();
        fs::set_permissions(tree.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        remove_tree(&tree).unwrap();
    }

    #[test]
    fn tree_size_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"1234").unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        fs::write(dir.path().join("c"), b"12").unwrap();
        assert_eq!(tree_size(dir.path()), 6);
    }
}
