//! The shared cache's format: an OCI artifact, i.e. an OCI image manifest
//! (`application/vnd.oci.image.manifest.v1+json`) whose config blob is kiln's cache graph
//! ([`GRAPH_MEDIA_TYPE`]) and whose `layers` list every layer blob the graph names, so a
//! registry keeps them and its garbage collector sees them.
//!
//! The graph (JSON, keys sorted, so the same cache gives the same bytes):
//!
//! ```json
//! {
//!   "version": 1,
//!   "records": {
//!     "sha256:<cache key>": {
//!       "layers": [{"digest": "sha256:…", "size": 123,
//!                   "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
//!                   "diffID": "sha256:…"}],
//!       "added": [true, false],
//!       "created": [1700000000, 1700000042],
//!       "baseCreated": 1600000000
//!     }
//!   },
//!   "cacheMounts": [
//!     {"id": "/root/.cache", "platform": "linux/amd64", "modified": 1700000042,
//!      "layer": {"digest": "sha256:…", "size": 10240,
//!                "mediaType": "application/vnd.oci.image.layer.v1.tar", "diffID": "sha256:…"}}
//!   ]
//! }
//! ```
//!
//! A record is a build step's result: its filesystem's layer stack (base first); for each
//! filesystem step since the stack's source (`FROM`), whether it added a layer and when it ran
//! (Unix seconds); and when the base image was made (absent for `scratch`).
//!
//! `cacheMounts` (optional, sorted by id and platform) carries the content of `RUN
//! --mount=type=cache` directories, which BuildKit never exports (moby/buildkit#1474): per cache
//! id and platform, a layer tar of the directory and its newest modification time (Unix
//! seconds). Its blobs are listed in the manifest like the records' layers. Adding it kept the
//! graph at version 1: a graph without it is one with no cache mounts, and a kiln that predates
//! it ignores it (unknown fields of the graph are skipped, and a manifest may list layers no
//! record names), so old caches and old readers keep working.
//!
//! The graph comes from elsewhere (a shared directory, a registry), so [`parse_manifest`] and
//! [`CacheGraph::parse`] check everything: sizes, counts, digest syntax, that every layer the
//! graph names is in the manifest, that the flags and times agree. A graph of another version
//! is [`FormatError::Version`], which the importer reports as a warning and ignores.

use crate::error::{Cause, Reason};
use crate::oci::Digest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The media type of the cache graph, the manifest's config blob.
pub const GRAPH_MEDIA_TYPE: &str = "application/vnd.kiln.cache.graph.v1+json";
/// The graph version this kiln writes and reads.
pub const GRAPH_VERSION: u32 = 1;

/// The largest cache manifest read (a manifest of 20,000 layers is about 3 MB).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// The largest cache graph read.
pub const MAX_GRAPH_SIZE: u64 = 4 << 20;
/// The most records a graph may hold.
pub const MAX_RECORDS: usize = 100_000;
/// The most layers one record (one image) may stack.
pub const MAX_RECORD_LAYERS: usize = 1_000;
/// The most filesystem steps one record may list.
pub const MAX_RECORD_STEPS: usize = 10_000;
/// The most layers a manifest may list.
pub const MAX_MANIFEST_LAYERS: usize = 100_000;
/// The most cache mounts a graph may carry.
pub const MAX_CACHE_MOUNTS: usize = 1_000;
/// The longest cache mount id accepted (a Dockerfile's `id=`, usually a path).
pub const MAX_CACHE_MOUNT_ID: usize = 4_096;
/// The latest time accepted in a record: 9999-12-31T23:59:59Z, the last an RFC 3339 year of
/// four digits can write.
pub(super) const MAX_TIME: i64 = 253_402_300_799;
/// The longest media type accepted.
const MAX_MEDIA_TYPE: usize = 255;

/// Why a cache manifest or graph was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("the cache manifest is {size} bytes, more than the {limit}-byte limit")]
    ManifestTooLarge { size: u64, limit: u64 },
    #[error("the cache manifest has media type {0:?}, not {OCI_MANIFEST}", OCI_MANIFEST = crate::oci::media_type::OCI_MANIFEST)]
    ManifestMediaType(String),
    #[error("the cache manifest is not valid")]
    Manifest(#[source] Cause),
    #[error(
        "the cache manifest's config has media type {0:?}, not {GRAPH_MEDIA_TYPE}: it is not a \
         kiln cache (an image or another tool's cache?)"
    )]
    NotAGraph(String),
    #[error("the cache graph is {size} bytes, more than the {limit}-byte limit")]
    GraphTooLarge { size: u64, limit: u64 },
    #[error(
        "the cache graph has version {0}; this kiln reads version {GRAPH_VERSION} (a newer kiln \
         wrote it)"
    )]
    Version(u64),
    #[error("the cache graph is not valid")]
    Graph(#[source] Cause),
    #[error("cache record {key}")]
    Record {
        key: String,
        #[source]
        reason: Cause,
    },
}

/// One layer of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphLayer {
    pub digest: Digest,
    pub size: u64,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    #[serde(rename = "diffID")]
    pub diff_id: Digest,
}

/// One exported build step: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphRecord {
    pub layers: Vec<GraphLayer>,
    pub added: Vec<bool>,
    /// One time per entry of `added`; empty when the step's builder did not record times.
    #[serde(default)]
    pub created: Vec<i64>,
    #[serde(
        rename = "baseCreated",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub base_created: Option<i64>,
}

/// The content of one cache mount (`RUN --mount=type=cache`): see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphCacheMount {
    /// The cache id, as the Dockerfile gave it (or its default, the target).
    pub id: String,
    /// The platform whose builds filled it (`os/arch[/variant]`).
    pub platform: String,
    /// The newest modification time of the directory and everything in it (Unix seconds): an
    /// importer replaces a local copy only when it is older.
    pub modified: i64,
    /// The directory's content as an uncompressed layer tar.
    pub layer: GraphLayer,
}

/// A cache graph: the records of a build, by cache key, and the build's cache mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheGraph {
    pub records: BTreeMap<Digest, GraphRecord>,
    /// Sorted by id, then platform; one per pair.
    pub cache_mounts: Vec<GraphCacheMount>,
}

/// The graph as stored.
#[derive(Serialize)]
struct GraphOut<'a> {
    version: u32,
    records: &'a BTreeMap<Digest, GraphRecord>,
    #[serde(rename = "cacheMounts", skip_serializing_if = "<[_]>::is_empty")]
    cache_mounts: &'a [GraphCacheMount],
}

/// The graph as read: the version first, the records only once it is known. Other fields are
/// ignored (a newer kiln of the same version may add some).
#[derive(Deserialize)]
struct GraphIn {
    version: u64,
    #[serde(default)]
    records: serde_json::Value,
    #[serde(rename = "cacheMounts", default)]
    cache_mounts: serde_json::Value,
}

/// One layer (or the config) of a cache manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBlob {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// A cache manifest: the graph blob and every layer blob it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub config: ManifestBlob,
    pub layers: Vec<ManifestBlob>,
}

impl CacheGraph {
    /// The graph's bytes (deterministic: records sorted by key).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&GraphOut {
            version: GRAPH_VERSION,
            records: &self.records,
            cache_mounts: &self.cache_mounts,
        })
        .unwrap_or_default()
    }

    /// Every layer blob the records and cache mounts name, each once, sorted by digest.
    pub fn blobs(&self) -> Vec<GraphLayer> {
        let mut seen = BTreeMap::new();
        let records = self.records.values().flat_map(|r| &r.layers);
        for layer in records.chain(self.cache_mounts.iter().map(|m| &m.layer)) {
            seen.entry(layer.digest.clone())
                .or_insert_with(|| layer.clone());
        }
        seen.into_values().collect()
    }

    /// The cache manifest for this graph, whose config blob is `graph` (the digest and size of
    /// [`CacheGraph::to_bytes`]).
    pub fn manifest(&self, graph: (&Digest, u64)) -> CacheManifest {
        CacheManifest {
            schema_version: 2,
            media_type: crate::oci::media_type::OCI_MANIFEST.to_string(),
            config: ManifestBlob {
                media_type: GRAPH_MEDIA_TYPE.to_string(),
                digest: graph.0.clone(),
                size: graph.1,
            },
            layers: self
                .blobs()
                .into_iter()
                .map(|layer| ManifestBlob {
                    media_type: layer.media_type,
                    digest: layer.digest,
                    size: layer.size,
                })
                .collect(),
        }
    }

    /// Parses and checks a graph read from a cache whose manifest is `manifest`: every layer
    /// a record names must be listed there with the same size and media type.
    pub fn parse(bytes: &[u8], manifest: &CacheManifest) -> Result<CacheGraph, FormatError> {
        if bytes.len() as u64 > MAX_GRAPH_SIZE {
            return Err(FormatError::GraphTooLarge {
                size: bytes.len() as u64,
                limit: MAX_GRAPH_SIZE,
            });
        }
        let raw: GraphIn =
            serde_json::from_slice(bytes).map_err(|err| FormatError::Graph(err.into()))?;
        if raw.version != u64::from(GRAPH_VERSION) {
            return Err(FormatError::Version(raw.version));
        }
        let raw_records: BTreeMap<String, serde_json::Value> = serde_json::from_value(raw.records)
            .map_err(|err| FormatError::Graph(Reason::caused_by("records", err).into()))?;
        if raw_records.len() > MAX_RECORDS {
            return Err(FormatError::Graph(
                format!(
                    "it has {} records, more than the limit of {MAX_RECORDS}",
                    raw_records.len()
                )
                .into(),
            ));
        }
        let listed: BTreeMap<&Digest, &ManifestBlob> =
            manifest.layers.iter().map(|l| (&l.digest, l)).collect();
        let mut records = BTreeMap::new();
        for (key_text, value) in raw_records {
            let fail = |reason: Cause| FormatError::Record {
                key: key_text.chars().take(80).collect(),
                reason,
            };
            let key = Digest::parse(&key_text).map_err(|err| fail(err.into()))?;
            let record: GraphRecord =
                serde_json::from_value(value).map_err(|err| fail(err.into()))?;
            check_record(&record, &listed).map_err(|reason| fail(reason.into()))?;
            records.insert(key, record);
        }
        let cache_mounts = parse_cache_mounts(raw.cache_mounts, &listed)?;
        Ok(CacheGraph {
            records,
            cache_mounts,
        })
    }
}

/// Parses and checks the graph's `cacheMounts` (absent or `null`: none).
fn parse_cache_mounts(
    value: serde_json::Value,
    listed: &BTreeMap<&Digest, &ManifestBlob>,
) -> Result<Vec<GraphCacheMount>, FormatError> {
    let invalid = |reason: String| FormatError::Graph(Reason::new(reason).into());
    if value.is_null() {
        return Ok(Vec::new());
    }
    let raw: Vec<serde_json::Value> = serde_json::from_value(value)
        .map_err(|err| FormatError::Graph(Reason::caused_by("cacheMounts", err).into()))?;
    if raw.len() > MAX_CACHE_MOUNTS {
        return Err(invalid(format!(
            "it has {} cache mounts, more than the limit of {MAX_CACHE_MOUNTS}",
            raw.len()
        )));
    }
    let mut mounts: Vec<GraphCacheMount> = Vec::with_capacity(raw.len());
    for (index, value) in raw.into_iter().enumerate() {
        let fail = |reason: String| invalid(format!("cache mount {index}: {reason}"));
        let mount: GraphCacheMount =
            serde_json::from_value(value).map_err(|err| fail(err.to_string()))?;
        if mount.id.is_empty() || mount.id.len() > MAX_CACHE_MOUNT_ID {
            return Err(fail(format!(
                "its id has {} bytes; 1 to {MAX_CACHE_MOUNT_ID} are allowed",
                mount.id.len()
            )));
        }
        if let Err(err) = crate::oci::Platform::parse(&mount.platform) {
            return Err(fail(err.to_string()));
        }
        if !(0..=MAX_TIME).contains(&mount.modified) {
            return Err(fail(format!(
                "time {} is not between 1970 and 9999 (Unix seconds)",
                mount.modified
            )));
        }
        check_layers(std::slice::from_ref(&mount.layer), listed).map_err(fail)?;
        if let Some(previous) = mounts.last()
            && (&previous.id, &previous.platform) >= (&mount.id, &mount.platform)
        {
            return Err(fail(format!(
                "{:?} ({}) is out of order or listed twice",
                mount.id.chars().take(80).collect::<String>(),
                mount.platform
            )));
        }
        mounts.push(mount);
    }
    Ok(mounts)
}

/// Checks one record's counts and that its layers are the manifest's.
fn check_record(
    record: &GraphRecord,
    listed: &BTreeMap<&Digest, &ManifestBlob>,
) -> Result<(), String> {
    if record.layers.len() > MAX_RECORD_LAYERS {
        return Err(format!(
            "{} layers, more than the limit of {MAX_RECORD_LAYERS}",
            record.layers.len()
        ));
    }
    if record.added.len() > MAX_RECORD_STEPS {
        return Err(format!(
            "{} steps, more than the limit of {MAX_RECORD_STEPS}",
            record.added.len()
        ));
    }
    if !record.created.is_empty() && record.created.len() != record.added.len() {
        return Err(format!(
            "{} step times for {} steps",
            record.created.len(),
            record.added.len()
        ));
    }
    let times = record.created.iter().chain(&record.base_created);
    if let Some(bad) = times.copied().find(|t| !(0..=MAX_TIME).contains(t)) {
        return Err(format!(
            "time {bad} is not between 1970 and 9999 (Unix seconds)"
        ));
    }
    let added = record.added.iter().filter(|&&a| a).count();
    if added > record.layers.len() {
        return Err(format!(
            "{added} steps added a layer, but the record has {} layers",
            record.layers.len()
        ));
    }
    check_layers(&record.layers, listed)
}

/// Checks that each of `layers` is listed in the manifest with the same size and media type.
fn check_layers(
    layers: &[GraphLayer],
    listed: &BTreeMap<&Digest, &ManifestBlob>,
) -> Result<(), String> {
    for layer in layers {
        match listed.get(&layer.digest) {
            None => {
                return Err(format!(
                    "layer {} is not listed in the cache manifest",
                    layer.digest
                ));
            }
            Some(blob) if blob.size != layer.size || blob.media_type != layer.media_type => {
                return Err(format!(
                    "layer {} has another size or media type than the cache manifest gives",
                    layer.digest
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Parses and checks a cache manifest (`media_type` as the transport gave it).
pub fn parse_manifest(media_type: &str, bytes: &[u8]) -> Result<CacheManifest, FormatError> {
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(FormatError::ManifestTooLarge {
            size: bytes.len() as u64,
            limit: MAX_MANIFEST_SIZE,
        });
    }
    if media_type != crate::oci::media_type::OCI_MANIFEST {
        return Err(FormatError::ManifestMediaType(
            media_type.chars().take(MAX_MEDIA_TYPE).collect(),
        ));
    }
    let manifest: CacheManifest =
        serde_json::from_slice(bytes).map_err(|err| FormatError::Manifest(err.into()))?;
    if manifest.schema_version != 2 {
        return Err(FormatError::Manifest(
            format!("schemaVersion is {}, expected 2", manifest.schema_version).into(),
        ));
    }
    if manifest.media_type != crate::oci::media_type::OCI_MANIFEST {
        return Err(FormatError::ManifestMediaType(
            manifest.media_type.chars().take(MAX_MEDIA_TYPE).collect(),
        ));
    }
    if manifest.config.media_type != GRAPH_MEDIA_TYPE {
        return Err(FormatError::NotAGraph(
            manifest
                .config
                .media_type
                .chars()
                .take(MAX_MEDIA_TYPE)
                .collect(),
        ));
    }
    if manifest.config.size > MAX_GRAPH_SIZE {
        return Err(FormatError::GraphTooLarge {
            size: manifest.config.size,
            limit: MAX_GRAPH_SIZE,
        });
    }
    if manifest.layers.len() > MAX_MANIFEST_LAYERS {
        return Err(FormatError::Manifest(
            format!(
                "it lists {} layers, more than the limit of {MAX_MANIFEST_LAYERS}",
                manifest.layers.len()
            )
            .into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for layer in &manifest.layers {
        let printable = layer
            .media_type
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"');
        if layer.media_type.is_empty() || layer.media_type.len() > MAX_MEDIA_TYPE || !printable {
            return Err(FormatError::Manifest(
                format!("layer {} has an unusable media type", layer.digest).into(),
            ));
        }
        if !seen.insert(&layer.digest) {
            return Err(FormatError::Manifest(
                format!("layer {} is listed twice", layer.digest).into(),
            ));
        }
    }
    Ok(manifest)
}

impl CacheManifest {
    /// The manifest's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str) -> GraphLayer {
        GraphLayer {
            digest: Digest::of(name.as_bytes()),
            size: name.len() as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            diff_id: Digest::of(format!("{name}-tar").as_bytes()),
        }
    }

    fn graph() -> CacheGraph {
        let mut records = BTreeMap::new();
        records.insert(
            Digest::of(b"key1"),
            GraphRecord {
                layers: vec![layer("a")],
                added: vec![true],
                created: vec![1_700_000_000],
                base_created: None,
            },
        );
        records.insert(
            Digest::of(b"key2"),
            GraphRecord {
                layers: vec![layer("a"), layer("bb")],
                added: vec![true, false, true],
                created: vec![1_700_000_000, 1_700_000_001, 1_700_000_002],
                base_created: Some(1_600_000_000),
            },
        );
        CacheGraph {
            records,
            cache_mounts: Vec::new(),
        }
    }

    fn cache_mount(id: &str, name: &str) -> GraphCacheMount {
        GraphCacheMount {
            id: id.into(),
            platform: "linux/amd64".into(),
            modified: 1_700_000_100,
            layer: layer(name),
        }
    }

    fn round_trip(graph: &CacheGraph) -> (CacheManifest, Vec<u8>) {
        let bytes = graph.to_bytes();
        let manifest = graph.manifest((&Digest::of(&bytes), bytes.len() as u64));
        (manifest, bytes)
    }

    #[test]
    fn graph_and_manifest_round_trip() {
        let graph = graph();
        let (manifest, bytes) = round_trip(&graph);
        assert_eq!(graph.to_bytes(), bytes, "serialising is deterministic");
        let parsed_manifest =
            parse_manifest(crate::oci::media_type::OCI_MANIFEST, &manifest.to_bytes()).unwrap();
        assert_eq!(parsed_manifest, manifest);
        assert_eq!(manifest.layers.len(), 2, "each blob once");
        assert_eq!(manifest.config.media_type, GRAPH_MEDIA_TYPE);
        assert_eq!(CacheGraph::parse(&bytes, &parsed_manifest).unwrap(), graph);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["version"], 1);
        let key2 = format!("{}", Digest::of(b"key2"));
        assert_eq!(json["records"][&key2]["baseCreated"], 1_600_000_000);
        assert_eq!(
            json["records"][&key2]["layers"][1]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert!(json["records"][&key2]["layers"][1]["diffID"].is_string());
    }

    #[test]
    fn records_of_an_older_shape_still_parse() {
        let (manifest, _) = round_trip(&graph());
        let a = layer("a");
        let bytes = format!(
            r#"{{"version":1,"records":{{"{}":{{"layers":[{{"digest":"{}","size":1,"mediaType":"{}","diffID":"{}"}}],"added":[true],"future":"ignored"}}}}}}"#,
            Digest::of(b"k"),
            a.digest,
            a.media_type,
            a.diff_id
        );
        let parsed = CacheGraph::parse(bytes.as_bytes(), &manifest).unwrap();
        let record = parsed.records.values().next().unwrap();
        assert!(record.created.is_empty());
        assert_eq!(record.base_created, None);
    }

    #[test]
    fn cache_mounts_round_trip_and_are_optional_both_ways() {
        let mut with_mounts = graph();
        with_mounts.cache_mounts = vec![cache_mount("/go", "go"), cache_mount("/root/.npm", "a")];
        let (manifest, bytes) = round_trip(&with_mounts);
        assert_eq!(
            manifest.layers.len(),
            3,
            "a cache mount's blob is listed once, even when a record shares it"
        );
        assert!(
            manifest
                .layers
                .iter()
                .any(|l| l.digest == layer("go").digest)
        );
        assert_eq!(CacheGraph::parse(&bytes, &manifest).unwrap(), with_mounts);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["version"], 1, "no new version: the field is optional");
        assert_eq!(json["cacheMounts"][0]["id"], "/go");
        assert_eq!(
            json["cacheMounts"][0]["layer"]["diffID"],
            layer("go").diff_id.to_string()
        );

        // A graph written before cache mounts existed has none, and writing one without any
        // leaves the field out: the bytes are what an older kiln wrote.
        let (old_manifest, old_bytes) = round_trip(&graph());
        assert!(!String::from_utf8_lossy(&old_bytes).contains("cacheMounts"));
        let parsed = CacheGraph::parse(&old_bytes, &old_manifest).unwrap();
        assert!(parsed.cache_mounts.is_empty());

        // An older kiln reads the graph as `GraphIn` without the field: serde skips it, as it
        // skips a field that a later kiln may add.
        let mut future = json.clone();
        future["later"] = serde_json::json!({"anything": [1, 2]});
        let bytes = serde_json::to_vec(&future).unwrap();
        assert_eq!(CacheGraph::parse(&bytes, &manifest).unwrap(), with_mounts);
    }

    #[test]
    fn bad_cache_mounts_are_refused_with_a_reason() {
        let mut graph = graph();
        graph.cache_mounts = vec![cache_mount("/a", "go"), cache_mount("/b", "a")];
        let (manifest, good) = round_trip(&graph);
        let good: serde_json::Value = serde_json::from_slice(&good).unwrap();
        let edit = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut value = good.clone();
            change(&mut value);
            serde_json::to_vec(&value).unwrap()
        };
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "not a list",
                edit(&|v| v["cacheMounts"] = "x".into()),
                "cacheMounts",
            ),
            (
                "empty id",
                edit(&|v| v["cacheMounts"][0]["id"] = "".into()),
                "its id has 0 bytes",
            ),
            (
                "bad platform",
                edit(&|v| v["cacheMounts"][0]["platform"] = "linux//amd64".into()),
                "invalid platform",
            ),
            (
                "bad time",
                edit(&|v| v["cacheMounts"][1]["modified"] = (-5).into()),
                "time -5 is not between",
            ),
            (
                "unlisted blob",
                edit(&|v| {
                    v["cacheMounts"][0]["layer"] = serde_json::to_value(layer("zzz")).unwrap()
                }),
                "not listed in the cache manifest",
            ),
            (
                "twice",
                edit(&|v| v["cacheMounts"][1]["id"] = "/a".into()),
                "out of order or listed twice",
            ),
            (
                "no layer",
                edit(&|v| v["cacheMounts"][0]["layer"] = serde_json::Value::Null),
                "cache mount 0",
            ),
        ];
        let mut failures = Vec::new();
        for (name, bytes, expected) in &cases {
            match CacheGraph::parse(bytes, &manifest) {
                Ok(_) => failures.push(format!("{name}: accepted")),
                Err(err) if !crate::error::chain(&err).contains(expected) => {
                    failures.push(format!("{name}: {}", crate::error::chain(&err)));
                }
                Err(_) => {}
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 7);
    }

    #[test]
    fn bad_graphs_are_refused_with_a_reason() {
        let graph = graph();
        let (manifest, good) = round_trip(&graph);
        let good: serde_json::Value = serde_json::from_slice(&good).unwrap();
        let key = Digest::of(b"key2").to_string();
        let edit = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut value = good.clone();
            change(&mut value);
            serde_json::to_vec(&value).unwrap()
        };
        let unlisted = layer("zzz");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("not json", b"{\"version\": ".to_vec(), "not valid"),
            ("no version", b"{\"records\":{}}".to_vec(), "not valid"),
            ("version 2", edit(&|v| v["version"] = 2.into()), "version 2"),
            (
                "version as text",
                edit(&|v| v["version"] = "1".into()),
                "not valid",
            ),
            (
                "bad key",
                edit(&|v| {
                    let record = v["records"][&key].clone();
                    v["records"]["sha256:../../x"] = record;
                }),
                "sha256:../../x",
            ),
            (
                "bad layer digest",
                edit(&|v| v["records"][&key]["layers"][0]["digest"] = "sha256:AB".into()),
                "invalid digest",
            ),
            (
                "negative size",
                edit(&|v| v["records"][&key]["layers"][0]["size"] = (-1).into()),
                "invalid value",
            ),
            (
                "unlisted layer",
                edit(&|v| {
                    v["records"][&key]["layers"][0] = serde_json::to_value(&unlisted).unwrap()
                }),
                "not listed in the cache manifest",
            ),
            (
                "other size than the manifest",
                edit(&|v| v["records"][&key]["layers"][0]["size"] = 7.into()),
                "another size",
            ),
            (
                "times do not match steps",
                edit(&|v| v["records"][&key]["created"] = serde_json::json!([1])),
                "1 step times for 3 steps",
            ),
            (
                "more added than layers",
                edit(&|v| v["records"][&key]["added"] = serde_json::json!([true, true, true])),
                "3 steps added a layer",
            ),
            (
                "a time before 1970",
                edit(&|v| v["records"][&key]["baseCreated"] = (-1).into()),
                "time -1 is not between 1970 and 9999",
            ),
            (
                "a time after 9999",
                edit(&|v| v["records"][&key]["created"][1] = (MAX_TIME + 1).into()),
                "is not between 1970 and 9999",
            ),
            (
                "too many layers",
                edit(&|v| {
                    let one = v["records"][&key]["layers"][0].clone();
                    v["records"][&key]["layers"] =
                        serde_json::Value::Array(vec![one; MAX_RECORD_LAYERS + 1]);
                }),
                "more than the limit",
            ),
        ];
        let mut failures = Vec::new();
        for (name, bytes, expected) in &cases {
            match CacheGraph::parse(bytes, &manifest) {
                Ok(_) => failures.push(format!("{name}: accepted")),
                Err(err) if !crate::error::chain(&err).contains(expected) => {
                    failures.push(format!("{name}: {}", crate::error::chain(&err)));
                }
                Err(_) => {}
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 14);
        let huge = vec![b' '; (MAX_GRAPH_SIZE + 1) as usize];
        assert!(matches!(
            CacheGraph::parse(&huge, &manifest),
            Err(FormatError::GraphTooLarge { .. })
        ));
    }

    #[test]
    fn bad_manifests_are_refused_with_a_reason() {
        let (manifest, _) = round_trip(&graph());
        let good = serde_json::to_value(&manifest).unwrap();
        let edit = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut value = good.clone();
            change(&mut value);
            serde_json::to_vec(&value).unwrap()
        };
        let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
            (
                "an image index",
                "application/vnd.oci.image.index.v1+json",
                manifest.to_bytes(),
                "has media type",
            ),
            (
                "garbage",
                crate::oci::media_type::OCI_MANIFEST,
                b"\xff".to_vec(),
                "not valid",
            ),
            (
                "schema 1",
                crate::oci::media_type::OCI_MANIFEST,
                edit(&|v| v["schemaVersion"] = 1.into()),
                "schemaVersion is 1",
            ),
            (
                "an image config",
                crate::oci::media_type::OCI_MANIFEST,
                edit(&|v| {
                    v["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json".into()
                }),
                "not a kiln cache",
            ),
            (
                "huge graph",
                crate::oci::media_type::OCI_MANIFEST,
                edit(&|v| v["config"]["size"] = (MAX_GRAPH_SIZE + 1).into()),
                "more than the",
            ),
            (
                "duplicate layer",
                crate::oci::media_type::OCI_MANIFEST,
                edit(&|v| {
                    let first = v["layers"][0].clone();
                    v["layers"][1] = first;
                }),
                "listed twice",
            ),
            (
                "odd media type",
                crate::oci::media_type::OCI_MANIFEST,
                edit(&|v| v["layers"][0]["mediaType"] = "a b".into()),
                "unusable media type",
            ),
            (
                "bad digest",
                crate::oci::media_type::OCI_MANIFEST,
                edit(&|v| v["layers"][0]["digest"] = "md5:x".into()),
                "not valid",
            ),
        ];
        let mut failures = Vec::new();
        for (name, media_type, bytes, expected) in &cases {
            match parse_manifest(media_type, bytes) {
                Ok(_) => failures.push(format!("{name}: accepted")),
                Err(err) if !crate::error::chain(&err).contains(expected) => {
                    failures.push(format!("{name}: {}", crate::error::chain(&err)));
                }
                Err(_) => {}
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 8);
    }
}
