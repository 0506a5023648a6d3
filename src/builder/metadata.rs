//! `--metadata-file`: the build result's metadata as `docker buildx build` writes it, which is
//! BuildKit's exporter response with its JSON values decoded (buildx's
//! `decodeExporterResponse`):
//!
//! - `containerimage.descriptor`: the descriptor of what the build made (its manifest, with
//!   the platform, or a multi-platform build's index), annotations included when it has some;
//! - `containerimage.digest`: that digest; `containerimage.config.digest`: the image config's
//!   digest (the image ID; an index has none, as in BuildKit);
//! - `image.name`: the names, comma-separated, when the image has some;
//! - `cache.manifest`: with `--cache-to`, the descriptor of the cache manifest written (BuildKit
//!   returns it as a JSON string, which buildx cannot decode further and writes as a string;
//!   with several `--cache-to`, the last one's, as the response map keeps one);
//! - anything another part of the build adds with [`BuildMetadata::add_fields`]
//!   (`buildx.build.provenance`).
//!
//! Left out: `buildx.build.ref` (the builder/node/ref of buildx's build history, which kiln has
//! no equivalent of) and `buildx.build.warnings` (buildx writes it only when
//! `BUILDX_METADATA_WARNINGS` is set).

use super::BuildOutput;
use crate::oci::Platform;
use crate::store::{CONTAINERD_NAME, REF_NAME, StoredImage, TAGGED_AT, config_platform};
use oci_spec::image::Descriptor;
use serde_json::{Map, Value, json};

/// The metadata of one build, field by field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BuildMetadata {
    fields: Map<String, Value>,
}

impl BuildMetadata {
    /// The metadata of `output`, named `names` (as given: the tags and the image exports'
    /// names, each once).
    pub fn of(output: &BuildOutput, names: &[String]) -> BuildMetadata {
        let mut fields = Map::new();
        let descriptor = match &output.index {
            Some(index) => descriptor_json(&index.descriptor, None),
            None => {
                fields.insert(
                    "containerimage.config.digest".into(),
                    json!(output.image.id.to_string()),
                );
                descriptor_json(
                    &output.image.manifest_descriptor,
                    platform_of(&output.image),
                )
            }
        };
        fields.insert("containerimage.digest".into(), descriptor["digest"].clone());
        fields.insert("containerimage.descriptor".into(), descriptor);
        if !names.is_empty() {
            fields.insert("image.name".into(), json!(names.join(",")));
        }
        if let Some((media_type, digest, size)) = output.cache_manifests.last() {
            let cache = json!({
                "mediaType": media_type,
                "digest": digest.to_string(),
                "size": size,
            });
            fields.insert("cache.manifest".into(), json!(cache.to_string()));
        }
        BuildMetadata { fields }
    }

    /// Makes `containerimage.digest` and `containerimage.descriptor` name `exported`, the image
    /// as an export pushed it or wrote it into an archive (in another compression or media
    /// types than the store's, it has another digest), as BuildKit's response names the image
    /// its exporter wrote. The
    /// descriptor keeps its platform and annotations.
    pub fn set_exported(&mut self, exported: &Descriptor) {
        let digest = json!(exported.digest().to_string());
        if let Some(Value::Object(descriptor)) = self.fields.get_mut("containerimage.descriptor") {
            descriptor.insert("mediaType".into(), json!(exported.media_type().to_string()));
            descriptor.insert("digest".into(), digest.clone());
            descriptor.insert("size".into(), json!(exported.size()));
        } else {
            self.fields.insert(
                "containerimage.descriptor".into(),
                descriptor_json(exported, None),
            );
        }
        self.fields.insert("containerimage.digest".into(), digest);
    }

    /// Adds fields another part of the build makes (the provenance's
    /// `buildx.build.provenance`); a field of the same name is replaced.
    pub fn add_fields(&mut self, extra: Map<String, Value>) {
        self.fields.extend(extra);
    }

    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The file's bytes: indented by two spaces, keys sorted, as buildx writes it.
    pub fn to_json(&self) -> Vec<u8> {
        // A map of JSON values always serialises.
        serde_json::to_vec_pretty(&self.fields).unwrap_or_default()
    }
}

/// The platform a single-platform image's descriptor carries (BuildKit sets the one it built).
fn platform_of(image: &StoredImage) -> Option<Platform> {
    config_platform(&image.config_bytes)
}

/// A descriptor as BuildKit's response has it: media type, digest, size, its annotations when
/// it has some (the store's own naming annotations are not the image's), and its platform.
fn descriptor_json(descriptor: &Descriptor, platform: Option<Platform>) -> Value {
    let mut out = Map::new();
    out.insert(
        "mediaType".into(),
        json!(descriptor.media_type().to_string()),
    );
    out.insert("digest".into(), json!(descriptor.digest().to_string()));
    out.insert("size".into(), json!(descriptor.size()));
    let annotations: Map<String, Value> = descriptor
        .annotations()
        .iter()
        .flatten()
        .filter(|(key, _)| ![REF_NAME, CONTAINERD_NAME, TAGGED_AT].contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), json!(value)))
        .collect();
    if !annotations.is_empty() {
        out.insert("annotations".into(), Value::Object(annotations));
    }
    if let Some(platform) = platform {
        let mut shown = Map::new();
        shown.insert("architecture".into(), json!(platform.architecture));
        shown.insert("os".into(), json!(platform.os));
        if let Some(variant) = platform.variant {
            shown.insert("variant".into(), json!(variant));
        }
        out.insert("platform".into(), Value::Object(shown));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{Digest as OciDigest, MediaType};
    use std::str::FromStr as _;

    #[test]
    fn a_descriptor_keeps_its_own_annotations_only() {
        let digest = OciDigest::from_str(&format!("sha256:{}", "b".repeat(64))).unwrap();
        let mut descriptor = Descriptor::new(MediaType::ImageManifest, 9, digest);
        descriptor.set_annotations(Some(
            [
                (REF_NAME.to_string(), "x:1".to_string()),
                (TAGGED_AT.to_string(), "now".to_string()),
                ("org.d".to_string(), "2".to_string()),
            ]
            .into_iter()
            .collect(),
        ));
        let shown = descriptor_json(&descriptor, Some(Platform::new("linux", "arm", Some("v7"))));
        assert_eq!(
            shown,
            json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", "b".repeat(64)),
                "size": 9,
                "annotations": {"org.d": "2"},
                "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
            })
        );
        descriptor.set_annotations(None);
        assert_eq!(descriptor_json(&descriptor, None).get("annotations"), None);
    }

    #[test]
    fn an_exported_image_replaces_the_stored_digest_keeping_platform_and_annotations() {
        let digest = |c: &str| OciDigest::from_str(&format!("sha256:{}", c.repeat(64))).unwrap();
        let mut stored = Descriptor::new(MediaType::ImageManifest, 9, digest("a"));
        stored.set_annotations(Some(
            [("org.d".to_string(), "2".to_string())]
                .into_iter()
                .collect(),
        ));
        let mut metadata = BuildMetadata::default();
        metadata.fields.insert(
            "containerimage.descriptor".into(),
            descriptor_json(&stored, Some(Platform::new("linux", "amd64", None))),
        );
        let pushed = Descriptor::new(MediaType::ImageManifest, 12, digest("c"));
        metadata.set_exported(&pushed);
        assert_eq!(
            metadata.fields()["containerimage.digest"],
            json!(format!("sha256:{}", "c".repeat(64)))
        );
        assert_eq!(
            metadata.fields()["containerimage.descriptor"],
            json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", "c".repeat(64)),
                "size": 12,
                "annotations": {"org.d": "2"},
                "platform": {"architecture": "amd64", "os": "linux"},
            })
        );
    }

    #[test]
    fn an_archived_index_replaces_the_stored_one_and_takes_no_platform() {
        let digest = |c: &str| OciDigest::from_str(&format!("sha256:{}", c.repeat(64))).unwrap();
        let mut stored = Descriptor::new(MediaType::ImageIndex, 700, digest("a"));
        stored.set_annotations(Some(
            [("org.idx".to_string(), "i".to_string())]
                .into_iter()
                .collect(),
        ));
        let mut metadata = BuildMetadata::default();
        metadata.fields.insert(
            "containerimage.descriptor".into(),
            descriptor_json(&stored, None),
        );
        // The index as a zstd archive export wrote it: its children were rewritten.
        metadata.set_exported(&Descriptor::new(MediaType::ImageIndex, 712, digest("d")));
        assert_eq!(
            metadata.fields()["containerimage.descriptor"],
            json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{}", "d".repeat(64)),
                "size": 712,
                "annotations": {"org.idx": "i"},
            })
        );
        assert_eq!(
            metadata.fields()["containerimage.digest"],
            json!(format!("sha256:{}", "d".repeat(64)))
        );
        assert_eq!(metadata.fields().get("containerimage.config.digest"), None);
    }

    #[test]
    fn extra_fields_join_and_replace() {
        let mut metadata = BuildMetadata::default();
        let mut extra = Map::new();
        extra.insert("buildx.build.provenance".into(), json!({"builder": {}}));
        metadata.add_fields(extra);
        let text = String::from_utf8(metadata.to_json()).unwrap();
        assert_eq!(
            text,
            "{\n  \"buildx.build.provenance\": {\n    \"builder\": {}\n  }\n}"
        );
    }
}
