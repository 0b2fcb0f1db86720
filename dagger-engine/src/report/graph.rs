//! The graph of a client's pipeline, drawn as inline SVG for the HTML report: inputs on the left, each node
//! in the column of its longest path from an input, outputs coloured by how the operations that computed
//! them ended. The layout is computed here (no script, no library), so the report stays one file.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::report::State;
use crate::solver::events::{EdgeKind, NodeKind, PipelineGraph};

/// Width of a node's box.
const NODE_W: usize = 200;
/// Height of a node's box.
const NODE_H: usize = 30;
/// Space between columns.
const COL_GAP: usize = 56;
/// Space between the boxes of one column.
const ROW_GAP: usize = 12;
/// Margin around the drawing.
const MARGIN: usize = 8;
/// Characters of a label drawn in a box (the whole label is its tooltip).
const LABEL_CHARS: usize = 30;

/// The column of each node: the length of its longest path from a node nothing feeds. Nodes on a cycle
/// (a graph a client made up) stay in the column reached when the walk gave up on them.
pub(crate) fn columns(g: &PipelineGraph) -> Vec<usize> {
    let index: HashMap<&str, usize> = g.nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
    let n = g.nodes.len();
    let mut preds = vec![0usize; n];
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for e in &g.edges {
        if let (Some(&a), Some(&b)) = (index.get(e.from.as_str()), index.get(e.to.as_str()))
            && a != b
        {
            succ[a].push(b);
            preds[b] += 1;
        }
    }
    let mut col = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| preds[i] == 0).collect();
    while let Some(a) = ready.pop() {
        for &b in &succ[a] {
            col[b] = col[b].max(col[a] + 1);
            preds[b] -= 1;
            if preds[b] == 0 {
                ready.push(b);
            }
        }
    }
    col
}

/// How the operations serving `serves` (an output's name; the elements of a loop's output are named
/// `name[key]`) ended, all together: failed if one failed, running if one runs, cached if all came from the
/// cache, done if all ended; `None` when no operation served it.
pub(crate) fn output_state<'a>(serves: &str, states: impl Iterator<Item = (&'a str, State)>) -> Option<State> {
    let mut seen: Vec<State> = Vec::new();
    for (name, state) in states {
        let element = name
            .strip_prefix(serves)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('['));
        if element {
            seen.push(state);
        }
    }
    if seen.is_empty() {
        return None;
    }
    Some(if seen.contains(&State::Failed) {
        State::Failed
    } else if seen.contains(&State::Running) {
        State::Running
    } else if seen.contains(&State::Queued) {
        State::Queued
    } else if seen.iter().all(|s| *s == State::Cached) {
        State::Cached
    } else {
        State::Done
    })
}

/// Draws `g` as an `<svg>`; `state_of` says how an output's operations ended (see [`output_state`]).
pub(crate) fn svg(g: &PipelineGraph, state_of: &dyn Fn(&str) -> Option<State>, out: &mut String) {
    let cols = columns(g);
    let mut rows_in: Vec<usize> = Vec::new();
    let mut pos: Vec<(usize, usize)> = Vec::with_capacity(g.nodes.len());
    for &c in &cols {
        if rows_in.len() <= c {
            rows_in.resize(c + 1, 0);
        }
        let x = MARGIN + c * (NODE_W + COL_GAP);
        let y = MARGIN + rows_in[c] * (NODE_H + ROW_GAP);
        rows_in[c] += 1;
        pos.push((x, y));
    }
    let width = MARGIN * 2 + rows_in.len().max(1) * (NODE_W + COL_GAP) - COL_GAP;
    let height = MARGIN * 2 + rows_in.iter().copied().max().unwrap_or(1) * (NODE_H + ROW_GAP) - ROW_GAP;
    let _ = write!(
        out,
        "<svg class=\"graph\" data-pipeline=\"{}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} \
         {height}\" role=\"img\" aria-label=\"the graph of pipeline {}\">",
        super::html::esc(&g.name),
        super::html::esc(&g.name)
    );
    let index: HashMap<&str, usize> = g.nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
    for e in &g.edges {
        let (Some(&a), Some(&b)) = (index.get(e.from.as_str()), index.get(e.to.as_str())) else {
            continue;
        };
        let (x1, y1) = (pos[a].0 + NODE_W, pos[a].1 + NODE_H / 2);
        let (x2, y2) = (pos[b].0, pos[b].1 + NODE_H / 2);
        let bend = (x2.abs_diff(x1) / 2).max(COL_GAP / 2);
        let kind = match e.kind {
            EdgeKind::Data => "data",
            EdgeKind::Value => "value",
            EdgeKind::After => "after",
        };
        let _ = write!(
            out,
            "<path class=\"edge {kind}\" d=\"M{x1} {y1} C{} {y1} {} {y2} {x2} {y2}\"/>",
            x1 + bend,
            x2.saturating_sub(bend)
        );
    }
    for (i, node) in g.nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let kind = match node.kind {
            NodeKind::Input => "input",
            NodeKind::Step => "step",
            NodeKind::Output => "output",
        };
        let state = node.serves.as_deref().and_then(state_of);
        let label = node.label.replace('\n', " · ");
        let mut shown: String = label.chars().take(LABEL_CHARS).collect();
        if label.chars().count() > LABEL_CHARS {
            shown.pop();
            shown.push('…');
        }
        let _ = write!(
            out,
            "<g class=\"node {kind}{}\" data-node=\"{}\"{}><title>{}</title><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" \
             height=\"{NODE_H}\" rx=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text></g>",
            state.map(|s| format!(" s-{}", s.as_str())).unwrap_or_default(),
            super::html::esc(&node.id),
            state
                .map(|s| format!(" data-state=\"{}\"", s.as_str()))
                .unwrap_or_default(),
            super::html::esc(&label),
            if node.kind == NodeKind::Output { NODE_H / 2 } else { 3 },
            x + 8,
            y + NODE_H / 2 + 4,
            super::html::esc(&shown)
        );
    }
    out.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::events::{GraphEdge, GraphNode};

    fn node(id: &str, kind: NodeKind, serves: Option<&str>) -> GraphNode {
        GraphNode {
            id: id.into(),
            label: format!("{id} <label>"),
            kind,
            serves: serves.map(str::to_owned),
        }
    }

    fn edge(from: &str, to: &str, kind: EdgeKind) -> GraphEdge {
        GraphEdge {
            from: from.into(),
            to: to.into(),
            kind,
        }
    }

    /// src → tc → tests, tc → lint; tests ⇢ publish (after).
    fn ci() -> PipelineGraph {
        PipelineGraph {
            name: "ci".into(),
            nodes: vec![
                node("in_src", NodeKind::Input, None),
                node("b0", NodeKind::Step, None),
                node("o_tests", NodeKind::Output, Some("tests")),
                node("o_lint", NodeKind::Output, Some("lint")),
                node("o_publish", NodeKind::Output, Some("publish")),
            ],
            edges: vec![
                edge("in_src", "b0", EdgeKind::Data),
                edge("b0", "o_tests", EdgeKind::Data),
                edge("b0", "o_lint", EdgeKind::Data),
                edge("o_tests", "o_publish", EdgeKind::After),
                edge("b0", "o_publish", EdgeKind::Data),
            ],
        }
    }

    #[test]
    fn each_node_sits_in_the_column_of_its_longest_path() {
        assert_eq!(columns(&ci()), [0, 1, 2, 2, 3]);
        // A cycle does not hang the layout.
        let mut g = ci();
        g.edges.push(edge("o_publish", "b0", EdgeKind::After));
        assert_eq!(columns(&g).len(), 5);
    }

    #[test]
    fn an_output_takes_the_state_of_the_operations_serving_it() {
        let states = [
            ("tests[linux]", State::Done),
            ("tests[mac]", State::Failed),
            ("lint", State::Cached),
            ("lint", State::Cached),
            ("linter", State::Failed),
            ("build", State::Cached),
            ("build", State::Done),
        ];
        let of = |s: &str| output_state(s, states.iter().map(|(n, st)| (*n, *st)));
        assert_eq!(of("tests"), Some(State::Failed));
        assert_eq!(of("lint"), Some(State::Cached), "`linter` is another output");
        assert_eq!(of("build"), Some(State::Done));
        assert_eq!(of("publish"), None);
    }

    #[test]
    fn the_drawing_has_every_node_and_edge_escaped_and_coloured() {
        let mut out = String::new();
        let state_of = |s: &str| (s == "tests").then_some(State::Failed);
        svg(&ci(), &state_of, &mut out);
        assert!(out.starts_with("<svg class=\"graph\" data-pipeline=\"ci\""), "{out}");
        assert_eq!(out.matches("<g class=\"node").count(), 5);
        assert_eq!(out.matches("<path class=\"edge").count(), 5);
        assert_eq!(out.matches("class=\"edge after\"").count(), 1);
        assert!(out.contains("<g class=\"node output s-failed\" data-node=\"o_tests\" data-state=\"failed\">"));
        assert!(out.contains("<title>in_src &lt;label&gt;</title>"));
        assert!(!out.contains("<label>"));
        assert!(out.ends_with("</svg>"));
    }
}
