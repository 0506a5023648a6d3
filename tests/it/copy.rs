//! COPY, ADD and WORKDIR file operations (`kiln::builder::steps::copy`): every rule, table-driven, each
//! case checking the whole resulting upper tree (paths, types, modes, owners, times, contents,
//! link targets), and that neither the context nor the lowers changed.

use crate::support;
use kiln::builder::steps::copy::{CopyError, CopyRequest, CopySource, copy, mkdir};
use kiln::builder::steps::union::UnionFs;
use kiln::frontend::context::BuildContext;
use kiln::frontend::instruction::InlineFile;
use kiln::solver::Cancel;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mtime every prepared entry gets: an entry that still has it kept its time.
const FIXED_MTIME: i64 = 1_000_000_000;
/// The owner of every prepared entry (context and layers).
const OWNER: u32 = 4242;

type Entries = &'static [(&'static str, &'static str)];

/// Creates `entries` under `root`: `path` → `d[MODE]` directory, `f[MODE]:CONTENT` file,
/// `l:TARGET` symlink, `h:PATH` hardlink to PATH, `w` whiteout, `o[MODE]` opaque directory,
/// `p` fifo. Then every entry is owned by [`OWNER`] and gets [`FIXED_MTIME`].
fn build(root: &Path, entries: &[(&str, &str)]) {
    fs::create_dir_all(root).unwrap();
    for (path, spec) in entries {
        let full = root.join(path.trim_end_matches('/'));
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        let (kind, rest) = spec.split_at(1);
        let (mode, content) = rest.split_once(':').unwrap_or((rest, ""));
        let mode = |default| u32::from_str_radix(mode, 8).unwrap_or(default);
        match kind {
            "d" | "o" => {
                fs::create_dir_all(&full).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(mode(0o755))).unwrap();
                if kind == "o" {
                    set_xattr(&full, "trusted.overlay.opaque", b"y");
                }
            }
            "f" => {
                fs::write(&full, content).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(mode(0o644))).unwrap();
            }
            "l" => std::os::unix::fs::symlink(content, &full).unwrap(),
            "h" => fs::hard_link(root.join(content), &full).unwrap(),
            "w" => nix::sys::stat::mknod(
                &full,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .unwrap(),
            "p" => {
                nix::unistd::mkfifo(&full, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
            }
            other => panic!("bad entry spec {other}"),
        }
    }
    let mut all: Vec<PathBuf> = walk(root).into_iter().map(|(path, _)| path).collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in all {
        let full = root.join(&path);
        std::os::unix::fs::lchown(&full, Some(OWNER), Some(OWNER)).unwrap();
        let time = nix::sys::time::TimeSpec::new(FIXED_MTIME, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &full,
            &time,
            &time,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and `value` is valid for its length.
    let result = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(result, 0, "lsetxattr: {}", std::io::Error::last_os_error());
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buffer = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and `buffer` is valid for its length.
    let size = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    let size = usize::try_from(size).ok()?;
    buffer.truncate(size);
    Some(buffer)
}

/// Every path below `root` (relative) with its metadata, not following symlinks.
fn walk(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in read {
            let entry = entry.unwrap();
            let path = dir.join(entry.file_name());
            let meta = fs::symlink_metadata(root.join(&path)).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push((path, meta));
        }
    }
    out
}

/// The tree under `root` as `path → "KIND MODE UID:GID T|t [CONTENT|TARGET]"`: `T` when the
/// mtime is [`FIXED_MTIME`] (kept), `t` for any other (made now).
fn tree(root: &Path) -> BTreeMap<String, String> {
    walk(root)
        .into_iter()
        .map(|(path, meta)| {
            let full = root.join(&path);
            let time = if meta.mtime() == FIXED_MTIME {
                "T"
            } else {
                "t"
            };
            let owner = format!("{}:{}", meta.uid(), meta.gid());
            let mode = meta.mode() & 0o7777;
            let file_type = meta.file_type();
            let desc = if file_type.is_dir() {
                let opaque = get_xattr(&full, "trusted.overlay.opaque").is_some_and(|v| v == b"y");
                format!(
                    "d{mode:o} {owner} {time}{}",
                    if opaque { " opaque" } else { "" }
                )
            } else if file_type.is_symlink() {
                format!(
                    "l {owner} {time} {}",
                    fs::read_link(&full).unwrap().display()
                )
            } else if file_type.is_file() {
                let bytes = fs::read(&full).unwrap();
                let content = match String::from_utf8(bytes) {
                    Ok(text) if !text.contains('\0') => text,
                    Ok(text) => format!("<{} bytes>", text.len()),
                    Err(error) => format!("<{} bytes>", error.as_bytes().len()),
                };
                format!("f{mode:o} {owner} {time} {content}")
            } else if file_type.is_char_device() {
                format!("c {}", meta.rdev())
            } else if file_type.is_fifo() {
                format!("p{mode:o} {owner} {time}")
            } else {
                "other".to_string()
            };
            (path.to_string_lossy().into_owned(), desc)
        })
        .collect()
}

/// The standard build context (owned by [`OWNER`]; `.dockerignore` leaves out `secret`).
const CONTEXT: Entries = &[
    (".dockerignore", "f:secret\n"),
    ("a.txt", "f:alpha"),
    ("b.txt", "f:bravo"),
    ("run.sh", "f755:#!/bin/sh"),
    ("dir/f", "f:eff"),
    ("dir/sub/", "d700"),
    ("dir/sub/g", "f600:gee"),
    ("dir/link", "l:../a.txt"),
    ("dir/app.log", "f:log"),
    ("link.txt", "l:a.txt"),
    ("linkdir", "l:dir/sub"),
    ("abs", "l:/etc/hostname"),
    ("up", "l:../../../a.txt"),
    ("loop", "l:loop"),
    ("secret", "f:s3cret"),
    ("to-secret", "l:secret"),
    ("kiln-canary.txt", "f:canary"),
];

/// A context of linked directories: `sub` is reached through links of every kind (issue 12,
/// item 8); `.dockerignore` leaves out `sub/hidden` and `ignored`.
const LINKED: Entries = &[
    (".dockerignore", "f:sub/hidden\nignored\n"),
    ("sub/foo", "f:foo"),
    ("sub/hidden", "f:hidden"),
    ("ignored/data", "f:ignored"),
    ("rel", "l:sub"),
    ("abs", "l:/sub"),
    ("clamp", "l:../../sub"),
    ("up", "l:.."),
    ("chain", "l:abs"),
    ("host", "l:/etc"),
    ("to-ignored", "l:ignored"),
    ("to-file", "l:sub/foo"),
    ("loop", "l:loop2"),
    ("loop2", "l:loop"),
];

/// The standard target image: one layer with users, symlinked directories and links that try
/// to leave it.
const IMAGE: &[Entries] = &[&[
    (
        "etc/passwd",
        "f:root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n",
    ),
    ("etc/group", "f:root:x:0:\ngrp:x:3000:\n"),
    ("opt/", "d711"),
    ("opt/old", "f:old"),
    ("usr/bin/", "d755"),
    ("bin", "l:usr/bin"),
    ("evil", "l:/../../etc"),
    ("rootlink", "l:/"),
    ("file", "f:x"),
    ("cfg", "l:real.conf"),
    ("real.conf", "f:conf"),
]];

/// A `--from` source: two layers, the top one whiting out and hiding parts of the lower.
const STAGE: &[Entries] = &[
    &[
        ("app/gone", "w"),
        ("app/opaque/", "o"),
        ("app/opaque/new", "f:new"),
        ("app/bin", "f755:binary"),
        ("app/lnk", "l:/app/bin"),
        ("data", "l:/app"),
        ("esc", "l:../../../../etc"),
        ("loop1", "l:loop2"),
        ("loop2", "l:loop1"),
    ],
    &[
        ("app/gone", "f:should not show"),
        ("app/opaque/old", "f:hidden by the opaque dir"),
        ("app/keep.txt", "f:kept"),
        ("app/x.txt", "f:ex"),
        ("app/sub/y.txt", "f:why"),
    ],
];

#[derive(Clone, Copy)]
enum Expect {
    /// The exact upper tree.
    Tree(Entries),
    /// An error whose message contains this.
    Error(&'static str),
}
use Expect::{Error, Tree};

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    context: Entries,
    /// `--from` layers, top first; `None` reads the context.
    from: Option<&'static [Entries]>,
    image: &'static [Entries],
    sources: &'static [&'static str],
    inline: &'static [(&'static str, &'static str)],
    dest: &'static str,
    workdir: &'static str,
    chown: Option<&'static str>,
    chmod: Option<&'static str>,
    add: bool,
    exclude: &'static [&'static str],
    /// `COPY --parents`.
    parents: bool,
    /// Archives written into the context: (name, compression, entries as `tar_bytes` reads them).
    archives: &'static [(&'static str, &'static str, Entries)],
    expect: Expect,
}

const BASE: Case = Case {
    name: "",
    context: CONTEXT,
    from: None,
    image: IMAGE,
    sources: &[],
    inline: &[],
    dest: "/",
    workdir: "/",
    chown: None,
    chmod: None,
    add: false,
    exclude: &[],
    parents: false,
    archives: &[],
    expect: Tree(&[]),
};

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "--parents: each source keeps its path from the context root; directories on the way get their source's attributes",
            sources: &["dir/sub/g", "a.txt"],
            dest: "/p/",
            parents: true,
            expect: Tree(&[
                ("p", "d755 0:0 t"),
                ("p/a.txt", "f644 0:0 T alpha"),
                ("p/dir", "d755 0:0 T"),
                ("p/dir/sub", "d700 0:0 T"),
                ("p/dir/sub/g", "f600 0:0 T gee"),
            ]),
            ..BASE
        },
        Case {
            name: "--parents: a directory source is copied whole below its parents",
            sources: &["dir/sub"],
            dest: "/p",
            parents: true,
            expect: Tree(&[
                ("p", "d755 0:0 t"),
                ("p/dir", "d755 0:0 T"),
                ("p/dir/sub", "d700 0:0 T"),
                ("p/dir/sub/g", "f600 0:0 T gee"),
            ]),
            ..BASE
        },
        Case {
            name: "--parents: ** matches any number of directories, and only matches are copied",
            sources: &["./dir/**/g", "./dir/**/*.log"],
            dest: "/p/",
            parents: true,
            expect: Tree(&[
                ("p", "d755 0:0 t"),
                ("p/dir", "d755 0:0 T"),
                ("p/dir/app.log", "f644 0:0 T log"),
                ("p/dir/sub", "d700 0:0 T"),
                ("p/dir/sub/g", "f600 0:0 T gee"),
            ]),
            ..BASE
        },
        Case {
            name: "--parents: only what follows the /./ pivot is kept",
            sources: &["./dir/./sub/g"],
            dest: "/p/",
            parents: true,
            expect: Tree(&[
                ("p", "d755 0:0 t"),
                ("p/sub", "d700 0:0 T"),
                ("p/sub/g", "f600 0:0 T gee"),
            ]),
            ..BASE
        },
        Case {
            name: "--parents: --exclude patterns are relative to the root copied from",
            sources: &["dir"],
            exclude: &["dir/*.log", "dir/sub"],
            dest: "/p/",
            parents: true,
            expect: Tree(&[
                ("p", "d755 0:0 t"),
                ("p/dir", "d755 0:0 T"),
                ("p/dir/f", "f644 0:0 T eff"),
                ("p/dir/link", "l 0:0 T ../a.txt"),
            ]),
            ..BASE
        },
        Case {
            name: "--parents: a source without wildcards must exist",
            sources: &["dir/nothing"],
            dest: "/p/",
            parents: true,
            expect: Error("file not found in build context"),
            ..BASE
        },
        Case {
            name: "--parents --from: the pivot limits the parents of a --from source, which keeps its owner",
            from: Some(STAGE),
            sources: &["/app/./sub/*.txt", "/app/keep.txt"],
            dest: "/p/",
            parents: true,
            expect: Tree(&[
                ("p", "d755 0:0 t"),
                ("p/app", "d755 4242:4242 T"),
                ("p/app/keep.txt", "f644 4242:4242 T kept"),
                ("p/sub", "d755 4242:4242 T"),
                ("p/sub/y.txt", "f644 4242:4242 T why"),
            ]),
            ..BASE
        },
        Case {
            name: "--parents --from: a missing source is an error",
            from: Some(STAGE),
            sources: &["/app/nothing"],
            dest: "/p/",
            parents: true,
            expect: Error("not found in the --from stage or image"),
            ..BASE
        },
        Case {
            name: "a file into a directory named with a trailing slash: made 0755 root-owned, the file keeps mode and time, owner 0:0",
            sources: &["a.txt"],
            dest: "/dst/",
            expect: Tree(&[("dst", "d755 0:0 t"), ("dst/a.txt", "f644 0:0 T alpha")]),
            ..BASE
        },
        Case {
            name: "a file to a new path is that file; the mode is kept",
            sources: &["run.sh"],
            dest: "/usr/local/bin/run",
            expect: Tree(&[
                ("usr", "d755 4242:4242 T"),
                ("usr/local", "d755 0:0 t"),
                ("usr/local/bin", "d755 0:0 t"),
                ("usr/local/bin/run", "f755 0:0 T #!/bin/sh"),
            ]),
            ..BASE
        },
        Case {
            name: "a file onto an existing directory goes inside; the lower directory is copied up as it was",
            sources: &["a.txt"],
            dest: "/opt",
            expect: Tree(&[
                ("opt", "d711 4242:4242 T"),
                ("opt/a.txt", "f644 0:0 T alpha"),
            ]),
            ..BASE
        },
        Case {
            name: "a directory copies its contents; symlinks inside are copied as links",
            sources: &["dir"],
            dest: "/d",
            expect: Tree(&[
                ("d", "d755 0:0 t"),
                ("d/app.log", "f644 0:0 T log"),
                ("d/f", "f644 0:0 T eff"),
                ("d/link", "l 0:0 T ../a.txt"),
                ("d/sub", "d700 0:0 T"),
                ("d/sub/g", "f600 0:0 T gee"),
            ]),
            ..BASE
        },
        Case {
            name: "a relative destination joins the WORKDIR",
            sources: &["a.txt"],
            dest: "x/",
            workdir: "/opt",
            expect: Tree(&[
                ("opt", "d711 4242:4242 T"),
                ("opt/x", "d755 0:0 t"),
                ("opt/x/a.txt", "f644 0:0 T alpha"),
            ]),
            ..BASE
        },
        Case {
            name: "`.` is the WORKDIR as a directory, made when missing",
            sources: &["a.txt"],
            dest: ".",
            workdir: "/app",
            expect: Tree(&[("app", "d755 0:0 t"), ("app/a.txt", "f644 0:0 T alpha")]),
            ..BASE
        },
        // BuildKit v0.32 chains one copy per source onto the same destination (buildctl: `COPY
        // a.txt b.txt /dest` gives the file /dest with b.txt's content); issue 12, item 3.
        Case {
            name: "several files to a destination without a slash: each is copied onto it, the last stays",
            sources: &["a.txt", "b.txt"],
            dest: "/multi",
            expect: Tree(&[("multi", "f644 0:0 T bravo")]),
            ..BASE
        },
        Case {
            name: "a wildcard with several matches to a path without a slash is the last match, a file",
            sources: &["?.txt"],
            dest: "/app4/file.txt",
            expect: Tree(&[
                ("app4", "d755 0:0 t"),
                ("app4/file.txt", "f644 0:0 T bravo"),
            ]),
            ..BASE
        },
        Case {
            name: "several sources to a slash-ended destination still fill a directory",
            sources: &["a.txt", "b.txt"],
            dest: "/multi/",
            expect: Tree(&[
                ("multi", "d755 0:0 t"),
                ("multi/a.txt", "f644 0:0 T alpha"),
                ("multi/b.txt", "f644 0:0 T bravo"),
            ]),
            ..BASE
        },
        Case {
            name: "a wildcard copies every match (per segment, like filepath.Match)",
            sources: &["*.txt", "di?/su[b]/*"],
            dest: "/w/",
            expect: Tree(&[
                ("w", "d755 0:0 t"),
                ("w/a.txt", "f644 0:0 T alpha"),
                ("w/b.txt", "f644 0:0 T bravo"),
                ("w/g", "f600 0:0 T gee"),
                ("w/kiln-canary.txt", "f644 0:0 T canary"),
                // A matched symlink is followed, keeping its own name.
                ("w/link.txt", "f644 0:0 T alpha"),
            ]),
            ..BASE
        },
        Case {
            name: "a wildcard that matches nothing copies nothing (AllowEmptyWildcard)",
            sources: &["*.nothing"],
            dest: "/n/",
            expect: Tree(&[]),
            ..BASE
        },
        Case {
            name: "a wildcard with one match to a path without a slash is that file",
            sources: &["run.*"],
            dest: "/single",
            expect: Tree(&[("single", "f755 0:0 T #!/bin/sh")]),
            ..BASE
        },
        Case {
            name: "a source that is a symlink is followed, keeping the link's name",
            sources: &["link.txt", "linkdir"],
            dest: "/s/",
            expect: Tree(&[
                ("s", "d755 0:0 t"),
                ("s/g", "f600 0:0 T gee"),
                ("s/link.txt", "f644 0:0 T alpha"),
            ]),
            ..BASE
        },
        Case {
            name: "a context symlink to an absolute path is resolved in the context: not found",
            sources: &["abs"],
            dest: "/x",
            expect: Error("file not found in build context or excluded by .dockerignore: stat abs"),
            ..BASE
        },
        Case {
            name: "a context symlink that climbs out stays in the context root",
            sources: &["up"],
            dest: "/up",
            expect: Tree(&[("up", "f644 0:0 T alpha")]),
            ..BASE
        },
        // Issue 12, item 8, each checked with buildctl v0.32: links on a source's way are
        // followed with the context as `/`.
        Case {
            name: "a source through a context symlink to a directory (linkdir -> dir/sub)",
            sources: &["linkdir/g"],
            dest: "/x/",
            expect: Tree(&[("x", "d755 0:0 t"), ("x/g", "f600 0:0 T gee")]),
            ..BASE
        },
        Case {
            name: "a source through links to directories: relative, absolute from the context root, `..` clamped at it",
            context: LINKED,
            sources: &["rel/foo", "abs/foo", "clamp/foo", "up/sub/foo"],
            dest: "/x",
            // One copy per source onto `/x`: the last one stays.
            expect: Tree(&[("x", "f644 0:0 T foo")]),
            ..BASE
        },
        Case {
            name: "a wildcard after a linked directory matches in the directory the link leads to",
            context: LINKED,
            sources: &["clamp/*", "chain/f*"],
            dest: "/w/",
            expect: Tree(&[("w", "d755 0:0 t"), ("w/foo", "f644 0:0 T foo")]),
            ..BASE
        },
        Case {
            name: "a linked directory as the source copies the contents of where it leads",
            context: LINKED,
            sources: &["chain"],
            dest: "/c",
            expect: Tree(&[("c", "d755 0:0 t"), ("c/foo", "f644 0:0 T foo")]),
            ..BASE
        },
        Case {
            name: "a file excluded by .dockerignore is not found through a linked directory",
            context: LINKED,
            sources: &["rel/hidden"],
            dest: "/x",
            expect: Error("stat rel/hidden: file does not exist"),
            ..BASE
        },
        Case {
            name: "a linked directory excluded by .dockerignore is not followed",
            context: LINKED,
            sources: &["to-ignored/data"],
            dest: "/x",
            expect: Error("stat to-ignored/data: file does not exist"),
            ..BASE
        },
        Case {
            name: "a link to an absolute host path is resolved in the context: not found",
            context: LINKED,
            sources: &["host/passwd"],
            dest: "/x",
            expect: Error("stat host/passwd: file does not exist"),
            ..BASE
        },
        Case {
            name: "a link through a file is not found",
            context: LINKED,
            sources: &["to-file/x"],
            dest: "/x",
            expect: Error("stat to-file/x: file does not exist"),
            ..BASE
        },
        Case {
            name: "a loop of linked directories is an error",
            context: LINKED,
            sources: &["loop/foo"],
            dest: "/x",
            expect: Error("too many levels of symbolic links"),
            ..BASE
        },
        Case {
            name: "a context symlink to an ignored file is not found",
            sources: &["to-secret"],
            dest: "/x",
            expect: Error("stat to-secret: file does not exist"),
            ..BASE
        },
        Case {
            name: "an ignored file is not found",
            sources: &["secret"],
            dest: "/x",
            expect: Error("stat secret: file does not exist"),
            ..BASE
        },
        Case {
            name: "a symlink loop in the context is an error",
            sources: &["loop"],
            dest: "/x",
            expect: Error("too many levels of symbolic links"),
            ..BASE
        },
        Case {
            name: "`..` in a source cannot leave the context",
            sources: &["../../a.txt"],
            dest: "/p/",
            expect: Tree(&[("p", "d755 0:0 t"), ("p/a.txt", "f644 0:0 T alpha")]),
            ..BASE
        },
        Case {
            name: "the whole context copies everything left after .dockerignore",
            sources: &["."],
            dest: "/ctx",
            expect: Tree(&[
                ("ctx", "d755 0:0 t"),
                ("ctx/.dockerignore", "f644 0:0 T secret\n"),
                ("ctx/a.txt", "f644 0:0 T alpha"),
                ("ctx/abs", "l 0:0 T /etc/hostname"),
                ("ctx/b.txt", "f644 0:0 T bravo"),
                ("ctx/dir", "d755 0:0 T"),
                ("ctx/dir/app.log", "f644 0:0 T log"),
                ("ctx/dir/f", "f644 0:0 T eff"),
                ("ctx/dir/link", "l 0:0 T ../a.txt"),
                ("ctx/dir/sub", "d700 0:0 T"),
                ("ctx/dir/sub/g", "f600 0:0 T gee"),
                ("ctx/kiln-canary.txt", "f644 0:0 T canary"),
                ("ctx/link.txt", "l 0:0 T a.txt"),
                ("ctx/linkdir", "l 0:0 T dir/sub"),
                ("ctx/loop", "l 0:0 T loop"),
                ("ctx/run.sh", "f755 0:0 T #!/bin/sh"),
                ("ctx/to-secret", "l 0:0 T secret"),
                ("ctx/up", "l 0:0 T ../../../a.txt"),
            ]),
            ..BASE
        },
        Case {
            name: "a destination through an image symlink (/bin -> usr/bin) lands in its target",
            sources: &["a.txt"],
            dest: "/bin/",
            expect: Tree(&[
                ("usr", "d755 4242:4242 T"),
                ("usr/bin", "d755 4242:4242 T"),
                ("usr/bin/a.txt", "f644 0:0 T alpha"),
            ]),
            ..BASE
        },
        Case {
            name: "an image symlink to /../../etc stays in the image",
            sources: &["kiln-canary.txt"],
            dest: "/evil/",
            expect: Tree(&[
                ("etc", "d755 4242:4242 T"),
                ("etc/kiln-canary.txt", "f644 0:0 T canary"),
            ]),
            ..BASE
        },
        Case {
            name: "a destination through a symlink to / is the image root",
            sources: &["kiln-canary.txt"],
            dest: "/rootlink/rootlink/kiln-canary.txt",
            expect: Tree(&[("kiln-canary.txt", "f644 0:0 T canary")]),
            ..BASE
        },
        Case {
            name: "a destination that is a symlink to a file writes the link's target",
            sources: &["a.txt"],
            dest: "/cfg",
            expect: Tree(&[("real.conf", "f644 0:0 T alpha")]),
            ..BASE
        },
        Case {
            name: "a file destination under an image file is not a directory",
            sources: &["a.txt"],
            dest: "/file/x",
            expect: Error("mkdir /file: not a directory"),
            ..BASE
        },
        Case {
            name: "a directory onto an image file is an error",
            sources: &["dir"],
            dest: "/file",
            expect: Error("cannot copy to non-directory: /file"),
            ..BASE
        },
        Case {
            name: "a nested directory onto an image file is an error",
            image: &[&[("d/sub", "f:in the way")]],
            sources: &["dir"],
            dest: "/d",
            expect: Error("cannot copy to non-directory: /d/sub"),
            ..BASE
        },
        Case {
            name: "a file onto an image directory is an error",
            image: &[&[("d/f/", "d")]],
            sources: &["dir"],
            dest: "/d",
            expect: Error("cannot replace to directory /d/f with file"),
            ..BASE
        },
        Case {
            name: "a file over an image file and through a whited-out path",
            image: &[
                &[("gone", "w")],
                &[("gone/", "d"), ("gone/old", "f:old"), ("a.txt", "f:old")],
            ],
            sources: &["a.txt", "b.txt"],
            dest: "/gone/",
            expect: Tree(&[
                ("gone", "d755 0:0 t"),
                ("gone/a.txt", "f644 0:0 T alpha"),
                ("gone/b.txt", "f644 0:0 T bravo"),
            ]),
            ..BASE
        },
        Case {
            name: "--chown with a uid gives the same gid, to files and to the directories made",
            sources: &["dir"],
            dest: "/opt/new/d",
            chown: Some("1000"),
            expect: Tree(&[
                ("opt", "d711 4242:4242 T"),
                ("opt/new", "d755 1000:1000 t"),
                ("opt/new/d", "d755 1000:1000 t"),
                ("opt/new/d/app.log", "f644 1000:1000 T log"),
                ("opt/new/d/f", "f644 1000:1000 T eff"),
                ("opt/new/d/link", "l 1000:1000 T ../a.txt"),
                ("opt/new/d/sub", "d700 1000:1000 T"),
                ("opt/new/d/sub/g", "f600 1000:1000 T gee"),
            ]),
            ..BASE
        },
        Case {
            name: "--chown with a user name gives their primary group (from the image's files)",
            sources: &["a.txt"],
            dest: "/x",
            chown: Some("app"),
            expect: Tree(&[("x", "f644 1001:1002 T alpha")]),
            ..BASE
        },
        Case {
            name: "--chown user:group by names and by ids",
            sources: &["a.txt", "b.txt"],
            dest: "/x/",
            chown: Some("app:grp"),
            expect: Tree(&[
                ("x", "d755 1001:3000 t"),
                ("x/a.txt", "f644 1001:3000 T alpha"),
                ("x/b.txt", "f644 1001:3000 T bravo"),
            ]),
            ..BASE
        },
        Case {
            name: "--chown with a numeric user and a group name",
            sources: &["a.txt"],
            dest: "/x",
            chown: Some("5:grp"),
            expect: Tree(&[("x", "f644 5:3000 T alpha")]),
            ..BASE
        },
        Case {
            name: "--chown with a user the image does not know is an error",
            sources: &["a.txt"],
            dest: "/x",
            chown: Some("nobody"),
            expect: Error("unable to find user nobody"),
            ..BASE
        },
        Case {
            name: "--chown with an unknown group is an error",
            sources: &["a.txt"],
            dest: "/x",
            chown: Some("app:nogroup"),
            expect: Error("unable to find group nogroup"),
            ..BASE
        },
        // BuildKit (fsutil `Copy`/`prepareTargetDir`) makes the destination directory and its
        // missing parents with the octal mode too: checked with buildctl v0.32 (issue 12, item 11).
        Case {
            name: "--chmod octal applies to every file and directory copied and to the destination made",
            sources: &["dir"],
            dest: "/d",
            chmod: Some("0640"),
            expect: Tree(&[
                ("d", "d640 0:0 t"),
                ("d/app.log", "f640 0:0 T log"),
                ("d/f", "f640 0:0 T eff"),
                ("d/link", "l 0:0 T ../a.txt"),
                ("d/sub", "d640 0:0 T"),
                ("d/sub/g", "f640 0:0 T gee"),
            ]),
            ..BASE
        },
        // Issue 12, item 11, each checked with buildctl v0.32.
        Case {
            name: "--chmod octal: missing parents are made with the mode, existing ones stay",
            sources: &["dir"],
            dest: "/opt/p/q",
            chmod: Some("777"),
            expect: Tree(&[
                ("opt", "d711 4242:4242 T"),
                ("opt/p", "d777 0:0 t"),
                ("opt/p/q", "d777 0:0 t"),
                ("opt/p/q/app.log", "f777 0:0 T log"),
                ("opt/p/q/f", "f777 0:0 T eff"),
                ("opt/p/q/link", "l 0:0 T ../a.txt"),
                ("opt/p/q/sub", "d777 0:0 T"),
                ("opt/p/q/sub/g", "f777 0:0 T gee"),
            ]),
            ..BASE
        },
        Case {
            name: "--chmod octal: an existing destination directory keeps its mode",
            sources: &["a.txt"],
            dest: "/opt/",
            chmod: Some("777"),
            expect: Tree(&[
                ("opt", "d711 4242:4242 T"),
                ("opt/a.txt", "f777 0:0 T alpha"),
            ]),
            ..BASE
        },
        Case {
            name: "--chmod octal: the parents of a file destination are made with the mode",
            sources: &["a.txt"],
            dest: "/fp/x/a",
            chmod: Some("777"),
            expect: Tree(&[
                ("fp", "d777 0:0 t"),
                ("fp/x", "d777 0:0 t"),
                ("fp/x/a", "f777 0:0 T alpha"),
            ]),
            ..BASE
        },
        Case {
            name: "--chmod octal with special bits: directories made get only the 0777 bits",
            sources: &["dir/sub"],
            dest: "/sp/q/",
            chmod: Some("4755"),
            expect: Tree(&[
                ("sp", "d755 0:0 t"),
                ("sp/q", "d755 0:0 t"),
                ("sp/q/g", "f4755 0:0 T gee"),
            ]),
            ..BASE
        },
        Case {
            name: "--chmod symbolic: the destination and parents made are 0755",
            sources: &["dir/sub"],
            dest: "/s/t/dst",
            chmod: Some("u+x,g=r"),
            expect: Tree(&[
                ("s", "d755 0:0 t"),
                ("s/t", "d755 0:0 t"),
                ("s/t/dst", "d755 0:0 t"),
                ("s/t/dst/g", "f740 0:0 T gee"),
            ]),
            ..BASE
        },
        Case {
            name: "--chmod octal on a heredoc: the parents made get the mode",
            inline: &[("EOF", "hi\n")],
            dest: "/h/i/x.txt",
            chmod: Some("640"),
            expect: Tree(&[
                ("h", "d640 0:0 t"),
                ("h/i", "d640 0:0 t"),
                ("h/i/x.txt", "f640 0:0 t hi\n"),
            ]),
            ..BASE
        },
        Case {
            name: "--chmod symbolic is applied to each file's mode (X for directories)",
            sources: &["dir", "run.sh"],
            dest: "/d/",
            chmod: Some("u+w,go=r,a+X"),
            expect: Tree(&[
                ("d", "d755 0:0 t"),
                ("d/app.log", "f644 0:0 T log"),
                ("d/f", "f644 0:0 T eff"),
                ("d/link", "l 0:0 T ../a.txt"),
                ("d/run.sh", "f755 0:0 T #!/bin/sh"),
                ("d/sub", "d755 0:0 T"),
                ("d/sub/g", "f644 0:0 T gee"),
            ]),
            ..BASE
        },
        Case {
            name: "--chmod with a value that is not a mode",
            sources: &["a.txt"],
            dest: "/x",
            chmod: Some("888"),
            expect: Error(
                "invalid chmod parameter: '888'. it should be octal string and between 0 and 07777",
            ),
            ..BASE
        },
        Case {
            name: "--exclude leaves out matching paths below a copied directory and wildcard matches",
            sources: &["dir", "*.txt"],
            dest: "/e/",
            exclude: &["*.log", "sub", "b.txt", "kiln-*"],
            expect: Tree(&[
                ("e", "d755 0:0 t"),
                ("e/a.txt", "f644 0:0 T alpha"),
                ("e/f", "f644 0:0 T eff"),
                ("e/link", "l 0:0 T ../a.txt"),
                ("e/link.txt", "f644 0:0 T alpha"),
            ]),
            ..BASE
        },
        Case {
            name: "--from keeps owners and honours whiteouts and opaque directories",
            from: Some(STAGE),
            sources: &["/app"],
            dest: "/app",
            expect: Tree(&[
                ("app", "d755 0:0 t"),
                ("app/bin", "f755 4242:4242 T binary"),
                ("app/keep.txt", "f644 4242:4242 T kept"),
                ("app/lnk", "l 4242:4242 T /app/bin"),
                ("app/opaque", "d755 4242:4242 T"),
                ("app/opaque/new", "f644 4242:4242 T new"),
                ("app/sub", "d755 4242:4242 T"),
                ("app/sub/y.txt", "f644 4242:4242 T why"),
                ("app/x.txt", "f644 4242:4242 T ex"),
            ]),
            ..BASE
        },
        Case {
            name: "--from follows a source symlink inside the stage and matches wildcards",
            from: Some(STAGE),
            sources: &["/data/*.txt", "/app/lnk", "data/s*/y.txt"],
            dest: "/f/",
            expect: Tree(&[
                ("f", "d755 0:0 t"),
                ("f/keep.txt", "f644 4242:4242 T kept"),
                ("f/lnk", "f755 4242:4242 T binary"),
                ("f/x.txt", "f644 4242:4242 T ex"),
                ("f/y.txt", "f644 4242:4242 T why"),
            ]),
            ..BASE
        },
        Case {
            name: "--from: a whited-out source is not found",
            from: Some(STAGE),
            sources: &["/app/gone"],
            dest: "/x",
            expect: Error("\"/app/gone\" not found in the --from stage or image"),
            ..BASE
        },
        Case {
            name: "--from: a relative symlink that climbs out stays in the stage (the host's /etc is never read)",
            from: Some(STAGE),
            sources: &["/esc/hostname"],
            dest: "/x",
            expect: Error("\"/esc/hostname\" not found in the --from stage or image"),
            ..BASE
        },
        Case {
            name: "--from: a symlink loop is an error",
            from: Some(STAGE),
            sources: &["/loop1"],
            dest: "/x",
            expect: Error("too many levels of symbolic links"),
            ..BASE
        },
        Case {
            name: "--from with --chown",
            from: Some(STAGE),
            sources: &["/app/x.txt"],
            dest: "/x",
            chown: Some("7:8"),
            expect: Tree(&[("x", "f644 7:8 T ex")]),
            ..BASE
        },
        Case {
            name: "heredoc files are 0644, root-owned, made now",
            inline: &[("EOF", "hello\n"), ("second", "two\n")],
            dest: "/h/",
            expect: Tree(&[
                ("h", "d755 0:0 t"),
                ("h/EOF", "f644 0:0 t hello\n"),
                ("h/second", "f644 0:0 t two\n"),
            ]),
            ..BASE
        },
        Case {
            name: "a heredoc to a file path, with --chmod and --chown",
            inline: &[("EOF", "#!/bin/sh\n")],
            dest: "/usr/bin/tool",
            chmod: Some("755"),
            chown: Some("app"),
            expect: Tree(&[
                ("usr", "d755 4242:4242 T"),
                ("usr/bin", "d755 4242:4242 T"),
                ("usr/bin/tool", "f755 1001:1002 t #!/bin/sh\n"),
            ]),
            ..BASE
        },
        Case {
            name: "COPY of a URL is an error",
            sources: &["https://example.com/file.tar.gz"],
            dest: "/x",
            expect: Error("source can't be a URL for COPY"),
            ..BASE
        },
        // The worker copies URLs and git checkouts from their own directories (tests/it/add_url.rs,
        // add_git.rs); one that reached the copy of local sources would be kiln's bug.
        Case {
            name: "ADD of a URL is not a local copy",
            sources: &["https://example.com/file.tar.gz"],
            dest: "/x",
            add: true,
            expect: Error("a URL reached the copy of local sources"),
            ..BASE
        },
        Case {
            name: "ADD of a git repository is not a local copy",
            sources: &["https://github.com/moby/buildkit.git#v0.1"],
            dest: "/x",
            add: true,
            expect: Error("a git repository reached the copy of local sources"),
            ..BASE
        },
        Case {
            name: "ADD extracts plain, gzip, bzip2, xz and zstd tars, recognised by content",
            archives: &[
                (
                    "plain.bin",
                    "tar",
                    &[("p/", "d750"), ("p/plain", "f600:plain")],
                ),
                ("g.tar.gz", "gz", &[("gz", "f:gzip")]),
                ("b.tbz", "bz2", &[("bz", "f:bzip2")]),
                ("x.txz", "xz", &[("xz", "f:xz")]),
                ("z.zst", "zst", &[("zs", "f:zstd")]),
            ],
            sources: &["plain.bin", "g.tar.gz", "b.tbz", "x.txz", "z.zst"],
            dest: "/out",
            add: true,
            expect: Tree(&[
                ("out", "d755 0:0 t"),
                ("out/bz", "f644 7:7 T bzip2"),
                ("out/gz", "f644 7:7 T gzip"),
                ("out/p", "d750 7:7 T"),
                ("out/p/plain", "f600 7:7 T plain"),
                ("out/xz", "f644 7:7 T xz"),
                ("out/zs", "f644 7:7 T zstd"),
            ]),
            ..BASE
        },
        Case {
            name: "ADD of a file that only looks like an archive by name copies it",
            context: &[("fake.tar.gz", "f:not a tar")],
            sources: &["fake.tar.gz"],
            dest: "/x/",
            add: true,
            expect: Tree(&[
                ("x", "d755 0:0 t"),
                ("x/fake.tar.gz", "f644 0:0 T not a tar"),
            ]),
            ..BASE
        },
        Case {
            name: "COPY never extracts",
            archives: &[("a.tar", "tar", &[("inside", "f:i")])],
            sources: &["a.tar"],
            dest: "/x",
            expect: Tree(&[("x", "f644 0:0 t <2048 bytes>")]),
            ..BASE
        },
        Case {
            name: "ADD --chown overrides the archive's owners; the extraction dir is made as the user",
            archives: &[("a.tar", "tar", &[("d/", "d700"), ("d/f", "f:x")])],
            sources: &["a.tar"],
            dest: "/x/y",
            chown: Some("9"),
            add: true,
            expect: Tree(&[
                ("x", "d755 9:9 t"),
                ("x/y", "d755 9:9 t"),
                ("x/y/d", "d700 9:9 T"),
                ("x/y/d/f", "f644 9:9 T x"),
            ]),
            ..BASE
        },
        Case {
            name: "ADD: a symlink in the archive to / keeps later entries inside the destination",
            archives: &[(
                "a.tar",
                "tar",
                &[
                    ("root", "l:/"),
                    ("root/etc/kiln-canary.txt", "f:x"),
                    ("rel", "l:../../.."),
                    ("rel/kiln-canary.txt", "f:y"),
                ],
            )],
            sources: &["a.tar"],
            dest: "/x",
            add: true,
            expect: Tree(&[
                ("x", "d755 0:0 t"),
                ("x/etc", "d755 0:0 t"),
                ("x/etc/kiln-canary.txt", "f644 7:7 T x"),
                ("x/kiln-canary.txt", "f644 7:7 T y"),
                ("x/rel", "l 7:7 T ../../.."),
                ("x/root", "l 7:7 T /"),
            ]),
            ..BASE
        },
        Case {
            name: "ADD: an entry that climbs out of the destination is refused",
            archives: &[("a.tar", "tar", &[("../kiln-canary.txt", "f:x")])],
            sources: &["a.tar"],
            dest: "/x",
            add: true,
            expect: Error("outside the extraction root"),
            ..BASE
        },
        Case {
            name: "ADD: whiteout names are refused",
            archives: &[("a.tar", "tar", &[(".wh.etc", "f:")])],
            sources: &["a.tar"],
            dest: "/",
            add: true,
            expect: Error("a name starting with .wh. would read as a whiteout"),
            ..BASE
        },
        Case {
            name: "ADD: hardlinks to earlier entries and to image files (copied)",
            archives: &[(
                "a.tar",
                "tar",
                &[("f", "f:data"), ("h", "h:f"), ("img", "h:opt/old")],
            )],
            sources: &["a.tar"],
            dest: "/",
            add: true,
            expect: Tree(&[
                ("f", "f644 7:7 T data"),
                ("h", "f644 7:7 T data"),
                ("img", "f644 7:7 T old"),
            ]),
            ..BASE
        },
        Case {
            name: "ADD: a hardlink that climbs out of the destination is refused",
            archives: &[("a.tar", "tar", &[("h", "h:../../etc/hostname")])],
            sources: &["a.tar"],
            dest: "/x",
            add: true,
            expect: Error("outside the extraction root"),
            ..BASE
        },
        Case {
            name: "ADD: a hardlink through the archive's symlink to / stays in the destination",
            archives: &[("a.tar", "tar", &[("l", "l:/etc"), ("h", "h:l/hostname")])],
            sources: &["a.tar"],
            dest: "/x",
            add: true,
            expect: Error("hardlink target /x/etc/hostname is not an earlier file"),
            ..BASE
        },
        Case {
            name: "ADD: entries under an image symlink follow it (bin -> usr/bin)",
            archives: &[("a.tar", "tar", &[("bin/tool", "f755:t")])],
            sources: &["a.tar"],
            dest: "/",
            add: true,
            expect: Tree(&[
                ("usr", "d755 4242:4242 T"),
                ("usr/bin", "d755 4242:4242 T"),
                ("usr/bin/tool", "f755 7:7 T t"),
            ]),
            ..BASE
        },
        Case {
            name: "ADD: a directory replacing the archive's own file over an image directory is opaque",
            archives: &[(
                "a.tar",
                "tar",
                &[
                    ("opt", "f:file first"),
                    ("opt/", "d755"),
                    ("opt/new", "f:n"),
                ],
            )],
            sources: &["a.tar"],
            dest: "/",
            add: true,
            expect: Tree(&[("opt", "d755 7:7 T opaque"), ("opt/new", "f644 7:7 T n")]),
            ..BASE
        },
        Case {
            name: "ADD: an archive entry replaces an image file, and a directory entry merges",
            archives: &[(
                "a.tar",
                "tar",
                &[("file/", "d700"), ("opt/", "d700"), ("opt/n", "f:n")],
            )],
            sources: &["a.tar"],
            dest: "/",
            add: true,
            expect: Tree(&[
                ("file", "d700 7:7 T"),
                ("opt", "d700 7:7 T"),
                ("opt/n", "f644 7:7 T n"),
            ]),
            ..BASE
        },
        Case {
            name: "a source named like a whiteout is refused",
            context: &[(".wh.x", "f:fake")],
            sources: &[".wh.x"],
            dest: "/",
            expect: Error("a name starting with .wh. would read as a whiteout"),
            ..BASE
        },
    ]
}

/// A tar of `entries` (see [`build`] for the specs; `h:PATH` is a hardlink entry), every entry
/// owned by 7:7 with [`FIXED_MTIME`], compressed as `compression`.
fn tar_bytes(entries: &[(&str, &str)], compression: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, spec) in entries {
        let (kind, rest) = spec.split_at(1);
        let (mode, content) = rest.split_once(':').unwrap_or((rest, ""));
        let mut header = tar::Header::new_gnu();
        header.set_uid(7);
        header.set_gid(7);
        header.set_mtime(FIXED_MTIME as u64);
        let (entry_type, default_mode) = match kind {
            "d" => (tar::EntryType::Directory, 0o755),
            "f" => (tar::EntryType::Regular, 0o644),
            "l" => (tar::EntryType::Symlink, 0o777),
            "h" => (tar::EntryType::Link, 0o644),
            other => panic!("bad tar entry spec {other}"),
        };
        header.set_entry_type(entry_type);
        header.set_mode(u32::from_str_radix(mode, 8).unwrap_or(default_mode));
        let data: &[u8] = if kind == "f" { content.as_bytes() } else { b"" };
        header.set_size(data.len() as u64);
        // Set raw so that `..` and link targets go in as written.
        let name = header.as_old_mut();
        name.name.fill(0);
        name.name[..path.len()].copy_from_slice(path.as_bytes());
        if matches!(kind, "l" | "h") {
            name.linkname.fill(0);
            name.linkname[..content.len()].copy_from_slice(content.as_bytes());
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    let plain = builder.into_inner().unwrap();
    match compression {
        "tar" => plain,
        "gz" => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&plain).unwrap();
            encoder.finish().unwrap()
        }
        "bz2" => {
            let mut encoder =
                bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            encoder.write_all(&plain).unwrap();
            encoder.finish().unwrap()
        }
        "xz" => {
            let mut encoder =
                lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(6))
                    .unwrap();
            encoder.write_all(&plain).unwrap();
            encoder.finish().unwrap()
        }
        "zst" => zstd::encode_all(plain.as_slice(), 3).unwrap(),
        other => panic!("bad compression {other}"),
    }
}

/// Runs one case in a fresh directory; an error message on failure.
fn run(case: &Case) -> Result<(), String> {
    let base = tempfile::tempdir().map_err(|e| e.to_string())?;
    let context_dir = base.path().join("context");
    build(&context_dir, case.context);
    for (name, compression, entries) in case.archives {
        fs::write(context_dir.join(name), tar_bytes(entries, compression))
            .map_err(|e| e.to_string())?;
    }
    let lowers: Vec<PathBuf> = case
        .image
        .iter()
        .enumerate()
        .map(|(index, entries)| {
            let dir = base.path().join(format!("lower{index}"));
            build(&dir, entries);
            dir
        })
        .collect();
    let stage: Vec<PathBuf> = case
        .from
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(index, entries)| {
            let dir = base.path().join(format!("stage{index}"));
            build(&dir, entries);
            dir
        })
        .collect();
    let upper = base.path().join("upper");
    fs::create_dir(&upper).map_err(|e| e.to_string())?;
    let before: Vec<_> = lowers
        .iter()
        .chain(&stage)
        .chain([&context_dir])
        .map(|d| tree(d))
        .collect();

    let context = BuildContext::open(&context_dir, None).map_err(|e| e.to_string())?;
    let source = match case.from {
        Some(_) => CopySource::Layers { layers: &stage },
        None => CopySource::Context { context: &context },
    };
    let request = CopyRequest {
        sources: case.sources.iter().map(|s| s.to_string()).collect(),
        inline: case
            .inline
            .iter()
            .map(|(name, content)| InlineFile {
                name: name.to_string(),
                content: content.to_string(),
                expand: false,
            })
            .collect(),
        dest: case.dest.to_string(),
        workdir: case.workdir.to_string(),
        chown: case.chown.map(str::to_string),
        chmod: case.chmod.map(str::to_string),
        add: case.add,
        exclude: case.exclude.iter().map(|s| s.to_string()).collect(),
        parents: case.parents,
    };
    let result = copy(&request, &source, &lowers, &upper, &Cancel::new());

    let after: Vec<_> = lowers
        .iter()
        .chain(&stage)
        .chain([&context_dir])
        .map(|d| tree(d))
        .collect();
    if before != after {
        return Err("the context, a lower or a stage layer changed".to_string());
    }
    let entries: Vec<String> = fs::read_dir(base.path())
        .map_err(|e| e.to_string())?
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .filter(|name| {
            !(name == "context"
                || name == "upper"
                || name.starts_with("lower")
                || name.starts_with("stage"))
        })
        .collect();
    if !entries.is_empty() {
        return Err(format!("files appeared beside upper: {entries:?}"));
    }
    match (case.expect, result) {
        (Tree(expected), Ok(_)) => {
            let expected: BTreeMap<String, String> = expected
                .iter()
                .map(|(path, desc)| (path.to_string(), desc.to_string()))
                .collect();
            let got = tree(&upper);
            if got != expected {
                return Err(format!(
                    "upper tree:\n  got      {got:?}\n  expected {expected:?}"
                ));
            }
            Ok(())
        }
        (Tree(_), Err(error)) => Err(format!("failed: {error}")),
        (Error(expected), Ok(_)) => Err(format!(
            "succeeded, expected an error with {expected:?}; upper: {:?}",
            tree(&upper)
        )),
        (Error(expected), Err(error)) => {
            let message = error.to_string();
            if message.contains(expected) {
                Ok(())
            } else {
                Err(format!("error {message:?} does not contain {expected:?}"))
            }
        }
    }
}

#[test]
fn copy_rules_table() {
    if support::root().is_none() {
        return;
    }
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(failure) = run(case) {
            failures.push(format!("{}: {failure}", case.name));
        }
    }
    for canary in [
        "/kiln-canary.txt",
        "/etc/kiln-canary.txt",
        "/tmp/kiln-canary.txt",
    ] {
        if Path::new(canary).exists() {
            failures.push(format!("{canary} was written outside upper"));
        }
    }
    for failure in &failures {
        eprintln!("FAIL {failure}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed",
        failures.len(),
        cases.len()
    );
    assert_eq!(cases.len(), 87);
}

/// A fresh base directory with the standard context, the standard image and an empty upper.
struct Setup {
    base: tempfile::TempDir,
    context: BuildContext,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
}

fn setup(context: Entries, image: &[Entries]) -> Setup {
    let base = tempfile::tempdir().unwrap();
    let context_dir = base.path().join("context");
    build(&context_dir, context);
    let lowers = image
        .iter()
        .enumerate()
        .map(|(index, entries)| {
            let dir = base.path().join(format!("lower{index}"));
            build(&dir, entries);
            dir
        })
        .collect();
    let upper = base.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let context = BuildContext::open(&context_dir, None).unwrap();
    Setup {
        base,
        context,
        lowers,
        upper,
    }
}

fn request(sources: &[&str], dest: &str) -> CopyRequest {
    CopyRequest {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        workdir: "/".to_string(),
        ..CopyRequest::default()
    }
}

#[test]
fn files_linked_together_are_linked_in_the_copy_and_counted() {
    if support::root().is_none() {
        return;
    }
    let s = setup(
        &[
            ("d/one", "f:shared"),
            ("d/two", "h:d/one"),
            ("d/other", "f:x"),
        ],
        &[],
    );
    let stats = copy(
        &request(&["d"], "/out"),
        &CopySource::Context {
            context: &s.context,
        },
        &s.lowers,
        &s.upper,
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(
        (stats.files, stats.bytes),
        (3, 7),
        "the link is one file, written once"
    );
    let one = fs::metadata(s.upper.join("out/one")).unwrap();
    let two = fs::metadata(s.upper.join("out/two")).unwrap();
    assert_eq!(one.ino(), two.ino());
    assert_eq!(one.nlink(), 2);
    assert_ne!(
        one.ino(),
        fs::metadata(s.upper.join("out/other")).unwrap().ino()
    );
}

#[test]
fn xattrs_are_kept_but_overlay_bookkeeping_is_not() {
    if support::root().is_none() {
        return;
    }
    let s = setup(&[("f", "f:x"), ("d/", "d")], &[]);
    let context_dir = s.base.path().join("context");
    set_xattr(&context_dir.join("f"), "user.kiln", b"kept");
    set_xattr(&context_dir.join("d"), "user.kiln", b"dir");
    set_xattr(&context_dir.join("d"), "trusted.overlay.opaque", b"y");
    copy(
        &request(&["."], "/c"),
        &CopySource::Context {
            context: &s.context,
        },
        &s.lowers,
        &s.upper,
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(
        get_xattr(&s.upper.join("c/f"), "user.kiln").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        get_xattr(&s.upper.join("c/d"), "user.kiln").as_deref(),
        Some(&b"dir"[..])
    );
    assert_eq!(
        get_xattr(&s.upper.join("c/d"), "trusted.overlay.opaque"),
        None
    );
}

#[test]
fn a_cancelled_copy_stops_with_an_error() {
    if support::root().is_none() {
        return;
    }
    let s = setup(CONTEXT, &[]);
    let cancel = Cancel::new();
    cancel.cancel();
    let error = copy(
        &request(&["dir"], "/d"),
        &CopySource::Context {
            context: &s.context,
        },
        &s.lowers,
        &s.upper,
        &cancel,
    )
    .unwrap_err();
    assert!(matches!(error, CopyError::Cancelled), "{error}");
}

#[test]
fn workdir_is_mkdir_p_in_the_image() {
    if support::root().is_none() {
        return;
    }
    // (path, chown, expected upper tree or error)
    type MkdirCase = (
        &'static str,
        Option<(u32, u32)>,
        Result<Entries, &'static str>,
    );
    let cases: &[MkdirCase] = &[
        ("/opt", None, Ok(&[])),
        ("/usr/bin/", None, Ok(&[])),
        (
            "/app/src",
            None,
            Ok(&[("app", "d755 0:0 t"), ("app/src", "d755 0:0 t")]),
        ),
        (
            "/opt/x/y",
            Some((1000, 1001)),
            Ok(&[
                ("opt", "d711 4242:4242 T"),
                ("opt/x", "d755 1000:1001 t"),
                ("opt/x/y", "d755 1000:1001 t"),
            ]),
        ),
        (
            "/bin/tools",
            None,
            Ok(&[
                ("usr", "d755 4242:4242 T"),
                ("usr/bin", "d755 4242:4242 T"),
                ("usr/bin/tools", "d755 0:0 t"),
            ]),
        ),
        (
            "/evil/kiln-canary",
            None,
            Ok(&[
                ("etc", "d755 4242:4242 T"),
                ("etc/kiln-canary", "d755 0:0 t"),
            ]),
        ),
        ("relative/../w", None, Ok(&[("w", "d755 0:0 t")])),
        ("/file", None, Err("mkdir /file: not a directory")),
        ("/file/sub", None, Err("/file is not a directory")),
    ];
    let mut failures = Vec::new();
    for (path, chown, expected) in cases {
        let s = setup(&[], IMAGE);
        let before: Vec<_> = s.lowers.iter().map(|d| tree(d)).collect();
        let result = mkdir(path, *chown, &s.lowers, &s.upper);
        let after: Vec<_> = s.lowers.iter().map(|d| tree(d)).collect();
        if before != after {
            failures.push(format!("{path}: a lower changed"));
        }
        match (expected, result) {
            (Ok(entries), Ok(())) => {
                let expected: BTreeMap<String, String> = entries
                    .iter()
                    .map(|(p, d)| (p.to_string(), d.to_string()))
                    .collect();
                let got = tree(&s.upper);
                if got != expected {
                    failures.push(format!("{path}: got {got:?}, expected {expected:?}"));
                }
            }
            (Ok(_), Err(error)) => failures.push(format!("{path}: failed: {error}")),
            (Err(expected), Ok(())) => {
                failures.push(format!("{path}: succeeded, expected {expected}"))
            }
            (Err(expected), Err(error)) => {
                if !error.to_string().contains(expected) {
                    failures.push(format!("{path}: error {error} lacks {expected}"));
                }
            }
        }
    }
    assert!(!Path::new("/etc/kiln-canary").exists());
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(cases.len(), 9);
}

#[test]
fn the_union_view_honours_whiteouts_and_opaque_dirs_and_stays_in_its_root() {
    if support::root().is_none() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let layers: Vec<PathBuf> = STAGE
        .iter()
        .enumerate()
        .map(|(index, entries)| {
            let dir = base.path().join(format!("l{index}"));
            build(&dir, entries);
            dir
        })
        .collect();
    let union = UnionFs::new(layers).unwrap();
    let names: Vec<String> = union
        .read_dir("/data")
        .unwrap()
        .into_iter()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["bin", "keep.txt", "lnk", "opaque", "sub", "x.txt"]);
    assert_eq!(
        union.resolve("/esc/hostname", true).unwrap(),
        "/etc/hostname"
    );
    let opaque: Vec<_> = union
        .read_dir("/app/opaque")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(opaque, ["new"]);
    assert_eq!(union.lstat("/app/gone").unwrap(), None);
    assert_eq!(
        union.lstat("/app/keep.txt").unwrap().map(|m| m.uid),
        Some(OWNER)
    );
    assert_eq!(
        union.lstat("/data").unwrap().map(|m| m.kind),
        Some(kiln::builder::steps::union::FileKind::Symlink)
    );
    assert_eq!(union.resolve("/data/lnk", true).unwrap(), "/app/bin");
    assert_eq!(union.resolve("/data/lnk", false).unwrap(), "/app/lnk");
    assert_eq!(union.resolve("/../../data/../../x", true).unwrap(), "/x");
    assert_eq!(
        union.resolve("/data/missing/more", true).unwrap(),
        "/app/missing/more"
    );
    assert!(
        union
            .resolve("/loop1", true)
            .unwrap_err()
            .to_string()
            .contains("too many levels")
    );
    assert!(
        union
            .resolve("/app/bin/x", true)
            .unwrap_err()
            .to_string()
            .contains("/app/bin is not a directory")
    );
    let mut content = String::new();
    std::io::Read::read_to_string(
        &mut union.open_file("/data/keep.txt").unwrap(),
        &mut content,
    )
    .unwrap();
    assert_eq!(content, "kept");
    assert!(union.open_file("/app").is_err());
    assert!(union.open_file("/app/gone").is_err());
}
