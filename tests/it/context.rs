//! Build context: ignore-file choice, the walk, and COPY/ADD source selection.

use kiln::frontend::context::{BuildContext, ContextError, Dockerignore, EntryKind};
use kiln::frontend::diagnostic::Located;
use std::fs;

use crate::support::{context, populate};

fn sources(ctx: &BuildContext, source: &str) -> Result<Vec<String>, String> {
    ctx.select_sources(&[source.to_string()])
        .map(|m| m.into_iter().flat_map(|m| m.paths).collect())
        .map_err(|e| e.to_string())
}

#[test]
fn dockerignore_parse_follows_buildkit_reader() {
    let text = "\u{feff}test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n  # not a comment\n! /inverted/abs/path\r\n./x/../y/\n";
    let ignore = Dockerignore::parse(text).unwrap();
    assert_eq!(
        ignore.patterns(),
        [
            "test1",
            "test2",
            "a/file/here",
            "lastfile",
            "# not a comment",
            "!inverted/abs/path",
            "y"
        ]
    );
}

#[test]
fn dockerignore_errors_name_pattern_and_line() {
    for (text, line, column, needle) in [
        ("ok\n\n  a[b\n", 3, 3, "\"a[b\""),
        ("x\n!\n", 2, 1, "\"!\""),
        ("[z-a]", 1, 1, "backwards"),
        ("trailing\\", 1, 1, "backslash"),
    ] {
        let err = Dockerignore::parse(text).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&format!("line {line}")), "{message}");
        assert!(message.contains(needle), "{message}");
        let span = err.span().unwrap();
        assert_eq!(
            (span.start.line, span.start.column),
            (line, column),
            "{text:?}"
        );
        assert!(err.help().is_some());
    }
}

#[test]
fn can_skip_dir_only_when_no_exception_reaches_inside() {
    for (patterns, dir, want) in [
        (&["vendor"][..], "vendor", true),
        (&["vendor", "!vendor/keep.txt"], "vendor", false),
        (&["vendor", "!**/keep.txt"], "vendor", false),
        (&["vendor", "!other/keep.txt"], "vendor", true),
        (&["vendor", "!vendor/*/keep"], "vendor", false),
        (&["vendor", "!vend*/x"], "vendor", false),
        (&["vendor", "!vendox/x"], "vendor", true),
        (&["vendor"], "src", false),
    ] {
        let ignore = Dockerignore::from_patterns(patterns).unwrap();
        assert_eq!(ignore.can_skip_dir(dir), want, "{patterns:?} {dir}");
    }
}

#[test]
fn ignore_file_precedence() {
    // (extra files, -f Dockerfile, files left in the context)
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a [&'a str]);
    let cases: &[Case] = &[
        // Only the context's .dockerignore.
        (
            &[(".dockerignore", "a\n")],
            None,
            &[".dockerignore", "Dockerfile", "b"],
        ),
        // Dockerfile.dockerignore beside the default Dockerfile wins.
        (
            &[(".dockerignore", "a\n"), ("Dockerfile.dockerignore", "b\n")],
            Some("Dockerfile"),
            &[
                ".dockerignore",
                "Dockerfile",
                "Dockerfile.dockerignore",
                "a",
            ],
        ),
        // A Dockerfile from standard input (none on disk) has no Dockerfile.dockerignore: only
        // the context's .dockerignore applies.
        (
            &[(".dockerignore", "a\n"), ("Dockerfile.dockerignore", "b\n")],
            None,
            &[
                ".dockerignore",
                "Dockerfile",
                "Dockerfile.dockerignore",
                "b",
            ],
        ),
        // -f build/app.Dockerfile reads build/app.Dockerfile.dockerignore.
        (
            &[
                (".dockerignore", "a\n"),
                ("build/app.Dockerfile", "FROM x\n"),
                ("build/app.Dockerfile.dockerignore", "build\nDockerfile\n"),
            ],
            Some("build/app.Dockerfile"),
            &[".dockerignore", "a", "b"],
        ),
        // A named Dockerfile without its own ignore file falls back to .dockerignore.
        (
            &[
                (".dockerignore", "a\nbuild\n"),
                ("build/app.Dockerfile", "FROM x\n"),
            ],
            Some("build/app.Dockerfile"),
            &[".dockerignore", "Dockerfile", "b"],
        ),
    ];
    for (extra, dockerfile, want) in cases {
        let dir = context(&[("Dockerfile", "FROM x\n"), ("a", ""), ("b", "")]);
        populate(dir.path(), extra);
        let dockerfile = dockerfile.map(|d| dir.path().join(d));
        let ctx = BuildContext::open(dir.path(), dockerfile.as_deref()).unwrap();
        assert_eq!(ctx.files(), *want, "{extra:?}");
    }
}

#[test]
fn walk_applies_exceptions_and_ignores_gitignore() {
    let dir = context(&[
        (
            ".dockerignore",
            "docs\n!docs/README.md\nnode_modules\n*.log\n!keep.log\n**/tmp\n",
        ),
        (".gitignore", "src\n"),
        ("docs/README.md", ""),
        ("docs/internal/secret.md", ""),
        ("node_modules/x/index.js", ""),
        ("src/main.rs", ""),
        ("src/tmp/scratch", ""),
        ("src/.hidden", ""),
        ("debug.log", ""),
        ("keep.log", ""),
        ("empty/", ""),
    ]);
    let ctx = BuildContext::open(dir.path(), None).unwrap();
    assert_eq!(
        ctx.files(),
        [
            ".dockerignore",
            ".gitignore",
            "docs",
            "docs/README.md",
            "empty",
            "keep.log",
            "src",
            "src/.hidden",
            "src/main.rs"
        ]
    );
    assert_eq!(
        ctx.ignore_file(),
        Some(ctx.root().join(".dockerignore").as_path())
    );
}

#[test]
fn bad_ignore_file_reports_path_and_span() {
    let dir = context(&[(".dockerignore", "ok\n[oops\n")]);
    let err = BuildContext::open(dir.path(), None).unwrap_err();
    assert!(matches!(err, ContextError::Dockerignore { .. }), "{err}");
    assert!(
        kiln::error::chain(&err).contains("\"[oops\" on line 2"),
        "{err}"
    );
    assert_eq!(err.span().map(|s| s.start.line), Some(2));
}

#[test]
fn copy_source_selection() {
    let dir = context(&[
        (".dockerignore", "secret.txt\n**/*.tmp\ncache\n"),
        ("Dockerfile", ""),
        ("app/main.go", ""),
        ("app/util/str.go", ""),
        ("app/util/x.tmp", ""),
        ("a.txt", ""),
        ("b.txt", ""),
        ("c.md", ""),
        ("secret.txt", ""),
        ("cache/blob", ""),
        ("dir-a/f", ""),
        ("dir-b/f", ""),
        ("weird[1].txt", ""),
    ]);
    let ctx = BuildContext::open(dir.path(), None).unwrap();
    let all: Vec<String> = ctx.files().iter().map(|s| s.to_string()).collect();
    let ok = |v: &[&str]| Ok(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let cases: Vec<(&str, Result<Vec<String>, String>)> = vec![
        ("a.txt", ok(&["a.txt"])),
        ("./a.txt", ok(&["a.txt"])),
        ("/a.txt", ok(&["a.txt"])),
        ("../../a.txt", ok(&["a.txt"])),
        (
            "app",
            ok(&["app", "app/main.go", "app/util", "app/util/str.go"]),
        ),
        (
            "app/",
            ok(&["app", "app/main.go", "app/util", "app/util/str.go"]),
        ),
        ("app/util/../main.go", ok(&["app/main.go"])),
        ("*.txt", ok(&["a.txt", "b.txt", "weird[1].txt"])),
        ("?.md", ok(&["c.md"])),
        ("[ab].txt", ok(&["a.txt", "b.txt"])),
        ("dir-*/f", ok(&["dir-a/f", "dir-b/f"])),
        ("*/util", ok(&["app/util", "app/util/str.go"])),
        ("app/*/*.go", ok(&["app/util/str.go"])),
        // As in BuildKit, escapes only count inside a wildcard source; without one the source is a
        // literal path, backslashes included.
        ("weird\\[1\\].txt", Err(not_found("weird\\[1\\].txt"))),
        ("weird\\[1\\].*", ok(&["weird[1].txt"])),
        // A wildcard (here the class `[1]`) that matches nothing reads nothing (BuildKit's
        // AllowEmptyWildcard).
        ("weird[1].txt", ok(&[])),
        (".", Ok(all.clone())),
        ("/", Ok(all.clone())),
        ("..", Ok(all)),
        ("secret.txt", Err(not_found("secret.txt"))),
        ("app/util/x.tmp", Err(not_found("app/util/x.tmp"))),
        ("cache", Err(not_found("cache"))),
        ("cache/blob", Err(not_found("cache/blob"))),
        ("missing", Err(not_found("missing"))),
        ("*.none", ok(&[])),
        ("a.txt/x", Err(not_found("a.txt/x"))),
        (
            "[",
            Err("bad COPY/ADD source pattern \"[\": unclosed character class `[`".into()),
        ),
    ];
    for (source, want) in cases {
        assert_eq!(sources(&ctx, source), want, "{source}");
    }
    let matches = ctx
        .select_sources(&["*.txt".to_string(), ".".to_string()])
        .unwrap();
    assert_eq!(matches[0].roots, ["a.txt", "b.txt", "weird[1].txt"]);
    assert_eq!(matches[1].roots, ["."]);
}

/// `COPY --parents` reads only what its include pattern may keep below the source's root, so a
/// change elsewhere in the context leaves its cache key alone.
#[test]
fn parents_source_selection_reads_only_what_the_pattern_keeps() {
    let dir = context(&[
        ("Dockerfile", ""),
        ("src/a.txt", ""),
        ("src/x/b.txt", ""),
        ("src/x/y/c.txt", ""),
        ("src/x/y/c.go", ""),
        ("other/d.txt", ""),
    ]);
    let ctx = BuildContext::open(dir.path(), None).unwrap();
    let parents = |source: &str| {
        ctx.select_parents_sources(&[source.to_string()])
            .map(|m| m.into_iter().flat_map(|m| m.paths).collect::<Vec<_>>())
            .map_err(|e| e.to_string())
    };
    let ok = |v: &[&str]| Ok(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        parents("./src/**/*.txt"),
        ok(&[
            "src",
            "src/a.txt",
            "src/x",
            "src/x/b.txt",
            "src/x/y",
            "src/x/y/c.txt"
        ])
    );
    assert_eq!(
        parents("src/x/./y/c.go"),
        ok(&["src/x", "src/x/y", "src/x/y/c.go"])
    );
    assert_eq!(
        parents("src/x"),
        ok(&[
            "src",
            "src/x",
            "src/x/b.txt",
            "src/x/y",
            "src/x/y/c.go",
            "src/x/y/c.txt"
        ])
    );
    assert_eq!(parents("*/nothing*"), ok(&[]));
    assert_eq!(parents("src/none"), Err(not_found("src/none")));
    assert_eq!(parents("src/./none"), Err(not_found("src/./none")));
}

fn not_found(source: &str) -> String {
    format!(
        "COPY failed: file not found in build context or excluded by .dockerignore: stat {source}: file does not exist"
    )
}

#[cfg(unix)]
#[test]
fn symlinks_are_listed_never_followed_out_of_the_context() {
    use std::os::unix::fs::symlink;
    let outside = context(&[("secret", "top secret"), ("dir/inner", "")]);
    let dir = context(&[("real/file", ""), ("Dockerfile", "")]);
    let root = dir.path();
    symlink("/etc", root.join("etc-link")).unwrap();
    symlink(outside.path(), root.join("out")).unwrap();
    symlink(outside.path().join("secret"), root.join("secret-link")).unwrap();
    // A chain: hop1 -> hop2 -> outside.
    symlink(outside.path(), root.join("hop2")).unwrap();
    symlink("hop2", root.join("hop1")).unwrap();
    symlink("../../../../../../..", root.join("up")).unwrap();
    symlink("real", root.join("real-link")).unwrap();

    let ctx = BuildContext::open(root, None).unwrap();
    let files = ctx.files();
    for forbidden in [
        "etc-link/passwd",
        "out/secret",
        "out/dir",
        "hop1/secret",
        "up/etc",
    ] {
        assert!(!files.contains(&forbidden), "{forbidden} listed: {files:?}");
    }
    let link = ctx.entries().iter().find(|e| e.path == "etc-link").unwrap();
    assert_eq!(
        link.kind,
        EntryKind::Symlink {
            target: "/etc".into()
        }
    );

    let owned = |paths: &[&str]| Ok(paths.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    for (source, want) in [
        // A source link is followed inside the context, as if it were `/` (BuildKit v0.32, issue
        // 12 item 8): a link to a host path names nothing here.
        ("etc-link", Err(not_found("etc-link"))),
        ("etc-link/", Err(not_found("etc-link/"))),
        ("hop1", Err(not_found("hop1"))),
        // What a followed link leads to is read too (it is part of the COPY's cache key).
        ("real-link", owned(&["real", "real-link", "real/file"])),
        ("real-link/file", owned(&["real-link", "real/file"])),
        ("etc-link/passwd", Err(not_found("etc-link/passwd"))),
        ("out/secret", Err(not_found("out/secret"))),
        ("hop1/secret", Err(not_found("hop1/secret"))),
        ("up/etc/passwd", Err(not_found("up/etc/passwd"))),
        (
            "../../../../etc/passwd",
            Err(not_found("../../../../etc/passwd")),
        ),
        ("/etc/passwd", Err(not_found("/etc/passwd"))),
        // Wildcard segments never descend through a link: they match nothing, and read nothing;
        // a link before the wildcard that leads out of the context leads nowhere.
        ("*/passwd", Ok(Vec::new())),
        ("out/*", Ok(Vec::new())),
        // `up` leads to the context root (clamped), where nothing matches: only the link is read.
        ("up/*/passwd", owned(&["up"])),
        // A link before the wildcard is followed: the matches are in `real`.
        ("real-link/*", owned(&["real-link", "real/file"])),
    ] {
        assert_eq!(sources(&ctx, source), want, "{source}");
    }
    // Globs match links by their own names; what a matched link leads to inside the context is
    // read too (the copy follows it), a link out of it only as a link (the copy fails on it).
    assert_eq!(
        sources(&ctx, "*-link"),
        owned(&["etc-link", "real", "real-link", "real/file", "secret-link"])
    );
}

#[cfg(unix)]
#[test]
fn sources_follow_links_inside_the_context_and_never_past_dockerignore() {
    use std::os::unix::fs::symlink;
    let dir = context(&[
        (".dockerignore", "sub/secret\nhidden\n"),
        ("sub/foo", ""),
        ("sub/secret", ""),
        ("sub/deeper/bar", ""),
        ("hidden/x", ""),
        ("file", ""),
    ]);
    let root = dir.path();
    // The links of buildctl's checks (issue 12, item 8), and some more.
    symlink("sub", root.join("rel")).unwrap();
    symlink("/sub", root.join("absroot")).unwrap();
    symlink("../sub", root.join("clamp")).unwrap();
    symlink(root.join("sub"), root.join("abshost")).unwrap();
    symlink("../../outside-dir", root.join("escrel")).unwrap();
    symlink("/proc/self/root/etc", root.join("procfs")).unwrap();
    symlink("rel/deeper", root.join("nested")).unwrap();
    symlink("../../..", root.join("sub/deeper/top")).unwrap();
    symlink("hidden", root.join("to-hidden")).unwrap();
    symlink("file", root.join("to-file")).unwrap();
    symlink("self", root.join("self")).unwrap();
    let ctx = BuildContext::open(root, None).unwrap();
    let owned = |paths: &[&str]| Ok(paths.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    for (source, want) in [
        ("rel/foo", owned(&["rel", "sub/foo"])),
        ("absroot/foo", owned(&["absroot", "sub/foo"])),
        ("clamp/foo", owned(&["clamp", "sub/foo"])),
        ("/clamp/./foo", owned(&["clamp", "sub/foo"])),
        ("nested/bar", owned(&["nested", "rel", "sub/deeper/bar"])),
        (
            "sub/deeper/top/sub/foo",
            owned(&["sub/deeper/top", "sub/foo"]),
        ),
        // A directory reached through a link is read whole; links inside it are read as links
        // (the copy copies them as links).
        (
            "rel",
            owned(&[
                "rel",
                "sub",
                "sub/deeper",
                "sub/deeper/bar",
                "sub/deeper/top",
                "sub/foo",
            ]),
        ),
        (
            "rel/*",
            owned(&[
                "rel",
                "sub/deeper",
                "sub/deeper/bar",
                "sub/deeper/top",
                "sub/foo",
            ]),
        ),
        ("nested/b?r", owned(&["nested", "rel", "sub/deeper/bar"])),
        // A host path, even one into the context, is not followed (as BuildKit).
        ("abshost/foo", Err(not_found("abshost/foo"))),
        ("escrel/foo", Err(not_found("escrel/foo"))),
        ("procfs/passwd", Err(not_found("procfs/passwd"))),
        ("procfs", Err(not_found("procfs"))),
        // `.dockerignore` holds through links.
        ("rel/secret", Err(not_found("rel/secret"))),
        ("to-hidden/x", Err(not_found("to-hidden/x"))),
        ("to-hidden", Err(not_found("to-hidden"))),
        // A file is no directory.
        ("to-file/x", Err(not_found("to-file/x"))),
        ("to-file", owned(&["file", "to-file"])),
    ] {
        assert_eq!(sources(&ctx, source), want, "{source}");
    }
    let matches = ctx
        .select_sources(&["rel/foo".to_string(), "rel/f*".to_string()])
        .unwrap();
    // The path as written is what the copy resolves (and names the copy after); a wildcard
    // match is a path in the directory the link leads to.
    assert_eq!(matches[0].roots, ["rel/foo"]);
    assert_eq!(matches[1].roots, ["sub/foo"]);
    let err = sources(&ctx, "self/x").unwrap_err();
    assert!(err.contains("too many levels of symbolic links"), "{err}");
}

#[test]
fn missing_context_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = BuildContext::open(&dir.path().join("nope"), None).unwrap_err();
    assert!(
        err.to_string().starts_with("cannot open build context"),
        "{err}"
    );
    fs::write(dir.path().join("file"), "").unwrap();
    let err = BuildContext::open(&dir.path().join("file"), None).unwrap_err();
    assert!(err.to_string().contains("is not a directory"), "{err}");
}

#[test]
fn ignore_file_symlinked_out_of_its_directory_is_refused_not_read() {
    use std::os::unix::fs::symlink;
    let outside = context(&[("secret", "[TOP-SECRET-LINE\n")]);
    let secret = outside.path().join("secret");
    // The context's .dockerignore, and a <Dockerfile>.dockerignore, each linking outside.
    for ignore_name in [".dockerignore", "Dockerfile.dockerignore"] {
        let dir = context(&[("Dockerfile", "FROM x\n"), ("a", "")]);
        symlink(&secret, dir.path().join(ignore_name)).unwrap();
        let dockerfile = dir.path().join("Dockerfile");
        let err = BuildContext::open(dir.path(), Some(&dockerfile)).unwrap_err();
        assert!(
            matches!(err, ContextError::IgnoreFileOutside { .. }),
            "{ignore_name}: {err:?}"
        );
        let shown = format!("{err} {}", err.help().unwrap_or_default());
        assert!(!shown.contains("TOP-SECRET"), "{shown}");
    }
    // A link that stays inside the context is followed.
    let dir = context(&[("Dockerfile", "FROM x\n"), ("a", ""), ("ignore.txt", "a\n")]);
    symlink("ignore.txt", dir.path().join(".dockerignore")).unwrap();
    let ctx = BuildContext::open(dir.path(), None).unwrap();
    assert!(!ctx.files().contains(&"a"), "{:?}", ctx.files());
    // A dangling link is no ignore file.
    let dir = context(&[("Dockerfile", "FROM x\n"), ("a", "")]);
    symlink("missing", dir.path().join(".dockerignore")).unwrap();
    let ctx = BuildContext::open(dir.path(), None).unwrap();
    assert!(ctx.files().contains(&"a"));
    assert_eq!(ctx.ignore_file(), None);
}
