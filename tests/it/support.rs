//! Shared helpers for the integration tests.

use std::path::PathBuf;

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
