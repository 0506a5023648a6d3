//! The seeds' workflow of issue 18, end to end through the binary, in the order a docker user
//! types it: a detached busybox web server with a published port fetched from the host, listed,
//! its logs read, entered with `exec` (also on a terminal), its files changed, diffed, copied both
//! ways (a symlink in the container pointing out of its root resolved inside it), stopped within
//! the grace time, committed into an image that runs with the change, and removed.

use crate::run::images;
use crate::support::{self, kiln};
use kiln::runtime::tty::{Pty, WindowSize};
use std::fs;
use std::time::{Duration, Instant};

/// A host port for `-p`, free now (bound and released), so parallel tests cannot clash.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

/// `GET url` from the host, retried for up to `seconds` until the server answers (it starts in
/// the background).
fn fetch(url: &str, seconds: u64) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "2", url])
            .output()
            .expect("curl");
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_seeds_workflow_run_d_ps_logs_exec_diff_cp_stop_commit() {
    let Some(images) = images() else { return };
    if support::tool("curl").is_none() {
        return;
    }
    let k = |args: &[&str]| kiln().root(images.root()).args(args).run();
    let port = free_port();
    let publish = format!("{port}:8080");
    let id = k(&[
        "run", "-d", "--name", "web", "-p", &publish, "box", "httpd", "-f", "-v", "-p", "8080",
    ])
    .success()
    .stdout_str()
    .trim_end()
    .to_string();
    assert_eq!(id.len(), 64, "{id}");
    // Removed at the end whatever happens, so no supervisor outlives the test.
    struct Remove<'a>(&'a dyn Fn(&[&str]) -> support::Output);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["rm", "-f", "web"]);
        }
    }
    let _remove = Remove(&k);

    // `exec` writes the page httpd serves from its working directory `/`; the host fetches it
    // through the published port.
    k(&[
        "exec",
        "web",
        "sh",
        "-c",
        "echo hello-from-web > /index.html",
    ])
    .success();
    let body = fetch(&format!("http://127.0.0.1:{port}/index.html"), 20);
    assert_eq!(body.as_deref(), Some("hello-from-web\n"));

    let ps = k(&["ps"]).success().stdout_str();
    let row = ps.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with(&id[..12]) && row.ends_with("web"), "{ps}");
    assert!(row.contains("Up "), "{ps}");
    assert!(row.contains(&format!("{port}->8080/tcp")), "{ps}");

    // httpd -v logs each response on its stderr: the log holds the fetch's, on kiln's stderr.
    let logs = k(&["logs", "web"]).success();
    assert!(logs.stderr_str().contains("response:200"), "{logs:?}");

    let ls = k(&["exec", "web", "ls", "/"]).success().stdout_str();
    let entries: Vec<&str> = ls.lines().collect();
    assert!(
        entries.contains(&"index.html") && entries.contains(&"bin"),
        "{ls}"
    );

    // `exec -it web sh` on a terminal the test owns.
    let pty = Pty::open(Some(WindowSize { rows: 24, cols: 80 })).expect("pty");
    let mut child = support::spawn_on_tty(
        kiln()
            .root(images.root())
            .args(["exec", "-it", "web", "sh"])
            .command(),
        pty.slave,
    );
    nix::unistd::write(&pty.master, b"cat /index.html; tty; exit 4\n").expect("type");
    let output = support::read_until_closed(&pty.master, 30);
    assert_eq!(child.wait().expect("wait").code(), Some(4), "{output:?}");
    let lines: Vec<&str> = output.split("\r\n").collect();
    assert!(lines.contains(&"hello-from-web"), "{output:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("/dev/pts/")),
        "{output:?}"
    );

    // Changes: added, changed and deleted entries, as `docker diff` prints them.
    k(&[
        "exec",
        "web",
        "sh",
        "-c",
        "mkdir /data && echo d > /data/f && rm /bin/true && echo inside > /etc/marker \
         && ln -s ../../../../../../etc /evil",
    ])
    .success();
    let diff = k(&["diff", "web"]).success().stdout_str();
    for line in [
        "A /data",
        "A /data/f",
        "C /bin",
        "D /bin/true",
        "A /index.html",
        "C /etc",
        "A /etc/marker",
        "A /evil",
    ] {
        assert!(diff.lines().any(|l| l == line), "{line} missing:\n{diff}");
    }

    // `cp` out and in; `/evil` points "above" the root and resolves inside it, never to the
    // host's /etc.
    let host = tempfile::tempdir().expect("temp dir");
    let out_file = host.path().join("page");
    k(&["cp", "web:/index.html", out_file.to_str().expect("utf-8")]).success();
    assert_eq!(
        fs::read_to_string(&out_file).expect("read"),
        "hello-from-web\n"
    );
    let marker = host.path().join("marker");
    k(&["cp", "web:/evil/marker", marker.to_str().expect("utf-8")]).success();
    assert_eq!(fs::read_to_string(&marker).expect("read"), "inside\n");
    assert!(!std::path::Path::new("/etc/marker").exists());
    let sent = host.path().join("kiln-cp-seed-file");
    fs::write(&sent, "from-host\n").expect("write");
    k(&["cp", sent.to_str().expect("utf-8"), "web:/evil/"]).success();
    assert!(!std::path::Path::new("/etc/kiln-cp-seed-file").exists());
    assert_eq!(
        k(&["exec", "web", "cat", "/etc/kiln-cp-seed-file"])
            .success()
            .stdout_str(),
        "from-host\n"
    );

    // `stop` within the grace time: httpd is the container's pid 1 without a SIGTERM handler,
    // so the kernel drops the signal (as under docker) and SIGKILL follows at `-t`.
    let stopping = Instant::now();
    assert_eq!(
        k(&["stop", "-t", "2", "web"]).success().stdout_str(),
        "web\n"
    );
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(
        k(&["inspect", "-f", "{{.State.ExitCode}}", "web"])
            .success()
            .stdout_str(),
        "137\n"
    );
    // Its port is closed with it.
    assert_eq!(
        fetch(&format!("http://127.0.0.1:{port}/index.html"), 0),
        None
    );
    let all = k(&["ps", "-a", "--format", "{{.Names}} {{.State}}"])
        .success()
        .stdout_str();
    assert_eq!(all, "web exited\n");

    // The committed image runs with the change.
    let image_id = k(&["commit", "web", "img2"]).success().stdout_str();
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    let out = k(&["run", "--rm", "img2", "cat", "/index.html", "/data/f"]).success();
    assert_eq!(out.stdout_str(), "hello-from-web\nd\n");
    let out = k(&["run", "--rm", "img2", "ls", "/bin/true"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");

    k(&["rm", "web"]).success();
    assert_eq!(k(&["ps", "-aq"]).success().stdout_str(), "");
}
