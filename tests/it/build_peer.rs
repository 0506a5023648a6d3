//! `kiln build` against the peer: Docker 20.10's embedded BuildKit (v0.8) builds the same
//! Dockerfiles (testdata/build/NAME/, each with its context), and the two images must agree on
//! the container config, the history (`created_by`, `comment`, `empty_layer`), the number of
//! layers, and every path of the flattened file tree (type, mode with the special bits, owner,
//! content digest, link target; mtimes are not compared). kiln's `-o type=tar` export must be
//! the tree its layers make.
//!
//! Every Dockerfile is built by both; all differences are collected into one list, printed,
//! and the list must be empty. kiln's image also goes through `docker load` and `docker run`
//! where a case says so, and must print what the peer's image and `kiln run` print.
//!
//! Where current BuildKit changed v0.8's behaviour and kiln follows current BuildKit, that one
//! difference is normalised, each where it is applied with the BuildKit change that explains
//! it ([`Allowance`], [`normalise_peer_tree`], [`peer_history_line`], [`kiln_history_line`],
//! [`compare_history`]). Every normalisation applied is printed.
//!
//! Needs root, a static busybox (copied into each context at test time) and the peer dockerd
//! (`../shared/peers/start-peers.sh docker`); skips with a notice without them (fails under
//! `CI=true`).

use crate::support::{self, PeerDocker, kiln};
use kiln::oci::Digest;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One Dockerfile of testdata/build.
struct Case {
    /// The directory under testdata/build, and the image names: `kiln-peer-NAME` (the peer's
    /// build) and `kiln-peercmp-NAME` (kiln's).
    name: &'static str,
    build_args: &'static [&'static str],
    /// `--build-arg BASE=` the image of this earlier case, as each builder named it.
    base: Option<&'static str>,
    /// The Dockerfile the peer builds instead of `Dockerfile`, for syntax its v0.8 front end
    /// predates.
    peer_dockerfile: Option<&'static str>,
    /// Where kiln follows current BuildKit rather than v0.8, on purpose (see [`Allowance`]).
    allowed: &'static [Allowance],
    /// Run the image with `docker run` (the peer's image and kiln's, loaded) and `kiln run`
    /// and compare what they print.
    run: bool,
    /// A KNOWN kiln bug outside the builder this test checks, not fixed yet: kiln's build fails
    /// with this message where the peer's succeeds. Listed with the known differences, and a
    /// difference once kiln no longer fails (the case is then compared like the others).
    known_kiln_error: Option<&'static str>,
}

/// A difference between kiln and the peer that is BuildKit v0.8's, fixed in current BuildKit,
/// which kiln follows. Each is allowed only where a case names it, and only in the form
/// described; anything else at those paths is still a difference.
enum Allowance {
    /// `COPY --chmod` with setuid, setgid or sticky bits at this path. BuildKit v0.8 drops
    /// those bits: it hands the mode to Go's `os.Chmod`, which ignores raw 0o7000 bits
    /// (moby/buildkit#3920). Current BuildKit keeps them (tonistiigi/fsutil#168:
    /// `copyFileInfo` maps them to Go's mode bits), and so does kiln: kiln may have the peer's
    /// mode plus special bits.
    ChmodSpecialBits(&'static str),
    /// `ADD --chown=UID:GID` of a local archive unpacked below `dir`. BuildKit v0.8 keeps the
    /// archive's owners (moby/buildkit#1547); current BuildKit chowns the unpacked entries
    /// (moby/buildkit#5987, v0.23.0: `ChownOpts` passed to the untar in
    /// solver/llbsolver/file/unpack.go), and so does kiln: below `dir`, kiln may have
    /// `uid:gid` where the peer has the archive's owner.
    ArchiveChown {
        dir: &'static str,
        uid: u64,
        gid: u64,
    },
    /// A file a RUN step wrote with `id`. BuildKit v0.8 gives the process only the groups
    /// /etc/group lists the user in (none for `uid:gid`); current BuildKit adds the primary
    /// group (`ensureAdditionalGids` in executor/oci/user.go, moby/buildkit a0ef27c, v0.12.0,
    /// containerd's fix for CVE-2023-25173), and so does kiln: at `path`, kiln's file may hold
    /// `kiln` where the peer's holds `peer`.
    RunGroups {
        path: &'static str,
        peer: &'static str,
        kiln: &'static str,
    },
}

const CASES: &[Case] = &[
    Case {
        name: "config",
        build_args: &[],
        base: None,
        peer_dockerfile: None,
        allowed: &[],
        run: true,
        known_kiln_error: None,
    },
    Case {
        name: "entrypoint",
        build_args: &[],
        base: None,
        peer_dockerfile: None,
        allowed: &[],
        run: true,
        known_kiln_error: None,
    },
    Case {
        name: "run",
        build_args: &[],
        base: None,
        peer_dockerfile: None,
        allowed: &[],
        run: false,
        known_kiln_error: None,
    },
    Case {
        name: "heredoc",
        build_args: &[],
        base: None,
        peer_dockerfile: Some("peer.Dockerfile"),
        allowed: &[],
        run: true,
        known_kiln_error: None,
    },
    Case {
        name: "args",
        build_args: &["FLAVOUR=custom", "RELEASE=7"],
        base: None,
        peer_dockerfile: None,
        allowed: &[],
        run: true,
        known_kiln_error: None,
    },
    Case {
        name: "user",
        build_args: &[],
        base: None,
        peer_dockerfile: None,
        allowed: &[
            Allowance::RunGroups {
                path: "/home/app/work/id.txt",
                peer: "uid=1000(app) gid=1000(app) groups=2500(staff)\n",
                kiln: "uid=1000(app) gid=1000(app) groups=1000(app),2500(staff)\n",
            },
            Allowance::RunGroups {
                path: "/var/svc/id.txt",
                peer: "uid=2000(svc) gid=2500(staff)\n",
                kiln: "uid=2000(svc) gid=2500(staff) groups=2500(staff)\n",
            },
            Allowance::RunGroups {
                path: "/shared/unknown-uid.txt",
                peer: "uid=1234 gid=0(root)\n",
                kiln: "uid=1234 gid=0(root) groups=0(root)\n",
            },
        ],
        run: true,
        known_kiln_error: None,
    },
    Case {
        name: "copy",
        build_args: &[],
        base: None,
        peer_dockerfile: None,
        allowed: &[Allowance::ChmodSpecialBits("/files/suid")],
        run: false,
        known_kiln_error: None,
    },
    // kiln's planner (src/frontend/context/sources.rs `select_source`) rejects a context wildcard that
    // matches nothing; BuildKit copies nothing for it (dockerfile2llb dispatchCopy:
    // `AllowEmptyWildcard: true`), v0.8 and current alike.
    Case {
        name: "copy-empty-wildcard",
        build_args: &[],
        base: None,
        peer_dockerfile: None,
        allowed: &[],
        run: false,
        known_kiln_error: None,
    },
    Case {
        name: "copy-from",
        build_args: &[],
        base: None,
        peer_dockerfile: None,
        allowed: &[],
        run: true,
        known_kiln_error: None,
    },
    Case {
        name: "add",
        build_args: &[],
        base: None,
        peer_dockerfile: None,
        allowed: &[Allowance::ArchiveChown {
            dir: "/chowned",
            uid: 77,
            gid: 88,
        }],
        run: false,
        known_kiln_error: None,
    },
    Case {
        name: "volume-onbuild",
        build_args: &[],
        base: None,
        peer_dockerfile: None,
        allowed: &[],
        run: true,
        known_kiln_error: None,
    },
    Case {
        name: "onbuild-child",
        build_args: &[],
        base: Some("volume-onbuild"),
        peer_dockerfile: None,
        allowed: &[],
        run: false,
        known_kiln_error: None,
    },
];

/// The container config fields compared (docker's spelling).
const CONFIG_FIELDS: [&str; 12] = [
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Labels",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

#[test]
fn kiln_builds_what_the_peer_buildkit_builds() {
    let (Some(()), Some(busybox), Some(docker)) =
        (support::root(), support::busybox(), support::peer_docker())
    else {
        return;
    };
    let root = tempfile::tempdir().expect("temp dir");
    let mut differences = Vec::new();
    let mut known = Vec::new();
    let (mut compared, mut known_failures) = (0, 0);
    for case in CASES {
        let work = tempfile::tempdir().expect("temp dir");
        let context = work.path().join("context");
        prepare_context(case, &busybox, &context);
        let peer_tar = work.path().join("peer.tar");
        let kiln_tar = work.path().join("kiln.tar");
        let kiln_export = work.path().join("kiln-export.tar");
        let mut note = |what: String| differences.push(format!("{}: {what}", case.name));
        if let Err(err) = peer_build(&docker, case, &context, &peer_tar) {
            note(err);
            continue;
        }
        match (
            kiln_build(root.path(), case, &context, &kiln_tar, &kiln_export),
            case.known_kiln_error,
        ) {
            (Err(err), Some(expected)) if err.contains(expected) => {
                known.push(format!(
                    "{}: KNOWN kiln bug, not fixed here: the build fails with {expected:?}",
                    case.name
                ));
                known_failures += 1;
                continue;
            }
            (Err(err), _) => {
                note(err);
                continue;
            }
            (Ok(()), Some(expected)) => note(format!(
                "kiln no longer fails with {expected:?}: set known_kiln_error to None"
            )),
            (Ok(()), None) => {}
        }
        let (peer, kiln) = match (read_image(&peer_tar), read_image(&kiln_tar)) {
            (Ok(peer), Ok(kiln)) => (peer, kiln),
            (peer, kiln) => {
                for err in [peer.err(), kiln.err()].into_iter().flatten() {
                    note(err);
                }
                continue;
            }
        };
        compared += 1;
        let mut applied = Vec::new();
        for difference in compare_configs(&peer.config, &kiln.config) {
            note(difference);
        }
        for difference in compare_history(case, &peer, &kiln, &mut applied) {
            note(difference);
        }
        let peer_tree = normalise_peer_tree(peer.tree, &kiln.tree, &mut applied);
        let kiln_tree = apply_allowances(case, &peer_tree, kiln.tree, &mut applied);
        eprintln!(
            "{}: {} paths compared, {} config fields",
            case.name,
            peer_tree.len(),
            CONFIG_FIELDS.len() + 1
        );
        known.extend(applied.into_iter().map(|a| format!("{}: {a}", case.name)));
        for difference in compare_trees("peer", &peer_tree, "kiln", &kiln_tree) {
            note(difference);
        }
        // kiln's flattened export must be the tree its layers make.
        match fs::read(&kiln_export)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                let mut tree = Tree::new();
                apply_layer(&mut tree, &b)?;
                Ok(tree)
            }) {
            Ok(exported) => {
                let layered = &kiln.tree_unnormalised;
                for difference in compare_trees("kiln layers", layered, "kiln export", &exported) {
                    note(difference);
                }
            }
            Err(err) => note(format!("cannot read kiln's export: {err}")),
        }
        if case.run {
            for difference in compare_runs(&docker, root.path(), case, &kiln_tar) {
                note(difference);
            }
        }
    }
    if !known.is_empty() {
        eprintln!(
            "{} known differences, normalised (each one documented where it is applied):\n  {}",
            known.len(),
            known.join("\n  ")
        );
    }
    if !differences.is_empty() {
        eprintln!(
            "{} differences between kiln and the peer BuildKit:\n  {}",
            differences.len(),
            differences.join("\n  ")
        );
    }
    assert!(differences.is_empty(), "{differences:#?}");
    assert_eq!(
        compared + known_failures,
        CASES.len(),
        "every Dockerfile was compared or failed as known"
    );
    assert!(compared >= 10, "at least ten Dockerfiles are compared");
}

/// The case's context in `context`: testdata/build/NAME copied (symlinks as symlinks), the
/// busybox binary, and for `add` the archives it adds.
fn prepare_context(case: &Case, busybox: &Path, context: &Path) {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/build")
        .join(case.name);
    copy_tree(&source, context);
    fs::copy(busybox, context.join("busybox")).expect("copy busybox");
    if case.name == "add" {
        let tree = tree_archive();
        fs::write(context.join("tree.tar"), &tree).expect("write tree.tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tree).expect("gzip");
        fs::write(context.join("tree.tar.gz"), gz.finish().expect("gzip")).expect("write");
        fs::write(context.join("nested.tar"), nested_archive(&tree)).expect("write nested.tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"compressed, not an archive\n").expect("gzip");
        fs::write(context.join("single.gz"), gz.finish().expect("gzip")).expect("write");
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create directory");
    let mode = fs::metadata(from).expect("stat").permissions();
    fs::set_permissions(to, mode).expect("chmod");
    for entry in fs::read_dir(from).expect("read testdata") {
        let entry = entry.expect("entry");
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let target = fs::read_link(&source).expect("readlink");
            std::os::unix::fs::symlink(target, &dest).expect("symlink");
        } else if kind.is_dir() {
            copy_tree(&source, &dest);
        } else {
            fs::copy(&source, &dest).expect("copy file");
        }
    }
}

/// The archive `add` unpacks: owners, special modes, a symlink, a hard link, a fifo, an
/// empty directory and a `./`-prefixed name.
fn tree_archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, owner: (u64, u64), data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(owner.0);
        header.set_gid(owner.1);
        header.set_mtime(1_600_000_000);
        header.set_size(if kind == tar::EntryType::Regular {
            data.len() as u64
        } else {
            0
        });
        if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
            header
                .set_link_name(std::str::from_utf8(data).expect("utf-8 target"))
                .expect("link name");
            builder
                .append_data(&mut header, path, std::io::empty())
                .expect("append");
        } else {
            builder
                .append_data(&mut header, path, data)
                .expect("append");
        }
    };
    use tar::EntryType::{Directory, Fifo, Link, Regular, Symlink};
    add("tree/", Directory, 0o755, (0, 0), b"");
    add("tree/bin/", Directory, 0o750, (1001, 1002), b"");
    add("tree/bin/tool", Regular, 0o4755, (0, 0), b"tool\n");
    add("tree/data.txt", Regular, 0o640, (1001, 1002), b"data\n");
    add("tree/link", Symlink, 0o777, (0, 0), b"data.txt");
    add("tree/hard", Link, 0o640, (1001, 1002), b"tree/data.txt");
    add("tree/fifo", Fifo, 0o600, (0, 0), b"");
    add("tree/empty/", Directory, 0o1777, (0, 0), b"");
    add("./dot-prefixed.txt", Regular, 0o644, (5, 5), b"dot\n");
    builder.into_inner().expect("finish tar")
}

/// An archive holding another one: ADD unpacks only the outer.
fn nested_archive(inner: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_mtime(1_600_000_000);
    header.set_size(inner.len() as u64);
    builder
        .append_data(&mut header, "inner.tar", inner)
        .expect("append");
    builder.into_inner().expect("finish tar")
}

/// The peer's `docker build` then `docker save`.
fn peer_build(docker: &PeerDocker, case: &Case, context: &Path, save: &Path) -> Result<(), String> {
    let tag = format!("kiln-peer-{}", case.name);
    let mut command = docker.command();
    command
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "--network", "host", "-t", &tag]);
    if let Some(file) = case.peer_dockerfile {
        command.arg("-f").arg(context.join(file));
    }
    for arg in build_args(case, "kiln-peer-") {
        command.args(["--build-arg", &arg]);
    }
    command.arg(context);
    run(&mut command, "the peer's docker build")?;
    run(
        docker.command().args(["save", "-o"]).arg(save).arg(&tag),
        "docker save",
    )?;
    Ok(())
}

/// `kiln build` with a docker archive and a flattened tar as outputs.
fn kiln_build(
    root: &Path,
    case: &Case,
    context: &Path,
    save: &Path,
    export: &Path,
) -> Result<(), String> {
    let mut command = kiln().root(root).args([
        "build",
        "--progress",
        "plain",
        "-t",
        &format!("kiln-peercmp-{}", case.name),
        "-o",
        &format!("type=docker,dest={}", save.display()),
        "-o",
        &format!("type=tar,dest={}", export.display()),
    ]);
    for arg in build_args(case, "kiln-peercmp-") {
        command = command.args(["--build-arg", &arg]);
    }
    checked(command.arg(context).run().into(), "kiln build").map(drop)
}

/// The case's `--build-arg`s, `BASE` naming the base case's image with `prefix`.
fn build_args(case: &Case, prefix: &str) -> Vec<String> {
    let mut args: Vec<String> = case.build_args.iter().map(|a| a.to_string()).collect();
    if let Some(base) = case.base {
        args.push(format!("BASE={prefix}{base}"));
    }
    args
}

/// Runs `command`; its stdout, or an error naming `what` with everything it printed.
fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    checked(out, what)
}

/// `out`'s stdout if it succeeded, or an error naming `what` with everything it printed.
fn checked(out: std::process::Output, what: &str) -> Result<String, String> {
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a flattened file-tree path is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    /// A regular file (or a hard link, as the file it links to) and its content digest.
    File(String),
    Symlink(String),
    Fifo,
    Device(String),
    /// A directory no layer has an entry for: only its children are there.
    ImplicitDir,
}

/// One path of a flattened tree.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: Kind,
    /// The permission and special bits (0o7777).
    mode: u32,
    uid: u64,
    gid: u64,
}

/// Absolute path (`/a/b`) → node; the root itself is left out.
type Tree = BTreeMap<String, Node>;

/// An image read from a docker-format archive.
struct Image {
    config: Value,
    tree: Tree,
    /// The same tree; `tree` may be normalised later, this one stays as the layers made it.
    tree_unnormalised: Tree,
    /// The paths each layer has entries for, base first.
    layers: Vec<Vec<String>>,
}

/// Reads a `docker save` archive: the first image's config and its layers flattened.
fn read_image(path: &Path) -> Result<Image, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let files = archive_files(&bytes)?;
    let manifest: Value = serde_json::from_slice(
        files
            .get("manifest.json")
            .ok_or("the archive has no manifest.json")?,
    )
    .map_err(|e| format!("bad manifest.json: {e}"))?;
    let entry = manifest.get(0).ok_or("manifest.json lists no image")?;
    let config_name = entry
        .get("Config")
        .and_then(Value::as_str)
        .ok_or("manifest.json has no Config")?;
    let config: Value = serde_json::from_slice(
        files
            .get(config_name)
            .ok_or_else(|| format!("the archive has no {config_name}"))?,
    )
    .map_err(|e| format!("bad {config_name}: {e}"))?;
    let mut tree = Tree::new();
    let mut layers = Vec::new();
    for layer in entry
        .get("Layers")
        .and_then(Value::as_array)
        .ok_or("manifest.json has no Layers")?
    {
        let name = layer.as_str().ok_or("a layer name is not a string")?;
        let data = files
            .get(name)
            .ok_or_else(|| format!("the archive has no layer {name}"))?;
        let paths =
            apply_layer(&mut tree, &decompress(data)?).map_err(|e| format!("layer {name}: {e}"))?;
        layers.push(paths);
    }
    Ok(Image {
        config,
        tree_unnormalised: tree.clone(),
        tree,
        layers,
    })
}

/// The regular files of an archive by name, symlinks among them resolved (kiln's docker
/// archives link `ID/layer.tar` to `blobs/sha256/...`).
fn archive_files(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files = BTreeMap::new();
    let mut links = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let name = clean(&entry.path().map_err(|e| e.to_string())?.to_string_lossy());
        match entry.header().entry_type() {
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| e.to_string())?
                    .ok_or("a symlink without a target")?;
                let parent = name.rsplit_once('/').map_or("", |(dir, _)| dir);
                let target = clean(&format!("{parent}/{}", target.to_string_lossy()));
                links.insert(name, target);
            }
            kind if kind.is_file() => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
                files.insert(name, data);
            }
            _ => {}
        }
    }
    for (name, target) in links {
        if let Some(data) = files.get(&target).cloned() {
            files.insert(name, data);
        }
    }
    Ok(files)
}

/// `a/./b/../c/` as `a/c` (no leading or trailing slash).
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

fn decompress(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if data.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(|e| format!("gunzip: {e}"))?;
        Ok(out)
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::decode_all(data).map_err(|e| format!("zstd: {e}"))
    } else {
        Ok(data.to_vec())
    }
}

/// One entry of a layer, read.
struct LayerEntry {
    path: String,
    node: Option<Node>,
    /// A hard link's target (absolute).
    hardlink: Option<String>,
}

/// Applies a layer tar to `tree` as the OCI image spec says: its whiteouts (`.wh.NAME`, and
/// `.wh..wh..opq` for a directory's lower contents) delete from the layers below, then its
/// entries are added, each replacing what was at its path. Returns the paths the layer has
/// entries for (whiteouts included, the root not).
fn apply_layer(tree: &mut Tree, layer: &[u8]) -> Result<Vec<String>, String> {
    let mut entries = Vec::new();
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = format!(
            "/{}",
            clean(&entry.path().map_err(|e| e.to_string())?.to_string_lossy())
        );
        let header = entry.header().clone();
        let link = entry
            .link_name()
            .map_err(|e| e.to_string())?
            .map(|l| l.to_string_lossy().into_owned());
        let mode = header.mode().map_err(|e| format!("{path}: {e}"))? & 0o7777;
        let uid = header.uid().map_err(|e| format!("{path}: {e}"))?;
        let gid = header.gid().map_err(|e| format!("{path}: {e}"))?;
        let mut hardlink = None;
        let kind = match header.entry_type() {
            tar::EntryType::Directory => Some(Kind::Dir),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
                Some(Kind::File(Digest::of(&data).to_string()))
            }
            tar::EntryType::Symlink => Some(Kind::Symlink(link.unwrap_or_default())),
            tar::EntryType::Link => {
                hardlink = Some(format!("/{}", clean(&link.unwrap_or_default())));
                None
            }
            tar::EntryType::Fifo => Some(Kind::Fifo),
            tar::EntryType::Char | tar::EntryType::Block => Some(Kind::Device(format!(
                "{:?} {:?}:{:?}",
                header.entry_type(),
                header.device_major().ok().flatten(),
                header.device_minor().ok().flatten()
            ))),
            other => return Err(format!("{path}: unexpected entry type {other:?}")),
        };
        entries.push(LayerEntry {
            path,
            node: kind.map(|kind| Node {
                kind,
                mode,
                uid,
                gid,
            }),
            hardlink,
        });
    }
    for entry in &entries {
        let (dir, name) = entry.path.rsplit_once('/').unwrap_or(("", &entry.path));
        if name == ".wh..wh..opq" {
            remove_below(tree, dir);
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            let hidden = format!("{dir}/{hidden}");
            tree.remove(&hidden);
            remove_below(tree, &hidden);
        }
    }
    let paths = entries
        .iter()
        .map(|e| e.path.clone())
        .filter(|p| p != "/")
        .collect();
    for entry in entries {
        let name = entry.path.rsplit('/').next().unwrap_or_default();
        if name.starts_with(".wh.") || entry.path == "/" {
            continue;
        }
        let node = match (entry.node, entry.hardlink) {
            (Some(node), _) => node,
            (None, Some(target)) => tree
                .get(&target)
                .cloned()
                .ok_or_else(|| format!("{}: hard link to missing {target}", entry.path))?,
            (None, None) => continue,
        };
        if node.kind != Kind::Dir {
            remove_below(tree, &entry.path);
        }
        add_parents(tree, &entry.path);
        tree.insert(entry.path, node);
    }
    Ok(paths)
}

/// Removes everything below directory `dir` (not `dir` itself).
fn remove_below(tree: &mut Tree, dir: &str) {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    tree.retain(|path, _| !path.starts_with(&prefix));
}

/// Marks the missing parents of `path` as implicit directories.
fn add_parents(tree: &mut Tree, path: &str) {
    let mut parent = path;
    while let Some((dir, _)) = parent.rsplit_once('/') {
        if dir.is_empty() {
            break;
        }
        tree.entry(dir.to_string()).or_insert(Node {
            kind: Kind::ImplicitDir,
            mode: 0,
            uid: 0,
            gid: 0,
        });
        parent = dir;
    }
}

/// The peer's tree with the one difference kiln makes on purpose: BuildKit v0.8's runc
/// executor creates `/etc` to mount `/etc/hosts` and `/etc/resolv.conf` on, and leaves it in the
/// RUN's layer when the rootfs had none. Current BuildKit removes such mount stubs after the
/// step (executor/stubs.go, `MountStubsCleaner`), and so does kiln: an empty `/etc` the peer has
/// and kiln does not is dropped.
fn normalise_peer_tree(mut peer: Tree, kiln: &Tree, applied: &mut Vec<String>) -> Tree {
    let empty_etc = peer.get("/etc").is_some_and(|n| n.kind == Kind::Dir)
        && !peer.keys().any(|p| p.starts_with("/etc/"));
    if empty_etc && !kiln.contains_key("/etc") {
        peer.remove("/etc");
        applied.push("the peer's empty /etc mount stub left out".to_string());
    }
    peer
}

/// kiln's tree with the case's [`Allowance`]s undone: where a node differs from the peer's
/// only as an allowance says, it takes the peer's value.
fn apply_allowances(case: &Case, peer: &Tree, mut kiln: Tree, applied: &mut Vec<String>) -> Tree {
    for allowance in case.allowed {
        match allowance {
            Allowance::ChmodSpecialBits(path) => {
                if let (Some(theirs), Some(ours)) = (peer.get(*path), kiln.get_mut(*path))
                    && ours.mode & 0o7000 != 0
                    && ours.mode & !0o7000 == theirs.mode
                {
                    applied.push(format!(
                        "{path}: kiln's --chmod special bits {:o} allowed",
                        ours.mode & 0o7000
                    ));
                    ours.mode = theirs.mode;
                }
            }
            Allowance::ArchiveChown { dir, uid, gid } => {
                let below = format!("{dir}/");
                for (path, ours) in kiln.iter_mut().filter(|(p, _)| p.starts_with(&below)) {
                    if let Some(theirs) = peer.get(path)
                        && (ours.uid, ours.gid) == (*uid, *gid)
                        && ours.kind == theirs.kind
                        && ours.mode == theirs.mode
                    {
                        applied.push(format!(
                            "{path}: kiln's ADD --chown {uid}:{gid} of an archive entry allowed \
                             (the peer keeps {}:{})",
                            theirs.uid, theirs.gid
                        ));
                        (ours.uid, ours.gid) = (theirs.uid, theirs.gid);
                    }
                }
            }
            Allowance::RunGroups {
                path,
                peer: peer_text,
                kiln: kiln_text,
            } => {
                let file = |text: &str| Kind::File(Digest::of(text.as_bytes()).to_string());
                if let (Some(theirs), Some(ours)) = (peer.get(*path), kiln.get_mut(*path))
                    && theirs.kind == file(peer_text)
                    && ours.kind == file(kiln_text)
                {
                    applied.push(format!(
                        "{path}: kiln's RUN id with the primary group allowed ({:?}, the peer \
                         {:?})",
                        kiln_text.trim_end(),
                        peer_text.trim_end()
                    ));
                    ours.kind = theirs.kind.clone();
                }
            }
        }
    }
    kiln
}

/// The config fields (and MAINTAINER's `author`) that differ. Go writes a nil slice or map
/// as `null` where kiln leaves the field out; both mean unset.
fn compare_configs(peer: &Value, kiln: &Value) -> Vec<String> {
    let field = |document: &Value, pointer: &str| {
        document.pointer(pointer).filter(|v| !v.is_null()).cloned()
    };
    let mut differences = Vec::new();
    let pointers = CONFIG_FIELDS
        .iter()
        .map(|f| format!("/config/{f}"))
        .chain(["/author".to_string()]);
    for pointer in pointers {
        let (theirs, ours) = (field(peer, &pointer), field(kiln, &pointer));
        if theirs != ours {
            differences.push(format!(
                "config {pointer}: peer {}, kiln {}",
                shown(&theirs),
                shown(&ours)
            ));
        }
    }
    differences
}

/// One history entry: `created_by`, `comment`, `empty_layer`.
type HistoryLine = (String, String, bool);

/// The image history, entry by entry (`created_by`, `comment`, `empty_layer`; not the times),
/// and the number of layers, after the normalisations below (each one recorded in `applied`).
/// A case whose peer builds another Dockerfile compares all but `created_by`.
fn compare_history(
    case: &Case,
    peer: &Image,
    kiln: &Image,
    applied: &mut Vec<String>,
) -> Vec<String> {
    let (mut theirs, mut ours) = (history(&peer.config), history(&kiln.config));
    // Which of the peer's layers each non-empty entry made, in order.
    let mut layers = peer.layers.iter();
    let mut peer_layers = peer.layers.len();
    for (index, entry) in theirs.iter_mut().enumerate() {
        if entry.2 {
            continue;
        }
        let Some(paths) = layers.next() else {
            break;
        };
        let kiln_empty = ours.get(index).is_some_and(|e| e.2);
        // moby's image exporter in Docker 20.10 keeps an op's empty diff as a layer (the empty
        // tar, sha256:5f70bf18...; moby/buildkit#1993: "Moby image exporter does not remove
        // empty layers"). BuildKit's own exporter drops it and marks the entry empty
        // (exporter/containerimage/writer.go, normalizeLayersAndHistory), as kiln does.
        let moby_empty_layer = paths.is_empty();
        // The /etc mount stub (see normalise_peer_tree) is a RUN's whole diff when the RUN
        // changes nothing else: kiln's diff is then empty.
        let stub_only = *paths == ["/etc"] && kiln_empty;
        if moby_empty_layer || stub_only {
            applied.push(format!(
                "history[{index}] {:?}: the peer's {} layer counted as empty",
                entry.0,
                if stub_only { "/etc stub" } else { "empty" }
            ));
            entry.2 = true;
            peer_layers -= 1;
        }
    }
    for (index, (line, ..)) in theirs.iter_mut().enumerate() {
        if let Some(normalised) = peer_history_line(line).filter(|n| n != line) {
            applied.push(format!(
                "history[{index}]: the peer's {line:?} read as {normalised:?}"
            ));
            *line = normalised;
        }
    }
    for (index, (line, ..)) in ours.iter_mut().enumerate() {
        if let Some(normalised) = kiln_history_line(line).filter(|n| n != line) {
            applied.push(format!(
                "history[{index}]: kiln's {line:?} read as {normalised:?}"
            ));
            *line = normalised;
        }
    }
    let mut differences = Vec::new();
    for index in 0..theirs.len().max(ours.len()) {
        let (mut a, mut b) = (theirs.get(index).cloned(), ours.get(index).cloned());
        if case.peer_dockerfile.is_some() {
            for entry in [&mut a, &mut b].into_iter().flatten() {
                entry.0.clear();
            }
        }
        if a != b {
            differences.push(format!("history[{index}]: peer {a:?}, kiln {b:?}"));
        }
    }
    if peer_layers != kiln.layers.len() {
        differences.push(format!(
            "layers: peer {peer_layers} (after the normalisations), kiln {}",
            kiln.layers.len()
        ));
    }
    differences
}

fn history(document: &Value) -> Vec<HistoryLine> {
    let list = document.get("history").and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .map(|entry| {
            let text = |key: &str| {
                entry
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let empty = entry.get("empty_layer").and_then(Value::as_bool);
            (text("created_by"), text("comment"), empty.unwrap_or(false))
        })
        .collect()
}

/// The peer's history text where BuildKit v0.8 writes it differently from current BuildKit,
/// rewritten as current BuildKit (and kiln) writes it; `None` when it needs no change.
fn peer_history_line(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix("RUN |") {
        // v0.8 lists an ARG declared again once per declaration; current BuildKit once, in its
        // first place, with the latest value (moby/buildkit#5505).
        let (count, rest) = rest.split_once(' ')?;
        let count: usize = count.parse().ok()?;
        let words: Vec<&str> = rest.splitn(count + 1, ' ').collect();
        let (args, command) = words.split_at(count.min(words.len()));
        let mut kept: Vec<(&str, &str)> = Vec::new();
        for arg in args {
            let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
            match kept.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => kept.push((key, value)),
            }
        }
        if kept.len() == count {
            return None;
        }
        let listed: Vec<String> = kept.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Some(format!(
            "RUN |{} {} {}",
            kept.len(),
            listed.join(" "),
            command.join(" ")
        ));
    }
    if let Some(rest) = line.strip_prefix("HEALTHCHECK &{") {
        // Current BuildKit's HealthcheckConfig has StartInterval (dockerfile 1.6,
        // `--start-interval`) between StartPeriod and Retries; v0.8's has not. An unset one
        // prints as "0s".
        let (fields, retries) = rest.strip_suffix('}')?.rsplit_once(' ')?;
        return Some(format!("HEALTHCHECK &{{{fields} \"0s\" {retries}}}"));
    }
    if let Some(rest) = line.strip_prefix("ARG ") {
        return Some(format!("ARG {}", arg_names(rest)));
    }
    None
}

/// kiln's history text where it follows current BuildKit rather than v0.8, rewritten as v0.8
/// writes it; `None` when it needs no change.
fn kiln_history_line(line: &str) -> Option<String> {
    for keyword in ["COPY ", "ADD "] {
        if let Some(rest) = line.strip_prefix(keyword) {
            // Current BuildKit records --chown, --chmod (and --parents) in the COPY/ADD line
            // (dockerfile2llb dispatchCopy, `commitMessage`); v0.8 did not.
            let words: Vec<&str> = rest.split(' ').collect();
            let kept: Vec<&str> = words
                .iter()
                .copied()
                .skip_while(|w| w.starts_with("--chown=") || w.starts_with("--chmod="))
                .collect();
            return (kept.len() != words.len()).then(|| format!("{keyword}{}", kept.join(" ")));
        }
    }
    // Current BuildKit writes an ARG with the value in effect (dockerfile2llb dispatchArg:
    // the build arg, the expanded default or the global ARG's), v0.8 as the Dockerfile wrote
    // it: only the names are compared.
    line.strip_prefix("ARG ")
        .map(|rest| format!("ARG {}", arg_names(rest)))
}

/// `A=1 B C=x y` as `A B C`: the names of an ARG's declarations (values without spaces).
fn arg_names(declarations: &str) -> String {
    let names: Vec<&str> = declarations
        .split(' ')
        .map(|d| d.split_once('=').map_or(d, |(name, _)| name))
        .collect();
    names.join(" ")
}

fn shown(value: &Option<Value>) -> String {
    value
        .as_ref()
        .map_or_else(|| "unset".to_string(), Value::to_string)
}

/// Every path whose presence or node differs between two trees.
fn compare_trees(left_name: &str, left: &Tree, right_name: &str, right: &Tree) -> Vec<String> {
    let mut differences = Vec::new();
    for (path, node) in left {
        match right.get(path) {
            None => differences.push(format!(
                "{path}: {left_name} has {node:?}, {right_name} has nothing"
            )),
            Some(other) if other != node => differences.push(format!(
                "{path}: {left_name} has {node:?}, {right_name} has {other:?}"
            )),
            Some(_) => {}
        }
    }
    for (path, node) in right {
        if !left.contains_key(path) {
            differences.push(format!(
                "{path}: {left_name} has nothing, {right_name} has {node:?}"
            ));
        }
    }
    differences
}

/// `docker run` of the peer's image and of kiln's (after `docker load`), and `kiln run`:
/// the same output. Returns the differences.
fn compare_runs(docker: &PeerDocker, root: &Path, case: &Case, kiln_tar: &Path) -> Vec<String> {
    let kiln_image = format!("kiln-peercmp-{}", case.name);
    let peer_image = format!("kiln-peer-{}", case.name);
    if let Err(err) = run(
        docker.command().arg("load").arg("-i").arg(kiln_tar),
        "docker load",
    ) {
        return vec![err];
    }
    let docker_run = |image: &str| {
        let mut command = docker.command();
        command.args(["run", "--rm", "--network", "host", image]);
        run(&mut command, &format!("docker run {image}"))
    };
    let kiln_run = kiln().root(root).args(["run", "--rm", &kiln_image]);
    let peer_output = docker_run(&peer_image);
    let loaded_output = docker_run(&kiln_image);
    let kiln_output = checked(kiln_run.run().into(), "kiln run");
    let _ = run(docker.command().args(["rmi", &kiln_image]), "docker rmi");
    let mut differences = Vec::new();
    if loaded_output != peer_output {
        differences.push(format!(
            "docker run of kiln's image printed {loaded_output:?}, of the peer's {peer_output:?}"
        ));
    }
    if kiln_output != peer_output {
        differences.push(format!(
            "kiln run printed {kiln_output:?}, docker run of the peer's image {peer_output:?}"
        ));
    }
    differences
}
