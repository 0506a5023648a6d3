//! The checks, run in BuildKit's order (`toDispatchState`): the parser's empty continuations;
//! the rules of each instruction as it is parsed (every stage); stage names and instruction
//! casing; FROM with default arguments; each stage's FROM in the global scope; then the rules
//! of each dispatched instruction, with the variables in scope at that instruction.

use super::rules::{self, Rule, message};
use super::{Finding, LintConfig, LintInput};
use crate::frontend::ast::Node;
use crate::frontend::diagnostic::Span;
use crate::frontend::instruction::{Command, Instruction, Mount};
use crate::frontend::shell::{Env, Lexer};
use crate::frontend::stage::ImageKey;
use crate::oci::{Platform, Reference};
use std::collections::{BTreeSet, HashMap, HashSet};

/// ARGs BuildKit never puts in the environment (`nonEnvArgs`); UndefinedVar ignores them.
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// Stage names BuildKit reserves.
const RESERVED_STAGE_NAMES: &[&str] = &["context", "scratch"];

/// Collects findings under a configuration.
struct Linter<'a> {
    config: &'a LintConfig,
    findings: Vec<Finding>,
}

impl Linter<'_> {
    fn report(&mut self, config: &LintConfig, rule: &'static Rule, node: &Node, message: String) {
        self.report_span(config, rule, lines_of(node), message);
    }

    fn report_span(
        &mut self,
        config: &LintConfig,
        rule: &'static Rule,
        span: crate::frontend::diagnostic::Span,
        message: String,
    ) {
        if config.runs(rule) {
            self.findings.push(Finding {
                rule,
                message,
                span,
            });
        }
    }
}

/// The instruction's lines, from its keyword to its last line (BuildKit's `node.Location()`).
fn lines_of(node: &Node) -> crate::frontend::diagnostic::Span {
    node.span
}

/// One stage as the checks see it: its FROM and its own instructions.
struct StageNodes<'a> {
    from_node: &'a Node,
    from: crate::frontend::instruction::From,
    body: Vec<(&'a Node, Instruction)>,
}

/// Runs every check.
pub(super) fn run(input: &LintInput<'_>, config: &LintConfig) -> Vec<Finding> {
    let mut lint = Linter {
        config,
        findings: Vec::new(),
    };
    let df = input.dockerfile;
    for warning in &df.warnings {
        lint.report_span(
            config,
            &rules::NO_EMPTY_CONTINUATION,
            warning.span,
            message::no_empty_continuation(),
        );
    }

    // Split into meta args and stages; parse-time rules for every instruction.
    let mut meta_args: Vec<(&Node, Instruction)> = Vec::new();
    let mut stages: Vec<StageNodes<'_>> = Vec::new();
    for node in &df.nodes {
        // BuildKit stops at the first instruction it cannot parse: nothing after it is checked.
        let Ok(inst) = Instruction::from_node(node) else {
            return lint.findings;
        };
        parse_time(&mut lint, node, &inst);
        match (inst, stages.last_mut()) {
            (Instruction::From(from), _) => stages.push(StageNodes {
                from_node: node,
                from,
                body: Vec::new(),
            }),
            (inst @ Instruction::Arg(_), None) => meta_args.push((node, inst)),
            (_, None) => {}
            (inst, Some(stage)) => stage.body.push((node, inst)),
        }
    }

    stage_names(&mut lint, &stages);
    command_casing(&mut lint, &stages);
    let lexer = Lexer::new(df.directives.escape);
    let target_name = match &input.options.target {
        Some(target) => target.clone(),
        None => stages
            .last()
            .and_then(|s| s.from.as_name.clone())
            .unwrap_or_else(|| "default".to_string()),
    };
    let predefined = crate::frontend::stage::predefined_arg_pairs(input.options, &target_name);
    default_arg_bases(&mut lint, &lexer, &stages, &meta_args, &predefined);
    let globals = match global_args(&lexer, &meta_args, &predefined, input) {
        Some(globals) => globals,
        None => return lint.findings,
    };
    let mut declared: Vec<&str> = meta_args
        .iter()
        .flat_map(|(_, inst)| match inst {
            Instruction::Arg(arg) => arg.args.iter().map(|d| d.name.as_str()).collect(),
            _ => Vec::new(),
        })
        .collect();
    for (key, _) in &globals {
        if !declared.contains(&key.as_str()) {
            declared.push(key);
        }
    }
    let mut bases: Vec<StageBase> = Vec::new();
    // Each name's first stage among those before the current one (a map, not a scan of the
    // stages per FROM, which made the checks quadratic in the number of stages).
    let mut first_named: HashMap<&str, usize> = HashMap::new();
    for (index, stage) in stages.iter().enumerate() {
        let Some(expanded) = from_args(&mut lint, &lexer, stage, &globals, &declared) else {
            // BuildKit stops at a FROM that does not expand: nothing is dispatched.
            return lint.findings;
        };
        bases.push(stage_base(input, &first_named, expanded));
        if let Some(name) = stage.from.as_name.as_deref() {
            first_named.entry(name).or_insert(index);
        }
    }
    dispatch(&mut lint, input, &stages, &bases, &lexer, &globals);
    lint.findings
}

/// What a stage is built on, as BuildKit finds it: an earlier stage by its (lower-case) name,
/// the empty image, or an image for a platform.
#[derive(Debug, Clone)]
enum StageBase {
    Stage(usize),
    Scratch,
    Image(ImageKey),
}

/// A FROM after expansion in the global scope.
struct ExpandedFrom {
    image: String,
    platform: Option<Platform>,
}

/// `earlier`: the first stage of each name among the stages before this one.
fn stage_base(
    input: &LintInput<'_>,
    earlier: &HashMap<&str, usize>,
    from: ExpandedFrom,
) -> StageBase {
    if let Some(&index) = earlier.get(from.image.as_str()) {
        return StageBase::Stage(index);
    }
    if from.image == "scratch" {
        return StageBase::Scratch;
    }
    let platform = from.platform.unwrap_or_else(|| input.options.target());
    StageBase::Image(ImageKey::new(&from.image, &platform))
}

/// The rules BuildKit runs while it parses each instruction (`ParseInstructionWithLinter`).
fn parse_time(lint: &mut Linter<'_>, node: &Node, inst: &Instruction) {
    let config = lint.config.for_comments(&node.comments);
    match inst {
        Instruction::Maintainer(_) => {
            lint.report(
                &config,
                &rules::MAINTAINER_DEPRECATED,
                node,
                message::maintainer_deprecated(),
            );
        }
        Instruction::From(from) => {
            if let [_, as_word, name] = node.args.as_slice() {
                if *name != name.to_lowercase() {
                    lint.report(
                        &config,
                        &rules::STAGE_NAME_CASING,
                        node,
                        message::stage_name_casing(name),
                    );
                }
                let keyword = &node.keyword;
                let from_lower = *keyword == keyword.to_lowercase();
                let from_upper = *keyword == keyword.to_uppercase();
                let mismatch = (from_lower && *as_word != as_word.to_lowercase())
                    || (!from_lower && from_upper && *as_word != as_word.to_uppercase());
                if mismatch {
                    lint.report(
                        &config,
                        &rules::FROM_AS_CASING,
                        node,
                        message::from_as_casing(keyword, as_word),
                    );
                }
            }
            if let Some(name) = &from.as_name {
                definition_description(lint, &config, node, "FROM", &[name.as_str()]);
            }
        }
        Instruction::Arg(arg) => {
            let keys: Vec<&str> = arg.args.iter().map(|d| d.name.as_str()).collect();
            definition_description(lint, &config, node, "ARG", &keys);
        }
        _ => {}
    }
}

/// InvalidDefinitionDescription: the comment right above a named FROM or an ARG should start
/// with the name it describes.
fn definition_description(
    lint: &mut Linter<'_>,
    config: &LintConfig,
    node: &Node,
    instruction: &str,
    keys: &[&str],
) {
    let (Some(last), Some(first)) = (node.comments.last(), keys.first()) else {
        return;
    };
    let word = last.split(' ').next().unwrap_or_default();
    if keys.contains(&word) {
        return;
    }
    let example = if keys.len() > 1 { "<arg_key>" } else { first };
    lint.report(
        config,
        &rules::INVALID_DEFINITION_DESCRIPTION,
        node,
        message::invalid_definition_description(instruction, example),
    );
}

/// ReservedStageName and DuplicateStageName (`validateStageNames`, the file's configuration).
fn stage_names(lint: &mut Linter<'_>, stages: &[StageNodes<'_>]) {
    let config = lint.config;
    let mut seen: HashSet<&str> = HashSet::new();
    for stage in stages {
        let Some(name) = stage.from.as_name.as_deref() else {
            continue;
        };
        if RESERVED_STAGE_NAMES.contains(&name) {
            lint.report(
                config,
                &rules::RESERVED_STAGE_NAME,
                stage.from_node,
                message::reserved_stage_name(name),
            );
        }
        if seen.contains(&name) {
            lint.report(
                config,
                &rules::DUPLICATE_STAGE_NAME,
                stage.from_node,
                message::duplicate_stage_name(name),
            );
        }
        seen.insert(name);
    }
}

/// ConsistentInstructionCasing (`validateCommandCasing`): the stages' instructions (meta args
/// not counted) should all be upper or all lower case, as most of them are.
fn command_casing(lint: &mut Linter<'_>, stages: &[StageNodes<'_>]) {
    let config = lint.config;
    let keywords = || {
        stages
            .iter()
            .flat_map(|s| std::iter::once(s.from_node).chain(s.body.iter().map(|(n, _)| *n)))
    };
    let (mut lower, mut upper) = (0usize, 0usize);
    for node in keywords() {
        let k = &node.keyword;
        if *k == k.to_lowercase() {
            lower += 1;
        } else if *k == k.to_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for node in keywords() {
        let k = &node.keyword;
        let casing = if majority_lower && *k != k.to_lowercase() {
            "lowercase"
        } else if !majority_lower && *k != k.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        lint.report(
            config,
            &rules::CONSISTENT_INSTRUCTION_CASING,
            node,
            message::consistent_instruction_casing(k, casing),
        );
    }
}

/// InvalidDefaultArgInFrom (`validateBaseImagesWithDefaultArgs`): with the meta args' defaults
/// only (no build arguments), every FROM must still name a valid image. An expansion error
/// abandons the check, as in BuildKit.
fn default_arg_bases(
    lint: &mut Linter<'_>,
    lexer: &Lexer,
    stages: &[StageNodes<'_>],
    meta_args: &[(&Node, Instruction)],
    predefined: &[(String, String)],
) {
    let mut args: Vec<(String, String)> = predefined.to_vec();
    for (_, inst) in meta_args {
        let Instruction::Arg(arg) = inst else {
            continue;
        };
        for decl in &arg.args {
            if let Some(default) = &decl.default {
                let Ok(value) = lexer.expand_word(default, &args) else {
                    return;
                };
                set(&mut args, &decl.name, value);
            }
        }
    }
    let config = lint.config;
    for stage in stages {
        let Ok(name) = lexer.expand_word(&stage.from.image, &args) else {
            return;
        };
        if Reference::parse_normalized(&name).is_err() {
            lint.report(
                config,
                &rules::INVALID_DEFAULT_ARG_IN_FROM,
                stage.from_node,
                message::invalid_default_arg_in_from(&stage.from.image),
            );
        }
    }
}

/// The global scope FROM lines see: the predefined args, then the meta args with the build
/// arguments (BuildKit's `buildMetaArgs`); `None` when a meta arg does not expand (the build
/// fails there).
fn global_args(
    lexer: &Lexer,
    meta_args: &[(&Node, Instruction)],
    predefined: &[(String, String)],
    input: &LintInput<'_>,
) -> Option<Vec<(String, String)>> {
    let mut args = predefined.to_vec();
    for (_, inst) in meta_args {
        let Instruction::Arg(arg) = inst else {
            continue;
        };
        for decl in &arg.args {
            let value = match (input.options.build_args.get(&decl.name), &decl.default) {
                (Some(value), _) => Some(value.clone()),
                (None, Some(default)) => Some(lexer.expand_word(default, &args).ok()?),
                (None, None) => None,
            };
            if let Some(value) = value {
                set(&mut args, &decl.name, value);
            }
        }
    }
    Some(args)
}

/// A stage's FROM in the global scope (`buildDispatchStates`): UndefinedArgInFrom for the image
/// and `--platform`, RedundantTargetPlatform, FromPlatformFlagConstDisallowed; with the FROM's
/// own `# check=` comment. `None` when the FROM does not expand (BuildKit stops there).
fn from_args(
    lint: &mut Linter<'_>,
    lexer: &Lexer,
    stage: &StageNodes<'_>,
    globals: &[(String, String)],
    declared: &[&str],
) -> Option<ExpandedFrom> {
    let config = lint.config.for_comments(&stage.from_node.comments);
    let node = stage.from_node;
    let undeclared = |lint: &mut Linter<'_>, unset: &BTreeSet<String>| {
        for name in unset {
            if declared.contains(&name.as_str()) {
                continue;
            }
            let suggestion = suggest(name, declared.iter().copied());
            lint.report(
                &config,
                &rules::UNDEFINED_ARG_IN_FROM,
                node,
                message::undefined_arg_in_from(name, suggestion.as_deref()),
            );
        }
    };
    let image = lexer
        .expand_word_tracked(&stage.from.image, &globals)
        .ok()?;
    undeclared(lint, &image.unset);
    if image.value.is_empty() {
        return None;
    }
    let mut parsed_platform = None;
    if let Some(platform) = &stage.from.platform {
        let expanded = lexer.expand_word_tracked(platform, &globals).ok()?;
        undeclared(lint, &expanded.unset);
        let set_names: Vec<&str> = expanded.set_names().collect();
        if set_names == ["TARGETPLATFORM"]
            && expanded.unset.is_empty()
            && globals.lookup("TARGETPLATFORM").as_deref() == Some(expanded.value.as_str())
        {
            lint.report(
                &config,
                &rules::REDUNDANT_TARGET_PLATFORM,
                node,
                message::redundant_target_platform(platform),
            );
        }
        if expanded.used.is_empty()
            && let Ok(parsed) = Platform::parse(&expanded.value)
        {
            let name = stage.from.as_name.as_deref().unwrap_or_default();
            if !name.contains(parsed.os.as_str()) && !name.contains(parsed.architecture.as_str()) {
                lint.report(
                    &config,
                    &rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                    node,
                    message::from_platform_flag_const_disallowed(&expanded.value),
                );
            }
        }
        parsed_platform = Some(Platform::parse(&expanded.value).ok()?);
    }
    Some(ExpandedFrom {
        image: image.value,
        platform: parsed_platform,
    })
}

/// What a dispatched stage carries to the instructions after it and to stages built FROM it.
#[derive(Debug, Clone, Default)]
struct Scope {
    /// The environment: the base's, then ENV and ARG values in order.
    vars: Vec<(String, String)>,
    /// The ARG names declared so far (BuildKit's `buildArgs`): UndefinedVar leaves them alone
    /// even without a value.
    args: Vec<String>,
    /// A WORKDIR was set in this file (this stage or one it is built FROM).
    workdir_set: bool,
    /// A SHELL was set (CMD/ENTRYPOINT's shell form is then what the user chose).
    shell_set: bool,
    /// The base image's environment is known; UndefinedVar is only checked when it is, since a
    /// variable the image sets is defined.
    env_known: bool,
}

/// The dispatch-time rules for every dispatched stage, in file order.
fn dispatch(
    lint: &mut Linter<'_>,
    input: &LintInput<'_>,
    stages: &[StageNodes<'_>],
    bases: &[StageBase],
    lexer: &Lexer,
    globals: &[(String, String)],
) {
    let mut scopes: Vec<Option<Scope>> = vec![None; stages.len()];
    // Looked up once per stage: a scan of the lists per stage was quadratic.
    let listed = |list: Option<&[usize]>| {
        list.map(|list| {
            let mut listed = vec![false; stages.len()];
            for &index in list {
                if let Some(slot) = listed.get_mut(index) {
                    *slot = true;
                }
            }
            listed
        })
    };
    let (dispatched, reachable) = (listed(input.dispatched), listed(input.reachable));
    let left_out = |list: &Option<Vec<bool>>, index: usize| {
        list.as_ref()
            .is_some_and(|list| !list.get(index).copied().unwrap_or(false))
    };
    for ((index, stage), base) in stages.iter().enumerate().zip(bases) {
        if left_out(&dispatched, index) {
            continue;
        }
        let mut scope = match base {
            StageBase::Stage(parent) => scopes.get(*parent).cloned().flatten().unwrap_or_default(),
            StageBase::Image(key) => match input.options.base_images.get(key) {
                Some(image) => Scope {
                    vars: image.env.clone(),
                    env_known: true,
                    ..Scope::default()
                },
                None => Scope::default(),
            },
            StageBase::Scratch => Scope {
                env_known: true,
                ..Scope::default()
            },
        };
        if scope.vars.lookup("PATH").is_none() {
            scope
                .vars
                .push(("PATH".into(), crate::frontend::stage::DEFAULT_PATH.into()));
        }
        let mut once = OnceTrackers::default();
        // The base's ONBUILD triggers run first, placed at this stage's FROM (BuildKit's
        // `initOnBuildTriggers`): a known image's, or the parent stage's own ONBUILDs.
        let triggers: Vec<&str> = match base {
            _ if left_out(&reachable, index) => Vec::new(),
            StageBase::Stage(parent) => stages
                .get(*parent)
                .map(|p| {
                    p.body
                        .iter()
                        .filter_map(|(_, inst)| match inst {
                            Instruction::Onbuild(o) => Some(o.expression.as_str()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            StageBase::Image(key) => input
                .options
                .base_images
                .get(key)
                .map(|image| image.onbuild.iter().map(String::as_str).collect())
                .unwrap_or_default(),
            StageBase::Scratch => Vec::new(),
        };
        for trigger in triggers {
            let Ok(node) = crate::frontend::stage::trigger_node(trigger, stage.from_node.span)
            else {
                continue;
            };
            let Ok(inst) = Instruction::from_node(&node) else {
                continue;
            };
            let config = lint.config;
            let mut cx = Dispatch {
                lint,
                config,
                node: &node,
                lexer,
                scope: &mut scope,
            };
            cx.instruction(&inst, input, globals, &mut once);
        }
        for (node, inst) in &stage.body {
            // The build failed at an earlier instruction: BuildKit dispatched nothing after it.
            if input
                .dispatch_until
                .is_some_and(|line| node.span.start.line > line)
            {
                return;
            }
            let config = lint.config.for_comments(&node.comments);
            let mut cx = Dispatch {
                lint,
                config: &config,
                node,
                lexer,
                scope: &mut scope,
            };
            cx.instruction(inst, input, globals, &mut once);
        }
        scopes[index] = Some(scope);
    }
}

/// The last CMD, ENTRYPOINT and HEALTHCHECK of a stage (MultipleInstructionsDisallowed reports
/// the earlier one, which is ignored).
#[derive(Default)]
struct OnceTrackers {
    cmd: Option<Span>,
    entrypoint: Option<Span>,
    healthcheck: Option<Span>,
}

/// One instruction being dispatched.
struct Dispatch<'l, 'c, 'x, 'n> {
    lint: &'l mut Linter<'c>,
    config: &'x LintConfig,
    node: &'n Node,
    lexer: &'x Lexer,
    scope: &'x mut Scope,
}

impl<'n> Dispatch<'_, '_, '_, 'n> {
    fn report(&mut self, rule: &'static Rule, message: String) {
        let config = self.config;
        self.lint.report(config, rule, self.node, message);
    }

    /// Expands `word` in the stage's scope, reporting the variables it uses that are neither
    /// set nor declared ARGs (`reportUnmatchedVariables`); `None` when it does not expand.
    fn expand(&mut self, word: &str) -> Option<String> {
        self.expand_with(self.lexer.clone(), word)
    }

    fn expand_with(&mut self, lexer: Lexer, word: &str) -> Option<String> {
        let (expansion, unset) = lexer.expand_word_tracked_unset(word, &self.scope.vars);
        self.undefined(&unset);
        expansion.ok().map(|e| e.value)
    }

    fn undefined(&mut self, unset: &BTreeSet<String>) {
        if !self.scope.env_known {
            return;
        }
        for name in unset {
            if self.scope.args.iter().any(|a| a == name) || NON_ENV_ARGS.contains(&name.as_str()) {
                continue;
            }
            let suggestion = suggest(name, self.scope.vars.iter().map(|(k, _)| k.as_str()));
            self.report(
                &rules::UNDEFINED_VAR,
                message::undefined_var(name, suggestion.as_deref()),
            );
        }
    }

    fn instruction(
        &mut self,
        inst: &Instruction,
        input: &LintInput<'_>,
        globals: &[(String, String)],
        once: &mut OnceTrackers,
    ) {
        match inst {
            Instruction::Env(env) => {
                let mut pairs = Vec::new();
                for kv in &env.pairs {
                    let key = self.expand(&kv.key);
                    let value = self.expand(&kv.value);
                    pairs.push((key, value));
                }
                // BuildKit expands the whole instruction before dispatching it: a word that
                // fails to expand stops the build there, before the instruction's own checks.
                if pairs.iter().any(|(k, v)| k.is_none() || v.is_none()) {
                    return;
                }
                for (index, (key, value)) in pairs.into_iter().enumerate() {
                    if legacy_pair(self.node, index) {
                        self.report(
                            &rules::LEGACY_KEY_VALUE_FORMAT,
                            message::legacy_key_value_format(&self.node.keyword),
                        );
                    }
                    let (Some(key), Some(value)) = (key, value) else {
                        continue;
                    };
                    self.secret("ENV", &key);
                    set(&mut self.scope.vars, &key, value);
                }
            }
            Instruction::Label(label) => {
                let mut expanded = true;
                for kv in &label.pairs {
                    expanded &= self.expand(&kv.key).is_some();
                    expanded &= self.expand(&kv.value).is_some();
                }
                if !expanded {
                    return;
                }
                for index in 0..label.pairs.len() {
                    if legacy_pair(self.node, index) {
                        self.report(
                            &rules::LEGACY_KEY_VALUE_FORMAT,
                            message::legacy_key_value_format(&self.node.keyword),
                        );
                    }
                }
            }
            Instruction::Arg(arg) => {
                for decl in &arg.args {
                    self.secret("ARG", &decl.name);
                    let value = match (input.options.build_args.get(&decl.name), &decl.default) {
                        (Some(value), _) => Some(value.clone()),
                        (None, Some(default)) => self.expand(default),
                        (None, None) => globals.lookup(&decl.name),
                    };
                    if let Some(value) = value
                        && !NON_ENV_ARGS.contains(&decl.name.as_str())
                    {
                        set(&mut self.scope.vars, &decl.name, value);
                    }
                    self.scope.args.push(decl.name.clone());
                }
            }
            Instruction::Workdir(workdir) => {
                let Some(path) = self.expand(&workdir.path) else {
                    return;
                };
                if !self.scope.workdir_set && !path.starts_with('/') {
                    self.report(
                        &rules::WORKDIR_RELATIVE_PATH,
                        message::workdir_relative_path(&path),
                    );
                }
                self.scope.workdir_set = true;
            }
            Instruction::User(user) => {
                self.expand(&user.user);
            }
            Instruction::Volume(volume) => {
                for path in &volume.paths {
                    self.expand(path);
                }
            }
            Instruction::StopSignal(signal) => {
                self.expand(&signal.signal);
            }
            Instruction::Copy(copy) => {
                for flag in [&copy.chown, &copy.chmod].into_iter().flatten() {
                    self.expand(flag);
                }
                let sources: Vec<Option<String>> =
                    copy.sources.iter().map(|s| self.expand(s)).collect();
                self.expand(&copy.dest);
                self.inline_files(&copy.inline);
                if copy.from.is_none() {
                    self.ignored_sources("Copy", sources.iter().flatten(), input);
                }
            }
            Instruction::Add(add) => {
                for flag in [&add.chown, &add.chmod, &add.checksum]
                    .into_iter()
                    .flatten()
                {
                    self.expand(flag);
                }
                let sources: Vec<Option<String>> =
                    add.sources.iter().map(|s| self.expand(s)).collect();
                self.expand(&add.dest);
                self.inline_files(&add.inline);
                let local: Vec<&String> = sources
                    .iter()
                    .flatten()
                    .filter(|s| !crate::frontend::plan::is_remote(s))
                    .collect();
                self.ignored_sources("Add", local.into_iter(), input);
            }
            Instruction::Run(run) => {
                for mount in &run.mounts {
                    let mut unset = BTreeSet::new();
                    let (lexer, vars) = (self.lexer, &self.scope.vars);
                    let mut expander = |word: &str| match lexer.expand_word_tracked(word, vars) {
                        Ok(expansion) => {
                            unset.extend(expansion.unset);
                            Ok(expansion.value)
                        }
                        Err(err) => Err(err.message),
                    };
                    let _ = Mount::parse(&mount.raw, mount.span, Some(&mut expander));
                    self.undefined(&unset);
                }
            }
            Instruction::Cmd(cmd) => {
                self.used_once(&mut once.cmd);
                self.json_args(&cmd.command);
            }
            Instruction::Entrypoint(entrypoint) => {
                self.used_once(&mut once.entrypoint);
                self.json_args(&entrypoint.command);
            }
            Instruction::Healthcheck(_) => self.used_once(&mut once.healthcheck),
            Instruction::Expose(expose) => {
                let mut ports = Vec::new();
                for word in &expose.ports {
                    match self.lexer.expand_words(word, &self.scope.vars) {
                        Ok(words) => ports.extend(words),
                        Err(_) => return,
                    }
                }
                for port in ports {
                    self.expose(&port);
                }
            }
            Instruction::Shell(_) => self.scope.shell_set = true,
            Instruction::From(_) | Instruction::Onbuild(_) | Instruction::Maintainer(_) => {}
        }
    }

    /// SecretsUsedInArgOrEnv (`validateNoSecretKey`).
    fn secret(&mut self, instruction: &str, key: &str) {
        if is_secret_name(key) {
            self.report(
                &rules::SECRETS_USED_IN_ARG_OR_ENV,
                message::secrets_used_in_arg_or_env(instruction, key),
            );
        }
    }

    /// Heredoc files of COPY/ADD whose bodies expand (BuildKit's `ExpandRaw`: `\` escapes,
    /// quotes kept).
    fn inline_files(&mut self, files: &[crate::frontend::instruction::InlineFile]) {
        for file in files.iter().filter(|f| f.expand) {
            let raw = Lexer::new('\\').with_skip_process_quotes(true);
            self.expand_with(raw, &file.content);
        }
    }

    /// MultipleInstructionsDisallowed: reported at the earlier instruction of the two.
    fn used_once(&mut self, last: &mut Option<Span>) {
        if let Some(previous) = last.replace(lines_of(self.node)) {
            let config = self.config;
            self.lint.report_span(
                config,
                &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                previous,
                message::multiple_instructions_disallowed(&self.node.keyword),
            );
        }
    }

    /// JSONArgsRecommended: CMD/ENTRYPOINT in shell form when no SHELL was set.
    fn json_args(&mut self, command: &Command) {
        if matches!(command, Command::Shell(_)) && !self.scope.shell_set {
            let keyword = self.node.keyword.clone();
            self.report(
                &rules::JSON_ARGS_RECOMMENDED,
                message::json_args_recommended(&keyword),
            );
        }
    }

    /// ExposeProtoCasing and ExposeInvalidFormat for one port (`parsePort`); a port whose
    /// protocol BuildKit rejects is the build's error, not a finding.
    fn expose(&mut self, raw: &str) {
        let parts: Vec<&str> = raw.split(':').collect();
        let (ip, host_port, container) = match parts.as_slice() {
            [container] => ("".to_string(), "", *container),
            [host, container] => ("".to_string(), *host, *container),
            [ip, host, container] => (ip.to_string(), *host, *container),
            [rest @ .., host, container] => (rest.join(":"), *host, *container),
            [] => return,
        };
        let (port, proto) = container.split_once('/').unwrap_or((container, ""));
        if port.is_empty() || !matches!(proto.to_lowercase().as_str(), "" | "tcp" | "udp" | "sctp")
        {
            return;
        }
        if proto != proto.to_lowercase() {
            self.report(
                &rules::EXPOSE_PROTO_CASING,
                message::expose_proto_casing(raw),
            );
        }
        if !ip.is_empty() || !host_port.is_empty() {
            self.report(
                &rules::EXPOSE_INVALID_FORMAT,
                message::expose_invalid_format(raw),
            );
        }
    }

    /// CopyIgnoredFile (`validateCopySourcePath`): a local source the `.dockerignore` leaves
    /// out. Not checked when the ignore file has `!` exceptions (too hard to decide statically,
    /// as BuildKit says); `.` and `/` only when a pattern leaves out every root entry.
    fn ignored_sources<'s>(
        &mut self,
        command: &str,
        sources: impl Iterator<Item = &'s String>,
        input: &LintInput<'_>,
    ) {
        let Some(ignore) = input.dockerignore.filter(|i| !i.is_empty()) else {
            return;
        };
        let patterns = ignore.patterns();
        if patterns.iter().any(|p| p.starts_with('!')) {
            return;
        }
        for source in sources {
            let cleaned = crate::frontend::context::dockerignore::clean(source);
            if (cleaned == "." || cleaned == "/")
                && !patterns
                    .iter()
                    .any(|p| matches!(p.as_str(), "*" | "**" | "**/*"))
            {
                continue;
            }
            let relative = cleaned.trim_start_matches('/');
            let relative = if relative.is_empty() { "." } else { relative };
            if ignore.is_excluded(relative) || ignore.is_excluded(&cleaned) {
                self.report(
                    &rules::COPY_IGNORED_FILE,
                    message::copy_ignored_file(command, &cleaned),
                );
            }
        }
    }
}

/// Whether the ENV/LABEL pair `index` of `node` was written in the legacy `key value` form
/// (the parser marks it with an empty separator).
fn legacy_pair(node: &Node, index: usize) -> bool {
    node.args.get(index * 3 + 2).is_some_and(String::is_empty)
}

/// BuildKit's secret-name test: a word of the name (split at `_`) is a secret token, and none
/// is an allowed one (`public`, `file`, `version`), case-insensitively.
fn is_secret_name(key: &str) -> bool {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: &[&str] = &["public", "file", "version"];
    let has = |tokens: &[&str]| {
        let lower = key.to_lowercase();
        tokens.iter().any(|token| {
            lower.match_indices(token).any(|(at, _)| {
                let before = at == 0 || lower.as_bytes()[at - 1] == b'_';
                let end = at + token.len();
                let after = end == lower.len() || lower.as_bytes()[end] == b'_';
                before && after
            })
        })
    };
    has(DENY) && !has(ALLOW)
}

/// Sets `key` in ordered pairs (a later definition replaces the earlier one and moves last).
fn set(vars: &mut Vec<(String, String)>, key: &str, value: String) {
    vars.retain(|(k, _)| k != key);
    vars.push((key.to_string(), value));
}

/// BuildKit's `suggest.Search` (case-sensitive): the option closest to `value` by Levenshtein
/// distance, if closer than 3 edits; nothing when an option equals it.
pub(super) fn suggest<'a>(value: &str, options: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<&str> = None;
    let mut min = 3;
    for option in options {
        if option == value {
            return None;
        }
        let distance = levenshtein(value, option);
        if distance < min {
            best = Some(option);
            min = distance;
        }
    }
    best.map(str::to_string)
}

/// Levenshtein distance over characters.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let value = (previous[j] + cost)
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
            current.push(value);
        }
        previous = current;
    }
    previous[b.len()]
}
