//! The solver: runs a graph of ops in parallel, with cache lookups, fail-fast and cancellation.
//! Generic over the op kind, so it is tested with fake ops.

mod cancel;
mod graph;
mod solve;

pub use cancel::{Cancel, CancelGuard};
pub use graph::{Graph, GraphError, NodeId, OpDigest};
pub use solve::{Events, NodeEvent, SolveError, SolveOptions, Solved, Worker, solve};

#[cfg(test)]
mod tests;
