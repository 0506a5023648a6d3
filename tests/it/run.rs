//! `kiln run` through the binary on a busybox image written through the store's API: output and
//! exit codes, docker's ENTRYPOINT/CMD rules, environment, working directory, users, network,
//! hostname, resource limits, bind mounts, a read-only root, exec errors, container records,
//! stdin, terminals, signal forwarding, and a rootless run.

use crate::support;
use crate::support::{Kiln, Output, kiln};
use kiln::store::Store;
use oci_spec::image::MediaType;
use std::fs;
use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The test image's /etc/passwd: root and `kiln` (1000, group 1000, home /home/kiln).
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nkiln:x:1000:1000:kiln:/home/kiln:/bin/sh\n";
/// Its /etc/group: `wheel` lists root, `extra` lists kiln.
const GROUP: &str = "root:x:0:\nwheel:x:10:root\nkiln:x:1000:\nextra:x:2000:kiln\n";

/// A busybox root filesystem as one uncompressed layer tar: `/bin/busybox` with its applets as
/// symlinks, `/etc/passwd` and `/etc/group`, a sticky `/tmp`, and `/bin/notexec` (a script
/// without an execute bit).
fn busybox_layer(busybox: &Path) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_size(0);
        header.set_mtime(1_700_000_000);
        tar.append_data(&mut header, path, std::io::empty())
            .expect("append dir");
    };
    for path in ["bin", "etc", "root", "home", "proc", "dev", "sys", "mnt"] {
        dir(&mut tar, path, 0o755);
    }
    dir(&mut tar, "home/kiln", 0o755);
    dir(&mut tar, "tmp", 0o1777);
    let file = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        tar.append_data(&mut header, path, data)
            .expect("append file");
    };
    file(
        &mut tar,
        "bin/busybox",
        0o755,
        &fs::read(busybox).expect("read busybox"),
    );
    file(&mut tar, "etc/passwd", 0o644, PASSWD.as_bytes());
    file(&mut tar, "etc/group", 0o644, GROUP.as_bytes());
    file(&mut tar, "bin/notexec", 0o644, b"#!/bin/sh\necho ran\n");
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        header.set_mtime(1_700_000_000);
        tar.append_link(&mut header, format!("bin/{applet}"), "busybox")
            .expect("append symlink");
    }
    tar.into_inner().expect("finish tar")
}

/// A store in a world-readable temporary directory holding the busybox layer, where
/// [`Images::add`] writes images with different configs.
pub(crate) struct Images {
    dir: tempfile::TempDir,
    store: Store,
    layer: oci_spec::image::Descriptor,
    diff_id: String,
}

impl Images {
    fn new(busybox: &Path) -> Images {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let store = Store::open(&dir.path().join("root")).expect("open store");
        let tar = busybox_layer(busybox);
        let blob = store.blobs().write(&tar).expect("write layer");
        Images {
            dir,
            layer: blob.descriptor(MediaType::ImageLayer),
            diff_id: blob.digest.to_string(),
            store,
        }
    }

    /// Tags `name` as an image of the busybox layer with `config` (the `config` object of the
    /// image config: Env, Entrypoint, Cmd, WorkingDir, User).
    pub(crate) fn add(&self, name: &str, config: serde_json::Value) {
        let document = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [self.diff_id]},
        });
        let bytes = serde_json::to_vec(&document).expect("json");
        let _lease = self.store.lease().expect("lease");
        let image = self
            .store
            .write_image_json(&bytes, std::slice::from_ref(&self.layer))
            .expect("write image");
        self.store
            .tag(name, &image.manifest_descriptor)
            .expect("tag");
    }

    pub(crate) fn root(&self) -> &Path {
        self.store.root()
    }

    /// `kiln --root ROOT run ARGS...`.
    pub(crate) fn run(&self, args: &[&str]) -> Kiln {
        kiln().root(self.root()).arg("run").args(args)
    }

    fn containers(&self) -> Vec<PathBuf> {
        fs::read_dir(self.root().join("containers"))
            .map(|entries| entries.map(|e| e.expect("entry").path()).collect())
            .unwrap_or_default()
    }
}

/// Root, busybox and a store with `box` (no command of its own, `FROM_IMAGE=1` in its env).
pub(crate) fn images() -> Option<Images> {
    support::root()?;
    let images = Images::new(&support::busybox()?);
    images.add("box", serde_json::json!({"Env": ["FROM_IMAGE=1"]}));
    Some(images)
}

fn assert_ran(out: &Output, code: i32, stdout: &str) {
    assert_eq!(
        (out.status.code(), out.stdout_str().as_str()),
        (Some(code), stdout),
        "stderr: {}",
        out.stderr_str()
    );
}

#[test]
fn output_and_exit_code_pass_through() {
    let Some(images) = images() else { return };
    let out = images
        .run(&["--rm", "box", "sh", "-c", "echo hi; echo err >&2; exit 3"])
        .run();
    assert_ran(&out, 3, "hi\n");
    assert_eq!(out.stderr_str(), "err\n");
    assert!(
        images.containers().is_empty(),
        "--rm left {:?}",
        images.containers()
    );
}

#[test]
fn entrypoint_and_cmd_follow_docker() {
    let Some(images) = images() else { return };
    images.add(
        "both",
        serde_json::json!({"Entrypoint": ["echo", "ep"], "Cmd": ["default"]}),
    );
    images.add("cmd", serde_json::json!({"Cmd": ["echo", "cmd"]}));
    // (args, stdout or None for the error)
    let cases: [(&[&str], Option<&str>); 7] = [
        (&["both"], Some("ep default\n")),
        (&["both", "a", "-b"], Some("ep a -b\n")),
        (&["--entrypoint", "echo", "both"], Some("\n")),
        (&["--entrypoint", "echo", "both", "x"], Some("x\n")),
        (&["--entrypoint", "", "both", "echo", "y"], Some("y\n")),
        (&["cmd"], Some("cmd\n")),
        (&["box"], None),
    ];
    let mut failures = Vec::new();
    for (args, want) in cases {
        let mut all = vec!["--rm"];
        all.extend(args);
        let out = images.run(&all).run();
        let ok = match want {
            Some(stdout) => out.status.code() == Some(0) && out.stdout_str() == stdout,
            None => {
                out.status.code() == Some(125)
                    && out.stderr_str() == "error: no command specified\n"
            }
        };
        if !ok {
            failures.push(format!("{args:?}: {out:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn environment_merges_image_flags_files_and_defaults() {
    let Some(images) = images() else { return };
    let env_file = images.dir.path().join("env");
    fs::write(
        &env_file,
        "# comment\nFROM_FILE=file\nOVERRIDDEN=file\nKILN_TEST_HOST_VAR\n",
    )
    .expect("write env file");
    let out = images
        .run(&[
            "--rm",
            "--hostname",
            "envbox",
            "--env-file",
            env_file.to_str().expect("utf-8"),
            "-e",
            "OVERRIDDEN=flag",
            "-e",
            "KILN_TEST_UNSET_VAR",
            "box",
            "env",
        ])
        .run();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_str());
    let stdout = out.stdout_str();
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "FROM_FILE=file",
            "FROM_IMAGE=1",
            "HOME=/root",
            "HOSTNAME=envbox",
            "OVERRIDDEN=flag",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
    );
    // `-e NAME` takes kiln's own value.
    let out = images
        .run(&[
            "--rm",
            "-e",
            "KILN_TEST_HOST_VAR",
            "box",
            "sh",
            "-c",
            "echo $KILN_TEST_HOST_VAR",
        ])
        .env("KILN_TEST_HOST_VAR", "from host")
        .run();
    assert_ran(&out, 0, "from host\n");
}

#[test]
fn working_directory_users_and_hostname() {
    let Some(images) = images() else { return };
    images.add(
        "workdir",
        serde_json::json!({"WorkingDir": "/srv/app", "User": "kiln"}),
    );
    let cases: [(&[&str], &str); 9] = [
        (&["-w", "/new/dir", "box", "pwd"], "/new/dir\n"),
        (
            &["workdir", "sh", "-c", "pwd; id"],
            "/srv/app\nuid=1000(kiln) gid=1000(kiln) groups=1000(kiln),2000(extra)\n",
        ),
        (
            &["-u", "kiln", "box", "sh", "-c", "id; echo $HOME"],
            "uid=1000(kiln) gid=1000(kiln) groups=1000(kiln),2000(extra)\n/home/kiln\n",
        ),
        (
            &[
                "-u",
                "1234:5",
                "box",
                "sh",
                "-c",
                "id -u; id -g; echo $HOME",
            ],
            "1234\n5\n/\n",
        ),
        (&["-u", "0", "workdir", "id", "-u"], "0\n"),
        (
            &[
                "--hostname",
                "web",
                "box",
                "sh",
                "-c",
                "hostname; cat /etc/hostname",
            ],
            "web\nweb\n",
        ),
        (&["--network", "host", "box", "cat", "/etc/hosts"], ""),
        (
            &["--hostname", "web", "box", "cat", "/etc/hosts"],
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n10.0.2.100\tweb\n",
        ),
        (
            &["--network", "none", "box", "sh", "-c", "cat /etc/hosts"],
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
        ),
    ];
    let host_hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut failures = Vec::new();
    for (args, want) in cases {
        let mut all = vec!["--rm"];
        all.extend(args);
        let out = images.run(&all).run();
        let want = if args == ["--network", "host", "box", "cat", "/etc/hosts"] {
            host_hosts.as_str()
        } else {
            want
        };
        if out.status.code() != Some(0) || out.stdout_str() != want {
            failures.push(format!("{args:?}: {out:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // The default hostname is the id's first 12 hex digits; the record keeps the full id.
    let out = images.run(&["box", "hostname"]).run();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_str());
    let containers = images.containers();
    let [dir] = containers.as_slice() else {
        panic!("one container expected: {containers:?}");
    };
    let id = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(id.len(), 64);
    assert_eq!(out.stdout_str(), format!("{}\n", &id[..12]));
}

/// `kiln run`'s supplementary groups are `docker run`'s (since 20.10.18, daemon/oci_linux.go
/// `getUser`): the primary group, then the image's /etc/group ones; the outputs are docker
/// 20.10.24's for the same image (issue 12, item 10).
#[test]
fn supplementary_groups_follow_docker_run() {
    let Some(images) = images() else { return };
    let root = "uid=0(root) gid=0(root) groups=0(root),10(wheel)\nGroups:\t0 10 \n";
    let kiln = "uid=1000(kiln) gid=1000(kiln) groups=1000(kiln),2000(extra)\nGroups:\t1000 2000 \n";
    let cases: [(&[&str], &str); 7] = [
        (&[], root),
        (&["-u", "0"], root),
        (&["-u", "kiln"], kiln),
        (&["-u", "1000"], kiln),
        (
            &["-u", "kiln:wheel"],
            "uid=1000(kiln) gid=10(wheel) groups=10(wheel)\nGroups:\t10 \n",
        ),
        (
            &["-u", "1234"],
            "uid=1234 gid=0(root) groups=0(root)\nGroups:\t0 \n",
        ),
        (&["-u", "1234:5"], "uid=1234 gid=5 groups=5\nGroups:\t5 \n"),
    ];
    let mut failures = Vec::new();
    for (user, want) in cases {
        let mut args = vec!["--rm", "--network", "none"];
        args.extend(user);
        args.extend(["box", "sh", "-c", "id; grep Groups /proc/self/status"]);
        let out = images.run(&args).run();
        if out.status.code() != Some(0) || out.stdout != want.as_bytes() {
            failures.push(format!("{user:?}: {out:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn kiln_errors_exit_125_with_clear_messages() {
    let Some(images) = images() else { return };
    let cases: [&[&str]; 8] = [
        &["-u", "nobody2", "box", "true"],
        &["-u", "kiln:nogroup", "box", "true"],
        &["-w", "rel", "box", "true"],
        &["-v", "relative:/mnt", "box", "true"],
        &["-v", "/no/such/kiln/dir:/mnt", "box", "true"],
        &["-e", "A B=1", "box", "true"],
        &["--security-opt", "seccomp=unconfined", "box", "true"],
        &["--pull", "never", "nosuchimage", "true"],
    ];
    let mut report = String::new();
    for args in cases {
        let mut all = vec!["--rm"];
        all.extend(args);
        let out = images.run(&all).run();
        report.push_str(&format!(
            "kiln run {} => {:?}\n{}",
            all.join(" "),
            out.status.code(),
            out.stderr_str()
        ));
    }
    insta::assert_snapshot!(report);
    assert!(
        images.containers().is_empty(),
        "failed runs left {:?}",
        images.containers()
    );
}

#[test]
fn network_none_has_only_loopback() {
    let Some(images) = images() else { return };
    let out = images
        .run(&["--rm", "--network", "none", "box", "ls", "/sys/class/net"])
        .run();
    assert_ran(&out, 0, "lo\n");
}

#[test]
fn memory_limit_kills_with_a_clear_message() {
    let Some(images) = images() else { return };
    let out = images
        .run(&[
            "--rm",
            "--memory",
            "64m",
            "box",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=200M",
            "count=1",
        ])
        .run();
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(
        out.stderr_str()
            .ends_with("kiln: container killed: out of memory (limit 64 MiB)\n"),
        "{out:?}"
    );
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let Some(images) = images() else { return };
    let script = "i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done; echo done";
    let out = images
        .run(&["--rm", "--pids-limit", "20", "box", "sh", "-c", script])
        .run();
    assert!(out.stderr_str().contains("can't fork"), "{out:?}");
    // The shell's sleepers die with it: the run ended.
    assert!(images.containers().is_empty());
}

#[test]
fn bind_mounts_read_write_and_read_only() {
    let Some(images) = images() else { return };
    let host = images.dir.path().join("shared");
    fs::create_dir(&host).expect("mkdir");
    fs::write(host.join("in"), "from host\n").expect("write");
    let rw = format!("{}:/data", host.display());
    let ro = format!("{}:/ro:ro", host.display());
    let out = images
        .run(&[
            "--rm",
            "-v",
            &rw,
            "-v",
            &ro,
            "box",
            "sh",
            "-c",
            "cat /data/in; echo out > /data/out; echo x > /ro/x || echo refused",
        ])
        .run();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout_str(), "from host\nrefused\n");
    assert!(
        out.stderr_str().contains("Read-only file system"),
        "{out:?}"
    );
    assert_eq!(fs::read_to_string(host.join("out")).expect("read"), "out\n");
    assert!(!host.join("x").exists());
}

#[test]
fn read_only_root() {
    let Some(images) = images() else { return };
    let out = images
        .run(&[
            "--rm",
            "--read-only",
            "box",
            "sh",
            "-c",
            "touch /file || echo refused; echo ok > /etc/hostname && echo etc-files-writable",
        ])
        .run();
    assert_eq!(out.stdout_str(), "refused\netc-files-writable\n", "{out:?}");
    assert!(
        out.stderr_str().contains("Read-only file system"),
        "{out:?}"
    );
}

#[test]
fn exec_errors_exit_127_and_126() {
    let Some(images) = images() else { return };
    let cases: [(&str, i32, &str); 3] = [
        (
            "nope",
            127,
            "error: exec: \"nope\": executable file not found in $PATH\n",
        ),
        (
            "/bin/nope",
            127,
            "error: exec: \"/bin/nope\": no such file or directory\n",
        ),
        (
            "/bin/notexec",
            126,
            "error: exec: \"/bin/notexec\": permission denied\n",
        ),
    ];
    let mut failures = Vec::new();
    for (program, code, message) in cases {
        let out = images.run(&["--rm", "box", program]).run();
        if out.status.code() != Some(code) || out.stderr_str() != message {
            failures.push(format!("{program}: {out:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(images.containers().is_empty());
}

#[test]
fn kept_containers_protect_their_image() {
    let Some(images) = images() else { return };
    let out = images.run(&["box", "sh", "-c", "echo kept > /file"]).run();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let containers = images.containers();
    let [dir] = containers.as_slice() else {
        panic!("one container expected: {containers:?}");
    };
    assert_eq!(
        fs::read_to_string(dir.join("upper/file")).expect("the upper dir is kept"),
        "kept\n"
    );
    let out = kiln().root(images.root()).args(["rmi", "box"]).run();
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr_str().contains("is using its referenced image"),
        "{out:?}"
    );
}

#[test]
fn stdin_with_and_without_interactive() {
    let Some(images) = images() else { return };
    let out = images
        .run(&["--rm", "-i", "box", "cat"])
        .stdin("data\n")
        .run();
    assert_ran(&out, 0, "data\n");
    let out = images.run(&["--rm", "box", "cat"]).stdin("data\n").run();
    assert_ran(&out, 0, "");
}

#[test]
fn tty_gives_a_terminal() {
    let Some(images) = images() else { return };
    let Some(script) = support::tool("script") else {
        return;
    };
    let command = images.run(&[
        "--rm",
        "-it",
        "box",
        "sh",
        "-c",
        "tty; test -t 0 && test -t 1 && echo tty; echo $TERM; stty size",
    ]);
    // What runs before kiln in script(1)'s terminal, and the size the container sees. script
    // without a terminal of its own gives its pty no size (0x0): then kiln's default, 24x80.
    let cases = [("", "24 80"), ("stty rows 40 cols 120; ", "40 120")];
    for (before, size) in cases {
        let line = format!("{before}{}", command.shell_line());
        // script's stdin stays open (a pipe held until the end): when it ends, script injects a
        // byte into its terminal, which `-i` would pass on to the container (a stray `^@`).
        let mut child = Command::new(&script)
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("script");
        let held_stdin = child.stdin.take();
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().expect("piped"), &mut stdout)
            .expect("read script's output");
        let status = child.wait().expect("wait for script");
        drop(held_stdin);
        assert!(status.success(), "{stdout}");
        // docker's answer: the pty is the container's own, its devpts' first.
        assert_eq!(
            stdout,
            format!("/dev/pts/0\r\ntty\r\nxterm\r\n{size}\r\n"),
            "{before}"
        );
    }
}

/// SIGKILL to kiln during `kiln run --rm` leaves no process of the container running under the
/// host's pid 1 (issue 18's crash case): the sandbox dies with the kiln that made it, with and
/// without `--init`, also when the workload runs as another user (an id change clears the
/// parent-death signal, which kiln then arms again).
#[test]
fn a_killed_kiln_leaves_no_container_process() {
    let Some(images) = images() else { return };
    for (case, flags) in [
        ("3011", &[][..]),
        ("3012", &["--init"][..]),
        ("3013", &["-u", "65534"][..]),
    ] {
        let mut args = vec!["--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["box", "sleep", case]);
        let mut child = images.run(&args).spawn();
        assert!(
            support::within(20, || !support::processes_running(&["sleep", case])
                .is_empty()),
            "{case}: the workload never started"
        );
        child.kill().expect("SIGKILL kiln");
        child.wait().expect("wait");
        if !support::within(5, || {
            support::processes_running(&["sleep", case]).is_empty()
        }) {
            let left = support::processes_running(&["sleep", case]);
            for pid in &left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            panic!("{case} {flags:?}: the container's process outlived kiln: {left:?}");
        }
    }
}

/// What a killed `kiln run --rm` leaves in the store (its container's record and directory) is
/// removed by the next kiln command, so it never keeps the image from `rmi` (issue 18's crash
/// case); a container whose `kiln run` still runs is kept.
#[test]
fn the_next_command_removes_what_a_killed_run_rm_left() {
    let Some(images) = images() else { return };
    let containers = || images.containers().len();
    // Killed on the way out even when an assertion fails first.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let live = KillOnDrop(images.run(&["--rm", "box", "sleep", "3041"]).spawn());
    let mut killed = images.run(&["--rm", "box", "sleep", "3042"]).spawn();
    for case in ["3041", "3042"] {
        assert!(
            support::within(20, || !support::processes_running(&["sleep", case])
                .is_empty()),
            "{case}: the workload never started"
        );
    }
    killed.kill().expect("SIGKILL kiln");
    killed.wait().expect("wait");
    assert!(
        support::within(5, || support::processes_running(&["sleep", "3042"])
            .is_empty()),
        "the killed run's process outlived kiln"
    );
    assert_eq!(
        containers(),
        2,
        "the killed run's container is still recorded"
    );

    let in_use = kiln()
        .root(images.root())
        .args(["rmi", "box"])
        .run()
        .failure()
        .stderr_str();
    assert!(in_use.contains("container"), "{in_use}");
    assert_eq!(containers(), 1, "only the live run's container is left");

    drop(live);
    assert!(
        support::within(5, || support::processes_running(&["sleep", "3041"])
            .is_empty()),
        "the second run's process outlived kiln"
    );
    kiln()
        .root(images.root())
        .args(["rmi", "box"])
        .run()
        .success();
    assert_eq!(containers(), 0);
}

#[test]
fn sigterm_is_forwarded() {
    let Some(images) = images() else { return };
    let script =
        "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done";
    let mut child = images.run(&["--rm", "box", "sh", "-c", script]).spawn();
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("read");
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let mut rest = String::new();
    reader.read_to_string(&mut rest).expect("read");
    let status = child.wait().expect("wait");
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(0));
}

/// A workload that ignores the SIGTERM kiln passes on is killed after the grace period
/// (`--stop-timeout`, docker's 10 s by default), so `kiln run` ends as `docker stop` would.
#[test]
fn a_workload_ignoring_sigterm_is_killed_after_the_grace_period() {
    let Some(images) = images() else { return };
    let script = "trap '' TERM; echo ready; while :; do sleep 1; done";
    let mut child = images
        .run(&["--rm", "--stop-timeout", "1", "box", "sh", "-c", script])
        .spawn();
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("read");
    assert_eq!(line, "ready\n");
    let signalled = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = child.wait().expect("wait");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(137), "killed after the grace period");
    assert!(took >= std::time::Duration::from_millis(900), "{took:?}");
    assert!(took < std::time::Duration::from_secs(6), "{took:?}");
    assert!(images.containers().is_empty());
}

#[test]
fn rootless_run() {
    let Some(images) = images() else { return };
    // The store belongs to the unprivileged user, as if it had imported the image itself.
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(images.dir.path())
        .status()
        .expect("chown");
    assert!(chown.success());
    let out = images
        .run(&["--rm", "box", "sh", "-c", "echo hi; id -u; exit 3"])
        .command()
        .uid(65534)
        .gid(65534)
        .output()
        .expect("kiln");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        (out.status.code(), stdout.as_ref()),
        (Some(3), "hi\n0\n"),
        "{stderr}"
    );
}

#[test]
fn no_new_privileges_by_default_and_on_request_off() {
    let Some(images) = images() else { return };
    let script = "grep NoNewPrivs /proc/self/status";
    let out = images.run(&["--rm", "box", "sh", "-c", script]).run();
    assert_ran(&out, 0, "NoNewPrivs:\t1\n");
    let out = images
        .run(&[
            "--rm",
            "--security-opt",
            "no-new-privileges=false",
            "box",
            "sh",
            "-c",
            script,
        ])
        .run();
    assert_ran(&out, 0, "NoNewPrivs:\t0\n");
}
