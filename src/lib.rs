//! kiln: a container image build toolchain.
//!
//! `unsafe` code lives only in [`sys`] and in the sandbox child (`runtime::child`,
//! `runtime::linux`), which must not allocate or lock after clone(2); see `sys`'s module docs.

#![deny(unsafe_code)]

pub mod archive;
pub mod builder;
pub mod cache;
pub mod container;
pub mod frontend;
pub mod layer;
pub mod oci;
pub mod registry;
pub mod runtime;
pub mod solver;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
