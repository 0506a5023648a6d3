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

/// Waits until child `pid` has ended WITHOUT reaping it (waitid(2) with `WNOWAIT`): until
/// [`wait`] reaps it, its pid (and so its process group's id) cannot be taken by another
/// process, so signalling the group is safe meanwhile.
pub(crate) fn wait_unreaped(pid: i32) -> Result<(), Errno> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or(Errno::ECHILD)?;
    let options = rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT;
    loop {
        match rustix::process::waitid(rustix::process::WaitId::Pid(pid), options) {
            Ok(_) => return Ok(()),
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

/// Makes `command`'s child keep the descriptors `fds` across exec: they stay close-on-exec in
/// this process, so no other child started meanwhile (by another thread) inherits them, and only
/// this child's copies lose the flag (a helper given descriptor numbers on its command line, as
/// slirp4netns takes `--exit-fd` and `--ready-fd`).
pub fn keep_open_in_child(command: &mut std::process::Command, fds: Vec<std::os::fd::RawFd>) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: fcntl(2) is a system call that neither allocates nor locks, and the
    // closure only reads its moved vector of integers.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Moves the calling thread into a mount namespace of its own whose mounts are all private
/// (recursively): what it mounts there stays invisible to the rest of the process and the host,
/// and goes away with the thread. CLONE_NEWNS implies CLONE_FS, so the thread's root and working
/// directory become its own too. [`private_mounts_in_child`] does the same in a child.
pub fn unshare_private_mounts() -> Result<(), nix::Error> {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

/// Makes `command`'s child run in a mount namespace of its own whose mounts are all private
/// (recursively), so nothing it mounts or unmounts reaches the caller's namespace. For helpers
/// that rearrange mounts themselves: slirp4netns' `--enable-sandbox` makes only `/` private
/// before its pivot_root and detaches the old root, and in the host's namespace that unmount
/// propagates through every shared submount (other tools' container roots among them).
pub fn private_mounts_in_child(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: unshare(2) and mount(2) are system calls that neither allocate nor
    // lock; the strings are static C literals.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) == -1
                || libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// What the child of a command does between fork and exec to run in a changed root
/// ([`prepare_child`]): all of it prepared beforehand, so the child only makes system calls.
#[derive(Debug, Clone)]
pub struct ChildSetup {
    /// chroot(2) into this directory, then chdir(2) to [`ChildSetup::cwd`] inside it.
    pub root: Option<std::ffi::CString>,
    /// The working directory (inside the new root with `root`).
    pub cwd: Option<std::ffi::CString>,
    /// setgroups(2), setgid(2) and setuid(2) to these: (uid, gid, supplementary groups).
    pub ids: Option<(u32, u32, Vec<u32>)>,
    /// prctl(PR_SET_NO_NEW_PRIVS).
    pub no_new_privileges: bool,
}

/// Makes `command`'s child do `setup` before it executes, then start a process group of its own
/// (so its helpers can be killed together) and receive SIGKILL when the thread that spawned it
/// dies. A failing call fails the spawn with its error.
pub fn prepare_child(command: &mut std::process::Command, setup: ChildSetup) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it makes system calls through libc on the C strings and the vector
    // prepared before the fork (moved into the closure, only read), and neither allocates nor
    // locks (io::Error::last_os_error builds an error from errno without allocating).
    unsafe {
        command.pre_exec(move || {
            let check = |result: libc::c_int| {
                if result == -1 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            if let Some(root) = &setup.root {
                check(libc::chroot(root.as_ptr()))?;
                check(libc::chdir(c"/".as_ptr()))?;
            }
            if let Some(cwd) = &setup.cwd {
                check(libc::chdir(cwd.as_ptr()))?;
            }
            if let Some((uid, gid, groups)) = &setup.ids {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(*gid))?;
                check(libc::setuid(*uid))?;
            }
            if setup.no_new_privileges {
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            }
            check(libc::setpgid(0, 0))?;
            // After setuid, which clears the parent-death signal (prctl(2)).
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
            Ok(())
        });
    }
}

/// SIGKILL to every process of process group `group` (a [`prepare_child`] child's pid): what a
/// command left running behind it. ESRCH (none left) is success.
pub fn kill_process_group(group: i32) -> Result<(), Errno> {
    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno),
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
