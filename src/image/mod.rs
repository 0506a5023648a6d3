//! Images: references now; OCI types, layers and exporters as the store lands.

pub mod layer;
pub mod reference;

pub use reference::{Reference, ReferenceError};
