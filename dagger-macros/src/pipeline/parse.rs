//! Parsing: tokens → [`Pipeline`]s. Only syntax is checked here; the graph rules live in `check`.

use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, Ident, Token, Type, Visibility, braced, parenthesized};

use super::ast::{Binding, Input, Loop, Output, Pipeline};

mod kw {
    syn::custom_keyword!(out);
    syn::custom_keyword!(after);
}

/// Every pipeline of one invocation.
pub(crate) struct Pipelines(pub(crate) Vec<Pipeline>);

impl Parse for Pipelines {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut out = Vec::new();
        while !input.is_empty() {
            out.push(input.parse()?);
        }
        if out.is_empty() {
            return Err(input.error(
                "`pipeline!` needs a pipeline: `pub name(src: Directory) { let x = step(src); out y = x.stdout(); }`",
            ));
        }
        Ok(Pipelines(out))
    }
}

impl Parse for Pipeline {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        parse_pipeline(input, false)
    }
}

/// `#[pipeline_fn] VIS fn NAME(INPUTS) { ITEMS }`: the same pipeline as `pipeline! { VIS NAME(INPUTS) { ITEMS } }`,
/// written as a Rust function so rustfmt formats it and rust-analyzer completes inside it; an output is a
/// `let` statement marked `#[out]` (`#[out(after(a, b))]` for `after`).
pub(crate) fn parse_fn_form(attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> syn::Result<Pipeline> {
    if !attr.is_empty() {
        return Err(syn::Error::new_spanned(
            attr,
            "`#[pipeline_fn]` takes no arguments; put `#[fail_fast]` under it to stop at the first failure",
        ));
    }
    syn::parse::Parser::parse2(|input: ParseStream<'_>| parse_pipeline(input, true), item)
}

/// One pipeline: `VIS NAME(INPUTS) { … }` in `pipeline!`, `VIS fn NAME(INPUTS) { … }` under `#[pipeline_fn]`.
fn parse_pipeline(input: ParseStream<'_>, fn_form: bool) -> syn::Result<Pipeline> {
    {
        let mut attrs = input.call(Attribute::parse_outer)?;
        let before = attrs.len();
        attrs.retain(|a| !a.path().is_ident("fail_fast"));
        let fail_fast = attrs.len() != before;
        let vis: Visibility = input.parse()?;
        if fn_form {
            input.parse::<Token![fn]>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "`#[pipeline_fn]` goes on a function: `pub fn ci(src: Directory) { … }`",
                )
            })?;
        } else if input.peek(Token![fn]) {
            return Err(input.error(
                "write the pipeline without `fn`: `pub ci(src: Directory) { … }` (or put `#[pipeline_fn]` on the \
                 function instead of `pipeline!`)",
            ));
        }
        let name: Ident = input.parse()?;
        let content;
        parenthesized!(content in input);
        let inputs: Punctuated<InputSyntax, Token![,]> = content.parse_terminated(InputSyntax::parse, Token![,])?;
        if fn_form && input.peek(Token![->]) {
            return Err(input.error(
                "a pipeline function returns nothing: its outputs are `#[out] let name = binding.leaf();` \
                 statements, and `ci::run` returns them",
            ));
        }
        let body;
        braced!(body in input);
        let mut bindings = Vec::new();
        let mut outputs = Vec::new();
        let mut loops = Vec::new();
        parse_items(&body, &mut bindings, &mut outputs, &mut loops, None, fn_form)?;
        Ok(Pipeline {
            attrs,
            vis,
            name,
            fail_fast,
            inputs: inputs.into_iter().map(|i| i.0).collect(),
            bindings,
            outputs,
            loops,
        })
    }
}

/// The items of a pipeline's body, or of a `for` block in it (`each`); `fn_form` under `#[pipeline_fn]`.
fn parse_items(
    body: ParseStream<'_>,
    bindings: &mut Vec<Binding>,
    outputs: &mut Vec<Output>,
    loops: &mut Vec<Loop>,
    each: Option<usize>,
    fn_form: bool,
) -> syn::Result<()> {
    while !body.is_empty() {
        let mut attrs = body.call(Attribute::parse_outer)?;
        let out_attr = attrs.iter().position(|a| a.path().is_ident("out"));
        if let Some(at) = out_attr.filter(|_| fn_form) {
            // `#[out] let name = target.leaf(args);` (`#[out(after(a, b))]`).
            let out_attr = attrs.remove(at);
            let after = out_after(&out_attr)?;
            let let_token: Token![let] = body.parse().map_err(|e| {
                syn::Error::new(e.span(), "`#[out]` goes on a `let`: `#[out] let log = tests.stdout();`")
            })?;
            let _ = let_token;
            let mut o = parse_output_rest(body, attrs)?;
            for a in after {
                match a {
                    (name, None) => o.after.push(name),
                    (name, Some(field)) => o.after_fields.push((name, field)),
                }
            }
            o.each = each;
            o.pos = bindings.len() + outputs.len();
            outputs.push(o);
        } else if body.peek(Token![let]) {
            let mut b = parse_binding(body)?;
            b.each = each;
            b.pos = bindings.len() + outputs.len();
            bindings.push(b);
        } else if body.peek(kw::out) {
            let mut o = parse_output(body, attrs)?;
            o.each = each;
            o.pos = bindings.len() + outputs.len();
            outputs.push(o);
        } else if body.peek(Token![for]) {
            let for_token: Token![for] = body.parse()?;
            // (An `if` block may sit between the two loops: still nested.)
            let mut at = each;
            while let Some(l) = at {
                if loops[l].cond.is_none() {
                    return Err(syn::Error::new(
                        for_token.span,
                        "`for` loops do not nest: iterate over one input per loop, or make the inner collection \
                         part of the outer elements (`for (target, image) in builds`)",
                    ));
                }
                at = loops[l].parent;
            }
            let (key, value) = if body.peek(syn::token::Paren) {
                let pair;
                parenthesized!(pair in body);
                let key: Ident = pair.parse()?;
                pair.parse::<Token![,]>()?;
                let value: Ident = pair.parse()?;
                if !pair.is_empty() {
                    return Err(pair.error("expected `(key, value)`: a loop binds one name, or a pair of names"));
                }
                (key, Some(value))
            } else {
                let key: Ident = body.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "expected a name or a pair of names after `for`: `for version in versions { … }` or \
                         `for (name, image) in images { … }`",
                    )
                })?;
                (key, None)
            };
            body.parse::<Token![in]>()?;
            let input: Ident = body.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "a loop goes over an input of the pipeline, by name: `for version in versions { … }`",
                )
            })?;
            let block;
            braced!(block in body);
            loops.push(Loop {
                key,
                value,
                input,
                cond: None,
                at_binding: bindings.len(),
                parent: each,
            });
            let index = loops.len() - 1;
            parse_items(&block, bindings, outputs, loops, Some(index), fn_form)?;
        } else if body.peek(Token![if]) {
            let if_token: Token![if] = body.parse()?;
            let negated = body.parse::<Option<Token![!]>>()?.is_some();
            let input: Ident = body.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "a condition is one of the pipeline's `bool` inputs (or a `bool` variable of the loop around \
                     it), by name: `if publish { … }` or `if !draft { … }`",
                )
            })?;
            if body.peek(Token![else]) || !body.peek(syn::token::Brace) {
                return Err(body.error(
                    "expected `{ … }` after the condition: a condition is one `bool` input, such as `if publish { … }`",
                ));
            }
            let block;
            braced!(block in body);
            if block.is_empty() {
                return Err(syn::Error::new(if_token.span, "this `if` block is empty"));
            }
            loops.push(Loop {
                key: input.clone(),
                value: None,
                input,
                cond: Some(negated),
                at_binding: bindings.len(),
                parent: each,
            });
            let index = loops.len() - 1;
            parse_items(&block, bindings, outputs, loops, Some(index), fn_form)?;
            if body.peek(Token![else]) {
                return Err(body.error(
                    "`else` is not supported: write a second block with the opposite condition, `if !flag { … }`",
                ));
            }
        } else {
            return Err(body.error(
                "expected `let name = step(args…);`, `out name = binding.leaf(args…);` (optionally followed by \
                 `after other, …`), `for name in input { … }` or `if flag { … }`",
            ));
        }
    }
    Ok(())
}

struct InputSyntax(Input);

impl Parse for InputSyntax {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let name: Ident = input.parse()?;
        input.parse::<Token![:]>()?;
        let ty: Type = input.parse()?;
        Ok(InputSyntax(Input { name, ty }))
    }
}

fn parse_binding(input: ParseStream<'_>) -> syn::Result<Binding> {
    input.parse::<Token![let]>()?;
    let (names, tuple, pattern_span) = if input.peek(syn::token::Paren) {
        // `let (bin, docs) = build(tc);`: a step returning a tuple of objects.
        let content;
        let parens = parenthesized!(content in input);
        let mut names = Vec::new();
        while !content.is_empty() {
            if content.peek(Token![_]) {
                content.parse::<Token![_]>()?;
                names.push(None);
            } else {
                let name: Ident = content.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "expected a name or `_` in the tuple: `let (bin, docs) = build(tc);`",
                    )
                })?;
                names.push(Some(name));
            }
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        if names.iter().all(Option::is_none) {
            return Err(syn::Error::new(
                parens.span.join(),
                "this tuple binds no name: name the elements the pipeline uses, `let (bin, _) = build(tc);`",
            ));
        }
        (names, true, parens.span.join())
    } else {
        let name: Ident = input.parse()?;
        let span = name.span();
        (vec![Some(name)], false, span)
    };
    let name = {
        let text: Vec<String> = names
            .iter()
            .map(|n| n.as_ref().map_or_else(|| "_".to_owned(), ToString::to_string))
            .collect();
        if tuple {
            format!("({})", text.join(", "))
        } else {
            text.join(", ")
        }
    };
    input.parse::<Token![=]>()?;
    let expr: Expr = input.parse()?;
    input
        .parse::<Token![;]>()
        .map_err(|e| syn::Error::new(e.span(), "expected `;` after the binding"))?;
    let call_span = expr.span();
    let Expr::Call(call) = expr else {
        return Err(syn::Error::new_spanned(
            &expr,
            format!(
                "the binding `{name}` must call a step: `let {name} = step(args…);`; method chains belong inside a \
                 step, or in an argument"
            ),
        ));
    };
    let Expr::Path(mut step) = *call.func else {
        return Err(syn::Error::new_spanned(
            &call.func,
            "expected the name (or path) of a `#[step]` function here",
        ));
    };
    // `lint::run(…)`: another pipeline, used in this one.
    let segments = &step.path.segments;
    let pipeline = segments.len() >= 2 && segments.last().is_some_and(|s| s.ident == "run");
    if pipeline {
        if tuple {
            return Err(syn::Error::new(
                pattern_span,
                "a pipeline used in this one is bound to one name, `let checks = lint::run(…);`; its outputs are \
                 `checks.name`",
            ));
        }
        let mut path = step.path.segments.clone();
        path.pop();
        path.pop_punct();
        step.path.segments = path;
    }
    let args: Vec<Expr> = call.args.into_iter().collect();
    let uses = args.iter().flat_map(super::names::mentions).collect();
    Ok(Binding {
        names,
        tuple,
        pattern_span,
        pipeline,
        step,
        args,
        call_span,
        uses,
        each: None,
        pos: 0,
    })
}

/// The `after` list of `#[out(after(a, b.c))]`.
fn out_after(attr: &Attribute) -> syn::Result<Vec<(Ident, Option<Ident>)>> {
    if matches!(attr.meta, syn::Meta::Path(_)) {
        return Ok(Vec::new());
    }
    let wrong = |span| {
        syn::Error::new(
            span,
            "expected `#[out]` or `#[out(after(name, …))]`: `after` names the outputs (or bindings) this one waits for",
        )
    };
    attr.parse_args_with(|input: ParseStream<'_>| {
        let kw: kw::after = input.parse().map_err(|e| wrong(e.span()))?;
        let content;
        parenthesized!(content in input);
        let mut names = Vec::new();
        while !content.is_empty() {
            let name: Ident = content.parse()?;
            let field = if content.peek(Token![.]) {
                content.parse::<Token![.]>()?;
                Some(content.parse::<Ident>()?)
            } else {
                None
            };
            names.push((name, field));
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        if names.is_empty() {
            return Err(syn::Error::new(
                kw.span,
                "`after` needs at least one output or binding name",
            ));
        }
        if !input.is_empty() {
            return Err(wrong(input.span()));
        }
        Ok(names)
    })
}

fn parse_output(input: ParseStream<'_>, attrs: Vec<Attribute>) -> syn::Result<Output> {
    input.parse::<kw::out>()?;
    parse_output_rest(input, attrs)
}

/// An output after `out` (or after `#[out] let`): `name = target.leaf(args…) [after …];`.
fn parse_output_rest(input: ParseStream<'_>, attrs: Vec<Attribute>) -> syn::Result<Output> {
    let name: Ident = input.parse()?;
    input.parse::<Token![=]>()?;
    let expr: Expr = input.parse()?;
    let Expr::MethodCall(call) = expr else {
        return Err(syn::Error::new_spanned(
            &expr,
            format!("the output `{name}` must be one leaf on a binding or input: `out {name} = binding.stdout();`"),
        ));
    };
    let target = match &*call.receiver {
        Expr::Path(p) if p.path.get_ident().is_some() && p.qself.is_none() => p.path.get_ident().cloned(),
        _ => None,
    };
    let Some(target) = target else {
        return Err(syn::Error::new_spanned(
            &call.receiver,
            "an output's leaf must be called directly on a binding or input name: `out log = tests.stdout();`; \
             chains belong inside a step",
        ));
    };
    let args: Vec<Expr> = call.args.into_iter().collect();
    let uses = args.iter().flat_map(super::names::mentions).collect();
    let mut after = Vec::new();
    let mut after_fields = Vec::new();
    if input.peek(kw::after) {
        let kw: kw::after = input.parse()?;
        loop {
            let name = input.parse::<Ident>()?;
            if input.peek(Token![.]) {
                // `after checks.log`: an output of a pipeline used in this one.
                input.parse::<Token![.]>()?;
                after_fields.push((name, input.parse::<Ident>()?));
            } else {
                after.push(name);
            }
            if !input.peek(Token![,]) {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        if after.is_empty() && after_fields.is_empty() {
            return Err(syn::Error::new(
                kw.span,
                "`after` needs at least one output or binding name",
            ));
        }
    }
    input
        .parse::<Token![;]>()
        .map_err(|e| syn::Error::new(e.span(), "expected `;` (or `after name, …;`) after the output"))?;
    Ok(Output {
        attrs,
        name,
        target,
        leaf: call.method,
        args,
        after,
        after_fields,
        uses,
        each: None,
        pos: 0,
    })
}
