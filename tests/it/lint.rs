//! The build checks from the command line: `--check` and `--call check[,format=json]` run them
//! without building (printed as buildx prints them, exit 1 when something is found), the
//! `# check=` directive and `BUILDKIT_DOCKERFILE_CHECK` configure them, a build lists what
//! they found when it ends, and `error=true` fails the build before its first step.

use crate::support::{Output, context, kiln};
use std::path::Path;

/// `kiln --root ROOT build ARGS .` in `dir`.
fn build(root: &Path, dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["build"];
    all.extend(args);
    all.push(".");
    kiln().root(root).args(all).current_dir(dir).run()
}

/// The rule names of the `warning:` lines of `--check`'s text output, in order.
fn rules_of(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("warning: "))
        .map(|l| l.split(':').next().unwrap_or_default().to_string())
        .collect()
}

const FINDINGS: &str =
    "from scratch AS Base\nENV a b\nMAINTAINER me\nWORKDIR $undef\nCMD echo\nEXPOSE 80/TCP\n";

#[test]
fn check_prints_each_finding_at_its_line_and_exits_1_without_building() {
    let ctx = context(&[("Dockerfile", FINDINGS)]);
    let root = tempfile::tempdir().expect("temp dir");
    let store = root.path().join("store");
    let out = build(&store, ctx.path(), &["--check"]).code(1);
    let stdout = out.stdout_str();
    assert!(
        stdout.starts_with("Check complete, 9 warnings have been found!\n"),
        "{stdout}"
    );
    let expected = "\nwarning: MaintainerDeprecated: Maintainer instruction is deprecated in favor \
                    of using label\n --> Dockerfile:3:1\n  |\n3 | MAINTAINER me\n  | \
                    ^^^^^^^^^^^^^\n  = help: \
                    https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/\n";
    assert!(stdout.contains(expected), "{stdout}");
    assert_eq!(
        rules_of(&stdout),
        [
            "StageNameCasing",
            "FromAsCasing",
            "ConsistentInstructionCasing",
            "LegacyKeyValueFormat",
            "MaintainerDeprecated",
            "UndefinedVar",
            "WorkdirRelativePath",
            "JSONArgsRecommended",
            "ExposeProtoCasing",
        ]
    );
    assert!(out.stderr_str().is_empty(), "{out:?}");
    assert!(!store.exists(), "--check made a store");
    // `--call check` is the same; `ignorestatus=true` exits 0.
    let call = build(&store, ctx.path(), &["--call", "check"]).code(1);
    assert_eq!(call.stdout_str(), stdout);
    build(&store, ctx.path(), &["--call", "check,ignorestatus=true"]).success();
}

#[test]
fn a_clean_dockerfile_checks_clean() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a /a\nCMD [\"/a\"]\n"),
        ("a", "a"),
    ]);
    let root = tempfile::tempdir().expect("temp dir");
    let out = build(root.path(), ctx.path(), &["--check"]).success();
    assert_eq!(out.stdout_str(), "Check complete, no warnings found.\n");
}

#[test]
fn json_output_is_buildkits_lint_results() {
    let ctx = context(&[("Dockerfile", FINDINGS)]);
    let root = tempfile::tempdir().expect("temp dir");
    let out = build(root.path(), ctx.path(), &["--call", "check,format=json"]).code(1);
    let json = out.stdout_json();
    let warnings = json["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 9);
    // BuildKit's order (as it finds them), not sorted: MAINTAINER is found while parsing,
    // before the casing check that runs after the whole file is parsed.
    let names: Vec<&str> = warnings
        .iter()
        .map(|w| w["ruleName"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names[..4],
        [
            "StageNameCasing",
            "FromAsCasing",
            "MaintainerDeprecated",
            "ConsistentInstructionCasing"
        ]
    );
    assert_eq!(
        warnings[2],
        serde_json::json!({
            "ruleName": "MaintainerDeprecated",
            "description": "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
            "url": "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/",
            "detail": "Maintainer instruction is deprecated in favor of using label",
            "location": {"ranges": [{"start": {"line": 3}, "end": {"line": 3}}]},
        })
    );
    assert_eq!(json["sources"][0]["filename"], "Dockerfile");
    assert_eq!(json["sources"][0]["language"], "Dockerfile");
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(json["sources"][0]["data"].as_str().unwrap_or_default())
        .expect("base64");
    assert_eq!(data, FINDINGS.as_bytes());
    assert!(json.get("buildError").is_none());
    // Printed as Go's MarshalIndent prints it, two spaces, a newline at the end.
    assert!(
        out.stdout_str()
            .starts_with("{\n  \"warnings\": [\n    {\n      \"ruleName\"")
    );
    assert!(out.stdout_str().ends_with("}\n"));
}

#[test]
fn an_error_that_stops_the_checks_is_reported_with_what_was_found_before_it() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nMAINTAINER me\nFROM $NOPE\n")]);
    let root = tempfile::tempdir().expect("temp dir");
    let text = build(root.path(), ctx.path(), &["--check"]).code(1);
    assert!(
        text.stdout_str().contains("MaintainerDeprecated"),
        "{text:?}"
    );
    assert!(
        text.stderr_str()
            .contains("error: base name ($NOPE) should not be blank\n --> Dockerfile:3:"),
        "{text:?}"
    );
    let json = build(root.path(), ctx.path(), &["--call", "check,format=json"]).code(1);
    let doc = json.stdout_json();
    assert_eq!(
        doc["buildError"]["message"],
        "base name ($NOPE) should not be blank"
    );
    assert_eq!(
        doc["buildError"]["location"]["ranges"][0]["start"]["line"],
        3
    );
}

#[test]
fn the_check_directive_and_the_build_arg_configure_the_checks() {
    let dockerfile = "# check=skip=JSONArgsRecommended,MaintainerDeprecated\nFROM scratch\nMAINTAINER me\nCMD x\n# check=skip=WorkdirRelativePath\nWORKDIR rel\nWORKDIR /abs\nLABEL a b\n";
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let root = tempfile::tempdir().expect("temp dir");
    let out = build(root.path(), ctx.path(), &["--check"]).code(1);
    assert_eq!(rules_of(&out.stdout_str()), ["LegacyKeyValueFormat"]);
    // The build arg replaces the directive whole.
    let out = build(
        root.path(),
        ctx.path(),
        &[
            "--check",
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=LegacyKeyValueFormat",
        ],
    )
    .code(1);
    assert_eq!(
        rules_of(&out.stdout_str()),
        ["MaintainerDeprecated", "JSONArgsRecommended"]
    );
    let skip_all = build(
        root.path(),
        ctx.path(),
        &[
            "--check",
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=all",
        ],
    )
    .success();
    assert_eq!(
        skip_all.stdout_str(),
        "Check complete, no warnings found.\n"
    );
    // A bad value is an error naming it.
    let bad = build(
        root.path(),
        ctx.path(),
        &["--check", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip"],
    )
    .code(1);
    assert!(
        bad.stderr_str().contains(
            "failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: invalid check option \"skip\""
        ),
        "{bad:?}"
    );
}

#[test]
fn a_bad_check_directive_fails_the_build_at_its_line() {
    let ctx = context(&[("Dockerfile", "# check=error=perhaps\nFROM scratch\n")]);
    let root = tempfile::tempdir().expect("temp dir");
    let out = build(root.path(), ctx.path(), &["--progress", "plain"]).failure();
    let stderr = out.stderr_str();
    assert!(
        stderr.contains(
            "error: failed to parse check options: failed to parse check option \"error=perhaps\""
        ),
        "{stderr}"
    );
    assert!(stderr.contains(" --> Dockerfile:1:1"), "{stderr}");
}

#[test]
fn error_true_fails_the_build_before_its_first_step() {
    let dockerfile = "# check=error=true\nFROM scratch\nCOPY a /a\nCMD /a\n";
    let ctx = context(&[("Dockerfile", dockerfile), ("a", "a")]);
    let root = tempfile::tempdir().expect("temp dir");
    let out = build(
        root.path(),
        ctx.path(),
        &["--progress", "plain", "-t", "linted"],
    )
    .failure();
    let stderr = out.stderr_str();
    assert!(
        stderr.contains("warning: JSONArgsRecommended: JSON arguments recommended for CMD"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: lint violation found for rules: JSONArgsRecommended"),
        "{stderr}"
    );
    // No step ran and nothing was named.
    assert!(!stderr.contains("COPY a /a"), "{stderr}");
    let images = kiln().root(root.path()).args(["images"]).run().success();
    assert!(!images.stdout_str().contains("linted"), "{images:?}");
    // Skipping the rule lets it build.
    build(
        root.path(),
        ctx.path(),
        &[
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=error=true;skip=JSONArgsRecommended",
            "-q",
        ],
    )
    .success();
}

#[test]
fn a_build_lists_its_findings_when_it_ends() {
    let dockerfile =
        "FROM scratch AS unused\nCMD x\nFROM scratch\nMAINTAINER me\nCOPY a /a\nCMD /a\n";
    let ctx = context(&[("Dockerfile", dockerfile), ("a", "a")]);
    let root = tempfile::tempdir().expect("temp dir");
    let out = build(root.path(), ctx.path(), &["--progress", "plain"]).success();
    let stderr = out.stderr_str();
    // Only the stages the target needs are dispatched: the unused stage's CMD is not listed.
    let expected = "\n 2 warnings found (use kiln build --check to expand):\n \
                    - MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 4)\n \
                    - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 6)\n";
    assert!(stderr.ends_with(expected), "{stderr}");
    // As buildx: a quiet build lists none; the json progress has one event each.
    let quiet = build(root.path(), ctx.path(), &["-q"]).success();
    assert!(!quiet.stderr_str().contains("warning"), "{quiet:?}");
    let json = build(root.path(), ctx.path(), &["--progress", "json"]).success();
    let lint_events: Vec<serde_json::Value> = json
        .stderr_str()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "lint")
        .collect();
    assert_eq!(lint_events.len(), 2, "{json:?}");
    assert_eq!(lint_events[0]["rule"], "MaintainerDeprecated");
    assert_eq!(lint_events[0]["line"], 4);
    assert_eq!(
        lint_events[0]["url"],
        "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"
    );
}

#[test]
fn check_reads_the_dockerignore_but_not_the_files() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY secret.txt /\n"),
        (".dockerignore", "secret.txt\n"),
    ]);
    let root = tempfile::tempdir().expect("temp dir");
    // The file does not exist: the build would fail, the check reports what BuildKit reports.
    let out = build(root.path(), ctx.path(), &["--check"]).code(1);
    assert_eq!(rules_of(&out.stdout_str()), ["CopyIgnoredFile"]);
    assert!(
        out.stdout_str()
            .contains("Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore"),
        "{out:?}"
    );
}

#[test]
fn check_with_a_target_dispatches_only_what_it_needs() {
    let dockerfile = "FROM scratch AS a\nCMD x\nFROM scratch AS b\nCMD y\n";
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let root = tempfile::tempdir().expect("temp dir");
    let all = build(root.path(), ctx.path(), &["--check"]).code(1);
    assert_eq!(all.stdout_str().matches("JSONArgsRecommended:").count(), 2);
    let one = build(root.path(), ctx.path(), &["--check", "--target", "b"]).code(1);
    assert!(one.stdout_str().contains(" --> Dockerfile:4:1"), "{one:?}");
    assert_eq!(one.stdout_str().matches("JSONArgsRecommended:").count(), 1);
}

#[test]
fn call_values_kiln_does_not_know_are_rejected() {
    let ctx = context(&[("Dockerfile", "FROM scratch\n")]);
    let root = tempfile::tempdir().expect("temp dir");
    let out = build(root.path(), ctx.path(), &["--call", "frobnicate"]).failure();
    assert!(
        out.stderr_str().contains(
            "invalid --call method \"frobnicate\": expected build, check, outline or targets"
        ),
        "{out:?}"
    );
    let out = build(root.path(), ctx.path(), &["--call", "check,format=yaml"]).failure();
    assert!(
        out.stderr_str().contains("invalid --call format \"yaml\""),
        "{out:?}"
    );
}

#[test]
fn a_finding_quoting_control_characters_is_printed_escaped() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nWORKDIR a\u{1b}[31mb\n")]);
    let root = tempfile::tempdir().expect("temp dir");
    let out = build(root.path(), ctx.path(), &["--check"]).code(1);
    assert!(!out.stdout_str().contains('\u{1b}'), "{out:?}");
}

#[test]
fn a_dry_run_shows_the_findings_of_the_stages_it_would_build() {
    let dockerfile = "FROM scratch AS unused\nCMD x\nFROM scratch\nMAINTAINER me\n";
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let root = tempfile::tempdir().expect("temp dir");
    let out = build(&root.path().join("store"), ctx.path(), &["--dry-run"]).success();
    let stderr = out.stderr_str();
    assert!(
        stderr.contains("warning: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label\n --> Dockerfile:4:1\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("JSONArgsRecommended"), "{stderr}");
}
