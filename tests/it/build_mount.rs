//! `RUN --mount` end to end (issue 13): bind mounts of the context and of stages, cache mounts
//! kept between builds and shared by `sharing=`, tmpfs, secrets, ssh, heredoc scripts and
//! `--security=insecure`, on the busybox base of `build.rs`. What a mount shows is read from
//! the step's output written into the image; what must not be in a layer is checked in the
//! exported filesystem.

use crate::build::{Builder, builder};
use std::fs;
use std::path::{Path, PathBuf};

/// Builds `dockerfile` in `ctx` with `args`, exporting the filesystem; returns its root.
fn build_fs(builder: &Builder, ctx: &Path, dockerfile: &str, args: &[&str]) -> PathBuf {
    fs::write(ctx.join("Dockerfile"), dockerfile).expect("write Dockerfile");
    let out = builder.root().join(format!(
        "fs-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let dest = format!("type=local,dest={}", out.display());
    let mut all = args.to_vec();
    all.extend(["-o", dest.as_str()]);
    builder.build(ctx, &all).ok();
    out
}

fn read(root: &Path, path: &str) -> String {
    fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn a_context_bind_mount_shows_the_source_read_only_and_busts_only_its_step() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[
        ("src/a.txt", "a1\n"),
        ("src/sub/b.txt", "b\n"),
        ("other.txt", "other\n"),
        ("secret.key", "ignored\n"),
        (".dockerignore", "secret.key\n"),
    ]);
    let dockerfile = "FROM base\n\
        RUN --mount=type=bind,source=src,target=/mnt/src cat /mnt/src/a.txt /mnt/src/sub/b.txt > /from-src\n\
        RUN --mount=target=/ctx ls /ctx > /ctx-listing; cat /ctx/other.txt > /from-other\n\
        RUN --mount=type=bind,source=other.txt,target=/one.txt cat /one.txt > /from-file\n\
        RUN --mount=type=bind,source=src,target=/ro touch /ro/new 2> /ro-error || true\n";
    let root = build_fs(&builder, ctx.path(), dockerfile, &[]);
    assert_eq!(read(&root, "from-src"), "a1\nb\n");
    assert_eq!(read(&root, "from-other"), "other\n");
    assert_eq!(read(&root, "from-file"), "other\n");
    let listing = read(&root, "ctx-listing");
    assert!(
        listing.contains("other.txt") && listing.contains("src"),
        "{listing}"
    );
    assert!(
        !listing.contains("secret.key"),
        ".dockerignore applies to a context mount: {listing}"
    );
    assert!(
        read(&root, "ro-error").contains("Read-only file system"),
        "a bind mount is read-only by default"
    );
    // The mount points the sandbox made are not in the layers.
    for stub in ["mnt", "ctx", "one.txt", "ro"] {
        assert!(
            !root.join(stub).exists(),
            "/{stub} is a mount stub in the image"
        );
    }

    // Changing a file one mount reads reruns only that step (and those after it).
    fs::write(ctx.path().join("other.txt"), "changed\n").expect("write");
    let built = builder.build(ctx.path(), &[]);
    built.ok();
    let ran = built.events.ran();
    assert!(
        !ran.iter().any(|r| r.contains("/mnt/src")),
        "the src mount step reran: {ran:?}"
    );
    assert!(ran.iter().any(|r| r.contains("/ctx")), "{ran:?}");
    assert!(ran.iter().any(|r| r.contains("/one.txt")), "{ran:?}");
    // Changing an ignored file reruns nothing.
    fs::write(ctx.path().join("secret.key"), "changed\n").expect("write");
    let built = builder.build(ctx.path(), &[]);
    built.ok();
    assert_eq!(built.events.ran(), Vec::<&str>::new());
}

#[test]
fn rw_bind_writes_vanish_and_stage_mounts_read_the_stage() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[("data/x", "x\n")]);
    let dockerfile = "FROM base AS build\n\
        RUN mkdir -p /out && echo built > /out/artifact && ln -s /etc/passwd /out/link\n\
        FROM base\n\
        RUN --mount=type=bind,from=build,source=/out,target=/in cat /in/artifact > /got && readlink /in/link > /got-link\n\
        RUN --mount=type=bind,source=data,target=/data,rw echo scribble > /data/x && cat /data/x > /saw-write\n\
        RUN --mount=type=bind,source=data,target=/data cat /data/x > /after\n\
        RUN --mount=type=bind,from=build,source=/out,target=/w,rw echo new > /w/new && echo changed > /w/artifact && cat /w/new > /stage-write\n\
        RUN --mount=type=bind,from=build,source=/out,target=/w (ls /w; cat /w/artifact) > /stage-after\n\
        RUN --mount=type=bind,from=build,source=/out/artifact,target=/one cat /one > /stage-file\n";
    let root = build_fs(&builder, ctx.path(), dockerfile, &[]);
    assert_eq!(read(&root, "got"), "built\n");
    assert_eq!(read(&root, "got-link"), "/etc/passwd\n");
    assert_eq!(read(&root, "saw-write"), "scribble\n");
    assert_eq!(
        read(&root, "after"),
        "x\n",
        "an rw mount's writes are discarded"
    );
    assert_eq!(
        fs::read_to_string(ctx.path().join("data/x")).expect("read"),
        "x\n",
        "the context is never written"
    );
    assert!(
        !root.join("out").exists(),
        "the build stage is not in the image"
    );
}

#[test]
fn a_cache_mount_is_warm_in_the_next_build_and_never_in_a_layer() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[("input", "1\n")]);
    let dockerfile = "FROM base\n\
        COPY input /input\n\
        RUN --mount=type=cache,target=/var/cache/app (cat /var/cache/app/seen 2>/dev/null || echo cold) > /state && cat /input >> /var/cache/app/seen\n";
    let first = build_fs(&builder, ctx.path(), dockerfile, &[]);
    assert_eq!(read(&first, "state"), "cold\n");
    assert!(
        !first.join("var/cache/app/seen").exists(),
        "the cache's content is not in the layer"
    );
    fs::write(ctx.path().join("input"), "2\n").expect("write");
    let second = build_fs(&builder, ctx.path(), dockerfile, &[]);
    assert_eq!(
        read(&second, "state"),
        "1\n",
        "the second build sees the cache"
    );
    // `kiln df` counts it; `kiln prune --keep-cache-mounts` keeps it, `kiln prune` drops it.
    let cache_row = |builder: &Builder| {
        let df = builder.kiln(&["df"]).run().success().stdout_str();
        df.lines()
            .find(|l| l.starts_with("Cache mounts"))
            .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no cache mounts row: {df}"))
    };
    assert_eq!(cache_row(&builder), "1");
    builder
        .kiln(&["prune", "-f", "--keep-cache-mounts"])
        .run()
        .success();
    assert_eq!(cache_row(&builder), "1");
    let pruned = builder.kiln(&["prune", "-f"]).run().success().stdout_str();
    assert!(pruned.contains("1 cache mount"), "{pruned}");
    assert_eq!(cache_row(&builder), "0");
    fs::write(ctx.path().join("input"), "3\n").expect("write");
    let third = build_fs(&builder, ctx.path(), dockerfile, &[]);
    assert_eq!(
        read(&third, "state"),
        "cold\n",
        "a pruned cache starts cold"
    );
}

#[test]
fn cache_mount_ids_modes_and_seeds() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[]);
    let dockerfile = "FROM base AS seed\n\
        RUN mkdir -p /s && echo seeded > /s/file\n\
        FROM base\n\
        RUN --mount=type=cache,id=shared-id,target=/a echo via-a > /a/f\n\
        RUN --mount=type=cache,id=shared-id,target=/b cat /b/f > /same-id\n\
        RUN --mount=type=cache,target=/m,mode=0700,uid=1234,gid=4321 stat -c '%a %u %g' /m > /mode\n\
        RUN --mount=type=cache,target=/sd,from=seed,source=/s cat /sd/file > /seeded\n\
        RUN --mount=type=cache,target=/r,ro touch /r/x 2> /ro-error || true\n";
    let root = build_fs(&builder, ctx.path(), dockerfile, &[]);
    assert_eq!(read(&root, "same-id"), "via-a\n");
    assert_eq!(read(&root, "mode"), "700 1234 4321\n");
    assert_eq!(read(&root, "seeded"), "seeded\n");
    assert!(read(&root, "ro-error").contains("Read-only file system"));
}

#[test]
fn a_heredoc_script_with_a_shebang_runs_as_a_file() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[]);
    let dockerfile = "FROM base\n\
        RUN <<EOF\n\
#!/bin/sh -e\n\
echo \"script $0\" > /script-out\n\
EOF\n\
        RUN <<-EOT\n\
\t#!/bin/sh\n\
\techo chomped > /chomp-out\n\
\tEOT\n\
        RUN <<  SPACED\n\
echo spaced > /spaced-out\n\
SPACED\n";
    let root = build_fs(&builder, ctx.path(), dockerfile, &[]);
    assert_eq!(
        read(&root, "spaced-out"),
        "spaced\n",
        "`<<  NAME` is a heredoc"
    );
    assert_eq!(read(&root, "script-out"), "script /dev/pipes/EOF\n");
    assert_eq!(read(&root, "chomp-out"), "chomped\n");
    assert!(!root.join("dev/pipes").exists());
}

#[test]
fn security_insecure_needs_the_entitlement() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[]);
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM base\nRUN --security=insecure grep CapEff /proc/self/status > /caps\n",
    )
    .expect("write");
    let err = builder.build(ctx.path(), &[]).fails();
    assert!(err.contains("security.insecure"), "{err}");
    assert!(err.contains("--allow security.insecure"), "{err}");
    // With it: every capability and no seccomp filter, for that step only.
    // A privileged step that remounts a stage mount writable writes into a scratch upper
    // directory, never into the store's snapshot of that stage.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM base AS build\n\
         RUN mkdir /out && echo built > /out/artifact\n\
         FROM base\n\
         RUN --security=insecure grep -E '^(CapEff|Seccomp):' /proc/self/status > /insecure\n\
         RUN grep -E '^(CapEff|Seccomp):' /proc/self/status > /normal\n\
         RUN --security=insecure --mount=from=build,source=/out,target=/w mount -o remount,rw /w; echo hacked > /w/artifact; true\n\
         RUN --mount=from=build,source=/out,target=/w cat /w/artifact > /after-insecure\n\
         RUN --security=insecure --mount=source=data,target=/d mount -o remount,rw /d; echo hacked > /d/x; true\n",
    )
    .expect("write");
    fs::create_dir(ctx.path().join("data")).expect("mkdir");
    fs::write(ctx.path().join("data/x"), "mine\n").expect("write");
    let root = build_fs(
        &builder,
        ctx.path(),
        &fs::read_to_string(ctx.path().join("Dockerfile")).expect("read"),
        &["--allow", "security.insecure"],
    );
    let insecure = read(&root, "insecure");
    // Every capability kiln itself may have (the host's bounding set).
    let status = fs::read_to_string("/proc/self/status").expect("status");
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd")
        .trim();
    assert!(
        insecure.contains(&format!("CapEff:\t{bounding}")),
        "{insecure}"
    );
    assert!(insecure.contains("Seccomp:\t0"), "{insecure}");
    let normal = read(&root, "normal");
    assert!(normal.contains("CapEff:\t00000000a80425fb"), "{normal}");
    assert!(normal.contains("Seccomp:\t2"), "{normal}");
    assert_eq!(read(&root, "after-insecure"), "built\n");
    assert_eq!(
        fs::read_to_string(ctx.path().join("data/x")).expect("read"),
        "mine\n",
        "a privileged step wrote into the build context"
    );
}

#[test]
fn a_step_that_swaps_a_stub_parent_for_a_symlink_deletes_nothing_outside() {
    // CVE-2024-23652: BuildKit removed the mount stubs it made by path after the run; a step
    // that replaced a stub's parent by a symlink made it delete on the host.
    let Some(builder) = builder() else { return };
    let victim = tempfile::tempdir().expect("temp dir");
    fs::create_dir_all(victim.path().join("a/b")).expect("mkdir");
    let ctx = builder.context(&[]);
    let dockerfile = format!(
        "FROM base\n\
         RUN --mount=type=tmpfs,target=/stub/a/b mv /stub /moved 2>/dev/null; rm -rf /stub; ln -s {} /stub; true\n\
         RUN --mount=type=cache,target=/stub2/a/b rm -rf /stub2 2>/dev/null; mv /stub2 /moved2; ln -s {} /stub2; true\n",
        victim.path().display(),
        victim.path().display()
    );
    build_fs(&builder, ctx.path(), &dockerfile, &[]);
    assert!(
        victim.path().join("a/b").is_dir(),
        "kiln removed a host directory through a symlink the step left"
    );
}

#[test]
fn locked_cache_mounts_serialise_concurrent_builds_and_private_ones_copy() {
    let Some(builder) = builder() else { return };
    // Two builds at once, each holding a `locked` cache for a while and recording when it held
    // it: the intervals never overlap. Different context files so neither is a cache hit.
    let dockerfile = |sharing: &str| {
        format!(
            "FROM base\nCOPY tag /tag\n\
             RUN --mount=type=cache,id=c-{sharing},target=/c,sharing={sharing} \
             echo $(cat /tag) >> /c/log; ls /c > /seen-before; \
             cut -d\" \" -f1 /proc/uptime | tr -d . > /start; sleep 1; cut -d\" \" -f1 /proc/uptime | tr -d . > /end; \
             cat /c/log > /log-after\n"
        )
    };
    let run_pair = |sharing: &str| -> Vec<(u128, u128, String)> {
        let ctxs: Vec<_> = ["one", "two"]
            .iter()
            .map(|tag| {
                let ctx = builder.context(&[("tag", tag)]);
                fs::write(ctx.path().join("Dockerfile"), dockerfile(sharing)).expect("write");
                ctx
            })
            .collect();
        let outs: Vec<PathBuf> = ctxs
            .iter()
            .enumerate()
            .map(|(i, _)| builder.root().join(format!("out-{sharing}-{i}")))
            .collect();
        let mut children: Vec<_> = ctxs
            .iter()
            .zip(&outs)
            .map(|(ctx, out)| {
                builder
                    .kiln(&[
                        "build",
                        "-o",
                        &format!("type=local,dest={}", out.display()),
                        &ctx.path().display().to_string(),
                    ])
                    .spawn()
            })
            .collect();
        for child in children.drain(..) {
            let out = child.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "a concurrent build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        outs.iter()
            .map(|out| {
                let n = |f: &str| read(out, f).trim().parse::<u128>().expect("a time");
                (n("start"), n("end"), read(out, "log-after"))
            })
            .collect()
    };
    let locked = run_pair("locked");
    let [(s1, e1, log1), (s2, e2, log2)] = locked.as_slice() else {
        panic!("two builds")
    };
    assert!(
        e1 <= s2 || e2 <= s1,
        "locked holders overlapped: {locked:?}"
    );
    // The one that ran second saw the first's line.
    let longer = if log1.lines().count() > log2.lines().count() {
        log1
    } else {
        log2
    };
    assert_eq!(longer.lines().count(), 2, "{locked:?}");

    let private = run_pair("private");
    // Overlapping private holders each got their own directory: each log has one line.
    let [(s1, e1, log1), (s2, e2, log2)] = private.as_slice() else {
        panic!("two builds")
    };
    if s1 < e2 && s2 < e1 {
        assert_eq!(log1.lines().count(), 1, "{private:?}");
        assert_eq!(log2.lines().count(), 1, "{private:?}");
    } else {
        eprintln!("notice: the two private builds did not overlap; copies not checked");
    }
}

/// Every file under `dir` (recursively, symlinks not followed) whose bytes contain `needle`,
/// looking inside gzip streams too (layers are compressed).
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    use std::io::Read as _;
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let holds = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let bytes = fs::read(&path).unwrap_or_default();
        let mut plain = Vec::new();
        let gunzipped = flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut plain)
            .is_ok();
        if holds(&bytes) || (gunzipped && holds(&plain)) {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_secret_reaches_the_step_and_nothing_else() {
    let Some(builder) = builder() else { return };
    let secret = "s3cr3t-kiln-issue13-value";
    let secrets = tempfile::tempdir().expect("temp dir");
    let file = secrets.path().join("token");
    fs::write(&file, secret).expect("write secret");
    let ctx = builder.context(&[]);
    let dockerfile = "FROM base\n\
        RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /len && stat -c '%a %u %g' /run/secrets/token > /mode\n\
        RUN --mount=type=secret,id=token,env=TOKEN,target=/s,mode=0440,uid=1234 sh -c 'echo ${#TOKEN} > /env-len; stat -c \"%a %u %g\" /s > /custom'\n\
        RUN --mount=type=secret,id=ENVSECRET,env=FROMENV sh -c 'echo $FROMENV | wc -c > /from-env'\n\
        RUN --mount=type=secret,id=missing (test -e /run/secrets/missing && echo there || echo absent) > /optional\n";
    let cache = builder.root().join("cache-export");
    let cache_to = format!("type=local,dest={},mode=max", cache.display());
    let src = format!("id=token,src={}", file.display());
    fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("write");
    let export = builder.root().join("export");
    let out = builder
        .kiln(&[
            "build",
            "--progress",
            "plain",
            "--secret",
            &src,
            "--secret",
            "id=ENVSECRET,env=KILN_TEST_SECRET_ENV",
            "--cache-to",
            &cache_to,
            "-o",
            &format!("type=local,dest={}", export.display()),
            "-t",
            "secret-test",
            &ctx.path().display().to_string(),
        ])
        .env("KILN_TEST_SECRET_ENV", secret)
        .run()
        .success();
    assert_eq!(read(&export, "len").trim(), secret.len().to_string());
    assert_eq!(read(&export, "mode"), "400 0 0\n");
    assert_eq!(read(&export, "env-len").trim(), secret.len().to_string());
    assert_eq!(read(&export, "custom"), "440 1234 0\n");
    assert_eq!(
        read(&export, "from-env").trim(),
        (secret.len() + 1).to_string()
    );
    assert_eq!(read(&export, "optional"), "absent\n");
    assert!(!export.join("run/secrets").exists(), "a secret stub stayed");
    // Its bytes are nowhere: the store (layers, configs, history, cache records), the
    // exported filesystem and cache, and kiln's output.
    let holding = [builder.root(), cache.as_path(), export.as_path()]
        .iter()
        .flat_map(|dir| files_holding(dir, secret.as_bytes()))
        .collect::<Vec<_>>();
    assert!(holding.is_empty(), "the secret is in {holding:?}");
    assert!(!out.stderr_str().contains(secret) && !out.stdout_str().contains(secret));
    let history = builder.history("secret-test").join("\n");
    assert!(!history.contains(secret), "{history}");

    // A required secret that was not given fails the build, naming it.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM base\nRUN --mount=type=secret,id=needed,required cat /run/secrets/needed\n",
    )
    .expect("write");
    let err = builder.build(ctx.path(), &[]).fails();
    assert!(
        err.contains("secret needed") && err.contains("--secret"),
        "{err}"
    );
}

#[test]
fn an_ssh_mount_forwards_the_agent() {
    let Some(builder) = builder() else { return };
    let (Some(ssh_add), Some(ssh_agent), Some(keygen)) = (
        crate::support::tool("ssh-add"),
        crate::support::tool("ssh-agent"),
        crate::support::tool("ssh-keygen"),
    ) else {
        return;
    };
    // An image with ssh-add and the libraries it loads, copied from the host.
    let ldd = std::process::Command::new("ldd")
        .arg(&ssh_add)
        .output()
        .expect("ldd");
    let libs: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(str::to_string)
        .collect();
    let ctx = builder.context(&[]);
    let mut dockerfile = String::from("FROM base\n");
    for (i, path) in libs
        .iter()
        .chain([&ssh_add.display().to_string()])
        .enumerate()
    {
        let real = fs::canonicalize(path).expect("library path");
        fs::copy(&real, ctx.path().join(format!("f{i}"))).expect("copy library");
        dockerfile.push_str(&format!("COPY f{i} {path}\n"));
    }
    dockerfile.push_str(
        "RUN --mount=type=ssh ssh-add -l > /keys 2>&1; echo $SSH_AUTH_SOCK > /sock\n\
         RUN --mount=type=ssh,id=mykey,target=/k.sock SSH_AUTH_SOCK=/k.sock ssh-add -l > /keys2 2>&1 || true\n",
    );
    fs::write(ctx.path().join("Dockerfile"), &dockerfile).expect("write");

    let work = tempfile::tempdir().expect("temp dir");
    let key = work.path().join("id_ed25519");
    let status = std::process::Command::new(&keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test-key", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let socket = work.path().join("agent.sock");
    let mut agent = std::process::Command::new(&ssh_agent)
        .args(["-D", "-a"])
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent");
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let added = std::process::Command::new(&ssh_add)
        .arg(&key)
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .expect("ssh-add");
    assert!(added.status.success(), "{added:?}");
    let export = work.path().join("export");
    let out = builder
        .kiln(&[
            "build",
            "--ssh",
            &format!("default={}", socket.display()),
            "--ssh",
            &format!("mykey={}", key.display()),
            "-o",
            &format!("type=local,dest={}", export.display()),
            &ctx.path().display().to_string(),
        ])
        .run();
    let _ = agent.kill();
    let _ = agent.wait();
    out.success();
    let keys = read(&export, "keys");
    assert!(
        keys.contains("kiln-test-key") && keys.contains("ED25519"),
        "{keys}"
    );
    assert_eq!(read(&export, "sock"), "/run/buildkit/ssh_agent.0\n");
    // A key file is served by kiln's own agent.
    let keys2 = read(&export, "keys2");
    assert!(keys2.contains("ED25519"), "{keys2}");
    assert!(!export.join("run/buildkit").exists(), "an ssh stub stayed");
}

#[test]
fn whether_a_secret_was_given_is_in_the_key_and_its_value_is_not() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[]);
    let dockerfile = "FROM base\n\
        RUN --mount=type=secret,id=opt (test -e /run/secrets/opt && echo given || echo absent) > /got\n";
    let secrets = tempfile::tempdir().expect("temp dir");
    let file = secrets.path().join("opt");
    let flag = format!("id=opt,src={}", file.display());
    let without = build_fs(&builder, ctx.path(), dockerfile, &[]);
    assert_eq!(read(&without, "got"), "absent\n");
    fs::write(&file, "one").expect("write");
    let with = build_fs(&builder, ctx.path(), dockerfile, &["--secret", &flag]);
    assert_eq!(
        read(&with, "got"),
        "given\n",
        "the step reran now that it has the secret"
    );
    fs::write(&file, "two").expect("write");
    let built = builder.build(ctx.path(), &["--secret", &flag]);
    built.ok();
    assert_eq!(
        built.events.ran(),
        Vec::<&str>::new(),
        "a new value of the secret is not a new key"
    );
}
