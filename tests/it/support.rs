//! Shared helpers for the integration tests.

use std::fs;
use std::path::{Path, PathBuf};

/// The shared conformance data (`../shared/conformance` beside the repository), or `None` after
/// printing a notice when it is absent. Under `CI=true` its absence is a failure.
pub fn conformance_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing: CI must run with ../shared beside the repository",
            dir.display()
        );
    }
    eprintln!(
        "notice: skipping, {} is absent (it is required when CI=true)",
        dir.display()
    );
    None
}

/// Creates files (`name` → contents) and directories (names ending in `/`) under `root`.
pub fn populate(root: &Path, items: &[(&str, &str)]) {
    for (name, contents) in items {
        let path = root.join(name);
        if name.ends_with('/') {
            fs::create_dir_all(&path).expect("create directory");
        } else {
            fs::create_dir_all(path.parent().expect("has a parent")).expect("create directory");
            fs::write(&path, contents).expect("write file");
        }
    }
}

/// A temporary directory (a build context) holding `items` (see [`populate`]).
pub fn context(items: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    populate(dir.path(), items);
    dir
}
