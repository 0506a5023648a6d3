//! The leaf vocabulary every other module speaks: content digests, image references, RFC 3339
//! timestamps. Nothing here does I/O beyond hashing bytes it is given.

pub mod digest;
pub mod reference;
pub mod timestamp;

pub use digest::{Digest, DigestError, Hashing};
pub use reference::{Reference, ReferenceError};
