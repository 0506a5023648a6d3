//! BuildKit's `Node.Dump()` format. (Placeholder until the parser lands.)

use super::ast::{Dockerfile, Node};

impl Dockerfile {
    /// The whole file in BuildKit's dump format: one `(...)` line per instruction.
    pub fn dump(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("({})\n", n.dump()))
            .collect()
    }
}

impl Node {
    /// One instruction in BuildKit's dump format, without the outer parentheses.
    pub fn dump(&self) -> String {
        self.keyword.to_lowercase()
    }
}
