//! Cache mounts (`RUN --mount=type=cache`) through the shared build cache, which BuildKit never
//! exports (moby/buildkit#1474): two stores standing for two CI machines ([`Machine`]), machine
//! A exporting with `--cache-to` (a registry on loopback, or a local directory) and machine B,
//! with an empty store, importing with `--cache-from` after a source edit, so that its RUN runs
//! again and finds what A's run left in the cache mount. Also: which `mode=`/`cache-mounts=`
//! exports carry them, an unchanged cache mount is not sent again, and a corrupted blob is a
//! warning and an empty cache, never a failed build.

use crate::registry::{Auth, TestRegistry};
use crate::shared_cache::{Built, Machine, requirements};
use crate::support;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// The RUN prints what earlier runs left in the cache (or `cold`), then adds `a.txt` to it.
const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
COPY a.txt /a.txt
RUN --mount=type=cache,id=app-cache,target=/cache (cat /cache/seen 2>/dev/null || echo cold) && cat /a.txt >> /cache/seen
COPY b.txt /b.txt
"#;

/// The RUN step with the cache mount, as the plan names it (after `] `).
const CACHE_STEP: &str = "RUN --mount=type=cache";

/// A context holding `a.txt` and `b.txt` with the given contents, the Dockerfile and busybox.
fn context(busybox: &Path, a: &str, b: &str) -> tempfile::TempDir {
    let dir = support::context(&[("Dockerfile", DOCKERFILE), ("a.txt", a), ("b.txt", b)]);
    fs::copy(busybox, dir.path().join("busybox")).expect("copy busybox");
    dir
}

/// The step id of the RUN with the cache mount.
fn cache_step(built: &Built) -> u64 {
    let planned = built.events("planned");
    let steps = planned[0]["steps"].as_array().expect("steps");
    steps
        .iter()
        .find(|s| s["name"].as_str().is_some_and(|n| n.contains(CACHE_STEP)))
        .and_then(|s| s["id"].as_u64())
        .expect("the cache step is planned")
}

/// What the cache step printed (it must have run).
fn cache_step_output(built: &Built) -> Vec<String> {
    let step = cache_step(built);
    assert!(
        built.events("started").iter().any(|e| e["step"] == step),
        "the cache step did not run:\n{}",
        built.out.stderr_str()
    );
    built
        .events("log")
        .iter()
        .filter(|e| e["step"] == step)
        .filter_map(|e| e["line"].as_str().map(str::to_string))
        .collect()
}

/// The `warning` events' messages.
fn warnings(built: &Built) -> Vec<String> {
    built
        .events("warning")
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// The cache graph of the local cache in `dir` (tag `kiln-cache`).
fn local_graph(dir: &Path) -> Value {
    let blob = |digest: &str| -> Vec<u8> {
        let hex = digest.trim_start_matches("sha256:");
        fs::read(dir.join("blobs/sha256").join(hex)).expect("blob")
    };
    let index: Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).expect("index")).expect("json");
    let entry = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "kiln-cache")
        .expect("the cache's entry")
        .clone();
    let manifest: Value =
        serde_json::from_slice(&blob(entry["digest"].as_str().expect("digest"))).expect("json");
    let graph = blob(manifest["config"]["digest"].as_str().expect("config"));
    serde_json::from_slice(&graph).expect("graph json")
}

/// The digest of the blob of cache mount `app-cache` in the local cache in `dir`, if any.
fn cache_mount_blob(dir: &Path) -> Option<String> {
    let graph = local_graph(dir);
    let mounts = graph["cacheMounts"].as_array().cloned().unwrap_or_default();
    mounts
        .iter()
        .find(|m| m["id"] == "app-cache")
        .map(|m| m["layer"]["digest"].as_str().expect("digest").to_string())
}

fn blob_count(dir: &Path) -> usize {
    fs::read_dir(dir.join("blobs/sha256"))
        .expect("blobs")
        .count()
}

/// Machine A builds with `--cache-to` each of `cache_to`; its RUN starts cold.
fn machine_a(busybox: &Path, cache_to: &[String]) -> Machine {
    let a = Machine::new();
    let ctx = context(busybox, "from-a\n", "b\n");
    let mut args = Vec::new();
    for spec in cache_to {
        args.extend(["--cache-to", spec.as_str()]);
    }
    let built = a.build(ctx.path(), &args);
    built.ok();
    assert_eq!(cache_step_output(&built), ["cold"]);
    assert!(warnings(&built).is_empty(), "{:?}", warnings(&built));
    a
}

/// Machine B, its store empty, builds with `--cache-from FROM` after editing `a.txt`.
fn machine_b(busybox: &Path, from: &str) -> Built {
    let b = Machine::new();
    let ctx = context(busybox, "from-b\n", "b\n");
    let built = b.build(ctx.path(), &["--cache-from", from]);
    built.ok();
    built
}

#[test]
fn a_second_machine_finds_the_cache_mount_through_a_registry_cache() {
    let Some(busybox) = requirements() else {
        return;
    };
    let Some(registry) = TestRegistry::start(Auth::Anonymous) else {
        return;
    };
    let cache = format!("{}/cache/mounts", registry.host());
    machine_a(&busybox, &[format!("type=registry,ref={cache},mode=max")]);
    let b = machine_b(&busybox, &format!("type=registry,ref={cache}"));
    assert!(
        b.hits().iter().any(|s| s.starts_with("COPY busybox")),
        "the steps before the edit come from the cache: {:?}",
        b.hits()
    );
    assert_eq!(
        cache_step_output(&b),
        ["from-a"],
        "B's RUN ran again and found what A's run wrote in the cache mount"
    );
    assert!(warnings(&b).is_empty(), "{:?}", warnings(&b));
}

#[test]
fn which_local_exports_carry_cache_mounts_and_the_carried_one_is_restored() {
    let Some(busybox) = requirements() else {
        return;
    };
    let dirs = tempfile::tempdir().expect("temp dir");
    let cases = [
        ("mode=min", false),
        ("mode=max", true),
        ("mode=min,cache-mounts=true", true),
        ("mode=max,cache-mounts=false", false),
    ];
    let dir = |i: usize| -> PathBuf { dirs.path().join(format!("cache{i}")) };
    let specs: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (fields, _))| format!("type=local,dest={},{fields}", dir(i).display()))
        .collect();
    machine_a(&busybox, &specs);
    let mut failures = Vec::new();
    for (i, (fields, carried)) in cases.iter().enumerate() {
        if cache_mount_blob(&dir(i)).is_some() != *carried {
            failures.push(format!("{fields}: {}", local_graph(&dir(i))));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let graph = local_graph(&dir(1));
    let mount = &graph["cacheMounts"][0];
    assert_eq!(mount["platform"], kiln::oci::Platform::host().to_string());
    assert!(
        mount["modified"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000)
    );

    let from = |i: usize| format!("type=local,src={}", dir(i).display());
    let restored = machine_b(&busybox, &from(2));
    assert_eq!(cache_step_output(&restored), ["from-a"]);
    let without = machine_b(&busybox, &from(0));
    assert_eq!(
        cache_step_output(&without),
        ["cold"],
        "a mode=min cache has no cache mount"
    );
}

#[test]
fn an_unchanged_cache_mount_is_not_exported_again() {
    let Some(busybox) = requirements() else {
        return;
    };
    let cache = tempfile::tempdir().expect("temp dir");
    let to = format!("type=local,dest={},mode=max", cache.path().display());
    let a = Machine::new();
    let ctx = context(&busybox, "1\n", "b\n");
    let first = a.build(ctx.path(), &["--cache-to", &to]);
    first.ok();
    let first_blob = cache_mount_blob(cache.path()).expect("exported");

    // Only b.txt changes: the cache mount's step is cached, its content the same.
    fs::write(ctx.path().join("b.txt"), "b2\n").expect("write");
    let before = blob_count(cache.path());
    let second = a.build(ctx.path(), &["--cache-to", &to]);
    second.ok();
    assert!(second.hits().iter().any(|s| s.starts_with(CACHE_STEP)));
    assert_eq!(cache_mount_blob(cache.path()), Some(first_blob.clone()));
    let exported = second.events("cache_exported");
    assert_eq!(
        exported[0]["blobs"], 1,
        "only the new COPY layer is copied: {exported:?}"
    );
    assert_eq!(
        blob_count(cache.path()),
        before + 3,
        "the new layer, graph and manifest; no cache-mount blob"
    );

    // a.txt changes: the RUN writes to the cache, and its new content is exported.
    fs::write(ctx.path().join("a.txt"), "2\n").expect("write");
    let third = a.build(ctx.path(), &["--cache-to", &to]);
    assert_eq!(cache_step_output(&third), ["1"]);
    let third_blob = cache_mount_blob(cache.path()).expect("exported");
    assert_ne!(third_blob, first_blob);
    assert!(
        cache
            .path()
            .join("blobs/sha256")
            .join(third_blob.trim_start_matches("sha256:"))
            .is_file()
    );
}

#[test]
fn a_corrupted_cache_mount_blob_is_a_warning_and_an_empty_cache() {
    let Some(busybox) = requirements() else {
        return;
    };
    let cache = tempfile::tempdir().expect("temp dir");
    let to = format!("type=local,dest={},mode=max", cache.path().display());
    machine_a(&busybox, &[to]);
    let digest = cache_mount_blob(cache.path()).expect("exported");
    let path = cache
        .path()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&path).expect("blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&path, bytes).expect("corrupt");

    let b = machine_b(
        &busybox,
        &format!("type=local,src={}", cache.path().display()),
    );
    assert_eq!(
        cache_step_output(&b),
        ["cold"],
        "the RUN sees an empty cache"
    );
    let warnings = warnings(&b);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("cache mount \"app-cache\"")
            && warnings[0].contains("corrupt or was tampered with"),
        "{warnings:?}"
    );
    let warning = &b.events("warning")[0];
    assert_eq!(warning["step"], cache_step(&b));
}
