//! Layer compression: media types, detection by magic bytes, bounded decompression.
//!
//! A registry's media type may lie or be a Docker v2 type, so readers detect the compression from
//! the first bytes ([`decompressed`]), as containerd's `DecompressStream` does; the media type is
//! only what kiln writes into manifests ([`Compression::media_type`]).

use super::{LayerError, Limited};
use std::io::{self, Read, Write};
use std::path::PathBuf;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (RFC 1952), possibly several members, as Go's `compress/gzip` reads them.
    Gzip,
    /// Zstandard (RFC 8878) frames.
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The zstd level kiln writes: zstd's default, what BuildKit uses for `compression=zstd`.
const ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// The OCI media type of a layer with this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The compression a layer media type names: the OCI types (also the deprecated
    /// non-distributable ones) and Docker's v2 schema 2 types; `None` for anything else.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// The compression whose magic bytes start `prefix` (gzip `1f 8b`, zstd `28 b5 2f fd`);
    /// anything else is taken as a plain tar.
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else if prefix.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

/// A reader of the uncompressed tar in `reader`, whatever its compression (detected from the magic
/// bytes). Reading fails with [`LayerError::TooLarge`] (inside the io error;
/// [`LayerError::from_read`] gets it back, and [`super::apply_layer`] does) once more than `limit`
/// uncompressed bytes have come out, so a small gzip or zstd bomb cannot fill the disk. zstd's own
/// decoder also refuses frames whose window is over 128 MiB (its default `window_log_max` of 27),
/// which bounds the memory a hostile frame can ask for.
pub fn decompressed<'a>(
    mut reader: impl Read + 'a,
    limit: u64,
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
        Compression::Gzip => Box::new(Limited::new(
            flate2::read::MultiGzDecoder::new(whole),
            limit,
        )),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(whole).map_err(io_error)?;
            Box::new(Limited::new(decoder, limit))
        }
    })
}

/// Compresses everything `reader` yields into `out`. The output depends only on the input and the
/// library versions (gzip: no name, mtime 0, default level; zstd: level 3, one thread), so a layer
/// compresses to the same blob every time.
pub fn compress(
    mut reader: impl Read,
    out: impl Write,
    compression: Compression,
) -> Result<(), LayerError> {
    match compression {
        Compression::None => {
            let mut out = out;
            io::copy(&mut reader, &mut out).map_err(io_error)?;
            out.flush().map_err(io_error)
        }
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            io::copy(&mut reader, &mut encoder).map_err(io_error)?;
            encoder
                .finish()
                .map_err(io_error)?
                .flush()
                .map_err(io_error)
        }
        Compression::Zstd => {
            let mut encoder =
                zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).map_err(io_error)?;
            io::copy(&mut reader, &mut encoder).map_err(io_error)?;
            encoder
                .finish()
                .map_err(io_error)?
                .flush()
                .map_err(io_error)
        }
    }
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
