//! Rendered front-end errors (typed instructions, stages, build graph), one snapshot per input in
//! `testdata/frontend/errors/`.

use kiln::frontend::dag::StageDag;
use kiln::frontend::diagnostic::{Located, render_error};
use kiln::frontend::stage::{ResolveOptions, resolve};
use std::path::PathBuf;

/// The `--target` each input is built with (the last stage when absent).
const TARGETS: &[(&str, &str)] = &[("unknown_target", "nope"), ("copy_from_later_stage", "app")];

/// Renders an error the way the CLI prints it.
fn rendered(source: &str, err: &(impl Located + std::error::Error)) -> String {
    render_error("Dockerfile", source, err)
}

/// Runs the front end on `source` and renders the first error.
fn first_error(source: &str, target: Option<&str>) -> Option<String> {
    let df = kiln::frontend::parse(source.as_bytes()).ok()?;
    let resolved = match resolve(&df, &ResolveOptions::default()) {
        Ok(r) => r,
        Err(e) => return Some(rendered(source, &e)),
    };
    StageDag::new(&resolved, target)
        .err()
        .map(|e| rendered(source, &e))
}

#[test]
fn rendered_frontend_errors() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/frontend/errors");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    paths.sort();
    let mut missing = Vec::new();
    for path in &paths {
        let name = path.file_stem().unwrap().to_str().unwrap();
        let source = std::fs::read_to_string(path).unwrap();
        let target = TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
        match first_error(&source, target) {
            Some(out) => insta::assert_snapshot!(name, out),
            None => missing.push(name.to_string()),
        }
    }
    assert!(missing.is_empty(), "no error for: {missing:?}");
    assert_eq!(paths.len(), 14);
}
