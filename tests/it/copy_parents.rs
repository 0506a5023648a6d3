//! `COPY --parents` and `COPY --link` end to end (issue 14), as BuildKit v0.32 does them
//! (frontend/dockerfile/docs/reference.md "COPY --parents", "COPY --link"): sources keep their
//! parent directories (from the context root, a `/./` pivot, or a `--from` root), and a linked
//! copy's layer does not depend on the layers below it.

use crate::build::{Entry, builder, entry_at, file};

/// `kiln build -o type=local` of `dockerfile` over `context`: the exported root filesystem.
fn export(
    builder: &crate::build::Builder,
    context: &[(&str, &str)],
    args: &[&str],
) -> tempfile::TempDir {
    let ctx = builder.context(context);
    let out = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", out.path().join("fs").display());
    let mut all = vec!["-o", dest.as_str()];
    all.extend(args);
    builder.build(ctx.path(), &all).ok();
    out
}

#[test]
fn parents_keep_the_source_paths_with_globs_and_a_pivot() {
    let Some(builder) = builder() else { return };
    let out = export(
        &builder,
        &[
            (
                "Dockerfile",
                "FROM base\n\
                 COPY --parents ./x/a.txt ./y/a.txt /parents/\n\
                 COPY --parents ./src/**/*.txt /globs/\n\
                 COPY --parents ./src/./x/y/c.txt ./src/./x/y/d.go /pivot/\n",
            ),
            ("x/a.txt", "xa"),
            ("y/a.txt", "ya"),
            ("src/a.txt", "a"),
            ("src/x/b.txt", "b"),
            ("src/x/y/c.txt", "c"),
            ("src/x/y/d.go", "d"),
        ],
        &[],
    );
    let fs = out.path().join("fs");
    let at = |path: &str| entry_at(&fs.join(path));
    assert_eq!(at("parents/x/a.txt"), file("xa"));
    assert_eq!(at("parents/y/a.txt"), file("ya"));
    assert_eq!(at("parents/a.txt"), Entry::Absent);
    assert_eq!(at("globs/src/a.txt"), file("a"));
    assert_eq!(at("globs/src/x/b.txt"), file("b"));
    assert_eq!(at("globs/src/x/y/c.txt"), file("c"));
    assert_eq!(at("globs/src/x/y/d.go"), Entry::Absent);
    assert_eq!(at("pivot/x/y/c.txt"), file("c"));
    assert_eq!(at("pivot/x/y/d.go"), file("d"));
    assert_eq!(at("pivot/src"), Entry::Absent);
}

#[test]
fn parents_from_a_stage_keep_paths_below_the_pivot() {
    let Some(builder) = builder() else { return };
    let out = export(
        &builder,
        &[(
            "Dockerfile",
            "FROM base AS build\n\
             RUN mkdir -p /out/bin /out/lib/deep && echo tool > /out/bin/tool \
                 && echo so > /out/lib/deep/x.so && echo no > /out/lib/skip.txt\n\
             FROM base\n\
             COPY --parents --from=build /out/./bin/tool /out/./lib/**/*.so /app/\n",
        )],
        &[],
    );
    let fs = out.path().join("fs");
    let at = |path: &str| entry_at(&fs.join(path));
    assert_eq!(at("app/bin/tool"), file("tool\n"));
    assert_eq!(at("app/lib/deep/x.so"), file("so\n"));
    assert_eq!(at("app/lib/skip.txt"), Entry::Absent);
    assert_eq!(at("app/out"), Entry::Absent);
}

#[test]
fn a_missing_parents_source_fails_and_an_unmatched_glob_copies_nothing() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[
        ("Dockerfile", "FROM base\nCOPY --parents ./x/nope.txt /p/\n"),
        ("x/a.txt", "a"),
    ]);
    let stderr = builder.build(ctx.path(), &[]).fails();
    assert!(stderr.contains("x/nope.txt"), "{stderr}");

    let out = export(
        &builder,
        &[
            ("Dockerfile", "FROM base\nCOPY --parents ./x/*.none /p/\n"),
            ("x/a.txt", "a"),
        ],
        &[],
    );
    assert_eq!(entry_at(&out.path().join("fs/p/x")), Entry::Absent);
}

#[test]
fn a_parents_copy_is_cached_until_a_file_it_reads_changes() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[
        (
            "Dockerfile",
            "FROM base\nCOPY --parents ./src/**/*.txt /p/\n",
        ),
        ("src/a.txt", "a"),
        ("src/b.go", "b"),
        ("other.txt", "o"),
    ]);
    builder.build(ctx.path(), &[]).ok();
    std::fs::write(ctx.path().join("src/b.go"), "changed").expect("write");
    std::fs::write(ctx.path().join("other.txt"), "changed").expect("write");
    let again = builder.build(ctx.path(), &[]);
    again.ok();
    assert_eq!(again.events.ran(), Vec::<&str>::new());
    assert!(
        again
            .events
            .hits()
            .contains(&"COPY --parents ./src/**/*.txt /p/"),
        "{:?}",
        again.events.hits()
    );
    std::fs::write(ctx.path().join("src/a.txt"), "changed").expect("write");
    let changed = builder.build(ctx.path(), &[]);
    changed.ok();
    assert_eq!(changed.events.ran(), ["COPY --parents ./src/**/*.txt /p/"]);
}

/// The layer digests (diff IDs) of `image`.
fn layers(builder: &crate::build::Builder, image: &str) -> Vec<String> {
    builder.inspect(image)["RootFS"]["Layers"]
        .as_array()
        .expect("RootFS.Layers")
        .iter()
        .map(|l| l.as_str().expect("a diff id").to_string())
        .collect()
}

#[test]
fn a_linked_copy_keeps_its_layer_and_its_cache_when_the_base_changes() {
    let Some(builder) = builder() else { return };
    let base = |version: &str| {
        let ctx = builder.context(&[
            ("Dockerfile", "FROM scratch\nCOPY v.txt /v.txt\n"),
            ("v.txt", version),
        ]);
        builder.build(ctx.path(), &["-t", "linkbase"]).ok();
    };
    let app = builder.context(&[
        (
            "Dockerfile",
            "FROM linkbase\nCOPY --link a.txt /app/a.txt\nCOPY b.txt /app/b.txt\n",
        ),
        ("a.txt", "alpha"),
        ("b.txt", "bravo"),
    ]);
    base("one");
    let first = builder.build(app.path(), &["-t", "app"]);
    first.ok();
    assert!(
        first.events.ran().contains(&"COPY --link a.txt /app/a.txt"),
        "{:?}",
        first.events.ran()
    );
    let before = layers(&builder, "app");

    base("two");
    let second = builder.build(app.path(), &["-t", "app"]);
    second.ok();
    assert!(
        second
            .events
            .hits()
            .contains(&"COPY --link a.txt /app/a.txt"),
        "hits {:?}, ran {:?}",
        second.events.hits(),
        second.events.ran()
    );
    // The merge and the plain COPY above it run again on the new base.
    assert_eq!(
        second.events.ran(),
        ["LINK COPY --link a.txt /app/a.txt", "COPY b.txt /app/b.txt"]
    );
    let after = layers(&builder, "app");
    assert_eq!(before.len(), 3, "{before:?}");
    assert_eq!(after.len(), 3, "{after:?}");
    assert_ne!(before[0], after[0], "the base layer changed");
    assert_eq!(before[1], after[1], "the linked layer is the same");

    let out = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", out.path().join("fs").display());
    builder.build(app.path(), &["-o", &dest]).ok();
    let fs = out.path().join("fs");
    assert_eq!(entry_at(&fs.join("v.txt")), file("two"));
    assert_eq!(entry_at(&fs.join("app/a.txt")), file("alpha"));
    assert_eq!(entry_at(&fs.join("app/b.txt")), file("bravo"));
    assert_eq!(
        builder.history("app").len(),
        3,
        "one history entry per COPY, none for the merge"
    );
}

#[test]
fn a_linked_copy_does_not_follow_the_base_s_symlinks_and_without_chmod_only() {
    let Some(builder) = builder() else { return };
    let out = export(
        &builder,
        &[
            (
                "Dockerfile",
                "FROM base\n\
                 RUN mkdir /real /real2 && ln -s /real /dst && ln -s /real2 /dst2\n\
                 COPY --link a.txt /dst/\n\
                 COPY --link --chmod=600 a.txt /dst2/\n",
            ),
            ("a.txt", "alpha"),
        ],
        &[],
    );
    let fs = out.path().join("fs");
    // --link: the copy sees no /dst link, so /dst becomes a directory over it.
    assert_eq!(entry_at(&fs.join("dst")), Entry::Dir);
    assert_eq!(entry_at(&fs.join("dst/a.txt")), file("alpha"));
    assert_eq!(entry_at(&fs.join("real/a.txt")), Entry::Absent);
    // With --chmod BuildKit does not link: the copy follows /dst2.
    assert_eq!(entry_at(&fs.join("dst2")), crate::build::link("/real2"));
    assert_eq!(entry_at(&fs.join("real2/a.txt")), file("alpha"));
}

#[test]
fn a_linked_copy_takes_numeric_owners_and_refuses_names() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[
        (
            "Dockerfile",
            "FROM base\nCOPY --link --chown=1234:4321 a.txt /a.txt\n\
             RUN stat -c '%u:%g' /a.txt > /owner\n",
        ),
        ("a.txt", "alpha"),
    ]);
    let out = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", out.path().join("fs").display());
    builder.build(ctx.path(), &["-o", &dest]).ok();
    assert_eq!(entry_at(&out.path().join("fs/owner")), file("1234:4321\n"));

    let ctx = builder.context(&[
        (
            "Dockerfile",
            "FROM base\nCOPY --link --chown=app a.txt /a.txt\n",
        ),
        ("a.txt", "alpha"),
    ]);
    let stderr = builder.build(ctx.path(), &[]).fails();
    assert!(stderr.contains("numeric ids"), "{stderr}");
}

#[test]
fn a_linked_copy_from_a_stage_is_reused_when_the_stage_it_lands_on_changes() {
    let Some(builder) = builder() else { return };
    let dockerfile = |marker: &str| {
        format!(
            "FROM base AS build\nRUN mkdir /out && echo built > /out/x\n\
             FROM base\nRUN echo {marker} > /marker\n\
             COPY --link --from=build /out/x /app/x\n"
        )
    };
    let ctx = builder.context(&[("Dockerfile", &dockerfile("one"))]);
    builder.build(ctx.path(), &[]).ok();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile("two")).expect("write");
    let out = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", out.path().join("fs").display());
    let again = builder.build(ctx.path(), &["-o", &dest]);
    again.ok();
    assert!(
        again
            .events
            .hits()
            .contains(&"COPY --from=build --link /out/x /app/x"),
        "hits {:?}, ran {:?}",
        again.events.hits(),
        again.events.ran()
    );
    assert_eq!(entry_at(&out.path().join("fs/app/x")), file("built\n"));
    assert_eq!(entry_at(&out.path().join("fs/marker")), file("two\n"));
}

#[test]
fn parents_never_follow_a_context_symlink_out_of_the_context() {
    let Some(builder) = builder() else { return };
    // As buildctl v0.32.2 does with this context: a glob does not descend through a symlink,
    // a path through one to the host's /etc or out of the context is not found (symlinks
    // resolve inside the context), and the symlink itself is copied as one.
    let ctx = builder.context(&[("src/keep.txt", "kept")]);
    std::os::unix::fs::symlink("/etc", ctx.path().join("src/etc")).expect("symlink");
    std::os::unix::fs::symlink("../..", ctx.path().join("src/up")).expect("symlink");
    let beside = ctx
        .path()
        .parent()
        .expect("context parent")
        .join("kiln-outside-marker");
    std::fs::write(&beside, "outside").expect("write marker");
    let build = |line: &str| {
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM scratch\n{line}\n"),
        )
        .expect("write Dockerfile");
        let out = tempfile::tempdir().expect("temp dir");
        let dest = format!("type=local,dest={}", out.path().join("fs").display());
        (builder.build(ctx.path(), &["-o", &dest]), out)
    };

    let (built, out) = build("COPY --parents src/**/passwd /globbed/");
    built.ok();
    let fs = out.path().join("fs");
    assert_eq!(entry_at(&fs.join("globbed")), Entry::Dir);
    assert_eq!(
        std::fs::read_dir(fs.join("globbed")).expect("ls").count(),
        0
    );

    for line in [
        "COPY --parents src/./etc/passwd /pivoted/",
        "COPY --parents src/up/kiln-outside-marker /up/",
    ] {
        let (built, out) = build(line);
        let stderr = built.fails();
        assert!(stderr.contains("not found"), "{line}: {stderr}");
        assert!(walk(out.path()).is_empty(), "{line}");
    }

    let (built, out) = build("COPY --parents src/etc /e/");
    built.ok();
    let fs = out.path().join("fs");
    assert_eq!(entry_at(&fs.join("e/src/etc")), crate::build::link("/etc"));
    assert_eq!(walk(&fs), Vec::<std::path::PathBuf>::new());
    let _ = std::fs::remove_file(&beside);
}
/// Every regular file below `dir`, symlinks not followed.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            files.extend(walk(&entry.path()));
        } else if kind.is_file() {
            files.push(entry.path());
        }
    }
    files
}
