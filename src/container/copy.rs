//! `docker cp` between a container and the host (or a tar stream), confined to the container's
//! root.
//!
//! The container's root is a directory descriptor: for a running container
//! `/proc/PID/root` (its merged overlay with its mounts, as the process sees it), frozen while
//! the copy runs ([`Pause`]); for a stopped one an overlay of its upper directory over the
//! image's snapshots, mounted in a mount namespace private to one short-lived thread, so no
//! other process ever sees it and it goes away with the last descriptor. Every path inside the
//! container is resolved from that descriptor with openat2(2) RESOLVE_IN_ROOT
//! ([`crate::sys::dirfd::open_in_root`]): `..` and symlinks, absolute ones too, resolve as if the
//! root were `/`, so `/evil -> /etc` or `-> ../../../etc` reaches the container's `/etc`, never
//! the host's (the CVE-2018-15664 class). Files are written through the layer code's confined
//! unpack ([`apply_layer`]) below a directory opened that way.
//!
//! As docker does it, the source becomes a tar whose entries are named for where they land
//! (docker's "rebase"), which is then unpacked in the destination directory, or written to
//! stdout with `-`.

use super::changes::{ContainerFs, ContainerFsError, Pause};
use crate::layer::{ApplyOptions, LayerError, Whiteouts, apply_layer, write_layer};
use crate::store::{ContainerRecord, Store};
use crate::sys::FsError;
use crate::sys::dirfd::{open_in_root, proc_fd_path};
use nix::fcntl::OFlag;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// The most bytes one copy may unpack (the bound of a layer).
const MAX_COPY_BYTES: u64 = super::MAX_LAYER_BYTES;

/// `docker cp`'s options.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// `-a`: keep the source's owners (else files copied into a container are root's, and
    /// files copied out the caller's).
    pub archive: bool,
    /// `-L`: follow a symbolic link named as the source.
    pub follow_link: bool,
}

/// The root of a container's filesystem, open for a copy.
pub struct ContainerRoot {
    root: OwnedFd,
    /// Freezes a running container while the copy runs.
    _pause: Option<Pause>,
}

impl ContainerRoot {
    /// Opens the root of container `record`: writable when `writable` (copying in).
    pub fn open(
        store: &Store,
        record: &ContainerRecord,
        writable: bool,
    ) -> Result<ContainerRoot, ContainerFsError> {
        let fs = ContainerFs::of(store, record)?;
        if let Some(pid) = record.pid.filter(|_| record.is_running()) {
            // Its own mount namespace, or `/proc/PID/root` would be the host's `/`.
            super::changes::own_namespace(i32::try_from(pid).unwrap_or(-1), "mnt")?;
            let pause = Pause::container(record)?;
            let path = PathBuf::from(format!("/proc/{pid}/root"));
            let root = nix::fcntl::open(
                &path,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| FsError::new("open", &path, e.into()))?;
            return Ok(ContainerRoot {
                root,
                _pause: pause,
            });
        }
        let root = mount_private(store, &fs, writable)?;
        Ok(ContainerRoot { root, _pause: None })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

/// Mounts the stopped container's overlay in a mount namespace of one thread's own and returns
/// a descriptor of its root: the namespace (and with it the mount's only name) goes when the
/// thread ends, the mount itself when the descriptor is closed. Read-only copies mount the upper
/// directory as the top lower one (no work directory is touched).
fn mount_private(
    store: &Store,
    fs: &ContainerFs,
    writable: bool,
) -> Result<OwnedFd, ContainerFsError> {
    for dir in [&fs.upper, &fs.work] {
        fs::create_dir_all(dir).map_err(|e| FsError::new("create directory", dir, e))?;
    }
    let target = store.staging().new_path("cp");
    fs::create_dir(&target).map_err(|e| FsError::new("create directory", &target, e))?;
    let root = store.root().to_path_buf();
    let short = |path: &Path| -> String {
        path.strip_prefix(&root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    };
    let lowers: Vec<String> = fs.lowers.iter().map(|p| short(p)).collect();
    let mut options = if writable {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            short(&fs.upper),
            short(&fs.work)
        )
    } else {
        let mut all = vec![short(&fs.upper)];
        all.extend(lowers);
        format!("lowerdir={}", all.join(":"))
    };
    options.push_str(",index=off");
    if crate::sys::privilege::current().in_user_namespace() {
        options.push_str(",userxattr");
    }
    let mounted = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<OwnedFd, io::Error> {
                use nix::mount::{MsFlags, mount};
                // This thread's root, cwd and mounts are its own.
                crate::sys::process::unshare_private_mounts()?;
                // Relative layer paths keep the options within mount(2)'s one page.
                nix::unistd::chdir(&root)?;
                let mut flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
                if !writable {
                    flags |= MsFlags::MS_RDONLY;
                }
                mount(
                    Some("overlay"),
                    &target,
                    Some("overlay"),
                    flags,
                    Some(options.as_str()),
                )
                .map_err(|errno| {
                    io::Error::new(
                        io::Error::from(errno).kind(),
                        format!("mount the container's overlay ({options}): {errno}"),
                    )
                })?;
                Ok(nix::fcntl::open(
                    &target,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )?)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the mounting thread panicked")))
    });
    // The mount point is no mount point in this namespace.
    let _ = fs::remove_dir(&target);
    mounted.map_err(|e| FsError::new("mount", &target, e).into())
}

/// A path inside the container, as resolution in the root takes it: relative, cleaned of `.`;
/// `..` is left to the kernel, which never climbs above the root.
fn in_root(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => out.push(".."),
            _ => {}
        }
    }
    out
}

/// The last name of `path` (`None` for `/`, `.`, `..`).
fn base_name(path: &str) -> Option<PathBuf> {
    match Path::new(path).components().next_back() {
        Some(Component::Normal(name)) => Some(PathBuf::from(name)),
        _ => None,
    }
}

/// Whether `path` asks for a directory's contents (`/.` at its end).
fn wants_contents(path: &str) -> bool {
    path == "." || path.ends_with("/.")
}

/// What the source is.
struct Source {
    /// The source opened with O_PATH (not followed when it is a symlink and `-L` is not given).
    fd: OwnedFd,
    metadata: fs::Metadata,
}

fn open_source(
    root: BorrowedFd<'_>,
    path: &str,
    options: CopyOptions,
) -> Result<Option<Source>, ContainerFsError> {
    let relative = in_root(path);
    let mut flags = OFlag::O_PATH;
    if !options.follow_link && !path.ends_with('/') && !wants_contents(path) {
        flags |= OFlag::O_NOFOLLOW;
    }
    let fd = match open_in_root(root, &relative, flags) {
        Ok(fd) => fd,
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(err) if err.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(ContainerFsError::Invalid(format!(
                "{path}: not a directory"
            )));
        }
        Err(err) => return Err(FsError::new("open", Path::new(path), err).into()),
    };
    // fstat(2) of the O_PATH descriptor: the symlink itself when it was not followed.
    let metadata = fd
        .try_clone()
        .and_then(|fd| File::from(fd).metadata())
        .map_err(|e| FsError::new("stat", Path::new(path), e))?;
    if path.ends_with('/') && !metadata.is_dir() {
        return Err(ContainerFsError::Invalid(format!(
            "{path}: not a directory"
        )));
    }
    Ok(Some(Source { fd, metadata }))
}

/// Writes `source` as a tar whose entries are named under `name` (a directory's contents
/// directly, without an entry for it, when `name` is `None`), with owners 0:0 unless `keep`.
fn write_source_tar(
    source: &Source,
    name: Option<&Path>,
    keep_owners: bool,
    out: impl Write,
) -> Result<(), ContainerFsError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let owners = |header: &mut tar::Header| {
        if !keep_owners {
            header.set_uid(0);
            header.set_gid(0);
        }
    };
    let io = |e: io::Error| ContainerFsError::Invalid(format!("writing the copy: {e}"));
    let fd_path = proc_fd_path(source.fd.as_fd());
    if !source.metadata.is_dir() {
        let name = name.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&source.metadata, tar::HeaderMode::Complete);
        header.set_mtime(u64::try_from(source.metadata.mtime()).unwrap_or(0));
        owners(&mut header);
        if source.metadata.file_type().is_symlink() {
            let target = nix::fcntl::readlinkat(source.fd.as_fd(), "")
                .map_err(|e| FsError::new("read link", Path::new(&name), e.into()))?;
            header.set_size(0);
            builder
                .append_link(&mut header, &name, target)
                .map_err(io)?;
        } else if source.metadata.is_file() {
            // A regular file opened again for reading through its O_PATH descriptor's magic
            // link: the very file resolved in the root.
            let file = File::open(&fd_path).map_err(|e| FsError::new("open", &name, e))?;
            header.set_size(source.metadata.len());
            builder
                .append_data(&mut header, &name, file.take(source.metadata.len()))
                .map_err(io)?;
        } else {
            header.set_size(0);
            builder
                .append_data(&mut header, &name, io::empty())
                .map_err(io)?;
        }
        builder.finish().map_err(io)?;
        return Ok(());
    }
    // A directory: its own entry, then its contents as the layer writer walks them (symlinks
    // never followed), renamed under `name`.
    if let Some(name) = name {
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&source.metadata, tar::HeaderMode::Complete);
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        owners(&mut header);
        let mut dir_name = name.as_os_str().to_owned();
        dir_name.push("/");
        builder
            .append_data(&mut header, dir_name, io::empty())
            .map_err(io)?;
    } else {
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&source.metadata, tar::HeaderMode::Complete);
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        owners(&mut header);
        builder
            .append_data(&mut header, "./", io::empty())
            .map_err(io)?;
    }
    let prefix = name.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let (reader, writer) = io::pipe().map_err(io)?;
    std::thread::scope(|scope| -> Result<(), ContainerFsError> {
        let walking = scope.spawn(|| write_layer(&fd_path, writer));
        let renamed = rename_entries(reader, &prefix, keep_owners, &mut builder);
        let walked = walking
            .join()
            .unwrap_or_else(|_| Err(layer_thread_error()))
            .map_err(|e| ContainerFsError::Invalid(format!("reading the source: {e}")));
        walked?;
        renamed
    })?;
    builder.finish().map_err(io)?;
    Ok(())
}

fn layer_thread_error() -> LayerError {
    LayerError::Io {
        path: PathBuf::from("<copy>"),
        source: io::Error::other("the thread reading the source panicked"),
    }
}

/// Copies each entry of the tar `reader` into `builder` under `prefix` (hard links' targets
/// too).
fn rename_entries(
    reader: impl Read,
    prefix: &Path,
    keep_owners: bool,
    builder: &mut tar::Builder<impl Write>,
) -> Result<(), ContainerFsError> {
    let io = |e: io::Error| ContainerFsError::Invalid(format!("writing the copy: {e}"));
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = prefix.join(entry.path().map_err(io)?);
        let mut header = entry.header().clone();
        if !keep_owners {
            header.set_uid(0);
            header.set_gid(0);
        }
        let kind = header.entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(io)?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let target = if kind.is_hard_link() {
                prefix.join(target)
            } else {
                target
            };
            builder
                .append_link(&mut header, &path, target)
                .map_err(io)?;
        } else {
            builder
                .append_data(&mut header, &path, &mut entry)
                .map_err(io)?;
        }
    }
    Ok(())
}

/// Where a copy lands: the directory it is unpacked in (already resolved), and the name its
/// source gets there (`None`: a directory's contents go straight in).
struct Landing {
    dir: OwnedFd,
    name: Option<PathBuf>,
}

/// docker's rules for where `source` (named `source_path`) lands at `dest_path`, resolved from
/// `dest_root` (a container's root, or the host's `/` for a copy out).
fn landing(
    dest_root: BorrowedFd<'_>,
    dest_path: &str,
    source_path: &str,
    source_is_dir: bool,
) -> Result<Landing, ContainerFsError> {
    let relative = in_root(dest_path);
    let open_dir = |path: &Path| open_in_root(dest_root, path, OFlag::O_PATH | OFlag::O_DIRECTORY);
    match open_in_root(dest_root, &relative, OFlag::O_PATH) {
        Ok(fd) => {
            let is_dir = File::from(fd.try_clone().map_err(ContainerFsError::from_io)?)
                .metadata()
                .map_err(ContainerFsError::from_io)?
                .is_dir();
            if is_dir {
                let name = if source_is_dir && wants_contents(source_path) {
                    None
                } else {
                    Some(base_name(source_path).unwrap_or_else(|| PathBuf::from(".")))
                };
                return Ok(Landing { dir: fd, name });
            }
            if source_is_dir {
                return Err(ContainerFsError::Invalid("cannot copy directory".into()));
            }
            if dest_path.ends_with('/') {
                return Err(ContainerFsError::Invalid(format!(
                    "{dest_path}: not a directory"
                )));
            }
        }
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
            if dest_path.ends_with('/') && !source_is_dir {
                return Err(ContainerFsError::Invalid("no such directory".into()));
            }
        }
        Err(err) => return Err(FsError::new("open", Path::new(dest_path), err).into()),
    }
    let Some(name) = base_name(dest_path) else {
        return Err(ContainerFsError::Invalid(format!(
            "{dest_path}: cannot copy to this path"
        )));
    };
    let parent = relative.parent().unwrap_or(Path::new(""));
    let dir = open_dir(parent).map_err(|err| {
        if err.raw_os_error() == Some(libc::ENOENT) {
            ContainerFsError::Invalid("no such directory".into())
        } else {
            FsError::new("open", Path::new(dest_path), err).into()
        }
    })?;
    Ok(Landing {
        dir,
        name: Some(name),
    })
}

impl ContainerFsError {
    fn from_io(err: io::Error) -> ContainerFsError {
        ContainerFsError::Invalid(err.to_string())
    }
}

/// Unpacks the tar `reader` in the directory `dir`, confined to it: with the tar's owners when
/// `same_owner` (and kiln may chown), device nodes only into a container (`into_container`;
/// a container's device nodes never reach the host).
fn unpack(
    reader: impl Read,
    dir: BorrowedFd<'_>,
    same_owner: bool,
    into_container: bool,
) -> Result<(), LayerError> {
    let privilege = crate::sys::privilege::current();
    let options = ApplyOptions {
        whiteouts: Whiteouts::Literal,
        max_bytes: MAX_COPY_BYTES,
        same_owner: same_owner && privilege.can_chown(),
        device_nodes: into_container && privilege.can_make_devices(),
        user_xattr: false,
    };
    apply_layer(reader, &proc_fd_path(dir), &options).map(|_| ())
}

/// Streams `source` as a tar named `name` (owners 0:0 unless `keep_owners`) into `dir`.
fn copy_between(
    source: &Source,
    name: Option<&Path>,
    keep_owners: bool,
    dir: BorrowedFd<'_>,
    same_owner: bool,
    into_container: bool,
) -> Result<(), ContainerFsError> {
    let (reader, writer) = io::pipe().map_err(ContainerFsError::from_io)?;
    std::thread::scope(|scope| {
        let writing = scope.spawn(move || write_source_tar(source, name, keep_owners, writer));
        let unpacked = unpack(reader, dir, same_owner, into_container);
        let written = writing.join().unwrap_or_else(|_| {
            Err(ContainerFsError::Invalid(
                "the copying thread panicked".into(),
            ))
        });
        written?;
        unpacked.map_err(|e| ContainerFsError::Invalid(format!("writing the copy: {e}")))
    })
}

/// `kiln cp CONTAINER:SRC DEST` (`DEST` `-`: a tar on `out`). Returns `false` when SRC does not
/// exist in the container (docker's "No such container:path").
pub fn copy_out(
    store: &Store,
    record: &ContainerRecord,
    source_path: &str,
    dest: &str,
    out: impl Write,
    options: CopyOptions,
) -> Result<bool, ContainerFsError> {
    let root = ContainerRoot::open(store, record, false)?;
    let Some(source) = open_source(root.fd(), source_path, options)? else {
        return Ok(false);
    };
    let source_name = if source.metadata.is_dir() && wants_contents(source_path) {
        None
    } else {
        Some(base_name(source_path).unwrap_or_else(|| PathBuf::from(".")))
    };
    if dest == "-" {
        write_source_tar(&source, source_name.as_deref(), true, out)?;
        return Ok(true);
    }
    let host_root = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| FsError::new("open", Path::new("/"), e.into()))?;
    let absolute = std::path::absolute(dest).map_err(ContainerFsError::from_io)?;
    let mut dest_text = absolute.to_string_lossy().into_owned();
    if dest.ends_with('/') && !dest_text.ends_with('/') {
        dest_text.push('/');
    }
    let landing = landing(
        host_root.as_fd(),
        &dest_text,
        source_path,
        source.metadata.is_dir(),
    )?;
    copy_between(
        &source,
        landing.name.as_deref(),
        true,
        landing.dir.as_fd(),
        options.archive,
        false,
    )?;
    Ok(true)
}

/// `kiln cp SRC CONTAINER:DEST`: a host path, or with `SRC` `-` a tar read from `input`
/// unpacked in the directory DEST.
pub fn copy_in(
    store: &Store,
    record: &ContainerRecord,
    source: &str,
    dest_path: &str,
    input: impl Read,
    options: CopyOptions,
) -> Result<(), ContainerFsError> {
    let root = ContainerRoot::open(store, record, true)?;
    if source == "-" {
        let dir = open_in_root(
            root.fd(),
            &in_root(dest_path),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        )
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {
                ContainerFsError::Invalid(format!("{dest_path}: no such directory"))
            }
            _ => FsError::new("open", Path::new(dest_path), err).into(),
        })?;
        return unpack(input, dir.as_fd(), options.archive, true)
            .map_err(|e| ContainerFsError::Invalid(format!("unpacking the tar: {e}")));
    }
    let host_path = std::path::absolute(source).map_err(ContainerFsError::from_io)?;
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if !options.follow_link && !source.ends_with('/') && !wants_contents(source) {
        flags |= OFlag::O_NOFOLLOW;
    }
    let fd = nix::fcntl::open(&host_path, flags, nix::sys::stat::Mode::empty()).map_err(|e| {
        ContainerFsError::Invalid(format!(
            "stat {}: {}",
            host_path.display(),
            io::Error::from(e)
        ))
    })?;
    let metadata = File::from(fd.try_clone().map_err(ContainerFsError::from_io)?)
        .metadata()
        .map_err(ContainerFsError::from_io)?;
    if source.ends_with('/') && !metadata.is_dir() {
        return Err(ContainerFsError::Invalid(format!(
            "{source}: not a directory"
        )));
    }
    let source_entry = Source { fd, metadata };
    let landing = landing(root.fd(), dest_path, source, source_entry.metadata.is_dir())?;
    copy_between(
        &source_entry,
        landing.name.as_deref(),
        options.archive,
        landing.dir.as_fd(),
        true,
        true,
    )
}

/// Whether `arg` names a path in a container (`CONTAINER:PATH`), docker's rule: a path that
/// starts with `/` or `.` is local, else the part before the first `:` is the container.
pub fn split_container_path(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (container, path) = arg.split_once(':')?;
    (!container.is_empty()).then_some((container, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_split_as_docker_does() {
        assert_eq!(split_container_path("web:/etc"), Some(("web", "/etc")));
        assert_eq!(split_container_path("web:"), Some(("web", "")));
        assert_eq!(split_container_path("/tmp/a:b"), None);
        assert_eq!(split_container_path("./a:b"), None);
        assert_eq!(split_container_path("file"), None);
        assert_eq!(split_container_path("-"), None);
    }

    #[test]
    fn paths_in_the_root_and_names() {
        assert_eq!(in_root("/a/./b/"), PathBuf::from("a/b"));
        assert_eq!(in_root("../../etc"), PathBuf::from("../../etc"));
        assert_eq!(base_name("/a/b/"), Some(PathBuf::from("b")));
        assert_eq!(base_name("/"), None);
        assert!(wants_contents("/etc/."));
        assert!(!wants_contents("/etc/"));
    }
}
