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
}

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

    /// Whether the process still runs.
    pub fn is_alive(self) -> bool {
        process_start_time(self.pid) == Some(self.start)
    }
}

impl ContainerRecord {
    /// Whether the recorded process is alive. (A reused pid reads as running: the safe side,
    /// since running containers' images cannot be deleted.)
    pub fn is_running(&self) -> bool {
        self.pid.is_some_and(process_alive)
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
        if !record.name.is_empty() {
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
        }
        crate::sys::atomic::create_private_dir_all(&dir)?;
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
    pub fn remove_abandoned_containers(&self) -> usize {
        let Ok(records) = self.containers() else {
            return 0;
        };
        records
            .iter()
            .filter(|record| record.remove_with.is_some_and(|owner| !owner.is_alive()))
            .filter(|record| self.remove_container(&record.id).is_ok())
            .count()
    }

    /// Deletes container `id`'s directory (record and all). Whoever calls this has stopped the
    /// container and unmounted its filesystem.
    pub fn remove_container(&self, id: &str) -> Result<(), StoreError> {
        let dir = self.container_dir(id)?;
        if !dir.exists() {
            return Err(StoreError::NoContainer(id.to_string()));
        }
        Ok(remove_tree(&dir)?)
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
