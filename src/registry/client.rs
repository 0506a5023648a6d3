//! The distribution-spec HTTP client: requests with auth, retries and backoff; manifests;
//! blobs in and out.
//!
//! Auth follows docker's: the first request to a registry goes out anonymous; a 401 carries a
//! `WWW-Authenticate` challenge. `Basic` sends the configured credentials; `Bearer` asks the
//! challenge's realm for a token for the request's scopes (with the credentials as basic auth
//! when there are any), caches it per registry and scope set, and sends it from then on. A 401
//! with a cached token (expired) fetches a new one once.

use super::RegistryError;
use super::auth::{Challenge, Credentials, DockerConfig, config_dir};
use super::manifest::{self, Manifest};
use crate::error::Reason;
use crate::oci::Digest;
use crate::oci::reference::Reference;
use crate::store::{BlobRef, BlobStore, MAX_DOCUMENT_SIZE};
use reqwest::header::{self, HeaderMap};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Docker Hub's API host: `docker.io` is the name in references, not where the API answers.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The first retry waits this long; each further one twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a [`Client`] behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP besides the loopback ones
    /// (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// Where docker's `config.json` is; `None`: `$DOCKER_CONFIG`, else `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// Credentials that win over `config.json`, by registry (`kiln login` checks new ones with
    /// them).
    pub credentials: BTreeMap<String, Credentials>,
    /// How many blobs move at once.
    pub max_concurrent: usize,
    /// How many times a request is retried after a broken connection or a 5xx.
    pub retries: u32,
    /// Blobs up to this size are uploaded in one PUT; larger ones in PATCH chunks of this size.
    pub chunk_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            docker_config_dir: None,
            credentials: BTreeMap::new(),
            max_concurrent: 3,
            retries: 4,
            chunk_size: 16 << 20,
        }
    }
}

/// A repository in a registry: `registry` as a reference names it (`docker.io`,
/// `127.0.0.1:5000`), `path` the repository (`library/alpine`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository {
    pub registry: String,
    pub path: String,
}

impl Repository {
    /// The repository a reference names.
    pub fn of(reference: &Reference) -> Repository {
        Repository {
            registry: reference.domain().to_string(),
            path: reference.path().to_string(),
        }
    }

    fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.path)
    }

    fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.path)
    }
}

impl std::fmt::Display for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

/// Where a pushed blob came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobSource {
    /// The registry had it already (HEAD).
    Existed,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// The host (and port) where `registry`'s API answers.
pub fn api_host(registry: &str) -> &str {
    if registry == crate::oci::reference::DEFAULT_DOMAIN || registry == "index.docker.io" {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// Whether `registry` (`host[:port]`) is spoken to over plain HTTP without being named
/// insecure: `localhost`, `127.0.0.0/8` and `::1`, as docker allows.
pub fn is_insecure_by_default(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    if host == "localhost" {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(addr) => addr.is_loopback(),
        Err(_) => false,
    }
}

/// How a registry wants to be authenticated, learned from its challenges.
#[derive(Debug, Clone)]
enum Scheme {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Default)]
struct AuthState {
    /// By registry.
    schemes: HashMap<String, Scheme>,
    /// By registry and space-joined scopes.
    tokens: HashMap<(String, String), String>,
    /// By registry (`None`: looked up, there are none).
    credentials: HashMap<String, Option<Credentials>>,
}

/// Why [`Client::download_into`] stopped.
enum DownloadError {
    Registry(RegistryError),
    Blob(crate::store::BlobError),
    /// Writing the bytes received.
    Write(std::io::Error),
    /// The registry sent more than the blob's size (this many bytes so far).
    TooLong(u64),
}

/// One request's identity for auth and messages.
struct Call<'a> {
    registry: &'a str,
    scopes: Vec<String>,
    /// For messages: `pull manifest latest of library/alpine`.
    what: String,
    /// Whether a broken connection or 5xx may be retried by sending the request again.
    retry: bool,
}

/// An OCI distribution client. Cheap to clone (clones share connections and tokens).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    options: Arc<ClientOptions>,
    auth: Arc<Mutex<AuthState>>,
}

impl Client {
    /// A client with `options`. No connection is made until a request needs one.
    pub fn new(options: ClientOptions) -> Result<Client, RegistryError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| RegistryError::Setup(e.into()))?;
        Ok(Client {
            http,
            options: Arc::new(options),
            auth: Arc::new(Mutex::new(AuthState::default())),
        })
    }

    /// The options it was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// A client with the same options and tokens but its own connection pool: for use on
    /// another tokio runtime (pooled connections belong to the runtime that opened them).
    pub fn for_other_runtime(&self) -> Result<Client, RegistryError> {
        let fresh = Client::new((*self.options).clone())?;
        Ok(Client {
            auth: self.auth.clone(),
            ..fresh
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.auth.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `http(s)://HOST/v2/`.
    fn base(&self, registry: &str) -> Result<Url, RegistryError> {
        let insecure = is_insecure_by_default(registry)
            || self
                .options
                .insecure_registries
                .iter()
                .any(|r| r == registry || api_host(r) == api_host(registry));
        let scheme = if insecure { "http" } else { "https" };
        let text = format!("{scheme}://{}/v2/", api_host(registry));
        Url::parse(&text).map_err(|e| {
            RegistryError::Setup(Reason::caused_by(format!("bad registry URL {text}"), e).into())
        })
    }

    fn url(&self, repo: &Repository, rest: &str) -> Result<Url, RegistryError> {
        let text = format!("{}{}/{rest}", self.base(&repo.registry)?, repo.path);
        Url::parse(&text).map_err(|e| {
            RegistryError::Setup(Reason::caused_by(format!("bad registry URL {text}"), e).into())
        })
    }

    /// The credentials for `registry`: explicit ones, else from `config.json` (looked up once).
    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        if let Some(explicit) = self.options.credentials.get(registry) {
            return Ok(Some(explicit.clone()));
        }
        if let Some(known) = self.state().credentials.get(registry) {
            return Ok(known.clone());
        }
        let dir = config_dir(self.options.docker_config_dir.as_deref());
        let found = DockerConfig::load(&dir)?.credentials(registry)?;
        self.state()
            .credentials
            .insert(registry.to_string(), found.clone());
        Ok(found)
    }

    /// The `Authorization` header for a call, fetching a token when the registry wants bearer
    /// auth and none is cached for these scopes.
    async fn authorization(&self, call: &Call<'_>) -> Result<Option<String>, RegistryError> {
        let key = (call.registry.to_string(), call.scopes.join(" "));
        let scheme = {
            let state = self.state();
            if let Some(token) = state.tokens.get(&key) {
                return Ok(Some(format!("Bearer {token}")));
            }
            state.schemes.get(call.registry).cloned()
        };
        match scheme {
            None => Ok(None),
            Some(Scheme::Basic) => Ok(self.credentials(call.registry)?.map(|c| c.basic_header())),
            Some(Scheme::Bearer { realm, service }) => {
                let token = self
                    .fetch_token(call, &realm, service.as_deref(), &call.scopes)
                    .await?;
                self.state().tokens.insert(key, token.clone());
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Learns the registry's scheme from a 401's challenges. Returns false when there is
    /// nothing to try (no usable challenge, or basic auth without credentials).
    fn learn(&self, call: &Call<'_>, headers: &HeaderMap) -> Result<bool, RegistryError> {
        let challenges: Vec<Challenge> = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(Challenge::parse)
            .collect();
        let bearer = challenges.iter().find(|c| c.scheme == "bearer");
        let scheme = match bearer.and_then(|c| c.param("realm")) {
            Some(realm) => Scheme::Bearer {
                realm: realm.to_string(),
                service: bearer.and_then(|c| c.param("service")).map(str::to_string),
            },
            None if challenges.iter().any(|c| c.scheme == "basic") => {
                if self.credentials(call.registry)?.is_none() {
                    return Ok(false);
                }
                Scheme::Basic
            }
            None => return Ok(false),
        };
        let mut state = self.state();
        state
            .tokens
            .remove(&(call.registry.to_string(), call.scopes.join(" ")));
        state.schemes.insert(call.registry.to_string(), scheme);
        Ok(true)
    }

    /// GETs a bearer token from `realm` (the token spec: `service` and one `scope` parameter
    /// per scope; basic auth with the credentials when there are any). Replies carry `token`
    /// or, from OAuth2 servers, `access_token`.
    async fn fetch_token(
        &self,
        call: &Call<'_>,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String, RegistryError> {
        let mut url = Url::parse(realm).map_err(|e| RegistryError::Document {
            registry: call.registry.to_string(),
            what: "the auth challenge".to_string(),
            reason: Reason::caused_by(format!("its realm {realm:?} is not a URL"), e).into(),
        })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            for scope in scopes {
                query.append_pair("scope", scope);
            }
        }
        let credentials = self.credentials(call.registry)?;
        let mut attempt = 0;
        let response = loop {
            let mut request = self.http.get(url.clone());
            if let Some(c) = &credentials {
                request = request.header(header::AUTHORIZATION, c.basic_header());
            }
            match request.send().await {
                Ok(r) if is_retryable_status(r.status()) && attempt < self.options.retries => {}
                Ok(r) => break r,
                Err(e) if is_retryable_error(&e) && attempt < self.options.retries => {}
                Err(source) => {
                    return Err(RegistryError::Http {
                        registry: call.registry.to_string(),
                        what: format!("get a token from {realm} to {}", call.what),
                        source,
                    });
                }
            }
            backoff(attempt).await;
            attempt += 1;
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let message = error_message(response).await;
            return Err(RegistryError::Unauthorized {
                registry: call.registry.to_string(),
                what: call.what.clone(),
                message: if credentials.is_some() {
                    format!("the token server {realm} refused the credentials ({message})")
                } else {
                    format!("the token server {realm} wants credentials ({message})")
                },
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                registry: call.registry.to_string(),
                what: format!("get a token from {realm} to {}", call.what),
                status: status.as_u16(),
                message: error_message(response).await,
            });
        }
        let bytes = read_capped(response, call.registry, "the token reply").await?;
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let reply: Reply = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Document {
            registry: call.registry.to_string(),
            what: format!("the token reply of {realm}"),
            reason: e.into(),
        })?;
        match [reply.token, reply.access_token]
            .into_iter()
            .find(|t| !t.is_empty())
        {
            Some(token) => Ok(token),
            None => Err(RegistryError::Document {
                registry: call.registry.to_string(),
                what: format!("the token reply of {realm}"),
                reason: "it has neither token nor access_token".into(),
            }),
        }
    }

    /// Sends a request made by `make`, with auth; re-authenticates once on a 401 and retries
    /// (when the call allows it) broken connections and 5xx with backoff. Any other status is
    /// returned for the caller to judge.
    async fn send(
        &self,
        call: &Call<'_>,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            let mut request = make();
            if let Some(value) = self.authorization(call).await? {
                request = request.header(header::AUTHORIZATION, value);
            }
            let may_retry = call.retry && attempt < self.options.retries;
            match request.send().await {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    if !reauthenticated && self.learn(call, response.headers())? {
                        reauthenticated = true;
                        continue;
                    }
                    return Err(RegistryError::Unauthorized {
                        registry: call.registry.to_string(),
                        what: call.what.clone(),
                        message: error_message(response).await,
                    });
                }
                Ok(response) if may_retry && is_retryable_status(response.status()) => {}
                Ok(response) => return Ok(response),
                Err(e) if may_retry && is_retryable_error(&e) => {}
                Err(source) => {
                    return Err(RegistryError::Http {
                        registry: call.registry.to_string(),
                        what: call.what.clone(),
                        source,
                    });
                }
            }
            backoff(attempt).await;
            attempt += 1;
        }
    }

    /// Checks that `registry` accepts the client's credentials for it (`GET /v2/`, and for a
    /// token registry a token request with them), as `docker login` does.
    pub async fn check_login(&self, registry: &str) -> Result<(), RegistryError> {
        let call = Call {
            registry,
            scopes: Vec::new(),
            what: "log in".to_string(),
            retry: true,
        };
        let url = self.base(registry)?;
        let response = self.send(&call, || self.http.get(url.clone())).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(status_error(&call, response).await)
    }

    /// GETs the manifest or index `reference` (a tag or digest) of `repo`, with every media type
    /// kiln reads in `Accept`. A manifest fetched by digest must have it; a
    /// `Docker-Content-Digest` header must match the bytes. Returns the document and its digest.
    pub async fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<(Manifest, Digest), RegistryError> {
        let call = Call {
            registry: &repo.registry,
            scopes: vec![repo.pull_scope()],
            what: format!("pull manifest {reference} of {}", repo.path),
            retry: true,
        };
        let url = self.url(repo, &format!("manifests/{reference}"))?;
        let accept = manifest::accept_header();
        let response = self
            .send(&call, || {
                self.http
                    .get(url.clone())
                    .header(header::ACCEPT, accept.as_str())
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error(&call, response).await);
        }
        let content_type = header_text(response.headers(), header::CONTENT_TYPE.as_str());
        let announced = header_text(response.headers(), "docker-content-digest");
        let what = format!("manifest {reference} of {}", repo.path);
        let bytes = read_capped(response, &repo.registry, &what).await?;
        let digest = Digest::of(&bytes);
        let expected = Digest::parse(reference)
            .ok()
            .or_else(|| announced.as_deref().and_then(|d| Digest::parse(d).ok()));
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(RegistryError::DigestMismatch {
                registry: repo.registry.clone(),
                what,
                expected,
                actual: digest,
            });
        }
        let manifest = Manifest::parse(content_type.as_deref(), bytes).map_err(|reason| {
            RegistryError::Document {
                registry: repo.registry.clone(),
                what,
                reason: reason.into(),
            }
        })?;
        Ok((manifest, digest))
    }

    /// PUTs a manifest under `reference` (a tag or its digest). Returns its digest (checked
    /// against the registry's `Docker-Content-Digest` when it sends one).
    pub async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let call = Call {
            registry: &repo.registry,
            scopes: vec![repo.push_scope()],
            what: format!("push manifest {reference} to {}", repo.path),
            retry: true,
        };
        let url = self.url(repo, &format!("manifests/{reference}"))?;
        let body = bytes.to_vec();
        let response = self
            .send(&call, || {
                self.http
                    .put(url.clone())
                    .header(header::CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        if response.status() != StatusCode::CREATED && !response.status().is_success() {
            return Err(status_error(&call, response).await);
        }
        let digest = Digest::of(bytes);
        if let Some(announced) = header_text(response.headers(), "docker-content-digest")
            .and_then(|d| Digest::parse(&d).ok())
            && announced != digest
        {
            return Err(RegistryError::DigestMismatch {
                registry: repo.registry.clone(),
                what: format!("the manifest pushed as {reference} to {}", repo.path),
                expected: digest,
                actual: announced,
            });
        }
        Ok(digest)
    }

    /// Whether `repo` has the blob (HEAD); its size when it does.
    pub async fn blob_size(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        self.head_blob(repo, digest, repo.pull_scope()).await
    }

    /// [`Client::blob_size`] under `scope` (a push asks with its own, so one token serves it).
    async fn head_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        scope: String,
    ) -> Result<Option<u64>, RegistryError> {
        let call = Call {
            registry: &repo.registry,
            scopes: vec![scope],
            what: format!("look for blob {digest} in {}", repo.path),
            retry: true,
        };
        let url = self.url(repo, &format!("blobs/{digest}"))?;
        let response = self.send(&call, || self.http.head(url.clone())).await?;
        match response.status() {
            status if status.is_success() => Ok(Some(response.content_length().unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(&call, response).await),
        }
    }

    /// Streams the blob `digest` of `size` bytes from `repo` into `store`, verifying digest and
    /// size on the way (more bytes than `size` stop it at once). A download broken off is
    /// resumed with `Range` where the registry allows it (else started over), a bounded number
    /// of times; so is one a killed kiln left (its bytes are kept in the store's staging, see
    /// [`BlobStore::download`]). The whole blob's digest is checked at the end: when a resumed
    /// blob's is wrong (the kept bytes were corrupt), they are discarded and the blob fetched
    /// once more from the start. `progress` is told the bytes received so far. On any failure
    /// nothing enters the store.
    pub async fn fetch_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<BlobRef, RegistryError> {
        let call = Call {
            registry: &repo.registry,
            scopes: vec![repo.pull_scope()],
            what: format!("pull blob {digest} of {}", repo.path),
            retry: true,
        };
        let blob_error = |source| RegistryError::Blob {
            registry: repo.registry.clone(),
            digest: digest.clone(),
            source,
        };
        let fs_error = |err: std::io::Error, path: &std::path::Path| {
            blob_error(crate::sys::FsError::new("write", path, err).into())
        };
        let url = self.url(repo, &format!("blobs/{digest}"))?;
        let staged = store.staging().dir().to_path_buf();
        let mut refetched = false;
        loop {
            let mut writer = store.download(digest).map_err(blob_error)?;
            let kept = writer.offset();
            if kept > size {
                writer.restart().map_err(blob_error)?;
            }
            let written = writer.offset();
            progress(written);
            // A kept download may be whole already (killed between the last byte and the
            // rename): then there is nothing to ask for.
            if written < size {
                self.download_into(&call, &url, &mut writer, written, size, progress)
                    .await
                    .map_err(|err| match err {
                        DownloadError::Registry(err) => err,
                        DownloadError::Blob(err) => blob_error(err),
                        DownloadError::Write(err) => fs_error(err, &staged),
                        DownloadError::TooLong(actual) => {
                            blob_error(crate::store::BlobError::SizeMismatch {
                                digest: digest.clone(),
                                expected: size,
                                actual,
                            })
                        }
                    })?;
            }
            let resumed = kept > 0 && kept <= size;
            match writer.commit_exact(digest, size) {
                Ok(blob) => return Ok(blob),
                // The kept bytes were not the blob's: they are gone now; once more from 0.
                Err(
                    crate::store::BlobError::DigestMismatch { .. }
                    | crate::store::BlobError::SizeMismatch { .. },
                ) if resumed && !refetched => {
                    refetched = true;
                    progress(0);
                }
                Err(err) => return Err(blob_error(err)),
            }
        }
    }

    /// Writes the blob at `url` into `writer` from byte `written` on (a `Range` request when
    /// that is not 0; a registry that answers the whole blob instead starts it over), resuming
    /// after a broken connection up to the configured retries. Returns the bytes written.
    async fn download_into(
        &self,
        call: &Call<'_>,
        url: &Url,
        writer: &mut crate::store::Download,
        mut written: u64,
        size: u64,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), DownloadError> {
        let mut breaks = 0;
        'download: loop {
            let from = written;
            let mut response = self
                .send(call, || {
                    let request = self.http.get(url.clone());
                    if from > 0 {
                        request.header(header::RANGE, format!("bytes={from}-"))
                    } else {
                        request
                    }
                })
                .await
                .map_err(DownloadError::Registry)?;
            match response.status() {
                StatusCode::PARTIAL_CONTENT if from > 0 && range_start(&response) == Some(from) => {
                }
                StatusCode::OK if from > 0 => {
                    // The registry ignored the range: start over.
                    writer.restart().map_err(DownloadError::Blob)?;
                    written = 0;
                    progress(0);
                }
                StatusCode::OK => {}
                // What was kept is not a prefix the registry knows (the blob is shorter): the
                // whole blob, then.
                StatusCode::RANGE_NOT_SATISFIABLE if from > 0 => {
                    writer.restart().map_err(DownloadError::Blob)?;
                    written = 0;
                    progress(0);
                    continue 'download;
                }
                _ => return Err(DownloadError::Registry(status_error(call, response).await)),
            }
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        written += chunk.len() as u64;
                        if written > size {
                            return Err(DownloadError::TooLong(written));
                        }
                        writer.write_all(&chunk).map_err(DownloadError::Write)?;
                        progress(written);
                    }
                    Ok(None) => break 'download,
                    // Any failure while reading the body is the connection's (reqwest calls
                    // a body cut short a decode error): resume.
                    Err(_) if breaks < self.options.retries => {
                        backoff(breaks).await;
                        breaks += 1;
                        continue 'download;
                    }
                    Err(source) => {
                        return Err(DownloadError::Registry(RegistryError::Http {
                            registry: call.registry.to_string(),
                            what: call.what.clone(),
                            source,
                        }));
                    }
                }
            }
        }
        Ok(())
    }

    /// Pushes the blob `digest` of `size` bytes from `store` to `repo`: skipped when the
    /// registry has it, mounted when `mount_from` (another repository of the same registry)
    /// has it, else uploaded: in one PUT up to the chunk size, else in PATCH chunks, resuming
    /// after a broken chunk from the offset the registry reports.
    pub async fn push_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
        mount_from: Option<&str>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<BlobSource, RegistryError> {
        if self
            .head_blob(repo, digest, repo.push_scope())
            .await?
            .is_some()
        {
            progress(size);
            return Ok(BlobSource::Existed);
        }
        let mut restarts = 0;
        loop {
            let location = match self.start_upload(repo, digest, mount_from).await? {
                None => {
                    progress(size);
                    return Ok(BlobSource::Mounted);
                }
                Some(location) => location,
            };
            match self
                .upload(repo, digest, size, store, location, progress)
                .await
            {
                Ok(()) => return Ok(BlobSource::Uploaded),
                // The upload session is gone or broken (the registry restarted or expired it;
                // distribution cancels an upload whose offset is not the one its state says,
                // as after a chunk cut off half way): start a new one.
                Err(err) if is_lost_upload(&err) && restarts < self.options.retries => {
                    backoff(restarts).await;
                    restarts += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// POSTs a new upload (or a mount). `None` when the mount succeeded; else the upload's
    /// location.
    async fn start_upload(
        &self,
        repo: &Repository,
        digest: &Digest,
        mount_from: Option<&str>,
    ) -> Result<Option<Url>, RegistryError> {
        let mount_from = mount_from.filter(|from| *from != repo.path);
        let mut scopes = vec![repo.push_scope()];
        let mut url = self.url(repo, "blobs/uploads/")?;
        if let Some(from) = mount_from {
            scopes.push(format!("repository:{from}:pull"));
            url.query_pairs_mut()
                .append_pair("mount", &digest.to_string())
                .append_pair("from", from);
        }
        let call = Call {
            registry: &repo.registry,
            scopes,
            what: format!("push blob {digest} to {}", repo.path),
            retry: true,
        };
        let response = self.send(&call, || self.http.post(url.clone())).await?;
        match response.status() {
            StatusCode::CREATED if mount_from.is_some() => Ok(None),
            StatusCode::ACCEPTED => Ok(Some(location(&call, &url, &response)?)),
            _ => Err(status_error(&call, response).await),
        }
    }

    /// Uploads the blob into the session at `location` and completes it.
    async fn upload(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
        mut location: Url,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), RegistryError> {
        let call = Call {
            registry: &repo.registry,
            scopes: vec![repo.push_scope()],
            what: format!("push blob {digest} to {}", repo.path),
            retry: true,
        };
        let file = store
            .open_blob(digest)
            .map_err(|source| RegistryError::Blob {
                registry: repo.registry.clone(),
                digest: digest.clone(),
                source,
            })?;
        let read = |offset: u64, len: u64| -> Result<Vec<u8>, RegistryError> {
            use std::os::unix::fs::FileExt as _;
            let mut buffer = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
            file.read_exact_at(&mut buffer, offset).map_err(|e| {
                RegistryError::Fs(crate::sys::FsError::new("read", &store.path(digest), e))
            })?;
            Ok(buffer)
        };
        let chunk = self.options.chunk_size.max(1);
        if size <= chunk {
            let body = read(0, size)?;
            let url = with_digest(&location, digest);
            let response = self
                .send(&call, || {
                    self.http
                        .put(url.clone())
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .body(body.clone())
                })
                .await?;
            if response.status() != StatusCode::CREATED && !response.status().is_success() {
                return Err(status_error(&call, response).await);
            }
            progress(size);
            return Ok(());
        }
        let patch_call = Call {
            retry: false,
            ..call
        };
        let mut offset = 0;
        let mut breaks = 0;
        while offset < size {
            let len = chunk.min(size - offset);
            let body = read(offset, len)?;
            let url = location.clone();
            let sent = self
                .send(&patch_call, || {
                    self.http
                        .patch(url.clone())
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(
                            header::CONTENT_RANGE,
                            format!("{}-{}", offset, offset + len - 1),
                        )
                        .body(body.clone())
                })
                .await;
            let broken = match sent {
                Ok(response) if response.status() == StatusCode::ACCEPTED => {
                    location = self::location(&patch_call, &url, &response)?;
                    offset += len;
                    progress(offset);
                    continue;
                }
                Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                    return Err(status_error(&patch_call, response).await);
                }
                Ok(response) => status_error(&patch_call, response).await,
                Err(err @ RegistryError::Http { .. }) => err,
                Err(err) => return Err(err),
            };
            if breaks >= self.options.retries {
                return Err(broken);
            }
            backoff(breaks).await;
            breaks += 1;
            // Ask the registry how much it has, and go on from there.
            let (resumed_location, resumed_offset) =
                self.upload_status(&patch_call, &location).await?;
            location = resumed_location;
            offset = resumed_offset.min(size);
            progress(offset);
        }
        let url = with_digest(&location, digest);
        let response = self
            .send(&call_for_put(&patch_call), || self.http.put(url.clone()))
            .await?;
        if response.status() != StatusCode::CREATED && !response.status().is_success() {
            return Err(status_error(&patch_call, response).await);
        }
        Ok(())
    }

    /// `GET` on an upload's location: where it goes on and how many bytes the registry has
    /// (`Range: 0-N` means N+1; no header means none).
    async fn upload_status(
        &self,
        call: &Call<'_>,
        location: &Url,
    ) -> Result<(Url, u64), RegistryError> {
        let status_call = Call {
            registry: call.registry,
            scopes: call.scopes.clone(),
            what: call.what.clone(),
            retry: true,
        };
        let response = self
            .send(&status_call, || self.http.get(location.clone()))
            .await?;
        if response.status() != StatusCode::NO_CONTENT && !response.status().is_success() {
            return Err(status_error(&status_call, response).await);
        }
        let offset = header_text(response.headers(), header::RANGE.as_str())
            .and_then(|range| {
                let end = range.rsplit_once('-')?.1.trim().parse::<u64>().ok()?;
                end.checked_add(1)
            })
            .unwrap_or(0);
        let next = self::location(&status_call, location, &response).unwrap_or(location.clone());
        Ok((next, offset))
    }
}

/// Whether an upload failed because the registry lost or refused its session.
fn is_lost_upload(err: &RegistryError) -> bool {
    match err {
        RegistryError::NotFound { .. } => true,
        // Not DIGEST_INVALID: uploading the same bytes again would not help.
        RegistryError::Status {
            status, message, ..
        } => *status == 416 || (*status == 400 && message.contains("BLOB_UPLOAD")),
        _ => false,
    }
}

/// The completing PUT may be retried: it carries no data.
fn call_for_put<'a>(call: &Call<'a>) -> Call<'a> {
    Call {
        registry: call.registry,
        scopes: call.scopes.clone(),
        what: call.what.clone(),
        retry: true,
    }
}

/// `location` with `digest=DIGEST` added to its query (it may have one already: distribution
/// keeps the upload's state there).
fn with_digest(location: &Url, digest: &Digest) -> Url {
    let mut url = location.clone();
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    url
}

/// The `Location` of an upload reply, resolved against the request's URL (registries may send
/// a path only).
fn location(call: &Call<'_>, request: &Url, response: &Response) -> Result<Url, RegistryError> {
    let text = header_text(response.headers(), header::LOCATION.as_str()).ok_or_else(|| {
        RegistryError::Document {
            registry: call.registry.to_string(),
            what: format!("the reply to {}", call.what),
            reason: "it has no Location header".into(),
        }
    })?;
    request.join(&text).map_err(|e| RegistryError::Document {
        registry: call.registry.to_string(),
        what: format!("the reply to {}", call.what),
        reason: Reason::caused_by(format!("its Location {text:?} is not a URL"), e).into(),
    })
}

/// The first byte of a 206 reply (`Content-Range: bytes START-END/TOTAL`).
fn range_start(response: &Response) -> Option<u64> {
    let range = header_text(response.headers(), header::CONTENT_RANGE.as_str())?;
    let range = range.trim().strip_prefix("bytes")?.trim();
    range.split('-').next()?.trim().parse().ok()
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
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

/// Reads a reply body of at most [`MAX_DOCUMENT_SIZE`] bytes.
async fn read_capped(
    mut response: Response,
    registry: &str,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        registry: registry.to_string(),
        what: what.to_string(),
        limit: MAX_DOCUMENT_SIZE,
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_SIZE)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if (bytes.len() + chunk.len()) as u64 > MAX_DOCUMENT_SIZE {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes),
            Err(source) => {
                return Err(RegistryError::Http {
                    registry: registry.to_string(),
                    what: format!("read {what}"),
                    source,
                });
            }
        }
    }
}

/// The registry's error reply as one line: `CODE: message` of each entry of its `errors`
/// list, else the start of the body.
async fn error_message(response: Response) -> String {
    let Ok(body) = response.bytes().await else {
        return String::new();
    };
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(errors) = serde_json::from_slice::<Errors>(&body) {
        return errors
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    String::from_utf8_lossy(&body)
        .chars()
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The error for an unexpected status.
async fn status_error(call: &Call<'_>, response: Response) -> RegistryError {
    let status = response.status();
    let registry = call.registry.to_string();
    let what = call.what.clone();
    let message = error_message(response).await;
    match status {
        StatusCode::NOT_FOUND => RegistryError::NotFound {
            registry,
            what,
            message,
        },
        StatusCode::UNAUTHORIZED => RegistryError::Unauthorized {
            registry,
            what,
            message,
        },
        StatusCode::FORBIDDEN => RegistryError::Denied {
            registry,
            what,
            message,
        },
        _ => RegistryError::Status {
            registry,
            what,
            status: status.as_u16(),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_to_url() {
        let client = Client::new(ClientOptions {
            insecure_registries: vec!["reg.internal:5000".into()],
            ..ClientOptions::default()
        })
        .unwrap();
        let cases = [
            (
                "alpine",
                "https://registry-1.docker.io/v2/library/alpine/manifests/latest",
            ),
            (
                "user/app:1",
                "https://registry-1.docker.io/v2/user/app/manifests/1",
            ),
            (
                "localhost:5000/a/b:t",
                "http://localhost:5000/v2/a/b/manifests/t",
            ),
            (
                "127.0.0.1:5000/x",
                "http://127.0.0.1:5000/v2/x/manifests/latest",
            ),
            ("127.1.2.3:80/x", "http://127.1.2.3/v2/x/manifests/latest"),
            ("[::1]:5000/x", "http://[::1]:5000/v2/x/manifests/latest"),
            (
                "reg.internal:5000/x",
                "http://reg.internal:5000/v2/x/manifests/latest",
            ),
            (
                "reg.internal:5001/x",
                "https://reg.internal:5001/v2/x/manifests/latest",
            ),
            ("ghcr.io/o/r:v", "https://ghcr.io/v2/o/r/manifests/v"),
        ];
        for (text, expected) in cases {
            let reference = Reference::parse_normalized(text)
                .unwrap()
                .with_default_tag();
            let repo = Repository::of(&reference);
            let url = client
                .url(&repo, &format!("manifests/{}", reference.tag().unwrap()))
                .unwrap();
            assert_eq!(url.as_str(), expected, "{text}");
        }
    }

    #[test]
    fn loopback_detection() {
        for (registry, insecure) in [
            ("localhost", true),
            ("localhost:5000", true),
            ("127.0.0.1:5000", true),
            ("127.255.0.1", true),
            ("[::1]:5000", true),
            ("128.0.0.1:5000", false),
            ("localhost.example.com", false),
            ("docker.io", false),
        ] {
            assert_eq!(is_insecure_by_default(registry), insecure, "{registry}");
        }
    }

    #[test]
    fn upload_urls_keep_their_query() {
        let location = Url::parse("http://r/v2/a/blobs/uploads/u?_state=abc").unwrap();
        let digest = Digest::of(b"");
        assert_eq!(
            with_digest(&location, &digest).as_str(),
            format!(
                "http://r/v2/a/blobs/uploads/u?_state=abc&digest=sha256%3A{}",
                digest.hex()
            )
        );
    }
}
