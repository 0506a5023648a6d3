//! Whole images in and out: [`pull`] from a registry into the store, [`push`] from the store to
//! a registry, with blobs moving in parallel (up to [`super::ClientOptions::max_concurrent`]).

use super::RegistryError;
use super::client::{BlobSource, Client, Repository};
use super::manifest::{self, Descriptor, Manifest};
use crate::error::{Cause, Reason};
use crate::layer::{self, CompressionConfig, ExportFormat};
use crate::oci::Digest;
use crate::oci::Platform;
use crate::oci::reference::Reference;
use crate::store::{
    BlobOrigin, FetchOrigins, LayerFormat, LayerInfo, MediaTypes, Store, StoredEntry, StoredImage,
};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use std::fmt;
use std::sync::Arc;

/// When the builder pulls a `FROM` image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Only when the store does not have it.
    #[default]
    Missing,
    /// Every time (`kiln build --pull`), so a moved tag is seen.
    Always,
}

/// How a blob's transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobStatus {
    /// Pull: the store had it.
    AlreadyExists,
    /// Pull: downloaded and verified.
    Downloaded,
    /// Push: the registry had it.
    Existed,
    /// Push: mounted from another repository of the registry.
    Mounted,
    /// Push: uploaded.
    Pushed,
}

impl fmt::Display for BlobStatus {
    /// docker's words for it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlobStatus::AlreadyExists => "Already exists",
            BlobStatus::Downloaded => "Pull complete",
            BlobStatus::Existed => "Layer already exists",
            BlobStatus::Mounted => "Mounted from another repository",
            BlobStatus::Pushed => "Pushed",
        })
    }
}

/// One step of a blob's transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobEvent {
    /// The transfer of a blob of `size` bytes starts.
    Started { size: u64 },
    /// `bytes` of it have moved so far (may go back to 0 when a download starts over).
    Progress { bytes: u64 },
    /// It is done.
    Finished(BlobStatus),
}

/// Where [`pull`] and [`push`] report each blob's progress (called from the transfer's tasks;
/// events of one blob come in order).
pub trait TransferProgress: Send + Sync {
    fn blob(&self, digest: &Digest, event: BlobEvent);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl TransferProgress for NoProgress {
    fn blob(&self, _: &Digest, _: BlobEvent) {}
}

/// Pulls `reference` (a tag, `latest` when it names none, or a digest) into the store: the
/// manifest (from an index, the one for `platform`), its config and layers (those the store
/// lacks, verified on the way in), then lists the image keeping the manifest's bytes, so its
/// digest is the registry's. A reference with a tag and no digest tags the image with it. Of
/// an index, the index itself is kept too (with only this platform's image; pulling another
/// platform later adds its image), and the tag names the index, as containerd's store does.
pub async fn pull(
    client: &Client,
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    progress: &dyn TransferProgress,
) -> Result<StoredImage, RegistryError> {
    let reference = reference.clone().with_default_tag();
    let repo = Repository::of(&reference);
    let target = match (reference.digest(), reference.tag()) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => tag.to_string(),
        (None, None) => "latest".to_string(),
    };
    let (mut fetched, _) = client.get_manifest(&repo, &target).await?;
    let mut index: Option<Manifest> = None;
    if let Manifest::Index { manifests, .. } = &fetched {
        let chosen = manifest::choose(manifests, platform)
            .ok_or_else(|| RegistryError::NoPlatform {
                reference: reference.to_string(),
                platform: platform.to_string(),
                available: manifest::available(manifests),
            })?
            .clone();
        let (image, _) = client
            .get_manifest(&repo, &chosen.digest.to_string())
            .await?;
        if image.bytes().len() as u64 != chosen.size {
            return Err(RegistryError::Document {
                registry: repo.registry.clone(),
                what: format!("manifest {} of {}", chosen.digest, repo.path),
                reason: format!(
                    "it has {} bytes, but the index says {}",
                    image.bytes().len(),
                    chosen.size
                )
                .into(),
            });
        }
        index = Some(std::mem::replace(&mut fetched, image));
    }
    let Manifest::Image {
        media_type,
        config,
        layers,
        bytes,
    } = fetched
    else {
        return Err(RegistryError::Document {
            registry: repo.registry.clone(),
            what: format!(
                "the manifest {target} of {} chose for {platform}",
                repo.path
            ),
            reason: "it is another index, not an image manifest".into(),
        });
    };
    // From the first blob until the tag, so no prune collects what is not referenced yet.
    let _lease = store.lease()?;
    let mut blobs: Vec<&Descriptor> = Vec::new();
    for descriptor in std::iter::once(&config).chain(&layers) {
        if !blobs.iter().any(|d| d.digest == descriptor.digest) {
            blobs.push(descriptor);
        }
    }
    stream::iter(blobs)
        .map(|descriptor| fetch_one(client, store, &repo, descriptor, progress))
        .buffer_unordered(client.options().max_concurrent.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let image = store.write_manifest(&media_type, &bytes)?;
    if let Some(index) = index {
        fetch_attestations(
            client,
            store,
            &repo,
            &index,
            &image.manifest_digest,
            progress,
        )
        .await?;
        let stored = store.write_index(index.media_type(), index.bytes())?;
        if reference.digest().is_none() {
            store.tag(&reference.to_string(), &stored.descriptor)?;
        }
        return Ok(store.image_in_index(&stored.descriptor, platform)?);
    }
    if reference.digest().is_none() {
        store.tag(&reference.to_string(), &image.manifest_descriptor)?;
        return Ok(store.image(&image.manifest_descriptor)?);
    }
    Ok(image)
}

/// The attestation manifests `index` lists for the image `image` (BuildKit's
/// `vnd.docker.reference.type: attestation-manifest` entries naming it), fetched with their
/// config and statements, so the index keeps them and pushes whole again. They are small
/// documents; a registry that lacks one is an error, as a missing platform image is.
async fn fetch_attestations(
    client: &Client,
    store: &Store,
    repo: &Repository,
    index: &Manifest,
    image: &Digest,
    progress: &dyn TransferProgress,
) -> Result<(), RegistryError> {
    use crate::oci::media_type::{ATTESTATION_MANIFEST, REFERENCE_DIGEST, REFERENCE_TYPE};
    let document: serde_json::Value = serde_json::from_slice(index.bytes()).unwrap_or_default();
    let image = image.to_string();
    let wanted: Vec<String> = document["manifests"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| {
                    e["annotations"][REFERENCE_TYPE] == ATTESTATION_MANIFEST
                        && e["annotations"][REFERENCE_DIGEST] == image.as_str()
                })
                .filter_map(|e| e["digest"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for digest in wanted {
        let (manifest, _) = client.get_manifest(repo, &digest).await?;
        let Manifest::Image { config, layers, .. } = &manifest else {
            continue;
        };
        for descriptor in std::iter::once(config).chain(layers) {
            fetch_one(client, store, repo, descriptor, progress).await?;
        }
        let stored =
            store
                .blobs()
                .write(manifest.bytes())
                .map_err(|source| RegistryError::Blob {
                    registry: repo.registry.clone(),
                    digest: Digest::of(manifest.bytes()),
                    source,
                })?;
        if stored.digest.to_string() != digest {
            return Err(RegistryError::Document {
                registry: repo.registry.clone(),
                what: format!("attestation manifest {digest} of {}", repo.path),
                reason: format!("its bytes have the digest {}", stored.digest).into(),
            });
        }
    }
    Ok(())
}

async fn fetch_one(
    client: &Client,
    store: &Store,
    repo: &Repository,
    descriptor: &Descriptor,
    progress: &dyn TransferProgress,
) -> Result<(), RegistryError> {
    let digest = &descriptor.digest;
    progress.blob(
        digest,
        BlobEvent::Started {
            size: descriptor.size,
        },
    );
    let blobs = store.blobs();
    if blobs.contains(digest) && blobs.size(digest).ok() == Some(descriptor.size) {
        progress.blob(digest, BlobEvent::Finished(BlobStatus::AlreadyExists));
        return Ok(());
    }
    let report = |bytes| progress.blob(digest, BlobEvent::Progress { bytes });
    client
        .fetch_blob(repo, digest, descriptor.size, blobs, &report)
        .await?;
    progress.blob(digest, BlobEvent::Finished(BlobStatus::Downloaded));
    Ok(())
}

/// How a push writes an image: its layers' compression and its media types (the image
/// exporter's `compression=`, `compression-level=`, `force-compression=`, `oci-mediatypes=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushFormat {
    pub compression: CompressionConfig,
    /// The media types of the manifests, config and layers; `None` keeps each image's own.
    pub media_types: Option<MediaTypes>,
    /// The most uncompressed bytes a layer being compressed may hold.
    pub max_bytes: u64,
}

impl Default for PushFormat {
    /// gzip, the media types kept: what `docker push` sends and BuildKit's default compression.
    fn default() -> Self {
        PushFormat {
            compression: CompressionConfig::default(),
            media_types: None,
            max_bytes: DEFAULT_MAX_LAYER_BYTES,
        }
    }
}

/// The uncompressed size a layer compressed for a push may have by default (as an archive's).
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 1 << 40;

impl PushFormat {
    /// The format an exporter's options ask for; `oci_default` is the exporter's default for
    /// `oci-mediatypes` (`None`: keep the image's own).
    pub fn of_export(format: &ExportFormat, oci_default: Option<bool>) -> PushFormat {
        PushFormat {
            compression: format.compression,
            media_types: format.oci_media_types.or(oci_default).map(MediaTypes::oci),
            max_bytes: DEFAULT_MAX_LAYER_BYTES,
        }
    }

    /// Runs `use_format` with this format as the store takes it (its compressor is
    /// [`crate::layer::recompress`] at this level).
    pub fn with_layer_format<T>(&self, use_format: impl FnOnce(&LayerFormat<'_>) -> T) -> T {
        let config = self.compression;
        let max_bytes = self.max_bytes;
        let recompress = move |reader: &mut dyn std::io::Read,
                               writer: &mut dyn std::io::Write|
              -> Result<Digest, Cause> {
            Ok(layer::recompress(reader, &config, writer, max_bytes)?.diff_id)
        };
        use_format(&LayerFormat {
            compression: config.compression,
            force: config.force,
            media_types: self.media_types,
            recompress: &recompress,
        })
    }
}

/// Pushes the image `image` (a name or ID in the store) to `reference` as `docker push` does:
/// [`push_with`] its layers gzip-compressed (each compressed once and kept) and its media types
/// kept.
pub async fn push(
    client: &Client,
    store: &Store,
    image: &str,
    reference: &Reference,
    origins: &Arc<dyn FetchOrigins>,
    progress: &dyn TransferProgress,
) -> Result<Digest, RegistryError> {
    push_with(
        client,
        store,
        image,
        reference,
        &PushFormat::default(),
        origins,
        progress,
    )
    .await
}

/// Pushes the image `image` (a name or ID in the store) to `reference` (`latest` when it names
/// no tag) in `format`: its layers (each in the compression asked: its own blob when it is in
/// it, else a kept variant, else compressed now, while other layers upload, and kept; skipping
/// those the registry has; mounting those another repository of the same registry has, when the
/// image's own names say where it came from) and config, then its manifest. An image whose
/// layers and media types are already as asked goes byte for byte, so the registry's digests
/// are the store's; otherwise the manifest is the store's with the new layers (the image ID,
/// its config's digest, never changes), and when `reference` is a tag of the image in the
/// store, the tag moves to what was pushed ([`Store::retag_exported`]). Returns the pushed
/// manifest's digest.
///
/// A layer absent from the store (an image built from a shared cache) is mounted from its origin
/// when that is a repository of the same registry, and fetched through `origins` otherwise (or
/// when it must be compressed anew).
///
/// A multi-platform image is pushed whole: each platform's image (its manifest by digest),
/// then the index (the store's bytes when no image changed), under the tag; an index some of
/// whose platforms are not in the store (pulled for one platform) is refused, naming them,
/// rather than pushed broken.
pub async fn push_with(
    client: &Client,
    store: &Store,
    image: &str,
    reference: &Reference,
    format: &PushFormat,
    origins: &Arc<dyn FetchOrigins>,
    progress: &dyn TransferProgress,
) -> Result<Digest, RegistryError> {
    push_described(client, store, image, reference, format, origins, progress)
        .await
        .map(|(digest, _)| digest)
}

/// [`push_with`], returning the pushed manifest's (or index's) descriptor too: what the
/// registry holds, for an exporter's response (`containerimage.descriptor`).
pub async fn push_described(
    client: &Client,
    store: &Store,
    image: &str,
    reference: &Reference,
    format: &PushFormat,
    origins: &Arc<dyn FetchOrigins>,
    progress: &dyn TransferProgress,
) -> Result<(Digest, oci_spec::image::Descriptor), RegistryError> {
    let reference = reference.clone().with_default_tag();
    let index = match store.resolve_entry(image)? {
        StoredEntry::Image(image) => {
            let (digest, pushed) = push_image(
                client, store, &image, &reference, true, format, origins, progress,
            )
            .await?;
            retag(store, &reference, &image.manifest_digest, &pushed)?;
            return Ok((digest, pushed));
        }
        StoredEntry::Index(index) => index,
    };
    let repo = Repository::of(&reference);
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
        return Err(RegistryError::Document {
            registry: repo.registry.clone(),
            what: format!("the image index {} of {image}", index.digest),
            reason: format!(
                "the store does not have its images for {} (it was pulled for fewer                  platforms); pull them first, or push one platform's image",
                absent.join(", ")
            )
            .into(),
        });
    }
    let blob_error = |digest: &Digest, source| RegistryError::Blob {
        registry: repo.registry.clone(),
        digest: digest.clone(),
        source,
    };
    let mut children = Vec::new();
    let mut attestations = Vec::new();
    for child in &index.manifests {
        if crate::store::is_attestation(&child.descriptor) {
            // Pushed once the images are: one about an image pushed in another format is
            // rewritten about what was pushed (`Store::index_with`).
            attestations.push(child);
            continue;
        }
        if crate::store::is_manifest(child.descriptor.media_type()) {
            let image = store.index_image(&index, child)?;
            let (_, pushed) = push_image(
                client, store, &image, &reference, false, format, origins, progress,
            )
            .await?;
            children.push((child.digest.clone(), pushed));
            continue;
        }
        // Anything else the index lists (an attestation manifest, a nested index) goes as it
        // is: its bytes, by digest (its own blobs are not kiln's to know).
        let bytes = store
            .blobs()
            .read_sized(&child.digest, child.descriptor.size())
            .map_err(|source| blob_error(&child.digest, source))?;
        client
            .put_manifest(
                &repo,
                &child.digest.to_string(),
                child.descriptor.media_type().as_ref(),
                &bytes,
            )
            .await?;
    }
    let bytes = store
        .blobs()
        .read_sized(&index.digest, index.descriptor.size())
        .map_err(|source| blob_error(&index.digest, source))?;
    let media_types = format
        .media_types
        .unwrap_or_else(|| MediaTypes::of(index.descriptor.media_type().as_ref()));
    let converted = store.index_with(
        &index.digest,
        &bytes,
        index.descriptor.media_type().as_ref(),
        &children,
        media_types,
    )?;
    for child in attestations {
        let listed = converted.attestation(&child.digest, &child.descriptor);
        push_attestations(client, store, &repo, listed, progress).await?;
    }
    let (pushed_digest, mut pushed) = (converted.digest, converted.descriptor);
    // The index's descriptor keeps its annotations (`index-descriptor` ones).
    pushed.set_annotations(index.descriptor.annotations().clone());
    let bytes = store
        .blobs()
        .read_sized(&pushed_digest, pushed.size())
        .map_err(|source| blob_error(&pushed_digest, source))?;
    let target = match (reference.tag(), reference.digest()) {
        (Some(tag), None) => tag.to_string(),
        _ => pushed_digest.to_string(),
    };
    let digest = client
        .put_manifest(&repo, &target, pushed.media_type().as_ref(), &bytes)
        .await?;
    retag(store, &reference, &index.digest, &pushed)?;
    Ok((digest, pushed))
}

/// Pushes an attestation manifest of an index: its config (an OCI artifact's empty `{}`, or an
/// image config of platform `unknown/unknown`) and its in-toto statements as they are, then the
/// manifest by its digest.
async fn push_attestations(
    client: &Client,
    store: &Store,
    repo: &Repository,
    listed: &oci_spec::image::Descriptor,
    progress: &dyn TransferProgress,
) -> Result<(), RegistryError> {
    let digest =
        Digest::parse(listed.digest().as_ref()).map_err(|err| RegistryError::Document {
            registry: repo.registry.clone(),
            what: "an attestation manifest of the index".to_string(),
            reason: err.into(),
        })?;
    let manifest = store.manifest(&digest, Some(listed.size()))?;
    for listed in std::iter::once(manifest.config()).chain(manifest.layers()) {
        let digest =
            Digest::parse(listed.digest().as_ref()).map_err(|err| RegistryError::Document {
                registry: repo.registry.clone(),
                what: format!("attestation manifest {digest}"),
                reason: err.into(),
            })?;
        let size = listed.size();
        progress.blob(&digest, BlobEvent::Started { size });
        let report = |bytes| progress.blob(&digest, BlobEvent::Progress { bytes });
        let source = client
            .push_blob(repo, &digest, size, store.blobs(), None, &report)
            .await?;
        let status = match source {
            BlobSource::Existed => BlobStatus::Existed,
            BlobSource::Mounted => BlobStatus::Mounted,
            BlobSource::Uploaded => BlobStatus::Pushed,
        };
        progress.blob(&digest, BlobEvent::Finished(status));
    }
    let bytes = store
        .blobs()
        .read_sized(&digest, listed.size())
        .map_err(|source| RegistryError::Blob {
            registry: repo.registry.clone(),
            digest: digest.clone(),
            source,
        })?;
    client
        .put_manifest(
            repo,
            &digest.to_string(),
            listed.media_type().as_ref(),
            &bytes,
        )
        .await?;
    Ok(())
}

/// When the image under the pushed tag went in another format, the tag moves to what was
/// pushed ([`Store::retag_exported`]), so the store's digest for the name is the registry's.
fn retag(
    store: &Store,
    reference: &Reference,
    source: &Digest,
    pushed: &oci_spec::image::Descriptor,
) -> Result<(), RegistryError> {
    if reference.tag().is_some() && reference.digest().is_none() {
        store.retag_exported(&reference.to_string(), source, pushed)?;
    }
    Ok(())
}

/// Pushes one image in `format`: its config, its layers (each made in the format while others
/// upload), then its manifest under the tag (`tagged`) or by its digest (an image of an index,
/// which the index names). Returns the pushed manifest's digest and descriptor.
#[allow(clippy::too_many_arguments)]
async fn push_image(
    client: &Client,
    store: &Store,
    image: &StoredImage,
    reference: &Reference,
    tagged: bool,
    format: &PushFormat,
    origins: &Arc<dyn FetchOrigins>,
    progress: &dyn TransferProgress,
) -> Result<(Digest, oci_spec::image::Descriptor), RegistryError> {
    let repo = Repository::of(reference);
    let mount_from = image.names.iter().find_map(|name| {
        let (registry, path) = name.repository().split_once('/')?;
        (registry == repo.registry && path != repo.path).then(|| path.to_string())
    });
    let media_types = format
        .media_types
        .unwrap_or_else(|| MediaTypes::of(image.manifest_descriptor.media_type().as_ref()));
    // From the first variant written until the push ends, so no prune collects one.
    let _lease = store.lease()?;
    let repo_ref = &repo;
    let mount_from = mount_from.as_deref();
    let image_ref = image;
    let push_blob = |digest: Digest, size: u64, own: bool| async move {
        progress.blob(&digest, BlobEvent::Started { size });
        let report = |bytes| progress.blob(&digest, BlobEvent::Progress { bytes });
        // A layer of an image built from a shared cache may be absent from the store. When the
        // cache is a repository of the same registry, the registry mounts it from there and
        // nothing is downloaded; otherwise (or when the registry declines the mount) it is
        // fetched from its origin first. (A layer made anew is always here.)
        let absent = own && !store.blobs().contains(&digest);
        let origin_repo = absent
            .then(|| same_registry_origin(store, &digest, &repo_ref.registry))
            .flatten();
        let mount = origin_repo.as_deref().or(mount_from);
        if absent && origin_repo.is_none() {
            fetch_absent_layer(store, origins, image_ref, &digest).await?;
        }
        let pushed = client
            .push_blob(repo_ref, &digest, size, store.blobs(), mount, &report)
            .await;
        let source = match pushed {
            Err(_) if origin_repo.is_some() && !store.blobs().contains(&digest) => {
                fetch_absent_layer(store, origins, image_ref, &digest).await?;
                client
                    .push_blob(repo_ref, &digest, size, store.blobs(), None, &report)
                    .await?
            }
            other => other?,
        };
        let status = match source {
            BlobSource::Existed => BlobStatus::Existed,
            BlobSource::Mounted => BlobStatus::Mounted,
            BlobSource::Uploaded => BlobStatus::Pushed,
        };
        progress.blob(&digest, BlobEvent::Finished(status));
        Ok::<(), RegistryError>(())
    };
    // The config first, alone: it learns how the registry authenticates (and fetches the one
    // token the push needs), so the parallel rest do not each ask for one.
    push_blob(image.id.clone(), image.manifest.config().size(), true).await?;
    let mut distinct: Vec<&LayerInfo> = Vec::new();
    for layer in &image.layers {
        if !distinct.iter().any(|l| l.digest == layer.digest) {
            distinct.push(layer);
        }
    }
    let push_layer = |layer: &LayerInfo| {
        let layer = layer.clone();
        async move {
            let converted =
                layer_in_format(store, origins, image_ref, &layer, format, media_types).await?;
            let own = converted.digest == layer.digest;
            push_blob(converted.digest.clone(), converted.size, own).await?;
            Ok::<(Digest, LayerInfo), RegistryError>((layer.digest, converted))
        }
    };
    let converted: Vec<(Digest, LayerInfo)> = stream::iter(distinct)
        .map(push_layer)
        .buffered(client.options().max_concurrent.max(1))
        .try_collect()
        .await?;
    let layers: Vec<LayerInfo> = image
        .layers
        .iter()
        .map(|layer| {
            converted
                .iter()
                .find(|(old, _)| *old == layer.digest)
                .map_or_else(|| layer.clone(), |(_, new)| new.clone())
        })
        .collect();
    let pushed = store.manifest_with(image, layers, media_types)?;
    let bytes = store
        .blobs()
        .read_sized(&pushed.manifest_digest, pushed.manifest_descriptor.size())
        .map_err(|source| RegistryError::Blob {
            registry: repo.registry.clone(),
            digest: pushed.manifest_digest.clone(),
            source,
        })?;
    let media_type = pushed.manifest_descriptor.media_type().to_string();
    let target = match (reference.tag(), reference.digest()) {
        (Some(tag), None) if tagged => tag.to_string(),
        _ => pushed.manifest_digest.to_string(),
    };
    let digest = client
        .put_manifest(&repo, &target, &media_type, &bytes)
        .await?;
    Ok((digest, pushed.manifest_descriptor))
}

/// The layer in `format`, made on the blocking pool (compressing is CPU work); an absent layer
/// that must be compressed anew is fetched from its origin first.
async fn layer_in_format(
    store: &Store,
    origins: &Arc<dyn FetchOrigins>,
    image: &StoredImage,
    layer: &LayerInfo,
    format: &PushFormat,
    media_types: MediaTypes,
) -> Result<LayerInfo, RegistryError> {
    let own = crate::layer::Compression::from_media_type(layer.media_type.as_ref());
    let kept = own == Some(format.compression.compression) && !format.compression.force;
    if !kept && !store.blobs().contains(&layer.digest) {
        fetch_absent_layer(store, origins, image, &layer.digest).await?;
    }
    let (owned_store, owned_layer, format) = (store.clone(), layer.clone(), *format);
    tokio::task::spawn_blocking(move || {
        format.with_layer_format(|layer_format| {
            owned_store.layer_as(&owned_layer, layer_format, media_types)
        })
    })
    .await
    .map_err(|err| RegistryError::AbsentLayer {
        digest: layer.digest.clone(),
        reason: Reason::caused_by("the layer's compression did not finish", err).into(),
    })?
    .map_err(RegistryError::from)
}

/// The repository of the same registry that holds the absent blob `digest`, when the store
/// recorded one as its origin.
fn same_registry_origin(store: &Store, digest: &Digest, registry: &str) -> Option<String> {
    match store.origin(digest)? {
        BlobOrigin::Registry(repository) => repository
            .split_once('/')
            .filter(|(host, _)| *host == registry)
            .map(|(_, path)| path.to_string()),
        BlobOrigin::OciLayout(_) => None,
    }
}

/// Fetches the absent layer `digest` of `image` from its recorded origin into the store. The
/// shared cache's transports block, so this runs on the blocking pool.
async fn fetch_absent_layer(
    store: &Store,
    origins: &Arc<dyn FetchOrigins>,
    image: &StoredImage,
    digest: &Digest,
) -> Result<(), RegistryError> {
    let absent = |reason: Cause| RegistryError::AbsentLayer {
        digest: digest.clone(),
        reason,
    };
    let layer = image
        .layers
        .iter()
        .find(|l| l.digest == *digest)
        .cloned()
        .ok_or_else(|| absent("the image does not list it as a layer".into()))?;
    let owned = store.clone();
    let origins = Arc::clone(origins);
    let fetched = tokio::task::spawn_blocking(move || origins.fetch(&owned, &[layer]))
        .await
        .map_err(|err| absent(Reason::caused_by("the fetch did not finish", err).into()))?
        .map_err(|source| RegistryError::FetchAbsent {
            digest: digest.clone(),
            source,
        })?;
    if fetched > 0 || store.blobs().contains(digest) {
        Ok(())
    } else {
        Err(absent(
            "no shared cache is recorded as holding it; build the image again".into(),
        ))
    }
}
