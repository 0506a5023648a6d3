//! OCI annotations a build writes into its image, as `docker buildx build --annotation` and
//! BuildKit's exporter keys ask for them: `--annotation [TYPE[,TYPE...]:]KEY=VALUE` (buildx's
//! syntax, `TYPE` optionally with a platform, `manifest[linux/amd64]`) and the `-o` keys
//! `annotation[-TYPE][[PLATFORM]].KEY=VALUE` (BuildKit's `exptypes.ParseAnnotationKey`).
//!
//! Where each type lands is where BuildKit's image writer puts it
//! (exporter/containerimage/writer.go):
//!
//! - `manifest` (the default): the image manifest's `annotations`; on a multi-platform image,
//!   each platform's manifest (a platform-qualified one only that platform's). A
//!   single-platform image takes only the unqualified ones, as BuildKit's (which drops the
//!   qualified ones without a word; kiln warns, see [`Annotations::dropped_on_single_platform`]).
//! - `manifest-descriptor`: the manifest's descriptor: in the index of a multi-platform image,
//!   else the descriptor that names the image (the store's `index.json`, an OCI layout's
//!   `index.json`, the metadata file's `containerimage.descriptor`).
//! - `index` and `index-descriptor`: the image index and the descriptor naming it; a
//!   single-platform image has no index, and BuildKit refuses them there ("index annotations
//!   not supported for single platform export"), as does kiln.

use crate::oci::Platform;
use std::collections::BTreeMap;

/// Where an annotation is written (BuildKit's annotation types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnnotationTarget {
    Manifest,
    ManifestDescriptor,
    Index,
    IndexDescriptor,
}

impl AnnotationTarget {
    /// The type's name as buildx and BuildKit spell it (`manifest-descriptor`).
    pub fn as_str(self) -> &'static str {
        match self {
            AnnotationTarget::Manifest => "manifest",
            AnnotationTarget::ManifestDescriptor => "manifest-descriptor",
            AnnotationTarget::Index => "index",
            AnnotationTarget::IndexDescriptor => "index-descriptor",
        }
    }

    fn parse(text: &str) -> Option<AnnotationTarget> {
        Some(match text {
            "manifest" => AnnotationTarget::Manifest,
            "manifest-descriptor" => AnnotationTarget::ManifestDescriptor,
            "index" => AnnotationTarget::Index,
            "index-descriptor" => AnnotationTarget::IndexDescriptor,
            _ => return None,
        })
    }

    /// Whether a platform qualifies it (BuildKit keeps a platform on the manifest types only;
    /// an index has one of each whatever the platform says).
    fn takes_platform(self) -> bool {
        matches!(
            self,
            AnnotationTarget::Manifest | AnnotationTarget::ManifestDescriptor
        )
    }
}

/// One annotation: where it goes, for which platform's manifest (all when `None`), its key and
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub target: AnnotationTarget,
    pub platform: Option<Platform>,
    pub key: String,
    pub value: String,
}

/// Why an annotation is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("invalid annotation {given:?}, expected key=value")]
    NoValue { given: String },
    #[error(
        "invalid annotation type {given:?}, expected type and optional platform in square \
         brackets"
    )]
    BadType { given: String },
    #[error(
        "unknown annotation type {given:?}: use manifest, manifest-descriptor, index or \
         index-descriptor"
    )]
    UnknownType { given: String },
    #[error("invalid annotation {given:?}: the key is empty")]
    EmptyKey { given: String },
    #[error("invalid platform {platform:?} in annotation {given:?}")]
    Platform {
        given: String,
        platform: String,
        #[source]
        source: crate::oci::platform::PlatformError,
    },
    /// BuildKit's message: a single-platform image has no index to annotate.
    #[error(
        "index annotations not supported for single platform export: {key:?} is an {} \
         annotation; build for several platforms (--platform a,b) or make it a manifest \
         annotation",
        .target.as_str()
    )]
    IndexOnSinglePlatform {
        key: String,
        target: AnnotationTarget,
    },
    /// BuildKit's message: a platform the build did not make.
    #[error("invalid annotation: no platform {platform} found in source (the build makes {built})")]
    NoSuchPlatform { platform: String, built: String },
}

/// The annotations of a build; a later one with the same type, platform and key wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    entries: Vec<Annotation>,
}

impl Annotations {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Annotation] {
        &self.entries
    }

    /// Adds `annotation`, replacing one of the same type, platform and key.
    pub fn add(&mut self, annotation: Annotation) {
        self.entries.retain(|a| {
            !(a.target == annotation.target
                && a.platform == annotation.platform
                && a.key == annotation.key)
        });
        self.entries.push(annotation);
    }

    /// Adds every annotation of `other` (its win over this one's).
    pub fn extend(&mut self, other: &Annotations) {
        for annotation in &other.entries {
            self.add(annotation.clone());
        }
    }

    /// Adds one `--annotation` flag's annotations (buildx's `ParseAnnotations`): `KEY=VALUE`
    /// is a manifest annotation; `TYPES:KEY=VALUE` one per comma-separated type, each
    /// `TYPE[PLATFORM]`.
    pub fn add_flag(&mut self, flag: &str) -> Result<(), AnnotationError> {
        let Some((name, value)) = flag.split_once('=') else {
            return Err(AnnotationError::NoValue {
                given: flag.to_string(),
            });
        };
        let Some((types, key)) = name.split_once(':') else {
            self.add(annotation(
                AnnotationTarget::Manifest,
                None,
                name,
                value,
                flag,
            )?);
            return Ok(());
        };
        for typed in types.split(',') {
            let (kind, platform) =
                split_platform(typed).ok_or_else(|| AnnotationError::BadType {
                    given: typed.to_string(),
                })?;
            if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                return Err(AnnotationError::BadType {
                    given: typed.to_string(),
                });
            }
            let target =
                AnnotationTarget::parse(kind).ok_or_else(|| AnnotationError::UnknownType {
                    given: kind.to_string(),
                })?;
            self.add(annotation(target, platform, key, value, flag)?);
        }
        Ok(())
    }

    /// An `-o` exporter key of BuildKit's annotation grammar
    /// (`annotation[-TYPE][[PLATFORM]].KEY`) with its value: `None` when `key` is not one (it
    /// is another option), else the annotation added or why it is not one.
    pub fn add_exporter_key(
        &mut self,
        key: &str,
        value: &str,
    ) -> Option<Result<(), AnnotationError>> {
        let rest = key.strip_prefix("annotation")?;
        let (head, name) = rest.split_once('.')?;
        // BuildKit's key is `\S+`: a key with white space is not an annotation key at all.
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return None;
        }
        let (kind, platform) = split_platform(head)?;
        let target = match kind.strip_prefix('-') {
            None if kind.is_empty() => AnnotationTarget::Manifest,
            None => return None,
            Some(kind) => {
                if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                    return None;
                }
                match AnnotationTarget::parse(kind) {
                    Some(target) => target,
                    None => {
                        return Some(Err(AnnotationError::UnknownType {
                            given: kind.to_string(),
                        }));
                    }
                }
            }
        };
        let given = format!("{key}={value}");
        Some(annotation(target, platform, name, value, &given).map(|a| self.add(a)))
    }

    /// The annotations of `target` for `platform`'s manifest (or the index, `None`): the
    /// unqualified ones, then those qualified with that platform over them.
    fn of(
        &self,
        target: AnnotationTarget,
        platform: Option<&Platform>,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for pass in [false, true] {
            for a in self.entries.iter().filter(|a| a.target == target) {
                let applies = match (&a.platform, pass) {
                    (None, false) => true,
                    (Some(qualified), true) => {
                        platform.is_some_and(|p| p.normalized() == qualified.normalized())
                    }
                    _ => false,
                };
                if applies {
                    out.insert(a.key.clone(), a.value.clone());
                }
            }
        }
        out
    }

    /// The manifest annotations of `platform`'s image (`None`: a single-platform image, which
    /// takes the unqualified ones only, as BuildKit's).
    pub fn manifest(&self, platform: Option<&Platform>) -> BTreeMap<String, String> {
        self.of(AnnotationTarget::Manifest, platform)
    }

    /// The annotations of the descriptor naming `platform`'s manifest (`None` as above).
    pub fn manifest_descriptor(&self, platform: Option<&Platform>) -> BTreeMap<String, String> {
        self.of(AnnotationTarget::ManifestDescriptor, platform)
    }

    /// The image index's annotations.
    pub fn index(&self) -> BTreeMap<String, String> {
        self.of(AnnotationTarget::Index, None)
    }

    /// The annotations of the descriptor naming the image index.
    pub fn index_descriptor(&self) -> BTreeMap<String, String> {
        self.of(AnnotationTarget::IndexDescriptor, None)
    }

    /// The first annotation Docker's media types have no room for (BuildKit refuses `index`,
    /// `index-descriptor` and `manifest-descriptor` annotations under `oci-mediatypes=false`),
    /// as `TYPE:KEY`.
    pub fn oci_only(&self) -> Option<String> {
        self.entries
            .iter()
            .find(|a| a.target != AnnotationTarget::Manifest)
            .map(|a| format!("{}:{}", a.target.as_str(), a.key))
    }

    /// Checks the annotations against what the build makes, before it runs: a single-platform
    /// image (no index) takes no index annotations, and a platform-qualified one must name a
    /// platform of a multi-platform build.
    pub fn check(&self, platforms: &[Platform], has_index: bool) -> Result<(), AnnotationError> {
        for a in &self.entries {
            if !has_index
                && matches!(
                    a.target,
                    AnnotationTarget::Index | AnnotationTarget::IndexDescriptor
                )
            {
                return Err(AnnotationError::IndexOnSinglePlatform {
                    key: a.key.clone(),
                    target: a.target,
                });
            }
            if let Some(platform) = &a.platform
                && has_index
                && !platforms
                    .iter()
                    .any(|p| p.normalized() == platform.normalized())
            {
                let built: Vec<String> = platforms.iter().map(ToString::to_string).collect();
                return Err(AnnotationError::NoSuchPlatform {
                    platform: platform.to_string(),
                    built: built.join(", "),
                });
            }
        }
        Ok(())
    }

    /// The platform-qualified manifest annotations a single-platform image does not take
    /// (BuildKit writes only the unqualified ones there), as `TYPE[PLATFORM]:KEY` for a
    /// warning.
    pub fn dropped_on_single_platform(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|a| {
                let platform = a.platform.as_ref()?;
                Some(format!("{}[{platform}]:{}", a.target.as_str(), a.key))
            })
            .collect()
    }
}

/// `TYPE[PLATFORM]` → (`TYPE`, the platform text); `None` when the brackets are malformed or
/// the platform has characters BuildKit's grammar (`[A-Za-z0-9_/-]+`) refuses.
fn split_platform(text: &str) -> Option<(&str, Option<&str>)> {
    let Some((kind, rest)) = text.split_once('[') else {
        return (!text.contains(']')).then_some((text, None));
    };
    let platform = rest.strip_suffix(']')?;
    let valid = !platform.is_empty()
        && platform
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'/' | b'-'));
    valid.then_some((kind, Some(platform)))
}

fn annotation(
    target: AnnotationTarget,
    platform: Option<&str>,
    key: &str,
    value: &str,
    given: &str,
) -> Result<Annotation, AnnotationError> {
    if key.is_empty() {
        return Err(AnnotationError::EmptyKey {
            given: given.to_string(),
        });
    }
    let platform = match platform {
        Some(text) => Some(
            Platform::parse(text).map_err(|source| AnnotationError::Platform {
                given: given.to_string(),
                platform: text.to_string(),
                source,
            })?,
        ),
        None => None,
    };
    Ok(Annotation {
        target,
        // An index has one set of annotations whatever a platform says (BuildKit's
        // `AnnotationKey.String` drops it for the index types).
        platform: platform.filter(|_| target.takes_platform()),
        key: key.to_string(),
        value: value.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux(arch: &str) -> Platform {
        Platform::new("linux", arch, None)
    }

    #[test]
    fn flags_parse_as_buildx_parses_them() {
        let mut all = Annotations::default();
        all.add_flag("plain=1").unwrap();
        all.add_flag("index:org.i=a=b").unwrap();
        all.add_flag("manifest,manifest-descriptor:both=2").unwrap();
        all.add_flag("manifest[linux/arm64]:arm=3").unwrap();
        all.add_flag("index-descriptor:d=").unwrap();
        assert_eq!(
            all.manifest(None),
            BTreeMap::from([
                ("both".to_string(), "2".to_string()),
                ("plain".to_string(), "1".to_string()),
            ])
        );
        assert_eq!(
            all.manifest(Some(&linux("arm64")))
                .get("arm")
                .map(String::as_str),
            Some("3")
        );
        assert_eq!(all.manifest(Some(&linux("amd64"))).get("arm"), None);
        assert_eq!(all.manifest_descriptor(None).len(), 1);
        // The value keeps everything after the first `=`.
        assert_eq!(all.index().get("org.i").map(String::as_str), Some("a=b"));
        assert_eq!(
            all.index_descriptor().get("d").map(String::as_str),
            Some("")
        );

        let error = |flag: &str| {
            Annotations::default()
                .add_flag(flag)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error("novalue"),
            "invalid annotation \"novalue\", expected key=value"
        );
        assert_eq!(
            error("bogus:k=v"),
            "unknown annotation type \"bogus\": use manifest, manifest-descriptor, index or \
             index-descriptor"
        );
        assert_eq!(
            error("Manifest:k=v"),
            "invalid annotation type \"Manifest\", expected type and optional platform in \
             square brackets"
        );
        assert_eq!(
            error("manifest[linux/amd64:k=v"),
            "invalid annotation type \"manifest[linux/amd64\", expected type and optional \
             platform in square brackets"
        );
        assert!(error("manifest[linux/amd64/v1/x]:k=v").starts_with("invalid platform"));
        assert_eq!(error("=v"), "invalid annotation \"=v\": the key is empty");
    }

    #[test]
    fn exporter_keys_parse_as_buildkit_parses_them() {
        let mut all = Annotations::default();
        let mut add = |key: &str, value: &str| all.add_exporter_key(key, value);
        assert_eq!(add("annotation.org.a", "1"), Some(Ok(())));
        assert_eq!(add("annotation-index.org.b", "2"), Some(Ok(())));
        assert_eq!(
            add("annotation-manifest[linux/arm64].org.c", "3"),
            Some(Ok(()))
        );
        assert_eq!(
            add("annotation-manifest-descriptor.org.d", "4"),
            Some(Ok(()))
        );
        assert_eq!(add("annotation-index-descriptor.org.e", "5"), Some(Ok(())));
        // Not annotation keys: other options.
        assert_eq!(add("annotations.x", "1"), None);
        assert_eq!(add("annotation", "1"), None);
        assert_eq!(add("name", "x"), None);
        assert!(matches!(
            add("annotation-bogus.k", "1"),
            Some(Err(AnnotationError::UnknownType { .. }))
        ));
        assert_eq!(all.manifest(None).len(), 1);
        assert_eq!(all.manifest(Some(&linux("arm64"))).len(), 2);
        assert_eq!(all.index().len(), 1);
        assert_eq!(all.index_descriptor().len(), 1);
        assert_eq!(all.manifest_descriptor(None).len(), 1);
        // A later one of the same type, platform and key wins.
        all.add_exporter_key("annotation.org.a", "again");
        assert_eq!(all.manifest(None)["org.a"], "again");
        assert_eq!(all.entries().len(), 5);
    }

    #[test]
    fn checks_follow_buildkits_writer() {
        let mut index = Annotations::default();
        index.add_flag("index:k=v").unwrap();
        assert_eq!(
            index.check(&[], false).unwrap_err().to_string(),
            "index annotations not supported for single platform export: \"k\" is an index \
             annotation; build for several platforms (--platform a,b) or make it a manifest \
             annotation"
        );
        let both = [linux("amd64"), linux("arm64")];
        assert_eq!(index.check(&both, true), Ok(()));

        let mut qualified = Annotations::default();
        qualified.add_flag("manifest[linux/s390x]:k=v").unwrap();
        assert_eq!(
            qualified.check(&both, true).unwrap_err().to_string(),
            "invalid annotation: no platform linux/s390x found in source (the build makes \
             linux/amd64, linux/arm64)"
        );
        // A single-platform image takes it without error, and without writing it.
        assert_eq!(qualified.check(&[linux("amd64")], false), Ok(()));
        assert!(qualified.manifest(None).is_empty());
        assert_eq!(
            qualified.dropped_on_single_platform(),
            vec!["manifest[linux/s390x]:k".to_string()]
        );
    }
}
