//! The sandbox's side of `clone(2)`: the first process of the new namespaces (pid 1 there).
//!
//! kiln may be multi-threaded (tokio, the test harness), and `clone` without `CLONE_VM` copies
//! only the calling thread. Any lock another thread held at that moment (malloc's arenas,
//! stdout's mutex, the environment lock) stays locked forever in the child, and glibc's
//! bookkeeping still lists threads that do not exist there. So from `clone` to `execve` this code
//! only reads memory prepared by the parent and makes async-signal-safe system calls: no
//! allocation, no `std::env`, no printing, no panics (fork(2) NOTES, signal-safety(7)). Errors go
//! to the parent as a fixed-size [`Report`] through a close-on-exec pipe.
//!
//! Sequence: reset signal dispositions (Rust ignores SIGPIPE, and an ignored signal stays ignored
//! across execve), close inherited descriptors, wait until the parent has written the id maps
//! and cgroup membership, run the setup steps, then either run the workload steps (the process
//! execs and the workload is pid 1) or fork the workload and become the tiny init.

use super::kernel::{self, Kernel};
use super::linux::Linux;
use super::setup::{Action, Setup};
use libc::c_int;
use nix::errno::Errno;

/// The report step number for "waiting for the parent".
pub(crate) const STEP_SYNC: u32 = u32::MAX;
/// The report step number for "forking the workload".
pub(crate) const STEP_FORK: u32 = u32::MAX - 1;
/// A step index that does not fit the report (plans have a few dozen steps; never happens).
const STEP_UNNUMBERED: u32 = u32::MAX - 2;

/// `CAP_KILL` (linux/capability.h), the one capability the init keeps.
const CAP_KILL: u64 = 1 << 5;

/// The signals the init waits for: SIGCHLD, and those it forwards to the workload (what a
/// caller sends: stop requests, reload, user signals, window size).
const WAITED: [c_int; 8] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// What a failed step sends to the parent: 8 bytes, one `write` (atomic below `PIPE_BUF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Report {
    /// Index of the failed step in setup ++ workload, or [`STEP_SYNC`]/[`STEP_FORK`].
    pub step: u32,
    /// The kernel's error number.
    pub errno: i32,
}

impl Report {
    /// The wire form.
    pub(crate) fn encode(self) -> [u8; 8] {
        let mut bytes = [0u8; 8];
        let (step, errno) = bytes.split_at_mut(4);
        step.copy_from_slice(&self.step.to_ne_bytes());
        errno.copy_from_slice(&self.errno.to_ne_bytes());
        bytes
    }

    /// From the wire form.
    pub(crate) fn decode(bytes: [u8; 8]) -> Report {
        let [a, b, c, d, e, f, g, h] = bytes;
        Report {
            step: u32::from_ne_bytes([a, b, c, d]),
            errno: i32::from_ne_bytes([e, f, g, h]),
        }
    }
}

/// Everything the child needs, prepared by the parent.
pub(crate) struct Child<'a> {
    /// The steps.
    pub plan: &'a Setup,
    /// Read end of the pipe the parent writes one byte to when the maps and cgroups are set.
    pub sync: c_int,
    /// Write end of the close-on-exec report pipe.
    pub report: c_int,
    /// With an init: write end of the pipe it sends the workload's wait status through.
    pub status: Option<c_int>,
    /// Descriptors to keep open (sorted): 0, 1, 2 and those above. Everything else inherited
    /// from the parent is closed first thing.
    pub keep: &'a [c_int],
}

/// Sends `report` to the parent (best effort: if the pipe is gone, so is the parent).
fn send(fd: c_int, report: Report) {
    let bytes = report.encode();
    // SAFETY: writing a live buffer.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// `_exit(2)`: no atexit handlers, no stdio flushing (both belong to the parent).
fn exit(code: c_int) -> ! {
    // SAFETY: ends the process.
    unsafe { libc::_exit(code) }
}

/// SIGKILL when the thread that made the sandbox dies (prctl(2) `PR_SET_PDEATHSIG`): a kiln
/// killed with SIGKILL cannot stop its sandboxes, and their processes would live on under the
/// host's pid 1. As the sandbox's pid 1 dies, the kernel kills the rest of its pid namespace.
/// The spawning thread waits for the sandbox (`kiln run`'s main thread, a RUN step's worker), so
/// it lives as long as the sandbox should. A change of effective or filesystem ids clears the
/// setting, so [`Linux`]'s `set_uid`/`set_gid` arm it again (the workload is pid 1 without
/// `--init`; with it, kiln's init keeps its ids and the setting).
pub(crate) fn die_with_parent() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
}

/// Whether a parent-death signal is set (prctl(2) `PR_GET_PDEATHSIG`).
pub(crate) fn parent_death_armed() -> bool {
    let mut signal: c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int to a live slot.
    let ok = unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut signal as *mut c_int, 0, 0, 0) };
    ok == 0 && signal != 0
}

/// Every signal back to its default disposition and unblocked.
fn reset_signals() {
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask and no flags; glibc's
        // reserved signals are refused with EINVAL, which is fine.
        unsafe {
            let action: libc::sigaction = std::mem::zeroed();
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    set_mask(&sigset(&[]));
}

/// The set of `signals`.
fn sigset(signals: &[c_int]) -> libc::sigset_t {
    // SAFETY: sigset operations on a local set (an all-zero sigset_t is a valid starting value).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Replaces the signal mask with `set`.
fn set_mask(set: &libc::sigset_t) {
    // SAFETY: a live set; the old mask is not wanted.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, set, std::ptr::null_mut()) };
}

/// Closes every descriptor not in `keep` (sorted ascending): the parent's other files, pipes of
/// other sandboxes and sockets must not live on in the sandbox.
fn close_others(keep: &[c_int]) {
    let mut next: u32 = 0;
    for &fd in keep {
        let Ok(fd) = u32::try_from(fd) else { continue };
        if fd > next {
            // SAFETY: close_range takes integers only.
            unsafe { libc::syscall(libc::SYS_close_range, next, fd - 1, 0) };
        }
        next = fd.saturating_add(1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0) };
}

/// The exit code of a workload whose step failed: 127/126 for exec, as a shell reports them.
fn failure_code(step: Option<&Action>, errno: Errno) -> c_int {
    match (step, errno) {
        (Some(Action::Exec(_)), Errno::ENOENT) => 127,
        (Some(Action::Exec(_)), _) => 126,
        _ => 125,
    }
}

/// Runs the workload steps; returns only if one failed (the exec step fails by returning).
fn workload(child: &Child<'_>, kernel: &mut Linux) -> ! {
    let first = child.plan.setup.len();
    let failure = match kernel::run(kernel, &child.plan.workload, first) {
        Err(failure) => failure,
        // Unreachable with a plan ending in exec; exit like a failed setup anyway.
        Ok(()) => exit(125),
    };
    let step = failure
        .step
        .checked_sub(first)
        .and_then(|i| child.plan.workload.get(i));
    send(
        child.report,
        Report {
            step: u32::try_from(failure.step).unwrap_or(STEP_UNNUMBERED),
            errno: failure.errno as i32,
        },
    );
    exit(failure_code(step, failure.errno))
}

/// Creates the sandbox's first process in new namespaces (`flags`: `CLONE_NEW*`) and returns its
/// pid to the parent; the child runs [`main`] and never returns here. A raw clone(2) with
/// SIGCHLD and no stack behaves like fork(2) but can create the namespaces; the child continues
/// on a copy of this stack.
pub(crate) fn clone(flags: c_int, child: &Child<'_>) -> Result<i32, Errno> {
    // SAFETY: the child only runs `main`, which follows fork's async-signal-safety rules and ends
    // in execve or _exit; it never returns into the parent's frames.
    let pid = unsafe { fork_like(flags)? };
    if pid == 0 {
        main(child);
    }
    Ok(pid)
}

/// clone(2) with SIGCHLD and no stack, `flags` adding namespaces: fork(2)'s behaviour, the child
/// continuing on a copy of this stack. Returns 0 in the child, the child's pid in the parent.
///
/// # Safety
/// The child runs in a copy of a possibly multithreaded process: its branch may only make
/// async-signal-safe calls and must end in execve or _exit, never returning into the caller's
/// frames.
unsafe fn fork_like(flags: c_int) -> Result<i32, Errno> {
    // SAFETY: the caller upholds the child's rules (see above).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(Errno::last());
    }
    // The kernel's pids fit in i32 (PID_MAX_LIMIT is 2^22).
    Ok(pid as i32)
}

/// What `kiln exec`'s children need besides [`Child`] (whose plan's `setup` joins the
/// container, see `setup::prepare_exec`).
pub(crate) struct Joiner<'a> {
    /// The plan, the sync and report pipes, the descriptors to keep (`status` is unused).
    pub child: Child<'a>,
    /// Write end of the pipe the first child sends the workload's pid through (4 bytes).
    pub pid_pipe: c_int,
    /// The workload outlives kiln (`kiln exec -d`): no parent-death signal.
    pub detached: bool,
}

/// Starts a process in a running container: a fork-like child (single-threaded, as setns(2) of
/// a mount or user namespace requires) joins the namespaces, then forks the workload with
/// `CLONE_PARENT` so it is in the pid namespace (setns of a pid namespace only places the
/// caller's later children there) and is this process's child, sends its pid and exits (runc's
/// nsexec does the same dance). Returns the first child's pid; the caller reaps it and reads
/// the workload's pid from the pipe.
pub(crate) fn spawn_joined(joiner: &Joiner<'_>) -> Result<i32, Errno> {
    // SAFETY: as in `clone`: the child only runs `join`, which follows fork's rules and ends in
    // _exit.
    let pid = unsafe { fork_like(0)? };
    if pid == 0 {
        join(joiner);
    }
    Ok(pid)
}

/// The first child of [`spawn_joined`]. Never returns.
fn join(joiner: &Joiner<'_>) -> ! {
    let child = &joiner.child;
    reset_signals();
    die_with_parent();
    close_others(child.keep);
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0) };
    let mut kernel = Linux;
    if let Err(failure) = kernel::run(&mut kernel, &child.plan.setup, 0) {
        send(
            child.report,
            Report {
                step: u32::try_from(failure.step).unwrap_or(STEP_UNNUMBERED),
                errno: failure.errno as i32,
            },
        );
        exit(125);
    }
    // SAFETY: fork-like clone (no CLONE_VM, no new stack): the child continues on a copy.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0,
            0,
            0,
            0,
        )
    };
    if pid == 0 {
        // The parent is kiln's thread now (CLONE_PARENT), which waits for this process.
        if joiner.detached {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
        } else {
            die_with_parent();
        }
        kernel.close(joiner.pid_pipe);
        wait_for_parent(child);
        kernel.close(child.sync);
        workload(child, &mut kernel);
    }
    if pid < 0 {
        send(
            child.report,
            Report {
                step: STEP_FORK,
                errno: Errno::last() as i32,
            },
        );
        exit(125);
    }
    let bytes = (pid as i32).to_ne_bytes();
    // SAFETY: writing a live buffer.
    unsafe { libc::write(joiner.pid_pipe, bytes.as_ptr().cast(), bytes.len()) };
    exit(0)
}

/// Blocks until the parent writes its one byte to the sync pipe (it has set the id maps and the
/// cgroups); reports and exits when the parent gave up.
fn wait_for_parent(child: &Child<'_>) {
    let mut byte = 0u8;
    loop {
        // SAFETY: reading one byte into a live buffer.
        let n = unsafe { libc::read(child.sync, (&mut byte as *mut u8).cast(), 1) };
        match n {
            1 => return,
            -1 if Errno::last() == Errno::EINTR => continue,
            // 0: the parent gave up (and will reap us); -1: cannot happen on a pipe we own.
            _ => {
                let errno = if n == 0 { 0 } else { Errno::last() as i32 };
                send(
                    child.report,
                    Report {
                        step: STEP_SYNC,
                        errno,
                    },
                );
                exit(125);
            }
        }
    }
}

/// The sandbox's first process. Never returns.
fn main(child: &Child<'_>) -> ! {
    reset_signals();
    die_with_parent();
    close_others(child.keep);
    // Setup creates files with exact modes; the workload gets Docker's 0022 later.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0) };

    wait_for_parent(child);
    let mut kernel = Linux;
    kernel.close(child.sync);

    if let Err(failure) = kernel::run(&mut kernel, &child.plan.setup, 0) {
        send(
            child.report,
            Report {
                step: u32::try_from(failure.step).unwrap_or(STEP_UNNUMBERED),
                errno: failure.errno as i32,
            },
        );
        exit(125);
    }

    match child.status {
        None => workload(child, &mut kernel),
        Some(status) => init(child, &mut kernel, status),
    }
}

/// Forks the workload and stays as pid 1: reaps every zombie, forwards the [`WAITED`] signals, and
/// when the workload exits kills whatever is left, sends the workload's wait status to the parent
/// and exits. The kernel then kills the rest of the namespace (pid_namespaces(7)).
fn init(child: &Child<'_>, kernel: &mut Linux, status: c_int) -> ! {
    // Blocked before the fork so no signal or SIGCHLD is lost in between (a blocked signal is
    // queued even for pid 1, which otherwise drops signals it has no handler for); the workload
    // unblocks them.
    let set = sigset(&WAITED);
    set_mask(&set);
    // Its own session: a terminal's ^C must reach kiln, which decides what to forward.
    // SAFETY: no arguments.
    unsafe { libc::setsid() };

    // A raw clone, not fork(3): glibc's fork takes malloc's locks, which another thread of the
    // parent may have held when we were cloned.
    // SAFETY: fork-like clone (no CLONE_VM, no new stack): the child continues on a copy.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    if pid == 0 {
        set_mask(&sigset(&[]));
        workload(child, kernel);
    }
    if pid < 0 {
        send(
            child.report,
            Report {
                step: STEP_FORK,
                errno: Errno::last() as i32,
            },
        );
        exit(125);
    }
    let workload = pid as libc::pid_t;

    // Keep only the status pipe: the workload's stdio and the report pipe must close when the
    // workload's side does. Then nothing left to steal: not dumpable (no ptrace, /proc/1 is
    // root-only) and only CAP_KILL, which kill(-1) needs for workloads running as other users.
    close_others(&[status]);
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let _ = kernel.capset(CAP_KILL, 0);

    loop {
        // SAFETY: a live set and a null siginfo pointer.
        let signal = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if signal == libc::SIGCHLD {
            if let Some(wait_status) = reap(workload) {
                // Whatever the workload left behind dies now; then collect it.
                // SAFETY: kill(-1) from pid 1 signals every other process of the namespace.
                unsafe { libc::kill(-1, libc::SIGKILL) };
                while reap_one(0).is_some() {}
                let bytes = wait_status.to_ne_bytes();
                // SAFETY: writing a live buffer.
                unsafe { libc::write(status, bytes.as_ptr().cast(), bytes.len()) };
                exit(0);
            }
        } else if signal > 0 {
            // SAFETY: plain integers.
            unsafe { libc::kill(workload, signal) };
        }
    }
}

/// Reaps every exited child without blocking; returns the workload's wait status if it was one.
fn reap(workload: libc::pid_t) -> Option<c_int> {
    let mut found = None;
    while let Some((pid, status)) = reap_one(libc::WNOHANG) {
        if pid == workload {
            found = Some(status);
        }
    }
    found
}

/// One `waitpid(-1)`: `None` when there is nothing (more) to reap.
fn reap_one(flags: c_int) -> Option<(libc::pid_t, c_int)> {
    loop {
        let mut status = 0;
        // SAFETY: a live status slot.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        if pid > 0 {
            return Some((pid, status));
        }
        if pid == -1 && Errno::last() == Errno::EINTR {
            continue;
        }
        return None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips() {
        for report in [
            Report { step: 0, errno: 0 },
            Report {
                step: STEP_SYNC,
                errno: libc::EPERM,
            },
            Report {
                step: 17,
                errno: -5,
            },
        ] {
            assert_eq!(Report::decode(report.encode()), report);
        }
    }
}
