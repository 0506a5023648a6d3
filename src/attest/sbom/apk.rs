//! apk's database of installed packages, `/lib/apk/db/installed`: one paragraph per package of
//! `K:value` lines (apk-tools' `P` name, `V` version, `A` arch, `L` license, `o` origin, `m`
//! maintainer), separated by blank lines.

use super::os_release::OsRelease;
use super::purl::purl;
use super::root::Root;
use super::{Package, PackageKind, SbomError, field_value};
use std::path::Path;

/// Alpine's database of a large image is a few MiB (it lists every file).
const MAX_INSTALLED_BYTES: u64 = 64 * 1024 * 1024;

const INSTALLED: &str = "/lib/apk/db/installed";

pub(super) fn scan(
    root: &Root,
    os: &OsRelease,
    packages: &mut Vec<Package>,
) -> Result<(), SbomError> {
    let Some(content) = root.read(Path::new(INSTALLED), MAX_INSTALLED_BYTES)? else {
        return Ok(());
    };
    let namespace = os.id.clone().unwrap_or_else(|| "alpine".to_owned());
    packages.extend(parse(
        &String::from_utf8_lossy(&content),
        &namespace,
        os.distro().as_deref(),
    ));
    Ok(())
}

fn parse(text: &str, namespace: &str, distro: Option<&str>) -> Vec<Package> {
    let mut packages = Vec::new();
    let mut fields: Vec<(char, &str)> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let Some(package) = package(&fields, namespace, distro) {
                packages.push(package);
            }
            fields.clear();
            continue;
        }
        let mut chars = line.chars();
        if let (Some(key), Some(':')) = (chars.next(), chars.next()) {
            fields.push((key, chars.as_str()));
        }
    }
    packages
}

fn package(fields: &[(char, &str)], namespace: &str, distro: Option<&str>) -> Option<Package> {
    let get = |key: char| {
        fields
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, value)| field_value(value))
    };
    let name = get('P')?;
    let version = get('V')?;
    let arch = get('A');
    let origin = get('o');
    let purl = purl(
        "apk",
        Some(namespace),
        &name,
        &version,
        &[
            ("arch", arch.as_deref()),
            ("distro", distro),
            (
                "upstream",
                origin.as_deref().filter(|origin| *origin != name),
            ),
        ],
    );
    Some(Package {
        kind: PackageKind::Apk,
        purl,
        license: get('L'),
        found_in: INSTALLED.into(),
        arch,
        source_package: origin,
        supplier: get('m'),
        name,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::sbom::testing::garbage;

    #[test]
    fn packages_with_their_fields() {
        let text = "\
C:Q1abc=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:383152
L:MIT
o:musl
m:Timo Teräs <timo.teras@iki.fi>
F:lib
R:libc.musl-x86_64.so.1

P:busybox-binsh
V:1.36.1-r15
A:x86_64
L:GPL-2.0-only
o:busybox

V:1.0
";
        let packages = parse(text, "alpine", Some("alpine-3.19.1"));
        assert_eq!(packages.len(), 2, "{packages:#?}");
        assert_eq!(packages[0].name, "musl");
        assert_eq!(packages[0].license.as_deref(), Some("MIT"));
        assert_eq!(
            packages[0].purl,
            "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1"
        );
        assert_eq!(
            packages[1].purl,
            "pkg:apk/alpine/busybox-binsh@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1&upstream=busybox"
        );
        assert_eq!(
            packages[0].supplier.as_deref(),
            Some("Timo Teräs <timo.teras@iki.fi>")
        );
    }

    #[test]
    fn garbage_is_skipped_without_panicking() {
        for round in 0..200 {
            let bytes = garbage(round, b"PVAL:\n\n\xe2\x82\xac\xff\0x");
            for package in parse(&String::from_utf8_lossy(&bytes), "alpine", None) {
                assert!(!package.name.is_empty() && !package.version.is_empty());
            }
        }
    }
}
