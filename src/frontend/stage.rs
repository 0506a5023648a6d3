//! Stages: instructions grouped under their FROM, ARG/ENV scoping and the expansion of the
//! arguments BuildKit expands (`frontend/dockerfile/dockerfile2llb/convert.go`).
//!
//! Scoping, as BuildKit does it:
//! - ARGs before the first FROM are meta args. With BuildKit's predefined platform args they form
//!   the global scope, which only FROM lines (image and `--platform`) see.
//! - Inside a stage an ARG takes, in order: the `--build-arg` value; else its default, expanded
//!   with the variables in scope; else, with no default, the global value of the same name.
//! - ENV and ARG values share one scope in a stage; the most recent definition of a name wins.
//! - A stage built `FROM` another stage starts with that stage's variables (ENV *and* ARG: BuildKit
//!   copies the parent's state, build args included). Other stages see none of them.
//! - A stage built `FROM` an image starts with the image's config `Env` (from
//!   [`ResolveOptions::base_images`]), plus BuildKit's default `PATH` when the image sets none.
//!
//! ONBUILD triggers run at the start of a stage, before its own instructions, in the stage's scope
//! (BuildKit's `initOnBuildTriggers`): the base image's config `OnBuild`, or, for a stage built
//! `FROM` another stage, that stage's own ONBUILD instructions (moby/buildkit#5490: as if the
//! parent were built into an image first; the triggers the parent itself ran are not passed on).
//! - Expanded: ADD, COPY (not `--from`), ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR, ARG
//!   defaults, RUN `--mount` values (not `from`), FROM (global scope). RUN, CMD, ENTRYPOINT, SHELL,
//!   HEALTHCHECK, MAINTAINER and ONBUILD are left as written: the shell expands them at run time.

use crate::frontend::SyntaxError;
use crate::frontend::ast::{Dockerfile, Node};
use crate::frontend::diagnostic::{Located, Span};
use crate::frontend::instruction::{
    self, Add, Arg, ArgDecl, Copy, Env as EnvInstruction, Expose, InlineFile, Instruction,
    InstructionError, KeyValue, Label, Mount, Run, StopSignal, User, Volume, Workdir,
};
use crate::frontend::limits::MAX_VARIABLE_COPIES;
use crate::frontend::shell::{Env, ExpandError, Lexer};
use crate::oci::{Platform, Reference, ReferenceError};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The PATH BuildKit gives a stage whose image does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build args that every RUN sees without an ARG, and that never count as unused.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What the build was asked for.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// The platform the image is built for; the build platform when `None`.
    pub target_platform: Option<Platform>,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// `--target`: the stage to build (only used for the `TARGETSTAGE` arg here).
    pub target: Option<String>,
    /// What kiln knows of the external base images, by the FROM name as expanded
    /// ([`Stage::base_name`]) and the platform the stage is for ([`ImageKey`]): their config
    /// `Env` and `OnBuild` triggers. An image missing here resolves with the default `PATH`
    /// only and no triggers.
    pub base_images: BTreeMap<ImageKey, BaseImage>,
    /// `--build-context NAME=...` contexts that are images, by [`named_context_key`] of NAME:
    /// the reference of the image that replaces NAME. As in BuildKit's `namedContext`, a stage
    /// named NAME is replaced whole (its instructions are not run), and a FROM, `COPY --from`
    /// or `RUN --mount from=` naming NAME where no stage has that name reads the image instead.
    pub named_images: BTreeMap<String, String>,
}

/// The key a named context is looked up by: the reference normalised with its default tag
/// (BuildKit compares the familiar form without `:latest`, so `alpine`, `alpine:latest` and
/// `docker.io/library/alpine` are one name); a name that is no reference, as is.
pub fn named_context_key(name: &str) -> String {
    match Reference::parse_normalized(name) {
        Ok(reference) => reference.with_default_tag().to_string(),
        Err(_) => name.to_string(),
    }
}

/// An external image as a build uses it: the name as written (expanded) and the platform it is
/// wanted for, normalised ([`Platform::normalized`]). One name may be wanted for two platforms
/// in one build (a `FROM --platform=$BUILDPLATFORM` stage and a target-platform stage of the
/// same image), and each is its own image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ImageKey {
    pub name: String,
    pub platform: Platform,
}

impl ImageKey {
    /// `name` for `platform` (normalised here).
    pub fn new(name: &str, platform: &Platform) -> ImageKey {
        ImageKey {
            name: name.to_string(),
            platform: platform.normalized(),
        }
    }
}

impl std::fmt::Display for ImageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.platform)
    }
}

/// The parts of a base image's config that change how a stage built on it resolves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImage {
    /// The config's `Env`, in order, each `KEY=VALUE` split at the first `=` (a missing `=`
    /// gives an empty value, as BuildKit's `parseKeyValue`).
    pub env: Vec<(String, String)>,
    /// The config's `OnBuild` triggers: each one instruction as written after `ONBUILD`, heredoc
    /// bodies included.
    pub onbuild: Vec<String>,
}

impl ResolveOptions {
    /// The platform the build is for: [`ResolveOptions::target_platform`], else the build
    /// platform; normalised, as BuildKit reads `--platform`.
    pub fn target(&self) -> Platform {
        self.target_platform
            .as_ref()
            .unwrap_or(&self.build_platform)
            .normalized()
    }
}

impl Default for ResolveOptions {
    fn default() -> Self {
        Self {
            build_args: BTreeMap::new(),
            target_platform: None,
            build_platform: Platform::host(),
            target: None,
            base_images: BTreeMap::new(),
            named_images: BTreeMap::new(),
        }
    }
}

/// Where a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Base {
    Scratch,
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// What a COPY --from or a RUN --mount from= points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Source {
    Stage(usize),
    Image(String),
}

/// How a stage uses another stage or an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DependencyKind {
    From,
    CopyFrom,
    MountFrom,
}

/// One use of another stage or image by a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub on: Source,
    pub kind: DependencyKind,
    /// The FROM image word, the `--from` flag or the `--mount` flag.
    pub span: Span,
}

/// One build stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Position in the file, from 0.
    pub index: usize,
    /// The `AS` name, lower case.
    pub name: Option<String>,
    pub base: Base,
    /// The FROM image after expansion.
    pub base_name: String,
    /// `--platform` after expansion.
    pub platform: Option<String>,
    /// The platform the stage is built for, its steps run on and its image says: FROM
    /// `--platform` (as parsed, not normalised, as BuildKit keeps it), else the platform of the
    /// stage it is built FROM (whose `--platform` wins, as in BuildKit's `dispatchState.init`),
    /// else the target platform; `FROM scratch` is always the target's.
    pub effective_platform: Platform,
    /// The stage's instructions (FROM excluded), with their arguments expanded. An ARG's
    /// `default` holds the value in effect (build arg, expanded default or global value).
    /// The first [`Stage::onbuild_count`] of them are the base's ONBUILD triggers.
    pub instructions: Vec<Instruction>,
    /// How many of `instructions`, at the start, came from the base's ONBUILD triggers (BuildKit
    /// names their steps `[stage 1/3] ONBUILD RUN ...`). A trigger has no place in this file:
    /// its spans are the FROM instruction's.
    pub onbuild_count: usize,
    /// Stages and images this stage reads, in the order they appear.
    pub dependencies: Vec<Dependency>,
    /// ENV and ARG values in scope at the end of the stage (later entries win).
    pub vars: Vec<(String, String)>,
    /// The FROM instruction.
    pub span: Span,
}

impl Stage {
    /// The stage's name, or `stage-N` like BuildKit when it has none.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// A problem that does not stop the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageWarning {
    pub message: String,
    pub span: Option<Span>,
}

/// A Dockerfile grouped into stages with its variables resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    /// The global scope FROM lines see: predefined args, then meta args, in order.
    pub meta_args: Vec<(String, String)>,
    /// The platform the build is for (`TARGETPLATFORM`'s, normalised): the platform of every
    /// stage without a `--platform` of its own, and of the images `COPY --from` and
    /// `RUN --mount from=` read.
    pub target_platform: Platform,
    pub stages: Vec<Stage>,
    /// Proxy build args that RUN instructions get as environment variables.
    pub proxy_env: Vec<(String, String)>,
    pub warnings: Vec<StageWarning>,
    /// Each stage name's last stage, so that [`Resolved::stage_by_name`] (one call per
    /// `COPY --from`) is no scan of the stages.
    #[serde(skip)]
    last_by_name: HashMap<String, usize>,
}

impl Resolved {
    /// The stage with this name (case-insensitive); the last one when several have it, as
    /// BuildKit's `findStateByName`.
    pub fn stage_by_name(&self, name: &str) -> Option<&Stage> {
        let index = *self.last_by_name.get(&name.to_ascii_lowercase())?;
        self.stages.get(index)
    }
}

/// A Dockerfile whose stages do not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Instruction(#[from] InstructionError),
    #[error("the Dockerfile has no FROM instruction")]
    NoStages { span: Span },
    #[error("{keyword} cannot come before the first FROM")]
    BeforeFrom { keyword: String, span: Span },
    #[error("cannot expand {instruction}: {message}")]
    Expand {
        instruction: &'static str,
        message: String,
        span: Span,
    },
    #[error("base name ({image}) should not be blank")]
    BlankBaseName { image: String, span: Span },
    /// Stages built FROM other stages and RUN steps copy more variables than
    /// [`crate::frontend::limits::MAX_VARIABLE_COPIES`] in all.
    #[error(
        "the Dockerfile copies more than {limit} variables in all into stages and RUN steps \
         (a stage built FROM a stage starts with a copy of its ENV and ARG values; a RUN gets \
         every one in scope)"
    )]
    TooManyVariableCopies { limit: usize, span: Span },
    #[error("source can't be a URL for COPY: {url}")]
    CopyFromUrl { url: String, span: Span },
    #[error("empty platform value from expression {expression}")]
    EmptyPlatform { expression: String, span: Span },
    #[error("failed to parse platform {expression}")]
    BadPlatform {
        expression: String,
        source: crate::oci::PlatformError,
        span: Span,
    },
    #[error("invalid stage index {index}: the Dockerfile has {count} stage(s)")]
    InvalidStageIndex {
        index: String,
        count: usize,
        span: Span,
    },
    #[error("invalid image reference \"{reference}\"")]
    InvalidReference {
        reference: String,
        source: ReferenceError,
        span: Span,
    },
    /// An ONBUILD trigger of the base does not parse or resolve; `span` is the FROM line, as the
    /// trigger is not written in this file.
    #[error(
        "ONBUILD trigger {:?} of {}: {}",
        .failure.trigger,
        .failure.origin,
        .failure.problem
    )]
    Trigger {
        failure: Box<TriggerFailure>,
        span: Span,
    },
}

/// What went wrong with an ONBUILD trigger ([`StageError::Trigger`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerFailure {
    /// `image NAME` or `stage NAME`: where the trigger comes from.
    pub origin: String,
    /// The trigger as the base gave it.
    pub trigger: String,
    pub problem: String,
    /// What the user can do about `problem`, when the underlying error knows.
    pub help: Option<String>,
}

impl Located for StageError {
    fn span(&self) -> Option<Span> {
        match self {
            StageError::Instruction(e) => e.span(),
            StageError::NoStages { span }
            | StageError::BeforeFrom { span, .. }
            | StageError::Expand { span, .. }
            | StageError::BlankBaseName { span, .. }
            | StageError::TooManyVariableCopies { span, .. }
            | StageError::CopyFromUrl { span, .. }
            | StageError::EmptyPlatform { span, .. }
            | StageError::BadPlatform { span, .. }
            | StageError::InvalidStageIndex { span, .. }
            | StageError::InvalidReference { span, .. }
            | StageError::Trigger { span, .. } => Some(*span),
        }
    }

    fn help(&self) -> Option<String> {
        Some(match self {
            StageError::Instruction(e) => return e.help(),
            StageError::NoStages { .. } => "start a build stage with FROM IMAGE".into(),
            StageError::BeforeFrom { .. } => {
                "only ARG can come before the first FROM; move this into a stage".into()
            }
            StageError::Expand { .. } => "check the variable syntax, e.g. ${NAME:-default}".into(),
            StageError::BlankBaseName { .. } | StageError::EmptyPlatform { .. } => {
                "give the variable a value with ARG before the first FROM or --build-arg".into()
            }
            StageError::BadPlatform { .. } => {
                "write OS/ARCH or OS/ARCH/VARIANT, such as linux/arm64, or $BUILDPLATFORM or \
                 $TARGETPLATFORM"
                    .into()
            }
            StageError::InvalidStageIndex { count, .. } => format!(
                "stage indexes go from 0 to {}; or name the stage with FROM ... AS NAME",
                count.saturating_sub(1)
            ),
            StageError::CopyFromUrl { .. } => {
                "use ADD to download a URL, or RUN with a download tool".into()
            }
            StageError::InvalidReference { .. } => {
                "an image is [REGISTRY/]NAME[:TAG][@DIGEST] in lower case, or the name of a stage; \
                 check the variables in it"
                    .into()
            }
            StageError::TooManyVariableCopies { .. } => {
                "set fewer variables (ENV, ARG) where many stages or RUN steps follow them; \
                 put many values in a file the steps read"
                    .into()
            }
            StageError::Trigger { failure, .. } => match &failure.help {
                Some(help) => format!("{help}; the trigger comes from the base {}", failure.origin),
                None => format!(
                    "the trigger comes from the base {}, which runs it at the start of this \
                     stage; fix it there, or build from a base without it",
                    failure.origin
                ),
            },
        })
    }
}

/// Ordered variables for the expander; a later entry wins.
///
/// Indexed by name, so that setting and looking up a variable costs O(1), not a scan of the
/// scope: a stage of 100,000 ENV lines was quadratic.
#[derive(Debug, Clone, Default)]
struct Vars {
    /// In order; `None` where a variable was set again later.
    entries: Vec<Option<(String, String)>>,
    /// Each name's live entry.
    index: HashMap<String, usize>,
}

impl Vars {
    fn from_pairs(pairs: &[(String, String)]) -> Vars {
        let mut vars = Vars::default();
        for (key, value) in pairs {
            vars.set(key, value);
        }
        vars
    }

    fn set(&mut self, key: &str, value: &str) {
        if let Some(old) = self.index.get(key).copied() {
            if let Some(slot) = self.entries.get_mut(old) {
                *slot = None;
            }
            if self.entries.len() > 2 * self.index.len() + 16 {
                self.compact();
            }
        }
        self.index.insert(key.to_string(), self.entries.len());
        self.entries
            .push(Some((key.to_string(), value.to_string())));
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.index.remove(key)
            && let Some(slot) = self.entries.get_mut(old)
        {
            *slot = None;
        }
    }

    /// Drops the entries of variables set again later, keeping the order.
    fn compact(&mut self) {
        self.entries.retain(Option::is_some);
        for (position, entry) in self.entries.iter().enumerate() {
            if let Some((key, _)) = entry {
                self.index.insert(key.clone(), position);
            }
        }
    }

    /// The variables in order (a later entry wins; each name once).
    fn into_pairs(self) -> Vec<(String, String)> {
        self.entries.into_iter().flatten().collect()
    }
}

impl Env for Vars {
    fn lookup(&self, name: &str) -> Option<String> {
        let position = *self.index.get(name)?;
        self.entries
            .get(position)?
            .as_ref()
            .map(|(_, value)| value.clone())
    }
}

/// BuildKit's platform args (`defaultArgs` in convert.go) for a build on `build` for `target`.
/// The OS versions are Windows' (`os(version)`); a Linux platform has none, and BuildKit still
/// defines them, empty.
pub(crate) fn platform_args(build: &Platform, target: &Platform) -> [(&'static str, String); 10] {
    let variant = |p: &Platform| p.variant_or_empty().to_string();
    [
        ("BUILDPLATFORM", build.to_string()),
        ("BUILDOS", build.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", build.architecture.clone()),
        ("BUILDVARIANT", variant(build)),
        ("TARGETPLATFORM", target.to_string()),
        ("TARGETOS", target.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", target.architecture.clone()),
        ("TARGETVARIANT", variant(target)),
    ]
}

/// BuildKit's predefined args (`defaultArgs` in convert.go), each overridable by a build arg.
fn predefined_args(opts: &ResolveOptions, target_name: &str) -> Vars {
    let mut vars = Vars::default();
    let platforms = platform_args(&opts.build_platform, &opts.target());
    for (key, value) in platforms
        .into_iter()
        .chain([("TARGETSTAGE", target_name.to_string())])
    {
        let value = opts.build_args.get(key).cloned().unwrap_or(value);
        vars.set(key, &value);
    }
    vars
}

/// BuildKit's predefined args for a build of `opts` whose target stage is `target_name`, as
/// ordered pairs (what the lint's FROM checks expand with).
pub(crate) fn predefined_arg_pairs(
    opts: &ResolveOptions,
    target_name: &str,
) -> Vec<(String, String)> {
    predefined_args(opts, target_name).into_pairs()
}

/// A stage while its FROM and instructions are collected.
struct Pending<'a> {
    from: instruction::From,
    from_node: &'a Node,
    body: Vec<(Instruction, &'a Node)>,
}

/// Every stage's name and an index of them, so that looking a stage up by name costs
/// O(log n), not a scan of the stages: a Dockerfile of 100,000 stages, each naming the one before
/// it, resolved in quadratic time (minutes) before this index.
struct StageNames {
    /// Every stage's name (lower case, as FROM keeps it), by index.
    names: Vec<Option<String>>,
    /// Each name's stages, in ascending order.
    by_name: HashMap<String, Vec<usize>>,
}

impl StageNames {
    fn new(names: Vec<Option<String>>) -> StageNames {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, name) in names.iter().enumerate() {
            if let Some(name) = name {
                by_name.entry(name.clone()).or_default().push(index);
            }
        }
        StageNames { names, by_name }
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    /// The last stage named exactly `name` among the stages before `index` (how FROM finds
    /// its base stage).
    fn last_before(&self, name: &str, index: usize) -> Option<usize> {
        let indices = self.by_name.get(name)?;
        let before = indices.partition_point(|&i| i < index);
        before
            .checked_sub(1)
            .and_then(|at| indices.get(at).copied())
    }

    /// The last stage named `name` (ASCII case-insensitive) in the whole file.
    fn last(&self, name: &str) -> Option<usize> {
        let lower;
        let key = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        self.by_name.get(key)?.last().copied()
    }
}

/// A Dockerfile split into stages, with its global scope, before the stages are resolved.
struct Prepared<'a> {
    pending: Vec<Pending<'a>>,
    lexer: Lexer,
    names: StageNames,
    globals: Vars,
    /// The names of the ARGs declared so far (the meta args).
    declared: Vec<String>,
}

/// Splits `df` into meta args and stages, and computes the global scope.
fn prepare<'a>(df: &'a Dockerfile, opts: &ResolveOptions) -> Result<Prepared<'a>, StageError> {
    let mut meta: Vec<(Arg, &Node)> = Vec::new();
    let mut pending: Vec<Pending<'_>> = Vec::new();
    for node in &df.nodes {
        let inst = Instruction::from_node(node)?;
        match (inst, pending.last_mut()) {
            // A name used twice is only a check's finding (DuplicateStageName), as in BuildKit:
            // a lookup by name finds the last stage of that name defined before it (FROM) or in
            // the whole file (`--from`, `--target`), as BuildKit's overwritten `statesByName`.
            (Instruction::From(from), _) => {
                pending.push(Pending {
                    from,
                    from_node: node,
                    body: Vec::new(),
                });
            }
            (Instruction::Arg(arg), None) => meta.push((arg, node)),
            (other, None) => {
                return Err(StageError::BeforeFrom {
                    keyword: other.keyword().to_string(),
                    span: instruction::keyword_span(node),
                });
            }
            (other, Some(stage)) => stage.body.push((other, node)),
        }
    }
    if pending.is_empty() {
        let span = df.nodes.first().map_or(Span::line(1), |n| n.span);
        return Err(StageError::NoStages { span });
    }

    let lexer = Lexer::new(df.directives.escape);
    let names: Vec<Option<String>> = pending.iter().map(|p| p.from.as_name.clone()).collect();
    let target_name = match &opts.target {
        Some(t) => t.clone(),
        // BuildKit's `defaultArgs`: an unnamed last stage is `default`.
        None => names
            .last()
            .cloned()
            .flatten()
            .unwrap_or_else(|| "default".to_string()),
    };
    let mut declared: Vec<String> = Vec::new();

    // The global scope: predefined args, then meta args in order (BuildKit's buildMetaArgs).
    let mut globals = predefined_args(opts, &target_name);
    for (arg, node) in &meta {
        for decl in &arg.args {
            declared.push(decl.name.clone());
            if let Some(v) = arg_value(opts, &lexer, node, decl, &globals, None)? {
                globals.set(&decl.name, &v);
            }
        }
    }
    Ok(Prepared {
        pending,
        lexer,
        names: StageNames::new(names),
        globals,
        declared,
    })
}

/// The external images the stages of `df` are built `FROM` (every stage's, needed by the
/// target or not), by their expanded names ([`Stage::base_name`], the keys of
/// [`ResolveOptions::base_images`]), each once, in order. Only FROM lines and the global scope
/// are read, so this works before any image config is known.
pub fn base_image_names(
    df: &Dockerfile,
    opts: &ResolveOptions,
) -> Result<Vec<ImageKey>, StageError> {
    let prepared = prepare(df, opts)?;
    let cx = StageCx {
        lexer: &prepared.lexer,
        opts,
        globals: &prepared.globals,
        names: &prepared.names,
        copies: std::cell::Cell::new(0),
    };
    let mut images: Vec<ImageKey> = Vec::new();
    let mut seen: std::collections::HashSet<ImageKey> = std::collections::HashSet::new();
    let mut platforms: Vec<Platform> = Vec::new();
    for (index, p) in prepared.pending.iter().enumerate() {
        let from = cx.expand_from(p, index)?;
        let platform = cx.effective_platform(&from, &platforms);
        if let Base::Image(_) = from.base {
            let key = ImageKey::new(&from.base_name, &platform);
            if seen.insert(key.clone()) {
                images.push(key);
            }
        }
        platforms.push(platform);
    }
    Ok(images)
}

/// `SOURCE_DATE_EPOCH` as the build reads it before planning (BuildKit's
/// `getBuildArgValue`): the build arg, else the global ARG's non-empty value.
pub fn source_date_epoch_arg(
    df: &Dockerfile,
    opts: &ResolveOptions,
) -> Result<Option<String>, StageError> {
    if let Some(value) = opts.build_args.get(SOURCE_DATE_EPOCH) {
        return Ok(Some(value.clone()));
    }
    let prepared = prepare(df, opts)?;
    Ok(prepared
        .globals
        .lookup(SOURCE_DATE_EPOCH)
        .filter(|value| !value.is_empty()))
}

/// The build arg the image's times come from.
const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// The remote source a stage named by `SOURCE_DATE_EPOCH` gives the time of (BuildKit v0.32
/// `sourceDateEpochStageSource`, dockerfile2llb/epoch.go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochStage {
    /// The stage's name (lower case).
    pub stage: String,
    /// Its FROM.
    pub span: Span,
    /// The one ADD's source, expanded.
    pub source: String,
    /// `--checksum`, expanded.
    pub checksum: Option<String>,
    /// `--keep-git-dir`.
    pub keep_git_dir: Option<bool>,
}

/// A stage named by `SOURCE_DATE_EPOCH` that cannot give a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochStageError {
    #[error(transparent)]
    Stage(#[from] StageError),
    /// BuildKit's rules for such a stage, in its words.
    #[error("{reason} (stage {stage})")]
    Rule {
        stage: String,
        reason: String,
        span: Span,
    },
}

/// The stage of `df` named `name` (case-insensitive), read as BuildKit reads a
/// `SOURCE_DATE_EPOCH` stage: `FROM scratch` (expanded in the global scope without
/// `SOURCE_DATE_EPOCH`), then only ARGs (a build arg, else the default expanded in what is in
/// scope: the global scope first) and exactly one ADD of exactly one source, expanded in that
/// scope. `None` when no stage has that name. Whether the source is a URL or a git repository
/// is the caller's to check (`SOURCE_DATE_EPOCH stage source must be a single HTTP(S) or Git
/// ADD`).
pub fn epoch_stage(
    df: &Dockerfile,
    opts: &ResolveOptions,
    name: &str,
) -> Result<Option<EpochStage>, EpochStageError> {
    let prepared = prepare(df, opts)?;
    let Some(pending) = prepared.pending.iter().rev().find(|p| {
        p.from
            .as_name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    }) else {
        return Ok(None);
    };
    let stage = pending.from.as_name.clone().unwrap_or_default();
    let rule = |reason: &str| EpochStageError::Rule {
        stage: stage.clone(),
        reason: reason.to_string(),
        span: pending.from.span,
    };
    let lexer = &prepared.lexer;
    let mut scope = prepared.globals.clone();
    scope.remove(SOURCE_DATE_EPOCH);
    let base = expand(
        lexer,
        "FROM",
        pending.from_node,
        &pending.from.image,
        &scope,
    )?;
    if base != "scratch" {
        return Err(rule("SOURCE_DATE_EPOCH stage must use FROM scratch"));
    }
    let mut found: Option<EpochStage> = None;
    for (instruction, node) in &pending.body {
        match instruction {
            Instruction::Arg(arg) => {
                for decl in &arg.args {
                    if let Some(value) = opts.build_args.get(&decl.name) {
                        scope.set(&decl.name, value);
                    } else if let Some(default) = &decl.default {
                        let value = expand(lexer, "ARG", node, default, &scope)?;
                        scope.set(&decl.name, &value);
                    }
                }
            }
            Instruction::Add(add) => {
                if found.is_some() {
                    return Err(rule(
                        "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD",
                    ));
                }
                let [source] = add.sources.as_slice() else {
                    return Err(rule(
                        "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source",
                    ));
                };
                if !add.inline.is_empty() {
                    return Err(rule(
                        "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source",
                    ));
                }
                let checksum = match &add.checksum {
                    Some(checksum) => Some(expand(lexer, "ADD", node, checksum, &scope)?),
                    None => None,
                };
                found = Some(EpochStage {
                    stage: stage.clone(),
                    span: pending.from.span,
                    source: expand(lexer, "ADD", node, source, &scope)?,
                    checksum,
                    keep_git_dir: add.keep_git_dir,
                });
            }
            other => {
                return Err(rule(&format!(
                    "SOURCE_DATE_EPOCH stage does not meet source-only requirements: \
                     unsupported {} instruction",
                    other.keyword()
                )));
            }
        }
    }
    match found {
        Some(found) => Ok(Some(found)),
        None => Err(rule(
            "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD",
        )),
    }
}

/// Groups `df` into stages and resolves their variables.
pub fn resolve(df: &Dockerfile, opts: &ResolveOptions) -> Result<Resolved, StageError> {
    let Prepared {
        pending,
        lexer,
        names,
        globals,
        mut declared,
    } = prepare(df, opts)?;
    let cx = StageCx {
        lexer: &lexer,
        opts,
        globals: &globals,
        names: &names,
        copies: std::cell::Cell::new(0),
    };
    let mut stages: Vec<Stage> = Vec::new();
    for (index, p) in pending.iter().enumerate() {
        let stage = cx.stage(index, p, &stages, &mut declared)?;
        stages.push(stage);
    }

    let mut warnings = Vec::new();
    let unused: Vec<&str> = opts
        .build_args
        .keys()
        .map(String::as_str)
        .filter(|k| !declared.iter().any(|d| d == k))
        // The global scope holds every predefined arg (and the meta args, already declared).
        .filter(|k| !PROXY_ARGS.contains(k) && globals.lookup(k).is_none())
        // BuildKit's special build args: the builder reads them (the image's created times,
        // the build checks' configuration).
        .filter(|k| *k != "SOURCE_DATE_EPOCH" && *k != crate::frontend::lint::CHECK_BUILD_ARG)
        .collect();
    if !unused.is_empty() {
        warnings.push(StageWarning {
            message: format!(
                "build arguments were not consumed by any ARG: {}",
                unused.join(", ")
            ),
            span: None,
        });
    }
    let proxy_env = PROXY_ARGS
        .iter()
        .filter_map(|k| opts.build_args.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    let last_by_name = names
        .by_name
        .iter()
        .filter_map(|(name, indices)| Some((name.clone(), *indices.last()?)))
        .collect();
    Ok(Resolved {
        meta_args: globals.into_pairs(),
        target_platform: opts.target(),
        stages,
        proxy_env,
        warnings,
        last_by_name,
    })
}

/// What [`StageCx::effective_platform`] reads of an earlier stage: the stages resolved so far,
/// or only their platforms (before the stages are resolved).
trait StagePlatform {
    fn platform(&self) -> &Platform;
}

impl StagePlatform for Platform {
    fn platform(&self) -> &Platform {
        self
    }
}

impl StagePlatform for Stage {
    fn platform(&self) -> &Platform {
        &self.effective_platform
    }
}

/// A FROM line expanded in the global scope.
struct ExpandedFrom {
    /// The base name after expansion (a named context's image when one replaces it).
    base_name: String,
    /// `--platform` after expansion, and parsed.
    platform: Option<(String, Platform)>,
    base: Base,
}

/// What every stage's resolution reads.
struct StageCx<'a> {
    lexer: &'a Lexer,
    opts: &'a ResolveOptions,
    globals: &'a Vars,
    names: &'a StageNames,
    /// Variables copied into stages from their base stages and into RUN steps so far.
    copies: std::cell::Cell<usize>,
}

impl StageCx<'_> {
    fn stage(
        &self,
        index: usize,
        p: &Pending<'_>,
        earlier: &[Stage],
        declared: &mut Vec<String>,
    ) -> Result<Stage, StageError> {
        let from = &p.from;
        let expanded = self.expand_from(p, index)?;
        let effective_platform = self.effective_platform(&expanded, earlier);
        let ExpandedFrom {
            base_name,
            platform,
            base,
        } = expanded;
        let platform = platform.map(|(text, _)| text);
        let mut dependencies = vec![Dependency {
            on: match &base {
                Base::Stage(i) => Source::Stage(*i),
                Base::Scratch | Base::Image(_) => Source::Image(base_name.clone()),
            },
            kind: DependencyKind::From,
            span: from.image_span,
        }];
        let image = match &base {
            Base::Image(_) => self
                .opts
                .base_images
                .get(&ImageKey::new(&base_name, &effective_platform)),
            Base::Scratch | Base::Stage(_) => None,
        };
        let parent = match &base {
            Base::Stage(i) => earlier.get(*i),
            Base::Scratch | Base::Image(_) => None,
        };
        if let Some(parent) = parent {
            // Each stage keeps its own copy, so the copies are what the cap bounds.
            self.copy_variables(parent.vars.len(), from.span)?;
        }
        let mut vars = match (parent, image) {
            (Some(parent), _) => Vars::from_pairs(&parent.vars),
            (None, image) => {
                let mut v = Vars::default();
                for (key, value) in image.iter().flat_map(|i| &i.env) {
                    v.set(key, value);
                }
                v
            }
        };
        // BuildKit's dispatchStages: PATH is always set, to the default when the image has none.
        if vars.lookup("PATH").is_none() {
            vars.set("PATH", DEFAULT_PATH);
        }

        // The triggers (BuildKit's resolveStages): an image's config OnBuild, or the parent
        // stage's own ONBUILD instructions; never those the parent ran itself.
        let (origin, triggers): (String, Vec<&str>) = match (parent, image) {
            (Some(parent), _) => (
                format!("stage {}", parent.display_name()),
                parent
                    .instructions
                    .iter()
                    .filter_map(|i| match i {
                        Instruction::Onbuild(o) => Some(o.expression.as_str()),
                        _ => None,
                    })
                    .collect(),
            ),
            (None, image) => (
                format!("image {base_name}"),
                image
                    .iter()
                    .flat_map(|i| &i.onbuild)
                    .map(String::as_str)
                    .collect(),
            ),
        };
        // A stage a named context replaces runs nothing of its own, not even triggers.
        let replaced = from
            .as_name
            .as_deref()
            .is_some_and(|n| self.named_image(n).is_some());
        let triggers = if replaced { Vec::new() } else { triggers };
        let mut instructions = Vec::new();
        for trigger in triggers {
            let fail = |problem: String, help: Option<String>| StageError::Trigger {
                failure: Box::new(TriggerFailure {
                    origin: origin.clone(),
                    trigger: trigger.to_string(),
                    problem,
                    help,
                }),
                span: from.span,
            };
            let node = trigger_node(trigger, from.span).map_err(|(p, h)| fail(p, h))?;
            let inst = Instruction::from_node(&node).map_err(|e| fail(e.to_string(), e.help()))?;
            let resolved = self
                .instruction(&inst, &node, &mut vars, &mut dependencies, declared)
                .map_err(|e| fail(e.to_string(), e.help()))?;
            instructions.push(resolved);
        }
        let onbuild_count = instructions.len();
        for (inst, node) in p.body.iter().filter(|_| !replaced) {
            let resolved = self.instruction(inst, node, &mut vars, &mut dependencies, declared)?;
            instructions.push(resolved);
        }
        Ok(Stage {
            index,
            name: from.as_name.clone(),
            base,
            base_name,
            platform,
            effective_platform,
            instructions,
            onbuild_count,
            dependencies,
            vars: vars.into_pairs(),
            span: from.span,
        })
    }

    /// The platform of a stage whose FROM is `from`, given the platforms of the stages before
    /// it: its base stage's, else its own `--platform`, else the target's. `FROM scratch` is
    /// always the target's: BuildKit gives the empty image the target platform whatever
    /// `--platform` says (`resolveReachableStages`).
    fn effective_platform(&self, from: &ExpandedFrom, earlier: &[impl StagePlatform]) -> Platform {
        if let Base::Stage(parent) = from.base
            && let Some(stage) = earlier.get(parent)
        {
            return stage.platform().clone();
        }
        match (&from.base, &from.platform) {
            (Base::Image(_), Some((_, platform))) => platform.clone(),
            _ => self.opts.target(),
        }
    }

    /// A stage's FROM line, expanded in the global scope: the base name, the platform and what
    /// the base is. `index` is the stage's own: its base stage is one before it.
    fn expand_from(&self, p: &Pending<'_>, index: usize) -> Result<ExpandedFrom, StageError> {
        let from = &p.from;
        let base_name = expand(self.lexer, "FROM", p.from_node, &from.image, self.globals)?;
        if base_name.is_empty() {
            return Err(StageError::BlankBaseName {
                image: from.image.clone(),
                span: from.image_span,
            });
        }
        let platform = match &from.platform {
            None => None,
            Some(expr) => {
                let value = expand(self.lexer, "FROM", p.from_node, expr, self.globals)?;
                if value.is_empty() {
                    return Err(StageError::EmptyPlatform {
                        expression: expr.clone(),
                        span: p.from_node.find_span("--platform"),
                    });
                }
                let parsed = Platform::parse(&value).map_err(|source| StageError::BadPlatform {
                    expression: expr.clone(),
                    source,
                    span: p.from_node.find_span("--platform"),
                })?;
                Some((value, parsed))
            }
        };
        let expanded = |base_name: String, base: Base| ExpandedFrom {
            base_name,
            platform: platform.clone(),
            base,
        };
        // A named context replaces the stage itself (BuildKit never looks at its FROM then).
        if let Some(image) = from.as_name.as_deref().and_then(|n| self.named_image(n)) {
            return Ok(expanded(image.to_string(), Base::Image(image.to_string())));
        }
        // BuildKit looks the base up among the stages already defined, by exact (lower-case)
        // name; the latest of them when a name is used twice.
        let base = match self.names.last_before(&base_name, index) {
            Some(index) => Base::Stage(index),
            // Exactly: BuildKit compares `== "scratch"`, so `SCRATCH` is an (invalid) reference.
            None if base_name == "scratch" => Base::Scratch,
            None => match self.named_image(&base_name) {
                Some(image) => return Ok(expanded(image.to_string(), Base::Image(image.into()))),
                None => Base::Image(checked_image(&base_name, from.image_span)?),
            },
        };
        Ok(expanded(base_name, base))
    }

    fn instruction(
        &self,
        inst: &Instruction,
        node: &Node,
        vars: &mut Vars,
        deps: &mut Vec<Dependency>,
        declared: &mut Vec<String>,
    ) -> Result<Instruction, StageError> {
        let kw = inst.keyword();
        let x = |word: &str, vars: &Vars| expand(self.lexer, kw, node, word, vars);
        let xs = |words: &[String], vars: &Vars| -> Result<Vec<String>, StageError> {
            words.iter().map(|w| x(w, vars)).collect()
        };
        let xo = |word: &Option<String>, vars: &Vars| -> Result<Option<String>, StageError> {
            word.as_deref().map(|w| x(w, vars)).transpose()
        };
        Ok(match inst {
            Instruction::Env(e) => {
                // Every pair is expanded with the scope before this ENV, then all are set.
                let pairs = self.pairs(&e.pairs, node, kw, vars)?;
                for kv in &pairs {
                    vars.set(&kv.key, &kv.value);
                }
                Instruction::Env(EnvInstruction {
                    pairs,
                    span: e.span,
                })
            }
            Instruction::Label(l) => Instruction::Label(Label {
                pairs: self.pairs(&l.pairs, node, kw, vars)?,
                span: l.span,
            }),
            Instruction::Arg(a) => {
                let mut args = Vec::new();
                for decl in &a.args {
                    declared.push(decl.name.clone());
                    let value =
                        arg_value(self.opts, self.lexer, node, decl, vars, Some(self.globals))?;
                    if let Some(v) = &value {
                        vars.set(&decl.name, v);
                    }
                    args.push(ArgDecl {
                        name: decl.name.clone(),
                        default: value,
                    });
                }
                Instruction::Arg(Arg { args, span: a.span })
            }
            Instruction::Expose(e) => {
                // BuildKit's dispatchExpose splits each expanded word (`EXPOSE $PORTS`).
                let mut ports = Vec::new();
                for word in &e.ports {
                    let split = self.lexer.expand_words(word, vars);
                    ports.extend(split.map_err(|err| expand_error(kw, node, word, err))?);
                }
                Instruction::Expose(Expose {
                    ports,
                    span: e.span,
                })
            }
            Instruction::Copy(c) => {
                if let (Some(from), Some(span)) = (&c.from, c.from_span) {
                    let on = self.copy_source(from, span)?;
                    deps.push(Dependency {
                        on,
                        kind: DependencyKind::CopyFrom,
                        span,
                    });
                }
                let sources = xs(&c.sources, vars)?;
                // BuildKit's dispatchCopy: only ADD downloads; a URL given to COPY is an error
                // (checked after expansion, as a variable may hold the URL).
                if let Some(url) = sources
                    .iter()
                    .find(|s| s.starts_with("http://") || s.starts_with("https://"))
                {
                    return Err(StageError::CopyFromUrl {
                        url: url.clone(),
                        span: c.span,
                    });
                }
                Instruction::Copy(Copy {
                    // A named context's image is read under its own reference.
                    from: c.from.as_deref().map(|from| self.read_from(from)),
                    inline: self.inline(&c.inline, node, kw, vars)?,
                    sources,
                    dest: x(&c.dest, vars)?,
                    chown: xo(&c.chown, vars)?,
                    // BuildKit's CopyCommand.Expand expands --chmod too (`--chmod=${mode}`).
                    chmod: xo(&c.chmod, vars)?,
                    ..c.clone()
                })
            }
            Instruction::Add(a) => Instruction::Add(Add {
                inline: self.inline(&a.inline, node, kw, vars)?,
                sources: xs(&a.sources, vars)?,
                dest: x(&a.dest, vars)?,
                chown: xo(&a.chown, vars)?,
                chmod: xo(&a.chmod, vars)?,
                checksum: xo(&a.checksum, vars)?,
                ..a.clone()
            }),
            Instruction::Workdir(w) => Instruction::Workdir(Workdir {
                path: x(&w.path, vars)?,
                span: w.span,
            }),
            Instruction::User(u) => Instruction::User(User {
                user: x(&u.user, vars)?,
                span: u.span,
            }),
            Instruction::Volume(v) => {
                let paths = xs(&v.paths, vars)?;
                if paths.iter().any(String::is_empty) {
                    return Err(instruction::empty_volume(v.span).into());
                }
                Instruction::Volume(Volume {
                    paths,
                    span: v.span,
                })
            }
            Instruction::StopSignal(s) => Instruction::StopSignal(StopSignal {
                signal: x(&s.signal, vars)?,
                span: s.span,
            }),
            Instruction::Run(r) => {
                // The step's environment and history line: every variable in scope.
                self.copy_variables(vars.index.len(), r.span)?;
                let mut mounts = Vec::new();
                for m in &r.mounts {
                    let mut expander =
                        |word: &str| self.lexer.expand_word(word, &*vars).map_err(|e| e.message);
                    let mut mount = Mount::parse(&m.raw, m.span, Some(&mut expander))?;
                    // A named context's image is mounted under its own reference.
                    mount.from = mount.from.as_deref().map(|from| self.read_from(from));
                    if let Some(from) = &mount.from {
                        // BuildKit resolves mount sources by stage name only, never by index.
                        let on = match self.stage_named(from) {
                            Some(i) => Source::Stage(i),
                            None => match self.named_image(from) {
                                Some(image) => Source::Image(image.to_string()),
                                None => Source::Image(checked_image(from, m.span)?),
                            },
                        };
                        deps.push(Dependency {
                            on,
                            kind: DependencyKind::MountFrom,
                            span: m.span,
                        });
                    }
                    mounts.push(mount);
                }
                Instruction::Run(Run {
                    mounts,
                    ..r.clone()
                })
            }
            other => other.clone(),
        })
    }

    fn pairs(
        &self,
        pairs: &[KeyValue],
        node: &Node,
        kw: &'static str,
        vars: &Vars,
    ) -> Result<Vec<KeyValue>, StageError> {
        pairs
            .iter()
            .map(|kv| {
                Ok(KeyValue {
                    key: expand(self.lexer, kw, node, &kv.key, vars)?,
                    value: expand(self.lexer, kw, node, &kv.value, vars)?,
                })
            })
            .collect()
    }

    /// Expands the bodies of unquoted heredocs like BuildKit's `ExpandRaw`: a backslash lexer
    /// that leaves quotes alone, whatever the file's escape character.
    fn inline(
        &self,
        files: &[InlineFile],
        node: &Node,
        kw: &'static str,
        vars: &Vars,
    ) -> Result<Vec<InlineFile>, StageError> {
        let raw = Lexer::new('\\').with_skip_process_quotes(true);
        files
            .iter()
            .map(|f| {
                if !f.expand {
                    return Ok(f.clone());
                }
                let content =
                    raw.expand_word(&f.content, vars)
                        .map_err(|e| StageError::Expand {
                            instruction: kw,
                            message: format!("in heredoc {}: {}", f.name, e.message),
                            span: node.span,
                        })?;
                Ok(InlineFile {
                    content,
                    ..f.clone()
                })
            })
            .collect()
    }

    /// Counts `count` more copies of variables, at `span`; past [`MAX_VARIABLE_COPIES`] in all
    /// an error.
    fn copy_variables(&self, count: usize, span: Span) -> Result<(), StageError> {
        let copies = self.copies.get().saturating_add(count);
        if copies > MAX_VARIABLE_COPIES {
            return Err(StageError::TooManyVariableCopies {
                limit: MAX_VARIABLE_COPIES,
                span,
            });
        }
        self.copies.set(copies);
        Ok(())
    }

    /// The stage with this name (case-insensitive), wherever it is in the file; the last one
    /// when several have it.
    fn stage_named(&self, name: &str) -> Option<usize> {
        self.names.last(name)
    }

    /// `COPY --from`: an index (BuildKit: `strconv.Atoi`), else a stage name, else an image.
    fn copy_source(&self, from: &str, span: Span) -> Result<Source, StageError> {
        if let Some(index) = parse_go_int(from) {
            return usize::try_from(index)
                .ok()
                .filter(|i| *i < self.names.len())
                .map(Source::Stage)
                .ok_or_else(|| StageError::InvalidStageIndex {
                    index: from.to_string(),
                    count: self.names.len(),
                    span,
                });
        }
        Ok(match self.stage_named(from) {
            Some(i) => Source::Stage(i),
            None => match self.named_image(from) {
                Some(image) => Source::Image(image.to_string()),
                None => Source::Image(checked_image(from, span)?),
            },
        })
    }

    /// What a `--from` (COPY or mount) reads under: a stage index or name as written; a name a
    /// named context gives an image, that image's reference.
    fn read_from(&self, from: &str) -> String {
        if parse_go_int(from).is_some() || self.stage_named(from).is_some() {
            return from.to_string();
        }
        self.named_image(from).unwrap_or(from).to_string()
    }

    /// The image a named context gives `name` (`scratch` and `context` are never looked up,
    /// as in BuildKit's `namedContextFunc`).
    fn named_image(&self, name: &str) -> Option<&str> {
        if name.eq_ignore_ascii_case("scratch") || name.eq_ignore_ascii_case("context") {
            return None;
        }
        self.opts
            .named_images
            .get(&named_context_key(name))
            .map(String::as_str)
    }
}

/// A trigger parsed into its one instruction, placed at `span` (the FROM line: the trigger is
/// not written in this file, so every span derived from it points there). The error is the
/// problem and, when known, what to do.
pub(crate) fn trigger_node(trigger: &str, span: Span) -> Result<Node, (String, Option<String>)> {
    let not_one = || {
        (
            "a trigger must be exactly one instruction".to_string(),
            Some("an ONBUILD trigger is one instruction, e.g. RUN make".to_string()),
        )
    };
    let df = crate::frontend::parse(trigger.as_bytes()).map_err(|e| match e {
        SyntaxError::NoInstructions { .. } => not_one(),
        e => (e.to_string(), e.help()),
    })?;
    let mut nodes = df.nodes.into_iter();
    let (Some(mut node), None) = (nodes.next(), nodes.next()) else {
        return Err(not_one());
    };
    // The rules of the ONBUILD instruction itself (Docker refuses these in an image's config
    // too: "maintainer isn't allowed as an ONBUILD trigger").
    let keyword = node.keyword.to_ascii_uppercase();
    let problem = match keyword.as_str() {
        "ONBUILD" => Some("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string()),
        "FROM" | "MAINTAINER" => Some(format!("{keyword} isn't allowed as an ONBUILD trigger")),
        _ => None,
    };
    if let Some(problem) = problem {
        return Err((
            problem,
            Some("ONBUILD takes any instruction except ONBUILD, FROM and MAINTAINER".into()),
        ));
    }
    node.span = span;
    node.segments.clear();
    Ok(node)
}

/// The value an ARG declaration takes: the `--build-arg` value; else its default expanded with
/// `scope`; else, inside a stage (`globals` given), the global value of the same name.
fn arg_value(
    opts: &ResolveOptions,
    lexer: &Lexer,
    node: &Node,
    decl: &ArgDecl,
    scope: &Vars,
    globals: Option<&Vars>,
) -> Result<Option<String>, StageError> {
    if let Some(value) = opts.build_args.get(&decl.name) {
        return Ok(Some(value.clone()));
    }
    match &decl.default {
        Some(default) => expand(lexer, "ARG", node, default, scope).map(Some),
        None => Ok(globals.and_then(|g| g.lookup(&decl.name))),
    }
}

/// `name` when it is a valid image reference (BuildKit fails the build on one that is not, e.g.
/// `img:` from an unset variable); `span` is where it was written.
fn checked_image(name: &str, span: Span) -> Result<String, StageError> {
    Reference::parse_normalized(name)
        .map(|_| name.to_string())
        .map_err(|source| StageError::InvalidReference {
            reference: name.to_string(),
            source,
            span,
        })
}

/// Go's `strconv.Atoi`: optional sign, then ASCII digits.
fn parse_go_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Expands one word of `node`, pointing an error at the word.
fn expand(
    lexer: &Lexer,
    instruction: &'static str,
    node: &Node,
    word: &str,
    vars: &Vars,
) -> Result<String, StageError> {
    lexer
        .expand_word(word, vars)
        .map_err(|e| expand_error(instruction, node, word, e))
}

/// The error for a word of `node` that does not expand: it points at the character the expander
/// complained about when the word is written literally in the instruction.
fn expand_error(instruction: &'static str, node: &Node, word: &str, e: ExpandError) -> StageError {
    let span = match instruction::word_offset(node, word, false) {
        Some(off) if e.offset < word.len() => node.span_of(off + e.offset, 1),
        _ => instruction::word_span(node, word, false),
    };
    StageError::Expand {
        instruction,
        message: e.message,
        span,
    }
}
