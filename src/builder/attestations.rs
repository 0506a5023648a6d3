//! Attestations attached to a built image, as BuildKit's image exporter attaches them
//! (`exporter/containerimage/writer.go`): for each platform's image, one attestation manifest
//! whose layers are in-toto statements (`application/vnd.in-toto+json`, annotated with
//! `in-toto.io/predicate-type`), in v0.32's default OCI artifact form (`artifactType`, the empty
//! config `{}`, the image manifest as its `subject`); the image index lists every platform's
//! image, then the attestation
//! manifests, each with platform `unknown/unknown` and the annotations
//! `vnd.docker.reference.type: attestation-manifest` and `vnd.docker.reference.digest: <the
//! image manifest's digest>`. A single-platform image with attestations becomes an index, as
//! with BuildKit.
//!
//! What is attested: SLSA provenance ([`crate::attest::provenance`]) from what the build knows
//! (its request, the base images, git commits and downloads it read, in `mode=max` its steps
//! and Dockerfile), and an SPDX SBOM ([`crate::attest::sbom`]) of the image's root filesystem.
//!
//! The flags are buildx's: `--provenance=true|false|mode=min|max[,version=v1|v0.2,…]`,
//! `--sbom=true|false`, `--attest type=provenance|sbom,…` (`disabled=true` turns one off; a
//! later flag for a type replaces an earlier one; `--provenance` and `--sbom` come after every
//! `--attest`). kiln adds no attestation by default (see [`AttestationRequest::parse`]).

use super::compile::{BuildOp, CopyFrom, RunMount};
use super::worker::Snapshot;
use super::{BuildOptions, ContextOrigin, Prepared, Solved};
use crate::attest::intoto::{self, PREDICATE_SPDX, Statement, Subject};
use crate::attest::provenance::{
    self, BuildFacts, BuildStep, ConfigSource, LayerRef, Material, MountedId, ProvenanceOptions,
    SourceFile,
};
use crate::attest::sbom;
use crate::frontend::stage::ImageKey;
use crate::oci::csv::parse_go_bool;
use crate::oci::media_type::{
    ATTESTATION_MANIFEST, OCI_MANIFEST, REFERENCE_DIGEST, REFERENCE_TYPE,
};
use crate::oci::reference::Reference;
use crate::oci::{Digest, Platform};
use crate::solver::NodeId;
use crate::store::{Store, StoreError, StoredImage, StoredIndex, config_platform, oci_platform};
use oci_spec::image::{Descriptor, MediaType};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::PoisonError;

/// What attestations a build attaches to its image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttestationRequest {
    /// SLSA provenance, with its options.
    pub provenance: Option<ProvenanceOptions>,
    /// An SPDX SBOM of each platform's root filesystem.
    pub sbom: bool,
}

/// Why the attestation flags are not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestSpecError {
    #[error("invalid --attest {spec:?}: {field:?} is not key=value")]
    NotAField { spec: String, field: String },
    #[error(
        "invalid --attest {spec:?}: attestation type not specified; write type=provenance or type=sbom"
    )]
    NoType { spec: String },
    #[error("invalid --attest {spec:?}: unknown attestation type {kind:?}; use provenance or sbom")]
    UnknownType { spec: String, kind: String },
    #[error("invalid --attest {spec:?}: disabled takes true or false, not {value:?}")]
    Disabled { spec: String, value: String },
    #[error("invalid --attest {spec:?}: {reason}")]
    Csv { spec: String, reason: String },
    #[error("invalid provenance attestation {spec:?}")]
    Provenance {
        spec: String,
        #[source]
        source: provenance::OptionsError,
    },
    /// kiln makes the SBOM itself: BuildKit's scanner images are not run.
    #[error(
        "invalid SBOM attestation {spec:?}: generator={generator} is not supported: kiln \
         scans the image itself and runs no scanner image; leave generator out"
    )]
    Generator { spec: String, generator: String },
    #[error(
        "invalid SBOM attestation {spec:?}: the option {key:?} is not supported by kiln (the \
         SBOM takes no options)"
    )]
    SbomOption { spec: String, key: String },
}

/// One `--attest` spec as buildx reads it (`type=…,disabled=…,KEY=VALUE…`).
struct AttestSpec {
    kind: String,
    disabled: bool,
    attrs: BTreeMap<String, String>,
    spec: String,
}

impl AttestSpec {
    fn parse(spec: &str) -> Result<AttestSpec, AttestSpecError> {
        let fields =
            crate::oci::csv::split_record(spec).map_err(|reason| AttestSpecError::Csv {
                spec: spec.to_string(),
                reason,
            })?;
        let mut parsed = AttestSpec {
            kind: String::new(),
            disabled: false,
            attrs: BTreeMap::new(),
            spec: spec.to_string(),
        };
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                return Err(AttestSpecError::NotAField {
                    spec: spec.to_string(),
                    field,
                });
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "type" => parsed.kind = value.to_string(),
                "disabled" => {
                    parsed.disabled =
                        parse_go_bool(value).ok_or_else(|| AttestSpecError::Disabled {
                            spec: spec.to_string(),
                            value: value.to_string(),
                        })?;
                }
                _ => {
                    parsed.attrs.insert(key.to_string(), value.to_string());
                }
            }
        }
        if parsed.kind.is_empty() {
            return Err(AttestSpecError::NoType {
                spec: spec.to_string(),
            });
        }
        Ok(parsed)
    }
}

/// buildx's `CanonicalizeAttest`: `--provenance=true` is `type=provenance,disabled=false`,
/// `--provenance=mode=max` is `type=provenance,mode=max`.
fn canonical(kind: &str, value: &str) -> String {
    match parse_go_bool(value) {
        Some(enabled) => format!("type={kind},disabled={}", !enabled),
        None => format!("type={kind},{value}"),
    }
}

impl AttestationRequest {
    /// The request of buildx's flags: each `--attest`, then `--provenance` and `--sbom` (a
    /// later spec of a type replaces an earlier one). Without any, nothing is attached: buildx
    /// adds `mode=min` provenance to image exports by default, which would turn every
    /// single-platform image kiln builds into an index; kiln asks for it to be said.
    pub fn parse(
        attests: &[String],
        provenance: Option<&str>,
        sbom: Option<&str>,
    ) -> Result<AttestationRequest, AttestSpecError> {
        let mut specs: Vec<String> = attests.to_vec();
        specs.extend(provenance.map(|v| canonical("provenance", v)));
        specs.extend(sbom.map(|v| canonical("sbom", v)));
        let mut by_type: BTreeMap<String, AttestSpec> = BTreeMap::new();
        for spec in &specs {
            let parsed = AttestSpec::parse(spec)?;
            by_type.insert(parsed.kind.clone(), parsed);
        }
        let mut request = AttestationRequest::default();
        for (kind, spec) in by_type {
            match kind.as_str() {
                "provenance" => {
                    let options = ProvenanceOptions::from_attrs(&spec.attrs).map_err(|source| {
                        AttestSpecError::Provenance {
                            spec: spec.spec.clone(),
                            source,
                        }
                    })?;
                    request.provenance = (!spec.disabled).then_some(options);
                }
                "sbom" => {
                    if let Some(generator) = spec.attrs.get("generator") {
                        return Err(AttestSpecError::Generator {
                            spec: spec.spec.clone(),
                            generator: generator.clone(),
                        });
                    }
                    if let Some(key) = spec.attrs.keys().next() {
                        return Err(AttestSpecError::SbomOption {
                            spec: spec.spec.clone(),
                            key: key.clone(),
                        });
                    }
                    request.sbom = !spec.disabled;
                }
                _ => {
                    return Err(AttestSpecError::UnknownType {
                        spec: spec.spec.clone(),
                        kind,
                    });
                }
            }
        }
        Ok(request)
    }

    /// Whether anything is attached.
    pub fn is_empty(&self) -> bool {
        self.provenance.is_none() && !self.sbom
    }
}

/// The attestation files a `-o type=local|tar` export writes beside the root filesystem, as
/// BuildKit's local and tar exporters name them (`exporter/local/fs.go`: the base name of the
/// attestation's path): the provenance as `provenance.json` (or its `filename=`), the SBOM as
/// `sbom.spdx.json` (the scanner's core SBOM, `sbom` + `.spdx.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttestationFiles {
    /// The provenance file's name; `None` when none is written (no provenance, or
    /// `inline-only=true`, which BuildKit leaves out of these exports).
    pub provenance: Option<String>,
    /// Whether the SBOM is written, as `sbom.spdx.json`.
    pub sbom: bool,
}

/// The SBOM file's name in a local or tar export.
pub const SBOM_FILE: &str = "sbom.spdx.json";

impl AttestationRequest {
    /// The files a local or tar export of the build writes.
    pub fn files(&self) -> AttestationFiles {
        AttestationFiles {
            provenance: self
                .provenance
                .as_ref()
                .filter(|p| !p.inline_only)
                .map(|p| p.file_name().to_string()),
            sbom: self.sbom,
        }
    }
}

/// A statement a local or tar export writes as a file: its name, and what it says, which is
/// about the exported files (its subjects are given when the files are known).
#[derive(Debug, Clone, PartialEq)]
pub struct FileStatement {
    pub name: String,
    pub predicate_type: String,
    pub predicate: Value,
}

impl FileStatement {
    /// The file's content: the in-toto statement about `files` (one subject per regular file,
    /// named by its path in the export), indented as BuildKit's `json.MarshalIndent` and with
    /// its fields in BuildKit's order.
    pub fn content(&self, files: &[crate::archive::RegularFile]) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(rename = "_type")]
            kind: &'a str,
            #[serde(rename = "predicateType")]
            predicate_type: &'a str,
            subject: Vec<OutSubject<'a>>,
            predicate: &'a Value,
        }
        #[derive(serde::Serialize)]
        struct OutSubject<'a> {
            name: &'a str,
            digest: BTreeMap<String, String>,
        }
        let out = Out {
            kind: intoto::STATEMENT_V1,
            predicate_type: &self.predicate_type,
            subject: files
                .iter()
                .map(|file| OutSubject {
                    name: &file.path,
                    digest: sha(&file.digest),
                })
                .collect(),
            predicate: &self.predicate,
        };
        // A tree of strings and `Value`s always serialises.
        serde_json::to_vec_pretty(&out).unwrap_or_default()
    }
}

/// The statements of the attestation manifest `index` lists for the image `manifest` that a
/// local or tar export writes as `files`, in BuildKit's order (the SBOM first). None when the
/// index has no attestations for the image.
pub fn file_statements(
    store: &Store,
    index: &crate::store::StoredIndex,
    manifest: &Digest,
    files: &AttestationFiles,
) -> Result<Vec<FileStatement>, StoreError> {
    if files.provenance.is_none() && !files.sbom {
        return Ok(Vec::new());
    }
    let bad = |what: &'static str, digest: &Digest, reason: String| StoreError::Document {
        what,
        digest: digest.clone(),
        source: crate::error::Reason::new(reason).into(),
    };
    let mut out = Vec::new();
    for entry in index.manifests.iter().filter(|m| {
        m.present
            && crate::store::is_attestation(&m.descriptor)
            && m.descriptor
                .annotations()
                .as_ref()
                .and_then(|a| a.get(REFERENCE_DIGEST))
                .is_some_and(|d| *d == manifest.to_string())
    }) {
        let document: Value = serde_json::from_slice(&store.blobs().read(&entry.digest)?)
            .map_err(|e| bad("attestation manifest", &entry.digest, e.to_string()))?;
        let layers = document["layers"].as_array().cloned().unwrap_or_default();
        for layer in layers {
            let Some(digest) = layer["digest"].as_str().and_then(|d| Digest::parse(d).ok()) else {
                return Err(bad(
                    "attestation manifest",
                    &entry.digest,
                    "a layer without a digest".to_string(),
                ));
            };
            let mut statement: Value = serde_json::from_slice(&store.blobs().read(&digest)?)
                .map_err(|e| bad("attestation", &digest, e.to_string()))?;
            let predicate_type = statement["predicateType"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = if predicate_type.starts_with("https://slsa.dev/provenance/") {
                files.provenance.clone()
            } else if predicate_type == PREDICATE_SPDX {
                files.sbom.then(|| SBOM_FILE.to_string())
            } else {
                None
            };
            if let Some(name) = name {
                out.push(FileStatement {
                    name,
                    predicate_type,
                    predicate: statement["predicate"].take(),
                });
            }
        }
    }
    // BuildKit puts the core SBOM before the other attestations.
    out.sort_by_key(|s| s.predicate_type != PREDICATE_SPDX);
    Ok(out)
}

/// Why the attestations could not be made or stored.
#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    #[error("cannot write the attestations of the {platform} image into the store")]
    Store {
        platform: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot unpack the {platform} image's root filesystem for its SBOM")]
    Rootfs {
        platform: String,
        #[source]
        source: crate::archive::ArchiveError,
    },
    #[error("cannot scan the {platform} image's root filesystem for its SBOM")]
    Scan {
        platform: String,
        #[source]
        source: sbom::SbomError,
    },
    /// BuildKit's `BUILDKIT_SBOM_SCAN_CONTEXT` / `BUILDKIT_SBOM_SCAN_STAGE` build arguments.
    #[error(
        "the build argument {0} asks the SBOM to scan more than the final image, which kiln does \
         not do: leave it out (the SBOM describes the final image)"
    )]
    ScanArg(String),
}

/// BuildKit's SBOM scan arguments, `BUILDKIT_SBOM_SCAN_CONTEXT` and `BUILDKIT_SBOM_SCAN_STAGE`,
/// when the build sets one to true (a `--build-arg`, or an `ARG NAME=true` of the Dockerfile):
/// they ask for SBOMs of the context and of intermediate stages, which kiln does not make.
fn scan_argument(options: &BuildOptions) -> Option<&'static str> {
    let truthy = |value: &str| {
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        !value.is_empty() && parse_go_bool(value) != Some(false)
    };
    ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"]
        .into_iter()
        .find(|arg| {
            options.build_args.get(*arg).is_some_and(|v| truthy(v))
                || String::from_utf8_lossy(&options.dockerfile)
                    .lines()
                    .filter_map(|line| {
                        let line = line.trim_start();
                        line.get(..4)
                            .filter(|k| k.eq_ignore_ascii_case("ARG "))
                            .map(|_| &line[4..])
                    })
                    .flat_map(str::split_whitespace)
                    .filter_map(|word| word.split_once('='))
                    .any(|(name, value)| name == *arg && truthy(value))
        })
}

/// The platform an image of the build is listed under in its index: the one asked for, or
/// without `--platform`, the one its config says (the implicit target is its base's).
pub(super) fn index_platform(
    options: &BuildOptions,
    image: &StoredImage,
    target: &Platform,
) -> Platform {
    if options.platforms.is_empty() {
        return config_platform(&image.config_bytes)
            .map(|p| p.normalized())
            .unwrap_or_else(|| target.clone());
    }
    target.clone()
}

/// The subjects of each platform's statements: every tag as a package URL with the image
/// manifest's digest; an untagged image, `_` (in-toto's "no meaningful name").
fn subjects(options: &BuildOptions, image: &StoredImage, platform: &Platform) -> Vec<Subject> {
    let mut subjects: Vec<Subject> = options
        .tags
        .iter()
        .filter_map(|tag| Reference::parse_normalized(tag).ok())
        .map(|reference| Subject {
            name: intoto::image_purl("docker", &reference, Some(platform)),
            digest: image.manifest_digest.clone(),
        })
        .collect();
    if subjects.is_empty() {
        subjects.push(Subject {
            name: "_".to_string(),
            digest: image.manifest_digest.clone(),
        });
    }
    subjects
}

/// Writes each platform's attestations and the index of the images and their attestation
/// manifests (untagged; the build tags it). `images` are the targets' images, in order.
pub(super) fn attach(
    store: &Store,
    options: &BuildOptions,
    prepared: &Prepared,
    solved: &Solved,
    images: &[StoredImage],
    started: i64,
    annotated: &crate::store::Annotated,
) -> Result<Attached, AttestationError> {
    let request = &options.attestations;
    if request.sbom
        && let Some(arg) = scan_argument(options)
    {
        return Err(AttestationError::ScanArg(arg.to_string()));
    }
    let invocation_id = invocation_id();
    let mut provenances = Vec::new();
    let mut entries: Vec<Descriptor> = Vec::new();
    let mut attestation_entries: Vec<Descriptor> = Vec::new();
    for (index, (image, target)) in images.iter().zip(&prepared.targets).enumerate() {
        let platform = index_platform(options, image, &target.platform);
        let store_error = |source| AttestationError::Store {
            platform: platform.to_string(),
            source,
        };
        let subjects = subjects(options, image, &platform);
        let mut statements = Vec::new();
        if let Some(provenance_options) = &request.provenance {
            let facts = build_facts(
                options,
                prepared,
                solved,
                index,
                provenance_options,
                &invocation_id,
                started,
            );
            let predicate = provenance::predicate(&facts, provenance_options);
            provenances.push(AttachedProvenance {
                platform: platform.clone(),
                predicate_type: provenance_options.version.predicate_type().to_string(),
                predicate: predicate.clone(),
            });
            statements.push(Statement {
                predicate_type: provenance_options.version.predicate_type().to_string(),
                subjects: subjects.clone(),
                predicate,
            });
        }
        if request.sbom {
            statements.push(Statement {
                predicate_type: PREDICATE_SPDX.to_string(),
                subjects: subjects.clone(),
                predicate: sbom_document(store, options, image, &platform)?,
            });
        }
        let manifest =
            write_attestation_manifest(store, image, &statements).map_err(store_error)?;
        // The image as the index lists it: its descriptor's own annotations kept.
        let mut entry = Descriptor::new(
            image.manifest_descriptor.media_type().clone(),
            image.manifest_descriptor.size(),
            image.manifest_descriptor.digest().clone(),
        );
        entry.set_annotations(image.manifest_descriptor.annotations().clone());
        entry.set_platform(Some(oci_platform(&platform)));
        entries.push(entry);
        let mut attestation = Descriptor::new(
            MediaType::ImageManifest,
            manifest.1,
            crate::store::blob::oci_digest(&manifest.0),
        );
        attestation.set_annotations(Some(HashMap::from([
            (
                REFERENCE_DIGEST.to_string(),
                image.manifest_digest.to_string(),
            ),
            (REFERENCE_TYPE.to_string(), ATTESTATION_MANIFEST.to_string()),
        ])));
        attestation.set_platform(Some(oci_platform(&Platform::new(
            "unknown", "unknown", None,
        ))));
        attestation_entries.push(attestation);
    }
    entries.extend(attestation_entries);
    let index = store
        .write_index_entries(&entries, annotated)
        .map_err(|source| AttestationError::Store {
            platform: "multi-platform".to_string(),
            source,
        })?;
    Ok(Attached { index, provenances })
}

/// What [`attach`] wrote.
pub(super) struct Attached {
    /// The index of the images and their attestation manifests.
    pub index: StoredIndex,
    pub provenances: Vec<AttachedProvenance>,
}

/// The provenance attached to one platform's image (`--metadata-file` repeats it).
#[derive(Debug, Clone, PartialEq)]
pub struct AttachedProvenance {
    /// The platform of the image it is about.
    pub platform: Platform,
    /// `https://slsa.dev/provenance/v1` or `…/v0.2`.
    pub predicate_type: String,
    pub predicate: Value,
}

/// `--metadata-file`'s provenance entries as buildx writes them: the predicate in SLSA v0.2's
/// form, under `buildx.build.provenance` (of a multi-platform build, one per platform,
/// `buildx.build.provenance/linux/amd64`). `BUILDX_METADATA_PROVENANCE` says how much: `min`
/// (buildx's default) leaves out the build config and metadata, `max` keeps them, and
/// `disabled`, `false` or `0` writes none.
pub fn metadata_provenance(
    provenances: &[AttachedProvenance],
    multi_platform: bool,
    mode: Option<&str>,
) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let max = match mode.map(str::trim) {
        Some("disabled" | "false" | "0") => return out,
        Some("max") => true,
        _ => false,
    };
    for attached in provenances {
        let mut predicate = if attached.predicate_type == provenance::PREDICATE_SLSA1 {
            provenance::to_slsa02(&attached.predicate)
        } else {
            attached.predicate.clone()
        };
        if !max && let Value::Object(fields) = &mut predicate {
            fields.remove("buildConfig");
            fields.remove("metadata");
        }
        let key = if multi_platform {
            format!("buildx.build.provenance/{}", attached.platform)
        } else {
            "buildx.build.provenance".to_string()
        };
        out.insert(key, predicate);
    }
    out
}

/// The attestation manifest's artifact type (BuildKit's `attestationManifestArtifactType`).
const ARTIFACT_TYPE: &str = "application/vnd.docker.attestation.manifest.v1+json";
/// The OCI empty descriptor's media type: the config of an artifact manifest.
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Stores the statements as blobs and the attestation manifest, as BuildKit v0.32 writes it by
/// default (an OCI artifact: `artifactType`, the empty config `{}`, the image manifest as its
/// `subject`). Returns the manifest's digest and size.
fn write_attestation_manifest(
    store: &Store,
    image: &StoredImage,
    statements: &[Statement],
) -> Result<(Digest, u64), StoreError> {
    let mut layers = Vec::new();
    for statement in statements {
        let blob = store.blobs().write(&statement.to_bytes())?;
        layers.push(json!({
            "mediaType": intoto::MEDIA_TYPE,
            "digest": blob.digest.to_string(),
            "size": blob.size,
            "annotations": { intoto::PREDICATE_TYPE_ANNOTATION: statement.predicate_type },
        }));
    }
    let empty = store.blobs().write(b"{}")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": OCI_EMPTY,
            "digest": empty.digest.to_string(),
            "size": empty.size,
            "data": "e30=",
        },
        "layers": layers,
        "subject": {
            "mediaType": image.manifest_descriptor.media_type().to_string(),
            "digest": image.manifest_digest.to_string(),
            "size": image.manifest_descriptor.size(),
        },
    });
    let manifest = store
        .blobs()
        .write(&serde_json::to_vec_pretty(&manifest).unwrap_or_default())?;
    Ok((manifest.digest, manifest.size))
}

/// The SPDX document of `image`'s root filesystem: its layers unpacked (confined) into a
/// staging directory of the store, scanned, and removed.
fn sbom_document(
    store: &Store,
    options: &BuildOptions,
    image: &StoredImage,
    platform: &Platform,
) -> Result<Value, AttestationError> {
    struct Staged(std::path::PathBuf);
    impl Drop for Staged {
        fn drop(&mut self) {
            // Best effort: a leftover is a dead writer's staging entry, which the store's
            // stale-entry sweep removes later.
            let _ = crate::sys::atomic::remove_tree(&self.0);
        }
    }
    let staged = Staged(store.staging().new_path("sbom"));
    crate::archive::export_to_dir(
        store,
        image,
        &staged.0,
        crate::archive::DEFAULT_MAX_BYTES,
        None,
    )
    .map_err(|source| AttestationError::Rootfs {
        platform: platform.to_string(),
        source,
    })?;
    let packages = sbom::scan(&staged.0).map_err(|source| AttestationError::Scan {
        platform: platform.to_string(),
        source,
    })?;
    let created = image
        .created()
        .map(str::to_string)
        .unwrap_or_else(crate::oci::timestamp::now_rfc3339);
    let subject = sbom::Subject {
        name: options
            .tags
            .first()
            .cloned()
            .unwrap_or_else(|| image.manifest_digest.to_string()),
        platform: Some(platform.to_string()),
        created,
    };
    Ok(sbom::spdx_document(&packages, &subject))
}

/// A random id for the build (BuildKit's job ids are 25 base-36 characters).
fn invocation_id() -> String {
    let mut bytes = [0u8; 25];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        // No randomness: a unique-enough id from the time and process.
        let seed = Digest::of(
            format!("{:?} {}", std::time::SystemTime::now(), std::process::id()).as_bytes(),
        );
        bytes.copy_from_slice(&seed.hex().as_bytes()[..25]);
    }
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// The nodes the target needs, inputs before the ops that read them.
fn needed_nodes(prepared: &Prepared, target: NodeId) -> Vec<NodeId> {
    let graph = &prepared.graph;
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    // Iterative post-order: (node, whether its inputs are done).
    let mut stack = vec![(target, false)];
    while let Some((node, done)) = stack.pop() {
        if done {
            order.push(node);
            continue;
        }
        if !seen.insert(node) {
            continue;
        }
        stack.push((node, true));
        for input in graph.inputs(node).iter().rev() {
            if !seen.contains(input) {
                stack.push((*input, false));
            }
        }
    }
    order
}

/// An http(s) URL without its user information (`https://user:pass@host/` → `https://host/`).
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn sha(digest: &Digest) -> BTreeMap<String, String> {
    BTreeMap::from([(digest.algorithm().to_string(), digest.hex().to_string())])
}

/// What the build knows of the `index`th target, for its provenance.
fn build_facts(
    options: &BuildOptions,
    prepared: &Prepared,
    solved: &Solved,
    index: usize,
    provenance_options: &ProvenanceOptions,
    invocation_id: &str,
    started: i64,
) -> BuildFacts {
    let target = &prepared.targets[index];
    let worker = &prepared.worker;
    let nodes = needed_nodes(prepared, target.node);
    let mut facts = BuildFacts {
        frontend: "dockerfile.v0".to_string(),
        builder_platform: Platform::host().to_string(),
        invocation_id: invocation_id.to_string(),
        started_on: crate::oci::timestamp::format_rfc3339(started),
        finished_on: crate::oci::timestamp::now_rfc3339(),
        ..BuildFacts::default()
    };
    for (key, value) in &options.build_args {
        facts.args.insert(format!("build-arg:{key}"), value.clone());
    }
    for (key, value) in &options.labels {
        facts.args.insert(format!("label:{key}"), value.clone());
    }
    if let Some(stage) = &options.target {
        facts.args.insert("target".to_string(), stage.clone());
    }
    let dockerfile_name = options
        .dockerfile_path
        .as_ref()
        .and_then(|p| p.file_name())
        .map_or_else(
            || options.dockerfile_name.clone(),
            |n| n.to_string_lossy().into_owned(),
        );
    facts.config_source = ConfigSource {
        uri: match options.remote_context.as_ref().map(|r| &r.origin) {
            Some(ContextOrigin::Url(url)) => Some(redact_url(url)),
            Some(ContextOrigin::Git(url)) => Some(url.clone()),
            Some(ContextOrigin::Stdin) | None => None,
        },
        digest: BTreeMap::new(),
        path: Some(dockerfile_name.clone()),
    };
    if options.context_dir.is_some() && options.remote_context.is_none() {
        facts.locals.push("context".to_string());
    }
    facts.locals.push("dockerfile".to_string());
    // A local source cannot be pinned by digest (BuildKit's completeness says so too).
    facts.incomplete_materials = !facts.locals.is_empty();
    let mut materials = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let mut ssh = BTreeSet::new();
    let git_resolved = worker
        .git_resolved
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let fetched = worker
        .fetched
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut step_ids: BTreeMap<NodeId, String> = BTreeMap::new();
    for (position, node) in nodes.iter().enumerate() {
        step_ids.insert(*node, format!("step{position}"));
    }
    for node in &nodes {
        let Some(op) = prepared.graph.op(*node) else {
            continue;
        };
        match op {
            BuildOp::Image {
                name,
                manifest,
                platform,
            } => {
                let stored = worker.images.get(&ImageKey::new(name, platform));
                // A multi-platform base is pinned by its index, as BuildKit resolves it.
                let digest = stored
                    .and_then(|image| image.index.clone())
                    .unwrap_or_else(|| manifest.clone());
                let uri = match Reference::parse_normalized(name) {
                    Ok(reference) => intoto::image_purl("docker", &reference, Some(platform)),
                    // An image ID (a named context's local image).
                    Err(_) => format!("pkg:oci/{name}"),
                };
                materials.insert(Material {
                    uri,
                    digest: sha(&digest),
                });
            }
            BuildOp::Run(run) => {
                if run.network != "none" {
                    facts.network_access = true;
                }
                for mount in &run.mounts {
                    match mount {
                        RunMount::Secret { id, required, .. } => {
                            secrets.insert(MountedId {
                                id: id.clone(),
                                optional: !required,
                            });
                        }
                        RunMount::Ssh { id, required, .. } => {
                            ssh.insert(MountedId {
                                id: id.clone(),
                                optional: !required,
                            });
                        }
                        _ => {}
                    }
                }
            }
            BuildOp::Copy(copy) if copy.from == CopyFrom::Url => {
                let known = fetched.get(node);
                for (i, url) in copy.urls.iter().enumerate() {
                    let digest = url.checksum.clone().or_else(|| {
                        known
                            .and_then(|k| k.get(i).cloned().flatten())
                            .map(|f| f.digest)
                    });
                    materials.insert(Material {
                        uri: redact_url(&url.url),
                        digest: digest.as_ref().map(sha).unwrap_or_default(),
                    });
                }
            }
            BuildOp::Copy(copy) if copy.from == CopyFrom::Git => {
                let resolved = git_resolved.get(node);
                for (i, source) in copy.git.iter().enumerate() {
                    let commit = resolved
                        .and_then(|r| r.get(i))
                        .map(|r| r.commit().to_string());
                    let digest = commit
                        .map(|c| {
                            let algorithm = if c.len() == 64 { "sha256" } else { "sha1" };
                            BTreeMap::from([(algorithm.to_string(), c)])
                        })
                        .unwrap_or_default();
                    materials.insert(Material {
                        uri: source.remote_shown.clone(),
                        digest,
                    });
                }
            }
            _ => {}
        }
        if provenance_options.mode == provenance::Mode::Max {
            if let Some(span) = worker.steps.get(*node).and_then(|step| step.span) {
                facts
                    .locations
                    .insert(step_ids[node].clone(), (span.start.line, span.end.line));
            }
            let digest = prepared
                .graph
                .node_digest(*node)
                .map(ToString::to_string)
                .unwrap_or_default();
            facts.steps.push(BuildStep {
                id: step_ids[node].clone(),
                op: serde_json::to_value(op).unwrap_or(Value::Null),
                inputs: prepared
                    .graph
                    .inputs(*node)
                    .iter()
                    .filter_map(|input| step_ids.get(input).map(|id| format!("{id}:0")))
                    .collect(),
                digest,
            });
        }
    }
    if materials.iter().any(|m| m.digest.is_empty()) {
        facts.incomplete_materials = true;
    }
    facts.materials = materials.into_iter().collect();
    facts.secrets = secrets.into_iter().collect();
    facts.ssh = ssh.into_iter().collect();
    if provenance_options.mode == provenance::Mode::Max {
        facts.source = Some(SourceFile {
            filename: dockerfile_name,
            language: "Dockerfile".to_string(),
            data: options.dockerfile.clone(),
        });
        // Each step's result as its layer chain (BuildKit's `stepN:0`): the cache record of
        // its key, and for the target the image's own layers (rewritten timestamps included).
        let chain = |snapshot: &Snapshot| -> Vec<LayerRef> {
            snapshot
                .layers
                .iter()
                .map(|l| LayerRef {
                    media_type: l.media_type.clone(),
                    digest: l.digest.to_string(),
                    size: l.size,
                })
                .collect()
        };
        for node in &nodes {
            let recorded = solved
                .keys
                .get(node)
                .and_then(|key| worker.records.get::<Snapshot>(key).ok().flatten());
            // A base image's step: the image's own layers (it has no cache record).
            let base = match prepared.graph.op(*node) {
                Some(BuildOp::Image { name, platform, .. }) => {
                    worker.images.get(&ImageKey::new(name, platform))
                }
                _ => None,
            };
            let layers = match (node == &target.node, solved.snapshots.get(index)) {
                (true, Some(snapshot)) => chain(snapshot),
                _ => match base {
                    Some(image) => image
                        .layers
                        .iter()
                        .map(|l| LayerRef {
                            media_type: l.media_type.to_string(),
                            digest: l.digest.to_string(),
                            size: l.size,
                        })
                        .collect(),
                    None => recorded.as_ref().map(chain).unwrap_or_default(),
                },
            };
            if !layers.is_empty() {
                facts.layers.insert(format!("{}:0", step_ids[node]), layers);
            }
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        attests: &[&str],
        provenance: Option<&str>,
        sbom: Option<&str>,
    ) -> Result<AttestationRequest, String> {
        let attests: Vec<String> = attests.iter().map(|s| s.to_string()).collect();
        AttestationRequest::parse(&attests, provenance, sbom).map_err(|e| e.to_string())
    }

    #[test]
    fn flags_parse_as_buildx_reads_them() {
        assert!(parse(&[], None, None).unwrap().is_empty());
        let max = parse(&[], Some("mode=max"), Some("true")).unwrap();
        assert_eq!(max.provenance.as_ref().unwrap().mode, provenance::Mode::Max);
        assert!(max.sbom);
        let min = parse(&["type=provenance,mode=min"], None, None).unwrap();
        assert_eq!(min.provenance.unwrap().mode, provenance::Mode::Min);
        // --provenance comes after --attest and replaces it.
        let off = parse(&["type=provenance,mode=max"], Some("false"), None).unwrap();
        assert!(off.provenance.is_none());
        assert!(
            parse(&["type=sbom,disabled=true"], None, None)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            parse(&["type=provenance"], None, None).unwrap().provenance,
            Some(ProvenanceOptions::default())
        );
        assert_eq!(
            parse(&["type=provenance,\"builder-id=a,b\""], None, None)
                .unwrap()
                .provenance
                .unwrap()
                .builder_id,
            "a,b"
        );
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        assert_eq!(
            parse(&[], None, Some("generator=docker/scout-sbom-indexer:1")).unwrap_err(),
            "invalid SBOM attestation \"type=sbom,generator=docker/scout-sbom-indexer:1\": \
             generator=docker/scout-sbom-indexer:1 is not supported: kiln scans the image \
             itself and runs no scanner image; leave generator out"
        );
        assert_eq!(
            parse(&["type=vex"], None, None).unwrap_err(),
            "invalid --attest \"type=vex\": unknown attestation type \"vex\"; use provenance \
             or sbom"
        );
        assert_eq!(
            parse(&["mode=max"], None, None).unwrap_err(),
            "invalid --attest \"mode=max\": attestation type not specified; write \
             type=provenance or type=sbom"
        );
        assert_eq!(
            parse(&["type=provenance,max"], None, None).unwrap_err(),
            "invalid --attest \"type=provenance,max\": \"max\" is not key=value"
        );
        assert!(
            parse(&[], Some("mode=all"), None)
                .unwrap_err()
                .starts_with("invalid provenance attestation \"type=provenance,mode=all\"")
        );
    }

    #[test]
    fn sbom_scan_arguments_are_found_in_build_args_and_the_dockerfile() {
        let with = |dockerfile: &str, args: &[(&str, &str)]| BuildOptions {
            dockerfile: dockerfile.as_bytes().to_vec(),
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..BuildOptions::default()
        };
        assert_eq!(scan_argument(&with("FROM x\n", &[])), None);
        assert_eq!(
            scan_argument(&with("FROM x\n", &[("BUILDKIT_SBOM_SCAN_CONTEXT", "true")])),
            Some("BUILDKIT_SBOM_SCAN_CONTEXT")
        );
        assert_eq!(
            scan_argument(&with(
                "FROM x\n",
                &[("BUILDKIT_SBOM_SCAN_CONTEXT", "false")]
            )),
            None
        );
        assert_eq!(
            scan_argument(&with("FROM x AS b\narg BUILDKIT_SBOM_SCAN_STAGE=1\n", &[])),
            Some("BUILDKIT_SBOM_SCAN_STAGE")
        );
        assert_eq!(
            scan_argument(&with("FROM x\nARG BUILDKIT_SBOM_SCAN_STAGE=false\n", &[])),
            None
        );
    }

    #[test]
    fn metadata_provenance_is_buildxs() {
        let attached = |platform: &str| AttachedProvenance {
            platform: Platform::parse(platform).unwrap(),
            predicate_type: provenance::PREDICATE_SLSA1.to_string(),
            predicate: json!({
                "buildDefinition": {
                    "buildType": provenance::BUILD_TYPE_V1,
                    "externalParameters": {"configSource": {"path": "Dockerfile"}, "request": {}},
                    "internalParameters": {"builderPlatform": "linux/amd64", "buildConfig": {}},
                },
                "runDetails": {"builder": {"id": ""}, "metadata": {"invocationId": "x"}},
            }),
        };
        let one = [attached("linux/amd64")];
        let min = metadata_provenance(&one, false, None);
        let recorded = &min["buildx.build.provenance"];
        assert_eq!(recorded["buildType"], provenance::BUILD_TYPE_V02);
        assert_eq!(
            recorded["invocation"]["configSource"]["entryPoint"],
            "Dockerfile"
        );
        assert!(recorded.get("buildConfig").is_none() && recorded.get("metadata").is_none());
        let max = metadata_provenance(&one, false, Some("max"));
        assert_eq!(
            max["buildx.build.provenance"]["metadata"]["buildInvocationID"],
            "x"
        );
        assert!(metadata_provenance(&one, false, Some("disabled")).is_empty());
        let both = [attached("linux/amd64"), attached("linux/arm64")];
        let keys: Vec<String> = metadata_provenance(&both, true, Some("min"))
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "buildx.build.provenance/linux/amd64",
                "buildx.build.provenance/linux/arm64"
            ]
        );
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://user:secret@example.com/a@b"),
            "https://example.com/a@b"
        );
        assert_eq!(redact_url("https://example.com/x"), "https://example.com/x");
    }
}
