//! `index.json`: the layout's list of images. One descriptor per tag, annotated with the
//! familiar name (`org.opencontainers.image.ref.name`, what skopeo and umoci look up) and the
//! normalised name (`io.containerd.image.name`, what containerd and `docker load` read); an image
//! without tags keeps one descriptor without names, so its blobs stay reachable.
//!
//! Readers load the file as it is (it is only ever replaced by an atomic rename); writers
//! read-modify-write it under the store's index lock.

use super::name::ImageName;
use super::{StoreError, timestamp};
use crate::error::Reason;
use crate::oci::Digest;
use crate::oci::media_type::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST};
use crate::oci::reference::Reference;
use crate::store::blob::MAX_DOCUMENT_SIZE;
use crate::sys::{Staging, atomic_write_in};
use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

/// The layout spec's annotation for a tag's name.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for the full image name.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// When the tag was last set (RFC 3339); docker shows it as `Metadata.LastTagTime`.
pub const TAGGED_AT: &str = "dev.kiln.image.tagged";

/// Whether a descriptor points at a single-platform image manifest.
pub fn is_manifest(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageManifest => true,
        MediaType::Other(other) => other == DOCKER_MANIFEST,
        _ => false,
    }
}

/// Whether a descriptor points at an index (a multi-platform image).
pub fn is_index(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageIndex => true,
        MediaType::Other(other) => other == DOCKER_MANIFEST_LIST,
        _ => false,
    }
}

/// One descriptor of `index.json`, with its digest parsed and its name read.
#[derive(Debug, Clone)]
pub struct Entry {
    pub descriptor: Descriptor,
    pub digest: Digest,
    /// `None` for an untagged image (or a name kiln cannot parse, which it leaves alone).
    pub name: Option<ImageName>,
}

impl Entry {
    fn new(descriptor: Descriptor, position: usize) -> Result<Entry, StoreError> {
        let digest = Digest::parse(descriptor.digest().as_ref()).map_err(|source| {
            StoreError::Index(Reason::caused_by(
                format!("entry {position} has an unusable digest"),
                source,
            ))
        })?;
        let name = entry_name(&descriptor);
        Ok(Entry {
            descriptor,
            digest,
            name,
        })
    }

    /// When this tag was set, if kiln recorded it.
    pub fn tagged_at(&self) -> Option<&str> {
        self.descriptor
            .annotations()
            .as_ref()
            .and_then(|a| a.get(TAGGED_AT))
            .map(String::as_str)
    }
}

/// The name a descriptor carries. The layout's `ref.name` decides; containerd's full name is
/// used when it agrees with it (same name, or `ref.name` is just its tag, as containerd writes)
/// or when there is no `ref.name`. Tools that retag by copying a descriptor (`umoci tag`) keep
/// the old containerd name beside a new `ref.name`, so trusting containerd's name alone would
/// give two entries one name.
pub fn entry_name(descriptor: &Descriptor) -> Option<ImageName> {
    let annotations = descriptor.annotations().as_ref()?;
    let parse = |text: &str| {
        Reference::parse_normalized(text)
            .ok()
            .filter(|r| r.digest().is_none())
            .map(|r| ImageName::from_reference(&r))
    };
    let full = annotations.get(CONTAINERD_NAME).and_then(|n| parse(n));
    let Some(ref_name) = annotations.get(REF_NAME) else {
        return full;
    };
    match full {
        Some(full) if full.tag() == ref_name || parse(ref_name).as_ref() == Some(&full) => {
            Some(full)
        }
        _ => parse(ref_name),
    }
}

/// `index.json` in memory.
#[derive(Debug, Clone)]
pub struct Index {
    entries: Vec<Entry>,
    /// The index's own annotations, kept as found.
    annotations: Option<HashMap<String, String>>,
}

impl Index {
    /// An index with no images.
    pub fn empty() -> Index {
        Index {
            entries: Vec::new(),
            annotations: None,
        }
    }

    /// Reads and checks `path`: at most [`MAX_DOCUMENT_SIZE`] bytes, an image index whose every
    /// digest is a sha256 digest (so no entry can name a path outside `blobs/sha256/`).
    pub fn load(path: &Path) -> Result<Index, StoreError> {
        let file = std::fs::File::open(path).map_err(|err| fs_error("open", path, err))?;
        let mut bytes = Vec::new();
        file.take(MAX_DOCUMENT_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| fs_error("read", path, err))?;
        if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
            return Err(StoreError::Index(Reason::new(format!(
                "{} is larger than {MAX_DOCUMENT_SIZE} bytes",
                path.display()
            ))));
        }
        let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|err| {
            StoreError::Index(Reason::caused_by(
                format!("{} is not an OCI image index", path.display()),
                err,
            ))
        })?;
        if index.schema_version() != 2 {
            return Err(StoreError::Index(Reason::new(format!(
                "{} has schemaVersion {}, expected 2",
                path.display(),
                index.schema_version()
            ))));
        }
        let entries = index
            .manifests()
            .iter()
            .enumerate()
            .map(|(i, d)| Entry::new(d.clone(), i))
            .collect::<Result<_, _>>()?;
        Ok(Index {
            entries,
            annotations: index.annotations().clone(),
        })
    }

    /// Writes the index to `path` atomically (staged in `staging`).
    pub fn save(&self, path: &Path, staging: &Staging) -> Result<(), StoreError> {
        let mut index = ImageIndex::default();
        index.set_schema_version(2);
        index.set_media_type(Some(MediaType::ImageIndex));
        index.set_manifests(self.entries.iter().map(|e| e.descriptor.clone()).collect());
        index.set_annotations(self.annotations.clone());
        // Through a `Value`, whose maps are sorted: oci-spec keeps annotations in a HashMap,
        // whose order would make the same index differ byte for byte from one save to the next.
        let bytes = serde_json::to_value(&index)
            .and_then(|value| serde_json::to_vec(&value))
            .map_err(|err| {
                StoreError::Index(Reason::caused_by("cannot serialise the index", err))
            })?;
        // A change that changes nothing (a fully cached rebuild re-listing and re-tagging the
        // same image) writes nothing: no temp file, no fsync, no rename. The caller holds the
        // index lock, so the file cannot change between this read and a write.
        if std::fs::read(path).is_ok_and(|current| current == bytes) {
            return Ok(());
        }
        Ok(atomic_write_in(staging, path, &bytes)?)
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry tagged `name`.
    pub fn find(&self, name: &ImageName) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name.as_ref() == Some(name))
    }

    /// The names that point at `digest`, sorted.
    pub fn names_of(&self, digest: &Digest) -> Vec<ImageName> {
        let mut names: Vec<_> = self
            .entries
            .iter()
            .filter(|e| &e.digest == digest)
            .filter_map(|e| e.name.clone())
            .collect();
        names.sort();
        names
    }

    /// The latest time a name was given to `digest` (RFC 3339, as recorded), if any.
    pub fn tagged_at_of(&self, digest: &Digest) -> Option<String> {
        self.entries
            .iter()
            .filter(|e| &e.digest == digest)
            .filter_map(|e| e.tagged_at())
            .max_by_key(|t| timestamp::parse_rfc3339(t))
            .map(str::to_string)
    }

    /// Whether any entry points at `digest`.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.entries.iter().any(|e| &e.digest == digest)
    }

    /// Lists `descriptor` as an untagged image unless some entry already points at it.
    pub fn add_untagged(&mut self, descriptor: &Descriptor, digest: &Digest) {
        if !self.contains(digest) {
            self.entries.push(Entry {
                descriptor: without_names(descriptor),
                digest: digest.clone(),
                name: None,
            });
        }
    }

    /// Points `name` at `descriptor` (moving the tag if it pointed elsewhere). Returns the
    /// digest the tag pointed at before, if it moved. An image that loses its last name this way
    /// stays listed untagged (docker's dangling `<none>` image).
    pub fn set_tag(
        &mut self,
        name: &ImageName,
        descriptor: &Descriptor,
        digest: &Digest,
    ) -> Option<Digest> {
        // Tagging an image with the name it already has changes nothing (its tag time stays),
        // so a rebuild that makes the same image leaves the index as it was.
        if self
            .entries
            .iter()
            .any(|e| e.name.as_ref() == Some(name) && &e.digest == digest)
        {
            return None;
        }
        let previous = self.remove_name(name);
        self.entries
            .retain(|e| !(&e.digest == digest && e.name.is_none()));
        let mut tagged = without_names(descriptor);
        let mut annotations = tagged.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME.to_string(), name.familiar());
        annotations.insert(CONTAINERD_NAME.to_string(), name.full());
        annotations.insert(TAGGED_AT.to_string(), timestamp::now_rfc3339());
        tagged.set_annotations(Some(annotations));
        self.entries.push(Entry {
            descriptor: tagged,
            digest: digest.clone(),
            name: Some(name.clone()),
        });
        match previous {
            Some(old) if &old.digest != digest => {
                self.keep_untagged(&old);
                Some(old.digest)
            }
            _ => None,
        }
    }

    /// Removes the tag `name`, returning its entry. The image stays listed untagged when that
    /// was its last name.
    pub fn untag(&mut self, name: &ImageName) -> Option<Entry> {
        let removed = self.remove_name(name)?;
        self.keep_untagged(&removed);
        Some(removed)
    }

    /// Removes the untagged entry of `digest`, if it has one (tags stay).
    pub fn remove_untagged(&mut self, digest: &Digest) {
        self.entries
            .retain(|e| !(&e.digest == digest && e.name.is_none()));
    }

    /// Removes every entry pointing at `digest`.
    pub fn remove_digest(&mut self, digest: &Digest) {
        self.entries.retain(|e| &e.digest != digest);
    }

    fn remove_name(&mut self, name: &ImageName) -> Option<Entry> {
        let position = self
            .entries
            .iter()
            .position(|e| e.name.as_ref() == Some(name))?;
        Some(self.entries.remove(position))
    }

    fn keep_untagged(&mut self, old: &Entry) {
        self.add_untagged(&old.descriptor, &old.digest);
    }
}

/// The descriptor without kiln's name annotations (others, such as a platform, stay).
pub(super) fn without_names(descriptor: &Descriptor) -> Descriptor {
    let mut plain = descriptor.clone();
    let annotations = descriptor.annotations().as_ref().map(|a| {
        a.iter()
            .filter(|(k, _)| ![REF_NAME, CONTAINERD_NAME, TAGGED_AT].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>()
    });
    plain.set_annotations(annotations.filter(|a| !a.is_empty()));
    plain
}

fn fs_error(action: &'static str, path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Fs(crate::sys::FsError::new(action, path, err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::blob::oci_digest;

    fn manifest(content: &[u8]) -> (Descriptor, Digest) {
        let digest = Digest::of(content);
        (
            Descriptor::new(MediaType::ImageManifest, 10, oci_digest(&digest)),
            digest,
        )
    }

    fn name(text: &str) -> ImageName {
        ImageName::parse(text).unwrap()
    }

    #[test]
    fn tags_move_and_leave_the_old_image_untagged() {
        let mut index = Index::empty();
        let (one, one_digest) = manifest(b"one");
        let (two, two_digest) = manifest(b"two");
        index.add_untagged(&one, &one_digest);
        assert_eq!(index.set_tag(&name("hello"), &one, &one_digest), None);
        assert_eq!(
            index.entries().len(),
            1,
            "the untagged entry gave way to the tag"
        );
        assert_eq!(
            index.set_tag(&name("hello:latest"), &two, &two_digest),
            Some(one_digest.clone())
        );
        assert_eq!(index.names_of(&two_digest), [name("hello")]);
        assert!(index.names_of(&one_digest).is_empty());
        assert!(index.contains(&one_digest), "the old image stays, untagged");

        index.set_tag(&name("other"), &two, &two_digest);
        assert_eq!(index.names_of(&two_digest), [name("hello"), name("other")]);
        let removed = index.untag(&name("other")).unwrap();
        assert_eq!(removed.digest, two_digest);
        assert_eq!(index.untag(&name("other")).map(|e| e.digest), None);
        index.untag(&name("hello"));
        assert!(index.contains(&two_digest));
        assert!(index.entries().iter().all(|e| e.name.is_none()));
        index.remove_digest(&two_digest);
        assert!(!index.contains(&two_digest));
    }

    #[test]
    fn annotations_carry_familiar_and_full_names() {
        let mut index = Index::empty();
        let (one, digest) = manifest(b"one");
        index.set_tag(&name("127.0.0.1:5000/a/b:v1"), &one, &digest);
        index.set_tag(&name("hello"), &one, &digest);
        let annotations: Vec<_> = index
            .entries()
            .iter()
            .map(|e| {
                let a = e.descriptor.annotations().clone().unwrap();
                (a[REF_NAME].clone(), a[CONTAINERD_NAME].clone())
            })
            .collect();
        assert_eq!(
            annotations,
            [
                (
                    "127.0.0.1:5000/a/b:v1".to_string(),
                    "127.0.0.1:5000/a/b:v1".to_string()
                ),
                (
                    "hello:latest".to_string(),
                    "docker.io/library/hello:latest".to_string()
                ),
            ]
        );
    }

    #[test]
    fn names_written_by_other_tools_are_understood() {
        let (mut plain, _) = manifest(b"x");
        let mut with = |pairs: &[(&str, &str)]| {
            let map = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            plain.set_annotations(Some(map));
            entry_name(&plain)
        };
        assert_eq!(with(&[(REF_NAME, "foo")]), Some(name("foo:latest")));
        assert_eq!(with(&[(REF_NAME, "v1.0")]), Some(name("v1.0:latest")));
        assert_eq!(
            with(&[
                (REF_NAME, "1.0"),
                (CONTAINERD_NAME, "docker.io/library/x:1.0")
            ]),
            Some(name("x:1.0"))
        );
        assert_eq!(with(&[(REF_NAME, "Not Valid")]), None);
        assert_eq!(with(&[]), None);
    }
}
