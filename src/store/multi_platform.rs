//! Multi-platform images: an image index (OCI index or Docker manifest list) listed in
//! `index.json` like an image, whose manifests each carry their platform. A tag names the index;
//! what runs, is inspected or is built FROM is one platform's image in it ([`Store::resolve`]
//! picks the host's, [`Store::resolve_platform`] the one asked for). Not every manifest an index
//! lists has to be here: a pull fetches only the platforms it is asked for (as containerd's
//! store keeps them), and an absent one is simply not offered.

use super::annotated::{Annotated, SortedDescriptor, annotate, with_annotations};
use super::index::{Index, is_index, is_manifest, without_names};
use super::{ImageName, Store, StoreError, StoredImage, descriptor_digest};
use crate::error::Reason;
use crate::oci::{Digest, Platform};
use oci_spec::image::{Descriptor, ImageIndex, MediaType};

/// One manifest an index lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexManifest {
    pub descriptor: Descriptor,
    pub digest: Digest,
    /// The platform the index gives it (attestations say `unknown/unknown`).
    pub platform: Option<Platform>,
    /// Whether its manifest is in the store.
    pub present: bool,
}

/// A multi-platform image read from the store.
#[derive(Debug, Clone)]
pub struct StoredIndex {
    /// Its tags, sorted; empty when untagged.
    pub names: Vec<ImageName>,
    /// The index's descriptor as `index.json` lists it (without kiln's name annotations).
    pub descriptor: Descriptor,
    pub digest: Digest,
    /// The manifests, in the index's order.
    pub manifests: Vec<IndexManifest>,
    /// When a tag last moved to it (RFC 3339), if kiln recorded it.
    pub tagged_at: Option<String>,
}

impl StoredIndex {
    /// The platforms whose images are here, in the index's order (attestations left out).
    pub fn platforms(&self) -> Vec<Platform> {
        self.manifests
            .iter()
            .filter(|m| m.present && is_manifest(m.descriptor.media_type()))
            .filter_map(|m| m.platform.clone())
            .filter(|p| p.os != "unknown")
            .collect()
    }

    /// The manifest here for `platform` (the platform itself, else the newest older variant it
    /// runs; among equals the first listed).
    pub fn choose(&self, platform: &Platform) -> Option<&IndexManifest> {
        self.manifests
            .iter()
            .enumerate()
            .filter(|(_, m)| m.present && is_manifest(m.descriptor.media_type()))
            .filter_map(|(i, m)| Some(((platform.preference(m.platform.as_ref()?)?, i), m)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, m)| m)
    }

    /// The manifest `kiln images` shows for it: the host's, else the first here.
    pub fn representative(&self) -> Option<&IndexManifest> {
        self.choose(&Platform::host()).or_else(|| {
            self.manifests
                .iter()
                .find(|m| m.present && is_manifest(m.descriptor.media_type()))
        })
    }
}

/// What a name or ID finds: an image, or a multi-platform index.
#[derive(Debug, Clone)]
pub enum StoredEntry {
    Image(Box<StoredImage>),
    Index(Box<StoredIndex>),
}

/// The platform an image config says (`os`, `architecture`, `variant`).
pub fn config_platform(config_bytes: &[u8]) -> Option<Platform> {
    let document: serde_json::Value = serde_json::from_slice(config_bytes).ok()?;
    let field = |key: &str| document.get(key).and_then(|v| v.as_str());
    Some(Platform::new(
        field("os")?,
        field("architecture")?,
        field("variant"),
    ))
}

/// `platform` as an OCI descriptor's platform.
fn oci_platform(platform: &Platform) -> oci_spec::image::Platform {
    let mut oci = oci_spec::image::Platform::default();
    oci.set_os(oci_spec::image::Os::from(platform.os.as_str()));
    oci.set_architecture(oci_spec::image::Arch::from(platform.architecture.as_str()));
    oci.set_variant(platform.variant.clone());
    oci
}

/// An OCI descriptor's platform as kiln's.
fn kiln_platform(platform: &oci_spec::image::Platform) -> Platform {
    Platform::new(
        &platform.os().to_string(),
        &platform.architecture().to_string(),
        platform.variant().as_deref(),
    )
}

impl Store {
    /// Writes an OCI image index of these manifests (stored already), each with its platform,
    /// in this order, as BuildKit's exporter writes a multi-platform result, and lists it
    /// untagged until [`Store::tag`] names it.
    pub fn write_index_of(
        &self,
        manifests: &[(Descriptor, Platform)],
    ) -> Result<StoredIndex, StoreError> {
        self.write_index_annotated(manifests, &Annotated::default())
    }

    /// [`Store::write_index_of`] with OCI annotations: each manifest's descriptor keeps its
    /// own (`manifest-descriptor:`), `annotated.document`'s go in the index (`index:`) and
    /// `annotated.descriptor`'s on the descriptor listing it in `index.json`
    /// (`index-descriptor:`).
    pub fn write_index_annotated(
        &self,
        manifests: &[(Descriptor, Platform)],
        annotated: &Annotated,
    ) -> Result<StoredIndex, StoreError> {
        let entries: Vec<Descriptor> = manifests
            .iter()
            .map(|(descriptor, platform)| {
                let mut entry = Descriptor::new(
                    descriptor.media_type().clone(),
                    descriptor.size(),
                    descriptor.digest().clone(),
                );
                entry.set_annotations(descriptor.annotations().clone());
                entry.set_platform(Some(oci_platform(platform)));
                entry
            })
            .collect();
        // Written by hand so annotations keep one order (see `annotated`); the fields are
        // those oci-spec's `ImageIndex` writes, in its order.
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct IndexDocument<'a> {
            schema_version: u32,
            media_type: String,
            manifests: Vec<SortedDescriptor<'a>>,
        }
        let document = IndexDocument {
            schema_version: 2,
            media_type: MediaType::ImageIndex.to_string(),
            manifests: entries.iter().map(SortedDescriptor).collect(),
        };
        let bytes = serde_json::to_vec(&document).map_err(|err| {
            StoreError::Index(Reason::caused_by("cannot serialise an image index", err))
        })?;
        let bytes = with_annotations(bytes, &annotated.document);
        self.list_index(
            MediaType::ImageIndex.to_string().as_str(),
            &bytes,
            &annotated.descriptor,
        )
    }

    /// Lists an image index made elsewhere (pulled, loaded), keeping its exact bytes so its
    /// digest stays the one it came with, untagged until [`Store::tag`] names it. Its manifests
    /// need not all be here (those that are are read and checked). Hold a [`super::Lease`]
    /// from the first blob until the tag.
    pub fn write_index(&self, media_type: &str, bytes: &[u8]) -> Result<StoredIndex, StoreError> {
        self.list_index(media_type, bytes, &Default::default())
    }

    /// [`Store::write_index`], listed under a descriptor with these annotations.
    fn list_index(
        &self,
        media_type: &str,
        bytes: &[u8],
        descriptor_annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<StoredIndex, StoreError> {
        let _lease = self.lease()?;
        let digest = Digest::of(bytes);
        let media_type = MediaType::from(media_type);
        if !is_index(&media_type) {
            return Err(StoreError::Document {
                what: "image index",
                digest,
                source: format!("{media_type} is not an image index media type").into(),
            });
        }
        let blob = self.blobs.write(bytes)?;
        let descriptor = annotate(blob.descriptor(media_type), descriptor_annotations);
        // Checks every child's digest, and the manifests that are here.
        let children = self.read_index_blob(&digest, descriptor.size())?;
        let index = self.modify_index(|index| {
            index.add_untagged(&descriptor, &digest);
            // Its images, written untagged on their way in, are reached through it now.
            for child in &children {
                index.remove_untagged(&child.digest);
            }
            Ok(index.clone())
        })?;
        self.load_index(&index, &descriptor, &digest)
    }

    /// The index listed under this descriptor.
    pub fn image_index(&self, descriptor: &Descriptor) -> Result<StoredIndex, StoreError> {
        let index = self.index()?;
        let digest = descriptor_digest("image index", &Digest::of(b""), descriptor)?;
        self.load_index(&index, descriptor, &digest)
    }

    /// `platform`'s image in the index listed under this descriptor.
    pub fn image_in_index(
        &self,
        descriptor: &Descriptor,
        platform: &Platform,
    ) -> Result<StoredImage, StoreError> {
        let index = self.index()?;
        let stored = self.image_index(descriptor)?;
        self.platform_image(&index, &stored, &stored.digest.to_string(), platform)
    }

    /// One manifest of `stored` (which must be here) as an image, named as the index is.
    pub fn index_image(
        &self,
        stored: &StoredIndex,
        child: &IndexManifest,
    ) -> Result<StoredImage, StoreError> {
        let index = self.index()?;
        self.child_image(&index, stored, child)
    }

    /// Finds an image or a multi-platform index the way [`Store::resolve`] finds an image.
    pub fn resolve_entry(&self, name_or_id: &str) -> Result<StoredEntry, StoreError> {
        let index = self.index()?;
        let found = self.locate(&index, name_or_id)?;
        if is_index(found.descriptor.media_type()) {
            return Ok(StoredEntry::Index(Box::new(self.load_index(
                &index,
                &found.descriptor,
                &found.digest,
            )?)));
        }
        Ok(StoredEntry::Image(Box::new(self.load(
            &index,
            &found.descriptor,
            &found.digest,
        )?)))
    }

    /// The image a name or ID finds, for `platform` (`kiln run --platform` and the like): of an
    /// index, that platform's image ([`StoreError::NoPlatform`] when it is not here); a
    /// single-platform image only when its config says that platform
    /// ([`StoreError::WrongPlatform`]). Without a platform, an index gives the host's image
    /// and a single-platform image is itself.
    pub fn resolve_platform(
        &self,
        name_or_id: &str,
        platform: Option<&Platform>,
    ) -> Result<StoredImage, StoreError> {
        let index = self.index()?;
        let found = self.locate(&index, name_or_id)?;
        if is_index(found.descriptor.media_type()) {
            let stored = self.load_index(&index, &found.descriptor, &found.digest)?;
            // Without a platform: the host's, else the only one here (what `pull --platform`
            // fetched; docker runs it too).
            let only = match stored.platforms().as_slice() {
                [only] if platform.is_none() && stored.choose(&Platform::host()).is_none() => {
                    Some(only.clone())
                }
                _ => None,
            };
            let wanted = platform.cloned().or(only).unwrap_or_else(Platform::host);
            return self.platform_image(&index, &stored, name_or_id, &wanted);
        }
        let image = self.load(&index, &found.descriptor, &found.digest)?;
        if let Some(wanted) = platform {
            let actual = config_platform(&image.config_bytes);
            if !actual.as_ref().is_some_and(|a| wanted.accepts(a)) {
                return Err(StoreError::WrongPlatform {
                    name: name_or_id.to_string(),
                    wanted: wanted.to_string(),
                    actual: actual.map_or_else(|| "no platform".into(), |a| a.to_string()),
                });
            }
        }
        Ok(image)
    }

    /// The image a build uses for `name` on `platform`: of an index, that platform's image; a
    /// single-platform image as it is, whatever its config says (BuildKit uses such a base
    /// for any platform and only warns).
    pub fn resolve_for_build(
        &self,
        name: &str,
        platform: &Platform,
    ) -> Result<StoredImage, StoreError> {
        let index = self.index()?;
        let found = self.locate(&index, name)?;
        if is_index(found.descriptor.media_type()) {
            let stored = self.load_index(&index, &found.descriptor, &found.digest)?;
            return self.platform_image(&index, &stored, name, platform);
        }
        self.load(&index, &found.descriptor, &found.digest)
    }

    /// `platform`'s image of `stored`, named as the index is.
    fn platform_image(
        &self,
        index: &Index,
        stored: &StoredIndex,
        name: &str,
        platform: &Platform,
    ) -> Result<StoredImage, StoreError> {
        let chosen = stored
            .choose(platform)
            .ok_or_else(|| StoreError::NoPlatform {
                name: name.to_string(),
                platform: platform.to_string(),
                available: stored.platforms().iter().map(ToString::to_string).collect(),
            })?;
        self.child_image(index, stored, chosen)
    }

    /// A manifest of `stored` as an image: its names and tag time are the index's.
    pub(super) fn child_image(
        &self,
        index: &Index,
        stored: &StoredIndex,
        child: &IndexManifest,
    ) -> Result<StoredImage, StoreError> {
        let mut image = self.load(index, &child.descriptor, &child.digest)?;
        image.names = stored.names.clone();
        image.tagged_at.clone_from(&stored.tagged_at);
        image.index = Some(stored.digest.clone());
        Ok(image)
    }

    /// Reads an index blob: its manifests, each with its platform and whether it is here.
    pub(super) fn read_index_blob(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Vec<IndexManifest>, StoreError> {
        let bytes = self.blobs.read_sized(digest, size)?;
        let parsed: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|err| StoreError::Document {
                what: "image index",
                digest: digest.clone(),
                source: err.into(),
            })?;
        if parsed.schema_version() != 2 {
            return Err(StoreError::Document {
                what: "image index",
                digest: digest.clone(),
                source: format!("schemaVersion is {}, expected 2", parsed.schema_version()).into(),
            });
        }
        parsed
            .manifests()
            .iter()
            .map(|child| {
                let child_digest = descriptor_digest("manifest", digest, child)?;
                let present = self.blobs.contains(&child_digest);
                if present && is_manifest(child.media_type()) {
                    // A manifest that is here must be one (and its config and layers listed).
                    self.manifest(&child_digest, Some(child.size()))?;
                }
                Ok(IndexManifest {
                    descriptor: child.clone(),
                    digest: child_digest,
                    platform: child.platform().as_ref().map(kiln_platform),
                    present,
                })
            })
            .collect()
    }

    /// The ID of every image `index` lists, a multi-platform image's each platform's that is
    /// here.
    pub(super) fn image_ids(
        &self,
        index: &Index,
    ) -> Result<std::collections::HashSet<Digest>, StoreError> {
        let mut ids = std::collections::HashSet::new();
        let mut manifests: Vec<(Descriptor, Digest)> = super::manifests(index)
            .into_iter()
            .map(|(d, g)| (d.clone(), g.clone()))
            .collect();
        for (descriptor, digest) in super::indexes(index) {
            for child in self.read_index_blob(digest, descriptor.size())? {
                if child.present && is_manifest(child.descriptor.media_type()) {
                    manifests.push((child.descriptor, child.digest));
                }
            }
        }
        for (descriptor, digest) in manifests {
            let manifest = self.manifest(&digest, Some(descriptor.size()))?;
            ids.insert(descriptor_digest("config", &digest, manifest.config())?);
        }
        Ok(ids)
    }

    /// Reads an index from its `index.json` entry.
    pub(super) fn load_index(
        &self,
        index: &Index,
        descriptor: &Descriptor,
        digest: &Digest,
    ) -> Result<StoredIndex, StoreError> {
        let manifests = self.read_index_blob(digest, descriptor.size())?;
        let tagged_at = index.tagged_at_of(digest);
        // Without kiln's naming annotations; a build's own (`--annotation
        // manifest-descriptor:`) stay.
        let plain = without_names(descriptor);
        Ok(StoredIndex {
            names: index.names_of(digest),
            descriptor: plain,
            digest: digest.clone(),
            manifests,
            tagged_at,
        })
    }
}
