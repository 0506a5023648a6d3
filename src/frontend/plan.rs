//! The front end in one call: a Dockerfile and its context in, a build plan out.
//!
//! [`plan`] parses the Dockerfile, resolves its stages with the build arguments, builds the stage
//! graph for the target and, for every COPY/ADD of the stages the target needs that reads the
//! build context, lists the context files it reads after `.dockerignore`. This is what
//! `kiln build --dry-run` prints and what the solver will run.

use crate::frontend::context::{BuildContext, ContextError, ContextKind, SourceMatch};
use crate::frontend::dag::{DagError, StageDag, StageId};
use crate::frontend::diagnostic::{Located, Span};
use crate::frontend::instruction::{Instruction, MountType};
use crate::frontend::lint::LintError;
use crate::frontend::stage::{ImageKey, ResolveOptions, Resolved, StageError};
use crate::frontend::{SyntaxError, ast::Dockerfile};
use std::path::{Path, PathBuf};

/// What to plan.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The build context directory.
    pub context_dir: PathBuf,
    /// Where the Dockerfile is (used to find `<Dockerfile>.dockerignore`); `None` when it came
    /// from standard input.
    pub dockerfile_path: Option<PathBuf>,
    /// What the context directory is: a local directory (its ignore file applies) or an
    /// unpacked tar (none does, and its files keep their owners).
    pub context_kind: ContextKind,
    /// `--target`: the stage to build; the last stage when `None`.
    pub target: Option<String>,
    /// Build arguments, platforms.
    pub resolve: ResolveOptions,
}

/// A resolved, pruned build: the stages the target needs, in order, with parallel groups, and
/// the context files each COPY/ADD reads.
#[derive(Debug, Clone)]
pub struct Plan {
    pub dockerfile: Dockerfile,
    pub resolved: Resolved,
    pub target: StageId,
    /// The needed stages in an order where every stage comes after what it reads.
    pub order: Vec<StageId>,
    /// The needed stages in groups; a group's stages depend only on earlier groups, so they can
    /// build in parallel.
    pub groups: Vec<Vec<StageId>>,
    /// External images the needed stages use (FROM, COPY --from, RUN --mount from=).
    pub images: Vec<String>,
    /// [`Plan::images`], each with the platform it is wanted for.
    pub image_keys: Vec<ImageKey>,
    /// The build context, opened (walked, `.dockerignore` applied) only when a needed
    /// instruction reads it.
    pub context: Option<BuildContext>,
    /// For each needed COPY/ADD that reads the context: (stage, instruction index in the
    /// stage, what each source reads).
    pub context_reads: Vec<ContextRead>,
    /// What the build checks found (BuildKit's lint warnings).
    pub lint: crate::frontend::lint::Report,
}

/// The context files one COPY/ADD reads.
#[derive(Debug, Clone)]
pub struct ContextRead {
    pub stage: StageId,
    /// Index into the stage's `instructions`.
    pub instruction: usize,
    /// For a RUN: which of its `--mount`s (a bind mount of the context); `None` for COPY/ADD.
    pub mount: Option<usize>,
    pub sources: Vec<SourceMatch>,
}

/// Why a plan could not be made. Each variant keeps the error of the step that failed, with its
/// location.
///
/// Every variant is transparent: its message and its `source()` are the wrapped error's
/// (`Source` adds only a span, which is no message; thiserror's `transparent` takes one field,
/// hence the hand-written impls below).
#[derive(Debug)]
pub enum PlanError {
    Syntax(SyntaxError),
    Stage(StageError),
    Dag(DagError),
    /// The context could not be opened or its `.dockerignore` is bad.
    Context(ContextError),
    /// A COPY/ADD source is missing or bad; `span` is the instruction in the Dockerfile.
    Source {
        source: Box<ContextError>,
        span: Span,
    },
    /// The build checks' configuration is bad, or `error=true` and they found something.
    Lint(LintError),
}

impl PlanError {
    /// The wrapped error.
    fn inner(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            PlanError::Syntax(err) => err,
            PlanError::Stage(err) => err,
            PlanError::Dag(err) => err,
            PlanError::Context(err) => err,
            PlanError::Source { source, .. } => source.as_ref(),
            PlanError::Lint(err) => err,
        }
    }
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.inner(), f)
    }
}

impl std::error::Error for PlanError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner().source()
    }
}

impl From<SyntaxError> for PlanError {
    fn from(err: SyntaxError) -> PlanError {
        PlanError::Syntax(err)
    }
}

impl From<StageError> for PlanError {
    fn from(err: StageError) -> PlanError {
        PlanError::Stage(err)
    }
}

impl From<DagError> for PlanError {
    fn from(err: DagError) -> PlanError {
        PlanError::Dag(err)
    }
}

impl From<ContextError> for PlanError {
    fn from(err: ContextError) -> PlanError {
        PlanError::Context(err)
    }
}

impl Located for PlanError {
    fn span(&self) -> Option<Span> {
        match self {
            PlanError::Syntax(e) => e.span(),
            PlanError::Stage(e) => e.span(),
            PlanError::Dag(e) => e.span(),
            // A .dockerignore error is located in the ignore file, not the Dockerfile.
            PlanError::Context(_) => None,
            PlanError::Source { span, .. } => Some(*span),
            PlanError::Lint(e) => e.span(),
        }
    }

    fn help(&self) -> Option<String> {
        match self {
            PlanError::Syntax(e) => e.help(),
            PlanError::Stage(e) => e.help(),
            PlanError::Dag(e) => e.help(),
            PlanError::Context(e) => e.help(),
            PlanError::Source { .. } => Some(
                "check the path against the build context and .dockerignore; sources are \
                 relative to the context root"
                    .into(),
            ),
            PlanError::Lint(e) => e.help(),
        }
    }
}

/// Plans the build of `dockerfile` (its bytes) with `opts`.
pub fn plan(dockerfile: &[u8], opts: &PlanOptions) -> Result<Plan, PlanError> {
    let dockerfile = crate::frontend::parse(dockerfile)?;
    let resolved = crate::frontend::stage::resolve(&dockerfile, &opts.resolve)?;
    let graph = StageDag::new(&resolved, opts.target.as_deref())?;
    let (target, order, groups, images, image_keys) = (
        graph.target(),
        graph.order().to_vec(),
        graph.groups().to_vec(),
        graph.images().to_vec(),
        graph.image_keys().to_vec(),
    );

    // BuildKit runs the checks while it converts the Dockerfile, before anything is read from
    // the context; `error=true` stops the build here.
    let lint =
        crate::frontend::lint::for_build(&dockerfile, &order, opts).map_err(PlanError::Lint)?;

    let mut context = None;
    let mut context_reads = Vec::new();
    for &stage_id in &order {
        let Some(stage) = resolved.stages.get(stage_id) else {
            continue;
        };
        for (index, instruction) in stage.instructions.iter().enumerate() {
            for (mount, sources, parents, span) in context_sources(instruction) {
                // The context is walked once, and only when a needed instruction reads it.
                let ctx = match &mut context {
                    Some(ctx) => ctx,
                    None => context.insert(BuildContext::open_as(
                        opts.context_kind,
                        &opts.context_dir,
                        opts.dockerfile_path.as_deref(),
                    )?),
                };
                let selected = if parents {
                    ctx.select_parents_sources(&sources)
                } else {
                    ctx.select_sources(&sources)
                };
                let sources = selected.map_err(|source| PlanError::Source {
                    source: Box::new(source),
                    span,
                })?;
                context_reads.push(ContextRead {
                    stage: stage_id,
                    instruction: index,
                    mount,
                    sources,
                });
            }
        }
    }
    Ok(Plan {
        dockerfile,
        resolved,
        target,
        order,
        groups,
        images,
        image_keys,
        context,
        context_reads,
        lint,
    })
}

/// The external images the stages the target needs use (FROM, COPY --from, RUN --mount
/// from=), each once, as the stages resolve with the base image configs known so far
/// (`opts.resolve.base_images`): [`Plan::images`] without walking the context. The builder
/// looks these up, adds their configs and asks again until nothing new is named (a base's
/// ONBUILD `COPY --from` or ENV can name more), so a stage the target does not need is never
/// looked up or pulled, as in BuildKit.
pub fn needed_images(dockerfile: &[u8], opts: &PlanOptions) -> Result<Vec<ImageKey>, PlanError> {
    let dockerfile = crate::frontend::parse(dockerfile)?;
    let resolved = crate::frontend::stage::resolve(&dockerfile, &opts.resolve)?;
    let graph = StageDag::new(&resolved, opts.target.as_deref())?;
    Ok(graph.image_keys().to_vec())
}

/// The external images every stage of `dockerfile` is built FROM, needed by the target or not,
/// each once, in order: what the builder looks up when the stages do not resolve without their
/// bases' configs (see [`needed_images`]).
pub fn base_image_names(dockerfile: &[u8], opts: &PlanOptions) -> Result<Vec<ImageKey>, PlanError> {
    let dockerfile = crate::frontend::parse(dockerfile)?;
    Ok(crate::frontend::stage::base_image_names(
        &dockerfile,
        &opts.resolve,
    )?)
}

/// The local context sources of a COPY/ADD that reads the build context (not `--from`, not
/// only heredocs; ADD's URLs and git repositories are fetched, not read from the context), with
/// the instruction's span.
/// What an instruction reads from the context: a COPY/ADD's local sources (mount `None`), or
/// each bind mount of a RUN without `from=` (BuildKit mounts the context then), by its index;
/// and whether they are `COPY --parents` sources.
fn context_sources(instruction: &Instruction) -> Vec<(Option<usize>, Vec<String>, bool, Span)> {
    let (sources, parents, span) = match instruction {
        Instruction::Copy(c) if c.from.is_none() => (&c.sources, c.parents, c.span),
        Instruction::Add(a) => (&a.sources, false, a.span),
        Instruction::Run(r) => {
            return r
                .mounts
                .iter()
                .enumerate()
                .filter(|(_, m)| m.kind == MountType::Bind && m.from.is_none())
                .map(|(i, m)| {
                    let source = m.source.clone().unwrap_or_else(|| "/".to_string());
                    (Some(i), vec![source], false, m.span)
                })
                .collect();
        }
        _ => return Vec::new(),
    };
    let local: Vec<String> = sources.iter().filter(|s| !is_remote(s)).cloned().collect();
    if local.is_empty() {
        return Vec::new();
    }
    vec![(None, local, parents, span)]
}

/// An ADD source that is fetched rather than read from the context (BuildKit: a URL, or a git
/// reference in one of the forms `gitutil.ParseGitRef` accepts: `git://`, `ssh://`, or the
/// scp-like `user@host:path`).
pub fn is_remote(source: &str) -> bool {
    if ["http://", "https://", "git://", "ssh://"]
        .iter()
        .any(|p| source.starts_with(p))
    {
        return true;
    }
    // scp-like: `user@host:path` as BuildKit's `gitSSHRegex` reads it (a user of letters,
    // digits, `-` and `_`; a host of letters, digits, `-` and `.`), so `dir/a@b:c` stays local.
    let Some((user_host, _path)) = source.split_once(':') else {
        return false;
    };
    let Some((user, host)) = user_host.split_once('@') else {
        return false;
    };
    let word = |s: &str, extra: char| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == extra)
    };
    word(user, '_') && word(host, '.')
}

/// The Dockerfile path for a context: `-f` when given, else `CONTEXT/Dockerfile`.
pub fn default_dockerfile(context_dir: &Path, file: Option<&Path>) -> PathBuf {
    file.map_or_else(|| context_dir.join("Dockerfile"), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(context_dir: &Path, target: Option<&str>) -> PlanOptions {
        PlanOptions {
            context_dir: context_dir.to_path_buf(),
            dockerfile_path: None,
            context_kind: ContextKind::Directory,
            target: target.map(str::to_string),
            resolve: ResolveOptions::default(),
        }
    }

    #[test]
    fn context_is_not_opened_when_nothing_needed_reads_it() {
        // The context directory does not exist: planning must not touch it, because the needed
        // stages only ADD a URL, COPY a heredoc or COPY --from another stage.
        let missing = Path::new("/nonexistent/kiln/context");
        let dockerfile =
            b"FROM scratch AS a\nADD https://example.com/x.tgz /x\nCOPY <<EOF /f\nhi\nEOF\n\
FROM scratch AS unused\nCOPY local.txt /\n\
FROM scratch\nCOPY --from=a /x /x\n";
        let plan = plan(dockerfile, &options(missing, None)).expect("plans");
        assert!(plan.context.is_none());
        assert!(plan.context_reads.is_empty());
        assert_eq!(plan.order, [0, 2]);
        // Targeting the stage that reads the context does open it, and fails clearly.
        let err = super::plan(dockerfile, &options(missing, Some("unused"))).unwrap_err();
        assert!(matches!(err, PlanError::Context(_)), "{err:?}");
    }

    #[test]
    fn base_images_configs_change_what_the_plan_reads() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("from-env.txt"), "e").expect("write");
        std::fs::write(dir.path().join("from-trigger.txt"), "t").expect("write");
        // The unused stage's missing file is not read; the last stage inherits the image's env
        // from `build` but not its trigger, which `build` ran.
        let dockerfile = b"ARG TAG=1\nFROM app:$TAG AS build\n\
FROM scratch AS unused\nCOPY missing.txt /\nFROM build\nCOPY $SRC /\n";
        let mut opts = options(dir.path(), None);
        let names = base_image_names(dockerfile, &opts).expect("names");
        let key = ImageKey::new("app:1", &crate::oci::Platform::host());
        assert_eq!(names, std::slice::from_ref(&key));
        let image = crate::frontend::stage::BaseImage {
            env: vec![("SRC".into(), "from-env.txt".into())],
            onbuild: vec!["COPY from-trigger.txt /".into()],
        };
        opts.resolve.base_images.insert(key, image);
        let plan = plan(dockerfile, &opts).expect("plans");
        let reads: Vec<(usize, usize, &str)> = plan
            .context_reads
            .iter()
            .flat_map(|r| {
                r.sources
                    .iter()
                    .map(move |s| (r.stage, r.instruction, s.source.as_str()))
            })
            .collect();
        assert_eq!(reads, [(0, 0, "from-trigger.txt"), (2, 0, "from-env.txt")]);
    }

    #[test]
    fn remote_add_sources_are_recognised() {
        for remote in [
            "http://example.com/a",
            "https://example.com/a.tgz",
            "git://example.com/r.git",
            "ssh://git@example.com/r.git",
            "git@github.com:moby/buildkit.git",
        ] {
            assert!(is_remote(remote), "{remote}");
        }
        for local in [
            "a",
            "dir/a@b:c",
            "a:b",
            "@host:path",
            "user@:path",
            "./x@y:z",
        ] {
            assert!(!is_remote(local), "{local}");
        }
    }

    #[test]
    fn mixed_add_sources_read_only_the_local_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("local.txt"), "l").expect("write");
        let dockerfile = b"FROM scratch\nADD https://example.com/a local.txt /dst/\n";
        let plan = plan(dockerfile, &options(dir.path(), None)).expect("plans");
        let [read] = plan.context_reads.as_slice() else {
            panic!("one read expected: {:?}", plan.context_reads);
        };
        let sources: Vec<&str> = read.sources.iter().map(|s| s.source.as_str()).collect();
        assert_eq!(sources, ["local.txt"]);
        assert_eq!(read.sources[0].paths, ["local.txt"]);
    }
}
