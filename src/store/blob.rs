//! Content-addressed blobs in an OCI image layout: `ROOT/blobs/sha256/<hex>`.
//!
//! A blob becomes visible only whole and only under its true digest: it is streamed into the
//! staging directory `ROOT/tmp/`, hashed on the way, fsynced, checked against the digest (and
//! size) the caller expected, and only then renamed into `blobs/sha256/`; the directory is
//! fsynced after the rename (see [`crate::sys::atomic`]). A killed writer leaves only staging
//! junk, which [`crate::sys::atomic::Staging::remove_stale`] removes.
//!
//! Readers verify too: [`BlobStore::read`] (for JSON documents: size-capped) and
//! [`BlobStore::reader`] (for layers: streaming, checked at end of file) fail on content whose
//! digest is not its name, so a corrupted or tampered file is an error, never bad data.

use crate::oci::{Digest, Hashing};
use crate::sys::atomic::{
    FsError, IoContext as _, Staging, create_private_dir_all, file_mode_in, fsync_dir,
};
use oci_spec::image::{Descriptor, MediaType};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The largest JSON document (manifest, config, index) kiln reads into memory. Real ones are a
/// few KiB; the cap keeps a hostile store or archive from exhausting memory.
pub const MAX_DOCUMENT_SIZE: u64 = 4 << 20;

/// A blob that could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("blob {0} is not in the store")]
    NotFound(Digest),
    #[error(
        "content does not match its digest: expected {expected}, got {actual} \
         (the data is corrupt or was tampered with)"
    )]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} has {actual} bytes, but {expected} were expected")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} is {size} bytes, more than the {limit}-byte limit for a JSON document")]
    TooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
}

/// A stored blob: its digest and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
}

impl BlobRef {
    /// An OCI descriptor of this blob with `media_type`.
    pub fn descriptor(&self, media_type: MediaType) -> Descriptor {
        Descriptor::new(media_type, self.size, oci_digest(&self.digest))
    }
}

/// Converts kiln's digest to oci-spec's (always valid: kiln digests are sha256 hex).
pub fn oci_digest(digest: &Digest) -> oci_spec::image::Digest {
    oci_spec::image::Digest::from(
        digest
            .hex()
            .parse::<oci_spec::image::Sha256Digest>()
            .unwrap_or_else(|_| unreachable!("a kiln Digest is 64 lower-case hex characters")),
    )
}

/// The blobs of an OCI image layout.
#[derive(Debug, Clone)]
pub struct BlobStore {
    /// `ROOT/blobs/sha256`.
    dir: PathBuf,
    staging: Staging,
}

impl BlobStore {
    /// Opens the blobs of the layout at `root`, creating `blobs/sha256/` and the staging
    /// directory `tmp/` when missing. In a private root (one that grants its group and others
    /// nothing, as kiln's store does) the directories are made `0700` and blobs `0600`.
    pub fn open(root: &Path) -> Result<BlobStore, BlobError> {
        let dir = root.join("blobs").join("sha256");
        if file_mode_in(root) == 0o600 {
            create_private_dir_all(&dir)?;
        } else {
            fs::create_dir_all(&dir).fs("create directory", &dir)?;
        }
        let staging = Staging::open(&root.join("tmp"))?;
        Ok(BlobStore { dir, staging })
    }

    /// The staging directory where blobs are written before they become visible.
    pub fn staging(&self) -> &Staging {
        &self.staging
    }

    /// Where the blob `digest` lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Whether the blob is stored (its content is not checked).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64, BlobError> {
        let path = self.path(digest);
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.len()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                Err(BlobError::NotFound(digest.clone()))
            }
            Err(err) => Err(FsError::new("inspect", &path, err).into()),
        }
    }

    /// Opens a blob for reading without verifying it; prefer [`BlobStore::reader`], which does.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, BlobError> {
        let path = self.path(digest);
        File::open(&path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => BlobError::NotFound(digest.clone()),
            _ => FsError::new("open", &path, err).into(),
        })
    }

    /// A streaming reader of a blob that fails (with `io::ErrorKind::InvalidData`, wrapping a
    /// [`BlobError`]) at end of file when the content's digest or size is not the expected one.
    /// Whoever consumes it must read to the end for the check to happen.
    pub fn reader(
        &self,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<BlobReader, BlobError> {
        Ok(BlobReader {
            inner: Some(Hashing::new(self.open_blob(digest)?)),
            expected: digest.clone(),
            expected_size,
            failed: false,
        })
    }

    /// Reads a whole blob that must be at most [`MAX_DOCUMENT_SIZE`] bytes (a JSON document)
    /// and verifies its digest.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        self.read_capped(digest, None)
    }

    /// [`BlobStore::read`] that also checks the size a descriptor gave.
    pub fn read_sized(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, BlobError> {
        self.read_capped(digest, Some(size))
    }

    fn read_capped(&self, digest: &Digest, size: Option<u64>) -> Result<Vec<u8>, BlobError> {
        let file = self.open_blob(digest)?;
        let path = self.path(digest);
        let len = file.metadata().fs("inspect", &path)?.len();
        let too_large = |size| BlobError::TooLarge {
            digest: digest.clone(),
            size,
            limit: MAX_DOCUMENT_SIZE,
        };
        if let Some(expected) = size.filter(|&s| s > MAX_DOCUMENT_SIZE) {
            return Err(too_large(expected));
        }
        if len > MAX_DOCUMENT_SIZE {
            return Err(too_large(len));
        }
        let mut bytes = Vec::new();
        // The file may grow after the check (it should not, but it is on disk): read one byte
        // more than the limit so growth shows up as too large instead of being cut silently.
        file.take(MAX_DOCUMENT_SIZE + 1)
            .read_to_end(&mut bytes)
            .fs("read", &path)?;
        let read = bytes.len() as u64;
        if read > MAX_DOCUMENT_SIZE {
            return Err(too_large(read));
        }
        check(Some(digest), size, &Digest::of(&bytes), read)?;
        Ok(bytes)
    }

    /// Stores `bytes` (skipped when the blob already exists) and returns its digest and size.
    pub fn write(&self, bytes: &[u8]) -> Result<BlobRef, BlobError> {
        let digest = Digest::of(bytes);
        let size = bytes.len() as u64;
        if self.contains(&digest) {
            return Ok(BlobRef { digest, size });
        }
        let mut writer = self.writer()?;
        writer.write_all(bytes).fs("write", &writer.path)?;
        writer.commit(Some(&digest))
    }

    /// Copies everything `reader` yields into the store; with `expected`, the content must have
    /// that digest (and, when given, size) or nothing becomes visible.
    pub fn import(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<BlobRef, BlobError> {
        let mut writer = self.writer()?;
        let path = writer.path.clone();
        io::copy(reader, &mut writer).fs("write", &path)?;
        writer.finish(expected, expected_size)
    }

    /// A writer that streams a new blob into staging; nothing is visible until
    /// [`BlobWriter::commit`]. Dropping it uncommitted removes the staged file.
    pub fn writer(&self) -> Result<BlobWriter, BlobError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.staging.new_path("blob");
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file_mode_in(&self.dir))
            .open(&path)
            .fs("create", &path)?;
        Ok(BlobWriter {
            inner: Some(Hashing::new(BufWriter::new(file))),
            path,
            blobs_dir: self.dir.clone(),
        })
    }

    /// A download of the blob `digest` that survives its process: its bytes go to
    /// `tmp/sha256-<hex>.partial` (locked by this writer), where a later download of the same
    /// blob finds them and resumes at [`Download::offset`]. Only content that hashes to
    /// `digest` is ever renamed into the store. When another writer (another process) holds
    /// that file, this download is an ordinary one in staging, started from 0 and removed when
    /// dropped; waiting for the other could deadlock two pulls that each hold what the other
    /// wants.
    pub fn download(&self, digest: &Digest) -> Result<Download, BlobError> {
        let path = self
            .staging
            .partial_path(&format!("sha256-{}", digest.hex()));
        let Some(file) = self.lock_partial(&path)? else {
            return Ok(Download {
                sink: Sink::Staged(self.writer()?),
                offset: 0,
            });
        };
        // Hash what an earlier download left: the hash of the whole blob goes on from there.
        let mut hashing = Hashing::new(PartialFile {
            file: BufWriter::new(file),
            replaying: true,
        });
        let mut reader = File::open(&path).fs("open", &path)?;
        io::copy(&mut reader, &mut hashing).fs("read", &path)?;
        hashing.get_mut().replaying = false;
        let offset = hashing.bytes();
        // Appends go after what was hashed, whatever the file grew to meanwhile (it cannot:
        // the lock is ours).
        use std::io::Seek as _;
        hashing
            .get_mut()
            .file
            .seek(io::SeekFrom::Start(offset))
            .fs("seek", &path)?;
        Ok(Download {
            sink: Sink::Partial(PartialBlob {
                inner: Some(hashing),
                path,
                blobs_dir: self.dir.clone(),
            }),
            offset,
        })
    }

    /// Opens and locks the partial file at `path`, or `None` when another writer holds it. The
    /// file locked must still be the one at `path`: a writer that finished renames it into the
    /// store (or removes it) before it unlocks, and appending to that would corrupt a blob.
    fn lock_partial(&self, path: &Path) -> Result<Option<File>, BlobError> {
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(file_mode_in(&self.dir))
                .open(path)
                .fs("create", path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(err)) => {
                    return Err(FsError::new("lock", path, err).into());
                }
            }
            let locked = file.metadata().fs("inspect", path)?;
            match fs::symlink_metadata(path) {
                Ok(now) if (now.dev(), now.ino()) == (locked.dev(), locked.ino()) => {
                    return Ok(Some(file));
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(FsError::new("inspect", path, err).into()),
            }
        }
    }

    /// Deletes a blob (a missing one is fine). Callers make sure nothing references it.
    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(fsync_dir(&self.dir)?),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(FsError::new("remove", &path, err).into()),
        }
    }

    /// Every stored blob with its size, sorted by digest. Files in `blobs/sha256/` whose names
    /// are not digests (another tool's junk) are skipped.
    pub fn list(&self) -> Result<Vec<BlobRef>, BlobError> {
        let mut blobs = Vec::new();
        for entry in fs::read_dir(&self.dir).fs("read directory", &self.dir)? {
            let entry = entry.fs("read directory", &self.dir)?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            let meta = entry.metadata().fs("inspect", &entry.path())?;
            if meta.is_file() {
                blobs.push(BlobRef {
                    digest,
                    size: meta.len(),
                });
            }
        }
        blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(blobs)
    }
}

/// Fails unless `actual`/`actual_size` are what was expected (when anything was).
fn check(
    expected: Option<&Digest>,
    expected_size: Option<u64>,
    actual: &Digest,
    actual_size: u64,
) -> Result<(), BlobError> {
    if let Some(expected) = expected.filter(|&e| e != actual) {
        return Err(BlobError::DigestMismatch {
            expected: expected.clone(),
            actual: actual.clone(),
        });
    }
    match expected_size {
        Some(size) if size != actual_size => Err(BlobError::SizeMismatch {
            digest: expected.unwrap_or(actual).clone(),
            expected: size,
            actual: actual_size,
        }),
        _ => Ok(()),
    }
}

/// A blob being written: see [`BlobStore::writer`].
pub struct BlobWriter {
    /// `None` once committed.
    inner: Option<Hashing<BufWriter<File>>>,
    /// The staged file.
    path: PathBuf,
    blobs_dir: PathBuf,
}

impl BlobWriter {
    /// Makes the blob visible under its digest. With `expected`, a different digest is an
    /// error and nothing becomes visible. A blob that already exists is not rewritten.
    pub fn commit(self, expected: Option<&Digest>) -> Result<BlobRef, BlobError> {
        self.finish(expected, None)
    }

    /// [`BlobWriter::commit`] that also requires `size` bytes.
    pub fn commit_exact(self, digest: &Digest, size: u64) -> Result<BlobRef, BlobError> {
        self.finish(Some(digest), Some(size))
    }

    fn finish(
        mut self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<BlobRef, BlobError> {
        let Some(hashing) = self.inner.take() else {
            unreachable!("a BlobWriter is committed at most once (commit takes self)");
        };
        let (digest, size, buffered) = hashing.finish();
        let file = buffered
            .into_inner()
            .map_err(|err| FsError::new("write", &self.path, err.into_error()))?;
        // The content must be on disk before the rename makes it visible (fsync(2)).
        file.sync_all().fs("sync", &self.path)?;
        drop(file);
        check(expected, expected_size, &digest, size)?;
        let target = self.blobs_dir.join(digest.hex());
        if target.is_file() {
            return Ok(BlobRef { digest, size });
        }
        fs::rename(&self.path, &target).fs("rename into place", &target)?;
        fsync_dir(&self.blobs_dir)?;
        Ok(BlobRef { digest, size })
    }
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Some(inner) => inner.write(buf),
            None => Err(io::Error::other("blob writer already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Some(inner) => inner.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Committed: the file was renamed away (or is a duplicate to delete). Not committed:
        // the staged file is abandoned. Either way nothing of it may stay in staging.
        self.inner = None;
        let _ = fs::remove_file(&self.path);
    }
}

/// A blob being downloaded: see [`BlobStore::download`]. Write the bytes from
/// [`Download::offset`] on; [`Download::restart`] when the source can only send them from the
/// start; [`Download::commit_exact`] at the end.
#[derive(Debug)]
pub struct Download {
    sink: Sink,
    /// Bytes already there when it was opened.
    offset: u64,
}

#[derive(Debug)]
enum Sink {
    /// Kept across processes, resumable.
    Partial(PartialBlob),
    /// Another writer holds the partial file: an ordinary staged blob.
    Staged(BlobWriter),
}

impl Download {
    /// How many bytes of the blob an earlier, interrupted download left (0 for a new one):
    /// the next byte to write is the one at this offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the bytes outlive this process (a later download resumes them).
    pub fn is_resumable(&self) -> bool {
        matches!(self.sink, Sink::Partial(_))
    }

    /// Drops what was written so far: the next byte written is the blob's first.
    pub fn restart(&mut self) -> Result<(), BlobError> {
        self.offset = 0;
        match &mut self.sink {
            Sink::Partial(partial) => partial.restart(),
            Sink::Staged(writer) => {
                let Some(path) = writer.path.parent().map(Path::to_path_buf) else {
                    unreachable!("a staged blob lives in the staging directory");
                };
                let staging = Staging::open(&path)?;
                let fresh = BlobStore {
                    dir: writer.blobs_dir.clone(),
                    staging,
                }
                .writer()?;
                *writer = fresh;
                Ok(())
            }
        }
    }

    /// Makes the blob visible once the whole content (the bytes an earlier download left and
    /// this one's) has `digest` and `size`. Content that does not is discarded, partial file
    /// and all, so the next download starts from 0.
    pub fn commit_exact(self, digest: &Digest, size: u64) -> Result<BlobRef, BlobError> {
        match self.sink {
            Sink::Partial(partial) => partial.commit_exact(digest, size),
            Sink::Staged(writer) => writer.commit_exact(digest, size),
        }
    }
}

impl Write for Download {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Partial(partial) => partial.write(buf),
            Sink::Staged(writer) => writer.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Partial(partial) => partial.flush(),
            Sink::Staged(writer) => writer.flush(),
        }
    }
}

/// The partial file's writer: while `replaying`, bytes already in the file are only hashed.
struct PartialFile {
    file: BufWriter<File>,
    replaying: bool,
}

impl Write for PartialFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.replaying {
            return Ok(buf.len());
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A resumable download's file (`tmp/sha256-<hex>.partial`), locked while this lives. Dropped
/// uncommitted, it keeps its bytes (flushed) for the next download.
struct PartialBlob {
    /// `None` once committed.
    inner: Option<Hashing<PartialFile>>,
    path: PathBuf,
    blobs_dir: PathBuf,
}

impl std::fmt::Debug for PartialBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialBlob")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PartialBlob {
    fn restart(&mut self) -> Result<(), BlobError> {
        use std::io::Seek as _;
        let Some(hashing) = self.inner.take() else {
            unreachable!("a PartialBlob is restarted only before it is committed");
        };
        let (_, _, mut partial) = hashing.finish();
        partial.file.flush().fs("write", &self.path)?;
        let file = partial.file.get_mut();
        file.set_len(0).fs("truncate", &self.path)?;
        file.seek(io::SeekFrom::Start(0)).fs("seek", &self.path)?;
        self.inner = Some(Hashing::new(partial));
        Ok(())
    }

    fn commit_exact(mut self, expected: &Digest, expected_size: u64) -> Result<BlobRef, BlobError> {
        let Some(hashing) = self.inner.take() else {
            unreachable!("a PartialBlob is committed at most once (commit takes self)");
        };
        let (digest, size, partial) = hashing.finish();
        let finished = partial
            .file
            .into_inner()
            .map_err(|err| FsError::new("write", &self.path, err.into_error()))
            .and_then(|file| file.sync_all().fs("sync", &self.path).map(|()| file));
        let file = finished?;
        if let Err(err) = check(Some(expected), Some(expected_size), &digest, size) {
            // Corrupt (a partial cut by a power loss, a source that changed): never resumed.
            let _ = fs::remove_file(&self.path);
            return Err(err);
        }
        let target = self.blobs_dir.join(digest.hex());
        if target.is_file() {
            let _ = fs::remove_file(&self.path);
            return Ok(BlobRef { digest, size });
        }
        // Renamed while still locked: no other writer can have appended to it.
        fs::rename(&self.path, &target).fs("rename into place", &target)?;
        drop(file);
        fsync_dir(&self.blobs_dir)?;
        Ok(BlobRef { digest, size })
    }
}

impl Write for PartialBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Some(inner) => inner.write(buf),
            None => Err(io::Error::other("partial blob already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Some(inner) => inner.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for PartialBlob {
    fn drop(&mut self) {
        // Uncommitted: what was received stays for the next download (the lock goes with the
        // file). A failed flush leaves a shorter prefix, which is still a prefix. Nothing
        // received (the source refused): no file is left behind.
        if let Some(mut inner) = self.inner.take() {
            if inner.bytes() == 0 {
                let _ = fs::remove_file(&self.path);
            } else {
                let _ = inner.flush();
            }
        }
    }
}

/// A verifying blob reader: see [`BlobStore::reader`].
pub struct BlobReader {
    /// `None` once the end was reached and the content checked.
    inner: Option<Hashing<File>>,
    expected: Digest,
    expected_size: Option<u64>,
    /// The check failed: every later read fails too, so no caller mistakes it for a clean end.
    failed: bool,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(inner) = &mut self.inner else {
            if self.failed {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("blob {} failed verification", self.expected),
                ));
            }
            return Ok(0);
        };
        let read = inner.read(buf)?;
        let so_far = Hashing::bytes(inner);
        if let Some(size) = self.expected_size.filter(|&size| so_far > size) {
            return Err(invalid(BlobError::SizeMismatch {
                digest: self.expected.clone(),
                expected: size,
                actual: so_far,
            }));
        }
        if read == 0
            && !buf.is_empty()
            && let Some(hashing) = self.inner.take()
        {
            let (actual, bytes, _) = hashing.finish();
            let checked = check(Some(&self.expected), self.expected_size, &actual, bytes);
            self.failed = checked.is_err();
            checked.map_err(invalid)?;
        }
        Ok(read)
    }
}

fn invalid(err: BlobError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        (dir, blobs)
    }

    fn staged(blobs: &BlobStore) -> usize {
        fs::read_dir(blobs.staging().dir()).unwrap().count()
    }

    #[test]
    fn write_then_read_round_trips_under_the_digest_name() {
        let (dir, blobs) = store();
        let blob = blobs.write(b"hello").unwrap();
        assert_eq!(blob.digest, Digest::of(b"hello"));
        assert_eq!(blob.size, 5);
        assert_eq!(
            blobs.path(&blob.digest),
            dir.path().join("blobs/sha256").join(blob.digest.hex())
        );
        assert!(blobs.contains(&blob.digest));
        assert_eq!(blobs.read(&blob.digest).unwrap(), b"hello");
        assert_eq!(blobs.read_sized(&blob.digest, 5).unwrap(), b"hello");
        assert_eq!(blobs.size(&blob.digest).unwrap(), 5);
        assert_eq!(staged(&blobs), 0);
    }

    #[test]
    fn an_existing_blob_is_not_rewritten() {
        let (_dir, blobs) = store();
        let first = blobs.write(b"same").unwrap();
        let inode = fs::metadata(blobs.path(&first.digest)).unwrap().ino();
        let mut writer = blobs.writer().unwrap();
        writer.write_all(b"same").unwrap();
        assert_eq!(writer.commit(None).unwrap(), first);
        blobs.write(b"same").unwrap();
        assert_eq!(
            fs::metadata(blobs.path(&first.digest)).unwrap().ino(),
            inode
        );
        assert_eq!(staged(&blobs), 0);
    }

    #[test]
    fn a_wrong_expected_digest_or_size_makes_nothing_visible() {
        let (_dir, blobs) = store();
        let wrong = Digest::of(b"something else");
        let mut writer = blobs.writer().unwrap();
        writer.write_all(b"content").unwrap();
        let err = writer.commit(Some(&wrong)).unwrap_err();
        assert!(
            matches!(&err, BlobError::DigestMismatch { expected, actual }
                if *expected == wrong && *actual == Digest::of(b"content")),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains(&wrong.to_string()), "{message}");
        assert!(!blobs.contains(&Digest::of(b"content")));
        assert!(!blobs.contains(&wrong));

        let right = Digest::of(b"content");
        let mut writer = blobs.writer().unwrap();
        writer.write_all(b"content").unwrap();
        let err = writer.commit_exact(&right, 8).unwrap_err();
        assert!(
            matches!(
                err,
                BlobError::SizeMismatch {
                    expected: 8,
                    actual: 7,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!blobs.contains(&right));

        let err = blobs
            .import(&mut &b"content"[..], Some(&wrong), None)
            .unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }));
        assert!(blobs.list().unwrap().is_empty());
        assert_eq!(staged(&blobs), 0);
    }

    #[test]
    fn an_uncommitted_writer_leaves_nothing() {
        let (_dir, blobs) = store();
        let mut writer = blobs.writer().unwrap();
        writer.write_all(b"partial").unwrap();
        assert_eq!(staged(&blobs), 1);
        drop(writer);
        assert_eq!(staged(&blobs), 0);
        assert!(blobs.list().unwrap().is_empty());
    }

    #[test]
    fn a_corrupted_blob_is_an_error_not_data() {
        let (_dir, blobs) = store();
        let blob = blobs.write(b"{\"good\":true}").unwrap();
        fs::write(blobs.path(&blob.digest), b"{\"good\":false}").unwrap();
        let err = blobs.read(&blob.digest).unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");

        let mut reader = blobs.reader(&blob.digest, None).unwrap();
        let mut sink = Vec::new();
        let err = reader.read_to_end(&mut sink).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("does not match its digest"),
            "{err}"
        );
        assert_eq!(
            reader.read(&mut [0; 8]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn the_verifying_reader_passes_good_content_and_checks_the_size() {
        let (_dir, blobs) = store();
        let blob = blobs.write(&[7u8; 10_000]).unwrap();
        let mut out = Vec::new();
        blobs
            .reader(&blob.digest, Some(10_000))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), 10_000);
        let err = blobs
            .reader(&blob.digest, Some(5))
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("but 5 were expected"), "{err}");
    }

    #[test]
    fn documents_are_size_capped() {
        let (_dir, blobs) = store();
        let big = vec![b' '; usize::try_from(MAX_DOCUMENT_SIZE).unwrap() + 1];
        let blob = blobs.write(&big).unwrap();
        let err = blobs.read(&blob.digest).unwrap_err();
        assert!(matches!(err, BlobError::TooLarge { .. }), "{err}");
        let small = blobs.write(b"{}").unwrap();
        let err = blobs
            .read_sized(&small.digest, MAX_DOCUMENT_SIZE * 2)
            .unwrap_err();
        assert!(matches!(err, BlobError::TooLarge { .. }), "{err}");
        assert!(matches!(
            blobs.read(&Digest::of(b"absent")),
            Err(BlobError::NotFound(_))
        ));
    }

    #[test]
    fn list_skips_junk_and_remove_deletes() {
        let (dir, blobs) = store();
        let a = blobs.write(b"a").unwrap();
        let b = blobs.write(b"bb").unwrap();
        fs::write(dir.path().join("blobs/sha256/not-a-digest"), b"x").unwrap();
        let mut want = vec![a.clone(), b.clone()];
        want.sort_by(|x, y| x.digest.cmp(&y.digest));
        assert_eq!(blobs.list().unwrap(), want);
        blobs.remove(&a.digest).unwrap();
        blobs.remove(&a.digest).unwrap();
        assert_eq!(blobs.list().unwrap(), [b]);
    }

    #[test]
    fn a_dropped_download_is_resumed_by_the_next_and_verified_whole() {
        let (_dir, blobs) = store();
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&content);
        let mut first = blobs.download(&digest).unwrap();
        assert!(first.is_resumable());
        assert_eq!(first.offset(), 0);
        first.write_all(&content[..40_000]).unwrap();
        // Meanwhile another writer cannot resume it: it gets an ordinary download from 0.
        let other = blobs.download(&digest).unwrap();
        assert!(!other.is_resumable());
        assert_eq!(other.offset(), 0);
        drop(other);
        drop(first);
        let partial = blobs
            .staging()
            .partial_path(&format!("sha256-{}", digest.hex()));
        assert_eq!(fs::metadata(&partial).unwrap().len(), 40_000);

        let mut second = blobs.download(&digest).unwrap();
        assert_eq!(second.offset(), 40_000);
        second.write_all(&content[40_000..]).unwrap();
        let blob = second.commit_exact(&digest, content.len() as u64).unwrap();
        assert_eq!(blob.digest, digest);
        assert_eq!(fs::read(blobs.path(&digest)).unwrap(), content);
        assert!(!partial.exists());
        assert_eq!(staged(&blobs), 0);
    }

    #[test]
    fn a_corrupt_partial_fails_the_digest_and_is_discarded() {
        let (_dir, blobs) = store();
        let content = b"the real content of the blob".repeat(100);
        let digest = Digest::of(&content);
        let partial = blobs
            .staging()
            .partial_path(&format!("sha256-{}", digest.hex()));
        fs::write(&partial, b"garbage left by a power loss").unwrap();
        let mut download = blobs.download(&digest).unwrap();
        assert_eq!(download.offset(), 28);
        download.write_all(&content[28..]).unwrap();
        let err = download
            .commit_exact(&digest, content.len() as u64)
            .unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
        assert!(!partial.exists());
        assert!(!blobs.contains(&digest));

        // Restarted: the whole content from 0, whatever was kept.
        fs::write(&partial, b"more garbage").unwrap();
        let mut download = blobs.download(&digest).unwrap();
        download.restart().unwrap();
        assert_eq!(download.offset(), 0);
        download.write_all(&content).unwrap();
        download
            .commit_exact(&digest, content.len() as u64)
            .unwrap();
        assert_eq!(fs::read(blobs.path(&digest)).unwrap(), content);
        assert_eq!(staged(&blobs), 0);
    }

    #[test]
    fn a_download_that_received_nothing_leaves_nothing() {
        let (_dir, blobs) = store();
        drop(blobs.download(&Digest::of(b"never sent")).unwrap());
        assert_eq!(staged(&blobs), 0);
    }

    #[test]
    fn descriptors_carry_digest_size_and_media_type() {
        let blob = BlobRef {
            digest: Digest::of(b"x"),
            size: 1,
        };
        let descriptor = blob.descriptor(MediaType::ImageLayer);
        assert_eq!(descriptor.digest().to_string(), blob.digest.to_string());
        assert_eq!(descriptor.size(), 1);
        assert_eq!(descriptor.media_type(), &MediaType::ImageLayer);
    }
}
