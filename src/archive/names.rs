//! Names inside an archive. They are keys into the table of the archive's entries and nothing
//! else: never joined to a directory, never opened. Still, a name that climbs out (`..` above the
//! top) is refused everywhere, so no reading of the archive depends on where it would have been
//! extracted.

use super::ArchiveError;
use crate::oci::Digest;

/// The key of a tar entry's name: its components joined with `/`, without `.` components,
/// empty components or a leading `/` (tar writers differ: `./manifest.json`, `/manifest.json`
/// and `manifest.json` are one entry). `None` for the top directory itself (`./`).
pub(super) fn entry_key(name: &str) -> Result<Option<String>, ArchiveError> {
    let components = components(name, true)?;
    Ok((!components.is_empty()).then(|| components.join("/")))
}

/// The key of a name that `manifest.json` or `index.json` gives: like [`entry_key`], but an
/// absolute or empty name is refused as well, since no archive writer produces one.
pub(super) fn reference_key(name: &str) -> Result<String, ArchiveError> {
    if name.starts_with('/') {
        return Err(unsafe_name(
            name,
            "an absolute path; names are relative to the archive",
        ));
    }
    let components = components(name, false)?;
    if components.is_empty() {
        return Err(unsafe_name(name, "it names no file"));
    }
    Ok(components.join("/"))
}

/// The components of `name`, `..` refused (`leading_slash`: a leading `/` is dropped).
fn components(name: &str, leading_slash: bool) -> Result<Vec<&str>, ArchiveError> {
    if name.contains('\0') {
        return Err(unsafe_name(name, "it contains a NUL byte"));
    }
    let name = if leading_slash {
        name.trim_start_matches('/')
    } else {
        name
    };
    let mut components = Vec::new();
    for component in name.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(unsafe_name(name, "`..` would climb out of the archive")),
            other => components.push(other),
        }
    }
    Ok(components)
}

/// Where a link entry points, as a key: a hard link's target is relative to the archive's top
/// (tar's rule), a symlink's to the link's directory, an absolute symlink target to the
/// archive's top (as if the archive were the root, docker's `FollowSymlinkInScope`). A target
/// that climbs above the top is refused.
pub(super) fn link_target(
    link: &str,
    target: &str,
    hard: bool,
) -> Result<Vec<String>, ArchiveError> {
    let mut path: Vec<String> = Vec::new();
    if !hard && !target.starts_with('/') {
        path.extend(link.split('/').map(str::to_string));
        path.pop();
    }
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if path.pop().is_none() {
                    return Err(unsafe_name(
                        target,
                        "a link target that climbs out of the archive",
                    ));
                }
            }
            other => path.push(other.to_string()),
        }
    }
    Ok(path)
}

/// The digest an OCI layout entry's name promises (`blobs/sha256/<hex>`), `None` for names
/// outside `blobs/`. A name under `blobs/ALG/` that is not a sha256 digest is refused: kiln
/// could not verify it.
pub(super) fn blob_digest(key: &str) -> Result<Option<Digest>, ArchiveError> {
    let mut parts = key.split('/');
    let (Some("blobs"), Some(algorithm), Some(encoded), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    if algorithm != "sha256" {
        return Err(ArchiveError::UnsafeName {
            name: key.to_string(),
            reason: "only sha256 blobs are supported",
        });
    }
    Digest::from_hex(encoded)
        .map(Some)
        .map_err(|_| ArchiveError::UnsafeName {
            name: key.to_string(),
            reason: "a blob's name must be its digest (64 lower-case hex characters)",
        })
}

/// The key of the blob `digest` in an OCI layout.
pub(super) fn blob_key(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

fn unsafe_name(name: &str, reason: &'static str) -> ArchiveError {
    ArchiveError::UnsafeName {
        name: name.chars().take(200).collect(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_are_normalised_and_dot_dot_is_refused() {
        for (name, key) in [
            ("manifest.json", Some("manifest.json")),
            ("./manifest.json", Some("manifest.json")),
            ("/manifest.json", Some("manifest.json")),
            ("a//b/./layer.tar", Some("a/b/layer.tar")),
            ("./", None),
            (".", None),
        ] {
            assert_eq!(entry_key(name).unwrap().as_deref(), key, "{name}");
        }
        for name in ["../x", "a/../../x", "a/..", "a\0b"] {
            assert!(entry_key(name).is_err(), "{name}");
        }
    }

    #[test]
    fn reference_keys_refuse_absolute_empty_and_climbing_names() {
        assert_eq!(reference_key("./abc/layer.tar").unwrap(), "abc/layer.tar");
        for name in [
            "/etc/passwd",
            "../../etc/passwd",
            "",
            ".",
            "a/../../b",
            "x\0",
        ] {
            assert!(reference_key(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn link_targets_resolve_inside_the_archive() {
        let cases: [(&str, &str, bool, Option<&str>); 7] = [
            ("a/layer.tar", "../b/layer.tar", false, Some("b/layer.tar")),
            ("a/layer.tar", "x.tar", false, Some("a/x.tar")),
            (
                "a/layer.tar",
                "/blobs/sha256/x",
                false,
                Some("blobs/sha256/x"),
            ),
            ("a/layer.tar", "b/layer.tar", true, Some("b/layer.tar")),
            ("a/layer.tar", "../../etc/passwd", false, None),
            ("layer.tar", "..", false, None),
            ("a/b", "../../..", true, None),
        ];
        for (link, target, hard, expected) in cases {
            let got = link_target(link, target, hard).ok().map(|p| p.join("/"));
            assert_eq!(got.as_deref(), expected, "{link} -> {target}");
        }
    }

    #[test]
    fn blob_names_must_be_sha256_digests() {
        let digest = Digest::of(b"x");
        assert_eq!(blob_digest(&blob_key(&digest)).unwrap(), Some(digest));
        assert_eq!(blob_digest("manifest.json").unwrap(), None);
        assert_eq!(blob_digest("blobs/sha256").unwrap(), None);
        assert!(blob_digest("blobs/sha512/abc").is_err());
        assert!(blob_digest("blobs/sha256/ABC").is_err());
    }
}
