//! kiln: a container image build toolchain.

pub mod archive;
pub mod builder;
pub mod cache;
pub mod container;
pub mod error;
pub mod frontend;
pub mod layer;
pub mod oci;
pub mod registry;
pub mod runtime;
pub mod solver;
pub mod store;
pub mod sys;
