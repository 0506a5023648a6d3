//! The shared build cache (`--cache-to`, `--cache-from`): build records exported to a place
//! other machines read ([`CacheTransport`]: a directory, [`local::LocalCache`], or a registry),
//! and imported from there at the start of a build.
//!
//! - [`format`]: the format, an OCI artifact whose config is kiln's cache graph.
//! - [`export`]: after a build, every blob the graph names is pushed, the manifest last, so a
//!   reader never sees a manifest that names missing blobs.
//! - [`ImportedCache`]: only the manifests and graphs are read at the start of a build; a
//!   record hits when each of its layers is in the store or held by the cache it came from,
//!   and a layer is fetched (verified) only when its bytes are needed.
//! - [`cache_mounts`]: the content of `RUN --mount=type=cache` directories, exported with the
//!   records (`mode=max` or `cache-mounts=true`) and restored before the first step that takes
//!   one.
//! - [`materialize`]: a layer that an image names but the store does not hold (an image built
//!   from a shared cache, [`crate::store::BlobOrigin`]) is fetched from its origin.

pub mod cache_mounts;
pub mod format;
pub mod local;
mod registry;
pub mod spec;
pub mod transport;

pub use format::{
    CacheGraph, CacheManifest, FormatError, GraphCacheMount, GraphLayer, GraphRecord,
};
pub use local::LocalCache;
pub use registry::RegistryCache;
pub use spec::{
    CacheLocation, CacheToSpec, ExportMode, SpecError, parse_cache_from, parse_cache_to,
};
pub use transport::{CacheTransport, TransportError};

use crate::error::Chain;
use crate::layer::CompressionConfig;
use crate::oci::Digest;
use crate::oci::Reference;
use crate::registry::{Client, ClientOptions, PushFormat, RegistryError};
use crate::store::BlobError;
use crate::store::{BlobOrigin, FetchOrigins, LayerInfo, MediaTypes, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// A shared cache operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum SharedCacheError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The transport failed; `what` says what kiln was doing, `source` how the transport failed.
    #[error("{what} ({place})")]
    Transport {
        what: String,
        place: String,
        #[source]
        source: TransportError,
    },
    #[error("cannot open the registry cache {reference}")]
    Registry {
        reference: String,
        #[source]
        source: Box<crate::registry::RegistryError>,
    },
    #[error("the registry cache {reference} is not an image reference")]
    Reference {
        reference: String,
        #[source]
        source: crate::oci::ReferenceError,
    },
    #[error(
        "layer {digest} is not in the store and no shared cache of this build holds it; run \
         the build again without --cache-from"
    )]
    Unknown { digest: Digest },
}

/// Where one `--cache-to` writes and which records.
#[derive(Debug, Clone)]
pub struct CacheExport {
    pub transport: Arc<dyn CacheTransport>,
    pub mode: ExportMode,
    /// Whether the content of the build's cache mounts goes too
    /// ([`CacheToSpec::exports_cache_mounts`]).
    pub cache_mounts: bool,
    /// The records' layers' compression ([`CacheToSpec::compression`]).
    pub compression: CompressionConfig,
}

/// Opens the transport of a parsed `--cache-to`/`--cache-from` location; a registry is spoken
/// to with `registry` (insecure registries, credentials).
pub fn open(
    location: &CacheLocation,
    registry: &ClientOptions,
) -> Result<Arc<dyn CacheTransport>, SharedCacheError> {
    match location {
        CacheLocation::Local { dir, tag } => Ok(Arc::new(LocalCache::new(dir, tag))),
        CacheLocation::Registry { reference } => open_registry(reference, registry),
    }
}

/// The registry transport of `reference` (`host[:port]/repository[:tag]`). This is the one
/// place a registry cache is opened, for `--cache-to`/`--cache-from` and for fetching the
/// absent layers of an image built from one ([`BlobOrigin::Registry`]).
pub fn open_registry(
    reference: &str,
    options: &ClientOptions,
) -> Result<Arc<dyn CacheTransport>, SharedCacheError> {
    let registry_error = |source: RegistryError| SharedCacheError::Registry {
        reference: reference.to_string(),
        source: Box::new(source),
    };
    let parsed =
        Reference::parse_normalized(reference).map_err(|source| SharedCacheError::Reference {
            reference: reference.to_string(),
            source,
        })?;
    let client = Client::new(options.clone()).map_err(registry_error)?;
    Ok(Arc::new(
        RegistryCache::new(client, parsed).map_err(registry_error)?,
    ))
}

/// The transport that holds the blobs of `origin`.
pub fn open_origin(origin: &BlobOrigin) -> Result<Arc<dyn CacheTransport>, SharedCacheError> {
    match origin {
        BlobOrigin::OciLayout(dir) => Ok(Arc::new(LocalCache::new(dir, local::DEFAULT_TAG))),
        // The registry's defaults: an origin does not remember `--insecure-registry` (loopback
        // registries are plain HTTP anyway) and credentials come from the docker config.
        BlobOrigin::Registry(repository) => open_registry(repository, &ClientOptions::default()),
    }
}

/// Makes sure the store holds the blob of `layer`: when it is absent but has a recorded
/// origin, fetches it from there (digest and size verified; on a mismatch nothing enters the
/// store) and forgets the origin. Returns whether it fetched. A blob that is absent without an
/// origin is left for the caller to report as missing.
pub fn materialize(store: &Store, layer: &LayerInfo) -> Result<bool, SharedCacheError> {
    Ok(materialize_all(store, std::slice::from_ref(layer))? == 1)
}

/// [`materialize`] for several layers, opening each origin once (a registry origin is a client,
/// a runtime and a token: one per layer would be wasted work). Returns how many it fetched.
pub fn materialize_all(store: &Store, layers: &[LayerInfo]) -> Result<usize, SharedCacheError> {
    let mut opened: Vec<(BlobOrigin, Arc<dyn CacheTransport>)> = Vec::new();
    let mut fetched = 0;
    for layer in layers {
        if store.blobs().contains(&layer.digest) {
            continue;
        }
        let Some(origin) = store.origin(&layer.digest) else {
            continue;
        };
        let transport = match opened.iter().find(|(known, _)| *known == origin) {
            Some((_, transport)) => transport.clone(),
            None => {
                let transport = open_origin(&origin)?;
                opened.push((origin, transport.clone()));
                transport
            }
        };
        transport
            .fetch_blob(&layer.digest, layer.size, store.blobs())
            .map_err(|source| SharedCacheError::Transport {
                what: format!("cannot fetch layer {}", layer.digest),
                place: transport.describe(),
                source,
            })?;
        store.remove_origin(&layer.digest)?;
        fetched += 1;
    }
    Ok(fetched)
}

/// The shared cache's [`FetchOrigins`]: [`materialize_all`] through the transports.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheOrigins;

impl FetchOrigins for CacheOrigins {
    fn fetch(
        &self,
        store: &Store,
        layers: &[LayerInfo],
    ) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        Ok(materialize_all(store, layers)?)
    }
}

/// [`CacheOrigins`] as the store's fetcher, for [`crate::registry::push`].
pub fn origins() -> Arc<dyn FetchOrigins> {
    Arc::new(CacheOrigins)
}

/// What importing one `--cache-from` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The transport, as it describes itself.
    pub source: String,
    /// How many records it holds (0 when it has none or could not be read).
    pub records: usize,
    /// Why it is not used, when it could not be read (the build then runs without it).
    pub warning: Option<String>,
}

/// One imported cache.
#[derive(Debug)]
struct Source {
    transport: Arc<dyn CacheTransport>,
    graph: CacheGraph,
}

/// The records of the `--cache-from` caches of a build, in the order given.
#[derive(Debug, Default)]
pub struct ImportedCache {
    sources: Vec<Source>,
    /// Which source lists each layer blob (the first that does), with its size.
    blobs: BTreeMap<Digest, (usize, u64)>,
    /// `has_blob` answers, asked once per source and blob.
    held: Mutex<BTreeMap<(usize, Digest), bool>>,
    /// The cache ids [`ImportedCache::cache_mount_is_newer`] was asked about.
    asked_mounts: Mutex<std::collections::BTreeSet<String>>,
}

impl ImportedCache {
    /// Reads the manifest and graph of each transport (nothing else). A cache that is missing
    /// is empty; one that cannot be read or is not a valid kiln cache is left out with a warning
    /// in its report, and the build runs without it.
    pub fn import(
        transports: &[Arc<dyn CacheTransport>],
        store: &Store,
    ) -> (ImportedCache, Vec<ImportReport>) {
        let mut imported = ImportedCache::default();
        let mut reports = Vec::new();
        for transport in transports {
            let (records, warning) = match read_graph(transport.as_ref(), store) {
                Ok(Some(graph)) => {
                    let count = graph.records.len();
                    let index = imported.sources.len();
                    for layer in graph.blobs() {
                        imported
                            .blobs
                            .entry(layer.digest)
                            .or_insert((index, layer.size));
                    }
                    imported.sources.push(Source {
                        transport: transport.clone(),
                        graph,
                    });
                    (count, None)
                }
                Ok(None) => (0, None),
                Err(err) => (0, Some(format!("{}; building without it", Chain(&err)))),
            };
            reports.push(ImportReport {
                source: transport.describe(),
                records,
                warning,
            });
        }
        (imported, reports)
    }

    /// Whether no cache was imported.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The record for `key` of the first cache that has one whose layers are each in the store
    /// or held by that cache.
    pub fn lookup(&self, key: &Digest, store: &Store) -> Option<GraphRecord> {
        self.sources.iter().enumerate().find_map(|(index, source)| {
            let record = source.graph.records.get(key)?;
            let usable = record.layers.iter().all(|layer| {
                store.blobs().contains(&layer.digest) || self.holds(index, &layer.digest)
            });
            usable.then(|| record.clone())
        })
    }

    /// Whether source `index` holds the blob (asked once; an error counts as not held).
    fn holds(&self, index: usize, digest: &Digest) -> bool {
        let memo = |held: &Mutex<BTreeMap<(usize, Digest), bool>>| {
            held.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&(index, digest.clone()))
                .copied()
        };
        if let Some(answer) = memo(&self.held) {
            return answer;
        }
        // Asked without the lock (a registry answers over the network), so lookups of other
        // steps go on meanwhile; two may ask the same question once each.
        let answer = self
            .sources
            .get(index)
            .is_some_and(|s| s.transport.has_blob(digest).unwrap_or(false));
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((index, digest.clone()), answer);
        answer
    }

    /// Fetches into the store each of `layers` whose blob is absent and that an imported cache
    /// lists (verified on the way in). Returns how many were fetched. Absent layers no cache
    /// lists are left alone.
    pub fn fetch_absent(
        &self,
        store: &Store,
        layers: &[LayerInfo],
    ) -> Result<usize, SharedCacheError> {
        let mut fetched = 0;
        for layer in layers {
            if store.blobs().contains(&layer.digest) {
                continue;
            }
            let Some(source) = self.source_of(&layer.digest) else {
                continue;
            };
            source
                .transport
                .fetch_blob(&layer.digest, layer.size, store.blobs())
                .map_err(|err| SharedCacheError::Transport {
                    what: format!("cannot fetch layer {}", layer.digest),
                    place: source.transport.describe(),
                    source: err,
                })?;
            fetched += 1;
        }
        Ok(fetched)
    }

    /// For each of `layers` whose blob is absent: records in the store where it can be fetched
    /// from, or fetches it when its cache cannot name a lasting origin. After this the store
    /// accepts an image of these layers. Returns how many were fetched.
    pub fn keep_absent(
        &self,
        store: &Store,
        layers: &[LayerInfo],
    ) -> Result<usize, SharedCacheError> {
        let mut fetch = Vec::new();
        for layer in layers {
            // A layer of a base image that was itself built from a shared cache already has
            // its origin.
            if store.has_or_knows(&layer.digest) {
                continue;
            }
            let source =
                self.source_of(&layer.digest)
                    .ok_or_else(|| SharedCacheError::Unknown {
                        digest: layer.digest.clone(),
                    })?;
            match source.transport.origin() {
                Some(origin) => store.record_origin(&layer.digest, &origin)?,
                None => fetch.push(layer.clone()),
            }
        }
        self.fetch_absent(store, &fetch)
    }

    /// Whether an imported cache lists the blob.
    pub fn lists(&self, digest: &Digest) -> bool {
        self.blobs.contains_key(digest)
    }

    fn source_of(&self, digest: &Digest) -> Option<&Source> {
        let (index, _) = self.blobs.get(digest)?;
        self.sources.get(*index)
    }
}

/// Reads and checks the manifest and graph a transport holds; `None` when it holds none.
fn read_graph(
    transport: &dyn CacheTransport,
    store: &Store,
) -> Result<Option<CacheGraph>, SharedCacheError> {
    let place = || transport.describe();
    let Some((media_type, bytes)) =
        transport
            .read_manifest()
            .map_err(|source| SharedCacheError::Transport {
                what: "cannot read the cache manifest".to_string(),
                place: place(),
                source,
            })?
    else {
        return Ok(None);
    };
    let manifest = format::parse_manifest(&media_type, &bytes)?;
    let config = &manifest.config;
    if !store.blobs().contains(&config.digest) {
        transport
            .fetch_blob(&config.digest, config.size, store.blobs())
            .map_err(|source| SharedCacheError::Transport {
                what: format!("cannot fetch the cache graph {}", config.digest),
                place: place(),
                source,
            })?;
    }
    let graph_bytes = store.blobs().read_sized(&config.digest, config.size)?;
    Ok(Some(CacheGraph::parse(&graph_bytes, &manifest)?))
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub records: usize,
    /// Layer blobs copied (the others were there already).
    pub pushed: usize,
    /// The cache manifest written: its media type, digest and size (BuildKit's exporter
    /// response `cache.manifest`).
    pub manifest: (String, Digest, u64),
}

/// Writes `graph` to `transport` with its records' layers in `compression` (kept variants, or
/// compressed now and kept, as an image export does; the cache mounts' content stays an
/// uncompressed tar): every layer blob it names that the transport lacks (from the store; an
/// absent one is first fetched through `imported` or its origin), then the graph blob, then the
/// manifest.
pub fn export(
    graph: &CacheGraph,
    store: &Store,
    imported: &ImportedCache,
    transport: &dyn CacheTransport,
    compression: &CompressionConfig,
) -> Result<ExportReport, SharedCacheError> {
    let _lease = store.lease()?;
    let compressed = compress_layers(graph, store, imported, compression)?;
    let graph = &compressed;
    let place = || transport.describe();
    let transport_error = |what: String| {
        move |source| SharedCacheError::Transport {
            what,
            place: place(),
            source,
        }
    };
    let mut report = ExportReport {
        records: graph.records.len(),
        pushed: 0,
        manifest: (String::new(), Digest::of(b""), 0),
    };
    for layer in graph.blobs() {
        let held = transport
            .has_blob(&layer.digest)
            .map_err(transport_error(format!(
                "cannot look for blob {}",
                layer.digest
            )))?;
        if held {
            continue;
        }
        let info = LayerInfo {
            digest: layer.digest.clone(),
            size: layer.size,
            media_type: layer.media_type.as_str().into(),
            diff_id: layer.diff_id.clone(),
        };
        imported.fetch_absent(store, std::slice::from_ref(&info))?;
        materialize(store, &info)?;
        transport
            .push_blob(&layer.digest, layer.size, store.blobs())
            .map_err(transport_error(format!(
                "cannot push layer {}",
                layer.digest
            )))?;
        report.pushed += 1;
    }
    let graph_bytes = graph.to_bytes();
    let graph_blob = store.blobs().write(&graph_bytes)?;
    transport
        .push_blob(&graph_blob.digest, graph_blob.size, store.blobs())
        .map_err(transport_error("cannot push the cache graph".to_string()))?;
    let manifest = graph
        .manifest((&graph_blob.digest, graph_blob.size))
        .to_bytes();
    transport
        .write_manifest(crate::oci::media_type::OCI_MANIFEST, &manifest)
        .map_err(transport_error(
            "cannot write the cache manifest".to_string(),
        ))?;
    report.manifest = (
        crate::oci::media_type::OCI_MANIFEST.to_string(),
        Digest::of(&manifest),
        manifest.len() as u64,
    );
    Ok(report)
}

/// `graph` with its records' layers in `compression` (see [`export`]).
fn compress_layers(
    graph: &CacheGraph,
    store: &Store,
    imported: &ImportedCache,
    compression: &CompressionConfig,
) -> Result<CacheGraph, SharedCacheError> {
    let mut layers: Vec<LayerInfo> = Vec::new();
    for layer in graph.records.values().flat_map(|r| &r.layers) {
        if !layers.iter().any(|l| l.digest == layer.digest) {
            layers.push(LayerInfo {
                digest: layer.digest.clone(),
                size: layer.size,
                media_type: layer.media_type.as_str().into(),
                diff_id: layer.diff_id.clone(),
            });
        }
    }
    // Only a layer that must be compressed anew needs its bytes here.
    let needed: Vec<LayerInfo> = layers
        .iter()
        .filter(|l| {
            let own = crate::layer::Compression::from_media_type(l.media_type.as_ref());
            let kept = own == Some(compression.compression)
                || store.variant(&l.diff_id, compression.compression).is_some();
            (compression.force || !kept) && !store.blobs().contains(&l.digest)
        })
        .cloned()
        .collect();
    imported.fetch_absent(store, &needed)?;
    for layer in &needed {
        materialize(store, layer)?;
    }
    let format = PushFormat {
        compression: *compression,
        media_types: Some(MediaTypes::Oci),
        ..PushFormat::default()
    };
    let converted = format.with_layer_format(|layer_format| {
        store.layers_as(&layers, layer_format, MediaTypes::Oci)
    })?;
    let mut compressed = graph.clone();
    for record in compressed.records.values_mut() {
        for layer in &mut record.layers {
            if let Some((_, new)) = layers
                .iter()
                .zip(&converted)
                .find(|(old, _)| old.digest == layer.digest)
            {
                layer.digest = new.digest.clone();
                layer.size = new.size;
                layer.media_type = new.media_type.to_string();
            }
        }
    }
    Ok(compressed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records' layers as they are (the tests' blobs are not real tars).
    pub(super) fn uncompressed() -> CompressionConfig {
        CompressionConfig::new(crate::layer::Compression::None)
    }

    /// A store holding two layer blobs, and a graph of one record stacking them.
    fn store_with_record() -> (tempfile::TempDir, Store, Digest, CacheGraph, Vec<LayerInfo>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layers: Vec<LayerInfo> = [b"layer one".as_slice(), b"layer two"]
            .iter()
            .map(|bytes| {
                let blob = store.blobs().write(bytes).unwrap();
                LayerInfo {
                    digest: blob.digest.clone(),
                    size: blob.size,
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    diff_id: blob.digest,
                }
            })
            .collect();
        let key = Digest::of(b"key");
        let record = GraphRecord {
            layers: layers
                .iter()
                .map(|l| GraphLayer {
                    digest: l.digest.clone(),
                    size: l.size,
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    diff_id: l.diff_id.clone(),
                })
                .collect(),
            added: vec![true, true],
            created: vec![10, 20],
            base_created: None,
        };
        let graph = CacheGraph {
            records: BTreeMap::from([(key.clone(), record)]),
            cache_mounts: Vec::new(),
        };
        (dir, store, key, graph, layers)
    }

    #[test]
    fn export_import_lookup_and_lazy_layers() {
        let (_a_dir, a, key, graph, layers) = store_with_record();
        let cache_dir = tempfile::tempdir().unwrap();
        let cache: Arc<dyn CacheTransport> = Arc::new(LocalCache::new(cache_dir.path(), "t"));
        let report = export(
            &graph,
            &a,
            &ImportedCache::default(),
            cache.as_ref(),
            &uncompressed(),
        )
        .unwrap();
        assert_eq!((report.records, report.pushed), (1, 2));
        // The manifest reported is the one written.
        let (media_type, written) = cache.read_manifest().unwrap().unwrap();
        assert_eq!(
            report.manifest,
            (media_type, Digest::of(&written), written.len() as u64)
        );
        let again = export(
            &graph,
            &a,
            &ImportedCache::default(),
            cache.as_ref(),
            &uncompressed(),
        )
        .unwrap();
        assert_eq!(
            again.pushed, 0,
            "blobs the cache holds are not copied again"
        );

        let b_dir = tempfile::tempdir().unwrap();
        let b = Store::open(b_dir.path()).unwrap();
        let (imported, reports) = ImportedCache::import(std::slice::from_ref(&cache), &b);
        assert_eq!(reports.len(), 1);
        assert_eq!((reports[0].records, reports[0].warning.clone()), (1, None));
        let found = imported.lookup(&key, &b).expect("a hit");
        assert_eq!(found, graph.records[&key]);
        assert!(imported.lookup(&Digest::of(b"other"), &b).is_none());
        assert!(layers.iter().all(|l| !b.blobs().contains(&l.digest)));

        // Written lazily: origins, no blobs; then fetched through the origin.
        assert_eq!(imported.keep_absent(&b, &layers).unwrap(), 0);
        for layer in &layers {
            assert_eq!(
                b.origin(&layer.digest),
                Some(BlobOrigin::OciLayout(cache_dir.path().to_path_buf()))
            );
            assert!(materialize(&b, layer).unwrap());
            assert!(!materialize(&b, layer).unwrap(), "once is enough");
            assert!(b.blobs().contains(&layer.digest));
            assert_eq!(b.origin(&layer.digest), None);
        }
    }

    #[test]
    fn a_record_whose_blob_the_cache_lost_is_a_miss() {
        let (_a_dir, a, key, graph, layers) = store_with_record();
        let cache_dir = tempfile::tempdir().unwrap();
        let cache: Arc<dyn CacheTransport> = Arc::new(LocalCache::new(cache_dir.path(), "t"));
        export(
            &graph,
            &a,
            &ImportedCache::default(),
            cache.as_ref(),
            &uncompressed(),
        )
        .unwrap();
        let lost = cache_dir
            .path()
            .join("blobs/sha256")
            .join(layers[1].digest.hex());
        std::fs::remove_file(lost).unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        let b = Store::open(b_dir.path()).unwrap();
        let (imported, _) = ImportedCache::import(&[cache], &b);
        assert!(imported.lookup(&key, &b).is_none());
        // The layer is in B's store now: the record hits again.
        b.blobs().write(b"layer two").unwrap();
        assert!(imported.lookup(&key, &b).is_some());
    }

    #[test]
    fn an_unreadable_cache_is_a_warning_and_a_missing_one_is_empty() {
        let b_dir = tempfile::tempdir().unwrap();
        let b = Store::open(b_dir.path()).unwrap();
        let missing = tempfile::tempdir().unwrap();
        let damaged = tempfile::tempdir().unwrap();
        std::fs::write(damaged.path().join("index.json"), b"{").unwrap();
        let transports: Vec<Arc<dyn CacheTransport>> = vec![
            Arc::new(LocalCache::new(&missing.path().join("none"), "t")),
            Arc::new(LocalCache::new(damaged.path(), "t")),
        ];
        let (imported, reports) = ImportedCache::import(&transports, &b);
        assert!(imported.is_empty());
        assert_eq!(reports[0].warning, None);
        let warning = reports[1].warning.clone().unwrap_or_default();
        assert!(
            warning.contains("not a valid OCI layout index")
                && warning.ends_with("building without it"),
            "{warning}"
        );
        let err = crate::error::chain(
            &open_registry("127.0.0.1:5000/Cache", &ClientOptions::default()).unwrap_err(),
        );
        assert!(
            err.contains("127.0.0.1:5000/Cache is not an image reference")
                && err.contains("must be lowercase"),
            "{err}"
        );
    }
}
