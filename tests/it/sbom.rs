//! The SBOM scanner on a real Debian root filesystem (bookworm, minbase, with python3-six), built
//! once by mmdebstrap and cached under /var/tmp: the packages dpkg itself lists are the ones kiln
//! lists, and the document validates against the SPDX 2.3 schema.

use crate::support;
use kiln::attest::sbom::{self, PackageKind, Subject};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIRROR: &str = "http://deb.debian.org/debian";

/// The mmdebstrap arguments before the target directory; the cache is keyed by them.
const MMDEBSTRAP_ARGS: [&str; 4] = [
    "--variant=minbase",
    "--format=directory",
    "--include=python3-six",
    "bookworm",
];

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cached root filesystem, built first when absent; `None` after a skip notice when
/// mmdebstrap, root or the Debian mirror is missing (a failure under `CI=true`).
fn debian_rootfs() -> Option<PathBuf> {
    let mmdebstrap = support::tool("mmdebstrap")?;
    support::root()?;
    let key = sha256_hex(format!("mmdebstrap {} {MIRROR}", MMDEBSTRAP_ARGS.join(" ")).as_bytes());
    let cached = PathBuf::from(format!("/var/tmp/kiln-sbom-rootfs-{}", &key[..16]));
    if cached.join("var/lib/dpkg/status").is_file() {
        return Some(cached);
    }
    // Built beside the cache and renamed into place, so an interrupted build is never used.
    let building = PathBuf::from(format!(
        "{}.building-{}",
        cached.display(),
        std::process::id()
    ));
    let output = Command::new(mmdebstrap)
        .args(MMDEBSTRAP_ARGS)
        .arg(&building)
        .arg(MIRROR)
        .output()
        .expect("run mmdebstrap");
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&building);
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        return support::require(
            &format!("the Debian mirror {MIRROR} (mmdebstrap failed)"),
            None,
        );
    }
    if std::fs::rename(&building, &cached).is_err() {
        // Another test run got there first.
        let _ = std::fs::remove_dir_all(&building);
    }
    Some(cached)
}

/// `(name, arch, version)` of every installed package, as dpkg-query reads the root's database.
fn dpkg_query(rootfs: &Path) -> BTreeSet<(String, String, String)> {
    let output = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            rootfs.join("var/lib/dpkg").display()
        ))
        .args([
            "-W",
            "-f",
            "${db:Status-Status}\t${Package}\t${Architecture}\t${Version}\n",
        ])
        .output()
        .expect("run dpkg-query");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (fields[0] == "installed").then(|| {
                (
                    fields[1].to_owned(),
                    fields[2].to_owned(),
                    fields[3].to_owned(),
                )
            })
        })
        .collect()
}

#[test]
fn a_debian_rootfs_lists_what_dpkg_lists() {
    let Some(rootfs) = debian_rootfs() else {
        return;
    };
    let started = std::time::Instant::now();
    let packages = sbom::scan(&rootfs).expect("scan");
    eprintln!("scanned {} in {:?}", rootfs.display(), started.elapsed());
    let expected = dpkg_query(&rootfs);
    let listed: BTreeSet<(String, String, String)> = packages
        .iter()
        .filter(|p| p.kind == PackageKind::Deb)
        .map(|p| {
            (
                p.name.clone(),
                p.arch.clone().unwrap_or_default(),
                p.version.clone(),
            )
        })
        .collect();
    assert_eq!(listed, expected);
    for known in ["base-files", "dpkg", "bash", "python3-six", "libc6"] {
        assert!(
            listed.iter().any(|(name, _, _)| name == known),
            "{known} is missing from {listed:#?}"
        );
    }
    let bash = packages.iter().find(|p| p.name == "bash").expect("bash");
    assert!(
        bash.purl.starts_with("pkg:deb/debian/bash@") && bash.purl.contains("distro=debian-12"),
        "{}",
        bash.purl
    );
    let libc = packages.iter().find(|p| p.name == "libc6").expect("libc6");
    assert!(libc.purl.contains("upstream=glibc"), "{}", libc.purl);
    // python3-six's own metadata is found as a Python distribution too.
    assert!(
        packages
            .iter()
            .any(|p| p.kind == PackageKind::Python && p.purl.starts_with("pkg:pypi/six@")),
        "{packages:#?}"
    );

    let document = sbom::spdx_document(
        &packages,
        &Subject {
            name: "debian-bookworm-minbase".to_owned(),
            platform: Some("linux/amd64".to_owned()),
            created: "2024-01-01T00:00:00Z".to_owned(),
        },
    );
    let schema: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/spdx-2.3.schema.json"),
        )
        .expect("read the schema"),
    )
    .expect("json");
    let validator = jsonschema::draft7::new(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|error| format!("{error} at {}", error.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let spdx_packages = document["packages"].as_array().expect("packages");
    assert_eq!(spdx_packages.len(), packages.len() + 1);
    let with_license = spdx_packages
        .iter()
        .filter(|p| p["licenseDeclared"] != "NOASSERTION")
        .count();
    eprintln!(
        "{} packages, {with_license} with an SPDX license expression",
        packages.len()
    );
}

/// A real dynamically linked executable (the host's `/bin/ls`) given a `.dep-v0` section by
/// objcopy, as cargo-auditable's linker step leaves it.
#[test]
fn a_real_executable_with_cargo_auditable_data() {
    let Some(objcopy) = support::tool("objcopy") else {
        return;
    };
    let root = tempfile::tempdir().expect("temp dir");
    let work = tempfile::tempdir().expect("temp dir");
    let json = br#"{"packages":[{"name":"ripgrep","version":"14.1.0","source":"local","root":true,"dependencies":[1]},{"name":"regex","version":"1.10.3","source":"crates.io"}]}"#;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut encoder, json).expect("compress");
    let section = work.path().join("dep-v0");
    std::fs::write(&section, encoder.finish().expect("compress")).expect("write");
    std::fs::create_dir_all(root.path().join("usr/local/bin")).expect("mkdir");
    let binary = root.path().join("usr/local/bin/rg");
    let status = Command::new(objcopy)
        .arg(format!("--add-section=.dep-v0={}", section.display()))
        .arg("--set-section-flags=.dep-v0=noload,readonly")
        .arg("/bin/ls")
        .arg(&binary)
        .status()
        .expect("run objcopy");
    assert!(status.success());
    let packages = sbom::scan(root.path()).expect("scan");
    let purls: Vec<&str> = packages.iter().map(|p| p.purl.as_str()).collect();
    assert_eq!(
        purls,
        ["pkg:cargo/regex@1.10.3", "pkg:cargo/ripgrep@14.1.0"]
    );
    assert_eq!(packages[0].found_in, Path::new("/usr/local/bin/rg"));
}
