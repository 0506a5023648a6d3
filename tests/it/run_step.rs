//! The builder's RUN step on a busybox snapshot (as root): the layer made from its upper
//! directory (exactly what the command changed, whiteouts, no layer for no change, the snapshot
//! being the renamed upper directory), mount stubs removed as BuildKit removes them, output
//! lines, exit codes with the output's tail, exec errors, cancellation, environment, working
//! directory, user and supplementary groups (also through `kiln build`), hostname, `/etc/hosts`
//! and the network.

use crate::support;
use kiln::builder::LogStream;
use kiln::builder::steps::commit::{StagedUpper, commit};
use kiln::builder::steps::run::{RunStep, RunStepError, run_step};
use kiln::runtime::{ExecErrorKind, Mount, MountSource, Network, RuntimeError};
use kiln::solver::Cancel;
use kiln::store::{LayerInfo, Store};
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Docker's default `PATH`, which BuildKit puts in a RUN step's environment.
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// A store (in a world-readable temporary directory) with one base layer.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    /// The base snapshot.
    base: PathBuf,
}

/// What the base layer holds besides `/bin/busybox`.
#[derive(Clone, Copy, PartialEq)]
enum Base {
    /// Only `/bin/busybox`, as `FROM scratch` + `COPY busybox /bin/busybox` makes it.
    Scratch,
    /// Applet symlinks in `/bin`, `/etc/passwd` and `/etc/group` (root and nobody, no
    /// `/etc/hosts`), `/proc`, `/dev`, `/sys`, a sticky `/tmp` and `/base-file`.
    Busybox,
}

fn fixture(kind: Base) -> Option<Fixture> {
    support::root()?;
    let busybox = support::busybox()?;
    let dir = tempfile::tempdir().expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let store = Store::open(&dir.path().join("root")).expect("open store");
    let staged = StagedUpper::new(&store).expect("stage");
    let root = staged.upper();
    fs::create_dir(root.join("bin")).expect("mkdir bin");
    fs::copy(&busybox, root.join("bin/busybox")).expect("copy busybox");
    if kind == Base::Busybox {
        let list = Command::new(&busybox)
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
                symlink("busybox", root.join("bin").join(applet)).expect("applet symlink");
            }
        }
        support::populate(
            root,
            &[
                ("etc/passwd", PASSWD),
                ("etc/group", GROUP),
                ("base-file", "from the base\n"),
                ("proc/", ""),
                ("dev/", ""),
                ("sys/", ""),
                ("tmp/", ""),
            ],
        );
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    }
    let layer = commit(&store, staged).expect("commit").expect("a layer");
    Some(Fixture {
        base: store.snapshot_dir(&layer.diff_id),
        _dir: dir,
        store,
    })
}

/// A step running `script` with `sh -c` as root in `/`, without a network.
fn shell(script: &str) -> RunStep {
    RunStep {
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![PATH.into()],
        cwd: "/".into(),
        user: String::new(),
        network: Network::None,
        hostname: "buildkitsandbox".into(),
        mounts: Vec::new(),
        insecure: false,
        isolation: kiln::runtime::Isolation::Sandbox,
    }
}

/// The lines a run produced, per stream.
#[derive(Default)]
struct Output {
    lines: Mutex<Vec<(LogStream, String)>>,
}

impl Output {
    fn on_line(&self, stream: LogStream, line: &str) {
        self.lines
            .lock()
            .expect("lock")
            .push((stream, line.to_string()));
    }

    fn of(&self, stream: LogStream) -> Vec<String> {
        let lines = self.lines.lock().expect("lock");
        lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.clone())
            .collect()
    }
}

impl Fixture {
    /// Runs `step` on `lowers` (TOP-MOST FIRST) in a fresh staged upper directory.
    fn run_on(
        &self,
        lowers: &[PathBuf],
        step: &RunStep,
    ) -> (StagedUpper, Output, Result<(), RunStepError>) {
        let staged = StagedUpper::new(&self.store).expect("stage");
        let output = Output::default();
        let result = run_step(
            &self.store,
            lowers,
            &staged,
            step,
            &|stream, line| output.on_line(stream, line),
            &Cancel::new(),
        );
        (staged, output, result)
    }

    /// Runs `step` on the base, which must succeed; returns its stdout lines and its layer.
    fn run(&self, step: &RunStep) -> (Vec<String>, Option<LayerInfo>) {
        let (staged, output, result) = self.run_on(std::slice::from_ref(&self.base), step);
        if let Err(err) = result {
            panic!("{:?} failed: {err}; output: {:?}", step.args, output.lines);
        }
        let layer = commit(&self.store, staged).expect("commit");
        (output.of(LogStream::Stdout), layer)
    }

    /// The entries of a layer blob: (path, entry type) in tar order.
    fn entries(&self, layer: &LayerInfo) -> Vec<(String, tar::EntryType)> {
        let blob = self
            .store
            .blobs()
            .open_blob(&layer.digest)
            .expect("open blob");
        let mut archive = tar::Archive::new(blob);
        archive
            .entries()
            .expect("tar")
            .map(|entry| {
                let entry = entry.expect("entry");
                let path = entry.path().expect("path").display().to_string();
                (path, entry.header().entry_type())
            })
            .collect()
    }

    fn paths(&self, layer: &LayerInfo) -> Vec<String> {
        self.entries(layer).into_iter().map(|(p, _)| p).collect()
    }

    fn staging_entries(&self) -> Vec<PathBuf> {
        fs::read_dir(self.store.staging().dir())
            .expect("read staging")
            .map(|e| e.expect("entry").path())
            .collect()
    }
}

#[test]
fn a_written_file_is_the_whole_layer_and_the_upper_dir_becomes_its_snapshot() {
    let Some(fx) = fixture(Base::Busybox) else {
        return;
    };
    let step = shell("mkdir -p /a/b && echo hi > /a/b/f && cat /etc/hosts > /dev/null");
    let (staged, output, result) = fx.run_on(std::slice::from_ref(&fx.base), &step);
    result.expect("run");
    assert!(output.of(LogStream::Stderr).is_empty());
    // overlayfs' leftover in the work dir (root's, mode 000) is beside the upper dir, not in it.
    assert!(staged.work().join("work").is_dir());
    let inode = fs::metadata(staged.upper()).expect("stat upper").ino();
    let layer = commit(&fx.store, staged).expect("commit").expect("a layer");
    assert_eq!(fx.paths(&layer), ["a/", "a/b/", "a/b/f"]);
    assert_eq!(layer.digest, layer.diff_id);
    let snapshot = fx.store.snapshot_dir(&layer.diff_id);
    assert_eq!(fs::metadata(&snapshot).expect("snapshot").ino(), inode);
    assert_eq!(
        fs::read_to_string(snapshot.join("a/b/f")).expect("read"),
        "hi\n"
    );
    assert!(
        fx.staging_entries().is_empty(),
        "{:?}",
        fx.staging_entries()
    );
}

#[test]
fn a_deleted_base_file_is_a_whiteout_and_no_change_is_no_layer() {
    let Some(fx) = fixture(Base::Busybox) else {
        return;
    };
    let (_, layer) = fx.run(&shell("rm /base-file"));
    let layer = layer.expect("a layer");
    assert_eq!(
        fx.entries(&layer),
        [(".wh.base-file".to_string(), tar::EntryType::Regular)]
    );
    let (out, layer) = fx.run(&shell("echo nothing changes; cat /base-file"));
    assert_eq!(out, ["nothing changes", "from the base"]);
    assert_eq!(layer, None);
    assert!(fx.staging_entries().is_empty());
}

/// The layers of `FROM scratch`, `COPY busybox /bin/busybox`,
/// `RUN ["/bin/busybox","--install","-s","/bin"]` and `RUN echo hi > /x`. BuildKit's first RUN
/// layer holds `bin/*`, `dev/`, `proc/` and `sys/` (the kernel file systems' mount points runc
/// created stay) and its second only `x`. Docker 20.10's BuildKit (the peer dockerd) also leaves
/// an `etc/` in both, from `/etc/hosts` and `/etc/resolv.conf` stubs it removed without their
/// parent; BuildKit since RemoveMountStubsRecursive removes it, as kiln does.
#[test]
fn mount_stubs_are_removed_as_buildkit_removes_them() {
    let Some(fx) = fixture(Base::Scratch) else {
        return;
    };
    let install = RunStep {
        args: ["/bin/busybox", "--install", "-s", "/bin"]
            .map(String::from)
            .to_vec(),
        ..shell("")
    };
    let (_, layer) = fx.run(&install);
    let layer = layer.expect("a layer");
    let outside_bin: Vec<String> = fx
        .paths(&layer)
        .into_iter()
        .filter(|p| !p.starts_with("bin/") || p == "bin/")
        .collect();
    assert_eq!(outside_bin, ["bin/", "dev/", "proc/", "sys/"]);
    assert!(fx.paths(&layer).contains(&"bin/sh".to_string()));

    let lowers = [fx.store.snapshot_dir(&layer.diff_id), fx.base.clone()];
    let source = tempfile::tempdir().expect("temp dir");
    let mut step = shell("echo hi > /x; ls /mnt/data/deep");
    step.cwd = "/work/dir".into();
    step.mounts = vec![Mount {
        destination: "/mnt/data/deep".into(),
        source: MountSource::Bind(source.path().to_path_buf()),
        readonly: true,
    }];
    let (staged, output, result) = fx.run_on(&lowers, &step);
    result.expect("run");
    assert!(output.of(LogStream::Stderr).is_empty());
    let layer = commit(&fx.store, staged).expect("commit").expect("a layer");
    // The working directory the runtime created stays, as in BuildKit; /etc and /mnt go.
    assert_eq!(fx.paths(&layer), ["work/", "work/dir/", "x"]);
}

#[test]
fn output_lines_arrive_in_order_per_stream() {
    let Some(fx) = fixture(Base::Busybox) else {
        return;
    };
    let step = shell("for i in $(seq 1 200); do echo out $i; echo err $i >&2; done; printf tail");
    let (_, output, result) = fx.run_on(std::slice::from_ref(&fx.base), &step);
    result.expect("run");
    let mut want_out: Vec<String> = (1..=200).map(|i| format!("out {i}")).collect();
    want_out.push("tail".into());
    let want_err: Vec<String> = (1..=200).map(|i| format!("err {i}")).collect();
    assert_eq!(output.of(LogStream::Stdout), want_out);
    assert_eq!(output.of(LogStream::Stderr), want_err);
}

#[test]
fn failures_carry_the_exit_code_and_the_last_lines() {
    let Some(fx) = fixture(Base::Busybox) else {
        return;
    };
    let lowers = std::slice::from_ref(&fx.base);
    let (_, _, result) = fx.run_on(lowers, &shell("seq 1 20; exit 3"));
    let err = result.expect_err("exit 3");
    let want: Vec<String> = (11..=20).map(|i| i.to_string()).collect();
    assert_eq!(err.tail(), want.as_slice());
    assert!(
        matches!(&err, RunStepError::ExitCode { code: 3, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        r#"process "/bin/sh -c seq 1 20; exit 3" did not complete successfully: exit code: 3"#
    );

    // pid 1 of a pid namespace ignores even SIGKILL from inside (pid_namespaces(7)): a child
    // killed by a signal makes the shell exit with 128 + the signal, as BuildKit reports it.
    let (_, _, result) = fx.run_on(lowers, &shell("echo bye >&2; sh -c 'kill -9 $$'; exit $?"));
    let err = result.expect_err("killed");
    assert!(
        matches!(&err, RunStepError::ExitCode { code: 137, .. }),
        "{err:?}"
    );
    assert_eq!(err.tail(), ["bye".to_string(), "Killed".to_string()]);

    let step = RunStep {
        args: vec!["no-such-command".into()],
        ..shell("")
    };
    let (_, _, result) = fx.run_on(lowers, &step);
    let err = result.expect_err("not found");
    assert!(
        matches!(
            &err,
            RunStepError::Runtime(RuntimeError::Exec {
                kind: ExecErrorKind::NotFoundInPath,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        r#"exec: "no-such-command": executable file not found in $PATH"#
    );
    assert!(
        fx.staging_entries().is_empty(),
        "{:?}",
        fx.staging_entries()
    );
}

#[test]
fn cancelling_kills_the_sandbox_and_leaves_nothing_staged() {
    let Some(fx) = fixture(Base::Busybox) else {
        return;
    };
    let cancel = Cancel::new();
    let staged = StagedUpper::new(&fx.store).expect("stage");
    // A daemon that would outlive a plain kill of the shell, then a long sleep; the output
    // callback cancels once both run.
    let step = shell("setsid sleep 1000 & echo started; exec sleep 1000");
    let on_line = |_: LogStream, line: &str| {
        if line == "started" {
            cancel.cancel();
        }
    };
    let result = run_step(
        &fx.store,
        std::slice::from_ref(&fx.base),
        &staged,
        &step,
        &on_line,
        &cancel,
    );
    assert!(matches!(result, Err(RunStepError::Canceled)), "{result:?}");
    drop(staged);
    assert!(
        fx.staging_entries().is_empty(),
        "{:?}",
        fx.staging_entries()
    );
}

#[test]
fn environment_working_directory_and_user_are_honoured() {
    let Some(fx) = fixture(Base::Busybox) else {
        return;
    };
    let mut step = shell(
        r#"echo "$(id -u):$(id -g) $(pwd) $FOO $HOME"; touch /tmp/mine; stat -c '%u:%g %n' /tmp/mine"#,
    );
    step.env.push("FOO=bar baz".into());
    step.user = "nobody".into();
    step.cwd = "/srv/app".into();
    let (out, layer) = fx.run(&step);
    assert_eq!(
        out.first().map(String::as_str),
        Some("65534:65534 /srv/app bar baz /nonexistent")
    );
    assert_eq!(
        out.get(1).map(String::as_str),
        Some("65534:65534 /tmp/mine")
    );
    let layer = layer.expect("a layer");
    assert_eq!(fx.paths(&layer), ["srv/", "srv/app/", "tmp/", "tmp/mine"]);

    // The explicit group is also the one supplementary group (BuildKit's ensureAdditionalGids).
    let mut step = shell("id");
    step.user = "1234:nogroup".into();
    assert_eq!(
        fx.run(&step).0,
        ["uid=1234 gid=65534(nogroup) groups=65534(nogroup)"]
    );

    let mut step = shell("true");
    step.user = "nosuchuser".into();
    let (_, _, result) = fx.run_on(std::slice::from_ref(&fx.base), &step);
    let err = result.expect_err("unknown user").to_string();
    assert!(err.contains("unable to find user nosuchuser"), "{err}");
}

/// `kiln build` end to end: a RUN step's supplementary groups are the image's `/etc/group` ones
/// plus the primary group, exactly as BuildKit v0.32.2 printed them for this Dockerfile (issue
/// 12, item 10): root gets the groups listing `root`, a user (by name or uid) those listing its
/// name, `user:group` only that group, a uid without an entry its primary gid 0.
#[test]
fn kiln_build_gives_a_run_step_buildkits_supplementary_groups() {
    let Some(busybox) = support::root().and_then(|()| support::busybox()) else {
        return;
    };
    let dockerfile = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY etc/ /etc/
RUN mkdir -m 1777 /out /tmp && (id; grep Groups /proc/self/status) > /out/root
USER app
RUN (id; grep Groups /proc/self/status) > /out/app
USER app:wheel
RUN (id; grep Groups /proc/self/status) > /out/app-wheel
USER 1000
RUN (id; grep Groups /proc/self/status) > /out/1000
USER 0
RUN (id; grep Groups /proc/self/status) > /out/0
USER 1000:1000
RUN (id; grep Groups /proc/self/status) > /out/1000-1000
USER 2000
RUN (id; grep Groups /proc/self/status) > /out/2000
"#;
    let context = support::context(&[
        ("Dockerfile", dockerfile),
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        ),
        (
            "etc/group",
            "root:x:0:\nwheel:x:10:root\nappgrp:x:1000:\nstaff:x:50:app,root\nvideo:x:44:app\n",
        ),
    ]);
    fs::copy(&busybox, context.path().join("busybox")).expect("copy busybox");
    let root = tempfile::tempdir().expect("temp dir");
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", out.path().display());
    crate::support::kiln()
        .root(root.path())
        .args([
            "build".as_ref(),
            "-o".as_ref(),
            dest.as_ref(),
            context.path().as_os_str(),
        ])
        .run()
        .success();
    let root_groups =
        "uid=0(root) gid=0(root) groups=0(root),10(wheel),50(staff)\nGroups:\t0 10 50 \n";
    let app_groups = "uid=1000(app) gid=1000(appgrp) groups=44(video),50(staff),1000(appgrp)\n\
                      Groups:\t44 50 1000 \n";
    let mut failures = Vec::new();
    for (file, expected) in [
        ("root", root_groups),
        ("app", app_groups),
        (
            "app-wheel",
            "uid=1000(app) gid=10(wheel) groups=10(wheel)\nGroups:\t10 \n",
        ),
        ("1000", app_groups),
        ("0", root_groups),
        (
            "1000-1000",
            "uid=1000(app) gid=1000(appgrp) groups=1000(appgrp)\nGroups:\t1000 \n",
        ),
        ("2000", "uid=2000 gid=0(root) groups=0(root)\nGroups:\t0 \n"),
    ] {
        let got = fs::read_to_string(out.path().join("out").join(file)).expect("read output");
        if got != expected {
            failures.push(format!("USER {file}: {got:?}, expected {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn hostname_hosts_file_and_no_network() {
    let Some(fx) = fixture(Base::Busybox) else {
        return;
    };
    let script = "hostname; cat /etc/hosts; ls /sys/class/net; test -e /etc/hostname || echo \
                  no /etc/hostname; echo $HOME; echo 10.0.0.1 extra >> /etc/hosts";
    let (out, layer) = fx.run(&shell(script));
    assert_eq!(
        out,
        [
            "buildkitsandbox",
            "127.0.0.1\tlocalhost buildkitsandbox",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            "lo",
            "no /etc/hostname",
            "/root",
        ]
    );
    // The /etc files are the step's own (written in its staging directory), never the layer's.
    assert_eq!(layer, None);
}

/// The paths of every layer of an image the peer dockerd's BuildKit built from `dockerfile` in a
/// context holding `busybox`, base first.
fn peer_layers(peer: &support::PeerDocker, busybox: &Path, dockerfile: &str) -> Vec<Vec<String>> {
    let context = support::context(&[("Dockerfile", dockerfile)]);
    fs::copy(busybox, context.path().join("busybox")).expect("copy busybox");
    let tag = format!("kiln-run-step-test:{}", std::process::id());
    let built = peer
        .command()
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "--no-cache", "--network", "host", "-q", "-t", &tag])
        .arg(context.path())
        .output()
        .expect("docker build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let saved = peer
        .command()
        .args(["save", &tag])
        .output()
        .expect("docker save");
    peer.run(&["rmi", &tag]);
    assert!(saved.status.success());
    let mut files: std::collections::HashMap<String, Vec<u8>> = Default::default();
    let mut archive = tar::Archive::new(saved.stdout.as_slice());
    for entry in archive.entries().expect("saved tar") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").display().to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read");
        files.insert(path, bytes);
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
    manifest[0]["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|layer| {
            let bytes = &files[layer.as_str().expect("layer path")];
            let mut archive = tar::Archive::new(bytes.as_slice());
            archive
                .entries()
                .expect("layer tar")
                .map(|e| {
                    e.expect("entry")
                        .path()
                        .expect("path")
                        .display()
                        .to_string()
                })
                .collect()
        })
        .collect()
}

/// kiln's layers for `FROM scratch` / `COPY busybox` / `RUN --install` / `RUN echo hi > /x`
/// have the paths of the peer's, but for the `etc/` Docker 20.10's BuildKit leaves behind (see
/// `mount_stubs_are_removed_as_buildkit_removes_them`).
#[test]
fn layers_have_the_paths_of_the_peer_dockers_buildkit() {
    let Some(fx) = fixture(Base::Scratch) else {
        return;
    };
    let (Some(busybox), Some(peer)) = (support::busybox(), support::peer_docker()) else {
        return;
    };
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\n\
                      RUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\n\
                      RUN echo hi > /x\n";
    let mut peer: Vec<Vec<String>> = peer_layers(&peer, &busybox, dockerfile);
    for layer in &mut peer {
        layer.retain(|path| path != "etc/");
        layer.sort();
    }
    let install = RunStep {
        args: ["/bin/busybox", "--install", "-s", "/bin"]
            .map(String::from)
            .to_vec(),
        ..shell("")
    };
    let (_, installed) = fx.run(&install);
    let installed = installed.expect("a layer");
    let lowers = [fx.store.snapshot_dir(&installed.diff_id), fx.base.clone()];
    let (staged, _, result) = fx.run_on(&lowers, &shell("echo hi > /x"));
    result.expect("run");
    let x = commit(&fx.store, staged).expect("commit").expect("a layer");
    let mut ours = Vec::new();
    for layer in [&installed, &x] {
        let mut paths = fx.paths(layer);
        paths.sort();
        ours.push(paths);
    }
    assert_eq!(peer.len(), 3, "{peer:?}");
    assert_eq!(peer[0], ["bin/", "bin/busybox"]);
    assert_eq!(&peer[1..], ours.as_slice());
}
