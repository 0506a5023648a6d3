//! Containers as objects (issue 18): `kiln run -d` under a supervisor that outlives the command,
//! `ps`, `logs`, `stop`, `kill`, `start`, `restart`, `wait`, `rm`, `rename`, `inspect`,
//! `create`, restart policies, `container prune`, the crash of a supervisor, and images kept by
//! stopped containers; docker's output and messages (checked against the peer dockerd 20.10).

use crate::run::{Images, images};
use crate::support::{self, Output, kiln};
use kiln::store::Store;
use std::time::{Duration, Instant};

/// `kiln --root ROOT ARGS...`, run.
fn k(images: &Images, args: &[&str]) -> Output {
    kiln().root(images.root()).args(args).run()
}

/// Removes every container of the store when the test ends (passing or not), so no supervisor
/// or workload outlives it.
struct Cleanup<'a>(&'a Images);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let ids = k(self.0, &["ps", "-aq", "--no-trunc"]).stdout_str();
        for id in ids.lines() {
            let _ = k(self.0, &["rm", "-f", id]);
        }
    }
}

/// Root, busybox and a store with `box`.
fn setup() -> Option<Images> {
    images()
}

/// The record of container `reference`.
fn record(images: &Images, reference: &str) -> kiln::store::ContainerRecord {
    Store::open(images.root())
        .expect("open")
        .find_container(reference)
        .expect("container")
}

/// `inspect -f TEMPLATE CONTAINER`, trimmed.
fn inspect(images: &Images, template: &str, reference: &str) -> String {
    k(images, &["inspect", "-f", template, reference])
        .success()
        .stdout_str()
        .trim_end()
        .to_string()
}

#[test]
fn a_detached_web_server_is_listed_logged_and_stopped() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    let started = Instant::now();
    let out = images
        .run(&[
            "-d",
            "--name",
            "web",
            "--network",
            "none",
            "--init",
            "box",
            "httpd",
            "-f",
            "-p",
            "8080",
        ])
        .run()
        .success();
    let id = out.stdout_str().trim_end().to_string();
    assert_eq!(id.len(), 64, "{out:?}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    // The command returned, and the container outlives it.
    assert!(
        support::within(10, || !support::processes_running(&[
            "httpd", "-f", "-p", "8080"
        ])
        .is_empty()),
        "httpd never ran"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    let ps = k(&images, &["ps"]).success().stdout_str();
    let lines: Vec<&str> = ps.lines().collect();
    assert_eq!(lines.len(), 2, "{ps}");
    let header: Vec<&str> = lines[0]
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES"
        ],
        "{ps}"
    );
    assert!(lines[1].starts_with(&id[..12]), "{ps}");
    assert!(lines[1].contains("\"httpd -f -p 8080\""), "{ps}");
    assert!(lines[1].contains("Up "), "{ps}");
    assert!(lines[1].ends_with("web"), "{ps}");
    assert_eq!(
        k(&images, &["ps", "-q"]).success().stdout_str(),
        format!("{}\n", &id[..12])
    );
    assert_eq!(
        k(&images, &["ps", "--format", "{{.Names}}"])
            .success()
            .stdout_str(),
        "web\n"
    );
    assert_eq!(
        k(&images, &["ps", "-q", "--no-trunc"])
            .success()
            .stdout_str(),
        format!("{id}\n")
    );
    let json = k(&images, &["ps", "--format", "json"])
        .success()
        .stdout_json();
    assert_eq!(json["State"], "running", "{json}");
    assert_eq!(json["Names"], "web", "{json}");

    // `stop` sends SIGTERM (the init passes it on to httpd) and returns well within the grace.
    let stopping = Instant::now();
    let out = k(&images, &["stop", "web"]).success();
    assert_eq!(out.stdout_str(), "web\n");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    assert!(support::processes_running(&["httpd", "-f", "-p", "8080"]).is_empty());
    assert_eq!(k(&images, &["ps", "-q"]).success().stdout_str(), "");
    let all = k(&images, &["ps", "-a"]).success().stdout_str();
    assert!(all.contains("Exited (143)"), "{all}");
    assert_eq!(
        k(
            &images,
            &[
                "ps",
                "-a",
                "-f",
                "status=exited",
                "--format",
                "{{.Names}} {{.State}}"
            ]
        )
        .success()
        .stdout_str(),
        "web exited\n"
    );
    assert_eq!(
        k(&images, &["ps", "-a", "-f", "status=running", "-q"])
            .success()
            .stdout_str(),
        ""
    );
}

#[test]
fn logs_show_the_output_and_follow_it() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    let script = "echo one; echo two >&2; sleep 2; echo three";
    images
        .run(&["-d", "--name", "echoer", "box", "sh", "-c", script])
        .run()
        .success();
    // -f prints what is there, then what comes, and ends when the container does.
    let started = Instant::now();
    let out = k(&images, &["logs", "-f", "echoer"]).success();
    assert_eq!(out.stdout_str(), "one\nthree\n", "{out:?}");
    assert_eq!(out.stderr_str(), "two\n", "{out:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "did not follow"
    );
    let tail = k(&images, &["logs", "--tail", "1", "echoer"]).success();
    assert_eq!(tail.stdout_str(), "three\n");
    assert_eq!(tail.stderr_str(), "");
    let stamped = k(&images, &["logs", "-t", "echoer"]).success().stdout_str();
    let first = stamped.lines().next().expect("a line");
    let (time, text) = first.split_once(' ').expect("a timestamp");
    assert_eq!(text, "one");
    assert!(time.ends_with('Z') && time.len() == 30, "{time}");
    assert_eq!(
        k(&images, &["logs", "--since", "1h", "echoer"])
            .success()
            .stdout_str(),
        "one\nthree\n"
    );
    assert_eq!(
        k(
            &images,
            &["logs", "--since", "2999-01-01T00:00:00Z", "echoer"]
        )
        .success()
        .stdout_str(),
        ""
    );
    // docker's json-file lines.
    let log = k(&images, &["inspect", "-f", "{{.LogPath}}", "echoer"])
        .success()
        .stdout_str();
    let text = std::fs::read_to_string(log.trim_end()).expect("the log file");
    let entries: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    // The two streams are read apart: their entries' order between them is not fixed.
    let of = |stream: &str| -> Vec<&serde_json::Value> {
        entries.iter().filter(|e| e["stream"] == stream).collect()
    };
    assert_eq!(of("stdout").len(), 2, "{text}");
    assert_eq!(of("stdout")[0]["log"], "one\n");
    assert_eq!(of("stderr")[0]["log"], "two\n");
    assert!(
        of("stdout")[1]["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(
        k(&images, &["wait", "echoer"]).success().stdout_str(),
        "0\n"
    );
}

#[test]
fn stop_kills_a_workload_that_ignores_term_at_the_timeout() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    let ignoring = "trap '' TERM; echo ready; while :; do sleep 1; done";
    images
        .run(&["-d", "--name", "stubborn", "box", "sh", "-c", ignoring])
        .run()
        .success();
    let started = Instant::now();
    k(&images, &["stop", "-t", "1", "stubborn"]).success();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert_eq!(inspect(&images, "{{.State.ExitCode}}", "stubborn"), "137");

    let trapping = "trap 'echo bye; exit 0' TERM; while :; do sleep 1 & wait $!; done";
    images
        .run(&["-d", "--name", "polite", "box", "sh", "-c", trapping])
        .run()
        .success();
    assert!(support::within(10, || inspect(
        &images,
        "{{.State.Running}}",
        "polite"
    ) == "true"));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    k(&images, &["stop", "polite"]).success();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(inspect(&images, "{{.State.ExitCode}}", "polite"), "0");
    assert_eq!(
        k(&images, &["logs", "polite"]).success().stdout_str(),
        "bye\n"
    );
}

#[test]
fn kill_start_restart_and_wait() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    let script = "trap 'echo usr1' USR1; echo up; while :; do sleep 1 & wait $!; done";
    images
        .run(&["-d", "--name", "kk", "box", "sh", "-c", script])
        .run()
        .success();
    let logged =
        |want: &str| support::within(10, || k(&images, &["logs", "kk"]).stdout_str() == want);
    assert!(logged("up\n"));
    assert_eq!(
        k(&images, &["kill", "-s", "USR1", "kk"])
            .success()
            .stdout_str(),
        "kk\n"
    );
    assert!(
        logged("up\nusr1\n"),
        "{}",
        k(&images, &["logs", "kk"]).stdout_str()
    );
    let missing = k(&images, &["kill", "nope"]).failure().stderr_str();
    assert_eq!(
        missing,
        "Error response from daemon: Cannot kill container: nope: No such container: nope\n"
    );
    let bad = k(&images, &["kill", "-s", "BOGUS", "kk"])
        .failure()
        .stderr_str();
    assert_eq!(bad, "Error response from daemon: Invalid signal: BOGUS\n");

    let mut waiter = kiln().root(images.root()).args(["wait", "kk"]).spawn();
    std::thread::sleep(Duration::from_millis(300));
    k(&images, &["kill", "kk"]).success();
    let waited = waiter.wait().expect("wait");
    assert!(waited.success());
    let mut code = String::new();
    std::io::Read::read_to_string(&mut waiter.stdout.take().expect("stdout"), &mut code)
        .expect("read");
    assert_eq!(code, "137\n");
    let again = k(&images, &["kill", "kk"]).failure().stderr_str();
    let id = record(&images, "kk").id;
    assert_eq!(
        again,
        format!(
            "Error response from daemon: Cannot kill container: kk: Container {id} is not running\n"
        )
    );

    assert_eq!(k(&images, &["start", "kk"]).success().stdout_str(), "kk\n");
    assert_eq!(inspect(&images, "{{.State.Status}}", "kk"), "running");
    let pid = record(&images, "kk").pid;
    assert_eq!(
        k(&images, &["restart", "-t", "1", "kk"])
            .success()
            .stdout_str(),
        "kk\n"
    );
    assert_eq!(inspect(&images, "{{.State.Status}}", "kk"), "running");
    assert_ne!(
        record(&images, "kk").pid,
        pid,
        "restart started a new process"
    );
    // Manual restarts are not the policy's.
    assert_eq!(inspect(&images, "{{.RestartCount}}", "kk"), "0");
    assert!(logged("up\nusr1\nup\nup\n"));
}

#[test]
fn rm_refuses_a_running_container_unless_forced() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    let id = images
        .run(&["-d", "--name", "busy", "box", "sleep", "3101"])
        .run()
        .success()
        .stdout_str()
        .trim_end()
        .to_string();
    let refused = k(&images, &["rm", "busy"]).failure().stderr_str();
    assert_eq!(
        refused,
        format!(
            "Error response from daemon: You cannot remove a running container {id}. Stop the \
             container before attempting removal or force remove\n"
        )
    );
    assert_eq!(
        k(&images, &["rm", "-f", "busy"]).success().stdout_str(),
        "busy\n"
    );
    assert!(support::processes_running(&["sleep", "3101"]).is_empty());
    assert!(!images.root().join("containers").join(&id).exists());
    let gone = k(&images, &["rm", "busy"]).failure().stderr_str();
    assert_eq!(
        gone,
        "Error response from daemon: No such container: busy\n"
    );
}

#[test]
fn names_are_unique_made_up_and_renamed() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    let first = images
        .run(&["-d", "--name", "a1", "box", "true"])
        .run()
        .success();
    let first = first.stdout_str().trim_end().to_string();
    let conflict = images
        .run(&["-d", "--name", "a1", "box", "true"])
        .run()
        .code(125)
        .stderr_str();
    assert!(
        conflict.contains(&format!(
            "Conflict. The container name \"/a1\" is already in use by container \"{first}\". \
             You have to remove (or rename) that container to be able to reuse that name."
        )),
        "{conflict}"
    );
    let made_up = k(&images, &["create", "box", "true"])
        .success()
        .stdout_str();
    let name = inspect(&images, "{{.Name}}", made_up.trim_end());
    let re = regex::Regex::new("^/[a-z]+_[a-z]+$").expect("regex");
    assert!(re.is_match(&name), "{name}");

    k(&images, &["rename", "a1", "b1"]).success();
    assert_eq!(inspect(&images, "{{.Name}}", "b1"), "/b1");
    assert_eq!(inspect(&images, "{{.Id}}", "b1"), first);
    let taken = k(&images, &["rename", "b1", &name[1..]])
        .failure()
        .stderr_str();
    assert!(
        taken.contains("Error when allocating new name: Conflict."),
        "{taken}"
    );
    assert!(
        taken.ends_with("Error: failed to rename container named b1\n"),
        "{taken}"
    );
    let invalid = k(&images, &["rename", "b1", "bad name"])
        .failure()
        .stderr_str();
    assert!(
        invalid.contains("Invalid container name (/bad name)"),
        "{invalid}"
    );
}

#[test]
fn inspect_shows_docker_fields() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    let id = images
        .run(&[
            "-d",
            "--name",
            "ins",
            "--restart",
            "on-failure:3",
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "--hostname",
            "h1",
            "box",
            "sh",
            "-c",
            "exit 0",
        ])
        .run()
        .success()
        .stdout_str()
        .trim_end()
        .to_string();
    assert_eq!(k(&images, &["wait", "ins"]).success().stdout_str(), "0\n");
    let doc = k(&images, &["inspect", "ins"]).success().stdout_json();
    let doc = &doc[0];
    assert_eq!(doc["Id"], id.as_str());
    assert_eq!(doc["Name"], "/ins");
    assert_eq!(doc["Path"], "sh");
    assert_eq!(doc["Args"], serde_json::json!(["-c", "exit 0"]));
    assert_eq!(doc["State"]["Status"], "exited");
    assert_eq!(doc["State"]["Running"], false);
    assert_eq!(doc["State"]["ExitCode"], 0);
    assert_eq!(doc["State"]["Pid"], 0);
    for time in ["StartedAt", "FinishedAt"] {
        let text = doc["State"][time].as_str().expect("time");
        assert!(kiln::oci::timestamp::parse_rfc3339(text).is_some_and(|t| t > 1_700_000_000));
    }
    assert_eq!(doc["RestartCount"], 0);
    assert_eq!(doc["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(doc["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3);
    assert_eq!(doc["Config"]["Hostname"], "h1");
    assert_eq!(doc["Config"]["WorkingDir"], "/tmp");
    assert_eq!(doc["Config"]["Image"], "box");
    assert_eq!(
        doc["Config"]["Cmd"],
        serde_json::json!(["sh", "-c", "exit 0"])
    );
    assert!(
        doc["Config"]["Env"]
            .as_array()
            .is_some_and(|env| env.iter().any(|e| e == "A=1")),
        "{doc}"
    );
    assert!(
        doc["Image"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha256:"))
    );
    assert!(
        doc["LogPath"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("{id}-json.log")))
    );
    // Images are still inspected by name; --type picks.
    let image = k(&images, &["inspect", "box"]).success().stdout_json();
    assert!(image[0]["RootFS"].is_object(), "{image}");
    // docker prints an empty list, and the error.
    k(&images, &["inspect", "--type", "image", "ins"]).code(1);
    let missing = k(&images, &["inspect", "--type", "container", "nope"]).code(1);
    assert_eq!(missing.stdout_str(), "[]\n");
    assert_eq!(missing.stderr_str(), "Error: No such container: nope\n");
}

#[test]
fn restart_policies_restart_and_count() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    images
        .run(&[
            "-d",
            "--name",
            "fails",
            "--restart",
            "on-failure:2",
            "box",
            "sh",
            "-c",
            "echo try; exit 3",
        ])
        .run()
        .success();
    assert!(
        support::within(15, || inspect(&images, "{{.State.Status}}", "fails")
            == "exited"
            && inspect(&images, "{{.RestartCount}}", "fails") == "2"),
        "{}",
        k(&images, &["inspect", "fails"]).stdout_str()
    );
    assert_eq!(
        k(&images, &["logs", "fails"]).success().stdout_str(),
        "try\ntry\ntry\n"
    );
    assert_eq!(k(&images, &["wait", "fails"]).success().stdout_str(), "3\n");

    images
        .run(&[
            "-d",
            "--name",
            "again",
            "--restart",
            "always",
            "box",
            "sh",
            "-c",
            "echo go",
        ])
        .run()
        .success();
    assert!(
        support::within(15, || inspect(&images, "{{.RestartCount}}", "again")
            .parse::<u32>()
            .is_ok_and(|n| n >= 2)),
        "always did not restart"
    );
    k(&images, &["stop", "again"]).success();
    let count = inspect(&images, "{{.RestartCount}}", "again");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(inspect(&images, "{{.State.Status}}", "again"), "exited");
    assert_eq!(
        inspect(&images, "{{.RestartCount}}", "again"),
        count,
        "restarted after stop"
    );

    let refused = images
        .run(&["-d", "--rm", "--restart", "always", "box", "true"])
        .run()
        .code(125)
        .stderr_str();
    assert!(
        refused.contains("Conflicting options: --restart and --rm"),
        "{refused}"
    );
    let bad = images
        .run(&["-d", "--restart", "bogus", "box", "true"])
        .run()
        .code(125)
        .stderr_str();
    assert!(bad.contains("invalid restart policy 'bogus'"), "{bad}");
}

#[test]
fn create_then_start_attached() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    let id = k(
        &images,
        &[
            "create",
            "--name",
            "later",
            "box",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 4",
        ],
    )
    .success()
    .stdout_str();
    assert_eq!(id.trim_end().len(), 64);
    let ps = k(&images, &["ps", "-a", "--format", "{{.Names}} {{.Status}}"]).success();
    assert_eq!(ps.stdout_str(), "later Created\n");
    assert_eq!(k(&images, &["ps", "-q"]).success().stdout_str(), "");
    let out = k(&images, &["start", "-a", "later"]).code(4);
    assert_eq!(out.stdout_str(), "out\n");
    assert_eq!(out.stderr_str(), "err\n");
    assert_eq!(
        inspect(&images, "{{.State.Status}} {{.State.ExitCode}}", "later"),
        "exited 4"
    );
    // A start that cannot execute the command: docker's message and 127, the container stays
    // created.
    k(
        &images,
        &["create", "--name", "broken", "box", "/no/such/program"],
    )
    .success();
    let failed = k(&images, &["start", "broken"]).failure().stderr_str();
    assert!(failed.contains("no such file or directory"), "{failed}");
    assert!(
        failed.ends_with("Error: failed to start containers: broken\n"),
        "{failed}"
    );
    let failed = images
        .run(&["-d", "box", "/no/such/program"])
        .run()
        .code(127)
        .stderr_str();
    assert!(failed.contains("no such file or directory"), "{failed}");
}

#[test]
fn a_killed_supervisor_leaves_no_process_and_its_container_exited() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    images
        .run(&["-d", "--name", "orphan", "box", "sleep", "3102"])
        .run()
        .success();
    assert!(support::within(10, || !support::processes_running(&[
        "sleep", "3102"
    ])
    .is_empty()));
    let supervisor = record(&images, "orphan")
        .run
        .supervisor
        .expect("a supervisor");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the supervisor");
    assert!(
        support::within(5, || support::processes_running(&["sleep", "3102"])
            .is_empty()),
        "the container's process outlived its supervisor"
    );
    assert!(
        support::within(5, || {
            k(&images, &["ps", "-a", "--format", "{{.Names}} {{.State}}"]).stdout_str()
                == "orphan exited\n"
        }),
        "{}",
        k(&images, &["ps", "-a"]).stdout_str()
    );
    let status = k(&images, &["ps", "-a", "--format", "{{.Status}}"])
        .success()
        .stdout_str();
    assert!(status.starts_with("Exited (137)"), "{status}");
    assert_eq!(
        k(&images, &["wait", "orphan"]).success().stdout_str(),
        "137\n"
    );
    assert_eq!(k(&images, &["ps", "-q"]).success().stdout_str(), "");
    let pruned = k(&images, &["container", "prune", "-f"])
        .success()
        .stdout_str();
    assert!(pruned.starts_with("Deleted Containers:\n"), "{pruned}");
    assert!(pruned.contains("Total reclaimed space: "), "{pruned}");
    assert_eq!(k(&images, &["ps", "-aq"]).success().stdout_str(), "");
}

#[test]
fn a_stopped_container_keeps_its_image_until_removed() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    images
        .run(&["-d", "--name", "user", "box", "true"])
        .run()
        .success();
    k(&images, &["wait", "user"]).success();
    let refused = k(&images, &["rmi", "box"]).failure().stderr_str();
    assert!(
        refused.contains("is using its referenced image"),
        "{refused}"
    );
    k(&images, &["prune", "-a", "-f"]).success();
    k(&images, &["inspect", "--type", "image", "box"]).success();
    assert_eq!(k(&images, &["rm", "user"]).success().stdout_str(), "user\n");
    k(&images, &["rmi", "box"]).success();
}

#[test]
fn a_detached_container_with_rm_goes_when_it_ends() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    images
        .run(&[
            "-d", "--rm", "--name", "brief", "box", "sh", "-c", "sleep 1",
        ])
        .run()
        .success();
    assert_eq!(
        k(&images, &["ps", "--format", "{{.Names}}"])
            .success()
            .stdout_str(),
        "brief\n"
    );
    assert!(
        support::within(10, || k(&images, &["ps", "-aq"]).stdout_str().is_empty()),
        "the --rm container stayed"
    );
}

/// Store::open looks only at the records that name an owner (their markers), and a store made
/// before the markers existed is scanned once: an abandoned `--rm` record is removed either way.
#[test]
fn abandoned_run_rm_records_are_found_through_their_markers() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    k(&images, &["create", "--name", "kept", "box", "true"]).success();
    let mut child = images.run(&["--rm", "box", "sleep", "3103"]).spawn();
    assert!(support::within(10, || !support::processes_running(&[
        "sleep", "3103"
    ])
    .is_empty()));
    let markers = images.root().join("run-owners");
    assert_eq!(std::fs::read_dir(&markers).expect("markers").count(), 1);
    child.kill().expect("SIGKILL kiln");
    child.wait().expect("wait");
    // A store from before the markers: its directory of them does not exist.
    std::fs::remove_dir_all(&markers).expect("remove markers");
    assert_eq!(
        k(&images, &["ps", "-a", "--format", "{{.Names}}"])
            .success()
            .stdout_str(),
        "kept\n"
    );
    assert!(markers.is_dir());
    assert_eq!(std::fs::read_dir(&markers).expect("markers").count(), 0);
}

/// A container's log is bounded (`--log-opt max-size`, `max-file`, as docker's json-file
/// driver takes them): the oldest output goes, the newest stays.
#[test]
fn logs_are_bounded_by_log_opts() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    let script = "i=0; while [ $i -lt 500 ]; do echo line $i; i=$((i+1)); done";
    images
        .run(&[
            "-d",
            "--name",
            "chatty",
            "--log-opt",
            "max-size=2k",
            "--log-opt",
            "max-file=2",
            "box",
            "sh",
            "-c",
            script,
        ])
        .run()
        .success();
    assert_eq!(
        k(&images, &["wait", "chatty"]).success().stdout_str(),
        "0\n"
    );
    let log = inspect(&images, "{{.LogPath}}", "chatty");
    for path in [log.clone(), format!("{log}.1")] {
        let size = std::fs::metadata(&path).expect("a log file").len();
        assert!(size <= 2048, "{path}: {size}");
    }
    assert!(!std::path::Path::new(&format!("{log}.2")).exists());
    let shown = k(&images, &["logs", "chatty"]).success().stdout_str();
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines.len() < 500 && lines.len() > 10, "{}", lines.len());
    assert_eq!(lines.last(), Some(&"line 499"));
    let first: usize = lines[0]["line ".len()..].parse().expect("a number");
    let expected: Vec<String> = (first..500).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected);
    let refused = images
        .run(&["-d", "--log-opt", "mode=fast", "box", "true"])
        .run()
        .code(125)
        .stderr_str();
    assert!(
        refused.contains("unknown log opt 'mode' for json-file log driver"),
        "{refused}"
    );
}

/// A foreground `kiln run` is a container like the others: listed while it runs, stopped by
/// `kiln stop` (its kiln then exits with the container's code), filtered by name.
#[test]
fn a_foreground_run_is_listed_and_stopped() {
    let Some(images) = setup() else { return };
    let _cleanup = Cleanup(&images);
    let script = "trap 'exit 3' TERM; while :; do sleep 1 & wait $!; done";
    let mut child = images
        .run(&["--name", "fg", "box", "sh", "-c", script])
        .spawn();
    assert!(
        support::within(10, || k(&images, &["ps", "-q", "-f", "name=^/fg$"])
            .stdout_str()
            .len()
            == 13),
        "the foreground run is not listed"
    );
    assert_eq!(
        k(&images, &["ps", "-f", "name=nomatch", "-q"])
            .success()
            .stdout_str(),
        ""
    );
    std::thread::sleep(Duration::from_millis(300));
    k(&images, &["stop", "fg"]).success();
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(3));
    assert_eq!(
        k(&images, &["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
            .success()
            .stdout_str()
            .split(" (")
            .next(),
        Some("fg Exited")
    );
    assert_eq!(inspect(&images, "{{.State.ExitCode}}", "fg"), "3");
}
