//! `runtime::tty`: real pseudo-terminals with a busybox child on the slave side.

use crate::support;
use kiln::runtime::tty::{Pty, RawMode, TtyError, WindowSize, relay, set_window_size, window_size};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, LocalFlags};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command};

/// Runs `busybox sh -c script` in a new session whose controlling terminal is `slave`.
fn spawn_on_tty(busybox: &Path, script: &str, slave: OwnedFd) -> Child {
    let mut command = Command::new(busybox);
    command.args(["sh", "-c", script]);
    support::spawn_on_tty(command, slave)
}

/// Reads `fd` until `needle` appears, failing after `limit_secs` of silence.
fn read_until(fd: &OwnedFd, needle: &str, seen: &mut String, limit_secs: u16) {
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(limit_secs * 1000)).expect("poll");
        assert!(
            ready > 0,
            "no {needle:?} from the terminal; read so far: {seen:?}"
        );
        let n = nix::unistd::read(fd.as_fd(), &mut buf).expect("read");
        assert!(
            n > 0,
            "terminal closed before {needle:?}; read so far: {seen:?}"
        );
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn child_sees_a_terminal_of_the_given_size() {
    let Some(busybox) = support::busybox() else {
        return;
    };
    let size = WindowSize {
        rows: 30,
        cols: 100,
    };
    let pty = Pty::open(Some(size)).expect("open pty");
    assert_eq!(window_size(pty.slave.as_fd()), Some(size));
    let mut child = spawn_on_tty(&busybox, "tty; stty size", pty.slave);
    let output = support::read_until_closed(&pty.master, 30);
    assert!(child.wait().expect("wait").success());
    let lines: Vec<&str> = output.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{output:?}");
    assert_eq!(lines[1], "30 100", "{output:?}");
    // The master is close-on-exec, so it never reaches a container.
    let flags =
        nix::fcntl::fcntl(pty.master.as_fd(), nix::fcntl::FcntlArg::F_GETFD).expect("getfd");
    assert_ne!(flags & libc::FD_CLOEXEC, 0);
}

#[test]
fn relay_copies_both_ways_and_forwards_stdin_eof() {
    let Some(busybox) = support::busybox() else {
        return;
    };
    // cat writes back what it reads (the terminal's own echo is off: it would interleave). It
    // exits at end of input, which only the VEOF characters sent for stdin's end can give it:
    // one at the start of a line, two after a partial line.
    let cases = [
        ("", ""),
        ("hello\n", "hello\r\n"),
        ("hello\nabc", "hello\r\nabc"),
        ("a\nb\nc\n", "a\r\nb\r\nc\r\n"),
    ];
    for (input, expected) in cases {
        let pty = Pty::open(None).expect("open pty");
        let mut settings = termios::tcgetattr(pty.slave.as_fd()).expect("tcgetattr");
        settings.local_flags.remove(LocalFlags::ECHO);
        termios::tcsetattr(pty.slave.as_fd(), termios::SetArg::TCSANOW, &settings)
            .expect("echo off");
        let mut child = spawn_on_tty(&busybox, "exec /bin/busybox cat", pty.slave);
        let (stdin_read, stdin_write) = nix::unistd::pipe().expect("pipe");
        let (stdout_read, stdout_write) = nix::unistd::pipe().expect("pipe");
        nix::unistd::write(&stdin_write, input.as_bytes()).expect("write stdin");
        drop(stdin_write);
        let master = pty.master;
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result = relay(&master, stdin_read.as_fd(), stdout_write.as_fd());
            drop(stdout_write);
            let _ = done.send(result.map_err(|e| e.to_string()));
        });
        // A guard against a hang, not a timing assertion: the relay ends when cat exits.
        let result = finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!("{input:?}: the relay did not end: cat never saw end of input")
            });
        result.expect("relay");
        let status = child.wait().expect("wait");
        assert!(
            status.success(),
            "{input:?}: cat exits 0 on end of input: {status:?}"
        );
        let output = support::read_until_closed(&stdout_read, 30);
        assert_eq!(output, expected, "{input:?}");
    }
}

#[test]
fn relay_passes_window_size_changes() {
    let Some(busybox) = support::busybox() else {
        return;
    };
    // The "host terminal" is another pty: the relay writes to its slave, the test reads its master.
    let host = Pty::open(Some(WindowSize { rows: 10, cols: 20 })).expect("host pty");
    let pty = Pty::open(Some(WindowSize { rows: 10, cols: 20 })).expect("container pty");
    let mut child = spawn_on_tty(
        &busybox,
        "trap 'stty size; exit 0' WINCH; echo ready; while :; do /bin/busybox sleep 1; done",
        pty.slave,
    );
    let (stdin_read, stdin_write) = nix::unistd::pipe().expect("pipe");
    let host_slave = host.slave;
    let master = pty.master;
    let relay_thread =
        std::thread::spawn(move || relay(&master, stdin_read.as_fd(), host_slave.as_fd()));
    let mut seen = String::new();
    read_until(&host.master, "ready", &mut seen, 30);
    // The host terminal is resized; the process gets SIGWINCH as a terminal emulator sends it.
    set_window_size(host.master.as_fd(), WindowSize { rows: 33, cols: 77 }).expect("resize host");
    // SAFETY: kill(2) to this process; the relay's handler (or the default, ignore) takes it.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGWINCH) }, 0);
    read_until(&host.master, "33 77", &mut seen, 30);
    let result = relay_thread.join().expect("relay thread");
    result.expect("relay");
    assert!(child.wait().expect("wait").success());
    drop(stdin_write);
}

#[test]
fn raw_mode_is_restored_on_drop_and_unwind() {
    let pty = Pty::open(None).expect("open pty");
    let terminal = pty.slave.as_fd();
    let before = termios::tcgetattr(terminal).expect("tcgetattr");
    assert!(
        before
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO)
    );
    {
        let _raw = RawMode::enter(terminal).expect("raw mode");
        let raw = termios::tcgetattr(terminal).expect("tcgetattr");
        assert!(
            !raw.local_flags
                .intersects(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG)
        );
    }
    let same = |t: &termios::Termios| {
        (
            t.input_flags,
            t.output_flags,
            t.control_flags,
            t.local_flags,
        )
    };
    assert_eq!(
        same(&termios::tcgetattr(terminal).expect("tcgetattr")),
        same(&before)
    );

    let unwound = std::panic::catch_unwind(|| {
        let _raw = RawMode::enter(terminal).expect("raw mode");
        panic!("a panic while the terminal is raw");
    });
    assert!(unwound.is_err());
    assert_eq!(
        same(&termios::tcgetattr(terminal).expect("tcgetattr")),
        same(&before)
    );

    let (pipe, _write) = nix::unistd::pipe().expect("pipe");
    match RawMode::enter(pipe.as_fd()) {
        Err(err @ TtyError::NotATerminal { .. }) => assert_eq!(
            err.to_string(),
            format!(
                "file descriptor {} is not a terminal; run without -t, or from a terminal",
                pipe.as_raw_fd()
            )
        ),
        other => panic!("a pipe is not a terminal: {:?}", other.map(|_| ())),
    }
    assert_eq!(window_size(pipe.as_fd()), None);
}
