//! `--build-context NAME=VALUE` (buildx's flag, BuildKit's `context:NAME` frontend option): a
//! named context replaces what the Dockerfile calls NAME, in FROM, `COPY --from` and
//! `RUN --mount from=` (the rules are the front end's, [`crate::frontend::stage`]).
//!
//! VALUE is `docker-image://REF` (an image, looked up or pulled like a FROM image), a local
//! directory, `oci-layout://PATH[:TAG|@DIGEST]`, a git repository (`https://…/repo.git#ref:
//! subdir`, `git://…`, `ssh://…`, `git@host:repo.git`; see [`crate::builder::git_context`]: its
//! checkout, with no `.dockerignore`, stored as a local directory is), or an http(s) URL.
//!
//! An http(s) URL (one whose path does not end in `.git`) is what BuildKit's dockerui makes of
//! it (`NamedContext.load`: `llb.HTTP(url, llb.Filename("context"))`): the download as the one
//! file `context`, mode 0600, owned by root, its mtime the `Last-Modified` time; it is NOT
//! unpacked, even when it is a tar (buildctl v0.32: `--opt context:x=http://.../x.tar` with
//! `COPY --from=x / /x/` gives the file `/x/context`). It is downloaded as `ADD <url>` is
//! ([`crate::fetch`]: conditional, bounded, authenticated with the `HTTP_AUTH_*_<host>`
//! secrets) and stored as a one-layer image like a local directory.
//!
//! The front end knows a named context only as an image reference. A local directory is made
//! one: its files after its own `<DIR>/.dockerignore` (BuildKit's dockerui reads exactly that
//! file for a named local context, never `<Dockerfile>.dockerignore`) are written as one
//! uncompressed layer, owned by root as BuildKit's local source delivers them, into an image
//! whose config is only the host platform (BuildKit's named local context has no image
//! config). The layer holds the content, modes and mtimes, so an unchanged directory gives
//! the same image, named by its ID, and the steps reading it hit the cache. The image stays
//! in the store untagged (a prune removes it). A git repository's checkout is stored the same
//! way, without any `.dockerignore` (BuildKit applies none to a git context): the same commit
//! gives the same image. An `oci-layout://` image is copied into the
//! store the same way (buildx resolves the tag on the client; BuildKit then reads the layout
//! by digest), its blobs checked against their digests.

use crate::archive::{ArchiveError, DEFAULT_MAX_BYTES, unpack_layer};
use crate::builder::check;
use crate::builder::git_context::{self, GitContextError};
use crate::builder::http_context::CONTEXT_FILE;
use crate::builder::steps::mounts::Session;
use crate::fetch::Fetcher;
use crate::frontend::context::{BuildContext, ContextError, ContextKind, EntryKind};
use crate::frontend::stage::named_context_key;
use crate::git::{GitRef, GitSource, GitUrlError};
use crate::layer::Compression;
use crate::oci::Platform;
use crate::store::blob::MAX_DOCUMENT_SIZE;
use crate::store::{BlobWriter, LayerInfo, Store, StoredImage, descriptor};
use crate::sys::FsError;
use oci_spec::image::MediaType;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read as _, Write};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// What a named context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF`.
    Image(String),
    /// A local directory, with its own `.dockerignore`.
    Local(PathBuf),
    /// `oci-layout://PATH[:TAG|@DIGEST]`: an image in an OCI layout directory.
    OciLayout {
        path: PathBuf,
        /// The `:TAG` or `@DIGEST` after the path, as written (`@sha256:...` or `:tag`).
        reference: Option<String>,
    },
    /// An http(s) URL: its download as the one file `context`.
    Url(String),
    /// A git repository, fetched and checked out.
    Git(GitSource),
}

/// A `--build-context` value kiln cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamedContextError {
    #[error("--build-context {0:?} has no name: write --build-context NAME=VALUE")]
    NoName(String),
    #[error("--build-context {name}={value}: {what}")]
    Invalid {
        name: String,
        value: String,
        what: &'static str,
    },
    #[error("--build-context {name}: {source}")]
    Git {
        name: String,
        #[source]
        source: GitUrlError,
    },
}

/// Why a named context could not be made an image.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open the context directory")]
    Open(#[source] ContextError),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot store the context as an image")]
    Store(#[source] ArchiveError),
    /// The OCI layout has no image for the reference, or its documents make no sense.
    #[error("{0}")]
    Layout(String),
    #[error("cannot download {url}")]
    Fetch {
        url: String,
        #[source]
        source: Box<crate::fetch::FetchError>,
    },
    #[error(transparent)]
    Git(#[from] GitContextError),
}

/// What the named contexts give the front end.
#[derive(Debug, Default)]
pub(crate) struct ContextImages {
    /// The image name each context gives, by the key the front end looks names up by
    /// ([`named_context_key`]): the reference of a `docker-image://`, the ID of the image
    /// another kind was stored as (or, in a dry run, the name of its stand-in).
    pub keys: BTreeMap<String, String>,
    /// The names of `keys` that are not references to look up or pull: images the contexts
    /// made, or stand-ins.
    pub made: BTreeSet<String>,
    /// A dry run's stand-ins, by name (see [`crate::builder::check`]).
    pub stand_ins: BTreeMap<String, StoredImage>,
}

/// Makes each named context an image: with `store`, stores what is local or downloaded
/// (see the module documentation); without one (a dry run), reads and checks local
/// directories and OCI layouts, downloads nothing, and gives each a stand-in.
pub(crate) fn context_images(
    store: Option<&Store>,
    contexts: &BTreeMap<String, NamedContext>,
    session: &dyn Session,
) -> Result<ContextImages, (String, LoadError)> {
    let mut images = ContextImages::default();
    for (name, context) in contexts {
        let failed = |err| (name.clone(), err);
        let made = match (context, store) {
            (NamedContext::Image(reference), _) => {
                images
                    .keys
                    .insert(named_context_key(name), reference.clone());
                continue;
            }
            (NamedContext::Local(dir), Some(store)) => {
                store_directory(store, dir, ContextKind::Directory).map_err(failed)?
            }
            (NamedContext::Git(source), Some(store)) => git_context::fetch(store, source, session)
                .map_err(LoadError::from)
                .and_then(|git| store_directory(store, git.checkout.path(), ContextKind::Unpacked))
                .map_err(failed)?,
            (NamedContext::OciLayout { path, reference }, Some(store)) => {
                store_layout_image(store, path, reference.as_deref()).map_err(failed)?
            }
            (NamedContext::Url(url), Some(store)) => {
                store_download(store, url, session).map_err(failed)?
            }
            (NamedContext::Local(dir), None) => {
                BuildContext::open(dir, None)
                    .map_err(LoadError::Open)
                    .map_err(failed)?;
                let stand_in = format!("context {name} ({})", dir.display());
                images
                    .stand_ins
                    .insert(stand_in.clone(), check::stand_in(None, &Platform::host()));
                stand_in
            }
            (NamedContext::OciLayout { path, reference }, None) => {
                let image = read_layout_image(path, reference.as_deref()).map_err(failed)?;
                let stand_in = format!("context {name} (oci-layout://{})", path.display());
                images.stand_ins.insert(
                    stand_in.clone(),
                    check::stand_in(Some(&image.config_bytes), &Platform::host()),
                );
                stand_in
            }
            (NamedContext::Git(source), None) => {
                let stand_in = format!("context {name} ({})", source.remote_shown);
                images
                    .stand_ins
                    .insert(stand_in.clone(), check::stand_in(None, &Platform::host()));
                stand_in
            }
            (NamedContext::Url(url), None) => {
                let stand_in = format!("context {name} ({url})");
                images
                    .stand_ins
                    .insert(stand_in.clone(), check::stand_in(None, &Platform::host()));
                stand_in
            }
        };
        images.made.insert(made.clone());
        images.keys.insert(named_context_key(name), made);
    }
    Ok(images)
}

/// Stores the context `dir` as a one-layer image of root's files (see the module
/// documentation): a local directory after its `.dockerignore`, a git checkout
/// ([`ContextKind::Unpacked`]) whole; returns its ID.
fn store_directory(store: &Store, dir: &Path, kind: ContextKind) -> Result<String, LoadError> {
    let context = BuildContext::open_as(kind, dir, None).map_err(LoadError::Open)?;
    let stored = |err: ArchiveError| LoadError::Store(err);
    let _lease = store.lease().map_err(|e| stored(e.into()))?;
    let writer = store.blobs().writer().map_err(|e| stored(e.into()))?;
    let mut tar = tar::Builder::new(writer);
    tar.mode(tar::HeaderMode::Complete);
    for entry in context.entries() {
        let path = context.root().join(&entry.path);
        let read = |source| LoadError::Read {
            path: path.clone(),
            source,
        };
        let meta = std::fs::symlink_metadata(&path).map_err(read)?;
        let mut header = tar::Header::new_ustar();
        header.set_mode(meta.mode() & 0o7777);
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_uid(0);
        header.set_gid(0);
        match &entry.kind {
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, &entry.path, io::empty())
                    .map_err(read)?;
            }
            EntryKind::File => {
                // Never through a link that replaced the file since the walk.
                let file = File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(read)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(file.metadata().map_err(read)?.len());
                tar.append_data(&mut header, &entry.path, file)
                    .map_err(read)?;
            }
            EntryKind::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, &entry.path, target)
                    .map_err(read)?;
            }
            // Fifos, sockets and devices: BuildKit's local source does not send them either.
            EntryKind::Other => {}
        }
    }
    let writer = tar.into_inner().map_err(|source| LoadError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    store_layer_image(store, writer)
}

/// Downloads `url` and stores it as a one-layer image holding it as the file `context` (see the
/// module documentation); returns the image's ID.
fn store_download(store: &Store, url: &str, session: &dyn Session) -> Result<String, LoadError> {
    let failed = |source| LoadError::Fetch {
        url: url.to_string(),
        source: Box::new(source),
    };
    let parsed = crate::fetch::parse_url(url).map_err(failed)?;
    let fetcher = Fetcher::in_store(store).map_err(failed)?;
    let auth = crate::fetch::authorization(&parsed, |id| session.secret(id)).map_err(failed)?;
    let stored = |err: ArchiveError| LoadError::Store(err);
    let _lease = store.lease().map_err(|e| stored(e.into()))?;
    let fetched = fetcher
        .fetch(&parsed, None, auth.as_ref())
        .map_err(failed)?;
    let blob = store.blobs().path(&fetched.digest);
    let read = |source| LoadError::Read {
        path: blob.clone(),
        source,
    };
    let file = File::open(&blob).map_err(read)?;
    let writer = store.blobs().writer().map_err(|e| stored(e.into()))?;
    let mut tar = tar::Builder::new(writer);
    tar.mode(tar::HeaderMode::Complete);
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o600);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(u64::try_from(fetched.mtime()).unwrap_or(0));
    header.set_size(fetched.size);
    tar.append_data(&mut header, CONTEXT_FILE, file)
        .map_err(read)?;
    let writer = tar.into_inner().map_err(read)?;
    store_layer_image(store, writer)
}

/// Stores the uncompressed layer tar written to `writer` as the one layer of an image whose
/// config is only the host platform (a named context has no image config); returns its ID.
fn store_layer_image(store: &Store, mut writer: BlobWriter) -> Result<String, LoadError> {
    let stored = |err: ArchiveError| LoadError::Store(err);
    writer
        .flush()
        .map_err(|e| stored(FsError::new("write a blob in", store.staging().dir(), e).into()))?;
    let blob = writer.commit(None).map_err(|e| stored(e.into()))?;
    let layer = LayerInfo {
        digest: blob.digest.clone(),
        size: blob.size,
        media_type: MediaType::from(Compression::None.media_type()),
        diff_id: blob.digest.clone(),
    };
    unpack_layer(store, &layer, DEFAULT_MAX_BYTES).map_err(stored)?;
    let platform = Platform::host();
    let mut config = serde_json::json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
    });
    if let (Some(variant), Some(object)) = (&platform.variant, config.as_object_mut()) {
        object.insert("variant".into(), serde_json::json!(variant));
    }
    let bytes = serde_json::to_vec(&config).map_err(|e| LoadError::Read {
        path: store.root().to_path_buf(),
        source: e.into(),
    })?;
    let layers = [descriptor(
        layer.media_type.clone(),
        &layer.digest,
        layer.size,
    )];
    let image = store
        .write_image_json(&bytes, &layers)
        .map_err(|e| stored(e.into()))?;
    Ok(image.id.to_string())
}

/// The annotation an OCI layout's `index.json` names a tag by.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image of an OCI layout directory, read and checked ([`read_layout_image`]).
struct LayoutImage {
    config_bytes: Vec<u8>,
    /// Each layer's descriptor with its diff ID, base first.
    layers: Vec<(crate::registry::manifest::Descriptor, crate::oci::Digest)>,
}

/// Copies the image `reference` (`:TAG`, `@DIGEST`; `None`: the tag `latest`, or the only
/// image) of the OCI layout directory `layout` into the store (for the host's platform when it
/// is an index), as buildx resolves an `oci-layout://` context on the client; returns its ID.
/// Every blob is checked against its digest as it is copied; layers are unpacked like pulled
/// ones.
fn store_layout_image(
    store: &Store,
    layout: &Path,
    reference: Option<&str>,
) -> Result<String, LoadError> {
    let LayoutImage {
        config_bytes,
        layers,
    } = read_layout_image(layout, reference)?;
    let blob_path = |digest: &crate::oci::Digest| {
        layout
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    };
    let stored = |err: ArchiveError| LoadError::Store(err);
    let _lease = store.lease().map_err(|e| stored(e.into()))?;
    let mut descriptors = Vec::new();
    for (layer, diff_id) in layers {
        if !store.blobs().contains(&layer.digest) {
            let path = blob_path(&layer.digest);
            let mut file = File::open(&path).map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            })?;
            let mut writer = store.blobs().writer().map_err(|e| stored(e.into()))?;
            io::copy(&mut file, &mut writer).map_err(|source| LoadError::Read { path, source })?;
            writer
                .commit_exact(&layer.digest, layer.size)
                .map_err(|e| stored(e.into()))?;
        }
        let info = LayerInfo {
            digest: layer.digest.clone(),
            size: layer.size,
            media_type: MediaType::from(layer.media_type.as_str()),
            diff_id,
        };
        unpack_layer(store, &info, DEFAULT_MAX_BYTES).map_err(stored)?;
        descriptors.push(descriptor(info.media_type.clone(), &info.digest, info.size));
    }
    let image = store
        .write_image_json(&config_bytes, &descriptors)
        .map_err(|e| stored(e.into()))?;
    Ok(image.id.to_string())
}

/// Reads the image `reference` of the OCI layout `layout` (see [`store_layout_image`]): its
/// index, manifest and config, each checked against its digest; the layers are not read.
fn read_layout_image(layout: &Path, reference: Option<&str>) -> Result<LayoutImage, LoadError> {
    use crate::oci::Digest;
    use crate::registry::Manifest;
    use crate::registry::manifest::choose;
    let bad = |what: String| LoadError::Layout(format!("{}: {what}", layout.display()));
    let read_document = |path: PathBuf| -> Result<Vec<u8>, LoadError> {
        let file = File::open(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        let mut bytes = Vec::new();
        io::Read::take(file, MAX_DOCUMENT_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            })?;
        if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
            return Err(LoadError::Layout(format!(
                "{} is larger than {MAX_DOCUMENT_SIZE} bytes",
                path.display()
            )));
        }
        Ok(bytes)
    };
    let blob_path = |digest: &Digest| {
        layout
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    };
    let index: serde_json::Value =
        serde_json::from_slice(&read_document(layout.join("index.json"))?)
            .map_err(|e| bad(format!("index.json is not JSON: {e}")))?;
    let entries = index
        .get("manifests")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    let digest_of = |entry: &serde_json::Value| {
        entry
            .get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| Digest::parse(d).ok())
    };
    let ref_name = |entry: &serde_json::Value| {
        entry
            .get("annotations")
            .and_then(|a| a.get(REF_NAME))
            .and_then(|n| n.as_str())
            .map(str::to_string)
    };
    let mut digest = match reference {
        Some(at) if at.starts_with('@') => {
            Digest::parse(&at[1..]).map_err(|e| bad(format!("{at} is not a digest: {e}")))?
        }
        tag => {
            let tag = tag.map_or("latest", |t| t.trim_start_matches(':'));
            let tagged = entries
                .iter()
                .find(|e| ref_name(e).as_deref() == Some(tag))
                .or_else(|| (reference.is_none() && entries.len() == 1).then(|| &entries[0]));
            tagged
                .and_then(digest_of)
                .ok_or_else(|| bad(format!("index.json names no image {tag:?}")))?
        }
    };
    // An index leads to the host platform's manifest; a bound on the hops stops a loop.
    let mut hops = 0;
    let (config, layers) = loop {
        hops += 1;
        if hops > 4 {
            return Err(bad("indexes nest too deep".to_string()));
        }
        let bytes = read_document(blob_path(&digest))?;
        if Digest::of(&bytes) != digest {
            return Err(bad(format!("blob {digest} does not match its digest")));
        }
        match Manifest::parse(None, bytes).map_err(|e| bad(format!("{digest}: {e}")))? {
            Manifest::Index { manifests, .. } => {
                let chosen = choose(&manifests, &Platform::host()).ok_or_else(|| {
                    bad(format!("{digest} has no image for {}", Platform::host()))
                })?;
                digest = chosen.digest.clone();
            }
            Manifest::Image { config, layers, .. } => break (config, layers),
        }
    };
    let config_bytes = read_document(blob_path(&config.digest))?;
    if Digest::of(&config_bytes) != config.digest {
        return Err(bad(format!(
            "config {} does not match its digest",
            config.digest
        )));
    }
    let parsed: serde_json::Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| bad(format!("the image config is not JSON: {e}")))?;
    let diff_ids: Vec<Digest> = parsed
        .pointer("/rootfs/diff_ids")
        .and_then(|d| d.as_array())
        .map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_str().and_then(|id| Digest::parse(id).ok()))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != layers.len() {
        return Err(bad(
            "the config's diff IDs do not match the layers".to_string()
        ));
    }
    Ok(LayoutImage {
        config_bytes,
        layers: layers.into_iter().zip(diff_ids).collect(),
    })
}

impl NamedContext {
    /// Parses one `--build-context NAME=VALUE` flag into its name and context. As buildx
    /// does, a value with no known `SCHEME://` prefix is a local directory.
    pub fn parse(flag: &str) -> Result<(String, NamedContext), NamedContextError> {
        let (name, value) = flag
            .split_once('=')
            .filter(|(name, value)| !name.is_empty() && !value.is_empty())
            .ok_or_else(|| NamedContextError::NoName(flag.to_string()))?;
        let invalid = |what| NamedContextError::Invalid {
            name: name.to_string(),
            value: value.to_string(),
            what,
        };
        let context = if let Some(reference) = value.strip_prefix("docker-image://") {
            if reference.is_empty() {
                return Err(invalid("docker-image:// needs an image reference"));
            }
            NamedContext::Image(reference.to_string())
        } else if let Some(rest) = value.strip_prefix("oci-layout://") {
            let (path, reference) = split_layout(rest);
            if path.is_empty() {
                return Err(invalid("oci-layout:// needs a directory"));
            }
            NamedContext::OciLayout {
                path: PathBuf::from(path),
                reference: reference.map(str::to_string),
            }
        } else if let Some(reference) =
            git_reference(value).map_err(|source| NamedContextError::Git {
                name: name.to_string(),
                source,
            })?
        {
            NamedContext::Git(GitSource::new(&reference))
        } else if value.starts_with("http://") || value.starts_with("https://") {
            crate::fetch::parse_url(value).map_err(|_| invalid("not a valid http(s) URL"))?;
            NamedContext::Url(value.to_string())
        } else if value.contains("://") {
            return Err(invalid(
                "give a directory, docker-image://REF, oci-layout://PATH or an http(s) URL",
            ));
        } else {
            NamedContext::Local(PathBuf::from(value))
        };
        Ok((name.to_string(), context))
    }
}

/// The git repository a named context's value names, as BuildKit's `NamedContext.load` reads
/// it: a `git://`, `ssh://` or http(s) `.git` URL, or the scp-like form only as `git@…` (any
/// other `user@host:path` is a local directory, as `--build-context` has always read it).
fn git_reference(value: &str) -> Result<Option<GitRef>, GitUrlError> {
    if !value.contains("://") && !value.starts_with("git@") {
        return Ok(None);
    }
    GitRef::parse(value)
}

/// `PATH[:TAG|@DIGEST]` split at the reference: `@` starts a digest; otherwise a `:` after the
/// last `/` starts a tag.
fn split_layout(rest: &str) -> (&str, Option<&str>) {
    if let Some(at) = rest.rfind('@') {
        return (&rest[..at], Some(&rest[at..]));
    }
    let last = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last..].find(':') {
        Some(colon) => (&rest[..last + colon], Some(&rest[last + colon..])),
        None => (rest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_refuses_what_is_not_supported() {
        assert_eq!(
            NamedContext::parse("base=docker-image://alpine:3.20").unwrap(),
            ("base".into(), NamedContext::Image("alpine:3.20".into()))
        );
        assert_eq!(
            NamedContext::parse("src=../lib").unwrap(),
            ("src".into(), NamedContext::Local("../lib".into()))
        );
        assert_eq!(
            NamedContext::parse("img=oci-layout:///x/layout:v1")
                .unwrap()
                .1,
            NamedContext::OciLayout {
                path: "/x/layout".into(),
                reference: Some(":v1".into())
            }
        );
        assert_eq!(
            NamedContext::parse("img=oci-layout://lay@sha256:ab")
                .unwrap()
                .1,
            NamedContext::OciLayout {
                path: "lay".into(),
                reference: Some("@sha256:ab".into())
            }
        );
        let NamedContext::Git(git) = NamedContext::parse("g=https://github.com/x/y.git#v1:sub")
            .unwrap()
            .1
        else {
            panic!("not a git context");
        };
        assert_eq!(
            (
                git.remote.as_str(),
                git.reference.as_str(),
                git.subdir.as_str()
            ),
            ("https://github.com/x/y.git", "v1", "sub")
        );
        for value in ["git@github.com:x/y.git", "git://h/r", "ssh://git@h/r.git"] {
            let parsed = NamedContext::parse(&format!("g={value}")).unwrap().1;
            assert!(matches!(parsed, NamedContext::Git(_)), "{value}");
        }
        assert_eq!(
            NamedContext::parse("d=me@host:dir").unwrap().1,
            NamedContext::Local("me@host:dir".into())
        );
        let err = NamedContext::parse("g=https://u:pw@h/y.git?bad=1").unwrap_err();
        assert!(err.to_string().contains("unexpected query"), "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");
        assert_eq!(
            NamedContext::parse("u=https://example.com/ctx.tar").unwrap(),
            (
                "u".into(),
                NamedContext::Url("https://example.com/ctx.tar".into())
            )
        );
        assert!(matches!(
            NamedContext::parse("=x"),
            Err(NamedContextError::NoName(_))
        ));
        assert!(matches!(
            NamedContext::parse("x=docker-image://"),
            Err(NamedContextError::Invalid { .. })
        ));
    }
}
