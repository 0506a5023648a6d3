//! Tagged image names as the store keeps them: normalised (`docker.io/library/hello:latest`) for
//! identity, familiar (`hello:latest`, what docker prints) for people and for the layout's
//! `org.opencontainers.image.ref.name`.

use crate::oci::reference::{DEFAULT_DOMAIN, Reference, ReferenceError};
use std::fmt;

/// A `repository:tag` name of an image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageName {
    /// `domain/path`, e.g. `docker.io/library/hello`.
    repository: String,
    tag: String,
}

/// Why a string cannot name a tag in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid image name {name:?}")]
    Invalid {
        name: String,
        #[source]
        source: ReferenceError,
    },
    #[error("refusing to create a tag with a digest reference: {0}")]
    Digest(String),
}

impl ImageName {
    /// Parses a name the way `docker tag` does: normalised (`hello` → `docker.io/library/hello`),
    /// `latest` when no tag is given; a digest (`name@sha256:...`) is refused.
    pub fn parse(name: &str) -> Result<ImageName, NameError> {
        let reference = Reference::parse_normalized(name).map_err(|source| NameError::Invalid {
            name: name.to_string(),
            source,
        })?;
        if reference.digest().is_some() {
            return Err(NameError::Digest(name.to_string()));
        }
        Ok(ImageName::from_reference(&reference.with_default_tag()))
    }

    /// The tagged name of a reference without a digest (`latest` when it has no tag).
    pub(crate) fn from_reference(reference: &Reference) -> ImageName {
        ImageName {
            repository: format!("{}/{}", reference.domain(), reference.path()),
            tag: reference.tag().unwrap_or("latest").to_string(),
        }
    }

    /// The normalised repository, `docker.io/library/hello`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, `latest`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The repository as docker prints it: without `docker.io/` and, for official images,
    /// without `library/` (distribution's `FamiliarName`).
    pub fn familiar_repository(&self) -> &str {
        familiar_repository(&self.repository)
    }

    /// `hello:latest`, `user/app:v1`, `127.0.0.1:5000/a/b:v1`.
    pub fn familiar(&self) -> String {
        format!("{}:{}", self.familiar_repository(), self.tag)
    }

    /// `docker.io/library/hello:latest`.
    pub fn full(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// Strips docker's defaults from a normalised repository (`docker.io/library/hello` → `hello`).
pub(crate) fn familiar_repository(repository: &str) -> &str {
    match repository
        .strip_prefix(DEFAULT_DOMAIN)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(path) => match path.strip_prefix("library/") {
            Some(official) if !official.contains('/') => official,
            _ => path,
        },
        None => repository,
    }
}

impl fmt::Display for ImageName {
    /// The familiar form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.familiar_repository(), self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_and_full_forms() {
        let cases = [
            ("hello", "hello:latest", "docker.io/library/hello:latest"),
            ("hello:1.0", "hello:1.0", "docker.io/library/hello:1.0"),
            (
                "docker.io/library/hello",
                "hello:latest",
                "docker.io/library/hello:latest",
            ),
            ("library/hello:x", "hello:x", "docker.io/library/hello:x"),
            ("user/app:v1", "user/app:v1", "docker.io/user/app:v1"),
            (
                "library/a/b",
                "library/a/b:latest",
                "docker.io/library/a/b:latest",
            ),
            (
                "127.0.0.1:5000/a/b:v1",
                "127.0.0.1:5000/a/b:v1",
                "127.0.0.1:5000/a/b:v1",
            ),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost/app:latest",
            ),
        ];
        for (input, familiar, full) in cases {
            let name = ImageName::parse(input).unwrap();
            assert_eq!(name.familiar(), familiar, "{input}");
            assert_eq!(name.to_string(), familiar, "{input}");
            assert_eq!(name.full(), full, "{input}");
        }
        assert_eq!(
            ImageName::parse("a/b:t").unwrap().familiar_repository(),
            "a/b"
        );
    }

    #[test]
    fn refuses_digests_and_invalid_names() {
        let digest = format!("hello@sha256:{}", "a".repeat(64));
        assert_eq!(
            ImageName::parse(&digest),
            Err(NameError::Digest(digest.clone()))
        );
        for bad in ["", "Hello", "a b", "a:", "../x", &"f".repeat(64)] {
            let err = ImageName::parse(bad).unwrap_err();
            assert!(matches!(err, NameError::Invalid { .. }), "{bad}: {err}");
        }
    }
}
