//! `-o type=image` (and `type=registry`, its `push=true` form): BuildKit's image exporter
//! options (exporter/containerimage/export.go, exptypes/keys.go) over kiln's store, which
//! holds every build's image ready to run whatever the options say.
//!
//! - `name=A,B` (quoted in the CSV, `"name=A,B"`): each name is tagged in the store (unless
//!   `store=false`) and, with `push=true`, pushed.
//! - `push-by-digest=true`: the push puts the manifest (or index) by its digest, without a tag.
//! - `name-canonical=true`: BuildKit also names the image `NAME@DIGEST`; kiln's store keeps
//!   tags only, and answers `NAME@DIGEST` for any name by the digest, so the canonical names
//!   are reported ([`ImageExported::canonical`]) rather than stored.
//! - `dangling-name-prefix=P`: the name `P@DIGEST` is added (with
//!   `danging-name-empty-only=true`, BuildKit's spelling, only when there is no other name); a
//!   name with a digest is not a tag: a push puts it by that digest.
//! - `registry.insecure=true`: the pushes speak plain HTTP to the names' registries.
//! - `unpack=BOOL`, `store=BOOL`: the image is in the store, unpacked (kiln's images are ready
//!   to run), whatever `unpack` says; `store=false` leaves the names untagged.

use super::export::{ExportError, ExportOptions};
use crate::oci::Digest;
use crate::oci::csv::parse_go_bool;
use crate::oci::reference::Reference;
use crate::registry::{Client, ClientOptions, PushFormat, TransferProgress, push_described};
use crate::store::{MediaTypes, Store, StoreError, StoredEntry, StoredImage, is_manifest};
use oci_spec::image::Descriptor;

/// The options of one image export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageExport {
    /// `name=`: the names, as given (comma-separated in one option).
    pub names: Vec<String>,
    pub push: bool,
    pub push_by_digest: bool,
    pub name_canonical: bool,
    /// `unpack=`: taken; kiln's store keeps every image unpacked.
    pub unpack: bool,
    /// `registry.insecure=true`.
    pub insecure: bool,
    pub dangling_name_prefix: Option<String>,
    pub dangling_empty_only: bool,
    /// `store=false`: the names are not tagged in the store (the image is there anyway).
    pub store: bool,
}

impl Default for ImageExport {
    fn default() -> Self {
        ImageExport {
            names: Vec::new(),
            push: false,
            push_by_digest: false,
            name_canonical: false,
            unpack: false,
            insecure: false,
            dangling_name_prefix: None,
            dangling_empty_only: false,
            store: true,
        }
    }
}

/// Why an image export option is not one: the option and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadOption {
    pub key: String,
    pub value: String,
}

impl ImageExport {
    /// Takes one `KEY=VALUE` of an image export: `None` when `key` is not an image exporter
    /// option, `Some(Err)` when its value is not a boolean where one is needed. A boolean
    /// option without a value is true, as in BuildKit.
    pub(super) fn set(&mut self, key: &str, value: &str) -> Option<Result<(), BadOption>> {
        let boolean = |value: &str| {
            if value.is_empty() {
                return Ok(true);
            }
            parse_go_bool(value).ok_or_else(|| BadOption {
                key: key.to_string(),
                value: value.to_string(),
            })
        };
        let set = |field: &mut bool| boolean(value).map(|b| *field = b);
        Some(match key {
            "name" => {
                self.names = value
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect();
                Ok(())
            }
            "push" => set(&mut self.push),
            "push-by-digest" => set(&mut self.push_by_digest),
            "name-canonical" => set(&mut self.name_canonical),
            "unpack" => set(&mut self.unpack),
            "registry.insecure" => set(&mut self.insecure),
            "store" => set(&mut self.store),
            "dangling-name-prefix" => {
                self.dangling_name_prefix = Some(value.to_string()).filter(|p| !p.is_empty());
                Ok(())
            }
            // BuildKit's key, misspelt as it is there.
            "danging-name-empty-only" => set(&mut self.dangling_empty_only),
            _ => return None,
        })
    }

    /// Whether the export has something to push to: BuildKit's exporter pushes its names.
    pub fn push_has_name(&self) -> bool {
        !self.push || !self.names.is_empty() || self.dangling_name_prefix.is_some()
    }
}

/// What an image export did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageExported {
    /// Every name of the export, as BuildKit's `image.name` lists them (a dangling name
    /// included).
    pub names: Vec<String>,
    /// `name-canonical=true`: `NAME@DIGEST` for each tagged name.
    pub canonical: Vec<String>,
    /// Each push: where to (a tag, or a digest for `push-by-digest` and digest names) and the
    /// pushed manifest's (or index's) digest.
    pub pushed: Vec<(Reference, Digest)>,
    /// The descriptor of what the pushes put in the registries: the image in the export's
    /// compression and media types (its digest differs from the store's when the layers were
    /// compressed for the push). `None` when nothing was pushed.
    pub pushed_descriptor: Option<Box<Descriptor>>,
}

/// Writes one image export of `image`, whose store descriptor (its manifest, or a
/// multi-platform build's index) is `descriptor`. A push sends the image in `options`'
/// compression and media types; the digest a dangling or digest name carries and a push by
/// digest goes to is then that image's (as BuildKit's exporter names the image it made).
pub(super) fn export(
    store: &Store,
    image: &StoredImage,
    descriptor: &Descriptor,
    export: &ImageExport,
    options: &ExportOptions,
    progress: &dyn TransferProgress,
) -> Result<ImageExported, ExportError> {
    let format = options.push_format(None);
    let digest_of = |descriptor: &Descriptor| {
        Digest::parse(descriptor.digest().as_ref()).map_err(|_| ExportError::Reference {
            name: descriptor.digest().to_string(),
            source: crate::oci::reference::ReferenceError::DigestFormat,
        })
    };
    let names_digest = export.push
        && (export.push_by_digest
            || export.name_canonical
            || export.dangling_name_prefix.is_some()
            || export.names.iter().any(|n| n.contains('@')));
    let digest = if names_digest {
        digest_of(&descriptor_as(store, image, &format)?)?
    } else {
        digest_of(descriptor)?
    };
    let mut names = export.names.clone();
    let mut name_canonical = export.name_canonical;
    if let Some(prefix) = &export.dangling_name_prefix
        && (!export.dangling_empty_only || names.is_empty())
    {
        if names.is_empty() {
            name_canonical = false;
        }
        names.push(format!("{prefix}@{digest}"));
    }
    if !export.push_has_name() {
        return Err(ExportError::NoName);
    }
    let mut done = ImageExported {
        names: names.clone(),
        ..ImageExported::default()
    };
    let mut references = Vec::new();
    for name in &names {
        let reference = parse(name)?;
        if let Some(named) = reference.digest()
            && named != digest.to_string()
        {
            return Err(ExportError::DigestName {
                name: name.clone(),
                digest: digest.clone(),
            });
        }
        // A digest name is no tag: the store answers it by its digest already.
        if export.store && reference.digest().is_none() {
            store
                .tag(name, descriptor)
                .map_err(|source| ExportError::Tag {
                    name: name.clone(),
                    source,
                })?;
            if name_canonical {
                done.canonical.push(format!("{name}@{digest}"));
            }
        }
        references.push(reference);
    }
    if !export.push {
        return Ok(done);
    }
    let mut registry = options.registry.clone();
    if export.insecure {
        for reference in &references {
            registry
                .insecure_registries
                .push(reference.domain().to_string());
        }
    }
    let source = image.index.as_ref().unwrap_or(&image.id).to_string();
    for reference in references {
        let target = if export.push_by_digest || reference.digest().is_some() {
            parse(&format!(
                "{}/{}@{digest}",
                reference.domain(),
                reference.path()
            ))?
        } else {
            reference.with_default_tag()
        };
        let (pushed, pushed_descriptor) =
            push_to(store, &source, &target, &registry, &format, progress)?;
        done.pushed.push((target, pushed));
        done.pushed_descriptor = Some(Box::new(pushed_descriptor));
    }
    Ok(done)
}

/// The descriptor `image` (a multi-platform one: its index, whole) has in `format`: what a
/// push in that format puts in the registry. Its layers are compressed now (and kept, so the
/// push sends them as they are); those of an image built from a shared cache are fetched first.
fn descriptor_as(
    store: &Store,
    image: &StoredImage,
    format: &PushFormat,
) -> Result<Descriptor, ExportError> {
    let failed = |source: crate::error::Cause| ExportError::Format {
        image: image.index.clone().unwrap_or_else(|| image.id.clone()),
        source,
    };
    let _lease = store.lease().map_err(|e| failed(e.into()))?;
    let convert = |image: &StoredImage| {
        crate::archive::fetch_absent_layers(store, &image.layers).map_err(|e| failed(e.into()))?;
        format
            .with_layer_format(|layers| store.image_as(image, layers))
            .map(|converted| converted.manifest_descriptor)
            .map_err(|e| failed(e.into()))
    };
    let Some(index_digest) = &image.index else {
        return convert(image);
    };
    let index = match store.resolve_entry(&index_digest.to_string()) {
        Ok(StoredEntry::Index(index)) => index,
        Ok(StoredEntry::Image(_)) => {
            return Err(failed(
                StoreError::NotFound(index_digest.to_string()).into(),
            ));
        }
        Err(err) => return Err(failed(err.into())),
    };
    let mut children = Vec::new();
    for child in index
        .manifests
        .iter()
        .filter(|m| m.present && is_manifest(m.descriptor.media_type()))
    {
        let child_image = store
            .index_image(&index, child)
            .map_err(|e| failed(e.into()))?;
        children.push((child.digest.clone(), convert(&child_image)?));
    }
    let bytes = store
        .blobs()
        .read_sized(&index.digest, index.descriptor.size())
        .map_err(|e| failed(e.into()))?;
    let media_types = format
        .media_types
        .unwrap_or_else(|| MediaTypes::of(index.descriptor.media_type().as_ref()));
    store
        .index_with(
            &index.digest,
            &bytes,
            index.descriptor.media_type().as_ref(),
            &children,
            media_types,
        )
        .map(|converted| {
            let mut descriptor = converted.descriptor;
            descriptor.set_annotations(index.descriptor.annotations().clone());
            descriptor
        })
        .map_err(|e| failed(e.into()))
}

fn parse(name: &str) -> Result<Reference, ExportError> {
    Reference::parse_normalized(name).map_err(|source| ExportError::Reference {
        name: name.to_string(),
        source,
    })
}

/// Pushes the store's `source` (an image ID or index digest) to `reference` in `format`:
/// the pushed manifest's (or index's) digest and descriptor.
pub(super) fn push_to(
    store: &Store,
    source: &str,
    reference: &Reference,
    options: &ClientOptions,
    format: &PushFormat,
    progress: &dyn TransferProgress,
) -> Result<(Digest, Descriptor), ExportError> {
    let failed = |source| ExportError::Push {
        reference: reference.clone(),
        source: Box::new(source),
    };
    let client = Client::new(options.clone()).map_err(failed)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ExportError::Runtime)?;
    runtime
        .block_on(push_described(
            &client,
            store,
            source,
            reference,
            format,
            &crate::cache::remote::origins(),
            progress,
        ))
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<ImageExport, BadOption> {
        let mut export = ImageExport::default();
        for (key, value) in pairs {
            export.set(key, value).expect("an image option")?;
        }
        Ok(export)
    }

    #[test]
    fn options_parse_as_buildkit_reads_them() {
        let export = with(&[
            ("name", "a:1,b:2"),
            ("push", "true"),
            ("push-by-digest", ""),
            ("name-canonical", "1"),
            ("unpack", "false"),
            ("registry.insecure", "t"),
            ("store", "False"),
            ("dangling-name-prefix", "dangling"),
            ("danging-name-empty-only", "true"),
        ])
        .unwrap();
        assert_eq!(
            export,
            ImageExport {
                names: vec!["a:1".to_string(), "b:2".to_string()],
                push: true,
                push_by_digest: true,
                name_canonical: true,
                unpack: false,
                insecure: true,
                dangling_name_prefix: Some("dangling".to_string()),
                dangling_empty_only: true,
                store: false,
            }
        );
        assert_eq!(
            with(&[("push", "yes")]),
            Err(BadOption {
                key: "push".to_string(),
                value: "yes".to_string()
            })
        );
        assert_eq!(ImageExport::default().set("compression", "zstd"), None);
        assert!(!with(&[("push", "true")]).unwrap().push_has_name());
        assert!(
            with(&[("push", "true"), ("dangling-name-prefix", "x")])
                .unwrap()
                .push_has_name()
        );
    }
}
