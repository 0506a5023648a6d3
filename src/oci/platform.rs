//! Platforms (`os/architecture[/variant]`), as OCI image indexes list them, `--platform` names
//! them and `TARGETPLATFORM` spells them, with Go's architecture names. containerd's
//! `platforms` package (v1, vendored by BuildKit v0.32) is the model: [`Platform::parse`] reads
//! a specifier as its `Parse` does (`arm64` alone is `linux/arm64`, `aarch64` is `arm64`), and
//! [`Platform::normalized`] is its `Normalize` (`arm64/v8` is `arm64`, `arm` is `arm/v7`,
//! `amd64/v1` is `amd64`), which is how BuildKit reads `--platform` and how platforms compare.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An OS/architecture pair with an optional variant, such as `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A `--platform` value that is not a platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {text:?}: {reason}")]
pub struct PlatformError {
    /// The value as given.
    pub text: String,
    pub reason: String,
}

impl PlatformError {
    fn new(text: &str, reason: impl Into<String>) -> PlatformError {
        PlatformError {
            text: text.to_string(),
            reason: reason.into(),
        }
    }
}

/// Operating systems Go knows (containerd's `isKnownOS`): a one-word specifier naming one is an
/// OS on the host's architecture.
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

/// Architectures Go knows (containerd's `isKnownArch`): a one-word specifier naming one is that
/// architecture on Linux.
const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

impl Platform {
    /// The platform kiln runs on: `linux` and Go's name (GOARCH, with GOARM's default variant)
    /// of the machine's architecture, normalised. The one table of Rust → Go architecture names.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// A platform from its parts, as given (see [`Platform::normalized`]).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
        }
    }

    /// Parses a specifier as containerd's `platforms.Parse` does: `os/arch/variant`, `os/arch`,
    /// or one word, an OS (on the host's architecture) or an architecture (on Linux). Case is
    /// folded; architecture aliases are resolved (`aarch64`, `x86_64`, `armhf`...); `os/arm`
    /// drops the default `v7`, `os/arm64/` with an empty variant is `v8`. Not normalised: FROM
    /// `--platform` keeps what it says; [`Platform::parse_normalized`] is what `--platform`
    /// takes.
    pub fn parse(text: &str) -> Result<Platform, PlatformError> {
        if text.contains('*') {
            return Err(PlatformError::new(text, "wildcards are not platforms"));
        }
        let parts: Vec<&str> = text.splitn(4, '/').collect();
        let word = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if let Some(bad) = parts.iter().find(|p| !word(p)) {
            let reason = if bad.contains('(') {
                "an OS version (`os(version)`) is for Windows images, which kiln does not build"
                    .to_string()
            } else {
                format!(
                    "{bad:?} is not a platform part (letters, digits, '_', '-', '.'); write \
                     OS/ARCH or OS/ARCH/VARIANT, such as linux/arm64"
                )
            };
            return Err(PlatformError::new(text, reason));
        }
        let os = parts[0].to_ascii_lowercase();
        let os = if os == "macos" {
            "darwin".to_string()
        } else {
            os
        };
        match parts.as_slice() {
            [_] => {
                if KNOWN_OS.contains(&os.as_str()) {
                    let host = Platform::host();
                    // containerd keeps GOARM's variant only when it is not the default v7.
                    let variant = host.variant.filter(|v| v != "v7");
                    return Ok(Platform {
                        os,
                        architecture: host.architecture,
                        variant,
                    });
                }
                let (architecture, variant) = normalize_arch(parts[0], "");
                if KNOWN_ARCH.contains(&architecture.as_str()) {
                    let variant = variant.filter(|v| !(architecture == "arm" && v == "v7"));
                    return Ok(Platform {
                        os: "linux".to_string(),
                        architecture,
                        variant,
                    });
                }
                Err(PlatformError::new(
                    text,
                    "unknown operating system or architecture; write OS/ARCH, such as \
                     linux/arm64",
                ))
            }
            [_, arch] => {
                let (architecture, variant) = normalize_arch(arch, "");
                let variant = variant.filter(|v| !(architecture == "arm" && v == "v7"));
                Ok(Platform {
                    os,
                    architecture,
                    variant,
                })
            }
            [_, arch, variant] => {
                let (architecture, variant) = normalize_arch(arch, variant);
                let variant = match (architecture.as_str(), variant) {
                    ("arm64", None) => Some("v8".to_string()),
                    (_, variant) => variant,
                };
                Ok(Platform {
                    os,
                    architecture,
                    variant,
                })
            }
            _ => Err(PlatformError::new(
                text,
                "too many parts; write OS/ARCH or OS/ARCH/VARIANT, such as linux/arm64",
            )),
        }
    }

    /// [`Platform::parse`], then [`Platform::normalized`]: how BuildKit reads `--platform`
    /// (`linux/arm64/v8` is `linux/arm64`, `linux/arm` is `linux/arm/v7`).
    pub fn parse_normalized(text: &str) -> Result<Platform, PlatformError> {
        Platform::parse(text).map(|p| p.normalized())
    }

    /// A comma-separated list (`linux/amd64,linux/arm64`), each normalised, each once in the
    /// order given (BuildKit's `parsePlatforms`; a platform named twice is built once).
    pub fn parse_list(text: &str) -> Result<Vec<Platform>, PlatformError> {
        let mut list: Vec<Platform> = Vec::new();
        for item in text.split(',') {
            let platform = Platform::parse_normalized(item.trim())?;
            if !list.contains(&platform) {
                list.push(platform);
            }
        }
        Ok(list)
    }

    /// containerd's `Normalize`: OS in lower case, the architecture's aliases resolved and its
    /// default variant left out (`arm64/v8` → `arm64`, `amd64/v1` → `amd64`), `arm` given its
    /// default `v7`.
    pub fn normalized(&self) -> Platform {
        let os = self.os.to_ascii_lowercase();
        let (architecture, variant) =
            normalize_arch(&self.architecture, self.variant.as_deref().unwrap_or(""));
        Platform {
            os: if os == "macos" { "darwin".into() } else { os },
            architecture,
            variant,
        }
    }

    /// Whether an image for `candidate` serves this platform: the same OS and architecture,
    /// and the same variant or an older one this platform runs (`arm/v7` runs `arm/v6`,
    /// `amd64/v3` runs `amd64/v2`), as containerd's `platforms.Only` matcher; both sides are
    /// normalised first, so `arm64` and `arm64/v8` are one platform.
    pub fn accepts(&self, candidate: &Platform) -> bool {
        self.preference(candidate).is_some()
    }

    /// How well `candidate` serves this platform: `Some(0)` for the platform itself, higher for
    /// older variants it also runs, `None` when it cannot serve it.
    pub fn preference(&self, candidate: &Platform) -> Option<usize> {
        let (wanted, offered) = (self.normalized(), candidate.normalized());
        if wanted.os != offered.os || wanted.architecture != offered.architecture {
            return None;
        }
        if wanted.variant == offered.variant {
            return Some(0);
        }
        // Older variants, newest first (containerd's `Only`: arm v8 > v7 > v6 > v5; amd64 v4 >
        // v3 > v2 > v1, where v1 is no variant).
        let ladder: &[&str] = match wanted.architecture.as_str() {
            "arm" => &["v8", "v7", "v6", "v5"],
            "amd64" => &["v4", "v3", "v2", ""],
            _ => return None,
        };
        let rung = |v: &Option<String>| {
            let v = v.as_deref().unwrap_or("");
            ladder.iter().position(|r| *r == v)
        };
        let (want, offer) = (rung(&wanted.variant)?, rung(&offered.variant)?);
        (offer > want).then(|| offer - want)
    }

    /// The variant as `TARGETVARIANT` gives it: empty when there is none.
    pub fn variant_or_empty(&self) -> &str {
        self.variant.as_deref().unwrap_or("")
    }

    /// A name safe as a path component (`linux_arm64_v8`): BuildKit's directory names for the
    /// platforms of a multi-platform `type=local` or `type=tar` export.
    pub fn path_component(&self) -> String {
        self.to_string().replace('/', "_")
    }
}

/// containerd's `normalizeArch`: Go's name of the architecture and the variant, lower case, a
/// default variant left out (`arm` gets its default `v7`).
fn normalize_arch(arch: &str, variant: &str) -> (String, Option<String>) {
    let (arch, variant) = (arch.to_ascii_lowercase(), variant.to_ascii_lowercase());
    let (arch, variant): (&str, String) = match arch.as_str() {
        "i386" => ("386", String::new()),
        "x86_64" | "x86-64" | "amd64" => (
            "amd64",
            if variant == "v1" {
                String::new()
            } else {
                variant
            },
        ),
        "aarch64" | "arm64" => (
            "arm64",
            match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".to_string(),
                _ => variant,
            },
        ),
        "armhf" => ("arm", "v7".to_string()),
        "armel" => ("arm", "v6".to_string()),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7".to_string(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            },
        ),
        other => (other, variant),
    };
    (arch.to_string(), (!variant.is_empty()).then_some(variant))
}

/// `os/arch[/variant]`. A platform read from an index may say anything: its parts are written
/// escaped, so none reaches a terminal as a control sequence (a parsed one prints as given).
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.os.escape_debug(),
            self.architecture.escape_debug()
        )?;
        if let Some(variant) = &self.variant {
            write!(f, "/{}", variant.escape_debug())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> String {
        Platform::parse(text).unwrap().to_string()
    }

    fn normalized(text: &str) -> String {
        Platform::parse_normalized(text).unwrap().to_string()
    }

    #[test]
    fn platform_parse_rejects_bad_forms() {
        for bad in [
            "",
            "linux/",
            "/amd64",
            "a/b/c/d",
            "linux/am d64",
            "linux/*",
            "vax",
            "windows(10.0)/amd64",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
        let err = Platform::parse("linux/am d64").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid platform \"linux/am d64\""),
            "{err}"
        );
        assert_eq!(parsed("Linux/ARM64"), "linux/arm64");
        assert_eq!(Platform::host().os, "linux");
    }

    /// containerd's `Parse` table (platforms_test.go), the parts kiln reads.
    #[test]
    fn parse_reads_specifiers_as_containerd() {
        for (text, expected) in [
            ("linux/arm64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64/v8"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm", "linux/arm"),
            ("linux/arm/v7", "linux/arm/v7"),
            ("linux/armhf", "linux/arm"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64/v2", "linux/amd64/v2"),
            ("linux/i386", "linux/386"),
            ("arm64", "linux/arm64"),
            ("s390x", "linux/s390x"),
            ("macOS/arm64", "darwin/arm64"),
        ] {
            assert_eq!(parsed(text), expected, "{text}");
        }
        assert_eq!(
            Platform::parse("linux").unwrap().architecture,
            Platform::host().architecture
        );
    }

    #[test]
    fn normalisation_drops_default_variants_and_gives_arm_its_own() {
        for (text, expected) in [
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm64/8", "linux/arm64"),
            ("linux/arm64/v9.0", "linux/arm64/v9"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("LINUX/X86_64", "linux/amd64"),
        ] {
            assert_eq!(normalized(text), expected, "{text}");
        }
        let list = Platform::parse_list("linux/amd64, linux/arm64,linux/arm64/v8").unwrap();
        let names: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64"]);
        assert!(Platform::parse_list("linux/amd64,").is_err());
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().path_component(),
            "linux_arm_v7"
        );
        // What an index says is printed escaped.
        let hostile = Platform::new("linux", "a\u{1b}[2J", Some("\n"));
        assert_eq!(hostile.to_string(), "linux/a\\u{1b}[2J/\\n");
    }

    #[test]
    fn host_is_linux_with_go_names() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert_eq!(host, host.normalized());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.to_string(), "linux/amd64");
        }
    }

    #[test]
    fn arm64_means_v8_and_older_variants_serve_newer() {
        let accepts = |wanted: &str, offered: &str| {
            Platform::parse(wanted)
                .unwrap()
                .accepts(&Platform::parse(offered).unwrap())
        };
        assert!(accepts("linux/arm64", "linux/arm64/v8"));
        assert!(accepts("linux/arm64/v8", "linux/arm64"));
        assert!(!accepts("linux/arm64", "linux/arm64/v9"));
        assert!(accepts("linux/arm", "linux/arm/v6"));
        assert!(accepts("linux/arm", "linux/arm/v7"));
        assert!(!accepts("linux/arm/v6", "linux/arm/v7"));
        assert!(accepts("linux/amd64/v3", "linux/amd64"));
        assert!(!accepts("linux/amd64", "linux/amd64/v2"));
        assert!(!accepts("linux/amd64", "linux/arm64"));
        let arm7 = Platform::parse("linux/arm/v7").unwrap();
        let (v7, v6) = (
            arm7.preference(&Platform::parse("linux/arm/v7").unwrap()),
            arm7.preference(&Platform::parse("linux/arm/v6").unwrap()),
        );
        assert!(v7 < v6, "{v7:?} {v6:?}");
    }
}
