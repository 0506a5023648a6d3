//! Deleting: `rmi` ([`Store::remove_image`]), `prune` ([`Store::prune`]) and the accounting
//! behind `df` ([`Store::disk_usage`]).
//!
//! Everything deleted is first found unreachable: a blob is kept when any descriptor reachable
//! from `index.json` (through manifests, nested indexes and configs) names it, a snapshot when
//! any reachable config lists its diff ID, the origin of an absent blob when the blob is
//! reachable. Collections hold `gc.lock` exclusively, so no writer
//! holding a [`super::Lease`] loses blobs it has not tagged yet.

use super::index::Index;
use super::{
    By, Collection, ContainerRecord, ImageName, Store, StoreError, StoredImage, StoredIndex,
    descriptor_digest, indexes, is_index, is_manifest, manifests,
};
use crate::oci::Digest;
use crate::store::blob::BlobError;
use crate::sys::atomic::{IoContext as _, Staging, remove_tree, tree_size};
use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use std::collections::HashSet;
use std::fmt;
use std::fs;

/// One thing `rmi` or `prune` did, printed as docker prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// A tag was removed: `Untagged: hello:latest`.
    Untagged(ImageName),
    /// An image was deleted: `Deleted: sha256:<image id>`.
    Deleted(Digest),
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Removal::Untagged(name) => write!(f, "Untagged: {name}"),
            Removal::Deleted(id) => write!(f, "Deleted: {id}"),
        }
    }
}

/// What [`Store::prune`] removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Every image no container uses, not only untagged ones (`prune -a`).
    pub all: bool,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Tags removed and images deleted, in order.
    pub removals: Vec<Removal>,
    /// Blobs deleted because nothing referenced them any more.
    pub blobs: usize,
    /// Layer snapshots deleted because no image uses their layer any more.
    pub snapshots: usize,
    /// Staging entries of dead writers deleted.
    pub staging: usize,
    /// Bytes freed (apparent sizes).
    pub reclaimed: u64,
}

/// One line of `df`: how many, how many in use, their size and what pruning could free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub total: usize,
    pub active: usize,
    pub size: u64,
    pub reclaimable: u64,
}

/// What [`Store::disk_usage`] reports, like `docker system df`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Images (active: used by a container); size: every blob in the store.
    pub images: Usage,
    /// Container directories (active: running).
    pub containers: Usage,
    /// Unpacked layers (active: used by an image a container uses).
    pub snapshots: Usage,
    /// `RUN --mount=type=cache` directories (active: held by a build now).
    pub cache_mounts: Usage,
}

/// The blobs and diff IDs reachable from some roots.
#[derive(Debug, Default)]
struct Reachable {
    blobs: HashSet<Digest>,
    diff_ids: HashSet<Digest>,
}

impl Store {
    /// `docker rmi`: removes the tag when `name_or_id` is a tag, and deletes the image (its
    /// manifest, config, and the layer blobs and snapshots no other image uses) when its last
    /// tag goes or when it is named by ID or digest. Refuses, unless `force`, to delete by ID an
    /// image with several tags, or to delete (or remove the last tag of) an image a stopped
    /// container uses; refuses even with `force` when a running container uses it. With
    /// `force`, an image a container uses loses its tags but its content stays (untagged) until
    /// the container is gone.
    pub fn remove_image(&self, name_or_id: &str, force: bool) -> Result<Vec<Removal>, StoreError> {
        let _gc = self.lock("gc.lock", true)?;
        let _index_lock = self.lock("index.lock", true)?;
        let mut index = self.index()?;
        let found = self.locate(&index, name_or_id)?;
        // A multi-platform image goes as one: its index, and its images no other name keeps.
        let image = if is_index(found.descriptor.media_type()) {
            let stored = self.load_index(&index, &found.descriptor, &found.digest)?;
            Removable::of_index(self, &stored)?
        } else {
            Removable::of_image(self.load(&index, &found.descriptor, &found.digest)?)
        };
        let users: Vec<ContainerRecord> = self
            .containers()?
            .into_iter()
            .filter(|c| image.ids.contains(&c.image))
            .collect();
        let short = image.id.short();
        let mut removals = Vec::new();
        match found.by {
            By::Name(name) => {
                if let Some(user) = users.first().filter(|_| !force && image.names.len() == 1) {
                    return Err(StoreError::Conflict(format!(
                        "unable to remove repository reference {:?} (must force) - container {} \
                         is using its referenced image {short}",
                        name_or_id,
                        short_id(&user.id)
                    )));
                }
                index.untag(&name);
                removals.push(Removal::Untagged(name));
                if image.names.len() > 1 {
                    index.save(&self.index_path(), self.staging())?;
                    return Ok(removals);
                }
            }
            By::Id => {
                if image.names.len() > 1 && !force {
                    return Err(StoreError::Conflict(format!(
                        "unable to delete {short} (must be forced) - image is referenced in \
                         multiple repositories"
                    )));
                }
                if let Some(user) = users.iter().find(|c| c.is_running()) {
                    return Err(StoreError::Conflict(format!(
                        "unable to delete {short} (cannot be forced) - image is being used by \
                         running container {}",
                        short_id(&user.id)
                    )));
                }
                if let Some(user) = users.first().filter(|_| !force) {
                    return Err(StoreError::Conflict(format!(
                        "unable to delete {short} (must be forced) - image is being used by \
                         stopped container {}",
                        short_id(&user.id)
                    )));
                }
                for name in &image.names {
                    index.untag(name);
                    removals.push(Removal::Untagged(name.clone()));
                }
            }
        }
        if users.is_empty() {
            index.remove_digest(&image.digest);
            removals.push(Removal::Deleted(image.id.clone()));
        }
        index.save(&self.index_path(), self.staging())?;
        if users.is_empty() {
            self.collect_image(&index, &image)?;
        }
        Ok(removals)
    }

    /// Deletes what of `image` is no longer reachable from `index`.
    fn collect_image(&self, index: &Index, image: &Removable) -> Result<u64, StoreError> {
        let reachable = self.reachable(index_roots(index))?;
        let mut freed = 0;
        for digest in &image.blobs {
            if !reachable.blobs.contains(digest) {
                freed += self.blobs.size(digest).unwrap_or(0);
                self.blobs.remove(digest)?;
                self.remove_origin(digest)?;
            }
        }
        for diff_id in &image.diff_ids {
            if !reachable.diff_ids.contains(diff_id) {
                let dir = self.snapshot_dir(diff_id);
                freed += tree_size(&dir);
                remove_tree(&dir)?;
                // The layer's compressed variants go with it.
                for digest in self.variant_blobs(diff_id) {
                    if !reachable.blobs.contains(&digest) {
                        freed += self.blobs.size(&digest).unwrap_or(0);
                        self.blobs.remove(&digest)?;
                    }
                }
                self.remove_variants(diff_id)?;
            }
        }
        Ok(freed)
    }

    /// `docker image prune` (and, for blobs, snapshots and staging, `docker builder prune`):
    /// deletes untagged images (with `all`, every image) that no container uses, then every
    /// blob and snapshot nothing reachable uses, then staging entries of dead writers.
    pub fn prune(&self, options: PruneOptions) -> Result<PruneReport, StoreError> {
        self.prune_held(&self.collection()?, options)
    }

    /// [`Store::prune`] under a [`Collection`] the caller holds (to prune other things under
    /// the same hold).
    pub fn prune_held(
        &self,
        held: &Collection,
        options: PruneOptions,
    ) -> Result<PruneReport, StoreError> {
        if held.root() != self.root {
            return Err(StoreError::Conflict(format!(
                "the collection held is of the store {}, not {}",
                held.root().display(),
                self.root.display()
            )));
        }
        let _index_lock = self.lock("index.lock", true)?;
        let mut index = self.index()?;
        let in_use: HashSet<Digest> = self.containers()?.into_iter().map(|c| c.image).collect();
        let mut report = PruneReport::default();
        let mut doomed = Vec::new();
        for (descriptor, digest) in manifests(&index) {
            doomed.push(Removable::of_image(self.load(&index, descriptor, digest)?));
        }
        for (descriptor, digest) in indexes(&index) {
            let stored = self.load_index(&index, descriptor, digest)?;
            doomed.push(Removable::of_index(self, &stored)?);
        }
        doomed.retain(|image| {
            (options.all || image.names.is_empty())
                && !image.ids.iter().any(|id| in_use.contains(id))
        });
        for image in &doomed {
            for name in &image.names {
                index.untag(name);
                report.removals.push(Removal::Untagged(name.clone()));
            }
            index.remove_digest(&image.digest);
            report.removals.push(Removal::Deleted(image.id.clone()));
        }
        index.save(&self.index_path(), self.staging())?;

        let reachable = self.reachable(index_roots(&index))?;
        for blob in self.blobs.list()? {
            if !reachable.blobs.contains(&blob.digest) {
                self.blobs.remove(&blob.digest)?;
                report.blobs += 1;
                report.reclaimed += blob.size;
            }
        }
        // An origin only matters while an image names its blob and the blob is absent.
        for digest in self.origins()? {
            if !reachable.blobs.contains(&digest) || self.blobs.contains(&digest) {
                self.remove_origin(&digest)?;
            }
        }
        for (diff_id, dir) in self.snapshots()? {
            if !reachable.diff_ids.contains(&diff_id) {
                report.reclaimed += tree_size(&dir);
                remove_tree(&dir)?;
                report.snapshots += 1;
            }
        }
        // Variant records of layers no image has (their blobs went with the unreachable ones).
        for diff_id in self.variant_diff_ids()? {
            if !reachable.diff_ids.contains(&diff_id) {
                self.remove_variants(&diff_id)?;
            }
        }
        let stale = self.staging().remove_stale(Staging::STALE_AGE)?;
        report.staging = stale.entries;
        report.reclaimed += stale.bytes;
        Ok(report)
    }

    /// `docker system df`: counts and sizes of images, containers and layer snapshots.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let index = self.index()?;
        let containers = self.containers()?;
        let in_use: HashSet<&Digest> = containers.iter().map(|c| &c.image).collect();
        let mut active_roots = Vec::new();
        let mut usage = DiskUsage::default();
        for (descriptor, digest) in manifests(&index) {
            usage.images.total += 1;
            let manifest = self.manifest(digest, Some(descriptor.size()))?;
            let id = descriptor_digest("config", digest, manifest.config())?;
            if in_use.contains(&id) {
                usage.images.active += 1;
                active_roots.push((descriptor.clone(), digest.clone()));
            }
        }
        for (descriptor, digest) in indexes(&index) {
            usage.images.total += 1;
            let stored = self.load_index(&index, descriptor, digest)?;
            let image = Removable::of_index(self, &stored)?;
            if image.ids.iter().any(|id| in_use.contains(id)) {
                usage.images.active += 1;
                active_roots.push((descriptor.clone(), digest.clone()));
            }
        }
        let active = self.reachable(active_roots.iter().map(|(d, g)| (d, g)))?;
        for blob in self.blobs.list()? {
            usage.images.size += blob.size;
            if !active.blobs.contains(&blob.digest) {
                usage.images.reclaimable += blob.size;
            }
        }
        for container in &containers {
            let size = tree_size(&self.container_dir(&container.id)?);
            usage.containers.total += 1;
            usage.containers.size += size;
            if container.is_running() {
                usage.containers.active += 1;
            } else {
                usage.containers.reclaimable += size;
            }
        }
        for cache in self.cache_mounts()? {
            usage.cache_mounts.total += 1;
            usage.cache_mounts.size += cache.size;
            if cache.in_use {
                usage.cache_mounts.active += 1;
            } else {
                usage.cache_mounts.reclaimable += cache.size;
            }
        }
        for (diff_id, dir) in self.snapshots()? {
            let size = tree_size(&dir);
            usage.snapshots.total += 1;
            usage.snapshots.size += size;
            if active.diff_ids.contains(&diff_id) {
                usage.snapshots.active += 1;
            } else {
                usage.snapshots.reclaimable += size;
            }
        }
        Ok(usage)
    }

    /// Every snapshot directory with its diff ID (entries not named by a digest are skipped).
    fn snapshots(&self) -> Result<Vec<(Digest, std::path::PathBuf)>, StoreError> {
        let dir = self.root.join("snapshots");
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).fs("read directory", &dir)? {
            let entry = entry.fs("read directory", &dir)?;
            if let Some(diff_id) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                found.push((diff_id, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Walks manifests, nested indexes and configs from `roots`. A missing blob ends its branch
    /// (there is nothing of it to keep); a corrupt one stops the walk with an error, so nothing
    /// is deleted on the strength of a document that could not be read.
    fn reachable<'a>(
        &self,
        roots: impl Iterator<Item = (&'a Descriptor, &'a Digest)>,
    ) -> Result<Reachable, StoreError> {
        let mut reachable = Reachable::default();
        let mut stack: Vec<(Descriptor, Digest)> =
            roots.map(|(d, g)| (d.clone(), g.clone())).collect();
        while let Some((descriptor, digest)) = stack.pop() {
            if !reachable.blobs.insert(digest.clone()) {
                continue;
            }
            let media_type = descriptor.media_type();
            if is_manifest(media_type) {
                let manifest = match self.manifest(&digest, Some(descriptor.size())) {
                    Err(StoreError::Blob(BlobError::NotFound(_))) => continue,
                    other => other?,
                };
                let config = descriptor_digest("config", &digest, manifest.config())?;
                reachable.blobs.insert(config.clone());
                // An attestation manifest's config is the empty `{}` of an OCI artifact: no
                // image config, no diff IDs.
                let image_config = matches!(manifest.config().media_type(), MediaType::ImageConfig)
                    || manifest.config().media_type().to_string()
                        == "application/vnd.docker.container.image.v1+json";
                match self.config(&config, Some(manifest.config().size())) {
                    Err(_) if !image_config => {}
                    Ok(config) => {
                        for diff_id in config.rootfs().diff_ids() {
                            let diff_id =
                                Digest::parse(diff_id).map_err(|err| StoreError::Document {
                                    what: "image config",
                                    digest: digest.clone(),
                                    source: err.into(),
                                })?;
                            reachable.diff_ids.insert(diff_id);
                        }
                    }
                    Err(StoreError::Blob(BlobError::NotFound(_))) => {}
                    Err(err) => return Err(err),
                }
                for layer in manifest.layers() {
                    reachable
                        .blobs
                        .insert(descriptor_digest("layer", &digest, layer)?);
                }
            } else if is_index(media_type) {
                let bytes = match self.blobs.read_sized(&digest, descriptor.size()) {
                    Err(BlobError::NotFound(_)) => continue,
                    other => other?,
                };
                let nested: ImageIndex =
                    serde_json::from_slice(&bytes).map_err(|err| StoreError::Document {
                        what: "image index",
                        digest: digest.clone(),
                        source: err.into(),
                    })?;
                for child in nested.manifests() {
                    let child_digest = descriptor_digest("manifest", &digest, child)?;
                    stack.push((child.clone(), child_digest));
                }
            }
        }
        // A layer's kept variants live as long as the layer: an export reuses them.
        let variants: Vec<Digest> = reachable
            .diff_ids
            .iter()
            .flat_map(|diff_id| self.variant_blobs(diff_id))
            .collect();
        reachable.blobs.extend(variants);
        Ok(reachable)
    }
}

/// An image or multi-platform index as `rmi` and `prune` delete it.
struct Removable {
    names: Vec<ImageName>,
    /// What `Deleted:` names: the image ID, or the index's digest.
    id: Digest,
    /// Its `index.json` entry's digest.
    digest: Digest,
    /// The image IDs containers may run (each platform's, for an index).
    ids: Vec<Digest>,
    /// Its blobs (index, manifests, configs, layers), deleted when nothing else reaches them.
    blobs: Vec<Digest>,
    diff_ids: Vec<Digest>,
}

impl Removable {
    fn of_image(image: StoredImage) -> Removable {
        let mut blobs = vec![image.manifest_digest.clone(), image.id.clone()];
        blobs.extend(image.layers.iter().map(|l| l.digest.clone()));
        Removable {
            diff_ids: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
            ids: vec![image.id.clone()],
            id: image.id,
            digest: image.manifest_digest,
            names: image.names,
            blobs,
        }
    }

    fn of_index(store: &Store, stored: &StoredIndex) -> Result<Removable, StoreError> {
        let mut removable = Removable {
            names: stored.names.clone(),
            id: stored.digest.clone(),
            digest: stored.digest.clone(),
            ids: Vec::new(),
            blobs: vec![stored.digest.clone()],
            diff_ids: Vec::new(),
        };
        for child in stored.manifests.iter().filter(|m| m.present) {
            removable.blobs.push(child.digest.clone());
            if !is_manifest(child.descriptor.media_type()) {
                continue;
            }
            let manifest = store.manifest(&child.digest, Some(child.descriptor.size()))?;
            let id = descriptor_digest("config", &child.digest, manifest.config())?;
            removable.blobs.push(id.clone());
            if let Ok(config) = store.config(&id, Some(manifest.config().size())) {
                for diff_id in config.rootfs().diff_ids() {
                    if let Ok(diff_id) = Digest::parse(diff_id) {
                        removable.diff_ids.push(diff_id);
                    }
                }
            }
            for layer in manifest.layers() {
                removable
                    .blobs
                    .push(descriptor_digest("layer", &child.digest, layer)?);
            }
            removable.ids.push(id);
        }
        Ok(removable)
    }
}

/// Every descriptor `index.json` lists.
fn index_roots(index: &Index) -> impl Iterator<Item = (&Descriptor, &Digest)> {
    index.entries().iter().map(|e| (&e.descriptor, &e.digest))
}

/// docker's 12-character short form of a container ID.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
