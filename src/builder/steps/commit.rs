//! From a RUN step's overlay upper directory to a stored layer, without copying a file.
//!
//! A [`StagedUpper`] is made in the store's staging directory, on the same filesystem as the
//! snapshots. After the step, [`commit`] streams the upper directory's diff as an uncompressed
//! tar straight into the blob store (so the blob digest is the diff ID), then renames the upper
//! directory itself into `snapshots/<diff_id>`: an upper directory is already in the snapshot
//! format (whiteouts are 0/0 character devices, opaque directories carry
//! `trusted.overlay.opaque=y`), so the next step mounts it as a lower directory as it is.
//!
//! The overlay work directory is a sibling of the upper one, never inside it, so what overlayfs
//! leaves there (`work/work`, root's, mode 000) is never part of a layer; it goes when the
//! staged pair is dropped.

use crate::layer::{LayerError, OwnerMap, write_layer_mapped};
use crate::store::blob::BlobError;
use crate::store::{LayerInfo, Store};
use crate::sys::atomic::{FsError, IoContext as _, fsync_dir, remove_tree};
use oci_spec::image::MediaType;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Why a staged upper directory could not be made or turned into a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerCommitError {
    /// A file operation on the staged directories or the snapshot failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The upper directory could not be written as a layer tar (an unreadable file, a name that
    /// would read as a whiteout).
    #[error("cannot write the layer of {}: {source}", upper.display())]
    Diff {
        /// The upper directory.
        upper: PathBuf,
        /// Why.
        source: LayerError,
    },
    /// The layer blob could not be stored.
    #[error("cannot store the layer of {}: {source}", upper.display())]
    Blob {
        /// The upper directory.
        upper: PathBuf,
        /// Why.
        source: BlobError,
    },
    /// The thread writing the blob, or syncing the snapshot, panicked.
    #[error("the thread writing a layer blob or syncing its snapshot stopped unexpectedly")]
    Thread,
}

/// How many bytes a [`Pipe`] gathers before handing them to the blob thread.
const PIPE_CHUNK: usize = 1 << 20;

/// A writer that passes its bytes, in chunks, to a thread that writes them to a blob writer.
struct Pipe {
    buffer: Vec<u8>,
    sender: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
}

type BlobSide = std::thread::JoinHandle<std::io::Result<crate::store::BlobWriter>>;

impl Pipe {
    /// Starts the thread that writes into `writer`; joining it gives the writer back (or the
    /// first write error) once the pipe is dropped.
    fn spawn(mut writer: crate::store::BlobWriter) -> (Pipe, BlobSide) {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let thread = std::thread::spawn(move || {
            use std::io::Write as _;
            for chunk in receiver {
                writer.write_all(&chunk)?;
            }
            Ok(writer)
        });
        let pipe = Pipe {
            buffer: Vec::with_capacity(PIPE_CHUNK),
            sender: Some(sender),
        };
        (pipe, thread)
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(PIPE_CHUNK));
        match &self.sender {
            // A closed channel means the blob thread stopped on a write error, which joining it
            // reports.
            Some(sender) => sender
                .send(chunk)
                .map_err(|_| std::io::Error::other("the layer blob writer stopped")),
            None => Ok(()),
        }
    }
}

impl std::io::Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= PIPE_CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // Best effort: a failure here is the blob thread's write error, reported by its join.
        let _ = self.send();
        self.sender = None;
    }
}

/// A fresh upper + work directory pair in the store's staging area (same filesystem as the
/// snapshots, so the upper directory can be renamed into place); removed on drop unless
/// [`commit`]ted. Both start empty.
#[derive(Debug)]
pub struct StagedUpper {
    /// The staging entry holding both (named so that `Staging::remove_stale` removes it when
    /// this process dies).
    dir: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    /// Owners the layer tar writes differently from the disk's (see [`StagedUpper::map_owners`]).
    owners: std::sync::OnceLock<OwnerMap>,
}

impl StagedUpper {
    /// Creates `ROOT/tmp/<pid-...>.upper/{upper,work}`.
    pub fn new(store: &Store) -> Result<StagedUpper, LayerCommitError> {
        let dir = store.staging().new_path("upper");
        fs::create_dir(&dir).fs("create directory", &dir)?;
        // From here on, an error drops `staged`, which removes `dir`.
        let staged = StagedUpper {
            upper: dir.join("upper"),
            work: dir.join("work"),
            dir,
            owners: std::sync::OnceLock::new(),
        };
        for path in [&staged.upper, &staged.work] {
            fs::create_dir(path).fs("create directory", path)?;
        }
        Ok(staged)
    }

    /// The overlay's `upperdir`: the step's changes.
    pub fn upper(&self) -> &Path {
        &self.upper
    }

    /// Makes the layer write the owners `map` maps as it says: what an unprivileged
    /// `--isolation=chroot` step made is kiln's user's on disk, and stands for the step's user.
    pub fn map_owners(&self, map: OwnerMap) {
        // Set once, by the step that made the changes.
        let _ = self.owners.set(map);
    }

    /// The overlay's `workdir`.
    pub fn work(&self) -> &Path {
        &self.work
    }
}

impl Drop for StagedUpper {
    fn drop(&mut self) {
        // Nothing to report to from a drop; a leftover is stale staging that the next
        // `Store::open` or `kiln system prune` removes.
        let _ = remove_tree(&self.dir);
    }
}

/// Turns the upper directory into a layer with no copying: writes its diff as an uncompressed
/// tar (`application/vnd.oci.image.layer.v1.tar`, so the blob digest is the diff ID) straight
/// into the blob store, then renames the upper directory itself to
/// [`Store::snapshot_dir`]`(diff_id)`, after a syncfs(2) (run while the tar is written) so its
/// files are on disk before the rename publishes them, and an fsync of `snapshots/` after it so
/// the rename survives a crash.
/// When that snapshot already exists (the same change was made before, or by another process
/// meanwhile) it is kept and ours is dropped. An upper directory with no entries is no layer:
/// `None`. Hold a [`crate::store::Lease`] until an image references the layer.
pub fn commit(store: &Store, staged: StagedUpper) -> Result<Option<LayerInfo>, LayerCommitError> {
    let upper = staged.upper();
    let mut entries = fs::read_dir(upper).fs("read directory", upper)?;
    if entries.next().is_none() {
        return Ok(None);
    }
    drop(entries);
    // The snapshot's files must be on disk before the rename below publishes them. syncfs(2)
    // flushes the whole filesystem in one call (an fsync of each file would cost a disk flush
    // per file); it runs on its own thread from here on, while the layer tar is written (which
    // only reads the upper directory), so the disk writes the snapshot while the CPU hashes it.
    let upper_dir = File::open(upper).fs("open", upper)?;
    let syncing = std::thread::spawn(move || nix::unistd::syncfs(&upper_dir));
    let blob_error = |source| LayerCommitError::Blob {
        upper: upper.to_path_buf(),
        source,
    };
    let writer = store.blobs().writer().map_err(blob_error)?;
    // The tar is hashed twice: by `write_layer` (the diff ID) and by the blob writer (which
    // verifies what it stores). The blob side runs on its own thread, fed through a bounded
    // channel, so the two hashes (and the writes) use two cores instead of one.
    let (pipe, blob_side) = Pipe::spawn(writer);
    let written = write_layer_mapped(upper, pipe, staged.owners.get().cloned());
    let writer = blob_side
        .join()
        .map_err(|_| LayerCommitError::Thread)?
        .map_err(|source| {
            blob_error(BlobError::Fs(FsError::new(
                "write a layer blob in",
                store.staging().dir(),
                source,
            )))
        })?;
    let written = written.map_err(|source| LayerCommitError::Diff {
        upper: upper.to_path_buf(),
        source,
    })?;
    let blob = writer.commit(Some(&written.diff_id)).map_err(blob_error)?;
    syncing
        .join()
        .map_err(|_| LayerCommitError::Thread)?
        .map_err(|errno| FsError::new("sync", upper, errno.into()))?;

    let target = store.snapshot_dir(&written.diff_id);
    if !target.is_dir() {
        match fs::rename(upper, &target) {
            Ok(()) => {
                if let Some(parent) = target.parent() {
                    fsync_dir(parent)?;
                }
            }
            // rename(2): a non-empty directory at the target gives EEXIST or ENOTEMPTY; another
            // process made the same snapshot first, and its content is the same.
            Err(_) if target.is_dir() => {}
            Err(err) => return Err(FsError::new("rename into place", &target, err).into()),
        }
    }
    Ok(Some(LayerInfo {
        digest: blob.digest,
        size: blob.size,
        media_type: MediaType::ImageLayer,
        diff_id: written.diff_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("root")).unwrap();
        (dir, store)
    }

    fn staging_entries(store: &Store) -> usize {
        fs::read_dir(store.staging().dir()).unwrap().count()
    }

    #[test]
    fn an_empty_upper_is_no_layer_and_leaves_nothing_staged() {
        let (_dir, store) = store();
        let staged = StagedUpper::new(&store).unwrap();
        assert!(staged.upper().is_dir() && staged.work().is_dir());
        assert_eq!(staging_entries(&store), 1);
        assert_eq!(commit(&store, staged).unwrap(), None);
        assert_eq!(staging_entries(&store), 0);
        // Dropped uncommitted: removed too.
        drop(StagedUpper::new(&store).unwrap());
        assert_eq!(staging_entries(&store), 0);
    }

    #[test]
    fn the_upper_becomes_the_snapshot_and_the_work_dir_is_never_in_the_layer() {
        let (_dir, store) = store();
        let staged = StagedUpper::new(&store).unwrap();
        fs::create_dir(staged.upper().join("d")).unwrap();
        fs::write(staged.upper().join("d/f"), "hello").unwrap();
        fs::create_dir_all(staged.work().join("work/leftover")).unwrap();
        let inode = fs::metadata(staged.upper()).unwrap().ino();
        let layer = commit(&store, staged).unwrap().unwrap();
        assert_eq!(layer.digest, layer.diff_id);
        assert_eq!(layer.media_type, MediaType::ImageLayer);
        let snapshot = store.snapshot_dir(&layer.diff_id);
        assert_eq!(fs::metadata(&snapshot).unwrap().ino(), inode);
        assert_eq!(fs::read_to_string(snapshot.join("d/f")).unwrap(), "hello");
        let blob = store.blobs().read(&layer.digest).unwrap();
        assert_eq!(blob.len() as u64, layer.size);
        let mut archive = tar::Archive::new(blob.as_slice());
        let paths: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(paths, ["d/", "d/f"]);
        assert_eq!(staging_entries(&store), 0);

        // The same change again: the existing snapshot is kept, ours dropped.
        let again = StagedUpper::new(&store).unwrap();
        fs::create_dir(again.upper().join("d")).unwrap();
        fs::write(again.upper().join("d/f"), "hello").unwrap();
        let when = fs::metadata(snapshot.join("d"))
            .unwrap()
            .modified()
            .unwrap();
        filetime_like(&again.upper().join("d"), when);
        filetime_like(
            &again.upper().join("d/f"),
            fs::metadata(snapshot.join("d/f"))
                .unwrap()
                .modified()
                .unwrap(),
        );
        let second = commit(&store, again).unwrap().unwrap();
        assert_eq!(second, layer);
        assert_eq!(fs::metadata(&snapshot).unwrap().ino(), inode);
        assert_eq!(staging_entries(&store), 0);
    }

    /// Sets `path`'s mtime (so a second tree gives the same tar bytes as the first).
    fn filetime_like(path: &Path, when: std::time::SystemTime) {
        File::options()
            .read(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
}
