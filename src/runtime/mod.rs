//! The sandbox runtime shared by `kiln run` and the builder's RUN steps.
//!
//! [`Sandbox::spawn`] runs one process in fresh mount, UTS, IPC, pid, cgroup (and network, user)
//! namespaces on an overlay root, with Docker's defaults as the specification: its mounts, masked
//! and read-only paths, capability set, a seccomp filter refusing what its default profile
//! refuses, and its exec error wording. Rootless, inside the user namespace kiln entered at start
//! with the user's subordinate ids (`sys::privilege`), sandboxes reuse that namespace and run as
//! any mapped user; without a range each sandbox gets a user namespace mapping the caller to
//! root and nothing else.
//!
//! Layout: [`spec`](Spec) is the caller's data; `setup` turns it into ordered steps (pure, unit
//! tested); `kernel` runs steps through the `Kernel` trait (unit tested with a fake); `linux`
//! is the real kernel; `child` is the code after `clone(2)` (the tiny init too); `seccomp`
//! compiles the filter; `sandbox` is the parent's side. Beside the core: [`cgroup`] applies
//! resource limits, [`binfmt`] says which platforms run here (natively or emulated), [`tty`]
//! relays terminals (the sandbox allocates its workload's own, see
//! [`Stdio::Terminal`]), [`network`] makes the private network (a namespace and its
//! slirp4netns stack, pooled for builds), [`isolation`] names the isolation modes and explains a
//! sandbox the kernel refused, [`chroot`] runs a process with its root changed
//! (`--isolation=chroot`), [`exec`] starts a process in a running sandbox (`kiln exec`: its
//! namespaces joined through a pidfd, the same workload steps).
//! What a sandbox runs and as whom, from an image, is the business of `crate::container` above
//! it (users from the image's own passwd/group too): this module
//! knows nothing of images.

pub mod binfmt;
pub mod cgroup;
pub mod chroot;
pub mod exec;
// The code that runs after clone(2) may not allocate or lock, so it makes its own raw system
// calls instead of going through `sys` (see `child`'s module docs).
#[allow(unsafe_code)]
mod child;
pub mod isolation;
mod kernel;
#[allow(unsafe_code)]
mod linux;
pub mod network;
mod sandbox;
mod seccomp;
mod setup;
/// The OCI default device nodes (name, major, minor), for a root that cannot bind the host's
/// `/dev` (`--isolation=chroot` under chroot(2)).
pub(crate) use setup::DEVICES as DEFAULT_DEVICES;
mod spec;
pub mod tty;
mod workdir;

pub use isolation::Isolation;
pub use network::{NetworkMode, NetworkPool, PrivateNetwork};
pub use sandbox::{
    ExecErrorKind, Outcome, REMAP_BASE, REMAP_COUNT, RuntimeError, Sandbox, SandboxHandle, run,
};
pub use spec::{Mount, MountSource, Network, RootFs, Spec, Stdio, UpperDir, User};
