//! The build steps: what each build op does to the file system. RUN steps run in the runtime's
//! sandbox ([`run`]); COPY, ADD and WORKDIR write through a union view of the layers
//! ([`copy`], [`union`]); the changes become a layer without copying ([`commit`]).

pub mod commit;
pub mod copy;
pub mod mounts;
pub mod run;
pub mod stubs;
pub use crate::layer::union;
