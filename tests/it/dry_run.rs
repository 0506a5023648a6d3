//! `kiln build --dry-run` runs the checks the build runs before its first step (one function,
//! `kiln::builder::check`): a Dockerfile the build rejects before running anything fails the
//! dry run with the same message, and a dry run fetches nothing, writes no store, and lists the
//! remote sources the build would fetch.

use crate::support::http::{Resource, Server};
use crate::support::{Output, context, kiln};

/// `kiln --root ROOT build ARGS .` in `dir`.
fn build(root: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> Output {
    let mut all = vec!["build"];
    all.extend(args);
    all.push(".");
    kiln().root(root).args(all).current_dir(dir).run()
}

#[test]
fn what_the_build_rejects_before_its_first_step_fails_the_dry_run_with_the_same_message() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "FROM scratch\nRUN --security=insecure true\n",
            &[],
            "needs the security.insecure entitlement",
        ),
        (
            "FROM scratch\nCOPY --link --chown=app:app a /a\n",
            &[],
            "a linked copy is made on an empty filesystem",
        ),
        (
            "FROM scratch\nADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 a /a\n",
            &[],
            "ADD --checksum is only for URL sources",
        ),
        (
            "FROM scratch\nCOPY missing.txt /x\n",
            &[],
            "file not found in build context",
        ),
        (
            "FROM scratch\nRUN --mount=from=Bad_Name,target=/x true\n",
            &[],
            "invalid image reference \"Bad_Name\"",
        ),
        (
            "FROM scratch AS a\nRUN --mount=from=b,target=/x true\nFROM scratch AS b\n",
            &["--target", "a"],
            "stage \"a\" reads stage \"b\", which is defined after it",
        ),
        (
            "ARG SOURCE_DATE_EPOCH=yesterday\nFROM scratch\n",
            &[],
            "invalid SOURCE_DATE_EPOCH \"yesterday\"",
        ),
        (
            "FROM scratch\nCOPY a /a\n",
            &["--build-context", "lib=/nonexistent/kiln/lib"],
            "cannot use the build context lib",
        ),
    ];
    for (dockerfile, args, expected) in cases {
        let ctx = context(&[("Dockerfile", dockerfile), ("a", "a\n")]);
        let roots = tempfile::tempdir().expect("temp dir");
        let (build_root, dry_root) = (roots.path().join("build"), roots.path().join("dry"));
        let mut build_args = vec!["--progress", "plain"];
        build_args.extend(*args);
        let built = build(&build_root, ctx.path(), &build_args).failure();
        let mut dry_args = vec!["--dry-run"];
        dry_args.extend(*args);
        let dry = build(&dry_root, ctx.path(), &dry_args).failure();
        let (built, dry) = (built.stderr_str(), dry.stderr_str());
        assert!(dry.contains(expected), "{dockerfile}: {dry}");
        // Nothing ran, so the build printed nothing but the error.
        assert_eq!(built, dry, "{dockerfile}");
        assert!(!dry_root.exists(), "{dockerfile}: the dry run made a store");
    }
}

#[test]
fn a_dry_run_lists_the_remote_sources_and_fetches_nothing() {
    let server = Server::start();
    let file = server.url("/file.txt");
    let named = server.url("/x.tar");
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM alpine:3.20 AS a\nADD {file} /f\n\
             FROM x\nCOPY --from=a /f /f\nCOPY --from=tools / /t/\n"
        ),
    )]);
    let lib = context(&[("lib.txt", "l\n")]);
    let root = tempfile::tempdir().expect("temp dir");
    let out = kiln()
        .root(root.path().join("store"))
        .args([
            "build",
            "--dry-run",
            "--build-context",
            &format!("x={named}"),
            "--build-context",
            "tools=docker-image://busybox:1.36",
            "--build-context",
            &format!("lib={}", lib.path().display()),
            ".",
        ])
        .current_dir(ctx.path())
        .run()
        .success()
        .stdout_str();
    let remote: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("remote "))
        .take_while(|l| l.starts_with("remote ") || l.starts_with("    "))
        .map(str::trim)
        .collect();
    let pulled = "(not in the store: the build pulls it; its ENV and ONBUILD are not checked)";
    assert_eq!(
        remote,
        [
            "remote      named context tools=docker-image://busybox:1.36".to_string(),
            format!("named context x={named}"),
            format!("image alpine:3.20 {pulled}"),
            format!("image busybox:1.36 {pulled}"),
            format!("url {file}"),
        ],
        "{out}"
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert!(!root.path().join("store").exists());
}

#[test]
fn a_dry_run_of_a_url_context_downloads_only_the_context() {
    let server = Server::start();
    let file = server.url("/file.txt");
    server.set(
        "/Dockerfile",
        Resource::body(format!("FROM scratch\nADD {file} /f\n")),
    );
    let url = server.url("/Dockerfile");
    let root = tempfile::tempdir().expect("temp dir");
    let out = kiln()
        .root(root.path())
        .args(["build", "--dry-run", &url])
        .run()
        .success()
        .stdout_str();
    assert!(out.starts_with(&format!("dockerfile  {url}\n")), "{out}");
    assert!(
        out.contains(&format!("remote      context {url} (downloaded)\n")),
        "{out}"
    );
    assert!(out.contains(&format!("            url {file}\n")), "{out}");
    let asked: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(asked, ["/Dockerfile"]);
}

#[test]
fn a_multi_platform_dry_run_checks_every_platforms_plan() {
    let server = Server::start();
    let file = server.url("/file");
    let named = server.url("/x.tar");
    let dockerfile = format!(
        "FROM --platform=$BUILDPLATFORM alpine:3.20 AS tools\n\
         FROM x\nARG TARGETARCH\nADD {file}-${{TARGETARCH}}.txt /f\n\
         COPY --from=tools /bin/sh /sh\nCOPY --from=lib lib.txt /\n"
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let lib = context(&[("lib.txt", "l\n")]);
    let root = tempfile::tempdir().expect("temp dir");
    let x = format!("x={named}");
    let lib_context = format!("lib={}", lib.path().display());
    let args = [
        "--dry-run",
        "--platform",
        "linux/amd64,linux/arm64",
        "--build-context",
        &x,
        "--build-context",
        &lib_context,
    ];
    let out = build(&root.path().join("store"), ctx.path(), &args)
        .success()
        .stdout_str();
    assert!(
        out.contains("platforms   linux/amd64, linux/arm64 (stages shown for linux/amd64)"),
        "{out}"
    );
    let remote: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("remote "))
        .take_while(|l| l.starts_with("remote ") || l.starts_with("    "))
        .map(str::trim)
        .collect();
    let pulled = "(not in the store: the build pulls it; its ENV and ONBUILD are not checked)";
    // Each platform's ADD once; the named context and the image once, whatever the platforms.
    assert_eq!(
        remote,
        [
            format!("remote      named context x={named}"),
            format!("image alpine:3.20 {pulled}"),
            format!("url {file}-amd64.txt"),
            format!("url {file}-arm64.txt"),
        ],
        "{out}"
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert!(!root.path().join("store").exists());

    // What only the second platform's plan reads is checked too.
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nARG TARGETARCH\nCOPY file-${TARGETARCH} /f\n",
        ),
        ("file-amd64", "a\n"),
    ]);
    let one = build(
        &root.path().join("store"),
        ctx.path(),
        &["--dry-run", "--platform", "linux/amd64"],
    );
    assert!(
        one.stdout_str().contains("platform    linux/amd64"),
        "{one:?}"
    );
    let both = build(
        &root.path().join("store"),
        ctx.path(),
        &["--dry-run", "--platform", "linux/amd64,linux/arm64"],
    )
    .failure()
    .stderr_str();
    assert!(both.contains("file-arm64"), "{both}");
    assert!(!root.path().join("store").exists());
}
