//! Compressed variants of layers: the same layer (one diff ID) as a blob in each compression an
//! export asked for, kept so a second push or export of it compresses nothing (BuildKit keeps
//! them as content labels, `cache/blobs.go`, `cache/converter.go`).
//!
//! `ROOT/variants/<diff id hex>/<compression>` (`uncompressed`, `gzip`, `zstd`) is a small JSON
//! document naming the blob ([`Variant`]), written atomically after the blob is in, so a killed
//! writer leaves either no record or one whose blob exists. A record whose blob has gone (a
//! collection raced it, or someone deleted the file) counts as absent. The blob itself is an
//! ordinary blob: a collection keeps it while an image reachable from `index.json` has its diff
//! ID, and deletes record and blob with the layer's snapshot otherwise.
//!
//! Layers come to have variants three ways: an export compresses one ([`Store::layer_as`],
//! which checks the diff ID of what it compressed before keeping it), a pull or `kiln load`
//! stores a compressed blob whose diff ID was checked ([`Store::record_variant`]), and an image
//! in the store whose layer blob is already compressed is its own variant (used as it is).
//!
//! The store does not compress: it is handed the compressor ([`Recompress`]) by the code above it
//! that knows the layer format (`crate::layer::recompress`), as [`super::FetchOrigins`] hands it
//! the shared cache.

use super::{LayerInfo, Lease, Store, StoreError, StoredImage, descriptor_digest};
use crate::error::Cause;
use crate::oci::Digest;
use crate::oci::media_type::{
    ATTESTATION_MANIFEST, Compression, DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, REFERENCE_DIGEST, REFERENCE_TYPE,
};
use crate::sys::FsError;
use crate::sys::atomic::{IoContext as _, atomic_write_in, remove_tree};
use oci_spec::image::{Descriptor, MediaType};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;

/// Larger variant records are not read (real ones are about 100 bytes).
const MAX_RECORD_SIZE: u64 = 4 << 10;

/// Reads a layer blob (any compression) and writes it in the compression asked, returning the
/// digest of the uncompressed tar it read (the diff ID), which the store checks before keeping
/// the result.
pub type Recompress<'a> =
    dyn Fn(&mut dyn Read, &mut dyn Write) -> Result<Digest, Cause> + Send + Sync + 'a;

/// A kept variant: the blob holding a layer in one compression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub digest: Digest,
    pub size: u64,
}

/// The media types an export writes: OCI's or Docker's schema 2 ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTypes {
    Oci,
    Docker,
}

impl MediaTypes {
    /// OCI's when `oci` (BuildKit's `oci-mediatypes=true`), else Docker's.
    pub fn oci(oci: bool) -> MediaTypes {
        if oci {
            MediaTypes::Oci
        } else {
            MediaTypes::Docker
        }
    }

    /// The family of a manifest or index media type (Docker's for docker's types, else OCI's).
    pub fn of(media_type: &str) -> MediaTypes {
        match media_type {
            DOCKER_MANIFEST | DOCKER_MANIFEST_LIST => MediaTypes::Docker,
            _ => MediaTypes::Oci,
        }
    }

    pub fn manifest(self) -> &'static str {
        match self {
            MediaTypes::Oci => OCI_MANIFEST,
            MediaTypes::Docker => DOCKER_MANIFEST,
        }
    }

    pub fn index(self) -> &'static str {
        match self {
            MediaTypes::Oci => OCI_INDEX,
            MediaTypes::Docker => DOCKER_MANIFEST_LIST,
        }
    }

    pub fn config(self) -> &'static str {
        match self {
            MediaTypes::Oci => OCI_CONFIG,
            MediaTypes::Docker => DOCKER_CONFIG,
        }
    }

    pub fn layer(self, compression: Compression) -> &'static str {
        match self {
            MediaTypes::Oci => compression.media_type(),
            MediaTypes::Docker => compression.docker_media_type(),
        }
    }
}

/// An index as an export writes it ([`Store::index_with`]).
#[derive(Debug, Clone)]
pub struct ConvertedIndex {
    pub digest: Digest,
    pub descriptor: Descriptor,
    /// The attestation manifests rewritten about the converted images: the stored one's digest
    /// and the new one's index entry (annotations and platform included), in the index's order.
    pub attestations: Vec<(Digest, Descriptor)>,
}

impl ConvertedIndex {
    /// The index entry `entry` of the stored index as the converted one lists it: a rewritten
    /// attestation manifest's new entry, else `entry` itself.
    pub fn attestation<'a>(&'a self, digest: &Digest, entry: &'a Descriptor) -> &'a Descriptor {
        self.attestations
            .iter()
            .find(|(old, _)| old == digest)
            .map_or(entry, |(_, new)| new)
    }
}

/// What an export asks of an image's layers and documents.
#[derive(Clone, Copy)]
pub struct LayerFormat<'a> {
    pub compression: Compression,
    /// Compress again even when the layer exists in this compression (`force-compression`).
    pub force: bool,
    /// The media types to write; `None` keeps each image's own (its manifest's family).
    pub media_types: Option<MediaTypes>,
    /// The compressor (see [`Recompress`]).
    pub recompress: &'a Recompress<'a>,
}

impl std::fmt::Debug for LayerFormat<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerFormat")
            .field("compression", &self.compression)
            .field("force", &self.force)
            .field("media_types", &self.media_types)
            .finish_non_exhaustive()
    }
}

impl Store {
    fn variants_dir(&self) -> PathBuf {
        self.root.join("variants")
    }

    fn variant_path(&self, diff_id: &Digest, compression: Compression) -> PathBuf {
        self.variants_dir()
            .join(diff_id.hex())
            .join(compression.name())
    }

    /// The kept variant of the layer `diff_id` in `compression`, when there is one and its blob
    /// is here. An uncompressed layer is its own variant when its blob (named by the diff ID) is
    /// stored.
    pub fn variant(&self, diff_id: &Digest, compression: Compression) -> Option<Variant> {
        if compression == Compression::None
            && let Ok(size) = self.blobs.size(diff_id)
        {
            return Some(Variant {
                digest: diff_id.clone(),
                size,
            });
        }
        let path = self.variant_path(diff_id, compression);
        let mut bytes = Vec::new();
        fs::File::open(&path)
            .ok()?
            .take(MAX_RECORD_SIZE)
            .read_to_end(&mut bytes)
            .ok()?;
        let variant: Variant = serde_json::from_slice(&bytes).ok()?;
        (self.blobs.size(&variant.digest).ok() == Some(variant.size)).then_some(variant)
    }

    /// Remembers the stored blob `variant` as the layer `diff_id` in `compression` (replacing
    /// what was kept). The caller has checked that the blob decompresses to `diff_id`.
    pub fn record_variant(
        &self,
        diff_id: &Digest,
        compression: Compression,
        variant: &Variant,
    ) -> Result<(), StoreError> {
        if compression == Compression::None {
            // The uncompressed blob is named by its diff ID: nothing to remember.
            return Ok(());
        }
        let path = self.variant_path(diff_id, compression);
        let dir = self.variants_dir().join(diff_id.hex());
        crate::sys::atomic::create_private_dir_all(&dir)?;
        let bytes = serde_json::to_vec(variant).map_err(|err| StoreError::Document {
            what: "layer variant",
            digest: diff_id.clone(),
            source: err.into(),
        })?;
        Ok(atomic_write_in(self.staging(), &path, &bytes)?)
    }

    /// The blobs of every kept variant of the layer `diff_id`, its uncompressed blob too (for
    /// the collection: they live as long as the layer does, so an image pushed compressed keeps
    /// the build cache's uncompressed layers, and a push in another compression finds them).
    pub(super) fn variant_blobs(&self, diff_id: &Digest) -> Vec<Digest> {
        Compression::ALL
            .into_iter()
            .filter_map(|c| self.variant(diff_id, c))
            .map(|v| v.digest)
            .collect()
    }

    /// After an image (or multi-platform index) `source` was exported as `converted` (the same
    /// image in another compression or media types) under `name`: when the tag `name` names
    /// `source`, it moves to `converted`, as the image under that name is now the one the
    /// registry holds (docker's repo digest), and an image `source` leaves `index.json` when that
    /// was its last name (its layers stay: they are `converted`'s layers' variants; an index
    /// stays, untagged, as its digest is its ID). Returns whether
    /// the tag moved.
    pub fn retag_exported(
        &self,
        name: &str,
        source: &Digest,
        converted: &Descriptor,
    ) -> Result<bool, StoreError> {
        let Ok(name) = super::ImageName::parse(name) else {
            return Ok(false);
        };
        let converted_digest = descriptor_digest("manifest", source, converted)?;
        if converted_digest == *source {
            return Ok(false);
        }
        let _lease = self.lease()?;
        self.modify_index(|index| {
            if index
                .find(&name)
                .is_none_or(|entry| entry.digest != *source)
            {
                return Ok(false);
            }
            let multi_platform = index
                .find(&name)
                .is_some_and(|entry| super::is_index(entry.descriptor.media_type()));
            index.set_tag(&name, converted, &converted_digest);
            // A multi-platform image stays listed untagged: its digest is its ID, which a build's
            // further exports (and the user) still name it by; one image's ID is its config's
            // digest, which the converted image answers for.
            if index.names_of(source).is_empty() && !multi_platform {
                index.remove_digest(source);
            }
            Ok(true)
        })
    }

    /// The diff IDs that have variant records (directories named by a digest).
    pub(super) fn variant_diff_ids(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.variants_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(FsError::new("read directory", &dir, err).into()),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.fs("read directory", &dir)?;
            if let Some(diff_id) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                found.push(diff_id);
            }
        }
        Ok(found)
    }

    /// Forgets the variants of `diff_id` (their blobs are the collection's to delete).
    pub(super) fn remove_variants(&self, diff_id: &Digest) -> Result<(), StoreError> {
        Ok(remove_tree(&self.variants_dir().join(diff_id.hex()))?)
    }

    /// The layer `layer` as a blob in `format.compression`: its own blob when it is in that
    /// compression, else the kept variant, else (and always with `format.force`) a new one
    /// compressed from its blob, checked against the diff ID and kept. The result's media type
    /// is of `media_types` (the layer's own when it is used as it is). Hold a [`Lease`].
    pub fn layer_as(
        &self,
        layer: &LayerInfo,
        format: &LayerFormat<'_>,
        media_types: MediaTypes,
    ) -> Result<LayerInfo, StoreError> {
        let own = Compression::from_media_type(layer.media_type.as_ref());
        let with = |variant: Variant| LayerInfo {
            digest: variant.digest,
            size: variant.size,
            media_type: MediaType::from(media_types.layer(format.compression)),
            diff_id: layer.diff_id.clone(),
        };
        if !format.force {
            if own == Some(format.compression) {
                let mut same = layer.clone();
                if MediaTypes::of_layer(layer.media_type.as_ref()) != Some(media_types) {
                    same.media_type = MediaType::from(media_types.layer(format.compression));
                }
                return Ok(same);
            }
            if let Some(variant) = self.variant(&layer.diff_id, format.compression) {
                return Ok(with(variant));
            }
        }
        let mut source = self.blobs.reader(&layer.digest, Some(layer.size))?;
        let mut writer = self.blobs.writer()?;
        let diff_id = (format.recompress)(&mut source, &mut writer).map_err(|source| {
            StoreError::Variant {
                diff_id: layer.diff_id.clone(),
                compression: format.compression.name(),
                source,
            }
        })?;
        if diff_id != layer.diff_id {
            return Err(StoreError::Variant {
                diff_id: layer.diff_id.clone(),
                compression: format.compression.name(),
                source: format!(
                    "the layer blob {} holds the diff ID {diff_id}",
                    layer.digest
                )
                .into(),
            });
        }
        let blob = writer.commit(None)?;
        let variant = Variant {
            digest: blob.digest,
            size: blob.size,
        };
        self.record_variant(&layer.diff_id, format.compression, &variant)?;
        Ok(with(variant))
    }

    /// The image `image` with its layers in `format` ([`Store::layer_as`], several layers at
    /// once) and its manifest and config descriptor in `format.media_types`: the image itself
    /// when nothing changes (so a pulled image pushed back keeps its digest), else a new
    /// manifest, stored as a blob (not listed in `index.json`: it is what an export writes, and
    /// a collection may delete it once nothing holds a lease).
    pub fn image_as(
        &self,
        image: &StoredImage,
        format: &LayerFormat<'_>,
    ) -> Result<StoredImage, StoreError> {
        let _lease: Lease = self.lease()?;
        let media_types = format
            .media_types
            .unwrap_or_else(|| MediaTypes::of(image.manifest_descriptor.media_type().as_ref()));
        let layers = self.layers_as(&image.layers, format, media_types)?;
        self.manifest_with(image, layers, media_types)
    }

    /// [`Store::layer_as`] of each of `layers`, up to as many at once as there are cores (each
    /// compression uses every core too, but reading and hashing do not).
    pub fn layers_as(
        &self,
        layers: &[LayerInfo],
        format: &LayerFormat<'_>,
        media_types: MediaTypes,
    ) -> Result<Vec<LayerInfo>, StoreError> {
        let width = std::thread::available_parallelism().map_or(1, usize::from);
        let mut converted = Vec::with_capacity(layers.len());
        for group in layers.chunks(width.max(2)) {
            let results: Vec<Result<LayerInfo, StoreError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = group
                    .iter()
                    .map(|layer| scope.spawn(move || self.layer_as(layer, format, media_types)))
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| {
                        handle.join().unwrap_or_else(|_| {
                            Err(StoreError::Conflict(
                                "a layer compression thread panicked".to_string(),
                            ))
                        })
                    })
                    .collect()
            });
            for result in results {
                converted.push(result?);
            }
        }
        Ok(converted)
    }

    /// `image` with `layers` in place of its own and its manifest in `media_types`: the image
    /// itself when that changes nothing, else a new manifest blob (see [`Store::image_as`]).
    pub fn manifest_with(
        &self,
        image: &StoredImage,
        layers: Vec<LayerInfo>,
        media_types: MediaTypes,
    ) -> Result<StoredImage, StoreError> {
        let unchanged = layers.len() == image.layers.len()
            && layers
                .iter()
                .zip(&image.layers)
                .all(|(new, old)| new.digest == old.digest && new.media_type == old.media_type)
            && MediaTypes::of(image.manifest_descriptor.media_type().as_ref()) == media_types
            && image.manifest_descriptor.media_type().as_ref() == media_types.manifest()
            && image.manifest.config().media_type().as_ref() == media_types.config();
        if unchanged {
            return Ok(image.clone());
        }
        // The stored manifest with the new parts, serialised as kiln writes every manifest, so
        // a build whose layers are these blobs (from a compressed shared cache) has this digest.
        let mut manifest = image.manifest.clone();
        let oci = media_types == MediaTypes::Oci;
        manifest.set_media_type(Some(MediaType::from(media_types.manifest())));
        let mut config = manifest.config().clone();
        config.set_media_type(MediaType::from(media_types.config()));
        manifest.set_config(config);
        let descriptors = layers
            .iter()
            .zip(image.manifest.layers())
            .map(|(layer, old)| {
                let mut descriptor =
                    super::descriptor(layer.media_type.clone(), &layer.digest, layer.size);
                if oci {
                    descriptor.set_annotations(old.annotations().clone());
                }
                descriptor
            })
            .collect();
        manifest.set_layers(descriptors);
        // The annotations go last, sorted, as a build writes them (`annotated`): a map of
        // them would serialise in a different order each time, and so give another digest.
        let annotations: std::collections::BTreeMap<String, String> = match oci {
            true => manifest.annotations().clone().unwrap_or_default(),
            false => Default::default(),
        }
        .into_iter()
        .collect();
        manifest.set_annotations(None);
        let bytes = serde_json::to_vec(&manifest).map_err(|err| StoreError::Document {
            what: "image manifest",
            digest: image.manifest_digest.clone(),
            source: err.into(),
        })?;
        let bytes = super::annotated::with_annotations(bytes, &annotations);
        let blob = self.blobs.write(&bytes)?;
        let manifest_descriptor = blob.descriptor(MediaType::from(media_types.manifest()));
        let manifest = self.manifest(&blob.digest, Some(blob.size))?;
        let mut converted = image.clone();
        // The descriptor's own annotations (`manifest-descriptor` ones) name the image in any
        // format.
        let mut manifest_descriptor = manifest_descriptor;
        manifest_descriptor.set_annotations(image.manifest_descriptor.annotations().clone());
        converted.manifest_descriptor = manifest_descriptor;
        converted.manifest_digest = blob.digest;
        converted.manifest = manifest;
        converted.layers = layers;
        Ok(converted)
    }

    /// An index document like the stored one `bytes` (of `digest`) with `children` (old digest →
    /// new descriptor) in place of its manifests and its media type in `media_types`; the same
    /// bytes when nothing changes. An attestation manifest about a child that changed is
    /// rewritten about the new one ([`Store::attestation_about`]) and listed in its place, its
    /// `vnd.docker.reference.digest` the new manifest's digest, as BuildKit attests the image
    /// it exports. Returns the stored index and the attestation manifests it replaced.
    pub fn index_with(
        &self,
        digest: &Digest,
        bytes: &[u8],
        media_type: &str,
        children: &[(Digest, Descriptor)],
        media_types: MediaTypes,
    ) -> Result<ConvertedIndex, StoreError> {
        let invalid = |source: Cause| StoreError::Document {
            what: "image index",
            digest: digest.clone(),
            source,
        };
        let mut document: Value =
            serde_json::from_slice(bytes).map_err(|err| invalid(err.into()))?;
        let mut changed = media_type != media_types.index();
        let mut attestations = Vec::new();
        if let Some(manifests) = document.get_mut("manifests").and_then(Value::as_array_mut) {
            for entry in manifests {
                let Some(old) = entry
                    .get("digest")
                    .and_then(Value::as_str)
                    .and_then(|d| Digest::parse(d).ok())
                else {
                    continue;
                };
                if let Some((_, new)) = children.iter().find(|(d, _)| *d == old) {
                    let new_digest = descriptor_digest("manifest", digest, new)?;
                    if new_digest != old || entry["mediaType"] != new.media_type().to_string() {
                        changed = true;
                    }
                    entry["mediaType"] = json!(new.media_type().to_string());
                    entry["digest"] = json!(new_digest.to_string());
                    entry["size"] = json!(new.size());
                    continue;
                }
                // An attestation manifest about a child that changed.
                let annotation = |key: &str| {
                    entry
                        .get("annotations")
                        .and_then(|a| a.get(key))
                        .and_then(Value::as_str)
                };
                if annotation(REFERENCE_TYPE) != Some(ATTESTATION_MANIFEST) {
                    continue;
                }
                let Some((subject, converted)) = annotation(REFERENCE_DIGEST)
                    .and_then(|d| Digest::parse(d).ok())
                    .and_then(|about| children.iter().find(|(d, _)| *d == about))
                else {
                    continue;
                };
                let new_subject = descriptor_digest("manifest", digest, converted)?;
                if new_subject == *subject {
                    // The same document (its media type is in its bytes): nothing to say anew.
                    continue;
                }
                let listed: Descriptor =
                    serde_json::from_value(entry.clone()).map_err(|err| invalid(err.into()))?;
                let rewritten = self.attestation_about(&listed, subject, converted)?;
                let rewritten_digest = descriptor_digest("manifest", digest, &rewritten)?;
                entry["digest"] = json!(rewritten_digest.to_string());
                entry["size"] = json!(rewritten.size());
                entry["annotations"][REFERENCE_DIGEST] = json!(new_subject.to_string());
                let mut listed_now = rewritten;
                let mut annotations = listed_now.annotations().clone().unwrap_or_default();
                annotations.insert(REFERENCE_DIGEST.to_string(), new_subject.to_string());
                listed_now.set_annotations(Some(annotations));
                attestations.push((old, listed_now));
                changed = true;
            }
        }
        if !changed {
            let same = super::descriptor(MediaType::from(media_type), digest, bytes.len() as u64);
            return Ok(ConvertedIndex {
                digest: digest.clone(),
                descriptor: same,
                attestations,
            });
        }
        document["mediaType"] = json!(media_types.index());
        let bytes = serde_json::to_vec(&document).map_err(|err| invalid(err.into()))?;
        let blob = self.blobs.write(&bytes)?;
        let descriptor = blob.descriptor(MediaType::from(media_types.index()));
        Ok(ConvertedIndex {
            digest: blob.digest,
            descriptor,
            attestations,
        })
    }
}

impl MediaTypes {
    /// The family of a layer media type, when it names one.
    fn of_layer(media_type: &str) -> Option<MediaTypes> {
        if media_type.starts_with("application/vnd.docker.") {
            Some(MediaTypes::Docker)
        } else if media_type.starts_with("application/vnd.oci.") {
            Some(MediaTypes::Oci)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PruneOptions;
    use oci_spec::image::ImageConfiguration;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store with one tagged image of two uncompressed layers.
    fn store_with_image(dir: &std::path::Path) -> (Store, StoredImage) {
        let store = Store::open(dir).unwrap();
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for content in [&b"first layer tar"[..], b"second layer tar"] {
            let blob = store.blobs().write(content).unwrap();
            diff_ids.push(blob.digest.to_string());
            layers.push(blob.descriptor(MediaType::ImageLayer));
        }
        let config: ImageConfiguration = serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let image = store.write_image(&config, &layers).unwrap();
        store.tag("app:1", &image.manifest_descriptor).unwrap();
        let image = store.resolve("app:1").unwrap();
        (store, image)
    }

    /// A "compressor" that counts its calls and frames the bytes (the store only sees blobs).
    fn framing(
        calls: &AtomicUsize,
    ) -> impl Fn(&mut dyn Read, &mut dyn Write) -> Result<Digest, Cause> + Send + Sync + '_ {
        move |reader, writer| {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes)?;
            let plain = bytes.strip_prefix(b"GZ:").unwrap_or(&bytes).to_vec();
            writer.write_all(b"GZ:")?;
            writer.write_all(&plain)?;
            Ok(Digest::of(&plain))
        }
    }

    #[test]
    fn a_converted_manifest_writes_its_annotations_sorted_last_as_a_build_does() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut image) = store_with_image(dir.path());
        let keys = ["j", "c", "a", "h", "e", "b", "g", "d", "i", "f"];
        image.manifest.set_annotations(Some(
            keys.iter()
                .map(|k| (format!("org.{k}"), k.to_string()))
                .collect(),
        ));
        let other = store.blobs().write(b"first layer, compressed").unwrap();
        let mut layers = image.layers.clone();
        layers[0].digest = other.digest.clone();
        layers[0].size = other.size;
        layers[0].media_type = MediaType::ImageLayerGzip;
        let converted = store
            .manifest_with(&image, layers, MediaTypes::Oci)
            .unwrap();
        let bytes = store
            .blobs()
            .read_sized(
                &converted.manifest_digest,
                converted.manifest_descriptor.size(),
            )
            .unwrap();
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        let annotations: Vec<String> = sorted
            .iter()
            .map(|k| format!("\"org.{k}\":\"{k}\""))
            .collect();
        let tail = format!(",\"annotations\":{{{}}}}}", annotations.join(","));
        assert!(
            bytes.ends_with(tail.as_bytes()),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }

    /// An index of `image` and an attestation manifest about it (one statement), as a build
    /// writes them: the index's bytes and digest, and the statement's bytes.
    fn attested_index(store: &Store, image: &StoredImage) -> (Vec<u8>, Digest, Vec<u8>) {
        let statement = serde_json::to_vec(&json!({
            "_type": "https://in-toto.io/Statement/v1",
            "predicateType": "https://spdx.dev/Document",
            "subject": [{"name": "_", "digest": {"sha256": image.manifest_digest.hex()}}],
            "predicate": {"spdxVersion": "SPDX-2.3"},
        }))
        .unwrap();
        let statement_blob = store.blobs().write(&statement).unwrap();
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                       "digest": store.blobs().write(b"{}").unwrap().digest.to_string(), "size": 2},
            "layers": [{"mediaType": crate::oci::media_type::IN_TOTO,
                        "digest": statement_blob.digest.to_string(), "size": statement_blob.size}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": image.manifest_digest.to_string(),
                        "size": image.manifest_descriptor.size()},
        }))
        .unwrap();
        let manifest = store.blobs().write(&manifest).unwrap();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": image.manifest_digest.to_string(),
                 "size": image.manifest_descriptor.size()},
                {"mediaType": OCI_MANIFEST, "digest": manifest.digest.to_string(),
                 "size": manifest.size,
                 "annotations": {REFERENCE_DIGEST: image.manifest_digest.to_string(),
                                 REFERENCE_TYPE: ATTESTATION_MANIFEST},
                 "platform": {"architecture": "unknown", "os": "unknown"}},
            ],
        }))
        .unwrap();
        let digest = store.blobs().write(&index).unwrap().digest;
        (index, digest, statement)
    }

    #[test]
    fn an_attestation_follows_its_image_into_another_format() {
        let dir = tempfile::tempdir().unwrap();
        let (store, image) = store_with_image(dir.path());
        let (index, digest, statement) = attested_index(&store, &image);
        // Nothing converts: the same index, nothing rewritten.
        let same = store
            .index_with(
                &digest,
                &index,
                OCI_INDEX,
                &[(
                    image.manifest_digest.clone(),
                    image.manifest_descriptor.clone(),
                )],
                MediaTypes::Oci,
            )
            .unwrap();
        assert_eq!(same.digest, digest);
        assert!(same.attestations.is_empty());

        let calls = AtomicUsize::new(0);
        let recompress = framing(&calls);
        let format = LayerFormat {
            compression: Compression::Gzip,
            force: false,
            media_types: None,
            recompress: &recompress,
        };
        let converted = store.image_as(&image, &format).unwrap();
        let children = [(
            image.manifest_digest.clone(),
            converted.manifest_descriptor.clone(),
        )];
        let out = store
            .index_with(&digest, &index, OCI_INDEX, &children, MediaTypes::Oci)
            .unwrap();
        let written: Value =
            serde_json::from_slice(&store.blobs().read(&out.digest).unwrap()).unwrap();
        let entry = &written["manifests"][1];
        assert_eq!(
            entry["annotations"][REFERENCE_DIGEST],
            converted.manifest_digest.to_string()
        );
        assert_eq!(out.attestations.len(), 1);
        assert_eq!(out.attestations[0].1.digest().to_string(), entry["digest"]);
        let manifest: Value = serde_json::from_slice(
            &store
                .blobs()
                .read(&Digest::parse(entry["digest"].as_str().unwrap()).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            manifest["subject"]["digest"],
            converted.manifest_digest.to_string()
        );
        assert_eq!(
            manifest["subject"]["size"],
            converted.manifest_descriptor.size()
        );
        let layer = &manifest["layers"][0];
        assert_eq!(layer["mediaType"], crate::oci::media_type::IN_TOTO);
        let rewritten = store
            .blobs()
            .read(&Digest::parse(layer["digest"].as_str().unwrap()).unwrap())
            .unwrap();
        let expected = String::from_utf8(statement)
            .unwrap()
            .replace(image.manifest_digest.hex(), converted.manifest_digest.hex());
        assert_eq!(String::from_utf8(rewritten).unwrap(), expected);
        // The same conversion writes the same documents.
        let again = store
            .index_with(&digest, &index, OCI_INDEX, &children, MediaTypes::Oci)
            .unwrap();
        assert_eq!(again.digest, out.digest);
    }

    #[test]
    fn a_variant_is_made_once_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, image) = store_with_image(dir.path());
        let calls = AtomicUsize::new(0);
        let recompress = framing(&calls);
        let format = LayerFormat {
            compression: Compression::Gzip,
            force: false,
            media_types: None,
            recompress: &recompress,
        };
        let first = store.image_as(&image, &format).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_ne!(first.manifest_digest, image.manifest_digest);
        for (layer, old) in first.layers.iter().zip(&image.layers) {
            assert_eq!(layer.media_type.to_string(), Compression::Gzip.media_type());
            assert_eq!(layer.diff_id, old.diff_id);
            assert_eq!(store.blobs().read(&layer.digest).unwrap()[..3], *b"GZ:");
            assert_eq!(
                store
                    .variant(&old.diff_id, Compression::Gzip)
                    .unwrap()
                    .digest,
                layer.digest
            );
        }
        let record = dir
            .path()
            .join("variants")
            .join(image.layers[0].diff_id.hex())
            .join("gzip");
        let inode =
            |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let record_inode = inode(&record);
        let second = store.image_as(&image, &format).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "nothing compressed again");
        assert_eq!(second.manifest_digest, first.manifest_digest);
        assert_eq!(inode(&record), record_inode);

        // The converted image is its own variant: nothing to do, same digest.
        let again = store.image_as(&second, &format).unwrap();
        assert_eq!(again.manifest_digest, second.manifest_digest);
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let forced = LayerFormat {
            force: true,
            ..format
        };
        store.image_as(&image, &forced).unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "force-compression compresses again"
        );
    }

    #[test]
    fn docker_media_types_are_written_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (store, image) = store_with_image(dir.path());
        let calls = AtomicUsize::new(0);
        let recompress = framing(&calls);
        let format = LayerFormat {
            compression: Compression::None,
            force: false,
            media_types: Some(MediaTypes::Docker),
            recompress: &recompress,
        };
        let docker = store.image_as(&image, &format).unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "uncompressed layers are used as they are"
        );
        let manifest: Value =
            serde_json::from_slice(&store.blobs().read(&docker.manifest_digest).unwrap()).unwrap();
        assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
        for layer in manifest["layers"].as_array().unwrap() {
            assert_eq!(
                layer["mediaType"],
                "application/vnd.docker.image.rootfs.diff.tar"
            );
        }
        let same = LayerFormat {
            media_types: Some(MediaTypes::Oci),
            ..format
        };
        assert_eq!(
            store.image_as(&image, &same).unwrap().manifest_digest,
            image.manifest_digest
        );
    }

    #[test]
    fn a_blob_that_is_not_the_layer_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, image) = store_with_image(dir.path());
        let lying = |_: &mut dyn Read, writer: &mut dyn Write| -> Result<Digest, Cause> {
            writer.write_all(b"something else")?;
            Ok(Digest::of(b"something else"))
        };
        let format = LayerFormat {
            compression: Compression::Zstd,
            force: false,
            media_types: None,
            recompress: &lying,
        };
        let error = store.image_as(&image, &format).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot make the zstd variant of layer"),
            "{error}"
        );
        assert!(
            store
                .variant(&image.layers[0].diff_id, Compression::Zstd)
                .is_none()
        );
    }

    #[test]
    fn variants_live_and_die_with_their_layer() {
        let dir = tempfile::tempdir().unwrap();
        let (store, image) = store_with_image(dir.path());
        let calls = AtomicUsize::new(0);
        let recompress = framing(&calls);
        let format = LayerFormat {
            compression: Compression::Gzip,
            force: false,
            media_types: None,
            recompress: &recompress,
        };
        let converted = store.image_as(&image, &format).unwrap();
        // A prune keeps the variants of a tagged image (the converted manifest nothing lists
        // goes).
        store.prune(PruneOptions::default()).unwrap();
        for layer in &converted.layers {
            assert!(store.blobs().contains(&layer.digest));
        }
        assert!(!store.blobs().contains(&converted.manifest_digest));
        // A damaged record is no variant.
        let record = dir
            .path()
            .join("variants")
            .join(image.layers[1].diff_id.hex())
            .join("gzip");
        fs::write(&record, "{").unwrap();
        assert!(
            store
                .variant(&image.layers[1].diff_id, Compression::Gzip)
                .is_none()
        );
        store.image_as(&image, &format).unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "the damaged one is made again"
        );

        store.remove_image("app:1", false).unwrap();
        for layer in &converted.layers {
            assert!(
                !store.blobs().contains(&layer.digest),
                "variant blob collected"
            );
        }
        assert!(
            !dir.path()
                .join("variants")
                .join(image.layers[0].diff_id.hex())
                .exists()
        );
    }
}
