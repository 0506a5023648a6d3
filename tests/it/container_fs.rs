//! A container's files through the binary: `kiln diff` (compared with the peer dockerd's `docker
//! diff` of the same changes when it runs), `kiln commit` then `kiln run` of the new image,
//! `kiln cp` both ways (files, directories, trailing `/`, tar streams) never leaving the
//! container's root through a symlink or `..`, and `kiln export` of a container.

use crate::run::{Images, images};
use crate::support::{self, kiln};
use kiln::store::Store;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The changes every diff test makes (the image has /bin/ls, /etc/passwd, /home).
const CHANGES: &str = "mkdir -p /a/b && echo x > /a/b/f && echo 'u:x:5:5::/:/bin/sh' >> /etc/passwd \
     && rm /bin/ls && chmod 700 /home";

/// Runs `sh -c SCRIPT` in a kept (stopped) container of `box` and returns its id.
fn stopped_container(images: &Images, script: &str) -> String {
    images.run(&["box", "sh", "-c", script]).run().success();
    let store = Store::open(images.root()).expect("store");
    let containers = store.containers().expect("containers");
    let newest = containers
        .iter()
        .max_by(|a, b| a.created.cmp(&b.created))
        .expect("a container");
    newest.id.clone()
}

fn kiln_in(images: &Images) -> support::Kiln {
    kiln().root(images.root())
}

/// The entries of a tar, path → contents (directories and links with empty contents).
fn tar_entries(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(bytes);
    let mut entries = BTreeMap::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read entry");
        entries.insert(path, data);
    }
    entries
}

fn passwd_of_the_image() -> &'static str {
    "root:x:0:0:root:/root:/bin/sh\nkiln:x:1000:1000:kiln:/home/kiln:/bin/sh\n"
}

#[test]
fn diff_lists_added_changed_and_deleted_entries_as_docker_does() {
    let Some(images) = images() else { return };
    let id = stopped_container(&images, CHANGES);
    let out = kiln_in(&images).args(["diff", &id]).run().success();
    let expected = "A /a\nA /a/b\nA /a/b/f\nC /bin\nD /bin/ls\nC /etc\nC /etc/passwd\nC /home\n";
    assert_eq!(out.stdout_str(), expected);
    // A unique prefix of the id names it too; an unknown one is docker's error.
    kiln_in(&images).args(["diff", &id[..12]]).run().success();
    let err = kiln_in(&images)
        .args(["diff", "nosuchcontainer"])
        .run()
        .failure()
        .stderr_str();
    assert!(
        err.to_lowercase()
            .contains("no such container: nosuchcontainer"),
        "{err}"
    );

    // The peer dockerd, given the same image and the same changes, lists the same lines.
    let Some(docker) = support::peer_docker() else {
        return;
    };
    let archive = images.root().join("box.tar");
    kiln_in(&images)
        .args(["save", "-o", archive.to_str().expect("utf-8"), "box"])
        .run()
        .success();
    let loaded = docker.run(&["load", "-i", archive.to_str().expect("utf-8")]);
    let image = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .or_else(|| {
            loaded
                .lines()
                .find_map(|l| l.strip_prefix("Loaded image ID: "))
        })
        .expect("docker load names the image")
        .trim()
        .to_string();
    let name = format!("kiln-diff-{}", std::process::id());
    docker.run(&[
        "run",
        "--name",
        &name,
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        CHANGES,
    ]);
    let peer = docker.run(&["diff", &name]);
    docker.run(&["rm", &name]);
    docker.run(&["rmi", &image]);
    let mut peer_lines: Vec<&str> = peer.lines().collect();
    peer_lines.sort_unstable();
    let mut ours: Vec<&str> = expected.lines().collect();
    ours.sort_unstable();
    assert_eq!(ours, peer_lines, "kiln's diff and docker's differ");
}

#[test]
fn diff_of_an_opaque_directory_lists_what_it_hides() {
    let Some(images) = images() else { return };
    // /home holds kiln/ in the image: removed and made again, the new /home is opaque.
    let id = stopped_container(&images, "rm -rf /home && mkdir /home && touch /home/new");
    let out = kiln_in(&images).args(["diff", &id]).run().success();
    assert_eq!(
        out.stdout_str(),
        "C /home\nD /home/kiln\nA /home/new\n",
        "{out:?}"
    );
}

#[test]
fn commit_makes_an_image_that_runs_with_the_change() {
    let Some(images) = images() else { return };
    let id = stopped_container(&images, "echo changed > /changed");
    let out = kiln_in(&images)
        .args([
            "commit",
            "-a",
            "Ann <ann@example.com>",
            "-m",
            "msg one",
            "-c",
            r#"CMD ["cat", "/changed"]"#,
            "-c",
            "ENV A=b",
            &id,
            "img2:1",
        ])
        .run()
        .success();
    let image_id = out.stdout_str();
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    // The committed CMD runs, and shows the change.
    let out = images.run(&["--rm", "img2:1"]).run().success();
    assert_eq!(out.stdout_str(), "changed\n");
    let out = images
        .run(&["--rm", "img2:1", "sh", "-c", "echo $A $FROM_IMAGE"])
        .run()
        .success();
    assert_eq!(out.stdout_str(), "b 1\n");
    let inspect = kiln_in(&images)
        .args(["inspect", "img2:1"])
        .run()
        .success()
        .stdout_json();
    let image = &inspect[0];
    assert_eq!(
        image["Config"]["Cmd"],
        serde_json::json!(["cat", "/changed"])
    );
    let env = image["Config"]["Env"].as_array().expect("Env").clone();
    assert!(env.contains(&serde_json::json!("A=b")), "{env:?}");
    assert!(env.contains(&serde_json::json!("FROM_IMAGE=1")), "{env:?}");
    // kiln's own additions to every process are not the container's config.
    assert!(
        !env.iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("HOSTNAME="))),
        "{env:?}"
    );
    assert_eq!(image["Author"], "Ann <ann@example.com>", "{image}");
    assert_eq!(image["Comment"], "msg one", "{image}");
    let history = kiln_in(&images)
        .args([
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}|{{.Comment}}",
            "img2:1",
        ])
        .run()
        .success()
        .stdout_str();
    assert!(
        history
            .lines()
            .next()
            .is_some_and(|l| l == "sh -c echo changed > /changed|msg one"),
        "{history}"
    );
    // The mount stubs kiln made in the container (the image has no /etc/hosts) are not part
    // of the committed layer: the new image still has no /etc/hosts of its own.
    let fs_tar = kiln_in(&images).args(["export", "img2:1"]).run().success();
    let entries = tar_entries(&fs_tar.stdout);
    assert!(entries.contains_key("changed"), "{:?}", entries.keys());
    assert!(!entries.contains_key("etc/hosts"), "{:?}", entries.keys());
    // A change docker refuses.
    let err = kiln_in(&images)
        .args(["commit", "-c", "RUN true", &id])
        .run()
        .failure()
        .stderr_str();
    assert!(err.contains("RUN is not a valid change command"), "{err}");
}

/// A container whose root has links out: `/evil -> /etc`, `/evil2 -> ../../../../etc`, and a
/// directory `/d` with a file.
fn container_with_links(images: &Images) -> String {
    stopped_container(
        images,
        "mkdir /d && echo in > /d/f && ln -s /etc /evil && ln -s ../../../../etc /evil2",
    )
}

#[test]
fn cp_out_of_a_container_stays_in_its_root() {
    let Some(images) = images() else { return };
    let id = container_with_links(&images);
    let host = tempfile::tempdir().expect("temp dir");
    let at = |name: &str| host.path().join(name).to_string_lossy().into_owned();
    let cp = |args: &[&str]| kiln_in(&images).arg("cp").args(args).run();
    // A file, to a new name.
    cp(&[&format!("{id}:/d/f"), &at("f.txt")]).success();
    assert_eq!(
        fs::read_to_string(host.path().join("f.txt")).unwrap(),
        "in\n"
    );
    // A directory, to a new name: its contents there.
    cp(&[&format!("{id}:/d"), &at("dcopy")]).success();
    assert_eq!(
        fs::read_to_string(host.path().join("dcopy/f")).unwrap(),
        "in\n"
    );
    // A directory into an existing one (trailing /): under its own name.
    fs::create_dir(host.path().join("existing")).unwrap();
    cp(&[&format!("{id}:/d"), &format!("{}/", at("existing"))]).success();
    assert_eq!(
        fs::read_to_string(host.path().join("existing/d/f")).unwrap(),
        "in\n"
    );
    // `/.`: the contents only.
    fs::create_dir(host.path().join("contents")).unwrap();
    cp(&[&format!("{id}:/d/."), &at("contents")]).success();
    assert_eq!(
        fs::read_to_string(host.path().join("contents/f")).unwrap(),
        "in\n"
    );
    // To stdout as a tar named by the source.
    let tar = cp(&[&format!("{id}:/d"), "-"]).success();
    let entries = tar_entries(&tar.stdout);
    assert_eq!(
        entries.get("d/f").map(Vec::as_slice),
        Some(b"in\n".as_slice())
    );
    // Through symlinks out of the root and `..`: the container's /etc/passwd, not the host's.
    for source in [
        "/evil/passwd",
        "/evil2/passwd",
        "/../../../../etc/passwd",
        "../etc/passwd",
    ] {
        let tar = cp(&[&format!("{id}:{source}"), "-"]).success();
        let entries = tar_entries(&tar.stdout);
        assert_eq!(
            entries
                .get("passwd")
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            Some(passwd_of_the_image().to_string()),
            "{source}"
        );
    }
    // A symlink named as the source is copied as a link (its target never read), unless -L.
    let tar = cp(&[&format!("{id}:/evil"), "-"]).success();
    let mut archive = tar::Archive::new(tar.stdout.as_slice());
    let entry = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.header().entry_type(), tar::EntryType::Symlink);
    assert_eq!(entry.link_name().unwrap().unwrap(), Path::new("/etc"));
    let tar = cp(&["-L", &format!("{id}:/evil2"), "-"]).success();
    assert!(tar_entries(&tar.stdout).contains_key("evil2/passwd"));
    // docker's errors.
    let err = cp(&[&format!("{id}:/nope"), &at("x")])
        .failure()
        .stderr_str();
    assert!(
        err.contains(&format!("No such container:path: {id}:/nope")),
        "{err}"
    );
    let err = cp(&[&format!("{id}:/d/f/"), &at("x")])
        .failure()
        .stderr_str();
    assert!(err.contains("not a directory"), "{err}");
    let err = cp(&[&format!("{id}:/d/f"), &format!("{}/", at("missing"))])
        .failure()
        .stderr_str();
    assert!(err.contains("no such directory"), "{err}");
    let err = cp(&[&format!("{id}:/d"), &at("f.txt")])
        .failure()
        .stderr_str();
    assert!(err.contains("cannot copy directory"), "{err}");
    let err = cp(&[&at("f.txt"), &at("y")]).failure().stderr_str();
    assert!(err.contains("must specify at least one container"), "{err}");
    // The stopped container's overlay was mounted only in a private namespace: nothing is
    // left mounted or staged.
    let staged: Vec<_> = fs::read_dir(images.root().join("tmp"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(staged.is_empty(), "{staged:?}");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(images.root().to_str().unwrap()),
        "{mounts}"
    );
}

/// The container's file at `path`, read back through `kiln cp`.
fn read_back(images: &Images, id: &str, path: &str) -> Option<Vec<u8>> {
    let out = kiln_in(images)
        .args(["cp", &format!("{id}:{path}"), "-"])
        .run();
    if out.status.code() != Some(0) {
        return None;
    }
    let name = Path::new(path).file_name()?.to_string_lossy().into_owned();
    tar_entries(&out.stdout).remove(&name)
}

#[test]
fn cp_into_a_container_lands_inside_its_root() {
    let Some(images) = images() else { return };
    let id = container_with_links(&images);
    let host = tempfile::tempdir().expect("temp dir");
    let probe = format!("kiln-cp-probe-{}", std::process::id());
    let file = host.path().join(&probe);
    fs::write(&file, "probe\n").unwrap();
    std::os::unix::fs::chown(&file, Some(1234), Some(1234)).unwrap();
    let file_arg = file.to_string_lossy().into_owned();
    let cp = |args: &[&str]| kiln_in(&images).arg("cp").args(args).run();
    let upper = images.root().join("containers").join(&id).join("upper");

    // Into a directory reached through links out of the root: the container's /etc.
    for dest in ["/evil/", "/evil2/", "/../../../etc/"] {
        cp(&[&file_arg, &format!("{id}:{dest}")]).success();
        assert!(
            !Path::new("/etc").join(&probe).exists(),
            "{dest}: the copy reached the host's /etc"
        );
        let landed = upper.join("etc").join(&probe);
        assert_eq!(fs::read_to_string(&landed).unwrap(), "probe\n", "{dest}");
        // docker's rule: root's unless -a.
        assert_eq!(fs::metadata(&landed).unwrap().uid(), 0);
        fs::remove_file(&landed).unwrap();
    }
    // -a keeps the owner; a new name for a file.
    cp(&["-a", &file_arg, &format!("{id}:/d/renamed")]).success();
    assert_eq!(fs::metadata(upper.join("d/renamed")).unwrap().uid(), 1234);
    assert_eq!(read_back(&images, &id, "/d/renamed").unwrap(), b"probe\n");
    // A directory into an existing one (trailing /), and its contents with `/.`.
    let dir = host.path().join("hd");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("x"), "x\n").unwrap();
    let dir_arg = dir.to_string_lossy().into_owned();
    cp(&[&dir_arg, &format!("{id}:/tmp/")]).success();
    assert_eq!(read_back(&images, &id, "/tmp/hd/x").unwrap(), b"x\n");
    cp(&[&format!("{dir_arg}/."), &format!("{id}:/d")]).success();
    assert_eq!(read_back(&images, &id, "/d/x").unwrap(), b"x\n");
    // A tar on stdin into a directory; its own `..` and absolute links stay inside.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "t/one", &b"one\n"[..])
        .unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    builder.append_link(&mut link, "up", "/").unwrap();
    let mut through = tar::Header::new_gnu();
    through.set_size(4);
    through.set_mode(0o644);
    builder
        .append_data(&mut through, format!("up/etc/{probe}"), &b"tar\n"[..])
        .unwrap();
    let tar = builder.into_inner().unwrap();
    kiln_in(&images)
        .args(["cp", "-", &format!("{id}:/evil")])
        .stdin(tar)
        .run()
        .success();
    assert!(!Path::new("/etc").join(&probe).exists());
    assert_eq!(
        fs::read_to_string(upper.join("etc/t/one")).unwrap(),
        "one\n"
    );
    // Into a destination whose parent does not exist: docker's error.
    let err = cp(&[&file_arg, &format!("{id}:/no/such/dir/")])
        .failure()
        .stderr_str();
    assert!(err.contains("no such directory"), "{err}");
    let err = cp(&[&dir_arg, &format!("{id}:/d/f")])
        .failure()
        .stderr_str();
    assert!(err.contains("cannot copy directory"), "{err}");
}

#[test]
fn diff_and_cp_of_a_running_container() {
    let Some(images) = images() else { return };
    let mut child = images
        .run(&["box", "sh", "-c", "echo live > /live; exec sleep 60"])
        .spawn();
    let store = Store::open(images.root()).expect("store");
    let running = || {
        store
            .containers()
            .ok()
            .and_then(|c| c.into_iter().find(|r| r.is_running()))
    };
    assert!(support::within(20, || running().is_some_and(|r| {
        images
            .root()
            .join("containers")
            .join(&r.id)
            .join("upper/live")
            .exists()
    })));
    let record = running().expect("a running container");
    let id = record.id.clone();
    let out = kiln_in(&images).args(["diff", &id]).run().success();
    assert!(out.stdout_str().lines().any(|l| l == "A /live"), "{out:?}");
    assert_eq!(read_back(&images, &id, "/live").unwrap(), b"live\n");
    let host = tempfile::tempdir().expect("temp dir");
    let file = host.path().join("in");
    fs::write(&file, "in\n").unwrap();
    kiln_in(&images)
        .args(["cp", file.to_str().unwrap(), &format!("{id}:/no-such-dir/")])
        .run()
        .failure();
    kiln_in(&images)
        .args(["cp", file.to_str().unwrap(), &format!("{id}:/tmp/")])
        .run()
        .success();
    assert_eq!(read_back(&images, &id, "/tmp/in").unwrap(), b"in\n");
    // The copies paused the container and let it go again: its process is not left stopped.
    let pid = record.pid.expect("pid");
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
    assert_ne!(state, Some('T'), "{stat}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn export_of_a_container_has_its_changes_and_no_whiteouts() {
    let Some(images) = images() else { return };
    let id = stopped_container(&images, CHANGES);
    let out_file: PathBuf = images.root().join("c.tar");
    kiln_in(&images)
        .args(["export", &id, "-o", out_file.to_str().unwrap()])
        .run()
        .success();
    let entries = tar_entries(&fs::read(&out_file).unwrap());
    assert_eq!(
        entries.get("a/b/f").map(Vec::as_slice),
        Some(b"x\n".as_slice())
    );
    assert!(String::from_utf8_lossy(&entries["etc/passwd"]).ends_with("u:x:5:5::/:/bin/sh\n"));
    assert!(!entries.contains_key("bin/ls"));
    assert!(entries.contains_key("bin/sh"));
    assert!(
        !entries.keys().any(|k| k.contains(".wh.")),
        "{:?}",
        entries.keys()
    );
    // An image is still exported as its root filesystem.
    let image = kiln_in(&images).args(["export", "box"]).run().success();
    let entries = tar_entries(&image.stdout);
    assert!(entries.contains_key("bin/ls"));
    assert!(!entries.contains_key("a/b/f"));
    // An image named like a prefix of the container's id is the image; the prefix alone
    // names the container.
    let prefix = &id[..8];
    let out = kiln_in(&images).args(["export", prefix]).run().success();
    assert!(tar_entries(&out.stdout).contains_key("a/b/f"));
    kiln_in(&images)
        .args(["tag", "box", prefix])
        .run()
        .success();
    let out = kiln_in(&images).args(["export", prefix]).run().success();
    assert!(!tar_entries(&out.stdout).contains_key("a/b/f"));
}

#[test]
fn a_chroot_container_is_read_once_it_ended_and_named_while_it_runs() {
    let Some(images) = images() else { return };
    images
        .run(&[
            "--isolation=chroot",
            "box",
            "sh",
            "-c",
            "echo x > /x && rm /bin/ls",
        ])
        .run()
        .success();
    let store = Store::open(images.root()).expect("store");
    let id = store.containers().expect("containers")[0].id.clone();
    let out = kiln_in(&images).args(["diff", &id]).run().success();
    assert_eq!(out.stdout_str(), "C /bin\nD /bin/ls\nA /x\n");

    let mut child = images
        .run(&["--isolation=chroot", "box", "sh", "-c", "exec sleep 60"])
        .spawn();
    let running = || {
        store
            .containers()
            .ok()
            .and_then(|c| c.into_iter().find(|r| r.is_running()))
    };
    assert!(support::within(20, || running().is_some()));
    let id = running().expect("running").id;
    let err = kiln_in(&images)
        .args(["diff", &id])
        .run()
        .failure()
        .stderr_str();
    assert!(err.contains("runs with --isolation=chroot"), "{err}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn commit_of_a_running_container_pauses_it_and_lets_it_go() {
    let Some(images) = images() else { return };
    let mut child = images
        .run(&["box", "sh", "-c", "echo live > /live; exec sleep 60"])
        .spawn();
    let store = Store::open(images.root()).expect("store");
    let running = || {
        store
            .containers()
            .ok()
            .and_then(|c| c.into_iter().find(|r| r.is_running()))
    };
    assert!(support::within(20, || running().is_some_and(|r| {
        images
            .root()
            .join("containers")
            .join(&r.id)
            .join("upper/live")
            .exists()
    })));
    let record = running().expect("running");
    kiln_in(&images)
        .args(["commit", &record.id, "live:1"])
        .run()
        .success();
    let out = images
        .run(&["--rm", "live:1", "cat", "/live"])
        .run()
        .success();
    assert_eq!(out.stdout_str(), "live\n");
    // The committed command is the container's.
    let inspect = kiln_in(&images)
        .args(["inspect", "live:1"])
        .run()
        .success()
        .stdout_json();
    assert_eq!(
        inspect[0]["Config"]["Cmd"],
        serde_json::json!(["sh", "-c", "echo live > /live; exec sleep 60"])
    );
    let pid = record.pid.expect("pid");
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
    assert_ne!(state, Some('T'), "{stat}");
    assert!(running().is_some(), "the container still runs");
    kiln_in(&images)
        .args(["commit", "--pause=false", &record.id])
        .run()
        .success();
    let _ = child.kill();
    let _ = child.wait();
}
