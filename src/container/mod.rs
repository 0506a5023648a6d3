//! From a stored image to a running sandbox, as `docker run` does it: `kiln run` uses this, and
//! the builder's RUN steps use the same pieces ([`ensure_snapshots`], and [`sandbox_spec`], which
//! resolves the user in the image and writes the `/etc` files for both).
//!
//! [`Container::create`] unpacks every layer the image lacks as a snapshot, gives the container a
//! random 64-hex id and a directory `containers/<id>` in the store (its upper and work
//! directories, its `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, and the record that
//! keeps `rmi` from deleting the image), resolves the process (Docker's ENTRYPOINT/CMD rules,
//! environment, user, working directory) and the cgroup for resource limits.
//! [`Container::start`] spawns the sandbox; [`Container::finish`] reports an OOM kill and removes
//! what `--rm` asks to remove.

pub mod changes;
pub mod chroot;
pub mod copy;
pub mod exec;
pub mod exec_diagnosis;
pub mod lifecycle;
pub mod logs;
pub mod names;
pub mod supervisor;
pub mod user;

use crate::archive::{self, ArchiveError};
use crate::error::Reason;
use crate::runtime::cgroup::{Cgroup, CgroupError, Limits};
use crate::runtime::network::{
    self, HostEntry, NetworkError, NetworkMode, PortMapping, PrivateNetwork, PublishedPort,
};
use crate::runtime::{Mount, MountSource, Network, RootFs, Spec, Stdio, UpperDir, User};
use crate::runtime::{RuntimeError, Sandbox};
use crate::store::{ContainerRecord, ContainerState, RunOwner, Store, StoreError, StoredImage};
use std::fs;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use user::UserError;

/// Docker's default `PATH`, set when neither the image nor `-e` gives one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The most uncompressed bytes one layer may unpack to (a decompression bomb stops there).
pub const MAX_LAYER_BYTES: u64 = 64 << 30;
/// The most bytes read from the image's `/etc/passwd` or `/etc/group`, or the host's
/// `/etc/hosts` and `/etc/resolv.conf`.
const MAX_SMALL_FILE: u64 = 1 << 20;
/// Docker's `/etc/hosts` for a container without the host's network.
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// Why a container could not be created, started or cleaned up.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A store operation failed (a missing image, an unpack that failed, the record).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Neither the image nor the command line gave a command (Docker's message).
    #[error("no command specified")]
    NoCommand,
    /// A layer could not be unpacked into its snapshot (unsafe, corrupt, or not its diff ID).
    #[error(transparent)]
    Layer(#[from] ArchiveError),
    /// The user could not be resolved from the image's own files.
    #[error(transparent)]
    User(#[from] UserError),
    /// `-w` is not an absolute path (Docker's message).
    #[error("the working directory {0:?} is invalid, it needs to be an absolute path")]
    RelativeWorkdir(String),
    /// A `-v` value that cannot be used.
    #[error("invalid volume specification {spec:?}")]
    Volume {
        /// The value as given.
        spec: String,
        /// Why.
        #[source]
        reason: Reason,
    },
    /// A variable name with white space in it (`-e`, `--env-file`; Docker's check).
    #[error("invalid environment variable {0:?}: the name contains white space")]
    EnvName(String),
    /// The private network could not be made, or a port not published.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// Network options that do not go together (docker's wording).
    #[error("{0}")]
    NetworkConflict(&'static str),
    /// The resource limits could not be applied.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The sandbox failed (or the command could not be executed).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// `--isolation=chroot` could not copy the image's files into its directory, or the
    /// command's changes out of it.
    #[error("--isolation=chroot: copying the image's files or the command's changes")]
    Chroot(#[source] Box<crate::layer::LayerError>),
    /// The command is a script whose `#!` interpreter the image does not have.
    #[error(transparent)]
    MissingInterpreter(#[from] exec_diagnosis::MissingInterpreter),
    /// A request docker's daemon refuses (its message: a name in use, a running container
    /// removed without force, an invalid signal...).
    #[error("{0}")]
    Conflict(String),
    /// A supervisor could not start the container: its message (the whole chain) and exit
    /// code.
    #[error("{message}")]
    StartFailed {
        /// Why.
        message: String,
        /// docker's exit code for it.
        exit_code: i32,
    },
    /// The container is not running (docker's message).
    #[error("Container {0} is not running")]
    NotRunning(String),
    /// A host file operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl ContainerError {
    /// The exit code `docker run` uses: 126/127 when the command cannot be executed, 125 when
    /// kiln itself failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            ContainerError::Runtime(err) => err.exit_code(),
            ContainerError::MissingInterpreter(_) => exec_diagnosis::MissingInterpreter::EXIT_CODE,
            ContainerError::StartFailed { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }
}

fn io_error<'p>(
    action: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> ContainerError + 'p {
    move |source| ContainerError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What `docker run` takes besides the image. Kept beside a container's record
/// (`options.json`, see [`lifecycle`]) so that `kiln start` and the restart policy start it again
/// as it was created: a field added here comes along (give it a default for older files).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunOptions {
    /// `--entrypoint`: replaces the image's ENTRYPOINT (`Some("")` removes it) and drops its CMD.
    pub entrypoint: Option<String>,
    /// The arguments after the image: they replace the image's CMD when not empty.
    pub args: Vec<String>,
    /// `-e`/`--env-file` entries, `KEY=VALUE`, in order (later ones win).
    pub env: Vec<String>,
    /// `-w`: the working directory (absolute).
    pub workdir: Option<String>,
    /// `-u`: the user, as `USER` takes it (`name`, `uid`, `name:group`, `uid:gid`...).
    pub user: Option<String>,
    /// `--hostname` (default: the first 12 hex digits of the container id).
    pub hostname: Option<String>,
    /// `--network` (`bridge`/`default` is the private network).
    pub network: NetworkMode,
    /// `-p`: ports published on the host (the private network only).
    pub publish: Vec<PortMapping>,
    /// `--add-host`: extra lines of `/etc/hosts`.
    pub add_hosts: Vec<HostEntry>,
    /// `--dns`: the nameservers of `/etc/resolv.conf` (instead of the host's).
    pub dns: Vec<IpAddr>,
    /// `-v` bind mounts (see [`parse_volume`]).
    pub volumes: Vec<Mount>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--memory`, `--pids-limit`, `--cpus`.
    pub limits: Limits,
    /// `--init`.
    pub init: bool,
    /// `-t`: the process gets a terminal (and `TERM=xterm`).
    pub tty: bool,
    /// `no_new_privs`; kiln run sets it unless `--security-opt no-new-privileges=false`.
    pub no_new_privileges: bool,
    /// `--rm`: remove the container's directory and record when it ends.
    pub remove: bool,
    /// `--isolation`: the sandbox, or a changed root ([`chroot`]; the container's files are a
    /// copy in its directory then).
    pub isolation: crate::runtime::Isolation,
    /// `--name` (default: one made up as docker does, see [`names`]).
    pub name: Option<String>,
    /// `--restart`, run by a detached container's supervisor.
    pub restart: lifecycle::RestartPolicy,
    /// `--stop-signal` (default: the image's STOPSIGNAL, else SIGTERM).
    pub stop_signal: Option<String>,
    /// `--stop-timeout`: seconds between the stop signal and SIGKILL (default 10).
    pub stop_timeout: Option<u32>,
    /// `--log-opt max-size=…,max-file=…`: the bounds of a detached container's log.
    pub log: logs::LogLimits,
}

impl Default for RunOptions {
    /// `docker run IMAGE`'s: the image's command, kiln's default network, no_new_privs.
    fn default() -> RunOptions {
        RunOptions {
            entrypoint: None,
            args: Vec::new(),
            env: Vec::new(),
            workdir: None,
            user: None,
            hostname: None,
            network: NetworkMode::default(),
            publish: Vec::new(),
            add_hosts: Vec::new(),
            dns: Vec::new(),
            volumes: Vec::new(),
            read_only: false,
            limits: Limits::default(),
            init: false,
            tty: false,
            no_new_privileges: true,
            remove: false,
            isolation: crate::runtime::Isolation::default(),
            name: None,
            restart: lifecycle::RestartPolicy::No,
            stop_signal: None,
            stop_timeout: None,
            log: logs::LogLimits::default(),
        }
    }
}

/// How a finished container ended, beyond its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// The memory limit in bytes, when the kernel's OOM killer killed a process under it.
    pub oom_killed: Option<u64>,
}

/// A created container: its directory and record exist, its process is ready to start.
/// Dropping it without [`Container::finish`] cleans up as `finish` would.
#[derive(Debug)]
pub struct Container {
    store: Store,
    record: ContainerRecord,
    dir: PathBuf,
    spec: Spec,
    cgroup: Option<Cgroup>,
    memory_limit: Option<u64>,
    remove: bool,
    finished: bool,
    isolation: crate::runtime::Isolation,
    /// With `--isolation=chroot`, the root once started.
    chroot: Option<chroot::ChrootRoot>,
    /// How the process ended, once known ([`Container::set_exit_code`]).
    exit_code: Option<i32>,
    /// Whether the OOM killer ended it.
    oom_killed: bool,
    /// The private network and its stack: kept as long as the container is, so whoever holds
    /// the container while its process runs (`kiln run`, a detached container's supervisor)
    /// keeps its network up; dropped by [`Container::finish`].
    network: Option<PrivateNetwork>,
}

impl Container {
    /// Creates a container of `image` (`image_name` as the user gave it): snapshots, directory,
    /// record (written before anything runs), `/etc` files, cgroup, and the process's [`Spec`].
    pub fn create(
        store: &Store,
        image: &StoredImage,
        image_name: &str,
        options: &RunOptions,
    ) -> Result<Container, ContainerError> {
        let owner = options.remove.then(RunOwner::this_process).flatten();
        Container::make(store, image, image_name, options, owner, true)
    }

    /// [`Container::create`] for a container that a supervisor runs: the record names no owner
    /// (with `--rm` the supervisor names itself when it starts) and no cgroup is made yet.
    pub(crate) fn create_detached(
        store: &Store,
        image: &StoredImage,
        image_name: &str,
        options: &RunOptions,
    ) -> Result<ContainerRecord, ContainerError> {
        let mut container = Container::make(store, image, image_name, options, None, false)?;
        // Created, not run: nothing to clean up, and --rm is the supervisor's to honour.
        container.finished = true;
        Ok(container.record.clone())
    }

    fn make(
        store: &Store,
        image: &StoredImage,
        image_name: &str,
        options: &RunOptions,
        remove_with: Option<RunOwner>,
        with_cgroup: bool,
    ) -> Result<Container, ContainerError> {
        let lease = store.lease()?;
        let lower_dirs = ensure_snapshots(store, image)?;
        let id = random_id()?;
        let dir = store.container_dir(&id)?;
        let mut record = ContainerRecord {
            id: id.clone(),
            image: image.id.clone(),
            image_name: image_name.to_string(),
            name: options
                .name
                .clone()
                .unwrap_or_else(|| names::random_name(0)),
            config: crate::store::ContainerConfig::default(),
            created: crate::oci::timestamp::now_rfc3339(),
            pid: None,
            remove_with,
            run: crate::store::RunState {
                state: ContainerState::Created,
                ..crate::store::RunState::default()
            },
        };
        // A made-up name that another container has: docker's generator tries again with a
        // digit appended.
        let mut retry = 0;
        loop {
            match store.put_container(&record) {
                Err(StoreError::ContainerNameInUse { .. })
                    if options.name.is_none() && retry < names::RETRIES =>
                {
                    retry += 1;
                    record.name = names::random_name(retry);
                }
                result => break result?,
            }
        }
        drop(lease);
        lifecycle::write_options(store, &id, options)?;
        let mut container = Container::unprepared(store, record, dir, options);
        // From here on, an error drops `container`, which removes what was made with --rm.
        let network = container.start_network(options)?;
        container.spec = container.prepare(image, lower_dirs, options, network)?;
        container.record.config = crate::store::ContainerConfig {
            args: container.spec.args.clone(),
            env: container.spec.env.clone(),
            working_dir: container.spec.cwd.clone(),
            user: options
                .user
                .clone()
                .or_else(|| {
                    image
                        .config
                        .config()
                        .as_ref()
                        .and_then(|c| c.user().clone())
                })
                .unwrap_or_default(),
            hostname: container.spec.hostname.clone(),
            tty: options.tty,
        };
        let config = container.record.config.clone();
        container.record = store.update_container(&id, |record| record.config = config)?;
        let wants_cgroup = with_cgroup && options.limits != Limits::default();
        if wants_cgroup {
            let cgroup = Cgroup::create(&id, &options.limits)?;
            container.spec.cgroup_procs = cgroup.procs_files();
            container.cgroup = Some(cgroup);
        }
        Ok(container)
    }

    /// A container of `record` with nothing made yet: no spec, network or cgroup. Dropping it
    /// cleans up as [`Container::finish`] would (with `--rm`, the record goes).
    fn unprepared(
        store: &Store,
        record: ContainerRecord,
        dir: PathBuf,
        options: &RunOptions,
    ) -> Container {
        Container {
            store: store.clone(),
            record,
            dir,
            spec: placeholder_spec(),
            cgroup: None,
            memory_limit: options.limits.memory,
            remove: options.remove,
            finished: false,
            isolation: options.isolation,
            chroot: None,
            exit_code: None,
            oom_killed: false,
            network: None,
        }
    }

    /// The container's id (64 hex digits).
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The container's directory in the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What will run.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The ports published on the host (`-p`), their host ports resolved.
    pub fn published_ports(&self) -> &[PublishedPort] {
        self.network
            .as_ref()
            .map(PrivateNetwork::published)
            .unwrap_or_default()
    }

    /// The sandbox's network for `options`: docker's checks of `-p` and `--dns` against the
    /// mode, then the private network started (with `-p`'s ports published) when it is the one.
    fn start_network(&mut self, options: &RunOptions) -> Result<Network, ContainerError> {
        let chroot = self.isolation == crate::runtime::Isolation::Chroot;
        if !options.publish.is_empty() {
            match options.network {
                NetworkMode::Host => {
                    return Err(ContainerError::NetworkConflict(
                        "published ports are discarded when using host network mode: \
                         drop -p or use the default network",
                    ));
                }
                NetworkMode::None => {
                    return Err(ContainerError::NetworkConflict(
                        "conflicting options: port publishing and the container type network \
                         mode (--network none)",
                    ));
                }
                NetworkMode::Private if chroot => {
                    return Err(ContainerError::NetworkConflict(
                        "port publishing needs the private network, which --isolation=chroot \
                         does not have (the command shares this machine's network)",
                    ));
                }
                NetworkMode::Private if !NetworkMode::private_available() => {
                    return Err(ContainerError::NetworkConflict(
                        "port publishing needs the private network, which rootless kiln has \
                         only with subordinate id ranges in /etc/subuid and /etc/subgid",
                    ));
                }
                NetworkMode::Private => {}
            }
        }
        if !options.dns.is_empty() && options.network == NetworkMode::Host {
            return Err(ContainerError::NetworkConflict(
                "conflicting options: dns and the network mode (--network host uses the \
                 host's /etc/resolv.conf)",
            ));
        }
        Ok(match options.network {
            NetworkMode::Host => Network::Host,
            NetworkMode::None => Network::None,
            // No network namespace in a changed root, nor a private network without a
            // subordinate id range (kiln's warning says so): the host's network.
            NetworkMode::Private if chroot || !NetworkMode::private_available() => Network::Host,
            NetworkMode::Private => {
                let private = PrivateNetwork::start(&options.publish)?;
                let network = private.network();
                self.network = Some(private);
                network
            }
        })
    }

    /// Starts the process with `stdio` and records its pid. With `-t` ([`RunOptions::tty`]) pass
    /// [`Stdio::Terminal`] and relay [`Sandbox::take_terminal`]'s master.
    pub fn start(&mut self, stdio: Stdio) -> Result<Sandbox, ContainerError> {
        let sandbox = match self.isolation {
            crate::runtime::Isolation::Sandbox => Sandbox::spawn(&self.spec, stdio)
                .map_err(|err| exec_diagnosis::explain(&self.spec, err))?,
            crate::runtime::Isolation::Chroot => {
                let root = chroot::ChrootRoot::prepare(
                    self.dir.join("chroot"),
                    &self.spec,
                    MAX_LAYER_BYTES,
                )?;
                let sandbox = root
                    .spawn(stdio)
                    .map_err(|err| exec_diagnosis::explain(&self.spec, err))?;
                self.chroot = Some(root);
                sandbox
            }
        };
        let pid = u32::try_from(sandbox.pid()).ok();
        let supervisor = RunOwner::this_process();
        let ports: Vec<crate::store::PublishedPortRecord> = self
            .published_ports()
            .iter()
            .map(|port| crate::store::PublishedPortRecord {
                host_ip: port.host_ip.to_string(),
                host_port: port.host_port,
                container_port: port.container_port,
                protocol: port.protocol.as_str().to_string(),
            })
            .collect();
        self.record = self.store.update_container(&self.record.id, |record| {
            record.run.ports = ports;
            record.pid = pid;
            record.run.state = ContainerState::Running;
            record.run.started_at = Some(crate::oci::timestamp::now_rfc3339());
            record.run.finished_at = None;
            record.run.exit_code = None;
            record.run.error.clear();
            record.run.oom_killed = false;
            record.run.supervisor = supervisor;
        })?;
        Ok(sandbox)
    }

    /// Records how the process ended (its exit code), for [`Container::finish`] to write.
    pub fn set_exit_code(&mut self, code: i32) {
        self.exit_code = Some(code);
    }

    /// The record as this container last wrote it.
    pub fn record(&self) -> &ContainerRecord {
        &self.record
    }

    /// After the sandbox was waited for: whether the OOM killer struck, then the cgroup is
    /// removed, and the container too with `--rm` (else its record stays, without a pid).
    pub fn finish(mut self) -> Result<Ending, ContainerError> {
        let oom_killed = match &self.cgroup {
            Some(cgroup) if cgroup.oom_killed() => self.memory_limit,
            _ => None,
        };
        self.oom_killed = oom_killed.is_some();
        self.cleanup()?;
        Ok(Ending { oom_killed })
    }

    fn cleanup(&mut self) -> Result<(), ContainerError> {
        self.finished = true;
        let chroot = self.chroot.take();
        // The stack stopped once the process it served is gone.
        drop(self.network.take());
        let destroyed = match self.cgroup.take() {
            Some(cgroup) => cgroup.destroy().map_err(ContainerError::from),
            None => Ok(()),
        };
        // A kept `--isolation=chroot` container's changes are written into its upper
        // directory, where `diff`, `commit`, `cp` and `export` read a container's changes
        // (see `changes`); then its copy of the image's files is removed.
        let kept = match &chroot {
            Some(root) if !self.remove => root
                .write_changes(&self.dir.join("upper"))
                .map(|_owners| ()),
            _ => Ok(()),
        };
        drop(chroot);
        let oom_killed = self.oom_killed;
        let exit_code = self.exit_code;
        let stored = if self.remove {
            self.store.remove_container(&self.record.id)
        } else if self.record.pid.is_some() {
            self.store
                .update_container(&self.record.id, |record| {
                    record.pid = None;
                    record.run.state = ContainerState::Exited;
                    record.run.finished_at = Some(crate::oci::timestamp::now_rfc3339());
                    // Ended without a status (kiln's own failure): as killed.
                    record.run.exit_code = exit_code.or(Some(crate::store::CRASHED_EXIT_CODE));
                    record.run.oom_killed = oom_killed;
                })
                .map(|record| self.record = record)
        } else {
            Ok(())
        };
        destroyed?;
        kept?;
        Ok(stored?)
    }

    /// Everything but the cgroup: the process, the root and the mounts.
    fn prepare(
        &self,
        image: &StoredImage,
        lower_dirs: Vec<PathBuf>,
        options: &RunOptions,
        network: Network,
    ) -> Result<Spec, ContainerError> {
        let config = image.config.config().clone().unwrap_or_default();
        let args = command(
            config.entrypoint().as_deref(),
            config.cmd().as_deref(),
            options.entrypoint.as_deref(),
            &options.args,
        )?;
        let user = options
            .user
            .clone()
            .or_else(|| config.user().clone())
            .unwrap_or_default();
        let cwd = match &options.workdir {
            Some(dir) if dir.starts_with('/') => dir.clone(),
            Some(dir) => return Err(ContainerError::RelativeWorkdir(dir.clone())),
            None => match config.working_dir().as_deref() {
                Some(dir) if dir.starts_with('/') => dir.to_string(),
                Some(dir) if !dir.is_empty() => format!("/{dir}"),
                _ => "/".to_string(),
            },
        };
        let hostname = options
            .hostname
            .clone()
            .unwrap_or_else(|| self.record.id.chars().take(12).collect());
        let env = environment(
            config.env().as_deref().unwrap_or_default(),
            &options.env,
            &hostname,
            options.tty,
        );
        let upper_dir = self.dir.join("upper");
        let work_dir = self.dir.join("work");
        for path in [&upper_dir, &work_dir] {
            fs::create_dir_all(path).map_err(io_error("create directory", path))?;
        }
        sandbox_spec(SandboxSetup {
            lower_dirs,
            upper: UpperDir {
                upper_dir,
                work_dir,
            },
            args,
            env,
            cwd,
            user: &user,
            hostname,
            network,
            add_hosts: &options.add_hosts,
            dns: &options.dns,
            mounts: &options.volumes,
            etc_dir: &self.dir,
            etc_files: EtcFiles::Container,
            read_only: options.read_only,
            tty: options.tty,
            no_new_privileges: options.no_new_privileges,
            init: options.init,
            privileged: false,
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.finished {
            // Nothing to report to from a drop; `finish` reports these errors.
            let _ = self.cleanup();
        }
    }
}

/// Which `/etc` files a sandbox gets: [`sandbox_spec`] writes them into a directory of the
/// caller's and bind-mounts them (read-write) over the image's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcFiles {
    /// `docker run`'s: `/etc/hosts` (the host's with the host network, else docker's localhost
    /// entries), `/etc/hostname`, and `/etc/resolv.conf` (the host's with the host network,
    /// else empty).
    Container,
    /// BuildKit's for a RUN step (executor/oci/hosts.go, resolvconf.go): `/etc/hosts` naming
    /// localhost and the hostname, and the host's `/etc/resolv.conf`; no `/etc/hostname` mount,
    /// so the image's own file shows (and a step may write it).
    Build,
}

/// What `kiln run` and a builder's RUN step decide alike about a sandbox; [`sandbox_spec`]
/// turns it into the [`Spec`].
#[derive(Debug, Clone)]
pub struct SandboxSetup<'a> {
    /// The image's snapshot directories, TOP-MOST FIRST.
    pub lower_dirs: Vec<PathBuf>,
    /// Where the changes go.
    pub upper: UpperDir,
    /// The command line.
    pub args: Vec<String>,
    /// The environment; `HOME` (the user's home in the image, `/` without one) is added when it
    /// is not set, as docker (and runc, for BuildKit) do.
    pub env: Vec<String>,
    /// The absolute working directory.
    pub cwd: String,
    /// The user as `USER` takes it (`""`, `name`, `uid`, `name:group`...), resolved in the
    /// image's own `/etc/passwd` and `/etc/group`.
    pub user: &'a str,
    /// The hostname.
    pub hostname: String,
    /// The network.
    pub network: Network,
    /// `--add-host` lines of `/etc/hosts` (a container's only).
    pub add_hosts: &'a [HostEntry],
    /// `--dns` nameservers (a container's only).
    pub dns: &'a [IpAddr],
    /// Mounts; one onto an `/etc` file replaces that file's mount.
    pub mounts: &'a [Mount],
    /// Where the `/etc` files are written: a directory that outlives the sandbox.
    pub etc_dir: &'a Path,
    /// Which `/etc` files.
    pub etc_files: EtcFiles,
    /// Mount the root read-only.
    pub read_only: bool,
    /// Give the process a terminal.
    pub tty: bool,
    /// Set `no_new_privs`.
    pub no_new_privileges: bool,
    /// Put kiln's tiny init at pid 1.
    pub init: bool,
    /// BuildKit's insecure mode (see [`Spec::privileged`]); `kiln run` has no such option.
    pub privileged: bool,
}

/// The sandbox's [`Spec`]: the user resolved in the image, `HOME`, the `/etc` files written
/// into [`SandboxSetup::etc_dir`] and mounted, the caller's mounts after them.
pub fn sandbox_spec(setup: SandboxSetup<'_>) -> Result<Spec, ContainerError> {
    let resolved = user::resolve_in_image(&setup.lower_dirs, setup.user)?;
    let mut env = setup.env;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", resolved.home));
    }
    let mut mounts = write_etc_files(
        setup.etc_dir,
        setup.etc_files,
        &EtcNetwork {
            hostname: &setup.hostname,
            network: &setup.network,
            add_hosts: setup.add_hosts,
            dns: setup.dns,
        },
    )?;
    mounts.retain(|m| !setup.mounts.iter().any(|v| v.destination == m.destination));
    mounts.extend(setup.mounts.iter().cloned());
    Ok(Spec {
        rootfs: RootFs {
            lower_dirs: setup.lower_dirs,
            upper: Some(setup.upper),
            readonly: setup.read_only,
        },
        args: setup.args,
        env,
        cwd: setup.cwd,
        user: User {
            uid: resolved.uid,
            gid: resolved.gid,
            additional_gids: resolved.process_groups(),
        },
        hostname: setup.hostname,
        network: setup.network,
        mounts,
        user_namespace: false,
        cgroup_procs: Vec::new(),
        tty: setup.tty,
        no_new_privileges: setup.no_new_privileges,
        init: setup.init,
        privileged: setup.privileged,
    })
}

/// What the `/etc` files say about the network.
struct EtcNetwork<'a> {
    hostname: &'a str,
    network: &'a Network,
    add_hosts: &'a [HostEntry],
    dns: &'a [IpAddr],
}

/// Writes the `/etc` files `kind` asks for into `dir` and returns their bind mounts onto
/// `/etc` (read-write, as docker and BuildKit mount them). The host's own files are copied
/// (at most 1 MiB each), so a later change on the host does not reach a running sandbox.
///
/// On the private network, `/etc/hosts` is docker's: the localhost entries, the `--add-host`
/// lines, then the container's address and hostname; `/etc/resolv.conf` is
/// [`network::resolv_conf`]'s (docker's filtering of the host's, or `--dns`).
fn write_etc_files(
    dir: &Path,
    kind: EtcFiles,
    etc: &EtcNetwork<'_>,
) -> Result<Vec<Mount>, ContainerError> {
    let hostname = etc.hostname;
    let host_resolv = || -> Result<Vec<u8>, ContainerError> {
        Ok(read_host_file(Path::new("/etc/resolv.conf"))?.unwrap_or_default())
    };
    let private_resolv = || -> Result<Vec<u8>, ContainerError> {
        let host = String::from_utf8_lossy(&host_resolv()?).into_owned();
        Ok(network::resolv_conf(&host, etc.dns).into_bytes())
    };
    let extra_hosts: String = etc
        .add_hosts
        .iter()
        .map(|entry| format!("{}\t{}\n", entry.address, entry.name))
        .collect();
    let nameservers = |dns: &[IpAddr]| -> Vec<u8> {
        dns.iter()
            .map(|server| format!("nameserver {server}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let files = match (kind, etc.network) {
        (EtcFiles::Container, Network::Host) => {
            let mut hosts = read_host_file(Path::new("/etc/hosts"))?
                .unwrap_or_else(|| DEFAULT_HOSTS.as_bytes().to_vec());
            hosts.extend_from_slice(extra_hosts.as_bytes());
            vec![
                ("hosts", hosts),
                ("hostname", format!("{hostname}\n").into_bytes()),
                ("resolv.conf", host_resolv()?),
            ]
        }
        (EtcFiles::Container, Network::None) => vec![
            (
                "hosts",
                format!("{DEFAULT_HOSTS}{extra_hosts}").into_bytes(),
            ),
            ("hostname", format!("{hostname}\n").into_bytes()),
            ("resolv.conf", nameservers(etc.dns)),
        ],
        (EtcFiles::Container, Network::Private(_)) => vec![
            (
                "hosts",
                format!(
                    "{DEFAULT_HOSTS}{extra_hosts}{}\t{hostname}\n",
                    network::GUEST_ADDRESS
                )
                .into_bytes(),
            ),
            ("hostname", format!("{hostname}\n").into_bytes()),
            ("resolv.conf", private_resolv()?),
        ],
        // BuildKit filters the host's resolv.conf for a step off the host's network
        // (executor/oci/resolvconf.go) as docker does.
        (EtcFiles::Build, Network::Private(_)) => vec![
            (
                "hosts",
                format!(
                    "127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                )
                .into_bytes(),
            ),
            ("resolv.conf", private_resolv()?),
        ],
        (EtcFiles::Build, _) => vec![
            (
                "hosts",
                format!(
                    "127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                )
                .into_bytes(),
            ),
            ("resolv.conf", host_resolv()?),
        ],
    };
    let mut mounts = Vec::new();
    for (name, content) in files {
        let path = dir.join(name);
        fs::write(&path, content).map_err(io_error("write", &path))?;
        mounts.push(Mount {
            destination: format!("/etc/{name}"),
            source: MountSource::Bind(path),
            readonly: false,
        });
    }
    Ok(mounts)
}

/// A spec that is replaced before use (`Container::prepare` needs the container to exist).
fn placeholder_spec() -> Spec {
    Spec {
        rootfs: RootFs {
            lower_dirs: Vec::new(),
            upper: None,
            readonly: true,
        },
        args: Vec::new(),
        env: Vec::new(),
        cwd: "/".to_string(),
        user: User::root(),
        hostname: String::new(),
        network: Network::None,
        mounts: Vec::new(),
        user_namespace: false,
        cgroup_procs: Vec::new(),
        tty: false,
        no_new_privileges: true,
        init: false,
        privileged: false,
    }
}

/// A host file of at most 1 MiB, `None` when it does not exist.
fn read_host_file(path: &Path) -> Result<Option<Vec<u8>>, ContainerError> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error("open", path)(err)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SMALL_FILE)
        .read_to_end(&mut bytes)
        .map_err(io_error("read", path))?;
    Ok(Some(bytes))
}

/// A new container id: 32 random bytes from the kernel (getrandom(2)) as 64 hex digits, docker's
/// form. Ids that are all digits are drawn again, as docker does, so a short prefix never looks
/// like a number.
fn random_id() -> Result<String, ContainerError> {
    loop {
        let mut bytes = [0u8; 32];
        let mut filled = 0;
        while filled < bytes.len() {
            let rest = bytes.get_mut(filled..).unwrap_or_default();
            match rustix::rand::getrandom(rest, rustix::rand::GetRandomFlags::empty()) {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(err) => {
                    return Err(io_error(
                        "read random bytes for the container id from",
                        Path::new("getrandom(2)"),
                    )(err.into()));
                }
            }
        }
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if !id.chars().take(12).all(|c| c.is_ascii_digit()) {
            return Ok(id);
        }
    }
}

/// Makes sure every layer of `image` is unpacked (verifying each layer's diff ID while
/// unpacking) and returns the snapshot directories TOP-MOST FIRST, the order of overlayfs'
/// `lowerdir=` and of [`RootFs::lower_dirs`]. Hold a [`crate::store::Lease`] while the
/// image is not protected by a tag or a container record.
pub fn ensure_snapshots(
    store: &Store,
    image: &StoredImage,
) -> Result<Vec<PathBuf>, ContainerError> {
    Ok(archive::ensure_snapshots(
        store,
        &image.layers,
        MAX_LAYER_BYTES,
    )?)
}

/// Docker's ENTRYPOINT/CMD rules: `--entrypoint` replaces the image's entrypoint (an empty one
/// removes it) and drops the image's CMD; arguments after the image replace the CMD; the command
/// is the entrypoint followed by the CMD, and must not be empty.
pub fn command(
    image_entrypoint: Option<&[String]>,
    image_cmd: Option<&[String]>,
    entrypoint: Option<&str>,
    args: &[String],
) -> Result<Vec<String>, ContainerError> {
    let (entrypoint, image_cmd): (Vec<String>, &[String]) = match entrypoint {
        Some("") => (Vec::new(), &[]),
        Some(program) => (vec![program.to_string()], &[]),
        None => (
            image_entrypoint.unwrap_or_default().to_vec(),
            image_cmd.unwrap_or_default(),
        ),
    };
    let cmd = if args.is_empty() { image_cmd } else { args };
    let mut all = entrypoint;
    all.extend(cmd.iter().cloned());
    if all.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    Ok(all)
}

/// The process environment as docker builds it: `PATH` (docker's default when neither the image
/// nor `-e` sets one), `HOSTNAME`, `TERM=xterm` with a terminal, then the image's variables with
/// `user_env` replacing or adding entries. [`sandbox_spec`] adds `HOME` (the user's home) when
/// still unset.
pub fn environment(
    image_env: &[String],
    user_env: &[String],
    hostname: &str,
    tty: bool,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let set = |env: &mut Vec<String>, entry: &str| {
        let key = entry.split_once('=').map_or(entry, |(k, _)| k);
        let same = |e: &String| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key;
        match env.iter_mut().find(|e| same(e)) {
            Some(existing) => *existing = entry.to_string(),
            None => env.push(entry.to_string()),
        }
    };
    let has = |key: &str| {
        image_env
            .iter()
            .chain(user_env)
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
    };
    if !has("PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    env.push(format!("HOSTNAME={hostname}"));
    if tty {
        env.push("TERM=xterm".to_string());
    }
    for entry in image_env.iter().chain(user_env) {
        set(&mut env, entry);
    }
    env
}

/// One `-e` value: `KEY=VALUE` as it is, or `KEY` alone for the variable's value in kiln's own
/// environment (`lookup`), nothing when it is unset there (docker's rule).
pub fn env_entry(
    value: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, ContainerError> {
    let name = value.split_once('=').map_or(value, |(k, _)| k);
    if name.is_empty() {
        return Err(ContainerError::EnvName(value.to_string()));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(ContainerError::EnvName(name.to_string()));
    }
    if value.contains('=') {
        return Ok(Some(value.to_string()));
    }
    Ok(lookup(name).map(|v| format!("{name}={v}")))
}

/// The entries of an `--env-file` (docker's format): one `-e` value per line; blank lines and
/// lines starting with `#` are skipped, leading white space is dropped.
pub fn env_file(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ContainerError> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        entries.extend(env_entry(line, &lookup)?);
    }
    Ok(entries)
}

/// One `-v HOST:CONTAINER[:ro|rw]` value: the host path must be absolute and exist (kiln has no
/// named volumes), the container path absolute.
pub fn parse_volume(spec: &str) -> Result<Mount, ContainerError> {
    let fail = |reason: Reason| ContainerError::Volume {
        spec: spec.to_string(),
        reason,
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, destination, readonly) = match parts.as_slice() {
        [source, destination] => (*source, *destination, false),
        [source, destination, "ro"] => (*source, *destination, true),
        [source, destination, "rw"] => (*source, *destination, false),
        [_, _, mode] => {
            return Err(fail(Reason::new(format!(
                "unknown mode {mode:?}: use ro or rw"
            ))));
        }
        _ => return Err(fail(Reason::new("use HOST-PATH:CONTAINER-PATH[:ro|rw]"))),
    };
    if !source.starts_with('/') {
        return Err(fail(Reason::new(
            "the host path must be absolute (kiln has no named volumes)",
        )));
    }
    if !destination.starts_with('/') {
        return Err(fail(Reason::new("the container path must be absolute")));
    }
    if destination == "/" {
        return Err(fail(Reason::new("the container path cannot be /")));
    }
    if let Err(err) = fs::metadata(source) {
        return Err(fail(Reason::caused_by(
            format!("the host path {source}"),
            err,
        )));
    }
    Ok(Mount {
        destination: destination.to_string(),
        source: MountSource::Bind(PathBuf::from(source)),
        readonly,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// Image entrypoint, image cmd, `--entrypoint`, args → the command, or `None` for the error.
    type Case<'a> = (
        Option<&'a [String]>,
        Option<&'a [String]>,
        Option<&'a str>,
        &'a [&'a str],
        Option<&'a [&'a str]>,
    );

    #[test]
    fn entrypoint_and_cmd_follow_docker() {
        let ep = strings(&["/entry", "-x"]);
        let cmd = strings(&["default"]);
        let cases: [Case; 9] = [
            (
                Some(&ep),
                Some(&cmd),
                None,
                &[],
                Some(&["/entry", "-x", "default"]),
            ),
            (
                Some(&ep),
                Some(&cmd),
                None,
                &["a", "b"],
                Some(&["/entry", "-x", "a", "b"]),
            ),
            (
                Some(&ep),
                Some(&cmd),
                Some("/other"),
                &[],
                Some(&["/other"]),
            ),
            (
                Some(&ep),
                Some(&cmd),
                Some("/other"),
                &["a"],
                Some(&["/other", "a"]),
            ),
            (Some(&ep), Some(&cmd), Some(""), &[], None),
            (Some(&ep), Some(&cmd), Some(""), &["sh"], Some(&["sh"])),
            (None, Some(&cmd), None, &[], Some(&["default"])),
            (None, None, None, &["echo", "hi"], Some(&["echo", "hi"])),
            (None, None, None, &[], None),
        ];
        for (image_ep, image_cmd, flag, args, want) in cases {
            let got = command(image_ep, image_cmd, flag, &strings(args)).ok();
            let want = want.map(strings);
            assert_eq!(got, want, "{image_ep:?} {image_cmd:?} {flag:?} {args:?}");
        }
        let err = command(None, None, None, &[]).unwrap_err();
        assert_eq!(err.to_string(), "no command specified");
    }

    /// The spec [`sandbox_spec`] makes for `env` and `user` on an image whose only file is an
    /// `/etc/passwd` giving root home `/root` and `kiln` (1000) home `/home/kiln`.
    fn spec_for(env: Vec<String>, user: &str, etc_files: EtcFiles) -> (Spec, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(
            lower.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nkiln:x:1000:1000::/home/kiln:/bin/sh\n",
        )
        .unwrap();
        let mounts = [Mount {
            destination: "/etc/resolv.conf".into(),
            source: MountSource::Bind(dir.path().to_path_buf()),
            readonly: true,
        }];
        let spec = sandbox_spec(SandboxSetup {
            lower_dirs: vec![lower],
            upper: UpperDir {
                upper_dir: dir.path().join("upper"),
                work_dir: dir.path().join("work"),
            },
            args: strings(&["true"]),
            env,
            cwd: "/".into(),
            user,
            hostname: "box".into(),
            network: Network::None,
            add_hosts: &[],
            dns: &[],
            mounts: &mounts,
            etc_dir: dir.path(),
            etc_files,
            read_only: false,
            tty: false,
            no_new_privileges: true,
            init: false,
            privileged: false,
        })
        .unwrap();
        (spec, dir)
    }

    #[test]
    fn environment_layers_docker_defaults_image_and_user_values() {
        let env = environment(
            &strings(&["A=image", "B=image"]),
            &strings(&["B=user", "C=user"]),
            "box",
            true,
        );
        let (spec, _dir) = spec_for(env, "", EtcFiles::Container);
        assert_eq!(
            spec.env,
            strings(&[
                &format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=box",
                "TERM=xterm",
                "A=image",
                "B=user",
                "C=user",
                "HOME=/root",
            ])
        );
        let env = environment(
            &strings(&["PATH=/bin", "HOME=/home/x"]),
            &strings(&["HOSTNAME=mine"]),
            "box",
            false,
        );
        let (spec, _dir) = spec_for(env, "kiln", EtcFiles::Container);
        assert_eq!(
            spec.env,
            strings(&["HOSTNAME=mine", "PATH=/bin", "HOME=/home/x"])
        );
        assert_eq!((spec.user.uid, spec.user.gid), (1000, 1000));
        // The primary group is a supplementary one too, as docker run and BuildKit set it.
        assert_eq!(spec.user.additional_gids, [1000]);
        let (spec, _dir) = spec_for(strings(&["A=1"]), "kiln", EtcFiles::Build);
        assert_eq!(spec.env, strings(&["A=1", "HOME=/home/kiln"]));
        assert_eq!(spec.user.additional_gids, [1000]);
    }

    #[test]
    fn etc_files_follow_docker_run_or_buildkit_and_yield_to_the_callers_mounts() {
        let destinations = |spec: &Spec| -> Vec<String> {
            spec.mounts.iter().map(|m| m.destination.clone()).collect()
        };
        let (spec, dir) = spec_for(Vec::new(), "", EtcFiles::Container);
        assert_eq!(
            destinations(&spec),
            strings(&["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"])
        );
        assert_eq!(
            spec.mounts[2].source,
            MountSource::Bind(dir.path().to_path_buf())
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("hostname")).unwrap(),
            "box\n"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("hosts")).unwrap(),
            DEFAULT_HOSTS
        );
        let (spec, dir) = spec_for(Vec::new(), "", EtcFiles::Build);
        assert_eq!(
            destinations(&spec),
            strings(&["/etc/hosts", "/etc/resolv.conf"])
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("hosts")).unwrap(),
            "127.0.0.1\tlocalhost box\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        );
        assert!(!dir.path().join("hostname").exists());
    }

    #[test]
    fn env_values_and_files() {
        let lookup = |k: &str| (k == "SET").then(|| "from host".to_string());
        assert_eq!(env_entry("K=V=W", lookup).unwrap(), Some("K=V=W".into()));
        assert_eq!(env_entry("K=", lookup).unwrap(), Some("K=".into()));
        assert_eq!(
            env_entry("SET", lookup).unwrap(),
            Some("SET=from host".into())
        );
        assert_eq!(env_entry("UNSET", lookup).unwrap(), None);
        for bad in ["=V", "", "A B=1"] {
            assert!(env_entry(bad, lookup).is_err(), "{bad}");
        }
        let file = "# comment\n\n  A=1\nSET\nUNSET\nB=two words\n";
        assert_eq!(
            env_file(file, lookup).unwrap(),
            strings(&["A=1", "SET=from host", "B=two words"])
        );
    }

    #[test]
    fn volumes_parse_like_docker_binds() {
        let ok = parse_volume("/tmp:/mnt/x:ro").unwrap();
        assert_eq!(ok.source, MountSource::Bind(PathBuf::from("/tmp")));
        assert_eq!(ok.destination, "/mnt/x");
        assert!(ok.readonly);
        assert!(!parse_volume("/tmp:/mnt").unwrap().readonly);
        assert!(!parse_volume("/tmp:/mnt:rw").unwrap().readonly);
        for bad in [
            "/tmp",
            "named:/mnt",
            "/tmp:relative",
            "/tmp:/",
            "/tmp:/mnt:rx",
            "/no/such/kiln/path:/mnt",
            "/tmp:/a:ro:extra",
        ] {
            let err = crate::error::chain(&parse_volume(bad).unwrap_err());
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn ids_are_64_hex_and_differ() {
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }
}
