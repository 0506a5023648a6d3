//! The executor: runs a build step's operation against its input snapshots and writes the result.
pub mod copy;
pub mod union;
