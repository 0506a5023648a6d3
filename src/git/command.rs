//! Running the `git` binary: a clean environment (no system or user config, no terminal
//! prompt, `LC_ALL=C`), the transports a build may use and no others, a bounded time, output
//! kept within bounds, credentials passed in the environment rather than the command line, and
//! every message scrubbed of them and of control characters.

use super::GitError;
use crate::error::escape_line;
use crate::sys::atomic::tree_size;
use std::ffi::{OsStr, OsString};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The environment variables passed on to git (BuildKit's list): proxies only.
const PROXY_VARIABLES: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
];

/// How much of a failed command's standard error a message keeps (its end).
const STDERR_TAIL: usize = 8 << 10;

/// How git commands are bounded.
#[derive(Debug, Clone)]
pub struct GitOptions {
    /// The `git` binary (found on `PATH` when it has no `/`).
    pub program: PathBuf,
    /// The longest one git command may run; it is then killed with its helpers.
    pub timeout: Duration,
    /// The most standard output kept from one command (ls-remote of a repository with very
    /// many refs fails beyond it rather than filling memory).
    pub max_output: usize,
    /// The most bytes one fetch may add to a repository, and one checkout may hold (its files,
    /// its submodules' and a kept `.git`): a larger one fails and is removed.
    pub max_bytes: u64,
}

/// The default [`GitOptions::max_bytes`]: 8 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 30;

impl Default for GitOptions {
    fn default() -> Self {
        GitOptions {
            program: PathBuf::from("git"),
            timeout: Duration::from_secs(600),
            max_output: 64 << 20,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl GitOptions {
    /// The defaults, with `KILN_GIT_TIMEOUT` (seconds) as the per-command time limit and
    /// `KILN_GIT_MAX_BYTES` (bytes) as the size cap when they are set.
    pub fn from_env() -> GitOptions {
        let mut options = GitOptions::default();
        let positive = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
        };
        if let Some(seconds) = positive("KILN_GIT_TIMEOUT") {
            options.timeout = Duration::from_secs(seconds);
        }
        if let Some(bytes) = positive("KILN_GIT_MAX_BYTES") {
            options.max_bytes = bytes;
        }
        options
    }
}

/// A directory a command may grow only so far: it is measured while the command runs (at
/// intervals that grow with the time a measure takes) and once after, and the command is
/// killed when it is over `limit` bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) limit: u64,
    /// What grows, for the error: `fetch` or `checkout`.
    pub(crate) what: &'static str,
}

/// The shortest pause between two measures of a watched directory.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// Why a command was stopped before it ended.
enum Stopped {
    Canceled,
    Timeout,
    TooLarge,
}

/// What a fetch may authenticate with: BuildKit's `GIT_AUTH_HEADER`/`GIT_AUTH_TOKEN` secrets
/// and its forwarded SSH agent. Never printed, never part of a key.
#[derive(Default)]
pub struct GitAuth {
    /// The value of the `Authorization` header sent to the remote over http(s).
    pub authorization: Option<Zeroizing<String>>,
    /// The socket of the SSH agent ssh uses for an `ssh://` or `user@host:path` remote.
    pub ssh_auth_sock: Option<PathBuf>,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuth")
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("ssh_auth_sock", &self.ssh_auth_sock)
            .finish()
    }
}

impl GitAuth {
    /// The header BuildKit sends for a `GIT_AUTH_TOKEN` secret.
    pub fn from_token(token: &[u8]) -> GitAuth {
        use base64::Engine as _;
        let mut credentials = Zeroizing::new(b"x-access-token:".to_vec());
        credentials.extend_from_slice(token);
        let encoded =
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*credentials));
        GitAuth {
            authorization: Some(Zeroizing::new(format!("basic {}", encoded.as_str()))),
            ssh_auth_sock: None,
        }
    }

    /// A `GIT_AUTH_HEADER` secret: the header's whole value.
    pub fn from_header(header: &[u8]) -> GitAuth {
        GitAuth {
            authorization: Some(Zeroizing::new(
                String::from_utf8_lossy(header).trim_end().to_string(),
            )),
            ssh_auth_sock: None,
        }
    }
}

/// git for one remote.
pub(crate) struct Git<'a> {
    pub(crate) options: &'a GitOptions,
    pub(crate) auth: &'a GitAuth,
    /// The remote as given (credentials included): scrubbed from messages.
    pub(crate) remote: &'a str,
    /// The remote as messages show it.
    pub(crate) shown: &'a str,
    /// The URL prefix the `Authorization` header is sent to (BuildKit's `tokenScope`).
    pub(crate) scope: &'a str,
    /// A directory without a repository above it in which commands that need none run.
    pub(crate) scratch: &'a Path,
    /// Asked between waits: `true` stops the command.
    pub(crate) stop: &'a (dyn Fn() -> bool + Sync),
    /// A directory the command may grow only so far.
    pub(crate) watch: Option<Watch<'a>>,
}

impl<'a> Git<'a> {
    /// This git with its commands bounded by `watch`.
    pub(crate) fn watching(&self, watch: Watch<'a>) -> Git<'a> {
        Git {
            watch: Some(watch),
            ..*self
        }
    }

    /// The error for a watched directory that grew too large.
    fn too_large(&self, watch: &Watch<'_>) -> GitError {
        GitError::TooLarge {
            what: watch.what,
            remote: self.shown.to_string(),
            limit: self.options.max_bytes,
        }
    }
    /// Runs git with `args` in `cwd` (the scratch directory when `None`); its standard output.
    pub(crate) fn run<S: AsRef<OsStr>>(
        &self,
        cwd: Option<&Path>,
        args: &[S],
    ) -> Result<Vec<u8>, GitError> {
        let mut out = Vec::new();
        let max = self.options.max_output;
        self.run_with(cwd, args, &mut |chunk| {
            if out.len() + chunk.len() > max {
                return Err(format!("its output is larger than {max} bytes"));
            }
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Git::run`] with standard output handed to `consume` chunk by chunk (an error from it
    /// stops the command). A shallow fetch the server refuses is tried again in full, as
    /// BuildKit's `GitCLI.Run` does.
    pub(crate) fn run_with<S: AsRef<OsStr>>(
        &self,
        cwd: Option<&Path>,
        args: &[S],
        consume: &mut (dyn FnMut(&[u8]) -> Result<(), String> + Send),
    ) -> Result<(), GitError> {
        let mut args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
        loop {
            match self.run_once(cwd, &args, consume) {
                Err(GitError::Command { ref stderr, .. })
                    if (stderr.contains("--depth") || stderr.contains("shallow"))
                        && args.iter().any(|a| a == "--depth=1") =>
                {
                    args.retain(|a| a != "--depth=1");
                }
                result => return result,
            }
        }
    }

    fn command(&self, cwd: &Path, args: &[OsString]) -> Command {
        let mut command = Command::new(&self.options.program);
        command
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", "/dev/null")
            .env("LC_ALL", "C")
            // Nothing above the directory a command runs in is taken for a repository.
            .env(
                "GIT_CEILING_DIRECTORIES",
                cwd.parent().unwrap_or(Path::new("/")),
            )
            .env(
                "GIT_SSH_COMMAND",
                "ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                 -o BatchMode=yes",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for name in PROXY_VARIABLES {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        if let Some(socket) = &self.auth.ssh_auth_sock {
            command.env("SSH_AUTH_SOCK", socket);
        }
        // Configuration through the environment (git 2.31's GIT_CONFIG_COUNT), so that the
        // authorization header is in no command line another user could read in /proc.
        let mut config: Vec<(String, String)> = vec![
            // Only the transports a build may use; submodules never read local paths
            // (git marks their commands as not from the user) and never run `ext::` helpers.
            ("protocol.allow".into(), "never".into()),
            ("protocol.https.allow".into(), "always".into()),
            ("protocol.http.allow".into(), "always".into()),
            ("protocol.git.allow".into(), "always".into()),
            ("protocol.ssh.allow".into(), "always".into()),
            ("protocol.file.allow".into(), "user".into()),
            // A repository in the store runs no hook and no background maintenance.
            ("core.hooksPath".into(), "/dev/null".into()),
            ("core.fsmonitor".into(), "false".into()),
            ("gc.auto".into(), "0".into()),
            ("maintenance.auto".into(), "false".into()),
            ("advice.detachedHead".into(), "false".into()),
            ("init.defaultBranch".into(), "master".into()),
            // A transfer that stalls (under 1 KB/s for a minute) fails before the timeout.
            ("http.lowSpeedLimit".into(), "1000".into()),
            ("http.lowSpeedTime".into(), "60".into()),
        ];
        if let Some(header) = &self.auth.authorization {
            config.push((
                format!("http.{}.extraheader", self.scope),
                format!("Authorization: {}", header.as_str()),
            ));
        }
        command.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (key, value)) in config.into_iter().enumerate() {
            command.env(format!("GIT_CONFIG_KEY_{i}"), key);
            command.env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        // Its own process group, killed whole on a timeout; umask 0022 as BuildKit's git.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        crate::sys::process::child_umask_and_death_signal(&mut command, 0o022);
        command
    }

    fn run_once(
        &self,
        cwd: Option<&Path>,
        args: &[OsString],
        consume: &mut (dyn FnMut(&[u8]) -> Result<(), String> + Send),
    ) -> Result<(), GitError> {
        let what = args
            .iter()
            .map(|a| a.to_string_lossy())
            .find(|a| !a.starts_with('-') && !a.contains('/'))
            .unwrap_or_default()
            .into_owned();
        let cwd = cwd.unwrap_or(self.scratch);
        let mut child = self
            .command(cwd, args)
            .spawn()
            .map_err(|source| GitError::Spawn {
                program: self.options.program.clone(),
                source,
            })?;
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(GitError::Spawn {
                program: self.options.program.clone(),
                source: std::io::Error::other("no pipes to the child"),
            });
        };
        let deadline = Instant::now() + self.options.timeout;
        let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let outcome = std::thread::scope(|scope| {
            let out = scope.spawn(move || -> Result<(), String> {
                let mut buffer = vec![0u8; 64 << 10];
                let mut failed = None;
                loop {
                    match stdout.read(&mut buffer) {
                        Ok(0) => break,
                        // After a refusal, read on (and drop) so git is not blocked writing.
                        Ok(n) if failed.is_none() => {
                            if let Err(err) = consume(&buffer[..n]) {
                                failed = Some(err);
                            }
                        }
                        Ok(_) => {}
                        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(err) => return Err(err.to_string()),
                    }
                }
                failed.map_or(Ok(()), Err)
            });
            let err = scope.spawn(move || {
                let mut tail: Vec<u8> = Vec::new();
                let mut buffer = [0u8; 8 << 10];
                loop {
                    match stderr.read(&mut buffer) {
                        Ok(0) => break,
                        Ok(n) => {
                            tail.extend_from_slice(&buffer[..n]);
                            if tail.len() > 2 * STDERR_TAIL {
                                tail.drain(..tail.len() - STDERR_TAIL);
                            }
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                tail
            });
            // Wait, stopping the whole group on a timeout or a cancel; the child is reaped only
            // after any kill, so its pid (the group's id) cannot have been reused by then.
            let mut pause = Duration::from_millis(2);
            let mut stopped = None;
            let mut next_measure = Instant::now() + WATCH_INTERVAL;
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Ok(status),
                    Ok(None) => {}
                    Err(err) => break Err(err),
                }
                if stopped.is_none() {
                    if (self.stop)() {
                        stopped = Some(Stopped::Canceled);
                    } else if Instant::now() >= deadline {
                        stopped = Some(Stopped::Timeout);
                    } else if let Some(watch) = &self.watch
                        && Instant::now() >= next_measure
                    {
                        let started = Instant::now();
                        if tree_size(watch.dir) > watch.limit {
                            stopped = Some(Stopped::TooLarge);
                        }
                        // A large tree is measured less often: at most a tenth of the time.
                        next_measure = Instant::now() + WATCH_INTERVAL.max(started.elapsed() * 10);
                    }
                    if stopped.is_some() {
                        let _ = nix::sys::signal::killpg(group, nix::sys::signal::SIGKILL);
                    }
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            };
            let output = out
                .join()
                .unwrap_or_else(|_| Err("a reader panicked".into()));
            let tail = err.join().unwrap_or_default();
            (status, stopped, output, tail)
        });
        let (status, stopped, output, tail) = outcome;
        match stopped {
            Some(Stopped::Timeout) => {
                return Err(GitError::Timeout {
                    command: what,
                    remote: self.shown.to_string(),
                    seconds: self.options.timeout.as_secs(),
                });
            }
            Some(Stopped::Canceled) => return Err(GitError::Canceled),
            Some(Stopped::TooLarge) => {
                if let Some(watch) = &self.watch {
                    return Err(self.too_large(watch));
                }
            }
            None => {}
        }
        // What grew since the last measure.
        if let Some(watch) = &self.watch
            && tree_size(watch.dir) > watch.limit
        {
            return Err(self.too_large(watch));
        }
        let status = status.map_err(|source| GitError::Spawn {
            program: self.options.program.clone(),
            source,
        })?;
        let stderr = self.scrub(&tail);
        if !status.success() {
            return Err(GitError::Command {
                command: what,
                remote: self.shown.to_string(),
                status: status.to_string(),
                stderr,
            });
        }
        output.map_err(|reason| GitError::Output {
            command: what,
            remote: self.shown.to_string(),
            reason,
        })?;
        // git reports a path it refuses to check out (`..`, `.git`) and goes on; kiln stops.
        if let Some(line) = stderr
            .lines()
            .find(|l| l.starts_with("error: invalid path"))
        {
            return Err(GitError::HostilePath {
                remote: self.shown.to_string(),
                path: line
                    .trim_start_matches("error: invalid path")
                    .trim()
                    .to_string(),
            });
        }
        Ok(())
    }

    /// A message from git made safe to print: the remote's credentials replaced, its lines
    /// joined by `; ` (a printed error is one line), control characters escaped, at most the
    /// last [`STDERR_TAIL`] bytes.
    fn scrub(&self, bytes: &[u8]) -> String {
        let start = bytes.len().saturating_sub(STDERR_TAIL);
        let text = String::from_utf8_lossy(&bytes[start..]).replace(self.remote, self.shown);
        let text = match self.auth.authorization.as_ref() {
            Some(header) if !header.is_empty() => text.replace(header.as_str(), "xxxxx"),
            _ => text,
        };
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim_end)
            .filter(|line| !line.is_empty())
            .collect();
        escape_line(&lines.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command that writes without end into a watched directory is stopped soon after the
    /// directory passes the limit, not when it ends (here: never) or at the time limit.
    #[test]
    fn a_watched_directory_stops_the_command_that_grows_it() {
        let dir = tempfile::tempdir().unwrap();
        let options = GitOptions {
            program: PathBuf::from("/bin/sh"),
            timeout: Duration::from_secs(60),
            max_bytes: 1 << 20,
            ..GitOptions::default()
        };
        let auth = GitAuth::default();
        let never = || false;
        let git = Git {
            options: &options,
            auth: &auth,
            remote: "r",
            shown: "r",
            scope: "r",
            scratch: dir.path(),
            stop: &never,
            watch: None,
        };
        let watched = git.watching(Watch {
            dir: dir.path(),
            limit: 1 << 20,
            what: "checkout",
        });
        let started = Instant::now();
        let err = watched
            .run(
                Some(dir.path()),
                &[
                    "-c",
                    "while :; do head -c 65536 /dev/zero >> grown; sleep 0.01; done",
                ],
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                GitError::TooLarge {
                    what: "checkout",
                    limit: 1048576,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("KILN_GIT_MAX_BYTES"),
            "the message names the variable: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        // Stopped within a few measures of the limit (64 KiB every 10 ms at most).
        let grown = std::fs::metadata(dir.path().join("grown")).unwrap().len();
        assert!((1 << 20..8 << 20).contains(&grown), "{grown}");

        // Unwatched, the same directory may grow.
        std::fs::remove_file(dir.path().join("grown")).unwrap();
        git.run(
            Some(dir.path()),
            &["-c", "head -c 2097152 /dev/zero > grown"],
        )
        .unwrap();
        // Watched, what grew past the limit before the first measure is caught after the end.
        let err = watched.run(Some(dir.path()), &["-c", "true"]).unwrap_err();
        assert!(matches!(err, GitError::TooLarge { .. }), "{err}");
    }
}
