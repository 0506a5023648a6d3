//! A layer stack as one plain directory, and what changed in it since, as an overlay upper
//! directory: what `--isolation=chroot` needs, where no overlay can be mounted.
//!
//! [`flatten`] copies a stack of snapshot directories (overlay format, TOP-MOST FIRST) into a
//! fresh directory, bottom layer first, through the same code that writes and applies layer
//! tars (so whiteouts, opaque directories and confinement follow the layer rules; nothing is
//! hardlinked into the store's snapshots, so a command cannot change them). [`TreeRecord::take`]
//! then notes every entry's inode and change time: the kernel sets the change time on every
//! change (contents, mode, owner, links, and for a directory its entries), and nobody can set it
//! back, so after the command an entry is unchanged exactly when its inode and change time are.
//! [`TreeRecord::write_changes`] writes the new and changed entries into an overlay-format upper
//! directory, and a whiteout (a 0/0 character device) for each entry that is gone from a
//! directory still there, so the rest of the pipeline (commit, snapshots, the layer tar) is the
//! one the sandbox's RUN steps use.

use super::LayerError;
use super::apply::{ApplyOptions, Whiteouts, apply_layer};
use super::diff::write_layer;
use crate::sys::xattr;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, FileTimes, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// xattr name prefixes that are overlayfs's own bookkeeping: never copied into the upper
/// directory (there they would mean opaque directories or redirects).
const OVERLAY_XATTRS: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Copies the union of `layers` (snapshot directories in overlay format, TOP-MOST FIRST) into
/// the empty directory `dest`: each layer is written as a layer tar and applied on top of the
/// ones below (whiteouts delete), at most `max_bytes` per layer. Owners are kept when kiln may
/// chown (root, or root of its rootless namespace); otherwise every entry belongs to kiln's user
/// (and device nodes are skipped where kiln may not make them).
pub fn flatten(layers: &[PathBuf], dest: &Path, max_bytes: u64) -> Result<(), LayerError> {
    let privilege = crate::sys::privilege::current();
    let options = ApplyOptions {
        whiteouts: Whiteouts::Apply,
        max_bytes,
        same_owner: privilege.can_chown(),
        device_nodes: privilege.can_make_devices(),
        user_xattr: false,
    };
    for layer in layers.iter().rev() {
        let (reader, writer) = io::pipe().map_err(|source| LayerError::Io {
            path: layer.clone(),
            source,
        })?;
        let written = std::thread::scope(|scope| {
            let writing = scope.spawn(move || write_layer(layer, writer));
            let applied = apply_layer(reader, dest, &options);
            let written = writing.join().unwrap_or_else(|_| {
                Err(LayerError::Io {
                    path: layer.clone(),
                    source: io::Error::other("the thread writing the layer panicked"),
                })
            });
            // The writer's error first: when it stops, the applier sees a truncated tar.
            written.and(applied)
        });
        written?;
    }
    Ok(())
}

/// What identifies an entry's state: when both are unchanged, so is the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Stamp {
    fn of(metadata: &Metadata) -> Stamp {
        Stamp {
            ino: metadata.ino(),
            ctime: metadata.ctime(),
            ctime_nsec: metadata.ctime_nsec(),
        }
    }
}

/// Every entry of a tree (relative path → its stamp), taken right after it was made.
#[derive(Debug, Clone, Default)]
pub struct TreeRecord {
    entries: HashMap<PathBuf, Stamp>,
}

/// What [`TreeRecord::write_changes`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// New or changed entries copied (directories included).
    pub copied: usize,
    /// Whiteouts for removed entries.
    pub removed: usize,
    /// The copied entries that existed when the record was taken (changed ones, and the
    /// directories above a change), relative to the root.
    pub existing: HashSet<PathBuf>,
}

impl TreeRecord {
    /// Notes every entry under `root` (symlinks not followed), except `excluded` paths
    /// (relative) and everything under them.
    pub fn take(root: &Path, excluded: &HashSet<PathBuf>) -> Result<TreeRecord, LayerError> {
        let mut record = TreeRecord::default();
        let mut latest = (i64::MIN, 0);
        let mut pending = vec![PathBuf::new()];
        while let Some(dir) = pending.pop() {
            for (relative, metadata) in children(root, &dir, excluded)? {
                if metadata.is_dir() {
                    pending.push(relative.clone());
                }
                let stamp = Stamp::of(&metadata);
                latest = latest.max((stamp.ctime, stamp.ctime_nsec));
                record.entries.insert(relative, stamp);
            }
        }
        wait_for_the_clock_past(latest);
        Ok(record)
    }

    /// How many entries were noted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry was noted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes what changed under `root` since the record into the empty directory `upper`, in
    /// overlay format: new and changed entries with their parent directories, and a whiteout
    /// for each recorded entry that is gone while its parent directory is still there.
    /// `excluded` paths (mount points) are left out as when recorded.
    pub fn write_changes(
        &self,
        root: &Path,
        upper: &Path,
        excluded: &HashSet<PathBuf>,
    ) -> Result<Changes, LayerError> {
        let mut writer = UpperWriter {
            recorded: &self.entries,
            root,
            upper,
            made_dirs: HashSet::new(),
            links: HashMap::new(),
            dir_times: Vec::new(),
            changes: Changes::default(),
        };
        let mut seen: HashSet<PathBuf> = HashSet::new();
        let mut present_dirs: HashSet<PathBuf> = HashSet::new();
        present_dirs.insert(PathBuf::new());
        let mut pending = vec![PathBuf::new()];
        while let Some(dir) = pending.pop() {
            for (relative, metadata) in children(root, &dir, excluded)? {
                let unchanged = self.entries.get(&relative) == Some(&Stamp::of(&metadata));
                if metadata.is_dir() {
                    present_dirs.insert(relative.clone());
                    pending.push(relative.clone());
                }
                if !unchanged {
                    writer.copy(&relative, &metadata)?;
                }
                seen.insert(relative);
            }
        }
        let mut gone: Vec<&PathBuf> = self
            .entries
            .keys()
            .filter(|path| !seen.contains(*path))
            .filter(|path| present_dirs.contains(path.parent().unwrap_or(Path::new(""))))
            .collect();
        gone.sort();
        for path in gone {
            writer.whiteout(path)?;
        }
        writer.finish()?;
        Ok(std::mem::take(&mut writer.changes))
    }
}

/// Waits until the kernel's coarse clock, which file times come from, is surely past `ctime`
/// (one tick: 10 ms at HZ=100, the coarsest): before Linux 6.13's multigrain timestamps, a
/// change in the same clock tick as the copy would leave the change time as recorded, and the
/// change unseen.
fn wait_for_the_clock_past(ctime: (i64, i64)) {
    const TICK: std::time::Duration = std::time::Duration::from_millis(10);
    let Ok(seconds) = u64::try_from(ctime.0) else {
        return;
    };
    let nanos = u32::try_from(ctime.1).unwrap_or(0);
    let past = std::time::UNIX_EPOCH + std::time::Duration::new(seconds, nanos) + TICK;
    if let Ok(wait) = past.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(wait.min(TICK));
    }
}

/// The entries of `root/dir` with their `lstat`, not those `excluded`.
fn children(
    root: &Path,
    dir: &Path,
    excluded: &HashSet<PathBuf>,
) -> Result<Vec<(PathBuf, Metadata)>, LayerError> {
    let absolute = root.join(dir);
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LayerError::Io { path, source }
    };
    let mut names: Vec<OsString> = fs::read_dir(&absolute)
        .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(io_error(&absolute))?;
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let relative = dir.join(&name);
        if excluded.contains(&relative) {
            continue;
        }
        let path = root.join(&relative);
        let metadata = fs::symlink_metadata(&path).map_err(io_error(&path))?;
        out.push((relative, metadata));
    }
    Ok(out)
}

/// Writes entries into the upper directory.
struct UpperWriter<'a> {
    /// The record's entries (to tell existing entries from new ones).
    recorded: &'a HashMap<PathBuf, Stamp>,
    root: &'a Path,
    upper: &'a Path,
    /// Directories already made in the upper directory.
    made_dirs: HashSet<PathBuf>,
    /// (dev, inode) of copied files with more than one link → their path in the upper.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories whose times are set once everything is written (writing into a directory
    /// changes its mtime).
    dir_times: Vec<(PathBuf, Metadata)>,
    changes: Changes,
}

impl UpperWriter<'_> {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> LayerError + '_ {
        move |source| LayerError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Makes `relative`'s parent directories in the upper directory, as they are in the tree.
    fn parents(&mut self, relative: &Path) -> Result<(), LayerError> {
        let mut ancestors: Vec<&Path> = relative
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        ancestors.reverse();
        for dir in ancestors {
            if self.made_dirs.contains(dir) {
                continue;
            }
            let source = self.root.join(dir);
            let metadata = fs::symlink_metadata(&source).map_err(Self::io(&source))?;
            self.make_dir(dir, &metadata)?;
        }
        Ok(())
    }

    fn make_dir(&mut self, relative: &Path, metadata: &Metadata) -> Result<(), LayerError> {
        let target = self.upper.join(relative);
        fs::create_dir(&target).map_err(Self::io(&target))?;
        self.attributes(relative, &target, metadata)?;
        // The mode comes last (`finish`): a read-only directory must still take its entries.
        self.made_dirs.insert(relative.to_path_buf());
        self.dir_times.push((target, metadata.clone()));
        self.copied(relative);
        Ok(())
    }

    /// Copies the tree's entry `relative` (new or changed) into the upper directory.
    fn copy(&mut self, relative: &Path, metadata: &Metadata) -> Result<(), LayerError> {
        self.parents(relative)?;
        let source = self.root.join(relative);
        let target = self.upper.join(relative);
        let file_type = metadata.file_type();
        if file_type.is_dir() {
            if !self.made_dirs.contains(relative) {
                self.make_dir(relative, metadata)?;
            }
            return Ok(());
        }
        if file_type.is_socket() {
            // A layer holds no sockets (the tar writer skips them).
            return Ok(());
        }
        self.copied(relative);
        if metadata.nlink() > 1 && !file_type.is_dir() {
            let inode = (metadata.dev(), metadata.ino());
            if let Some(first) = self.links.get(&inode) {
                return fs::hard_link(first, &target).map_err(Self::io(&target));
            }
            self.links.insert(inode, target.clone());
        }
        if file_type.is_symlink() {
            let points_to = fs::read_link(&source).map_err(Self::io(&source))?;
            std::os::unix::fs::symlink(&points_to, &target).map_err(Self::io(&target))?;
        } else if file_type.is_file() {
            fs::copy(&source, &target).map_err(Self::io(&source))?;
        } else {
            let kind = if file_type.is_fifo() {
                nix::sys::stat::SFlag::S_IFIFO
            } else if file_type.is_char_device() {
                nix::sys::stat::SFlag::S_IFCHR
            } else {
                nix::sys::stat::SFlag::S_IFBLK
            };
            nix::sys::stat::mknod(
                &target,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(metadata.mode() & 0o7777),
                metadata.rdev(),
            )
            .map_err(|errno| Self::io(&target)(errno.into()))?;
        }
        self.attributes(relative, &target, metadata)?;
        if !file_type.is_symlink() {
            fs::set_permissions(
                &target,
                fs::Permissions::from_mode(metadata.mode() & 0o7777),
            )
            .map_err(Self::io(&target))?;
            set_times(&target, metadata)?;
        }
        Ok(())
    }

    /// Counts `relative` as copied, and as existing when the record has it.
    fn copied(&mut self, relative: &Path) {
        self.changes.copied += 1;
        if self.recorded.contains_key(relative) {
            self.changes.existing.insert(relative.to_path_buf());
        }
    }

    /// The owner (when kiln may set it) and the xattrs of the tree's entry on `target`.
    fn attributes(
        &self,
        relative: &Path,
        target: &Path,
        metadata: &Metadata,
    ) -> Result<(), LayerError> {
        if crate::sys::privilege::current().can_chown() {
            std::os::unix::fs::lchown(target, Some(metadata.uid()), Some(metadata.gid()))
                .map_err(Self::io(target))?;
        }
        if metadata.file_type().is_symlink() {
            return Ok(());
        }
        let source = self.root.join(relative);
        let names = match xattr::list(&source) {
            Ok(names) => names,
            Err(error) if error.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
            Err(error) => return Err(Self::io(&source)(error)),
        };
        for name in names {
            if OVERLAY_XATTRS.iter().any(|prefix| name.starts_with(prefix)) {
                continue;
            }
            let Ok(c_name) = std::ffi::CString::new(name) else {
                continue;
            };
            let value = xattr::get(&source, &c_name).map_err(Self::io(&source))?;
            match xattr::set(target, &c_name, &value) {
                Ok(()) => {}
                // As unpacking does: what the filesystem or kiln's privileges refuse is skipped.
                Err(error) if matches!(error.raw_os_error(), Some(libc::ENOTSUP | libc::EPERM)) => {
                }
                Err(error) => return Err(Self::io(target)(error)),
            }
        }
        Ok(())
    }

    /// A whiteout for `relative`: a 0/0 character device (unprivileged since Linux 5.8).
    fn whiteout(&mut self, relative: &Path) -> Result<(), LayerError> {
        self.parents(relative)?;
        let target = self.upper.join(relative);
        nix::sys::stat::mknod(
            &target,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .map_err(|errno| match errno {
            // overlayfs refuses to make whiteouts on itself (ovl_mknod), whoever asks.
            nix::errno::Errno::EPERM if on_overlayfs(self.upper) => LayerError::Unsupported {
                entry: relative.to_string_lossy().into_owned(),
                reason: format!(
                    "its removal cannot be recorded: the store's directory {} is on overlayfs \
                     (a container's own root filesystem), which refuses whiteouts; put the \
                     store (--root, KILN_ROOT) on a volume, such as a Kubernetes emptyDir",
                    self.upper.display()
                ),
            },
            errno => Self::io(&target)(errno.into()),
        })?;
        self.changes.removed += 1;
        Ok(())
    }

    /// The directories' modes and times, deepest first, now that nothing more is written into
    /// them.
    fn finish(&mut self) -> Result<(), LayerError> {
        self.dir_times
            .sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
        for (path, metadata) in &self.dir_times {
            fs::set_permissions(path, fs::Permissions::from_mode(metadata.mode() & 0o7777))
                .map_err(Self::io(path))?;
            set_times(path, metadata)?;
        }
        Ok(())
    }
}

/// Whether `path` is on an overlayfs mount (statfs(2)'s `OVERLAYFS_SUPER_MAGIC`).
fn on_overlayfs(path: &Path) -> bool {
    const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 == OVERLAYFS_SUPER_MAGIC)
}

/// Sets `path`'s access and modification times to `metadata`'s (not through a symlink).
fn set_times(path: &Path, metadata: &Metadata) -> Result<(), LayerError> {
    let time = |seconds: i64, nanos: i64| {
        let since = std::time::Duration::new(
            u64::try_from(seconds).unwrap_or(0),
            u32::try_from(nanos).unwrap_or(0),
        );
        std::time::UNIX_EPOCH + since
    };
    let times = FileTimes::new()
        .set_accessed(time(metadata.atime(), metadata.atime_nsec()))
        .set_modified(time(metadata.mtime(), metadata.mtime_nsec()));
    let file = File::options()
        .read(true)
        .custom_flags_nofollow()
        .open(path)
        .map_err(UpperWriter::io(path))?;
    file.set_times(times).map_err(UpperWriter::io(path))
}

/// `O_NOFOLLOW` on open options.
trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.custom_flags(libc::O_NOFOLLOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::os::unix::fs::symlink;

    fn populate(root: &Path, items: &[(&str, &str)]) {
        for (name, contents) in items {
            let path = root.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, contents).unwrap();
        }
    }

    fn no_exclusions() -> HashSet<PathBuf> {
        HashSet::new()
    }

    /// Every entry of an upper directory: path → "d", "f:<contents>", "l:<target>", "w".
    fn listing(upper: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut pending = vec![PathBuf::new()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(upper.join(&dir)).unwrap() {
                let entry = entry.unwrap();
                let relative = dir.join(entry.file_name());
                let meta = fs::symlink_metadata(entry.path()).unwrap();
                let what = if meta.is_dir() {
                    pending.push(relative.clone());
                    "d".to_string()
                } else if meta.file_type().is_symlink() {
                    format!("l:{}", fs::read_link(entry.path()).unwrap().display())
                } else if meta.file_type().is_char_device() && meta.rdev() == 0 {
                    "w".to_string()
                } else {
                    format!("f:{}", fs::read_to_string(entry.path()).unwrap())
                };
                out.push((relative.display().to_string(), what));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn flatten_applies_whiteouts_and_keeps_the_top_layers_files() {
        let base = tempfile::tempdir().unwrap();
        let top = tempfile::tempdir().unwrap();
        populate(base.path(), &[("a/x", "base"), ("gone", "g")]);
        populate(top.path(), &[("a/x", "top"), ("b", "new")]);
        nix::sys::stat::mknod(
            &top.path().join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let dest = tempfile::tempdir().unwrap();
        flatten(
            &[top.path().to_path_buf(), base.path().to_path_buf()],
            dest.path(),
            1 << 30,
        )
        .unwrap();
        assert_eq!(fs::read_to_string(dest.path().join("a/x")).unwrap(), "top");
        assert_eq!(fs::read_to_string(dest.path().join("b")).unwrap(), "new");
        assert!(!dest.path().join("gone").exists());
    }

    #[test]
    fn changes_are_new_changed_and_removed_entries_only() {
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path();
        populate(
            root,
            &[
                ("keep/same", "1"),
                ("keep/edit", "2"),
                ("keep/chmod", "3"),
                ("drop/inner", "4"),
                ("lose", "5"),
                ("mnt/secret", "never in the layer"),
            ],
        );
        symlink("same", root.join("keep/link")).unwrap();
        let excluded: HashSet<PathBuf> = [PathBuf::from("mnt")].into();
        let record = TreeRecord::take(root, &excluded).unwrap();
        assert_eq!(record.len(), 8);
        // The command's work.
        fs::write(root.join("keep/edit"), "edited").unwrap();
        fs::set_permissions(root.join("keep/chmod"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::remove_dir_all(root.join("drop")).unwrap();
        fs::remove_file(root.join("lose")).unwrap();
        fs::create_dir_all(root.join("new/deep")).unwrap();
        fs::write(root.join("new/deep/file"), "n").unwrap();
        fs::set_permissions(root.join("new/deep"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::write(root.join("mnt/written"), "to the mount").unwrap();
        fs::remove_file(root.join("keep/link")).unwrap();
        symlink("edit", root.join("keep/link")).unwrap();

        let upper = tempfile::tempdir().unwrap();
        let changes = record.write_changes(root, upper.path(), &excluded).unwrap();
        let got = listing(upper.path());
        let want: Vec<(String, String)> = [
            ("drop", "w"),
            ("keep", "d"),
            ("keep/chmod", "f:3"),
            ("keep/edit", "f:edited"),
            ("keep/link", "l:edit"),
            ("lose", "w"),
            ("new", "d"),
            ("new/deep", "d"),
            ("new/deep/file", "f:n"),
        ]
        .iter()
        .map(|(p, w)| (p.to_string(), w.to_string()))
        .collect();
        assert_eq!(got, want);
        assert_eq!(changes.removed, 2);
        let mode = fs::metadata(upper.path().join("keep/chmod"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
        // A directory's mode and times are the tree's, though entries were written into it.
        let deep_mode = fs::metadata(upper.path().join("new/deep")).unwrap().mode();
        assert_eq!(deep_mode & 0o7777, 0o555);
        let tree_new = fs::metadata(root.join("new/deep")).unwrap();
        let upper_new = fs::metadata(upper.path().join("new/deep")).unwrap();
        assert_eq!(
            (tree_new.mtime(), tree_new.mtime_nsec()),
            (upper_new.mtime(), upper_new.mtime_nsec())
        );
        // Nothing changed: nothing written.
        let again = TreeRecord::take(root, &no_exclusions()).unwrap();
        let empty = tempfile::tempdir().unwrap();
        let none = again
            .write_changes(root, empty.path(), &no_exclusions())
            .unwrap();
        assert_eq!(none, Changes::default());
        let existing: BTreeSet<String> = changes
            .existing
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            existing,
            ["keep", "keep/chmod", "keep/edit", "keep/link"]
                .map(String::from)
                .into()
        );
        assert_eq!(fs::read_dir(empty.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_replaced_directory_hides_what_it_held() {
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path();
        populate(root, &[("d/old", "o"), ("d/kept", "k")]);
        let record = TreeRecord::take(root, &no_exclusions()).unwrap();
        fs::remove_dir_all(root.join("d")).unwrap();
        populate(root, &[("d/kept", "k2")]);
        let upper = tempfile::tempdir().unwrap();
        record
            .write_changes(root, upper.path(), &no_exclusions())
            .unwrap();
        let got = listing(upper.path());
        assert_eq!(
            got,
            [
                ("d".to_string(), "d".to_string()),
                ("d/kept".into(), "f:k2".into()),
                ("d/old".into(), "w".into()),
            ]
        );
    }
}
