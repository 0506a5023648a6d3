//! Cache mounts (`RUN --mount=type=cache`) through the shared cache: BuildKit never exports
//! them (moby/buildkit#1474, #1512), so a CI machine that builds from a registry cache starts
//! every package-manager cache cold. kiln carries instance `0/` of each cache id a build's RUN
//! steps use, per platform, as a layer blob of the cache graph ([`GraphCacheMount`]).
//!
//! - Export ([`collect`]): the directory is written as an uncompressed layer tar, as the build's
//!   own layers are ([`crate::layer::write_layer`]: entries sorted, only what defines the tree,
//!   so the same content gives the same blob). A fingerprint of the tree (paths, types, sizes,
//!   modes, owners, mtimes, link targets) is noted beside the cache mount with the blob it gave
//!   ([`Store::cache_mount_note`]); an unchanged tree reuses that blob without writing a tar,
//!   and a transport that holds the blob is not sent it again. A local copy older than the one
//!   an imported cache holds is not exported; the imported one is carried on instead, as is one
//!   whose id this machine never ran.
//! - Import ([`ImportedCache::restore_cache_mount`]): when a step takes a cache mount that does
//!   not exist locally, or whose local copy is older than the imported one
//!   ([`ImportedCache::cache_mount_is_newer`], asked once per build and id), the blob is fetched
//!   (digest and size verified), unpacked confined to the new directory
//!   ([`crate::layer::apply_layer`]), and its diff ID checked. Any failure is the caller's
//!   warning and the cache mount starts empty: a cache never fails a build.
//!
//! Both ways are bounded: [`MAX_CACHE_MOUNT_BYTES`] of content, [`MAX_ENTRIES`] entries.

use super::format::{GraphCacheMount, GraphLayer, MAX_TIME};
use super::{ImportedCache, TransportError};
use crate::layer::apply::MAX_ENTRIES;
use crate::layer::{ApplyOptions, Compression, LayerError, Whiteouts, apply_layer, decompressed};
use crate::oci::{Digest, Hashing, Platform};
use crate::store::blob::BlobError;
use crate::store::{CacheMountError, Store};
use crate::sys::atomic::{FsError, remove_tree};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::PoisonError;
use std::time::{Duration, Instant, SystemTime};

/// The most bytes of file content a cache mount may have to be exported, and the most
/// uncompressed bytes an imported one may unpack to.
pub const MAX_CACHE_MOUNT_BYTES: u64 = 16 << 30;
/// How long an export waits for a cache mount that a `locked` step of another build holds.
const PEEK_WAIT: Duration = Duration::from_secs(60);
/// The largest note read.
const MAX_NOTE: u64 = 64 << 10;

/// Why a cache mount could not be exported or restored.
#[derive(Debug, thiserror::Error)]
pub enum CacheMountContentError {
    #[error(transparent)]
    CacheMount(#[from] CacheMountError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("cannot write or unpack its layer tar")]
    Layer(#[from] LayerError),
    #[error("it is larger than {limit} bytes or {MAX_ENTRIES} entries")]
    TooLarge { limit: u64 },
    #[error("cannot fetch its blob {digest} ({place})")]
    Fetch {
        digest: Digest,
        place: String,
        #[source]
        source: TransportError,
    },
    #[error("its blob unpacked to diff ID {actual}, not the {expected} the cache names")]
    DiffId { expected: Digest, actual: Digest },
}

/// What the note beside a cache mount says: the tree whose blob was last exported or
/// imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Note {
    fingerprint: Digest,
    modified: i64,
    layer: GraphLayer,
}

/// A walk of a cache mount's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tree {
    /// Of everything below the directory (not the directory's own owner and mode, which the
    /// mount's options set and the tar does not carry).
    fingerprint: Digest,
    /// The newest mtime of the directory and everything in it, in Unix seconds.
    modified: i64,
}

/// Walks `dir` without following symlinks, in byte order of names.
fn walk(dir: &Path) -> Result<Tree, CacheMountContentError> {
    let stat = |path: &Path| fs::symlink_metadata(path).map_err(|e| FsError::new("stat", path, e));
    let mut hash = Hashing::new(io::sink());
    let mut modified = stat(dir)?.mtime();
    let (mut entries, mut bytes) = (0u64, 0u64);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let mut names = fs::read_dir(&current)
            .and_then(|list| {
                list.map(|e| e.map(|e| e.file_name()))
                    .collect::<io::Result<Vec<OsString>>>()
            })
            .map_err(|e| FsError::new("read directory", &current, e))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = current.join(&name);
            let meta = stat(&path)?;
            entries += 1;
            bytes = bytes.saturating_add(meta.size());
            if entries > MAX_ENTRIES || bytes > MAX_CACHE_MOUNT_BYTES {
                return Err(CacheMountContentError::TooLarge {
                    limit: MAX_CACHE_MOUNT_BYTES,
                });
            }
            modified = modified.max(meta.mtime());
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            let _ = hash.write_all(relative.as_os_str().as_bytes());
            let line = format!(
                "\0{:o} {} {} {} {}.{}\0",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec()
            );
            let _ = hash.write_all(line.as_bytes());
            if meta.file_type().is_symlink() {
                let target =
                    fs::read_link(&path).map_err(|e| FsError::new("read link", &path, e))?;
                let _ = hash.write_all(target.as_os_str().as_bytes());
                let _ = hash.write_all(b"\0");
            }
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    let (fingerprint, _, _) = hash.finish();
    Ok(Tree {
        fingerprint,
        modified: modified.clamp(0, MAX_TIME),
    })
}

fn read_note(store: &Store, id: &str) -> Option<Note> {
    let file = fs::File::open(store.cache_mount_note(id)).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_NOTE).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Notes what `tree` exported as; a note that cannot be written only costs a tar next time.
fn write_note(store: &Store, id: &str, note: &Note) {
    let bytes = serde_json::to_vec(note).unwrap_or_default();
    let _ =
        crate::sys::atomic::atomic_write_in(store.staging(), &store.cache_mount_note(id), &bytes);
}

/// The entries of an export.
#[derive(Debug, Default)]
pub struct CacheMountExport {
    /// For the graph, sorted by id.
    pub mounts: Vec<GraphCacheMount>,
    /// One line per cache mount left out, and why.
    pub warnings: Vec<String>,
}

/// The graph entries for cache ids `ids` on `platform`: each local instance `0/` (its blob
/// written into the store unless the note says an unchanged tree has one there), or the
/// imported copy when that is newer or there is no local one. A cache mount that cannot be
/// read is left out with a warning.
pub fn collect(
    store: &Store,
    imported: &ImportedCache,
    ids: &BTreeSet<String>,
    platform: &Platform,
) -> CacheMountExport {
    let mut export = CacheMountExport::default();
    for id in ids {
        match export_one(store, imported, id, platform) {
            Ok(Some(mount)) => export.mounts.push(mount),
            Ok(None) => {}
            Err(err) => export.warnings.push(format!(
                "cache mount {id:?} is not exported: {}",
                crate::error::Chain(&err)
            )),
        }
    }
    export
}

fn export_one(
    store: &Store,
    imported: &ImportedCache,
    id: &str,
    platform: &Platform,
) -> Result<Option<GraphCacheMount>, CacheMountContentError> {
    let carried = imported
        .find_cache_mount(id, platform)
        .map(|(_, m)| m.clone());
    let deadline = Instant::now() + PEEK_WAIT;
    let Some(lease) = store.peek_cache_mount(id, &|| Instant::now() > deadline)? else {
        return Ok(carried);
    };
    let tree = walk(lease.path())?;
    if let Some(newer) = carried.filter(|c| c.modified > tree.modified) {
        return Ok(Some(newer));
    }
    let entry = |modified: i64, layer: GraphLayer| GraphCacheMount {
        id: id.to_string(),
        platform: platform.to_string(),
        modified,
        layer,
    };
    if let Some(note) = read_note(store, id)
        && note.fingerprint == tree.fingerprint
        && (store.blobs().contains(&note.layer.digest) || imported.lists(&note.layer.digest))
    {
        return Ok(Some(entry(note.modified, note.layer)));
    }
    let mut writer = store.blobs().writer()?;
    let written = crate::layer::write_layer(lease.path(), &mut writer)?;
    let blob = writer.commit(Some(&written.diff_id))?;
    let layer = GraphLayer {
        digest: blob.digest,
        size: blob.size,
        media_type: Compression::None.media_type().to_string(),
        diff_id: written.diff_id,
    };
    write_note(
        store,
        id,
        &Note {
            fingerprint: tree.fingerprint,
            modified: tree.modified,
            layer: layer.clone(),
        },
    );
    Ok(Some(entry(tree.modified, layer)))
}

impl ImportedCache {
    /// The first imported cache's copy of cache mount `id` for `platform`, with the index of
    /// its source.
    pub(super) fn find_cache_mount(
        &self,
        id: &str,
        platform: &Platform,
    ) -> Option<(usize, &GraphCacheMount)> {
        self.sources.iter().enumerate().find_map(|(index, source)| {
            source
                .graph
                .cache_mounts
                .iter()
                .find(|m| {
                    m.id == id && Platform::parse(&m.platform).is_ok_and(|p| platform.accepts(&p))
                })
                .map(|m| (index, m))
        })
    }

    /// Whether an imported cache holds a copy of cache mount `id` newer than the local one at
    /// `local`. Asked once per build and id (then `false`): a copy replaces the local one at
    /// most once, before the first step that takes it.
    pub fn cache_mount_is_newer(&self, id: &str, platform: &Platform, local: &Path) -> bool {
        let Some((_, copy)) = self.find_cache_mount(id, platform) else {
            return false;
        };
        let first = self
            .asked_mounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string());
        first && walk(local).is_ok_and(|tree| tree.modified < copy.modified)
    }

    /// Makes directory `dir` (which must not exist) the imported copy of cache mount `id`:
    /// fetches its blob into the store when absent (verified), unpacks it confined to `dir`, and
    /// checks its diff ID. `Ok(false)` when no imported cache has one. On an error nothing is
    /// left at `dir`.
    pub fn restore_cache_mount(
        &self,
        store: &Store,
        id: &str,
        platform: &Platform,
        dir: &Path,
    ) -> Result<bool, CacheMountContentError> {
        let Some((index, copy)) = self.find_cache_mount(id, platform) else {
            return Ok(false);
        };
        let layer = &copy.layer;
        if !store.blobs().contains(&layer.digest)
            && let Some(source) = self.sources.get(index)
        {
            source
                .transport
                .fetch_blob(&layer.digest, layer.size, store.blobs())
                .map_err(|source_err| CacheMountContentError::Fetch {
                    digest: layer.digest.clone(),
                    place: source.transport.describe(),
                    source: source_err,
                })?;
        }
        let reader = store.blobs().reader(&layer.digest, Some(layer.size))?;
        fs::create_dir(dir).map_err(|e| FsError::new("create directory", dir, e))?;
        let unpacked = (|| -> Result<(), CacheMountContentError> {
            let stream = decompressed(reader, MAX_CACHE_MOUNT_BYTES)?;
            let options = ApplyOptions {
                whiteouts: Whiteouts::Literal,
                max_bytes: MAX_CACHE_MOUNT_BYTES,
                same_owner: crate::sys::privilege::current().can_chown(),
                device_nodes: crate::sys::privilege::current().can_make_devices(),
                user_xattr: false,
            };
            let applied = apply_layer(stream, dir, &options)?;
            if applied.diff_id != layer.diff_id {
                return Err(CacheMountContentError::DiffId {
                    expected: layer.diff_id.clone(),
                    actual: applied.diff_id,
                });
            }
            // The directory itself is not in the tar: give it the copy's time, so the restored
            // tree is exactly as new as the copy.
            let when = SystemTime::UNIX_EPOCH + Duration::from_secs(copy.modified.unsigned_abs());
            fs::File::open(dir)
                .and_then(|d| d.set_modified(when))
                .map_err(|e| FsError::new("set the time of", dir, e))?;
            Ok(())
        })();
        if let Err(err) = unpacked {
            let _ = remove_tree(dir);
            return Err(err);
        }
        if let Ok(tree) = walk(dir) {
            write_note(
                store,
                id,
                &Note {
                    fingerprint: tree.fingerprint,
                    modified: copy.modified,
                    layer: layer.clone(),
                },
            );
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::remote::{CacheGraph, CacheTransport, LocalCache, export};
    use crate::store::CacheSharing;
    use std::sync::Arc;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    /// Takes cache mount `id` in `store` (empty when new) and writes `files` into it.
    fn fill(store: &Store, id: &str, files: &[(&str, &str)]) {
        let lease = store
            .cache_mount(id, CacheSharing::Shared, &|| false, &mut |p| {
                fs::create_dir(p)?;
                Ok(())
            })
            .unwrap();
        for (name, content) in files {
            let path = lease.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
    }

    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_fingerprint_follows_content_names_and_times() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/f"), "one").unwrap();
        let first = walk(dir.path()).unwrap();
        assert_eq!(
            walk(dir.path()).unwrap(),
            first,
            "the same tree, the same walk"
        );
        fs::write(dir.path().join("d/f"), "two!").unwrap();
        let grown = walk(dir.path()).unwrap();
        assert_ne!(grown.fingerprint, first.fingerprint);
        fs::rename(dir.path().join("d/f"), dir.path().join("f")).unwrap();
        assert_ne!(walk(dir.path()).unwrap().fingerprint, grown.fingerprint);
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        for path in [
            dir.path().join("f"),
            dir.path().join("d"),
            dir.path().to_path_buf(),
        ] {
            fs::File::open(&path).unwrap().set_modified(old).unwrap();
        }
        assert_eq!(walk(dir.path()).unwrap().modified, 1_000);
    }

    #[test]
    fn export_reuses_an_unchanged_blob_and_restore_gives_the_same_tree() {
        let (_a_dir, a) = store();
        fill(&a, "/cache", &[("pkg/one", "1"), ("two", "22")]);
        let platform = Platform::host();
        let none = ImportedCache::default();
        let first = collect(&a, &none, &ids(&["/cache", "/never-used"]), &platform);
        assert!(first.warnings.is_empty(), "{:?}", first.warnings);
        assert_eq!(
            first.mounts.len(),
            1,
            "an id with no local copy is left out"
        );
        let mount = first.mounts[0].clone();
        assert_eq!(mount.platform, platform.to_string());
        assert!(a.blobs().contains(&mount.layer.digest));
        // Unchanged: the note gives the same blob without writing a tar (the blob is removed
        // from the note's sight only when the store lost it).
        let before = a.blobs().list().unwrap().len();
        let again = collect(&a, &none, &ids(&["/cache"]), &platform);
        assert_eq!(again.mounts, first.mounts);
        assert_eq!(a.blobs().list().unwrap().len(), before);

        let cache_dir = tempfile::tempdir().unwrap();
        let cache: Arc<dyn CacheTransport> = Arc::new(LocalCache::new(cache_dir.path(), "t"));
        let graph = CacheGraph {
            records: Default::default(),
            cache_mounts: first.mounts.clone(),
        };
        export(
            &graph,
            &a,
            &none,
            cache.as_ref(),
            &super::super::tests::uncompressed(),
        )
        .unwrap();

        let (_b_dir, b) = store();
        let (imported, reports) = ImportedCache::import(std::slice::from_ref(&cache), &b);
        assert_eq!(reports[0].warning, None);
        let staged = b.staging().new_path("restore");
        assert!(
            imported
                .restore_cache_mount(&b, "/cache", &platform, &staged)
                .unwrap()
        );
        assert_eq!(fs::read_to_string(staged.join("pkg/one")).unwrap(), "1");
        assert_eq!(fs::read_to_string(staged.join("two")).unwrap(), "22");
        assert_eq!(walk(&staged).unwrap().modified, mount.modified);
        let other = b.staging().new_path("restore");
        assert!(
            !imported
                .restore_cache_mount(&b, "/other", &platform, &other)
                .unwrap()
        );
        assert!(!other.exists());
        let arm = Platform::parse("linux/s390x/zz").unwrap();
        assert!(imported.find_cache_mount("/cache", &arm).is_none());
    }

    #[test]
    fn a_newer_copy_wins_once_and_a_corrupt_blob_leaves_nothing() {
        let (_a_dir, a) = store();
        fill(&a, "c", &[("f", "new")]);
        let platform = Platform::host();
        let none = ImportedCache::default();
        let mounts = collect(&a, &none, &ids(&["c"]), &platform).mounts;
        let cache_dir = tempfile::tempdir().unwrap();
        let cache: Arc<dyn CacheTransport> = Arc::new(LocalCache::new(cache_dir.path(), "t"));
        let graph = CacheGraph {
            records: Default::default(),
            cache_mounts: mounts.clone(),
        };
        export(
            &graph,
            &a,
            &none,
            cache.as_ref(),
            &super::super::tests::uncompressed(),
        )
        .unwrap();

        // B's own copy is older than A's: newer, asked once; B's export carries A's on.
        let (_b_dir, b) = store();
        fill(&b, "c", &[("f", "old")]);
        let lease = b.peek_cache_mount("c", &|| false).unwrap().unwrap();
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        for path in [lease.path().join("f"), lease.path().to_path_buf()] {
            fs::File::open(&path).unwrap().set_modified(old).unwrap();
        }
        let local = lease.path().to_path_buf();
        drop(lease);
        let (imported, _) = ImportedCache::import(std::slice::from_ref(&cache), &b);
        let carried = collect(&b, &imported, &ids(&["c"]), &platform);
        assert_eq!(
            carried.mounts, mounts,
            "the newer imported copy is carried on"
        );
        assert!(imported.cache_mount_is_newer("c", &platform, &local));
        assert!(
            !imported.cache_mount_is_newer("c", &platform, &local),
            "once"
        );

        // A tampered blob: an error, and nothing at the directory.
        let digest = &mounts[0].layer.digest;
        fs::write(
            cache_dir.path().join("blobs/sha256").join(digest.hex()),
            "x",
        )
        .unwrap();
        let (_c_dir, c) = store();
        let (imported, _) = ImportedCache::import(std::slice::from_ref(&cache), &c);
        let staged = c.staging().new_path("restore");
        let err = imported
            .restore_cache_mount(&c, "c", &platform, &staged)
            .unwrap_err();
        assert!(
            crate::error::chain(&err).contains("corrupt or was tampered with"),
            "{}",
            crate::error::chain(&err)
        );
        assert!(!staged.exists());
        assert!(!c.blobs().contains(digest));
    }
}
