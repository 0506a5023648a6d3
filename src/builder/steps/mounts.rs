//! A RUN step's `--mount`s made real: what each [`RunMount`] of the op becomes in the sandbox,
//! following BuildKit's executor (`solver/llbsolver/mounts/mount.go`, `executor/oci`).
//!
//! - `bind`: a directory of a stage or image is an overlay of that directory in each of its
//!   layers (found in the union view, symlinks resolved inside it), and a directory of the
//!   context that `.dockerignore` leaves whole (reached without a symlink) is that directory:
//!   nothing copied. Anything else (a file, a context directory with ignored entries) is copied
//!   into a directory of the store's staging area with COPY's rules (the context's `.dockerignore` applies, symlinks resolve
//!   inside the source filesystem, nothing outside it is read) and that copy is bound. Read-only
//!   unless `rw`; the writes of an `rw` mount land in the overlay's upper directory or the copy,
//!   both removed after the step: they are discarded, as in BuildKit.
//! - `cache`: a directory the store keeps between builds ([`Store::cache_mount`]), held with the
//!   mount's sharing for the whole step; a new one is empty (with `mode`, `uid`, `gid`) or
//!   seeded from `source` of `from`, unless a `--cache-from` cache holds a copy of it
//!   ([`SharedCacheMounts`]): then it starts as that copy, which also replaces a local one that
//!   is older (kiln's own; BuildKit never exports cache mounts).
//! - `tmpfs`: a fresh tmpfs (`size=` bytes at most).
//! - `secret`: the secret's bytes in a file (mode 0400 by default) alone in a private directory
//!   on the host's `/dev/shm` (a tmpfs: the bytes never reach a disk, the store or a layer),
//!   bound read-only; or in the step's environment only (`env=`). A secret the build was not
//!   given is skipped, or fails the step when `required`.
//! - `ssh`: a socket (mode 0600 by default) relaying to the agent of the build's `--ssh` id,
//!   owned as the mount asks without touching the user's own agent socket (BuildKit serves its
//!   own socket too), and read-only as BuildKit's: a step may list keys and sign, never add,
//!   remove or lock keys. (`SSH_AUTH_SOCK` is the op's: see `compile`.)
//! - a `#!` heredoc script: its file, mode 0755, alone in a read-only directory.
//!
//! Everything made here lives until the [`PreparedMounts`] drops, after the sandbox is gone.

use super::copy::{CopyError, CopyRequest, CopySource, copy};
use super::union::UnionFs;
use crate::builder::compile::{MountInput, RunMount};
use crate::error::Cause;
use crate::frontend::context::BuildContext;
use crate::frontend::instruction::Sharing;
use crate::runtime::{Mount, MountSource, UpperDir};
use crate::session::{SecretBytes, Secrets, SshAgents};
use crate::solver::Cancel;
use crate::store::{CacheMountError, CacheMountLease, CacheSharing, Store};
use crate::sys::atomic::{FsError, IoContext as _, remove_tree};
use std::fs;
use std::os::unix::fs::{PermissionsExt as _, chown};
use std::path::{Path, PathBuf};

/// What a RUN step's mounts read: the build context, the filesystems of the op's inputs and
/// what the build's client lends it.
pub struct MountSources<'a> {
    pub context: Option<&'a BuildContext>,
    /// The snapshot directories (top first) of each input of the op, by input index (0 is the
    /// filesystem the command runs on).
    pub inputs: &'a [Vec<PathBuf>],
    pub session: &'a dyn Session,
    /// The copies of cache mounts that the build's `--cache-from` caches hold.
    pub shared: Option<&'a dyn SharedCacheMounts>,
}

/// Copies of cache mounts kept elsewhere (a shared cache) that a step's cache mounts start
/// from. Its failures are its own to report: a copy that cannot be had leaves the mount as it
/// would be without one.
pub trait SharedCacheMounts: Sync {
    /// Whether the copy of `id` is newer than the local directory `local` (then it replaces
    /// it, when no step holds it).
    fn is_newer(&self, id: &str, local: &Path) -> bool;
    /// Makes the directory `dir` (absent) the copy of `id`; `false`, with nothing at `dir`,
    /// when there is no copy or it could not be restored.
    fn restore(&self, id: &str, dir: &Path) -> bool;
    /// Reports that replacing an older local copy of `id` failed.
    fn refresh_failed(&self, id: &str, error: &CacheMountError);
}

/// Secrets and SSH agents the build was given (`--secret`, `--ssh`).
pub trait Session: Send + Sync + std::fmt::Debug {
    /// The bytes of secret `id`; `None` when the build was not given it.
    fn secret(&self, id: &str) -> Result<Option<SecretBytes>, Cause>;
    /// Whether the build was given secret `id` (without reading it): part of the cache key of
    /// a step that mounts it.
    fn has_secret(&self, id: &str) -> bool;
    /// The host socket of the agent of `--ssh` `id`; `None` when the build was not given it.
    fn ssh_socket(&self, id: &str) -> Option<PathBuf>;
}

/// The session of a `kiln build` command: its `--secret`s and `--ssh` agents.
#[derive(Debug)]
pub struct ClientSession {
    pub secrets: Secrets,
    pub ssh: SshAgents,
}

impl Session for ClientSession {
    fn secret(&self, id: &str) -> Result<Option<SecretBytes>, Cause> {
        Ok(self.secrets.get(id)?)
    }

    fn has_secret(&self, id: &str) -> bool {
        self.secrets.contains(id)
    }

    fn ssh_socket(&self, id: &str) -> Option<PathBuf> {
        self.ssh.socket(id).map(Path::to_path_buf)
    }
}

/// A session that lends nothing.
#[derive(Debug)]
pub struct NoSession;

impl Session for NoSession {
    fn secret(&self, _id: &str) -> Result<Option<SecretBytes>, Cause> {
        Ok(None)
    }

    fn has_secret(&self, _id: &str) -> bool {
        false
    }

    fn ssh_socket(&self, _id: &str) -> Option<PathBuf> {
        None
    }
}

/// The sandbox mounts of one step and what keeps them valid. (No `Debug`: it holds secrets.)
#[derive(Default)]
pub struct PreparedMounts {
    /// In the order of the op's mounts.
    pub mounts: Vec<Mount>,
    /// Secrets as variables (`env=`): set over the step's environment.
    secret_env: Vec<(String, zeroize::Zeroizing<String>)>,
    /// Agent relays, stopped on drop (before their directories go: fields drop in order).
    proxies: Vec<SocketProxy>,
    /// Copies, script and secret directories, removed on drop.
    scratch: Vec<ScratchDir>,
    /// Cache mounts held for the step.
    leases: Vec<CacheMountLease>,
}

impl PreparedMounts {
    /// The step's environment with the secrets given as variables (`env=`), each replacing an
    /// entry of the same name, as BuildKit's executor does.
    pub fn environment(&self, env: &[String]) -> Vec<String> {
        let mut out: Vec<String> = env.to_vec();
        let key = |entry: &str| entry.split_once('=').map_or(entry, |(k, _)| k).to_string();
        for (name, value) in &self.secret_env {
            out.retain(|e| key(e) != *name);
            out.push(format!("{name}={}", value.as_str()));
        }
        out
    }
}

/// Why a mount could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The source of a bind mount or a cache seed could not be read.
    #[error("mount {target}: cannot read source {source_path:?}")]
    Source {
        target: String,
        source_path: String,
        /// Boxed: a copy error is large, and every step result carries this type.
        #[source]
        source: Box<CopyError>,
    },
    #[error("mount {target}")]
    Cache {
        target: String,
        #[source]
        source: CacheMountError,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The op names an input it does not have (an internal error).
    #[error("mount {target}: the step has no input {index}")]
    MissingInput { target: String, index: usize },
    /// A bind mount reads the build context, but the build has none.
    #[error("mount {target}: the build has no context to mount (build with a context directory)")]
    NoContext { target: String },
    /// A required secret was not given to the build.
    #[error("secret {id} is required but was not given: build with --secret id={id},src=FILE")]
    MissingSecret { id: String },
    #[error("cannot read secret {id}")]
    Secret {
        id: String,
        #[source]
        source: Cause,
    },
    /// A required ssh agent was not given to the build.
    #[error("ssh agent {id:?} is required but was not given: build with --ssh {id}[=SOCKET|KEY]")]
    MissingSsh { id: String },
    /// The secret or agent socket could not be placed.
    #[error("cannot place the {what} for mount {target}")]
    Place {
        what: &'static str,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("canceled")]
    Canceled,
}

/// Makes the mounts of one RUN step.
/// `insecure` (`RUN --security=insecure`) steps may remount a read-only mount writable, so their
/// stage mounts always get an upper directory: such writes land there, never in the store's
/// snapshots.
pub fn prepare(
    store: &Store,
    mounts: &[RunMount],
    sources: &MountSources<'_>,
    insecure: bool,
    cancel: &Cancel,
) -> Result<PreparedMounts, MountError> {
    let mut prepared = PreparedMounts::default();
    for mount in mounts {
        match mount {
            RunMount::Bind {
                target,
                source,
                from,
                readwrite,
                ..
            } => {
                let scratch = ScratchDir::new(store, "mount")?;
                // A directory of a stage or image: an overlay of that directory in each layer
                // that has it, nothing copied (BuildKit mounts its snapshot too). A directory of
                // the context that `.dockerignore` leaves whole: the directory itself. Writes of
                // an `rw` mount, and those of an insecure step that remounts it writable, go to
                // an upper directory in the scratch directory, never to a snapshot or the
                // user's context.
                let lowers = match from {
                    MountInput::Input(index) => stage_dir(sources, *index, source),
                    MountInput::Context => sources
                        .context
                        .and_then(|context| context.unfiltered_dir(source.trim_start_matches('/')))
                        .map(|dir| vec![dir]),
                };
                if let Some(lowers) = lowers {
                    let upper = if *readwrite || insecure {
                        let upper = UpperDir {
                            upper_dir: scratch.0.join("upper"),
                            work_dir: scratch.0.join("work"),
                        };
                        fs::create_dir(&upper.upper_dir)
                            .fs("create directory", &upper.upper_dir)?;
                        fs::create_dir(&upper.work_dir).fs("create directory", &upper.work_dir)?;
                        Some(upper)
                    } else {
                        None
                    };
                    prepared.mounts.push(Mount {
                        destination: target.clone(),
                        source: MountSource::Overlay { lowers, upper },
                        readonly: !readwrite,
                    });
                    prepared.scratch.push(scratch);
                    continue;
                }
                let copied = materialize(&scratch.0, target, source, *from, sources, cancel)?;
                prepared.mounts.push(Mount {
                    destination: target.clone(),
                    source: MountSource::Bind(copied),
                    readonly: !readwrite,
                });
                prepared.scratch.push(scratch);
            }
            RunMount::Cache {
                target,
                id,
                sharing,
                readonly,
                from,
                source,
                mode,
                uid,
                gid,
            } => {
                let sharing = match sharing {
                    Sharing::Shared => CacheSharing::Shared,
                    Sharing::Locked => CacheSharing::Locked,
                    Sharing::Private => CacheSharing::Private,
                };
                // The root of a cache without a seed has the mount's owner and mode, restored
                // from a copy or not (a copy's tar does not hold its root).
                let own = |path: &Path| -> Result<(), Cause> {
                    if from.is_none() {
                        give(path, *uid, *gid)?;
                        fs::set_permissions(path, fs::Permissions::from_mode(*mode))?;
                    }
                    Ok(())
                };
                if let Some(shared) = sources.shared {
                    let mut stale = |local: &Path| shared.is_newer(id, local);
                    let mut replace = |path: &Path| -> Result<(), Cause> {
                        if !shared.restore(id, path) {
                            return Err("the shared cache's copy could not be restored".into());
                        }
                        own(path)
                    };
                    match store.refresh_cache_mount(id, &mut stale, &mut replace) {
                        // `restore` reported why; the local copy stays.
                        Ok(_) | Err(CacheMountError::Init { .. }) => {}
                        Err(err) => shared.refresh_failed(id, &err),
                    }
                }
                let mut init = |path: &Path| -> Result<(), Cause> {
                    let restored = sources.shared.is_some_and(|s| s.restore(id, path));
                    if !restored {
                        fs::create_dir(path)?;
                        if let Some(from) = from {
                            seed(path, target, source, *from, sources, cancel)?;
                        }
                    }
                    own(path)
                };
                let lease = store
                    .cache_mount(id, sharing, &|| cancel.is_cancelled(), &mut init)
                    .map_err(|source| match source {
                        CacheMountError::Canceled { .. } => MountError::Canceled,
                        source => MountError::Cache {
                            target: target.clone(),
                            source,
                        },
                    })?;
                prepared.mounts.push(Mount {
                    destination: target.clone(),
                    source: MountSource::Bind(lease.path().to_path_buf()),
                    readonly: *readonly,
                });
                prepared.leases.push(lease);
            }
            RunMount::Tmpfs { target, size } => prepared.mounts.push(Mount {
                destination: target.clone(),
                source: MountSource::Tmpfs { size: *size },
                readonly: false,
            }),
            RunMount::Secret {
                id,
                target,
                env,
                required,
                mode,
                uid,
                gid,
            } => {
                let value = sources
                    .session
                    .secret(id)
                    .map_err(|source| MountError::Secret {
                        id: id.clone(),
                        source,
                    })?;
                let Some(value) = value else {
                    if *required {
                        return Err(MountError::MissingSecret { id: id.clone() });
                    }
                    // BuildKit skips an optional secret it was not given.
                    continue;
                };
                if let Some(name) = env {
                    let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    prepared
                        .secret_env
                        .push((name.clone(), zeroize::Zeroizing::new(text)));
                }
                if let Some(target) = target {
                    let place = |source| MountError::Place {
                        what: "secret",
                        target: target.clone(),
                        source,
                    };
                    let dir = ScratchDir::private_tmpfs().map_err(place)?;
                    let file = dir.0.join("secret");
                    write_private(&file, value.as_bytes(), *mode, *uid, *gid).map_err(place)?;
                    prepared.mounts.push(Mount {
                        destination: target.clone(),
                        source: MountSource::Bind(file),
                        readonly: true,
                    });
                    prepared.scratch.push(dir);
                }
            }
            RunMount::Ssh {
                id,
                target,
                required,
                mode,
                uid,
                gid,
            } => {
                let Some(upstream) = sources.session.ssh_socket(id) else {
                    if *required {
                        return Err(MountError::MissingSsh { id: id.clone() });
                    }
                    continue;
                };
                let place = |source| MountError::Place {
                    what: "ssh agent socket",
                    target: target.clone(),
                    source,
                };
                let dir = ScratchDir::new(store, "ssh")?;
                let proxy =
                    SocketProxy::start(&dir.0.join("agent.sock"), upstream).map_err(place)?;
                give(proxy.path(), *uid, *gid).map_err(place)?;
                fs::set_permissions(proxy.path(), fs::Permissions::from_mode(*mode))
                    .map_err(place)?;
                prepared.mounts.push(Mount {
                    destination: target.clone(),
                    source: MountSource::Bind(proxy.path().to_path_buf()),
                    readonly: false,
                });
                prepared.proxies.push(proxy);
                prepared.scratch.push(dir);
            }
            RunMount::Script {
                target,
                name,
                content,
            } => {
                let scratch = ScratchDir::new(store, "script")?;
                let file = scratch.0.join(name);
                fs::write(&file, content).fs("write", &file)?;
                fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).fs("chmod", &file)?;
                prepared.mounts.push(Mount {
                    destination: target.clone(),
                    source: MountSource::Bind(scratch.0.clone()),
                    readonly: true,
                });
                prepared.scratch.push(scratch);
            }
        }
    }
    Ok(prepared)
}

/// The layer directories that merge into directory `source` of input `index`, when it is a
/// directory there (anything else, or an unreadable layer, takes the copy path, which reports
/// a missing source).
fn stage_dir(sources: &MountSources<'_>, index: usize, source: &str) -> Option<Vec<PathBuf>> {
    let layers = sources.inputs.get(index)?;
    let union = UnionFs::new(layers.clone()).ok()?;
    union.dir_layers(source).ok().flatten()
}

/// Copies `source` of `from` into `dir` as `dir/m` (COPY's rules: a directory's content, or
/// the file itself) and returns that path.
fn materialize(
    dir: &Path,
    target: &str,
    source: &str,
    from: MountInput,
    sources: &MountSources<'_>,
    cancel: &Cancel,
) -> Result<PathBuf, MountError> {
    copy_source(dir, "/m", target, source, from, sources, cancel)?;
    Ok(dir.join("m"))
}

/// Copies the content of directory `source` of `from` into the new cache directory `dir`.
fn seed(
    dir: &Path,
    target: &str,
    source: &str,
    from: MountInput,
    sources: &MountSources<'_>,
    cancel: &Cancel,
) -> Result<(), MountError> {
    copy_source(dir, "/", target, source, from, sources, cancel)
}

fn copy_source(
    dir: &Path,
    dest: &str,
    target: &str,
    source: &str,
    from: MountInput,
    sources: &MountSources<'_>,
    cancel: &Cancel,
) -> Result<(), MountError> {
    let request = CopyRequest {
        sources: vec![source.to_string()],
        dest: dest.to_string(),
        workdir: "/".to_string(),
        ..CopyRequest::default()
    };
    let wrap = |source: CopyError| match source {
        CopyError::Cancelled => MountError::Canceled,
        source => MountError::Source {
            target: target.to_string(),
            source_path: request.sources[0].clone(),
            source: Box::new(source),
        },
    };
    match from {
        MountInput::Context => {
            let context = sources.context.ok_or_else(|| MountError::NoContext {
                target: target.to_string(),
            })?;
            copy(&request, &CopySource::Context { context }, &[], dir, cancel).map_err(wrap)?;
        }
        MountInput::Input(index) => {
            let layers = sources
                .inputs
                .get(index)
                .ok_or_else(|| MountError::MissingInput {
                    target: target.to_string(),
                    index,
                })?;
            copy(&request, &CopySource::Layers { layers }, &[], dir, cancel).map_err(wrap)?;
        }
    }
    Ok(())
}

/// A directory in the store's staging area, removed on drop (a leftover is stale staging,
/// removed by the next `Store::open`).
#[derive(Debug)]
struct ScratchDir(PathBuf);

/// Where secrets are written: a tmpfs every Linux system mounts (secrets stay in memory).
const SECRETS_TMPFS: &str = "/dev/shm";

impl ScratchDir {
    fn new(store: &Store, kind: &str) -> Result<ScratchDir, FsError> {
        let path = store.staging().new_path(kind);
        fs::create_dir(&path).fs("create directory", &path)?;
        Ok(ScratchDir(path))
    }

    /// A fresh directory only root can enter, on the host's tmpfs.
    fn private_tmpfs() -> std::io::Result<ScratchDir> {
        use std::os::unix::fs::DirBuilderExt as _;
        let tmpfs = nix::sys::statfs::statfs(SECRETS_TMPFS).map_err(std::io::Error::from)?;
        if tmpfs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
            return Err(std::io::Error::other(format!(
                "{SECRETS_TMPFS} is not a tmpfs: kiln keeps secrets in memory only"
            )));
        }
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = Path::new(SECRETS_TMPFS).join(format!(
            "kiln-secret-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(ScratchDir(path))
    }
}

/// chown(2) `path` to `uid`:`gid`, except when root's is wanted and kiln runs unprivileged
/// without a user namespace (`--isolation=chroot` in an unprivileged container): it cannot give
/// files away, and its own files stand for root's there.
fn give(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    if (uid, gid) == (0, 0) && !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    chown(path, Some(uid), Some(gid))
}

/// Writes `bytes` to a new file only root can read while it is filled, then gives it its owner
/// and mode.
fn write_private(path: &Path, bytes: &[u8], mode: u32, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    give(path, uid, gid)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// A unix socket that relays every connection to an SSH agent's socket ([`relay`]), so a step
/// gets a socket with the mode and owner its mount asks for while the user's agent socket is
/// never touched. Stops accepting when dropped; relays in progress end with their connection.
struct SocketProxy {
    path: PathBuf,
    /// The listening socket, shut down on drop to wake the accept loop.
    listener: std::os::unix::net::UnixListener,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// How many connections one relay serves at once (an agent sees a handful).
const MAX_RELAYED: usize = 64;

impl SocketProxy {
    fn start(path: &Path, upstream: PathBuf) -> std::io::Result<SocketProxy> {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = UnixListener::bind(path)?;
        let own = listener.try_clone()?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let open = std::sync::Arc::new(AtomicUsize::new(0));
        let stopping = stop.clone();
        let accept = std::thread::Builder::new()
            .name("kiln-ssh-relay".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else {
                        // A listener that was shut down fails every accept.
                        break;
                    };
                    if open.load(Ordering::SeqCst) >= MAX_RELAYED {
                        continue;
                    }
                    let Ok(agent) = UnixStream::connect(&upstream) else {
                        continue;
                    };
                    open.fetch_add(1, Ordering::SeqCst);
                    let open = open.clone();
                    let _ = std::thread::Builder::new()
                        .name("kiln-ssh-relay-conn".into())
                        .spawn(move || {
                            relay(client, agent);
                            open.fetch_sub(1, Ordering::SeqCst);
                        });
                }
            })?;
        Ok(SocketProxy {
            path: path.to_path_buf(),
            listener: own,
            stop,
            accept: Some(accept),
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// The agent protocol (draft-miller-ssh-agent): a message is a big-endian u32 length and that
/// many bytes, the first its type.
const AGENT_REQUEST_IDENTITIES: u8 = 11;
const AGENT_SIGN_REQUEST: u8 = 13;
const AGENT_FAILURE: u8 = 5;
/// The longest agent message relayed (OpenSSH's agent takes 256 KiB).
const MAX_AGENT_MESSAGE: usize = 256 * 1024;

/// Relays a step's agent requests one at a time, as BuildKit's read-only agent does
/// (`sshprovider`'s `readOnlyAgent`): listing keys and signing pass, anything else (adding,
/// removing, locking keys) is answered with a failure and never reaches the user's agent.
fn relay(mut client: std::os::unix::net::UnixStream, mut agent: std::os::unix::net::UnixStream) {
    loop {
        let Ok(request) = read_agent_message(&mut client) else {
            return;
        };
        let reply = match request.first() {
            Some(&(AGENT_REQUEST_IDENTITIES | AGENT_SIGN_REQUEST)) => {
                if write_agent_message(&mut agent, &request).is_err() {
                    return;
                }
                match read_agent_message(&mut agent) {
                    Ok(reply) => reply,
                    Err(_) => return,
                }
            }
            _ => vec![AGENT_FAILURE],
        };
        if write_agent_message(&mut client, &reply).is_err() {
            return;
        }
    }
}

fn read_agent_message(stream: &mut impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length)?;
    let length = u32::from_be_bytes(length) as usize;
    if length == 0 || length > MAX_AGENT_MESSAGE {
        return Err(std::io::Error::other("agent message length out of bounds"));
    }
    let mut message = vec![0u8; length];
    stream.read_exact(&mut message)?;
    Ok(message)
}

fn write_agent_message(stream: &mut impl std::io::Write, message: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(message.len()).map_err(std::io::Error::other)?;
    stream.write_all(&length.to_be_bytes())?;
    stream.write_all(message)
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop: accept(2) on a listening socket that is shut down fails at
        // once (and a connection, should the shutdown not take, lets it see the flag).
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Both);
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.0);
    }
}
