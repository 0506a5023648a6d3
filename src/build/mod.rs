//! The build as one library call: a Dockerfile and its context in, an image in the store out,
//! progress as typed [`BuildEvent`]s.

pub mod progress;

pub use progress::{BuildEvent, LogStream, Progress, StepInfo};
