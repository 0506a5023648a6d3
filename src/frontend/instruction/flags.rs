//! Instruction flags (`--name=value`) with BuildKit's `BFlags` rules: a flag must be declared by
//! the instruction, a boolean takes `--x`, `--x=true` or `--x=false`, a string needs `=`, only
//! multi-valued flags may repeat, and a bare `--` ends the flags.

use super::InstructionError;
use crate::frontend::ast::Node;
use crate::frontend::diagnostic::Span;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlagKind {
    Bool,
    String,
    /// May be given several times; every value is kept.
    Strings,
}

/// One value given on the command line, with the span of the whole `--flag=value` word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FlagValue {
    pub value: String,
    pub span: Span,
}

/// The flags of one instruction after checking them against what the instruction accepts.
#[derive(Debug, Default)]
pub(super) struct Flags {
    values: Vec<(&'static str, FlagValue)>,
}

impl Flags {
    /// Checks `node.flags` against `spec` (name and kind of every accepted flag).
    pub fn parse(
        node: &Node,
        instruction: &'static str,
        spec: &[(&'static str, FlagKind)],
    ) -> Result<Self, InstructionError> {
        let mut flags = Flags::default();
        for raw in &node.flags {
            let span = node.find_span(raw);
            let Some(body) = raw.strip_prefix("--") else {
                return Err(InstructionError::BadFlag {
                    instruction,
                    flag: raw.clone(),
                    problem: "does not start with --".into(),
                    help: "write flags as --name=value before the arguments".into(),
                    span,
                });
            };
            if body.is_empty() {
                break;
            }
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let Some(&(declared, kind)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err(InstructionError::UnknownFlag {
                    instruction,
                    flag: name.to_string(),
                    allowed: spec.iter().map(|(n, _)| *n).collect(),
                    span,
                });
            };
            if kind != FlagKind::Strings && flags.values.iter().any(|(n, _)| *n == declared) {
                return Err(InstructionError::DuplicateFlag {
                    instruction,
                    flag: declared.to_string(),
                    span,
                });
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true".to_string(),
                    "false" => "false".to_string(),
                    "" => return Err(missing_value(instruction, declared, span)),
                    _ => {
                        return Err(InstructionError::BadFlag {
                            instruction,
                            flag: declared.to_string(),
                            problem: format!("expects true or false, not \"{v}\""),
                            help: format!("write --{declared} or --{declared}=false"),
                            span,
                        });
                    }
                },
                (_, None) => return Err(missing_value(instruction, declared, span)),
                (_, Some(v)) => v.to_string(),
            };
            flags.values.push((declared, FlagValue { value, span }));
        }
        Ok(flags)
    }

    /// The value of a single-valued flag, if it was given with a value: BuildKit reads a flag's
    /// value against its empty default, so `--platform=` is the same as no `--platform`.
    pub fn get(&self, name: &str) -> Option<&FlagValue> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .filter(|v| !v.value.is_empty())
    }

    /// The value of a single-valued flag as given, even empty: for the flags whose BuildKit
    /// default is not empty (`RUN --network`, `--security`), where `--network=` is an invalid
    /// value rather than no flag.
    pub fn given(&self, name: &str) -> Option<&FlagValue> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The value of a single-valued flag as a string.
    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.value.clone())
    }

    /// A boolean flag: false unless given as `--name` or `--name=true`.
    pub fn bool(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v.value == "true")
    }

    /// Every value of a multi-valued flag, in order.
    pub fn all(&self, name: &str) -> impl Iterator<Item = &FlagValue> {
        self.values
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

fn missing_value(instruction: &'static str, flag: &str, span: Span) -> InstructionError {
    InstructionError::BadFlag {
        instruction,
        flag: flag.to_string(),
        problem: "is missing a value".into(),
        help: format!("write --{flag}=VALUE"),
        span,
    }
}
