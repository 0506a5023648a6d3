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

use super::export::{ExportError, parse_bool};
use crate::oci::Digest;
use crate::oci::reference::Reference;
use crate::registry::{Client, ClientOptions, TransferProgress, push};
use crate::store::{Store, StoredImage};
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
            parse_bool(value).ok_or_else(|| BadOption {
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
}

/// Writes one image export of `image`, whose store descriptor (its manifest, or a
/// multi-platform build's index) is `descriptor`.
pub(super) fn export(
    store: &Store,
    image: &StoredImage,
    descriptor: &Descriptor,
    export: &ImageExport,
    registry: &ClientOptions,
    progress: &dyn TransferProgress,
) -> Result<ImageExported, ExportError> {
    let digest =
        Digest::parse(descriptor.digest().as_ref()).map_err(|_| ExportError::Reference {
            name: descriptor.digest().to_string(),
            source: crate::oci::reference::ReferenceError::DigestFormat,
        })?;
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
    let mut options = registry.clone();
    if export.insecure {
        for reference in &references {
            options
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
        let pushed = push_to(store, &source, &target, &options, progress)?;
        done.pushed.push((target, pushed));
    }
    Ok(done)
}

fn parse(name: &str) -> Result<Reference, ExportError> {
    Reference::parse_normalized(name).map_err(|source| ExportError::Reference {
        name: name.to_string(),
        source,
    })
}

/// Pushes the store's `source` (an image ID or index digest) to `reference`.
pub(super) fn push_to(
    store: &Store,
    source: &str,
    reference: &Reference,
    options: &ClientOptions,
    progress: &dyn TransferProgress,
) -> Result<Digest, ExportError> {
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
        .block_on(push(
            &client,
            store,
            source,
            reference,
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
