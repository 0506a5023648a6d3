//! Build contexts from git repositories, as BuildKit v0.32's dockerui `DetectGitContext` makes
//! them: the positional context (`kiln build https://host/repo.git#ref:subdir`, `ssh://…`,
//! `git@host:repo.git`) and `--build-context NAME=<git ref>`.
//!
//! The repository is fetched and checked out as for `ADD <git ref>` ([`crate::git`]), into
//! the store's cache, and that checkout is the context directory: its Dockerfile is read from
//! it (`-f` is relative to the subdirectory) and BuildKit applies no `.dockerignore` to it.
//! Files have the checkout's time, or the commit's with `mtime=commit` and, for the main
//! context, when `SOURCE_DATE_EPOCH` is set (BuildKit's `GitMTimeCommit`). The commit's time
//! is the context's for `SOURCE_DATE_EPOCH=context`. The build argument
//! `BUILDKIT_CONTEXT_KEEP_GIT_DIR=true` keeps the main context's `.git`.

use crate::builder::steps::mounts::Session;
use crate::error::Cause;
use crate::git::{
    Checkout, GitAuth, GitCache, GitError, GitOptions, GitRef, GitSource, GitUrlError,
};
use crate::oci::csv::parse_go_bool;
use crate::oci::timestamp::ZonedTime;
use crate::store::Store;
use std::collections::BTreeMap;

/// A git context that could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum GitContextError {
    #[error(transparent)]
    Reference(#[from] GitUrlError),
    #[error("cannot fetch the git context {remote}")]
    Fetch {
        remote: String,
        #[source]
        source: Box<GitError>,
    },
    #[error(transparent)]
    Secret(#[from] GitSecretError),
}

/// A `GIT_AUTH_*` secret that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the secret {name} for the git fetch")]
pub struct GitSecretError {
    pub name: String,
    #[source]
    pub source: Cause,
}

/// The git source the positional context `value` names, or `None` when it is not a git
/// reference. `build_args` may ask for the `.git` (`BUILDKIT_CONTEXT_KEEP_GIT_DIR`) and the
/// commit's time (`SOURCE_DATE_EPOCH`).
pub fn main_context(
    value: &str,
    build_args: &BTreeMap<String, String>,
) -> Result<Option<GitSource>, GitUrlError> {
    let Some(reference) = GitRef::parse(value)? else {
        return Ok(None);
    };
    let mut source = GitSource::new(&reference);
    if build_args
        .get("BUILDKIT_CONTEXT_KEEP_GIT_DIR")
        .is_some_and(|v| parse_go_bool(v) == Some(true))
    {
        source.keep_git_dir = true;
    }
    if build_args
        .get("SOURCE_DATE_EPOCH")
        .is_some_and(|v| !v.is_empty())
    {
        source.mtime_commit = true;
    }
    Ok(Some(source))
}

/// A git context: its checkout and its commit's time.
#[derive(Debug)]
pub struct GitContext {
    /// The context directory, held (no prune removes it) until it drops.
    pub checkout: Checkout,
    /// The commit's time in its committer's zone: the context's time for
    /// `SOURCE_DATE_EPOCH=context` or `=NAME` (BuildKit's source metadata of a git source).
    pub time: ZonedTime,
}

/// The checkout of `source` (fetched into the store when it has none) and its commit's time.
pub fn fetch(
    store: &Store,
    source: &GitSource,
    session: &dyn Session,
) -> Result<GitContext, GitContextError> {
    let cache = GitCache::new(store, GitOptions::from_env());
    let auth = git_auth(session, source)?;
    let fetched = cache
        .resolve(source, &auth, &|| false)
        .and_then(|resolved| {
            let checkout = cache.checkout(source, &resolved, &auth, &|| false)?;
            let time = cache.commit_time(source, &resolved, &auth, &|| false)?;
            Ok(GitContext { checkout, time })
        });
    fetched.map_err(|err| GitContextError::Fetch {
        remote: source.remote_shown.clone(),
        source: Box::new(err),
    })
}

/// What a git fetch of `source` authenticates with: the first of BuildKit's `GIT_AUTH_HEADER`
/// and `GIT_AUTH_TOKEN` secrets (per host, then without) the build was given, and for an ssh
/// remote the `--ssh default` agent (BuildKit's `MountSSHSock` default).
pub fn git_auth(session: &dyn Session, source: &GitSource) -> Result<GitAuth, GitSecretError> {
    let mut auth = GitAuth::default();
    for (name, token) in source.auth_secret_names() {
        let secret = session.secret(&name).map_err(|source| GitSecretError {
            name: name.clone(),
            source,
        })?;
        if let Some(secret) = secret {
            auth = if token {
                GitAuth::from_token(secret.as_bytes())
            } else {
                GitAuth::from_header(secret.as_bytes())
            };
            break;
        }
    }
    if source.scheme_ssh {
        auth.ssh_auth_sock = session.ssh_socket("default");
    }
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_context_reads_its_build_args() {
        let none = BTreeMap::new();
        assert_eq!(main_context("./dir", &none).unwrap(), None);
        assert_eq!(main_context("https://h/file.tar", &none).unwrap(), None);
        let plain = main_context("https://h/r.git#v1:sub", &none)
            .unwrap()
            .unwrap();
        assert_eq!(
            (plain.reference.as_str(), plain.subdir.as_str()),
            ("v1", "sub")
        );
        assert!(!plain.keep_git_dir && !plain.mtime_commit && plain.submodules);
        let args: BTreeMap<String, String> = [
            ("BUILDKIT_CONTEXT_KEEP_GIT_DIR", "1"),
            ("SOURCE_DATE_EPOCH", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let asked = main_context("git@h:r.git", &args).unwrap().unwrap();
        assert!(asked.keep_git_dir && asked.mtime_commit && asked.scheme_ssh);
        assert!(main_context("https://h/r.git?nope=1", &none).is_err());
    }
}
