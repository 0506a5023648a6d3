//! Registry credentials: docker's `config.json` (read and written as docker does, every key kiln
//! does not know kept intact), credential helpers, and the `WWW-Authenticate` challenge.
//!
//! Lookup order for a registry, as docker's CLI: `credHelpers[host]`, else `credsStore`, else
//! `auths` (an `auth` of base64 `user:password`, or `username` and `password`). Docker Hub's key
//! is `https://index.docker.io/v1/`; other keys are matched by host, with or without a scheme
//! or path (`https://host/v1/`, `host`).

use super::RegistryError;
use crate::error::Reason;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The key docker uses for Docker Hub in `config.json` and with credential helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `Authorization` header value for basic auth.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            BASE64.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// The key of `registry` (a reference's domain) in `config.json` and for helpers.
pub fn config_key(registry: &str) -> String {
    if registry == crate::oci::reference::DEFAULT_DOMAIN
        || registry == "index.docker.io"
        || registry == "registry-1.docker.io"
    {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// The host part of a `config.json` key: `https://host:5000/v1/` → `host:5000`.
fn key_host(key: &str) -> &str {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    without_scheme.split('/').next().unwrap_or(without_scheme)
}

/// The directory of docker's `config.json`: `explicit`, else `$DOCKER_CONFIG`, else
/// `$HOME/.docker`.
pub fn config_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".docker")
}

/// docker's `config.json`, as a JSON object so that keys kiln does not know survive a write.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    document: Map<String, Value>,
}

impl DockerConfig {
    /// Reads `DIR/config.json`; a missing file is an empty config.
    pub fn load(dir: &Path) -> Result<DockerConfig, RegistryError> {
        let path = dir.join("config.json");
        let document = match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(config_error(&path, Reason::new("it is not a JSON object"))),
                Err(err) => {
                    return Err(config_error(&path, Reason::caused_by("invalid JSON", err)));
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(err) => {
                return Err(config_error(
                    &path,
                    Reason::caused_by("cannot read it", err),
                ));
            }
        };
        Ok(DockerConfig { path, document })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The helper for `key`: `credHelpers[key]` (an empty entry: none, the `auths` of this
    /// file), else `credsStore`.
    fn helper_for(&self, key: &str) -> Option<String> {
        let helpers = self.document.get("credHelpers").and_then(Value::as_object);
        let specific = helpers.and_then(|h| {
            h.iter()
                .find(|(k, _)| k.as_str() == key || key_host(k) == key_host(key))
                .and_then(|(_, v)| v.as_str())
        });
        specific
            .or_else(|| self.document.get("credsStore").and_then(Value::as_str))
            .filter(|name| !name.is_empty())
            .map(str::to_string)
    }

    /// The credentials for `registry` (a reference's domain), if any are configured.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        let key = config_key(registry);
        if let Some(helper) = self.helper_for(&key)
            && let Some(found) = helper_get(&helper, &key)?
        {
            return Ok(Some(found));
        }
        self.auths_entry(&key)
    }

    fn auths_entry(&self, key: &str) -> Result<Option<Credentials>, RegistryError> {
        let Some(auths) = self.document.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        let entry = auths
            .get(key)
            .or_else(|| {
                auths
                    .iter()
                    .find(|(k, _)| key_host(k) == key_host(key))
                    .map(|(_, v)| v)
            })
            .and_then(Value::as_object);
        let Some(entry) = entry else {
            return Ok(None);
        };
        let text = |name| entry.get(name).and_then(Value::as_str).unwrap_or("");
        if !text("auth").is_empty() {
            let decoded = BASE64
                .decode(text("auth").trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    config_error(
                        &self.path,
                        Reason::new(format!("the auth of {key} is not base64 of USER:PASSWORD")),
                    )
                })?;
            let Some((username, password)) = decoded.split_once(':') else {
                return Err(config_error(
                    &self.path,
                    Reason::new(format!(
                        "the auth of {key} has no ':' between user and password"
                    )),
                ));
            };
            return Ok(Some(Credentials {
                username: username.to_string(),
                password: password.to_string(),
            }));
        }
        if !text("username").is_empty() {
            return Ok(Some(Credentials {
                username: text("username").to_string(),
                password: text("password").to_string(),
            }));
        }
        Ok(None)
    }

    /// Saves `credentials` for `registry`: through the credential helper when one is configured
    /// (leaving an empty `auths` entry, as docker does), else base64 in `auths`. Writes the file.
    pub fn store_credentials(
        &mut self,
        registry: &str,
        credentials: &Credentials,
    ) -> Result<(), RegistryError> {
        let key = config_key(registry);
        let entry = match self.helper_for(&key) {
            Some(helper) => {
                helper_store(&helper, &key, credentials)?;
                json!({})
            }
            None => json!({
                "auth": BASE64.encode(format!("{}:{}", credentials.username, credentials.password))
            }),
        };
        let auths = self
            .document
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Value::Object(auths) = auths {
            auths.insert(key, entry);
        }
        self.save()
    }

    /// Removes the credentials of `registry` (from the helper too). Returns whether there were
    /// any. Writes the file when it changed.
    pub fn erase_credentials(&mut self, registry: &str) -> Result<bool, RegistryError> {
        let key = config_key(registry);
        let mut found = false;
        if let Some(helper) = self.helper_for(&key) {
            found |= helper_erase(&helper, &key)?;
        }
        if let Some(Value::Object(auths)) = self.document.get_mut("auths") {
            let keys: Vec<String> = auths
                .keys()
                .filter(|k| k.as_str() == key || key_host(k) == key_host(&key))
                .cloned()
                .collect();
            for k in keys {
                auths.remove(&k);
                found = true;
            }
        }
        if found {
            self.save()?;
        }
        Ok(found)
    }

    /// Writes the file atomically with mode 0600 (it holds secrets): a new file beside it,
    /// fsynced, renamed over it.
    fn save(&self) -> Result<(), RegistryError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| {
            config_error(
                &self.path,
                Reason::caused_by("cannot create its directory", e),
            )
        })?;
        let bytes = serde_json::to_vec_pretty(&self.document)
            .map_err(|e| config_error(&self.path, Reason::caused_by("cannot encode it", e)))?;
        // A temporary file a killed kiln left beside it is removed by the next save.
        let mut temp = crate::sys::atomic::BesideTemp::create(&self.path, 0o600)
            .map_err(|e| config_error(&self.path, Reason::caused_by("cannot write it", e)))?;
        temp.write_all(&bytes)
            .and_then(|()| temp.write_all(b"\n"))
            .map_err(|e| config_error(&self.path, Reason::caused_by("cannot write it", e)))?;
        temp.commit()
            .map_err(|e| config_error(&self.path, Reason::caused_by("cannot write it", e)))?;
        Ok(())
    }
}

fn config_error(path: &Path, reason: Reason) -> RegistryError {
    RegistryError::Config {
        path: path.to_path_buf(),
        reason,
    }
}

/// What credential helpers print when they have nothing for a server.
const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";

/// Runs `docker-credential-HELPER ACTION` with `input` on stdin; returns (success, stdout).
fn run_helper(
    helper: &str,
    action: &'static str,
    registry: &str,
    input: &[u8],
) -> Result<(bool, String), RegistryError> {
    let fail = |reason: Reason| RegistryError::Helper {
        helper: helper.to_string(),
        action,
        registry: registry.to_string(),
        reason,
    };
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        // The hint follows the cause, which a chain (`a: b: c`) cannot say: the io error (a leaf)
        // is part of this reason's message, printed once all the same.
        .map_err(|e| {
            fail(Reason::new(format!(
                "cannot run {program}: {e}; is it on PATH?"
            )))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| fail(Reason::caused_by("cannot write to it", e)))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(Reason::caused_by("cannot wait for it", e)))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() && !stdout.contains(HELPER_NOT_FOUND) {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let said = [stdout.as_str(), stderr.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("; ");
        return Err(fail(Reason::new(format!(
            "it exited with {}: {said}",
            out.status
        ))));
    }
    Ok((out.status.success(), stdout))
}

/// `docker-credential-HELPER get`: `None` when the helper has nothing for `key`.
fn helper_get(helper: &str, key: &str) -> Result<Option<Credentials>, RegistryError> {
    let (found, stdout) = run_helper(helper, "get", key, key.as_bytes())?;
    if !found {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let reply: Reply = serde_json::from_str(&stdout).map_err(|e| RegistryError::Helper {
        helper: helper.to_string(),
        action: "get",
        registry: key.to_string(),
        reason: Reason::caused_by("its reply is not the expected JSON", e),
    })?;
    if reply.username.is_empty() && reply.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: reply.username,
        password: reply.secret,
    }))
}

fn helper_store(helper: &str, key: &str, credentials: &Credentials) -> Result<(), RegistryError> {
    let input = json!({
        "ServerURL": key,
        "Username": credentials.username,
        "Secret": credentials.password,
    });
    run_helper(helper, "store", key, input.to_string().as_bytes()).map(|_| ())
}

fn helper_erase(helper: &str, key: &str) -> Result<bool, RegistryError> {
    run_helper(helper, "erase", key, key.as_bytes()).map(|(found, _)| found)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-case: `basic` or `bearer`.
    pub scheme: String,
    /// Its parameters (`realm`, `service`, `scope`), names lower-case.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses the challenges of one `WWW-Authenticate` header value (RFC 7235: `scheme
    /// name=value, name="quoted, value"`; several challenges may share one header).
    pub fn parse(header: &str) -> Vec<Challenge> {
        let mut challenges = Vec::new();
        let mut rest = header.trim();
        while !rest.is_empty() {
            let scheme_end = rest
                .find(|c: char| c.is_whitespace() || c == ',')
                .unwrap_or(rest.len());
            let (scheme, after) = rest.split_at(scheme_end);
            let mut challenge = Challenge {
                scheme: scheme.to_ascii_lowercase(),
                params: BTreeMap::new(),
            };
            rest = after.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
            // Parameters until the next token that is not `name=`.
            while let Some(eq) = rest.find('=') {
                let name = &rest[..eq];
                if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',') {
                    break;
                }
                let after_eq = &rest[eq + 1..];
                let (value, remaining) = parse_value(after_eq);
                challenge.params.insert(name.to_ascii_lowercase(), value);
                rest = remaining.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
            }
            if !challenge.scheme.is_empty() {
                challenges.push(challenge);
            }
        }
        challenges
    }

    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// A parameter value: a quoted string (with `\` escapes) or a token up to `,`. Returns the
/// value and what follows.
fn parse_value(text: &str) -> (String, &str) {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &quoted[i + 1..]),
                other => value.push(other),
            }
        }
        (value, "")
    } else {
        let end = text.find(',').unwrap_or(text.len());
        (text[..end].trim().to_string(), &text[end..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A challenge as the table writes it: scheme and parameters.
    type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)]);

    #[test]
    fn challenge_parsing() {
        let cases: &[(&str, &[Expected])] = &[
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
                &[(
                    "bearer",
                    &[
                        ("realm", "https://auth.docker.io/token"),
                        ("scope", "repository:library/alpine:pull"),
                        ("service", "registry.docker.io"),
                    ],
                )],
            ),
            (
                r#"Basic realm="Registry Realm""#,
                &[("basic", &[("realm", "Registry Realm")])],
            ),
            (
                r#"bearer realm=http://127.0.0.1:1/token, service=reg, scope="repository:a/b:pull,push""#,
                &[(
                    "bearer",
                    &[
                        ("realm", "http://127.0.0.1:1/token"),
                        ("scope", "repository:a/b:pull,push"),
                        ("service", "reg"),
                    ],
                )],
            ),
            (
                r#"Basic realm="a\"b", Bearer realm="x""#,
                &[
                    ("basic", &[("realm", "a\"b")]),
                    ("bearer", &[("realm", "x")]),
                ],
            ),
            ("Basic", &[("basic", &[])]),
            ("", &[]),
            (
                r#"Bearer realm="unterminated"#,
                &[("bearer", &[("realm", "unterminated")])],
            ),
        ];
        for (header, expected) in cases {
            let parsed = Challenge::parse(header);
            let got: Vec<(String, Vec<(String, String)>)> = parsed
                .iter()
                .map(|c| (c.scheme.clone(), c.params.clone().into_iter().collect()))
                .collect();
            let want: Vec<(String, Vec<(String, String)>)> = expected
                .iter()
                .map(|(s, p)| {
                    (
                        s.to_string(),
                        p.iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{header}");
        }
    }

    #[test]
    fn config_keys_and_hosts() {
        assert_eq!(config_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(config_key("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(key_host("https://reg.example:5000/v1/"), "reg.example:5000");
        assert_eq!(key_host("reg.example"), "reg.example");
    }

    #[test]
    fn reads_auths_in_every_form_and_keeps_unknown_keys_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let auth = BASE64.encode("alice:s3cret:with-colon");
        std::fs::write(
            dir.path().join("config.json"),
            json!({
                "auths": {
                    "https://index.docker.io/v1/": {"auth": auth},
                    "https://reg.example:5000/v2/": {"username": "bob", "password": "pw"},
                    "bad.example": {"auth": "!!!"},
                },
                "psFormat": "table {{.ID}}",
                "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
            })
            .to_string(),
        )
        .unwrap();
        let mut config = DockerConfig::load(dir.path()).unwrap();
        let hub = config.credentials("docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3cret:with-colon")
        );
        let other = config.credentials("reg.example:5000").unwrap().unwrap();
        assert_eq!(other.username, "bob");
        assert!(config.credentials("nowhere.example").unwrap().is_none());
        let err = crate::error::chain(&config.credentials("bad.example").unwrap_err());
        assert!(err.contains("not base64"), "{err}");

        let carol = Credentials {
            username: "carol".into(),
            password: "pw2".into(),
        };
        config.store_credentials("127.0.0.1:5000", &carol).unwrap();
        let path = dir.path().join("config.json");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let reread = DockerConfig::load(dir.path()).unwrap();
        assert_eq!(reread.credentials("127.0.0.1:5000").unwrap(), Some(carol));
        let document: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(document["psFormat"], "table {{.ID}}");
        assert_eq!(
            document["proxies"]["default"]["httpProxy"],
            "http://proxy:3128"
        );
        assert!(document["auths"]["https://index.docker.io/v1/"].is_object());

        let mut config = reread;
        assert!(config.erase_credentials("127.0.0.1:5000").unwrap());
        assert!(!config.erase_credentials("127.0.0.1:5000").unwrap());
        let reread = DockerConfig::load(dir.path()).unwrap();
        assert!(reread.credentials("127.0.0.1:5000").unwrap().is_none());
        assert!(reread.credentials("docker.io").unwrap().is_some());
    }

    #[test]
    fn cred_helpers_win_over_creds_store_per_registry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            json!({
                "credsStore": "desktop",
                "credHelpers": {"gcr.example": "gcloud", "https://ecr.example/": "ecr", "empty.example": ""},
            })
            .to_string(),
        )
        .unwrap();
        let config = DockerConfig::load(dir.path()).unwrap();
        for (registry, helper) in [
            ("gcr.example", Some("gcloud")),
            ("ecr.example", Some("ecr")),
            ("docker.io", Some("desktop")),
            ("other.example:5000", Some("desktop")),
            // An empty entry means config.json's own auths, as in docker's CLI.
            ("empty.example", None),
        ] {
            assert_eq!(
                config.helper_for(&config_key(registry)).as_deref(),
                helper,
                "{registry}"
            );
        }
        let none = tempfile::tempdir().unwrap();
        assert_eq!(
            DockerConfig::load(none.path()).unwrap().helper_for("x"),
            None
        );
    }

    #[test]
    fn missing_or_broken_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = DockerConfig::load(dir.path()).unwrap();
        assert!(config.credentials("docker.io").unwrap().is_none());
        std::fs::write(dir.path().join("config.json"), "[1]").unwrap();
        let err = crate::error::chain(&DockerConfig::load(dir.path()).unwrap_err());
        assert!(err.contains("not a JSON object"), "{err}");
    }
}
