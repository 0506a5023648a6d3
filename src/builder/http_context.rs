//! A build context downloaded from an http(s) URL (`kiln build https://host/ctx.tar.gz`), as
//! BuildKit v0.32's dockerui makes it (`DetectHTTPContext`, `initContext`):
//!
//! - A URL whose path ends in `.git` is a git repository, not a download (`DetectGitContext`
//!   comes first); [`is_http_context`] leaves it out.
//! - The body is downloaded like an `ADD <url>` ([`crate::fetch`]: bounded, retried, asked with
//!   `If-None-Match` when the store has it, authenticated with the `HTTP_AUTH_*_<host>` secrets).
//! - When its first bytes are an archive's (gzip, bzip2, xz or a tar header, as BuildKit's
//!   `isArchive`; kiln also takes zstd, which docker's unpack reads and BuildKit would refuse as
//!   a Dockerfile), it is unpacked and is the context, its Dockerfile inside it (`-f` names
//!   another one inside it). It is unpacked as a stdin context is
//!   ([`super::stdin_context::StdinContext`]): confined to a private directory of the store's
//!   staging area, nothing written or followed outside it, bounded in bytes and entries.
//! - Otherwise the body is the Dockerfile, and the context is what BuildKit's http source gives:
//!   a directory holding the body as the file `context` (mode 0600, mtime the body's
//!   `Last-Modified`), so `COPY . /x/` copies `/x/context` (checked against buildctl v0.32).
//! - No `.dockerignore` applies: BuildKit's `MainContext` returns a remote context as it is
//!   (buildctl v0.32 copies a tar's `.dockerignore`d files).
//!
//! Divergence: BuildKit keeps the owners the tar gives its entries (its unpack runs as root);
//! kiln gives a downloaded context's files root's ownership, as it gives every context's.

use super::stdin_context::{
    MAX_CONTEXT_BYTES, PEEK_BYTES, StdinContext, StdinContextError, is_context_archive,
};
use super::steps::mounts::Session;
use crate::fetch::{FetchError, Fetched, Fetcher, authorization, parse_url};
use crate::store::Store;
use crate::sys::FsError;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The name BuildKit gives the downloaded body inside the context (`llb.Filename("context")`).
pub const CONTEXT_FILE: &str = "context";

/// The largest Dockerfile read from a downloaded context.
pub const MAX_DOCKERFILE_BYTES: u64 = 16 << 20;

/// Whether a context argument is an http(s) URL to download rather than a directory or a git
/// repository (BuildKit's `^https?://`, after its git detection: a path ending in `.git`).
pub fn is_http_context(value: &str) -> bool {
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return false;
    }
    match reqwest::Url::parse(value) {
        Ok(url) => !url.path().ends_with(".git"),
        // Not a URL at all: the download says why.
        Err(_) => true,
    }
}

/// Why a URL could not become the build context.
#[derive(Debug, thiserror::Error)]
pub enum HttpContextError {
    #[error("cannot download the build context {url}")]
    Fetch {
        url: String,
        #[source]
        source: Box<FetchError>,
    },
    #[error("cannot lease the store for the download")]
    Lease(#[source] Box<crate::store::StoreError>),
    #[error("cannot read the downloaded build context")]
    Read(#[source] FsError),
    #[error("cannot unpack the build context downloaded from {url}")]
    Unpack {
        url: String,
        #[source]
        source: StdinContextError,
    },
    #[error("cannot place the downloaded Dockerfile in the build context")]
    Place(#[source] FsError),
    #[error("the Dockerfile {name} is larger than {limit} bytes")]
    DockerfileTooLarge { name: String, limit: u64 },
    #[error("the Dockerfile {name} leads outside the downloaded build context")]
    DockerfileOutside { name: String },
}

/// A build context downloaded from a URL, in a private directory removed when it drops.
#[derive(Debug)]
pub struct HttpContext {
    dir: StdinContext,
    /// Whether the body was an archive (else it is the Dockerfile, in the file `context`).
    archive: bool,
    fetched: Fetched,
    epoch: Option<i64>,
}

impl HttpContext {
    /// Downloads `url` into the store and makes it a context (see the module documentation),
    /// with the `HTTP_AUTH_*` secrets of `session`.
    pub fn fetch(
        store: &Store,
        url: &str,
        session: &dyn Session,
    ) -> Result<HttpContext, HttpContextError> {
        let fetch_error = |source| HttpContextError::Fetch {
            url: url.to_string(),
            source: Box::new(source),
        };
        let parsed = parse_url(url).map_err(fetch_error)?;
        // No prune collects the download before it is unpacked (nothing names its blob).
        let _lease = store
            .lease()
            .map_err(|e| HttpContextError::Lease(Box::new(e)))?;
        let fetcher = Fetcher::in_store(store).map_err(fetch_error)?;
        let auth = authorization(&parsed, |id| session.secret(id)).map_err(fetch_error)?;
        let fetched = fetcher
            .fetch(&parsed, None, auth.as_ref())
            .map_err(fetch_error)?;
        let blob = store.blobs().path(&fetched.digest);
        let read = |action, err| HttpContextError::Read(FsError::new(action, &blob, err));
        let mut head = Vec::with_capacity(PEEK_BYTES);
        std::fs::File::open(&blob)
            .and_then(|file| file.take(PEEK_BYTES as u64).read_to_end(&mut head))
            .map_err(|err| read("read", err))?;
        if is_context_archive(&head) {
            let file = std::fs::File::open(&blob).map_err(|err| read("open", err))?;
            let dir = StdinContext::unpack(file, store.staging(), MAX_CONTEXT_BYTES).map_err(
                |source| HttpContextError::Unpack {
                    url: url.to_string(),
                    source,
                },
            )?;
            // `SOURCE_DATE_EPOCH=context`: Last-Modified, else the newest file of the archive
            // (BuildKit's `archiveMaxTimeFromHTTPArchive`, which reads regular files only).
            let epoch = last_modified(&fetched).or_else(|| newest_file(dir.dir()));
            return Ok(HttpContext {
                dir,
                archive: true,
                fetched,
                epoch,
            });
        }
        let dir =
            StdinContext::create(store.staging()).map_err(|source| HttpContextError::Unpack {
                url: url.to_string(),
                source,
            })?;
        fetcher
            .place(&fetched, &dir.dir().join(CONTEXT_FILE))
            .map_err(HttpContextError::Place)?;
        let epoch = last_modified(&fetched);
        Ok(HttpContext {
            dir,
            archive: false,
            fetched,
            epoch,
        })
    }

    /// The context directory.
    pub fn dir(&self) -> &Path {
        self.dir.dir()
    }

    /// Whether the body was an archive (its Dockerfile is inside it); otherwise the body is the
    /// Dockerfile ([`HttpContext::body_dockerfile`]).
    pub fn is_archive(&self) -> bool {
        self.archive
    }

    /// What the URL gave.
    pub fn fetched(&self) -> &Fetched {
        &self.fetched
    }

    /// The context's time for `SOURCE_DATE_EPOCH=context` (BuildKit's
    /// `ResolveMainContextSourceDateEpoch`): the body's `Last-Modified`, else for an archive
    /// the newest modification time of its regular files.
    pub fn epoch(&self) -> Option<i64> {
        self.epoch
    }

    /// The body as the Dockerfile (a body that is not an archive).
    pub fn body_dockerfile(&self) -> Result<Vec<u8>, HttpContextError> {
        read_bounded(&self.dir().join(CONTEXT_FILE), CONTEXT_FILE)
    }

    /// The Dockerfile at `relative` inside the unpacked archive (a symlink may lead anywhere
    /// inside the context, not out of it), at most [`MAX_DOCKERFILE_BYTES`].
    pub fn dockerfile(&self, relative: &Path) -> Result<Vec<u8>, HttpContextError> {
        let name = relative.display().to_string();
        let outside = || HttpContextError::DockerfileOutside { name: name.clone() };
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(outside());
        }
        let root = self
            .dir()
            .canonicalize()
            .map_err(|e| HttpContextError::Read(FsError::new("open", self.dir(), e)))?;
        let path = root.join(relative);
        let real = path
            .canonicalize()
            .map_err(|e| HttpContextError::Read(FsError::new("read", &path, e)))?;
        if !real.starts_with(&root) {
            return Err(outside());
        }
        read_bounded(&real, &name)
    }
}

/// The file at `path`, at most [`MAX_DOCKERFILE_BYTES`] (`name` says which in the error).
fn read_bounded(path: &Path, name: &str) -> Result<Vec<u8>, HttpContextError> {
    let read = |err| HttpContextError::Read(FsError::new("read", path, err));
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCKERFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_DOCKERFILE_BYTES {
        return Err(HttpContextError::DockerfileTooLarge {
            name: name.to_string(),
            limit: MAX_DOCKERFILE_BYTES,
        });
    }
    Ok(bytes)
}

/// The body's `Last-Modified` in Unix seconds, when it has a valid one.
fn last_modified(fetched: &Fetched) -> Option<i64> {
    fetched
        .last_modified
        .as_deref()
        .and_then(crate::oci::timestamp::parse_http_date)
}

/// The newest modification time of the regular files under `dir` (never following a link).
fn newest_file(dir: &Path) -> Option<i64> {
    let mut newest: Option<i64> = None;
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_are_not_downloads() {
        assert!(is_http_context("https://example.com/ctx.tar.gz"));
        assert!(is_http_context("http://example.com/Dockerfile"));
        assert!(!is_http_context("https://example.com/repo.git"));
        assert!(!is_http_context("https://example.com/repo.git#main:sub"));
        assert!(!is_http_context("https://example.com/repo.git?ref=main"));
        assert!(!is_http_context("./dir"));
        assert!(!is_http_context("git@github.com:o/r.git"));
    }
}
