//! Bounds on input from outside (issue 17): a Dockerfile streamed without end (stdin, a FIFO)
//! fails at the 16 MiB cap in bounded memory; 100,000 stages fail at once at the stage cap and
//! a Dockerfile at the cap plans in seconds; SIGTERM and Ctrl-C end the planning phases
//! promptly with docker's exit codes; a gzip bomb is stopped by the decompression ratio cap in
//! `kiln load` and in `ADD` of an archive, naming the knob.
//!
//! Times are asserted only as generous bounds (a regression to the old behaviour took minutes).

use crate::support::{self, kiln};
use kiln::frontend::limits::MAX_STAGES;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a kiln run ended, what it printed on stderr, its peak memory (when measured) and how
/// long it took.
struct Measured {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    max_rss_kib: Option<i64>,
    elapsed: Duration,
}

/// kiln with `args` under GNU time, which writes kiln's peak resident memory (`%M`, from
/// wait4(2)) to `report`. kiln's own `ru_maxrss` as the test could read it would count the test
/// process's memory too: the child is forked from it before it executes kiln.
fn under_time(time: &Path, args: &[&str], report: &Path) -> Command {
    let kiln = kiln().command();
    let mut command = Command::new(time);
    command
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(report)
        .arg(kiln.get_program())
        .args(kiln.get_args())
        .args(args);
    command
}

/// kiln's peak memory (KiB) as [`under_time`] wrote it.
fn peak_kib(report: &Path) -> i64 {
    let text = fs::read_to_string(report).unwrap();
    let last = text.lines().last().unwrap_or_default();
    last.trim()
        .parse()
        .unwrap_or_else(|_| panic!("time wrote {text:?}"))
}

/// Waits for `child`, reading its stderr on the way.
fn wait_measured(mut child: Child, started: Instant) -> Measured {
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let status = child.wait().unwrap();
    let elapsed = started.elapsed();
    let stderr = reader.join().expect("stderr reader");
    Measured {
        code: status.code(),
        signal: status.signal(),
        stderr,
        max_rss_kib: None,
        elapsed,
    }
}

/// Writes `line` over and over to `out` until the reader goes away or `limit` bytes are
/// written (1 GB: the attack's size).
fn generate(mut out: impl std::io::Write, line: &[u8], limit: u64) {
    let chunk: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(line.len() * 8192)
        .collect();
    let mut written = 0u64;
    while written < limit {
        if out.write_all(&chunk).is_err() {
            return;
        }
        written += chunk.len() as u64;
    }
}

const ONE_GB: u64 = 1 << 30;

/// A Dockerfile far past the cap fails at the cap: clear message, bounded memory, quickly.
fn assert_refused_at_the_cap(measured: &Measured, name: &str) {
    assert_eq!(measured.code, Some(1), "{}", measured.stderr);
    assert!(
        measured.stderr.contains(&format!(
            "the Dockerfile {name} is larger than 16777216 bytes"
        )),
        "{}",
        measured.stderr
    );
    assert!(
        measured.stderr.contains("BuildKit's limit"),
        "{}",
        measured.stderr
    );
    // 16 MiB read plus the binary; the unbounded read went to the machine's whole memory.
    let peak = measured.max_rss_kib.expect("measured");
    assert!(peak < 200 * 1024, "peak memory {peak} KiB");
    assert!(
        measured.elapsed < Duration::from_secs(30),
        "took {:?}",
        measured.elapsed
    );
}

#[test]
fn a_one_gigabyte_dockerfile_on_stdin_fails_at_the_cap_in_bounded_memory() {
    let Some(time) = support::tool("time") else {
        return;
    };
    let ctx = support::context(&[("f", "x")]);
    let report = ctx.path().join("time");
    let context = ctx.path().to_str().unwrap();
    for args in [
        vec!["parse", "-f", "-"],
        vec!["build", "--dry-run", "-f", "-", context],
    ] {
        let started = Instant::now();
        let mut child = under_time(&time, &args, &report)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || generate(stdin, b"RUN echo hello\n", ONE_GB));
        let mut measured = wait_measured(child, started);
        writer.join().unwrap();
        measured.max_rss_kib = Some(peak_kib(&report));
        assert_refused_at_the_cap(&measured, "<stdin>");
    }
}

#[test]
fn a_dockerfile_fifo_that_never_ends_fails_at_the_cap() {
    let Some(time) = support::tool("time") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("Dockerfile");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let ctx = support::context(&[("f", "x")]);
    let report = dir.path().join("time");
    let args = [
        "build",
        "--dry-run",
        "-f",
        fifo.to_str().unwrap(),
        ctx.path().to_str().unwrap(),
    ];
    let started = Instant::now();
    let child = under_time(&time, &args, &report)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let out = fs::OpenOptions::new().write(true).open(path).unwrap();
        generate(out, b"FROM scratch\n", ONE_GB);
    });
    let mut measured = wait_measured(child, started);
    writer.join().unwrap();
    measured.max_rss_kib = Some(peak_kib(&report));
    assert_refused_at_the_cap(&measured, &fifo.display().to_string());
}

/// `FROM scratch AS sN` + `COPY f /fN`, `n` times; `chain`: each stage FROM the one before.
fn stages(n: usize, chain: bool) -> String {
    let mut text = String::with_capacity(n * 40);
    for i in 0..n {
        match (chain, i) {
            (true, 0) | (false, _) => text.push_str(&format!("FROM scratch AS s{i}\n")),
            (true, _) => text.push_str(&format!("FROM s{} AS s{i}\n", i - 1)),
        }
        text.push_str(&format!("COPY f /f{i}\n"));
    }
    text
}

#[test]
fn a_hundred_thousand_stages_fail_at_once_and_the_cap_plans_in_seconds() {
    let store = tempfile::tempdir().unwrap();
    let ctx = support::context(&[("f", "x")]);
    fs::write(ctx.path().join("Dockerfile"), stages(100_000, false)).unwrap();
    for args in [
        vec!["build", "--dry-run"],
        vec!["build"],
        vec!["build", "--check"],
    ] {
        let started = Instant::now();
        let out = kiln()
            .root(store.path())
            .args(&args)
            .arg(ctx.path())
            .run()
            .failure();
        let stderr = out.stderr_str();
        assert!(
            stderr.contains(&format!("the Dockerfile has more than {MAX_STAGES} stages")),
            "{args:?}: {stderr}"
        );
        // Located at the first FROM past the cap.
        let line = format!("Dockerfile:{}:1", 2 * MAX_STAGES + 1);
        assert!(stderr.contains(&line), "{args:?}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(30), "{args:?}");
    }

    // At the cap, a chain of stages (each FROM the one before: the worst shape for history and
    // variables) plans, checks and outlines in seconds, not minutes.
    fs::write(ctx.path().join("Dockerfile"), stages(MAX_STAGES, true)).unwrap();
    for args in [
        vec!["build", "--dry-run"],
        vec!["build", "--check"],
        vec!["build", "--call", "outline"],
    ] {
        let started = Instant::now();
        kiln()
            .root(store.path())
            .args(&args)
            .arg(ctx.path())
            .run()
            .success();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}

/// Sends `signal` to the child after `after`, then waits: it must end within a few seconds.
fn signal_after(child: Child, signal: nix::sys::signal::Signal, after: Duration) -> Measured {
    let started = Instant::now();
    std::thread::sleep(after);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    let sent = Instant::now();
    let mut measured = wait_measured(child, started);
    measured.elapsed = sent.elapsed();
    measured
}

#[test]
fn sigterm_and_ctrl_c_end_the_planning_phases_promptly() {
    use nix::sys::signal::Signal;
    let store = tempfile::tempdir().unwrap();
    let ctx = support::context(&[("f", "x")]);
    for (signal, args, code) in [
        (Signal::SIGTERM, vec!["build"], 143),
        (Signal::SIGINT, vec!["build"], 130),
        (Signal::SIGTERM, vec!["build", "--dry-run"], 143),
    ] {
        // A Dockerfile on a FIFO that a writer feeds slowly and never closes: kiln is still
        // reading (planning has not begun) when the signal comes.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("Dockerfile");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let child = kiln()
            .root(store.path())
            .args(&args)
            .arg("-f")
            .arg(&fifo)
            .arg(ctx.path())
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let path = fifo.clone();
        let writer = std::thread::spawn(move || {
            let Ok(mut out) = fs::OpenOptions::new().write(true).open(path) else {
                return;
            };
            while stop_rx.recv_timeout(Duration::from_millis(50)).is_err() {
                if out.write_all(b"FROM scratch\n").is_err() {
                    return;
                }
            }
        });
        let measured = signal_after(child, signal, Duration::from_millis(1500));
        stop_tx.send(()).ok();
        writer.join().unwrap();
        assert_eq!(
            (measured.code, measured.signal),
            (Some(code), None),
            "{signal:?} {args:?}: {}",
            measured.stderr
        );
        assert!(
            measured.elapsed < Duration::from_secs(2),
            "{signal:?} {args:?} ended {:?} after the signal",
            measured.elapsed
        );
        assert!(
            measured.stderr.contains("kiln: interrupted"),
            "{}",
            measured.stderr
        );
    }
}

/// A gzip stream of a tar holding one file of `members` × 16 MiB zeros: the 16 MiB member is
/// compressed once and repeated (a multi-member gzip, which every reader of layers accepts),
/// so the test makes a ~1000× bomb in milliseconds.
fn gzip_bomb_tar(name: &str, members: u64) -> Vec<u8> {
    let gzip = |bytes: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    };
    let member_len = 16u64 << 20;
    let mut header = tar::Header::new_gnu();
    header.set_path(name).unwrap();
    header.set_size(member_len * members);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut out = gzip(header.as_bytes());
    let zeros = gzip(&vec![0u8; member_len as usize]);
    for _ in 0..members {
        out.extend_from_slice(&zeros);
    }
    out.extend(gzip(&[0u8; 1024]));
    out
}

/// 2 GiB of zeros in about 2 MB.
fn two_gib_bomb(name: &str) -> Vec<u8> {
    let bomb = gzip_bomb_tar(name, 128);
    assert!(bomb.len() < 3 << 20, "{} bytes", bomb.len());
    bomb
}

/// A docker archive (`docker save`'s format) of one image whose one layer is `layer`.
fn docker_archive(layer: &[u8]) -> Vec<u8> {
    // The diff ID is never reached: the ratio cap stops the layer first.
    let diff_id = format!("sha256:{}", "0".repeat(64));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": "config.json", "RepoTags": ["bomb:1"], "Layers": ["bomb/layer.tar"]}
    ]))
    .unwrap();
    let mut archive = tar::Builder::new(Vec::new());
    for (name, bytes) in [
        ("config.json", &config[..]),
        ("bomb/layer.tar", layer),
        ("manifest.json", &manifest[..]),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive.append_data(&mut header, name, bytes).unwrap();
    }
    archive.into_inner().unwrap()
}

fn assert_ratio_error(stderr: &str, names: &str) {
    assert!(
        stderr.contains("expands more than 100 times"),
        "no ratio in: {stderr}"
    );
    assert!(
        stderr.contains("KILN_MAX_DECOMPRESSION_RATIO"),
        "no knob in: {stderr}"
    );
    assert!(stderr.contains(names), "{names} not named in: {stderr}");
}

#[test]
fn a_gzip_bomb_in_kiln_load_stops_at_the_ratio_cap() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("bomb.tar");
    fs::write(&archive, docker_archive(&two_gib_bomb("zeros"))).unwrap();
    let store = dir.path().join("store");
    let started = Instant::now();
    let out = kiln()
        .root(&store)
        .args(["load", "-i"])
        .arg(&archive)
        .run()
        .failure();
    assert!(started.elapsed() < Duration::from_secs(60));
    // The layer is named by its diff ID, as the config lists it.
    let layer = format!("layer sha256:{}", "0".repeat(64));
    assert_ratio_error(&out.stderr_str(), &layer);
    let images = kiln().root(&store).args(["images", "-q"]).run().success();
    assert_eq!(images.stdout_str(), "", "a bomb was loaded");

    // The knob: its value is the cap the message names.
    let capped = kiln()
        .root(&store)
        .env("KILN_MAX_DECOMPRESSION_RATIO", "10")
        .args(["load", "-i"])
        .arg(&archive)
        .run()
        .failure()
        .stderr_str();
    assert!(capped.contains("expands more than 10 times"), "{capped}");
    let bad = kiln()
        .root(&store)
        .env("KILN_MAX_DECOMPRESSION_RATIO", "lots")
        .args(["load", "-i"])
        .arg(&archive)
        .run()
        .failure()
        .stderr_str();
    assert!(
        bad.contains("KILN_MAX_DECOMPRESSION_RATIO=\"lots\" is not a whole number"),
        "{bad}"
    );
}

#[test]
fn a_gzip_bomb_added_as_an_archive_stops_at_the_ratio_cap() {
    if support::root().is_none() {
        return;
    }
    let ctx = support::context(&[("Dockerfile", "FROM scratch\nADD bomb.tar.gz /x/\n")]);
    fs::write(ctx.path().join("bomb.tar.gz"), two_gib_bomb("zeros")).unwrap();
    let store = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = kiln()
        .root(store.path())
        .args(["build", "--progress", "plain"])
        .arg(ctx.path())
        .run()
        .failure();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_ratio_error(&out.stderr_str(), "bomb.tar.gz");
}
