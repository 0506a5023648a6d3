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
