//! npm packages installed under a `node_modules` directory: `node_modules/<name>/package.json`
//! and `node_modules/@scope/<name>/package.json`, with the manifest's own `name`, `version`,
//! `license` (or the old `licenses` list) and `author`.

use super::purl::purl;
use super::root::{Entry, EntryKind};
use super::{Package, PackageKind, SbomError, field_value};
use serde_json::Value;
use std::path::Path;

/// A package.json is a few KiB; a few MiB is already odd.
pub(super) const MAX_PACKAGE_JSON_BYTES: u64 = 4 * 1024 * 1024;

/// Adds the package `entry` describes, if it is an installed package's `package.json`.
pub(super) fn visit(entry: &Entry<'_>, packages: &mut Vec<Package>) -> Result<(), SbomError> {
    if entry.kind != EntryKind::File || entry.name != "package.json" || !is_installed(entry.path) {
        return Ok(());
    }
    let Some(content) = entry.read(MAX_PACKAGE_JSON_BYTES)? else {
        return Ok(());
    };
    // serde_json bounds nesting (128 levels); a manifest that does not parse is skipped.
    if let Ok(manifest) = serde_json::from_slice::<Value>(&content) {
        packages.extend(parse(&manifest, entry.path));
    }
    Ok(())
}

/// Whether `path` is `…/node_modules/<name>/package.json` or
/// `…/node_modules/@scope/<name>/package.json`.
fn is_installed(path: &Path) -> bool {
    let mut ancestors = path.ancestors().skip(1).filter_map(Path::file_name);
    let (Some(_package), Some(parent)) = (ancestors.next(), ancestors.next()) else {
        return false;
    };
    if parent == "node_modules" {
        return true;
    }
    parent.to_string_lossy().starts_with('@') && ancestors.next() == Some("node_modules".as_ref())
}

fn parse(manifest: &Value, found_in: &Path) -> Option<Package> {
    let full_name = field_value(manifest.get("name")?.as_str()?)?;
    let version = field_value(manifest.get("version")?.as_str()?)?;
    let (namespace, name) = match full_name.split_once('/') {
        Some((scope, name)) if scope.starts_with('@') => (Some(scope), name),
        Some(_) => return None,
        None => (None, full_name.as_str()),
    };
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Some(Package {
        kind: PackageKind::Npm,
        purl: purl("npm", namespace, name, &version, &[]),
        license: license(manifest),
        found_in: found_in.to_path_buf(),
        arch: None,
        source_package: None,
        supplier: author(manifest.get("author")),
        name: full_name.clone(),
        version,
    })
}

/// `"license": "MIT"`, `"license": {"type": "MIT"}`, or the deprecated
/// `"licenses": [{"type": "MIT"}, …]` (a choice among them: `OR`).
fn license(manifest: &Value) -> Option<String> {
    let name_of = |value: &Value| match value {
        Value::String(name) => field_value(name),
        Value::Object(object) => object.get("type")?.as_str().and_then(field_value),
        _ => None,
    };
    if let Some(license) = manifest.get("license").and_then(name_of) {
        return Some(license);
    }
    let names: Vec<String> = manifest
        .get("licenses")?
        .as_array()?
        .iter()
        .filter_map(name_of)
        .collect();
    match names.len() {
        0 => None,
        1 => names.into_iter().next(),
        _ => Some(names.join(" OR ")),
    }
}

/// `"author": "Name <email> (url)"` or `{"name": …, "email": …}`.
fn author(author: Option<&Value>) -> Option<String> {
    match author? {
        Value::String(author) => field_value(author),
        Value::Object(object) => {
            let name = object.get("name")?.as_str().and_then(field_value)?;
            match object
                .get("email")
                .and_then(Value::as_str)
                .and_then(field_value)
            {
                Some(email) => Some(format!("{name} <{email}>")),
                None => Some(name),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn installed_paths() {
        assert!(is_installed(Path::new(
            "/app/node_modules/left-pad/package.json"
        )));
        assert!(is_installed(Path::new(
            "/app/node_modules/@types/node/package.json"
        )));
        assert!(!is_installed(Path::new("/app/package.json")));
        assert!(!is_installed(Path::new(
            "/app/node_modules/x/lib/package.json"
        )));
        assert!(!is_installed(Path::new("/package.json")));
    }

    #[test]
    fn manifests() {
        let scoped = parse(
            &json!({"name": "@types/node", "version": "20.1.0", "license": {"type": "MIT"},
                    "author": {"name": "A", "email": "a@example.com"}}),
            Path::new("/x"),
        )
        .expect("a package");
        assert_eq!(scoped.purl, "pkg:npm/%40types/node@20.1.0");
        assert_eq!(scoped.name, "@types/node");
        assert_eq!(scoped.license.as_deref(), Some("MIT"));
        assert_eq!(scoped.supplier.as_deref(), Some("A <a@example.com>"));
        let old = parse(
            &json!({"name": "x", "version": "1.0.0",
                    "licenses": [{"type": "MIT"}, {"type": "Apache-2.0"}]}),
            Path::new("/x"),
        )
        .expect("a package");
        assert_eq!(old.license.as_deref(), Some("MIT OR Apache-2.0"));
        for bad in [
            json!({"name": "x"}),
            json!({"name": 1, "version": "1"}),
            json!({"name": "a/b", "version": "1"}),
            json!({"name": "@s/a/b", "version": "1"}),
            json!([]),
            json!({"name": "x", "version": "1\u{0}"}),
        ] {
            assert_eq!(parse(&bad, Path::new("/x")), None, "{bad}");
        }
    }
}
