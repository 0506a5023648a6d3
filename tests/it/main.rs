//! kiln's integration tests: one binary, one module per concern.
//!
//! Tests that read `../shared/conformance` skip with a notice when it is absent, and fail when
//! `CI=true` (see [`support::conformance_dir`]).

// Test output (skip notices, reports) is the tests' own, not kiln's: clippy.toml's rule that
// kiln's text goes through `cli::term` does not apply here.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

mod add_git;
mod add_url;
mod architecture;
mod archive;
mod attestations;
mod bounds;
mod build;
mod build_context;
mod build_mount;
mod build_peer;
mod call_outline;
mod cli;
mod compression;
mod container_fs;
mod container_workflow;
mod containers;
mod context;
mod copy;
mod copy_incremental;
mod copy_parents;
mod dockerignore_conformance;
mod dry_run;
mod errors;
mod exec;
mod frontend_errors;
mod graph;
mod http_context;
mod hygiene;
mod image_commands;
mod image_output;
mod isolation;
mod layer_safety;
mod lint;
mod lint_conformance;
mod network;
mod oci_schema;
mod parser_conformance;
mod parser_errors;
mod platform;
mod registry;
mod rewrite_timestamp;
mod rootless;
mod run;
mod run_step;
mod runtime_cgroup;
mod runtime_tty;
mod runtime_user;
mod sandbox;
mod sbom;
mod session;
mod shared_cache;
mod shared_cache_mounts;
mod shared_cache_registry;
mod shell_conformance;
mod soak;
mod stages;
mod store;
mod store_hardening;
mod support;
