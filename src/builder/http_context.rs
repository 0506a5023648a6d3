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
//!   another one inside it). It is unpacked and read as a tar on standard input is
//!   ([`super::stdin_context`]: no `.dockerignore`, owners from the tar, confined to a private
//!   directory of the store's staging area, bounded in bytes and entries).
//! - Otherwise the body is the Dockerfile, and the context is what BuildKit's http source gives:
//!   a directory holding the body as the file `context` (mode 0600, root's, mtime the body's
//!   `Last-Modified`), so `COPY . /x/` copies `/x/context` (checked against buildctl v0.32).

use super::stdin_context::{
    ContextDockerfileError, MAX_CONTEXT_BYTES, PEEK_BYTES, UnpackError, UnpackedContext,
    is_context_archive, read_bounded,
};
use super::steps::mounts::Session;
use crate::fetch::{FetchError, Fetched, Fetcher, authorization, parse_url};
use crate::store::Store;
use crate::sys::FsError;
use std::io::Read as _;
use std::path::Path;

/// The name BuildKit gives the downloaded body inside the context (`llb.Filename("context")`).
pub const CONTEXT_FILE: &str = "context";

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
        source: UnpackError,
    },
    #[error("cannot place the downloaded Dockerfile in the build context")]
    Place(#[source] FsError),
    #[error(transparent)]
    Dockerfile(#[from] ContextDockerfileError),
}

/// A build context downloaded from a URL, in a private directory removed when it drops.
#[derive(Debug)]
pub struct HttpContext {
    dir: UnpackedContext,
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
            let dir = UnpackedContext::unpack(file, store.staging(), MAX_CONTEXT_BYTES).map_err(
                |source| HttpContextError::Unpack {
                    url: url.to_string(),
                    source,
                },
            )?;
            // `SOURCE_DATE_EPOCH=context`: Last-Modified, else the newest file of the archive
            // (BuildKit's `archiveMaxTimeFromHTTPArchive`, which reads regular files only).
            let epoch = last_modified(&fetched).or_else(|| dir.newest_file_time());
            return Ok(HttpContext {
                dir,
                archive: true,
                fetched,
                epoch,
            });
        }
        let dir = UnpackedContext::create(store.staging()).map_err(|source| {
            HttpContextError::Unpack {
                url: url.to_string(),
                source,
            }
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

    /// The body as the Dockerfile (a body that is not an archive, [`HttpContext::unpacked`]).
    pub fn body_dockerfile(&self) -> Result<Vec<u8>, HttpContextError> {
        Ok(read_bounded(&self.dir().join(CONTEXT_FILE), CONTEXT_FILE)?)
    }

    /// The unpacked archive (its Dockerfile is read from it), when the body was one.
    pub fn unpacked(&self) -> Option<&UnpackedContext> {
        self.archive.then_some(&self.dir)
    }
}

/// The body's `Last-Modified` in Unix seconds, when it has a valid one.
fn last_modified(fetched: &Fetched) -> Option<i64> {
    fetched
        .last_modified
        .as_deref()
        .and_then(crate::oci::timestamp::parse_http_date)
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
