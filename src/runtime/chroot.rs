//! `--isolation=chroot`: one process with its root changed to a plain directory, without
//! namespaces, for where the sandbox cannot be made (an unprivileged container; see
//! [`super::isolation`]).
//!
//! The root is changed by chroot(2) when kiln holds `CAP_SYS_CHROOT` (root in a container with
//! docker's default capabilities), else by `proot -r DIR` (ptrace, as any user; Debian's
//! `proot`), which also binds `/proc`, `/dev`, `/sys` and the spec's bind mounts. Nothing else
//! of the sandbox exists here: the process shares this machine's (or container's) pid, network,
//! IPC and UTS namespaces, sees its `/proc`, and can reach every file the user can. It leads a
//! process group of its own: when it ends, [`Sandbox::wait`] kills what the group still holds,
//! as the end of a pid namespace's init would; a process that left the group (`setsid`) is
//! beyond reach. proot itself waits for every process it traces, so under proot a step's
//! background processes keep it running until they end, and proot exits with the status of the
//! last one. The caller prepares the directory (a copy of the image's files; see
//! `crate::container::chroot`) and turns mounts that are not host binds into copies.

use super::isolation::{CAP_SYS_CHROOT, Probe};
use super::sandbox::{ExecErrorKind, RuntimeError, Sandbox};
use super::spec::{MountSource, Network, Spec, Stdio};
use crate::sys::dirfd::open_in_root;
use crate::sys::process::{ChildSetup, prepare_child};
use nix::fcntl::OFlag;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

/// The environment variable naming the proot binary (default: `proot` on `PATH`).
pub const PROOT_ENV: &str = "KILN_PROOT";
/// Docker's default `PATH`, for a command whose environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How the root is changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootChanger {
    /// chroot(2): kiln holds `CAP_SYS_CHROOT`. No mounts are possible (no namespace, and in a
    /// container no `CAP_SYS_ADMIN`), so mounts must have been made copies.
    Chroot,
    /// `proot -0 -r DIR` through this binary: any user, via ptrace.
    Proot(PathBuf),
}

impl RootChanger {
    /// chroot(2) when this process may, else proot when it is installed.
    pub fn detect() -> Result<RootChanger, RuntimeError> {
        if Probe::read().has_capability(CAP_SYS_CHROOT) {
            return Ok(RootChanger::Chroot);
        }
        if let Some(named) = std::env::var_os(PROOT_ENV).filter(|v| !v.is_empty()) {
            let named = PathBuf::from(named);
            if !named.is_file() {
                return Err(not_in_chroot(
                    "running a command",
                    &format!("{PROOT_ENV} names {}, which is not a file", named.display()),
                ));
            }
            return Ok(RootChanger::Proot(named));
        }
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("proot"))
                .find(|path| path.is_file())
        });
        found.map(RootChanger::Proot).ok_or_else(|| {
            not_in_chroot(
                "running a command",
                "kiln holds no CAP_SYS_CHROOT and finds no proot (install Debian's proot \
                 package, or name the binary in KILN_PROOT)",
            )
        })
    }

    /// Whether this changer binds host paths into the root (else the caller copies them).
    pub fn binds(&self) -> bool {
        matches!(self, RootChanger::Proot(_))
    }
}

/// The error for `what`, which `--isolation=chroot` cannot do, and why.
pub fn not_in_chroot(what: &str, why: &str) -> RuntimeError {
    RuntimeError::NotInChroot {
        what: what.to_string(),
        why: why.to_string(),
    }
}

/// Starts `spec`'s process with its root changed to `root` (a directory the caller prepared:
/// the working directory exists in it, and every mount of `spec` is a host bind, which only
/// proot can make). The returned [`Sandbox`] is waited for and killed as a sandbox is.
pub fn spawn(
    root: &Path,
    spec: &Spec,
    changer: &RootChanger,
    stdio: Stdio,
) -> Result<Sandbox, RuntimeError> {
    refuse_what_needs_namespaces(spec)?;
    let program = find_program(root, spec)?;
    let (uid, gid) = (spec.user.uid, spec.user.gid);
    let mut command;
    let mut setup = ChildSetup {
        root: None,
        cwd: None,
        ids: None,
        no_new_privileges: spec.no_new_privileges,
    };
    match changer {
        RootChanger::Chroot => {
            if let Some(mount) = spec.mounts.first() {
                return Err(not_in_chroot(
                    &format!("the mount on {}", mount.destination),
                    "chroot(2) without namespaces cannot mount (the caller copies mounts in)",
                ));
            }
            command = std::process::Command::new(&program);
            command.arg0(spec.args.first().map_or(program.as_str(), String::as_str));
            setup.root = Some(c_path(root)?);
            setup.cwd = Some(c_string("working directory", &spec.cwd)?);
            setup.ids = Some((uid, gid, spec.user.additional_gids.clone()));
        }
        RootChanger::Proot(proot) => {
            command = std::process::Command::new(proot);
            command.arg("-r").arg(root).arg("-w").arg(&spec.cwd);
            for kernel in ["/proc", "/dev", "/sys"] {
                command.arg("-b").arg(kernel);
            }
            for mount in &spec.mounts {
                let MountSource::Bind(source) = &mount.source else {
                    return Err(not_in_chroot(
                        &format!("the mount on {}", mount.destination),
                        "only host binds are made by proot (the caller copies the others in)",
                    ));
                };
                let mut bind = source.as_os_str().to_owned();
                bind.push(":");
                bind.push(&mount.destination);
                command.arg("-b").arg(bind);
            }
            // proot fakes root (-0) or any other ids (-i); the files the process makes are
            // kiln's user's all the same.
            if uid == 0 && gid == 0 {
                command.arg("-0");
            } else {
                command.arg("-i").arg(format!("{uid}:{gid}"));
            }
            command.arg(&program);
        }
    }
    command.args(spec.args.iter().skip(1));
    command.env_clear();
    for entry in &spec.env {
        if let Some((key, value)) = entry.split_once('=') {
            command.env(key, value);
        }
    }
    match stdio {
        Stdio::Streams {
            stdin,
            stdout,
            stderr,
        } => {
            command.stdin(stdin.map_or_else(std::process::Stdio::null, Into::into));
            command.stdout(stdout);
            command.stderr(stderr);
        }
        Stdio::Terminal { .. } => {
            return Err(not_in_chroot(
                "a terminal (-t)",
                "it is allocated in the sandbox's own devpts",
            ));
        }
    }
    prepare_child(&mut command, setup);
    if let RootChanger::Proot(proot) = changer {
        // The program was found inside the root already: a failure here is proot's own.
        let child = command.spawn().map_err(|source| RuntimeError::Io {
            action: "starting proot",
            path: proot.clone(),
            source,
        })?;
        return adopt(child);
    }
    let child = command.spawn().map_err(|error| {
        let errno = nix::errno::Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO));
        let kind = ExecErrorKind::new(errno, false);
        RuntimeError::Exec {
            program: spec.args.first().cloned().unwrap_or_default(),
            kind,
            exit_code: kind.exit_code(),
        }
    })?;
    adopt(child)
}

/// The started child as a [`Sandbox`], which reaps it (std's handle neither waits nor kills when
/// dropped).
fn adopt(child: std::process::Child) -> Result<Sandbox, RuntimeError> {
    let pid = i32::try_from(child.id()).map_err(|_| RuntimeError::Sys {
        action: "reading the pid of the chroot process",
        errno: nix::errno::Errno::ERANGE,
    })?;
    drop(child);
    Sandbox::adopt(pid)
}

/// What only the sandbox can do, refused with the feature's name.
fn refuse_what_needs_namespaces(spec: &Spec) -> Result<(), RuntimeError> {
    if spec.args.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    if spec.network == Network::None {
        return Err(not_in_chroot(
            "--network=none",
            "there is no network namespace: the command shares this machine's network",
        ));
    }
    if spec.rootfs.readonly {
        return Err(not_in_chroot(
            "a read-only root (--read-only)",
            "the root is a plain directory, not a mount",
        ));
    }
    if spec.init {
        return Err(not_in_chroot(
            "--init",
            "there is no pid namespace for an init to reap",
        ));
    }
    if !spec.cgroup_procs.is_empty() {
        return Err(not_in_chroot(
            "resource limits (--memory, --cpus, --pids-limit)",
            "the command is not put in a cgroup of its own",
        ));
    }
    if spec.tty {
        return Err(not_in_chroot(
            "a terminal (-t)",
            "it is allocated in the sandbox's own devpts",
        ));
    }
    Ok(())
}

/// `args[0]` as a path inside `root`: as given when it has a `/`, else the first match in the
/// `PATH` of the environment (Docker's default without one) that is a regular file with an
/// execute bit, resolved inside the root as the sandbox resolves it.
fn find_program(root: &Path, spec: &Spec) -> Result<String, RuntimeError> {
    let program = spec.args.first().ok_or(RuntimeError::NoCommand)?;
    let not_found = |kind: ExecErrorKind| RuntimeError::Exec {
        program: program.clone(),
        kind,
        exit_code: kind.exit_code(),
    };
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| RuntimeError::Sys {
        action: "opening the chroot directory",
        errno,
    })?;
    let executable = |path: &str| {
        let inside = if path.starts_with('/') {
            PathBuf::from(path.trim_start_matches('/'))
        } else {
            Path::new(spec.cwd.trim_start_matches('/')).join(path)
        };
        open_in_root(root_fd.as_fd(), &inside, OFlag::O_PATH)
            .ok()
            .and_then(|fd| nix::sys::stat::fstat(fd.as_fd()).ok())
            .is_some_and(|stat| {
                stat.st_mode & libc::S_IFMT == libc::S_IFREG && stat.st_mode & 0o111 != 0
            })
    };
    if program.contains('/') {
        return if executable(program) {
            Ok(program.clone())
        } else {
            Err(not_found(ExecErrorKind::NotFound))
        };
    }
    let path = spec
        .env
        .iter()
        .rev()
        .find_map(|entry| entry.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| not_found(ExecErrorKind::NotFoundInPath))
}

fn c_path(path: &Path) -> Result<CString, RuntimeError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| RuntimeError::Nul {
        what: "the chroot directory",
        value: path.display().to_string(),
    })
}

fn c_string(what: &'static str, value: &str) -> Result<CString, RuntimeError> {
    CString::new(value).map_err(|_| RuntimeError::Nul {
        what,
        value: value.to_string(),
    })
}
