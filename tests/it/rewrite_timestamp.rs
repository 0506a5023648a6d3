//! `rewrite-timestamp=true` with `SOURCE_DATE_EPOCH`: the layers a build makes get every file
//! time later than the epoch set to it, so two builds of one context at different times, on
//! different stores, give the same image digest (and without the option they do not); earlier
//! times stay. Against the peer BuildKit (v0.32 `buildctl`, `--output
//! type=oci,rewrite-timestamp=true`), the new layers' entries carry the same mtimes.

use crate::support::{self, kiln};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

const EPOCH: i64 = 1_700_000_000;
/// Before [`EPOCH`]: a file with this mtime keeps it.
const OLD: i64 = 1_000_000_000;

const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
COPY old.txt data.txt /files/
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /out && echo made > /out/f && /bin/busybox ln -s f /out/link"]
"#;

fn set_mtime(path: &Path, seconds: i64) {
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap());
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(when))
        .expect("set mtime");
}

/// A context for [`DOCKERFILE`]: busybox, `old.txt` (mtime [`OLD`]) and `data.txt` (now).
fn reproducible_context(busybox: &Path) -> tempfile::TempDir {
    let ctx = support::context(&[
        ("Dockerfile", DOCKERFILE),
        ("old.txt", "old\n"),
        ("data.txt", "data\n"),
    ]);
    fs::copy(busybox, ctx.path().join("busybox")).expect("copy busybox");
    set_mtime(&ctx.path().join("old.txt"), OLD);
    ctx
}

/// Builds the context in a new store under `dir` (named `name`); returns the manifest digest.
fn build(dir: &Path, name: &str, context: &Path, rewrite: bool) -> String {
    let root = dir.join(name);
    let metadata = dir.join(format!("{name}.json"));
    let mut args = vec![
        "build".to_string(),
        "--build-arg".to_string(),
        format!("SOURCE_DATE_EPOCH={EPOCH}"),
        "--metadata-file".to_string(),
        metadata.display().to_string(),
    ];
    if rewrite {
        args.push("-o".to_string());
        args.push("type=image,name=repro,rewrite-timestamp=true".to_string());
    }
    args.push(context.display().to_string());
    kiln().root(&root).args(&args).run().success();
    let metadata: serde_json::Value =
        serde_json::from_slice(&fs::read(&metadata).expect("metadata")).expect("JSON");
    metadata["containerimage.digest"]
        .as_str()
        .expect("digest")
        .to_string()
}

/// Waits past the next whole second and gives `data.txt` and busybox new times, so the next
/// build sees other times than the last.
fn let_time_pass(context: &Path) {
    std::thread::sleep(Duration::from_millis(1100));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    for file in ["data.txt", "busybox"] {
        set_mtime(&context.join(file), i64::try_from(now).expect("time"));
    }
}

#[test]
fn two_builds_at_different_times_on_different_stores_give_one_image() {
    let Some(()) = support::root() else { return };
    let Some(busybox) = support::busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let ctx = reproducible_context(&busybox);

    let first = build(dir.path(), "a", ctx.path(), true);
    let_time_pass(ctx.path());
    let second = build(dir.path(), "b", ctx.path(), true);
    assert_eq!(first, second, "rewritten builds differ");
    // A cached rebuild on the same store gives it again.
    assert_eq!(build(dir.path(), "b", ctx.path(), true), first);

    // The control: without the option, the times differ, and so do the images.
    let plain_first = build(dir.path(), "c", ctx.path(), false);
    let_time_pass(ctx.path());
    let plain_second = build(dir.path(), "d", ctx.path(), false);
    assert_ne!(plain_first, plain_second, "the control builds are the same");
    assert_ne!(plain_first, first);

    // Later times became the epoch; the earlier one stayed.
    let stat = |path: &str| {
        kiln()
            .root(dir.path().join("a"))
            .args([
                "run",
                "--rm",
                "--entrypoint",
                "/bin/busybox",
                "repro",
                "stat",
                "-c",
                "%Y",
                path,
            ])
            .run()
            .success()
            .stdout_str()
            .trim()
            .to_string()
    };
    for path in ["/out/f", "/out", "/files/data.txt", "/bin/busybox"] {
        assert_eq!(stat(path), EPOCH.to_string(), "{path}");
    }
    assert_eq!(stat("/files/old.txt"), OLD.to_string());
}

/// `path → mtime` of the entries of every layer of the image in the OCI layout tar `archive`
/// (later layers win).
fn layer_mtimes(archive: &Path) -> BTreeMap<String, u64> {
    let dir = tempfile::tempdir().expect("temp dir");
    tar::Archive::new(fs::File::open(archive).expect("open"))
        .unpack(dir.path())
        .expect("unpack");
    let blob = |digest: &str| {
        dir.path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let read_json = |digest: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(blob(digest)).expect("blob")).expect("JSON")
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("index.json")).expect("index"))
            .expect("JSON");
    let mut manifest = read_json(index["manifests"][0]["digest"].as_str().expect("digest"));
    if manifest.get("manifests").is_some() {
        manifest = read_json(manifest["manifests"][0]["digest"].as_str().expect("digest"));
    }
    let mut mtimes = BTreeMap::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let digest = layer["digest"].as_str().expect("digest");
        let bytes = fs::read(blob(digest)).expect("layer");
        let plain = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(bytes.as_slice()),
                &mut out,
            )
            .expect("gunzip");
            out
        } else {
            bytes
        };
        for entry in tar::Archive::new(plain.as_slice())
            .entries()
            .expect("entries")
        {
            let entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let path = path.trim_end_matches('/').to_string();
            mtimes.insert(path, entry.header().mtime().expect("mtime"));
        }
    }
    mtimes
}

#[test]
fn the_rewritten_times_are_buildkits() {
    let Some(()) = support::root() else { return };
    let Some(busybox) = support::busybox() else {
        return;
    };
    let Some(peer) = support::peer_buildctl() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let ctx = reproducible_context(&busybox);
    let (peer_out, kiln_out) = (dir.path().join("peer.tar"), dir.path().join("kiln.tar"));
    let context = ctx.path().display().to_string();
    let out = peer
        .command()
        .args([
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            &format!("context={context}"),
            "--local",
            &format!("dockerfile={context}"),
            "--opt",
            &format!("build-arg:SOURCE_DATE_EPOCH={EPOCH}"),
            "--output",
            &format!(
                "type=oci,dest={},rewrite-timestamp=true",
                peer_out.display()
            ),
        ])
        .output()
        .expect("buildctl");
    assert!(
        out.status.success(),
        "buildctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    kiln()
        .root(dir.path().join("store"))
        .args([
            "build",
            "--build-arg",
            &format!("SOURCE_DATE_EPOCH={EPOCH}"),
            "-o",
            &format!(
                "type=oci,dest={},rewrite-timestamp=true",
                kiln_out.display()
            ),
            &context,
        ])
        .run()
        .success();
    let (theirs, ours) = (layer_mtimes(&peer_out), layer_mtimes(&kiln_out));
    assert_eq!(ours, theirs);
    assert_eq!(ours.get("files/old.txt"), Some(&(OLD as u64)));
    assert_eq!(ours.get("out/f"), Some(&(EPOCH as u64)));
}

#[test]
fn a_tar_export_gives_every_file_the_epoch() {
    let Some(builder) = crate::build::builder() else {
        return;
    };
    let ctx = builder.context(&[
        (
            "Dockerfile",
            "FROM base\nRUN mkdir -p /made/sub && echo x > /made/sub/f && ln -s /made /link\n",
        ),
        ("a.txt", "a"),
    ]);
    let out = tempfile::tempdir().expect("temp dir");
    let entries = |epoch: Option<&str>| {
        let tar = out.path().join(format!("{}.tar", epoch.unwrap_or("none")));
        let dest = format!("type=tar,dest={}", tar.display());
        let mut args = vec!["-o", dest.as_str()];
        let arg;
        if let Some(epoch) = epoch {
            arg = format!("SOURCE_DATE_EPOCH={epoch}");
            args.extend(["--build-arg", arg.as_str()]);
        }
        builder.build(ctx.path(), &args).ok();
        let mut archive = tar::Archive::new(fs::File::open(&tar).expect("open the tar"));
        archive
            .entries()
            .expect("entries")
            .map(|entry| {
                let entry = entry.expect("entry");
                let path = entry.path().expect("path").display().to_string();
                (path, entry.header().mtime().expect("mtime"))
            })
            .collect::<BTreeMap<String, u64>>()
    };
    let with = entries(Some("1234567"));
    assert!(with.len() > 10, "{with:?}");
    for path in ["made/sub/f", "link", "bin/busybox"] {
        assert!(
            with.keys().any(|p| p.trim_end_matches('/').ends_with(path)),
            "{path} in {with:?}"
        );
    }
    let other: Vec<_> = with.iter().filter(|(_, t)| **t != 1_234_567).collect();
    assert!(other.is_empty(), "entries not at the epoch: {other:?}");
    // Without SOURCE_DATE_EPOCH the files keep their own times.
    let without = entries(None);
    assert!(without.values().any(|t| *t != 1_234_567), "{without:?}");
}
