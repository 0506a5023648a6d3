//! The OCI image-spec JSON schemas (draft-04) from `../shared/conformance/oci-schema`: a
//! validator for the documents kiln writes, checked first against the spec's own test vectors.

use crate::support::conformance_dir;
use jsonschema::{Draft, Retrieve, Uri, Validator};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The documents the schemas describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    Layout,
    Index,
    Manifest,
    Config,
    Descriptor,
}

impl Schema {
    fn file(self) -> &'static str {
        match self {
            Schema::Layout => "image-layout-schema.json",
            Schema::Index => "image-index-schema.json",
            Schema::Manifest => "image-manifest-schema.json",
            Schema::Config => "config-schema.json",
            Schema::Descriptor => "content-descriptor.json",
        }
    }

    /// The schema for a `validator` value of `vectors.jsonl` (the Go test's validator name or
    /// the media type of a document from the spec's prose).
    fn for_vector(validator: &str) -> Option<Schema> {
        Some(match validator {
            "ValidatorMediaTypeLayoutHeader" | "application/vnd.oci.layout.header.v1+json" => {
                Schema::Layout
            }
            "ValidatorMediaTypeImageIndex" | "application/vnd.oci.image.index.v1+json" => {
                Schema::Index
            }
            "ValidatorMediaTypeManifest" | "application/vnd.oci.image.manifest.v1+json" => {
                Schema::Manifest
            }
            "ValidatorMediaTypeImageConfig" | "application/vnd.oci.image.config.v1+json" => {
                Schema::Config
            }
            "ValidatorMediaTypeDescriptor" | "application/vnd.oci.descriptor.v1+json" => {
                Schema::Descriptor
            }
            _ => return None,
        })
    }
}

/// Resolves the schemas' `$ref`s (`https://opencontainers.org/schema/.../defs.json`) to the
/// files beside them, offline.
struct LocalSchemas {
    dir: PathBuf,
}

impl Retrieve for LocalSchemas {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let path = uri.path().as_str();
        let name = path.rsplit('/').next().unwrap_or(path);
        let file = self.dir.join(name);
        let text = std::fs::read_to_string(&file)
            .map_err(|err| format!("{uri} -> {}: {err}", file.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// Compiled validators for the five document kinds.
pub struct Schemas {
    validators: Vec<(Schema, Validator)>,
}

impl Schemas {
    /// Compiles the schemas from `dir`.
    pub fn load(dir: &Path) -> Schemas {
        let all = [
            Schema::Layout,
            Schema::Index,
            Schema::Manifest,
            Schema::Config,
            Schema::Descriptor,
        ];
        let validators = all
            .into_iter()
            .map(|schema| {
                let text = std::fs::read_to_string(dir.join(schema.file())).expect("schema file");
                let json: Value = serde_json::from_str(&text).expect("schema JSON");
                let validator = jsonschema::options()
                    .with_draft(Draft::Draft4)
                    .should_validate_formats(true)
                    .with_retriever(LocalSchemas {
                        dir: dir.to_path_buf(),
                    })
                    .build(&json)
                    .unwrap_or_else(|err| panic!("{}: {err}", schema.file()));
                (schema, validator)
            })
            .collect();
        Schemas { validators }
    }

    /// The schemas from the shared conformance data, or `None` (with a notice) when absent.
    pub fn shared() -> Option<Schemas> {
        conformance_dir().map(|dir| Schemas::load(&dir.join("oci-schema")))
    }

    /// Every error of `document` against `schema`, joined; `Ok` when it validates.
    pub fn check(&self, schema: Schema, document: &Value) -> Result<(), String> {
        let validator = self
            .validators
            .iter()
            .find(|(s, _)| *s == schema)
            .map(|(_, v)| v)
            .expect("every schema is compiled");
        let mut errors: Vec<String> = validator
            .iter_errors(document)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        errors.extend(go_checks(schema, document));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// The checks image-spec's Go validator (`schema/validator.go`) makes beyond the JSON schema:
/// decoding into its Go types (a descriptor's `data` is standard padded base64), go-digest's
/// `Validate` for a descriptor's digest (registered algorithms need their exact lower-case hex
/// length; unknown algorithms pass), and `KEY=VALUE` entries in a config's `Env`.
fn go_checks(schema: Schema, document: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let mut descriptors: Vec<&Value> = Vec::new();
    match schema {
        Schema::Descriptor => descriptors.push(document),
        Schema::Manifest => {
            descriptors.extend(document.get("config"));
            descriptors.extend(document.get("subject"));
            if let Some(layers) = document.get("layers").and_then(Value::as_array) {
                descriptors.extend(layers);
            }
        }
        Schema::Index => {
            descriptors.extend(document.get("subject"));
            if let Some(manifests) = document.get("manifests").and_then(Value::as_array) {
                descriptors.extend(manifests);
            }
        }
        Schema::Config => {
            let env = document.pointer("/config/Env").and_then(Value::as_array);
            for entry in env.into_iter().flatten() {
                let ok = entry
                    .as_str()
                    .and_then(|e| e.split_once('='))
                    .is_some_and(|(key, _)| !key.is_empty());
                if !ok {
                    errors.push(format!("unexpected env: {entry}"));
                }
            }
        }
        Schema::Layout => {}
    }
    for descriptor in descriptors {
        if let Some(data) = descriptor.get("data").and_then(Value::as_str)
            && !is_padded_base64(data)
        {
            errors.push(format!("data is not standard base64: {data:?}"));
        }
    }
    if schema == Schema::Descriptor
        && let Some(digest) = document.get("digest").and_then(Value::as_str)
        && let Some((algorithm, encoded)) = digest.split_once(':')
    {
        let length = match algorithm {
            "sha256" => Some(64),
            "sha384" => Some(96),
            "sha512" => Some(128),
            _ => None,
        };
        let lower_hex = encoded
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if length.is_some_and(|len| encoded.len() != len || !lower_hex) {
            errors.push(format!("invalid {algorithm} digest {digest:?}"));
        }
    }
    errors
}

fn is_padded_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    let padding = text.len() - body.len();
    text.len().is_multiple_of(4)
        && padding <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The harness agrees with the image-spec's own vectors (so a passing kiln document means
/// something): every vector that must validate does, every one that must fail does.
#[test]
fn oci_schema_vectors() {
    let Some(dir) = conformance_dir() else {
        return;
    };
    let dir = dir.join("oci-schema");
    let schemas = Schemas::load(&dir);
    let lines = std::fs::read_to_string(dir.join("vectors.jsonl")).expect("vectors.jsonl");
    let mut failures = Vec::new();
    let mut ran = 0;
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).expect("vector line");
        let file = case["file"].as_str().expect("file");
        let validator = case["validator"].as_str().expect("validator");
        let expect_fail = case["expect_fail"].as_bool().expect("expect_fail");
        let Some(schema) = Schema::for_vector(validator) else {
            failures.push(format!("{file}: unknown validator {validator}"));
            continue;
        };
        ran += 1;
        let text = std::fs::read_to_string(dir.join("vectors").join(file)).expect("vector file");
        let outcome = match serde_json::from_str::<Value>(&text) {
            Ok(document) => schemas.check(schema, &document),
            Err(err) => Err(format!("invalid JSON: {err}")),
        };
        match (expect_fail, outcome) {
            (false, Err(err)) => failures.push(format!("{file}: should validate: {err}")),
            (true, Ok(())) => failures.push(format!("{file}: should fail ({})", case["comment"])),
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(ran, 82, "every vector runs");
}
