//! Whole images in and out: [`pull`] from a registry into the store, [`push`] from the store to
//! a registry, with blobs moving in parallel (up to [`super::ClientOptions::max_concurrent`]).

use super::RegistryError;
use super::client::{BlobSource, Client, Repository};
use super::manifest::{self, Descriptor, Manifest};
use crate::error::{Cause, Reason};
use crate::oci::Digest;
use crate::oci::Platform;
use crate::oci::reference::Reference;
use crate::store::{BlobOrigin, FetchOrigins, Store, StoredEntry, StoredImage};
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

/// Pushes the image `image` (a name or ID in the store) to `reference` (`latest` when it names
/// no tag): its layers and config (skipping those the registry has; mounting those another
/// repository of the same registry has, when the image's own names say where it came from),
/// then its manifest, byte for byte, so the registry's digests are the store's. Returns the
/// manifest digest.
///
/// A layer absent from the store (an image built from a shared cache) is mounted from its origin
/// when that is a repository of the same registry, and fetched through `origins` otherwise.
///
/// A multi-platform image is pushed whole: each platform's image (its manifest by digest),
/// then the index, byte for byte, under the tag; an index some of whose platforms are not in
/// the store (pulled for one platform) is refused, naming them, rather than pushed broken.
pub async fn push(
    client: &Client,
    store: &Store,
    image: &str,
    reference: &Reference,
    origins: &Arc<dyn FetchOrigins>,
    progress: &dyn TransferProgress,
) -> Result<Digest, RegistryError> {
    let reference = reference.clone().with_default_tag();
    let index = match store.resolve_entry(image)? {
        StoredEntry::Image(image) => {
            return push_image(client, store, &image, &reference, true, origins, progress).await;
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
    for child in &index.manifests {
        if crate::store::is_attestation(&child.descriptor) {
            push_attestations(client, store, &repo, child, progress).await?;
            continue;
        }
        if crate::store::is_manifest(child.descriptor.media_type()) {
            let image = store.index_image(&index, child)?;
            push_image(client, store, &image, &reference, false, origins, progress).await?;
            continue;
        }
        // Anything else the index lists (an attestation manifest, a nested index) goes as it
        // is: its bytes, by digest (its own blobs are not kiln's to know).
        let bytes = store
            .blobs()
            .read_sized(&child.digest, child.descriptor.size())
            .map_err(|source| RegistryError::Blob {
                registry: repo.registry.clone(),
                digest: child.digest.clone(),
                source,
            })?;
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
        .map_err(|source| RegistryError::Blob {
            registry: repo.registry.clone(),
            digest: index.digest.clone(),
            source,
        })?;
    let target = match (reference.tag(), reference.digest()) {
        (Some(tag), None) => tag.to_string(),
        _ => index.digest.to_string(),
    };
    client
        .put_manifest(
            &repo,
            &target,
            index.descriptor.media_type().as_ref(),
            &bytes,
        )
        .await
}

/// Pushes an attestation manifest of an index: its config (an OCI artifact's empty `{}`, or an
/// image config of platform `unknown/unknown`) and its in-toto statements as they are, then the
/// manifest by its digest.
async fn push_attestations(
    client: &Client,
    store: &Store,
    repo: &Repository,
    child: &crate::store::IndexManifest,
    progress: &dyn TransferProgress,
) -> Result<(), RegistryError> {
    let manifest = store.manifest(&child.digest, Some(child.descriptor.size()))?;
    for listed in std::iter::once(manifest.config()).chain(manifest.layers()) {
        let digest =
            Digest::parse(listed.digest().as_ref()).map_err(|err| RegistryError::Document {
                registry: repo.registry.clone(),
                what: format!("attestation manifest {}", child.digest),
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
        .read_sized(&child.digest, child.descriptor.size())
        .map_err(|source| RegistryError::Blob {
            registry: repo.registry.clone(),
            digest: child.digest.clone(),
            source,
        })?;
    client
        .put_manifest(
            repo,
            &child.digest.to_string(),
            child.descriptor.media_type().as_ref(),
            &bytes,
        )
        .await?;
    Ok(())
}

/// Pushes one image: its blobs, then its manifest under the tag (`tagged`) or by its digest
/// (an image of an index, which the index names).
async fn push_image(
    client: &Client,
    store: &Store,
    image: &StoredImage,
    reference: &Reference,
    tagged: bool,
    origins: &Arc<dyn FetchOrigins>,
    progress: &dyn TransferProgress,
) -> Result<Digest, RegistryError> {
    let repo = Repository::of(reference);
    let mount_from = image.names.iter().find_map(|name| {
        let (registry, path) = name.repository().split_once('/')?;
        (registry == repo.registry && path != repo.path).then(|| path.to_string())
    });
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    for (digest, size) in image
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .chain(std::iter::once((
            image.id.clone(),
            image.manifest.config().size(),
        )))
    {
        if !blobs.iter().any(|(d, _)| *d == digest) {
            blobs.push((digest, size));
        }
    }
    let repo_ref = &repo;
    let mount_from = mount_from.as_deref();
    let image_ref = image;
    let push_one = |(digest, size): (Digest, u64)| async move {
        progress.blob(&digest, BlobEvent::Started { size });
        let report = |bytes| progress.blob(&digest, BlobEvent::Progress { bytes });
        // A layer of an image built from a shared cache may be absent from the store. When the
        // cache is a repository of the same registry, the registry mounts it from there and
        // nothing is downloaded; otherwise (or when the registry declines the mount) it is
        // fetched from its origin first.
        let absent = !store.blobs().contains(&digest);
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
    // One blob first, alone: it learns how the registry authenticates (and fetches the one
    // token the push needs), so the parallel rest do not each ask for one.
    let mut blobs = blobs.into_iter();
    if let Some(first) = blobs.next() {
        push_one(first).await?;
    }
    stream::iter(blobs)
        .map(push_one)
        .buffer_unordered(client.options().max_concurrent.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let bytes = store
        .blobs()
        .read_sized(&image.manifest_digest, image.manifest_descriptor.size())
        .map_err(|source| RegistryError::Blob {
            registry: repo.registry.clone(),
            digest: image.manifest_digest.clone(),
            source,
        })?;
    let media_type = image.manifest_descriptor.media_type().to_string();
    let target = match (reference.tag(), reference.digest()) {
        (Some(tag), None) if tagged => tag.to_string(),
        _ => image.manifest_digest.to_string(),
    };
    client
        .put_manifest(&repo, &target, &media_type, &bytes)
        .await
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
