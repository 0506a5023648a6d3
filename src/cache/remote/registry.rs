//! The registry side of the shared build cache: one repository reference holds the cache
//! manifest (under its tag) and the blobs it names ([`crate::cache::remote::CacheTransport`]).

use crate::cache::remote::{CacheTransport, TransportError};
use crate::oci::Digest;
use crate::oci::media_type::OCI_MANIFEST;
use crate::oci::reference::Reference;
use crate::registry::RegistryError;
use crate::registry::manifest;
use crate::registry::{Client, Repository};
use crate::store::BlobOrigin;
use crate::store::{BlobRef, BlobStore};

/// A build cache kept in a registry repository, at `reference`'s tag (`latest` when it names
/// none).
///
/// Its methods block: they run the client's futures on a tokio runtime the cache owns, so
/// call them from plain threads or tokio's blocking pool, never from inside an async task.
#[derive(Debug)]
pub struct RegistryCache {
    client: Client,
    repo: Repository,
    tag: String,
    reference: String,
    /// `None` only while the cache is dropped (see the `Drop` impl).
    runtime: Option<tokio::runtime::Runtime>,
}

impl RegistryCache {
    /// A cache at `reference`, spoken to with `client`'s options and credentials (over a
    /// connection pool of its own: connections belong to the runtime that opened them).
    pub fn new(client: Client, reference: Reference) -> Result<RegistryCache, RegistryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kiln-registry-cache")
            .enable_all()
            .build()
            .map_err(RegistryError::Runtime)?;
        let reference = reference.with_default_tag();
        Ok(RegistryCache {
            client: client.for_other_runtime()?,
            repo: Repository::of(&reference),
            tag: reference.tag().unwrap_or("latest").to_string(),
            reference: reference.to_string(),
            runtime: Some(runtime),
        })
    }

    /// Runs `future` to completion on the cache's own runtime.
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match &self.runtime {
            Some(runtime) => runtime.block_on(future),
            None => unreachable!("the runtime is taken only when the cache is dropped"),
        }
    }
}

/// A tokio runtime dropped the ordinary way blocks until its threads stop, which tokio refuses
/// (a panic) inside an async context, where a library caller may well drop its build options.
/// `shutdown_background` stops it without waiting, which is allowed anywhere.
impl Drop for RegistryCache {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl CacheTransport for RegistryCache {
    fn describe(&self) -> String {
        format!("registry {}", self.reference)
    }

    fn read_manifest(&self) -> Result<Option<(String, Vec<u8>)>, TransportError> {
        match self.block_on(self.client.get_manifest(&self.repo, &self.tag)) {
            Ok((manifest, _)) => Ok(Some((
                manifest.media_type().to_string(),
                manifest.bytes().to_vec(),
            ))),
            // MANIFEST_UNKNOWN or NAME_UNKNOWN: no cache written here yet.
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    fn write_manifest(&self, media_type: &str, bytes: &[u8]) -> Result<(), TransportError> {
        let media_type = if media_type.is_empty() {
            OCI_MANIFEST
        } else {
            media_type
        };
        if manifest::is_index_type(media_type) {
            return Err(format!(
                "the cache manifest for {} must be an image manifest, not an index ({media_type})",
                self.reference
            )
            .into());
        }
        self.block_on(
            self.client
                .put_manifest(&self.repo, &self.tag, media_type, bytes),
        )
        .map(|_| ())
        .map_err(Into::into)
    }

    fn has_blob(&self, digest: &Digest) -> Result<bool, TransportError> {
        self.block_on(self.client.blob_size(&self.repo, digest))
            .map(|size| size.is_some())
            .map_err(Into::into)
    }

    fn fetch_blob(
        &self,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
    ) -> Result<BlobRef, TransportError> {
        self.block_on(
            self.client
                .fetch_blob(&self.repo, digest, size, store, &|_| {}),
        )
        .map_err(Into::into)
    }

    fn push_blob(
        &self,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
    ) -> Result<(), TransportError> {
        self.block_on(
            self.client
                .push_blob(&self.repo, digest, size, store, None, &|_| {}),
        )
        .map(|_| ())
        .map_err(Into::into)
    }

    /// The repository: a later process fetches an absent layer of an image built from this
    /// cache from there ([`BlobOrigin::Registry`]).
    fn origin(&self) -> Option<BlobOrigin> {
        Some(BlobOrigin::Registry(self.repo.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ClientOptions;

    #[test]
    fn dropping_it_inside_an_async_task_does_not_panic() {
        let client = Client::new(ClientOptions::default()).expect("client");
        let reference = Reference::parse_normalized("127.0.0.1:1/cache").expect("reference");
        let cache = RegistryCache::new(client, reference).expect("cache");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async move { drop(cache) });
    }
}
