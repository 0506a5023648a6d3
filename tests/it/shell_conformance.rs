//! Word expansion against BuildKit's own shell tests (`frontend/dockerfile/shell/envVarTest`
//! and `wordsTest`), read from the shared conformance data.

use kiln::frontend::shell::Lexer;

use crate::support::conformance_dir;

/// `A` and `U` lines of envVarTest (the `W` ones are Windows-only).
const ENV_VAR_CASES: usize = 228;
/// Expectation lines of wordsTest (not counting `ENV` and comment lines).
const WORDS_CASES: usize = 24;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn env_var_test() {
    let Some(dir) = conformance_dir() else {
        return;
    };
    let path = dir.join("shell/envVarTest");
    let text = std::fs::read_to_string(&path).expect("envVarTest is readable");
    let env = env(&[
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]);
    let lexer = Lexer::new('\\');
    let mut failures = Vec::new();
    let mut ran = 0;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').map(str::trim).collect();
        let [platform, input, expected] = fields.as_slice() else {
            failures.push(format!("line {line_no}: not three fields: {line:?}"));
            continue;
        };
        match *platform {
            "W" => continue,
            "A" | "U" => {}
            other => {
                failures.push(format!("line {line_no}: unknown platform {other:?}"));
                continue;
            }
        }
        ran += 1;
        let got = lexer.expand_word(input, &env);
        let ok = match (&got, *expected) {
            (Err(_), "error") => true,
            (Ok(value), expected) => expected != "error" && value == expected,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "line {line_no}: {input:?}: expected {expected:?}, got {got:?}"
            ));
        }
    }
    for failure in &failures {
        eprintln!("{failure}");
    }
    assert!(
        failures.is_empty(),
        "{} envVarTest failures",
        failures.len()
    );
    assert_eq!(ran, ENV_VAR_CASES, "envVarTest case count");
}

#[test]
fn words_test() {
    let Some(dir) = conformance_dir() else {
        return;
    };
    let path = dir.join("shell/wordsTest");
    let text = std::fs::read_to_string(&path).expect("wordsTest is readable");
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV ") {
            let assignment = assignment.trim_start_matches(' ');
            let (name, value) = assignment.split_once('=').unwrap_or((assignment, ""));
            env.push((name.to_string(), value.to_string()));
            continue;
        }
        let Some((input, expected)) = line.split_once('|') else {
            failures.push(format!("line {line_no}: no '|' in {line:?}"));
            continue;
        };
        ran += 1;
        let input = input.trim();
        let expected: Vec<String> = expected
            .trim_start_matches(' ')
            .split(',')
            .map(str::to_string)
            .collect();
        let got = lexer
            .expand_words(input, &env)
            .unwrap_or_else(|_| vec!["error".to_string()]);
        if got != expected {
            failures.push(format!(
                "line {line_no}: {input:?}: expected {expected:?}, got {got:?}"
            ));
        }
    }
    for failure in &failures {
        eprintln!("{failure}");
    }
    assert!(failures.is_empty(), "{} wordsTest failures", failures.len());
    assert_eq!(ran, WORDS_CASES, "wordsTest case count");
}
