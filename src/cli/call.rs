//! `kiln build --call NAME[,format=json]`: what the build is asked for instead of an image, as
//! buildx's `--call` (`util/buildflags/callfunc.go`, `commands/build.go` `printResult`):
//! `outline` (the build args, secrets and ssh a target uses) and `targets` (the stages), from
//! [`kiln::frontend::outline`], printed as BuildKit's text or, with `format=json`, its JSON.

use super::{located, unlocated};
use kiln::frontend::diagnostic::Located as _;
use kiln::frontend::outline::{OutlineError, OutlineOptions, go_json, outline, targets};
use kiln::oci::Platform;
use std::collections::BTreeMap;

/// The `--call` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub name: CallName,
    /// `format=json`: the subrequest's JSON instead of its text.
    pub json: bool,
    /// `ignorestatus=true`: a `check` that finds something still exits 0.
    pub ignore_status: bool,
}

/// What `--call` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallName {
    /// Build the image (the default).
    Build,
    /// The build checks (`lint`, of which `check` is buildx's alias).
    Check,
    Outline,
    Targets,
}

/// Parses `NAME[,format=json|text][,ignorestatus=BOOL]` the way buildx does: comma-separated
/// fields, one bare name, `check` standing for `lint`.
pub fn parse_call(value: &str) -> Result<Call, String> {
    let mut name = None;
    let mut call = Call {
        name: CallName::Build,
        json: false,
        ignore_status: false,
    };
    for field in value.split(',').map(str::trim) {
        match field.split_once('=') {
            Some(("format", format)) => {
                call.json = match format {
                    "json" => true,
                    "text" | "" => false,
                    other => return Err(format!("invalid format {other:?}: write json or text")),
                }
            }
            Some(("ignorestatus", v)) => {
                call.ignore_status = v
                    .parse()
                    .map_err(|_| format!("invalid ignorestatus value {v:?}: write true or false"))?
            }
            Some(_) => return Err(format!("invalid --call field {field:?}")),
            None if name.is_some() => {
                return Err(format!("invalid --call value {value:?}: one name only"));
            }
            None => name = Some(field),
        }
    }
    call.name = match name.unwrap_or("build") {
        "build" => CallName::Build,
        "check" | "lint" => CallName::Check,
        "outline" => CallName::Outline,
        "targets" => CallName::Targets,
        other => {
            return Err(format!(
                "unknown --call {other:?}: write build, check, outline or targets"
            ));
        }
    };
    Ok(call)
}

impl Call {
    /// The call answers from the Dockerfile alone, building nothing.
    pub fn reads_only(&self) -> bool {
        matches!(self.name, CallName::Outline | CallName::Targets)
    }
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
pub fn answer(call: &Call, input: &CallInput<'_>) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(input.dockerfile).into_owned();
    let df = kiln::frontend::parse(input.dockerfile).map_err(|e| located(input.name, &text, &e))?;
    let failed = |err: OutlineError| match err.span() {
        Some(_) => located(input.name, &text, &err),
        None => unlocated(&err),
    };
    let printed = match call.name {
        CallName::Outline => {
            let host = Platform::host();
            let opts = OutlineOptions {
                target: input.target.map(str::to_string),
                build_args: input.build_args.clone(),
                target_platform: input.platform.cloned().unwrap_or_else(|| host.clone()),
                build_platform: host,
            };
            let o = outline(&df, input.dockerfile, &opts).map_err(failed)?;
            if call.json {
                format!("{}\n", go_json(&o)?)
            } else {
                o.to_text()
            }
        }
        CallName::Targets => {
            let t = targets(&df, input.dockerfile).map_err(failed)?;
            if call.json {
                format!("{}\n", go_json(&t)?)
            } else {
                t.to_text()
            }
        }
        CallName::Build | CallName::Check => {
            anyhow::bail!(
                "--call {:?} is not answered from the Dockerfile alone",
                call.name
            )
        }
    };
    print!("{printed}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_call_values() {
        let call = |v: &str| parse_call(v);
        assert_eq!(call("outline").map(|c| c.name), Ok(CallName::Outline));
        assert_eq!(
            call("targets,format=json").map(|c| (c.name, c.json)),
            Ok((CallName::Targets, true))
        );
        assert_eq!(call("check").map(|c| c.name), Ok(CallName::Check));
        assert_eq!(call("lint").map(|c| c.name), Ok(CallName::Check));
        assert_eq!(call("build").map(|c| c.name), Ok(CallName::Build));
        assert_eq!(
            call("check,ignorestatus=true").map(|c| c.ignore_status),
            Ok(true)
        );
        assert!(call("outline,targets").is_err());
        assert!(call("frobnicate").unwrap_err().contains("frobnicate"));
        assert!(call("outline,format=yaml").unwrap_err().contains("yaml"));
        assert!(call("outline,color=red").unwrap_err().contains("color=red"));
    }
}
