//! Blobs the store knows but does not hold: a layer of an image built from a shared cache
//! (`kiln build --cache-from`) stays where the cache keeps it until something needs its bytes.
//!
//! `ROOT/origins/sha256/<hex>` holds a small JSON document saying where the blob `sha256:<hex>`
//! can be fetched from ([`BlobOrigin`]), written atomically. [`Store::write_image_json`] accepts a
//! layer that is absent but has an origin; whoever needs the bytes (unpacking a snapshot, saving
//! or exporting an image) fetches them through a [`FetchOrigins`] (the shared cache's, which
//! knows how to reach each kind of origin), which verifies them. A collection keeps the origins
//! of blobs an image still names and drops the others.

use super::{LayerInfo, Store, StoreError};
use crate::oci::Digest;
use crate::sys::FsError;
use crate::sys::atomic::{IoContext as _, atomic_write_in};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

/// Larger origin files are not read (real ones are under a kilobyte).
const MAX_ORIGIN_SIZE: u64 = 64 << 10;

/// Where an absent blob can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobOrigin {
    /// A repository of an OCI registry: `host[:port]/repository`.
    #[serde(rename = "registry")]
    Registry(String),
    /// An OCI layout directory (a `type=local` cache).
    #[serde(rename = "oci-layout")]
    OciLayout(PathBuf),
}

impl std::fmt::Display for BlobOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobOrigin::Registry(repository) => write!(f, "registry {repository}"),
            BlobOrigin::OciLayout(dir) => write!(f, "directory {}", dir.display()),
        }
    }
}

/// Fetches absent blobs from their recorded origins into a store. Reaching an origin takes the
/// shared cache's transports, which sit above the store and the registry client: the cache
/// implements this (`cache::remote::CacheOrigins`), and code below it that may meet an absent
/// layer (a push of an image built from a shared cache) is handed one instead of importing the
/// cache.
pub trait FetchOrigins: Send + Sync {
    /// Fetches those of `layers` that are absent and have a recorded origin (digest and size
    /// verified; the origin is forgotten once the blob is in) and returns how many it fetched.
    /// It may block.
    fn fetch(
        &self,
        store: &Store,
        layers: &[LayerInfo],
    ) -> Result<usize, Box<dyn std::error::Error + Send + Sync>>;
}

impl Store {
    fn origins_dir(&self) -> PathBuf {
        self.root.join("origins").join("sha256")
    }

    fn origin_path(&self, digest: &Digest) -> PathBuf {
        self.origins_dir().join(digest.hex())
    }

    /// Remembers where the blob `digest` can be fetched from (replacing what was known).
    pub fn record_origin(&self, digest: &Digest, origin: &BlobOrigin) -> Result<(), StoreError> {
        let dir = self.origins_dir();
        crate::sys::atomic::create_private_dir_all(&dir)?;
        let bytes = serde_json::to_vec(origin).map_err(|err| StoreError::Document {
            what: "blob origin",
            digest: digest.clone(),
            source: err.into(),
        })?;
        Ok(atomic_write_in(
            self.staging(),
            &self.origin_path(digest),
            &bytes,
        )?)
    }

    /// Where the absent blob `digest` can be fetched from, if the store knows. An unreadable
    /// or damaged origin file is unknown (the blob then cannot be fetched, which its user
    /// reports).
    pub fn origin(&self, digest: &Digest) -> Option<BlobOrigin> {
        read_origin(&self.origin_path(digest))
    }

    /// Forgets the origin of `digest` (a missing one is fine).
    pub fn remove_origin(&self, digest: &Digest) -> Result<(), StoreError> {
        let path = self.origin_path(digest);
        match fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(FsError::new("remove", &path, err).into())
            }
            _ => Ok(()),
        }
    }

    /// Whether the blob is stored or, absent, has a known origin.
    pub fn has_or_knows(&self, digest: &Digest) -> bool {
        self.blobs.contains(digest) || self.origin(digest).is_some()
    }

    /// The digests that have an origin file, sorted (names that are not digests are skipped).
    pub(super) fn origins(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.origins_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(FsError::new("read directory", &dir, err).into()),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.fs("read directory", &dir)?;
            if let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|name| Digest::from_hex(name).ok())
            {
                found.push(digest);
            }
        }
        found.sort();
        Ok(found)
    }
}

fn read_origin(path: &Path) -> Option<BlobOrigin> {
    let file = fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_ORIGIN_SIZE + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > MAX_ORIGIN_SIZE {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_round_trip_in_their_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = Digest::of(b"layer");
        assert_eq!(store.origin(&digest), None);
        assert!(!store.has_or_knows(&digest));
        let cases = [
            (
                BlobOrigin::Registry("127.0.0.1:5000/cache".into()),
                r#"{"registry":"127.0.0.1:5000/cache"}"#,
            ),
            (
                BlobOrigin::OciLayout("/mnt/cache".into()),
                r#"{"oci-layout":"/mnt/cache"}"#,
            ),
        ];
        for (origin, json) in &cases {
            store.record_origin(&digest, origin).unwrap();
            assert_eq!(store.origin(&digest).as_ref(), Some(origin));
            let path = dir.path().join(format!("origins/sha256/{}", digest.hex()));
            assert_eq!(fs::read_to_string(&path).unwrap(), *json);
        }
        assert!(store.has_or_knows(&digest));
        assert_eq!(store.origins().unwrap(), vec![digest.clone()]);
        fs::write(store.origin_path(&digest), "{\"ftp\":1}").unwrap();
        assert_eq!(store.origin(&digest), None, "a damaged origin is unknown");
        store.remove_origin(&digest).unwrap();
        store.remove_origin(&digest).unwrap();
        assert!(store.origins().unwrap().is_empty());
    }
}
