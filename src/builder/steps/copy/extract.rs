//! ADD of a local tar archive: extracted into the destination directory, with BuildKit's rules
//! (solver/llbsolver/file `unpack` and `applyRootArchive`).
//!
//! - A source is an archive when it is a regular file whose content, after gzip, bzip2, xz or
//!   zstd decompression (recognised by magic bytes, as archiveutil's `DecompressStream`), starts
//!   with a valid tar header; the file name does not matter. Anything else is copied as a file.
//! - Entry paths are cleaned; one that climbs above the destination (`../x`) is an error. Paths
//!   are resolved with the destination as the root: symlinks already there (in the image or
//!   made by earlier entries) are followed without leaving it, an absolute link target starting
//!   from the destination. BuildKit refuses a relative link that climbs out; kiln keeps it inside
//!   the way openat2(2) RESOLVE_IN_ROOT does. Both confine every write.
//! - Missing parent directories are created 0755 and owned by root; an entry replaces whatever
//!   is in its way, except that a directory over a directory merges (and takes the entry's owner,
//!   mode and time).
//! - Owner, mode (with setuid, setgid, sticky), mtime and xattrs come from the entry; `--chown`
//!   overrides the owner, `--chmod` does not apply. A hardlink may point at any earlier entry or
//!   existing file under the destination (a lower layer's file is copied, as overlayfs's copy-up
//!   would before linking).
//! - Names starting with `.wh.` are refused: BuildKit writes them as plain files, which the image's
//!   layer then reads as whiteouts deleting other files. Character devices 0/0 are refused for
//!   the same reason; other device nodes and fifos are created.
//!
//! Entries go through the same union-aware writer as COPY ([`super::target`]), not through
//! `image::layer::apply_layer` into an empty directory: BuildKit extracts into the merged image,
//! so an entry `bin/tool` lands in `usr/bin` when the image has `bin -> usr/bin`, and a hardlink
//! may name an image file; unpacked alone into `upper`, `bin` would become a new directory that
//! hides the image's link. Confinement is the writer's: every path is resolved inside the
//! destination and every write is an `*at` call below `upper` that never follows a symlink.

use super::target::{Attributes, path_of};
use super::{Copier, CopyError};
use crate::builder::steps::union::Found;
use crate::layer::WHITEOUT_PREFIX;
use crate::layer::apply::{TarPathError, parse_pax_time, tar_path_components};
use crate::layer::ratio::{RatioLimit, ratio_bounded};
use nix::sys::stat::{SFlag, makedev};
use nix::sys::time::TimeSpec;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// The most memory (KiB) the xz decoder may ask for: xz's presets need at most 64 MiB of
/// dictionary, and the bound keeps a hostile header from asking for gigabytes.
const XZ_MEMORY_LIMIT_KIB: u32 = 256 * 1024;

/// xattr name prefixes an archive may not set: overlayfs's own (a fake opaque marker would hide
/// the image's files).
const OVERLAY_XATTR_PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];

/// Whether `head` starts with the magic bytes of a compression [`decompressed`] reads (gzip,
/// bzip2, xz, zstd: archive's `DetectCompression`).
pub(crate) fn is_compressed(head: &[u8]) -> bool {
    [GZIP_MAGIC, BZIP2_MAGIC, XZ_MAGIC, ZSTD_MAGIC]
        .iter()
        .any(|magic| head.starts_with(magic))
}

/// The uncompressed stream of `file`, whatever its compression (also the stdin context's,
/// [`crate::builder::stdin_context`]), its expansion bounded by the ratio cap
/// ([`crate::layer::ratio`], `KILN_MAX_DECOMPRESSION_RATIO`).
pub(crate) fn decompressed(file: impl Read + 'static) -> io::Result<Box<dyn Read>> {
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf()?.to_vec();
    let ratio = RatioLimit::from_env().map_err(io::Error::other)?;
    Ok(if head.starts_with(GZIP_MAGIC) {
        Box::new(ratio_bounded(reader, ratio, |raw| {
            Ok(flate2::read::MultiGzDecoder::new(raw))
        })?)
    } else if head.starts_with(BZIP2_MAGIC) {
        Box::new(ratio_bounded(reader, ratio, |raw| {
            Ok(bzip2::read::MultiBzDecoder::new(raw))
        })?)
    } else if head.starts_with(XZ_MAGIC) {
        Box::new(ratio_bounded(reader, ratio, |raw| {
            Ok(lzma_rust2::XzReader::new_mem_limit(
                raw,
                true,
                XZ_MEMORY_LIMIT_KIB,
            ))
        })?)
    } else if head.starts_with(ZSTD_MAGIC) {
        Box::new(ratio_bounded(reader, ratio, |raw| {
            zstd::stream::read::Decoder::with_buffer(BufReader::new(raw))
        })?)
    } else {
        Box::new(reader)
    })
}

/// Whether `file` is a (possibly compressed) tar archive: its first header reads.
pub(super) fn is_archive(file: File) -> bool {
    let Ok(reader) = decompressed(file) else {
        return false;
    };
    let mut archive = tar::Archive::new(reader);
    let Ok(mut entries) = archive.entries() else {
        return false;
    };
    matches!(entries.next(), Some(Ok(_)))
}

/// Extracts the archive `file` (the source `archive` as written) into the destination directory
/// `dest` (resolved, existing).
pub(super) fn extract(
    copier: &mut Copier<'_>,
    file: File,
    archive: &str,
    dest: &[OsString],
) -> Result<(), CopyError> {
    let read_error = |source| CopyError::ArchiveRead {
        archive: archive.to_string(),
        source,
    };
    let mut tar = tar::Archive::new(decompressed(file).map_err(read_error)?);
    for entry in tar.entries().map_err(read_error)? {
        copier.check_cancel()?;
        let mut entry = entry.map_err(read_error)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let refuse = |reason: String| CopyError::Archive {
            archive: archive.to_string(),
            entry: String::from_utf8_lossy(&raw).into_owned(),
            reason,
        };
        let relative = clean_entry_path(&raw).map_err(|r| refuse(r.to_string()))?;
        if relative.is_empty() {
            continue;
        }
        if relative
            .iter()
            .any(|c| c.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()))
        {
            return Err(refuse(
                "a name starting with .wh. would read as a whiteout in the image's layer; \
                 rename it in the archive"
                    .to_string(),
            ));
        }
        let is_dir = kind == tar::EntryType::Directory;
        let resolved = copier
            .target
            .union()
            .resolve_components(dest, &join(&relative), is_dir)?;
        let Some((name, parents)) = resolved.split_last() else {
            continue; // resolves to the destination itself
        };
        let mut parent = dest.to_vec();
        parent.extend(parents.iter().cloned());
        copier.target.mkdir_all(&parent, 0o755, (0, 0))?;
        let dir = copier.target.dest_dir(&parent)?;
        let attributes = entry_attributes(copier, &mut entry).map_err(refuse)?;
        match kind {
            tar::EntryType::Directory => {
                let owner = (attributes.uid, attributes.gid);
                let (new, _) = copier
                    .target
                    .child_dir(&dir, name, attributes.mode, owner, true)?;
                copier.target.set_dir_attributes(&new, &attributes)?;
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                copier.target.clear_for_file(&dir, name, true)?;
                let (bytes, _) = copier
                    .target
                    .write_file(&dir, name, &mut entry, &attributes)?;
                copier.stats.bytes += bytes;
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name_bytes().unwrap_or_default().into_owned();
                if link.is_empty() || link.contains(&0) {
                    return Err(refuse(
                        "a symlink needs a target without NUL bytes".to_string(),
                    ));
                }
                copier.target.clear_for_file(&dir, name, true)?;
                copier
                    .target
                    .symlink(&dir, name, OsStr::from_bytes(&link), &attributes)?;
            }
            tar::EntryType::Link => {
                let link = entry.link_name_bytes().unwrap_or_default().into_owned();
                let link = clean_entry_path(&link).map_err(|r| refuse(r.to_string()))?;
                if link.is_empty() {
                    return Err(refuse(
                        "a hardlink cannot target the destination itself".into(),
                    ));
                }
                let resolved =
                    copier
                        .target
                        .union()
                        .resolve_components(dest, &join(&link), false)?;
                let mut existing = dest.to_vec();
                existing.extend(resolved);
                let mut own = parent.clone();
                own.push(name.clone());
                if existing == own {
                    return Err(refuse("a hardlink cannot target itself".to_string()));
                }
                let Found::Node(node) = copier.target.lookup(&existing)? else {
                    return Err(refuse(format!(
                        "hardlink target {} is not an earlier file of the archive or the image",
                        path_of(&existing).display()
                    )));
                };
                copier.target.clear_for_file(&dir, name, true)?;
                if node.layer == 0 {
                    copier
                        .target
                        .hardlink_at(&dir, name, node.parent(), node.name())?;
                    let set_mode =
                        node.meta.kind != crate::builder::steps::union::FileKind::Symlink;
                    copier
                        .target
                        .set_attributes(&dir, name, &attributes, set_mode)?;
                } else {
                    // Only a lower layer has the target: overlayfs would copy it up and link
                    // it; the new name gets a copy.
                    copy_lower(copier, &node, &dir, name, &attributes)?;
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (kind, device) = match kind {
                    tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    device_kind => {
                        let header = entry.header();
                        let number = |value: io::Result<Option<u32>>| {
                            value.ok().flatten().ok_or_else(|| {
                                refuse("a device entry needs major and minor numbers".into())
                            })
                        };
                        let major = number(header.device_major())?;
                        let minor = number(header.device_minor())?;
                        let kind = if device_kind == tar::EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (kind, makedev(u64::from(major), u64::from(minor)))
                    }
                };
                copier.target.clear_for_file(&dir, name, true)?;
                copier.target.node(&dir, name, kind, device, &attributes)?;
            }
            other => {
                return Err(refuse(format!(
                    "tar entry type {:?} cannot be extracted",
                    char::from(other.as_byte())
                )));
            }
        }
        copier.stats.files += 1;
    }
    Ok(())
}

/// Gives `name` in `dir` a copy of the lower layer's `node` (a hardlink target), with the
/// archive entry's attributes.
fn copy_lower(
    copier: &mut Copier<'_>,
    node: &crate::builder::steps::union::Node,
    dir: &super::target::DestDir,
    name: &OsStr,
    attributes: &Attributes,
) -> Result<(), CopyError> {
    use crate::builder::steps::union::FileKind;
    match node.meta.kind {
        FileKind::File => {
            let mut file = copier.target.union().open_node(node)?;
            let (bytes, _) = copier.target.write_file(dir, name, &mut file, attributes)?;
            copier.stats.bytes += bytes;
        }
        FileKind::Symlink => {
            let link = copier.target.union().read_link(node)?;
            copier.target.symlink(dir, name, &link, attributes)?;
        }
        FileKind::Fifo => copier
            .target
            .node(dir, name, SFlag::S_IFIFO, 0, attributes)?,
        FileKind::CharDevice => {
            copier
                .target
                .node(dir, name, SFlag::S_IFCHR, node.meta.rdev, attributes)?;
        }
        FileKind::BlockDevice => {
            copier
                .target
                .node(dir, name, SFlag::S_IFBLK, node.meta.rdev, attributes)?;
        }
        FileKind::Socket | FileKind::Dir => {}
    }
    Ok(())
}

/// BuildKit's `cleanRootTarPath`: leading `/` dropped, cleaned; a path that climbs above the
/// destination is refused. Empty for the destination itself.
fn clean_entry_path(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    tar_path_components(raw).map_err(|err| match err {
        TarPathError::Nul => "the path contains a NUL byte",
        TarPathError::Climbs => "the path is outside the extraction root (climbs with `..`)",
    })
}

fn join(components: &[OsString]) -> Vec<u8> {
    components
        .iter()
        .map(|c| c.as_bytes())
        .collect::<Vec<_>>()
        .join(&b'/')
}

/// A numeric header field, with an empty field (only NULs and spaces) read as 0, as Go's
/// archive/tar reads it.
fn numeric(parsed: io::Result<u64>, field: &[u8], name: &str) -> Result<u64, String> {
    match parsed {
        Ok(value) => Ok(value),
        Err(_) if field.iter().all(|b| matches!(b, 0 | b' ')) => Ok(0),
        Err(error) => Err(format!("bad {name} field: {error}")),
    }
}

/// The owner, mode, mtime and xattrs an entry asks for (`--chown` overriding the owner).
fn entry_attributes<R: Read>(
    copier: &Copier<'_>,
    entry: &mut tar::Entry<'_, R>,
) -> Result<Attributes, String> {
    let header = entry.header();
    let old = header.as_old();
    let mode = numeric(header.mode().map(u64::from), &old.mode, "mode")?;
    let id = |value: u64, name: &str| {
        u32::try_from(value)
            .ok()
            .filter(|id| *id <= crate::container::user::MAX_ID)
            .ok_or_else(|| format!("{name} {value} is out of range"))
    };
    let uid = id(numeric(header.uid(), &old.uid, "uid")?, "uid")?;
    let gid = id(numeric(header.gid(), &old.gid, "gid")?, "gid")?;
    let mtime = numeric(header.mtime(), &old.mtime, "mtime")?;
    let mut mtime = TimeSpec::new(i64::try_from(mtime).unwrap_or(0), 0);
    let mut xattrs = Vec::new();
    if let Some(extensions) = entry
        .pax_extensions()
        .map_err(|e| format!("bad PAX extension: {e}"))?
    {
        for extension in extensions {
            let extension = extension.map_err(|e| format!("bad PAX extension: {e}"))?;
            let Ok(key) = extension.key() else {
                continue;
            };
            if key == "mtime" {
                let text = extension.value().unwrap_or("");
                let (seconds, nanos) =
                    parse_pax_time(text).ok_or_else(|| format!("bad PAX mtime {text:?}"))?;
                mtime = TimeSpec::new(seconds, nanos);
            } else if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)) {
                    continue;
                }
                let Ok(name) = CString::new(name) else {
                    continue;
                };
                xattrs.push((name, extension.value_bytes().to_vec()));
            }
        }
    }
    // BuildKit's `boundRootTime`: a time before the epoch becomes the epoch.
    if mtime.tv_sec() < 0 {
        mtime = TimeSpec::new(0, 0);
    }
    let (uid, gid) = copier.chown.unwrap_or((uid, gid));
    Ok(Attributes {
        uid,
        gid,
        mode: u32::try_from(mode & 0o7777).unwrap_or_default(),
        xattrs,
        mtime: Some(mtime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleaned(raw: &str) -> Result<String, &'static str> {
        clean_entry_path(raw.as_bytes()).map(|c| String::from_utf8(join(&c)).unwrap())
    }

    #[test]
    fn entry_paths_are_cleaned_and_may_not_climb_out() {
        for (raw, expected) in [
            ("a/b", Ok("a/b")),
            ("/abs/x", Ok("abs/x")),
            ("./a//b/./c/", Ok("a/b/c")),
            ("a/../b", Ok("b")),
            ("./", Ok("")),
            ("a/..", Ok("")),
        ] {
            assert_eq!(cleaned(raw), expected.map(str::to_string), "{raw:?}");
        }
        for raw in ["..", "../x", "a/../../x", "/../x", "a\0b"] {
            assert!(clean_entry_path(raw.as_bytes()).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn blank_numeric_fields_read_as_zero_and_garbage_is_an_error() {
        let garbage = || Err(io::Error::other("not a number"));
        assert_eq!(numeric(garbage(), b"\0\0 \0", "uid"), Ok(0));
        assert!(
            numeric(garbage(), b"12x\0", "uid")
                .unwrap_err()
                .contains("bad uid field")
        );
        assert_eq!(numeric(Ok(7), b"0000007\0", "uid"), Ok(7));
    }

    #[test]
    fn archives_are_recognised_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_path("x").unwrap();
        header.set_size(1);
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        let gzip = {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut encoder, &tar).unwrap();
            encoder.finish().unwrap()
        };
        for (name, bytes, expected) in [
            ("plain", tar.clone(), true),
            ("gzip", gzip.clone(), true),
            ("text", b"hello, not a tar".to_vec(), false),
            ("empty", Vec::new(), false),
            ("zeros", vec![0; 1024], false),
            (
                "truncated gzip",
                gzip.get(..10).unwrap_or_default().to_vec(),
                false,
            ),
            (
                "gzip of text",
                {
                    let mut encoder =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    std::io::Write::write_all(&mut encoder, b"text").unwrap();
                    encoder.finish().unwrap()
                },
                false,
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            assert_eq!(is_archive(File::open(&path).unwrap()), expected, "{name}");
        }
    }
}
