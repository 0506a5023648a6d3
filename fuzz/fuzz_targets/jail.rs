//! A fresh directory for one fuzz input, with a sentinel beside it, to check that whatever the
//! input did stayed inside (shared by `layer_apply` and `archive_load` through `#[path]`).
//!
//! Layout: `PARENT/root` (handed to the code under test) and `PARENT/sentinel/keep`. An entry
//! that climbs out of `root` (`../x`, a symlink followed out, a hard link to a sibling) lands in
//! PARENT or the sentinel, which [`Jail::check`] finds. Absolute paths that escape would land
//! elsewhere on the machine: fuzz/README.md runs these targets in a mount namespace whose `/` is
//! read-only so that such a bug fails loudly instead of writing there.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const SENTINEL: &[u8] = b"nothing may touch this file\n";

pub struct Jail {
    parent: tempfile::TempDir,
    root: PathBuf,
    /// The sentinel directory's and file's metadata as created.
    sentinel_meta: [Meta; 2],
}

/// What a chmod, chown, write, hard link or replacement through an escape would change.
#[derive(Debug, PartialEq, Eq)]
struct Meta {
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    size: u64,
    mtime: (i64, i64),
}

fn meta(path: &Path) -> Meta {
    let m = fs::symlink_metadata(path).expect("stat a sentinel");
    Meta {
        ino: m.ino(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        nlink: m.nlink(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
    }
}

impl Jail {
    /// A jail whose `root` exists (`create_root`) or is left for the code under test to make.
    pub fn new(create_root: bool) -> Jail {
        let parent = tempfile::Builder::new()
            .prefix("kiln-fuzz-")
            .tempdir()
            .expect("create the jail's parent");
        let root = parent.path().join("root");
        if create_root {
            fs::create_dir(&root).expect("create the jail's root");
        }
        let sentinel = parent.path().join("sentinel");
        fs::create_dir(&sentinel).expect("create the sentinel directory");
        let keep = sentinel.join("keep");
        fs::write(&keep, SENTINEL).expect("write the sentinel file");
        let sentinel_meta = [meta(&sentinel), meta(&keep)];
        Jail {
            parent,
            root,
            sentinel_meta,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Panics when anything beside the root was created, changed or removed, or when the root
    /// itself is no longer a real directory (replaced by a symlink, say).
    pub fn check(&self) {
        let names = |dir: &Path| -> BTreeSet<String> {
            fs::read_dir(dir)
                .expect("list a jail directory")
                .map(|entry| {
                    entry
                        .expect("read a jail directory entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        };
        let expected: BTreeSet<String> = ["root", "sentinel"].map(String::from).into();
        let parent = self.parent.path();
        assert_eq!(
            names(parent),
            expected,
            "something was created beside the root"
        );
        let root = fs::symlink_metadata(&self.root).expect("stat the root");
        assert!(root.is_dir(), "the root is no longer a directory");
        let sentinel = parent.join("sentinel");
        assert_eq!(
            names(&sentinel),
            BTreeSet::from(["keep".to_string()]),
            "the sentinel directory changed"
        );
        let keep = sentinel.join("keep");
        assert_eq!(
            [meta(&sentinel), meta(&keep)],
            self.sentinel_meta,
            "the sentinel's metadata changed (a link, chmod, chown or write from inside the root?)"
        );
        assert_eq!(fs::read(&keep).expect("read the sentinel file"), SENTINEL);
    }
}
