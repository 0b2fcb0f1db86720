//! The solver: the registry of calls (every object is the digest of the call that makes it), evaluation
//! with in-flight deduplication, the results cache (in memory and, for persistent values, on disk), and
//! progress events.
//!
//! It knows nothing of what the values are: it stores any [`Value`], and computes a call with the
//! [`Compute`] it is given, so the operations live above it.

pub mod events;
mod results;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use crate::model::error::FieldError;
use crate::model::ids::{Call, Digest};
use crate::solver::events::{Event, EventKind};
use crate::solver::results::Results;
use crate::store::Store;

/// A value the solver can keep: in memory, and on disk (as JSON under `results/`) when it is persistent.
pub trait Value: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Whether this result is worth keeping on disk across sessions.
    fn persistent(&self) -> bool;
    /// Whether a result loaded from disk can still be used (what it names may have been pruned).
    fn intact(&self, store: &Store) -> bool;
}

/// How a call is computed, once its inputs (parent and object arguments) are ready.
pub trait Compute<V>: Send + Sync {
    /// Computes the value of `call`.
    fn compute(self: Arc<Self>, call: Call) -> BoxFuture<'static, Result<V, FieldError>>;
}

type EvalResult<V> = Result<Arc<V>, FieldError>;
type EvalFuture<V> = Shared<BoxFuture<'static, EvalResult<V>>>;
/// An evaluation in flight, held weakly: it lives as long as some request awaits it, and is dropped (and so
/// stopped) when the last one is (its client went away).
type WeakEvalFuture<V> = WeakShared<BoxFuture<'static, EvalResult<V>>>;

/// The calls, results and evaluations of one engine.
pub struct Solver<V> {
    store: Store,
    calls: Mutex<HashMap<Digest, Call>>,
    results: Results<V>,
    in_flight: Mutex<HashMap<Digest, WeakEvalFuture<V>>>,
    events: broadcast::Sender<Event>,
}

impl<V: Value> Solver<V> {
    /// A solver keeping its calls and persistent results in `store`.
    pub fn new(store: Store) -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            store,
            calls: Mutex::default(),
            results: Results::default(),
            in_flight: Mutex::default(),
            events,
        }
    }

    /// Progress events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Sends an event to the subscribers of this moment.
    pub fn send(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Reports an event of a call.
    fn emit(&self, call: &Call, digest: &Digest, kind: EventKind) {
        // Name the operation after the type the field belongs to (`Directory.file`, `Query.container`).
        let owner = match &call.parent {
            None => "Query".to_owned(),
            Some(p) => self
                .call(p)
                .map(|c| c.type_name)
                .unwrap_or_else(|| call.type_name.clone()),
        };
        self.emit_event(&format!("{owner}.{}", call.field), digest, kind);
    }

    /// Reports an event of an operation that is not a call (a leaf that does work, such as `publish`).
    pub fn emit_event(&self, op: &str, digest: &Digest, kind: EventKind) {
        self.send(Event {
            op: op.to_owned(),
            id: digest.as_str()[..12].to_owned(),
            kind,
        });
    }

    /// Registers a call, returning its digest (the object's identity).
    pub fn register(&self, call: Call) -> Result<Digest, FieldError> {
        let d = call.digest();
        let known = self.calls.lock().map(|c| c.contains_key(&d)).unwrap_or(false);
        if !known {
            // A record already on disk (from an earlier session) is the same call: no need to write it again.
            if !self.store.has_json("calls", &d) {
                self.store.put_json("calls", &d, &call)?;
            }
            if let Ok(mut calls) = self.calls.lock() {
                calls.insert(d.clone(), call);
            }
        }
        Ok(d)
    }

    /// The call behind a digest, from memory or the cache directory.
    pub fn call(&self, d: &Digest) -> Option<Call> {
        if let Some(c) = self.calls.lock().ok().and_then(|c| c.get(d).cloned()) {
            return Some(c);
        }
        let c: Call = self.store.get_json("calls", d)?;
        if let Ok(mut calls) = self.calls.lock() {
            calls.insert(d.clone(), c.clone());
        }
        Some(c)
    }

    /// Records a result computed outside `eval` (eager host reads, records of a list).
    pub fn put_result(&self, d: &Digest, value: V) -> Result<Arc<V>, FieldError> {
        let persistent = value.persistent();
        if persistent {
            self.store.put_json("results", d, &value)?;
        }
        let v = Arc::new(value);
        self.results.remember(d, &v, persistent);
        Ok(v)
    }

    /// A result from memory or, reported as cached, from disk.
    fn ready(&self, d: &Digest, call: &Call) -> Option<Arc<V>> {
        if let Some(v) = self.results.get(d) {
            return Some(v);
        }
        let v = self
            .store
            .get_json::<V>("results", d)
            .filter(|v| v.intact(&self.store))?;
        self.emit(call, d, EventKind::Cached);
        let v = Arc::new(v);
        self.results.remember(d, &v, true);
        Some(v)
    }

    /// The objects `d` depends on that are not ready yet, dependencies first, found with an explicit stack
    /// (a chain of any length costs no native stack). Results found on disk on the way are loaded.
    fn missing_inputs(&self, d: &Digest) -> Result<Vec<(Digest, Call)>, FieldError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        seen.insert(d.clone());
        let root = self.call(d).ok_or_else(|| unknown(d))?;
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
            let call = self.call(&digest).ok_or_else(|| unknown(&digest))?;
            if let Some(v) = self.ready(&digest, &call) {
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
    pub fn eval(self: &Arc<Self>, d: &Digest, compute: Arc<dyn Compute<V>>) -> BoxFuture<'static, EvalResult<V>> {
        let this = self.clone();
        let d = d.clone();
        Box::pin(async move {
            if let Some(v) = this.results.get(&d) {
                return Ok(v);
            }
            let call = this.call(&d).ok_or_else(|| unknown(&d))?;
            if let Some(v) = this.ready(&d, &call) {
                return Ok(v);
            }
            let mut below = None;
            for (dep, dep_call) in this.missing_inputs(&d)? {
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
    async fn eval_one(self: &Arc<Self>, d: &Digest, call: Call, compute: &Arc<dyn Compute<V>>) -> EvalResult<V> {
        if let Some(v) = self.ready(d, &call) {
            return Ok(v);
        }
        let fut = {
            let Ok(mut in_flight) = self.in_flight.lock() else {
                return Err(FieldError::new("internal error: evaluation state is poisoned"));
            };
            // In flight entries are weak: an evaluation lives while a request awaits it, and is dropped
            // (its containers stopped) with the last one.
            match in_flight.get(d).and_then(WeakShared::upgrade) {
                Some(f) => f,
                None => {
                    let shared: EvalFuture<V> = self.clone().start(d.clone(), call, compute.clone()).shared();
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
        compute: Arc<dyn Compute<V>>,
    ) -> BoxFuture<'static, EvalResult<V>> {
        Box::pin(async move {
            self.emit(&call, &digest, EventKind::Started);
            let mut running = Running {
                solver: &self,
                call: &call,
                digest: &digest,
                finished: false,
            };
            let started = Instant::now();
            let result = compute.compute(call.clone()).await;
            running.finished = true;
            match &result {
                Ok(_) => self.emit(&call, &digest, EventKind::Done(started.elapsed().as_millis())),
                Err(e) => self.emit(&call, &digest, EventKind::Failed(e.message.clone())),
            }
            let result = match result {
                Ok(v) => self.put_result(&digest, v),
                Err(e) => Err(e),
            };
            if let Ok(mut f) = self.in_flight.lock() {
                f.remove(&digest);
            }
            result
        })
    }
}

/// An evaluation under way; dropped unfinished (no request waits for it any more), it reports the operation
/// as cancelled so progress displays do not wait for it, and forgets it.
struct Running<'a, V: Value> {
    solver: &'a Solver<V>,
    call: &'a Call,
    digest: &'a Digest,
    finished: bool,
}

impl<V: Value> Drop for Running<'_, V> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.solver.emit(
            self.call,
            self.digest,
            EventKind::Failed("cancelled: no request waits for it any more".into()),
        );
        if let Ok(mut f) = self.solver.in_flight.lock() {
            f.remove(self.digest);
        }
    }
}

fn unknown(d: &Digest) -> FieldError {
    FieldError::new(format!("unknown object `{d}`: it was never created on this engine"))
}
