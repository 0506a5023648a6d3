//! The store against an outside attack run (issue 17): it is private to its owner (a fresh one
//! from the start, an older one tightened when it is opened) while images still build and run,
//! as root and rootless; a killed `kiln pull` resumes from the bytes it kept, with `Range`, from
//! a loopback registry this file serves itself (slowly, so the pull can be killed midway).

use crate::build::builder;
use crate::support::{self, kiln};
use kiln::oci::Digest;
use kiln::store::Store;
use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The group and other bits nothing of the store's own may have.
const OPEN_BITS: u32 = 0o077;

/// Whether `relative` (a path under the store's root) is image content, whose modes are the
/// image's: an unpacked layer, a container's upper/work directories and `/etc` files, a cache
/// mount's directory, a git checkout, anything being staged. Written from the layout, not from
/// kiln's code, so the check is not kiln's own rule checked against itself.
fn is_content(relative: &Path) -> bool {
    let parts: Vec<&str> = relative
        .components()
        .map(|c| c.as_os_str().to_str().unwrap_or(""))
        .collect();
    match parts.as_slice() {
        ["snapshots", _, ..] | ["tmp", _, ..] => true,
        ["containers", _, name, ..] => name != &"container.json",
        ["cache-mounts", _, name, ..] => {
            name.chars().all(|c| c.is_ascii_digit() || c == '.') || name.ends_with(".shared")
        }
        ["cache", "git", "checkouts", _, ..] | ["cache", "git", "repos", _, ..] => true,
        _ => false,
    }
}

/// Every file or directory under `root` (and `root` itself) that is not content and grants its
/// group or others anything, as `MODE path` lines.
pub(crate) fn offenders(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in fs::read_dir(dir).expect("read directory") {
            let path = entry.expect("entry").path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let relative = path.strip_prefix(root).expect("under the root");
            if meta.is_symlink() || is_content(relative) {
                continue;
            }
            let mode = meta.permissions().mode() & 0o7777;
            if mode & OPEN_BITS != 0 {
                found.push(format!("{mode:o} {}", relative.display()));
            }
            if meta.is_dir() {
                walk(root, &path, found);
            }
        }
    }
    let mut found = Vec::new();
    let mode = fs::metadata(root).expect("root").permissions().mode() & 0o7777;
    if mode & OPEN_BITS != 0 {
        found.push(format!("{mode:o} (the root)"));
    }
    walk(root, root, &mut found);
    found
}

/// Gives the store's own entries the modes an older kiln made (directories 0755, files 0644),
/// content left as it is; returns how many it changed.
fn loosen(root: &Path) -> usize {
    fn walk(root: &Path, dir: &Path) -> usize {
        let mut changed = 0;
        for entry in fs::read_dir(dir).expect("read directory") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("inspect");
            if meta.is_symlink() || is_content(path.strip_prefix(root).expect("under the root")) {
                continue;
            }
            let mode = if meta.is_dir() { 0o755 } else { 0o644 };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            changed += 1;
            if meta.is_dir() {
                changed += walk(root, &path);
            }
        }
        changed
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod root");
    walk(root, root) + 1
}

/// A Dockerfile that writes through RUN (with a cache mount), COPY and a second stage, so the
/// store gets snapshots, build records, a cache mount and container-side files.
const APP: &str = "FROM base AS build\n\
RUN --mount=type=cache,target=/cache echo warm > /cache/w && echo built > /built\n\
FROM base\n\
COPY --from=build /built /built\n\
COPY note /note\n\
RUN chmod 0755 /note && cat /built /note\n";

#[test]
fn a_fresh_store_is_private_and_an_old_one_is_tightened_on_open() {
    let Some(b) = builder() else { return };
    let root = b.root().to_path_buf();
    let ctx = b.context(&[("Dockerfile", APP), ("note", "a note\n")]);
    b.build(ctx.path(), &["-t", "app"]).ok();
    let out = b
        .kiln(&["run", "--rm", "app", "cat", "/built", "/note"])
        .run();
    assert_eq!(out.clone().success().stdout_str(), "built\na note\n");
    let found = offenders(&root);
    assert!(
        found.is_empty(),
        "a fresh store is open to others:\n{}",
        found.join("\n")
    );

    // As an older kiln left it: every directory 0755, every file 0644.
    assert!(loosen(&root) > 20);
    assert!(!offenders(&root).is_empty());
    b.kiln(&["images"]).run().success();
    let found = offenders(&root);
    assert!(
        found.is_empty(),
        "not tightened on open:\n{}",
        found.join("\n")
    );
    // Image content kept its modes: the container's `/` and a layer's files are as built.
    let out = b
        .kiln(&[
            "run",
            "--rm",
            "--user",
            "65534",
            "app",
            "sh",
            "-c",
            "stat -c %a / /note /bin; cat /etc/hosts >/dev/null && echo read",
        ])
        .run();
    assert_eq!(
        out.clone().success().stdout_str(),
        "755\n755\n755\nread\n",
        "{out:?}"
    );

    // Builds (RUN, COPY, cache mounts) and runs still work in the tightened store.
    let ctx = b.context(&[
        ("Dockerfile", &format!("{APP}RUN echo again > /again\n")),
        ("note", "a note\n"),
    ]);
    b.build(ctx.path(), &["-t", "app2"]).ok();
    let out = b.kiln(&["run", "--rm", "app2", "cat", "/again"]).run();
    assert_eq!(out.success().stdout_str(), "again\n");
    let found = offenders(&root);
    assert!(
        found.is_empty(),
        "open after a build:\n{}",
        found.join("\n")
    );

    // Rootless: the store belongs to an unprivileged user, private to them, and still runs.
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&root)
        .status()
        .expect("chown");
    assert!(chown.success());
    let out = b
        .kiln(&["run", "--rm", "app2", "sh", "-c", "cat /again; id -u"])
        .command()
        .uid(65534)
        .gid(65534)
        .output()
        .expect("kiln");
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(0), "again\n0\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::metadata(&root).expect("root").mode() & 0o7777, 0o700);
    let found = offenders(&root);
    assert!(
        found.is_empty(),
        "open after a rootless run:\n{}",
        found.join("\n")
    );
}

#[test]
fn stale_partial_downloads_are_collected_by_prune_and_fresh_ones_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    let store = Store::open(&root).expect("store");
    let fresh = store.staging().partial_path("sha256-aa");
    let stale = store.staging().partial_path("sha256-bb");
    for path in [&fresh, &stale] {
        fs::write(path, b"kept bytes").expect("write");
    }
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    fs::File::options()
        .write(true)
        .open(&stale)
        .expect("open")
        .set_modified(two_days_ago)
        .expect("set mtime");
    kiln().root(&root).args(["prune", "-f"]).run().success();
    assert!(fresh.exists(), "a recent partial is kept for the next pull");
    assert!(
        !stale.exists(),
        "a partial untouched for two days is collected"
    );
}

/// What the loopback registry does with a blob request that asks for a `Range`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ranges {
    /// Answers `206 Partial Content` from the byte asked.
    Honour,
    /// Answers `200 OK` with the whole blob, as a registry without range support does.
    Ignore,
}

/// A registry of one image (`kiln/big:1`: a busybox layer with an 8 MiB file of noise), served
/// on loopback by this test: plain HTTP, one request per connection, every request logged as
/// `METHOD PATH [Range: R] -> STATUS`. Blobs are sent slowly while `slow` is set.
struct SlowRegistry {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    slow: Arc<AtomicBool>,
    layer: Digest,
    layer_size: u64,
    noise: Digest,
}

impl SlowRegistry {
    fn start(busybox: &Path, ranges: Ranges) -> SlowRegistry {
        let noise = noise(8 << 20);
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: &str, mode: u32, bytes: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(mode);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, bytes)
                .expect("tar entry");
        };
        add("bin/busybox", 0o755, &fs::read(busybox).expect("busybox"));
        add("noise", 0o644, &noise);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        tar.append_link(&mut header, "bin/sh", "busybox")
            .expect("symlink");
        let layer = tar.into_inner().expect("tar");
        let layer_digest = Digest::of(&layer);
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
        }))
        .expect("config");
        let config_digest = Digest::of(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest.to_string(),
                "size": layer.len(),
            }],
        }))
        .expect("manifest");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let slow = Arc::new(AtomicBool::new(true));
        let registry = SlowRegistry {
            port,
            log: log.clone(),
            slow: slow.clone(),
            layer: layer_digest.clone(),
            layer_size: layer.len() as u64,
            noise: Digest::of(&noise),
        };
        let blobs: Arc<Vec<(String, Vec<u8>)>> = Arc::new(vec![
            (format!("/v2/kiln/big/blobs/{config_digest}"), config),
            (format!("/v2/kiln/big/blobs/{layer_digest}"), layer),
        ]);
        let manifest = Arc::new(manifest);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, slow, blobs, manifest) =
                    (log.clone(), slow.clone(), blobs.clone(), manifest.clone());
                std::thread::spawn(move || {
                    serve(stream, &log, &slow, &blobs, &manifest, ranges);
                });
            }
        });
        registry
    }

    fn image(&self) -> String {
        format!("127.0.0.1:{}/kiln/big:1", self.port)
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// The log's requests for the layer blob.
    fn layer_requests(&self) -> Vec<String> {
        let layer = self.layer.to_string();
        self.log()
            .into_iter()
            .filter(|l| l.contains(&layer))
            .collect()
    }
}

/// `len` bytes of xorshift noise (incompressible, the same every run).
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn serve(
    stream: TcpStream,
    log: &Mutex<Vec<String>>,
    slow: &AtomicBool,
    blobs: &[(String, Vec<u8>)],
    manifest: &[u8],
    ranges: Ranges,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut words = line.split_whitespace();
    let (method, path) = (
        words.next().unwrap_or("").to_string(),
        words.next().unwrap_or("").to_string(),
    );
    let mut range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_string());
        }
    }
    let mut out = stream;
    let mut entry = format!("{method} {path}");
    if let Some(range) = &range {
        entry.push_str(&format!(" Range: {range}"));
    }
    let head = |status: &str, headers: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let (status, headers, body): (&str, String, &[u8]) = if path == "/v2/" {
        ("200 OK", String::new(), b"{}")
    } else if path == "/v2/kiln/big/manifests/1" {
        let headers = format!(
            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {}\r\n",
            Digest::of(manifest)
        );
        ("200 OK", headers, manifest)
    } else if let Some((_, blob)) = blobs.iter().find(|(p, _)| *p == path) {
        let from = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|_| ranges == Ranges::Honour);
        match from {
            Some(from) if from < blob.len() => (
                "206 Partial Content",
                format!(
                    "Content-Range: bytes {from}-{}/{}\r\n",
                    blob.len() - 1,
                    blob.len()
                ),
                &blob[from..],
            ),
            _ => ("200 OK", String::new(), blob.as_slice()),
        }
    } else {
        ("404 Not Found", String::new(), b"{}")
    };
    log.lock()
        .expect("log")
        .push(format!("{entry} -> {}", &status[..3]));
    let body = if method == "HEAD" { &[][..] } else { body };
    if out
        .write_all(head(status, &headers, body.len()).as_bytes())
        .is_err()
    {
        return;
    }
    for chunk in body.chunks(64 << 10) {
        if out.write_all(chunk).is_err() {
            return;
        }
        if slow.load(Ordering::SeqCst) && body.len() > 1 << 20 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `kiln pull` of the registry's image into `root`, waits until the layer's partial
/// download holds at least 1 MiB, SIGKILLs kiln, and returns the partial's path and size.
fn kill_a_pull_midway(root: &Path, registry: &SlowRegistry) -> (PathBuf, u64) {
    let partial = root
        .join("tmp")
        .join(format!("sha256-{}.partial", registry.layer.hex()));
    let mut child = kiln()
        .root(root)
        .args(["pull", "-q", &registry.image()])
        .spawn();
    let started = Instant::now();
    loop {
        let len = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if len >= 1 << 20 {
            break;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .ok();
            panic!("kiln pull ended before it was killed ({status}): {err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no partial download at {} after a minute",
            partial.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let kept = fs::metadata(&partial)
        .expect("the partial outlives the kill")
        .len();
    assert!(kept > 0 && kept < registry.layer_size, "{kept}");
    (partial, kept)
}

/// The pulled image is whole: every blob hashes to its name, the layer's file is the one served,
/// and it runs.
fn assert_pulled_whole(root: &Path, registry: &SlowRegistry) {
    let store = Store::open(root).expect("store");
    let image = store.resolve(&registry.image()).expect("the pulled image");
    for blob in store.blobs().list().expect("blobs") {
        let mut reader = store
            .blobs()
            .reader(&blob.digest, Some(blob.size))
            .expect("blob");
        std::io::copy(&mut reader, &mut std::io::sink())
            .unwrap_or_else(|e| panic!("blob {} does not verify: {e}", blob.digest));
    }
    assert_eq!(image.layers[0].digest, registry.layer);
    let out = kiln()
        .root(root)
        .args([
            "run",
            "--rm",
            &registry.image(),
            "/bin/busybox",
            "sha256sum",
            "/noise",
        ])
        .run()
        .success()
        .stdout_str();
    assert!(out.starts_with(registry.noise.hex()), "{out}");
    let leftovers: Vec<_> = fs::read_dir(root.join("tmp"))
        .expect("tmp")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(leftovers.is_empty(), "left in tmp: {leftovers:?}");
}

#[test]
fn a_killed_pull_resumes_with_a_range_request() {
    let Some(busybox) = support::root().and_then(|()| support::busybox()) else {
        return;
    };
    let registry = SlowRegistry::start(&busybox, Ranges::Honour);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    let (_, kept) = kill_a_pull_midway(&root, &registry);
    // The config (small, done long before the kill) is in the store already, verified: the
    // second pull must not fetch it again.
    let stored: Vec<String> = fs::read_dir(root.join("blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_ne!(stored[0], registry.layer.hex());
    registry.slow.store(false, Ordering::SeqCst);
    let before = registry.log().len();
    kiln()
        .root(&root)
        .args(["pull", "-q", &registry.image()])
        .run()
        .success();
    let second: Vec<String> = registry.log()[before..].to_vec();
    let layer = registry.layer_requests();
    let resumed = format!("Range: bytes={kept}- -> 206");
    assert!(
        second
            .iter()
            .any(|l| l.contains(&registry.layer.to_string()) && l.ends_with(&resumed)),
        "the second pull did not resume at byte {kept}:\n{}",
        layer.join("\n")
    );
    assert!(
        !second
            .iter()
            .any(|l| l.contains("blobs/") && !l.contains(&registry.layer.to_string())),
        "the second pull fetched a blob the store had:\n{}",
        second.join("\n")
    );
    assert_pulled_whole(&root, &registry);
}

#[test]
fn a_killed_pull_completes_from_a_registry_that_ignores_ranges_and_a_corrupt_partial_is_refetched()
{
    let Some(busybox) = support::root().and_then(|()| support::busybox()) else {
        return;
    };
    // A registry without range support: the resumed request gets the whole blob (200).
    let registry = SlowRegistry::start(&busybox, Ranges::Ignore);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    let (_, kept) = kill_a_pull_midway(&root, &registry);
    registry.slow.store(false, Ordering::SeqCst);
    kiln()
        .root(&root)
        .args(["pull", "-q", &registry.image()])
        .run()
        .success();
    let layer = registry.layer_requests();
    assert!(
        layer
            .iter()
            .any(|l| l.ends_with(&format!("Range: bytes={kept}- -> 200"))),
        "{}",
        layer.join("\n")
    );
    assert_pulled_whole(&root, &registry);

    // A partial whose bytes are not the blob's (a power loss, a changed blob): the whole blob
    // fails its digest, the partial is dropped and the blob fetched once more from 0.
    let honouring = SlowRegistry::start(&busybox, Ranges::Honour);
    let other = dir.path().join("other");
    let (partial, kept) = kill_a_pull_midway(&other, &honouring);
    let mut bytes = fs::read(&partial).expect("partial");
    bytes[1000] ^= 0xff;
    fs::write(&partial, &bytes).expect("corrupt the partial");
    honouring.slow.store(false, Ordering::SeqCst);
    let before = honouring.log().len();
    kiln()
        .root(&other)
        .args(["pull", "-q", &honouring.image()])
        .run()
        .success();
    let second: Vec<String> = honouring.log()[before..]
        .iter()
        .filter(|l| l.contains(&honouring.layer.to_string()))
        .cloned()
        .collect();
    assert_eq!(second.len(), 2, "{second:#?}");
    assert!(
        second[0].ends_with(&format!("Range: bytes={kept}- -> 206")),
        "{second:#?}"
    );
    assert!(
        second[1].ends_with(" -> 200") && !second[1].contains("Range"),
        "{second:#?}"
    );
    assert_pulled_whole(&other, &honouring);
}
