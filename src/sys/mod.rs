//! The operating-system primitives the rest of kiln is built on, and the one home of `unsafe`
//! code outside the sandbox child (`runtime::child` and `runtime::linux`, which run after
//! clone(2) and may neither allocate nor lock): the crate denies `unsafe_code` everywhere else.
//! Each part is a small safe API; where a safe crate (nix, rustix) wraps a call, it is used and
//! no `unsafe` is needed, and every remaining `unsafe` block says why it is sound (`// SAFETY:`,
//! enforced by clippy's `undocumented_unsafe_blocks`).
//!
//! - [`atomic`]: crash-safe file updates (write a temporary, fsync, rename) and tree removal.
//! - [`dirfd`]: file operations confined to a root directory through directory descriptors.
//! - [`xattr`]: extended attributes of a path, a descriptor, or a directory's child.
//! - [`privilege`]: what the process may do (real root, a rootless namespace's root, one id),
//!   and entering the rootless namespace with subordinate ids (fork + unshare: `unsafe`).
//! - [`process`]: pidfds (open, signal) and waiting for a child's raw status.
//! - [`times`]: file times set on a whole tree, links not followed.
//! - [`signal`]: the SIGWINCH self-pipe terminal relays wait on (a signal handler: `unsafe`).

pub mod atomic;
pub mod dirfd;
pub mod privilege;
pub mod process;
pub mod signal;
pub mod times;
pub mod xattr;

pub use atomic::{FsError, Staging, atomic_write, atomic_write_in, fsync_dir};
