//! `SOURCE_DATE_EPOCH` as BuildKit v0.32 resolves it before it plans the stages
//! (dockerfile2llb/epoch.go `resolveSourceDateEpochValue`, dockerui
//! `ResolveMainContextSourceDateEpoch`). The value is the build arg, else the global ARG's:
//!
//! - empty: no epoch;
//! - whole seconds: that time (kiln refuses a negative one);
//! - `context`: the time of a remote build context (a download's `Last-Modified`, else the
//!   newest file of its archive; a git repository's commit), none for a local one;
//! - otherwise it must be a valid context or stage name (BuildKit looks it up as a named
//!   context first: "invalid context name"), and then names, in this order: a
//!   `--build-context` (a git repository gives its commit's time, a URL as below, any other
//!   kind none), or a source-only stage (`FROM scratch`, ARGs and one ADD of one http(s) URL or
//!   git repository; [`crate::frontend::stage::epoch_stage`]) whose source gives the time.
//!
//! A remote source's time is BuildKit's source metadata: a git source's commit's `committer`
//! time, kept in the committer's zone (BuildKit writes the image's times in it); a URL's
//! `Last-Modified` (never asked with a pinned `--checksum`, which BuildKit resolves without a
//! request), else, once downloaded, the newest mtime of the regular files of the archive it is
//! (gzip, bzip2, xz, zstd or plain tar), else none. Without a time the value becomes empty.
//!
//! The value the stages then see as `SOURCE_DATE_EPOCH` (an ARG's, a RUN's) is the time in
//! seconds, or empty when there is none, as BuildKit rewrites the build arg. A dry run fetches
//! nothing: it checks the stage's rules and lists the source the build would ask.

use super::check::{RemoteKind, RemoteSource};
use super::git_context;
use super::steps::copy::extract::decompressed;
use super::{BuildError, BuildOptions, Session, off_runtime};
use crate::error::Cause;
use crate::fetch::{Fetcher, authorization, parse_url};
use crate::frontend::stage::{EpochStageError, ResolveOptions, named_context_key};
use crate::git::{GitCache, GitOptions, GitRef, GitSource};
use crate::oci::timestamp::{ZonedTime, parse_http_date};
use crate::oci::{Digest, Reference};
use crate::store::Store;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// How many decompressed bytes of a download are read for its files' times, at most.
const MAX_ARCHIVE_SCAN_BYTES: u64 = 16 << 30;

/// What `SOURCE_DATE_EPOCH` resolved to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Epoch {
    /// The image's time.
    pub time: Option<ZonedTime>,
    /// The value the stages see instead of the one given (the time in seconds, or empty),
    /// when the given one was a name.
    pub arg: Option<String>,
    /// In a dry run, the remote source the build would ask for the time, not fetched.
    pub unfetched: Option<RemoteSource>,
}

/// A remote source whose time `SOURCE_DATE_EPOCH` takes.
#[derive(Debug, Clone)]
enum TimeSource {
    Url {
        url: String,
        checksum: Option<Digest>,
    },
    Git(GitSource),
}

impl TimeSource {
    /// As the dry run lists it.
    fn remote(&self) -> RemoteSource {
        let (kind, source) = match self {
            TimeSource::Url { url, .. } => (RemoteKind::Url, shown_url(url)),
            TimeSource::Git(source) => (RemoteKind::Git, source.remote_shown.clone()),
        };
        RemoteSource {
            kind,
            source,
            stored: false,
        }
    }
}

/// Resolves `SOURCE_DATE_EPOCH` for `options` (see the module documentation), with
/// `build_args` as the build passes them. With `fetch` (a build) the sources are asked through
/// `store`; without it (a dry run) nothing is fetched.
pub(super) async fn resolve(
    store: Option<&Store>,
    fetch: bool,
    options: &BuildOptions,
    build_args: &BTreeMap<String, String>,
) -> Result<Epoch, BuildError> {
    // A Dockerfile that does not parse or whose global scope does not expand has no value
    // here: the plan then reports the problem where it is.
    let Ok(dockerfile) = crate::frontend::parse(&options.dockerfile) else {
        return Ok(Epoch::default());
    };
    let resolve_options = ResolveOptions {
        build_args: build_args.clone(),
        target: options.target.clone(),
        ..ResolveOptions::default()
    };
    let value = match crate::frontend::stage::source_date_epoch_arg(&dockerfile, &resolve_options) {
        Ok(Some(value)) if !value.is_empty() => value,
        _ => return Ok(Epoch::default()),
    };
    // The value as an error shows it: bounded, whatever was passed.
    let shown: String = value.chars().take(40).collect();
    if let Ok(seconds) = value.parse::<i64>() {
        if seconds < 0 {
            return Err(BuildError::SourceDateEpoch(shown));
        }
        return Ok(Epoch {
            time: Some(ZonedTime::utc(seconds)),
            ..Epoch::default()
        });
    }
    if value == "context" {
        let time = options.remote_context.as_ref().and_then(|c| c.epoch);
        return Ok(resolved(time));
    }
    if let Err(err) = Reference::parse_normalized(&value) {
        return Err(BuildError::SourceDateEpochName {
            value: shown,
            reason: err.to_string(),
        });
    }
    let key = named_context_key(&value);
    let named = options
        .named_contexts
        .iter()
        .find(|(name, _)| named_context_key(name) == key);
    let source = match named {
        Some((_, super::NamedContext::Git(source))) => TimeSource::Git(source.clone()),
        Some((_, super::NamedContext::Url(url))) => TimeSource::Url {
            url: url.clone(),
            checksum: None,
        },
        // A local directory, an image or an OCI layout has no source time.
        Some(_) => return Ok(resolved(None)),
        None => stage_source(&dockerfile, &resolve_options, &value, &shown)?,
    };
    let (Some(store), true) = (store, fetch) else {
        return Ok(Epoch {
            unfetched: Some(source.remote()),
            ..Epoch::default()
        });
    };
    let (store, session) = (store.clone(), options.session.clone());
    let asked = source.clone();
    let time = off_runtime(move || source_time(&store, session, &asked)).await?;
    let time = time.map_err(|cause| BuildError::SourceDateEpochFetch {
        from: source.remote().source,
        cause,
    })?;
    Ok(resolved(time))
}

/// The epoch a name resolved to, and the value the stages see for it.
fn resolved(time: Option<ZonedTime>) -> Epoch {
    Epoch {
        time,
        arg: Some(time.map_or_else(String::new, |t| t.seconds.to_string())),
        unfetched: None,
    }
}

/// The source of the stage `value` names, checked with BuildKit's rules.
fn stage_source(
    dockerfile: &crate::frontend::ast::Dockerfile,
    options: &ResolveOptions,
    value: &str,
    shown: &str,
) -> Result<TimeSource, BuildError> {
    let stage = match crate::frontend::stage::epoch_stage(dockerfile, options, value) {
        Ok(Some(stage)) => stage,
        Ok(None) => return Err(BuildError::SourceDateEpoch(shown.to_string())),
        Err(EpochStageError::Stage(err)) => {
            return Err(BuildError::Plan(crate::frontend::plan::PlanError::Stage(
                err,
            )));
        }
        Err(EpochStageError::Rule {
            stage,
            reason,
            span,
        }) => {
            return Err(BuildError::SourceDateEpochStage {
                stage,
                reason,
                span,
            });
        }
    };
    let refuse = |reason: String| BuildError::SourceDateEpochStage {
        stage: stage.stage.clone(),
        reason,
        span: stage.span,
    };
    match GitRef::parse(&stage.source) {
        Err(err) => Err(refuse(err.to_string())),
        Ok(Some(reference)) => {
            let mut source = GitSource::new(&reference);
            if stage.checksum.is_some() {
                source.checksum = stage.checksum.clone();
            }
            Ok(TimeSource::Git(source))
        }
        Ok(None) if parse_url(&stage.source).is_ok() => {
            let checksum = match &stage.checksum {
                Some(text) => Some(Digest::parse(text).map_err(|err| refuse(err.to_string()))?),
                None => None,
            };
            Ok(TimeSource::Url {
                url: stage.source.clone(),
                checksum,
            })
        }
        Ok(None) => Err(refuse(
            "SOURCE_DATE_EPOCH stage source must be a single HTTP(S) or Git ADD".into(),
        )),
    }
}

/// The time `source` gives (blocks: downloads and git run here).
fn source_time(
    store: &Store,
    session: Arc<dyn Session>,
    source: &TimeSource,
) -> Result<Option<ZonedTime>, Cause> {
    match source {
        TimeSource::Git(source) => {
            let cache = GitCache::new(store, GitOptions::from_env());
            let auth = git_context::git_auth(session.as_ref(), source)?;
            let resolved = cache.resolve(source, &auth, &|| false)?;
            Ok(Some(cache.commit_time(
                source,
                &resolved,
                &auth,
                &|| false,
            )?))
        }
        TimeSource::Url { url, checksum } => {
            let parsed = parse_url(url)?;
            // No prune collects the download before its archive is read.
            let _lease = store.lease()?;
            let fetcher = Fetcher::in_store(store)?;
            let auth = authorization(&parsed, |id| session.secret(id))?;
            let fetched = fetcher.fetch(&parsed, checksum.as_ref(), auth.as_ref())?;
            if checksum.is_none()
                && let Some(seconds) = fetched.last_modified.as_deref().and_then(parse_http_date)
            {
                return Ok(Some(ZonedTime::utc(seconds)));
            }
            newest_in_archive(&store.blobs().path(&fetched.digest))
        }
    }
}

/// The newest mtime of the regular files (anything but a directory, symlink, device or fifo,
/// as Go's `FileInfo.Mode().IsRegular()` of a tar header) of the archive at `path`, whatever
/// its compression (BuildKit's `archiveMaxTimeFromRef` with non-archives allowed): `None` when
/// it is not an archive, holds no such file, or does not read to its end. More than
/// [`MAX_ARCHIVE_SCAN_BYTES`] decompressed bytes is an error (a decompression bomb).
fn newest_in_archive(path: &Path) -> Result<Option<ZonedTime>, Cause> {
    let file = std::fs::File::open(path)?;
    let Ok(reader) = decompressed(file) else {
        return Ok(None);
    };
    let mut counted = Counted {
        inner: reader.take(MAX_ARCHIVE_SCAN_BYTES + 1),
        read: 0,
    };
    let newest = newest_regular(&mut counted);
    if counted.read > MAX_ARCHIVE_SCAN_BYTES {
        return Err(format!(
            "the download holds more than {MAX_ARCHIVE_SCAN_BYTES} bytes once decompressed, \
             too many to read its files' times"
        )
        .into());
    }
    Ok(newest.map(ZonedTime::utc))
}

/// [`newest_in_archive`]'s walk of the tar stream `reader`.
fn newest_regular(reader: &mut dyn Read) -> Option<i64> {
    use tar::EntryType;
    let mut archive = tar::Archive::new(reader);
    let mut newest: Option<i64> = None;
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::Directory
                | EntryType::Symlink
                | EntryType::Char
                | EntryType::Block
                | EntryType::Fifo
        ) {
            continue;
        }
        let pax_mtime = entry.pax_extensions().ok().flatten().and_then(|pax| {
            pax.flatten()
                .find(|e| e.key() == Ok("mtime"))
                .and_then(|e| e.value().ok().map(str::to_string))
        });
        let mtime = match pax_mtime {
            // Whole seconds: the fraction is dropped (SOURCE_DATE_EPOCH is seconds).
            Some(text) => text.split('.').next()?.parse::<i64>().ok()?,
            None => i64::try_from(entry.header().mtime().ok()?).ok()?,
        };
        newest = Some(newest.map_or(mtime, |n| n.max(mtime)));
    }
    newest
}

/// A reader that counts what it gives.
struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// `url` without a password, for messages.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("xxxxx"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, u64)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, mtime) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mtime(*mtime);
            header.set_mode(0o644);
            header.set_size(0);
            if *kind == tar::EntryType::Symlink {
                header.set_link_name("target").unwrap();
            }
            builder
                .append_data(&mut header, name, std::io::empty())
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn the_newest_regular_file_of_an_archive_gives_the_time() {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let tar = tar_with(&[
            ("d/", Directory, 3_000),
            ("d/a", Regular, 1_000),
            ("b", Regular, 2_000),
            ("l", Symlink, 4_000),
            ("h", Link, 1_500),
        ]);
        std::fs::write(&path, &tar).unwrap();
        assert_eq!(
            newest_in_archive(&path).unwrap(),
            Some(ZonedTime::utc(2_000))
        );
        // Compressed the same.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        assert_eq!(
            newest_in_archive(&path).unwrap(),
            Some(ZonedTime::utc(2_000))
        );
        // No regular file, not an archive, a cut archive: no time.
        std::fs::write(&path, tar_with(&[("d/", Directory, 3_000)])).unwrap();
        assert_eq!(newest_in_archive(&path).unwrap(), None);
        std::fs::write(&path, b"just text\n").unwrap();
        assert_eq!(newest_in_archive(&path).unwrap(), None);
        std::fs::write(&path, &tar[..700]).unwrap();
        assert_eq!(newest_in_archive(&path).unwrap(), None);
    }

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            shown_url("https://user:secret@example.com/f.tgz"),
            "https://user:xxxxx@example.com/f.tgz"
        );
        assert_eq!(shown_url("https://example.com/f"), "https://example.com/f");
    }
}
