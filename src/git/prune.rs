//! What `kiln df` shows of the git cache and what `kiln prune` removes of it, as `docker builder
//! prune` removes BuildKit's git sources (`source.git.checkout` records no build holds).
//!
//! `<store>/cache/git/` holds `repos/<id>/` (a bare repository per remote, `repos/<id>.lock`
//! held exclusively while a fetch writes it) and `checkouts/<key>/` (`checkouts/<key>.lock`
//! held shared by each [`super::Checkout`]). Every reader holds a store lease, so a prune,
//! which holds the store's [`Collection`], never runs while one reads; it still skips an entry
//! whose lock someone holds. An entry is renamed into the store's staging before it is
//! deleted, so a prune killed half-way leaves no half-deleted checkout or repository at its
//! place (the staging entry is removed as the store removes a dead process's leftovers).

use super::{GitCache, GitError};
use crate::store::{Collection, StoreError, Usage};
use crate::sys::FsError;
use crate::sys::atomic::{IoContext as _, remove_tree, tree_size};
use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The git cache's part of `kiln df`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GitUsage {
    /// Bare repositories, one per remote (active: a fetch is writing it).
    pub repositories: Usage,
    /// Checkouts, one per commit and options (active: a build is reading it).
    pub checkouts: Usage,
}

/// What [`GitCache::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GitPrune {
    pub repositories: usize,
    pub checkouts: usize,
    /// Bytes of file content freed.
    pub reclaimed: u64,
}

/// A directory of the cache and its lock file.
struct Entry {
    dir: PathBuf,
    lock: PathBuf,
}

impl GitCache {
    /// The repositories and checkouts in the store, their sizes and which are in use now.
    pub fn usage(&self) -> Result<GitUsage, GitError> {
        let mut usage = GitUsage::default();
        for (kind, counts) in [
            ("repos", &mut usage.repositories),
            ("checkouts", &mut usage.checkouts),
        ] {
            for entry in entries(&self.dir.join(kind))? {
                let size = tree_size(&entry.dir);
                counts.total += 1;
                counts.size += size;
                if held(&entry.lock)? {
                    counts.active += 1;
                } else {
                    counts.reclaimable += size;
                }
            }
        }
        Ok(usage)
    }

    /// Removes every checkout and repository no one holds (`held` guarantees no build runs:
    /// see the module documentation). The next build that needs one fetches it again.
    pub fn prune(&self, held: &Collection) -> Result<GitPrune, GitError> {
        if held.root() != self.store.root() {
            return Err(GitError::Lease(StoreError::Conflict(
                "the collection held is of another store".into(),
            )));
        }
        let mut report = GitPrune::default();
        for kind in ["checkouts", "repos"] {
            let dir = self.dir.join(kind);
            for entry in entries(&dir)? {
                let lock = fs::OpenOptions::new()
                    .mode(0o600)
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&entry.lock)
                    .fs("open", &entry.lock)?;
                match lock.try_lock() {
                    Ok(()) => {}
                    Err(TryLockError::WouldBlock) => continue,
                    Err(TryLockError::Error(err)) => {
                        return Err(FsError::new("lock", &entry.lock, err).into());
                    }
                }
                let size = tree_size(&entry.dir);
                let doomed = self.store.staging().new_path("git-pruned");
                fs::rename(&entry.dir, &doomed).fs("rename", &entry.dir)?;
                remove_tree(&doomed)?;
                // Unlinked while held: a newcomer needs a lease, so it opens a new file after
                // the collection ends.
                remove_file(&entry.lock)?;
                if kind == "checkouts" {
                    report.checkouts += 1;
                } else {
                    report.repositories += 1;
                }
                report.reclaimed += size;
            }
            // Lock files whose directory is gone (a prune killed between the two removals, or
            // a checkout that failed to be made).
            for path in read_dir(&dir)? {
                if path.extension().is_some_and(|e| e == "lock")
                    && !path.with_extension("").exists()
                {
                    remove_file(&path)?;
                }
            }
        }
        Ok(report)
    }
}

/// The directories under `dir` (none when it does not exist), each with its lock file.
fn entries(dir: &Path) -> Result<Vec<Entry>, GitError> {
    let mut found = Vec::new();
    for path in read_dir(dir)? {
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            found.push(Entry {
                lock: path.with_extension("lock"),
                dir: path,
            });
        }
    }
    Ok(found)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, GitError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(FsError::new("read directory", dir, err).into()),
    };
    let mut paths = Vec::new();
    for entry in listing {
        paths.push(entry.fs("read directory", dir)?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Whether someone holds the lock file at `path` (taken and dropped at once when not).
fn held(path: &Path) -> Result<bool, GitError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(FsError::new("open", path, err).into()),
    };
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(err)) => Err(FsError::new("lock", path, err).into()),
    }
}

fn remove_file(path: &Path) -> Result<(), GitError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(FsError::new("remove", path, err).into()),
    }
}
