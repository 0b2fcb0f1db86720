//! The runtime half of `pipeline!`: scheduling outputs into batched requests, running them, and mapping
//! failures back to the outputs, bindings and steps that caused them.
//!
//! A run has two phases:
//! 1. **IDs.** Object arguments whose IDs are unknown are asked for in batched documents, one aliased field
//!    each (`a0: host { directory(path: ".") { id } }`). An object whose own chain needs another unknown
//!    ID waits for a later round, so the number of ID requests is the nesting depth of such arguments.
//! 2. **Levels.** Each level of outputs is one document with one aliased field per output (`o0`, `o1`, …);
//!    the engine evaluates them concurrently. A level starts once the previous one succeeded.
//!
//! [`Plan`] prints the same documents offline, with placeholders (`<id:a0>`) where IDs would go.

use std::any::Any;
use std::fmt;

use crate::core::{FromResponse, Leaf, resolve_raw_response};
use crate::error::Error;
use crate::querybuilder::{IdMode, ObjectRef, Selection};
use crate::scalars::Id;
use crate::transport::{Client, GraphQlError};

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
}

/// What `pipeline!` records about a pipeline.
#[doc(hidden)]
#[derive(Debug)]
pub struct PipelineMeta {
    /// The pipeline's name.
    pub name: &'static str,
    /// Its outputs, in declaration order.
    pub outputs: &'static [OutputMeta],
    /// Output indexes by level.
    pub levels: &'static [&'static [usize]],
}

/// A leaf with its value type erased, so outputs of different types share one schedule.
trait ErasedLeaf: Send {
    fn selection(&self) -> Selection;
    fn response_path(&self) -> Vec<&'static str>;
    fn decode_any(&self, value: serde_json::Value) -> Result<Box<dyn Any + Send>, Error>;
    fn known_any(&self) -> Option<Result<Box<dyn Any + Send>, Error>>;
    fn client(&self) -> Option<Client>;
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
}

/// A typed handle on one output of a [`Run`].
#[doc(hidden)]
pub struct Handle<T> {
    index: usize,
    _type: std::marker::PhantomData<fn() -> T>,
}

/// The outputs of one pipeline run, scheduled and ready to execute or plan.
#[doc(hidden)]
pub struct Run {
    meta: &'static PipelineMeta,
    leaves: Vec<Box<dyn ErasedLeaf>>,
}

/// One scheduled document: the IDs it resolves and the outputs it evaluates.
struct Doc {
    /// `resolve object IDs (round 1)`, `level 2: tests, lint`.
    title: String,
    /// `(alias, object)` of each ID field.
    ids: Vec<(String, ObjectRef)>,
    /// The output indexes it evaluates (aliased `o<index>`).
    outputs: Vec<usize>,
}

impl Doc {
    fn fields(&self, run: &Run) -> Vec<(String, Selection)> {
        let ids = self
            .ids
            .iter()
            .map(|(alias, o)| (alias.clone(), o.selection.select("id", vec![])));
        let outs = self
            .outputs
            .iter()
            .map(|&i| (format!("o{i}"), run.leaves[i].selection()));
        ids.chain(outs).collect()
    }
}

impl Run {
    /// An empty run of the pipeline described by `meta`.
    pub fn new(meta: &'static PipelineMeta) -> Self {
        Self {
            meta,
            leaves: Vec::new(),
        }
    }

    /// Adds the next output (in declaration order).
    pub fn add<T: Send + 'static>(&mut self, leaf: Leaf<T>) -> Handle<T> {
        self.leaves.push(Box::new(leaf));
        Handle {
            index: self.leaves.len() - 1,
            _type: std::marker::PhantomData,
        }
    }

    /// The level (from 1) of each output.
    fn level_of(&self, output: usize) -> usize {
        self.meta
            .levels
            .iter()
            .position(|l| l.contains(&output))
            .map_or(1, |p| p + 1)
    }

    /// The documents of a run, in order.
    ///
    /// Every object argument with an unknown ID is resolved by an aliased `id` field, as early as its own
    /// chain allows (`depth`: the objects it needs come first), and before the first level that needs it.
    /// IDs that can wait ride along in the documents of earlier levels; only IDs that the first levels need
    /// too early get documents of their own. So a run costs `levels + P` requests, where `P` is usually 1.
    fn docs(&self) -> Vec<Doc> {
        // Every unresolved object, transitively, with what it needs and which outputs need it.
        let mut all: Vec<ObjectRef> = Vec::new();
        let mut first_need: Vec<usize> = Vec::new();
        for (i, leaf) in self.leaves.iter().enumerate() {
            let level = self.level_of(i);
            let mut stack = leaf.selection().unresolved_objects();
            while let Some(obj) = stack.pop() {
                match all.iter().position(|o| o.selection.same_as(&obj.selection)) {
                    Some(k) => first_need[k] = first_need[k].min(level),
                    None => {
                        stack.extend(obj.selection.unresolved_objects());
                        all.push(obj);
                        first_need.push(level);
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
                    .filter_map(|d| all.iter().position(|x| x.selection.same_as(&d.selection)))
                    .collect()
            })
            .collect();
        // An object needed by a level is needed by the objects that need it no later than they are.
        let mut depth = vec![0usize; all.len()];
        for _ in 0..=all.len() {
            let mut changed = false;
            for i in 0..all.len() {
                for &j in &deps[i] {
                    if first_need[j] > first_need[i] {
                        first_need[j] = first_need[i];
                        changed = true;
                    }
                }
                let d = deps[i].iter().map(|&j| depth[j] + 1).max().unwrap_or(0);
                if d != depth[i] {
                    depth[i] = d;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        // Documents before level 1 ("pure" ID rounds): enough for every object to come before its level.
        let pure = (0..all.len())
            .map(|i| (depth[i] + 2).saturating_sub(first_need[i]))
            .max()
            .unwrap_or(0);
        let levels = self.meta.levels.len();
        let mut docs: Vec<Doc> = (0..pure + levels)
            .map(|k| {
                if k < pure {
                    Doc {
                        title: format!("resolve object IDs (round {})", k + 1),
                        ids: Vec::new(),
                        outputs: Vec::new(),
                    }
                } else {
                    let level = self.meta.levels[k - pure];
                    let names: Vec<&str> = level
                        .iter()
                        .map(|&i| self.meta.outputs.get(i).map_or("?", |o| o.name))
                        .collect();
                    Doc {
                        title: format!("level {}: {}", k - pure + 1, names.join(", ")),
                        ids: Vec::new(),
                        outputs: level
                            .iter()
                            .copied()
                            .filter(|&i| self.leaves.get(i).is_some_and(|l| l.known_any().is_none()))
                            .collect(),
                    }
                }
            })
            .collect();
        // First needed first; then by depth, so aliases read in a natural order.
        let mut order: Vec<usize> = (0..all.len()).rev().collect();
        order.sort_by_key(|&i| depth[i]);
        for (n, i) in order.into_iter().enumerate() {
            let doc = depth[i].min(docs.len().saturating_sub(1));
            docs[doc].ids.push((format!("a{n}"), all[i].clone()));
        }
        if docs.iter().any(|d| !d.ids.is_empty()) {
            for d in docs.iter_mut().skip(pure) {
                if !d.ids.is_empty() {
                    d.title.push_str(" (and object IDs for later levels)");
                }
            }
        }
        docs
    }

    /// The documents `execute` would send, printed offline.
    pub fn plan(self) -> Plan {
        let docs = self.docs();
        let aliases: Vec<(Selection, String)> = docs
            .iter()
            .flat_map(|d| d.ids.iter())
            .map(|(alias, o)| (o.selection.clone(), format!("<id:{alias}>")))
            .collect();
        let placeholder = |o: &ObjectRef| {
            aliases
                .iter()
                .find(|(s, _)| s.same_as(&o.selection))
                .map(|(_, a)| a.clone())
                .unwrap_or_else(|| "<id:?>".to_owned())
        };
        let ids = IdMode::Placeholder(&placeholder);
        let documents = docs
            .iter()
            .filter(|d| !d.ids.is_empty() || !d.outputs.is_empty())
            .map(|d| {
                let fields = d.fields(&self);
                PlanDocument {
                    title: d.title.clone(),
                    query: print_doc(&fields, ids, false),
                    pretty: print_doc(&fields, ids, true),
                }
            })
            .collect();
        Plan {
            pipeline: self.meta.name,
            documents,
        }
    }

    /// Runs every document in order and collects what each output produced.
    pub async fn execute(self) -> Results {
        let mut results = Results {
            meta: self.meta,
            values: (0..self.leaves.len()).map(|_| None).collect(),
            failures: Vec::new(),
            skipped: Vec::new(),
        };
        for (i, leaf) in self.leaves.iter().enumerate() {
            results.take_known(i, &**leaf);
        }
        let Some(client) = self.leaves.iter().find_map(|l| l.client()) else {
            if !self.leaves.is_empty() && results.values.iter().any(Option::is_none) {
                results.fail(0, Error::NotConnected);
                results.skip_rest();
            }
            return results;
        };
        for doc in self.docs() {
            if doc.ids.is_empty() && doc.outputs.is_empty() {
                continue;
            }
            let fields = doc.fields(&self);
            let response = match print_resolved(&fields) {
                Ok(query) => client.request(&query).await,
                Err(e) => Err(e),
            };
            let ok = match response {
                Ok(response) => {
                    let (ok, lost) = results.read(&doc, response, &self);
                    if !lost.is_empty() {
                        self.recover(&client, lost, &mut results).await;
                    }
                    ok
                }
                Err(e) => {
                    results.fail_doc(&doc, e, &self);
                    false
                }
            };
            if !ok {
                results.skip_rest();
                return results;
            }
        }
        results
    }
}

impl Run {
    /// Fetches again the outputs of a failed level that did not fail themselves.
    ///
    /// When one field of a document fails, GraphQL's null propagation usually empties the whole answer (every
    /// field up to the root is non-null), taking the values of the siblings that succeeded with it. Those
    /// siblings are asked for once more, alone, in one request; the engine has their results cached.
    async fn recover(&self, client: &Client, lost: Vec<usize>, results: &mut Results) {
        let doc = Doc {
            title: "recover the outputs that succeeded beside a failure".into(),
            ids: Vec::new(),
            outputs: lost,
        };
        let fields = doc.fields(self);
        let response = match print_resolved(&fields) {
            Ok(query) => client.request(&query).await,
            Err(e) => Err(e),
        };
        match response {
            Ok(response) => {
                let (_, still_lost) = results.read(&doc, response, self);
                for i in still_lost {
                    let path = format!("o{i}");
                    results.fail(i, Error::MissingData { path });
                }
            }
            Err(e) => results.fail_doc(&doc, e, self),
        }
    }
}

fn print_doc(fields: &[(String, Selection)], ids: IdMode<'_>, pretty: bool) -> String {
    let mut out = String::from(if pretty { "query {\n" } else { "query{" });
    for (i, (alias, sel)) in fields.iter().enumerate() {
        if i > 0 && !pretty {
            out.push(' ');
        }
        // Placeholders never fail; resolved printing is checked before sending.
        let _ = sel.print_fields(Some(alias), pretty.then_some(1), ids, &mut out);
    }
    out.push('}');
    if pretty {
        out.push('\n');
    }
    out
}

fn print_resolved(fields: &[(String, Selection)]) -> Result<String, Error> {
    for (_, sel) in fields {
        if let Some(obj) = sel.unresolved_objects().first() {
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
    meta: &'static PipelineMeta,
    values: Vec<Option<Box<dyn Any + Send>>>,
    failures: Vec<OutputFailure>,
    skipped: Vec<&'static str>,
}

impl Results {
    /// The value of an output, if it succeeded.
    pub fn take<T: 'static>(&mut self, handle: Handle<T>) -> Option<T> {
        let boxed = self.values.get_mut(handle.index)?.take()?;
        boxed.downcast::<T>().ok().map(|b| *b)
    }

    /// The error for a failed run, carrying the outputs that finished.
    pub fn into_error<P>(self, partial: P) -> PipelineError<P> {
        PipelineError {
            pipeline: self.meta.name,
            failures: self.failures,
            skipped: self.skipped,
            partial,
        }
    }

    fn output_meta(&self, i: usize) -> (&'static str, &'static str, &'static str) {
        self.meta
            .outputs
            .get(i)
            .map_or(("?", "?", "?"), |o| (o.name, o.binding, o.step))
    }

    fn fail(&mut self, i: usize, error: Error) {
        let (output, binding, step) = self.output_meta(i);
        if self.failures.iter().any(|f| f.output == output) {
            return;
        }
        self.failures.push(OutputFailure {
            output,
            binding,
            step,
            error,
        });
    }

    /// Marks every output that has neither a value nor a failure as skipped.
    fn skip_rest(&mut self) {
        for i in 0..self.values.len() {
            let name = self.output_meta(i).0;
            if self.values[i].is_none()
                && !self.failures.iter().any(|f| f.output == name)
                && !self.skipped.contains(&name)
            {
                self.skipped.push(name);
            }
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
            let e = error.take().unwrap_or_else(|| Error::Query {
                message: message.clone(),
                path: Vec::new(),
            });
            self.fail(i, e);
        }
    }

    /// A whole document failed (transport, or printing).
    fn fail_doc(&mut self, doc: &Doc, error: Error, run: &Run) {
        let mut outs = doc.outputs.clone();
        if outs.is_empty() {
            let objs: Vec<ObjectRef> = doc.ids.iter().map(|(_, o)| o.clone()).collect();
            outs = outputs_needing(&objs, run);
        }
        self.fail_many(outs, error);
    }

    /// Reads one answer: IDs first, then outputs. Returns whether everything in it succeeded, and the outputs
    /// whose values were lost to another field's failure (no error of their own, no value either).
    fn read(&mut self, doc: &Doc, response: crate::transport::Response, run: &Run) -> (bool, Vec<usize>) {
        let mut errors = response.errors;
        let had_errors = !errors.is_empty();
        let mut ok = true;
        let mut lost = Vec::new();
        for (alias, obj) in &doc.ids {
            let result = match errors.iter().position(|e| first_key(e) == Some(alias.as_str())) {
                Some(pos) => Err(errors.swap_remove(pos).into_error()),
                None => {
                    let mut path = obj.selection.path();
                    path.push("id");
                    resolve_raw_response(&response.data, alias, &path[1..]).and_then(Id::from_response)
                }
            };
            match result {
                Ok(id) => obj.selection.set_id(id),
                // An ID lost to a sibling's failure is only needed by later levels, which will not run.
                Err(_) if had_errors && is_absent(&response.data, alias) => ok = false,
                Err(e) => {
                    self.fail_many(outputs_needing(std::slice::from_ref(obj), run), e);
                    ok = false;
                }
            }
        }
        for &i in &doc.outputs {
            let leaf = &run.leaves[i];
            let alias = format!("o{i}");
            let result = match errors.iter().position(|e| first_key(e) == Some(alias.as_str())) {
                Some(pos) => Err(errors.swap_remove(pos).into_error()),
                None if had_errors && is_absent(&response.data, &alias) => {
                    lost.push(i);
                    continue;
                }
                None => {
                    let path = leaf.response_path();
                    resolve_raw_response(&response.data, &alias, &path[1..]).and_then(|v| leaf.decode_any(v))
                }
            };
            match result {
                Ok(v) => self.values[i] = Some(v),
                Err(e) => {
                    self.fail(i, e);
                    ok = false;
                }
            }
        }
        if !lost.is_empty() {
            ok = false;
        }
        if ok && !errors.is_empty() {
            // An error that names no field of this document: blame its first output.
            let first = doc.outputs.first().copied().unwrap_or(0);
            self.fail(first, errors.swap_remove(0).into_error());
            ok = false;
        }
        (ok, lost)
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
    for (i, leaf) in run.leaves.iter().enumerate() {
        let mut stack = leaf.selection().unresolved_objects();
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
    if out.is_empty() && !run.leaves.is_empty() {
        out.push(0);
    }
    out
}

/// One output that failed, with where it came from.
#[derive(Debug)]
pub struct OutputFailure {
    /// The output's name.
    pub output: &'static str,
    /// The input or binding its leaf ran on.
    pub binding: &'static str,
    /// The step that made the binding.
    pub step: &'static str,
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
    /// The outputs that were not run because an earlier level failed.
    pub skipped: Vec<&'static str>,
    /// The outputs that finished, as the pipeline's `Partial` struct.
    pub partial: P,
}

impl<P> PipelineError<P> {
    /// The first failure's error.
    pub fn first_error(&self) -> Option<&Error> {
        self.failures.first().map(|f| &f.error)
    }
}

impl<P> fmt::Display for PipelineError<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pipeline `{}` failed", self.pipeline)?;
        for fail in &self.failures {
            write!(
                f,
                "\n- output `{}` (binding `{}`, step `{}`): ",
                fail.output, fail.binding, fail.step
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
    /// What the request does (`resolve object IDs (round 1)`, `level 1: tests, image`).
    pub title: String,
    /// The document as sent, on one line.
    pub query: String,
    /// The document over several indented lines.
    pub pretty: String,
}

/// The requests a pipeline run sends, in order, computed without an engine.
///
/// Object IDs that would be resolved at run time print as `<id:aN>`, naming the aliased field of the ID
/// request that resolves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The pipeline's name.
    pub pipeline: &'static str,
    /// The requests, in order.
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
            writeln!(f, "\n# request {}: {}", i + 1, doc.title)?;
            f.write_str(&doc.pretty)?;
        }
        Ok(())
    }
}
