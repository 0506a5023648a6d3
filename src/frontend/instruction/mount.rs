//! `RUN --mount=...` specs, checked with BuildKit's rules (`commands_runmount.go`).
//!
//! The spec is a CSV record of `key=value` fields. BuildKit expands the values with the stage's
//! variables when the instruction runs, so the typed layer validates only what it can see
//! ([`Mount::parse`] without an expander leaves values that contain `$` unchecked, and with them
//! every rule that involves several keys) and [`crate::frontend::stage`] parses again with the real
//! expander.

use super::InstructionError;
use crate::frontend::diagnostic::Span;
use crate::oci::csv::parse_go_bool;
use crate::oci::csv::split_record;
use serde::Serialize;

/// The kind of a build mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    const ALL: [(&'static str, MountType); 5] = [
        ("bind", MountType::Bind),
        ("cache", MountType::Cache),
        ("tmpfs", MountType::Tmpfs),
        ("secret", MountType::Secret),
        ("ssh", MountType::Ssh),
    ];

    /// The type as written in `type=`.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("bind", |(n, _)| n)
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

impl Sharing {
    /// The value as written in `sharing=`.
    pub fn name(self) -> &'static str {
        match self {
            Sharing::Shared => "shared",
            Sharing::Private => "private",
            Sharing::Locked => "locked",
        }
    }
}

/// One `--mount` of a RUN instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub kind: MountType,
    /// A stage name or image to mount from (`bind` and `cache`); never expanded.
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub readonly: bool,
    /// `id=`: the cache id, or the secret/ssh id.
    pub id: Option<String>,
    pub sharing: Option<Sharing>,
    /// A secret or ssh mount that must be provided.
    pub required: bool,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `size=` of a tmpfs mount, in bytes.
    pub size: Option<u64>,
    /// `env=`: expose a secret as this environment variable.
    pub env: Option<String>,
    /// The flag value as written, so the stage layer can parse it again with expansion.
    pub raw: String,
    /// The `--mount=...` flag.
    pub span: Span,
}

/// Expands one mount value; the error is the message to show.
pub type MountExpander<'a> = &'a mut dyn FnMut(&str) -> Result<String, String>;

const KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "id",
    "sharing",
    "required",
    "mode",
    "uid",
    "gid",
    "size",
    "env",
];

impl Mount {
    /// Parses a mount spec. With `expand`, every value except `from` is expanded first and all
    /// of it is validated. Without, values containing `$` are left unset and unchecked (only their
    /// key names are), and so are the rules that combine keys, since a deferred value may change
    /// their outcome (`type=$T,mode=0700` is valid when `T` is `cache`).
    pub fn parse(
        raw: &str,
        span: Span,
        mut expand: Option<MountExpander<'_>>,
    ) -> Result<Mount, InstructionError> {
        let err = |problem: String, help: &str| InstructionError::BadMount {
            problem,
            help: help.to_string(),
            span,
        };
        let fields = split_record(raw).map_err(|reason| {
            err(
                format!("{reason} in \"{raw}\""),
                "quote a value that contains a comma",
            )
        })?;
        let mut m = Mount {
            kind: MountType::Bind,
            from: None,
            source: None,
            target: None,
            readonly: false,
            id: None,
            sharing: None,
            required: false,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            env: None,
            raw: raw.to_string(),
            span,
        };
        let mut readonly_set = false;
        // Some value was left for expansion; `type` separately, as `required` depends on it.
        let mut deferred = false;
        let mut kind_deferred = false;
        for field in &fields {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
                None => (field.to_ascii_lowercase(), None),
            };
            let Some(value) = value else {
                match key.as_str() {
                    "readonly" | "ro" => m.readonly = true,
                    "readwrite" | "rw" => m.readonly = false,
                    "required"
                        if kind_deferred
                            || matches!(m.kind, MountType::Secret | MountType::Ssh) =>
                    {
                        m.required = true;
                    }
                    "required" => {
                        return Err(err(
                            format!("key \"required\" is not valid for type={}", m.kind.name()),
                            "only secret and ssh mounts can be required",
                        ));
                    }
                    _ => {
                        return Err(err(
                            format!("field \"{field}\" must be a key=value pair"),
                            "write key=value, e.g. target=/cache",
                        ));
                    }
                }
                readonly_set |= key != "required";
                continue;
            };
            if key == "from" {
                if value.contains('$') {
                    return Err(err(
                        "from= does not support variable expansion".into(),
                        "name the stage or image literally, or define an alias stage with FROM",
                    ));
                }
                m.from = Some(value.to_string());
                continue;
            }
            let value = match expand.as_mut() {
                Some(expand) => expand(value).map_err(|p| err(p, "fix the variable reference"))?,
                None if value.contains('$') => {
                    // Checked later, after expansion.
                    if !KEYS.contains(&key.as_str()) {
                        return Err(unknown_key(&key, field, span));
                    }
                    deferred = true;
                    kind_deferred |= key == "type";
                    continue;
                }
                None => value.to_string(),
            };
            match key.as_str() {
                "type" => {
                    let lower = value.to_ascii_lowercase();
                    m.kind = MountType::ALL
                        .iter()
                        .find(|(n, _)| *n == lower)
                        .map(|(_, t)| *t)
                        .ok_or_else(|| {
                            err(
                                format!("unsupported mount type \"{value}\""),
                                "use type=bind, cache, tmpfs, secret or ssh",
                            )
                        })?;
                }
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = Some(value),
                "readonly" | "ro" => {
                    m.readonly =
                        parse_go_bool(&value).ok_or_else(|| bad_bool(&key, &value, span))?;
                    readonly_set = true;
                }
                "readwrite" | "rw" => {
                    m.readonly =
                        !parse_go_bool(&value).ok_or_else(|| bad_bool(&key, &value, span))?;
                    readonly_set = true;
                }
                "required" => {
                    if !kind_deferred && !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        return Err(err(
                            format!("key \"required\" is not valid for type={}", m.kind.name()),
                            "only secret and ssh mounts can be required",
                        ));
                    }
                    m.required =
                        parse_go_bool(&value).ok_or_else(|| bad_bool(&key, &value, span))?;
                }
                "id" => m.id = Some(value),
                "sharing" => {
                    m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                        "shared" => Sharing::Shared,
                        "private" => Sharing::Private,
                        "locked" => Sharing::Locked,
                        _ => {
                            return Err(err(
                                format!("unsupported sharing value \"{value}\""),
                                "use sharing=shared, private or locked",
                            ));
                        }
                    });
                }
                "mode" => {
                    m.mode = Some(u32::from_str_radix(&value, 8).map_err(|_| {
                        err(
                            format!("invalid value \"{value}\" for mode"),
                            "write the mode in octal, e.g. mode=0600",
                        )
                    })?);
                }
                "uid" | "gid" => {
                    let id: u32 = value.parse().map_err(|_| {
                        err(
                            format!("invalid value \"{value}\" for {key}"),
                            "write a numeric id, e.g. uid=1000",
                        )
                    })?;
                    if key == "uid" {
                        m.uid = Some(id);
                    } else {
                        m.gid = Some(id);
                    }
                }
                "size" => {
                    m.size = Some(parse_size(&value).ok_or_else(|| {
                        err(
                            format!("invalid value \"{value}\" for size"),
                            "write a size in bytes or with a unit, e.g. size=64m",
                        )
                    })?);
                }
                "env" => m.env = Some(value),
                _ => return Err(unknown_key(&key, field, span)),
            }
        }
        if !deferred {
            m.check(readonly_set)?;
        }
        Ok(m)
    }

    /// The rules that involve several keys, applied once all fields are read.
    fn check(&mut self, readonly_set: bool) -> Result<(), InstructionError> {
        let err = |problem: String, help: &str| InstructionError::BadMount {
            problem,
            help: help.to_string(),
            span: self.span,
        };
        let file_info_allowed = matches!(
            self.kind,
            MountType::Secret | MountType::Ssh | MountType::Cache
        );
        for (key, set) in [
            ("mode", self.mode.is_some()),
            ("uid", self.uid.is_some()),
            ("gid", self.gid.is_some()),
        ] {
            if set && !file_info_allowed {
                return Err(err(
                    format!("{key} is not allowed for type={} mounts", self.kind.name()),
                    "mode, uid and gid apply to cache, secret and ssh mounts",
                ));
            }
        }
        if !readonly_set {
            self.readonly = !matches!(self.kind, MountType::Cache | MountType::Tmpfs);
        }
        if self.sharing.is_some() && self.kind != MountType::Cache {
            return Err(err(
                format!(
                    "sharing is not allowed for type={} mounts",
                    self.kind.name()
                ),
                "sharing applies to cache mounts only",
            ));
        }
        if self.size.is_some() && self.kind != MountType::Tmpfs {
            return Err(err(
                format!("size is not allowed for type={} mounts", self.kind.name()),
                "size applies to tmpfs mounts only",
            ));
        }
        if self.kind == MountType::Secret {
            if self.from.is_some() {
                return Err(err(
                    "a secret mount cannot have from=".into(),
                    "remove from=; secrets come from the build's --secret options",
                ));
            }
            if self.source.is_none()
                && self.target.is_none()
                && self.id.is_none()
                && self.env.is_none()
            {
                return Err(err(
                    "a secret mount needs id=, target= or env=".into(),
                    "name the secret, e.g. --mount=type=secret,id=token",
                ));
            }
            if self.source.is_some() && self.id.is_some() {
                return Err(err(
                    "a secret mount cannot have both source= and id=".into(),
                    "keep one of source= and id=",
                ));
            }
        }
        Ok(())
    }
}

fn unknown_key(key: &str, field: &str, span: Span) -> InstructionError {
    let suggestion = super::closest(key, KEYS.iter().copied());
    InstructionError::BadMount {
        problem: format!("unknown key \"{key}\" in \"{field}\""),
        help: match suggestion {
            Some(s) => format!("did you mean {s}?"),
            None => format!("known keys: {}", KEYS.join(", ")),
        },
        span,
    }
}

fn bad_bool(key: &str, value: &str, span: Span) -> InstructionError {
    InstructionError::BadMount {
        problem: format!("invalid value \"{value}\" for {key}"),
        help: format!("write {key}=true or {key}=false"),
        span,
    }
}

/// A byte size with an optional binary unit (`64m`, `1g`, `512k`, `100`), like Docker's
/// `RAMInBytes`.
fn parse_size(value: &str) -> Option<u64> {
    let lower = value.trim().to_ascii_lowercase();
    let trimmed = lower.strip_suffix('b').unwrap_or(&lower);
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    let n: f64 = number.parse().ok()?;
    let bytes = n * multiplier;
    (bytes.is_finite() && bytes >= 0.0 && bytes <= u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Mount, String> {
        Mount::parse(raw, Span::line(1), None).map_err(|e| e.to_string())
    }

    #[test]
    fn mount_specs() {
        let m =
            parse("type=cache,target=/root/.cache,sharing=locked,id=x,mode=0700,uid=1").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!(m.mode, Some(0o700));
        assert!(!m.readonly, "cache mounts are writable by default");

        let m = parse("target=/src,from=builder,source=/out").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.readonly, "bind mounts are read-only by default");
        assert_eq!(m.from.as_deref(), Some("builder"));

        let m = parse("type=bind,target=/x,rw").unwrap();
        assert!(!m.readonly);
        let m = parse("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.size, Some(64 * 1024 * 1024));
        let m = parse("type=secret,id=tok,required,env=TOKEN").unwrap();
        assert!(m.required);
        let m = parse("\"type=bind\",\"target=/a,b\"").unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
        // Left for expansion.
        let m = parse("type=cache,target=/c,uid=$UID").unwrap();
        assert_eq!(m.uid, None);
    }

    #[test]
    fn rules_that_combine_keys_wait_for_deferred_values() {
        // Each is valid once the variable is expanded (e.g. T=cache or T=secret).
        for raw in [
            "type=$T,target=/c,mode=0700",
            "type=$T,target=/c,sharing=locked",
            "type=$T,target=/c,size=1g",
            "type=$T,id=tok,required",
            "type=$T,id=tok,required=true",
            "type=secret,source=$S,id=tok",
            "type=secret,env=$E",
        ] {
            assert!(parse(raw).is_ok(), "{raw}: {:?}", parse(raw));
        }
        // A literal rule violation before any `$` is still reported.
        let got = parse("required,type=$T,id=tok").unwrap_err();
        assert!(
            got.contains("\"required\" is not valid for type=bind"),
            "{got}"
        );
    }

    #[test]
    fn invalid_mount_specs() {
        let cases = [
            ("type=nfs,target=/x", "unsupported mount type \"nfs\""),
            (
                "type=cache,target=/x,sharing=all",
                "unsupported sharing value \"all\"",
            ),
            (
                "type=bind,target=/x,mode=0600",
                "mode is not allowed for type=bind mounts",
            ),
            (
                "type=bind,target=/x,sharing=shared",
                "sharing is not allowed for type=bind",
            ),
            (
                "type=cache,target=/x,mode=9",
                "invalid value \"9\" for mode",
            ),
            (
                "type=cache,target=/x,uid=-1",
                "invalid value \"-1\" for uid",
            ),
            (
                "type=secret,from=x,id=a",
                "a secret mount cannot have from=",
            ),
            ("type=secret", "a secret mount needs id=, target= or env="),
            ("type=secret,source=a,id=b", "both source= and id="),
            (
                "target=/x,required",
                "key \"required\" is not valid for type=bind",
            ),
            ("target=/x,ro=maybe", "invalid value \"maybe\" for ro"),
            ("target=/x,tagret=/y", "unknown key \"tagret\""),
            ("target", "must be a key=value pair"),
            (
                "type=bind,from=$STAGE",
                "from= does not support variable expansion",
            ),
            ("\"type=bind", "a quote is not closed"),
            (
                "type=bind,target=/x,size=1g",
                "size is not allowed for type=bind",
            ),
        ];
        for (raw, want) in cases {
            let got = parse(raw).expect_err(raw);
            assert!(got.contains(want), "{raw}: {got}");
        }
    }
}
