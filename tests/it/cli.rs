//! The `kiln` binary as a user runs it: exit codes, stdout and stderr (insta snapshots).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::context;

/// One run of the `kiln` binary, built fluently: `kiln(["parse"]).stdin("...").run()`.
pub struct Kiln {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn kiln<I, S>(args: I) -> Kiln
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args).current_dir(repo());
    Kiln { cmd, stdin: None }
}

impl Kiln {
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    #[allow(dead_code)] // used by the run tests
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn run(mut self) -> Outcome {
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn kiln");
        if let Some(bytes) = self.stdin.take() {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            stdin.write_all(&bytes).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait for kiln");
        Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and asserts exit code 0, returning stdout.
    pub fn ok(self) -> String {
        let out = self.run();
        assert_eq!(out.code, Some(0), "kiln failed:\n{}", out.stderr);
        out.stdout
    }

    /// Runs and asserts a non-zero exit and an empty stdout, returning stderr.
    pub fn fails(self) -> String {
        let out = self.run();
        assert_ne!(out.code, Some(0), "kiln succeeded:\n{}", out.stdout);
        assert_ne!(
            out.code, None,
            "kiln was killed by a signal:\n{}",
            out.stderr
        );
        assert!(
            out.stdout.is_empty(),
            "a failing kiln printed:\n{}",
            out.stdout
        );
        out.stderr
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn parse_prints_buildkit_dump() {
    let out = kiln(["parse", "-f", "testdata/cli/heredoc.Dockerfile"]).ok();
    insta::assert_snapshot!(out, @r#"
    (from "scratch" "AS" "base")
    (copy "<<EOF" "/etc/motd")
    (run "<<-'SCRIPT' sh")
    "#);
}

#[test]
fn parse_json_has_spans_flags_and_heredoc_bodies() {
    let out = kiln([
        "parse",
        "-f",
        "testdata/cli/heredoc.Dockerfile",
        "--format",
        "json",
    ])
    .ok();
    let json: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
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
    let out = kiln(["parse", "-f", "-"])
        .stdin("from alpine\nrun --mount=type=cache,target=/c echo hi\n")
        .ok();
    assert_eq!(
        out,
        "(from \"alpine\")\n(run [\"--mount=type=cache,target=/c\"] \"echo hi\")\n"
    );
}

#[test]
fn parse_error_prints_location_snippet_and_caret() {
    let err = kiln([
        "parse",
        "-f",
        "testdata/cli/unterminated-heredoc.Dockerfile",
    ])
    .fails();
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
        let err = kiln(["parse", "-f", "-"]).stdin(bytes.clone()).fails();
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
    let err = kiln(["parse", "-f", "no/such/Dockerfile"]).fails();
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
    let out = kiln(["build", "--dry-run", "-t", "app:1", "."])
        .current_dir(ctx.path())
        .ok();
    insta::assert_snapshot!(out);
}

#[test]
fn dry_run_target_prunes_and_build_args_apply() {
    let ctx = multi_stage_context();
    let out = kiln([
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
    .ok();
    insta::assert_snapshot!(out);
}

#[test]
fn dry_run_reads_dockerfile_from_stdin() {
    let ctx = context(&[("a.txt", "a")]);
    let out = kiln(["build", "--dry-run", "-f", "-", "."])
        .current_dir(ctx.path())
        .stdin("FROM scratch\nCOPY a.txt /\n")
        .ok();
    assert!(out.starts_with("dockerfile  <stdin>\n"), "{out}");
    assert!(out.contains("       reads a.txt: a.txt\n"), "{out}");
}

#[test]
fn dry_run_missing_source_points_at_the_copy() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM scratch\nCOPY present.txt missing.txt /dst/\n",
    )]);
    std::fs::write(ctx.path().join("present.txt"), "p").expect("write");
    let err = kiln(["build", "--dry-run", "."])
        .current_dir(ctx.path())
        .fails();
    insta::assert_snapshot!(err);
}

#[test]
fn dry_run_ignored_source_is_not_found() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY secret.key /\n"),
        (".dockerignore", "*.key\n"),
        ("secret.key", "k"),
    ]);
    let err = kiln(["build", "--dry-run", "."])
        .current_dir(ctx.path())
        .fails();
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
    let err = kiln(["build", "--dry-run", "."])
        .current_dir(ctx.path())
        .fails();
    insta::assert_snapshot!(err);
}

#[test]
fn dry_run_cycle_names_the_stages() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /y /y\n",
    )]);
    let err = kiln(["build", "--dry-run", "."])
        .current_dir(ctx.path())
        .fails();
    assert!(err.contains("between stages: a -> b -> a"), "{err}");
    assert!(err.contains(" --> Dockerfile:"), "{err}");
}

#[test]
fn dry_run_unknown_target_lists_stages() {
    let ctx = multi_stage_context();
    let err = kiln(["build", "--dry-run", "--target", "nope", "."])
        .current_dir(ctx.path())
        .fails();
    assert!(err.contains("nope"), "{err}");
    assert!(err.contains("base, docs, test, final"), "{err}");
    assert!(err.starts_with("error: Dockerfile: "), "{err}");
}

#[test]
fn dry_run_missing_context_is_not_blamed_on_the_dockerfile() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY a /\n")]);
    let err = kiln(["build", "--dry-run", "-f", "Dockerfile", "no-such-dir"])
        .current_dir(ctx.path())
        .fails();
    assert!(
        err.starts_with("error: cannot open build context no-such-dir: "),
        "{err}"
    );
    assert!(err.contains("= help: pass an existing directory"), "{err}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["build", "parse"] {
        let out = kiln([sub, "--help"]).ok();
        assert!(out.contains("Usage: kiln"), "{sub}: {out}");
    }
    let out = kiln(["--help"]).ok();
    assert!(out.contains("build") && out.contains("parse"), "{out}");
}
