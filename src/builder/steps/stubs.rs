//! Mount points the sandbox had to create for a RUN step, removed again before its upper
//! directory becomes a layer, so a layer holds what the command did, not where kiln mounted
//! things.
//!
//! The rule is BuildKit's (`executor/stubs.go`, `MountStubsCleaner`, with
//! `RemoveMountStubsRecursive`, which the Dockerfile front end sets on every RUN): before the
//! run, every bind-mount destination (`/etc/hosts`, `/etc/resolv.conf`, the step's own mounts)
//! that does not exist in the image is noted, with each missing parent. After the run, each noted
//! path, deepest first, is removed when it is still an empty directory or an empty regular file,
//! and the times of the directory it was removed from are put back (moby/buildkit#3148: a stub
//! must not change a layer). The kernel file systems' mount points (`/proc`, `/sys`, `/dev`)
//! and a missing working directory are not stubs: BuildKit keeps them too (a `FROM scratch`
//! image's first RUN layer has `dev/`, `proc/` and `sys/`, as the peer dockerd shows).
//!
//! One step further than stubs.go, to give the layer BuildKit's paths: creating `/etc/hosts` in
//! an image whose `/etc` lacks it copies `/etc` up into the upper directory. BuildKit's overlay
//! differ (`util/overlay`, `sameDirent`) leaves out a directory whose mode and owner did not
//! change, so after the stub is gone the copy is removed as well when it is empty, not opaque,
//! carries no extended attribute of its own, and has the image's mode and owner; the image's
//! directory shows through again, unchanged. (Docker 20.10's BuildKit, before both changes,
//! leaves `etc/` in every RUN layer of such an image.)
//!
//! A destination reached through a symbolic link in the image is left alone: the runtime
//! resolves it inside the root, and a stub kiln cannot place for certain is never removed. After
//! the run the upper directory is quiet (every process of the sandbox is gone), and each path is
//! checked component by component not to cross a symbolic link the command left there, so
//! nothing outside the upper directory is ever touched.

use crate::sys::xattr;
use std::ffi::{OsStr, OsString};
use std::fs::{self, FileTimes, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Why the image or the upper directory could not be inspected for mount stubs.
#[derive(Debug, thiserror::Error)]
pub enum StubError {
    /// A file operation failed.
    #[error("cannot {action} {} (cleaning mount stubs): {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn io_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StubError + 'p {
    move |source| StubError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The mount stubs of one run: found before it ([`MountStubs::find`]), removed after it
/// ([`MountStubs::remove`]).
#[derive(Debug, Default)]
pub struct MountStubs {
    /// Paths (components below the root) missing from the image: the runtime creates them.
    stubs: Vec<Vec<OsString>>,
    /// The directories the missing chains hang from (not the root), with the image's mode,
    /// uid and gid for each of their prefixes.
    anchors: Vec<Anchor>,
}

#[derive(Debug)]
struct Anchor {
    path: Vec<OsString>,
    /// `owners[k]`: the image's (mode, uid, gid) of the directory `path[..=k]`.
    owners: Vec<(u32, u32, u32)>,
}

/// What a name is in the image's merged view.
enum Entry {
    Missing,
    /// A directory: the layers' directories of that name that the merged one shows, top-most
    /// first, and the metadata of the top-most (which the merged directory has).
    Directory(Vec<PathBuf>, Metadata),
    Symlink,
    /// Anything else: a file, a device...
    Other,
}

impl MountStubs {
    /// Notes which of `destinations` (absolute container paths) and their parents do not exist
    /// in the image made of `lower_dirs` (overlay format, TOP-MOST FIRST). The run's upper
    /// directory must still be empty.
    pub fn find<'a>(
        lower_dirs: &[PathBuf],
        destinations: impl IntoIterator<Item = &'a str>,
    ) -> Result<MountStubs, StubError> {
        let mut found = MountStubs::default();
        for destination in destinations {
            let components = clean(destination);
            let mut merged = lower_dirs.to_vec();
            let mut owners = Vec::new();
            for (depth, name) in components.iter().enumerate() {
                match lookup(&merged, name)? {
                    Entry::Directory(next, top) => {
                        owners.push((top.mode(), top.uid(), top.gid()));
                        merged = next;
                    }
                    Entry::Missing => {
                        for end in depth + 1..=components.len() {
                            found
                                .stubs
                                .push(components.get(..end).unwrap_or_default().to_vec());
                        }
                        if depth > 0 {
                            found.anchors.push(Anchor {
                                path: components.get(..depth).unwrap_or_default().to_vec(),
                                owners,
                            });
                        }
                        break;
                    }
                    // Through a link the runtime resolves it elsewhere; a file exists (or a
                    // parent is not a directory, and the mount fails).
                    Entry::Symlink | Entry::Other => break,
                }
            }
        }
        // Deepest first, so a directory is tried after what was created in it.
        found
            .stubs
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        found.stubs.dedup();
        found.anchors.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then_with(|| a.path.cmp(&b.path))
        });
        found.anchors.dedup_by(|a, b| a.path == b.path);
        Ok(found)
    }

    /// Removes, in `upper`, the stubs still empty, then the copies of their parent directories
    /// that only the stubs made (see the module documentation).
    pub fn remove(&self, upper: &Path) -> Result<(), StubError> {
        for stub in &self.stubs {
            let Some((parent, name)) = real_parent(upper, stub)? else {
                continue;
            };
            let path = parent.join(name);
            let Some(meta) = lstat(&path)? else {
                continue;
            };
            let empty_file = meta.file_type().is_file() && meta.len() == 0;
            if meta.is_dir() || empty_file {
                remove_keeping_times(&parent, &path, meta.is_dir())?;
            }
        }
        for anchor in &self.anchors {
            // From the anchor up to (not including) the root, while each is a bare copy.
            for depth in (1..=anchor.path.len()).rev() {
                let Some(path) = anchor.path.get(..depth) else {
                    break;
                };
                let Some(&owner) = anchor.owners.get(depth - 1) else {
                    break;
                };
                let Some((parent, name)) = real_parent(upper, path)? else {
                    break;
                };
                let dir = parent.join(name);
                if !is_bare_copy(&dir, owner)? || !remove_keeping_times(&parent, &dir, true)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// The components of absolute `path` after removing empty and `.` components and resolving `..`
/// lexically (at the root it stays at the root), as the runtime cleans a mount destination.
fn clean(path: &str) -> Vec<OsString> {
    let mut components: Vec<OsString> = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                components.pop();
            }
            name => components.push(OsString::from(name)),
        }
    }
    components
}

/// `lstat`, `None` when the path does not exist or a parent is not a directory.
fn lstat(path: &Path) -> Result<Option<Metadata>, StubError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) if err.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(err) => Err(io_error("inspect", path)(err)),
    }
}

/// Looks `name` up in a merged directory (its layers' directories, top-most first), as
/// overlayfs does (Documentation/filesystems/overlayfs.rst): the top-most layer holding the name
/// decides; a whiteout (a 0/0 character device) hides it below; a directory merges with the
/// same-named directories below it down to the first opaque one or the first layer where the
/// name is not a directory.
fn lookup(merged: &[PathBuf], name: &OsStr) -> Result<Entry, StubError> {
    for (index, dir) in merged.iter().enumerate() {
        let path = dir.join(name);
        let Some(meta) = lstat(&path)? else {
            continue;
        };
        let kind = meta.file_type();
        if kind.is_char_device() && meta.rdev() == 0 {
            return Ok(Entry::Missing);
        }
        if kind.is_symlink() {
            return Ok(Entry::Symlink);
        }
        if !kind.is_dir() {
            return Ok(Entry::Other);
        }
        let mut dirs = vec![path.clone()];
        let mut opaque = is_opaque(&path);
        for below in merged.get(index + 1..).unwrap_or_default() {
            if opaque {
                break;
            }
            let lower = below.join(name);
            match lstat(&lower)? {
                None => continue,
                Some(m) if m.is_dir() => {
                    opaque = is_opaque(&lower);
                    dirs.push(lower);
                }
                Some(_) => break,
            }
        }
        return Ok(Entry::Directory(dirs, meta));
    }
    Ok(Entry::Missing)
}

/// The real directory in `upper` that holds `path`'s last component, and that component;
/// `None` when a parent is missing, not a directory, or a symbolic link (the command replaced
/// it: what is there now is not the stub).
fn real_parent<'p>(
    upper: &Path,
    path: &'p [OsString],
) -> Result<Option<(PathBuf, &'p OsStr)>, StubError> {
    let Some((name, parents)) = path.split_last() else {
        return Ok(None);
    };
    let mut dir = upper.to_path_buf();
    for parent in parents {
        dir.push(parent);
        match lstat(&dir)? {
            Some(meta) if meta.is_dir() => {}
            _ => return Ok(None),
        }
    }
    Ok(Some((dir, name.as_os_str())))
}

/// Removes `path` (an empty directory or a file) from `parent` and puts `parent`'s access and
/// modification times back. `false` when a directory is not empty (rmdir(2) checks that
/// atomically): nothing changed then.
fn remove_keeping_times(parent: &Path, path: &Path, is_dir: bool) -> Result<bool, StubError> {
    let before = fs::symlink_metadata(parent).map_err(io_error("inspect", parent))?;
    let removed = if is_dir {
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    };
    match removed {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::DirectoryNotEmpty => return Ok(false),
        Err(err) => return Err(io_error("remove", path)(err)),
    }
    let times = FileTimes::new()
        .set_accessed(before.accessed().map_err(io_error("inspect", parent))?)
        .set_modified(before.modified().map_err(io_error("inspect", parent))?);
    fs::File::open(parent)
        .and_then(|dir| dir.set_times(times))
        .map_err(io_error("restore the times of", parent))?;
    Ok(true)
}

/// Whether `dir` (in the upper directory) is a copy overlayfs made of the image's directory
/// that nothing changed: empty, not opaque, the image's mode and owner, and no extended
/// attribute besides overlayfs' own bookkeeping.
fn is_bare_copy(dir: &Path, (mode, uid, gid): (u32, u32, u32)) -> Result<bool, StubError> {
    let Some(meta) = lstat(dir)? else {
        return Ok(false);
    };
    if !meta.is_dir() || (meta.mode(), meta.uid(), meta.gid()) != (mode, uid, gid) {
        return Ok(false);
    }
    if fs::read_dir(dir)
        .map_err(io_error("read directory", dir))?
        .next()
        .is_some()
    {
        return Ok(false);
    }
    let names = xattr_names(dir).map_err(io_error("list the extended attributes of", dir))?;
    Ok(names.iter().all(|name| {
        (name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay."))
            && !name.ends_with(b".opaque")
    }))
}

/// Whether overlayfs treats `dir` as opaque (`trusted.overlay.opaque` or, with `userxattr`,
/// `user.overlay.opaque` is `y`).
fn is_opaque(dir: &Path) -> bool {
    [c"trusted.overlay.opaque", c"user.overlay.opaque"]
        .iter()
        .any(|name| xattr::get(dir, name).is_ok_and(|value| value == b"y"))
}

/// The names of `path`'s extended attributes (llistxattr(2), not following a symlink); a file
/// system without xattrs (ENOTSUP) has none.
fn xattr_names(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    match xattr::list(path) {
        Err(error) if error.raw_os_error() == Some(libc::ENOTSUP) => Ok(Vec::new()),
        result => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::{Duration, SystemTime};

    fn mtime(path: &Path) -> SystemTime {
        fs::symlink_metadata(path).unwrap().modified().unwrap()
    }

    fn set_mtime(path: &Path, when: SystemTime) {
        fs::File::open(path)
            .unwrap()
            .set_times(FileTimes::new().set_modified(when).set_accessed(when))
            .unwrap();
    }

    /// An image (one lower dir) with `/etc` (mode 0755, a file in it) and `/link -> /etc`; an
    /// empty upper dir beside it.
    fn image() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        let upper = dir.path().join("upper");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::set_permissions(lower.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(lower.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        symlink("/etc", lower.join("link")).unwrap();
        fs::create_dir(&upper).unwrap();
        (dir, lower, upper)
    }

    fn names(stubs: &MountStubs) -> Vec<String> {
        stubs
            .stubs
            .iter()
            .map(|p| {
                p.iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect()
    }

    #[test]
    fn missing_destinations_and_their_missing_parents_are_stubs() {
        let (_dir, lower, _upper) = image();
        let stubs = MountStubs::find(
            &[lower],
            [
                "/etc/hosts",
                "/etc/passwd",
                "//mnt/./a/../b/c",
                "/link/x",
                "/etc/passwd/under-a-file",
                "/",
                "/etc",
            ],
        )
        .unwrap();
        assert_eq!(names(&stubs), ["mnt/b/c", "etc/hosts", "mnt/b", "mnt"]);
        let anchors: Vec<_> = stubs.anchors.iter().map(|a| a.path.clone()).collect();
        assert_eq!(anchors, [vec![OsString::from("etc")]]);
    }

    #[test]
    #[allow(clippy::disallowed_macros)] // A test's skip notice, not kiln's output.
    fn whiteouts_and_opaque_directories_hide_what_is_below() {
        if !crate::sys::privilege::current().is_real_root() {
            eprintln!("notice: skipping, whiteouts and trusted xattrs need root");
            return;
        }
        let (dir, lower, _upper) = image();
        let top = dir.path().join("top");
        fs::create_dir(&top).unwrap();
        // A whiteout for /passwd and an opaque /mnt over the lower /mnt/b.
        nix::sys::stat::mknod(
            &top.join("passwd"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        fs::create_dir_all(lower.join("mnt/b")).unwrap();
        fs::write(lower.join("passwd"), "").unwrap();
        fs::create_dir(top.join("mnt")).unwrap();
        xattr::set(&top.join("mnt"), c"trusted.overlay.opaque", b"y").unwrap();
        let stubs = MountStubs::find(&[top, lower], ["/passwd", "/mnt/b"]).unwrap();
        assert_eq!(names(&stubs), ["mnt/b", "passwd"]);
    }

    #[test]
    fn empty_stubs_go_with_the_parents_made_for_them_and_times_are_restored() {
        let (_dir, lower, upper) = image();
        let stubs = MountStubs::find(
            &[lower],
            ["/etc/hosts", "/mnt/deep/dir", "/data/file", "/kept/dir"],
        )
        .unwrap();
        // What the runtime and the command did: the stubs, a copy of /etc, data written into
        // one stub's parent, a file where a directory stub was.
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        fs::create_dir(upper.join("etc")).unwrap();
        fs::set_permissions(upper.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(upper.join("etc/hosts"), "").unwrap();
        fs::create_dir_all(upper.join("mnt/deep/dir")).unwrap();
        fs::create_dir_all(upper.join("data")).unwrap();
        fs::write(upper.join("data/file"), "").unwrap();
        fs::write(upper.join("data/made-by-the-command"), "x").unwrap();
        fs::create_dir_all(upper.join("kept")).unwrap();
        fs::write(upper.join("kept/dir"), "not empty").unwrap();
        set_mtime(&upper.join("data"), old);
        set_mtime(&upper, old);
        stubs.remove(&upper).unwrap();
        let mut left: Vec<String> = Vec::new();
        for entry in fs::read_dir(&upper).unwrap() {
            left.push(entry.unwrap().file_name().to_string_lossy().into_owned());
        }
        left.sort();
        assert_eq!(left, ["data", "kept"]);
        assert!(!upper.join("data/file").exists());
        assert!(upper.join("data/made-by-the-command").exists());
        assert!(upper.join("kept/dir").is_file());
        assert_eq!(mtime(&upper.join("data")), old);
        assert_eq!(mtime(&upper), old);
    }

    #[test]
    fn a_changed_copy_of_the_parent_stays() {
        let (_dir, lower, upper) = image();
        let stubs = MountStubs::find(&[lower], ["/etc/hosts"]).unwrap();
        fs::create_dir(upper.join("etc")).unwrap();
        // chmod by the command: the copy differs from the image's directory.
        fs::set_permissions(upper.join("etc"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(upper.join("etc/hosts"), "").unwrap();
        stubs.remove(&upper).unwrap();
        assert!(upper.join("etc").is_dir());
        assert!(!upper.join("etc/hosts").exists());
    }

    #[test]
    fn a_symlink_left_by_the_command_is_never_followed() {
        let (dir, lower, upper) = image();
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("b")).unwrap();
        let stubs = MountStubs::find(&[lower], ["/mnt/b"]).unwrap();
        symlink(&outside, upper.join("mnt")).unwrap();
        stubs.remove(&upper).unwrap();
        assert!(outside.join("b").is_dir());
        assert!(upper.join("mnt").is_symlink());
    }
}
