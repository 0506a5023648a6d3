//! What this process may do with file owners, device nodes and namespaces, decided once.
//!
//! kiln runs in one of three ways ([`Privilege`]):
//! - as real root (uid 0 of the initial user namespace): it keeps owners, makes device nodes and
//!   sandboxes use no user namespace;
//! - as root of a user namespace that maps more than one id: kiln's own, entered at start by
//!   [`enter_rootless`] for an unprivileged user with a range in `/etc/subuid` and `/etc/subgid`
//!   (podman's and buildah's "rootless with subordinate ids"), or one kiln was started in. Owners
//!   within the mapped ids are kept, device nodes cannot be made (mknod needs `CAP_MKNOD` in the
//!   initial namespace), overlayfs keeps its markers in `user.*` xattrs, and sandboxes reuse the
//!   namespace (their mount, pid, UTS, IPC and network namespaces are owned by it);
//! - unprivileged with one id: each sandbox gets a user namespace mapping only root to the caller,
//!   so nothing inside can switch users or chown (the fallback without a range).
//!
//! The decision is read from the process's own `uid_map` the first time [`current`] is asked,
//! unless [`enter_rootless`] made it before. It never changes afterwards.

use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};
use std::fmt;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// What this process may do; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// uid 0 of the initial user namespace (every id mapped to itself).
    Root,
    /// uid 0 of a user namespace whose ids `0..uids` and `0..gids` are mapped.
    NamespaceRoot {
        /// How many uids, from 0 up, have a host id.
        uids: u32,
        /// How many gids, from 0 up, have a host id.
        gids: u32,
    },
    /// Not root: sandboxes map only root, to this uid and gid.
    Single {
        /// The effective uid.
        uid: u32,
        /// The effective gid.
        gid: u32,
    },
}

impl Privilege {
    /// Real root: the initial user namespace's uid 0.
    pub fn is_real_root(self) -> bool {
        self == Privilege::Root
    }

    /// Whether files can be given other owners (chown): as root, and as a namespace's root
    /// within its ids ([`Privilege::maps`]).
    pub fn can_chown(self) -> bool {
        match self {
            Privilege::Root => true,
            Privilege::NamespaceRoot { uids, gids } => uids > 1 && gids > 1,
            Privilege::Single { .. } => false,
        }
    }

    /// Whether character and block devices can be made (`CAP_MKNOD` in the initial user
    /// namespace): only as real root.
    pub fn can_make_devices(self) -> bool {
        self == Privilege::Root
    }

    /// Whether the process runs in a user namespace already (not real root, not a single id):
    /// sandboxes reuse it, and overlayfs mounted in it needs `userxattr`.
    pub fn in_user_namespace(self) -> bool {
        matches!(self, Privilege::NamespaceRoot { .. })
    }

    /// The owner a file needs on disk to show as `uid`:`gid` inside a sandbox (and in a layer):
    /// the same ids, except with one id, whose sandboxes show the caller as root.
    pub fn host_owner(self, uid: u32, gid: u32) -> (u32, u32) {
        match self {
            Privilege::Single {
                uid: own_uid,
                gid: own_gid,
            } => (
                if uid == 0 { own_uid } else { uid },
                if gid == 0 { own_gid } else { gid },
            ),
            Privilege::Root | Privilege::NamespaceRoot { .. } => (uid, gid),
        }
    }

    /// The inverse of [`Privilege::host_owner`]: how a file owned by `uid`:`gid` on disk shows
    /// inside a sandbox, which is what a layer records.
    pub fn container_owner(self, uid: u32, gid: u32) -> (u32, u32) {
        match self {
            Privilege::Single {
                uid: own_uid,
                gid: own_gid,
            } => (
                if uid == own_uid { 0 } else { uid },
                if gid == own_gid { 0 } else { gid },
            ),
            Privilege::Root | Privilege::NamespaceRoot { .. } => (uid, gid),
        }
    }

    /// Whether `uid` and `gid` have a host id (root's own ids do in every case).
    pub fn maps(self, uid: u32, gid: u32) -> bool {
        match self {
            Privilege::Root => true,
            Privilege::NamespaceRoot { uids, gids } => uid < uids && gid < gids,
            Privilege::Single { .. } => uid == 0 && gid == 0,
        }
    }
}

/// The decision, once made.
static DECIDED: OnceLock<Privilege> = OnceLock::new();
/// The uid kiln was started as, when [`enter_rootless`] entered a namespace (after which the
/// effective uid reads 0).
static STARTED_AS: OnceLock<u32> = OnceLock::new();

/// What this process may do (decided once: by [`enter_rootless`], else from `/proc/self/uid_map`
/// on the first call).
pub fn current() -> Privilege {
    *DECIDED.get_or_init(detect)
}

/// The uid of the user who started kiln, whose files the rootless store is: the effective uid,
/// or, inside the namespace [`enter_rootless`] entered, the uid before it.
pub fn real_uid() -> u32 {
    STARTED_AS
        .get()
        .copied()
        .unwrap_or_else(|| nix::unistd::geteuid().as_raw())
}

/// The privilege read from the effective ids and the id maps.
fn detect() -> Privilege {
    let uid = nix::unistd::geteuid().as_raw();
    if uid != 0 {
        return Privilege::Single {
            uid,
            gid: nix::unistd::getegid().as_raw(),
        };
    }
    let mapped = |file: &str| {
        fs::read_to_string(file)
            .ok()
            .and_then(|text| mapped_from_zero(&text))
    };
    match (mapped("/proc/self/uid_map"), mapped("/proc/self/gid_map")) {
        (Some(uids), Some(gids)) if uids == u32::MAX && gids == u32::MAX => Privilege::Root,
        (Some(uids), Some(gids)) => Privilege::NamespaceRoot { uids, gids },
        // No /proc: assume what the effective uid says.
        _ => Privilege::Root,
    }
}

/// How many ids from 0 up an id map (`/proc/PID/uid_map`: "inside outside count" lines) maps
/// without a gap; `u32::MAX` for the initial namespace's whole map.
fn mapped_from_zero(map: &str) -> Option<u32> {
    let mut extents: Vec<(u32, u32)> = Vec::new();
    for line in map.lines() {
        let fields: Vec<u32> = line
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        if let [inside, _outside, count] = fields[..] {
            extents.push((inside, count));
        }
    }
    extents.sort_unstable();
    let mut next: u32 = 0;
    for (inside, count) in extents {
        if inside != next {
            break;
        }
        next = next.saturating_add(count);
    }
    Some(next)
}

/// One range of subordinate ids (`name:start:count` in `/etc/subuid` or `/etc/subgid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first host id.
    pub start: u32,
    /// How many ids.
    pub count: u32,
}

/// The ranges `subid_file` (the text of `/etc/subuid` or `/etc/subgid`) gives the user `name`
/// (or `uid`, which shadow's files may name instead), in the file's order. Malformed lines and
/// empty ranges are ignored, as newuidmap ignores them.
pub fn subordinate_ranges(subid_file: &str, name: Option<&str>, uid: u32) -> Vec<IdRange> {
    let uid = uid.to_string();
    subid_file
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let (owner, start, count) = (fields.next()?, fields.next()?, fields.next()?);
            if fields.next().is_some() || (Some(owner) != name && owner != uid) {
                return None;
            }
            let range = IdRange {
                start: start.parse().ok()?,
                count: count.parse().ok()?,
            };
            (range.count > 0).then_some(range)
        })
        .collect()
}

/// The most lines an id map may have (user_namespaces(7), since Linux 4.15), the caller's own
/// id taking one.
const MAX_MAP_LINES: usize = 340;

/// The arguments of `newuidmap PID …`/`newgidmap PID …` after the pid: `0 ID 1`, then each
/// range from 1 up; and how many ids that maps.
fn map_arguments(id: u32, ranges: &[IdRange]) -> (Vec<String>, u32) {
    let mut args = vec!["0".to_string(), id.to_string(), "1".to_string()];
    let mut next: u32 = 1;
    for range in ranges.iter().take(MAX_MAP_LINES - 1) {
        let count = range.count.min(u32::MAX - next);
        if count == 0 {
            break;
        }
        args.extend([next.to_string(), range.start.to_string(), count.to_string()]);
        next += count;
    }
    (args, next)
}

/// Why kiln runs with one id: what is missing for a subordinate range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The user has no range in this file (`/etc/subuid` or `/etc/subgid`).
    NoRange {
        /// The file.
        file: &'static str,
        /// The user's name, when the password database has one.
        user: Option<String>,
        /// The uid.
        uid: u32,
    },
    /// `newuidmap` or `newgidmap` is not installed.
    NoTool(&'static str),
    /// The tool is neither setuid root nor given capabilities, so it cannot write the map.
    ToolNotPrivileged(PathBuf),
    /// `no_new_privs` is set on kiln (a container's `allowPrivilegeEscalation: false`): setuid
    /// tools cannot gain root.
    NoNewPrivileges,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let consequence = "containers map only uid 0, so RUN steps cannot switch users or \
                           chown, and image files keep no owners, and the default network is \
                           the host's (the private network needs the range)";
        match self {
            Missing::NoRange { file, user, uid } => {
                let shown = user.clone().unwrap_or_else(|| uid.to_string());
                let who = match user {
                    Some(name) => format!("user {name} (uid {uid})"),
                    None => format!("uid {uid}"),
                };
                write!(
                    f,
                    "no range for {who} in {file}: {consequence}; add one with `usermod \
                     --add-subuids 100000-165535 --add-subgids 100000-165535 {shown}`"
                )
            }
            Missing::NoTool(tool) => write!(
                f,
                "{tool} is not installed: {consequence}; install it (Debian: the uidmap package)"
            ),
            Missing::ToolNotPrivileged(path) => write!(
                f,
                "{} is neither setuid root nor given capabilities, so it cannot map the \
                 subordinate ids: {consequence}",
                path.display()
            ),
            Missing::NoNewPrivileges => write!(
                f,
                "no_new_privs is set on this process, so newuidmap cannot gain the privilege to \
                 map subordinate ids: {consequence}"
            ),
        }
    }
}

/// What [`enter_rootless`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootless {
    /// kiln runs as root already: nothing to enter.
    NotNeeded,
    /// kiln is now root of its own user and mount namespaces, with these ids mapped.
    Entered(Privilege),
    /// kiln keeps one id; why.
    Fallback(Missing),
    /// The kernel refuses `unshare(CLONE_NEWUSER)` (seccomp, a sysctl, the namespace limit): kiln
    /// keeps one id, and sandboxes report the refusal themselves. Found by trying when a range is
    /// there, and by a forked probe when one is missing (no warning then: it would not help).
    Denied(Errno),
}

/// Why the namespace could not be entered once the attempt had begun.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    /// [`current`] was asked before: the privilege is decided once, at start.
    #[error("the process's privilege was decided before the rootless namespace was entered")]
    AlreadyDecided,
    /// Other threads exist: `unshare(CLONE_NEWUSER)` is refused in a multithreaded process.
    #[error("the rootless namespace must be entered before any thread starts ({0} threads run)")]
    Threads(u32),
    /// A system call failed.
    #[error("{action}")]
    Sys {
        /// What was being done.
        action: &'static str,
        /// The kernel's error.
        #[source]
        errno: Errno,
    },
    /// newuidmap or newgidmap failed after the namespace was created: kiln cannot go on (its
    /// ids are unmapped).
    #[error(
        "mapping the subordinate ids of /etc/subuid and /etc/subgid failed: {0}; fix the ranges \
         (they must not overlap another user's), or remove the user's lines to run with one id"
    )]
    Map(String),
}

/// Enters a user namespace (and a mount namespace of its own) where uid and gid 0 are the
/// caller's and 1..N its subordinate ranges, mapped by `newuidmap`/`newgidmap`. Must be called
/// before any thread starts and before [`current`]. When something is missing, the process is
/// left as it is and the answer says what ([`Rootless::Fallback`], [`Rootless::Denied`]).
///
/// The tools must write the maps from outside the new namespace, so a helper is forked before
/// `unshare(2)` and waits on a pipe; once the parent has unshared, it runs the two tools against
/// the parent's pid and exits. Forking a helper keeps kiln one process with its own pid, signals
/// and exit status (a re-exec into the namespace would need a waiting parent that forwards
/// signals, and would start kiln twice).
pub fn enter_rootless() -> Result<Rootless, EnterError> {
    if DECIDED.get().is_some() {
        return Err(EnterError::AlreadyDecided);
    }
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if uid == 0 {
        return Ok(Rootless::NotNeeded);
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name);
    let ranges = |file: &'static str, id: u32| {
        let text = fs::read_to_string(file).unwrap_or_default();
        let ranges = subordinate_ranges(&text, user.as_deref(), id);
        if ranges.is_empty() {
            return Err(Missing::NoRange {
                file,
                user: user.clone(),
                uid,
            });
        }
        Ok(ranges)
    };
    let checks = || -> Result<_, Missing> {
        let uid_ranges = ranges("/etc/subuid", uid)?;
        let gid_ranges = ranges("/etc/subgid", uid)?;
        let newuidmap = privileged_tool("newuidmap")?;
        let newgidmap = privileged_tool("newgidmap")?;
        if no_new_privileges() {
            return Err(Missing::NoNewPrivileges);
        }
        Ok((uid_ranges, gid_ranges, newuidmap, newgidmap))
    };
    let threads = thread_count();
    if threads > 1 {
        return Err(EnterError::Threads(threads));
    }
    let (uid_ranges, gid_ranges, newuidmap, newgidmap) = match checks() {
        Ok(found) => found,
        // Where user namespaces are denied altogether a range would not help: say nothing of
        // it (the sandbox reports the denial).
        Err(missing) => {
            return Ok(match user_namespaces_denied()? {
                Some(errno) => Rootless::Denied(errno),
                None => Rootless::Fallback(missing),
            });
        }
    };
    let (uid_args, uids) = map_arguments(uid, &uid_ranges);
    let (gid_args, gids) = map_arguments(gid, &gid_ranges);
    let maps = [(newuidmap, uid_args), (newgidmap, gid_args)];
    match unshare_mapped(&maps)? {
        Some(errno) => Ok(Rootless::Denied(errno)),
        None => {
            let privilege = Privilege::NamespaceRoot { uids, gids };
            // Checked empty above, and no thread exists to race.
            let _ = STARTED_AS.set(uid);
            let _ = DECIDED.set(privilege);
            Ok(Rootless::Entered(privilege))
        }
    }
}

/// `tool` on `PATH` (or in /usr/bin, /usr/sbin, /bin, /sbin), setuid root or with file
/// capabilities.
fn privileged_tool(tool: &'static str) -> Result<PathBuf, Missing> {
    let path_dirs = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    let fixed = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from);
    let path = path_dirs
        .into_iter()
        .chain(fixed)
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
        .ok_or(Missing::NoTool(tool))?;
    let path = fs::canonicalize(&path).map_err(|_| Missing::NoTool(tool))?;
    let meta = fs::metadata(&path).map_err(|_| Missing::NoTool(tool))?;
    let setuid_root = meta.uid() == 0 && meta.mode() & libc::S_ISUID != 0;
    let capabilities = super::xattr::get(&path, c"security.capability").is_ok();
    if setuid_root || capabilities {
        Ok(path)
    } else {
        Err(Missing::ToolNotPrivileged(path))
    }
}

/// Whether `NoNewPrivs: 1` is in /proc/self/status.
fn no_new_privileges() -> bool {
    status_field("NoNewPrivs").is_some_and(|value| value == "1")
}

/// The number of threads of this process (`Threads:` of /proc/self/status; 1 when unreadable).
fn thread_count() -> u32 {
    status_field("Threads")
        .and_then(|value| value.parse().ok())
        .unwrap_or(1)
}

/// A field of /proc/self/status.
fn status_field(name: &str) -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().to_string())
    })
}

/// Forks the helper, unshares the user and mount namespaces, lets the helper run the tools
/// (`maps`: each tool with its arguments after the pid) and makes every mount private.
/// `Ok(Some(errno))` when the kernel refused the unshare (nothing changed).
fn unshare_mapped(maps: &[(PathBuf, Vec<String>)]) -> Result<Option<Errno>, EnterError> {
    let sys = |action| move |errno| EnterError::Sys { action, errno };
    let pid = nix::unistd::getpid();
    let (go_read, go_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(sys("creating the rootless helper's pipe"))?;
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(sys("creating the rootless helper's pipe"))?;
    // SAFETY: the process has one thread (checked by the caller), so the child is a full copy
    // that may allocate, spawn and exit like any single-threaded program (fork(2) NOTES: the
    // async-signal-safety limit concerns the other threads' held locks, and there are none).
    let fork = unsafe { nix::unistd::fork() }.map_err(sys("forking the rootless helper"))?;
    let helper = match fork {
        ForkResult::Child => {
            drop((go_write, report_read));
            let code = helper(pid, go_read, report_write, maps);
            // SAFETY: _exit(2) ends the helper without running the parent's atexit handlers or
            // flushing buffers it copied (which would print the parent's pending output twice).
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop((go_read, report_write));
    let flags = nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS;
    if let Err(errno) = nix::sched::unshare(flags) {
        // The helper reads end of file and exits without running anything.
        drop(go_write);
        let _ = super::process::wait(helper.as_raw());
        return Ok(Some(errno));
    }
    let mut go = fs::File::from(go_write);
    go.write_all(&[1])
        .map_err(|e| sys("starting the rootless helper")(io_errno(&e)))?;
    drop(go);
    let mut report = String::new();
    let _ = fs::File::from(report_read).read_to_string(&mut report);
    let status =
        super::process::wait(helper.as_raw()).map_err(sys("waiting for the rootless helper"))?;
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let report = report.trim();
        return Err(EnterError::Map(if report.is_empty() {
            format!("the helper ended with status {status:#x}")
        } else {
            report.to_string()
        }));
    }
    // Mounts made from here on (overlays of the union view) stay in kiln's namespace.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making the rootless namespace's mounts private"))?;
    Ok(None)
}

/// Whether `unshare(CLONE_NEWUSER)` is refused here (seccomp, a sysctl, the namespace limit),
/// tried in a forked child so this process stays as it is.
fn user_namespaces_denied() -> Result<Option<Errno>, EnterError> {
    let sys = |action| move |errno| EnterError::Sys { action, errno };
    // SAFETY: the process has one thread (checked by the caller); the child only makes one
    // system call and exits with _exit(2).
    let fork = unsafe { nix::unistd::fork() }.map_err(sys("forking a user namespace probe"))?;
    let child = match fork {
        ForkResult::Child => {
            let code = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
                Ok(()) => 0,
                Err(errno) => errno as i32,
            };
            // SAFETY: _exit(2) ends the probe without running the parent's atexit handlers or
            // flushing buffers it copied.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    let status = super::process::wait(child.as_raw()).map_err(sys("waiting for the probe"))?;
    Ok(match libc::WEXITSTATUS(status) {
        code if libc::WIFEXITED(status) && code != 0 => Some(Errno::from_raw(code)),
        // Allowed, or the probe died some other way: assume allowed (the sandbox will say).
        _ => None,
    })
}

/// The helper's work: wait for the parent's go, run each tool against `parent`, report failures
/// as text. Its exit code: 0 when every map was written (or the parent gave up).
fn helper(parent: Pid, go: OwnedFd, report: OwnedFd, maps: &[(PathBuf, Vec<String>)]) -> i32 {
    let mut byte = [0u8; 1];
    match fs::File::from(go).read(&mut byte) {
        Ok(1) => {}
        // The parent could not unshare: nothing to map.
        _ => return 0,
    }
    let mut report = fs::File::from(report);
    for (tool, args) in maps {
        let output = Command::new(tool)
            .arg(parent.as_raw().to_string())
            .args(args)
            .output();
        let failure = match output {
            Ok(output) if output.status.success() => continue,
            Ok(output) => format!(
                "{} {}: {} ({})",
                tool.display(),
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim(),
                output.status
            ),
            Err(error) => format!("{}: {error}", tool.display()),
        };
        let _ = report.write_all(failure.as_bytes());
        return 1;
    }
    0
}

/// An io error's number (EIO when it has none).
fn io_errno(error: &std::io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO))
}

/// The store directory of a rootless user: `$XDG_DATA_HOME/kiln` (an absolute one), else
/// `$HOME/.local/share/kiln`, else `TMPDIR/kiln-UID`.
pub fn rootless_data_dir(xdg_data_home: Option<&Path>, home: Option<&Path>, uid: u32) -> PathBuf {
    // The XDG base directory spec ignores relative paths.
    if let Some(data) = xdg_data_home.filter(|data| data.is_absolute()) {
        return data.join("kiln");
    }
    match home {
        Some(home) => home.join(".local/share/kiln"),
        None => std::env::temp_dir().join(format!("kiln-{uid}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_count_the_ids_from_zero() {
        assert_eq!(mapped_from_zero("0 0 4294967295\n"), Some(u32::MAX));
        assert_eq!(
            mapped_from_zero(
                "         0       1000          1\n         1     200000      65536\n"
            ),
            Some(65_537)
        );
        assert_eq!(mapped_from_zero("0 1000 1\n"), Some(1));
        // A gap ends the count; the order of lines does not matter.
        assert_eq!(mapped_from_zero("5 300 10\n0 1000 1\n"), Some(1));
        assert_eq!(mapped_from_zero("1 300 10\n0 1000 1\n"), Some(11));
        assert_eq!(mapped_from_zero(""), Some(0));
        assert_eq!(mapped_from_zero("x y z\n"), None);
    }

    #[test]
    fn subordinate_ranges_by_name_or_uid() {
        let file = "alice:100000:65536\nbob:165536:65536\n1000:300000:10\n# comment\nalice:1:0\n\
                    alice:bad:1\nalice:400000:5\n";
        assert_eq!(
            subordinate_ranges(file, Some("alice"), 1000),
            [
                IdRange {
                    start: 100_000,
                    count: 65_536
                },
                IdRange {
                    start: 300_000,
                    count: 10
                },
                IdRange {
                    start: 400_000,
                    count: 5
                },
            ]
        );
        assert_eq!(subordinate_ranges(file, None, 1000).len(), 1);
        assert!(subordinate_ranges(file, Some("carol"), 1001).is_empty());
    }

    #[test]
    fn map_arguments_put_the_ranges_after_root() {
        let ranges = [
            IdRange {
                start: 200_000,
                count: 65_536,
            },
            IdRange {
                start: 300_000,
                count: 10,
            },
        ];
        let (args, count) = map_arguments(1000, &ranges);
        assert_eq!(args.join(" "), "0 1000 1 1 200000 65536 65537 300000 10");
        assert_eq!(count, 65_547);
    }

    #[test]
    fn what_each_privilege_may_do() {
        let ranged = Privilege::NamespaceRoot {
            uids: 65_537,
            gids: 65_537,
        };
        assert!(ranged.can_chown() && !ranged.can_make_devices() && ranged.in_user_namespace());
        assert!(ranged.maps(1000, 1000) && !ranged.maps(70_000, 0));
        let single_root = Privilege::NamespaceRoot { uids: 1, gids: 1 };
        assert!(!single_root.can_chown());
        let single = Privilege::Single {
            uid: 1000,
            gid: 1000,
        };
        assert!(!single.can_chown() && !single.in_user_namespace() && single.maps(0, 0));
        assert!(!single.maps(1, 0));
        assert!(Privilege::Root.can_make_devices() && Privilege::Root.is_real_root());
        // With one id the caller is the sandbox's root, both ways; other ids stay.
        assert_eq!(single.host_owner(0, 0), (1000, 1000));
        assert_eq!(single.host_owner(5, 0), (5, 1000));
        assert_eq!(single.container_owner(1000, 1000), (0, 0));
        assert_eq!(single.container_owner(7, 8), (7, 8));
        assert_eq!(ranged.host_owner(0, 0), (0, 0));
        assert_eq!(ranged.container_owner(1000, 1000), (1000, 1000));
    }

    #[test]
    fn the_warning_names_the_user_the_file_and_the_fix() {
        let missing = Missing::NoRange {
            file: "/etc/subuid",
            user: Some("alice".into()),
            uid: 1000,
        };
        assert_eq!(
            missing.to_string(),
            "no range for user alice (uid 1000) in /etc/subuid: containers map only uid 0, so \
             RUN steps cannot switch users or chown, and image files keep no owners, and the \
             default network is the host's (the private network needs the range); add one \
             with `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice`"
        );
    }

    #[test]
    fn rootless_data_dir_follows_xdg() {
        let home = Path::new("/home/a");
        assert_eq!(
            rootless_data_dir(Some(Path::new("/x")), Some(home), 5),
            Path::new("/x/kiln")
        );
        assert_eq!(
            rootless_data_dir(Some(Path::new("rel")), Some(home), 5),
            Path::new("/home/a/.local/share/kiln")
        );
        assert!(rootless_data_dir(None, None, 5).ends_with("kiln-5"));
    }
}
