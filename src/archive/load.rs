//! `kiln load`: docker archives (`docker save`: `manifest.json`) and OCI image layout archives
//! (`oci-layout` + `index.json`), plain, gzip or zstd, into the store.
//!
//! The archive is read once, as a stream, in whatever order its entries come (`manifest.json`
//! may be last). Each file entry goes straight into the store: documents (at most
//! [`MAX_DOCUMENT_SIZE`] bytes, within a memory budget) are kept in memory, anything else is
//! streamed into a blob named by its content's digest; an entry named `blobs/sha256/<hex>` must
//! hash to that name. Links are only recorded. Then `manifest.json` (docker, as `docker load`
//! prefers it) or `index.json` names the images, and every name it gives is looked up in that
//! table of entry names (links followed inside it), never on a filesystem. A docker layer's
//! digest must be its config's diff ID; an OCI descriptor's digest and size must match its
//! blob. Finally each layer is unpacked into its snapshot, which refuses unsafe entries and
//! checks compressed layers against their diff IDs, and only when every image passed are the
//! images written and tagged.

use super::names::{blob_digest, blob_key, entry_key, link_target, reference_key};
use super::{ArchiveError, DEFAULT_MAX_BYTES, unpack_layer};
use crate::error::{Cause, Reason};
use crate::layer::{Compression, LayerError, decompressed};
use crate::oci::Digest;
use crate::store::BlobError;
use crate::store::blob::{BlobRef, MAX_DOCUMENT_SIZE};
use crate::store::{
    ImageName, LayerInfo, Store, StoreError, StoredEntry, descriptor, entry_name, is_index,
    is_manifest,
};
use crate::sys::FsError;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};

/// The most entries an archive may have. A `docker save` of a hundred images has a few
/// thousand; the cap bounds the table of names.
pub const MAX_ENTRIES: u64 = 1 << 20;
/// How many bytes of small entries are kept in memory; past it they go to the blob store too.
const MEMORY_BUDGET: u64 = 64 << 20;
/// How many links one lookup may follow before it is taken for a loop (Linux's `MAXSYMLINKS`).
const MAX_LINK_HOPS: usize = 40;

/// How [`load`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// The most uncompressed bytes the archive, and each layer in it, may hold.
    pub max_bytes: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// What [`load`] reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A layer was unpacked into a new snapshot (layers the store already had are not reported).
    Layer { diff_id: Digest, size: u64 },
}

/// An image [`load`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The image ID (its config's digest).
    pub id: Digest,
    pub manifest_digest: Digest,
    /// The tags the archive gave it, in archive order.
    pub names: Vec<ImageName>,
    /// Tags that pointed at another image before the load, with that image's ID (docker prints
    /// `The image NAME already exists, renaming the old one with ID ID to empty string`).
    pub moved: Vec<(ImageName, Digest)>,
}

/// Loads every image of the archive `reader` into `store`. Nothing is tagged unless every image
/// and layer in the archive checked out.
pub fn load(
    store: &Store,
    reader: impl Read,
    options: &LoadOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Loaded>, ArchiveError> {
    let _lease = store.lease()?;
    let entries = Entries::read(store, reader, options.max_bytes)?;
    let (images, indexes) = if entries.items.contains_key("manifest.json") {
        (docker_images(store, &entries)?, Vec::new())
    } else if entries.items.contains_key("index.json") {
        oci_images(store, &entries)?
    } else {
        return Err(ArchiveError::NotAnArchive);
    };
    // By blob, not by diff ID: two blobs (say gzip and plain) of one diff ID are each checked.
    let mut unpacked = HashSet::new();
    for image in &images {
        for layer in &image.layers {
            if unpacked.insert(layer.digest.clone()) {
                let fresh = !store.has_snapshot(&layer.diff_id);
                unpack_layer(store, layer, options.max_bytes)?;
                if fresh {
                    progress(Progress::Layer {
                        diff_id: layer.diff_id.clone(),
                        size: layer.size,
                    });
                }
            }
        }
    }
    let mut loaded = Vec::new();
    for image in images {
        let in_index = image.in_index;
        let stored = image.store(store)?;
        // An image of a multi-platform image is reported as that image, once.
        if !in_index {
            loaded.push(stored);
        }
    }
    for index in indexes {
        loaded.push(index.store(store)?);
    }
    Ok(loaded)
}

/// A file entry's content: in memory, or already a blob in the store.
#[derive(Debug)]
struct Data {
    digest: Digest,
    size: u64,
    /// `None`: the content is the store's blob `digest`.
    bytes: Option<Vec<u8>>,
}

#[derive(Debug)]
enum Item {
    File(Data),
    /// A symlink or hard link; the target is a key (see [`link_target`]).
    Link(Vec<String>),
}

/// The archive's entries by name.
struct Entries {
    items: HashMap<String, Item>,
    /// Bytes of file content held in memory.
    memory: u64,
}

impl Entries {
    /// Reads the whole archive, storing its files (see the module documentation).
    fn read(store: &Store, reader: impl Read, max_bytes: u64) -> Result<Entries, ArchiveError> {
        let read_error = |source| ArchiveError::Read {
            what: "archive",
            source,
        };
        let stream = decompressed(reader, max_bytes).map_err(read_error)?;
        let mut archive = tar::Archive::new(stream);
        let mut entries = Entries {
            items: HashMap::new(),
            memory: 0,
        };
        let mut count = 0u64;
        let tar_error = |e| read_error(LayerError::from_read(e));
        for entry in archive.entries().map_err(tar_error)? {
            let mut entry = entry.map_err(tar_error)?;
            count += 1;
            if count > MAX_ENTRIES {
                return Err(ArchiveError::TooManyEntries { limit: MAX_ENTRIES });
            }
            // Names that are not UTF-8 cannot be named by manifest.json or index.json (JSON
            // strings), so such entries can be skipped unread.
            let Ok(name) = String::from_utf8(entry.path_bytes().into_owned()) else {
                continue;
            };
            let Some(key) = entry_key(&name)? else {
                continue;
            };
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let size = entry.size();
                let data = entries.ingest(store, &key, &mut entry, size)?;
                entries.items.insert(key, Item::File(data));
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .and_then(|t| String::from_utf8(t.into_owned()).ok());
                if let Some(target) = target {
                    let target = link_target(&key, &target, kind.is_hard_link())?;
                    entries.items.insert(key, Item::Link(target));
                }
            }
        }
        Ok(entries)
    }

    /// Takes in one file entry of `size` bytes.
    fn ingest(
        &mut self,
        store: &Store,
        key: &str,
        entry: &mut impl Read,
        size: u64,
    ) -> Result<Data, ArchiveError> {
        let expected = blob_digest(key)?;
        if (key == "manifest.json" || key == "index.json") && size > MAX_DOCUMENT_SIZE {
            return Err(ArchiveError::DocumentTooLarge {
                what: "archive entry",
                name: key.to_string(),
                size,
                limit: MAX_DOCUMENT_SIZE,
            });
        }
        let mismatch = |actual| ArchiveError::BlobName {
            entry: key.to_string(),
            actual,
        };
        let read_error = |e: io::Error| ArchiveError::Read {
            what: "archive",
            source: LayerError::from_read(e),
        };
        if size <= MAX_DOCUMENT_SIZE && self.memory + size <= MEMORY_BUDGET {
            let mut bytes = Vec::new();
            entry
                .take(size)
                .read_to_end(&mut bytes)
                .map_err(read_error)?;
            let digest = Digest::of(&bytes);
            if expected.as_ref().is_some_and(|e| e != &digest) {
                return Err(mismatch(digest));
            }
            self.memory += bytes.len() as u64;
            return Ok(Data {
                digest,
                size: bytes.len() as u64,
                bytes: Some(bytes),
            });
        }
        let mut writer = store.blobs().writer()?;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = entry.read(&mut buffer).map_err(read_error)?;
            if read == 0 {
                break;
            }
            let chunk = buffer.get(..read).unwrap_or_default();
            writer
                .write_all(chunk)
                .map_err(|e| FsError::new("write a blob in", store.staging().dir(), e))?;
        }
        let blob = writer.commit(expected.as_ref()).map_err(|err| match err {
            BlobError::DigestMismatch { actual, .. } => mismatch(actual),
            other => other.into(),
        })?;
        Ok(Data {
            digest: blob.digest,
            size: blob.size,
            bytes: None,
        })
    }

    /// The file that `name` (from `referrer`) names, links followed inside the archive.
    fn file(&self, name: &str, referrer: &str) -> Result<&Data, ArchiveError> {
        let key = reference_key(name)?;
        let missing = || ArchiveError::MissingEntry {
            name: name.to_string(),
            referrer: referrer.to_string(),
        };
        let mut pending: Vec<String> = key.split('/').rev().map(str::to_string).collect();
        let mut path: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            path.push(component);
            let Some(Item::Link(target)) = self.items.get(&path.join("/")) else {
                continue;
            };
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return Err(ArchiveError::NotAFile {
                    name: name.to_string(),
                    reason: "too many levels of links",
                });
            }
            // The target is a whole key from the archive's top: the rest of the path goes on
            // from there.
            path.clear();
            pending.extend(target.iter().rev().cloned());
        }
        match self.items.get(&path.join("/")) {
            Some(Item::File(data)) => Ok(data),
            _ => Err(missing()),
        }
    }

    /// The blob `digest` of an OCI layout archive, which `referrer` gives as `size` bytes.
    fn blob(&self, digest: &Digest, size: u64, referrer: &str) -> Result<&Data, ArchiveError> {
        let data = self.file(&blob_key(digest), referrer)?;
        if &data.digest != digest {
            // Reached through a link to some other entry.
            return Err(ArchiveError::BlobName {
                entry: blob_key(digest),
                actual: data.digest.clone(),
            });
        }
        if data.size != size {
            return Err(ArchiveError::BlobSize {
                referrer: referrer.to_string(),
                digest: digest.clone(),
                size_expected: size,
                size: data.size,
            });
        }
        Ok(data)
    }

    /// A JSON document: a file of at most [`MAX_DOCUMENT_SIZE`] bytes.
    fn document(
        &self,
        store: &Store,
        data: &Data,
        what: &'static str,
        name: &str,
    ) -> Result<Vec<u8>, ArchiveError> {
        if data.size > MAX_DOCUMENT_SIZE {
            return Err(ArchiveError::DocumentTooLarge {
                what,
                name: name.to_string(),
                size: data.size,
                limit: MAX_DOCUMENT_SIZE,
            });
        }
        match &data.bytes {
            Some(bytes) => Ok(bytes.clone()),
            None => Ok(store.blobs().read(&data.digest)?),
        }
    }
}

/// Makes sure `data` is a blob in the store.
fn stored(store: &Store, data: &Data) -> Result<BlobRef, ArchiveError> {
    match &data.bytes {
        Some(bytes) => Ok(store.blobs().write(bytes)?),
        None => Ok(BlobRef {
            digest: data.digest.clone(),
            size: data.size,
        }),
    }
}

/// The compression of a stored blob, from its first bytes.
fn compression_of(store: &Store, data: &Data) -> Result<Compression, ArchiveError> {
    let mut prefix = Vec::with_capacity(4);
    match &data.bytes {
        Some(bytes) => prefix.extend(bytes.iter().take(4)),
        None => {
            let path = store.blobs().path(&data.digest);
            store
                .blobs()
                .open_blob(&data.digest)?
                .take(4)
                .read_to_end(&mut prefix)
                .map_err(|e| FsError::new("read", &path, e))?;
        }
    }
    Ok(Compression::detect(&prefix))
}

/// An image found in the archive, its blobs stored, not yet in the index.
struct Pending {
    config: Vec<u8>,
    layers: Vec<LayerInfo>,
    names: Vec<ImageName>,
    /// An OCI archive's manifest, kept as it is (so its digest survives the round trip).
    manifest: Option<(Vec<u8>, Descriptor)>,
    /// One platform's image of a multi-platform image ([`PendingIndex`]): listed untagged,
    /// its manifest kept, for the index to name.
    in_index: bool,
}

/// A multi-platform image of an OCI archive: its index, kept as it is, and its names. Its
/// platforms' images (those the archive has) are [`Pending`] images of their own.
struct PendingIndex {
    bytes: Vec<u8>,
    media_type: MediaType,
    names: Vec<ImageName>,
}

impl PendingIndex {
    /// Lists the index (after its images) and tags it.
    fn store(self, store: &Store) -> Result<Loaded, ArchiveError> {
        let stored = store.write_index(self.media_type.to_string().as_str(), &self.bytes)?;
        let mut moved = Vec::new();
        for name in &self.names {
            let before = match store.resolve_entry(&name.full()) {
                Ok(StoredEntry::Image(old)) => Some(old.id.clone()),
                Ok(StoredEntry::Index(old)) => Some(old.digest.clone()),
                Err(StoreError::NotFound(_)) => None,
                Err(err) => return Err(err.into()),
            };
            if let Some(old) = before.filter(|old| old != &stored.digest) {
                moved.push((name.clone(), old));
            }
            store.tag(&name.full(), &stored.descriptor)?;
        }
        Ok(Loaded {
            id: stored.digest.clone(),
            manifest_digest: stored.digest,
            names: self.names,
            moved,
        })
    }
}

impl Pending {
    /// Writes the image into the index and tags it.
    fn store(self, store: &Store) -> Result<Loaded, ArchiveError> {
        let id = Digest::of(&self.config);
        let manifest = match self.manifest {
            Some((bytes, descriptor)) if self.in_index => {
                store.blobs().write(&self.config)?;
                store
                    .write_manifest(descriptor.media_type().as_ref(), &bytes)?
                    .manifest_descriptor
            }
            Some((bytes, descriptor)) if !self.names.is_empty() => {
                store.blobs().write(&self.config)?;
                store.blobs().write(&bytes)?;
                descriptor
            }
            // An untagged image can only enter the index through write_image_json, which
            // writes kiln's own manifest for it (same config, same layers).
            _ => {
                let layers: Vec<Descriptor> = self
                    .layers
                    .iter()
                    .map(|l| descriptor(l.media_type.clone(), &l.digest, l.size))
                    .collect();
                store
                    .write_image_json(&self.config, &layers)?
                    .manifest_descriptor
            }
        };
        let manifest_digest =
            Digest::parse(manifest.digest().as_ref()).map_err(|err| ArchiveError::Document {
                what: "image manifest",
                name: manifest.digest().to_string(),
                reason: err.into(),
            })?;
        let mut moved = Vec::new();
        for name in &self.names {
            match store.resolve(&name.full()) {
                Ok(old) if old.id != id => moved.push((name.clone(), old.id)),
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(err) => return Err(err.into()),
            }
            store.tag(&name.full(), &manifest)?;
        }
        Ok(Loaded {
            id,
            manifest_digest,
            names: self.names,
            moved,
        })
    }
}

/// The parts of an image config that loading checks: it is an OCI config, for linux, and its
/// diff IDs are sha256 digests.
fn config_diff_ids(bytes: &[u8], name: &str) -> Result<Vec<Digest>, ArchiveError> {
    let invalid = |reason: Cause| ArchiveError::Document {
        what: "image config",
        name: name.to_string(),
        reason,
    };
    let config: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|e| invalid(e.into()))?;
    let os = config.os().to_string();
    // Docker takes a config without an OS for its own (linux here).
    if !os.is_empty() && os != "linux" {
        return Err(ArchiveError::UnsupportedOs {
            config: name.to_string(),
            os,
        });
    }
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            Digest::parse(d).map_err(|e| invalid(Reason::caused_by("rootfs.diff_ids", e).into()))
        })
        .collect()
}

/// A layer blob from the archive as the image's layer `position`: stored, its compression read
/// from its bytes, and an uncompressed one checked against the diff ID right away (a compressed
/// one is checked when it is unpacked).
fn layer(
    store: &Store,
    data: &Data,
    media_type: Option<MediaType>,
    diff_id: &Digest,
    config: &str,
    position: usize,
) -> Result<LayerInfo, ArchiveError> {
    let compression = compression_of(store, data)?;
    if compression == Compression::None && &data.digest != diff_id {
        return Err(ArchiveError::DiffId {
            config: config.to_string(),
            position: position + 1,
            expected: diff_id.clone(),
            actual: data.digest.clone(),
        });
    }
    let blob = stored(store, data)?;
    Ok(LayerInfo {
        digest: blob.digest,
        size: blob.size,
        media_type: media_type.unwrap_or_else(|| MediaType::from(compression.media_type())),
        diff_id: diff_id.clone(),
    })
}

/// One image of docker's `manifest.json`.
#[derive(Debug, Deserialize)]
struct ManifestItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// The images of a docker archive (moby `image/tarexport/load.go`).
fn docker_images(store: &Store, entries: &Entries) -> Result<Vec<Pending>, ArchiveError> {
    let data = entries.file("manifest.json", "the archive")?;
    let bytes = entries.document(store, data, "archive entry", "manifest.json")?;
    let invalid = |reason: Cause| ArchiveError::Document {
        what: "archive entry",
        name: "manifest.json".to_string(),
        reason,
    };
    let items: Option<Vec<ManifestItem>> =
        serde_json::from_slice(&bytes).map_err(|e| invalid(e.into()))?;
    // Docker's rule: null is a broken writer, an empty archive is `[]`.
    let items =
        items.ok_or_else(|| invalid("it is null (an archive of no images has [])".into()))?;
    let mut images = Vec::new();
    for item in items {
        let config_data = entries.file(&item.config, "manifest.json")?;
        let config = entries.document(store, config_data, "image config", &item.config)?;
        let diff_ids = config_diff_ids(&config, &item.config)?;
        if diff_ids.len() != item.layers.len() {
            return Err(ArchiveError::LayerCount {
                config: item.config,
                diff_ids: diff_ids.len(),
                layers: item.layers.len(),
            });
        }
        let mut layers = Vec::new();
        for (position, (path, diff_id)) in item.layers.iter().zip(&diff_ids).enumerate() {
            let data = entries.file(path, "manifest.json")?;
            layers.push(layer(store, data, None, diff_id, &item.config, position)?);
        }
        let names = item
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|tag| ImageName::parse(tag).map_err(StoreError::from))
            .collect::<Result<Vec<_>, _>>()?;
        images.push(Pending {
            config,
            layers,
            names,
            manifest: None,
            in_index: false,
        });
    }
    Ok(images)
}

/// The images of an OCI layout archive: one per manifest that `index.json` lists, with the names
/// its descriptors carry; and each listed image index (a multi-platform image) with the images
/// of it the archive has.
fn oci_images(
    store: &Store,
    entries: &Entries,
) -> Result<(Vec<Pending>, Vec<PendingIndex>), ArchiveError> {
    let data = entries.file("index.json", "the archive")?;
    let bytes = entries.document(store, data, "archive entry", "index.json")?;
    let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Document {
        what: "archive entry",
        name: "index.json".to_string(),
        reason: e.into(),
    })?;
    let mut images: Vec<Pending> = Vec::new();
    let mut indexes: Vec<(Digest, PendingIndex)> = Vec::new();
    let mut by_manifest: HashMap<Digest, usize> = HashMap::new();
    for listed in index.manifests() {
        let name = entry_name(listed);
        if is_index(listed.media_type()) {
            let digest = digest_of(listed, "index.json")?;
            if let Some((_, pending)) = indexes.iter_mut().find(|(d, _)| d == &digest) {
                pending
                    .names
                    .extend(name.filter(|n| !pending.names.contains(n)));
                continue;
            }
            let (index_bytes, children) = index_images(store, entries, listed)?;
            for (manifest_bytes, manifest) in children {
                let child_digest = digest_of(&manifest, &digest.to_string())?;
                if by_manifest.contains_key(&child_digest) {
                    continue;
                }
                let mut pending = oci_image(store, entries, &manifest_bytes, manifest, None)?;
                pending.in_index = true;
                by_manifest.insert(child_digest, images.len());
                images.push(pending);
            }
            indexes.push((
                digest,
                PendingIndex {
                    bytes: index_bytes,
                    media_type: listed.media_type().clone(),
                    names: name.into_iter().collect(),
                },
            ));
            continue;
        }
        let (manifest_bytes, manifest) = manifest_of(store, entries, listed)?;
        let digest = digest_of(&manifest, "index.json")?;
        if let Some(&at) = by_manifest.get(&digest) {
            if let Some(image) = images.get_mut(at) {
                image
                    .names
                    .extend(name.filter(|n| !image.names.contains(n)));
            }
            continue;
        }
        let pending = oci_image(store, entries, &manifest_bytes, manifest, name)?;
        by_manifest.insert(digest, images.len());
        images.push(pending);
    }
    Ok((images, indexes.into_iter().map(|(_, i)| i).collect()))
}

/// An image index of `index.json` (a multi-platform image): its bytes, and the manifests it
/// lists that the archive has, with their bytes. An index with none of them is refused.
#[allow(clippy::type_complexity)]
fn index_images(
    store: &Store,
    entries: &Entries,
    listed: &Descriptor,
) -> Result<(Vec<u8>, Vec<(Vec<u8>, Descriptor)>), ArchiveError> {
    let digest = digest_of(listed, "index.json")?;
    let data = entries.blob(&digest, listed.size(), "index.json")?;
    let bytes = entries.document(store, data, "image index", &digest.to_string())?;
    let nested: ImageIndex =
        serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Document {
            what: "image index",
            name: digest.to_string(),
            reason: e.into(),
        })?;
    let mut children = Vec::new();
    for child in nested.manifests() {
        let child_digest = digest_of(child, &digest.to_string())?;
        // A platform left out of the archive (`save --platform` elsewhere) is not here.
        if !is_manifest(child.media_type()) || entries.file(&blob_key(&child_digest), "").is_err() {
            continue;
        }
        let data = entries.blob(&child_digest, child.size(), &digest.to_string())?;
        let manifest =
            entries.document(store, data, "image manifest", &child_digest.to_string())?;
        if crate::store::is_attestation(child) {
            store_attestations(store, entries, &manifest, &child_digest)?;
            continue;
        }
        children.push((
            manifest,
            descriptor(child.media_type().clone(), &child_digest, child.size()),
        ));
    }
    if children.is_empty() {
        return Err(ArchiveError::NoPlatform {
            digest,
            platform: "any platform".to_string(),
        });
    }
    store.blobs().write(&bytes)?;
    Ok((bytes, children))
}

/// Stores an attestation manifest's blobs as they are (its config and in-toto statements are
/// no image to unpack or run): the index that lists it keeps them.
fn store_attestations(
    store: &Store,
    entries: &Entries,
    manifest_bytes: &[u8],
    digest: &Digest,
) -> Result<(), ArchiveError> {
    let name = digest.to_string();
    let manifest: ImageManifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| ArchiveError::Document {
            what: "attestation manifest",
            name: name.clone(),
            reason: e.into(),
        })?;
    for listed in std::iter::once(manifest.config()).chain(manifest.layers()) {
        let blob_digest = digest_of(listed, &name)?;
        let data = entries.blob(&blob_digest, listed.size(), &name)?;
        stored(store, data)?;
    }
    store.blobs().write(manifest_bytes)?;
    Ok(())
}

/// The manifest a descriptor of `index.json` names, with its bytes (image indexes are read by
/// [`index_images`]).
fn manifest_of(
    store: &Store,
    entries: &Entries,
    listed: &Descriptor,
) -> Result<(Vec<u8>, Descriptor), ArchiveError> {
    let digest = digest_of(listed, "index.json")?;
    if !is_manifest(listed.media_type()) {
        return Err(ArchiveError::ManifestMediaType {
            digest,
            media_type: listed.media_type().to_string(),
        });
    }
    let data = entries.blob(&digest, listed.size(), "index.json")?;
    let bytes = entries.document(store, data, "image manifest", &digest.to_string())?;
    Ok((
        bytes,
        descriptor(listed.media_type().clone(), &digest, listed.size()),
    ))
}

/// One image of an OCI archive from its manifest.
fn oci_image(
    store: &Store,
    entries: &Entries,
    manifest_bytes: &[u8],
    manifest_descriptor: Descriptor,
    name: Option<ImageName>,
) -> Result<Pending, ArchiveError> {
    let manifest_name = manifest_descriptor.digest().to_string();
    let manifest: ImageManifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| ArchiveError::Document {
            what: "image manifest",
            name: manifest_name.clone(),
            reason: e.into(),
        })?;
    let config_digest = digest_of(manifest.config(), &manifest_name)?;
    let config_data = entries.blob(&config_digest, manifest.config().size(), &manifest_name)?;
    let config_name = config_digest.to_string();
    let config = entries.document(store, config_data, "image config", &config_name)?;
    let diff_ids = config_diff_ids(&config, &config_name)?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(ArchiveError::LayerCount {
            config: config_name,
            diff_ids: diff_ids.len(),
            layers: manifest.layers().len(),
        });
    }
    let mut layers = Vec::new();
    for (position, (listed, diff_id)) in manifest.layers().iter().zip(&diff_ids).enumerate() {
        let digest = digest_of(listed, &manifest_name)?;
        if Compression::from_media_type(listed.media_type().as_ref()).is_none() {
            return Err(ArchiveError::LayerMediaType {
                digest,
                media_type: listed.media_type().to_string(),
            });
        }
        let data = entries.blob(&digest, listed.size(), &manifest_name)?;
        let media_type = Some(listed.media_type().clone());
        layers.push(layer(
            store,
            data,
            media_type,
            diff_id,
            &config_name,
            position,
        )?);
    }
    Ok(Pending {
        config,
        layers,
        names: name.into_iter().collect(),
        manifest: Some((manifest_bytes.to_vec(), manifest_descriptor)),
        in_index: false,
    })
}

/// A descriptor's digest as a kiln digest (sha256 only).
fn digest_of(listed: &Descriptor, referrer: &str) -> Result<Digest, ArchiveError> {
    Digest::parse(listed.digest().as_ref()).map_err(|e| ArchiveError::Document {
        what: "descriptor in",
        name: referrer.to_string(),
        reason: e.into(),
    })
}
