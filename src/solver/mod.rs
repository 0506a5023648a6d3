//! The solver: runs a graph of ops in parallel, with cache lookups, fail-fast and cancellation.
//! Generic over the op kind, so it is tested with fake ops.

mod cancel;

pub use cancel::{Cancel, CancelGuard};
