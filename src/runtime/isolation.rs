//! How RUN steps and `kiln run` are isolated ([`Isolation`]), and why the sandbox could not be
//! made here when the kernel refused it ([`Probe`]).
//!
//! The sandbox needs namespaces (user namespaces when kiln is not root) and mounts. Inside an
//! unprivileged container (a Kubernetes pod with the `RuntimeDefault` seccomp profile, a
//! `docker run --user 1000`) the kernel or the seccomp filter refuses them, and a bare "clone:
//! EPERM" tells nobody what to change. [`Probe`] reads what decides it (the process's
//! capabilities and seccomp mode, the user-namespace sysctls, whether this is a container) and
//! [`Probe::explain`] says what is wrong and what the environment needs, naming
//! `--isolation=chroot` (see [`super::chroot`]) as the other way out.

use nix::errno::Errno;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// `--isolation`'s help: what each mode does, and the risks of `chroot`.
pub const ISOLATION_HELP: &str = "How RUN steps (and kiln run) are isolated: `sandbox` (the \
default: user, mount, pid, network... namespaces on an overlay root, seccomp) or `chroot`.

`chroot` is for where the sandbox cannot be made, such as an unprivileged container (a \
Kubernetes pod with the RuntimeDefault seccomp profile): the command runs with its root changed \
to a plain copy of the image's files, by chroot(2) when kiln holds CAP_SYS_CHROOT, else through \
proot (ptrace; Debian's proot package, or KILN_PROOT). There are NO namespaces: a step sees and \
can reach this machine's (or container's) processes, network, /proc, /dev and /sys and every \
file the user running kiln can read, and it can damage anything that user can write. Use it only \
in a throwaway build container, for Dockerfiles you trust. What it cannot do is refused by name: \
--network=none (RUN --network=none too), -t, --init, --read-only, resource limits, and (with chroot(2)) writable host \
mounts such as RUN --mount=type=cache. Without root, files a step makes are recorded as owned by \
the step's user (root: 0:0), proot's -0 only fakes root (chown has no effect) and a non-root USER \
gets faked ids; proot waits for the processes a step leaves in the background (chroot(2) kills \
them with the step's process group). In a container, keep the store (--root) on a volume: a container's overlayfs \
root refuses the whiteouts that record removed files. Also set by KILN_ISOLATION.";

/// The environment variable that chooses the isolation when `--isolation` is not given.
pub const ISOLATION_ENV: &str = "KILN_ISOLATION";

/// How the commands of RUN steps (and `kiln run`) are isolated from this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Isolation {
    /// Namespaces, an overlay root, seccomp: the sandbox (the default).
    #[default]
    Sandbox,
    /// No namespaces: the command runs with its root changed to a plain copy of the image's
    /// files (chroot(2) when kiln may, else proot), kaniko's trade-off. Steps see and can reach
    /// this machine's processes, network, `/proc` and every file the user can read.
    Chroot,
}

impl Isolation {
    /// The value of [`ISOLATION_ENV`], when set and not empty.
    pub fn from_env() -> Result<Option<Isolation>, IsolationError> {
        match std::env::var(ISOLATION_ENV) {
            Ok(value) if !value.is_empty() => value.parse().map(Some),
            _ => Ok(None),
        }
    }

    /// Its name, as `--isolation` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Sandbox => "sandbox",
            Isolation::Chroot => "chroot",
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An isolation name kiln does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown isolation {0:?}: kiln knows sandbox (the default) and chroot")]
pub struct IsolationError(pub String);

impl FromStr for Isolation {
    type Err = IsolationError;

    fn from_str(value: &str) -> Result<Isolation, IsolationError> {
        match value {
            "sandbox" | "default" => Ok(Isolation::Sandbox),
            "chroot" => Ok(Isolation::Chroot),
            other => Err(IsolationError(other.to_string())),
        }
    }
}

/// `CAP_SYS_CHROOT`'s bit in the capability sets.
pub const CAP_SYS_CHROOT: u32 = 18;
/// `CAP_SYS_ADMIN`'s bit.
const CAP_SYS_ADMIN: u32 = 21;

/// What the sandbox tried when the kernel refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// clone(2) of the sandbox's first process into its new namespaces.
    Namespaces {
        /// Whether a user namespace was among them (kiln is not root, or remaps ids).
        user: bool,
    },
    /// A mount of the sandbox's setup (the overlay root, `/proc`, a bind...).
    Mount,
}

/// What decides whether this process may make namespaces and mounts, as read from `/proc` (or
/// given by a test).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// The effective uid.
    pub euid: u32,
    /// The effective capabilities (`CapEff:` of /proc/self/status).
    pub cap_eff: Option<u64>,
    /// The seccomp mode (`Seccomp:`: 0 none, 1 strict, 2 filter).
    pub seccomp: Option<u32>,
    /// `/proc/sys/user/max_user_namespaces`.
    pub max_user_namespaces: Option<u64>,
    /// Debian's and Ubuntu's `/proc/sys/kernel/unprivileged_userns_clone`.
    pub unprivileged_userns_clone: Option<u64>,
    /// Ubuntu's `/proc/sys/kernel/apparmor_restrict_unprivileged_userns`.
    pub apparmor_restrict_userns: Option<u64>,
    /// What says this is a container (`/.dockerenv`, `/run/.containerenv`, a container
    /// runtime's name in `/proc/1/cgroup`), when something does.
    pub container: Option<String>,
}

impl Probe {
    /// Reads this process's environment.
    pub fn read() -> Probe {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let number = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
        };
        Probe {
            euid: nix::unistd::geteuid().as_raw(),
            cap_eff: status_field(&status, "CapEff").and_then(|v| u64::from_str_radix(v, 16).ok()),
            seccomp: status_field(&status, "Seccomp").and_then(|v| v.parse().ok()),
            max_user_namespaces: number("/proc/sys/user/max_user_namespaces"),
            unprivileged_userns_clone: number("/proc/sys/kernel/unprivileged_userns_clone"),
            apparmor_restrict_userns: number(
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            ),
            container: container_marker(
                Path::new("/"),
                &std::fs::read_to_string("/proc/1/cgroup").unwrap_or_default(),
            ),
        }
    }

    /// Whether the effective capabilities hold `cap` (unknown counts as not).
    pub fn has_capability(&self, cap: u32) -> bool {
        self.cap_eff.is_some_and(|set| set & (1u64 << cap) != 0)
    }

    /// What is wrong and what this environment needs, for the kernel's `errno` refusing
    /// `refused`; `None` when the probe finds no cause to name (the plain error stands then).
    pub fn explain(&self, refused: Refused, errno: Errno) -> Option<String> {
        let way_out = "or run kiln with --isolation=chroot (no isolation between the steps and \
                       this machine or container; see kiln build --help)";
        let container = self
            .container
            .as_deref()
            .map(|marker| format!(" (this is a container: {marker})"))
            .unwrap_or_default();
        let filtered = self.seccomp == Some(2);
        match refused {
            Refused::Namespaces { user: true } => {
                if self.max_user_namespaces == Some(0) || errno == Errno::ENOSPC {
                    return Some(format!(
                        "cannot create a user namespace ({}): user namespaces are disabled here \
                         (user.max_user_namespaces = {}){container}. Set the sysctl \
                         user.max_user_namespaces to a positive number (e.g. 15000), {way_out}",
                        errno_name(errno),
                        self.max_user_namespaces.unwrap_or(0),
                    ));
                }
                if self.unprivileged_userns_clone == Some(0) {
                    return Some(format!(
                        "cannot create a user namespace ({}): unprivileged user namespaces are \
                         disabled here (kernel.unprivileged_userns_clone = 0){container}. Set \
                         that sysctl to 1, run kiln as root, {way_out}",
                        errno_name(errno)
                    ));
                }
                if self.apparmor_restrict_userns == Some(1) && !filtered {
                    return Some(format!(
                        "cannot create a user namespace ({}): AppArmor restricts unprivileged \
                         user namespaces here (kernel.apparmor_restrict_unprivileged_userns = \
                         1){container}. Give kiln an AppArmor profile with the userns \
                         permission, set that sysctl to 0, {way_out}",
                        errno_name(errno)
                    ));
                }
                if errno == Errno::EPERM && filtered {
                    return Some(format!(
                        "cannot create a user namespace (EPERM): this looks like a container \
                         with a seccomp profile that denies unshare(CLONE_NEWUSER) (docker's \
                         and Kubernetes' RuntimeDefault do without CAP_SYS_ADMIN){container}. \
                         Give the pod `securityContext.seccompProfile.type: Unconfined` (and \
                         AppArmor unconfined where used; with docker: --security-opt \
                         seccomp=unconfined --security-opt apparmor=unconfined), {way_out}"
                    ));
                }
                if errno == Errno::EPERM && self.container.is_some() {
                    return Some(format!(
                        "cannot create a user namespace (EPERM){container}: the container \
                         runtime denies it (an AppArmor or SELinux policy, or a seccomp \
                         profile applied outside this process). Run the container with \
                         seccomp and AppArmor unconfined, {way_out}"
                    ));
                }
                None
            }
            Refused::Namespaces { user: false } => {
                if errno != Errno::EPERM {
                    return None;
                }
                if !self.has_capability(CAP_SYS_ADMIN) {
                    return Some(format!(
                        "cannot create the sandbox's namespaces (EPERM): kiln runs as root but \
                         without CAP_SYS_ADMIN{container}, as in a container with docker's \
                         default capabilities. Run the container with --privileged (or \
                         --cap-add SYS_ADMIN with seccomp and AppArmor unconfined; in \
                         Kubernetes `securityContext.privileged: true`), {way_out}"
                    ));
                }
                if filtered {
                    return Some(format!(
                        "cannot create the sandbox's namespaces (EPERM): a seccomp profile \
                         denies unshare/clone with namespace flags{container}. Run with \
                         seccomp unconfined (`securityContext.seccompProfile.type: \
                         Unconfined`, docker --security-opt seccomp=unconfined), {way_out}"
                    ));
                }
                None
            }
            Refused::Mount => {
                // Outside a container and a seccomp filter the cause is more likely the mount
                // itself (a source kiln may not read): the plain error says it better.
                let confined = self.container.is_some() || filtered;
                if !matches!(errno, Errno::EPERM | Errno::EACCES) || !confined {
                    return None;
                }
                Some(format!(
                    "the sandbox may not mount here ({}){container}: overlayfs, /proc or a bind \
                     mount was refused (an AppArmor policy, a read-only or masked /proc, or a \
                     kernel without overlayfs in user namespaces). Run the container with \
                     AppArmor and seccomp unconfined and an unmasked /proc (docker \
                     --security-opt systempaths=unconfined; Kubernetes `procMount: \
                     Unmasked`), {way_out}",
                    errno_name(errno)
                ))
            }
        }
    }
}

/// `EPERM`, `ENOSPC`...: the errno's symbolic name.
fn errno_name(errno: Errno) -> String {
    format!("{errno:?}")
}

/// The value after `NAME:` in a /proc status text.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

/// What says that `root` is a container's root: docker's `/.dockerenv`, podman's
/// `/run/.containerenv`, or a runtime's name in pid 1's cgroup (`cgroup`: /proc/1/cgroup's text).
pub fn container_marker(root: &Path, cgroup: &str) -> Option<String> {
    for marker in [".dockerenv", "run/.containerenv"] {
        if root.join(marker).exists() {
            return Some(format!("/{marker} exists"));
        }
    }
    const RUNTIMES: [&str; 5] = ["docker", "kubepods", "containerd", "libpod", "lxc"];
    cgroup.lines().find_map(|line| {
        let path = line.rsplit(':').next()?;
        RUNTIMES
            .iter()
            .find(|runtime| path.contains(*runtime))
            .map(|runtime| format!("/proc/1/cgroup names {runtime}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// uid 1000 in `docker run --user 1000` with the default seccomp profile.
    fn unprivileged_container() -> Probe {
        Probe {
            euid: 1000,
            cap_eff: Some(0),
            seccomp: Some(2),
            max_user_namespaces: Some(63_000),
            unprivileged_userns_clone: None,
            apparmor_restrict_userns: None,
            container: Some("/.dockerenv exists".into()),
        }
    }

    #[test]
    fn isolation_names() {
        assert_eq!("chroot".parse(), Ok(Isolation::Chroot));
        assert_eq!("sandbox".parse(), Ok(Isolation::Sandbox));
        assert_eq!(Isolation::default(), Isolation::Sandbox);
        let err = "none".parse::<Isolation>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown isolation \"none\": kiln knows sandbox (the default) and chroot"
        );
    }

    #[test]
    fn a_seccomp_filtered_container_gets_the_pod_settings_and_the_chroot_mode() {
        let message = unprivileged_container()
            .explain(Refused::Namespaces { user: true }, Errno::EPERM)
            .unwrap();
        assert!(
            message.starts_with(
                "cannot create a user namespace (EPERM): this looks like a container with a \
                 seccomp profile that denies unshare(CLONE_NEWUSER)"
            ),
            "{message}"
        );
        assert!(message.contains("(this is a container: /.dockerenv exists)"));
        assert!(message.contains("securityContext.seccompProfile.type: Unconfined"));
        assert!(message.contains("--isolation=chroot"));
    }

    #[test]
    fn the_sysctls_are_named_before_seccomp() {
        let mut probe = unprivileged_container();
        probe.max_user_namespaces = Some(0);
        let message = probe
            .explain(Refused::Namespaces { user: true }, Errno::ENOSPC)
            .unwrap();
        assert!(
            message.starts_with(
                "cannot create a user namespace (ENOSPC): user namespaces are disabled here \
                 (user.max_user_namespaces = 0)"
            ),
            "{message}"
        );
        let mut debian = unprivileged_container();
        debian.seccomp = Some(0);
        debian.container = None;
        debian.unprivileged_userns_clone = Some(0);
        let message = debian
            .explain(Refused::Namespaces { user: true }, Errno::EPERM)
            .unwrap();
        assert!(
            message.contains("kernel.unprivileged_userns_clone = 0"),
            "{message}"
        );
        assert!(!message.contains("this is a container"), "{message}");
        let mut ubuntu = debian.clone();
        ubuntu.unprivileged_userns_clone = None;
        ubuntu.apparmor_restrict_userns = Some(1);
        let message = ubuntu
            .explain(Refused::Namespaces { user: true }, Errno::EACCES)
            .unwrap();
        assert!(message.contains("AppArmor restricts"), "{message}");
    }

    #[test]
    fn root_without_cap_sys_admin_is_told_about_capabilities() {
        let mut probe = unprivileged_container();
        probe.euid = 0;
        // docker's default set: CAP_CHOWN ... CAP_SYS_CHROOT, no CAP_SYS_ADMIN.
        probe.cap_eff = Some(0xa80425fb);
        assert!(probe.has_capability(CAP_SYS_CHROOT));
        let message = probe
            .explain(Refused::Namespaces { user: false }, Errno::EPERM)
            .unwrap();
        assert!(
            message.contains("kiln runs as root but without CAP_SYS_ADMIN"),
            "{message}"
        );
        assert!(message.contains("--privileged"), "{message}");
    }

    #[test]
    fn no_cause_found_leaves_the_plain_error() {
        let host = Probe {
            euid: 1000,
            cap_eff: Some(0),
            seccomp: Some(0),
            max_user_namespaces: Some(63_000),
            ..Probe::default()
        };
        assert_eq!(
            host.explain(Refused::Namespaces { user: true }, Errno::EPERM),
            None
        );
        assert_eq!(
            host.explain(Refused::Namespaces { user: true }, Errno::EINVAL),
            None
        );
        assert_eq!(host.explain(Refused::Mount, Errno::ENOENT), None);
        assert_eq!(host.explain(Refused::Mount, Errno::EPERM), None);
        let mount = unprivileged_container()
            .explain(Refused::Mount, Errno::EPERM)
            .unwrap();
        assert!(mount.starts_with("the sandbox may not mount here (EPERM)"));
        assert!(mount.contains("systempaths=unconfined"), "{mount}");
    }

    #[test]
    fn container_markers() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(container_marker(dir.path(), "0::/init.scope\n"), None);
        assert_eq!(
            container_marker(dir.path(), "0::/kubepods/besteffort/pod1/abc\n").as_deref(),
            Some("/proc/1/cgroup names kubepods")
        );
        std::fs::create_dir(dir.path().join("run")).unwrap();
        std::fs::write(dir.path().join("run/.containerenv"), "").unwrap();
        assert_eq!(
            container_marker(dir.path(), "").as_deref(),
            Some("/run/.containerenv exists")
        );
        let status = "Name:\tkiln\nSeccomp:\t2\nCapEff:\t0000000000000000\n";
        assert_eq!(status_field(status, "Seccomp"), Some("2"));
        assert_eq!(status_field(status, "CapEff"), Some("0000000000000000"));
    }
}
