//! The graph of a pipeline as `pipeline!` compiled it ([`Graph`]), drawn as Mermaid or Graphviz DOT.
//!
//! Every pipeline module has a `GRAPH` static: its inputs, its bindings (the step each calls, or the pipeline
//! each uses), its outputs (the leaf each runs, with its level of `after` and its wave of values), its `for`
//! and `if` blocks, and the edges between them. [`Graph::mermaid`] and [`Graph::dot`] draw it; both texts
//! depend only on the pipeline's source, so they can be snapshot-tested.
//!
//! ```
//! use dagger::prelude::*;
//!
//! #[step]
//! fn toolchain(dag: &Query, src: Directory) -> Container {
//!     dag.container().from("rust:1-slim").with_directory("/src", src)
//! }
//!
//! pipeline! {
//!     ci(src: Directory) {
//!         let tc = toolchain(src);
//!         out log = tc.stdout();
//!     }
//! }
//!
//! fn main() {
//!     let mermaid = ci::GRAPH.mermaid();
//!     assert!(mermaid.starts_with("flowchart LR"));
//!     assert!(mermaid.contains(r#"b0["tc = toolchain(…)"]"#));
//!     assert!(ci::GRAPH.dot().starts_with("digraph \"ci\" {"));
//! }
//! ```

use std::fmt::Write as _;

/// The graph of a pipeline: what `pipeline!` knows about it at compile time.
#[derive(Debug)]
pub struct Graph {
    /// The pipeline's name.
    pub name: &'static str,
    /// Its inputs, in order.
    pub inputs: &'static [GraphInput],
    /// Its bindings, in order.
    pub bindings: &'static [GraphBinding],
    /// Its outputs, in order.
    pub outputs: &'static [GraphOutput],
    /// Its `for` and `if` blocks, in order; bindings and outputs point at theirs by index.
    pub blocks: &'static [GraphBlock],
    /// What feeds what, by name (see [`GraphEdge`]).
    pub edges: &'static [GraphEdge],
}

/// An input of a pipeline.
#[derive(Debug)]
pub struct GraphInput {
    /// Its name.
    pub name: &'static str,
    /// Its type, as written.
    pub ty: &'static str,
}

/// A binding: `let tc = toolchain(src);`, `let (bin, docs) = build(tc);`, or a pipeline used in this one.
#[derive(Debug)]
pub struct GraphBinding {
    /// The names it binds (`_` for an element of a tuple the pipeline does not use).
    pub names: &'static [&'static str],
    /// Whether the names are a tuple pattern.
    pub tuple: bool,
    /// The step it calls, as written (`toolchain`, `ci::steps::build`), or `lint::run` for a pipeline.
    pub step: &'static str,
    /// The names each argument uses, argument by argument.
    pub args: &'static [&'static [&'static str]],
    /// The block it is declared in (an index into [`Graph::blocks`]), if any.
    pub block: Option<usize>,
    /// The wave it is built in: 1 before anything is sent, n + 1 once the values of wave n are known.
    pub wave: usize,
    /// For a pipeline used in this one, its graph.
    pub pipeline: Option<&'static Graph>,
}

/// An output: `out log = tests.stdout();`.
#[derive(Debug)]
pub struct GraphOutput {
    /// Its name.
    pub name: &'static str,
    /// The input or binding its leaf runs on.
    pub target: &'static str,
    /// The leaf.
    pub leaf: &'static str,
    /// How many arguments the leaf takes here.
    pub args: usize,
    /// The block it is declared in, if any.
    pub block: Option<usize>,
    /// Its level of `after` edges, from 1 (see the pipeline's `LEVELS`).
    pub level: usize,
    /// The wave it is built in (see [`GraphBinding::wave`]).
    pub wave: usize,
}

/// A `for` loop or an `if` block.
#[derive(Debug)]
pub struct GraphBlock {
    /// What kind of block it is.
    pub kind: GraphBlockKind,
    /// The input a loop goes over, or the `bool` a condition tests (an input or a loop variable).
    pub input: &'static str,
    /// The block it is in, if any.
    pub parent: Option<usize>,
}

/// What kind of block a [`GraphBlock`] is.
#[derive(Debug)]
pub enum GraphBlockKind {
    /// `for key in input { … }`, or `for (key, value) in input { … }`.
    For {
        /// The loop variable (the first of a pair).
        key: &'static str,
        /// The second loop variable of a pair.
        value: Option<&'static str>,
    },
    /// `if input { … }`, or `if !input { … }`.
    If {
        /// Whether the condition is negated.
        negated: bool,
    },
}

/// An edge of the graph, between names: inputs, loop variables, bindings (any of a tuple's names), outputs,
/// a pipeline used in this one (`checks`), or one of its outputs (`checks.ready`).
#[derive(Debug)]
pub struct GraphEdge {
    /// Where it starts.
    pub from: &'static str,
    /// Where it ends.
    pub to: &'static str,
    /// What it means.
    pub kind: EdgeKind,
}

/// What a [`GraphEdge`] means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    /// An object or value passed as an argument, or the target of a leaf.
    Data,
    /// The value of an output feeding a later step or leaf: a new wave.
    Value,
    /// `after`: an output waits for another (or for every output of a used pipeline) to succeed.
    After,
}

/// The graph of a pipeline `pipeline!` could not find (its using pipeline does not compile).
#[doc(hidden)]
pub static UNKNOWN_GRAPH: Graph = Graph {
    name: "unknown",
    inputs: &[],
    bindings: &[],
    outputs: &[],
    blocks: &[],
    edges: &[],
};

/// Where a name of a graph is drawn: a node, or the subgraph of a used pipeline.
enum Place {
    Node(String),
    Cluster(String, String),
}

impl Graph {
    /// The graph as a Mermaid flowchart (`flowchart LR`): inputs as parallelograms, bindings as boxes,
    /// outputs as rounded boxes, `for` and `if` blocks and used pipelines as subgraphs; arguments are plain
    /// arrows, values feeding steps thick arrows labelled `value`, `after` dotted arrows, and conditions
    /// dotted lines to their block. Levels of `after` and waves of values are given on the outputs (and on
    /// the bindings built in a later wave) when the pipeline has more than one.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        let _ = writeln!(out, "  %% pipeline `{}`", self.name);
        self.mermaid_body(&mut out, "", 1);
        out.push_str("  classDef input fill:#eef3fb,stroke:#6b7fa8\n");
        out.push_str("  classDef step fill:#ffffff,stroke:#555555\n");
        out.push_str("  classDef output fill:#eaf6ec,stroke:#4a8a57\n");
        out
    }

    /// The graph as Graphviz DOT (`digraph`), with the same shapes and edges as [`Graph::mermaid`] (blocks
    /// and used pipelines are clusters).
    pub fn dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quoted(self.name));
        out.push_str("  rankdir=LR;\n  compound=true;\n");
        out.push_str("  node [fontname=\"Helvetica\", fontsize=11];\n");
        out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
        self.dot_body(&mut out, "", 1);
        out.push_str("}\n");
        out
    }

    /// The graph as the `pipeline` extension of a run's first request, for the engine's report: its nodes
    /// (inputs and loop variables, bindings made by steps, outputs with the name their fields are sent
    /// under) and edges between node ids, with the pipelines used in it drawn inline (`checks.clippy`).
    pub(crate) fn report_json(&self) -> serde_json::Value {
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        self.flatten("", "", &mut nodes, &mut edges);
        // An edge from a used pipeline (`after checks`) starts at each of its outputs.
        let mut flat = Vec::new();
        for (from, to, kind) in edges {
            let starts: Vec<String> = match from {
                Place::Node(id) => vec![id],
                Place::Cluster(sub, anchor) => {
                    let outs: Vec<String> = nodes
                        .iter()
                        .filter(|(id, _, k, _)| *k == "output" && id.starts_with(&sub))
                        .map(|(id, _, _, _)| id.clone())
                        .collect();
                    if outs.is_empty() { vec![anchor] } else { outs }
                }
            };
            let to = match to {
                Place::Node(id) | Place::Cluster(_, id) => id,
            };
            for from in starts {
                flat.push(serde_json::json!({ "from": from, "to": to, "kind": kind }));
            }
        }
        let nodes: Vec<serde_json::Value> = nodes
            .into_iter()
            .map(|(id, label, kind, serves)| match serves {
                Some(s) => serde_json::json!({ "id": id, "label": label, "kind": kind, "serves": s }),
                None => serde_json::json!({ "id": id, "label": label, "kind": kind }),
            })
            .collect();
        serde_json::json!({ "name": self.name, "nodes": nodes, "edges": flat })
    }

    /// Collects the nodes `(id, label, kind, serves)` and edges of this graph drawn under `prefix`, its output
    /// names qualified by `qual`.
    #[allow(clippy::type_complexity)]
    fn flatten(
        &self,
        prefix: &str,
        qual: &str,
        nodes: &mut Vec<(String, String, &'static str, Option<String>)>,
        edges: &mut Vec<(Place, Place, &'static str)>,
    ) {
        for input in self.inputs {
            let label = format!("{}: {}", input.name, input.ty);
            nodes.push((format!("{prefix}in_{}", input.name), label, "input", None));
        }
        for (input, var) in self.loop_vars() {
            nodes.push((format!("{prefix}v_{var}"), var.to_owned(), "input", None));
            let from = Place::Node(format!("{prefix}in_{input}"));
            edges.push((from, Place::Node(format!("{prefix}v_{var}")), "data"));
        }
        for (j, b) in self.bindings.iter().enumerate() {
            match b.pipeline {
                Some(inner) => {
                    let name = b.names.first().copied().unwrap_or("_");
                    let sub = format!("{prefix}{name}__");
                    inner.flatten(&sub, &format!("{qual}{name}."), nodes, edges);
                }
                None => nodes.push((format!("{prefix}b{j}"), self.binding_label(j), "step", None)),
            }
        }
        for (from, to) in self.argument_edges(prefix) {
            edges.push((from, Place::Node(to), "data"));
        }
        for (i, o) in self.outputs.iter().enumerate() {
            let serves = format!("{qual}{}", o.name);
            nodes.push((
                format!("{prefix}o_{}", o.name),
                self.output_label(i),
                "output",
                Some(serves),
            ));
        }
        for e in self.edges {
            let (Some(from), Some(to)) = (self.place(e.from, prefix), self.place(e.to, prefix)) else {
                continue;
            };
            let kind = match e.kind {
                EdgeKind::Data => "data",
                EdgeKind::Value => "value",
                EdgeKind::After => "after",
            };
            edges.push((from, to, kind));
        }
    }

    /// `(input, variable)` for every variable of every loop.
    fn loop_vars(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        for b in self.blocks {
            if let GraphBlockKind::For { key, value } = b.kind {
                out.extend(std::iter::once(key).chain(value).map(|v| (b.input, v)));
            }
        }
        out
    }

    fn levels(&self) -> usize {
        self.outputs.iter().map(|o| o.level).max().unwrap_or(1)
    }

    fn waves(&self) -> usize {
        self.outputs
            .iter()
            .map(|o| o.wave)
            .chain(self.bindings.iter().map(|b| b.wave))
            .max()
            .unwrap_or(1)
    }

    /// Where name `name` is drawn, with node ids prefixed by `prefix` (the used pipelines it is inside).
    fn place(&self, name: &str, prefix: &str) -> Option<Place> {
        if let Some((used, field)) = name.split_once('.') {
            let j = self.bindings.iter().position(|b| b.names.contains(&used))?;
            let inner = self.bindings[j].pipeline?;
            let sub = format!("{prefix}{used}__");
            return inner.place(field, &sub);
        }
        if self.inputs.iter().any(|i| i.name == name) {
            return Some(Place::Node(format!("{prefix}in_{name}")));
        }
        if let Some(j) = self.bindings.iter().position(|b| b.names.contains(&name)) {
            return Some(match self.bindings[j].pipeline {
                Some(inner) => Place::Cluster(format!("{prefix}{name}__"), inner.anchor(&format!("{prefix}{name}__"))),
                None => Place::Node(format!("{prefix}b{j}")),
            });
        }
        if self.outputs.iter().any(|o| o.name == name) {
            return Some(Place::Node(format!("{prefix}o_{name}")));
        }
        let is_var = self.blocks.iter().any(|b| match b.kind {
            GraphBlockKind::For { key, value } => key == name || value == Some(name),
            GraphBlockKind::If { .. } => false,
        });
        is_var.then(|| Place::Node(format!("{prefix}v_{name}")))
    }

    /// A node inside the subgraph drawn for this graph under `prefix` (for DOT edges into a cluster).
    fn anchor(&self, prefix: &str) -> String {
        match self.inputs.first() {
            Some(i) => format!("{prefix}in_{}", i.name),
            None => self
                .outputs
                .first()
                .map_or_else(|| format!("{prefix}none"), |o| format!("{prefix}o_{}", o.name)),
        }
    }

    fn block_title(&self, l: usize) -> String {
        let b = &self.blocks[l];
        match b.kind {
            GraphBlockKind::For { key, value: None } => format!("for {key} in {}", b.input),
            GraphBlockKind::For { key, value: Some(v) } => format!("for ({key}, {v}) in {}", b.input),
            GraphBlockKind::If { negated } => format!("if {}{}", if negated { "!" } else { "" }, b.input),
        }
    }

    fn binding_label(&self, j: usize) -> String {
        let b = &self.bindings[j];
        let names = if b.tuple {
            format!("({})", b.names.join(", "))
        } else {
            b.names.join(", ")
        };
        let mut label = format!("{names} = {}(…)", b.step);
        if self.waves() > 1 && b.wave > 1 {
            let _ = write!(label, "\nwave {}", b.wave);
        }
        label
    }

    fn output_label(&self, i: usize) -> String {
        let o = &self.outputs[i];
        let args = if o.args > 0 { "…" } else { "" };
        let mut label = format!("{} = {}.{}({args})", o.name, o.target, o.leaf);
        let mut notes = Vec::new();
        if self.levels() > 1 {
            notes.push(format!("level {}", o.level));
        }
        if self.waves() > 1 {
            notes.push(format!("wave {}", o.wave));
        }
        if !notes.is_empty() {
            let _ = write!(label, "\n{}", notes.join(", "));
        }
        label
    }

    /// The items of block `block` (`None`: the body), in order: bindings (by index) and outputs.
    fn items_of(&self, block: Option<usize>) -> (Vec<usize>, Vec<usize>) {
        let bindings = (0..self.bindings.len())
            .filter(|&j| self.bindings[j].block == block)
            .collect();
        let outputs = (0..self.outputs.len())
            .filter(|&i| self.outputs[i].block == block)
            .collect();
        (bindings, outputs)
    }

    fn mermaid_body(&self, out: &mut String, prefix: &str, depth: usize) {
        let pad = "  ".repeat(depth);
        for input in self.inputs {
            let label = format!("{}: {}", input.name, input.ty);
            let _ = writeln!(
                out,
                "{pad}{prefix}in_{}[/{}/]:::input",
                input.name,
                mermaid_text(&label)
            );
        }
        self.mermaid_block(out, None, prefix, depth);
        // Edges (outside the subgraphs, which would otherwise take in the nodes they name).
        for (input, var) in self.loop_vars() {
            let _ = writeln!(out, "{pad}{prefix}in_{input} --> {prefix}v_{var}");
        }
        for e in self.edges {
            let (Some(from), Some(to)) = (self.place(e.from, prefix), self.place(e.to, prefix)) else {
                continue;
            };
            let (from, to) = (place_id(&from), place_id(&to));
            let arrow = match e.kind {
                EdgeKind::Data => "-->".to_owned(),
                EdgeKind::Value => "==>|value|".to_owned(),
                EdgeKind::After => "-.->|after|".to_owned(),
            };
            let _ = writeln!(out, "{pad}{from} {arrow} {to}");
        }
        for (l, b) in self.blocks.iter().enumerate() {
            if let GraphBlockKind::If { .. } = b.kind
                && let Some(from) = self.place(b.input, prefix)
            {
                let _ = writeln!(out, "{pad}{} -.- {prefix}blk{l}", place_id(&from));
            }
        }
        // Arguments of used pipelines go to their inputs, one argument per input.
        for (from, to) in self.argument_edges(prefix) {
            let _ = writeln!(out, "{pad}{} --> {to}", place_id(&from));
        }
    }

    /// The edges from what each used pipeline is given to its inputs (one argument per input), drawn under
    /// `prefix`: where each starts, and the input node it ends at.
    fn argument_edges(&self, prefix: &str) -> Vec<(Place, String)> {
        let mut out = Vec::new();
        for b in self.bindings {
            let Some(inner) = b.pipeline else {
                continue;
            };
            let sub = format!("{prefix}{}__", b.names.first().copied().unwrap_or("_"));
            for (arg, input) in b.args.iter().zip(inner.inputs) {
                for from in arg.iter().filter_map(|name| self.place(name, prefix)) {
                    out.push((from, format!("{sub}in_{}", input.name)));
                }
            }
        }
        out
    }

    fn mermaid_block(&self, out: &mut String, block: Option<usize>, prefix: &str, depth: usize) {
        let pad = "  ".repeat(depth);
        if let Some(l) = block
            && let GraphBlockKind::For { key, value } = self.blocks[l].kind
        {
            for var in std::iter::once(key).chain(value) {
                let _ = writeln!(out, "{pad}{prefix}v_{var}[/{}/]:::input", mermaid_text(var));
            }
        }
        let (bindings, outputs) = self.items_of(block);
        for j in bindings {
            let b = &self.bindings[j];
            match b.pipeline {
                Some(inner) => {
                    let name = b.names.first().copied().unwrap_or("_");
                    let sub = format!("{prefix}{name}__");
                    let title = format!("{name} = {}(…)", b.step);
                    let _ = writeln!(out, "{pad}subgraph {sub}[{}]", mermaid_text(&title));
                    inner.mermaid_body(out, &sub, depth + 1);
                    let _ = writeln!(out, "{pad}end");
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{pad}{prefix}b{j}[{}]:::step",
                        mermaid_text(&self.binding_label(j))
                    );
                }
            }
        }
        for i in outputs {
            let _ = writeln!(
                out,
                "{pad}{prefix}o_{}([{}]):::output",
                self.outputs[i].name,
                mermaid_text(&self.output_label(i))
            );
        }
        for l in (0..self.blocks.len()).filter(|&l| self.blocks[l].parent == block) {
            let _ = writeln!(
                out,
                "{pad}subgraph {prefix}blk{l}[{}]",
                mermaid_text(&self.block_title(l))
            );
            self.mermaid_block(out, Some(l), prefix, depth + 1);
            let _ = writeln!(out, "{pad}end");
        }
    }

    fn dot_body(&self, out: &mut String, prefix: &str, depth: usize) {
        let pad = "  ".repeat(depth);
        for input in self.inputs {
            let label = format!("{}: {}", input.name, input.ty);
            let _ = writeln!(
                out,
                "{pad}{} [label={}, shape=parallelogram, style=filled, fillcolor=\"#eef3fb\"];",
                quoted(&format!("{prefix}in_{}", input.name)),
                quoted(&label)
            );
        }
        self.dot_block(out, None, prefix, depth);
        // Edges (outside the clusters, which would otherwise take in the nodes they name).
        for (input, var) in self.loop_vars() {
            let (from, to) = (format!("{prefix}in_{input}"), format!("{prefix}v_{var}"));
            let _ = writeln!(out, "{pad}{} -> {};", quoted(&from), quoted(&to));
        }
        for e in self.edges {
            let (Some(from), Some(to)) = (self.place(e.from, prefix), self.place(e.to, prefix)) else {
                continue;
            };
            let mut attrs: Vec<String> = match e.kind {
                EdgeKind::Data => Vec::new(),
                EdgeKind::Value => vec!["style=bold".into(), "label=\"value\"".into()],
                EdgeKind::After => vec!["style=dashed".into(), "label=\"after\"".into()],
            };
            if let Place::Cluster(c, _) = &from {
                attrs.push(format!("ltail={}", quoted(&format!("cluster_{c}"))));
            }
            if let Place::Cluster(c, _) = &to {
                attrs.push(format!("lhead={}", quoted(&format!("cluster_{c}"))));
            }
            let _ = writeln!(
                out,
                "{pad}{} -> {}{};",
                quoted(dot_node(&from)),
                quoted(dot_node(&to)),
                dot_attrs(&attrs)
            );
        }
        for (l, b) in self.blocks.iter().enumerate() {
            if let GraphBlockKind::If { .. } = b.kind
                && let Some(from) = self.place(b.input, prefix)
                && let Some(inside) = self.first_node(Some(l), prefix)
            {
                let attrs = [
                    "style=dotted".to_owned(),
                    "arrowhead=none".to_owned(),
                    format!("lhead={}", quoted(&format!("cluster_{prefix}blk{l}"))),
                ];
                let _ = writeln!(
                    out,
                    "{pad}{} -> {}{};",
                    quoted(dot_node(&from)),
                    quoted(&inside),
                    dot_attrs(&attrs)
                );
            }
        }
        for (from, to) in self.argument_edges(prefix) {
            let _ = writeln!(out, "{pad}{} -> {};", quoted(dot_node(&from)), quoted(&to));
        }
    }

    /// A node drawn inside block `block` (or one of its blocks), for an edge to its cluster.
    fn first_node(&self, block: Option<usize>, prefix: &str) -> Option<String> {
        let (bindings, outputs) = self.items_of(block);
        if let Some(&j) = bindings.first() {
            let b = &self.bindings[j];
            return Some(match b.pipeline {
                Some(inner) => inner.anchor(&format!("{prefix}{}__", b.names.first().copied().unwrap_or("_"))),
                None => format!("{prefix}b{j}"),
            });
        }
        if let Some(&i) = outputs.first() {
            return Some(format!("{prefix}o_{}", self.outputs[i].name));
        }
        (0..self.blocks.len())
            .filter(|&l| self.blocks[l].parent == block)
            .find_map(|l| self.first_node(Some(l), prefix))
    }

    fn dot_block(&self, out: &mut String, block: Option<usize>, prefix: &str, depth: usize) {
        let pad = "  ".repeat(depth);
        if let Some(l) = block
            && let GraphBlockKind::For { key, value } = self.blocks[l].kind
        {
            for var in std::iter::once(key).chain(value) {
                let id = format!("{prefix}v_{var}");
                let _ = writeln!(
                    out,
                    "{pad}{} [label={}, shape=parallelogram, style=filled, fillcolor=\"#eef3fb\"];",
                    quoted(&id),
                    quoted(var)
                );
            }
        }
        let (bindings, outputs) = self.items_of(block);
        for j in bindings {
            let b = &self.bindings[j];
            match b.pipeline {
                Some(inner) => {
                    let name = b.names.first().copied().unwrap_or("_");
                    let sub = format!("{prefix}{name}__");
                    let title = format!("{name} = {}(…)", b.step);
                    let _ = writeln!(out, "{pad}subgraph {} {{", quoted(&format!("cluster_{sub}")));
                    let _ = writeln!(out, "{pad}  label={};\n{pad}  style=rounded;", quoted(&title));
                    inner.dot_body(out, &sub, depth + 1);
                    let _ = writeln!(out, "{pad}}}");
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{pad}{} [label={}, shape=box];",
                        quoted(&format!("{prefix}b{j}")),
                        quoted(&self.binding_label(j))
                    );
                }
            }
        }
        for i in outputs {
            let _ = writeln!(
                out,
                "{pad}{} [label={}, shape=box, style=\"rounded,filled\", fillcolor=\"#eaf6ec\"];",
                quoted(&format!("{prefix}o_{}", self.outputs[i].name)),
                quoted(&self.output_label(i))
            );
        }
        for l in (0..self.blocks.len()).filter(|&l| self.blocks[l].parent == block) {
            let _ = writeln!(out, "{pad}subgraph {} {{", quoted(&format!("cluster_{prefix}blk{l}")));
            let _ = writeln!(
                out,
                "{pad}  label={};\n{pad}  style=dashed;",
                quoted(&self.block_title(l))
            );
            self.dot_block(out, Some(l), prefix, depth + 1);
            let _ = writeln!(out, "{pad}}}");
        }
    }
}

/// The id an edge starts or ends at in Mermaid (a used pipeline's subgraph is an id too).
fn place_id(p: &Place) -> &str {
    match p {
        Place::Node(id) | Place::Cluster(id, _) => id,
    }
}

/// The node an edge starts or ends at in DOT (a used pipeline's is one of its nodes, with `lhead`/`ltail`).
fn dot_node(p: &Place) -> &str {
    match p {
        Place::Node(id) | Place::Cluster(_, id) => id,
    }
}

fn dot_attrs(attrs: &[String]) -> String {
    if attrs.is_empty() {
        String::new()
    } else {
        format!(" [{}]", attrs.join(", "))
    }
}

/// A Mermaid label: quoted, with `"`, `&`, `<` and `>` as entity codes (so `Vec<String>` is not taken for
/// markup) and line breaks as `<br/>`.
fn mermaid_text(s: &str) -> String {
    let escaped = s
        .replace('&', "#38;")
        .replace('"', "#quot;")
        .replace('<', "#60;")
        .replace('>', "#62;")
        .replace('\n', "<br/>");
    format!("\"{escaped}\"")
}

/// A DOT string: quoted, with `"` and `\` escaped and line breaks as `\n`.
fn quoted(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    static USED: Graph = Graph {
        name: "lint",
        inputs: &[GraphInput {
            name: "src",
            ty: "Directory",
        }],
        bindings: &[GraphBinding {
            names: &["tc"],
            tuple: false,
            step: "toolchain",
            args: &[&["src"]],
            block: None,
            wave: 1,
            pipeline: None,
        }],
        outputs: &[GraphOutput {
            name: "ready",
            target: "tc",
            leaf: "sync",
            args: 0,
            block: None,
            level: 1,
            wave: 1,
        }],
        blocks: &[],
        edges: &[
            GraphEdge {
                from: "src",
                to: "tc",
                kind: EdgeKind::Data,
            },
            GraphEdge {
                from: "tc",
                to: "ready",
                kind: EdgeKind::Data,
            },
        ],
    };

    static USING: Graph = Graph {
        name: "ci",
        inputs: &[GraphInput {
            name: "src",
            ty: "Directory",
        }],
        bindings: &[
            GraphBinding {
                names: &["checks"],
                tuple: false,
                step: "lint::run",
                args: &[&["src"]],
                block: None,
                wave: 1,
                pipeline: Some(&USED),
            },
            GraphBinding {
                names: &["t"],
                tuple: false,
                step: "tests",
                args: &[&["checks"]],
                block: Some(0),
                wave: 1,
                pipeline: None,
            },
        ],
        outputs: &[GraphOutput {
            name: "log",
            target: "t",
            leaf: "stdout",
            args: 0,
            block: Some(0),
            level: 2,
            wave: 1,
        }],
        blocks: &[GraphBlock {
            kind: GraphBlockKind::If { negated: true },
            input: "draft",
            parent: None,
        }],
        edges: &[
            GraphEdge {
                from: "checks.ready",
                to: "t",
                kind: EdgeKind::Data,
            },
            GraphEdge {
                from: "checks",
                to: "log",
                kind: EdgeKind::After,
            },
        ],
    };

    #[test]
    fn a_used_pipeline_is_a_subgraph_fed_by_the_arguments() {
        let m = USING.mermaid();
        assert!(m.contains("subgraph checks__[\"checks = lint::run(…)\"]"), "{m}");
        assert!(m.contains("checks__in_src[/\"src: Directory\"/]:::input"), "{m}");
        assert!(m.contains("in_src --> checks__in_src"), "{m}");
        // An output of the used pipeline feeds a step; `after checks` points at the whole subgraph.
        assert!(m.contains("checks__o_ready --> b1"), "{m}");
        assert!(m.contains("checks__ -.->|after| o_log"), "{m}");
        assert!(m.contains("subgraph blk0[\"if !draft\"]"), "{m}");
        let d = USING.dot();
        assert!(d.contains("subgraph \"cluster_checks__\""), "{d}");
        assert!(
            d.contains("\"checks__in_src\" -> \"o_log\" [style=dashed, label=\"after\", ltail=\"cluster_checks__\"];"),
            "{d}"
        );
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(mermaid_text("a \"b\"\nc"), "\"a #quot;b#quot;<br/>c\"");
        assert_eq!(mermaid_text("Vec<A&B>"), "\"Vec#60;A#38;B#62;\"");
        assert_eq!(quoted("a \"b\"\\\nc"), "\"a \\\"b\\\"\\\\\\nc\"");
    }
}
