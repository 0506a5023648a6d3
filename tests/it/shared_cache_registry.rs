//! The shared build cache through a registry (`type=registry`): the machines, Dockerfile and
//! context of [`crate::shared_cache`], with the cache kept in a repository of a
//! `docker-registry` each test starts on loopback ([`crate::registry::TestRegistry`]). Machine B
//! rebuilds machine A's image with every step cached, the same digest and no layer downloaded;
//! the lazily written image is pushed (`kiln push`, `build --push`) to another repository of the
//! same registry by mounting (nothing downloaded) and to another registry by fetching its layers
//! first; an edited context fetches only the parent layers; two builders write one cache ref at
//! once; a corrupted blob is a clear error; an empty or unreachable cache is built without.

use crate::registry::{Act, Auth, TestRegistry, proxy};
use crate::shared_cache::{
    Machine, STEPS, context, edited_context_file_fetches_only_parent_layers, export_concurrently,
    machine_a, requirements,
};
use crate::support::Output;
use kiln::store::Store;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Root, busybox and a plain registry, or `None` after a skip notice.
fn setup() -> Option<(PathBuf, TestRegistry)> {
    let busybox = requirements()?;
    let registry = TestRegistry::start(Auth::Anonymous)?;
    Some((busybox, registry))
}

/// A `--progress plain` build: its outcome, the image's manifest digest and, per step
/// header (`[stage k/n] INSTRUCTION`), how the step ended (`CACHED`, `DONE`, ...).
struct PlainBuild {
    out: Output,
    digest: Option<String>,
    endings: BTreeMap<String, String>,
}

/// `kiln build --progress plain ARGS CONTEXT` on `machine`.
fn build_plain(machine: &Machine, context: &Path, args: &[&str]) -> PlainBuild {
    let metadata = tempfile::NamedTempFile::new().expect("temp file");
    let metadata_path = metadata.path().display().to_string();
    let context = context.display().to_string();
    let mut all = vec![
        "build",
        "--progress",
        "plain",
        "--metadata-file",
        &metadata_path,
    ];
    all.extend(args);
    all.push(&context);
    let out = machine.kiln(&all).run();
    let digest = fs::read(metadata.path())
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|m| m["containerimage.digest"].as_str().map(str::to_string));
    // `#N TEXT`: the first line of a vertex is its name; a later `CACHED`, `DONE 0.1s` or
    // `ERROR: ...` says how it ended.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut endings = BTreeMap::new();
    for line in out.stderr_str().lines() {
        let Some((number, text)) = line.split_once(' ') else {
            continue;
        };
        if !number.starts_with('#') {
            continue;
        }
        let Some(name) = names.get(number) else {
            names.insert(number.to_string(), text.to_string());
            continue;
        };
        let ending = text.split(' ').next().unwrap_or_default();
        if ["CACHED", "DONE", "ERROR:", "CANCELED"].contains(&ending)
            && let Some(step) = name.split_once("] ").map(|(_, rest)| rest)
            && name.starts_with('[')
            && !name.starts_with("[internal]")
        {
            endings.insert(step.to_string(), ending.to_string());
        }
    }
    PlainBuild {
        out,
        digest,
        endings,
    }
}

/// The cache ref `HOST/cache/x` of `registry`.
fn cache_ref(registry: &TestRegistry) -> String {
    format!("{}/cache/x", registry.host())
}

#[test]
fn a_second_machine_rebuilds_from_a_registry_cache_with_every_step_cached() {
    let Some((busybox, registry)) = setup() else {
        return;
    };
    let cache = cache_ref(&registry);
    let to = format!("type=registry,ref={cache},mode=max");
    let (a, _ctx, a_digest) = machine_a(&busybox, &[&to]);

    let b = Machine::new();
    let ctx = context(&busybox, "a\n", true);
    let from = format!("type=registry,ref={cache}");
    let built = build_plain(&b, ctx.path(), &["-t", "app", "--cache-from", &from]);
    assert_eq!(
        built.out.status.code(),
        Some(0),
        "{}",
        built.out.stderr_str()
    );
    // mode=max holds the `gen` stage's record too: its step is a hit like the others.
    let expected: BTreeMap<String, String> = STEPS
        .iter()
        .map(|s| (s.to_string(), "CACHED".to_string()))
        .collect();
    assert_eq!(built.endings, expected, "{}", built.out.stderr_str());
    assert_eq!(built.digest.as_deref(), Some(a_digest.as_str()));

    let layers = a.layers(&a_digest);
    assert_eq!(layers.len(), 6);
    let held = b.blobs();
    let fetched: Vec<&String> = layers.iter().filter(|l| held.contains(*l)).collect();
    assert!(
        fetched.is_empty(),
        "B fetched layers it did not need: {fetched:?}"
    );
    assert_eq!(b.origins(), layers.iter().cloned().collect::<BTreeSet<_>>());
    let origin: Value = serde_json::from_slice(
        &fs::read(
            b.root()
                .join("origins/sha256")
                .join(layers[0].trim_start_matches("sha256:")),
        )
        .expect("origin file"),
    )
    .expect("origin JSON");
    assert_eq!(origin, serde_json::json!({"registry": cache}));

    // Running it needs the layers: they come from the cache repository now.
    let out = b
        .kiln(&["run", "--rm", "app", "cat", "/both.txt", "/tools.txt"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(out, "a\ngenerated\ntools\n");
    let held = b.blobs();
    assert!(layers.iter().all(|l| held.contains(l)), "{held:?}");
    assert!(b.origins().is_empty());
}

/// The `Mounted`/`Pushed`/... words of a push's progress, counted.
fn push_statuses(stderr: &str) -> BTreeMap<&'static str, usize> {
    [
        "Mounted from another repository",
        "Pushed",
        "Layer already exists",
    ]
    .into_iter()
    .map(|word| (word, stderr.matches(word).count()))
    .collect()
}

#[test]
fn an_image_built_from_a_registry_cache_is_pushed_by_mounting_or_fetching_its_layers() {
    let Some((busybox, registry)) = setup() else {
        return;
    };
    let cache = cache_ref(&registry);
    // gzip (the default): the cache holds the layers as a push sends them, so the pushes
    // below mount or copy them without compressing. A build from it has the cache's gzip
    // layers: A's image (the same ID), in another manifest than A's uncompressed one.
    let to = format!("type=registry,ref={cache},compression=gzip");
    let (a, _ctx, a_digest) = machine_a(&busybox, &[&to]);

    // C: everything cached, no layer in the store; pushed to another repository of the same
    // registry, the registry mounts each layer from the cache repository.
    let c = Machine::new();
    let ctx = context(&busybox, "a\n", true);
    let from = format!("type=registry,ref={cache}");
    let same = format!("{}/app/y:1", registry.host());
    let built = c.build(ctx.path(), &["-t", &same, "--cache-from", &from]);
    let c_digest = built.ok();
    assert_eq!(built.ran(), Vec::<&str>::new());
    let image_id = |root: &std::path::Path, digest: &str| {
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(
                root.join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:")),
            )
            .expect("manifest"),
        )
        .expect("JSON");
        manifest["config"]["digest"].clone()
    };
    assert_eq!(image_id(c.root(), &c_digest), image_id(a.root(), &a_digest));
    let layers = c.layers(&c_digest);
    let pushed = c.kiln(&["push", &same]).run();
    assert_eq!(pushed.status.code(), Some(0), "{}", pushed.stderr_str());
    let statuses = push_statuses(&pushed.stderr_str());
    assert_eq!(
        statuses["Mounted from another repository"],
        layers.len(),
        "{}",
        pushed.stderr_str()
    );
    let held = c.blobs();
    let downloaded: Vec<&String> = layers.iter().filter(|l| held.contains(*l)).collect();
    assert!(downloaded.is_empty(), "the push downloaded {downloaded:?}");
    assert_eq!(c.origins().len(), layers.len());

    // The same through `build --push`, in the build's own runtime.
    let f = Machine::new();
    let pushed_by_build = format!("{}/app/w:1", registry.host());
    let built = f.build(
        ctx.path(),
        &["--push", "-t", &pushed_by_build, "--cache-from", &from],
    );
    assert_eq!(built.ok(), c_digest);
    let held = f.blobs();
    let downloaded: Vec<&String> = layers.iter().filter(|l| held.contains(*l)).collect();
    assert!(
        downloaded.is_empty(),
        "build --push downloaded {downloaded:?}"
    );

    let d = Machine::new();
    for name in [&same, &pushed_by_build] {
        d.kiln(&["pull", name]).run().success();
        assert_eq!(manifest_digest(&d, name), c_digest);
    }
    assert_eq!(
        d.kiln(&["run", "--rm", &same, "cat", "/both.txt"])
            .run()
            .success()
            .stdout_str(),
        "a\ngenerated\n"
    );

    // To another registry there is nothing to mount from: the layers are fetched from the
    // cache repository, then uploaded.
    let Some(other) = TestRegistry::start(Auth::Anonymous) else {
        return;
    };
    let elsewhere = format!("{}/app/z:1", other.host());
    c.kiln(&["tag", &same, &elsewhere]).run().success();
    let pushed = c.kiln(&["push", &elsewhere]).run();
    assert_eq!(pushed.status.code(), Some(0), "{}", pushed.stderr_str());
    assert_eq!(
        push_statuses(&pushed.stderr_str())["Pushed"],
        layers.len() + 1,
        "{}",
        pushed.stderr_str()
    );
    let held = c.blobs();
    assert!(layers.iter().all(|l| held.contains(l)), "{held:?}");
    assert!(c.origins().is_empty());
    let e = Machine::new();
    e.kiln(&["pull", &elsewhere]).run().success();
    assert_eq!(manifest_digest(&e, &elsewhere), c_digest);
}

/// The manifest digest of the image `name` in `machine`'s store.
fn manifest_digest(machine: &Machine, name: &str) -> String {
    Store::open(machine.root())
        .expect("open store")
        .resolve(name)
        .expect("image in the store")
        .manifest_digest
        .to_string()
}

#[test]
fn an_edited_context_file_fetches_only_the_parent_layers_from_the_registry() {
    let Some((busybox, registry)) = setup() else {
        return;
    };
    let cache = cache_ref(&registry);
    edited_context_file_fetches_only_parent_layers(
        &busybox,
        &format!("type=registry,ref={cache},mode=max"),
        &format!("type=registry,ref={cache}"),
    );
}

#[test]
fn two_builders_writing_one_registry_cache_ref_both_succeed_and_it_imports_cleanly() {
    let Some((busybox, registry)) = setup() else {
        return;
    };
    let cache = cache_ref(&registry);
    let to = format!("type=registry,ref={cache},mode=max");
    export_concurrently(&busybox, &to);
    let c = Machine::new();
    let ctx = context(&busybox, "a\n", true);
    let from = format!("type=registry,ref={cache}");
    let built = c.build(ctx.path(), &["--cache-from", &from]);
    built.ok();
    assert_eq!(
        built.ran(),
        Vec::<&str>::new(),
        "{}",
        built.out.stderr_str()
    );
    let imported = built.events("cache_imported");
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0]["warning"], Value::Null);
    // A build on top of the lazily written image reads every layer back from the registry
    // (from the builder's blocking pool), each verified.
    let tagged = c.build(ctx.path(), &["-t", "app", "--cache-from", &from]);
    tagged.ok();
    assert_eq!(c.origins().len(), 6);
    let child = crate::support::context(&[(
        "Dockerfile",
        "FROM app\nRUN cat /both.txt /tools.txt > /again.txt\n",
    )]);
    c.build(child.path(), &["-t", "again"]).ok();
    assert!(c.origins().is_empty(), "{:?}", c.origins());
    assert_eq!(
        c.kiln(&["run", "--rm", "again", "cat", "/again.txt"])
            .run()
            .success()
            .stdout_str(),
        "a\ngenerated\ntools\n"
    );
}

#[test]
fn a_corrupted_cache_layer_from_the_registry_is_a_clear_error_and_never_enters_the_store() {
    let Some((busybox, registry)) = setup() else {
        return;
    };
    let to = format!("type=registry,ref={}", cache_ref(&registry));
    let (a, _ctx, a_digest) = machine_a(&busybox, &[&to]);
    let first = a.layers(&a_digest).first().cloned().expect("a layer");
    let path = format!("/blobs/{first}");
    let front = proxy(
        registry.port,
        Arc::new(move |method, p| {
            if method == "GET" && p.ends_with(&path) {
                Act::Corrupt
            } else {
                Act::Forward
            }
        }),
    );
    let through = format!("127.0.0.1:{}", front.port);
    let from = format!("type=registry,ref={through}/cache/x");

    // A step that misses needs the corrupted layer under it.
    let b = Machine::new();
    let ctx = context(&busybox, "edited\n", true);
    let built = b.build(ctx.path(), &["--cache-from", &from]);
    assert_eq!(
        built.out.status.code(),
        Some(1),
        "{}",
        built.out.stderr_str()
    );
    // The report after the JSON events (the `error` event repeats the message).
    let stderr = built.out.stderr_str();
    let report: Vec<&str> = stderr.lines().filter(|l| !l.starts_with('{')).collect();
    let failures = corruption_failures(&report.join("\n"), &first, &through);
    assert!(
        failures.is_empty(),
        "{failures:?}:\n{}",
        built.out.stderr_str()
    );
    assert!(!b.blobs().contains(&first));
    assert_no_staging_left(&b, &first);

    // A fully cached build writes its image lazily; running it fetches the layer, corrupted.
    let b = Machine::new();
    let ctx = context(&busybox, "a\n", true);
    b.build(ctx.path(), &["-t", "app", "--cache-from", &from])
        .ok();
    let err = b
        .kiln(&["run", "--rm", "app", "true"])
        .run()
        .failure()
        .stderr_str();
    let failures = corruption_failures(&err, &first, &through);
    assert!(failures.is_empty(), "{failures:?}:\n{err}");
    assert!(!b.blobs().contains(&first));
    assert!(
        b.origins().contains(&first),
        "the origin is kept for a retry"
    );
    assert_no_staging_left(&b, &first);
}

/// What the error for the corrupted blob `digest`, fetched from `registry`, fails to say.
fn corruption_failures(stderr: &str, digest: &str, registry: &str) -> Vec<&'static str> {
    let mut failures = Vec::new();
    if !stderr.contains(&format!("blob {digest} from {registry}")) {
        failures.push("names the blob and the registry");
    }
    if !stderr.contains(&format!("registry {registry}/cache/x:latest")) {
        failures.push("names the cache");
    }
    if stderr.matches("does not match its digest").count() != 1 {
        failures.push("says once that the content does not match");
    }
    failures
}

/// Nothing of the corrupt blob `digest` is kept in the store's staging; what may stay is the
/// resume state of other blobs whose downloads the failure cut short (`sha256-<hex>.partial`).
fn assert_no_staging_left(machine: &Machine, digest: &str) {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let junk = crate::support::staging_junk(machine.root(), hex);
    assert!(junk.is_empty(), "staging junk was left: {junk:?}");
}

#[test]
fn an_empty_or_unreachable_registry_cache_builds_without_it() {
    let Some((busybox, registry)) = setup() else {
        return;
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // A bare reference is a registry cache, as BuildKit reads it.
    let cases = [
        (format!("{}/cache/none:main", registry.host()), None),
        (
            format!("127.0.0.1:{closed}/cache/x"),
            Some(format!("127.0.0.1:{closed}")),
        ),
    ];
    let mut failures = Vec::new();
    for (from, warning) in &cases {
        let machine = Machine::new();
        let ctx = context(&busybox, "a\n", false);
        let built = machine.build(ctx.path(), &["--cache-from", from]);
        if built.out.status.code() != Some(0) || built.ran() != STEPS[1..] {
            failures.push(format!(
                "{from}: ran {:?}\n{}",
                built.ran(),
                built.out.stderr_str()
            ));
        }
        let imported = built.events("cache_imported");
        let said = imported
            .first()
            .map(|e| (e["records"].clone(), e["warning"].clone()));
        let as_expected = match (warning, &said) {
            (None, Some((records, Value::Null))) => records == 0,
            (Some(host), Some((_, Value::String(text)))) => {
                text.contains(host.as_str()) && text.ends_with("building without it")
            }
            _ => false,
        };
        if !as_expected {
            failures.push(format!("{from}: imported {said:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(cases.len(), 2);
}
