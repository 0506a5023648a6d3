//! `kiln build`: until the builder lands (issue 4) only `--dry-run`, which prints the plan.

use super::parse::read_dockerfile;
use super::{located, unlocated};
use anyhow::bail;
use clap::Args;
use kiln::context::ContextError;
use kiln::parser::stage::ResolveOptions;
use kiln::plan::{Plan, PlanError, PlanOptions, default_dockerfile, plan};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How many files of one COPY/ADD source the dry run lists before summarising.
const LISTED_FILES: usize = 20;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build context directory.
    context: PathBuf,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads standard input).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Name and optionally tag the image (`name:tag`); may be repeated.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// Set a build-time variable (`K=V`, or `K` to take the value from the environment).
    #[arg(long = "build-arg", value_name = "K[=V]")]
    build_args: Vec<String>,
    /// The stage to build (default: the last stage).
    #[arg(long)]
    target: Option<String>,
    /// Print the resolved stages, their order and parallel groups, and the context files each
    /// COPY/ADD reads, without building.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    if !args.dry_run {
        bail!(
            "kiln build cannot run steps yet (the builder is not written); \
             use --dry-run to see the build plan"
        );
    }
    let path = default_dockerfile(&args.context, args.file.as_deref());
    let from_stdin = path.as_os_str() == "-";
    let (name, bytes) = read_dockerfile(&path)?;
    // `kiln build .` reads ./Dockerfile: call it Dockerfile in messages, as docker does.
    let name = without_dot_slash(name);
    let text = String::from_utf8_lossy(&bytes);
    let opts = PlanOptions {
        context_dir: args.context.clone(),
        dockerfile_path: (!from_stdin).then(|| path.clone()),
        target: args.target.clone(),
        resolve: ResolveOptions {
            build_args: build_args(&args.build_args)?,
            target: args.target.clone(),
            ..ResolveOptions::default()
        },
    };
    let plan = plan(&bytes, &opts).map_err(|err| match &err {
        // A .dockerignore error points into the ignore file: show that file's line.
        PlanError::Context(ContextError::Dockerignore { path, text, source }) => {
            located(&as_given(&args.context, path), text, source.as_ref())
        }
        // Any other context error is about the context directory, not a line of a file.
        PlanError::Context(context_err) => unlocated(context_err),
        _ => located(&name, &text, &err),
    })?;
    for warning in &plan.resolved.warnings {
        match warning.span {
            Some(span) => eprintln!(
                "warning: {} ({name}:{}:{})",
                warning.message, span.start.line, span.start.column
            ),
            None => eprintln!("warning: {}", warning.message),
        }
    }
    print!("{}", describe(&plan, &name, &args));
    Ok(())
}

/// `path` (canonical, inside the context) as the user would write it: relative to the context
/// directory as given on the command line.
fn as_given(context: &Path, path: &Path) -> String {
    let shown = std::fs::canonicalize(context)
        .ok()
        .and_then(|root| path.strip_prefix(root).ok().map(|rel| context.join(rel)))
        .unwrap_or_else(|| path.to_path_buf());
    without_dot_slash(shown.display().to_string())
}

/// `./x` shown as `x`.
fn without_dot_slash(path: String) -> String {
    match path.strip_prefix("./") {
        Some(rest) => rest.to_string(),
        None => path,
    }
}

/// `--build-arg` values: `K=V`, or `K` alone taking `K` from kiln's environment (skipped when
/// unset, as docker does).
fn build_args(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for arg in raw {
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (arg.as_str(), std::env::var(arg).ok()),
        };
        if key.is_empty() {
            bail!("--build-arg {arg:?} has no name: write --build-arg NAME=VALUE");
        }
        if let Some(value) = value {
            out.insert(key.to_string(), value);
        }
    }
    Ok(out)
}

/// The plan as text: header, parallel groups, then each needed stage with its instructions
/// and the context files each COPY/ADD reads.
fn describe(plan: &Plan, dockerfile: &str, args: &BuildArgs) -> String {
    let tags = &args.tags;
    let stages = &plan.resolved.stages;
    let stage_name = |id: usize| {
        stages
            .get(id)
            .map_or_else(|| format!("#{id}"), |s| s.display_name())
    };
    let mut out = String::new();
    let _ = writeln!(out, "dockerfile  {dockerfile}");
    if let Some(ctx) = &plan.context {
        let ignore = ctx.ignore_file().map_or_else(
            || "no .dockerignore".to_string(),
            |p| format!("after {}", as_given(&args.context, p)),
        );
        let _ = writeln!(
            out,
            "context     {} ({} entries {ignore})",
            args.context.display(),
            ctx.entries().len()
        );
    }
    if !tags.is_empty() {
        let _ = writeln!(out, "tags        {}", tags.join(", "));
    }
    let _ = writeln!(
        out,
        "target      {} ({} of {} stages needed)",
        stage_name(plan.target),
        plan.order.len(),
        stages.len()
    );
    if !plan.images.is_empty() {
        let _ = writeln!(out, "images      {}", plan.images.join(", "));
    }
    let skipped: Vec<String> = stages
        .iter()
        .filter(|s| !plan.order.contains(&s.index))
        .map(|s| s.display_name())
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(
            out,
            "skipped     {} (not needed by the target)",
            skipped.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nparallel groups (a group's stages can build at the same time):"
    );
    for (i, group) in plan.groups.iter().enumerate() {
        let names: Vec<String> = group.iter().map(|&id| stage_name(id)).collect();
        let _ = writeln!(out, "  {}  {}", i + 1, names.join(", "));
    }
    for &id in &plan.order {
        let Some(stage) = stages.get(id) else {
            continue;
        };
        let _ = writeln!(
            out,
            "\nstage {}  FROM {}  ({dockerfile}:{})",
            stage.display_name(),
            stage.base_name,
            stage.span.start.line
        );
        for (index, instruction) in stage.instructions.iter().enumerate() {
            let _ = writeln!(out, "  {:<4} {instruction}", instruction.span().start.line);
            let reads = plan
                .context_reads
                .iter()
                .find(|r| r.stage == id && r.instruction == index);
            for source in reads.iter().flat_map(|r| &r.sources) {
                let shown: Vec<&str> = source
                    .paths
                    .iter()
                    .take(LISTED_FILES)
                    .map(String::as_str)
                    .collect();
                let more = source.paths.len().saturating_sub(LISTED_FILES);
                let _ = write!(out, "       reads {}: {}", source.source, shown.join(" "));
                if more > 0 {
                    let _ = write!(out, " ... and {more} more");
                }
                out.push('\n');
            }
        }
    }
    out
}
