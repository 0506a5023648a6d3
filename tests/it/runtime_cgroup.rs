//! `runtime::cgroup` against the real kernel (root only): limits hold, OOM kills are seen, and
//! nothing is left behind.

use crate::support;
use kiln::runtime::cgroup::{Cgroup, Limits};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A busybox shell that waits for a line on stdin before running `script`, so the test can put
/// it into the cgroup first.
fn gated_shell(busybox: &PathBuf, script: &str) -> Child {
    Command::new(busybox)
        .args(["sh", "-c", &format!("read go; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn busybox sh")
}

fn start(child: &mut Child) {
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release the child");
}

fn dirs(cgroup: &Cgroup) -> Vec<PathBuf> {
    cgroup
        .procs_files()
        .iter()
        .filter_map(|f| f.parent().map(PathBuf::from))
        .collect()
}

fn name(test: &str) -> String {
    format!("it-{}-{test}", std::process::id())
}

#[test]
fn memory_limit_oom_kills_and_is_reported() {
    let (Some(()), Some(busybox)) = (support::root(), support::busybox()) else {
        return;
    };
    let limits = Limits {
        memory: Some(64 << 20),
        ..Limits::default()
    };
    let cgroup = Cgroup::create(&name("oom"), &limits).expect("create cgroup");
    // dd's 200 MiB buffer, filled from /dev/zero, is resident memory.
    let mut child = gated_shell(
        &busybox,
        "exec /bin/busybox dd if=/dev/zero of=/dev/null bs=200M count=1",
    );
    cgroup.add_pid(child.id() as i32).expect("add pid");
    assert!(!cgroup.oom_killed(), "no OOM before the workload runs");
    start(&mut child);
    let status = child.wait().expect("wait");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "killed by the OOM killer: {status:?}"
    );
    assert!(cgroup.oom_killed(), "oom_killed() after an OOM kill");
    let peak = cgroup.memory_peak().expect("memory peak");
    assert!(peak <= 64 << 20, "peak {peak} within the limit");
    let dirs = dirs(&cgroup);
    cgroup.destroy().expect("destroy");
    for dir in dirs {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
}

#[test]
fn pids_limit_makes_fork_fail() {
    let (Some(()), Some(busybox)) = (support::root(), support::busybox()) else {
        return;
    };
    let limits = Limits {
        pids: Some(10),
        ..Limits::default()
    };
    let cgroup = Cgroup::create(&name("pids"), &limits).expect("create cgroup");
    // The shell and 9 sleeps make 10; the 10th sleep's fork fails with EAGAIN and the
    // non-interactive shell exits. The sleeps must not hold the shell's output pipes open.
    let mut child = gated_shell(
        &busybox,
        "i=0; while [ $i -lt 30 ]; do /bin/busybox sleep 1000 </dev/null >/dev/null 2>&1 & i=$((i+1)); done; echo all forked",
    );
    cgroup.add_pid(child.id() as i32).expect("add pid");
    assert_eq!(cgroup.pids_current(), Some(1));
    start(&mut child);
    let status = child.wait().expect("wait");
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert!(!status.success(), "the shell fails: {status:?}");
    assert_eq!(stdout, "", "not every fork succeeded");
    assert!(
        stderr.contains("Resource temporarily unavailable"),
        "fork fails with EAGAIN: {stderr}"
    );
    // The 9 sleeps are left: the shell itself has exited.
    assert_eq!(cgroup.pids_current(), Some(9));
    let dirs = dirs(&cgroup);
    cgroup
        .destroy()
        .expect("destroy kills the sleeps and removes the cgroup");
    for dir in dirs {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
}

#[test]
fn drop_kills_and_removes() {
    let (Some(()), Some(busybox)) = (support::root(), support::busybox()) else {
        return;
    };
    let limits = Limits {
        memory: Some(64 << 20),
        pids: Some(20),
        cpus: Some(0.5),
    };
    let cgroup = Cgroup::create(&name("drop"), &limits).expect("create cgroup");
    let mut child = gated_shell(&busybox, "exec /bin/busybox sleep 1000");
    cgroup.add_pid(child.id() as i32).expect("add pid");
    let dirs = dirs(&cgroup);
    assert_eq!(dirs.len(), 3, "memory, pids and cpu: {dirs:?}");
    let quota = dirs
        .iter()
        .map(|d| d.join("cpu.cfs_quota_us"))
        .find(|f| f.exists())
        .expect("a cpu cgroup");
    assert_eq!(
        std::fs::read_to_string(quota).expect("quota").trim(),
        "50000"
    );
    start(&mut child);
    drop(cgroup);
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    for dir in dirs {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
}
