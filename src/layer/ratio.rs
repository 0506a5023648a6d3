//! The decompression ratio cap: how many bytes a compressed stream from outside (a pulled or
//! loaded layer, an imported root filesystem, an archive `ADD` extracts, a context tar, a
//! `--cache-from` layer) may expand to per compressed byte, next to the absolute cap of
//! [`super::Limited`].
//!
//! Real layers compress 2–10× (text-heavy ones up to ~30×); gzip's best is ~1030× (a stream of
//! zeros), zstd's far more. A ratio of [`DEFAULT_MAX_RATIO`] (100×) is well above real layers
//! and stops a 2 MB gzip of 2 GiB of zeros after 64 MiB instead of unpacking it whole. Small
//! streams are not judged ([`RATIO_FLOOR`]): a layer holding a few MiB of zeros is harmless
//! whatever its ratio. containerd and BuildKit have no such cap (only the disk's size bounds
//! them); `KILN_MAX_DECOMPRESSION_RATIO` sets it (`0` turns it off), as
//! [`RatioLimit::from_env`] reads it, and library callers pass their own [`RatioLimit`].
//!
//! The cap lives here once: [`ratio_bounded`] wraps any decoder (gzip, zstd, bzip2, xz),
//! counting the compressed bytes it reads and the bytes it gives out.

use super::LayerError;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The default most expanded bytes per compressed byte.
pub const DEFAULT_MAX_RATIO: u64 = 100;

/// Expanded bytes below which no ratio is judged (64 MiB).
pub const RATIO_FLOOR: u64 = 64 << 20;

/// The environment variable that sets the ratio (a whole number; `0` turns the cap off).
pub const RATIO_ENV: &str = "KILN_MAX_DECOMPRESSION_RATIO";

/// How far a compressed stream may expand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatioLimit {
    /// The most expanded bytes per compressed byte; `None`: no cap.
    pub max_ratio: Option<u64>,
    /// Expanded bytes below which the ratio is not judged.
    pub floor: u64,
}

impl Default for RatioLimit {
    fn default() -> Self {
        RatioLimit {
            max_ratio: Some(DEFAULT_MAX_RATIO),
            floor: RATIO_FLOOR,
        }
    }
}

impl RatioLimit {
    /// No ratio cap.
    pub const UNLIMITED: RatioLimit = RatioLimit {
        max_ratio: None,
        floor: 0,
    };

    /// The default, or what [`RATIO_ENV`] says. A value that is not a whole number is an error
    /// naming the variable (never silently the default).
    pub fn from_env() -> Result<RatioLimit, LayerError> {
        let Some(value) = std::env::var_os(RATIO_ENV) else {
            return Ok(RatioLimit::default());
        };
        let text = value.to_string_lossy();
        match text.trim().parse::<u64>() {
            Ok(0) => Ok(RatioLimit::UNLIMITED),
            Ok(ratio) => Ok(RatioLimit {
                max_ratio: Some(ratio),
                floor: RATIO_FLOOR,
            }),
            Err(_) => Err(LayerError::BadRatioSetting {
                variable: RATIO_ENV,
                value: crate::error::escape_controls(&text),
            }),
        }
    }
}

/// A reader that counts the bytes read through it into a shared counter.
pub struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

/// A decoder's output that fails with [`LayerError::TooCompressed`] (inside the io error;
/// [`LayerError::from_read`] gets it back) once more than [`RatioLimit::floor`] bytes came out
/// and they are more than the ratio times the compressed bytes read so far.
pub struct RatioBounded<D> {
    inner: D,
    compressed: Arc<AtomicU64>,
    expanded: u64,
    limit: RatioLimit,
}

impl<D: Read> Read for RatioBounded<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.expanded = self.expanded.saturating_add(read as u64);
        if let Some(max_ratio) = self.limit.max_ratio
            && self.expanded > self.limit.floor
        {
            let compressed = self.compressed.load(Ordering::Relaxed).max(1);
            if self.expanded > compressed.saturating_mul(max_ratio) {
                return Err(io::Error::other(LayerError::TooCompressed {
                    expanded: self.expanded,
                    compressed,
                    max_ratio,
                }));
            }
        }
        Ok(read)
    }
}

/// `decoder` made over `raw` (counted), its output bounded by `limit`'s ratio.
pub fn ratio_bounded<'a, R, D>(
    raw: R,
    limit: RatioLimit,
    decoder: impl FnOnce(Counting<R>) -> io::Result<D>,
) -> io::Result<RatioBounded<D>>
where
    R: Read + 'a,
    D: Read + 'a,
{
    let compressed = Arc::new(AtomicU64::new(0));
    let inner = decoder(Counting {
        inner: raw,
        count: compressed.clone(),
    })?;
    Ok(RatioBounded {
        inner,
        compressed,
        expanded: 0,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `mib` MiB of zeros as a multi-member gzip: one member of 1 MiB compressed once and
    /// repeated (quick even in a debug build).
    fn gzip_of_zeros(mib: usize) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&[0u8; 1 << 20]).unwrap();
        encoder.finish().unwrap().repeat(mib)
    }

    fn gunzip(compressed: &[u8], limit: RatioLimit) -> io::Result<u64> {
        let mut reader = ratio_bounded(compressed, limit, |counted| {
            Ok(flate2::read::MultiGzDecoder::new(counted))
        })?;
        io::copy(&mut reader, &mut io::sink())
    }

    #[test]
    fn a_stream_past_the_ratio_fails_soon_after_the_floor() {
        let bomb = gzip_of_zeros(256);
        let limit = RatioLimit {
            max_ratio: Some(100),
            floor: 8 << 20,
        };
        let error = gunzip(&bomb, limit).unwrap_err();
        match LayerError::from_read(error) {
            LayerError::TooCompressed {
                expanded,
                compressed,
                max_ratio: 100,
            } => {
                assert!(expanded <= (8 << 20) + (1 << 20), "read far past the floor");
                assert!(expanded > compressed * 100);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_or_ordinary_streams_pass() {
        // Below the floor, any ratio passes.
        let small = gzip_of_zeros(4);
        assert_eq!(gunzip(&small, RatioLimit::default()).unwrap(), 4 << 20);
        // Past the floor, a stream within the ratio passes (pseudo-random bytes barely compress).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..(3 << 20))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&noise).unwrap();
        let compressed = encoder.finish().unwrap();
        let limit = RatioLimit {
            max_ratio: Some(2),
            floor: 1 << 20,
        };
        assert_eq!(gunzip(&compressed, limit).unwrap(), 3 << 20);
        // No cap at all.
        let bomb = gzip_of_zeros(16);
        assert_eq!(gunzip(&bomb, RatioLimit::UNLIMITED).unwrap(), 16 << 20);
    }
}
