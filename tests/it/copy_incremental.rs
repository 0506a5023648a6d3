//! Incremental COPY (`kiln::builder::steps::copy::copy_reusing`): a COPY from the context that ran
//! before links its unchanged files from the previous snapshot, and the result is the tree and
//! the layer a full copy gives, whatever changed in between; nothing outside the previous
//! snapshot is ever linked. End to end, a rebuild after a one-file change gives the layer a
//! build in a fresh store gives, and shares the unchanged files with the previous snapshot; a
//! rebuild with nothing changed writes nothing to the store.

use crate::support;
use crate::support::kiln;
use kiln::builder::steps::copy::{CopyRequest, CopySource, PreviousCopy, copy, copy_reusing};
use kiln::cache::{ContentSum, StatCache, checksum_paths};
use kiln::frontend::context::BuildContext;
use kiln::layer::write_layer;
use kiln::solver::Cancel;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};

/// The modification time every prepared file gets (whole seconds, as a tar extraction gives).
const MTIME: i64 = 1_600_000_000;

/// A file, a file that stays the same, a nested file, a symlink, a file that may become a
/// directory and a directory that may become a file.
const CONTEXT: &[(&str, &str)] = &[
    ("a.txt", "alpha"),
    ("b.txt", "bravo"),
    ("dir/c.txt", "charlie"),
    ("dir/sub/d.txt", "delta"),
    ("e.txt", "echo"),
    ("f/g.txt", "golf"),
];

fn set_mtime(path: &Path) {
    let time = nix::sys::time::TimeSpec::new(MTIME, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Writes `path` with `content` and the fixed mtime.
fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    set_mtime(path);
}

/// Sets the fixed mtime on every entry below `root`, deepest first (so a directory keeps it).
fn settle(root: &Path) {
    let mut all = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            all.push(path);
        }
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in all {
        set_mtime(&path);
    }
}

fn make_context(dir: &Path) {
    for (path, content) in CONTEXT {
        write(&dir.join(path), content);
    }
    symlink("a.txt", dir.join("link")).unwrap();
    settle(dir);
}

/// The checksum of every entry of the context at `dir`.
fn checksum(dir: &Path, stat_dir: &Path) -> ContentSum {
    let context = BuildContext::open(dir, None).unwrap();
    let paths: Vec<String> = context.entries().iter().map(|e| e.path.clone()).collect();
    checksum_paths(
        dir,
        &paths,
        context.owners(),
        &StatCache::load(stat_dir, dir),
    )
    .unwrap()
}

/// `COPY . /` of the context at `dir` into the fresh directory `upper`, linking from
/// `previous` when given.
fn copy_context(dir: &Path, upper: &Path, previous: Option<&PreviousCopy<'_>>) {
    fs::create_dir(upper).unwrap();
    let context = BuildContext::open(dir, None).unwrap();
    let request = CopyRequest {
        sources: vec![".".to_string()],
        dest: "/".to_string(),
        workdir: "/".to_string(),
        ..CopyRequest::default()
    };
    let source = CopySource::Context { context: &context };
    match previous {
        Some(_) => copy_reusing(&request, &source, &[], upper, &Cancel::new(), previous),
        None => copy(&request, &source, &[], upper, &Cancel::new()),
    }
    .unwrap();
}

fn layer(upper: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_layer(upper, &mut bytes).unwrap();
    bytes
}

fn inode(path: &Path) -> (u64, u64) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.dev(), meta.ino())
}

/// How a case changes the context after the first copy.
type Change = fn(&Path);

#[test]
fn an_incremental_copy_gives_the_tree_and_layer_of_a_full_copy() {
    if support::root().is_none() {
        return;
    }
    // (name, change, whether the previous copy may lend files, the files that must be copied
    // again rather than linked when it may)
    let cases: &[(&str, Change, bool, &[&str])] = &[
        (
            "content changed",
            |d| write(&d.join("a.txt"), "ALPHA, longer"),
            true,
            &["a.txt"],
        ),
        (
            "content changed, size and mtime kept",
            |d| write(&d.join("a.txt"), "ALPHA"),
            true,
            &["a.txt"],
        ),
        (
            "mode changed",
            |d| {
                fs::set_permissions(d.join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
            },
            true,
            &["a.txt"],
        ),
        (
            "only touched (same checksum, new mtime)",
            |d| {
                let time = nix::sys::time::TimeSpec::new(MTIME + 5, 0);
                nix::sys::stat::utimensat(
                    nix::fcntl::AT_FDCWD,
                    &d.join("a.txt"),
                    &time,
                    &time,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .unwrap();
            },
            true,
            &["a.txt"],
        ),
        (
            "xattr added (same checksum)",
            |d| {
                let path = std::ffi::CString::new(d.join("a.txt").to_str().unwrap()).unwrap();
                // SAFETY: NUL-terminated strings and a valid value buffer.
                let result = unsafe {
                    libc::lsetxattr(
                        path.as_ptr(),
                        c"user.kiln".as_ptr(),
                        b"1".as_ptr().cast(),
                        1,
                        0,
                    )
                };
                assert_eq!(result, 0, "lsetxattr: {}", std::io::Error::last_os_error());
            },
            true,
            &["a.txt"],
        ),
        (
            "file added",
            |d| write(&d.join("dir/new.txt"), "new"),
            false,
            &[],
        ),
        (
            "file removed",
            |d| fs::remove_file(d.join("b.txt")).unwrap(),
            false,
            &[],
        ),
        (
            "symlink target changed",
            |d| {
                fs::remove_file(d.join("link")).unwrap();
                symlink("b.txt", d.join("link")).unwrap();
            },
            false,
            &[],
        ),
        (
            "file became a directory",
            |d| {
                fs::remove_file(d.join("e.txt")).unwrap();
                write(&d.join("e.txt/inner"), "echo");
            },
            false,
            &[],
        ),
        (
            "directory became a file",
            |d| {
                fs::remove_dir_all(d.join("f")).unwrap();
                write(&d.join("f"), "golf");
            },
            false,
            &[],
        ),
    ];
    let mut failures = Vec::new();
    for (name, change, reusable, copied) in cases {
        let base = tempfile::tempdir().unwrap();
        let (ctx, stat) = (base.path().join("ctx"), base.path().join("stat"));
        make_context(&ctx);
        let before = checksum(&ctx, &stat);
        let previous_dir = base.path().join("previous");
        copy_context(&ctx, &previous_dir, None);

        change(&ctx);
        settle_dirs(&ctx);
        let now = checksum(&ctx, &stat);
        let full = base.path().join("full");
        copy_context(&ctx, &full, None);
        let unchanged = now.unchanged_since(&before);
        if unchanged.is_some() != *reusable {
            failures.push(format!("{name}: reusable {:?}", unchanged.is_some()));
            continue;
        }
        let incremental = base.path().join("incremental");
        let unchanged = unchanged.unwrap_or_default();
        let previous = PreviousCopy {
            snapshot: &previous_dir,
            unchanged: &unchanged,
        };
        copy_context(&ctx, &incremental, reusable.then_some(&previous));
        if layer(&full) != layer(&incremental) {
            failures.push(format!("{name}: the layers differ"));
        }
        if !reusable {
            continue;
        }
        for file in [
            "a.txt",
            "b.txt",
            "dir/c.txt",
            "dir/sub/d.txt",
            "e.txt",
            "f/g.txt",
        ] {
            let linked = inode(&incremental.join(file)) == inode(&previous_dir.join(file));
            if linked == copied.contains(&file) {
                failures.push(format!("{name}: {file} linked: {linked}"));
            }
        }
        if inode(&incremental.join("link")) == inode(&previous_dir.join("link")) {
            failures.push(format!("{name}: a symlink was linked"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(cases.len(), 10);
}

/// Puts the fixed mtime back on the context's directories (a change touches its parent).
fn settle_dirs(root: &Path) {
    let mut dirs = vec![root.to_path_buf()];
    let mut index = 0;
    while let Some(dir) = dirs.get(index).cloned() {
        index += 1;
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                dirs.push(path);
            }
        }
    }
    for dir in dirs.iter().rev() {
        set_mtime(dir);
    }
}

#[test]
fn nothing_outside_the_previous_snapshot_is_linked() {
    if support::root().is_none() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let ctx = base.path().join("ctx");
    make_context(&ctx);
    let previous_dir = base.path().join("previous");
    copy_context(&ctx, &previous_dir, None);
    // The previous snapshot's `dir` swapped for a symlink to a look-alike outside it, holding
    // files with the very size, mode, owner and mtime a copy would give.
    let outside = base.path().join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    write(&outside.join("c.txt"), "charlie");
    write(&outside.join("sub/d.txt"), "delta");
    fs::remove_dir_all(previous_dir.join("dir")).unwrap();
    symlink(&outside, previous_dir.join("dir")).unwrap();
    // And the previous root itself reached through a symlink stays usable: it is the caller's
    // trusted path, like a layer directory.
    let unchanged: HashSet<String> = ["a.txt", "dir/c.txt", "dir/sub/d.txt"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let previous = PreviousCopy {
        snapshot: &previous_dir,
        unchanged: &unchanged,
    };
    let incremental = base.path().join("incremental");
    copy_context(&ctx, &incremental, Some(&previous));
    for (copied, outside_file) in [
        ("dir/c.txt", outside.join("c.txt")),
        ("dir/sub/d.txt", outside.join("sub/d.txt")),
    ] {
        assert_ne!(
            inode(&incremental.join(copied)),
            inode(&outside_file),
            "{copied}"
        );
        assert_eq!(fs::symlink_metadata(&outside_file).unwrap().nlink(), 1);
    }
    assert_eq!(
        inode(&incremental.join("a.txt")),
        inode(&previous_dir.join("a.txt")),
        "a.txt, inside the previous snapshot, is linked"
    );
    let full = base.path().join("full");
    copy_context(&ctx, &full, None);
    assert_eq!(layer(&full), layer(&incremental));
}

/// The snapshot directory of the layer with `diff_id` in the store at `root`.
fn snapshot(root: &Path, diff_id: &str) -> PathBuf {
    root.join("snapshots")
        .join(diff_id.trim_start_matches("sha256:"))
}

/// The diff IDs of `image` in the store at `root`.
fn diff_ids(root: &Path, image: &str) -> Vec<String> {
    let out = kiln()
        .root(root)
        .args(["inspect", image])
        .run()
        .success()
        .stdout_str();
    let all: serde_json::Value = serde_json::from_str(&out).unwrap();
    all[0]["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn build(root: &Path, context: &Path) {
    kiln()
        .root(root)
        .args(["build", "-t", "inc", context.to_str().unwrap()])
        .run()
        .success();
}

#[test]
fn a_rebuild_after_a_one_file_change_links_the_rest_and_gives_a_fresh_builds_layer() {
    if support::root().is_none() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let ctx = base.path().join("ctx");
    make_context(&ctx);
    write(&ctx.join("Dockerfile"), "FROM scratch\nCOPY . /\n");
    settle_dirs(&ctx);
    let store = base.path().join("store");
    build(&store, &ctx);
    let first = diff_ids(&store, "inc");

    write(&ctx.join("dir/c.txt"), "CHARLIE, changed");
    settle_dirs(&ctx);
    build(&store, &ctx);
    let second = diff_ids(&store, "inc");
    assert_ne!(first, second);

    let fresh = base.path().join("fresh");
    build(&fresh, &ctx);
    assert_eq!(second, diff_ids(&fresh, "inc"), "the layer of a full copy");

    let (old, new) = (
        snapshot(&store, first.last().unwrap()),
        snapshot(&store, second.last().unwrap()),
    );
    assert_eq!(inode(&old.join("b.txt")), inode(&new.join("b.txt")));
    assert_ne!(inode(&old.join("dir/c.txt")), inode(&new.join("dir/c.txt")));
    assert_eq!(
        fs::read_to_string(new.join("dir/c.txt")).unwrap(),
        "CHARLIE, changed"
    );
}

/// Every entry below `dir` with its size and modification time (nanoseconds), sorted.
fn state(dir: &Path) -> Vec<(PathBuf, u64, i128)> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
            all.push((path, meta.len(), mtime));
        }
    }
    all.sort();
    all
}

#[test]
fn an_all_cached_rebuild_writes_nothing_to_the_store() {
    if support::root().is_none() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let ctx = base.path().join("ctx");
    make_context(&ctx);
    write(&ctx.join("Dockerfile"), "FROM scratch\nCOPY . /\n");
    // Files changed in the last second or two are hashed on every build and never remembered
    // (racily clean, see kiln::cache::checksum); past that, a build remembers them all.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let store = base.path().join("store");
    build(&store, &ctx);
    let before = state(&store);
    build(&store, &ctx);
    let after = state(&store);
    for part in ["cache/", "snapshots/", "blobs/", "index.json"] {
        assert!(
            before.iter().any(|(path, ..)| path
                .strip_prefix(&store)
                .is_ok_and(|p| p.starts_with(part.trim_end_matches('/')))),
            "the store has no {part}"
        );
    }
    assert_eq!(
        before, after,
        "the rebuild wrote to the store (cache records, stat cache, snapshots, blobs or index.json)"
    );
}
