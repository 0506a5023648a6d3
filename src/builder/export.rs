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
//! - `type=image` with BuildKit's image exporter options, and `type=registry` (`type=image`
//!   with `push=true`): [`super::image_export`]; `type=docker` without `dest` (buildx's
//!   `--load`) is the image in the store, which kiln's store is.
//! - `annotation[-TYPE][[PLATFORM]].KEY=VALUE` on any image export: [`super::annotations`],
//!   written by the build into its one image.
//!
//! A file destination appears whole only on success; a device, FIFO or socket already at the
//! path is written in place ([`crate::archive::Output`]).
//!
//! An image of a multi-platform build (read through its index) is exported whole, as BuildKit's
//! exporters do: `type=oci` and the push write the index with every platform's image,
//! `type=tar` and `type=local` one directory per platform (`linux_amd64/`), and `type=docker`
//! refuses it (BuildKit: "docker exporter does not currently support exporting manifest
//! lists").

use super::annotations::{AnnotationError, Annotations};
use super::image_export::{self, ImageExport, ImageExported};
use crate::archive::{self, ArchiveError, DEFAULT_MAX_BYTES, Output, OutputError, SaveFormat};
use crate::layer::{ExportFormat, FormatOptionError};
use crate::oci::csv::{parse_go_bool, split_record};
use crate::oci::reference::{Reference, ReferenceError};
use crate::oci::{Digest, Platform};
use crate::registry::{ClientOptions, PushFormat, RegistryError, TransferProgress};
use crate::store::{ImageName, Store, StoreError, StoredEntry, StoredImage, is_manifest};
use oci_spec::image::Descriptor;
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
    /// `type=docker,dest=PATH`: `docker save`'s archive.
    Docker(ArchiveExport),
    /// `type=oci`: an OCI image layout as a tar.
    Oci(ArchiveExport),
    /// `type=tar`: the flattened root filesystem as one tar.
    Tar(Destination),
    /// `type=local` (or a bare path): the flattened root filesystem in a directory, created
    /// when missing.
    Local(PathBuf),
    /// `type=image` (BuildKit's image exporter), `type=registry` (the same with `push=true`),
    /// and `type=docker` without `dest` and `--load` (docker's image store is kiln's store):
    /// the image in the store (every build's is), tagged with its names, pushed when asked.
    Image(ImageExport),
}

/// A `type=docker` or `type=oci` archive: where it goes, and `name=`: the names the image has
/// in it (BuildKit's exporters write those; without any, the image's own tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveExport {
    pub dest: Destination,
    pub names: Vec<String>,
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
    /// `annotation[-TYPE][[PLATFORM]].KEY=VALUE` options ([`super::annotations`]); as with
    /// `rewrite-timestamp`, the one image of the build carries the annotations of all its
    /// image exports. `local` and `tar` take them and write no image.
    pub annotations: Annotations,
}

/// Why an `--output` spec is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportSpecError {
    /// An option BuildKit's exporters have and kiln does not implement.
    #[error(
        "invalid --output {spec:?}: {field:?}: BuildKit's option {key} is not supported by kiln"
    )]
    NotSupported {
        spec: String,
        field: String,
        key: String,
    },
    #[error("invalid --output {spec:?}: unknown option {field:?} for type={kind}")]
    UnknownField {
        spec: String,
        field: String,
        kind: String,
    },
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
    /// BuildKit's image writer refuses these: Docker's manifest list and descriptors have no
    /// annotations.
    #[error(
        "invalid --output {spec:?}: cannot export annotations with \"oci-mediatypes=false\" \
         ({annotation} is an index or descriptor annotation)"
    )]
    OciOnlyAnnotation { spec: String, annotation: String },
    #[error("invalid --output {spec:?}: {field:?} is not KEY=VALUE")]
    NotAPair { spec: String, field: String },
    #[error("invalid --output {spec:?}: {reason}")]
    Csv { spec: String, reason: String },
    #[error("invalid --output {spec:?}")]
    Annotation {
        spec: String,
        #[source]
        source: AnnotationError,
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

    /// Parses `type=docker,dest=out.tar` as buildx does: CSV fields (`"name=a,b"` quoted keeps
    /// its comma), keys case-folded; a bare path is `local` (`-`: a tar on standard output).
    /// `rewrite-timestamp=BOOL` and `annotation*.KEY=` on any type; BuildKit's image exporter
    /// options ([`ImageExport`]) on `image` and `registry`, and `name=` on `docker` and `oci`.
    fn from_str(spec: &str) -> Result<OutputSpec, ExportSpecError> {
        // buildx reads `--output` as one CSV record (go-csvvalue, like Go's `encoding/csv`).
        let fields = split_record(spec).map_err(|reason| ExportSpecError::Csv {
            spec: spec.to_string(),
            reason,
        })?;
        if let [only] = fields.as_slice()
            && only == spec
            && !spec.starts_with("type=")
            && !spec.contains('=')
        {
            let export = match spec {
                "-" => Export::Tar(Destination::Stdout),
                path => Export::Local(PathBuf::from(path)),
            };
            return Ok(OutputSpec {
                export,
                rewrite_timestamp: false,
                format: ExportFormat::default(),
                annotations: Annotations::default(),
            });
        }
        let mut kind = None;
        let mut dest = None;
        let mut rewrite_timestamp = false;
        let mut annotations = Annotations::default();
        let mut image = ImageExport::default();
        // The image exporter's options given, to refuse them on another type.
        let mut image_options: Vec<String> = Vec::new();
        let mut unknown = None;
        let mut format = ExportFormat::default();
        let format_error = |source| ExportSpecError::Format {
            spec: spec.to_string(),
            source,
        };
        for field in &fields {
            let Some((key, value)) = field.split_once('=') else {
                return Err(ExportSpecError::NotAPair {
                    spec: spec.to_string(),
                    field: field.clone(),
                });
            };
            let key = key.trim().to_ascii_lowercase();
            match key.as_str() {
                "type" => kind = Some(value.to_string()),
                "dest" => dest = Some(value.to_string()),
                "rewrite-timestamp" => {
                    rewrite_timestamp =
                        parse_go_bool(value).ok_or_else(|| ExportSpecError::NotABool {
                            spec: spec.to_string(),
                            field: key.clone(),
                            value: value.to_string(),
                        })?;
                }
                _ if ExportFormat::KEYS.contains(&key.as_str()) => {
                    format.set(&key, value).map_err(format_error)?;
                }
                _ => {
                    if let Some(added) = annotations.add_exporter_key(&key, value) {
                        added.map_err(|source| ExportSpecError::Annotation {
                            spec: spec.to_string(),
                            source,
                        })?;
                    } else if let Some(set) = image.set(&key, value) {
                        set.map_err(|bad| ExportSpecError::NotABool {
                            spec: spec.to_string(),
                            field: bad.key,
                            value: bad.value,
                        })?;
                        image_options.push(key);
                    } else if unknown.is_none() {
                        unknown = Some(field.clone());
                    }
                }
            }
        }
        format.validate().map_err(format_error)?;
        let kind = kind.unwrap_or_default();
        let unknown_field = |field: String| ExportSpecError::UnknownField {
            spec: spec.to_string(),
            field,
            kind: kind.clone(),
        };
        let known_type = ["docker", "oci", "tar", "local", "image", "registry"];
        if !known_type.contains(&kind.as_str()) {
            return Err(ExportSpecError::UnknownType {
                spec: spec.to_string(),
                kind,
            });
        }
        if let Some(field) = unknown {
            let key = field
                .split_once('=')
                .map_or("", |(k, _)| k)
                .trim()
                .to_ascii_lowercase();
            if NOT_SUPPORTED.contains(&key.as_str()) {
                return Err(ExportSpecError::NotSupported {
                    spec: spec.to_string(),
                    field,
                    key,
                });
            }
            return Err(unknown_field(field));
        }
        // Only the image exporter pushes and names; an archive takes `name=` (BuildKit's
        // docker and oci exporters name the image in it).
        let takes = |option: &str| match kind.as_str() {
            "image" | "registry" => true,
            "docker" if dest.is_none() => option == "name",
            "docker" | "oci" => option == "name",
            _ => false,
        };
        if let Some(option) = image_options.iter().find(|o| !takes(o)) {
            let field = fields
                .iter()
                .find(|f| {
                    f.trim_start()
                        .to_ascii_lowercase()
                        .starts_with(option.as_str())
                })
                .cloned()
                .unwrap_or_else(|| option.clone());
            return Err(unknown_field(field));
        }
        let dest_or_error = || {
            dest.as_deref().ok_or_else(|| ExportSpecError::NoDest {
                spec: spec.to_string(),
            })
        };
        let export = match kind.as_str() {
            // A push without a name takes the build's tags (buildx fills `name=` from `-t`);
            // without either it is refused when the export runs ([`ExportError::NoName`]).
            "registry" | "image" => {
                image.push |= kind == "registry";
                Export::Image(image)
            }
            // buildx's `--load`: into the image store, which is kiln's.
            "docker" if dest.is_none() => Export::Image(image),
            "docker" => Export::Docker(ArchiveExport {
                dest: Destination::parse(dest_or_error()?),
                names: image.names,
            }),
            "oci" => Export::Oci(ArchiveExport {
                dest: Destination::parse(dest_or_error()?),
                names: image.names,
            }),
            "tar" => Export::Tar(Destination::parse(dest_or_error()?)),
            _ => Export::Local(PathBuf::from(dest_or_error()?)),
        };
        // The root filesystem exports have no layers to rewrite (BuildKit takes the option and
        // does nothing with it there).
        let writes_image = !matches!(export, Export::Local(_) | Export::Tar(_));
        if writes_image
            && format.oci_media_types == Some(false)
            && let Some(annotation) = annotations.oci_only()
        {
            return Err(ExportSpecError::OciOnlyAnnotation {
                spec: spec.to_string(),
                annotation,
            });
        }
        Ok(OutputSpec {
            export,
            rewrite_timestamp: rewrite_timestamp && writes_image,
            annotations: if writes_image {
                annotations
            } else {
                Annotations::default()
            },
            format,
        })
    }
}

/// Options of BuildKit's exporters that kiln refuses by name rather than as unknown: the
/// image exporter's `prefer-nondist-layers` and `source-date-epoch` (kiln takes
/// `SOURCE_DATE_EPOCH` as a build argument), the `buildinfo` options BuildKit removed, the
/// docker and OCI exporters' `tar=false` (a layout directory), and the local and tar
/// exporters' `platform-split`, `mode` and `attestation-prefix`.
const NOT_SUPPORTED: &[&str] = &[
    "prefer-nondist-layers",
    "source-date-epoch",
    "buildinfo",
    "buildinfo-attrs",
    "tar",
    "platform-split",
    "mode",
    "attestation-prefix",
];

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
    /// The attestation files a `type=local` or `type=tar` export writes beside the root
    /// filesystem (from the image's attestation manifests; none when the image has none).
    pub attestation_files: super::attestations::AttestationFiles,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            registry: ClientOptions::default(),
            max_bytes: DEFAULT_MAX_BYTES,
            source_date_epoch: None,
            format: ExportFormat::default(),
            attestation_files: Default::default(),
        }
    }
}

impl ExportOptions {
    /// The push or archive format of these options. `oci_default` is the exporter's default
    /// for `oci-mediatypes`: BuildKit's `type=oci` writes OCI types; its other image exporters
    /// write OCI types when attestations are attached (which buildx attaches by default) and
    /// Docker's otherwise, where kiln keeps the image's own (kiln builds OCI images).
    pub(super) fn push_format(&self, oci_default: Option<bool>) -> PushFormat {
        PushFormat {
            max_bytes: self.max_bytes,
            ..PushFormat::of_export(&self.format, oci_default)
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exported {
    /// A `type=docker` or `type=oci` archive: the descriptor its `index.json` lists the image
    /// by (its manifest, or a multi-platform image's index, as written: in the export's
    /// compression and media types), which the build's metadata names as BuildKit's
    /// exporters' response does.
    Archive(Box<Descriptor>),
    /// A `type=tar` or `type=local` root filesystem.
    Rootfs(archive::Exported),
    /// An image export: the names it tagged and the pushes it made.
    Image(ImageExported),
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
    /// BuildKit's "tag is needed when pushing to registry".
    #[error("a push needs a name to push to: give -t NAME or name=NAME")]
    NoName,
    /// A name with a digest (`name=x@sha256:…`) that is not the image's.
    #[error("the name {name} names another digest than the image's {digest}")]
    DigestName { name: String, digest: Digest },
    #[error("cannot make the image {image} in the export's compression and media types")]
    Format {
        image: Digest,
        #[source]
        source: crate::error::Cause,
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
        Export::Docker(archive) => save(store, image, SaveFormat::Docker, archive, options),
        Export::Oci(archive) => save(store, image, SaveFormat::Oci, archive, options),
        Export::Tar(dest) => export_rootfs(store, image, RootfsDest::Tar(dest), options, None),
        Export::Local(dir) => export_rootfs(store, image, RootfsDest::Local(dir), options, None),
        Export::Image(export) => image_export::export(
            store,
            image,
            &image.manifest_descriptor,
            export,
            options,
            progress,
        )
        .map(Exported::Image),
    }
}

/// Where a root-filesystem export writes.
enum RootfsDest<'a> {
    /// `type=tar`: one tar.
    Tar(&'a Destination),
    /// `type=local`: a directory.
    Local(&'a Path),
}

/// A `type=tar` or `type=local` export of one image's root filesystem, with `beside` (the
/// attestation files) next to it.
fn export_rootfs(
    store: &Store,
    image: &StoredImage,
    dest: RootfsDest<'_>,
    options: &ExportOptions,
    beside: archive::Beside,
) -> Result<Exported, ExportError> {
    let exported = match dest {
        RootfsDest::Tar(dest) => {
            let mut out = Output::open(dest.path())?;
            let exported = archive::export_rootfs(
                store,
                image,
                out.writer(),
                options.max_bytes,
                options.source_date_epoch,
                beside,
            )
            .map_err(ExportError::Rootfs)?;
            out.finish()?;
            exported
        }
        RootfsDest::Local(dir) => {
            archive::export_to_dir(store, image, dir, options.max_bytes, beside)
                .map_err(ExportError::Rootfs)?
        }
    };
    Ok(Exported::Rootfs(exported))
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
    // Attestation manifests are not images to export.
    for child in index.manifests.iter().filter(|m| {
        m.present
            && is_manifest(m.descriptor.media_type())
            && !crate::store::is_attestation(&m.descriptor)
    }) {
        let platform = child.platform.clone().unwrap_or_else(Platform::host);
        images.push((
            platform,
            store.index_image(&index, child).map_err(index_error)?,
        ));
    }
    // One platform's image with attestations (an index only for them) exports as that image
    // where the format has no room for an index, as BuildKit's exporters write it.
    if images.len() == 1
        && let Export::Docker(dest) = export
    {
        return save(store, image, SaveFormat::Docker, dest, options);
    }
    // The root filesystem exports write each image's attestations as files beside it, with
    // the exported files as their subjects (BuildKit's `exporter/local/fs.go`).
    let statements = match export {
        Export::Tar(_) | Export::Local(_) => images
            .iter()
            .map(|(_, image)| {
                super::attestations::file_statements(
                    store,
                    &index,
                    &image.manifest_digest,
                    &options.attestation_files,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(index_error)?,
        _ => Vec::new(),
    };
    let beside_files = |nth: usize, files: &[archive::RegularFile]| -> Vec<archive::BesideFile> {
        statements
            .get(nth)
            .into_iter()
            .flatten()
            .map(|statement| archive::BesideFile {
                name: statement.name.clone(),
                content: statement.content(files),
            })
            .collect()
    };
    let beside: archive::Beside = statements
        .iter()
        .any(|s| !s.is_empty())
        .then_some(&beside_files as _);
    // One platform's root filesystem is written as a single image's is.
    match (images.as_slice(), export) {
        ([(_, only)], Export::Tar(dest)) => {
            return export_rootfs(store, only, RootfsDest::Tar(dest), options, beside);
        }
        ([(_, only)], Export::Local(dir)) => {
            return export_rootfs(store, only, RootfsDest::Local(dir), options, beside);
        }
        _ => {}
    }
    match export {
        Export::Docker(_) => Err(ExportError::DockerMultiPlatform {
            platforms: images.iter().map(|(p, _)| p.to_string()).collect(),
        }),
        Export::Oci(archive) => save(store, image, SaveFormat::Oci, archive, options),
        Export::Tar(dest) => {
            let mut out = Output::open(dest.path())?;
            let exported = archive::export_rootfs_platforms(
                store,
                &images,
                out.writer(),
                options.max_bytes,
                options.source_date_epoch,
                beside,
            )
            .map_err(ExportError::Rootfs)?;
            out.finish()?;
            Ok(Exported::Rootfs(exported))
        }
        Export::Local(dir) => {
            archive::export_to_dir_platforms(store, &images, dir, options.max_bytes, beside)
                .map(Exported::Rootfs)
                .map_err(ExportError::Rootfs)
        }
        // The index is what is tagged (and pushed), as a multi-platform build's tags name it.
        Export::Image(export) => {
            image_export::export(store, image, &index.descriptor, export, options, progress)
                .map(Exported::Image)
        }
    }
}

/// What names the image (a multi-platform one: its index) in the store: its ID when it has
/// no names.
fn source_of(image: &StoredImage) -> String {
    image.index.as_ref().unwrap_or(&image.id).to_string()
}

/// The image as an archive: under the export's names when it gives some, else its own, else
/// by its ID (untagged).
fn save(
    store: &Store,
    image: &StoredImage,
    format: SaveFormat,
    export: &ArchiveExport,
    options: &ExportOptions,
) -> Result<Exported, ExportError> {
    let named = export
        .names
        .iter()
        .map(|name| {
            ImageName::parse(name).map_err(|source| ExportError::Tag {
                name: name.clone(),
                source: source.into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Output::open(export.dest.path())?;
    let oci_default = (format == SaveFormat::Oci).then_some(true);
    let saved = options
        .push_format(oci_default)
        .with_layer_format(|layers| {
            if named.is_empty() {
                let names: Vec<String> = if image.names.is_empty() {
                    vec![source_of(image)]
                } else {
                    image.names.iter().map(|n| n.familiar()).collect()
                };
                // One image, under all its names: one descriptor.
                archive::save_in_format(
                    store,
                    &names,
                    format,
                    None,
                    Some(layers),
                    out.writer(),
                    options.max_bytes,
                )?
                .pop()
                .ok_or_else(|| ArchiveError::from(StoreError::NotFound(source_of(image))))
            } else {
                archive::save_as(
                    store,
                    &source_of(image),
                    &named,
                    format,
                    Some(layers),
                    out.writer(),
                    options.max_bytes,
                )
            }
        });
    let written = saved.map_err(ExportError::Save)?;
    out.finish()?;
    Ok(Exported::Archive(Box::new(written)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(names: &[&str], push: bool) -> Export {
        Export::Image(ImageExport {
            names: names.iter().map(ToString::to_string).collect(),
            push,
            ..ImageExport::default()
        })
    }

    #[test]
    fn output_specs_parse_as_buildx_writes_them() {
        let path = |p: &str| Destination::Path(PathBuf::from(p));
        let cases = [
            ("out", Ok(Export::Local(PathBuf::from("out")))),
            ("-", Ok(Export::Tar(Destination::Stdout))),
            (
                "type=local,dest=dir",
                Ok(Export::Local(PathBuf::from("dir"))),
            ),
            (
                "type=docker,dest=a.tar",
                Ok(Export::Docker(ArchiveExport {
                    dest: path("a.tar"),
                    names: Vec::new(),
                })),
            ),
            (
                "type=docker,dest=a.tar,compression=zstd",
                Ok(Export::Docker(ArchiveExport {
                    dest: path("a.tar"),
                    names: Vec::new(),
                })),
            ),
            (
                "type=docker,dest=a.tar,level=3",
                Err(
                    "invalid --output \"type=docker,dest=a.tar,level=3\": unknown option \
                     \"level=3\" for type=docker",
                ),
            ),
            (
                "type=oci,dest=-,name=x:1",
                Ok(Export::Oci(ArchiveExport {
                    dest: Destination::Stdout,
                    names: vec!["x:1".to_string()],
                })),
            ),
            ("dest=r.tar,type=tar", Ok(Export::Tar(path("r.tar")))),
            // Keys are case-folded, as buildx folds them.
            ("Type=tar,DEST=r.tar", Ok(Export::Tar(path("r.tar")))),
            (
                "type=registry,name=host/app:1",
                Ok(image(&["host/app:1"], true)),
            ),
            // --load's export, and a docker export without a file: the store.
            ("type=docker", Ok(image(&[], false))),
            ("type=docker,name=x", Ok(image(&["x"], false))),
            (
                "type=image,\"name=a:1,b:2\",push=true",
                Ok(image(&["a:1", "b:2"], true)),
            ),
            ("type=image,name=x:1,push=true", Ok(image(&["x:1"], true))),
            (
                "type=image,name=x,unpack=true,store=true",
                Ok(Export::Image(ImageExport {
                    names: vec!["x".to_string()],
                    unpack: true,
                    ..ImageExport::default()
                })),
            ),
            (
                "type=docker,dest=a.tar,colour=red",
                Err(
                    "invalid --output \"type=docker,dest=a.tar,colour=red\": unknown option \
                     \"colour=red\" for type=docker",
                ),
            ),
            (
                "type=oci,dest=a.tar,push=true",
                Err(
                    "invalid --output \"type=oci,dest=a.tar,push=true\": unknown option \
                     \"push=true\" for type=oci",
                ),
            ),
            (
                "type=oci,dest=o,tar=false",
                Err(
                    "invalid --output \"type=oci,dest=o,tar=false\": \"tar=false\": BuildKit's \
                     option tar is not supported by kiln",
                ),
            ),
            (
                "type=local,dest=d,name=x",
                Err(
                    "invalid --output \"type=local,dest=d,name=x\": unknown option \"name=x\" \
                     for type=local",
                ),
            ),
            ("type=registry,name=", Ok(image(&[], true))),
            (
                "type=oci",
                Err("invalid --output \"type=oci\": no dest=PATH"),
            ),
            ("type=image,push=true", Ok(image(&[], true))),
            (
                "type=image,dest=x,push=maybe",
                Err(
                    "invalid --output \"type=image,dest=x,push=maybe\": push takes true or \
                     false, not \"maybe\"",
                ),
            ),
            (
                "dest=x",
                Err(
                    "invalid --output \"dest=x\": unknown type \"\"; use docker, oci, tar, \
                     local, image or registry",
                ),
            ),
            (
                "type=tar,dest",
                Err("invalid --output \"type=tar,dest\": \"dest\" is not KEY=VALUE"),
            ),
            (
                "type=image,\"name=a,b",
                Err("invalid --output \"type=image,\\\"name=a,b\": a quote is not closed"),
            ),
            (
                "type=image,name=\"a\"",
                Err("invalid --output \"type=image,name=\\\"a\\\"\": a quote in an unquoted field"),
            ),
        ];
        for (spec, expected) in cases {
            let parsed = spec.parse::<Export>().map_err(|e| e.to_string());
            assert_eq!(parsed, expected.map_err(str::to_string), "{spec}");
        }
    }

    #[test]
    fn annotation_options_go_with_image_exports() {
        let spec: OutputSpec = "type=oci,dest=o.tar,annotation.a=1,annotation-index.b=2"
            .parse()
            .unwrap();
        assert_eq!(spec.annotations.manifest(None).len(), 1);
        assert_eq!(spec.annotations.index().len(), 1);
        // The root filesystem exports write no image: they take the options, as BuildKit's.
        let local: OutputSpec = "type=local,dest=d,annotation.a=1".parse().unwrap();
        assert!(local.annotations.is_empty());
        let err = "type=image,annotation-bogus.k=v"
            .parse::<OutputSpec>()
            .unwrap_err();
        assert_eq!(
            crate::error::Chain(&err).to_string(),
            "invalid --output \"type=image,annotation-bogus.k=v\": unknown annotation type \
             \"bogus\": use manifest, manifest-descriptor, index or index-descriptor"
        );
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

    #[test]
    fn compression_goes_with_the_image_exporters_options_and_names() {
        use crate::layer::Compression;
        // Case-folded keys and quoted names, as the rest of the spec.
        let spec = "type=image,\"name=a:1,b:2\",push=true,Compression=zstd,push-by-digest=true";
        let output = spec.parse::<OutputSpec>().unwrap();
        assert_eq!(output.format.compression.compression, Compression::Zstd);
        assert_eq!(
            output.export,
            Export::Image(ImageExport {
                names: vec!["a:1".to_string(), "b:2".to_string()],
                push: true,
                push_by_digest: true,
                ..ImageExport::default()
            })
        );
        let archive = "type=oci,dest=o.tar,name=x:1,compression=uncompressed"
            .parse::<OutputSpec>()
            .unwrap();
        assert_eq!(archive.format.compression.compression, Compression::None);
        assert_eq!(
            archive.export,
            Export::Oci(ArchiveExport {
                dest: Destination::Path(PathBuf::from("o.tar")),
                names: vec!["x:1".to_string()],
            })
        );
    }

    #[test]
    fn docker_media_types_refuse_index_and_descriptor_annotations() {
        for (spec, annotation) in [
            (
                "type=image,name=x,oci-mediatypes=false,annotation-index.a=1",
                "index:a",
            ),
            (
                "type=oci,dest=o.tar,oci-mediatypes=false,annotation-manifest-descriptor.b=2",
                "manifest-descriptor:b",
            ),
            (
                "type=registry,name=h/x,oci-mediatypes=false,annotation-index-descriptor.c=3",
                "index-descriptor:c",
            ),
        ] {
            let err = spec.parse::<OutputSpec>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid --output {spec:?}: cannot export annotations with \
                     \"oci-mediatypes=false\" ({annotation} is an index or descriptor \
                     annotation)"
                )
            );
        }
        // Manifest annotations fit Docker's manifest; OCI types take every kind; the root
        // filesystem exports write no image.
        for spec in [
            "type=image,name=x,oci-mediatypes=false,annotation.a=1",
            "type=image,name=x,oci-mediatypes=true,annotation-index.a=1",
            "type=image,name=x,annotation-manifest-descriptor.a=1",
            "type=local,dest=d,oci-mediatypes=false,annotation-index.a=1",
        ] {
            assert!(spec.parse::<OutputSpec>().is_ok(), "{spec}");
        }
    }
}
