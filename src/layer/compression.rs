//! Layer compression: bounded decompression, parallel compression, and the exporters' options
//! that choose it.
//!
//! A registry's media type may lie or be a Docker v2 type, so readers detect the compression from
//! the first bytes ([`decompressed`]), as containerd's `DecompressStream` does; the media type is
//! only what kiln writes into manifests ([`Compression::media_type`]).
//!
//! Writers compress on every core: zstd through libzstd's own worker threads (`zstdmt`), gzip as
//! pigz does ([`ParallelGzip`]): the input cut into chunks that are deflated in parallel (each
//! primed with the 32 KiB before it, so the ratio stays that of one stream), byte-aligned with a
//! sync flush and joined into one gzip member whose CRC is combined from the chunks'.
//! [`ExportFormat`] is BuildKit's exporter options for it (`compression=`,
//! `compression-level=`, `force-compression=`, `oci-mediatypes=`; `util/compression/attrs.go`,
//! `exporter/containerimage/opts.go`).

use super::ratio::{RatioLimit, ratio_bounded};
use super::{LayerError, Limited};
use crate::oci::{Digest, Hashing};
use flate2::{Compress, FlushCompress, Status};
use rayon::prelude::*;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::oci::csv::parse_go_bool;
pub use crate::oci::media_type::Compression;
use crate::oci::media_type::ZSTD_MAGIC;

/// A reader of the uncompressed tar in `reader`, whatever its compression (detected from the magic
/// bytes). Reading fails with [`LayerError::TooLarge`] (inside the io error;
/// [`LayerError::from_read`] gets it back, and [`super::apply_layer`] does) once more than `limit`
/// uncompressed bytes have come out, so a small gzip or zstd bomb cannot fill the disk. zstd's own
/// decoder also refuses frames whose window is over 128 MiB (its default `window_log_max` of 27),
/// which bounds the memory a hostile frame can ask for.
///
/// The expansion ratio is bounded too, as [`RatioLimit::from_env`] says
/// (`KILN_MAX_DECOMPRESSION_RATIO`; [`super::ratio`]): reading fails with
/// [`LayerError::TooCompressed`] past it.
pub fn decompressed<'a>(
    reader: impl Read + 'a,
    limit: u64,
) -> Result<Box<dyn Read + 'a>, LayerError> {
    decompressed_with(reader, limit, RatioLimit::from_env()?)
}

/// [`decompressed`] with the ratio cap `ratio` (not read from the environment).
pub fn decompressed_with<'a>(
    mut reader: impl Read + 'a,
    limit: u64,
    ratio: RatioLimit,
) -> Result<Box<dyn Read + 'a>, LayerError> {
    let mut prefix = Vec::with_capacity(ZSTD_MAGIC.len());
    (&mut reader)
        .take(ZSTD_MAGIC.len() as u64)
        .read_to_end(&mut prefix)
        .map_err(LayerError::from_read)?;
    let compression = Compression::detect(&prefix);
    let whole = io::Cursor::new(prefix).chain(reader);
    Ok(match compression {
        Compression::None => Box::new(Limited::new(whole, limit)),
        Compression::Gzip => {
            let decoder = ratio_bounded(whole, ratio, |raw| {
                Ok(flate2::read::MultiGzDecoder::new(raw))
            })
            .map_err(io_error)?;
            Box::new(Limited::new(decoder, limit))
        }
        Compression::Zstd => {
            let decoder =
                ratio_bounded(whole, ratio, zstd::stream::read::Decoder::new).map_err(io_error)?;
            Box::new(Limited::new(decoder, limit))
        }
    })
}

/// How an export compresses layers: BuildKit's `compression.Config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionConfig {
    pub compression: Compression,
    /// `compression-level=`: gzip's -2 to 9 (Go's `compress/gzip`), any integer for zstd (see
    /// [`CompressionConfig::zstd_level`]); ignored for uncompressed layers, as BuildKit does.
    pub level: Option<i32>,
    /// `force-compression=true`: compress again even when a layer already exists in this
    /// compression (a pulled blob or a kept variant), so the level asked is what is pushed.
    pub force: bool,
}

impl Default for CompressionConfig {
    /// gzip at its default level: BuildKit's default (`compression.Default`) for every image
    /// exporter and the cache exporters.
    fn default() -> Self {
        CompressionConfig::new(Compression::Gzip)
    }
}

impl CompressionConfig {
    /// `compression` at its default level, not forced.
    pub fn new(compression: Compression) -> CompressionConfig {
        CompressionConfig {
            compression,
            level: None,
            force: false,
        }
    }

    /// The zlib level of gzip: Go's default (-1) is 6, its `HuffmanOnly` (-2), which zlib-rs
    /// cannot be asked for through flate2, the fastest level (1).
    fn gzip_level(&self) -> u32 {
        match self.level {
            None | Some(-1) => 6,
            Some(level) => level.clamp(1, 9) as u32,
        }
    }

    /// The libzstd level of zstd. BuildKit's zstd writer (klauspost/compress) takes any integer
    /// and maps it to one of its four speeds (`EncoderLevelFromZstd`: below 3 fastest, below 7
    /// default, below 9 better, else best), which match libzstd's levels 1, 3, 7 and 11; kiln
    /// maps the same way, so a level means what it means to BuildKit.
    fn zstd_level(&self) -> i32 {
        match self.level {
            None => 3,
            Some(level) if level < 3 => 1,
            Some(level) if level < 7 => 3,
            Some(level) if level < 9 => 7,
            Some(_) => 11,
        }
    }
}

/// The format of an image export: its layers' compression and its media types (BuildKit's
/// exporter options `compression=`, `compression-level=`, `force-compression=`,
/// `oci-mediatypes=`, the same on `--output` and `--cache-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportFormat {
    pub compression: CompressionConfig,
    /// `oci-mediatypes=`: OCI media types (`true`) or Docker's schema 2 ones (`false`) for the
    /// manifest, config, index and layers; `None` when not given, for the exporter's default
    /// ([`ExportFormat::oci_media_types_or`]).
    pub oci_media_types: Option<bool>,
}

/// Why an exporter's compression option is not one (BuildKit's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatOptionError {
    #[error("unsupported compression type {0}")]
    Unsupported(String),
    /// kiln writes no eStargz (seekable gzip with a table of contents for lazy pulls).
    #[error(
        "compression=estargz is not supported by kiln: eStargz layers (lazy-pull gzip with a \
         table of contents) are not written; use compression=gzip or compression=zstd"
    )]
    Estargz,
    #[error("non-integer value {0} specified for compression-level")]
    Level(String),
    #[error("non-bool value {value} specified for {key}")]
    Bool { key: &'static str, value: String },
    /// Go's `gzip.NewWriterLevel` refuses anything outside `HuffmanOnly` (-2) to 9.
    #[error("gzip: invalid compression level: {0} (gzip takes -2 to 9)")]
    GzipLevel(i32),
}

impl ExportFormat {
    /// The option keys it takes.
    pub const KEYS: [&'static str; 4] = [
        "compression",
        "compression-level",
        "force-compression",
        "oci-mediatypes",
    ];

    /// Takes one `key=value` exporter option when `key` is one of [`ExportFormat::KEYS`]
    /// (`Ok(true)`); `Ok(false)` leaves any other key to the caller. Call
    /// [`ExportFormat::validate`] once all are in.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, FormatOptionError> {
        match key {
            "compression" => {
                self.compression.compression = match value {
                    "estargz" => return Err(FormatOptionError::Estargz),
                    name => Compression::from_name(name)
                        .ok_or_else(|| FormatOptionError::Unsupported(name.to_string()))?,
                };
            }
            "compression-level" => {
                // Go's strconv.ParseInt(v, 10, 64), then int: a sign and decimal digits.
                let level = value
                    .parse::<i64>()
                    .ok()
                    .and_then(|l| i32::try_from(l).ok())
                    .ok_or_else(|| FormatOptionError::Level(value.to_string()))?;
                self.compression.level = Some(level);
            }
            "force-compression" => {
                // BuildKit takes an empty value as true.
                self.compression.force = value.is_empty()
                    || parse_go_bool(value).ok_or_else(|| FormatOptionError::Bool {
                        key: "force-compression",
                        value: value.to_string(),
                    })?;
            }
            "oci-mediatypes" => {
                self.oci_media_types =
                    Some(parse_go_bool(value).ok_or_else(|| FormatOptionError::Bool {
                        key: "oci-mediatypes",
                        value: value.to_string(),
                    })?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks the options together: a gzip level must be one Go's gzip writer takes (BuildKit
    /// fails the export with that error; kiln fails before the build). zstd takes any level and
    /// uncompressed layers ignore it, as in BuildKit.
    pub fn validate(&self) -> Result<(), FormatOptionError> {
        match (self.compression.compression, self.compression.level) {
            (Compression::Gzip, Some(level)) if !(-2..=9).contains(&level) => {
                Err(FormatOptionError::GzipLevel(level))
            }
            _ => Ok(()),
        }
    }

    /// Whether OCI media types are written: as asked, else `default` (the exporter's).
    pub fn oci_media_types_or(&self, default: bool) -> bool {
        self.oci_media_types.unwrap_or(default)
    }
}

/// How many layer compressions ran in this process (each call of [`compress_with`] that
/// compresses, not a plain copy). Tests and benchmarks read it to see that a push reused a kept
/// variant instead of compressing again.
static COMPRESSIONS: AtomicU64 = AtomicU64::new(0);

/// How many layer compressions have run in this process (see [`compress_with`]).
pub fn compressions() -> u64 {
    COMPRESSIONS.load(Ordering::Relaxed)
}

/// Compresses everything `reader` yields into `out` at the default level (gzip 6, zstd 3).
/// The output depends only on the input and the library versions (gzip: no name, mtime 0;
/// zstd: multithreaded, whose frames do not depend on the number of threads), so a layer
/// compresses to the same blob every time.
pub fn compress(
    reader: impl Read,
    out: impl Write,
    compression: Compression,
) -> Result<(), LayerError> {
    compress_with(reader, out, &CompressionConfig::new(compression))
}

/// [`compress`] with `config`'s level, on every core (see the module documentation).
pub fn compress_with(
    mut reader: impl Read,
    mut out: impl Write,
    config: &CompressionConfig,
) -> Result<(), LayerError> {
    match config.compression {
        Compression::None => {
            io::copy(&mut reader, &mut out).map_err(io_error)?;
            out.flush().map_err(io_error)
        }
        Compression::Gzip => {
            COMPRESSIONS.fetch_add(1, Ordering::Relaxed);
            ParallelGzip::new(config.gzip_level())
                .compress(reader, out)
                .map_err(io_error)
        }
        Compression::Zstd => {
            COMPRESSIONS.fetch_add(1, Ordering::Relaxed);
            let mut encoder =
                zstd::stream::write::Encoder::new(out, config.zstd_level()).map_err(io_error)?;
            // At least one worker always: libzstd's output with workers does not depend on how
            // many there are, but differs from its single-threaded output.
            encoder
                .multithread(threads() as u32)
                .and_then(|()| encoder.include_checksum(true))
                .map_err(io_error)?;
            io::copy(&mut reader, &mut encoder).map_err(io_error)?;
            encoder
                .finish()
                .map_err(io_error)?
                .flush()
                .map_err(io_error)
        }
    }
}

/// The uncompressed tar's digest and size, as [`recompress`] read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recompressed {
    /// The digest of the uncompressed tar: the layer's diff ID.
    pub diff_id: Digest,
    /// Its size in bytes.
    pub uncompressed_size: u64,
}

/// Reads a layer blob in any compression (detected), and writes it to `out` compressed as
/// `config` asks; the uncompressed tar is hashed on the way (one read), so the caller can check
/// it is the layer it meant. At most `limit` uncompressed bytes are read.
pub fn recompress(
    reader: impl Read,
    config: &CompressionConfig,
    out: impl Write,
    limit: u64,
) -> Result<Recompressed, LayerError> {
    let mut uncompressed = Hashing::new(decompressed(reader, limit)?);
    compress_with(&mut uncompressed, out, config).map_err(|error| match error {
        // A read error of the source (a corrupt blob, a bomb) surfaces through the copy.
        LayerError::Io { source, .. } => LayerError::from_read(source),
        other => other,
    })?;
    let (diff_id, uncompressed_size, _) = uncompressed.finish();
    Ok(Recompressed {
        diff_id,
        uncompressed_size,
    })
}

/// The threads a compression may use: the machine's cores.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A pigz-style gzip writer: see the module documentation. Its output is one gzip member (so
/// every reader reads it, Go's and zlib's alike) and depends only on the input and the level,
/// not on the number of threads.
#[derive(Debug, Clone, Copy)]
pub struct ParallelGzip {
    level: u32,
    chunk: usize,
}

/// The input each thread deflates at a time (pigz's default is 128 KiB; larger chunks cost a
/// little memory and lose less to the sync flushes).
const GZIP_CHUNK: usize = 1 << 20;
/// deflate's window: what each chunk is primed with from the one before.
const DEFLATE_WINDOW: usize = 32 << 10;

impl ParallelGzip {
    /// A writer at zlib `level` (1 to 9).
    pub fn new(level: u32) -> ParallelGzip {
        ParallelGzip {
            level,
            chunk: GZIP_CHUNK,
        }
    }

    /// Compresses `reader` into `out` as one gzip member.
    pub fn compress(&self, mut reader: impl Read, mut out: impl Write) -> io::Result<()> {
        // RFC 1952 header: deflate, no flags, mtime 0, XFL as Go writes it, OS unknown (255).
        let xfl = match self.level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
        let batch_len = threads() * 2;
        let mut crc = crc32fast::Hasher::new();
        let mut total: u64 = 0;
        let mut window: Vec<u8> = Vec::new();
        loop {
            let mut chunks = Vec::with_capacity(batch_len);
            let mut at_end = false;
            while chunks.len() < batch_len {
                let mut chunk = Vec::with_capacity(self.chunk);
                (&mut reader)
                    .take(self.chunk as u64)
                    .read_to_end(&mut chunk)?;
                let short = chunk.len() < self.chunk;
                if !chunk.is_empty() {
                    chunks.push(chunk);
                }
                if short {
                    at_end = true;
                    break;
                }
            }
            let last_index = chunks.len().checked_sub(1);
            let compressed: Vec<io::Result<(Vec<u8>, crc32fast::Hasher)>> = chunks
                .par_iter()
                .enumerate()
                .map(|(index, chunk)| {
                    let dictionary: &[u8] = match index {
                        0 => &window,
                        _ => {
                            let before = &chunks[index - 1];
                            &before[before.len().saturating_sub(DEFLATE_WINDOW)..]
                        }
                    };
                    let last = at_end && Some(index) == last_index;
                    let deflated = deflate_chunk(chunk, dictionary, self.level, last)?;
                    let mut hasher = crc32fast::Hasher::new();
                    hasher.update(chunk);
                    Ok((deflated, hasher))
                })
                .collect();
            for (result, chunk) in compressed.into_iter().zip(&chunks) {
                let (deflated, hasher) = result?;
                out.write_all(&deflated)?;
                crc.combine(&hasher);
                total += chunk.len() as u64;
            }
            if let Some(last) = chunks.last() {
                let keep = last.len().min(DEFLATE_WINDOW);
                window = last[last.len() - keep..].to_vec();
            }
            if at_end {
                if last_index.is_none() {
                    // The input ended on a batch boundary (or was empty): close the stream with
                    // an empty final block.
                    out.write_all(&deflate_chunk(&[], &window, self.level, true)?)?;
                }
                break;
            }
        }
        out.write_all(&crc.finalize().to_le_bytes())?;
        // ISIZE: the input's size modulo 2^32.
        out.write_all(&(total as u32).to_le_bytes())?;
        out.flush()
    }
}

/// Raw deflate of one chunk primed with `dictionary`: the final block when `last`, else ended
/// with a sync flush (byte-aligned, not final), so chunks join into one stream.
fn deflate_chunk(data: &[u8], dictionary: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut deflate = Compress::new(flate2::Compression::new(level), false);
    if !dictionary.is_empty() {
        deflate
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 << 10);
        }
        let consumed = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = deflate.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            // zlib's deflate has finished a flush when it returns with output space left.
            _ if !last && all_in && out.len() < out.capacity() => break,
            _ => {}
        }
    }
    Ok(out)
}

/// An io error from (de)compressing a stream, which has no path of its own.
fn io_error(source: io::Error) -> LayerError {
    LayerError::Io {
        path: PathBuf::from("<layer stream>"),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8], compression: Compression) -> Vec<u8> {
        let mut compressed = Vec::new();
        compress(data, &mut compressed, compression).unwrap();
        assert_eq!(Compression::detect(&compressed), compression);
        let mut out = Vec::new();
        decompressed(&compressed[..], data.len() as u64)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn every_compression_round_trips_and_is_detected() {
        let data = b"ustar kiln layer bytes ".repeat(5000);
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(round_trip(&data, compression), data, "{compression:?}");
        }
    }

    #[test]
    fn compression_is_deterministic() {
        let data = b"same bytes, same blob".repeat(100);
        for compression in [Compression::Gzip, Compression::Zstd] {
            let (mut first, mut second) = (Vec::new(), Vec::new());
            compress(&data[..], &mut first, compression).unwrap();
            compress(&data[..], &mut second, compression).unwrap();
            assert_eq!(first, second, "{compression:?}");
        }
    }

    #[test]
    fn detect_reads_magic_bytes_only() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f]), Compression::None);
        assert_eq!(Compression::detect(&[0x1f]), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
        assert_eq!(Compression::detect(b"etc/\0\0\0"), Compression::None);
    }

    #[test]
    fn media_types_round_trip_and_docker_types_are_known() {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(
                Compression::from_media_type(compression.media_type()),
                Some(compression)
            );
        }
        for (media_type, expected) in [
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            ("application/vnd.oci.image.config.v1+json", None),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", None),
            ("", None),
        ] {
            assert_eq!(
                Compression::from_media_type(media_type),
                expected,
                "{media_type}"
            );
        }
    }

    #[test]
    fn decompressed_stops_bombs_at_the_limit() {
        let bomb = vec![0u8; 4 << 20];
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut compressed = Vec::new();
            compress(&bomb[..], &mut compressed, compression).unwrap();
            let mut reader = decompressed(&compressed[..], 1 << 20).unwrap();
            let error = io::copy(&mut reader, &mut io::sink()).unwrap_err();
            assert!(
                matches!(
                    LayerError::from_read(error),
                    LayerError::TooLarge { limit } if limit == 1 << 20
                ),
                "{compression:?}"
            );
        }
    }

    #[test]
    fn short_and_empty_inputs_are_plain() {
        for input in [&b""[..], &b"\x1f"[..], &b"abc"[..]] {
            let mut out = Vec::new();
            decompressed(input, 10)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, input);
        }
    }

    /// Pseudo-random but compressible bytes: a stream whose back references cross chunks.
    fn sample(len: usize) -> Vec<u8> {
        let words: [&[u8]; 5] = [b"layer ", b"kiln ", b"usr/bin/", b"\0\0\0\0", b"0755 "];
        let mut state: u32 = 7;
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            out.extend_from_slice(words[(state >> 16) as usize % words.len()]);
            out.push((state >> 8) as u8);
        }
        out.truncate(len);
        out
    }

    #[test]
    fn parallel_gzip_is_one_member_any_gzip_reader_reads() {
        // A 4 KiB chunk makes the batches, boundaries and the empty-final-block case cheap.
        let writer = ParallelGzip {
            level: 6,
            chunk: 4096,
        };
        let batch = 4096 * threads() * 2;
        for len in [0, 1, 4095, 4096, 4097, 50_000, batch, batch + 1, 3 * batch] {
            let data = sample(len);
            let mut compressed = Vec::new();
            writer.compress(&data[..], &mut compressed).unwrap();
            // A single-member reader (not MultiGzDecoder) checks the CRC and the size.
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&compressed[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{len}");
            let mut again = Vec::new();
            writer.compress(&data[..], &mut again).unwrap();
            assert_eq!(again, compressed, "deterministic at {len}");
        }
    }

    #[test]
    fn parallel_gzip_primed_chunks_keep_the_ratio_of_one_stream() {
        let data = sample(3 << 20);
        let mut parallel = Vec::new();
        ParallelGzip::new(6)
            .compress(&data[..], &mut parallel)
            .unwrap();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap();
        assert!(
            parallel.len() as f64 <= single.len() as f64 * 1.01,
            "parallel {} vs single {}",
            parallel.len(),
            single.len()
        );
    }

    #[test]
    fn recompress_converts_and_reports_the_diff_id() {
        let data = sample(100_000);
        let mut gzip = Vec::new();
        compress(&data[..], &mut gzip, Compression::Gzip).unwrap();
        let before = compressions();
        let mut zstd = Vec::new();
        let done = recompress(
            &gzip[..],
            &CompressionConfig::new(Compression::Zstd),
            &mut zstd,
            1 << 30,
        )
        .unwrap();
        assert!(compressions() > before);
        assert_eq!(done.diff_id, Digest::of(&data));
        assert_eq!(done.uncompressed_size, data.len() as u64);
        assert_eq!(Compression::detect(&zstd), Compression::Zstd);
        let mut out = Vec::new();
        decompressed(&zstd[..], 1 << 30)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        // A corrupt source is a malformed layer, not an io error of the output.
        let error = recompress(
            &gzip[..gzip.len() / 2],
            &CompressionConfig::default(),
            io::sink(),
            1 << 30,
        )
        .unwrap_err();
        assert!(matches!(error, LayerError::Tar { .. }), "{error:?}");
    }

    #[test]
    fn levels_change_the_output_and_map_as_buildkit_does() {
        let data = sample(200_000);
        let at = |compression, level| {
            let mut out = Vec::new();
            let config = CompressionConfig {
                compression,
                level,
                force: false,
            };
            compress_with(&data[..], &mut out, &config).unwrap();
            out.len()
        };
        assert!(at(Compression::Gzip, Some(1)) > at(Compression::Gzip, Some(9)));
        assert!(at(Compression::Zstd, Some(1)) > at(Compression::Zstd, Some(19)));
        let zstd = |level| CompressionConfig {
            compression: Compression::Zstd,
            level,
            force: false,
        };
        let mapped: Vec<i32> = [
            None,
            Some(-5),
            Some(2),
            Some(3),
            Some(6),
            Some(7),
            Some(8),
            Some(9),
            Some(22),
        ]
        .into_iter()
        .map(|l| zstd(l).zstd_level())
        .collect();
        assert_eq!(mapped, [3, 1, 1, 3, 3, 7, 7, 11, 11]);
    }

    #[test]
    fn export_format_options_parse_as_buildkit_does() {
        let parse = |options: &[(&str, &str)]| {
            let mut format = ExportFormat::default();
            for (key, value) in options {
                assert!(format.set(key, value)?, "{key} is a format key");
            }
            format.validate().map(|()| format)
        };
        assert_eq!(
            parse(&[]).unwrap().compression,
            CompressionConfig::new(Compression::Gzip)
        );
        let format = parse(&[
            ("compression", "zstd"),
            ("compression-level", "19"),
            ("force-compression", "true"),
            ("oci-mediatypes", "false"),
        ])
        .unwrap();
        assert_eq!(
            format,
            ExportFormat {
                compression: CompressionConfig {
                    compression: Compression::Zstd,
                    level: Some(19),
                    force: true,
                },
                oci_media_types: Some(false),
            }
        );
        assert!(!format.oci_media_types_or(true));
        assert!(ExportFormat::default().oci_media_types_or(true));
        assert!(
            parse(&[("force-compression", "")])
                .unwrap()
                .compression
                .force
        );
        assert_eq!(
            parse(&[("compression", "uncompressed"), ("compression-level", "99")])
                .unwrap()
                .compression
                .compression,
            Compression::None
        );
        assert_eq!(
            parse(&[("compression-level", "-2")])
                .unwrap()
                .compression
                .level,
            Some(-2)
        );
        for (options, message) in [
            (
                &[("compression", "lz4")][..],
                "unsupported compression type lz4",
            ),
            (
                &[("compression", "estargz")][..],
                "compression=estargz is not supported by kiln: eStargz layers (lazy-pull gzip \
                 with a table of contents) are not written; use compression=gzip or \
                 compression=zstd",
            ),
            (
                &[("compression-level", "high")][..],
                "non-integer value high specified for compression-level",
            ),
            (
                &[("compression-level", "99999999999")][..],
                "non-integer value 99999999999 specified for compression-level",
            ),
            (
                &[("force-compression", "yes")][..],
                "non-bool value yes specified for force-compression",
            ),
            (
                &[("oci-mediatypes", "")][..],
                "non-bool value  specified for oci-mediatypes",
            ),
            (
                &[("compression-level", "10")][..],
                "gzip: invalid compression level: 10 (gzip takes -2 to 9)",
            ),
            (
                &[("compression", "gzip"), ("compression-level", "-3")][..],
                "gzip: invalid compression level: -3 (gzip takes -2 to 9)",
            ),
        ] {
            assert_eq!(
                parse(options).unwrap_err().to_string(),
                message,
                "{options:?}"
            );
        }
        assert_eq!(ExportFormat::default().set("name", "x"), Ok(false));
    }

    #[test]
    fn corrupt_gzip_is_a_read_error() {
        let mut reader = decompressed(&[0x1f, 0x8b, 0, 0, 0, 0][..], 100).unwrap();
        let error = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(matches!(
            LayerError::from_read(error),
            LayerError::Tar { .. }
        ));
    }
}
