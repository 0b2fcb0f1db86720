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
}

/// A typed input: `src: Directory`.
pub(crate) struct Input {
    pub(crate) name: Ident,
    pub(crate) ty: Type,
}

/// `let name = step(args…);`
pub(crate) struct Binding {
    pub(crate) name: Ident,
    pub(crate) step: ExprPath,
    pub(crate) args: Vec<Expr>,
    /// The span of the whole call, for arity errors.
    pub(crate) call_span: Span,
    /// Names of inputs and bindings the arguments mention, with the span of each mention.
    pub(crate) uses: Vec<Ident>,
}

/// `out name = target.leaf(args…) after a, b;`
pub(crate) struct Output {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) name: Ident,
    pub(crate) target: Ident,
    pub(crate) leaf: Ident,
    pub(crate) args: Vec<Expr>,
    pub(crate) after: Vec<Ident>,
    /// Names of inputs and bindings the leaf's arguments mention.
    pub(crate) uses: Vec<Ident>,
}

impl Pipeline {
    pub(crate) fn binding(&self, name: &str) -> Option<(usize, &Binding)> {
        self.bindings.iter().enumerate().find(|(_, b)| b.name == name)
    }

    pub(crate) fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|i| i.name == name)
    }
}
