//! The immutable query builder: a chain of field selections that prints as a GraphQL document.
//!
//! Every builder call appends one link to a chain shared through `Arc`, so cloning an object is cheap and a
//! chain can fan out into many pipelines without copying. Arguments keep the order in which they were
//! written, which makes the printed documents deterministic and snapshot-testable.

use std::fmt::Write as _;
use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::scalars::Id;

/// A GraphQL argument value, printed inline as a literal.
///
/// `Object` values are lazy: they stand for the ID of another pipeline object, which is only asked from the
/// engine when a leaf that needs it runs.
#[derive(Clone, Debug)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer literal.
    Int(i64),
    /// A string literal, escaped when printed.
    String(String),
    /// An enum value, printed bare (`SHARED`).
    Enum(&'static str),
    /// A list literal.
    List(Vec<Value>),
    /// An input object literal; fields keep their order.
    Input(Vec<(&'static str, Value)>),
    /// The ID of another object, resolved lazily.
    Object(ObjectRef),
}

/// A reference to a pipeline object passed as an argument; its ID is resolved when a leaf runs.
#[derive(Clone, Debug)]
pub struct ObjectRef {
    /// The GraphQL type name of the object (`Directory`).
    pub type_name: &'static str,
    /// The selection that produces the object.
    pub selection: Selection,
}

/// One link of a selection chain.
#[derive(Clone, Debug)]
enum Step {
    /// `name(args…)`.
    Field {
        name: &'static str,
        args: Vec<(&'static str, Value)>,
    },
    /// `... on Type`, used after `node(id:)` to continue on a concrete type.
    Fragment { on: &'static str },
}

#[derive(Debug)]
struct Link {
    step: Step,
    parent: Option<Arc<Link>>,
    /// The ID of the object this link produces, once known (resolved, or given by `node(id:)`).
    id: OnceCell<Id>,
}

/// An immutable selection chain from the root `Query` type down to some field.
///
/// Cloning is cheap (one `Arc`). The empty selection is the root query.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    head: Option<Arc<Link>>,
}

/// How [`Selection::print`] writes the IDs of object arguments.
#[derive(Clone, Copy)]
pub enum IdMode<'a> {
    /// Write resolved IDs; an unresolved object argument is an error.
    Resolved,
    /// Write resolved IDs, and a placeholder made by the function for unresolved ones (offline plans).
    Placeholder(&'a dyn Fn(&ObjectRef) -> String),
}

impl std::fmt::Debug for IdMode<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdMode::Resolved => f.write_str("Resolved"),
            IdMode::Placeholder(_) => f.write_str("Placeholder"),
        }
    }
}

/// An object argument was printed before its ID was resolved.
#[derive(Debug, Clone)]
pub struct UnresolvedId {
    /// The type of the object whose ID is missing.
    pub type_name: &'static str,
}

impl Selection {
    /// The root selection (the `Query` type).
    pub fn root() -> Self {
        Self::default()
    }

    /// Appends a field selection with arguments in the given order.
    pub fn select(&self, name: &'static str, args: Vec<(&'static str, Value)>) -> Self {
        self.push(Step::Field { name, args })
    }

    /// Appends an inline fragment `... on Type`.
    pub fn fragment(&self, on: &'static str) -> Self {
        self.push(Step::Fragment { on })
    }

    /// A selection that loads an object of type `type_name` from its ID with `node(id:)`.
    ///
    /// The ID is remembered, so passing the loaded object as an argument costs no request.
    pub fn load(type_name: &'static str, id: Id) -> Self {
        let sel = Self::root()
            .select("node", vec![("id", Value::String(id.as_str().to_owned()))])
            .fragment(type_name);
        if let Some(link) = &sel.head {
            // A fresh cell cannot be set already.
            let _ = link.id.set(id);
        }
        sel
    }

    fn push(&self, step: Step) -> Self {
        Self {
            head: Some(Arc::new(Link {
                step,
                parent: self.head.clone(),
                id: OnceCell::new(),
            })),
        }
    }

    /// This selection and every shorter selection it extends, deepest first (the root excluded): the
    /// objects a chain passes through, each of which may have a known ID.
    pub fn prefixes(&self) -> Vec<Selection> {
        let mut out = Vec::new();
        let mut cur = self.head.clone();
        while let Some(link) = cur {
            cur = link.parent.clone();
            out.push(Selection { head: Some(link) });
        }
        out
    }

    /// The same chain with its part down to `at` (one of [`Self::prefixes`]) replaced by `base`: how a
    /// document refers to an object whose ID is known (`base` loads it with `node(id:)`) instead of repeating
    /// the chain that built it. Returns `None` when `at` is not part of this chain.
    pub fn rebase(&self, at: &Selection, base: Selection) -> Option<Selection> {
        let mut below: Vec<&Link> = Vec::new();
        let mut cur = self.head.as_ref();
        loop {
            let link = cur?;
            if at.head.as_ref().is_some_and(|a| Arc::ptr_eq(a, link)) {
                break;
            }
            below.push(link);
            cur = link.parent.as_ref();
        }
        Some(
            below
                .into_iter()
                .rev()
                .fold(base, |sel, link| sel.push(link.step.clone())),
        )
    }

    /// The links from the root down to this selection.
    fn links(&self) -> Vec<&Link> {
        let mut out = Vec::new();
        let mut cur = self.head.as_deref();
        while let Some(link) = cur {
            out.push(link);
            cur = link.parent.as_deref();
        }
        out.reverse();
        out
    }

    /// The ID of the object this selection produces, if it is known already.
    pub fn known_id(&self) -> Option<&Id> {
        self.head.as_ref().and_then(|l| l.id.get())
    }

    /// The cell that caches this selection's ID (`None` for the root, which cannot be passed by ID).
    pub(crate) fn id_cell(&self) -> Option<&OnceCell<Id>> {
        self.head.as_ref().map(|l| &l.id)
    }

    /// Records the ID of the object this selection produces (first write wins).
    pub fn set_id(&self, id: Id) {
        if let Some(link) = &self.head {
            let _ = link.id.set(id);
        }
    }

    /// Whether two selections are the same chain (pointer identity, not structural equality).
    pub fn same_as(&self, other: &Selection) -> bool {
        match (&self.head, &other.head) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// Every object argument in the chain whose ID is not known yet, in chain order, without duplicates.
    pub fn unresolved_objects(&self) -> Vec<ObjectRef> {
        let mut out: Vec<ObjectRef> = Vec::new();
        for link in self.links() {
            if let Step::Field { args, .. } = &link.step {
                for (_, value) in args {
                    collect_unresolved(value, &mut out);
                }
            }
        }
        out
    }

    /// The response keys from the root to the last field, used to find the leaf in the `data` object.
    pub fn path(&self) -> Vec<&'static str> {
        self.links()
            .into_iter()
            .filter_map(|l| match l.step {
                Step::Field { name, .. } => Some(name),
                Step::Fragment { .. } => None,
            })
            .collect()
    }

    /// Prints the selection as the body of a document, without the surrounding `query`.
    ///
    /// `alias` names the first field (used to batch several selections in one document). With `indent`, the
    /// output spans lines, indented by that many levels of two spaces; without it, it is one compact line.
    pub fn print_fields(
        &self,
        alias: Option<&str>,
        indent: Option<usize>,
        ids: IdMode<'_>,
        out: &mut String,
    ) -> Result<(), UnresolvedId> {
        let links = self.links();
        let depth0 = indent.unwrap_or(0);
        for (i, link) in links.iter().enumerate() {
            if indent.is_some() {
                push_indent(out, depth0 + i);
            }
            match &link.step {
                Step::Field { name, args } => {
                    if let (0, Some(alias)) = (i, alias) {
                        out.push_str(alias);
                        out.push_str(if indent.is_some() { ": " } else { ":" });
                    }
                    out.push_str(name);
                    if !args.is_empty() {
                        out.push('(');
                        for (j, (arg, value)) in args.iter().enumerate() {
                            if j > 0 {
                                out.push_str(if indent.is_some() { ", " } else { "," });
                            }
                            out.push_str(arg);
                            out.push_str(if indent.is_some() { ": " } else { ":" });
                            print_value(value, ids, indent.is_some(), out)?;
                        }
                        out.push(')');
                    }
                }
                Step::Fragment { on } => {
                    out.push_str("... on ");
                    out.push_str(on);
                }
            }
            if i + 1 < links.len() {
                out.push_str(if indent.is_some() { " {\n" } else { "{" });
            } else if indent.is_some() {
                out.push('\n');
            }
        }
        for i in (0..links.len().saturating_sub(1)).rev() {
            if indent.is_some() {
                push_indent(out, depth0 + i);
                out.push_str("}\n");
            } else {
                out.push('}');
            }
        }
        Ok(())
    }

    /// Prints the whole document: `query{…}` on one line (the form sent on the wire).
    pub fn print(&self, ids: IdMode<'_>) -> Result<String, UnresolvedId> {
        let mut out = String::from("query{");
        self.print_fields(None, None, ids, &mut out)?;
        out.push('}');
        Ok(out)
    }

    /// Prints the whole document over several indented lines (for humans and snapshots).
    pub fn print_pretty(&self, ids: IdMode<'_>) -> Result<String, UnresolvedId> {
        let mut out = String::from("query {\n");
        self.print_fields(None, Some(1), ids, &mut out)?;
        out.push_str("}\n");
        Ok(out)
    }
}

fn push_indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn collect_unresolved(value: &Value, out: &mut Vec<ObjectRef>) {
    match value {
        Value::Object(obj)
            if obj.selection.known_id().is_none() && !out.iter().any(|o| o.selection.same_as(&obj.selection)) =>
        {
            out.push(obj.clone());
        }
        Value::List(items) => items.iter().for_each(|v| collect_unresolved(v, out)),
        Value::Input(fields) => fields.iter().for_each(|(_, v)| collect_unresolved(v, out)),
        _ => {}
    }
}

fn print_value(value: &Value, ids: IdMode<'_>, spaced: bool, out: &mut String) -> Result<(), UnresolvedId> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::String(s) => write_string(s, out),
        Value::Enum(e) => out.push_str(e),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(if spaced { ", " } else { "," });
                }
                print_value(item, ids, spaced, out)?;
            }
            out.push(']');
        }
        Value::Input(fields) => {
            out.push('{');
            for (i, (name, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(if spaced { ", " } else { "," });
                }
                out.push_str(name);
                out.push_str(if spaced { ": " } else { ":" });
                print_value(v, ids, spaced, out)?;
            }
            out.push('}');
        }
        Value::Object(obj) => match (obj.selection.known_id(), ids) {
            (Some(id), _) => write_string(id.as_str(), out),
            (None, IdMode::Placeholder(f)) => write_string(&f(obj), out),
            (None, IdMode::Resolved) => {
                return Err(UnresolvedId {
                    type_name: obj.type_name,
                });
            }
        },
    }
    Ok(())
}

/// Writes `s` as a GraphQL string literal, escaping quotes, backslashes and control characters.
///
/// Other characters, non-ASCII included, are valid source characters and are written as they are.
pub fn write_string(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_chain_with_arguments_in_written_order() {
        let sel = Selection::root()
            .select("container", vec![])
            .select("from", vec![("address", Value::String("alpine".into()))])
            .select(
                "withExec",
                vec![
                    (
                        "args",
                        Value::List(vec![Value::String("echo".into()), Value::String("hi".into())]),
                    ),
                    ("expect", Value::Enum("ANY")),
                    ("useEntrypoint", Value::Bool(true)),
                ],
            )
            .select("stdout", vec![]);
        assert_eq!(
            sel.print(IdMode::Resolved).expect("no objects"),
            r#"query{container{from(address:"alpine"){withExec(args:["echo","hi"],expect:ANY,useEntrypoint:true){stdout}}}}"#
        );
        assert_eq!(sel.path(), vec!["container", "from", "withExec", "stdout"]);
    }

    #[test]
    fn unresolved_object_is_an_error_not_a_panic() {
        let dir = Selection::root().select("directory", vec![]);
        let sel = Selection::root().select("container", vec![]).select(
            "withDirectory",
            vec![
                ("path", Value::String("/src".into())),
                (
                    "source",
                    Value::Object(ObjectRef {
                        type_name: "Directory",
                        selection: dir.clone(),
                    }),
                ),
            ],
        );
        let err = sel.print(IdMode::Resolved).expect_err("unresolved");
        assert_eq!(err.type_name, "Directory");
        assert_eq!(sel.unresolved_objects().len(), 1);
        dir.set_id(Id::from("dir-1"));
        assert!(sel.unresolved_objects().is_empty());
        assert!(
            sel.print(IdMode::Resolved)
                .expect("resolved")
                .contains(r#"source:"dir-1""#)
        );
    }

    #[test]
    fn a_chain_rebased_on_a_known_object_starts_with_node() {
        let tc = Selection::root()
            .select("container", vec![])
            .select("from", vec![("address", Value::String("alpine".into()))]);
        let leaf = tc
            .select(
                "withExec",
                vec![("args", Value::List(vec![Value::String("ls".into())]))],
            )
            .select("stdout", vec![]);
        assert!(leaf.prefixes().iter().any(|p| p.same_as(&tc)));
        let rebased = leaf
            .rebase(&tc, Selection::load("Container", Id::from("c-1")))
            .expect("tc is part of the chain");
        assert_eq!(
            rebased.print(IdMode::Resolved).expect("no objects"),
            r#"query{node(id:"c-1"){... on Container{withExec(args:["ls"]){stdout}}}}"#
        );
        assert_eq!(rebased.path(), vec!["node", "withExec", "stdout"]);
        let other = Selection::root().select("directory", vec![]);
        assert!(leaf.rebase(&other, Selection::root()).is_none());
    }

    #[test]
    fn escapes_strings() {
        let mut out = String::new();
        write_string("a\"b\\c\nd\u{1}é", &mut out);
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }
}
