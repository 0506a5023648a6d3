//! Rust binaries built with cargo-auditable: the ELF section `.dep-v0` holds the crates compiled
//! in, as zlib-compressed JSON (`{"packages": [{"name", "version", "source", "kind",
//! "dependencies", "root"}]}`). Only executable files and shared objects that start with the ELF
//! magic are parsed, through `object`'s lazy reader so only the headers and that section are
//! read.

use super::purl::purl;
use super::root::{Entry, EntryKind};
use super::{Package, PackageKind, SbomError, field_value};
use flate2::read::ZlibDecoder;
use object::elf::{FileHeader32, FileHeader64};
use object::read::elf::{FileHeader, SectionHeader};
use object::{Endianness, ReadCache};
use serde::Deserialize;
use std::io::Read;
use std::path::Path;

/// The section's name, as cargo-auditable writes it.
const SECTION: &str = ".dep-v0";

/// Past these the section is not cargo-auditable's (its data for a thousand crates is tens of
/// KiB): the compressed section, and what it decompresses to (a zip bomb stops here).
pub(super) const MAX_SECTION_BYTES: u64 = 8 * 1024 * 1024;
pub(super) const MAX_DECOMPRESSED_BYTES: u64 = 32 * 1024 * 1024;

/// Adds the crates recorded in `entry`, if it is an ELF file with a `.dep-v0` section.
pub(super) fn visit(entry: &Entry<'_>, packages: &mut Vec<Package>) -> Result<(), SbomError> {
    if entry.kind != EntryKind::File {
        return Ok(());
    }
    let Some((mode, size)) = entry.stat()? else {
        return Ok(());
    };
    let executable = mode & 0o111 != 0;
    if size < 64 || !(executable || entry.name.to_string_lossy().contains(".so")) {
        return Ok(());
    }
    let Some(mut file) = entry.open()? else {
        return Ok(());
    };
    let mut header = [0; 64];
    if file.read_exact(&mut header).is_err() || !has_bounded_tables(&header) {
        return Ok(());
    }
    let Some(compressed) = section(file, &header, entry.path)? else {
        return Ok(());
    };
    let Some(json) = decompress(&compressed, entry.path)? else {
        return Ok(());
    };
    packages.extend(parse(&json, entry.path));
    Ok(())
}

/// Whether `header` is an ELF header whose section and program header counts are its own 16-bit
/// fields. ELF's extended numbering (`e_shnum` 0, `e_phnum` 0xffff) takes the counts from
/// section 0 instead, up to 2³², and `object` would allocate tables that size (bounded only by
/// the file's size, which a sparse file makes huge); linked executables never need it, so such
/// files are not read. A file without sections has no `.dep-v0` either.
fn has_bounded_tables(header: &[u8; 64]) -> bool {
    if header[..4] != *b"\x7fELF" {
        return false;
    }
    let (phnum_at, shnum_at) = match header[4] {
        1 => (0x2c, 0x30),
        2 => (0x38, 0x3c),
        _ => return false,
    };
    let half = |at: usize| match header[5] {
        1 => Some(u16::from_le_bytes([header[at], header[at + 1]])),
        2 => Some(u16::from_be_bytes([header[at], header[at + 1]])),
        _ => None,
    };
    matches!((half(phnum_at), half(shnum_at)), (Some(phnum), Some(shnum)) if phnum != 0xffff && shnum != 0)
}

/// The `.dep-v0` section's bytes; `None` when the file is not an ELF file `object` can read or
/// has no such section. Only the ELF header, the section headers, their names and that section
/// are read: `object`'s whole-file parser would also read the symbol tables, whose size only the
/// file's bounds.
fn section(
    file: std::fs::File,
    header: &[u8; 64],
    path: &Path,
) -> Result<Option<Vec<u8>>, SbomError> {
    let cache = ReadCache::new(file);
    match header[4] {
        1 => section_of::<FileHeader32<Endianness>>(&cache, path),
        2 => section_of::<FileHeader64<Endianness>>(&cache, path),
        _ => Ok(None),
    }
}

fn section_of<Elf: FileHeader<Endian = Endianness>>(
    data: &ReadCache<std::fs::File>,
    path: &Path,
) -> Result<Option<Vec<u8>>, SbomError> {
    let Ok(header) = Elf::parse(data) else {
        return Ok(None);
    };
    let Ok(endian) = header.endian() else {
        return Ok(None);
    };
    let Ok(sections) = header.sections(endian, data) else {
        return Ok(None);
    };
    let Some((_, section)) = sections.section_by_name(endian, SECTION.as_bytes()) else {
        return Ok(None);
    };
    if section.sh_size(endian).into() > MAX_SECTION_BYTES {
        return Err(SbomError::TooLarge {
            path: path.join(SECTION),
            limit: MAX_SECTION_BYTES,
        });
    }
    Ok(section.data(endian, data).ok().map(<[u8]>::to_vec))
}

/// The section's JSON; `None` when it is not zlib data. More than [`MAX_DECOMPRESSED_BYTES`] is
/// an error (a zip bomb).
fn decompress(compressed: &[u8], path: &Path) -> Result<Option<Vec<u8>>, SbomError> {
    let mut json = Vec::new();
    let decoder = ZlibDecoder::new(compressed);
    // The input is in memory: an error is data that is not zlib (or a truncated stream).
    if decoder
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut json)
        .is_err()
    {
        return Ok(None);
    }
    if json.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(SbomError::TooLarge {
            path: path.join(SECTION),
            limit: MAX_DECOMPRESSED_BYTES,
        });
    }
    Ok(Some(json))
}

#[derive(Deserialize)]
struct VersionInfo {
    packages: Vec<Crate>,
}

#[derive(Deserialize)]
struct Crate {
    name: String,
    version: String,
    #[serde(default)]
    kind: Option<String>,
}

/// The crates compiled into the binary: `kind` `runtime` (the default); build dependencies ran
/// only while building and are not in it.
fn parse(json: &[u8], found_in: &Path) -> Vec<Package> {
    let Ok(info) = serde_json::from_slice::<VersionInfo>(json) else {
        return Vec::new();
    };
    info.packages
        .into_iter()
        .filter(|krate| krate.kind.as_deref().is_none_or(|kind| kind == "runtime"))
        .filter_map(|krate| {
            let name = field_value(&krate.name)?;
            let version = field_value(&krate.version)?;
            Some(Package {
                kind: PackageKind::Cargo,
                purl: purl("cargo", None, &name, &version, &[]),
                license: None,
                found_in: found_in.to_path_buf(),
                arch: None,
                source_package: None,
                supplier: None,
                name,
                version,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_crates_are_listed() {
        let json = br#"{"packages":[
            {"name":"rg","version":"14.1.0","source":"local","root":true,"dependencies":[1]},
            {"name":"memchr","version":"2.7.1","source":"crates.io","kind":"runtime"},
            {"name":"cc","version":"1.0.83","source":"crates.io","kind":"build"}]}"#;
        let packages = parse(json, Path::new("/usr/bin/rg"));
        let purls: Vec<_> = packages.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(purls, ["pkg:cargo/rg@14.1.0", "pkg:cargo/memchr@2.7.1"]);
    }

    #[test]
    fn extended_numbering_is_not_read() {
        let mut header = [0u8; 64];
        header[..6].copy_from_slice(b"\x7fELF\x02\x01");
        header[0x3c] = 3;
        assert!(has_bounded_tables(&header));
        header[0x38..0x3a].copy_from_slice(&[0xff, 0xff]);
        assert!(!has_bounded_tables(&header));
        header[0x38..0x3a].copy_from_slice(&[0, 0]);
        header[0x3c] = 0;
        assert!(!has_bounded_tables(&header));
        header[0x3c] = 3;
        header[5] = 9;
        assert!(!has_bounded_tables(&header));
    }

    #[test]
    fn malformed_data_is_skipped() {
        assert!(parse(b"{\"packages\": 3}", Path::new("/x")).is_empty());
        assert!(parse(b"\xff\xfe", Path::new("/x")).is_empty());
        assert_eq!(
            decompress(b"not zlib at all", Path::new("/x")).unwrap(),
            None
        );
    }
}
