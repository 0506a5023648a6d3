//! HTTP(S) downloads for `ADD <url>`, as BuildKit's http source (`source/http/source.go`,
//! v0.32) makes them.
//!
//! A body is streamed into the store's blobs with its sha256 computed on the way; a pinned
//! `--checksum` is checked before the blob becomes visible, so a mismatch stores nothing. What a
//! URL gave last time (its `ETag`, `Last-Modified` and content digest) is kept under the store's
//! cache directory, so the next build asks with `If-None-Match`: a `304 Not Modified` (or a
//! `200` with the same `ETag`, whose body is then not read) reuses the blob without downloading
//! it again. A URL with a `--checksum` whose blob is in the store is not asked at all.
//!
//! Bounded as the registry client is: connect and read timeouts, a size cap, at most ten
//! redirects, retries with backoff after a broken connection or a 5xx. Proxies come from
//! `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` (reqwest's system proxy, as Go's
//! `http.ProxyFromEnvironment`).
//!
//! Credentials are the build's secrets, named after the URL's host as BuildKit's http source
//! names them ([`authorization`]): `HTTP_AUTH_HEADER_<host>` is sent as the `Authorization`
//! header, `HTTP_AUTH_TOKEN_<host>` as `Bearer <token>`. The header is marked sensitive (no
//! `Debug` shows it), is dropped on a redirect to another host, scheme or port (reqwest's rule),
//! and is never part of a URL record or a cache key: an authenticated download is keyed by its
//! content, as BuildKit keys it.

use crate::error::Cause;
use crate::oci::Digest;
use crate::oci::timestamp::parse_http_date;
use crate::session::SecretBytes;
use crate::store::{BlobError, BlobStore, Collection, Store, Usage};
use crate::sys::FsError;
use crate::sys::atomic::{IoContext as _, Staging, atomic_write_in, tree_size};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default cap on one download: 4 GiB (`KILN_ADD_MAX_BYTES` overrides it).
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;
/// The name BuildKit's Dockerfile front end gives a URL whose path has no last segment.
pub const UNNAMED: &str = "__unnamed__";
/// Larger url records are not read.
const MAX_RECORD_BYTES: u64 = 64 << 10;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a [`Fetcher`] behaves.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// A body larger than this fails the download.
    pub max_bytes: u64,
    /// How many times a download is started again after a broken connection or a 5xx.
    pub retries: u32,
    pub connect_timeout: Duration,
    /// The longest wait for the next bytes of a reply.
    pub read_timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_bytes: DEFAULT_MAX_BYTES,
            retries: 4,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
        }
    }
}

impl FetchOptions {
    /// The defaults, with `KILN_ADD_MAX_BYTES` (a number of bytes) as the cap and
    /// `KILN_ADD_TIMEOUT` (seconds) as the connect and read timeouts when they are set.
    pub fn from_env() -> FetchOptions {
        let mut options = FetchOptions::default();
        if let Some(max) = std::env::var("KILN_ADD_MAX_BYTES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
        {
            options.max_bytes = max;
        }
        if let Some(seconds) = std::env::var("KILN_ADD_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|seconds| *seconds > 0)
        {
            options.connect_timeout = Duration::from_secs(seconds);
            options.read_timeout = Duration::from_secs(seconds);
        }
        options
    }
}

/// What a URL gave: its content (a blob of the store) and its `Last-Modified`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    pub digest: Digest,
    pub size: u64,
    /// The `Last-Modified` header as sent (BuildKit keeps it in the cache key).
    pub last_modified: Option<String>,
}

impl Fetched {
    /// The file's modification time: `Last-Modified`, else the Unix epoch (BuildKit's `save`).
    pub fn mtime(&self) -> i64 {
        self.last_modified
            .as_deref()
            .and_then(parse_http_date)
            .unwrap_or(0)
    }
}

/// What is kept per URL between builds.
#[derive(Serialize, Deserialize)]
struct UrlRecord {
    url: String,
    etag: Option<String>,
    fetched: Fetched,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url:?} is not an http(s) URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{url}: the URL's file name {name:?} is not a file name")]
    BadName { url: String, name: String },
    #[error("could not set up the HTTP client")]
    Setup(#[source] reqwest::Error),
    #[error("could not start the download runtime")]
    Runtime(#[source] std::io::Error),
    #[error("GET {url} failed after {attempts} attempt(s)")]
    Http {
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: the server answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("GET {url}: the body is larger than {limit} bytes (KILN_ADD_MAX_BYTES)")]
    TooLarge { url: String, limit: u64 },
    #[error("digest mismatch for {url}: {actual} (expected: {expected})")]
    ChecksumMismatch {
        url: String,
        actual: Digest,
        expected: Digest,
    },
    #[error("{url}: could not store the download")]
    Store {
        url: String,
        #[source]
        source: BlobError,
    },
    #[error("cannot use secret {id:?} as the Authorization header of {url}")]
    Credential {
        url: String,
        id: String,
        #[source]
        reason: Cause,
    },
    #[error("could not keep what {url} gave")]
    Record {
        url: String,
        #[source]
        source: FsError,
    },
}

/// Parses an `ADD` source as an http(s) URL.
pub fn parse_url(text: &str) -> Result<Url, FetchError> {
    let bad = |reason: String| FetchError::BadUrl {
        url: text.to_string(),
        reason,
    };
    let url = Url::parse(text).map_err(|e| bad(e.to_string()))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(bad(format!("the scheme {other:?} is not http or https"))),
    }
}

/// The name a URL's download gets: the last segment of its path, percent-decoded (the
/// parser already removed `.` and `..` segments), `__unnamed__` when the path has none (BuildKit's
/// `dispatchCopy`). A name that could leave the destination directory or reach a terminal
/// (`..`, a slash, a NUL or control character once decoded) is refused. BuildKit's front end
/// names the file itself, so a `Content-Disposition` header never names it.
pub fn file_name(url: &Url) -> Result<String, FetchError> {
    let last = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or("");
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(last).collect();
    let name = String::from_utf8_lossy(&decoded).into_owned();
    if name.is_empty() || name == "." {
        return Ok(UNNAMED.to_string());
    }
    if name == ".." || name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        return Err(FetchError::BadName {
            url: url.to_string(),
            name,
        });
    }
    Ok(name)
}

/// The secret ids that authenticate a download from `url` (BuildKit's http source,
/// `newHTTPRequest`): `HTTP_AUTH_HEADER_<host>` (the header's whole value) and
/// `HTTP_AUTH_TOKEN_<host>` (a bearer token). `<host>` is the URL's host name without its port,
/// an IPv6 address without brackets (Go's `URL.Hostname`).
pub fn auth_secret_ids(url: &Url) -> Option<(String, String)> {
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((
        format!("HTTP_AUTH_HEADER_{host}"),
        format!("HTTP_AUTH_TOKEN_{host}"),
    ))
}

/// The `Authorization` header a download sends, from a build secret. Its `Debug` names the
/// secret, never its value.
#[derive(Clone)]
pub struct Authorization {
    value: HeaderValue,
    secret: String,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authorization(from secret {:?})", self.secret)
    }
}

/// The `Authorization` header for `url` from the build's secrets (`secret` gives a secret's bytes
/// by id, `None` when the build was not given it), as BuildKit's http source makes it: the
/// header secret as it is, then the token secret as `Bearer <token>`, which replaces it when
/// both are given. `None` without either. A secret that cannot be read, or whose bytes cannot
/// be a header value (a line break, a control byte), is an error naming the secret, never
/// showing it.
pub fn authorization(
    url: &Url,
    secret: impl Fn(&str) -> Result<Option<SecretBytes>, Cause>,
) -> Result<Option<Authorization>, FetchError> {
    let Some((header_id, token_id)) = auth_secret_ids(url) else {
        return Ok(None);
    };
    let refuse = |id: &str, reason: Cause| FetchError::Credential {
        url: url.to_string(),
        id: id.to_string(),
        reason,
    };
    let mut found = None;
    for (id, bearer) in [(header_id, false), (token_id, true)] {
        let Some(bytes) = secret(&id).map_err(|reason| refuse(&id, reason))? else {
            continue;
        };
        let mut text = zeroize::Zeroizing::new(Vec::with_capacity(bytes.len() + 7));
        if bearer {
            text.extend_from_slice(b"Bearer ");
        }
        text.extend_from_slice(bytes.as_bytes());
        let mut value = HeaderValue::from_bytes(&text).map_err(|_| {
            refuse(
                &id,
                "it holds a byte a header cannot carry (a line break or another control \
                 character)"
                    .into(),
            )
        })?;
        value.set_sensitive(true);
        found = Some(Authorization { value, secret: id });
    }
    Ok(found)
}

/// Downloads URLs into a store's blobs.
pub struct Fetcher {
    http: reqwest::Client,
    options: FetchOptions,
    blobs: BlobStore,
    /// `<store>/cache/http`: one [`UrlRecord`] per URL.
    dir: PathBuf,
    staging: Staging,
}

impl Fetcher {
    /// A fetcher storing into `blobs` and keeping its URL records in `dir`.
    pub fn new(blobs: BlobStore, dir: &Path, options: FetchOptions) -> Result<Fetcher, FetchError> {
        let record_error = |source| FetchError::Record {
            url: dir.display().to_string(),
            source,
        };
        crate::sys::atomic::create_private_dir_all(dir).map_err(record_error)?;
        let staging = Staging::open(&dir.join("tmp")).map_err(record_error)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(FetchError::Setup)?;
        Ok(Fetcher {
            http,
            options,
            blobs,
            dir: dir.to_path_buf(),
            staging,
        })
    }

    /// A fetcher for `store`: its blobs, its URL records in `<store>/cache/http`, the options
    /// from the environment ([`FetchOptions::from_env`]). Hold a store lease while it is used:
    /// [`prune_records`] runs only when none is held.
    pub fn in_store(store: &Store) -> Result<Fetcher, FetchError> {
        Fetcher::new(
            store.blobs().clone(),
            &records_dir(store),
            FetchOptions::from_env(),
        )
    }

    /// The blobs downloads go to.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Copies the download `fetched` to the file `target` (replaced when it exists, never
    /// followed when it is a link) as BuildKit's http source saves it: mode 0600 (the copier's
    /// owner, root in a build) and its [`Fetched::mtime`].
    pub fn place(&self, fetched: &Fetched, target: &Path) -> Result<(), FsError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let blob = self.blobs.path(&fetched.digest);
        let mut from = std::fs::File::open(&blob).fs("open", &blob)?;
        let mut to = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(target)
            .fs("create", target)?;
        std::io::copy(&mut from, &mut to).fs("copy into", target)?;
        // The mode is given at creation, but a umask may have narrowed it further.
        use std::os::unix::fs::PermissionsExt as _;
        to.set_permissions(std::fs::Permissions::from_mode(0o600))
            .fs("chmod", target)?;
        let mtime = std::time::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(fetched.mtime()).unwrap_or(0));
        to.set_modified(mtime).fs("set the mtime of", target)
    }

    /// What `url` gives now, its content in the store. With `checksum`, a blob of that digest
    /// already stored is the answer without a request, and a download of other content fails
    /// (nothing stored). Without it, the URL is asked with the `ETag` it had last time.
    /// `auth` is sent with every request for the URL. Blocks: call it from outside an async
    /// runtime.
    pub fn fetch(
        &self,
        url: &Url,
        checksum: Option<&Digest>,
        auth: Option<&Authorization>,
    ) -> Result<Fetched, FetchError> {
        let record = self.record(url);
        if let Some(expected) = checksum
            && self.blobs.contains(expected)
        {
            let last_modified = record
                .filter(|r| &r.fetched.digest == expected)
                .and_then(|r| r.fetched.last_modified);
            let size = self
                .blobs
                .size(expected)
                .map_err(|source| FetchError::Store {
                    url: url.to_string(),
                    source,
                })?;
            return Ok(Fetched {
                digest: expected.clone(),
                size,
                last_modified,
            });
        }
        // Only a record whose blob is still there can answer a 304.
        let known = record.filter(|r| r.etag.is_some() && self.blobs.contains(&r.fetched.digest));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(FetchError::Runtime)?;
        let (fetched, etag) =
            runtime.block_on(self.download(url, known.as_ref(), checksum, auth))?;
        if let Some(expected) = checksum
            && &fetched.digest != expected
        {
            return Err(FetchError::ChecksumMismatch {
                url: url.to_string(),
                actual: fetched.digest,
                expected: expected.clone(),
            });
        }
        self.remember(url, etag, &fetched)?;
        Ok(fetched)
    }

    /// One GET (retried), conditional on `known`'s `ETag`; the body streamed into a blob.
    async fn download(
        &self,
        url: &Url,
        known: Option<&UrlRecord>,
        checksum: Option<&Digest>,
        auth: Option<&Authorization>,
    ) -> Result<(Fetched, Option<String>), FetchError> {
        let mut attempt = 0;
        loop {
            let mut request = self.http.get(url.clone());
            if let Some(auth) = auth {
                request = request.header(header::AUTHORIZATION, auth.value.clone());
            }
            if let Some(etag) = known.and_then(|k| k.etag.as_deref()) {
                request = request.header(header::IF_NONE_MATCH, format!("\"{etag}\""));
            }
            let broken = |source: reqwest::Error, attempt: u32| FetchError::Http {
                url: url.to_string(),
                attempts: attempt + 1,
                source,
            };
            let mut response = match request.send().await {
                Ok(response) => response,
                Err(e) if attempt < self.options.retries && is_retryable_error(&e) => {
                    backoff(attempt).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(broken(e, attempt)),
            };
            let status = response.status();
            if is_retryable_status(status) && attempt < self.options.retries {
                backoff(attempt).await;
                attempt += 1;
                continue;
            }
            let etag = etag_value(response.headers());
            if let Some(known) = known
                && (status == StatusCode::NOT_MODIFIED
                    || (status.is_success() && etag.is_some() && etag == known.etag))
            {
                // Unchanged: the body (if any) is not read.
                return Ok((known.fetched.clone(), known.etag.clone()));
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: url.to_string(),
                    status,
                });
            }
            let too_large = || FetchError::TooLarge {
                url: url.to_string(),
                limit: self.options.max_bytes,
            };
            if response
                .content_length()
                .is_some_and(|n| n > self.options.max_bytes)
            {
                return Err(too_large());
            }
            let last_modified = response
                .headers()
                .get(header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let store_error = |source| FetchError::Store {
                url: url.to_string(),
                source,
            };
            let mut writer = self.blobs.writer().map_err(store_error)?;
            let staged = self.blobs.staging().dir().to_path_buf();
            let mut written: u64 = 0;
            let body = loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        written += chunk.len() as u64;
                        if written > self.options.max_bytes {
                            return Err(too_large());
                        }
                        writer.write_all(&chunk).map_err(|e| {
                            store_error(BlobError::from(FsError::new("write", &staged, e)))
                        })?;
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            match body {
                Ok(()) => {}
                // A body cut short: start over (the partial blob is dropped with its writer).
                Err(_) if attempt < self.options.retries => {
                    backoff(attempt).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(broken(e, attempt)),
            }
            let blob = match writer.commit(checksum) {
                Ok(blob) => blob,
                Err(BlobError::DigestMismatch {
                    expected, actual, ..
                }) => {
                    return Err(FetchError::ChecksumMismatch {
                        url: url.to_string(),
                        actual,
                        expected,
                    });
                }
                Err(e) => return Err(store_error(e)),
            };
            let fetched = Fetched {
                digest: blob.digest,
                size: blob.size,
                last_modified,
            };
            return Ok((fetched, etag));
        }
    }

    fn record_path(&self, url: &Url) -> PathBuf {
        let key = Digest::of(url.as_str().as_bytes());
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// The record of `url`, if any is readable (a damaged one is no record).
    fn record(&self, url: &Url) -> Option<UrlRecord> {
        let path = self.record_path(url);
        let meta = std::fs::metadata(&path).ok()?;
        if meta.len() > MAX_RECORD_BYTES {
            return None;
        }
        let bytes = std::fs::read(&path).ok()?;
        let record: UrlRecord = serde_json::from_slice(&bytes).ok()?;
        (record.url == url.as_str()).then_some(record)
    }

    fn remember(
        &self,
        url: &Url,
        etag: Option<String>,
        fetched: &Fetched,
    ) -> Result<(), FetchError> {
        let record = UrlRecord {
            url: url.to_string(),
            etag,
            fetched: fetched.clone(),
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        atomic_write_in(&self.staging, &self.record_path(url), &bytes).map_err(|source| {
            FetchError::Record {
                url: url.to_string(),
                source,
            }
        })
    }
}

/// Where [`Fetcher::in_store`] keeps its URL records.
fn records_dir(store: &Store) -> PathBuf {
    store.root().join("cache").join("http")
}

/// The URL records of `store` as `kiln df` counts them: one per URL downloaded (the downloads
/// themselves are blobs, counted with the images' until a prune removes those no image uses).
/// None is ever active: a record is read and replaced whole.
pub fn records_usage(store: &Store) -> Result<Usage, FsError> {
    let mut usage = Usage::default();
    for (path, size) in records(&records_dir(store))? {
        if path.extension().is_some_and(|e| e == "json") {
            usage.total += 1;
        }
        usage.size += size;
        usage.reclaimable += size;
    }
    Ok(usage)
}

/// What [`prune_records`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordsPrune {
    pub records: usize,
    /// Bytes freed (records and leftovers of killed downloads).
    pub reclaimed: u64,
}

/// Removes every URL record of `store` (as `docker builder prune` removes BuildKit's http
/// sources; the next build asks the URL again without `If-None-Match`) and what killed
/// downloads left in the records' staging. `held` keeps every fetcher away meanwhile.
pub fn prune_records(store: &Store, held: &Collection) -> Result<RecordsPrune, FsError> {
    let dir = records_dir(store);
    if held.root() != store.root() {
        return Err(FsError::new(
            "prune",
            &dir,
            std::io::Error::other("the collection held is of another store"),
        ));
    }
    let mut report = RecordsPrune::default();
    for (path, size) in records(&dir)? {
        if path.extension().is_some_and(|e| e == "json") {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(FsError::new("remove", &path, err)),
            }
            report.records += 1;
            report.reclaimed += size;
        }
    }
    let staging = dir.join("tmp");
    if staging.is_dir() {
        report.reclaimed += Staging::open(&staging)?
            .remove_stale(Staging::STALE_AGE)?
            .bytes;
    }
    Ok(report)
}

/// The files directly in `dir` with their sizes, and the staging directory's content as one
/// entry (none when `dir` does not exist).
fn records(dir: &Path) -> Result<Vec<(PathBuf, u64)>, FsError> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(FsError::new("read directory", dir, err)),
    };
    let mut found = Vec::new();
    for entry in listing {
        let path = entry.fs("read directory", dir)?.path();
        found.push((path.clone(), tree_size(&path)));
    }
    found.sort();
    Ok(found)
}

/// The `ETag` without its weak marker and quotes (BuildKit's `etagValue`).
fn etag_value(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::ETAG)?.to_str().ok()?.trim();
    let raw = raw.strip_prefix("W/").unwrap_or(raw);
    let value = raw.trim_matches('"');
    (!value.is_empty()).then(|| value.to_string())
}

/// 408, 429 and the 5xx that mean "try again" (not 501 Not Implemented).
fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// Errors of the connection, not of the request: refused, reset, timed out, cut short.
fn is_retryable_error(err: &reqwest::Error) -> bool {
    err.is_connect() || err.is_timeout() || err.is_request() || err.is_body()
}

async fn backoff(attempt: u32) {
    let wait = FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(MAX_BACKOFF);
    tokio::time::sleep(wait).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(url: &str) -> Result<String, FetchError> {
        file_name(&parse_url(url).unwrap())
    }

    #[test]
    fn names_come_from_the_last_path_segment() {
        assert_eq!(
            name("https://example.com/a/b.tar.gz?x=1#f").unwrap(),
            "b.tar.gz"
        );
        assert_eq!(name("http://example.com/../../etc/x").unwrap(), "x");
        assert_eq!(name("http://example.com/a/%2e%2e/x").unwrap(), "x");
        assert_eq!(name("http://example.com/a%20b").unwrap(), "a b");
        assert_eq!(name("http://example.com").unwrap(), UNNAMED);
        assert_eq!(name("http://example.com/dir/").unwrap(), UNNAMED);
        for hostile in [
            "http://example.com/a%2F..%2Fx",
            "http://example.com/%2e%2e%2f",
            "http://example.com/x%1b%5b31m",
            "http://example.com/a%00b",
        ] {
            assert!(
                matches!(name(hostile), Err(FetchError::BadName { .. })),
                "{hostile}"
            );
        }
    }

    #[test]
    fn only_http_urls() {
        assert!(parse_url("ftp://example.com/x").is_err());
        assert!(parse_url("https://example.com/x").is_ok());
    }

    #[test]
    fn etags_lose_quotes_and_weakness() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, "W/\"abc\"".parse().unwrap());
        assert_eq!(etag_value(&headers).as_deref(), Some("abc"));
        headers.insert(header::ETAG, "\"\"".parse().unwrap());
        assert_eq!(etag_value(&headers), None);
    }
    fn secrets(
        given: &'static [(&'static str, &'static [u8])],
    ) -> impl Fn(&str) -> Result<Option<SecretBytes>, Cause> {
        move |id| {
            Ok(given
                .iter()
                .find(|(name, _)| *name == id)
                .map(|(_, bytes)| SecretBytes::new(bytes.to_vec())))
        }
    }

    #[test]
    fn credentials_come_from_the_hosts_secrets_and_the_token_wins() {
        let url = parse_url("https://files.example.com:8443/a.tar").unwrap();
        assert_eq!(
            auth_secret_ids(&url).unwrap(),
            (
                "HTTP_AUTH_HEADER_files.example.com".to_string(),
                "HTTP_AUTH_TOKEN_files.example.com".to_string()
            )
        );
        let v6 = parse_url("http://[::1]:80/x").unwrap();
        assert_eq!(auth_secret_ids(&v6).unwrap().0, "HTTP_AUTH_HEADER_::1");

        assert!(authorization(&url, secrets(&[])).unwrap().is_none());
        let header = authorization(
            &url,
            secrets(&[("HTTP_AUTH_HEADER_files.example.com", b"Basic dXNlcjpwdw==")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(header.value.as_bytes(), b"Basic dXNlcjpwdw==");
        assert!(header.value.is_sensitive());
        let both = authorization(
            &url,
            secrets(&[
                ("HTTP_AUTH_HEADER_files.example.com", b"Basic x"),
                ("HTTP_AUTH_TOKEN_files.example.com", b"t0k3n"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(both.value.as_bytes(), b"Bearer t0k3n");
        let shown = format!("{both:?}");
        assert!(!shown.contains("t0k3n"), "{shown}");
        assert!(
            shown.contains("HTTP_AUTH_TOKEN_files.example.com"),
            "{shown}"
        );
    }

    #[test]
    fn a_secret_that_cannot_be_a_header_is_refused_without_showing_it() {
        let url = parse_url("https://h/x").unwrap();
        let err = authorization(
            &url,
            secrets(&[("HTTP_AUTH_TOKEN_h", b"s3cret\r\nX-Evil: 1")]),
        )
        .unwrap_err();
        let text = crate::error::chain(&err);
        assert!(text.contains("HTTP_AUTH_TOKEN_h"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
