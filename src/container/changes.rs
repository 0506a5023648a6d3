//! A container's filesystem changes, as docker's `diff`, `commit` and `export` see them.
//!
//! A container's changes are its overlay upper directory (`containers/<id>/upper`), read with the
//! layer code's rules ([`crate::layer::upper_entries`], [`crate::layer::write_layer_excluding`]):
//! whiteouts are 0/0 character devices, opaque directories carry the overlay opaque xattr. What
//! lies below is the image's snapshots, read as a union ([`UnionFs`]) without mounting anything.
//! This works the same for a running container (its upper directory is read while it may
//! write, see [`Pause`]) and a stopped one.
//!
//! Mount points kiln made in the upper directory are not the container's changes (docker keeps
//! them in a separate "init" layer): the `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`
//! stubs (empty regular files made where the image has none), and `/dev`, `/proc`, `/sys` where
//! the image lacks them. They are left out of `diff` and of the committed layer; `export`
//! writes the whole root, as docker's export does.
//!
//! A container run with `--isolation=chroot` works in a copy of the image
//! (`containers/<id>/chroot`, see [`super::chroot`]) and has no upper directory while it runs:
//! these commands refuse it then, naming the mode. When it ends, kiln writes its changes into
//! its upper directory ([`super::Container`]'s cleanup), and from then on it is read as any
//! other (as an unprivileged user its new files are recorded as kiln's user's, not mapped to
//! the container's user as a RUN step's layer maps them).
//! Volumes (`-v`) are bind mounts, never in the upper directory, and so not in a diff (as in
//! docker).

use super::{MAX_LAYER_BYTES, ensure_snapshots};
use crate::archive::{self, ArchiveError};
use crate::layer::union::{Found, UnionError, UnionFs};
use crate::layer::{LayerError, UpperEntry, UpperKind, upper_entries, write_layer_excluding};
use crate::oci::timestamp::now_rfc3339;
use crate::store::{
    ContainerRecord, ImageName, LayerInfo, Store, StoreError, StoredImage, descriptor,
};
use crate::sys::FsError;
use oci_spec::image::MediaType;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The `/etc` files kiln bind-mounts into every container.
const ETC_STUBS: [&str; 3] = ["etc/hosts", "etc/hostname", "etc/resolv.conf"];
/// The kernel file systems' mount points the sandbox makes when the image lacks them.
const KERNEL_STUBS: [&str; 3] = ["dev", "proc", "sys"];

/// Why a container's filesystem could not be read, committed or copied.
#[derive(Debug, thiserror::Error)]
pub enum ContainerFsError {
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The image's layers could not be unpacked, or a change could not be applied.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The container's snapshots or upper directory could not be read.
    #[error(transparent)]
    Container(#[from] super::ContainerError),
    /// The upper directory could not be read or written as a layer.
    #[error("reading the container's changes")]
    Layer(#[source] LayerError),
    /// The image's layers could not be read as a union.
    #[error("reading the container's image")]
    Union(#[source] UnionError),
    /// The container ran with `--isolation=chroot`.
    #[error(
        "container {0} runs with --isolation=chroot: its changes are in a copy of the image \
         until it ends (then kiln keeps them as any container's), so diff, commit, cp and \
         export read a running container only with the sandbox isolation"
    )]
    Chroot(String),
    /// A file operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Something else about the operation the user asked for.
    #[error("{0}")]
    Invalid(String),
}

/// A container's filesystem: its upper and work directories over the image's snapshots.
#[derive(Debug, Clone)]
pub struct ContainerFs {
    /// The container's record.
    pub record: ContainerRecord,
    /// The image it runs.
    pub image: StoredImage,
    /// Its overlay upper directory.
    pub upper: PathBuf,
    /// Its overlay work directory.
    pub work: PathBuf,
    /// The image's snapshot directories, TOP-MOST FIRST.
    pub lowers: Vec<PathBuf>,
}

impl ContainerFs {
    /// The filesystem of container `record` (its image's missing snapshots are unpacked). Hold
    /// a lease while using it if the container may be removed meanwhile.
    pub fn of(store: &Store, record: &ContainerRecord) -> Result<ContainerFs, ContainerFsError> {
        let dir = store.container_dir(&record.id)?;
        if record.is_running() && dir.join("chroot").exists() {
            return Err(ContainerFsError::Chroot(record.id.clone()));
        }
        let image = store.resolve(&record.image.to_string())?;
        let lowers = ensure_snapshots(store, &image)?;
        Ok(ContainerFs {
            record: record.clone(),
            image,
            upper: dir.join("upper"),
            work: dir.join("work"),
            lowers,
        })
    }

    /// The image's layers as a union (what lies below the upper directory).
    fn below(&self) -> Result<UnionFs, ContainerFsError> {
        UnionFs::new(self.lowers.clone()).map_err(ContainerFsError::Union)
    }

    /// The upper directory's entries, or none when the container never ran far enough to
    /// have one.
    fn entries(&self) -> Result<Vec<UpperEntry>, ContainerFsError> {
        if !self.upper.is_dir() {
            return Ok(Vec::new());
        }
        upper_entries(&self.upper).map_err(ContainerFsError::Layer)
    }

    /// The mount points kiln made in the upper directory (see the module's documentation),
    /// relative to it.
    pub fn mount_stubs(&self) -> Result<HashSet<PathBuf>, ContainerFsError> {
        let below = self.below()?;
        let entries = self.entries()?;
        stubs(&entries, &below)
    }
}

fn stubs(entries: &[UpperEntry], below: &UnionFs) -> Result<HashSet<PathBuf>, ContainerFsError> {
    let mut found = HashSet::new();
    for entry in entries {
        let Some(name) = entry.path.to_str() else {
            continue;
        };
        let etc_stub =
            ETC_STUBS.contains(&name) && entry.kind == UpperKind::File && entry.size == 0;
        let kernel_stub =
            KERNEL_STUBS.contains(&name) && matches!(entry.kind, UpperKind::Dir { .. });
        if (etc_stub || kernel_stub) && matches!(lookup(below, &entry.path)?, Found::Missing) {
            found.insert(entry.path.clone());
        }
    }
    Ok(found)
}

/// `path` (relative, real directories only) in the union, without following a symlink.
fn lookup(below: &UnionFs, path: &Path) -> Result<Found, ContainerFsError> {
    let components: Vec<OsString> = path.iter().map(|c| c.to_os_string()).collect();
    below.walk(&components).map_err(ContainerFsError::Union)
}

/// One line of `docker diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The absolute path in the container.
    pub path: String,
}

/// Docker's change kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// `A`: added.
    Added,
    /// `C`: changed (a file replaced, a directory whose entries or metadata changed).
    Changed,
    /// `D`: deleted.
    Deleted,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        };
        write!(f, "{kind} {}", self.path)
    }
}

/// The container's changes as `docker diff` lists them, sorted by path: an entry of the upper
/// directory is `A` when nothing of its path is below, else `C`; a whiteout is `D`; an opaque
/// directory is `C` with a `D` for each name below it that it hides; a directory that is only
/// there because something under it changed is `C` when its mode or owner changed or something
/// under it is listed (each listed path's directories are listed, as docker does).
pub fn diff(fs: &ContainerFs) -> Result<Vec<Change>, ContainerFsError> {
    let below = fs.below()?;
    let entries = fs.entries()?;
    let stubs = stubs(&entries, &below)?;
    let upper_names: HashSet<&Path> = entries.iter().map(|e| e.path.as_path()).collect();
    let mut changes: BTreeMap<PathBuf, ChangeKind> = BTreeMap::new();
    for entry in &entries {
        if entry.path.ancestors().any(|a| stubs.contains(a)) {
            continue;
        }
        let found = lookup(&below, &entry.path)?;
        match (entry.kind, found) {
            (UpperKind::Whiteout, Found::Missing) => {}
            (UpperKind::Whiteout, _) => {
                changes.insert(entry.path.clone(), ChangeKind::Deleted);
            }
            (UpperKind::Dir { opaque }, Found::Dir(merged, meta)) => {
                if opaque {
                    changes.insert(entry.path.clone(), ChangeKind::Changed);
                    for child in below.children(&merged).map_err(ContainerFsError::Union)? {
                        let hidden = entry.path.join(&child.name);
                        if !upper_names.contains(hidden.as_path()) {
                            changes.insert(hidden, ChangeKind::Deleted);
                        }
                    }
                } else if (meta.mode, meta.uid, meta.gid) != (entry.mode, entry.uid, entry.gid) {
                    changes.insert(entry.path.clone(), ChangeKind::Changed);
                }
            }
            (_, Found::Missing) => {
                changes.insert(entry.path.clone(), ChangeKind::Added);
            }
            (_, _) => {
                changes.insert(entry.path.clone(), ChangeKind::Changed);
            }
        }
    }
    // Each listed path's directories: added ones are listed already; the others changed.
    let listed: Vec<PathBuf> = changes.keys().cloned().collect();
    for path in listed {
        for ancestor in path.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            changes
                .entry(ancestor.to_path_buf())
                .or_insert(ChangeKind::Changed);
        }
    }
    Ok(changes
        .into_iter()
        .map(|(path, kind)| Change {
            kind,
            path: format!("/{}", path.to_string_lossy()),
        })
        .collect())
}

/// `docker commit`'s options.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `-a`: the author.
    pub author: Option<String>,
    /// `-m`: the commit message (the history entry's and the config's comment).
    pub message: Option<String>,
    /// `-c`: Dockerfile instructions applied to the config.
    pub changes: Vec<String>,
    /// `-p`: freeze the container while its changes are read.
    pub pause: bool,
    /// `REPOSITORY[:TAG]` to tag the new image with.
    pub reference: Option<String>,
}

/// Makes a new image of the container's image plus one layer of its changes (mount stubs left
/// out), with docker's commit config: the image's config with the container's command, user,
/// working directory and environment, then `options.changes`, and a history entry with the
/// author and message. The layer is stored uncompressed (its blob digest is its diff ID), as
/// `kiln import` stores one; the next run unpacks its snapshot.
pub fn commit(
    store: &Store,
    fs: &ContainerFs,
    options: &CommitOptions,
) -> Result<StoredImage, ContainerFsError> {
    // Everything the user wrote is checked before anything is stored.
    let name = options
        .reference
        .as_deref()
        .map(ImageName::parse)
        .transpose()
        .map_err(StoreError::from)?;
    let base = base_config(&fs.image)?;
    let config = archive::apply_changes(container_config(fs, base), &options.changes)?;
    let _lease = store.lease()?;
    let layer = {
        let _paused = if options.pause {
            Pause::container(&fs.record)?
        } else {
            None
        };
        store_layer(store, fs)?
    };
    let document = image_config(fs, &layer, config, options)?;
    let bytes = serde_json::to_vec(&document).map_err(|err| {
        ContainerFsError::Invalid(format!("cannot write the image config: {err}"))
    })?;
    let mut layers: Vec<_> = fs
        .image
        .layers
        .iter()
        .map(|l| descriptor(l.media_type.clone(), &l.digest, l.size))
        .collect();
    layers.push(descriptor(
        layer.media_type.clone(),
        &layer.digest,
        layer.size,
    ));
    Ok(store.write_image_named(&bytes, &layers, name.as_ref())?)
}

/// The image's config document as stored (docker's extensions kept).
fn base_config(image: &StoredImage) -> Result<Map<String, Value>, ContainerFsError> {
    match serde_json::from_slice(&image.config_bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ContainerFsError::Invalid(format!(
            "the config of image {} is not a JSON object",
            image.id
        ))),
    }
}

/// The `config` object docker's commit starts from: the image's, with what the container ran
/// with (docker keeps the container's `Config`: its command, user, working directory and the
/// environment the image and `-e` gave). The variables kiln adds to every process (`PATH`'s
/// default, `HOSTNAME`, `HOME`, `TERM`) are left out unless the image set them, as docker's
/// container config holds only the image's and the user's.
fn container_config(fs: &ContainerFs, document: Map<String, Value>) -> Map<String, Value> {
    let mut config = match document.get("config") {
        Some(Value::Object(config)) => config.clone(),
        _ => Map::new(),
    };
    let record = &fs.record.config;
    let strings = |value: Option<&Value>| -> Vec<String> {
        value
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    if record.args.is_empty() {
        // A record from before containers kept their config: the image's config as it is.
        return config;
    }
    let entrypoint = strings(config.get("Entrypoint"));
    let cmd = strings(config.get("Cmd"));
    let image_command: Vec<String> = entrypoint.iter().chain(&cmd).cloned().collect();
    if record.args != image_command {
        if !entrypoint.is_empty() && record.args.starts_with(&entrypoint) {
            config.insert(
                "Cmd".into(),
                json!(record.args.get(entrypoint.len()..).unwrap_or_default()),
            );
        } else {
            config.insert("Entrypoint".into(), Value::Null);
            config.insert("Cmd".into(), json!(record.args));
        }
    }
    let image_env = strings(config.get("Env"));
    let image_has = |key: &str| {
        image_env
            .iter()
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
    };
    let added_by_kiln = |entry: &String| {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        let kiln_default = match key {
            "PATH" => entry.as_str() == format!("PATH={}", super::DEFAULT_PATH),
            "HOSTNAME" | "HOME" => true,
            "TERM" => record.tty && entry == "TERM=xterm",
            _ => false,
        };
        kiln_default && !image_has(key)
    };
    let env: Vec<&String> = record.env.iter().filter(|e| !added_by_kiln(e)).collect();
    if !env.is_empty() || config.contains_key("Env") {
        config.insert("Env".into(), json!(env));
    }
    if !record.user.is_empty() {
        config.insert("User".into(), json!(record.user));
    }
    let image_workdir = config
        .get("WorkingDir")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if record.working_dir != "/" || !image_workdir.is_empty() {
        config.insert("WorkingDir".into(), json!(record.working_dir));
    }
    config
}

/// Writes the container's changes (without its mount stubs) as an uncompressed layer blob.
fn store_layer(store: &Store, fs: &ContainerFs) -> Result<LayerInfo, ContainerFsError> {
    let stubs = fs.mount_stubs()?;
    let empty;
    let upper = if fs.upper.is_dir() {
        fs.upper.as_path()
    } else {
        // A container that never started: an empty layer, as docker commits one.
        empty = tempfile_dir(store)?;
        empty.as_path()
    };
    let mut writer = store.blobs().writer().map_err(StoreError::from)?;
    let written = write_layer_excluding(upper, &mut writer, &stubs);
    if upper != fs.upper.as_path() {
        let _ = std::fs::remove_dir(upper);
    }
    let written = written.map_err(ContainerFsError::Layer)?;
    let blob = writer
        .commit(Some(&written.diff_id))
        .map_err(StoreError::from)?;
    Ok(LayerInfo {
        digest: blob.digest,
        size: blob.size,
        media_type: MediaType::ImageLayer,
        diff_id: written.diff_id,
    })
}

fn tempfile_dir(store: &Store) -> Result<PathBuf, ContainerFsError> {
    let path = store.staging().new_path("commit");
    std::fs::create_dir(&path).map_err(|e| FsError::new("create directory", &path, e))?;
    Ok(path)
}

/// The new image's config document: the image's, with `config`, the layer's diff ID, and a
/// history entry (docker's: `created_by` the container's command, `comment` the message).
fn image_config(
    fs: &ContainerFs,
    layer: &LayerInfo,
    config: Map<String, Value>,
    options: &CommitOptions,
) -> Result<Value, ContainerFsError> {
    let mut document = base_config(&fs.image)?;
    let created = now_rfc3339();
    document.insert("created".into(), json!(created));
    document.insert("config".into(), Value::Object(config));
    document.insert("container".into(), json!(fs.record.id));
    match &options.author {
        Some(author) => document.insert("author".into(), json!(author)),
        None => document.remove("author"),
    };
    match &options.message {
        Some(message) => document.insert("comment".into(), json!(message)),
        None => document.remove("comment"),
    };
    let mut diff_ids = document
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    diff_ids.push(json!(layer.diff_id.to_string()));
    document.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
    let mut history = document
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut entry = Map::new();
    entry.insert("created".into(), json!(created));
    entry.insert("created_by".into(), json!(fs.record.config.args.join(" ")));
    if let Some(author) = &options.author {
        entry.insert("author".into(), json!(author));
    }
    if let Some(message) = &options.message {
        entry.insert("comment".into(), json!(message));
    }
    history.push(Value::Object(entry));
    document.insert("history".into(), Value::Array(history));
    Ok(Value::Object(document))
}

/// Writes the container's whole filesystem as one tar (docker's `export`): the image's layers
/// and the container's upper directory flattened (whiteouts applied) into the store's staging
/// area, then written as a tar in a fixed order. Volumes are not part of it (as in docker).
pub fn export(
    store: &Store,
    fs: &ContainerFs,
    out: impl Write,
) -> Result<archive::Exported, ContainerFsError> {
    let _lease = store.lease()?;
    let dir = tempfile_dir(store)?;
    let result = (|| {
        let mut layers = Vec::with_capacity(fs.lowers.len() + 1);
        if fs.upper.is_dir() {
            layers.push(fs.upper.clone());
        }
        layers.extend(fs.lowers.iter().cloned());
        let _paused = Pause::container(&fs.record)?;
        crate::layer::tree::flatten(&layers, &dir, MAX_LAYER_BYTES)
            .map_err(ContainerFsError::Layer)?;
        drop(_paused);
        let written = crate::layer::write_layer(&dir, out).map_err(ContainerFsError::Layer)?;
        Ok(archive::Exported {
            size: written.size,
            skipped_devices: 0,
        })
    })();
    let _ = crate::sys::atomic::remove_tree(&dir);
    result
}

/// A running container frozen while its files are read, thawed when dropped (docker's `commit
/// --pause`, and `cp`, which pauses since CVE-2018-15664). With a cgroup of its own
/// (`kiln/<id>`, made for resource limits) the cgroup v2 freezer freezes it; otherwise every
/// process of its pid namespace is stopped with SIGSTOP (repeated until no new one appears)
/// and continued with SIGCONT. A process could see that as a job-control stop; docker's
/// freezer is invisible, which is why the cgroup is preferred.
#[derive(Debug)]
pub struct Pause {
    how: Paused,
}

#[derive(Debug)]
enum Paused {
    Freezer(PathBuf),
    Stopped(Vec<i32>),
}

/// How many passes SIGSTOP makes over the pid namespace before giving up on a process that
/// keeps forking.
const STOP_PASSES: usize = 16;

impl Pause {
    /// Freezes the container when it runs; `None` when it does not.
    pub fn container(record: &ContainerRecord) -> Result<Option<Pause>, ContainerFsError> {
        let Some(pid) = record.pid.filter(|_| record.is_running()) else {
            return Ok(None);
        };
        let Ok(pid) = i32::try_from(pid) else {
            return Ok(None);
        };
        if let Some(cgroup) = own_cgroup(pid, &record.id) {
            let freeze = cgroup.join("cgroup.freeze");
            if std::fs::write(&freeze, "1").is_ok() {
                wait_frozen(&cgroup);
                return Ok(Some(Pause {
                    how: Paused::Freezer(freeze),
                }));
            }
        }
        let namespace = own_namespace(pid, "pid")?;
        let mut stopped: Vec<i32> = Vec::new();
        for _ in 0..STOP_PASSES {
            let mut new = 0;
            for member in namespace_members(&namespace) {
                if !stopped.contains(&member)
                    && nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(member),
                        nix::sys::signal::Signal::SIGSTOP,
                    )
                    .is_ok()
                {
                    stopped.push(member);
                    new += 1;
                }
            }
            if new == 0 {
                break;
            }
        }
        Ok(Some(Pause {
            how: Paused::Stopped(stopped),
        }))
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        match &self.how {
            Paused::Freezer(freeze) => {
                let _ = std::fs::write(freeze, "0");
            }
            Paused::Stopped(pids) => {
                for pid in pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid),
                        nix::sys::signal::Signal::SIGCONT,
                    );
                }
            }
        }
    }
}

/// The link text of `/proc/PID/ns/KIND` of the container's process `pid`, checked to differ
/// from kiln's own: a process in kiln's namespace is no sandbox's (a `--isolation=chroot`
/// container, or a record naming another process), and stopping or entering "its" namespace
/// would stop kiln's host or read the host's files.
pub(crate) fn own_namespace(pid: i32, kind: &str) -> Result<PathBuf, ContainerFsError> {
    let link = format!("/proc/{pid}/ns/{kind}");
    let theirs =
        std::fs::read_link(&link).map_err(|e| FsError::new("read", Path::new(&link), e))?;
    let ours = std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .map_err(|e| FsError::new("read", Path::new("/proc/self/ns"), e))?;
    if theirs == ours {
        return Err(ContainerFsError::Invalid(format!(
            "process {pid} of the container shares kiln's {kind} namespace: it is not a \
             sandbox's, so kiln neither pauses it nor reads its files"
        )));
    }
    Ok(theirs)
}

/// The cgroup v2 directory of `pid` when it is the container's own (`.../kiln/<id>`): never
/// kiln's own cgroup, which freezing would freeze kiln with.
fn own_cgroup(pid: i32, id: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    let suffix = format!("/kiln/{id}");
    path.ends_with(&suffix)
        .then(|| PathBuf::from(format!("/sys/fs/cgroup{path}")))
        .filter(|dir| dir.join("cgroup.freeze").is_file())
}

/// Waits (briefly) until the cgroup reports itself frozen (`frozen 1` in `cgroup.events`).
fn wait_frozen(cgroup: &Path) {
    for _ in 0..100 {
        let events = std::fs::read_to_string(cgroup.join("cgroup.events")).unwrap_or_default();
        if events.lines().any(|l| l == "frozen 1") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The pids whose pid namespace is `namespace` (the link text of `/proc/PID/ns/pid`).
fn namespace_members(namespace: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|link| link == namespace)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_in_kiln_s_own_namespaces_is_never_paused_or_entered() {
        let pid = i32::try_from(std::process::id()).unwrap();
        for kind in ["pid", "mnt"] {
            let err = own_namespace(pid, kind).unwrap_err().to_string();
            assert!(err.contains("shares kiln's"), "{err}");
        }
    }

    #[test]
    fn changes_print_as_docker_diff_lines() {
        let change = Change {
            kind: ChangeKind::Deleted,
            path: "/bin/ls".into(),
        };
        assert_eq!(change.to_string(), "D /bin/ls");
    }
}
