//! Content-addressed storage: digests and the blob store that the OCI layout is built on.

pub mod digest;

pub use digest::{Digest, DigestError, Hashing};
