//! Real sandboxes (as root, and rootless through a re-run of this binary as uid 65534) on a
//! busybox root filesystem: output and exit codes, pid 1, namespaces, the forbidden operations,
//! CVE-2024-21626's working directory, daemons, exec errors, bind mounts, users and
//! capabilities, signals, cgroups and ttys.

use crate::support;
use kiln::runtime::tty::WindowSize;
use kiln::runtime::{
    ExecErrorKind, Mount, MountSource, Network, Outcome, RootFs, RuntimeError, Sandbox, Spec,
    Stdio, UpperDir, User,
};
use nix::sys::signal::Signal;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::{self, JoinHandle};

/// Set in the environment of the rootless re-run of this binary.
const ROOTLESS_CHILD: &str = "KILN_SANDBOX_ROOTLESS_CHILD";

/// A busybox root filesystem (the only lower dir) with an empty upper and work dir, in a
/// world-readable temporary directory, next to a sentinel file the sandbox must never see.
struct Fixture {
    dir: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    /// Name of a file in `dir` (beside the root filesystem) on the host.
    sentinel: String,
}

impl Fixture {
    fn new(busybox: &Path) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        // World-readable: a remapped or rootless sandbox's root must be able to reach it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let lower = dir.path().join("lower");
        let upper = dir.path().join("upper");
        let work = dir.path().join("work");
        for sub in ["bin", "proc", "dev", "sys", "etc", "mnt", "root"] {
            fs::create_dir_all(lower.join(sub)).expect("mkdir");
        }
        let tmp = lower.join("tmp");
        fs::create_dir(&tmp).expect("mkdir tmp");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
        for path in [&upper, &work] {
            fs::create_dir(path).expect("mkdir");
        }
        fs::copy(busybox, lower.join("bin/busybox")).expect("copy busybox");
        let list = Command::new(busybox)
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.contains('/') && !applet.is_empty() {
                symlink("busybox", lower.join("bin").join(applet)).expect("applet symlink");
            }
        }
        let notexec = lower.join("bin/notexec");
        fs::write(&notexec, "#!/bin/sh\necho ran\n").expect("write");
        fs::set_permissions(&notexec, fs::Permissions::from_mode(0o644)).expect("chmod");
        // Symlinks an image could use to aim a bind mount at the host.
        symlink("/etc", lower.join("escape")).expect("symlink");
        symlink("../hostside", lower.join("escape-rel")).expect("symlink");
        fs::create_dir(dir.path().join("hostside")).expect("mkdir hostside");
        let sentinel = format!("kiln-sentinel-{}", std::process::id());
        fs::write(dir.path().join(&sentinel), "host secret").expect("sentinel");
        fs::write(dir.path().join("hostside").join(&sentinel), "host secret").expect("sentinel");
        Fixture {
            dir,
            lower,
            upper,
            work,
            sentinel,
        }
    }

    /// A spec running `args` as root with no network and a fresh upper dir.
    fn spec(&self, args: &[&str]) -> Spec {
        Spec {
            rootfs: RootFs {
                lower_dirs: vec![self.lower.clone()],
                upper: Some(UpperDir {
                    upper_dir: self.upper.clone(),
                    work_dir: self.work.clone(),
                }),
                readonly: false,
            },
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: User::root(),
            hostname: "kiln-test-box".into(),
            network: Network::None,
            mounts: Vec::new(),
            user_namespace: false,
            cgroup_procs: Vec::new(),
            tty: false,
            no_new_privileges: false,
            init: false,
            privileged: false,
        }
    }
}

/// Root and busybox, or `None` after a skip notice.
fn root_fixture() -> Option<Fixture> {
    support::root()?;
    Some(Fixture::new(&support::busybox()?))
}

/// What a sandbox printed and how it ended.
#[derive(Debug)]
struct Ran {
    outcome: Outcome,
    stdout: String,
    stderr: String,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe")
}

fn drain(fd: OwnedFd) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = fs::File::from(fd).read_to_string(&mut text);
        text
    })
}

/// Runs `spec` to the end, capturing stdout and stderr.
fn run(spec: &Spec) -> Result<Ran, RuntimeError> {
    let (out_read, out_write) = pipe();
    let (err_read, err_write) = pipe();
    let stdout = drain(out_read);
    let stderr = drain(err_read);
    let result = Sandbox::spawn(
        spec,
        Stdio::Streams {
            stdin: None,
            stdout: out_write,
            stderr: err_write,
        },
    )
    .and_then(Sandbox::wait);
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    result.map(|outcome| Ran {
        outcome,
        stdout,
        stderr,
    })
}

/// Runs `sh -c script` and returns stdout, failing unless it exits 0.
fn sh(fixture: &Fixture, edit: impl FnOnce(&mut Spec), script: &str) -> Result<String, String> {
    let mut spec = fixture.spec(&["sh", "-c", script]);
    edit(&mut spec);
    let ran = run(&spec).map_err(|e| format!("{script:?}: {}", kiln::error::chain(&e)))?;
    if ran.outcome != Outcome::Exited(0) {
        return Err(format!("{script:?}: {ran:?}"));
    }
    Ok(ran.stdout)
}

/// `Ok` when `got == want`, else an error describing `what`.
fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

// The checks shared by the root tests and the rootless re-run (1, 2, 3, 4, 5, 6, 8).

fn check_exit_code_and_output(f: &Fixture) -> Result<(), String> {
    let ran =
        run(&f.spec(&["sh", "-c", "echo hi; echo err >&2; exit 3"])).map_err(|e| e.to_string())?;
    expect_eq("outcome", ran.outcome, Outcome::Exited(3))?;
    expect_eq("stdout", ran.stdout.as_str(), "hi\n")?;
    expect_eq("stderr", ran.stderr.as_str(), "err\n")
}

fn check_workload_is_pid_1(f: &Fixture) -> Result<(), String> {
    // `cat` first: busybox sh execs its last command in place.
    let out = sh(f, |_| {}, "cat /proc/1/comm; echo $$")?;
    expect_eq("comm and pid of pid 1", out.as_str(), "sh\n1\n")
}

fn check_hostname(f: &Fixture) -> Result<(), String> {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").map_err(|e| e.to_string())?;
    let out = sh(f, |_| {}, "hostname")?;
    expect_eq("hostname", out.as_str(), "kiln-test-box\n")?;
    if host.trim() == "kiln-test-box" {
        return Err("the host has the sandbox's hostname: the test proves nothing".into());
    }
    Ok(())
}

fn check_host_processes_invisible(f: &Fixture) -> Result<(), String> {
    let out = sh(f, |_| {}, "ls /proc; echo ---; ps -o pid,comm")?;
    let (listing, ps) = out.split_once("---\n").ok_or("no separator")?;
    let pids: Vec<u32> = listing
        .split_whitespace()
        .filter_map(|name| name.parse().ok())
        .collect();
    if pids.is_empty() || pids.iter().any(|&pid| pid > 3) {
        return Err(format!("/proc lists {pids:?}: host processes are visible"));
    }
    let processes = ps.lines().skip(1).count();
    if processes > 3 {
        return Err(format!("ps shows {processes} processes:\n{ps}"));
    }
    Ok(())
}

fn check_network_none(f: &Fixture) -> Result<(), String> {
    let out = sh(f, |_| {}, "ls /sys/class/net; cat /sys/class/net/lo/flags")?;
    let mut lines = out.lines();
    expect_eq("interfaces", lines.next(), Some("lo"))?;
    let flags = lines.next().ok_or("no flags")?;
    let flags =
        u32::from_str_radix(flags.trim_start_matches("0x"), 16).map_err(|e| e.to_string())?;
    if flags & libc::IFF_UP as u32 == 0 {
        return Err(format!("lo is down (flags {flags:#x})"));
    }
    expect_eq("more lines", lines.next(), None)
}

fn check_forbidden_operations(f: &Fixture) -> Result<(), String> {
    // `h` (help) rather than `b` (reboot): if the read-only mount of /proc/sysrq-trigger ever
    // regressed, the write must not reboot the machine running the tests. mknod itself is
    // allowed as root (CAP_MKNOD, as in Docker) but the root filesystem is nodev, so the node
    // cannot be opened; in a user namespace mknod fails already.
    let script = r#"
        for cmd in "mount -t tmpfs x /mnt" "unshare -m true" "unshare -U true" \
                   "sh -c 'echo h > /proc/sysrq-trigger'" "hostname other" \
                   "mknod /tmp/null c 1 3 && head -c 1 /tmp/null"; do
            if eval "$cmd" 2>/dev/null; then echo "allowed: $cmd"; else echo "denied: $cmd"; fi
        done
        hostname
    "#;
    let out = sh(f, |_| {}, script)?;
    let allowed: Vec<&str> = out.lines().filter(|l| l.starts_with("allowed")).collect();
    let denied = out.lines().filter(|l| l.starts_with("denied")).count();
    if !allowed.is_empty() || denied != 6 {
        return Err(format!("forbidden operations allowed: {allowed:?}\n{out}"));
    }
    expect_eq("hostname after", out.lines().last(), Some("kiln-test-box"))
}

fn check_daemon_does_not_survive(f: &Fixture, init: bool) -> Result<(), String> {
    let marker = if init { "4712" } else { "4711" };
    let script = format!("setsid sleep {marker} & echo started");
    let out = sh(f, |spec| spec.init = init, &script)?;
    expect_eq("stdout", out.as_str(), "started\n")?;
    let wanted = format!("sleep\0{marker}\0");
    let mut survivors = Vec::new();
    for entry in fs::read_dir("/proc").map_err(|e| e.to_string())?.flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline"))
            && cmdline == wanted.as_bytes()
        {
            survivors.push(entry.file_name());
        }
    }
    if survivors.is_empty() {
        Ok(())
    } else {
        Err(format!("the daemon survived the sandbox: {survivors:?}"))
    }
}

fn check_network_host(f: &Fixture) -> Result<(), String> {
    // Rootless, /sys is the host's bound read-only (sysfs needs the network namespace's owner).
    let script = "ls /sys/class/net; touch /sys/x 2>/dev/null && echo sys-writable || echo sys-ro";
    let out = sh(f, |spec| spec.network = Network::Host, script)?;
    let mut host: Vec<String> = fs::read_dir("/sys/class/net")
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    host.push("sys-ro".into());
    host.sort();
    let mut inside: Vec<&str> = out.lines().collect();
    inside.sort();
    expect_eq(
        "interfaces",
        inside,
        host.iter().map(String::as_str).collect(),
    )
}

/// Runs every shared check and returns how many ran and the failures.
fn shared_checks(f: &Fixture) -> (usize, Vec<String>) {
    type Check = Box<dyn Fn(&Fixture) -> Result<(), String>>;
    let checks: Vec<(&str, Check)> = vec![
        ("exit code and output", Box::new(check_exit_code_and_output)),
        ("workload is pid 1", Box::new(check_workload_is_pid_1)),
        ("hostname", Box::new(check_hostname)),
        (
            "host processes invisible",
            Box::new(check_host_processes_invisible),
        ),
        ("network none", Box::new(check_network_none)),
        ("network host", Box::new(check_network_host)),
        ("bind mounts", Box::new(check_bind_mounts)),
        ("forbidden operations", Box::new(check_forbidden_operations)),
        (
            "daemon does not survive",
            Box::new(|f| check_daemon_does_not_survive(f, false)),
        ),
        (
            "daemon does not survive init",
            Box::new(|f| check_daemon_does_not_survive(f, true)),
        ),
    ];
    let failures = checks
        .iter()
        .filter_map(|(name, check)| check(f).err().map(|e| format!("{name}: {e}")))
        .collect();
    (checks.len(), failures)
}

#[test]
fn exit_code_and_output() {
    let Some(f) = root_fixture() else { return };
    check_exit_code_and_output(&f).unwrap();
}

#[test]
fn workload_is_pid_1() {
    let Some(f) = root_fixture() else { return };
    check_workload_is_pid_1(&f).unwrap();
}

#[test]
fn init_is_pid_1_and_reaps_orphans() {
    let Some(f) = root_fixture() else { return };
    // The orphan (a shell that execs sleep) is reparented to pid 1 when its parent subshell
    // exits; with kiln's init it is reaped when it ends, so its /proc entry disappears.
    let script = r#"
        echo $$
        (sh -c 'echo $$ > /tmp/orphan; exec sleep 0.2' &)
        while [ ! -s /tmp/orphan ]; do sleep 0.01; done
        pid=$(cat /tmp/orphan)
        grep PPid /proc/$pid/status | tr -d '\t'
        i=0
        while [ -e /proc/$pid ] && [ $i -lt 1000 ]; do i=$((i+1)); sleep 0.01; done
        if [ -e /proc/$pid ]; then grep State /proc/$pid/status; else echo reaped; fi
    "#;
    let out = sh(&f, |spec| spec.init = true, script).unwrap();
    assert_eq!(out, "2\nPPid:1\nreaped\n");
}

#[test]
fn hostname_is_the_specs() {
    let Some(f) = root_fixture() else { return };
    check_hostname(&f).unwrap();
}

#[test]
fn host_processes_are_invisible() {
    let Some(f) = root_fixture() else { return };
    check_host_processes_invisible(&f).unwrap();
}

#[test]
fn network_none_has_only_lo_up() {
    let Some(f) = root_fixture() else { return };
    check_network_none(&f).unwrap();
}

#[test]
fn network_host_sees_the_hosts_interfaces() {
    let Some(f) = root_fixture() else { return };
    check_network_host(&f).unwrap();
}

#[test]
fn forbidden_operations_fail() {
    let Some(f) = root_fixture() else { return };
    check_forbidden_operations(&f).unwrap();
}

/// Docker's masked paths (moby `oci/defaults.go`).
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

#[test]
fn masked_and_readonly_paths() {
    let Some(f) = root_fixture() else { return };
    // Which masked paths exist depends on the kernel's configuration: check those the host has
    // (files read as empty, directories list as empty).
    let mut script = String::new();
    let mut want = String::new();
    for path in MASKED_PATHS {
        let Ok(meta) = fs::metadata(path) else {
            continue;
        };
        if meta.is_dir() {
            script.push_str(&format!("echo {path} $(ls -A {path} | wc -l)\n"));
        } else {
            script.push_str(&format!("echo {path} $(wc -c < {path})\n"));
        }
        want.push_str(&format!("{path} 0\n"));
    }
    assert!(!want.is_empty(), "the host has none of the masked paths");
    script.push_str(
        "touch /sys/firmware/x 2>/dev/null && echo sysfs-writable || echo sysfs-ro\n\
         echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo proc-sys-writable || echo proc-sys-ro\n\
         grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t'\n",
    );
    want.push_str("sysfs-ro\nproc-sys-ro\nNoNewPrivs:0\nSeccomp:2\n");
    let out = sh(&f, |_| {}, &script).unwrap();
    assert_eq!(out, want);
}

#[test]
fn no_new_privileges_on_request() {
    let Some(f) = root_fixture() else { return };
    let script = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t'";
    for user in [
        User::root(),
        User {
            uid: 1000,
            gid: 1000,
            additional_gids: Vec::new(),
        },
    ] {
        let out = sh(
            &f,
            |spec| {
                spec.no_new_privileges = true;
                spec.user = user.clone();
            },
            script,
        )
        .unwrap();
        assert_eq!(out, "NoNewPrivs:1\nSeccomp:2\n", "{user:?}");
        // Without it, a non-root user still gets the filter (installed while privileged).
        let out = sh(&f, |spec| spec.user = user.clone(), script).unwrap();
        assert_eq!(out, "NoNewPrivs:0\nSeccomp:2\n", "{user:?}");
    }
}

#[test]
fn working_directory_fd_never_reaches_the_host() {
    let Some(f) = root_fixture() else { return };
    // A host directory descriptor left open (not close-on-exec) in kiln, as runc leaked one in
    // CVE-2024-21626: the sandbox must not be able to start in it or walk out of it.
    let leaked = fs::File::open(f.dir.path()).unwrap();
    nix::fcntl::fcntl(
        &leaked,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    for init in [false, true] {
        for n in 3..=20 {
            // The path directly, and through a symlink the image could ship as its WORKDIR.
            let link = format!("fdlink{n}");
            symlink(format!("/proc/self/fd/{n}"), f.lower.join(&link)).unwrap();
            for cwd in [format!("/proc/self/fd/{n}"), format!("/{link}")] {
                cases += 1;
                let mut spec = f.spec(&[
                    "sh",
                    "-c",
                    "pwd; ls -a . .. ../.. 2>&1; cat ../*sentinel* 2>&1",
                ]);
                spec.cwd = cwd;
                spec.init = init;
                match run(&spec) {
                    Err(_) => {}
                    Ok(ran) => {
                        if ran.stdout.contains(&f.sentinel) || ran.stdout.contains("host secret") {
                            failures.push(format!(
                                "{} (init {init}) reached the host:\n{}",
                                spec.cwd, ran.stdout
                            ));
                        }
                        if !ran.stdout.starts_with('/') {
                            failures
                                .push(format!("{} (init {init}): pwd {:?}", spec.cwd, ran.stdout));
                        }
                    }
                }
            }
            fs::remove_file(f.lower.join(&link)).unwrap();
        }
    }
    drop(leaked);
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(cases, 72);
}

#[test]
fn daemon_does_not_survive() {
    let Some(f) = root_fixture() else { return };
    check_daemon_does_not_survive(&f, false).unwrap();
}

#[test]
fn daemon_does_not_survive_init() {
    let Some(f) = root_fixture() else { return };
    check_daemon_does_not_survive(&f, true).unwrap();
}

#[test]
fn exec_errors_are_126_and_127() {
    let Some(f) = root_fixture() else { return };
    let cases = [
        (
            "nosuchcmd",
            ExecErrorKind::NotFoundInPath,
            "exec: \"nosuchcmd\": executable file not found in $PATH",
            127,
        ),
        (
            "/bin/nosuchcmd",
            ExecErrorKind::NotFound,
            "exec: \"/bin/nosuchcmd\": no such file or directory",
            127,
        ),
        (
            "/bin/notexec",
            ExecErrorKind::PermissionDenied,
            "exec: \"/bin/notexec\": permission denied",
            126,
        ),
        // Not executable, so not a PATH match (Go's LookPath): "not found".
        (
            "notexec",
            ExecErrorKind::NotFoundInPath,
            "exec: \"notexec\": executable file not found in $PATH",
            127,
        ),
    ];
    for init in [false, true] {
        for (program, kind, message, code) in &cases {
            let mut spec = f.spec(&[program]);
            spec.init = init;
            let err = run(&spec).unwrap_err();
            assert_eq!(err.to_string(), *message);
            assert_eq!(err.exit_code(), *code);
            assert!(
                matches!(&err, RuntimeError::Exec { kind: k, .. } if k == kind),
                "{err:?}"
            );
        }
    }
}

fn check_bind_mounts(f: &Fixture) -> Result<(), String> {
    let host = f.dir.path().join("binds");
    let io = |e: std::io::Error| e.to_string();
    for name in ["rw", "ro", "marker"] {
        fs::create_dir_all(host.join(name)).map_err(io)?;
    }
    fs::write(host.join("rw/in"), "from host\n").map_err(io)?;
    fs::write(host.join("ro/in"), "read only\n").map_err(io)?;
    fs::write(host.join("marker/marker"), "confined\n").map_err(io)?;
    fs::write(host.join("file.txt"), "a file\n").map_err(io)?;
    let mounts = vec![
        Mount {
            destination: "/data/rw".into(),
            source: MountSource::Bind(host.join("rw")),
            readonly: false,
        },
        Mount {
            destination: "/data/ro".into(),
            source: MountSource::Bind(host.join("ro")),
            readonly: true,
        },
        // /escape is a symlink to /etc in the image: the mount lands on the container's /etc.
        Mount {
            destination: "/escape".into(),
            source: MountSource::Bind(host.join("marker")),
            readonly: false,
        },
        Mount {
            destination: "/srv/new/file".into(),
            source: MountSource::Bind(host.join("file.txt")),
            readonly: true,
        },
    ];
    let script = r#"
        cat /data/rw/in; echo out > /data/rw/out
        cat /data/ro/in; echo x > /data/ro/x 2>/dev/null && echo ro-writable || echo ro-denied
        cat /etc/marker
        cat /srv/new/file
    "#;
    let out = sh(f, |spec| spec.mounts = mounts.clone(), script)?;
    expect_eq(
        "output",
        out.as_str(),
        "from host\nread only\nro-denied\nconfined\na file\n",
    )?;
    let written = fs::read_to_string(host.join("rw/out")).map_err(io)?;
    expect_eq("written through the rw mount", written.as_str(), "out\n")?;
    expect_eq(
        "written through the ro mount",
        host.join("ro/x").exists(),
        false,
    )?;
    expect_eq("host /etc/marker", Path::new("/etc/marker").exists(), false)?;

    // ../hostside from the image's /escape-rel points outside the root: inside it is a dangling
    // /hostside, which kiln refuses rather than follow.
    let escape = vec![Mount {
        destination: "/escape-rel".into(),
        source: MountSource::Bind(host.join("marker")),
        readonly: false,
    }];
    match sh(f, |spec| spec.mounts = escape, "ls /hostside") {
        Err(err) if err.contains("bind mounting") && err.contains("EEXIST") => {}
        other => return Err(format!("a bind mount through ../hostside: {other:?}")),
    }
    let hostside = fs::read_dir(f.dir.path().join("hostside"))
        .map_err(io)?
        .count();
    expect_eq("files in hostside", hostside, 1)
}

#[test]
fn bind_mounts_rw_ro_and_confined_destinations() {
    let Some(f) = root_fixture() else { return };
    check_bind_mounts(&f).unwrap();
}

#[test]
fn readonly_rootfs() {
    let Some(f) = root_fixture() else { return };
    let script = r#"
        touch /newfile 2>/dev/null && echo root-writable || echo root-ro
        touch /dev/shm/x && echo shm-ok
        pwd
    "#;
    let out = sh(
        &f,
        |spec| {
            spec.rootfs.readonly = true;
            spec.cwd = "/made/by/kiln".into();
        },
        script,
    )
    .unwrap();
    assert_eq!(out, "root-ro\nshm-ok\n/made/by/kiln\n");
}

#[test]
fn readonly_rootfs_without_upper() {
    let Some(f) = root_fixture() else { return };
    let mut spec = f.spec(&[
        "sh",
        "-c",
        "touch /x 2>/dev/null || echo ro; cat /proc/1/comm; true",
    ]);
    spec.rootfs.upper = None;
    spec.rootfs.readonly = true;
    let ran = run(&spec).unwrap();
    assert_eq!(ran.stdout, "ro\nsh\n");
    // Nothing was written to the lower directory (the mount points existed).
    assert!(!f.lower.join("x").exists());
}

#[test]
fn env_and_cwd_creation() {
    let Some(f) = root_fixture() else { return };
    let out = sh(
        &f,
        |spec| {
            spec.env = vec!["PATH=/usr/bin:/bin".into(), "FOO=bar baz".into()];
            spec.cwd = "/deep/er/".into();
        },
        "echo \"$FOO\"; pwd; stat -c '%u %g %a' /deep /deep/er; umask; env | sort",
    )
    .unwrap();
    assert_eq!(
        out,
        "bar baz\n/deep/er\n0 0 755\n0 0 755\n0022\nFOO=bar baz\nPATH=/usr/bin:/bin\nPWD=/deep/er\nSHLVL=1\n"
    );
}

#[test]
fn users_and_capabilities() {
    let Some(f) = root_fixture() else { return };
    let script =
        "id -u; id -g; id -G; grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | tr -d '\\t'";
    let user = sh(
        &f,
        |spec| {
            spec.user = User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![1001, 27],
            }
        },
        script,
    )
    .unwrap();
    assert_eq!(
        user,
        "1000\n1000\n1000 27 1001\nCapInh:0000000000000000\nCapPrm:0000000000000000\n\
         CapEff:0000000000000000\nCapBnd:00000000a80425fb\nCapAmb:0000000000000000\n"
    );
    let root = sh(&f, |_| {}, script).unwrap();
    assert_eq!(
        root,
        "0\n0\n0\nCapInh:0000000000000000\nCapPrm:00000000a80425fb\n\
         CapEff:00000000a80425fb\nCapBnd:00000000a80425fb\nCapAmb:0000000000000000\n"
    );
}

/// Starts `sh` with a TERM trap, waits until it says it is ready, signals it through the
/// sandbox and returns its output and outcome.
fn signal_forwarding(f: &Fixture, init: bool) -> (String, Outcome) {
    let script =
        "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 1 & wait $!; done";
    let mut spec = f.spec(&["sh", "-c", script]);
    spec.init = init;
    let (out_read, out_write) = pipe();
    let (_, err_write) = pipe();
    let sandbox = Sandbox::spawn(
        &spec,
        Stdio::Streams {
            stdin: None,
            stdout: out_write,
            stderr: err_write,
        },
    )
    .unwrap();
    let mut reader = BufReader::new(fs::File::from(out_read));
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    sandbox.signal(Signal::SIGTERM).unwrap();
    let outcome = sandbox.wait().unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    (rest, outcome)
}

#[test]
fn signal_reaches_the_workload() {
    let Some(f) = root_fixture() else { return };
    assert_eq!(
        signal_forwarding(&f, false),
        ("got TERM\n".into(), Outcome::Exited(7))
    );
}

#[test]
fn init_forwards_signals() {
    let Some(f) = root_fixture() else { return };
    assert_eq!(
        signal_forwarding(&f, true),
        ("got TERM\n".into(), Outcome::Exited(7))
    );
}

#[test]
fn kill_ends_the_sandbox() {
    let Some(f) = root_fixture() else { return };
    for init in [false, true] {
        let mut spec = f.spec(&["sh", "-c", "echo ready; exec sleep 1000"]);
        spec.init = init;
        let (out_read, out_write) = pipe();
        let (_, err_write) = pipe();
        let sandbox = Sandbox::spawn(
            &spec,
            Stdio::Streams {
                stdin: None,
                stdout: out_write,
                stderr: err_write,
            },
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(fs::File::from(out_read))
            .read_line(&mut line)
            .unwrap();
        sandbox.handle().kill().unwrap();
        let outcome = sandbox.wait().unwrap();
        assert_eq!(outcome, Outcome::Signaled(libc::SIGKILL), "init {init}");
        assert_eq!(outcome.exit_code(), 137);
    }
}

#[test]
fn user_namespace_as_root() {
    let Some(f) = root_fixture() else { return };
    let out = sh(
        &f,
        |spec| spec.user_namespace = true,
        "id -u; tr -s ' ' < /proc/self/uid_map; echo hi > /tmp2 && cat /tmp2; hostname",
    )
    .unwrap();
    assert_eq!(out, "0\n 0 100000 65536\nhi\nkiln-test-box\n");
    // The file landed in the upper dir, owned by the remapped root.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(f.upper.join("tmp2")).unwrap().uid(), 100_000);
}

#[test]
fn cgroup_procs_are_joined_before_the_workload() {
    let Some(f) = root_fixture() else { return };
    let Some(base) = support::require(
        "a cgroup v1 pids hierarchy at /sys/fs/cgroup/pids",
        Some(PathBuf::from("/sys/fs/cgroup/pids")).filter(|p| p.join("cgroup.procs").exists()),
    ) else {
        return;
    };
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let relative = own
        .lines()
        .find_map(|line| line.split_once(":pids:").map(|(_, path)| path.to_string()))
        .unwrap_or_else(|| "/".into());
    let name = format!("kiln-sandbox-test-{}", std::process::id());
    let cgroup = base.join(relative.trim_start_matches('/')).join(&name);
    fs::create_dir(&cgroup).unwrap();
    let mut spec = f.spec(&["sh", "-c", "grep pids /proc/self/cgroup; read line"]);
    spec.cgroup_procs = vec![cgroup.join("cgroup.procs")];
    let (in_read, in_write) = pipe();
    let (out_read, out_write) = pipe();
    let (_, err_write) = pipe();
    let sandbox = Sandbox::spawn(
        &spec,
        Stdio::Streams {
            stdin: Some(in_read),
            stdout: out_write,
            stderr: err_write,
        },
    )
    .unwrap();
    let sandbox_pid = sandbox.pid();
    let host_view = fs::read_to_string(format!("/proc/{sandbox_pid}/cgroup")).unwrap();
    let members = fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    drop(in_write);
    let outcome = sandbox.wait().unwrap();
    let mut inside = String::new();
    fs::File::from(out_read)
        .read_to_string(&mut inside)
        .unwrap();
    fs::remove_dir(&cgroup).unwrap();
    assert_eq!(outcome, Outcome::Exited(1), "read fails at end of input");
    assert!(
        host_view.lines().any(|l| l.ends_with(&format!(
            ":pids:{}",
            cgroup
                .strip_prefix(&base)
                .map(|p| format!("/{}", p.display()))
                .unwrap()
        ))),
        "{host_view}"
    );
    assert!(
        members
            .split_whitespace()
            .any(|p| p == sandbox_pid.to_string()),
        "{members}"
    );
    // The cgroup namespace is rooted at the sandbox's cgroup.
    assert!(inside.trim_end().ends_with(":pids:/"), "{inside}");
}

/// Runs `script` with a terminal allocated in the sandbox (30x100), with or without the init,
/// and returns what the terminal showed.
fn on_terminal(f: &Fixture, script: &str, init: bool) -> (Outcome, String) {
    let mut spec = f.spec(&["sh", "-c", script]);
    spec.tty = true;
    spec.init = init;
    let size = WindowSize {
        rows: 30,
        cols: 100,
    };
    let mut sandbox = Sandbox::spawn(&spec, Stdio::Terminal { size: Some(size) }).unwrap();
    let master = fs::File::from(sandbox.take_terminal().expect("a terminal"));
    assert!(sandbox.take_terminal().is_none(), "taken once");
    let reader = thread::spawn(move || {
        let mut text = Vec::new();
        // Reading the master fails with EIO once no slave is open any more.
        let _ = BufReader::new(master).read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let outcome = sandbox.wait().unwrap();
    (outcome, reader.join().unwrap())
}

#[test]
fn tty_is_allocated_in_the_sandbox_devpts() {
    let Some(f) = root_fixture() else { return };
    let script = "tty; test -t 0 && test -t 1 && test -t 2 && echo tty; \
                  cut -d' ' -f7 /proc/self/stat; stty size; ls -1 /dev/pts";
    for init in [false, true] {
        let (outcome, out) = on_terminal(&f, script, init);
        assert_eq!(outcome, Outcome::Exited(0), "init={init}: {out:?}");
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        // Docker's answer: the container's own devpts instance, its first pty.
        assert_eq!(lines.first(), Some(&"/dev/pts/0"), "init={init}: {out:?}");
        assert_eq!(lines.get(1), Some(&"tty"), "init={init}: {out:?}");
        // tty_nr of /proc/self/stat: (136 << 8) | 0 for /dev/pts/0 as the controlling terminal
        // (the kernel's device number, whatever the devpts instance).
        assert_eq!(lines.get(2), Some(&"34816"), "init={init}: {out:?}");
        assert_eq!(lines.get(3), Some(&"30 100"), "init={init}: {out:?}");
        // Only the workload's terminal exists in the sandbox's devpts.
        assert_eq!(
            lines.get(4..),
            Some(&["0", "ptmx"][..]),
            "init={init}: {out:?}"
        );
    }
}

#[test]
fn tty_and_stdio_must_agree() {
    let Some(f) = root_fixture() else { return };
    let spec = f.spec(&["true"]);
    let err = Sandbox::spawn(&spec, Stdio::Terminal { size: None }).unwrap_err();
    assert!(matches!(err, RuntimeError::TerminalWithoutTty), "{err}");
    let mut spec = f.spec(&["true"]);
    spec.tty = true;
    let err = run(&spec).unwrap_err();
    assert!(matches!(err, RuntimeError::TtyWithoutTerminal), "{err}");
}

#[test]
fn invalid_spec_is_an_error_not_a_crash() {
    let Some(f) = root_fixture() else { return };
    let mut spec = f.spec(&["true"]);
    spec.mounts = vec![Mount {
        destination: "/m".into(),
        source: MountSource::Bind(f.dir.path().join("missing")),
        readonly: false,
    }];
    let err = run(&spec).unwrap_err();
    assert!(err.to_string().starts_with("bind mount source "), "{err}");
    let mut spec = f.spec(&["true"]);
    spec.rootfs.lower_dirs = vec![f.dir.path().join("no-such-layer")];
    let err = run(&spec).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("mounting the overlay root filesystem on "),
        "{err}"
    );
}

/// The shared checks as root.
#[test]
fn shared_checks_as_root() {
    let Some(f) = root_fixture() else { return };
    let (count, failures) = shared_checks(&f);
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(count, 10);
}

/// The shared checks rootless: this binary re-runs itself (just [`rootless_child`]) as uid and
/// gid 65534 with no groups; the sandbox then needs a user namespace mapping that user to root.
#[test]
fn shared_checks_rootless() {
    if support::root().is_none() || support::busybox().is_none() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(&exe)
        .args([
            "--exact",
            "sandbox::rootless_child",
            "--include-ignored",
            "--nocapture",
        ])
        .env(ROOTLESS_CHILD, "1")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("rootless checks run: 10") || stderr.contains("rootless checks run: 10"),
        "the child did not run the checks:\n{stdout}\n{stderr}"
    );
}

/// Run by [`shared_checks_rootless`] as an unprivileged user; does nothing otherwise.
#[test]
#[ignore = "run by shared_checks_rootless as uid 65534"]
fn rootless_child() {
    if std::env::var_os(ROOTLESS_CHILD).is_none() {
        return;
    }
    assert_ne!(nix::unistd::geteuid().as_raw(), 0, "must run unprivileged");
    let busybox = support::busybox().expect("busybox");
    let f = Fixture::new(&busybox);
    let (count, failures) = shared_checks(&f);
    println!("rootless checks run: {count}");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// An overlay mount of `lowers` (top-most first) with an optional upper dir.
fn overlay_mount(destination: &str, lowers: &[&Path], upper: Option<UpperDir>, ro: bool) -> Mount {
    Mount {
        destination: destination.into(),
        source: MountSource::Overlay {
            lowers: lowers.iter().map(|p| p.to_path_buf()).collect(),
            upper,
        },
        readonly: ro,
    }
}

/// Two host layers for overlay mounts: `base` has `a`, `gone` and `keep`; `top` has its own
/// `a` and a whiteout (a 0:0 character device, overlayfs's format) hiding `gone`.
fn overlay_layers(f: &Fixture) -> (PathBuf, PathBuf) {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let base = f.dir.path().join("layer-base");
    let top = f.dir.path().join("layer-top");
    for dir in [&base, &top] {
        fs::create_dir(dir).expect("mkdir");
    }
    fs::write(base.join("a"), "base a\n").expect("write");
    fs::write(base.join("gone"), "base gone\n").expect("write");
    fs::write(base.join("keep"), "base keep\n").expect("write");
    fs::write(top.join("a"), "top a\n").expect("write");
    mknod(
        &top.join("gone"),
        SFlag::S_IFCHR,
        Mode::empty(),
        makedev(0, 0),
    )
    .expect("whiteout");
    (top, base)
}

#[test]
fn overlay_mounts_merge_and_whiteouts_hide() {
    let Some(f) = root_fixture() else { return };
    let (top, base) = overlay_layers(&f);
    let script = r#"
        cat /m/a /m/keep
        test -e /m/gone && echo gone-visible || echo gone-hidden
        touch /m/new 2>&1 | grep -o 'Read-only file system'
        cat /one/a
        touch /one/new 2>&1 | grep -o 'Read-only file system'
        ls -A /empty | wc -l
        touch /empty/new 2>&1 | grep -o 'Read-only file system'
    "#;
    let out = sh(
        &f,
        |spec| {
            spec.mounts = vec![
                overlay_mount("/m", &[&top, &base], None, false),
                // One lower and no upper: a read-only bind.
                overlay_mount("/one", &[&base], None, false),
                overlay_mount("/empty", &[], None, false),
            ]
        },
        script,
    )
    .unwrap();
    assert_eq!(
        out,
        "top a\nbase keep\ngone-hidden\nRead-only file system\nbase a\n\
         Read-only file system\n0\nRead-only file system\n"
    );
}

#[test]
fn overlay_mount_writes_go_to_its_upper_dir() {
    let Some(f) = root_fixture() else { return };
    let (top, base) = overlay_layers(&f);
    let upper = |name: &str| {
        let dir = f.dir.path().join(name);
        for sub in ["upper", "work"] {
            fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        UpperDir {
            upper_dir: dir.join("upper"),
            work_dir: dir.join("work"),
        }
    };
    let rw = upper("rw");
    let ro = upper("ro");
    let script = r#"
        echo new > /w/new; echo changed > /w/a; rm /w/keep
        cat /w/a; ls /w
        touch /r/x 2>&1 | grep -o 'Read-only file system'
        echo fresh > /e/file; cat /e/file
    "#;
    let empty = upper("empty");
    let out = sh(
        &f,
        |spec| {
            spec.mounts = vec![
                overlay_mount("/w", &[&top, &base], Some(rw.clone()), false),
                overlay_mount("/r", &[&top, &base], Some(ro.clone()), true),
                overlay_mount("/e", &[], Some(empty.clone()), false),
            ]
        },
        script,
    )
    .unwrap();
    assert_eq!(out, "changed\na\nnew\nRead-only file system\nfresh\n");
    // The writes are in the upper dir (the removal as a whiteout), the lowers untouched.
    assert_eq!(
        fs::read_to_string(rw.upper_dir.join("new")).unwrap(),
        "new\n"
    );
    assert_eq!(
        fs::read_to_string(rw.upper_dir.join("a")).unwrap(),
        "changed\n"
    );
    let keep = fs::symlink_metadata(rw.upper_dir.join("keep")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &keep.file_type()
    ));
    assert_eq!(fs::read_to_string(top.join("a")).unwrap(), "top a\n");
    assert_eq!(
        fs::read_to_string(base.join("keep")).unwrap(),
        "base keep\n"
    );
    assert!(!top.join("new").exists() && !base.join("new").exists());
    assert_eq!(fs::read_dir(&ro.upper_dir).unwrap().count(), 0);
    assert_eq!(
        fs::read_to_string(empty.upper_dir.join("file")).unwrap(),
        "fresh\n"
    );
}

#[test]
fn tmpfs_mount_is_bounded_by_its_size() {
    let Some(f) = root_fixture() else { return };
    let script = r#"
        dd if=/dev/zero of=/t/big bs=1024 count=2048 2>&1 | grep -o 'No space left on device'
        dd if=/dev/zero of=/u/big bs=1024 count=2048 2>/dev/null && echo unbounded-ok
        grep -E ' /t | /u ' /proc/mounts | cut -d' ' -f2,3
    "#;
    let out = sh(
        &f,
        |spec| {
            spec.mounts = vec![
                Mount {
                    destination: "/t".into(),
                    source: MountSource::Tmpfs {
                        size: Some(1 << 20),
                    },
                    readonly: false,
                },
                Mount {
                    destination: "/u".into(),
                    source: MountSource::Tmpfs { size: None },
                    readonly: false,
                },
            ]
        },
        script,
    )
    .unwrap();
    assert_eq!(
        out,
        "No space left on device\nunbounded-ok\n/t tmpfs\n/u tmpfs\n"
    );
}

/// The value of `field` in a `/proc/PID/status` text.
fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

#[test]
fn privileged_sandbox_has_every_capability_and_no_seccomp() {
    let Some(f) = root_fixture() else { return };
    let ours = fs::read_to_string("/proc/self/status").unwrap();
    let full = status_field(&ours, "CapEff").unwrap().to_string();
    let script = "cat /proc/self/status; echo ---; cat /proc/mounts";
    let default = sh(&f, |_| {}, script).unwrap();
    assert_eq!(status_field(&default, "CapEff"), Some("00000000a80425fb"));
    assert_eq!(status_field(&default, "Seccomp"), Some("2"));
    for uid in [0, 1000] {
        let out = sh(
            &f,
            |spec| {
                spec.privileged = true;
                spec.user.uid = uid;
            },
            script,
        )
        .unwrap();
        assert_eq!(
            status_field(&out, "CapEff"),
            Some(full.as_str()),
            "uid {uid}"
        );
        assert_eq!(status_field(&out, "Seccomp"), Some("0"), "uid {uid}");
        let mounts = out.split("---").nth(1).unwrap();
        let options = |point: &str| {
            mounts
                .lines()
                .find(|l| l.split(' ').nth(1) == Some(point))
                .map(|l| l.split(' ').nth(3).unwrap_or_default().to_string())
        };
        assert!(options("/sys").unwrap().starts_with("rw,"), "{mounts}");
        assert!(
            options("/sys/fs/cgroup").unwrap().starts_with("rw,"),
            "{mounts}"
        );
        assert_eq!(options("/sys/firmware"), None, "nothing masked: {mounts}");
        assert_eq!(options("/proc/bus"), None, "nothing read-only: {mounts}");
    }
    let devices = sh(
        &f,
        |spec| spec.privileged = true,
        "test -b /dev/loop0 && test -c /dev/net/tun && test -c /dev/fuse && echo devices",
    )
    .unwrap();
    assert_eq!(devices, "devices\n");
    // A normal sandbox: read-only /sys, masks, no extra devices.
    let mounts = sh(
        &f,
        |_| {},
        "cat /proc/mounts; test -e /dev/loop0 || echo no-loop",
    )
    .unwrap();
    assert!(mounts.contains(" /sys sysfs ro,"), "{mounts}");
    assert!(mounts.contains(" /sys/firmware "), "{mounts}");
    assert!(mounts.contains(" /proc/bus "), "{mounts}");
    assert!(mounts.ends_with("no-loop\n"), "{mounts}");
}
