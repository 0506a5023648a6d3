//! Exporting a built image, as `docker buildx build --output` and `--push` do: the `--output`
//! spec as buildx writes it (`type=docker|oci|tar|local|registry,dest=PATH,name=REF`, or a bare
//! path for `type=local`), and [`export_image`], which writes one export of an image in the
//! store. A build system calling [`super::build`] exports the result with the same code the CLI
//! uses.
//!
//! - `type=docker` and `type=oci`: [`crate::archive::save`]'s archive (`docker save`'s, or an
//!   OCI image layout tar); `dest=-` is standard output.
//! - `type=tar`: the flattened root filesystem as one tar ([`crate::archive::export_rootfs`]);
//!   `type=local`: the same into a directory ([`crate::archive::export_to_dir`]).
//! - `type=registry,name=REF` (and `--push`, once per tag): [`crate::registry::push`].
//!
//! A file destination appears whole only on success; a device, FIFO or socket already at the
//! path is written in place ([`crate::archive::Output`]).
//!
//! An image of a multi-platform build (read through its index) is exported whole, as BuildKit's
//! exporters do: `type=oci` and the push write the index with every platform's image,
//! `type=tar` and `type=local` one directory per platform (`linux_amd64/`), and `type=docker`
//! refuses it (BuildKit: "docker exporter does not currently support exporting manifest
//! lists").

use crate::archive::{self, ArchiveError, DEFAULT_MAX_BYTES, Output, OutputError, SaveFormat};
use crate::layer::{ExportFormat, FormatOptionError};
use crate::oci::reference::{Reference, ReferenceError};
use crate::oci::{Digest, Platform};
use crate::registry::{
    Client, ClientOptions, PushFormat, RegistryError, TransferProgress, push_with,
};
use crate::store::{Store, StoreError, StoredEntry, StoredImage, is_manifest};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where an archive export writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `dest=-`.
    Stdout,
    Path(PathBuf),
}

impl Destination {
    /// `-` is standard output, anything else a path.
    fn parse(dest: &str) -> Destination {
        match dest {
            "-" => Destination::Stdout,
            path => Destination::Path(PathBuf::from(path)),
        }
    }

    fn path(&self) -> Option<&Path> {
        match self {
            Destination::Stdout => None,
            Destination::Path(path) => Some(path),
        }
    }
}

/// One `--output` export of a built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// `type=docker`: `docker save`'s archive.
    Docker(Destination),
    /// `type=oci`: an OCI image layout as a tar.
    Oci(Destination),
    /// `type=tar`: the flattened root filesystem as one tar.
    Tar(Destination),
    /// `type=local` (or a bare path): the flattened root filesystem in a directory, created
    /// when missing.
    Local(PathBuf),
    /// `type=registry,name=REF`: pushed to a registry (the name is checked when pushing).
    Registry(String),
    /// `type=image[,name=REF][,push=true]`: the image in the store (every build's is), tagged
    /// `name=` when given, and pushed there with `push=true`.
    Image { name: Option<String>, push: bool },
}

/// One `--output` spec: the export, and what it asks of the image the build writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub export: Export,
    /// `rewrite-timestamp=true` on an image export (`image`, `docker`, `oci`, `registry`):
    /// BuildKit's option to clamp the new layers' file times to `SOURCE_DATE_EPOCH`
    /// ([`super::timestamps`]). kiln writes one image for all of a build's outputs, so it is
    /// rewritten when any image export asks. `local` and `tar` take the option and ignore it,
    /// as BuildKit's do.
    pub rewrite_timestamp: bool,
    /// `compression=`, `compression-level=`, `force-compression=`, `oci-mediatypes=` of an
    /// image export ([`ExportFormat`]; gzip by default, as BuildKit's). `local` and `tar` take
    /// them and write no layers, as BuildKit's do.
    pub format: ExportFormat,
}

/// Why an `--output` spec is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportSpecError {
    #[error("invalid --output {spec:?}: unknown field {field:?}; write type=TYPE,dest=PATH")]
    UnknownField { spec: String, field: String },
    #[error("invalid --output {spec:?}: {what} needs name=REF")]
    NoName { spec: String, what: &'static str },
    #[error("invalid --output {spec:?}: no dest=PATH")]
    NoDest { spec: String },
    #[error(
        "invalid --output {spec:?}: unknown type {kind:?}; use docker, oci, tar, local, image or \
         registry"
    )]
    UnknownType { spec: String, kind: String },
    #[error("invalid --output {spec:?}: {field} takes true or false, not {value:?}")]
    NotABool {
        spec: String,
        field: String,
        value: String,
    },
    #[error("invalid --output {spec:?}")]
    Format {
        spec: String,
        #[source]
        source: FormatOptionError,
    },
}

impl FromStr for Export {
    type Err = ExportSpecError;

    /// The export of an `--output` spec ([`OutputSpec`]).
    fn from_str(spec: &str) -> Result<Export, ExportSpecError> {
        spec.parse::<OutputSpec>().map(|output| output.export)
    }
}

impl FromStr for OutputSpec {
    type Err = ExportSpecError;

    /// Parses `type=docker,dest=out.tar` (buildx's `--output` syntax; a bare path is `local`),
    /// with `rewrite-timestamp=BOOL` on any type and `push=BOOL` on `type=image`.
    fn from_str(spec: &str) -> Result<OutputSpec, ExportSpecError> {
        if !spec.contains('=') {
            return Ok(OutputSpec {
                export: Export::Local(PathBuf::from(spec)),
                rewrite_timestamp: false,
                format: ExportFormat::default(),
            });
        }
        let mut kind = None;
        let mut dest = None;
        let mut name = None;
        let mut rewrite_timestamp = false;
        let mut push = None;
        let mut format = ExportFormat::default();
        let format_error = |source| ExportSpecError::Format {
            spec: spec.to_string(),
            source,
        };
        let boolean = |field: &str, value: &str| {
            parse_bool(value).ok_or_else(|| ExportSpecError::NotABool {
                spec: spec.to_string(),
                field: field.to_string(),
                value: value.to_string(),
            })
        };
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("type", value)) => kind = Some(value),
                Some(("dest", value)) => dest = Some(value),
                Some(("name", value)) => name = Some(value),
                Some(("rewrite-timestamp", value)) => {
                    rewrite_timestamp = boolean("rewrite-timestamp", value)?;
                }
                Some(("push", value)) => push = Some((field, boolean("push", value)?)),
                Some((key, value)) if ExportFormat::KEYS.contains(&key) => {
                    format.set(key, value).map_err(format_error)?;
                }
                _ => {
                    return Err(ExportSpecError::UnknownField {
                        spec: spec.to_string(),
                        field: field.to_string(),
                    });
                }
            }
        }
        format.validate().map_err(format_error)?;
        let name = name.filter(|n| !n.is_empty());
        let push = match push {
            Some((_, push)) if kind == Some("image") => push,
            Some((field, _)) => {
                return Err(ExportSpecError::UnknownField {
                    spec: spec.to_string(),
                    field: field.to_string(),
                });
            }
            None => false,
        };
        let export = match kind {
            Some("registry") => match name {
                Some(name) => Export::Registry(name.to_string()),
                None => {
                    return Err(ExportSpecError::NoName {
                        spec: spec.to_string(),
                        what: "type=registry",
                    });
                }
            },
            Some("image") => {
                if push && name.is_none() {
                    return Err(ExportSpecError::NoName {
                        spec: spec.to_string(),
                        what: "push=true",
                    });
                }
                Export::Image {
                    name: name.map(str::to_string),
                    push,
                }
            }
            _ => {
                let Some(dest) = dest else {
                    return Err(ExportSpecError::NoDest {
                        spec: spec.to_string(),
                    });
                };
                match kind {
                    Some("docker") => Export::Docker(Destination::parse(dest)),
                    Some("oci") => Export::Oci(Destination::parse(dest)),
                    Some("tar") => Export::Tar(Destination::parse(dest)),
                    Some("local") => Export::Local(PathBuf::from(dest)),
                    other => {
                        return Err(ExportSpecError::UnknownType {
                            spec: spec.to_string(),
                            kind: other.unwrap_or("").to_string(),
                        });
                    }
                }
            }
        };
        // The root filesystem exports have no layers to rewrite (BuildKit takes the option and
        // does nothing with it there).
        let rewrite_timestamp =
            rewrite_timestamp && !matches!(export, Export::Local(_) | Export::Tar(_));
        Ok(OutputSpec {
            export,
            rewrite_timestamp,
            format,
        })
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it (BuildKit's exporter options).
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// How exports are written.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// How the registry client of a push behaves (insecure registries, credentials,
    /// parallelism).
    pub registry: ClientOptions,
    /// The most uncompressed bytes one layer may hold ([`DEFAULT_MAX_BYTES`]).
    pub max_bytes: u64,
    /// `SOURCE_DATE_EPOCH` (seconds): `type=tar` gives every exported file this time (BuildKit's
    /// tar exporter sets each file's `ModTime` to the epoch; so does its local exporter, which
    /// kiln's `type=local` does not do yet: it writes into a directory that may hold the user's
    /// own files).
    pub source_date_epoch: Option<i64>,
    /// The layers' compression and the media types of an image export (its `-o` options).
    pub format: ExportFormat,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            registry: ClientOptions::default(),
            max_bytes: DEFAULT_MAX_BYTES,
            source_date_epoch: None,
            format: ExportFormat::default(),
        }
    }
}

impl ExportOptions {
    /// The push or archive format of these options. `oci_default` is the exporter's default
    /// for `oci-mediatypes`: BuildKit's `type=oci` writes OCI types; its other image exporters
    /// write OCI types when attestations are attached (which buildx attaches by default) and
    /// Docker's otherwise, where kiln keeps the image's own (kiln builds OCI images).
    fn push_format(&self, oci_default: Option<bool>) -> PushFormat {
        PushFormat {
            max_bytes: self.max_bytes,
            ..PushFormat::of_export(&self.format, oci_default)
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exported {
    /// A `type=docker` or `type=oci` archive.
    Archive,
    /// A `type=tar` or `type=local` root filesystem.
    Rootfs(archive::Exported),
    /// A `type=image` without a push: the image is in the store (tagged when named).
    Stored,
    /// A `type=registry` push: where to, and the pushed manifest's digest.
    Pushed {
        reference: Reference,
        digest: Digest,
    },
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The destination could not be opened or completed.
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("cannot save the image as an archive")]
    Save(#[source] ArchiveError),
    #[error("cannot export the image's root filesystem")]
    Rootfs(#[source] ArchiveError),
    #[error("invalid reference {name:?}")]
    Reference {
        name: String,
        #[source]
        source: ReferenceError,
    },
    #[error("cannot tag the image {name}")]
    Tag {
        name: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("cannot start the registry client's threads")]
    Runtime(#[source] std::io::Error),
    /// BuildKit's docker exporter refuses a multi-platform result too.
    #[error(
        "docker exporter does not currently support exporting manifest lists: the build made \
         images for {}; use type=oci, or build one platform",
        .platforms.join(", ")
    )]
    DockerMultiPlatform { platforms: Vec<String> },
    #[error("cannot read the multi-platform image {digest}")]
    Index {
        digest: Digest,
        #[source]
        source: StoreError,
    },
    #[error("cannot push {reference}")]
    Push {
        reference: Reference,
        #[source]
        source: Box<RegistryError>,
    },
}

/// Writes one export of `image`. A push reports its blobs to `progress` (the other exports
/// report nothing). Blocks (a push drives its own async runtime): call it from outside one.
pub fn export_image(
    store: &Store,
    image: &StoredImage,
    export: &Export,
    options: &ExportOptions,
    progress: &dyn TransferProgress,
) -> Result<Exported, ExportError> {
    if let Some(digest) = &image.index {
        return export_platforms(store, image, digest, export, options, progress);
    }
    match export {
        Export::Docker(dest) => save(store, image, SaveFormat::Docker, dest, options),
        Export::Oci(dest) => save(store, image, SaveFormat::Oci, dest, options),
        Export::Tar(dest) => {
            let mut out = Output::open(dest.path())?;
            let exported = archive::export_rootfs(
                store,
                image,
                out.writer(),
                options.max_bytes,
                options.source_date_epoch,
            )
            .map_err(ExportError::Rootfs)?;
            out.finish()?;
            Ok(Exported::Rootfs(exported))
        }
        Export::Local(dir) => archive::export_to_dir(store, image, dir, options.max_bytes)
            .map(Exported::Rootfs)
            .map_err(ExportError::Rootfs),
        Export::Registry(name) => push_image(store, image, name, options, progress),
        Export::Image { name: None, .. } => Ok(Exported::Stored),
        Export::Image {
            name: Some(name),
            push,
        } => tag_image(
            store,
            image,
            &image.manifest_descriptor,
            name,
            *push,
            options,
            progress,
        ),
    }
}

/// `-o type=image,name=NAME[,push=true]`: tags `descriptor` (the image's manifest, or a
/// multi-platform build's index) as NAME, then pushes it when asked.
fn tag_image(
    store: &Store,
    image: &StoredImage,
    descriptor: &oci_spec::image::Descriptor,
    name: &str,
    push: bool,
    options: &ExportOptions,
    progress: &dyn TransferProgress,
) -> Result<Exported, ExportError> {
    store
        .tag(name, descriptor)
        .map_err(|source| ExportError::Tag {
            name: name.to_string(),
            source,
        })?;
    if push {
        return push_image(store, image, name, options, progress);
    }
    Ok(Exported::Stored)
}

/// [`export_image`] of a multi-platform image, `image` being one of it and `digest` its index.
fn export_platforms(
    store: &Store,
    image: &StoredImage,
    digest: &Digest,
    export: &Export,
    options: &ExportOptions,
    progress: &dyn TransferProgress,
) -> Result<Exported, ExportError> {
    let index_error = |source| ExportError::Index {
        digest: digest.clone(),
        source,
    };
    let index = match store
        .resolve_entry(&digest.to_string())
        .map_err(index_error)?
    {
        StoredEntry::Index(index) => index,
        StoredEntry::Image(_) => {
            return Err(index_error(StoreError::NotFound(digest.to_string())));
        }
    };
    let mut images: Vec<(Platform, StoredImage)> = Vec::new();
    for child in index
        .manifests
        .iter()
        .filter(|m| m.present && is_manifest(m.descriptor.media_type()))
    {
        let platform = child.platform.clone().unwrap_or_else(Platform::host);
        images.push((
            platform,
            store.index_image(&index, child).map_err(index_error)?,
        ));
    }
    match export {
        Export::Docker(_) => Err(ExportError::DockerMultiPlatform {
            platforms: images.iter().map(|(p, _)| p.to_string()).collect(),
        }),
        Export::Oci(dest) => save(store, image, SaveFormat::Oci, dest, options),
        Export::Tar(dest) => {
            let mut out = Output::open(dest.path())?;
            let exported = archive::export_rootfs_platforms(
                store,
                &images,
                out.writer(),
                options.max_bytes,
                options.source_date_epoch,
            )
            .map_err(ExportError::Rootfs)?;
            out.finish()?;
            Ok(Exported::Rootfs(exported))
        }
        Export::Local(dir) => {
            archive::export_to_dir_platforms(store, &images, dir, options.max_bytes)
                .map(Exported::Rootfs)
                .map_err(ExportError::Rootfs)
        }
        Export::Registry(name) => push_image(store, image, name, options, progress),
        Export::Image { name: None, .. } => Ok(Exported::Stored),
        // The index is what is tagged (and pushed), as a multi-platform build's tags name it.
        Export::Image {
            name: Some(name),
            push,
        } => tag_image(
            store,
            image,
            &index.descriptor,
            name,
            *push,
            options,
            progress,
        ),
    }
}

/// What names the image (a multi-platform one: its index) in the store: its ID when it has
/// no names.
fn source_of(image: &StoredImage) -> String {
    image.index.as_ref().unwrap_or(&image.id).to_string()
}

/// The image as an archive: under its names when it has some, else by its ID (untagged).
fn save(
    store: &Store,
    image: &StoredImage,
    format: SaveFormat,
    dest: &Destination,
    options: &ExportOptions,
) -> Result<Exported, ExportError> {
    let names: Vec<String> = if image.names.is_empty() {
        vec![source_of(image)]
    } else {
        image.names.iter().map(|n| n.familiar()).collect()
    };
    let mut out = Output::open(dest.path())?;
    let oci_default = (format == SaveFormat::Oci).then_some(true);
    options
        .push_format(oci_default)
        .with_layer_format(|layers| {
            archive::save_in_format(
                store,
                &names,
                format,
                None,
                Some(layers),
                out.writer(),
                options.max_bytes,
            )
        })
        .map_err(ExportError::Save)?;
    out.finish()?;
    Ok(Exported::Archive)
}

/// Pushes the image by its ID (so an untagged one works too) to `name`.
fn push_image(
    store: &Store,
    image: &StoredImage,
    name: &str,
    options: &ExportOptions,
    progress: &dyn TransferProgress,
) -> Result<Exported, ExportError> {
    let reference = Reference::parse_normalized(name)
        .map_err(|source| ExportError::Reference {
            name: name.to_string(),
            source,
        })?
        .with_default_tag();
    let failed = |source| ExportError::Push {
        reference: reference.clone(),
        source: Box::new(source),
    };
    let client = Client::new(options.registry.clone()).map_err(failed)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ExportError::Runtime)?;
    let source = source_of(image);
    let digest = runtime
        .block_on(push_with(
            &client,
            store,
            &source,
            &reference,
            &options.push_format(None),
            &crate::cache::remote::origins(),
            progress,
        ))
        .map_err(failed)?;
    Ok(Exported::Pushed { reference, digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs_parse_as_buildx_writes_them() {
        let path = |p: &str| Destination::Path(PathBuf::from(p));
        let cases = [
            ("out", Ok(Export::Local(PathBuf::from("out")))),
            (
                "type=local,dest=dir",
                Ok(Export::Local(PathBuf::from("dir"))),
            ),
            ("type=docker,dest=a.tar", Ok(Export::Docker(path("a.tar")))),
            ("type=oci,dest=-", Ok(Export::Oci(Destination::Stdout))),
            ("dest=r.tar,type=tar", Ok(Export::Tar(path("r.tar")))),
            (
                "type=registry,name=host/app:1",
                Ok(Export::Registry("host/app:1".to_string())),
            ),
            (
                "type=docker,dest=a.tar,compression=zstd",
                Ok(Export::Docker(path("a.tar"))),
            ),
            (
                "type=docker,dest=a.tar,level=3",
                Err(
                    "invalid --output \"type=docker,dest=a.tar,level=3\": unknown field \
                     \"level=3\"; write type=TYPE,dest=PATH",
                ),
            ),
            (
                "type=registry,name=",
                Err("invalid --output \"type=registry,name=\": type=registry needs name=REF"),
            ),
            (
                "type=docker",
                Err("invalid --output \"type=docker\": no dest=PATH"),
            ),
            (
                "type=image,name=x:1,push=true",
                Ok(Export::Image {
                    name: Some("x:1".to_string()),
                    push: true,
                }),
            ),
            (
                "type=image,push=true",
                Err("invalid --output \"type=image,push=true\": push=true needs name=REF"),
            ),
            (
                "type=image,dest=x,push=maybe",
                Err(
                    "invalid --output \"type=image,dest=x,push=maybe\": push takes true or false, \
                     not \"maybe\"",
                ),
            ),
            (
                "dest=x",
                Err(
                    "invalid --output \"dest=x\": unknown type \"\"; use docker, oci, tar, local, \
                     image or registry",
                ),
            ),
        ];
        for (spec, expected) in cases {
            let parsed = spec.parse::<Export>().map_err(|e| e.to_string());
            assert_eq!(parsed, expected.map_err(str::to_string), "{spec}");
        }
    }

    #[test]
    fn rewrite_timestamp_is_an_image_exports_option() {
        let rewrites = |spec: &str| spec.parse::<OutputSpec>().unwrap().rewrite_timestamp;
        assert!(rewrites("type=image,name=x,rewrite-timestamp=true"));
        assert!(rewrites("type=oci,dest=o.tar,rewrite-timestamp=1"));
        assert!(rewrites("type=docker,dest=d.tar,rewrite-timestamp=True"));
        assert!(rewrites("type=registry,name=h/x,rewrite-timestamp=t"));
        assert!(!rewrites("type=oci,dest=o.tar,rewrite-timestamp=false"));
        assert!(!rewrites("type=oci,dest=o.tar"));
        // Taken, and nothing to rewrite, as BuildKit's local and tar exporters.
        assert!(!rewrites("type=local,dest=d,rewrite-timestamp=true"));
        assert!(!rewrites("type=tar,dest=t.tar,rewrite-timestamp=true"));
        let err = "type=oci,dest=o,rewrite-timestamp=yes"
            .parse::<OutputSpec>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --output \"type=oci,dest=o,rewrite-timestamp=yes\": rewrite-timestamp \
             takes true or false, not \"yes\""
        );
    }

    #[test]
    fn compression_options_are_an_image_exports_and_checked_before_the_build() {
        use crate::layer::{Compression, CompressionConfig};
        let spec = "type=image,name=x,push=true,compression=zstd,compression-level=19,\
                    force-compression=true,oci-mediatypes=false";
        let output = spec.parse::<OutputSpec>().unwrap();
        assert_eq!(
            output.format,
            ExportFormat {
                compression: CompressionConfig {
                    compression: Compression::Zstd,
                    level: Some(19),
                    force: true,
                },
                oci_media_types: Some(false),
            }
        );
        let default = "type=oci,dest=o.tar".parse::<OutputSpec>().unwrap();
        assert_eq!(default.format, ExportFormat::default());
        assert_eq!(
            default.format.compression.compression,
            Compression::Gzip,
            "BuildKit's default"
        );
        for (spec, reason) in [
            (
                "type=registry,name=h/x,compression=estargz",
                "compression=estargz is not supported by kiln",
            ),
            (
                "type=docker,dest=d.tar,compression-level=11",
                "gzip: invalid compression level: 11",
            ),
            (
                "type=oci,dest=o.tar,oci-mediatypes=maybe",
                "non-bool value maybe specified for oci-mediatypes",
            ),
        ] {
            let error = spec.parse::<OutputSpec>().unwrap_err();
            let chain = crate::error::Chain(&error).to_string();
            assert!(
                chain.starts_with(&format!("invalid --output {spec:?}: {reason}")),
                "{chain}"
            );
        }
    }
}
