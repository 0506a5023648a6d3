//! The image exporter's options, annotations and `--metadata-file` end to end: `-o type=image`
//! with `push-by-digest`, `name-canonical`, several names and a dangling name pushed to a
//! registry on loopback (read back with `skopeo inspect --raw`); `--annotation` and
//! `annotation*.KEY` options in the pushed manifest and index, their descriptors, the store and
//! an OCI layout; the metadata file's fields against the real digests (the cache manifest's
//! too); and the annotations and metadata fields against the peer BuildKit's for the same
//! options.

use crate::registry::{Auth, TestRegistry};
use crate::support::{self, kiln};
use serde_json::{Value, json};
use std::fs;
use std::path::Path;
use std::process::Command;

const DOCKERFILE: &str = "FROM scratch\nCOPY a /a\n";

/// A context of [`DOCKERFILE`] and a store, or `None` after a skip notice (not root).
fn setup() -> Option<(tempfile::TempDir, tempfile::TempDir)> {
    support::root()?;
    let context = support::context(&[("Dockerfile", DOCKERFILE), ("a", "annotated\n")]);
    let store = tempfile::tempdir().expect("temp dir");
    Some((context, store))
}

/// `skopeo inspect --raw` of `reference` on a plain-HTTP registry, as JSON.
fn raw(skopeo: &Path, reference: &str) -> Value {
    let out = Command::new(skopeo)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON manifest")
}

/// The tags the registry lists for `repository` (none when it knows no tag of it).
fn tags(host: &str, repository: &str) -> Vec<String> {
    let out = Command::new("curl")
        .args(["-s", &format!("http://{host}/v2/{repository}/tags/list")])
        .output()
        .expect("run curl");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    listed["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).expect("read JSON file")).expect("JSON")
}

#[test]
fn push_by_digest_pushes_no_tag_and_the_metadata_says_its_digest() {
    let Some((context, store)) = setup() else {
        return;
    };
    let Some(skopeo) = support::tool("skopeo") else {
        return;
    };
    let Some(registry) = TestRegistry::start(Auth::Anonymous) else {
        return;
    };
    let host = registry.host();
    let metadata = store.path().join("metadata.json");
    let output = kiln()
        .root(store.path().join("root"))
        .args(["build", "--progress", "plain", "--metadata-file"])
        .arg(&metadata)
        .arg("-o")
        .arg(format!(
            "type=image,name={host}/kiln/bydigest,push=true,push-by-digest=true"
        ))
        .arg(context.path())
        .run()
        .success();
    let metadata = read_json(&metadata);
    let digest = metadata["containerimage.digest"]
        .as_str()
        .expect("containerimage.digest")
        .to_string();
    assert!(
        output
            .stderr_str()
            .contains(&format!("pushed {host}/kiln/bydigest@{digest}")),
        "{}",
        output.stderr_str()
    );
    // By digest only: the manifest is there, no tag names it.
    let manifest = raw(&skopeo, &format!("{host}/kiln/bydigest@{digest}"));
    assert_eq!(
        manifest["mediaType"],
        json!("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(tags(&host, "kiln/bydigest"), Vec::<String>::new());
    assert_eq!(
        metadata["image.name"],
        json!(format!("{host}/kiln/bydigest"))
    );
    assert_eq!(
        metadata["containerimage.descriptor"]["digest"],
        json!(digest)
    );
    assert_eq!(
        metadata["containerimage.config.digest"],
        manifest["config"]["digest"]
    );
    // The digest is the pushed image's: its layers gzip-compressed, as BuildKit's default.
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        json!("application/vnd.oci.image.layer.v1.tar+gzip")
    );
}

#[test]
fn several_names_a_canonical_name_and_a_dangling_name() {
    let Some((context, store)) = setup() else {
        return;
    };
    let Some(registry) = TestRegistry::start(Auth::Anonymous) else {
        return;
    };
    let host = registry.host();
    let root = store.path().join("root");
    let metadata = store.path().join("metadata.json");
    // buildx's CSV: a quoted field keeps the comma between the names.
    let output = kiln()
        .root(&root)
        .args(["build", "--progress", "plain", "--metadata-file"])
        .arg(&metadata)
        .arg("-o")
        .arg(format!(
            "type=registry,\"name={host}/kiln/a:1,{host}/kiln/b:2\",name-canonical=true,\
             dangling-name-prefix={host}/kiln/dangling,unpack=true"
        ))
        .arg(context.path())
        .run()
        .success();
    let metadata = read_json(&metadata);
    let digest = metadata["containerimage.digest"].as_str().expect("digest");
    assert_eq!(tags(&host, "kiln/a"), vec!["1".to_string()]);
    assert_eq!(tags(&host, "kiln/b"), vec!["2".to_string()]);
    // The dangling name is pushed by its digest, untagged.
    assert_eq!(tags(&host, "kiln/dangling"), Vec::<String>::new());
    let stderr = output.stderr_str();
    assert!(
        stderr.contains(&format!("pushed {host}/kiln/dangling@{digest}")),
        "{stderr}"
    );
    assert_eq!(
        metadata["image.name"],
        json!(format!(
            "{host}/kiln/a:1,{host}/kiln/b:2,{host}/kiln/dangling@{digest}"
        ))
    );
    // Both names are tagged in the store, and each answers by its canonical name.
    for name in [format!("{host}/kiln/a:1"), format!("{host}/kiln/b:2")] {
        let canonical = format!("{name}@{digest}");
        assert!(stderr.contains(&format!("named {canonical}")), "{stderr}");
        for shown in [&name, &canonical] {
            let inspected = kiln()
                .root(&root)
                .args(["inspect", shown])
                .run()
                .success()
                .stdout_json();
            assert_eq!(inspected[0]["Descriptor"]["digest"], json!(digest));
        }
    }

    // store=false: the push happens, no name is tagged in the store.
    kiln()
        .root(&root)
        .args(["build", "-q", "-o"])
        .arg(format!(
            "type=image,name={host}/kiln/unstored:1,push=true,store=false"
        ))
        .arg(context.path())
        .run()
        .success();
    assert_eq!(tags(&host, "kiln/unstored"), vec!["1".to_string()]);
    let unstored = kiln()
        .root(&root)
        .args(["inspect", &format!("{host}/kiln/unstored:1")])
        .run();
    assert!(
        !unstored.status.success() && unstored.stderr_str().contains("no such image"),
        "{}",
        unstored.stderr_str()
    );

    // A name with a digest must be the image's: without a push, the image in the store (its
    // layers uncompressed, so another digest than the gzip push's).
    let stored_metadata = store.path().join("stored.json");
    kiln()
        .root(&root)
        .args(["build", "-q", "--metadata-file"])
        .arg(&stored_metadata)
        .arg("-o")
        .arg(format!("type=image,name={host}/kiln/stored:1"))
        .arg(context.path())
        .run()
        .success();
    let stored = read_json(&stored_metadata)["containerimage.digest"]
        .as_str()
        .expect("digest")
        .to_string();
    assert_ne!(stored, digest, "the push compressed the layers");
    let digest = stored;
    let other = format!("sha256:{}", "0".repeat(64));
    let stderr = kiln()
        .root(&root)
        .args(["build", "-q", "-o"])
        .arg(format!("type=image,name={host}/kiln/wrong@{other}"))
        .arg(context.path())
        .run()
        .failure()
        .stderr_str();
    assert!(
        stderr.contains(&format!(
            "the name {host}/kiln/wrong@{other} names another digest than the image's {digest}"
        )),
        "{stderr}"
    );
}

#[test]
fn annotations_reach_the_pushed_manifest_the_store_and_the_oci_layout() {
    let Some((context, store)) = setup() else {
        return;
    };
    let Some(skopeo) = support::tool("skopeo") else {
        return;
    };
    let Some(registry) = TestRegistry::start(Auth::Anonymous) else {
        return;
    };
    let host = registry.host();
    let root = store.path().join("root");
    let metadata = store.path().join("metadata.json");
    let layout = store.path().join("layout.tar");
    let name = format!("{host}/kiln/annotated:1");
    let output = kiln()
        .root(&root)
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            &name,
            "--push",
            "--annotation",
            "org.example.flag=from-flag",
            "--annotation",
            "manifest-descriptor:org.example.descriptor=d",
            "--annotation",
            // A single-platform image does not take a platform's annotation (BuildKit drops
            // it; kiln says so).
            "manifest[linux/arm64]:org.example.arm=dropped",
            "--metadata-file",
        ])
        .arg(&metadata)
        .arg("-o")
        .arg(format!(
            "type=oci,dest={},annotation.org.example.option=from-option",
            layout.display()
        ))
        .arg(context.path())
        .run()
        .success();
    assert!(
        output
            .stderr_str()
            .contains("these are not written: manifest[linux/arm64]:org.example.arm"),
        "{}",
        output.stderr_str()
    );
    let manifest = raw(&skopeo, &name);
    assert_eq!(
        manifest["annotations"],
        json!({
            "org.example.flag": "from-flag",
            "org.example.option": "from-option",
        })
    );
    let metadata = read_json(&metadata);
    let descriptor = &metadata["containerimage.descriptor"];
    assert_eq!(
        descriptor["annotations"],
        json!({"org.example.descriptor": "d"})
    );
    assert_eq!(descriptor["platform"]["os"], json!("linux"));
    // The store's tag names the manifest as pushed (gzip layers: the push moved the tag).
    let inspected = kiln()
        .root(&root)
        .args(["inspect", &name])
        .run()
        .success()
        .stdout_json();
    assert_eq!(inspected[0]["Descriptor"]["digest"], descriptor["digest"]);
    assert_eq!(metadata["containerimage.digest"], descriptor["digest"]);

    // The OCI layout's index.json lists the manifest with the descriptor's annotation.
    let unpacked = tempfile::tempdir().expect("temp dir");
    let mut archive = tar::Archive::new(fs::File::open(&layout).expect("layout tar"));
    archive.unpack(unpacked.path()).expect("unpack the layout");
    let index = read_json(&unpacked.path().join("index.json"));
    let listed = &index["manifests"][0];
    assert_eq!(listed["digest"], descriptor["digest"]);
    assert_eq!(
        listed["annotations"]["org.example.descriptor"],
        json!("d"),
        "{index}"
    );
}

#[test]
fn multi_platform_annotations_reach_the_index_and_its_descriptors() {
    let Some((context, store)) = setup() else {
        return;
    };
    let Some(skopeo) = support::tool("skopeo") else {
        return;
    };
    let Some(registry) = TestRegistry::start(Auth::Anonymous) else {
        return;
    };
    let host = registry.host();
    let metadata = store.path().join("metadata.json");
    let name = format!("{host}/kiln/multi:1");
    kiln()
        .root(store.path().join("root"))
        .args([
            "build",
            "-q",
            "--platform",
            "linux/amd64,linux/arm64",
            "--annotation",
            "index,manifest:org.example.both=b",
            "--annotation",
            "manifest[linux/arm64]:org.example.arm=a",
            "--metadata-file",
        ])
        .arg(&metadata)
        .arg("-o")
        .arg(format!(
            "type=image,name={name},push=true,annotation-index-descriptor.org.example.idx=i,\
             annotation-manifest-descriptor[linux/amd64].org.example.amd=m"
        ))
        .arg("-o")
        .arg(format!(
            "type=image,name={host}/kiln/multi-digest,push=true,push-by-digest=true"
        ))
        .arg(context.path())
        .run()
        .success();
    let index = raw(&skopeo, &name);
    // The same index, pushed by its digest to another repository, with no tag.
    let digest = read_json(&metadata)["containerimage.digest"].clone();
    let by_digest = raw(
        &skopeo,
        &format!(
            "{host}/kiln/multi-digest@{}",
            digest.as_str().expect("digest")
        ),
    );
    assert_eq!(by_digest, index);
    assert_eq!(tags(&host, "kiln/multi-digest"), Vec::<String>::new());
    assert_eq!(index["annotations"], json!({"org.example.both": "b"}));
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 2);
    for entry in manifests {
        let arch = entry["platform"]["architecture"].as_str().expect("arch");
        let manifest = raw(
            &skopeo,
            &format!(
                "{host}/kiln/multi@{}",
                entry["digest"].as_str().expect("digest")
            ),
        );
        let (descriptor, own) = match arch {
            "amd64" => (
                json!({"org.example.amd": "m"}),
                json!({"org.example.both": "b"}),
            ),
            _ => (
                Value::Null,
                json!({"org.example.both": "b", "org.example.arm": "a"}),
            ),
        };
        assert_eq!(entry["annotations"], descriptor, "{arch}");
        assert_eq!(manifest["annotations"], own, "{arch}");
    }
    let metadata = read_json(&metadata);
    let descriptor = &metadata["containerimage.descriptor"];
    assert_eq!(
        descriptor["mediaType"],
        json!("application/vnd.oci.image.index.v1+json")
    );
    assert_eq!(descriptor["annotations"], json!({"org.example.idx": "i"}));
    assert_eq!(metadata["containerimage.digest"], descriptor["digest"]);
    // An index has no config, as in BuildKit's metadata.
    assert_eq!(metadata.get("containerimage.config.digest"), None);
}

#[test]
fn annotations_the_image_cannot_take_are_refused_before_the_build() {
    let Some((context, store)) = setup() else {
        return;
    };
    let refused = |args: &[&str]| {
        kiln()
            .root(store.path().join("root"))
            .arg("build")
            .args(args)
            .arg(context.path())
            .run()
            .failure()
            .stderr_str()
    };
    let stderr = refused(&["--annotation", "index:org.example.i=1"]);
    assert!(
        stderr.contains("index annotations not supported for single platform export"),
        "{stderr}"
    );
    let stderr = refused(&[
        "--platform",
        "linux/amd64,linux/arm64",
        "--annotation",
        "manifest[linux/s390x]:k=v",
    ]);
    assert!(
        stderr.contains("no platform linux/s390x found in source"),
        "{stderr}"
    );
    let stderr = refused(&["--annotation", "bogus:k=v"]);
    assert!(
        stderr.contains("unknown annotation type \"bogus\""),
        "{stderr}"
    );
    let stderr = refused(&["-o", "type=image,name=x,colour=red"]);
    assert!(
        stderr.contains("unknown option \"colour=red\" for type=image"),
        "{stderr}"
    );
    let stderr = refused(&["-o", "type=image,push=true"]);
    assert!(stderr.contains("a push needs a name"), "{stderr}");
    // Docker's media types have no index or descriptor annotations (BuildKit's message), from
    // the export's own options or from --annotation.
    let stderr = refused(&[
        "-o",
        "type=image,name=x,oci-mediatypes=false,annotation-manifest-descriptor.k=v",
    ]);
    assert!(
        stderr.contains("cannot export annotations with \"oci-mediatypes=false\""),
        "{stderr}"
    );
    let stderr = refused(&[
        "--platform",
        "linux/amd64,linux/arm64",
        "--annotation",
        "index:org.example.i=1",
        "-o",
        "type=image,name=x,oci-mediatypes=false",
    ]);
    assert!(
        stderr.contains(
            "cannot export annotations with \"oci-mediatypes=false\": --annotation \
             index:org.example.i"
        ),
        "{stderr}"
    );
    // Nothing was built.
    let listed = kiln()
        .root(store.path().join("root"))
        .args(["images", "-q"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(listed, "");
}

#[test]
fn metadata_file_reports_the_cache_export_and_load_is_the_store() {
    let Some((context, store)) = setup() else {
        return;
    };
    let cache = store.path().join("cache");
    let metadata = store.path().join("metadata.json");
    let root = store.path().join("root");
    kiln()
        .root(&root)
        .args(["build", "-q", "--load", "-t", "loaded:1", "--metadata-file"])
        .arg(&metadata)
        .arg("--cache-to")
        .arg(format!("type=local,dest={}", cache.display()))
        .arg(context.path())
        .run()
        .success();
    let metadata = read_json(&metadata);
    // BuildKit's `cache.manifest` is a JSON string (buildx cannot decode it further).
    let cache_manifest: Value = serde_json::from_str(
        metadata["cache.manifest"]
            .as_str()
            .expect("cache.manifest is a string"),
    )
    .expect("a JSON descriptor");
    let index = read_json(&cache.join("index.json"));
    let listed = &index["manifests"][0];
    assert_eq!(cache_manifest["digest"], listed["digest"]);
    assert_eq!(cache_manifest["size"], listed["size"]);
    assert_eq!(cache_manifest["mediaType"], listed["mediaType"]);
    // --load: the image is in the store under its tag.
    let inspected = kiln()
        .root(&root)
        .args(["inspect", "loaded:1"])
        .run()
        .success()
        .stdout_json();
    assert_eq!(
        inspected[0]["Descriptor"]["digest"],
        metadata["containerimage.digest"]
    );
    assert_eq!(metadata["image.name"], json!("loaded:1"));
}

/// The annotations of an OCI layout tar: the first descriptor's in `index.json` (kiln's own
/// and BuildKit's `created` left out) and its document's, and for an index, each of its
/// manifests' descriptor and document annotations by platform.
fn layout_annotations(tar_path: &Path) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    tar::Archive::new(fs::File::open(tar_path).expect("tar"))
        .unpack(dir.path())
        .expect("unpack");
    let blob = |digest: &Value| {
        let hex = digest
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:");
        read_json(&dir.path().join("blobs/sha256").join(hex))
    };
    let own = |annotations: &Value| {
        let mut kept = annotations.clone();
        if let Some(map) = kept.as_object_mut() {
            map.retain(|key, _| key.starts_with("org.example."));
        }
        kept
    };
    let index = read_json(&dir.path().join("index.json"));
    let top = &index["manifests"][0];
    let document = blob(&top["digest"]);
    let mut shown = json!({
        "descriptor": own(&top["annotations"]),
        "document": document["annotations"],
    });
    if let Some(children) = document["manifests"].as_array() {
        for child in children {
            let platform = format!(
                "{}/{}",
                child["platform"]["os"].as_str().unwrap_or(""),
                child["platform"]["architecture"].as_str().unwrap_or("")
            );
            shown[platform] = json!({
                "descriptor": child["annotations"],
                "document": blob(&child["digest"])["annotations"],
            });
        }
    }
    shown
}

/// The metadata file's field names, its descriptor's field names, and the descriptor's
/// annotations (without BuildKit's OCI exporter's `created`, which kiln's store image has not).
fn metadata_fields(path: &Path) -> Value {
    let metadata = read_json(path);
    let keys = |value: &Value| {
        let mut keys: Vec<String> = value
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    let descriptor = &metadata["containerimage.descriptor"];
    let mut annotations = descriptor["annotations"].clone();
    if let Some(map) = annotations.as_object_mut() {
        map.remove("org.opencontainers.image.created");
    }
    json!({
        "fields": keys(&metadata),
        "descriptor": keys(descriptor),
        "annotations": annotations,
    })
}

/// The same annotation options through kiln and the peer BuildKit (`buildctl`, an OCI
/// layout), for one platform and for two: the same annotations in the manifests, the index
/// and on their descriptors, and metadata files with the same fields. The peer builds
/// `FROM scratch` + `COPY` for another architecture without an emulator.
#[test]
fn annotations_and_metadata_fields_match_the_peer_buildkit() {
    let Some((context, store)) = setup() else {
        return;
    };
    let Some(peer) = support::peer_buildctl() else {
        return;
    };
    let single = "annotation.org.example.m=1,annotation-manifest.org.example.n=2,\
                  annotation-manifest-descriptor.org.example.d=3,\
                  annotation-manifest[linux/arm64].org.example.dropped=4";
    let multi = "annotation.org.example.m=1,annotation-index.org.example.i=2,\
                 annotation-index-descriptor.org.example.id=3,\
                 annotation-manifest-descriptor.org.example.md=4,\
                 annotation-manifest[linux/arm64].org.example.arm=5,\
                 annotation-manifest-descriptor[linux/amd64].org.example.amd=6";
    for (case, platforms, options) in [
        ("single", None, single),
        ("multi", Some("linux/amd64,linux/arm64"), multi),
    ] {
        let peer_layout = store.path().join(format!("peer-{case}.tar"));
        let peer_metadata = store.path().join(format!("peer-{case}.json"));
        let mut command = peer.command();
        command
            .args(["build", "--frontend", "dockerfile.v0", "--local"])
            .arg(format!("context={}", context.path().display()))
            .arg("--local")
            .arg(format!("dockerfile={}", context.path().display()))
            .arg("--output")
            .arg(format!("type=oci,dest={},{options}", peer_layout.display()))
            .arg("--metadata-file")
            .arg(&peer_metadata);
        if let Some(platforms) = platforms {
            command.args(["--opt", &format!("platform={platforms}")]);
        }
        let status = command.output().expect("run buildctl");
        assert!(
            status.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let kiln_layout = store.path().join(format!("kiln-{case}.tar"));
        let kiln_metadata = store.path().join(format!("kiln-{case}.json"));
        let mut build = kiln()
            .root(store.path().join("root"))
            .args(["build", "-q", "--metadata-file"])
            .arg(&kiln_metadata)
            .arg("-o")
            .arg(format!("type=oci,dest={},{options}", kiln_layout.display()));
        if let Some(platforms) = platforms {
            build = build.args(["--platform", platforms]);
        }
        build.arg(context.path()).run().success();
        assert_eq!(
            layout_annotations(&kiln_layout),
            layout_annotations(&peer_layout),
            "{case}"
        );
        assert_eq!(
            metadata_fields(&kiln_metadata),
            metadata_fields(&peer_metadata),
            "{case}"
        );
    }
}

#[test]
fn archives_carry_the_names_their_export_gives() {
    let Some((context, store)) = setup() else {
        return;
    };
    let docker = store.path().join("docker.tar");
    let oci = store.path().join("oci.tar");
    kiln()
        .root(store.path().join("root"))
        .args(["build", "-q", "-t", "own:1", "-o"])
        .arg(format!(
            "type=docker,dest={},\"name=a:1,b:2\"",
            docker.display()
        ))
        .arg("-o")
        .arg(format!(
            "type=oci,dest={},name=c:3,compression=zstd",
            oci.display()
        ))
        .arg(context.path())
        .run()
        .success();
    let read = |tar_path: &Path, file: &str| {
        let dir = tempfile::tempdir().expect("temp dir");
        tar::Archive::new(fs::File::open(tar_path).expect("tar"))
            .unpack(dir.path())
            .expect("unpack");
        read_json(&dir.path().join(file))
    };
    let manifest = read(&docker, "manifest.json");
    assert_eq!(manifest[0]["RepoTags"], json!(["a:1", "b:2"]));
    let index = read(&oci, "index.json");
    let names: Vec<&Value> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| &m["annotations"]["io.containerd.image.name"])
        .collect();
    assert_eq!(names, vec![&json!("docker.io/library/c:3")]);
    // The name and the compression together: the named manifest has zstd layers.
    let digest = index["manifests"][0]["digest"].as_str().expect("digest");
    let manifest = read(
        &oci,
        &format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(!layers.is_empty());
    for layer in layers {
        assert_eq!(
            layer["mediaType"],
            json!("application/vnd.oci.image.layer.v1.tar+zstd"),
            "{manifest}"
        );
    }
}

/// `index.json` of the archive at `tar_path` and a reader of its blobs by digest.
fn archive_index(tar_path: &Path) -> (Value, impl Fn(&Value) -> Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    tar::Archive::new(fs::File::open(tar_path).expect("tar"))
        .unpack(dir.path())
        .expect("unpack");
    let index = read_json(&dir.path().join("index.json"));
    let blob = move |digest: &Value| {
        let hex = digest.as_str().expect("a digest");
        read_json(
            &dir.path()
                .join("blobs/sha256")
                .join(hex.trim_start_matches("sha256:")),
        )
    };
    (index, blob)
}

/// An archive export converts the image (gzip by default, zstd when asked), so it has another
/// digest than the store's; `--metadata-file` names the image as the archive holds it (its
/// `index.json` entry: the manifest, or a multi-platform image's index), as BuildKit's oci and
/// docker exporters report what they wrote, and of several exports the last one's.
#[test]
fn the_metadata_names_the_image_as_the_archive_holds_it() {
    let Some((context, store)) = setup() else {
        return;
    };
    let root = store.path().join("root");
    let layer_type =
        |compression: &str| format!("application/vnd.oci.image.layer.v1.tar+{compression}");
    let mut digests = Vec::new();
    for (case, options, platforms, layer_media_type) in [
        ("gzip", "type=oci", None, layer_type("gzip")),
        (
            "zstd",
            "type=oci,compression=zstd,name=archived:1",
            None,
            layer_type("zstd"),
        ),
        // Docker's format, in OCI media types as kiln builds its images.
        ("docker", "type=docker", None, layer_type("gzip")),
        (
            "multi",
            "type=oci,compression=zstd",
            Some("linux/amd64,linux/arm64"),
            layer_type("zstd"),
        ),
    ] {
        let archive = store.path().join(format!("{case}.tar"));
        let metadata_path = store.path().join(format!("{case}.json"));
        let mut build = kiln()
            .root(&root)
            .args(["build", "-q", "--metadata-file"])
            .arg(&metadata_path)
            .arg("-o")
            .arg(format!("{options},dest={}", archive.display()));
        if let Some(platforms) = platforms {
            build = build.args(["--platform", platforms, "--provenance=mode=min"]);
        }
        build.arg(context.path()).run().success();
        let metadata = read_json(&metadata_path);
        let (index, blob) = archive_index(&archive);
        let listed = &index["manifests"][0];
        let descriptor = &metadata["containerimage.descriptor"];
        assert_eq!(
            metadata["containerimage.digest"], listed["digest"],
            "{case}"
        );
        // The archive's `name=` is the metadata's `image.name` (BuildKit's oci exporter).
        if case == "zstd" {
            assert_eq!(metadata["image.name"], "archived:1", "{metadata}");
        }
        for key in ["mediaType", "digest", "size"] {
            assert_eq!(descriptor[key], listed[key], "{case}: {key}");
        }
        let written = blob(&listed["digest"]);
        let manifests = match platforms {
            None => {
                // The config is the store's (compression does not change it) and the image ID.
                assert_eq!(
                    metadata["containerimage.config.digest"], written["config"]["digest"],
                    "{case}"
                );
                assert_eq!(descriptor["platform"]["os"], json!("linux"), "{case}");
                vec![written]
            }
            Some(_) => {
                assert_eq!(
                    descriptor["mediaType"],
                    json!("application/vnd.oci.image.index.v1+json")
                );
                assert_eq!(metadata.get("containerimage.config.digest"), None);
                // Two images and their two attestation manifests, all in the archive.
                let children = written["manifests"].as_array().expect("manifests").clone();
                assert_eq!(children.len(), 4, "{written}");
                children
                    .iter()
                    .filter(|m| m["platform"]["os"] == json!("linux"))
                    .map(|m| blob(&m["digest"]))
                    .collect()
            }
        };
        assert!(!manifests.is_empty(), "{case}");
        for manifest in &manifests {
            assert_eq!(
                manifest["layers"][0]["mediaType"],
                json!(layer_media_type),
                "{case}"
            );
        }
        digests.push(listed["digest"].clone());
    }
    // Docker's archive holds the same manifest as the gzip OCI layout (the same layers and
    // media types); the others are other images, none the store's own (uncompressed layers).
    assert_eq!(digests[0], digests[2]);
    let stored_path = store.path().join("stored.json");
    kiln()
        .root(&root)
        .args(["build", "-q", "--metadata-file"])
        .arg(&stored_path)
        .arg(context.path())
        .run()
        .success();
    let stored = read_json(&stored_path)["containerimage.digest"].clone();
    let mut unique = vec![
        digests[0].to_string(),
        digests[1].to_string(),
        digests[3].to_string(),
        stored.to_string(),
    ];
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{digests:?} {stored}");

    // Several exports: the last one's image.
    let gzip = store.path().join("first-gzip.tar");
    let zstd = store.path().join("last-zstd.tar");
    let metadata_path = store.path().join("both.json");
    kiln()
        .root(&root)
        .args(["build", "-q", "--metadata-file"])
        .arg(&metadata_path)
        .arg("-o")
        .arg(format!("type=oci,dest={}", gzip.display()))
        .arg("-o")
        .arg(format!("type=oci,dest={},compression=zstd", zstd.display()))
        .arg(context.path())
        .run()
        .success();
    let metadata = read_json(&metadata_path);
    assert_eq!(metadata["containerimage.digest"], digests[1]);
    assert_eq!(archive_index(&zstd).0["manifests"][0]["digest"], digests[1]);
    assert_eq!(archive_index(&gzip).0["manifests"][0]["digest"], digests[0]);
}
