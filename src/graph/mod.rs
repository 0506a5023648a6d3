//! The build graph: stages and their dependencies as a DAG. (Placeholder until it lands.)
