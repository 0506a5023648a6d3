//! Instructions printed back as one line of Dockerfile syntax, after expansion: what
//! `kiln build --dry-run` shows for each step (and, later, what image history records).
//! Heredoc bodies are not repeated; their markers stay in the command.

use super::{Command, Health, Instruction, KeyValue, Mount};
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
                if let Some(keep) = i.keep_git_dir {
                    bool_flag(f, "keep-git-dir", keep)?;
                    if !keep {
                        write!(f, " --keep-git-dir=false")?;
                    }
                }
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

/// A RUN mount after expansion, as `kiln build --dry-run` lists it under its RUN: `type=`, then
/// each key that was given, with `ro` or `rw` always shown as it resolved (BuildKit makes bind,
/// secret and ssh mounts read-only unless `rw` is given, cache and tmpfs read-write).
impl Display for Mount {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "type={}", self.kind.name())?;
        for (key, value) in [
            ("target", &self.target),
            ("source", &self.source),
            ("from", &self.from),
            ("id", &self.id),
        ] {
            if let Some(value) = value {
                write!(f, " {key}={}", quoted_if_needed(value))?;
            }
        }
        f.write_str(if self.readonly { " ro" } else { " rw" })?;
        if let Some(sharing) = self.sharing {
            write!(f, " sharing={}", sharing.name())?;
        }
        if let Some(size) = self.size {
            write!(f, " size={size}")?;
        }
        if let Some(mode) = self.mode {
            write!(f, " mode={mode:04o}")?;
        }
        if let Some(uid) = self.uid {
            write!(f, " uid={uid}")?;
        }
        if let Some(gid) = self.gid {
            write!(f, " gid={gid}")?;
        }
        if self.required {
            f.write_str(" required")?;
        }
        if let Some(env) = &self.env {
            write!(f, " env={}", quoted_if_needed(env))?;
        }
        Ok(())
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

    /// The mounts of each RUN of the last stage, printed after resolution.
    fn mounts(src: &str) -> Vec<Vec<String>> {
        let df = crate::frontend::parse(src.as_bytes()).expect("parses");
        let resolved = resolve(&df, &ResolveOptions::default()).expect("resolves");
        let last = resolved.stages.last().expect("a stage");
        last.instructions
            .iter()
            .filter_map(|i| match i {
                crate::frontend::instruction::Instruction::Run(r) => {
                    Some(r.mounts.iter().map(ToString::to_string).collect())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn mounts_print_expanded_with_resolved_access() {
        let runs = mounts(concat!(
            "FROM scratch AS build\n",
            "FROM scratch\n",
            "ARG D=/root/.cache P=0o\n",
            "RUN --mount=type=cache,target=$D/go,id=go-$P,sharing=locked,mode=0750,uid=1,gid=2 \\\n",
            "    --mount=type=bind,from=build,source=/out,target=/in \\\n",
            "    --mount=type=secret,id=tok,env=TOKEN,required \\\n",
            "    --mount=type=tmpfs,target=\"/t t\",size=64k \\\n",
            "    --mount=type=ssh,rw true\n",
        ));
        assert_eq!(
            runs,
            [[
                "type=cache target=/root/.cache/go id=go-0o rw sharing=locked mode=0750 uid=1 gid=2",
                "type=bind target=/in source=/out from=build ro",
                "type=secret id=tok ro required env=TOKEN",
                "type=tmpfs target=\"/t t\" rw size=65536",
                "type=ssh rw",
            ]]
        );
    }

    #[test]
    fn mount_values_keep_backslashes_under_backtick_escape() {
        // The flag's escape goes first, then the expansion's: ``$ keeps a `$`.
        let run = r"RUN --mount=type=cache,target=C:\cache,id=``$x,env=`$x echo";
        assert_eq!(
            mounts(&format!("# escape=`\nFROM scratch\n{run}\n")),
            [[r#"type=cache target="C:\\cache" id="$x" rw env="""#]]
        );
        // Under the default escape the flag loses its backslash, as in BuildKit.
        assert_eq!(
            mounts("FROM scratch\nRUN --mount=type=cache,target=C:\\cache echo\n"),
            [["type=cache target=C:cache rw"]]
        );
    }

    #[test]
    fn heredoc_markers_stay_and_empty_values_are_quoted() {
        let lines = shown("FROM scratch\nENV E=\"\"\nCOPY <<EOF /etc/x\nbody\nEOF\n");
        assert_eq!(lines, ["ENV E=\"\"", "COPY <<EOF /etc/x"]);
    }
}
