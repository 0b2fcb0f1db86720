//! Which names an argument expression uses, found by walking its syntax tree (not its tokens): a cast's
//! type (`n as i64`), a method or field name, a path, a function or macro name, or a closure's own
//! parameters are never taken for inputs or bindings. The same walk rewrites the names it finds into
//! clones, so one value can feed any number of steps.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote_spanned};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, Pat, Token};

/// The plain names `expr` uses, in order (with repeats), each with its span.
pub(crate) fn mentions(expr: &Expr) -> Vec<Ident> {
    let mut found = Vec::new();
    let mut copy = expr.clone();
    walk(&mut copy, &mut Vec::new(), &mut |e| {
        if let Some(i) = plain_name(e) {
            found.push(i.clone());
        }
    });
    found
}

/// The fields read on plain names in `expr`, as `(name, field)`: `checks.ready` → `(checks, ready)`.
pub(crate) fn fields(expr: &Expr) -> Vec<(String, Ident)> {
    let mut found = Vec::new();
    let mut copy = expr.clone();
    walk(&mut copy, &mut Vec::new(), &mut |e| {
        if let Expr::Field(f) = e
            && let Some(base) = plain_name(&f.base)
            && let syn::Member::Named(field) = &f.member
        {
            found.push((base.to_string(), field.clone()));
        }
    });
    found
}

/// `expr` with every use of a name for which `is_name` holds replaced by a clone of it.
pub(crate) fn clone_names(expr: &Expr, is_name: &dyn Fn(&Ident) -> bool) -> TokenStream {
    let mut copy = expr.clone();
    walk(&mut copy, &mut Vec::new(), &mut |e| {
        if let Some(i) = plain_name(e)
            && is_name(i)
        {
            let i = i.clone();
            *e = Expr::Verbatim(quote_spanned!(i.span()=> ::core::clone::Clone::clone(&#i)));
        }
    });
    copy.to_token_stream()
}

/// A path expression of one lowercase identifier: a variable, as far as syntax can tell.
fn plain_name(e: &Expr) -> Option<&Ident> {
    let Expr::Path(p) = e else { return None };
    if p.qself.is_some() || p.path.leading_colon.is_some() {
        return None;
    }
    let ident = p.path.get_ident()?;
    let text = ident.to_string();
    let lower = text.chars().next().is_some_and(|c| c.is_lowercase() || c == '_');
    (lower && text != "self").then_some(ident)
}

/// Calls `f` on every expression that may be a use of a name, skipping names bound inside the expression
/// (closure parameters, which are in `bound`), and on every field access (before walking its base).
fn walk(e: &mut Expr, bound: &mut Vec<String>, f: &mut dyn FnMut(&mut Expr)) {
    if let Expr::Field(x) = e
        && plain_name(&x.base).is_none_or(|i| !bound.contains(&i.to_string()))
    {
        f(e);
    }
    match e {
        Expr::Path(_) if plain_name(e).is_some_and(|i| !bound.contains(&i.to_string())) => f(e),
        Expr::MethodCall(m) => {
            walk(&mut m.receiver, bound, f);
            m.args.iter_mut().for_each(|a| walk(a, bound, f));
        }
        Expr::Call(c) => {
            // The function's own name is not a use; a computed callee is.
            if !matches!(&*c.func, Expr::Path(_)) {
                walk(&mut c.func, bound, f);
            }
            c.args.iter_mut().for_each(|a| walk(a, bound, f));
        }
        Expr::Field(x) => walk(&mut x.base, bound, f),
        Expr::Cast(x) => walk(&mut x.expr, bound, f),
        Expr::Reference(x) => walk(&mut x.expr, bound, f),
        Expr::Unary(x) => walk(&mut x.expr, bound, f),
        Expr::Paren(x) => walk(&mut x.expr, bound, f),
        Expr::Group(x) => walk(&mut x.expr, bound, f),
        Expr::Try(x) => walk(&mut x.expr, bound, f),
        Expr::Binary(x) => {
            walk(&mut x.left, bound, f);
            walk(&mut x.right, bound, f);
        }
        Expr::Index(x) => {
            walk(&mut x.expr, bound, f);
            walk(&mut x.index, bound, f);
        }
        Expr::Range(x) => {
            if let Some(s) = &mut x.start {
                walk(s, bound, f);
            }
            if let Some(s) = &mut x.end {
                walk(s, bound, f);
            }
        }
        Expr::Array(x) => x.elems.iter_mut().for_each(|a| walk(a, bound, f)),
        Expr::Tuple(x) => x.elems.iter_mut().for_each(|a| walk(a, bound, f)),
        Expr::Repeat(x) => walk(&mut x.expr, bound, f),
        Expr::Struct(x) => {
            for field in &mut x.fields {
                walk(&mut field.expr, bound, f);
            }
            if let Some(rest) = &mut x.rest {
                walk(rest, bound, f);
            }
        }
        Expr::If(x) => {
            walk(&mut x.cond, bound, f);
            walk_block(&mut x.then_branch, bound, f);
            if let Some((_, other)) = &mut x.else_branch {
                walk(other, bound, f);
            }
        }
        Expr::Block(x) => walk_block(&mut x.block, bound, f),
        Expr::Closure(c) => {
            let before = bound.len();
            for input in &c.inputs {
                pattern_names(input, bound);
            }
            walk(&mut c.body, bound, f);
            bound.truncate(before);
        }
        Expr::Macro(m) => {
            // `format!("…", a, b)`, `vec![a, b]`: arguments that parse as expressions are walked; the
            // format string's inline captures (`{name}`) are not seen.
            let parser = Punctuated::<Expr, Token![,]>::parse_terminated;
            if let Ok(mut args) = syn::parse::Parser::parse2(parser, m.mac.tokens.clone()) {
                args.iter_mut().for_each(|a| walk(a, bound, f));
                m.mac.tokens = args.to_token_stream();
            }
        }
        _ => {}
    }
}

fn walk_block(block: &mut syn::Block, bound: &mut Vec<String>, f: &mut dyn FnMut(&mut Expr)) {
    let before = bound.len();
    for stmt in &mut block.stmts {
        match stmt {
            syn::Stmt::Local(l) => {
                if let Some(init) = &mut l.init {
                    walk(&mut init.expr, bound, f);
                }
                pattern_names(&l.pat, bound);
            }
            syn::Stmt::Expr(e, _) => walk(e, bound, f),
            _ => {}
        }
    }
    bound.truncate(before);
}

/// The names a pattern binds.
fn pattern_names(pat: &Pat, out: &mut Vec<String>) {
    match pat {
        Pat::Ident(p) => out.push(p.ident.to_string()),
        Pat::Type(p) => pattern_names(&p.pat, out),
        Pat::Reference(p) => pattern_names(&p.pat, out),
        Pat::Tuple(p) => p.elems.iter().for_each(|e| pattern_names(e, out)),
        Pat::TupleStruct(p) => p.elems.iter().for_each(|e| pattern_names(e, out)),
        Pat::Slice(p) => p.elems.iter().for_each(|e| pattern_names(e, out)),
        Pat::Struct(p) => p.fields.iter().for_each(|fp| pattern_names(&fp.pat, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str) -> Vec<String> {
        let e: Expr = syn::parse_str(src).expect("parses");
        mentions(&e).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_cast_type_is_not_a_name() {
        assert_eq!(names("n as i64"), ["n"]);
    }

    #[test]
    fn methods_fields_paths_functions_and_macros_are_not_names() {
        assert_eq!(
            names("tc.with_env_variable(key, v.field).file(dir::NAME) + helper(x) + format!(\"{}\", y)"),
            ["tc", "key", "v", "x", "y"]
        );
    }

    #[test]
    fn closure_parameters_are_not_names() {
        assert_eq!(names("items.iter().map(|i| i + offset).count()"), ["items", "offset"]);
    }

    #[test]
    fn rewriting_clones_only_the_names_asked_for() {
        let e: Expr = syn::parse_str("build(tc, n as i64, MAX)").expect("parses");
        let out = clone_names(&e, &|i| i == "tc" || i == "n").to_string();
        assert_eq!(
            out,
            "build (:: core :: clone :: Clone :: clone (& tc) , :: core :: clone :: Clone :: clone (& n) as i64 , MAX)"
        );
    }
}
