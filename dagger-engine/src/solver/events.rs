//! Progress events: what happened to each operation (queued, started, cached, done, failed, a line of
//! output), broadcast to whoever subscribes (the CLI's progress display, tests) and handed to listeners that
//! must see every one (a run report).
//!
//! The events of a call carry, when it is queued, started or found in the cache, what the operation does
//! ([`OpInfo`]): a few words for a person (the command of an exec, the address of an image, a path), its
//! arguments with secrets shown as `***`, the objects it is built from, and whether it is real work or an
//! edit of settings that only takes effect in the next command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One progress event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The operation, such as `Directory.withNewFile`.
    pub op: String,
    /// The first characters of its digest.
    pub id: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// What the operation does: on the `Queued`, `Started` and `Cached` events of calls, and on the
    /// `Started` event of leaves that do work (`publish`, `export`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<OpInfo>>,
    /// On a `Failed` event of a process that ran and did not end as expected: its exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// On the `Queued`, `Started` and `Cached` events of an operation a client's request asked for: the
    /// W3C `traceparent` that request carried (its spans are parented on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// On the `Queued`, `Started` and `Cached` events of an operation a client's request asked for: what it
    /// serves, as the client named the request's field that needed it first (a `pipeline!` output such as
    /// `tests` or `lint[clippy]`). An operation shared by several fields is named for the first to ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serves: Option<String>,
}

tokio::task_local! {
    /// The `traceparent` of the request being executed.
    static TRACEPARENT: Option<String>;
}

/// Runs `fut` as the execution of a request that carried `traceparent`: the events of the operations it
/// starts carry it.
pub(crate) async fn with_traceparent<F: std::future::Future>(traceparent: Option<String>, fut: F) -> F::Output {
    TRACEPARENT.scope(traceparent, fut).await
}

/// The `traceparent` of the request being executed here, if it carried one.
pub(crate) fn current_traceparent() -> Option<String> {
    TRACEPARENT.try_with(Clone::clone).ok().flatten()
}

tokio::task_local! {
    /// What the field being resolved serves, as the client named it.
    static SERVES: Option<std::sync::Arc<str>>;
}

/// Runs `fut` as the resolution of a field the client named `serves` (see [`Event::serves`]).
pub(crate) async fn with_serves<F: std::future::Future>(serves: Option<std::sync::Arc<str>>, fut: F) -> F::Output {
    SERVES.scope(serves, fut).await
}

/// What the field being resolved here serves, if the client named it.
pub(crate) fn current_serves() -> Option<String> {
    SERVES.try_with(|s| s.as_deref().map(str::to_owned)).ok().flatten()
}

/// Whether `s` is a W3C `traceparent` this engine follows: version `00`, a trace id and a parent id that are
/// not all zeros, and flags, in lowercase hex (`00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`).
pub(crate) fn valid_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let nonzero = |p: &str| p.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [v, trace, parent, flags]
        if *v == "00" && hex(trace, 32) && nonzero(trace) && hex(parent, 16) && nonzero(parent) && hex(flags, 2))
}

impl Event {
    /// An event without a description or an exit code.
    pub fn new(op: impl Into<String>, id: impl Into<String>, kind: EventKind) -> Self {
        Self {
            op: op.into(),
            id: id.into(),
            kind,
            info: None,
            exit_code: None,
            traceparent: None,
            serves: None,
        }
    }

    /// The field of the operation: `withExec` for `Container.withExec`.
    pub fn field(&self) -> &str {
        self.op.rsplit_once('.').map_or(self.op.as_str(), |(_, f)| f)
    }

    /// What a person reads for this operation: its field and what it does (`withExec cargo test`,
    /// `from rust:1-slim`), or its name alone when the event says nothing more.
    pub fn label(&self) -> String {
        match &self.info {
            Some(info) if !info.detail.is_empty() => format!("{} {}", self.field(), info.detail),
            _ => self.op.clone(),
        }
    }
}

/// What happened to an operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum EventKind {
    /// A request needs it; it starts once what it is built from is ready.
    Queued,
    /// It started.
    Started,
    /// Its result came from the cache.
    Cached,
    /// It finished, in this many milliseconds.
    Done(u64),
    /// It failed with this message.
    Failed(String),
    /// A line of output it produced.
    Log(String),
    /// It downloaded this many bytes from a registry (image layers, configurations and manifests that were
    /// not in the store yet); sent before it ends.
    Pulled(u64),
    /// The graph of the pipeline a client runs, as it sent it (the event's `op` is `pipeline`, its `id` the
    /// pipeline's name).
    Graph(Box<PipelineGraph>),
}

/// The graph of a client's pipeline (a `pipeline!` of the Rust SDK): its inputs, steps and outputs and what
/// feeds what, for reports to draw beside the operations. Clients send it as the `pipeline` extension of a
/// request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineGraph {
    /// The pipeline's name.
    pub name: String,
    /// Its nodes, in the order the client declared them.
    pub nodes: Vec<GraphNode>,
    /// What feeds what.
    #[serde(default)]
    pub edges: Vec<GraphEdge>,
}

/// A node of a [`PipelineGraph`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphNode {
    /// Its id, unique in the graph.
    pub id: String,
    /// What a person reads (`tc = toolchain(…)`).
    pub label: String,
    /// What it is.
    pub kind: NodeKind,
    /// For an output: the name the fields that compute it are sent under (see [`Event::serves`]); the
    /// elements of a loop's output are named `name[key]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serves: Option<String>,
}

/// What a [`GraphNode`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// An input of the pipeline (or a loop variable).
    Input,
    /// A binding made by a step.
    Step,
    /// An output.
    Output,
}

/// An edge of a [`PipelineGraph`], between node ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphEdge {
    /// Where it starts.
    pub from: String,
    /// Where it ends.
    pub to: String,
    /// What it means.
    #[serde(default)]
    pub kind: EdgeKind,
}

/// What a [`GraphEdge`] means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// An object or value passed as an argument.
    #[default]
    Data,
    /// The value of an output feeding a later step.
    Value,
    /// One output waits for another to succeed.
    After,
}

impl PipelineGraph {
    /// Most nodes a graph may have.
    pub const MAX_NODES: usize = 2_000;
    /// Most edges a graph may have.
    pub const MAX_EDGES: usize = 10_000;
    /// Longest id, label or name kept (longer ones are cut).
    pub const MAX_TEXT: usize = 200;

    /// The graph a client sent as the `pipeline` extension of a request, checked: `Err` says why it is not
    /// one (not the expected shape, too many nodes or edges, ids not unique, an edge naming no node). Long
    /// texts are cut.
    pub fn from_extension(value: &serde_json::Value) -> Result<Self, String> {
        let mut g: PipelineGraph =
            serde_json::from_value(value.clone()).map_err(|e| format!("not a pipeline graph: {e}"))?;
        if g.nodes.len() > Self::MAX_NODES || g.edges.len() > Self::MAX_EDGES {
            return Err(format!(
                "a pipeline graph has at most {} nodes and {} edges (this one: {} and {})",
                Self::MAX_NODES,
                Self::MAX_EDGES,
                g.nodes.len(),
                g.edges.len()
            ));
        }
        let cut = |s: &mut String| {
            if s.chars().count() > Self::MAX_TEXT {
                *s = s.chars().take(Self::MAX_TEXT).collect();
            }
        };
        cut(&mut g.name);
        let mut ids = std::collections::HashSet::new();
        for n in &mut g.nodes {
            cut(&mut n.id);
            cut(&mut n.label);
            if let Some(s) = &mut n.serves {
                cut(s);
            }
            if !ids.insert(n.id.clone()) {
                return Err(format!("node id `{}` appears twice in the pipeline graph", n.id));
            }
        }
        for e in &mut g.edges {
            cut(&mut e.from);
            cut(&mut e.to);
            if !ids.contains(&e.from) || !ids.contains(&e.to) {
                return Err(format!(
                    "edge `{}` → `{}` names a node the graph does not have",
                    e.from, e.to
                ));
            }
        }
        Ok(g)
    }
}

/// What an operation does, as its events describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpInfo {
    /// A few words for a person: the command of a `withExec`, the address of a `from`, the path of a
    /// `withDirectory`, `NAME=value` of an environment variable; empty when the field says it all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Its arguments as the client gave them, secrets replaced by `***` and objects by `#` and the first
    /// characters of their digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, serde_json::Value>,
    /// The objects it is built from (its parent first), by the first characters of their digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// Whether it is work, a setting, or a starting point.
    #[serde(default)]
    pub role: Role,
}

/// What kind of step an operation is, for displays that fold the small ones into the work they shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It does work of its own: runs a process, pulls an image, writes files, publishes.
    #[default]
    Work,
    /// It only edits settings (an environment variable, the working directory, a mount), which take effect
    /// in the next command: displays show it with that command.
    Setting,
    /// A starting point with nothing to do (`container`, `directory`, `cacheVolume`, `setSecret`).
    Root,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (label, id) = (self.label(), &self.id);
        match &self.kind {
            EventKind::Queued => write!(f, "… {label} [{id}] queued"),
            EventKind::Started => write!(f, "▶ {label} [{id}]"),
            EventKind::Cached => write!(f, "● {label} [{id}] cached"),
            EventKind::Done(ms) => write!(f, "✔ {label} [{id}] {ms}ms"),
            EventKind::Failed(msg) => match self.exit_code {
                Some(code) => write!(f, "✘ {label} [{id}] failed (exit code {code}): {msg}"),
                None => write!(f, "✘ {label} [{id}] failed: {msg}"),
            },
            EventKind::Log(line) => write!(f, "│ {label} [{id}] {line}"),
            EventKind::Pulled(bytes) => write!(f, "↓ {label} [{id}] pulled {bytes} bytes"),
            EventKind::Graph(g) => write!(f, "◇ pipeline {} ({} nodes)", g.name, g.nodes.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_are_json_lines_tools_can_read_back() {
        let mut ev = Event::new("Container.withExec", "0123456789ab", EventKind::Done(2400));
        ev.info = Some(Box::new(OpInfo {
            detail: "cargo test".into(),
            args: [("args".to_owned(), json!(["cargo", "test"]))].into_iter().collect(),
            inputs: vec!["ba9876543210".into()],
            role: Role::Work,
        }));
        let text = serde_json::to_string(&ev).expect("json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(v["kind"], "done");
        assert_eq!(v["value"], 2400);
        assert_eq!(v["info"]["detail"], "cargo test");
        assert_eq!(v["info"]["role"], "work");
        assert!(v.get("exit_code").is_none(), "{text}");
        assert_eq!(serde_json::from_str::<Event>(&text).expect("read back"), ev);

        let queued = serde_json::to_value(Event::new("Query.container", "x", EventKind::Queued)).expect("json");
        assert_eq!(queued, json!({ "op": "Query.container", "id": "x", "kind": "queued" }));
    }

    #[test]
    fn only_well_formed_traceparents_are_followed() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_traceparent_of_a_request_is_seen_by_what_it_runs() {
        assert_eq!(current_traceparent(), None);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned();
        let seen = with_traceparent(Some(tp.clone()), async { current_traceparent() }).await;
        assert_eq!(seen, Some(tp));
    }

    #[test]
    fn a_label_says_what_the_operation_does() {
        let mut ev = Event::new("Container.withExec", "0123456789ab", EventKind::Started);
        assert_eq!(ev.label(), "Container.withExec");
        ev.info = Some(Box::new(OpInfo {
            detail: "sh -c 'exit 3'".into(),
            ..OpInfo::default()
        }));
        assert_eq!(ev.label(), "withExec sh -c 'exit 3'");
        ev.kind = EventKind::Failed("boom".into());
        ev.exit_code = Some(3);
        assert_eq!(
            ev.to_string(),
            "✘ withExec sh -c 'exit 3' [0123456789ab] failed (exit code 3): boom"
        );
    }
}
