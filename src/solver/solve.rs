//! Solving a [`Graph`]: cache keys, cache lookups and runs, in parallel, failing fast.
//!
//! [`solve`] works like BuildKit's solver, in three phases over the nodes the targets need:
//!
//! - **Pruning.** Only nodes reachable from the targets are considered.
//! - **Keys.** Every needed node's cache key ([`Worker::cache_key`]) is computed after its inputs'
//!   keys; independent nodes are keyed in parallel.
//! - **Lookups.** Every needed node not in [`SolveOptions::no_cache`] is looked up
//!   ([`Worker::lookup`]); each hit emits [`NodeEvent::Cached`], even a hit below another hit, so a
//!   fully cached build reports every step cached. A node *runs* only when it missed the cache (or
//!   is in `no_cache`) and is needed: it is a target, or an input of a node that runs. A hit
//!   therefore means its inputs do not run: a cached top step needs nothing below it. A node that
//!   neither hits nor runs (it is below a hit) emits no event.
//! - **Runs.** A node runs ([`Worker::run`]) once all its inputs have outputs (from a hit or a
//!   run), emitting [`NodeEvent::Started`] and then [`NodeEvent::Done`]; independent nodes run in
//!   parallel. Each node runs at most once per solve, however many dependents need it.
//!
//! Every worker method is called on tokio's blocking pool, at most [`SolveOptions::jobs`] at once.
//!
//! **Failing fast.** The first error (or panic) of a worker method fires an internal [`Cancel`]
//! (fired too by the caller's token, but not the other way round) that every running
//! [`Worker::run`] gets; nothing starts after it. The solver still waits for everything started
//! to return, so sandboxes are killed and cleaned up before [`solve`] returns. The failing node
//! emits [`NodeEvent::Failed`]; runs that return an error after the cancel emit
//! [`NodeEvent::Canceled`] (keys and lookups are not reported). The result is
//! [`SolveError::Failed`] (or [`SolveError::Panicked`]) with the first error. When the caller's
//! token fires first, the result is [`SolveError::Canceled`].

use super::cancel::Cancel;
use super::graph::{Graph, Node, NodeId};
use crate::oci::Digest;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::task::{JoinError, JoinSet};

/// What runs the ops of a graph: computes their cache keys, looks them up and runs them.
pub trait Worker: Send + Sync + 'static {
    type Op: Send + Sync + 'static;
    type Output: Clone + Send + Sync + 'static;
    type Error: std::error::Error + Send + Sync + 'static;

    /// BLOCKING (called on a blocking thread). The cache key of `op` from its op digest and its
    /// inputs' cache keys (in input order), plus, as the worker sees fit, a checksum of the
    /// content it reads (context files).
    fn cache_key(
        &self,
        node: NodeId,
        op: &Self::Op,
        op_digest: &Digest,
        input_keys: &[Digest],
    ) -> Result<Digest, Self::Error>;

    /// BLOCKING. A cached result for `key`, if one exists and is usable.
    fn lookup(
        &self,
        node: NodeId,
        op: &Self::Op,
        key: &Digest,
    ) -> Result<Option<Self::Output>, Self::Error>;

    /// BLOCKING. Runs `op` with its inputs' outputs (in input order) and records the result under
    /// `key` for later lookups. Must return (an error) promptly once `cancel` fires.
    fn run(
        &self,
        node: NodeId,
        op: &Self::Op,
        key: &Digest,
        inputs: &[Self::Output],
        cancel: &Cancel,
    ) -> Result<Self::Output, Self::Error>;
}

/// How to solve.
#[derive(Debug, Clone, Default)]
pub struct SolveOptions {
    /// The most worker calls (runs, key computations, lookups) at once; 0 means one per core.
    pub jobs: usize,
    /// Nodes whose lookup is skipped: they run whenever they are needed (a node above them that
    /// hits the cache still needs nothing below it, so list its dependents too to rerun them).
    /// Ids that are not needed are ignored.
    pub no_cache: Vec<NodeId>,
}

/// What happened to a node, reported as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// Its result came from the cache; it does not run.
    Cached,
    /// It started running.
    Started,
    /// It ran successfully.
    Done { elapsed: Duration },
    /// Its key computation, lookup or run failed first; this is the error [`solve`] returns.
    Failed,
    /// Its run was interrupted because another node failed or the caller cancelled.
    Canceled,
}

/// The result of a successful [`solve`].
#[derive(Debug, Clone)]
pub struct Solved<T> {
    /// The output of every target.
    pub outputs: BTreeMap<NodeId, T>,
    /// The cache key of every needed node.
    pub keys: BTreeMap<NodeId, Digest>,
}

/// Why a [`solve`] did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SolveError<E> {
    /// A worker method failed for `node`; the first such error.
    #[error("node {node} failed")]
    Failed {
        node: NodeId,
        #[source]
        error: E,
    },
    /// A worker method panicked for `node`; the solver itself carried on and cleaned up.
    #[error("node {node} panicked: {message}")]
    Panicked { node: NodeId, message: String },
    /// The caller's cancel token fired.
    #[error("the build was canceled")]
    Canceled,
    /// A target (or an input) is not a node of the graph.
    #[error("node {node} does not exist (the graph has {len} nodes)")]
    UnknownNode { node: NodeId, len: usize },
    /// [`solve`] was awaited outside a tokio runtime.
    #[error("the solver must run inside a tokio runtime (it uses tokio's blocking threads)")]
    NoRuntime,
}

/// Reports [`NodeEvent`]s; always called from the solving task, one event at a time.
pub type Events = Arc<dyn Fn(NodeId, NodeEvent) + Send + Sync>;

/// Solves `targets` in `graph` with `worker`; see the module documentation for the semantics.
pub async fn solve<W: Worker>(
    graph: Arc<Graph<W::Op>>,
    targets: &[NodeId],
    worker: Arc<W>,
    options: &SolveOptions,
    cancel: &Cancel,
    events: Events,
) -> Result<Solved<W::Output>, SolveError<W::Error>> {
    let runtime = Handle::try_current().map_err(|_| SolveError::NoRuntime)?;
    let needed = needed_nodes(&graph, targets)?;
    let jobs = match options.jobs {
        0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        jobs => jobs,
    };
    let internal = Cancel::new();
    let _link = cancel.on_cancel({
        let internal = internal.clone();
        move || internal.cancel()
    });
    // Blocking threads cannot be aborted: if this future is dropped, ask them to stop.
    let _stop_on_drop = CancelOnDrop(internal.clone());
    let mut state = State {
        keys: BTreeMap::new(),
        outputs: BTreeMap::new(),
        failure: None,
    };
    let ids: Vec<NodeId> = needed.keys().copied().collect();

    schedule(
        &runtime,
        &mut state,
        ids.clone(),
        jobs,
        &internal,
        |state, id| {
            let node = needed.get(&id)?.clone();
            let input_keys = collect(&node.inputs, &state.keys)?;
            let worker = worker.clone();
            Some(Box::new(move || {
                Ok(worker.cache_key(id, &node.op, &node.op_digest, &input_keys)?)
            }))
        },
        |state, id, result| match result {
            Ok(key) => {
                state.keys.insert(id, key);
            }
            Err(failure) => {
                state.fail(id, failure, &internal, &events);
            }
        },
    )
    .await;
    state.outcome(&internal)?;

    let no_cache: BTreeSet<NodeId> = options.no_cache.iter().copied().collect();
    let lookups = ids.iter().copied().filter(|id| !no_cache.contains(id));
    schedule(
        &runtime,
        &mut state,
        lookups.collect(),
        jobs,
        &internal,
        |state, id| {
            let node = needed.get(&id)?.clone();
            let key = state.keys.get(&id)?.clone();
            let worker = worker.clone();
            Some(Box::new(move || Ok(worker.lookup(id, &node.op, &key)?)))
        },
        |state, id, result| match result {
            Ok(Some(output)) => {
                events(id, NodeEvent::Cached);
                state.outputs.insert(id, output);
            }
            Ok(None) => {}
            Err(failure) => {
                state.fail(id, failure, &internal, &events);
            }
        },
    )
    .await;
    state.outcome(&internal)?;

    // Walking down from the targets (ids descend: inputs have smaller ids than their users), a
    // node runs when something wants it and the cache did not give it; it then wants its inputs.
    let mut wanted: BTreeSet<NodeId> = targets.iter().copied().collect();
    let mut runs = Vec::new();
    for (&id, node) in needed.iter().rev() {
        if wanted.contains(&id) && !state.outputs.contains_key(&id) {
            runs.push(id);
            wanted.extend(&node.inputs);
        }
    }
    runs.reverse();
    schedule(
        &runtime,
        &mut state,
        runs,
        jobs,
        &internal,
        |state, id| {
            let node = needed.get(&id)?.clone();
            let inputs = collect(&node.inputs, &state.outputs)?;
            let key = state.keys.get(&id)?.clone();
            let (worker, cancel) = (worker.clone(), internal.clone());
            events(id, NodeEvent::Started);
            Some(Box::new(move || {
                let start = Instant::now();
                let output = worker.run(id, &node.op, &key, &inputs, &cancel)?;
                Ok((output, start.elapsed()))
            }))
        },
        |state, id, result| match result {
            Ok((output, elapsed)) => {
                events(id, NodeEvent::Done { elapsed });
                state.outputs.insert(id, output);
            }
            Err(failure) => {
                if !state.fail(id, failure, &internal, &events) {
                    events(id, NodeEvent::Canceled);
                }
            }
        },
    )
    .await;
    state.outcome(&internal)?;

    // Every target has an output: it hit the cache or it ran.
    let outputs = targets
        .iter()
        .filter_map(|&id| Some((id, state.outputs.get(&id)?.clone())))
        .collect();
    Ok(Solved {
        outputs,
        keys: state.keys,
    })
}

/// The nodes reachable from `targets`, by id.
fn needed_nodes<O, E>(
    graph: &Graph<O>,
    targets: &[NodeId],
) -> Result<BTreeMap<NodeId, Arc<Node<O>>>, SolveError<E>> {
    let mut needed = BTreeMap::new();
    let mut stack = targets.to_vec();
    while let Some(id) = stack.pop() {
        if needed.contains_key(&id) {
            continue;
        }
        let node = graph.node(id).ok_or(SolveError::UnknownNode {
            node: id,
            len: graph.len(),
        })?;
        stack.extend(&node.inputs);
        needed.insert(id, node.clone());
    }
    Ok(needed)
}

/// The values of `ids` in order, or `None` while one is missing.
fn collect<T: Clone>(ids: &[NodeId], values: &BTreeMap<NodeId, T>) -> Option<Vec<T>> {
    ids.iter().map(|id| values.get(id).cloned()).collect()
}

/// Why a worker call did not return a value.
enum Failure<E> {
    Error(E),
    Panic(String),
}

impl<E> From<E> for Failure<E> {
    fn from(error: E) -> Self {
        Failure::Error(error)
    }
}

/// What the phases have found so far.
struct State<T, E> {
    keys: BTreeMap<NodeId, Digest>,
    outputs: BTreeMap<NodeId, T>,
    /// The first failure, which fired the internal cancel.
    failure: Option<(NodeId, Failure<E>)>,
}

impl<T, E> State<T, E> {
    /// Records `failure` of `node` and fires `cancel`, unless `cancel` has already fired (the
    /// failure is then a consequence of the cancel); returns whether it was recorded.
    fn fail(
        &mut self,
        node: NodeId,
        failure: Failure<E>,
        cancel: &Cancel,
        events: &Events,
    ) -> bool {
        if cancel.is_cancelled() {
            return false;
        }
        events(node, NodeEvent::Failed);
        self.failure = Some((node, failure));
        cancel.cancel();
        true
    }

    /// The error to return after a phase: the first failure, else a cancel by the caller.
    fn outcome(&mut self, cancel: &Cancel) -> Result<(), SolveError<E>> {
        match self.failure.take() {
            Some((node, Failure::Error(error))) => Err(SolveError::Failed { node, error }),
            Some((node, Failure::Panic(message))) => Err(SolveError::Panicked { node, message }),
            None if cancel.is_cancelled() => Err(SolveError::Canceled),
            None => Ok(()),
        }
    }
}

/// A worker call for one node, ready to go to a blocking thread.
type Work<T, E> = Box<dyn FnOnce() -> Result<T, Failure<E>> + Send>;

/// Runs work for `pending` (in ascending order) on `runtime`'s blocking threads, at most `jobs`
/// at once. `prepare` gives a node's work, or `None` while its inputs are not ready; `finish`
/// gets each result, a panic turned into a [`Failure::Panic`]. Once `cancel` fires nothing more
/// starts; returns when everything started has returned.
async fn schedule<S, T: Send + 'static, E: Send + 'static>(
    runtime: &Handle,
    state: &mut S,
    mut pending: Vec<NodeId>,
    jobs: usize,
    cancel: &Cancel,
    prepare: impl Fn(&S, NodeId) -> Option<Work<T, E>>,
    mut finish: impl FnMut(&mut S, NodeId, Result<T, Failure<E>>),
) {
    let mut running = JoinSet::new();
    let mut node_of_task = HashMap::new();
    loop {
        if !cancel.is_cancelled() {
            pending.retain(|&id| {
                if running.len() >= jobs {
                    return true;
                }
                let Some(work) = prepare(state, id) else {
                    return true;
                };
                node_of_task.insert(running.spawn_blocking_on(work, runtime).id(), id);
                false
            });
        }
        let (task, result) = match running.join_next_with_id().await {
            None => return,
            Some(Ok((task, result))) => (task, result),
            Some(Err(error)) => (error.id(), Err(Failure::Panic(panic_message(error)))),
        };
        if let Some(id) = node_of_task.remove(&task) {
            finish(state, id, result);
        }
    }
}

/// The message a panicking task left, or why the task did not finish.
fn panic_message(error: JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload
                .downcast_ref::<&str>()
                .map_or("a panic without a message".to_string(), |s| s.to_string()),
        },
        Err(error) => error.to_string(),
    }
}

/// Fires its token when dropped.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
