//! OCI annotations on the documents the store writes (a build's manifest and index) and on the
//! descriptors that name them, written in a fixed order (keys sorted, as Go's JSON encoder
//! writes a map) so the same annotations always give the same digest.

use oci_spec::image::Descriptor;
use serde::Serialize;
use serde::ser::SerializeStruct as _;
use std::collections::BTreeMap;

/// The annotations of one document the store writes: in the document itself, and on the
/// descriptor that names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotated {
    pub document: BTreeMap<String, String>,
    pub descriptor: BTreeMap<String, String>,
}

/// `json` (a JSON object the store serialised, without `annotations`) with `annotations` as
/// its last member, where the OCI types (and BuildKit) write it; unchanged when there are none.
pub(crate) fn with_annotations(json: Vec<u8>, annotations: &BTreeMap<String, String>) -> Vec<u8> {
    if annotations.is_empty() {
        return json;
    }
    let Some(end) = json.iter().rposition(|&b| b == b'}') else {
        return json;
    };
    let mut out = json[..end].to_vec();
    out.extend_from_slice(b",\"annotations\":");
    // A map of strings always serialises.
    out.extend_from_slice(&serde_json::to_vec(annotations).unwrap_or_else(|_| b"{}".to_vec()));
    out.extend_from_slice(&json[end..]);
    out
}

/// `descriptor` with `annotations` added to its own.
pub(crate) fn annotate(
    mut descriptor: Descriptor,
    annotations: &BTreeMap<String, String>,
) -> Descriptor {
    if annotations.is_empty() {
        return descriptor;
    }
    let mut all = descriptor.annotations().clone().unwrap_or_default();
    all.extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
    descriptor.set_annotations(Some(all));
    descriptor
}

/// A descriptor serialised in the OCI field order with its annotations sorted (oci-spec's
/// `Descriptor` keeps them in a `HashMap`, whose order changes from run to run).
pub(crate) struct SortedDescriptor<'a>(pub &'a Descriptor);

impl Serialize for SortedDescriptor<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let annotations: Option<BTreeMap<&String, &String>> = d
            .annotations()
            .as_ref()
            .filter(|a| !a.is_empty())
            .map(|a| a.iter().collect());
        let fields = 3
            + usize::from(d.urls().is_some())
            + usize::from(annotations.is_some())
            + usize::from(d.platform().is_some())
            + usize::from(d.artifact_type().is_some())
            + usize::from(d.data().is_some());
        let mut s = serializer.serialize_struct("Descriptor", fields)?;
        s.serialize_field("mediaType", d.media_type())?;
        s.serialize_field("digest", d.digest())?;
        s.serialize_field("size", &d.size())?;
        if let Some(urls) = d.urls() {
            s.serialize_field("urls", urls)?;
        }
        if let Some(annotations) = &annotations {
            s.serialize_field("annotations", annotations)?;
        }
        if let Some(platform) = d.platform() {
            s.serialize_field("platform", platform)?;
        }
        if let Some(artifact_type) = d.artifact_type() {
            s.serialize_field("artifactType", artifact_type)?;
        }
        if let Some(data) = d.data() {
            s.serialize_field("data", data)?;
        }
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{Digest as OciDigest, MediaType};
    use std::str::FromStr as _;

    #[test]
    fn annotations_go_last_and_sorted() {
        let annotations = BTreeMap::from([
            ("z".to_string(), "1".to_string()),
            ("a".to_string(), "\"q\"".to_string()),
        ]);
        let out = with_annotations(br#"{"schemaVersion":2,"layers":[]}"#.to_vec(), &annotations);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"schemaVersion":2,"layers":[],"annotations":{"a":"\"q\"","z":"1"}}"#
        );
        let unchanged = with_annotations(b"{}".to_vec(), &BTreeMap::new());
        assert_eq!(unchanged, b"{}");
    }

    #[test]
    fn a_sorted_descriptor_serialises_the_same_every_time() {
        let digest = OciDigest::from_str(&format!("sha256:{}", "a".repeat(64))).unwrap();
        let plain = Descriptor::new(MediaType::ImageManifest, 7, digest);
        let keys = ["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"];
        let annotations = keys
            .iter()
            .map(|k| (k.to_string(), "v".to_string()))
            .collect();
        let descriptor = annotate(plain, &annotations);
        let text = serde_json::to_string(&SortedDescriptor(&descriptor)).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":7,"annotations":{{"k1":"v","k2":"v","k3":"v","k4":"v","k5":"v","k6":"v","k7":"v","k8":"v"}}}}"#,
                "a".repeat(64)
            )
        );
    }
}
