//! `kiln build --call outline|targets[,format=json]` against the peer BuildKit's
//! `frontend.outline` and `frontend.targets` subrequests.
//!
//! The cases are `tests/it/outline_cases/NAME/` (a Dockerfile, optional `target` and
//! `build-args`), with `outline.txt` and `targets.txt` recorded from the peer by
//! `scripts/outline-cases-record.sh` (buildctl prints the subrequests' result.txt, which is what
//! buildx prints; it prints no result.json, so the JSON is checked against the recorded text's
//! names and values). When the peer runs here, the recording is checked to be current and a
//! sample of the 160 real Dockerfiles is compared live.

use crate::support::{conformance_dir, kiln, peer_buildctl, peer_registry};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Case {
    name: String,
    dir: PathBuf,
    target: Option<String>,
    build_args: Vec<String>,
}

fn cases() -> Vec<Case> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/outline_cases");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .expect("tests/it/outline_cases is readable")
        .map(|e| {
            e.expect("a case")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let dir = root.join(&name);
            let target = std::fs::read_to_string(dir.join("target"))
                .ok()
                .map(|t| t.trim().to_string());
            let build_args = std::fs::read_to_string(dir.join("build-args"))
                .map(|t| {
                    t.lines()
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Case {
                name,
                dir,
                target,
                build_args,
            }
        })
        .collect()
}

/// `kiln build --call CALL` on `file` in `context`: its stdout, or why it failed.
fn kiln_call(
    call: &str,
    context: &Path,
    file: &Path,
    target: Option<&str>,
    build_args: &[String],
) -> Result<String, String> {
    let root = tempfile::tempdir().expect("temp dir");
    let mut command = kiln()
        .root(root.path())
        .args(["build", "--call", call, "-f"])
        .arg(file);
    if let Some(target) = target {
        command = command.args(["--target", target]);
    }
    for arg in build_args {
        command = command.arg("--build-arg").arg(arg);
    }
    let out = command.arg(context).run();
    if !out.status.success() {
        return Err(format!("kiln failed: {}", out.stderr_str().trim()));
    }
    Ok(out.stdout_str())
}

/// `scripts/peer-lint.sh --request REQUEST`: the peer's text.
fn peer_call(
    request: &str,
    context: &Path,
    file: &Path,
    target: Option<&str>,
    build_args: &[String],
) -> Result<String, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/peer-lint.sh");
    let mut command = Command::new(script);
    command.args(["--stub-bases", "--request", request]);
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    for arg in build_args {
        command.arg("--build-arg").arg(arg);
    }
    let out = command
        .arg(context)
        .arg(file)
        .output()
        .map_err(|e| format!("scripts/peer-lint.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the peer failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `text` with the rows of each table sorted (headers first): BuildKit orders an outline's args
/// by line only, from a Go map's random order, so the names of one `ARG A B` come in any order.
fn rows_sorted(text: &str) -> String {
    let mut out = String::new();
    for block in text.split("\n\n") {
        let mut lines: Vec<&str> = block.lines().collect();
        if lines.len() > 1 {
            lines[1..].sort_unstable();
        }
        out.push_str(&lines.join("\n"));
        out.push_str("\n\n");
    }
    out
}

fn mismatch(what: &str, want: &str, got: &str) -> String {
    format!("{what}:\n--- BuildKit\n{want}--- kiln\n{got}")
}

#[test]
fn outline_and_targets_text_match_the_recorded_peer() {
    let mut failures = Vec::new();
    let cases = cases();
    assert!(cases.len() >= 6, "the outline cases are there");
    for case in &cases {
        for request in ["outline", "targets"] {
            let want = std::fs::read_to_string(case.dir.join(format!("{request}.txt")))
                .unwrap_or_else(|e| panic!("{}/{request}.txt: {e}", case.name));
            match kiln_call(
                request,
                &case.dir,
                &case.dir.join("Dockerfile"),
                case.target.as_deref(),
                &case.build_args,
            ) {
                Ok(got) if got == want => {}
                Ok(got) => {
                    failures.push(mismatch(&format!("{} {request}", case.name), &want, &got))
                }
                Err(e) => failures.push(format!("{} {request}: {e}", case.name)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The first column of the text table whose header starts with `header`, up to the blank line
/// after it: each row's text before the column where the header's second cell starts.
fn first_column(text: &str, header: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(header));
    let Some(head) = lines.next() else {
        return Vec::new();
    };
    let second = head[header.len()..]
        .find(|c: char| c != ' ')
        .map_or(head.len(), |i| header.len() + i);
    lines
        .take_while(|l| !l.is_empty())
        .map(|l| {
            l.chars()
                .take(second)
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect()
}

/// `format=json` is BuildKit's JSON: the outline's args and secrets in the recorded order, the
/// targets with their default, base, platform and FROM line, sources the Dockerfile in base64.
#[test]
fn json_format_is_buildkits_shape() {
    use base64::Engine as _;
    let mut failures = Vec::new();
    for case in cases() {
        let file = case.dir.join("Dockerfile");
        let outline: serde_json::Value = match kiln_call(
            "outline,format=json",
            &case.dir,
            &file,
            case.target.as_deref(),
            &case.build_args,
        ) {
            Ok(text) => serde_json::from_str(&text).expect("outline JSON"),
            Err(e) => {
                failures.push(format!("{}: {e}", case.name));
                continue;
            }
        };
        let recorded = std::fs::read_to_string(case.dir.join("outline.txt")).expect("outline.txt");
        let names = |key: &str| -> Vec<String> {
            outline[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| v["name"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        for (key, header) in [("args", "BUILD ARG"), ("secrets", "SECRET"), ("ssh", "SSH")] {
            if names(key) != first_column(&recorded, header) {
                failures.push(format!(
                    "{}: outline {key} {:?}, the peer's text lists {:?}",
                    case.name,
                    names(key),
                    first_column(&recorded, header)
                ));
            }
        }
        let source = outline["sources"][0].as_str().unwrap_or("");
        let dockerfile = std::fs::read(&file).expect("Dockerfile");
        if base64::engine::general_purpose::STANDARD
            .decode(source)
            .ok()
            != Some(dockerfile)
        {
            failures.push(format!(
                "{}: sources[0] is not the Dockerfile in base64",
                case.name
            ));
        }
        if let Some(arg) = outline["args"].as_array().and_then(|a| a.first())
            && arg["location"]["ranges"][0]["start"]["line"]
                .as_u64()
                .is_none()
        {
            failures.push(format!(
                "{}: an arg without a location line: {arg}",
                case.name
            ));
        }
    }
    let case = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/outline_cases/platforms-and-descriptions");
    let targets: serde_json::Value = serde_json::from_str(
        &kiln_call(
            "targets,format=json",
            &case,
            &case.join("Dockerfile"),
            None,
            &[],
        )
        .expect("targets"),
    )
    .expect("targets JSON");
    let builder = &targets["targets"][1];
    assert_eq!(builder["name"], "builder");
    assert_eq!(builder["base"], "golang:${GO}");
    assert_eq!(builder["platform"], "$BUILDPLATFORM");
    assert_eq!(builder["description"], "builds for the target");
    assert_eq!(builder["location"]["ranges"][0]["start"]["line"], 5);
    assert!(
        builder.get("default").is_none(),
        "false is left out as Go's omitempty does"
    );
    assert_eq!(targets["targets"][2]["default"], true);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_target_and_bad_call_are_clear_errors() {
    let case =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/outline_cases/unnamed-stages");
    let err = kiln_call(
        "outline",
        &case,
        &case.join("Dockerfile"),
        Some("nope"),
        &[],
    )
    .expect_err("no stage nope");
    assert!(
        err.contains("target stage \"nope\" could not be found"),
        "{err}"
    );
    let out = kiln()
        .args(["build", "--call", "frobnicate"])
        .arg(&case)
        .run()
        .failure();
    assert!(
        out.stderr_str()
            .contains("invalid --call method \"frobnicate\""),
        "{}",
        out.stderr_str()
    );
}

/// The recording is what the peer answers now, and kiln answers as the peer on a sample of the
/// real Dockerfiles (every tenth of the 160; an empty context).
#[test]
fn outline_and_targets_match_the_live_peer() {
    if peer_buildctl().is_none() || peer_registry().is_none() {
        return;
    }
    let mut failures = Vec::new();
    for case in cases() {
        for request in ["outline", "targets"] {
            let recorded = std::fs::read_to_string(case.dir.join(format!("{request}.txt")))
                .expect("recorded text");
            match peer_call(
                request,
                &case.dir,
                &case.dir.join("Dockerfile"),
                case.target.as_deref(),
                &case.build_args,
            ) {
                // BuildKit prints the names of one multi-name ARG in a random order.
                Ok(now) if rows_sorted(&now) == rows_sorted(&recorded) => {}
                Ok(now) => failures.push(format!(
                    "{} {request}: the recording is stale (scripts/outline-cases-record.sh)\n\
                     --- recorded\n{recorded}--- the peer now\n{now}",
                    case.name,
                )),
                Err(e) => failures.push(format!("{} {request}: {e}", case.name)),
            }
        }
    }
    if let Some(conformance) = conformance_dir() {
        let dir = conformance.join("parser/real-dockerfiles");
        let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("MANIFEST.tsv");
        let empty = tempfile::tempdir().expect("temp dir");
        for name in manifest
            .lines()
            .filter_map(|l| l.split('\t').next())
            .step_by(10)
        {
            let file = dir.join(name);
            for request in ["outline", "targets"] {
                let peer = peer_call(request, empty.path(), &file, None, &[]);
                match (peer, kiln_call(request, empty.path(), &file, None, &[])) {
                    (Ok(want), Ok(got)) if rows_sorted(&got) == rows_sorted(&want) => {}
                    (Ok(want), Ok(got)) => {
                        failures.push(mismatch(&format!("{name} {request}"), &want, &got))
                    }
                    // Not a Dockerfile (a template, say): both refuse it.
                    (Err(peer), Err(_)) if peer.contains("dockerfile parse error") => {}
                    (Err(e), _) => failures.push(format!("{name} {request}: {e}")),
                    (Ok(_), Err(e)) => failures.push(format!("{name} {request}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
