//! The operating-system primitives the rest of kiln is built on: crash-safe file updates and
//! file operations confined to a root directory.

pub mod atomic;
pub mod dirfd;

pub use atomic::{FsError, Staging, atomic_write, atomic_write_in, fsync_dir};
