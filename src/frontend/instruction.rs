//! Typed instructions: each [`Node`] of the syntax tree becomes an [`Instruction`] with its flags
//! checked and its arguments given meaning, following BuildKit's
//! `frontend/dockerfile/instructions` (`parse.go`, `bflag.go`, `commands_runmount.go`).
//!
//! Words are not expanded here: [`super::stage`] expands the arguments BuildKit expands, with the
//! variables in scope at that point.

mod display;
mod duration;
mod flags;
mod mount;

pub use mount::{Mount, MountExpander, MountType, Sharing};

use crate::frontend::ast::{Dockerfile, Heredoc, Node};
use crate::frontend::diagnostic::{Located, Span};
use crate::frontend::syntax::words;
use flags::{FlagKind, Flags};
use serde::Serialize;

/// Every instruction BuildKit knows, upper case.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// One Dockerfile instruction with typed arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "lowercase")]
pub enum Instruction {
    From(From),
    Run(Run),
    Cmd(Cmd),
    Entrypoint(Entrypoint),
    Shell(Shell),
    Env(Env),
    Label(Label),
    Arg(Arg),
    Expose(Expose),
    Copy(Copy),
    Add(Add),
    Workdir(Workdir),
    User(User),
    Volume(Volume),
    StopSignal(StopSignal),
    Healthcheck(Healthcheck),
    Onbuild(Onbuild),
    Maintainer(Maintainer),
}

/// `FROM [--platform=P] IMAGE [AS NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// The image (or stage) as written, before expansion.
    pub image: String,
    pub platform: Option<String>,
    /// The stage name, lower-cased (BuildKit compares stage names case-insensitively).
    pub as_name: Option<String>,
    /// Where the image word is.
    pub image_span: Span,
    /// Where the stage name is, when there is one.
    pub name_span: Option<Span>,
    pub span: Span,
}

/// A command line: the shell form (run by the image's shell) or the exec (JSON) form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

impl Command {
    fn from_node(node: &Node) -> Command {
        Command::from_args(node.json, &node.args)
    }

    /// The exec form of `args` when they came from a JSON array, else the shell form.
    fn from_args(json: bool, args: &[String]) -> Command {
        if json {
            Command::Exec(args.to_vec())
        } else {
            Command::Shell(args.join(" "))
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Command::Shell(s) => s.trim().is_empty(),
            Command::Exec(v) => v.is_empty(),
        }
    }
}

/// `RUN --network=` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Default,
    None,
    Host,
}

impl Network {
    const ALL: [Network; 3] = [Network::Default, Network::None, Network::Host];

    /// The value as written in `--network=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Default => "default",
            Network::None => "none",
            Network::Host => "host",
        }
    }
}

/// `RUN --security=` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    Sandbox,
    Insecure,
}

impl Security {
    const ALL: [Security; 2] = [Security::Sandbox, Security::Insecure];

    /// The value as written in `--security=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Sandbox => "sandbox",
            Security::Insecure => "insecure",
        }
    }
}

/// `RUN [--mount=...] [--network=...] [--security=...] COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub command: Command,
    /// Heredoc bodies the command reads (`RUN <<EOF`), in order.
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<Mount>,
    pub network: Option<Network>,
    pub security: Option<Security>,
    pub span: Span,
}

/// `CMD COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cmd {
    pub command: Command,
    pub span: Span,
}

/// `ENTRYPOINT COMMAND`; an empty exec form (`ENTRYPOINT []`) clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entrypoint {
    pub command: Command,
    pub span: Span,
}

/// `SHELL ["executable", "args"...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shell {
    pub shell: Vec<String>,
    pub span: Span,
}

/// A `key=value` pair of ENV or LABEL. Before expansion the value keeps its quotes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// `ENV key=value...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Env {
    pub pairs: Vec<KeyValue>,
    pub span: Span,
}

/// `LABEL key=value...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    pub pairs: Vec<KeyValue>,
    pub span: Span,
}

/// One variable of an ARG instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// `ARG name[=default]...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arg {
    pub args: Vec<ArgDecl>,
    pub span: Span,
}

/// `EXPOSE port[/proto]...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expose {
    pub ports: Vec<String>,
    pub span: Span,
}

/// A file written inline with a heredoc (`COPY <<EOF /dest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineFile {
    /// The heredoc name, used as the file name.
    pub name: String,
    pub content: String,
    /// Variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
}

/// `COPY [flags] SRC... DEST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    pub sources: Vec<String>,
    pub inline: Vec<InlineFile>,
    pub dest: String,
    /// `--from=`: a stage name, a stage index or an image.
    pub from: Option<String>,
    pub from_span: Option<Span>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub span: Span,
}

/// `ADD [flags] SRC... DEST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Add {
    pub sources: Vec<String>,
    pub inline: Vec<InlineFile>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// `--keep-git-dir`: `None` when not given (a git URL's `keep-git-dir=` may then decide).
    pub keep_git_dir: Option<bool>,
    pub checksum: Option<String>,
    /// `--unpack`: `None` when not given (BuildKit then decides by source).
    pub unpack: Option<bool>,
    pub exclude: Vec<String>,
    pub span: Span,
}

/// `WORKDIR path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workdir {
    pub path: String,
    pub span: Span,
}

/// `USER user[:group]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub user: String,
    pub span: Span,
}

/// `VOLUME path...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub paths: Vec<String>,
    pub span: Span,
}

/// `STOPSIGNAL signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StopSignal {
    pub signal: String,
    pub span: Span,
}

/// The check of a HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    Check {
        command: Command,
        /// Durations in nanoseconds; 0 when not given (inherit).
        interval: i64,
        timeout: i64,
        start_period: i64,
        start_interval: i64,
        retries: u32,
    },
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    pub health: Health,
    pub span: Span,
}

/// `ONBUILD INSTRUCTION`: a trigger for builds that use this image as their base. Like BuildKit,
/// only the trigger's keyword is checked here; the build that runs the trigger parses the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Onbuild {
    /// The trigger as BuildKit stores it in the image config: the text after `ONBUILD`, then
    /// for each heredoc a newline, its body and its name.
    pub expression: String,
    pub span: Span,
}

/// `MAINTAINER name` (deprecated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Maintainer {
    pub name: String,
    pub span: Span,
}

/// An instruction that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstructionError {
    #[error("unknown instruction \"{keyword}\"")]
    UnknownInstruction {
        keyword: String,
        suggestion: Option<&'static str>,
        span: Span,
    },
    #[error("unknown flag --{flag} for {instruction}")]
    UnknownFlag {
        instruction: &'static str,
        flag: String,
        allowed: Vec<&'static str>,
        span: Span,
    },
    #[error("flag --{flag} is given twice to {instruction}")]
    DuplicateFlag {
        instruction: &'static str,
        flag: String,
        span: Span,
    },
    #[error("flag --{flag} of {instruction} {problem}")]
    BadFlag {
        instruction: &'static str,
        flag: String,
        problem: String,
        help: String,
        span: Span,
    },
    #[error("{instruction} {problem}")]
    BadArguments {
        instruction: &'static str,
        problem: String,
        help: String,
        span: Span,
    },
    #[error("invalid --mount: {problem}")]
    BadMount {
        problem: String,
        help: String,
        span: Span,
    },
}

impl Located for InstructionError {
    fn span(&self) -> Option<Span> {
        Some(match self {
            InstructionError::UnknownInstruction { span, .. }
            | InstructionError::UnknownFlag { span, .. }
            | InstructionError::DuplicateFlag { span, .. }
            | InstructionError::BadFlag { span, .. }
            | InstructionError::BadArguments { span, .. }
            | InstructionError::BadMount { span, .. } => *span,
        })
    }

    fn help(&self) -> Option<String> {
        match self {
            InstructionError::UnknownInstruction { suggestion, .. } => Some(match suggestion {
                Some(s) => format!("did you mean {s}?"),
                None => format!("instructions are {}", INSTRUCTIONS.join(", ")),
            }),
            InstructionError::UnknownFlag {
                instruction,
                flag,
                allowed,
                ..
            } => Some(if allowed.is_empty() {
                format!("{instruction} takes no flags")
            } else {
                match closest(flag, allowed.iter().copied()) {
                    Some(s) => format!("did you mean --{s}?"),
                    None => {
                        let list: Vec<String> = allowed.iter().map(|f| format!("--{f}")).collect();
                        format!("{instruction} accepts {}", list.join(", "))
                    }
                }
            }),
            InstructionError::DuplicateFlag { flag, .. } => {
                Some(format!("give --{flag} only once"))
            }
            InstructionError::BadFlag { help, .. }
            | InstructionError::BadArguments { help, .. }
            | InstructionError::BadMount { help, .. } => Some(help.clone()),
        }
    }
}

/// Converts every node of a parsed Dockerfile, stopping at the first error.
pub fn parse_all(df: &Dockerfile) -> Result<Vec<Instruction>, InstructionError> {
    df.nodes.iter().map(Instruction::from_node).collect()
}

impl Instruction {
    /// The instruction's span (keyword to the end of its last line).
    pub fn span(&self) -> Span {
        match self {
            Instruction::From(i) => i.span,
            Instruction::Run(i) => i.span,
            Instruction::Cmd(i) => i.span,
            Instruction::Entrypoint(i) => i.span,
            Instruction::Shell(i) => i.span,
            Instruction::Env(i) => i.span,
            Instruction::Label(i) => i.span,
            Instruction::Arg(i) => i.span,
            Instruction::Expose(i) => i.span,
            Instruction::Copy(i) => i.span,
            Instruction::Add(i) => i.span,
            Instruction::Workdir(i) => i.span,
            Instruction::User(i) => i.span,
            Instruction::Volume(i) => i.span,
            Instruction::StopSignal(i) => i.span,
            Instruction::Healthcheck(i) => i.span,
            Instruction::Onbuild(i) => i.span,
            Instruction::Maintainer(i) => i.span,
        }
    }

    /// The keyword in upper case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Env(_) => "ENV",
            Instruction::Label(_) => "LABEL",
            Instruction::Arg(_) => "ARG",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::User(_) => "USER",
            Instruction::Volume(_) => "VOLUME",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }

    /// Gives a syntax-tree node its meaning.
    pub fn from_node(node: &Node) -> Result<Instruction, InstructionError> {
        let upper = node.keyword.to_ascii_uppercase();
        let Some(&keyword) = INSTRUCTIONS.iter().find(|k| **k == upper) else {
            return Err(InstructionError::UnknownInstruction {
                keyword: node.keyword.clone(),
                suggestion: closest(&upper, INSTRUCTIONS.iter().copied()),
                span: keyword_span(node),
            });
        };
        let p = Ctx { node, keyword };
        Ok(match keyword {
            "FROM" => Instruction::From(p.from()?),
            "RUN" => Instruction::Run(p.run()?),
            "CMD" => {
                p.no_flags()?;
                Instruction::Cmd(Cmd {
                    command: Command::from_node(node),
                    span: node.span,
                })
            }
            "ENTRYPOINT" => {
                p.no_flags()?;
                Instruction::Entrypoint(Entrypoint {
                    command: Command::from_node(node),
                    span: node.span,
                })
            }
            "SHELL" => Instruction::Shell(p.shell()?),
            "ENV" => Instruction::Env(Env {
                pairs: p.pairs()?,
                span: node.span,
            }),
            "LABEL" => Instruction::Label(Label {
                pairs: p.pairs()?,
                span: node.span,
            }),
            "ARG" => Instruction::Arg(p.arg()?),
            "EXPOSE" => {
                p.no_flags()?;
                p.at_least_one()?;
                Instruction::Expose(Expose {
                    ports: node.args.clone(),
                    span: node.span,
                })
            }
            "COPY" => Instruction::Copy(p.copy()?),
            "ADD" => Instruction::Add(p.add()?),
            "WORKDIR" => Instruction::Workdir(Workdir {
                path: p.exactly_one()?,
                span: node.span,
            }),
            "USER" => Instruction::User(User {
                user: p.exactly_one()?,
                span: node.span,
            }),
            "VOLUME" => Instruction::Volume(p.volume()?),
            "STOPSIGNAL" => Instruction::StopSignal(StopSignal {
                signal: p.exactly_one()?,
                span: node.span,
            }),
            "HEALTHCHECK" => Instruction::Healthcheck(p.healthcheck()?),
            "ONBUILD" => Instruction::Onbuild(p.onbuild()?),
            _ => Instruction::Maintainer(Maintainer {
                name: p.exactly_one()?,
                span: node.span,
            }),
        })
    }
}

/// The node being converted and its upper-case keyword.
struct Ctx<'a> {
    node: &'a Node,
    keyword: &'static str,
}

impl Ctx<'_> {
    fn bad_args(&self, problem: impl Into<String>, help: impl Into<String>) -> InstructionError {
        InstructionError::BadArguments {
            instruction: self.keyword,
            problem: problem.into(),
            help: help.into(),
            span: self.node.span,
        }
    }

    fn bad_flag(
        &self,
        flag: &str,
        problem: impl Into<String>,
        help: impl Into<String>,
        span: Span,
    ) -> InstructionError {
        InstructionError::BadFlag {
            instruction: self.keyword,
            flag: flag.to_string(),
            problem: problem.into(),
            help: help.into(),
            span,
        }
    }

    fn unsupported_value(
        &self,
        flag: &str,
        value: &str,
        allowed: &str,
        span: Span,
    ) -> InstructionError {
        self.bad_flag(
            flag,
            format!("has an unsupported value \"{value}\""),
            format!("use {allowed}"),
            span,
        )
    }

    fn flags(&self, spec: &[(&'static str, FlagKind)]) -> Result<Flags, InstructionError> {
        Flags::parse(self.node, self.keyword, spec)
    }

    fn no_flags(&self) -> Result<(), InstructionError> {
        self.flags(&[]).map(|_| ())
    }

    fn at_least_one(&self) -> Result<(), InstructionError> {
        if self.node.args.is_empty() {
            return Err(self.bad_args(
                "requires at least one argument",
                format!("write {} followed by its arguments", self.keyword),
            ));
        }
        Ok(())
    }

    fn exactly_one(&self) -> Result<String, InstructionError> {
        self.no_flags()?;
        match self.node.args.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(self.bad_args(
                "requires exactly one argument",
                format!("write {} with a single argument", self.keyword),
            )),
        }
    }

    fn from(&self) -> Result<From, InstructionError> {
        let node = self.node;
        let (image, name) = match node.args.as_slice() {
            [image] => (image, None),
            [image, as_word, name] if as_word.eq_ignore_ascii_case("as") => (image, Some(name)),
            _ => {
                return Err(self.bad_args(
                    "requires either one or three arguments",
                    "write FROM IMAGE or FROM IMAGE AS NAME",
                ));
            }
        };
        let flags = self.flags(&[("platform", FlagKind::String)])?;
        let name_span = name.map(|n| word_span(node, n, true));
        let as_name = match name {
            Some(n) => {
                let lower = n.to_lowercase();
                if !valid_stage_name(&lower) {
                    return Err(InstructionError::BadArguments {
                        instruction: "FROM",
                        problem: format!("has an invalid stage name \"{n}\""),
                        help: "a stage name starts with a letter and has only letters, digits, \
                               '-', '_' and '.'"
                            .into(),
                        span: name_span.unwrap_or(node.span),
                    });
                }
                Some(lower)
            }
            None => None,
        };
        Ok(From {
            image: image.clone(),
            platform: flags.string("platform"),
            as_name,
            image_span: word_span(node, image, false),
            name_span,
            span: node.span,
        })
    }

    fn run(&self) -> Result<Run, InstructionError> {
        let flags = self.flags(&[
            ("mount", FlagKind::Strings),
            ("network", FlagKind::String),
            ("security", FlagKind::String),
        ])?;
        let mut mounts = Vec::new();
        for m in flags.all("mount") {
            mounts.push(Mount::parse(&m.value, m.span, None)?);
        }
        let network = match flags.given("network") {
            None => None,
            Some(v) => Some(
                Network::ALL
                    .into_iter()
                    .find(|n| n.as_str() == v.value)
                    .ok_or_else(|| {
                        self.unsupported_value("network", &v.value, "default, none or host", v.span)
                    })?,
            ),
        };
        let security = match flags.given("security") {
            None => None,
            Some(v) => Some(
                Security::ALL
                    .into_iter()
                    .find(|s| s.as_str() == v.value)
                    .ok_or_else(|| {
                        self.unsupported_value("security", &v.value, "sandbox or insecure", v.span)
                    })?,
            ),
        };
        let command = Command::from_node(self.node);
        if command.is_empty() && self.node.heredocs.is_empty() {
            return Err(self.bad_args(
                "requires a command",
                "write RUN followed by a shell command or a JSON array",
            ));
        }
        Ok(Run {
            command,
            heredocs: self.node.heredocs.clone(),
            mounts,
            network,
            security,
            span: self.node.span,
        })
    }

    fn shell(&self) -> Result<Shell, InstructionError> {
        self.no_flags()?;
        if !self.node.json {
            return Err(self.bad_args(
                "requires the JSON form",
                "write SHELL [\"executable\", \"parameters\"]",
            ));
        }
        if self.node.args.is_empty() {
            return Err(self.bad_args(
                "requires at least one argument",
                "write SHELL [\"/bin/sh\", \"-c\"]",
            ));
        }
        Ok(Shell {
            shell: self.node.args.clone(),
            span: self.node.span,
        })
    }

    /// ENV/LABEL: the parser gives `name, value, separator` triples.
    fn pairs(&self) -> Result<Vec<KeyValue>, InstructionError> {
        self.no_flags()?;
        self.at_least_one()?;
        let chunks = self.node.args.chunks(3);
        let mut pairs = Vec::new();
        for chunk in chunks {
            let [key, value, _sep] = chunk else {
                return Err(self.bad_args(
                    "has a name without a value",
                    format!("write {} name=value", self.keyword),
                ));
            };
            if key.is_empty() {
                return Err(self.bad_args(
                    "names can not be blank",
                    format!("write {} name=value", self.keyword),
                ));
            }
            pairs.push(KeyValue {
                key: key.clone(),
                value: value.clone(),
            });
        }
        Ok(pairs)
    }

    fn arg(&self) -> Result<Arg, InstructionError> {
        self.no_flags()?;
        self.at_least_one()?;
        let mut args = Vec::new();
        for word in &self.node.args {
            let (name, default) = match word.split_once('=') {
                Some((n, d)) => (n, Some(d.to_string())),
                None => (word.as_str(), None),
            };
            if name.is_empty() {
                return Err(InstructionError::BadArguments {
                    instruction: "ARG",
                    problem: "names can not be blank".into(),
                    help: "write ARG NAME or ARG NAME=default".into(),
                    span: word_span(self.node, word, false),
                });
            }
            args.push(ArgDecl {
                name: name.to_string(),
                default,
            });
        }
        Ok(Arg {
            args,
            span: self.node.span,
        })
    }

    /// The sources, inline files and destination of COPY/ADD.
    fn sources_and_dest(&self) -> Result<(Vec<String>, Vec<InlineFile>, String), InstructionError> {
        let Some((dest, sources)) = self.node.args.split_last().filter(|(_, s)| !s.is_empty())
        else {
            return Err(self.bad_args(
                "requires at least two arguments, but only one was provided: destination could \
                 not be determined",
                format!("write {} SOURCE... DESTINATION", self.keyword),
            ));
        };
        if matches!(words::marker(dest), Ok(Some(_))) {
            return Err(self.bad_args(
                "cannot accept a heredoc as a destination",
                "put the heredoc before the destination path",
            ));
        }
        let mut paths = Vec::new();
        let mut inline = Vec::new();
        for src in sources {
            // BuildKit's MustParseHeredoc: a word that does not read as a marker is a path.
            match words::marker(src).ok().flatten() {
                Some(marker) => inline.push(InlineFile {
                    // BuildKit looks the body up by name in a map, so the last one wins.
                    content: self
                        .node
                        .heredocs
                        .iter()
                        .rfind(|h| h.name == marker.name)
                        .map(|h| h.content.clone())
                        .unwrap_or_default(),
                    name: marker.name,
                    expand: marker.expand,
                }),
                None => paths.push(src.clone()),
            }
        }
        Ok((paths, inline, dest.clone()))
    }

    fn copy(&self) -> Result<Copy, InstructionError> {
        let (sources, inline, dest) = self.sources_and_dest()?;
        let flags = self.flags(&[
            ("chown", FlagKind::String),
            ("from", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
            ("parents", FlagKind::Bool),
        ])?;
        let from = flags.get("from");
        Ok(Copy {
            sources,
            inline,
            dest,
            from: from.map(|f| f.value.clone()),
            from_span: from.map(|f| f.span),
            chown: flags.string("chown"),
            chmod: flags.string("chmod"),
            link: flags.bool("link"),
            parents: flags.bool("parents"),
            exclude: flags.all("exclude").map(|v| v.value.clone()).collect(),
            span: self.node.span,
        })
    }

    fn add(&self) -> Result<Add, InstructionError> {
        let (sources, inline, dest) = self.sources_and_dest()?;
        let flags = self.flags(&[
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("keep-git-dir", FlagKind::Bool),
            ("checksum", FlagKind::String),
            ("unpack", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
        ])?;
        Ok(Add {
            sources,
            inline,
            dest,
            chown: flags.string("chown"),
            chmod: flags.string("chmod"),
            link: flags.bool("link"),
            keep_git_dir: flags.get("keep-git-dir").map(|v| v.value == "true"),
            checksum: flags.string("checksum"),
            unpack: flags.get("unpack").map(|v| v.value == "true"),
            exclude: flags.all("exclude").map(|v| v.value.clone()).collect(),
            span: self.node.span,
        })
    }

    fn volume(&self) -> Result<Volume, InstructionError> {
        self.no_flags()?;
        self.at_least_one()?;
        let mut paths = Vec::new();
        for v in &self.node.args {
            let v = v.trim();
            if v.is_empty() {
                return Err(empty_volume(self.node.span));
            }
            paths.push(v.to_string());
        }
        Ok(Volume {
            paths,
            span: self.node.span,
        })
    }

    fn healthcheck(&self) -> Result<Healthcheck, InstructionError> {
        let node = self.node;
        let Some((kind, rest)) = node.args.split_first() else {
            return Err(self.bad_args(
                "requires at least one argument",
                "write HEALTHCHECK NONE or HEALTHCHECK CMD command",
            ));
        };
        let kind = kind.to_ascii_uppercase();
        if kind == "NONE" {
            // BuildKit does not look at the flags of HEALTHCHECK NONE.
            if !rest.is_empty() {
                return Err(self.bad_args(
                    "NONE takes no arguments",
                    "write HEALTHCHECK NONE on its own",
                ));
            }
            return Ok(Healthcheck {
                health: Health::None,
                span: node.span,
            });
        }
        let flags = self.flags(&[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ])?;
        if kind != "CMD" {
            return Err(self.bad_args(
                format!("has an unknown type \"{kind}\""),
                "write HEALTHCHECK CMD command or HEALTHCHECK NONE",
            ));
        }
        let command = Command::from_args(node.json, rest);
        if command.is_empty() {
            return Err(self.bad_args(
                "is missing a command after CMD",
                "write HEALTHCHECK CMD command",
            ));
        }
        let duration = |name: &str| -> Result<i64, InstructionError> {
            let Some(v) = flags.get(name) else {
                return Ok(0);
            };
            let nanos = duration::parse_go_duration(&v.value).map_err(|problem| {
                self.bad_flag(
                    name,
                    format!("is not a duration: {problem}"),
                    "write a duration such as 30s, 1m30s or 500ms",
                    v.span,
                )
            })?;
            if nanos != 0 && nanos < 1_000_000 {
                return Err(self.bad_flag(
                    name,
                    "cannot be less than 1ms",
                    "write 0 to inherit the base image's value, or at least 1ms",
                    v.span,
                ));
            }
            i64::try_from(nanos)
                .map_err(|_| self.bad_flag(name, "is too long", "write a shorter duration", v.span))
        };
        let retries = match flags.get("retries") {
            None => 0,
            Some(v) => {
                let n: i32 = v.value.parse().map_err(|_| {
                    self.bad_flag(
                        "retries",
                        format!("is not a number: \"{}\"", v.value),
                        "write a whole number, e.g. --retries=3",
                        v.span,
                    )
                })?;
                u32::try_from(n).map_err(|_| {
                    self.bad_flag(
                        "retries",
                        format!("cannot be negative ({n})"),
                        "write 0 or more",
                        v.span,
                    )
                })?
            }
        };
        Ok(Healthcheck {
            health: Health::Check {
                command,
                interval: duration("interval")?,
                timeout: duration("timeout")?,
                start_period: duration("start-period")?,
                start_interval: duration("start-interval")?,
                retries,
            },
            span: node.span,
        })
    }

    fn onbuild(&self) -> Result<Onbuild, InstructionError> {
        self.no_flags()?;
        let Some(inner) = self.node.onbuild.as_deref() else {
            return Err(self.bad_args(
                "requires at least one argument",
                "write ONBUILD followed by an instruction",
            ));
        };
        let trigger = inner.keyword.to_ascii_uppercase();
        let problem = match trigger.as_str() {
            "ONBUILD" => Some("cannot chain ONBUILD ONBUILD".to_string()),
            "FROM" | "MAINTAINER" => Some(format!("cannot use {trigger} as a trigger")),
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(InstructionError::BadArguments {
                instruction: "ONBUILD",
                problem,
                help: "ONBUILD takes any instruction except ONBUILD, FROM and MAINTAINER".into(),
                span: word_span(self.node, &inner.keyword, false),
            });
        }
        // BuildKit strips `(?i)^\s*ONBUILD\s*` (Go's `\s`) from the line.
        let go_space = [' ', '\t', '\n', '\x0c', '\r'];
        let mut expression = self
            .node
            .original
            .trim_start_matches(go_space)
            .get(self.node.keyword.len()..)
            .unwrap_or_default()
            .trim_start_matches(go_space)
            .to_string();
        for doc in &self.node.heredocs {
            expression.push('\n');
            expression.push_str(&doc.content);
            expression.push_str(&doc.name);
        }
        Ok(Onbuild {
            expression,
            span: self.node.span,
        })
    }
}

/// A VOLUME path that is empty as written or after expansion (BuildKit's message).
pub(crate) fn empty_volume(span: Span) -> InstructionError {
    InstructionError::BadArguments {
        instruction: "VOLUME",
        problem: "specified can not be an empty string".into(),
        help: "remove the empty path, or give the variable in it a value".into(),
        span,
    }
}

/// BuildKit's stage-name rule: `^[a-z][a-z0-9-_.]*$` (after lower-casing).
pub fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// The span of the keyword.
pub(crate) fn keyword_span(node: &Node) -> Span {
    Span::on_line(
        node.span.start.line,
        node.span.start.column,
        node.keyword.chars().count(),
    )
}

/// The byte offset of `word` in the node's text: its first occurrence after the keyword, or its
/// last one when `last` (the stage name of `FROM x AS x`).
pub(crate) fn word_offset(node: &Node, word: &str, last: bool) -> Option<usize> {
    if word.is_empty() {
        return None;
    }
    if last {
        return node.original.rfind(word);
    }
    let skip = node.keyword.len().min(node.original.len());
    node.original
        .get(skip..)
        .and_then(|rest| rest.find(word))
        .map(|off| off + skip)
}

/// The span of `word` in the node's text (see [`word_offset`]), or the keyword's when the word
/// is not written there literally.
pub(crate) fn word_span(node: &Node, word: &str, last: bool) -> Span {
    match word_offset(node, word, last) {
        Some(off) => node.span_of(off, word.len()),
        None => keyword_span(node),
    }
}

/// The candidate closest to `word` (case-insensitive, optimal string alignment distance), when
/// it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions (`FORM`→`FROM`
/// is one edit).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        if let Some(first) = row.first_mut() {
            *first = i;
        }
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let cases = [
            ("FORM", Some("FROM")),
            ("RUNN", Some("RUN")),
            ("CPY", Some("COPY")),
            ("ENTRYPONT", Some("ENTRYPOINT")),
            ("XYZZY", None),
        ];
        for (word, want) in cases {
            assert_eq!(closest(word, INSTRUCTIONS.iter().copied()), want, "{word}");
        }
    }

    #[test]
    fn stage_names() {
        for ok in ["a", "build-1", "x_y.z"] {
            assert!(valid_stage_name(ok), "{ok}");
        }
        for bad in ["", "1abc", "-x", "a$b", "a b", "é"] {
            assert!(!valid_stage_name(bad), "{bad}");
        }
    }
}
