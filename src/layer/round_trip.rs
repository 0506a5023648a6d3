//! Behaviour of apply and diff together: round trips, whiteouts in both modes, determinism.

use super::*;
use crate::oci::Digest;
use crate::sys::xattr;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat};
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

/// `true` when running as root; otherwise prints a skip notice (and fails under `CI=true`, which
/// runs as root), like the integration tests' `support::root`.
#[allow(clippy::disallowed_macros)] // A test's skip notice, not kiln's output.
fn root_or_skip() -> bool {
    if crate::sys::privilege::current().is_real_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("root is required when CI=true");
    }
    eprintln!("notice: skipping, root (uid 0) is absent (it is required when CI=true)");
    false
}

/// Options for `whiteouts`, owning entries as root does when running as root.
fn options(whiteouts: Whiteouts) -> ApplyOptions {
    ApplyOptions {
        whiteouts,
        max_bytes: 64 << 20,
        same_owner: crate::sys::privilege::current().can_chown(),
        device_nodes: crate::sys::privilege::current().can_make_devices(),
        user_xattr: false,
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let parent = nix::fcntl::open(
        path.parent().unwrap(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    let name = CString::new(name).unwrap();
    xattr::set_child(parent.as_fd(), path.file_name().unwrap(), &name, value).unwrap();
}

fn chown(path: &Path, uid: u32, gid: u32) {
    fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Gives every entry under `dir` a distinct whole-second mtime, deepest first so directories
/// keep theirs.
fn set_times(dir: &Path) {
    let mut paths: Vec<PathBuf> = walk(dir);
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (index, path) in paths.iter().enumerate() {
        let time = TimeSpec::new(1_600_000_000 + index as i64 * 1000, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &time,
            &time,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}

/// Every path under `dir`, not following symlinks.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                pending.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

/// A description of every entry under `dir` (type and permission bits, owner, mtime, size,
/// contents, link target, device, all xattrs, and which paths are hardlinks of one another).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut paths = walk(dir);
    paths.sort();
    let mut first_of_inode: HashMap<u64, PathBuf> = HashMap::new();
    let mut out = BTreeMap::new();
    for path in paths {
        let relative = path.strip_prefix(dir).unwrap().to_path_buf();
        let meta = fs::symlink_metadata(&path).unwrap();
        let contents = if meta.is_file() {
            format!("{:?}", String::from_utf8_lossy(&fs::read(&path).unwrap()))
        } else if meta.file_type().is_symlink() {
            format!("-> {:?}", fs::read_link(&path).unwrap())
        } else {
            String::new()
        };
        let xattrs: Vec<String> = xattr::list(&path)
            .unwrap()
            .into_iter()
            .map(|name| {
                let value = xattr::get(&path, &CString::new(name.clone()).unwrap()).unwrap();
                format!("{}={:?}", String::from_utf8_lossy(&name), value)
            })
            .collect();
        let link_group = if meta.is_dir() {
            relative.clone()
        } else {
            first_of_inode
                .entry(meta.ino())
                .or_insert_with(|| relative.clone())
                .clone()
        };
        // A whiteout's permission bits mean nothing to overlayfs; kiln creates them 0000.
        let mode = if meta.file_type().is_char_device() && meta.rdev() == 0 {
            meta.mode() & !0o7777
        } else {
            meta.mode()
        };
        out.insert(
            relative,
            format!(
                "mode {mode:o} owner {}:{} mtime {}.{} size {} rdev {} links-with {} {contents} xattrs {xattrs:?}",
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                meta.mtime_nsec(),
                if meta.is_dir() { 0 } else { meta.len() },
                meta.rdev(),
                link_group.display(),
            ),
        );
    }
    out
}

/// A tree with everything a layer can hold, as an overlay upper dir (whiteout, opaque dir).
fn rich_tree(dir: &Path) {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::write(dir.join("bin/busybox"), b"\x7fELF busybox").unwrap();
    fs::hard_link(dir.join("bin/busybox"), dir.join("bin/sh")).unwrap();
    fs::hard_link(dir.join("bin/busybox"), dir.join("bin/ls")).unwrap();
    fs::write(dir.join("bin/su"), "su").unwrap();
    chmod(&dir.join("bin/su"), 0o4755);
    fs::write(dir.join("bin/wall"), "wall").unwrap();
    chown(&dir.join("bin/wall"), 0, 5);
    chmod(&dir.join("bin/wall"), 0o2755);
    fs::write(dir.join("bin/ping"), "ping").unwrap();
    // VFS_CAP_REVISION_2 with the effective flag, CAP_NET_RAW (13) permitted.
    let capability = [
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    set_xattr(&dir.join("bin/ping"), "security.capability", &capability);
    chmod(&dir.join("bin/ping"), 0o755);
    fs::create_dir_all(dir.join("tmp")).unwrap();
    chmod(&dir.join("tmp"), 0o1777);
    fs::create_dir_all(dir.join("home/user")).unwrap();
    fs::write(dir.join("home/user/.profile"), "export A=1\n").unwrap();
    chown(&dir.join("home/user/.profile"), 1000, 1000);
    chmod(&dir.join("home/user/.profile"), 0o600);
    chown(&dir.join("home/user"), 1000, 1000);
    chmod(&dir.join("home/user"), 0o700);
    set_xattr(
        &dir.join("home/user"),
        "user.kiln.note",
        b"hello\0binary\xff",
    );
    set_xattr(&dir.join("home"), "trusted.kiln", b"t");
    symlink("usr/lib", dir.join("lib")).unwrap();
    symlink("/nonexistent/kiln/passwd", dir.join("etc/abs")).unwrap();
    symlink("nowhere", dir.join("dangling")).unwrap();
    chown(&dir.join("dangling"), 7, 8);
    let long_target = "t/".repeat(80) + "end";
    symlink(&long_target, dir.join("long-link")).unwrap();
    let long_dir = dir.join("d".repeat(90)).join("e".repeat(90));
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join("f".repeat(60)), "deep").unwrap();
    fs::create_dir_all(dir.join("dev")).unwrap();
    let device = |name: &str, kind: SFlag, mode: u32, major: u64, minor: u64| {
        mknod(
            &dir.join("dev").join(name),
            kind,
            Mode::from_bits_truncate(mode),
            makedev(major, minor),
        )
        .unwrap();
        chmod(&dir.join("dev").join(name), mode);
    };
    device("null", SFlag::S_IFCHR, 0o666, 1, 3);
    device("sda", SFlag::S_IFBLK, 0o660, 8, 0);
    device("fifo", SFlag::S_IFIFO, 0o644, 0, 0);
    mknod(
        &dir.join("etc/removed"),
        SFlag::S_IFCHR,
        Mode::empty(),
        makedev(0, 0),
    )
    .unwrap();
    fs::create_dir_all(dir.join("var/cache")).unwrap();
    fs::write(dir.join("var/cache/fresh"), "fresh").unwrap();
    set_xattr(&dir.join("var/cache"), "trusted.overlay.opaque", b"y");
    fs::write(dir.join("empty"), "").unwrap();
    set_times(dir);
}

fn write(dir: &Path) -> (Vec<u8>, AppliedLayer) {
    let mut tar = Vec::new();
    let written = write_layer(dir, &mut tar).unwrap();
    (tar, written)
}

#[test]
fn apply_of_write_layer_reproduces_the_tree_exactly() {
    if !root_or_skip() {
        return;
    }
    let (source, target) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    rich_tree(source.path());
    std::os::unix::net::UnixListener::bind(source.path().join("socket")).unwrap();

    let (tar, written) = write(source.path());
    assert_eq!(written.diff_id, Digest::of(&tar));
    assert_eq!(written.size, tar.len() as u64);
    let applied = apply_layer(&tar[..], target.path(), &options(Whiteouts::Overlay)).unwrap();
    assert_eq!(applied.diff_id, written.diff_id);
    assert_eq!(applied.size, written.size);
    assert_eq!((applied.skipped_devices, applied.skipped_xattrs), (0, 0));

    let mut expected = snapshot(source.path());
    expected
        .remove(Path::new("socket"))
        .expect("the socket was in the source");
    let found = snapshot(target.path());
    for (path, description) in &expected {
        assert_eq!(found.get(path), Some(description), "{}", path.display());
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");

    // And back: the applied tree writes the very same bytes.
    let (again, _) = write(target.path());
    assert!(again == tar, "the round trip changed the layer bytes");
}

#[test]
fn write_layer_is_deterministic_and_ignores_atime_and_creation_order() {
    let build = |dir: &Path, reverse: bool| {
        let mut names = vec!["a", "b", "c", "z"];
        if reverse {
            names.reverse();
        }
        for name in names {
            fs::create_dir_all(dir.join(name).join("sub")).unwrap();
            fs::write(dir.join(name).join("sub/file"), name).unwrap();
            symlink("sub/file", dir.join(name).join("link")).unwrap();
        }
        fs::hard_link(dir.join("a/sub/file"), dir.join("z/hard")).unwrap();
        set_times(dir);
    };
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    build(first.path(), false);
    build(second.path(), true);
    let (tar, layer) = write(first.path());
    assert_eq!(write(first.path()).1.diff_id, layer.diff_id);
    // Reading files and setting atimes changes nothing.
    fs::read(first.path().join("a/sub/file")).unwrap();
    let later = TimeSpec::new(1_900_000_000, 0);
    let keep = TimeSpec::new(0, libc::UTIME_OMIT);
    for path in walk(first.path()) {
        utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &later,
            &keep,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
    let (again, _) = write(first.path());
    assert!(again == tar, "atime changed the layer");
    // Neither does the order the entries were created in.
    assert_eq!(write(second.path()).1.diff_id, layer.diff_id);
}

#[test]
fn entries_are_in_path_order_with_parents_first() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), &["b/x", "a-c", "a/y", "a/b/z"]);
    let (tar, _) = write(dir.path());
    let mut archive = tar::Archive::new(&tar[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect();
    assert_eq!(
        names,
        ["a/", "a/b/", "a/b/z", "a/y", "a-c", "b/", "b/x"],
        "depth first, names in byte order"
    );
}

fn populate(dir: &Path, files: &[&str]) {
    for file in files {
        let path = dir.join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, file.as_bytes()).unwrap();
    }
}

/// A tar of `entries`: names ending in `/` are directories, others files holding their name.
fn tar_of(entries: &[&str]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for name in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_mtime(1_700_000_000);
        if name.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, name, &b""[..]).unwrap();
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(name.len() as u64);
            builder
                .append_data(&mut header, name, name.as_bytes())
                .unwrap();
        }
    }
    builder.into_inner().unwrap()
}

/// The relative paths under `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut paths: Vec<String> = walk(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect();
    paths.sort();
    paths
}

#[test]
fn apply_mode_whiteouts_delete_and_opaque_keeps_only_this_layer_wherever_the_marker_is() {
    let lower = [
        "a/",
        "a/old",
        "a/sub/",
        "a/sub/deep",
        "b/",
        "b/keep",
        "gone",
        "gone-dir/",
        "gone-dir/x",
        ".bashrc",
    ];
    let uppers: [&[&str]; 3] = [
        // Marker first, then this layer's entries.
        &[
            "a/.wh..wh..opq",
            "a/new",
            "a/sub/x",
            ".wh.gone",
            ".wh.gone-dir",
            ".wh..bashrc",
        ],
        // Marker after the entries it must keep, one of them in a lower directory.
        &[
            "a/new",
            "a/sub/x",
            "a/.wh..wh..opq",
            ".wh.gone",
            ".wh.gone-dir",
            ".wh..bashrc",
        ],
        // The same with a directory entry merging over the lower one.
        &[
            "a/",
            "a/sub/",
            "a/sub/x",
            "a/new",
            "a/.wh..wh..opq",
            ".wh.gone",
            ".wh.gone-dir",
            ".wh..bashrc",
            ".wh.not-there",
        ],
    ];
    for upper in uppers {
        let root = tempfile::tempdir().unwrap();
        let mut apply = options(Whiteouts::Apply);
        apply.same_owner = false;
        apply_layer(&tar_of(&lower)[..], root.path(), &apply).unwrap();
        apply_layer(&tar_of(upper)[..], root.path(), &apply).unwrap();
        assert_eq!(
            listing(root.path()),
            ["a", "a/new", "a/sub", "a/sub/x", "b", "b/keep"],
            "{upper:?}"
        );
    }
}

#[test]
fn overlay_mode_whiteouts_become_devices_and_opaque_xattrs() {
    if !root_or_skip() {
        return;
    }
    let upper = tar_of(&["d/.wh..wh..opq", "d/new", ".wh.gone", "e/.wh..hidden"]);
    for user_xattr in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let mut overlay = options(Whiteouts::Overlay);
        overlay.user_xattr = user_xattr;
        apply_layer(&upper[..], root.path(), &overlay).unwrap();
        for whiteout in ["gone", "e/.hidden"] {
            let meta = fs::symlink_metadata(root.path().join(whiteout)).unwrap();
            assert!(
                meta.file_type().is_char_device() && meta.rdev() == 0,
                "{whiteout}"
            );
        }
        let (set, unset) = if user_xattr {
            (c"user.overlay.opaque", c"trusted.overlay.opaque")
        } else {
            (c"trusted.overlay.opaque", c"user.overlay.opaque")
        };
        assert_eq!(xattr::get(&root.path().join("d"), set).unwrap(), b"y");
        assert!(xattr::get(&root.path().join("d"), unset).is_err());
        assert_eq!(
            listing(root.path()),
            ["d", "d/new", "e", "e/.hidden", "gone"]
        );

        // Written back, the whiteouts are `.wh.` entries again.
        let (tar, _) = write(root.path());
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "d/",
                "d/.wh..wh..opq",
                "d/new",
                "e/",
                "e/.wh..hidden",
                ".wh.gone"
            ]
        );
    }
}

#[test]
fn without_same_owner_devices_are_skipped_and_fifos_made() {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind) in [
        ("null", tar::EntryType::Char),
        ("sda", tar::EntryType::Block),
        ("fifo", tar::EntryType::Fifo),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o640);
        header.set_uid(4242);
        header.set_size(0);
        header.set_device_major(1).unwrap();
        header.set_device_minor(3).unwrap();
        builder.append_data(&mut header, name, &b""[..]).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut rootless = options(Whiteouts::Overlay);
    rootless.same_owner = false;
    rootless.device_nodes = false;
    let applied = apply_layer(&tar[..], root.path(), &rootless).unwrap();
    assert_eq!(applied.skipped_devices, 2);
    assert_eq!(listing(root.path()), ["fifo"]);
    let fifo = fs::symlink_metadata(root.path().join("fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o640);
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(fifo.uid(), nix::unistd::geteuid().as_raw(), "not chowned");
}

#[test]
fn owners_are_kept_without_creating_device_nodes() {
    if !root_or_skip() {
        return;
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, uid) in [
        ("null", tar::EntryType::Char, 1),
        ("sda", tar::EntryType::Block, 2),
        ("fifo", tar::EntryType::Fifo, 3),
        ("file", tar::EntryType::Regular, 1234),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o4750);
        header.set_uid(uid);
        header.set_gid(4321);
        header.set_size(0);
        header.set_device_major(1).unwrap();
        header.set_device_minor(3).unwrap();
        builder.append_data(&mut header, name, &b""[..]).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut apply = options(Whiteouts::Apply);
    apply.device_nodes = false;
    let applied = apply_layer(&tar[..], root.path(), &apply).unwrap();
    assert_eq!(applied.skipped_devices, 2);
    assert_eq!(listing(root.path()), ["fifo", "file"]);
    let file = fs::symlink_metadata(root.path().join("file")).unwrap();
    // chown before chmod: the setuid bit survives the owner change.
    assert_eq!(
        (file.uid(), file.gid(), file.mode() & 0o7777),
        (1234, 4321, 0o4750)
    );
    let fifo = fs::symlink_metadata(root.path().join("fifo")).unwrap();
    assert_eq!((fifo.uid(), fifo.gid()), (3, 4321));
}

#[test]
fn a_hardlink_entry_sets_the_owner_mode_and_time_of_the_shared_inode() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut file = tar::Header::new_gnu();
    file.set_entry_type(tar::EntryType::Regular);
    file.set_mode(0o644);
    file.set_uid(44);
    file.set_gid(45);
    file.set_mtime(1_600_000_000);
    file.set_size(2);
    builder.append_data(&mut file, "a/f", &b"f\n"[..]).unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Link);
    link.set_mode(0o600);
    link.set_uid(50);
    link.set_gid(51);
    link.set_mtime(1_400_000_000);
    link.set_size(0);
    builder.append_link(&mut link, "hard", "a/f").unwrap();
    let tar = builder.into_inner().unwrap();
    let root = tempfile::tempdir().unwrap();
    apply_layer(&tar[..], root.path(), &options(Whiteouts::Apply)).unwrap();
    // Checked against buildctl v0.32 (an http context tar): the link's header wins.
    let meta = fs::symlink_metadata(root.path().join("a/f")).unwrap();
    assert_eq!(meta.nlink(), 2);
    assert_eq!((meta.mode() & 0o7777, meta.mtime()), (0o600, 1_400_000_000));
    if crate::sys::privilege::current().can_chown() {
        assert_eq!((meta.uid(), meta.gid()), (50, 51));
    }
}

#[test]
fn diff_id_covers_bytes_after_the_end_blocks() {
    let mut tar = tar_of(&["a/", "a/f"]);
    tar.extend_from_slice(&[0u8; 8192]);
    tar.extend_from_slice(b"trailing");
    let root = tempfile::tempdir().unwrap();
    let applied = apply_layer(&tar[..], root.path(), &options(Whiteouts::Apply)).unwrap();
    assert_eq!(applied.diff_id, Digest::of(&tar));
    assert_eq!(applied.size, tar.len() as u64);
}

#[test]
fn later_entries_replace_earlier_ones_and_directories_merge() {
    let root = tempfile::tempdir().unwrap();
    let first = tar_of(&["x/", "x/keep", "f", "d/"]);
    let second = tar_of(&["x/", "x/added", "f/", "d"]);
    let apply = options(Whiteouts::Apply);
    apply_layer(&first[..], root.path(), &apply).unwrap();
    apply_layer(&second[..], root.path(), &apply).unwrap();
    assert_eq!(listing(root.path()), ["d", "f", "x", "x/added", "x/keep"]);
    assert!(root.path().join("f").is_dir());
    assert_eq!(fs::read(root.path().join("d")).unwrap(), b"d");
}

#[test]
fn directory_modes_and_mtimes_are_set_after_their_contents() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o555);
    dir.set_mtime(1_234_567_890);
    dir.set_size(0);
    builder.append_data(&mut dir, "ro/", &b""[..]).unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_entry_type(tar::EntryType::Regular);
    file.set_mode(0o644);
    file.set_mtime(1_000_000_000);
    file.set_size(2);
    builder.append_data(&mut file, "ro/f", &b"hi"[..]).unwrap();
    let tar = builder.into_inner().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut apply = options(Whiteouts::Apply);
    apply.same_owner = false;
    apply_layer(&tar[..], root.path(), &apply).unwrap();
    let meta = fs::metadata(root.path().join("ro")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o555);
    assert_eq!(meta.mtime(), 1_234_567_890);
    assert_eq!(
        fs::metadata(root.path().join("ro/f")).unwrap().mtime(),
        1_000_000_000
    );
    chmod(&root.path().join("ro"), 0o755);
}

#[test]
fn apply_mode_whiteout_keeps_the_parent_directory_time() {
    // The base layer's `etc/` is from 2023 (tar_of); the top layer deletes a file in it without
    // carrying `etc/` itself. The flattened `etc/` keeps the image's time, not the unpack's.
    let root = tempfile::tempdir().unwrap();
    let mut apply = options(Whiteouts::Apply);
    apply.same_owner = false;
    apply_layer(
        &tar_of(&["etc/", "etc/gone", "etc/keep"])[..],
        root.path(),
        &apply,
    )
    .unwrap();
    apply_layer(&tar_of(&["etc/.wh.gone"])[..], root.path(), &apply).unwrap();
    assert_eq!(listing(root.path()), ["etc", "etc/keep"]);
    assert_eq!(
        fs::metadata(root.path().join("etc")).unwrap().mtime(),
        1_700_000_000
    );
}

#[test]
fn a_file_named_like_a_whiteout_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(".wh.sneaky"), "x").unwrap();
    let error = write_layer(dir.path(), Vec::new()).unwrap_err();
    assert!(
        matches!(&error, LayerError::Unsupported { entry, .. } if entry == ".wh.sneaky"),
        "{error:?}"
    );
    assert!(error.to_string().contains("rename it"), "{error}");
}

#[test]
fn a_truncated_layer_is_an_error_not_a_short_file() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(4096);
    builder
        .append_data(&mut header, "big", &[7u8; 4096][..])
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let root = tempfile::tempdir().unwrap();
    let cut = &tar[..512 + 1000];
    let error = apply_layer(cut, root.path(), &options(Whiteouts::Apply)).unwrap_err();
    assert!(matches!(error, LayerError::Tar { .. }), "{error:?}");
}

/// The relative paths under `dir` with the contents of the files.
fn contents(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out: Vec<(String, Option<Vec<u8>>)> = walk(dir)
        .iter()
        .map(|path| {
            let name = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, path.is_file().then(|| fs::read(path).unwrap()))
        })
        .collect();
    out.sort();
    out
}

/// Layers unpacked in overlay format and mounted as overlayfs lower dirs show exactly the tree
/// that applying them one over the other (flattening) gives.
#[test]
fn overlay_mount_of_overlay_layers_equals_flattening() {
    if !root_or_skip() {
        return;
    }
    let lower = tar_of(&[
        "a/",
        "a/old",
        "a/sub/",
        "a/sub/deep",
        "b/",
        "b/keep",
        "gone",
        ".bashrc",
    ]);
    let upper = tar_of(&[
        "a/new",
        "a/sub/x",
        "a/.wh..wh..opq",
        ".wh.gone",
        ".wh..bashrc",
        "b/more",
    ]);

    let flat = tempfile::tempdir().unwrap();
    for layer in [&lower, &upper] {
        apply_layer(&layer[..], flat.path(), &options(Whiteouts::Apply)).unwrap();
    }
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    apply_layer(&lower[..], one.path(), &options(Whiteouts::Overlay)).unwrap();
    apply_layer(&upper[..], two.path(), &options(Whiteouts::Overlay)).unwrap();

    let mountpoint = tempfile::tempdir().unwrap();
    let target = mountpoint.path().to_path_buf();
    let lowerdir = format!("lowerdir={}:{}", two.path().display(), one.path().display());
    // The mount lives in a mount namespace of this thread alone (unshare(2) CLONE_NEWNS, made
    // private so nothing propagates to the host), which goes away with the thread.
    let merged = std::thread::spawn(move || -> Result<_, nix::Error> {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        crate::sys::process::unshare_private_mounts()?;
        mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::MS_RDONLY,
            Some(lowerdir.as_str()),
        )?;
        let seen = contents(&target);
        umount2(&target, MntFlags::MNT_DETACH)?;
        Ok(seen)
    })
    .join()
    .unwrap()
    .expect("overlayfs mount");
    assert_eq!(merged, contents(flat.path()));
    let names: Vec<&str> = merged.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "a/new", "a/sub", "a/sub/x", "b", "b/keep", "b/more"]
    );
}
