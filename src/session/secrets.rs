//! Build secrets: `--secret` flags and the bytes a `RUN --mount=type=secret` step reads.
//!
//! The flag is buildx's (`util/buildflags/secrets.go`), a CSV record of `key=value` fields:
//!
//! - `id=ID` names the secret (what `--mount=type=secret,id=ID` asks for); it is required
//!   (BuildKit's `secretsprovider.NewStore`: "secret missing ID").
//! - `src=PATH` or `source=PATH`: the secret is that file's content.
//! - `env=NAME`: the secret is that environment variable's value. With both `src` and `env`,
//!   `env` wins, as in BuildKit's store.
//! - `type=file` or `type=env`: with `type=env` and no `env=`, the `src` value names the
//!   variable (`type=env,id=tok,src=TOKEN`). Any other type is an error.
//! - With neither `src` nor `env`, the secret is the variable named `ID` when it is set (as the
//!   flag is parsed), else the file named `ID` (relative to the working directory): BuildKit's
//!   `NewStore`, so `--secret id=GITHUB_TOKEN` reads `$GITHUB_TOKEN`.
//!
//! Keys are case-insensitive; any other key, or a field without `=`, is an error. Duplicate ids
//! are not an error: the last flag wins, as in BuildKit's store (a map). An empty flag is an error
//! (buildx skips it silently; kiln says so instead).
//!
//! A secret is read when a step needs it ([`Secrets::get`]), not when the flag is parsed, and is
//! at most [`MAX_SECRET_SIZE`] bytes: BuildKit's `secretsprovider.MaxSecretSize`, checked on the
//! file's size and again on what is read. An environment variable that is unset when the step
//! reads it is an empty secret, as BuildKit's `os.Getenv`. The bytes are [`SecretBytes`]: zeroed
//! when dropped, and their `Debug` shows only their length.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::SessionError;
use crate::error::Reason;
use crate::oci::csv::split_record;

/// The largest secret kiln reads, in bytes: BuildKit's `secretsprovider.MaxSecretSize` (500 KiB).
pub const MAX_SECRET_SIZE: usize = 500 * 1024;

/// One `--secret` flag: a secret's id and where its bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub id: String,
    pub source: SecretSource,
}

/// Where a secret's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file's content.
    File(PathBuf),
    /// An environment variable's value, read when the step needs it.
    Env(String),
}

impl SecretSpec {
    /// Parses the value of one `--secret` flag (the rules are in the module docs).
    pub fn parse(flag: &str) -> Result<SecretSpec, SessionError> {
        let invalid = |reason: String| SessionError::SecretFlag {
            flag: flag.to_string(),
            reason: Reason::new(reason),
        };
        if flag.is_empty() {
            return Err(invalid("the value is empty".to_string()));
        }
        let fields = split_record(flag).map_err(invalid)?;
        let (mut id, mut src, mut env, mut typ) = (None, None, None, None);
        for field in &fields {
            let Some((key, value)) = field.split_once('=') else {
                return Err(invalid(format!("field {field:?} is not a key=value pair")));
            };
            match key.to_ascii_lowercase().as_str() {
                "type" => match value {
                    "file" | "env" => typ = Some(value),
                    _ => {
                        return Err(invalid(format!(
                            "unsupported secret type {value:?} (file or env)"
                        )));
                    }
                },
                "id" => id = Some(value),
                "src" | "source" => src = Some(value),
                "env" => env = Some(value),
                _ => return Err(invalid(format!("unexpected key {key:?} in {field:?}"))),
            }
        }
        // Empty values count as absent, as in buildx and BuildKit (Go's zero-value strings).
        let nonempty = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_string);
        let (id, mut src, mut env) = (nonempty(id), nonempty(src), nonempty(env));
        let Some(id) = id else {
            return Err(invalid("the secret has no id (id=ID)".to_string()));
        };
        if typ == Some("env") && env.is_none() {
            env = src.take();
        }
        let source = match (env, src) {
            (Some(env), _) => SecretSource::Env(env),
            (None, Some(src)) => SecretSource::File(PathBuf::from(src)),
            (None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
            (None, None) => SecretSource::File(PathBuf::from(&id)),
        };
        Ok(SecretSpec { id, source })
    }
}

/// A secret's bytes: zeroed when dropped, never shown by `Debug`.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes `bytes` as a secret (they are zeroed when it drops).
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl AsRef<[u8]> for SecretBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

/// The secrets a build was given, by id.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    sources: HashMap<String, SecretSource>,
}

impl Secrets {
    /// The secrets of these flags; of two with one id, the last wins (as BuildKit's store).
    pub fn new(specs: Vec<SecretSpec>) -> Secrets {
        Secrets {
            sources: specs.into_iter().map(|s| (s.id, s.source)).collect(),
        }
    }

    /// Whether a secret with this id was given (its source is not read).
    pub fn contains(&self, id: &str) -> bool {
        self.sources.contains_key(id)
    }

    /// The secret's bytes, read now; `None` when no secret with this id was given.
    pub fn get(&self, id: &str) -> Result<Option<SecretBytes>, SessionError> {
        let Some(source) = self.sources.get(id) else {
            return Ok(None);
        };
        let too_big = || SessionError::SecretTooBig {
            id: id.to_string(),
            limit: MAX_SECRET_SIZE,
        };
        let bytes = match source {
            SecretSource::File(path) => {
                read_bounded(path, MAX_SECRET_SIZE).map_err(|err| match err {
                    Bounded::TooBig => too_big(),
                    Bounded::Io(source) => SessionError::ReadSecret {
                        id: id.to_string(),
                        path: path.clone(),
                        source,
                    },
                })?
            }
            SecretSource::Env(name) => {
                // Moved, not copied, into the zeroizing buffer.
                let value = std::env::var_os(name).unwrap_or_default();
                let bytes = Zeroizing::new(value.into_encoded_bytes());
                if bytes.len() > MAX_SECRET_SIZE {
                    return Err(too_big());
                }
                bytes
            }
        };
        Ok(Some(SecretBytes(bytes)))
    }
}

enum Bounded {
    TooBig,
    Io(io::Error),
}

/// Reads at most `limit` bytes of the file at `path` into one zeroizing buffer sized up front, so
/// no reallocation leaves a copy of the secret behind; a file over `limit` (by its size, or by
/// what is read if it grew) is [`Bounded::TooBig`].
fn read_bounded(path: &Path, limit: usize) -> Result<Zeroizing<Vec<u8>>, Bounded> {
    let mut file = File::open(path).map_err(Bounded::Io)?;
    let size = file.metadata().map_err(Bounded::Io)?.len();
    if size > limit as u64 {
        return Err(Bounded::TooBig);
    }
    // One byte more than the limit tells a file that grew past it from one that fits exactly.
    let capacity = usize::try_from(size).map_or(limit, |s| s.min(limit)) + 1;
    let mut buf = Zeroizing::new(vec![0u8; capacity]);
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if filled > limit {
                return Err(Bounded::TooBig);
            }
            // The file grew since its size was read but is still within the limit: read the
            // rest into a buffer of the limit's size (the old one is zeroed as it drops).
            let mut bigger = Zeroizing::new(vec![0u8; limit + 1]);
            bigger[..filled].copy_from_slice(&buf[..filled]);
            buf = bigger;
            continue;
        }
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Bounded::Io(err)),
        }
    }
    if filled > limit {
        return Err(Bounded::TooBig);
    }
    buf.truncate(filled);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{assert_layered, chain};

    fn parse(flag: &str) -> SecretSpec {
        SecretSpec::parse(flag).unwrap_or_else(|e| panic!("{flag}: {}", chain(&e)))
    }

    fn parse_err(flag: &str) -> String {
        let err = SecretSpec::parse(flag).expect_err(flag);
        assert_layered(&err);
        chain(&err)
    }

    fn file(id: &str, path: &str) -> SecretSpec {
        SecretSpec {
            id: id.to_string(),
            source: SecretSource::File(PathBuf::from(path)),
        }
    }

    fn env(id: &str, name: &str) -> SecretSpec {
        SecretSpec {
            id: id.to_string(),
            source: SecretSource::Env(name.to_string()),
        }
    }

    #[test]
    fn every_form_of_the_flag() {
        assert_eq!(parse("id=a,src=/run/a"), file("a", "/run/a"));
        assert_eq!(parse("id=a,source=rel/a"), file("a", "rel/a"));
        assert_eq!(parse("type=file,id=a,src=/a"), file("a", "/a"));
        assert_eq!(parse("ID=a,SRC=/a,Type=file"), file("a", "/a"));
        assert_eq!(parse("id=a,env=TOKEN"), env("a", "TOKEN"));
        assert_eq!(parse("type=env,id=a,env=TOKEN"), env("a", "TOKEN"));
        // type=env takes the variable's name from src when env= is absent (buildx).
        assert_eq!(parse("type=env,id=a,src=TOKEN"), env("a", "TOKEN"));
        // env wins over src, as in BuildKit's store.
        assert_eq!(parse("id=a,src=/a,env=TOKEN"), env("a", "TOKEN"));
        // A quoted field keeps its commas; a value keeps its `=`.
        assert_eq!(parse("id=a,\"src=/x,y\""), file("a", "/x,y"));
        assert_eq!(parse("id=a,src=/p=q"), file("a", "/p=q"));
        // An empty value is absent.
        assert_eq!(parse("id=a,src=/a,env="), file("a", "/a"));
    }

    #[test]
    fn an_id_alone_is_its_variable_when_set_else_its_file() {
        // PATH is set in every test environment; this name is set nowhere.
        assert_eq!(parse("id=PATH"), env("PATH", "PATH"));
        let unset = "KILN_TEST_SECRET_NOT_SET_ANYWHERE";
        assert_eq!(parse(&format!("id={unset}")), file(unset, unset));
    }

    #[test]
    fn bad_flags_say_why() {
        for (flag, why) in [
            ("", "empty"),
            ("src=/a", "no id"),
            ("id=", "no id"),
            ("env=TOKEN", "no id"),
            ("id=a,src", "\"src\" is not a key=value pair"),
            ("id=a,type=ssh", "unsupported secret type \"ssh\""),
            ("id=a,target=/x", "unexpected key \"target\""),
            ("id=a,\"src=/x", "quote is not closed"),
        ] {
            let err = parse_err(flag);
            assert!(err.starts_with("invalid --secret"), "{err}");
            assert!(err.contains(why), "{flag}: {err}");
        }
    }

    #[test]
    fn the_last_of_two_flags_with_one_id_wins() {
        let secrets = Secrets::new(vec![file("a", "/first"), env("a", "SECOND")]);
        assert!(secrets.contains("a"));
        assert!(!secrets.contains("b"));
        assert_eq!(secrets.sources["a"], SecretSource::Env("SECOND".into()));
    }

    #[test]
    fn get_reads_a_file_secret_when_asked_and_none_for_an_unknown_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let secrets = Secrets::new(vec![file("s", path.to_str().unwrap())]);
        // Not read at construction: the file may appear later.
        std::fs::write(&path, b"hunter2").unwrap();
        let bytes = secrets.get("s").unwrap().unwrap();
        assert_eq!(bytes.as_bytes(), b"hunter2");
        assert_eq!(format!("{bytes:?}"), "SecretBytes(7 bytes)");
        assert!(secrets.get("other").unwrap().is_none());
    }

    #[test]
    fn a_missing_file_names_the_secret_and_the_path() {
        let secrets = Secrets::new(vec![file("s", "/nonexistent/kiln-secret")]);
        let err = secrets.get("s").unwrap_err();
        assert_layered(&err);
        let text = chain(&err);
        assert!(
            text.starts_with("cannot read secret \"s\" from /nonexistent/kiln-secret: "),
            "{text}"
        );
    }

    #[test]
    fn a_secret_is_bounded_by_buildkits_limit() {
        let dir = tempfile::tempdir().unwrap();
        let exact = dir.path().join("exact");
        let over = dir.path().join("over");
        std::fs::write(&exact, vec![b'x'; MAX_SECRET_SIZE]).unwrap();
        std::fs::write(&over, vec![b'x'; MAX_SECRET_SIZE + 1]).unwrap();
        let secrets = Secrets::new(vec![
            file("exact", exact.to_str().unwrap()),
            file("over", over.to_str().unwrap()),
        ]);
        assert_eq!(
            secrets.get("exact").unwrap().unwrap().len(),
            MAX_SECRET_SIZE
        );
        let err = secrets.get("over").unwrap_err();
        assert_eq!(
            chain(&err),
            "secret \"over\" is too big: the limit is 512000 bytes"
        );
    }

    #[test]
    fn a_file_that_grows_while_read_is_still_bounded() {
        // /dev/zero reports size 0 and never ends: what is read is bounded, not its stat size.
        let err = read_bounded(Path::new("/dev/zero"), 1024).err().unwrap();
        assert!(matches!(err, Bounded::TooBig));
        // A file whose stat size is 0 but that has content still reads (procfs).
        let bytes = read_bounded(Path::new("/proc/self/stat"), MAX_SECRET_SIZE)
            .ok()
            .unwrap();
        assert!(!bytes.is_empty());
    }

    #[test]
    fn an_env_secret_is_read_when_asked_and_empty_when_unset() {
        // PATH is set in every test environment and not changed by tests (set_var is unsafe).
        let secrets = Secrets::new(vec![
            env("path", "PATH"),
            env("unset", "KILN_TEST_SECRET_NOT_SET_ANYWHERE"),
        ]);
        let path = std::env::var_os("PATH").unwrap().into_encoded_bytes();
        assert_eq!(secrets.get("path").unwrap().unwrap().as_bytes(), path);
        assert!(secrets.get("unset").unwrap().unwrap().is_empty());
    }
}
