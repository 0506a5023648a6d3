//! A build context that is a tar stream: on standard input (`kiln build - < context.tar`), or
//! downloaded from a URL ([`super::http_context`]). Both are unpacked here, into a private
//! directory, and read alike.
//!
//! On standard input, as docker does: the CLI's `DetectArchiveReader` peeks at the first 1024
//! bytes, and the stream is a context when they start with a compression's magic bytes (gzip,
//! bzip2, xz, zstd: `archive.DetectCompression`) or hold a valid tar header (`IsArchive`);
//! anything else is a bare Dockerfile, built without a context.
//!
//! buildx sends a context tar on standard input to BuildKit as an http context (its upload
//! provider serves the stream to the build, `FrontendAttrs["context"] = up.Add(rc)`), so
//! BuildKit reads it exactly as a downloaded tarball: its dockerui copies the archive with
//! `AttemptUnpack` (docker's `Untar`) into an empty state. What follows from that holds for
//! both ([`crate::frontend::context::ContextKind::Unpacked`]):
//!
//! - No `.dockerignore` applies (`MainContext` takes a remote context as it is).
//! - Every entry keeps the numeric uid and gid of its tar header (never its user or group
//!   name), and `COPY`/`ADD` without `--chown` copy them as they are, as from another stage;
//!   `--chown` still overrides them. Directories the tar does not hold but its entries need are
//!   made 0755 and root's. A hardlink entry's owner, mode and times go to the inode it shares
//!   (the last entry naming it decides). Checked against buildctl v0.32 (an entry owned
//!   1234:4321 is 1234:4321 after `COPY . /x`; `COPY --chown=7:8` gives 7:8 to all).
//! - `SOURCE_DATE_EPOCH=context` is the newest modification time of the archive's regular
//!   files (BuildKit's `archiveMaxTimeFromHTTPArchive`), unless a download has a
//!   `Last-Modified`.
//! - The Dockerfile is read from inside the context (`Dockerfile`, else `dockerfile`, or what
//!   `-f` names), through its symlinks but never out of it.
//!
//! BuildKit unpacks with docker's `Untar`: a name that climbs out of the root (`../x`) fails,
//! absolute names are taken relative to the root, links are resolved inside the root. kiln
//! unpacks with the layer applier ([`crate::layer::apply`]): every entry is placed through
//! openat2 RESOLVE_IN_ROOT and never follows the last component, so nothing outside the private
//! directory is created or followed, and a hardlink can only name a file inside it. The stream
//! is bounded in bytes (after decompression) and entries ([`crate::layer::apply::MAX_ENTRIES`]).
//!
//! Divergences: character and block devices are skipped (BuildKit's unpack, as root, creates
//! them; a build context has no use for a host device node); a `.wh.NAME` entry deletes NAME
//! instead of becoming a file.
//!
//! The directory is in the store's staging area, so a killed build's copy is removed by the
//! next `Staging::remove_stale`; [`UnpackedContext`] removes it when dropped. The context is
//! unpacked one level down, in a directory only root may enter (0700): its files keep a tar's
//! owners and setuid bits, which no other user of the machine should reach while it exists.

use crate::builder::steps::copy::extract::{decompressed, is_compressed};
use crate::layer::{ApplyOptions, LayerError, Whiteouts, apply_layer};
use crate::sys::atomic::remove_tree;
use crate::sys::{FsError, Staging};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};

/// How many bytes docker's CLI peeks at to tell a context tar from a Dockerfile (two tar
/// blocks).
pub const PEEK_BYTES: usize = 1024;

/// The most uncompressed bytes a context tar may have.
pub const MAX_CONTEXT_BYTES: u64 = 16 << 30;

/// The largest Dockerfile read from an unpacked context: the one cap of every Dockerfile.
pub use crate::frontend::limits::MAX_DOCKERFILE_BYTES;

/// Why a context tar could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot create the directory for the context")]
    Create(#[source] FsError),
    #[error("cannot decompress the context")]
    Decompress(#[source] io::Error),
    #[error("cannot unpack the context tar")]
    Unpack(#[source] LayerError),
}

/// Why the Dockerfile could not be read from an unpacked context.
#[derive(Debug, thiserror::Error)]
pub enum ContextDockerfileError {
    #[error("cannot read the Dockerfile")]
    Read(#[source] FsError),
    #[error("the Dockerfile {name} is larger than {limit} bytes")]
    TooLarge { name: String, limit: u64 },
    #[error("the Dockerfile {name} leads outside the build context")]
    Outside { name: String },
}

/// Whether `head` (the first [`PEEK_BYTES`] of standard input, or fewer when the input is
/// shorter) starts a context archive rather than a Dockerfile.
pub fn is_context_archive(head: &[u8]) -> bool {
    if is_compressed(head) {
        return true;
    }
    let mut archive = tar::Archive::new(head);
    let Ok(mut entries) = archive.entries() else {
        return false;
    };
    matches!(entries.next(), Some(Ok(_)))
}

/// A context in a private directory of the store's staging area (unpacked from a tar, or made
/// by the caller), removed on drop.
#[derive(Debug)]
pub struct UnpackedContext {
    /// The private directory (0700), in the staging area.
    private: PathBuf,
    /// The context, inside it.
    dir: PathBuf,
}

impl UnpackedContext {
    /// Unpacks the (possibly compressed) context tar `reader` into a fresh directory under
    /// `staging`; at most `max_bytes` uncompressed bytes. Entries keep their owners when kiln
    /// runs as root (it must to build; a dry run need not); device nodes are never created.
    pub fn unpack(
        reader: impl Read + 'static,
        staging: &Staging,
        max_bytes: u64,
    ) -> Result<UnpackedContext, UnpackError> {
        // The directory is ours: dropping `context` removes it, on errors too.
        let context = UnpackedContext::create(staging)?;
        let stream = decompressed(reader).map_err(UnpackError::Decompress)?;
        let options = ApplyOptions {
            whiteouts: Whiteouts::Literal,
            max_bytes,
            same_owner: crate::sys::privilege::current().can_chown(),
            device_nodes: false,
            user_xattr: false,
        };
        apply_layer(stream, &context.dir, &options).map_err(UnpackError::Unpack)?;
        Ok(context)
    }

    /// A fresh empty context directory under `staging`, removed on drop.
    pub fn create(staging: &Staging) -> Result<UnpackedContext, UnpackError> {
        let private = staging.new_path("context");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(|err| UnpackError::Create(FsError::new("create directory", &private, err)))?;
        let context = UnpackedContext {
            dir: private.join("root"),
            private,
        };
        std::fs::create_dir(&context.dir).map_err(|err| {
            UnpackError::Create(FsError::new("create directory", &context.dir, err))
        })?;
        Ok(context)
    }

    /// The context directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The context's Dockerfile when none is named: `Dockerfile`, else `dockerfile` (BuildKit's
    /// fallback for the default name); its name and bytes.
    pub fn default_dockerfile(&self) -> Result<(String, Vec<u8>), ContextDockerfileError> {
        match self.dockerfile(Path::new("Dockerfile")) {
            Ok(bytes) => Ok(("Dockerfile".to_string(), bytes)),
            Err(err) => match self.dockerfile(Path::new("dockerfile")) {
                Ok(bytes) => Ok(("dockerfile".to_string(), bytes)),
                Err(_) => Err(err),
            },
        }
    }

    /// The Dockerfile at `relative` inside the context (a symlink may lead anywhere inside
    /// the context, not out of it), at most [`MAX_DOCKERFILE_BYTES`].
    pub fn dockerfile(&self, relative: &Path) -> Result<Vec<u8>, ContextDockerfileError> {
        let name = relative.display().to_string();
        let outside = || ContextDockerfileError::Outside { name: name.clone() };
        if relative.is_absolute() || relative.components().any(|c| c == Component::ParentDir) {
            return Err(outside());
        }
        let read = |action, path: &Path, err| {
            ContextDockerfileError::Read(FsError::new(action, path, err))
        };
        let root = self
            .dir
            .canonicalize()
            .map_err(|e| read("open", &self.dir, e))?;
        let path = root.join(relative);
        let real = path.canonicalize().map_err(|e| read("read", &path, e))?;
        if !real.starts_with(&root) {
            return Err(outside());
        }
        read_bounded(&real, &name)
    }

    /// The newest modification time of the context's regular files (never following a link),
    /// BuildKit's time of an archive context for `SOURCE_DATE_EPOCH=context`.
    pub fn newest_file_time(&self) -> Option<i64> {
        let mut newest: Option<i64> = None;
        let mut pending: Vec<PathBuf> = vec![self.dir.clone()];
        while let Some(path) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                // `DirEntry::metadata` does not follow symlinks.
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if meta.is_dir() {
                    pending.push(entry.path());
                } else if meta.is_file() {
                    newest = Some(newest.map_or(meta.mtime(), |n| n.max(meta.mtime())));
                }
            }
        }
        newest
    }
}

/// The file at `path`, at most [`MAX_DOCKERFILE_BYTES`] (`name` says which in the error).
pub(crate) fn read_bounded(path: &Path, name: &str) -> Result<Vec<u8>, ContextDockerfileError> {
    let read = |err| ContextDockerfileError::Read(FsError::new("read", path, err));
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCKERFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_DOCKERFILE_BYTES {
        return Err(ContextDockerfileError::TooLarge {
            name: name.to_string(),
            limit: MAX_DOCKERFILE_BYTES,
        });
    }
    Ok(bytes)
}

impl Drop for UnpackedContext {
    fn drop(&mut self) {
        // Best effort: a leftover is stale staging, removed by the next clean-up.
        let _ = remove_tree(&self.private);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, *data)
                .expect("append");
        }
        builder.into_inner().expect("tar")
    }

    #[test]
    fn a_tar_or_a_compressed_stream_is_a_context_and_a_dockerfile_is_not() {
        let tar = tar_of(&[("Dockerfile", b"FROM scratch\n")]);
        assert!(is_context_archive(&tar[..PEEK_BYTES.min(tar.len())]));
        assert!(is_context_archive(&[0x1f, 0x8b, 8, 0]));
        assert!(is_context_archive(b"BZh91AY"));
        assert!(is_context_archive(&[0x28, 0xb5, 0x2f, 0xfd]));
        assert!(!is_context_archive(b"FROM scratch\nCOPY . /\n"));
        assert!(!is_context_archive(b""));
    }

    #[test]
    fn unpacks_into_a_private_directory_of_staging_and_removes_it_on_drop() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let staging = Staging::open(tmp.path()).expect("staging");
        let tar = tar_of(&[("Dockerfile", b"FROM scratch\n"), ("a/b.txt", b"hi")]);
        let context = UnpackedContext::unpack(io::Cursor::new(tar), &staging, MAX_CONTEXT_BYTES)
            .expect("unpack");
        let dir = context.dir().to_path_buf();
        assert_eq!(std::fs::read(dir.join("a/b.txt")).expect("read"), b"hi");
        let private = dir.parent().expect("private directory");
        let mode = std::fs::metadata(private)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(context);
        assert_eq!(std::fs::read_dir(staging.dir()).expect("dir").count(), 0);
    }

    #[test]
    fn the_dockerfile_is_read_inside_the_context_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let staging = Staging::open(tmp.path()).expect("staging");
        std::fs::write(tmp.path().join("host"), "FROM host\n").expect("write");
        let context = UnpackedContext::create(&staging).expect("create");
        std::fs::write(context.dir().join("dockerfile"), "FROM lower\n").expect("write");
        std::os::unix::fs::symlink(tmp.path().join("host"), context.dir().join("out"))
            .expect("symlink");
        assert_eq!(
            context.default_dockerfile().expect("fallback"),
            ("dockerfile".to_string(), b"FROM lower\n".to_vec())
        );
        for outside in ["out", "../host", "/etc/passwd"] {
            let err = context.dockerfile(Path::new(outside)).expect_err(outside);
            assert!(
                matches!(err, ContextDockerfileError::Outside { .. }),
                "{outside}: {err:?}"
            );
        }
    }

    #[test]
    fn a_name_climbing_out_fails_and_leaves_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let staging = Staging::open(&tmp.path().join("staging")).expect("staging");
        let mut raw = tar_of(&[("xx/evil", b"x")]);
        // Rewrite the name in place (the tar crate refuses to write `..`).
        raw[..7].copy_from_slice(b"../evil");
        raw[7] = 0;
        let mut header = tar::Header::from_byte_slice(&raw[..512]).clone();
        header.set_cksum();
        raw[..512].copy_from_slice(header.as_bytes());
        let err = UnpackedContext::unpack(io::Cursor::new(raw), &staging, MAX_CONTEXT_BYTES)
            .expect_err("climbing name");
        assert!(matches!(err, UnpackError::Unpack(_)), "{err:?}");
        assert!(!tmp.path().join("evil").exists());
        assert_eq!(std::fs::read_dir(staging.dir()).expect("dir").count(), 0);
    }
}
