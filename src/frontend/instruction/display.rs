//! Instructions printed back as one line of Dockerfile syntax, after expansion: what
//! `kiln build --dry-run` shows for each step (and, later, what image history records).
//! Heredoc bodies are not repeated; their markers stay in the command.

use super::{Command, Health, Instruction, KeyValue};
use std::fmt::{self, Display, Formatter, Write as _};

impl Display for Instruction {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())?;
        match self {
            Instruction::From(i) => {
                flag(f, "platform", i.platform.as_deref())?;
                write!(f, " {}", i.image)?;
                if let Some(name) = &i.as_name {
                    write!(f, " AS {name}")?;
                }
                Ok(())
            }
            Instruction::Run(i) => {
                for mount in &i.mounts {
                    write!(f, " --mount={}", mount.raw)?;
                }
                if let Some(network) = i.network {
                    write!(f, " --network={}", network.as_str())?;
                }
                if let Some(security) = i.security {
                    write!(f, " --security={}", security.as_str())?;
                }
                write!(f, " {}", CommandForm(&i.command))
            }
            Instruction::Cmd(i) => write!(f, " {}", CommandForm(&i.command)),
            Instruction::Entrypoint(i) => write!(f, " {}", CommandForm(&i.command)),
            Instruction::Shell(i) => write!(f, " {}", json_array(&i.shell)),
            Instruction::Env(i) => pairs(f, &i.pairs),
            Instruction::Label(i) => pairs(f, &i.pairs),
            Instruction::Arg(i) => {
                for arg in &i.args {
                    write!(f, " {}", arg.name)?;
                    if let Some(value) = &arg.default {
                        write!(f, "={}", quoted_if_needed(value))?;
                    }
                }
                Ok(())
            }
            Instruction::Expose(i) => words(f, &i.ports),
            Instruction::Copy(i) => {
                flag(f, "from", i.from.as_deref())?;
                flag(f, "chown", i.chown.as_deref())?;
                flag(f, "chmod", i.chmod.as_deref())?;
                bool_flag(f, "link", i.link)?;
                bool_flag(f, "parents", i.parents)?;
                for pattern in &i.exclude {
                    write!(f, " --exclude={pattern}")?;
                }
                sources_and_dest(f, &i.sources, &i.inline, &i.dest)
            }
            Instruction::Add(i) => {
                flag(f, "chown", i.chown.as_deref())?;
                flag(f, "chmod", i.chmod.as_deref())?;
                flag(f, "checksum", i.checksum.as_deref())?;
                bool_flag(f, "link", i.link)?;
                bool_flag(f, "keep-git-dir", i.keep_git_dir)?;
                if let Some(unpack) = i.unpack {
                    write!(f, " --unpack={unpack}")?;
                }
                for pattern in &i.exclude {
                    write!(f, " --exclude={pattern}")?;
                }
                sources_and_dest(f, &i.sources, &i.inline, &i.dest)
            }
            Instruction::Workdir(i) => write!(f, " {}", i.path),
            Instruction::User(i) => write!(f, " {}", i.user),
            Instruction::Volume(i) => words(f, &i.paths),
            Instruction::StopSignal(i) => write!(f, " {}", i.signal),
            Instruction::Healthcheck(i) => match &i.health {
                Health::None => f.write_str(" NONE"),
                Health::Check {
                    command,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } => {
                    // Durations are nanoseconds; 0 means "not set" (Docker's defaults apply).
                    for (name, nanos) in [
                        ("interval", interval),
                        ("timeout", timeout),
                        ("start-period", start_period),
                        ("start-interval", start_interval),
                    ] {
                        if *nanos != 0 {
                            write!(f, " --{name}={}", Nanos(*nanos))?;
                        }
                    }
                    if *retries != 0 {
                        write!(f, " --retries={retries}")?;
                    }
                    write!(f, " CMD {}", CommandForm(command))
                }
            },
            Instruction::Onbuild(i) => {
                // The trigger line without the heredoc bodies appended to it.
                let line = i.expression.split('\n').next().unwrap_or_default();
                write!(f, " {line}")
            }
            Instruction::Maintainer(i) => write!(f, " {}", i.name),
        }
    }
}

/// A command in the form it was written: a JSON array for exec form, the text for shell form.
struct CommandForm<'a>(&'a Command);

impl Display for CommandForm<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.0 {
            Command::Shell(text) => f.write_str(text),
            Command::Exec(args) => f.write_str(&json_array(args)),
        }
    }
}

/// A Go-style duration (`30s`, `1m30s`, `250ms`) from nanoseconds.
struct Nanos(i64);

impl Display for Nanos {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n % 1_000_000_000 != 0 {
            return if n % 1_000_000 == 0 {
                write!(f, "{}ms", n / 1_000_000)
            } else {
                write!(f, "{n}ns")
            };
        }
        let secs = n / 1_000_000_000;
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        let mut out = String::new();
        if h != 0 {
            let _ = write!(out, "{h}h");
        }
        if m != 0 {
            let _ = write!(out, "{m}m");
        }
        if s != 0 || out.is_empty() {
            let _ = write!(out, "{s}s");
        }
        f.write_str(&out)
    }
}

fn json_array(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_default()
}

fn flag(f: &mut Formatter<'_>, name: &str, value: Option<&str>) -> fmt::Result {
    match value {
        Some(value) => write!(f, " --{name}={value}"),
        None => Ok(()),
    }
}

fn bool_flag(f: &mut Formatter<'_>, name: &str, set: bool) -> fmt::Result {
    if set { write!(f, " --{name}") } else { Ok(()) }
}

fn words(f: &mut Formatter<'_>, items: &[String]) -> fmt::Result {
    items.iter().try_for_each(|w| write!(f, " {w}"))
}

fn pairs(f: &mut Formatter<'_>, pairs: &[KeyValue]) -> fmt::Result {
    pairs
        .iter()
        .try_for_each(|p| write!(f, " {}={}", p.key, quoted_if_needed(&p.value)))
}

fn sources_and_dest(
    f: &mut Formatter<'_>,
    sources: &[String],
    inline: &[super::InlineFile],
    dest: &str,
) -> fmt::Result {
    words(f, sources)?;
    for file in inline {
        write!(f, " <<{}", file.name)?;
    }
    write!(f, " {dest}")
}

/// A value as it can be written back after `=`: bare when it has no whitespace, quotes or
/// backslashes, else a double-quoted string.
fn quoted_if_needed(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '$' | '`'));
    if plain {
        value.to_string()
    } else {
        serde_json::to_string(value).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use crate::frontend::stage::{ResolveOptions, resolve};

    /// Each line of a one-stage Dockerfile printed back after resolution.
    fn shown(src: &str) -> Vec<String> {
        let df = crate::frontend::parse(src.as_bytes()).expect("parses");
        let resolved = resolve(&df, &ResolveOptions::default()).expect("resolves");
        resolved.stages[0]
            .instructions
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn instructions_print_back_expanded() {
        let lines = shown(concat!(
            "FROM scratch\n",
            "ARG V=1.2 EMPTY\n",
            "ENV A=$V B=\"two words\"\n",
            "LABEL version=$V\n",
            "RUN --mount=type=cache,target=/c --network=none --security=insecure echo $V\n",
            "CMD [\"sh\", \"-c\", \"echo\"]\n",
            "COPY --from=build --chown=1:1 --link a b /dst/\n",
            "ADD --checksum=sha256:ab https://example.com/x /x\n",
            "WORKDIR /app/$V\n",
            "USER 1000:1000\n",
            "EXPOSE 80/tcp 443\n",
            "VOLUME [\"/data\", \"/logs\"]\n",
            "STOPSIGNAL SIGTERM\n",
            "HEALTHCHECK --interval=1m30s --timeout=250ms --retries=3 CMD curl -f http://l/\n",
            "ONBUILD RUN make\n",
            "SHELL [\"/bin/bash\", \"-c\"]\n",
        ));
        assert_eq!(
            lines,
            [
                "ARG V=1.2 EMPTY",
                "ENV A=1.2 B=\"two words\"",
                "LABEL version=1.2",
                "RUN --mount=type=cache,target=/c --network=none --security=insecure echo $V",
                "CMD [\"sh\",\"-c\",\"echo\"]",
                "COPY --from=build --chown=1:1 --link a b /dst/",
                "ADD --checksum=sha256:ab https://example.com/x /x",
                "WORKDIR /app/1.2",
                "USER 1000:1000",
                "EXPOSE 80/tcp 443",
                "VOLUME /data /logs",
                "STOPSIGNAL SIGTERM",
                "HEALTHCHECK --interval=1m30s --timeout=250ms --retries=3 CMD curl -f http://l/",
                "ONBUILD RUN make",
                "SHELL [\"/bin/bash\",\"-c\"]",
            ]
        );
    }

    #[test]
    fn heredoc_markers_stay_and_empty_values_are_quoted() {
        let lines = shown("FROM scratch\nENV E=\"\"\nCOPY <<EOF /etc/x\nbody\nEOF\n");
        assert_eq!(lines, ["ENV E=\"\"", "COPY <<EOF /etc/x"]);
    }
}
