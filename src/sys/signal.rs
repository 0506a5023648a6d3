//! A self-pipe for SIGWINCH (signal-safety(7)): a process-wide handler writes one byte to each
//! registered pipe, so any number of terminal relays (`runtime::tty::relay`) can wait for
//! window size changes with poll(2). A signalfd would need SIGWINCH blocked in every thread of
//! the process, which a library cannot arrange.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// How many pipes may be registered at once in one process (one per `kiln run -t` is the
/// normal case).
pub(crate) const MAX_WINCH_PIPES: usize = 8;

/// Why a [`WinchPipe`] could not be registered.
#[derive(Debug)]
pub(crate) enum WinchError {
    /// pipe2(2) failed.
    Pipe(Errno),
    /// Every slot is taken ([`MAX_WINCH_PIPES`]).
    Full,
    /// sigaction(2) failed.
    Install(Errno),
}

/// The write ends of the registered pipes; -1 is a free slot. A signal handler can only use
/// async-signal-safe calls (signal-safety(7)): it writes one byte to each pipe, and each
/// relay's poll wakes up on its own pipe.
static WINCH_PIPES: [AtomicI32; MAX_WINCH_PIPES] = [const { AtomicI32::new(-1) }; MAX_WINCH_PIPES];
/// Handlers running now: a pipe's owner waits for zero after freeing its slot and before
/// closing its pipe, so a handler never writes to an fd number that was closed and reused
/// meanwhile.
static HANDLERS_RUNNING: AtomicUsize = AtomicUsize::new(0);
/// The number of registered pipes and the SIGWINCH action to restore after the last one.
static INSTALLED: Mutex<(usize, Option<SigAction>)> = Mutex::new((0, None));

extern "C" fn on_winch(_: libc::c_int) {
    // Saved and restored so the interrupted code does not see write(2)'s errno
    // (signal-safety(7)); reading and writing this thread's errno is async-signal-safe.
    let saved_errno = Errno::last_raw();
    HANDLERS_RUNNING.fetch_add(1, Ordering::SeqCst);
    for slot in &WINCH_PIPES {
        let fd = slot.load(Ordering::SeqCst);
        if fd >= 0 {
            let byte = 1u8;
            // SAFETY: write(2) is async-signal-safe and reads one byte of a live local; the fd
            // stays open while HANDLERS_RUNNING is non-zero (see `Drop`); a full pipe (EAGAIN)
            // already holds a wake-up.
            unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
        }
    }
    HANDLERS_RUNNING.fetch_sub(1, Ordering::SeqCst);
    Errno::set_raw(saved_errno);
}

/// One registered SIGWINCH self-pipe: readable after each SIGWINCH since the last
/// [`WinchPipe::drain`]. The handler is installed while at least one is registered, and the
/// action found before the first is put back after the last.
pub(crate) struct WinchPipe {
    index: usize,
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl WinchPipe {
    /// Creates a pipe and registers it with the handler (installing it for the first pipe).
    pub(crate) fn register() -> Result<WinchPipe, WinchError> {
        let (read, write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(WinchError::Pipe)?;
        let mut installed = INSTALLED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = WINCH_PIPES
            .iter()
            .position(|slot| {
                slot.compare_exchange(-1, write.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            })
            .ok_or(WinchError::Full)?;
        if installed.0 == 0 {
            let action = SigAction::new(
                SigHandler::Handler(on_winch),
                SaFlags::SA_RESTART,
                SigSet::empty(),
            );
            // SAFETY: the handler only uses async-signal-safe operations (atomics, errno,
            // write(2)).
            match unsafe { sigaction(Signal::SIGWINCH, &action) } {
                Ok(previous) => installed.1 = Some(previous),
                Err(source) => {
                    if let Some(slot) = WINCH_PIPES.get(index) {
                        slot.store(-1, Ordering::SeqCst);
                    }
                    return Err(WinchError::Install(source));
                }
            }
        }
        installed.0 += 1;
        Ok(WinchPipe {
            index,
            read,
            write: Some(write),
        })
    }

    /// The end to poll for POLLIN.
    pub(crate) fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Empties the pipe: one resize answers any number of signals.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.read.as_fd(), &mut buf), Ok(n) if n > 0) {}
    }
}

impl Drop for WinchPipe {
    fn drop(&mut self) {
        let mut installed = INSTALLED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(slot) = WINCH_PIPES.get(self.index) {
            slot.store(-1, Ordering::SeqCst);
        }
        installed.0 = installed.0.saturating_sub(1);
        if installed.0 == 0
            && let Some(previous) = installed.1.take()
        {
            // SAFETY: restores the action that was in place before the first registration.
            let _ = unsafe { sigaction(Signal::SIGWINCH, &previous) };
        }
        while HANDLERS_RUNNING.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
        // Now no handler can still be using the write end.
        drop(self.write.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(pipe: &WinchPipe) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            pipe.read_end(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap() == 1
    }

    /// A SIGWINCH wakes every registered pipe once; draining leaves it quiet again.
    #[test]
    fn a_sigwinch_wakes_every_registered_pipe() {
        let (first, second) = (
            WinchPipe::register().unwrap(),
            WinchPipe::register().unwrap(),
        );
        first.drain();
        second.drain();
        // raise(3) delivers to this thread before it returns.
        nix::sys::signal::raise(Signal::SIGWINCH).unwrap();
        assert!(readable(&first) && readable(&second));
        first.drain();
        assert!(!readable(&first));
        assert!(readable(&second));
    }
}
