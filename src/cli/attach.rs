//! A workload's streams attached to kiln's own, for `kiln run` and `kiln exec`: kiln's stdin,
//! stdout and stderr handed to the process (or a terminal from its devpts relayed to them), and
//! the signals kiln receives passed on to it, as docker's CLI does with `--sig-proxy`.

use kiln::runtime::tty::{self, DEFAULT_WINDOW_SIZE, RawMode};
use kiln::runtime::{SandboxHandle, Stdio};
use nix::sys::signal::{SigSet, Signal};
use std::io::IsTerminal as _;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// The signals kiln passes on to the workload.
const PROXIED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Copies of kiln's standard streams.
pub struct Streams {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

impl Streams {
    /// kiln's stdin, stdout and stderr, duplicated.
    pub fn of_kiln() -> anyhow::Result<Streams> {
        Ok(Streams {
            stdin: std::io::stdin().as_fd().try_clone_to_owned()?,
            // The workload's own output is not kiln's to escape: it gets kiln's stdout and
            // stderr as they are.
            #[allow(clippy::disallowed_methods)]
            stdout: std::io::stdout().as_fd().try_clone_to_owned()?,
            #[allow(clippy::disallowed_methods)]
            stderr: std::io::stderr().as_fd().try_clone_to_owned()?,
        })
    }

    /// The workload's stdio: with `tty`, a terminal the sandbox allocates in its own devpts (so
    /// `tty` names it /dev/pts/N, as in docker) and hands kiln the master of, sized as kiln's
    /// terminal or docker's 24x80 when kiln's output is not one; else these streams (stdin only
    /// with `interactive`).
    pub fn stdio(&self, tty: bool, interactive: bool) -> anyhow::Result<Stdio> {
        Ok(if tty {
            let size = tty::window_size(self.stdout.as_fd())
                .or_else(|| tty::window_size(self.stdin.as_fd()))
                .unwrap_or(DEFAULT_WINDOW_SIZE);
            Stdio::Terminal { size: Some(size) }
        } else {
            Stdio::Streams {
                stdin: interactive.then(|| self.stdin.try_clone()).transpose()?,
                stdout: self.stdout.try_clone()?,
                stderr: self.stderr.try_clone()?,
            }
        })
    }

    /// Copies between kiln's terminal and the workload's pty until the workload is gone.
    /// Without `interactive` the workload's terminal gets no input at all: the relay reads from
    /// a pipe nobody writes to (kiln's stdin ending would otherwise reach it as an end of file).
    pub fn relay(self, master: &OwnedFd, interactive: bool) -> anyhow::Result<()> {
        let (idle_read, _idle_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let input = if interactive { self.stdin } else { idle_read };
        let _raw = if interactive && std::io::stdin().is_terminal() {
            Some(RawMode::enter(input.as_fd())?)
        } else {
            None
        };
        tty::relay(master, input.as_fd(), self.stdout.as_fd())?;
        Ok(())
    }
}

/// Blocks the proxied signals in this thread. Call it before any other thread exists (so every
/// thread inherits the mask and only [`forward_signals`]'s sigwait(3) takes them: signal(7), a
/// blocked process-directed signal stays pending until a thread accepts it); the sandbox's first
/// process resets its mask.
pub fn block_proxied() -> anyhow::Result<SigSet> {
    let mut proxied = SigSet::empty();
    for signal in PROXIED {
        proxied.add(signal);
    }
    proxied.thread_block()?;
    Ok(proxied)
}

/// A thread that passes every signal of `set` on to the workload. It lives until kiln exits; a
/// signal that arrives after the workload ended finds it gone (ESRCH through the pidfd) and is
/// dropped. With a `grace`, the first SIGTERM or SIGINT passed on starts it: a workload still
/// running after it is killed (SIGKILL), as `docker stop` does after its timeout, so a workload
/// that ignores the signal cannot keep kiln waiting.
pub fn forward_signals(set: SigSet, handle: SandboxHandle, grace: Option<Duration>) {
    std::thread::spawn(move || {
        let mut stopping = false;
        while let Ok(signal) = set.wait() {
            let _ = handle.signal(signal);
            if let Some(grace) = grace
                && !stopping
                && matches!(signal, Signal::SIGTERM | Signal::SIGINT)
            {
                stopping = true;
                let handle = handle.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(grace);
                    let _ = handle.kill();
                });
            }
        }
    });
}
