//! The image store: an OCI image layout (image-layout spec 1.0/1.1) that skopeo, umoci and
//! containerd read as it is, plus kiln's own directories beside it.
//!
//! ```text
//! ROOT/
//!   oci-layout            {"imageLayoutVersion":"1.0.0"}
//!   index.json            one descriptor per tag (see `index`), untagged images without names
//!   blobs/sha256/<hex>    manifests, configs, layers (see crate::store::blob)
//!   snapshots/<hex>/      one unpacked layer per diff ID: overlay lower directories
//!   origins/sha256/<hex>  where an absent layer blob can be fetched from (see `origin`)
//!   variants/<diff id hex>/<compression>
//!                         the blob of a layer in another compression (see `variant`)
//!   containers/<id>/      kiln run's containers; container.json names the image in use and
//!                         keeps the run state, options.json the run options, <id>-json.log
//!                         the output (see crate::container::lifecycle)
//!   run-owners/<id>       a marker per record that names an owner (`kiln run --rm`)
//!   cache-mounts/         RUN --mount=type=cache directories (see `cache_mount`)
//!   cache/                the build cache's records, git repositories and checkouts
//!                         (crate::git), URL records (crate::fetch)
//!   tmp/                  staging for everything on its way in (same filesystem); a pull's
//!                         partial blobs (`sha256-<hex>.partial`) wait there to be resumed
//!   index.lock, gc.lock   lock files (containers.lock: while a container name is taken)
//! ```
//!
//! Concurrency: `index.json` is only replaced by atomic rename, so readers never lock; every
//! change is a read-modify-write under an exclusive lock on `index.lock`, so concurrent kiln
//! processes never lose each other's tags. Garbage collection ([`Store::remove_image`],
//! [`Store::prune`]) takes `gc.lock` exclusively; writers hold it shared through a [`Lease`] from
//! their first blob until the image is tagged, so a collection never deletes blobs that are
//! written but not referenced yet. Take locks in that order: `gc.lock`, then `index.lock`. The
//! same hold ([`Collection`]) guards what higher modules keep under `cache/` (git checkouts,
//! URL records): whoever reads one holds a lease, whoever deletes one holds the collection.
//!
//! The store is private to its owner: its root and kiln's directories `0700`, its files `0600`
//! (see `private`).
//!
//! Image IDs are config digests, as in docker; names are docker references
//! ([`crate::oci::Reference`]) kept normalised and printed familiar ([`ImageName`]).

mod annotated;
mod attestation;
pub mod blob;
mod cache_mount;
mod container;
mod gc;
mod index;
mod multi_platform;
mod name;
mod origin;
mod private;
mod variant;

pub use annotated::Annotated;
pub use blob::{
    BlobError, BlobReader, BlobRef, BlobStore, BlobWriter, Download, MAX_DOCUMENT_SIZE,
};
pub use cache_mount::{
    CacheMountError, CacheMountInfo, CacheMountLease, CacheMountPrune, CacheSharing,
};
pub use container::{
    CRASHED_EXIT_CODE, ContainerConfig, ContainerRecord, ContainerState, PublishedPortRecord,
    RunOwner, RunState, valid_container_name,
};
pub use gc::{DiskUsage, PruneOptions, PruneReport, Removal, Usage};
pub use index::{
    CONTAINERD_NAME, REF_NAME, TAGGED_AT, entry_name, is_attestation, is_index, is_manifest,
};
pub use multi_platform::{IndexManifest, StoredEntry, StoredIndex, config_platform, oci_platform};
pub use name::{ImageName, NameError};
pub use origin::{BlobOrigin, FetchOrigins};
pub use variant::{ConvertedIndex, LayerFormat, MediaTypes, Recompress, Variant};

use crate::error::{Cause, Reason};
use crate::oci::Digest;
use crate::oci::reference::Reference;
use crate::oci::timestamp;
use crate::sys::FsError;
use crate::sys::atomic::{
    IoContext as _, Staging, StaleReport, atomic_write_in, create_private_dir_all, remove_tree,
};
use annotated::{annotate, with_annotations};
use blob::oci_digest;
use index::{Index, without_names};
use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageManifest, ImageManifestBuilder, MediaType,
};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

/// The `oci-layout` file's content (image-layout spec).
const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("image ID prefix {prefix:?} is ambiguous: it matches {}; give more characters", .matches.join(", "))]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },
    #[error("corrupt image index")]
    Index(#[source] Reason),
    #[error("{what} {digest} is not valid")]
    Document {
        what: &'static str,
        digest: Digest,
        #[source]
        source: Cause,
    },
    #[error(
        "{} is not an OCI image layout ({reason}); point --root (or KILN_ROOT) at an empty \
         directory or an existing kiln store",
        .path.display()
    )]
    NotALayout { path: PathBuf, reason: String },
    #[error("{0} is a multi-platform image index, where one platform's image is needed")]
    MultiPlatform(String),
    /// A multi-platform image without the platform asked for (here).
    #[error(
        "{name} has no image for platform {platform} here (it has: {}); choose one with --platform",
        .available.join(", ")
    )]
    NoPlatform {
        name: String,
        platform: String,
        available: Vec<String>,
    },
    /// A single-platform image of another platform than the one asked for.
    #[error("{name} is an image for {actual}, not {wanted}")]
    WrongPlatform {
        name: String,
        wanted: String,
        actual: String,
    },
    #[error("the image config lists {diff_ids} layer diff IDs, but {layers} layers were given")]
    LayerCount { diff_ids: usize, layers: usize },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("cannot create the snapshot of layer {diff_id}")]
    Snapshot {
        diff_id: Digest,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "invalid container id {0:?}: use 1 to 128 letters, digits, '_', '.' or '-', starting \
         with a letter or digit"
    )]
    ContainerId(String),
    #[error("no such container: {0}")]
    NoContainer(String),
    /// A prefix of more than one container's id (docker's message).
    #[error("multiple IDs found with provided prefix: {0}")]
    AmbiguousContainer(String),
    #[error(
        "invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least 2 \
         and at most 128 characters"
    )]
    ContainerName(String),
    /// docker's conflict message.
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You \
         have to remove (or rename) that container to be able to reuse that name."
    )]
    ContainerNameInUse { name: String, id: String },
    /// A layer could not be made (or checked) in the compression an export asked for.
    #[error("cannot make the {compression} variant of layer {diff_id}")]
    Variant {
        diff_id: Digest,
        compression: &'static str,
        #[source]
        source: Cause,
    },
    #[error("container record {}", .path.display())]
    ContainerRecord {
        path: PathBuf,
        #[source]
        source: Cause,
    },
}

/// An OCI image layout with kiln's directories beside it: see the module documentation.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    blobs: BlobStore,
}

/// A shared hold on the store that keeps [`Store::prune`] and [`Store::remove_image`] from
/// collecting anything while it lives. Hold one from the first blob you write until the image is
/// tagged (or a container record names it). Do not call `prune` or `remove_image` from the
/// thread that holds it: they wait for every lease to end.
#[derive(Debug)]
pub struct Lease {
    _file: File,
}

/// The exclusive hold a collection takes on the store: while it lives no [`Lease`] does, so
/// nothing a build, pull or download holds can be deleted under it. [`Store::prune_held`] and
/// the remote-source caches' prunes (`git::GitCache::prune`, `fetch::prune_records`) take one.
/// Do not take a lease, or another collection, from the thread that holds it.
#[derive(Debug)]
pub struct Collection {
    root: PathBuf,
    _file: File,
}

impl Collection {
    /// The root of the store it holds.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// One layer of an image: the blob in the store and the digest of its uncompressed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// The layer blob's digest (of the stored, possibly compressed, bytes).
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    pub media_type: MediaType,
    /// The digest of the uncompressed tar (`rootfs.diff_ids`), which names its snapshot.
    pub diff_id: Digest,
}

/// An image read from the store, its documents verified against their digests.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// Its tags, sorted; empty for an untagged (dangling) image.
    pub names: Vec<ImageName>,
    /// The manifest's descriptor as `index.json` lists it (without kiln's name annotations).
    pub manifest_descriptor: Descriptor,
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    /// The image ID: the config's digest.
    pub id: Digest,
    pub config: ImageConfiguration,
    /// The config exactly as stored; it may carry docker's extensions to the OCI config
    /// (`Healthcheck`, `OnBuild`, `Shell`) that [`ImageConfiguration`] drops.
    pub config_bytes: Vec<u8>,
    /// The layers, base first, each paired with its diff ID.
    pub layers: Vec<LayerInfo>,
    /// When a tag last moved to this image (RFC 3339), if kiln recorded it.
    pub tagged_at: Option<String>,
    /// The multi-platform index it was found through, whose names and tag time it has.
    pub index: Option<Digest>,
}

impl StoredImage {
    /// The image's size: the sum of its layer blobs.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// `created` from the config (RFC 3339), if set.
    pub fn created(&self) -> Option<&str> {
        self.config.created().as_deref()
    }

    /// `created` as Unix seconds, if set and valid.
    pub fn created_seconds(&self) -> Option<i64> {
        self.created().and_then(timestamp::parse_rfc3339)
    }
}

/// One row of [`Store::images`].
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// The image; of a multi-platform image, the host's platform's (else the first here).
    pub image: StoredImage,
    /// How many container records use the image (any platform of an index).
    pub containers: usize,
    /// A multi-platform image's index.
    pub index: Option<StoredIndex>,
}

/// How a name or ID given by a user found its image.
#[derive(Debug, Clone)]
enum By {
    /// A tag (`hello`, `hello:1.0`, `docker.io/library/hello:1.0`).
    Name(ImageName),
    /// An image ID (full or a prefix) or a manifest digest (`name@sha256:...`).
    Id,
}

/// An index entry found for a user's name or ID.
#[derive(Debug, Clone)]
struct Located {
    descriptor: Descriptor,
    digest: Digest,
    by: By,
}

impl Store {
    /// Opens the store at `root`, creating the layout and kiln's directories when missing. A
    /// directory that is neither empty nor a layout is refused (kiln will not scatter files
    /// into, say, a home directory given by mistake). Stale staging entries left by killed
    /// processes are removed on the way. The store is private to its owner (see
    /// `store::private`): made so, or, when an older kiln made it readable by others,
    /// tightened now (once).
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        /// What a store holds before its `oci-layout` file exists.
        const OWN_NAMES: [&str; 9] = [
            "blobs",
            "origins",
            "snapshots",
            "containers",
            "run-owners",
            "tmp",
            "cache",
            "index.json",
            "oci-layout",
        ];
        let layout_file = root.join("oci-layout");
        // Only names kiln itself creates may be there without `oci-layout`: another kiln may be
        // creating the same store right now (it writes `oci-layout` after the directories).
        if !layout_file.exists()
            && let Ok(entries) = fs::read_dir(root)
            && entries.flatten().any(|entry| {
                !entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| OWN_NAMES.contains(&name) || name.ends_with(".lock"))
            })
        {
            return Err(StoreError::NotALayout {
                path: root.to_path_buf(),
                reason: "it is not empty and has no oci-layout file".to_string(),
            });
        }
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).fs("create directory", parent)?;
        }
        create_private_dir_all(root)?;
        // Before anything new is made in it: new files and directories follow the root.
        private::make_private(root)?;
        let blobs = BlobStore::open(root)?;
        for dir in ["snapshots", "containers"] {
            create_private_dir_all(&root.join(dir))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            blobs,
        };
        store.init_layout_file(&layout_file)?;
        if !store.index_path().exists() {
            let _lock = store.lock("index.lock", true)?;
            if !store.index_path().exists() {
                Index::empty().save(&store.index_path(), store.staging())?;
            }
        }
        // Best effort: a failure here must not keep the store from opening; prune reports it.
        let _ = store.staging().remove_stale(Staging::STALE_AGE);
        // What a killed `kiln run --rm` left (its processes died with it).
        store.remove_abandoned_containers();
        Ok(store)
    }

    fn init_layout_file(&self, path: &Path) -> Result<(), StoreError> {
        match fs::read(path) {
            Ok(bytes) => {
                let version = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_string));
                match version.as_deref() {
                    Some("1.0.0") => Ok(()),
                    Some(other) => Err(StoreError::NotALayout {
                        path: self.root.clone(),
                        reason: format!("unsupported imageLayoutVersion {other:?}"),
                    }),
                    None => Err(StoreError::NotALayout {
                        path: self.root.clone(),
                        reason: "its oci-layout file has no imageLayoutVersion".to_string(),
                    }),
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(atomic_write_in(
                self.staging(),
                path,
                OCI_LAYOUT.as_bytes(),
            )?),
            Err(err) => Err(FsError::new("read", path, err).into()),
        }
    }

    /// Where the store lives when none is given: `$KILN_ROOT`, else `/var/lib/kiln` for root,
    /// else `$XDG_DATA_HOME/kiln` (default `~/.local/share/kiln`). "Root" is the user who
    /// started kiln: inside kiln's rootless namespace (where the uid reads 0) the store stays
    /// the user's.
    pub fn default_root() -> PathBuf {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(root) = var("KILN_ROOT") {
            return root;
        }
        let uid = crate::sys::privilege::real_uid();
        if uid == 0 {
            return PathBuf::from("/var/lib/kiln");
        }
        crate::sys::privilege::rootless_data_dir(
            var("XDG_DATA_HOME").as_deref(),
            var("HOME").as_deref(),
            uid,
        )
    }

    /// The layout's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blobs (`ROOT/blobs/sha256`).
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The staging directory (`ROOT/tmp`), on the store's filesystem.
    pub fn staging(&self) -> &Staging {
        self.blobs.staging()
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Takes a [`Lease`] (waits while a collection runs).
    pub fn lease(&self) -> Result<Lease, StoreError> {
        Ok(Lease {
            _file: self.lock("gc.lock", false)?,
        })
    }

    /// Takes a [`Collection`] (waits until every lease has ended).
    pub fn collection(&self) -> Result<Collection, StoreError> {
        Ok(Collection {
            root: self.root.clone(),
            _file: self.lock("gc.lock", true)?,
        })
    }

    /// Locks `ROOT/name` (flock(2) through `File::lock`; released when the file is dropped,
    /// also when the process dies).
    fn lock(&self, name: &str, exclusive: bool) -> Result<File, StoreError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.root.join(name);
        let file = OpenOptions::new()
            .mode(0o600)
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .fs("open lock file", &path)?;
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.fs("lock", &path)?;
        Ok(file)
    }

    /// Reads `index.json` (no lock: it is only ever replaced atomically).
    fn index(&self) -> Result<Index, StoreError> {
        Index::load(&self.index_path())
    }

    /// Read-modify-write of `index.json` under `index.lock`.
    fn modify_index<T>(
        &self,
        change: impl FnOnce(&mut Index) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = self.lock("index.lock", true)?;
        let mut index = self.index()?;
        let out = change(&mut index)?;
        index.save(&self.index_path(), self.staging())?;
        Ok(out)
    }

    /// Writes the config and manifest of an image whose layer blobs are already stored (check:
    /// each exists with the descriptor's size) or absent with a known origin
    /// ([`Store::record_origin`]), and lists it in `index.json`, untagged until
    /// [`Store::tag`] names it. `layers` are base first, one per `config.rootfs.diff_ids` entry.
    /// Hold a [`Lease`] from writing the layers until the image is tagged. An image without
    /// layers is allowed (docker makes them, e.g. `FROM scratch` + `CMD`), though the OCI
    /// manifest schema asks for at least one.
    pub fn write_image(
        &self,
        config: &ImageConfiguration,
        layers: &[Descriptor],
    ) -> Result<StoredImage, StoreError> {
        let bytes = serde_json::to_vec(config).map_err(|err| StoreError::Document {
            what: "image config",
            digest: Digest::of(b""),
            source: Reason::caused_by("cannot serialise it", err).into(),
        })?;
        self.write_image_json(&bytes, layers)
    }

    /// [`Store::write_image_json`], then `name` tagged to it when given (`kiln import`, `kiln
    /// commit`); the image as the store now lists it.
    pub fn write_image_named(
        &self,
        config_json: &[u8],
        layers: &[Descriptor],
        name: Option<&ImageName>,
    ) -> Result<StoredImage, StoreError> {
        let image = self.write_image_json(config_json, layers)?;
        match name {
            Some(name) => {
                self.tag(&name.full(), &image.manifest_descriptor)?;
                self.image(&image.manifest_descriptor)
            }
            None => Ok(image),
        }
    }

    /// [`Store::write_image`] for a config given as JSON bytes, stored exactly as given (so
    /// docker's extensions such as `Healthcheck` survive). The bytes must parse as an OCI image
    /// config.
    pub fn write_image_json(
        &self,
        config_json: &[u8],
        layers: &[Descriptor],
    ) -> Result<StoredImage, StoreError> {
        self.write_image_annotated(config_json, layers, &Annotated::default())
    }

    /// [`Store::write_image_json`] with OCI annotations: `annotated.document`'s in the
    /// manifest (`--annotation manifest:`), `annotated.descriptor`'s on the descriptor that
    /// lists it in `index.json` (`manifest-descriptor:`), which its tags and exports keep.
    pub fn write_image_annotated(
        &self,
        config_json: &[u8],
        layers: &[Descriptor],
        annotated: &Annotated,
    ) -> Result<StoredImage, StoreError> {
        let _lease = self.lease()?;
        let config_digest = Digest::of(config_json);
        let config: ImageConfiguration =
            serde_json::from_slice(config_json).map_err(|err| StoreError::Document {
                what: "image config",
                digest: config_digest.clone(),
                source: err.into(),
            })?;
        let diff_ids = config.rootfs().diff_ids().len();
        if diff_ids != layers.len() {
            return Err(StoreError::LayerCount {
                diff_ids,
                layers: layers.len(),
            });
        }
        pair_layers(&config_digest, &config, layers)?;
        for layer in layers {
            let digest = descriptor_digest("layer", &config_digest, layer)?;
            // A layer built from a shared cache may stay where the cache keeps it: its bytes
            // are fetched (and verified) when something needs them.
            if !self.blobs.contains(&digest) && self.origin(&digest).is_some() {
                continue;
            }
            let size = self.blobs.size(&digest)?;
            if size != layer.size() {
                return Err(BlobError::SizeMismatch {
                    digest,
                    expected: layer.size(),
                    actual: size,
                }
                .into());
            }
        }
        let config_blob = self.blobs.write(config_json)?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_blob.descriptor(MediaType::ImageConfig))
            .layers(layers.to_vec())
            .build()
            .map_err(|err| StoreError::Document {
                what: "image manifest",
                digest: config_digest.clone(),
                source: err.into(),
            })?;
        let manifest_json = serde_json::to_vec(&manifest).map_err(|err| StoreError::Document {
            what: "image manifest",
            digest: config_digest.clone(),
            source: err.into(),
        })?;
        let manifest_json = with_annotations(manifest_json, &annotated.document);
        let manifest_blob = self.blobs.write(&manifest_json)?;
        let descriptor = annotate(
            manifest_blob.descriptor(MediaType::ImageManifest),
            &annotated.descriptor,
        );
        let digest = manifest_blob.digest.clone();
        let index = self.modify_index(|index| {
            index.add_untagged(&descriptor, &digest);
            Ok(index.clone())
        })?;
        self.load(&index, &descriptor, &digest)
    }

    /// Lists an image whose manifest was made elsewhere (pulled from a registry), keeping the
    /// manifest's exact bytes so its digest stays the one the registry serves. Its config and
    /// layer blobs must be stored already (each with the descriptor's size); the config must
    /// list one diff ID per layer. The image is untagged until [`Store::tag`] names it. Hold a
    /// [`Lease`] from writing the first blob until then. `media_type` is the OCI or Docker
    /// schema 2 manifest type.
    pub fn write_manifest(
        &self,
        media_type: &str,
        manifest_json: &[u8],
    ) -> Result<StoredImage, StoreError> {
        let _lease = self.lease()?;
        let digest = Digest::of(manifest_json);
        let media_type = MediaType::from(media_type);
        if !is_manifest(&media_type) {
            return Err(StoreError::Document {
                what: "image manifest",
                digest,
                source: format!("{media_type} is not an image manifest media type").into(),
            });
        }
        let manifest: ImageManifest =
            serde_json::from_slice(manifest_json).map_err(|err| StoreError::Document {
                what: "image manifest",
                digest: digest.clone(),
                source: err.into(),
            })?;
        let config_digest = descriptor_digest("config", &digest, manifest.config())?;
        let config = self.config(&config_digest, Some(manifest.config().size()))?;
        pair_layers(&config_digest, &config, manifest.layers())?;
        for layer in manifest.layers() {
            let layer_digest = descriptor_digest("layer", &digest, layer)?;
            let size = self.blobs.size(&layer_digest)?;
            if size != layer.size() {
                return Err(BlobError::SizeMismatch {
                    digest: layer_digest,
                    expected: layer.size(),
                    actual: size,
                }
                .into());
            }
        }
        let blob = self.blobs.write(manifest_json)?;
        let descriptor = blob.descriptor(media_type);
        let index = self.modify_index(|index| {
            index.add_untagged(&descriptor, &digest);
            Ok(index.clone())
        })?;
        self.load(&index, &descriptor, &digest)
    }

    /// Points the tag `name` (`hello`, `hello:1.0`, `registry:5000/a/b:v1`; `latest` when no tag
    /// is given) at the image whose manifest `manifest` describes, moving the tag if it pointed
    /// elsewhere (the image it left stays, untagged, if that was its last name). Returns the
    /// normalised name.
    pub fn tag(&self, name: &str, manifest: &Descriptor) -> Result<ImageName, StoreError> {
        let name = ImageName::parse(name)?;
        let digest = descriptor_digest("manifest", &Digest::of(b""), manifest)?;
        let _lease = self.lease()?;
        if is_index(manifest.media_type()) {
            self.read_index_blob(&digest, manifest.size())?;
        } else {
            self.manifest(&digest, Some(manifest.size()))?;
        }
        self.modify_index(|index| {
            index.set_tag(&name, manifest, &digest);
            Ok(())
        })?;
        Ok(name)
    }

    /// `docker tag SOURCE TARGET`: tags the image `source` (a name or ID) as `target` (a
    /// multi-platform image's index, all platforms).
    pub fn tag_image(&self, source: &str, target: &str) -> Result<ImageName, StoreError> {
        let _lease = self.lease()?;
        match self.resolve_entry(source)? {
            StoredEntry::Image(image) => self.tag(target, &image.manifest_descriptor),
            StoredEntry::Index(index) => self.tag(target, &index.descriptor),
        }
    }

    /// Removes the tag `name`, returning the manifest digest it pointed at. The image itself
    /// stays (untagged when that was its last name); [`Store::remove_image`] deletes images.
    pub fn untag(&self, name: &str) -> Result<Digest, StoreError> {
        let name = ImageName::parse(name)?;
        self.modify_index(|index| {
            index
                .untag(&name)
                .map(|entry| entry.digest)
                .ok_or_else(|| StoreError::NotFound(name.familiar()))
        })
    }

    /// Every image (each manifest or multi-platform index once, with all its tags), newest
    /// first, as `docker images` lists them. An index none of whose images is here is left
    /// out.
    pub fn images(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let index = self.index()?;
        let containers = self.containers()?;
        let mut images = Vec::new();
        for (descriptor, digest) in manifests(&index) {
            let image = self.load(&index, descriptor, digest)?;
            let users = containers.iter().filter(|c| c.image == image.id).count();
            images.push(ImageSummary {
                image,
                containers: users,
                index: None,
            });
        }
        for (descriptor, digest) in indexes(&index) {
            let stored = self.load_index(&index, descriptor, digest)?;
            let Some(shown) = stored.representative() else {
                continue;
            };
            let image = self.child_image(&index, &stored, shown)?;
            let mut ids = Vec::new();
            for child in stored.manifests.iter().filter(|m| m.present) {
                if is_manifest(child.descriptor.media_type()) {
                    let manifest = self.manifest(&child.digest, Some(child.descriptor.size()))?;
                    ids.push(descriptor_digest(
                        "config",
                        &child.digest,
                        manifest.config(),
                    )?);
                }
            }
            let users = containers.iter().filter(|c| ids.contains(&c.image)).count();
            images.push(ImageSummary {
                image,
                containers: users,
                index: Some(stored),
            });
        }
        images.sort_by(|a, b| {
            let created = |s: &ImageSummary| s.image.created_seconds().unwrap_or(i64::MIN);
            created(b)
                .cmp(&created(a))
                .then_with(|| a.image.id.cmp(&b.image.id))
                .then_with(|| a.image.manifest_digest.cmp(&b.image.manifest_digest))
        });
        Ok(images)
    }

    /// Finds an image the way docker does: by name (familiar or normalised; `name` means
    /// `name:latest`), by manifest digest (`name@sha256:...`), by full image ID (`sha256:<hex>`
    /// or bare 64 hex), or by a unique prefix of at least 4 hex digits of the ID (a name wins
    /// over an ID prefix). A multi-platform image (its index's digest is its ID) gives the
    /// host's platform's image ([`Store::resolve_platform`] picks another).
    pub fn resolve(&self, name_or_id: &str) -> Result<StoredImage, StoreError> {
        self.resolve_platform(name_or_id, None)
    }

    /// The image listed under this manifest descriptor.
    pub fn image(&self, manifest: &Descriptor) -> Result<StoredImage, StoreError> {
        let index = self.index()?;
        let digest = descriptor_digest("manifest", &Digest::of(b""), manifest)?;
        self.load(&index, manifest, &digest)
    }

    fn locate(&self, index: &Index, text: &str) -> Result<Located, StoreError> {
        let is_hex =
            |s: &str| !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if let Some(hex) = text.strip_prefix("sha256:") {
            if is_hex(hex) {
                return self.by_id(index, hex, text);
            }
            return Err(StoreError::NotFound(text.to_string()));
        }
        if hex_len(text) == Some(64) {
            return self.by_id(index, text, text);
        }
        let mut missing = text.to_string();
        if let Ok(reference) = Reference::parse_normalized(text) {
            if let Some(digest) = reference.digest() {
                let digest =
                    Digest::parse(digest).map_err(|_| StoreError::NotFound(text.to_string()))?;
                let entry = index
                    .entries()
                    .iter()
                    .find(|e| e.digest == digest)
                    .ok_or_else(|| StoreError::NotFound(text.to_string()))?;
                return Ok(Located {
                    descriptor: entry.descriptor.clone(),
                    digest,
                    by: By::Id,
                });
            }
            let name = ImageName::from_reference(&reference.with_default_tag());
            if let Some(entry) = index.find(&name) {
                return Ok(Located {
                    descriptor: entry.descriptor.clone(),
                    digest: entry.digest.clone(),
                    by: By::Name(name),
                });
            }
            missing = name.familiar();
        }
        if text.len() >= 4 && is_hex(text) {
            return self.by_id(index, text, &missing);
        }
        Err(StoreError::NotFound(missing))
    }

    /// The image whose ID (or manifest digest, when `hex` is a whole digest) starts with `hex`;
    /// a multi-platform image's ID is its index's digest.
    fn by_id(&self, index: &Index, hex: &str, text: &str) -> Result<Located, StoreError> {
        let mut matches: Vec<(Descriptor, Digest, Digest)> = Vec::new();
        for (descriptor, digest) in manifests(index) {
            let full_manifest = hex.len() == 64 && digest.hex() == hex;
            let manifest = self.manifest(digest, Some(descriptor.size()))?;
            let id = descriptor_digest("config", digest, manifest.config())?;
            if full_manifest || id.hex().starts_with(hex) {
                matches.push((descriptor.clone(), digest.clone(), id));
            }
        }
        for (descriptor, digest) in indexes(index) {
            if digest.hex().starts_with(hex) {
                matches.push((descriptor.clone(), digest.clone(), digest.clone()));
            }
        }
        // One image in several manifests (pushed compressed, its tag moved to the pushed one:
        // see `retag_exported`) is still one image: its tagged manifest answers for the ID.
        if matches.len() > 1 && matches.iter().all(|(_, _, id)| *id == matches[0].2) {
            let tagged = matches
                .iter()
                .position(|(_, digest, _)| !index.names_of(digest).is_empty())
                .unwrap_or(0);
            let (descriptor, digest, _) = matches.swap_remove(tagged);
            return Ok(Located {
                descriptor,
                digest,
                by: By::Id,
            });
        }
        match matches.len() {
            0 => Err(StoreError::NotFound(text.to_string())),
            1 => {
                let (descriptor, digest, _) = matches.remove(0);
                Ok(Located {
                    descriptor,
                    digest,
                    by: By::Id,
                })
            }
            _ => Err(StoreError::Ambiguous {
                prefix: text.to_string(),
                matches: matches
                    .iter()
                    .map(|(_, manifest, id)| format!("{} (manifest {manifest})", id.short()))
                    .collect(),
            }),
        }
    }

    /// Reads an image from its manifest entry.
    fn load(
        &self,
        index: &Index,
        descriptor: &Descriptor,
        digest: &Digest,
    ) -> Result<StoredImage, StoreError> {
        if is_index(descriptor.media_type()) {
            return Err(StoreError::MultiPlatform(digest.to_string()));
        }
        let manifest = self.manifest(digest, Some(descriptor.size()))?;
        let id = descriptor_digest("config", digest, manifest.config())?;
        let config_bytes = self.blobs.read_sized(&id, manifest.config().size())?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|err| StoreError::Document {
                what: "image config",
                digest: id.clone(),
                source: err.into(),
            })?;
        let layers = pair_layers(&id, &config, manifest.layers())?;
        let tagged_at = index.tagged_at_of(digest);
        // Without kiln's naming annotations; a build's own (`--annotation
        // manifest-descriptor:`) stay.
        let plain = without_names(descriptor);
        Ok(StoredImage {
            names: index.names_of(digest),
            manifest_descriptor: plain,
            manifest_digest: digest.clone(),
            manifest,
            id,
            config,
            config_bytes,
            layers,
            tagged_at,
            index: None,
        })
    }

    /// Reads and verifies a manifest blob (size-capped; `size` from its descriptor).
    pub fn manifest(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<ImageManifest, StoreError> {
        let bytes = match size {
            Some(size) => self.blobs.read_sized(digest, size)?,
            None => self.blobs.read(digest)?,
        };
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|err| StoreError::Document {
                what: "image manifest",
                digest: digest.clone(),
                source: err.into(),
            })?;
        if manifest.schema_version() != 2 {
            return Err(StoreError::Document {
                what: "image manifest",
                digest: digest.clone(),
                source: format!("schemaVersion is {}, expected 2", manifest.schema_version())
                    .into(),
            });
        }
        Ok(manifest)
    }

    /// Reads and verifies an image config blob (size-capped; `size` from its descriptor).
    pub fn config(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<ImageConfiguration, StoreError> {
        let bytes = match size {
            Some(size) => self.blobs.read_sized(digest, size)?,
            None => self.blobs.read(digest)?,
        };
        serde_json::from_slice(&bytes).map_err(|err| StoreError::Document {
            what: "image config",
            digest: digest.clone(),
            source: err.into(),
        })
    }

    /// Where the unpacked layer with this diff ID lives (whether or not it exists).
    pub fn snapshot_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(diff_id.hex())
    }

    /// Whether the layer with this diff ID is unpacked.
    pub fn has_snapshot(&self, diff_id: &Digest) -> bool {
        self.snapshot_dir(diff_id).is_dir()
    }

    /// Returns the snapshot of the layer `diff_id`, creating it when missing: `fill` unpacks the
    /// layer into an empty staging directory, which is then synced (syncfs(2)) and renamed into
    /// place, so a killed unpack never leaves a half-filled snapshot visible. When another
    /// process wins the race, its snapshot is kept and ours discarded. Hold a [`Lease`] while
    /// the image that needs it is not yet tagged.
    pub fn create_snapshot<E>(
        &self,
        diff_id: &Digest,
        fill: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<PathBuf, StoreError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let target = self.snapshot_dir(diff_id);
        if target.is_dir() {
            return Ok(target);
        }
        let staging = self.staging().new_path("snapshot");
        fs::create_dir(&staging).fs("create directory", &staging)?;
        let filled = fill(&staging).map_err(|err| StoreError::Snapshot {
            diff_id: diff_id.clone(),
            source: err.into(),
        });
        let synced = filled.and_then(|()| {
            let dir = File::open(&staging).fs("open", &staging)?;
            // fsync of every unpacked file would be slow; syncfs(2) flushes the filesystem in
            // one call before the rename publishes the directory.
            nix::unistd::syncfs(&dir)
                .map_err(|errno| FsError::new("sync", &staging, errno.into()))?;
            Ok(())
        });
        if let Err(err) = synced {
            remove_tree(&staging)?;
            return Err(err);
        }
        match fs::rename(&staging, &target) {
            Ok(()) => {
                let parent = self.root.join("snapshots");
                crate::sys::fsync_dir(&parent)?;
                Ok(target)
            }
            // rename(2): a non-empty directory at the target gives EEXIST or ENOTEMPTY; another
            // process unpacked the same layer first.
            Err(_) if target.is_dir() => {
                remove_tree(&staging)?;
                Ok(target)
            }
            Err(err) => {
                remove_tree(&staging)?;
                Err(FsError::new("rename into place", &target, err).into())
            }
        }
    }

    /// Removes stale staging entries (see [`Staging::remove_stale`]).
    pub fn clean_staging(&self) -> Result<StaleReport, StoreError> {
        Ok(self.staging().remove_stale(Staging::STALE_AGE)?)
    }
}

/// The manifest entries of the index, each digest once, in index order.
fn manifests(index: &Index) -> Vec<(&Descriptor, &Digest)> {
    let mut seen = std::collections::HashSet::new();
    index
        .entries()
        .iter()
        .filter(|e| is_manifest(e.descriptor.media_type()) && seen.insert(&e.digest))
        .map(|e| (&e.descriptor, &e.digest))
        .collect()
}

/// The multi-platform entries of the index, each digest once, in index order.
fn indexes(index: &Index) -> Vec<(&Descriptor, &Digest)> {
    let mut seen = std::collections::HashSet::new();
    index
        .entries()
        .iter()
        .filter(|e| is_index(e.descriptor.media_type()) && seen.insert(&e.digest))
        .map(|e| (&e.descriptor, &e.digest))
        .collect()
}

/// The length of `text` when it is all lower-case hex.
fn hex_len(text: &str) -> Option<usize> {
    text.bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        .then_some(text.len())
}

/// A descriptor's digest as a kiln digest (sha256 only), `what` naming it in errors and
/// `parent` the document that holds it.
fn descriptor_digest(
    what: &'static str,
    parent: &Digest,
    descriptor: &Descriptor,
) -> Result<Digest, StoreError> {
    Digest::parse(descriptor.digest().as_ref()).map_err(|err| StoreError::Document {
        what,
        digest: parent.clone(),
        source: err.into(),
    })
}

/// Pairs a manifest's layers with the config's diff IDs.
fn pair_layers(
    config_digest: &Digest,
    config: &ImageConfiguration,
    layers: &[Descriptor],
) -> Result<Vec<LayerInfo>, StoreError> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        return Err(StoreError::Document {
            what: "image config",
            digest: config_digest.clone(),
            source: format!(
                "it lists {} diff IDs for {} layers",
                diff_ids.len(),
                layers.len()
            )
            .into(),
        });
    }
    layers
        .iter()
        .zip(diff_ids)
        .map(|(layer, diff_id)| {
            let diff_id = Digest::parse(diff_id).map_err(|err| StoreError::Document {
                what: "image config",
                digest: config_digest.clone(),
                source: err.into(),
            })?;
            Ok(LayerInfo {
                digest: descriptor_digest("image config", config_digest, layer)?,
                size: layer.size(),
                media_type: layer.media_type().clone(),
                diff_id,
            })
        })
        .collect()
}

/// An OCI descriptor for a stored blob (re-exported for callers building layer lists).
pub fn descriptor(media_type: MediaType, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(media_type, size, oci_digest(digest))
}
