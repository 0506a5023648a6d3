//! Git references as BuildKit v0.32 reads them in a Dockerfile and a build context
//! (`frontend/dockerfile/dfgitutil.ParseGitRef`, `util/gitutil.ParseURL`,
//! `util/sshutil.ParseSCPStyleURL`):
//!
//! - `git://`, `ssh://`, `http://` and `https://` URLs (an http(s) one only when its path ends
//!   in `.git`; other http(s) URLs are downloads), and the scp-like `user@host:path`;
//! - `#REF:SUBDIR` after it (each part optional; the subdir is cleaned of `..`);
//! - a query instead of or besides the fragment: `ref=`, `tag=`, `branch=`, `subdir=`,
//!   `checksum=` (or `commit=`), `keep-git-dir=`, `submodules=`, `mtime=checkout|commit`,
//!   `fetch-by-commit=`; an unknown key, a repeated one or a conflict is an error.
//!
//! Anything else (a local path, `./x`, an unknown `scheme://`) is not a git reference.

use crate::oci::csv::parse_go_bool;
use regex::Regex;
use reqwest::Url;
use std::sync::LazyLock;

/// How the remote is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    /// `ssh://` or the scp-like `user@host:path`.
    Ssh,
    Git,
}

/// What file modification times a checkout gets (BuildKit's `mtime=` policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtimePolicy {
    /// The time the files were checked out (BuildKit's default).
    #[default]
    Checkout,
    /// The commit's committer time, for every file, link and directory.
    Commit,
}

/// A parsed git reference: where the repository is and what of it is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef {
    /// The URL git is given, without the fragment and query (credentials kept).
    pub remote: String,
    pub scheme: Scheme,
    /// `host[:port]` of a URL remote (names the per-host auth secrets); empty for the scp-like
    /// form, which BuildKit gives no token.
    pub host: String,
    /// A branch, tag, full ref or commit; empty for the remote's default branch.
    pub reference: String,
    /// A directory of the repository, cleaned, without a leading `/`; empty for the root.
    pub subdir: String,
    /// `checksum=`/`commit=`: the commit (a hex prefix) the ref must resolve to.
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub submodules: Option<bool>,
    pub mtime: Option<MtimePolicy>,
    pub fetch_by_commit: bool,
}

/// A git reference that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("git reference {reference}: {reason}")]
pub struct GitUrlError {
    /// The reference, with credentials redacted.
    pub reference: String,
    pub reason: String,
}

/// BuildKit's `gitSSHRegex`.
static SCP_LIKE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([a-zA-Z0-9\-_]+)@([a-zA-Z0-9\-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?$")
        .expect("valid regex")
});

/// BuildKit's `protoRegexp`.
static PROTOCOL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9]+://").expect("valid regex"));

/// Whether `source` names a git repository (BuildKit's `isGitSource`, less its deprecated
/// `github.com/ORG/REPO` form, which an ADD reads as a local path anyway).
pub fn is_git_source(source: &str) -> bool {
    !matches!(GitRef::parse(source), Ok(None))
}

impl GitRef {
    /// `Ok(None)` when `text` is not a git reference (a local path, a plain http(s) URL, an
    /// unknown scheme); an error when it is one that cannot be used.
    pub fn parse(text: &str) -> Result<Option<GitRef>, GitUrlError> {
        if text.starts_with("./") || text.starts_with("../") {
            return Ok(None);
        }
        let fail = |reason: String| GitUrlError {
            reference: redact(text),
            reason,
        };
        let (remote, scheme, host, fragment, query) = if let Some(protocol) = PROTOCOL.find(text) {
            let scheme = match protocol
                .as_str()
                .trim_end_matches("://")
                .to_ascii_lowercase()
                .as_str()
            {
                "http" => Scheme::Http,
                "https" => Scheme::Https,
                "ssh" => Scheme::Ssh,
                "git" => Scheme::Git,
                _ => return Ok(None),
            };
            let Ok(mut url) = Url::parse(text) else {
                return Ok(None);
            };
            if matches!(scheme, Scheme::Http | Scheme::Https) && !url.path().ends_with(".git") {
                return Ok(None);
            }
            let fragment = url.fragment().map(percent_decoded).unwrap_or_default();
            let query: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let host = match (url.host_str(), url.port()) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                (Some(host), None) => host.to_string(),
                (None, _) => String::new(),
            };
            url.set_fragment(None);
            url.set_query(None);
            (url.to_string(), scheme, host, fragment, query)
        } else if let Some(parts) = SCP_LIKE.captures(text) {
            let part = |i| parts.get(i).map_or("", |m| m.as_str());
            let query = form_urlencoded_pairs(part(4));
            let remote = format!("{}@{}:{}", part(1), part(2), part(3));
            (
                remote,
                Scheme::Ssh,
                String::new(),
                part(5).to_string(),
                query,
            )
        } else {
            return Ok(None);
        };
        let (reference, subdir) = match fragment.split_once(':') {
            Some((reference, subdir)) => (reference.to_string(), clean_subdir(subdir)),
            None => (fragment.clone(), String::new()),
        };
        let mut parsed = GitRef {
            remote,
            scheme,
            host,
            reference,
            subdir,
            checksum: None,
            keep_git_dir: None,
            submodules: None,
            mtime: None,
            fetch_by_commit: false,
        };
        parsed.load_query(&query).map_err(fail)?;
        if parsed.reference.starts_with('-') {
            return Err(fail(format!("invalid git ref {:?}", parsed.reference)));
        }
        Ok(Some(parsed))
    }

    /// BuildKit's `loadQuery`.
    fn load_query(&mut self, query: &[(String, String)]) -> Result<(), String> {
        let mut seen: Vec<&str> = Vec::new();
        let (mut tag, mut branch) = (String::new(), String::new());
        for (key, value) in query {
            if seen.contains(&key.as_str()) {
                return Err(format!("query {key:?} has multiple values"));
            }
            seen.push(key);
            let flag = |name: &str| -> Result<Option<bool>, String> {
                if value.is_empty() {
                    return Ok(Some(true));
                }
                parse_go_bool(value)
                    .map(Some)
                    .ok_or_else(|| format!("invalid {name} value: {value:?}"))
            };
            if value.is_empty()
                && !matches!(
                    key.as_str(),
                    "submodules" | "keep-git-dir" | "fetch-by-commit"
                )
            {
                return Err(format!("query {key:?} has no value"));
            }
            match key.as_str() {
                "ref" => {
                    if !self.reference.is_empty() && &self.reference != value {
                        return Err(format!("ref conflicts: {:?} vs {value:?}", self.reference));
                    }
                    self.reference = value.clone();
                }
                "tag" => tag = value.clone(),
                "branch" => branch = value.clone(),
                "subdir" => {
                    if !self.subdir.is_empty() && &self.subdir != value {
                        return Err(format!("subdir conflicts: {:?} vs {value:?}", self.subdir));
                    }
                    self.subdir = clean_subdir(value);
                }
                "checksum" | "commit" => self.checksum = Some(value.clone()),
                "keep-git-dir" => self.keep_git_dir = flag("keep-git-dir")?,
                "submodules" => self.submodules = flag("submodules")?,
                "fetch-by-commit" => self.fetch_by_commit = flag("fetch-by-commit")? == Some(true),
                "mtime" => {
                    self.mtime = Some(match value.as_str() {
                        "checkout" => MtimePolicy::Checkout,
                        "commit" => MtimePolicy::Commit,
                        _ => {
                            return Err(format!(
                                "invalid mtime value: {value:?} (must be \"checkout\" or \"commit\")"
                            ));
                        }
                    });
                }
                _ => return Err(format!("unexpected query {key:?}")),
            }
        }
        if !tag.is_empty() {
            if !tag.starts_with("refs/tags/") {
                tag = format!("refs/tags/{tag}");
            }
            if !self.reference.is_empty() && self.reference != tag {
                return Err(format!("ref conflicts: {:?} vs {tag:?}", self.reference));
            }
            self.reference = tag.clone();
        }
        if !branch.is_empty() {
            if !tag.is_empty() {
                return Err("branch conflicts with tag".to_string());
            }
            if !branch.starts_with("refs/heads/") {
                branch = format!("refs/heads/{branch}");
            }
            if !self.reference.is_empty() && self.reference != branch {
                return Err(format!("ref conflicts: {:?} vs {branch:?}", self.reference));
            }
            self.reference = branch;
        }
        Ok(())
    }

    /// The remote with any password or user name of the URL replaced by `xxxxx` (BuildKit's
    /// `urlutil.RedactCredentials`): what messages, cache keys and a kept `.git` show.
    pub fn redacted_remote(&self) -> String {
        redact(&self.remote)
    }
}

/// `path.Join("/", subdir)` without its leading `/`: `..` cannot climb above the repository.
pub fn clean_subdir(subdir: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in subdir.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// `text` with the user name and password of a URL replaced by `xxxxx`; anything that is not
/// such a URL is returned as it is.
pub fn redact(text: &str) -> String {
    let Ok(mut url) = Url::parse(text) else {
        return text.to_string();
    };
    if url.cannot_be_a_base() || (url.username().is_empty() && url.password().is_none()) {
        return text.to_string();
    }
    if !url.username().is_empty() {
        let _ = url.set_username("xxxxx");
    }
    if url.password().is_some() {
        let _ = url.set_password(Some("xxxxx"));
    }
    url.to_string()
}

/// Query pairs of the scp-like form (Go's `url.ParseQuery`).
fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    if query.is_empty() {
        return Vec::new();
    }
    Url::parse(&format!("x:?{query}"))
        .map(|url| {
            url.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> GitRef {
        GitRef::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .unwrap_or_else(|| panic!("{text} is not a git reference"))
    }

    #[test]
    fn the_forms_buildkit_reads_as_git() {
        let r = parsed("https://github.com/moby/buildkit.git#v0.32.2:frontend/dockerfile");
        assert_eq!(r.remote, "https://github.com/moby/buildkit.git");
        assert_eq!(r.scheme, Scheme::Https);
        assert_eq!(r.host, "github.com");
        assert_eq!(r.reference, "v0.32.2");
        assert_eq!(r.subdir, "frontend/dockerfile");

        let r = parsed("git://127.0.0.1:9418/repo#main");
        assert_eq!(
            (r.remote.as_str(), r.host.as_str()),
            ("git://127.0.0.1:9418/repo", "127.0.0.1:9418")
        );
        let r = parsed("ssh://git@host:2222/org/repo.git#:sub/../../x");
        assert_eq!((r.scheme, r.reference.as_str()), (Scheme::Ssh, ""));
        assert_eq!(r.subdir, "x", "a subdir never climbs out");

        let r = parsed("git@github.com:moby/buildkit.git#main:docs");
        assert_eq!(r.remote, "git@github.com:moby/buildkit.git");
        assert_eq!((r.scheme, r.host.as_str()), (Scheme::Ssh, ""));
        assert_eq!((r.reference.as_str(), r.subdir.as_str()), ("main", "docs"));

        let r = parsed(
            "https://host/r.git?ref=v1&subdir=a/b&keep-git-dir=true&submodules=false&checksum=abc1",
        );
        assert_eq!(r.remote, "https://host/r.git");
        assert_eq!((r.reference.as_str(), r.subdir.as_str()), ("v1", "a/b"));
        assert_eq!(r.keep_git_dir, Some(true));
        assert_eq!(r.submodules, Some(false));
        assert_eq!(r.checksum.as_deref(), Some("abc1"));
        assert_eq!(parsed("https://h/r.git?tag=v2").reference, "refs/tags/v2");
        assert_eq!(parsed("https://h/r.git?branch=b").reference, "refs/heads/b");
        assert_eq!(
            parsed("https://h/r.git?keep-git-dir=").keep_git_dir,
            Some(true)
        );
        assert_eq!(
            parsed("git@h:r?mtime=commit#x").mtime,
            Some(MtimePolicy::Commit)
        );
    }

    #[test]
    fn what_is_not_git() {
        for text in [
            "https://example.com/file.tar.gz",
            "http://example.com/repo",
            "./repo.git",
            "../x.git",
            "dir/a@b:c",
            "ftp://example.com/r.git",
            "github.com/moby/buildkit",
            "local.txt",
            "a.b@host:path",
        ] {
            assert_eq!(GitRef::parse(text), Ok(None), "{text}");
            assert!(!is_git_source(text), "{text}");
        }
        assert!(
            is_git_source("https://h/r.git?bad=1"),
            "an error is still git"
        );
    }

    #[test]
    fn bad_queries_are_errors_that_hide_credentials() {
        for (text, reason) in [
            ("https://h/r.git?x=1", "unexpected query \"x\""),
            ("https://h/r.git?ref=a&ref=b", "has multiple values"),
            ("https://h/r.git?ref=b#a", "ref conflicts"),
            (
                "https://h/r.git?tag=a&branch=b",
                "branch conflicts with tag",
            ),
            (
                "https://h/r.git?submodules=maybe",
                "invalid submodules value",
            ),
            ("https://h/r.git?mtime=now", "invalid mtime value"),
            ("https://h/r.git?subdir=", "has no value"),
            ("https://h/r.git#-u", "invalid git ref"),
        ] {
            let err = GitRef::parse(text).unwrap_err();
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
        let err = GitRef::parse("https://user:s3cret@h/r.git?x=1").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(
            err.to_string().contains("https://xxxxx:xxxxx@h/r.git"),
            "{err}"
        );
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("https://u:p@h/r.git"), "https://xxxxx:xxxxx@h/r.git");
        assert_eq!(redact("https://tok@h/r.git"), "https://xxxxx@h/r.git");
        assert_eq!(redact("git@h:r.git"), "git@h:r.git");
        assert_eq!(redact("git://h/r"), "git://h/r");
    }
}
