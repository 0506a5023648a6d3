//! BuildKit's Dockerfile build checks (`frontend/dockerfile/linter`, and where
//! `dockerfile2llb/convert.go` runs each rule): rules as data ([`rules`]), the checks
//! ([`checks`]), their configuration (`# check=` and `BUILDKIT_DOCKERFILE_CHECK`) and BuildKit's
//! `LintResults` document ([`json`]).
//!
//! Which instructions are checked follows BuildKit: the rules BuildKit runs while parsing
//! (casing, stage names, MAINTAINER, FROM's arguments, empty continuations) see every stage; the
//! rules it runs while dispatching instructions (UndefinedVar, WORKDIR, COPY, CMD...) see only
//! the stages that are dispatched: those the target needs in a build, every stage for
//! `--check` without `--target` (BuildKit's `AllStages`).
//!
//! Configuration: `# check=skip=A,B;error=true;experimental=C` (or `skip=all`,
//! `experimental=all`) at the top of the file; the `BUILDKIT_DOCKERFILE_CHECK` build argument
//! replaces it whole; and a `# check=...` comment directly above an instruction adds its
//! `skip`/`experimental` rules for that instruction (BuildKit's `WithMergedConfigFromComments`;
//! for a FROM, for the stage-level rules too).

pub mod checks;
pub mod json;
pub mod rules;

use crate::frontend::ast::Dockerfile;
use crate::frontend::context::Dockerignore;
use crate::frontend::diagnostic::Span;
use crate::frontend::plan::PlanOptions;
use crate::frontend::stage::ResolveOptions;
use crate::oci::csv::parse_go_bool;
pub use rules::Rule;

/// The build argument that replaces the `# check=` directive (BuildKit's
/// `build-arg:BUILDKIT_DOCKERFILE_CHECK`).
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// What the checks are told to do (BuildKit's `linter.Config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LintConfig {
    pub skip_all: bool,
    pub skip: Vec<String>,
    pub experimental_all: bool,
    pub experimental: Vec<String>,
    /// `error=true`: any finding fails the build before its first step.
    pub error: bool,
}

/// A `check` value that does not parse; the message is BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LintConfigError {
    #[error("invalid check option {0}")]
    InvalidOption(String),
    #[error(
        "failed to parse check option {option}: strconv.ParseBool: parsing {value}: invalid syntax"
    )]
    InvalidBool { option: String, value: String },
}

impl LintConfig {
    /// BuildKit's `ParseLintOptions`: up to three `;`-separated `key=value` parts (`skip`,
    /// `experimental`, `error`), values trimmed, rule lists split on `,`.
    pub fn parse(text: &str) -> Result<LintConfig, LintConfigError> {
        let text = text.trim();
        let mut config = LintConfig::default();
        if text.is_empty() {
            return Ok(config);
        }
        for part in text.splitn(3, ';') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(LintConfigError::InvalidOption(rules::go_quote(part)));
            };
            let list = |value: &str| -> Vec<String> {
                value.split(',').map(|r| r.trim().to_string()).collect()
            };
            match key.trim() {
                "skip" => match value.trim() {
                    "all" => config.skip_all = true,
                    value => config.skip = list(value),
                },
                "experimental" => match value.trim() {
                    "all" => config.experimental_all = true,
                    value => config.experimental = list(value),
                },
                "error" => {
                    config.error = parse_go_bool(value.trim()).ok_or_else(|| {
                        LintConfigError::InvalidBool {
                            option: rules::go_quote(part),
                            value: rules::go_quote(value.trim()),
                        }
                    })?;
                }
                other => return Err(LintConfigError::InvalidOption(rules::go_quote(other))),
            }
        }
        Ok(config)
    }

    /// Whether `rule` runs under this configuration: an experimental rule only when enabled
    /// (`skip` does not apply to it), any other unless skipped.
    pub fn runs(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.iter().any(|r| r == rule.name)
        } else {
            !(self.skip_all || self.skip.iter().any(|r| r == rule.name))
        }
    }

    /// This configuration with `other`'s skips and experimental rules added (`error` is the
    /// file's alone, as in BuildKit's `WithMergedConfig`).
    fn merged(&self, other: &LintConfig) -> LintConfig {
        let mut merged = self.clone();
        merged.skip_all |= other.skip_all;
        merged.experimental_all |= other.experimental_all;
        merged.skip.extend(other.skip.iter().cloned());
        merged
            .experimental
            .extend(other.experimental.iter().cloned());
        merged
    }

    /// The configuration for an instruction with `comments` directly above it: the first
    /// comment that reads as a `check=` directive adds its rules (its value up to the first
    /// space; one that does not parse changes nothing), as BuildKit's
    /// `WithMergedConfigFromComments`.
    pub fn for_comments(&self, comments: &[String]) -> std::borrow::Cow<'_, LintConfig> {
        for comment in comments {
            // The comment is kept without its `#`; BuildKit parses it as a directive line.
            let line = format!("#{comment}");
            let Some((name, value)) = crate::frontend::syntax::parse_directive(&line) else {
                continue;
            };
            if !name.eq_ignore_ascii_case("check") {
                continue;
            }
            let value = value.split(' ').next().unwrap_or_default();
            return match LintConfig::parse(value) {
                Ok(extra) => std::borrow::Cow::Owned(self.merged(&extra)),
                Err(_) => std::borrow::Cow::Borrowed(self),
            };
        }
        std::borrow::Cow::Borrowed(self)
    }
}

/// Where the configuration came from, for its error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LintSetupError {
    #[error("failed to parse check options")]
    Directive {
        #[source]
        source: LintConfigError,
        span: Span,
    },
    #[error("failed to parse build-arg:{CHECK_BUILD_ARG}")]
    BuildArg {
        #[source]
        source: LintConfigError,
    },
}

impl crate::frontend::diagnostic::Located for LintSetupError {
    fn span(&self) -> Option<Span> {
        match self {
            LintSetupError::Directive { span, .. } => Some(*span),
            LintSetupError::BuildArg { .. } => None,
        }
    }

    fn help(&self) -> Option<String> {
        Some(
            "write `skip=Rule1,Rule2` or `skip=all`, `error=true|false`, `experimental=Rule|all`, \
             separated by `;`"
                .into(),
        )
    }
}

/// The build's check configuration: `BUILDKIT_DOCKERFILE_CHECK` when given (it replaces the
/// directive, as in BuildKit), else the `# check=` directive, else the defaults.
pub fn config(
    df: &Dockerfile,
    build_args: &std::collections::BTreeMap<String, String>,
) -> Result<LintConfig, LintSetupError> {
    if let Some(value) = build_args.get(CHECK_BUILD_ARG) {
        return LintConfig::parse(value).map_err(|source| LintSetupError::BuildArg { source });
    }
    match &df.directives.check {
        Some(directive) => {
            LintConfig::parse(&directive.value).map_err(|source| LintSetupError::Directive {
                source,
                span: Span::line(directive.line),
            })
        }
        None => Ok(LintConfig::default()),
    }
}

/// One finding: a rule, its message and the instruction it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static Rule,
    /// The message (BuildKit's `detail`).
    pub message: String,
    /// The instruction (BuildKit reports whole lines: from its first line to its last).
    pub span: Span,
}

/// What the checks found, in the order BuildKit finds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// The configuration they ran with (its `error=true` makes findings an error; the builder
    /// applies it to InvalidBaseImagePlatform, which needs the pulled image).
    pub config: LintConfig,
}

impl Report {
    /// BuildKit's `lint violation found for rules: A, B` when `error=true` and something was
    /// found (each rule once, in the order first found).
    pub fn violation(&self) -> Option<String> {
        if !self.config.error || self.findings.is_empty() {
            return None;
        }
        let mut names: Vec<&str> = Vec::new();
        for finding in &self.findings {
            if !names.contains(&finding.rule.name) {
                names.push(finding.rule.name);
            }
        }
        Some(format!(
            "lint violation found for rules: {}",
            names.join(", ")
        ))
    }
}

/// What the checks read.
#[derive(Debug, Clone, Copy)]
pub struct LintInput<'a> {
    pub dockerfile: &'a Dockerfile,
    /// Build arguments, platforms, `--target` and the base images' configs known.
    pub options: &'a ResolveOptions,
    /// The build fails at the instruction on this line: instructions after it are not
    /// dispatched (BuildKit stops at the error).
    pub dispatch_until: Option<usize>,
    /// The stages whose instructions are dispatched (by index); `None`: all of them.
    pub dispatched: Option<&'a [usize]>,
    /// The stages the target needs (by index); only they run their base's ONBUILD triggers,
    /// as in BuildKit, even when every stage is dispatched. `None`: all of them.
    pub reachable: Option<&'a [usize]>,
    /// The context's `.dockerignore`, when there is one with patterns.
    pub dockerignore: Option<&'a Dockerignore>,
}

/// Runs the checks with `config`.
pub fn lint(input: &LintInput<'_>, config: &LintConfig) -> Report {
    let findings = checks::run(input, config);
    Report {
        findings,
        config: config.clone(),
    }
}

/// `error=true` and something was found: the build stops before its first step (BuildKit's
/// `lint violation found for rules: ...`). The findings are kept to be shown with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Violation {
    pub message: String,
    pub report: Report,
}

/// Why the checks stop a build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LintError {
    #[error(transparent)]
    Setup(#[from] LintSetupError),
    #[error(transparent)]
    Violation(Box<Violation>),
}

impl crate::frontend::diagnostic::Located for LintError {
    fn span(&self) -> Option<Span> {
        match self {
            LintError::Setup(e) => e.span(),
            LintError::Violation(_) => None,
        }
    }

    fn help(&self) -> Option<String> {
        match self {
            LintError::Setup(e) => e.help(),
            LintError::Violation(_) => Some(
                "fix the findings, skip their rules with `# check=skip=RULE`, or drop \
                 `error=true` from the check directive"
                    .into(),
            ),
        }
    }
}

/// The `.dockerignore` a build would apply, for CopyIgnoredFile; `None` when there is none or
/// it cannot be read (the build reports a bad one when it opens the context).
fn dockerignore_of(opts: &PlanOptions) -> Option<Dockerignore> {
    crate::frontend::context::ignore_for(
        opts.context_kind,
        &opts.context_dir,
        opts.dockerfile_path.as_deref(),
    )
    .ok()
    .flatten()
    .filter(|ignore| !ignore.is_empty())
}

/// The checks of a build ([`crate::frontend::plan::plan`]): the stages the target needs
/// (`order`) are dispatched. With `error=true` any finding is an error.
pub fn for_build(
    df: &Dockerfile,
    order: &[usize],
    opts: &PlanOptions,
) -> Result<Report, LintError> {
    let config = config(df, &opts.resolve.build_args)?;
    let ignore = dockerignore_of(opts);
    let report = lint(
        &LintInput {
            dockerfile: df,
            options: &opts.resolve,
            dispatch_until: None,
            dispatched: Some(order),
            reachable: Some(order),
            dockerignore: ignore.as_ref(),
        },
        &config,
    );
    match report.violation() {
        Some(message) => Err(LintError::Violation(Box::new(Violation {
            message,
            report,
        }))),
        None => Ok(report),
    }
}

/// What `kiln build --check` found: the findings, and the error that stopped the checks (the
/// Dockerfile does not parse or resolve, the target does not exist...), as BuildKit's lint
/// request returns a `buildError` beside its warnings.
#[derive(Debug)]
pub struct LintOutcome {
    pub report: Report,
    pub error: Option<CheckFailure>,
}

/// The error that stopped `--check`, with where it is, when it is in the Dockerfile.
#[derive(Debug)]
pub struct CheckFailure {
    pub error: Box<dyn std::error::Error + Send + Sync>,
    pub span: Option<Span>,
    pub help: Option<String>,
}

impl CheckFailure {
    fn new<E>(error: E) -> CheckFailure
    where
        E: crate::frontend::diagnostic::Located + std::error::Error + Send + Sync + 'static,
    {
        CheckFailure {
            span: error.span(),
            help: error.help(),
            error: Box::new(error),
        }
    }

    /// The message with its causes, `a: b: c`.
    pub fn message(&self) -> String {
        crate::error::Chain(self.error.as_ref()).to_string()
    }
}

/// `--check` (BuildKit's lint request): the checks without building. Nothing is run, pulled
/// or walked: the Dockerfile is parsed and its stages resolved with the base images' configs
/// in `opts.resolve.base_images` (a stage whose base image is not there is not checked for
/// UndefinedVar, since the image may define the variable); only the ignore file of the
/// context is read. Without `--target` every stage is dispatched (BuildKit's `AllStages`),
/// with one only the stages it needs.
pub fn check(dockerfile: &[u8], opts: &PlanOptions) -> LintOutcome {
    let df = match crate::frontend::parse(dockerfile) {
        Ok(df) => df,
        Err(err) => {
            return LintOutcome {
                report: Report::default(),
                error: Some(CheckFailure::new(err)),
            };
        }
    };
    let config = match config(&df, &opts.resolve.build_args) {
        Ok(config) => config,
        Err(err) => {
            return LintOutcome {
                report: Report::default(),
                error: Some(CheckFailure::new(err)),
            };
        }
    };
    // The stages resolve, and the target is found, or the build would fail: then, as in
    // BuildKit, what comes after the failing instruction is not dispatched (and nothing is when
    // it fails at a FROM or has no place).
    let mut error = None;
    let mut dispatch_until = None;
    let mut order = None;
    let mut reachable = None;
    match crate::frontend::stage::resolve(&df, &opts.resolve) {
        Ok(resolved) => {
            match crate::frontend::dag::StageDag::new(&resolved, opts.target.as_deref()) {
                Ok(dag) => {
                    reachable = Some(dag.order().to_vec());
                    if opts.target.is_some() {
                        order = reachable.clone();
                    }
                }
                Err(e) => {
                    error = Some(CheckFailure::new(e));
                    order = Some(Vec::new());
                }
            }
        }
        Err(e) => {
            let failure = CheckFailure::new(e);
            let at_from = |line: usize| {
                df.nodes
                    .iter()
                    .any(|n| n.span.start.line == line && n.keyword.eq_ignore_ascii_case("from"))
            };
            match failure.span {
                Some(span) if !at_from(span.start.line) => {
                    dispatch_until = Some(span.start.line);
                }
                _ => order = Some(Vec::new()),
            }
            error = Some(failure);
        }
    }
    let ignore = dockerignore_of(opts);
    let report = lint(
        &LintInput {
            dockerfile: &df,
            options: &opts.resolve,
            dispatch_until,
            dispatched: order.as_deref(),
            reachable: reachable.as_deref(),
            dockerignore: ignore.as_ref(),
        },
        &config,
    );
    LintOutcome { report, error }
}

#[cfg(test)]
mod tests;
