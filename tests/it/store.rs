//! The image store through its library API: layout and schemas, digest verification, hostile
//! indexes, concurrent taggers, tags moving, rmi, prune, snapshots, and other tools (skopeo,
//! umoci) reading the store as it is.

use crate::oci_schema::{Schema, Schemas};
use crate::support::{kiln, tool};
use kiln::oci::Digest;
use kiln::store::BlobError;
use kiln::store::{
    ContainerRecord, ImageName, PruneOptions, Removal, Store, StoreError, StoredImage, descriptor,
};
use oci_spec::image::{
    Arch, ConfigBuilder, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, MediaType,
    Os, RootFsBuilder,
};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;

/// An uncompressed layer tar holding `files` (path → content), directories implied.
pub fn layer_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, content.as_bytes())
            .expect("append tar entry");
    }
    builder.into_inner().expect("finish tar")
}

/// What [`build_image`] makes: layers (each a list of files), when, and the command.
pub struct Spec<'a> {
    pub layers: &'a [&'a [(&'a str, &'a str)]],
    pub created: &'a str,
    pub cmd: &'a [&'a str],
}

/// The config of an image with `diff_ids`, history entries for each layer plus a CMD.
pub fn config_for(spec: &Spec, diff_ids: Vec<String>) -> ImageConfiguration {
    let mut history: Vec<_> = diff_ids
        .iter()
        .enumerate()
        .map(|(i, _)| {
            HistoryBuilder::default()
                .created(spec.created)
                .created_by(format!("COPY layer{i} / # buildkit"))
                .comment("buildkit.dockerfile.v0")
                .build()
                .expect("history")
        })
        .collect();
    history.push(
        HistoryBuilder::default()
            .created(spec.created)
            .created_by(format!("CMD {:?}", spec.cmd))
            .comment("buildkit.dockerfile.v0")
            .empty_layer(true)
            .build()
            .expect("history"),
    );
    ImageConfigurationBuilder::default()
        .created(spec.created)
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .env(vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                ])
                .cmd(spec.cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .working_dir("/")
                .build()
                .expect("config"),
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()
                .expect("rootfs"),
        )
        .history(history)
        .build()
        .expect("image config")
}

/// Writes an image through the store's API: the layer blobs (uncompressed tars), then
/// config and manifest. It is untagged until tagged.
pub fn build_image(store: &Store, spec: &Spec) -> StoredImage {
    let _lease = store.lease().expect("lease");
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for files in spec.layers {
        let tar = layer_tar(files);
        let blob = store.blobs().write(&tar).expect("write layer");
        diff_ids.push(blob.digest.to_string());
        layers.push(blob.descriptor(MediaType::ImageLayer));
    }
    store
        .write_image(&config_for(spec, diff_ids), &layers)
        .expect("write image")
}

/// A store in a fresh temporary directory.
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("root")).expect("open store");
    (dir, store)
}

const HELLO: Spec = Spec {
    layers: &[&[("hello.txt", "hello\n")], &[("etc/motd", "welcome\n")]],
    created: "2024-02-29T12:00:00Z",
    cmd: &["/bin/sh"],
};

const OTHER: Spec = Spec {
    layers: &[&[("hello.txt", "hello\n")], &[("other", "other\n")]],
    created: "2024-03-01T12:00:00Z",
    cmd: &["/other"],
};

fn names(image: &StoredImage) -> Vec<String> {
    image.names.iter().map(ImageName::familiar).collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).expect("read")).expect("JSON")
}

#[test]
fn a_new_store_is_an_oci_layout_with_kiln_dirs_beside_it() {
    let (_dir, store) = temp_store();
    let root = store.root();
    assert_eq!(
        fs::read_to_string(root.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index = read_json(&root.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"], Value::Array(vec![]));
    for dir in ["blobs/sha256", "snapshots", "containers", "tmp"] {
        assert!(root.join(dir).is_dir(), "{dir}");
    }
    // Opening again changes nothing.
    Store::open(root).unwrap();
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn open_refuses_a_non_empty_directory_that_is_not_a_layout() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::NotALayout { .. }), "{err}");
    assert!(
        err.to_string().contains("not empty and has no oci-layout"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing was created"
    );

    fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"9.9.9"}"#,
    )
    .unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("9.9.9"), "{err}");
}

#[test]
fn written_images_resolve_by_name_id_prefix_and_digest() {
    let (_dir, store) = temp_store();
    let image = build_image(&store, &HELLO);
    assert!(image.names.is_empty(), "untagged until tagged");
    assert_eq!(image.layers.len(), 2);
    assert_eq!(
        image.size(),
        image.layers.iter().map(|l| l.size).sum::<u64>()
    );
    assert_eq!(image.created_seconds(), Some(1_709_208_000));
    assert_eq!(
        image.id,
        Digest::of(&image.config_bytes),
        "the ID is the config digest"
    );

    let name = store.tag("hello", &image.manifest_descriptor).unwrap();
    assert_eq!(name.familiar(), "hello:latest");
    let id = image.id.to_string();
    let manifest_ref = format!("hello@{}", image.manifest_digest);
    for query in [
        "hello",
        "hello:latest",
        "docker.io/library/hello:latest",
        "library/hello",
        id.as_str(),
        image.id.hex(),
        &image.id.hex()[..12],
        &image.id.hex()[..4],
        &id[..11],
        manifest_ref.as_str(),
    ] {
        let found = store
            .resolve(query)
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(found.id, image.id, "{query}");
        assert_eq!(names(&found), ["hello:latest"], "{query}");
    }
    for missing in ["hello:other", "nope", "sha256:0000", "abc", "Hello"] {
        let err = store.resolve(missing).unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{missing}: {err}");
    }
    assert_eq!(
        store.resolve("nope").unwrap_err().to_string(),
        "no such image: nope:latest"
    );
}

#[test]
fn an_ambiguous_id_prefix_is_an_error() {
    let (_dir, store) = temp_store();
    // 20 images: by pigeonhole, two IDs share their first hex digit.
    let mut ids = Vec::new();
    for i in 0..20 {
        let created = format!("2024-01-01T00:00:{i:02}Z");
        let image = build_image(
            &store,
            &Spec {
                created: &created,
                ..HELLO
            },
        );
        ids.push(image.id);
    }
    let shared = ids
        .iter()
        .map(|id| &id.hex()[..1])
        .find(|first| ids.iter().filter(|id| id.hex().starts_with(*first)).count() > 1)
        .expect("pigeonhole");
    let err = store.resolve(&format!("sha256:{shared}")).unwrap_err();
    assert!(matches!(err, StoreError::Ambiguous { .. }), "{err}");
    assert!(err.to_string().contains("ambiguous"), "{err}");
    let unique = &ids[0].hex()[..16];
    assert_eq!(store.resolve(unique).unwrap().id, ids[0]);
}

#[test]
fn every_document_validates_against_the_oci_schemas() {
    let Some(schemas) = Schemas::shared() else {
        return;
    };
    let (_dir, store) = temp_store();
    let image = build_image(&store, &HELLO);
    store.tag("hello", &image.manifest_descriptor).unwrap();
    store
        .tag("127.0.0.1:5000/a/b:v1", &image.manifest_descriptor)
        .unwrap();
    build_image(&store, &OTHER); // stays untagged
    let root = store.root();
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut check = |schema, what: String, document: &Value| {
        checked += 1;
        if let Err(err) = schemas.check(schema, document) {
            failures.push(format!("{what}: {err}"));
        }
    };
    check(
        Schema::Layout,
        "oci-layout".into(),
        &read_json(&root.join("oci-layout")),
    );
    let index = read_json(&root.join("index.json"));
    check(Schema::Index, "index.json".into(), &index);
    for entry in index["manifests"].as_array().unwrap() {
        check(Schema::Descriptor, "index entry".into(), entry);
        let digest = Digest::parse(entry["digest"].as_str().unwrap()).unwrap();
        let manifest: Value =
            serde_json::from_slice(&store.blobs().read(&digest).unwrap()).unwrap();
        check(Schema::Manifest, format!("manifest {digest}"), &manifest);
        let config_digest = Digest::parse(manifest["config"]["digest"].as_str().unwrap()).unwrap();
        let config: Value =
            serde_json::from_slice(&store.blobs().read(&config_digest).unwrap()).unwrap();
        check(Schema::Config, format!("config {config_digest}"), &config);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        checked,
        2 + 3 * 3,
        "layout, index, and 3 entries × (descriptor, manifest, config)"
    );
}

#[test]
fn index_entries_carry_familiar_and_full_names() {
    let (_dir, store) = temp_store();
    let image = build_image(&store, &HELLO);
    store.tag("hello", &image.manifest_descriptor).unwrap();
    store
        .tag("127.0.0.1:5000/a/b:v1", &image.manifest_descriptor)
        .unwrap();
    let index = read_json(&store.root().join("index.json"));
    let mut pairs: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let a = &e["annotations"];
            (
                a["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                a["io.containerd.image.name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            (
                "127.0.0.1:5000/a/b:v1".to_string(),
                "127.0.0.1:5000/a/b:v1".to_string()
            ),
            (
                "hello:latest".to_string(),
                "docker.io/library/hello:latest".to_string()
            ),
        ]
    );
}

#[test]
fn a_corrupted_blob_is_an_error_not_bad_data() {
    let (_dir, store) = temp_store();
    let image = build_image(&store, &HELLO);
    store.tag("hello", &image.manifest_descriptor).unwrap();
    let config_path = store.blobs().path(&image.id);
    let tampered = String::from_utf8(image.config_bytes.clone())
        .unwrap()
        .replace("/bin/sh", "/bin/xx");
    fs::write(&config_path, tampered).unwrap();
    let err = store.resolve("hello").unwrap_err();
    assert!(
        matches!(err, StoreError::Blob(BlobError::DigestMismatch { ref expected, .. }) if *expected == image.id),
        "{err}"
    );

    // A layer: the verifying reader fails at the end.
    let layer = &image.layers[0];
    fs::write(
        store.blobs().path(&layer.digest),
        layer_tar(&[("hello.txt", "HELLO\n")]),
    )
    .unwrap();
    let mut reader = store
        .blobs()
        .reader(&layer.digest, Some(layer.size))
        .unwrap();
    let err = std::io::copy(&mut reader, &mut std::io::sink()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}

#[test]
fn write_image_checks_its_layers() {
    let (_dir, store) = temp_store();
    let tar = layer_tar(&[("a", "a")]);
    let absent = descriptor(MediaType::ImageLayer, &Digest::of(&tar), tar.len() as u64);
    let config = config_for(&HELLO, vec![Digest::of(&tar).to_string()]);
    let err = store
        .write_image(&config, std::slice::from_ref(&absent))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Blob(BlobError::NotFound(_))),
        "{err}"
    );

    let blob = store.blobs().write(&tar).unwrap();
    let wrong_size = descriptor(MediaType::ImageLayer, &blob.digest, blob.size + 1);
    let err = store.write_image(&config, &[wrong_size]).unwrap_err();
    assert!(
        matches!(err, StoreError::Blob(BlobError::SizeMismatch { .. })),
        "{err}"
    );

    let err = store
        .write_image(&config, &[absent.clone(), absent])
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::LayerCount {
                diff_ids: 1,
                layers: 2
            }
        ),
        "{err}"
    );

    let err = store
        .write_image_json(b"{\"not\":\"a config\"}", &[])
        .unwrap_err();
    assert!(matches!(err, StoreError::Document { .. }), "{err}");
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn docker_config_extensions_survive_write_image_json() {
    let (_dir, store) = temp_store();
    let mut config: Value = serde_json::to_value(config_for(&HELLO, vec![])).unwrap();
    config["config"]["Healthcheck"] = serde_json::json!({"Test": ["CMD", "true"]});
    config["config"]["Shell"] = serde_json::json!(["/bin/bash", "-c"]);
    let bytes = serde_json::to_vec(&config).unwrap();
    let image = store.write_image_json(&bytes, &[]).unwrap();
    assert_eq!(image.config_bytes, bytes);
    assert_eq!(image.id, Digest::of(&bytes));
}

fn write_index(store: &Store, text: &str) {
    fs::write(store.root().join("index.json"), text).unwrap();
}

#[test]
fn a_hostile_index_is_a_clear_error() {
    let (_dir, store) = temp_store();
    let entry = |digest: &str| {
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":2,"annotations":{{"org.opencontainers.image.ref.name":"x:latest"}}}}]}}"#
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            entry("sha256:../../../../etc/passwd"),
            "not an OCI image index",
        ),
        (entry("sha256:../../x"), "not an OCI image index"),
        (entry(&format!("sha512:{}", "a".repeat(128))), "only sha256"),
        ("{".to_string(), "not an OCI image index"),
        (
            r#"{"schemaVersion":3,"manifests":[]}"#.to_string(),
            "schemaVersion 3",
        ),
        (" ".repeat(5 << 20), "larger than"),
    ];
    for (text, want) in cases {
        write_index(&store, &text);
        let err = store.resolve("x").unwrap_err();
        let message = kiln::error::chain(&err);
        assert!(
            message.contains(want),
            "{}: {message}",
            &text[..text.len().min(60)]
        );
        assert!(message.starts_with("corrupt image index"), "{message}");
        let err = store.images().unwrap_err();
        assert!(matches!(err, StoreError::Index(_)), "{err}");
    }
}

#[test]
fn a_hostile_manifest_digest_never_becomes_a_path() {
    let (_dir, store) = temp_store();
    let image = build_image(&store, &HELLO);
    // A manifest whose config digest tries to escape.
    let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:../../../oci-layout","size":30},"layers":[]}"#;
    let blob = store.blobs().write(manifest.as_bytes()).unwrap();
    let hostile = descriptor(MediaType::ImageManifest, &blob.digest, blob.size);
    let err = store.tag("evil", &hostile).unwrap_err();
    assert!(matches!(err, StoreError::Document { .. }), "{err}");
    assert!(store.resolve("evil").is_err());
    assert_eq!(store.resolve(image.id.hex()).unwrap().id, image.id);
}

#[test]
fn tags_move_and_the_old_image_becomes_dangling() {
    let (_dir, store) = temp_store();
    let first = build_image(&store, &HELLO);
    let second = build_image(&store, &OTHER);
    store.tag("hello", &first.manifest_descriptor).unwrap();
    store
        .tag("hello:latest", &second.manifest_descriptor)
        .unwrap();
    assert_eq!(store.resolve("hello").unwrap().id, second.id);
    let old = store.resolve(first.id.hex()).unwrap();
    assert!(old.names.is_empty(), "{:?}", old.names);
    let listed: Vec<_> = store
        .images()
        .unwrap()
        .into_iter()
        .map(|s| (s.image.id.clone(), names(&s.image)))
        .collect();
    assert_eq!(
        listed,
        [
            (second.id.clone(), vec!["hello:latest".to_string()]),
            (first.id.clone(), vec![]),
        ]
    );

    // tag_image resolves its source like docker tag.
    store.tag_image(&first.id.hex()[..8], "again:v1").unwrap();
    assert_eq!(names(&store.resolve("again:v1").unwrap()), ["again:v1"]);
    let err = store
        .tag_image("hello", &format!("x@{}", first.manifest_digest))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("refusing to create a tag with a digest"),
        "{err}"
    );
    let err = store.tag_image("hello", "Bad Name").unwrap_err();
    assert!(err.to_string().contains("invalid image name"), "{err}");
}

#[test]
fn concurrent_taggers_lose_nothing() {
    let (_dir, store) = temp_store();
    let image = build_image(&store, &HELLO);
    let root = store.root().to_path_buf();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let root = root.clone();
            let manifest = image.manifest_descriptor.clone();
            std::thread::spawn(move || {
                let store = Store::open(&root).expect("open");
                for i in 0..10 {
                    store.tag(&format!("t{t}:n{i}"), &manifest).expect("tag");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("tagger thread");
    }
    let found = store.resolve("t0:n0").unwrap();
    assert_eq!(found.names.len(), 80, "{:?}", names(&found));
}

#[test]
fn rmi_untags_deletes_or_refuses_like_docker() {
    let (_dir, store) = temp_store();
    let image = build_image(&store, &HELLO);
    let other = build_image(&store, &OTHER);
    store.tag("hello", &image.manifest_descriptor).unwrap();
    store.tag("hello:v2", &image.manifest_descriptor).unwrap();
    store.tag("other", &other.manifest_descriptor).unwrap();

    // By ID with two tags: refused without force.
    let err = store
        .remove_image(&image.id.hex()[..12], false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            image.id.short()
        )
    );
    // By tag while another tag remains: untag only.
    assert_eq!(
        store.remove_image("hello:v2", false).unwrap(),
        [Removal::Untagged(ImageName::parse("hello:v2").unwrap())]
    );
    assert!(store.blobs().contains(&image.manifest_digest));
    // The last tag: untag and delete; the shared layer stays for `other`, the own one goes.
    let removals = store.remove_image("hello", false).unwrap();
    let printed: Vec<String> = removals.iter().map(ToString::to_string).collect();
    assert_eq!(
        printed,
        [
            "Untagged: hello:latest".to_string(),
            format!("Deleted: {}", image.id)
        ]
    );
    assert!(!store.blobs().contains(&image.manifest_digest));
    assert!(!store.blobs().contains(&image.id));
    assert!(
        store.blobs().contains(&image.layers[0].digest),
        "shared with other"
    );
    assert!(!store.blobs().contains(&image.layers[1].digest));
    assert!(matches!(
        store.remove_image("hello", false),
        Err(StoreError::NotFound(_))
    ));

    // A container uses `other`.
    store
        .put_container(&ContainerRecord {
            id: "c0ffee0123456789".to_string(),
            image: other.id.clone(),
            image_name: "other".to_string(),
            name: String::new(),
            config: Default::default(),
            created: "2024-01-01T00:00:00Z".to_string(),
            pid: None,
            remove_with: None,
            run: Default::default(),
        })
        .unwrap();
    let err = store.remove_image("other", false).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "conflict: unable to remove repository reference \"other\" (must force) - container c0ffee012345 is using its referenced image {}",
            other.id.short()
        )
    );
    let err = store.remove_image(other.id.hex(), false).unwrap_err();
    assert!(
        err.to_string()
            .contains("image is being used by stopped container c0ffee012345"),
        "{err}"
    );
    // Forced: the tag goes, the content stays for the container.
    let removals = store.remove_image(other.id.hex(), true).unwrap();
    assert_eq!(
        removals,
        [Removal::Untagged(ImageName::parse("other").unwrap())]
    );
    assert!(store.resolve(other.id.hex()).unwrap().names.is_empty());
    assert!(store.blobs().contains(&other.layers[1].digest));

    // Running containers cannot be forced away.
    store
        .put_container(&ContainerRecord {
            id: "running".to_string(),
            image: other.id.clone(),
            image_name: "other".to_string(),
            name: String::new(),
            config: Default::default(),
            created: "2024-01-01T00:00:00Z".to_string(),
            pid: Some(std::process::id()),
            remove_with: None,
            run: Default::default(),
        })
        .unwrap();
    let err = store.remove_image(other.id.hex(), true).unwrap_err();
    assert!(
        err.to_string()
            .contains("(cannot be forced) - image is being used by running container running"),
        "{err}"
    );
}

#[test]
fn container_records_round_trip_and_need_their_image() {
    let (_dir, store) = temp_store();
    let image = build_image(&store, &HELLO);
    let record = ContainerRecord {
        id: "abc".to_string(),
        image: image.id.clone(),
        image_name: "hello".to_string(),
        name: String::new(),
        config: Default::default(),
        created: "2024-01-01T00:00:00Z".to_string(),
        pid: None,
        remove_with: None,
        run: Default::default(),
    };
    store.put_container(&record).unwrap();
    assert_eq!(store.container("abc").unwrap(), record);
    assert_eq!(store.containers().unwrap(), std::slice::from_ref(&record));
    assert!(
        store
            .container_dir("abc")
            .unwrap()
            .join("container.json")
            .is_file()
    );
    let missing_image = ContainerRecord {
        image: Digest::of(b"no such config"),
        ..record.clone()
    };
    assert!(matches!(
        store.put_container(&missing_image),
        Err(StoreError::NotFound(_))
    ));
    for bad in ["../x", "", "a/b", ".hidden"] {
        let err = store.container_dir(bad).unwrap_err();
        assert!(matches!(err, StoreError::ContainerId(_)), "{bad}: {err}");
    }
    store.remove_container("abc").unwrap();
    assert!(matches!(
        store.container("abc"),
        Err(StoreError::NoContainer(_))
    ));
    assert!(store.containers().unwrap().is_empty());
}

#[test]
fn prune_reclaims_only_unreferenced_things() {
    let (_dir, store) = temp_store();
    let kept = build_image(&store, &HELLO);
    store.tag("kept", &kept.manifest_descriptor).unwrap();
    let dangling = build_image(&store, &OTHER);
    let used = build_image(
        &store,
        &Spec {
            layers: &[&[("used", "used\n")]],
            created: "2024-03-02T00:00:00Z",
            cmd: &["/used"],
        },
    );
    store
        .put_container(&ContainerRecord {
            id: "user".to_string(),
            image: used.id.clone(),
            image_name: used.id.to_string(),
            name: String::new(),
            config: Default::default(),
            created: "2024-01-01T00:00:00Z".to_string(),
            pid: None,
            remove_with: None,
            run: Default::default(),
        })
        .unwrap();
    for image in [&kept, &dangling, &used] {
        for layer in &image.layers {
            store
                .create_snapshot(&layer.diff_id, |dir| fs::write(dir.join("f"), "x"))
                .unwrap();
        }
    }
    let stray = store.blobs().write(b"nobody references me").unwrap();
    let stale = store.staging().dir().join("2147483647-0-0.blob");
    fs::write(&stale, "junk from a killed process").unwrap();

    let report = store.prune(PruneOptions::default()).unwrap();
    assert_eq!(report.removals, [Removal::Deleted(dangling.id.clone())]);
    assert_eq!(report.staging, 1);
    assert!(!stale.exists());
    assert!(!store.blobs().contains(&stray.digest));
    // dangling's manifest, config, own layer, and the stray blob.
    assert_eq!(report.blobs, 4);
    assert_eq!(report.snapshots, 1, "dangling's own layer");
    assert!(report.reclaimed > 0);
    assert!(
        store.has_snapshot(&dangling.layers[0].diff_id),
        "shared with kept"
    );
    assert!(!store.has_snapshot(&dangling.layers[1].diff_id));
    assert!(store.resolve("kept").is_ok());
    assert!(store.resolve(used.id.hex()).is_ok(), "a container uses it");

    // -a: every image no container uses.
    let report = store.prune(PruneOptions { all: true }).unwrap();
    assert_eq!(
        report.removals,
        [
            Removal::Untagged(ImageName::parse("kept").unwrap()),
            Removal::Deleted(kept.id.clone())
        ]
    );
    assert!(store.resolve(used.id.hex()).is_ok());
    for layer in &kept.layers {
        assert!(!store.has_snapshot(&layer.diff_id));
        assert!(!store.blobs().contains(&layer.digest));
    }
    assert!(store.has_snapshot(&used.layers[0].diff_id));
    let report = store.prune(PruneOptions { all: true }).unwrap();
    assert_eq!(report, Default::default(), "nothing left to prune");
}

#[test]
fn disk_usage_counts_images_containers_and_snapshots() {
    let (_dir, store) = temp_store();
    let image = build_image(&store, &HELLO);
    let other = build_image(&store, &OTHER);
    store.tag("hello", &image.manifest_descriptor).unwrap();
    store
        .put_container(&ContainerRecord {
            id: "c1".to_string(),
            image: image.id.clone(),
            image_name: "hello".to_string(),
            name: String::new(),
            config: Default::default(),
            created: "2024-01-01T00:00:00Z".to_string(),
            pid: None,
            remove_with: None,
            run: Default::default(),
        })
        .unwrap();
    store
        .create_snapshot(&image.layers[0].diff_id, |dir| {
            fs::write(dir.join("f"), "12345")
        })
        .unwrap();
    store
        .create_snapshot(&other.layers[1].diff_id, |dir| {
            fs::write(dir.join("f"), "123")
        })
        .unwrap();
    let usage = store.disk_usage().unwrap();
    assert_eq!((usage.images.total, usage.images.active), (2, 1));
    let all: u64 = store.blobs().list().unwrap().iter().map(|b| b.size).sum();
    assert_eq!(usage.images.size, all);
    let other_only =
        other.manifest_descriptor.size() + other.config_bytes.len() as u64 + other.layers[1].size;
    assert_eq!(usage.images.reclaimable, other_only);
    assert_eq!((usage.containers.total, usage.containers.active), (1, 0));
    assert_eq!(usage.containers.size, usage.containers.reclaimable);
    assert_eq!((usage.snapshots.total, usage.snapshots.active), (2, 1));
    assert_eq!((usage.snapshots.size, usage.snapshots.reclaimable), (8, 3));
}

#[test]
fn removing_snapshots_never_follows_their_links_out() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let (dir, store) = temp_store();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("precious"), "keep me").unwrap();
    let image = build_image(&store, &HELLO);
    let diff_id = &image.layers[0].diff_id;
    store
        .create_snapshot(diff_id, |root| -> std::io::Result<()> {
            symlink(&outside, root.join("etc"))?;
            symlink(outside.join("precious"), root.join("file-link"))?;
            fs::create_dir(root.join("ro"))?;
            fs::write(root.join("ro/inner"), "x")?;
            fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555))
        })
        .unwrap();
    let usage = store.disk_usage().unwrap();
    let links =
        outside.display().to_string().len() + outside.join("precious").display().to_string().len();
    assert_eq!(
        usage.snapshots.size,
        (links + 1) as u64,
        "links count as themselves"
    );
    let report = store.prune(PruneOptions::default()).unwrap();
    assert_eq!(report.snapshots, 1);
    assert!(!store.has_snapshot(diff_id));
    assert_eq!(
        fs::read_to_string(outside.join("precious")).unwrap(),
        "keep me"
    );
}

#[test]
fn snapshots_appear_whole_or_not_at_all() {
    let (_dir, store) = temp_store();
    let diff_id = Digest::of(b"layer");
    let err = store
        .create_snapshot(&diff_id, |dir| {
            fs::write(dir.join("half"), "written")?;
            Err(std::io::Error::other("unpack failed: bad tar entry x"))
        })
        .unwrap_err();
    assert!(
        kiln::error::chain(&err).contains("bad tar entry x"),
        "{err}"
    );
    assert!(!store.has_snapshot(&diff_id));
    assert_eq!(fs::read_dir(store.staging().dir()).unwrap().count(), 0);

    let dir = store
        .create_snapshot(&diff_id, |dir| fs::write(dir.join("file"), "content"))
        .unwrap();
    assert_eq!(dir, store.snapshot_dir(&diff_id));
    assert_eq!(fs::read_to_string(dir.join("file")).unwrap(), "content");
    let again = store
        .create_snapshot(&diff_id, |_| -> Result<(), std::io::Error> {
            panic!("an existing snapshot is not filled again")
        })
        .unwrap();
    assert_eq!(again, dir);
}

#[test]
fn a_lease_holds_off_collection() {
    let (_dir, store) = temp_store();
    let lease = store.lease().unwrap();
    let probe = fs::File::open(store.root().join("gc.lock")).unwrap();
    assert!(
        probe.try_lock().is_err(),
        "a collection cannot start while a lease lives"
    );
    assert!(probe.try_lock_shared().is_ok(), "other writers can");
    probe.unlock().unwrap();
    drop(lease);
    assert!(probe.try_lock().is_ok());
}

/// A store with an image written through the API, a snapshot, a container record, a staging
/// entry and the lock files, as it looks in use.
fn busy_store() -> (tempfile::TempDir, Store, StoredImage) {
    let (dir, store) = temp_store();
    let image = build_image(&store, &HELLO);
    store.tag("hello", &image.manifest_descriptor).unwrap();
    store
        .tag("127.0.0.1:5000/a/b:v1", &image.manifest_descriptor)
        .unwrap();
    store
        .create_snapshot(&image.layers[0].diff_id, |d| {
            fs::write(d.join("hello.txt"), "hello\n")
        })
        .unwrap();
    store
        .put_container(&ContainerRecord {
            id: "c1".to_string(),
            image: image.id.clone(),
            image_name: "hello".to_string(),
            name: String::new(),
            config: Default::default(),
            created: "2024-01-01T00:00:00Z".to_string(),
            pid: None,
            remove_with: None,
            run: Default::default(),
        })
        .unwrap();
    fs::write(store.staging().new_path("blob"), "in flight").unwrap();
    drop(store.lease().unwrap());
    (dir, store, image)
}

fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn skopeo_reads_the_store_as_it_is() {
    let Some(skopeo) = tool("skopeo") else {
        return;
    };
    let (dir, store, image) = busy_store();
    let root = store.root().display().to_string();
    for name in ["hello:latest", "127.0.0.1:5000/a/b:v1"] {
        let out = run(&skopeo, &["inspect", &format!("oci:{root}:{name}")]);
        let json: Value = serde_json::from_str(&out).expect("skopeo JSON");
        assert_eq!(json["Digest"], image.manifest_digest.to_string(), "{name}");
        assert_eq!(json["Architecture"], "amd64");
        let layers: Vec<String> = image.layers.iter().map(|l| l.digest.to_string()).collect();
        assert_eq!(json["Layers"], serde_json::json!(layers));
        let config = run(
            &skopeo,
            &["inspect", "--config", &format!("oci:{root}:{name}")],
        );
        let config: Value = serde_json::from_str(&config).unwrap();
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    }
    // skopeo copies it out, reading and verifying every blob.
    let copy = dir.path().join("copy");
    run(
        &skopeo,
        &[
            "copy",
            &format!("oci:{root}:hello:latest"),
            &format!("oci:{}:x", copy.display()),
        ],
    );
    let copied = Store::open(&copy).unwrap().resolve("x").unwrap();
    assert_eq!(copied.id, image.id);
    // And copies into it: kiln sees skopeo's tag.
    run(
        &skopeo,
        &[
            "copy",
            &format!("oci:{}:x", copy.display()),
            &format!("oci:{root}:copied:v1"),
        ],
    );
    assert_eq!(store.resolve("copied:v1").unwrap().id, image.id);
}

#[test]
fn umoci_reads_the_store_as_it_is() {
    let Some(umoci) = tool("umoci") else {
        return;
    };
    let (dir, store, image) = busy_store();
    let root = store.root().display().to_string();
    let listed = run(&umoci, &["ls", "--layout", &root]);
    let mut tags: Vec<&str> = listed.lines().collect();
    tags.sort();
    assert_eq!(tags, ["127.0.0.1:5000/a/b:v1", "hello:latest"]);
    let stat = run(
        &umoci,
        &["stat", "--json", "--image", &format!("{root}:hello:latest")],
    );
    let stat: Value = serde_json::from_str(&stat).expect("umoci stat JSON");
    let history = stat["history"].as_array().expect("history");
    assert_eq!(history.len(), 3);
    // Unpacking reads and applies every layer.
    let bundle = dir.path().join("bundle");
    let mut args = vec!["unpack"];
    if !nix::unistd::geteuid().is_root() {
        args.push("--rootless");
    }
    let image_arg = format!("--image={root}:hello:latest");
    let bundle_arg = bundle.display().to_string();
    args.extend([image_arg.as_str(), bundle_arg.as_str()]);
    run(&umoci, &args);
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/hello.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/etc/motd")).unwrap(),
        "welcome\n"
    );
    // umoci's changes are kiln's to read: a new tag, and a new image from `umoci config`.
    run(
        &umoci,
        &["tag", "--image", &format!("{root}:hello:latest"), "newtag"],
    );
    run(
        &umoci,
        &[
            "config",
            "--image",
            &format!("{root}:hello:latest"),
            "--tag",
            "hello:edited",
            "--config.cmd=/edited",
        ],
    );
    let mut tags = names(&store.resolve(image.id.hex()).unwrap());
    tags.sort();
    assert_eq!(
        tags,
        ["127.0.0.1:5000/a/b:v1", "hello:latest", "newtag:latest"]
    );
    let edited = store.resolve("hello:edited").unwrap();
    assert_eq!(
        edited.config.config().as_ref().unwrap().cmd(),
        &Some(vec!["/edited".to_string()])
    );
    assert_eq!(edited.layers, image.layers);
}

#[test]
fn processes_creating_the_same_store_at_once_all_open_it() {
    // Each process sees the others' half-made layout (directories before `oci-layout`); none
    // may take it for a foreign directory.
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let children: Vec<_> = (0..6)
            .map(|_| kiln().root(&root).args(["images", "-q"]).spawn())
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn containers_are_found_by_id_name_or_unique_prefix_and_names_are_unique() {
    let (_dir, store) = temp_store();
    let image = build_image(&store, &HELLO);
    let record = |id: &str, name: &str| ContainerRecord {
        id: id.to_string(),
        image: image.id.clone(),
        image_name: "hello".to_string(),
        name: name.to_string(),
        config: Default::default(),
        created: "2024-01-01T00:00:00Z".to_string(),
        pid: None,
        remove_with: None,
        run: Default::default(),
    };
    store.put_container(&record("abc123", "web")).unwrap();
    store.put_container(&record("abd456", "db")).unwrap();
    assert_eq!(store.find_container("abc123").unwrap().name, "web");
    assert_eq!(store.find_container("web").unwrap().id, "abc123");
    assert_eq!(store.find_container("/db").unwrap().id, "abd456");
    assert_eq!(store.find_container("abc").unwrap().id, "abc123");
    let err = store.find_container("ab").unwrap_err();
    assert_eq!(
        err.to_string(),
        "multiple IDs found with provided prefix: ab"
    );
    let err = store.find_container("zzz").unwrap_err();
    assert_eq!(err.to_string(), "no such container: zzz");
    assert!(matches!(
        store.find_container(""),
        Err(StoreError::NoContainer(_))
    ));
    // A name taken by another container is refused; rewriting the same container is not.
    let err = store.put_container(&record("fff", "web")).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "Conflict. The container name \"/web\" is already in use by container \"abc123\""
        ),
        "{err}"
    );
    store.put_container(&record("abc123", "web")).unwrap();
    for bad in ["w", "-web", "a/b", "we b"] {
        assert!(
            matches!(
                store.put_container(&record("ggg", bad)),
                Err(StoreError::ContainerName(_))
            ),
            "{bad}"
        );
    }
}
