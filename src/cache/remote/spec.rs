//! `--cache-to` and `--cache-from` as docker buildx writes them: comma-separated `key=value`
//! fields (`type=registry,ref=R,mode=max`, `type=local,dest=DIR`), or a bare reference for
//! `type=registry`.
//!
//! kiln adds one `--cache-to` key BuildKit lacks: `cache-mounts=true|false`, whether the
//! content of the build's `RUN --mount=type=cache` directories is exported too. Without it,
//! `mode=max` exports them and `mode=min` does not.

use super::local::DEFAULT_TAG;
use crate::layer::{CompressionConfig, ExportFormat};
use std::path::PathBuf;

/// Why a `--cache-to` or `--cache-from` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid --{flag} {spec:?}: {reason}")]
pub struct SpecError {
    /// `cache-to` or `cache-from`.
    pub flag: &'static str,
    pub spec: String,
    pub reason: String,
}

/// Which records an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportMode {
    /// The steps that make the final image (the target stage's chain).
    #[default]
    Min,
    /// Every step of the build, intermediate stages too.
    Max,
}

/// Where a shared cache is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// `type=registry,ref=host/repo:tag`.
    Registry { reference: String },
    /// `type=local`: an OCI layout directory and the tag of the cache in it.
    Local { dir: PathBuf, tag: String },
}

/// A parsed `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheToSpec {
    pub location: CacheLocation,
    pub mode: ExportMode,
    /// `cache-mounts=`, when given.
    pub cache_mounts: Option<bool>,
    /// `compression=`, `compression-level=`, `force-compression=` (BuildKit's cache exporters
    /// take the image exporter's; gzip by default).
    pub compression: CompressionConfig,
}

impl CacheToSpec {
    /// Whether the export carries the cache mounts' content: `cache-mounts=` when given, else
    /// with `mode=max` only.
    pub fn exports_cache_mounts(&self) -> bool {
        self.cache_mounts.unwrap_or(self.mode == ExportMode::Max)
    }
}

/// Parses a `--cache-to` value.
pub fn parse_cache_to(spec: &str) -> Result<CacheToSpec, SpecError> {
    let fields = fields(
        "cache-to",
        spec,
        &[
            "type",
            "ref",
            "dest",
            "tag",
            "mode",
            "cache-mounts",
            "compression",
            "compression-level",
            "force-compression",
            "oci-mediatypes",
        ],
    )?;
    let mut format = ExportFormat::default();
    for key in ExportFormat::KEYS {
        if let Some(value) = fields.get(key) {
            format
                .set(key, value)
                .map_err(|err| error("cache-to", spec, err.to_string()))?;
        }
    }
    format
        .validate()
        .map_err(|err| error("cache-to", spec, err.to_string()))?;
    // The cache is an OCI image manifest (BuildKit's `image-manifest=true`, its default), which
    // BuildKit refuses with Docker media types.
    if format.oci_media_types == Some(false) {
        return Err(error(
            "cache-to",
            spec,
            "invalid configuration for remote cache, OCI mediatypes are required for \
             image-manifest cache format"
                .to_string(),
        ));
    }
    let cache_mounts = match fields.get("cache-mounts").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(error(
                "cache-to",
                spec,
                format!("cache-mounts={other:?} is not true or false"),
            ));
        }
    };
    let mode = match fields.get("mode").map(String::as_str) {
        None | Some("min") => ExportMode::Min,
        Some("max") => ExportMode::Max,
        Some(other) => {
            return Err(error(
                "cache-to",
                spec,
                format!("unknown mode {other:?}; use mode=min or mode=max"),
            ));
        }
    };
    let location = location("cache-to", spec, &fields, "dest")?;
    Ok(CacheToSpec {
        location,
        mode,
        cache_mounts,
        compression: format.compression,
    })
}

/// Parses a `--cache-from` value.
pub fn parse_cache_from(spec: &str) -> Result<CacheLocation, SpecError> {
    let fields = fields("cache-from", spec, &["type", "ref", "src", "tag"])?;
    location("cache-from", spec, &fields, "src")
}

fn error(flag: &'static str, spec: &str, reason: String) -> SpecError {
    SpecError {
        flag,
        spec: spec.to_string(),
        reason,
    }
}

/// The fields of `spec`; a value without `=` is `type=registry,ref=VALUE`.
fn fields(
    flag: &'static str,
    spec: &str,
    valid: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, SpecError> {
    let mut out = std::collections::BTreeMap::new();
    if spec.is_empty() {
        return Err(error(flag, spec, "it is empty".to_string()));
    }
    if !spec.contains('=') {
        out.insert("type".to_string(), "registry".to_string());
        out.insert("ref".to_string(), spec.to_string());
        return Ok(out);
    }
    for field in spec.split(',') {
        let Some((key, value)) = field.split_once('=') else {
            return Err(error(
                flag,
                spec,
                format!("field {field:?} is not KEY=VALUE"),
            ));
        };
        if !valid.contains(&key) {
            return Err(error(
                flag,
                spec,
                format!("unknown key {key:?}; valid keys are {}", valid.join(", ")),
            ));
        }
        if out.insert(key.to_string(), value.to_string()).is_some() {
            return Err(error(flag, spec, format!("{key} is given twice")));
        }
    }
    Ok(out)
}

/// The location the fields give; `dir_key` is `dest` or `src`.
fn location(
    flag: &'static str,
    spec: &str,
    fields: &std::collections::BTreeMap<String, String>,
    dir_key: &str,
) -> Result<CacheLocation, SpecError> {
    let get = |key: &str| fields.get(key).filter(|v| !v.is_empty());
    let refuse = |key: &str, kind: &str| -> Result<(), SpecError> {
        match fields.get(key) {
            Some(_) => Err(error(
                flag,
                spec,
                format!("{key}= does not apply to type={kind}"),
            )),
            None => Ok(()),
        }
    };
    match fields.get("type").map(String::as_str) {
        Some("registry") => {
            refuse(dir_key, "registry")?;
            refuse("tag", "registry")?;
            let reference = get("ref").ok_or_else(|| {
                error(
                    flag,
                    spec,
                    "type=registry needs ref=HOST/REPOSITORY:TAG".to_string(),
                )
            })?;
            Ok(CacheLocation::Registry {
                reference: reference.clone(),
            })
        }
        Some("local") => {
            refuse("ref", "local")?;
            let dir = get(dir_key).ok_or_else(|| {
                error(flag, spec, format!("type=local needs {dir_key}=DIRECTORY"))
            })?;
            let tag = fields.get("tag").map_or(DEFAULT_TAG, String::as_str);
            let valid_tag = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b));
            if !valid_tag {
                return Err(error(
                    flag,
                    spec,
                    format!(
                        "tag {tag:?} is not valid: use 1 to 128 letters, digits, '.', '_', \
                         '-', ':' or '/'"
                    ),
                ));
            }
            Ok(CacheLocation::Local {
                dir: PathBuf::from(dir),
                tag: tag.to_string(),
            })
        }
        Some(other) => Err(error(
            flag,
            spec,
            format!("unknown type {other:?}; valid types are registry, local"),
        )),
        None => Err(error(
            flag,
            spec,
            "no type= (valid types are registry, local)".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &str, tag: &str) -> CacheLocation {
        CacheLocation::Local {
            dir: PathBuf::from(dir),
            tag: tag.to_string(),
        }
    }

    fn registry(reference: &str) -> CacheLocation {
        CacheLocation::Registry {
            reference: reference.to_string(),
        }
    }

    #[test]
    fn cache_to_values() {
        let cases: Vec<(&str, Result<CacheToSpec, &str>)> = vec![
            (
                "type=registry,ref=localhost:5000/app:cache",
                Ok(CacheToSpec {
                    location: registry("localhost:5000/app:cache"),
                    mode: ExportMode::Min,
                    cache_mounts: None,
                    compression: CompressionConfig::default(),
                }),
            ),
            (
                "type=registry,ref=r/app,mode=max",
                Ok(CacheToSpec {
                    location: registry("r/app"),
                    mode: ExportMode::Max,
                    cache_mounts: None,
                    compression: CompressionConfig::default(),
                }),
            ),
            (
                "localhost:5000/app:cache",
                Ok(CacheToSpec {
                    location: registry("localhost:5000/app:cache"),
                    mode: ExportMode::Min,
                    cache_mounts: None,
                    compression: CompressionConfig::default(),
                }),
            ),
            (
                "type=local,dest=/mnt/cache,mode=min",
                Ok(CacheToSpec {
                    location: local("/mnt/cache", DEFAULT_TAG),
                    mode: ExportMode::Min,
                    cache_mounts: None,
                    compression: CompressionConfig::default(),
                }),
            ),
            (
                "type=local,dest=cache,tag=main",
                Ok(CacheToSpec {
                    location: local("cache", "main"),
                    mode: ExportMode::Min,
                    cache_mounts: None,
                    compression: CompressionConfig::default(),
                }),
            ),
            ("", Err("it is empty")),
            ("type=local", Err("type=local needs dest=DIRECTORY")),
            (
                "type=local,src=x",
                Err(
                    "unknown key \"src\"; valid keys are type, ref, dest, tag, mode, \
                     cache-mounts, compression, compression-level, force-compression, \
                     oci-mediatypes",
                ),
            ),
            ("type=registry", Err("type=registry needs ref=")),
            (
                "type=registry,ref=r,dest=x",
                Err("dest= does not apply to type=registry"),
            ),
            (
                "type=local,dest=x,ref=r",
                Err("ref= does not apply to type=local"),
            ),
            (
                "type=gha",
                Err("unknown type \"gha\"; valid types are registry, local"),
            ),
            ("ref=r", Err("no type=")),
            ("type=local,dest=x,mode=all", Err("unknown mode \"all\"")),
            (
                "type=local,dest=x,compression=zstd,compression-level=19,force-compression=true,\
                 oci-mediatypes=true",
                Ok(CacheToSpec {
                    location: local("x", DEFAULT_TAG),
                    mode: ExportMode::Min,
                    cache_mounts: None,
                    compression: CompressionConfig {
                        compression: crate::layer::Compression::Zstd,
                        level: Some(19),
                        force: true,
                    },
                }),
            ),
            (
                "type=registry,ref=r,compression=uncompressed",
                Ok(CacheToSpec {
                    location: registry("r"),
                    mode: ExportMode::Min,
                    cache_mounts: None,
                    compression: CompressionConfig::new(crate::layer::Compression::None),
                }),
            ),
            (
                "type=local,dest=x,compression=estargz",
                Err("compression=estargz is not supported by kiln"),
            ),
            (
                "type=local,dest=x,compression-level=10",
                Err("gzip: invalid compression level: 10"),
            ),
            (
                "type=local,dest=x,oci-mediatypes=false",
                Err("OCI mediatypes are required for image-manifest cache format"),
            ),
            ("type=local,dest=x,dest=y", Err("dest is given twice")),
            ("type=local,dest", Err("field \"dest\" is not KEY=VALUE")),
            ("type=local,dest=x,tag=a b", Err("tag \"a b\" is not valid")),
            (
                "type=local,dest=x,mode=min,cache-mounts=true",
                Ok(CacheToSpec {
                    location: local("x", DEFAULT_TAG),
                    mode: ExportMode::Min,
                    cache_mounts: Some(true),
                    compression: CompressionConfig::default(),
                }),
            ),
            (
                "type=registry,ref=r,mode=max,cache-mounts=false",
                Ok(CacheToSpec {
                    location: registry("r"),
                    mode: ExportMode::Max,
                    cache_mounts: Some(false),
                    compression: CompressionConfig::default(),
                }),
            ),
            (
                "type=local,dest=x,cache-mounts=yes",
                Err("cache-mounts=\"yes\" is not true or false"),
            ),
        ];
        let mut failures = Vec::new();
        for (spec, expected) in &cases {
            let got = parse_cache_to(spec);
            let ok = match (&got, expected) {
                (Ok(got), Ok(want)) => got == want,
                (Err(err), Err(part)) => {
                    err.to_string().contains(part)
                        && err.to_string().starts_with("invalid --cache-to")
                }
                _ => false,
            };
            if !ok {
                failures.push(format!("{spec:?}: {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 25);
        let exports = |spec: &str| parse_cache_to(spec).unwrap().exports_cache_mounts();
        assert!(!exports("type=local,dest=x"));
        assert!(!exports("type=local,dest=x,mode=min"));
        assert!(exports("type=local,dest=x,mode=max"));
        assert!(exports("type=local,dest=x,mode=min,cache-mounts=true"));
        assert!(!exports("type=local,dest=x,mode=max,cache-mounts=false"));
    }

    #[test]
    fn cache_from_values() {
        let cases: Vec<(&str, Result<CacheLocation, &str>)> = vec![
            ("type=registry,ref=r/app:cache", Ok(registry("r/app:cache"))),
            ("r/app:cache", Ok(registry("r/app:cache"))),
            (
                "type=local,src=/mnt/cache",
                Ok(local("/mnt/cache", DEFAULT_TAG)),
            ),
            (
                "type=local,src=/mnt/cache,tag=v2",
                Ok(local("/mnt/cache", "v2")),
            ),
            (
                "type=local,dest=/x",
                Err("unknown key \"dest\"; valid keys are type, ref, src, tag"),
            ),
            ("type=local,src=/x,mode=max", Err("unknown key \"mode\"")),
            ("type=local", Err("type=local needs src=DIRECTORY")),
            ("type=s3,src=x", Err("unknown type \"s3\"")),
        ];
        let mut failures = Vec::new();
        for (spec, expected) in &cases {
            let got = parse_cache_from(spec);
            let ok = match (&got, expected) {
                (Ok(got), Ok(want)) => got == want,
                (Err(err), Err(part)) => {
                    err.to_string().contains(part)
                        && err.to_string().starts_with("invalid --cache-from")
                }
                _ => false,
            };
            if !ok {
                failures.push(format!("{spec:?}: {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 8);
    }
}
