//! The `kiln` binary as a user runs it: exit codes, stdout and stderr (insta snapshots).

use crate::support::{context, kiln};

#[test]
fn parse_prints_buildkit_dump() {
    let out = kiln()
        .args(["parse", "-f", "testdata/cli/heredoc.Dockerfile"])
        .run()
        .success()
        .stdout_str();
    insta::assert_snapshot!(out, @r#"
    (from "scratch" "AS" "base")
    (copy "<<EOF" "/etc/motd")
    (run "<<-'SCRIPT' sh")
    "#);
}

#[test]
fn parse_json_has_spans_flags_and_heredoc_bodies() {
    let json = kiln()
        .args([
            "parse",
            "-f",
            "testdata/cli/heredoc.Dockerfile",
            "--format",
            "json",
        ])
        .run()
        .success()
        .stdout_json();
    let nodes = json["nodes"].as_array().expect("nodes array");
    assert_eq!(nodes.len(), 3);
    assert_eq!(json["directives"]["syntax"]["value"], "docker/dockerfile:1");
    let copy = &nodes[1];
    assert_eq!(copy["span"]["start"]["line"], 3);
    assert_eq!(copy["span"]["end"]["line"], 5);
    assert_eq!(copy["heredocs"][0]["content"], "hello $USER\n");
    assert_eq!(copy["heredocs"][0]["expand"], true);
    let run = &nodes[2];
    assert_eq!(run["heredocs"][0]["name"], "SCRIPT");
    assert_eq!(run["heredocs"][0]["expand"], false);
    assert_eq!(
        run["heredocs"][0]["content"],
        "echo \"no $expansion here\"\n"
    );
}

#[test]
fn parse_reads_stdin() {
    let out = kiln()
        .args(["parse", "-f", "-"])
        .stdin("from alpine\nrun --mount=type=cache,target=/c echo hi\n")
        .run()
        .success()
        .stdout_str();
    assert_eq!(
        out,
        "(from \"alpine\")\n(run [\"--mount=type=cache,target=/c\"] \"echo hi\")\n"
    );
}

#[test]
fn parse_error_prints_location_snippet_and_caret() {
    let err = kiln()
        .args([
            "parse",
            "-f",
            "testdata/cli/unterminated-heredoc.Dockerfile",
        ])
        .run()
        .failure()
        .stderr_str();
    insta::assert_snapshot!(err);
}

#[test]
fn parse_rejects_bad_bytes_without_panicking() {
    let cases: &[(&str, Vec<u8>)] = &[
        ("invalid utf-8", b"FROM a\nRUN \xff\xfe\n".to_vec()),
        ("nul byte", b"FROM a\nRUN a\0b\n".to_vec()),
        (
            "1 MB line",
            [b"FROM a\nRUN ".as_slice(), &vec![b'x'; 1 << 20]].concat(),
        ),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in cases {
        let err = kiln()
            .args(["parse", "-f", "-"])
            .stdin(bytes.clone())
            .run()
            .failure()
            .stderr_str();
        assert!(err.starts_with("error: "), "{what}: {err}");
        assert!(
            err.contains(" --> <stdin>:"),
            "{what}: no location in {err}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

#[test]
fn missing_dockerfile_is_a_clear_error() {
    let err = kiln()
        .args(["parse", "-f", "no/such/Dockerfile"])
        .run()
        .failure()
        .stderr_str();
    assert!(
        err.starts_with("error: cannot read the Dockerfile no/such/Dockerfile"),
        "{err}"
    );
}

const MULTI_STAGE: &str = "\
ARG BASE=scratch
FROM ${BASE} AS base
COPY bin/ /usr/local/bin/

FROM base AS docs
COPY docs/*.md /docs/

FROM base AS test
ARG MODE=fast
RUN echo $MODE
COPY --from=docs /docs /docs

FROM base AS final
COPY --from=docs /docs /usr/share/doc
COPY app.conf /etc/app.conf
CMD [\"/usr/local/bin/app\"]
";

fn multi_stage_context() -> tempfile::TempDir {
    context(&[
        ("Dockerfile", MULTI_STAGE),
        (
            ".dockerignore",
            "# drafts stay out\n**/*.tmp\n!docs/keep.tmp\n",
        ),
        ("bin/app", "#!/bin/sh\n"),
        ("bin/old.tmp", "x"),
        ("docs/a.md", "a"),
        ("docs/b.md", "b"),
        ("docs/keep.tmp", "k"),
        ("docs/notes.tmp", "n"),
        ("app.conf", "c"),
    ])
}

#[test]
fn dry_run_prints_stages_groups_and_context_reads() {
    let ctx = multi_stage_context();
    let out = kiln()
        .args(["build", "--dry-run", "-t", "app:1", "."])
        .current_dir(ctx.path())
        .run()
        .success()
        .stdout_str();
    insta::assert_snapshot!(out);
}

#[test]
fn dry_run_target_prunes_and_build_args_apply() {
    let ctx = multi_stage_context();
    // A store of its own (never created: a dry run writes nothing), so busybox is not in it.
    let root = tempfile::tempdir().expect("temp dir");
    let out = kiln()
        .root(root.path().join("store"))
        .args([
            "build",
            "--dry-run",
            "--target",
            "test",
            "--build-arg",
            "MODE=slow",
            "--build-arg",
            "BASE=busybox:1.36",
            ".",
        ])
        .current_dir(ctx.path())
        .run()
        .success()
        .stdout_str();
    insta::assert_snapshot!(out);
    assert!(!root.path().join("store").exists());
}

#[test]
fn dry_run_reads_dockerfile_from_stdin() {
    let ctx = context(&[("a.txt", "a")]);
    let out = kiln()
        .args(["build", "--dry-run", "-f", "-", "."])
        .current_dir(ctx.path())
        .stdin("FROM scratch\nCOPY a.txt /\n")
        .run()
        .success()
        .stdout_str();
    assert!(out.starts_with("dockerfile  <stdin>\n"), "{out}");
    assert!(out.contains("       reads a.txt: a.txt\n"), "{out}");
}

#[test]
fn dry_run_prints_each_run_mounts_expanded() {
    let ctx = context(&[(
        "Dockerfile",
        concat!(
            "FROM scratch AS build\n",
            "FROM scratch\n",
            "ARG CACHE=/root/.cache\n",
            "RUN --mount=type=cache,target=$CACHE/go,id=go,sharing=locked,uid=1000 \\\n",
            "    --mount=type=bind,from=build,source=/out,target=/in \\\n",
            "    --mount=type=secret,id=token,env=TOKEN,required \\\n",
            "    --mount=type=tmpfs,target=/tmp,size=1m \\\n",
            "    --network=none --security=insecure make\n",
            "RUN echo plain\n",
        ),
    )]);
    // The build's checks hold: --security=insecure needs the entitlement.
    let out = kiln()
        .args(["build", "--dry-run", "--allow", "security.insecure", "."])
        .current_dir(ctx.path())
        .run()
        .success()
        .stdout_str();
    let stage = out.split("\nstage stage-1  ").nth(1).unwrap_or_default();
    assert_eq!(
        stage,
        concat!(
            "FROM scratch  (Dockerfile:2)\n",
            "  3    ARG CACHE=/root/.cache\n",
            "  4    RUN --mount=type=cache,target=$CACHE/go,id=go,sharing=locked,uid=1000 ",
            "--mount=type=bind,from=build,source=/out,target=/in ",
            "--mount=type=secret,id=token,env=TOKEN,required ",
            "--mount=type=tmpfs,target=/tmp,size=1m --network=none --security=insecure make\n",
            "       mount type=cache target=/root/.cache/go id=go rw sharing=locked uid=1000\n",
            "       mount type=bind target=/in source=/out from=build ro\n",
            "       mount type=secret id=token ro required env=TOKEN\n",
            "       mount type=tmpfs target=/tmp rw size=1048576\n",
            "       network none\n",
            "       security insecure\n",
            "  9    RUN echo plain\n",
        ),
        "{out}"
    );
}

#[test]
fn dry_run_rejects_a_malformed_mount_at_its_flag() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM scratch\nRUN --network=none --mount=type=cache,sharing=all,target=/c true\n",
    )]);
    let err = kiln()
        .args(["build", "--dry-run", "."])
        .current_dir(ctx.path())
        .run()
        .failure()
        .stderr_str();
    assert!(
        err.starts_with("error: invalid --mount: unsupported sharing value \"all\"\n"),
        "{err}"
    );
    assert!(err.contains(" --> Dockerfile:2:20\n"), "{err}");
    assert!(
        err.contains("= help: use sharing=shared, private or locked"),
        "{err}"
    );

    // A value that is only wrong after expansion is caught by the stage layer, same place.
    let ctx = context(&[(
        "Dockerfile",
        "FROM scratch\nARG S=all\nRUN --mount=type=cache,sharing=$S,target=/c true\n",
    )]);
    let err = kiln()
        .args(["build", "--dry-run", "."])
        .current_dir(ctx.path())
        .run()
        .failure()
        .stderr_str();
    assert!(err.contains("unsupported sharing value \"all\""), "{err}");
    assert!(err.contains(" --> Dockerfile:3:5\n"), "{err}");
}

#[test]
fn dry_run_missing_source_points_at_the_copy() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM scratch\nCOPY present.txt missing.txt /dst/\n",
    )]);
    std::fs::write(ctx.path().join("present.txt"), "p").expect("write");
    let err = kiln()
        .args(["build", "--dry-run", "."])
        .current_dir(ctx.path())
        .run()
        .failure()
        .stderr_str();
    insta::assert_snapshot!(err);
}

#[test]
fn dry_run_ignored_source_is_not_found() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY secret.key /\n"),
        (".dockerignore", "*.key\n"),
        ("secret.key", "k"),
    ]);
    let err = kiln()
        .args(["build", "--dry-run", "."])
        .current_dir(ctx.path())
        .run()
        .failure()
        .stderr_str();
    assert!(err.contains("excluded by .dockerignore"), "{err}");
    assert!(err.contains(" --> Dockerfile:2:1\n"), "{err}");
}

#[test]
fn dry_run_bad_dockerignore_points_into_the_ignore_file() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a /\n"),
        (".dockerignore", "# ok\n*.log\n[unclosed\n"),
        ("a", "a"),
    ]);
    let err = kiln()
        .args(["build", "--dry-run", "."])
        .current_dir(ctx.path())
        .run()
        .failure()
        .stderr_str();
    insta::assert_snapshot!(err);
}

#[test]
fn dry_run_cycle_names_the_stages() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /y /y\n",
    )]);
    let err = kiln()
        .args(["build", "--dry-run", "."])
        .current_dir(ctx.path())
        .run()
        .failure()
        .stderr_str();
    assert!(err.contains("between stages: a -> b -> a"), "{err}");
    assert!(err.contains(" --> Dockerfile:"), "{err}");
}

#[test]
fn dry_run_unknown_target_lists_stages() {
    let ctx = multi_stage_context();
    let err = kiln()
        .args(["build", "--dry-run", "--target", "nope", "."])
        .current_dir(ctx.path())
        .run()
        .failure()
        .stderr_str();
    assert!(err.contains("nope"), "{err}");
    assert!(err.contains("base, docs, test, final"), "{err}");
    assert!(err.starts_with("error: Dockerfile: "), "{err}");
}

#[test]
fn dry_run_missing_context_is_not_blamed_on_the_dockerfile() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY a /\n")]);
    let err = kiln()
        .args(["build", "--dry-run", "-f", "Dockerfile", "no-such-dir"])
        .current_dir(ctx.path())
        .run()
        .failure()
        .stderr_str();
    assert!(
        err.starts_with("error: cannot open build context no-such-dir: "),
        "{err}"
    );
    assert!(err.contains("= help: pass an existing directory"), "{err}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["build", "parse"] {
        let out = kiln().args([sub, "--help"]).run().success().stdout_str();
        assert!(out.contains("Usage: kiln"), "{sub}: {out}");
    }
    let out = kiln().args(["--help"]).run().success().stdout_str();
    assert!(out.contains("build") && out.contains("parse"), "{out}");
}
