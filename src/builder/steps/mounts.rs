//! A RUN step's `--mount`s made real: what each [`RunMount`] of the op becomes in the sandbox,
//! following BuildKit's executor (`solver/llbsolver/mounts/mount.go`, `executor/oci`).
//!
//! - `bind`: the source (a path of the build context, or of a stage or image) is copied into a
//!   directory of the store's staging area with COPY's rules (the context's `.dockerignore`
//!   applies, symlinks resolve inside the source filesystem, nothing outside it is read), and
//!   that copy is bound at the target, read-only unless `rw`. Writes of an `rw` mount land in
//!   the copy, which is removed after the step: they are discarded, as in BuildKit.
//! - `cache`: a directory the store keeps between builds ([`Store::cache_mount`]), held with the
//!   mount's sharing for the whole step; a new one is empty (with `mode`, `uid`, `gid`) or
//!   seeded from `source` of `from`, unless a `--cache-from` cache holds a copy of it
//!   ([`SharedCacheMounts`]): then it starts as that copy, which also replaces a local one that
//!   is older (kiln's own; BuildKit never exports cache mounts).
//! - `tmpfs`: a fresh tmpfs.
//! - a `#!` heredoc script: its file, mode 0755, alone in a read-only directory.
//!
//! Everything made here lives until the [`PreparedMounts`] drops, after the sandbox is gone.

use super::copy::{CopyError, CopyRequest, CopySource, copy};
use crate::builder::compile::{MountInput, RunMount};
use crate::error::Cause;
use crate::frontend::context::BuildContext;
use crate::frontend::instruction::Sharing;
use crate::runtime::BindMount;
use crate::solver::Cancel;
use crate::store::{CacheMountError, CacheMountLease, CacheSharing, Store};
use crate::sys::atomic::{FsError, IoContext as _, remove_tree};
use std::fs;
use std::os::unix::fs::{PermissionsExt as _, chown};
use std::path::{Path, PathBuf};

/// What a RUN step's mounts read: the build context and the filesystems of the op's inputs.
pub struct MountSources<'a> {
    pub context: Option<&'a BuildContext>,
    /// The snapshot directories (top first) of each input of the op, by input index (0 is the
    /// filesystem the command runs on).
    pub inputs: &'a [Vec<PathBuf>],
    /// The copies of cache mounts that the build's `--cache-from` caches hold.
    pub shared: Option<&'a dyn SharedCacheMounts>,
}

/// Copies of cache mounts kept elsewhere (a shared cache) that a step's cache mounts start
/// from. Its failures are its own to report: a copy that cannot be had leaves the mount as it
/// would be without one.
pub trait SharedCacheMounts: Sync {
    /// Whether the copy of `id` is newer than the local directory `local` (then it replaces
    /// it, when no step holds it).
    fn is_newer(&self, id: &str, local: &Path) -> bool;
    /// Makes the directory `dir` (absent) the copy of `id`; `false`, with nothing at `dir`,
    /// when there is no copy or it could not be restored.
    fn restore(&self, id: &str, dir: &Path) -> bool;
    /// Reports that replacing an older local copy of `id` failed.
    fn refresh_failed(&self, id: &str, error: &CacheMountError);
}

/// The sandbox mounts of one step and what keeps them valid.
#[derive(Debug, Default)]
pub struct PreparedMounts {
    /// In the order of the op's mounts.
    pub mounts: Vec<BindMount>,
    /// Extra environment entries (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Copies and script directories, removed on drop.
    scratch: Vec<ScratchDir>,
    /// Cache mounts held for the step.
    leases: Vec<CacheMountLease>,
}

/// Why a mount could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The source of a bind mount or a cache seed could not be read.
    #[error("mount {target}: cannot read source {source_path:?}")]
    Source {
        target: String,
        source_path: String,
        /// Boxed: a copy error is large, and every step result carries this type.
        #[source]
        source: Box<CopyError>,
    },
    #[error("mount {target}")]
    Cache {
        target: String,
        #[source]
        source: CacheMountError,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The op names an input it does not have (an internal error).
    #[error("mount {target}: the step has no input {index}")]
    MissingInput { target: String, index: usize },
    /// A bind mount reads the build context, but the build has none.
    #[error("mount {target}: the build has no context to mount (build with a context directory)")]
    NoContext { target: String },
    #[error("mount {target}: {what} mounts need kiln's tmpfs support")]
    Unavailable { target: String, what: &'static str },
    #[error("canceled")]
    Canceled,
}

/// Makes the mounts of one RUN step.
pub fn prepare(
    store: &Store,
    mounts: &[RunMount],
    sources: &MountSources<'_>,
    cancel: &Cancel,
) -> Result<PreparedMounts, MountError> {
    let mut prepared = PreparedMounts::default();
    for mount in mounts {
        match mount {
            RunMount::Bind {
                target,
                source,
                from,
                readwrite,
                ..
            } => {
                let scratch = ScratchDir::new(store, "mount")?;
                let copied = materialize(&scratch.0, target, source, *from, sources, cancel)?;
                prepared.mounts.push(BindMount {
                    source: copied,
                    destination: target.clone(),
                    readonly: !readwrite,
                });
                prepared.scratch.push(scratch);
            }
            RunMount::Cache {
                target,
                id,
                sharing,
                readonly,
                from,
                source,
                mode,
                uid,
                gid,
            } => {
                let sharing = match sharing {
                    Sharing::Shared => CacheSharing::Shared,
                    Sharing::Locked => CacheSharing::Locked,
                    Sharing::Private => CacheSharing::Private,
                };
                // The root of a cache without a seed has the mount's owner and mode, restored
                // from a copy or not (a copy's tar does not hold its root).
                let own = |path: &Path| -> Result<(), Cause> {
                    if from.is_none() {
                        chown(path, Some(*uid), Some(*gid))?;
                        fs::set_permissions(path, fs::Permissions::from_mode(*mode))?;
                    }
                    Ok(())
                };
                if let Some(shared) = sources.shared {
                    let mut stale = |local: &Path| shared.is_newer(id, local);
                    let mut replace = |path: &Path| -> Result<(), Cause> {
                        if !shared.restore(id, path) {
                            return Err("the shared cache's copy could not be restored".into());
                        }
                        own(path)
                    };
                    match store.refresh_cache_mount(id, &mut stale, &mut replace) {
                        // `restore` reported why; the local copy stays.
                        Ok(_) | Err(CacheMountError::Init { .. }) => {}
                        Err(err) => shared.refresh_failed(id, &err),
                    }
                }
                let mut init = |path: &Path| -> Result<(), Cause> {
                    let restored = sources.shared.is_some_and(|s| s.restore(id, path));
                    if !restored {
                        fs::create_dir(path)?;
                        if let Some(from) = from {
                            seed(path, target, source, *from, sources, cancel)?;
                        }
                    }
                    own(path)
                };
                let lease = store
                    .cache_mount(id, sharing, &|| cancel.is_cancelled(), &mut init)
                    .map_err(|source| match source {
                        CacheMountError::Canceled { .. } => MountError::Canceled,
                        source => MountError::Cache {
                            target: target.clone(),
                            source,
                        },
                    })?;
                prepared.mounts.push(BindMount {
                    source: lease.path().to_path_buf(),
                    destination: target.clone(),
                    readonly: *readonly,
                });
                prepared.leases.push(lease);
            }
            RunMount::Tmpfs { target, .. } => {
                return Err(MountError::Unavailable {
                    target: target.clone(),
                    what: "tmpfs",
                });
            }
            RunMount::Secret { target, .. } => {
                return Err(MountError::Unavailable {
                    target: target.clone().unwrap_or_default(),
                    what: "secret",
                });
            }
            RunMount::Ssh { target, .. } => {
                return Err(MountError::Unavailable {
                    target: target.clone(),
                    what: "ssh",
                });
            }
            RunMount::Script {
                target,
                name,
                content,
            } => {
                let scratch = ScratchDir::new(store, "script")?;
                let file = scratch.0.join(name);
                fs::write(&file, content).fs("write", &file)?;
                fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).fs("chmod", &file)?;
                prepared.mounts.push(BindMount {
                    source: scratch.0.clone(),
                    destination: target.clone(),
                    readonly: true,
                });
                prepared.scratch.push(scratch);
            }
        }
    }
    Ok(prepared)
}

/// Copies `source` of `from` into `dir` as `dir/m` (COPY's rules: a directory's content, or
/// the file itself) and returns that path.
fn materialize(
    dir: &Path,
    target: &str,
    source: &str,
    from: MountInput,
    sources: &MountSources<'_>,
    cancel: &Cancel,
) -> Result<PathBuf, MountError> {
    copy_source(dir, "/m", target, source, from, sources, cancel)?;
    Ok(dir.join("m"))
}

/// Copies the content of directory `source` of `from` into the new cache directory `dir`.
fn seed(
    dir: &Path,
    target: &str,
    source: &str,
    from: MountInput,
    sources: &MountSources<'_>,
    cancel: &Cancel,
) -> Result<(), MountError> {
    copy_source(dir, "/", target, source, from, sources, cancel)
}

fn copy_source(
    dir: &Path,
    dest: &str,
    target: &str,
    source: &str,
    from: MountInput,
    sources: &MountSources<'_>,
    cancel: &Cancel,
) -> Result<(), MountError> {
    let request = CopyRequest {
        sources: vec![source.to_string()],
        dest: dest.to_string(),
        workdir: "/".to_string(),
        ..CopyRequest::default()
    };
    let wrap = |source: CopyError| match source {
        CopyError::Cancelled => MountError::Canceled,
        source => MountError::Source {
            target: target.to_string(),
            source_path: request.sources[0].clone(),
            source: Box::new(source),
        },
    };
    match from {
        MountInput::Context => {
            let context = sources.context.ok_or_else(|| MountError::NoContext {
                target: target.to_string(),
            })?;
            copy(&request, &CopySource::Context { context }, &[], dir, cancel).map_err(wrap)?;
        }
        MountInput::Input(index) => {
            let layers = sources
                .inputs
                .get(index)
                .ok_or_else(|| MountError::MissingInput {
                    target: target.to_string(),
                    index,
                })?;
            copy(&request, &CopySource::Layers { layers }, &[], dir, cancel).map_err(wrap)?;
        }
    }
    Ok(())
}

/// A directory in the store's staging area, removed on drop (a leftover is stale staging,
/// removed by the next `Store::open`).
#[derive(Debug)]
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(store: &Store, kind: &str) -> Result<ScratchDir, FsError> {
        let path = store.staging().new_path(kind);
        fs::create_dir(&path).fs("create directory", &path)?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.0);
    }
}
