//! The leaf vocabulary every other module speaks: content digests, image references, platforms,
//! media types, RFC 3339 timestamps, the CSV records of option values. Nothing here does I/O beyond hashing bytes it is given.

pub mod csv;
pub mod digest;
pub mod media_type;
pub mod platform;
pub mod reference;
pub mod timestamp;

pub use digest::{Digest, DigestError, Hashing};
pub use platform::{Platform, PlatformError};
pub use reference::{Reference, ReferenceError};
