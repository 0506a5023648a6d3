//! Rewriting a layer tar's timestamps to `SOURCE_DATE_EPOCH`, as BuildKit's
//! `rewrite-timestamp=true` exporter option does (v0.32 `util/converter`,
//! `rewriteTimestampInTarHeader`): every modification, access and change time later than the
//! epoch becomes the epoch; earlier ones stay. Nothing else of the tar changes.
//!
//! The tar is rewritten block by block rather than read into entries and written again, so
//! what kiln does not know about (GNU long names, extension headers, xattr records, trailing
//! bytes) passes through byte for byte: a header's time fields (`mtime`; a GNU header's
//! `atime` and `ctime`) are clamped and its checksum recomputed, a PAX header's `mtime`,
//! `atime` and `ctime` records are clamped (its size then recomputed), and file contents are
//! copied as they are. The same layer and epoch always give the same bytes.

use super::LayerError;
use crate::oci::{Digest, Hashing};
use std::io::{self, Read, Write};

const BLOCK: usize = 512;
/// The largest PAX extended header read into memory.
const MAX_PAX_BYTES: u64 = 16 << 20;
/// Where the header fields are (POSIX ustar; GNU's atime and ctime).
const SIZE: std::ops::Range<usize> = 124..136;
const MTIME: std::ops::Range<usize> = 136..148;
const CHECKSUM: std::ops::Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const MAGIC: std::ops::Range<usize> = 257..265;
const GNU_ATIME: std::ops::Range<usize> = 345..357;
const GNU_CTIME: std::ops::Range<usize> = 357..369;
/// GNU's old sparse format: the header says whether extension blocks follow it, each of which
/// says whether another follows.
const GNU_IS_EXTENDED: usize = 482;
const SPARSE_IS_EXTENDED: usize = 504;
const GNU_MAGIC: &[u8; 8] = b"ustar  \0";

/// What rewriting a layer wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrittenLayer {
    /// The sha256 of the tar written (the new layer's diff ID).
    pub diff_id: Digest,
    /// Its length in bytes.
    pub size: u64,
    /// How many time fields or records were later than the epoch.
    pub clamped: u64,
}

/// Copies the UNCOMPRESSED layer tar `input` to `output` with every time later than `epoch`
/// (Unix seconds) set to `epoch` (see the module documentation).
pub fn clamp_times(
    input: impl Read,
    output: impl Write,
    epoch: i64,
) -> Result<RewrittenLayer, LayerError> {
    let mut input = io::BufReader::with_capacity(1 << 20, input);
    let mut out = Hashing::new(io::BufWriter::with_capacity(1 << 20, output));
    let write_error = |source| LayerError::Io {
        path: "<layer>".into(),
        source,
    };
    let mut clamped = 0;
    let mut block = [0u8; BLOCK];
    loop {
        if !read_block(&mut input, &mut block)? {
            break;
        }
        if block.iter().all(|&b| b == 0) {
            // The end of the archive: the rest (its second zero block, padding) as it is.
            out.write_all(&block).map_err(write_error)?;
            io::copy(&mut input, &mut out).map_err(write_error)?;
            break;
        }
        let entry = entry_name(&block);
        let malformed = |reason: String| LayerError::Malformed {
            entry: entry.clone(),
            reason,
        };
        if stored_checksum(&block) != Some(checksum(&block)) {
            return Err(malformed("its header checksum does not match".to_string()));
        }
        let size = numeric(&block[SIZE])
            .and_then(|s| u64::try_from(s).ok())
            .ok_or_else(|| malformed("its size field is not a number".to_string()))?;
        clamped += clamp_field(&mut block[MTIME], epoch, &entry)?;
        if &block[MAGIC] == GNU_MAGIC {
            for field in [GNU_ATIME, GNU_CTIME] {
                clamped += clamp_field(&mut block[field], epoch, &entry)?;
            }
        }
        match block[TYPEFLAG] {
            b'x' | b'g' => {
                if size > MAX_PAX_BYTES {
                    return Err(malformed(format!(
                        "its PAX header has {size} bytes (at most {MAX_PAX_BYTES})"
                    )));
                }
                let mut records = vec![0u8; size as usize];
                input
                    .read_exact(&mut records)
                    .map_err(|source| LayerError::Io {
                        path: entry.clone().into(),
                        source,
                    })?;
                skip_padding(&mut input, size, &entry)?;
                let (records, count) = clamp_pax(&records, epoch).map_err(malformed)?;
                clamped += count;
                set_size(&mut block, records.len() as u64).map_err(malformed)?;
                set_checksum(&mut block);
                out.write_all(&block).map_err(write_error)?;
                out.write_all(&records).map_err(write_error)?;
                out.write_all(&vec![0u8; padding(records.len() as u64)])
                    .map_err(write_error)?;
                continue;
            }
            b'S' if &block[MAGIC] == GNU_MAGIC && block[GNU_IS_EXTENDED] != 0 => {
                set_checksum(&mut block);
                out.write_all(&block).map_err(write_error)?;
                let mut extension = [0u8; BLOCK];
                loop {
                    if !read_block(&mut input, &mut extension)? {
                        return Err(malformed("it ends in its sparse map".to_string()));
                    }
                    out.write_all(&extension).map_err(write_error)?;
                    if extension[SPARSE_IS_EXTENDED] == 0 {
                        break;
                    }
                }
            }
            _ => {
                set_checksum(&mut block);
                out.write_all(&block).map_err(write_error)?;
            }
        }
        // The content (padded to whole blocks), as it is.
        let padded = size + padding(size) as u64;
        let copied = io::copy(&mut (&mut input).take(padded), &mut out).map_err(write_error)?;
        if copied != padded {
            return Err(malformed(format!(
                "the archive ends {} bytes into its {size} bytes of content",
                copied
            )));
        }
    }
    let (diff_id, size, mut buffered) = out.finish();
    buffered.flush().map_err(write_error)?;
    Ok(RewrittenLayer {
        diff_id,
        size,
        clamped,
    })
}

/// Reads one whole block; `false` at the end of the input (a partial block is an error).
fn read_block(input: &mut impl Read, block: &mut [u8; BLOCK]) -> Result<bool, LayerError> {
    let mut filled = 0;
    while filled < BLOCK {
        match input.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(LayerError::Io {
                    path: "<layer>".into(),
                    source,
                });
            }
        }
    }
    match filled {
        0 => Ok(false),
        BLOCK => Ok(true),
        _ => Err(LayerError::Malformed {
            entry: String::new(),
            reason: format!("the archive ends {filled} bytes into a block"),
        }),
    }
}

fn skip_padding(input: &mut impl Read, size: u64, entry: &str) -> Result<(), LayerError> {
    let mut pad = vec![0u8; padding(size)];
    input.read_exact(&mut pad).map_err(|source| LayerError::Io {
        path: entry.into(),
        source,
    })
}

/// The zero bytes after `size` bytes of content up to the next block.
fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// The entry's name as its header holds it (for messages; the ustar prefix is not joined).
fn entry_name(block: &[u8; BLOCK]) -> String {
    let name = &block[..100];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A numeric header field: octal text (NUL or space terminated), or GNU's base-256 (the high
/// bit of the first byte set; negative when the first byte is 0xff).
fn numeric(field: &[u8]) -> Option<i64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Negative (0xff first): before 1970, so never later than an epoch; its exact value
        // does not matter here.
        if field[0] == 0xff {
            return Some(-1);
        }
        let mut value: i64 = i64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(i64::from(b))?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    i64::from_str_radix(digits, 8).ok()
}

/// Sets a time field later than `epoch` to `epoch` (octal, as the field was written); 1 when it
/// changed.
fn clamp_field(field: &mut [u8], epoch: i64, entry: &str) -> Result<u64, LayerError> {
    let Some(value) = numeric(field) else {
        return Err(LayerError::Malformed {
            entry: entry.to_string(),
            reason: "a time field is not a number".to_string(),
        });
    };
    if value <= epoch {
        return Ok(0);
    }
    write_octal(field, epoch as u64).map_err(|reason| LayerError::Unsupported {
        entry: entry.to_string(),
        reason,
    })?;
    Ok(1)
}

/// Writes `value` into `field` as zero-padded octal and a NUL.
fn write_octal(field: &mut [u8], value: u64) -> Result<(), String> {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return Err(format!("{value} does not fit a {digits}-digit octal field"));
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    Ok(())
}

fn set_size(block: &mut [u8; BLOCK], size: u64) -> Result<(), String> {
    write_octal(&mut block[SIZE], size)
}

/// The header checksum: the sum of its bytes with the checksum field taken as spaces.
fn checksum(block: &[u8; BLOCK]) -> u64 {
    block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if CHECKSUM.contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum()
}

fn stored_checksum(block: &[u8; BLOCK]) -> Option<u64> {
    numeric(&block[CHECKSUM]).and_then(|c| u64::try_from(c).ok())
}

/// Writes the checksum as six octal digits, a NUL and a space (what tar writers write).
fn set_checksum(block: &mut [u8; BLOCK]) {
    let sum = checksum(block);
    let text = format!("{sum:06o}\0 ");
    block[CHECKSUM].copy_from_slice(&text.as_bytes()[..8]);
}

/// The PAX records `LEN KEY=VALUE\n` with their `mtime`, `atime` and `ctime` later than
/// `epoch` set to it, and how many were; the other records as they were.
fn clamp_pax(records: &[u8], epoch: i64) -> Result<(Vec<u8>, u64), String> {
    let mut out = Vec::with_capacity(records.len());
    let mut clamped = 0;
    let mut rest = records;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            // Zero padding some writers leave inside the size: kept as it is.
            out.extend_from_slice(rest);
            break;
        }
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("a PAX record has no length")?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|t| t.parse().ok())
            .filter(|&len| len > space + 1 && len <= rest.len())
            .ok_or("a PAX record's length is not a number within the header")?;
        let record = &rest[..len];
        rest = &rest[len..];
        let body = &record[space + 1..len - 1];
        let Some(eq) = body.iter().position(|&b| b == b'=') else {
            return Err("a PAX record has no `=`".to_string());
        };
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        let later = matches!(key, b"mtime" | b"atime" | b"ctime")
            && std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > epoch as f64);
        if !later {
            out.extend_from_slice(record);
            continue;
        }
        clamped += 1;
        let content = format!("{}={epoch}\n", String::from_utf8_lossy(key));
        // The length counts its own digits.
        let mut total = content.len() + 2;
        while total.to_string().len() + 1 + content.len() != total {
            total = total.to_string().len() + 1 + content.len();
        }
        out.extend_from_slice(format!("{total} {content}").as_bytes());
    }
    Ok((out, clamped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, u64)], pax_mtime: Option<&str>) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        if let Some(mtime) = pax_mtime {
            builder
                .append_pax_extensions([("mtime", mtime.as_bytes()), ("SCHILY.xattr.user.a", b"v")])
                .unwrap();
        }
        for (name, mtime) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_mtime(*mtime);
            header.set_size(3);
            builder.append_data(&mut header, name, &b"abc"[..]).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn mtimes(tar: &[u8]) -> Vec<(String, u64)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let mut data = String::new();
                e.read_to_string(&mut data).unwrap();
                assert_eq!(data, "abc");
                (path, e.header().mtime().unwrap())
            })
            .collect()
    }

    #[test]
    fn later_times_become_the_epoch_and_earlier_ones_stay() {
        let long = format!("{}/file", "d".repeat(150));
        let input = layer(
            &[("new", 2_000_000_000), ("old", 100), (&long, 1_999_999_999)],
            None,
        );
        let mut out = Vec::new();
        let written = clamp_times(input.as_slice(), &mut out, 1_000_000_000).unwrap();
        assert_eq!(written.size, out.len() as u64);
        assert_eq!(written.diff_id, Digest::of(&out));
        assert_eq!(written.clamped, 2);
        assert_eq!(
            mtimes(&out),
            [
                ("new".to_string(), 1_000_000_000),
                ("old".to_string(), 100),
                (long, 1_000_000_000)
            ]
        );
        // The same input and epoch give the same bytes; already clamped, nothing changes.
        let mut again = Vec::new();
        clamp_times(out.as_slice(), &mut again, 1_000_000_000).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn pax_times_are_clamped_and_other_records_kept() {
        let input = layer(&[("f", 5)], Some("2000000000.5"));
        let mut out = Vec::new();
        let written = clamp_times(input.as_slice(), &mut out, 1_000_000_000).unwrap();
        assert_eq!(written.clamped, 1);
        let mut archive = tar::Archive::new(out.as_slice());
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let records: Vec<(String, Vec<u8>)> = entry
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r.key().unwrap().to_string(), r.value_bytes().to_vec())
            })
            .collect();
        assert_eq!(
            records,
            [
                ("mtime".to_string(), b"1000000000".to_vec()),
                ("SCHILY.xattr.user.a".to_string(), b"v".to_vec())
            ]
        );
        let mut data = String::new();
        entry.read_to_string(&mut data).unwrap();
        assert_eq!(data, "abc");
    }

    #[test]
    fn a_damaged_header_is_an_error_not_a_guess() {
        let mut input = layer(&[("f", 5)], None);
        input[10] ^= 0xff;
        let err = clamp_times(input.as_slice(), Vec::new(), 1).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let cut = layer(&[("f", 5)], None);
        let err = clamp_times(&cut[..700], Vec::new(), 1).unwrap_err();
        assert!(err.to_string().contains("ends"), "{err}");
    }
}
