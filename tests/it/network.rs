//! The private network (issue 18, item 1), through the binary: from `kiln run` and from a RUN
//! step on the default network, a server of the test's own host (a network namespace with a veth
//! pair, [`TestHost`]) is reached while the host's loopback services are not; `--network none`
//! has only `lo`; `--network host` still works (for RUN only with `--allow network.host`, refused
//! by BuildKit's words without it); DNS through the written `/etc/resolv.conf`; `-p` publishes
//! busybox httpd on the host; `--add-host`, `--dns`, `--hostname`; and no slirp4netns process
//! outlives a run or a build, even a SIGKILLed one.

use crate::build::{Builder, builder};
use crate::support::{self, within};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

/// What the test host's server answers.
const GREETING: &str = "hello-from-the-test-host";

/// A network namespace with a veth pair to the host: `server` is its address (non-loopback,
/// routed from the host through the pair), where a thread serves [`GREETING`] on `port`.
pub(crate) struct TestHost {
    name: String,
    host_end: String,
    pub(crate) server: Ipv4Addr,
    pub(crate) port: u16,
}

impl TestHost {
    /// `None` after a skip notice without root or iproute2.
    pub(crate) fn start() -> Option<TestHost> {
        support::root()?;
        support::tool("ip")?;
        let pid = std::process::id();
        // A /30 of 10.201.0.0/16 chosen by pid, so parallel test processes do not collide.
        let slot = (pid % 16384) * 4;
        let (b, c) = ((slot >> 8) as u8, (slot & 0xff) as u8);
        let host_addr = Ipv4Addr::new(10, 201, b, c + 1);
        let server = Ipv4Addr::new(10, 201, b, c + 2);
        let id = format!(
            "{pid}-{}",
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let host = TestHost {
            name: format!("kiln-th-{id}"),
            host_end: format!("kth{}", pid % 100_000_000),
            server,
            port: 0,
        };
        let peer = format!("ktp{}", pid % 100_000_000);
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &host.name]);
        ip(&[
            "link",
            "add",
            &host.host_end,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &host.name]);
        ip(&[
            "addr",
            "add",
            &format!("{host_addr}/30"),
            "dev",
            &host.host_end,
        ]);
        ip(&["link", "set", &host.host_end, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &host.name, "ip"];
            all.extend(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{server}/30"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        // The server: a thread that enters the namespace and answers every connection.
        let ns_path = format!("/run/netns/{}", host.name);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&ns_path).expect("open the test host's namespace");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let listener = TcpListener::bind((server, 0)).expect("bind in the test host");
            tx.send(listener.local_addr().expect("addr").port())
                .expect("send");
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.write_all(format!("{GREETING}\n").as_bytes());
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the test host's server started");
        let mut host = host;
        host.port = port;
        Some(host)
    }
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Drop for TestHost {
    fn drop(&mut self) {
        // Deleting the namespace removes the peer end and with it the pair.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_end])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A listener on the host's 127.0.0.1 that answers [`GREETING`] (the host's loopback service).
fn loopback_service() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.write_all(format!("{GREETING}\n").as_bytes());
        }
    });
    port
}

/// `kiln run --rm ARGS base sh -c SCRIPT`: (exit code, stdout, stderr).
fn run_sh(builder: &Builder, args: &[&str], script: &str) -> (Option<i32>, String, String) {
    let mut all = vec!["run", "--rm"];
    all.extend(args);
    all.extend(["base", "sh", "-c", script]);
    let out = builder.kiln(&all).run();
    (out.status.code(), out.stdout_str(), out.stderr_str())
}

/// The pids of slirp4netns processes whose parent is `parent`.
fn stacks_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status.lines().any(|l| l == "Name:\tslirp4netns")
                && status
                    .lines()
                    .any(|l| l.strip_prefix("PPid:\t") == Some(&parent.to_string()))
        })
        .collect()
}

/// Whether the process `pid` is gone (or a zombie about to be reaped).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(status) => status.lines().any(|l| l.starts_with("State:\tZ")),
    }
}

fn slirp() -> Option<()> {
    support::tool("slirp4netns").map(drop)
}

#[test]
fn kiln_run_reaches_the_test_host_but_not_the_hosts_loopback() {
    let Some(builder) = builder() else { return };
    let Some(()) = slirp() else { return };
    let Some(host) = TestHost::start() else {
        return;
    };
    let local = loopback_service();
    let script = format!(
        "nc -w 3 {server} {port}; echo outbound=$?; \
         nc -w 2 127.0.0.1 {local}; echo loopback=$?; \
         nc -w 2 10.0.2.2 {local}; echo gateway=$?",
        server = host.server,
        port = host.port,
    );
    let (code, stdout, stderr) = run_sh(&builder, &[], &script);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("{GREETING}\noutbound=0")),
        "the test host was not reached: {stdout}"
    );
    assert!(
        !stdout.contains(&format!("{GREETING}\nloopback"))
            && !stdout.contains(&format!("{GREETING}\ngateway")),
        "the host's loopback service was reached: {stdout}"
    );
    // `bridge` is docker's name for the same network; `--network host` reaches the loopback.
    let (_, stdout, stderr) = run_sh(&builder, &["--network", "bridge"], &script);
    assert!(stdout.contains("outbound=0"), "bridge: {stdout} {stderr}");
    let (code, stdout, stderr) = run_sh(
        &builder,
        &["--network", "host"],
        &format!("nc -w 2 127.0.0.1 {local}"),
    );
    assert_eq!((code, stdout.trim()), (Some(0), GREETING), "host: {stderr}");
}

#[test]
fn network_none_has_only_loopback_and_the_default_has_the_stacks_device() {
    let Some(builder) = builder() else { return };
    let Some(()) = slirp() else { return };
    let devices = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ,";
    let (code, stdout, stderr) = run_sh(&builder, &["--network", "none"], devices);
    assert_eq!((code, stdout.as_str()), (Some(0), "lo,"), "{stderr}");
    let (code, stdout, stderr) = run_sh(&builder, &[], devices);
    assert_eq!((code, stdout.as_str()), (Some(0), "lo,tap0,"), "{stderr}");
}

#[test]
fn etc_files_carry_add_host_dns_and_hostname() {
    let Some(builder) = builder() else { return };
    let Some(()) = slirp() else { return };
    let (code, stdout, stderr) = run_sh(
        &builder,
        &[
            "--hostname",
            "web",
            "--add-host",
            "db:10.1.2.3",
            "--add-host",
            "gw:host-gateway",
            "--dns",
            "192.0.2.53",
            "--dns",
            "192.0.2.54",
        ],
        "cat /etc/hosts; echo --; cat /etc/resolv.conf; echo --; hostname",
    );
    assert_eq!(code, Some(0), "{stderr}");
    let parts: Vec<&str> = stdout.split("--\n").collect();
    assert_eq!(parts.len(), 3, "{stdout}");
    assert!(
        parts[0].starts_with("127.0.0.1\tlocalhost\n")
            && parts[0].ends_with("10.1.2.3\tdb\n10.0.2.2\tgw\n10.0.2.100\tweb\n"),
        "/etc/hosts: {}",
        parts[0]
    );
    assert!(
        parts[1].starts_with("nameserver 192.0.2.53\nnameserver 192.0.2.54\n"),
        "/etc/resolv.conf: {}",
        parts[1]
    );
    assert_eq!(parts[2], "web\n");
    // Docker's refusals: -p off the private network, --dns with the host's.
    for (args, says) in [
        (
            &["--network", "host", "-p", "8080"][..],
            "host network mode",
        ),
        (&["--network", "none", "-p", "8080"][..], "port publishing"),
        (&["--network", "host", "--dns", "192.0.2.1"][..], "dns"),
        (&["-p", "80/sctp"][..], "sctp"),
        (&["--add-host", "nocolon"][..], "--add-host"),
    ] {
        let (code, _, stderr) = run_sh(&builder, args, "true");
        assert!(
            code == Some(125) && stderr.contains(says),
            "{args:?}: {code:?} {stderr}"
        );
    }
}

#[test]
fn resolv_conf_names_a_usable_nameserver_and_lookups_work_when_the_host_resolves() {
    let Some(builder) = builder() else { return };
    let Some(()) = slirp() else { return };
    let (code, stdout, stderr) = run_sh(&builder, &[], "grep ^nameserver /etc/resolv.conf");
    assert_eq!(code, Some(0), "{stderr}");
    for line in stdout.lines() {
        let server: std::net::IpAddr = line["nameserver ".len()..].parse().expect("an address");
        assert!(!server.is_loopback(), "a loopback nameserver: {stdout}");
    }
    let name = "deb.debian.org";
    if std::net::ToSocketAddrs::to_socket_addrs(&(name, 80)).is_err() {
        // Not a requirement CI can provide (the machine may have no resolver at all).
        #[allow(clippy::disallowed_macros)]
        {
            eprintln!("notice: skipping the lookup, no host resolver answers for {name}");
        }
        return;
    }
    let (code, stdout, stderr) = run_sh(&builder, &[], &format!("nslookup {name}"));
    assert_eq!(code, Some(0), "nslookup failed: {stdout} {stderr}");
    assert!(stdout.contains("Address"), "{stdout}");
}

#[test]
fn a_published_port_reaches_busybox_httpd_from_the_host() {
    let Some(builder) = builder() else { return };
    let Some(()) = slirp() else { return };
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let publish = format!("{port}:8080");
    let mut child = builder
        .kiln(&[
            "run",
            "--rm",
            // So the forwarded SIGTERM ends httpd (as pid 1 it would ignore it).
            "--init",
            "-p",
            &publish,
            "base",
            "sh",
            "-c",
            "mkdir -p /www && echo served-from-the-container > /www/index.html && \
             exec httpd -f -p 8080 -h /www",
        ])
        .spawn();
    let kiln_pid = child.id();
    let body = std::cell::RefCell::new(String::new());
    let fetched = within(15, || {
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        let served = reply.contains("served-from-the-container");
        *body.borrow_mut() = reply;
        served
    });
    let stacks = stacks_of(kiln_pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(kiln_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM kiln");
    let _ = child.wait();
    assert!(
        fetched,
        "no answer on 127.0.0.1:{port}: {:?}",
        body.borrow()
    );
    assert_eq!(stacks.len(), 1, "one stack per container: {stacks:?}");
    assert!(
        within(5, || stacks.iter().all(|&pid| gone(pid))),
        "slirp4netns {stacks:?} outlived kiln run"
    );
}

#[test]
fn no_stack_outlives_a_sigkilled_kiln_run() {
    let Some(builder) = builder() else { return };
    let Some(()) = slirp() else { return };
    let mut child = builder
        .kiln(&["run", "--rm", "base", "sleep", "300"])
        .spawn();
    let kiln_pid = child.id();
    assert!(
        within(10, || !stacks_of(kiln_pid).is_empty()),
        "no slirp4netns under kiln run"
    );
    let stacks = stacks_of(kiln_pid);
    child.kill().expect("SIGKILL kiln");
    let _ = child.wait();
    assert!(
        within(5, || stacks.iter().all(|&pid| gone(pid))),
        "slirp4netns {stacks:?} outlived a SIGKILLed kiln run"
    );
}

#[test]
fn a_run_step_reaches_the_test_host_and_host_needs_the_entitlement() {
    let Some(builder) = builder() else { return };
    let Some(()) = slirp() else { return };
    let Some(host) = TestHost::start() else {
        return;
    };
    let local = loopback_service();
    // Several steps share the pool's one namespace; each reaches the test host, none the
    // host's loopback.
    let dockerfile = format!(
        "FROM base\n\
         RUN nc -w 3 {s} {p} | grep -q {GREETING}\n\
         RUN ! nc -w 2 127.0.0.1 {local}\n\
         RUN nc -w 3 {s} {p} > /got && test -s /got\n",
        s = host.server,
        p = host.port,
    );
    let ctx = support::context(&[("Dockerfile", &dockerfile)]);
    builder.build(ctx.path(), &[]).ok();

    // RUN --network=host: refused without the entitlement, in BuildKit's words; allowed with it.
    let dockerfile =
        format!("FROM base\nRUN --network=host nc -w 2 127.0.0.1 {local} > /got && test -s /got\n");
    let ctx = support::context(&[("Dockerfile", &dockerfile)]);
    let refused = builder.build(ctx.path(), &[]).fails();
    assert!(refused.contains("network.host is not allowed"), "{refused}");
    builder.build(ctx.path(), &["--allow", "network.host"]).ok();
    // The build's --network host needs it as well.
    let dockerfile = format!("FROM base\nRUN nc -w 2 127.0.0.1 {local} | grep -q {GREETING}\n");
    let ctx = support::context(&[("Dockerfile", &dockerfile)]);
    let refused = builder.build(ctx.path(), &["--network", "host"]).fails();
    assert!(refused.contains("network.host is not allowed"), "{refused}");
    builder
        .build(
            ctx.path(),
            &["--network", "host", "--allow", "network.host"],
        )
        .ok();
    // --network none: only loopback.
    let ctx = support::context(&[(
        "Dockerfile",
        "FROM base\nRUN test \"$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')\" = lo\n",
    )]);
    builder.build(ctx.path(), &["--network", "none"]).ok();
}

#[test]
fn no_stack_outlives_a_build_or_a_sigkilled_build() {
    let Some(builder) = builder() else { return };
    let Some(()) = slirp() else { return };
    let ctx = support::context(&[(
        "Dockerfile",
        "FROM base\nRUN sleep 1 && echo one > /one\nRUN sleep 1 && echo two > /two\n",
    )]);
    let mut child = builder
        .kiln(&["build", "--progress", "plain", ctx.path().to_str().unwrap()])
        .spawn();
    let kiln_pid = child.id();
    // Every stack seen while the build runs.
    let mut seen = std::collections::BTreeSet::new();
    let status = loop {
        seen.extend(stacks_of(kiln_pid));
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the build failed");
    assert_eq!(
        seen.len(),
        1,
        "one pooled stack for two serial steps: {seen:?}"
    );
    assert!(
        within(5, || seen.iter().all(|&pid| gone(pid))),
        "slirp4netns {seen:?} outlived the build"
    );

    let ctx = support::context(&[("Dockerfile", "FROM base\nRUN sleep 300\n")]);
    let mut child = builder
        .kiln(&["build", "--progress", "plain", ctx.path().to_str().unwrap()])
        .spawn();
    let kiln_pid = child.id();
    assert!(
        within(10, || !stacks_of(kiln_pid).is_empty()),
        "no slirp4netns under kiln build"
    );
    let stacks = stacks_of(kiln_pid);
    child.kill().expect("SIGKILL kiln");
    let _ = child.wait();
    assert!(
        within(5, || stacks.iter().all(|&pid| gone(pid))),
        "slirp4netns {stacks:?} outlived a SIGKILLed build"
    );
}

/// The stack rearranges mounts for its sandbox (pivot_root, then the old root detached): that
/// must stay in a namespace of its own. Run in the host's namespace, the detach propagated to
/// the mounts under every shared mount and unmounted them — the peer dockerd's container roots
/// (its root directory is a shared bind mount) among them, so docker's next containers started
/// on empty roots. The test makes the same shape: a shared bind mount with a tmpfs inside.
#[test]
fn the_private_network_leaves_the_hosts_mounts_alone() {
    let Some(builder) = builder() else { return };
    let Some(()) = slirp() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let outer = dir.path().to_str().expect("utf-8").to_string();
    let inner = format!("{outer}/inner");
    let mount = |args: &[&str]| {
        let status = Command::new("mount").args(args).status().expect("mount");
        assert!(status.success(), "mount {args:?}");
    };
    struct Unmount(Vec<String>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            for target in &self.0 {
                let _ = Command::new("umount").arg(target).status();
            }
        }
    }
    mount(&["--bind", &outer, &outer]);
    let mut unmount = Unmount(vec![outer.clone()]);
    mount(&["--make-shared", &outer]);
    std::fs::create_dir(&inner).expect("inner");
    mount(&["-t", "tmpfs", "kiln-shared-test", &inner]);
    unmount.0.insert(0, inner.clone());
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .any(|line| line.split(' ').nth(4) == Some(inner.as_str()))
    };
    assert!(mounted());
    let (code, stdout, stderr) = run_sh(&builder, &[], "grep -c tap0 /proc/net/dev");
    assert_eq!((code, stdout.as_str()), (Some(0), "1\n"), "{stderr}");
    assert!(
        mounted(),
        "a kiln run on the private network unmounted {inner}"
    );
}
