//! The image's distribution from `/etc/os-release` (or `/usr/lib/os-release`), os-release(5):
//! the purl namespace of its OS packages (`debian`, `ubuntu`, `alpine`) and the `distro`
//! qualifier (`debian-12`).

use super::SbomError;
use super::root::Root;
use std::path::Path;

/// os-release files are a few hundred bytes; anything past this is not one.
const MAX_OS_RELEASE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct OsRelease {
    /// `ID`, e.g. `debian`.
    pub id: Option<String>,
    /// `VERSION_ID`, e.g. `12` or `3.19.1`.
    pub version_id: Option<String>,
    /// `VERSION_CODENAME`, e.g. `trixie` (testing has no `VERSION_ID`).
    pub codename: Option<String>,
}

impl OsRelease {
    pub fn read(root: &Root) -> Result<OsRelease, SbomError> {
        for path in ["/etc/os-release", "/usr/lib/os-release"] {
            let content = match root.read(Path::new(path), MAX_OS_RELEASE_BYTES) {
                Ok(content) => content,
                // Too large to be an os-release file: as good as none.
                Err(SbomError::TooLarge { .. }) => None,
                Err(error) => return Err(error),
            };
            if let Some(content) = content {
                return Ok(parse(&String::from_utf8_lossy(&content)));
            }
        }
        Ok(OsRelease::default())
    }

    /// The purl `distro` qualifier: `ID-VERSION_ID` (or `ID-VERSION_CODENAME`).
    pub fn distro(&self) -> Option<String> {
        let id = self.id.as_deref()?;
        let version = self.version_id.as_deref().or(self.codename.as_deref())?;
        Some(format!("{id}-{version}"))
    }
}

fn parse(text: &str) -> OsRelease {
    let mut release = OsRelease::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        // Values become purl parts: keep only what an os-release value may hold.
        if value.is_empty()
            || value.len() > 64
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-~".contains(&b))
        {
            continue;
        }
        let slot = match key.trim() {
            "ID" => &mut release.id,
            "VERSION_ID" => &mut release.version_id,
            "VERSION_CODENAME" => &mut release.codename,
            _ => continue,
        };
        *slot = Some(value.to_ascii_lowercase());
    }
    release
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_and_alpine_files_parse() {
        let debian = parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
        );
        assert_eq!(debian.distro().as_deref(), Some("debian-12"));
        assert_eq!(debian.id.as_deref(), Some("debian"));
        let alpine = parse("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n");
        assert_eq!(alpine.distro().as_deref(), Some("alpine-3.19.1"));
        let testing = parse("ID=debian\nVERSION_CODENAME=trixie\n");
        assert_eq!(testing.distro().as_deref(), Some("debian-trixie"));
    }

    #[test]
    fn odd_values_are_dropped() {
        let release = parse("ID=\"deb/ian?x\"\nVERSION_ID=\n=\n\u{0}\n");
        assert_eq!(release, OsRelease::default());
        assert_eq!(release.distro(), None);
    }
}
