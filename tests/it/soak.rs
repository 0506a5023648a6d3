//! The soak of issue 17: 200 builds of 10 Dockerfiles, 4 at a time, in one store, with a prune
//! every 20 (and `prune -a`, which takes the base too, every 100), then the store must be whole
//! and clean: `kiln images` lists every tag, every image runs, every blob hashes to its name, no
//! mount, process, sandbox directory or temp file is left, the store is still private, and
//! kiln's memory is flat across the loop (each build's peak RSS from wait4(2); the first 20
//! against the last 20). The figures are printed (see BENCHMARKS.md).

use crate::build::builder;
use crate::store_hardening::offenders;
use crate::support;
use kiln::oci::Digest;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Builds in all.
const BUILDS: usize = 200;
/// Builds at once.
const PARALLEL: usize = 4;
/// A prune after every this many builds.
const PRUNE_EVERY: usize = 20;
/// A `prune -a` (then the base rebuilt) after every this many builds.
const PRUNE_ALL_EVERY: usize = 100;

/// The 10 Dockerfiles, each on the busybox `base`: RUN, COPY, multi-stage, a cache mount, a
/// user, and two with a build argument that changes every build (cache misses; the others hit
/// the cache after their first build).
const DOCKERFILES: [&str; 10] = [
    "FROM base\nRUN echo one > /one\nCMD [\"cat\", \"/one\"]\n",
    "FROM base\nCOPY f /f\nRUN cat /f > /g\n",
    "FROM base AS a\nRUN echo a > /a\nFROM base\nCOPY --from=a /a /a\nRUN cat /a\n",
    "FROM base\nARG N\nRUN echo \"$N\" > /n\n",
    "FROM base\nWORKDIR /w\nCOPY . .\nRUN ls > /list\n",
    "FROM base\nRUN --mount=type=cache,target=/c echo x >> /c/log && wc -l < /c/log > /count\n",
    "FROM base\nENV A=1\nRUN mkdir -p /d/e && echo \"$A\" > /d/e/f\n",
    "FROM base AS one\nRUN echo 1 > /1\nFROM one AS two\nRUN echo 2 > /2\n\
     FROM base\nCOPY --from=one /1 /1\nCOPY --from=two /2 /2\n",
    "FROM base\nARG N\nCOPY f /f\nRUN echo \"$N\" >> /f\n",
    "FROM base\nUSER app\nRUN id -u > /tmp/id\n",
];

/// One finished build: its number, how it ended, kiln's peak RSS in KiB.
struct Built {
    number: usize,
    ok: bool,
    max_rss_kib: i64,
    stderr: String,
}

/// Runs `command` (stdout and stderr to `log`) to its end under GNU `time` (`time`, Debian
/// package time), and returns whether it succeeded and its peak RSS in KiB (`%M`: wait4(2)'s
/// `ru_maxrss`). Measuring from this process would not do: a child's `ru_maxrss` counts the
/// memory it had before its exec, which for a child forked from this test is the whole test
/// harness's. (busybox's `time` will not do either: it takes `ru_maxrss` for pages, 4 times
/// too much.)
fn run_measured(command: &std::process::Command, time: &Path, log: &Path) -> (bool, i64) {
    let out = fs::File::create(log).expect("log file");
    let rss_file = log.with_extension("rss");
    let mut timed = std::process::Command::new(time);
    timed
        .args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(command.get_program())
        .args(command.get_args())
        .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))));
    if let Some(dir) = command.get_current_dir() {
        timed.current_dir(dir);
    }
    let status = timed
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .status()
        .expect("start time kiln");
    let rss = fs::read_to_string(&rss_file)
        .ok()
        .and_then(|text| text.lines().last()?.trim().parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {}", rss_file.display()));
    (status.success(), rss)
}

fn median(values: &[i64]) -> i64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

/// The processes (other than this one) whose cwd, root or command line reaches into one of
/// `dirs`.
fn processes_in(dirs: &[&Path]) -> Vec<String> {
    let me = std::process::id().to_string();
    let dirs: Vec<String> = dirs
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let proc_dir = entry.path();
        let mut seen = Vec::new();
        for link in ["cwd", "root"] {
            if let Ok(target) = fs::read_link(proc_dir.join(link)) {
                seen.push(target.to_string_lossy().into_owned());
            }
        }
        if let Ok(cmdline) = fs::read(proc_dir.join("cmdline")) {
            seen.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
        if seen
            .iter()
            .any(|s| dirs.iter().any(|d| s.contains(d.as_str())))
        {
            found.push(format!("{name}: {seen:?}"));
        }
    }
    found
}

/// Every file under `dir` named `.kiln-*.tmp` or `*.tmp` that kiln's atomic writes leave.
fn temp_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && !kind.is_symlink() {
            // Image content (layers, cache mounts) may hold any names; kiln's own do not.
            if !matches!(
                path.parent()
                    .and_then(Path::file_name)
                    .and_then(|n| n.to_str()),
                Some("snapshots" | "cache-mounts")
            ) {
                temp_files(&path, found);
            }
        } else if name.starts_with(".kiln-") && name.ends_with(".tmp")
            || name.starts_with('.') && name.ends_with(".tmp")
        {
            found.push(path);
        }
    }
}

#[test]
fn soak_200_builds_4_at_a_time_with_prunes_leave_a_whole_clean_store() {
    let Some(b) = builder() else { return };
    let Some(time) = support::tool("time") else {
        return;
    };
    let root = b.root().to_path_buf();
    let contexts: Vec<tempfile::TempDir> = DOCKERFILES
        .iter()
        .enumerate()
        .map(|(i, dockerfile)| {
            b.context(&[
                ("Dockerfile", dockerfile),
                ("f", &format!("file of Dockerfile {i}\n")),
            ])
        })
        .collect();
    let logs = tempfile::tempdir().expect("temp dir");
    // kiln's sandboxes stage in `$TMPDIR/kiln-sandbox-PID-N`: a directory of the soak's own, so
    // what is left there is the soak's, whatever else runs on the machine.
    let sandbox_tmp = tempfile::tempdir().expect("temp dir");
    let results: Mutex<Vec<Built>> = Mutex::new(Vec::new());
    let prunes = AtomicUsize::new(0);
    let started = Instant::now();
    for batch in 0..BUILDS / PRUNE_EVERY {
        let next = AtomicUsize::new(batch * PRUNE_EVERY);
        let end = (batch + 1) * PRUNE_EVERY;
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL {
                scope.spawn(|| {
                    loop {
                        let number = next.fetch_add(1, Ordering::SeqCst);
                        if number >= end {
                            break;
                        }
                        let which = number % DOCKERFILES.len();
                        let context = contexts[which].path().display().to_string();
                        let mut command = b
                            .kiln(&[
                                "build",
                                "-q",
                                "-t",
                                &format!("soak{which}"),
                                "--build-arg",
                                &format!("N={number}"),
                                &context,
                            ])
                            .command();
                        command.env("TMPDIR", sandbox_tmp.path());
                        let log = logs.path().join(format!("{number}.log"));
                        let (ok, max_rss_kib) = run_measured(&command, &time, &log);
                        results.lock().expect("results").push(Built {
                            number,
                            ok,
                            max_rss_kib,
                            stderr: fs::read_to_string(&log).unwrap_or_default(),
                        });
                    }
                });
            }
        });
        let done = (batch + 1) * PRUNE_EVERY;
        let mut args = vec!["prune", "-f"];
        if done.is_multiple_of(PRUNE_ALL_EVERY) && done < BUILDS {
            args.push("-a");
        }
        b.kiln(&args).run().success();
        prunes.fetch_add(1, Ordering::SeqCst);
        if args.contains(&"-a") {
            // `prune -a` takes every image no container uses, the base among them.
            let ctx = b.context(&[("Dockerfile", crate::build::BASE)]);
            b.build(ctx.path(), &["-t", "base"]).ok();
        }
    }
    let elapsed = started.elapsed();

    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|r| r.number);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("build {}:\n{}", r.number, r.stderr))
        .collect();
    assert!(
        failed.is_empty(),
        "{} builds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert_eq!(results.len(), BUILDS);

    // Every tag is listed and every image runs.
    let listed = b.kiln(&["images"]).run().success().stdout_str();
    for which in 0..DOCKERFILES.len() {
        assert!(
            listed.contains(&format!("soak{which} ")),
            "soak{which} missing:\n{listed}"
        );
    }
    let ids = b.kiln(&["images", "-q"]).run().success().stdout_str();
    let ids: Vec<&str> = ids.lines().collect();
    assert!(ids.len() >= DOCKERFILES.len(), "{ids:?}");
    for id in &ids {
        b.kiln(&["run", "--rm", id, "true"]).run().success();
    }
    let one = b
        .kiln(&["run", "--rm", "soak0"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(one, "one\n");
    // The tag of a Dockerfile whose argument changed every build names one of its last two
    // builds (both ran in the last batch, either may finish last).
    let n = b
        .kiln(&["run", "--rm", "soak3", "cat", "/n"])
        .run()
        .success()
        .stdout_str();
    assert!(n == "183\n" || n == "193\n", "{n:?}");

    // Every blob hashes to its name.
    let blobs_dir = root.join("blobs/sha256");
    let mut blobs = 0;
    for entry in fs::read_dir(&blobs_dir).expect("blobs") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let digest = Digest::of(&fs::read(&path).expect("read blob"));
        assert_eq!(digest.hex(), name, "blob {name} does not hash to its name");
        blobs += 1;
    }

    // Nothing left behind: mounts, processes, sandbox directories, temp files.
    let root_text = root.to_string_lossy().into_owned();
    let mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(&root_text))
        .map(str::to_string)
        .collect();
    assert!(mounts.is_empty(), "mounts left:\n{}", mounts.join("\n"));
    let procs = processes_in(&[&root, sandbox_tmp.path()]);
    assert!(procs.is_empty(), "processes left:\n{}", procs.join("\n"));
    let sandbox_dirs: Vec<_> = fs::read_dir(sandbox_tmp.path())
        .expect("temp dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        sandbox_dirs.is_empty(),
        "sandbox directories left: {sandbox_dirs:?}"
    );
    for tmp in [root.join("tmp"), root.join("cache/tmp")] {
        let left: Vec<_> = fs::read_dir(&tmp)
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
    }
    let mut temps = Vec::new();
    temp_files(&root, &mut temps);
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    let open = offenders(&root);
    assert!(
        open.is_empty(),
        "the store is open to others:\n{}",
        open.join("\n")
    );

    // kiln's memory is flat: the last 20 builds' peak RSS against the first 20's.
    let rss: Vec<i64> = results.iter().map(|r| r.max_rss_kib).collect();
    let (first, last) = (median(&rss[..20]), median(&rss[rss.len() - 20..]));
    let (first_max, last_max) = (
        rss[..20].iter().max().copied().unwrap_or(0),
        rss[rss.len() - 20..].iter().max().copied().unwrap_or(0),
    );
    println!(
        "soak: {BUILDS} builds ({PARALLEL} at a time, {} prunes) in {:.1} s; peak RSS per build \
         (KiB): first 20 median {first} max {first_max}, last 20 median {last} max {last_max}; \
         {blobs} blobs, {} images at the end",
        prunes.load(Ordering::SeqCst),
        elapsed.as_secs_f64(),
        ids.len()
    );
    assert!(
        last <= first + first / 2 + 16 * 1024,
        "kiln's peak RSS grew across the loop: first 20 median {first} KiB, last 20 {last} KiB"
    );
    assert!(
        elapsed < Duration::from_secs(600),
        "the soak took {elapsed:?}"
    );
}
