//! `.dockerignore` patterns with Docker's semantics. (Placeholder until it lands.)
