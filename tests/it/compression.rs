//! Compressed layers (issue 16): pushes compress each layer once and keep the variant, so a
//! second push compresses nothing; `compression=zstd` and `oci-mediatypes=false` reach the
//! registry as asked and pull back to the same image; the peer dockerd pulls and runs kiln's
//! gzip and zstd pushes; a `--cache-to` in zstd imports back.

use crate::registry::{Auth, TestRegistry};
use crate::shared_cache::{Machine, STEPS, context, requirements};
use crate::support;
use kiln::oci::Digest;
use kiln::oci::reference::Reference;
use kiln::registry::{Client, ClientOptions, Manifest, Repository};
use kiln::store::Store;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// The manifest the registry serves for `name`, as JSON.
fn served_manifest(name: &str) -> Value {
    served(name).0
}

/// The manifest the registry serves for `name`, as JSON, and its digest.
fn served(name: &str) -> (Value, Digest) {
    let reference = Reference::parse_normalized(name).expect("reference");
    let client = Client::new(ClientOptions::default()).expect("client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (manifest, _) = runtime
        .block_on(client.get_manifest(&Repository::of(&reference), reference.tag().expect("a tag")))
        .expect("the registry serves the manifest");
    let Manifest::Image { bytes, .. } = manifest else {
        panic!("{name} is not an image manifest");
    };
    (
        serde_json::from_slice(&bytes).expect("manifest json"),
        Digest::of(&bytes),
    )
}

/// The media types of the manifest's layers.
fn layer_media_types(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["mediaType"].as_str().expect("mediaType").to_string())
        .collect()
}

/// Each variant record under the store `root` with its inode: a record is rewritten (a new
/// inode, crash-safe rename) exactly when its layer is compressed again.
fn variant_records(root: &Path) -> BTreeMap<String, u64> {
    let mut records = BTreeMap::new();
    let Ok(layers) = fs::read_dir(root.join("variants")) else {
        return records;
    };
    for layer in layers.flatten() {
        for record in fs::read_dir(layer.path()).expect("variant dir").flatten() {
            let name = format!(
                "{}/{}",
                layer.file_name().to_string_lossy(),
                record.file_name().to_string_lossy()
            );
            records.insert(name, record.metadata().expect("stat").ino());
        }
    }
    records
}

/// The image's ID and diff IDs in the store at `root`.
fn id_and_diff_ids(root: &Path, name: &str) -> (Digest, Vec<Digest>) {
    let image = Store::open(root)
        .expect("store")
        .resolve(name)
        .expect("image in the store");
    (
        image.id,
        image.layers.iter().map(|l| l.diff_id.clone()).collect(),
    )
}

#[test]
fn a_second_push_compresses_nothing_and_every_format_pulls_back_the_same_image() {
    let Some(busybox) = requirements() else {
        return;
    };
    let Some(registry) = TestRegistry::start(Auth::Anonymous) else {
        return;
    };
    let host = registry.host();
    let a = Machine::new();
    let ctx = context(&busybox, "a\n", false);
    let gzip = format!("{host}/comp/app:gzip");
    a.build(ctx.path(), &["-t", &gzip]).ok();
    let built = id_and_diff_ids(a.root(), &gzip);
    assert!(
        variant_records(a.root()).is_empty(),
        "kiln build compresses nothing"
    );

    a.kiln(&["push", &gzip]).run().success();
    let served_gzip = served_manifest(&gzip);
    let media_types = layer_media_types(&served_gzip);
    assert!(
        media_types
            .iter()
            .all(|m| m == "application/vnd.oci.image.layer.v1.tar+gzip"),
        "{media_types:?}"
    );
    let records = variant_records(a.root());
    assert_eq!(records.len(), built.1.len(), "one gzip variant per layer");
    // The tag now names what the registry holds.
    let stored = Store::open(a.root()).unwrap().resolve(&gzip).unwrap();
    assert_eq!(stored.manifest_digest, served(&gzip).1);

    // To another repository: uploads again, compresses nothing (no record rewritten).
    let again = format!("{host}/comp/again:1");
    a.kiln(&["tag", &gzip, &again]).run().success();
    a.kiln(&["push", &again]).run().success();
    a.build(
        ctx.path(),
        &["-o", &format!("type=registry,name={host}/comp/third:1")],
    )
    .ok();
    assert_eq!(
        variant_records(a.root()),
        records,
        "nothing compressed again"
    );
    assert_eq!(served_manifest(&again), served_gzip);

    // force-compression compresses again (new records), to the same bytes.
    let forced = format!("{host}/comp/forced:1");
    a.build(
        ctx.path(),
        &[
            "-o",
            &format!("type=registry,name={forced},force-compression=true"),
        ],
    )
    .ok();
    let rewritten = variant_records(a.root());
    assert_eq!(
        rewritten.keys().collect::<Vec<_>>(),
        records.keys().collect::<Vec<_>>()
    );
    assert!(
        rewritten.iter().all(|(k, ino)| records[k] != *ino),
        "every layer compressed again"
    );
    assert_eq!(layer_media_types(&served_manifest(&forced)), media_types);

    // zstd, Docker media types.
    let zstd = format!("{host}/comp/app:zstd");
    a.build(
        ctx.path(),
        &[
            "-o",
            &format!("type=registry,name={zstd},compression=zstd,compression-level=9"),
        ],
    )
    .ok();
    let zstd_types = layer_media_types(&served_manifest(&zstd));
    assert!(
        zstd_types
            .iter()
            .all(|m| m == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{zstd_types:?}"
    );
    let docker = format!("{host}/comp/app:docker");
    a.build(
        ctx.path(),
        &[
            "-o",
            &format!("type=registry,name={docker},oci-mediatypes=false"),
        ],
    )
    .ok();
    let docker_manifest = served_manifest(&docker);
    assert_eq!(
        docker_manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        docker_manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert!(
        layer_media_types(&docker_manifest)
            .iter()
            .all(|m| m == "application/vnd.docker.image.rootfs.diff.tar.gzip")
    );
    let uncompressed = format!("{host}/comp/app:plain");
    a.build(
        ctx.path(),
        &[
            "-o",
            &format!("type=registry,name={uncompressed},compression=uncompressed"),
        ],
    )
    .ok();

    // Every one pulls back to the built image, and runs.
    let b = Machine::new();
    for name in [&gzip, &zstd, &docker, &uncompressed] {
        b.kiln(&["pull", name]).run().success();
        assert_eq!(id_and_diff_ids(b.root(), name), built, "{name}");
        let ran = b
            .kiln(&["run", "--rm", name, "cat", "/both.txt"])
            .run()
            .success();
        assert_eq!(ran.stdout_str(), "a\ngenerated\n", "{name}");
    }
    // A pulled gzip image pushed back sends the same bytes, compressing nothing.
    let back = format!("{host}/comp/back:1");
    b.kiln(&["tag", &gzip, &back]).run().success();
    let before = variant_records(b.root());
    b.kiln(&["push", &back]).run().success();
    assert_eq!(served(&back).1, served(&gzip).1);
    assert_eq!(variant_records(b.root()), before);
}

#[test]
fn estargz_and_bad_levels_are_refused_before_the_build() {
    let ctx = support::context(&[("Dockerfile", "FROM scratch\n")]);
    let dir = ctx.path().to_str().expect("utf-8");
    for (output, message) in [
        (
            "type=registry,name=r/x,compression=estargz",
            "compression=estargz is not supported by kiln",
        ),
        (
            "type=oci,dest=o.tar,compression=gzip,compression-level=12",
            "gzip: invalid compression level: 12",
        ),
        (
            "type=image,name=x,compression=lz4",
            "unsupported compression type lz4",
        ),
    ] {
        let out = support::kiln()
            .args(["build", "--dry-run", "-o", output, dir])
            .run();
        assert_ne!(out.status.code(), Some(0), "{output}");
        assert!(
            out.stderr_str().contains(message),
            "{output}: {}",
            out.stderr_str()
        );
    }
    let out = support::kiln()
        .args([
            "build",
            "--dry-run",
            "--cache-to",
            "type=local,dest=c,oci-mediatypes=false",
            dir,
        ])
        .run();
    assert!(
        out.stderr_str()
            .contains("OCI mediatypes are required for image-manifest cache format"),
        "{}",
        out.stderr_str()
    );
}

#[test]
fn an_oci_archive_export_holds_the_compressed_layers_and_loads_back() {
    let Some(busybox) = requirements() else {
        return;
    };
    let a = Machine::new();
    let ctx = context(&busybox, "a\n", false);
    let out = tempfile::tempdir().expect("temp dir");
    let oci = out.path().join("zstd.tar");
    let docker = out.path().join("gzip-docker.tar");
    a.build(
        ctx.path(),
        &[
            "-t",
            "arch",
            "-o",
            &format!("type=oci,dest={},compression=zstd", oci.display()),
            "-o",
            &format!("type=docker,dest={}", docker.display()),
        ],
    )
    .ok();
    let built = id_and_diff_ids(a.root(), "arch");
    for (archive, magic) in [
        (&oci, &[0x28u8, 0xb5, 0x2f, 0xfd][..]),
        (&docker, &[0x1f, 0x8b][..]),
    ] {
        // Every layer blob in the archive has the compression asked (BuildKit's default, gzip,
        // for type=docker).
        let mut tar = tar::Archive::new(fs::File::open(archive).expect("archive"));
        let mut layers = 0;
        for entry in tar.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let mut head = [0u8; 4];
            if path.starts_with("blobs/sha256/")
                && entry.header().entry_type().is_file()
                && std::io::Read::read_exact(&mut entry, &mut head).is_ok()
                && head.starts_with(magic)
            {
                layers += 1;
            }
        }
        assert_eq!(layers, built.1.len(), "{}", archive.display());
        let b = Machine::new();
        b.kiln(&["load", "-i", archive.to_str().expect("utf-8")])
            .run()
            .success();
        assert_eq!(
            id_and_diff_ids(b.root(), "arch"),
            built,
            "{}",
            archive.display()
        );
        let ran = b
            .kiln(&["run", "--rm", "arch", "cat", "/both.txt"])
            .run()
            .success();
        assert_eq!(ran.stdout_str(), "a\ngenerated\n");
        // The loaded compressed layers, checked against their diff IDs when unpacked, are
        // remembered as the layers' variants in that compression.
        let compression = if archive == &oci { "zstd" } else { "gzip" };
        let records = variant_records(b.root());
        assert_eq!(
            records.keys().filter(|k| k.ends_with(compression)).count(),
            built.1.len(),
            "{records:?}"
        );
    }
}

#[test]
fn a_zstd_cache_export_imports_back_with_every_step_cached() {
    let Some(busybox) = requirements() else {
        return;
    };
    let cache = tempfile::tempdir().expect("temp dir");
    let dest = cache.path().join("c");
    let a = Machine::new();
    let ctx = context(&busybox, "a\n", false);
    a.build(
        ctx.path(),
        &[
            "-t",
            "app",
            "--cache-to",
            &format!(
                "type=local,dest={},mode=max,compression=zstd",
                dest.display()
            ),
        ],
    )
    .ok();
    // Every layer the cache holds is zstd.
    let index: Value =
        serde_json::from_slice(&fs::read(dest.join("index.json")).expect("index.json")).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().expect("digest");
    let manifest: Value = serde_json::from_slice(
        &fs::read(
            dest.join("blobs/sha256")
                .join(manifest_digest.trim_start_matches("sha256:")),
        )
        .expect("cache manifest"),
    )
    .unwrap();
    let types = layer_media_types(&manifest);
    assert!(!types.is_empty());
    assert!(
        types
            .iter()
            .all(|m| m == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{types:?}"
    );

    let b = Machine::new();
    let ctx_b = context(&busybox, "a\n", true);
    let built = b.build(
        ctx_b.path(),
        &[
            "-t",
            "app",
            "--cache-from",
            &format!("type=local,src={}", dest.display()),
        ],
    );
    built.ok();
    assert_eq!(built.ran(), Vec::<&str>::new(), "every step from the cache");
    assert_eq!(built.hits().len(), STEPS.len());
    assert_eq!(
        id_and_diff_ids(b.root(), "app"),
        id_and_diff_ids(a.root(), "app")
    );
    // B's image is A's as A exports it in zstd: the same manifest, digest for digest.
    let oci = cache.path().join("a.tar");
    a.build(
        ctx.path(),
        &[
            "-t",
            "app",
            "-o",
            &format!("type=oci,dest={},compression=zstd", oci.display()),
        ],
    )
    .ok();
    let mut archive = tar::Archive::new(fs::File::open(&oci).expect("oci archive"));
    let mut exported = None;
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_str() == Some("index.json") {
            let index: Value = serde_json::from_reader(&mut entry).expect("index.json");
            exported = index["manifests"][0]["digest"].as_str().map(str::to_string);
        }
    }
    let b_manifest = Store::open(b.root())
        .unwrap()
        .resolve("app")
        .unwrap()
        .manifest_digest;
    assert_eq!(exported, Some(b_manifest.to_string()));
    let ran = b
        .kiln(&["run", "--rm", "app", "cat", "/both.txt"])
        .run()
        .success();
    assert_eq!(ran.stdout_str(), "a\ngenerated\n");
}

/// The peer dockerd (Docker 20.10) pulls and runs kiln's gzip, zstd and Docker-media-type
/// pushes.
#[test]
fn the_peer_docker_pulls_and_runs_kilns_gzip_and_zstd_pushes() {
    let Some(busybox) = requirements() else {
        return;
    };
    let Some(docker) = support::peer_docker() else {
        return;
    };
    let Some(registry) = TestRegistry::start(Auth::Anonymous) else {
        return;
    };
    let host = registry.host();
    let a = Machine::new();
    let ctx = context(&busybox, "a\n", false);
    let names = [
        (format!("{host}/peer/app:gzip"), "compression=gzip"),
        (format!("{host}/peer/app:zstd"), "compression=zstd"),
        (format!("{host}/peer/app:docker"), "oci-mediatypes=false"),
    ];
    for (name, option) in &names {
        a.build(
            ctx.path(),
            &[
                "-t",
                "app",
                "-o",
                &format!("type=registry,name={name},{option}"),
            ],
        )
        .ok();
    }
    let (id, _) = id_and_diff_ids(a.root(), "app");
    let version = docker.run(&["version", "--format", "{{.Server.Version}}"]);
    let major: u32 = version
        .trim()
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("docker's server version");
    for (name, option) in &names {
        if *option == "compression=zstd" && major < 23 {
            // moby's pkg/archive reads zstd layers from Docker 23.0 on; 20.10 takes the frame
            // for a plain tar. kiln's zstd image is checked by kiln's own pull in
            // a_second_push_compresses_nothing_and_every_format_pulls_back_the_same_image.
            let refused = docker
                .command()
                .args(["pull", name])
                .output()
                .expect("docker");
            assert!(!refused.status.success());
            assert!(
                String::from_utf8_lossy(&refused.stderr).contains("invalid tar header"),
                "{}",
                String::from_utf8_lossy(&refused.stderr)
            );
            eprintln!(
                "notice: the peer docker {} cannot read zstd layers (Docker 23.0 can); its pull \
                 of {name} was refused as expected",
                version.trim()
            );
            continue;
        }
        docker.run(&["pull", name]);
        let ran = docker.run(&["run", "--rm", "--network", "none", name, "cat", "/both.txt"]);
        assert_eq!(ran, "a\ngenerated\n", "{name}");
        let docker_id = docker.run(&["image", "inspect", "--format", "{{.Id}}", name]);
        assert_eq!(docker_id.trim(), id.to_string(), "{name}");
        docker.run(&["rmi", name]);
    }
}
