//! The solver with fake ops and a fake worker that counts what it is asked to do.

use super::*;
use crate::oci::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a fake op waits for another before it gives up: a guard against a hanging test
/// when the solver is broken, not a timing assertion.
const DEADLOCK_GUARD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Key,
    Lookup,
    Run,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Succeed,
    Fail(Method),
    Panic(Method),
    /// Runs until its cancel token fires, then fails.
    WaitForCancel,
    /// Succeeds once the named op has started running.
    WaitFor(&'static str),
    /// Fails once the named op has started running.
    FailAfter(&'static str),
}

struct FakeOp {
    name: &'static str,
    act: Act,
}

impl OpDigest for FakeOp {
    fn digest(&self) -> Digest {
        Digest::of(self.name.as_bytes())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct FakeError(String);

#[derive(Default)]
struct FakeWorker {
    cache: Mutex<HashMap<Digest, String>>,
    runs: Mutex<Vec<&'static str>>,
    started: Mutex<HashSet<&'static str>>,
    started_changed: Condvar,
    running: AtomicUsize,
    max_running: AtomicUsize,
    saw_cancel: Mutex<Vec<&'static str>>,
}

impl FakeWorker {
    fn runs(&self) -> Vec<&'static str> {
        let mut runs = self.runs.lock().unwrap().clone();
        runs.sort();
        runs
    }

    fn wait_started(&self, name: &'static str) -> Result<(), FakeError> {
        let started = self.started.lock().unwrap();
        let (started, wait) = self
            .started_changed
            .wait_timeout_while(started, DEADLOCK_GUARD, |started| !started.contains(name))
            .unwrap();
        drop(started);
        match wait.timed_out() {
            true => Err(FakeError(format!("{name} never started"))),
            false => Ok(()),
        }
    }

    fn act(op: &FakeOp, method: Method) -> Result<(), FakeError> {
        match op.act {
            Act::Fail(m) if m == method => Err(FakeError(format!("{} failed", op.name))),
            Act::Panic(m) if m == method => panic!("fake panic in {}", op.name),
            _ => Ok(()),
        }
    }

    fn run_op(&self, op: &FakeOp, cancel: &Cancel) -> Result<(), FakeError> {
        Self::act(op, Method::Run)?;
        match op.act {
            Act::WaitForCancel => {
                let (tx, rx) = std::sync::mpsc::channel();
                let _guard = cancel.on_cancel(move || {
                    let _ = tx.send(());
                });
                rx.recv_timeout(DEADLOCK_GUARD)
                    .map_err(|_| FakeError(format!("{} was never canceled", op.name)))?;
                self.saw_cancel.lock().unwrap().push(op.name);
                Err(FakeError(format!("{} canceled", op.name)))
            }
            Act::WaitFor(other) => self.wait_started(other),
            Act::FailAfter(other) => {
                self.wait_started(other)?;
                Err(FakeError(format!("{} failed", op.name)))
            }
            Act::Succeed | Act::Fail(_) | Act::Panic(_) => Ok(()),
        }
    }
}

impl Worker for FakeWorker {
    type Op = FakeOp;
    type Output = String;
    type Error = FakeError;

    fn cache_key(
        &self,
        _: NodeId,
        op: &FakeOp,
        op_digest: &Digest,
        input_keys: &[Digest],
    ) -> Result<Digest, FakeError> {
        Self::act(op, Method::Key)?;
        let inputs: Vec<String> = input_keys.iter().map(Digest::to_string).collect();
        Ok(Digest::of(
            format!("{op_digest} {}", inputs.join(" ")).as_bytes(),
        ))
    }

    fn lookup(&self, _: NodeId, op: &FakeOp, key: &Digest) -> Result<Option<String>, FakeError> {
        Self::act(op, Method::Lookup)?;
        Ok(self.cache.lock().unwrap().get(key).cloned())
    }

    fn run(
        &self,
        _: NodeId,
        op: &FakeOp,
        key: &Digest,
        inputs: &[String],
        cancel: &Cancel,
    ) -> Result<String, FakeError> {
        self.runs.lock().unwrap().push(op.name);
        // Counted before it is announced: an op waiting for this one then sees it running.
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(running, Ordering::SeqCst);
        self.started.lock().unwrap().insert(op.name);
        self.started_changed.notify_all();
        let result = self.run_op(op, cancel);
        self.running.fetch_sub(1, Ordering::SeqCst);
        result?;
        let output = format!("{}({})", op.name, inputs.join(","));
        self.cache
            .lock()
            .unwrap()
            .insert(key.clone(), output.clone());
        Ok(output)
    }
}

fn add(graph: &mut Graph<FakeOp>, name: &'static str, inputs: &[NodeId]) -> NodeId {
    add_act(graph, name, Act::Succeed, inputs)
}

fn add_act(graph: &mut Graph<FakeOp>, name: &'static str, act: Act, inputs: &[NodeId]) -> NodeId {
    graph.add(FakeOp { name, act }, inputs.to_vec()).unwrap()
}

type Outcome = Result<Solved<String>, SolveError<FakeError>>;

/// What a solve returned and the events it reported.
struct Run {
    result: Outcome,
    events: Vec<(NodeId, NodeEvent)>,
}

impl Run {
    /// The events of `node`, with elapsed times zeroed.
    fn of(&self, node: NodeId) -> Vec<NodeEvent> {
        let zeroed = |event: &NodeEvent| match event {
            NodeEvent::Done { .. } => NodeEvent::Done {
                elapsed: Duration::ZERO,
            },
            other => other.clone(),
        };
        let events = self.events.iter().filter(|(id, _)| *id == node);
        events.map(|(_, event)| zeroed(event)).collect()
    }

    fn output(&self, node: NodeId) -> &str {
        let solved = self.result.as_ref().unwrap();
        solved.outputs.get(&node).unwrap()
    }
}

const RAN: [NodeEvent; 2] = [
    NodeEvent::Started,
    NodeEvent::Done {
        elapsed: Duration::ZERO,
    },
];

async fn solve_graph(
    graph: &Arc<Graph<FakeOp>>,
    worker: &Arc<FakeWorker>,
    targets: &[NodeId],
    options: SolveOptions,
    cancel: &Cancel,
) -> Run {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let report: Events = Arc::new(move |id, event| sink.lock().unwrap().push((id, event)));
    let result = solve(
        graph.clone(),
        targets,
        worker.clone(),
        &options,
        cancel,
        report,
    )
    .await;
    let events = events.lock().unwrap().clone();
    Run { result, events }
}

async fn solve_all(
    graph: &Arc<Graph<FakeOp>>,
    worker: &Arc<FakeWorker>,
    targets: &[NodeId],
) -> Run {
    solve_graph(
        graph,
        worker,
        targets,
        SolveOptions::default(),
        &Cancel::new(),
    )
    .await
}

/// `base`, two ops on it and one on both: (graph, [base, left, right, top]).
fn diamond() -> (Arc<Graph<FakeOp>>, [NodeId; 4]) {
    let mut graph = Graph::new();
    let base = add(&mut graph, "base", &[]);
    let left = add(&mut graph, "left", &[base]);
    let right = add(&mut graph, "right", &[base]);
    let top = add(&mut graph, "top", &[left, right]);
    (Arc::new(graph), [base, left, right, top])
}

/// `base` → `mid` → `top`: (graph, [base, mid, top]).
fn chain() -> (Arc<Graph<FakeOp>>, [NodeId; 3]) {
    let mut graph = Graph::new();
    let base = add(&mut graph, "base", &[]);
    let mid = add(&mut graph, "mid", &[base]);
    let top = add(&mut graph, "top", &[mid]);
    (Arc::new(graph), [base, mid, top])
}

#[tokio::test]
async fn identical_ops_are_one_node_and_run_once() {
    let mut graph = Graph::new();
    let a = add(&mut graph, "a", &[]);
    let again = add(&mut graph, "a", &[]);
    let top = add(&mut graph, "top", &[a, again]);
    let unrelated = add(&mut graph, "unrelated", &[]);
    let worker = Arc::new(FakeWorker::default());
    let run = solve_all(&Arc::new(graph), &worker, &[top]).await;
    assert_eq!(a, again);
    assert_eq!(run.output(top), "top(a(),a())");
    assert_eq!(worker.runs(), ["a", "top"]);
    // Pruned: not reachable from the target.
    assert!(run.of(unrelated).is_empty());
    assert_eq!(run.result.unwrap().keys.len(), 2);
}

#[tokio::test]
async fn a_diamond_runs_its_shared_input_once() {
    let (graph, [base, left, right, top]) = diamond();
    let worker = Arc::new(FakeWorker::default());
    let run = solve_all(&graph, &worker, &[top, left]).await;
    assert_eq!(run.output(top), "top(left(base()),right(base()))");
    assert_eq!(run.output(left), "left(base())");
    assert_eq!(worker.runs(), ["base", "left", "right", "top"]);
    for node in [base, left, right, top] {
        assert_eq!(run.of(node), RAN, "node {node}");
    }
}

#[tokio::test]
async fn independent_ops_run_in_parallel() {
    let mut graph = Graph::new();
    // Each waits until the other has started: they finish only if they overlap.
    let a = add_act(&mut graph, "a", Act::WaitFor("b"), &[]);
    let b = add_act(&mut graph, "b", Act::WaitFor("a"), &[]);
    let top = add(&mut graph, "top", &[a, b]);
    let worker = Arc::new(FakeWorker::default());
    let options = SolveOptions {
        jobs: 2,
        no_cache: vec![],
    };
    let run = solve_graph(&Arc::new(graph), &worker, &[top], options, &Cancel::new()).await;
    assert_eq!(run.output(top), "top(a(),b())");
    assert_eq!(worker.max_running.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn one_job_never_runs_two_ops_at_once() {
    let mut graph = Graph::new();
    let leaves: Vec<NodeId> = ["a", "b", "c", "d", "e"]
        .into_iter()
        .map(|name| add(&mut graph, name, &[]))
        .collect();
    let top = add(&mut graph, "top", &leaves);
    let worker = Arc::new(FakeWorker::default());
    let options = SolveOptions {
        jobs: 1,
        no_cache: vec![],
    };
    let run = solve_graph(&Arc::new(graph), &worker, &[top], options, &Cancel::new()).await;
    assert_eq!(run.output(top), "top(a(),b(),c(),d(),e())");
    assert_eq!(worker.max_running.load(Ordering::SeqCst), 1);
    assert_eq!(worker.runs().len(), 6);
}

#[tokio::test]
async fn a_second_solve_is_all_cache_hits() {
    let (graph, nodes) = diamond();
    let top = nodes[3];
    let worker = Arc::new(FakeWorker::default());
    let first = solve_all(&graph, &worker, &[top]).await;
    let second = solve_all(&graph, &worker, &[top]).await;
    assert_eq!(worker.runs().len(), 4);
    for node in nodes {
        assert_eq!(second.of(node), [NodeEvent::Cached], "node {node}");
    }
    assert_eq!(second.output(top), first.output(top));
    let keys = |run: Run| run.result.unwrap().keys;
    assert_eq!(keys(second), keys(first));
}

#[tokio::test]
async fn changing_a_leaf_reruns_only_it_and_its_dependents() {
    // a, b → ab → top → end ← side ← a; then b becomes b2.
    let build = |b_name: &'static str| {
        let mut graph = Graph::new();
        let a = add(&mut graph, "a", &[]);
        let b = add(&mut graph, b_name, &[]);
        let ab = add(&mut graph, "ab", &[a, b]);
        let top = add(&mut graph, "top", &[ab]);
        let side = add(&mut graph, "side", &[a]);
        let end = add(&mut graph, "end", &[top, side]);
        (Arc::new(graph), [a, b, ab, top, side, end])
    };
    let worker = Arc::new(FakeWorker::default());
    let (graph, [.., end]) = build("b");
    let first = solve_all(&graph, &worker, &[end]).await;
    worker.runs.lock().unwrap().clear();
    let (graph, [a, b2, ab, top, side, end]) = build("b2");
    let second = solve_all(&graph, &worker, &[end]).await;
    assert_eq!(worker.runs(), ["ab", "b2", "end", "top"]);
    for node in [a, side] {
        assert_eq!(second.of(node), [NodeEvent::Cached], "node {node}");
    }
    for node in [b2, ab, top, end] {
        assert_eq!(second.of(node), RAN, "node {node}");
    }
    assert_eq!(second.output(end), "end(top(ab(a(),b2())),side(a()))");
    let (first, second) = (first.result.unwrap().keys, second.result.unwrap().keys);
    assert_eq!(first.get(&a), second.get(&a));
    assert_eq!(first.get(&side), second.get(&side));
    assert_ne!(first.get(&end), second.get(&end));
}

#[tokio::test]
async fn no_cache_nodes_rerun_when_needed() {
    let (graph, [base, mid, top]) = chain();
    let worker = Arc::new(FakeWorker::default());
    solve_all(&graph, &worker, &[top]).await.result.unwrap();
    let cases: [(&[NodeId], &[&str]); 5] = [
        (&[], &[]),
        (&[top], &["top"]),
        // top hits the cache, so it needs nothing below it.
        (&[mid], &[]),
        (&[mid, top], &["mid", "top"]),
        (&[base, mid, top], &["base", "mid", "top"]),
    ];
    for (no_cache, expected) in cases {
        worker.runs.lock().unwrap().clear();
        let options = SolveOptions {
            jobs: 0,
            no_cache: no_cache.to_vec(),
        };
        let run = solve_graph(&graph, &worker, &[top], options, &Cancel::new()).await;
        assert_eq!(worker.runs(), expected, "no_cache {no_cache:?}");
        assert_eq!(run.output(top), "top(mid(base()))", "no_cache {no_cache:?}");
    }
}

#[tokio::test]
async fn a_hit_needs_nothing_below_it() {
    let (graph, [base, mid, top]) = chain();
    let worker = Arc::new(FakeWorker::default());
    let keys = solve_all(&graph, &worker, &[top])
        .await
        .result
        .unwrap()
        .keys;
    worker.runs.lock().unwrap().clear();
    // (evicted, events of base, mid, top)
    let cached = || vec![NodeEvent::Cached];
    let cases = [
        (vec![base, mid], [vec![], vec![], cached()]),
        (vec![mid], [cached(), vec![], cached()]),
        (vec![base], [vec![], cached(), cached()]),
    ];
    for (evicted, expected) in cases {
        let saved = worker.cache.lock().unwrap().clone();
        for node in &evicted {
            worker.cache.lock().unwrap().remove(keys.get(node).unwrap());
        }
        let run = solve_all(&graph, &worker, &[top]).await;
        assert_eq!(worker.runs(), Vec::<&str>::new(), "evicted {evicted:?}");
        assert_eq!([run.of(base), run.of(mid), run.of(top)], expected);
        assert_eq!(run.output(top), "top(mid(base()))");
        *worker.cache.lock().unwrap() = saved;
    }
}

#[tokio::test]
async fn a_failure_cancels_running_ops_and_starts_nothing_more() {
    let mut graph = Graph::new();
    let slow = add_act(&mut graph, "slow", Act::WaitForCancel, &[]);
    let bad = add_act(&mut graph, "bad", Act::FailAfter("slow"), &[]);
    let after = add(&mut graph, "after", &[slow]);
    let worker = Arc::new(FakeWorker::default());
    let options = SolveOptions {
        jobs: 2,
        no_cache: vec![],
    };
    let graph = Arc::new(graph);
    let run = solve_graph(&graph, &worker, &[after, bad], options, &Cancel::new()).await;
    match &run.result {
        Err(SolveError::Failed { node, error }) => {
            assert_eq!((*node, error.to_string()), (bad, "bad failed".into()));
        }
        other => panic!("expected bad's failure, got {other:?}"),
    }
    assert_eq!(run.of(slow), [NodeEvent::Started, NodeEvent::Canceled]);
    assert_eq!(run.of(bad), [NodeEvent::Started, NodeEvent::Failed]);
    assert!(run.of(after).is_empty());
    assert_eq!(*worker.saw_cancel.lock().unwrap(), ["slow"]);
    assert_eq!(worker.runs(), ["bad", "slow"]);
}

#[tokio::test]
async fn an_op_waiting_for_a_job_never_starts_after_a_failure() {
    let mut graph = Graph::new();
    // With one job, nodes start in id order: bad first.
    let bad = add_act(&mut graph, "bad", Act::Fail(Method::Run), &[]);
    let other = add(&mut graph, "other", &[]);
    let worker = Arc::new(FakeWorker::default());
    let options = SolveOptions {
        jobs: 1,
        no_cache: vec![],
    };
    let run = solve_graph(
        &Arc::new(graph),
        &worker,
        &[bad, other],
        options,
        &Cancel::new(),
    )
    .await;
    assert!(matches!(run.result, Err(SolveError::Failed { node, .. }) if node == bad));
    assert_eq!(worker.runs(), ["bad"]);
    assert!(run.of(other).is_empty());
}

#[tokio::test]
async fn an_external_cancel_interrupts_runs_and_returns_canceled() {
    let mut graph = Graph::new();
    let slow = add_act(&mut graph, "slow", Act::WaitForCancel, &[]);
    let (graph, worker, cancel) = (
        Arc::new(graph),
        Arc::new(FakeWorker::default()),
        Cancel::new(),
    );
    let solving = tokio::spawn({
        let (graph, worker, cancel) = (graph.clone(), worker.clone(), cancel.clone());
        async move { solve_graph(&graph, &worker, &[slow], SolveOptions::default(), &cancel).await }
    });
    let started = tokio::task::spawn_blocking({
        let worker = worker.clone();
        move || worker.wait_started("slow")
    });
    started.await.unwrap().unwrap();
    cancel.cancel();
    let run = solving.await.unwrap();
    assert!(
        matches!(run.result, Err(SolveError::Canceled)),
        "{:?}",
        run.result
    );
    assert_eq!(run.of(slow), [NodeEvent::Started, NodeEvent::Canceled]);
    assert_eq!(*worker.saw_cancel.lock().unwrap(), ["slow"]);
}

#[tokio::test]
async fn a_cancel_before_the_solve_starts_nothing() {
    let (graph, [.., top]) = chain();
    let (worker, cancel) = (Arc::new(FakeWorker::default()), Cancel::new());
    cancel.cancel();
    let run = solve_graph(&graph, &worker, &[top], SolveOptions::default(), &cancel).await;
    assert!(matches!(run.result, Err(SolveError::Canceled)));
    assert!(run.events.is_empty());
    assert!(worker.runs().is_empty());
}

#[tokio::test]
async fn an_error_or_panic_in_any_worker_method_fails_the_solve() {
    for act in [
        Act::Fail(Method::Key),
        Act::Fail(Method::Lookup),
        Act::Fail(Method::Run),
        Act::Panic(Method::Key),
        Act::Panic(Method::Lookup),
        Act::Panic(Method::Run),
    ] {
        let mut graph = Graph::new();
        let leaf = add_act(&mut graph, "leaf", act, &[]);
        let top = add(&mut graph, "top", &[leaf]);
        let worker = Arc::new(FakeWorker::default());
        let run = solve_all(&Arc::new(graph), &worker, &[top]).await;
        match (&run.result, act) {
            (Err(SolveError::Failed { node, error }), Act::Fail(_)) => {
                assert_eq!((*node, error.to_string()), (leaf, "leaf failed".into()));
            }
            (Err(SolveError::Panicked { node, message }), Act::Panic(_)) => {
                assert_eq!((*node, message.as_str()), (leaf, "fake panic in leaf"));
            }
            (other, _) => panic!("{act:?}: unexpected {other:?}"),
        }
        assert_eq!(run.of(leaf).last(), Some(&NodeEvent::Failed), "{act:?}");
        assert!(run.of(top).is_empty(), "{act:?}");
        assert!(!worker.runs().contains(&"top"), "{act:?}");
    }
}

#[tokio::test]
async fn an_unknown_target_is_an_error() {
    let (graph, _) = chain();
    let run = solve_all(&graph, &Arc::new(FakeWorker::default()), &[7]).await;
    assert!(matches!(
        run.result,
        Err(SolveError::UnknownNode { node: 7, len: 3 })
    ));
}

#[test]
fn solving_outside_a_tokio_runtime_is_an_error() {
    let (graph, [.., top]) = chain();
    let events: Events = Arc::new(|_, _| {});
    let (worker, options, cancel) = (
        Arc::new(FakeWorker::default()),
        SolveOptions::default(),
        Cancel::new(),
    );
    let targets = [top];
    let solving = solve(graph, &targets, worker, &options, &cancel, events);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    let polled = std::future::Future::poll(std::pin::pin!(solving), &mut context);
    assert!(matches!(
        polled,
        std::task::Poll::Ready(Err(SolveError::NoRuntime))
    ));
}
