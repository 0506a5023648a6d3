//! The sandbox runtime shared by `kiln run` and the builder's RUN steps.

pub mod cgroup;
pub mod tty;
pub mod user;
