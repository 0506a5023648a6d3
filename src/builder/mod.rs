//! The build as one library call: a Dockerfile and its context in, an image in the store out,
//! progress as typed [`BuildEvent`]s.
//!
//! [`build`] plans the Dockerfile ([`crate::frontend::plan`]), looks up the base images in the store,
//! compiles the needed stages into an ops graph ([`compile`]), solves it with the parallel
//! [`crate::solver`] through the [`worker`] (cache keys, cache records, the [`steps`]), writes
//! the image config and manifest, and tags the image; [`build_async`] lists the phases.
//! [`export::export_image`] then writes the image out as `docker buildx build --output` and
//! `--push` do. The CLI is a thin layer over both.

pub mod annotations;
pub mod attestations;
pub mod check;
pub mod compile;
mod epoch;
pub mod export;
pub mod git_context;
pub mod http_context;
pub mod image_export;
pub mod metadata;
pub mod named_context;
pub mod progress;
mod remote_cache;
pub mod stdin_context;
pub mod steps;
pub mod timestamps;
pub mod worker;

pub use check::{Checked, RemoteKind, RemoteSource};
pub use named_context::{NamedContext, NamedContextError};
pub use progress::{BuildEvent, LogStream, Progress, StepInfo};
pub use steps::mounts::{ClientSession, NoSession, Session};

use crate::cache::remote::transport::CacheTransport;
use crate::cache::remote::{CacheExport, ImportedCache, SharedCacheError, cache_mounts};
use crate::cache::{CacheError, CacheRecords, StatCache};
use crate::frontend::context::{ContextError, ContextKind};
use crate::frontend::diagnostic::Span;
use crate::frontend::dispatch::env_pairs;
use crate::frontend::lint;
use crate::frontend::plan::{Plan, PlanError, PlanOptions, base_image_names, needed_images, plan};
use crate::frontend::stage::{BaseImage, ImageKey, ResolveOptions};
use crate::oci::timestamp::{ZonedTime, format_rfc3339};
use crate::oci::{Digest, Platform};
use crate::solver::{Cancel, Graph, NodeEvent, NodeId, SolveError, SolveOptions, solve};
use crate::store::{Annotated, Store, StoreError, StoredImage, StoredIndex, descriptor};
use annotations::Annotations;
use compile::{BuildOp, CompileError, CompileOptions, HistoryEntry, compile};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use worker::{BuildWorker, Snapshot, StepError};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The Dockerfile's bytes.
    pub dockerfile: Vec<u8>,
    /// Its name in messages (`Dockerfile`, `build/app.Dockerfile`, `-`).
    pub dockerfile_name: String,
    /// Where it is on disk (for `<Dockerfile>.dockerignore`); `None` when read from stdin.
    pub dockerfile_path: Option<PathBuf>,
    /// The context directory; `None` builds without a context (`kiln build - < Dockerfile`).
    pub context_dir: Option<PathBuf>,
    /// Where the context came from when it is not a local directory (standard input, a URL or
    /// a git repository): it is read as BuildKit reads a remote context
    /// ([`ContextKind::Unpacked`]: no `.dockerignore`, owners as on disk), and
    /// `SOURCE_DATE_EPOCH=context` takes its time.
    pub remote_context: Option<RemoteContext>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Names to tag the image with.
    pub tags: Vec<String>,
    /// `--label`: labels added to the image config.
    pub labels: BTreeMap<String, String>,
    /// The network of RUN steps that do not ask for one (BuildKit's `default` is a private
    /// network).
    pub network: crate::runtime::NetworkMode,
    pub no_cache: bool,
    /// Stage names whose steps skip the cache.
    pub no_cache_filter: Vec<String>,
    /// How many steps run at once; 0 is one per core.
    pub jobs: usize,
    /// Say why each step missed the cache.
    pub explain_cache: bool,
    /// `--cache-from`: shared caches whose records are looked up after the store's own (only
    /// their manifests and graphs are read up front; layers when needed).
    pub cache_from: Vec<Arc<dyn CacheTransport>>,
    /// `--cache-to`: where the build's records are exported once the image is written.
    pub cache_to: Vec<CacheExport>,
    /// When `FROM` and `COPY --from` images are pulled from their registries.
    pub pull: crate::registry::PullPolicy,
    /// How the registry client behaves (insecure registries, credentials, parallelism).
    pub registry: crate::registry::ClientOptions,
    /// `--allow security.insecure`: `RUN --security=insecure` may run.
    pub allow_insecure: bool,
    /// `--allow network.host`: RUN steps may use the host's network (`RUN --network=host`,
    /// `--network host`).
    pub allow_network_host: bool,
    /// Secrets and SSH agents lent to RUN mounts (`--secret`, `--ssh`).
    pub session: Arc<dyn Session>,
    /// `--build-context NAME=VALUE`: the named contexts, by NAME as given.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// `--platform`: the platforms to build for, each once (normalised when parsed with
    /// [`Platform::parse_list`]). Empty builds for the host's platform, and the image says the
    /// platform of its base (BuildKit's implicit target); one gives a plain image for it; more
    /// give an image index with an image for each.
    pub platforms: Vec<Platform>,
    /// `rewrite-timestamp=true` (an output option): with `SOURCE_DATE_EPOCH`, the layers the
    /// build makes have their times clamped to it in the image ([`timestamps`]).
    pub rewrite_timestamp: bool,
    /// `--annotation` and the image exports' `annotation*.KEY=` options: OCI annotations on
    /// the manifests, index and descriptors the build writes ([`annotations`]).
    pub annotations: Annotations,
    /// `--provenance`, `--sbom`, `--attest`: what is attached to the image (which then is an
    /// index, as with BuildKit; [`attestations`]).
    pub attestations: attestations::AttestationRequest,
    /// `--isolation`: how RUN steps are isolated (the sandbox, or `chroot`: see
    /// [`crate::container::chroot`]). Not part of the cache keys: both give the step's files.
    pub isolation: crate::runtime::Isolation,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            dockerfile: Vec::new(),
            dockerfile_name: "Dockerfile".to_string(),
            dockerfile_path: None,
            context_dir: None,
            remote_context: None,
            build_args: BTreeMap::new(),
            target: None,
            tags: Vec::new(),
            labels: BTreeMap::new(),
            network: crate::runtime::NetworkMode::Private,
            no_cache: false,
            no_cache_filter: Vec::new(),
            jobs: 0,
            explain_cache: false,
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            pull: crate::registry::PullPolicy::Missing,
            registry: crate::registry::ClientOptions::default(),
            allow_insecure: false,
            allow_network_host: false,
            session: Arc::new(NoSession),
            named_contexts: BTreeMap::new(),
            platforms: Vec::new(),
            rewrite_timestamp: false,
            annotations: Annotations::default(),
            attestations: attestations::AttestationRequest::default(),
            isolation: crate::runtime::Isolation::Sandbox,
        }
    }
}

/// A build context that came from elsewhere than a local directory, unpacked into
/// [`BuildOptions::context_dir`]. buildx sends a context tar on standard input to BuildKit as
/// an http context (its upload provider serves it to the build), so both are one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteContext {
    /// Where it came from.
    pub origin: ContextOrigin,
    /// Its time, for `SOURCE_DATE_EPOCH=context` (BuildKit's
    /// `ResolveMainContextSourceDateEpoch`): for a download its `Last-Modified`, else the newest
    /// file of its archive (a stdin tar has no `Last-Modified`); for a git repository its
    /// commit's time, in the committer's zone.
    pub epoch: Option<ZonedTime>,
}

/// Where a [`RemoteContext`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextOrigin {
    /// A tar on standard input (`kiln build - < context.tar`).
    Stdin,
    /// A download from this URL, as given.
    Url(String),
    /// A checkout of this git repository (credentials masked).
    Git(String),
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The image (of a multi-platform build, the first platform's).
    pub image: StoredImage,
    /// Every platform's image, in the order of [`BuildOptions::platforms`] (one for a
    /// single-platform build).
    pub images: Vec<StoredImage>,
    /// A multi-platform build's image index, which its tags name.
    pub index: Option<StoredIndex>,
    /// How many steps ran and how many came from the cache.
    pub ran: usize,
    pub cached: usize,
    /// `--explain-cache`: for each step that ran, its name and why it missed.
    pub explanations: Vec<(String, Vec<String>)>,
    /// The build's `SOURCE_DATE_EPOCH` (seconds), resolved: a tar export gives every file this
    /// time, as BuildKit's does.
    pub source_date_epoch: Option<i64>,
    /// Each `--cache-to` export's manifest (media type, digest, size), in order.
    pub cache_manifests: Vec<(String, Digest, u64)>,
    /// The provenance attached to each platform's image, when asked for.
    pub provenance: Vec<attestations::AttachedProvenance>,
}

/// Why a build failed: one variant per phase and cause. A message says only what failed at
/// this level; the cause is the [`std::error::Error::source`] (the CLI prints the chain).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The store's lease, which keeps a prune from collecting the build's blobs, could not be
    /// taken.
    #[error("cannot lease the store for the build")]
    Lease(#[source] StoreError),
    // Preparing: planning, base images, shared cache imports.
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// A `--build-context` could not be made ready.
    #[error("cannot use the build context {name}")]
    NamedContext {
        name: String,
        #[source]
        source: Box<named_context::LoadError>,
    },
    /// A needed COPY or ADD reads the build context, and the build has none (`kiln build -`).
    #[error("a COPY or ADD reads the build context, but this build has none (the context was `-`)")]
    NoContext,
    /// A base image could not be pulled.
    #[error("cannot pull {name}")]
    Pull {
        name: String,
        #[source]
        source: Box<crate::registry::RegistryError>,
    },
    /// A multi-platform image of the store lacks a platform the build needs, and pulling it
    /// failed: both are said.
    #[error("{local}, and pulling it failed")]
    PullPlatform {
        /// Why the store's image does not do.
        local: String,
        #[source]
        source: Box<crate::registry::RegistryError>,
    },
    #[error(
        "invalid SOURCE_DATE_EPOCH {0:?}: give whole seconds since 1970-01-01 UTC, `context`, or \
         the name of a source-only stage"
    )]
    SourceDateEpoch(String),
    /// `SOURCE_DATE_EPOCH` is no number, and not a name a context or stage could have.
    #[error("invalid SOURCE_DATE_EPOCH {value:?}: invalid context name: {reason}")]
    SourceDateEpochName { value: String, reason: String },
    /// The remote source `SOURCE_DATE_EPOCH` names could not be asked for its time.
    #[error("cannot take SOURCE_DATE_EPOCH from {from}")]
    SourceDateEpochFetch {
        from: String,
        #[source]
        cause: crate::error::Cause,
    },
    /// `SOURCE_DATE_EPOCH` names a stage that is not source-only (BuildKit's
    /// `sourceDateEpochStageSource` messages).
    #[error("{reason} (stage {stage})")]
    SourceDateEpochStage {
        stage: String,
        reason: String,
        span: Span,
    },
    #[error("cannot open the build cache records")]
    CacheRecords(#[source] CacheError),
    // Solving: running the steps.
    /// A step failed: its name and where it is in the Dockerfile.
    #[error("{name} failed")]
    Step {
        name: String,
        span: Option<Span>,
        #[source]
        source: Box<StepError>,
    },
    #[error("the build was canceled")]
    Canceled,
    /// The solver failed other than by a step's error (a worker panic, a graph error): a bug.
    #[error("internal error in the solver")]
    Solver(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error in the solver: the target step has no result")]
    NoTargetResult,
    #[error("cannot save the stat cache")]
    StatCache(#[source] CacheError),
    // Writing the image.
    /// The layers that came from a shared cache could not be fetched or recorded as absent.
    #[error("cannot fetch or record the image's layers from the shared cache")]
    SharedCacheLayers(#[source] Box<SharedCacheError>),
    /// An annotation the image cannot take (checked before the first step).
    #[error(transparent)]
    Annotation(#[from] annotations::AnnotationError),
    #[error("cannot rewrite the image's timestamps to SOURCE_DATE_EPOCH")]
    RewriteTimestamp(#[source] Box<timestamps::RewriteError>),
    #[error("cannot serialise the image config")]
    ImageConfig(#[source] serde_json::Error),
    #[error("cannot write the image")]
    Write(#[source] StoreError),
    #[error("cannot tag the image {name}")]
    Tag {
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot attach the image's attestations")]
    Attestations(#[source] Box<attestations::AttestationError>),
    // Exporting.
    #[error("cannot export the build cache to {destination}")]
    CacheExport {
        destination: String,
        #[source]
        source: Box<SharedCacheError>,
    },
    // Any phase.
    #[error("cannot start the build's threads")]
    Runtime(#[source] std::io::Error),
    /// A shared cache import or export on the blocking pool panicked or was canceled.
    #[error("the shared cache task did not finish")]
    SharedCacheTask(#[source] tokio::task::JoinError),
}

impl crate::frontend::diagnostic::Located for BuildError {
    /// Where in the Dockerfile the build failed, when it was a line of it.
    fn span(&self) -> Option<Span> {
        match self {
            BuildError::Plan(err) => err.span(),
            BuildError::Compile(err) => Some(err.span()),
            BuildError::Step { span, .. } => *span,
            BuildError::SourceDateEpochStage { span, .. } => Some(*span),
            _ => None,
        }
    }

    fn help(&self) -> Option<String> {
        match self {
            BuildError::Plan(err) => err.help(),
            BuildError::Compile(err) => err.help(),
            BuildError::NoContext => Some(
                "pass a context directory instead of `-`, or COPY from a stage or an image \
                 with --from"
                    .to_string(),
            ),
            // A failed RUN: the last lines it wrote, which usually say why.
            BuildError::Step { source, .. } => match source.as_ref() {
                StepError::Run(run) if !run.tail().is_empty() => Some(format!(
                    "the last lines the command wrote:\n    {}",
                    run.tail().join("\n    ")
                )),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Builds the image, blocking until done. Call from outside an async runtime; from async code
/// use [`build_async`].
pub fn build(
    store: &Store,
    options: &BuildOptions,
    progress: Arc<dyn Progress>,
    cancel: &Cancel,
) -> Result<BuildOutput, BuildError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BuildError::Runtime)?;
    runtime.block_on(build_async(store, options, progress, cancel))
}

/// [`build`] for async callers. The build's phases in order: [`prepare`] (plan, base images,
/// compile, shared cache imports), [`solve_steps`], [`write`] (the image config, manifest and
/// tags), [`export_cache`] (`--cache-to`).
pub async fn build_async(
    store: &Store,
    options: &BuildOptions,
    progress: Arc<dyn Progress>,
    cancel: &Cancel,
) -> Result<BuildOutput, BuildError> {
    // Held until the image is tagged and the cache exported, so no prune collects the layers
    // on the way (a cache export reads blobs that no image names: earlier steps').
    let _lease = store.lease().map_err(BuildError::Lease)?;
    let started = crate::oci::timestamp::now_seconds();
    let prepared = prepare(store, options, &progress).await?;
    // A cancel that came while planning stops the build before its first step.
    if cancel.is_cancelled() {
        return Err(BuildError::Canceled);
    }
    let solved = solve_steps(&prepared, options, &progress, cancel).await?;
    let written = write(
        store,
        options,
        &prepared,
        &solved,
        progress.as_ref(),
        started,
    )
    .await?;
    progress.event(BuildEvent::Finished {
        image_id: match &written.index {
            Some(index) => index.digest.to_string(),
            None => written.images[0].id.to_string(),
        },
        names: written.names,
    });
    let cache_manifests =
        export_cache(store, options, &prepared, &solved, progress.as_ref()).await?;
    Ok(BuildOutput {
        cache_manifests,
        image: written.images[0].clone(),
        images: written.images,
        index: written.index,
        ran: solved.counts.ran,
        cached: solved.counts.cached,
        explanations: prepared.explanations(),
        source_date_epoch: prepared
            .targets
            .first()
            .and_then(|target| target.config.source_date_epoch.as_ref())
            .map(|time| time.seconds),
        provenance: written.provenance,
    })
}

/// What [`prepare`] hands on: the compiled graph, the worker that runs its steps, and what
/// each target's image config is written from.
struct Prepared {
    graph: Arc<Graph<BuildOp>>,
    /// One per target platform, in the order asked for.
    targets: Vec<PreparedTarget>,
    /// Nodes whose cache is skipped (`--no-cache`, `--no-cache-filter`).
    no_cache: Vec<NodeId>,
    /// Holds the steps, the cache records, the stat cache and the imported shared caches.
    worker: Arc<BuildWorker>,
}

/// One target platform's part of [`Prepared`].
struct PreparedTarget {
    /// The platform, normalised (the host's for a build without `--platform`).
    platform: Platform,
    node: NodeId,
    config: ImageConfig,
}

impl Prepared {
    fn target_nodes(&self) -> Vec<NodeId> {
        self.targets.iter().map(|t| t.node).collect()
    }

    /// `--explain-cache`: each step that ran, by name, and why it missed.
    fn explanations(&self) -> Vec<(String, Vec<String>)> {
        let steps = &self.worker.steps;
        self.worker
            .explanations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(node, reasons)| {
                let name = steps.get(*node).map(|s| s.name.clone()).unwrap_or_default();
                (name, reasons.clone())
            })
            .collect()
    }
}

/// The target stage's image config before its layers are known.
struct ImageConfig {
    /// The config document (`config` included, `rootfs` and `history` not).
    document: Map<String, Value>,
    history: Vec<HistoryEntry>,
    /// The BuildKit image `author` when a MAINTAINER set it.
    author: Option<String>,
    source_date_epoch: Option<ZonedTime>,
}

/// What [`solve_steps`] made.
struct Solved {
    /// Each target's filesystem (its layers and how each step added to it), in the order of
    /// [`Prepared::targets`].
    snapshots: Vec<Arc<Snapshot>>,
    /// The cache key of every needed node (a cache export names its records by them).
    keys: Arc<BTreeMap<NodeId, Digest>>,
    counts: StepCounts,
}

/// How many steps ran and how many came from the cache.
#[derive(Debug, Clone, Copy, Default)]
struct StepCounts {
    ran: usize,
    cached: usize,
}

/// What [`write`] made.
struct Written {
    /// Each target's image.
    images: Vec<StoredImage>,
    /// The index of a multi-platform build.
    index: Option<StoredIndex>,
    /// The names it was tagged with, as the user writes them.
    names: Vec<String>,
    /// The provenance attached, when asked for.
    provenance: Vec<attestations::AttachedProvenance>,
}

/// What a build checks before its first step ([`validate`]).
struct Validated {
    /// One plan per target platform, in the order asked for.
    plans: Vec<Plan>,
    images: BTreeMap<ImageKey, StoredImage>,
    compiled: compile::Compiled,
    /// `SOURCE_DATE_EPOCH`, resolved once before the plans (every target's).
    source_date_epoch: Option<ZonedTime>,
    /// In a dry run, the source `SOURCE_DATE_EPOCH` would take its time from, not fetched.
    epoch_source: Option<String>,
    /// The remote sources the build reads.
    remote: Vec<RemoteSource>,
}

/// Every check a build runs before its first step, for the build and for [`check`] alike:
/// plans the build, makes its named contexts and images ready, compiles the ops graph and
/// reads `SOURCE_DATE_EPOCH`. With `fetch` (a build), what the store lacks is pulled,
/// downloaded and stored; without it (a dry run), `store` is only read, nothing is fetched or
/// written, and stand-ins take the place of what the store lacks ([`check`](mod@check)).
async fn validate(
    store: Option<&Store>,
    fetch: bool,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Validated, BuildError> {
    options
        .annotations
        .check(&options.platforms, writes_index(options))?;
    // The named contexts are made once, for every target platform's plan. Off the runtime: a
    // download blocks on a runtime of its own.
    let contexts = {
        let store = store.filter(|_| fetch).cloned();
        let (named, session) = (options.named_contexts.clone(), options.session.clone());
        off_runtime(move || named_context::context_images(store.as_ref(), &named, session.as_ref()))
            .await?
    }
    .map_err(|(name, source)| BuildError::NamedContext {
        name,
        source: Box::new(source),
    })?;
    let mut sources = Sources {
        store,
        fetch: fetch && store.is_some(),
        stand_ins: BTreeSet::new(),
        context_stand_ins: contexts.stand_ins,
    };
    // `SOURCE_DATE_EPOCH` naming a context or stage is resolved first: the stages see its
    // time (BuildKit rewrites the build arg before it dispatches them).
    let mut build_args = options.build_args.clone();
    let epoch = epoch::resolve(sources.store, sources.fetch, options, &build_args).await?;
    if let Some(value) = &epoch.arg {
        build_args.insert("SOURCE_DATE_EPOCH".to_string(), value.clone());
    }
    // One plan per target platform (its automatic args differ), with the images each needs;
    // an image wanted by several is looked up once.
    let targets: Vec<Option<&Platform>> = if options.platforms.is_empty() {
        vec![None]
    } else {
        options.platforms.iter().map(Some).collect()
    };
    let mut images: BTreeMap<ImageKey, StoredImage> = BTreeMap::new();
    let mut plans = Vec::new();
    for target in targets {
        let plan = plan_with_images(
            &mut sources,
            options,
            &build_args,
            target,
            &contexts.keys,
            &mut images,
            progress,
        )
        .await?;
        plans.push(plan);
    }
    let compiled = compile(
        &plans,
        &CompileOptions {
            images: &images,
            network: options.network,
            no_cache: options.no_cache,
            no_cache_filter: &options.no_cache_filter,
            dockerfile_name: &options.dockerfile_name,
            allow_insecure: options.allow_insecure,
            allow_network_host: options.allow_network_host,
            explicit_platform: !options.platforms.is_empty(),
            multi_platform: options.platforms.len() > 1,
        },
    )?;
    let mut remote =
        check::remote_sources(&plans, options, &images, &contexts.made, &sources.stand_ins);
    remote.extend(epoch.unfetched.clone());
    Ok(Validated {
        plans,
        images,
        compiled,
        source_date_epoch: epoch.time,
        epoch_source: epoch.unfetched.map(|source| source.source),
        remote,
    })
}

/// Runs every check the build runs before its first step ([`validate`]) without fetching or
/// storing anything: `store` (when there is one) is only read. Blocks; call it from outside an
/// async runtime.
pub fn check(
    store: Option<&Store>,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Checked, BuildError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BuildError::Runtime)?;
    let validated = runtime.block_on(validate(store, false, options, progress))?;
    // Every target platform's plan was checked and compiled; the first is the one shown.
    let plan = validated
        .plans
        .into_iter()
        .next()
        .ok_or(BuildError::NoTargetResult)?;
    Ok(Checked {
        plan,
        steps: validated.compiled.steps,
        remote: validated.remote,
        source_date_epoch: validated.source_date_epoch.map(|t| t.seconds),
        source_date_epoch_from: validated.epoch_source,
    })
}

/// Plans the build, pulls or looks up its images, compiles the ops graph (sending
/// [`BuildEvent::Planned`]), imports the `--cache-from` caches and opens the worker.
async fn prepare(
    store: &Store,
    options: &BuildOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Prepared, BuildError> {
    let Validated {
        plans,
        images,
        compiled,
        source_date_epoch,
        ..
    } = validate(Some(store), true, options, progress.as_ref()).await?;
    progress.event(BuildEvent::Planned {
        steps: compiled
            .steps
            .iter()
            .enumerate()
            .map(|(id, step)| StepInfo {
                id,
                name: step.name.clone(),
                span: step.span,
            })
            .collect(),
    });
    // The checks' findings (every platform's plan is checked alike; the first one's are the
    // build's), and InvalidBaseImagePlatform, the one rule that needs the pulled base: the
    // compiler finds it, the checks' configuration (skip, error=true) decides.
    let mut report = plans.first().map(|p| p.lint.clone()).unwrap_or_default();
    for (node, message) in &compiled.warnings {
        let Some(detail) = message.strip_prefix("InvalidBaseImagePlatform: ") else {
            progress.event(BuildEvent::Warning {
                step: Some(*node),
                message: message.clone(),
            });
            continue;
        };
        let rule = &lint::rules::INVALID_BASE_IMAGE_PLATFORM;
        if let (true, Some(span)) = (
            report.config.runs(rule),
            compiled.steps.get(*node).and_then(|step| step.span),
        ) {
            report.findings.push(lint::Finding {
                rule,
                message: detail.to_string(),
                span,
            });
        }
    }
    if let Some(message) = report.violation() {
        let violation = lint::Violation { message, report };
        return Err(PlanError::Lint(lint::LintError::Violation(Box::new(violation))).into());
    }
    for finding in &report.findings {
        progress.event(BuildEvent::Lint {
            rule: finding.rule.name.to_string(),
            message: finding.message.clone(),
            url: finding.rule.url.to_string(),
            line: finding.span.start.line,
        });
    }
    let targets = compiled
        .targets
        .into_iter()
        .map(|compiled| PreparedTarget {
            platform: compiled.platform,
            node: compiled.node,
            config: ImageConfig {
                document: compiled.document,
                history: compiled.history,
                author: compiled.author,
                source_date_epoch,
            },
        })
        .collect();
    let imported = import_caches(store, options, progress.as_ref()).await?;
    let cache_dir = store.root().join("cache");
    // Every plan opens the same context directory; the first that reads it serves them all.
    let context = plans
        .iter()
        .find_map(|plan| plan.context.clone())
        .map(Arc::new);
    let stat_cache = match &context {
        Some(context) => StatCache::load(&cache_dir.join("stat"), context.root()),
        None => StatCache::load(&cache_dir.join("stat"), std::path::Path::new("/")),
    };
    let worker = Arc::new(BuildWorker {
        store: store.clone(),
        records: CacheRecords::open(&cache_dir).map_err(BuildError::CacheRecords)?,
        stat_cache,
        context,
        images,
        steps: compiled.steps,
        progress: progress.clone(),
        explain: options.explain_cache,
        key_parts: Mutex::new(BTreeMap::new()),
        explanations: Mutex::new(BTreeMap::new()),
        imported,
        session: options.session.clone(),
        fetcher: Mutex::new(None),
        fetched: Mutex::new(BTreeMap::new()),
        emulation: std::sync::OnceLock::new(),
        git_resolved: Mutex::new(BTreeMap::new()),
        git_refs: Mutex::new(BTreeMap::new()),
        isolation: options.isolation,
        networks: crate::runtime::NetworkPool::new(),
    });
    Ok(Prepared {
        graph: Arc::new(compiled.graph),
        targets,
        no_cache: compiled.no_cache,
        worker,
    })
}

/// Reads the manifests and graphs of the `--cache-from` caches (a
/// [`BuildEvent::CacheImported`] each); one that cannot be read is a warning, not an error.
async fn import_caches(
    store: &Store,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Arc<ImportedCache>, BuildError> {
    let (imported, reports) = {
        let (transports, store) = (options.cache_from.clone(), store.clone());
        off_runtime(move || ImportedCache::import(&transports, &store)).await?
    };
    for report in reports {
        progress.event(BuildEvent::CacheImported {
            source: report.source,
            records: report.records,
            warning: report.warning,
        });
    }
    Ok(Arc::new(imported))
}

/// Solves the graph for its target with the worker, turning the solver's node events into
/// step events and counting the steps that ran and those that came from the cache.
async fn solve_steps(
    prepared: &Prepared,
    options: &BuildOptions,
    progress: &Arc<dyn Progress>,
    cancel: &Cancel,
) -> Result<Solved, BuildError> {
    let counts = Arc::new(Mutex::new(StepCounts::default()));
    let events = {
        let progress = progress.clone();
        let counts = counts.clone();
        Arc::new(move |node: usize, event: NodeEvent| {
            let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
            progress.event(match event {
                NodeEvent::Cached => {
                    counts.cached += 1;
                    BuildEvent::Cached { step: node }
                }
                NodeEvent::Started => {
                    counts.ran += 1;
                    BuildEvent::Started { step: node }
                }
                NodeEvent::Done { elapsed } => BuildEvent::Done {
                    step: node,
                    elapsed,
                },
                NodeEvent::Failed => return,
                NodeEvent::Canceled => BuildEvent::Canceled { step: node },
            });
        })
    };
    let solved = solve(
        prepared.graph.clone(),
        &prepared.target_nodes(),
        prepared.worker.clone(),
        &SolveOptions {
            jobs: options.jobs,
            no_cache: prepared.no_cache.clone(),
        },
        cancel,
        events,
    )
    .await;
    // The stat cache is worth keeping even when a step failed: the hashing was done.
    let saved = prepared.worker.stat_cache.save();
    let solved = match solved {
        Ok(solved) => solved,
        Err(SolveError::Failed { node, error }) => {
            let step = prepared.worker.steps.get(node);
            progress.event(BuildEvent::Error {
                step: node,
                message: error.to_string(),
            });
            return Err(BuildError::Step {
                name: step.map(|s| s.name.clone()).unwrap_or_default(),
                span: step.and_then(|s| s.span),
                source: Box::new(error),
            });
        }
        Err(SolveError::Canceled) => return Err(BuildError::Canceled),
        Err(other) => return Err(BuildError::Solver(Box::new(other))),
    };
    saved.map_err(BuildError::StatCache)?;
    let snapshots = prepared
        .targets
        .iter()
        .map(|target| solved.outputs.get(&target.node).cloned())
        .collect::<Option<Vec<_>>>()
        .ok_or(BuildError::NoTargetResult)?;
    let counts = *counts.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(Solved {
        snapshots,
        keys: Arc::new(solved.keys),
        counts,
    })
}

/// Writes the image config and manifest for each target's snapshot, and for a multi-platform
/// build the index of them (each manifest with its platform, as BuildKit's exporter writes
/// it), and tags what was written (the index, or the one image) with each of
/// [`BuildOptions::tags`].
async fn write(
    store: &Store,
    options: &BuildOptions,
    prepared: &Prepared,
    solved: &Solved,
    progress: &dyn Progress,
    started: i64,
) -> Result<Written, BuildError> {
    progress.event(BuildEvent::Phase {
        what: "writing image".to_string(),
    });
    let mut snapshots = Vec::new();
    let mut warned = false;
    for (target, snapshot) in prepared.targets.iter().zip(&solved.snapshots) {
        snapshots.push(
            match (options.rewrite_timestamp, target.config.source_date_epoch) {
                (true, Some(epoch)) => {
                    let epoch = epoch.seconds;
                    let (imported, store, snapshot) = (
                        prepared.worker.imported.clone(),
                        store.clone(),
                        snapshot.clone(),
                    );
                    off_runtime(move || {
                        timestamps::rewrite_new_layers(&store, &imported, &snapshot, epoch)
                    })
                    .await?
                    .map(Arc::new)
                    .map_err(|err| BuildError::RewriteTimestamp(Box::new(err)))?
                }
                (true, None) => {
                    // BuildKit's exporter warns and writes the layers as they are (once for
                    // a build of several platforms).
                    if !warned {
                        warned = true;
                        progress.event(BuildEvent::Warning {
                            step: None,
                            message: "rewrite-timestamp is set, but SOURCE_DATE_EPOCH is not: \
                                      the layers keep their times"
                                .to_string(),
                        });
                    }
                    snapshot.clone()
                }
                (false, _) => snapshot.clone(),
            },
        );
    }
    // Layers that came from a shared cache stay there until something needs their bytes.
    let layers: Vec<_> = snapshots
        .iter()
        .flat_map(|snapshot| snapshot.layers.iter().map(|l| l.info()))
        .collect();
    {
        let (imported, store) = (prepared.worker.imported.clone(), store.clone());
        off_runtime(move || imported.keep_absent(&store, &layers)).await?
    }
    .map_err(|err| BuildError::SharedCacheLayers(Box::new(err)))?;
    let has_index = writes_index(options);
    let dropped = options.annotations.dropped_on_single_platform();
    if !has_index && !dropped.is_empty() {
        // BuildKit drops them without a word; a user who wrote them should know.
        progress.event(BuildEvent::Warning {
            step: None,
            message: format!(
                "annotations for a platform are written on a multi-platform image's manifests \
                 only; this image has one platform, so these are not written: {}",
                dropped.join(", ")
            ),
        });
    }
    let mut images = Vec::new();
    for (target, snapshot) in prepared.targets.iter().zip(&snapshots) {
        // A single-platform image takes the unqualified annotations only, as BuildKit's.
        let platform = has_index.then_some(&target.platform);
        let annotated = Annotated {
            document: options.annotations.manifest(platform),
            descriptor: options.annotations.manifest_descriptor(platform),
        };
        images.push(write_image(
            store,
            &target.config,
            &options.labels,
            snapshot,
            &annotated,
        )?);
    }
    let mut provenance = Vec::new();
    let index = if !options.attestations.is_empty() {
        progress.event(BuildEvent::Phase {
            what: "writing attestations".to_string(),
        });
        // Blocks this task, as writing the images above does (an SBOM reads the image's root
        // filesystem).
        let annotated = Annotated {
            document: options.annotations.index(),
            descriptor: options.annotations.index_descriptor(),
        };
        let attached = attestations::attach(
            store, options, prepared, solved, &images, started, &annotated,
        )
        .map_err(|err| BuildError::Attestations(Box::new(err)))?;
        provenance = attached.provenances;
        Some(attached.index)
    } else if has_index {
        let manifests: Vec<_> = images
            .iter()
            .zip(&prepared.targets)
            .map(|(image, target)| (image.manifest_descriptor.clone(), target.platform.clone()))
            .collect();
        let annotated = Annotated {
            document: options.annotations.index(),
            descriptor: options.annotations.index_descriptor(),
        };
        Some(
            store
                .write_index_annotated(&manifests, &annotated)
                .map_err(BuildError::Write)?,
        )
    } else {
        None
    };
    let descriptor = match &index {
        Some(index) => index.descriptor.clone(),
        None => images[0].manifest_descriptor.clone(),
    };
    let mut names = Vec::new();
    for tag in &options.tags {
        let tagged = store
            .tag(tag, &descriptor)
            .map_err(|source| BuildError::Tag {
                name: tag.clone(),
                source,
            })?;
        names.push(tagged.familiar());
    }
    // Read again, with the names just given.
    let images = images
        .iter()
        .zip(&prepared.targets)
        .map(|(image, target)| match &index {
            Some(index) => store.image_in_index(
                &index.descriptor,
                &attestations::index_platform(options, image, &target.platform),
            ),
            None => store.image(&image.manifest_descriptor),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(BuildError::Write)?;
    let index = match index {
        Some(index) => Some(
            store
                .image_index(&index.descriptor)
                .map_err(BuildError::Write)?,
        ),
        None => None,
    };
    Ok(Written {
        images,
        index,
        names,
        provenance,
    })
}

/// Exports the build's cache records to each `--cache-to` destination (a
/// [`BuildEvent::CacheExported`] each), with the content of the cache mounts its RUN steps use
/// where the export asks for it (a cache mount that cannot be read is a warning).
async fn export_cache(
    store: &Store,
    options: &BuildOptions,
    prepared: &Prepared,
    solved: &Solved,
    progress: &dyn Progress,
) -> Result<Vec<(String, Digest, u64)>, BuildError> {
    let mut manifests = Vec::new();
    // The cache mounts' blobs are written once, for every export that carries them.
    let cache_mounts = if options.cache_to.iter().any(|e| e.cache_mounts) {
        let ids = remote_cache::cache_mount_ids(&prepared.graph, &solved.keys);
        let (imported, store) = (prepared.worker.imported.clone(), store.clone());
        let collected = off_runtime(move || {
            cache_mounts::collect(&store, &imported, &ids, &crate::oci::Platform::host())
        })
        .await?;
        for message in collected.warnings {
            progress.event(BuildEvent::Warning {
                step: None,
                message,
            });
        }
        collected.mounts
    } else {
        Vec::new()
    };
    for export in &options.cache_to {
        let (worker, graph, keys, store) = (
            prepared.worker.clone(),
            prepared.graph.clone(),
            solved.keys.clone(),
            store.clone(),
        );
        let (targets, mode, transport, compression) = (
            prepared.target_nodes(),
            export.mode,
            export.transport.clone(),
            export.compression,
        );
        let mounts = if export.cache_mounts {
            cache_mounts.clone()
        } else {
            Vec::new()
        };
        let report = off_runtime(move || {
            let mut cache = remote_cache::cache_graph(&worker, &graph, &keys, &targets, mode);
            cache.cache_mounts = mounts;
            crate::cache::remote::export(
                &cache,
                &store,
                &worker.imported,
                transport.as_ref(),
                &compression,
            )
        })
        .await?
        .map_err(|err| BuildError::CacheExport {
            destination: export.transport.describe(),
            source: Box::new(err),
        })?;
        progress.event(BuildEvent::CacheExported {
            destination: export.transport.describe(),
            records: report.records,
            blobs: report.pushed,
        });
        manifests.push(report.manifest);
    }
    Ok(manifests)
}

/// Runs `work` on tokio's blocking pool. The shared cache's transports block (a registry
/// transport drives its own runtime, which cannot be entered from inside an async task), and
/// looking records up may ask the cache whether it holds a blob.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BuildError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(BuildError::SharedCacheTask)
}

/// Where a build's images come from: the store, then their registries; or, in a dry run, the
/// store when it has them and stand-ins when it does not.
struct Sources<'a> {
    /// Read for the images it has.
    store: Option<&'a Store>,
    /// Whether what the store lacks is fetched into it (a build), or stood in for (a dry run).
    fetch: bool,
    /// The names of images standing in for ones a dry run does not pull or make.
    stand_ins: BTreeSet<String>,
    /// The images standing in for the named contexts a dry run does not make, by the name
    /// the front end looks them up by (for whatever platform it wants them).
    context_stand_ins: BTreeMap<String, StoredImage>,
}

/// Plans the build for `platform` (`None`: the implicit target, the host), looks its external
/// images up (those `images` lacks; each found is added), and plans again with their ENV and
/// ONBUILD triggers when any has some (the resolver needs them to expand words and run the
/// triggers). `named_images` are the images the named contexts give, by context name.
async fn plan_with_images(
    sources: &mut Sources<'_>,
    options: &BuildOptions,
    build_args: &BTreeMap<String, String>,
    platform: Option<&Platform>,
    named_images: &BTreeMap<String, String>,
    images: &mut BTreeMap<ImageKey, StoredImage>,
    progress: &dyn Progress,
) -> Result<Plan, BuildError> {
    let mut plan_options = plan_options(options, build_args, platform, named_images);
    // The images the needed stages use, and only those (a stage the target does not need is
    // never looked up or pulled, as in BuildKit). Their ENV and ONBUILD triggers shape how the
    // stages resolve and so which are needed: look up, add their configs, ask again, until
    // nothing new is named. Each round names at least one new image, so the rounds are bounded.
    let mut every_base_looked_up = false;
    loop {
        for (name, image) in images.iter() {
            if plan_options.resolve.base_images.contains_key(name) {
                continue;
            }
            plan_options
                .resolve
                .base_images
                .insert(name.clone(), base_image(image));
        }
        let wanted = match needed_images(&options.dockerfile, &plan_options) {
            Ok(names) => names,
            // Some stage resolves only with its base's config (a COPY of an ENV the base
            // sets): look up every FROM image, then plan; an error left is the plan's to report.
            Err(_) if !every_base_looked_up => {
                every_base_looked_up = true;
                base_image_names(&options.dockerfile, &plan_options)?
            }
            Err(_) => break,
        };
        let missing: Vec<ImageKey> = wanted
            .into_iter()
            .filter(|name| !images.contains_key(name))
            .collect();
        let known = images.len();
        lookup_images(sources, options, progress, &missing, images).await?;
        if images.len() == known {
            // Nothing new was found (none missing, or only names that are not references,
            // which the compiler reports where they are written).
            break;
        }
    }
    let plan = match plan(&options.dockerfile, &plan_options) {
        // Without a context the plan is given an empty path, which opens only when a needed
        // instruction reads the context: say that, rather than that "" cannot be opened.
        Err(PlanError::Context(ContextError::Open { .. })) if options.context_dir.is_none() => {
            return Err(BuildError::NoContext);
        }
        planned => planned?,
    };
    // What the plan names that the rounds above did not reach (they stop at a stage that does
    // not resolve, which the plan then reports, or at a name that is not a reference).
    lookup_images(sources, options, progress, &plan.image_keys, images).await?;
    Ok(plan)
}

/// Finds each named image, for its platform, in the store, pulling it from its registry when
/// missing (or always, with [`crate::registry::PullPolicy::Always`]). A name that is not a
/// reference is left out: the compiler reports it at the line that names it.
async fn lookup_images(
    sources: &mut Sources<'_>,
    options: &BuildOptions,
    progress: &dyn Progress,
    keys: &[ImageKey],
    images: &mut BTreeMap<ImageKey, StoredImage>,
) -> Result<(), BuildError> {
    use crate::registry::{Client, PullPolicy, pull};
    let mut client: Option<Client> = None;
    for key in keys {
        if images.contains_key(key) {
            continue;
        }
        let (name, platform) = (&key.name, &key.platform);
        // A named context a dry run did not make: its stand-in, whatever the platform.
        if let Some(image) = sources.context_stand_ins.get(name) {
            sources.stand_ins.insert(name.clone());
            images.insert(key.clone(), image.clone());
            continue;
        }
        // A stored image of one platform serves any (BuildKit uses a single-platform base as
        // it is, and only warns); an index, the platform's image in it.
        let found = sources
            .store
            .map(|store| store.resolve_for_build(name, platform));
        let missing_platform = match &found {
            Some(Err(err @ StoreError::NoPlatform { .. })) => Some(err.to_string()),
            _ => None,
        };
        let local = found.and_then(Result::ok);
        // An image ID (a named local context's image) is never pulled.
        let is_id = name
            .strip_prefix("sha256:")
            .is_some_and(|hex| hex.len() == 64);
        if (options.pull == PullPolicy::Missing || is_id)
            && let Some(image) = local
        {
            images.insert(key.clone(), image);
            continue;
        }
        let Ok(reference) = crate::oci::reference::Reference::parse_normalized(name) else {
            continue;
        };
        let (Some(store), true) = (sources.store, sources.fetch) else {
            // A dry run: the store's copy when it has one (even under --pull), else a
            // stand-in; either way the build would pull it.
            sources.stand_ins.insert(name.clone());
            let image = local.unwrap_or_else(|| check::stand_in(None, platform));
            images.insert(key.clone(), image);
            continue;
        };
        let failed = |source| BuildError::Pull {
            name: name.clone(),
            source: Box::new(source),
        };
        // One client for every pull of the build: its tokens and connections carry over.
        let client = match &client {
            Some(client) => client,
            None => client.insert(Client::new(options.registry.clone()).map_err(failed)?),
        };
        progress.event(BuildEvent::Phase {
            what: format!("pulling {reference} for {platform}"),
        });
        let downloads = CountDownloads::default();
        let image = pull(client, store, &reference, platform, &downloads)
            .await
            .map_err(|source| match &missing_platform {
                Some(local) => BuildError::PullPlatform {
                    local: local.clone(),
                    source: Box::new(source),
                },
                None => failed(source),
            })?;
        progress.event(BuildEvent::ImagePulled {
            reference: reference.to_string(),
            digest: image.manifest_digest.to_string(),
            downloaded: downloads.0.load(std::sync::atomic::Ordering::Relaxed),
        });
        images.insert(key.clone(), image);
    }
    Ok(())
}

/// Counts the blobs a pull downloaded (the rest the store had).
#[derive(Default)]
struct CountDownloads(std::sync::atomic::AtomicUsize);

impl crate::registry::TransferProgress for CountDownloads {
    fn blob(&self, _digest: &crate::oci::Digest, event: crate::registry::BlobEvent) {
        if let crate::registry::BlobEvent::Finished(crate::registry::BlobStatus::Downloaded) = event
        {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The front end's options for planning `options` with `build_args` for `platform` (`None`:
/// the host), the named contexts' images by name.
fn plan_options(
    options: &BuildOptions,
    build_args: &BTreeMap<String, String>,
    platform: Option<&Platform>,
    named_images: &BTreeMap<String, String>,
) -> PlanOptions {
    PlanOptions {
        context_dir: options.context_dir.clone().unwrap_or_default(),
        dockerfile_path: options.dockerfile_path.clone(),
        context_kind: match options.remote_context {
            Some(_) => ContextKind::Unpacked,
            None => ContextKind::Directory,
        },
        target: options.target.clone(),
        resolve: ResolveOptions {
            build_args: build_args.clone(),
            target: options.target.clone(),
            target_platform: platform.cloned(),
            named_images: named_images.clone(),
            ..ResolveOptions::default()
        },
    }
}

/// What the front end needs of a base image: its ENV and its ONBUILD triggers.
fn base_image(image: &StoredImage) -> BaseImage {
    let config = image.config.config().clone().unwrap_or_default();
    BaseImage {
        env: env_pairs(config.env().as_deref().unwrap_or_default()),
        onbuild: onbuild_triggers(&image.config_bytes),
    }
}

/// `--check` (buildx's `--call check`): the build checks of `options`' Dockerfile for its first
/// platform, with the configs of the base images the store already has (their ENV defines
/// variables); nothing is pulled, run or walked.
pub fn lint(store: Option<&Store>, options: &BuildOptions) -> lint::LintOutcome {
    let mut plan_options = plan_options(
        options,
        &options.build_args,
        options.platforms.first(),
        &BTreeMap::new(),
    );
    if let Some(store) = store
        && let Ok(keys) = base_image_names(&options.dockerfile, &plan_options)
    {
        for key in keys {
            if let Ok(image) = store.resolve_for_build(&key.name, &key.platform) {
                let base = base_image(&image);
                plan_options.resolve.base_images.insert(key, base);
            }
        }
    }
    lint::check(&options.dockerfile, &plan_options)
}

/// The `config.OnBuild` triggers of an image config document (docker's extension, not in the
/// OCI config type).
fn onbuild_triggers(config_bytes: &[u8]) -> Vec<String> {
    let document: Value = serde_json::from_slice(config_bytes).unwrap_or_default();
    document
        .pointer("/config/OnBuild")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes the image config (BuildKit's document: the base's fields, the built config, rootfs,
/// history) and manifest for the target's layers.
fn write_image(
    store: &Store,
    config: &ImageConfig,
    labels: &BTreeMap<String, String>,
    snapshot: &Snapshot,
    annotated: &Annotated,
) -> Result<StoredImage, BuildError> {
    let ImageConfig {
        document,
        history,
        author,
        source_date_epoch,
    } = config;
    let mut document = document.clone();
    let epoch = source_date_epoch.map(|t| t.seconds);
    let times = remote_cache::image_times(snapshot, history, epoch);
    // The epoch's times in its own zone (a git commit's), as BuildKit writes them.
    let format = |seconds: i64| match source_date_epoch {
        Some(time) if time.seconds == seconds => time.to_rfc3339(),
        _ => format_rfc3339(seconds),
    };
    let created = format(times.created);
    let mut entry_times = times.history.into_iter();
    if !labels.is_empty()
        && let Some(Value::Object(config)) = document.get_mut("config")
    {
        let mut all = match config.remove("Labels") {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        for (key, value) in labels {
            all.insert(key.clone(), json!(value));
        }
        config.insert("Labels".into(), Value::Object(all));
    }
    let mut added = snapshot.added.iter();
    let entries: Vec<Value> = history
        .iter()
        .map(|entry| (entry, entry_times.next().flatten().map(format)))
        .map(|(entry, created)| match entry {
            HistoryEntry::Base(value) => value.clone(),
            HistoryEntry::Metadata(line) => json!({
                "created": created,
                "created_by": line,
                "comment": "buildkit.dockerfile.v0",
                "empty_layer": true,
            }),
            HistoryEntry::Layer(line) => {
                let mut value = json!({
                    "created": created,
                    "created_by": line,
                    "comment": "buildkit.dockerfile.v0",
                });
                if !added.next().copied().unwrap_or(false)
                    && let Value::Object(map) = &mut value
                {
                    map.insert("empty_layer".into(), json!(true));
                }
                value
            }
        })
        .collect();
    if let Some(author) = author {
        document.insert("author".into(), json!(author));
    }
    document.insert("created".into(), json!(created));
    document.insert("history".into(), Value::Array(entries));
    let diff_ids: Vec<String> = snapshot
        .layers
        .iter()
        .map(|l| l.diff_id.to_string())
        .collect();
    document.insert(
        "rootfs".into(),
        json!({ "type": "layers", "diff_ids": diff_ids }),
    );
    let bytes = serde_json::to_vec(&document).map_err(BuildError::ImageConfig)?;
    let layers: Vec<_> = snapshot
        .layers
        .iter()
        .map(|l| descriptor(l.info().media_type, &l.digest, l.size))
        .collect();
    store
        .write_image_annotated(&bytes, &layers, annotated)
        .map_err(BuildError::Write)
}

/// Whether the build writes an image index (a multi-platform build, or one with attestations),
/// which index annotations need.
fn writes_index(options: &BuildOptions) -> bool {
    // Attestations make an index of a single-platform image too, as BuildKit's exporter does.
    options.platforms.len() > 1 || !options.attestations.is_empty()
}
