//! The build context: which files `.dockerignore` leaves in, and which of them a COPY/ADD reads.

pub mod dockerignore;
