//! What a Dockerfile lets its user set, without building it: BuildKit's `frontend.outline` and
//! `frontend.targets` subrequests, which `docker buildx build --call outline|targets` prints.
//!
//! - [`outline`]: for one target stage (the last by default), the build args it uses (meta ARGs
//!   its FROM lines and those of the stages it needs refer to, and every ARG those stages
//!   declare, with values after build args and descriptions from the `# NAME description`
//!   comment above them), the secrets and ssh sockets its RUN mounts ask for. BuildKit computes
//!   this while dispatching (`dockerfile2llb/outline.go`); here it is computed from the parsed
//!   Dockerfile alone, which gives the same answer except where an ARG's default refers to the
//!   base image's ENV (not known without pulling it: such a variable expands to empty).
//! - [`targets`]: every stage, its description, base and platform as written, the last one the
//!   default (`dockerfile2llb.ListTargets`).
//!
//! Both serialize as BuildKit's JSON (`outline.Outline`, `targets.List`, with `sources` the
//! Dockerfile in base64 and locations as `pb.Location`), and render as its text
//! (`PrintOutline`, `PrintTargets`: Go `text/tabwriter` tables).

use crate::frontend::ast::{Dockerfile, Node};
use crate::frontend::diagnostic::{Located, Span};
use crate::frontend::instruction::{self, Instruction, InstructionError, MountType};
use crate::frontend::shell::Lexer;
use crate::frontend::stage::platform_args;
use crate::oci::Platform;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What the outline is computed for.
#[derive(Debug, Clone)]
pub struct OutlineOptions {
    /// The stage to outline (`--target`); the last stage when `None`.
    pub target: Option<String>,
    /// `--build-arg` values: an arg's value in the outline is its build arg when given.
    pub build_args: BTreeMap<String, String>,
    /// The platform the build runs on, for the predefined `BUILD*` args.
    pub build_platform: Platform,
    /// The platform built for, for the predefined `TARGET*` args.
    pub target_platform: Platform,
}

/// Why there is no outline or target list.
#[derive(Debug, thiserror::Error)]
pub enum OutlineError {
    #[error(transparent)]
    Instruction(#[from] InstructionError),
    #[error("the Dockerfile has no FROM instruction: there is no stage to outline")]
    NoStage,
    #[error("target stage {0:?} could not be found")]
    NoTarget(String),
    /// FROM's image is empty once the build args are expanded (BuildKit fails the outline so).
    #[error("base name ({image}) should not be blank")]
    BlankBase { image: String, span: Span },
}

impl Located for OutlineError {
    fn span(&self) -> Option<Span> {
        match self {
            OutlineError::Instruction(e) => e.span(),
            OutlineError::BlankBase { span, .. } => Some(*span),
            OutlineError::NoStage | OutlineError::NoTarget(_) => None,
        }
    }

    fn help(&self) -> Option<String> {
        match self {
            OutlineError::Instruction(e) => e.help(),
            OutlineError::BlankBase { .. } => {
                Some("give the ARG a default, or its value with --build-arg".to_string())
            }
            _ => None,
        }
    }
}

/// BuildKit's `pb.Location` as JSON: ranges of whole lines (no characters, as BuildKit's
/// instruction locations have none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub ranges: Vec<Range>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Range {
    pub start: LinePosition,
    pub end: LinePosition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinePosition {
    pub line: usize,
}

impl Location {
    fn of(span: Span) -> Location {
        Location {
            ranges: vec![Range {
                start: LinePosition {
                    line: span.start.line,
                },
                end: LinePosition {
                    line: span.end.line,
                },
            }],
        }
    }

    fn line(&self) -> usize {
        self.ranges.first().map_or(0, |r| r.start.line)
    }
}

/// BuildKit's `outline.Outline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outline {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<OutlineArg>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Requirement>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<Requirement>,
    /// The Dockerfile, base64 (Go's `[]byte` in JSON).
    #[serde(serialize_with = "base64_list")]
    pub sources: Vec<Vec<u8>>,
}

/// One build arg of an outline (`outline.Arg`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlineArg {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
    pub location: Location,
}

/// A secret or ssh socket a RUN mount asks for (`outline.Secret`, `outline.SSH`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    pub name: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    pub location: Location,
}

/// BuildKit's `targets.List`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetList {
    pub targets: Vec<Target>,
    #[serde(serialize_with = "base64_list")]
    pub sources: Vec<Vec<u8>>,
}

/// One stage as a build target (`targets.Target`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub base: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub platform: String,
    pub location: Location,
}

fn base64_list<S: serde::Serializer>(sources: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine as _;
    use serde::ser::SerializeSeq as _;
    let mut seq = s.serialize_seq(Some(sources.len()))?;
    for source in sources {
        seq.serialize_element(&base64::engine::general_purpose::STANDARD.encode(source))?;
    }
    seq.end()
}

/// `value` as Go's `json.MarshalIndent(v, "", "  ")` writes it, which BuildKit's result.json
/// is: two-space indents, and `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`... (Go
/// escapes them for HTML). Those characters can only be inside strings in JSON, so escaping
/// them in the whole text is exact.
pub fn go_json<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let text = serde_json::to_string_pretty(value)?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The description of `name` from the comment lines above its instruction: the first line that
/// starts with `name ` (BuildKit's `getDocComment`).
fn doc_comment(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_default()
        .to_string()
}

/// One instruction with the node it came from (for its comments).
struct Line<'a> {
    node: &'a Node,
    instruction: Instruction,
}

fn lines(df: &Dockerfile) -> Result<Vec<Line<'_>>, OutlineError> {
    df.nodes
        .iter()
        .map(|node| {
            Ok(Line {
                node,
                instruction: Instruction::from_node(node)?,
            })
        })
        .collect()
}

/// Every stage as a target, the last the default.
pub fn targets(df: &Dockerfile, source: &[u8]) -> Result<TargetList, OutlineError> {
    let lines = lines(df)?;
    let froms: Vec<(&Node, &instruction::From)> = lines
        .iter()
        .filter_map(|l| match &l.instruction {
            Instruction::From(from) => Some((l.node, from)),
            _ => None,
        })
        .collect();
    let count = froms.len();
    let targets = froms
        .into_iter()
        .enumerate()
        .map(|(i, (node, from))| {
            let name = from.as_name.clone().unwrap_or_default();
            Target {
                description: doc_comment(&node.comments, &name),
                name,
                default: i + 1 == count,
                base: from.image.clone(),
                platform: from.platform.clone().unwrap_or_default(),
                location: Location::of(from.span),
            }
        })
        .collect();
    Ok(TargetList {
        targets,
        sources: vec![source.to_vec()],
    })
}

/// An ARG as the outline knows it (BuildKit's `argInfo`).
#[derive(Debug, Clone)]
struct ArgInfo {
    name: String,
    value: String,
    description: String,
    /// Meta args the default referred to, which are used when this one is.
    deps: BTreeSet<String>,
    location: Location,
    /// Declaration order, which orders the names of one ARG instruction.
    order: usize,
}

/// One stage while the outline is collected.
#[derive(Debug, Default)]
struct StageOutline {
    name: String,
    description: String,
    /// Earlier stage this one is built on (`FROM stage`).
    base: Option<usize>,
    /// Stages it copies or mounts from.
    deps: BTreeSet<usize>,
    all_args: BTreeMap<String, ArgInfo>,
    used_args: BTreeSet<String>,
    secrets: BTreeMap<String, Requirement>,
    ssh: BTreeMap<String, Requirement>,
}

/// Variables in scope while expanding: later entries win.
type Vars = Vec<(String, String)>;

/// The platform args (not `TARGETSTAGE`: BuildKit's outline leaves it out), each overridable
/// by a build arg.
fn predefined(opts: &OutlineOptions) -> Vars {
    platform_args(&opts.build_platform, &opts.target_platform)
        .into_iter()
        .map(|(k, v)| {
            let v = opts.build_args.get(k).cloned().unwrap_or(v);
            (k.to_string(), v)
        })
        .collect()
}

fn lookup(vars: &Vars, name: &str) -> Option<String> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// The outline of the target stage.
pub fn outline(
    df: &Dockerfile,
    source: &[u8],
    opts: &OutlineOptions,
) -> Result<Outline, OutlineError> {
    let lexer = Lexer::new(df.directives.escape);
    let lines = lines(df)?;
    let first_from = lines
        .iter()
        .position(|l| matches!(l.instruction, Instruction::From(_)))
        .ok_or(OutlineError::NoStage)?;

    // Meta args (before the first FROM): BuildKit's buildMetaArgs.
    let mut global = predefined(opts);
    let mut meta: BTreeMap<String, ArgInfo> = BTreeMap::new();
    for line in &lines[..first_from] {
        let Instruction::Arg(arg) = &line.instruction else {
            continue;
        };
        for decl in &arg.args {
            let mut info = ArgInfo {
                name: decl.name.clone(),
                value: String::new(),
                description: doc_comment(&line.node.comments, &decl.name),
                deps: BTreeSet::new(),
                location: Location::of(arg.span),
                order: meta.len(),
            };
            let value = match (opts.build_args.get(&decl.name), &decl.default) {
                (Some(value), _) => Some(value.clone()),
                (None, Some(default)) => {
                    // An unexpandable default fails the build; the outline shows it as written.
                    match lexer.expand_word_tracked(default, &global) {
                        Ok(expansion) => {
                            info.deps = expansion.set_names().map(str::to_string).collect();
                            if info.deps.remove(&decl.name)
                                && let Some(old) = meta.get(&decl.name)
                            {
                                info.deps.extend(old.deps.iter().cloned());
                            }
                            Some(expansion.value)
                        }
                        Err(_) => Some(default.clone()),
                    }
                }
                (None, None) => None,
            };
            if let Some(value) = value {
                global.push((decl.name.clone(), value.clone()));
                info.value = value;
            }
            meta.insert(decl.name.clone(), info);
        }
    }

    // Stages: what each one uses, declares and needs.
    let mut stages: Vec<StageOutline> = Vec::new();
    let mut vars: Vars = Vec::new();
    let mut next_order = meta.len();
    for line in &lines[first_from..] {
        match &line.instruction {
            Instruction::From(from) => {
                let mut stage = StageOutline {
                    name: from.as_name.clone().unwrap_or_default(),
                    ..StageOutline::default()
                };
                stage.description = doc_comment(&line.node.comments, &stage.name);
                let mut used = BTreeSet::new();
                let image = lexer
                    .expand_word_tracked(&from.image, &global)
                    .map(|e| {
                        used.extend(e.set_names().map(str::to_string));
                        e.value
                    })
                    .unwrap_or_else(|_| from.image.clone());
                if image.is_empty() {
                    return Err(OutlineError::BlankBase {
                        image: from.image.clone(),
                        span: from.image_span,
                    });
                }
                if let Some(platform) = &from.platform
                    && let Ok(e) = lexer.expand_word_tracked(platform, &global)
                {
                    used.extend(e.set_names().map(str::to_string));
                }
                stage.all_args = meta.clone();
                if let Some(base) = stages
                    .iter()
                    .position(|s| !s.name.is_empty() && s.name == image)
                {
                    stage.base = Some(base);
                    stage.used_args = stages[base].used_args.clone();
                }
                stage.used_args.extend(used);
                stages.push(stage);
                vars = Vec::new();
            }
            other => {
                let Some(current) = stages.len().checked_sub(1) else {
                    continue;
                };
                let scope = |vars: &Vars| -> Vars {
                    let mut all = global.clone();
                    all.extend(vars.iter().cloned());
                    all
                };
                match other {
                    Instruction::Arg(arg) => {
                        for decl in &arg.args {
                            let build_arg = opts.build_args.get(&decl.name);
                            let mut value = None;
                            let mut inherited = false;
                            if decl.default.is_none()
                                && build_arg.is_none()
                                && let Some(v) = lookup(&global, &decl.name)
                            {
                                value = Some(v);
                                inherited = true;
                            }
                            if let Some(v) = build_arg {
                                value = Some(v.clone());
                            } else if let Some(default) = &decl.default {
                                value = Some(
                                    lexer
                                        .expand_word(default, &scope(&vars))
                                        .unwrap_or_else(|_| default.clone()),
                                );
                            }
                            if let Some(v) = &value {
                                vars.push((decl.name.clone(), v.clone()));
                            }
                            if !inherited {
                                stages[current].all_args.insert(
                                    decl.name.clone(),
                                    ArgInfo {
                                        name: decl.name.clone(),
                                        value: value.unwrap_or_default(),
                                        description: doc_comment(&line.node.comments, &decl.name),
                                        deps: BTreeSet::new(),
                                        location: Location::of(arg.span),
                                        order: next_order,
                                    },
                                );
                            }
                            stages[current].used_args.insert(decl.name.clone());
                            next_order += 1;
                        }
                    }
                    Instruction::Env(env) => {
                        for pair in &env.pairs {
                            let value = lexer
                                .expand_word(&pair.value, &scope(&vars))
                                .unwrap_or_else(|_| pair.value.clone());
                            vars.push((pair.key.clone(), value));
                        }
                    }
                    Instruction::Copy(copy) => {
                        if let Some(from) = &copy.from {
                            let from = lexer
                                .expand_word(from, &scope(&vars))
                                .unwrap_or_else(|_| from.clone());
                            stage_dep(&mut stages, &from);
                        }
                    }
                    Instruction::Run(run) => {
                        let location = Location::of(run.span);
                        for mount in &run.mounts {
                            match mount.kind {
                                MountType::Secret => {
                                    let id = mount.id.clone().or_else(|| mount.source.clone());
                                    let id = id.or_else(|| {
                                        mount.target.as_deref().map(|t| {
                                            t.rsplit('/')
                                                .find(|s| !s.is_empty())
                                                .unwrap_or(t)
                                                .to_string()
                                        })
                                    });
                                    if let Some(id) = id {
                                        stages[current].secrets.entry(id.clone()).or_insert(
                                            Requirement {
                                                name: id,
                                                required: mount.required,
                                                location: location.clone(),
                                            },
                                        );
                                    }
                                }
                                MountType::Ssh => {
                                    let id = mount.id.clone().unwrap_or_else(|| "default".into());
                                    stages[current]
                                        .ssh
                                        .entry(id.clone())
                                        .or_insert(Requirement {
                                            name: id,
                                            required: mount.required,
                                            location: location.clone(),
                                        });
                                }
                                MountType::Bind | MountType::Cache => {
                                    if let Some(from) = &mount.from {
                                        stage_dep(&mut stages, from);
                                    }
                                }
                                MountType::Tmpfs => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    let target = match &opts.target {
        None => stages.len() - 1,
        Some(name) => {
            let name = name.to_ascii_lowercase();
            stages
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| OutlineError::NoTarget(name.clone()))?
        }
    };
    let mut args = Vec::new();
    collect_args(
        &mut stages,
        target,
        &mut BTreeSet::new(),
        &mut BTreeSet::new(),
        &mut args,
    );
    // Sorted by line. BuildKit sorts by line alone, from a Go map's random order, so the names
    // of one `ARG A B` come in any order there; here in the order they are declared.
    args.sort_by_key(|(order, a): &(usize, OutlineArg)| (a.location.line(), *order));
    let args = args.into_iter().map(|(_, a)| a).collect();
    let mut secrets = Vec::new();
    let mut ssh = Vec::new();
    collect_requirements(
        &stages,
        target,
        &mut BTreeSet::new(),
        &mut BTreeSet::new(),
        &mut secrets,
        &mut ssh,
    );
    secrets.sort_by_key(|r| r.location.line());
    ssh.sort_by_key(|r| r.location.line());
    Ok(Outline {
        name: stages[target].name.clone(),
        description: stages[target].description.clone(),
        args,
        secrets,
        ssh,
        sources: vec![source.to_vec()],
    })
}

/// Records that the current stage needs the stage `reference` (a name or an index), when it is
/// one (an image name is not).
fn stage_dep(stages: &mut [StageOutline], reference: &str) {
    let current = stages.len() - 1;
    let name = reference.to_ascii_lowercase();
    let found = stages[..current]
        .iter()
        .position(|s| !s.name.is_empty() && s.name == name)
        .or_else(|| reference.parse::<usize>().ok().filter(|&i| i < current));
    if let Some(dep) = found {
        stages[current].deps.insert(dep);
    }
}

/// BuildKit's `dispatchState.args`: the stage's used args, then its base's, then its
/// dependencies', each name once (the first stage to have it gives its definition).
fn collect_args(
    stages: &mut [StageOutline],
    index: usize,
    seen_stages: &mut BTreeSet<usize>,
    visited: &mut BTreeSet<String>,
    out: &mut Vec<(usize, OutlineArg)>,
) {
    if !seen_stages.insert(index) {
        return;
    }
    // markAllUsed: the meta args a used arg's default referred to are used too.
    let mut pending: Vec<String> = stages[index].used_args.iter().cloned().collect();
    let mut marked = BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !marked.insert(name.clone()) {
            continue;
        }
        if let Some(info) = stages[index].all_args.get(&name) {
            pending.extend(info.deps.iter().cloned());
        }
    }
    stages[index].used_args.extend(marked);
    let stage = &stages[index];
    for name in &stage.used_args {
        if let Some(info) = stage.all_args.get(name)
            && visited.insert(name.clone())
        {
            out.push((
                info.order,
                OutlineArg {
                    name: info.name.clone(),
                    description: info.description.clone(),
                    value: info.value.clone(),
                    location: info.location.clone(),
                },
            ));
        }
    }
    let next: Vec<usize> = stage
        .base
        .into_iter()
        .chain(stage.deps.iter().copied())
        .collect();
    for n in next {
        collect_args(stages, n, seen_stages, visited, out);
    }
}

fn collect_requirements(
    stages: &[StageOutline],
    index: usize,
    seen_stages: &mut BTreeSet<usize>,
    visited: &mut BTreeSet<(bool, String)>,
    secrets: &mut Vec<Requirement>,
    ssh: &mut Vec<Requirement>,
) {
    if !seen_stages.insert(index) {
        return;
    }
    let stage = &stages[index];
    for (id, r) in &stage.secrets {
        if visited.insert((true, id.clone())) {
            secrets.push(r.clone());
        }
    }
    for (id, r) in &stage.ssh {
        if visited.insert((false, id.clone())) {
            ssh.push(r.clone());
        }
    }
    for n in stage.base.into_iter().chain(stage.deps.iter().copied()) {
        collect_requirements(stages, n, seen_stages, visited, secrets, ssh);
    }
}

/// Go's `text/tabwriter` as BuildKit's printers use it (`NewWriter(w, 0, 0, padding, ' ', 0)`):
/// every tab-terminated cell is padded to its column's widest cell plus `padding`; the text after
/// a line's last tab is written as it is. All rows here have the same number of cells, so a
/// column is the whole table.
fn table(rows: &[Vec<String>], padding: usize) -> String {
    let columns = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] + padding - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

impl Outline {
    /// BuildKit's `PrintOutline`, what `--call outline` prints.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if !self.name.is_empty() || !self.description.is_empty() {
            let name = if self.name.is_empty() {
                "(default)"
            } else {
                &self.name
            };
            let mut rows = vec![vec!["TARGET:".to_string(), name.to_string()]];
            if !self.description.is_empty() {
                rows.push(vec!["DESCRIPTION:".into(), self.description.clone()]);
            }
            out.push_str(&table(&rows, 1));
            out.push('\n');
        }
        if !self.args.is_empty() {
            let mut rows = vec![vec![
                "BUILD ARG".into(),
                "VALUE".into(),
                "DESCRIPTION".into(),
            ]];
            rows.extend(
                self.args
                    .iter()
                    .map(|a| vec![a.name.clone(), a.value.clone(), a.description.clone()]),
            );
            out.push_str(&table(&rows, 3));
            out.push('\n');
        }
        for (title, list) in [("SECRET", &self.secrets), ("SSH", &self.ssh)] {
            if list.is_empty() {
                continue;
            }
            let mut rows = vec![vec![title.to_string(), "REQUIRED".into()]];
            rows.extend(list.iter().map(|r| {
                vec![
                    r.name.clone(),
                    if r.required { "true" } else { "" }.to_string(),
                ]
            }));
            out.push_str(&table(&rows, 3));
            out.push('\n');
        }
        out
    }
}

impl TargetList {
    /// BuildKit's `PrintTargets`, what `--call targets` prints.
    pub fn to_text(&self) -> String {
        let mut rows = vec![vec!["TARGET".to_string(), "DESCRIPTION".to_string()]];
        rows.extend(self.targets.iter().map(|t| {
            let name = match (t.name.is_empty(), t.default) {
                (true, true) => "(default)".to_string(),
                (false, true) => format!("{} (default)", t.name),
                _ => t.name.clone(),
            };
            vec![name, t.description.clone()]
        }));
        table(&rows, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::parse;

    fn opts() -> OutlineOptions {
        let linux = Platform::host();
        OutlineOptions {
            target: None,
            build_args: BTreeMap::new(),
            build_platform: linux.clone(),
            target_platform: linux,
        }
    }

    fn outline_of(src: &str, opts: &OutlineOptions) -> Outline {
        let df = parse(src.as_bytes()).expect("parses");
        outline(&df, src.as_bytes(), opts).expect("outline")
    }

    fn arg_rows(o: &Outline) -> Vec<(String, String, String, usize)> {
        o.args
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    a.value.clone(),
                    a.description.clone(),
                    a.location.line(),
                )
            })
            .collect()
    }

    #[test]
    fn outline_lists_used_meta_args_and_stage_args_with_descriptions() {
        let src = "\
# GO_VERSION sets the Go toolchain
ARG GO_VERSION=1.22
ARG UNUSED=x
ARG BASE=golang:${GO_VERSION}
# build compiles it
FROM ${BASE} AS build
# VERSION is the version stamped in
ARG VERSION=dev
ARG GO_VERSION
RUN --mount=type=secret,id=token,required=true --mount=type=ssh true
FROM scratch AS release
COPY --from=build /out /
";
        let o = outline_of(src, &opts());
        assert_eq!(o.name, "release");
        assert_eq!(
            arg_rows(&o),
            vec![
                (
                    "GO_VERSION".into(),
                    "1.22".into(),
                    "sets the Go toolchain".into(),
                    2
                ),
                ("BASE".into(), "golang:1.22".into(), String::new(), 4),
                (
                    "VERSION".into(),
                    "dev".into(),
                    "is the version stamped in".into(),
                    8
                ),
            ]
        );
        assert_eq!(o.secrets.len(), 1);
        assert!(o.secrets[0].required);
        assert_eq!(o.ssh[0].name, "default");
        let mut with_arg = opts();
        with_arg.build_args.insert("VERSION".into(), "1.0".into());
        with_arg.target = Some("build".into());
        let o = outline_of(src, &with_arg);
        assert_eq!(o.name, "build");
        assert_eq!(o.description, "compiles it");
        assert_eq!(o.args[2].value, "1.0");
    }

    #[test]
    fn unknown_target_is_an_error_naming_it() {
        let df = parse(b"FROM scratch AS a\n").expect("parses");
        let mut o = opts();
        o.target = Some("nope".into());
        let err = outline(&df, b"", &o).expect_err("no such stage");
        assert_eq!(err.to_string(), "target stage \"nope\" could not be found");
        let df = parse(b"ARG IMAGE\nFROM $IMAGE\n").expect("parses");
        let err = outline(&df, b"", &opts()).expect_err("blank base");
        assert_eq!(err.to_string(), "base name ($IMAGE) should not be blank");
        assert_eq!(err.span().map(|s| s.start.line), Some(2));
        let df = parse(b"ARG A=1\n").expect("parses");
        assert!(matches!(
            outline(&df, b"", &opts()),
            Err(OutlineError::NoStage)
        ));
    }

    #[test]
    fn json_escapes_as_go_does() {
        let src = "# A is <b>&amp;</b>\nARG A=x\nFROM scratch:${A}\n";
        let o = outline_of(src, &opts());
        let json = go_json(&o).expect("json");
        assert!(
            json.contains(r#""description": "is \u003cb\u003e\u0026amp;\u003c/b\u003e""#),
            "{json}"
        );
        let back: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(back["args"][0]["description"], "is <b>&amp;</b>");
    }

    #[test]
    fn text_is_buildkits_tabwriter_layout() {
        let src = "ARG A=1\n# a the first\nARG a=xyz\nFROM scratch:${A}${a}\n";
        let o = outline_of(src, &opts());
        assert_eq!(
            o.to_text(),
            "BUILD ARG   VALUE   DESCRIPTION\nA           1       \na           xyz     the first\n\n"
        );
        let df = parse(b"# base is the base\nFROM scratch AS base\nFROM base\n").expect("parses");
        let t = targets(&df, b"").expect("targets");
        assert_eq!(
            t.to_text(),
            "TARGET    DESCRIPTION\nbase      is the base\n(default) \n"
        );
        let json = serde_json::to_value(&t).expect("json");
        assert_eq!(json["targets"][1]["default"], true);
        assert_eq!(json["targets"][1]["base"], "base");
        assert_eq!(
            json["targets"][0]["location"]["ranges"][0]["start"]["line"],
            2
        );
        assert!(json["targets"][0].get("default").is_none());
    }
}
