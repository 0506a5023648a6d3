//! Build contexts downloaded from an http(s) URL, against a server each test starts on
//! loopback, as BuildKit v0.32's dockerui makes them (`DetectHTTPContext`): a tarball (plain,
//! gzip, bzip2, xz, zstd) is unpacked and is the context, without `.dockerignore`, its mtimes
//! and owners kept; any other body is the Dockerfile, and the context holds it as the file `context`
//! (0600, `Last-Modified`). The download is cached with `If-None-Match`, authenticated with the
//! `HTTP_AUTH_*` secrets, and its time is `SOURCE_DATE_EPOCH=context`. A hostile tarball writes
//! nothing outside its private directory. `--build-context NAME=URL` is the download as the
//! one file `context`, never unpacked.

use crate::build::{Builder, Built, Events, builder};
use crate::build_context::{owned_file, owned_tar, staged, tar_of, with_symlink_first};
use crate::support::http::{Resource, Server};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;

const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const LAST_MODIFIED_SECONDS: i64 = 784_111_777;
/// The mtime of every entry of [`context_tar`].
const ENTRY_MTIME: u64 = 1_600_000_000;

/// A tar of `files` (name, content), each 0644 (a name ending in `/` a directory, 0755) with
/// mtime [`ENTRY_MTIME`].
fn context_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        if name.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
        }
        header.set_mtime(ENTRY_MTIME);
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, name, data.as_bytes())
            .expect("append");
    }
    tar.into_inner().expect("tar")
}

/// `plain` compressed as `compression` (`tar`, `gz`, `bz2`, `xz`, `zst`).
fn compressed(plain: &[u8], compression: &str) -> Vec<u8> {
    match compression {
        "tar" => plain.to_vec(),
        "gz" => crate::build_context::gzip(plain),
        "bz2" => {
            let mut encoder =
                bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            encoder.write_all(plain).expect("bzip2");
            encoder.finish().expect("bzip2")
        }
        "xz" => {
            let mut encoder =
                lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(6))
                    .expect("xz");
            encoder.write_all(plain).expect("xz");
            encoder.finish().expect("xz")
        }
        "zst" => zstd::encode_all(plain, 3).expect("zstd"),
        other => panic!("bad compression {other}"),
    }
}

/// `kiln build --progress json ARGS CONTEXT` where CONTEXT is a URL.
fn build_url(builder: &Builder, url: &str, args: &[&str]) -> Built {
    let mut all = vec!["build", "--progress", "json"];
    all.extend(args);
    all.push(url);
    let out = builder.kiln(&all).run();
    let events = Events::parse(&out.stderr_str());
    Built { out, events }
}

fn stat(builder: &Builder, image: &str, path: &str) -> String {
    builder
        .run(image, "stat", &["-c", "%a %u:%g %Y", path])
        .trim()
        .to_string()
}

#[test]
fn a_tarball_url_is_the_context_in_every_compression_without_dockerignore() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    let plain = context_tar(&[
        ("Dockerfile", "FROM base\nCOPY . /ctx/\n"),
        (".dockerignore", "ignored.txt\n"),
        ("a.txt", "from the url\n"),
        (
            "ignored.txt",
            "kept: no .dockerignore for a remote context\n",
        ),
        ("build/app.Dockerfile", "FROM base\nCOPY a.txt /picked\n"),
    ]);
    for compression in ["tar", "gz", "bz2", "xz", "zst"] {
        let path = format!("/ctx.{compression}");
        server.set(&path, Resource::body(compressed(&plain, compression)));
        let image = format!("url-{compression}");
        build_url(&builder, &server.url(&path), &["-t", &image]).ok();
        assert_eq!(
            builder.run(&image, "cat", &["/ctx/a.txt"]),
            "from the url\n",
            "{compression}"
        );
        // BuildKit keeps the tar's mtimes and owners (root's here).
        assert_eq!(
            stat(&builder, &image, "/ctx/a.txt"),
            format!("644 0:0 {ENTRY_MTIME}"),
            "{compression}"
        );
        let listing = builder.run(&image, "ls", &["-a", "/ctx"]);
        assert!(listing.contains("ignored.txt"), "{compression}: {listing}");
    }
    // -f names a Dockerfile inside the archive.
    build_url(
        &builder,
        &server.url("/ctx.gz"),
        &["-t", "url-f", "-f", "build/app.Dockerfile"],
    )
    .ok();
    assert_eq!(builder.run("url-f", "cat", &["/picked"]), "from the url\n");
    // An entry owned by someone else keeps its owner; --chown overrides it.
    let owned = owned_tar(&[
        owned_file(
            "Dockerfile",
            0,
            0,
            0o644,
            "FROM base\nCOPY owned.txt /owned\nCOPY --chown=7:8 owned.txt /chowned\n",
        ),
        owned_file("owned.txt", 1234, 4321, 0o640, "owned\n"),
    ]);
    server.set(
        "/owned.tar.gz",
        Resource::body(crate::build_context::gzip(&owned)),
    );
    build_url(&builder, &server.url("/owned.tar.gz"), &["-t", "url-owned"]).ok();
    assert_eq!(
        stat(&builder, "url-owned", "/owned"),
        "640 1234:4321 1600000000"
    );
    assert_eq!(
        stat(&builder, "url-owned", "/chowned"),
        "640 7:8 1600000000"
    );
    assert!(
        staged(builder.root()).is_empty(),
        "the unpacked context is left"
    );

    // A second build of an unchanged URL asks with If-None-Match and hits the cache.
    server.set(
        "/etag.tar",
        Resource {
            etag: Some("v1".to_string()),
            ..Resource::body(plain.clone())
        },
    );
    build_url(&builder, &server.url("/etag.tar"), &["-t", "etag"]).ok();
    let again = build_url(&builder, &server.url("/etag.tar"), &["-t", "etag"]);
    again.ok();
    assert!(again.events.ran().is_empty(), "{:?}", again.events.ran());
    let last = server.requests().last().cloned().expect("a request");
    assert_eq!(last.if_none_match.as_deref(), Some("\"v1\""));
}

#[test]
fn a_body_that_is_not_an_archive_is_the_dockerfile_and_the_file_context() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    server.set(
        "/Dockerfile",
        Resource {
            last_modified: Some(LAST_MODIFIED.to_string()),
            ..Resource::body("FROM base\nCOPY . /ctx/\nRUN echo built > /built\n")
        },
    );
    let url = server.url("/Dockerfile");
    build_url(&builder, &url, &["-t", "text"]).ok();
    assert_eq!(builder.run("text", "cat", &["/built"]), "built\n");
    // BuildKit's http source file: `context`, 0600, root's, its Last-Modified.
    assert_eq!(
        stat(&builder, "text", "/ctx/context"),
        format!("600 0:0 {LAST_MODIFIED_SECONDS}")
    );
    assert_eq!(
        builder.run("text", "cat", &["/ctx/context"]),
        "FROM base\nCOPY . /ctx/\nRUN echo built > /built\n"
    );
    // The body is the Dockerfile: -f cannot name another.
    let failed = build_url(&builder, &url, &["-f", "other.Dockerfile"]);
    let stderr = failed.fails();
    assert!(stderr.contains("its body is the Dockerfile"), "{stderr}");

    // SOURCE_DATE_EPOCH=context is the body's Last-Modified, in the image and in RUN.
    server.set(
        "/epoch",
        Resource {
            last_modified: Some(LAST_MODIFIED.to_string()),
            ..Resource::body(
                "FROM base\nARG SOURCE_DATE_EPOCH\nRUN echo $SOURCE_DATE_EPOCH > /epoch\n",
            )
        },
    );
    build_url(
        &builder,
        &server.url("/epoch"),
        &["-t", "epoch", "--build-arg", "SOURCE_DATE_EPOCH=context"],
    )
    .ok();
    assert_eq!(
        builder.run("epoch", "cat", &["/epoch"]),
        format!("{LAST_MODIFIED_SECONDS}\n")
    );
    let created = builder.inspect("epoch")["Created"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(created, "1994-11-06T08:49:37Z");
}

#[test]
fn a_context_url_authenticates_with_the_hosts_secret() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    const HEADER: &str = "Bearer c0ntext-t0ken";
    server.set(
        "/private.tar",
        Resource {
            authorization: Some(HEADER.to_string()),
            ..Resource::body(context_tar(&[
                ("Dockerfile", "FROM base\nCOPY a.txt /a\n"),
                ("a.txt", "private\n"),
            ]))
        },
    );
    let url = server.url("/private.tar");
    let refused = build_url(&builder, &url, &[]);
    assert!(refused.fails().contains("401 Unauthorized"));
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), "c0ntext-t0ken").expect("write");
    let flag = format!(
        "id=HTTP_AUTH_TOKEN_127.0.0.1,src={}",
        secret.path().display()
    );
    let built = build_url(&builder, &url, &["-t", "private", "--secret", &flag]);
    built.ok();
    assert_eq!(builder.run("private", "cat", &["/a"]), "private\n");
    assert!(!built.out.stderr_str().contains("c0ntext-t0ken"));
}

#[test]
fn a_hostile_tarball_url_writes_nothing_outside() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    let outside = tempfile::tempdir().expect("tempdir");
    let escaped = outside.path().join("escaped");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "outside\n").expect("write");

    // `../escaped` climbs out of the context: refused.
    let climbing = tar_of(&[
        ("Dockerfile", Some(b"FROM base\n")),
        ("../escaped", Some(b"x\n")),
    ]);
    // A symlink to the outside directory, then a file through it: resolved inside the
    // context, where its target does not exist.
    let through_link = with_symlink_first(
        "link",
        &outside.path().display().to_string(),
        tar_of(&[
            ("Dockerfile", Some(b"FROM base\n")),
            ("link/escaped", Some(b"through the link\n")),
        ]),
    );
    // A hard link to an absolute path outside: resolved inside the context too.
    let hardlink = {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Link);
        header.set_size(0);
        header.set_mode(0o644);
        header
            .set_link_name(victim.display().to_string())
            .expect("link name");
        tar.append_data(&mut header, "hard", &[][..])
            .expect("append");
        let mut out = tar.into_inner().expect("tar");
        out.truncate(out.len() - 1024);
        out.extend(tar_of(&[(
            "Dockerfile",
            Some(b"FROM base\nCOPY hard /hard\n".as_slice()),
        )]));
        out
    };
    for (name, body, why) in [
        ("climbing", climbing, "`..` climbs above the root"),
        (
            "link",
            through_link,
            "parent \"link\" is a dangling symlink",
        ),
        (
            "hardlink",
            hardlink,
            "is not an earlier entry of this layer",
        ),
    ] {
        let path = format!("/{name}.tar.gz");
        server.set(&path, Resource::body(crate::build_context::gzip(&body)));
        let built = build_url(&builder, &server.url(&path), &["-t", name]);
        let stderr = built.fails();
        assert!(
            stderr.contains("cannot unpack the build context downloaded from"),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(why), "{name}: {stderr}");
        assert!(!escaped.exists(), "{name}: a tar entry was written outside");
        let victim_meta = std::fs::metadata(&victim).expect("victim");
        assert_eq!(victim_meta.nlink(), 1, "{name}: the victim was linked");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "outside\n");
        assert!(staged(builder.root()).is_empty(), "{name}: left staged");
    }
    // An absolute name is taken inside the context.
    let absolute = tar_of(&[
        ("Dockerfile", Some(b"FROM base\nCOPY abs.txt /abs\n")),
        ("/abs.txt", Some(b"absolute\n")),
    ]);
    server.set("/absolute.tar", Resource::body(absolute));
    build_url(&builder, &server.url("/absolute.tar"), &["-t", "absolute"]).ok();
    assert_eq!(builder.run("absolute", "cat", &["/abs"]), "absolute\n");
}

#[test]
fn a_named_url_context_is_the_download_as_one_file() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    let tar = context_tar(&[("inner.txt", "not unpacked\n")]);
    server.set(
        "/x.tar",
        Resource {
            last_modified: Some(LAST_MODIFIED.to_string()),
            ..Resource::body(tar.clone())
        },
    );
    let ctx = builder.context(&[(
        "Dockerfile",
        "FROM base\nCOPY --from=x / /x/\nRUN --mount=from=x,target=/m wc -c < /m/context > /size\n",
    )]);
    let flag = format!("x={}", server.url("/x.tar"));
    builder
        .build(ctx.path(), &["-t", "named-url", "--build-context", &flag])
        .ok();
    // BuildKit v0.32 (`llb.HTTP(url, llb.Filename("context"))`): the tar is not unpacked.
    assert_eq!(
        stat(&builder, "named-url", "/x/context"),
        format!("600 0:0 {LAST_MODIFIED_SECONDS}")
    );
    let listing = builder.run("named-url", "ls", &["-a", "/x"]);
    assert!(!listing.contains("inner.txt"), "{listing}");
    assert_eq!(
        builder.run("named-url", "cat", &["/size"]).trim(),
        tar.len().to_string()
    );
    // FROM NAME starts a stage on it.
    let from = builder.context(&[("Dockerfile", "FROM x\n")]);
    let exported = tempfile::tempdir().expect("tempdir");
    let dest = format!("type=local,dest={}", exported.path().display());
    builder
        .build(from.path(), &["--build-context", &flag, "-o", &dest])
        .ok();
    let meta = std::fs::metadata(exported.path().join("context")).expect("context file");
    assert_eq!(meta.len(), tar.len() as u64);
}

/// `path → (mode, size, mtime)` of everything under `dir`, by path relative to it.
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<String, (u32, u64, i64)> {
    let mut found = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
            let meta = std::fs::symlink_metadata(entry.path()).expect("stat");
            if meta.is_dir() {
                pending.push(entry.path());
            }
            let relative = entry
                .path()
                .strip_prefix(dir)
                .expect("inside")
                .display()
                .to_string();
            found.insert(relative, (meta.mode() & 0o7777, meta.len(), meta.mtime()));
        }
    }
    found
}

#[test]
fn url_contexts_give_the_files_buildkit_gives() {
    let Some(_) = crate::support::root() else {
        return;
    };
    let Some(peer) = crate::support::peer_buildctl() else {
        return;
    };
    let server = Server::start();
    // The peer's cache keys leave mtimes out: content of its own keeps an earlier run's result
    // (with other directory times) from answering for this one.
    let nonce = format!("{:?}\n", std::time::SystemTime::now());
    server.set(
        "/ctx.tar.gz",
        Resource::body(crate::build_context::gzip(&context_tar(&[
            ("Dockerfile", "FROM scratch\nCOPY . /ctx/\n"),
            ("nonce.txt", &nonce),
            (".dockerignore", "ignored.txt\n"),
            ("ignored.txt", "kept\n"),
            // Given, so its time is the tar's, not the unpacking's.
            ("sub/", ""),
            ("sub/a.txt", "a\n"),
        ]))),
    );
    server.set(
        "/Dockerfile",
        Resource {
            last_modified: Some(LAST_MODIFIED.to_string()),
            ..Resource::body("FROM scratch\nCOPY . /ctx/\n")
        },
    );
    for path in ["/ctx.tar.gz", "/Dockerfile"] {
        let url = server.url(path);
        let out = tempfile::tempdir().expect("temp dir");
        let (theirs, ours) = (out.path().join("peer"), out.path().join("kiln"));
        let status = peer
            .command()
            .args([
                "build",
                "--frontend",
                "dockerfile.v0",
                "--opt",
                &format!("context={url}"),
                "--output",
                &format!("type=local,dest={}", theirs.display()),
            ])
            .output()
            .expect("buildctl");
        assert!(
            status.status.success(),
            "buildctl: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        crate::support::kiln()
            .root(out.path().join("store"))
            .args([
                "build",
                "-o",
                &format!("type=local,dest={}", ours.display()),
                &url,
            ])
            .run()
            .success();
        // Below /ctx (the directory itself is made when the COPY runs).
        let (theirs, ours) = (tree(&theirs.join("ctx")), tree(&ours.join("ctx")));
        assert!(!ours.is_empty());
        assert_eq!(ours, theirs, "{path}");
    }

    // A named context from the URL: the download as the one file `context`.
    let local = crate::support::context(&[("Dockerfile", "FROM scratch\nCOPY --from=x / /x/\n")]);
    let dir = local.path().display().to_string();
    let url = server.url("/ctx.tar.gz");
    let out = tempfile::tempdir().expect("temp dir");
    let (theirs, ours) = (out.path().join("peer"), out.path().join("kiln"));
    let status = peer
        .command()
        .args([
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            &format!("context={dir}"),
            "--local",
            &format!("dockerfile={dir}"),
            "--opt",
            &format!("context:x={url}"),
            "--output",
            &format!("type=local,dest={}", theirs.display()),
        ])
        .output()
        .expect("buildctl");
    assert!(
        status.status.success(),
        "buildctl: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    crate::support::kiln()
        .root(out.path().join("store"))
        .args([
            "build",
            "--build-context",
            &format!("x={url}"),
            "-o",
            &format!("type=local,dest={}", ours.display()),
            &dir,
        ])
        .run()
        .success();
    let (theirs, ours) = (tree(&theirs.join("x")), tree(&ours.join("x")));
    assert_eq!(ours.keys().collect::<Vec<_>>(), ["context"]);
    assert_eq!(ours, theirs);
}
