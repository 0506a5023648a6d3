//! The ops graph the solver runs: content-addressed nodes, deduplicated as they are added.
//!
//! As in BuildKit's LLB, an op's identity is the digest of its canonical definition
//! ([`OpDigest`]), and a node's identity ([`Graph::node_digest`]) is the digest of its op's
//! identity and its inputs' identities. Adding an op that is already in the graph with the same
//! inputs returns the existing node, so identical steps of different stages run once.

use crate::oci::Digest;
use std::collections::HashMap;
use std::sync::Arc;

/// A node of a [`Graph`]: its index, in the order nodes were added.
pub type NodeId = usize;

/// An op's identity: the digest of its canonical definition (inputs excluded).
pub trait OpDigest {
    fn digest(&self) -> Digest;
}

/// An input that is not (yet) a node of the graph.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error(
        "input node {input} does not exist (the graph has {len} nodes); add an op's inputs before the op"
    )]
    UnknownInput { input: NodeId, len: usize },
}

/// One op with its inputs, as the solver sees it.
pub(super) struct Node<O> {
    pub(super) op: O,
    pub(super) op_digest: Digest,
    pub(super) inputs: Vec<NodeId>,
    digest: Digest,
}

/// A DAG of ops. Inputs always exist when a node is added, so every node comes after its inputs
/// and ascending ids are a topological order.
pub struct Graph<O> {
    /// `Arc` so the solver hands a node to a blocking thread without borrowing the graph.
    nodes: Vec<Arc<Node<O>>>,
    by_digest: HashMap<Digest, NodeId>,
}

impl<O> Default for Graph<O> {
    fn default() -> Self {
        Graph {
            nodes: Vec::new(),
            by_digest: HashMap::new(),
        }
    }
}

impl<O> std::fmt::Debug for Graph<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("len", &self.nodes.len())
            .finish()
    }
}

impl<O: OpDigest> Graph<O> {
    /// Adds `op` reading `inputs` (earlier nodes, in order) and returns its node; when a node
    /// with the same op digest and the same inputs exists, returns that node and drops `op`.
    pub fn add(&mut self, op: O, inputs: Vec<NodeId>) -> Result<NodeId, GraphError> {
        let op_digest = op.digest();
        let mut input_digests = Vec::with_capacity(inputs.len());
        for &input in &inputs {
            let node = self.nodes.get(input).ok_or(GraphError::UnknownInput {
                input,
                len: self.nodes.len(),
            })?;
            input_digests.push(&node.digest);
        }
        let digest = node_digest(&op_digest, &input_digests);
        if let Some(&existing) = self.by_digest.get(&digest) {
            return Ok(existing);
        }
        let id = self.nodes.len();
        self.by_digest.insert(digest.clone(), id);
        self.nodes.push(Arc::new(Node {
            op,
            op_digest,
            inputs,
            digest,
        }));
        Ok(id)
    }
}

impl<O> Graph<O> {
    /// An empty graph.
    pub fn new() -> Self {
        Graph::default()
    }

    /// The op of node `id`; `None` when there is no such node.
    pub fn op(&self, id: NodeId) -> Option<&O> {
        self.nodes.get(id).map(|node| &node.op)
    }

    /// The inputs of node `id`, in order; empty when there is no such node.
    pub fn inputs(&self, id: NodeId) -> &[NodeId] {
        self.nodes.get(id).map_or(&[], |node| &node.inputs)
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The identity of node `id`: the digest of its op digest and its inputs' identities, the
    /// same in every process that builds the same graph; `None` when there is no such node.
    pub fn node_digest(&self, id: NodeId) -> Option<&Digest> {
        self.nodes.get(id).map(|node| &node.digest)
    }

    pub(super) fn node(&self, id: NodeId) -> Option<&Arc<Node<O>>> {
        self.nodes.get(id)
    }
}

/// The canonical form hashed for a node: a version tag, then the digests, one per line. Digests
/// have a fixed form without newlines, so two different nodes never hash the same text.
fn node_digest(op_digest: &Digest, inputs: &[&Digest]) -> Digest {
    let mut text = format!("kiln-solver-node-v1\n{op_digest}\n");
    for input in inputs {
        text.push_str(&format!("{input}\n"));
    }
    Digest::of(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str);

    impl OpDigest for Named {
        fn digest(&self) -> Digest {
            Digest::of(self.0.as_bytes())
        }
    }

    #[test]
    fn identical_ops_with_identical_inputs_are_one_node() {
        let mut graph = Graph::new();
        let a = graph.add(Named("a"), vec![]).unwrap();
        assert_eq!(graph.add(Named("a"), vec![]), Ok(a));
        let b = graph.add(Named("b"), vec![]).unwrap();
        let on_a = graph.add(Named("x"), vec![a]).unwrap();
        assert_eq!(graph.add(Named("x"), vec![a]), Ok(on_a));
        let on_b = graph.add(Named("x"), vec![b]).unwrap();
        let on_ab = graph.add(Named("x"), vec![a, b]).unwrap();
        let on_ba = graph.add(Named("x"), vec![b, a]).unwrap();
        let distinct = [a, b, on_a, on_b, on_ab, on_ba];
        assert_eq!(distinct, [0, 1, 2, 3, 4, 5]);
        assert_eq!(graph.len(), 6);
        assert_eq!(graph.inputs(on_ba), [b, a]);
    }

    #[test]
    fn node_digests_do_not_depend_on_insertion_order() {
        let mut first = Graph::new();
        let a1 = first.add(Named("a"), vec![]).unwrap();
        let b1 = first.add(Named("b"), vec![]).unwrap();
        let top1 = first.add(Named("top"), vec![a1, b1]).unwrap();
        let mut second = Graph::new();
        let b2 = second.add(Named("b"), vec![]).unwrap();
        let a2 = second.add(Named("a"), vec![]).unwrap();
        let top2 = second.add(Named("top"), vec![a2, b2]).unwrap();
        assert_ne!((a1, b1), (a2, b2));
        assert_eq!(first.node_digest(top1), second.node_digest(top2));
        assert_ne!(first.node_digest(a1), first.node_digest(b1));
        // The op alone is not the node: inputs are part of the identity.
        assert_ne!(first.node_digest(a1), Some(&Named("a").digest()));
        // Pinned: the cache keys of earlier builds depend on this canonical form.
        assert_eq!(
            first.node_digest(top1).map(Digest::to_string).as_deref(),
            Some("sha256:37fb566a0db18200a35c4f5fb7ed6cdd91460fb6b1efeee990cbede8944cd36d")
        );
    }

    #[test]
    fn unknown_inputs_and_ids_are_errors_not_panics() {
        let mut graph: Graph<Named> = Graph::new();
        assert!(graph.is_empty());
        assert_eq!(
            graph.add(Named("a"), vec![0]),
            Err(GraphError::UnknownInput { input: 0, len: 0 })
        );
        assert!(graph.is_empty());
        assert!(graph.op(7).is_none());
        assert!(graph.inputs(7).is_empty());
        assert!(graph.node_digest(7).is_none());
    }
}
