//! `kiln exec` and `kiln top` in a container's terms: which container, whether it runs, the
//! process's defaults from the container's record (docker's: the container's environment,
//! working directory and user, `-e`, `-w`, `-u` over them), the user resolved in the
//! container's own `/etc/passwd` as it is now (through `/proc/PID/root`), and the container's
//! processes as the host sees them. Joining the sandbox is `runtime::exec`'s.

use super::{ContainerError, user};
use crate::runtime::exec::ExecSpec;
use crate::runtime::{Network, RootFs, RuntimeError, Sandbox, Spec, Stdio, User};
use crate::store::{ContainerRecord, Store};
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

/// What `docker exec` takes besides the container.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// The command and its arguments (not empty).
    pub args: Vec<String>,
    /// `-e`/`--env-file` entries, `KEY=VALUE`, in order (later ones win); over the container's.
    pub env: Vec<String>,
    /// `-u`: the user, resolved in the container's `/etc/passwd` and `/etc/group`.
    pub user: Option<String>,
    /// `-w`: the working directory (absolute).
    pub workdir: Option<String>,
    /// `-t`: a terminal from the container's devpts.
    pub tty: bool,
    /// `-d`: the process outlives kiln.
    pub detach: bool,
}

/// Why `kiln exec` or `kiln top` failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The container exists but does not run (docker's message).
    #[error("Container {0} is not running")]
    NotRunning(String),
    /// The container runs with `--isolation=chroot`: it has no namespaces to join.
    #[error(
        "container {0} runs with --isolation=chroot: exec and top need the namespaces of a \
         sandbox (--isolation=sandbox), which it has not got"
    )]
    Chroot(String),
    /// `kiln exec C` without a command (docker's wording).
    #[error("no command specified")]
    NoCommand,
    /// No such container, or the store could not be read.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Creating the process failed (the user, the sandbox, an exec failure...).
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// Listing the container's processes failed.
    #[error("reading {}", path.display())]
    Proc {
        /// The `/proc` file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl ExecError {
    /// `docker exec`'s exit code: 126/127 when the command cannot be executed, 1 when the
    /// container does not run or is not found, 126 when the runtime failed (docker reports its runtime's
    /// failures to start an exec'd process with 126).
    pub fn exit_code(&self) -> i32 {
        match self {
            ExecError::Container(err) => match err.exit_code() {
                125 => 126,
                code => code,
            },
            ExecError::NotRunning(_)
            | ExecError::Store(_)
            | ExecError::Chroot(_)
            | ExecError::NoCommand
            | ExecError::Proc { .. } => 1,
        }
    }
}

/// The container named `reference` (id, name or unique id prefix) and its pid 1, when it runs.
pub fn running(store: &Store, reference: &str) -> Result<(ContainerRecord, i32), ExecError> {
    let record = store.find_container(reference)?;
    let dir = store.container_dir(&record.id)?;
    let upper_dir = dir.join("upper");
    // A live pid is not enough: pid 1 may have exited (and wait to be reaped by its kiln run),
    // or its pid may have been taken by another process since.
    match record.pid.and_then(|pid| i32::try_from(pid).ok()) {
        Some(pid) if crate::runtime::exec::is_sandbox_of(pid, &upper_dir) => Ok((record, pid)),
        // `--isolation=chroot`: a process whose root is the copy in the container's directory.
        Some(pid)
            if fs::read_link(format!("/proc/{pid}/root"))
                .is_ok_and(|root| root.starts_with(&dir)) =>
        {
            Err(ExecError::Chroot(record.id.clone()))
        }
        _ => Err(ExecError::NotRunning(record.id.clone())),
    }
}

/// Starts `options.args` in the running container `reference` with `stdio` (with `-t`,
/// [`Stdio::Terminal`]); returns the process once it executed.
pub fn exec(
    store: &Store,
    reference: &str,
    options: &ExecOptions,
    stdio: Stdio,
) -> Result<Sandbox, ExecError> {
    if options.args.is_empty() {
        return Err(ExecError::NoCommand);
    }
    let (record, pid) = running(store, reference)?;
    let spec = exec_spec(store, &record, pid, options)?;
    crate::runtime::exec::exec(&spec, stdio).map_err(|err| match err {
        // The recorded pid is not the container's any more: it ended since the record was read.
        RuntimeError::ExecTarget { .. } => ExecError::NotRunning(record.id.clone()),
        err => ExecError::Container(super::exec_diagnosis::explain(&spec.process, err)),
    })
}

/// The process `exec` starts: the record's defaults with the options over them.
fn exec_spec(
    store: &Store,
    record: &ContainerRecord,
    pid: i32,
    options: &ExecOptions,
) -> Result<ExecSpec, ExecError> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let config = &record.config;
    let user_value = options.user.as_deref().unwrap_or(&config.user);
    let resolved = user::resolve_in_image(std::slice::from_ref(&root), user_value)
        .map_err(ContainerError::from)?;
    let cwd = match &options.workdir {
        Some(dir) if dir.starts_with('/') => dir.clone(),
        Some(dir) => return Err(ContainerError::RelativeWorkdir(dir.clone()).into()),
        None if config.working_dir.starts_with('/') => config.working_dir.clone(),
        None => "/".to_string(),
    };
    let mut env = config.env.clone();
    if options.user.is_some() {
        // The container's HOME is its own user's; another user gets theirs (runc sets HOME
        // from the user's passwd entry when the process has none), unless -e gives one.
        env.retain(|entry| !entry.starts_with("HOME="));
    }
    if options.tty && !env.iter().any(|entry| entry.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    for entry in &options.env {
        set_env(&mut env, entry);
    }
    if !env.iter().any(|entry| entry.starts_with("HOME=")) {
        env.push(format!("HOME={}", resolved.home));
    }
    let process = Spec {
        rootfs: RootFs {
            lower_dirs: vec![root],
            upper: None,
            readonly: true,
        },
        args: options.args.clone(),
        env,
        cwd,
        user: User {
            uid: resolved.uid,
            gid: resolved.gid,
            additional_gids: resolved.process_groups(),
        },
        hostname: config.hostname.clone(),
        network: Network::Host,
        mounts: Vec::new(),
        user_namespace: false,
        cgroup_procs: Vec::new(),
        tty: options.tty,
        no_new_privileges: true,
        init: false,
        privileged: false,
    };
    Ok(ExecSpec {
        pid,
        upper_dir: store.container_dir(&record.id)?.join("upper"),
        cgroup_name: record.id.clone(),
        process,
        detach: options.detach,
    })
}

/// Sets `entry` (`KEY=VALUE`) in `env`, replacing the variable's entry where it is.
fn set_env(env: &mut Vec<String>, entry: &str) {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let wanted = key(entry);
    match env.iter_mut().find(|e| key(e) == wanted) {
        Some(existing) => *existing = entry.to_string(),
        None => env.push(entry.to_string()),
    }
}

/// The most bytes read from one `/proc/PID` file for `top`.
const MAX_STAT: u64 = 64 << 10;

/// One process of a container as `ps -ef` shows it (docker top's default columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRow {
    /// The owner's uid (host ids, as `ps` on the host sees them).
    pub uid: u32,
    /// The host pid.
    pub pid: i32,
    /// The host pid of its parent.
    pub ppid: i32,
    /// CPU time used, in clock ticks (user + system).
    pub cpu_ticks: u64,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
    /// The controlling terminal's device number (`tty_nr`), 0 for none.
    pub tty: u64,
    /// The command line (NUL-separated arguments joined with spaces), or `[comm]` for a kernel
    /// thread or a zombie.
    pub cmd: String,
}

/// The processes of the running container `reference`: those in its pid namespace (the
/// namespace of its pid 1), sorted by pid. kiln's own processes (the `kiln run` that started it)
/// are not in it.
pub fn processes(store: &Store, reference: &str) -> Result<Vec<ProcessRow>, ExecError> {
    let (record, pid) = running(store, reference)?;
    let proc_error = |path: PathBuf| move |source| ExecError::Proc { path, source };
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/pid"));
    let namespace = fs::metadata(&ns_path).map_err(proc_error(ns_path.clone()))?;
    let wanted = (namespace.dev(), namespace.ino());
    let mut rows = Vec::new();
    let entries = fs::read_dir("/proc").map_err(proc_error(PathBuf::from("/proc")))?;
    for entry in entries.flatten() {
        let Some(candidate) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A process that ended meanwhile is skipped.
        let Ok(ns) = fs::metadata(format!("/proc/{candidate}/ns/pid")) else {
            continue;
        };
        if (ns.dev(), ns.ino()) != wanted {
            continue;
        }
        if let Some(row) = process_row(candidate) {
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return Err(ExecError::NotRunning(record.id));
    }
    rows.sort_by_key(|row| row.pid);
    Ok(rows)
}

/// Reads a small `/proc` file, `None` when the process is gone.
fn read_small(path: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(MAX_STAT)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// The row of `pid` from `/proc/PID/{stat,status,cmdline}`.
fn process_row(pid: i32) -> Option<ProcessRow> {
    let stat = String::from_utf8_lossy(&read_small(&format!("/proc/{pid}/stat"))?).into_owned();
    let status = String::from_utf8_lossy(&read_small(&format!("/proc/{pid}/status"))?).into_owned();
    let cmdline = read_small(&format!("/proc/{pid}/cmdline"))?;
    let parsed = parse_stat(&stat)?;
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())?;
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let cmd = if args.is_empty() {
        format!("[{}]", parsed.comm)
    } else {
        args.join(" ")
    };
    Some(ProcessRow {
        uid,
        pid,
        ppid: parsed.ppid,
        cpu_ticks: parsed.cpu_ticks,
        start_ticks: parsed.start_ticks,
        tty: parsed.tty,
        cmd,
    })
}

/// The fields of `/proc/PID/stat` that `top` shows.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    comm: String,
    ppid: i32,
    tty: u64,
    cpu_ticks: u64,
    start_ticks: u64,
}

/// Parses `/proc/PID/stat` (proc(5)); the command name is between the first `(` and the LAST
/// `)`, since it may hold either.
fn parse_stat(stat: &str) -> Option<Stat> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    // Fields from 3 (state) on.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    Some(Stat {
        comm,
        ppid: field(4)?.parse().ok()?,
        tty: field(7)?.parse::<i64>().ok()?.try_into().ok()?,
        cpu_ticks: field(14)?.parse::<u64>().ok()? + field(15)?.parse::<u64>().ok()?,
        start_ticks: field(22)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_odd_names() {
        let stat = "4242 (a) b (c)) S 4200 4242 4242 34816 4242 4194560 100 0 0 0 7 3 0 0 20 0 \
                    1 0 123456 2000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 \
                    0 0 0 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                comm: "a) b (c)".into(),
                ppid: 4200,
                tty: 34816,
                cpu_ticks: 10,
                start_ticks: 123_456,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn exec_exit_codes_follow_docker() {
        assert_eq!(ExecError::NotRunning("x".into()).exit_code(), 1);
        let not_found = RuntimeError::Exec {
            program: "x".into(),
            kind: crate::runtime::ExecErrorKind::NotFoundInPath,
            exit_code: 127,
        };
        assert_eq!(
            ExecError::Container(ContainerError::Runtime(not_found)).exit_code(),
            127
        );
        assert_eq!(
            ExecError::Container(ContainerError::NoCommand).exit_code(),
            126
        );
    }
}
