//! Build contexts other than a local directory argument: a context tar on standard input
//! (`kiln build - < context.tar`, plain or compressed, as docker's `DetectArchiveReader`), read
//! as BuildKit reads what buildx uploads (an http context: no `.dockerignore`, the tar's owners
//! kept and in the cache key, no device nodes), and a bare Dockerfile on stdin still building
//! without a context; a hostile tar is unpacked confined to a private directory (nothing
//! outside is written) or refused, as docker's `Untar` refuses a name climbing out. Named contexts (`--build-context NAME=VALUE`, BuildKit's
//! `namedContext`): a directory (with its own `.dockerignore`) or `docker-image://` replacing
//! what FROM, `COPY --from` and `RUN --mount from=` call NAME, a stage of that name included.

use crate::build::{Built, Events, builder};
use std::fs;
use std::io::Write as _;
use std::path::Path;

/// A tar stream of `entries`: `(name, Some(content))` a file, `(name, None)` a directory.
/// Names are written raw into the header, so `../x` and `/x` can be made.
pub(crate) fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in entries {
        let mut header = tar::Header::new_gnu();
        raw_name(&mut header, name);
        match content {
            Some(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder.append(&header, *data).expect("append");
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(0o755);
                header.set_cksum();
                builder.append(&header, &[][..]).expect("append");
            }
        }
    }
    builder.into_inner().expect("tar")
}

/// A tar stream of the symlink `name -> target` followed by the entries of the tar `rest`.
pub(crate) fn with_symlink_first(name: &str, target: &str, rest: Vec<u8>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    raw_name(&mut header, name);
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_link_name(target).expect("link name");
    header.set_size(0);
    header.set_mode(0o777);
    header.set_cksum();
    builder.append(&header, &[][..]).expect("append");
    let mut out = builder.into_inner().expect("tar");
    // Drop this tar's two end blocks; `rest` brings its own.
    out.truncate(out.len() - 1024);
    out.extend(rest);
    out
}

fn raw_name(header: &mut tar::Header, name: &str) {
    let field = &mut header.as_gnu_mut().expect("gnu header").name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// `kiln build --progress json ARGS -` with `stdin` on standard input.
fn build_stdin(builder: &crate::build::Builder, args: &[&str], stdin: &[u8]) -> Built {
    let mut all = vec!["build", "--progress", "json"];
    all.extend(args);
    all.push("-");
    let out = builder.kiln(&all).stdin(stdin).run();
    let events = Events::parse(&out.stderr_str());
    Built { out, events }
}

/// What is left in the store's staging area (the unpacked context must be gone).
pub(crate) fn staged(root: &Path) -> Vec<String> {
    fs::read_dir(root.join("tmp"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".context"))
                .collect()
        })
        .unwrap_or_default()
}

/// buildx sends a stdin tar as an http context, to which BuildKit applies no `.dockerignore`
/// (neither the context's nor `<Dockerfile>.dockerignore`), as to a URL context.
#[test]
fn a_context_tar_on_stdin_is_the_context_without_dockerignore() {
    let Some(builder) = builder() else { return };
    let tar = tar_of(&[
        (
            "Dockerfile",
            Some(b"FROM base\nCOPY . /ctx/\nRUN cat /ctx/a.txt > /seen\n"),
        ),
        (".dockerignore", Some(b"ignored.txt\n")),
        ("a.txt", Some(b"from the tar\n")),
        ("ignored.txt", Some(b"still copied\n")),
        ("sub", None),
        ("sub/b.txt", Some(b"b\n")),
    ]);
    build_stdin(&builder, &["-t", "tar-ctx"], &tar).ok();
    assert_eq!(builder.run("tar-ctx", "cat", &["/seen"]), "from the tar\n");
    assert_eq!(builder.run("tar-ctx", "cat", &["/ctx/sub/b.txt"]), "b\n");
    assert_eq!(
        builder.run("tar-ctx", "cat", &["/ctx/ignored.txt"]),
        "still copied\n"
    );
    assert!(staged(builder.root()).is_empty());

    // gzip-compressed, with -f naming a Dockerfile inside the tar; its own ignore file beside
    // it does not apply either.
    let tar = gzip(&tar_of(&[
        ("build", None),
        ("build/app.Dockerfile", Some(b"FROM base\nCOPY x /x\n")),
        ("build/app.Dockerfile.dockerignore", Some(b"x\n")),
        ("x", Some(b"gzipped\n")),
    ]));
    build_stdin(
        &builder,
        &["-t", "gz-ctx", "-f", "build/app.Dockerfile"],
        &tar,
    )
    .ok();
    assert_eq!(builder.run("gz-ctx", "cat", &["/x"]), "gzipped\n");

    // The dry run lists the whole context and no ignore file.
    let out = builder
        .kiln(&["build", "--dry-run", "-"])
        .stdin(tar_of(&[
            ("Dockerfile", Some(b"FROM base\nCOPY . /ctx/\n")),
            (".dockerignore", Some(b"*\n")),
            ("a.txt", Some(b"a\n")),
        ]))
        .run()
        .success()
        .stdout_str();
    assert!(
        out.contains("context     - (3 entries no .dockerignore)"),
        "{out}"
    );
    // Its time for SOURCE_DATE_EPOCH=context is its newest file's (every entry of owned_tar
    // has the mtime 1600000000), as for a downloaded archive without Last-Modified (buildx
    // uploads it without one).
    let out = builder
        .kiln(&[
            "build",
            "--dry-run",
            "--build-arg",
            "SOURCE_DATE_EPOCH=context",
            "-",
        ])
        .stdin(owned_tar(&[owned_file(
            "Dockerfile",
            0,
            0,
            0o644,
            "FROM base\n",
        )]))
        .run()
        .success()
        .stdout_str();
    assert!(
        out.contains("epoch       1600000000 (SOURCE_DATE_EPOCH)"),
        "{out}"
    );

    // A tar without the Dockerfile: a clear error.
    let tar = tar_of(&[("x", Some(b"x\n"))]);
    let err = build_stdin(&builder, &[], &tar).fails();
    assert!(err.contains("cannot read the Dockerfile"), "{err}");
    assert!(staged(builder.root()).is_empty());
}

/// One entry of [`owned_tar`].
pub(crate) struct Owned<'a> {
    pub(crate) name: &'a str,
    pub(crate) kind: tar::EntryType,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mode: u32,
    /// The content of a file, the target of a link.
    pub(crate) data: &'a str,
}

/// A tar of `entries` with the owners, modes and types they give (mtime 1600000000).
pub(crate) fn owned_tar(entries: &[Owned<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry.kind);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mode(entry.mode);
        header.set_mtime(1_600_000_000);
        match entry.kind {
            tar::EntryType::Regular => {
                header.set_size(entry.data.len() as u64);
                builder
                    .append_data(&mut header, entry.name, entry.data.as_bytes())
                    .expect("append");
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                header.set_size(0);
                builder
                    .append_link(&mut header, entry.name, entry.data)
                    .expect("append");
            }
            _ => {
                header.set_size(0);
                header.set_device_major(1).expect("major");
                header.set_device_minor(3).expect("minor");
                builder
                    .append_data(&mut header, entry.name, &[][..])
                    .expect("append");
            }
        }
    }
    builder.into_inner().expect("tar")
}

/// A file entry of [`owned_tar`].
pub(crate) fn owned_file<'a>(
    name: &'a str,
    uid: u64,
    gid: u64,
    mode: u32,
    data: &'a str,
) -> Owned<'a> {
    Owned {
        name,
        kind: tar::EntryType::Regular,
        uid,
        gid,
        mode,
        data,
    }
}

/// BuildKit keeps the owners a context tar gives its entries (buildctl v0.32 with the tar as an
/// http context, which is what buildx makes of a stdin tar): `COPY . /x` without `--chown`
/// copies them, `--chown` overrides them, and directories the tar only implies are root's.
/// Device nodes are not created. The owners are part of the COPY's cache key: a tar that
/// differs only in an owner misses the cache, the same tar hits it. A local directory's files
/// stay root's in the image.
#[test]
fn a_context_tar_keeps_its_owners_and_they_are_in_the_cache_key() {
    let Some(builder) = builder() else { return };
    let dockerfile = "FROM base\nCOPY . /ctx/\nCOPY --chown=7:8 . /chowned/\n";
    let entries = |owned_uid: u64| {
        owned_tar(&[
            owned_file("Dockerfile", 0, 0, 0o644, dockerfile),
            owned_file("owned.txt", owned_uid, 4321, 0o640, "owned\n"),
            owned_file("suid", 5, 6, 0o4755, "s\n"),
            Owned {
                name: "d",
                kind: tar::EntryType::Directory,
                uid: 42,
                gid: 43,
                mode: 0o750,
                data: "",
            },
            owned_file("d/f", 44, 45, 0o644, "f\n"),
            owned_file("implicit/g", 70000, 2_097_151, 0o644, "g\n"),
            Owned {
                name: "link",
                kind: tar::EntryType::Symlink,
                uid: 48,
                gid: 49,
                mode: 0o777,
                data: "owned.txt",
            },
            Owned {
                name: "hard",
                kind: tar::EntryType::Link,
                uid: 50,
                gid: 51,
                mode: 0o600,
                data: "d/f",
            },
            Owned {
                name: "null",
                kind: tar::EntryType::Char,
                uid: 0,
                gid: 0,
                mode: 0o666,
                data: "",
            },
        ])
    };
    let out = tempfile::tempdir().expect("tempdir");
    let export = |name: &str| format!("type=local,dest={}", out.path().join(name).display());
    let first = build_stdin(&builder, &["-o", &export("first")], &entries(1234));
    first.ok();
    let fs = out.path().join("first");
    let owner = |path: &str| crate::build::mode_owner(&fs.join(path));
    assert_eq!(owner("ctx/owned.txt"), (0o640, 1234, 4321));
    // chown before chmod: the setuid bit survives.
    assert_eq!(owner("ctx/suid"), (0o4755, 5, 6));
    assert_eq!(owner("ctx/d"), (0o750, 42, 43));
    // The hardlink's header decides the shared inode's owner and mode.
    assert_eq!(owner("ctx/d/f"), (0o600, 50, 51));
    assert_eq!(owner("ctx/hard"), (0o600, 50, 51));
    assert_eq!(owner("ctx/implicit"), (0o755, 0, 0));
    assert_eq!(owner("ctx/implicit/g"), (0o644, 70000, 2_097_151));
    assert_eq!((owner("ctx/link").1, owner("ctx/link").2), (48, 49));
    assert!(!fs.join("ctx/null").exists(), "a device node was created");
    for path in [
        "chowned/owned.txt",
        "chowned/d",
        "chowned/d/f",
        "chowned/implicit/g",
    ] {
        let (_, uid, gid) = owner(path);
        assert_eq!((uid, gid), (7, 8), "{path}");
    }
    assert_eq!(owner("chowned/suid"), (0o4755, 7, 8));
    assert!(staged(builder.root()).is_empty());

    // The same tar again: both COPYs hit the cache.
    let again = build_stdin(&builder, &[], &entries(1234));
    again.ok();
    assert!(again.events.ran().is_empty(), "{:?}", again.events.ran());
    // Only an owner differs: both COPYs miss (the --chown result is the same, but the key
    // covers what was read) and the image has the new owner.
    let changed = build_stdin(&builder, &["-o", &export("changed")], &entries(1235));
    changed.ok();
    assert_eq!(
        changed.events.ran(),
        ["COPY . /ctx/", "COPY --chown=7:8 . /chowned/"]
    );
    let changed_owner = crate::build::mode_owner(&out.path().join("changed/ctx/owned.txt"));
    assert_eq!(changed_owner, (0o640, 1235, 4321));

    // A local directory holding the same files: root's in the image, whoever owns them.
    let dir = crate::support::context(&[("Dockerfile", "FROM base\nCOPY . /ctx/\n")]);
    std::fs::write(dir.path().join("owned.txt"), "owned\n").expect("write");
    std::os::unix::fs::lchown(dir.path().join("owned.txt"), Some(1234), Some(4321)).expect("chown");
    builder.build(dir.path(), &["-o", &export("local")]).ok();
    let local_owner = crate::build::mode_owner(&out.path().join("local/ctx/owned.txt"));
    assert_eq!((local_owner.1, local_owner.2), (0, 0));
}

#[test]
fn a_dockerfile_on_stdin_still_builds_without_a_context() {
    let Some(builder) = builder() else { return };
    build_stdin(
        &builder,
        &["-t", "bare"],
        b"FROM base\nRUN echo bare > /b\n",
    )
    .ok();
    assert_eq!(builder.run("bare", "cat", &["/b"]), "bare\n");
}

#[test]
fn a_hostile_context_tar_writes_nothing_outside() {
    let Some(builder) = builder() else { return };
    let outside = tempfile::tempdir().expect("tempdir");
    let target = outside.path().join("escaped");

    // `../x` climbs out of the context: refused, as docker's Untar refuses it.
    let tar = tar_of(&[
        ("Dockerfile", Some(b"FROM base\n")),
        ("../escaped", Some(b"x\n")),
    ]);
    let err = build_stdin(&builder, &[], &tar).fails();
    assert!(
        err.contains("cannot read the build context from standard input"),
        "{err}"
    );
    assert!(staged(builder.root()).is_empty());

    // A symlink to the outside directory, then a file through it: the link resolves inside
    // the context, where its target does not exist, so the entry is refused (docker's Untar,
    // chrooted, fails the same way); the outside directory stays empty.
    let tar = with_symlink_first(
        "link",
        &outside.path().display().to_string(),
        tar_of(&[
            ("Dockerfile", Some(b"FROM base\n")),
            ("link/escaped", Some(b"through the link\n")),
        ]),
    );
    let err = build_stdin(&builder, &[], &tar).fails();
    assert!(err.contains("link/escaped"), "{err}");
    assert!(
        !target.exists(),
        "a tar entry was written outside the context"
    );
    assert!(staged(builder.root()).is_empty());

    // An absolute name is taken inside the context.
    let tar = tar_of(&[
        ("Dockerfile", Some(b"FROM base\nCOPY abs.txt /abs\n")),
        ("/abs.txt", Some(b"absolute\n")),
    ]);
    build_stdin(&builder, &["-t", "absolute"], &tar).ok();
    assert_eq!(builder.run("absolute", "cat", &["/abs"]), "absolute\n");
    assert!(staged(builder.root()).is_empty());
}

#[test]
fn a_named_directory_context_is_read_by_copy_from_and_mount_from() {
    let Some(builder) = builder() else { return };
    let lib = crate::support::context(&[
        ("lib.txt", "from the named context\n"),
        ("secret.key", "must be ignored\n"),
        (".dockerignore", "*.key\n"),
    ]);
    let ctx = builder.context(&[(
        "Dockerfile",
        "FROM base\nCOPY --from=lib / /lib/\nRUN --mount=from=lib,target=/m cat /m/lib.txt > /mounted\n",
    )]);
    let flag = format!("lib={}", lib.path().display());
    builder
        .build(ctx.path(), &["-t", "named-dir", "--build-context", &flag])
        .ok();
    assert_eq!(
        builder.run("named-dir", "cat", &["/lib/lib.txt"]),
        "from the named context\n"
    );
    assert_eq!(
        builder.run("named-dir", "cat", &["/mounted"]),
        "from the named context\n"
    );
    let listing = builder.run("named-dir", "ls", &["-a", "/lib"]);
    assert!(!listing.contains("secret.key"), "{listing}");
    // Files come owned by root, as from the main context.
    assert_eq!(
        builder.run("named-dir", "stat", &["-c", "%u:%g", "/lib/lib.txt"]),
        "0:0\n"
    );

    // FROM NAME starts a stage on the directory's files.
    let from = builder.context(&[(
        "Dockerfile",
        "FROM lib AS l\nFROM base\nCOPY --from=l /lib.txt /x\n",
    )]);
    builder
        .build(from.path(), &["-t", "from-dir", "--build-context", &flag])
        .ok();
    assert_eq!(
        builder.run("from-dir", "cat", &["/x"]),
        "from the named context\n"
    );

    // Unchanged, the directory is the same image: every step comes from the cache.
    let again = builder.build(ctx.path(), &["--build-context", &flag]);
    again.ok();
    assert!(again.events.ran().is_empty(), "{:?}", again.events.ran());

    // A changed file is seen.
    fs::write(lib.path().join("lib.txt"), "changed\n").expect("write");
    builder
        .build(ctx.path(), &["-t", "named-dir", "--build-context", &flag])
        .ok();
    assert_eq!(builder.run("named-dir", "cat", &["/mounted"]), "changed\n");
}

#[test]
fn a_named_image_context_replaces_a_from_image_and_a_stage() {
    let Some(builder) = builder() else { return };
    let alt = builder.context(&[("Dockerfile", "FROM base\nRUN echo alt > /marker\n")]);
    builder.build(alt.path(), &["-t", "alt"]).ok();

    // FROM NAME where NAME is no stage: the image replaces it (BuildKit compares normalised
    // names, so `example/img` and `docker.io/example/img:latest` are one name).
    let ctx = builder.context(&[(
        "Dockerfile",
        "FROM docker.io/example/img:latest\nRUN cat /marker > /seen\n",
    )]);
    builder
        .build(
            ctx.path(),
            &[
                "-t",
                "replaced",
                "--build-context",
                "example/img=docker-image://alt",
            ],
        )
        .ok();
    assert_eq!(builder.run("replaced", "cat", &["/seen"]), "alt\n");

    // A stage of that name is replaced whole: its own steps never run.
    let ctx = builder.context(&[(
        "Dockerfile",
        "FROM base AS deps\nRUN exit 3\nFROM base\nCOPY --from=deps /marker /m\n",
    )]);
    let built = builder.build(
        ctx.path(),
        &[
            "-t",
            "stage-replaced",
            "--build-context",
            "deps=docker-image://alt",
        ],
    );
    built.ok();
    assert_eq!(builder.run("stage-replaced", "cat", &["/m"]), "alt\n");

    // A git context that cannot be fetched fails naming it (tests/it/add_git.rs builds them).
    let err = builder
        .build(
            ctx.path(),
            &["--build-context", "deps=git://127.0.0.1:1/y.git#main"],
        )
        .fails();
    assert!(
        err.contains("cannot use the build context deps: cannot fetch the git context git://127.0.0.1:1/y.git"),
        "{err}"
    );
}

#[test]
fn a_named_oci_layout_context_is_copied_from_the_layout() {
    let Some(builder) = builder() else { return };
    let alt = builder.context(&[(
        "Dockerfile",
        "FROM base\nRUN echo from the layout > /marker\n",
    )]);
    let out = tempfile::tempdir().expect("tempdir");
    let archive = out.path().join("alt.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    builder.build(alt.path(), &["-o", &dest]).ok();
    let layout = out.path().join("layout");
    tar::Archive::new(fs::File::open(&archive).expect("open"))
        .unpack(&layout)
        .expect("unpack the layout");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index")).expect("json");
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();

    let ctx = builder.context(&[("Dockerfile", "FROM base\nCOPY --from=lay /marker /m\n")]);
    for value in [
        format!("lay=oci-layout://{}@{digest}", layout.display()),
        format!("lay=oci-layout://{}", layout.display()),
    ] {
        builder
            .build(
                ctx.path(),
                &["-t", "from-layout", "--build-context", &value],
            )
            .ok();
        assert_eq!(
            builder.run("from-layout", "cat", &["/m"]),
            "from the layout\n"
        );
    }

    // A tag the layout does not have: a clear error.
    let value = format!("lay=oci-layout://{}:nope", layout.display());
    let err = builder
        .build(ctx.path(), &["--build-context", &value])
        .fails();
    assert!(err.contains("names no image \"nope\""), "{err}");
}

#[test]
fn whiteout_names_in_a_context_tar_are_plain_files() {
    let Some(builder) = builder() else { return };
    // As buildctl v0.32.2 unpacks an http context: `.wh.` names are files, nothing is deleted.
    let tar = |dockerfile: &'static [u8]| {
        tar_of(&[
            ("Dockerfile", Some(dockerfile)),
            ("keep.txt", Some(b"keep")),
            (".wh.keep.txt", Some(b"w")),
            (".wh.nothing", Some(b"z")),
            ("dir", None),
            ("dir/.wh..wh..opq", Some(b"o")),
            ("dir/inside.txt", Some(b"i")),
        ])
    };
    let out = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", out.path().join("fs").display());
    let copy = b"FROM scratch\nCOPY keep.txt /keep.txt\nCOPY dir/inside.txt /inside.txt\n";
    build_stdin(&builder, &["-o", &dest], &tar(copy)).ok();
    let fs_root = out.path().join("fs");
    assert_eq!(
        fs::read_to_string(fs_root.join("keep.txt")).unwrap_or_default(),
        "keep"
    );
    assert_eq!(
        fs::read_to_string(fs_root.join("inside.txt")).unwrap_or_default(),
        "i"
    );
    // Copying the `.wh.` names themselves into a layer is refused: there they would read as
    // whiteouts (BuildKit writes them and the layer then deletes instead of adding).
    let stderr = build_stdin(&builder, &[], &tar(b"FROM scratch\nCOPY . /ctx/\n")).fails();
    assert!(stderr.contains("would read as a whiteout"), "{stderr}");
}
