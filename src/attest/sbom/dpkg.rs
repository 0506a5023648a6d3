//! dpkg's database: `/var/lib/dpkg/status` and, in distroless images, one file per package in
//! `/var/lib/dpkg/status.d/`. Only installed packages count (`Status: install ok installed`;
//! status.d files are written for installed packages and may have no `Status`). The license
//! comes from `/usr/share/doc/<package>/copyright` when it is machine readable (DEP-5).

use super::fields::{Paragraph, paragraphs};
use super::os_release::OsRelease;
use super::purl::purl;
use super::root::Root;
use super::{Package, PackageKind, SbomError, field_value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The status database of a large distribution image is a few MiB.
pub(super) const MAX_STATUS_BYTES: u64 = 64 * 1024 * 1024;
/// A copyright file; past this (firmware bundles) the license is left unknown.
const MAX_COPYRIGHT_BYTES: u64 = 4 * 1024 * 1024;

const STATUS: &str = "/var/lib/dpkg/status";
const STATUS_D: &str = "/var/lib/dpkg/status.d";

pub(super) fn scan(
    root: &Root,
    os: &OsRelease,
    packages: &mut Vec<Package>,
) -> Result<(), SbomError> {
    let namespace = os.id.clone().unwrap_or_else(|| "debian".to_owned());
    let distro = os.distro();
    let mut found = Vec::new();
    if let Some(status) = root.read(Path::new(STATUS), MAX_STATUS_BYTES)? {
        found.extend(parse(
            &String::from_utf8_lossy(&status),
            Path::new(STATUS),
            true,
        ));
    }
    for (name, file) in root.files_in(Path::new(STATUS_D))? {
        let name = name.to_string_lossy();
        // `<package>.md5sums` lists files, not a package.
        if name.starts_with('.') || name.ends_with(".md5sums") {
            continue;
        }
        let path = Path::new(STATUS_D).join(&*name);
        let content = super::root::read_file(file, &path, MAX_STATUS_BYTES)?;
        found.extend(parse(&String::from_utf8_lossy(&content), &path, false));
    }
    for entry in found {
        let license = copyright_license(root, &entry.name);
        let upstream = entry.source.as_ref().map(|(name, version)| match version {
            Some(version) if *version != entry.version => format!("{name}@{version}"),
            _ => name.clone(),
        });
        let purl = purl(
            "deb",
            Some(&namespace),
            &entry.name,
            &entry.version,
            &[
                ("arch", entry.arch.as_deref()),
                ("distro", distro.as_deref()),
                ("upstream", upstream.as_deref()),
            ],
        );
        packages.push(Package {
            kind: PackageKind::Deb,
            purl,
            license,
            found_in: entry.found_in,
            arch: entry.arch,
            source_package: entry.source.map(|(name, _)| name),
            supplier: entry.maintainer,
            name: entry.name,
            version: entry.version,
        });
    }
    Ok(())
}

/// One installed package's status paragraph.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Installed {
    name: String,
    version: String,
    arch: Option<String>,
    /// `Source: name (version)`: the source package and, when it differs, its version.
    source: Option<(String, Option<String>)>,
    maintainer: Option<String>,
    found_in: PathBuf,
}

/// The installed packages of a status file. A paragraph without a valid name and version is
/// skipped; without a `Status` it counts only in `status.d` (`status_required` false).
fn parse(text: &str, found_in: &Path, status_required: bool) -> Vec<Installed> {
    paragraphs(text)
        .iter()
        .filter(|paragraph| is_installed(paragraph, status_required))
        .filter_map(|paragraph| {
            let name = field_value(paragraph.get("Package")?)?;
            if !is_package_name(&name) {
                return None;
            }
            Some(Installed {
                version: field_value(paragraph.get("Version")?)?,
                arch: paragraph.get("Architecture").and_then(field_value),
                source: paragraph.get("Source").and_then(source_field),
                maintainer: paragraph.get("Maintainer").and_then(field_value),
                found_in: found_in.to_path_buf(),
                name,
            })
        })
        .collect()
}

fn is_installed(paragraph: &Paragraph, status_required: bool) -> bool {
    match paragraph.get("Status") {
        Some(status) => status.split_whitespace().eq(["install", "ok", "installed"]),
        None => !status_required,
    }
}

/// dpkg's rule for package names (deb-control(5)): lower-case letters, digits, `+`, `-`, `.`,
/// at least two characters, starting with an alphanumeric. It also keeps the name usable in
/// `/usr/share/doc/<name>`.
fn is_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// `glibc (2.36-9)` → (`glibc`, `2.36-9`).
fn source_field(value: &str) -> Option<(String, Option<String>)> {
    let (name, version) = match value.split_once('(') {
        Some((name, rest)) => (name.trim(), rest.strip_suffix(')').map(str::trim)),
        None => (value.trim(), None),
    };
    let name = field_value(name).filter(|name| is_package_name(name))?;
    Some((name, version.and_then(field_value)))
}

/// The licenses a machine-readable copyright file (DEP-5) names, joined with `AND` (each
/// `License:` field's first line, in sorted order); `None` when there is no such file or it is
/// free-form. Optional information: a file that cannot be read leaves the license unknown.
fn copyright_license(root: &Root, package: &str) -> Option<String> {
    let path = PathBuf::from(format!("/usr/share/doc/{package}/copyright"));
    let content = root.read(&path, MAX_COPYRIGHT_BYTES).ok()??;
    dep5_license(&String::from_utf8_lossy(&content))
}

fn dep5_license(text: &str) -> Option<String> {
    let paragraphs = paragraphs(text);
    let header = paragraphs.first()?;
    if !header.get("Format")?.contains("copyright-format") {
        return None;
    }
    let licenses: BTreeSet<String> = paragraphs
        .iter()
        .flat_map(|paragraph| paragraph.all("License"))
        .filter_map(|value| field_value(value.lines().next()?))
        .collect();
    if licenses.is_empty() {
        return None;
    }
    let parts: Vec<String> = licenses
        .into_iter()
        .map(|license| {
            if license.contains(char::is_whitespace) {
                format!("({license})")
            } else {
                license
            }
        })
        .collect();
    Some(parts.join(" AND "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::sbom::testing::garbage;

    const STATUS_TEXT: &str = "\
Package: bash
Status: install ok installed
Priority: required
Architecture: amd64
Maintainer: Matthias Klose <doko@debian.org>
Version: 5.2.15-2+b2
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: glibc (2.36-9+deb12u4)
Version: 2.36-9+deb12u4

Package: libc6
Status: install ok installed
Architecture: i386
Source: glibc
Version: 2.36-9+deb12u4

Package: no-version
Status: install ok installed

Package: BAD/../name
Status: install ok installed
Version: 1
";

    #[test]
    fn only_installed_packages_with_name_and_version_are_listed() {
        let found = parse(STATUS_TEXT, Path::new(STATUS), true);
        let names: Vec<_> = found
            .iter()
            .map(|p| (p.name.as_str(), p.arch.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("bash", Some("amd64")),
                ("libc6", Some("amd64")),
                ("libc6", Some("i386"))
            ]
        );
        assert_eq!(found[0].version, "5.2.15-2+b2");
        assert_eq!(
            found[0].maintainer.as_deref(),
            Some("Matthias Klose <doko@debian.org>")
        );
        assert_eq!(
            found[1].source,
            Some(("glibc".to_owned(), Some("2.36-9+deb12u4".to_owned())))
        );
        assert_eq!(found[2].source, Some(("glibc".to_owned(), None)));
    }

    #[test]
    fn status_d_paragraphs_need_no_status() {
        let text = "Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n";
        assert_eq!(parse(text, Path::new("/x"), false).len(), 1);
        assert_eq!(parse(text, Path::new("/x"), true).len(), 0);
    }

    #[test]
    fn machine_readable_copyright_gives_the_licenses() {
        let text = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: bash

Files: *
Copyright: 1987-2022 Free Software Foundation, Inc.
License: GPL-3+

Files: debian/*
License: GPL-3+

Files: lib/x
License: GPL-2+ or Artistic
 The full text.
";
        assert_eq!(
            dep5_license(text).as_deref(),
            Some("(GPL-2+ or Artistic) AND GPL-3+")
        );
        assert_eq!(dep5_license("This is bash, written by Brian Fox.\n"), None);
    }

    #[test]
    fn garbage_is_skipped_without_panicking() {
        for round in 0..200 {
            let bytes = garbage(round, b"Package: Version:\n (x)installed ok\t\xff\0");
            let text = String::from_utf8_lossy(&bytes);
            for entry in parse(&text, Path::new("/x"), round % 2 == 0) {
                assert!(is_package_name(&entry.name));
            }
            let _ = dep5_license(&text);
            let _ = source_field(&text);
        }
    }
}
