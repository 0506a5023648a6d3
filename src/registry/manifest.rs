//! The documents a registry serves: image manifests and indexes in their OCI and Docker v2
//! schema 2 forms, the platforms an index lists and how one is chosen.
//!
//! Docker's schema 2 manifest and manifest list have the same structure as OCI's manifest and
//! index (the OCI spec was made from them), so one parser reads both; the bytes are kept as they
//! came, since the digest of a manifest is the digest of its exact bytes.

use crate::error::Reason;
use crate::oci::Digest;
use crate::oci::Platform;
use crate::oci::media_type::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use serde::Deserialize;

/// Docker's pre-2016 signed manifests, which kiln does not read.
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The `Accept` header of a manifest GET: every manifest and index type kiln reads.
pub fn accept_header() -> String {
    [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ]
    .join(", ")
}

/// Whether `media_type` is an index (OCI index or Docker manifest list).
pub fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// A descriptor in a manifest or index.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// The parts of a manifest or index kiln reads (unknown fields are ignored; the bytes are kept
/// elsewhere).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// A manifest or index as fetched: its media type, the parsed parts and the exact bytes.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// A single-platform image.
    Image {
        media_type: String,
        config: Descriptor,
        layers: Vec<Descriptor>,
        bytes: Vec<u8>,
    },
    /// A multi-platform index.
    Index {
        media_type: String,
        manifests: Vec<Descriptor>,
        bytes: Vec<u8>,
    },
}

impl Manifest {
    /// Parses a manifest or index. `content_type` is the HTTP `Content-Type` (the document's own
    /// `mediaType` wins when it has one; without either, the shape decides).
    pub fn parse(content_type: Option<&str>, bytes: Vec<u8>) -> Result<Manifest, Reason> {
        let header = content_type
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
            .filter(|t| !t.is_empty() && t != "application/json" && t != "text/plain");
        if let Some(t) = &header
            && DOCKER_SCHEMA1.contains(&t.as_str())
        {
            return Err(schema1());
        }
        let document: Document = serde_json::from_slice(&bytes).map_err(|err| {
            if serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("schemaVersion")?.as_u64())
                == Some(1)
            {
                schema1()
            } else {
                Reason::caused_by("it is not a manifest or index", err)
            }
        })?;
        if document.schema_version != 2 {
            return Err(match document.schema_version {
                1 => schema1(),
                other => Reason::new(format!("schemaVersion is {other}, expected 2")),
            });
        }
        let media_type = document.media_type.or(header);
        match (document.manifests, document.config, document.layers) {
            (Some(manifests), None, _) => Ok(Manifest::Index {
                media_type: media_type.unwrap_or_else(|| OCI_INDEX.to_string()),
                manifests,
                bytes,
            }),
            (None, Some(config), layers) => {
                let media_type = media_type.unwrap_or_else(|| OCI_MANIFEST.to_string());
                if is_index_type(&media_type) {
                    return Err(Reason::new(format!(
                        "its media type is {media_type} but it has no manifests"
                    )));
                }
                Ok(Manifest::Image {
                    media_type,
                    config,
                    layers: layers.unwrap_or_default(),
                    bytes,
                })
            }
            _ => Err(Reason::new(
                "it has neither config and layers (a manifest) nor manifests (an index)",
            )),
        }
    }

    /// The exact bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Manifest::Image { bytes, .. } | Manifest::Index { bytes, .. } => bytes,
        }
    }

    /// The media type.
    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Image { media_type, .. } | Manifest::Index { media_type, .. } => media_type,
        }
    }
}

fn schema1() -> Reason {
    Reason::new(
        "it is a Docker schema 1 manifest, which kiln does not read (deprecated since 2017); \
         push the image again with a current docker",
    )
}

/// The entry of an index for `platform`: the platform itself, else the newest older variant it
/// runs ([`Platform::preference`]); among equals the first (indexes list the preferred one
/// first). Attestation manifests (`unknown/unknown`, which BuildKit adds) match nothing.
pub fn choose<'a>(manifests: &'a [Descriptor], platform: &Platform) -> Option<&'a Descriptor> {
    manifests
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some(((platform.preference(d.platform.as_ref()?)?, i), d)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, d)| d)
}

/// The platforms an index offers, for an error message.
pub fn available(manifests: &[Descriptor]) -> Vec<String> {
    manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(platform: &str, byte: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.to_string(),
            digest: Digest::of(&[byte]),
            size: 10,
            platform: Some(Platform::parse(platform).unwrap()),
        }
    }

    #[test]
    fn platform_choice_from_an_index() {
        let index = [
            entry("linux/amd64", 1),
            entry("linux/arm/v6", 2),
            entry("linux/arm/v7", 3),
            entry("linux/arm64/v8", 4),
            entry("windows/amd64", 5),
        ];
        let cases = [
            ("linux/amd64", Some(1)),
            ("linux/arm/v7", Some(3)),
            ("linux/arm/v6", Some(2)),
            // `linux/arm` is `linux/arm/v7` (containerd's normalisation).
            ("linux/arm", Some(3)),
            ("linux/arm64", Some(4)),
            ("linux/arm64/v8", Some(4)),
            ("windows/amd64", Some(5)),
            ("linux/s390x", None),
            ("linux/arm/v5", None),
            ("linux/arm/v8", Some(3)),
            ("linux/amd64/v3", Some(1)),
        ];
        for (wanted, expected) in cases {
            let chosen = choose(&index, &Platform::parse(wanted).unwrap());
            assert_eq!(
                chosen.map(|d| d.digest.clone()),
                expected.map(|b| Digest::of(&[b])),
                "{wanted}"
            );
        }
        assert_eq!(
            available(&index),
            [
                "linux/amd64",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm64/v8",
                "windows/amd64"
            ]
        );
    }

    #[test]
    fn parses_docker_and_oci_documents_keeping_bytes() {
        let digest = Digest::of(b"x");
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{digest}","size":1}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{digest}","size":1}}]}}"#
        );
        let parsed = Manifest::parse(Some(OCI_MANIFEST), manifest.clone().into_bytes()).unwrap();
        assert_eq!(parsed.media_type(), DOCKER_MANIFEST);
        assert_eq!(parsed.bytes(), manifest.as_bytes());
        let Manifest::Image { layers, .. } = parsed else {
            panic!("not an image manifest");
        };
        assert_eq!(layers.len(), 1);

        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{digest}","size":1,
            "platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let parsed = Manifest::parse(Some("application/json"), index.into_bytes()).unwrap();
        assert_eq!(parsed.media_type(), OCI_INDEX);

        for (content_type, bad) in [
            (None, r#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#),
            (Some(DOCKER_SCHEMA1[1]), r#"{}"#),
            (None, r#"{"schemaVersion":2}"#),
            (None, "not json"),
            (
                Some(OCI_INDEX),
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","config":{"digest":"sha256:00","size":1}}"#,
            ),
        ] {
            assert!(
                Manifest::parse(content_type, bad.as_bytes().to_vec()).is_err(),
                "{bad}"
            );
        }
    }
}
