//! The parsed form of a `pipeline!` invocation. Every node keeps the spans of the user's tokens.

use proc_macro2::Span;
use syn::{Attribute, Expr, ExprPath, Ident, Type, Visibility};

/// One `name(inputs) { … }` block.
pub(crate) struct Pipeline {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) name: Ident,
    /// `#[fail_fast]`: the first failure stops every request not sent yet.
    pub(crate) fail_fast: bool,
    pub(crate) inputs: Vec<Input>,
    pub(crate) bindings: Vec<Binding>,
    pub(crate) outputs: Vec<Output>,
    /// `for key in input { … }` and `if input { … }` blocks; bindings and outputs point at theirs with
    /// `each`.
    pub(crate) loops: Vec<Loop>,
}

/// `for key in input { … }`, `for (key, value) in input { … }`, or `if input { … }` (`cond`).
pub(crate) struct Loop {
    /// The loop variable (for `if`: the condition's name again, not a variable).
    pub(crate) key: Ident,
    pub(crate) value: Option<Ident>,
    /// The input iterated over (for `if`: the `bool` input tested).
    pub(crate) input: Ident,
    /// `Some(negated)` for an `if` block: its items exist only when the input is true (`false` with `!`).
    pub(crate) cond: Option<bool>,
    /// The number of bindings declared before the loop: where its block goes in the expansion.
    pub(crate) at_binding: usize,
    /// The block it is declared in (`None`: the pipeline's body). `if` blocks nest in `for` loops and in
    /// each other, `for` loops in `if` blocks; a `for` loop never has another one among its ancestors.
    pub(crate) parent: Option<usize>,
}

/// A typed input: `src: Directory`.
pub(crate) struct Input {
    pub(crate) name: Ident,
    pub(crate) ty: Type,
}

/// `let name = step(args…);` or `let (a, b) = step(args…);` (a step returning a tuple).
pub(crate) struct Binding {
    /// The names it binds: one, or one per element of the tuple the step returns (`None` for `_`).
    pub(crate) names: Vec<Option<Ident>>,
    /// Whether the names are a tuple pattern (`let (a, b) = …`), even of one element.
    pub(crate) tuple: bool,
    /// The span of the name, or of the whole tuple pattern.
    pub(crate) pattern_span: Span,
    /// `let checks = lint::run(…);`: the binding uses another pipeline (`step` is then that pipeline's
    /// module path, `lint`), whose outputs become part of this one.
    pub(crate) pipeline: bool,
    pub(crate) step: ExprPath,
    pub(crate) args: Vec<Expr>,
    /// The span of the whole call, for arity errors.
    pub(crate) call_span: Span,
    /// Names of inputs and bindings the arguments mention, with the span of each mention.
    pub(crate) uses: Vec<Ident>,
    /// The loop (index into `Pipeline::loops`) the binding is declared in.
    pub(crate) each: Option<usize>,
    /// Its place among the pipeline's items (bindings and outputs), for "used before defined".
    pub(crate) pos: usize,
}

/// `out name = target.leaf(args…) after a, b;`
pub(crate) struct Output {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) name: Ident,
    pub(crate) target: Ident,
    pub(crate) leaf: Ident,
    pub(crate) args: Vec<Expr>,
    pub(crate) after: Vec<Ident>,
    /// `after checks.log`: outputs of pipelines used in this one, as (binding, output).
    pub(crate) after_fields: Vec<(Ident, Ident)>,
    /// Names of inputs and bindings the leaf's arguments mention.
    pub(crate) uses: Vec<Ident>,
    /// The loop (index into `Pipeline::loops`) the output is declared in.
    pub(crate) each: Option<usize>,
    /// Its place among the pipeline's items (bindings and outputs).
    pub(crate) pos: usize,
}

impl Binding {
    /// The names it binds, in order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &Ident> {
        self.names.iter().flatten()
    }

    /// Whether it binds `name`.
    pub(crate) fn binds(&self, name: &str) -> bool {
        self.names().any(|n| n == name)
    }

    /// The position of `name` in the tuple, when the binding is a tuple.
    pub(crate) fn element(&self, name: &str) -> Option<usize> {
        if !self.tuple {
            return None;
        }
        self.names.iter().position(|n| n.as_ref().is_some_and(|n| n == name))
    }

    /// Where errors about the whole binding point: its (first) name.
    pub(crate) fn span(&self) -> Span {
        self.names().next().map_or_else(|| self.call_span, Ident::span)
    }

    /// The names as written, for messages about the whole binding: `tc`, or `(bin, docs)`.
    pub(crate) fn pattern_text(&self) -> String {
        let names: Vec<String> = self
            .names
            .iter()
            .map(|n| n.as_ref().map_or_else(|| "_".to_owned(), ToString::to_string))
            .collect();
        if self.tuple {
            format!("({})", names.join(", "))
        } else {
            names.join(", ")
        }
    }
}

impl Pipeline {
    /// The binding that binds `name` (alone, or as an element of a tuple).
    pub(crate) fn binding(&self, name: &str) -> Option<(usize, &Binding)> {
        self.bindings.iter().enumerate().find(|(_, b)| b.binds(name))
    }

    pub(crate) fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// The loop whose variable (key or value) is `name`.
    pub(crate) fn loop_var(&self, name: &str) -> Option<usize> {
        self.loops
            .iter()
            .position(|l| l.cond.is_none() && (l.key == name || l.value.as_ref().is_some_and(|v| v == name)))
    }

    /// Whether `name` is an input, a binding, a loop variable or an output (whose value may feed a step).
    pub(crate) fn is_name(&self, name: &str) -> bool {
        self.input(name).is_some()
            || self.binding(name).is_some()
            || self.loop_var(name).is_some()
            || self.output(name).is_some()
    }

    pub(crate) fn output(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|o| o.name == name)
    }

    /// The blocks from the outermost down to `each` itself (empty for the pipeline's body).
    pub(crate) fn chain(&self, each: Option<usize>) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = each;
        while let Some(l) = at {
            out.push(l);
            at = self.loops[l].parent;
        }
        out.reverse();
        out
    }

    /// Whether block `inner` is `outer` or inside it (everything is inside the body, `None`).
    pub(crate) fn within(&self, inner: Option<usize>, outer: Option<usize>) -> bool {
        match outer {
            None => true,
            Some(o) => self.chain(inner).contains(&o),
        }
    }

    /// The `for` loop `each` is in (itself included), if any: loops do not nest, so there is at most one.
    pub(crate) fn enclosing_loop(&self, each: Option<usize>) -> Option<usize> {
        self.chain(each).into_iter().find(|&l| self.loops[l].cond.is_none())
    }
}
