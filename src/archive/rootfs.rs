//! `kiln import` (a root filesystem tar becomes a one-layer image, as `docker import`) and
//! `kiln export` (an image's layers flattened into one root filesystem tar).

use super::changes::config_from_changes;
use super::{ArchiveError, DEFAULT_MAX_BYTES, unpack_layer};
use crate::layer::{
    ApplyOptions, Compression, LayerError, Whiteouts, apply_layer, decompressed, write_layer,
};
use crate::oci::Platform;
use crate::oci::timestamp::now_rfc3339;
use crate::store::{ImageName, LayerInfo, Store, StoreError, StoredImage, descriptor};
use crate::sys::FsError;
use crate::sys::atomic::remove_tree;
use oci_spec::image::MediaType;
use serde_json::{Map, Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What [`import_rootfs`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Where the tar came from (a file name, `-` for stdin): the history comment says
    /// `Imported from SOURCE` unless `message` is given.
    pub source: String,
    /// `-m`: the history comment (and the config's `comment`).
    pub message: Option<String>,
    /// `-c`: Dockerfile instructions applied to the config (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// HEALTHCHECK, LABEL, ONBUILD, USER, VOLUME, WORKDIR).
    pub changes: Vec<String>,
    /// `REPOSITORY[:TAG]` to tag the image with.
    pub name: Option<String>,
    /// The most uncompressed bytes the tar may hold.
    pub max_bytes: u64,
    /// `--platform`: the platform the config says (default: the host's), for a root
    /// filesystem of another architecture.
    pub platform: Option<Platform>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            platform: None,
            source: "-".to_string(),
            message: None,
            changes: Vec::new(),
            name: None,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Imports the root filesystem tar `reader` (plain, gzip or zstd) as a one-layer image, as
/// `docker import` does: the layer is stored uncompressed (its blob digest is its diff ID),
/// unpacked into its snapshot first (so a tar that is not a safe layer fails before any image
/// appears), and the config is for the host's platform, created now. Returns the image, tagged
/// when `options.name` is given.
pub fn import_rootfs(
    store: &Store,
    reader: impl Read,
    options: &ImportOptions,
) -> Result<StoredImage, ArchiveError> {
    // Everything the user wrote is checked before anything is stored.
    let name = options
        .name
        .as_deref()
        .map(ImageName::parse)
        .transpose()
        .map_err(StoreError::from)?;
    let container_config = config_from_changes(&options.changes)?;
    let _lease = store.lease()?;
    let read_error = |source| ArchiveError::Read {
        what: "rootfs tar",
        source,
    };
    let mut tar = decompressed(reader, options.max_bytes).map_err(read_error)?;
    let mut writer = store.blobs().writer()?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let read = tar
            .read(&mut buffer)
            .map_err(|e| read_error(LayerError::from_read(e)))?;
        if read == 0 {
            break;
        }
        total += read as u64;
        let chunk = buffer.get(..read).unwrap_or_default();
        writer
            .write_all(chunk)
            .map_err(|e| FsError::new("write a blob in", store.staging().dir(), e))?;
    }
    if total == 0 {
        return Err(ArchiveError::EmptyInput);
    }
    let blob = writer.commit(None)?;
    let layer = LayerInfo {
        digest: blob.digest.clone(),
        size: blob.size,
        media_type: MediaType::from(Compression::None.media_type()),
        diff_id: blob.digest.clone(),
    };
    unpack_layer(store, &layer, options.max_bytes)?;
    let config = import_config(&layer, options, container_config);
    let bytes = serde_json::to_vec(&config).map_err(|e| ArchiveError::Document {
        what: "image config",
        name: "of the import".to_string(),
        reason: e.into(),
    })?;
    let layers = [descriptor(
        layer.media_type.clone(),
        &layer.digest,
        layer.size,
    )];
    Ok(store.write_image_named(&bytes, &layers, name.as_ref())?)
}

/// The config docker's import writes (moby `daemon/images/image_import.go`): the host platform
/// (or `--platform`'s), created now, the comment, one history entry.
fn import_config(
    layer: &LayerInfo,
    options: &ImportOptions,
    container_config: Map<String, Value>,
) -> Value {
    let platform = options
        .platform
        .as_ref()
        .map_or_else(Platform::host, Platform::normalized);
    let created = now_rfc3339();
    let comment = options
        .message
        .clone()
        .unwrap_or_else(|| format!("Imported from {}", options.source));
    let mut config = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": created,
        "comment": comment,
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
        "history": [{"created": created, "created_by": "kiln import", "comment": comment}],
    });
    if let (Some(variant), Some(object)) = (platform.variant, config.as_object_mut()) {
        object.insert("variant".into(), json!(variant));
    }
    config
}

/// What [`export_rootfs`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    /// The uncompressed bytes written.
    pub size: u64,
    /// Device nodes left out because kiln does not run as root.
    pub skipped_devices: u64,
}

/// A regular file of an exported root filesystem: its path from the root (`/`-separated, no
/// leading `/`) and the sha256 of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegularFile {
    pub path: String,
    pub digest: crate::oci::Digest,
}

/// A file an export writes beside a root filesystem (BuildKit's attestation files of a local
/// or tar export): a plain name in the root, and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BesideFile {
    pub name: String,
    pub content: Vec<u8>,
}

/// Makes the files written beside the `n`th exported root filesystem from its regular files;
/// `None` when the export writes none.
pub type Beside<'a> = Option<&'a dyn Fn(usize, &[RegularFile]) -> Vec<BesideFile>>;

/// Writes the root filesystem of `image` as one uncompressed tar to `out`: every layer applied
/// in order into a directory in the store's staging area (whiteouts delete, opaque directories
/// hide what is below, nothing followed out of the directory), then the directory written as a
/// tar in a fixed order. Owners are kept when kiln runs as root; otherwise files belong to the
/// caller and device nodes are left out (counted in [`Exported::skipped_devices`]). With
/// `epoch` (`SOURCE_DATE_EPOCH`), every entry has that time, as in BuildKit's tar exporter.
/// `beside`'s files are written in the root (mode 0600).
pub fn export_rootfs(
    store: &Store,
    image: &StoredImage,
    out: impl Write,
    max_bytes: u64,
    epoch: Option<i64>,
    beside: Beside,
) -> Result<Exported, ArchiveError> {
    // Keeps a collection from deleting the image's blobs while they are read.
    let _lease = store.lease()?;
    let dir = StagedDir::create(store.staging().new_path("export"))?;
    let mut exported = flatten_into(store, image, &dir.0, max_bytes, Owners::Image)?;
    if let Some(beside) = beside {
        let files = regular_files(&dir.0)?;
        write_beside(&dir.0, &beside(0, &files))?;
    }
    if let Some(seconds) = epoch {
        crate::sys::times::set_tree_times(&dir.0, seconds)?;
    }
    let written = write_layer(&dir.0, out).map_err(|source| ArchiveError::Flatten { source })?;
    exported.size = written.size;
    Ok(exported)
}

/// Writes the root filesystem of `image` into the directory `dest` (`kiln build -o
/// type=local`), created when missing: the layers applied in order as [`export_rootfs`] does,
/// confined to `dest`. `size` in the result is 0 (no tar is written). `beside`'s files are
/// made from the image's regular files only, not from what `dest` held before.
pub fn export_to_dir(
    store: &Store,
    image: &StoredImage,
    dest: &Path,
    max_bytes: u64,
    beside: Beside,
) -> Result<Exported, ArchiveError> {
    export_to_dir_nth(store, image, dest, max_bytes, beside, 0)
}

fn export_to_dir_nth(
    store: &Store,
    image: &StoredImage,
    dest: &Path,
    max_bytes: u64,
    beside: Beside,
    nth: usize,
) -> Result<Exported, ArchiveError> {
    let _lease = store.lease()?;
    // Into an empty directory the files written are the image's; into one with files of its
    // own, the image's are found in a staged copy.
    let fresh = std::fs::read_dir(dest).map_or(true, |mut entries| entries.next().is_none());
    std::fs::create_dir_all(dest).map_err(|e| FsError::new("create directory", dest, e))?;
    let exported = flatten_into(store, image, dest, max_bytes, Owners::Caller)?;
    if let Some(beside) = beside {
        let files = if fresh {
            regular_files(dest)?
        } else {
            let staged = StagedDir::create(store.staging().new_path("export"))?;
            flatten_into(store, image, &staged.0, max_bytes, Owners::Caller)?;
            regular_files(&staged.0)?
        };
        write_beside(dest, &beside(nth, &files))?;
    }
    Ok(exported)
}

/// The root filesystems of several platforms' images as one tar, each under a directory
/// named by its platform (`linux_amd64/`, `linux_arm64/`), as BuildKit's tar exporter writes a
/// multi-platform result (with `epoch`, every entry at that time). `beside`'s files of the
/// `n`th image go in its platform's directory.
pub fn export_rootfs_platforms(
    store: &Store,
    images: &[(crate::oci::Platform, StoredImage)],
    out: impl Write,
    max_bytes: u64,
    epoch: Option<i64>,
    beside: Beside,
) -> Result<Exported, ArchiveError> {
    let _lease = store.lease()?;
    let dir = StagedDir::create(store.staging().new_path("export"))?;
    let mut exported = Exported::default();
    for (nth, (platform, image)) in images.iter().enumerate() {
        let sub = dir.0.join(platform.path_component());
        std::fs::create_dir(&sub).map_err(|e| FsError::new("create directory", &sub, e))?;
        exported.skipped_devices +=
            flatten_into(store, image, &sub, max_bytes, Owners::Image)?.skipped_devices;
        if let Some(beside) = beside {
            let files = regular_files(&sub)?;
            write_beside(&sub, &beside(nth, &files))?;
        }
    }
    if let Some(seconds) = epoch {
        crate::sys::times::set_tree_times(&dir.0, seconds)?;
    }
    let written = write_layer(&dir.0, out).map_err(|source| ArchiveError::Flatten { source })?;
    exported.size = written.size;
    Ok(exported)
}

/// The root filesystems of several platforms' images into `dest`, each in a directory named by
/// its platform (`dest/linux_amd64`), as BuildKit's local exporter writes a multi-platform
/// result; `beside`'s files of the `n`th image go in its platform's directory.
pub fn export_to_dir_platforms(
    store: &Store,
    images: &[(crate::oci::Platform, StoredImage)],
    dest: &Path,
    max_bytes: u64,
    beside: Beside,
) -> Result<Exported, ArchiveError> {
    let mut exported = Exported::default();
    for (nth, (platform, image)) in images.iter().enumerate() {
        let sub = dest.join(platform.path_component());
        exported.skipped_devices +=
            export_to_dir_nth(store, image, &sub, max_bytes, beside, nth)?.skipped_devices;
    }
    Ok(exported)
}

/// The regular files under `root` (symbolic links not followed, other kinds left out), in
/// BuildKit's walk order (each directory's entries by name), with their content's digests.
pub fn regular_files(root: &Path) -> Result<Vec<RegularFile>, ArchiveError> {
    use sha2::{Digest as _, Sha256};
    let mut files = Vec::new();
    // Depth first, each directory's entries by name (byte order), as Go's walk: a stack of
    // entries still to visit, each directory's pushed in reverse so the first comes next.
    let mut pending: Vec<(PathBuf, bool)> = vec![(root.to_path_buf(), true)];
    while let Some((path, is_dir)) = pending.pop() {
        if is_dir {
            let mut entries: Vec<(PathBuf, std::fs::FileType)> = Vec::new();
            for entry in
                std::fs::read_dir(&path).map_err(|e| FsError::new("read directory", &path, e))?
            {
                let entry = entry.map_err(|e| FsError::new("read directory", &path, e))?;
                let kind = entry
                    .file_type()
                    .map_err(|e| FsError::new("stat", &entry.path(), e))?;
                entries.push((entry.path(), kind));
            }
            entries.sort_by(|a, b| {
                use std::os::unix::ffi::OsStrExt as _;
                a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes())
            });
            for (child, kind) in entries.into_iter().rev() {
                if kind.is_dir() || kind.is_file() {
                    pending.push((child, kind.is_dir()));
                }
            }
            continue;
        }
        let entry = &path;
        let Ok(relative) = entry.strip_prefix(root) else {
            continue;
        };
        let path = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let mut file = std::fs::File::open(entry).map_err(|e| FsError::new("open", entry, e))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| FsError::new("read", entry, e))?;
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let digest = crate::oci::Digest::parse(&format!("sha256:{hex}"))
            .map_err(|e| FsError::new("hash", entry, std::io::Error::other(e)))?;
        files.push(RegularFile { path, digest });
    }
    Ok(files)
}

/// Writes each file into `dir` (mode 0600) in place of whatever entry of its name the image
/// had there: written beside and renamed over it, so a symbolic link of that name is replaced,
/// never followed. A name that is not one plain file name is refused.
fn write_beside(dir: &Path, files: &[BesideFile]) -> Result<(), ArchiveError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    for file in files {
        let plain = !file.name.is_empty()
            && file.name != "."
            && file.name != ".."
            && !file.name.contains(['/', '\0']);
        let target = dir.join(&file.name);
        if !plain {
            return Err(FsError::new(
                "write",
                &target,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{:?} is not a plain file name", file.name),
                ),
            )
            .into());
        }
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            return Err(FsError::new(
                "write",
                &target,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the image has a directory of the attestation file's name",
                ),
            )
            .into());
        }
        let temp = dir.join(format!(".{}.kiln-tmp", file.name));
        let _ = std::fs::remove_file(&temp);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| FsError::new("create", &temp, e))?;
        out.write_all(&file.content)
            .map_err(|e| FsError::new("write", &temp, e))?;
        drop(out);
        std::fs::rename(&temp, &target).map_err(|e| FsError::new("rename", &target, e))?;
    }
    Ok(())
}

/// Whose files a flattened tree holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owners {
    /// The image's owners wherever kiln may give them: a tree written out as a tar.
    Image,
    /// The image's owners as real root (as `docker build -o type=local` run by root), else the
    /// caller's: a directory the user gets, whose files a rootless kiln would otherwise give to
    /// host ids of its subordinate range, which the user could then neither change nor delete.
    Caller,
}

/// Applies every layer of `image`, checking each one's diff ID, into `dir`.
fn flatten_into(
    store: &Store,
    image: &StoredImage,
    dir: &Path,
    max_bytes: u64,
    owners: Owners,
) -> Result<Exported, ArchiveError> {
    super::fetch_absent_layers(store, &image.layers)?;
    let privilege = crate::sys::privilege::current();
    let options = ApplyOptions {
        whiteouts: Whiteouts::Apply,
        max_bytes,
        same_owner: match owners {
            Owners::Image => privilege.can_chown(),
            Owners::Caller => privilege.is_real_root(),
        },
        device_nodes: crate::sys::privilege::current().can_make_devices(),
        user_xattr: false,
    };
    let mut exported = Exported::default();
    for layer in &image.layers {
        let layer_error = |source: LayerError| ArchiveError::Layer {
            diff_id: layer.diff_id.clone(),
            source: Box::new(source),
        };
        let blob = store.blobs().reader(&layer.digest, Some(layer.size))?;
        let tar = decompressed(blob, max_bytes).map_err(layer_error)?;
        let applied = apply_layer(tar, dir, &options).map_err(layer_error)?;
        if applied.diff_id != layer.diff_id {
            return Err(ArchiveError::Layer {
                diff_id: layer.diff_id.clone(),
                source: Box::new(ArchiveError::LayerContent {
                    expected: layer.diff_id.clone(),
                    actual: applied.diff_id,
                }),
            });
        }
        exported.skipped_devices += applied.skipped_devices;
    }
    Ok(exported)
}

/// A staging directory removed (with everything in it, links not followed) when dropped.
struct StagedDir(PathBuf);

impl StagedDir {
    fn create(path: PathBuf) -> Result<StagedDir, ArchiveError> {
        std::fs::create_dir(&path).map_err(|e| FsError::new("create directory", &path, e))?;
        Ok(StagedDir(path))
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        // Best effort: what is left is a dead writer's staging entry, which the store's
        // `remove_stale` deletes later.
        let _ = remove_tree(Path::new(&self.0));
    }
}
