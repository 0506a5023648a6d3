//! Rootless kiln as an unprivileged user with a subordinate id range (`/etc/subuid`,
//! `/etc/subgid`, newuidmap): a build that creates a user, chowns files, copies with `--chown`
//! and switches `USER` gives the same file tree, owners included, as the same build as root;
//! the image runs as its user; a loaded image keeps its owners; the store is private under
//! `$XDG_DATA_HOME`. Without a range kiln warns once, naming what is missing. A cgroup limit
//! rootless works where the cgroup v2 subtree is delegated and says why where not.
//!
//! The tests create their users when missing (`useradd --system`), and give `kiln-rootless` the
//! range 200000-265535: CI runs as root on a throwaway machine.

use crate::support::{self, kiln};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The user with a range.
const RANGED: &str = "kiln-rootless";
/// The user without one.
const NO_RANGE: &str = "kiln-norange";
/// The range `RANGED` gets in /etc/subuid and /etc/subgid.
const RANGE: &str = "200000:65536";

/// A build that exercises owners: a user made by writing /etc/passwd (busybox-static has no
/// adduser), chown of files, directories and a symlink, setuid after chown, a hard link,
/// `COPY --chown` by number and by name, and steps run as `USER app`.
const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
RUN mkdir -p /etc /tmp /home/app && chmod 1777 /tmp \
 && printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n' > /etc/passwd \
 && printf 'root:x:0:\napp:x:1000:\nstaff:x:3000:app\nnogroup:x:65534:\n' > /etc/group \
 && chown app:app /home/app
COPY --chown=1000:1000 data.txt /home/app/copied-by-number
COPY --chown=app:staff data.txt /srv/copied-by-name
RUN mkdir /data && echo hi > /data/f && chown 1000:1000 /data/f && chown 2000:3000 /data \
 && ln /data/f /data/hardlink && ln /data/f /data/hardlink2 \
 && ln -s f /data/link && chown -h 65534:65534 /data/link \
 && cp /bin/busybox /data/suid && chown 1000:3000 /data/suid && chmod 4750 /data/suid
RUN rm /data/hardlink
USER app
RUN id > /home/app/id && echo mine > /home/app/m && mkdir /home/app/d && touch /tmp/by-app
"#;

/// One entry of a file tree: type, permission bits, owner and contents (a symlink's target).
type Tree = BTreeMap<String, (char, u32, u64, u64, Vec<u8>)>;

/// Serializes user creation and the edits of /etc/subuid and /etc/subgid.
static USERS: Mutex<()> = Mutex::new(());

/// An unprivileged user of this machine and a home of its own for one test.
struct User {
    uid: u32,
    gid: u32,
    /// The test's directory (root's, readable by all).
    dir: tempfile::TempDir,
}

impl User {
    /// The user `name`, created when missing, with `RANGE` in /etc/subuid and /etc/subgid when
    /// `ranged`; `None` after a skip notice without root or the tools.
    fn new(name: &str, ranged: bool) -> Option<User> {
        support::root()?;
        support::busybox()?;
        support::tool("useradd")?;
        support::tool("newuidmap")?;
        support::tool("newgidmap")?;
        let _guard = USERS.lock().unwrap_or_else(|e| e.into_inner());
        if id(name, "-u").is_none() {
            let status = Command::new("useradd")
                .args(["--system", "--create-home", "--shell", "/bin/sh", name])
                .status()
                .expect("useradd");
            assert!(status.success(), "useradd {name} failed");
        }
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = fs::read_to_string(file).unwrap_or_default();
            let has = text.lines().any(|l| l.starts_with(&format!("{name}:")));
            if ranged && !has {
                let mut text = text;
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&format!("{name}:{RANGE}\n"));
                fs::write(file, text).expect("write the subordinate ids");
            }
            assert!(
                ranged || !has,
                "{name} must have no range in {file} for this test"
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let user = User {
            uid: id(name, "-u")?,
            gid: id(name, "-g")?,
            dir,
        };
        fs::create_dir(user.home()).expect("home");
        user.chown(&user.home());
        Some(user)
    }

    /// The user's home for this test (HOME), where its store goes (`XDG_DATA_HOME`).
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn data_home(&self) -> PathBuf {
        self.home().join(".local/share")
    }

    fn chown(&self, path: &Path) {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success());
    }

    /// A build context owned by the user: the Dockerfile, busybox and `data.txt`.
    fn context(&self, dockerfile: &str) -> PathBuf {
        let ctx = self.dir.path().join("ctx");
        fs::create_dir_all(&ctx).expect("context");
        fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
        fs::write(ctx.join("data.txt"), "data\n").expect("data");
        fs::copy("/bin/busybox", ctx.join("busybox")).expect("busybox");
        self.chown(&ctx);
        ctx
    }

    /// `kiln ARGS` as the user, with its own HOME and XDG_DATA_HOME and no KILN_ROOT: the
    /// default rootless store.
    fn kiln(&self, args: &[&str]) -> Output {
        self.run(kiln().args(args).command())
    }

    /// `command` as the user, as [`User::kiln`] runs kiln.
    fn run(&self, mut command: Command) -> Output {
        command
            .uid(self.uid)
            .gid(self.gid)
            .env_remove("KILN_ROOT")
            .env("HOME", self.home())
            .env("XDG_DATA_HOME", self.data_home())
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null());
        command.output().expect("kiln")
    }
}

/// `id FLAG name` as a number.
fn id(name: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, name]).output().ok()?;
    out.status.success().then_some(())?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts `out` succeeded; returns its stdout.
fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The entries of a root filesystem tar, without times.
fn tree(tar_path: &Path) -> Tree {
    let file = fs::File::open(tar_path).expect("open export");
    let mut archive = tar::Archive::new(file);
    let mut tree = Tree::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let header = entry.header().clone();
        let path = entry
            .path()
            .expect("path")
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let kind = match header.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Regular => 'f',
            other => panic!("unexpected entry type {other:?} for {path}"),
        };
        let mut contents = Vec::new();
        match kind {
            'l' | 'h' => {
                let target = entry.link_name().expect("link").expect("a target");
                contents = target.to_string_lossy().into_owned().into_bytes();
            }
            _ => {
                entry.read_to_end(&mut contents).expect("read entry");
            }
        }
        let mode = header.mode().expect("mode") & 0o7777;
        let owner = (header.uid().expect("uid"), header.gid().expect("gid"));
        tree.insert(path, (kind, mode, owner.0, owner.1, contents));
    }
    tree
}

/// The entries of `tree` under these paths, for messages.
fn owners(tree: &Tree, paths: &[&str]) -> Vec<String> {
    paths
        .iter()
        .map(|path| match tree.get(*path) {
            Some((kind, mode, uid, gid, _)) => format!("{path} {kind} {mode:o} {uid}:{gid}"),
            None => format!("{path} absent"),
        })
        .collect()
}

#[test]
fn a_rootless_build_gives_the_owners_a_root_build_gives() {
    let Some(user) = User::new(RANGED, true) else {
        return;
    };
    let ctx = user.context(DOCKERFILE);
    let ctx = ctx.to_str().expect("utf-8 path");
    let built = user.kiln(&["build", "--network", "none", "-t", "owners", ctx]);
    ok("the rootless build", &built);
    assert!(
        !text(&built.stderr).contains("warning:"),
        "a user with a range gets no warning:\n{}",
        text(&built.stderr)
    );

    // The store: the user's, under XDG_DATA_HOME, private.
    let store = user.data_home().join("kiln");
    let meta = fs::metadata(&store).expect("the rootless store exists");
    assert_eq!(
        (meta.mode() & 0o777, meta.uid()),
        (0o700, user.uid),
        "{}",
        store.display()
    );

    // The image runs as its user, who owns its files and may write where they are its own.
    let script = "id -u; id -g; cat /home/app/m /home/app/id; stat -c '%u:%g %a' /data/f; \
                  touch /home/app/new && echo ok";
    let ran = user.kiln(&[
        "run",
        "--rm",
        "--network",
        "none",
        "owners",
        "sh",
        "-c",
        script,
    ]);
    let app = "uid=1000(app) gid=1000(app) groups=1000(app),3000(staff)";
    assert_eq!(
        ok("kiln run as the image's user", &ran),
        format!("1000\n1000\nmine\n{app}\n1000:1000 644\nok\n")
    );

    let home = user.home();
    let rootless_tar = home.join("rootless.tar");
    let out = user.kiln(&["export", "-o", rootless_tar.to_str().unwrap(), "owners"]);
    ok("the rootless export", &out);

    // `-o type=local` gives the user files of their own (not the range's host ids, which they
    // could neither change nor delete), as buildctl writes them.
    let out_dir = home.join("out");
    let dest = format!("type=local,dest={}", out_dir.display());
    ok(
        "-o type=local",
        &user.kiln(&["build", "--network", "none", "-o", &dest, ctx]),
    );
    for path in ["data", "data/suid", "home/app/m"] {
        let meta = fs::symlink_metadata(out_dir.join(path)).expect(path);
        assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid), "{path}");
    }
    assert_eq!(
        fs::read_to_string(out_dir.join("home/app/m")).expect("m"),
        "mine\n"
    );

    // The same build as root, in a store of its own.
    let root_store = user.dir.path().join("root-store");
    let built = kiln()
        .root(&root_store)
        .args(["build", "--network", "none", "-t", "owners", ctx])
        .run();
    assert!(
        built.status.success(),
        "the root build: {}",
        built.stderr_str()
    );
    let root_tar = user.dir.path().join("root.tar");
    let out = kiln()
        .root(&root_store)
        .args(["export", "-o", root_tar.to_str().unwrap(), "owners"])
        .run();
    assert!(
        out.status.success(),
        "the root export: {}",
        out.stderr_str()
    );

    let (rootless, root) = (tree(&rootless_tar), tree(&root_tar));
    let shown = [
        "data",
        "data/f",
        "data/hardlink",
        "data/hardlink2",
        "data/link",
        "data/suid",
        "home/app",
        "home/app/m",
        "home/app/d",
        "home/app/copied-by-number",
        "srv/copied-by-name",
        "tmp/by-app",
    ];
    assert_eq!(
        owners(&rootless, &shown),
        [
            "data d 755 2000:3000",
            "data/f f 644 1000:1000",
            "data/hardlink absent",
            "data/hardlink2 h 644 1000:1000",
            "data/link l 777 65534:65534",
            "data/suid f 4750 1000:3000",
            "home/app d 755 1000:1000",
            "home/app/m f 644 1000:1000",
            "home/app/d d 755 1000:1000",
            "home/app/copied-by-number f 644 1000:1000",
            "srv/copied-by-name f 644 1000:3000",
            "tmp/by-app f 644 1000:1000",
        ]
    );
    let differences: Vec<_> = rootless
        .keys()
        .chain(root.keys())
        .filter(|path| rootless.get(*path) != root.get(*path))
        .collect();
    assert!(
        differences.is_empty(),
        "the rootless and root trees differ at {differences:?}"
    );
    assert_eq!(rootless.len(), root.len());

    // A saved image loaded rootless keeps its owners, in its snapshots and its export.
    let saved = user.dir.path().join("saved.tar");
    let out = kiln()
        .root(&root_store)
        .args(["save", "-o", saved.to_str().unwrap(), "owners"])
        .run();
    assert!(out.status.success(), "save: {}", out.stderr_str());
    fs::set_permissions(&saved, fs::Permissions::from_mode(0o644)).expect("chmod");
    let loader = User::new(RANGED, true).expect("the same user");
    ok(
        "load",
        &loader.kiln(&["load", "-i", saved.to_str().unwrap()]),
    );
    let listed = loader.kiln(&[
        "run",
        "--rm",
        "--network",
        "none",
        "owners",
        "ls",
        "-lnd",
        "/data",
        "/data/suid",
    ]);
    let listed = ok("run of the loaded image", &listed);
    let columns: Vec<String> = listed
        .lines()
        .map(|l| {
            // Mode, owner and group (not the link count, which overlayfs reports as 1).
            let fields: Vec<&str> = l.split_whitespace().collect();
            [fields[0], fields[2], fields[3]].join(" ")
        })
        .collect();
    assert_eq!(
        columns,
        ["drwxr-xr-x 2000 3000", "-rwsr-x--- 1000 3000"],
        "{listed}"
    );
    let loaded_tar = loader.home().join("loaded.tar");
    ok(
        "export of the loaded image",
        &loader.kiln(&["export", "-o", loaded_tar.to_str().unwrap(), "owners"]),
    );
    assert!(
        tree(&loaded_tar) == root,
        "the loaded image's tree differs from root's"
    );

    // The user removes what belongs to the range's host ids through kiln (in its namespace).
    let snapshots = store.join("snapshots");
    let count = || fs::read_dir(&snapshots).map_or(0, |dir| dir.count());
    assert!(count() > 0, "no snapshots in {}", snapshots.display());
    ok("rmi", &user.kiln(&["rmi", "owners"]));
    ok("prune", &user.kiln(&["prune", "--all", "--force"]));
    assert_eq!(
        count(),
        0,
        "prune left snapshots in {}",
        snapshots.display()
    );
}

/// A root filesystem tar holding busybox at /bin/busybox, readable by everyone.
fn busybox_tar(dir: &Path) -> PathBuf {
    let path = dir.join("busybox.tar");
    let mut builder = tar::Builder::new(fs::File::create(&path).expect("create tar"));
    builder
        .append_path_with_name("/bin/busybox", "bin/busybox")
        .expect("append busybox");
    builder.finish().expect("finish tar");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}

#[test]
fn without_a_range_kiln_warns_once_naming_what_is_missing() {
    let Some(user) = User::new(NO_RANGE, false) else {
        return;
    };
    let tar = busybox_tar(user.dir.path());
    let imported = user.kiln(&["import", tar.to_str().unwrap(), "plain"]);
    ok("import without a range", &imported);
    let stderr = text(&imported.stderr);
    let warning = format!(
        "warning: no range for user {NO_RANGE} (uid {}) in /etc/subuid: containers map only uid 0",
        user.uid
    );
    assert_eq!(stderr.matches(&warning).count(), 1, "{stderr}");
    let fix = format!("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {NO_RANGE}");
    assert!(stderr.contains(&fix), "{stderr}");
    // Where owners do not matter, nothing is said.
    let images = user.kiln(&["images"]);
    let listed = ok("kiln images", &images);
    assert!(listed.contains("plain"), "{listed}");
    assert_eq!(text(&images.stderr), "");
    // The fallback runs as root only, once warned.
    let ran = user.kiln(&["run", "--rm", "plain", "/bin/busybox", "id", "-u"]);
    assert_eq!(ok("run without a range", &ran), "0\n");
    assert_eq!(text(&ran.stderr).matches(&warning).count(), 1);
    // Another user is refused with the reason and the fix.
    let refused = user.kiln(&[
        "run",
        "--rm",
        "--user",
        "1000",
        "plain",
        "/bin/busybox",
        "true",
    ]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("maps only root: cannot run as 1000:")
            && stderr.contains("ranges in /etc/subuid and /etc/subgid"),
        "{stderr}"
    );
    // A build works with root's files only: what COPY and RUN write is root's in the layers
    // (the caller's ids on disk), and a chown inside is refused.
    let dockerfile = "FROM plain\nCOPY data.txt /copied\n\
                      RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo x > /written; \
                      /bin/busybox chown 5 /written || echo refused\"]\n";
    let ctx = user.context(dockerfile);
    let built = user.kiln(&["build", "-t", "single", ctx.to_str().unwrap()]);
    ok("a build with one id", &built);
    assert!(
        text(&built.stderr).contains("refused"),
        "{}",
        text(&built.stderr)
    );
    let exported = user.home().join("single.tar");
    ok(
        "export",
        &user.kiln(&["export", "-o", exported.to_str().unwrap(), "single"]),
    );
    let tree = tree(&exported);
    assert_eq!(
        owners(&tree, &["copied", "written"]),
        ["copied f 644 0:0", "written f 644 0:0"]
    );
    // The store is private all the same.
    let meta = fs::metadata(user.data_home().join("kiln")).expect("store");
    assert_eq!(meta.mode() & 0o777, 0o700);
}

#[test]
fn no_new_privileges_falls_back_to_one_id_with_the_reason() {
    let Some(user) = User::new(RANGED, true) else {
        return;
    };
    let Some(setpriv) = support::tool("setpriv") else {
        return;
    };
    let tar = busybox_tar(user.dir.path());
    let kiln_command = kiln()
        .args(["import", tar.to_str().unwrap(), "plain"])
        .command();
    let mut command = Command::new(setpriv);
    command
        .arg("--no-new-privs")
        .arg(kiln_command.get_program())
        .args(kiln_command.get_args());
    let out = user.run(command);
    ok("import under no_new_privs", &out);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "warning: no_new_privs is set on this process, so newuidmap cannot gain the \
             privilege to map subordinate ids: containers map only uid 0"
        ),
        "{stderr}"
    );
}

#[test]
fn a_rootless_cgroup_limit_runs_where_delegated_and_says_why_not_elsewhere() {
    let Some(user) = User::new(RANGED, true) else {
        return;
    };
    let ctx = user.context("FROM scratch\nCOPY busybox /bin/busybox\n");
    ok(
        "the build",
        &user.kiln(&[
            "build",
            "--network",
            "none",
            "-t",
            "limited",
            ctx.to_str().unwrap(),
        ]),
    );
    let out = user.kiln(&[
        "run",
        "--network",
        "none",
        "--rm",
        "--memory",
        "64m",
        "limited",
        "/bin/busybox",
        "echo",
        "ran",
    ]);
    if out.status.success() {
        // A delegated cgroup v2 subtree (systemd user slice).
        assert_eq!(text(&out.stdout), "ran\n");
        return;
    }
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cgroup limits need a delegated cgroup v2 subtree")
            && stderr.contains("--memory")
            && stderr.contains("run kiln as root"),
        "{stderr}"
    );
}

#[test]
fn an_owner_outside_the_range_is_named_with_the_fix() {
    let Some(user) = User::new(RANGED, true) else {
        return;
    };
    let path = user.dir.path().join("high.tar");
    let mut builder = tar::Builder::new(fs::File::create(&path).expect("create tar"));
    builder
        .append_path_with_name("/bin/busybox", "bin/busybox")
        .expect("append busybox");
    // The highest mapped id (root + 65536 subordinate ids) and one past it.
    for (name, owner) in [("edge", 65_536), ("high", 100_000)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        header.set_uid(owner);
        header.set_gid(owner);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, std::io::empty())
            .expect("append");
    }
    builder.finish().expect("finish tar");
    drop(builder);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    let imported = user.kiln(&["import", path.to_str().unwrap(), "high"]);
    let out = if imported.status.success() {
        user.kiln(&[
            "run",
            "--rm",
            "--network",
            "none",
            "high",
            "/bin/busybox",
            "true",
        ])
    } else {
        imported
    };
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "layer entry \"high\" belongs to 100000:100000, outside the ids kiln's user \
             namespace maps (uids 0-65536, gids 0-65536"
        ) && stderr.contains("/etc/subuid"),
        "{stderr}"
    );
}

#[test]
fn the_default_network_reaches_the_test_host_rootless() {
    let Some(user) = User::new(RANGED, true) else {
        return;
    };
    if support::tool("slirp4netns").is_none() {
        return;
    }
    // slirp4netns opens /dev/net/tun as the user: Debian makes it 0666 (scripts/test sets it).
    let tun_open_to_all = fs::metadata("/dev/net/tun").is_ok_and(|m| m.mode() & 0o006 == 0o006);
    if support::require(
        "a /dev/net/tun every user may open (mode 0666)",
        tun_open_to_all.then_some(()),
    )
    .is_none()
    {
        return;
    }
    let Some(host) = crate::network::TestHost::start() else {
        return;
    };
    let tar = busybox_tar(user.dir.path());
    ok(
        "import",
        &user.kiln(&["import", tar.to_str().unwrap(), "netbox"]),
    );
    let ran = user.kiln(&[
        "run",
        "--rm",
        "netbox",
        "/bin/busybox",
        "sh",
        "-c",
        &format!(
            "/bin/busybox nc -w 3 {} {}; /bin/busybox cat /proc/net/dev",
            host.server, host.port
        ),
    ]);
    let stdout = ok("a rootless run on the default network", &ran);
    assert!(
        stdout.contains("hello-from-the-test-host") && stdout.contains("tap0"),
        "{stdout}"
    );
}

/// A detached container of a rootless user: its supervisor runs in the user namespace kiln made,
/// the container's root is the user (uid 0 mapped to it, 1.. to the range), and `logs`, `exec`
/// (joining that user namespace from the initial one), `stop` and `rm` work as the same user.
#[test]
fn a_rootless_detached_container_logs_execs_and_stops() {
    let Some(user) = User::new(RANGED, true) else {
        return;
    };
    let tar = busybox_tar(user.dir.path());
    ok(
        "import",
        &user.kiln(&["import", tar.to_str().unwrap(), "dbox"]),
    );
    let started = user.kiln(&[
        "run",
        "-d",
        "--name",
        "rl",
        "--network",
        "none",
        "dbox",
        "/bin/busybox",
        "sh",
        "-c",
        "echo hello-rootless; exec /bin/busybox sleep 300",
    ]);
    let id = ok("run -d", &started);
    assert_eq!(id.trim_end().len(), 64, "{id}");
    struct Remove<'a>(&'a User);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = self.0.kiln(&["rm", "-f", "rl"]);
        }
    }
    let _remove = Remove(&user);
    assert!(
        support::within(10, || text(&user.kiln(&["logs", "rl"]).stdout)
            .contains("hello-rootless")),
        "no log line"
    );
    let map = ok(
        "exec",
        &user.kiln(&["exec", "rl", "/bin/busybox", "cat", "/proc/self/uid_map"]),
    );
    let rows: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["0", user.uid.to_string().as_str(), "1"],
            vec!["1", "200000", "65536"]
        ],
        "{map}"
    );
    let ps = ok(
        "ps",
        &user.kiln(&["ps", "--format", "{{.Names}} {{.State}}"]),
    );
    assert_eq!(ps, "rl running\n");
    ok("stop", &user.kiln(&["stop", "-t", "1", "rl"]));
    assert!(support::processes_running(&["/bin/busybox", "sleep", "300"]).is_empty());
    ok("rm", &user.kiln(&["rm", "rl"]));
    assert_eq!(ok("ps -a", &user.kiln(&["ps", "-aq"])), "");
}
