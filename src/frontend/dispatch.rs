//! Docker's image config dispatchers: what each metadata instruction (CMD, ENV, LABEL, ...)
//! does to an image's container config (`Cmd`, `Env`, ... as docker's image JSON spells them)
//! and the history line BuildKit records for it (frontend/dockerfile/dockerfile2llb/convert.go,
//! `dispatch*` and `commitToHistory`). `kiln build` and `kiln import --change` both go through
//! [`ConfigBuilder`], so an instruction means the same in both.

use crate::frontend::instruction::{Command, Health, Instruction};
use serde_json::{Map, Value, json};

/// The shell a shell-form command runs in when no SHELL instruction set one.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// A metadata instruction that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid EXPOSE {spec:?}: {reason}")]
    Port { spec: String, reason: String },
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
}

/// A container config being built, instruction by instruction.
#[derive(Debug, Clone, Default)]
pub struct ConfigBuilder {
    config: Map<String, Value>,
    /// Whether this build set a CMD (a later ENTRYPOINT keeps only a CMD set in this build).
    cmd_set: bool,
    /// A Dockerfile build (BuildKit's dispatch), not `docker import --change` (moby's classic
    /// builder): CMD then also sets the config's `ArgsEscaped`.
    dockerfile: bool,
    /// `MAINTAINER`: the image's top-level `author`.
    author: Option<String>,
}

impl ConfigBuilder {
    /// Starts from a base image's container config (empty for `scratch`).
    pub fn new(config: Map<String, Value>) -> ConfigBuilder {
        ConfigBuilder {
            config,
            cmd_set: false,
            dockerfile: false,
            author: None,
        }
    }

    /// [`ConfigBuilder::new`] for a Dockerfile build, which follows BuildKit's dispatch where it
    /// differs from `docker import --change`: CMD sets `ArgsEscaped` (dockerfile2llb
    /// `dispatchCmd`, v0.32: a field the OCI spec deprecates and docker's image spec still has).
    pub fn for_dockerfile(config: Map<String, Value>) -> ConfigBuilder {
        ConfigBuilder {
            dockerfile: true,
            ..ConfigBuilder::new(config)
        }
    }

    /// The builder a stage `FROM parent` starts with: the parent's config, with a CMD the parent
    /// set counting as inherited, so an ENTRYPOINT in the child clears it. BuildKit's
    /// `dispatchState.init` copies the image from the parent stage but not its CMD tracker.
    pub fn for_child_stage(&self) -> ConfigBuilder {
        ConfigBuilder {
            cmd_set: false,
            ..self.clone()
        }
    }

    /// The config so far.
    pub fn config(&self) -> &Map<String, Value> {
        &self.config
    }

    /// The config, built.
    pub fn into_config(self) -> Map<String, Value> {
        self.config
    }

    /// The author a MAINTAINER set, if any.
    pub fn author(&self) -> Option<&str> {
        self.author.as_deref()
    }

    /// The shell that runs shell-form commands: the last SHELL, else `/bin/sh -c`.
    pub fn shell(&self) -> Vec<String> {
        match self.config.get("Shell").and_then(Value::as_array) {
            Some(shell) if !shell.is_empty() => shell
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect(),
            _ => DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `command` as the argv docker runs: the exec form as is, the shell form as the shell
    /// followed by the line (BuildKit's `withShell`).
    pub fn argv(&self, command: &Command) -> Vec<String> {
        match command {
            Command::Exec(args) => args.clone(),
            Command::Shell(line) => {
                let mut argv = self.shell();
                argv.push(line.clone());
                argv
            }
        }
    }

    /// The config's `Env` entries (`KEY=VALUE`).
    pub fn env(&self) -> Vec<String> {
        self.string_list("Env")
    }

    /// The config's working directory, `/` when unset.
    pub fn working_dir(&self) -> String {
        match self.config.get("WorkingDir").and_then(Value::as_str) {
            Some(dir) if !dir.is_empty() => dir.to_string(),
            _ => "/".to_string(),
        }
    }

    /// The config's user (`""` is root).
    pub fn user(&self) -> String {
        self.config
            .get("User")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    fn string_list(&self, key: &str) -> Vec<String> {
        self.config
            .get(key)
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets `KEY=VALUE` in `Env`, replacing an entry with the same key in place (BuildKit's
    /// `addEnv`).
    pub fn set_env(&mut self, key: &str, value: &str) {
        let mut list = take_list(&mut self.config, "Env");
        let entry = json!(format!("{key}={value}"));
        let same_key = |v: &Value| v.as_str().is_some_and(|s| env_key(s) == key);
        match list.iter_mut().find(|v| same_key(v)) {
            Some(slot) => *slot = entry,
            None => list.push(entry),
        }
        self.config.insert("Env".into(), Value::Array(list));
    }

    /// Applies one metadata instruction and returns the history line BuildKit records for it
    /// (`None` for instructions it records none for, like ONBUILD, and for instructions that
    /// are not metadata: FROM, RUN, COPY, ADD, ARG).
    pub fn apply(&mut self, instruction: &Instruction) -> Result<Option<String>, ConfigError> {
        let history = match instruction {
            Instruction::Cmd(cmd) => {
                let argv = self.argv(&cmd.command);
                let history = format!("CMD {}", go_quoted_list(&argv));
                self.config.insert("Cmd".into(), json!(argv));
                if self.dockerfile {
                    self.config.insert("ArgsEscaped".into(), json!(true));
                }
                self.cmd_set = true;
                history
            }
            Instruction::Entrypoint(entrypoint) => {
                let argv = self.argv(&entrypoint.command);
                let history = format!("ENTRYPOINT {}", go_quoted_list(&argv));
                let value = if argv.is_empty() {
                    Value::Null
                } else {
                    json!(argv)
                };
                self.config.insert("Entrypoint".into(), value);
                // Docker: a new ENTRYPOINT drops the CMD unless this build set one.
                if !self.cmd_set {
                    self.config.remove("Cmd");
                }
                history
            }
            Instruction::Env(env) => {
                let mut history = String::from("ENV");
                for pair in &env.pairs {
                    self.set_env(&pair.key, &pair.value);
                    history.push_str(&format!(" {}={}", pair.key, pair.value));
                }
                history
            }
            Instruction::Label(label) => {
                let mut labels = take_map(&mut self.config, "Labels");
                let mut history = String::from("LABEL");
                for pair in &label.pairs {
                    labels.insert(pair.key.clone(), json!(pair.value));
                    history.push_str(&format!(" {}={}", pair.key, pair.value));
                }
                self.config.insert("Labels".into(), Value::Object(labels));
                history
            }
            Instruction::Expose(expose) => {
                let mut ports = Vec::new();
                for spec in &expose.ports {
                    ports.extend(expand_ports(spec).map_err(|reason| ConfigError::Port {
                        spec: spec.clone(),
                        reason,
                    })?);
                }
                let mut exposed = take_map(&mut self.config, "ExposedPorts");
                for port in &ports {
                    exposed.insert(port.clone(), json!({}));
                }
                self.config
                    .insert("ExposedPorts".into(), Value::Object(exposed));
                // BuildKit v0.32 (convert_expose.go) records `EXPOSE %v` of the instruction's
                // ports, sorted and not deduplicated (buildctl: `EXPOSE 80 80/tcp 443 22` is
                // `EXPOSE [22/tcp 443/tcp 80/tcp 80/tcp]`).
                ports.sort();
                format!("EXPOSE [{}]", ports.join(" "))
            }
            Instruction::Workdir(workdir) => {
                // BuildKit's NormalizeWorkdir (util/system/path.go `NormalizePath` without
                // keepSlash): an absolute path is recorded as written, a trailing slash too
                // (`WORKDIR /tmp/` is `"WorkingDir": "/tmp/"`); a relative one is joined to the
                // current directory and cleaned (Go's path.Join).
                let dir = if workdir.path.starts_with('/') {
                    workdir.path.clone()
                } else {
                    clean_path(&format!("{}/{}", self.working_dir(), workdir.path))
                };
                let history = format!("WORKDIR {dir}");
                self.config.insert("WorkingDir".into(), json!(dir));
                history
            }
            Instruction::User(user) => {
                self.config.insert("User".into(), json!(user.user));
                format!("USER {}", user.user)
            }
            Instruction::Volume(volume) => {
                if volume.paths.iter().any(|p| p.trim().is_empty()) {
                    return Err(ConfigError::EmptyVolume);
                }
                let mut volumes = take_map(&mut self.config, "Volumes");
                for path in &volume.paths {
                    volumes.insert(path.clone(), json!({}));
                }
                self.config.insert("Volumes".into(), Value::Object(volumes));
                format!("VOLUME [{}]", volume.paths.join(" "))
            }
            Instruction::Onbuild(onbuild) => {
                let mut triggers = take_list(&mut self.config, "OnBuild");
                triggers.push(json!(onbuild.expression));
                self.config.insert("OnBuild".into(), Value::Array(triggers));
                return Ok(None);
            }
            Instruction::Healthcheck(healthcheck) => {
                let value = health_value(&healthcheck.health);
                let history = format!("HEALTHCHECK {}", health_history(&healthcheck.health));
                self.config.insert("Healthcheck".into(), value);
                history
            }
            Instruction::Shell(shell) => {
                self.config.insert("Shell".into(), json!(shell.shell));
                format!("SHELL [{}]", shell.shell.join(" "))
            }
            Instruction::StopSignal(signal) => {
                self.config
                    .insert("StopSignal".into(), json!(signal.signal));
                format!("STOPSIGNAL {}", signal.signal)
            }
            Instruction::Maintainer(maintainer) => {
                self.author = Some(maintainer.name.clone());
                format!("MAINTAINER {}", maintainer.name)
            }
            Instruction::From(_)
            | Instruction::Run(_)
            | Instruction::Copy(_)
            | Instruction::Add(_)
            | Instruction::Arg(_) => return Ok(None),
        };
        Ok(Some(history))
    }
}

/// The key of an `Env` entry: what comes before the first `=` (the whole entry when it has none).
pub fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(key, _)| key)
}

/// `Env` entries as (key, value) pairs; an entry without `=` has an empty value.
pub fn env_pairs(entries: &[String]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (entry.clone(), String::new()),
        })
        .collect()
}

/// docker's `Healthcheck` object for a HEALTHCHECK (durations in nanoseconds, zero ones left
/// out so the base image's values apply).
fn health_value(health: &Health) -> Value {
    match health {
        Health::None => json!({ "Test": ["NONE"] }),
        Health::Check {
            command,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => {
            let test = match command {
                Command::Exec(args) => {
                    let mut test = vec!["CMD".to_string()];
                    test.extend(args.iter().cloned());
                    test
                }
                Command::Shell(line) => vec!["CMD-SHELL".to_string(), line.clone()],
            };
            let mut check = Map::new();
            check.insert("Test".into(), json!(test));
            for (key, nanos) in [
                ("Interval", interval),
                ("Timeout", timeout),
                ("StartPeriod", start_period),
                ("StartInterval", start_interval),
            ] {
                if *nanos != 0 {
                    check.insert(key.into(), json!(nanos));
                }
            }
            if *retries != 0 {
                check.insert("Retries".into(), json!(retries));
            }
            Value::Object(check)
        }
    }
}

/// BuildKit's history text for a HEALTHCHECK: Go's `%q` of its `*HealthcheckConfig`
/// (dockerfile2llb `dispatchHealthcheck`), `&{TEST INTERVAL TIMEOUT START-PERIOD START-INTERVAL
/// RETRIES}`: the test as a quoted list, durations as quoted `time.Duration` strings, retries as
/// a quoted rune (`'\x03'`). BuildKit before `--start-interval` (v0.8) had no start interval
/// field.
fn health_history(health: &Health) -> String {
    let (test, durations, retries) = match health {
        Health::None => (vec!["NONE".to_string()], [0; 4], 0),
        Health::Check {
            command,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => {
            let mut test = Vec::new();
            match command {
                Command::Exec(args) => {
                    test.push("CMD".to_string());
                    test.extend(args.iter().cloned());
                }
                Command::Shell(line) => {
                    test.push("CMD-SHELL".to_string());
                    test.push(line.clone());
                }
            }
            let durations = [*interval, *timeout, *start_period, *start_interval];
            (test, durations, *retries)
        }
    };
    // BuildKit v0.32 (convert.go `dispatchHealthcheck`) records `HEALTHCHECK %+v` of the config's
    // HealthcheckConfig: Go prints the struct's fields by name, a []string as `[a b]`.
    let [interval, timeout, start_period, start_interval] = durations.map(go_duration);
    format!(
        "{{Test:[{}] Interval:{interval} Timeout:{timeout} StartPeriod:{start_period} \
         StartInterval:{start_interval} Retries:{retries}}}",
        test.join(" ")
    )
}

/// A duration in nanoseconds as Go's `time.Duration.String` prints it: `0s`, `1.5s`, `1m30s`,
/// `1h0m0s`, `250ms`, `1.5µs`, `800ns`.
fn go_duration(nanos: i64) -> String {
    /// `value / 10^digits` with the fraction's trailing zeros (and a bare point) left out.
    fn with_fraction(value: u64, digits: u32) -> String {
        let scale = 10u64.pow(digits);
        let (whole, fraction) = (value / scale, value % scale);
        if fraction == 0 {
            return whole.to_string();
        }
        let fraction = format!("{fraction:0width$}", width = digits as usize);
        format!("{whole}.{}", fraction.trim_end_matches('0'))
    }
    const SECOND: u64 = 1_000_000_000;
    if nanos == 0 {
        return "0s".to_string();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let value = nanos.unsigned_abs();
    let text = if value < SECOND {
        let (unit, digits) = match value {
            0..1_000 => ("ns", 0),
            1_000..1_000_000 => ("µs", 3),
            _ => ("ms", 6),
        };
        format!("{}{unit}", with_fraction(value, digits))
    } else {
        let seconds = value / SECOND;
        let mut text = format!(
            "{}s",
            with_fraction((seconds % 60) * SECOND + value % SECOND, 9)
        );
        let minutes = seconds / 60;
        if minutes > 0 {
            text = format!("{}m{text}", minutes % 60);
            let hours = minutes / 60;
            if hours > 0 {
                text = format!("{hours}h{text}");
            }
        }
        text
    };
    format!("{sign}{text}")
}

/// A list as Go's `%q` prints a `[]string`: `["/bin/sh" "-c" "echo hi"]`.
fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", quoted.join(" "))
}

/// The array `config[key]`, taken out (empty when missing or not an array).
fn take_list(config: &mut Map<String, Value>, key: &str) -> Vec<Value> {
    match config.remove(key) {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    }
}

/// The object `config[key]`, taken out (empty when missing or not an object).
fn take_map(config: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match config.remove(key) {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// `80`, `80/udp`, `8000-8002/tcp` as docker's `PORT/PROTO` keys (docker's `nat.ParsePortSpecs`).
fn expand_ports(spec: &str) -> Result<Vec<String>, String> {
    let (range, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let port = |text: &str| {
        text.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {text}"))
    };
    let (first, last) = match range.split_once('-') {
        Some((first, last)) => (port(first)?, port(last)?),
        None => (port(range)?, port(range)?),
    };
    if last < first {
        return Err(format!(
            "invalid range specified for containerPort: {range}"
        ));
    }
    Ok((first..=last).map(|p| format!("{p}/{proto}")).collect())
}

/// `path` with `.`, `..` and repeated slashes resolved lexically (Go's `path.Clean` of an
/// absolute path).
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::stage::{ResolveOptions, resolve};

    /// Applies the instructions of a one-stage Dockerfile body, returning the config and the
    /// history lines.
    fn applied(body: &str) -> (Value, Vec<String>) {
        let text = format!("FROM scratch\n{body}\n");
        let dockerfile = crate::frontend::parse(text.as_bytes()).unwrap();
        let resolved = resolve(&dockerfile, &ResolveOptions::default()).unwrap();
        let mut builder = ConfigBuilder::default();
        let mut history = Vec::new();
        for instruction in &resolved.stages[0].instructions {
            history.extend(builder.apply(instruction).unwrap());
        }
        (Value::Object(builder.into_config()), history)
    }

    /// BuildKit v0.32 (`NormalizeWorkdir`): absolute paths as written, relative ones joined and
    /// cleaned (issue 12, item 1; checked against buildctl).
    #[test]
    fn workdir_keeps_an_absolute_path_as_written() {
        for (body, dir) in [
            ("WORKDIR /tmp/", "/tmp/"),
            ("WORKDIR /a//b/../c/", "/a//b/../c/"),
            ("WORKDIR /a\nWORKDIR b/", "/a/b"),
            ("WORKDIR /tmp/\nWORKDIR ./x/../y", "/tmp/y"),
            ("WORKDIR rel", "/rel"),
        ] {
            let (config, history) = applied(body);
            assert_eq!(config["WorkingDir"], dir, "{body}");
            assert_eq!(history.last().unwrap(), &format!("WORKDIR {dir}"), "{body}");
        }
    }

    /// A CMD from the parent stage is inherited: a child's ENTRYPOINT clears it, one set in the
    /// same stage survives (issue 12, item 2; checked against buildctl).
    #[test]
    fn entrypoint_clears_a_cmd_inherited_from_a_parent_stage() {
        let parent = {
            let text = "FROM scratch\nCMD [\"echo\", \"from-first\"]\n";
            let dockerfile = crate::frontend::parse(text.as_bytes()).unwrap();
            let resolved = resolve(&dockerfile, &ResolveOptions::default()).unwrap();
            let mut builder = ConfigBuilder::default();
            for instruction in &resolved.stages[0].instructions {
                builder.apply(instruction).unwrap();
            }
            builder
        };
        let entrypoint = |builder: &mut ConfigBuilder| {
            let text = "FROM scratch\nENTRYPOINT [\"/bin/echo\", \"ep\"]\n";
            let dockerfile = crate::frontend::parse(text.as_bytes()).unwrap();
            let resolved = resolve(&dockerfile, &ResolveOptions::default()).unwrap();
            builder.apply(&resolved.stages[0].instructions[0]).unwrap();
        };
        let mut child = parent.for_child_stage();
        entrypoint(&mut child);
        assert_eq!(child.config().get("Cmd"), None);
        assert_eq!(child.config()["Entrypoint"], json!(["/bin/echo", "ep"]));
        let mut same_stage = parent.clone();
        entrypoint(&mut same_stage);
        assert_eq!(same_stage.config()["Cmd"], json!(["echo", "from-first"]));
    }

    /// BuildKit v0.32's `HEALTHCHECK %+v` (the texts buildctl records for these).
    #[test]
    fn healthcheck_history_is_gos_struct_with_field_names() {
        let (_, history) = applied(
            "HEALTHCHECK --interval=1m30s --timeout=5s --start-period=250ms --retries=3 \
             CMD [\"sh\", \"-c\", \"true\"]\nHEALTHCHECK CMD curl -f x\nHEALTHCHECK NONE",
        );
        assert_eq!(
            history,
            [
                "HEALTHCHECK {Test:[CMD sh -c true] Interval:1m30s Timeout:5s StartPeriod:250ms \
                 StartInterval:0s Retries:3}",
                "HEALTHCHECK {Test:[CMD-SHELL curl -f x] Interval:0s Timeout:0s StartPeriod:0s \
                 StartInterval:0s Retries:0}",
                "HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s \
                 Retries:0}",
            ]
        );
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        let durations = [
            (0, "0s"),
            (800, "800ns"),
            (1_500, "1.5µs"),
            (250_000_000, "250ms"),
            (1_500_000_000, "1.5s"),
            (30_000_000_000, "30s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_001, "1h2m3.000000001s"),
            (-2_000_000_000, "-2s"),
        ];
        for (nanos, text) in durations {
            assert_eq!(go_duration(nanos), text, "{nanos}ns");
        }
    }

    #[test]
    fn shell_form_commands_run_in_the_last_shell_and_history_reads_like_buildkit() {
        let (config, history) = applied(
            "SHELL [\"/bin/ash\", \"-eo\", \"pipefail\", \"-c\"]\nCMD echo hi\n\
             ENTRYPOINT [\"/e\"]\nEXPOSE 8001 80/udp 8000\nSTOPSIGNAL SIGINT\nVOLUME /a /b\n\
             ENV A=1 B=2\nENV A=3\nMAINTAINER me",
        );
        assert_eq!(
            config,
            json!({
                "Shell": ["/bin/ash", "-eo", "pipefail", "-c"],
                "Cmd": ["/bin/ash", "-eo", "pipefail", "-c", "echo hi"],
                "Entrypoint": ["/e"],
                "ExposedPorts": {"8001/tcp": {}, "80/udp": {}, "8000/tcp": {}},
                "StopSignal": "SIGINT",
                "Volumes": {"/a": {}, "/b": {}},
                "Env": ["A=3", "B=2"],
            })
        );
        assert_eq!(
            history,
            [
                "SHELL [/bin/ash -eo pipefail -c]",
                r#"CMD ["/bin/ash" "-eo" "pipefail" "-c" "echo hi"]"#,
                r#"ENTRYPOINT ["/e"]"#,
                "EXPOSE [80/udp 8000/tcp 8001/tcp]",
                "STOPSIGNAL SIGINT",
                "VOLUME [/a /b]",
                "ENV A=1 B=2",
                "ENV A=3",
                "MAINTAINER me",
            ]
        );
    }
}
