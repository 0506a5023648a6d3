//! Other processes by pidfd (pidfd_open(2), pidfd_send_signal(2)) and waiting for a child,
//! over rustix's safe wrappers, in the `nix` types the rest of kiln uses.
//!
//! A pidfd pins one process: a signal sent through it reaches that process or fails with ESRCH
//! once it has exited, never a successor that reused the pid (the reason runc and systemd signal
//! through pidfds).

use nix::errno::Errno;
use nix::sys::signal::Signal;
use std::os::fd::{BorrowedFd, OwnedFd};

/// A close-on-exec pidfd of process `pid` (pidfd_open(2), Linux 5.3): ESRCH when there is no
/// such process, EINVAL for pid 0 (as the kernel answers).
pub(crate) fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or(Errno::EINVAL)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).map_err(errno)
}

/// Sends `signal` to the process `pidfd` pins (pidfd_send_signal(2) without a siginfo).
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: Signal) -> Result<(), Errno> {
    let signal = rustix::process::Signal::from_named_raw(signal as i32).ok_or(Errno::EINVAL)?;
    rustix::process::pidfd_send_signal(pidfd, signal).map_err(errno)
}

/// Waits for child `pid` to end (waitpid(2), retried on EINTR) and returns its raw wait status
/// (`WIFEXITED` and the rest decode it).
pub(crate) fn wait(pid: i32) -> Result<i32, Errno> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or(Errno::ECHILD)?;
    loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, status))) => return Ok(status.as_raw()),
            // Only WNOHANG reports "nothing yet"; without it, ask again.
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(error) => return Err(errno(error)),
        }
    }
}

/// Makes `command`'s child start with file mode creation mask `umask` and receive SIGKILL when
/// the thread that spawned it dies (`PR_SET_PDEATHSIG`), so what it creates does not depend on
/// kiln's own umask and a killed kiln leaves no helper running (BuildKit's git source runs git
/// with umask 0022 and a parent-death signal the same way).
pub fn child_umask_and_death_signal(command: &mut std::process::Command, umask: u32) {
    use std::os::unix::process::CommandExt as _;
    let mask = rustix::fs::Mode::from_raw_mode(umask);
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: umask(2) and prctl(2) are system calls that neither allocate nor lock,
    // and the closure touches nothing but its copied `mask`.
    unsafe {
        command.pre_exec(move || {
            rustix::process::umask(mask);
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
}

/// The same error number as nix's type.
fn errno(error: rustix::io::Errno) -> Errno {
    Errno::from_raw(error.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A child killed through its pidfd is waited for with SIGKILL's status; the pidfd then
    /// reports ESRCH instead of reaching another process.
    #[test]
    fn signal_through_a_pidfd_then_wait() {
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let pidfd = pidfd_open(pid).unwrap();
        pidfd_send_signal(pidfd.as_fd(), Signal::SIGKILL).unwrap();
        let status = wait(pid).unwrap();
        assert!(libc::WIFSIGNALED(status));
        assert_eq!(libc::WTERMSIG(status), libc::SIGKILL);
        assert_eq!(
            pidfd_send_signal(pidfd.as_fd(), Signal::SIGTERM),
            Err(Errno::ESRCH)
        );
        assert_eq!(wait(pid), Err(Errno::ECHILD));
        assert_eq!(pidfd_open(0).unwrap_err(), Errno::EINVAL);
        // std's handle has nothing left to reap.
        assert!(child.try_wait().is_err());
    }
}
