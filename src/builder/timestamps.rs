//! `rewrite-timestamp=true` (BuildKit's image exporter option, v0.32
//! `exporter/containerimage/writer.go` `rewriteRemoteWithEpoch`): with `SOURCE_DATE_EPOCH`, the
//! layers this build made get every time later than the epoch set to it
//! ([`crate::layer::rewrite`]), so two builds of the same sources at different times, on
//! different stores, give the same image.
//!
//! Only the layers the build made are rewritten; the base image's stay as they are (BuildKit
//! leaves the layers whose diff IDs are the base image's). A rewritten layer is a new
//! uncompressed blob, its digest its diff ID. The steps' cache records keep the layers as they
//! were made (a later step reads the files with their real times, as in BuildKit, where only the
//! export is rewritten); which rewritten blob a layer and an epoch gave is remembered under
//! `<store>/cache/rewrite-timestamp`, so a cached rebuild does not rewrite again.

use super::worker::{Snapshot, SnapshotLayer};
use crate::archive::DEFAULT_MAX_BYTES;
use crate::cache::remote::{ImportedCache, SharedCacheError};
use crate::layer::rewrite::clamp_times;
use crate::layer::{LayerError, decompressed};
use crate::store::{BlobError, Store};
use crate::sys::atomic::atomic_write;
use oci_spec::image::MediaType;

/// Why the layers could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("cannot fetch layer {digest} from the shared cache")]
    Fetch {
        digest: String,
        #[source]
        source: Box<SharedCacheError>,
    },
    #[error("cannot read layer {digest}")]
    Read {
        digest: String,
        #[source]
        source: BlobError,
    },
    #[error("cannot rewrite the times of layer {digest}")]
    Rewrite {
        digest: String,
        #[source]
        source: LayerError,
    },
    #[error("cannot store the rewritten layer of {digest}")]
    Store {
        digest: String,
        #[source]
        source: BlobError,
    },
}

/// How many of `snapshot`'s layers (the top ones) the build made: one per op that added a
/// layer since the stack's source image.
pub(crate) fn new_layers(snapshot: &Snapshot) -> usize {
    snapshot
        .added
        .iter()
        .filter(|&&added| added)
        .count()
        .min(snapshot.layers.len())
}

/// `snapshot` with the layers the build made rewritten to `epoch` (see the module
/// documentation). Blocks (file I/O).
pub(crate) fn rewrite_new_layers(
    store: &Store,
    imported: &ImportedCache,
    snapshot: &Snapshot,
    epoch: i64,
) -> Result<Snapshot, RewriteError> {
    let mut rewritten = snapshot.clone();
    let first_new = snapshot.layers.len() - new_layers(snapshot);
    for layer in &mut rewritten.layers[first_new..] {
        *layer = rewrite_layer(store, imported, layer, epoch)?;
    }
    Ok(rewritten)
}

fn rewrite_layer(
    store: &Store,
    imported: &ImportedCache,
    layer: &SnapshotLayer,
    epoch: i64,
) -> Result<SnapshotLayer, RewriteError> {
    let digest = layer.digest.to_string();
    let memo = store
        .root()
        .join("cache")
        .join("rewrite-timestamp")
        .join(format!("{}-{epoch}.json", layer.digest.hex()));
    if let Some(known) = std::fs::read(&memo)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<SnapshotLayer>(&bytes).ok())
        .filter(|known| store.blobs().contains(&known.digest))
    {
        return Ok(known);
    }
    if !store.blobs().contains(&layer.digest) {
        // A layer of a `--cache-from` record: its bytes are needed now.
        imported
            .fetch_absent(store, &[layer.info()])
            .map_err(|source| RewriteError::Fetch {
                digest: digest.clone(),
                source: Box::new(source),
            })?;
    }
    let reader = store
        .blobs()
        .reader(&layer.digest, Some(layer.size))
        .map_err(|source| RewriteError::Read {
            digest: digest.clone(),
            source,
        })?;
    let rewrite_error = |source| RewriteError::Rewrite {
        digest: digest.clone(),
        source,
    };
    let tar = decompressed(reader, DEFAULT_MAX_BYTES).map_err(rewrite_error)?;
    let stored = |source| RewriteError::Store {
        digest: digest.clone(),
        source,
    };
    let mut writer = store.blobs().writer().map_err(stored)?;
    let written = clamp_times(tar, &mut writer, epoch).map_err(rewrite_error)?;
    let blob = writer.commit(Some(&written.diff_id)).map_err(stored)?;
    let new = SnapshotLayer {
        digest: blob.digest,
        size: blob.size,
        media_type: MediaType::ImageLayer.to_string(),
        diff_id: written.diff_id,
    };
    // Best effort: without the note, the next build rewrites the layer again.
    if let Some(dir) = memo.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = atomic_write(&memo, &serde_json::to_vec(&new).unwrap_or_default());
    Ok(new)
}
