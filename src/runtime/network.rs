//! The private network: a network namespace of its own with outbound access (NAT), DNS and
//! published ports, for `kiln run` and RUN steps by default (docker's `bridge`, BuildKit's
//! default network).
//!
//! **The stack: slirp4netns** (Debian's `slirp4netns`, 1.2.0 in bookworm), one mechanism for root
//! and rootless alike. It was chosen over pasta (`passt`, 0.0~git20230309 in bookworm) because:
//! - it has exactly the life-cycle hooks kiln needs: `--ready-fd` (one byte once the tap device
//!   is configured, so the start is awaited without polling the namespace) and `--exit-fd` (it
//!   exits when kiln's end closes, so a SIGKILLed kiln leaves no stack behind);
//! - `--disable-host-loopback` refuses connections to the host's `127.0.0.1` (pasta's
//!   counterpart `--no-map-gw` exists, but pasta also forwards the namespace's loopback ports to
//!   the host's by default, `-T auto`);
//! - bookworm's pasta, run as root, drops to `nobody` before it opens the target namespace and
//!   then fails to open `/proc/PID/ns/net` (measured here), so it would not work for root kiln;
//! - ports are published at run time through its JSON API socket (`add_hostfwd`).
//!
//! Measured on this machine: slirp4netns is ready 11–19 ms after it is started (`--configure`,
//! `--enable-sandbox`, `--enable-seccomp`), so a build does not start one per RUN step:
//! [`NetworkPool`] keeps prepared namespaces, one per concurrently running step (BuildKit's CNI
//! pool does the same), started lazily and stopped with the build.
//!
//! Addresses (slirp4netns' `--configure` defaults): the container is [`GUEST_ADDRESS`]
//! (10.0.2.100/24), its gateway [`GATEWAY_ADDRESS`] (10.0.2.2: the host, but with
//! `--disable-host-loopback` not its loopback services) and [`DNS_FORWARDER`] (10.0.2.3) relays
//! DNS queries to the host's resolvers. The container's `/etc/resolv.conf` follows docker's
//! default bridge (moby's libnetwork/resolvconf): the host's file with loopback nameservers
//! (127.0.0.53 of systemd-resolved, a local dnsmasq…) removed, since they are not reachable from
//! another namespace; where docker then falls back to Google's 8.8.8.8/8.8.4.4, kiln uses the
//! stack's forwarder, which reaches the host's loopback resolver and works without internet
//! access to Google (see [`resolv_conf`]). The stack is IPv4 only (slirp4netns' IPv6 is
//! experimental), so IPv6 nameservers are left out too, as docker does without IPv6.
//!
//! The namespace is made by kiln itself (a short-lived thread's `unshare(CLONE_NEWNET)`, kept by
//! a descriptor), in kiln's own user namespace: the host's as root, kiln's rootless one with
//! subordinate ids. A sandbox joins it by descriptor (setns(2), its first action); a sandbox
//! that makes a new user namespace of its own could not, and is refused by name.

use super::spec::Network;
use crate::sys::process::keep_open_in_child;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::fmt;
use std::io::{self, Read, Seek, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The container's address on the private network.
pub const GUEST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// The gateway: the address the stack gives the host (docker's `host-gateway`).
pub const GATEWAY_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The stack's DNS forwarder, relaying to the host's resolvers.
pub const DNS_FORWARDER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The stack's program.
const STACK: &str = "slirp4netns";
/// How long the stack may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an API request (publishing a port) may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of the stack's output kept for an error message.
const MAX_OUTPUT: u64 = 4096;
/// The MTU of the tap device: slirp4netns' recommended maximum (fewer, larger packets).
const MTU: u32 = 65520;

/// Why the private network could not be made or a port published.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// unshare(CLONE_NEWNET) failed: what the pod or machine lacks, as the sandbox explains
    /// its own refusals (`runtime::isolation`), when that is known.
    #[error(
        "creating the private network's namespace{}",
        .explanation.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    )]
    Namespace {
        /// What the kernel said.
        #[source]
        errno: nix::errno::Errno,
        /// Why, in the terms of the sandbox's refusals.
        explanation: Option<String>,
    },
    /// The stack's program could not be started.
    #[error(
        "starting {STACK} for the private network{}",
        if .0.kind() == io::ErrorKind::NotFound {
            " (install Debian's slirp4netns package, or use --network host or --network none)"
        } else {
            ""
        }
    )]
    Spawn(#[source] io::Error),
    /// The stack exited before the namespace was ready.
    #[error("{STACK} exited before the private network was ready ({status}){}", output_suffix(.output))]
    Exited {
        /// How it ended.
        status: String,
        /// The start of what it printed.
        output: String,
    },
    /// The stack did not become ready in time.
    #[error("{STACK} did not configure the private network within {}s{}", .after.as_secs(), output_suffix(.output))]
    NotReady {
        /// The bound.
        after: Duration,
        /// The start of what it printed.
        output: String,
    },
    /// A port could not be published.
    #[error("publishing port {mapping}: {reason}")]
    Publish {
        /// The mapping, as docker prints it.
        mapping: String,
        /// Why.
        reason: String,
    },
    /// A host operation failed.
    #[error("{action}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn output_suffix(output: &str) -> String {
    if output.trim().is_empty() {
        return String::new();
    }
    // The one cause a user can fix that slirp4netns names only by its call.
    let hint = if output.contains("open(\"/dev/net/tun\"): Permission denied") {
        " (rootless, the private network needs /dev/net/tun open to every user: \
         `chmod 0666 /dev/net/tun`, Debian's default mode; or use --network none)"
    } else {
        ""
    };
    format!(": {}{hint}", crate::error::escape_controls(output.trim()))
}

fn io_error(action: &'static str) -> impl FnOnce(io::Error) -> NetworkError {
    move |source| NetworkError::Io { action, source }
}

/// What the user asked for (`--network`): docker's `bridge` and BuildKit's `default` are the
/// private network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum NetworkMode {
    /// A private namespace with outbound access ([`PrivateNetwork`]).
    #[default]
    Private,
    /// The host's namespace.
    Host,
    /// A namespace with only the loopback interface.
    None,
}

impl NetworkMode {
    /// Whether this process can make the private network: not when it keeps one id without a
    /// user namespace of its own (rootless without subordinate ids), where it could neither make
    /// the namespace nor join one from a sandbox's new user namespace. kiln then falls back to
    /// the host's network, as its warning about the missing range says.
    pub fn private_available() -> bool {
        !matches!(
            crate::sys::privilege::current(),
            crate::sys::privilege::Privilege::Single { .. }
        )
    }

    /// The name BuildKit records and prints (`default`, `host`, `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Private => "default",
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
        }
    }
}

/// A network namespace kept by a descriptor, shared by whoever joins it.
#[derive(Clone)]
pub struct NetworkNamespace(Arc<OwnedFd>);

impl NetworkNamespace {
    /// A new, empty network namespace (only `lo`, down), made by a short-lived thread so no
    /// thread of kiln stays in it.
    pub fn create() -> Result<NetworkNamespace, NetworkError> {
        let made = std::thread::spawn(|| -> Result<OwnedFd, NetworkError> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
                NetworkError::Namespace {
                    errno,
                    explanation: super::isolation::Probe::read().explain(
                        super::isolation::Refused::Namespaces {
                            user: crate::sys::privilege::current().in_user_namespace(),
                        },
                        errno,
                    ),
                }
            })?;
            let file = std::fs::File::open("/proc/thread-self/ns/net")
                .map_err(io_error("opening the private network's namespace"))?;
            Ok(OwnedFd::from(file))
        })
        .join()
        .map_err(|_| NetworkError::Io {
            action: "creating the private network's namespace",
            source: io::Error::other("the thread panicked"),
        })??;
        Ok(NetworkNamespace(Arc::new(made)))
    }

    /// Any descriptor standing in for a namespace (the setup's unit tests).
    #[cfg(test)]
    pub(crate) fn from_fd(fd: OwnedFd) -> NetworkNamespace {
        NetworkNamespace(Arc::new(fd))
    }

    /// The descriptor number (valid while this value lives).
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl PartialEq for NetworkNamespace {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for NetworkNamespace {}

impl fmt::Debug for NetworkNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkNamespace(fd {})", self.raw_fd())
    }
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Its name in `-p` and `docker ps`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One `-p` port as asked: `[IP:][HOST:]CTR[/PROTO]` (docker's syntax; a range expands into one
/// mapping per port).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    /// The host address to listen on; `None` is every address (docker's `0.0.0.0`).
    pub host_ip: Option<IpAddr>,
    /// The host port; `None` picks a free one (docker's ephemeral port).
    pub host_port: Option<u16>,
    /// The port in the container.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// A `-p` value that cannot be used (docker's wording where it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port specification {spec:?}: {reason}")]
pub struct PortSpecError {
    /// The value as given.
    pub spec: String,
    /// Why.
    pub reason: String,
}

/// Parses one `-p` value into its mappings (docker's `nat.ParsePortSpec`): `CTR`, `HOST:CTR`,
/// `IP:HOST:CTR`, `IP::CTR`, with an optional `/tcp` or `/udp`, IPv6 addresses in brackets and
/// port ranges (`8000-8001:80-81`; a host range must be as long as the container's).
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>, PortSpecError> {
    let error = |reason: &str| PortSpecError {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((rest, "tcp")) | Some((rest, "TCP")) => (rest, Protocol::Tcp),
        Some((rest, "udp")) | Some((rest, "UDP")) => (rest, Protocol::Udp),
        Some((_, "sctp")) => {
            return Err(error(
                "sctp is not published by the private network's stack (slirp4netns forwards \
                 tcp and udp)",
            ));
        }
        Some((_, other)) => return Err(error(&format!("unknown protocol {other:?}"))),
        None => (spec, Protocol::Tcp),
    };
    // The container port is after the last colon, the host port before it, the address (which
    // may hold colons itself, in brackets) before that.
    let (front, container) = match rest.rsplit_once(':') {
        Some((front, container)) => (Some(front), container),
        None => (None, rest),
    };
    let (ip, host) = match front {
        None => (None, None),
        Some(front) => match front.rsplit_once(':') {
            Some((ip, host)) => (Some(ip), Some(host)),
            None => (None, Some(front)),
        },
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(ip) => {
            let bare = ip
                .strip_prefix('[')
                .and_then(|ip| ip.strip_suffix(']'))
                .unwrap_or(ip);
            Some(
                bare.parse::<IpAddr>()
                    .map_err(|_| error(&format!("invalid IP address {ip:?}")))?,
            )
        }
    };
    if host_ip.is_some_and(|ip| ip.is_ipv6()) {
        return Err(error(
            "the private network's stack publishes on IPv4 addresses only",
        ));
    }
    let containers = port_range(container).map_err(|reason| error(&reason))?;
    let hosts = match host {
        None | Some("") => None,
        Some(host) => Some(port_range(host).map_err(|reason| error(&reason))?),
    };
    if let Some(hosts) = &hosts
        && hosts.len() != containers.len()
    {
        return Err(error(
            "the host port range must be as long as the container port range",
        ));
    }
    Ok(containers
        .iter()
        .enumerate()
        .map(|(i, &container_port)| PortMapping {
            host_ip,
            host_port: hosts.as_ref().map(|hosts| hosts[i]),
            container_port,
            protocol,
        })
        .collect())
}

/// `N` or `A-B` (A ≤ B), each 1..=65535.
fn port_range(text: &str) -> Result<Vec<u16>, String> {
    let port = |text: &str| match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("invalid port {text:?}")),
    };
    match text.split_once('-') {
        None => Ok(vec![port(text)?]),
        Some((start, end)) => {
            let (start, end) = (port(start)?, port(end)?);
            if start > end {
                return Err(format!("invalid port range {text:?}"));
            }
            Ok((start..=end).collect())
        }
    }
}

/// A port published on the host, its host port resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedPort {
    /// The host address listened on (`0.0.0.0` for every one).
    pub host_ip: IpAddr,
    /// The host port.
    pub host_port: u16,
    /// The container port.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl fmt::Display for PublishedPort {
    /// docker port's form: `8080/tcp -> 0.0.0.0:18080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port,
            self.protocol.as_str(),
            self.host_ip,
            self.host_port
        )
    }
}

/// `--add-host NAME:IP` (or `NAME=IP`; `host-gateway` for the address the stack gives the
/// host): a line of the container's `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostEntry {
    /// The host name.
    pub name: String,
    /// Its address.
    pub address: IpAddr,
}

/// An `--add-host` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid argument {spec:?} for \"--add-host\" flag: {reason}")]
pub struct HostEntrySpecError {
    /// The value as given.
    pub spec: String,
    /// Why.
    pub reason: &'static str,
}

impl HostEntry {
    /// Parses `NAME:IP`, `NAME=IP` or `NAME:host-gateway` (docker's `ValidateExtraHost`; an IPv6
    /// address may be in brackets).
    pub fn parse(spec: &str) -> Result<HostEntry, HostEntrySpecError> {
        let error = |reason| HostEntrySpecError {
            spec: spec.to_string(),
            reason,
        };
        let (name, address) = spec
            .split_once('=')
            .or_else(|| spec.split_once(':'))
            .ok_or_else(|| error("expected NAME:IP"))?;
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(error("invalid host name"));
        }
        let address = if address == "host-gateway" {
            IpAddr::V4(GATEWAY_ADDRESS)
        } else {
            let bare = address
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(address);
            bare.parse::<IpAddr>()
                .map_err(|_| error("invalid IP address"))?
        };
        Ok(HostEntry {
            name: name.to_string(),
            address,
        })
    }
}

/// The container's `/etc/resolv.conf` on the private network, from the host's `host` file and
/// `--dns` servers `dns`: docker's default bridge rules (see the module docs) with the stack's
/// forwarder instead of Google's servers when no nameserver is left. `search` and `options`
/// lines are kept; `--dns` servers replace the host's.
pub fn resolv_conf(host: &str, dns: &[IpAddr]) -> String {
    let mut out = String::new();
    let mut nameservers = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(Ok(IpAddr::V4(address))) = words.next().map(str::parse::<IpAddr>)
                    && !address.is_loopback()
                {
                    nameservers.push(IpAddr::V4(address));
                }
            }
            Some(word) if word.starts_with('#') || word.starts_with(';') => {}
            Some(_) => {
                out.push_str(line);
                out.push('\n');
            }
            None => {}
        }
    }
    if !dns.is_empty() {
        nameservers = dns.to_vec();
    }
    if nameservers.is_empty() {
        nameservers.push(IpAddr::V4(DNS_FORWARDER));
    }
    let mut head = String::new();
    for server in nameservers {
        head.push_str(&format!("nameserver {server}\n"));
    }
    head + &out
}

/// A private network namespace and the slirp4netns process that gives it outbound access (and
/// publishes its ports). Dropping it stops the stack; whoever holds the container's sandbox
/// holds this too, so the network lives as long as the container's process.
pub struct PrivateNetwork {
    namespace: NetworkNamespace,
    stack: Child,
    /// Closed when kiln ends, however it ends: slirp4netns' `--exit-fd` then sees end of file.
    _exit: OwnedFd,
    /// The directory of the API socket (with published ports), removed on drop.
    api_dir: Option<PathBuf>,
    published: Vec<PublishedPort>,
}

impl fmt::Debug for PrivateNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateNetwork")
            .field("namespace", &self.namespace)
            .field("stack", &self.stack.id())
            .field("published", &self.published)
            .finish()
    }
}

impl PrivateNetwork {
    /// Makes a namespace, starts slirp4netns on it (bounded by 10 s) and publishes `ports`.
    pub fn start(ports: &[PortMapping]) -> Result<PrivateNetwork, NetworkError> {
        let namespace = NetworkNamespace::create()?;
        let api_dir = if ports.is_empty() {
            None
        } else {
            Some(api_dir()?)
        };
        let api_socket = api_dir.as_ref().map(|dir| dir.join("api.sock"));
        let (exit_read, exit_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|errno| io_error("making a pipe")(errno.into()))?;
        let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|errno| io_error("making a pipe")(errno.into()))?;
        // Its output goes to an unnamed file, read only when it fails: a pipe nobody reads
        // would block it once full, and one closed would kill it with SIGPIPE.
        let mut output = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(std::env::temp_dir())
            .map_err(io_error("making a file for the stack's output"))?;
        let namespace_fd = namespace.raw_fd();
        let mut command = Command::new(STACK);
        command
            .arg("--configure")
            .arg(format!("--mtu={MTU}"))
            .arg("--disable-host-loopback")
            .arg("--enable-sandbox")
            .arg("--enable-seccomp")
            .arg(format!("--exit-fd={}", exit_read.as_raw_fd()))
            .arg(format!("--ready-fd={}", ready_write.as_raw_fd()))
            .arg("--netns-type=path");
        if let Some(socket) = &api_socket {
            command.arg("--api-socket").arg(socket);
        }
        command
            .arg(format!("/proc/self/fd/{namespace_fd}"))
            .arg("tap0")
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                output
                    .try_clone()
                    .map_err(io_error("sharing the stack's output file"))?,
            ))
            .stderr(Stdio::from(
                output
                    .try_clone()
                    .map_err(io_error("sharing the stack's output file"))?,
            ))
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        keep_open_in_child(
            &mut command,
            vec![exit_read.as_raw_fd(), ready_write.as_raw_fd(), namespace_fd],
        );
        // Its sandbox's pivot_root and unmount stay in a namespace of its own (see
        // `private_mounts_in_child`): in kiln's, as root the host's, they would unmount other
        // tools' mounts (the peer dockerd's container roots, seen in the test suite).
        crate::sys::process::private_mounts_in_child(&mut command);
        let stack = command.spawn().map_err(NetworkError::Spawn)?;
        drop((exit_read, ready_write));
        let mut network = PrivateNetwork {
            namespace,
            stack,
            _exit: exit_write,
            api_dir,
            published: Vec::new(),
        };
        // From here on an error drops `network`, which stops the stack.
        let started = Instant::now();
        if let Err(err) = wait_ready(&ready_read, &mut network.stack) {
            let output = read_output(&mut output);
            return Err(match err {
                Waited::Exited(status) => NetworkError::Exited { status, output },
                Waited::TimedOut => NetworkError::NotReady {
                    after: started.elapsed(),
                    output,
                },
                Waited::Io(source) => NetworkError::Io {
                    action: "waiting for the private network",
                    source,
                },
            });
        }
        if let Some(socket) = &api_socket {
            for mapping in ports {
                let published = publish(socket, mapping)?;
                network.published.push(published);
            }
        }
        Ok(network)
    }

    /// The sandbox's [`Network`]: join this namespace.
    pub fn network(&self) -> Network {
        Network::Private(self.namespace.clone())
    }

    /// The ports published, their host ports resolved.
    pub fn published(&self) -> &[PublishedPort] {
        &self.published
    }

    /// The stack's pid.
    pub fn stack_pid(&self) -> u32 {
        self.stack.id()
    }

    /// Whether the stack still runs.
    fn alive(&mut self) -> bool {
        matches!(self.stack.try_wait(), Ok(None))
    }
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        // Nothing to report to from a drop: the stack is killed and reaped, its socket removed.
        let _ = self.stack.kill();
        let _ = self.stack.wait();
        if let Some(dir) = &self.api_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A private directory for the API socket: short enough for a socket path (108 bytes), under
/// `$XDG_RUNTIME_DIR` when set, else the temporary directory.
fn api_dir() -> Result<PathBuf, NetworkError> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute() && dir.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let mut bytes = [0u8; 8];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())
        .map_err(|errno| io_error("drawing a random name")(errno.into()))?;
    let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let dir = base.join(format!("kiln-net-{name}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io_error("creating the private network's socket directory"))?;
    Ok(dir)
}

enum Waited {
    Exited(String),
    TimedOut,
    Io(io::Error),
}

/// Waits for slirp4netns' ready byte (end of file means it exited), at most [`READY_TIMEOUT`].
fn wait_ready(ready: &OwnedFd, stack: &mut Child) -> Result<(), Waited> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Waited::TimedOut);
        }
        let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
        let timeout =
            PollTimeout::try_from(left.as_millis().min(10_000) as u32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) => continue,
            Ok(_) => {
                let mut byte = [0u8; 1];
                match nix::unistd::read(ready, &mut byte) {
                    Ok(1) => return Ok(()),
                    Ok(_) => {
                        let status = stack
                            .wait()
                            .map(|status| status.to_string())
                            .unwrap_or_else(|err| err.to_string());
                        return Err(Waited::Exited(status));
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(errno) => return Err(Waited::Io(errno.into())),
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(Waited::Io(errno.into())),
        }
    }
}

/// The start of the stack's output (escaped by whoever prints the error).
fn read_output(file: &mut std::fs::File) -> String {
    let mut bytes = Vec::new();
    let _ = file.rewind();
    let _ = file.take(MAX_OUTPUT).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Publishes `mapping` through the API socket (`add_hostfwd`); a missing host port is a free
/// one the kernel picks now.
fn publish(socket: &Path, mapping: &PortMapping) -> Result<PublishedPort, NetworkError> {
    let host_ip = mapping.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let shown = |port: Option<u16>| {
        format!(
            "{}:{}:{}/{}",
            host_ip,
            port.map(|p| p.to_string()).unwrap_or_default(),
            mapping.container_port,
            mapping.protocol.as_str()
        )
    };
    let failed = |port: Option<u16>, reason: String| NetworkError::Publish {
        mapping: shown(port),
        reason,
    };
    let host_port = match mapping.host_port {
        Some(port) => port,
        None => free_port(host_ip, mapping.protocol)
            .map_err(|err| failed(None, format!("finding a free host port: {err}")))?,
    };
    let request = serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": mapping.protocol.as_str(),
            "host_addr": host_ip.to_string(),
            "host_port": host_port,
            "guest_addr": GUEST_ADDRESS.to_string(),
            "guest_port": mapping.container_port,
        }
    });
    let reply = api_call(socket, &request)
        .map_err(|err| failed(Some(host_port), format!("asking {STACK}: {err}")))?;
    if let Some(error) = reply.get("error") {
        let desc = error
            .get("desc")
            .and_then(|d| d.as_str())
            .unwrap_or("refused");
        // slirp4netns says only "bad request: add_hostfwd: slirp_add_hostfwd failed"; the
        // likely cause is the port being taken.
        return Err(failed(
            Some(host_port),
            format!(
                "{} (is the host port already in use?)",
                crate::error::escape_controls(desc)
            ),
        ));
    }
    Ok(PublishedPort {
        host_ip,
        host_port,
        container_port: mapping.container_port,
        protocol: mapping.protocol,
    })
}

/// A port free on `ip` now (bound to port 0, then released).
fn free_port(ip: IpAddr, protocol: Protocol) -> io::Result<u16> {
    Ok(match protocol {
        Protocol::Tcp => TcpListener::bind((ip, 0))?.local_addr()?.port(),
        Protocol::Udp => UdpSocket::bind((ip, 0))?.local_addr()?.port(),
    })
}

/// One request on slirp4netns' API socket, its JSON reply (bounded in time and size).
fn api_call(socket: &Path, request: &serde_json::Value) -> io::Result<serde_json::Value> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(API_TIMEOUT))?;
    stream.set_write_timeout(Some(API_TIMEOUT))?;
    stream.write_all(request.to_string().as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = Vec::new();
    stream.take(64 << 10).read_to_end(&mut reply)?;
    serde_json::from_slice(&reply).map_err(io::Error::other)
}

/// Prepared private networks for a build's RUN steps: one per step running at a time, started
/// when first needed, taken by a step and given back when it ends, all stopped when the pool is
/// dropped (at the end of the build).
#[derive(Debug, Default)]
pub struct NetworkPool {
    idle: Mutex<Vec<PrivateNetwork>>,
}

impl NetworkPool {
    /// An empty pool.
    pub fn new() -> NetworkPool {
        NetworkPool::default()
    }

    /// An idle network whose stack still runs, or a new one.
    pub fn take(&self) -> Result<PooledNetwork<'_>, NetworkError> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            while let Some(mut network) = idle.pop() {
                if network.alive() {
                    found = Some(network);
                    break;
                }
            }
            found
        };
        let network = match reused {
            Some(network) => network,
            None => PrivateNetwork::start(&[])?,
        };
        Ok(PooledNetwork {
            pool: self,
            network: Some(network),
            reusable: true,
        })
    }

    /// How many networks are idle (for tests).
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A network taken from a [`NetworkPool`], given back when dropped.
#[derive(Debug)]
pub struct PooledNetwork<'a> {
    pool: &'a NetworkPool,
    network: Option<PrivateNetwork>,
    reusable: bool,
}

impl PooledNetwork<'_> {
    /// The sandbox's [`Network`].
    pub fn network(&self) -> Network {
        match &self.network {
            Some(network) => network.network(),
            None => Network::None,
        }
    }

    /// Do not give it back: a step that could change the namespace (all capabilities, `RUN
    /// --security=insecure`) leaves it to no later step.
    pub fn discard(&mut self) {
        self.reusable = false;
    }
}

impl Drop for PooledNetwork<'_> {
    fn drop(&mut self) {
        if let Some(network) = self.network.take()
            && self.reusable
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(network);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> PortMapping {
        let mut all = parse_publish(spec).unwrap();
        assert_eq!(all.len(), 1, "{spec}");
        all.remove(0)
    }

    #[test]
    fn publish_specs_parse_as_docker_reads_them() {
        assert_eq!(
            one("18080:8080"),
            PortMapping {
                host_ip: None,
                host_port: Some(18080),
                container_port: 8080,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            one("8080"),
            PortMapping {
                host_ip: None,
                host_port: None,
                container_port: 8080,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            one("127.0.0.1:18080:8080/udp"),
            PortMapping {
                host_ip: Some("127.0.0.1".parse().unwrap()),
                host_port: Some(18080),
                container_port: 8080,
                protocol: Protocol::Udp
            }
        );
        assert_eq!(
            one("127.0.0.1::53/udp"),
            PortMapping {
                host_ip: Some("127.0.0.1".parse().unwrap()),
                host_port: None,
                container_port: 53,
                protocol: Protocol::Udp
            }
        );
        let range = parse_publish("8000-8002:80-82").unwrap();
        assert_eq!(
            range
                .iter()
                .map(|m| (m.host_port.unwrap(), m.container_port))
                .collect::<Vec<_>>(),
            vec![(8000, 80), (8001, 81), (8002, 82)]
        );
    }

    #[test]
    fn bad_publish_specs_say_why() {
        for (spec, reason) in [
            ("", "invalid port \"\""),
            ("0", "invalid port \"0\""),
            ("70000", "invalid port \"70000\""),
            ("80/sctp", "sctp is not published"),
            ("80/icmp", "unknown protocol \"icmp\""),
            ("1.2.3:80:80", "invalid IP address \"1.2.3\""),
            ("[::1]:80:80", "IPv4 addresses only"),
            ("8000-8001:80", "as long as"),
            ("90-80", "invalid port range"),
        ] {
            let err = parse_publish(spec).unwrap_err();
            assert!(err.to_string().contains(reason), "{spec}: {err}");
        }
    }

    #[test]
    fn add_host_entries_parse_and_host_gateway_is_the_stacks_host() {
        assert_eq!(
            HostEntry::parse("db:10.1.2.3").unwrap(),
            HostEntry {
                name: "db".into(),
                address: "10.1.2.3".parse().unwrap()
            }
        );
        assert_eq!(
            HostEntry::parse("v6:[::1]").unwrap().address,
            "::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            HostEntry::parse("v6=fe80::1").unwrap().address,
            "fe80::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            HostEntry::parse("gw:host-gateway").unwrap().address,
            IpAddr::V4(GATEWAY_ADDRESS)
        );
        assert!(HostEntry::parse("nocolon").is_err());
        assert!(HostEntry::parse(":1.2.3.4").is_err());
        assert!(HostEntry::parse("a:notanip").is_err());
        assert!(HostEntry::parse("a b:1.2.3.4").is_err());
    }

    #[test]
    fn resolv_conf_drops_loopback_and_ipv6_nameservers_and_falls_back_to_the_forwarder() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0 trust-ad\nsearch example.com\n";
        assert_eq!(
            resolv_conf(host, &[]),
            "nameserver 10.0.2.3\noptions edns0 trust-ad\nsearch example.com\n"
        );
        let host = "nameserver 192.0.2.53\nnameserver 127.0.0.1\nnameserver 2001:db8::1\n";
        assert_eq!(resolv_conf(host, &[]), "nameserver 192.0.2.53\n");
        let dns = ["9.9.9.9".parse().unwrap(), "1.1.1.1".parse().unwrap()];
        assert_eq!(
            resolv_conf(host, &dns),
            "nameserver 9.9.9.9\nnameserver 1.1.1.1\n"
        );
        assert_eq!(resolv_conf("", &[]), "nameserver 10.0.2.3\n");
    }

    #[test]
    fn published_ports_print_as_docker_port_does() {
        let port = PublishedPort {
            host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            host_port: 18080,
            container_port: 8080,
            protocol: Protocol::Tcp,
        };
        assert_eq!(port.to_string(), "8080/tcp -> 0.0.0.0:18080");
    }
}
