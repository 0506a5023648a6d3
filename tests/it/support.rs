//! Shared helpers for the integration tests.

pub mod http;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// The shared conformance data (`../shared/conformance` beside the repository), or `None` after
/// printing a notice when it is absent. Under `CI=true` its absence is a failure.
pub fn conformance_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    let found = dir.is_dir().then(|| dir.clone());
    require(
        &format!("{} (../shared beside the repository)", dir.display()),
        found,
    )
}

/// `found`, or `None` after printing a skip notice naming `what` when it is absent. Under
/// `CI=true` an absent requirement is a failure: CI installs everything the tests need
/// (`scripts/test`), so a skip there would hide a test that never ran.
pub fn require<T>(what: &str, found: Option<T>) -> Option<T> {
    if found.is_some() {
        return found;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is missing: CI must provide it (see scripts/test)");
    }
    eprintln!("notice: skipping, {what} is absent (it is required when CI=true)");
    None
}

/// Debian's static busybox (`/bin/busybox` from busybox-static), the base of every test image.
pub fn busybox() -> Option<PathBuf> {
    let path = PathBuf::from("/bin/busybox");
    let is_static = fs::read(&path).ok().is_some_and(|elf| is_static_elf(&elf));
    require(
        "a static /bin/busybox (Debian package busybox-static)",
        is_static.then_some(path),
    )
}

/// Whether `elf` is a 64-bit little-endian ELF without a `PT_INTERP` program header (no dynamic
/// loader). Searching for the text "ld-linux" is not enough: static glibc binaries, Debian's
/// busybox-static among them, embed that name for `dlopen`.
fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let p_type = u32_at(phoff + i * usize::from(phentsize));
        p_type.is_some_and(|t| t != PT_INTERP)
    })
}

/// The path of `program` on `PATH`, or `None` after a skip notice (a failure under `CI=true`).
pub fn tool(program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    });
    require(&format!("the program {program}"), found)
}

/// `Some(())` when the tests run as root (namespaces, mounts and cgroups need it), else a skip
/// notice (a failure under `CI=true`, which runs as root).
pub fn root() -> Option<()> {
    require("root (uid 0)", nix_is_root().then_some(()))
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Creates files (`name` → contents) and directories (names ending in `/`) under `root`.
pub fn populate(root: &Path, items: &[(&str, &str)]) {
    for (name, contents) in items {
        let path = root.join(name);
        if name.ends_with('/') {
            fs::create_dir_all(&path).expect("create directory");
        } else {
            fs::create_dir_all(path.parent().expect("has a parent")).expect("create directory");
            fs::write(&path, contents).expect("write file");
        }
    }
}

/// A temporary directory (a build context) holding `items` (see [`populate`]).
pub fn context(items: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    populate(dir.path(), items);
    dir
}

/// The peer dockerd (Docker 20.10) that `scripts/test` starts from `../shared/peers`: its
/// socket `/var/tmp/kiln-peers/docker.sock`, checked with `docker version`. `None` after a skip
/// notice when it does not answer (a failure under `CI=true`). It has no bridge network: run
/// containers with `--network none` or `host`.
pub fn peer_docker() -> Option<PeerDocker> {
    const SOCKET: &str = "/var/tmp/kiln-peers/docker.sock";
    // Debian's client (docker.io, the peer's own): a newer `docker` first on PATH needs buildx
    // for `DOCKER_BUILDKIT=1` builds, which the peer's 20.10 daemon does without.
    let debian = PathBuf::from("/usr/bin/docker");
    let program = Some(debian)
        .filter(|p| p.is_file())
        .or_else(|| tool("docker"))?;
    let peer = PeerDocker {
        program,
        host: format!("unix://{SOCKET}"),
    };
    let answers = Path::new(SOCKET).exists()
        && peer
            .command()
            .arg("version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    require(
        &format!("the peer dockerd on {SOCKET} (../shared/peers/start-peers.sh docker)"),
        answers.then_some(peer),
    )
}

/// The docker CLI pointed at the peer dockerd.
#[derive(Debug, Clone)]
pub struct PeerDocker {
    program: PathBuf,
    host: String,
}

impl PeerDocker {
    /// `docker` with `DOCKER_HOST` set to the peer.
    pub fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.env("DOCKER_HOST", &self.host);
        command
    }

    /// Runs `docker ARGS...`, panicking with its output when it fails; returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("spawn docker");
        assert!(
            out.status.success(),
            "docker {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The `kiln` binary under test, to configure and run fluently; the one way every integration
/// test runs it:
///
/// ```ignore
/// let out = kiln().root(&store).args(["build", "-t", "x", "."]).current_dir(&ctx).run();
/// let id = out.success().stdout_str();
/// let err = kiln().args(["parse", "-f", "-"]).stdin("FROM").run().failure().stderr_str();
/// ```
///
/// It reads like `assert_cmd` (a [`Kiln`] builds the command, [`Kiln::run`] gives an [`Output`]
/// whose assertions print the command line, stdout and stderr when they fail) but is written
/// here on `std::process`: the tests also need what `assert_cmd` leaves to the caller (the
/// store root in front of the subcommand, stdin bytes for [`Kiln::spawn`], a line for
/// `script(1)`), and a wrapper of this size does not justify a dependency not yet in Cargo.lock.
///
/// It runs in the repository (so `testdata/...` paths resolve), with stdin from /dev/null
/// unless [`Kiln::stdin`] gives it bytes.
pub fn kiln() -> Kiln {
    Kiln {
        root: None,
        args: Vec::new(),
        envs: Vec::new(),
        current_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        stdin: None,
    }
}

/// One run of the `kiln` binary being set up; see [`kiln`].
#[derive(Debug, Clone)]
pub struct Kiln {
    root: Option<PathBuf>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    current_dir: PathBuf,
    stdin: Option<Vec<u8>>,
}

impl Kiln {
    /// The store root, passed as `--root ROOT` before every other argument (a global option).
    pub fn root(mut self, root: impl AsRef<Path>) -> Self {
        self.root = Some(root.as_ref().to_path_buf());
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// An environment variable on top of the test's own environment (`KILN_ROOT`, say).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// The working directory (the repository unless set).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.current_dir = dir.as_ref().to_path_buf();
        self
    }

    /// Bytes for kiln's standard input, which is otherwise /dev/null.
    pub fn stdin(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.stdin = Some(bytes.as_ref().to_vec());
        self
    }

    /// The command as a `std::process::Command` (program, root, arguments, environment and
    /// working directory; stdio left to the caller), for what the builder does not cover: a
    /// terminal as stdin or stdout, another uid, inherited output.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        if let Some(root) = &self.root {
            command.arg("--root").arg(root);
        }
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.current_dir);
        command
    }

    /// Starts kiln with stdout and stderr piped, for a test that talks to a running kiln
    /// (signals, `run -d`). The stdin bytes, if any, are written and the pipe closed first.
    pub fn spawn(&self) -> Child {
        let mut child = self
            .command()
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {self}: {e}"));
        if let Some(bytes) = &self.stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            // kiln may stop reading before the end (it failed, say); its exit status tells.
            let _ = pipe.write_all(bytes);
        }
        child
    }

    /// Runs kiln to its end: how it ended and everything it printed.
    pub fn run(&self) -> Output {
        let out = self
            .spawn()
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for {self}: {e}"));
        Output {
            command: self.to_string(),
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }

    /// The program and its arguments quoted for `sh -c` (for `script(1)`, which gives kiln a
    /// terminal); the environment, working directory and stdin are not part of it.
    pub fn shell_line(&self) -> String {
        assert!(
            self.envs.is_empty() && self.stdin.is_none(),
            "a shell line carries neither environment nor stdin: {self}"
        );
        let command = self.command();
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|word| shell_quote(&word.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `word` as one `sh` word: as it is when that is safe, else in single quotes.
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The command line, with the environment and working directory it adds, for messages.
impl std::fmt::Display for Kiln {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (key, value) in &self.envs {
            write!(f, "{}={} ", key.to_string_lossy(), value.to_string_lossy())?;
        }
        write!(f, "kiln")?;
        if let Some(root) = &self.root {
            write!(f, " --root {}", root.display())?;
        }
        for arg in &self.args {
            write!(f, " {}", shell_quote(&arg.to_string_lossy()))?;
        }
        write!(f, " (in {})", self.current_dir.display())
    }
}

/// How a [`Kiln::run`] ended and what it printed. The assertions return the output so they chain:
/// `.run().success().stdout_str()`.
#[derive(Clone)]
pub struct Output {
    command: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// Asserts that kiln exited with 0.
    #[track_caller]
    pub fn success(self) -> Self {
        assert!(self.status.success(), "kiln failed: {self:?}");
        self
    }

    /// Asserts that kiln failed the way it reports errors: an exit code other than 0 (not a
    /// signal) and nothing on stdout, the error going to stderr.
    #[track_caller]
    pub fn failure(self) -> Self {
        assert!(
            self.status.code().is_some_and(|code| code != 0),
            "kiln did not fail with an exit code: {self:?}"
        );
        assert!(self.stdout.is_empty(), "a failing kiln printed: {self:?}");
        self
    }

    /// Asserts that kiln exited with `code`.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "kiln did not exit with {code}: {self:?}"
        );
        self
    }

    /// Stdout, which must be UTF-8.
    #[track_caller]
    pub fn stdout_str(&self) -> String {
        String::from_utf8(self.stdout.clone())
            .unwrap_or_else(|_| panic!("kiln printed something other than UTF-8: {self:?}"))
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Stdout parsed as one JSON value.
    #[track_caller]
    pub fn stdout_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("kiln did not print JSON ({e}): {self:?}"))
    }
}

/// The plain `std::process::Output`, for code that handles other programs' outputs too.
impl From<Output> for std::process::Output {
    fn from(out: Output) -> Self {
        std::process::Output {
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

/// The command, its status and both streams in full, the text every failed assertion shows.
impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n{}\n--- stdout\n{}\n--- stderr\n{}",
            self.command,
            self.status,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// Where `../shared/peers/start-peers.sh` keeps its state (`PEER_STATE`, as the script reads it).
fn peer_state() -> PathBuf {
    std::env::var_os("PEER_STATE")
        .map_or_else(|| PathBuf::from("/var/tmp/kiln-peers"), PathBuf::from)
}

/// The loopback registry that `scripts/test` starts from `../shared/peers` (`registry`):
/// `host:port` from `PEER_REGISTRY` (the script's `--env`), `127.0.0.1:5000` by default,
/// checked with `GET /v2/` (200). `None` after a skip notice when it does not answer (a failure
/// under `CI=true`).
pub fn peer_registry() -> Option<String> {
    use std::io::Read as _;
    let address = std::env::var("PEER_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_string());
    let answers = || -> std::io::Result<bool> {
        let mut stream = std::net::TcpStream::connect(&address)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /v2/ HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"))
    };
    let found = answers().unwrap_or(false).then(|| address.clone());
    require(
        &format!("the peer registry on {address} (../shared/peers/start-peers.sh registry)"),
        found,
    )
}

/// The current BuildKit peer (v0.32, `../shared/peers/start-peers.sh buildkit`): `buildctl` from
/// `PEER_BUILDCTL` (default `/var/tmp/kiln-peers/bin/buildctl`) talking to `BUILDKIT_HOST`
/// (default the script's socket), checked with `buildctl debug workers`. `None` after a skip
/// notice when it does not answer (a failure under `CI=true`). Its RUN steps use the host network.
pub fn peer_buildctl() -> Option<PeerBuildctl> {
    let state = peer_state();
    let program =
        std::env::var_os("PEER_BUILDCTL").map_or_else(|| state.join("bin/buildctl"), PathBuf::from);
    let host = std::env::var("BUILDKIT_HOST")
        .unwrap_or_else(|_| format!("unix://{}", state.join("buildkitd.sock").display()));
    let peer = PeerBuildctl { program, host };
    let answers = peer.program.is_file()
        && peer
            .command()
            .args(["debug", "workers"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let what = format!(
        "the peer buildkitd at {} with {} (../shared/peers/start-peers.sh buildkit)",
        peer.host,
        peer.program.display()
    );
    require(&what, answers.then_some(peer))
}

/// `buildctl` pointed at the peer buildkitd.
#[derive(Debug, Clone)]
pub struct PeerBuildctl {
    program: PathBuf,
    host: String,
}

impl PeerBuildctl {
    /// `buildctl` with `BUILDKIT_HOST` set to the peer.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.env("BUILDKIT_HOST", &self.host);
        command
    }
}

/// The pids of processes whose command line is exactly `args`.
pub fn processes_running(args: &[&str]) -> Vec<i32> {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

/// Waits up to `seconds` for `probe` to hold.
pub fn within(seconds: u64, probe: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if probe() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// What a store's staging (`ROOT/tmp`) holds besides the resume state of blobs whose downloads
/// were cut short (`sha256-<hex>.partial`), which is kept for the next pull: anything else, and
/// the partial of the blob `corrupt_hex` (whose bytes were refused), is junk.
pub fn staging_junk(root: &Path, corrupt_hex: &str) -> Vec<String> {
    let corrupt = format!("sha256-{corrupt_hex}.partial");
    fs::read_dir(root.join("tmp"))
        .map(|dir| {
            dir.map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| {
                *name == corrupt || !(name.starts_with("sha256-") && name.ends_with(".partial"))
            })
            .collect()
        })
        .unwrap_or_default()
}

/// Spawns `command` in a new session whose controlling terminal is `slave`, its stdin, stdout and
/// stderr (as the sandbox does: setsid(2), then TIOCSCTTY on the slave, see tty_ioctl(4)). The
/// command and `slave` are dropped, so the master sees EIO once the child exits.
pub fn spawn_on_tty(mut command: Command, slave: std::os::fd::OwnedFd) -> Child {
    use std::os::unix::process::CommandExt as _;
    let stdio = |fd: &std::os::fd::OwnedFd| Stdio::from(fd.try_clone().expect("dup slave"));
    command
        .stdin(stdio(&slave))
        .stdout(stdio(&slave))
        .stderr(stdio(&slave));
    // SAFETY: setsid and ioctl are async-signal-safe; nothing is allocated after fork.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn on a terminal");
    drop(command);
    drop(slave);
    child
}

/// Everything read from `fd` until EIO/EOF, giving up (and failing) after `limit_secs` of silence
/// so a broken relay fails instead of hanging.
pub fn read_until_closed(fd: &std::os::fd::OwnedFd, limit_secs: u16) -> String {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd as _;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(limit_secs * 1000)).expect("poll");
        assert!(
            ready > 0,
            "nothing from the terminal; read so far: {}",
            String::from_utf8_lossy(&out)
        );
        match nix::unistd::read(fd.as_fd(), &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
