//! Where a shared build cache lives: the seam between the build cache (which decides what to
//! export and import, [`crate::cache`]) and the places that hold it: an OCI layout directory on
//! shared storage, or a repository in an OCI registry (`crate::registry`).
//!
//! A transport holds one cache manifest (the cache graph, an OCI artifact) and the blobs it
//! names. It is blocking on purpose: the builder calls it from the solver's blocking threads
//! (and from the CLI's main thread), never from inside an async task; a transport that talks
//! async (the registry's) runs its futures on a runtime of its own.

use crate::oci::Digest;
use crate::store::BlobOrigin;
use crate::store::{BlobRef, BlobStore};

/// A transport's failure, as the transport words it (it names the directory or registry, the
/// blob or manifest, and what to do).
pub type TransportError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One place that holds a shared build cache.
pub trait CacheTransport: Send + Sync + std::fmt::Debug {
    /// What the transport is, for messages: `registry 127.0.0.1:5000/cache:main`,
    /// `directory /mnt/cache`.
    fn describe(&self) -> String;

    /// The cache manifest's media type and bytes, or `None` when no cache has been written here
    /// yet (a missing cache is not an error: the build runs cold).
    fn read_manifest(&self) -> Result<Option<(String, Vec<u8>)>, TransportError>;

    /// Replaces the cache manifest. Every blob it names was pushed first. Readers see the old
    /// manifest or the new one, never a mix; when two builders write, the last write wins.
    fn write_manifest(&self, media_type: &str, bytes: &[u8]) -> Result<(), TransportError>;

    /// Whether the transport holds the blob `digest`.
    fn has_blob(&self, digest: &Digest) -> Result<bool, TransportError>;

    /// Copies the blob `digest` of `size` bytes into `store`, verifying digest and size on the
    /// way in: on a mismatch it is an error and nothing enters the store.
    fn fetch_blob(
        &self,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
    ) -> Result<BlobRef, TransportError>;

    /// Copies the blob `digest` of `size` bytes from `store` to the transport, unless the
    /// transport holds it already.
    fn push_blob(
        &self,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
    ) -> Result<(), TransportError>;

    /// Where a later process that does not have this transport (`kiln run`, `kiln save`) can
    /// fetch a blob it holds: recorded in the store for the layers of an image built from the
    /// cache that stay absent ([`crate::store::Store::record_origin`]). `None` (the
    /// default) has the builder fetch such layers before it writes the image.
    fn origin(&self) -> Option<BlobOrigin> {
        None
    }
}
