//! A container's life after [`Container::create`]: what it was created with (`options.json`
//! beside its record), restart policies, signals, stop, wait, removal and renaming, as docker's
//! daemon does them. The process itself runs under its supervisor ([`super::supervisor`]).

use super::{Container, ContainerError, RunOptions, ensure_snapshots};
use crate::store::{ContainerRecord, ContainerState, RunOwner, Store, StoreError, StoredImage};
use nix::sys::signal::Signal;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The file beside a container's record that keeps its [`RunOptions`].
const OPTIONS: &str = "options.json";
/// `options.json` is small; the cap keeps a corrupt one from exhausting memory.
const MAX_OPTIONS_SIZE: u64 = 1 << 20;
/// docker's default time between the stop signal and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: u32 = 10;
/// How often a waiter looks at the record again.
const POLL: Duration = Duration::from_millis(50);
/// How long a killed container's supervisor gets to record the end.
const KILLED_GRACE: Duration = Duration::from_secs(30);

/// `--restart`: docker's restart policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never restart (the default).
    #[default]
    No,
    /// Restart when it exits with a non-zero code, at most this many times (0: no limit).
    OnFailure(u32),
    /// Restart whenever it ends, unless stopped by hand.
    Always,
    /// As `always`; the difference (not restarted when the daemon restarts after a manual
    /// stop) is moot for kiln, which has no daemon.
    UnlessStopped,
}

/// Why a `--restart` value was refused (docker's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartPolicyError {
    /// Not one of the policy names.
    #[error("invalid restart policy '{0}'")]
    Unknown(String),
    /// `on-failure:x`.
    #[error("maximum retry count must be an integer")]
    Count,
    /// `always:3`.
    #[error("maximum retry count cannot be used with restart policy '{0}'")]
    CountNotAllowed(String),
}

impl FromStr for RestartPolicy {
    type Err = RestartPolicyError;

    fn from_str(text: &str) -> Result<RestartPolicy, RestartPolicyError> {
        let (name, count) = match text.split_once(':') {
            Some((name, count)) => (name, Some(count)),
            None => (text, None),
        };
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure(0),
            _ => return Err(RestartPolicyError::Unknown(text.to_string())),
        };
        match (policy, count) {
            (_, None) => Ok(policy),
            (RestartPolicy::OnFailure(_), Some(count)) => count
                .parse()
                .map(RestartPolicy::OnFailure)
                .map_err(|_| RestartPolicyError::Count),
            (_, Some(_)) => Err(RestartPolicyError::CountNotAllowed(name.to_string())),
        }
    }
}

impl RestartPolicy {
    /// docker's `HostConfig.RestartPolicy.Name` (`no`, `on-failure`, `always`, `unless-stopped`).
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure(_) => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// docker's `HostConfig.RestartPolicy.MaximumRetryCount`.
    pub fn maximum_retry_count(self) -> u32 {
        match self {
            RestartPolicy::OnFailure(count) => count,
            _ => 0,
        }
    }

    /// Whether a container that ended with `exit_code`, restarted `restarts` times so far,
    /// starts again (docker's `restartmanager.ShouldRestart`). A manual stop is the caller's
    /// to check.
    pub fn should_restart(self, exit_code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure(max) => exit_code != 0 && (max == 0 || restarts < max),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::OnFailure(count) if *count > 0 => write!(f, "on-failure:{count}"),
            other => f.write_str(other.name()),
        }
    }
}

impl serde::Serialize for RestartPolicy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RestartPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// docker's restart delay: 100 ms, doubled after each restart, at most a minute, back to 100 ms
/// once the container had run for 10 s.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            delay: Backoff::INITIAL,
        }
    }
}

impl Backoff {
    const INITIAL: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(60);
    const RESET_AFTER: Duration = Duration::from_secs(10);

    /// The delay before the next start of a container that ran for `ran`.
    pub fn next(&mut self, ran: Duration) -> Duration {
        if ran >= Backoff::RESET_AFTER {
            self.delay = Backoff::INITIAL;
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(Backoff::MAX);
        delay
    }
}

/// Writes container `id`'s options beside its record.
pub(crate) fn write_options(
    store: &Store,
    id: &str,
    options: &RunOptions,
) -> Result<(), ContainerError> {
    let path = store.container_dir(id)?.join(OPTIONS);
    let json = serde_json::to_vec_pretty(options).map_err(|err| ContainerError::Io {
        action: "encode",
        path: path.clone(),
        source: err.into(),
    })?;
    crate::sys::atomic::atomic_write(&path, &json).map_err(|err| ContainerError::Store(err.into()))
}

/// What container `id` was created with. A container from before options were kept (a
/// foreground `kiln run`) gets docker's defaults with its recorded command and settings.
pub fn read_options(store: &Store, record: &ContainerRecord) -> Result<RunOptions, ContainerError> {
    use std::io::Read as _;
    let path = store.container_dir(&record.id)?.join(OPTIONS);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(RunOptions {
                entrypoint: Some(String::new()),
                args: record.config.args.clone(),
                env: record.config.env.clone(),
                workdir: Some(record.config.working_dir.clone()).filter(|w| !w.is_empty()),
                user: Some(record.config.user.clone()).filter(|u| !u.is_empty()),
                hostname: Some(record.config.hostname.clone()).filter(|h| !h.is_empty()),
                // A container of a kiln from before the private network had the host's.
                network: crate::runtime::network::NetworkMode::Host,
                tty: record.config.tty,
                no_new_privileges: true,
                ..RunOptions::default()
            });
        }
        Err(source) => {
            return Err(ContainerError::Io {
                action: "open",
                path,
                source,
            });
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_OPTIONS_SIZE)
        .read_to_end(&mut bytes)
        .map_err(|source| ContainerError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|err| ContainerError::Io {
        action: "decode",
        path,
        source: err.into(),
    })
}

/// Creates a container to be run by a supervisor (`kiln create`, `kiln run -d`): its record
/// (state `created`), directory and options; nothing runs yet.
pub fn create(
    store: &Store,
    image: &StoredImage,
    image_name: &str,
    options: &RunOptions,
) -> Result<ContainerRecord, ContainerError> {
    if options.remove && options.restart != RestartPolicy::No {
        return Err(ContainerError::Conflict(
            "Conflicting options: --restart and --rm".to_string(),
        ));
    }
    Container::create_detached(store, image, image_name, options)
}

impl Container {
    /// The container `record` names, ready to start again with `options` (its spec rebuilt
    /// from the image, its `/etc` files rewritten, its cgroup made). With `--rm` this process
    /// becomes the record's owner, so the container goes when it ends (or dies).
    pub(crate) fn load(
        store: &Store,
        record: &ContainerRecord,
        options: &RunOptions,
    ) -> Result<Container, ContainerError> {
        let image = store
            .resolve(&record.image.to_string())
            .or_else(|_| store.resolve(&record.image_name))?;
        let lower_dirs = ensure_snapshots(store, &image)?;
        let owner = options.remove.then(RunOwner::this_process).flatten();
        let record = store.update_container(&record.id, |r| r.remove_with = owner)?;
        let dir = store.container_dir(&record.id)?;
        let mut container = Container::unprepared(store, record, dir, options);
        let network = container.start_network(options)?;
        container.spec = container.prepare(&image, lower_dirs, options, network)?;
        if options.limits != crate::runtime::cgroup::Limits::default() {
            let cgroup = create_cgroup(&container.record.id, &options.limits)?;
            container.spec.cgroup_procs = cgroup.procs_files();
            container.cgroup = Some(cgroup);
        }
        Ok(container)
    }
}

/// The container's cgroup. One left by a supervisor that was killed (the caller holds the
/// supervisor's lock and the record says the container does not run) is empty, its processes
/// gone with their pid namespace: it is removed (each controller's directory) and made anew.
fn create_cgroup(
    id: &str,
    limits: &crate::runtime::cgroup::Limits,
) -> Result<crate::runtime::cgroup::Cgroup, ContainerError> {
    use crate::runtime::cgroup::{Cgroup, CgroupError};
    let mut removed = Vec::new();
    loop {
        match Cgroup::create(id, limits) {
            Err(CgroupError::Exists { path }) if !removed.contains(&path) => {
                std::fs::remove_dir(&path).map_err(|source| ContainerError::Io {
                    action: "remove the leftover cgroup",
                    path: path.clone(),
                    source,
                })?;
                removed.push(path);
            }
            result => return Ok(result?),
        }
    }
}

/// Every container, each as a reader must take it ([`ContainerRecord::settled`]): a record
/// that says running under a dead supervisor is rewritten as exited (137) on the way.
pub fn containers(store: &Store) -> Result<Vec<ContainerRecord>, ContainerError> {
    let mut records = store.containers()?;
    for record in &mut records {
        if record.is_stale() {
            *record = settle(store, record.clone());
        }
    }
    Ok(records)
}

/// The container `reference` names (id, name or id prefix), settled.
pub fn find(store: &Store, reference: &str) -> Result<ContainerRecord, ContainerError> {
    let record = store.find_container(reference)?;
    Ok(if record.is_stale() {
        settle(store, record)
    } else {
        record
    })
}

/// Writes a stale record as exited (best effort: a reader gets the settled record anyway).
fn settle(store: &Store, record: ContainerRecord) -> ContainerRecord {
    store
        .update_container(&record.id, |r| *r = r.clone().settled())
        .unwrap_or_else(|_| record.settled())
}

/// The signal `stop` sends: `--stop-signal`, else the image's STOPSIGNAL, else SIGTERM.
pub fn stop_signal(store: &Store, record: &ContainerRecord) -> Signal {
    let configured = read_options(store, record)
        .ok()
        .and_then(|options| options.stop_signal)
        .or_else(|| {
            let image = store.resolve(&record.image.to_string()).ok()?;
            image.config.config().as_ref()?.stop_signal().clone()
        });
    configured
        .and_then(|name| parse_signal(&name).ok())
        .unwrap_or(Signal::SIGTERM)
}

/// A signal as docker takes one: a name with or without `SIG` (any case), or a number.
pub fn parse_signal(text: &str) -> Result<Signal, ContainerError> {
    let invalid = || ContainerError::Conflict(format!("Invalid signal: {text}"));
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| invalid());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().map_err(|_| invalid())
}

/// Sends `signal` to the running container's pid 1, through a pidfd opened while its record
/// still names that pid as running, so the signal cannot reach a process that reused the pid.
pub fn signal(store: &Store, id: &str, signal: Signal) -> Result<(), ContainerError> {
    let not_running = || ContainerError::NotRunning(id.to_string());
    let record = store.container(id)?;
    let pid = record
        .pid
        .filter(|_| record.status() == ContainerState::Running)
        .ok_or_else(not_running)?;
    let pid = i32::try_from(pid).map_err(|_| not_running())?;
    let pidfd = crate::sys::process::pidfd_open(pid).map_err(|_| not_running())?;
    let again = store.container(id)?;
    if again.pid != record.pid || again.status() != ContainerState::Running {
        return Err(not_running());
    }
    crate::sys::process::pidfd_send_signal(std::os::fd::AsFd::as_fd(&pidfd), signal)
        .map_err(|_| not_running())
}

/// Marks container `id` as stopped by hand (its restart policy leaves it be).
pub fn mark_stopped(store: &Store, id: &str) -> Result<(), ContainerError> {
    store.update_container(id, |record| record.run.manually_stopped = true)?;
    Ok(())
}

/// `docker stop`: the stop signal, then SIGKILL after `timeout`; returns once the container's
/// end is recorded. A container that does not run is left as it is.
pub fn stop(store: &Store, id: &str, timeout: Duration) -> Result<(), ContainerError> {
    let record = find(store, id)?;
    // Between two runs the record says exited for a moment before the supervisor writes
    // "restarting": a live supervisor is stopped too.
    if !record.is_running() && !supervised(&record) {
        return Ok(());
    }
    mark_stopped(store, id)?;
    let stop_signal = stop_signal(store, &record);
    // Restarting: no process to signal, the supervisor sees the mark and gives up.
    let _ = signal(store, id, stop_signal);
    if wait_stopped(store, id, timeout)? {
        return Ok(());
    }
    let _ = signal(store, id, Signal::SIGKILL);
    if wait_stopped(store, id, KILLED_GRACE)? {
        return Ok(());
    }
    Err(ContainerError::Conflict(format!(
        "container {id} did not stop after SIGKILL"
    )))
}

/// Whether the process that runs `record`'s container (its supervisor) is alive.
fn supervised(record: &ContainerRecord) -> bool {
    record.run.supervisor.is_some_and(RunOwner::is_alive)
}

/// Waits up to `timeout` until container `id` no longer runs and its supervisor, which a manual
/// stop makes give up its restart policy, is gone; whether that happened.
pub fn wait_stopped(store: &Store, id: &str, timeout: Duration) -> Result<bool, ContainerError> {
    let deadline = Instant::now() + timeout;
    loop {
        match store.container(id) {
            Ok(record) if record.is_running() || supervised(&record) => {}
            Ok(_) | Err(StoreError::NoContainer(_)) => return Ok(true),
            Err(err) => return Err(err.into()),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL);
    }
}

/// `docker wait`: blocks until container `id` stops and returns its exit code.
pub fn wait(store: &Store, id: &str) -> Result<i32, ContainerError> {
    loop {
        let record = find(store, id)?;
        // A created container is waited for until it has run and stopped, as docker does.
        if record.status() == ContainerState::Exited {
            return Ok(record.run.exit_code.unwrap_or(0));
        }
        std::thread::sleep(POLL);
    }
}

/// `docker rm [-f]`: refuses a running container without `force` (docker's message); with it,
/// kills it first. Then waits for its supervisor to go, and deletes its directory.
pub fn remove(store: &Store, id: &str, force: bool) -> Result<(), ContainerError> {
    let record = find(store, id)?;
    if record.is_running() {
        if !force {
            return Err(ContainerError::Conflict(format!(
                "You cannot remove a running container {id}. Stop the container before \
                 attempting removal or force remove"
            )));
        }
        mark_stopped(store, id)?;
        let _ = signal(store, id, Signal::SIGKILL);
        if !wait_stopped(store, id, KILLED_GRACE)? {
            return Err(ContainerError::Conflict(format!(
                "could not kill running container {id}, cannot remove"
            )));
        }
    }
    // The supervisor writes the record once more as it ends (and may be about to restart);
    // it sees the mark and exits.
    if let Some(owner) = find(store, id)?.run.supervisor {
        let deadline = Instant::now() + KILLED_GRACE;
        while owner.is_alive() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    }
    Ok(store.remove_container(id)?)
}

/// `docker rename`: docker's messages for a name in use or an invalid one.
pub fn rename(store: &Store, id: &str, name: &str) -> Result<(), ContainerError> {
    let name = name.strip_prefix('/').unwrap_or(name).to_string();
    if !crate::store::valid_container_name(&name) {
        return Err(ContainerError::Conflict(format!(
            "Error when allocating new name: Invalid container name (/{name}), only \
             [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    match store.update_container(id, |record| record.name = name.clone()) {
        Ok(_) => Ok(()),
        Err(err @ StoreError::ContainerNameInUse { .. }) => Err(ContainerError::Conflict(format!(
            "Error when allocating new name: {err}"
        ))),
        Err(err) => Err(err.into()),
    }
}

/// The container's json-file log (`<id>-json.log` in its directory, as docker names it).
pub fn log_path(store: &Store, id: &str) -> Result<PathBuf, ContainerError> {
    Ok(store.container_dir(id)?.join(format!("{id}-json.log")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_as_docker() {
        assert_eq!("no".parse(), Ok(RestartPolicy::No));
        assert_eq!("always".parse(), Ok(RestartPolicy::Always));
        assert_eq!("unless-stopped".parse(), Ok(RestartPolicy::UnlessStopped));
        assert_eq!("on-failure".parse(), Ok(RestartPolicy::OnFailure(0)));
        assert_eq!("on-failure:2".parse(), Ok(RestartPolicy::OnFailure(2)));
        let err = |text: &str| text.parse::<RestartPolicy>().unwrap_err().to_string();
        assert_eq!(err("bogus"), "invalid restart policy 'bogus'");
        assert_eq!(
            err("on-failure:x"),
            "maximum retry count must be an integer"
        );
        assert_eq!(
            err("always:3"),
            "maximum retry count cannot be used with restart policy 'always'"
        );
        assert_eq!(RestartPolicy::OnFailure(2).to_string(), "on-failure:2");
    }

    #[test]
    fn restarts_follow_the_policy_and_back_off() {
        assert!(!RestartPolicy::No.should_restart(1, 0));
        assert!(RestartPolicy::Always.should_restart(0, 100));
        assert!(RestartPolicy::OnFailure(2).should_restart(1, 1));
        assert!(!RestartPolicy::OnFailure(2).should_restart(1, 2));
        assert!(!RestartPolicy::OnFailure(0).should_restart(0, 0));
        let mut backoff = Backoff::default();
        let short = Duration::from_secs(1);
        assert_eq!(backoff.next(short), Duration::from_millis(100));
        assert_eq!(backoff.next(short), Duration::from_millis(200));
        assert_eq!(backoff.next(short), Duration::from_millis(400));
        assert_eq!(
            backoff.next(Duration::from_secs(11)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn signals_parse_as_docker() {
        assert_eq!(parse_signal("KILL").ok(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("sigterm").ok(), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("9").ok(), Some(Signal::SIGKILL));
        assert_eq!(
            parse_signal("BOGUS").unwrap_err().to_string(),
            "Invalid signal: BOGUS"
        );
    }
}
