//! `.dockerignore` matching against moby/patternmatcher's own test cases
//! (`../shared/conformance/dockerignore`, formats in its README).

use crate::support::conformance_dir;
use kiln::frontend::context::Dockerignore;
use kiln::frontend::context::dockerignore::clean;
use std::path::Path;

/// Tab-separated rows of a `.tsv` file, without `#` lines and blank lines.
fn rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// patternmatcher's package func `Matches(file, patterns)`: the path is cleaned and `.` is never
/// excluded.
fn package_matches(ignore: &Dockerignore, path: &str) -> bool {
    let path = clean(path);
    path != "." && ignore.is_excluded(&path)
}

#[test]
fn single_pattern_cases() {
    let Some(dir) = conformance_dir() else { return };
    let mut failures = Vec::new();
    let (mut run, mut skipped) = (0, 0);
    for row in rows(&dir.join("dockerignore/cases.tsv")) {
        let [pattern, path, expected, platform] = row.as_slice() else {
            panic!("malformed row {row:?}");
        };
        if platform == "windows-only" {
            skipped += 1;
            continue;
        }
        run += 1;
        let want = expected == "true";
        match Dockerignore::from_patterns(&[pattern]) {
            Ok(ignore) => {
                let got = ignore.is_excluded(path);
                if got != want {
                    failures.push(format!("{pattern:?} vs {path:?}: got {got}, want {want}"));
                }
            }
            Err(e) => failures.push(format!("{pattern:?}: unexpected error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!((run, skipped), (68, 0), "cases run, skipped");
}

#[test]
fn multi_pattern_cases() {
    let Some(dir) = conformance_dir() else { return };
    let path = dir.join("dockerignore/multi_cases.jsonl");
    let text = std::fs::read_to_string(&path).expect("read multi_cases.jsonl");
    let mut failures = Vec::new();
    let mut run = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).expect("valid JSON line");
        let patterns: Vec<String> = case["patterns"]
            .as_array()
            .expect("patterns array")
            .iter()
            .map(|p| p.as_str().expect("pattern string").to_string())
            .collect();
        let file = case["path"].as_str().expect("path string");
        let want = case["match"].as_bool().expect("match bool");
        // `error` is `true` or a note saying why it must fail.
        let want_error = !matches!(
            case.get("error"),
            None | Some(serde_json::Value::Bool(false))
        );
        let package_func = case["api"]
            .as_str()
            .is_some_and(|a| a.starts_with("Matches "));
        run += 1;
        match Dockerignore::from_patterns(&patterns) {
            Err(e) if !want_error => failures.push(format!("{patterns:?}: unexpected error {e}")),
            Err(_) => {}
            Ok(_) if want_error => failures.push(format!("{patterns:?}: want an error")),
            Ok(ignore) => {
                let got = if package_func {
                    package_matches(&ignore, file)
                } else {
                    ignore.is_excluded(file)
                };
                if got != want {
                    failures.push(format!("{patterns:?} vs {file:?}: got {got}, want {want}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(run, 16, "cases run");
}

#[test]
fn filepath_match_cases() {
    let Some(dir) = conformance_dir() else { return };
    let mut failures = Vec::new();
    let mut run = 0;
    for row in rows(&dir.join("dockerignore/matchtests.tsv")) {
        let [pattern, path, expected, error] = row.as_slice() else {
            panic!("malformed row {row:?}");
        };
        run += 1;
        let want = expected == "true";
        match (Dockerignore::from_patterns(&[pattern]), error.as_str()) {
            (Ok(ignore), "nil") => {
                let got = package_matches(&ignore, path);
                if got != want {
                    failures.push(format!("{pattern:?} vs {path:?}: got {got}, want {want}"));
                }
            }
            (Ok(_), _) => failures.push(format!("{pattern:?}: want {error}, got none")),
            (Err(e), "nil") => failures.push(format!("{pattern:?}: unexpected error {e}")),
            (Err(e), _) => {
                let message = e.to_string();
                if !message.contains(&format!("{pattern:?}")) || !message.contains("line 1") {
                    failures.push(format!("{pattern:?}: error does not name it: {message}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(run, 54, "cases run");
}
