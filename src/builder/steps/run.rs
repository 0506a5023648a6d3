//! The RUN step: a command in the runtime's sandbox on the image's snapshots, its changes in a
//! [`StagedUpper`], its output as lines.
//!
//! The sandbox is the one `kiln run` uses, set up by the same code
//! ([`crate::container::sandbox_spec`]): the user resolved in the image's own
//! `/etc/passwd` and `/etc/group`, `HOME` added when unset, and BuildKit's `/etc/hosts` and
//! `/etc/resolv.conf` (written into a per-step directory in the store's staging area, bind
//! mounted, never part of the layer). As in BuildKit, the process is pid 1 (no init), may gain
//! privileges (no `no_new_privs`), and reads `/dev/null`. Mount points the sandbox had to create
//! are removed afterwards (see `stubs`).

use super::commit::StagedUpper;
use super::stubs::{MountStubs, StubError};
use crate::builder::LogStream;
use crate::container::chroot::ChrootRoot;
use crate::container::{ContainerError, EtcFiles, MAX_LAYER_BYTES, SandboxSetup, sandbox_spec};
use crate::runtime::{Isolation, Mount, Network, Outcome, RuntimeError, Sandbox, Stdio, UpperDir};
use crate::solver::Cancel;
use crate::store::Store;
use crate::sys::atomic::{FsError, IoContext as _, remove_tree};
use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

/// The longest line handed to the callback, in bytes: a longer one (a progress bar redrawn
/// with `\r`, a minified file on stdout) comes in pieces of this size, so memory stays bounded.
pub const MAX_LINE: usize = 16 * 1024;
/// How many of the last output lines a failure carries.
pub const TAIL_LINES: usize = 10;

/// One RUN step, as the builder resolved it.
#[derive(Debug, Clone)]
pub struct RunStep {
    /// The final argv (a shell-form command is already wrapped in the image's SHELL).
    pub args: Vec<String>,
    /// The final environment, `KEY=VALUE`; `HOME` is added when missing (runc's rule).
    pub env: Vec<String>,
    /// The working directory (absolute; empty means `/`). Created, owned by root, when missing.
    pub cwd: String,
    /// The user as the image config's `User` and `USER` write it: `""` (root), `name`, `uid`,
    /// `name:group`, `uid:gid`..., resolved in the image's own `/etc/passwd` and `/etc/group`.
    pub user: String,
    /// The network: BuildKit's default is a private one (the worker takes it from its
    /// `runtime::NetworkPool`); `host` and `none` as asked.
    pub network: Network,
    /// The hostname (BuildKit uses `buildkitsandbox`).
    pub hostname: String,
    /// Mounts (`RUN --mount`); their missing mount points are removed afterwards.
    pub mounts: Vec<Mount>,
    /// `RUN --security=insecure`: BuildKit's insecure mode (all capabilities, no seccomp; see
    /// `runtime::Spec::privileged`).
    pub insecure: bool,
    /// `--isolation`: the sandbox, or a changed root (`crate::container::chroot`).
    pub isolation: Isolation,
}

/// Why a RUN step failed.
#[derive(Debug, thiserror::Error)]
pub enum RunStepError {
    /// The sandbox could not be set up (the user is not in the image, the `/etc` files...).
    #[error(transparent)]
    Setup(#[from] ContainerError),
    /// The sandbox failed, or the command could not be executed (the runtime's wording:
    /// `exec: "make": executable file not found in $PATH`).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The mount points the sandbox created could not be removed.
    #[error(transparent)]
    Stubs(#[from] StubError),
    /// A file operation in the store's staging area failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The staged upper directory already holds changes.
    #[error(
        "the upper directory {} is not empty: a RUN step needs a fresh StagedUpper",
        .0.display()
    )]
    UsedUpper(PathBuf),
    /// The command's output could not be read.
    #[error("cannot read the command's {}: {source}", stream_name(*.stream))]
    Output {
        /// Which stream.
        stream: LogStream,
        /// Why.
        source: io::Error,
    },
    /// The command exited with a non-zero status (BuildKit's wording).
    #[error("process {command:?} did not complete successfully: exit code: {code}")]
    ExitCode {
        /// The argv, joined with spaces.
        command: String,
        /// The status.
        code: i32,
        /// The last [`TAIL_LINES`] lines of output (both streams, in the order they came).
        tail: Vec<String>,
    },
    /// A signal killed the command.
    #[error("process {command:?} did not complete successfully: killed by signal {signal}")]
    Signaled {
        /// The argv, joined with spaces.
        command: String,
        /// The signal's number.
        signal: i32,
        /// The last [`TAIL_LINES`] lines of output.
        tail: Vec<String>,
    },
    /// The step was cancelled (Ctrl-C, or another step failed); its sandbox was killed.
    #[error("canceled: the build was interrupted or another step failed")]
    Canceled,
}

impl RunStepError {
    /// The last lines of output, when the command ran and failed.
    pub fn tail(&self) -> &[String] {
        match self {
            RunStepError::ExitCode { tail, .. } | RunStepError::Signaled { tail, .. } => tail,
            _ => &[],
        }
    }
}

fn stream_name(stream: LogStream) -> &'static str {
    match stream {
        LogStream::Stdout => "standard output",
        LogStream::Stderr => "standard error",
    }
}

/// Runs `step` on the image whose snapshot directories are `lowers` (TOP-MOST FIRST), its
/// changes going into `staged` (which must be fresh). Each line the command writes reaches
/// `on_line` (without its newline, invalid UTF-8 replaced), in order per stream; a last line
/// without a newline comes at the end. When `cancel` fires, every process of the sandbox is
/// killed and the step ends with [`RunStepError::Canceled`]. On success, the empty mount points
/// the sandbox created are gone from the upper directory, which is ready for
/// [`super::commit::commit`].
pub fn run_step(
    store: &Store,
    lowers: &[PathBuf],
    staged: &StagedUpper,
    step: &RunStep,
    on_line: &(dyn Fn(LogStream, &str) + Sync),
    cancel: &Cancel,
) -> Result<(), RunStepError> {
    if cancel.is_cancelled() {
        return Err(RunStepError::Canceled);
    }
    let upper = staged.upper();
    if fs::read_dir(upper)
        .fs("read directory", upper)?
        .next()
        .is_some()
    {
        return Err(RunStepError::UsedUpper(upper.to_path_buf()));
    }
    let etc = StepDir::new(store)?;
    let spec = sandbox_spec(SandboxSetup {
        lower_dirs: lowers.to_vec(),
        upper: UpperDir {
            upper_dir: upper.to_path_buf(),
            work_dir: staged.work().to_path_buf(),
        },
        args: step.args.clone(),
        env: step.env.clone(),
        cwd: if step.cwd.is_empty() {
            "/".to_string()
        } else {
            step.cwd.clone()
        },
        user: &step.user,
        hostname: step.hostname.clone(),
        network: step.network.clone(),
        add_hosts: &[],
        dns: &[],
        mounts: &step.mounts,
        etc_dir: &etc.0,
        etc_files: EtcFiles::Build,
        read_only: false,
        tty: false,
        no_new_privileges: false,
        init: false,
        privileged: step.insecure,
    })?;
    let stubs = MountStubs::find(lowers, spec.mounts.iter().map(|m| m.destination.as_str()))?;
    let (outcome, tail) = match step.isolation {
        Isolation::Sandbox => run_sandbox(
            &spec,
            &|stdio| Sandbox::spawn(&spec, stdio),
            on_line,
            cancel,
        )?,
        Isolation::Chroot => {
            let root =
                ChrootRoot::prepare(store.staging().new_path("chroot"), &spec, MAX_LAYER_BYTES)?;
            let ran = run_sandbox(&spec, &|stdio| root.spawn(stdio), on_line, cancel)?;
            if ran.0 == Outcome::Exited(0)
                && let Some(owners) = root.write_changes(upper)?
            {
                staged.map_owners(owners);
            }
            ran
        }
    };
    let command = step.args.join(" ");
    match outcome {
        Outcome::Exited(0) => {}
        Outcome::Exited(code) => {
            return Err(RunStepError::ExitCode {
                command,
                code,
                tail,
            });
        }
        Outcome::Signaled(signal) => {
            return Err(RunStepError::Signaled {
                command,
                signal,
                tail,
            });
        }
    }
    stubs.remove(upper)?;
    Ok(())
}

/// A directory in the store's staging area for one step's `/etc` files; removed on drop.
struct StepDir(PathBuf);

impl StepDir {
    fn new(store: &Store) -> Result<StepDir, FsError> {
        let path = store.staging().new_path("etc");
        fs::create_dir(&path).fs("create directory", &path)?;
        Ok(StepDir(path))
    }
}

impl Drop for StepDir {
    fn drop(&mut self) {
        // A leftover is stale staging, removed by the next `Store::open`.
        let _ = remove_tree(&self.0);
    }
}

/// Spawns the sandbox with its output on two pipes read by two threads, waits for it (killing
/// it when `cancel` fires), and returns how it ended with the last lines of output.
fn run_sandbox(
    spec: &crate::runtime::Spec,
    spawn: &dyn Fn(Stdio) -> Result<Sandbox, RuntimeError>,
    on_line: &(dyn Fn(LogStream, &str) + Sync),
    cancel: &Cancel,
) -> Result<(Outcome, Vec<String>), RunStepError> {
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let lines = Lines {
        on_line,
        tail: Mutex::new(VecDeque::with_capacity(TAIL_LINES)),
    };
    let (waited, out, err) = std::thread::scope(|scope| {
        let out = scope.spawn(|| lines.read(out_read, LogStream::Stdout));
        let err = scope.spawn(|| lines.read(err_read, LogStream::Stderr));
        // The write ends move into the sandbox, which closes its copies once the workload has
        // them: the readers see end of file when every process of the sandbox is gone.
        let waited = spawn_and_wait(spec, spawn, out_write, err_write, cancel);
        let join = |handle: std::thread::ScopedJoinHandle<'_, io::Result<()>>| {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        (waited, join(out), join(err))
    });
    let outcome = waited?;
    if cancel.is_cancelled() {
        return Err(RunStepError::Canceled);
    }
    out.map_err(|source| RunStepError::Output {
        stream: LogStream::Stdout,
        source,
    })?;
    err.map_err(|source| RunStepError::Output {
        stream: LogStream::Stderr,
        source,
    })?;
    let tail = lines
        .tail
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into();
    Ok((outcome, tail))
}

fn spawn_and_wait(
    spec: &crate::runtime::Spec,
    spawn: &dyn Fn(Stdio) -> Result<Sandbox, RuntimeError>,
    stdout: OwnedFd,
    stderr: OwnedFd,
    cancel: &Cancel,
) -> Result<Outcome, RunStepError> {
    let stdio = Stdio::Streams {
        stdin: None,
        stdout,
        stderr,
    };
    // A script whose `#!` interpreter is missing is named as such, not "no such file".
    let sandbox =
        spawn(stdio).map_err(
            |err| match crate::container::exec_diagnosis::missing_interpreter(spec, &err) {
                Some(missing) => RunStepError::Setup(missing.into()),
                None => RunStepError::Runtime(err),
            },
        )?;
    let handle = sandbox.handle();
    // Registered after the spawn: a cancellation that came during it runs the kill right here.
    // SIGKILL to pid 1 takes the whole pid namespace down (pid_namespaces(7)); after the
    // sandbox is reaped the pidfd refuses to signal anyone (ESRCH), so a late kill is harmless.
    let _guard = cancel.on_cancel(move || {
        let _ = handle.kill();
    });
    Ok(sandbox.wait()?)
}

/// A close-on-exec pipe (pipe2(2)); the sandbox duplicates the write end onto the workload's
/// stdout or stderr.
fn pipe() -> Result<(OwnedFd, OwnedFd), RunStepError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| {
        RunStepError::Runtime(RuntimeError::Sys {
            action: "creating a pipe for the command's output",
            errno,
        })
    })
}

/// Where output lines go: the caller's callback, and the tail kept for an error.
struct Lines<'a> {
    on_line: &'a (dyn Fn(LogStream, &str) + Sync),
    tail: Mutex<VecDeque<String>>,
}

impl Lines<'_> {
    /// Reads `fd` to its end, handing each line over. On a read error the pipe is closed (so
    /// the command gets EPIPE rather than blocking on a full pipe) and the error returned.
    fn read(&self, fd: OwnedFd, stream: LogStream) -> io::Result<()> {
        let mut pipe = fs::File::from(fd);
        let mut pending: Vec<u8> = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            let read = match pipe.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            let mut chunk = buffer.get(..read).unwrap_or_default();
            while let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
                let (line, rest) = chunk.split_at(newline);
                pending.extend_from_slice(line);
                self.emit_long(stream, &mut pending);
                self.emit(stream, &pending);
                pending.clear();
                chunk = rest.get(1..).unwrap_or_default();
            }
            pending.extend_from_slice(chunk);
            self.emit_long(stream, &mut pending);
        }
        if !pending.is_empty() {
            self.emit(stream, &pending);
        }
        Ok(())
    }

    /// Hands over pieces of [`MAX_LINE`] bytes from the front of `pending` while it is longer.
    fn emit_long(&self, stream: LogStream, pending: &mut Vec<u8>) {
        while pending.len() > MAX_LINE {
            let cut = char_boundary(pending, MAX_LINE);
            self.emit(stream, pending.get(..cut).unwrap_or_default());
            pending.drain(..cut);
        }
    }

    fn emit(&self, stream: LogStream, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        (self.on_line)(stream, &line);
        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.into_owned());
    }
}

/// The largest cut at most `max` (and more than 0) that does not split a UTF-8 sequence of
/// `bytes`, when `bytes` is UTF-8 there; `max` otherwise.
fn char_boundary(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    // A UTF-8 sequence is at most 4 bytes: look back at most 3 for its first byte.
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&at| at > 0 && bytes.get(at).is_some_and(|&b| b & 0xC0 != 0x80))
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &[u8]) -> Vec<(LogStream, String)> {
        let seen = Mutex::new(Vec::new());
        let on_line = |stream: LogStream, line: &str| {
            seen.lock().unwrap().push((stream, line.to_string()));
        };
        let lines = Lines {
            on_line: &on_line,
            tail: Mutex::new(VecDeque::new()),
        };
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            use std::io::Write as _;
            fs::File::from(write).write_all(&input).unwrap();
        });
        lines.read(read, LogStream::Stderr).unwrap();
        writer.join().unwrap();
        seen.into_inner().unwrap()
    }

    #[test]
    fn lines_split_on_newlines_with_the_partial_last_one_flushed() {
        let got: Vec<String> = collect(b"one\n\ntwo\xff\nlast")
            .into_iter()
            .map(|(stream, line)| {
                assert_eq!(stream, LogStream::Stderr);
                line
            })
            .collect();
        assert_eq!(got, ["one", "", "two\u{fffd}", "last"]);
        assert!(collect(b"").is_empty());
    }

    #[test]
    fn long_lines_come_in_pieces_cut_between_characters() {
        let mut input = vec![b'a'; MAX_LINE - 1];
        input.extend_from_slice("é".as_bytes());
        input.extend_from_slice(b"rest\n");
        let got = collect(&input);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.len(), MAX_LINE - 1);
        assert_eq!(got[1].1, "érest");
        let huge = vec![b'x'; 3 * MAX_LINE + 5];
        let pieces: Vec<usize> = collect(&huge).iter().map(|(_, l)| l.len()).collect();
        assert_eq!(pieces, [MAX_LINE, MAX_LINE, MAX_LINE, 5]);
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let on_line = |_: LogStream, _: &str| {};
        let lines = Lines {
            on_line: &on_line,
            tail: Mutex::new(VecDeque::new()),
        };
        for n in 0..25 {
            lines.emit(LogStream::Stdout, n.to_string().as_bytes());
        }
        let tail: Vec<String> = lines.tail.into_inner().unwrap().into();
        let want: Vec<String> = (15..25).map(|n: i32| n.to_string()).collect();
        assert_eq!(tail, want);
    }

    #[test]
    fn a_cancelled_step_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("root")).unwrap();
        let staged = StagedUpper::new(&store).unwrap();
        let cancel = Cancel::new();
        cancel.cancel();
        let step = RunStep {
            args: vec!["true".into()],
            env: Vec::new(),
            cwd: String::new(),
            user: String::new(),
            network: Network::None,
            hostname: "buildkitsandbox".into(),
            mounts: Vec::new(),
            insecure: false,
            isolation: Isolation::Sandbox,
        };
        let err = run_step(&store, &[], &staged, &step, &|_, _| {}, &cancel).unwrap_err();
        assert!(matches!(err, RunStepError::Canceled));
        assert!(fs::read_dir(staged.upper()).unwrap().next().is_none());
    }
}
