//! OCI image layers: tar changesets of a root filesystem.
//!
//! - [`compression`]: the layer media types and (de)compression, with a cap on decompressed bytes.
//! - [`apply`]: unpacks a layer tar under a root directory, confined to it (no entry can create,
//!   change or follow anything outside), turning whiteouts into overlay whiteouts or deletions.
//! - [`diff`]: writes a layer tar of an overlay upper directory, deterministically.
//! - [`tree`]: a layer stack copied into one plain directory, and its changes since as an
//!   overlay upper directory (`--isolation=chroot`).
//! - [`rewrite`]: clamps a layer tar's timestamps to `SOURCE_DATE_EPOCH` (`rewrite-timestamp`).
//!
//! The rules follow Docker's and containerd's (moby `pkg/archive`, containerd `archive/tar.go`);
//! where kiln differs, the item that differs says why.

pub mod apply;
pub mod compression;
pub mod diff;
pub mod ratio;
pub mod rewrite;
#[cfg(test)]
mod round_trip;
pub mod tree;
pub mod union;

pub use apply::{AppliedLayer, ApplyOptions, Whiteouts, apply_layer};
pub use compression::{
    Compression, CompressionConfig, ExportFormat, FormatOptionError, compress, compress_with,
    decompressed, decompressed_with, recompress,
};
pub use diff::{
    OwnerMap, UpperEntry, UpperKind, upper_entries, write_layer, write_layer_excluding,
    write_layer_mapped,
};
pub use ratio::RatioLimit;

use std::io;
use std::path::PathBuf;

/// A name prefix that marks a whiteout: `.wh.NAME` deletes `NAME` from the layers below.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The prefix of whiteout metadata names (AUFS's `.wh..wh.plnk`, `.wh..wh.aufs`, ...).
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// The entry that makes its directory opaque: nothing below it shows from lower layers.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";

/// Why a layer could not be read, applied or written.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A tar entry that would reach outside the root or that breaks the layer rules.
    #[error("unsafe layer entry {entry:?}: {reason}")]
    Unsafe {
        /// The entry's path as written in the tar (lossy UTF-8).
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// A tar entry whose header fields cannot be read or make no sense.
    #[error("malformed layer entry {entry:?}: {reason}")]
    Malformed {
        /// The entry's path (lossy UTF-8).
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// More uncompressed bytes than the configured limit (a decompression bomb or a huge entry).
    #[error(
        "layer is larger than the limit of {limit} uncompressed bytes (a decompression bomb or a \
         corrupt size); raise the limit if the layer is genuine"
    )]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A compressed stream that expands more than the ratio cap allows ([`ratio`]).
    #[error(
        "the compressed stream expands more than {max_ratio} times: {expanded} bytes out of \
         {compressed} compressed bytes (a decompression bomb?); if it is genuine, set \
         KILN_MAX_DECOMPRESSION_RATIO to a higher ratio, or to 0 for no ratio cap"
    )]
    TooCompressed {
        /// Bytes that came out.
        expanded: u64,
        /// Compressed bytes read for them.
        compressed: u64,
        /// The cap.
        max_ratio: u64,
    },
    /// `KILN_MAX_DECOMPRESSION_RATIO` is not a whole number.
    #[error("{variable}={value:?} is not a whole number (a ratio such as 100, or 0 for none)")]
    BadRatioSetting {
        variable: &'static str,
        value: String,
    },
    /// More entries than [`apply::MAX_ENTRIES`].
    #[error("layer has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// A tar entry of a kind that cannot be applied.
    #[error("unsupported layer entry {entry:?}: {reason}")]
    Unsupported {
        /// The entry's path (lossy UTF-8).
        entry: String,
        /// What is unsupported.
        reason: String,
    },
    /// A file operation failed; `path` is the tar entry's path (apply) or the file's path (diff).
    #[error("{}", crate::error::EscapedPath(path))]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An entry's owner has no host id: outside the ids of kiln's rootless user namespace.
    #[error(
        "layer entry {entry:?} belongs to {uid}:{gid}, outside the ids kiln's user namespace \
         maps (uids 0-{}, gids 0-{}: root and the user's ranges in /etc/subuid and \
         /etc/subgid); widen the ranges",
        uids.saturating_sub(1),
        gids.saturating_sub(1)
    )]
    UnmappedOwner {
        /// The entry's path (lossy UTF-8).
        entry: String,
        /// Its uid.
        uid: u32,
        /// Its gid.
        gid: u32,
        /// How many uids are mapped.
        uids: u32,
        /// How many gids are mapped.
        gids: u32,
    },
    /// The stream is not a readable tar (or its compressed form is corrupt).
    #[error("malformed layer tar")]
    Tar {
        /// The underlying error.
        source: io::Error,
    },
}

impl LayerError {
    /// Classifies an error from reading the layer stream: a [`LayerError::TooLarge`] raised inside
    /// a limiting reader comes back as itself, anything else is a malformed stream.
    pub(crate) fn from_read(error: io::Error) -> LayerError {
        match bound_error(&error) {
            Some(bound) => bound,
            None => LayerError::Tar { source: error },
        }
    }

    /// An [`LayerError::Unsafe`] for `entry` (raw tar path bytes).
    pub(crate) fn unsafe_entry(entry: &[u8], reason: impl Into<String>) -> LayerError {
        LayerError::Unsafe {
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
        }
    }
}

/// A bound's error (`TooLarge` of a [`Limited`] reader, `TooCompressed` or `BadRatioSetting` of
/// [`ratio`]) carried by `error`, looking through the wrappers that readers (the tar crate, the
/// decoders) put around the io error the bounding reader raised.
fn bound_error(error: &io::Error) -> Option<LayerError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = error.get_ref().map(|e| e as _);
    while let Some(inner) = current {
        match inner.downcast_ref::<LayerError>() {
            Some(LayerError::TooLarge { limit }) => {
                return Some(LayerError::TooLarge { limit: *limit });
            }
            Some(LayerError::TooCompressed {
                expanded,
                compressed,
                max_ratio,
            }) => {
                return Some(LayerError::TooCompressed {
                    expanded: *expanded,
                    compressed: *compressed,
                    max_ratio: *max_ratio,
                });
            }
            Some(LayerError::BadRatioSetting { variable, value }) => {
                return Some(LayerError::BadRatioSetting {
                    variable,
                    value: value.clone(),
                });
            }
            _ => {}
        }
        if let Some(io_error) = inner.downcast_ref::<io::Error>()
            && let Some(bound) = bound_error(io_error)
        {
            return Some(bound);
        }
        current = inner.source();
    }
    None
}

/// A reader that fails with [`LayerError::TooLarge`] (inside an io error) once more than `limit`
/// bytes have come out of it.
pub(crate) struct Limited<R> {
    inner: R,
    limit: u64,
    read: u64,
}

impl<R> Limited<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Limited<R> {
        Limited {
            inner,
            limit,
            read: 0,
        }
    }
}

impl<R: io::Read> io::Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.read = self.read.saturating_add(read as u64);
        if self.read > self.limit {
            return Err(io::Error::other(LayerError::TooLarge { limit: self.limit }));
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn limited_allows_exactly_the_limit_and_fails_past_it() {
        let mut exact = Limited::new(&[7u8; 10][..], 10);
        let mut out = Vec::new();
        assert_eq!(exact.read_to_end(&mut out).unwrap(), 10);

        let mut over = Limited::new(&[7u8; 11][..], 10);
        let error = over.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(matches!(
            LayerError::from_read(error),
            LayerError::TooLarge { limit: 10 }
        ));
    }

    #[test]
    fn too_large_is_found_through_wrapping_io_errors() {
        let inner = io::Error::other(LayerError::TooLarge { limit: 5 });
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, inner);
        assert!(matches!(
            LayerError::from_read(wrapped),
            LayerError::TooLarge { limit: 5 }
        ));
        assert!(matches!(
            LayerError::from_read(io::Error::other("bad header")),
            LayerError::Tar { .. }
        ));
    }
}
