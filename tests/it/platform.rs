//! Multi-platform builds end to end: `--platform` lists and `FROM --platform`, BuildKit's
//! automatic platform args, one graph per target sharing identical steps (a
//! `FROM --platform=$BUILDPLATFORM` stage runs once for every target), the platform in every
//! cache key, RUN steps of a foreign architecture under the QEMU emulator binfmt_misc has for
//! it, and the image index a multi-platform build writes.
//!
//! Emulated builds need an emulator registered with the F flag for linux/arm64 and Debian's
//! arm64 busybox-static unpacked at `$KILN_TEST_ARM64` (default /var/tmp/kiln-arm64):
//! `scripts/setup-emulation.sh` prepares both. Without them those tests skip with a notice
//! (and fail under `CI=true`); the others need only root and busybox.

use crate::build::{Builder, builder};
use crate::support::{self, kiln};
use kiln::oci::Platform;
use kiln::runtime::binfmt::{Emulation, Runnable};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// What `uname -m` prints on this machine.
fn host_machine() -> &'static str {
    std::env::consts::ARCH
}

/// Debian's arm64 busybox-static, unpacked, or `None` after a skip notice.
fn arm64_busybox() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_TEST_ARM64")
        .map_or_else(|| PathBuf::from("/var/tmp/kiln-arm64"), PathBuf::from);
    let path = dir.join("bin/busybox");
    support::require(
        &format!(
            "Debian's arm64 busybox-static at {} (scripts/setup-emulation.sh)",
            path.display()
        ),
        path.is_file().then_some(path.clone()),
    )
}

/// `Some(())` when linux/arm64 binaries run here (natively or under a registered emulator),
/// else a skip notice naming what is missing.
fn runs_arm64() -> Option<()> {
    let runnable = Emulation::detect().runnable(&Platform::parse("linux/arm64").unwrap());
    let why = match runnable {
        Runnable::Native | Runnable::Emulated { .. } => return Some(()),
        Runnable::No(why) => why,
    };
    support::require::<()>(
        &format!("an arm64 emulator in binfmt_misc (scripts/setup-emulation.sh): {why}"),
        None,
    )
}

/// A [`Builder`] whose store also has `multibase`: busybox for linux/amd64 and linux/arm64,
/// one image index, built by kiln from scratch (its arm64 RUN emulated).
fn multi_builder() -> Option<Builder> {
    let arm64 = arm64_busybox()?;
    runs_arm64()?;
    let b = builder()?;
    let ctx = support::context(&[(
        "Dockerfile",
        "FROM scratch\nARG TARGETARCH\nCOPY busybox-$TARGETARCH /bin/busybox\n\
         RUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\n",
    )]);
    fs::copy(&b.busybox, ctx.path().join("busybox-amd64")).expect("copy busybox");
    fs::copy(&arm64, ctx.path().join("busybox-arm64")).expect("copy busybox");
    b.build(
        ctx.path(),
        &["--platform", "linux/amd64,linux/arm64", "-t", "multibase"],
    )
    .ok();
    Some(b)
}

/// The store's `index.json` entry named `name` and the document it points at.
fn stored_entry(root: &Path, name: &str) -> (Value, Value) {
    let index: Value =
        serde_json::from_slice(&fs::read(root.join("index.json")).expect("index.json"))
            .expect("JSON");
    let entry = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("no entry {name} in {index}"))
        .clone();
    let digest = entry["digest"].as_str().expect("digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    let document: Value =
        serde_json::from_slice(&fs::read(root.join("blobs/sha256").join(hex)).expect("blob"))
            .expect("JSON");
    (entry, document)
}

/// The platforms an index document lists, as `os/arch[/variant]`.
fn index_platforms(index: &Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut text = format!(
                "{}/{}",
                p["os"].as_str().unwrap_or(""),
                p["architecture"].as_str().unwrap_or("")
            );
            if let Some(variant) = p["variant"].as_str() {
                text.push('/');
                text.push_str(variant);
            }
            text
        })
        .collect()
}

/// The content of `path` in `image`'s root filesystem for `platform` (`kiln export`).
fn file_in(b: &Builder, image: &str, platform: &str, path: &str) -> String {
    let out = b
        .kiln(&["export", "--platform", platform, image])
        .run()
        .success();
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        if name.trim_start_matches("./") == path.trim_start_matches('/') {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).expect("read");
            return text;
        }
    }
    panic!("{path} is not in {image} for {platform}")
}

/// The cross-compilation pattern: a `FROM --platform=$BUILDPLATFORM` stage prepares once,
/// natively, what every target shares, then builds for `$TARGETARCH`; each target's final
/// stage copies its build. No step runs emulated (the final stages only copy).
#[test]
fn a_build_platform_stage_runs_once_natively_for_two_targets() {
    let Some(b) = builder() else {
        return;
    };
    let ctx = b.context(&[(
        "Dockerfile",
        r#"FROM --platform=$BUILDPLATFORM base AS build
RUN echo prepared > /prepared
ARG TARGETARCH
RUN echo "for $TARGETARCH on $(uname -m)" > /built
FROM scratch
ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT
COPY --from=build /prepared /built /
LABEL target="$TARGETPLATFORM|$TARGETOS|$TARGETARCH|$TARGETVARIANT" build="$BUILDPLATFORM|$BUILDOS|$BUILDARCH|$BUILDVARIANT"
"#,
    )]);
    let host = Platform::host();
    let args = [
        "--platform",
        "linux/amd64,linux/arm/v7",
        "--platform",
        "linux/arm",
        "-t",
        "cross",
    ];
    let built = b.build(ctx.path(), &args);
    built.ok();
    let ran = built.events.ran_names();
    let count = |needle: &str| ran.iter().filter(|n| n.contains(needle)).count();
    assert_eq!(count("RUN echo prepared"), 1, "{ran:#?}");
    assert_eq!(count("RUN echo \"for $TARGETARCH"), 2, "{ran:#?}");
    // BuildKit's names: the stage's platform, `->` the target's architecture when it differs.
    let arrow = if host.architecture == "arm" {
        String::new()
    } else {
        "->arm/v7".to_string()
    };
    for expected in [
        format!("[{host} build 2/3] RUN echo prepared > /prepared"),
        format!("[{host}{arrow} build 3/3] RUN echo \"for $TARGETARCH on $(uname -m)\" > /built"),
        "[linux/arm/v7 stage-1 2/2] COPY --from=build /prepared /built /".to_string(),
        "[linux/amd64 stage-1 2/2] COPY --from=build /prepared /built /".to_string(),
    ] {
        assert!(ran.contains(&expected.as_str()), "{expected}\n{ran:#?}");
    }

    // One image index, each platform's manifest with its platform.
    let (entry, index) = stored_entry(b.root(), "cross:latest");
    assert_eq!(
        entry["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{entry}"
    );
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm/v7"]);
    let listed = b
        .kiln(&["images", "--format", "{{.Repository}}"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(
        listed.lines().filter(|l| *l == "cross").count(),
        1,
        "{listed}"
    );

    let inspect = |platform: &str| -> Value {
        let out = b
            .kiln(&["inspect", "--platform", platform, "cross"])
            .run()
            .success()
            .stdout_str();
        serde_json::from_str::<Vec<Value>>(&out).expect("JSON")[0].clone()
    };
    let arm = inspect("linux/arm");
    assert_eq!(
        (&arm["Os"], &arm["Architecture"], &arm["Variant"]),
        (&"linux".into(), &"arm".into(), &"v7".into())
    );
    let build_args = format!(
        "{host}|{}|{}|{}",
        host.os,
        host.architecture,
        host.variant_or_empty()
    );
    assert_eq!(
        arm["Config"]["Labels"]["target"],
        "linux/arm/v7|linux|arm|v7"
    );
    assert_eq!(arm["Config"]["Labels"]["build"], build_args.as_str());
    let amd = inspect("linux/amd64");
    assert_eq!(amd["Architecture"], "amd64");
    assert_eq!(amd["Variant"], Value::Null, "{amd}");
    assert_eq!(
        amd["Config"]["Labels"]["target"],
        "linux/amd64|linux|amd64|"
    );

    let machine = host_machine();
    assert_eq!(
        file_in(&b, "cross", "linux/arm/v7", "/built"),
        format!("for arm on {machine}\n")
    );
    assert_eq!(
        file_in(&b, "cross", "linux/amd64", "/built"),
        format!("for amd64 on {machine}\n")
    );
    assert_eq!(
        file_in(&b, "cross", "linux/arm/v7", "/prepared"),
        "prepared\n"
    );
    let missing = b
        .kiln(&["inspect", "--platform", "linux/s390x", "cross"])
        .run()
        .code(1)
        .stderr_str();
    assert!(
        missing
            .contains("no image for platform linux/s390x here (it has: linux/amd64, linux/arm/v7)"),
        "{missing}"
    );

    // Nothing changed: every step of both targets comes from the cache.
    let again = b.build(ctx.path(), &args);
    again.ok();
    assert!(again.events.ran().is_empty(), "{:?}", again.events.ran());
}

/// The same step for another platform is another step: its key says the platform. A build
/// without `--platform` is one for this machine's platform.
#[test]
fn the_platform_is_part_of_every_cache_key() {
    let Some(b) = builder() else {
        return;
    };
    let ctx = b.context(&[
        ("Dockerfile", "FROM scratch\nCOPY f /f\nWORKDIR /w\n"),
        ("f", "x"),
    ]);
    let ran = |args: &[&str]| {
        let built = b.build(ctx.path(), args);
        built.ok();
        built.events.ran().join(", ")
    };
    let host = Platform::host().to_string();
    let other = if host == "linux/arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    assert_eq!(
        ran(&["--platform", &host, "-t", "one"]),
        "COPY f /f, WORKDIR /w"
    );
    assert_eq!(
        ran(&["--platform", other, "-t", "one"]),
        "COPY f /f, WORKDIR /w"
    );
    assert_eq!(ran(&["--platform", &host, "-t", "one"]), "");
    assert_eq!(ran(&["-t", "one"]), "");
    assert_eq!(ran(&["--platform", other, "-t", "one"]), "");
    // A single platform gives a plain image, not an index, saying its platform.
    let (entry, _) = stored_entry(b.root(), "one:latest");
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let arch = b
        .kiln(&["inspect", "--format", "{{.Architecture}}", "one"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(arch.trim(), other.rsplit('/').next().unwrap());
}

/// `FROM --platform` is obeyed: the stage's image is that platform's, its RUN steps run on it
/// (emulated here), and without `--platform` the image says what its base says.
#[test]
fn from_platform_picks_the_base_and_runs_the_steps_on_it() {
    let Some(b) = multi_builder() else {
        return;
    };
    let ctx = b.context(&[(
        "Dockerfile",
        "FROM --platform=linux/arm64 multibase\nRUN uname -m > /machine\n",
    )]);
    b.build(ctx.path(), &["-t", "from-arm"]).ok();
    assert_eq!(b.run("from-arm", "cat", &["/machine"]), "aarch64\n");
    let arch = b
        .kiln(&[
            "inspect",
            "--format",
            "{{.Os}}/{{.Architecture}}",
            "from-arm",
        ])
        .run()
        .success()
        .stdout_str();
    assert_eq!(arch.trim(), "linux/arm64");
    // A platform that does not parse is an error at the line.
    let bad = b.context(&[("Dockerfile", "FROM --platform=linux/arm64/v8/x multibase\n")]);
    let err = b.build(bad.path(), &[]).fails();
    assert!(
        err.contains("failed to parse platform linux/arm64/v8/x") && err.contains("Dockerfile:1"),
        "{err}"
    );
}

/// Must-show: an amd64 and arm64 build whose RUN steps run natively and emulated gives one
/// index; its arm64 image runs (emulated) and says `aarch64`.
#[test]
fn an_amd64_and_arm64_build_runs_each_image_on_its_platform() {
    let Some(b) = multi_builder() else {
        return;
    };
    let ctx = b.context(&[(
        "Dockerfile",
        "FROM multibase\nARG TARGETPLATFORM\nRUN echo \"$TARGETPLATFORM $(uname -m)\" > /built\n\
         CMD [\"cat\", \"/built\"]\n",
    )]);
    let built = b.build(
        ctx.path(),
        &["--platform", "linux/amd64,linux/arm64", "-t", "both"],
    );
    built.ok();
    let ran = built.events.ran_names();
    assert!(
        ran.contains(&"[linux/arm64 2/2] RUN echo \"$TARGETPLATFORM $(uname -m)\" > /built"),
        "{ran:#?}"
    );
    let run = |platform: &str, args: &[&str]| {
        let mut all = vec!["run", "--rm", "--platform", platform, "both"];
        all.extend(args);
        b.kiln(&all).run().success().stdout_str()
    };
    assert_eq!(run("linux/arm64", &["uname", "-m"]), "aarch64\n");
    assert_eq!(run("linux/arm64", &[]), "linux/arm64 aarch64\n");
    assert_eq!(run("linux/amd64", &[]), "linux/amd64 x86_64\n");
    let (_, index) = stored_entry(b.root(), "both:latest");
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);

    // `--push` (the build again, from the cache) sends the index: skopeo sees it whole, and
    // the peer docker pulls and runs the arm64 image, emulated.
    let Some(registry) = support::peer_registry() else {
        return;
    };
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let pushed = format!("{registry}/kiln-platform/both:t{unique}");
    b.build(
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &pushed,
            "--push",
        ],
    )
    .ok();
    let Some(skopeo) = support::tool("skopeo") else {
        return;
    };
    // The push went gzip-compressed: the pushed name now names the index as pushed.
    let (entry, index) = stored_entry(b.root(), &pushed);
    let raw = std::process::Command::new(skopeo)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{pushed}"))
        .output()
        .expect("skopeo");
    assert!(raw.status.success(), "{raw:?}");
    let served: Value = serde_json::from_slice(&raw.stdout).expect("JSON");
    assert_eq!(served, index, "the registry serves the index the store has");
    assert_eq!(
        kiln::oci::Digest::of(&raw.stdout).to_string(),
        entry["digest"].as_str().expect("digest")
    );
    let Some(docker) = support::peer_docker() else {
        return;
    };
    docker.run(&["pull", "--platform", "linux/arm64", &pushed]);
    let machine = docker.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--platform",
        "linux/arm64",
        &pushed,
        "uname",
        "-m",
    ]);
    docker.run(&["rmi", &pushed]);
    assert_eq!(machine, "aarch64\n");
}

/// A RUN for a platform nothing here runs fails before it starts, naming the platform, what
/// is missing and how to add it; `kiln info` lists what runs.
#[test]
fn a_missing_emulator_is_named_with_how_to_add_it() {
    let Some(b) = builder() else {
        return;
    };
    let empty = tempfile::tempdir().expect("temp dir");
    let ctx = b.context(&[("Dockerfile", "FROM --platform=linux/s390x base\nRUN true\n")]);
    let out = b
        .kiln(&[
            "build",
            "--progress",
            "plain",
            &ctx.path().display().to_string(),
        ])
        .env("KILN_BINFMT_MISC", empty.path())
        .run()
        .failure()
        .stderr_str();
    let host = Platform::host();
    assert!(
        out.contains(&format!(
            "cannot run linux/s390x binaries on this {host} machine: binfmt_misc is not mounted"
        )) && out.contains("apt-get install qemu-user-static"),
        "{out}"
    );
    // BuildKit's lint: the single-platform base is not for the platform asked (listed with
    // the build's other findings when it ends).
    assert!(
        out.contains(&format!(
            " - InvalidBaseImagePlatform: Base image base was pulled with platform \"{host}\", expected \"linux/s390x\" for current build (line 1)"
        )),
        "{out}"
    );
    // The checks' configuration applies to it as to the other rules.
    let skipped = b
        .kiln(&[
            "build",
            "--progress",
            "plain",
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=InvalidBaseImagePlatform",
            &ctx.path().display().to_string(),
        ])
        .env("KILN_BINFMT_MISC", empty.path())
        .run()
        .failure()
        .stderr_str();
    assert!(!skipped.contains("InvalidBaseImagePlatform"), "{skipped}");

    // `kiln info` reads binfmt_misc's entries (here a fixed directory).
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("status"), "enabled\n").expect("write");
    fs::write(
        dir.path().join("qemu-aarch64"),
        "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\n\
         magic 7f454c460201010000000000000000000200b700\n\
         mask ffffffffffffff00fffffffffffffffffeffffff\n",
    )
    .expect("write");
    fs::write(
        dir.path().join("qemu-s390x"),
        "enabled\ninterpreter /usr/bin/qemu-s390x\nflags: \noffset 0\n\
         magic 7f454c4602020100000000000000000000020016\n\
         mask ffffffffffffff00fffffffffffffffffffeffff\n",
    )
    .expect("write");
    let info = kiln()
        .arg("info")
        .env("KILN_BINFMT_MISC", dir.path())
        .run()
        .success()
        .stdout_str();
    assert!(info.starts_with(&format!("Platform: {host}\n")), "{info}");
    let lines: Vec<String> = info
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        lines.contains(
            &"linux/arm64 emulated (qemu-aarch64: /usr/libexec/qemu-binfmt/aarch64-binfmt-P)"
                .to_string()
        ),
        "{info}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("linux/s390x unusable:") && l.contains("without the F flag")),
        "{info}"
    );
}

/// The files of a tar archive by name (`./` and trailing `/` left out), directories as `""`.
fn tar_files(bytes: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let mut text = String::new();
        if entry.header().entry_type().is_file() {
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap_or_default();
        }
        files.insert(name, text);
    }
    files
}

/// A multi-platform image through every output: `-o type=oci` (the index, whole), `type=tar`
/// and `type=local` (a directory per platform), `type=docker` (refused, as BuildKit does),
/// `save` and `load` (whole, or one platform with `--platform`), `rmi`, and `--cache-to` /
/// `--cache-from` carrying every platform's records.
#[test]
fn a_multi_platform_image_goes_through_every_output() {
    let Some(b) = builder() else {
        return;
    };
    let dockerfile = "FROM --platform=$BUILDPLATFORM base AS build\nARG TARGETPLATFORM\n\
                      RUN echo \"$TARGETPLATFORM\" > /built\nFROM scratch\n\
                      COPY --from=build /built /\n";
    let ctx = b.context(&[("Dockerfile", dockerfile)]);
    let out = tempfile::tempdir().expect("temp dir");
    let (oci, rootfs, local, cache) = (
        out.path().join("oci.tar"),
        out.path().join("rootfs.tar"),
        out.path().join("local"),
        out.path().join("cache"),
    );
    let platforms = "linux/amd64,linux/arm/v7";
    b.build(
        ctx.path(),
        &[
            "--platform",
            platforms,
            "-t",
            "out",
            "-o",
            // Uncompressed, so the archive's index is the store's (gzip, the default, is
            // issue 16's tests/it/compression.rs).
            &format!("type=oci,dest={},compression=uncompressed", oci.display()),
            "-o",
            &format!("type=tar,dest={}", rootfs.display()),
            "-o",
            &format!("type=local,dest={}", local.display()),
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
        ],
    )
    .ok();
    let (entry, _) = stored_entry(b.root(), "out:latest");
    let index_digest = entry["digest"].as_str().expect("digest").to_string();

    // type=oci: the index, named, and every platform's image.
    let layout = tar_files(&fs::read(&oci).expect("oci.tar"));
    let index: Value = serde_json::from_str(&layout["index.json"]).expect("index.json");
    let [listed] = index["manifests"].as_array().expect("manifests").as_slice() else {
        panic!("one entry: {index}");
    };
    assert_eq!(listed["digest"], index_digest.as_str());
    assert_eq!(
        listed["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        listed["annotations"]["org.opencontainers.image.ref.name"],
        "out:latest"
    );
    let blob = |digest: &str| -> Value {
        let name = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        serde_json::from_str(&layout[&name]).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let stored_index = blob(&index_digest);
    assert_eq!(
        index_platforms(&stored_index),
        ["linux/amd64", "linux/arm/v7"]
    );
    for manifest in stored_index["manifests"].as_array().expect("manifests") {
        let manifest = blob(manifest["digest"].as_str().expect("digest"));
        let config = blob(manifest["config"]["digest"].as_str().expect("config"));
        assert!(
            config["architecture"] == "amd64" || config["variant"] == "v7",
            "{config}"
        );
    }

    // type=tar and type=local: one directory per platform, as BuildKit names them.
    let files = tar_files(&fs::read(&rootfs).expect("rootfs.tar"));
    assert_eq!(files["linux_amd64/built"], "linux/amd64\n");
    assert_eq!(files["linux_arm_v7/built"], "linux/arm/v7\n");
    assert_eq!(
        fs::read_to_string(local.join("linux_arm_v7/built")).expect("local export"),
        "linux/arm/v7\n"
    );

    // type=docker: refused, as BuildKit's docker exporter refuses it.
    let refused = b
        .kiln(&[
            "build",
            "--platform",
            platforms,
            "-o",
            &format!("type=docker,dest={}", out.path().join("d.tar").display()),
            &ctx.path().display().to_string(),
        ])
        .run()
        .failure()
        .stderr_str();
    assert!(
        refused.contains("docker exporter does not currently support exporting manifest lists"),
        "{refused}"
    );

    // save --format oci and load: the same index, by digest, in another store.
    let saved = b
        .kiln(&["save", "--format", "oci", "out"])
        .run()
        .success()
        .stdout;
    let other = tempfile::tempdir().expect("temp dir");
    let loaded = kiln()
        .root(other.path())
        .args(["load", "-q"])
        .stdin(&saved)
        .run()
        .success()
        .stdout_str();
    assert_eq!(loaded, "Loaded image: out:latest\n");
    let ids = |root: &Path| {
        kiln()
            .root(root)
            .args([
                "images",
                "--no-trunc",
                "--format",
                "{{.Repository}} {{.ID}}",
            ])
            .run()
            .success()
            .stdout_str()
    };
    assert_eq!(ids(other.path()), format!("out {index_digest}\n"));
    let inspect_id = |root: &Path, platform: &str| {
        kiln()
            .root(root)
            .args([
                "inspect",
                "--platform",
                platform,
                "--format",
                "{{.Id}}",
                "out",
            ])
            .run()
            .success()
            .stdout_str()
    };
    assert_eq!(
        inspect_id(other.path(), "linux/arm/v7"),
        inspect_id(b.root(), "linux/arm/v7")
    );
    // rmi takes the whole image: nothing of it is left.
    kiln()
        .root(other.path())
        .args(["rmi", "out"])
        .run()
        .success();
    assert_eq!(
        fs::read_dir(other.path().join("blobs/sha256"))
            .expect("blobs")
            .count(),
        0
    );

    // save --platform: one platform's image, loaded as a plain image.
    let one = b
        .kiln(&["save", "--platform", "linux/arm/v7", "out"])
        .run()
        .success()
        .stdout;
    let third = tempfile::tempdir().expect("temp dir");
    kiln()
        .root(third.path())
        .args(["load", "-q"])
        .stdin(&one)
        .run()
        .success();
    let platform = kiln()
        .root(third.path())
        .args([
            "inspect",
            "--format",
            "{{.Os}}/{{.Architecture}}/{{.Variant}}",
            "out",
        ])
        .run()
        .success()
        .stdout_str();
    assert_eq!(platform, "linux/arm/v7\n");

    // --cache-from in a store with only the base: every platform's steps come from the cache.
    let base = b.kiln(&["save", "base"]).run().success().stdout;
    let fourth = tempfile::tempdir().expect("temp dir");
    kiln()
        .root(fourth.path())
        .args(["load", "-q"])
        .stdin(&base)
        .run()
        .success();
    let built = kiln()
        .root(fourth.path())
        .args([
            "build",
            "--progress",
            "json",
            "--platform",
            platforms,
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
            &ctx.path().display().to_string(),
        ])
        .run()
        .success();
    let events = crate::build::Events::parse(&built.stderr_str());
    assert!(events.ran().is_empty(), "{:?}", events.ran());
    let hits = events.hits();
    let hit = |prefix: &str| hits.iter().filter(|h| h.starts_with(prefix)).count();
    assert_eq!((hit("RUN "), hit("COPY ")), (2, 2), "{hits:?}");
}

/// Must-show: side by side with BuildKit v0.32 (`buildctl --opt platform=linux/amd64,linux/arm64`)
/// on a Dockerfile that uses every platform arg, a `$BUILDPLATFORM` stage and emulated RUN steps:
/// the same index platforms, and for each platform the same image config (the container config,
/// `os`, `architecture`, `variant`), history and file tree. Both start from one base, kiln's
/// `multibase` pushed to the loopback registry.
#[test]
fn kiln_and_buildkit_build_the_same_multi_platform_images() {
    let (Some(()), Some(buildctl), Some(registry)) = (
        support::root(),
        support::peer_buildctl(),
        support::peer_registry(),
    ) else {
        return;
    };
    let Some(b) = multi_builder() else {
        return;
    };
    let base = format!("{registry}/kiln-platform/multibase:latest");
    b.kiln(&["tag", "multibase", &base]).run().success();
    b.kiln(&["push", &base]).run().success();
    let ctx = support::context(&[(
        "Dockerfile",
        r#"ARG BASE
FROM --platform=$BUILDPLATFORM ${BASE} AS build
ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT
WORKDIR /src
RUN echo "on $BUILDPLATFORM|$BUILDOS|$BUILDARCH|$BUILDVARIANT for $TARGETPLATFORM|$TARGETOS|$TARGETARCH|$TARGETVARIANT: $(uname -m)" > built
FROM ${BASE}
ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT
COPY --from=build /src/built /built
RUN echo "$TARGETPLATFORM|$TARGETOS|$TARGETARCH|$TARGETVARIANT|$BUILDPLATFORM|$BUILDOS|$BUILDARCH|$BUILDVARIANT|$(uname -m)" > /final
ENV ARCH=$TARGETARCH
LABEL target=$TARGETPLATFORM variant=v$TARGETVARIANT build=$BUILDPLATFORM
CMD ["cat", "/built", "/final"]
"#,
    )]);
    let out = tempfile::tempdir().expect("temp dir");
    let (kiln_tar, peer_tar) = (out.path().join("kiln.tar"), out.path().join("peer.tar"));
    let platforms = "linux/amd64,linux/arm64";
    b.build(
        ctx.path(),
        &[
            "--platform",
            platforms,
            "--build-arg",
            &format!("BASE={base}"),
            "-o",
            &format!("type=oci,dest={}", kiln_tar.display()),
        ],
    )
    .ok();
    let context = ctx.path().display().to_string();
    let peer = buildctl
        .command()
        .args(["build", "--progress=plain", "--frontend", "dockerfile.v0"])
        .args(["--local", &format!("context={context}")])
        .args(["--local", &format!("dockerfile={context}")])
        .args(["--opt", &format!("platform={platforms}")])
        .args(["--opt", &format!("build-arg:BASE={base}")])
        .args(["--output", &format!("type=oci,dest={}", peer_tar.display())])
        .output()
        .expect("buildctl");
    assert!(
        peer.status.success(),
        "buildctl failed:\n{}",
        String::from_utf8_lossy(&peer.stderr)
    );
    let theirs = crate::build_peer::read_oci_platforms(&peer_tar).expect("the peer's images");
    let ours = crate::build_peer::read_oci_platforms(&kiln_tar).expect("kiln's images");
    let names = |images: &[(String, crate::build_peer::Image)]| -> Vec<String> {
        images.iter().map(|(p, _)| p.clone()).collect()
    };
    assert_eq!(names(&ours), names(&theirs), "the index platforms");
    assert_eq!(names(&ours), ["linux/amd64", "linux/arm64"]);
    let mut differences = Vec::new();
    for ((platform, peer_image), (_, kiln_image)) in theirs.iter().zip(&ours) {
        let mut found = crate::build_peer::compare_configs(&peer_image.config, &kiln_image.config);
        for key in ["os", "architecture", "variant"] {
            if peer_image.config.get(key) != kiln_image.config.get(key) {
                found.push(format!(
                    "{key}: peer {:?}, kiln {:?}",
                    peer_image.config.get(key),
                    kiln_image.config.get(key)
                ));
            }
        }
        found.extend(crate::build_peer::compare_history(peer_image, kiln_image));
        found.extend(crate::build_peer::compare_trees(
            "the peer",
            &peer_image.tree,
            "kiln",
            &kiln_image.tree,
            false,
        ));
        differences.extend(found.into_iter().map(|d| format!("{platform}: {d}")));
    }
    assert!(differences.is_empty(), "{differences:#?}");
    // What the images hold is what each platform said it was.
    let arm = &ours[1].1.tree;
    assert!(
        matches!(&arm["/final"].kind, crate::build_peer::Kind::File(text)
            if text.contains("linux/arm64|linux|arm64||linux/amd64|linux|amd64||aarch64")),
        "{:?}",
        arm["/final"]
    );
}

/// A pull for one platform keeps the image's index with only that platform's image (what runs
/// and is inspected without `--platform` then), a pull for another adds its image; an index
/// with a platform missing is not pushed or saved whole, and says which is missing.
#[test]
fn a_pull_per_platform_fills_the_index_in() {
    let Some(registry) = support::peer_registry() else {
        return;
    };
    let Some(b) = multi_builder() else {
        return;
    };
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name = format!("{registry}/kiln-platform/pulled:t{unique}");
    b.kiln(&["tag", "multibase", &name]).run().success();
    b.kiln(&["push", &name]).run().success();
    // The push went gzip-compressed: the pushed name now names the index as pushed.
    let (entry, _) = stored_entry(b.root(), &name);
    let index_digest = entry["digest"].as_str().expect("digest").to_string();

    let other = tempfile::tempdir().expect("temp dir");
    let k = |args: &[&str]| kiln().root(other.path()).args(args).run();
    let pulled = k(&["pull", "--platform", "linux/arm64", &name])
        .success()
        .stdout_str();
    assert!(
        pulled.contains(&format!("Digest: {index_digest}")),
        "{pulled}"
    );
    let listed = k(&["images", "--no-trunc", "--format", "{{.ID}}"])
        .success()
        .stdout_str();
    assert_eq!(listed, format!("{index_digest}\n"));
    let arch = |args: &[&str]| {
        let mut all = vec!["inspect", "--format", "{{.Architecture}}"];
        all.extend(args);
        all.push(&name);
        k(&all)
    };
    assert_eq!(arch(&[]).success().stdout_str(), "arm64\n");
    let missing = arch(&["--platform", "linux/amd64"]).code(1).stderr_str();
    assert!(
        missing.contains("no image for platform linux/amd64 here (it has: linux/arm64)"),
        "{missing}"
    );
    k(&[
        "tag",
        &name,
        &format!("{registry}/kiln-platform/partial:t{unique}"),
    ])
    .success();
    let refused = k(&[
        "push",
        &format!("{registry}/kiln-platform/partial:t{unique}"),
    ])
    .failure()
    .stderr_str();
    assert!(
        refused.contains("does not have its images for linux/amd64"),
        "{refused}"
    );
    let refused = k(&["save", "--format", "oci", &name])
        .failure()
        .stderr_str();
    assert!(
        refused.contains("cannot save") && refused.contains("linux/amd64"),
        "{refused}"
    );

    k(&[
        "rmi",
        &format!("{registry}/kiln-platform/partial:t{unique}"),
    ])
    .success();
    k(&["pull", "--platform", "linux/amd64", &name]).success();
    assert_eq!(arch(&[]).success().stdout_str(), "amd64\n");
    assert_eq!(
        arch(&["--platform", "linux/arm64"]).success().stdout_str(),
        "arm64\n"
    );
    let listed = k(&["images", "--no-trunc", "--format", "{{.ID}}"])
        .success()
        .stdout_str();
    assert_eq!(listed, format!("{index_digest}\n"), "still one image");
}

/// `kiln import --platform` says the platform of a root filesystem of another architecture;
/// it then runs under its emulator.
#[test]
fn an_imported_root_filesystem_says_the_platform_given() {
    let (Some(()), Some(arm64)) = (support::root(), arm64_busybox()) else {
        return;
    };
    let root = tempfile::tempdir().expect("temp dir");
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_path_with_name(&arm64, "bin/busybox")
        .expect("append");
    let bytes = tar.into_inner().expect("tar");
    kiln()
        .root(root.path())
        .args(["import", "--platform", "linux/arm64/v8", "-", "arm-import"])
        .stdin(bytes)
        .run()
        .success();
    let platform = kiln()
        .root(root.path())
        .args([
            "inspect",
            "--format",
            "{{.Os}}/{{.Architecture}}/{{.Variant}}",
            "arm-import",
        ])
        .run()
        .success()
        .stdout_str();
    assert_eq!(platform, "linux/arm64/\n", "normalised: arm64/v8 is arm64");
    if runs_arm64().is_none() {
        return;
    }
    let machine = kiln()
        .root(root.path())
        .args(["run", "--rm", "arm-import", "/bin/busybox", "uname", "-m"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(machine, "aarch64\n");
}
