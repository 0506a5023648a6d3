//! The executor: what each build op does to the file system (RUN steps, layers from their changes).

pub mod layer;
pub mod run;
pub mod stubs;
