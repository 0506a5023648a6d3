//! The shared build cache between two kiln stores standing for two machines (`--root A`,
//! `--root B`), through a `type=local` cache directory: machine B rebuilds machine A's
//! Dockerfile from a copy of the context (other directory, other mtimes, other owner) with every
//! step cached and the same image digest, without downloading layers it does not need; what a
//! context edit fetches; `mode=min` against `mode=max`; concurrent exports; a tampered blob; a
//! damaged or newer graph.
//!
//! Everything is built `FROM scratch` (busybox copied in), so both stores start empty.

use crate::support;
use crate::support::{Kiln, Output, kiln};
use kiln::builder::{BuildEvent, BuildOptions, Progress, build};
use kiln::cache::remote::transport::{CacheTransport, TransportError};
use kiln::cache::remote::{CacheExport, ExportMode};
use kiln::oci::Digest;
use kiln::solver::Cancel;
use kiln::store::Store;
use kiln::store::{BlobRef, BlobStore};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const DOCKERFILE: &str = r#"FROM scratch AS tools
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
RUN mkdir -p /etc /tmp && echo tools > /tools.txt

FROM tools AS gen
RUN echo generated > /gen.txt

FROM tools
COPY --from=gen /gen.txt /copied.txt
COPY a.txt /a.txt
ENV GREETING=hello
RUN cat /a.txt /copied.txt > /both.txt
CMD ["sh"]
"#;

/// The instructions of every step of the default target, in step order.
pub(crate) const STEPS: [&str; 8] = [
    "FROM scratch",
    "COPY busybox /bin/busybox",
    "RUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]",
    "RUN mkdir -p /etc /tmp && echo tools > /tools.txt",
    GEN_STEP,
    "COPY --from=gen /gen.txt /copied.txt",
    "COPY a.txt /a.txt",
    "RUN cat /a.txt /copied.txt > /both.txt",
];

/// The step of the intermediate stage `gen`.
const GEN_STEP: &str = "RUN echo generated > /gen.txt";

/// One machine: a store of its own.
pub(crate) struct Machine {
    root: tempfile::TempDir,
}

/// What a `--progress json` build reported.
pub(crate) struct Built {
    pub(crate) out: Output,
    /// The image's manifest digest, from `--metadata-file`.
    digest: Option<String>,
    names: Vec<String>,
    started: BTreeSet<usize>,
    cached: BTreeSet<usize>,
    events: Vec<Value>,
}

impl Built {
    /// Asserts the build succeeded; returns the image's manifest digest.
    pub(crate) fn ok(&self) -> String {
        assert_eq!(
            self.out.status.code(),
            Some(0),
            "build failed:\n{}",
            self.out.stderr_str()
        );
        self.digest
            .clone()
            .expect("--metadata-file names the image digest")
    }

    fn instructions(&self, ids: &BTreeSet<usize>) -> Vec<&str> {
        ids.iter()
            .filter_map(|&id| self.names.get(id))
            .map(|name| {
                name.split_once("] ")
                    .map_or(name.as_str(), |(_, rest)| rest)
            })
            .collect()
    }

    pub(crate) fn ran(&self) -> Vec<&str> {
        self.instructions(&self.started)
    }

    pub(crate) fn hits(&self) -> Vec<&str> {
        self.instructions(&self.cached)
    }

    /// The events of kind `kind`.
    pub(crate) fn events(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }
}

impl Machine {
    pub(crate) fn new() -> Machine {
        Machine {
            root: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }

    pub(crate) fn kiln(&self, args: &[&str]) -> Kiln {
        kiln().root(self.root()).args(args)
    }

    /// `kiln build --progress json ARGS CONTEXT`.
    pub(crate) fn build(&self, context: &Path, args: &[&str]) -> Built {
        let context = context.display().to_string();
        let metadata = tempfile::NamedTempFile::new().expect("temp file");
        let metadata_path = metadata.path().display().to_string();
        let mut all = vec![
            "build",
            "--progress",
            "json",
            "--metadata-file",
            &metadata_path,
        ];
        all.extend(args);
        all.push(&context);
        let out = self.kiln(&all).run();
        let digest = fs::read(metadata.path())
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|m| m["containerimage.digest"].as_str().map(str::to_string));
        let mut built = Built {
            digest,
            names: Vec::new(),
            started: BTreeSet::new(),
            cached: BTreeSet::new(),
            events: Vec::new(),
            out,
        };
        for line in built
            .out
            .stderr_str()
            .lines()
            .filter(|l| l.starts_with('{'))
        {
            let event: Value = serde_json::from_str(line).expect("a JSON event per line");
            let step = event["step"].as_u64().and_then(|s| usize::try_from(s).ok());
            match (event["event"].as_str(), step) {
                (Some("planned"), _) => {
                    for step in event["steps"].as_array().expect("steps") {
                        built
                            .names
                            .push(step["name"].as_str().expect("name").to_string());
                    }
                }
                (Some("started"), Some(step)) => {
                    built.started.insert(step);
                }
                (Some("cached"), Some(step)) => {
                    built.cached.insert(step);
                }
                _ => {}
            }
            built.events.push(event);
        }
        built
    }

    /// The layer blob digests (`sha256:...`, base first) of the image whose manifest is
    /// `digest`.
    pub(crate) fn layers(&self, digest: &str) -> Vec<String> {
        let hex = digest.trim_start_matches("sha256:");
        let manifest: Value = serde_json::from_slice(
            &fs::read(self.root().join("blobs/sha256").join(hex)).expect("manifest blob"),
        )
        .expect("manifest JSON");
        manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().expect("digest").to_string())
            .collect()
    }

    /// The blobs the store knows the origin of (`sha256:...`).
    pub(crate) fn origins(&self) -> BTreeSet<String> {
        blobs_in(&self.root().join("origins/sha256"))
    }

    /// The blobs the store holds (`sha256:...`).
    pub(crate) fn blobs(&self) -> BTreeSet<String> {
        blobs_in(&self.root().join("blobs/sha256"))
    }
}

fn blobs_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

/// A build context with `a.txt` holding `a` and a copy of busybox. With `elsewhere`, every
/// file gets another modification time and owner, as a checkout on another machine would.
pub(crate) fn context(busybox: &Path, a: &str, elsewhere: bool) -> tempfile::TempDir {
    let dir = support::context(&[("Dockerfile", DOCKERFILE), ("a.txt", a)]);
    fs::copy(busybox, dir.path().join("busybox")).expect("copy busybox");
    if elsewhere {
        let then = SystemTime::now() - Duration::from_secs(86_400 * 400);
        for name in ["Dockerfile", "a.txt", "busybox"] {
            let path = dir.path().join(name);
            let file = fs::File::options().write(true).open(&path).expect("open");
            file.set_modified(then).expect("set mtime");
            std::os::unix::fs::chown(&path, Some(1234), Some(4321)).expect("chown");
        }
    }
    dir
}

/// Root and busybox, or `None` after a skip notice.
pub(crate) fn requirements() -> Option<PathBuf> {
    support::root()?;
    support::busybox()
}

/// Machine A builds the Dockerfile tagged `app` with `cache_to` (its layers uncompressed: a
/// build from a gzip cache, the default, makes an image with the cache's gzip layers, the same
/// image ID but another manifest than A's uncompressed one; these tests compare manifests);
/// returns it, its context and the image's manifest digest.
pub(crate) fn machine_a(busybox: &Path, cache_to: &[&str]) -> (Machine, tempfile::TempDir, String) {
    let a = Machine::new();
    let ctx = context(busybox, "a\n", false);
    let mut args = vec!["-t", "app"];
    let specs: Vec<String> = cache_to
        .iter()
        .map(|spec| match spec.contains("compression=") {
            true => spec.to_string(),
            false => format!("{spec},compression=uncompressed"),
        })
        .collect();
    for spec in &specs {
        args.extend(["--cache-to", spec.as_str()]);
    }
    let built = a.build(ctx.path(), &args);
    let digest = built.ok();
    assert_eq!(built.ran(), &STEPS[1..], "{}", built.out.stderr_str());
    (a, ctx, digest)
}

#[test]
fn a_second_machine_rebuilds_from_the_cache_with_the_same_digest_and_no_layers() {
    let Some(busybox) = requirements() else {
        return;
    };
    let cache = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", cache.path().display());
    let (a, _ctx, a_digest) = machine_a(&busybox, &[&dest]);
    assert!(cache.path().join("oci-layout").is_file());
    assert!(cache.path().join("index.json").is_file());

    let b = Machine::new();
    let ctx = context(&busybox, "a\n", true);
    let src = format!("type=local,src={}", cache.path().display());
    let built = b.build(ctx.path(), &["-t", "app", "--cache-from", &src]);
    let b_digest = built.ok();
    assert_eq!(
        built.ran(),
        Vec::<&str>::new(),
        "{}",
        built.out.stderr_str()
    );
    // mode=min has no record of the `gen` stage, which the cached COPY --from does not need.
    let without_gen: Vec<&str> = STEPS.iter().copied().filter(|s| *s != GEN_STEP).collect();
    assert_eq!(built.hits(), without_gen);
    let imported = built.events("cache_imported");
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0]["warning"], Value::Null);
    assert!(
        imported[0]["records"].as_u64() >= Some(6),
        "{:?}",
        imported[0]
    );
    assert_eq!(b_digest, a_digest, "the same image on both machines");

    let layers = a.layers(&a_digest);
    assert_eq!(layers.len(), 6);
    let held = b.blobs();
    let fetched: Vec<&String> = layers.iter().filter(|l| held.contains(*l)).collect();
    assert!(
        fetched.is_empty(),
        "B fetched layers it did not need: {fetched:?}"
    );

    // The store knows where each absent layer is; a prune keeps that while the image is tagged.
    assert_eq!(b.origins(), layers.iter().cloned().collect::<BTreeSet<_>>());
    b.kiln(&["prune", "--force"]).run().success();
    assert_eq!(b.origins().len(), layers.len());

    // Running the image needs its layers: they are fetched (and verified) now.
    let out = b
        .kiln(&["run", "--rm", "app", "cat", "/both.txt", "/tools.txt"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(out, "a\ngenerated\ntools\n");
    let held = b.blobs();
    assert!(layers.iter().all(|l| held.contains(l)), "{held:?}");
    assert!(b.origins().is_empty(), "a fetched layer needs no origin");

    // `-o` and save read the blobs too; B's image stays the same image.
    let archive = b.root().join("app.tar");
    b.kiln(&["save", "-o", &archive.display().to_string(), "app"])
        .run()
        .success();
    assert!(archive.is_file());
}

#[test]
fn removing_a_lazily_written_image_forgets_its_origins() {
    let Some(busybox) = requirements() else {
        return;
    };
    let cache = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", cache.path().display());
    machine_a(&busybox, &[&dest]);
    let b = Machine::new();
    let ctx = context(&busybox, "a\n", true);
    let src = format!("type=local,src={}", cache.path().display());
    b.build(ctx.path(), &["-t", "app", "--cache-from", &src])
        .ok();
    assert_eq!(b.origins().len(), 6);
    b.kiln(&["rmi", "app"]).run().success();
    assert!(b.origins().is_empty(), "{:?}", b.origins());
    // An untagged image goes with a prune, and its layers' origins with it.
    b.build(ctx.path(), &["--cache-from", &src]).ok();
    assert_eq!(b.origins().len(), 6);
    b.kiln(&["prune", "--force"]).run().success();
    assert!(b.origins().is_empty(), "{:?}", b.origins());
}

#[test]
fn source_date_epoch_sets_every_created_time() {
    let Some(busybox) = requirements() else {
        return;
    };
    let machine = Machine::new();
    let ctx = context(&busybox, "a\n", false);
    let built = machine.build(
        ctx.path(),
        &["-t", "app", "--build-arg", "SOURCE_DATE_EPOCH=1234"],
    );
    built.ok();
    let out = machine
        .kiln(&["inspect", "app"])
        .run()
        .success()
        .stdout_str();
    let inspect: Vec<Value> = serde_json::from_str(&out).expect("inspect JSON");
    assert_eq!(inspect[0]["Created"], "1970-01-01T00:20:34Z");
    let id = inspect[0]["Id"]
        .as_str()
        .expect("Id")
        .trim_start_matches("sha256:");
    let config: Value = serde_json::from_slice(
        &fs::read(machine.root().join("blobs/sha256").join(id)).expect("config blob"),
    )
    .expect("config JSON");
    let times: Vec<&Value> = config["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|entry| &entry["created"])
        .collect();
    assert_eq!(times.len(), 8, "{config}");
    assert!(
        times.iter().all(|t| *t == "1970-01-01T00:20:34Z"),
        "{times:?}"
    );
    let out = machine
        .kiln(&[
            "build",
            "--build-arg",
            "SOURCE_DATE_EPOCH=yesterday",
            &ctx.path().display().to_string(),
        ])
        .run()
        .failure()
        .stderr_str();
    assert!(
        out.contains("invalid SOURCE_DATE_EPOCH \"yesterday\""),
        "{out}"
    );
}

#[test]
fn an_edited_context_file_reruns_its_copy_and_fetches_only_the_parent_layers() {
    let Some(busybox) = requirements() else {
        return;
    };
    let cache = tempfile::tempdir().expect("temp dir");
    edited_context_file_fetches_only_parent_layers(
        &busybox,
        &format!("type=local,dest={},mode=max", cache.path().display()),
        &format!("type=local,src={}", cache.path().display()),
    );
}

/// Machine A exports with `cache_to` (mode=max); machine B, whose context differs in one file,
/// builds with `cache_from`: only the COPY of that file and what follows run, the layers that
/// COPY builds on are fetched and the other stage's layer is not. Shared by the cache's
/// transports (a directory here, a registry in `shared_cache_registry`).
pub(crate) fn edited_context_file_fetches_only_parent_layers(
    busybox: &Path,
    cache_to: &str,
    cache_from: &str,
) {
    let (a, ctx_a, a_digest) = machine_a(busybox, &[cache_to]);
    let gen_digest = a.build(ctx_a.path(), &["--target", "gen"]).ok();
    let gen_layer = a
        .layers(&gen_digest)
        .last()
        .cloned()
        .expect("gen has layers");

    let b = Machine::new();
    let ctx = context(busybox, "edited\n", true);
    let built = b.build(ctx.path(), &["-t", "app", "--cache-from", cache_from]);
    built.ok();
    assert_eq!(
        built.ran(),
        &STEPS[6..],
        "only the COPY of the edited file and what follows run:\n{}",
        built.out.stderr_str()
    );
    let held = b.blobs();
    let a_layers = a.layers(&a_digest);
    // The COPY needed its parent's filesystem: the tools layers and the COPY --from layer.
    for parent in &a_layers[..4] {
        assert!(
            held.contains(parent),
            "parent layer {parent} was not fetched"
        );
    }
    assert!(
        !held.contains(&gen_layer),
        "the gen stage's layer was fetched, though nothing read it"
    );
    let out = b
        .kiln(&["run", "--rm", "app", "cat", "/both.txt"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(out, "edited\ngenerated\n");
}

#[test]
fn mode_min_exports_the_target_chain_and_mode_max_every_stage() {
    let Some(busybox) = requirements() else {
        return;
    };
    let min = tempfile::tempdir().expect("temp dir");
    let max = tempfile::tempdir().expect("temp dir");
    let to_min = format!("type=local,dest={}", min.path().display());
    let to_max = format!("type=local,dest={},mode=max", max.path().display());
    machine_a(&busybox, &[&to_min, &to_max]);
    let cases = [(&min, true), (&max, false)];
    for (cache, gen_runs) in cases {
        let b = Machine::new();
        let ctx = context(&busybox, "a\n", true);
        let src = format!("type=local,src={}", cache.path().display());
        let built = b.build(ctx.path(), &["--target", "gen", "--cache-from", &src]);
        built.ok();
        let expected: Vec<&str> = if gen_runs { vec![GEN_STEP] } else { vec![] };
        assert_eq!(
            built.ran(),
            expected,
            "cache {}:\n{}",
            cache.path().display(),
            built.out.stderr_str()
        );
        assert!(built.hits().contains(&STEPS[3]));
    }
}

/// Two machines build the same context at once, both exporting to `cache_to`; both succeed.
/// Shared by the cache's transports (a directory here, a registry in `shared_cache_registry`).
pub(crate) fn export_concurrently(busybox: &Path, cache_to: &str) {
    let builders = [Machine::new(), Machine::new()];
    let contexts = [
        context(busybox, "a\n", false),
        context(busybox, "a\n", false),
    ];
    let outcomes: Vec<Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = builders
            .iter()
            .zip(&contexts)
            .map(|(machine, ctx)| {
                scope.spawn(move || machine.build(ctx.path(), &["--cache-to", cache_to]).out)
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("builder thread"))
            .collect()
    });
    for out in &outcomes {
        assert_eq!(
            out.status.code(),
            Some(0),
            "export failed:\n{}",
            out.stderr_str()
        );
    }
}

#[test]
fn concurrent_exports_to_one_directory_both_succeed_and_import_cleanly() {
    let Some(busybox) = requirements() else {
        return;
    };
    let cache = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={},mode=max", cache.path().display());
    export_concurrently(&busybox, &dest);
    let index: Value =
        serde_json::from_slice(&fs::read(cache.path().join("index.json")).expect("index.json"))
            .expect("index JSON");
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    // Every blob is whole: its content is its name.
    let blob_dir = cache.path().join("blobs/sha256");
    for blob in blobs_in(&blob_dir) {
        let hex = blob.trim_start_matches("sha256:");
        let bytes = fs::read(blob_dir.join(hex)).expect("blob");
        assert_eq!(sha256_hex(&bytes), hex, "blob {blob} is damaged");
    }
    let b = Machine::new();
    let ctx = context(&busybox, "a\n", true);
    let src = format!("type=local,src={}", cache.path().display());
    let built = b.build(ctx.path(), &["--cache-from", &src]);
    built.ok();
    assert_eq!(
        built.ran(),
        Vec::<&str>::new(),
        "{}",
        built.out.stderr_str()
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_tampered_blob_is_a_clear_error_and_never_enters_the_store() {
    let Some(busybox) = requirements() else {
        return;
    };
    let cache = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", cache.path().display());
    let (a, _ctx, a_digest) = machine_a(&busybox, &[&dest]);
    let first = a.layers(&a_digest).first().cloned().expect("a layer");
    let path = cache
        .path()
        .join("blobs/sha256")
        .join(first.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&path).expect("blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, bytes).expect("tamper");
    let src = format!("type=local,src={}", cache.path().display());

    // A step that misses needs the tampered layer under it.
    let b = Machine::new();
    let ctx = context(&busybox, "edited\n", true);
    let built = b.build(ctx.path(), &["--cache-from", &src]);
    assert_eq!(
        built.out.status.code(),
        Some(1),
        "{}",
        built.out.stderr_str()
    );
    assert!(
        built
            .out
            .stderr_str()
            .contains("corrupt or was tampered with"),
        "{}",
        built.out.stderr_str()
    );
    assert!(!b.blobs().contains(&first));

    // A fully cached build writes its image lazily; running it needs the layer.
    let b = Machine::new();
    let ctx = context(&busybox, "a\n", true);
    b.build(ctx.path(), &["-t", "app", "--cache-from", &src])
        .ok();
    let err = b
        .kiln(&["run", "--rm", "app", "true"])
        .run()
        .failure()
        .stderr_str();
    assert!(err.contains("corrupt or was tampered with"), "{err}");
    assert!(err.contains(&first), "{err}");
    assert!(!b.blobs().contains(&first));
}

/// Replaces the graph of the local cache in `dir` with `graph` (a new manifest naming it).
fn replace_graph(dir: &Path, graph: &[u8]) {
    let blob_dir = dir.join("blobs/sha256");
    let graph_hex = sha256_hex(graph);
    fs::write(blob_dir.join(&graph_hex), graph).expect("write graph");
    let index_path = dir.join("index.json");
    let mut index: Value =
        serde_json::from_slice(&fs::read(&index_path).expect("index")).expect("index JSON");
    let old = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .trim_start_matches("sha256:")
        .to_string();
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(blob_dir.join(old)).expect("manifest")).expect("JSON");
    manifest["config"]["digest"] = format!("sha256:{graph_hex}").into();
    manifest["config"]["size"] = graph.len().into();
    let bytes = serde_json::to_vec(&manifest).expect("manifest bytes");
    let hex = sha256_hex(&bytes);
    fs::write(blob_dir.join(&hex), &bytes).expect("write manifest");
    index["manifests"][0]["digest"] = format!("sha256:{hex}").into();
    index["manifests"][0]["size"] = bytes.len().into();
    fs::write(&index_path, serde_json::to_vec(&index).expect("index")).expect("write index");
}

#[test]
fn a_damaged_or_newer_graph_is_no_cache_and_a_warning() {
    let Some(busybox) = requirements() else {
        return;
    };
    let cache = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", cache.path().display());
    machine_a(&busybox, &[&dest]);
    let src = format!("type=local,src={}", cache.path().display());
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "newer version",
            br#"{"version":99,"records":{}}"#,
            "version 99",
        ),
        ("not JSON", b"\x00garbage", "the cache graph is not valid"),
        (
            "a bad record",
            br#"{"version":1,"records":{"sha256:nope":{}}}"#,
            "cache record sha256:nope",
        ),
    ];
    let mut failures = Vec::new();
    for (name, graph, warning) in cases {
        replace_graph(cache.path(), graph);
        let b = Machine::new();
        let ctx = context(&busybox, "a\n", true);
        let built = b.build(ctx.path(), &["--cache-from", &src]);
        built.ok();
        if built.ran() != STEPS[1..] {
            failures.push(format!("{name}: ran {:?}", built.ran()));
        }
        let imported = built.events("cache_imported");
        let said = imported
            .first()
            .and_then(|e| e["warning"].as_str())
            .unwrap_or_default()
            .to_string();
        if !said.contains(warning) || !said.contains("building without it") {
            failures.push(format!("{name}: warning {said:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(cases.len(), 3);
}

#[test]
fn bad_cache_options_are_refused_before_building() {
    let cases = [
        (
            vec!["--cache-to", "type=s3,dest=x"],
            "unknown type \"s3\"; valid types are registry, local",
        ),
        (
            vec!["--cache-from", "type=local,dest=x"],
            "unknown key \"dest\"; valid keys are type, ref, src, tag",
        ),
        (
            vec!["--cache-to", "type=local,dest=x,mode=all"],
            "unknown mode \"all\"",
        ),
        (
            vec!["--cache-to", "type=registry,mode=max"],
            "type=registry needs ref=HOST/REPOSITORY:TAG",
        ),
    ];
    let machine = Machine::new();
    let ctx = support::context(&[("Dockerfile", "FROM scratch\n")]);
    let mut failures = Vec::new();
    for (args, expected) in &cases {
        let mut all = vec!["build"];
        all.extend(args.iter().copied());
        let context = ctx.path().display().to_string();
        all.push(&context);
        let err = machine.kiln(&all).run().failure().stderr_str();
        if !err.contains(expected) {
            failures.push(format!("{args:?}: {err}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(cases.len(), 4);
}

#[test]
fn a_lazily_written_image_is_a_usable_base() {
    let Some(busybox) = requirements() else {
        return;
    };
    let cache = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", cache.path().display());
    machine_a(&busybox, &[&dest]);
    let b = Machine::new();
    let ctx = context(&busybox, "a\n", true);
    let src = format!("type=local,src={}", cache.path().display());
    b.build(ctx.path(), &["-t", "app", "--cache-from", &src])
        .ok();
    // Metadata only: the child image names the same absent layers.
    let child = support::context(&[("Dockerfile", "FROM app\nCMD [\"cat\", \"/both.txt\"]\n")]);
    b.build(child.path(), &["-t", "child"]).ok();
    assert_eq!(b.origins().len(), 6);
    // A RUN on top needs the layers' content.
    let run = support::context(&[(
        "Dockerfile",
        "FROM app\nRUN cat /both.txt /tools.txt > /again.txt\n",
    )]);
    b.build(run.path(), &["-t", "again"]).ok();
    let out = b
        .kiln(&["run", "--rm", "again", "cat", "/again.txt"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(out, "a\ngenerated\ntools\n");
    assert!(b.origins().is_empty());
}

/// A shared cache in memory whose blobs have no lasting origin: what a build system embedding
/// kiln may pass as its own transport.
#[derive(Debug, Default)]
struct MemoryCache {
    blobs: std::sync::Mutex<std::collections::BTreeMap<Digest, Vec<u8>>>,
    manifest: std::sync::Mutex<Option<(String, Vec<u8>)>>,
    fetched: std::sync::atomic::AtomicUsize,
}

impl CacheTransport for MemoryCache {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn read_manifest(&self) -> Result<Option<(String, Vec<u8>)>, TransportError> {
        Ok(self.manifest.lock().expect("lock").clone())
    }

    fn write_manifest(&self, media_type: &str, bytes: &[u8]) -> Result<(), TransportError> {
        *self.manifest.lock().expect("lock") = Some((media_type.to_string(), bytes.to_vec()));
        Ok(())
    }

    fn has_blob(&self, digest: &Digest) -> Result<bool, TransportError> {
        Ok(self.blobs.lock().expect("lock").contains_key(digest))
    }

    fn fetch_blob(
        &self,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
    ) -> Result<BlobRef, TransportError> {
        let bytes = self
            .blobs
            .lock()
            .expect("lock")
            .get(digest)
            .cloned()
            .ok_or("no such blob")?;
        self.fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(store.import(&mut bytes.as_slice(), Some(digest), Some(size))?)
    }

    fn push_blob(
        &self,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
    ) -> Result<(), TransportError> {
        let mut bytes = Vec::new();
        store.reader(digest, Some(size))?.read_to_end(&mut bytes)?;
        self.blobs
            .lock()
            .expect("lock")
            .insert(digest.clone(), bytes);
        Ok(())
    }
}

#[test]
fn the_library_takes_transports_of_its_callers() {
    let Some(busybox) = requirements() else {
        return;
    };
    let transport = Arc::new(MemoryCache::default());
    let options = |context: &Path| BuildOptions {
        dockerfile: DOCKERFILE.as_bytes().to_vec(),
        context_dir: Some(context.to_path_buf()),
        dockerfile_path: Some(context.join("Dockerfile")),
        ..BuildOptions::default()
    };
    let quiet: Arc<dyn Progress> = Arc::new(|_: BuildEvent| {});
    let a = Machine::new();
    let a_ctx = context(&busybox, "a\n", false);
    let a_store = Store::open(a.root()).expect("store A");
    let a_out = build(
        &a_store,
        &BuildOptions {
            cache_to: vec![CacheExport {
                transport: transport.clone(),
                mode: ExportMode::Max,
                cache_mounts: true,
                // Layers as built, so B's image from the cache is A's byte for byte.
                compression: kiln::layer::CompressionConfig::new(kiln::layer::Compression::None),
            }],
            ..options(a_ctx.path())
        },
        quiet.clone(),
        &Cancel::new(),
    )
    .expect("build A");
    assert!(transport.manifest.lock().expect("lock").is_some());

    let b = Machine::new();
    let b_ctx = context(&busybox, "a\n", true);
    let b_store = Store::open(b.root()).expect("store B");
    let b_out = build(
        &b_store,
        &BuildOptions {
            cache_from: vec![transport.clone()],
            ..options(b_ctx.path())
        },
        quiet,
        &Cancel::new(),
    )
    .expect("build B");
    assert_eq!((b_out.ran, b_out.cached), (0, STEPS.len()));
    assert_eq!(b_out.image.manifest_digest, a_out.image.manifest_digest);
    // Without a lasting origin the final image's layers are fetched before it is written.
    assert!(
        b_out
            .image
            .layers
            .iter()
            .all(|l| b_store.blobs().contains(&l.digest))
    );
    assert!(b.origins().is_empty());
    assert_eq!(
        transport.fetched.load(std::sync::atomic::Ordering::Relaxed),
        b_out.image.layers.len() + 1,
        "the graph and the final image's layers, nothing else"
    );
}
