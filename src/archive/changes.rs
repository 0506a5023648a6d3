//! `docker import --change`: Dockerfile instructions applied to the new image's config (moby's
//! `BuildFromConfig` with its `validCommitCommands`). The changes are parsed and expanded by
//! kiln's Dockerfile front end as the lines of one stage, so `ENV A=1` then `USER $A` sets user
//! `1`, as in docker.

use super::ArchiveError;
use crate::error::Cause;
use crate::frontend::dispatch::ConfigBuilder;
use crate::frontend::instruction::Instruction;
use crate::frontend::stage::{ResolveOptions, resolve};
use serde_json::{Map, Value};

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
    apply_changes(Map::new(), changes)
}

/// `config` (an image config's `config` object) with `changes` applied, as `docker commit
/// --change` applies them to the container's config.
pub fn apply_changes(
    config: Map<String, Value>,
    changes: &[String],
) -> Result<Map<String, Value>, ArchiveError> {
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
                reason: "it holds no instruction".into(),
            });
        }
    }
    let all = instructions(changes).map_err(|reason| ArchiveError::Change {
        change: changes.join("\n"),
        reason,
    })?;
    let mut builder = ConfigBuilder::new(config);
    for instruction in &all {
        builder
            .apply(instruction)
            .map_err(|err| ArchiveError::Change {
                change: instruction.to_string(),
                reason: err.into(),
            })?;
    }
    Ok(builder.into_config())
}

/// The instructions of `changes`, expanded, after checking each is an allowed one.
fn instructions(changes: &[String]) -> Result<Vec<Instruction>, Cause> {
    let text = format!("FROM scratch\n{}\n", changes.join("\n"));
    let dockerfile = crate::frontend::parse(text.as_bytes())?;
    for node in dockerfile.nodes.iter().skip(1) {
        let keyword = node.keyword.to_ascii_uppercase();
        if !ALLOWED.contains(&keyword.as_str()) {
            return Err(format!(
                "{keyword} is not a valid change command; use {}",
                ALLOWED.join(", ")
            )
            .into());
        }
    }
    let resolved = resolve(&dockerfile, &ResolveOptions::default())?;
    Ok(resolved
        .stages
        .into_iter()
        .next()
        .map(|stage| stage.instructions)
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            let err = crate::error::chain(&changes(&[change]).unwrap_err());
            assert!(err.contains(expected), "{change:?}: {err}");
        }
    }
}
