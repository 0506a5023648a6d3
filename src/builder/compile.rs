//! The ops graph: a [`Plan`]'s stages compiled into filesystem ops, BuildKit's LLB in small.
//!
//! Only instructions that change the filesystem become ops: a stage's base (`scratch`, an image
//! of the store, or another stage's last op), RUN, COPY/ADD and WORKDIR's `mkdir`. Metadata
//! instructions (ENV, CMD, LABEL, USER, ...) change the image config ([`ConfigBuilder`]) and
//! flow into the ops that depend on them (a RUN's env, user and working directory are part of
//! its definition), as in BuildKit. An op's identity is the digest of its canonical JSON
//! definition; the graph merges identical ops with identical inputs, so two stages that start
//! with the same steps share them.
//!
//! A multi-platform build compiles one plan per target platform into the same graph: every op
//! names the platform it is for (its source's, which it runs on and is keyed by), so what two
//! targets do identically (a `FROM --platform=$BUILDPLATFORM` stage that does not read
//! `TARGETARCH`) is one node, solved once, as in BuildKit, where each platform is its own LLB
//! graph and the solver merges identical vertices.

use crate::frontend::context::SourceMatch;
use crate::frontend::dag::StageId;
use crate::frontend::diagnostic::Span;
use crate::frontend::dispatch::{ConfigBuilder, clean_path, env_key, env_pairs};
use crate::frontend::instruction::{
    Add, Command, Copy, InlineFile, Instruction, MountType, Network, Run, Sharing,
};
use crate::frontend::plan::Plan;
use crate::frontend::stage::{Base, DEFAULT_PATH, ImageKey, Stage};
use crate::git::GitSource;
use crate::oci::{Digest, Platform};
use crate::solver::{Graph, NodeId, OpDigest};
use crate::store::StoredImage;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// One filesystem op of a build.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BuildOp {
    /// The empty filesystem, of a stage for `platform`.
    Scratch { platform: Platform },
    /// The layers of an image in the store, wanted for `platform`. The manifest digest is part
    /// of the identity, so a base image that changed under the same name gives new cache keys
    /// (moby CVE-2024-24557).
    Image {
        name: String,
        manifest: Digest,
        platform: Platform,
    },
    /// RUN; input 0 is the filesystem it runs on.
    Run(RunOp),
    /// COPY/ADD; input 0 is the filesystem written to, input 1 (with `--from`) the one read.
    Copy(CopyOp),
    /// WORKDIR's `mkdir -p`; input 0 is the filesystem.
    Mkdir(MkdirOp),
    /// `COPY --link` (BuildKit's `llb.Merge`): input 0's layers with input 1's (a linked copy,
    /// made on the empty filesystem) stacked on top. No file is read or written.
    Merge,
}

impl OpDigest for BuildOp {
    fn digest(&self) -> Digest {
        // serde_json writes struct fields in declaration order and maps sorted (BTreeMap), so
        // the same op always gives the same bytes.
        Digest::of(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// How a RUN step runs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunOp {
    /// The argv, a shell-form command already wrapped in the stage's shell.
    pub args: Vec<String>,
    /// `KEY=VALUE`: the config's Env, then the ARGs in scope, then proxy build args.
    pub env: Vec<String>,
    pub cwd: String,
    /// The USER in effect (`""` is root), resolved in the image when the step runs.
    pub user: String,
    /// `none` or `host`.
    pub network: String,
    /// `RUN --mount`s in the order written, then the heredoc script's (BuildKit mounts a `#!`
    /// heredoc at `/dev/pipes/`). Left out of the definition when empty, so the digests of RUN
    /// ops without mounts are those of kiln versions before mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<RunMount>,
    /// `RUN --security=insecure`: all capabilities, no seccomp (needs `--allow security.insecure`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// The platform the command runs on (natively, or under the emulator binfmt_misc has for
    /// it), normalised.
    pub platform: Platform,
}

/// Where a bind or cache mount reads its content.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MountInput {
    /// The build context (a bind mount without `from=`).
    Context,
    /// The filesystem of the op's input with this index (`from=stage` or `from=image`; input 0
    /// is the filesystem the command runs on).
    Input(usize),
}

/// One mount of a RUN op, as BuildKit's `dispatchRunMounts` makes it: targets absolute (a
/// relative one is joined to the working directory), ids and defaults filled in. What is part of
/// the op's identity is what BuildKit puts in the exec op: never a secret's value, and never a
/// cache mount's content.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunMount {
    /// `type=bind`: `source` (a path in `from`, `/` by default) at `target`. Writes (`rw`) are
    /// discarded after the step.
    Bind {
        target: String,
        source: String,
        from: MountInput,
        readwrite: bool,
        /// For [`MountInput::Context`]: the context paths the mount reads, sorted; their content
        /// goes into the step's cache key, as COPY's do.
        #[serde(skip)]
        context_paths: Vec<String>,
    },
    /// `type=cache`: a directory of the store kept between builds, by `id` (default: the
    /// target). Created from `source` of `from` (empty by default), with `mode`/`uid`/`gid`.
    Cache {
        target: String,
        id: String,
        sharing: Sharing,
        readonly: bool,
        from: Option<MountInput>,
        source: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// `type=tmpfs`.
    Tmpfs { target: String, size: Option<u64> },
    /// `type=secret`: the secret `id` as a file at `target` (none: only `env`) and/or as the
    /// environment variable `env`.
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// `type=ssh`: the agent socket of the build's `--ssh` `id` at `target`.
    Ssh {
        id: String,
        target: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A `#!` heredoc (`RUN <<EOF`): the file `name` (mode 0755) alone in a read-only directory
    /// at `target`.
    Script {
        target: String,
        name: String,
        content: String,
    },
}

impl RunMount {
    /// Where the mount appears in the sandbox (`None`: a secret given only as a variable).
    pub fn target(&self) -> Option<&str> {
        match self {
            RunMount::Bind { target, .. }
            | RunMount::Cache { target, .. }
            | RunMount::Tmpfs { target, .. }
            | RunMount::Ssh { target, .. }
            | RunMount::Script { target, .. } => Some(target),
            RunMount::Secret { target, .. } => target.as_deref(),
        }
    }
}

/// Where a COPY/ADD reads.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CopyFrom {
    /// The build context. Which files, and their content, go into the cache key when the step
    /// runs, not into the op's identity.
    Context,
    /// The filesystem of input 1 (`--from=stage` or `--from=image`).
    Input,
    /// `ADD <url>`: the downloads of [`CopyOp::urls`], each a file alone in its own filesystem
    /// (BuildKit's `llb.HTTP` source). What they hold goes into the cache key when the step
    /// runs.
    Url,
    /// `ADD <git ref>`: the checkouts of [`CopyOp::git`], each copied whole onto the
    /// destination (BuildKit's `llb.Git` source copied from `/`). The commit each ref names
    /// goes into the cache key when the step runs.
    Git,
}

/// One `ADD <url>` source.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UrlSource {
    /// The URL as parsed (normalized).
    pub url: String,
    /// The downloaded file's name: the last segment of the URL's path ([`crate::fetch::file_name`]).
    pub name: String,
    /// `ADD --checksum`: the content's pinned digest.
    pub checksum: Option<Digest>,
}

/// COPY or ADD.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CopyOp {
    pub from: CopyFrom,
    pub sources: Vec<String>,
    pub inline: Vec<InlineFile>,
    pub dest: String,
    pub workdir: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    /// ADD: local archives are unpacked.
    pub add: bool,
    pub exclude: Vec<String>,
    /// `COPY --parents`: sources keep their paths below their root. Left out of the op's
    /// serialization when false, so the digests of other copies stay as they were.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub parents: bool,
    /// `COPY --link` (without `--chmod`, as in BuildKit): the copy is made on the empty
    /// filesystem and has no input 0; with `--from`, input 0 is the one read. A
    /// [`BuildOp::Merge`] stacks its layer on the stage. Serialized only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub link: bool,
    /// For [`CopyFrom::Context`]: every context path the sources read, sorted.
    #[serde(skip)]
    pub context_paths: Vec<String>,
    /// For [`CopyFrom::Url`]: the URLs, in the order written. Left out of the definition when
    /// empty, so other COPY ops keep the digests of kiln versions before it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<UrlSource>,
    /// The platform of the stage copied into, normalised (a linked copy has no input of the
    /// stage to carry it).
    pub platform: Platform,
    /// For [`CopyFrom::Git`]: the repositories, in the order written (their credentials are
    /// not serialized). Left out of the definition when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub git: Vec<GitSource>,
}

/// WORKDIR's directory.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MkdirOp {
    pub path: String,
    /// The USER in effect: BuildKit creates the directory owned by it.
    pub user: String,
    /// The platform of the stage, normalised.
    pub platform: Platform,
}

/// A step as the user sees it: the instruction that made a node.
#[derive(Debug, Clone)]
pub struct Step {
    /// `[build 2/4] RUN make`.
    pub name: String,
    pub span: Option<Span>,
    /// The stage the instruction is in.
    pub stage: StageId,
    /// Stable across builds of the same Dockerfile: where `--explain-cache` finds what this
    /// step's key was last time.
    pub position: String,
}

/// One entry of the image history, as BuildKit writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryEntry {
    /// Copied from the base image's config.
    Base(Value),
    /// A metadata instruction: never a layer.
    Metadata(String),
    /// A filesystem op: a layer unless its diff was empty.
    Layer(String),
}

/// A stage's image history, shared with the stage it is built FROM: a child stage starts as a
/// clone of its parent's state, and copying the whole history made a chain of n stages cost
/// n²/2 entries (a 16,000-stage chain took 8 GiB and 25 s to plan).
#[derive(Clone, Default)]
struct History {
    last: Option<Arc<HistoryLink>>,
    len: usize,
}

struct HistoryLink {
    entry: HistoryEntry,
    before: Option<Arc<HistoryLink>>,
}

impl History {
    fn from_entries(entries: Vec<HistoryEntry>) -> History {
        let mut history = History::default();
        for entry in entries {
            history.push(entry);
        }
        history
    }

    fn push(&mut self, entry: HistoryEntry) {
        let before = self.last.take();
        self.last = Some(Arc::new(HistoryLink { entry, before }));
        self.len += 1;
    }

    /// The entries, oldest first.
    fn to_vec(&self) -> Vec<HistoryEntry> {
        let mut entries = Vec::with_capacity(self.len);
        let mut link = self.last.as_deref();
        while let Some(current) = link {
            entries.push(current.entry.clone());
            link = current.before.as_deref();
        }
        entries.reverse();
        entries
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("len", &self.len).finish()
    }
}

impl Drop for HistoryLink {
    /// Unlinks the chain in a loop: dropping a long chain recursively would overflow the stack.
    fn drop(&mut self) {
        let mut next = self.before.take();
        while let Some(link) = next {
            match Arc::try_unwrap(link) {
                Ok(mut unique) => next = unique.before.take(),
                // Still shared by another stage's history: that one drops the rest.
                Err(_) => break,
            }
        }
    }
}

/// What a stage ends with.
#[derive(Debug, Clone)]
struct StageState {
    node: NodeId,
    config: ConfigBuilder,
    /// The base image's config document without `config`, `rootfs` and `history`
    /// (`architecture`, `os`, ...).
    document: Map<String, Value>,
    history: History,
    /// ENV and ARG values RUN steps see, in order (later entries win).
    vars: Vec<(String, String)>,
}

/// A compiled build: the graph, a [`Step`] per node, and how to write each target's image.
#[derive(Debug)]
pub struct Compiled {
    pub graph: Graph<BuildOp>,
    /// Indexed by node.
    pub steps: Vec<Step>,
    /// One per plan compiled, in order.
    pub targets: Vec<CompiledTarget>,
    /// Nodes whose cache is skipped (`--no-cache`, `--no-cache-filter`).
    pub no_cache: Vec<NodeId>,
    /// What the build should know but that does not stop it (BuildKit's lint warnings), each
    /// with the step it is about.
    pub warnings: Vec<(NodeId, String)>,
}

/// What one plan's target stage became.
#[derive(Debug)]
pub struct CompiledTarget {
    /// The platform the plan is for (its `TARGETPLATFORM`, normalised).
    pub platform: Platform,
    pub node: NodeId,
    /// The target stage's image config document (`config` included, `rootfs` and `history`
    /// not).
    pub document: Map<String, Value>,
    pub history: Vec<HistoryEntry>,
    /// The BuildKit image `author` when a MAINTAINER set it.
    pub author: Option<String>,
}

/// Why a plan cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{message}")]
    Unsupported { message: String, span: Span },
    #[error("{source}")]
    Config {
        source: crate::frontend::dispatch::ConfigError,
        span: Span,
    },
    #[error("image \"{name}\" is not in the store")]
    MissingImage { name: String, span: Span },
    #[error("COPY --from={from}: no stage or image by that name")]
    BadFrom { from: String, span: Span },
    #[error("RUN --mount from={from}: no earlier stage or image by that name")]
    BadMountFrom { from: String, span: Span },
    #[error(
        "{entitlement} is not allowed: {what} needs the {entitlement} entitlement \
         (--allow {entitlement})"
    )]
    Entitlement {
        what: String,
        entitlement: &'static str,
        span: Span,
    },
    /// An `ADD <git ref>` that cannot be used as written (BuildKit's messages).
    #[error("{message}")]
    GitSource { message: String, span: Span },
}

impl CompileError {
    /// Where in the Dockerfile.
    pub fn span(&self) -> Span {
        match self {
            CompileError::Unsupported { span, .. }
            | CompileError::Config { span, .. }
            | CompileError::MissingImage { span, .. }
            | CompileError::BadFrom { span, .. }
            | CompileError::BadMountFrom { span, .. }
            | CompileError::Entitlement { span, .. }
            | CompileError::GitSource { span, .. } => *span,
        }
    }

    /// What the user can do.
    pub fn help(&self) -> Option<String> {
        match self {
            CompileError::MissingImage { .. } => Some(
                "give a valid image reference (`[registry/]name[:tag][@digest]`) to pull it, \
                 or bring the image in with `kiln load` or `kiln import`"
                    .to_string(),
            ),
            CompileError::Entitlement { entitlement, .. } => {
                Some(format!("build with --allow {entitlement} to allow it"))
            }
            _ => None,
        }
    }
}

/// What the compiler needs besides the plan.
pub struct CompileOptions<'a> {
    /// The external images the plans use (FROM, COPY --from), by name as written and the
    /// platform each is wanted for.
    pub images: &'a BTreeMap<ImageKey, StoredImage>,
    /// `--network` for RUN steps that do not set one.
    pub network: crate::runtime::NetworkMode,
    pub no_cache: bool,
    /// `--no-cache-filter`: stage names (lower case) whose steps skip the cache.
    pub no_cache_filter: &'a [String],
    /// Identifies this Dockerfile in step positions (its path, or `-`).
    pub dockerfile_name: &'a str,
    /// `--allow security.insecure`: `RUN --security=insecure` may run.
    pub allow_insecure: bool,
    /// `--allow network.host`: RUN steps may use the host's network.
    pub allow_network_host: bool,
    /// `--platform` was given: each target image says its plan's platform (BuildKit's explicit
    /// target; without it, the image says what its base says).
    pub explicit_platform: bool,
    /// More than one platform is built: step names start with the platform, as BuildKit's
    /// (`[linux/arm64 build 2/3] RUN make`).
    pub multi_platform: bool,
}

/// Compiles the needed stages of each plan (one per target platform) into one graph.
pub fn compile(plans: &[Plan], options: &CompileOptions<'_>) -> Result<Compiled, CompileError> {
    let Some(first) = plans.first() else {
        return Err(CompileError::Unsupported {
            message: "internal error: nothing to compile".to_string(),
            span: Span::line(1),
        });
    };
    let mut compiler = Compiler {
        plan: first,
        options,
        graph: Graph::new(),
        steps: BTreeMap::new(),
        no_cache: BTreeSet::new(),
        stages: BTreeMap::new(),
        warnings: Vec::new(),
    };
    let mut targets = Vec::new();
    for plan in plans {
        compiler.plan = plan;
        compiler.stages.clear();
        for &stage_id in &plan.order {
            if let Some(stage) = plan.resolved.stages.get(stage_id) {
                let state = compiler.stage(stage)?;
                compiler.stages.insert(stage_id, state);
            }
        }
        let Some(target) = compiler.stages.remove(&plan.target) else {
            return Err(CompileError::Unsupported {
                message: "the target stage was not compiled".to_string(),
                span: Span::line(1),
            });
        };
        let platform = plan.resolved.target_platform.clone();
        let mut document = target.document;
        set_image_platform(
            &mut document,
            options.explicit_platform.then_some(&platform),
        );
        let author = target.config.author().map(str::to_string);
        document.insert("config".into(), Value::Object(target.config.into_config()));
        targets.push(CompiledTarget {
            platform,
            node: target.node,
            document,
            history: target.history.to_vec(),
            author,
        });
    }
    let steps = (0..compiler.graph.len())
        .map(|node| {
            compiler.steps.remove(&node).unwrap_or_else(|| Step {
                name: format!("step {node}"),
                span: None,
                stage: first.target,
                position: format!("{}#node{node}", options.dockerfile_name),
            })
        })
        .collect();
    let no_cache = downstream_of_reruns(&compiler.graph, compiler.no_cache);
    Ok(Compiled {
        graph: compiler.graph,
        steps,
        targets,
        no_cache: no_cache.into_iter().collect(),
        warnings: compiler.warnings,
    })
}

/// The platform fields of an image config, as BuildKit's dispatchStages ends: with an explicit
/// target, the OS and architecture are the target's, and so is the variant when the target has
/// one or the architecture changed (else the base's stays); then the fields are normalised
/// (`arm64/v8` says no variant).
fn set_image_platform(document: &mut Map<String, Value>, explicit: Option<&Platform>) {
    let field = |document: &Map<String, Value>, key: &str| {
        document
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (mut os, mut architecture, mut variant) = (
        field(document, "os"),
        field(document, "architecture"),
        field(document, "variant"),
    );
    if let Some(target) = explicit {
        let same_os_arch = target.os == os && target.architecture == architecture;
        os.clone_from(&target.os);
        architecture.clone_from(&target.architecture);
        if target.variant.is_some() || !same_os_arch {
            variant = target.variant_or_empty().to_string();
        }
    }
    let normalized = Platform::new(&os, &architecture, Some(&variant)).normalized();
    if !os.is_empty() {
        document.insert("os".into(), normalized.os.into());
    }
    if !architecture.is_empty() {
        document.insert("architecture".into(), normalized.architecture.into());
    }
    match normalized.variant {
        Some(variant) if !architecture.is_empty() => {
            document.insert("variant".into(), variant.into());
        }
        _ => {
            document.remove("variant");
        }
    }
}

struct Compiler<'a> {
    /// The plan being compiled (one per target platform, in turn).
    plan: &'a Plan,
    options: &'a CompileOptions<'a>,
    graph: Graph<BuildOp>,
    steps: BTreeMap<NodeId, Step>,
    no_cache: BTreeSet<NodeId>,
    /// The compiled stages of the plan being compiled.
    stages: BTreeMap<StageId, StageState>,
    warnings: Vec<(NodeId, String)>,
}

/// Counts a stage's numbered steps for BuildKit's `[name i/n]` prefixes.
struct Numbering {
    /// In a multi-platform build, the platform of the next step and a space
    /// (`linux/amd64->arm64 `, see [`platform_prefix`]); else empty.
    platform: String,
    prefix: String,
    index: usize,
    total: usize,
}

impl Numbering {
    fn next(&mut self, text: &str) -> String {
        self.index += 1;
        let width = self.total.to_string().len();
        format!(
            "[{}{}{:>width$}/{}] {text}",
            self.platform, self.prefix, self.index, self.total
        )
    }
}

/// BuildKit's `prefixCommand` platform part: the stage's platform, and, when the step's
/// variables say it builds for another architecture (`TARGETPLATFORM`, else `TARGETOS`,
/// `TARGETARCH`, `TARGETVARIANT` declared in the stage), `->` and that one
/// (`formatTargetPlatform`): `linux/amd64->arm64 `.
fn platform_prefix(platform: &Platform, vars: &[(String, String)]) -> String {
    let var = |key: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let target = match var("TARGETPLATFORM").map(Platform::parse) {
        Some(Ok(parsed)) => Some(parsed),
        _ => {
            let (os, arch, variant) = (var("TARGETOS"), var("TARGETARCH"), var("TARGETVARIANT"));
            (os.is_some() || arch.is_some() || variant.is_some()).then(|| {
                Platform::new(
                    os.filter(|o| !o.is_empty()).unwrap_or(&platform.os),
                    arch.filter(|a| !a.is_empty())
                        .unwrap_or(&platform.architecture),
                    variant,
                )
            })
        }
    };
    let arrow = match target.map(|t| t.normalized()) {
        Some(t) if t.os == platform.os && t.architecture != platform.architecture => {
            match &t.variant {
                Some(variant) => format!("->{}/{variant}", t.architecture),
                None => format!("->{}", t.architecture),
            }
        }
        Some(t) if t.os != platform.os => format!("->{t}"),
        _ => String::new(),
    };
    format!("{platform}{arrow} ")
}

impl Compiler<'_> {
    fn stage(&mut self, stage: &Stage) -> Result<StageState, CompileError> {
        let steps_in_stage = stage.instructions.iter().filter(|i| makes_op(i)).count() + 1;
        let prefix = match &stage.name {
            Some(name) => format!("{name} "),
            None if self.plan.resolved.stages.len() > 1 => format!("stage-{} ", stage.index),
            None => String::new(),
        };
        let mut numbering = Numbering {
            platform: if self.options.multi_platform {
                platform_prefix(&stage.effective_platform, &[])
            } else {
                String::new()
            },
            prefix,
            index: 0,
            total: steps_in_stage,
        };
        // What the stage's ops say they are for (and are keyed by).
        let platform = stage.effective_platform.normalized();
        let skip_cache = self.options.no_cache
            || stage.name.as_ref().is_some_and(|name| {
                self.options
                    .no_cache_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(name))
            });

        let mut state = match &stage.base {
            Base::Stage(parent) => {
                let Some(parent) = self.stages.get(parent) else {
                    return Err(CompileError::Unsupported {
                        message: format!("stage {parent} was not built before its child"),
                        span: stage.span,
                    });
                };
                let mut state = parent.clone();
                state.config = state.config.for_child_stage();
                // BuildKit numbers a FROM of a stage too, as a step it does not run.
                numbering.next(&format!("FROM {}", stage.base_name));
                state
            }
            Base::Scratch => {
                let name = numbering.next("FROM scratch");
                let node = self.add(
                    BuildOp::Scratch {
                        platform: platform.clone(),
                    },
                    vec![],
                    &stage.span,
                    Some(name),
                    stage,
                    false,
                )?;
                // BuildKit's empty image (dockerfile2llb/image.go `emptyImage`): WorkingDir `/`
                // and the default PATH.
                let mut config = ConfigBuilder::for_dockerfile(Map::from_iter([(
                    "WorkingDir".to_string(),
                    Value::from("/"),
                )]));
                config.set_env("PATH", DEFAULT_PATH);
                // BuildKit's `emptyImage(targetPlatform)`.
                let mut document = Map::new();
                document.insert("architecture".into(), platform.architecture.clone().into());
                document.insert("os".into(), platform.os.clone().into());
                if let Some(variant) = &platform.variant {
                    document.insert("variant".into(), variant.clone().into());
                }
                StageState {
                    node,
                    vars: vec![("PATH".into(), DEFAULT_PATH.into())],
                    config,
                    document,
                    history: History::default(),
                }
            }
            Base::Image(name) => {
                let (node, state) = self.image_state(name, &platform, stage.span, stage)?;
                if let Some(step) = self.steps.get_mut(&node) {
                    step.name = numbering.next(&format!("FROM {name}"));
                }
                state
            }
        };
        if skip_cache {
            self.no_cache.insert(state.node);
        }

        for (index, instruction) in stage.instructions.iter().enumerate() {
            self.instruction(
                stage,
                index,
                instruction,
                &mut state,
                &mut numbering,
                skip_cache,
            )?;
        }
        Ok(state)
    }

    /// The state an image of the store, for `platform`, starts a stage with.
    fn image_state(
        &mut self,
        name: &str,
        platform: &Platform,
        span: Span,
        stage: &Stage,
    ) -> Result<(NodeId, StageState), CompileError> {
        let key = ImageKey::new(name, platform);
        let image = self
            .options
            .images
            .get(&key)
            .ok_or_else(|| CompileError::MissingImage {
                name: name.to_string(),
                span,
            })?;
        let node = self.add(
            BuildOp::Image {
                name: name.to_string(),
                manifest: image.manifest_digest.clone(),
                platform: key.platform.clone(),
            },
            vec![],
            &span,
            Some(format!("FROM {name}")),
            stage,
            false,
        )?;
        let mut document: Map<String, Value> =
            serde_json::from_slice(&image.config_bytes).unwrap_or_default();
        // BuildKit's InvalidBaseImagePlatform lint: a platform was asked for (by `--platform`
        // or FROM `--platform`) and the image is another's (a single-platform image serves any
        // platform, as in BuildKit).
        let asked = self.options.explicit_platform
            || (stage.platform.is_some() && key.platform == stage.effective_platform.normalized());
        let field = |key: &str| document.get(key).and_then(Value::as_str).unwrap_or("");
        let (os, architecture) = (field("os"), field("architecture"));
        if asked
            && !architecture.is_empty()
            && (os != key.platform.os || architecture != key.platform.architecture)
        {
            let actual = Platform::new(os, architecture, Some(field("variant"))).normalized();
            let warning = format!(
                "InvalidBaseImagePlatform: Base image {name} was pulled with platform \
                 \"{actual}\", expected \"{}\" for current build",
                key.platform
            );
            if !self.warnings.iter().any(|(_, w)| w == &warning) {
                self.warnings.push((node, warning));
            }
        }
        let mut config = match document.remove("config") {
            Some(Value::Object(config)) => config,
            _ => Map::new(),
        };
        let history = match document.remove("history") {
            Some(Value::Array(entries)) => {
                History::from_entries(entries.into_iter().map(HistoryEntry::Base).collect())
            }
            _ => History::default(),
        };
        document.remove("rootfs");
        document.remove("created");
        // The base's triggers ran in this stage (the resolver put them first); the new image
        // does not inherit them (docker clears OnBuild after running it).
        config.remove("OnBuild");
        let config = ConfigBuilder::for_dockerfile(config);
        let vars = env_pairs(&config.env());
        Ok((
            node,
            StageState {
                node,
                config,
                document,
                history,
                vars,
            },
        ))
    }

    fn instruction(
        &mut self,
        stage: &Stage,
        index: usize,
        instruction: &Instruction,
        state: &mut StageState,
        numbering: &mut Numbering,
        skip_cache: bool,
    ) -> Result<(), CompileError> {
        let text = instruction.to_string();
        let span = instruction.span();
        if self.options.multi_platform {
            numbering.platform = platform_prefix(&stage.effective_platform, &state.vars);
        }
        match instruction {
            Instruction::Run(run) => {
                let (op, mount_inputs) = self.run_op(run, stage, index, state)?;
                let history = format!("RUN {}", run_history(&op.args, stage, index, &state.vars));
                let name = numbering.next(&text);
                let mut inputs = vec![state.node];
                inputs.extend(mount_inputs);
                let node = self.add(
                    BuildOp::Run(op),
                    inputs,
                    &span,
                    Some(name),
                    stage,
                    skip_cache,
                )?;
                self.position(node, stage, index);
                state.node = node;
                state
                    .history
                    .push(HistoryEntry::Layer(history + " # buildkit"));
            }
            Instruction::Copy(copy) => {
                // BuildKit's dispatchCopy: only ADD fetches (COPY --from reads a stage).
                if copy.from.is_none()
                    && let Some(source) = copy.sources.iter().find(|s| is_git(s) || is_http(s))
                {
                    let what = if is_git(source) { "a git ref" } else { "a URL" };
                    return Err(CompileError::Unsupported {
                        message: format!(
                            "source can't be {what} for COPY: {}; use ADD",
                            crate::git::redact(source)
                        ),
                        span: copy.span,
                    });
                }
                let (op, from) = self.copy_op(copy, false, stage, index, state)?;
                let history = copy_history("COPY", &copy.chown, &copy.chmod, &op);
                let step = if op.link {
                    Self::linked_file_step
                } else {
                    Self::file_step
                };
                step(
                    self,
                    BuildOp::Copy(op),
                    from,
                    history,
                    numbering.next(&text),
                    span,
                    stage,
                    index,
                    state,
                    skip_cache,
                )?;
            }
            Instruction::Add(add) => {
                let (op, from) = self.copy_op_for_add(add, stage, index, state)?;
                let history = copy_history("ADD", &add.chown, &add.chmod, &op);
                let step = if op.link {
                    Self::linked_file_step
                } else {
                    Self::file_step
                };
                step(
                    self,
                    BuildOp::Copy(op),
                    from,
                    history,
                    numbering.next(&text),
                    span,
                    stage,
                    index,
                    state,
                    skip_cache,
                )?;
            }
            Instruction::Workdir(_) => {
                let history = state
                    .config
                    .apply(instruction)
                    .map_err(|source| CompileError::Config { source, span })?
                    .unwrap_or_default();
                // The config keeps an absolute WORKDIR as written (`/tmp/`); the directory made
                // is the cleaned path, as BuildKit's Mkdir file op cleans it.
                let path = clean_path(&state.config.working_dir());
                // BuildKit: WORKDIR / changes nothing on disk and records an empty layer.
                if path == "/" {
                    state.history.push(HistoryEntry::Metadata(history));
                    return Ok(());
                }
                let op = BuildOp::Mkdir(MkdirOp {
                    path,
                    user: state.config.user(),
                    platform: stage.effective_platform.normalized(),
                });
                let name = numbering.next(&text);
                let node = self.add(op, vec![state.node], &span, Some(name), stage, skip_cache)?;
                self.position(node, stage, index);
                state.node = node;
                state.history.push(HistoryEntry::Layer(history));
            }
            Instruction::Arg(arg) => {
                let mut history = Vec::new();
                for decl in &arg.args {
                    match &decl.default {
                        Some(value) => {
                            set_var(&mut state.vars, &decl.name, value);
                            history.push(format!("{}={value}", decl.name));
                        }
                        None => history.push(decl.name.clone()),
                    }
                }
                state
                    .history
                    .push(HistoryEntry::Metadata(format!("ARG {}", history.join(" "))));
            }
            Instruction::Env(env) => {
                for pair in &env.pairs {
                    set_var(&mut state.vars, &pair.key, &pair.value);
                }
                self.metadata(instruction, span, state)?;
            }
            Instruction::From(_) => {}
            _ => self.metadata(instruction, span, state)?,
        }
        Ok(())
    }

    fn metadata(
        &mut self,
        instruction: &Instruction,
        span: Span,
        state: &mut StageState,
    ) -> Result<(), CompileError> {
        let history = state
            .config
            .apply(instruction)
            .map_err(|source| CompileError::Config { source, span })?;
        if let Some(history) = history {
            state.history.push(HistoryEntry::Metadata(history));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn file_step(
        &mut self,
        op: BuildOp,
        from: Option<NodeId>,
        history: String,
        name: String,
        span: Span,
        stage: &Stage,
        index: usize,
        state: &mut StageState,
        skip_cache: bool,
    ) -> Result<(), CompileError> {
        let mut inputs = vec![state.node];
        inputs.extend(from);
        let node = self.add(op, inputs, &span, Some(name), stage, skip_cache)?;
        self.position(node, stage, index);
        state.node = node;
        state.history.push(HistoryEntry::Layer(history));
        Ok(())
    }

    /// [`Self::file_step`] for `COPY --link`: the copy reads only its `--from` (it is made on the
    /// empty filesystem, so its cache key leaves the stage's filesystem out and a changed base
    /// reuses it), and a merge node, named `LINK ...` as BuildKit's, stacks its layer on the
    /// stage's.
    #[allow(clippy::too_many_arguments)]
    fn linked_file_step(
        &mut self,
        op: BuildOp,
        from: Option<NodeId>,
        history: String,
        name: String,
        span: Span,
        stage: &Stage,
        index: usize,
        state: &mut StageState,
        skip_cache: bool,
    ) -> Result<(), CompileError> {
        let merge_name = match name.split_once("] ") {
            Some((number, instruction)) => format!("{number}] LINK {instruction}"),
            None => format!("LINK {name}"),
        };
        let copy = self.add(
            op,
            from.into_iter().collect(),
            &span,
            Some(name),
            stage,
            skip_cache,
        )?;
        self.position(copy, stage, index);
        let node = self.add(
            BuildOp::Merge,
            vec![state.node, copy],
            &span,
            Some(merge_name),
            stage,
            skip_cache,
        )?;
        state.node = node;
        state.history.push(HistoryEntry::Layer(history));
        Ok(())
    }

    /// The RUN op and the nodes its mounts read (`from=`), inputs 1.. of the op.
    fn run_op(
        &mut self,
        run: &Run,
        stage: &Stage,
        index: usize,
        state: &StageState,
    ) -> Result<(RunOp, Vec<NodeId>), CompileError> {
        let insecure = run.security.is_some_and(|s| s.as_str() == "insecure");
        if insecure && !self.options.allow_insecure {
            return Err(CompileError::Entitlement {
                what: "RUN --security=insecure".to_string(),
                entitlement: "security.insecure",
                span: run.span,
            });
        }
        let cwd = state.config.working_dir();
        let (mut mounts, inputs) = self.run_mounts(run, stage, index, &cwd)?;
        let command = match (&run.command, run.heredocs.as_slice()) {
            (command, []) => command.clone(),
            // BuildKit: a command that is just `<<EOF` runs the body as the shell's script;
            // otherwise the heredocs are put back after the line for the shell to read.
            // A body that starts with `#!` is a script: BuildKit writes it (mode 0755) into a
            // scratch filesystem mounted read-only at /dev/pipes/ and runs it by path, through
            // the shell like any shell-form command (dockerfile2llb `dispatchRun`).
            (Command::Shell(line), [first, ..])
                if is_heredoc_marker(line) && first.content.starts_with("#!") =>
            {
                mounts.push(RunMount::Script {
                    target: "/dev/pipes".to_string(),
                    name: first.name.clone(),
                    content: first.content.clone(),
                });
                Command::Shell(format!("/dev/pipes/{}", first.name))
            }
            (Command::Shell(line), [first, ..]) if is_heredoc_marker(line) => {
                Command::Shell(first.content.clone())
            }
            (Command::Shell(line), heredocs) => {
                let mut full = line.clone();
                for doc in heredocs {
                    full.push('\n');
                    full.push_str(&doc.content);
                    full.push_str(&doc.name);
                }
                Command::Shell(full)
            }
            (Command::Exec(_), _) => run.command.clone(),
        };
        // The ARG/ENV scope over the config's Env, later entries winning, with `set_env`'s
        // rule: a key already there (its first entry) is replaced in place, a new one
        // appended. Through a map of the keys: `set_env` per variable scans the list, which
        // made a stage of thousands of ARGs and RUNs cubic.
        let mut env = state.config.env();
        let mut positions: HashMap<String, usize> = HashMap::new();
        for (position, entry) in env.iter().enumerate() {
            positions
                .entry(env_key(entry).to_string())
                .or_insert(position);
        }
        for (key, value) in &state.vars {
            let entry = format!("{key}={value}");
            match positions.get(key).and_then(|&at| env.get_mut(at)) {
                Some(slot) => *slot = entry,
                None => {
                    positions.insert(key.clone(), env.len());
                    env.push(entry);
                }
            }
        }
        for (key, value) in &self.plan.resolved.proxy_env {
            if !env.iter().any(|e| env_key(e) == key) {
                env.push(format!("{key}={value}"));
            }
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        // llb's `AddSSHSocket`: the first ssh mount's target, unless the step's environment
        // names one; set when the op is made, so also when that agent is absent at run time.
        if let Some(RunMount::Ssh { target, .. }) =
            mounts.iter().find(|m| matches!(m, RunMount::Ssh { .. }))
            && !env.iter().any(|e| env_key(e) == "SSH_AUTH_SOCK")
        {
            env.push(format!("SSH_AUTH_SOCK={target}"));
        }
        let network = match run.network {
            Some(Network::None) => "none",
            Some(Network::Host) => "host",
            Some(Network::Default) | None => self.options.network.as_str(),
        };
        // BuildKit's entitlement check (util/entitlements: "network.host is not allowed"),
        // whether the step asked for the host's network or the build's --network did.
        if network == "host" && !self.options.allow_network_host {
            return Err(CompileError::Entitlement {
                what: if run.network == Some(Network::Host) {
                    "RUN --network=host".to_string()
                } else {
                    "--network host".to_string()
                },
                entitlement: "network.host",
                span: run.span,
            });
        }
        Ok((
            RunOp {
                args: state.config.argv(&command),
                env,
                cwd,
                user: state.config.user(),
                network: network.to_string(),
                mounts,
                insecure,
                platform: stage.effective_platform.normalized(),
            },
            inputs,
        ))
    }

    /// A RUN's `--mount`s with BuildKit's defaults (`dispatchRunMounts`, `dispatchSecret`,
    /// `dispatchSSH`, llb's `AddSSHSocket`), and the nodes they read.
    fn run_mounts(
        &mut self,
        run: &Run,
        stage: &Stage,
        index: usize,
        cwd: &str,
    ) -> Result<(Vec<RunMount>, Vec<NodeId>), CompileError> {
        let mut mounts = Vec::new();
        let mut inputs: Vec<NodeId> = Vec::new();
        let mut ssh_index = 0;
        let context_reads = self
            .plan
            .context_reads
            .iter()
            .filter(|r| r.stage == stage.index && r.instruction == index)
            .collect::<Vec<_>>();
        for (position, m) in run.mounts.iter().enumerate() {
            let span = m.span;
            let target = || mount_target(m.target.as_deref().unwrap_or(""), cwd, span);
            let mut input = |this: &mut Self, from: &str| -> Result<MountInput, CompileError> {
                let node = this.node_for_from(from, span, stage).map_err(|_| {
                    CompileError::BadMountFrom {
                        from: from.to_string(),
                        span,
                    }
                })?;
                let index = match inputs.iter().position(|&n| n == node) {
                    Some(i) => i,
                    None => {
                        inputs.push(node);
                        inputs.len() - 1
                    }
                };
                Ok(MountInput::Input(index + 1))
            };
            let source = m
                .source
                .as_deref()
                .map_or_else(|| "/".to_string(), clean_path);
            let mount = match m.kind {
                MountType::Bind => {
                    let (from, context_paths) = match &m.from {
                        Some(from) => (input(self, from)?, Vec::new()),
                        None => (
                            MountInput::Context,
                            context_reads
                                .iter()
                                .find(|r| r.mount == Some(position))
                                .map(|r| context_paths(&r.sources))
                                .unwrap_or_default(),
                        ),
                    };
                    RunMount::Bind {
                        target: target()?,
                        source,
                        from,
                        readwrite: !m.readonly,
                        context_paths,
                    }
                }
                MountType::Cache => {
                    // The id defaults to the target as written, cleaned (not made absolute).
                    let id = match &m.id {
                        Some(id) if !id.is_empty() => id.clone(),
                        _ => clean_relative(m.target.as_deref().unwrap_or("")),
                    };
                    RunMount::Cache {
                        target: target()?,
                        id,
                        sharing: m.sharing.unwrap_or(Sharing::Shared),
                        readonly: m.readonly,
                        from: match &m.from {
                            Some(from) => Some(input(self, from)?),
                            None => None,
                        },
                        source,
                        mode: m.mode.unwrap_or(0o755),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                    }
                }
                MountType::Tmpfs => RunMount::Tmpfs {
                    target: target()?,
                    size: m.size,
                },
                MountType::Secret => {
                    let id = match (&m.source, &m.id, &m.target) {
                        (Some(source), _, _) => source.clone(),
                        (None, Some(id), _) if !id.is_empty() => id.clone(),
                        (None, _, Some(target)) => base_name(target),
                        (None, _, None) => {
                            return Err(CompileError::Unsupported {
                                message: "a secret mount needs id=, source= or target=".into(),
                                span,
                            });
                        }
                    };
                    let target = match (&m.target, &m.env) {
                        (Some(t), _) => Some(mount_target(t, cwd, span)?),
                        (None, Some(_)) => None,
                        (None, None) => Some(format!("/run/secrets/{}", base_name(&id))),
                    };
                    RunMount::Secret {
                        id,
                        target,
                        env: m.env.clone(),
                        required: m.required,
                        mode: m.mode.unwrap_or(0o400),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                    }
                }
                MountType::Ssh => {
                    if m.source.is_some() {
                        return Err(CompileError::Unsupported {
                            message: "an ssh mount does not take source=".into(),
                            span,
                        });
                    }
                    let target = match &m.target {
                        Some(t) => mount_target(t, cwd, span)?,
                        None => format!("/run/buildkit/ssh_agent.{ssh_index}"),
                    };
                    ssh_index += 1;
                    RunMount::Ssh {
                        id: m
                            .id
                            .clone()
                            .filter(|id| !id.is_empty())
                            .unwrap_or_else(|| "default".to_string()),
                        target,
                        required: m.required,
                        mode: m.mode.unwrap_or(0o600),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                    }
                }
            };
            mounts.push(mount);
        }
        Ok((mounts, inputs))
    }

    fn copy_op_for_add(
        &mut self,
        add: &Add,
        stage: &Stage,
        index: usize,
        state: &StageState,
    ) -> Result<(CopyOp, Option<NodeId>), CompileError> {
        if add.sources.iter().any(|s| is_git(s)) {
            return self.git_copy_op(add, stage, state);
        }
        if add.sources.iter().any(|s| is_http(s)) {
            return self.url_copy_op(add, stage, state);
        }
        if add.checksum.is_some() {
            return Err(CompileError::Unsupported {
                message: "ADD --checksum is only for URL sources".to_string(),
                span: add.span,
            });
        }
        let copy = Copy {
            sources: add.sources.clone(),
            inline: add.inline.clone(),
            dest: add.dest.clone(),
            from: None,
            from_span: None,
            chown: add.chown.clone(),
            chmod: add.chmod.clone(),
            link: add.link,
            parents: false,
            exclude: add.exclude.clone(),
            span: add.span,
        };
        // BuildKit unpacks local archives unless `--unpack=false`.
        self.copy_op(&copy, add.unpack != Some(false), stage, index, state)
    }

    /// The op of an ADD of http(s) URLs, as BuildKit's `dispatchCopy`: each URL a file named by
    /// its path's last segment, copied as COPY copies (`--chmod`, `--chown`, a `/`-ended
    /// destination is a directory), not unpacked unless `--unpack=true`.
    fn url_copy_op(
        &mut self,
        add: &Add,
        stage: &Stage,
        state: &StageState,
    ) -> Result<(CopyOp, Option<NodeId>), CompileError> {
        let unsupported = |message: String| CompileError::Unsupported {
            message,
            span: add.span,
        };
        if let Some(local) = add.sources.iter().find(|s| !is_http(s)) {
            return Err(unsupported(format!(
                "ADD {local}: kiln cannot mix URLs and build-context sources in one ADD yet; \
                 use one ADD for each"
            )));
        }
        if !add.inline.is_empty() {
            return Err(unsupported(
                "kiln cannot mix URLs and heredocs in one ADD yet".to_string(),
            ));
        }
        let checksum = match &add.checksum {
            Some(text) => Some(Digest::parse(text).map_err(|e| {
                unsupported(format!("ADD --checksum={text}: not a sha256 digest: {e}"))
            })?),
            None => None,
        };
        let mut urls = Vec::new();
        for source in &add.sources {
            let bad = |e: crate::fetch::FetchError| {
                unsupported(format!("ADD: {}", crate::error::chain(&e)))
            };
            let url = crate::fetch::parse_url(source).map_err(bad)?;
            let name = crate::fetch::file_name(&url).map_err(bad)?;
            urls.push(UrlSource {
                url: url.to_string(),
                name,
                checksum: checksum.clone(),
            });
        }
        Ok((
            CopyOp {
                from: CopyFrom::Url,
                sources: add.sources.clone(),
                inline: Vec::new(),
                dest: add.dest.clone(),
                workdir: state.config.working_dir(),
                chown: add.chown.clone(),
                chmod: add.chmod.clone(),
                add: add.unpack == Some(true),
                exclude: Vec::new(),
                parents: false,
                link: linked(add.link, &add.chown, &add.chmod, add.span)?,
                context_paths: Vec::new(),
                urls,
                platform: stage.effective_platform.normalized(),
                git: Vec::new(),
            },
            None,
        ))
    }

    /// The op of an ADD of git repositories, as BuildKit's `dispatchCopy`: each an `llb.Git`
    /// source (`--keep-git-dir` and `--checksum` merged with the URL's own `keep-git-dir=` and
    /// `checksum=`, which must agree), copied from its root onto the destination with
    /// `--chmod`, `--chown` and `--exclude`.
    fn git_copy_op(
        &mut self,
        add: &Add,
        stage: &Stage,
        state: &StageState,
    ) -> Result<(CopyOp, Option<NodeId>), CompileError> {
        let invalid = |message: String| CompileError::GitSource {
            message,
            span: add.span,
        };
        if let Some(other) = add.sources.iter().find(|s| !is_git(s)) {
            return Err(CompileError::Unsupported {
                message: format!(
                    "ADD {}: kiln cannot mix git repositories and other sources in one ADD; \
                     use one ADD for each",
                    crate::git::redact(other)
                ),
                span: add.span,
            });
        }
        if !add.inline.is_empty() {
            return Err(CompileError::Unsupported {
                message: "kiln cannot mix git repositories and heredocs in one ADD; use one \
                          instruction for each"
                    .to_string(),
                span: add.span,
            });
        }
        if add.checksum.is_some() && add.sources.len() != 1 {
            return Err(invalid(
                "checksum can't be specified for multiple sources".to_string(),
            ));
        }
        let mut git = Vec::new();
        for source in &add.sources {
            let reference = match crate::git::GitRef::parse(source) {
                Ok(Some(reference)) => reference,
                Ok(None) => unreachable!("is_git checked it"),
                Err(err) => return Err(invalid(err.to_string())),
            };
            let mut source = GitSource::new(&reference);
            if let (Some(flag), Some(url)) = (add.keep_git_dir, reference.keep_git_dir)
                && flag != url
            {
                return Err(invalid(
                    "inconsistent keep-git-dir configuration".to_string(),
                ));
            }
            source.keep_git_dir = reference.keep_git_dir.or(add.keep_git_dir) == Some(true);
            if let (Some(flag), Some(url)) = (&add.checksum, &reference.checksum)
                && flag != url
            {
                return Err(invalid(format!("checksum mismatch {flag:?} != {url:?}")));
            }
            source.checksum = reference.checksum.clone().or_else(|| add.checksum.clone());
            if let Some(checksum) = &source.checksum
                && (checksum.is_empty() || !checksum.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(invalid(format!(
                    "invalid checksum {checksum} for Git URL, expected hex commit hash"
                )));
            }
            // BuildKit's ADD gives a git source the checkout's time whatever `mtime=` says
            // (only a git build context reads it).
            source.mtime_commit = false;
            git.push(source);
        }
        Ok((
            CopyOp {
                from: CopyFrom::Git,
                // As the history shows them: without a URL's credentials.
                sources: add.sources.iter().map(|s| crate::git::redact(s)).collect(),
                inline: Vec::new(),
                dest: add.dest.clone(),
                workdir: state.config.working_dir(),
                chown: add.chown.clone(),
                chmod: add.chmod.clone(),
                add: false,
                exclude: add.exclude.clone(),
                parents: false,
                link: linked(add.link, &add.chown, &add.chmod, add.span)?,
                context_paths: Vec::new(),
                urls: Vec::new(),
                git,
                platform: stage.effective_platform.normalized(),
            },
            None,
        ))
    }

    /// The op of a COPY (or of an ADD turned into one; `add` says whether archives unpack).
    fn copy_op(
        &mut self,
        copy: &Copy,
        add: bool,
        stage: &Stage,
        index: usize,
        state: &StageState,
    ) -> Result<(CopyOp, Option<NodeId>), CompileError> {
        let link = linked(copy.link, &copy.chown, &copy.chmod, copy.span)?;
        let (from, input, context_paths) = match &copy.from {
            None => {
                let paths = self
                    .plan
                    .context_reads
                    .iter()
                    .find(|r| r.stage == stage.index && r.instruction == index)
                    .map(|r| context_paths(&r.sources))
                    .unwrap_or_default();
                (CopyFrom::Context, None, paths)
            }
            Some(from) => (
                CopyFrom::Input,
                Some(self.node_for_from(from, copy.from_span.unwrap_or(copy.span), stage)?),
                Vec::new(),
            ),
        };
        Ok((
            CopyOp {
                from,
                sources: copy.sources.clone(),
                inline: copy.inline.clone(),
                dest: copy.dest.clone(),
                workdir: state.config.working_dir(),
                chown: copy.chown.clone(),
                chmod: copy.chmod.clone(),
                add,
                exclude: copy.exclude.clone(),
                parents: copy.parents,
                link,
                context_paths,
                urls: Vec::new(),
                platform: stage.effective_platform.normalized(),
                git: Vec::new(),
            },
            input,
        ))
    }

    /// The node `--from=NAME` reads: a stage by name or index, else an image.
    fn node_for_from(
        &mut self,
        from: &str,
        span: Span,
        stage: &Stage,
    ) -> Result<NodeId, CompileError> {
        let by_name = self
            .plan
            .resolved
            .stage_by_name(from)
            .map(|s| s.index)
            .or_else(|| from.parse::<usize>().ok());
        if let Some(index) = by_name
            && index < stage.index
        {
            return self
                .stages
                .get(&index)
                .map(|s| s.node)
                .ok_or_else(|| CompileError::BadFrom {
                    from: from.to_string(),
                    span,
                });
        }
        // An image read by `--from` is for the target platform (BuildKit makes it a stage of
        // its own, without `--platform`).
        let target = self.plan.resolved.target_platform.clone();
        if self
            .options
            .images
            .contains_key(&ImageKey::new(from, &target))
        {
            let (node, _) = self.image_state(from, &target, span, stage)?;
            return Ok(node);
        }
        Err(CompileError::BadFrom {
            from: from.to_string(),
            span,
        })
    }

    /// Adds a node, remembering the first step that made it.
    fn add(
        &mut self,
        op: BuildOp,
        inputs: Vec<NodeId>,
        span: &Span,
        name: Option<String>,
        stage: &Stage,
        skip_cache: bool,
    ) -> Result<NodeId, CompileError> {
        let node = self
            .graph
            .add(op, inputs)
            .map_err(|err| CompileError::Unsupported {
                message: format!("internal error in kiln's op graph: {err}"),
                span: *span,
            })?;
        if skip_cache {
            self.no_cache.insert(node);
        }
        self.steps.entry(node).or_insert_with(|| Step {
            name: name.unwrap_or_else(|| format!("[internal] step {node}")),
            span: Some(*span),
            stage: stage.index,
            position: String::new(),
        });
        Ok(node)
    }

    fn position(&mut self, node: NodeId, stage: &Stage, index: usize) {
        if let Some(step) = self.steps.get_mut(&node)
            && step.position.is_empty()
        {
            // Each platform's step of a multi-platform build is its own, to compare with last
            // time (`--explain-cache`, the copies a COPY may reuse).
            let platform = if self.options.multi_platform {
                format!("#{}", stage.effective_platform.normalized())
            } else {
                String::new()
            };
            step.position = format!(
                "{}#{}#{index}{platform}",
                self.options.dockerfile_name,
                stage.display_name()
            );
        }
    }
}

/// `no_cache` and every node that reads, directly or not, a filesystem op in it.
///
/// A step that skips the cache runs again, but its cache key does not change (keys are made
/// from definitions, not results). What reads it (the rest of its stage's dependents, a
/// `COPY --from` of another stage) would then still hit the cache and keep what the old run
/// made; and a hit below which nothing runs means the re-run step is never needed, so
/// `--no-cache-filter STAGE` for a stage that another copies from would run nothing at all.
/// BuildKit avoids both by keying `COPY --from` on the content copied, which kiln does not do,
/// so the dependents run again too. Sources (scratch, an image) are not followed: their key is
/// already their content (the manifest digest).
fn downstream_of_reruns(graph: &Graph<BuildOp>, no_cache: BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    let mut all = no_cache;
    // Ascending node ids are a topological order: inputs are settled before their readers.
    for node in 0..graph.len() {
        let reads_rerun = graph.inputs(node).iter().any(|input| {
            all.contains(input)
                && !matches!(
                    graph.op(*input),
                    Some(BuildOp::Scratch { .. } | BuildOp::Image { .. })
                )
        });
        if reads_rerun {
            all.insert(node);
        }
    }
    all
}

/// Whether an instruction becomes an op (and a numbered step).
fn makes_op(instruction: &Instruction) -> bool {
    matches!(
        instruction,
        Instruction::Run(_) | Instruction::Copy(_) | Instruction::Add(_) | Instruction::Workdir(_)
    )
}

/// Sets `key` in the ordered variable list (later wins; the old entry is dropped).
fn set_var(vars: &mut Vec<(String, String)>, key: &str, value: &str) {
    vars.retain(|(k, _)| k != key);
    vars.push((key.to_string(), value.to_string()));
}

/// BuildKit's `runCommandString`: the build args declared in the stage so far (`|N K=V ...`)
/// before the argv. Each value is the one the RUN sees (`vars`: an ENV of the same name wins),
/// else the ARG's own; an ARG declared again keeps its first place (moby/buildkit#5505; v0.8
/// listed it once per declaration).
///
/// Looked up through maps: scanning `vars` and the list per ARG made a stage of thousands of
/// ARGs and RUNs cubic (minutes).
fn run_history(args: &[String], stage: &Stage, index: usize, vars: &[(String, String)]) -> String {
    // Later entries win.
    let seen: HashMap<&str, &str> = vars
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let mut build_args: Vec<(String, String)> = Vec::new();
    let mut positions: HashMap<&str, usize> = HashMap::new();
    for instruction in stage.instructions.iter().take(index) {
        if let Instruction::Arg(arg) = instruction {
            for decl in &arg.args {
                let value = seen
                    .get(decl.name.as_str())
                    .map(|v| v.to_string())
                    .or_else(|| decl.default.clone())
                    .unwrap_or_default();
                match positions
                    .get(decl.name.as_str())
                    .and_then(|&at| build_args.get_mut(at))
                {
                    Some(slot) => slot.1 = value,
                    None => {
                        positions.insert(&decl.name, build_args.len());
                        build_args.push((decl.name.clone(), value));
                    }
                }
            }
        }
    }
    let mut words: Vec<String> = Vec::new();
    if !build_args.is_empty() {
        words.push(format!("|{}", build_args.len()));
        words.extend(build_args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    words.extend(args.iter().cloned());
    words.join(" ")
}

/// BuildKit's COPY/ADD history line.
fn copy_history(
    keyword: &str,
    chown: &Option<String>,
    chmod: &Option<String>,
    op: &CopyOp,
) -> String {
    let mut line = keyword.to_string();
    if op.parents {
        line.push_str(" --parents");
    }
    if let Some(chown) = chown {
        line.push_str(&format!(" --chown={chown}"));
    }
    if let Some(chmod) = chmod {
        line.push_str(&format!(" --chmod={chmod}"));
    }
    for source in &op.sources {
        line.push(' ');
        line.push_str(source);
    }
    for inline in &op.inline {
        line.push_str(&format!(" <<{}", inline.name));
    }
    line.push(' ');
    line.push_str(&op.dest);
    line + " # buildkit"
}

/// Every context path the sources read, sorted, without duplicates.
fn context_paths(sources: &[SourceMatch]) -> Vec<String> {
    let mut paths: Vec<String> = sources
        .iter()
        .flat_map(|s| s.paths.iter().cloned())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"`: a command that is only a heredoc.
/// A mount target made absolute as BuildKit does (a relative one is joined to the working
/// directory) and cleaned; `/` is refused.
fn mount_target(target: &str, cwd: &str, span: Span) -> Result<String, CompileError> {
    let joined = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{}/{target}", if cwd.is_empty() { "/" } else { cwd })
    };
    let cleaned = clean_path(&joined);
    if cleaned == "/" {
        return Err(CompileError::Unsupported {
            message: format!("invalid mount target {target:?}: a mount cannot replace the root"),
            span,
        });
    }
    Ok(cleaned)
}

/// Go's `path.Clean` of a path that may be relative (`a/../b` is `b`, `` is `.`).
fn clean_relative(path: &str) -> String {
    if path.starts_with('/') {
        return clean_path(path);
    }
    let cleaned = clean_path(&format!("/{path}"));
    match cleaned.strip_prefix('/') {
        Some("") | None => ".".to_string(),
        Some(rest) => rest.to_string(),
    }
}

/// Go's `path.Base`.
fn base_name(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if path.is_empty() { "." } else { "/" }.to_string();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// BuildKit's `MustParseHeredoc` of the whole command: the line is one heredoc marker
/// (`<<EOF`, `<< EOF`, `<<-EOT`, `<<"EOF"`), so the first heredoc's body is the command.
fn is_heredoc_marker(line: &str) -> bool {
    matches!(
        crate::frontend::syntax::words::marker(line.trim()),
        Ok(Some(_))
    )
}

/// Whether a `--link` copy is linked: BuildKit's dispatchCopy merges only when there is no
/// `--chmod` (with one, `--link` is a plain copy). A linked copy is made on the empty
/// filesystem, so `--chown` names cannot be looked up (BuildKit: "invalid user index").
fn linked(
    link: bool,
    chown: &Option<String>,
    chmod: &Option<String>,
    span: Span,
) -> Result<bool, CompileError> {
    let link = link && chmod.is_none();
    if link
        && let Some(chown) = chown
        && chown
            .split(':')
            .any(|part| !part.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(CompileError::Unsupported {
            message: format!(
                "--link --chown={chown}: a linked copy is made on an empty filesystem with no \
                 /etc/passwd or /etc/group to look names up in; use numeric ids"
            ),
            span,
        });
    }
    Ok(link)
}

/// ADD sources that name a git repository (BuildKit's `isGitSource`).
fn is_git(source: &str) -> bool {
    crate::git::is_git_source(source)
}

/// ADD sources that are http(s) URLs to download (not git repositories).
fn is_http(source: &str) -> bool {
    (source.starts_with("http://") || source.starts_with("https://")) && !is_git(source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::plan::{PlanOptions, plan};

    /// `dockerfile` planned with `options` and compiled with no images, no network, no
    /// cache flags and one host-platform target.
    fn plan_and_compile(dockerfile: &str, options: &PlanOptions) -> Compiled {
        let plan = plan(dockerfile.as_bytes(), options).unwrap();
        let images = BTreeMap::new();
        compile(
            &[plan],
            &CompileOptions {
                images: &images,
                network: crate::runtime::NetworkMode::None,
                no_cache: false,
                no_cache_filter: &[],
                dockerfile_name: "Dockerfile",
                allow_insecure: false,
                allow_network_host: false,
                explicit_platform: false,
                multi_platform: false,
            },
        )
        .unwrap()
    }

    /// The history lines of the target of `dockerfile` built with `build_args`.
    fn history(dockerfile: &str, build_args: &[(&str, &str)]) -> Vec<String> {
        let context = tempfile::tempdir().unwrap();
        let mut options = PlanOptions {
            context_dir: context.path().to_path_buf(),
            dockerfile_path: None,
            context_kind: crate::frontend::context::ContextKind::Directory,
            target: None,
            resolve: Default::default(),
        };
        for (key, value) in build_args {
            options
                .resolve
                .build_args
                .insert(key.to_string(), value.to_string());
        }
        let compiled = plan_and_compile(dockerfile, &options);
        compiled.targets[0]
            .history
            .iter()
            .map(|entry| match entry {
                HistoryEntry::Metadata(line) | HistoryEntry::Layer(line) => line.clone(),
                HistoryEntry::Base(value) => value.to_string(),
            })
            .collect()
    }

    #[test]
    fn run_history_lists_each_build_arg_once_with_the_value_the_run_sees() {
        let lines = history(
            "FROM scratch\nARG A=1 B\nARG C=3\nENV C=env\nRUN one\nARG A=2\nRUN two\n",
            &[("B", "given")],
        );
        assert_eq!(
            lines,
            [
                "ARG A=1 B=given",
                "ARG C=3",
                "ENV C=env",
                "RUN |3 A=1 B=given C=env /bin/sh -c one # buildkit",
                "ARG A=2",
                "RUN |3 A=2 B=given C=env /bin/sh -c two # buildkit",
            ]
        );
    }

    /// The mounts of each RUN op of `dockerfile` (FROM scratch stages only), in graph order.
    fn run_mounts(dockerfile: &str) -> Vec<Vec<RunMount>> {
        let context = tempfile::tempdir().unwrap();
        std::fs::write(context.path().join("go.mod"), "module x\n").unwrap();
        let options = PlanOptions {
            context_dir: context.path().to_path_buf(),
            dockerfile_path: None,
            context_kind: crate::frontend::context::ContextKind::Directory,
            target: None,
            resolve: Default::default(),
        };
        let compiled = plan_and_compile(dockerfile, &options);
        (0..compiled.graph.len())
            .filter_map(|n| match compiled.graph.op(n) {
                Some(BuildOp::Run(run)) => Some(run.mounts.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn run_mounts_get_buildkit_defaults() {
        let mounts = run_mounts(
            "FROM scratch AS tools\nFROM scratch\nWORKDIR /w\n\
             RUN --mount=type=cache,target=cache/x --mount=type=cache,target=/abs,id=named,sharing=locked true\n\
             RUN --mount=source=go.mod,target=go.mod --mount=from=tools,target=/t,rw true\n\
             RUN --mount=type=secret,id=tok --mount=type=secret,target=/a/b.pem --mount=type=secret,id=e,env=E true\n\
             RUN --mount=type=ssh --mount=type=ssh,id=k,required --mount=type=tmpfs,target=/t,size=1m true\n",
        );
        assert_eq!(mounts.len(), 4, "{mounts:#?}");
        let [cache_rel, cache_abs] = mounts[0].as_slice() else {
            panic!("{:?}", mounts[0])
        };
        // The id is the target as written (cleaned), the target is joined to WORKDIR.
        assert!(
            matches!(cache_rel, RunMount::Cache { id, target, sharing: Sharing::Shared, mode: 0o755, .. }
                if id == "cache/x" && target == "/w/cache/x"),
            "{cache_rel:?}"
        );
        assert!(
            matches!(cache_abs, RunMount::Cache { id, sharing: Sharing::Locked, .. } if id == "named"),
            "{cache_abs:?}"
        );
        let [context, stage] = mounts[1].as_slice() else {
            panic!("{:?}", mounts[1])
        };
        assert!(
            matches!(context, RunMount::Bind { from: MountInput::Context, target, readwrite: false, context_paths, .. }
                if target == "/w/go.mod" && context_paths == &["go.mod".to_string()]),
            "{context:?}"
        );
        assert!(
            matches!(
                stage,
                RunMount::Bind {
                    from: MountInput::Input(1),
                    readwrite: true,
                    ..
                }
            ),
            "{stage:?}"
        );
        let [by_id, by_target, as_env] = mounts[2].as_slice() else {
            panic!("{:?}", mounts[2])
        };
        assert!(
            matches!(by_id, RunMount::Secret { id, target: Some(t), mode: 0o400, required: false, .. }
                if id == "tok" && t == "/run/secrets/tok"),
            "{by_id:?}"
        );
        assert!(
            matches!(by_target, RunMount::Secret { id, .. } if id == "b.pem"),
            "{by_target:?}"
        );
        assert!(
            matches!(as_env, RunMount::Secret { target: None, env: Some(e), .. } if e == "E"),
            "{as_env:?}"
        );
        let [ssh0, ssh1, tmpfs] = mounts[3].as_slice() else {
            panic!("{:?}", mounts[3])
        };
        assert!(
            matches!(ssh0, RunMount::Ssh { id, target, mode: 0o600, .. }
                if id == "default" && target == "/run/buildkit/ssh_agent.0"),
            "{ssh0:?}"
        );
        assert!(
            matches!(ssh1, RunMount::Ssh { id, target, required: true, .. }
                if id == "k" && target == "/run/buildkit/ssh_agent.1"),
            "{ssh1:?}"
        );
        assert!(
            matches!(
                tmpfs,
                RunMount::Tmpfs {
                    size: Some(1048576),
                    ..
                }
            ),
            "{tmpfs:?}"
        );
    }

    #[test]
    fn a_secret_value_is_never_part_of_an_op() {
        // The definition names the secret, never what the build was given for it.
        let mounts = run_mounts("FROM scratch\nRUN --mount=type=secret,id=tok,env=T true\n");
        let json = serde_json::to_string(&mounts).unwrap();
        assert_eq!(
            json,
            r#"[[{"type":"secret","id":"tok","target":null,"env":"T","required":false,"mode":256,"uid":0,"gid":0}]]"#
        );
    }

    fn mkdir(path: &str) -> BuildOp {
        BuildOp::Mkdir(MkdirOp {
            path: path.to_string(),
            user: String::new(),
            platform: Platform::host(),
        })
    }

    #[test]
    fn what_reads_a_rerun_step_reruns_but_not_through_a_source() {
        let mut graph = Graph::new();
        let add = |graph: &mut Graph<BuildOp>, op, inputs| graph.add(op, inputs).expect("add");
        let scratch = add(
            &mut graph,
            BuildOp::Scratch {
                platform: Platform::host(),
            },
            vec![],
        );
        let image = add(
            &mut graph,
            BuildOp::Image {
                name: "base".into(),
                manifest: Digest::of(b"manifest"),
                platform: Platform::host(),
            },
            vec![],
        );
        let a = add(&mut graph, mkdir("/a"), vec![scratch]);
        let b = add(&mut graph, mkdir("/b"), vec![a]);
        let c = add(&mut graph, mkdir("/c"), vec![image]);
        // Reads c and b, like a COPY --from.
        let d = add(&mut graph, mkdir("/d"), vec![c, b]);
        let e = add(&mut graph, mkdir("/e"), vec![image]);
        let cases: &[(&[NodeId], &[NodeId])] = &[
            (&[], &[]),
            (&[a], &[a, b, d]),
            (&[b], &[b, d]),
            (&[c], &[c, d]),
            (&[d, e], &[d, e]),
            // Sources: their keys are their content already.
            (&[scratch], &[scratch]),
            (&[image], &[image]),
        ];
        for (no_cache, expected) in cases {
            let found = downstream_of_reruns(&graph, no_cache.iter().copied().collect());
            let expected: BTreeSet<NodeId> = expected.iter().copied().collect();
            assert_eq!(found, expected, "no_cache {no_cache:?}");
        }
    }
}
