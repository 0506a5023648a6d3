//! `type=local`: a shared cache in an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/`), which may sit on shared storage and which skopeo or umoci can read.
//!
//! The cache manifest is the `index.json` entry whose `org.opencontainers.image.ref.name`
//! annotation is the cache's tag (`kiln-cache` unless `tag=` says otherwise); other entries are
//! left alone. Blobs are written as the store writes its own (temporary file in `tmp/`, fsync,
//! rename, fsync of the directory), and `index.json` is replaced by an atomic rename under a
//! lock (`.kiln-index.lock`, flock(2)), so two builders exporting at once each leave a whole
//! cache: the last write wins, and a reader sees the old manifest or the new one.

use crate::cache::remote::transport::{CacheTransport, TransportError};
use crate::error::Cause;
use crate::oci::Digest;
use crate::store::BlobRef;
use crate::store::blob::{BlobError, BlobStore};
use crate::store::{BlobOrigin, REF_NAME};
use crate::sys::FsError;
use crate::sys::atomic::{IoContext as _, atomic_write_in};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

/// The tag a local cache is written under when none is given.
pub const DEFAULT_TAG: &str = "kiln-cache";

/// The largest `index.json` read.
const MAX_INDEX_SIZE: u64 = 4 << 20;

/// The layout spec's `oci-layout` file.
const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// Why a cache directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LocalCacheError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("cache directory {}", dir.display())]
    Blob {
        dir: PathBuf,
        #[source]
        source: BlobError,
    },
    #[error(
        "blob {digest} in cache directory {} is corrupt or was tampered with: {cause}; \
         export the cache again",
        dir.display()
    )]
    Corrupt {
        dir: PathBuf,
        digest: Digest,
        /// A digest or size mismatch; it is part of this message, not a `source()`: the hint has to follow it, which a chain
        /// (`a: b: c`) cannot say; it is printed once all the same.
        cause: BlobError,
    },
    #[error("cache directory {} has no blob {digest}; export the cache again", dir.display())]
    Missing { dir: PathBuf, digest: Digest },
    #[error("{} is not a valid OCI layout index", path.display())]
    Index {
        path: PathBuf,
        #[source]
        reason: Cause,
    },
}

/// A shared cache in an OCI layout directory: see the module documentation.
#[derive(Debug, Clone)]
pub struct LocalCache {
    dir: PathBuf,
    tag: String,
}

impl LocalCache {
    /// The cache tagged `tag` in `dir`. Nothing is read or created until it is used: a
    /// directory that does not exist is an empty cache to read, and is created by the first
    /// write.
    pub fn new(dir: &Path, tag: &str) -> LocalCache {
        LocalCache {
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
            tag: tag.to_string(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// Creates the layout (when missing) and opens its blobs for writing.
    fn writable(&self) -> Result<BlobStore, LocalCacheError> {
        fs::create_dir_all(&self.dir).fs("create directory", &self.dir)?;
        let blobs = BlobStore::open(&self.dir).map_err(|source| self.blob_error(source))?;
        // What an exporter killed mid-write left in the cache's staging directory (best effort:
        // a directory that cannot be cleaned still takes this export).
        let _ = blobs
            .staging()
            .remove_stale(crate::sys::atomic::Staging::STALE_AGE);
        let layout = self.dir.join("oci-layout");
        if !layout.exists() {
            atomic_write_in(blobs.staging(), &layout, OCI_LAYOUT.as_bytes())?;
        }
        Ok(blobs)
    }

    fn blob_error(&self, source: BlobError) -> LocalCacheError {
        LocalCacheError::Blob {
            dir: self.dir.clone(),
            source,
        }
    }

    /// `index.json` as JSON, `None` when there is none.
    fn read_index(&self) -> Result<Option<serde_json::Value>, LocalCacheError> {
        let path = self.index_path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(FsError::new("open", &path, err).into()),
        };
        let mut bytes = Vec::new();
        file.take(MAX_INDEX_SIZE + 1)
            .read_to_end(&mut bytes)
            .fs("read", &path)?;
        let invalid = |reason: Cause| LocalCacheError::Index {
            path: path.clone(),
            reason,
        };
        if bytes.len() as u64 > MAX_INDEX_SIZE {
            return Err(invalid(
                format!("it is more than {MAX_INDEX_SIZE} bytes").into(),
            ));
        }
        let index: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|err| invalid(err.into()))?;
        if !index.get("manifests").is_some_and(|m| m.is_array()) {
            return Err(invalid("it has no manifests list".into()));
        }
        Ok(Some(index))
    }

    /// Whether an index entry is this cache's manifest.
    fn is_ours(&self, entry: &serde_json::Value) -> bool {
        entry
            .pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1")))
            .and_then(|v| v.as_str())
            == Some(self.tag.as_str())
    }
}

impl CacheTransport for LocalCache {
    fn describe(&self) -> String {
        format!("directory {} (tag {})", self.dir.display(), self.tag)
    }

    fn read_manifest(&self) -> Result<Option<(String, Vec<u8>)>, TransportError> {
        let Some(index) = self.read_index()? else {
            return Ok(None);
        };
        let manifests = index
            .get("manifests")
            .and_then(|m| m.as_array())
            .cloned()
            .unwrap_or_default();
        let Some(entry) = manifests.iter().rev().find(|e| self.is_ours(e)) else {
            return Ok(None);
        };
        let invalid = |reason: &str| LocalCacheError::Index {
            path: self.index_path(),
            reason: format!("the entry tagged {:?} {reason}", self.tag).into(),
        };
        let digest = entry
            .get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| Digest::parse(d).ok())
            .ok_or_else(|| invalid("has no valid sha256 digest"))?;
        let size = entry
            .get("size")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| invalid("has no size"))?;
        let media_type = entry
            .get("mediaType")
            .and_then(|m| m.as_str())
            .ok_or_else(|| invalid("has no media type"))?
            .to_string();
        if size > super::format::MAX_MANIFEST_SIZE {
            return Err(invalid("names a manifest larger than 4 MiB").into());
        }
        let path = self.blob_path(&digest);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(LocalCacheError::Missing {
                    dir: self.dir.clone(),
                    digest,
                }
                .into());
            }
            Err(err) => return Err(FsError::new("open", &path, err).into()),
        };
        let mut bytes = Vec::new();
        file.take(size + 1)
            .read_to_end(&mut bytes)
            .fs("read", &path)?;
        let actual = Digest::of(&bytes);
        if actual != digest || bytes.len() as u64 != size {
            return Err(LocalCacheError::Corrupt {
                dir: self.dir.clone(),
                digest: digest.clone(),
                cause: BlobError::DigestMismatch {
                    expected: digest,
                    actual,
                },
            }
            .into());
        }
        Ok(Some((media_type, bytes)))
    }

    fn write_manifest(&self, media_type: &str, bytes: &[u8]) -> Result<(), TransportError> {
        let blobs = self.writable()?;
        let blob = blobs.write(bytes).map_err(|e| self.blob_error(e))?;
        let lock_path = self.dir.join(".kiln-index.lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .fs("open lock file", &lock_path)?;
        // flock(2): the read-modify-write of index.json is one writer at a time, so entries of
        // other tags written meanwhile are kept; readers need no lock (the file is replaced
        // by rename(2)).
        lock.lock().fs("lock", &lock_path)?;
        let mut index = self.read_index()?.unwrap_or_else(|| {
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [],
            })
        });
        let entry = serde_json::json!({
            "mediaType": media_type,
            "digest": blob.digest.to_string(),
            "size": blob.size,
            "annotations": { REF_NAME: self.tag },
        });
        let mut manifests: Vec<serde_json::Value> = index
            .get("manifests")
            .and_then(|m| m.as_array())
            .cloned()
            .unwrap_or_default();
        manifests.retain(|e| !self.is_ours(e));
        manifests.push(entry);
        index["manifests"] = serde_json::Value::Array(manifests);
        let bytes = serde_json::to_vec(&index).unwrap_or_default();
        atomic_write_in(blobs.staging(), &self.index_path(), &bytes)?;
        drop(lock);
        Ok(())
    }

    fn has_blob(&self, digest: &Digest) -> Result<bool, TransportError> {
        Ok(self.blob_path(digest).is_file())
    }

    fn fetch_blob(
        &self,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
    ) -> Result<BlobRef, TransportError> {
        let path = self.blob_path(digest);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(LocalCacheError::Missing {
                    dir: self.dir.clone(),
                    digest: digest.clone(),
                }
                .into());
            }
            Err(err) => return Err(FsError::new("open", &path, err).into()),
        };
        store
            .import(&mut file, Some(digest), Some(size))
            .map_err(|source| match source {
                BlobError::DigestMismatch { .. } | BlobError::SizeMismatch { .. } => {
                    LocalCacheError::Corrupt {
                        dir: self.dir.clone(),
                        digest: digest.clone(),
                        cause: source,
                    }
                }
                other => self.blob_error(other),
            })
            .map_err(Into::into)
    }

    fn push_blob(
        &self,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
    ) -> Result<(), TransportError> {
        if self.blob_path(digest).is_file() {
            return Ok(());
        }
        let blobs = self.writable()?;
        let mut reader = store.reader(digest, Some(size))?;
        blobs
            .import(&mut reader, Some(digest), Some(size))
            .map_err(|e| self.blob_error(e))?;
        Ok(())
    }

    fn origin(&self) -> Option<BlobOrigin> {
        Some(BlobOrigin::OciLayout(self.dir.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_and_manifests_round_trip_and_other_tags_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(store_dir.path()).unwrap();
        let cache = LocalCache::new(&dir.path().join("cache"), "main");
        assert!(cache.read_manifest().unwrap().is_none(), "no directory yet");
        let blob = store.write(b"layer bytes").unwrap();
        assert!(!cache.has_blob(&blob.digest).unwrap());
        cache.push_blob(&blob.digest, blob.size, &store).unwrap();
        assert!(cache.has_blob(&blob.digest).unwrap());
        cache.write_manifest("application/x-one", b"first").unwrap();
        let other = LocalCache::new(&dir.path().join("cache"), "other");
        other
            .write_manifest("application/x-two", b"second")
            .unwrap();
        cache.write_manifest("application/x-one", b"third").unwrap();
        assert_eq!(
            cache.read_manifest().unwrap(),
            Some(("application/x-one".to_string(), b"third".to_vec()))
        );
        assert_eq!(
            other.read_manifest().unwrap(),
            Some(("application/x-two".to_string(), b"second".to_vec()))
        );
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("cache/index.json")).unwrap())
                .unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(
            fs::read_to_string(dir.path().join("cache/oci-layout")).unwrap(),
            OCI_LAYOUT
        );

        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = BlobStore::open(fresh_dir.path()).unwrap();
        cache.fetch_blob(&blob.digest, blob.size, &fresh).unwrap();
        assert!(fresh.contains(&blob.digest));
    }

    #[test]
    fn a_tampered_blob_or_manifest_is_refused_and_nothing_enters_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(store_dir.path()).unwrap();
        let cache = LocalCache::new(dir.path(), DEFAULT_TAG);
        let blob = store.write(b"layer bytes").unwrap();
        cache.push_blob(&blob.digest, blob.size, &store).unwrap();
        cache.write_manifest("application/x", b"manifest").unwrap();
        fs::write(cache.blob_path(&blob.digest), b"layer bytez").unwrap();
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = BlobStore::open(fresh_dir.path()).unwrap();
        let err = cache
            .fetch_blob(&blob.digest, blob.size, &fresh)
            .unwrap_err()
            .to_string();
        assert!(err.contains("corrupt or was tampered with"), "{err}");
        assert!(fresh.list().unwrap().is_empty());
        let manifest = Digest::of(b"manifest");
        fs::write(cache.blob_path(&manifest), b"manifesT").unwrap();
        let err = cache.read_manifest().unwrap_err().to_string();
        assert!(err.contains("corrupt or was tampered with"), "{err}");
        let missing = Digest::of(b"nothing");
        let err = cache
            .fetch_blob(&missing, 1, &fresh)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no blob"), "{err}");
        fs::write(dir.path().join("index.json"), b"[]").unwrap();
        let err = cache.read_manifest().unwrap_err().to_string();
        assert!(err.contains("not a valid OCI layout index"), "{err}");
    }
}
