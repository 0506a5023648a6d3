//! Content-addressed storage: digests, crash-safe writes and the blob store that the OCI layout
//! is built on.

pub mod atomic;
pub mod blob;
pub mod digest;

pub use atomic::{FsError, Staging, atomic_write, atomic_write_in, fsync_dir};
pub use blob::{BlobError, BlobReader, BlobRef, BlobStore, BlobWriter, MAX_DOCUMENT_SIZE};
pub use digest::{Digest, DigestError, Hashing};
