//! Installed Python distributions (`site-packages`, Debian's `dist-packages`, anywhere in the
//! tree as syft's globs have it): `*.dist-info/METADATA` and `*.egg-info/PKG-INFO` (or an
//! `*.egg-info` file), whose core-metadata headers give `Name`, `Version` and the license
//! (`License-Expression`, PEP 639, else `License`).

use super::fields::headers;
use super::purl::purl;
use super::root::{Entry, EntryKind};
use super::{Package, PackageKind, SbomError, field_value};

/// The headers come first; the body after them (the long description) is not needed, so only
/// this much of a metadata file is read.
const MAX_HEADER_BYTES: u64 = 1024 * 1024;

/// A `License` header longer than this, or of several lines, is a license's full text, not a
/// name.
const MAX_LICENSE_NAME: usize = 256;

/// Adds the distribution `entry` describes, if it is a metadata file.
pub(super) fn visit(entry: &Entry<'_>, packages: &mut Vec<Package>) -> Result<(), SbomError> {
    if entry.kind != EntryKind::File || !is_metadata_file(entry) {
        return Ok(());
    }
    let Some(content) = entry.read_prefix(MAX_HEADER_BYTES)? else {
        return Ok(());
    };
    packages.extend(parse(&String::from_utf8_lossy(&content), entry));
    Ok(())
}

fn is_metadata_file(entry: &Entry<'_>) -> bool {
    let name = entry.name.to_string_lossy();
    let parent = entry
        .path
        .parent()
        .and_then(|parent| parent.file_name())
        .map(|parent| parent.to_string_lossy())
        .unwrap_or_default();
    (name == "METADATA" && parent.ends_with(".dist-info"))
        || (name == "PKG-INFO" && parent.ends_with(".egg-info"))
        || name.ends_with(".egg-info")
}

fn parse(text: &str, entry: &Entry<'_>) -> Option<Package> {
    let headers = headers(text);
    let name = field_value(headers.get("Name")?)?;
    let version = field_value(headers.get("Version")?)?;
    let license = headers
        .get("License-Expression")
        .or_else(|| headers.get("License"))
        .filter(|license| !license.contains('\n') && license.len() <= MAX_LICENSE_NAME)
        .and_then(field_value)
        .filter(|license| !license.eq_ignore_ascii_case("UNKNOWN"));
    let supplier = headers
        .get("Author-email")
        .or_else(|| headers.get("Author"))
        .or_else(|| headers.get("Maintainer-email"))
        .and_then(field_value);
    Some(Package {
        kind: PackageKind::Python,
        purl: purl("pypi", None, &normalized_name(&name), &version, &[]),
        license,
        found_in: entry.path.to_path_buf(),
        arch: None,
        source_package: None,
        supplier,
        name,
        version,
    })
}

/// The purl spec's PyPI name: lower-cased, `_` replaced with `-`.
fn normalized_name(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purl_name_is_normalised() {
        assert_eq!(normalized_name("Typing_Extensions"), "typing-extensions");
    }
}
