//! Container records: `ROOT/containers/<id>/container.json`, naming the image a container of
//! `kiln run` uses, so that `rmi` refuses to delete it and `prune` keeps it. The directory is the
//! container's own (kiln run keeps its writable layer there).

use super::{Store, StoreError};
use crate::oci::Digest;
use crate::sys::atomic::{
    IoContext as _, process_alive, process_start_time, remove_tree, replace_in,
};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Read as _;
use std::path::PathBuf;

/// The record file inside a container's directory.
const RECORD: &str = "container.json";
/// Records are tiny; the cap keeps a corrupt one from exhausting memory.
const MAX_RECORD_SIZE: u64 = 1 << 20;
/// The lock of one record's read-modify-write, beside it.
const RECORD_LOCK: &str = "record.lock";
/// The store's lock while a container name is checked and taken.
const NAMES_LOCK: &str = "containers.lock";
/// `ROOT/run-owners/<id>`: one empty marker per record that names an owner (`remove_with`).
const OWNERS: &str = "run-owners";

/// What the store knows about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The container's ID, also its directory's name: 1 to 128 of `[A-Za-z0-9_.-]`, starting
    /// with a letter or digit.
    pub id: String,
    /// The image ID (config digest) the container runs.
    pub image: Digest,
    /// The image as the user named it.
    pub image_name: String,
    /// The container's name (`--name`, or one kiln made up as docker does), without docker's
    /// leading `/`; unique among the store's containers. Records written before names existed
    /// have none (`""`); they are found by their id.
    #[serde(default)]
    pub name: String,
    /// What the container's process was started with, as resolved from the image and the
    /// command line (docker's `Config`): `exec` starts its processes with these defaults and
    /// `inspect` shows them.
    #[serde(default)]
    pub config: ContainerConfig,
    /// When the container was created (RFC 3339).
    pub created: String,
    /// The container's init process while it runs (set by `kiln run`); a live pid makes the
    /// container "running" for `rmi` and `df`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `kiln run --rm`: the container goes when its run ends, and this is the kiln process that
    /// runs it. A record whose owner is gone was left by a killed kiln (its processes died with
    /// it, see `runtime::child`): the next kiln to open the store removes it, so it never keeps
    /// its image from `rmi` or `prune`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_with: Option<RunOwner>,
    /// Its life so far: state, times, exit code, restarts, supervisor (flattened into the
    /// record's JSON; absent in records from before containers had a life of their own).
    #[serde(flatten)]
    pub run: RunState,
}

/// What a container's runs have left in its record (see [`ContainerRecord::run`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// Where the container is in its life, as its supervisor last wrote it (see
    /// [`ContainerRecord::status`] for what a reader makes of it). Records written before
    /// states existed read as exited (or running while their pid lives).
    #[serde(default)]
    pub state: ContainerState,
    /// When the process last started (RFC 3339 with nanoseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the process last ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The last run's exit code (128 + the signal when one killed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the last start failed (docker's `State.Error`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Whether the kernel's OOM killer ended the last run.
    #[serde(default)]
    pub oom_killed: bool,
    /// How many times the restart policy restarted the container.
    #[serde(default)]
    pub restart_count: u32,
    /// The process that runs the container (its supervisor, or a foreground `kiln run`): while
    /// the record says running, a dead supervisor means the container died with it (its
    /// processes get SIGKILL when it dies, see `runtime::child`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<RunOwner>,
    /// `kill`, `stop` or `rm -f` ended it: the restart policy leaves it stopped (docker's
    /// `HasBeenManuallyStopped`). A start clears it.
    #[serde(default)]
    pub manually_stopped: bool,
    /// The ports the running process publishes on the host (`-p`, host ports resolved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPortRecord>,
}

/// A published port as `ps` and `inspect` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPortRecord {
    /// The host address listened on (`0.0.0.0` for every one).
    pub host_ip: String,
    /// The host port.
    pub host_port: u16,
    /// The port in the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl std::fmt::Display for PublishedPortRecord {
    /// `docker ps`'s form: `0.0.0.0:18080->8080/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip, self.host_port, self.container_port, self.protocol
        )
    }
}

/// A container's state as docker names it (`State.Status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Made, never started (or its start failed).
    Created,
    /// Its process runs.
    Running,
    /// Its process ended and the restart policy waits to start it again.
    Restarting,
    /// Its process ended.
    #[default]
    Exited,
}

impl ContainerState {
    /// docker's word for it (`created`, `running`, `restarting`, `exited`).
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Restarting => "restarting",
            ContainerState::Exited => "exited",
        }
    }
}

/// What docker's killed shim leaves a container's exit code as (128 + SIGKILL).
pub const CRASHED_EXIT_CODE: i32 = 137;

/// The resolved process settings of a container (see [`ContainerRecord::config`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The command: the ENTRYPOINT and CMD (or their replacements) joined.
    pub args: Vec<String>,
    /// The environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// The working directory (absolute).
    pub working_dir: String,
    /// The user as given (`-u` or the image's `USER`; empty: root).
    pub user: String,
    /// The hostname.
    pub hostname: String,
    /// `-t`.
    pub tty: bool,
}

/// A process, told from a later one with the same pid by its start time (field 22 of
/// `/proc/PID/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOwner {
    /// Its pid.
    pub pid: u32,
    /// Its start time, in clock ticks since boot.
    pub start: u64,
}

impl RunOwner {
    /// This process; `None` when its start time cannot be read (then no record names it as
    /// its owner: one that could not tell a live owner from a dead one would be removed under
    /// a running container).
    pub fn this_process() -> Option<RunOwner> {
        let pid = std::process::id();
        Some(RunOwner {
            pid,
            start: process_start_time(pid)?,
        })
    }

    /// Whether the process still runs: one with its pid and start time exists and is not a
    /// zombie (a killed supervisor stays one until its new parent reaps it, and its
    /// container's processes are gone by then).
    pub fn is_alive(self) -> bool {
        process_start_time(self.pid) == Some(self.start) && !is_zombie(self.pid)
    }
}

/// Whether process `pid` has ended and waits to be reaped (state `Z` or `X` in
/// `/proc/PID/stat`).
fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next())
            .is_some_and(|state| matches!(state, "Z" | "X"))
    })
}

impl ContainerRecord {
    /// Whether the container runs (or waits to restart): its state says so and the process that
    /// runs it is alive. (A record without a supervisor, from a kiln that did not write one,
    /// runs while its pid lives; a reused pid reads as running: the safe side, since running
    /// containers' images cannot be deleted.)
    pub fn is_running(&self) -> bool {
        matches!(
            self.status(),
            ContainerState::Running | ContainerState::Restarting
        )
    }

    /// The state as a reader must take it: a record that says running (or restarting) whose
    /// supervisor is dead is exited, since its processes died with the supervisor.
    pub fn status(&self) -> ContainerState {
        match (self.run.supervisor, self.run.state) {
            (Some(owner), ContainerState::Running | ContainerState::Restarting)
                if !owner.is_alive() =>
            {
                ContainerState::Exited
            }
            (Some(_), state) => state,
            (None, _) if self.pid.is_some_and(process_alive) => ContainerState::Running,
            (None, ContainerState::Running | ContainerState::Restarting) => ContainerState::Exited,
            (None, state) => state,
        }
    }

    /// Whether the record says running but its supervisor died (killed with SIGKILL, say).
    pub fn is_stale(&self) -> bool {
        matches!(
            self.run.state,
            ContainerState::Running | ContainerState::Restarting
        ) && self.status() == ContainerState::Exited
    }

    /// The record as a reader must take it: a stale one (see [`ContainerRecord::is_stale`])
    /// exited with docker's 137, no pid, finished when it was found so.
    pub fn settled(mut self) -> ContainerRecord {
        if self.is_stale() {
            self.run.state = ContainerState::Exited;
            self.pid = None;
            self.run.exit_code = Some(CRASHED_EXIT_CODE);
            if self.run.finished_at.is_none() || self.run.finished_at <= self.run.started_at {
                self.run.finished_at = Some(crate::oci::timestamp::now_rfc3339());
            }
        }
        self
    }
}

/// Whether `name` is a valid container name: docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, at most
/// 128 bytes here (the same rule as ids, which keeps a name safe wherever an id may go).
pub fn valid_container_name(name: &str) -> bool {
    name.len() >= 2 && valid_id(name)
}

/// Whether `id` is safe as a directory name and follows docker's container name rule.
fn valid_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    (1..=128).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Store {
    /// The directory of container `id` (whether or not it exists).
    pub fn container_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        if !valid_id(id) {
            return Err(StoreError::ContainerId(id.to_string()));
        }
        Ok(self.root.join("containers").join(id))
    }

    /// Creates or replaces a container record. Its image must be in the store; the write holds
    /// a lease, so a concurrent prune either ran before (and the image is checked to still be
    /// there) or waits until the record protects the image.
    pub fn put_container(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        let dir = self.container_dir(&record.id)?;
        let _lease = self.lease()?;
        let index = self.index()?;
        if !self.image_ids(&index)?.contains(&record.image) {
            return Err(StoreError::NotFound(record.image.to_string()));
        }
        // Two kilns naming two containers alike at once: one of them sees the other's.
        let _names = self.lock(NAMES_LOCK, true)?;
        self.check_name(record)?;
        crate::sys::atomic::create_private_dir_all(&dir)?;
        self.write_record(&dir, record)
    }

    /// Changes container `id`'s record with `change`, under the record's own lock, so that
    /// concurrent writers (its supervisor, `rename`, `stop`) never lose each other's fields.
    /// Returns the record as written. A record that is gone stays gone.
    pub fn update_container(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord, StoreError> {
        let dir = self.container_dir(id)?;
        let _lock = self.record_lock(&dir)?;
        let mut record = self.container(id)?;
        let before = record.name.clone();
        change(&mut record);
        if !dir.join(RECORD).is_file() {
            return Err(StoreError::NoContainer(id.to_string()));
        }
        // A new name is checked and written under the names lock (see `put_container`).
        let _names = if record.name == before {
            None
        } else {
            let names = self.lock(NAMES_LOCK, true)?;
            self.check_name(&record)?;
            Some(names)
        };
        self.write_record(&dir, &record)?;
        Ok(record)
    }

    /// The exclusive lock of one record's read-modify-write (`containers/<id>/record.lock`).
    fn record_lock(&self, dir: &std::path::Path) -> Result<fs::File, StoreError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = dir.join(RECORD_LOCK);
        let file = fs::OpenOptions::new()
            .mode(0o600)
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => StoreError::NoContainer(
                    dir.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                _ => crate::sys::FsError::new("open lock file", &path, err).into(),
            })?;
        file.lock().fs("lock", &path)?;
        Ok(file)
    }

    /// Refuses an invalid name or one another container has (docker's messages).
    fn check_name(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        if record.name.is_empty() {
            return Ok(());
        }
        if !valid_container_name(&record.name) {
            return Err(StoreError::ContainerName(record.name.clone()));
        }
        if let Some(other) = self
            .containers()?
            .into_iter()
            .find(|other| other.name == record.name && other.id != record.id)
        {
            return Err(StoreError::ContainerNameInUse {
                name: record.name.clone(),
                id: other.id,
            });
        }
        Ok(())
    }

    fn write_record(
        &self,
        dir: &std::path::Path,
        record: &ContainerRecord,
    ) -> Result<(), StoreError> {
        // The marker first: a record naming an owner is always found by the cheap scan of
        // `remove_abandoned_containers`.
        if record.remove_with.is_some() {
            let owners = self.root.join(OWNERS);
            crate::sys::atomic::create_private_dir_all(&owners)?;
            let marker = owners.join(&record.id);
            fs::write(&marker, b"").fs("write", &marker)?;
        }
        let json =
            serde_json::to_vec_pretty(record).map_err(|err| StoreError::ContainerRecord {
                path: dir.join(RECORD),
                source: err.into(),
            })?;
        // Not fsynced: a record only matters while its container can run, and a container
        // does not outlive a power loss (see `replace_in`).
        Ok(replace_in(self.staging(), &dir.join(RECORD), &json)?)
    }

    /// The record of container `id`.
    pub fn container(&self, id: &str) -> Result<ContainerRecord, StoreError> {
        let dir = self.container_dir(id)?;
        if !dir.join(RECORD).is_file() {
            return Err(StoreError::NoContainer(id.to_string()));
        }
        read_record(&dir.join(RECORD))
    }

    /// The container `reference` names, as docker finds one: its full id, its name (a leading
    /// `/` allowed), or a prefix of exactly one container's id.
    pub fn find_container(&self, reference: &str) -> Result<ContainerRecord, StoreError> {
        let records = self.containers()?;
        let name = reference.strip_prefix('/').unwrap_or(reference);
        if let Some(record) = records.iter().find(|r| r.id == reference).or_else(|| {
            records
                .iter()
                .find(|r| !r.name.is_empty() && r.name == name)
        }) {
            return Ok(record.clone());
        }
        let mut matching = records
            .into_iter()
            .filter(|r| !reference.is_empty() && r.id.starts_with(reference));
        match (matching.next(), matching.next()) {
            (Some(record), None) => Ok(record),
            (Some(_), Some(_)) => Err(StoreError::AmbiguousContainer(reference.to_string())),
            _ => Err(StoreError::NoContainer(reference.to_string())),
        }
    }

    /// Every container record, sorted by ID. Directories without a record (a container being
    /// created or removed) are skipped.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        let dir = self.root.join("containers");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(crate::sys::FsError::new("read directory", &dir, err).into()),
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.fs("read directory", &dir)?;
            let path = entry.path().join(RECORD);
            if path.is_file() {
                records.push(read_record(&path)?);
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    /// Removes the containers of `kiln run --rm` whose kiln was killed (their owner is gone),
    /// and returns how many. Best effort: a container that cannot be read or removed now is
    /// left for the next time.
    ///
    /// Every kiln command opens the store, so this reads only the records that name an owner:
    /// each has a marker `ROOT/run-owners/<id>`, written before its record. A store from before
    /// the markers (no `run-owners` directory) is scanned in full once.
    pub fn remove_abandoned_containers(&self) -> usize {
        let owners = self.root.join(OWNERS);
        let ids: Vec<String> = match fs::read_dir(&owners) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let Ok(records) = self.containers() else {
                    return 0;
                };
                if crate::sys::atomic::create_private_dir_all(&owners).is_err() {
                    return 0;
                }
                records
                    .into_iter()
                    .filter(|record| record.remove_with.is_some())
                    .map(|record| record.id)
                    .collect()
            }
            Err(_) => return 0,
        };
        let mut removed = 0;
        for id in ids {
            let Ok(dir) = self.container_dir(&id) else {
                let _ = fs::remove_file(owners.join(&id));
                continue;
            };
            match self.container(&id) {
                Ok(record) => match record.remove_with {
                    Some(owner) if !owner.is_alive() => {
                        if self.remove_container(&id).is_ok() {
                            removed += 1;
                        }
                    }
                    Some(_) => {}
                    None => {
                        let _ = fs::remove_file(owners.join(&id));
                    }
                },
                // Being created (the marker comes first) or already gone.
                Err(_) if !dir.exists() => {
                    let _ = fs::remove_file(owners.join(&id));
                }
                Err(_) => {}
            }
        }
        removed
    }

    /// Deletes container `id`'s directory (record and all). Whoever calls this has stopped the
    /// container and unmounted its filesystem.
    pub fn remove_container(&self, id: &str) -> Result<(), StoreError> {
        let dir = self.container_dir(id)?;
        if !dir.exists() {
            return Err(StoreError::NoContainer(id.to_string()));
        }
        remove_tree(&dir)?;
        let marker = self.root.join(OWNERS).join(id);
        match fs::remove_file(&marker) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(crate::sys::FsError::new("remove", &marker, err).into())
            }
            _ => Ok(()),
        }
    }
}

fn read_record(path: &std::path::Path) -> Result<ContainerRecord, StoreError> {
    let file = fs::File::open(path).fs("open", path)?;
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_SIZE + 1)
        .read_to_end(&mut bytes)
        .fs("read", path)?;
    if bytes.len() as u64 > MAX_RECORD_SIZE {
        return Err(StoreError::ContainerRecord {
            path: path.to_path_buf(),
            source: format!("larger than {MAX_RECORD_SIZE} bytes").into(),
        });
    }
    serde_json::from_slice(&bytes).map_err(|err| StoreError::ContainerRecord {
        path: path.to_path_buf(),
        source: err.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_safe_names() {
        for good in ["a", "abc123", "web_1.prod-2", &"a".repeat(128)] {
            assert!(valid_id(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "-a",
            "_a",
            "a/b",
            "../x",
            "a b",
            &"a".repeat(129),
            "é",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
