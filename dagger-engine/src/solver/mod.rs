//! The solver: the registry of calls (every object is the digest of the call that makes it), evaluation
//! with in-flight deduplication, the results cache (in memory and, for persistent values, on disk), and
//! progress events.
//!
//! It knows nothing of what the values are: it stores any [`Value`], and computes a call with the
//! [`Compute`] it is given, so the operations live above it.

pub(crate) mod events;
mod results;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use crate::model::ids::{Call, Digest};
use crate::solver::events::{Event, EventKind, OpInfo};
use crate::solver::results::Results;
use crate::store::Store;

/// A value the solver can keep: in memory, and on disk (as JSON under `results/`) when it is persistent.
pub(crate) trait Value: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Whether this result is worth keeping on disk across sessions.
    fn persistent(&self) -> bool;
    /// Whether a result loaded from disk can still be used (what it names may have been pruned).
    fn intact(&self, store: &Store) -> bool;
}

/// What goes wrong in the solver itself (a computation's own errors are the layer above's type `E`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SolverError {
    /// A digest no call was registered for.
    #[error("unknown object `{0}`: it was never created on this engine")]
    Unknown(Digest),
    /// A call or result record could not be written.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The error type of the layer a solver computes for: cloned to every request that shares an evaluation,
/// and made from the solver's own errors.
pub(crate) trait SolveError: From<SolverError> + Clone + std::fmt::Display + Send + Sync + 'static {}

impl<E: From<SolverError> + Clone + std::fmt::Display + Send + Sync + 'static> SolveError for E {}

/// How a call is computed, once its inputs (parent and object arguments) are ready, and how its progress
/// events describe it.
pub(crate) trait Compute<V, E>: Send + Sync {
    /// Computes the value of `call`.
    fn compute(self: Arc<Self>, call: Call) -> BoxFuture<'static, Result<V, E>>;

    /// What `call`, a field of the type `owner`, does, for its events (the solver fills in the inputs).
    fn describe(&self, owner: &str, call: &Call) -> OpInfo {
        let _ = (owner, call);
        OpInfo::default()
    }

    /// The exit code of a process whose failure `error` is, for the `Failed` event.
    fn exit_code(&self, error: &E) -> Option<i32> {
        let _ = error;
        None
    }
}

/// A function that sees every event, synchronously, as it is sent (a run report): unlike a subscriber, it
/// never misses one when many come at once.
pub(crate) type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

type EvalResult<V, E> = Result<Arc<V>, E>;
type EvalFuture<V, E> = Shared<BoxFuture<'static, EvalResult<V, E>>>;
/// An evaluation in flight, held weakly: it lives as long as some request awaits it, and is dropped (and so
/// stopped) when the last one is (its client went away).
type WeakEvalFuture<V, E> = WeakShared<BoxFuture<'static, EvalResult<V, E>>>;

/// The calls, results and evaluations of one engine, for values `V` and errors `E`.
pub(crate) struct Solver<V, E> {
    store: Store,
    /// The version of what the computation computes: results on disk are keyed by it with the call digest.
    epoch: &'static str,
    calls: Mutex<HashMap<Digest, Call>>,
    results: Results<V>,
    in_flight: Mutex<HashMap<Digest, WeakEvalFuture<V, E>>>,
    events: broadcast::Sender<Event>,
    listeners: parking_lot::RwLock<Vec<Listener>>,
}

impl<V: Value, E: SolveError> Solver<V, E> {
    /// A solver keeping its calls and persistent results in `store`; results on disk are those of `epoch`
    /// (a version of the computation: a result another version stored under the same call is not used).
    pub(crate) fn new(store: Store, epoch: &'static str) -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            store,
            epoch,
            calls: Mutex::default(),
            results: Results::default(),
            in_flight: Mutex::default(),
            events,
            listeners: parking_lot::RwLock::default(),
        }
    }

    /// Progress events, from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Hands every event from now on to `listener`, as it is sent.
    pub(crate) fn listen(&self, listener: Listener) {
        self.listeners.write().push(listener);
    }

    /// Sends an event to the listeners and to the subscribers of this moment; the events that describe an
    /// operation get the `traceparent` of the request being executed and what the field being resolved serves.
    pub(crate) fn send(&self, mut event: Event) {
        if event.traceparent.is_none()
            && matches!(event.kind, EventKind::Queued | EventKind::Started | EventKind::Cached)
        {
            event.traceparent = crate::solver::events::current_traceparent();
        }
        if event.serves.is_none() && matches!(event.kind, EventKind::Queued | EventKind::Started | EventKind::Cached) {
            event.serves = crate::solver::events::current_serves();
        }
        for listener in self.listeners.read().iter() {
            listener(&event);
        }
        let _ = self.events.send(event);
    }

    /// Reports an event of a call; `compute` describes the call on the events that carry a description.
    fn emit(&self, call: &Call, digest: &Digest, kind: EventKind, compute: &dyn Compute<V, E>) {
        let owner = self.owner(call);
        let info = matches!(kind, EventKind::Queued | EventKind::Started | EventKind::Cached).then(|| {
            let mut info = compute.describe(&owner, call);
            info.inputs = call.inputs().iter().map(short).collect();
            Box::new(info)
        });
        self.send(Event {
            info,
            ..Event::new(format!("{owner}.{}", call.field), short(digest), kind)
        });
    }

    /// Reports the failure of a call, with the exit code of the process that failed, if one did.
    fn emit_failure(&self, call: &Call, digest: &Digest, message: String, exit_code: Option<i32>) {
        let op = format!("{}.{}", self.owner(call), call.field);
        self.send(Event {
            exit_code,
            ..Event::new(op, short(digest), EventKind::Failed(message))
        });
    }

    /// The type a call's field belongs to (`Directory` for `Directory.file`), which names the operation.
    fn owner(&self, call: &Call) -> String {
        match &call.parent {
            None => "Query".to_owned(),
            Some(p) => self
                .call(p)
                .map(|c| c.type_name)
                .unwrap_or_else(|| call.type_name.clone()),
        }
    }

    /// Reports an event of an operation that is not a call (a leaf that does work, such as `publish`).
    pub(crate) fn emit_event(&self, op: &str, digest: &Digest, kind: EventKind) {
        self.send(Event::new(op, short(digest), kind));
    }

    /// Registers a call, returning its digest (the object's identity).
    pub(crate) fn register(&self, call: Call) -> Result<Digest, SolverError> {
        let d = call.digest();
        let known = self.calls.lock().contains_key(&d);
        if !known {
            // A record already on disk (from an earlier session) is the same call: no need to write it again.
            if !self.store.has_json("calls", &d) {
                self.store.put_json("calls", &d, &call)?;
            }
            self.calls.lock().insert(d.clone(), call);
        }
        Ok(d)
    }

    /// The call behind a digest, from memory or the cache directory.
    pub(crate) fn call(&self, d: &Digest) -> Option<Call> {
        if let Some(c) = self.calls.lock().get(d).cloned() {
            return Some(c);
        }
        let c: Call = self.store.get_json("calls", d)?;
        self.calls.lock().insert(d.clone(), c.clone());
        Some(c)
    }

    /// Records a result computed outside `eval` (eager host reads, records of a list).
    pub(crate) fn put_result(&self, d: &Digest, value: V) -> Result<Arc<V>, SolverError> {
        let persistent = value.persistent();
        if persistent {
            self.store.put_json("results", &self.result_key(d), &value)?;
        }
        let v = Arc::new(value);
        self.results.remember(d, &v, persistent);
        Ok(v)
    }

    /// Where the result of `d` is kept on disk: the call digest salted with the epoch.
    fn result_key(&self, d: &Digest) -> Digest {
        Digest::of(format!("{}/result/{d}", self.epoch).as_bytes())
    }

    /// A result from memory or, reported as cached, from disk.
    fn ready(&self, d: &Digest, call: &Call, compute: &dyn Compute<V, E>) -> Option<Arc<V>> {
        if let Some(v) = self.results.get(d) {
            return Some(v);
        }
        let v = self
            .store
            .get_json::<V>("results", &self.result_key(d))
            .filter(|v| v.intact(&self.store))?;
        self.emit(call, d, EventKind::Cached, compute);
        let v = Arc::new(v);
        self.results.remember(d, &v, true);
        Some(v)
    }

    /// The objects `d` depends on that are not ready yet, dependencies first, found with an explicit stack
    /// (a chain of any length costs no native stack). Results found on disk on the way are loaded.
    fn missing_inputs(&self, d: &Digest, compute: &dyn Compute<V, E>) -> Result<Vec<(Digest, Call)>, SolverError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        seen.insert(d.clone());
        let root = self.call(d).ok_or_else(|| SolverError::Unknown(d.clone()))?;
        // An entry with its call has had its inputs pushed above it: it comes next once they are done.
        let mut stack: Vec<(Digest, Option<Call>)> = Vec::new();
        for input in root.inputs().into_iter().rev() {
            stack.push((input, None));
        }
        // Keep the held results alive until the caller has used them.
        let mut held = Vec::new();
        while let Some((digest, expanded)) = stack.pop() {
            if let Some(call) = expanded {
                order.push((digest, call));
                continue;
            }
            if !seen.insert(digest.clone()) {
                continue;
            }
            let call = self.call(&digest).ok_or_else(|| SolverError::Unknown(digest.clone()))?;
            if let Some(v) = self.ready(&digest, &call, compute) {
                held.push(v);
                continue;
            }
            let inputs = call.inputs();
            stack.push((digest, Some(call)));
            for input in inputs.into_iter().rev() {
                if !seen.contains(&input) {
                    stack.push((input, None));
                }
            }
        }
        self.results.keep_recent(held);
        Ok(order)
    }

    /// Evaluates an object: from memory, from disk, by joining an identical evaluation in flight, or by
    /// computing it once with `compute`.
    ///
    /// The objects it is built from are evaluated first, bottom up, in a loop: computing an object then finds
    /// its parent ready, so evaluation never nests deeper than one level per object argument, however long
    /// the chain of calls is.
    pub(crate) fn eval(
        self: &Arc<Self>,
        d: &Digest,
        compute: Arc<dyn Compute<V, E>>,
    ) -> BoxFuture<'static, EvalResult<V, E>> {
        let this = self.clone();
        let d = d.clone();
        Box::pin(async move {
            if let Some(v) = this.results.get(&d) {
                return Ok(v);
            }
            let call = this.call(&d).ok_or_else(|| E::from(SolverError::Unknown(d.clone())))?;
            if let Some(v) = this.ready(&d, &call, &*compute) {
                return Ok(v);
            }
            let missing = this.missing_inputs(&d, &*compute).map_err(E::from)?;
            // What has to run, in the order it will: queued until it starts (unless it is running already).
            {
                let in_flight = this.in_flight.lock();
                let waiting: Vec<&(Digest, Call)> =
                    missing.iter().filter(|(dep, _)| !in_flight.contains_key(dep)).collect();
                let root_waits = !in_flight.contains_key(&d);
                drop(in_flight);
                for (dep, dep_call) in waiting {
                    this.emit(dep_call, dep, EventKind::Queued, &*compute);
                }
                if root_waits {
                    this.emit(&call, &d, EventKind::Queued, &*compute);
                }
            }
            let mut below = None;
            for (dep, dep_call) in missing {
                // Held until the next one is computed, so a chain's parent is never dropped before its child
                // has read it.
                below = Some(this.eval_one(&dep, dep_call, &compute).await?);
            }
            let v = this.eval_one(&d, call, &compute).await;
            drop(below);
            v
        })
    }

    /// Evaluates one object whose inputs are (normally) ready: joins an evaluation in flight or starts one.
    async fn eval_one(self: &Arc<Self>, d: &Digest, call: Call, compute: &Arc<dyn Compute<V, E>>) -> EvalResult<V, E> {
        if let Some(v) = self.ready(d, &call, &**compute) {
            return Ok(v);
        }
        let fut = {
            let mut in_flight = self.in_flight.lock();
            // In flight entries are weak: an evaluation lives while a request awaits it, and is dropped
            // (its containers stopped) with the last one.
            match in_flight.get(d).and_then(WeakShared::upgrade) {
                Some(f) => f,
                None => {
                    let shared: EvalFuture<V, E> = self.clone().start(d.clone(), call, compute.clone()).shared();
                    if let Some(weak) = shared.downgrade() {
                        in_flight.insert(d.clone(), weak);
                    }
                    shared
                }
            }
        };
        fut.await
    }

    /// The evaluation of one call: computes it, reports it, and keeps its result.
    fn start(
        self: Arc<Self>,
        digest: Digest,
        call: Call,
        compute: Arc<dyn Compute<V, E>>,
    ) -> BoxFuture<'static, EvalResult<V, E>> {
        Box::pin(async move {
            self.emit(&call, &digest, EventKind::Started, &*compute);
            let mut running = Running {
                solver: &self,
                call: &call,
                digest: &digest,
                finished: false,
            };
            let started = Instant::now();
            let result = compute.clone().compute(call.clone()).await;
            running.finished = true;
            match &result {
                Ok(_) => {
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.emit(&call, &digest, EventKind::Done(ms), &*compute);
                }
                Err(e) => self.emit_failure(&call, &digest, e.to_string(), compute.exit_code(e)),
            }
            let result = match result {
                Ok(v) => self.put_result(&digest, v).map_err(E::from),
                Err(e) => Err(e),
            };
            self.in_flight.lock().remove(&digest);
            result
        })
    }
}

/// The first characters of a digest, which name an operation in events.
fn short(d: &Digest) -> String {
    d.as_str().get(..12).unwrap_or(d.as_str()).to_owned()
}

/// An evaluation under way; dropped unfinished (no request waits for it any more), it reports the operation
/// as cancelled so progress displays do not wait for it, and forgets it.
struct Running<'a, V: Value, E: SolveError> {
    solver: &'a Solver<V, E>,
    call: &'a Call,
    digest: &'a Digest,
    finished: bool,
}

impl<V: Value, E: SolveError> Drop for Running<'_, V, E> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.solver.emit_failure(
            self.call,
            self.digest,
            "cancelled: no request waits for it any more".into(),
            None,
        );
        self.solver.in_flight.lock().remove(self.digest);
    }
}

#[cfg(test)]
mod tests {
    //! The solver with a toy value and compute function: no engine, no containers.

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    /// A number; negative ones are not kept on disk, and one is "pruned" when a file `pruned-<n>` exists.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Num(i64);

    impl Value for Num {
        fn persistent(&self) -> bool {
            self.0 >= 0
        }
        fn intact(&self, store: &Store) -> bool {
            !store.root().join(format!("pruned-{}", self.0)).exists()
        }
    }

    /// The toy's error: a message.
    #[derive(Clone, Debug, thiserror::Error)]
    #[error("{0}")]
    struct ToyError(String);

    impl From<SolverError> for ToyError {
        fn from(e: SolverError) -> Self {
            ToyError(e.to_string())
        }
    }

    /// Computes `parent + n`; the fields `fail`, `wait` and `forever` fail, wait for a permit, or never end.
    struct Toy {
        solver: Arc<Solver<Num, ToyError>>,
        computed: AtomicUsize,
        fail: AtomicBool,
        gate: tokio::sync::Semaphore,
    }

    impl Compute<Num, ToyError> for Toy {
        fn compute(self: Arc<Self>, call: Call) -> BoxFuture<'static, Result<Num, ToyError>> {
            Box::pin(async move {
                self.computed.fetch_add(1, Ordering::SeqCst);
                match call.field.as_str() {
                    "fail" if self.fail.load(Ordering::SeqCst) => return Err(ToyError("failed on purpose".into())),
                    "wait" => drop(self.gate.acquire().await),
                    "forever" => std::future::pending::<()>().await,
                    _ => {}
                }
                let base = match &call.parent {
                    Some(p) => self.solver.eval(p, self.clone()).await?.0,
                    None => 0,
                };
                Ok(Num(
                    base + call.args.get("n").and_then(serde_json::Value::as_i64).unwrap_or(0)
                ))
            })
        }

        fn describe(&self, owner: &str, call: &Call) -> OpInfo {
            assert_eq!(owner, if call.parent.is_some() { "Num" } else { "Query" });
            self.described(call)
        }

        fn exit_code(&self, _: &ToyError) -> Option<i32> {
            Some(7)
        }
    }

    impl Toy {
        /// Describes calls by their `n`, and gives failures the exit code 7.
        fn described(&self, call: &Call) -> OpInfo {
            OpInfo {
                detail: format!("n={}", call.args.get("n").unwrap_or(&serde_json::Value::Null)),
                ..OpInfo::default()
            }
        }
    }

    fn toy(store: &Store) -> Arc<Toy> {
        toy_of_epoch(store, "toy-1")
    }

    fn toy_of_epoch(store: &Store, epoch: &'static str) -> Arc<Toy> {
        Arc::new(Toy {
            solver: Arc::new(Solver::new(store.clone(), epoch)),
            computed: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
            gate: tokio::sync::Semaphore::new(0),
        })
    }

    fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(dir.path().join("cache")).expect("store")
    }

    /// Registers `field(n)` on `parent`.
    fn call(toy: &Toy, parent: Option<&Digest>, field: &str, n: i64) -> Digest {
        toy.solver
            .register(Call {
                type_name: "Num".into(),
                parent: parent.cloned(),
                field: field.into(),
                args: [("n".to_owned(), json!(n))].into_iter().collect(),
            })
            .expect("register")
    }

    /// A chain of `len` calls adding 1 each; returns the last.
    fn chain(toy: &Toy, len: usize) -> Digest {
        let mut d = call(toy, None, "add", 1);
        for _ in 1..len {
            d = call(toy, Some(&d), "add", 1);
        }
        d
    }

    async fn eval(toy: &Arc<Toy>, d: &Digest) -> Result<Arc<Num>, ToyError> {
        toy.solver.eval(d, toy.clone()).await
    }

    #[tokio::test]
    async fn a_chain_is_computed_once_and_then_served_from_memory() {
        let dir = tempfile::tempdir().expect("dir");
        let toy = toy(&store(&dir));
        let top = chain(&toy, 5);
        assert_eq!(*eval(&toy, &top).await.expect("eval"), Num(5));
        assert_eq!(toy.computed.load(Ordering::SeqCst), 5);
        assert_eq!(*eval(&toy, &top).await.expect("eval"), Num(5));
        assert_eq!(toy.computed.load(Ordering::SeqCst), 5, "nothing is computed twice");
    }

    #[tokio::test]
    async fn registering_is_idempotent_and_calls_are_read_back_from_disk() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir);
        let toy = toy(&store);
        let d = call(&toy, None, "add", 3);
        assert_eq!(call(&toy, None, "add", 3), d);
        let other = Solver::<Num, ToyError>::new(store, "toy-1");
        assert_eq!(other.call(&d).map(|c| c.field), Some("add".to_owned()));
        assert!(other.call(&Digest::of(b"never")).is_none());
    }

    #[tokio::test]
    async fn results_stored_by_another_epoch_of_the_computation_are_not_used() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir);
        let first = toy_of_epoch(&store, "toy-1");
        let d = call(&first, None, "add", 4);
        assert_eq!(*eval(&first, &d).await.expect("eval"), Num(4));
        let changed = toy_of_epoch(&store, "toy-2");
        assert_eq!(*eval(&changed, &d).await.expect("eval"), Num(4));
        assert_eq!(
            changed.computed.load(Ordering::SeqCst),
            1,
            "another epoch computes again"
        );
        let same = toy_of_epoch(&store, "toy-1");
        assert_eq!(*eval(&same, &d).await.expect("eval"), Num(4));
        assert_eq!(
            same.computed.load(Ordering::SeqCst),
            0,
            "the same epoch finds its result on disk"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_evaluations_of_one_call_share_one_computation() {
        let dir = tempfile::tempdir().expect("dir");
        let toy = toy(&store(&dir));
        let d = call(&toy, None, "wait", 7);
        let (a, b) = (toy.clone(), toy.clone());
        let (da, db) = (d.clone(), d.clone());
        let first = tokio::spawn(async move { eval(&a, &da).await });
        let second = tokio::spawn(async move { eval(&b, &db).await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        toy.gate.add_permits(10);
        assert_eq!(*first.await.expect("join").expect("eval"), Num(7));
        assert_eq!(*second.await.expect("join").expect("eval"), Num(7));
        assert_eq!(toy.computed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn persistent_results_are_cache_hits_for_the_next_solver_unless_pruned() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir);
        let first = toy(&store);
        let kept = call(&first, None, "add", 4);
        let session_only = call(&first, None, "add", -4);
        let pruned = call(&first, None, "add", 9);
        for d in [&kept, &session_only, &pruned] {
            eval(&first, d).await.expect("eval");
        }
        std::fs::write(store.root().join("pruned-9"), b"").expect("prune");

        let second = toy(&store);
        let mut events = second.solver.subscribe();
        assert_eq!(*eval(&second, &kept).await.expect("eval"), Num(4));
        assert_eq!(second.computed.load(Ordering::SeqCst), 0, "read from disk");
        assert_eq!(events.try_recv().map(|e| e.kind), Ok(EventKind::Cached));
        assert_eq!(*eval(&second, &session_only).await.expect("eval"), Num(-4));
        assert_eq!(*eval(&second, &pruned).await.expect("eval"), Num(9));
        assert_eq!(
            second.computed.load(Ordering::SeqCst),
            2,
            "a session value and a pruned one are computed"
        );
    }

    #[tokio::test]
    async fn a_failure_reaches_every_dependent_and_is_not_cached() {
        let dir = tempfile::tempdir().expect("dir");
        let toy = toy(&store(&dir));
        toy.fail.store(true, Ordering::SeqCst);
        let failing = call(&toy, None, "fail", 1);
        let child = call(&toy, Some(&failing), "add", 1);
        let mut events = toy.solver.subscribe();
        let err = eval(&toy, &child).await.expect_err("fails");
        assert_eq!(err.0, "failed on purpose");
        let kinds: Vec<EventKind> = std::iter::from_fn(|| events.try_recv().ok().map(|e| e.kind)).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Queued,
                EventKind::Queued,
                EventKind::Started,
                EventKind::Failed("failed on purpose".into())
            ],
            "both are queued, the first one runs and fails, its dependent never starts"
        );

        toy.fail.store(false, Ordering::SeqCst);
        assert_eq!(
            *eval(&toy, &child).await.expect("eval"),
            Num(2),
            "the failure was not kept"
        );
    }

    #[tokio::test]
    async fn events_describe_their_call_and_listeners_see_every_one() {
        let dir = tempfile::tempdir().expect("dir");
        let toy = toy(&store(&dir));
        let seen = Arc::new(Mutex::new(Vec::<Event>::new()));
        let sink = seen.clone();
        toy.solver
            .listen(Arc::new(move |e: &Event| sink.lock().push(e.clone())));
        toy.fail.store(true, Ordering::SeqCst);
        let base = call(&toy, None, "add", 1);
        let failing = call(&toy, Some(&base), "fail", 2);
        eval(&toy, &failing).await.expect_err("fails");
        let seen = seen.lock().clone();
        let summary: Vec<(String, EventKind, Option<String>, Vec<String>)> = seen
            .iter()
            .map(|e| {
                (
                    e.op.clone(),
                    e.kind.clone(),
                    e.info.as_ref().map(|i| i.detail.clone()),
                    e.info.as_ref().map(|i| i.inputs.clone()).unwrap_or_default(),
                )
            })
            .collect();
        let (b, f) = (short(&base), short(&failing));
        assert_eq!(
            summary[0],
            ("Query.add".into(), EventKind::Queued, Some("n=1".into()), vec![])
        );
        assert_eq!(
            summary[1],
            (
                "Num.fail".into(),
                EventKind::Queued,
                Some("n=2".into()),
                vec![b.clone()]
            )
        );
        assert_eq!(summary[2].1, EventKind::Started);
        assert!(matches!(summary[3].1, EventKind::Done(_)), "{summary:?}");
        assert_eq!(
            summary[3].2, None,
            "only queued, started and cached events carry a description"
        );
        assert_eq!(
            summary[4],
            ("Num.fail".into(), EventKind::Started, Some("n=2".into()), vec![b])
        );
        let failed = &seen[5];
        assert_eq!((failed.id.as_str(), failed.exit_code), (f.as_str(), Some(7)));
        assert_eq!(failed.kind, EventKind::Failed("failed on purpose".into()));
        assert_eq!(seen.len(), 6);
    }

    #[tokio::test]
    async fn an_unknown_object_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("dir");
        let toy = toy(&store(&dir));
        let err = eval(&toy, &Digest::of(b"nothing")).await.expect_err("unknown");
        assert!(err.0.contains("never created on this engine"), "{}", err.0);
    }

    #[tokio::test]
    async fn an_evaluation_nobody_awaits_is_cancelled_and_forgotten() {
        let dir = tempfile::tempdir().expect("dir");
        let toy = toy(&store(&dir));
        let d = call(&toy, None, "forever", 1);
        let mut events = toy.solver.subscribe();
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), eval(&toy, &d)).await;
        assert!(pending.is_err(), "it never ends");
        let kinds: Vec<EventKind> = std::iter::from_fn(|| events.try_recv().ok().map(|e| e.kind)).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Queued,
                EventKind::Started,
                EventKind::Failed("cancelled: no request waits for it any more".into())
            ]
        );
        assert!(toy.solver.in_flight.lock().is_empty());
        // A new request starts it again rather than joining the dropped one.
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), eval(&toy, &d)).await;
        assert!(again.is_err());
        assert_eq!(toy.computed.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_long_chain_is_evaluated_without_native_recursion() {
        let dir = tempfile::tempdir().expect("dir");
        let toy = toy(&store(&dir));
        let top = chain(&toy, 1_000);
        // A small stack: evaluating one level per call recursively would overflow it.
        let result = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
                rt.block_on(eval(&toy, &top)).map(|v| v.0)
            })
            .expect("thread")
            .join()
            .expect("no overflow");
        assert_eq!(result.expect("eval"), 1_000);
    }
}
