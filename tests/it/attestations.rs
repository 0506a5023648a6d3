//! `kiln build --provenance/--sbom/--attest`: the attestations BuildKit's image exporter
//! attaches (issue 16). Each platform's image gets an attestation manifest (platform
//! `unknown/unknown`, `vnd.docker.reference.type: attestation-manifest`) whose layers are in-toto
//! statements; the image becomes an index. The statements and the provenance predicate are
//! checked against the JSON schemas in `tests/schemas/` (see its README), the documents of the
//! index against the OCI schemas; secrets never appear; the attestations survive `save`/`load`,
//! a push (skopeo reads them back; the peer docker pulls and runs the image) and leave `run`,
//! `inspect` and the root filesystem exports alone, which carry them as files (`provenance.json`,
//! `sbom.spdx.json`, about the exported files) as BuildKit's local and tar exporters write
//! them. A Debian build with apt and pip packages
//! checks the SBOM's package list.

use crate::build::{Builder, builder};
use crate::oci_schema::{Schema, Schemas};
use crate::support;
use base64::Engine as _;
use jsonschema::Validator;
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
const SPDX: &str = "https://spdx.dev/Document";

/// The Dockerfile of the busybox tests: a secret mounted, a build argument, a file written.
const DOCKERFILE: &str = r#"FROM base
ARG VERSION
RUN --mount=type=secret,id=tok test -s /run/secrets/tok && echo "hi $VERSION" > /hello
CMD ["cat", "/hello"]
"#;

const SECRET: &str = "kiln-secret-value-f00dfeed";

/// A compiled schema of `tests/schemas/`.
fn schema(name: &str) -> Validator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/schemas")
        .join(name);
    let json: Value = serde_json::from_str(&fs::read_to_string(&path).expect("schema file"))
        .expect("schema JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&json)
        .unwrap_or_else(|err| panic!("{name}: {err}"))
}

fn valid(validator: &Validator, document: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: {}\n{document:#}",
        errors.join("; ")
    );
}

/// A blob of a store (or an OCI layout) by digest.
fn blob(root: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    fs::read(root.join("blobs/sha256").join(hex)).expect("blob")
}

fn blob_json(root: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(root, digest)).expect("JSON blob")
}

/// The `index.json` entry named `name` (`org.opencontainers.image.ref.name`).
fn entry(root: &Path, name: &str) -> Value {
    let index: Value =
        serde_json::from_str(&fs::read_to_string(root.join("index.json")).expect("index.json"))
            .expect("index JSON");
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("no entry {name} in {index:#}"))
        .clone()
}

/// One platform's image and its attestations, read from an image index.
struct Attested {
    image: Value,
    attestation: Value,
    manifest: Value,
    /// The statements, by predicate type.
    statements: Vec<(String, Value)>,
}

/// Checks that `index` lists one image and its attestation manifest as BuildKit writes them,
/// and reads the statements (`read` gives a blob by digest).
fn attested(index: &Value, read: &dyn Fn(&str) -> Vec<u8>) -> Attested {
    assert_eq!(index["mediaType"], OCI_INDEX, "{index:#}");
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(
        manifests.len(),
        2,
        "an image and its attestations: {index:#}"
    );
    let (image, attestation) = (manifests[0].clone(), manifests[1].clone());
    let host = kiln::oci::Platform::host();
    assert_eq!(image["platform"]["os"], "linux");
    assert_eq!(
        image["platform"]["architecture"],
        host.architecture.as_str()
    );
    assert_eq!(
        attestation["platform"],
        json!({"architecture": "unknown", "os": "unknown"})
    );
    assert_eq!(attestation["mediaType"], OCI_MANIFEST);
    assert_eq!(
        attestation["annotations"],
        json!({
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": image["digest"],
        })
    );
    let digest = attestation["digest"].as_str().expect("digest");
    let bytes = read(digest);
    assert_eq!(kiln::oci::Digest::of(&bytes).to_string(), digest);
    let manifest: Value = serde_json::from_slice(&bytes).expect("manifest JSON");
    // BuildKit v0.32's form: an OCI artifact whose subject is the image manifest.
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.docker.attestation.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(
        read(manifest["config"]["digest"].as_str().expect("config")),
        b"{}"
    );
    assert_eq!(manifest["subject"]["digest"], image["digest"]);
    assert_eq!(manifest["subject"]["size"], image["size"]);
    let mut statements = Vec::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        assert_eq!(layer["mediaType"], "application/vnd.in-toto+json");
        let predicate_type = layer["annotations"]["in-toto.io/predicate-type"]
            .as_str()
            .expect("predicate type annotation")
            .to_string();
        let statement: Value =
            serde_json::from_slice(&read(layer["digest"].as_str().expect("digest")))
                .expect("statement JSON");
        assert_eq!(statement["predicateType"], predicate_type.as_str());
        // Every statement is about the image manifest the index lists.
        let image_hex = image["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:");
        let subjects = statement["subject"].as_array().expect("subjects");
        assert!(!subjects.is_empty());
        for subject in subjects {
            assert_eq!(subject["digest"]["sha256"], image_hex, "{subject:#}");
        }
        statements.push((predicate_type, statement));
    }
    Attested {
        image,
        attestation,
        manifest,
        statements,
    }
}

fn statement<'a>(attested: &'a Attested, predicate_type: &str) -> &'a Value {
    attested
        .statements
        .iter()
        .find(|(t, _)| t == predicate_type)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no {predicate_type} statement"))
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found
}

/// Builds [`DOCKERFILE`] as `att:1` with `flags`, the secret and `VERSION=1.2`.
fn build_attested(b: &Builder, flags: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let ctx = b.context(&[("Dockerfile", DOCKERFILE)]);
    let secret = ctx.path().join("../kiln-att-secret");
    let secret = secret.with_file_name(format!(
        "kiln-att-secret-{}",
        ctx.path().file_name().unwrap().to_string_lossy()
    ));
    fs::write(&secret, SECRET).expect("secret file");
    let secret_flag = format!("id=tok,src={}", secret.display());
    let metadata = ctx.path().join("../").join(format!(
        "kiln-att-meta-{}.json",
        ctx.path().file_name().unwrap().to_string_lossy()
    ));
    let metadata_flag = metadata.display().to_string();
    let mut args = vec![
        "-t",
        "att:1",
        "--build-arg",
        "VERSION=1.2",
        "--secret",
        &secret_flag,
        "--metadata-file",
        &metadata_flag,
    ];
    args.extend(flags);
    b.build(ctx.path(), &args).ok();
    fs::remove_file(&secret).ok();
    (ctx, metadata)
}

#[test]
fn provenance_and_sbom_are_attestation_manifests_of_the_index() {
    let Some(b) = builder() else {
        return;
    };
    let (ctx, metadata) = build_attested(&b, &["--provenance=mode=max", "--sbom=true"]);
    let root = b.root();
    let tagged = entry(root, "att:1");
    assert_eq!(tagged["mediaType"], OCI_INDEX, "{tagged:#}");
    let index = blob_json(root, tagged["digest"].as_str().unwrap());
    let att = attested(&index, &|d| blob(root, d));
    assert_eq!(
        att.statements
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>(),
        [SLSA_V1, SPDX]
    );

    // The documents against their schemas.
    let statement_schema = schema("in-toto-statement-v1.schema.json");
    let provenance_schema = schema("slsa-provenance-v1.schema.json");
    for (predicate_type, statement) in &att.statements {
        valid(&statement_schema, statement, predicate_type);
        assert_eq!(
            statement["subject"],
            json!([{
                "name": format!("pkg:docker/att@1?platform=linux%2F{}", kiln::oci::Platform::host().architecture),
                "digest": {"sha256": att.image["digest"].as_str().unwrap().trim_start_matches("sha256:")},
            }])
        );
    }
    let provenance = &statement(&att, SLSA_V1)["predicate"];
    valid(&provenance_schema, provenance, "provenance");
    if let Some(oci) = Schemas::shared() {
        oci.check(Schema::Index, &index).expect("index schema");
        oci.check(Schema::Manifest, &att.manifest)
            .expect("attestation manifest schema");
        oci.check(Schema::Descriptor, &att.attestation)
            .expect("descriptor schema");
    }

    // BuildKit's mode=max provenance: the request with its build argument and secret id, the
    // steps, the Dockerfile, the image's layers.
    let definition = &provenance["buildDefinition"];
    assert_eq!(
        definition["buildType"],
        "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
    );
    let request = &definition["externalParameters"]["request"];
    assert_eq!(request["frontend"], "dockerfile.v0");
    assert_eq!(request["args"]["build-arg:VERSION"], "1.2");
    assert_eq!(request["secrets"], json!([{"id": "tok", "optional": true}]));
    assert_eq!(
        request["locals"],
        json!([{"name": "context"}, {"name": "dockerfile"}])
    );
    assert_eq!(
        definition["externalParameters"]["configSource"]["path"],
        "Dockerfile"
    );
    let steps = definition["internalParameters"]["buildConfig"]["llbDefinition"]
        .as_array()
        .expect("steps");
    assert!(steps.len() >= 2, "{steps:#?}");
    let metadata_of_run = &provenance["runDetails"]["metadata"];
    let source = &metadata_of_run["buildkit_metadata"]["source"]["infos"][0];
    assert_eq!(source["filename"], "Dockerfile");
    let data = base64::engine::general_purpose::STANDARD
        .decode(source["data"].as_str().expect("data"))
        .expect("base64");
    assert_eq!(data, DOCKERFILE.as_bytes());
    assert!(
        metadata_of_run["buildkit_metadata"]["layers"]
            .as_object()
            .is_some_and(|l| !l.is_empty())
    );
    assert_eq!(metadata_of_run["buildkit_completeness"]["request"], true);
    // A local context cannot be pinned.
    assert_eq!(
        metadata_of_run["buildkit_completeness"]["resolvedDependencies"],
        false
    );
    assert_eq!(provenance["runDetails"]["builder"]["id"], "");
    // The base image `base` was built here, not pulled: a material all the same.
    let dependencies = definition["resolvedDependencies"].as_array().expect("deps");
    assert!(
        dependencies.iter().any(|d| d["uri"]
            .as_str()
            .unwrap()
            .starts_with("pkg:docker/base@latest")),
        "{dependencies:#?}"
    );

    // The SBOM statement holds an SPDX document.
    assert_eq!(
        statement(&att, SPDX)["predicate"]["spdxVersion"],
        "SPDX-2.3"
    );

    // No secret anywhere: not in the store's blobs, not in the metadata file.
    assert_eq!(
        files_holding(&root.join("blobs"), SECRET.as_bytes()),
        Vec::<PathBuf>::new()
    );
    let metadata_text = fs::read_to_string(&metadata).expect("metadata file");
    assert!(!metadata_text.contains(SECRET));
    // buildx's `buildx.build.provenance`: the v0.2 form, min by default.
    let written: Value = serde_json::from_str(&metadata_text).expect("metadata JSON");
    assert_eq!(written["containerimage.digest"], tagged["digest"]);
    let recorded = &written["buildx.build.provenance"];
    assert_eq!(recorded["buildType"], "https://mobyproject.org/buildkit@v1");
    assert_eq!(
        recorded["invocation"]["configSource"]["entryPoint"],
        "Dockerfile"
    );
    assert!(recorded.get("buildConfig").is_none() && recorded.get("metadata").is_none());
    fs::remove_file(&metadata).ok();

    // run and inspect see the image, not its attestations.
    assert_eq!(b.run("att:1", "cat", &["/hello"]), "hi 1.2\n");
    let inspected = b.inspect("att:1");
    assert_eq!(
        inspected["Architecture"],
        kiln::oci::Platform::host().architecture.as_str()
    );
    assert_eq!(inspected["Os"], "linux");

    // The root filesystem exports and docker's archive write the one image.
    let out = tempfile::tempdir().expect("temp dir");
    let local = out.path().join("local");
    let docker_tar = out.path().join("image.tar");
    let ctx_arg = ctx.path().display().to_string();
    let exported = b
        .kiln(&[
            "build",
            "-q",
            "--provenance=true",
            "-o",
            &format!("type=local,dest={}", local.display()),
            "-o",
            &format!("type=docker,dest={}", docker_tar.display()),
            "--secret",
            "id=tok,env=KILN_ATT_SECRET",
            &ctx_arg,
        ])
        .env("KILN_ATT_SECRET", "x")
        .run()
        .success()
        .stderr_str();
    // The local export carries the provenance as a file, as BuildKit's does; nothing is noted.
    assert!(!exported.contains("note:"), "{exported}");
    assert!(local.join("provenance.json").is_file());
    assert_eq!(
        fs::read_to_string(local.join("hello")).expect("/hello at the root"),
        "hi \n"
    );
    assert!(!local.join("unknown_unknown").exists());
    assert!(docker_tar.is_file());
}

#[test]
fn min_provenance_leaves_out_build_arguments_secrets_and_steps() {
    let Some(b) = builder() else {
        return;
    };
    let (_ctx, metadata) = build_attested(&b, &["--attest", "type=provenance,mode=min"]);
    fs::remove_file(&metadata).ok();
    let root = b.root();
    let index = blob_json(root, entry(root, "att:1")["digest"].as_str().unwrap());
    let att = attested(&index, &|d| blob(root, d));
    assert_eq!(att.statements.len(), 1);
    let provenance = &statement(&att, SLSA_V1)["predicate"];
    valid(
        &schema("slsa-provenance-v1.schema.json"),
        provenance,
        "provenance",
    );
    let text = provenance.to_string();
    assert!(
        !text.contains("1.2") && !text.contains("build-arg:"),
        "{text}"
    );
    assert!(!text.contains("\"tok\""), "{text}");
    assert!(provenance["buildDefinition"]["internalParameters"]["buildConfig"].is_null());
    assert_eq!(
        provenance["runDetails"]["metadata"]["buildkit_completeness"]["request"],
        false
    );
    assert_eq!(
        provenance["runDetails"]["metadata"]["buildkit_metadata"],
        json!({})
    );

    // version=v0.2: SLSA v0.2's predicate.
    let (_ctx, metadata) = build_attested(&b, &["--provenance", "mode=max,version=v0.2"]);
    fs::remove_file(&metadata).ok();
    let index = blob_json(root, entry(root, "att:1")["digest"].as_str().unwrap());
    let att = attested(&index, &|d| blob(root, d));
    let v02 = statement(&att, "https://slsa.dev/provenance/v0.2");
    assert_eq!(
        v02["predicate"]["buildType"],
        "https://mobyproject.org/buildkit@v1"
    );
    assert_eq!(
        v02["predicate"]["invocation"]["parameters"]["args"]["build-arg:VERSION"],
        "1.2"
    );
}

#[test]
fn without_attestations_the_image_is_one_manifest() {
    let Some(b) = builder() else {
        return;
    };
    for flags in [&[][..], &["--provenance=false", "--sbom=false"][..]] {
        let (_ctx, metadata) = build_attested(&b, flags);
        let written: Value =
            serde_json::from_str(&fs::read_to_string(&metadata).expect("metadata")).unwrap();
        fs::remove_file(&metadata).ok();
        assert!(written.get("buildx.build.provenance").is_none());
        assert_eq!(entry(b.root(), "att:1")["mediaType"], OCI_MANIFEST);
    }
}

#[test]
fn bad_attestation_flags_fail_before_the_build() {
    let Some(b) = builder() else {
        return;
    };
    let ctx = b.context(&[("Dockerfile", "FROM base\n")]);
    let ctx_arg = ctx.path().display().to_string();
    for (flags, message) in [
        (
            vec!["--sbom=generator=docker/buildkit-syft-scanner"],
            "generator=docker/buildkit-syft-scanner is not supported: kiln scans the image itself",
        ),
        (
            vec!["--attest", "type=vex"],
            "unknown attestation type \"vex\"; use provenance or sbom",
        ),
        (
            vec!["--provenance", "mode=all"],
            "invalid provenance mode \"all\": use mode=min or mode=max",
        ),
    ] {
        let mut args = vec!["build"];
        args.extend(flags.iter().copied());
        args.push(&ctx_arg);
        let err = b.kiln(&args).run().failure().stderr_str();
        assert!(err.contains(message), "{flags:?}: {err}");
    }
}

#[test]
fn attestations_survive_save_and_load() {
    let Some(b) = builder() else {
        return;
    };
    let (_ctx, metadata) = build_attested(&b, &["--provenance=mode=max", "--sbom=true"]);
    fs::remove_file(&metadata).ok();
    let digest = entry(b.root(), "att:1")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let out = tempfile::tempdir().expect("temp dir");
    let archive = out.path().join("att.tar");
    let archive_arg = archive.display().to_string();
    b.kiln(&["save", "--format", "oci", "-o", &archive_arg, "att:1"])
        .run()
        .success();
    let fresh = tempfile::tempdir().expect("temp dir");
    support::kiln()
        .root(fresh.path())
        .args(["load", "-i", &archive_arg])
        .run()
        .success();
    let loaded = entry(fresh.path(), "att:1");
    assert_eq!(loaded["digest"].as_str().unwrap(), digest);
    let index = blob_json(fresh.path(), &digest);
    let att = attested(&index, &|d| blob(fresh.path(), d));
    assert_eq!(att.statements.len(), 2);
    let ran = support::kiln()
        .root(fresh.path())
        .args(["run", "--rm", "att:1"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(ran, "hi 1.2\n");
}

/// `skopeo inspect --raw` of `reference`'s manifest (or of the manifest `digest` in its
/// repository).
fn skopeo_raw(skopeo: &Path, reference: &str) -> Vec<u8> {
    let out = Command::new(skopeo)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo inspect {reference}: {out:?}");
    out.stdout
}

/// A blob of the registry `registry` (`host:port`) in `repository` (`GET /v2/…/blobs/…`).
fn registry_blob(registry: &str, repository: &str, digest: &str) -> Vec<u8> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(registry).expect("connect to the registry");
    write!(
        stream,
        "GET /v2/{repository}/blobs/{digest} HTTP/1.0\r\nHost: {registry}\r\n\r\n"
    )
    .expect("request");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("reply");
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&reply[..split]);
    assert!(head.contains(" 200 "), "GET blob {digest}: {head}");
    reply[split + 4..].to_vec()
}

/// The index `reference` names on the registry (`skopeo inspect --raw`), its image and
/// attestations: the attestation manifest through skopeo too, its blobs by `GET`.
fn registry_attested(skopeo: &Path, reference: &str) -> (Value, Attested) {
    let index: Value = serde_json::from_slice(&skopeo_raw(skopeo, reference)).expect("index JSON");
    let att = attested(&index, &|d| registry_read(skopeo, reference, &index, d));
    (index, att)
}

/// A document of the index `index` that `reference` names on the registry: a manifest it lists
/// through skopeo, anything else as a blob.
fn registry_read(skopeo: &Path, reference: &str, index: &Value, digest: &str) -> Vec<u8> {
    let (name, _) = reference.rsplit_once(':').expect("a tag");
    let (registry, repository) = name.split_once('/').expect("a registry");
    let listed = index["manifests"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["digest"] == digest));
    if listed {
        skopeo_raw(skopeo, &format!("{name}@{digest}"))
    } else {
        registry_blob(registry, repository, digest)
    }
}

/// Checks that `exported` (the attested index an export wrote, its documents by `read`) is the
/// store's `att:1` (under `root`) with the image in `layer_media_type`: its attestation
/// manifest and statements are about the exported image manifest (not the store's), and each
/// statement is the stored one byte for byte but for that digest.
fn attests_the_exported_image(
    root: &Path,
    exported: &Attested,
    read: &dyn Fn(&str) -> Vec<u8>,
    layer_media_type: &str,
) {
    let stored_index = blob_json(root, entry(root, "att:1")["digest"].as_str().unwrap());
    let stored = attested(&stored_index, &|d| blob(root, d));
    let (old, new) = (
        stored.image["digest"].as_str().unwrap(),
        exported.image["digest"].as_str().unwrap(),
    );
    assert_ne!(old, new, "the export converted the image");
    let image: Value = serde_json::from_slice(&read(new)).expect("image manifest");
    for layer in image["layers"].as_array().expect("layers") {
        assert_eq!(layer["mediaType"], layer_media_type, "{image:#}");
    }
    assert_eq!(exported.manifest["subject"]["digest"], new);
    assert_eq!(
        exported.manifest["subject"]["mediaType"],
        exported.image["mediaType"]
    );
    assert_eq!(
        exported.attestation["annotations"]["vnd.docker.reference.digest"],
        new
    );
    let layers = |manifest: &Value| -> Vec<String> {
        manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().expect("digest").to_string())
            .collect()
    };
    let (stored_layers, exported_layers) = (layers(&stored.manifest), layers(&exported.manifest));
    assert_eq!(stored_layers.len(), 2, "provenance and SBOM");
    assert_eq!(stored_layers.len(), exported_layers.len());
    let (old_hex, new_hex) = (&old["sha256:".len()..], &new["sha256:".len()..]);
    for (stored_layer, exported_layer) in stored_layers.iter().zip(&exported_layers) {
        let stored_text = String::from_utf8(blob(root, stored_layer)).expect("UTF-8 statement");
        assert!(stored_text.contains(old_hex));
        let exported_text = String::from_utf8(read(exported_layer)).expect("UTF-8 statement");
        assert_eq!(exported_text, stored_text.replace(old_hex, new_hex));
    }
}

#[test]
fn pushed_attestations_are_in_the_registry_and_docker_runs_the_image() {
    let Some(b) = builder() else {
        return;
    };
    let Some(registry) = support::peer_registry() else {
        return;
    };
    let Some(skopeo) = support::tool("skopeo") else {
        return;
    };
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let pushed = format!("{registry}/kiln-attest/busybox:t{unique}");
    let ctx = b.context(&[("Dockerfile", "FROM base\nRUN echo pushed > /hello\n")]);
    b.build(
        ctx.path(),
        &[
            "-t",
            &pushed,
            "--provenance=mode=max",
            "--sbom=true",
            "--push",
        ],
    )
    .ok();
    let (_, att) = registry_attested(&skopeo, &pushed);
    assert_eq!(att.statements.len(), 2);
    let provenance = statement(&att, SLSA_V1);
    valid(
        &schema("in-toto-statement-v1.schema.json"),
        provenance,
        "statement",
    );
    // A pull keeps the attestations of the platform it fetched, so the index pushes whole again.
    let fresh = tempfile::tempdir().expect("temp dir");
    let fresh_kiln = |args: &[&str]| support::kiln().root(fresh.path()).args(args).run();
    fresh_kiln(&["pull", &pushed]).success();
    let index = blob_json(
        fresh.path(),
        entry(fresh.path(), &pushed)["digest"].as_str().unwrap(),
    );
    let pulled = attested(&index, &|d| blob(fresh.path(), d));
    assert_eq!(pulled.statements, att.statements);
    let again = format!("{pushed}-again");
    fresh_kiln(&["tag", &pushed, &again]).success();
    fresh_kiln(&["push", &again]).success();
    assert_eq!(
        skopeo_raw(&skopeo, &again),
        skopeo_raw(&skopeo, &pushed),
        "the same index"
    );
    assert_eq!(
        fresh_kiln(&["run", "--rm", &pushed, "cat", "/hello"])
            .success()
            .stdout_str(),
        "pushed\n"
    );
    let Some(docker) = support::peer_docker() else {
        return;
    };
    docker.run(&["pull", &pushed]);
    let ran = docker.run(&["run", "--rm", "--network", "none", &pushed, "cat", "/hello"]);
    docker.run(&["rmi", &pushed]);
    assert_eq!(ran, "pushed\n");
}

/// A push in zstd converts the image (another manifest digest): the attestations pushed with
/// it are about the manifest pushed, as BuildKit's exporter writes them after compressing, and
/// the metadata file names the index pushed.
#[test]
fn a_zstd_push_attests_the_pushed_image_manifest() {
    let Some(b) = builder() else {
        return;
    };
    let Some(registry) = support::peer_registry() else {
        return;
    };
    let Some(skopeo) = support::tool("skopeo") else {
        return;
    };
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let pushed = format!("{registry}/kiln-attest/zstd:t{unique}");
    let output = format!("type=registry,name={pushed},compression=zstd");
    let (_ctx, metadata) = build_attested(
        &b,
        &["--provenance=mode=max", "--sbom=true", "--output", &output],
    );
    let raw_index = skopeo_raw(&skopeo, &pushed);
    let (index, att) = registry_attested(&skopeo, &pushed);
    let read = |d: &str| registry_read(&skopeo, &pushed, &index, d);
    attests_the_exported_image(
        b.root(),
        &att,
        &read,
        "application/vnd.oci.image.layer.v1.tar+zstd",
    );
    let written: Value =
        serde_json::from_slice(&fs::read(&metadata).expect("metadata file")).expect("JSON");
    fs::remove_file(&metadata).ok();
    let pushed_digest = kiln::oci::Digest::of(&raw_index).to_string();
    assert_eq!(written["containerimage.digest"], pushed_digest.as_str());
    assert_eq!(
        written["containerimage.descriptor"]["digest"],
        pushed_digest.as_str()
    );
    assert_eq!(
        written["buildx.build.provenance"]["buildType"],
        "https://mobyproject.org/buildkit@v1"
    );
}

/// An OCI archive export (gzip, the default) holds the attestations of the image it holds.
#[test]
fn an_oci_archive_attests_the_archived_image_manifest() {
    let Some(b) = builder() else {
        return;
    };
    let out = tempfile::tempdir().expect("temp dir");
    let archive = out.path().join("att.tar");
    let output = format!("type=oci,dest={}", archive.display());
    let (_ctx, metadata) = build_attested(
        &b,
        &["--provenance=mode=max", "--sbom=true", "--output", &output],
    );
    fs::remove_file(&metadata).ok();
    let layout = out.path().join("layout");
    tar::Archive::new(fs::File::open(&archive).expect("archive"))
        .unpack(&layout)
        .expect("unpack");
    let listed = entry(&layout, "att:1");
    let index = blob_json(&layout, listed["digest"].as_str().unwrap());
    let att = attested(&index, &|d| blob(&layout, d));
    attests_the_exported_image(
        b.root(),
        &att,
        &|d| blob(&layout, d),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    // Only the exported attestation manifest is in the archive, not the store's.
    let stored_index = blob_json(
        b.root(),
        entry(b.root(), "att:1")["digest"].as_str().unwrap(),
    );
    let stored_attestation = stored_index["manifests"][1]["digest"].as_str().unwrap();
    assert!(
        !layout
            .join("blobs/sha256")
            .join(stored_attestation.trim_start_matches("sha256:"))
            .exists()
    );
}

/// The Debian base: `mmdebstrap --variant=minbase --format=tar bookworm`, made once and kept
/// under /var/tmp by a digest of the command (as bench/run-mounts.sh keeps its own).
fn debian_rootfs() -> Option<PathBuf> {
    let command = "mmdebstrap --variant=minbase --format=tar bookworm";
    let digest = kiln::oci::Digest::of(command.as_bytes());
    let key = &digest.hex()[..16];
    let dir = PathBuf::from("/var/tmp/kiln-test-rootfs");
    let tar = dir.join(format!("{key}.tar"));
    if tar.is_file() {
        return Some(tar);
    }
    support::tool("mmdebstrap")?;
    fs::create_dir_all(&dir).expect("cache dir");
    let partial = dir.join(format!("{key}.tar.{}", std::process::id()));
    let out = Command::new("mmdebstrap")
        .args(["--variant=minbase", "--format=tar", "bookworm"])
        .arg(&partial)
        .output()
        .expect("spawn mmdebstrap");
    if !out.status.success() {
        fs::remove_file(&partial).ok();
        let reason = format!(
            "a Debian mirror for mmdebstrap ({})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        );
        return support::require(&reason, None);
    }
    fs::rename(&partial, &tar).expect("keep the rootfs tar");
    Some(tar)
}

const DEBIAN_DOCKERFILE: &str = r#"FROM debian-minbase
RUN apt-get update && apt-get install -y --no-install-recommends jq python3-pip ca-certificates
RUN --mount=type=bind,source=host-ca.crt,target=/etc/host-ca.crt \
    PIP_CERT=/etc/host-ca.crt pip install --break-system-packages --no-cache-dir six==1.16.0
"#;

#[test]
fn debian_image_with_apt_and_pip_packages_has_an_sbom_listing_them() {
    if support::root().is_none() {
        return;
    }
    let Some(registry) = support::peer_registry() else {
        return;
    };
    let Some(skopeo) = support::tool("skopeo") else {
        return;
    };
    let Some(rootfs) = debian_rootfs() else {
        return;
    };
    let store = tempfile::tempdir().expect("temp dir");
    let kiln = |args: &[&str]| support::kiln().root(store.path()).args(args);
    kiln(&[
        "import",
        "-m",
        "mmdebstrap --variant=minbase bookworm",
        &rootfs.display().to_string(),
        "debian-minbase",
    ])
    .run()
    .success();
    let ctx = support::context(&[("Dockerfile", DEBIAN_DOCKERFILE)]);
    let ca = std::env::var("SSL_CERT_FILE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".to_string());
    fs::copy(&ca, ctx.path().join("host-ca.crt")).expect("copy the CA bundle");
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let pushed = format!("{registry}/kiln-attest/debian:t{unique}");
    kiln(&[
        "build",
        "-q",
        "-t",
        &pushed,
        "--provenance=mode=max",
        "--sbom=true",
        "--push",
        &ctx.path().display().to_string(),
    ])
    .run()
    .success();
    let (_, att) = registry_attested(&skopeo, &pushed);
    let provenance = statement(&att, SLSA_V1);
    valid(
        &schema("slsa-provenance-v1.schema.json"),
        &provenance["predicate"],
        "provenance",
    );
    let sbom = statement(&att, SPDX);
    valid(&schema("in-toto-statement-v1.schema.json"), sbom, "SBOM");
    let packages = sbom["predicate"]["packages"].as_array().expect("packages");
    let version_of = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["versionInfo"].as_str())
            .map(str::to_string)
    };
    // dpkg's jq, python3-pip and a package of minbase; pip's six at the version installed.
    for deb in ["jq", "python3-pip", "dpkg"] {
        assert!(
            version_of(deb).is_some_and(|v| !v.is_empty()),
            "{deb} is not in the SBOM: {packages:#?}"
        );
    }
    assert_eq!(
        version_of("six").as_deref(),
        Some("1.16.0"),
        "{packages:#?}"
    );
}

/// The same Dockerfile built by the peer BuildKit (v0.32, `attest:provenance=mode=max`, an OCI
/// archive) and by kiln: the index entries, the attestation manifest and the provenance agree
/// where they do not depend on the builder (kiln's steps are its own ops, not LLB); kiln loads
/// BuildKit's attested image, runs it and pushes it whole.
#[test]
fn attestations_match_the_peer_buildkits() {
    let Some(b) = builder() else {
        return;
    };
    let Some(registry) = support::peer_registry() else {
        return;
    };
    let Some(buildctl) = support::peer_buildctl() else {
        return;
    };
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let base = format!("{registry}/kiln-attest/base:t{unique}");
    b.kiln(&["tag", "base", &base]).run().success();
    b.kiln(&["push", &base]).run().success();
    let dockerfile = DOCKERFILE.replace("FROM base", &format!("FROM {base}"));
    let ctx = b.context(&[("Dockerfile", &dockerfile)]);
    let work = tempfile::tempdir().expect("temp dir");
    let secret = work.path().join("secret");
    fs::write(&secret, SECRET).expect("secret");
    let archive = work.path().join("peer.tar");
    let ctx_dir = ctx.path().display().to_string();
    let out = buildctl
        .command()
        .args(["build", "--frontend", "dockerfile.v0"])
        .args(["--local", &format!("context={ctx_dir}")])
        .args(["--local", &format!("dockerfile={ctx_dir}")])
        .args(["--opt", "filename=Dockerfile"])
        .args(["--opt", "build-arg:VERSION=1.2"])
        .args(["--opt", "attest:provenance=mode=max"])
        .args(["--secret", &format!("id=tok,src={}", secret.display())])
        .args([
            "--output",
            &format!(
                "type=oci,dest={},name=kiln-attest/peer:1",
                archive.display()
            ),
        ])
        .output()
        .expect("buildctl");
    assert!(
        out.status.success(),
        "buildctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive_arg = archive.display().to_string();
    b.kiln(&["load", "-i", &archive_arg]).run().success();
    let root = b.root();
    let peer_index = blob_json(
        root,
        entry(root, "kiln-attest/peer:1")["digest"]
            .as_str()
            .unwrap(),
    );
    let peer = attested(&peer_index, &|d| blob(root, d));
    let secret_flag = format!("id=tok,src={}", secret.display());
    b.build(
        ctx.path(),
        &[
            "-t",
            "kiln-attest/kiln:1",
            "--build-arg",
            "VERSION=1.2",
            "--secret",
            &secret_flag,
            "--provenance=mode=max",
        ],
    )
    .ok();
    let kiln_index = blob_json(
        root,
        entry(root, "kiln-attest/kiln:1")["digest"]
            .as_str()
            .unwrap(),
    );
    let ours = attested(&kiln_index, &|d| blob(root, d));
    assert_eq!(
        ours.attestation["annotations"]["vnd.docker.reference.type"],
        peer.attestation["annotations"]["vnd.docker.reference.type"]
    );
    assert_eq!(ours.manifest["config"], peer.manifest["config"]);
    assert_eq!(ours.manifest["artifactType"], peer.manifest["artifactType"]);
    let (peer_statement, our_statement) = (statement(&peer, SLSA_V1), statement(&ours, SLSA_V1));
    assert_eq!(our_statement["_type"], peer_statement["_type"]);
    let name = |s: &Value| s["subject"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(
        name(our_statement).replace("kiln-attest/kiln@1", "X"),
        name(peer_statement).replace("kiln-attest/peer@1", "X")
    );
    let (p, k) = (&peer_statement["predicate"], &our_statement["predicate"]);
    for pointer in [
        "/buildDefinition/buildType",
        "/buildDefinition/externalParameters/configSource",
        "/buildDefinition/externalParameters/request/frontend",
        "/buildDefinition/externalParameters/request/args",
        "/buildDefinition/externalParameters/request/secrets",
        "/buildDefinition/externalParameters/request/locals",
        "/buildDefinition/internalParameters/builderPlatform",
        "/buildDefinition/resolvedDependencies",
        "/runDetails/builder",
        "/runDetails/metadata/buildkit_completeness",
        "/runDetails/metadata/buildkit_metadata/source/infos/0/filename",
        "/runDetails/metadata/buildkit_metadata/source/infos/0/language",
        "/runDetails/metadata/buildkit_metadata/source/infos/0/data",
        // The RUN: the last step of both.
        "/runDetails/metadata/buildkit_metadata/source/locations/step1",
    ] {
        assert_eq!(k.pointer(pointer), p.pointer(pointer), "{pointer}");
    }
    // Each step's layer chain, by the same step ids.
    let steps_with_layers = |p: &Value| -> Vec<String> {
        p["runDetails"]["metadata"]["buildkit_metadata"]["layers"]
            .as_object()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(steps_with_layers(k), steps_with_layers(p));
    for key in ["invocationId", "startedOn", "finishedOn"] {
        assert!(k["runDetails"]["metadata"][key].is_string(), "{key}");
        assert!(p["runDetails"]["metadata"][key].is_string(), "{key}");
    }
    // kiln runs BuildKit's attested image and pushes it whole.
    assert_eq!(b.run("kiln-attest/peer:1", "cat", &["/hello"]), "hi 1.2\n");
    let pushed = format!("{registry}/kiln-attest/peer:t{unique}");
    b.kiln(&["tag", "kiln-attest/peer:1", &pushed])
        .run()
        .success();
    b.kiln(&["push", &pushed]).run().success();
    if let Some(skopeo) = support::tool("skopeo") {
        let (served, _) = registry_attested(&skopeo, &pushed);
        assert_eq!(served, peer_index);
    }
}

/// A multi-platform build gets one attestation manifest per platform's image, after the images
/// (BuildKit's order), each about its own image; `--metadata-file` has a provenance per platform.
#[test]
fn each_platform_image_has_its_own_attestations() {
    let Some(b) = builder() else {
        return;
    };
    let ctx = b.context(&[("Dockerfile", "FROM scratch\nCOPY busybox /bin/busybox\n")]);
    let metadata = ctx.path().join("metadata.json");
    let metadata_arg = metadata.display().to_string();
    b.build(
        ctx.path(),
        &[
            "-t",
            "multi:1",
            "--platform",
            "linux/amd64,linux/arm64",
            "--provenance=mode=min",
            "--metadata-file",
            &metadata_arg,
        ],
    )
    .ok();
    let root = b.root();
    let index = blob_json(root, entry(root, "multi:1")["digest"].as_str().unwrap());
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 4, "{index:#}");
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let (image, attestation) = (&manifests[i], &manifests[i + 2]);
        assert_eq!(image["platform"]["architecture"], *arch);
        assert_eq!(
            attestation["annotations"]["vnd.docker.reference.digest"],
            image["digest"]
        );
        let manifest = blob_json(root, attestation["digest"].as_str().unwrap());
        assert_eq!(manifest["subject"]["digest"], image["digest"]);
        let statement = blob_json(root, manifest["layers"][0]["digest"].as_str().unwrap());
        valid(
            &schema("in-toto-statement-v1.schema.json"),
            &statement,
            "statement",
        );
        assert_eq!(
            statement["subject"][0]["name"],
            format!("pkg:docker/multi@1?platform=linux%2F{arch}").as_str()
        );
        assert_eq!(
            statement["subject"][0]["digest"]["sha256"],
            image["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
        );
    }
    let written: Value =
        serde_json::from_str(&fs::read_to_string(&metadata).expect("metadata")).unwrap();
    for platform in ["linux/amd64", "linux/arm64"] {
        assert_eq!(
            written[format!("buildx.build.provenance/{platform}")]["buildType"],
            "https://mobyproject.org/buildkit@v1"
        );
    }
}

/// The files of an exported tree that are regular files, by path from its root (`a/b`).
fn regular_files(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir").flatten() {
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                let path = entry.path();
                let relative = path.strip_prefix(root).unwrap();
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The subjects of an attestation file's statement, by name, with their sha256.
fn subjects_of(statement: &Value) -> Vec<(String, String)> {
    statement["subject"]
        .as_array()
        .expect("subjects")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name").to_string(),
                s["digest"]["sha256"].as_str().expect("sha256").to_string(),
            )
        })
        .collect()
}

/// The positions of the statement's fields in its text: BuildKit writes `_type`,
/// `predicateType`, `subject`, `predicate`, indented by two spaces.
fn field_order(text: &str) -> Vec<usize> {
    [
        "\n  \"_type\"",
        "\n  \"predicateType\"",
        "\n  \"subject\"",
        "\n  \"predicate\"",
    ]
    .iter()
    .map(|field| text.find(field).unwrap_or(usize::MAX))
    .collect()
}

/// Checks an attestation file of a root filesystem export as BuildKit writes it: an in-toto
/// statement (schema-valid) of `predicate_type` whose subjects are the exported regular files
/// `files` with their content's digests (`root` holds them).
fn check_attestation_file(text: &str, predicate_type: &str, root: &Path, files: &[String]) {
    let statement: Value = serde_json::from_str(text).expect("statement JSON");
    valid(
        &schema("in-toto-statement-v1.schema.json"),
        &statement,
        predicate_type,
    );
    assert_eq!(statement["predicateType"], predicate_type);
    let order = field_order(text);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    let mut subjects = subjects_of(&statement);
    subjects.sort();
    let expected: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            (
                f.clone(),
                sha256_hex(&fs::read(root.join(f)).expect("file")),
            )
        })
        .collect();
    assert_eq!(subjects, expected);
    if predicate_type == SLSA_V1 {
        valid(
            &schema("slsa-provenance-v1.schema.json"),
            &statement["predicate"],
            "provenance",
        );
    } else {
        valid(
            &schema("spdx-2.3.schema.json"),
            &statement["predicate"],
            "SBOM",
        );
    }
}

/// `-o type=local` and `-o type=tar` with `--provenance=mode=max --sbom=true` write each
/// attestation as a file beside the root filesystem (`provenance.json`, `sbom.spdx.json`, mode
/// 0600), an in-toto statement about the exported regular files; `filename=` names the
/// provenance file (its base name), `inline-only=true` leaves it out; no secret is in them.
#[test]
fn local_and_tar_exports_write_the_attestation_files() {
    let Some(b) = builder() else {
        return;
    };
    let out = tempfile::tempdir().expect("temp dir");
    let local = out.path().join("local");
    let tar = out.path().join("rootfs.tar");
    let local_flag = format!("type=local,dest={}", local.display());
    let tar_flag = format!("type=tar,dest={}", tar.display());
    let (_ctx, metadata) = build_attested(
        &b,
        &[
            "--provenance=mode=max",
            "--sbom=true",
            "-o",
            &local_flag,
            "-o",
            &tar_flag,
        ],
    );
    fs::remove_file(&metadata).ok();
    use std::os::unix::fs::PermissionsExt as _;
    for name in ["provenance.json", "sbom.spdx.json"] {
        let mode = fs::symlink_metadata(local.join(name))
            .expect(name)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let image_files: Vec<String> = regular_files(&local)
        .into_iter()
        .filter(|f| f != "provenance.json" && f != "sbom.spdx.json")
        .collect();
    assert!(
        image_files.contains(&"hello".to_string()),
        "{image_files:?}"
    );
    for (name, predicate_type) in [("provenance.json", SLSA_V1), ("sbom.spdx.json", SPDX)] {
        let text = fs::read_to_string(local.join(name)).expect(name);
        check_attestation_file(&text, predicate_type, &local, &image_files);
        assert!(!text.contains(SECRET), "{name}");
    }
    let provenance: Value =
        serde_json::from_str(&fs::read_to_string(local.join("provenance.json")).unwrap()).unwrap();
    assert_eq!(
        provenance["predicate"]["buildDefinition"]["externalParameters"]["request"]["args"]["build-arg:VERSION"],
        "1.2"
    );

    // The tar holds the same files at its root, mode 0600.
    let unpacked = out.path().join("unpacked");
    fs::create_dir(&unpacked).unwrap();
    let mut archive = tar::Archive::new(fs::File::open(&tar).expect("tar"));
    let mut modes = std::collections::BTreeMap::new();
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        modes.insert(path, entry.header().mode().expect("mode"));
    }
    assert_eq!(modes.get("provenance.json"), Some(&0o600), "{modes:?}");
    assert_eq!(modes.get("sbom.spdx.json"), Some(&0o600), "{modes:?}");
    tar::Archive::new(fs::File::open(&tar).unwrap())
        .unpack(&unpacked)
        .expect("unpack");
    let tar_files: Vec<String> = regular_files(&unpacked)
        .into_iter()
        .filter(|f| f != "provenance.json" && f != "sbom.spdx.json")
        .collect();
    assert_eq!(tar_files, image_files);
    for (name, predicate_type) in [("provenance.json", SLSA_V1), ("sbom.spdx.json", SPDX)] {
        let text = fs::read_to_string(unpacked.join(name)).expect(name);
        check_attestation_file(&text, predicate_type, &unpacked, &tar_files);
    }

    // `filename=` names the provenance file by its base name; the SBOM keeps its name.
    let named = out.path().join("named");
    let named_flag = format!("type=local,dest={}", named.display());
    let (_ctx, metadata) = build_attested(
        &b,
        &[
            "--provenance=mode=min,filename=sub/prov.json",
            "-o",
            &named_flag,
        ],
    );
    fs::remove_file(&metadata).ok();
    assert!(named.join("prov.json").is_file());
    assert!(!named.join("provenance.json").exists());
    assert!(!named.join("sub").exists());
    assert!(!named.join("sbom.spdx.json").exists());

    // `inline-only=true`: image exports only.
    let inline = out.path().join("inline");
    let inline_flag = format!("type=local,dest={}", inline.display());
    let (_ctx, metadata) = build_attested(
        &b,
        &["--provenance=mode=max,inline-only=true", "-o", &inline_flag],
    );
    fs::remove_file(&metadata).ok();
    assert!(inline.join("hello").is_file());
    assert!(!inline.join("provenance.json").exists());
}

/// An exported root filesystem's own `provenance.json` (a symbolic link out of the export) is
/// replaced by the attestation file, never followed; files of the destination that were there
/// before are not subjects.
#[test]
fn an_attestation_file_replaces_a_symlink_of_its_name() {
    let Some(b) = builder() else {
        return;
    };
    let outside = tempfile::tempdir().expect("temp dir");
    let target = outside.path().join("victim");
    fs::write(&target, "untouched").unwrap();
    let dockerfile = format!(
        "FROM scratch\nCOPY a.txt /a.txt\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"ln\", \"-s\", \"{}\", \"/provenance.json\"]\n",
        target.display()
    );
    let ctx = b.context(&[("Dockerfile", &dockerfile), ("a.txt", "hi\n")]);
    let dest = outside.path().join("out");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("mine.txt"), "the user's").unwrap();
    let dest_flag = format!("type=local,dest={}", dest.display());
    b.build(ctx.path(), &["--provenance=mode=min", "-o", &dest_flag])
        .ok();
    assert_eq!(fs::read_to_string(&target).unwrap(), "untouched");
    let meta = fs::symlink_metadata(dest.join("provenance.json")).unwrap();
    assert!(meta.is_file());
    let statement: Value =
        serde_json::from_str(&fs::read_to_string(dest.join("provenance.json")).unwrap()).unwrap();
    let subjects = subjects_of(&statement);
    assert_eq!(subjects[0], ("a.txt".to_string(), sha256_hex(b"hi\n")));
    let names: Vec<&str> = subjects.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a.txt", "bin/busybox"]);
}

/// The peer BuildKit's local export of the same build writes the same attestation file names
/// with statements of the same shape and the same subjects (the SBOM is left out: the peer has
/// no scanner image).
#[test]
fn local_export_attestation_files_match_the_peer_buildkits() {
    let Some(b) = builder() else {
        return;
    };
    let Some(buildctl) = support::peer_buildctl() else {
        return;
    };
    let dockerfile = "FROM scratch\nCOPY a.txt /a.txt\nCOPY sub /sub\n";
    let ctx = b.context(&[
        ("Dockerfile", dockerfile),
        ("a.txt", "hi\n"),
        ("sub/b", "x\n"),
    ]);
    std::os::unix::fs::symlink("../a.txt", ctx.path().join("sub/link")).unwrap();
    let work = tempfile::tempdir().expect("temp dir");
    let ctx_dir = ctx.path().display().to_string();
    let mut trees = Vec::new();
    for (who, filename) in [("peer", "provenance.json"), ("peer-named", "x/p.json")] {
        let dest = work.path().join(who);
        let out = buildctl
            .command()
            .args(["build", "--frontend", "dockerfile.v0"])
            .args(["--local", &format!("context={ctx_dir}")])
            .args(["--local", &format!("dockerfile={ctx_dir}")])
            .args([
                "--opt",
                &format!("attest:provenance=mode=max,filename={filename}"),
            ])
            .args(["--output", &format!("type=local,dest={}", dest.display())])
            .output()
            .expect("buildctl");
        assert!(
            out.status.success(),
            "buildctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        trees.push(dest);
    }
    for (who, filename) in [("kiln", "provenance.json"), ("kiln-named", "x/p.json")] {
        let dest = work.path().join(who);
        let flag = format!("type=local,dest={}", dest.display());
        let provenance = format!("--provenance=mode=max,filename={filename}");
        b.build(ctx.path(), &[&provenance, "-o", &flag]).ok();
        trees.push(dest);
    }
    let names = |dir: &Path| regular_files(dir);
    assert_eq!(names(&trees[2]), names(&trees[0]));
    assert_eq!(names(&trees[3]), names(&trees[1]));
    assert!(names(&trees[1]).contains(&"p.json".to_string()));
    let peer_text = fs::read_to_string(trees[0].join("provenance.json")).unwrap();
    let kiln_text = fs::read_to_string(trees[2].join("provenance.json")).unwrap();
    let peer: Value = serde_json::from_str(&peer_text).unwrap();
    let kiln: Value = serde_json::from_str(&kiln_text).unwrap();
    assert_eq!(kiln["_type"], peer["_type"]);
    assert_eq!(kiln["predicateType"], peer["predicateType"]);
    assert_eq!(subjects_of(&kiln), subjects_of(&peer));
    assert!(field_order(&peer_text).windows(2).all(|w| w[0] < w[1]));
    assert!(field_order(&kiln_text).windows(2).all(|w| w[0] < w[1]));
    let mode = |dir: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(dir.join("provenance.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&trees[2]), mode(&trees[0]));
}

/// A multi-platform local or tar export writes each platform's attestation files in its
/// platform's directory, about that directory's files (BuildKit's platform split).
#[test]
fn a_multi_platform_export_writes_attestation_files_per_platform() {
    let Some(b) = builder() else {
        return;
    };
    let ctx = b.context(&[("Dockerfile", "FROM scratch\nCOPY busybox /bin/busybox\n")]);
    let out = tempfile::tempdir().expect("temp dir");
    let local = out.path().join("local");
    let tar = out.path().join("rootfs.tar");
    let local_flag = format!("type=local,dest={}", local.display());
    let tar_flag = format!("type=tar,dest={}", tar.display());
    b.build(
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--provenance=mode=min",
            "-o",
            &local_flag,
            "-o",
            &tar_flag,
        ],
    )
    .ok();
    assert!(!local.join("provenance.json").exists());
    let unpacked = out.path().join("unpacked");
    fs::create_dir(&unpacked).unwrap();
    tar::Archive::new(fs::File::open(&tar).expect("tar"))
        .unpack(&unpacked)
        .expect("unpack");
    let busybox = sha256_hex(&fs::read(ctx.path().join("busybox")).unwrap());
    for tree in [&local, &unpacked] {
        for platform in ["linux_amd64", "linux_arm64"] {
            let dir = tree.join(platform);
            let text = fs::read_to_string(dir.join("provenance.json")).expect(platform);
            check_attestation_file(&text, SLSA_V1, &dir, &["bin/busybox".to_string()]);
            let statement: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                subjects_of(&statement),
                [("bin/busybox".to_string(), busybox.clone())]
            );
        }
    }
}
