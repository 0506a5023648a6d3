//! Terminals for `kiln run -t` / `-i`: a pseudo-terminal for the container, the host terminal in
//! raw mode, and the relay between them (pty(7), termios(3), tty_ioctl(4)).
//!
//! The container's process gets the pty's slave side as its controlling terminal; kiln keeps the
//! master and copies bytes between it and its own stdin/stdout. The sandbox allocates that pty
//! itself, in its own devpts (`Stdio::Terminal`, `Sandbox::take_terminal`); [`Pty`] opens one in
//! kiln's devpts, for terminals that need no name inside a container. The line discipline that
//! echoes, edits lines and turns ^C into SIGINT is the container's (the slave's); the host
//! terminal is put in raw mode so it passes every key through untouched, as `docker run -it` does.

use crate::sys::signal::{MAX_WINCH_PIPES, WinchError, WinchPipe};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, SetArg, SpecialCharacterIndices, Termios};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The size a terminal gets when there is none to copy it from (docker's and the VT100's).
pub const DEFAULT_WINDOW_SIZE: WindowSize = WindowSize { rows: 24, cols: 80 };

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Why a terminal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    /// Allocating a pseudo-terminal failed.
    #[error("cannot open a pseudo-terminal ({step}): {cause}; is /dev/ptmx (devpts) available?")]
    Open {
        /// The call that failed.
        step: &'static str,
        /// The underlying error; it is part of this message, not a `source()`: the hint has to follow it, which a chain
        /// (`a: b: c`) cannot say; it is printed once all the same.
        cause: Errno,
    },
    /// The fd is not a terminal.
    #[error("file descriptor {fd} is not a terminal; run without -t, or from a terminal")]
    NotATerminal {
        /// The file descriptor.
        fd: i32,
    },
    /// A terminal ioctl or termios call failed.
    #[error("cannot {what} of file descriptor {fd}")]
    Terminal {
        /// What was being done.
        what: &'static str,
        /// The file descriptor.
        fd: i32,
        /// The underlying error.
        source: Errno,
    },
    /// Reading or writing while relaying failed.
    #[error("terminal relay: cannot {what}")]
    Relay {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: Errno,
    },
    /// Every SIGWINCH slot is taken by other relays in this process.
    #[error("too many terminal relays in this process at once (at most {MAX_RELAYS})")]
    TooManyRelays,
}

/// A pseudo-terminal pair in kiln's own devpts: one side for the process that relays it, the
/// other for the process that uses it as a terminal. (A sandbox's workload gets a pty of its own
/// devpts instead, see `Stdio::Terminal`: this one's slave would have no name there.)
#[derive(Debug)]
pub struct Pty {
    /// The master side (close-on-exec: it must never reach the container).
    pub master: OwnedFd,
    /// The slave side (close-on-exec too: it reaches the child only as the stdio it is dup2'ed
    /// to). Close it once the other process has it, or [`relay`] never sees that process end.
    pub slave: OwnedFd,
}

impl Pty {
    /// Opens a new pty pair, with window size `size` when given.
    ///
    /// Not openpty(3): it opens both sides without O_CLOEXEC, so a fork+exec in another thread
    /// could leak them into an unrelated child, which would then keep the terminal alive. Here the
    /// master comes from posix_openpt(O_CLOEXEC) and the slave from TIOCGPTPEER (Linux 4.13),
    /// which opens the master's own peer without a path lookup in /dev/pts, so no other devpts
    /// mount (a container's) can be substituted (the reason runc and the kernel commit
    /// 54ebbfb16034 give for TIOCGPTPEER).
    pub fn open(size: Option<WindowSize>) -> Result<Pty, TtyError> {
        let open_err = |step| move |cause| TtyError::Open { step, cause };
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .map_err(open_err("posix_openpt"))?;
        nix::pty::grantpt(&master).map_err(open_err("grantpt"))?;
        nix::pty::unlockpt(&master).map_err(open_err("unlockpt"))?;
        let master = OwnedFd::from(master);
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let slave =
            rustix::pty::ioctl_tiocgptpeer(&master, flags).map_err(|error| TtyError::Open {
                step: "TIOCGPTPEER",
                cause: Errno::from_raw(error.raw_os_error()),
            })?;
        if let Some(size) = size {
            set_window_size(master.as_fd(), size)?;
        }
        Ok(Pty { master, slave })
    }
}

/// The window size of terminal `fd`; `None` when it is not a terminal, or when its size is
/// unknown: 0x0, what a pty nobody sized reports (docker's client then leaves the container's
/// terminal as it is too).
pub fn window_size(fd: BorrowedFd<'_>) -> Option<WindowSize> {
    // TIOCGWINSZ.
    let size = rustix::termios::tcgetwinsize(fd).ok()?;
    ((size.ws_row, size.ws_col) != (0, 0)).then_some(WindowSize {
        rows: size.ws_row,
        cols: size.ws_col,
    })
}

/// Sets the window size of terminal `fd`. On a pty master the kernel then sends SIGWINCH to the
/// slave's foreground process group (tty_ioctl(4)), so full-screen programs redraw.
pub fn set_window_size(fd: BorrowedFd<'_>, size: WindowSize) -> Result<(), TtyError> {
    let size = Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // TIOCSWINSZ.
    rustix::termios::tcsetwinsize(fd, size).map_err(|error| TtyError::Terminal {
        what: "set the window size",
        fd: fd.as_raw_fd(),
        source: Errno::from_raw(error.raw_os_error()),
    })
}

/// The host terminal in raw mode (cfmakeraw(3): no echo, no line editing, no signals from keys,
/// no output processing) while it lives; dropping it, also while unwinding from a panic, restores
/// the settings it found.
pub struct RawMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

impl<'fd> RawMode<'fd> {
    /// Puts terminal `fd` into raw mode.
    pub fn enter(fd: BorrowedFd<'fd>) -> Result<RawMode<'fd>, TtyError> {
        let saved = termios::tcgetattr(fd).map_err(|source| match source {
            Errno::ENOTTY | Errno::EINVAL => TtyError::NotATerminal { fd: fd.as_raw_fd() },
            source => TtyError::Terminal {
                what: "read the terminal settings",
                fd: fd.as_raw_fd(),
                source,
            },
        })?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).map_err(|source| TtyError::Terminal {
            what: "put the terminal in raw mode",
            fd: fd.as_raw_fd(),
            source,
        })?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        // Nothing to report to from a drop; a terminal that is gone needs no restoring.
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Copies host `stdin` → `master` and `master` → host `stdout` with poll(2) until the master
/// reports EOF or EIO: every slave fd is closed, i.e. the container's processes have exited (so
/// the relaying process must not hold a copy of the slave, see [`Pty::slave`]). Host terminal size
/// changes (SIGWINCH) are copied to the master, from `stdout` or else `stdin`, whichever is a
/// terminal.
///
/// End of host stdin cannot simply be passed on: a pty has no half-close, and closing the master
/// would hang up the container's whole session. So it is forwarded as what a user would type, the
/// terminal's EOF character (VEOF, usually ^D), which the slave's canonical-mode line discipline
/// turns into end-of-file for the reader. A ^D in the middle of a line only hands over the partial
/// line, so after input that did not end a line two are sent. A program that put its terminal in
/// non-canonical mode sees the character itself, as it would from a keyboard.
///
/// Writes to the master do not block (they are queued while the container reads nothing), so a
/// container that does not read cannot stop its output from being relayed.
pub fn relay(
    master: &OwnedFd,
    stdin: BorrowedFd<'_>,
    stdout: BorrowedFd<'_>,
) -> Result<(), TtyError> {
    let winch = register_winch()?;
    let _nonblocking = NonBlocking::set(master.as_fd())?;
    let resize = || {
        if let Some(size) = window_size(stdout).or_else(|| window_size(stdin)) {
            // The container may already be gone; the relay ends on the master's EIO.
            let _ = set_window_size(master.as_fd(), size);
        }
    };
    resize();

    let mut to_master: Vec<u8> = Vec::new();
    let mut stdin_open = true;
    let mut at_line_start = true;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let master_events = if to_master.is_empty() {
            PollFlags::POLLIN
        } else {
            PollFlags::POLLIN | PollFlags::POLLOUT
        };
        // stdin is left out of the poll set once it has ended (a hung-up fd reports POLLHUP
        // whatever is asked, which would spin) and while much is queued for a container that is
        // not reading.
        let want_stdin = stdin_open && to_master.len() < MAX_QUEUED;
        let mut fds = vec![
            PollFd::new(master.as_fd(), master_events),
            PollFd::new(winch.read_end(), PollFlags::POLLIN),
        ];
        if want_stdin {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(source) => {
                return Err(TtyError::Relay {
                    what: "poll",
                    source,
                });
            }
        }
        let ready = |index: usize| {
            fds.get(index)
                .and_then(PollFd::revents)
                .unwrap_or(PollFlags::empty())
        };
        let (master_ready, winch_ready, stdin_ready) = (ready(0), ready(1), ready(2));
        let readable = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;

        if winch_ready.intersects(readable) {
            winch.drain();
            resize();
        }
        if master_ready.intersects(readable) {
            match nix::unistd::read(master.as_fd(), &mut buf) {
                // EIO: the last slave fd was closed (pty(7)); 0 is the same on other kernels.
                Ok(0) | Err(Errno::EIO) => return Ok(()),
                Ok(n) => write_all(stdout, buf.get(..n).unwrap_or_default())?,
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(source) => {
                    return Err(TtyError::Relay {
                        what: "read from the container's terminal",
                        source,
                    });
                }
            }
        }
        if stdin_ready.intersects(readable) {
            match nix::unistd::read(stdin, &mut buf) {
                Ok(0) => {
                    stdin_open = false;
                    let eof = eof_char(master.as_fd());
                    to_master.push(eof);
                    if !at_line_start {
                        to_master.push(eof);
                    }
                }
                Ok(n) => {
                    let data = buf.get(..n).unwrap_or_default();
                    at_line_start = matches!(data.last(), Some(b'\n' | b'\r'));
                    to_master.extend_from_slice(data);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(source) => {
                    return Err(TtyError::Relay {
                        what: "read standard input",
                        source,
                    });
                }
            }
        }
        if master_ready.contains(PollFlags::POLLOUT) && !to_master.is_empty() {
            match nix::unistd::write(master.as_fd(), &to_master) {
                Ok(n) => {
                    to_master.drain(..n.min(to_master.len()));
                }
                Err(Errno::EIO) => return Ok(()),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(source) => {
                    return Err(TtyError::Relay {
                        what: "write to the container's terminal",
                        source,
                    });
                }
            }
        }
    }
}

/// How many bytes of stdin may wait for the container before stdin is no longer read.
const MAX_QUEUED: usize = 64 * 1024;

/// The terminal's VEOF character, ^D when it cannot be read.
fn eof_char(master: BorrowedFd<'_>) -> u8 {
    termios::tcgetattr(master)
        .ok()
        .and_then(|t| {
            t.control_chars
                .get(SpecialCharacterIndices::VEOF as usize)
                .copied()
        })
        .filter(|c| *c != 0)
        .unwrap_or(0x04)
}

/// Writes all of `data` to a blocking fd.
fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), TtyError> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => {}
            Err(source) => {
                return Err(TtyError::Relay {
                    what: "write standard output",
                    source,
                });
            }
        }
    }
    Ok(())
}

/// O_NONBLOCK on an fd while it lives; the previous flags come back on drop.
struct NonBlocking<'fd> {
    fd: BorrowedFd<'fd>,
    previous: OFlag,
}

impl<'fd> NonBlocking<'fd> {
    fn set(fd: BorrowedFd<'fd>) -> Result<NonBlocking<'fd>, TtyError> {
        let fail = |source| TtyError::Terminal {
            what: "set O_NONBLOCK",
            fd: fd.as_raw_fd(),
            source,
        };
        let previous = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(fail)?);
        fcntl(fd, FcntlArg::F_SETFL(previous | OFlag::O_NONBLOCK)).map_err(fail)?;
        Ok(NonBlocking { fd, previous })
    }
}

impl Drop for NonBlocking<'_> {
    fn drop(&mut self) {
        let _ = fcntl(self.fd, FcntlArg::F_SETFL(self.previous));
    }
}

/// How many relays may run at once in one process (one per `kiln run -t` is the normal case):
/// one SIGWINCH self-pipe each.
const MAX_RELAYS: usize = MAX_WINCH_PIPES;

/// Registers a relay's SIGWINCH self-pipe.
fn register_winch() -> Result<WinchPipe, TtyError> {
    WinchPipe::register().map_err(|error| match error {
        WinchError::Pipe(source) => TtyError::Relay {
            what: "create the SIGWINCH pipe",
            source,
        },
        WinchError::Full => TtyError::TooManyRelays,
        WinchError::Install(source) => TtyError::Relay {
            what: "install the SIGWINCH handler",
            source,
        },
    })
}
