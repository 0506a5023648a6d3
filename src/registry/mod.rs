//! An OCI distribution-spec client: pull images from any registry into the store, push images
//! from the store, log in and out.
//!
//! - [`Client`] speaks the protocol (async on tokio, reqwest with rustls): manifests with content
//!   negotiation, blobs streamed into the [`crate::store::BlobStore`] with digest and size
//!   verified on the way, chunked and monolithic uploads, cross-repository mounts, retries with
//!   backoff, resumed downloads and uploads, and the auth flows (anonymous, basic, bearer tokens
//!   from the `WWW-Authenticate` challenge).
//! - [`auth`] reads and writes docker's `config.json` (`auths`, `credsStore`, `credHelpers`).
//! - [`manifest`] parses manifests and indexes and chooses a platform's entry.
//! - [`pull`] and [`push`] move whole images.
//!
//! It imports nothing of the build cache: the shared cache's registry transport
//! (`cache::remote::RegistryCache`) is built on this client, and a push that meets a layer held
//! only by a shared cache is handed a [`crate::store::FetchOrigins`] to fetch it.

pub mod auth;
mod client;
pub mod manifest;
mod transfer;

pub use auth::{Credentials, DockerConfig};
pub use client::{BlobSource, Client, ClientOptions, Repository, api_host, is_insecure_by_default};
pub use manifest::Manifest;
pub use transfer::{
    BlobEvent, BlobStatus, DEFAULT_MAX_LAYER_BYTES, NoProgress, PullPolicy, PushFormat,
    TransferProgress, pull, push, push_described, push_with,
};

use crate::error::{Cause, Reason};
use crate::oci::Digest;
use crate::oci::reference::ReferenceError;
use crate::store::BlobError;
use crate::store::StoreError;
use crate::sys::FsError;

/// A registry operation that failed. Messages name the registry, the repository and the
/// manifest or blob concerned, and what to do when the user can act.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The connection failed (after retries): refused, reset, TLS, timeout.
    #[error("cannot {what} on {registry}")]
    Http {
        registry: String,
        what: String,
        source: reqwest::Error,
    },
    /// The registry answered with an error status.
    #[error("cannot {what} on {registry}: the registry answered {status}{}", detail(.message))]
    Status {
        registry: String,
        what: String,
        status: u16,
        message: String,
    },
    /// 401 after trying the credentials (or without any).
    #[error(
        "unauthorized: cannot {what} on {registry}{}: run `kiln login {registry}`",
        detail(.message)
    )]
    Unauthorized {
        registry: String,
        what: String,
        message: String,
    },
    /// 403: the credentials are valid but do not allow this.
    #[error("denied: cannot {what} on {registry}{}; check that the account may access it", detail(.message))]
    Denied {
        registry: String,
        what: String,
        message: String,
    },
    /// The manifest, repository or blob does not exist.
    #[error("not found: {what} on {registry}{}", detail(.message))]
    NotFound {
        registry: String,
        what: String,
        message: String,
    },
    /// A document's bytes are not what their digest promised.
    #[error(
        "{what} from {registry} does not match its digest: expected {expected}, got {actual} \
         (the registry or something between it and kiln altered it)"
    )]
    DigestMismatch {
        registry: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    /// A blob failed verification on its way into the store; nothing of it was stored.
    #[error("blob {digest} from {registry}")]
    Blob {
        registry: String,
        digest: Digest,
        source: BlobError,
    },
    /// A manifest or config larger than [`crate::store::MAX_DOCUMENT_SIZE`].
    #[error("{what} from {registry} is larger than the {limit}-byte limit for a JSON document")]
    TooLarge {
        registry: String,
        what: String,
        limit: u64,
    },
    /// A manifest, index or token reply that kiln cannot use.
    #[error("{what} from {registry} is not valid")]
    Document {
        registry: String,
        what: String,
        #[source]
        reason: Cause,
    },
    /// The index has no manifest for the platform asked for.
    #[error(
        "{reference} has no image for platform {platform} (it has: {}); choose one with --platform",
        .available.join(", ")
    )]
    NoPlatform {
        reference: String,
        platform: String,
        available: Vec<String>,
    },
    #[error("invalid image reference {text:?}")]
    Reference {
        text: String,
        source: ReferenceError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
    /// docker's `config.json` cannot be used.
    #[error("docker config {}", .path.display())]
    Config {
        path: std::path::PathBuf,
        #[source]
        reason: Reason,
    },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper} failed to {action} for {registry}")]
    Helper {
        helper: String,
        action: &'static str,
        registry: String,
        #[source]
        reason: Reason,
    },
    #[error("cannot start the registry client's threads")]
    Runtime(#[source] std::io::Error),
    /// A layer of the image being pushed is not in the store (the image was built from a
    /// shared cache) and could not be fetched from where the cache keeps it.
    #[error("layer {digest} of the image is not in the store")]
    AbsentLayer {
        digest: Digest,
        #[source]
        reason: Cause,
    },
    /// A layer absent from the store could not be fetched from its recorded origin.
    #[error(
        "layer {digest} of the image is not in the store and cannot be fetched from its origin"
    )]
    FetchAbsent {
        digest: Digest,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HTTP client could not be set up (TLS roots).
    #[error("cannot set up the HTTP client")]
    Setup(#[source] Cause),
}

impl RegistryError {
    /// Whether this is a 404 (unknown manifest, blob or repository).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }
}

/// `: message` when there is one.
fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}
