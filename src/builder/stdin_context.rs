//! A build context sent as a tar stream on standard input (`kiln build - < context.tar`), as
//! docker does: the CLI's `DetectArchiveReader` peeks at the first 1024 bytes, and the stream
//! is a context when they start with a compression's magic bytes (gzip, bzip2, xz, zstd:
//! `archive.DetectCompression`) or hold a valid tar header (`IsArchive`); anything else is a
//! bare Dockerfile, built without a context.
//!
//! BuildKit unpacks such a context with its copy unpack (docker's `Untar`): a name that climbs
//! out of the root (`../x`) fails, absolute names are taken relative to the root, links are
//! resolved inside the root. kiln unpacks it with the layer applier ([`crate::layer::apply`]):
//! every entry is placed through openat2 RESOLVE_IN_ROOT and never follows the last
//! component, so nothing outside the private directory is created or followed, and a hardlink
//! can only name a file inside it. The stream is bounded in bytes (after decompression) and
//! entries ([`crate::layer::apply::MAX_ENTRIES`]). Owners and device nodes are not kept (COPY
//! gives context files root's ownership anyway). One divergence: a `.wh.NAME` entry deletes
//! NAME instead of becoming a file.
//!
//! The directory is in the store's staging area, so a killed build's copy is removed by the
//! next `Staging::remove_stale`; [`StdinContext`] removes it when dropped.

use crate::builder::steps::copy::extract::{decompressed, is_compressed};
use crate::layer::{ApplyOptions, LayerError, Whiteouts, apply_layer};
use crate::sys::atomic::remove_tree;
use crate::sys::{FsError, Staging};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// How many bytes docker's CLI peeks at to tell a context tar from a Dockerfile (two tar
/// blocks).
pub const PEEK_BYTES: usize = 1024;

/// The most uncompressed bytes a stdin context may have.
pub const MAX_CONTEXT_BYTES: u64 = 16 << 30;

/// Why a stdin context could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum StdinContextError {
    #[error("cannot create the directory for the context")]
    Create(#[source] FsError),
    #[error("cannot decompress the context")]
    Decompress(#[source] io::Error),
    #[error("cannot unpack the context tar")]
    Unpack(#[source] LayerError),
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

/// A context unpacked from a tar stream into a private directory, removed on drop.
#[derive(Debug)]
pub struct StdinContext {
    dir: PathBuf,
}

impl StdinContext {
    /// Unpacks the (possibly compressed) context tar `reader` into a fresh directory under
    /// `staging`; at most `max_bytes` uncompressed bytes.
    pub fn unpack(
        reader: impl Read + 'static,
        staging: &Staging,
        max_bytes: u64,
    ) -> Result<StdinContext, StdinContextError> {
        // The directory is ours: dropping `context` removes it, on errors too.
        let context = StdinContext::create(staging)?;
        let stream = decompressed(reader).map_err(StdinContextError::Decompress)?;
        let options = ApplyOptions {
            whiteouts: Whiteouts::Apply,
            max_bytes,
            same_owner: false,
            device_nodes: false,
            user_xattr: false,
        };
        apply_layer(stream, &context.dir, &options).map_err(StdinContextError::Unpack)?;
        Ok(context)
    }

    /// A fresh empty context directory under `staging`, removed on drop.
    pub fn create(staging: &Staging) -> Result<StdinContext, StdinContextError> {
        let dir = staging.new_path("context");
        std::fs::create_dir(&dir).map_err(|err| {
            StdinContextError::Create(FsError::new("create directory", &dir, err))
        })?;
        Ok(StdinContext { dir })
    }

    /// The unpacked context directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for StdinContext {
    fn drop(&mut self) {
        // Best effort: a leftover is stale staging, removed by the next clean-up.
        let _ = remove_tree(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unpacks_into_staging_and_removes_on_drop() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let staging = Staging::open(tmp.path()).expect("staging");
        let tar = tar_of(&[("Dockerfile", b"FROM scratch\n"), ("a/b.txt", b"hi")]);
        let context = StdinContext::unpack(io::Cursor::new(tar), &staging, MAX_CONTEXT_BYTES)
            .expect("unpack");
        let dir = context.dir().to_path_buf();
        assert_eq!(std::fs::read(dir.join("a/b.txt")).expect("read"), b"hi");
        drop(context);
        assert!(!dir.exists());
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
        let err = StdinContext::unpack(io::Cursor::new(raw), &staging, MAX_CONTEXT_BYTES)
            .expect_err("climbing name");
        assert!(matches!(err, StdinContextError::Unpack(_)), "{err:?}");
        assert!(!tmp.path().join("evil").exists());
        assert_eq!(std::fs::read_dir(staging.dir()).expect("dir").count(), 0);
    }
}
