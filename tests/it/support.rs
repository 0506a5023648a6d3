//! Shared helpers for the integration tests.

use std::fs;
use std::path::{Path, PathBuf};

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
