//! A sandbox's [`Spec`] run with `--isolation=chroot`: the image's files copied into a plain
//! directory, the spec's mounts made there as far as the mode can, the process started with its
//! root changed (see [`crate::runtime::chroot`]), and afterwards what it changed written as an
//! overlay upper directory, so a RUN step's layer is made by the usual commit.
//!
//! - The root is a copy of the image's snapshots ([`flatten`]), never links into them: a step
//!   cannot change the store.
//! - Mounts: with proot, host binds (the `/etc` files, `RUN --mount` binds, cache directories,
//!   secrets, `kiln run -v`) are bound by proot; an overlay (`RUN --mount=type=bind,from=...`)
//!   is copied in, a tmpfs is an empty directory. With chroot(2) nothing can be mounted, so
//!   files and read-only directories are copied in, and a writable host directory (a cache
//!   mount, `kiln run -v` without `:ro`) is refused, naming it. Either way a mount's
//!   destination is left out of the step's changes, as a mount's contents are.
//! - Owners: with chroot(2) (root) files get their real owners. As an unprivileged user (proot)
//!   every file the command makes is kiln's user's on disk; the layer records such files as
//!   owned by the step's user (root: 0:0, the rootless convention), and changed files that
//!   existed before as root's, see [`ChrootRoot::write_changes`].
//!   proot's `-0` fakes root only: `chown` succeeds without effect, and a non-root `USER` runs
//!   with faked ids (`-i uid:gid`) while files are still made by kiln's user.

use super::ContainerError;
use crate::layer::tree::{TreeRecord, flatten};
use crate::layer::{LayerError, OwnerMap};
use crate::runtime::chroot::{self as runner, RootChanger, not_in_chroot};
use crate::runtime::{Mount, MountSource, RuntimeError, Sandbox, Spec, Stdio};
use crate::sys::atomic::remove_tree;
use crate::sys::dirfd::{open_in_root, proc_fd_path};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::collections::HashSet;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// The kernel file systems' mount points, made in the root when missing (as the sandbox makes
/// them in its upper directory, so a `FROM scratch` step's layer has them too).
const KERNEL_DIRS: [&str; 3] = ["proc", "dev", "sys"];
/// How many symbolic links one path may follow (Linux's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// A prepared chroot: the copied root and what was left out of its record. Dropping it removes
/// the directory.
#[derive(Debug)]
pub struct ChrootRoot {
    /// The directory holding `root` (removed on drop).
    dir: PathBuf,
    root: PathBuf,
    /// Mount destinations (relative to the root), left out of the changes.
    excluded: HashSet<PathBuf>,
    record: TreeRecord,
    changer: RootChanger,
    /// The spec with only the mounts proot binds.
    spec: Spec,
}

impl ChrootRoot {
    /// Copies `spec`'s root filesystem (at most `max_bytes` per layer) into the new directory
    /// `dir`, makes its mounts there, records it, and makes the working directory.
    pub fn prepare(
        dir: PathBuf,
        spec: &Spec,
        max_bytes: u64,
    ) -> Result<ChrootRoot, ContainerError> {
        let changer = RootChanger::detect()?;
        fs::create_dir(&dir).map_err(super::io_error("create directory", &dir))?;
        let root = dir.join("root");
        let mut prepared = ChrootRoot {
            dir,
            root: root.clone(),
            excluded: HashSet::new(),
            record: TreeRecord::default(),
            changer,
            spec: spec.clone(),
        };
        // From here on, an error drops `prepared`, which removes the directory.
        fs::create_dir(&root).map_err(super::io_error("create directory", &root))?;
        flatten(&spec.rootfs.lower_dirs, &root, max_bytes).map_err(layer_error)?;
        prepared.spec.mounts = Vec::new();
        for mount in &spec.mounts {
            if let Some(bound) = prepared.make_mount(mount, max_bytes)? {
                prepared.spec.mounts.push(bound);
            }
        }
        let root_fd = open_root(&root)?;
        // The device nodes are made before the record when /dev exists, so that they change
        // nothing the layer would show; a /dev the image lacks is new in the layer either way.
        let devices = prepared.changer == RootChanger::Chroot;
        let has_dev = open_in_root(root_fd.as_fd(), Path::new("dev"), OFlag::O_PATH).is_ok();
        if devices && has_dev {
            prepared.make_devices(root_fd.as_fd())?;
        }
        prepared.record = TreeRecord::take(&root, &prepared.excluded).map_err(layer_error)?;
        for dir in KERNEL_DIRS {
            make_path(root_fd.as_fd(), &root, dir, false)?;
        }
        make_path(root_fd.as_fd(), &root, &spec.cwd, false)?;
        if devices && !has_dev {
            prepared.make_devices(root_fd.as_fd())?;
        }
        Ok(prepared)
    }

    /// Makes `mount` in the root: its destination is created (a copy of what it mounts, or an
    /// empty mount point for proot to bind over) and left out of the changes. Returns the mount
    /// for proot to bind, if it is one.
    fn make_mount(
        &mut self,
        mount: &Mount,
        max_bytes: u64,
    ) -> Result<Option<Mount>, ContainerError> {
        let root_fd = open_root(&self.root)?;
        let source_is_dir = match &mount.source {
            MountSource::Bind(source) => source.is_dir(),
            MountSource::Overlay { .. } | MountSource::Tmpfs { .. } => true,
        };
        let relative = make_path(
            root_fd.as_fd(),
            &self.root,
            &mount.destination,
            !source_is_dir,
        )?;
        let target = self.root.join(&relative);
        self.excluded.insert(relative);
        match &mount.source {
            MountSource::Bind(_) if self.changer.binds() => Ok(Some(mount.clone())),
            MountSource::Bind(source) if !source_is_dir => {
                fs::copy(source, &target).map_err(super::io_error("copy", source))?;
                Ok(None)
            }
            MountSource::Bind(source) if mount.readonly => {
                flatten(std::slice::from_ref(source), &target, max_bytes).map_err(layer_error)?;
                Ok(None)
            }
            MountSource::Bind(_) => Err(not_in_chroot(
                &format!(
                    "the writable bind mount on {} (RUN --mount=type=cache or ssh, kiln run -v)",
                    mount.destination
                ),
                "chroot(2) cannot mount, and a copy would lose what the command writes there; \
                 install proot (kiln uses it when it is not root) or drop the mount",
            )
            .into()),
            MountSource::Overlay { lowers, .. } => {
                flatten(lowers, &target, max_bytes).map_err(layer_error)?;
                Ok(None)
            }
            MountSource::Tmpfs { .. } => Ok(None),
        }
    }

    /// The usual device nodes in `/dev` (chroot(2) cannot bind the host's `/dev`, proot does):
    /// made with mknod(2) (root in docker has `CAP_MKNOD`) and left out of the changes, as the
    /// sandbox's `/dev` is a mount.
    fn make_devices(&mut self, root_fd: std::os::fd::BorrowedFd<'_>) -> Result<(), ContainerError> {
        let dev = make_path(root_fd, &self.root, "/dev", false)?;
        let dev_fd = open_in_root(root_fd, &dev, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(
            super::io_error("open in the chroot directory", Path::new("/dev")),
        )?;
        for &(name, major, minor) in crate::runtime::DEFAULT_DEVICES {
            let path = Path::new("/dev").join(name);
            let fail = |errno: Errno| {
                super::io_error("create the device", &path)(std::io::Error::from(errno))
            };
            match nix::unistd::unlinkat(&dev_fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(errno) => return Err(fail(errno)),
            }
            nix::sys::stat::mknodat(
                &dev_fd,
                name,
                nix::sys::stat::SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
            )
            .map_err(fail)?;
            self.excluded.insert(dev.join(name));
        }
        Ok(())
    }

    /// Starts the process (see [`crate::runtime::chroot::spawn`]). Waiting for the returned
    /// sandbox also kills what the process left running in its process group.
    pub fn spawn(&self, stdio: Stdio) -> Result<Sandbox, RuntimeError> {
        runner::spawn(&self.root, &self.spec, &self.changer, stdio)
    }

    /// Writes what the process changed into the empty overlay upper directory `upper`, and
    /// says how the layer must write owners: as an unprivileged user, the files the command
    /// made are kiln's user's on disk and stand for the step's user, and the entries that
    /// existed before (copied up) stand for root's (an unprivileged store's convention); as root
    /// they are as they are.
    pub fn write_changes(&self, upper: &Path) -> Result<Option<OwnerMap>, ContainerError> {
        let changes = self
            .record
            .write_changes(&self.root, upper, &self.excluded)
            .map_err(layer_error)?;
        let euid = nix::unistd::geteuid().as_raw();
        Ok((euid != 0).then(|| OwnerMap {
            from_uid: euid,
            from_gid: nix::unistd::getegid().as_raw(),
            to_uid: self.spec.user.uid,
            to_gid: self.spec.user.gid,
            root_owned: std::sync::Arc::new(changes.existing),
        }))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for ChrootRoot {
    fn drop(&mut self) {
        // A leftover is stale staging, removed by the next `Store::open`.
        let _ = remove_tree(&self.dir);
    }
}

fn layer_error(error: LayerError) -> ContainerError {
    ContainerError::Chroot(Box::new(error))
}

fn open_root(root: &Path) -> Result<OwnedFd, ContainerError> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| super::io_error("open", root)(errno.into()))
}

/// Makes `path` (absolute, from the Dockerfile or command line: not trusted) inside the root
/// like `mkdir -p`, its last component an empty file when `file`, resolving symlinks inside the
/// root as the sandbox does; returns where it really is, relative to the root.
fn make_path(
    root_fd: std::os::fd::BorrowedFd<'_>,
    root: &Path,
    path: &str,
    file: bool,
) -> Result<PathBuf, ContainerError> {
    make_path_following(root_fd, root, path, file, 0)
}

/// [`make_path`] after `links` dangling symlinks were followed.
fn make_path_following(
    root_fd: std::os::fd::BorrowedFd<'_>,
    root: &Path,
    path: &str,
    file: bool,
    links: usize,
) -> Result<PathBuf, ContainerError> {
    let mut components: Vec<&std::ffi::OsStr> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => components.push(name),
            Component::ParentDir => {
                components.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let fail = |errno: Errno| {
        super::io_error("make in the chroot directory", Path::new(path))(errno.into())
    };
    let mut so_far = PathBuf::new();
    for (index, name) in components.iter().enumerate() {
        let parent = so_far.clone();
        so_far.push(name);
        match open_in_root(root_fd, &so_far, OFlag::O_PATH) {
            Ok(_) => continue,
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(error) => {
                return Err(super::io_error("resolve in the chroot directory", &so_far)(
                    error,
                ));
            }
        }
        let parent_fd = open_in_root(root_fd, &parent, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(super::io_error("resolve in the chroot directory", &parent))?;
        if let Ok(target) = nix::fcntl::readlinkat(parent_fd.as_fd(), *name) {
            // A dangling symlink: made at its target, inside the root, as runc does.
            if links >= MAX_SYMLINKS {
                return Err(fail(Errno::ELOOP));
            }
            let mut next = PathBuf::from("/").join(&parent);
            next.push(target);
            next.extend(components.iter().skip(index + 1));
            return make_path_following(root_fd, root, &next.to_string_lossy(), file, links + 1);
        }
        let last = index + 1 == components.len();
        if last && file {
            let created = nix::fcntl::openat(
                parent_fd.as_fd(),
                *name,
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            );
            created.map_err(fail)?;
        } else {
            match nix::sys::stat::mkdirat(parent_fd.as_fd(), *name, Mode::from_bits_truncate(0o755))
            {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(errno) => return Err(fail(errno)),
            }
        }
    }
    let fd = open_in_root(root_fd, &so_far, OFlag::O_PATH)
        .map_err(super::io_error("resolve in the chroot directory", &so_far))?;
    let real = fs::read_link(proc_fd_path(fd.as_fd()))
        .map_err(super::io_error("resolve in the chroot directory", &so_far))?;
    let root_real = fs::canonicalize(root).map_err(super::io_error("resolve", root))?;
    real.strip_prefix(&root_real)
        .map(Path::to_path_buf)
        .map_err(|_| {
            super::io_error("resolve in the chroot directory", Path::new(path))(
                std::io::Error::other("it resolves outside the root"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A mount destination from a Dockerfile is made inside the root, whatever symlinks the
    /// image has on the way (absolute ones, `..` above the top): nothing is made outside.
    #[test]
    fn mount_points_stay_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        let root = root_dir.path();
        symlink(outside.path(), root.join("etc")).unwrap();
        symlink("../../../..", root.join("up")).unwrap();
        let fd = open_root(root).unwrap();
        let made = make_path(fd.as_fd(), root, "/etc/hosts", true).unwrap();
        let inside = outside.path().strip_prefix("/").unwrap().join("hosts");
        assert_eq!(made, inside);
        assert!(root.join(&inside).is_file());
        let made = make_path(fd.as_fd(), root, "/up/../up/x/y", false).unwrap();
        assert_eq!(made, PathBuf::from("x/y"));
        assert!(root.join("x/y").is_dir());
        let made = make_path(fd.as_fd(), root, "/../../tmp/z", false).unwrap();
        assert_eq!(made, PathBuf::from("tmp/z"));
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        symlink("loop", root.join("loop")).unwrap();
        let error = make_path(fd.as_fd(), root, "/loop/x", false).unwrap_err();
        assert!(
            crate::error::chain(&error).contains("Too many"),
            "{}",
            crate::error::chain(&error)
        );
    }
}
