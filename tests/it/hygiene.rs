//! Issue 17's output hygiene and leftovers, through the binary:
//!
//! - names from a hostile tar (`ESC[2J`, `ESC]0;title BEL`, a newline), a Dockerfile and an
//!   image's labels reach errors, progress lines, `history` and `inspect` text escaped (`\u{1b}`),
//!   never as raw control bytes, and a newline in them cannot start a line of its own;
//! - a `kiln save -o F` killed with SIGKILL leaves its temporary file, which the next save to F
//!   removes; a build's `-o type=tar,dest=F` and `--metadata-file F` remove dead writers' temporary
//!   files beside F and keep a live writer's;
//! - the messages that misled: a `#!` interpreter missing from the image, a WORKDIR under
//!   `/proc`, an `/etc/passwd` that is not a regular file.

use crate::build::builder;
use crate::support::kiln;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// The terminal attacks of the issue: clear the screen, retitle the window, and a newline that
/// would start a fake line of kiln's output.
const HOSTILE: &str = "evil\u{1b}[2J\u{1b}]0;title\u{7}\nerror: fake";

/// Asserts `stderr` holds no raw ESC or BEL and shows the hostile name escaped.
fn assert_escaped(stderr: &[u8], what: &str) {
    let text = String::from_utf8_lossy(stderr);
    assert!(
        !stderr.contains(&0x1b) && !stderr.contains(&0x07),
        "{what}: a raw control byte reached stderr:\n{text:?}"
    );
    assert!(
        text.contains(r"\u{1b}[2J") && text.contains(r"\u{1b}]0;title\u{7}"),
        "{what}: the escaped form is missing:\n{text}"
    );
    assert!(
        !text.lines().any(|line| line.starts_with("error: fake")),
        "{what}: a newline in a name started a line of its own:\n{text}"
    );
}

/// A tar with one entry of each `(name, kind, link)`, written from raw headers (the tar crate
/// refuses some of these names).
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (name, kind, link, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        let old = header.as_old_mut();
        assert!(name.len() < old.name.len() && link.len() < old.linkname.len());
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_cksum();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    }
    bytes.extend_from_slice(&[0u8; 1024]);
    bytes
}

#[test]
fn hostile_tar_names_reach_load_and_import_errors_escaped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");

    // `kiln load`: manifest.json names a config the archive does not have.
    let manifest = serde_json::json!([{
        "Config": format!("{HOSTILE}.json"),
        "RepoTags": ["hostile:1"],
        "Layers": [],
    }])
    .to_string();
    let archive = dir.path().join("load.tar");
    fs::write(
        &archive,
        raw_tar(&[(
            "manifest.json",
            tar::EntryType::Regular,
            "",
            manifest.as_bytes(),
        )]),
    )
    .expect("write archive");
    let out = kiln()
        .root(&root)
        .args(["load", "-i"])
        .arg(&archive)
        .run()
        .failure();
    assert_escaped(&out.stderr, "kiln load");
    assert_eq!(
        out.stderr_str().lines().count(),
        1,
        "one error line:\n{}",
        out.stderr_str()
    );

    // `kiln import`: a hard link to a target the tar does not hold, both names hostile.
    let rootfs = dir.path().join("rootfs.tar");
    let name = format!("dir/{HOSTILE}");
    let target = format!("missing/{HOSTILE}");
    fs::write(
        &rootfs,
        raw_tar(&[
            ("dir/", tar::EntryType::Directory, "", b""),
            (&name, tar::EntryType::Link, &target, b""),
        ]),
    )
    .expect("write rootfs");
    let out = kiln()
        .root(&root)
        .arg("import")
        .arg(&rootfs)
        .arg("hostile:2")
        .run()
        .failure();
    assert_escaped(&out.stderr, "kiln import");
}

#[test]
fn dockerfile_escapes_reach_errors_and_progress_lines_escaped() {
    let Some(b) = builder() else { return };
    // An instruction argument: in the step's progress header, its output lines, its error.
    let dockerfile = "FROM base\nRUN echo \"\u{1b}[2J\" && echo \"\u{1b}]0;title\u{7}\" && false\n";
    let ctx = b.context(&[("Dockerfile", dockerfile)]);
    let out = b
        .kiln(&["build", "--progress", "plain"])
        .arg(ctx.path())
        .run()
        .failure();
    let text = out.stderr_str();
    for raw in [&b"\x1b"[..], b"\x07"] {
        assert!(
            !out.stderr.windows(raw.len()).any(|w| w == raw),
            "raw control byte on stderr:\n{text:?}"
        );
    }
    let header = text
        .lines()
        .find(|l| l.starts_with('#') && l.contains("RUN echo"))
        .unwrap_or_else(|| panic!("no progress header:\n{text}"));
    assert!(header.contains(r#"RUN echo "\u{1b}[2J""#), "{header}");
    assert!(
        text.lines()
            .any(|l| l.starts_with('#') && l.ends_with(r"\u{1b}]0;title\u{7}")),
        "the step's output line, escaped:\n{text}"
    );
    let error = text
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{text}"));
    assert!(error.contains(r#"echo \"\u{1b}]0;title\u{7}\""#), "{error}");

    // A stage name: refused, and the message quotes it escaped.
    let ctx = b.context(&[(
        "Dockerfile",
        "FROM base AS st\u{1b}]0;title\u{7}x\u{1b}[2J\n",
    )]);
    let out = b.kiln(&["build"]).arg(ctx.path()).run().failure();
    let text = out.stderr_str();
    assert!(
        !out.stderr.contains(&0x1b) && !out.stderr.contains(&0x07),
        "{text:?}"
    );
    assert!(
        text.contains(r"invalid stage name") && text.contains(r"\u{1b}]0;title\u{7}x\u{1b}[2J"),
        "{text}"
    );
}

#[test]
fn an_image_label_with_escapes_is_escaped_in_history_and_inspect_text() {
    let Some(b) = builder() else { return };
    let dockerfile = "FROM base\nLABEL evil=\"a\u{1b}[2J\u{1b}]0;title\u{7}b\"\n";
    let ctx = b.context(&[("Dockerfile", dockerfile)]);
    b.build(ctx.path(), &["-t", "labelled"]).ok();

    let no_raw = |bytes: &[u8], what: &str| {
        assert!(
            !bytes.contains(&0x1b) && !bytes.contains(&0x07),
            "{what}: raw control byte:\n{:?}",
            String::from_utf8_lossy(bytes)
        );
    };
    let history = b
        .kiln(&["history", "--no-trunc", "labelled"])
        .run()
        .success();
    no_raw(&history.stdout, "history");
    assert!(
        history
            .stdout_str()
            .contains(r"LABEL evil=a\u{1b}[2J\u{1b}]0;title\u{7}b"),
        "{}",
        history.stdout_str()
    );
    let format = b
        .kiln(&["inspect", "--format", "{{.Config.Labels}}", "labelled"])
        .run()
        .success();
    no_raw(&format.stdout, "inspect --format");
    assert_eq!(
        format.stdout_str(),
        "map[evil:a\\u{1b}[2J\\u{1b}]0;title\\u{7}b]\n"
    );
    // JSON stays JSON: escaped by JSON's own rules, the same string to a reader.
    let json = b.kiln(&["inspect", "labelled"]).run().success();
    no_raw(&json.stdout, "inspect");
    let doc = json.stdout_json();
    assert_eq!(
        doc[0]["Config"]["Labels"]["evil"],
        "a\u{1b}[2J\u{1b}]0;title\u{7}b"
    );
}

/// The temporary files beside `target` (`.NAME.*.tmp`).
fn temp_files(target: &Path) -> Vec<String> {
    let prefix = format!(".{}.", target.file_name().unwrap().to_string_lossy());
    let mut names: Vec<String> = fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".tmp"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_killed_save_leaves_a_temp_file_that_the_next_save_removes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = kiln::store::Store::open(&dir.path().join("store")).expect("store");
    // 48 MiB in one layer: the save writes (and syncs) long enough to be caught mid-write.
    let big = "0123456789abcdef".repeat(3 << 20);
    crate::store::build_image(
        &store,
        &crate::store::Spec {
            layers: &[&[("big", &big)]],
            created: "2024-02-29T12:00:00Z",
            cmd: &["/big"],
        },
    );
    let id = store.images().expect("images")[0].image.id.to_string();
    drop(store);
    let out_dir = tempfile::tempdir().expect("out dir");
    let target = out_dir.path().join("image.tar");
    let save = || {
        kiln()
            .root(dir.path().join("store"))
            .args(["save", "-o"])
            .arg(&target)
            .arg(&id)
    };

    let mut child = save().spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    let left = loop {
        let found = temp_files(&target);
        if !found.is_empty() {
            // SIGKILL: the process cannot remove anything.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill");
            child.wait().expect("wait");
            break found;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("the save ended ({status}) before its temporary file was seen");
        }
        assert!(Instant::now() < deadline, "no temporary file appeared");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(temp_files(&target), left, "the killed save's file stays");
    assert!(
        left[0].contains(&format!(".kiln-{}-", child.id())),
        "named by its writer: {left:?}"
    );
    assert!(!target.exists(), "no half archive under the final name");

    save().run().success();
    assert_eq!(temp_files(&target), Vec::<String>::new(), "cleaned up");
    // A whole archive: docker's manifest and the layer, readable to the end.
    let mut archive = tar::Archive::new(fs::File::open(&target).expect("open"));
    let names: Vec<String> = archive
        .entries()
        .expect("tar")
        .map(|e| e.expect("entry").path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "manifest.json"), "{names:?}");
    let fresh = tempfile::tempdir().expect("fresh store");
    kiln()
        .root(fresh.path())
        .args(["load", "-i"])
        .arg(&target)
        .run()
        .success();
}

#[test]
fn a_missing_shebang_interpreter_is_named_in_run_steps_and_kiln_run() {
    let Some(b) = builder() else { return };
    let dockerfile = "FROM base\n\
        RUN printf '#!/bin/bash\\necho hi\\n' > /script && printf '#!/bin/sh\\r\\necho hi\\r\\n' > /crlf && chmod +x /script /crlf\n";
    let ctx = b.context(&[("Dockerfile", dockerfile)]);
    b.build(ctx.path(), &["-t", "scripts"]).ok();

    let ctx = b.context(&[("Dockerfile", "FROM scripts\nRUN [\"/script\"]\n")]);
    let stderr = b.build(ctx.path(), &[]).fails();
    assert!(
        stderr.contains(
            "exec: \\\"/script\\\": the interpreter /bin/bash named on the #! line of /script is not in the image"
        ) || stderr.contains(
            "exec: \"/script\": the interpreter /bin/bash named on the #! line of /script is not in the image"
        ),
        "{stderr}"
    );

    let out = b
        .kiln(&["run", "--rm", "scripts", "/script"])
        .run()
        .code(127);
    assert!(
        out.stderr_str().contains(
            "the interpreter /bin/bash named on the #! line of /script is not in the image"
        ),
        "{}",
        out.stderr_str()
    );
    // Found through PATH too, and a carriage return at the end of the line is pointed out.
    let out = b
        .kiln(&["run", "--rm", "-e", "PATH=/", "scripts", "crlf"])
        .run()
        .code(127);
    let text = out.stderr_str();
    assert!(
        text.contains(
            r"the interpreter /bin/sh\r named on the #! line of /crlf is not in the image"
        ) && text.contains("Windows (CRLF) line endings"),
        "{text}"
    );
    // A dynamically linked binary of the host (glibc) in the busybox image: its loader is missing.
    let host_true = fs::read("/bin/true").expect("read /bin/true");
    let dynamic = host_true.windows(4).any(|w| w == b"/ld-");
    if let Some(()) = crate::support::require(
        "a dynamically linked /bin/true (the loader case)",
        dynamic.then_some(()),
    ) {
        let ctx = b.context(&[("Dockerfile", "FROM scripts\nCOPY true /true\n")]);
        fs::write(ctx.path().join("true"), &host_true).expect("copy /bin/true");
        fs::set_permissions(
            ctx.path().join("true"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        b.build(ctx.path(), &["-t", "glibc"]).ok();
        let out = b.kiln(&["run", "--rm", "glibc", "/true"]).run().code(127);
        let text = out.stderr_str();
        assert!(
            text.contains("the dynamic loader /")
                && text.contains("that the ELF binary /true needs is not in the image"),
            "{text}"
        );
    }
    // A program that is not there at all is still just missing.
    let out = b
        .kiln(&["run", "--rm", "scripts", "/nothing"])
        .run()
        .code(127);
    assert!(
        out.stderr_str().contains("no such file or directory"),
        "{}",
        out.stderr_str()
    );
}

#[test]
fn a_workdir_under_proc_says_what_is_wrong() {
    let Some(b) = builder() else { return };
    let ctx = b.context(&[(
        "Dockerfile",
        "FROM base\nWORKDIR /proc/self/fd/3\nRUN pwd\n",
    )]);
    let stderr = b.build(ctx.path(), &[]).fails();
    assert!(
        stderr.contains("cannot create the working directory /proc/self/fd/3: /proc is where the sandbox mounts the kernel's process information (procfs), not a directory of the image"),
        "{stderr}"
    );
    assert!(!stderr.contains("ELOOP"), "{stderr}");
    let out = b
        .kiln(&["run", "--rm", "-w", "/proc/self/fd/3", "base", "pwd"])
        .run()
        .failure();
    assert!(
        out.stderr_str()
            .contains("a working directory (WORKDIR, -w) must be a directory inside the image"),
        "{}",
        out.stderr_str()
    );
}

#[test]
fn an_etc_passwd_that_is_not_a_file_says_what_it_is() {
    let Some(b) = builder() else { return };
    for (make, expected) in [
        (
            "mknod /etc/passwd c 1 3",
            "/etc/passwd in the image is a character device, not a regular file",
        ),
        (
            "mkfifo /etc/passwd",
            "/etc/passwd in the image is a FIFO, not a regular file",
        ),
        (
            "mkdir /etc/passwd",
            "/etc/passwd in the image is a directory, not a regular file",
        ),
        (
            "ln -s /../../../etc/shadow /etc/passwd",
            "/etc/passwd in the image is a symbolic link to /../../../etc/shadow, which is not in the image",
        ),
    ] {
        let dockerfile = format!("FROM base\nRUN rm /etc/passwd && {make}\nUSER app\nRUN id\n");
        let ctx = b.context(&[("Dockerfile", &dockerfile)]);
        let stderr = b.build(ctx.path(), &[]).fails();
        assert!(stderr.contains(expected), "{make}: {stderr}");
        assert!(!stderr.contains("no matching entries"), "{make}: {stderr}");
    }
}

/// This process's start time (field 22 of `/proc/self/stat`), as kiln names live writers.
fn own_start_time() -> u64 {
    let stat = fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 1..];
    after_name
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .expect("start time")
}

#[test]
fn a_builds_tar_export_and_metadata_file_remove_dead_writers_temp_files_only() {
    let Some(b) = builder() else { return };
    let out = tempfile::tempdir().expect("out dir");
    let tar = out.path().join("rootfs.tar");
    let metadata = out.path().join("meta.json");
    // A dead writer's (its pid cannot exist), an older kiln's, and a live writer's (this test
    // process, at its real start time) beside each target.
    let live = format!("kiln-{}-{}-0", std::process::id(), own_start_time());
    let mut planted = Vec::new();
    for target in ["rootfs.tar", "meta.json"] {
        for middle in ["kiln-2147483647-5-0", "kiln-2147483647", live.as_str()] {
            let path = out.path().join(format!(".{target}.{middle}.tmp"));
            fs::write(&path, b"partial").expect("plant");
            planted.push((path, middle == live));
        }
    }
    let ctx = b.context(&[("Dockerfile", "FROM base\nRUN echo hi > /hi\n")]);
    let dest = format!("type=tar,dest={}", tar.display());
    let meta = metadata.display().to_string();
    b.build(ctx.path(), &["-o", &dest, "--metadata-file", &meta])
        .ok();
    assert!(tar.is_file() && metadata.is_file());
    for (path, is_live) in planted {
        assert_eq!(path.exists(), is_live, "{}", path.display());
    }
}
