//! kiln: a container image build toolchain.
//!
//! The front end turns a Dockerfile into a build graph:
//! [`parser::syntax`] (bytes → [`parser::ast`]) → [`parser::instruction`] (typed instructions) →
//! [`parser::stage`] (stages, ARG/ENV scoping, word expansion with [`parser::shell`]) →
//! [`graph`] (the stage DAG, pruned to a target). [`context`] knows the build context: which files
//! `.dockerignore` leaves in and which of them each COPY/ADD reads.
//!
//! Every front-end error carries a [`diagnostic::Span`] and renders as
//! `Dockerfile:LINE:COL` with the offending line and a caret ([`diagnostic::render`]).

pub mod build;
pub mod cache;
pub mod context;
pub mod diagnostic;
pub mod executor;
pub mod graph;
pub mod image;
pub mod parser;
pub mod plan;
pub mod registry;
pub mod runtime;
pub mod solver;
