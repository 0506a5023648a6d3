//! Git repositories for `ADD <git ref>`, git build contexts and `--build-context NAME=<git ref>`,
//! as BuildKit v0.32's git source (`source/git/source.go`) fetches them.
//!
//! kiln runs the `git` binary, as BuildKit does, rather than a library (gitoxide): every
//! transport and its authentication (smart and dumb http with proxies, `git://`, ssh through
//! the user's agent), shallow fetches with the server's fallbacks, submodules and the checkout
//! rules that refuse `..` and `.git` paths are git's own, the ones users' repositories are
//! tested against, and gitoxide does not yet do submodule updates or every transport. The
//! cost is a process per command; [`command`] bounds each one (time, output, the size of what
//! it writes: `KILN_GIT_MAX_BYTES`), cleans its environment (no system or user config, no
//! prompt) and allows only the http(s), git and ssh transports. A checkout's tree is summed
//! (`ls-tree --long`) before any file of it is written, so one over the cap fails at once.
//!
//! The flow, BuildKit's:
//!
//! 1. [`GitCache::resolve`]: `git ls-remote` gives the commit the ref names now (a full commit
//!    id is taken as it is, with no request). This is the step's cache key: a new commit
//!    upstream is a new key, the same commit a cache hit with nothing fetched.
//! 2. [`GitCache::checkout`]: when the store has no checkout of that commit yet, the commit is
//!    fetched (shallow where the server allows) into a bare repository kept per remote under
//!    `<store>/cache/git/repos/`, then checked out (with submodules unless `submodules=false`;
//!    with a self-contained `.git` for `keep-git-dir`) into the store's staging, trimmed to the
//!    subdirectory, synced and renamed into `<store>/cache/git/checkouts/<key>/`: a killed
//!    checkout is never seen half made (the store's snapshot recipe). Files get the time of
//!    the checkout (BuildKit's default) or the commit's time (`mtime=commit`). The caller
//!    reads it through a [`Checkout`], which holds a store lease: `kiln prune` ([`GitCache::prune`])
//!    never removes a checkout under its reader.
//!
//! A repository cannot write outside its checkout: git refuses `..` and `.git` paths and
//! writes nothing beyond a symlink, kiln fails on any path git refuses (git itself only warns)
//! rather than build a partial tree, a subdirectory must be real directories all the way down
//! (no symlink), and the copy out of the checkout keeps symlinks as symlinks.
//!
//! Credentials are BuildKit's: the secrets `GIT_AUTH_TOKEN.<host>`, `GIT_AUTH_HEADER.<host>`,
//! `GIT_AUTH_TOKEN` and `GIT_AUTH_HEADER` become an `Authorization` header passed to git in
//! its environment, and an ssh remote uses the build's `--ssh default` agent. Neither they nor
//! a URL's password reach a message, a key or a checkout (a kept `.git` names the remote with
//! its credentials redacted).

mod command;
mod prune;
mod url;

pub use command::{DEFAULT_MAX_BYTES, GitAuth, GitOptions};
pub use prune::{GitPrune, GitUsage};
pub use url::{GitRef, GitUrlError, MtimePolicy, Scheme, clean_subdir, is_git_source, redact};

use crate::error::escape_controls;
use crate::oci::Digest;
use crate::oci::timestamp::ZonedTime;
use crate::store::{Lease, Store, StoreError};
use crate::sys::FsError;
use crate::sys::atomic::{IoContext as _, remove_tree, tree_size};
use command::{Git, Watch};
use serde::Serialize;
use std::fs;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// A git fetch or checkout that failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run {program}: is git installed?")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("git {command} of {remote} failed ({status}): {stderr}")]
    Command {
        command: String,
        remote: String,
        status: String,
        stderr: String,
    },
    #[error("git {command} of {remote}: {reason}")]
    Output {
        command: String,
        remote: String,
        reason: String,
    },
    #[error(
        "git {command} of {remote} did not finish within {seconds} s (KILN_GIT_TIMEOUT sets the limit)"
    )]
    Timeout {
        command: String,
        remote: String,
        seconds: u64,
    },
    #[error("the git fetch was canceled")]
    Canceled,
    #[error(
        "the {what} of {remote} is larger than {limit} bytes (KILN_GIT_MAX_BYTES sets the limit)"
    )]
    TooLarge {
        what: &'static str,
        remote: String,
        limit: u64,
    },
    #[error("repository {remote} does not contain ref {reference}")]
    NoRef { remote: String, reference: String },
    #[error("could not find the default branch of {remote}")]
    NoDefaultBranch { remote: String },
    #[error("invalid checksum {0} for Git URL, expected hex commit hash")]
    BadChecksum(String),
    #[error("expected checksum to match {expected}, got {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("fetch-by-commit needs a full commit id as checksum, got {0:?}")]
    FetchByCommit(String),
    #[error("{remote}: the fetched ref {reference} does not hold commit {commit}")]
    MissingCommit {
        remote: String,
        reference: String,
        commit: String,
    },
    #[error("{remote}: the repository has a path git refuses to check out: {path}")]
    HostilePath { remote: String, path: String },
    #[error("{remote}: invalid subdir {subdir:?}: {reason}")]
    Subdir {
        remote: String,
        subdir: String,
        reason: String,
    },
    #[error("{remote}: the ssh remote needs an SSH agent: give kiln build --ssh default")]
    NoSshAgent { remote: String },
    /// The store's lease, which keeps a prune from removing a checkout in use, could not be
    /// taken.
    #[error("cannot lease the store for the git checkout")]
    Lease(#[source] StoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// What to fetch: a git reference with the Dockerfile's flags folded in. Serialized into the
/// step's definition, and debug-printed, without the remote's credentials.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct GitSource {
    /// The remote as git is given it (credentials included): never serialized or shown.
    #[serde(skip)]
    pub remote: String,
    /// The remote with its credentials redacted.
    pub remote_shown: String,
    pub scheme_ssh: bool,
    /// `host[:port]` (the per-host auth secrets' suffix); empty for the scp-like form.
    pub host: String,
    pub reference: String,
    pub subdir: String,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub submodules: bool,
    pub mtime_commit: bool,
    pub fetch_by_commit: bool,
}

impl GitSource {
    /// The source of `reference` with its own options (none set: no `.git`, submodules, the
    /// checkout's time).
    pub fn new(reference: &GitRef) -> GitSource {
        GitSource {
            remote: reference.remote.clone(),
            remote_shown: reference.redacted_remote(),
            scheme_ssh: reference.scheme == Scheme::Ssh,
            host: reference.host.clone(),
            reference: reference.reference.clone(),
            subdir: reference.subdir.clone(),
            checksum: reference.checksum.clone(),
            keep_git_dir: reference.keep_git_dir == Some(true),
            submodules: reference.submodules != Some(false),
            mtime_commit: reference.mtime == Some(MtimePolicy::Commit),
            fetch_by_commit: reference.fetch_by_commit,
        }
    }

    /// The names of the secrets BuildKit looks an `Authorization` header up in, first found
    /// first (`GIT_AUTH_HEADER.<host>`, `GIT_AUTH_TOKEN.<host>`, then without the host), and
    /// whether each is a token. The scp-like form has none.
    pub fn auth_secret_names(&self) -> Vec<(String, bool)> {
        if self.host.is_empty() {
            return Vec::new();
        }
        vec![
            (format!("GIT_AUTH_HEADER.{}", self.host), false),
            (format!("GIT_AUTH_TOKEN.{}", self.host), true),
            ("GIT_AUTH_HEADER".to_string(), false),
            ("GIT_AUTH_TOKEN".to_string(), true),
        ]
    }

    /// The URL prefix the header goes to (BuildKit's `tokenScope`: all of github.com for a
    /// github.com remote, else the remote).
    fn auth_scope(&self) -> &str {
        ["https://github.com/", "https://www.github.com/"]
            .into_iter()
            .find(|prefix| self.remote.starts_with(prefix))
            .unwrap_or(&self.remote)
    }
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("remote", &self.remote_shown)
            .field("reference", &self.reference)
            .field("subdir", &self.subdir)
            .field("checksum", &self.checksum)
            .field("keep_git_dir", &self.keep_git_dir)
            .field("submodules", &self.submodules)
            .field("mtime_commit", &self.mtime_commit)
            .field("fetch_by_commit", &self.fetch_by_commit)
            .finish()
    }
}

/// What a ref resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The object the ref names: a commit, or an annotated tag.
    pub object: String,
    /// The full ref that matched (`refs/heads/main`); the commit for a commit ref.
    pub used_ref: String,
    /// The commit an annotated tag points to.
    pub peeled: Option<String>,
}

impl Resolved {
    /// The commit whose tree is checked out.
    pub fn commit(&self) -> &str {
        self.peeled.as_deref().unwrap_or(&self.object)
    }

    /// The text a cache key is made of: the commit, and for a kept `.git` (which holds the
    /// ref and the remote) the ref's object and name, as BuildKit's `shaToCacheKey`; the
    /// source's options. Never a credential.
    pub fn key_text(&self, source: &GitSource) -> String {
        let mut text = format!(
            "kiln-git-v1\ncommit {}\nsubdir {:?}\nsubmodules {}\n",
            self.commit(),
            source.subdir,
            source.submodules
        );
        if source.keep_git_dir {
            text.push_str(&format!(
                "git-dir {} {:?} {:?}\n",
                self.object, self.used_ref, source.remote_shown
            ));
        }
        text
    }
}

/// Whether `text` is a full commit id (sha1 or sha256), BuildKit's `IsCommitSHA`.
pub fn is_commit_sha(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The store's git repositories and checkouts (`<store>/cache/git`).
#[derive(Debug, Clone)]
pub struct GitCache {
    store: Store,
    dir: PathBuf,
    options: GitOptions,
}

/// A callback that says whether to stop.
pub type Stop<'a> = &'a (dyn Fn() -> bool + Sync);

/// A checkout in the store, held for reading: while it lives no prune removes it (it holds a
/// store [`Lease`], and the checkout's lock shared, which `kiln df` reads as "in use").
#[derive(Debug)]
pub struct Checkout {
    path: PathBuf,
    _lock: fs::File,
    _lease: Lease,
}

impl Checkout {
    /// The checkout's directory: read it, never write into it.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl GitCache {
    pub fn new(store: &Store, options: GitOptions) -> GitCache {
        GitCache {
            store: store.clone(),
            dir: store.root().join("cache").join("git"),
            options,
        }
    }

    fn git<'a>(&'a self, source: &'a GitSource, auth: &'a GitAuth, stop: Stop<'a>) -> Git<'a> {
        Git {
            options: &self.options,
            auth,
            remote: &source.remote,
            shown: &source.remote_shown,
            scope: source.auth_scope(),
            scratch: self.store.staging().dir(),
            stop,
            watch: None,
        }
    }

    /// The commit `source`'s ref names now: `git ls-remote` (BuildKit's `resolveMetadata`),
    /// or the ref itself when it is a full commit id.
    pub fn resolve(
        &self,
        source: &GitSource,
        auth: &GitAuth,
        stop: Stop<'_>,
    ) -> Result<Resolved, GitError> {
        if let Some(checksum) = &source.checksum
            && (checksum.is_empty() || !checksum.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(GitError::BadChecksum(checksum.clone()));
        }
        let checksum = source.checksum.as_deref().map(str::to_ascii_lowercase);
        if is_commit_sha(&source.reference) {
            if let Some(checksum) = &checksum
                && !source.reference.starts_with(checksum.as_str())
            {
                return Err(GitError::ChecksumMismatch {
                    expected: checksum.clone(),
                    actual: source.reference.clone(),
                });
            }
            return Ok(Resolved {
                object: source.reference.clone(),
                used_ref: source.reference.clone(),
                peeled: None,
            });
        }
        if source.fetch_by_commit {
            let commit = checksum.unwrap_or_default();
            if !is_commit_sha(&commit) {
                return Err(GitError::FetchByCommit(commit));
            }
            let used_ref = match source.reference.as_str() {
                "" => commit.clone(),
                r if r.starts_with("refs/") => r.to_string(),
                r => format!("refs/heads/{r}"),
            };
            return Ok(Resolved {
                object: commit,
                used_ref,
                peeled: None,
            });
        }
        let git = self.git(source, auth, stop);
        self.ensure_auth(source, auth)?;
        let reference = if source.reference.is_empty() {
            default_branch(&git, source)?
        } else {
            source.reference.clone()
        };
        let out = git.run(
            None,
            &[
                "ls-remote",
                "--",
                &source.remote,
                &reference,
                &format!("{reference}^{{}}"),
            ],
        )?;
        let listing = String::from_utf8_lossy(&out);
        let trimmed = |prefix: &str| reference.strip_prefix(prefix).unwrap_or(&reference);
        let partial = format!("refs/{}", trimmed("refs/"));
        let head = format!("refs/heads/{}", trimmed("refs/heads/"));
        let tag = format!("refs/tags/{}", trimmed("refs/tags/"));
        let annotated = format!("{tag}^{{}}");
        let (mut sha, mut used) = (None, String::new());
        let (mut head_sha, mut tag_sha, mut peeled) = (None, None, None);
        for line in listing.lines() {
            let Some((line_sha, line_ref)) = line.split_once('\t') else {
                continue;
            };
            let line_sha = Some(line_sha.to_string());
            if line_ref == head {
                head_sha = line_sha;
            } else if line_ref == tag {
                tag_sha = line_sha;
            } else if line_ref == annotated {
                peeled = line_sha;
            } else if line_ref == partial {
                sha = line_sha;
                used = line_ref.to_string();
            }
        }
        // git checkout prefers a branch when a name is both.
        if sha.is_none() && head_sha.is_some() {
            sha = head_sha;
            used = head;
        }
        if sha.is_some() {
            peeled = None;
        }
        if sha.is_none() && tag_sha.is_some() {
            sha = tag_sha;
            used = tag;
        }
        let Some(sha) = sha else {
            return Err(GitError::NoRef {
                remote: source.remote_shown.clone(),
                reference: escape_controls(&reference),
            });
        };
        if !is_commit_sha(&sha) || peeled.as_deref().is_some_and(|p| !is_commit_sha(p)) {
            return Err(GitError::Output {
                command: "ls-remote".into(),
                remote: source.remote_shown.clone(),
                reason: format!("invalid commit id {:?}", escape_controls(&sha)),
            });
        }
        if let Some(checksum) = &checksum
            && !sha.starts_with(checksum.as_str())
            && !peeled
                .as_deref()
                .is_some_and(|p| p.starts_with(checksum.as_str()))
        {
            return Err(GitError::ChecksumMismatch {
                expected: checksum.clone(),
                actual: match &peeled {
                    Some(p) => format!("{sha} or {p}"),
                    None => sha,
                },
            });
        }
        Ok(Resolved {
            object: sha,
            used_ref: used,
            peeled,
        })
    }

    /// An ssh remote without an agent fails before ssh is asked (BuildKit: "no SSH key
    /// forwarded from the client").
    fn ensure_auth(&self, source: &GitSource, auth: &GitAuth) -> Result<(), GitError> {
        if source.scheme_ssh && auth.ssh_auth_sock.is_none() {
            return Err(GitError::NoSshAgent {
                remote: source.remote_shown.clone(),
            });
        }
        Ok(())
    }

    /// Where the checkout of `resolved` for `source` is kept.
    fn checkout_dir(&self, source: &GitSource, resolved: &Resolved) -> PathBuf {
        let mut text = resolved.key_text(source);
        text.push_str(&format!(
            "remote {:?}\nmtime {}\n",
            source.remote_shown,
            if source.mtime_commit {
                "commit"
            } else {
                "checkout"
            }
        ));
        self.dir
            .join("checkouts")
            .join(Digest::of(text.as_bytes()).hex())
    }

    /// Whether the store already holds the checkout of `resolved`.
    pub fn has_checkout(&self, source: &GitSource, resolved: &Resolved) -> bool {
        self.checkout_dir(source, resolved).is_dir()
    }

    /// The checkout of `resolved` (see the module documentation), fetched and made when the
    /// store has none, held until the [`Checkout`] drops.
    pub fn checkout(
        &self,
        source: &GitSource,
        resolved: &Resolved,
        auth: &GitAuth,
        stop: Stop<'_>,
    ) -> Result<Checkout, GitError> {
        // Taken before anything is looked at: a prune runs entirely before or after this.
        let lease = self.store.lease().map_err(GitError::Lease)?;
        let target = self.make(source, resolved, auth, stop)?;
        let lock_path = target.with_extension("lock");
        let lock = fs::OpenOptions::new()
            .mode(0o600)
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .fs("open", &lock_path)?;
        lock.lock_shared().fs("lock", &lock_path)?;
        Ok(Checkout {
            path: target,
            _lock: lock,
            _lease: lease,
        })
    }

    /// [`GitCache::checkout`]'s directory, made when missing.
    fn make(
        &self,
        source: &GitSource,
        resolved: &Resolved,
        auth: &GitAuth,
        stop: Stop<'_>,
    ) -> Result<PathBuf, GitError> {
        let target = self.checkout_dir(source, resolved);
        if target.is_dir() {
            return Ok(target);
        }
        self.with_fetched(source, resolved, auth, stop, |git, repo| {
            // Made by another process while this one waited for the repository.
            if target.is_dir() {
                return Ok(target.clone());
            }
            let staging = self.store.staging().new_path("git");
            fs::create_dir(&staging).fs("create directory", &staging)?;
            let made = make_checkout(git, repo, source, resolved, &staging)
                .and_then(|out| publish(&staging, &out, &target));
            remove_tree(&staging)?;
            made.map(|()| target.clone())
        })
    }

    /// The time of the commit `resolved` names, in its committer's zone: what BuildKit takes
    /// for `SOURCE_DATE_EPOCH` from a git source (the `committer` line of the commit object,
    /// the tag's commit for an annotated tag). The commit is fetched when the store's
    /// repository of the remote lacks it.
    pub fn commit_time(
        &self,
        source: &GitSource,
        resolved: &Resolved,
        auth: &GitAuth,
        stop: Stop<'_>,
    ) -> Result<ZonedTime, GitError> {
        let _lease = self.store.lease().map_err(GitError::Lease)?;
        self.with_fetched(source, resolved, auth, stop, |git, repo| {
            let out = git.run(
                Some(repo),
                &[
                    &git_dir(repo),
                    "log",
                    "-1",
                    "--format=%ct %ci",
                    resolved.commit(),
                ],
            )?;
            let text = String::from_utf8_lossy(&out);
            // `1600000000 2020-09-13 15:26:40 +0300`: the seconds, and the zone last.
            let mut words = text.split_whitespace();
            let seconds = words.next().and_then(|w| w.parse::<i64>().ok());
            let offset = words.next_back().and_then(ZonedTime::parse_git_offset);
            match (seconds, offset) {
                (Some(seconds), Some(offset)) => Ok(ZonedTime { seconds, offset }),
                _ => Err(GitError::Output {
                    command: "log".into(),
                    remote: source.remote_shown.clone(),
                    reason: format!("bad commit time {:?}", escape_controls(text.trim())),
                }),
            }
        })
    }

    /// Runs `then` with the remote's bare repository holding `resolved` (fetched into it when
    /// missing), under the repository's lock: one fetch into a remote's repository at a time,
    /// also across kiln processes.
    fn with_fetched<T>(
        &self,
        source: &GitSource,
        resolved: &Resolved,
        auth: &GitAuth,
        stop: Stop<'_>,
        then: impl FnOnce(&Git<'_>, &Path) -> Result<T, GitError>,
    ) -> Result<T, GitError> {
        self.ensure_auth(source, auth)?;
        let git = self.git(source, auth, stop);
        let repos = self.dir.join("repos");
        crate::sys::atomic::create_private_dir_all(&repos)?;
        let repo = repos.join(&Digest::of(source.remote_shown.as_bytes()).hex()[..32]);
        let lock_path = repo.with_extension("lock");
        let lock_file = fs::OpenOptions::new()
            .mode(0o600)
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .fs("open", &lock_path)?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| FsError::new("lock", &lock_path, errno.into()))?;
        let existed = repo.join("HEAD").is_file();
        let fetched = self
            .ensure_repo(&git, &repo, resolved)
            .and_then(|()| fetch(&git, &repo, source, resolved));
        let fetched = match fetched {
            // A repository a killed fetch left unusable is made again once (not after a
            // fetch that was too large: it would be again).
            Err(err)
                if existed && !matches!(err, GitError::Canceled | GitError::TooLarge { .. }) =>
            {
                remove_tree(&repo)?;
                self.ensure_repo(&git, &repo, resolved)
                    .and_then(|()| fetch(&git, &repo, source, resolved))
                    .map_err(|again| match again {
                        GitError::TooLarge { .. } => again,
                        _ => err,
                    })
            }
            other => other,
        };
        if let Err(err) = fetched {
            // What a killed fetch was writing goes now (the repository is ours under the
            // lock); after a fetch too large, the whole repository, so that none of the bytes
            // it brought (loose objects too) stay: the next fetch starts afresh.
            if matches!(err, GitError::TooLarge { .. }) {
                remove_tree(&repo)?;
            } else {
                remove_incomplete_packs(&repo)?;
            }
            return Err(err);
        }
        then(&git, &repo)
    }

    /// The bare repository of a remote, made (in staging, then renamed) when missing.
    fn ensure_repo(&self, git: &Git<'_>, repo: &Path, resolved: &Resolved) -> Result<(), GitError> {
        if repo.join("HEAD").is_file() {
            return Ok(());
        }
        remove_tree(repo)?;
        let staging = self.store.staging().new_path("git-repo");
        let mut args = vec!["init", "--bare", "--quiet"];
        if resolved.commit().len() == 64 {
            args.push("--object-format=sha256");
        }
        let staged = staging.to_string_lossy().into_owned();
        args.push(&staged);
        let made = git.run(None, &args).and_then(|_| {
            fs::rename(&staging, repo)
                .fs("rename into place", repo)
                .map_err(GitError::from)
        });
        if made.is_err() {
            remove_tree(&staging)?;
        }
        made
    }
}

/// The default branch of the remote (`ls-remote --symref HEAD`).
fn default_branch(git: &Git<'_>, source: &GitSource) -> Result<String, GitError> {
    let out = git.run(None, &["ls-remote", "--symref", &source.remote, "HEAD"])?;
    let listing = String::from_utf8_lossy(&out);
    listing
        .split_whitespace()
        .find_map(|word| word.strip_prefix("refs/heads/"))
        .filter(|branch| !branch.starts_with('-') && !branch.is_empty())
        .map(str::to_string)
        .ok_or_else(|| GitError::NoDefaultBranch {
            remote: source.remote_shown.clone(),
        })
}

/// Removes the packs a killed or failed fetch left half written in the bare `repo`.
fn remove_incomplete_packs(repo: &Path) -> Result<(), GitError> {
    let packs = repo.join("objects").join("pack");
    let Ok(listing) = fs::read_dir(&packs) else {
        return Ok(());
    };
    for entry in listing {
        let entry = entry.fs("read directory", &packs)?;
        if entry.file_name().to_string_lossy().starts_with("tmp_") {
            remove_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// `--git-dir=REPO` as one argument.
fn git_dir(repo: &Path) -> String {
    format!("--git-dir={}", repo.display())
}

/// Fetches what `resolved` names into the bare `repo`, shallow where the server allows, and
/// pins it with a ref so it stays (BuildKit's `tryRemoteFetch`).
fn fetch(
    git: &Git<'_>,
    repo: &Path,
    source: &GitSource,
    resolved: &Resolved,
) -> Result<(), GitError> {
    let dir = git_dir(repo);
    let has = |object: &str| {
        git.run(
            Some(repo),
            &[
                &dir,
                "cat-file",
                "-e",
                "--",
                &format!("{object}^{{commit}}"),
            ],
        )
        .is_ok()
    };
    let object = &resolved.object;
    let pin = format!("refs/kiln/keep/{object}");
    if !has(object) {
        // The fetches together may add at most the size cap to the repository.
        let limit = tree_size(repo).saturating_add(git.options.max_bytes);
        let fetcher = git.watching(Watch {
            dir: repo,
            limit,
            what: "fetch",
        });
        // Any failure but a fetch too large lets the next way be tried.
        let too_large = |result: Result<Vec<u8>, GitError>| match result {
            Err(err @ GitError::TooLarge { .. }) => Err(err),
            other => Ok(other),
        };
        // A named ref is fetched by name; a commit (or a ref that moved since ls-remote) by id.
        let by_name = !is_commit_sha(&source.reference) && !source.fetch_by_commit;
        let mut done = by_name
            && too_large(fetcher.run(
                Some(repo),
                &[
                    &dir,
                    "fetch",
                    "--quiet",
                    "--depth=1",
                    "--no-tags",
                    "--force",
                    "--",
                    &source.remote,
                    &format!("+{}:refs/kiln/fetched", resolved.used_ref),
                ],
            ))?
            .is_ok()
            && has(object);
        if !done {
            let by_id = too_large(fetcher.run(
                Some(repo),
                &[
                    &dir,
                    "fetch",
                    "--quiet",
                    "--depth=1",
                    "--no-tags",
                    "--",
                    &source.remote,
                    object,
                ],
            ))?;
            done = by_id.is_ok() && has(object);
            if !done {
                // A server that gives only advertised refs: everything, then look.
                let mut args = vec![dir.as_str(), "fetch", "--quiet", "--tags", "--force"];
                if repo.join("shallow").exists() {
                    args.push("--unshallow");
                }
                args.extend(["--", &source.remote, "+refs/heads/*:refs/kiln/heads/*"]);
                let all = too_large(fetcher.run(Some(repo), &args))?;
                if !has(object) {
                    return Err(match (by_id, all) {
                        (Err(err), Err(_)) if !by_name => err,
                        (_, Err(err)) => err,
                        _ => GitError::MissingCommit {
                            remote: source.remote_shown.clone(),
                            reference: escape_controls(&resolved.used_ref),
                            commit: object.clone(),
                        },
                    });
                }
            }
        }
    }
    git.run(Some(repo), &[&dir, "update-ref", &pin, object])?;
    Ok(())
}

/// Checks out `resolved` under `staging` (`staging/tree`); returns the directory that becomes
/// the checkout: the tree, or its subdirectory.
fn make_checkout(
    git: &Git<'_>,
    repo: &Path,
    source: &GitSource,
    resolved: &Resolved,
    staging: &Path,
) -> Result<PathBuf, GitError> {
    let commit = resolved.commit();
    inspect_tree(git, repo, source, commit)?;
    // Every command that writes files may bring the staging directory up to the cap, no more.
    let watched = git.watching(Watch {
        dir: staging,
        limit: git.options.max_bytes,
        what: "checkout",
    });
    let tree = staging.join("tree");
    let dot_git = tree.join(".git");
    let mut init = vec!["init".to_string(), "--quiet".to_string()];
    if commit.len() == 64 {
        init.push("--object-format=sha256".into());
    }
    init.push(tree.display().to_string());
    git.run(Some(staging), &init)?;
    let (dir, work) = (git_dir(&dot_git), format!("--work-tree={}", tree.display()));
    if source.keep_git_dir {
        // A self-contained .git, fetched over the file protocol (no local-clone shortcuts)
        // as BuildKit does, with the ref's name as the remote has it.
        let pinned = format!("refs/kiln/keep/{}", resolved.object);
        let refspec = if resolved.used_ref.starts_with("refs/") {
            format!("+{pinned}:{}", resolved.used_ref)
        } else {
            pinned
        };
        watched.run(
            Some(&tree),
            &[
                &dir,
                "fetch",
                "--quiet",
                "--depth=1",
                "--no-tags",
                &format!("file://{}", repo.display()),
                &refspec,
            ],
        )?;
    } else {
        let alternates = dot_git.join("objects/info/alternates");
        fs::write(&alternates, format!("{}/objects\n", repo.display())).fs("write", &alternates)?;
    }
    watched.run(
        Some(&tree),
        &[&dir, &work, "checkout", "--quiet", "--detach", commit],
    )?;
    let has_submodules = tree.join(".gitmodules").is_file();
    if source.submodules && has_submodules {
        // Relative submodule URLs are relative to the remote.
        git.run(
            Some(&tree),
            &[&dir, "remote", "add", "origin", &source.remote],
        )?;
        watched.run(
            Some(&tree),
            &[
                &dir,
                &work,
                "submodule",
                "update",
                "--init",
                "--recursive",
                "--depth=1",
            ],
        )?;
        git.run(
            Some(&tree),
            &[&dir, "remote", "set-url", "origin", &source.remote_shown],
        )?;
    } else if source.keep_git_dir {
        git.run(
            Some(&tree),
            &[&dir, "remote", "add", "origin", &source.remote_shown],
        )?;
    }
    if source.keep_git_dir {
        git.run(
            Some(&tree),
            &[&dir, "reflog", "expire", "--all", "--expire=now"],
        )?;
        remove_tree(&dot_git.join("FETCH_HEAD"))?;
        if source.remote != source.remote_shown {
            redact_configs(&dot_git, &source.remote, &source.remote_shown)?;
        }
    } else {
        // Without keep-git-dir nothing of git stays: the repository and the `.git` files that
        // point submodules at it (BuildKit leaves those, dangling into its own directories).
        remove_tree(&dot_git)?;
        remove_git_files(&tree)?;
    }
    let commit_time = if source.mtime_commit {
        let out = git.run(
            Some(repo),
            &[&git_dir(repo), "log", "-1", "--format=%ct", commit],
        )?;
        Some(
            String::from_utf8_lossy(&out)
                .trim()
                .parse::<i64>()
                .map_err(|e| GitError::Output {
                    command: "log".into(),
                    remote: source.remote_shown.clone(),
                    reason: format!("bad commit time: {e}"),
                })?,
        )
    } else {
        None
    };
    let out = subdirectory(&tree, source)?;
    if let Some(seconds) = commit_time {
        crate::sys::times::set_tree_times(&out, seconds)?;
    }
    Ok(out)
}

/// Reads the commit's tree before anything is checked out, and fails when it has a path git
/// must not write (`.`, `..` or `.git` in any case as a component: git skips such a path with
/// an error message and succeeds, and a build must not go on without it) or when its files
/// add up to more than the size cap (then it stops reading at once).
fn inspect_tree(
    git: &Git<'_>,
    repo: &Path,
    source: &GitSource,
    commit: &str,
) -> Result<(), GitError> {
    let limit = git.options.max_bytes;
    let mut pending: Vec<u8> = Vec::new();
    let mut bad: Option<String> = None;
    let mut total: u64 = 0;
    let mut check = |chunk: &[u8]| -> Result<(), String> {
        pending.extend_from_slice(chunk);
        while let Some(end) = pending.iter().position(|b| *b == 0) {
            let entry: Vec<u8> = pending.drain(..=end).take(end).collect();
            // `<mode> <type> <object> <size>\t<path>`; the size is `-` for a submodule.
            let tab = entry
                .iter()
                .position(|b| *b == b'\t')
                .unwrap_or(entry.len());
            let (meta, path) = (&entry[..tab], entry.get(tab + 1..).unwrap_or_default());
            let size = std::str::from_utf8(meta)
                .ok()
                .and_then(|meta| meta.split_whitespace().nth(3))
                .and_then(|size| size.parse::<u64>().ok())
                .unwrap_or(0);
            total = total.saturating_add(size);
            if total > limit {
                return Err("too large".into());
            }
            let hostile = path.split(|b| *b == b'/').any(|part| {
                part.is_empty()
                    || part == b"."
                    || part == b".."
                    || part.eq_ignore_ascii_case(b".git")
            });
            if hostile && bad.is_none() {
                bad = Some(escape_controls(&String::from_utf8_lossy(path)));
            }
        }
        Ok(())
    };
    let listed = git.run_with(
        Some(repo),
        &[
            git_dir(repo).as_str(),
            "ls-tree",
            "-r",
            "-z",
            "--long",
            "--full-tree",
            commit,
        ],
        &mut check,
    );
    if total > limit {
        return Err(GitError::TooLarge {
            what: "checkout",
            remote: source.remote_shown.clone(),
            limit,
        });
    }
    listed?;
    match bad {
        Some(path) => Err(GitError::HostilePath {
            remote: source.remote_shown.clone(),
            path,
        }),
        None => Ok(()),
    }
}

/// The directory of the checkout `source` asks for: the tree, or its subdirectory, which must
/// be directories all the way down (BuildKit's `validateDirsOnly`: no symlink on the way).
fn subdirectory(tree: &Path, source: &GitSource) -> Result<PathBuf, GitError> {
    let mut dir = tree.to_path_buf();
    for part in source.subdir.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        let fail = |reason: &str| GitError::Subdir {
            remote: source.remote_shown.clone(),
            subdir: escape_controls(&source.subdir),
            reason: reason.to_string(),
        };
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(fail(&format!("{part:?} is a symlink")));
            }
            Ok(_) => return Err(fail(&format!("{part:?} is not a directory"))),
            Err(_) => return Err(fail("no such directory in the repository")),
        }
    }
    Ok(dir)
}

/// Makes `out` (inside `staging`) the checkout at `target`: synced (syncfs(2)), renamed into
/// place, its directory synced. A checkout another process made first is kept.
fn publish(staging: &Path, out: &Path, target: &Path) -> Result<(), GitError> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    crate::sys::atomic::create_private_dir_all(parent)?;
    let handle = fs::File::open(staging).fs("open", staging)?;
    nix::unistd::syncfs(&handle).map_err(|errno| FsError::new("sync", staging, errno.into()))?;
    match fs::rename(out, target) {
        Ok(()) => Ok(crate::sys::fsync_dir(parent)?),
        Err(_) if target.is_dir() => Ok(()),
        Err(err) => Err(FsError::new("rename into place", target, err).into()),
    }
}

/// Removes every `.git` entry below `dir` (the files git leaves in submodule directories; a
/// repository's tree never holds one, git refuses them).
fn remove_git_files(dir: &Path) -> Result<(), GitError> {
    for entry in fs::read_dir(dir).fs("read directory", dir)? {
        let entry = entry.fs("read directory", dir)?;
        let path = entry.path();
        if entry.file_name() == ".git" {
            remove_tree(&path)?;
        } else if entry.file_type().fs("inspect", &path)?.is_dir() {
            remove_git_files(&path)?;
        }
    }
    Ok(())
}

/// Replaces the remote's credentials in every `config` file of a kept `.git` (the repository's
/// and its submodules', whose relative URLs were resolved against the remote).
fn redact_configs(dir: &Path, remote: &str, shown: &str) -> Result<(), GitError> {
    for entry in fs::read_dir(dir).fs("read directory", dir)? {
        let entry = entry.fs("read directory", dir)?;
        let path = entry.path();
        let kind = entry.file_type().fs("inspect", &path)?;
        if kind.is_dir() {
            redact_configs(&path, remote, shown)?;
        } else if kind.is_file() && entry.file_name() == "config" {
            let text = fs::read_to_string(&path).fs("read", &path)?;
            let (Some(from), Some(to)) = (base_of(remote), base_of(shown)) else {
                continue;
            };
            if text.contains(from) {
                fs::write(&path, text.replace(from, to)).fs("write", &path)?;
            }
        }
    }
    Ok(())
}

/// `scheme://userinfo@host` of a URL: what relative submodule URLs share with it.
fn base_of(url: &str) -> Option<&str> {
    let rest = url.find("://")? + 3;
    let at = url[rest..].find('/').map_or(url.len(), |i| rest + i);
    Some(&url[..at])
}
