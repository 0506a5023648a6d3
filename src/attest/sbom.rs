//! An SPDX 2.3 JSON SBOM of an image's root filesystem: the packages its package managers
//! recorded (dpkg status, apk's installed db, Python dist-info metadata, npm package.json files,
//! Rust binaries' embedded cargo-auditable data).
//!
//! Every read is confined to the root: the root comes from an image, so a symlink in it must not
//! lead a read to the host's files (`root`: openat2 RESOLVE_IN_ROOT for named files, a walk by
//! directory descriptors that follows no symlink and skips `/proc`, `/sys`, `/dev`). Everything
//! read is bounded: each database and manifest's size, the walk's depth and entry count, the ELF
//! section and what it decompresses to; past a bound the scan fails naming the file and limit.
//! A malformed entry is skipped. The document's shape follows syft's SPDX output (BuildKit's
//! scanner, docker/buildkit-syft-scanner, runs syft).

mod apk;
mod cargo;
mod document;
mod dpkg;
mod fields;
mod npm;
mod os_release;
mod purl;
mod python;
mod root;

use std::path::{Path, PathBuf};

/// The package manager a [`Package`] was recorded by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PackageKind {
    /// dpkg's `/var/lib/dpkg/status` (and `status.d/`).
    Deb,
    /// apk's `/lib/apk/db/installed`.
    Apk,
    /// A Python distribution's `*.dist-info/METADATA` (or `*.egg-info/PKG-INFO`).
    Python,
    /// An npm package's `package.json` under a `node_modules` directory.
    Npm,
    /// A crate in a Rust binary's `.dep-v0` section (cargo-auditable).
    Cargo,
}

/// One package found in the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub kind: PackageKind,
    pub name: String,
    pub version: String,
    /// Its package URL (<https://github.com/package-url/purl-spec>), e.g. `pkg:deb/debian/bash@5.2.15-2?arch=amd64`.
    pub purl: String,
    /// The declared license, when the package manager recorded one (an SPDX expression or free text).
    pub license: Option<String>,
    /// The file inside the root it was read from (absolute, as seen in the image: `/var/lib/dpkg/status`).
    pub found_in: PathBuf,
    /// The architecture it was built for, when the package manager records one (`amd64`).
    pub arch: Option<String>,
    /// The source package it was built from (dpkg's `Source`, apk's origin).
    pub source_package: Option<String>,
    /// Who supplies it, as recorded (`Name <email>`: a maintainer or author).
    pub supplier: Option<String>,
}

/// What the SBOM describes: the image's name (or a placeholder) and, when known, its platform.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub name: String,
    /// `os/arch[/variant]`.
    pub platform: Option<String>,
    /// The document's creation time (RFC 3339, UTC), e.g. `SOURCE_DATE_EPOCH`'s time or now.
    pub created: String,
}

/// Why a root filesystem could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("cannot open the image's root filesystem at {path}")]
    OpenRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path} in the image's root filesystem")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} in the image's root filesystem is larger than the SBOM scanner's limit of {limit} bytes"
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(
        "{path} in the image's root filesystem is nested deeper than the SBOM scanner's limit of {limit} directories"
    )]
    TooDeep { path: PathBuf, limit: usize },
    #[error(
        "the image's root filesystem has more than the SBOM scanner's limit of {limit} entries"
    )]
    TooManyEntries { limit: u64 },
}

/// The packages recorded in the root filesystem at `root`, sorted, without duplicates.
///
/// Every read stays inside `root` (see the module's doc); a database or manifest that does not
/// parse is skipped, one that is larger than its bound is an error.
pub fn scan(root: &Path) -> Result<Vec<Package>, SbomError> {
    scan_root(&root::Root::open(root)?)
}

fn scan_root(root: &root::Root) -> Result<Vec<Package>, SbomError> {
    let os = os_release::OsRelease::read(root)?;
    let mut packages = Vec::new();
    dpkg::scan(root, &os, &mut packages)?;
    apk::scan(root, &os, &mut packages)?;
    root.walk(&mut |entry| {
        python::visit(entry, &mut packages)?;
        npm::visit(entry, &mut packages)?;
        cargo::visit(entry, &mut packages)
    })?;
    packages.sort();
    packages.dedup();
    Ok(packages)
}

/// The SPDX 2.3 JSON document listing `packages` for `subject`.
pub fn spdx_document(packages: &[Package], subject: &Subject) -> serde_json::Value {
    document::document(packages, subject)
}

/// The longest name, version or other recorded value kept; longer ones are not real.
const MAX_FIELD_BYTES: usize = 1024;

/// A recorded value fit to keep: trimmed, not empty, bounded, with no control characters (it
/// may reach a terminal or a purl).
fn field_value(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty() && value.len() <= MAX_FIELD_BYTES && !value.chars().any(char::is_control))
        .then(|| value.to_owned())
}

#[cfg(test)]
mod testing {
    /// Deterministic pseudo-random bytes drawn from `alphabet` (a fixed xorshift per `round`), for
    /// feeding parsers garbage that is close enough to their format to reach deep.
    pub fn garbage(round: u64, alphabet: &[u8]) -> Vec<u8> {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ round.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let length = (round * 37 % 600) as usize;
        (0..length)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                alphabet[(seed % alphabet.len() as u64) as usize]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
