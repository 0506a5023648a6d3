//! Content-addressed storage: digests, crash-safe writes and the blob store that the OCI layout
//! is built on; the build cache's context checksums and records.

pub mod checksum;
mod error;
pub mod records;
pub mod remote;

pub use checksum::{ContentSum, FileSum, StatCache, checksum_paths};
pub use error::CacheError;
pub use records::{CacheRecords, KeyParts};
