//! Scans of synthetic roots: each ecosystem, confinement, bounds, garbage, and the document
//! against the official SPDX 2.3 JSON schema.

use super::root::{Root, WalkLimits};
use super::testing::garbage;
use super::*;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use serde_json::{Value, json};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};

/// Creates `files` (path under `root` → content), with their directories.
fn populate(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(path.parent().expect("a parent")).expect("create directories");
        fs::write(&path, content).expect("write a file");
    }
}

fn purls(packages: &[Package]) -> Vec<&str> {
    packages.iter().map(|p| p.purl.as_str()).collect()
}

const DEBIAN_OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n";

const BASH_STATUS: &str = "\
Package: bash
Status: install ok installed
Architecture: amd64
Maintainer: Matthias Klose <doko@debian.org>
Version: 5.2.15-2+b2

Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u4

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
";

#[test]
fn dpkg_packages_with_distro_upstream_and_license() {
    let root = tempfile::tempdir().expect("temp dir");
    populate(
        root.path(),
        &[
            ("/etc/os-release", DEBIAN_OS_RELEASE),
            ("/var/lib/dpkg/status", BASH_STATUS),
            (
                "/usr/share/doc/bash/copyright",
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-3+\n",
            ),
            ("/usr/share/doc/libc6/copyright", "Free-form text.\n"),
        ],
    );
    let packages = scan(root.path()).expect("scan");
    assert_eq!(
        purls(&packages),
        [
            "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12",
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc",
        ]
    );
    assert_eq!(packages[0].license.as_deref(), Some("GPL-3+"));
    assert_eq!(packages[0].found_in, Path::new("/var/lib/dpkg/status"));
    assert_eq!(packages[1].license, None);
    assert_eq!(packages[1].source_package.as_deref(), Some("glibc"));
}

#[test]
fn distroless_status_d_files_are_packages_and_md5sums_are_not() {
    let root = tempfile::tempdir().expect("temp dir");
    populate(
        root.path(),
        &[
            ("/etc/os-release", DEBIAN_OS_RELEASE),
            (
                "/var/lib/dpkg/status.d/base-files",
                "Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n",
            ),
            (
                "/var/lib/dpkg/status.d/base-files.md5sums",
                "Package: not-a-package\nVersion: 1\n",
            ),
            (
                "/var/lib/dpkg/status.d/tzdata",
                "Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n",
            ),
        ],
    );
    let packages = scan(root.path()).expect("scan");
    let names: Vec<_> = packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["base-files", "tzdata"]);
    assert_eq!(
        packages[1].found_in,
        Path::new("/var/lib/dpkg/status.d/tzdata")
    );
}

#[test]
fn apk_packages() {
    let root = tempfile::tempdir().expect("temp dir");
    populate(
        root.path(),
        &[
            ("/etc/os-release", "ID=alpine\nVERSION_ID=3.19.1\n"),
            (
                "/lib/apk/db/installed",
                "P:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nL:MIT\no:musl\n\nP:zlib\nV:1.3.1-r0\nA:x86_64\nL:Zlib\n",
            ),
        ],
    );
    let packages = scan(root.path()).expect("scan");
    assert_eq!(
        purls(&packages),
        [
            "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1",
            "pkg:apk/alpine/zlib@1.3.1-r0?arch=x86_64&distro=alpine-3.19.1",
        ]
    );
}

#[test]
fn python_distributions_in_site_and_dist_packages() {
    let root = tempfile::tempdir().expect("temp dir");
    populate(
        root.path(),
        &[
            (
                "/usr/local/lib/python3.12/site-packages/Typing_Extensions-4.9.0.dist-info/METADATA",
                "Metadata-Version: 2.1\nName: typing_extensions\nVersion: 4.9.0\nLicense-Expression: PSF-2.0\n\nName: body\n",
            ),
            (
                "/usr/lib/python3/dist-packages/six-1.16.0.egg-info",
                "Metadata-Version: 1.2\nName: six\nVersion: 1.16.0\nLicense: MIT\nAuthor: Benjamin Peterson\n",
            ),
            (
                "/usr/lib/python3/dist-packages/yaml-6.0.egg-info/PKG-INFO",
                "Name: PyYAML\nVersion: 6.0\nLicense: UNKNOWN\n",
            ),
            (
                "/usr/lib/python3/dist-packages/broken-1.dist-info/METADATA",
                "no headers here at all",
            ),
            // Not a metadata file: METADATA outside a .dist-info directory.
            ("/srv/METADATA", "Name: nope\nVersion: 1\n"),
        ],
    );
    let packages = scan(root.path()).expect("scan");
    assert_eq!(
        purls(&packages),
        [
            "pkg:pypi/pyyaml@6.0",
            "pkg:pypi/six@1.16.0",
            "pkg:pypi/typing-extensions@4.9.0"
        ]
    );
    assert_eq!(packages[0].license, None);
    assert_eq!(packages[1].license.as_deref(), Some("MIT"));
    assert_eq!(packages[2].license.as_deref(), Some("PSF-2.0"));
    assert_eq!(packages[2].name, "typing_extensions");
}

#[test]
fn npm_packages_scoped_nested_and_not_the_app_itself() {
    let root = tempfile::tempdir().expect("temp dir");
    populate(
        root.path(),
        &[
            (
                "/app/package.json",
                r#"{"name": "my-app", "version": "1.0.0"}"#,
            ),
            (
                "/app/node_modules/left-pad/package.json",
                r#"{"name": "left-pad", "version": "1.3.0", "license": "WTFPL"}"#,
            ),
            (
                "/app/node_modules/@types/node/package.json",
                r#"{"name": "@types/node", "version": "20.11.5", "license": "MIT"}"#,
            ),
            (
                "/app/node_modules/a/node_modules/b/package.json",
                r#"{"name": "b", "version": "2.0.0"}"#,
            ),
            ("/app/node_modules/broken/package.json", "{not json"),
            (
                "/app/node_modules/left-pad/test/package.json",
                r#"{"name": "fixture", "version": "0.0.0"}"#,
            ),
        ],
    );
    let packages = scan(root.path()).expect("scan");
    assert_eq!(
        purls(&packages),
        [
            "pkg:npm/%40types/node@20.11.5",
            "pkg:npm/b@2.0.0",
            "pkg:npm/left-pad@1.3.0"
        ]
    );
}

/// A minimal 64-bit little-endian ELF executable whose only content is a `name` section holding
/// `data`.
fn elf_with_section(name: &str, data: &[u8]) -> Vec<u8> {
    let shstrtab = format!("\0{name}\0.shstrtab\0");
    let data_offset = 64u64;
    let strtab_offset = data_offset + data.len() as u64;
    let headers_offset = (strtab_offset + shstrtab.len() as u64).next_multiple_of(8);
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&headers_offset.to_le_bytes());
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 0, 64, 3, 2] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(data);
    elf.extend_from_slice(shstrtab.as_bytes());
    elf.resize(headers_offset as usize, 0);
    let section = |elf: &mut Vec<u8>, name: u32, kind: u32, offset: u64, size: u64| {
        elf.extend_from_slice(&name.to_le_bytes());
        elf.extend_from_slice(&kind.to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes()); // flags
        elf.extend_from_slice(&0u64.to_le_bytes()); // addr
        elf.extend_from_slice(&offset.to_le_bytes());
        elf.extend_from_slice(&size.to_le_bytes());
        elf.extend_from_slice(&0u32.to_le_bytes());
        elf.extend_from_slice(&0u32.to_le_bytes());
        elf.extend_from_slice(&1u64.to_le_bytes()); // addralign
        elf.extend_from_slice(&0u64.to_le_bytes());
    };
    section(&mut elf, 0, 0, 0, 0);
    section(&mut elf, 1, 1, data_offset, data.len() as u64);
    let strtab_name = 1 + name.len() as u32 + 1;
    section(
        &mut elf,
        strtab_name,
        3,
        strtab_offset,
        shstrtab.len() as u64,
    );
    elf
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("compress");
    encoder.finish().expect("compress")
}

fn write_executable(root: &Path, path: &str, content: &[u8]) {
    let path = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(path.parent().expect("a parent")).expect("create directories");
    fs::write(&path, content).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

const AUDIT_JSON: &str = r#"{"packages":[
    {"name":"rg","version":"14.1.0","source":"local","root":true,"dependencies":[1]},
    {"name":"memchr","version":"2.7.1","source":"crates.io"},
    {"name":"cc","version":"1.0.83","source":"crates.io","kind":"build"}]}"#;

#[test]
fn rust_binaries_with_cargo_auditable_data() {
    let root = tempfile::tempdir().expect("temp dir");
    let elf = elf_with_section(".dep-v0", &zlib(AUDIT_JSON.as_bytes()));
    write_executable(root.path(), "/usr/bin/rg", &elf);
    // The same binary without the executable bit and not named like a library is not looked at;
    // an ELF without the section adds nothing.
    populate(root.path(), &[("/srv/data.bin", "")]);
    fs::write(root.path().join("srv/data.bin"), &elf).expect("write");
    write_executable(
        root.path(),
        "/usr/bin/plain",
        &elf_with_section(".text", &[0x90; 32]),
    );
    let packages = scan(root.path()).expect("scan");
    assert_eq!(
        purls(&packages),
        ["pkg:cargo/memchr@2.7.1", "pkg:cargo/rg@14.1.0"]
    );
    assert_eq!(packages[0].found_in, Path::new("/usr/bin/rg"));
}

#[test]
fn a_zip_bomb_in_the_auditable_section_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let bomb = zlib(&vec![b' '; (cargo::MAX_DECOMPRESSED_BYTES + 1) as usize]);
    assert!((bomb.len() as u64) < cargo::MAX_SECTION_BYTES);
    write_executable(
        root.path(),
        "/usr/bin/bomb",
        &elf_with_section(".dep-v0", &bomb),
    );
    match scan(root.path()) {
        Err(SbomError::TooLarge { path, limit }) => {
            assert_eq!(path, Path::new("/usr/bin/bomb/.dep-v0"));
            assert_eq!(limit, cargo::MAX_DECOMPRESSED_BYTES);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn an_oversized_auditable_section_is_refused_without_reading_it() {
    let root = tempfile::tempdir().expect("temp dir");
    // The section header claims more bytes than the limit (the file itself is small).
    let mut elf = elf_with_section(".dep-v0", b"x");
    let headers_offset = u64::from_le_bytes(elf[0x28..0x30].try_into().expect("8 bytes")) as usize;
    let size_at = headers_offset + 64 + 32;
    elf[size_at..size_at + 8].copy_from_slice(&(cargo::MAX_SECTION_BYTES + 1).to_le_bytes());
    write_executable(root.path(), "/usr/bin/huge", &elf);
    assert!(matches!(
        scan(root.path()),
        Err(SbomError::TooLarge { limit, .. }) if limit == cargo::MAX_SECTION_BYTES
    ));
}

#[test]
fn a_status_symlink_to_a_host_file_is_not_followed_out_of_the_root() {
    let host = tempfile::tempdir().expect("temp dir");
    let host_status = host.path().join("status");
    fs::write(
        &host_status,
        "Package: host-secret\nStatus: install ok installed\nVersion: 1\n",
    )
    .expect("write");
    let root = tempfile::tempdir().expect("temp dir");
    fs::create_dir_all(root.path().join("var/lib/dpkg")).expect("mkdir");
    // Absolute: resolves to <root>/<host path>, which does not exist.
    symlink(&host_status, root.path().join("var/lib/dpkg/status")).expect("symlink");
    // Relative, climbing far above the root: `..` stops at the root.
    let climb = format!("../../../../../../../..{}", host_status.display());
    fs::create_dir_all(root.path().join("lib/apk/db")).expect("mkdir");
    symlink(&climb, root.path().join("lib/apk/db/installed")).expect("symlink");
    // A directory symlink out of the root is not walked into.
    fs::create_dir_all(host.path().join("node_modules/secret")).expect("mkdir");
    fs::write(
        host.path().join("node_modules/secret/package.json"),
        r#"{"name": "host-secret", "version": "1.0.0"}"#,
    )
    .expect("write");
    fs::create_dir_all(root.path().join("app")).expect("mkdir");
    symlink(
        host.path().join("node_modules"),
        root.path().join("app/node_modules"),
    )
    .expect("symlink");
    let packages = scan(root.path()).expect("scan");
    assert!(packages.is_empty(), "{packages:#?}");
}

#[test]
fn an_absolute_symlink_on_the_way_resolves_inside_the_root() {
    let root = tempfile::tempdir().expect("temp dir");
    populate(
        root.path(),
        &[(
            "/etc/status",
            "Package: in-root\nStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\n",
        )],
    );
    fs::create_dir_all(root.path().join("var/lib")).expect("mkdir");
    symlink("/etc", root.path().join("var/lib/dpkg")).expect("symlink");
    let packages = scan(root.path()).expect("scan");
    let names: Vec<_> = packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["in-root"]);
}

#[test]
fn a_fifo_where_the_database_should_be_is_not_opened() {
    let root = tempfile::tempdir().expect("temp dir");
    fs::create_dir_all(root.path().join("var/lib/dpkg")).expect("mkdir");
    nix::unistd::mkfifo(
        &root.path().join("var/lib/dpkg/status"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("mkfifo");
    // Opening a FIFO for reading would block forever; the scan must finish with nothing.
    assert_eq!(scan(root.path()).expect("scan"), []);
}

#[test]
fn proc_sys_and_dev_are_not_walked() {
    let root = tempfile::tempdir().expect("temp dir");
    for top in ["proc", "sys", "dev"] {
        populate(
            root.path(),
            &[(
                &format!("/{top}/node_modules/x/package.json"),
                r#"{"name": "x", "version": "1.0.0"}"#,
            )],
        );
    }
    assert_eq!(scan(root.path()).expect("scan"), []);
}

#[test]
fn an_oversized_status_file_is_an_error() {
    let root = tempfile::tempdir().expect("temp dir");
    fs::create_dir_all(root.path().join("var/lib/dpkg")).expect("mkdir");
    // Sparse: the size is what counts.
    fs::File::create(root.path().join("var/lib/dpkg/status"))
        .and_then(|file| file.set_len(dpkg::MAX_STATUS_BYTES + 1))
        .expect("create");
    assert!(matches!(
        scan(root.path()),
        Err(SbomError::TooLarge { path, limit })
            if path == Path::new("/var/lib/dpkg/status") && limit == dpkg::MAX_STATUS_BYTES
    ));
}

#[test]
fn an_oversized_package_json_is_an_error() {
    let root = tempfile::tempdir().expect("temp dir");
    let path = root.path().join("node_modules/x/package.json");
    fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    fs::File::create(&path)
        .and_then(|file| file.set_len(npm::MAX_PACKAGE_JSON_BYTES + 1))
        .expect("create");
    assert!(matches!(
        scan(root.path()),
        Err(SbomError::TooLarge { limit, .. }) if limit == npm::MAX_PACKAGE_JSON_BYTES
    ));
}

#[test]
fn the_walk_is_bounded_in_depth_and_entries() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut deep = root.path().to_path_buf();
    for _ in 0..6 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).expect("mkdir");
    let limits = |max_depth, max_entries| WalkLimits {
        max_depth,
        max_entries,
    };
    let open = || Root::open(root.path()).expect("open");
    assert!(scan_root(&open().with_limits(limits(10, 100))).is_ok());
    assert!(matches!(
        scan_root(&open().with_limits(limits(4, 100))),
        Err(SbomError::TooDeep { limit: 4, .. })
    ));
    assert!(matches!(
        scan_root(&open().with_limits(limits(10, 3))),
        Err(SbomError::TooManyEntries { limit: 3 })
    ));
}

#[test]
fn garbage_manifests_are_skipped_without_panicking() {
    let root = tempfile::tempdir().expect("temp dir");
    for round in 0..40 {
        let text = garbage(round, b"PVAL:Name Version{}\"[]:,\n\n\xff\0\x1b");
        let text = String::from_utf8_lossy(&text);
        populate(
            root.path(),
            &[
                ("/var/lib/dpkg/status", &text),
                ("/lib/apk/db/installed", &text),
                ("/etc/os-release", &text),
                (
                    "/usr/lib/python3/dist-packages/x-1.dist-info/METADATA",
                    &text,
                ),
                ("/app/node_modules/x/package.json", &text),
            ],
        );
        let section = garbage(round + 1000, b"\x78\x9c\x01\0\xff{}\"packages\"");
        write_executable(
            root.path(),
            "/usr/bin/x",
            &elf_with_section(".dep-v0", &section),
        );
        write_executable(
            root.path(),
            "/usr/bin/y",
            &garbage(round, b"\x7fELF\x02\x01\0\xff"),
        );
        let packages = scan(root.path()).expect("garbage is skipped, not an error");
        for package in &packages {
            assert!(!package.name.is_empty() && !package.version.is_empty());
            assert!(!package.name.chars().any(char::is_control));
        }
        let document = spdx_document(&packages, &subject());
        validate(&document);
    }
}

fn subject() -> Subject {
    Subject {
        name: "docker.io/library/app:latest".to_owned(),
        platform: Some("linux/amd64".to_owned()),
        created: "2024-01-02T03:04:05Z".to_owned(),
    }
}

fn sample_packages() -> Vec<Package> {
    let root = tempfile::tempdir().expect("temp dir");
    populate(
        root.path(),
        &[
            ("/etc/os-release", DEBIAN_OS_RELEASE),
            ("/var/lib/dpkg/status", BASH_STATUS),
            (
                "/usr/share/doc/bash/copyright",
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-3+\n",
            ),
            (
                "/app/node_modules/@types/node/package.json",
                r#"{"name": "@types/node", "version": "20.11.5", "license": "MIT", "author": "A <a@x.org>"}"#,
            ),
            (
                "/app/node_modules/odd/package.json",
                r#"{"name": "odd", "version": "1.0.0", "license": "SEE LICENSE IN LICENSE.txt"}"#,
            ),
        ],
    );
    scan(root.path()).expect("scan")
}

/// Validates `document` against tests/schemas/spdx-2.3.schema.json and the idstring rule the
/// schema leaves to the spec's prose.
fn validate(document: &Value) {
    let schema_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/spdx-2.3.schema.json");
    let schema: Value =
        serde_json::from_slice(&fs::read(&schema_path).expect("read the schema")).expect("json");
    let validator = jsonschema::draft7::new(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|error| format!("{error} at {}", error.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{document:#}");
    let idstring = regex::Regex::new("^SPDXRef-[a-zA-Z0-9.-]+$").expect("regex");
    let mut ids = std::collections::BTreeSet::new();
    for package in document["packages"].as_array().expect("packages") {
        let id = package["SPDXID"].as_str().expect("an id");
        assert!(idstring.is_match(id), "{id}");
        assert!(ids.insert(id.to_owned()), "duplicate {id}");
    }
    for relationship in document["relationships"].as_array().expect("relationships") {
        for end in ["spdxElementId", "relatedSpdxElement"] {
            let id = relationship[end].as_str().expect("an id");
            assert!(
                id == "SPDXRef-DOCUMENT" || ids.contains(id),
                "{id} names no element"
            );
        }
    }
}

#[test]
fn the_document_validates_against_the_spdx_2_3_schema() {
    let packages = sample_packages();
    let document = spdx_document(&packages, &subject());
    validate(&document);
    assert_eq!(document["spdxVersion"], "SPDX-2.3");
    assert_eq!(document["dataLicense"], "CC0-1.0");
    assert_eq!(
        document["creationInfo"]["creators"],
        json!([
            "Organization: kiln",
            format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))
        ])
    );
    let namespace = document["documentNamespace"].as_str().expect("a namespace");
    assert!(
        namespace.starts_with("https://kiln.dev/spdx/docker.io-library-app-latest-"),
        "{namespace}"
    );
    let spdx_packages = document["packages"].as_array().expect("packages");
    let root = &spdx_packages[0];
    assert_eq!(root["primaryPackagePurpose"], "CONTAINER");
    let by_name = |name: &str| {
        spdx_packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {spdx_packages:#?}"))
    };
    let bash = by_name("bash");
    assert_eq!(bash["versionInfo"], "5.2.15-2+b2");
    assert_eq!(bash["licenseDeclared"], "GPL-3.0-or-later");
    assert_eq!(bash["licenseConcluded"], "NOASSERTION");
    assert_eq!(bash["downloadLocation"], "NOASSERTION");
    assert_eq!(bash["filesAnalyzed"], false);
    assert_eq!(bash["supplier"], "Person: Matthias Klose (doko@debian.org)");
    assert_eq!(
        bash["sourceInfo"],
        "acquired package info from DPKG DB: /var/lib/dpkg/status"
    );
    assert_eq!(
        bash["externalRefs"],
        json!([{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12",
        }])
    );
    assert_eq!(by_name("odd")["licenseDeclared"], "NOASSERTION");
    assert_eq!(by_name("libc6")["supplier"], "NOASSERTION");
    assert_eq!(by_name("@types/node")["licenseDeclared"], "MIT");
    // DOCUMENT DESCRIBES the root, the root CONTAINS each package.
    let relationships = document["relationships"].as_array().expect("relationships");
    assert_eq!(relationships.len(), spdx_packages.len());
    assert_eq!(relationships[0]["relationshipType"], "DESCRIBES");
    assert_eq!(relationships[0]["relatedSpdxElement"], root["SPDXID"]);
    for (relationship, package) in relationships[1..].iter().zip(&spdx_packages[1..]) {
        assert_eq!(relationship["relationshipType"], "CONTAINS");
        assert_eq!(relationship["spdxElementId"], root["SPDXID"]);
        assert_eq!(relationship["relatedSpdxElement"], package["SPDXID"]);
    }
}

#[test]
fn the_document_is_deterministic_and_its_namespace_follows_the_content() {
    let packages = sample_packages();
    let mut reversed = packages.clone();
    reversed.reverse();
    let document = spdx_document(&packages, &subject());
    assert_eq!(document, spdx_document(&reversed, &subject()));
    let fewer = spdx_document(&packages[1..], &subject());
    assert_ne!(document["documentNamespace"], fewer["documentNamespace"]);
    let other = Subject {
        name: "other".to_owned(),
        ..subject()
    };
    assert_ne!(
        document["documentNamespace"],
        spdx_document(&packages, &other)["documentNamespace"]
    );
}

#[test]
fn two_architectures_of_one_package_get_distinct_ids() {
    let mut amd64 = sample_packages()
        .into_iter()
        .find(|p| p.name == "libc6")
        .expect("libc6");
    let mut i386 = amd64.clone();
    i386.purl = i386.purl.replace("amd64", "i386");
    i386.arch = Some("i386".to_owned());
    amd64.license = None;
    let document = spdx_document(&[amd64, i386], &subject());
    validate(&document);
    assert_eq!(document["packages"].as_array().expect("packages").len(), 3);
}

#[test]
fn license_expressions() {
    use document::license_expression;
    assert_eq!(license_expression("MIT").as_deref(), Some("MIT"));
    assert_eq!(
        license_expression("GPL-2+").as_deref(),
        Some("GPL-2.0-or-later")
    );
    assert_eq!(
        license_expression("MIT OR Apache-2.0").as_deref(),
        Some("MIT OR Apache-2.0")
    );
    assert_eq!(
        license_expression("Apache-2.0 WITH LLVM-exception").as_deref(),
        Some("Apache-2.0 WITH LLVM-exception")
    );
    // DEP-5 short names.
    for (debian, spdx) in [
        ("GPL-2", "GPL-2.0-only"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("Expat", "MIT"),
        ("Apache-2", "Apache-2.0"),
        (
            "(GPL-2+ or Artistic-1.0) AND Zlib",
            "(GPL-2.0-or-later OR Artistic-1.0) AND Zlib",
        ),
    ] {
        assert_eq!(
            license_expression(debian).as_deref(),
            Some(spdx),
            "{debian}"
        );
    }
    for invalid in [
        "",
        "SEE LICENSE IN LICENSE",
        "LicenseRef-Custom",
        "MIT AND",
        "(MIT",
        "public-domain",
        &"MIT AND ".repeat(500),
    ] {
        assert_eq!(license_expression(invalid), None, "{invalid}");
    }
    for round in 0..300 {
        let text = garbage(round, b"MIT GPL-2.0+ AND OR WITH ()/\xff\0");
        let _ = license_expression(&String::from_utf8_lossy(&text));
    }
}
