//! The solver's worker for build ops: cache keys from op digests, context checksums, what
//! `ADD <url>` downloads give (see [`crate::fetch`]) and the commits `ADD <git ref>` resolves
//! to (see [`crate::git`]), cache lookups in the store's records, and running
//! RUN/COPY/ADD/WORKDIR through the executor.

use super::compile::{
    BuildOp, CopyFrom, CopyOp, MkdirOp, MountInput, RunMount, RunOp, Step, UrlSource,
};
use super::progress::{BuildEvent, LogStream, Progress};
use crate::archive::{ArchiveError, ensure_snapshots};
use crate::builder::git_context::{GitSecretError, git_auth};
use crate::builder::steps::commit::{LayerCommitError, StagedUpper, commit};
use crate::builder::steps::copy::{
    CopyError, CopyRequest, CopySource, PreviousCopy, copy, copy_reusing, mkdir,
};
use crate::builder::steps::mounts::{self, MountError, MountSources, Session};
use crate::builder::steps::run::{RunStep, RunStepError, run_step};
use crate::cache::remote::{ImportedCache, SharedCacheError};
use crate::cache::{
    CacheError, CacheRecords, ContentSum, FileSum, KeyParts, StatCache, checksum_paths,
};
use crate::container::MAX_LAYER_BYTES;
use crate::container::user;
use crate::error::Chain;
use crate::fetch::{FetchError, Fetched, Fetcher};
use crate::frontend::context::BuildContext;
use crate::frontend::stage::ImageKey;
use crate::git::{GitCache, GitError, GitOptions, GitSource, Resolved};
use crate::oci::timestamp::now_seconds;
use crate::oci::{Digest, Platform};
use crate::runtime::Network;
use crate::runtime::binfmt::{Emulation, Runnable};
use crate::solver::{Cancel, NodeId, Worker};
use crate::store::{LayerInfo, Store, StoreError, StoredImage};
use oci_spec::image::MediaType;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// What an op leaves: the layer stack of its filesystem, base first, and for every
/// filesystem op since the stack's source whether it added a layer (an op whose diff is empty
/// adds none; its history entry is then an empty layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub layers: Vec<SnapshotLayer>,
    pub added: Vec<bool>,
    /// When each op of `added` made its snapshot (Unix seconds), in the same order: the image
    /// history's times, so a rebuild from the cache gives the same image. Records of kiln
    /// versions before it have none.
    #[serde(default)]
    pub created: Vec<i64>,
    /// When the stack's source image was made (`None` for scratch).
    #[serde(default)]
    pub base_created: Option<i64>,
}

/// One layer of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLayer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

impl SnapshotLayer {
    fn from_info(layer: &LayerInfo) -> SnapshotLayer {
        SnapshotLayer {
            digest: layer.digest.clone(),
            size: layer.size,
            media_type: layer.media_type.to_string(),
            diff_id: layer.diff_id.clone(),
        }
    }

    /// The store's view of the layer.
    pub fn info(&self) -> LayerInfo {
        LayerInfo {
            digest: self.digest.clone(),
            size: self.size,
            media_type: MediaType::from(self.media_type.as_str()),
            diff_id: self.diff_id.clone(),
        }
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Run(#[from] RunStepError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Mount(#[from] Box<MountError>),
    #[error(transparent)]
    Layer(#[from] LayerCommitError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("WORKDIR {path}: {reason}")]
    Workdir { path: String, reason: String },
    #[error("the step has no input filesystem (an internal error in kiln's op graph)")]
    MissingInput,
    #[error("COPY reads the build context, but the build has none")]
    NoContext,
    #[error("the step was canceled")]
    Canceled,
    #[error(transparent)]
    Network(crate::runtime::network::NetworkError),
    #[error(transparent)]
    Url(#[from] Box<FetchError>),
    #[error("could not place the download of {url}")]
    UrlFile {
        url: String,
        #[source]
        source: crate::sys::FsError,
    },
    /// A layer of a record from a `--cache-from` cache could not be fetched.
    #[error(transparent)]
    Fetch(Box<SharedCacheError>),
    /// A RUN for a platform this machine runs neither natively nor with an emulator.
    #[error("{0}")]
    Platform(String),
    #[error(transparent)]
    Git(#[from] Box<GitError>),
    #[error(transparent)]
    GitSecret(#[from] GitSecretError),
}

impl From<SharedCacheError> for StepError {
    fn from(err: SharedCacheError) -> StepError {
        StepError::Fetch(Box::new(err))
    }
}

/// Runs build ops for the solver.
pub struct BuildWorker {
    pub store: Store,
    pub records: CacheRecords,
    pub stat_cache: StatCache,
    pub context: Option<Arc<BuildContext>>,
    /// The external images, by name and the platform each is for.
    pub images: BTreeMap<ImageKey, StoredImage>,
    pub steps: Vec<Step>,
    pub progress: Arc<dyn Progress>,
    pub explain: bool,
    /// What went into each node's key, kept to remember it after the step ran.
    pub key_parts: Mutex<BTreeMap<NodeId, KeyParts>>,
    /// `--explain-cache`: why each missed step missed.
    pub explanations: Mutex<BTreeMap<NodeId, Vec<String>>>,
    /// The records of the `--cache-from` caches, looked up after the store's own.
    pub imported: Arc<ImportedCache>,
    /// Secrets and SSH agents for RUN mounts.
    pub session: Arc<dyn Session>,
    /// `ADD <url>` downloads, made when the first one is needed.
    pub fetcher: Mutex<Option<Arc<Fetcher>>>,
    /// What each `ADD <url>` step's URLs gave when its key was computed (URLs without a
    /// `--checksum`), for the step to copy without asking again.
    pub fetched: Mutex<BTreeMap<NodeId, Vec<Option<Fetched>>>>,
    /// Which platforms this machine runs (natively or emulated), read from binfmt_misc when
    /// the first RUN needs to know.
    pub emulation: std::sync::OnceLock<Emulation>,
    /// What each `ADD <git ref>` step's refs resolved to when its key was computed.
    pub git_resolved: Mutex<BTreeMap<NodeId, Vec<Resolved>>>,
    /// Refs already resolved in this build (remote, ref, checksum), so that two steps of one
    /// build read the same commit and ask the remote once (BuildKit's resolver cache).
    pub git_refs: Mutex<BTreeMap<GitRefKey, Resolved>>,
    /// How RUN steps are isolated (`--isolation`).
    pub isolation: crate::runtime::Isolation,
    /// Private networks for RUN steps on the default network: one per step running at a time,
    /// reused by the next step, stopped when the build's worker is dropped.
    pub networks: crate::runtime::NetworkPool,
}

/// A ref as one build resolves it once: the remote, the ref, the checksum, fetch-by-commit.
pub type GitRefKey = (String, String, Option<String>, bool);

impl BuildWorker {
    /// The op's digest, and for a RUN that mounts secrets or agents, which of them the build
    /// was given: a step that ran without an optional secret is not reused by a build that
    /// has it (nor the reverse). Never the secret's value.
    fn with_session(&self, op: &BuildOp, op_digest: &Digest) -> Digest {
        let BuildOp::Run(run) = op else {
            return op_digest.clone();
        };
        let given: Vec<String> = run
            .mounts
            .iter()
            .filter_map(|m| match m {
                RunMount::Secret { id, .. } => {
                    Some(format!("secret {id:?} {}", self.session.has_secret(id)))
                }
                RunMount::Ssh { id, .. } => Some(format!(
                    "ssh {id:?} {}",
                    self.session.ssh_socket(id).is_some()
                )),
                _ => None,
            })
            .collect();
        if given.is_empty() {
            return op_digest.clone();
        }
        Digest::of(format!("{op_digest}\n{}", given.join("\n")).as_bytes())
    }

    fn git_cache(&self) -> GitCache {
        GitCache::new(&self.store, GitOptions::from_env())
    }

    /// The content part of an `ADD <git ref>` step's key: the commit each ref names now
    /// (`git ls-remote`; see [`Resolved::key_text`]).
    fn git_content(&self, node: NodeId, sources: &[GitSource]) -> Result<ContentSum, StepError> {
        let cache = self.git_cache();
        let mut text = String::from("kiln-add-git-v1\n");
        let mut files = Vec::new();
        let mut resolved_all = Vec::new();
        for source in sources {
            let memo = (
                source.remote.clone(),
                source.reference.clone(),
                source.checksum.clone(),
                source.fetch_by_commit,
            );
            let known = self
                .git_refs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&memo)
                .cloned();
            let resolved = match known {
                Some(resolved) => resolved,
                None => {
                    let auth = git_auth(self.session.as_ref(), source)?;
                    let resolved = cache.resolve(source, &auth, &|| false).map_err(Box::new)?;
                    self.git_refs
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(memo, resolved.clone());
                    resolved
                }
            };
            let key = resolved.key_text(source);
            text.push_str(&key);
            files.push(FileSum {
                path: format!(
                    "{}#{}:{}",
                    source.remote_shown, source.reference, source.subdir
                ),
                digest: Digest::of(key.as_bytes()),
                mode: libc::S_IFDIR | 0o755,
            });
            resolved_all.push(resolved);
        }
        self.git_resolved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, resolved_all);
        Ok(ContentSum {
            digest: Digest::of(text.as_bytes()),
            files,
        })
    }

    fn fetcher(&self) -> Result<Arc<Fetcher>, StepError> {
        let mut slot = self.fetcher.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fetcher) = slot.as_ref() {
            return Ok(fetcher.clone());
        }
        let fetcher = Arc::new(Fetcher::in_store(&self.store).map_err(Box::new)?);
        *slot = Some(fetcher.clone());
        Ok(fetcher)
    }

    /// The `Authorization` header for `url` from the build's `HTTP_AUTH_*` secrets.
    fn authorization(
        &self,
        url: &reqwest::Url,
    ) -> Result<Option<crate::fetch::Authorization>, StepError> {
        Ok(crate::fetch::authorization(url, |id| self.session.secret(id)).map_err(Box::new)?)
    }

    /// The content part of an `ADD <url>` step's key, as BuildKit's http source keys it: each
    /// file's name and content digest and its `Last-Modified`. A URL with a `--checksum` is
    /// keyed by it without a request (BuildKit's `resolveMetadataStatic`); the others are
    /// asked now (conditionally, see [`Fetcher::fetch`]).
    fn url_content(&self, node: NodeId, urls: &[UrlSource]) -> Result<ContentSum, StepError> {
        let mut text = String::from("kiln-add-url-v1\n");
        let mut files = Vec::new();
        let mut fetched = Vec::new();
        for source in urls {
            let (digest, last_modified) = match &source.checksum {
                Some(checksum) => {
                    fetched.push(None);
                    (checksum.clone(), None)
                }
                None => {
                    let url = crate::fetch::parse_url(&source.url).map_err(Box::new)?;
                    let auth = self.authorization(&url)?;
                    let got = self
                        .fetcher()?
                        .fetch(&url, None, auth.as_ref())
                        .map_err(Box::new)?;
                    let pair = (got.digest.clone(), got.last_modified.clone());
                    fetched.push(Some(got));
                    pair
                }
            };
            text.push_str(&format!(
                "url {:?} name {:?} digest {digest} last-modified {:?}\n",
                source.url, source.name, last_modified
            ));
            files.push(FileSum {
                path: source.url.clone(),
                digest,
                mode: libc::S_IFREG | 0o600,
            });
        }
        self.fetched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, fetched);
        Ok(ContentSum {
            digest: Digest::of(text.as_bytes()),
            files,
        })
    }

    /// Each URL's file (mode 0600, mtime its `Last-Modified`, as BuildKit's http source saves
    /// it) under `dir`, by its name; a later URL of the same name wins, as a later copy would.
    fn place_downloads(
        &self,
        node: NodeId,
        urls: &[UrlSource],
        dir: &std::path::Path,
    ) -> Result<(), StepError> {
        let known = self
            .fetched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .cloned()
            .unwrap_or_default();
        for (i, source) in urls.iter().enumerate() {
            let fetched = match known.get(i).cloned().flatten() {
                // Still in the store (a prune may have collected it since the key was made).
                Some(f) if self.store.blobs().contains(&f.digest) => f,
                _ => {
                    let url = crate::fetch::parse_url(&source.url).map_err(Box::new)?;
                    let checksum = source
                        .checksum
                        .clone()
                        .or_else(|| known.get(i).cloned().flatten().map(|f| f.digest));
                    self.fetcher()?
                        .fetch(&url, checksum.as_ref(), self.authorization(&url)?.as_ref())
                        .map_err(Box::new)?
                }
            };
            let target = dir.join(&source.name);
            self.fetcher()?
                .place(&fetched, &target)
                .map_err(|source_error| StepError::UrlFile {
                    url: source.url.clone(),
                    source: source_error,
                })?;
        }
        Ok(())
    }

    fn parts(&self, node: NodeId) -> Option<KeyParts> {
        self.key_parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .cloned()
    }

    fn position(&self, node: NodeId) -> Option<&str> {
        self.steps
            .get(node)
            .map(|s| s.position.as_str())
            .filter(|p| !p.is_empty())
    }

    /// The snapshot directories of `snapshot`, unpacked when missing, TOP-MOST FIRST.
    fn lower_dirs(&self, snapshot: &Snapshot) -> Result<Vec<PathBuf>, StepError> {
        let layers: Vec<LayerInfo> = snapshot.layers.iter().map(SnapshotLayer::info).collect();
        // Layers of a record from a shared cache are fetched only now that their content is
        // needed, and only those not unpacked yet.
        if !self.imported.is_empty() {
            let unpacked: Vec<LayerInfo> = layers
                .iter()
                .filter(|l| !self.store.has_snapshot(&l.diff_id))
                .cloned()
                .collect();
            self.imported.fetch_absent(&self.store, &unpacked)?;
        }
        Ok(ensure_snapshots(&self.store, &layers, MAX_LAYER_BYTES)?)
    }

    /// Commits the staged upper as the op's layer on top of `parent`.
    fn finish(
        &self,
        node: NodeId,
        key: &Digest,
        parent: &Snapshot,
        staged: StagedUpper,
    ) -> Result<Snapshot, StepError> {
        let layer = commit(&self.store, staged)?;
        let mut snapshot = parent.clone();
        snapshot.added.push(layer.is_some());
        snapshot.created.push(now_seconds());
        snapshot
            .layers
            .extend(layer.as_ref().map(SnapshotLayer::from_info));
        self.records.put(key, &snapshot)?;
        if let (Some(position), Some(parts)) = (self.position(node), self.parts(node)) {
            self.records.remember(position, &parts)?;
        }
        Ok(snapshot)
    }

    fn image_snapshot(&self, name: &str, platform: &Platform) -> Snapshot {
        let image = self.images.get(&ImageKey::new(name, platform));
        let layers = image
            .map(|image| image.layers.iter().map(SnapshotLayer::from_info).collect())
            .unwrap_or_default();
        Snapshot {
            layers,
            added: Vec::new(),
            created: Vec::new(),
            base_created: image.and_then(StoredImage::created_seconds),
        }
    }

    fn run(
        &self,
        node: NodeId,
        op: &RunOp,
        inputs: &[Snapshot],
        key: &Digest,
        cancel: &Cancel,
    ) -> Result<Snapshot, StepError> {
        let parent = inputs.first().ok_or(StepError::MissingInput)?;
        let emulation = self.emulation.get_or_init(Emulation::detect);
        if let Runnable::No(why) = emulation.runnable(&op.platform) {
            return Err(StepError::Platform(why));
        }
        let lowers = self.lower_dirs(parent)?;
        let mut input_dirs = vec![lowers.clone()];
        for input in &inputs[1..] {
            input_dirs.push(self.lower_dirs(input)?);
        }
        // Held until the sandbox is gone: copies, cache-mount locks.
        let prepared = mounts::prepare(
            &self.store,
            &op.mounts,
            &MountSources {
                context: self.context.as_deref(),
                inputs: &input_dirs,
                session: self.session.as_ref(),
                shared: (!self.imported.is_empty()).then_some(&SharedMounts {
                    worker: self,
                    step: node,
                }
                    as &dyn mounts::SharedCacheMounts),
            },
            op.insecure,
            cancel,
        )
        .map_err(Box::new)?;
        let staged = StagedUpper::new(&self.store)?;
        let env = prepared.environment(&op.env);
        // Held until the step is done, then given back to the pool (not after an insecure
        // step, which could have changed the namespace).
        let mut pooled = None;
        let network = match op.network.as_str() {
            "none" => Network::None,
            "host" => Network::Host,
            // No network namespace in a changed root: the host's network, as before.
            _ if self.isolation == crate::runtime::Isolation::Chroot
                || !crate::runtime::NetworkMode::private_available() =>
            {
                Network::Host
            }
            _ => {
                let taken = pooled.insert(self.networks.take().map_err(StepError::Network)?);
                if op.insecure {
                    taken.discard();
                }
                taken.network()
            }
        };
        let step = RunStep {
            args: op.args.clone(),
            env,
            cwd: op.cwd.clone(),
            user: op.user.clone(),
            network,
            hostname: "buildkitsandbox".to_string(),
            mounts: prepared.mounts.clone(),
            insecure: op.insecure,
            isolation: self.isolation,
        };
        let progress = self.progress.clone();
        let on_line = move |stream: LogStream, line: &str| {
            progress.event(BuildEvent::Log {
                step: node,
                stream,
                line: line.to_string(),
            });
        };
        run_step(&self.store, &lowers, &staged, &step, &on_line, cancel)?;
        drop(pooled);
        self.finish(node, key, parent, staged)
    }

    fn copy(
        &self,
        node: NodeId,
        op: &CopyOp,
        inputs: &[Snapshot],
        key: &Digest,
        cancel: &Cancel,
    ) -> Result<Snapshot, StepError> {
        // A linked copy is made on the empty filesystem: it reads nothing of the stage, and
        // its snapshot is only its own layer, which a merge stacks on the stage's.
        let empty = Snapshot::default_empty();
        let (parent, read) = if op.link {
            (&empty, inputs.first())
        } else {
            (
                inputs.first().ok_or(StepError::MissingInput)?,
                inputs.get(1),
            )
        };
        let lowers = self.lower_dirs(parent)?;
        let staged = StagedUpper::new(&self.store)?;
        let request = CopyRequest {
            sources: op.sources.clone(),
            inline: op.inline.clone(),
            dest: op.dest.clone(),
            workdir: op.workdir.clone(),
            chown: op.chown.clone(),
            chmod: op.chmod.clone(),
            add: op.add,
            exclude: op.exclude.clone(),
            parents: op.parents,
        };
        match op.from {
            // Heredocs only, and nothing else in the build reads the context, so the plan opened
            // none: BuildKit makes each heredoc in `llb.Scratch()` ("preparing inline
            // document") and never transfers the context for it, so kiln copies from an empty
            // filesystem (buildctl v0.32; issue 12, item 9).
            CopyFrom::Context if self.context.is_none() && op.sources.is_empty() => {
                let source = CopySource::Layers { layers: &[] };
                copy(&request, &source, &lowers, staged.upper(), cancel)?;
            }
            CopyFrom::Context => {
                let context = self.context.as_deref().ok_or(StepError::NoContext)?;
                let source = CopySource::Context { context };
                let previous = self.previous_copy(node, parent);
                let previous = previous.as_ref().map(|(snapshot, unchanged)| PreviousCopy {
                    snapshot,
                    unchanged,
                });
                copy_reusing(
                    &request,
                    &source,
                    &lowers,
                    staged.upper(),
                    cancel,
                    previous.as_ref(),
                )?;
            }
            CopyFrom::Input => {
                let from = read.ok_or(StepError::MissingInput)?;
                let from_dirs = self.lower_dirs(from)?;
                let source = CopySource::Layers { layers: &from_dirs };
                copy(&request, &source, &lowers, staged.upper(), cancel)?;
            }
            CopyFrom::Url => {
                // The downloads side by side in one directory of the store's staging, copied
                // from there by name as BuildKit copies `f` from each http source.
                let dir = self.store.staging().new_path("add-url");
                let placed = std::fs::create_dir(&dir)
                    .map_err(|e| StepError::UrlFile {
                        url: op.sources.join(" "),
                        source: crate::sys::FsError::new("create", &dir, e),
                    })
                    .and_then(|()| self.place_downloads(node, &op.urls, &dir))
                    .and_then(|()| {
                        let mut names: Vec<String> = Vec::new();
                        for url in &op.urls {
                            let name = literal_pattern(&url.name);
                            if !names.contains(&name) {
                                names.push(name);
                            }
                        }
                        let request = CopyRequest {
                            sources: names,
                            ..request
                        };
                        let layers = [dir.clone()];
                        let source = CopySource::Layers { layers: &layers };
                        copy(&request, &source, &lowers, staged.upper(), cancel)?;
                        Ok(())
                    });
                // Best effort: a directory left behind is staging, cleaned with the store's.
                let _ = std::fs::remove_dir_all(&dir);
                placed?;
            }
            CopyFrom::Git => {
                let cache = self.git_cache();
                let known = self
                    .git_resolved
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&node)
                    .cloned()
                    .unwrap_or_default();
                let stop = || cancel.is_cancelled();
                for (i, source) in op.git.iter().enumerate() {
                    let auth = git_auth(self.session.as_ref(), source)?;
                    let resolved = match known.get(i) {
                        Some(resolved) => resolved.clone(),
                        None => cache.resolve(source, &auth, &stop).map_err(Box::new)?,
                    };
                    let checkout = cache
                        .checkout(source, &resolved, &auth, &stop)
                        .map_err(Box::new)?;
                    let request = CopyRequest {
                        sources: vec!["/".to_string()],
                        ..request.clone()
                    };
                    let source = CopySource::Checkout {
                        dir: checkout.path(),
                    };
                    copy(&request, &source, &lowers, staged.upper(), cancel)?;
                }
            }
        }
        if cancel.is_cancelled() {
            return Err(StepError::Canceled);
        }
        self.finish(node, key, parent, staged)
    }

    /// The snapshot directory of the layer the COPY at `node` added the last time it ran, and
    /// the context paths whose checksum is still the same, when that run had the same
    /// instruction and inputs (so the same `parent`) and its snapshot is still there: the
    /// files a new run may link instead of copying (`executor::copy::copy_reusing`).
    fn previous_copy(&self, node: NodeId, parent: &Snapshot) -> Option<(PathBuf, HashSet<String>)> {
        let parts = self.parts(node)?;
        let before = self.records.last(self.position(node)?)?;
        if before.op != parts.op || before.inputs != parts.inputs {
            return None;
        }
        let ran: Snapshot = self.records.get(&before.key()).ok()??;
        let (layer, below) = ran.layers.split_last()?;
        if ran.added.last() != Some(&true) || below != parent.layers.as_slice() {
            return None;
        }
        let snapshot = self.store.snapshot_dir(&layer.diff_id);
        if !snapshot.is_dir() {
            return None;
        }
        let unchanged = parts.content?.unchanged_since(&before.content?)?;
        Some((snapshot, unchanged))
    }

    /// `COPY --link`'s merge: the stage's snapshot with the linked copy's ops and layers on
    /// top (BuildKit's `llb.Merge` of the two states). Recorded like a step, so an unchanged
    /// build finds it; it costs no file work when it runs again on a new base.
    fn merge(&self, inputs: &[Snapshot], key: &Digest) -> Result<Snapshot, StepError> {
        let [parent, linked] = inputs else {
            return Err(StepError::MissingInput);
        };
        let mut snapshot = parent.clone();
        snapshot.layers.extend(linked.layers.iter().cloned());
        snapshot.added.extend(linked.added.iter().copied());
        snapshot.created.extend(linked.created.iter().copied());
        self.records.put(key, &snapshot)?;
        Ok(snapshot)
    }

    fn mkdir(
        &self,
        node: NodeId,
        op: &MkdirOp,
        parent: &Snapshot,
        key: &Digest,
    ) -> Result<Snapshot, StepError> {
        let lowers = self.lower_dirs(parent)?;
        let owner = if op.user.is_empty() {
            None
        } else {
            // BuildKit makes the directory as the USER, resolved as its file operations do
            // (an unknown name is root, not an error: only a later RUN needs the user).
            Some(
                user::resolve_file_owner(&lowers, &op.user).map_err(|err| StepError::Workdir {
                    path: op.path.clone(),
                    reason: err.to_string(),
                })?,
            )
        };
        let staged = StagedUpper::new(&self.store)?;
        mkdir(&op.path, owner, &lowers, staged.upper())?;
        self.finish(node, key, parent, staged)
    }
}

/// The `--cache-from` caches' copies of cache mounts, for one RUN step: restoring one that
/// fails is a warning for the step, and the mount starts empty.
struct SharedMounts<'a> {
    worker: &'a BuildWorker,
    step: NodeId,
}

impl SharedMounts<'_> {
    fn warn(&self, message: String) {
        self.worker.progress.event(BuildEvent::Warning {
            step: Some(self.step),
            message,
        });
    }
}

impl mounts::SharedCacheMounts for SharedMounts<'_> {
    fn is_newer(&self, id: &str, local: &std::path::Path) -> bool {
        self.worker
            .imported
            .cache_mount_is_newer(id, &Platform::host(), local)
    }

    fn restore(&self, id: &str, dir: &std::path::Path) -> bool {
        let imported = &self.worker.imported;
        match imported.restore_cache_mount(&self.worker.store, id, &Platform::host(), dir) {
            Ok(restored) => restored,
            Err(err) => {
                self.warn(format!(
                    "cache mount {id:?}: the shared cache's copy cannot be restored; the step \
                     runs without it: {}",
                    Chain(&err)
                ));
                false
            }
        }
    }

    fn refresh_failed(&self, id: &str, error: &crate::store::CacheMountError) {
        self.warn(format!(
            "cache mount {id:?}: the local copy is kept, the shared cache's newer one cannot \
             replace it: {}",
            Chain(error)
        ));
    }
}

/// A COPY source that names exactly the file `name`: BuildKit copies an http source's file
/// without wildcards, but kiln's copy reads `*`, `?` and `[` in a source as Go's
/// `filepath.Match`; such a name becomes a pattern matching only itself (`[\f]ile\[1].txt`).
fn literal_pattern(name: &str) -> String {
    if !name.contains(['*', '?', '[', '\\']) {
        return name.to_string();
    }
    let mut pattern = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == 0 {
            pattern.push_str(&format!("[\\{c}]"));
        } else {
            if matches!(c, '*' | '?' | '[' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
    }
    pattern
}

impl Worker for BuildWorker {
    type Op = BuildOp;
    type Output = Arc<Snapshot>;
    type Error = StepError;

    fn cache_key(
        &self,
        node: NodeId,
        op: &BuildOp,
        op_digest: &Digest,
        input_keys: &[Digest],
    ) -> Result<Digest, StepError> {
        let content: Option<ContentSum> = match op {
            // A COPY of heredocs only reads no context path: the same key with a context or
            // without one.
            BuildOp::Copy(copy)
                if copy.from == CopyFrom::Context
                    && self.context.is_none()
                    && copy.context_paths.is_empty() =>
            {
                Some(ContentSum::of_nothing())
            }
            BuildOp::Copy(copy) if copy.from == CopyFrom::Url => {
                Some(self.url_content(node, &copy.urls)?)
            }
            BuildOp::Copy(copy) if copy.from == CopyFrom::Git => {
                Some(self.git_content(node, &copy.git)?)
            }
            BuildOp::Copy(copy) if copy.from == CopyFrom::Context => {
                let context = self.context.as_deref().ok_or(StepError::NoContext)?;
                Some(checksum_paths(
                    context.root(),
                    &copy.context_paths,
                    context.owners(),
                    &self.stat_cache,
                )?)
            }
            // The content of what the context bind mounts read, as COPY's sources.
            BuildOp::Run(run) => {
                let mut paths: Vec<String> = run
                    .mounts
                    .iter()
                    .filter_map(|m| match m {
                        RunMount::Bind {
                            from: MountInput::Context,
                            context_paths,
                            ..
                        } => Some(context_paths.iter().cloned()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                let reads_context = run.mounts.iter().any(|m| {
                    matches!(
                        m,
                        RunMount::Bind {
                            from: MountInput::Context,
                            ..
                        }
                    )
                });
                if reads_context {
                    paths.sort();
                    paths.dedup();
                    let context = self.context.as_deref().ok_or(StepError::NoContext)?;
                    Some(checksum_paths(
                        context.root(),
                        &paths,
                        context.owners(),
                        &self.stat_cache,
                    )?)
                } else {
                    None
                }
            }
            _ => None,
        };
        let parts = KeyParts {
            op: self.with_session(op, op_digest),
            inputs: input_keys.to_vec(),
            content,
        };
        let key = parts.key();
        self.key_parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, parts);
        Ok(key)
    }

    fn lookup(
        &self,
        node: NodeId,
        op: &BuildOp,
        key: &Digest,
    ) -> Result<Option<Arc<Snapshot>>, StepError> {
        match op {
            // Sources need no work: the image is in the store, scratch is empty.
            BuildOp::Scratch { .. } => return Ok(Some(Arc::new(Snapshot::default_empty()))),
            BuildOp::Image { name, platform, .. } => {
                return Ok(Some(Arc::new(self.image_snapshot(name, platform))));
            }
            _ => {}
        }
        let found: Option<Snapshot> = self.records.get(key)?;
        // A record is usable only while every blob it names is in the store (a prune may
        // have collected them); a snapshot directory can always be unpacked again from its blob.
        let usable = found
            .filter(|s| {
                s.layers
                    .iter()
                    .all(|l| self.store.blobs().contains(&l.digest))
            })
            .or_else(|| {
                self.imported
                    .lookup(key, &self.store)
                    .map(super::remote_cache::snapshot_of)
            });
        if usable.is_none()
            && self.explain
            && let (Some(position), Some(parts)) = (self.position(node), self.parts(node))
        {
            let reasons = self.records.explain(position, &parts);
            self.explanations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(node, reasons);
        }
        Ok(usable.map(Arc::new))
    }

    fn run(
        &self,
        node: NodeId,
        op: &BuildOp,
        key: &Digest,
        inputs: &[Arc<Snapshot>],
        cancel: &Cancel,
    ) -> Result<Arc<Snapshot>, StepError> {
        let inputs: Vec<Snapshot> = inputs.iter().map(|s| s.as_ref().clone()).collect();
        let parent = inputs.first();
        let snapshot = match op {
            BuildOp::Scratch { .. } => Snapshot::default_empty(),
            BuildOp::Image { name, platform, .. } => self.image_snapshot(name, platform),
            BuildOp::Run(run) => self.run(node, run, &inputs, key, cancel)?,
            BuildOp::Copy(copy) => self.copy(node, copy, &inputs, key, cancel)?,
            BuildOp::Mkdir(dir) => {
                self.mkdir(node, dir, parent.ok_or(StepError::MissingInput)?, key)?
            }
            BuildOp::Merge => self.merge(&inputs, key)?,
        };
        Ok(Arc::new(snapshot))
    }
}

impl Snapshot {
    /// The empty filesystem.
    pub fn default_empty() -> Snapshot {
        Snapshot {
            layers: Vec::new(),
            added: Vec::new(),
            created: Vec::new(),
            base_created: None,
        }
    }
}
