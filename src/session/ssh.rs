//! SSH agents for `RUN --mount=type=ssh`: `--ssh` flags and the agent sockets they stand for.
//!
//! The flag is buildx's (`util/buildflags/ssh.go`): `ID[=PATH[,PATH...]]`, split at the first
//! `=`, the paths at commas.
//!
//! - `--ssh default` (no paths, or an empty `=`) forwards the agent at `$SSH_AUTH_SOCK`, an
//!   error naming the variable when it is unset (BuildKit: "make sure SSH_AUTH_SOCK is set").
//! - An empty id is `default` (BuildKit's `sshforward.DefaultID`). An empty flag, or an empty
//!   path among several, is an error (buildx skips an empty flag silently).
//! - A path that is a socket (symlinks followed) is an agent, used as it is: its path is what
//!   [`SshAgents::socket`] gives. (BuildKit proxies it through a `readOnlyAgent` that refuses to
//!   add, remove or lock keys; kiln hands the socket over unfiltered.)
//! - Other paths are private key files in OpenSSH's format (what `ssh-keygen` writes): ed25519,
//!   ecdsa (P-256, P-384, P-521) or rsa, unencrypted, at most 100 KiB each (BuildKit's read
//!   bound). kiln serves them with an agent of its own (`session::agent`) on a socket in a
//!   private directory (mode 0700, under the temporary directory), removed when [`SshAgents`]
//!   is dropped. A passphrase-protected key is an error naming the file: kiln cannot ask for the
//!   passphrase, and `ssh-add` can.
//! - As in BuildKit's `sshprovider`: one id may name at most one socket, not a socket and keys
//!   together, and two flags with one id are an error.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ssh_key::PrivateKey;
use zeroize::Zeroizing;

use super::SessionError;
use super::agent::{AgentKey, Keyring, Server};
use crate::error::{Cause, Reason};

/// The id of `--ssh` without one and of `RUN --mount=type=ssh` without one (BuildKit's
/// `sshforward.DefaultID`).
pub const DEFAULT_ID: &str = "default";

/// The largest private key file kiln reads (BuildKit's `sshprovider` bound, 100 KiB).
const MAX_KEY_FILE: u64 = 100 * 1024;

/// One `--ssh` flag: an agent id and the sockets or key files behind it (none: `$SSH_AUTH_SOCK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSpec {
    pub id: String,
    pub paths: Vec<PathBuf>,
}

impl SshSpec {
    /// Parses the value of one `--ssh` flag (the rules are in the module docs).
    pub fn parse(flag: &str) -> Result<SshSpec, SessionError> {
        let invalid = |reason: &str| SessionError::SshFlag {
            flag: flag.to_string(),
            reason: Reason::new(reason),
        };
        if flag.is_empty() {
            return Err(invalid("the value is empty"));
        }
        let (id, paths) = match flag.split_once('=') {
            None => (flag, Vec::new()),
            Some((id, "")) => (id, Vec::new()),
            Some((id, paths)) => {
                let paths: Vec<PathBuf> = paths.split(',').map(PathBuf::from).collect();
                if paths.iter().any(|p| p.as_os_str().is_empty()) {
                    return Err(invalid("a path is empty"));
                }
                (id, paths)
            }
        };
        let id = if id.is_empty() { DEFAULT_ID } else { id };
        Ok(SshSpec {
            id: id.to_string(),
            paths,
        })
    }
}

/// The SSH agents a build was given, by id: forwarded sockets and kiln's own agents.
pub struct SshAgents {
    // Declared before `dir` so the servers stop (and remove their sockets) before it goes.
    agents: HashMap<String, Agent>,
    dir: Option<PrivateDir>,
}

enum Agent {
    /// An agent socket of the user's, used as it is.
    Forwarded(PathBuf),
    /// kiln's agent serving key files.
    Served(Server),
}

impl Agent {
    fn socket(&self) -> &Path {
        match self {
            Agent::Forwarded(path) => path,
            Agent::Served(server) => server.path(),
        }
    }
}

impl SshAgents {
    /// Starts what the specs need (the rules are in the module docs).
    pub fn start(specs: Vec<SshSpec>) -> Result<SshAgents, SessionError> {
        SshAgents::start_with(specs, std::env::var_os("SSH_AUTH_SOCK"))
    }

    /// [`SshAgents::start`] with `$SSH_AUTH_SOCK`'s value given (tests cannot set it safely).
    fn start_with(
        specs: Vec<SshSpec>,
        auth_sock: Option<OsString>,
    ) -> Result<SshAgents, SessionError> {
        let mut agents = SshAgents {
            agents: HashMap::new(),
            dir: None,
        };
        for spec in specs {
            if agents.agents.contains_key(&spec.id) {
                return Err(SessionError::DuplicateSshId { id: spec.id });
            }
            let agent = agents.agent(&spec, auth_sock.as_deref())?;
            agents.agents.insert(spec.id, agent);
        }
        Ok(agents)
    }

    /// Whether an agent with this id was given.
    pub fn contains(&self, id: &str) -> bool {
        self.agents.contains_key(id)
    }

    /// The host path of the agent socket for `id`, to bind into a RUN step.
    pub fn socket(&self, id: &str) -> Option<&Path> {
        self.agents.get(id).map(Agent::socket)
    }

    fn agent(&mut self, spec: &SshSpec, auth_sock: Option<&OsStr>) -> Result<Agent, SessionError> {
        let id = &spec.id;
        let paths = if spec.paths.is_empty() {
            match auth_sock {
                Some(sock) if !sock.is_empty() => vec![PathBuf::from(sock)],
                _ => return Err(SessionError::NoAuthSock { id: id.clone() }),
            }
        } else {
            spec.paths.clone()
        };
        let path_error = |path: &Path, reason: Cause| SessionError::SshPath {
            id: id.clone(),
            path: path.to_path_buf(),
            reason,
        };
        let mut sockets = Vec::new();
        let mut keys = Vec::new();
        for path in &paths {
            // Followed, as BuildKit's os.Stat: `$SSH_AUTH_SOCK` is often a symlink.
            let metadata = std::fs::metadata(path).map_err(|e| path_error(path, e.into()))?;
            if metadata.file_type().is_socket() {
                sockets.push(path.clone());
            } else {
                keys.push(load_key(path).map_err(|reason| path_error(path, reason))?);
            }
        }
        let paths_error = |reason: &str| SessionError::SshPaths {
            id: id.clone(),
            reason: Reason::new(reason),
        };
        match (sockets.len(), keys.is_empty()) {
            (0, _) => {
                let keyring = Keyring::new(keys);
                let start_error = |source| SessionError::StartAgent {
                    id: id.clone(),
                    source,
                };
                let dir = match &self.dir {
                    Some(dir) => dir,
                    None => self.dir.insert(PrivateDir::create().map_err(start_error)?),
                };
                // Named by position, not by id: an id can be long or hold any character, and a
                // socket path has a 108-byte limit.
                let path = dir.0.join(format!("agent-{}.sock", self.agents.len()));
                let server = Server::start(&path, keyring).map_err(start_error)?;
                Ok(Agent::Served(server))
            }
            (1, true) => Ok(Agent::Forwarded(sockets.remove(0))),
            (1, false) => Err(paths_error(
                "a socket and key files cannot be combined in one agent id",
            )),
            _ => Err(paths_error("an agent id can have only one socket")),
        }
    }
}

impl fmt::Debug for SshAgents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.agents.iter().map(|(id, a)| (id, a.socket())))
            .finish()
    }
}

/// Reads and parses one private key file, refusing what kiln's agent cannot serve.
fn load_key(path: &Path) -> Result<AgentKey, Cause> {
    let mut text = Zeroizing::new(Vec::new());
    File::open(path)?
        .take(MAX_KEY_FILE + 1)
        .read_to_end(&mut text)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(format!("it is over {MAX_KEY_FILE} bytes, too big for a private key").into());
    }
    if !text
        .windows(OPENSSH_HEADER.len())
        .any(|w| w == OPENSSH_HEADER)
    {
        return Err(
            "it is not a private key in OpenSSH's format (the one ssh-keygen writes; \
                    `ssh-keygen -p -f FILE` converts an older PEM key)"
                .into(),
        );
    }
    // ssh-key's errors repeat their sources' messages: kept as the one text they say.
    let key = PrivateKey::from_openssh(&*text).map_err(|e| {
        Reason::caused_by("cannot parse the private key", Reason::new(e.to_string()))
    })?;
    if key.is_encrypted() {
        return Err(
            "the key is passphrase-protected and kiln cannot ask for its passphrase: \
                    add it to an ssh-agent (`ssh-add FILE`) and give the agent's socket"
                .into(),
        );
    }
    AgentKey::new(key)
}

const OPENSSH_HEADER: &[u8] = b"-----BEGIN OPENSSH PRIVATE KEY-----";

/// A directory only kiln's user can enter, holding kiln's agent sockets; removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> std::io::Result<PrivateDir> {
        let base = std::env::temp_dir();
        let mut attempts = 0;
        loop {
            let mut random = [0u8; 8];
            rustix::rand::getrandom(&mut random[..], rustix::rand::GetRandomFlags::empty())?;
            let path = base.join(format!("kiln-ssh-{:016x}", u64::from_ne_bytes(random)));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    // The umask can only take bits away, but say 0700 outright all the same.
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
                    return Ok(PrivateDir(path));
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => {
                    attempts += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{assert_layered, chain};
    use crate::session::agent::tests::{request, test_key};
    use ssh_key::Algorithm;
    use std::os::unix::net::{UnixListener, UnixStream};

    fn spec(id: &str, paths: &[&str]) -> SshSpec {
        SshSpec {
            id: id.to_string(),
            paths: paths.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn every_form_of_the_flag() {
        let parse = |flag| SshSpec::parse(flag).unwrap();
        assert_eq!(parse("default"), spec("default", &[]));
        assert_eq!(parse("default="), spec("default", &[]));
        assert_eq!(
            parse("default=/run/agent.sock"),
            spec("default", &["/run/agent.sock"])
        );
        assert_eq!(parse("git=/k1,/k2"), spec("git", &["/k1", "/k2"]));
        assert_eq!(parse("=/k1"), spec("default", &["/k1"]));
        assert_eq!(parse("key=a=b"), spec("key", &["a=b"]));
    }

    #[test]
    fn bad_flags_say_why() {
        for (flag, why) in [
            ("", "is empty"),
            ("x=/a,,/b", "a path is empty"),
            ("x=/a,", "a path is empty"),
        ] {
            let err = SshSpec::parse(flag).unwrap_err();
            assert_layered(&err);
            let text = chain(&err);
            assert!(text.starts_with("invalid --ssh"), "{text}");
            assert!(text.contains(why), "{flag}: {text}");
        }
    }

    fn write_key(dir: &Path, name: &str, key: &PrivateKey) -> PathBuf {
        let path = dir.join(name);
        key.write_openssh_file(&path, ssh_key::LineEnding::LF)
            .unwrap();
        path
    }

    fn start_err(specs: Vec<SshSpec>) -> String {
        let err = SshAgents::start(specs).unwrap_err();
        assert_layered(&err);
        chain(&err)
    }

    #[test]
    fn key_files_are_served_by_an_agent_in_a_private_directory_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let ed = test_key(Algorithm::Ed25519);
        let ec = test_key(Algorithm::Ecdsa {
            curve: ssh_key::EcdsaCurve::NistP256,
        });
        let k1 = write_key(dir.path(), "k1", &ed);
        let k2 = write_key(dir.path(), "k2", &ec);
        let agents = SshAgents::start(vec![spec(
            "git",
            &[k1.to_str().unwrap(), k2.to_str().unwrap()],
        )])
        .unwrap();
        assert!(agents.contains("git"));
        assert!(!agents.contains("default"));
        assert!(agents.socket("default").is_none());
        let socket = agents.socket("git").unwrap().to_path_buf();
        let private = socket.parent().unwrap().to_path_buf();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let mut client = UnixStream::connect(&socket).unwrap();
        let response = request(&mut client, &[11]);
        // IDENTITIES_ANSWER with two keys, in the order given.
        assert_eq!(response[..5], [12, 0, 0, 0, 2]);
        let ed_blob = ed.public_key().to_bytes().unwrap();
        assert_eq!(response[9..9 + ed_blob.len()], ed_blob[..]);

        drop(agents);
        assert!(!private.exists());
    }

    #[test]
    fn a_socket_is_used_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user-agent.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let agents = SshAgents::start(vec![
            spec("a", &[path.to_str().unwrap()]),
            spec("b", &[link.to_str().unwrap()]),
        ])
        .unwrap();
        assert_eq!(agents.socket("a"), Some(path.as_path()));
        assert_eq!(agents.socket("b"), Some(link.as_path()));
        assert!(agents.dir.is_none(), "no agent of kiln's was needed");
    }

    #[test]
    fn unusable_paths_name_the_id_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = write_key(dir.path(), "key", &test_key(Algorithm::Ed25519));
        let sock = dir.path().join("s.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        let sock2 = dir.path().join("s2.sock");
        let _listener2 = UnixListener::bind(&sock2).unwrap();
        let missing = dir.path().join("missing");
        let public = dir.path().join("key.pub");
        std::fs::write(
            &public,
            test_key(Algorithm::Ed25519)
                .public_key()
                .to_openssh()
                .unwrap(),
        )
        .unwrap();
        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'x'; 200 * 1024]).unwrap();
        let garbled = dir.path().join("garbled");
        std::fs::write(
            &garbled,
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        )
        .unwrap();
        let p = |p: &Path| p.to_str().unwrap().to_string();

        let text = start_err(vec![spec("x", &[&p(&missing)])]);
        assert!(
            text.starts_with(&format!("ssh agent \"x\": cannot use {}: ", p(&missing))),
            "{text}"
        );
        let text = start_err(vec![spec("x", &[&p(&public)])]);
        assert!(
            text.contains("not a private key in OpenSSH's format"),
            "{text}"
        );
        let text = start_err(vec![spec("x", &[&p(&huge)])]);
        assert!(text.contains("too big for a private key"), "{text}");
        let text = start_err(vec![spec("x", &[&p(&garbled)])]);
        assert!(text.contains("cannot parse the private key"), "{text}");
        let text = start_err(vec![spec("x", &[&p(&sock), &p(&key)])]);
        assert_eq!(
            text,
            "ssh agent \"x\": a socket and key files cannot be combined in one agent id"
        );
        let text = start_err(vec![spec("x", &[&p(&sock), &p(&sock2)])]);
        assert_eq!(
            text,
            "ssh agent \"x\": an agent id can have only one socket"
        );
        let text = start_err(vec![spec("x", &[&p(&key)]), spec("x", &[&p(&key)])]);
        assert_eq!(text, "duplicate ssh agent id \"x\"");
    }

    #[test]
    fn no_paths_means_ssh_auth_sock_and_an_error_naming_it_when_unset() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        let agents =
            SshAgents::start_with(vec![spec("default", &[])], Some(sock.clone().into())).unwrap();
        assert_eq!(agents.socket("default"), Some(sock.as_path()));
        for unset in [None, Some(OsString::new())] {
            let err = SshAgents::start_with(vec![spec("default", &[])], unset).unwrap_err();
            assert!(
                chain(&err).contains("needs SSH_AUTH_SOCK, which is not set"),
                "{err}"
            );
        }
    }
}
