//! Images: references, the OCI image store, and docker-style views of stored images.

pub mod archive;
pub mod config;
pub mod layer;
pub mod reference;
pub mod store;
pub mod timestamp;
pub mod view;

pub use reference::{Reference, ReferenceError};
pub use store::{ImageName, Store, StoreError, StoredImage};
