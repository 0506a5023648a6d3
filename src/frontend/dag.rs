//! The build graph: the stages of a [`Resolved`] Dockerfile as a DAG, pruned to what a target
//! needs, with a schedule of stages that can build in parallel.
//!
//! Edges come from `FROM <stage>`, `COPY --from=<stage>` and `RUN --mount=from=<stage>`. Like
//! BuildKit, a cycle anywhere in the file is an error (even among stages the target does not
//! need), and a stage the target needs may only read stages defined before it (BuildKit:
//! "cannot copy from stage X, it needs to be defined before current stage Y").

use crate::frontend::diagnostic::{Located, Span};
use crate::frontend::stage::{DependencyKind, ImageKey, Resolved, Source, Stage};
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::BTreeSet;

/// A stage's position in the file (its index in [`Resolved::stages`]).
pub type StageId = usize;

/// A build graph that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("circular dependency between stages: {}", .stages.join(" -> "))]
    Cycle {
        /// The stages in the cycle, the first repeated at the end.
        stages: Vec<String>,
        span: Span,
    },
    #[error("target stage \"{target}\" could not be found")]
    UnknownTarget { target: String, names: Vec<String> },
    #[error("stage \"{stage}\" reads stage \"{from}\", which is defined after it")]
    ForwardReference {
        stage: String,
        from: String,
        span: Span,
    },
}

impl Located for DagError {
    fn span(&self) -> Option<Span> {
        match self {
            DagError::Cycle { span, .. } | DagError::ForwardReference { span, .. } => Some(*span),
            DagError::UnknownTarget { .. } => None,
        }
    }

    fn help(&self) -> Option<String> {
        Some(match self {
            DagError::Cycle { .. } => {
                "a stage cannot depend on itself through COPY --from, RUN --mount from= or FROM"
                    .into()
            }
            DagError::UnknownTarget { names, .. } if names.is_empty() => {
                "no stage has a name; name one with FROM IMAGE AS NAME".into()
            }
            DagError::UnknownTarget { names, .. } => {
                format!("the stages are: {}", names.join(", "))
            }
            DagError::ForwardReference { from, .. } => {
                format!("move stage \"{from}\" above the stage that reads it")
            }
        })
    }
}

/// An edge: `stage` reads `on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub kind: DependencyKind,
    pub span: Span,
}

/// The stages one build needs, in dependency order.
#[derive(Debug, Clone)]
pub struct StageDag<'a> {
    resolved: &'a Resolved,
    /// Edges point from a dependency to the stage that needs it; node weights are stage ids.
    graph: DiGraph<StageId, Edge>,
    /// Each stage's node in `graph` (`None` for a stage the target does not need): the pruned
    /// graph's node indexes are not stage ids, and a scan for them made planning quadratic.
    nodes: Vec<Option<NodeIndex>>,
    target: StageId,
    order: Vec<StageId>,
    groups: Vec<Vec<StageId>>,
    images: Vec<String>,
    image_keys: Vec<ImageKey>,
}

impl<'a> StageDag<'a> {
    /// The graph for `target` (a stage name, case-insensitive), or for the last stage.
    pub fn new(resolved: &'a Resolved, target: Option<&str>) -> Result<Self, DagError> {
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = resolved
            .stages
            .iter()
            .map(|s| graph.add_node(s.index))
            .collect();
        for stage in &resolved.stages {
            for dep in &stage.dependencies {
                if let (Source::Stage(on), Some(&to)) = (&dep.on, nodes.get(stage.index))
                    && let Some(&from) = nodes.get(*on)
                {
                    graph.add_edge(
                        from,
                        to,
                        Edge {
                            kind: dep.kind,
                            span: dep.span,
                        },
                    );
                }
            }
        }
        check_cycles(resolved, &graph)?;

        let target = match target {
            None => {
                resolved
                    .stages
                    .len()
                    .checked_sub(1)
                    .ok_or_else(|| DagError::UnknownTarget {
                        target: String::new(),
                        names: Vec::new(),
                    })?
            }
            Some(name) => resolved
                .stage_by_name(name)
                .map(|s| s.index)
                .ok_or_else(|| DagError::UnknownTarget {
                    target: name.to_string(),
                    names: resolved
                        .stages
                        .iter()
                        .filter_map(|s| s.name.clone())
                        .collect(),
                })?,
        };

        // Everything the target reaches through its dependencies.
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(id) = todo.pop() {
            if !needed.insert(id) {
                continue;
            }
            if let Some(&n) = nodes.get(id) {
                for dep in graph.neighbors_directed(n, petgraph::Direction::Incoming) {
                    todo.push(graph[dep]);
                }
            }
        }
        let graph = graph.filter_map(|_, id| needed.contains(id).then_some(*id), |_, e| Some(*e));
        let mut nodes: Vec<Option<NodeIndex>> = vec![None; resolved.stages.len()];
        for n in graph.node_indices() {
            if let Some(slot) = nodes.get_mut(graph[n]) {
                *slot = Some(n);
            }
        }

        for e in graph.edge_indices() {
            let (Some((from, to)), Some(edge)) = (graph.edge_endpoints(e), graph.edge_weight(e))
            else {
                continue;
            };
            let (from, to) = (graph[from], graph[to]);
            if from > to {
                return Err(DagError::ForwardReference {
                    stage: stage_name(resolved, to),
                    from: stage_name(resolved, from),
                    span: edge.span,
                });
            }
        }

        // With every edge pointing forward in the file, file order is a topological order; a
        // stage's group is one more than the deepest group it depends on.
        let order: Vec<StageId> = needed.iter().copied().collect();
        let mut level = vec![0usize; resolved.stages.len()];
        let mut groups: Vec<Vec<StageId>> = Vec::new();
        for &id in &order {
            let depth = node_of(&nodes, id)
                .map(|n| {
                    graph
                        .neighbors_directed(n, petgraph::Direction::Incoming)
                        .filter_map(|d| level.get(graph[d]).map(|l| l + 1))
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            if let Some(slot) = level.get_mut(id) {
                *slot = depth;
            }
            if groups.len() <= depth {
                groups.resize_with(depth + 1, Vec::new);
            }
            if let Some(group) = groups.get_mut(depth) {
                group.push(id);
            }
        }

        let images = order
            .iter()
            .filter_map(|id| resolved.stages.get(*id))
            .flat_map(|s| &s.dependencies)
            .filter_map(|d| match &d.on {
                Source::Image(name) if name != "scratch" => Some(name.clone()),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // A stage's FROM image is wanted for the stage's platform; what `COPY --from` and
        // `RUN --mount from=` read, for the target's (BuildKit makes each such image a stage
        // of its own, without `--platform`).
        let image_keys = order
            .iter()
            .filter_map(|id| resolved.stages.get(*id))
            .flat_map(|s| s.dependencies.iter().map(move |d| (s, d)))
            .filter_map(|(stage, d)| match &d.on {
                Source::Image(name) if name != "scratch" => Some(match d.kind {
                    DependencyKind::From => ImageKey::new(name, &stage.effective_platform),
                    _ => ImageKey::new(name, &resolved.target_platform),
                }),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();

        Ok(StageDag {
            resolved,
            graph,
            nodes,
            target,
            order,
            groups,
            images,
            image_keys,
        })
    }

    /// The stage the build produces.
    pub fn target(&self) -> StageId {
        self.target
    }

    /// Every needed stage, dependencies before the stages that use them.
    pub fn order(&self) -> &[StageId] {
        &self.order
    }

    /// Needed stages in groups: each group depends only on earlier groups, so the stages of one
    /// group can build in parallel.
    pub fn groups(&self) -> &[Vec<StageId>] {
        &self.groups
    }

    /// A needed stage.
    pub fn stage(&self, id: StageId) -> Option<&'a Stage> {
        node_of(&self.nodes, id).and_then(|_| self.resolved.stages.get(id))
    }

    /// The stages `id` reads directly, in file order, without repeats.
    pub fn dependencies(&self, id: StageId) -> Vec<StageId> {
        let Some(n) = node_of(&self.nodes, id) else {
            return Vec::new();
        };
        self.graph
            .neighbors_directed(n, petgraph::Direction::Incoming)
            .map(|d| self.graph[d])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// External images the needed stages use (FROM, COPY --from, RUN --mount from=), sorted,
    /// `scratch` excluded.
    pub fn images(&self) -> &[String] {
        &self.images
    }

    /// [`StageDag::images`] with the platform each is wanted for, sorted.
    pub fn image_keys(&self) -> &[ImageKey] {
        &self.image_keys
    }
}

/// The node of stage `id` in the pruned graph, if the target needs it.
fn node_of(nodes: &[Option<NodeIndex>], id: StageId) -> Option<NodeIndex> {
    nodes.get(id).copied().flatten()
}

fn stage_name(resolved: &Resolved, id: StageId) -> String {
    resolved
        .stages
        .get(id)
        .map_or_else(|| format!("stage-{id}"), Stage::display_name)
}

/// Fails on the first cycle (in file order), naming its stages in the order they read each
/// other.
fn check_cycles(resolved: &Resolved, graph: &DiGraph<StageId, Edge>) -> Result<(), DagError> {
    let mut cycles: Vec<Vec<NodeIndex>> = tarjan_scc(graph)
        .into_iter()
        .filter(|scc| scc.len() > 1 || scc.iter().any(|n| graph.contains_edge(*n, *n)))
        .collect();
    cycles.sort_by_key(|scc| scc.iter().map(|n| graph[*n]).min());
    let Some(scc) = cycles.first() else {
        return Ok(());
    };
    let Some(&start) = scc.iter().min_by_key(|n| graph[**n]) else {
        return Ok(());
    };
    // Walk from the first stage of the cycle to the stage it reads, staying inside the cycle,
    // until we are back at the start.
    let members: std::collections::HashSet<NodeIndex> = scc.iter().copied().collect();
    let mut path = vec![start];
    let mut span = None;
    let mut current = start;
    for _ in 0..=scc.len() {
        let next = graph
            .edges_directed(current, petgraph::Direction::Incoming)
            .filter(|e| members.contains(&petgraph::visit::EdgeRef::source(e)))
            .min_by_key(|e| graph[petgraph::visit::EdgeRef::source(e)]);
        let Some(edge) = next else { break };
        span.get_or_insert(edge.weight().span);
        current = petgraph::visit::EdgeRef::source(&edge);
        path.push(current);
        if current == start {
            break;
        }
    }
    Err(DagError::Cycle {
        stages: path
            .iter()
            .map(|n| stage_name(resolved, graph[*n]))
            .collect(),
        span: span.unwrap_or_else(|| {
            resolved
                .stages
                .get(graph[start])
                .map_or(Span::line(1), |s| s.span)
        }),
    })
}
