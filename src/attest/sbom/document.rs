//! The SPDX 2.3 JSON document (<https://spdx.github.io/spdx-spec/v2.3/>) of a scan, shaped like
//! syft's (which BuildKit's scanner runs): a root package for the image that CONTAINS each
//! package, every package with its purl as a PACKAGE-MANAGER reference, `NOASSERTION` wherever
//! nothing is known.

use super::{Package, PackageKind, Subject};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const NOASSERTION: &str = "NOASSERTION";

/// A declared license longer than this is not an expression worth parsing.
const MAX_LICENSE_EXPRESSION: usize = 1024;

pub(super) fn document(packages: &[Package], subject: &Subject) -> Value {
    let mut packages: Vec<&Package> = packages.iter().collect();
    packages.sort();
    packages.dedup();
    let image_name = if subject.name.is_empty() {
        "image"
    } else {
        subject.name.as_str()
    };
    let root_id = format!("SPDXRef-DocumentRoot-Image-{}", id_string(image_name));
    let mut root = json!({
        "name": image_name,
        "SPDXID": root_id,
        "supplier": NOASSERTION,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": false,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "CONTAINER",
    });
    if let Some(platform) = &subject.platform {
        root["comment"] = json!(format!("platform: {platform}"));
    }
    let mut spdx_packages = vec![root];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relatedSpdxElement": root_id,
        "relationshipType": "DESCRIBES",
    })];
    for package in &packages {
        let id = package_id(package);
        spdx_packages.push(json!({
            "name": package.name,
            "SPDXID": id,
            "versionInfo": package.version,
            "supplier": package.supplier.as_deref().map_or_else(|| NOASSERTION.to_owned(), supplier),
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": false,
            "sourceInfo": source_info(package),
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": package
                .license
                .as_deref()
                .and_then(license_expression)
                .unwrap_or_else(|| NOASSERTION.to_owned()),
            "copyrightText": NOASSERTION,
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": package.purl,
            }],
        }));
        relationships.push(json!({
            "spdxElementId": root_id,
            "relatedSpdxElement": id,
            "relationshipType": "CONTAINS",
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image_name,
        "documentNamespace": namespace(image_name, subject, &packages),
        "creationInfo": {
            "created": subject.created,
            "creators": [
                "Organization: kiln",
                format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION")),
            ],
        },
        "packages": spdx_packages,
        "relationships": relationships,
    })
}

/// A unique, deterministic namespace: the image's name and a digest of the subject and the
/// packages, so another image or another content gets another namespace.
fn namespace(image_name: &str, subject: &Subject, packages: &[&Package]) -> String {
    let mut digest = Sha256::new();
    for part in [image_name, subject.platform.as_deref().unwrap_or("")] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    for package in packages {
        digest.update(package.purl.as_bytes());
        digest.update([0]);
        digest.update(package.found_in.as_os_str().as_encoded_bytes());
        digest.update([0]);
    }
    let hex: String = digest
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("https://kiln.dev/spdx/{}-{hex}", id_string(image_name))
}

/// `SPDXRef-Package-<type>-<name>-<digest>`: the digest of its purl and location keeps two
/// packages of one name (two architectures, two copies) apart.
fn package_id(package: &Package) -> String {
    let mut digest = Sha256::new();
    digest.update(package.purl.as_bytes());
    digest.update([0]);
    digest.update(package.found_in.as_os_str().as_encoded_bytes());
    let hex: String = digest.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!(
        "SPDXRef-Package-{}-{}-{hex}",
        kind_name(package.kind),
        id_string(&package.name)
    )
}

fn kind_name(kind: PackageKind) -> &'static str {
    match kind {
        PackageKind::Deb => "deb",
        PackageKind::Apk => "apk",
        PackageKind::Python => "python",
        PackageKind::Npm => "npm",
        PackageKind::Cargo => "rust-crate",
    }
}

/// `text` with everything outside SPDX's idstring alphabet (`[a-zA-Z0-9.-]`) replaced by `-`.
fn id_string(text: &str) -> String {
    let id: String = text
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if id.is_empty() { "-".to_owned() } else { id }
}

/// Where the package was found, in syft's words.
fn source_info(package: &Package) -> String {
    let what = match package.kind {
        PackageKind::Deb => "DPKG DB",
        PackageKind::Apk => "APK DB",
        PackageKind::Python => "installed python package manifest file",
        PackageKind::Npm => "installed node module manifest file",
        PackageKind::Cargo => "rust executable with cargo-auditable data",
    };
    format!(
        "acquired package info from {what}: {}",
        package.found_in.display()
    )
}

/// `Name <email>` → `Person: Name (email)`, SPDX's supplier form.
fn supplier(maintainer: &str) -> String {
    let (name, email) = match maintainer.split_once('<') {
        Some((name, rest)) => (
            name.trim(),
            rest.split_once('>').map(|(email, _)| email.trim()),
        ),
        None => (maintainer.trim(), None),
    };
    match email {
        Some(email) if !email.is_empty() && !name.is_empty() => format!("Person: {name} ({email})"),
        Some(email) if !email.is_empty() => format!("Person: ({email})"),
        _ if !name.is_empty() => format!("Person: {name}"),
        _ => NOASSERTION.to_owned(),
    }
}

/// `license` as a valid SPDX license expression of listed licenses: imprecise names are
/// canonicalised (`GPL-2+` → `GPL-2.0-or-later`, `MIT/X11` → `MIT OR X11`); `None` for anything
/// that is not one, or that needs a `LicenseRef-` this document does not define.
pub(super) fn license_expression(license: &str) -> Option<String> {
    if license.len() > MAX_LICENSE_EXPRESSION {
        return None;
    }
    let license = debian_short_names(license);
    let canonical = match spdx::Expression::canonicalize(&license) {
        Ok(Some(canonical)) => canonical,
        Ok(None) => license,
        Err(_) => return None,
    };
    if ["LicenseRef-", "DocumentRef-", "AdditionRef-"]
        .iter()
        .any(|reference| canonical.contains(reference))
    {
        return None;
    }
    spdx::Expression::parse(&canonical).ok()?;
    Some(canonical)
}

/// DEP-5's short names (copyright-format 1.0, "License short name") spelled as SPDX ids:
/// `GPL-2+` → `GPL-2.0+`, `Apache-2` → `Apache-2.0`, `LGPL-2.1` stays, `Expat` → `MIT`,
/// `BSD-3-clause` → `BSD-3-Clause`.
/// The spdx crate then turns `+` into `-or-later` and a bare GNU id into `-only`.
fn debian_short_names(expression: &str) -> String {
    let mut out = String::with_capacity(expression.len() + 8);
    let mut token = String::new();
    for c in expression.chars().chain(std::iter::once(' ')) {
        if c.is_whitespace() || c == '(' || c == ')' {
            if !token.is_empty() {
                out.push_str(&short_name(&token));
                token.clear();
            }
            out.push(c);
        } else {
            token.push(c);
        }
    }
    out.pop();
    out
}

fn short_name(token: &str) -> String {
    let (base, plus) = match token.strip_suffix('+') {
        Some(base) => (base, "+"),
        None => (token, ""),
    };
    let gnu_major_only = ["GPL-", "LGPL-", "AGPL-", "GFDL-"].iter().any(|family| {
        base.strip_prefix(family)
            .is_some_and(|version| version.len() == 1 && version.as_bytes()[0].is_ascii_digit())
    });
    if gnu_major_only {
        return format!("{base}.0{plus}");
    }
    // `Apache-2`, `MPL-2`: the id spelled with its `.0`.
    let with_minor = format!("{base}.0");
    if base.as_bytes().last().is_some_and(u8::is_ascii_digit)
        && spdx::license_id(base).is_none()
        && spdx::license_id(&with_minor).is_some()
    {
        return format!("{with_minor}{plus}");
    }
    if base == "Expat" {
        return format!("MIT{plus}");
    }
    if spdx::license_id(base).is_none()
        && let Some(license) = spdx::identifiers::LICENSES
            .iter()
            .find(|license| license.name.eq_ignore_ascii_case(base))
    {
        return format!("{}{plus}", license.name);
    }
    token.to_owned()
}
