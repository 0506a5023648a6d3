//! The store is private to its owner, as docker's `/var/lib/docker` is: its root and kiln's own
//! directories are `0700`, its own files (blobs, `index.json`, records, locks) `0600`, so no other
//! local user can read an image's layers or configs, or even list what is stored.
//!
//! A new store is made so ([`crate::sys::atomic::create_private_dir_all`] for directories; new
//! files take `0600` in a private directory, [`crate::sys::atomic::file_mode_in`]). A store made
//! by an older kiln (`0755` directories, `0644` files) is tightened when it is opened: the root's
//! mode is the marker, so the walk runs once: [`make_private`] fixes everything below first and
//! the root last, and a walk cut short runs again on the next open.
//!
//! Image content keeps its own modes: an unpacked layer (`snapshots/<hex>/`), a container's or a
//! step's upper and work directories and `/etc` files, a cache mount's directory, a git checkout
//! are what a container sees, where `/` must stay `0755` and `/etc/hosts` `0644` for a non-root
//! user inside. Only the directories that hold them are made private: others cannot reach them.
//! The sandbox reaches them as root (or, rootless, as the store's owner, whom a user namespace
//! makes its root), before it leaves the host's view of the filesystem.

use crate::sys::FsError;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// The group and other permission bits a private entry must not have.
const OPEN_BITS: u32 = 0o077;

/// What a walk does below a directory of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Below {
    /// Everything is kiln's own: tighten all of it.
    Own,
    /// Its entries are image content (layer roots, staging): tighten the directory only.
    Content,
    /// Containers or cache mounts: one private directory per entry, in which files are kiln's
    /// own (records, ids, locks) and directories content (upper, work, the mount itself), as
    /// are the files a container's `/etc` binds (`hosts`, `resolv.conf`, `hostname`).
    PerEntry,
    /// `cache/`: everything is kiln's own but git's directories, whose checkouts are content.
    Cache,
}

/// Whether the store at `root` is private: the root grants its group and others nothing.
pub(super) fn is_private(root: &Path) -> Result<bool, FsError> {
    let meta = fs::metadata(root).map_err(|e| FsError::new("inspect", root, e))?;
    Ok(meta.permissions().mode() & OPEN_BITS == 0)
}

/// Makes the store at `root` private when its root is not (see the module documentation).
/// Returns how many entries were tightened (0 for a store that already was private).
pub(super) fn make_private(root: &Path) -> Result<usize, FsError> {
    if is_private(root)? {
        return Ok(0);
    }
    let mut changed = 0;
    for entry in fs::read_dir(root).map_err(|e| FsError::new("read directory", root, e))? {
        let entry = entry.map_err(|e| FsError::new("read directory", root, e))?;
        let below = match entry.file_name().to_str() {
            Some("snapshots" | "tmp") => Below::Content,
            Some("containers" | "cache-mounts") => Below::PerEntry,
            Some("cache") => Below::Cache,
            _ => Below::Own,
        };
        changed += tighten(&entry.path(), below)?;
    }
    changed += tighten_one(root)?;
    Ok(changed)
}

/// Tightens `path` (a file or directory of the store) and, as `below` says, what it holds.
fn tighten(path: &Path, below: Below) -> Result<usize, FsError> {
    let Some(meta) = symlink_metadata(path)? else {
        return Ok(0);
    };
    if meta.is_symlink() {
        return Ok(0);
    }
    let mut changed = tighten_one(path)?;
    if !meta.is_dir() || below == Below::Content {
        return Ok(changed);
    }
    for entry in fs::read_dir(path).map_err(|e| FsError::new("read directory", path, e))? {
        let entry = entry.map_err(|e| FsError::new("read directory", path, e))?;
        let child = entry.path();
        changed += match below {
            Below::Own => tighten(&child, Below::Own)?,
            Below::Cache if entry.file_name() == "git" => tighten(&child, Below::PerEntry)?,
            Below::Cache => tighten(&child, Below::Own)?,
            Below::PerEntry => tighten_entry(&child)?,
            Below::Content => 0,
        };
    }
    Ok(changed)
}

/// One container's (or cache mount's, or git's `repos`/`checkouts`) directory: private itself;
/// of what it holds, kiln's own files are tightened, directories and `/etc` files left alone.
fn tighten_entry(path: &Path) -> Result<usize, FsError> {
    /// Files of a container directory that a container's `/etc` binds: content.
    const ETC_FILES: [&str; 3] = ["hosts", "resolv.conf", "hostname"];
    let Some(meta) = symlink_metadata(path)? else {
        return Ok(0);
    };
    if meta.is_symlink() {
        return Ok(0);
    }
    let mut changed = tighten_one(path)?;
    if !meta.is_dir() {
        return Ok(changed);
    }
    for entry in fs::read_dir(path).map_err(|e| FsError::new("read directory", path, e))? {
        let entry = entry.map_err(|e| FsError::new("read directory", path, e))?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        let content = entry
            .file_name()
            .to_str()
            .is_some_and(|name| ETC_FILES.contains(&name));
        if is_file && !content {
            changed += tighten_one(&entry.path())?;
        }
    }
    Ok(changed)
}

/// Removes the group and other bits of one file or directory (symlinks are skipped: their
/// mode means nothing and chmod would follow them). Returns 1 when it changed something.
fn tighten_one(path: &Path) -> Result<usize, FsError> {
    let Some(meta) = symlink_metadata(path)? else {
        return Ok(0);
    };
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_symlink() || mode & OPEN_BITS == 0 {
        return Ok(0);
    }
    match fs::set_permissions(path, fs::Permissions::from_mode(mode & !OPEN_BITS)) {
        Ok(()) => Ok(1),
        // Removed meanwhile by another kiln (a prune, a finished step): nothing to protect.
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(FsError::new("make private (chmod)", path, err)),
    }
}

fn symlink_metadata(path: &Path) -> Result<Option<fs::Metadata>, FsError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(FsError::new("inspect", path, err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn an_old_store_is_tightened_and_content_keeps_its_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let made = [
            "blobs/sha256/",
            "snapshots/aa/bin/",
            "containers/c1/upper/etc/",
            "containers/c1/work/",
            "cache-mounts/m1/0/",
            "cache/records/",
            "cache/git/checkouts/k1/tree/",
            "tmp/1-2-3.upper/upper/",
        ];
        for path in made {
            fs::create_dir_all(root.join(path)).unwrap();
        }
        let files = [
            "index.json",
            "gc.lock",
            "blobs/sha256/ab",
            "snapshots/aa/bin/tool",
            "containers/c1/container.json",
            "containers/c1/hosts",
            "containers/c1/upper/etc/passwd",
            "cache-mounts/m1/id",
            "cache-mounts/m1/0/data",
            "cache/records/r.json",
            "cache/git/checkouts/k1/tree/run.sh",
        ];
        for file in files {
            fs::write(root.join(file), "x").unwrap();
        }
        symlink("/etc/passwd", root.join("snapshots/aa/bin/link")).unwrap();
        for path in made.iter().chain(&files) {
            let mut at = root.join(path);
            while at.starts_with(&root) {
                chmod(&at, if at.is_dir() { 0o755 } else { 0o644 });
                at.pop();
            }
        }
        chmod(&root.join("snapshots/aa/bin/tool"), 0o4755);
        assert!(make_private(&root).unwrap() > 10);
        for private in [
            "",
            "blobs",
            "blobs/sha256",
            "snapshots",
            "containers",
            "containers/c1",
            "cache-mounts",
            "cache-mounts/m1",
            "cache",
            "cache/records",
            "cache/git",
            "cache/git/checkouts",
            "tmp",
        ] {
            assert_eq!(mode(&root.join(private)), 0o700, "{private}");
        }
        for private in [
            "index.json",
            "gc.lock",
            "blobs/sha256/ab",
            "containers/c1/container.json",
            "cache-mounts/m1/id",
            "cache/records/r.json",
        ] {
            assert_eq!(mode(&root.join(private)), 0o600, "{private}");
        }
        for (content, want) in [
            ("snapshots/aa", 0o755),
            ("snapshots/aa/bin/tool", 0o4755),
            ("containers/c1/upper", 0o755),
            ("containers/c1/hosts", 0o644),
            ("containers/c1/upper/etc/passwd", 0o644),
            ("cache-mounts/m1/0", 0o755),
            ("cache/git/checkouts/k1", 0o755),
            ("cache/git/checkouts/k1/tree/run.sh", 0o644),
            ("tmp/1-2-3.upper", 0o755),
        ] {
            assert_eq!(mode(&root.join(content)), want, "{content}");
        }
        assert_eq!(
            fs::read_link(root.join("snapshots/aa/bin/link")).unwrap(),
            Path::new("/etc/passwd")
        );
        // The root is the marker: a private store is not walked again.
        chmod(&root.join("index.json"), 0o644);
        assert_eq!(make_private(&root).unwrap(), 0);
        assert_eq!(mode(&root.join("index.json")), 0o644);
    }
}
