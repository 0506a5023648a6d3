//! SLSA provenance of a build as BuildKit v0.32 writes it
//! (<https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md>):
//! by default SLSA v1 (`https://slsa.dev/provenance/v1`, buildType
//! `https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md`), or
//! v0.2 with `version=v0.2`.
//!
//! The builder hands in what it knows of the build ([`BuildFacts`]); this module only arranges
//! it. `mode=min` (what buildx adds by default) keeps the frontend, the materials and the
//! timestamps and drops build arguments, labels, secrets and SSH ids; `mode=max` adds them, the
//! build steps (`buildConfig.llbDefinition`: kiln's ops, each with its digest and inputs), the
//! Dockerfile's source and each step's layers. A secret's value is never among the facts: only
//! the ids of the secrets and SSH agents the steps mount.

use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// SLSA v1's predicate type.
pub const PREDICATE_SLSA1: &str = "https://slsa.dev/provenance/v1";
/// SLSA v0.2's predicate type.
pub const PREDICATE_SLSA02: &str = "https://slsa.dev/provenance/v0.2";
/// The buildType of BuildKit's v1 provenance.
pub const BUILD_TYPE_V1: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";
/// The buildType of BuildKit's v0.2 provenance.
pub const BUILD_TYPE_V02: &str = "https://mobyproject.org/buildkit@v1";

/// How much the provenance says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Materials, frontend, timestamps; no build arguments, secrets or steps.
    Min,
    /// Everything, BuildKit's default when provenance is asked for.
    #[default]
    Max,
}

/// Which SLSA provenance version is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlsaVersion {
    /// `v1`, BuildKit v0.32's default.
    #[default]
    V1,
    /// `v0.2`.
    V02,
}

impl SlsaVersion {
    /// The predicate type of this version.
    pub fn predicate_type(self) -> &'static str {
        match self {
            SlsaVersion::V1 => PREDICATE_SLSA1,
            SlsaVersion::V02 => PREDICATE_SLSA02,
        }
    }
}

/// `--provenance` / `--attest type=provenance` options, as BuildKit reads them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvenanceOptions {
    pub mode: Mode,
    pub version: SlsaVersion,
    /// `builder-id=`: `runDetails.builder.id` (empty by default, as BuildKit's).
    pub builder_id: String,
    /// `reproducible=true`: says so in the metadata.
    pub reproducible: bool,
    /// `inline-only=true`: only image exports carry it (local and tar exports write no
    /// provenance file).
    pub inline_only: bool,
    /// `filename=`: the provenance file's name in a local or tar export (BuildKit writes the
    /// base name of it; `provenance.json` when not given).
    pub filename: Option<String>,
}

/// Why provenance options are not ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("invalid provenance mode {0:?}: use mode=min or mode=max")]
    Mode(String),
    #[error("invalid provenance SLSA version {0:?}: use version=v1 or version=v0.2")]
    Version(String),
    #[error("invalid provenance option {key}={value:?}: give true or false")]
    NotABool { key: String, value: String },
    #[error("invalid provenance filename {0:?}: give a file name such as provenance.json")]
    Filename(String),
    #[error(
        "the provenance option {0:?} is not supported by kiln; the options are mode, version, \
         builder-id, reproducible, inline-only and filename"
    )]
    Unsupported(String),
}

/// Go's `path.Base`: the last element of a `/`-separated path, trailing slashes left out;
/// `.` for an empty path, `/` for one of slashes only.
fn go_path_base(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

impl ProvenanceOptions {
    /// The name of the provenance file of a local or tar export.
    pub fn file_name(&self) -> &str {
        self.filename.as_deref().unwrap_or("provenance.json")
    }

    /// Reads `attest:provenance`'s fields (`mode=max`, `version=v1`, …) as BuildKit's
    /// provenance processor does; an option kiln does not implement (`capture-usage`,
    /// `complete-materials`) is an error naming it rather than ignored.
    pub fn from_attrs(attrs: &BTreeMap<String, String>) -> Result<ProvenanceOptions, OptionsError> {
        let mut options = ProvenanceOptions::default();
        let boolean = |key: &str, value: &str| match value {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            _ => Err(OptionsError::NotABool {
                key: key.to_string(),
                value: value.to_string(),
            }),
        };
        for (key, value) in attrs {
            match key.as_str() {
                "mode" => {
                    options.mode = match value.as_str() {
                        "min" => Mode::Min,
                        "max" | "full" => Mode::Max,
                        other => return Err(OptionsError::Mode(other.to_string())),
                    }
                }
                "version" => {
                    options.version = match value.as_str() {
                        "v1" => SlsaVersion::V1,
                        "v0.2" => SlsaVersion::V02,
                        other => return Err(OptionsError::Version(other.to_string())),
                    }
                }
                "builder-id" => options.builder_id.clone_from(value),
                "reproducible" => options.reproducible = boolean(key, value)?,
                "inline-only" => options.inline_only = boolean(key, value)?,
                // The file name of a local/tar export's provenance file, as BuildKit's exporter
                // writes it: Go's `path.Base`.
                "filename" => {
                    let base = go_path_base(value);
                    if base == "." || base == "/" || base == ".." {
                        return Err(OptionsError::Filename(value.clone()));
                    }
                    options.filename = Some(base);
                }
                other => return Err(OptionsError::Unsupported(other.to_string())),
            }
        }
        Ok(options)
    }
}

/// One resolved dependency (a material): a base image, a git commit, a download.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Material {
    /// `pkg:docker/debian@bookworm?platform=linux%2Famd64`, a git URL, an http(s) URL.
    pub uri: String,
    /// Algorithm → hex (`sha256`, or `sha1` for a git commit).
    pub digest: BTreeMap<String, String>,
}

/// Where the build's definition came from (`externalParameters.configSource`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigSource {
    /// A remote context's URL (credentials removed); `None` for a local context.
    pub uri: Option<String>,
    pub digest: BTreeMap<String, String>,
    /// The Dockerfile's path in the context (`Dockerfile`).
    pub path: Option<String>,
}

/// A secret or SSH agent a step mounts, by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MountedId {
    pub id: String,
    pub optional: bool,
}

/// One build step of `mode=max`'s `buildConfig.llbDefinition`.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildStep {
    /// `step0`, `step1`, … in the order the steps depend on each other.
    pub id: String,
    /// The op as kiln defines it (what its digest is of).
    pub op: Value,
    /// `stepN:0` for each input.
    pub inputs: Vec<String>,
    /// The op's digest (`buildConfig.digestMapping` maps it to `id`).
    pub digest: String,
}

/// A layer of a step's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// The build's source file (`buildkit_metadata.source.infos`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub filename: String,
    pub language: String,
    pub data: Vec<u8>,
}

/// What the builder knows of one platform's build.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BuildFacts {
    /// `dockerfile.v0`.
    pub frontend: String,
    /// The request's options: `build-arg:NAME`, `label:NAME`, `target`, …
    pub args: BTreeMap<String, String>,
    pub secrets: Vec<MountedId>,
    pub ssh: Vec<MountedId>,
    /// The local sources the build read (`context`, `dockerfile`).
    pub locals: Vec<String>,
    pub config_source: ConfigSource,
    pub materials: Vec<Material>,
    /// A material could not be pinned (a local source always makes it so, as in BuildKit).
    pub incomplete_materials: bool,
    /// A RUN step had network access.
    pub network_access: bool,
    /// `linux/amd64`: where the build ran.
    pub builder_platform: String,
    pub invocation_id: String,
    /// RFC 3339 times.
    pub started_on: String,
    pub finished_on: String,
    /// `mode=max` only: the steps, the source file, each step's layers (`stepN:0`).
    pub steps: Vec<BuildStep>,
    pub source: Option<SourceFile>,
    /// Where in the source each step is: its id → the first and last line (1-based).
    pub locations: BTreeMap<String, (usize, usize)>,
    pub layers: BTreeMap<String, Vec<LayerRef>>,
}

/// The provenance predicate (SLSA v1 or v0.2, as `options` says) of a build.
pub fn predicate(facts: &BuildFacts, options: &ProvenanceOptions) -> Value {
    let v1 = predicate_v1(facts, options);
    match options.version {
        SlsaVersion::V1 => v1,
        SlsaVersion::V02 => to_slsa02(&v1),
    }
}

fn digest_map(digest: &BTreeMap<String, String>) -> Value {
    Value::Object(
        digest
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn mounted(ids: &[MountedId]) -> Value {
    Value::Array(
        ids.iter()
            .map(|m| {
                let mut entry = Map::new();
                entry.insert("id".into(), json!(m.id));
                if m.optional {
                    entry.insert("optional".into(), json!(true));
                }
                Value::Object(entry)
            })
            .collect(),
    )
}

/// BuildKit's v1 predicate (`ProvenancePredicateSLSA1`).
fn predicate_v1(facts: &BuildFacts, options: &ProvenanceOptions) -> Value {
    let max = options.mode == Mode::Max;
    // The request: min mode drops build arguments and labels (and says the request is then
    // incomplete), secrets and SSH ids (BuildKit's scrubMinRequest).
    let mut request_complete = !facts.frontend.is_empty();
    let mut args = Map::new();
    for (key, value) in &facts.args {
        if !max && (key.starts_with("build-arg:") || key.starts_with("label:")) {
            request_complete = false;
            continue;
        }
        args.insert(key.clone(), json!(value));
    }
    let mut request = Map::new();
    if !facts.frontend.is_empty() {
        request.insert("frontend".into(), json!(facts.frontend));
    }
    if !args.is_empty() {
        request.insert("args".into(), Value::Object(args));
    }
    if max && !facts.secrets.is_empty() {
        request.insert("secrets".into(), mounted(&facts.secrets));
    }
    if max && !facts.ssh.is_empty() {
        request.insert("ssh".into(), mounted(&facts.ssh));
    }
    if !facts.locals.is_empty() {
        let locals: Vec<Value> = facts.locals.iter().map(|n| json!({ "name": n })).collect();
        request.insert("locals".into(), Value::Array(locals));
    }
    let mut config_source = Map::new();
    if let Some(uri) = &facts.config_source.uri {
        config_source.insert("uri".into(), json!(uri));
    }
    if !facts.config_source.digest.is_empty() {
        config_source.insert("digest".into(), digest_map(&facts.config_source.digest));
    }
    if let Some(path) = &facts.config_source.path {
        config_source.insert("path".into(), json!(path));
    }
    let mut internal = Map::new();
    internal.insert("builderPlatform".into(), json!(facts.builder_platform));
    if max && !facts.steps.is_empty() {
        let definition: Vec<Value> = facts
            .steps
            .iter()
            .map(|step| {
                let mut entry = Map::new();
                entry.insert("id".into(), json!(step.id));
                entry.insert("op".into(), step.op.clone());
                if !step.inputs.is_empty() {
                    entry.insert("inputs".into(), json!(step.inputs));
                }
                Value::Object(entry)
            })
            .collect();
        let mapping: Map<String, Value> = facts
            .steps
            .iter()
            .map(|step| (step.digest.clone(), json!(step.id)))
            .collect();
        internal.insert(
            "buildConfig".into(),
            json!({ "llbDefinition": definition, "digestMapping": mapping }),
        );
    }
    let mut definition = Map::new();
    definition.insert("buildType".into(), json!(BUILD_TYPE_V1));
    definition.insert(
        "externalParameters".into(),
        json!({ "configSource": config_source, "request": request }),
    );
    definition.insert("internalParameters".into(), Value::Object(internal));
    if !facts.materials.is_empty() {
        let dependencies: Vec<Value> = facts
            .materials
            .iter()
            .map(|m| {
                let mut entry = Map::new();
                entry.insert("uri".into(), json!(m.uri));
                if !m.digest.is_empty() {
                    entry.insert("digest".into(), digest_map(&m.digest));
                }
                Value::Object(entry)
            })
            .collect();
        definition.insert("resolvedDependencies".into(), Value::Array(dependencies));
    }
    let complete_materials = !facts.incomplete_materials;
    let mut buildkit_metadata = Map::new();
    if max {
        if let Some(source) = &facts.source {
            let data = base64::engine::general_purpose::STANDARD.encode(&source.data);
            let mut value = json!({ "infos": [{
                "filename": source.filename,
                "language": source.language,
                "data": data,
            }] });
            if !facts.locations.is_empty() {
                let locations: Map<String, Value> = facts
                    .locations
                    .iter()
                    .map(|(step, (start, end))| {
                        let range = json!({ "start": { "line": start }, "end": { "line": end } });
                        (
                            step.clone(),
                            json!({ "locations": [{ "ranges": [range] }] }),
                        )
                    })
                    .collect();
                value["locations"] = Value::Object(locations);
            }
            buildkit_metadata.insert("source".into(), value);
        }
        if !facts.layers.is_empty() {
            let layers: Map<String, Value> = facts
                .layers
                .iter()
                .map(|(step, chain)| {
                    let chain: Vec<Value> = chain
                        .iter()
                        .map(|l| json!({ "mediaType": l.media_type, "digest": l.digest, "size": l.size }))
                        .collect();
                    (step.clone(), json!([chain]))
                })
                .collect();
            buildkit_metadata.insert("layers".into(), Value::Object(layers));
        }
    }
    let mut metadata = Map::new();
    if !facts.invocation_id.is_empty() {
        metadata.insert("invocationId".into(), json!(facts.invocation_id));
    }
    metadata.insert("startedOn".into(), json!(facts.started_on));
    metadata.insert("finishedOn".into(), json!(facts.finished_on));
    metadata.insert("buildkit_metadata".into(), Value::Object(buildkit_metadata));
    if complete_materials && !facts.network_access {
        metadata.insert("buildkit_hermetic".into(), json!(true));
    }
    metadata.insert(
        "buildkit_completeness".into(),
        json!({ "request": request_complete, "resolvedDependencies": complete_materials }),
    );
    if options.reproducible {
        metadata.insert("buildkit_reproducible".into(), json!(true));
    }
    json!({
        "buildDefinition": definition,
        "runDetails": {
            "builder": { "id": options.builder_id },
            "metadata": metadata,
        },
    })
}

/// A v1 predicate as SLSA v0.2 (BuildKit's `ConvertToSLSA02`; buildx writes this form into
/// `--metadata-file`'s `buildx.build.provenance`).
pub fn to_slsa02(v1: &Value) -> Value {
    let definition = &v1["buildDefinition"];
    let external = &definition["externalParameters"];
    let internal = &definition["internalParameters"];
    let run_metadata = &v1["runDetails"]["metadata"];
    let mut config_source = Map::new();
    if let Some(uri) = external["configSource"].get("uri") {
        config_source.insert("uri".into(), uri.clone());
    }
    if let Some(digest) = external["configSource"].get("digest") {
        config_source.insert("digest".into(), digest.clone());
    }
    if let Some(path) = external["configSource"].get("path") {
        config_source.insert("entryPoint".into(), path.clone());
    }
    let mut environment = Map::new();
    environment.insert("platform".into(), internal["builderPlatform"].clone());
    let mut predicate = Map::new();
    predicate.insert(
        "builder".into(),
        json!({ "id": v1["runDetails"]["builder"]["id"] }),
    );
    predicate.insert("buildType".into(), json!(BUILD_TYPE_V02));
    if let Some(Value::Array(dependencies)) = definition.get("resolvedDependencies") {
        predicate.insert("materials".into(), Value::Array(dependencies.clone()));
    }
    predicate.insert(
        "invocation".into(),
        json!({
            "configSource": config_source,
            "parameters": external["request"],
            "environment": environment,
        }),
    );
    if let Some(config) = internal.get("buildConfig") {
        predicate.insert("buildConfig".into(), config.clone());
    }
    if run_metadata.is_object() {
        let mut metadata = Map::new();
        if let Some(id) = run_metadata.get("invocationId") {
            metadata.insert("buildInvocationID".into(), id.clone());
        }
        if let Some(started) = run_metadata.get("startedOn") {
            metadata.insert("buildStartedOn".into(), started.clone());
        }
        if let Some(finished) = run_metadata.get("finishedOn") {
            metadata.insert("buildFinishedOn".into(), finished.clone());
        }
        let completeness = &run_metadata["buildkit_completeness"];
        metadata.insert(
            "completeness".into(),
            json!({
                "parameters": completeness["request"].as_bool().unwrap_or(false),
                "environment": true,
                "materials": completeness["resolvedDependencies"].as_bool().unwrap_or(false),
            }),
        );
        metadata.insert(
            "reproducible".into(),
            json!(
                run_metadata["buildkit_reproducible"]
                    .as_bool()
                    .unwrap_or(false)
            ),
        );
        metadata.insert(
            "https://mobyproject.org/buildkit@v1#metadata".into(),
            run_metadata
                .get("buildkit_metadata")
                .cloned()
                .unwrap_or_else(|| json!({})),
        );
        if run_metadata["buildkit_hermetic"].as_bool() == Some(true) {
            metadata.insert(
                "https://mobyproject.org/buildkit@v1#hermetic".into(),
                json!(true),
            );
        }
        predicate.insert("metadata".into(), Value::Object(metadata));
    }
    Value::Object(predicate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> BuildFacts {
        BuildFacts {
            frontend: "dockerfile.v0".into(),
            args: BTreeMap::from([
                ("build-arg:VERSION".into(), "1.2".into()),
                ("target".into(), "app".into()),
            ]),
            secrets: vec![MountedId {
                id: "token".into(),
                optional: false,
            }],
            ssh: Vec::new(),
            locals: vec!["context".into(), "dockerfile".into()],
            config_source: ConfigSource {
                path: Some("Dockerfile".into()),
                ..ConfigSource::default()
            },
            materials: vec![Material {
                uri: "pkg:docker/debian@bookworm?platform=linux%2Famd64".into(),
                digest: BTreeMap::from([("sha256".into(), "ab".repeat(32))]),
            }],
            incomplete_materials: true,
            network_access: true,
            builder_platform: "linux/amd64".into(),
            invocation_id: "abc".into(),
            started_on: "2026-01-01T00:00:00Z".into(),
            finished_on: "2026-01-01T00:00:01Z".into(),
            steps: vec![BuildStep {
                id: "step0".into(),
                op: json!({"image": "debian"}),
                inputs: Vec::new(),
                digest: "sha256:00".into(),
            }],
            source: Some(SourceFile {
                filename: "Dockerfile".into(),
                language: "Dockerfile".into(),
                data: b"FROM debian\n".to_vec(),
            }),
            locations: BTreeMap::from([("step0".into(), (1, 1))]),
            layers: BTreeMap::new(),
        }
    }

    #[test]
    fn min_mode_drops_build_args_secrets_and_steps() {
        let options = ProvenanceOptions {
            mode: Mode::Min,
            ..ProvenanceOptions::default()
        };
        let p = predicate(&facts(), &options);
        let request = &p["buildDefinition"]["externalParameters"]["request"];
        assert_eq!(request["args"], json!({"target": "app"}));
        assert!(request.get("secrets").is_none());
        assert!(p["buildDefinition"]["internalParameters"]["buildConfig"].is_null());
        let metadata = &p["runDetails"]["metadata"];
        assert_eq!(metadata["buildkit_completeness"]["request"], false);
        assert_eq!(
            metadata["buildkit_completeness"]["resolvedDependencies"],
            false
        );
        assert_eq!(metadata["buildkit_metadata"], json!({}));
        assert!(metadata.get("buildkit_hermetic").is_none());
    }

    #[test]
    fn max_mode_has_args_secret_ids_steps_and_source() {
        let p = predicate(&facts(), &ProvenanceOptions::default());
        let request = &p["buildDefinition"]["externalParameters"]["request"];
        assert_eq!(request["args"]["build-arg:VERSION"], "1.2");
        assert_eq!(request["secrets"], json!([{"id": "token"}]));
        assert_eq!(
            request["locals"],
            json!([{"name": "context"}, {"name": "dockerfile"}])
        );
        let config = &p["buildDefinition"]["internalParameters"]["buildConfig"];
        assert_eq!(config["llbDefinition"][0]["id"], "step0");
        assert_eq!(config["digestMapping"]["sha256:00"], "step0");
        let source = &p["runDetails"]["metadata"]["buildkit_metadata"]["source"];
        assert_eq!(source["infos"][0]["data"], "RlJPTSBkZWJpYW4K");
        assert_eq!(
            source["locations"]["step0"],
            json!({"locations": [{"ranges": [{"start": {"line": 1}, "end": {"line": 1}}]}]})
        );
        assert_eq!(
            p["runDetails"]["metadata"]["buildkit_completeness"]["request"],
            true
        );
    }

    #[test]
    fn v02_is_buildkits_conversion() {
        let options = ProvenanceOptions {
            version: SlsaVersion::V02,
            ..ProvenanceOptions::default()
        };
        let p = predicate(&facts(), &options);
        assert_eq!(p["buildType"], BUILD_TYPE_V02);
        assert_eq!(p["invocation"]["configSource"]["entryPoint"], "Dockerfile");
        assert_eq!(p["invocation"]["environment"]["platform"], "linux/amd64");
        assert_eq!(p["materials"][0]["digest"]["sha256"], "ab".repeat(32));
        assert_eq!(p["metadata"]["buildInvocationID"], "abc");
        assert_eq!(p["metadata"]["completeness"]["environment"], true);
    }

    #[test]
    fn options_parse_as_buildkit_reads_them() {
        let parse = |pairs: &[(&str, &str)]| {
            ProvenanceOptions::from_attrs(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
            .map_err(|e| e.to_string())
        };
        assert_eq!(parse(&[]).unwrap().mode, Mode::Max);
        assert_eq!(parse(&[("mode", "min")]).unwrap().mode, Mode::Min);
        assert_eq!(parse(&[("mode", "full")]).unwrap().mode, Mode::Max);
        assert_eq!(
            parse(&[("version", "v0.2")]).unwrap().version,
            SlsaVersion::V02
        );
        assert_eq!(
            parse(&[("mode", "all")]).unwrap_err(),
            "invalid provenance mode \"all\": use mode=min or mode=max"
        );
        assert_eq!(
            parse(&[("version", "v2")]).unwrap_err(),
            "invalid provenance SLSA version \"v2\": use version=v1 or version=v0.2"
        );
        assert!(
            parse(&[("capture-usage", "true")])
                .unwrap_err()
                .contains("\"capture-usage\" is not supported")
        );
    }
}
