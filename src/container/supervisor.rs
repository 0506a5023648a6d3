//! The supervisor of a detached container, as conmon or containerd's shim: one process per
//! container, started by `kiln run -d`, `kiln start` and `kiln restart` as kiln's own binary
//! (a hidden subcommand) in a session of its own, so the container outlives the command that
//! started it. It starts the sandbox (whose pid 1 is its child and gets SIGKILL when the
//! supervisor dies: `runtime::child`), writes the container's output into its json-file log,
//! waits, records the exit code, the finish time and the state, and runs the restart policy.
//! It reports "started" (or why the start failed) to the command that launched it over its
//! standard output, then has no further contact with it.

use super::lifecycle::{self, Backoff};
use super::logs::{LogWriter, Stream};
use super::{Container, ContainerError, RunOptions};
use crate::runtime::Stdio;
use crate::runtime::tty::DEFAULT_WINDOW_SIZE;
use crate::store::{ContainerRecord, ContainerState, RunOwner, Store};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio as ProcessStdio};
use std::time::{Duration, Instant};

/// The supervisor's lock beside the record: held while it lives, so that two starts of one
/// container cannot run two supervisors.
const SUPERVISOR_LOCK: &str = "supervisor.lock";
/// The most bytes of a report read.
const MAX_REPORT: u64 = 64 * 1024;
/// How often a restart's wait looks for a manual stop.
const POLL: Duration = Duration::from_millis(50);

/// What the supervisor tells the command that launched it, as one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    /// The container's process runs.
    Started,
    /// It could not be started: the message and docker's exit code (126/127 for a command
    /// that cannot be executed, 125 otherwise).
    Failed {
        /// Why.
        message: String,
        /// The exit code `docker run -d`/`docker start` gives.
        exit_code: i32,
    },
}

/// Starts the supervisor `command` (kiln's binary with the hidden subcommand's arguments) and
/// returns once it reported the container started; its failure to start the container is
/// [`ContainerError::StartFailed`]. `stdin` becomes the container's standard input
/// (`kiln start -i`); without it the container reads /dev/null.
pub fn launch(mut command: Command, stdin: Option<OwnedFd>) -> Result<(), ContainerError> {
    let (read, write) = std::io::pipe().map_err(|source| ContainerError::Io {
        action: "create a pipe for",
        path: "the supervisor".into(),
        source,
    })?;
    command
        .stdin(stdin.map_or_else(ProcessStdio::null, ProcessStdio::from))
        .stdout(write)
        .stderr(ProcessStdio::null());
    let child = command.spawn().map_err(|source| ContainerError::Io {
        action: "start the supervisor",
        path: command.get_program().into(),
        source,
    })?;
    // The write end lives on in the child only: its death ends the read below.
    drop(command);
    let mut line = String::new();
    let read = BufReader::new(read).take(MAX_REPORT).read_line(&mut line);
    // Not waited for: the supervisor outlives this command (its zombie, if this command lives
    // on, is reaped when it exits).
    drop(child);
    let report = match read {
        Ok(_) => serde_json::from_str::<Report>(line.trim_end()).ok(),
        Err(_) => None,
    };
    match report {
        Some(Report::Started) => Ok(()),
        Some(Report::Failed { message, exit_code }) => {
            Err(ContainerError::StartFailed { message, exit_code })
        }
        None => Err(ContainerError::StartFailed {
            message: "the container's supervisor ended without starting it".to_string(),
            exit_code: 125,
        }),
    }
}

/// The supervisor's work (the hidden subcommand's body): runs container `id` until it stops
/// for good, calling `report` once with the first start's outcome. `stdin` is given to the
/// first start only (`kiln start -i`).
pub fn supervise(
    store: &Store,
    id: &str,
    stdin: Option<OwnedFd>,
    report: impl FnOnce(&Report),
) -> Result<(), ContainerError> {
    // Its own session: the terminal of the command that started it, and that command's end,
    // do not reach it.
    let _ = nix::unistd::setsid();
    // As a daemon: the directory it was started in may go (paths it uses are absolute).
    let _ = std::env::set_current_dir("/");
    let mut report = Some(report);
    let mut tell = |outcome: Report| {
        if let Some(report) = report.take() {
            report(&outcome);
        }
    };
    let result = supervise_inner(store, id, stdin, &mut tell);
    if let Err(err) = &result {
        tell(Report::Failed {
            message: crate::error::Chain(err).to_string(),
            exit_code: err.exit_code(),
        });
    }
    result
}

fn supervise_inner(
    store: &Store,
    id: &str,
    mut stdin: Option<OwnedFd>,
    tell: &mut dyn FnMut(Report),
) -> Result<(), ContainerError> {
    let dir = store.container_dir(id)?;
    let lock_path = dir.join(SUPERVISOR_LOCK);
    let lock = {
        use std::os::unix::fs::OpenOptionsExt as _;
        File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
    }
    .map_err(|source| ContainerError::Io {
        action: "create",
        path: lock_path.clone(),
        source,
    })?;
    if lock.try_lock().is_err() {
        return Err(ContainerError::Conflict(format!(
            "container {id} is already running"
        )));
    }
    let record = store.container(id)?;
    if record.is_running() {
        return Err(ContainerError::Conflict(format!(
            "container {id} is already running"
        )));
    }
    let options = lifecycle::read_options(store, &record)?;
    let me = RunOwner::this_process();
    let record = store.update_container(id, |r| {
        r.run.manually_stopped = false;
        r.run.supervisor = me;
    })?;
    let log = LogWriter::open(&lifecycle::log_path(store, id)?, options.log).map_err(|source| {
        ContainerError::Io {
            action: "open the log",
            path: dir.clone(),
            source,
        }
    })?;
    let mut backoff = Backoff::default();
    let mut first = true;
    let mut record = record;
    loop {
        let started = Instant::now();
        let code = match run_once(store, &record, &options, &log, stdin.take(), tell) {
            Ok(code) => code,
            Err(err) => {
                let message = crate::error::Chain(&err).to_string();
                let exit_code = err.exit_code();
                // docker leaves a container whose first start failed "created", with the error.
                let state = if first {
                    ContainerState::Created
                } else {
                    ContainerState::Exited
                };
                let _ = store.update_container(id, |r| {
                    r.run.state = state;
                    r.pid = None;
                    r.run.exit_code = Some(exit_code);
                    r.run.error = message.clone();
                    r.run.finished_at = Some(crate::oci::timestamp::now_rfc3339());
                });
                return Err(err);
            }
        };
        first = false;
        // The record as others left it: `stop`, `kill` and `rm -f` mark it.
        let Ok(now) = store.container(id) else {
            return Ok(());
        };
        if options.remove
            || now.run.manually_stopped
            || !options.restart.should_restart(code, now.run.restart_count)
        {
            return Ok(());
        }
        let delay = backoff.next(started.elapsed());
        store.update_container(id, |r| r.run.state = ContainerState::Restarting)?;
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline {
            std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
            if store.container(id).map_or(true, |r| r.run.manually_stopped) {
                let _ = store.update_container(id, |r| r.run.state = ContainerState::Exited);
                return Ok(());
            }
        }
        record = store.update_container(id, |r| r.run.restart_count += 1)?;
    }
}

/// One run of the container: start, report, log, wait, record. Returns its exit code.
fn run_once(
    store: &Store,
    record: &ContainerRecord,
    options: &RunOptions,
    log: &LogWriter,
    stdin: Option<OwnedFd>,
    tell: &mut dyn FnMut(Report),
) -> Result<i32, ContainerError> {
    let mut container = Container::load(store, record, options)?;
    let pipe = || {
        std::io::pipe().map_err(|source| ContainerError::Io {
            action: "create a pipe for",
            path: "the container's output".into(),
            source,
        })
    };
    let mut pumps = Vec::new();
    let stdio = if options.tty {
        Stdio::Terminal {
            size: Some(DEFAULT_WINDOW_SIZE),
        }
    } else {
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        for (read, stream) in [(out_read, Stream::Stdout), (err_read, Stream::Stderr)] {
            let log = log.clone();
            pumps.push(std::thread::spawn(move || log.pump(read, stream)));
        }
        Stdio::Streams {
            stdin,
            stdout: out_write.into(),
            stderr: err_write.into(),
        }
    };
    let mut sandbox = container.start(stdio)?;
    tell(Report::Started);
    if let Some(master) = sandbox.take_terminal() {
        let log = log.clone();
        pumps.push(std::thread::spawn(move || {
            log.pump(File::from(master), Stream::Stdout)
        }));
    }
    let outcome = sandbox.wait();
    for pump in pumps {
        // A log that cannot be written loses output, not the container's record.
        let _ = pump.join();
    }
    let code = match outcome {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            drop(container);
            return Err(err.into());
        }
    };
    container.set_exit_code(code);
    let ending = container.finish()?;
    Ok(if ending.oom_killed.is_some() {
        crate::store::CRASHED_EXIT_CODE
    } else {
        code
    })
}
