//! `docker import --change`: Dockerfile instructions applied to the new image's config (moby's
//! `BuildFromConfig` with its `validCommitCommands`). The changes are parsed and expanded by
//! kiln's Dockerfile front end as the lines of one stage, so `ENV A=1` then `USER $A` sets user
//! `1`, as in docker.

use super::ArchiveError;
use crate::parser::instruction::{Command, Health, Instruction};
use crate::parser::stage::{ResolveOptions, resolve};
use serde_json::{Map, Value, json};

/// The instructions docker accepts as changes.
const ALLOWED: [&str; 10] = [
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "HEALTHCHECK",
    "LABEL",
    "ONBUILD",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The container config (`Cmd`, `Env`, ... as docker's image config spells them) that
/// `changes` give, starting from an empty one.
pub(super) fn config_from_changes(changes: &[String]) -> Result<Map<String, Value>, ArchiveError> {
    let mut config = Map::new();
    if changes.is_empty() {
        return Ok(config);
    }
    // Each change alone first, so an error names the change it is in.
    for change in changes {
        let instructions =
            instructions(std::slice::from_ref(change)).map_err(|reason| ArchiveError::Change {
                change: change.clone(),
                reason,
            })?;
        if instructions.is_empty() {
            return Err(ArchiveError::Change {
                change: change.clone(),
                reason: "it holds no instruction".to_string(),
            });
        }
    }
    let all = instructions(changes).map_err(|reason| ArchiveError::Change {
        change: changes.join("\n"),
        reason,
    })?;
    let mut cmd_set = false;
    for instruction in all {
        apply(&mut config, instruction, &mut cmd_set)
            .map_err(|(change, reason)| ArchiveError::Change { change, reason })?;
    }
    Ok(config)
}

/// The instructions of `changes`, expanded, after checking each is an allowed one.
fn instructions(changes: &[String]) -> Result<Vec<Instruction>, String> {
    let text = format!("FROM scratch\n{}\n", changes.join("\n"));
    let dockerfile = crate::parser::parse(text.as_bytes()).map_err(|e| e.to_string())?;
    for node in dockerfile.nodes.iter().skip(1) {
        let keyword = node.keyword.to_ascii_uppercase();
        if !ALLOWED.contains(&keyword.as_str()) {
            return Err(format!(
                "{keyword} is not a valid change command; use {}",
                ALLOWED.join(", ")
            ));
        }
    }
    let resolved = resolve(&dockerfile, &ResolveOptions::default()).map_err(|e| e.to_string())?;
    Ok(resolved
        .stages
        .into_iter()
        .next()
        .map(|stage| stage.instructions)
        .unwrap_or_default())
}

/// A command as docker stores it: the exec form as is, the shell form run by `/bin/sh -c`.
fn command_value(command: &Command) -> Value {
    match command {
        Command::Exec(args) => json!(args),
        Command::Shell(line) => json!(["/bin/sh", "-c", line]),
    }
}

/// Applies one instruction (docker's dispatchers). Errors carry the instruction's text.
fn apply(
    config: &mut Map<String, Value>,
    instruction: Instruction,
    cmd_set: &mut bool,
) -> Result<(), (String, String)> {
    match instruction {
        Instruction::Cmd(cmd) => {
            config.insert("Cmd".into(), command_value(&cmd.command));
            *cmd_set = true;
        }
        Instruction::Entrypoint(entrypoint) => {
            let value = match &entrypoint.command {
                Command::Exec(args) if args.is_empty() => Value::Null,
                command => command_value(command),
            };
            config.insert("Entrypoint".into(), value);
            // Docker: a new ENTRYPOINT drops the CMD unless this build set one.
            if !*cmd_set {
                config.remove("Cmd");
            }
        }
        Instruction::Env(env) => {
            let mut list = take_list(config, "Env");
            for pair in env.pairs {
                let prefix = format!("{}=", pair.key);
                list.retain(|v| !v.as_str().is_some_and(|s| s.starts_with(&prefix)));
                list.push(json!(format!("{}={}", pair.key, pair.value)));
            }
            config.insert("Env".into(), Value::Array(list));
        }
        Instruction::Label(label) => {
            let mut labels = take_map(config, "Labels");
            for pair in label.pairs {
                labels.insert(pair.key, json!(pair.value));
            }
            config.insert("Labels".into(), Value::Object(labels));
        }
        Instruction::Expose(expose) => {
            let mut ports = Vec::new();
            for spec in &expose.ports {
                ports.extend(
                    expand_ports(spec).map_err(|reason| (format!("EXPOSE {spec}"), reason))?,
                );
            }
            let mut exposed = take_map(config, "ExposedPorts");
            for port in ports {
                exposed.insert(port, json!({}));
            }
            config.insert("ExposedPorts".into(), Value::Object(exposed));
        }
        Instruction::Workdir(workdir) => {
            let current = config
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("/");
            let joined = if workdir.path.starts_with('/') {
                workdir.path.clone()
            } else {
                format!("{current}/{}", workdir.path)
            };
            config.insert("WorkingDir".into(), json!(clean_path(&joined)));
        }
        Instruction::User(user) => {
            config.insert("User".into(), json!(user.user));
        }
        Instruction::Volume(volume) => {
            if volume.paths.iter().any(|p| p.trim().is_empty()) {
                return Err((
                    "VOLUME".to_string(),
                    "VOLUME specified can not be an empty string".to_string(),
                ));
            }
            let mut volumes = take_map(config, "Volumes");
            for path in volume.paths {
                volumes.insert(path, json!({}));
            }
            config.insert("Volumes".into(), Value::Object(volumes));
        }
        Instruction::Onbuild(onbuild) => {
            let mut triggers = take_list(config, "OnBuild");
            triggers.push(json!(onbuild.expression));
            config.insert("OnBuild".into(), Value::Array(triggers));
        }
        Instruction::Healthcheck(healthcheck) => {
            let value = match healthcheck.health {
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
                            test.extend(args);
                            test
                        }
                        Command::Shell(line) => vec!["CMD-SHELL".to_string(), line],
                    };
                    let mut check = Map::new();
                    check.insert("Test".into(), json!(test));
                    for (key, nanos) in [
                        ("Interval", interval),
                        ("Timeout", timeout),
                        ("StartPeriod", start_period),
                        ("StartInterval", start_interval),
                    ] {
                        if nanos != 0 {
                            check.insert(key.into(), json!(nanos));
                        }
                    }
                    if retries != 0 {
                        check.insert("Retries".into(), json!(retries));
                    }
                    Value::Object(check)
                }
            };
            config.insert("Healthcheck".into(), value);
        }
        other => {
            return Err((
                other.keyword().to_string(),
                format!("{} is not a valid change command", other.keyword()),
            ));
        }
    }
    Ok(())
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
fn clean_path(path: &str) -> String {
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

    fn changes(lines: &[&str]) -> Result<Value, ArchiveError> {
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        config_from_changes(&lines).map(Value::Object)
    }

    #[test]
    fn changes_set_the_config_like_docker_import() {
        let config = changes(&[
            "ENV A=1 B=\"two words\"",
            "CMD echo $A",
            "ENTRYPOINT [\"/bin/busybox\"]",
            "WORKDIR /srv",
            "WORKDIR app/../data",
            "USER ${A}000:1000",
            "LABEL org.example=\"x y\"",
            "EXPOSE 80 53/udp 8000-8001",
            "VOLUME /data",
            "ONBUILD RUN make",
            "HEALTHCHECK --interval=5s CMD [\"true\"]",
        ])
        .unwrap();
        assert_eq!(
            config,
            json!({
                "Env": ["A=1", "B=two words"],
                "Cmd": ["/bin/sh", "-c", "echo $A"],
                "Entrypoint": ["/bin/busybox"],
                "WorkingDir": "/srv/data",
                "User": "1000:1000",
                "Labels": {"org.example": "x y"},
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}},
                "Volumes": {"/data": {}},
                "OnBuild": ["RUN make"],
                "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5_000_000_000u64},
            })
        );
    }

    #[test]
    fn entrypoint_drops_a_cmd_set_before_it_only_when_none_was_set() {
        let config = changes(&["ENTRYPOINT /run.sh"]).unwrap();
        assert_eq!(config, json!({"Entrypoint": ["/bin/sh", "-c", "/run.sh"]}));
        let config = changes(&["ENTRYPOINT []", "CMD [\"x\"]"]).unwrap();
        assert_eq!(config, json!({"Entrypoint": null, "Cmd": ["x"]}));
    }

    #[test]
    fn invalid_changes_are_errors_naming_the_change() {
        for (change, expected) in [
            ("RUN echo hi", "RUN is not a valid change command"),
            ("FROM busybox", "FROM is not a valid change command"),
            ("COPY a b", "COPY is not a valid change command"),
            ("EXPOSE 70000", "invalid containerPort: 70000"),
            ("EXPOSE 80/icmp", "invalid proto: icmp"),
            ("BOGUS x", "BOGUS is not a valid change command"),
            ("", "it holds no instruction"),
        ] {
            let err = changes(&[change]).unwrap_err().to_string();
            assert!(err.contains(expected), "{change:?}: {err}");
        }
    }
}
