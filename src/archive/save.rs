//! `kiln save`: images into one tar archive, in docker's format or as an OCI image layout.
//!
//! Docker's format is what `docker save` of Docker 20.10 writes (moby `image/tarexport`) and
//! every `docker load` reads: `manifest.json` (`[{Config, RepoTags, Layers}]`), the config as
//! `<config hex>.json`, one directory per layer named by its legacy v1 ID with `VERSION`
//! (`1.0`), `json` (the v1 image JSON) and `layer.tar` (uncompressed), and `repositories`. Beside
//! them, as Docker 25 writes, are the OCI layout files (`oci-layout`, `index.json`,
//! `blobs/sha256/`), so OCI tools read the same archive. Each layer's bytes are stored once, as
//! `blobs/sha256/<diff id>`; `<v1 id>/layer.tar` is a relative symlink to it (docker itself
//! links repeated layers this way, and Docker 20.10's load follows such links).
//!
//! The OCI format is the image layout alone, with the store's own blobs (compressed layers stay
//! compressed), so manifests keep their digests. A multi-platform image is saved whole in it:
//! its index, named in `index.json`, and every platform's image. Docker's format has no room
//! for an index: it saves one platform's image (the host's, or `--platform`'s), as does the OCI
//! format when a platform is asked for.
//!
//! Entries are written in a fixed order with fixed metadata (owner 0:0, mtime 0), so the same
//! images always give the same bytes.

use super::{ArchiveError, chain_ids};
use crate::layer::{Compression, LayerError, decompressed};
use crate::oci::reference::Reference;
use crate::oci::{Digest, Hashing, Platform};
use crate::store::{BlobError, StoreError};
use crate::store::{
    CONTAINERD_NAME, ImageName, LayerFormat, LayerInfo, MediaTypes, REF_NAME, Store, StoredEntry,
    StoredImage, StoredIndex, descriptor,
};
use crate::sys::FsError;
use crate::sys::atomic::remove_tree;
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, Write};

/// The archive format of [`save`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// `docker save`'s archive (with the OCI layout files beside it).
    Docker,
    /// An OCI image layout as a tar.
    Oci,
}

/// The `oci-layout` file (image-layout spec).
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes the images `names` (names, IDs or ID prefixes, as for `kiln inspect`) as one tar
/// archive to `out`. A name without a tag (`busybox`) saves every tag of that repository, as
/// docker does; an ID saves the image without tags. An image named twice is saved once, with
/// all the tags asked for. `max_bytes` bounds each layer's uncompressed size (docker's format
/// stores layers uncompressed).
pub fn save(
    store: &Store,
    names: &[String],
    format: SaveFormat,
    out: impl Write,
    max_bytes: u64,
) -> Result<(), ArchiveError> {
    save_platform(store, names, format, None, out, max_bytes)
}

/// [`save`], of multi-platform images only `platform`'s image (`docker save --platform`): a
/// single-platform image must be of it. Without one, the OCI format saves a multi-platform
/// image whole and docker's format the host's image of it.
pub fn save_platform(
    store: &Store,
    names: &[String],
    format: SaveFormat,
    platform: Option<&Platform>,
    out: impl Write,
    max_bytes: u64,
) -> Result<(), ArchiveError> {
    save_in_format(store, names, format, platform, None, out, max_bytes).map(drop)
}

/// [`save_platform`] with the images' layers and media types in `layers` (the `type=oci` and
/// `type=docker` exporters' `compression=` and `oci-mediatypes=`): the OCI format writes each
/// image as [`Store::image_as`] makes it, docker's format links each `layer.tar` to the layer's
/// blob in that compression (docker's load reads gzip and zstd layers). `None` saves the
/// images as they are stored, docker's format with uncompressed layers (`docker save`'s).
///
/// Returns the descriptors `index.json` lists, one per image saved, in order and without the
/// names' annotations: each image's manifest (or, saved whole, its index) as written, which
/// has another digest than the stored one when its layers were converted.
pub fn save_in_format(
    store: &Store,
    names: &[String],
    format: SaveFormat,
    platform: Option<&Platform>,
    layers: Option<&LayerFormat<'_>>,
    out: impl Write,
    max_bytes: u64,
) -> Result<Vec<Descriptor>, ArchiveError> {
    // Keeps a collection from deleting the images' blobs while they are read.
    let _lease = store.lease()?;
    let selected = select(store, names, format, platform)?;
    write_selected(store, selected, format, layers, out, max_bytes)
}

/// [`save_in_format`] of the one image (or multi-platform image) `source` names, under the
/// names `tags` instead of its own (an `-o type=docker|oci,name=A,B` export, which names the
/// image in the archive as BuildKit's exporters do, whatever the store calls it).
///
/// Returns the descriptor of the image as written, as [`save_in_format`] does.
pub fn save_as(
    store: &Store,
    source: &str,
    tags: &[ImageName],
    format: SaveFormat,
    layers: Option<&LayerFormat<'_>>,
    out: impl Write,
    max_bytes: u64,
) -> Result<Descriptor, ArchiveError> {
    let _lease = store.lease()?;
    let mut selected = select(store, &[source.to_string()], format, None)?;
    for selection in &mut selected {
        selection.tags = tags.to_vec();
    }
    write_selected(store, selected, format, layers, out, max_bytes)?
        .pop()
        .ok_or_else(|| ArchiveError::from(StoreError::NotFound(source.to_string())))
}

/// Writes the selected images as one archive, their layers in `layers`' format if given (the
/// caller holds a lease).
fn write_selected(
    store: &Store,
    mut selected: Vec<Selected>,
    format: SaveFormat,
    layers: Option<&LayerFormat<'_>>,
    out: impl Write,
    max_bytes: u64,
) -> Result<Vec<Descriptor>, ArchiveError> {
    for selection in &selected {
        for image in selection.images() {
            super::fetch_absent_layers(store, &image.layers)?;
        }
    }
    if let (Some(layers), SaveFormat::Oci) = (layers, format) {
        for selection in &mut selected {
            convert(store, selection, layers)?;
        }
    }
    let mut tar = TarOut::new(out);
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;
    let written = match format {
        SaveFormat::Docker => write_docker(store, &selected, &mut tar, max_bytes, layers)?,
        SaveFormat::Oci => write_oci(store, &selected, &mut tar)?,
    };
    tar.finish()?;
    Ok(written)
}

/// The selection with its images (and index) in `layers`' format.
fn convert(
    store: &Store,
    selection: &mut Selected,
    layers: &LayerFormat<'_>,
) -> Result<(), ArchiveError> {
    selection.image = store.image_as(&selection.image, layers)?;
    let Some((stored, images)) = &mut selection.index else {
        return Ok(());
    };
    let mut children = Vec::new();
    for image in images.iter_mut() {
        let converted = store.image_as(image, layers)?;
        children.push((
            image.manifest_digest.clone(),
            converted.manifest_descriptor.clone(),
        ));
        *image = converted;
    }
    let bytes = store
        .blobs()
        .read_sized(&stored.digest, stored.descriptor.size())?;
    let media_types = layers
        .media_types
        .unwrap_or_else(|| MediaTypes::of(stored.descriptor.media_type().as_ref()));
    let converted = store.index_with(
        &stored.digest,
        &bytes,
        stored.descriptor.media_type().as_ref(),
        &children,
        media_types,
    )?;
    // The attestation manifests written are the converted index's.
    for child in &mut stored.manifests {
        if let Some((_, rewritten)) = converted
            .attestations
            .iter()
            .find(|(old, _)| *old == child.digest)
        {
            child.digest =
                Digest::parse(rewritten.digest().as_ref()).map_err(|e| ArchiveError::Document {
                    what: "attestation manifest",
                    name: rewritten.digest().to_string(),
                    reason: e.into(),
                })?;
            child.descriptor = rewritten.clone();
        }
    }
    stored.digest = converted.digest;
    // The index's descriptor keeps its annotations (`index-descriptor` ones).
    let mut descriptor = converted.descriptor;
    descriptor.set_annotations(stored.descriptor.annotations().clone());
    stored.descriptor = descriptor;
    Ok(())
}

/// An image (or a multi-platform image, whole) to save and the tags it is saved with.
struct Selected {
    image: StoredImage,
    tags: Vec<ImageName>,
    /// A multi-platform image saved whole: its index and every platform's image.
    index: Option<(StoredIndex, Vec<StoredImage>)>,
}

impl Selected {
    /// The images whose blobs go into the archive.
    fn images(&self) -> Vec<&StoredImage> {
        match &self.index {
            Some((_, images)) => images.iter().collect(),
            None => vec![&self.image],
        }
    }

    /// What identifies it in the archive (docker: the image ID; OCI: the manifest or index).
    fn key(&self, format: SaveFormat) -> Digest {
        match (&self.index, format) {
            (Some((index, _)), _) => index.digest.clone(),
            (None, SaveFormat::Docker) => self.image.id.clone(),
            (None, SaveFormat::Oci) => self.image.manifest_digest.clone(),
        }
    }
}

/// The images `names` give, each once (docker: by image ID; OCI: by manifest or index).
fn select(
    store: &Store,
    names: &[String],
    format: SaveFormat,
    platform: Option<&Platform>,
) -> Result<Vec<Selected>, ArchiveError> {
    let mut selected: Vec<Selected> = Vec::new();
    let mut add = |selection: Selected| match selected
        .iter_mut()
        .find(|s| s.key(format) == selection.key(format))
    {
        Some(existing) => {
            for tag in selection.tags {
                if !existing.tags.contains(&tag) {
                    existing.tags.push(tag);
                }
            }
        }
        None => selected.push(selection),
    };
    // What one name or ID gives: a whole index only in the OCI format without a platform.
    let one = |text: &str, tags: &dyn Fn(&[ImageName]) -> Vec<ImageName>| {
        if format == SaveFormat::Oci
            && platform.is_none()
            && let StoredEntry::Index(index) = store.resolve_entry(text)?
        {
            return whole_index(store, *index, text, tags);
        }
        let image = store.resolve_platform(text, platform)?;
        Ok::<_, ArchiveError>(Selected {
            tags: tags(&image.names),
            image,
            index: None,
        })
    };
    for text in names {
        if let Some(repository) = repository_only(text) {
            let mut found = false;
            for summary in store.images()? {
                let of_repository = |names: &[ImageName]| -> Vec<ImageName> {
                    names
                        .iter()
                        .filter(|n| n.repository() == repository)
                        .cloned()
                        .collect()
                };
                let tags = of_repository(&summary.image.names);
                let Some(first) = tags.first() else {
                    continue;
                };
                found = true;
                add(one(&first.full(), &of_repository)?);
            }
            if found {
                continue;
            }
        }
        let tag = |names: &[ImageName]| -> Vec<ImageName> {
            ImageName::parse(text)
                .ok()
                .filter(|name| names.contains(name))
                .into_iter()
                .collect()
        };
        add(one(text, &tag)?);
    }
    Ok(selected)
}

/// A multi-platform image to save whole; every platform's image must be in the store.
fn whole_index(
    store: &Store,
    index: StoredIndex,
    text: &str,
    tags: &dyn Fn(&[ImageName]) -> Vec<ImageName>,
) -> Result<Selected, ArchiveError> {
    let absent: Vec<String> = index
        .manifests
        .iter()
        .filter(|m| !m.present)
        .map(|m| {
            m.platform
                .as_ref()
                .map_or_else(|| m.digest.to_string(), ToString::to_string)
        })
        .collect();
    if !absent.is_empty() {
        return Err(ArchiveError::PartialIndex {
            name: text.to_string(),
            absent,
        });
    }
    let images = index
        .manifests
        .iter()
        .filter(|m| {
            crate::store::is_manifest(m.descriptor.media_type())
                && !crate::store::is_attestation(&m.descriptor)
        })
        .map(|m| store.index_image(&index, m))
        .collect::<Result<Vec<_>, _>>()?;
    let image = store.resolve_platform(text, None).or_else(|_| {
        images
            .first()
            .cloned()
            .ok_or_else(|| crate::store::StoreError::MultiPlatform(text.to_string()))
    })?;
    Ok(Selected {
        tags: tags(&index.names),
        image,
        index: Some((index, images)),
    })
}

/// The normalised repository of a name without tag or digest (`busybox` →
/// `docker.io/library/busybox`).
fn repository_only(text: &str) -> Option<String> {
    let reference = Reference::parse_normalized(text).ok()?;
    (reference.tag().is_none() && reference.digest().is_none())
        .then(|| format!("{}/{}", reference.domain(), reference.path()))
}

/// One item of docker's `manifest.json`.
#[derive(serde::Serialize)]
struct ManifestItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The `container_config` docker writes into the v1 JSON of a layer below the top: an empty
/// container config.
fn empty_container_config() -> Value {
    json!({
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false,
        "AttachStdout": false, "AttachStderr": false, "Tty": false, "OpenStdin": false,
        "StdinOnce": false, "Env": null, "Cmd": null, "Image": "", "Volumes": null,
        "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": null,
    })
}

fn docker_archive_error(what: &str, err: impl Into<crate::error::Cause>) -> ArchiveError {
    ArchiveError::Document {
        what: "archive entry",
        name: what.to_string(),
        reason: err.into(),
    }
}

/// Docker's archive (see the module documentation); returns each image's manifest descriptor
/// as `index.json` lists it (without the names).
fn write_docker<W: Write>(
    store: &Store,
    selected: &[Selected],
    tar: &mut TarOut<W>,
    max_bytes: u64,
    format: Option<&LayerFormat<'_>>,
) -> Result<Vec<Descriptor>, ArchiveError> {
    let media_types = format
        .and_then(|f| f.media_types)
        .unwrap_or(MediaTypes::Oci);
    let mut items = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut index = Vec::new();
    let mut layer_sizes: HashMap<Digest, u64> = HashMap::new();
    let mut written = Vec::new();
    for Selected { image, tags, .. } in selected {
        if image.layers.is_empty() {
            let name = tags
                .first()
                .map_or_else(|| image.id.to_string(), ToString::to_string);
            return Err(ArchiveError::NoLayers { name });
        }
        let config: Map<String, Value> = serde_json::from_slice(&image.config_bytes)
            .map_err(|e| docker_archive_error("image config", e))?;
        let os = config
            .get("os")
            .and_then(Value::as_str)
            .unwrap_or("linux")
            .to_string();
        let diff_ids: Vec<Digest> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
        let chains = chain_ids(&diff_ids);
        let mut parent: Option<Digest> = None;
        let mut layer_paths = Vec::new();
        let mut oci_layers = Vec::new();
        for (position, (layer, chain)) in image.layers.iter().zip(&chains).enumerate() {
            // Uncompressed, as `docker save` writes it, unless the exporter asked for a
            // compression: then the layer's blob in it (a kept variant, or made now).
            let compressed = match format {
                Some(format) if format.compression != Compression::None => {
                    Some(store.layer_as(layer, format, media_types)?)
                }
                _ => None,
            };
            let blob = compressed.as_ref().map_or(&layer.diff_id, |c| &c.digest);
            let blob_path = format!("blobs/sha256/{}", blob.hex());
            let size = match (layer_sizes.get(blob), &compressed) {
                (Some(&size), _) => size,
                (None, Some(compressed)) => {
                    if tar.is_new(&blob_path) {
                        let reader = store
                            .blobs()
                            .reader(&compressed.digest, Some(compressed.size))?;
                        tar.file(&blob_path, compressed.size, reader)?;
                    }
                    layer_sizes.insert(blob.clone(), compressed.size);
                    compressed.size
                }
                (None, None) => {
                    let size = append_uncompressed(store, layer, tar, &blob_path, max_bytes)?;
                    layer_sizes.insert(layer.diff_id.clone(), size);
                    size
                }
            };
            let media_type = MediaType::from(media_types.layer(
                compressed.as_ref().map_or(Compression::None, |_| {
                    format.map_or(Compression::None, |f| f.compression)
                }),
            ));
            oci_layers.push(descriptor(media_type, blob, size));
            let top = position + 1 == image.layers.len();
            let (v1_id, v1_json) = v1_image(&config, top, &os, chain, parent.as_ref())?;
            let dir = v1_id.hex().to_string();
            if tar.is_new(&format!("{dir}/")) {
                tar.dir(&format!("{dir}/"))?;
                tar.bytes(&format!("{dir}/VERSION"), b"1.0")?;
                tar.bytes(&format!("{dir}/json"), &v1_json)?;
                tar.symlink(
                    &format!("{dir}/layer.tar"),
                    &format!("../blobs/sha256/{}", blob.hex()),
                )?;
            }
            layer_paths.push(format!("{dir}/layer.tar"));
            parent = Some(v1_id);
        }
        let config_path = format!("blobs/sha256/{}", image.id.hex());
        if tar.is_new(&config_path) {
            tar.bytes(&config_path, &image.config_bytes)?;
            tar.bytes(&format!("{}.json", image.id.hex()), &image.config_bytes)?;
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::from(media_types.manifest()))
            .config(descriptor(
                MediaType::from(media_types.config()),
                &image.id,
                image.config_bytes.len() as u64,
            ))
            .layers(oci_layers)
            .build()
            .map_err(|e| docker_archive_error("image manifest", e))?;
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| docker_archive_error("image manifest", e))?;
        let manifest_digest = Digest::of(&manifest_bytes);
        let manifest_path = format!("blobs/sha256/{}", manifest_digest.hex());
        if tar.is_new(&manifest_path) {
            tar.bytes(&manifest_path, &manifest_bytes)?;
        }
        let manifest_descriptor = descriptor(
            MediaType::from(media_types.manifest()),
            &manifest_digest,
            manifest_bytes.len() as u64,
        );
        if let Some(top) = &parent {
            for tag in tags {
                repositories
                    .entry(tag.familiar_repository().to_string())
                    .or_default()
                    .insert(tag.tag().to_string(), top.hex().to_string());
            }
        }
        index.extend(index_descriptors(&manifest_descriptor, tags));
        written.push(manifest_descriptor);
        items.push(ManifestItem {
            config: format!("{}.json", image.id.hex()),
            repo_tags: (!tags.is_empty()).then(|| tags.iter().map(ToString::to_string).collect()),
            layers: layer_paths,
        });
    }
    tar.bytes("oci-layout", OCI_LAYOUT)?;
    tar.bytes("index.json", &index_json(index)?)?;
    // Go's json.Encoder, which docker writes these two with, ends them with a newline.
    let mut manifest_json =
        serde_json::to_vec(&items).map_err(|e| docker_archive_error("manifest.json", e))?;
    manifest_json.push(b'\n');
    tar.bytes("manifest.json", &manifest_json)?;
    if !repositories.is_empty() {
        let mut bytes = serde_json::to_vec(&repositories)
            .map_err(|e| docker_archive_error("repositories", e))?;
        bytes.push(b'\n');
        tar.bytes("repositories", &bytes)?;
    }
    Ok(written)
}

/// The legacy v1 ID and JSON of one layer (moby `image/v1` `CreateID`): the top layer's JSON is
/// the image config without `rootfs` and `history`; the others are an empty config created at
/// the epoch. The ID is the sha256 of that JSON with `layer_id` (the chain ID) and `parent`
/// (the parent's v1 ID) added, so a layer shared by two images at the same place in the same
/// stack gets one directory. The IDs follow docker's recipe but are not guaranteed to be
/// byte-identical to docker's (Go's encoder escapes `<`, `>` and `&`); no reader compares them.
fn v1_image(
    config: &Map<String, Value>,
    top: bool,
    os: &str,
    chain: &Digest,
    parent: Option<&Digest>,
) -> Result<(Digest, Vec<u8>), ArchiveError> {
    let mut v1 = if top {
        let mut v1 = config.clone();
        for key in ["rootfs", "history", "id", "parent"] {
            v1.remove(key);
        }
        v1
    } else {
        let mut v1 = Map::new();
        v1.insert("created".into(), json!("1970-01-01T00:00:00Z"));
        v1.insert("container_config".into(), empty_container_config());
        v1.insert("os".into(), json!(os));
        v1
    };
    let mut for_id = v1.clone();
    for_id.insert("layer_id".into(), json!(chain.to_string()));
    if let Some(parent) = parent {
        for_id.insert("parent".into(), json!(parent.to_string()));
    }
    let id_bytes = serde_json::to_vec(&for_id).map_err(|e| docker_archive_error("json", e))?;
    let id = Digest::of(&id_bytes);
    v1.insert("id".into(), json!(id.hex()));
    if let Some(parent) = parent {
        v1.insert("parent".into(), json!(parent.hex()));
    }
    let bytes = serde_json::to_vec(&v1).map_err(|e| docker_archive_error("json", e))?;
    Ok((id, bytes))
}

/// The `index.json` descriptors of a manifest: one per tag, named as the store names them
/// (`ref.name` the familiar name, containerd's annotation the full one); one without names
/// for an untagged image. The descriptor's own annotations (a build's
/// `--annotation manifest-descriptor:` or `index-descriptor:`) stay, as in BuildKit's layout.
fn index_descriptors(manifest: &Descriptor, tags: &[ImageName]) -> Vec<Descriptor> {
    if tags.is_empty() {
        return vec![manifest.clone()];
    }
    tags.iter()
        .map(|tag| {
            let mut named = manifest.clone();
            let mut annotations = manifest.annotations().clone().unwrap_or_default();
            annotations.insert(REF_NAME.to_string(), tag.familiar());
            annotations.insert(CONTAINERD_NAME.to_string(), tag.full());
            named.set_annotations(Some(annotations));
            named
        })
        .collect()
}

fn index_json(manifests: Vec<Descriptor>) -> Result<Vec<u8>, ArchiveError> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .map_err(|e| docker_archive_error("index.json", e))
}

/// Appends the layer's uncompressed tar at `path`, returning its size. A compressed blob is
/// decompressed into a staging file first (the tar header needs the size) and checked against
/// the diff ID; an uncompressed one is streamed, checked against its digest on the way.
fn append_uncompressed<W: Write>(
    store: &Store,
    layer: &LayerInfo,
    tar: &mut TarOut<W>,
    path: &str,
    max_bytes: u64,
) -> Result<u64, ArchiveError> {
    let mut prefix = Vec::new();
    let blob_path = store.blobs().path(&layer.digest);
    store
        .blobs()
        .open_blob(&layer.digest)?
        .take(4)
        .read_to_end(&mut prefix)
        .map_err(|e| FsError::new("read", &blob_path, e))?;
    if Compression::detect(&prefix) == Compression::None {
        if layer.digest != layer.diff_id {
            return Err(ArchiveError::Layer {
                diff_id: layer.diff_id.clone(),
                source: Box::new(ArchiveError::LayerContent {
                    expected: layer.diff_id.clone(),
                    actual: layer.digest.clone(),
                }),
            });
        }
        let reader = store.blobs().reader(&layer.digest, Some(layer.size))?;
        tar.file(path, layer.size, reader)?;
        return Ok(layer.size);
    }
    let layer_error = |source: LayerError| ArchiveError::Layer {
        diff_id: layer.diff_id.clone(),
        source: Box::new(source),
    };
    let staged = store.staging().new_path("layer");
    let _cleanup = Cleanup(&staged);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&staged)
        .map_err(|e| FsError::new("create", &staged, e))?;
    let blob = store.blobs().reader(&layer.digest, Some(layer.size))?;
    let mut uncompressed = Hashing::new(decompressed(blob, max_bytes).map_err(layer_error)?);
    io::copy(&mut uncompressed, &mut file).map_err(|e| layer_error(LayerError::from_read(e)))?;
    let (diff_id, size, _) = uncompressed.finish();
    if diff_id != layer.diff_id {
        return Err(ArchiveError::Layer {
            diff_id: layer.diff_id.clone(),
            source: Box::new(ArchiveError::LayerContent {
                expected: layer.diff_id.clone(),
                actual: diff_id,
            }),
        });
    }
    file.rewind()
        .map_err(|e| FsError::new("read", &staged, e))?;
    tar.file(path, size, file)?;
    Ok(size)
}

/// Removes a staging file when dropped.
struct Cleanup<'a>(&'a std::path::Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = remove_tree(self.0);
    }
}

/// The OCI image layout archive: the store's blobs as they are, `index.json` last; returns
/// what `index.json` lists of each selection (its manifest or index, without the names).
fn write_oci<W: Write>(
    store: &Store,
    selected: &[Selected],
    tar: &mut TarOut<W>,
) -> Result<Vec<Descriptor>, ArchiveError> {
    tar.bytes("oci-layout", OCI_LAYOUT)?;
    let mut index = Vec::new();
    let mut written = Vec::new();
    for selection in selected {
        for image in selection.images() {
            for layer in &image.layers {
                let path = format!("blobs/sha256/{}", layer.digest.hex());
                if tar.is_new(&path) {
                    let reader = store.blobs().reader(&layer.digest, Some(layer.size))?;
                    tar.file(&path, layer.size, reader)?;
                }
            }
            let config_path = format!("blobs/sha256/{}", image.id.hex());
            if tar.is_new(&config_path) {
                tar.bytes(&config_path, &image.config_bytes)?;
            }
            let manifest_path = format!("blobs/sha256/{}", image.manifest_digest.hex());
            if tar.is_new(&manifest_path) {
                let bytes = store
                    .blobs()
                    .read_sized(&image.manifest_digest, image.manifest_descriptor.size())?;
                tar.bytes(&manifest_path, &bytes)?;
            }
        }
        let listed = match &selection.index {
            Some((stored, _)) => {
                write_attestations(store, stored, tar)?;
                let path = format!("blobs/sha256/{}", stored.digest.hex());
                if tar.is_new(&path) {
                    let bytes = store
                        .blobs()
                        .read_sized(&stored.digest, stored.descriptor.size())?;
                    tar.bytes(&path, &bytes)?;
                }
                &stored.descriptor
            }
            None => &selection.image.manifest_descriptor,
        };
        index.extend(index_descriptors(listed, &selection.tags));
        written.push(listed.clone());
    }
    tar.bytes("index.json", &index_json(index)?)?;
    Ok(written)
}

/// The attestation manifests of a multi-platform image, with their config and in-toto
/// statements, as they are (they are no images: `load` keeps them for the index).
fn write_attestations<W: Write>(
    store: &Store,
    stored: &StoredIndex,
    tar: &mut TarOut<W>,
) -> Result<(), ArchiveError> {
    for child in stored
        .manifests
        .iter()
        .filter(|m| m.present && crate::store::is_attestation(&m.descriptor))
    {
        let manifest = store.manifest(&child.digest, Some(child.descriptor.size()))?;
        for listed in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let digest =
                Digest::parse(listed.digest().as_ref()).map_err(|e| ArchiveError::Document {
                    what: "attestation manifest",
                    name: child.digest.to_string(),
                    reason: e.into(),
                })?;
            let path = format!("blobs/sha256/{}", digest.hex());
            if tar.is_new(&path) {
                let reader = store.blobs().reader(&digest, Some(listed.size()))?;
                tar.file(&path, listed.size(), reader)?;
            }
        }
        let path = format!("blobs/sha256/{}", child.digest.hex());
        if tar.is_new(&path) {
            let bytes = store
                .blobs()
                .read_sized(&child.digest, child.descriptor.size())?;
            tar.bytes(&path, &bytes)?;
        }
    }
    Ok(())
}

/// The archive being written: entries with fixed metadata, each path once.
struct TarOut<W: Write> {
    builder: tar::Builder<W>,
    paths: HashSet<String>,
}

impl<W: Write> TarOut<W> {
    fn new(out: W) -> TarOut<W> {
        TarOut {
            builder: tar::Builder::new(out),
            paths: HashSet::new(),
        }
    }

    /// Whether `path` was not written yet.
    fn is_new(&self, path: &str) -> bool {
        !self.paths.contains(path)
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(size);
        header
    }

    fn dir(&mut self, path: &str) -> Result<(), ArchiveError> {
        self.paths.insert(path.to_string());
        let mut header = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.builder
            .append_data(&mut header, path, io::empty())
            .map_err(output_error)
    }

    fn file(&mut self, path: &str, size: u64, data: impl Read) -> Result<(), ArchiveError> {
        self.paths.insert(path.to_string());
        let mut header = Self::header(tar::EntryType::Regular, 0o644, size);
        self.builder
            .append_data(&mut header, path, data)
            .map_err(output_error)
    }

    fn bytes(&mut self, path: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.file(path, bytes.len() as u64, bytes)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<(), ArchiveError> {
        self.paths.insert(path.to_string());
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut header, path, target)
            .map_err(output_error)
    }

    fn finish(self) -> Result<(), ArchiveError> {
        let mut out = self.builder.into_inner().map_err(output_error)?;
        out.flush().map_err(output_error)
    }
}

/// An error from appending to the archive: a blob that failed verification while it was read,
/// or the output failing.
fn output_error(err: io::Error) -> ArchiveError {
    match err.downcast::<BlobError>() {
        Ok(blob) => ArchiveError::Blob(blob),
        Err(source) => ArchiveError::Write { source },
    }
}
