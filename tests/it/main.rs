//! kiln's integration tests: one binary, one module per concern.
//!
//! Tests that read `../shared/conformance` skip with a notice when it is absent, and fail when
//! `CI=true` (see [`support::conformance_dir`]).

mod frontend_errors;
mod graph;
mod parser_conformance;
mod parser_errors;
mod stages;
mod support;
