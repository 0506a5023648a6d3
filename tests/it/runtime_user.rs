//! `runtime::user::read_image_file`: the merged view of an image's layers, confined to the image.

use crate::support;
use kiln::container::user::{UserError, read_image_file, resolve};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

const LIMIT: u64 = 1 << 20;

/// Layer directories `layers/0` (top-most) .. `layers/{count-1}` in a temporary directory.
struct Image {
    dir: tempfile::TempDir,
    count: usize,
}

impl Image {
    fn new(count: usize) -> Image {
        let dir = tempfile::tempdir().expect("temp dir");
        for i in 0..count {
            fs::create_dir_all(dir.path().join(format!("layers/{i}"))).expect("layer dir");
        }
        Image { dir, count }
    }

    fn layer(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("layers/{index}"))
    }

    fn file(&self, layer: usize, path: &str, contents: &str) {
        support::populate(&self.layer(layer), &[(path, contents)]);
    }

    fn dir(&self, layer: usize, path: &str) {
        fs::create_dir_all(self.layer(layer).join(path)).expect("create dir");
    }

    fn link(&self, layer: usize, path: &str, target: &str) {
        let at = self.layer(layer).join(path);
        fs::create_dir_all(at.parent().expect("parent")).expect("create dir");
        symlink(target, at).expect("symlink");
    }

    /// An overlay whiteout: a 0/0 character device (needs CAP_MKNOD).
    fn whiteout(&self, layer: usize, path: &str) {
        let at = self.layer(layer).join(path);
        fs::create_dir_all(at.parent().expect("parent")).expect("create dir");
        nix::sys::stat::mknod(
            &at,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .expect("mknod whiteout");
    }

    fn opaque(&self, layer: usize, path: &str, xattr: &str) {
        let at = self.layer(layer).join(path);
        fs::create_dir_all(&at).expect("create dir");
        set_xattr(&at, xattr, b"y");
    }

    fn lower_dirs(&self) -> Vec<PathBuf> {
        (0..self.count).map(|i| self.layer(i)).collect()
    }

    fn read(&self, path: &str) -> Result<Option<String>, UserError> {
        read_image_file(&self.lower_dirs(), path, LIMIT)
            .map(|found| found.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let path = CString::new(path.as_os_str().as_bytes()).expect("path");
    let name = CString::new(name).expect("name");
    // SAFETY: both strings are NUL-terminated and `value` is valid for its length.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn expect(image: &Image, path: &str, expected: Option<&str>) {
    match image.read(path) {
        Ok(found) => assert_eq!(found.as_deref(), expected, "reading {path}"),
        Err(e) => panic!("reading {path}: unexpected error {e}"),
    }
}

#[test]
fn top_most_layer_wins_and_lower_layers_show_through() {
    let image = Image::new(3);
    image.file(0, "etc/passwd", "top");
    image.file(1, "etc/passwd", "middle");
    image.file(2, "etc/passwd", "bottom");
    image.file(2, "etc/group", "bottom group");
    expect(&image, "/etc/passwd", Some("top"));
    expect(&image, "/etc/group", Some("bottom group"));
    expect(&image, "/etc/shadow", None);
    expect(&image, "etc/passwd", Some("top"));
    expect(&image, "//etc/./passwd", Some("top"));
    // A layer directory given through a symlink (the caller's own path) is followed.
    let link = image.dir.path().join("top-link");
    symlink(image.layer(0), &link).expect("symlink");
    let lower = [link, image.layer(1), image.layer(2)];
    let found = read_image_file(&lower, "/etc/passwd", LIMIT).expect("read");
    assert_eq!(found.as_deref(), Some(&b"top"[..]));
}

#[test]
fn a_non_directory_hides_the_directories_below() {
    let image = Image::new(2);
    image.file(0, "etc", "not a directory");
    image.file(1, "etc/passwd", "hidden");
    expect(&image, "/etc/passwd", None);
}

#[test]
fn user_overlay_opaque_hides_lower_directories() {
    let image = Image::new(3);
    image.opaque(0, "etc", "user.overlay.opaque");
    image.file(0, "etc/group", "top group");
    image.file(1, "etc/passwd", "hidden");
    image.file(2, "etc/passwd", "hidden too");
    expect(&image, "/etc/passwd", None);
    expect(&image, "/etc/group", Some("top group"));

    // Opaque in the middle: the top still merges with the middle, not the bottom.
    let image = Image::new(3);
    image.dir(0, "etc");
    image.opaque(1, "etc", "user.overlay.opaque");
    image.file(1, "etc/group", "middle group");
    image.file(2, "etc/passwd", "hidden");
    expect(&image, "/etc/passwd", None);
    expect(&image, "/etc/group", Some("middle group"));
}

#[test]
fn whiteouts_and_trusted_opaque_dirs_hide_lower_layers() {
    if support::root().is_none() {
        return;
    }
    let image = Image::new(3);
    image.whiteout(0, "etc/passwd");
    image.file(1, "etc/passwd", "hidden");
    image.file(1, "etc/group", "middle group");
    expect(&image, "/etc/passwd", None);
    expect(&image, "/etc/group", Some("middle group"));

    // A whited-out directory hides everything under it.
    let image = Image::new(2);
    image.whiteout(0, "etc");
    image.file(1, "etc/passwd", "hidden");
    expect(&image, "/etc/passwd", None);

    // A whiteout in a lower layer does not hide an upper file.
    let image = Image::new(2);
    image.file(0, "etc/passwd", "top");
    image.whiteout(1, "etc/passwd");
    expect(&image, "/etc/passwd", Some("top"));

    let image = Image::new(2);
    image.opaque(0, "etc", "trusted.overlay.opaque");
    image.file(1, "etc/passwd", "hidden");
    expect(&image, "/etc/passwd", None);

    // Any other device is not a whiteout, and not a regular file.
    let image = Image::new(1);
    let at = image.layer(0).join("etc/passwd");
    fs::create_dir_all(at.parent().expect("parent")).expect("create dir");
    nix::sys::stat::mknod(
        &at,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod /dev/null twin");
    assert!(matches!(
        image.read("/etc/passwd"),
        Err(UserError::NotRegular { .. })
    ));
}

#[test]
fn symlinks_resolve_in_the_merged_image() {
    let image = Image::new(2);
    image.link(0, "etc/passwd", "/usr/lib/passwd");
    image.file(1, "usr/lib/passwd", "from the lower layer");
    image.link(1, "etc/group", "../usr/share/group");
    image.file(0, "usr/share/group", "relative, upper layer");
    // A directory symlink in the middle of the path.
    image.link(0, "private", "usr/lib");
    expect(&image, "/etc/passwd", Some("from the lower layer"));
    expect(&image, "/etc/group", Some("relative, upper layer"));
    expect(&image, "/private/passwd", Some("from the lower layer"));
    // `..` after a symlink is taken from where the link led (/usr/lib/.. is /usr).
    expect(
        &image,
        "/private/../lib/passwd",
        Some("from the lower layer"),
    );
}

#[test]
fn symlinks_and_dot_dot_never_leave_the_image() {
    let outside = tempfile::tempdir().expect("temp dir");
    let sentinel = outside.path().join("passwd");
    fs::write(&sentinel, "HOST SENTINEL").expect("write sentinel");

    let image = Image::new(1);
    let escape_depth = "../".repeat(image.layer(0).components().count() + 2);
    let cases: &[(&str, &str, Option<&str>)] = &[
        // Absolute links to host files land inside the image, where they do not exist.
        ("etc/passwd", "/etc/passwd-host", None),
        ("etc/abs", sentinel.to_str().expect("utf-8 path"), None),
        ("etc/proc", "/proc/self/root/etc/passwd", None),
        ("etc/fd", "/proc/self/cwd/etc/passwd", None),
    ];
    for (at, target, _) in cases {
        image.link(0, at, target);
    }
    // A relative link with more `..` than the image is deep stops at the image's root.
    let relative = format!("{escape_depth}{}", sentinel.display());
    image.link(0, "etc/relative", &relative);
    image.link(0, "etc/dir", outside.path().to_str().expect("utf-8 path"));
    image.file(0, "etc/passwd-host", "image's own passwd-host");
    let mut failures = Vec::new();
    for (path, expected) in [
        ("/etc/passwd", Some("image's own passwd-host")),
        ("/etc/abs", None),
        ("/etc/proc", None),
        ("/etc/fd", None),
        ("/etc/relative", None),
        ("/etc/dir/passwd", None),
        (
            &format!("/{escape_depth}{}", sentinel.display()) as &str,
            None,
        ),
    ] {
        match image.read(path) {
            Ok(found) if found.as_deref() == expected => {}
            // A link that leads nowhere in the image says so, rather than reading as missing.
            Err(UserError::DanglingSymlink { .. }) if expected.is_none() => {}
            other => failures.push(format!("{path}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The same escape target, created inside the image, is what the link reads.
    image.file(
        0,
        sentinel.to_str().expect("utf-8").trim_start_matches('/'),
        "inside",
    );
    expect(&image, "/etc/abs", Some("inside"));
    expect(&image, "/etc/relative", Some("inside"));
}

#[test]
fn symlink_loops_are_errors() {
    let image = Image::new(2);
    image.link(0, "etc/passwd", "group");
    image.link(1, "etc/group", "/etc/passwd");
    image.link(0, "self", "self");
    image.link(0, "deep", "deep/deep");
    for path in ["/etc/passwd", "/self", "/deep/x"] {
        match image.read(path) {
            Err(UserError::SymlinkLoop { path: named }) => assert_eq!(named, path),
            other => panic!("{path}: expected a symlink loop error, got {other:?}"),
        }
    }
    let message = image.read("/self").expect_err("loop").to_string();
    assert_eq!(
        message,
        "too many levels of symbolic links resolving /self in the image (a symlink loop?)"
    );
}

#[test]
fn size_is_bounded_and_only_regular_files_are_read() {
    let image = Image::new(1);
    image.file(0, "etc/passwd", "0123456789");
    image.dir(0, "etc/group");
    nix::unistd::mkfifo(
        &image.layer(0).join("etc/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    let lower = image.lower_dirs();
    assert_eq!(
        read_image_file(&lower, "/etc/passwd", 10).expect("at the limit"),
        Some(b"0123456789".to_vec())
    );
    let err = read_image_file(&lower, "/etc/passwd", 9).expect_err("over the limit");
    assert!(
        matches!(err, UserError::TooLarge { limit: 9, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "/etc/passwd in the image is larger than 9 bytes; a user database that big is not credible, check the image"
    );
    for path in ["/etc/group", "/etc/fifo", "/", "/etc/.."] {
        let err = read_image_file(&lower, path, LIMIT).expect_err("not a regular file");
        assert!(
            matches!(err, UserError::NotRegular { .. }),
            "{path}: {err:?}"
        );
    }
    // Below a regular file nothing exists.
    assert_eq!(
        read_image_file(&lower, "/etc/passwd/x", LIMIT).expect("enotdir"),
        None
    );
    // A missing layer directory is an error naming it.
    let missing = vec![image.dir.path().join("no-such-layer")];
    let err = read_image_file(&missing, "/etc/passwd", LIMIT).expect_err("missing layer");
    assert!(err.to_string().contains("no-such-layer"), "{err}");
}

#[test]
fn resolves_a_user_from_image_layers() {
    let image = Image::new(2);
    image.file(
        1,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    );
    image.file(0, "etc/group", "app:x:1000:\nwheel:x:10:app\n");
    let lower = image.lower_dirs();
    let passwd = read_image_file(&lower, "/etc/passwd", LIMIT).expect("passwd");
    let group = read_image_file(&lower, "/etc/group", LIMIT).expect("group");
    let user = resolve("app", passwd.as_deref(), group.as_deref()).expect("resolve");
    assert_eq!((user.uid, user.gid), (1000, 1000));
    assert_eq!(user.additional_gids, [10]);
    assert_eq!(user.home, "/home/app");
}
