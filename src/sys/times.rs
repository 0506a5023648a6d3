//! File times set on whole trees.

use crate::sys::FsError;
use crate::sys::atomic::IoContext as _;
use nix::sys::stat::{UtimensatFlags, utimensat};
use std::fs;
use std::path::Path;

/// Sets the access and modification times of everything below and at `dir` to `seconds`,
/// symlinks themselves (never what they point at), directories after their contents (so a
/// directory's own time is not changed again by setting its children's). What BuildKit does to
/// a git checkout (`resetSnapshotMtimes`) and to a local or tar export with an epoch.
pub fn set_tree_times(dir: &Path, seconds: i64) -> Result<(), FsError> {
    let time = nix::sys::time::TimeSpec::new(seconds, 0);
    let set = |path: &Path| {
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &time,
            &time,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|errno| FsError::new("set the times of", path, errno.into()))
    };
    for entry in fs::read_dir(dir).fs("read directory", dir)? {
        let entry = entry.fs("read directory", dir)?;
        let path = entry.path();
        // `file_type` does not follow a symlink: a link to a directory is set as a link.
        if entry.file_type().fs("inspect", &path)?.is_dir() {
            set_tree_times(&path, seconds)?;
        } else {
            set(&path)?;
        }
    }
    set(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn every_entry_gets_the_time_and_links_are_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("target");
        fs::write(&target, "x").unwrap();
        let before = fs::metadata(&target).unwrap().mtime();
        let tree = tempfile::tempdir().unwrap();
        fs::create_dir_all(tree.path().join("a/b")).unwrap();
        fs::write(tree.path().join("a/b/f"), "f").unwrap();
        std::os::unix::fs::symlink(&target, tree.path().join("a/link")).unwrap();
        set_tree_times(tree.path(), 1_000_000).unwrap();
        for path in ["", "a", "a/b", "a/b/f", "a/link"] {
            let meta = fs::symlink_metadata(tree.path().join(path)).unwrap();
            assert_eq!(meta.mtime(), 1_000_000, "{path:?}");
        }
        assert_eq!(fs::metadata(&target).unwrap().mtime(), before);
    }
}
