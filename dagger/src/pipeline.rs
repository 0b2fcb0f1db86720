//! The runtime half of `pipeline!`: scheduling outputs into batched requests, running them, and mapping
//! failures back to the outputs, bindings and steps that caused them.
//!
//! A run is a small graph of requests, computed before anything is sent ([`Run::schedule`]):
//! - **Outputs** are grouped into requests by what they wait for and what waits for them: outputs that
//!   become ready at the same moment (they wait for the same requests) and are awaited by the same outputs
//!   share one document, with one aliased field each (`o0`, `o1`, …), so the engine evaluates them
//!   concurrently. A request is sent as soon as the requests it waits for are done, while others are still
//!   in flight; nothing waits for a whole "level".
//! - **Object IDs.** Object arguments whose IDs are unknown are asked for as aliased `id` fields
//!   (`a0: host { directory(path: ".") { id } }`). An ID rides along in the latest request that every
//!   request needing it waits for; when there is none, it goes into an ID round before everything else. An
//!   object whose own chain needs another unknown ID comes after it, which can add a round. An object that
//!   an earlier output returns (`sync`, `id`) needs no ID field.
//! - **Known IDs are reused.** A chain passing through an object whose ID a request it waits for made known
//!   starts there, with `node(id:)`, instead of repeating the chain that built the object.
//! - **Failures** skip only the outputs that wait for the failed one (directly or through others); with
//!   `fail_fast`, the first failure stops every request not sent yet.
//!
//! [`Plan`] prints the same documents offline, with placeholders (`<id:a0>`) where IDs would go.

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::core::{FromResponse, Leaf, Object, resolve_raw_response};
use crate::error::Error;
use crate::querybuilder::{IdMode, ObjectRef, Selection};
use crate::scalars::Id;
use crate::transport::{Client, GraphQlError, Response};

/// What `pipeline!` records about one output.
#[doc(hidden)]
#[derive(Debug)]
pub struct OutputMeta {
    /// The output's name.
    pub name: &'static str,
    /// The input or binding the leaf runs on.
    pub binding: &'static str,
    /// The step that made the binding (or `input `name``).
    pub step: &'static str,
    /// The leaf method.
    pub leaf: &'static str,
    /// The outputs (indexes in declaration order) this one waits for. Outputs of pipelines used in this one
    /// come after its own, numbered on from them.
    pub after: &'static [usize],
    /// Ranges `(first, count)` of outputs it waits for, all of them (`after checks` on a pipeline used in
    /// this one).
    pub after_ranges: &'static [(usize, usize)],
    /// The `for` loop the output is declared in (numbered from 1), or 0.
    pub each: usize,
}

impl OutputMeta {
    /// Whether this output waits for output `index` (numbered from its pipeline's first output).
    fn waits_for(&self, index: usize) -> bool {
        self.after.contains(&index)
            || self
                .after_ranges
                .iter()
                .any(|&(first, n)| (first..first + n).contains(&index))
    }
}

/// The outputs of one pipeline in a run: the run's own pipeline, or one used inside it (composition).
#[derive(Debug)]
struct Segment {
    /// The index of its first output among all the run's outputs.
    base: usize,
    meta: &'static PipelineMeta,
    /// The bindings that used it, outermost first (`["checks"]`); empty for the run's own pipeline.
    within: Vec<&'static str>,
}

/// What `pipeline!` records about a pipeline.
#[doc(hidden)]
#[derive(Debug)]
pub struct PipelineMeta {
    /// The pipeline's name.
    pub name: &'static str,
    /// Its outputs, in declaration order.
    pub outputs: &'static [OutputMeta],
    /// Whether the first failure stops every request not sent yet (`#[fail_fast]`).
    pub fail_fast: bool,
    /// Its graph, sent with the run's first request for the engine's report.
    pub graph: Option<&'static crate::Graph>,
}

/// A leaf with its value type erased, so outputs of different types share one schedule.
trait ErasedLeaf: Send {
    fn selection(&self) -> Selection;
    fn response_path(&self) -> Vec<&'static str>;
    fn decode_any(&self, value: serde_json::Value) -> Result<Box<dyn Any + Send>, Error>;
    fn known_any(&self) -> Option<Result<Box<dyn Any + Send>, Error>>;
    fn client(&self) -> Option<Client>;
    fn id_of(&self) -> Option<Selection>;
}

impl<T: Send + 'static> ErasedLeaf for Leaf<T> {
    fn selection(&self) -> Selection {
        Leaf::selection(self)
    }

    fn response_path(&self) -> Vec<&'static str> {
        Leaf::response_path(self)
    }

    fn decode_any(&self, value: serde_json::Value) -> Result<Box<dyn Any + Send>, Error> {
        self.decode(value).map(|v| Box::new(v) as Box<dyn Any + Send>)
    }

    fn known_any(&self) -> Option<Result<Box<dyn Any + Send>, Error>> {
        self.known().map(|r| r.map(|v| Box::new(v) as Box<dyn Any + Send>))
    }

    fn client(&self) -> Option<Client> {
        self.client_handle()
    }

    fn id_of(&self) -> Option<Selection> {
        Leaf::id_of(self).cloned()
    }
}

/// A typed handle on one output of a [`Run`].
#[doc(hidden)]
pub struct Handle<T> {
    index: usize,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Handle<T> {}

/// One output of a run: its leaf, where it came from, and the outputs it waits for.
struct Out {
    /// Its index among the run's outputs (declaration order, then the outputs of pipelines used in it).
    index: usize,
    /// The segment (pipeline) it belongs to.
    segment: usize,
    meta: &'static OutputMeta,
    /// The output's name (the leaf's field for [`Plan::of_leaf`]).
    name: &'static str,
    /// For an output of a `for` loop: the element's number and its key, printed (`"1.85"`).
    elem: Option<(usize, String)>,
    /// Output instances (indexes into `Run::outs`) it waits for; filled by [`Run::link`].
    waits: Vec<usize>,
    leaf: Box<dyn ErasedLeaf>,
    /// The GraphQL type of the object the leaf runs on (`Container`), when it is an object: a `sync` or `id`
    /// output then makes that object's ID known to the requests after it.
    target_type: Option<&'static str>,
    /// The bindings of the pipelines it was used through (see [`Segment::within`]).
    within: Vec<&'static str>,
}

impl Out {
    /// `tests`; for an element of a loop, `tests["1.85"]`; for an output of a pipeline used as `checks`,
    /// `checks.tests`.
    fn display_name(&self) -> String {
        let name = qualified(&self.within, self.name);
        match &self.elem {
            Some((_, key)) => format!("{name}[{key}]"),
            None => name,
        }
    }
}

/// `name`, prefixed by the bindings of the pipelines it was used through: `checks.clippy`.
fn qualified(within: &[&'static str], name: &str) -> String {
    let mut out = String::new();
    for w in within {
        out.push_str(w);
        out.push('.');
    }
    out.push_str(name);
    out
}

thread_local! {
    /// Whether runs made on this thread refer to objects whose IDs are known (see [`without_id_reuse`]).
    static REUSE_IDS: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Calls `f` with ID reuse turned off for the pipelines it schedules on this thread (a `plan()`, typically):
/// every document repeats the whole chain of each object, as before known IDs were reused, and IDs ride along
/// in the earliest request possible. For measuring what reuse saves; runs do not need it.
#[doc(hidden)]
pub fn without_id_reuse<T>(f: impl FnOnce() -> T) -> T {
    let before = REUSE_IDS.with(|r| r.replace(false));
    let out = f();
    REUSE_IDS.with(|r| r.set(before));
    out
}

/// The outputs of one pipeline run, scheduled and ready to execute or plan.
#[doc(hidden)]
pub struct Run {
    name: &'static str,
    fail_fast: bool,
    /// Whether documents refer to objects whose IDs are known by `node(id:)` (off in [`without_id_reuse`]).
    reuse_ids: bool,
    /// The pipelines whose outputs the run holds: its own first, then those used in it.
    segments: Vec<Segment>,
    outs: Vec<Out>,
    /// What each handle stands for.
    slots: Vec<Slot>,
    /// Work that needs the values of earlier outputs, built once they are known.
    deferred: Vec<Deferred>,
}

/// What a [`Handle`] stands for: an output, and where it is among the run's outputs once added.
#[derive(Clone, Debug)]
struct Slot {
    /// The output's index among the run's outputs (declaration order, then used pipelines').
    index: usize,
    /// Its position in `Run::outs`, once its leaf is added (a reserved output waits for [`Run::fill`]).
    pos: Option<usize>,
    /// For an output of a `for` loop reserved before its leaf is built: the element's number and key.
    elem: Option<(usize, String)>,
}

/// Steps and outputs that take the values of earlier outputs: a closure called with those values.
struct Deferred {
    /// The handles (slots) whose values it needs.
    needs: Vec<usize>,
    build: Option<DeferredFn>,
}

type DeferredFn = Box<dyn FnOnce(&mut Run, &Values<'_>) + Send>;

/// The values a deferred part of a pipeline reads: real ones during a run, placeholders in a plan.
#[doc(hidden)]
pub struct Values<'a> {
    values: Option<&'a [Option<Box<dyn Any + Send>>]>,
    slots: &'a [Slot],
}

impl Values<'_> {
    /// The value of the output behind `handle`: `None` when it failed or was not run (the parts it feeds are
    /// then not built); in a plan, a placeholder naming `name`.
    pub fn get<T: ValueArg>(&self, handle: Option<Handle<T>>, name: &'static str) -> Option<T> {
        let handle = handle?;
        let Some(values) = self.values else {
            return Some(T::placeholder(name));
        };
        let pos = self.slots.get(handle.index)?.pos?;
        values.get(pos)?.as_ref()?.downcast_ref::<T>().cloned()
    }
}

/// `values.get(handle, name)`, as a function whose call `pipeline!` places on the output's name.
#[doc(hidden)]
pub fn value_of<T: ValueArg>(values: &Values<'_>, handle: Option<Handle<T>>, name: &'static str) -> Option<T> {
    values.get(handle, name)
}

/// What holds the handle(s) of one output in a run, by where the output is declared: a [`Handle`] (in the
/// pipeline's body), an `Option` of one (in `if` blocks: `None` when a condition is false), a list of
/// `(element, key, handle)` (in a `for` loop), or an `Option` of such a list (a loop inside `if` blocks).
#[doc(hidden)]
pub trait Handles<T> {
    /// The handle of the instance of element `elem` (any element number outside loops).
    fn at(&self, elem: usize) -> Option<Handle<T>>;
    /// The slots of every instance, for [`Run::defer`].
    fn slots(&self) -> Vec<usize>;
}

impl<T> Handles<T> for Handle<T> {
    fn at(&self, _: usize) -> Option<Handle<T>> {
        Some(*self)
    }

    fn slots(&self) -> Vec<usize> {
        vec![self.index]
    }
}

impl<T, H: Handles<T>> Handles<T> for Option<H> {
    fn at(&self, elem: usize) -> Option<Handle<T>> {
        self.as_ref().and_then(|h| h.at(elem))
    }

    fn slots(&self) -> Vec<usize> {
        self.as_ref().map(Handles::slots).unwrap_or_default()
    }
}

impl<T, K> Handles<T> for Vec<(usize, K, Handle<T>)> {
    fn at(&self, elem: usize) -> Option<Handle<T>> {
        self.iter().find(|(e, _, _)| *e == elem).map(|(_, _, h)| *h)
    }

    fn slots(&self) -> Vec<usize> {
        self.iter().map(|(_, _, h)| h.index).collect()
    }
}

/// The handle of element `elem`'s instance of an output (see [`Handles`]).
#[doc(hidden)]
pub fn handle_at<T, H: Handles<T>>(handles: &H, elem: usize) -> Option<Handle<T>> {
    handles.at(elem)
}

/// The slots of every instance of an output (see [`Handles`]).
#[doc(hidden)]
pub fn slots_of<T, H: Handles<T>>(handles: &H) -> Vec<usize> {
    handles.slots()
}

/// The value a binding of a block had for element `elem` (0 outside loops) in an earlier wave, if it was
/// built: how a later wave of a pipeline finds the objects of each element again.
#[doc(hidden)]
pub fn restore<T: Clone>(state: &std::collections::BTreeMap<usize, T>, elem: usize) -> Option<T> {
    state.get(&elem).cloned()
}

/// Leaf values that can feed a later step: the run waits for them; a plan prints a placeholder.
#[diagnostic::on_unimplemented(
    message = "the value of an output of type `{Self}` cannot be a step argument",
    label = "not a plain value",
    note = "values that can feed a step: `String`, integers, `bool`, `Vec<String>`; for an object (`sync`), pass \
            the binding itself"
)]
pub trait ValueArg: Clone + Send + 'static {
    /// What a plan shows in its place.
    fn placeholder(name: &'static str) -> Self;
}

impl ValueArg for String {
    fn placeholder(name: &'static str) -> Self {
        format!("<value:{name}>")
    }
}

impl ValueArg for bool {
    fn placeholder(_: &'static str) -> Self {
        false
    }
}

impl ValueArg for Vec<String> {
    fn placeholder(name: &'static str) -> Self {
        vec![format!("<value:{name}>")]
    }
}

macro_rules! int_values {
    ($($t:ty),*) => {$(
        impl ValueArg for $t {
            fn placeholder(_: &'static str) -> Self {
                0
            }
        }
    )*};
}
int_values!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

/// One scheduled request: the IDs it resolves, the outputs it evaluates, and the requests it waits for.
#[derive(Clone, Debug)]
struct Req {
    /// `resolve object IDs (round 1)`, `tests, lint`.
    title: String,
    /// `(alias, object)` of each ID field.
    ids: Vec<(String, ObjectRef)>,
    /// The output indexes it evaluates (aliased `o<index>`).
    outputs: Vec<usize>,
    /// The requests (indexes) that must be done before this one is sent.
    after: Vec<usize>,
}

/// An object whose ID a request makes known: an ID field, or an output returning its target's ID (`sync`,
/// `id`).
#[derive(Clone, Debug)]
struct Provide {
    object: ObjectRef,
    /// The field whose answer holds the ID (`a2`, `o0`), which plans print as `<id:a2>`.
    alias: String,
}

/// One aliased field of a document as it is sent: the selection (shortened to start at an object whose ID
/// is known) and where its value is in the answer.
struct Field {
    alias: String,
    /// What it serves, for the engine's progress (the output's name); ID fields serve no one output.
    serves: Option<String>,
    selection: Selection,
    /// The response keys from the alias's value down to the value read (the alias itself excluded).
    path: Vec<&'static str>,
}

/// `(alias, object)` of the ID fields of one request.
type IdFields = Vec<(String, ObjectRef)>;

/// Where an object's ID is asked for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Carrier {
    /// An ID round of its own, before any output (`round` from 0).
    Round(usize),
    /// Riding along in the request of an output group.
    Group(usize),
}

/// The pipeline of [`Plan::of_leaf`]: one output, no edges.
static LEAF_META: PipelineMeta = PipelineMeta {
    name: "leaf",
    outputs: &[OutputMeta {
        name: "value",
        binding: "value",
        step: "leaf",
        leaf: "leaf",
        after: &[],
        after_ranges: &[],
        each: 0,
    }],
    fail_fast: false,
    graph: None,
};

impl Run {
    /// An empty run of the pipeline described by `meta`.
    pub fn new(meta: &'static PipelineMeta) -> Self {
        Self {
            name: meta.name,
            fail_fast: meta.fail_fast,
            reuse_ids: REUSE_IDS.with(std::cell::Cell::get),
            segments: vec![Segment {
                base: 0,
                meta,
                within: Vec::new(),
            }],
            outs: Vec::new(),
            slots: Vec::new(),
            deferred: Vec::new(),
        }
    }

    /// Makes room for the outputs of a pipeline used in the one of segment `scope` (as its binding `label`),
    /// numbered from `first` on (counted from that pipeline's first output); returns its segment, which its
    /// outputs are added to.
    pub fn compose(&mut self, scope: usize, first: usize, meta: &'static PipelineMeta, label: &'static str) -> usize {
        let (base, mut within) = match self.segments.get(scope) {
            Some(s) => (s.base + first, s.within.clone()),
            None => (first, Vec::new()),
        };
        within.push(label);
        self.segments.push(Segment { base, meta, within });
        self.segments.len() - 1
    }

    /// The segment holding output `index`, and the output's meta.
    fn locate(&self, index: usize) -> (usize, &'static OutputMeta) {
        for (k, seg) in self.segments.iter().enumerate() {
            if let Some(meta) = index.checked_sub(seg.base).and_then(|i| seg.meta.outputs.get(i)) {
                return (k, meta);
            }
        }
        (0, &LEAF_META.outputs[0])
    }

    /// The index of output `index` of segment `scope` among all the run's outputs.
    fn index_in(&self, scope: usize, index: usize) -> usize {
        self.segments.get(scope).map_or(0, |s| s.base) + index
    }

    /// A handle for output `index` of segment `scope`, whose leaf a deferred part adds later with
    /// [`Run::fill`].
    pub fn reserve<T: Send + 'static>(&mut self, scope: usize, index: usize) -> Handle<T> {
        self.reserve_slot(scope, index, None)
    }

    /// [`Run::reserve`] for the instance of element number `elem` of a `for` loop, keyed `key`.
    pub fn reserve_each<T: Send + 'static, K: fmt::Debug>(
        &mut self,
        scope: usize,
        index: usize,
        elem: usize,
        key: &K,
    ) -> Handle<T> {
        self.reserve_slot(scope, index, Some((elem, format!("{key:?}"))))
    }

    fn reserve_slot<T: Send + 'static>(
        &mut self,
        scope: usize,
        index: usize,
        elem: Option<(usize, String)>,
    ) -> Handle<T> {
        let index = self.index_in(scope, index);
        self.slots.push(Slot { index, pos: None, elem });
        Handle {
            index: self.slots.len() - 1,
            _type: std::marker::PhantomData,
        }
    }

    /// Adds the leaf of a reserved output; `target_type` is the GraphQL type of the object it runs on.
    pub fn fill<T: Send + 'static>(&mut self, handle: &Handle<T>, target_type: Option<&'static str>, leaf: Leaf<T>) {
        let Some(Slot {
            index, pos: None, elem, ..
        }) = self.slots.get(handle.index).cloned()
        else {
            return;
        };
        self.push(index, elem, target_type, leaf);
        self.slots.pop();
        let pos = self.outs.len() - 1;
        if let Some(slot) = self.slots.get_mut(handle.index) {
            slot.pos = Some(pos);
        }
    }

    /// Registers work that needs the values behind `needs`; `build` adds its outputs with [`Run::fill`].
    pub fn defer(&mut self, needs: Vec<usize>, build: impl FnOnce(&mut Run, &Values<'_>) + Send + 'static) {
        self.deferred.push(Deferred {
            needs,
            build: Some(Box::new(build)),
        });
    }

    /// The slot of a handle, for [`Run::defer`].
    pub fn slot<T>(handle: &Handle<T>) -> usize {
        handle.index
    }

    /// Adds output number `index` (in declaration order) of segment `scope`; `target_type` is the GraphQL
    /// type of the object its leaf runs on (see [`TypeOf`](crate::__private::TypeOf)).
    pub fn add<T: Send + 'static>(
        &mut self,
        scope: usize,
        index: usize,
        target_type: Option<&'static str>,
        leaf: Leaf<T>,
    ) -> Handle<T> {
        let index = self.index_in(scope, index);
        self.push(index, None, target_type, leaf)
    }

    /// Adds the instance of output `index` of segment `scope` for element number `elem` of its `for` loop,
    /// keyed `key`.
    pub fn add_each<T: Send + 'static, K: fmt::Debug>(
        &mut self,
        scope: usize,
        index: usize,
        elem: usize,
        key: &K,
        target_type: Option<&'static str>,
        leaf: Leaf<T>,
    ) -> Handle<T> {
        let index = self.index_in(scope, index);
        self.push(index, Some((elem, format!("{key:?}"))), target_type, leaf)
    }

    fn push<T: Send + 'static>(
        &mut self,
        index: usize,
        elem: Option<(usize, String)>,
        target_type: Option<&'static str>,
        leaf: Leaf<T>,
    ) -> Handle<T> {
        let (segment, meta) = self.locate(index);
        let within = self.segments.get(segment).map(|s| s.within.clone()).unwrap_or_default();
        self.outs.push(Out {
            index,
            segment,
            within,
            meta,
            name: meta.name,
            elem,
            waits: Vec::new(),
            leaf: Box::new(leaf),
            target_type,
        });
        self.slots.push(Slot {
            index,
            pos: Some(self.outs.len() - 1),
            elem: None,
        });
        Handle {
            index: self.slots.len() - 1,
            _type: std::marker::PhantomData,
        }
    }

    /// Resolves `after` edges between outputs into edges between instances: an output of a loop waits for
    /// the instance of the same element when both are in that loop, and for every instance otherwise.
    fn link(&mut self) {
        // Declaration order (then element order), whatever order the expansion added them in: aliases and
        // plans read in the order the pipeline is written.
        let mut order: Vec<usize> = (0..self.outs.len()).collect();
        order.sort_by_key(|&i| (self.outs[i].index, self.outs[i].elem.as_ref().map(|e| e.0)));
        let mut moved = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            moved[old] = new;
        }
        let mut outs: Vec<Option<Out>> = std::mem::take(&mut self.outs).into_iter().map(Some).collect();
        self.outs = order.iter().filter_map(|&i| outs[i].take()).collect();
        for slot in &mut self.slots {
            slot.pos = slot.pos.and_then(|p| moved.get(p).copied());
        }
        self.link_from(0);
    }

    /// Links the outputs from position `start` on (those added by a deferred part).
    fn link_from(&mut self, start: usize) {
        let all: Vec<(usize, (usize, usize), Option<usize>)> = self
            .outs
            .iter()
            .map(|o| (o.index, (o.segment, o.meta.each), o.elem.as_ref().map(|e| e.0)))
            .collect();
        let bases: Vec<usize> = self.segments.iter().map(|s| s.base).collect();
        for o in self.outs.iter_mut().skip(start) {
            let mine = o.elem.as_ref().map(|e| e.0);
            let base = bases.get(o.segment).copied().unwrap_or(0);
            let each = (o.segment, o.meta.each);
            o.waits = all
                .iter()
                .enumerate()
                .filter(|(_, (index, theirs, elem))| {
                    // A loop's outputs pair by element only with outputs of the same loop of the same pipeline.
                    let waits = index.checked_sub(base).is_some_and(|i| o.meta.waits_for(i));
                    waits && (theirs.1 == 0 || *theirs != each || *elem == mine)
                })
                .map(|(j, _)| j)
                .collect();
        }
    }

    /// The requests of a run, in an order where each comes after the ones it waits for.
    fn schedule(&self) -> Vec<Req> {
        self.schedule_from(0, &[], 0, &[], 0, &[])
    }

    /// The requests for the outputs from position `start` on, numbered from `base`: `req_of` gives the
    /// request of each earlier output, and `batch_after` what the whole batch waits for (the requests that
    /// produced the values it was built with).
    fn schedule_from(
        &self,
        start: usize,
        req_of: &[Option<usize>],
        base: usize,
        batch_after: &[usize],
        alias_base: usize,
        known: &[(ObjectRef, usize)],
    ) -> Vec<Req> {
        // Objects an earlier request asks for are not asked again; the batch waits for that request.
        let mut batch_after = batch_after.to_vec();
        let n = self.outs.len();
        let pending: Vec<bool> = self
            .outs
            .iter()
            .enumerate()
            .map(|(i, o)| i >= start && o.leaf.known_any().is_none())
            .collect();
        // Depth: 0 for outputs that wait for nothing (the graph is acyclic: the macro checked it).
        let mut depth = vec![0usize; n];
        for _ in 0..=n {
            let mut changed = false;
            for i in 0..n {
                let d = self.outs[i]
                    .waits
                    .iter()
                    .map(|&w| depth.get(w).map_or(0, |d| d + 1))
                    .max();
                let d = d.unwrap_or(0);
                if d != depth[i] {
                    depth[i] = d;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        // Who waits for an output, as declared outputs (those not added yet included): the instances of one
        // loop output share requests.
        let dependents: Vec<BTreeSet<usize>> = self
            .outs
            .iter()
            .map(|o| {
                self.segments
                    .iter()
                    .flat_map(|seg| {
                        seg.meta.outputs.iter().enumerate().filter_map(move |(k, m)| {
                            let waits = o.index.checked_sub(seg.base).is_some_and(|i| m.waits_for(i));
                            waits.then_some(seg.base + k)
                        })
                    })
                    .collect()
            })
            .collect();
        // Group outputs: same requests waited for, same (declared) outputs waiting for them.
        let mut order: Vec<usize> = (0..n).filter(|&i| pending[i]).collect();
        order.sort_by_key(|&i| (depth[i], i));
        let mut group_of: Vec<Option<usize>> = vec![None; n];
        let mut keys: Vec<(BTreeSet<usize>, BTreeSet<usize>)> = Vec::new();
        let mut outside: Vec<BTreeSet<usize>> = Vec::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for i in order {
            let prereqs: BTreeSet<usize> = self.outs[i]
                .waits
                .iter()
                .filter_map(|&w| group_of.get(w).copied().flatten())
                .collect();
            // Requests of earlier batches this output waits for.
            let earlier: BTreeSet<usize> = self.outs[i]
                .waits
                .iter()
                .filter(|&&w| w < start)
                .filter_map(|&w| req_of.get(w).copied().flatten())
                .collect();
            let key = (prereqs, dependents[i].clone());
            let key_outside = earlier;
            let g = match keys
                .iter()
                .zip(&outside)
                .position(|(k, o)| *k == key && *o == key_outside)
            {
                Some(g) => g,
                None => {
                    keys.push(key);
                    outside.push(key_outside);
                    groups.push(Vec::new());
                    groups.len() - 1
                }
            };
            groups[g].push(i);
            group_of[i] = Some(g);
        }
        // Every request each group transitively waits for (groups are created after their prerequisites).
        let mut ancestors: Vec<BTreeSet<usize>> = Vec::with_capacity(groups.len());
        for (prereqs, _) in &keys {
            let mut all = prereqs.clone();
            for &p in prereqs {
                all.extend(ancestors[p].iter().copied());
            }
            ancestors.push(all);
        }

        // Every unresolved object, transitively, with the objects it needs and the groups that need it.
        let mut all: Vec<ObjectRef> = Vec::new();
        let mut need: Vec<BTreeSet<usize>> = Vec::new();
        let find = |all: &[ObjectRef], o: &ObjectRef| all.iter().position(|x| x.selection.same_as(&o.selection));
        // Objects whose IDs the outputs of each group return (`sync`, `id`): a group after it passes them by
        // that ID, with no ID field of their own.
        let returned: Vec<Vec<Selection>> = groups
            .iter()
            .map(|members| {
                members
                    .iter()
                    .filter_map(|&i| self.returned_id(i))
                    .map(|p| p.selection)
                    .collect()
            })
            .collect();
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                let mut seen: Vec<usize> = Vec::new();
                let mut stack: Vec<(ObjectRef, bool)> = self.outs[i]
                    .leaf
                    .selection()
                    .unresolved_objects()
                    .into_iter()
                    .map(|o| (o, true))
                    .collect();
                while let Some((obj, direct)) = stack.pop() {
                    if let Some((_, r)) = known.iter().find(|(o, _)| o.selection.same_as(&obj.selection)) {
                        batch_after.push(*r);
                        continue;
                    }
                    // (Only for the output's own arguments: an object argument's chain is printed in the
                    // request that asks for its ID, which may come before that group.)
                    let returned_before = ancestors[g]
                        .iter()
                        .any(|&a| returned[a].iter().any(|s| s.same_as(&obj.selection)));
                    if direct && returned_before {
                        continue;
                    }
                    let k = match find(&all, &obj) {
                        Some(k) => k,
                        None => {
                            all.push(obj.clone());
                            need.push(BTreeSet::new());
                            all.len() - 1
                        }
                    };
                    need[k].insert(g);
                    if !seen.contains(&k) {
                        seen.push(k);
                        stack.extend(obj.selection.unresolved_objects().into_iter().map(|o| (o, false)));
                    }
                }
            }
        }
        let deps: Vec<Vec<usize>> = all
            .iter()
            .map(|o| {
                o.selection
                    .unresolved_objects()
                    .iter()
                    .filter_map(|d| find(&all, d))
                    .collect()
            })
            .collect();
        let mut odepth = vec![0usize; all.len()];
        for _ in 0..=all.len() {
            let mut changed = false;
            for k in 0..all.len() {
                let d = deps[k].iter().map(|&j| odepth[j] + 1).max().unwrap_or(0);
                if d != odepth[k] {
                    odepth[k] = d;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut by_depth: Vec<usize> = (0..all.len()).collect();
        by_depth.sort_by_key(|&k| (odepth[k], k));
        // The latest request that every group needing the object waits for, after the object's own needs: the
        // later it is asked for, the more of its chain is known by ID by then (and can be written `node(id:)`).
        let mut carrier = vec![Carrier::Round(0); all.len()];
        for &k in &by_depth {
            let mut common: Option<BTreeSet<usize>> = None;
            for &g in &need[k] {
                common = Some(match common {
                    None => ancestors[g].clone(),
                    Some(c) => c.intersection(&ancestors[g]).copied().collect(),
                });
            }
            let found = common
                .unwrap_or_default()
                .into_iter()
                .filter(|&r| {
                    deps[k].iter().all(|&p| match carrier[p] {
                        Carrier::Round(_) => true,
                        Carrier::Group(q) => ancestors[r].contains(&q),
                    })
                })
                .max_by_key(|&r| {
                    // (Without reuse: the first one.)
                    if self.reuse_ids {
                        (ancestors[r].len(), r)
                    } else {
                        (0, usize::MAX - r)
                    }
                });
            carrier[k] = found.map_or(Carrier::Round(0), Carrier::Group);
        }
        // An object in an ID round needs its own objects in earlier rounds.
        for &k in by_depth.iter().rev() {
            if matches!(carrier[k], Carrier::Round(_)) {
                for &p in &deps[k] {
                    carrier[p] = Carrier::Round(0);
                }
            }
        }
        let mut rounds = 0;
        for &k in &by_depth {
            if matches!(carrier[k], Carrier::Round(_)) {
                let r = deps[k]
                    .iter()
                    .filter_map(|&p| match carrier[p] {
                        Carrier::Round(r) => Some(r + 1),
                        Carrier::Group(_) => None,
                    })
                    .max()
                    .unwrap_or(0);
                carrier[k] = Carrier::Round(r);
                rounds = rounds.max(r + 1);
            }
        }

        batch_after.sort_unstable();
        batch_after.dedup();
        let batch_after = &batch_after[..];
        let mut reqs: Vec<Req> = (0..rounds)
            .map(|r| Req {
                title: format!("resolve object IDs (round {})", r + 1),
                ids: Vec::new(),
                outputs: Vec::new(),
                after: if r == 0 {
                    batch_after.to_vec()
                } else {
                    vec![base + r - 1]
                },
            })
            .collect();
        for (g, members) in groups.iter().enumerate() {
            // `tests × 3` for the instances of a loop output.
            let mut names: Vec<String> = Vec::new();
            let mut k = 0;
            while k < members.len() {
                let out = &self.outs[members[k]];
                let same = members[k..]
                    .iter()
                    .take_while(|&&j| self.outs[j].index == out.index && self.outs[j].elem.is_some())
                    .count();
                if same > 0 {
                    names.push(format!("{} × {same}", qualified(&out.within, out.name)));
                    k += same;
                } else {
                    names.push(out.display_name());
                    k += 1;
                }
            }
            let mut after: Vec<usize> = keys[g].0.iter().map(|&p| base + p + rounds).collect();
            after.extend(outside[g].iter().copied());
            if keys[g].0.is_empty() {
                if rounds > 0 {
                    after.push(base + rounds - 1);
                } else {
                    after.extend(batch_after.iter().copied());
                }
            }
            after.sort_unstable();
            after.dedup();
            reqs.push(Req {
                title: names.join(", "),
                ids: Vec::new(),
                outputs: members.clone(),
                after,
            });
        }
        // Aliases by request, then depth, so they read in a natural order.
        let request_of = |k: usize| match carrier[k] {
            Carrier::Round(r) => r,
            Carrier::Group(g) => g + rounds,
        };
        let mut alias_order: Vec<usize> = (0..all.len()).rev().collect();
        alias_order.sort_by_key(|&k| (request_of(k), odepth[k]));
        for (a, k) in alias_order.into_iter().enumerate() {
            reqs[request_of(k)]
                .ids
                .push((format!("a{}", alias_base + a), all[k].clone()));
        }
        for r in reqs.iter_mut().skip(rounds) {
            if !r.ids.is_empty() {
                r.title.push_str(" (and object IDs for later requests)");
            }
        }
        reqs
    }

    /// The object whose ID output `i` returns (`sync` or `id` on an object), with its type.
    fn returned_id(&self, i: usize) -> Option<ObjectRef> {
        if !self.reuse_ids {
            return None;
        }
        let out = self.outs.get(i)?;
        Some(ObjectRef {
            type_name: out.target_type?,
            selection: out.leaf.id_of()?,
        })
    }

    /// The objects whose IDs a request makes known: its ID fields, and the objects its outputs return.
    fn provides(&self, req: &Req) -> Vec<Provide> {
        let ids = req.ids.iter().map(|(alias, object)| Provide {
            object: object.clone(),
            alias: alias.clone(),
        });
        let outs = req.outputs.iter().filter_map(|&i| {
            Some(Provide {
                object: self.returned_id(i)?,
                alias: format!("o{i}"),
            })
        });
        ids.chain(outs).collect()
    }

    /// The objects whose IDs are known when request `r` is sent: what the requests it waits for, directly or
    /// not, provide.
    fn available(&self, reqs: &[Req], r: usize) -> Vec<Provide> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = reqs.get(r).map(|q| q.after.clone()).unwrap_or_default();
        let mut out = Vec::new();
        while let Some(a) = stack.pop() {
            if !seen.insert(a) {
                continue;
            }
            if let Some(req) = reqs.get(a) {
                out.extend(self.provides(req));
                stack.extend(req.after.iter().copied());
            }
        }
        out
    }

    /// The fields of request `r` for the IDs `ids` and the outputs `outputs` (all of the request, or the part
    /// still worth sending). Each chain starts at the deepest object whose ID is known by then, loaded with
    /// `node(id:)`, instead of repeating the chain that built it: with the ID itself in a run (`resolved`),
    /// with a placeholder naming the field that returns it in a plan (`<id:o0>`).
    fn fields(&self, known: &[Provide], ids: &[(String, ObjectRef)], outputs: &[usize], resolved: bool) -> Vec<Field> {
        let shorten = |full: Selection| -> Selection {
            if !self.reuse_ids {
                return full;
            }
            for prefix in full.prefixes() {
                let Some(p) = known.iter().find(|p| p.object.selection.same_as(&prefix)) else {
                    continue;
                };
                let id = match (resolved, prefix.known_id()) {
                    (false, _) => Id::from(format!("<id:{}>", p.alias)),
                    (true, Some(id)) => id.clone(),
                    // Not known after all (what returns it failed): a shorter prefix, or the whole chain.
                    (true, None) => continue,
                };
                if let Some(rebased) = full.rebase(&prefix, Selection::load(p.object.type_name, id)) {
                    return rebased;
                }
            }
            full
        };
        let ids = ids.iter().map(|(alias, o)| {
            let selection = shorten(o.selection.select("id", vec![]));
            Field {
                alias: alias.clone(),
                serves: None,
                path: selection.path(),
                selection,
            }
        });
        let outs = outputs.iter().map(|&i| {
            let leaf = &self.outs[i].leaf;
            let full = leaf.selection();
            // Fields below the leaf's own (`{id}` of a list of objects) are not part of the value's path.
            let below = full.path().len().saturating_sub(leaf.response_path().len());
            let selection = shorten(full);
            let mut path = selection.path();
            path.truncate(path.len().saturating_sub(below));
            Field {
                alias: format!("o{i}"),
                serves: Some(self.outs[i].display_name()),
                selection,
                path,
            }
        });
        ids.chain(outs).collect()
    }

    /// The documents `execute` would send, printed offline.
    pub fn plan(mut self) -> Plan {
        self.link();
        let mut reqs = self.schedule();
        let mut req_of = requests_of(&reqs, self.outs.len());
        // Deferred parts are built with placeholders, in the order a run builds them.
        let mut k = 0;
        while k < self.deferred.len() {
            self.fire(k, None, &mut reqs, &mut req_of);
            k += 1;
        }
        let aliases: Vec<(Selection, String)> = reqs
            .iter()
            .flat_map(|d| d.ids.iter())
            .map(|(alias, o)| (o.selection.clone(), format!("<id:{alias}>")))
            .collect();
        let documents = reqs
            .iter()
            .enumerate()
            .map(|(r, d)| {
                let known = self.available(&reqs, r);
                // An object argument prints as the field that makes its ID known to this request.
                let placeholder = |o: &ObjectRef| {
                    let mine = known.iter().find(|p| p.object.selection.same_as(&o.selection));
                    match mine {
                        Some(p) => format!("<id:{}>", p.alias),
                        None => aliases
                            .iter()
                            .find(|(s, _)| s.same_as(&o.selection))
                            .map(|(_, a)| a.clone())
                            .unwrap_or_else(|| "<id:?>".to_owned()),
                    }
                };
                let ids = IdMode::Placeholder(&placeholder);
                let fields = self.fields(&known, &d.ids, &d.outputs, false);
                PlanDocument {
                    title: d.title.clone(),
                    after: d.after.iter().map(|a| a + 1).collect(),
                    query: print_doc(&fields, ids, false),
                    pretty: print_doc(&fields, ids, true),
                }
            })
            .collect();
        Plan {
            pipeline: self.name,
            documents,
        }
    }

    /// Sends every request as soon as the ones it waits for are done, and collects what each output produced.
    pub async fn execute(mut self) -> Results {
        self.link();
        let mut results = Results {
            pipeline: self.name,
            names: Vec::new(),
            values: Vec::new(),
            failed: Vec::new(),
            failures: Vec::new(),
            skipped: Vec::new(),
            unsent: Vec::new(),
            slots: Vec::new(),
        };
        results.grow(&self);
        let Some(client) = self.outs.iter().find_map(|o| o.leaf.client()) else {
            if !self.outs.is_empty() && results.values.iter().any(Option::is_none) {
                results.fail(0, Error::NotConnected);
                results.skip_rest();
            }
            results.finish(&self);
            return results;
        };
        let mut reqs = self.schedule();
        let mut req_of = requests_of(&reqs, self.outs.len());
        let mut state = vec![ReqState::Waiting; reqs.len()];
        let mut sent: Vec<Sent> = vec![Sent::default(); reqs.len()];
        let mut in_flight: FuturesUnordered<RequestFuture> = FuturesUnordered::new();
        let mut stopped = false;
        // The pipeline's graph rides along with the first request, for the engine's report.
        let mut graph = self.segments[0].meta.graph.map(crate::Graph::report_json);
        loop {
            // Build the deferred parts whose values are all decided (arrived, failed or not run): each part
            // of them is built only where the values it reads arrived, the rest is reported as not run.
            if !stopped {
                for k in 0..self.deferred.len() {
                    if self.deferred[k].build.is_none() {
                        continue;
                    }
                    let pos = |slot: &usize| self.slots.get(*slot).and_then(|s| s.pos);
                    let ready = self.deferred[k]
                        .needs
                        .iter()
                        .map(pos)
                        .all(|p| p.is_none_or(|p| results.decided(p)));
                    if ready {
                        self.fire(k, Some(&results.values), &mut reqs, &mut req_of);
                        results.grow(&self);
                        state.resize(reqs.len(), ReqState::Waiting);
                        sent.resize(reqs.len(), Sent::default());
                    }
                }
            }
            // Send everything whose prerequisites are done; a request left with nothing to ask is done at once.
            let mut progressed = true;
            while progressed && !stopped {
                progressed = false;
                for r in 0..reqs.len() {
                    if state[r] != ReqState::Waiting || !reqs[r].after.iter().all(|&a| state[a] == ReqState::Done) {
                        continue;
                    }
                    progressed = true;
                    let (ids, outputs) = self.live_parts(&reqs[r], &mut results);
                    if ids.is_empty() && outputs.is_empty() {
                        state[r] = ReqState::Done;
                        continue;
                    }
                    let fields = self.fields(&self.available(&reqs, r), &ids, &outputs, true);
                    sent[r] = Sent {
                        ids,
                        outputs,
                        paths: fields.iter().map(|f| f.path.clone()).collect(),
                    };
                    state[r] = ReqState::Running;
                    match print_resolved(&fields) {
                        Ok(query) => {
                            let mut ext = serves(&fields);
                            if let Some(graph) = graph.take() {
                                ext.insert("pipeline".into(), graph);
                            }
                            in_flight.push(send(client.clone(), query, ext, Job::Main(r)));
                        }
                        Err(e) => {
                            results.fail_doc(&sent[r].ids, &sent[r].outputs, e, &self);
                            state[r] = ReqState::Done;
                        }
                    }
                }
                if self.fail_fast && !results.failures.is_empty() {
                    stopped = true;
                }
            }
            let Some((job, response)) = in_flight.next().await else {
                break;
            };
            match job {
                Job::Main(r) => {
                    let Sent { ids, outputs, paths } = &sent[r];
                    match response {
                        Ok(response) => {
                            let lost = results.read(ids, outputs, paths, response, &self);
                            if lost.is_empty() {
                                state[r] = ReqState::Done;
                            } else {
                                // The siblings of a failure, asked for once more, alone.
                                let fields = self.fields(&self.available(&reqs, r), &[], &lost, true);
                                let paths = fields.iter().map(|f| f.path.clone()).collect();
                                match print_resolved(&fields) {
                                    Ok(query) => {
                                        let serves = serves(&fields);
                                        in_flight.push(send(
                                            client.clone(),
                                            query,
                                            serves,
                                            Job::Recover(r, lost, paths),
                                        ));
                                    }
                                    Err(e) => {
                                        results.fail_many(lost, e);
                                        state[r] = ReqState::Done;
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            results.fail_doc(ids, outputs, e, &self);
                            state[r] = ReqState::Done;
                        }
                    }
                }
                Job::Recover(r, lost, paths) => {
                    match response {
                        Ok(response) => {
                            for i in results.read(&[], &lost, &paths, response, &self) {
                                let path = format!("o{i}");
                                results.fail(i, Error::MissingData { path });
                            }
                        }
                        Err(e) => results.fail_doc(&[], &lost, e, &self),
                    }
                    state[r] = ReqState::Done;
                }
            }
            if self.fail_fast && !results.failures.is_empty() {
                stopped = true;
            }
        }
        results.skip_rest();
        results.finish(&self);
        results
    }

    /// Builds deferred part `k` with `values` (placeholders when `None`), and schedules what it added after
    /// the requests that produced those values.
    fn fire(
        &mut self,
        k: usize,
        values: Option<&[Option<Box<dyn Any + Send>>]>,
        reqs: &mut Vec<Req>,
        req_of: &mut Vec<Option<usize>>,
    ) {
        let Some(build) = self.deferred.get_mut(k).and_then(|d| d.build.take()) else {
            return;
        };
        let start = self.outs.len();
        let slots = self.slots.clone();
        build(self, &Values { values, slots: &slots });
        self.link_from(start);
        let needs = self.deferred[k].needs.clone();
        let positions: Vec<usize> = needs
            .iter()
            .filter_map(|s| self.slots.get(*s).and_then(|s| s.pos))
            .collect();
        let mut batch_after: Vec<usize> = positions
            .iter()
            .filter_map(|&p| req_of.get(p).copied().flatten())
            .collect();
        batch_after.sort_unstable();
        batch_after.dedup();
        let alias_base = reqs.iter().map(|r| r.ids.len()).sum();
        // Objects whose IDs earlier requests ask for or return are not asked again.
        let known: Vec<(ObjectRef, usize)> = reqs
            .iter()
            .enumerate()
            .flat_map(|(r, req)| self.provides(req).into_iter().map(move |p| (p.object, r)))
            .collect();
        let mut new = self.schedule_from(start, req_of, reqs.len(), &batch_after, alias_base, &known);
        // `version`, or `tool_version × 3` for the instances of a loop output.
        let mut names: Vec<String> = Vec::new();
        let mut seen: Vec<usize> = Vec::new();
        for &p in &positions {
            let out = &self.outs[p];
            if seen.contains(&out.index) {
                continue;
            }
            seen.push(out.index);
            let n = positions
                .iter()
                .filter(|&&q| self.outs[q].index == out.index && self.outs[q].elem.is_some())
                .count();
            names.push(if n > 1 {
                format!("`{}` × {n}", qualified(&out.within, out.name))
            } else {
                format!("`{}`", out.display_name())
            });
        }
        let base = reqs.len();
        req_of.resize(self.outs.len(), None);
        let mut round = reqs.iter().filter(|r| r.outputs.is_empty()).count();
        for (j, r) in new.iter_mut().enumerate() {
            if r.outputs.is_empty() {
                round += 1;
                r.title = format!("resolve object IDs (round {round})");
            }
            r.title.push_str(&format!(" (with the value of {})", names.join(", ")));
            for &o in &r.outputs {
                req_of[o] = Some(base + j);
            }
        }
        reqs.extend(new);
    }

    /// The parts of a request still worth sending: outputs not decided yet whose prerequisites all
    /// succeeded (the others are skipped), and IDs some undecided output still needs.
    fn live_parts(&self, req: &Req, results: &mut Results) -> (IdFields, Vec<usize>) {
        let mut outputs = Vec::new();
        for &i in &req.outputs {
            if results.decided(i) {
                continue;
            }
            if self.outs[i]
                .waits
                .iter()
                .all(|&w| results.values.get(w).is_some_and(Option::is_some))
            {
                outputs.push(i);
            } else {
                results.skip(i);
            }
        }
        let ids = req
            .ids
            .iter()
            .filter(|(_, o)| {
                outputs_needing(std::slice::from_ref(o), self)
                    .iter()
                    .any(|&i| !results.decided(i))
            })
            .cloned()
            .collect();
        (ids, outputs)
    }
}

/// The request of each output (`None`: known without asking).
fn requests_of(reqs: &[Req], n: usize) -> Vec<Option<usize>> {
    let mut of = vec![None; n];
    for (r, req) in reqs.iter().enumerate() {
        for &o in &req.outputs {
            if let Some(x) = of.get_mut(o) {
                *x = Some(r);
            }
        }
    }
    of
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ReqState {
    Waiting,
    Running,
    Done,
}

/// What a request in flight is for.
enum Job {
    /// A scheduled request (its index).
    Main(usize),
    /// The outputs lost beside a failure in request `.0`, asked for again (with their response paths).
    Recover(usize, Vec<usize>, Vec<Vec<&'static str>>),
}

/// What was sent for one request: its ID fields and outputs, and the response path of each field in order.
#[derive(Clone, Default)]
struct Sent {
    ids: IdFields,
    outputs: Vec<usize>,
    paths: Vec<Vec<&'static str>>,
}

type RequestFuture = Pin<Box<dyn Future<Output = (Job, Result<Response, Error>)> + Send>>;

/// Sends `query` with `extensions` (what each of its fields serves, see [`serves`]; the pipeline's graph).
fn send(
    client: Client,
    query: String,
    extensions: serde_json::Map<String, serde_json::Value>,
    job: Job,
) -> RequestFuture {
    Box::pin(async move {
        let response = client.request_with(&query, extensions).await;
        (job, response)
    })
}

/// The request's `serves` extension, `{"serves": {"o0": "tests"}}` (nothing when no field serves an output):
/// each output field's alias with the output's name. The embedded engine and `dagger-rs` put the name on the
/// progress events and report rows of the operations that field needs; other engines ignore it.
fn serves(fields: &[Field]) -> serde_json::Map<String, serde_json::Value> {
    let named: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .filter_map(|f| Some((f.alias.clone(), serde_json::Value::String(f.serves.clone()?))))
        .collect();
    let mut ext = serde_json::Map::new();
    if !named.is_empty() {
        ext.insert("serves".into(), serde_json::Value::Object(named));
    }
    ext
}

fn print_doc(fields: &[Field], ids: IdMode<'_>, pretty: bool) -> String {
    let mut out = String::from(if pretty { "query {\n" } else { "query{" });
    for (i, field) in fields.iter().enumerate() {
        if i > 0 && !pretty {
            out.push(' ');
        }
        // Placeholders never fail; resolved printing is checked before sending.
        let _ = field
            .selection
            .print_fields(Some(&field.alias), pretty.then_some(1), ids, &mut out);
    }
    out.push('}');
    if pretty {
        out.push('\n');
    }
    out
}

fn print_resolved(fields: &[Field]) -> Result<String, Error> {
    for field in fields {
        if let Some(obj) = field.selection.unresolved_objects().first() {
            return Err(Error::UnresolvedId {
                type_name: obj.type_name,
            });
        }
    }
    Ok(print_doc(fields, IdMode::Resolved, false))
}

/// What a run produced: values by output, and failures.
#[doc(hidden)]
pub struct Results {
    pipeline: &'static str,
    /// `(output, binding, step)` of each output.
    names: Vec<Names>,
    values: Vec<Option<Box<dyn Any + Send>>>,
    failed: Vec<bool>,
    failures: Vec<OutputFailure>,
    /// Indexes of the outputs not run.
    skipped: Vec<usize>,
    /// Outputs of deferred parts that were never built (a value they needed did not come).
    unsent: Vec<String>,
    /// What each handle stands for (see [`Run`]).
    slots: Vec<Slot>,
}

/// `(output, key of its loop element, binding, step)`.
type Names = (
    &'static str,
    Option<String>,
    &'static str,
    &'static str,
    Vec<&'static str>,
);

impl Results {
    /// The value of an output, if it succeeded.
    pub fn take<T: 'static>(&mut self, handle: Handle<T>) -> Option<T> {
        let slot = self.slots.get(handle.index)?.pos?;
        let boxed = self.values.get_mut(slot)?.take()?;
        boxed.downcast::<T>().ok().map(|b| *b)
    }

    /// The values of a loop output's instances that succeeded, by key.
    pub fn take_each<K: Ord, T: 'static>(
        &mut self,
        handles: Vec<(usize, K, Handle<T>)>,
    ) -> std::collections::BTreeMap<K, T> {
        handles
            .into_iter()
            .filter_map(|(_, k, h)| self.take(h).map(|v| (k, v)))
            .collect()
    }

    /// Whether every output succeeded.
    pub fn complete(&self) -> bool {
        self.failures.is_empty() && self.skipped.is_empty() && self.unsent.is_empty()
    }

    /// Makes room for the outputs added since the last call, taking the values they know already.
    fn grow(&mut self, run: &Run) {
        for (i, o) in run.outs.iter().enumerate().skip(self.names.len()) {
            self.names.push((
                o.name,
                o.elem.as_ref().map(|e| e.1.clone()),
                o.meta.binding,
                o.meta.step,
                o.within.clone(),
            ));
            self.values.push(None);
            self.failed.push(false);
            self.take_known(i, &*o.leaf);
        }
    }

    /// Records where handles point, and the reserved outputs that were never built.
    fn finish(&mut self, run: &Run) {
        self.slots = run.slots.clone();
        for slot in &run.slots {
            if slot.pos.is_none() {
                let (segment, meta) = run.locate(slot.index);
                let within = run.segments.get(segment).map(|s| &s.within[..]).unwrap_or_default();
                let name = qualified(within, meta.name);
                self.unsent.push(match &slot.elem {
                    Some((_, key)) => format!("{name}[{key}]"),
                    None => name,
                });
            }
        }
    }

    /// The error for a failed run, carrying the outputs that finished.
    pub fn into_error<P>(self, partial: P) -> PipelineError<P> {
        let skipped = self
            .skipped
            .iter()
            .map(|&i| match self.names.get(i) {
                Some((name, Some(key), _, _, within)) => format!("{}[{key}]", qualified(within, name)),
                Some((name, None, _, _, within)) => qualified(within, name),
                None => "?".to_owned(),
            })
            .chain(self.unsent)
            .collect();
        PipelineError {
            pipeline: self.pipeline,
            failures: self.failures,
            skipped,
            partial,
        }
    }

    /// Whether output `i` has a value, a failure or was skipped.
    fn decided(&self, i: usize) -> bool {
        self.values.get(i).is_some_and(Option::is_some)
            || self.failed.get(i).copied().unwrap_or(true)
            || self.skipped.contains(&i)
    }

    fn fail(&mut self, i: usize, error: Error) {
        if self.failed.get(i).copied().unwrap_or(true) {
            return;
        }
        self.failed[i] = true;
        let (output, key, binding, step, within) = self.names[i].clone();
        self.failures.push(OutputFailure {
            output,
            key,
            binding,
            step,
            within,
            error,
        });
    }

    /// Marks output `i` as not run (something it waits for failed), unless it is decided already.
    fn skip(&mut self, i: usize) {
        if !self.decided(i) {
            self.skipped.push(i);
        }
    }

    /// Marks every output that has neither a value nor a failure as skipped.
    fn skip_rest(&mut self) {
        for i in 0..self.values.len() {
            self.skip(i);
        }
    }

    fn take_known(&mut self, i: usize, leaf: &dyn ErasedLeaf) {
        match leaf.known_any() {
            Some(Ok(v)) => self.values[i] = Some(v),
            Some(Err(e)) => self.fail(i, e),
            None => {}
        }
    }

    /// Fails the outputs a document was for (its own, or those needing its IDs): the first carries the
    /// error, the others its message.
    fn fail_many(&mut self, outputs: Vec<usize>, error: Error) {
        let message = error.to_string();
        let mut error = Some(error);
        for i in outputs {
            if self.decided(i) {
                continue;
            }
            let e = error.take().unwrap_or_else(|| Error::Query {
                message: message.clone(),
                path: Vec::new(),
            });
            self.fail(i, e);
        }
    }

    /// A whole document failed (transport, or printing): its outputs fail, and so do the outputs that need
    /// the IDs it was to resolve.
    fn fail_doc(&mut self, ids: &[(String, ObjectRef)], outputs: &[usize], error: Error, run: &Run) {
        let mut outs = outputs.to_vec();
        if !ids.is_empty() {
            let objs: Vec<ObjectRef> = ids.iter().map(|(_, o)| o.clone()).collect();
            for i in outputs_needing(&objs, run) {
                if !outs.contains(&i) {
                    outs.push(i);
                }
            }
        }
        self.fail_many(outs, error);
    }

    /// Reads one answer: IDs first, then outputs (`paths`: the response path of each field, in that order).
    /// Returns the outputs whose values were lost to another field's failure (no error of their own, no value
    /// either).
    fn read(
        &mut self,
        ids: &[(String, ObjectRef)],
        outputs: &[usize],
        paths: &[Vec<&'static str>],
        response: Response,
        run: &Run,
    ) -> Vec<usize> {
        let path_of = |k: usize| paths.get(k).map_or(&[][..], |p| p.get(1..).unwrap_or(&[]));
        let mut errors = response.errors;
        let had_errors = !errors.is_empty();
        let mut lost = Vec::new();
        let mut blamed = false;
        for (k, (alias, obj)) in ids.iter().enumerate() {
            let result = match errors.iter().position(|e| first_key(e) == Some(alias.as_str())) {
                Some(pos) => Err(errors.swap_remove(pos).into_error()),
                None => resolve_raw_response(&response.data, alias, path_of(k)).and_then(Id::from_response),
            };
            match result {
                Ok(id) => obj.selection.set_id(id),
                // Lost to a sibling's failure: what needs it waits for that sibling, or cannot be printed.
                Err(_) if had_errors && is_absent(&response.data, alias) => {
                    for i in outputs_needing(std::slice::from_ref(obj), run) {
                        if !outputs.contains(&i) {
                            self.skip(i);
                        }
                    }
                }
                Err(e) => {
                    self.fail_many(outputs_needing(std::slice::from_ref(obj), run), e);
                    blamed = true;
                }
            }
        }
        for (k, &i) in outputs.iter().enumerate() {
            let leaf = &run.outs[i].leaf;
            let alias = format!("o{i}");
            let result = match errors.iter().position(|e| first_key(e) == Some(alias.as_str())) {
                Some(pos) => Err(errors.swap_remove(pos).into_error()),
                None if had_errors && is_absent(&response.data, &alias) => {
                    if !self.decided(i) {
                        lost.push(i);
                    }
                    continue;
                }
                None => resolve_raw_response(&response.data, &alias, path_of(ids.len() + k))
                    .and_then(|v| leaf.decode_any(v)),
            };
            match result {
                Ok(v) => self.values[i] = Some(v),
                Err(e) => {
                    self.fail(i, e);
                    blamed = true;
                }
            }
        }
        if !errors.is_empty() && !blamed {
            // An error that names no field of this document: blame its first output.
            let first = outputs.first().copied().unwrap_or(0);
            self.fail(first, errors.swap_remove(0).into_error());
            lost.retain(|&i| i != first);
        }
        lost
    }
}

/// Whether an answer holds nothing at `alias` (absent, or `data` itself null).
fn is_absent(data: &serde_json::Value, alias: &str) -> bool {
    data.get(alias).is_none_or(serde_json::Value::is_null)
}

fn first_key(e: &GraphQlError) -> Option<&str> {
    e.path.first().and_then(|p| p.as_str())
}

/// Output indexes whose selections need any of `objs` (directly or through other objects).
fn outputs_needing(objs: &[ObjectRef], run: &Run) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, o) in run.outs.iter().enumerate() {
        let mut stack = o.leaf.selection().unresolved_objects();
        let mut seen: Vec<ObjectRef> = Vec::new();
        let mut hit = false;
        while let Some(o) = stack.pop() {
            if objs.iter().any(|x| x.selection.same_as(&o.selection)) {
                hit = true;
                break;
            }
            if seen.iter().any(|s| s.selection.same_as(&o.selection)) {
                continue;
            }
            stack.extend(o.selection.unresolved_objects());
            seen.push(o);
        }
        if hit {
            out.push(i);
        }
    }
    out
}

/// One output that failed, with where it came from.
#[derive(Debug)]
pub struct OutputFailure {
    /// The output's name.
    pub output: &'static str,
    /// For an output declared in a `for` loop: the element's key, printed with `{:?}` (`"1.85"`).
    pub key: Option<String>,
    /// The input or binding its leaf ran on.
    pub binding: &'static str,
    /// The step that made the binding.
    pub step: &'static str,
    /// For an output of a pipeline used inside this one: the bindings it was used through, outermost first
    /// (`["checks"]` for `let checks = lint::run(…);`); empty for the pipeline's own outputs.
    pub within: Vec<&'static str>,
    /// What went wrong ([`Error::Exec`] for a failed command).
    pub error: Error,
}

/// A pipeline run that did not complete: what failed, what did not run, and what finished (`partial`).
#[derive(Debug)]
pub struct PipelineError<P = ()> {
    /// The pipeline's name.
    pub pipeline: &'static str,
    /// The outputs that failed, in order.
    pub failures: Vec<OutputFailure>,
    /// The outputs that were not run: something they wait for failed (or, with `fail_fast`, anything did).
    /// (`name`, or `name[key]` for an element of a `for` loop.)
    pub skipped: Vec<String>,
    /// The outputs that finished, as the pipeline's `Partial` struct.
    pub partial: P,
}

/// The `partial` value of a [`PipelineError`] converted into [`Error::Pipeline`]: the pipeline's `Partial`
/// struct, boxed; read it back with [`PipelineError::partial_as`].
pub type AnyPartial = Box<dyn Any + Send + Sync>;

impl<P> PipelineError<P> {
    /// The first failure's error.
    pub fn first_error(&self) -> Option<&Error> {
        self.failures.first().map(|f| &f.error)
    }
}

impl<P: Send + Sync + 'static> PipelineError<P> {
    /// The same error with its `partial` value boxed, so errors of different pipelines share one type.
    pub fn erase(self) -> PipelineError<AnyPartial> {
        PipelineError {
            pipeline: self.pipeline,
            failures: self.failures,
            skipped: self.skipped,
            partial: Box::new(self.partial),
        }
    }
}

impl PipelineError<AnyPartial> {
    /// The outputs that finished, as the pipeline's `Partial` struct (`ci::Partial`); `None` for another type.
    ///
    /// ```no_run
    /// # use dagger::prelude::*;
    /// # #[step] fn build(dag: &Query) -> Container { dag.container() }
    /// # pipeline! { ci() { let b = build(); out log = b.stdout(); } }
    /// # async fn demo(dag: Query) {
    /// let result: Result<ci::Outputs, dagger::Error> = ci::run(&dag).await.map_err(Into::into);
    /// if let Err(dagger::Error::Pipeline(e)) = &result {
    ///     let partial = e.partial_as::<ci::Partial>();
    ///     println!("the log, if it finished: {:?}", partial.and_then(|p| p.log.as_deref()));
    /// }
    /// # }
    /// # fn main() {}
    /// ```
    pub fn partial_as<P: 'static>(&self) -> Option<&P> {
        self.partial.downcast_ref::<P>()
    }
}

/// `?` on a pipeline's `run` inside a function returning `Result<_, dagger::Error>`.
impl<P: Send + Sync + 'static> From<PipelineError<P>> for Error {
    fn from(e: PipelineError<P>) -> Self {
        Error::Pipeline(Box::new(e.erase()))
    }
}

impl<P> fmt::Display for PipelineError<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pipeline `{}` failed", self.pipeline)?;
        for fail in &self.failures {
            let key = fail.key.as_ref().map(|k| format!("[{k}]")).unwrap_or_default();
            write!(
                f,
                "\n- output `{}{key}` (binding `{}`, step `{}`): ",
                qualified(&fail.within, fail.output),
                fail.binding,
                fail.step
            )?;
            let text = fail.error.to_string();
            let mut lines = text.lines();
            if let Some(first) = lines.next() {
                f.write_str(first)?;
            }
            for line in lines {
                write!(f, "\n  {line}")?;
            }
        }
        if !self.skipped.is_empty() {
            write!(f, "\nnot run: {}", self.skipped.join(", "))?;
        }
        Ok(())
    }
}

impl<P: fmt::Debug> std::error::Error for PipelineError<P> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.failures
            .first()
            .map(|f| &f.error as &(dyn std::error::Error + 'static))
    }
}

/// One request of a [`Plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanDocument {
    /// What the request does: `resolve object IDs (round 1)`, or the outputs it evaluates (`tests, lint`).
    pub title: String,
    /// The requests (numbered from 1, as in the plan) that must be done before this one is sent.
    pub after: Vec<usize>,
    /// The document as sent, on one line.
    pub query: String,
    /// The document over several indented lines.
    pub pretty: String,
}

/// The requests a pipeline run sends, computed without an engine.
///
/// Requests are listed so that each comes after the ones it waits for; a run sends a request as soon as
/// those are done, so requests that wait for different ones are in flight at the same time. Object IDs that would be resolved at run time print as `<id:aN>`, naming the aliased field of the ID
/// request that resolves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The pipeline's name.
    pub pipeline: &'static str,
    /// The requests, each after the ones it waits for.
    pub documents: Vec<PlanDocument>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.documents.len();
        writeln!(
            f,
            "pipeline `{}`: {n} request{}",
            self.pipeline,
            if n == 1 { "" } else { "s" }
        )?;
        for (i, doc) in self.documents.iter().enumerate() {
            write!(f, "\n# request {}", i + 1)?;
            if !doc.after.is_empty() {
                let after: Vec<String> = doc.after.iter().map(ToString::to_string).collect();
                let s = if after.len() == 1 { "" } else { "s" };
                write!(f, " (after request{s} {})", after.join(", "))?;
            }
            writeln!(f, ": {}", doc.title)?;
            f.write_str(&doc.pretty)?;
        }
        Ok(())
    }
}

impl Plan {
    /// The requests that running one leaf as a pipeline output sends, for a snapshot of a single step's work:
    /// the ID rounds its object arguments need, then the leaf.
    ///
    /// ```
    /// use dagger::prelude::*;
    ///
    /// let dag = Query::detached();
    /// let log = dag.container().from("alpine").with_exec(["echo", "hi"]).stdout();
    /// let plan = Plan::of_leaf("echo", log);
    /// assert_eq!(plan.documents.len(), 1);
    /// assert!(plan.documents[0].query.contains("withExec"));
    /// ```
    pub fn of_leaf<T: Send + 'static>(name: &'static str, leaf: Leaf<T>) -> Plan {
        let field = leaf.field();
        let mut run = Run::new(&LEAF_META);
        run.name = name;
        run.add(0, 0, None, leaf);
        if let Some(out) = run.outs.first_mut() {
            out.name = field;
        }
        run.plan()
    }

    /// The requests that asking for an object's ID sends: the chain that builds it (a step's output, for
    /// instance), with the ID rounds of its object arguments first. `#[step]` functions have a shortcut:
    /// `toolchain::plan(src)` calls the step on a detached [`Query`](crate::Query) and plans its result.
    pub fn of_object<T: Object>(name: &'static str, object: &T) -> Plan {
        let leaf: Leaf<Id> = Leaf::own_id(object);
        Plan::of_leaf(name, leaf)
    }

    /// The requests that asking for several objects' IDs at once sends (a step returning a tuple).
    pub(crate) fn of_objects(name: &'static str, ids: Vec<Leaf<Id>>) -> Plan {
        let mut run = Run::new(&LEAF_META);
        run.name = name;
        const ELEMENTS: [&str; 6] = ["0.id", "1.id", "2.id", "3.id", "4.id", "5.id"];
        for (i, leaf) in ids.into_iter().enumerate() {
            run.add(0, i, None, leaf);
            if let Some(out) = run.outs.last_mut() {
                out.name = ELEMENTS.get(i).copied().unwrap_or("id");
            }
        }
        run.plan()
    }
}
