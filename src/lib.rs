//! kiln: a container image build toolchain.
//!
//! The crate map, in layers (a module imports only the ones listed before it; `ARCHITECTURE.md`
//! is the rule and `tests/it/architecture.rs` enforces it):
//!
//! - [`oci`]: digests, image references, platforms, media types, timestamps: the vocabulary.
//! - [`sys`]: crash-safe writes and in-root file operations; the one home of `unsafe` outside
//!   the sandbox child.
//! - [`frontend`]: a Dockerfile and its context in, a build plan out:
//!   [`frontend::syntax`] (bytes → [`frontend::ast`]) → [`frontend::instruction`] (typed
//!   instructions) → [`frontend::stage`] (stages, ARG/ENV scoping, word expansion with
//!   [`frontend::shell`]) → [`frontend::dag`] (the stage DAG, pruned to a target);
//!   [`frontend::context`] knows which files `.dockerignore` leaves in and which of them each
//!   COPY/ADD reads; [`frontend::plan`] is all of it in one call. Every front-end error carries a
//!   [`frontend::diagnostic::Span`] and renders as `Dockerfile:LINE:COL` with a snippet.
//! - [`layer`]: layer tars ⇄ directories. [`store`]: the OCI layout with verified blobs.
//!   [`runtime`]: the namespace sandbox, which knows nothing of images. [`session`]: what the
//!   build's client lends a build, secrets and SSH agents (`--secret`, `--ssh`).
//!   [`attest`]: SBOM and provenance documents (in-toto statements) of a built image.
//! - [`registry`]: the distribution client (pull, push, auth). [`fetch`]: `ADD <url>`
//!   downloads. [`git`]: git repositories for `ADD <git ref>` and git contexts, through the
//!   `git` binary.
//! - [`cache`]: context checksums, cache records and the shared cache ([`cache::remote`]).
//!   [`solver`]: the generic parallel solver over a graph of content-addressed ops.
//! - [`archive`]: docker/OCI archives and root filesystems in and out of the store.
//! - [`container`]: an image and run options → a sandbox (`kiln run`, RUN steps).
//! - [`builder`]: `kiln build` as a library call ([`builder::build`]): compile the plan into ops,
//!   solve them with the builder's worker, write the image, export it.
//!
//! `unsafe` code lives only in [`sys`] and in the sandbox child (`runtime::child`,
//! `runtime::linux`), which must not allocate or lock after clone(2); see `sys`'s module docs.

#![deny(unsafe_code)]

pub mod archive;
pub mod attest;
pub mod builder;
pub mod cache;
pub mod container;
pub mod error;
pub mod fetch;
pub mod frontend;
pub mod git;
pub mod layer;
pub mod oci;
pub mod registry;
pub mod runtime;
pub mod session;
pub mod solver;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
