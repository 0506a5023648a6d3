//! Cache mounts (`RUN --mount=type=cache`): directories the store keeps between builds, by id,
//! never part of a layer, an image or a cache key.
//!
//! BuildKit keeps one persistent directory per cache id and lets concurrent steps share it
//! according to the mount's `sharing` (`solver/llbsolver/mounts/mount.go`, `cacheRefGetter`):
//! `shared` steps use the same directory at once, `locked` waits until no one else uses it,
//! `private` takes a directory no one is using, making a new one when all are busy (those
//! directories persist too and are reused later). Here each id has a directory
//! `ROOT/cache-mounts/<sha256 of the id>/` holding the id (`id`) and its instances `0/`, `1/`...,
//! each with a lock file beside it (`0.lock`): `shared` holds instance 0's lock shared, `locked`
//! holds it exclusively, `private` holds some instance's lock exclusively. Locks are flock(2),
//! released when the lease drops or the process dies, so a killed build blocks no one.
//!
//! An instance is created in the staging area by the caller's `init` (empty with a mode and
//! owner, or seeded from another filesystem) and renamed into place: a half-made cache is never
//! seen. `kiln prune` removes cache mounts no build holds ([`Store::prune_cache_mounts`]).
//!
//! For the shared cache (`--cache-to`, `--cache-from`, which carry instance 0 of each id), a
//! reader holds instance 0 without creating it ([`Store::peek_cache_mount`]), an older instance
//! is replaced whole by a newer copy ([`Store::refresh_cache_mount`]), and a note of what was
//! last exported sits beside it (`0.shared`, [`Store::cache_mount_note`]), removed with it.

use super::{Store, StoreError};
use crate::error::Cause;
use crate::oci::Digest;
use crate::sys::atomic::{IoContext as _, remove_tree, tree_size};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, SystemTime};

/// The directory under the store's root.
const DIR: &str = "cache-mounts";
/// How long a waiting step sleeps between attempts to take a lock (it checks for cancellation
/// in between).
const POLL: Duration = Duration::from_millis(50);

/// How a step shares a cache mount with concurrent steps (BuildKit's `sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    /// Everyone uses the same directory at once.
    Shared,
    /// One step at a time; others wait.
    Locked,
    /// A directory no concurrent step uses (a new one when all are busy).
    Private,
}

/// A cache mount held by a step: the directory to mount, locked as its sharing asks until
/// dropped.
#[derive(Debug)]
pub struct CacheMountLease {
    path: PathBuf,
    _lock: File,
}

impl CacheMountLease {
    /// The directory to mount.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One cache mount as `kiln df` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMountInfo {
    /// The cache id as the Dockerfile gave it.
    pub id: String,
    /// How many directories it has (more than one after concurrent `private` steps).
    pub instances: usize,
    /// Bytes of file content.
    pub size: u64,
    /// When a step last took it.
    pub last_used: Option<SystemTime>,
    /// A build holds it now.
    pub in_use: bool,
}

/// What [`Store::prune_cache_mounts`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheMountPrune {
    /// Cache ids removed entirely.
    pub removed: usize,
    /// Bytes of file content freed.
    pub reclaimed: u64,
}

/// Why a cache mount could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum CacheMountError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The caller's `init` failed to fill a new instance.
    #[error("cannot create cache mount {id:?}")]
    Init {
        id: String,
        #[source]
        source: Cause,
    },
    /// The step was cancelled while it waited for the lock.
    #[error("canceled while waiting for cache mount {id:?} (sharing=locked)")]
    Canceled { id: String },
}

impl Store {
    fn cache_mounts_dir(&self) -> PathBuf {
        self.root.join(DIR)
    }

    /// The directory of cache id `id`.
    fn cache_mount_dir(&self, id: &str) -> PathBuf {
        self.cache_mounts_dir()
            .join(Digest::of(id.as_bytes()).hex())
    }

    /// Where the shared cache keeps its note about instance 0 of cache mount `id` (what it last
    /// exported of it). The file may be absent or stale: its reader checks it.
    pub fn cache_mount_note(&self, id: &str) -> PathBuf {
        self.cache_mount_dir(id).join("0.shared")
    }

    /// Holds instance 0 of cache mount `id` for reading, as a `shared` step would (waiting,
    /// polling `cancelled`, while a `locked` step holds it); `None` when it does not exist.
    /// Nothing is created.
    pub fn peek_cache_mount(
        &self,
        id: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<CacheMountLease>, CacheMountError> {
        let dir = self.cache_mount_dir(id);
        let path = dir.join("0");
        if !path.is_dir() {
            return Ok(None);
        }
        let lock_path = dir.join("0.lock");
        let lock = open_lock(&lock_path)?;
        while !try_lock(&lock, false, &lock_path)? {
            if cancelled() {
                return Err(CacheMountError::Canceled { id: id.to_string() });
            }
            thread::sleep(POLL);
        }
        // Pruned while we waited.
        Ok(path
            .is_dir()
            .then_some(CacheMountLease { path, _lock: lock }))
    }

    /// Replaces instance 0 of cache mount `id` by one `init` makes (as for
    /// [`Store::cache_mount`]) when `stale`, given the present directory, says it should go.
    /// Only when no one holds it: a cache mount in use is left as it is (waiting could
    /// deadlock a step that mounts one id twice). Returns whether it replaced. A missing
    /// instance is left for [`Store::cache_mount`] to make.
    pub fn refresh_cache_mount(
        &self,
        id: &str,
        stale: &mut dyn FnMut(&Path) -> bool,
        init: &mut dyn FnMut(&Path) -> Result<(), Cause>,
    ) -> Result<bool, CacheMountError> {
        let dir = self.cache_mount_dir(id);
        let path = dir.join("0");
        if !path.is_dir() {
            return Ok(false);
        }
        let lock_path = dir.join("0.lock");
        let lock = open_lock(&lock_path)?;
        if !try_lock(&lock, true, &lock_path)? || !path.is_dir() || !stale(&path) {
            return Ok(false);
        }
        let staged = self.staging().new_path("cachemount");
        if let Err(source) = init(&staged) {
            let _ = remove_tree(&staged);
            return Err(CacheMountError::Init {
                id: id.to_string(),
                source,
            });
        }
        // The old one is moved away first (a rename cannot replace a non-empty directory); no
        // one can take it meanwhile, the lock is ours.
        let doomed = self.staging().new_path("cachemount");
        if let Err(err) = fs::rename(&path, &doomed) {
            let _ = remove_tree(&staged);
            return Err(StoreError::from(crate::sys::FsError::new("rename", &path, err)).into());
        }
        if let Err(err) = fs::rename(&staged, &path) {
            // Put the old one back: a failed refresh leaves the cache as it was.
            let _ = fs::rename(&doomed, &path);
            let _ = remove_tree(&staged);
            return Err(StoreError::from(crate::sys::FsError::new(
                "rename into place",
                &path,
                err,
            ))
            .into());
        }
        let _ = remove_tree(&doomed);
        let _ = fs::remove_file(self.cache_mount_note(id));
        drop(lock);
        Ok(true)
    }

    /// Takes the cache mount `id` with `sharing`, waiting (and polling `cancelled`) while the
    /// sharing asks to. A missing instance is made by `init`, which must create the directory
    /// at the path it is given (in the staging area) and fill it.
    pub fn cache_mount(
        &self,
        id: &str,
        sharing: CacheSharing,
        cancelled: &dyn Fn() -> bool,
        init: &mut dyn FnMut(&Path) -> Result<(), Cause>,
    ) -> Result<CacheMountLease, CacheMountError> {
        let dir = self.cache_mount_dir(id);
        crate::sys::atomic::create_private_dir_all(&dir).map_err(StoreError::from)?;
        let id_file = dir.join("id");
        if !id_file.exists() {
            crate::sys::atomic::atomic_write_in(self.staging(), &id_file, id.as_bytes())
                .map_err(StoreError::from)?;
        }
        let (index, lock) = match sharing {
            CacheSharing::Shared | CacheSharing::Locked => {
                let exclusive = sharing == CacheSharing::Locked;
                let lock = open_lock(&dir.join("0.lock"))?;
                loop {
                    match try_lock(&lock, exclusive, &dir.join("0.lock"))? {
                        true => break,
                        false if cancelled() => {
                            return Err(CacheMountError::Canceled { id: id.to_string() });
                        }
                        false => thread::sleep(POLL),
                    }
                }
                (0, lock)
            }
            CacheSharing::Private => {
                let mut index = 0;
                loop {
                    let path = dir.join(format!("{index}.lock"));
                    let lock = open_lock(&path)?;
                    if try_lock(&lock, true, &path)? {
                        break (index, lock);
                    }
                    index += 1;
                }
            }
        };
        let path = dir.join(index.to_string());
        if !path.is_dir() {
            let staged = self.staging().new_path("cachemount");
            if let Err(source) = init(&staged) {
                let _ = remove_tree(&staged);
                return Err(CacheMountError::Init {
                    id: id.to_string(),
                    source,
                });
            }
            if let Err(err) = fs::rename(&staged, &path) {
                // A `shared` step of another build made it first: use theirs.
                let _ = remove_tree(&staged);
                if !path.is_dir() {
                    return Err(StoreError::from(crate::sys::FsError::new(
                        "rename into place",
                        &path,
                        err,
                    ))
                    .into());
                }
            }
        }
        // The lock file's times say when the cache was last used (for `df`).
        let _ = lock.set_modified(SystemTime::now());
        Ok(CacheMountLease { path, _lock: lock })
    }

    /// The cache mounts in the store, sorted by id.
    pub fn cache_mounts(&self) -> Result<Vec<CacheMountInfo>, StoreError> {
        let mut out = Vec::new();
        for dir in cache_dirs(&self.cache_mounts_dir())? {
            let Ok(id) = fs::read_to_string(dir.join("id")) else {
                continue;
            };
            let mut info = CacheMountInfo {
                id,
                instances: 0,
                size: 0,
                last_used: None,
                in_use: false,
            };
            for entry in fs::read_dir(&dir).fs("read directory", &dir)? {
                let entry = entry.fs("read directory", &dir)?;
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "lock") {
                    let used = entry.metadata().and_then(|m| m.modified()).ok();
                    info.last_used = info.last_used.max(used);
                    // Held by a step when an exclusive lock cannot be had (dropped at once).
                    if let Ok(file) = File::open(&path) {
                        info.in_use |= matches!(file.try_lock(), Err(TryLockError::WouldBlock));
                    }
                } else if path.is_dir() {
                    info.instances += 1;
                    info.size += tree_size(&path);
                }
            }
            out.push(info);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Removes every cache mount no step holds (a held one is left whole, as BuildKit keeps
    /// a cache mount that is in use).
    pub fn prune_cache_mounts(&self) -> Result<CacheMountPrune, StoreError> {
        let mut report = CacheMountPrune::default();
        for dir in cache_dirs(&self.cache_mounts_dir())? {
            // Hold every instance's lock exclusively, or leave the id alone.
            let mut locks = Vec::new();
            let mut busy = false;
            for entry in fs::read_dir(&dir).fs("read directory", &dir)? {
                let path = entry.fs("read directory", &dir)?.path();
                if path.extension().is_some_and(|e| e == "lock") {
                    let lock = open_lock(&path).map_err(|e| match e {
                        CacheMountError::Store(s) => s,
                        other => StoreError::from(crate::sys::FsError::new(
                            "lock",
                            &path,
                            io::Error::other(other.to_string()),
                        )),
                    })?;
                    match lock.try_lock() {
                        Ok(()) => locks.push(lock),
                        Err(TryLockError::WouldBlock) => busy = true,
                        Err(TryLockError::Error(err)) => {
                            return Err(crate::sys::FsError::new("lock", &path, err).into());
                        }
                    }
                }
            }
            if busy {
                continue;
            }
            let size = tree_size(&dir);
            // Renamed away first, so no half-removed cache is ever mounted.
            let doomed = self.staging().new_path("cachemount");
            fs::rename(&dir, &doomed).fs("rename", &dir)?;
            drop(locks);
            remove_tree(&doomed)?;
            report.removed += 1;
            report.reclaimed += size;
        }
        Ok(report)
    }
}

fn cache_dirs(root: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(crate::sys::FsError::new("read directory", root, err).into()),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry.fs("read directory", root)?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    Ok(dirs)
}

fn open_lock(path: &Path) -> Result<File, CacheMountError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    Ok(OpenOptions::new()
        .mode(0o600)
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .fs("open lock file", path)
        .map_err(StoreError::from)?)
}

/// Takes the lock without waiting: `false` when someone else holds it.
fn try_lock(file: &File, exclusive: bool, path: &Path) -> Result<bool, CacheMountError> {
    let result = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match result {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(err)) => {
            Err(StoreError::from(crate::sys::FsError::new("lock", path, err)).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn mkdir(path: &Path) -> Result<(), Cause> {
        fs::create_dir(path)?;
        Ok(())
    }

    #[test]
    fn a_cache_mount_keeps_its_content_between_leases() {
        let (_dir, store) = store();
        let never = || false;
        let lease = store
            .cache_mount("/root/.cache", CacheSharing::Shared, &never, &mut mkdir)
            .unwrap();
        fs::write(lease.path().join("f"), "warm").unwrap();
        drop(lease);
        let mut init_ran = false;
        let lease = store
            .cache_mount("/root/.cache", CacheSharing::Locked, &never, &mut |p| {
                init_ran = true;
                mkdir(p)
            })
            .unwrap();
        assert!(!init_ran, "an existing cache is not made again");
        assert_eq!(fs::read_to_string(lease.path().join("f")).unwrap(), "warm");
        let listed = store.cache_mounts().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, "/root/.cache");
        assert_eq!(listed[0].size, 4);
    }

    #[test]
    fn shared_leases_share_locked_waits_private_copies() {
        let (_dir, store) = store();
        let never = || false;
        let a = store
            .cache_mount("x", CacheSharing::Shared, &never, &mut mkdir)
            .unwrap();
        let b = store
            .cache_mount("x", CacheSharing::Shared, &never, &mut mkdir)
            .unwrap();
        assert_eq!(a.path(), b.path());
        // A private lease while instance 0 is in use gets another directory.
        let p = store
            .cache_mount("x", CacheSharing::Private, &never, &mut mkdir)
            .unwrap();
        assert_ne!(p.path(), a.path());
        // A locked lease waits for the shared ones: cancelled while waiting.
        let err = store
            .cache_mount("x", CacheSharing::Locked, &|| true, &mut mkdir)
            .unwrap_err();
        assert!(matches!(err, CacheMountError::Canceled { .. }), "{err}");
        drop((a, b));
        let locked = store
            .cache_mount("x", CacheSharing::Locked, &|| true, &mut mkdir)
            .unwrap();
        assert!(locked.path().ends_with("0"));
    }

    #[test]
    fn peek_makes_nothing_and_refresh_replaces_only_a_stale_free_instance() {
        let (_dir, store) = store();
        let never = || false;
        assert!(store.peek_cache_mount("c", &never).unwrap().is_none());
        let mut fill = |p: &Path| -> Result<(), Cause> {
            fs::create_dir(p)?;
            fs::write(p.join("new"), "n")?;
            Ok(())
        };
        assert!(
            !store
                .refresh_cache_mount("c", &mut |_| true, &mut fill)
                .unwrap()
        );
        assert!(store.cache_mounts().unwrap().is_empty(), "nothing made");
        let lease = store
            .cache_mount("c", CacheSharing::Shared, &never, &mut mkdir)
            .unwrap();
        fs::write(lease.path().join("old"), "o").unwrap();
        fs::write(store.cache_mount_note("c"), "note").unwrap();
        // Held by a step: left alone, stale or not.
        assert!(
            !store
                .refresh_cache_mount("c", &mut |_| true, &mut fill)
                .unwrap()
        );
        drop(lease);
        let mut asked = None;
        let fresh = store
            .refresh_cache_mount(
                "c",
                &mut |p| {
                    asked = Some(p.join("old").exists());
                    false
                },
                &mut fill,
            )
            .unwrap();
        assert!(!fresh && asked == Some(true), "asked about the present one");
        assert!(
            store
                .refresh_cache_mount("c", &mut |_| true, &mut fill)
                .unwrap()
        );
        let peeked = store.peek_cache_mount("c", &never).unwrap().unwrap();
        assert!(peeked.path().join("new").exists() && !peeked.path().join("old").exists());
        assert!(
            !store.cache_mount_note("c").exists(),
            "the note went with it"
        );
        assert_eq!(store.cache_mounts().unwrap()[0].instances, 1);
        assert_eq!(fs::read_dir(store.staging().dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_failed_init_leaves_no_cache_and_prune_spares_held_ones() {
        let (_dir, store) = store();
        let never = || false;
        let err = store
            .cache_mount("bad", CacheSharing::Shared, &never, &mut |_| {
                Err("seed missing".into())
            })
            .unwrap_err();
        assert!(crate::error::chain(&err).contains("seed missing"));
        let held = store
            .cache_mount("held", CacheSharing::Shared, &never, &mut mkdir)
            .unwrap();
        let free = store
            .cache_mount("free", CacheSharing::Shared, &never, &mut mkdir)
            .unwrap();
        fs::write(free.path().join("data"), "12345").unwrap();
        drop(free);
        let report = store.prune_cache_mounts().unwrap();
        // "bad" has no instance but its id directory goes too; "held" stays.
        assert_eq!(report.removed, 2);
        let left: Vec<String> = store
            .cache_mounts()
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(left, ["held"]);
        assert!(held.path().is_dir());
    }
}
