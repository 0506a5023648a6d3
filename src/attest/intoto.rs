//! in-toto statements (<https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md>)
//! as BuildKit writes them into attestation manifests: `_type` `https://in-toto.io/Statement/v1`,
//! one subject per image name (its `pkg:docker/…?platform=…` package URL) with the image
//! manifest's digest, the predicate's type and the predicate.

use crate::oci::reference::Reference;
use crate::oci::{Digest, Platform};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

/// The statement type BuildKit v0.32 writes (in-toto-golang's `StatementInTotoV1`).
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// The media type of a statement stored as a layer of an attestation manifest.
pub const MEDIA_TYPE: &str = crate::oci::media_type::IN_TOTO;
/// The layer annotation that names a statement's predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// An SPDX SBOM's predicate type.
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";

/// One artifact a statement is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// A package URL such as `pkg:docker/app@latest?platform=linux%2Famd64`.
    pub name: String,
    pub digest: Digest,
}

/// An in-toto statement: what it says (`predicate`, of `predicate_type`) about which artifacts.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub predicate_type: String,
    pub subjects: Vec<Subject>,
    pub predicate: Value,
}

impl Statement {
    /// The statement as JSON (`_type`, `predicateType`, `subject`, `predicate`).
    pub fn to_json(&self) -> Value {
        let subjects: Vec<Value> = self
            .subjects
            .iter()
            .map(|s| json!({ "name": s.name, "digest": digest_set(&s.digest) }))
            .collect();
        let mut statement = Map::new();
        statement.insert("_type".into(), json!(STATEMENT_V1));
        statement.insert("predicateType".into(), json!(self.predicate_type));
        statement.insert("subject".into(), Value::Array(subjects));
        statement.insert("predicate".into(), self.predicate.clone());
        Value::Object(statement)
    }

    /// The bytes stored as the attestation layer.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A `Value` always serialises.
        serde_json::to_vec(&self.to_json()).unwrap_or_default()
    }
}

/// A digest as an in-toto digest set: `{"sha256": "<hex>"}`.
pub fn digest_set(digest: &Digest) -> Value {
    let mut set = Map::new();
    set.insert(digest.algorithm().to_string(), json!(digest.hex()));
    Value::Object(set)
}

/// Characters a package URL's segments and qualifier values keep as they are (packageurl-go's
/// escaping, which BuildKit's names show: `127.0.0.1%3A5000`, `linux%2Famd64`, `sha256%3A…`);
/// everything else is percent-encoded.
const PURL_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The package URL BuildKit names an image reference by (its `purl.RefToPURL`):
/// `pkg:docker/<familiar namespace>/<name>@<tag>?digest=…&platform=…` (`purl_type` `docker`, or
/// `oci` for an image from a local layout). A reference without tag or digest gets `latest`.
pub fn image_purl(purl_type: &str, reference: &Reference, platform: Option<&Platform>) -> String {
    let familiar = familiar_name(reference);
    let (namespace, name) = match familiar.rsplit_once('/') {
        Some((namespace, name)) => (Some(namespace), name),
        None => (None, familiar.as_str()),
    };
    let mut purl = format!("pkg:{purl_type}/");
    if let Some(namespace) = namespace {
        for segment in namespace.split('/') {
            purl.push_str(&utf8_percent_encode(segment, PURL_KEEP).to_string());
            purl.push('/');
        }
    }
    purl.push_str(&utf8_percent_encode(name, PURL_KEEP).to_string());
    let tag = match (reference.tag(), reference.digest()) {
        (Some(tag), _) => Some(tag),
        (None, None) => Some("latest"),
        (None, Some(_)) => None,
    };
    if let Some(tag) = tag {
        purl.push('@');
        purl.push_str(&utf8_percent_encode(tag, PURL_KEEP).to_string());
    }
    let mut qualifiers = Vec::new();
    if let Some(digest) = reference.digest() {
        qualifiers.push(format!("digest={}", utf8_percent_encode(digest, PURL_KEEP)));
    }
    if let Some(platform) = platform {
        qualifiers.push(format!(
            "platform={}",
            utf8_percent_encode(&platform.normalized().to_string(), PURL_KEEP)
        ));
    }
    if !qualifiers.is_empty() {
        purl.push('?');
        purl.push_str(&qualifiers.join("&"));
    }
    purl
}

/// distribution's `FamiliarName`: Docker Hub's registry and `library/` left out.
fn familiar_name(reference: &Reference) -> String {
    if reference.domain() == crate::oci::reference::DEFAULT_DOMAIN {
        let path = reference.path();
        return path
            .strip_prefix("library/")
            .filter(|rest| !rest.contains('/'))
            .unwrap_or(path)
            .to_string();
    }
    format!("{}/{}", reference.domain(), reference.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purl(reference: &str, platform: Option<&str>) -> String {
        let reference = Reference::parse_normalized(reference).unwrap();
        let platform = platform.map(|p| Platform::parse(p).unwrap());
        image_purl("docker", &reference, platform.as_ref())
    }

    #[test]
    fn image_purls_are_buildkits() {
        assert_eq!(
            purl("alpine", Some("linux/amd64")),
            "pkg:docker/alpine@latest?platform=linux%2Famd64"
        );
        assert_eq!(
            purl("docker.io/library/debian:bookworm", Some("linux/arm/v7")),
            "pkg:docker/debian@bookworm?platform=linux%2Farm%2Fv7"
        );
        assert_eq!(purl("user/app:1", None), "pkg:docker/user/app@1");
        assert_eq!(
            purl("127.0.0.1:5000/team/app:v2", Some("linux/amd64")),
            "pkg:docker/127.0.0.1%3A5000/team/app@v2?platform=linux%2Famd64"
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            purl(&format!("alpine@{digest}"), None),
            format!("pkg:docker/alpine?digest=sha256%3A{}", "a".repeat(64))
        );
    }

    #[test]
    fn a_statement_is_in_totos_v1() {
        let digest = Digest::of(b"manifest");
        let statement = Statement {
            predicate_type: PREDICATE_SPDX.to_string(),
            subjects: vec![Subject {
                name: "pkg:docker/app@latest".to_string(),
                digest: digest.clone(),
            }],
            predicate: json!({"spdxVersion": "SPDX-2.3"}),
        };
        let value: Value = serde_json::from_slice(&statement.to_bytes()).unwrap();
        assert_eq!(value["_type"], STATEMENT_V1);
        assert_eq!(value["predicateType"], PREDICATE_SPDX);
        assert_eq!(value["subject"][0]["digest"]["sha256"], digest.hex());
        assert_eq!(value["predicate"]["spdxVersion"], "SPDX-2.3");
    }
}
