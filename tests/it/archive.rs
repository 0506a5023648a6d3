//! Moving images in and out: `kiln import`, `export`, `save` and `load` through the binary,
//! against other tools (skopeo, umoci, the peer dockerd) and against hostile archives, which
//! must fail clearly with nothing tagged, the store still usable and the host untouched.
//!
//! The round trips end in `kiln run` where the issue asks for it: an imported busybox runs
//! `sh -c 'echo hi; exit 3'`, and an image `docker save`d by the peer runs after `kiln load`.

use crate::store::{Spec, build_image, temp_store};
use crate::support::{busybox, kiln, peer_docker, tool};
use kiln::archive::{ArchiveError, LoadOptions, load};
use kiln::layer::{Compression, compress};
use kiln::oci::Digest;
use kiln::store::{Store, descriptor};
use oci_spec::image::MediaType;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tar built from raw headers, so names the tar crate refuses (`../x`) can be written.
#[derive(Default)]
struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    fn entry(
        mut self,
        name: &str,
        kind: tar::EntryType,
        mode: u32,
        link: &str,
        data: &[u8],
    ) -> Tar {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        let old = header.as_old_mut();
        assert!(name.len() < old.name.len() && link.len() < old.linkname.len());
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(data);
        let padding = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, padding));
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Tar {
        self.entry(name, tar::EntryType::Regular, 0o644, "", data)
    }

    fn exe(self, name: &str, data: &[u8]) -> Tar {
        self.entry(name, tar::EntryType::Regular, 0o755, "", data)
    }

    fn dir(self, name: &str) -> Tar {
        self.entry(name, tar::EntryType::Directory, 0o755, "", b"")
    }

    fn symlink(self, name: &str, target: &str) -> Tar {
        self.entry(name, tar::EntryType::Symlink, 0o777, target, b"")
    }

    fn hardlink(self, name: &str, target: &str) -> Tar {
        self.entry(name, tar::EntryType::Link, 0o644, target, b"")
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0u8; 1024]);
        self.bytes
    }
}

/// A root filesystem with the static busybox and a few applet links, as a tar.
fn busybox_rootfs(busybox: &Path) -> Vec<u8> {
    let binary = fs::read(busybox).expect("read busybox");
    let mut tar = Tar::default().dir("bin/").exe("bin/busybox", &binary);
    for applet in ["sh", "echo", "ls", "cat", "env"] {
        tar = tar.symlink(&format!("bin/{applet}"), "busybox");
    }
    tar.dir("etc/").file("etc/motd", b"kiln\n").finish()
}

/// One file of a tar as the comparisons see it: kind, mode, owner, mtime, link target and a
/// digest of the content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileInfo {
    kind: char,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    link: String,
    content: String,
}

/// The files of a tar by normalised path (no `./`, no trailing `/`), later entries winning.
fn file_set(tar: &[u8]) -> BTreeMap<String, FileInfo> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if path.is_empty() || path == "." {
            continue;
        }
        let header = entry.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            _ => 'f',
        };
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read entry");
        files.insert(
            path,
            FileInfo {
                kind,
                mode: header.mode().expect("mode") & 0o7777,
                owner: (header.uid().expect("uid"), header.gid().expect("gid")),
                mtime: header.mtime().expect("mtime"),
                link,
                content: Digest::of(&data).to_string(),
            },
        );
    }
    files
}

/// The tags in the store, sorted, and how many images it lists.
fn listing(store: &Store) -> (Vec<String>, usize) {
    let images = store.images().expect("images");
    let mut names: Vec<String> = images
        .iter()
        .flat_map(|s| s.image.names.iter().map(ToString::to_string))
        .collect();
    names.sort();
    (names, images.len())
}

const KEEP: Spec = Spec {
    layers: &[&[("keep.txt", "keep\n")]],
    created: "2024-02-29T12:00:00Z",
    cmd: &["/keep"],
};

#[test]
fn import_of_a_busybox_rootfs_runs_and_is_read_by_skopeo_and_umoci() {
    let (Some(busybox), Some(skopeo), Some(umoci)) = (busybox(), tool("skopeo"), tool("umoci"))
    else {
        return;
    };
    let (dir, store) = temp_store();
    let rootfs = dir.path().join("rootfs.tar");
    fs::write(&rootfs, busybox_rootfs(&busybox)).unwrap();
    let root = store.root();
    let out = kiln()
        .root(root)
        .args(["import", rootfs.to_str().unwrap(), "kiln-bb:1.0"])
        .run()
        .success()
        .stdout_str();
    let image = store.resolve("kiln-bb:1.0").unwrap();
    assert_eq!(out, format!("{}\n", image.id), "import prints the image ID");
    assert_eq!(image.layers.len(), 1);
    let layer = &image.layers[0];
    assert_eq!(layer.digest, layer.diff_id, "stored uncompressed");
    assert_eq!(layer.media_type, MediaType::ImageLayer);
    assert!(store.has_snapshot(&layer.diff_id), "checked by unpacking");
    let config: Value = serde_json::from_slice(&image.config_bytes).unwrap();
    assert_eq!(config["os"], "linux");
    let expected_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(config["architecture"], expected_arch);
    let comment = format!("Imported from {}", rootfs.display());
    assert_eq!(config["comment"], comment.as_str());
    assert_eq!(config["history"][0]["created_by"], "kiln import");
    assert_eq!(config["history"][0]["comment"], comment.as_str());
    assert_eq!(config["history"][0]["created"], config["created"]);

    let images = kiln()
        .root(root)
        .args(["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(images, format!("kiln-bb:1.0 {}\n", image.id.short()));

    let ran = kiln()
        .root(root)
        .args(["run", "--rm", "kiln-bb:1.0", "sh", "-c", "echo hi; exit 3"])
        .run();
    assert_eq!(
        (
            ran.status.code(),
            String::from_utf8_lossy(&ran.stdout).into_owned()
        ),
        (Some(3), "hi\n".to_string()),
        "{}",
        ran.stderr_str()
    );

    let root_text = root.display().to_string();
    let inspected = run(
        &skopeo,
        &["inspect", &format!("oci:{root_text}:kiln-bb:1.0")],
    );
    let inspected: Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["Digest"], image.manifest_digest.to_string());
    assert_eq!(inspected["Layers"], json!([layer.digest.to_string()]));

    let bundle = dir.path().join("bundle");
    let image_arg = format!("--image={root_text}:kiln-bb:1.0");
    let mut args = vec!["unpack"];
    if !nix::unistd::geteuid().is_root() {
        args.push("--rootless");
    }
    args.extend([image_arg.as_str(), bundle.to_str().unwrap()]);
    run(&umoci, &args);
    let unpacked = bundle.join("rootfs/bin/busybox");
    assert_eq!(fs::read(&unpacked).unwrap(), fs::read(&busybox).unwrap());
    assert_eq!(
        fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
}

#[test]
fn import_reads_stdin_in_every_compression_and_applies_changes() {
    let (_dir, store) = temp_store();
    let rootfs = Tar::default()
        .dir("app/")
        .file("app/run.sh", b"#!/bin/sh\necho hi\n")
        .finish();
    let mut ids = Vec::new();
    for (compression, tag) in [
        (Compression::None, "plain"),
        (Compression::Gzip, "gzip"),
        (Compression::Zstd, "zstd"),
    ] {
        let mut input = Vec::new();
        compress(&rootfs[..], &mut input, compression).unwrap();
        let name = format!("stdin:{tag}");
        let out = kiln()
            .root(store.root())
            .args([
                "import",
                "-",
                &name,
                "-c",
                "ENV APP=/app",
                "--change",
                "CMD [\"$APP/run.sh\"]",
                "-c",
                "WORKDIR $APP",
                "-m",
                "from a pipe",
            ])
            .stdin(&input)
            .run()
            .success()
            .stdout_str();
        let image = store.resolve(&name).unwrap();
        assert_eq!(out.trim(), image.id.to_string());
        assert_eq!(image.layers[0].diff_id, Digest::of(&rootfs), "{tag}");
        let config: Value = serde_json::from_slice(&image.config_bytes).unwrap();
        assert_eq!(
            config["config"],
            json!({"Env": ["APP=/app"], "Cmd": ["$APP/run.sh"], "WorkingDir": "/app"}),
            "{tag}"
        );
        assert_eq!(config["history"][0]["comment"], "from a pipe");
        ids.push(image.layers[0].digest.clone());
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one layer blob for all three"
    );
}

#[test]
fn import_refuses_bad_input_before_any_image_appears() {
    let (dir, store) = temp_store();
    let keep = build_image(&store, &KEEP);
    store.tag("keep:1", &keep.manifest_descriptor).unwrap();
    let sentinel = dir.path().join("sentinel");
    fs::write(&sentinel, "host\n").unwrap();
    let climbing = format!("{}{}", "../".repeat(12), sentinel.display());
    let escape = Tar::default().file(&climbing, b"pwned\n").finish();
    let hardlink = Tar::default()
        .hardlink("passwd", "../../../../etc/passwd")
        .finish();
    let cases: [(&str, Vec<u8>, &[&str], &str); 6] = [
        ("empty input", Vec::new(), &[], "the rootfs tar is empty"),
        (
            "not a tar",
            b"hello world, not a tar at all".repeat(40),
            &[],
            "malformed",
        ),
        ("dot-dot entry", escape, &[], "unsafe layer entry"),
        ("hardlink out", hardlink, &[], "unsafe layer entry"),
        (
            "bad change",
            Tar::default().finish(),
            &["-c", "RUN rm -rf /"],
            "RUN is not a valid change command",
        ),
        (
            "bad name",
            Tar::default().finish(),
            &["Bad:Name"],
            "invalid image name",
        ),
    ];
    let mut failures = Vec::new();
    for (what, input, extra, expected) in &cases {
        let mut args = vec!["import", "-"];
        args.extend(extra.iter());
        let stderr = kiln()
            .root(store.root())
            .args(&args)
            .stdin(input)
            .run()
            .failure()
            .code(1)
            .stderr_str();
        if !stderr.contains(expected) {
            failures.push(format!("{what}: expected {expected:?} in {stderr:?}"));
        }
        if listing(&store) != (vec!["keep:1".to_string()], 1) {
            failures.push(format!("{what}: the store changed: {:?}", listing(&store)));
        }
    }
    let url = kiln()
        .root(store.root())
        .args(["import", "https://example.com/rootfs.tar"])
        .run()
        .failure()
        .code(1)
        .stderr_str();
    assert!(url.contains("kiln import reads files, not URLs"), "{url}");
    assert_eq!(fs::read_to_string(&sentinel).unwrap(), "host\n");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A two-layer image through the store's API: the second layer deletes a file (`.wh.`), makes
/// a directory opaque and replaces a file.
fn layered_image(store: &Store) -> kiln::store::StoredImage {
    let _lease = store.lease().unwrap();
    let base = Tar::default()
        .dir("etc/")
        .file("etc/keep", b"keep\n")
        .file("etc/gone", b"gone\n")
        .dir("cache/")
        .file("cache/old", b"old\n")
        .file("motd", b"one\n")
        .finish();
    let top = Tar::default()
        .file("etc/.wh.gone", b"")
        .dir("cache/")
        .file("cache/.wh..wh..opq", b"")
        .file("cache/new", b"new\n")
        .file("motd", b"two\n")
        .finish();
    let mut gz = Vec::new();
    compress(&top[..], &mut gz, Compression::Gzip).unwrap();
    let base_blob = store.blobs().write(&base).unwrap();
    let top_blob = store.blobs().write(&gz).unwrap();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-02-29T12:00:00Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&base).to_string(), Digest::of(&top).to_string()]},
        "history": [{"created_by": "base"}, {"created_by": "top"}],
    });
    store
        .write_image_json(
            &serde_json::to_vec(&config).unwrap(),
            &[
                base_blob.descriptor(MediaType::ImageLayer),
                descriptor(MediaType::ImageLayerGzip, &top_blob.digest, top_blob.size),
            ],
        )
        .unwrap()
}

#[test]
fn export_is_the_flattened_rootfs_with_whiteouts_applied() {
    let (dir, store) = temp_store();
    let image = layered_image(&store);
    store.tag("layered:1", &image.manifest_descriptor).unwrap();
    let stdout = kiln()
        .root(store.root())
        .args(["export", "layered:1"])
        .run();
    assert_eq!(stdout.status.code(), Some(0), "{}", stdout.stderr_str());
    let files = file_set(&stdout.stdout);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["cache", "cache/new", "etc", "etc/keep", "motd"]);
    assert_eq!(files["motd"].content, Digest::of(b"two\n").to_string());
    // -o writes the same bytes to a file, and only a file: nothing is left beside it.
    let out = dir.path().join("out/rootfs.tar");
    fs::create_dir(dir.path().join("out")).unwrap();
    kiln()
        .root(store.root())
        .args(["export", image.id.hex(), "-o", out.to_str().unwrap()])
        .run()
        .success();
    assert_eq!(fs::read(&out).unwrap(), stdout.stdout, "deterministic");
    assert_eq!(fs::read_dir(dir.path().join("out")).unwrap().count(), 1);
    let leftovers = fs::read_dir(store.root().join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "the flattening directory is removed");
    // A failing export leaves no output file.
    let missing = dir.path().join("out/missing.tar");
    let stderr = kiln()
        .root(store.root())
        .args(["export", "nope", "-o", missing.to_str().unwrap()])
        .run()
        .failure()
        .code(1)
        .stderr_str();
    assert!(stderr.contains("no such image: nope"), "{stderr}");
    assert!(!missing.exists());
}

#[test]
fn save_docker_format_is_docker_20_10s_layout_and_deterministic() {
    let (_dir, store) = temp_store();
    let image = layered_image(&store);
    store.tag("layered:1", &image.manifest_descriptor).unwrap();
    store.tag("layered:2", &image.manifest_descriptor).unwrap();
    let first = kiln().root(store.root()).args(["save", "layered"]).run();
    assert_eq!(first.status.code(), Some(0), "{}", first.stderr_str());
    let second = kiln()
        .root(store.root())
        .args(["save", "layered:1", "layered:2"])
        .run();
    assert_eq!(first.stdout, second.stdout, "same images, same bytes");
    let files = file_set(&first.stdout);
    let manifest: Value =
        serde_json::from_slice(&tar_file(&first.stdout, "manifest.json")).unwrap();
    let item = &manifest[0];
    assert_eq!(manifest.as_array().unwrap().len(), 1);
    assert_eq!(item["Config"], format!("{}.json", image.id.hex()));
    assert_eq!(item["RepoTags"], json!(["layered:1", "layered:2"]));
    let layers = item["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for (layer, info) in layers.iter().zip(&image.layers) {
        let path = layer.as_str().unwrap();
        let dir = path.strip_suffix("/layer.tar").expect("<id>/layer.tar");
        assert_eq!(
            files[&format!("{dir}/VERSION")].content,
            Digest::of(b"1.0").to_string()
        );
        assert!(files.contains_key(&format!("{dir}/json")));
        let link = &files[path];
        assert_eq!(
            (link.kind, link.link.as_str()),
            ('l', &*format!("../blobs/sha256/{}", info.diff_id.hex()))
        );
        // Layers are uncompressed: the gzip top layer was decompressed.
        let blob = &files[&format!("blobs/sha256/{}", info.diff_id.hex())];
        assert_eq!(blob.content, info.diff_id.to_string());
    }
    let top = layers[1]
        .as_str()
        .unwrap()
        .strip_suffix("/layer.tar")
        .unwrap();
    let repositories: Value =
        serde_json::from_slice(&tar_file(&first.stdout, "repositories")).unwrap();
    assert_eq!(repositories, json!({"layered": {"1": top, "2": top}}));
    let config = tar_file(&first.stdout, &format!("{}.json", image.id.hex()));
    assert_eq!(config, image.config_bytes);
    let index: Value = serde_json::from_slice(&tar_file(&first.stdout, "index.json")).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "layered:1"
    );
}

/// The content of the file entry `name` of a tar.
#[test]
fn output_to_a_fifo_or_device_is_written_in_place_not_replaced() {
    let (_dir, store) = temp_store();
    let image = layered_image(&store);
    store.tag("layered:1", &image.manifest_descriptor).unwrap();
    let expected = kiln().root(store.root()).args(["save", "layered:1"]).run();
    assert_eq!(expected.status.code(), Some(0), "{}", expected.stderr_str());
    // A FIFO stands for /dev/null or /dev/stdout: renaming a finished temp file over it, as
    // `-o FILE` does for a regular file, would put a regular file in its place.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for args in [&["save", "-o"][..], &["export", "-o"][..]] {
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(&fifo).unwrap())
        };
        let mut full: Vec<&str> = args.to_vec();
        full.extend([fifo.to_str().unwrap(), "layered:1"]);
        let run = kiln().root(store.root()).args(&full).run();
        assert_eq!(run.status.code(), Some(0), "{args:?}: {}", run.stderr_str());
        // Checked before joining the reader: a replaced FIFO never gets a writer, and its
        // reader stays blocked (the thread is left behind; the test fails here instead).
        let kind = fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(
            std::os::unix::fs::FileTypeExt::is_fifo(&kind),
            "{args:?} replaced the FIFO"
        );
        let read = reader.join().unwrap();
        if args[0] == "save" {
            assert_eq!(read, expected.stdout, "save -o FIFO gives save's bytes");
        } else {
            assert!(file_set(&read).contains_key("etc/keep"), "export -o FIFO");
        }
    }
    let beside: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(beside.len(), 1, "no temp file is left beside the FIFO");
}

fn tar_file(tar: &[u8], name: &str) -> Vec<u8> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path_bytes().as_ref() == name.as_bytes() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            return data;
        }
    }
    panic!("{name} is not in the archive");
}

#[test]
fn save_docker_is_loaded_and_run_by_docker() {
    let (Some(busybox), Some(docker)) = (busybox(), peer_docker()) else {
        return;
    };
    let (dir, store) = temp_store();
    let name = format!("kiln-archive-save-{}:v1", std::process::id());
    kiln()
        .root(store.root())
        .args(["import", "-", &name])
        .stdin(busybox_rootfs(&busybox))
        .run()
        .success();
    let archive = dir.path().join("save.tar");
    kiln()
        .root(store.root())
        .args(["save", "-o", archive.to_str().unwrap(), &name])
        .run()
        .success();
    let loaded = docker.run(&["load", "-i", archive.to_str().unwrap()]);
    let ran = docker
        .command()
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            &name,
            "/bin/busybox",
            "echo",
            "hi",
        ])
        .output()
        .unwrap();
    let id = docker.run(&["image", "inspect", "--format", "{{.Id}}", &name]);
    docker.run(&["rmi", &name]);
    assert_eq!(loaded.trim(), format!("Loaded image: {name}"));
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "hi\n",
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(
        id.trim(),
        store.resolve(&name).unwrap().id.to_string(),
        "same image ID"
    );
}

#[test]
fn docker_save_is_loaded_by_kiln_and_exports_the_original_files() {
    let (Some(busybox), Some(docker)) = (busybox(), peer_docker()) else {
        return;
    };
    let (dir, store) = temp_store();
    let rootfs = busybox_rootfs(&busybox);
    let name = format!("kiln-archive-load-{}:v1", std::process::id());
    let rootfs_path = dir.path().join("rootfs.tar");
    fs::write(&rootfs_path, &rootfs).unwrap();
    docker.run(&["import", rootfs_path.to_str().unwrap(), &name]);
    let archive = dir.path().join("docker.tar");
    docker.run(&["save", "-o", archive.to_str().unwrap(), &name]);
    docker.run(&["rmi", &name]);
    // Through stdin, as `docker save | kiln load`.
    let out = kiln()
        .root(store.root())
        .args(["load", "-q"])
        .stdin(fs::read(&archive).unwrap())
        .run()
        .success()
        .stdout_str();
    assert_eq!(out, format!("Loaded image: {name}\n"));
    let inspect: Value = serde_json::from_str(
        &kiln()
            .root(store.root())
            .args(["inspect", &name])
            .run()
            .success()
            .stdout_str(),
    )
    .unwrap();
    assert_eq!(inspect[0]["RepoTags"], json!([name]));
    assert_eq!(inspect[0]["Comment"], "Imported from -");
    let ran = kiln()
        .root(store.root())
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            &name,
            "/bin/busybox",
            "echo",
            "hi",
        ])
        .run();
    assert_eq!(
        (
            ran.status.code(),
            String::from_utf8_lossy(&ran.stdout).into_owned()
        ),
        (Some(0), "hi\n".to_string()),
        "{}",
        ran.stderr_str()
    );
    let exported = kiln().root(store.root()).args(["export", &name]).run();
    assert_eq!(exported.status.code(), Some(0), "{}", exported.stderr_str());
    let (got, want) = (file_set(&exported.stdout), file_set(&rootfs));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, info) in &want {
        let mut expected = info.clone();
        if !nix::unistd::geteuid().is_root() {
            expected.owner = got[path].owner;
        }
        assert_eq!(got[path], expected, "{path}");
    }
}

#[test]
fn oci_archives_round_trip_with_identical_digests_and_skopeo_reads_them() {
    let (dir, store) = temp_store();
    let image = layered_image(&store);
    store.tag("layered:1", &image.manifest_descriptor).unwrap();
    let keep = build_image(&store, &KEEP);
    let archive = dir.path().join("oci.tar");
    let saved = kiln()
        .root(store.root())
        .args([
            "save",
            "--format",
            "oci",
            "-o",
            archive.to_str().unwrap(),
            "layered:1",
            keep.id.hex(),
        ])
        .run();
    assert_eq!(saved.status.code(), Some(0), "{}", saved.stderr_str());
    let files = file_set(&fs::read(&archive).unwrap());
    assert!(files.contains_key("oci-layout") && files.contains_key("index.json"));
    assert!(!files.contains_key("manifest.json"), "only the OCI layout");
    for layer in &image.layers {
        assert!(
            files.contains_key(&format!("blobs/sha256/{}", layer.digest.hex())),
            "blobs as stored"
        );
    }

    let other = dir.path().join("other");
    let out = kiln()
        .root(&other)
        .args(["load", "-i", archive.to_str().unwrap()])
        .run()
        .success()
        .stdout_str();
    assert_eq!(
        out,
        format!("Loaded image: layered:1\nLoaded image ID: {}\n", keep.id)
    );
    let loaded = Store::open(&other).unwrap().resolve("layered:1").unwrap();
    assert_eq!(loaded.manifest_digest, image.manifest_digest);
    assert_eq!(loaded.id, image.id);
    assert_eq!(loaded.layers, image.layers);
    let keep_loaded = Store::open(&other).unwrap().resolve(keep.id.hex()).unwrap();
    assert!(keep_loaded.names.is_empty());
    assert_eq!(keep_loaded.layers, keep.layers);

    let Some(skopeo) = tool("skopeo") else {
        return;
    };
    let single = dir.path().join("single.tar");
    kiln()
        .root(store.root())
        .args([
            "save",
            "--format",
            "oci",
            "-o",
            single.to_str().unwrap(),
            "layered:1",
        ])
        .run()
        .success();
    let copy = dir.path().join("copy");
    run(
        &skopeo,
        &[
            "copy",
            // skopeo compresses uncompressed layers on the way unless told to keep digests.
            "--preserve-digests",
            &format!("oci-archive:{}", single.display()),
            &format!("oci:{}:x", copy.display()),
        ],
    );
    let copied = Store::open(&copy).unwrap().resolve("x").unwrap();
    assert_eq!(copied.manifest_digest, image.manifest_digest);
    let named = run(
        &skopeo,
        &[
            "inspect",
            &format!("oci-archive:{}:layered:1", single.display()),
        ],
    );
    let named: Value = serde_json::from_str(&named).unwrap();
    assert_eq!(named["Digest"], image.manifest_digest.to_string());
}

#[test]
fn kilns_docker_archive_loads_back_and_skopeo_reads_it() {
    let (dir, store) = temp_store();
    let image = layered_image(&store);
    store.tag("layered:1", &image.manifest_descriptor).unwrap();
    let saved = kiln().root(store.root()).args(["save", "layered:1"]).run();
    assert_eq!(saved.status.code(), Some(0));
    // Into a store where the tag names another image: docker's message, then the tag moves.
    let (_other_dir, other) = temp_store();
    let keep = build_image(&other, &KEEP);
    other.tag("layered:1", &keep.manifest_descriptor).unwrap();
    let mut gz = Vec::new();
    compress(&saved.stdout[..], &mut gz, Compression::Gzip).unwrap();
    let out = kiln().root(other.root()).args(["load"]).stdin(&gz).run();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    insta::assert_snapshot!(stdout.replace(keep.id.hex(), "<old id>"), @r"
    The image layered:1 already exists, renaming the old one with ID sha256:<old id> to empty string
    Loaded image: layered:1
    ");
    assert_eq!(
        out.stderr_str().lines().count(),
        2,
        "one progress line per new layer: {}",
        out.stderr_str()
    );
    let loaded = other.resolve("layered:1").unwrap();
    assert_eq!(loaded.id, image.id);
    assert_eq!(loaded.layers.len(), 2);
    assert!(
        loaded.layers.iter().all(|l| l.digest == l.diff_id),
        "uncompressed layers"
    );
    assert!(
        other.resolve(keep.id.hex()).unwrap().names.is_empty(),
        "the old image is dangling"
    );
    // Loading it again changes nothing and says so quietly.
    let again = kiln()
        .root(other.root())
        .args(["load", "-q"])
        .stdin(&saved.stdout)
        .run();
    assert_eq!(again.success().stdout_str(), "Loaded image: layered:1\n");

    let Some(skopeo) = tool("skopeo") else {
        return;
    };
    let archive = dir.path().join("docker.tar");
    fs::write(&archive, &saved.stdout).unwrap();
    let inspected = run(
        &skopeo,
        &["inspect", &format!("docker-archive:{}", archive.display())],
    );
    let inspected: Value = serde_json::from_str(&inspected).unwrap();
    let diff_ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.to_string()).collect();
    assert_eq!(inspected["Layers"], json!(diff_ids));
}

/// A valid docker archive of one image with one layer (`layer`), pieces replaceable.
struct DockerArchive {
    config: Vec<u8>,
    config_name: String,
    layer: Vec<u8>,
    layer_name: String,
    manifest: Option<Vec<u8>>,
}

impl DockerArchive {
    fn new(layer: Vec<u8>) -> DockerArchive {
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer).to_string()]},
        });
        let config = serde_json::to_vec(&config).unwrap();
        DockerArchive {
            config_name: format!("{}.json", Digest::of(&config).hex()),
            config,
            layer,
            layer_name: "abc/layer.tar".to_string(),
            manifest: None,
        }
    }

    fn manifest(&self, config: &str, layers: &[&str]) -> Vec<u8> {
        serde_json::to_vec(
            &json!([{"Config": config, "RepoTags": ["hostile:1"], "Layers": layers}]),
        )
        .unwrap()
    }

    fn build(&self) -> Vec<u8> {
        let manifest = self
            .manifest
            .clone()
            .unwrap_or_else(|| self.manifest(&self.config_name, &[&self.layer_name]));
        Tar::default()
            .file(&self.config_name, &self.config)
            .file(&self.layer_name, &self.layer)
            .file("manifest.json", &manifest)
            .finish()
    }
}

/// An OCI archive of one image with one layer; `tamper` changes a blob after its name is set.
fn oci_archive(
    layer: &[u8],
    tamper: impl FnOnce(&mut Vec<(String, Vec<u8>)>),
    index_size: Option<u64>,
) -> Vec<u8> {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(layer).to_string()]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(&config).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": Digest::of(layer).to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": Digest::of(&manifest).to_string(),
            "size": index_size.unwrap_or(manifest.len() as u64),
            "annotations": {"org.opencontainers.image.ref.name": "hostile:1"},
        }],
    }))
    .unwrap();
    let mut blobs: Vec<(String, Vec<u8>)> = [config, manifest, layer.to_vec()]
        .into_iter()
        .map(|b| (format!("blobs/sha256/{}", Digest::of(&b).hex()), b))
        .collect();
    tamper(&mut blobs);
    let mut tar = Tar::default().file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for (name, bytes) in &blobs {
        tar = tar.file(name, bytes);
    }
    tar.file("index.json", &index).finish()
}

#[test]
fn hostile_archives_fail_clearly_leave_nothing_tagged_and_touch_nothing() {
    let (dir, store) = temp_store();
    let keep = build_image(&store, &KEEP);
    store.tag("keep:1", &keep.manifest_descriptor).unwrap();
    let sentinel = dir.path().join("sentinel");
    fs::write(&sentinel, "host\n").unwrap();
    let sentinel_text = sentinel.display().to_string();
    let climb = format!(
        "{}{}",
        "../".repeat(12),
        sentinel_text.trim_start_matches('/')
    );

    let layer = Tar::default().file("hello", b"hello\n").finish();
    let escaping_layer = Tar::default().file(&climb, b"pwned\n").finish();
    let mut gz_wrong = Vec::new();
    compress(
        &Tar::default().file("other", b"x").finish()[..],
        &mut gz_wrong,
        Compression::Gzip,
    )
    .unwrap();
    let base = || DockerArchive::new(layer.clone());
    let with = |change: &dyn Fn(&mut DockerArchive)| {
        let mut archive = base();
        change(&mut archive);
        archive.build()
    };
    let big_manifest = {
        let mut m = b"[".to_vec();
        m.extend(std::iter::repeat_n(b' ', 5 << 20));
        m.push(b']');
        m
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "config path climbs",
            with(&|a| a.manifest = Some(a.manifest("../../etc/passwd", &["abc/layer.tar"]))),
            "unsafe name \"../../etc/passwd\"",
        ),
        (
            "layer path climbs to the sentinel",
            with(&|a| a.manifest = Some(a.manifest(&a.config_name.clone(), &[&climb]))),
            "would climb out of the archive",
        ),
        (
            "absolute config path",
            with(&|a| a.manifest = Some(a.manifest(&sentinel_text, &["abc/layer.tar"]))),
            "an absolute path",
        ),
        (
            "layer is not the config's diff id",
            with(&|a| {
                a.layer = Tar::default().file("other", b"other\n").finish();
            }),
            "but the config's rootfs.diff_ids lists",
        ),
        (
            "compressed layer is not the config's diff id",
            with(&|a| a.layer = gz_wrong.clone()),
            "the layer's uncompressed content is",
        ),
        (
            "more layers than diff ids",
            with(&|a| {
                a.manifest =
                    Some(a.manifest(&a.config_name.clone(), &["abc/layer.tar", "abc/layer.tar"]))
            }),
            "lists 1 layer diff IDs, but 2 layers are given",
        ),
        (
            "missing layer",
            with(&|a| a.manifest = Some(a.manifest(&a.config_name.clone(), &["nope/layer.tar"]))),
            "names \"nope/layer.tar\", which is not in the archive",
        ),
        (
            "oversized manifest.json",
            with(&|a| a.manifest = Some(big_manifest.clone())),
            "more than the 4194304-byte limit",
        ),
        (
            "manifest.json is null",
            with(&|a| a.manifest = Some(b"null".to_vec())),
            "it is null",
        ),
        (
            "windows image",
            with(&|a| {
                let config = serde_json::to_vec(&json!({
                    "os": "windows", "architecture": "amd64",
                    "rootfs": {"type": "layers", "diff_ids": [Digest::of(&a.layer).to_string()]},
                }))
                .unwrap();
                a.config_name = "c.json".into();
                a.config = config;
            }),
            "is for windows",
        ),
        (
            "layer with ../ entries",
            DockerArchive::new(escaping_layer.clone()).build(),
            "unsafe layer entry",
        ),
        (
            "layer symlink climbs out",
            Tar::default()
                .file(&base().config_name, &base().config)
                .symlink("abc/layer.tar", "../../../../etc/passwd")
                .file(
                    "manifest.json",
                    &base().manifest(&base().config_name, &["abc/layer.tar"]),
                )
                .finish(),
            "a link target that climbs out of the archive",
        ),
        (
            "layer symlink to a host path",
            Tar::default()
                .file(&base().config_name, &base().config)
                .symlink("abc/layer.tar", &sentinel_text)
                .file(
                    "manifest.json",
                    &base().manifest(&base().config_name, &["abc/layer.tar"]),
                )
                .finish(),
            "which is not in the archive",
        ),
        (
            "layer symlink loop",
            Tar::default()
                .file(&base().config_name, &base().config)
                .symlink("abc/layer.tar", "../def/layer.tar")
                .symlink("def/layer.tar", "../abc/layer.tar")
                .file(
                    "manifest.json",
                    &base().manifest(&base().config_name, &["abc/layer.tar"]),
                )
                .finish(),
            "too many levels of links",
        ),
        (
            "archive entry climbs",
            Tar::default().file("../evil", b"x").finish(),
            "would climb out of the archive",
        ),
        (
            "no manifest.json nor index.json",
            Tar::default().file("hello.txt", b"hi").finish(),
            "not an image archive",
        ),
        (
            "not a tar",
            b"definitely not a tar archive".repeat(30),
            "cannot read the archive",
        ),
        (
            "OCI blob does not match its name",
            oci_archive(&layer, |blobs| blobs[2].1 = b"tampered".to_vec(), None),
            "does not hold the blob its name gives",
        ),
        (
            "OCI manifest size is not the descriptor's",
            oci_archive(&layer, |_| {}, Some(5)),
            "gives sha256:",
        ),
        (
            "OCI layer with ../ entries",
            oci_archive(&escaping_layer, |_| {}, None),
            "unsafe layer entry",
        ),
        (
            "OCI blob of another algorithm",
            oci_archive(
                &layer,
                |blobs| blobs.push(("blobs/sha512/abc".into(), b"x".to_vec())),
                None,
            ),
            "only sha256 blobs are supported",
        ),
        (
            "second blob of a known diff id lies",
            {
                // Two images with one diff ID: the plain blob is right, the gzip one is not.
                let first = base();
                let second_config = serde_json::to_vec(&json!({
                    "architecture": "arm64", "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer).to_string()]},
                }))
                .unwrap();
                let manifest = json!([
                    {"Config": first.config_name, "RepoTags": ["hostile:1"], "Layers": ["abc/layer.tar"]},
                    {"Config": "second.json", "RepoTags": ["hostile:2"], "Layers": ["def/layer.tar"]},
                ]);
                Tar::default()
                    .file(&first.config_name, &first.config)
                    .file("abc/layer.tar", &layer)
                    .file("second.json", &second_config)
                    .file("def/layer.tar", &gz_wrong)
                    .file("manifest.json", &serde_json::to_vec(&manifest).unwrap())
                    .finish()
            },
            "the layer's uncompressed content is",
        ),
    ];
    let before = listing(&store);
    let mut failures = Vec::new();
    for (what, archive, expected) in &cases {
        match load(&store, &archive[..], &LoadOptions::default(), &mut |_| {}) {
            Ok(loaded) => failures.push(format!("{what}: loaded {loaded:?}")),
            Err(err) => {
                let message = kiln::error::chain(&err);
                if !message.contains(expected) {
                    failures.push(format!("{what}: expected {expected:?} in {message:?}"));
                }
            }
        }
        if listing(&store) != before {
            failures.push(format!(
                "{what}: the store's images changed: {:?}",
                listing(&store)
            ));
        }
        if store.resolve("keep:1").map(|i| i.id).ok() != Some(keep.id.clone()) {
            failures.push(format!("{what}: keep:1 is gone"));
        }
    }
    assert_eq!(
        fs::read_to_string(&sentinel).unwrap(),
        "host\n",
        "the sentinel is untouched"
    );
    let beside: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        beside.len(),
        2,
        "nothing new beside the store and sentinel: {beside:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(cases.len(), 22);
    // The store still works: a good archive loads after all that.
    let loaded = load(
        &store,
        &base().build()[..],
        &LoadOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(loaded[0].names[0].to_string(), "hostile:1");
    // And the CLI reports a hostile archive as one error line, exit code 1.
    let stderr = kiln()
        .root(store.root())
        .args(["load"])
        .stdin(&cases[0].1)
        .run()
        .failure()
        .code(1)
        .stderr_str();
    assert_eq!(
        stderr,
        "error: unsafe name \"../../etc/passwd\" in the archive: `..` would climb out of the \
         archive\n"
    );
}

#[test]
fn archives_in_other_writers_shapes_load() {
    let layer = Tar::default().dir("d/").file("d/f", b"content\n").finish();
    let mut gz_layer = Vec::new();
    compress(&layer[..], &mut gz_layer, Compression::Gzip).unwrap();
    let docker = DockerArchive::new(layer.clone());
    let manifest = |config: &str, layers: &[&str]| docker.manifest(config, layers);
    let docker25 = {
        // Docker 25: blobs under blobs/sha256, manifest.json naming them.
        let config_path = format!("blobs/sha256/{}", Digest::of(&docker.config).hex());
        let layer_path = format!("blobs/sha256/{}", Digest::of(&layer).hex());
        Tar::default()
            .dir("blobs/")
            .dir("blobs/sha256/")
            .file(&layer_path, &layer)
            .file(&config_path, &docker.config)
            .file("manifest.json", &manifest(&config_path, &[&layer_path]))
            .finish()
    };
    let cases: Vec<(&str, Vec<u8>, Digest)> = vec![
        ("docker 20.10", docker.build(), Digest::of(&layer)),
        ("docker 25", docker25, Digest::of(&layer)),
        (
            "./ names, manifest.json first",
            Tar::default()
                .file(
                    "./manifest.json",
                    &manifest(&docker.config_name, &["abc/layer.tar"]),
                )
                .file(&format!("./{}", docker.config_name), &docker.config)
                .file("./abc/layer.tar", &layer)
                .finish(),
            Digest::of(&layer),
        ),
        (
            "gzip layer.tar",
            {
                let mut archive = DockerArchive::new(layer.clone());
                archive.layer = gz_layer.clone();
                archive.build()
            },
            Digest::of(&gz_layer),
        ),
        (
            "hard-linked layer",
            Tar::default()
                .file(&docker.config_name, &docker.config)
                .file("real/layer.tar", &layer)
                .hardlink("abc/layer.tar", "real/layer.tar")
                .file(
                    "manifest.json",
                    &manifest(&docker.config_name, &["abc/layer.tar"]),
                )
                .finish(),
            Digest::of(&layer),
        ),
        (
            "directory symlink",
            Tar::default()
                .file(&docker.config_name, &docker.config)
                .file("real/layer.tar", &layer)
                .symlink("abc", "real")
                .file(
                    "manifest.json",
                    &manifest(&docker.config_name, &["abc/layer.tar"]),
                )
                .finish(),
            Digest::of(&layer),
        ),
    ];
    let mut failures = Vec::new();
    for (what, archive, blob) in &cases {
        for compression in [Compression::None, Compression::Zstd] {
            let (_dir, store) = temp_store();
            let mut input = Vec::new();
            compress(&archive[..], &mut input, compression).unwrap();
            let result = load(&store, &input[..], &LoadOptions::default(), &mut |_| {});
            match result.map(|_| store.resolve("hostile:1")) {
                Ok(Ok(image)) if image.layers[0].digest == *blob => {
                    let exported = kiln()
                        .root(store.root())
                        .args(["export", "hostile:1"])
                        .run();
                    let names: Vec<String> = file_set(&exported.stdout).into_keys().collect();
                    if names != ["d", "d/f"] {
                        failures.push(format!("{what} ({compression:?}): exported {names:?}"));
                    }
                }
                other => failures.push(format!("{what} ({compression:?}): {other:?}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 6);
}

#[test]
fn save_selects_tags_ids_and_refuses_what_docker_refuses() {
    let (dir, store) = temp_store();
    let image = layered_image(&store);
    store.tag("layered:1", &image.manifest_descriptor).unwrap();
    store.tag("layered:2", &image.manifest_descriptor).unwrap();
    let keep = build_image(&store, &KEEP);
    store.tag("keep:1", &keep.manifest_descriptor).unwrap();
    let saved = kiln()
        .root(store.root())
        .args(["save", "layered:2", keep.id.short()])
        .run();
    assert_eq!(saved.status.code(), Some(0), "{}", saved.stderr_str());
    let manifest: Value =
        serde_json::from_slice(&tar_file(&saved.stdout, "manifest.json")).unwrap();
    assert_eq!(manifest[0]["RepoTags"], json!(["layered:2"]));
    assert_eq!(
        manifest[1]["RepoTags"],
        Value::Null,
        "an ID saves no tags, as docker"
    );
    // Both come back from the one archive.
    let other = dir.path().join("other");
    let out = kiln()
        .root(&other)
        .args(["load", "-q"])
        .stdin(&saved.stdout)
        .run()
        .success()
        .stdout_str();
    assert_eq!(
        out,
        format!("Loaded image: layered:2\nLoaded image ID: {}\n", keep.id)
    );
    let other = Store::open(&other).unwrap();
    assert_eq!(other.resolve("layered:2").unwrap().id, image.id);
    assert!(
        other.resolve("layered:1").is_err(),
        "only the tag asked for"
    );
    assert_eq!(other.resolve(keep.id.hex()).unwrap().id, keep.id);

    // An image without layers cannot be in docker's format (docker refuses it too).
    let empty = store
        .write_image_json(
            &serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})).unwrap(),
            &[],
        )
        .unwrap();
    let out = dir.path().join("never.tar");
    let stderr = kiln()
        .root(store.root())
        .args(["save", "-o", out.to_str().unwrap(), empty.id.hex()])
        .run()
        .failure()
        .code(1)
        .stderr_str();
    assert!(stderr.contains("it has no layers"), "{stderr}");
    assert!(!out.exists(), "a failed save leaves no file");
    kiln()
        .root(store.root())
        .args([
            "save",
            "--format",
            "oci",
            "-o",
            out.to_str().unwrap(),
            empty.id.hex(),
        ])
        .run()
        .success();
    let stderr = kiln()
        .root(store.root())
        .args(["save", "nope:1"])
        .run()
        .failure()
        .code(1)
        .stderr_str();
    assert!(stderr.contains("no such image: nope:1"), "{stderr}");
    let stderr = kiln()
        .root(store.root())
        .args(["save"])
        .run()
        .code(2)
        .stderr_str();
    assert!(stderr.contains("<IMAGE>"), "{stderr}");
}

#[test]
fn load_refuses_an_archive_past_the_size_limit() {
    let (_dir, store) = temp_store();
    let archive =
        DockerArchive::new(Tar::default().file("big", &vec![7u8; 1 << 20]).finish()).build();
    let mut gz = Vec::new();
    compress(&archive[..], &mut gz, Compression::Gzip).unwrap();
    let options = LoadOptions {
        max_bytes: 64 << 10,
    };
    let err = load(&store, &gz[..], &options, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::Read { .. }), "{err}");
    assert!(
        kiln::error::chain(&err).contains("larger than the limit of 65536"),
        "{err}"
    );
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn archives_are_never_written_to_or_read_from_a_terminal() {
    use kiln::runtime::tty::Pty;
    let (_dir, store) = temp_store();
    let keep = build_image(&store, &KEEP);
    store.tag("keep:1", &keep.manifest_descriptor).unwrap();
    let cases: [(&[&str], bool, &str); 4] = [
        (
            &["save", "keep:1"],
            false,
            "cowardly refusing to save to a terminal",
        ),
        (
            &["export", "keep:1"],
            false,
            "cowardly refusing to save to a terminal",
        ),
        (
            &["load"],
            true,
            "requested load from stdin, but stdin is a terminal",
        ),
        (
            &["import", "-"],
            true,
            "requested import from stdin, but stdin is a terminal",
        ),
    ];
    let mut failures = Vec::new();
    for (args, terminal_stdin, expected) in cases {
        let pty = Pty::open(None).expect("open a pty");
        let mut command = kiln().root(store.root()).args(args).command();
        if terminal_stdin {
            command.stdin(Stdio::from(pty.slave)).stdout(Stdio::null());
        } else {
            command.stdin(Stdio::null()).stdout(Stdio::from(pty.slave));
        }
        let out = command.stderr(Stdio::piped()).output().expect("run kiln");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) || !stderr.contains(expected) {
            failures.push(format!("{args:?}: {:?} {stderr}", out.status.code()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn export_never_follows_an_image_symlink_out_of_its_root() {
    let (dir, store) = temp_store();
    let host = dir.path().join("host");
    fs::create_dir(&host).unwrap();
    let host_text = host.display().to_string();
    let inside = host_text.trim_start_matches('/');
    // Layers written through the store's API, which does not check them: layer 1 links
    // `escape` to the host directory's absolute path (and has that path inside the image, so
    // the link is not dangling there), layer 2 writes through the link.
    let layers = [
        Tar::default()
            .dir(&format!("{inside}/"))
            .symlink("escape", &host_text)
            .finish(),
        Tar::default().file("escape/pwned", b"pwned\n").finish(),
    ];
    let _lease = store.lease().unwrap();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in &layers {
        let blob = store.blobs().write(layer).unwrap();
        diff_ids.push(blob.digest.to_string());
        descriptors.push(blob.descriptor(MediaType::ImageLayer));
    }
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let image = store
        .write_image_json(&serde_json::to_vec(&config).unwrap(), &descriptors)
        .unwrap();
    let exported = kiln()
        .root(store.root())
        .args(["export", image.id.hex()])
        .run();
    assert_eq!(exported.status.code(), Some(0), "{}", exported.stderr_str());
    let files = file_set(&exported.stdout);
    assert_eq!(files["escape"].link, host_text);
    assert!(
        files.contains_key(&format!("{inside}/pwned")),
        "the file lands inside the exported root: {:?}",
        files.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        fs::read_dir(&host).unwrap().count(),
        0,
        "the host is untouched"
    );

    // A layer that climbs out is an error, not a file outside.
    let climbing = format!("{}{inside}/climbed", "../".repeat(12));
    let bad = Tar::default().file(&climbing, b"x").finish();
    let blob = store.blobs().write(&bad).unwrap();
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [blob.digest.to_string()]}});
    let image = store
        .write_image_json(
            &serde_json::to_vec(&config).unwrap(),
            &[blob.descriptor(MediaType::ImageLayer)],
        )
        .unwrap();
    let stderr = kiln()
        .root(store.root())
        .args(["export", image.id.hex()])
        .run()
        .failure()
        .code(1)
        .stderr_str();
    assert!(stderr.contains("unsafe layer entry"), "{stderr}");
    assert_eq!(
        fs::read_dir(&host).unwrap().count(),
        0,
        "the host is untouched"
    );
    assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
}
