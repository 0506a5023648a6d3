//! Moving images in and out of the store, as `docker import`, `export`, `save` and `load` do.
//!
//! - [`rootfs`]: a root filesystem tar becomes a one-layer image ([`import_rootfs`]); an image
//!   becomes the tar of its flattened root filesystem ([`export_rootfs`]).
//! - [`mod@save`]: images become one archive, docker's (`manifest.json`, `<id>/layer.tar`, which
//!   `docker load` reads; with the OCI layout files beside them, as Docker 25 writes) or an OCI
//!   image layout tar.
//! - [`mod@load`]: either kind of archive (plain, gzip or zstd) becomes images in the store.
//! - [`output`]: where an archive or rootfs tar is written (stdout, a file that appears whole
//!   on success, a device or FIFO in place).
//!
//! An archive or a rootfs tar is hostile input. Nothing in it is ever extracted by name: entries
//! are streamed into the store's blobs (each verified against its digest), names from
//! `manifest.json` and `index.json` are only looked up among the archive's own entry names, and
//! every layer is unpacked into its snapshot (confined by [`crate::layer::apply_layer`])
//! before any image is tagged, so a hostile layer fails the whole load and leaves no image. What a
//! failed load stored on the way (blobs, snapshots) is unreferenced, and `kiln prune` removes it.

pub mod load;
pub mod output;
pub mod rootfs;
pub mod save;

mod changes;
mod names;
pub mod view;

pub use changes::apply_changes;
pub use load::{LoadOptions, Loaded, Progress, load};
pub use output::{Output, OutputError};
pub use rootfs::{
    Beside, BesideFile, Exported, ImportOptions, RegularFile, export_rootfs,
    export_rootfs_platforms, export_to_dir, export_to_dir_platforms, import_rootfs, regular_files,
};
pub use save::{SaveFormat, save, save_as, save_in_format, save_platform};

use crate::cache::remote::{SharedCacheError, materialize, materialize_all};
use crate::error::Cause;
use crate::layer::{ApplyOptions, Compression, LayerError, Whiteouts, apply_layer, decompressed};
use crate::oci::Digest;
use crate::store::BlobError;
use crate::store::{LayerInfo, Store, StoreError, Variant};
use crate::sys::FsError;
use std::io::{self, Read as _};
use std::path::PathBuf;

/// The default for the most uncompressed bytes one archive, rootfs tar or layer may hold (1
/// TiB): far above real images, low enough that a decompression bomb stops before it fills a
/// disk that size.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 40;

/// Why an image could not be imported, exported, saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The archive (or rootfs tar) stream could not be read as a tar.
    #[error("cannot read the {what}")]
    Read {
        /// `archive` or `rootfs tar`.
        what: &'static str,
        #[source]
        source: LayerError,
    },
    /// Writing the output stream failed.
    #[error("cannot write the archive")]
    Write {
        #[source]
        source: io::Error,
    },
    #[error(
        "not an image archive: it has neither manifest.json (docker save) nor index.json (OCI \
         layout); pre-1.10 docker archives with only `repositories` are not supported"
    )]
    NotAnArchive,
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    /// A name (an entry's, or one that manifest.json, index.json or a link gives) that could
    /// reach outside the archive.
    #[error("unsafe name {name:?} in the archive: {reason}")]
    UnsafeName { name: String, reason: &'static str },
    #[error("{referrer} names {name:?}, which is not in the archive")]
    MissingEntry { name: String, referrer: String },
    #[error("archive entry {name:?} is not a file ({reason})")]
    NotAFile { name: String, reason: &'static str },
    #[error(
        "{what} {name:?} is {size} bytes, more than the {limit}-byte limit for a JSON document"
    )]
    DocumentTooLarge {
        what: &'static str,
        name: String,
        size: u64,
        limit: u64,
    },
    #[error("{what} {name:?} is not valid")]
    Document {
        what: &'static str,
        name: String,
        #[source]
        reason: Cause,
    },
    #[error(
        "archive entry {entry:?} does not hold the blob its name gives: its content is {actual} \
         (the archive is corrupt or was tampered with)"
    )]
    BlobName { entry: String, actual: Digest },
    #[error(
        "{referrer} gives {digest} as {size_expected} bytes, but the archive's blob has {size} \
         bytes"
    )]
    BlobSize {
        referrer: String,
        digest: Digest,
        size_expected: u64,
        size: u64,
    },
    #[error(
        "layer {position} of image config {config} is {actual}, but the config's rootfs.diff_ids \
         lists {expected} (the archive is corrupt or was tampered with)"
    )]
    DiffId {
        config: String,
        position: usize,
        expected: Digest,
        actual: Digest,
    },
    #[error("image config {config} lists {diff_ids} layer diff IDs, but {layers} layers are given")]
    LayerCount {
        config: String,
        diff_ids: usize,
        layers: usize,
    },
    #[error("image config {config} is for {os}; kiln stores and runs linux images")]
    UnsupportedOs { config: String, os: String },
    #[error("layer {digest} has media type {media_type:?}, which is not a layer kiln can unpack")]
    LayerMediaType { digest: Digest, media_type: String },
    #[error("{digest} in index.json has media type {media_type:?}, which is not an image")]
    ManifestMediaType { digest: Digest, media_type: String },
    #[error("image index {digest} has no image for {platform}")]
    NoPlatform { digest: Digest, platform: String },
    /// A multi-platform image some of whose platforms' images are not in the store.
    #[error(
        "cannot save {name} whole: the store does not have its images for {} (it was pulled          for fewer platforms); save one platform with --platform",
        .absent.join(", ")
    )]
    PartialIndex { name: String, absent: Vec<String> },
    /// A layer that could not be unpacked: unsafe, malformed, or not the content it claims.
    #[error("layer {diff_id} cannot be unpacked")]
    Layer {
        diff_id: Digest,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot write the flattened root filesystem")]
    Flatten {
        #[source]
        source: LayerError,
    },
    #[error("the layer's uncompressed content is {actual}, not {expected}")]
    LayerContent { expected: Digest, actual: Digest },
    #[error(
        "cannot save {name} in docker's format: it has no layers (docker cannot load such an \
         archive either); use --format oci"
    )]
    NoLayers { name: String },
    #[error("invalid --change {change:?}")]
    Change {
        change: String,
        #[source]
        reason: Cause,
    },
    #[error("the rootfs tar is empty (no bytes); give a tar of a root filesystem")]
    EmptyInput,
    /// An absent layer of an image built from a shared cache could not be fetched.
    #[error(transparent)]
    Fetch(Box<SharedCacheError>),
}

impl From<SharedCacheError> for ArchiveError {
    fn from(err: SharedCacheError) -> ArchiveError {
        ArchiveError::Fetch(Box::new(err))
    }
}

/// Fetches each of `layers` that the store knows but does not hold (an image built from a
/// shared cache: [`crate::store::BlobOrigin`]), so its blob can be read. Layers already
/// stored cost one `stat` each.
pub fn fetch_absent_layers(store: &Store, layers: &[LayerInfo]) -> Result<(), ArchiveError> {
    materialize_all(store, layers)?;
    Ok(())
}

/// How layers are unpacked into snapshots: overlay whiteouts, owners kept when kiln may chown
/// (as root, and as root of its rootless namespace with subordinate ids), device nodes only as
/// real root, and `user.overlay.opaque` markers when not real root (overlayfs in a user
/// namespace mounts with `userxattr`).
pub fn snapshot_options(max_bytes: u64) -> ApplyOptions {
    let privilege = crate::sys::privilege::current();
    ApplyOptions {
        whiteouts: Whiteouts::Overlay,
        max_bytes,
        same_owner: privilege.can_chown(),
        device_nodes: privilege.can_make_devices(),
        user_xattr: !privilege.is_real_root(),
    }
}

/// Makes sure the layer has its snapshot, unpacking the stored blob when it has none, and
/// checks on the way that the blob's uncompressed content is the layer's diff ID. This is what
/// proves a layer safe: [`apply_layer`] refuses entries that would reach outside the root, and
/// an unsafe layer leaves no snapshot. Returns the snapshot directory and whether this call
/// unpacked it (`false`: the snapshot was there already and the blob was not read). This is the
/// one way snapshots are made: `kiln run` ([`crate::container`]) uses it too.
pub fn ensure_snapshot(
    store: &Store,
    layer: &LayerInfo,
    max_bytes: u64,
) -> Result<(PathBuf, bool), ArchiveError> {
    let options = snapshot_options(max_bytes);
    let mut unpacked = false;
    let created = store.create_snapshot(&layer.diff_id, |dir| {
        unpacked = true;
        // A layer of an image built from a shared cache may not be here yet; its diff ID is
        // checked below like any other's.
        materialize(store, layer).map_err(Box::new)?;
        let blob = store.blobs().reader(&layer.digest, Some(layer.size))?;
        let tar = decompressed(blob, max_bytes)?;
        let applied = apply_layer(tar, dir, &options)?;
        if applied.diff_id != layer.diff_id {
            return Err(Box::new(ArchiveError::LayerContent {
                expected: layer.diff_id.clone(),
                actual: applied.diff_id,
            }) as Box<dyn std::error::Error + Send + Sync>);
        }
        // Best effort: the variant only saves a later export's compression.
        let _ = remember_variant(store, layer);
        Ok(())
    });
    let dir = created.map_err(|err| match err {
        StoreError::Snapshot { diff_id, source } => ArchiveError::Layer { diff_id, source },
        other => other.into(),
    })?;
    Ok((dir, unpacked))
}

/// [`ensure_snapshot`] for each of `layers` (base first), returning their snapshot directories
/// TOP-MOST FIRST, the order of overlayfs' `lowerdir=`. A snapshot that exists is trusted (its
/// blob was verified when it entered the store), so a warm start reads no layer. Hold a
/// [`crate::store::Lease`] while the layers are not protected by a tag.
pub fn ensure_snapshots(
    store: &Store,
    layers: &[LayerInfo],
    max_bytes: u64,
) -> Result<Vec<PathBuf>, ArchiveError> {
    // The absent blobs of the layers that must be unpacked come first, together, so that each
    // origin is opened once (ensure_snapshot would fetch them one by one).
    let unpack: Vec<LayerInfo> = layers
        .iter()
        .filter(|l| !store.has_snapshot(&l.diff_id) && !store.blobs().contains(&l.digest))
        .cloned()
        .collect();
    materialize_all(store, &unpack)?;
    let mut dirs = Vec::with_capacity(layers.len());
    for layer in layers.iter().rev() {
        dirs.push(ensure_snapshot(store, layer, max_bytes)?.0);
    }
    Ok(dirs)
}

/// [`ensure_snapshot`] for a blob that just came in (import, load): when the snapshot existed
/// (or another process won the race) the new blob was not read, so it is checked to be the
/// layer it claims to be. An uncompressed blob is its own diff ID. Hold a
/// [`crate::store::Lease`] while the image is not yet tagged.
pub fn unpack_layer(
    store: &Store,
    layer: &LayerInfo,
    max_bytes: u64,
) -> Result<PathBuf, ArchiveError> {
    let (dir, unpacked) = ensure_snapshot(store, layer, max_bytes)?;
    if !unpacked {
        verify_diff_id(store, layer, max_bytes)?;
    }
    Ok(dir)
}

/// Reads the whole blob of `layer`, uncompressed, and checks its digest is the diff ID.
fn verify_diff_id(store: &Store, layer: &LayerInfo, max_bytes: u64) -> Result<(), ArchiveError> {
    if layer.digest == layer.diff_id {
        return Ok(());
    }
    let layer_error = |source: LayerError| ArchiveError::Layer {
        diff_id: layer.diff_id.clone(),
        source: Box::new(source),
    };
    let blob = store.blobs().reader(&layer.digest, Some(layer.size))?;
    let tar = decompressed(blob, max_bytes).map_err(layer_error)?;
    let mut hashing = crate::oci::Hashing::new(tar);
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| layer_error(LayerError::from_read(e)))?;
    let (actual, _, _) = hashing.finish();
    if actual != layer.diff_id {
        return Err(ArchiveError::Layer {
            diff_id: layer.diff_id.clone(),
            source: Box::new(ArchiveError::LayerContent {
                expected: layer.diff_id.clone(),
                actual,
            }),
        });
    }
    // Best effort: the variant only saves a later export's compression.
    let _ = remember_variant(store, layer);
    Ok(())
}

/// Remembers the compressed blob of `layer`, just checked to hold its diff ID, as the layer's
/// variant in its compression (a pulled or loaded gzip layer), so an export asking for that
/// compression sends these bytes instead of compressing the layer again. Only a blob whose
/// magic bytes agree with its media type counts.
fn remember_variant(store: &Store, layer: &LayerInfo) -> Result<(), StoreError> {
    let Some(compression) = Compression::from_media_type(layer.media_type.as_ref()) else {
        return Ok(());
    };
    if compression == Compression::None || store.variant(&layer.diff_id, compression).is_some() {
        return Ok(());
    }
    let mut prefix = Vec::with_capacity(4);
    let path = store.blobs().path(&layer.digest);
    store
        .blobs()
        .open_blob(&layer.digest)?
        .take(4)
        .read_to_end(&mut prefix)
        .map_err(|e| crate::sys::FsError::new("read", &path, e))?;
    if Compression::detect(&prefix) != compression {
        return Ok(());
    }
    let variant = Variant {
        digest: layer.digest.clone(),
        size: layer.size,
    };
    store.record_variant(&layer.diff_id, compression, &variant)
}

/// The chain IDs of a stack of layers (image-spec config.md: `ChainID(L0) = DiffID(L0)`,
/// `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }
}
