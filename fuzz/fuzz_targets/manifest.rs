//! Fuzzes the registry documents kiln reads with arbitrary bytes: `registry::Manifest::parse`
//! under each `Content-Type` a registry may send, the platform choice from a parsed index, and
//! `--platform` parsing; then the shared cache's manifest and graph parsers
//! (`cache::remote::format`). Beyond "no panic", the properties the code documents:
//! - a parsed manifest keeps its exact bytes (its digest is the digest of those bytes), an image
//!   manifest never carries an index media type, and `choose` returns an entry of the index whose
//!   platform serves the one asked for;
//! - a parsed platform prints as `os/arch[/variant]` and parses back to itself;
//! - a cache manifest and a cache graph round-trip: parse, serialize, parse gives the same value,
//!   and the manifest a parsed graph writes (what an export pushes) parses and admits the graph.
//!
//! Input layout: the first byte picks the `Content-Type`; the rest is the document. When the
//! rest holds a 0xFF byte (never in JSON, which is UTF-8), what follows it is a cache graph,
//! parsed against the cache manifest before it when that one parses, and always against a
//! manifest that lists exactly the layers the graph names (so the record checks are reached
//! without the fuzzer having to match two documents).
#![no_main]

use kiln::cache::remote::format::{
    CacheGraph, CacheManifest, GRAPH_MEDIA_TYPE, ManifestBlob, parse_manifest,
};
use kiln::oci::media_type::OCI_MANIFEST as MANIFEST_MEDIA_TYPE;
use kiln::oci::{Digest, Platform};
use kiln::registry::Manifest;
use kiln::registry::manifest::{Descriptor, available, choose, is_index_type};
use libfuzzer_sys::fuzz_target;

/// `Content-Type` headers: none, each manifest and index type (also the Docker schema 1 ones
/// kiln refuses), the generic ones registries send, and one with parameters.
const CONTENT_TYPES: [Option<&str>; 10] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/json"),
    Some("text/plain; charset=utf-8"),
    Some(" application/vnd.oci.image.index.v1+json ; charset=utf-8"),
];

/// Platforms asked of an index: with and without variants, where the arm64/v8 default applies.
const WANTED: [&str; 7] = [
    "linux/amd64",
    "linux/arm64",
    "linux/arm64/v8",
    "linux/arm/v7",
    "linux/arm",
    "windows/amd64",
    "unknown/unknown",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (document, graph) = match rest.iter().position(|&b| b == 0xff) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    registry_manifest(content_type, document);
    if let Ok(text) = std::str::from_utf8(document) {
        platform(text);
    }
    let cache_manifest = cache_manifest(document);
    if let Some(graph) = graph {
        if let Some(manifest) = &cache_manifest {
            cache_graph(graph, manifest, true);
        }
        if let Some(manifest) = listing_manifest(graph) {
            cache_graph(graph, &manifest, false);
        }
    }
});

fn registry_manifest(content_type: Option<&str>, document: &[u8]) {
    let Ok(manifest) = Manifest::parse(content_type, document.to_vec()) else {
        return;
    };
    assert_eq!(manifest.bytes(), document, "the exact bytes are kept");
    match &manifest {
        Manifest::Image { media_type, .. } => {
            assert!(!is_index_type(media_type), "an image with an index type");
        }
        Manifest::Index { manifests, .. } => {
            choices(manifests);
            let _ = available(manifests);
        }
    }
}

fn choices(manifests: &[Descriptor]) {
    let mut wanted: Vec<Platform> = WANTED
        .iter()
        .filter_map(|p| Platform::parse(p).ok())
        .collect();
    wanted.push(Platform::host());
    // Ask for the platforms the index lists too, so a match is likely.
    wanted.extend(manifests.iter().filter_map(|d| d.platform.clone()));
    for platform in &wanted {
        let Some(chosen) = choose(manifests, platform) else {
            continue;
        };
        assert!(
            manifests.iter().any(|d| std::ptr::eq(d, chosen)),
            "choose returns an entry of the index"
        );
        let offered = chosen
            .platform
            .as_ref()
            .expect("a chosen entry has a platform");
        assert_eq!(
            (&offered.os, &offered.architecture),
            (&platform.os, &platform.architecture),
            "the chosen entry is for the wanted os and architecture"
        );
    }
}

fn platform(text: &str) {
    let Ok(parsed) = Platform::parse(text) else {
        return;
    };
    let printed = parsed.to_string();
    assert_eq!(printed, printed.to_ascii_lowercase());
    let again = Platform::parse(&printed).expect("a printed platform parses");
    assert_eq!(again, parsed);
}

fn cache_manifest(document: &[u8]) -> Option<CacheManifest> {
    let manifest = parse_manifest(MANIFEST_MEDIA_TYPE, document).ok()?;
    let again = parse_manifest(MANIFEST_MEDIA_TYPE, &manifest.to_bytes())
        .expect("a parsed cache manifest parses again once serialized");
    assert_eq!(again, manifest);
    Some(manifest)
}

/// `checked`: the manifest came from `parse_manifest` (a listing manifest may name media types
/// that `parse_manifest` refuses, so the export round trip is only asserted for a checked one).
fn cache_graph(bytes: &[u8], manifest: &CacheManifest, checked: bool) {
    let Ok(graph) = CacheGraph::parse(bytes, manifest) else {
        return;
    };
    let written = graph.to_bytes();
    let again = CacheGraph::parse(&written, manifest).expect("a parsed graph parses again");
    assert_eq!(again, graph);
    assert_eq!(again.to_bytes(), written, "serializing is deterministic");
    if !checked {
        return;
    }
    // What an export of this graph pushes must import.
    let pushed = graph.manifest((&Digest::of(&written), written.len() as u64));
    let pulled = parse_manifest(MANIFEST_MEDIA_TYPE, &pushed.to_bytes())
        .expect("the manifest of a parsed graph parses");
    assert_eq!(pulled, pushed);
    let imported =
        CacheGraph::parse(&written, &pulled).expect("the graph parses under its own manifest");
    assert_eq!(imported, graph);
}

/// A cache manifest listing every well-formed layer the graph's records name (the first of each
/// digest), or `None` when the graph is not even JSON.
fn listing_manifest(graph: &[u8]) -> Option<CacheManifest> {
    let value: serde_json::Value = serde_json::from_slice(graph).ok()?;
    let mut layers: Vec<ManifestBlob> = Vec::new();
    let records = value.get("records")?.as_object()?;
    for record in records.values() {
        let Some(listed) = record.get("layers").and_then(|l| l.as_array()) else {
            continue;
        };
        for layer in listed {
            let blob = (|| {
                Some(ManifestBlob {
                    media_type: layer.get("mediaType")?.as_str()?.to_string(),
                    digest: Digest::parse(layer.get("digest")?.as_str()?).ok()?,
                    size: layer.get("size")?.as_u64()?,
                })
            })();
            if let Some(blob) = blob
                && !layers.iter().any(|l| l.digest == blob.digest)
            {
                layers.push(blob);
            }
        }
    }
    Some(CacheManifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.to_string(),
        config: ManifestBlob {
            media_type: GRAPH_MEDIA_TYPE.to_string(),
            digest: Digest::of(graph),
            size: graph.len() as u64,
        },
        layers,
    })
}
