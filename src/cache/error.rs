//! The error of the build cache's checksums and records ([`crate::cache::checksum`],
//! [`crate::cache::records`]).

use crate::sys::FsError;
use std::io;
use std::path::PathBuf;

/// A build-context checksum or a cache record that could not be computed or stored.
///
/// A cache that cannot be *read* is never an error (it is dropped and rebuilt); these are the
/// failures that leave kiln unable to tell what a step reads or to keep what it built.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A store file or directory could not be created, written or renamed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A path handed to the checksum is not a clean context-relative path.
    #[error(
        "{path:?} is not a clean path relative to the build context ({reason}); \
         pass paths as BuildContext::select_sources lists them"
    )]
    BadPath { path: String, reason: &'static str },
    /// A context file listed for the checksum is gone.
    #[error(
        "build context file {path} disappeared while kiln was checksumming it; \
         run the build again once the context stops changing"
    )]
    Vanished { path: String },
    /// A context file was replaced by something else while kiln looked at it.
    #[error(
        "build context file {path} changed while kiln was checksumming it ({what}); \
         run the build again once the context stops changing"
    )]
    Changed { path: String, what: &'static str },
    /// A context file cannot be opened or read.
    #[error(
        "cannot read build context file {path}: {cause}; make it readable or exclude it in .dockerignore"
    )]
    Read {
        path: String,
        /// The underlying error; it is part of this message, not a `source()`: the hint has to follow it, which a chain
        /// (`a: b: c`) cannot say; it is printed once all the same.
        cause: io::Error,
    },
    /// A cache record cannot be encoded as JSON.
    #[error("cannot encode cache record {}", path.display())]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
}
