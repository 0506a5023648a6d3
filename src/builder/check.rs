//! What a build checks before its first step, as one call that the build and `--dry-run` share
//! ([`check`]): the plan (stages, ARG and ENV scoping, the context each COPY and ADD reads, its
//! `.dockerignore`), the named contexts and images made ready, the compile to the ops graph
//! (every `CompileError`: `--from` names, mount sources, entitlements, `--link` and
//! `--checksum` rules), and `SOURCE_DATE_EPOCH`. The build runs [`super::validate`], then its
//! steps; a dry run runs the same function with nothing fetched and nothing written to the
//! store, so a Dockerfile it accepts is not rejected by the build before its first step.
//!
//! What a dry run does not fetch stands in for itself: an image the store lacks is an image
//! with an empty config (its ENV and ONBUILD triggers are unknown to the check; the report says
//! so), a named context from a URL an empty image; a named local directory or OCI layout is
//! read and checked but not stored. [`Checked::remote`] lists every remote source the build
//! would fetch.

use super::compile::Step;
use super::named_context::NamedContext;
use crate::frontend::instruction::Instruction;
use crate::frontend::plan::{Plan, is_remote};
use crate::frontend::stage::ImageKey;
use crate::oci::{Digest, Platform};
use crate::store::{StoredImage, descriptor};
use oci_spec::image::{ImageConfiguration, ImageManifestBuilder, MediaType};
use std::collections::{BTreeMap, BTreeSet};

/// What [`check`](super::check) found: everything a build would run, without running it.
#[derive(Debug, Clone)]
pub struct Checked {
    pub plan: Plan,
    /// The compiled steps, by node (the names the build's progress shows).
    pub steps: Vec<Step>,
    /// The remote sources the build reads, in the order the Dockerfile and flags name them.
    pub remote: Vec<RemoteSource>,
    /// The image time the build would write (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<i64>,
    /// The remote source `SOURCE_DATE_EPOCH` takes the time from, when the check did not fetch
    /// it (a stage's ADD, a named context); it is also in [`Checked::remote`].
    pub source_date_epoch_from: Option<String>,
}

/// One remote source of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSource {
    pub kind: RemoteKind,
    /// The URL, reference or path as given.
    pub source: String,
    /// Whether the store already has it (an image), and so nothing is fetched for it.
    pub stored: bool,
}

/// What kind of remote source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    /// The build context downloaded from a URL (or cloned).
    Context,
    /// A `--build-context` that is not a local directory.
    NamedContext,
    /// An image a FROM, `COPY --from` or `RUN --mount from=` names.
    Image,
    /// An `ADD <http url>`.
    Url,
    /// An `ADD <git repository>`.
    Git,
}

impl RemoteKind {
    /// How the dry run shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteKind::Context => "context",
            RemoteKind::NamedContext => "named context",
            RemoteKind::Image => "image",
            RemoteKind::Url => "url",
            RemoteKind::Git => "git",
        }
    }
}

/// An image known only by name, standing in for one a dry run does not fetch: `config_bytes`
/// (an OCI layout's config), else an empty config for `platform`, and no layers.
pub(crate) fn stand_in(config_bytes: Option<&[u8]>, platform: &Platform) -> StoredImage {
    let config_bytes = config_bytes.map(<[u8]>::to_vec).unwrap_or_else(|| {
        let mut config = serde_json::json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        if let (Some(variant), Some(object)) = (&platform.variant, config.as_object_mut()) {
            object.insert("variant".into(), serde_json::json!(variant));
        }
        config.to_string().into_bytes()
    });
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes).unwrap_or_default();
    let id = Digest::of(&config_bytes);
    let config_descriptor = descriptor(MediaType::ImageConfig, &id, config_bytes.len() as u64);
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_descriptor)
        .layers(Vec::new())
        .build()
        .unwrap_or_else(|_| unreachable!("a manifest with a config and no layers is complete"));
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let manifest_digest = Digest::of(&manifest_bytes);
    StoredImage {
        names: Vec::new(),
        manifest_descriptor: descriptor(
            MediaType::ImageManifest,
            &manifest_digest,
            manifest_bytes.len() as u64,
        ),
        manifest_digest,
        manifest,
        id,
        config,
        config_bytes,
        layers: Vec::new(),
        tagged_at: None,
        index: None,
    }
}

/// The remote sources of a build: its context, named contexts, the images of `images` (each
/// name once, whatever the platforms it is wanted for; but the `named` ones, which named
/// contexts made; `stand_ins` are those the store lacks) and the ADDs of URLs and git
/// repositories of the needed stages of every target platform's plan (each once).
pub(crate) fn remote_sources(
    plans: &[Plan],
    options: &super::BuildOptions,
    images: &BTreeMap<ImageKey, StoredImage>,
    named: &BTreeSet<String>,
    stand_ins: &BTreeSet<String>,
) -> Vec<RemoteSource> {
    let mut remote = Vec::new();
    // A stdin context was read already; a URL or a git repository is a remote source.
    if let Some(super::RemoteContext {
        origin: super::ContextOrigin::Url(url) | super::ContextOrigin::Git(url),
        ..
    }) = &options.remote_context
    {
        remote.push(RemoteSource {
            kind: RemoteKind::Context,
            source: url.clone(),
            stored: false,
        });
    }
    for (name, context) in &options.named_contexts {
        let source = match context {
            NamedContext::Local(_) => continue,
            NamedContext::Image(reference) => format!("{name}=docker-image://{reference}"),
            NamedContext::OciLayout { path, reference } => format!(
                "{name}=oci-layout://{}{}",
                path.display(),
                reference.as_deref().unwrap_or("")
            ),
            NamedContext::Url(url) => format!("{name}={url}"),
            NamedContext::Git(source) => format!("{name}={}", source.remote_shown),
        };
        remote.push(RemoteSource {
            kind: RemoteKind::NamedContext,
            source,
            stored: false,
        });
    }
    let names: BTreeSet<&String> = images.keys().map(|key| &key.name).collect();
    for name in names.into_iter().filter(|name| !named.contains(*name)) {
        remote.push(RemoteSource {
            kind: RemoteKind::Image,
            source: name.clone(),
            stored: !stand_ins.contains(name),
        });
    }
    // A later plan's ADDs are its platform's: those the first plan named are not listed again.
    let mut added = BTreeSet::new();
    for (index, plan) in plans.iter().enumerate() {
        for &id in &plan.order {
            let Some(stage) = plan.resolved.stages.get(id) else {
                continue;
            };
            for instruction in &stage.instructions {
                let Instruction::Add(add) = instruction else {
                    continue;
                };
                for source in add.sources.iter().filter(|s| is_remote(s)) {
                    if !added.insert(source.clone()) && index > 0 {
                        continue;
                    }
                    remote.push(RemoteSource {
                        kind: if is_git_source(source) {
                            RemoteKind::Git
                        } else {
                            RemoteKind::Url
                        },
                        source: source.clone(),
                        stored: false,
                    });
                }
            }
        }
    }
    remote
}

/// An ADD source that names a git repository rather than a file to download (BuildKit's
/// `isGitSource`, in short: not http(s), or an http(s) URL whose path ends in `.git`).
fn is_git_source(source: &str) -> bool {
    if source.starts_with("http://") || source.starts_with("https://") {
        return !super::http_context::is_http_context(source);
    }
    true
}
