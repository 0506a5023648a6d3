//! Platforms (`os/architecture[/variant]`), as OCI image indexes list them, `--platform` names
//! them and `TARGETPLATFORM` spells them, with Go's architecture names (containerd's
//! `platforms` package is the model: lower case, `arm64` defaults to variant `v8`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// An OS/architecture pair with an optional variant, such as `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A `--platform` value that is not `OS/ARCH` or `OS/ARCH/VARIANT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: write OS/ARCH or OS/ARCH/VARIANT, such as linux/arm64")]
pub struct PlatformError(pub String);

impl Platform {
    /// The platform kiln runs on: `linux` and Go's name (GOARCH, with GOARM's default variant)
    /// of the machine's architecture. The one table of Rust → Go architecture names.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch` or `os/arch/variant` (case-insensitive; kept in lower case).
    pub fn parse(text: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |s: &&str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        let (os, architecture, variant) = match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => (os, arch, None),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => {
                (os, arch, Some(variant))
            }
            _ => return Err(PlatformError(text.to_string())),
        };
        Ok(Platform {
            os: os.to_ascii_lowercase(),
            architecture: architecture.to_ascii_lowercase(),
            variant: variant.map(|v| v.to_ascii_lowercase()),
        })
    }

    /// The variant, with containerd's defaults filled in (`arm64` is `v8`), for comparing.
    fn normalized_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8"),
            (_, variant) => variant,
        }
    }

    /// Whether an index entry for `candidate` serves this platform. A wanted platform without a
    /// variant takes any variant, except where the architecture has a default one (arm64/v8).
    pub fn accepts(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        match self.normalized_variant() {
            None => true,
            Some(wanted) => candidate.normalized_variant() == Some(wanted),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parse_rejects_bad_forms() {
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Platform::parse("Linux/ARM64").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn host_is_linux_with_go_names() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.to_string(), "linux/amd64");
        }
    }

    #[test]
    fn arm64_means_v8() {
        let wanted = Platform::parse("linux/arm64").unwrap();
        assert!(wanted.accepts(&Platform::parse("linux/arm64/v8").unwrap()));
        assert!(!wanted.accepts(&Platform::parse("linux/arm64/v9").unwrap()));
        let any_arm = Platform::parse("linux/arm").unwrap();
        assert!(any_arm.accepts(&Platform::parse("linux/arm/v6").unwrap()));
    }
}
