//! Hostile layers: every case is applied next to a host sentinel, and must either be refused
//! with the expected error (naming the entry) or be confined to the root; in both cases the
//! sentinel (reached next to the root and by absolute path) is byte-for-byte untouched and
//! nothing new appears outside the root.

use kiln::layer::{AppliedLayer, ApplyOptions, LayerError, Whiteouts, apply_layer, decompressed};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The uncompressed limit every case runs with.
const LIMIT: u64 = 1 << 20;
/// Names no case may create anywhere outside the root (looked for at absolute paths too). Cases
/// that go through a symlink to `/` only use these names, so a broken implementation leaves a
/// stray file at `/` (which the run reports and removes) instead of changing a host file.
const ESCAPE: &str = "kiln-layer-escape";
const ESCAPE_DIR: &str = "kiln-layer-escape-dir";

/// A tar built entry by entry with raw header bytes, so names the tar crate refuses to write
/// (`../x`, absolute paths) can be made.
struct Tar {
    builder: tar::Builder<Vec<u8>>,
}

impl Tar {
    fn new() -> Tar {
        Tar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        let field = &mut header.as_old_mut().name;
        assert!(name.len() < field.len(), "test name too long: {name}");
        field[..name.len()].copy_from_slice(name.as_bytes());
        header
    }

    fn append(mut self, mut header: tar::Header, data: &[u8]) -> Tar {
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Tar {
        let header = Tar::header(name, tar::EntryType::Regular, data.len() as u64, 0o644);
        self.append(header, data)
    }

    fn dir(self, name: &str) -> Tar {
        let header = Tar::header(name, tar::EntryType::Directory, 0, 0o755);
        self.append(header, b"")
    }

    fn link(self, kind: tar::EntryType, name: &str, target: &str) -> Tar {
        let mut header = Tar::header(name, kind, 0, 0o777);
        let field = &mut header.as_old_mut().linkname;
        assert!(target.len() < field.len(), "test target too long: {target}");
        field[..target.len()].copy_from_slice(target.as_bytes());
        self.append(header, b"")
    }

    fn symlink(self, name: &str, target: &str) -> Tar {
        self.link(tar::EntryType::Symlink, name, target)
    }

    fn hardlink(self, name: &str, target: &str) -> Tar {
        self.link(tar::EntryType::Link, name, target)
    }

    fn device(self, name: &str, major: u32, minor: u32) -> Tar {
        let mut header = Tar::header(name, tar::EntryType::Char, 0, 0o666);
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
        self.append(header, b"")
    }

    fn pax(mut self, records: &[(&str, &[u8])]) -> Tar {
        self.builder
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        self
    }

    fn done(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// What a case must do.
enum Expect {
    /// Fail with this `LayerError` variant, naming an entry that contains `entry`.
    Refused {
        kind: &'static str,
        entry: &'static str,
    },
    /// Succeed; the check looks inside the root (given the root and the sentinel's path).
    Confined(fn(&Path, &str) -> Result<(), String>),
}

struct Case {
    name: &'static str,
    mode: Whiteouts,
    /// Builds the layers (applied in order) given the sentinel directory's absolute path.
    layers: fn(&str) -> Vec<Vec<u8>>,
    expect: Expect,
}

fn kind(error: &LayerError) -> (&'static str, String) {
    match error {
        LayerError::Unsafe { entry, .. } => ("Unsafe", entry.clone()),
        LayerError::Malformed { entry, .. } => ("Malformed", entry.clone()),
        LayerError::Unsupported { entry, .. } => ("Unsupported", entry.clone()),
        LayerError::TooLarge { .. } => ("TooLarge", String::new()),
        LayerError::TooCompressed { .. } => ("TooCompressed", String::new()),
        LayerError::BadRatioSetting { .. } => ("BadRatioSetting", String::new()),
        LayerError::TooManyEntries { .. } => ("TooManyEntries", String::new()),
        LayerError::Io { path, .. } => ("Io", path.to_string_lossy().into_owned()),
        LayerError::Tar { .. } => ("Tar", String::new()),
        LayerError::UnmappedOwner { entry, .. } => ("UnmappedOwner", entry.clone()),
    }
}

fn is_file(path: &Path, contents: &str) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {
            let found = fs::read(path).map_err(|e| e.to_string())?;
            (found == contents.as_bytes()).then_some(()).ok_or_else(|| {
                format!(
                    "{} holds {:?}",
                    path.display(),
                    String::from_utf8_lossy(&found)
                )
            })
        }
        other => Err(format!("{} is not a file: {other:?}", path.display())),
    }
}

fn is_symlink(path: &Path, target: &str) -> Result<(), String> {
    match fs::read_link(path) {
        Ok(found) if found == Path::new(target) => Ok(()),
        other => Err(format!(
            "{} is not a symlink to {target}: {other:?}",
            path.display()
        )),
    }
}

fn absent(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(_) => Err(format!("{} exists", path.display())),
    }
}

/// The sentinel's path as a relative path, for looking at where an absolute entry landed.
fn inside(root: &Path, absolute: &str) -> PathBuf {
    root.join(absolute.trim_start_matches('/'))
}

fn cases() -> Vec<Case> {
    use Whiteouts::{Apply, Overlay};
    let refused = |kind, entry| Expect::Refused { kind, entry };
    vec![
        Case {
            name: "dot-dot escape",
            mode: Overlay,
            layers: |_| vec![Tar::new().file("../kiln-layer-escape", b"x").done()],
            expect: refused("Unsafe", "../kiln-layer-escape"),
        },
        Case {
            name: "dot-dot after a component",
            mode: Apply,
            layers: |_| vec![Tar::new().file("a/../../kiln-layer-escape", b"x").done()],
            expect: refused("Unsafe", "a/../../"),
        },
        Case {
            name: "deep dot-dot towards an absolute path",
            mode: Apply,
            layers: |_| {
                let name = format!("{}tmp/{ESCAPE}", "../".repeat(20));
                vec![Tar::new().file(&name, b"x").done()]
            },
            expect: refused("Unsafe", "../../"),
        },
        Case {
            name: "absolute path lands inside the root",
            mode: Apply,
            layers: |_| vec![Tar::new().file("/etc/kiln-layer-escape", b"abs").done()],
            expect: Expect::Confined(|root, _| is_file(&root.join("etc").join(ESCAPE), "abs")),
        },
        Case {
            name: "absolute path of the host sentinel lands inside the root",
            mode: Apply,
            layers: |s| vec![Tar::new().file(&format!("{s}/secret"), b"pwned").done()],
            expect: Expect::Confined(|root, s| is_file(&inside(root, s).join("secret"), "pwned")),
        },
        Case {
            name: "symlink to / then a file through it",
            mode: Overlay,
            layers: |_| {
                vec![
                    Tar::new()
                        .symlink("l", "/")
                        .file("l/kiln-layer-escape", b"in")
                        .done(),
                ]
            },
            expect: Expect::Confined(|root, _| {
                is_symlink(&root.join("l"), "/")?;
                is_file(&root.join(ESCAPE), "in")
            }),
        },
        Case {
            name: "symlink climbing with dot-dot then a file through it",
            mode: Apply,
            layers: |_| {
                vec![
                    Tar::new()
                        .symlink("l", "../../..")
                        .file("l/kiln-layer-escape", b"in")
                        .done(),
                ]
            },
            expect: Expect::Confined(|root, _| is_file(&root.join(ESCAPE), "in")),
        },
        Case {
            name: "symlink then directory and file through it",
            mode: Overlay,
            layers: |_| {
                // Names no host has, so an implementation that escaped would create a stray
                // directory at `/` (which the run looks for) rather than change host files.
                vec![
                    Tar::new()
                        .symlink("l", "/")
                        .dir("l/kiln-layer-escape-dir/")
                        .file("l/kiln-layer-escape-dir/passwd", b"root:x:0:0")
                        .done(),
                ]
            },
            expect: Expect::Confined(|root, _| {
                is_file(&root.join(ESCAPE_DIR).join("passwd"), "root:x:0:0")
            }),
        },
        Case {
            name: "symlink to the host sentinel then a file through it",
            mode: Apply,
            layers: |s| vec![Tar::new().symlink("l", s).file("l/secret", b"pwned").done()],
            expect: refused("Unsafe", "l/secret"),
        },
        Case {
            name: "symlink to the host sentinel file then a file replacing it",
            mode: Overlay,
            layers: |s| {
                let target = format!("{s}/secret");
                vec![Tar::new().symlink("s", &target).file("s", b"pwned").done()]
            },
            expect: Expect::Confined(|root, _| is_file(&root.join("s"), "pwned")),
        },
        Case {
            name: "symlink then a hardlink through it to a host path",
            mode: Apply,
            layers: |s| {
                let target = format!("l{s}/secret");
                vec![Tar::new().symlink("l", "/").hardlink("h", &target).done()]
            },
            expect: refused("Unsafe", "h"),
        },
        Case {
            name: "hardlink through a symlink to a file of the layer",
            mode: Overlay,
            layers: |_| {
                vec![
                    Tar::new()
                        .file("f", b"mine")
                        .symlink("l", "/")
                        .hardlink("h", "l/f")
                        .done(),
                ]
            },
            expect: Expect::Confined(|root, _| {
                is_file(&root.join("h"), "mine")?;
                let (f, h) = (
                    fs::metadata(root.join("f")).map_err(|e| e.to_string())?,
                    fs::metadata(root.join("h")).map_err(|e| e.to_string())?,
                );
                (f.ino() == h.ino())
                    .then_some(())
                    .ok_or("h is not a hardlink of f".into())
            }),
        },
        Case {
            name: "hardlink to an absolute host path",
            mode: Apply,
            layers: |s| vec![Tar::new().hardlink("h", &format!("{s}/secret")).done()],
            expect: refused("Unsafe", "h"),
        },
        Case {
            name: "hardlink to a path above the root",
            mode: Overlay,
            layers: |_| vec![Tar::new().hardlink("h", "../../sentinel/secret").done()],
            expect: refused("Unsafe", "h"),
        },
        Case {
            name: "hardlink to a lower layer's file",
            mode: Apply,
            layers: |_| {
                vec![
                    Tar::new().file("lower", b"below").done(),
                    Tar::new().hardlink("h", "lower").done(),
                ]
            },
            expect: refused("Unsafe", "h"),
        },
        Case {
            name: "hardlink to a directory",
            mode: Overlay,
            layers: |_| vec![Tar::new().dir("d/").hardlink("h", "d").done()],
            expect: refused("Unsafe", "h"),
        },
        Case {
            name: "symlink then file across two layers (apply)",
            mode: Apply,
            layers: |_| {
                vec![
                    Tar::new()
                        .dir("sentinel/")
                        .symlink("l", "../../sentinel")
                        .done(),
                    Tar::new().file("l/secret", b"pwned").done(),
                ]
            },
            expect: Expect::Confined(|root, _| is_file(&root.join("sentinel/secret"), "pwned")),
        },
        Case {
            name: "symlink then file across two layers (overlay)",
            mode: Overlay,
            layers: |s| {
                vec![
                    Tar::new().symlink("l", s).done(),
                    Tar::new().file("l/secret", b"pwned").done(),
                ]
            },
            expect: Expect::Confined(|root, s| {
                is_symlink(&root.join("0/l"), s)?;
                is_file(&root.join("1/l/secret"), "pwned")
            }),
        },
        Case {
            name: "file replacing a lower symlink to the host directory",
            mode: Apply,
            layers: |s| {
                vec![
                    Tar::new().symlink("d", s).done(),
                    Tar::new().file("d", b"plain").done(),
                ]
            },
            expect: Expect::Confined(|root, _| is_file(&root.join("d"), "plain")),
        },
        Case {
            name: "directory replacing a symlink to the host directory",
            mode: Overlay,
            layers: |s| {
                vec![
                    Tar::new()
                        .symlink("d", s)
                        .dir("d/")
                        .file("d/secret", b"x")
                        .done(),
                ]
            },
            expect: Expect::Confined(|root, _| {
                let meta = fs::symlink_metadata(root.join("d")).map_err(|e| e.to_string())?;
                if !meta.is_dir() {
                    return Err("d is not a directory".into());
                }
                is_file(&root.join("d/secret"), "x")
            }),
        },
        Case {
            name: "AUFS hardlink directory .wh..wh.plnk",
            mode: Apply,
            layers: |_| {
                vec![
                    Tar::new()
                        .dir(".wh..wh.plnk/")
                        .file(".wh..wh.plnk/1", b"x")
                        .done(),
                ]
            },
            expect: refused("Unsafe", ".wh..wh.plnk"),
        },
        Case {
            name: "file inside an AUFS .wh..wh.plnk directory",
            mode: Overlay,
            layers: |_| vec![Tar::new().file(".wh..wh.plnk/1", b"x").done()],
            expect: refused("Unsafe", ".wh..wh.plnk/1"),
        },
        Case {
            name: "whiteout of ..",
            mode: Apply,
            layers: |_| vec![Tar::new().file("a/.wh...", b"").done()],
            expect: refused("Unsafe", ".wh..."),
        },
        Case {
            name: "whiteout of .",
            mode: Overlay,
            layers: |_| vec![Tar::new().file("a/.wh..", b"").done()],
            expect: refused("Unsafe", ".wh.."),
        },
        Case {
            name: "whiteout of an empty name",
            mode: Apply,
            layers: |_| vec![Tar::new().file("a/.wh.", b"").done()],
            expect: refused("Unsafe", ".wh."),
        },
        Case {
            name: "whiteout above the root",
            mode: Apply,
            layers: |_| vec![Tar::new().file("../.wh.sentinel", b"").done()],
            expect: refused("Unsafe", "../.wh.sentinel"),
        },
        Case {
            name: "whiteout through a symlink to the host directory",
            mode: Apply,
            layers: |s| {
                vec![
                    Tar::new().symlink("l", s).done(),
                    Tar::new().file("l/.wh.secret", b"").done(),
                ]
            },
            expect: Expect::Confined(|root, s| is_symlink(&root.join("l"), s)),
        },
        Case {
            name: "whiteout of a symlink removes the link, not its target",
            mode: Apply,
            layers: |s| {
                vec![
                    Tar::new().symlink("l", s).done(),
                    Tar::new().file(".wh.l", b"").done(),
                ]
            },
            expect: Expect::Confined(|root, _| absent(&root.join("l"))),
        },
        Case {
            name: "opaque marker through a symlink to the host directory (apply)",
            mode: Apply,
            layers: |s| {
                vec![
                    Tar::new().symlink("l", s).file("keep", b"k").done(),
                    Tar::new().file("l/.wh..wh..opq", b"").done(),
                ]
            },
            expect: Expect::Confined(|root, _| is_file(&root.join("keep"), "k")),
        },
        Case {
            name: "opaque marker through a symlink to the host directory (overlay)",
            mode: Overlay,
            layers: |s| {
                vec![
                    Tar::new()
                        .symlink("l", s)
                        .file("l/.wh..wh..opq", b"")
                        .done(),
                ]
            },
            expect: refused("Unsafe", "l/.wh..wh..opq"),
        },
        Case {
            name: "device node",
            mode: Overlay,
            layers: |s| {
                vec![
                    Tar::new()
                        .device("dev/kiln-null", 1, 3)
                        .device(&format!("{s}/kiln-null"), 1, 3)
                        .done(),
                ]
            },
            expect: Expect::Confined(|root, s| {
                for path in [
                    root.join("dev/kiln-null"),
                    inside(root, s).join("kiln-null"),
                ] {
                    match fs::symlink_metadata(&path) {
                        // Created inside the root as root, skipped otherwise.
                        Ok(m)
                            if m.file_type().is_char_device()
                                && m.rdev() == libc::makedev(1, 3) => {}
                        Err(_) if !running_as_root() => {}
                        other => return Err(format!("{}: {other:?}", path.display())),
                    }
                }
                Ok(())
            }),
        },
        Case {
            name: "gzip bomb past the limit",
            mode: Apply,
            layers: |_| {
                let mut tar = Tar::new();
                let zeros = vec![0u8; 512 << 10];
                for index in 0..20 {
                    tar = tar.file(&format!("zeros{index}"), &zeros);
                }
                let plain = tar.done();
                let mut gzip =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                gzip.write_all(&plain).unwrap();
                let bomb = gzip.finish().unwrap();
                assert!(bomb.len() < 20 << 10, "the bomb is {} bytes", bomb.len());
                vec![bomb]
            },
            expect: refused("TooLarge", ""),
        },
        Case {
            name: "huge PAX size",
            mode: Overlay,
            layers: |_| {
                vec![
                    Tar::new()
                        .pax(&[("size", b"1000000000000000")])
                        .file("huge", b"small")
                        .done(),
                ]
            },
            expect: refused("TooLarge", ""),
        },
        Case {
            name: "PAX path climbing above the root",
            mode: Apply,
            layers: |_| {
                vec![
                    Tar::new()
                        .pax(&[("path", b"../../kiln-layer-escape")])
                        .file("innocent", b"x")
                        .done(),
                ]
            },
            expect: refused("Unsafe", "../../kiln-layer-escape"),
        },
        Case {
            name: "PAX linkpath of a hardlink to the host sentinel",
            mode: Overlay,
            layers: |_| {
                vec![
                    Tar::new()
                        .pax(&[("linkpath", b"../../sentinel/secret")])
                        .hardlink("h", "innocent")
                        .done(),
                ]
            },
            expect: refused("Unsafe", "h"),
        },
        Case {
            name: "symlink loop",
            mode: Apply,
            layers: |_| {
                vec![
                    Tar::new()
                        .symlink("a", "b")
                        .symlink("b", "a")
                        .file("a/x", b"x")
                        .done(),
                ]
            },
            expect: refused("Unsafe", "a/x"),
        },
        Case {
            name: "PAX xattr faking an overlay opaque directory",
            mode: Overlay,
            layers: |_| {
                vec![
                    Tar::new()
                        .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
                        .dir("d/")
                        .done(),
                ]
            },
            expect: Expect::Confined(|root, _| {
                let value = xattr_of(&root.join("d"), "trusted.overlay.opaque");
                value
                    .is_none()
                    .then_some(())
                    .ok_or(format!("opaque xattr set: {value:?}"))
            }),
        },
    ]
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn xattr_of(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let name = std::ffi::CString::new(name).ok()?;
    let mut buffer = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and the buffer is valid for its length.
    let size = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    let size = usize::try_from(size).ok()?;
    buffer.truncate(size);
    Some(buffer)
}

/// Every file under `dir` except the `skip` subtree, described by type, mode, owner, size, mtime,
/// contents and link target, without following symlinks.
fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path == skip {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            let detail = if meta.is_file() {
                format!("{:?}", fs::read(&path).unwrap())
            } else if meta.file_type().is_symlink() {
                format!("-> {:?}", fs::read_link(&path).unwrap())
            } else {
                String::new()
            };
            let description = format!(
                "mode {:o} owner {}:{} size {} mtime {}.{} rdev {} {detail}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.rdev(),
            );
            if meta.is_dir() {
                pending.push(path.clone());
            }
            out.insert(path, description);
        }
    }
    out
}

/// Runs one case in a fresh directory: `T/outer/root` is the root; `T/sentinel` (a secret file,
/// a subdirectory) and `T/outer/near` are the host files it must not touch.
fn run(case: &Case) -> Result<(), String> {
    let top = tempfile::tempdir().map_err(|e| e.to_string())?;
    let sentinel = top.path().join("sentinel");
    let root = top.path().join("outer/root");
    fs::create_dir_all(sentinel.join("dir")).unwrap();
    fs::create_dir_all(&root).unwrap();
    fs::write(sentinel.join("secret"), "host secret\n").unwrap();
    fs::write(sentinel.join("dir/inner"), "inner\n").unwrap();
    fs::write(top.path().join("outer/near"), "near\n").unwrap();
    let before = snapshot(top.path(), &root);

    let sentinel_text = sentinel.to_str().ok_or("temporary path is not UTF-8")?;
    let options = ApplyOptions {
        whiteouts: case.mode,
        max_bytes: LIMIT,
        same_owner: running_as_root(),
        device_nodes: running_as_root(),
        user_xattr: false,
    };
    let layers = (case.layers)(sentinel_text);
    let mut result: Result<Option<AppliedLayer>, LayerError> = Ok(None);
    for (index, layer) in layers.iter().enumerate() {
        // Overlay layers each get their own directory; a single one is unpacked into the root.
        let target = if case.mode == Whiteouts::Overlay && layers.len() > 1 {
            root.join(index.to_string())
        } else {
            root.clone()
        };
        fs::create_dir_all(&target).unwrap();
        result = decompressed(&layer[..], LIMIT)
            .and_then(|r| apply_layer(r, &target, &options))
            .map(Some);
        if result.is_err() {
            break;
        }
    }

    let mut problems = Vec::new();
    match (&case.expect, &result) {
        (Expect::Refused { kind: want, entry }, Err(error)) => {
            let (found, named) = kind(error);
            if found != *want || !named.contains(entry) {
                problems.push(format!("expected {want} naming {entry:?}, got {error:?}"));
            }
            if error.to_string().is_empty() {
                problems.push("empty error message".to_string());
            }
        }
        (Expect::Refused { kind, .. }, Ok(applied)) => {
            problems.push(format!("expected {kind}, but it applied: {applied:?}"));
        }
        (Expect::Confined(check), Ok(_)) => {
            if let Err(problem) = check(&root, sentinel_text) {
                problems.push(problem);
            }
        }
        (Expect::Confined(_), Err(error)) => problems.push(format!("refused: {error}")),
    }
    let after = snapshot(top.path(), &root);
    if before != after {
        problems.push(format!(
            "outside the root changed:\nbefore {before:#?}\nafter {after:#?}"
        ));
    }
    let places = [
        Path::new("/"),
        Path::new("/tmp"),
        top.path().parent().unwrap_or(top.path()),
    ];
    for place in places {
        for name in [ESCAPE, ESCAPE_DIR] {
            let escaped = place.join(name);
            if fs::symlink_metadata(&escaped).is_ok() {
                problems.push(format!("{} exists", escaped.display()));
                // Reported; removed so that one broken run does not fail the next ones.
                let _ = fs::remove_dir_all(&escaped).or_else(|_| fs::remove_file(&escaped));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn hostile_layers_are_refused_or_confined() {
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(problem) = run(case) {
            failures.push(format!("{}: {problem}", case.name));
        }
    }
    for failure in &failures {
        eprintln!("FAIL {failure}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed",
        failures.len(),
        cases.len()
    );
    assert_eq!(cases.len(), 37);
}
