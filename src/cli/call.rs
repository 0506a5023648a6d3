//! `kiln build --call` and `--check`: how the build evaluates the Dockerfile (buildx's call
//! functions, `util/buildflags/callfunc.go`), and the answers as buildx prints them
//! (`commands/build.go` `printResult`): `check`'s findings ([`kiln::frontend::lint`]),
//! `outline` (the build args, secrets and ssh a target uses) and `targets` (the stages) from
//! [`kiln::frontend::outline`], as BuildKit's text or, with `format=json`, its JSON.

use super::report::ExitQuietly;
use super::{located, unlocated};
use kiln::frontend::diagnostic::Located as _;
use kiln::frontend::diagnostic::render_as;
use kiln::frontend::lint::{Finding, LintOutcome, json};
use kiln::frontend::outline::{OutlineError, OutlineOptions, go_json, outline, targets};
use kiln::oci::Platform;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

/// What `--call` runs. Each method is one variant, so new ones slot in beside these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMethod {
    /// Build the image (the default).
    Build,
    /// Run the build checks without building (buildx's `check`, alias `lint`).
    Check,
    /// The build args, secrets and ssh sockets the target uses (BuildKit's outline subrequest).
    Outline,
    /// The Dockerfile's stages (BuildKit's targets subrequest).
    Targets,
}

impl CallMethod {
    /// The method answers from the Dockerfile alone: it reads no context and no store.
    pub fn answers_from_dockerfile_alone(self) -> bool {
        matches!(self, CallMethod::Outline | CallMethod::Targets)
    }
}

/// How a method's result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallFormat {
    #[default]
    Text,
    Json,
}

/// A parsed `--call` value: `METHOD[,format=json|text][,ignorestatus=true|false]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallFunc {
    pub method: CallMethod,
    pub format: CallFormat,
    /// Exit 0 even when the checks found something (they still print).
    pub ignore_status: bool,
}

impl Default for CallFunc {
    fn default() -> Self {
        CallFunc {
            method: CallMethod::Build,
            format: CallFormat::Text,
            ignore_status: false,
        }
    }
}

/// A `--call` value kiln cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("invalid --call method {0:?}: expected build, check, outline or targets")]
    Method(String),
    #[error("invalid --call value {0:?}: it names more than one method")]
    TwoMethods(String),
    #[error("invalid --call format {0:?}: expected json or text")]
    Format(String),
    #[error("invalid --call ignorestatus value {0:?}: expected true or false")]
    IgnoreStatus(String),
    #[error("invalid --call field {0:?}: expected format= or ignorestatus=")]
    Field(String),
}

impl FromStr for CallFunc {
    type Err = CallError;

    fn from_str(value: &str) -> Result<CallFunc, CallError> {
        let mut call = CallFunc::default();
        let mut method: Option<&str> = None;
        for field in value.split(',') {
            match field.split_once('=') {
                Some(("format", format)) => {
                    call.format = match format {
                        "json" => CallFormat::Json,
                        "text" | "" => CallFormat::Text,
                        other => return Err(CallError::Format(other.to_string())),
                    };
                }
                Some(("ignorestatus", status)) => {
                    call.ignore_status = match status {
                        "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
                        "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
                        other => return Err(CallError::IgnoreStatus(other.to_string())),
                    };
                }
                Some(_) => return Err(CallError::Field(field.to_string())),
                None if method.is_some() => return Err(CallError::TwoMethods(value.to_string())),
                None => method = Some(field),
            }
        }
        call.method = match method.unwrap_or("build") {
            "build" => CallMethod::Build,
            // buildx turns `check` into its older name `lint`; both mean the checks.
            "check" | "lint" => CallMethod::Check,
            "outline" => CallMethod::Outline,
            "targets" => CallMethod::Targets,
            other => return Err(CallError::Method(other.to_string())),
        };
        Ok(call)
    }
}

/// Prints what `--check` found to stdout as buildx does (text: a count, then each finding
/// with its place; json: BuildKit's `LintResults`) and returns the outcome: an error that
/// stopped the checks is the command's error (printed at its line); findings make the command
/// fail quietly (exit 1) unless `ignorestatus=true`.
pub fn print_check(
    call: &CallFunc,
    checked: &LintOutcome,
    file: &str,
    source: &[u8],
) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(source);
    let findings = &checked.report.findings;
    let mut out = String::new();
    match call.format {
        CallFormat::Json => {
            let error = checked.error.as_ref().map(|e| json::CheckError {
                message: e.message(),
                lines: e.span.map(|s| (s.start.line, s.end.line)),
            });
            // BuildKit names the source by the file's base name (buildx sends the Dockerfile's
            // directory and its name; one from stdin is `Dockerfile`).
            let name = match file {
                "<stdin>" => "Dockerfile",
                file => std::path::Path::new(file)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(file),
            };
            super::term::write_json(&json::render(&checked.report, name, source, error.as_ref()))?;
        }
        CallFormat::Text => {
            match findings.len() {
                0 => {}
                1 => out.push_str("Check complete, 1 warning has been found!\n"),
                n => {
                    let _ = writeln!(out, "Check complete, {n} warnings have been found!");
                }
            }
            // buildx sorts by line (a stable sort keeps BuildKit's order within a line).
            let mut sorted: Vec<&Finding> = findings.iter().collect();
            sorted.sort_by_key(|f| f.span.start.line);
            for finding in sorted {
                out.push('\n');
                out.push_str(&render_finding(finding, file, &text));
            }
            if checked.error.is_none() && findings.is_empty() {
                out.push_str("Check complete, no warnings found.\n");
            }
        }
    }
    super::term::write_stdout(&out)?;
    if let Some(failure) = &checked.error {
        if call.format == CallFormat::Text && !findings.is_empty() {
            super::term::write_stdout("\n")?;
        }
        let message = failure.message();
        let rendered = match failure.span {
            Some(span) => kiln::frontend::diagnostic::render(
                file,
                &text,
                span,
                &message,
                failure.help.as_deref(),
            ),
            None => {
                let mut shown = format!("error: {file}: {message}\n");
                if let Some(help) = &failure.help {
                    let _ = writeln!(shown, "  = help: {help}");
                }
                shown
            }
        };
        return Err(anyhow::Error::new(super::report::SourceError::new(
            rendered,
        )));
    }
    if !findings.is_empty() && !call.ignore_status {
        return Err(anyhow::Error::new(ExitQuietly));
    }
    Ok(())
}

/// One finding as kiln shows front-end problems: `warning: Rule: message`, the place with a
/// caret under the instruction, and the rule's documentation.
pub fn render_finding(finding: &Finding, file: &str, text: &str) -> String {
    let message = format!("{}: {}", finding.rule.name, finding.message);
    let help = (!finding.rule.url.is_empty()).then_some(finding.rule.url);
    render_as("warning", file, text, finding.span, &message, help)
}

/// What the build needs to answer an outline or targets call.
pub struct CallInput<'a> {
    pub dockerfile: &'a [u8],
    /// The Dockerfile's name as errors show it.
    pub name: &'a str,
    pub target: Option<&'a str>,
    pub build_args: &'a BTreeMap<String, String>,
    /// `--platform` (the first one): the target platform of the `TARGET*` args.
    pub platform: Option<&'a Platform>,
}

/// Prints the answer to an `outline` or `targets` call.
pub fn answer(call: &CallFunc, input: &CallInput<'_>) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(input.dockerfile).into_owned();
    let df = kiln::frontend::parse(input.dockerfile).map_err(|e| located(input.name, &text, &e))?;
    let failed = |err: OutlineError| match err.span() {
        Some(_) => located(input.name, &text, &err),
        None => unlocated(&err),
    };
    let printed = match call.method {
        CallMethod::Outline => {
            let host = Platform::host();
            let opts = OutlineOptions {
                target: input.target.map(str::to_string),
                build_args: input.build_args.clone(),
                target_platform: input.platform.cloned().unwrap_or_else(|| host.clone()),
                build_platform: host,
            };
            let o = outline(&df, input.dockerfile, &opts).map_err(failed)?;
            if call.format == CallFormat::Json {
                format!("{}\n", go_json(&o)?)
            } else {
                o.to_text()
            }
        }
        CallMethod::Targets => {
            let t = targets(&df, input.dockerfile).map_err(failed)?;
            if call.format == CallFormat::Json {
                format!("{}\n", go_json(&t)?)
            } else {
                t.to_text()
            }
        }
        CallMethod::Build | CallMethod::Check => {
            anyhow::bail!(
                "--call {:?} is not answered from the Dockerfile alone",
                call.method
            )
        }
    };
    if call.format == CallFormat::Json {
        super::term::write_json(&printed)?;
    } else {
        super::term::write_stdout(&printed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_values_parse_as_buildx_reads_them() {
        let parse = |v: &str| v.parse::<CallFunc>();
        assert_eq!(parse("build"), Ok(CallFunc::default()));
        let check = CallFunc {
            method: CallMethod::Check,
            ..CallFunc::default()
        };
        assert_eq!(parse("check"), Ok(check));
        assert_eq!(parse("lint"), Ok(check));
        assert_eq!(
            parse("check,format=json"),
            Ok(CallFunc {
                format: CallFormat::Json,
                ..check
            })
        );
        assert_eq!(
            parse("format=json,check,ignorestatus=true"),
            Ok(CallFunc {
                format: CallFormat::Json,
                ignore_status: true,
                ..check
            })
        );
        assert_eq!(
            parse("frobnicate"),
            Err(CallError::Method("frobnicate".into()))
        );
        assert_eq!(
            parse("check,build"),
            Err(CallError::TwoMethods("check,build".into()))
        );
        assert_eq!(
            parse("check,format=yaml"),
            Err(CallError::Format("yaml".into()))
        );
        assert_eq!(parse("check,x=1"), Err(CallError::Field("x=1".into())));
        assert_eq!(
            parse("check,ignorestatus=maybe"),
            Err(CallError::IgnoreStatus("maybe".into()))
        );
    }

    #[test]
    fn parses_buildx_call_values() {
        let call = |v: &str| v.parse::<CallFunc>();
        assert_eq!(call("outline").map(|c| c.method), Ok(CallMethod::Outline));
        assert_eq!(
            call("targets,format=json").map(|c| (c.method, c.format == CallFormat::Json)),
            Ok((CallMethod::Targets, true))
        );
        assert_eq!(call("check").map(|c| c.method), Ok(CallMethod::Check));
        assert_eq!(call("lint").map(|c| c.method), Ok(CallMethod::Check));
        assert_eq!(call("build").map(|c| c.method), Ok(CallMethod::Build));
        assert_eq!(
            call("check,ignorestatus=true").map(|c| c.ignore_status),
            Ok(true)
        );
        assert!(call("outline,targets").is_err());
        assert!(
            call("frobnicate")
                .unwrap_err()
                .to_string()
                .contains("frobnicate")
        );
        assert!(
            call("outline,format=yaml")
                .unwrap_err()
                .to_string()
                .contains("yaml")
        );
        assert!(
            call("outline,color=red")
                .unwrap_err()
                .to_string()
                .contains("color=red")
        );
    }
}
