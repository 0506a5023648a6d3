//! Content-addressed storage: digests, crash-safe writes and the blob store that the OCI layout
//! is built on; the build cache's context checksums and records.

pub mod atomic;
pub mod blob;
pub mod checksum;
pub mod digest;
mod error;
pub mod records;
pub mod shared;
pub mod transport;

pub use atomic::{FsError, Staging, atomic_write, atomic_write_in, fsync_dir};
pub use blob::{BlobError, BlobReader, BlobRef, BlobStore, BlobWriter, MAX_DOCUMENT_SIZE};
pub use checksum::{ContentSum, FileSum, StatCache, checksum_paths};
pub use digest::{Digest, DigestError, Hashing};
pub use error::CacheError;
pub use records::{CacheRecords, KeyParts};
pub use transport::{CacheTransport, TransportError};
