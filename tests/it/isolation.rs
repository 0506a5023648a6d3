//! `--isolation=chroot` and the message when the sandbox cannot be made (issue 17, item 6):
//! on this machine (chroot(2) as root, proot as an unprivileged user without docker), and inside
//! an unprivileged container of the peer dockerd (default seccomp profile, `--user 1000`, no
//! added capabilities), where the sandbox's namespaces are refused. Every chroot build's layers
//! are compared entry by entry (path, type, mode, owner, size, link target, contents) with the
//! sandbox's build of the same Dockerfile as root on this machine.

use crate::support::{self, kiln};
use std::collections::BTreeSet;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A busybox image made by a RUN step that adds files, a user, a symlink, removes one (a
/// whiteout), and a step run as that user.
const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN echo built > /built && mkdir -m 1777 /tmp && mkdir -p /home/app && \
    echo 'root:x:0:0::/root:/bin/sh' > /etc/passwd && \
    echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && \
    echo 'app:x:1000:' > /etc/group && chown 1000:1000 /home/app && \
    ln -s /built /home/app/link && rm /bin/wget
USER app
RUN id -u > /tmp/who && echo mine > /tmp/mine
"#;

/// The message kiln gives in a container whose seccomp profile refuses user namespaces.
const SECCOMP_MESSAGE: &str = "cannot create a user namespace (EPERM): this looks like a \
                               container with a seccomp profile that denies \
                               unshare(CLONE_NEWUSER)";

/// One layer entry as compared: path, type, mode, uid, gid, size, link target, contents.
type Entry = (String, u8, u32, u64, u64, u64, String, Vec<u8>);

/// A context directory readable by every user: the Dockerfile and Debian's static busybox.
fn context(busybox: &Path) -> tempfile::TempDir {
    let dir = support::context(&[("Dockerfile", DOCKERFILE)]);
    fs::copy(busybox, dir.path().join("busybox")).expect("copy busybox");
    open_to_all(dir.path());
    dir
}

/// Mode 0755 for `dir` (tempdirs are 0700), so another uid can read it.
fn open_to_all(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A directory that uid:gid owns.
fn owned_dir(uid: u32, gid: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
    dir
}

/// The entries of every layer of the image in the docker archive `archive`, in order.
fn layer_entries(archive: &Path) -> Vec<Vec<Entry>> {
    let unpacked = tempfile::tempdir().expect("temp dir");
    tar::Archive::new(fs::File::open(archive).expect("open archive"))
        .unpack(unpacked.path())
        .expect("unpack archive");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(unpacked.path().join("manifest.json")).unwrap())
            .expect("manifest.json");
    let layers = manifest[0]["Layers"].as_array().expect("layers").clone();
    layers
        .iter()
        .map(|layer| {
            let path = unpacked.path().join(layer.as_str().expect("layer path"));
            let mut tar = tar::Archive::new(fs::File::open(path).expect("open layer"));
            let mut entries: Vec<Entry> = tar
                .entries()
                .expect("layer entries")
                .map(|entry| {
                    let mut entry = entry.expect("layer entry");
                    let header = entry.header().clone();
                    let mut contents = Vec::new();
                    entry.read_to_end(&mut contents).expect("read entry");
                    (
                        entry.path().unwrap().display().to_string(),
                        header.entry_type().as_byte(),
                        header.mode().unwrap(),
                        header.uid().unwrap(),
                        header.gid().unwrap(),
                        header.size().unwrap(),
                        entry
                            .link_name()
                            .unwrap()
                            .map(|l| l.display().to_string())
                            .unwrap_or_default(),
                        contents,
                    )
                })
                .collect();
            entries.sort();
            entries
        })
        .collect()
}

/// The layers of the image the sandbox builds as root on this machine (the reference), with the
/// directory of the store.
fn sandbox_reference(ctx: &Path) -> Vec<Vec<Entry>> {
    let store = tempfile::tempdir().expect("temp dir");
    kiln()
        .root(store.path())
        .args(["build", "-q", "-t", "ref", "."])
        .current_dir(ctx)
        .run()
        .success();
    let archive = store.path().join("ref.tar");
    kiln()
        .root(store.path())
        .args(["save", "ref", "-o"])
        .arg(&archive)
        .run()
        .success();
    layer_entries(&archive)
}

/// Paths of the entries of every layer, for a readable failure.
fn paths(layers: &[Vec<Entry>]) -> Vec<Vec<String>> {
    layers
        .iter()
        .map(|entries| entries.iter().map(|e| e.0.clone()).collect())
        .collect()
}

/// Under proot, `chown` succeeds without effect: the directory the RUN step gave to app stays
/// kiln's user's, recorded as the step user's (root).
const PROOT_CAVEATS: &[&str] = &["home/app"];

/// Asserts the layers are the same, except that the entries at `root_owned` paths are root's in
/// `got` (see [`PROOT_CAVEATS`]) where they are app's in `want`.
fn assert_same_layers(got: &[Vec<Entry>], want: &[Vec<Entry>], what: &str, root_owned: &[&str]) {
    assert_layers_equal(got, want, what, root_owned);
    // The RUN steps' work is there: the file, the whiteout, the user's own file.
    let all: BTreeSet<&str> = got.iter().flatten().map(|e| e.0.as_str()).collect();
    for path in [
        "built",
        "bin/.wh.wget",
        "home/app/link",
        "tmp/who",
        "tmp/mine",
    ] {
        assert!(all.contains(path), "{what}: {path} missing from {all:?}");
    }
}

/// [`assert_same_layers`] without the paths of [`DOCKERFILE`].
fn assert_layers_equal(got: &[Vec<Entry>], want: &[Vec<Entry>], what: &str, root_owned: &[&str]) {
    let mut want = want.to_vec();
    for entry in want.iter_mut().flatten() {
        if root_owned.contains(&entry.0.trim_end_matches('/')) {
            assert_eq!((entry.3, entry.4), (1000, 1000), "{}", entry.0);
            (entry.3, entry.4) = (0, 0);
        }
    }
    let want = &want;
    assert_eq!(paths(got), paths(want), "{what}: layer paths");
    for (index, (got, want)) in got.iter().zip(want).enumerate() {
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g, w, "{what}: layer {index}, entry {}", w.0);
        }
    }
}

/// chroot(2) as root on this machine gives the sandbox's layers; `kiln run --isolation=chroot`
/// runs the image, also through `KILN_ISOLATION`; what the mode cannot do is refused by name.
#[test]
fn chroot_mode_as_root_builds_the_sandbox_layers() {
    let (Some(()), Some(busybox)) = (support::root(), support::busybox()) else {
        return;
    };
    let ctx = context(&busybox);
    let want = sandbox_reference(ctx.path());
    let store = tempfile::tempdir().expect("temp dir");
    kiln()
        .root(store.path())
        .args(["build", "-q", "--isolation=chroot", "-t", "x", "."])
        .current_dir(ctx.path())
        .run()
        .success();
    let archive = store.path().join("x.tar");
    kiln()
        .root(store.path())
        .args(["save", "x", "-o"])
        .arg(&archive)
        .run()
        .success();
    assert_same_layers(&layer_entries(&archive), &want, "chroot(2) as root", &[]);

    let out = kiln()
        .root(store.path())
        .args(["run", "--rm", "--isolation=chroot", "x", "sh", "-c"])
        .arg("cat /built /tmp/who; id -u; exit 3")
        .run()
        .code(3);
    assert_eq!(out.stdout_str(), "built\n1000\n1000\n");
    let out = kiln()
        .root(store.path())
        .env("KILN_ISOLATION", "chroot")
        .args(["run", "--rm", "-u", "0", "x", "cat", "/home/app/link"])
        .run()
        .success();
    assert_eq!(out.stdout_str(), "built\n");
    // A step that changes a file of the image changes its own copy, never the store's
    // snapshot that the image below it reads; what it leaves running in the background is
    // killed when it ends (as in the sandbox's pid namespace), so the build does not wait.
    let started = std::time::Instant::now();
    kiln()
        .root(store.path())
        .args([
            "build",
            "-q",
            "--isolation=chroot",
            "-t",
            "z",
            "-f",
            "-",
            ".",
        ])
        .current_dir(ctx.path())
        .stdin("FROM x\nUSER root\nRUN echo more >> /built && (sleep 1000 &)\n")
        .run()
        .success();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    for (image, want) in [("x", "built\n"), ("z", "built\nmore\n")] {
        let out = kiln()
            .root(store.path())
            .args(["run", "--rm", "--isolation=chroot", image, "cat", "/built"])
            .run()
            .success();
        assert_eq!(out.stdout_str(), want, "{image}");
    }
    // No container directory (with its copy of the image) is left.
    let containers = store.path().join("containers");
    let left = fs::read_dir(&containers).map_or(0, |d| d.count());
    assert_eq!(left, 0, "{}", containers.display());

    let refused = kiln()
        .root(store.path())
        .args([
            "run",
            "--rm",
            "--isolation=chroot",
            "--network=none",
            "x",
            "true",
        ])
        .run()
        .code(125)
        .stderr_str();
    assert!(
        refused.contains("--network=none is not possible with --isolation=chroot"),
        "{refused}"
    );
    let volume = tempfile::tempdir().expect("temp dir");
    let bind = format!("{}:/mnt", volume.path().display());
    for (args, want) in [
        (
            vec!["-v", bind.as_str()],
            "the writable bind mount on /mnt (RUN --mount=type=cache or ssh, kiln run -v) is not \
             possible with --isolation=chroot",
        ),
        (
            vec!["-t"],
            "a terminal (-t) is not possible with --isolation=chroot",
        ),
        (
            vec!["--memory", "64m"],
            "resource limits (--memory, --cpus, --pids-limit) is not possible with \
             --isolation=chroot",
        ),
    ] {
        let refused = kiln()
            .root(store.path())
            .args(["run", "--rm", "--isolation=chroot"])
            .args(&args)
            .args(["x", "true"])
            .run()
            .code(125)
            .stderr_str();
        assert!(refused.contains(want), "{args:?}: {refused}");
    }
    let missing = kiln()
        .root(store.path())
        .args(["run", "--rm", "--isolation=chroot", "x", "nosuchprogram"])
        .run()
        .code(127)
        .stderr_str();
    assert!(
        missing.contains("exec: \"nosuchprogram\": executable file not found in $PATH"),
        "{missing}"
    );
    let unknown = kiln()
        .root(store.path())
        .args(["build", "--isolation=none", "."])
        .current_dir(ctx.path())
        .run()
        .failure()
        .stderr_str();
    assert!(
        unknown.contains("unknown isolation \"none\": kiln knows sandbox (the default) and chroot"),
        "{unknown}"
    );
}

/// An unprivileged user on this machine has no CAP_SYS_CHROOT, so the mode goes through proot:
/// the same layers (kiln's user's files recorded as the step user's), and the image runs.
#[test]
fn chroot_mode_through_proot_as_an_unprivileged_user() {
    let (Some(()), Some(busybox), Some(_)) =
        (support::root(), support::busybox(), support::tool("proot"))
    else {
        return;
    };
    let ctx = context(&busybox);
    let want = sandbox_reference(ctx.path());
    let store = owned_dir(65534, 65534);
    let as_nobody = |args: &[&str]| -> String {
        let mut command = kiln()
            .root(store.path())
            .args(args)
            .current_dir(ctx.path())
            .command();
        command.uid(65534).gid(65534).env("HOME", store.path());
        let out = command
            .stdin(Stdio::null())
            .output()
            .expect("run kiln as nobody");
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "kiln {args:?} as 65534:\n{stdout}{stderr}"
        );
        stdout
    };
    as_nobody(&["build", "-q", "--isolation=chroot", "-t", "x", "."]);
    let archive = store.path().join("x.tar");
    as_nobody(&["save", "x", "-o", archive.to_str().unwrap()]);
    assert_same_layers(
        &layer_entries(&archive),
        &want,
        "proot as 65534",
        PROOT_CAVEATS,
    );
    let out = as_nobody(&["run", "--rm", "--isolation=chroot", "x", "cat", "/built"]);
    assert_eq!(out, "built\n");

    // Without proot, the mode says what it needs.
    for (proot, want) in [
        (
            "/nonexistent/proot",
            "KILN_PROOT names /nonexistent/proot, which is not a file",
        ),
        ("", "kiln holds no CAP_SYS_CHROOT and finds no proot"),
    ] {
        let mut command = kiln()
            .root(store.path())
            .args(["run", "--rm", "--isolation=chroot", "x", "true"])
            .command();
        command
            .uid(65534)
            .gid(65534)
            .env("KILN_PROOT", proot)
            .env("PATH", "/nowhere");
        let out = command.stdin(Stdio::null()).output().expect("run kiln");
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(125), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
}

/// RUN mounts with a secret, a bind of another stage and a tmpfs: the step reads them, their
/// contents and mount points never reach a layer, and the layers equal the sandbox's.
const MOUNTS_DOCKERFILE: &str = r#"FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
FROM base
RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /len
RUN --mount=type=bind,from=base,source=/bin,target=/mnt/b ls /mnt/b/busybox > /bound
RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/y && ls /scratch > /tmpfs
"#;

/// The secret the mounts' build lends.
const SECRET: &str = "kiln-isolation-secret-value";

/// Builds the context's Dockerfile into `store` (as `uid` when given) with the token secret,
/// and returns kiln's output and, on success, the image's layers.
fn build_with_secret(
    store: &Path,
    ctx: &Path,
    isolation: &str,
    uid: Option<u32>,
) -> (std::process::Output, Option<Vec<Vec<Entry>>>) {
    let secret = ctx.join("token");
    let secret_flag = format!("id=token,src={}", secret.display());
    let archive = store.join("m.tar");
    let run = |args: &[&str]| {
        let mut command = kiln().root(store).args(args).current_dir(ctx).command();
        if let Some(uid) = uid {
            command.uid(uid).gid(uid).env("HOME", store);
        }
        command.stdin(Stdio::null()).output().expect("run kiln")
    };
    let isolation = format!("--isolation={isolation}");
    let built = run(&[
        "build",
        "-q",
        &isolation,
        "--secret",
        &secret_flag,
        "-t",
        "m",
        ".",
    ]);
    if !built.status.success() {
        return (built, None);
    }
    let saved = run(&["save", "m", "-o", archive.to_str().unwrap()]);
    assert!(saved.status.success(), "{:?}", text(&saved));
    (built, Some(layer_entries(&archive)))
}

/// Mounts in both ways of changing the root: copies with chroot(2) (root), binds with proot
/// (an unprivileged user), where a cache mount works too; chroot(2) refuses a writable host
/// directory (a cache mount) by name.
#[test]
fn chroot_mode_mounts() {
    let (Some(()), Some(busybox)) = (support::root(), support::busybox()) else {
        return;
    };
    let ctx = support::context(&[("Dockerfile", MOUNTS_DOCKERFILE), ("token", SECRET)]);
    fs::copy(&busybox, ctx.path().join("busybox")).expect("copy busybox");
    open_to_all(ctx.path());
    fs::set_permissions(ctx.path().join("token"), fs::Permissions::from_mode(0o644)).unwrap();
    let reference = tempfile::tempdir().expect("temp dir");
    let (out, want) = build_with_secret(reference.path(), ctx.path(), "sandbox", None);
    let want = want.unwrap_or_else(|| panic!("{:?}", text(&out)));
    let no_leak = |layers: &[Vec<Entry>], what: &str| {
        let all: BTreeSet<&str> = layers.iter().flatten().map(|e| e.0.as_str()).collect();
        for path in ["len", "bound", "tmpfs"] {
            assert!(all.contains(path), "{what}: {path} missing from {all:?}");
        }
        for entry in layers.iter().flatten() {
            let leaked = ["run/", "mnt/", "scratch/"]
                .iter()
                .any(|p| entry.0.starts_with(p));
            assert!(!leaked, "{what}: a mount reached a layer: {}", entry.0);
            let contents = String::from_utf8_lossy(&entry.7);
            assert!(
                !contents.contains(SECRET),
                "{what}: the secret is in {}",
                entry.0
            );
        }
    };
    no_leak(&want, "the sandbox");

    let store = tempfile::tempdir().expect("temp dir");
    let (out, got) = build_with_secret(store.path(), ctx.path(), "chroot", None);
    let got = got.unwrap_or_else(|| panic!("{:?}", text(&out)));
    assert_layers_equal(&got, &want, "chroot(2) mounts", &[]);
    no_leak(&got, "chroot(2)");
    let cache = "FROM scratch\nCOPY busybox /bin/busybox\n\
                 RUN --mount=type=cache,target=/c [\"/bin/busybox\", \"true\"]\n";
    let refused = kiln()
        .root(store.path())
        .args(["build", "--isolation=chroot", "-f", "-", "."])
        .current_dir(ctx.path())
        .stdin(cache)
        .run()
        .failure()
        .stderr_str();
    assert!(
        refused.contains(
            "the writable bind mount on /c (RUN --mount=type=cache or ssh, kiln run -v) is not \
             possible with --isolation=chroot"
        ),
        "{refused}"
    );

    if support::tool("proot").is_none() {
        return;
    }
    let cached = format!(
        "{MOUNTS_DOCKERFILE}RUN --mount=type=cache,target=/c echo kept > /c/f\n\
         RUN --mount=type=cache,target=/c cat /c/f > /cached\n"
    );
    fs::write(ctx.path().join("Dockerfile"), cached).expect("write Dockerfile");
    let nobody = owned_dir(65534, 65534);
    let (out, got) = build_with_secret(nobody.path(), ctx.path(), "chroot", Some(65534));
    let got = got.unwrap_or_else(|| panic!("{:?}", text(&out)));
    no_leak(&got, "proot");
    assert_layers_equal(&got[..want.len()], &want, "proot mounts", &[]);
    let cached_file = got
        .iter()
        .flatten()
        .find(|e| e.0 == "cached")
        .expect("cached");
    assert_eq!(cached_file.7, b"kept\n");
}

/// The peer dockerd's image for the in-container test: busybox with its applets, proot, the
/// shared libraries of proot and kiln (kiln itself is bound in read-only), a sticky /tmp and a
/// home for uid 1000. Returns its name.
fn container_image(docker: &support::PeerDocker, busybox: &Path, proot: &Path) -> String {
    let kiln_binary = PathBuf::from(env!("CARGO_BIN_EXE_kiln"));
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(true);
    let dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, owner: u64| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_uid(owner);
        header.set_gid(owner);
        header.set_size(0);
        tar.append_data(&mut header, path, std::io::empty())
            .expect("append dir");
    };
    for (path, mode, owner) in [
        ("bin", 0o755, 0),
        ("tmp", 0o1777, 0),
        ("home", 0o755, 0),
        ("home/kiln", 0o755, 1000),
        ("ctx", 0o755, 0),
        ("store", 0o755, 0),
        ("out", 0o755, 0),
    ] {
        dir(&mut tar, path, mode, owner);
    }
    tar.append_path_with_name(busybox, "bin/busybox")
        .expect("busybox");
    tar.append_path_with_name(proot, "bin/proot")
        .expect("proot");
    for applet in ["sh", "cat", "id", "ls", "grep"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        tar.append_link(&mut header, format!("bin/{applet}"), "busybox")
            .expect("applet");
    }
    let mut libraries = BTreeSet::new();
    for binary in [&kiln_binary, &proot.to_path_buf()] {
        let ldd = Command::new("ldd").arg(binary).output().expect("run ldd");
        for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
            if word.starts_with('/') {
                libraries.insert(PathBuf::from(word));
            }
        }
    }
    let mut parents = BTreeSet::new();
    for library in &libraries {
        let inside = library.strip_prefix("/").unwrap();
        for parent in inside.ancestors().skip(1) {
            if !parent.as_os_str().is_empty() && parents.insert(parent.to_path_buf()) {
                dir(&mut tar, &parent.display().to_string(), 0o755, 0);
            }
        }
    }
    for library in &libraries {
        tar.append_path_with_name(library, library.strip_prefix("/").unwrap())
            .expect("library");
    }
    let bytes = tar.into_inner().expect("image tar");
    let name = format!("kiln-isolation-test:{}", std::process::id());
    let mut import = docker
        .command()
        .args(["import", "-", &name])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("docker import");
    use std::io::Write as _;
    import
        .stdin
        .take()
        .unwrap()
        .write_all(&bytes)
        .expect("write image tar");
    assert!(import.wait().expect("docker import").success());
    name
}

/// Removes the test's image from the peer when dropped.
struct ImageGuard<'a>(&'a support::PeerDocker, String);

impl Drop for ImageGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.command().args(["rmi", "-f", &self.1]).output();
    }
}

/// `sh -c script` in a container of `image` on the peer (no network, default seccomp, no
/// added capabilities, not privileged), as `user`, with kiln, the context, the store (a volume:
/// the container's own overlayfs root refuses whiteouts) and an output directory bound in.
fn in_container(
    docker: &support::PeerDocker,
    image: &str,
    user: &str,
    ctx: &Path,
    store: &Path,
    script: &str,
) -> std::process::Output {
    let bind =
        |host: &Path, inside: &str, mode: &str| format!("{}:{inside}:{mode}", host.display());
    docker
        .command()
        .args(["run", "--rm", "--network", "none", "--user", user])
        .args(["-e", "HOME=/home/kiln", "-w", "/ctx"])
        .args([
            "-v",
            &bind(Path::new(env!("CARGO_BIN_EXE_kiln")), "/bin/kiln", "ro"),
        ])
        .args(["-v", &bind(ctx, "/ctx", "ro")])
        .args(["-v", &bind(store, "/store", "rw")])
        .args([image, "/bin/sh", "-c", script])
        .output()
        .expect("docker run")
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// issue 17's in-container case: uid 1000 in a container with docker's default seccomp profile
/// and no capabilities cannot make the sandbox: `kiln build` says why and what the pod needs;
/// `--isolation=chroot` (proot there) builds the image, `kiln run` runs it, and its layers are
/// the sandbox's. As root in such a container (docker's default capabilities: CAP_SYS_CHROOT,
/// no CAP_SYS_ADMIN) the message names the capability, and the mode uses chroot(2).
#[test]
fn builds_inside_an_unprivileged_container() {
    let (Some(()), Some(busybox), Some(proot), Some(_), Some(docker)) = (
        support::root(),
        support::busybox(),
        support::tool("proot"),
        support::tool("ldd"),
        support::peer_docker(),
    ) else {
        return;
    };
    let ctx = context(&busybox);
    let want = sandbox_reference(ctx.path());
    let image = container_image(&docker, &busybox, &proot);
    let _guard = ImageGuard(&docker, image.clone());

    // uid 1000: proot.
    let store = owned_dir(1000, 1000);
    let status = in_container(
        &docker,
        &image,
        "1000",
        ctx.path(),
        store.path(),
        "grep -E '^(Seccomp|CapEff):' /proc/self/status",
    );
    let (stdout, _) = text(&status);
    assert_eq!(
        stdout, "CapEff:\t0000000000000000\nSeccomp:\t2\n",
        "the container's limits"
    );
    let refused = in_container(
        &docker,
        &image,
        "1000",
        ctx.path(),
        store.path(),
        "kiln --root /store build -t x .",
    );
    let (_, stderr) = text(&refused);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains(SECCOMP_MESSAGE), "{stderr}");
    assert!(
        stderr.contains("securityContext.seccompProfile.type: Unconfined"),
        "{stderr}"
    );
    assert!(stderr.contains("--isolation=chroot"), "{stderr}");

    let built = in_container(
        &docker,
        &image,
        "1000",
        ctx.path(),
        store.path(),
        "kiln --root /store build -q --isolation=chroot -t x . && \
         kiln --root /store run --rm --isolation=chroot x cat /built && \
         kiln --root /store save x -o /store/x.tar && \
         { kiln --root /store run --rm -u 0 x true 2>/store/run.err; echo \"run exit $?\"; }",
    );
    let (stdout, stderr) = text(&built);
    assert!(built.status.success(), "{stdout}{stderr}");
    assert!(stdout.ends_with("built\nrun exit 125\n"), "{stdout}");
    // kiln run without the mode: the same message.
    let run_error = fs::read_to_string(store.path().join("run.err")).expect("run.err");
    assert!(run_error.contains(SECCOMP_MESSAGE), "{run_error}");
    assert_same_layers(
        &layer_entries(&store.path().join("x.tar")),
        &want,
        "uid 1000 in a container (proot)",
        PROOT_CAVEATS,
    );

    // root with docker's default capabilities: chroot(2), even without proot on PATH.
    let root_store = tempfile::tempdir().expect("temp dir");
    let refused = in_container(
        &docker,
        &image,
        "0",
        ctx.path(),
        root_store.path(),
        "kiln --root /store build -t x .",
    );
    let (_, stderr) = text(&refused);
    assert!(
        stderr.contains("kiln runs as root but without CAP_SYS_ADMIN"),
        "{stderr}"
    );
    let built = in_container(
        &docker,
        &image,
        "0",
        ctx.path(),
        root_store.path(),
        "export PATH=/nowhere; /bin/kiln --root /store build -q --isolation=chroot -t x . && \
         /bin/kiln --root /store run --rm --isolation=chroot x /bin/cat /tmp/who && \
         /bin/kiln --root /store save x -o /store/x.tar",
    );
    let (stdout, stderr) = text(&built);
    assert!(built.status.success(), "{stdout}{stderr}");
    assert!(stdout.ends_with("1000\n"), "{stdout}");
    assert_same_layers(
        &layer_entries(&root_store.path().join("x.tar")),
        &want,
        "root in a container (chroot(2))",
        &[],
    );
}
