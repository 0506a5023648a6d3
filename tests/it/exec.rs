//! `kiln exec` and `kiln top` through the binary, on containers of a busybox image that a
//! foreground `kiln run` (without `--rm`) keeps running in the background: the container's root,
//! hostname, environment, working directory and user (and `-u`/`-w`/`-e` over them), its pid,
//! network and cgroup namespaces and cgroup, its security settings, a terminal from its devpts,
//! docker's exit codes and messages, detached processes that die with the container, and `top`.

use crate::support::{self, kiln};
use kiln::runtime::tty::{Pty, WindowSize};
use kiln::store::Store;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A store holding `box`: busybox with its applets, an `/etc/passwd` with root and `kiln`
/// (1000, home /home/kiln), and `/only-in-container`, a file the host has not got.
struct Images {
    dir: tempfile::TempDir,
}

impl Images {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `kiln --root ROOT ARGS...`, run to the end.
    fn kiln(&self, args: &[&str]) -> support::Output {
        kiln().root(self.root()).args(args).run()
    }

    /// A container running `sleep SECONDS` under a foreground `kiln run` with `flags`.
    fn running(&self, flags: &[&str], seconds: &str) -> Running {
        self.running_as(None, flags, seconds)
    }

    /// [`Images::running`], kiln run as `uid` (and the same gid) when given.
    fn running_as(&self, uid: Option<u32>, flags: &[&str], seconds: &str) -> Running {
        let before: Vec<String> = self.records().into_iter().map(|(id, _)| id).collect();
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["box", "sleep", seconds]);
        let mut command = kiln().root(self.root()).args(&args).command();
        if let Some(uid) = uid {
            command.uid(uid).gid(uid);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kiln run");
        let mut running = Running {
            child,
            id: String::new(),
            pid: 0,
        };
        let started = support::within(20, || {
            self.records()
                .into_iter()
                .any(|(id, pid)| !before.contains(&id) && pid.is_some())
        });
        assert!(started, "the container never started");
        let (id, pid) = self
            .records()
            .into_iter()
            .find(|(id, _)| !before.contains(id))
            .expect("the new container");
        running.id = id;
        running.pid = i32::try_from(pid.expect("a pid")).expect("pid");
        // The record has the pid once the workload executed; its command line says so too.
        assert!(support::within(10, || {
            fs::read(format!("/proc/{}/cmdline", running.pid))
                .is_ok_and(|c| c.starts_with(b"sleep\0"))
        }));
        running
    }

    /// The store's containers: id and recorded pid.
    fn records(&self) -> Vec<(String, Option<u32>)> {
        Store::open(&self.root())
            .expect("open store")
            .containers()
            .expect("containers")
            .into_iter()
            .map(|record| (record.id, record.pid))
            .collect()
    }
}

/// A background `kiln run` and its container; killed (with its container) when dropped.
struct Running {
    child: Child,
    id: String,
    /// The container's pid 1 (host pid).
    pid: i32,
}

impl Running {
    /// `readlink /proc/PID1/ns/NAME` as the host sees it.
    fn namespace(&self, name: &str) -> String {
        fs::read_link(format!("/proc/{}/ns/{name}", self.pid))
            .expect("namespace link")
            .display()
            .to_string()
    }

    /// Stops the container (SIGKILL to its pid 1) and waits for its `kiln run`.
    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Root, busybox and the `box` image (imported from a root filesystem tar).
fn images() -> Option<Images> {
    support::root()?;
    let busybox = support::busybox()?;
    let dir = tempfile::tempdir().expect("temp dir");
    let rootfs = dir.path().join("rootfs");
    support::populate(
        &rootfs,
        &[
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nkiln:x:1000:1000:kiln:/home/kiln:/bin/sh\n",
            ),
            ("etc/group", "root:x:0:\nkiln:x:1000:\n"),
            ("only-in-container", "yes\n"),
            ("tmp/", ""),
            ("home/kiln/", ""),
            ("root/", ""),
            ("bin/", ""),
        ],
    );
    fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("applet link");
        }
    }
    let tar = dir.path().join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    let images = Images { dir };
    images
        .kiln(&["import", tar.to_str().expect("utf-8"), "box"])
        .success();
    Some(images)
}

fn assert_ran(out: &support::Output, code: i32, stdout: &str) {
    assert_eq!(
        (out.status.code(), out.stdout_str().as_str()),
        (Some(code), stdout),
        "stderr: {}",
        out.stderr_str()
    );
}

/// The host's `readlink /proc/self/ns/NAME`.
fn host_namespace(name: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{name}"))
        .expect("namespace link")
        .display()
        .to_string()
}

#[test]
fn exec_runs_in_the_containers_root_namespaces_and_defaults() {
    let Some(images) = images() else { return };
    let running = images.running(
        &[
            "--hostname",
            "ctrhost",
            "-e",
            "CTR_VAR=from-run",
            "-w",
            "/tmp",
            "-u",
            "kiln",
            "--network",
            "none",
        ],
        "5101",
    );
    let id = running.id.as_str();
    assert!(!Path::new("/only-in-container").exists());
    let out = images.kiln(&["exec", id, "ls", "/"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_str());
    assert!(
        out.stdout_str().lines().any(|l| l == "only-in-container"),
        "{}",
        out.stdout_str()
    );

    // The container's defaults, found by id prefix too.
    let script = "hostname; echo $CTR_VAR; pwd; id -u; echo $HOME";
    let out = images.kiln(&["exec", &id[..12], "sh", "-c", script]);
    assert_ran(&out, 0, "ctrhost\nfrom-run\n/tmp\n1000\n/home/kiln\n");
    // -u, -w and -e over them.
    let out = images.kiln(&[
        "exec",
        "-u",
        "root",
        "-w",
        "/home",
        "-e",
        "CTR_VAR=over",
        id,
        "sh",
        "-c",
        script,
    ]);
    assert_ran(&out, 0, "ctrhost\nover\n/home\n0\n/root\n");

    // The pid namespace: the container's pid 1 is 1 here; the net namespace is pid 1's (its
    // own: --network none), not the host's.
    let out = images.kiln(&[
        "exec",
        id,
        "sh",
        "-c",
        "tr '\\0' ' ' < /proc/1/cmdline; echo; readlink /proc/self/ns/pid; readlink /proc/self/ns/net",
    ]);
    let expected = format!(
        "sleep 5101 \n{}\n{}\n",
        running.namespace("pid"),
        running.namespace("net")
    );
    assert_ran(&out, 0, &expected);
    assert_ne!(running.namespace("net"), host_namespace("net"));
    let out = images.kiln(&["exec", id, "cat", "/proc/net/dev"]);
    assert!(
        out.stdout_str().lines().count() == 3 && out.stdout_str().contains("lo:"),
        "only loopback: {}",
        out.stdout_str()
    );

    // A file written by exec is in the container's root (as its pid 1 sees it).
    images
        .kiln(&["exec", id, "sh", "-c", "echo from-exec > /tmp/written"])
        .success();
    let seen = fs::read_to_string(format!("/proc/{}/root/tmp/written", running.pid));
    assert_eq!(seen.expect("the container sees the file"), "from-exec\n");

    // The same restrictions as the container's process: bounding set, no_new_privs, seccomp.
    let status = |pid: &str| -> Vec<String> {
        let text = if pid == "self" {
            images
                .kiln(&["exec", "-u", "root", id, "cat", "/proc/self/status"])
                .success()
                .stdout_str()
        } else {
            fs::read_to_string(format!("/proc/{pid}/status")).expect("status")
        };
        text.lines()
            .filter(|l| {
                l.starts_with("CapBnd") || l.starts_with("NoNewPrivs") || l.starts_with("Seccomp:")
            })
            .map(String::from)
            .collect()
    };
    let theirs = status(&running.pid.to_string());
    assert_eq!(theirs.len(), 3, "{theirs:?}");
    assert_eq!(status("self"), theirs);
    assert!(theirs.contains(&"Seccomp:\t2".to_string()), "{theirs:?}");
}

#[test]
fn exec_joins_the_containers_cgroup_and_dies_with_it_and_top_lists_it() {
    let Some(images) = images() else { return };
    let mut running = images.running(&["--memory", "64m", "--pids-limit", "50"], "5201");
    let id = running.id.clone();
    // Detached: nothing printed, the process keeps running after kiln exec returns.
    let out = images.kiln(&["exec", "-d", &id, "sleep", "5202"]);
    assert_ran(&out, 0, "");
    assert_eq!(out.stderr_str(), "");
    let exec_pids = support::processes_running(&["sleep", "5202"]);
    assert_eq!(exec_pids.len(), 1, "{exec_pids:?}");
    let cgroup = |pid: i32| fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert_eq!(cgroup(exec_pids[0]), cgroup(running.pid));
    assert!(cgroup(running.pid).contains(&format!("/kiln/{id}")));

    // docker top's columns; the container's processes, the exec'd one included, not kiln's.
    let out = images.kiln(&["top", &id]).success();
    let text = out.stdout_str();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "UID                 PID                 PPID                C                   \
             STIME               TTY                 TIME                CMD"
        )
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let pids: Vec<String> = rows.iter().map(|r| r[1].to_string()).collect();
    assert!(pids.contains(&running.pid.to_string()), "{text}");
    assert!(pids.contains(&exec_pids[0].to_string()), "{text}");
    assert!(!pids.contains(&running.child.id().to_string()), "{text}");
    assert_eq!(rows.len(), 2, "{text}");
    for row in &rows {
        assert_eq!(row[0], "root", "{text}");
        assert_eq!(row[5], "?", "{text}");
        assert_eq!(row[6], "00:00:00", "{text}");
        assert!(row[4].len() == 5 && row[4].contains(':'), "STIME: {text}");
    }
    let cmds: Vec<String> = rows.iter().map(|r| r[7..].join(" ")).collect();
    assert!(cmds.contains(&"sleep 5201".to_string()), "{text}");
    assert!(cmds.contains(&"sleep 5202".to_string()), "{text}");
    // Other ps options go to the host's ps, filtered to the container's pids.
    if support::tool("ps").is_some() {
        let out = images.kiln(&["top", &id, "-o", "pid,comm"]).success();
        let text = out.stdout_str();
        assert!(text.starts_with("PID "), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    // The container stops: the exec'd process goes with it (its pid namespace ends).
    running.stop();
    assert!(
        support::within(5, || support::processes_running(&["sleep", "5202"])
            .is_empty()),
        "the exec'd process outlived its container"
    );
    let out = images.kiln(&["top", &id]).code(1);
    assert!(
        out.stderr_str()
            .contains(&format!("Container {id} is not running")),
        "{}",
        out.stderr_str()
    );
}

#[test]
fn exec_exit_codes_and_messages_follow_docker() {
    let Some(images) = images() else { return };
    let mut running = images.running(&[], "5301");
    let id = running.id.clone();
    assert_ran(&images.kiln(&["exec", &id, "sh", "-c", "exit 3"]), 3, "");
    let out = images.kiln(&["exec", &id, "no-such-program"]).code(127);
    assert!(
        out.stderr_str()
            .contains("exec: \"no-such-program\": executable file not found in $PATH"),
        "{}",
        out.stderr_str()
    );
    let out = images.kiln(&["exec", &id, "/etc/passwd"]).code(126);
    assert!(
        out.stderr_str().contains("permission denied"),
        "{}",
        out.stderr_str()
    );
    let out = images.kiln(&["exec", "-u", "nobody", &id, "id"]).code(126);
    assert!(out.stderr_str().contains("nobody"), "{}", out.stderr_str());
    let out = images.kiln(&["exec", "-w", "/nope", &id, "pwd"]).code(126);
    assert!(out.stderr_str().contains("/nope"), "{}", out.stderr_str());
    // stdin only with -i.
    let out = kiln()
        .root(images.root())
        .args(["exec", "-i", &id, "cat"])
        .stdin("piped in\n")
        .run();
    assert_ran(&out, 0, "piped in\n");
    let out = kiln()
        .root(images.root())
        .args(["exec", &id, "cat"])
        .stdin("piped in\n")
        .run();
    assert_ran(&out, 0, "");

    let out = images.kiln(&["exec", "-d", "-t", &id, "true"]).code(126);
    assert!(
        out.stderr_str().contains("use -d without -t"),
        "{}",
        out.stderr_str()
    );

    // A killed kiln exec leaves no process of its own behind in the container.
    let mut exec = kiln()
        .root(images.root())
        .args(["exec", &id, "sleep", "5302"])
        .spawn();
    assert!(
        support::within(20, || !support::processes_running(&["sleep", "5302"])
            .is_empty()),
        "the exec'd process never started"
    );
    exec.kill().expect("SIGKILL kiln exec");
    exec.wait().expect("wait");
    assert!(
        support::within(5, || support::processes_running(&["sleep", "5302"])
            .is_empty()),
        "the exec'd process outlived the killed kiln exec"
    );

    running.stop();
    let out = images.kiln(&["exec", &id, "true"]).code(1);
    assert!(
        out.stderr_str()
            .contains(&format!("Container {id} is not running")),
        "{}",
        out.stderr_str()
    );
    let out = images.kiln(&["exec", "no-such-container", "true"]).code(1);
    assert!(
        out.stderr_str().contains("no-such-container"),
        "{}",
        out.stderr_str()
    );
}

#[test]
fn exec_it_gives_a_shell_on_a_terminal_of_the_container() {
    let Some(images) = images() else { return };
    let running = images.running(&[], "5401");
    let pty = Pty::open(Some(WindowSize { rows: 30, cols: 90 })).expect("pty");
    let mut child = support::spawn_on_tty(
        kiln()
            .root(images.root())
            .args(["exec", "-it", &running.id, "sh"])
            .command(),
        pty.slave,
    );
    nix::unistd::write(&pty.master, b"echo hi; tty; stty size; exit 3\n").expect("type");
    let output = support::read_until_closed(&pty.master, 30);
    let status = child.wait().expect("wait");
    let lines: Vec<&str> = output.split("\r\n").collect();
    assert!(lines.contains(&"hi"), "{output:?}");
    assert!(lines.contains(&"30 90"), "{output:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("/dev/pts/")),
        "{output:?}"
    );
    assert_eq!(status.code(), Some(3), "{output:?}");
}

/// A rootless container (kiln run by an unprivileged user, its sandbox in the user namespace
/// that kiln made) is joined by the same user's kiln exec: the user namespace first, from the
/// initial one, where its owner has every capability over it.
#[test]
fn rootless_exec_joins_the_containers_user_namespace() {
    let Some(images) = images() else { return };
    const NOBODY: u32 = 65534;
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(images.dir.path())
        .status()
        .expect("chown");
    assert!(chown.success());
    let running = images.running_as(Some(NOBODY), &[], "5501");
    let as_nobody = |args: &[&str]| {
        kiln()
            .root(images.root())
            .args(args)
            .command()
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .expect("kiln")
    };
    let out = as_nobody(&[
        "exec",
        &running.id,
        "sh",
        "-c",
        "id -u; cat /only-in-container; readlink /proc/self/ns/user",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        (out.status.code(), stdout.as_ref()),
        (
            Some(0),
            format!("0\nyes\n{}\n", running.namespace("user")).as_str()
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(running.namespace("user"), host_namespace("user"));
    let out = as_nobody(&["top", &running.id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.ends_with(" sleep 5501")),
        "{stdout}"
    );
}

/// SIGTERM to kiln exec reaches the exec'd process (as kiln run forwards to its container).
#[test]
fn sigterm_to_kiln_exec_is_forwarded() {
    use std::io::{BufRead as _, BufReader, Read as _};
    let Some(images) = images() else { return };
    let running = images.running(&[], "5601");
    let script =
        "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done";
    let mut child = kiln()
        .root(images.root())
        .args(["exec", &running.id, "sh", "-c", script])
        .spawn();
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("read");
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let mut rest = String::new();
    reader.read_to_string(&mut rest).expect("read");
    assert_eq!(rest, "got TERM\n");
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}
