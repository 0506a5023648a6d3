//! Image references (`[host[:port]/]path[:tag][@digest]`) with the grammar and normalisation of
//! distribution's `reference` package, which docker and BuildKit use: `alpine` means
//! `docker.io/library/alpine`, `user/app` means `docker.io/user/app`, and the first component is
//! a registry only when it has a `.` or `:`, is `localhost`, or has upper-case letters.

use std::fmt;

/// The registry a reference without one names (and what `index.docker.io` means).
pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Docker Hub's official images live under this namespace.
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// distribution's limit on `domain/path`.
pub const NAME_MAX_LEN: usize = 255;
/// A tag is one word character then at most 127 word characters, `.` or `-`.
const TAG_MAX_LEN: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// A string that is not an image reference. Messages follow distribution's wording, which is
/// what docker users see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    InvalidFormat,
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    #[error("repository name must not be more than {NAME_MAX_LEN} characters")]
    NameTooLong,
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexIdentifier(String),
    #[error("unsupported digest algorithm")]
    DigestAlgorithm,
    #[error("invalid checksum digest length")]
    DigestLength,
    #[error("invalid checksum digest format")]
    DigestFormat,
}

impl Reference {
    /// Parses `s` the way `docker pull` and a Dockerfile's `FROM` do (distribution's
    /// `ParseNormalizedNamed`): the registry and `library/` are filled in.
    pub fn parse_normalized(s: &str) -> Result<Self, ReferenceError> {
        if is_hex_identifier(s) {
            return Err(ReferenceError::HexIdentifier(s.to_string()));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = remainder
            .split_once(':')
            .map_or(remainder.as_str(), |(r, _)| r);
        if remote.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(remote.to_string()));
        }
        parse_with_domain(domain, &remainder)
    }

    /// The registry host (and port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry, e.g. `library/alpine`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The reference with tag `latest` when it names neither a tag nor a digest (what a pull
    /// of a bare name fetches).
    pub fn with_default_tag(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".to_string());
        }
        self
    }
}

impl fmt::Display for Reference {
    /// The full normalised form, `domain/path[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// distribution's `splitDockerDomain`: the first `/`-separated component is a registry only
/// when it looks like a host; otherwise the registry is Docker Hub, where a single-component
/// name is an official image under `library/`.
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

/// Checks `domain` and `path[:tag][@digest]` against the reference grammar.
fn parse_with_domain(domain: String, remainder: &str) -> Result<Reference, ReferenceError> {
    let (rest, digest) = match remainder.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (remainder, None),
    };
    // Path components have no `:`, so the first one after the domain starts the tag.
    let (path, tag) = match rest.split_once(':') {
        Some((path, tag)) => (path, Some(tag)),
        None => (rest, None),
    };
    if !is_domain(&domain) || !path.split('/').all(is_path_component) {
        return Err(ReferenceError::InvalidFormat);
    }
    if tag.is_some_and(|t| !is_tag(t)) {
        return Err(ReferenceError::InvalidFormat);
    }
    if let Some(digest) = digest {
        validate_digest(digest)?;
    }
    if domain.len() + 1 + path.len() > NAME_MAX_LEN {
        return Err(ReferenceError::NameTooLong);
    }
    Ok(Reference {
        domain,
        path: path.to_string(),
        tag: tag.map(str::to_string),
        digest: digest.map(str::to_string),
    })
}

/// `host[:port]`, where host is dot-separated DNS-style components or a bracketed IPv6 address.
fn is_domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = s.starts_with('[') || host.split('.').all(is_domain_component);
    port_ok && host_ok
}

/// A DNS-style label: alphanumerics, with `-` allowed inside.
fn is_domain_component(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        }
        _ => false,
    }
}

/// `[a-z0-9]+` runs joined by one separator each: `.`, `_`, `__` or one or more `-`.
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while b.get(i).is_some_and(alnum) {
            i += 1;
        }
        if i == start {
            return false; // empty run: leading, trailing or doubled separator
        }
        let sep_start = i;
        match b.get(i) {
            None => return true,
            Some(b'.') => i += 1,
            Some(b'_') => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            Some(b'-') => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            Some(_) => return false,
        }
        debug_assert!(i > sep_start);
    }
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = s.as_bytes();
    b.len() <= TAG_MAX_LEN
        && b.first().is_some_and(|c| word(*c))
        && b.iter().all(|c| word(*c) || *c == b'.' || *c == b'-')
}

/// `algorithm:hex`, the algorithm one the image spec registers, the hex of its length.
fn validate_digest(s: &str) -> Result<(), ReferenceError> {
    let Some((algorithm, hex)) = s.split_once(':') else {
        return Err(ReferenceError::InvalidFormat);
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        part.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && part.bytes().all(|c| c.is_ascii_alphanumeric())
    });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(ReferenceError::InvalidFormat);
    }
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ReferenceError::DigestAlgorithm),
    };
    if hex.len() != hex_len {
        return Err(ReferenceError::DigestLength);
    }
    if hex.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(ReferenceError::DigestFormat);
    }
    Ok(())
}

/// A bare 64-hex-digit string is an image id, never a name.
fn is_hex_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    #[test]
    fn normalises_like_docker() {
        let digest_ref = format!("alpine@{SHA}");
        let digest_full = format!("docker.io/library/alpine@{SHA}");
        let cases: &[(&str, &str)] = &[
            ("alpine", "docker.io/library/alpine"),
            ("alpine:3.20", "docker.io/library/alpine:3.20"),
            ("user/app", "docker.io/user/app"),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("docker.io/alpine", "docker.io/library/alpine"),
            ("index.docker.io/alpine", "docker.io/library/alpine"),
            ("localhost/app", "localhost/app"),
            ("localhost:5000/app:dev", "localhost:5000/app:dev"),
            ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000/a/b/c"),
            ("ghcr.io/o/r:1.0-rc.1", "ghcr.io/o/r:1.0-rc.1"),
            ("Registry/app", "Registry/app"),
            ("[::1]:5000/app", "[::1]:5000/app"),
            ("my_org/a__b/c-d--e.f:t", "docker.io/my_org/a__b/c-d--e.f:t"),
            (&digest_ref, &digest_full),
        ];
        for (input, want) in cases {
            let got = Reference::parse_normalized(input).map(|r| r.to_string());
            assert_eq!(got.as_deref(), Ok(*want), "{input}");
        }
    }

    #[test]
    fn splits_into_parts() {
        let r = Reference::parse_normalized(&format!("127.0.0.1:5000/team/app:v2@{SHA}"))
            .expect("valid");
        assert_eq!(r.domain(), "127.0.0.1:5000");
        assert_eq!(r.path(), "team/app");
        assert_eq!(r.tag(), Some("v2"));
        assert_eq!(r.digest(), Some(SHA));
        let bare = Reference::parse_normalized("alpine").expect("valid");
        assert_eq!(bare.clone().with_default_tag().tag(), Some("latest"));
        let pinned = Reference::parse_normalized(&format!("alpine@{SHA}")).expect("valid");
        assert_eq!(pinned.with_default_tag().tag(), None);
    }

    #[test]
    fn rejects_what_docker_rejects() {
        use ReferenceError::*;
        let long = format!("a/{}", "b".repeat(NAME_MAX_LEN));
        let long_tag = format!("a:{}", "t".repeat(TAG_MAX_LEN + 1));
        let hex = "a".repeat(64);
        let cases: Vec<(&str, ReferenceError)> = vec![
            ("", InvalidFormat),
            ("img:", InvalidFormat),
            (":tag", InvalidFormat),
            ("Alpine", Uppercase("library/Alpine".into())),
            ("user/App:v1", Uppercase("user/App".into())),
            ("a//b", InvalidFormat),
            ("a/", InvalidFormat),
            ("-a", InvalidFormat),
            ("a-", InvalidFormat),
            ("a..b", InvalidFormat),
            ("a___b", InvalidFormat),
            ("a b", InvalidFormat),
            ("a:.tag", InvalidFormat),
            ("a:t@g", InvalidFormat),
            ("host:port/a", InvalidFormat),
            ("-host.io/a", InvalidFormat),
            ("[zz]:5000/a", InvalidFormat),
            (&long, NameTooLong),
            (&long_tag, InvalidFormat),
            (&hex, HexIdentifier(hex.clone())),
            ("a@sha256:abc", InvalidFormat),
            ("a@md5:ffffffffffffffffffffffffffffffff", DigestAlgorithm),
            ("a@sha256:ffffffffffffffffffffffffffffffff", DigestLength),
            (
                "a@sha256:FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
                DigestFormat,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Reference::parse_normalized(input), Err(want), "{input:?}");
        }
    }
}
