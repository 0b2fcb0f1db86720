//! Expansion: a checked pipeline → a module with `Outputs`, `Partial`, `run`, `plan` and static metadata.
//!
//! Step calls and leaf calls carry the spans of the user's tokens, so rustc's type errors (a mismatch
//! between steps, a leaf missing on a type) land on the pipeline's own lines.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, Ident};

use super::ast::Pipeline;
use super::check::Checked;
use crate::step::doc_string;

pub(crate) fn expand(p: &Pipeline, checked: &Checked) -> TokenStream {
    let Pipeline { attrs, vis, name, .. } = p;
    let name_str = name.to_string();
    let doc = doc_string(attrs);
    let input_names: Vec<&Ident> = p.inputs.iter().map(|i| &i.name).collect();
    let input_tys: Vec<&syn::Type> = p.inputs.iter().map(|i| &i.ty).collect();
    // The expansion's own locals are hygienic (mixed-site), so inputs, bindings and outputs may be named
    // `dag`, `run`, `results` or `partial` without clashing with them.
    let local = |s: &str| Ident::new(s, Span::mixed_site());
    let dag = local("dag");
    let run_var = local("run");
    let scope = local("scope");
    let results = local("results");
    let partial = local("partial");
    let elem = local("elem");
    let input_params = quote!(#(#input_names: #input_tys),*);

    // The type of a binding or input by name, as a type expression.
    let type_of = |target: &Ident| -> TokenStream {
        if let Some(input) = p.input(&target.to_string()) {
            input.ty.to_token_stream()
        } else if let Some((_, b)) = p.binding(&target.to_string()) {
            binding_ty(p, b, &target.to_string())
        } else {
            quote!(())
        }
    };
    // The condition of an `if` block, as a `bool` expression.
    let cond_of = |l: usize| -> TokenStream {
        let lp = &p.loops[l];
        let input = &lp.input;
        let not = if lp.cond == Some(true) { quote!(!) } else { quote!() };
        let cond = quote_spanned!(input.span()=> ::dagger::__private::condition(::core::clone::Clone::clone(&#input)));
        quote!(#not #cond)
    };
    // The key type of a loop's maps.
    let key_ty = |l: usize| -> TokenStream {
        let lp = &p.loops[l];
        let ty = p
            .input(&lp.input.to_string())
            .map_or_else(|| quote!(()), |i| i.ty.to_token_stream());
        if lp.value.is_some() {
            quote!(::dagger::__private::PairKeyOf<#ty>)
        } else {
            quote!(::dagger::__private::KeyOf<#ty>)
        }
    };

    // Pipelines used in this one (`let checks = lint::run(…);`): their outputs come after this one's own, in
    // binding order; `first_of` is where a used pipeline's outputs start, as a constant expression.
    let composed: Vec<usize> = (0..p.bindings.len()).filter(|&j| p.bindings[j].pipeline).collect();
    let n_own = p.outputs.len();
    let first_of = |j: usize| -> TokenStream {
        let before = composed.iter().filter(|&&k| k < j).map(|&k| used_type(p, k));
        quote!((#n_own #(+ <#before as ::dagger::__private::Composable>::OUTPUTS)*))
    };
    let composed_handle = |j: usize| -> Ident {
        let name = p.bindings[j]
            .names()
            .next()
            .map(ToString::to_string)
            .unwrap_or_default();
        local(&format!("__hc_{name}"))
    };

    // Bindings: one step call each, in order. In a wave after the first (`deferred`: the statements that
    // unwrap the names it uses), the binding is an `Option`: `None` when a value it needs did not arrive.
    let label = syn::Lifetime {
        apostrophe: Span::mixed_site(),
        ident: local("item"),
    };
    let binding_stmt = |b: &super::ast::Binding, deferred: Option<TokenStream>| {
        // `tc`, or `(bin, _)` for a step returning a tuple.
        let bname = if b.tuple {
            let elems = b.names.iter().map(|n| match n {
                Some(n) => quote!(#n),
                None => quote!(_),
            });
            quote!((#(#elems,)*))
        } else {
            let n = b.names();
            quote!(#(#n)*)
        };
        let step = &b.step;
        let step_span = step.span();
        let j = p.bindings.iter().position(|x| std::ptr::eq(x, b)).unwrap_or(0);
        let step_here = step_type(p, b);
        let step_ty = quote_spanned!(step_span=> <#step_here as ::dagger::__private::Step>);
        // Each argument converts to its own parameter's type (`Nth<i>`), so a mismatch and an argument too
        // many are reported on that argument; `inputs` reports a missing one.
        let args = b.args.iter().enumerate().map(|(i, a)| {
            let span = a.span();
            let a = clone_if_name(a, p);
            quote_spanned!(span=> ::dagger::__private::step_arg::<<#step_ty::Inputs as ::dagger::__private::Nth<#i>>::T, _>(#a))
        });
        let call_span = b.call_span;
        let inputs = quote_spanned!(call_span=>
            ::dagger::__private::ExactInputs::<#step_ty::Inputs>::into_inputs((#(#args,)*))
        );
        if b.pipeline {
            // A used pipeline: its inputs are a tuple, each converted like a step's argument.
            let handle = composed_handle(j);
            let sub = local("sub");
            let first = first_of(j);
            let label = b.pattern_text();
            let used = used_type(p, j);
            let used = quote_spanned!(step_span=> <#used as ::dagger::__private::Composable>);
            let args = b.args.iter().enumerate().map(|(i, a)| {
                let span = a.span();
                let a = clone_if_name(a, p);
                quote_spanned!(span=> ::dagger::__private::step_arg::<<#used::Inputs as ::dagger::__private::Nth<#i>>::T, _>(#a))
            });
            let inputs = quote_spanned!(call_span=>
                ::dagger::__private::ExactInputs::<#used::Inputs>::into_inputs((#(#args,)*))
            );
            return quote_spanned! {call_span=>
                let (#handle, #bname) = {
                    let #sub = #run_var.compose(#scope, #first, #used::meta(), #label);
                    #used::compose(#run_var, #sub, #dag, #inputs)
                };
                let _ = &#bname;
            };
        }
        if b.tuple {
            // Checked on the pattern: as many names as the tuple has elements.
            let n = b.names.len();
            let pattern_span = b.pattern_span;
            // All on the pattern, the step's name too, so the error underlines the pattern alone.
            let step_here = respan(step_type(p, b), pattern_span);
            let parts = quote_spanned!(pattern_span=>
                <<#step_here as ::dagger::__private::Step>::Output as ::dagger::__private::Tuple<#n>>::parts);
            let whole = Ident::new("tuple", Span::mixed_site().located_at(pattern_span));
            let call = quote_spanned!(call_span=> #step_ty::call(#dag, #inputs));
            let Some(unwraps) = deferred else {
                return quote_spanned! {pattern_span=>
                    let #whole = #call;
                    let #bname = #parts(#whole);
                };
            };
            let somes = b.names.iter().map(|n| match n {
                Some(n) => quote!(::core::option::Option::Some(#n)),
                None => quote!(()),
            });
            let nones = b.names.iter().map(|n| match n {
                Some(_) => quote!(::core::option::Option::None),
                None => quote!(()),
            });
            return quote_spanned! {pattern_span=>
                let #whole = #label: {
                    #unwraps
                    ::core::option::Option::Some(#call)
                };
                let #bname = match #whole {
                    ::core::option::Option::Some(#whole) => {
                        let #bname = #parts(#whole);
                        (#(#somes,)*)
                    }
                    ::core::option::Option::None => (#(#nones,)*),
                };
            };
        }
        match deferred {
            None => quote_spanned! {call_span=>
                let #bname: #step_ty::Output = #step_ty::call(#dag, #inputs);
            },
            Some(unwraps) => quote_spanned! {call_span=>
                let #bname: ::core::option::Option<#step_ty::Output> = #label: {
                    #unwraps
                    ::core::option::Option::Some(#step_ty::call(#dag, #inputs))
                };
            },
        }
    };

    // The value type of each output's leaf.
    let leaf_tys: Vec<TokenStream> = p
        .outputs
        .iter()
        .map(|o| {
            let target_ty = type_of(&o.target);
            let leaf_str = o.leaf.to_string();
            let base = leaf_str.strip_suffix("_opts").unwrap_or(&leaf_str);
            let leaf_trait = Ident::new_raw_or_plain(base, o.leaf.span());
            quote_spanned!(o.leaf.span()=> <#target_ty as ::dagger::__private::leaves::#leaf_trait>::Output)
        })
        .collect();
    // Where an output is declared, for its types: the `for` loop it is in (if any), and whether an `if` block
    // is around it outside that loop (outside any loop when there is none).
    let shape = |each: Option<usize>| -> (Option<usize>, bool) {
        let chain = p.chain(each);
        let lp = chain.iter().copied().find(|&l| p.loops[l].cond.is_none());
        let ifs = chain
            .iter()
            .take_while(|&&l| Some(l) != lp)
            .any(|&l| p.loops[l].cond.is_some());
        (lp, ifs)
    };
    // A loop's outputs are maps keyed by element (with the elements whose `if` blocks inside the loop held);
    // outside loops, an output in `if` blocks is an option, and so is the map of a loop inside `if` blocks.
    let out_tys: Vec<TokenStream> = p
        .outputs
        .iter()
        .zip(&leaf_tys)
        .map(|(o, ty)| match shape(o.each) {
            (None, false) => ty.clone(),
            (None, true) => quote!(::core::option::Option<#ty>),
            (Some(l), ifs) => {
                let k = key_ty(l);
                let map = quote!(::std::collections::BTreeMap<#k, #ty>);
                if ifs { quote!(::core::option::Option<#map>) } else { map }
            }
        })
        .collect();
    let partial_tys: Vec<TokenStream> = p
        .outputs
        .iter()
        .zip(&out_tys)
        .map(|(o, ty)| match o.each {
            Some(_) => ty.clone(),
            None => quote!(::core::option::Option<#ty>),
        })
        .collect();
    let handle_tys: Vec<TokenStream> = p
        .outputs
        .iter()
        .zip(&leaf_tys)
        .map(|(o, ty)| {
            let h = quote!(::dagger::__private::Handle<#ty>);
            match shape(o.each) {
                (None, false) => h,
                (None, true) => quote!(::core::option::Option<#h>),
                (Some(l), ifs) => {
                    let k = key_ty(l);
                    let list = quote!(::std::vec::Vec<(usize, #k, #h)>);
                    if ifs {
                        quote!(::core::option::Option<#list>)
                    } else {
                        list
                    }
                }
            }
        })
        .collect();
    let out_names: Vec<&Ident> = p.outputs.iter().map(|o| &o.name).collect();
    let out_docs: Vec<TokenStream> = p
        .outputs
        .iter()
        .map(|o| {
            let d = doc_string(&o.attrs);
            let mut d = if d.is_empty() {
                format!("`{}.{}(…)`", o.target, o.leaf)
            } else {
                d
            };
            let chain = p.chain(o.each);
            let (lp, ifs) = shape(o.each);
            let conds = |inside: bool| -> Vec<String> {
                chain
                    .iter()
                    .filter(|&&l| p.loops[l].cond.is_some())
                    .filter(|&&l| lp.is_some_and(|lp| p.within(Some(l), Some(lp))) == inside)
                    .map(|&l| {
                        let lp = &p.loops[l];
                        let not = if lp.cond == Some(true) { "!" } else { "" };
                        format!("`{not}{}`", lp.input)
                    })
                    .collect()
            };
            if ifs {
                d.push_str(&format!(
                    "\n\n`None` when {} does not hold: the output is not sent.",
                    conds(false).join(" or ")
                ));
            }
            if let Some(l) = lp {
                d.push_str(&format!("\n\nOne value per element of `{}`", p.loops[l].input));
                let inner = conds(true);
                if inner.is_empty() {
                    d.push('.');
                } else {
                    d.push_str(&format!(" for which {} holds.", inner.join(" and ")));
                }
            }
            quote!(#[doc = #d])
        })
        .collect();
    let handles: Vec<Ident> = p.outputs.iter().map(|o| local(&format!("__h_{}", o.name))).collect();
    let ty_var = local("target_type");
    // The leaf of output `i`, checked and bound to the output's name (`Leaf<T>`), with the GraphQL type of
    // its target, so a `sync` or `id` output makes its ID known to later requests.
    let leaf_core = |i: usize| {
        let o = &p.outputs[i];
        let (oname, target, leaf) = (&o.name, &o.target, &o.leaf);
        let ty = &leaf_tys[i];
        let args = o.args.iter().map(|a| clone_if_name(a, p));
        let leaf_str = leaf.to_string();
        let base = leaf_str.strip_suffix("_opts").unwrap_or(&leaf_str);
        let has_trait = Ident::new_raw_or_plain(base, leaf.span());
        let target_type = quote! {
            let #ty_var = {
                use ::dagger::__private::{ObjectTypeName as _, OtherTypeName as _};
                (&&::dagger::__private::TypeOf(&#target)).type_name()
            };
        };
        quote_spanned! {leaf.span()=>
            {
                // Checked on the value (not by naming its type), so "has no leaf" points at the `out` line.
                fn __has_leaf<T: ::dagger::__private::has::#has_trait + ?Sized>(_: &T) {}
                __has_leaf(&#target);
            }
            #target_type
            let #oname: ::dagger::Leaf<#ty> = #target.#leaf(#(#args),*);
        }
    };
    // The element number of the loop an item is in (0 outside loops), for handles and saved bindings.
    let elem_key = |each: Option<usize>| -> TokenStream {
        if p.enclosing_loop(each).is_some() {
            quote!(#elem)
        } else {
            quote!(0usize)
        }
    };
    // Output `i` added to the run before anything is sent (`add`), or its handle reserved for the wave that
    // builds it (`reserve`); in a loop, one instance per element.
    let add_stmt = |i: usize, reserve: bool| {
        let o = &p.outputs[i];
        let h = &handles[i];
        let oname = &o.name;
        let v = local("list");
        match shape(o.each) {
            (None, ifs) => {
                let add = if reserve {
                    quote!(#run_var.reserve(#scope, #i))
                } else {
                    quote!(#run_var.add(#scope, #i, #ty_var, #oname))
                };
                if ifs {
                    quote!(#h = ::core::option::Option::Some(#add);)
                } else {
                    quote!(#h = #add;)
                }
            }
            (Some(l), ifs) => {
                let key = &p.loops[l].key;
                let add = if reserve {
                    quote!(#run_var.reserve_each(#scope, #i, #elem, &#key))
                } else {
                    quote!(#run_var.add_each(#scope, #i, #elem, &#key, #ty_var, #oname))
                };
                let item = quote!((#elem, ::core::clone::Clone::clone(&#key), #add));
                if ifs {
                    quote!(if let ::core::option::Option::Some(#v) = &mut #h { #v.push(#item); })
                } else {
                    quote!(#h.push(#item);)
                }
            }
        }
    };

    // How the parts of the pipeline are built: wave by wave (a part's stage is the number of values it waits
    // for in turn), each wave walking the blocks in declaration order. Wave 0 is built before anything is sent;
    // wave k > 0 is a closure the run calls once the values it reads are decided, and only the parts whose
    // values arrived are built (their bindings are `Option`s there). A binding of a block used by a later wave
    // is saved by element (`__st_*`), and found again when the block is walked in that wave.
    let vals = &checked.values;
    let max_stage = vals
        .output_stage
        .iter()
        .chain(&vals.binding_stage)
        .copied()
        .max()
        .unwrap_or(0);
    let values_var = local("values");
    // What a name used by an item is.
    #[derive(Clone, Copy, PartialEq)]
    enum Use {
        Plain,
        Binding(usize),
        Map(usize),
        Value(usize),
    }
    let classify = |u: &Ident, each: Option<usize>| -> Use {
        let text = u.to_string();
        if p.input(&text).is_some() || p.loop_var(&text).is_some() {
            return Use::Plain;
        }
        if let Some((j, b)) = p.binding(&text) {
            return if p.within(each, b.each) {
                Use::Binding(j)
            } else {
                Use::Map(j)
            };
        }
        p.output(&text).map_or(Use::Plain, Use::Value)
    };
    // The block a name is declared in (a loop binding's map: the block around its loop), and its stage.
    let home = |x: Use| -> (Option<usize>, usize) {
        match x {
            Use::Binding(j) => (p.bindings[j].each, vals.binding_stage[j]),
            Use::Map(j) => (
                p.bindings[j].each.and_then(|l| p.loops[l].parent),
                vals.binding_stage[j],
            ),
            _ => (None, 0),
        }
    };
    // Whether a binding (or map) is a plain value in wave k: built in wave 0, and in the pipeline's body (kept
    // by the closures) or used in wave 0 itself; otherwise it is an `Option`.
    let plain_in = |x: Use, k: usize| -> bool {
        let (block, s) = home(x);
        s == 0 && (block.is_none() || k == 0)
    };
    // Every (name, item stage, item block) use, for saving and finding bindings again.
    let mut all_uses: Vec<(Ident, Use, usize)> = Vec::new();
    for (j, b) in p.bindings.iter().enumerate() {
        for u in &b.uses {
            all_uses.push((u.clone(), classify(u, b.each), vals.binding_stage[j]));
        }
    }
    for (i, o) in p.outputs.iter().enumerate() {
        for u in std::iter::once(&o.target).chain(&o.uses) {
            all_uses.push((u.clone(), classify(u, o.each), vals.output_stage[i]));
        }
    }
    // Names of blocks used by a later wave than their own (saved), as (name, use).
    let mut saved: Vec<(Ident, Use)> = Vec::new();
    for (u, x, k) in &all_uses {
        let (block, s) = home(*x);
        if matches!(x, Use::Binding(_) | Use::Map(_))
            && block.is_some()
            && *k > s
            && !saved.iter().any(|(n, y)| n == u && y == x)
        {
            saved.push((u.clone(), *x));
        }
    }
    let state_var = |u: &Ident, x: Use| match x {
        Use::Map(_) => local(&format!("__stm_{u}")),
        _ => local(&format!("__st_{u}")),
    };
    let map_var = |u: &Ident| local(&format!("__map_{u}"));
    let value_ty = |x: Use, u: &Ident| -> TokenStream {
        match x {
            Use::Binding(j) => binding_ty(p, &p.bindings[j], &u.to_string()),
            Use::Map(j) => {
                let b = &p.bindings[j];
                let k = b.each.map_or_else(|| quote!(()), key_ty);
                let t = binding_ty(p, b, &u.to_string());
                quote!(::std::collections::BTreeMap<#k, #t>)
            }
            _ => quote!(()),
        }
    };
    // Wave s's saved-binding maps, declared at the top of its code.
    let state_decls = |s: usize| -> TokenStream {
        let mut out = TokenStream::new();
        for (u, x) in &saved {
            if home(*x).1 == s {
                let st = state_var(u, *x);
                let ty = value_ty(*x, u);
                out.extend(quote! {
                    let mut #st: ::std::collections::BTreeMap<usize, #ty> = ::std::collections::BTreeMap::new();
                });
            }
        }
        out
    };
    // On entering block `l` in wave k: the saved bindings of its own that wave k uses, as options.
    let restores = |l: usize, k: usize| -> TokenStream {
        let mut out = TokenStream::new();
        let key = elem_key(Some(l));
        for (u, x) in &saved {
            let (block, s) = home(*x);
            let used_now = all_uses.iter().any(|(n, y, kk)| n == u && y == x && *kk == k);
            if block == Some(l) && s < k && used_now {
                let st = state_var(u, *x);
                let ty = value_ty(*x, u);
                out.extend(quote! {
                    let #u: ::core::option::Option<#ty> = ::dagger::__private::restore(&#st, #key);
                });
            }
        }
        out
    };
    // On leaving block `l` in wave k: the bindings of its own built in wave k that a later wave uses.
    let saves = |l: usize, k: usize| -> TokenStream {
        let mut out = TokenStream::new();
        let key = elem_key(Some(l));
        for (u, x) in &saved {
            let (block, s) = home(*x);
            if block == Some(l) && s == k {
                let st = state_var(u, *x);
                out.extend(if plain_in(*x, k) {
                    quote!(#st.insert(#key, ::core::clone::Clone::clone(&#u));)
                } else {
                    let v = local("saved");
                    quote! {
                        if let ::core::option::Option::Some(#v) = &#u {
                            #st.insert(#key, ::core::clone::Clone::clone(#v));
                        }
                    }
                });
            }
        }
        out
    };
    // The statements that make the names an item uses in wave k plain values, or leave its block (`None`) when
    // one is missing (a value that failed, a binding that was not built because of one).
    let unwraps = |names: Vec<&Ident>, each: Option<usize>, k: usize| -> TokenStream {
        let mut out = TokenStream::new();
        let mut done: Vec<String> = Vec::new();
        for u in names {
            if done.contains(&u.to_string()) {
                continue;
            }
            done.push(u.to_string());
            let x = classify(u, each);
            match x {
                Use::Plain => {}
                Use::Binding(_) | Use::Map(_) if plain_in(x, k) => {}
                Use::Binding(_) | Use::Map(_) => out.extend(quote! {
                    let ::core::option::Option::Some(#u) = ::core::clone::Clone::clone(&#u) else {
                        break #label ::core::option::Option::None;
                    };
                }),
                Use::Value(v) => {
                    let out_name = &p.outputs[v].name;
                    let name_str = out_name.to_string();
                    let ty = &leaf_tys[v];
                    // Hygienic names, located on the output's name, so a type error points there.
                    let at = |i: &Ident| Ident::new(&i.to_string(), Span::mixed_site().located_at(out_name.span()));
                    let (vv, hh) = (at(&values_var), at(&handles[v]));
                    let key = elem_key(each);
                    let get = quote_spanned!(out_name.span()=>
                        ::dagger::__private::value_of::<#ty>(#vv, ::dagger::__private::handle_at(&#hh, #key), #name_str));
                    out.extend(quote! {
                        let ::core::option::Option::Some(#u) = #get else {
                            break #label ::core::option::Option::None;
                        };
                    });
                }
            }
        }
        out
    };
    // The items of block `block` (`None`: the body) built in wave k, its blocks in place.
    fn enter_needed(p: &Pipeline, vals: &super::check::Values, l: usize, k: usize) -> bool {
        let inside = |each: Option<usize>| p.within(each, Some(l));
        p.bindings
            .iter()
            .zip(&vals.binding_stage)
            .any(|(b, &s)| inside(b.each) && s == k)
            || p.outputs
                .iter()
                .zip(&vals.output_stage)
                .any(|(o, &s)| inside(o.each) && (s == k || (k == 0 && s > 0)))
    }
    // (A recursive closure, written as a function taking the closures it needs.)
    #[allow(clippy::too_many_arguments)]
    fn walk(
        p: &Pipeline,
        checked: &Checked,
        block: Option<usize>,
        k: usize,
        item: &dyn Fn(Item, usize) -> TokenStream,
        enter: &dyn Fn(usize, usize, TokenStream) -> TokenStream,
    ) -> TokenStream {
        let vals = &checked.values;
        let mut out = TokenStream::new();
        let children: Vec<usize> = (0..p.loops.len()).filter(|&l| p.loops[l].parent == block).collect();
        let mut placed = vec![false; children.len()];
        let place = |upto: usize, out: &mut TokenStream, placed: &mut Vec<bool>| {
            for (c, &l) in children.iter().enumerate() {
                if !placed[c] && p.loops[l].at_binding <= upto {
                    placed[c] = true;
                    if enter_needed(p, vals, l, k) {
                        let inner = walk(p, checked, Some(l), k, item, enter);
                        out.extend(enter(l, k, inner));
                    }
                }
            }
        };
        for (j, b) in p.bindings.iter().enumerate() {
            if b.each != block {
                continue;
            }
            place(j, &mut out, &mut placed);
            if vals.binding_stage[j] == k {
                out.extend(item(Item::Binding(j), k));
            }
        }
        place(usize::MAX, &mut out, &mut placed);
        for (i, o) in p.outputs.iter().enumerate() {
            if o.each == block {
                out.extend(item(Item::Output(i), k));
            }
        }
        out
    }
    // One item in wave k.
    let item = |it: Item, k: usize| -> TokenStream {
        match it {
            Item::Binding(j) => {
                let b = &p.bindings[j];
                if k == 0 {
                    binding_stmt(b, None)
                } else {
                    let un = unwraps(b.uses.iter().collect(), b.each, k);
                    binding_stmt(b, Some(un))
                }
            }
            Item::Output(i) => {
                let o = &p.outputs[i];
                let s = vals.output_stage[i];
                if k == 0 && s == 0 {
                    let core = leaf_core(i);
                    let add = add_stmt(i, false);
                    quote!({ #core #add })
                } else if k == 0 {
                    add_stmt(i, true)
                } else if s == k {
                    let core = leaf_core(i);
                    let un = unwraps(std::iter::once(&o.target).chain(&o.uses).collect(), o.each, k);
                    let h = &handles[i];
                    let hh = local("handle");
                    let oname = &o.name;
                    let key = elem_key(o.each);
                    quote! {
                        if let ::core::option::Option::Some(#hh) = ::dagger::__private::handle_at(&#h, #key) {
                            let _: ::core::option::Option<()> = #label: {
                                #un
                                #core
                                #run_var.fill(&#hh, #ty_var, #oname);
                                ::core::option::Option::Some(())
                            };
                        }
                    }
                } else {
                    TokenStream::new()
                }
            }
        }
    };
    // Block `l` in wave k, around the code of its items (`inner`).
    let enter = |l: usize, k: usize, inner: TokenStream| -> TokenStream {
        let lp = &p.loops[l];
        let restored = restores(l, k);
        let saved_here = saves(l, k);
        if lp.cond.is_some() {
            let cond = cond_of(l);
            return quote! {
                if #cond {
                    #restored
                    #inner
                    #saved_here
                }
            };
        }
        let input = &lp.input;
        let key = &lp.key;
        let mut before = TokenStream::new();
        let mut inserts = TokenStream::new();
        let mut after = TokenStream::new();
        // A loop inside `if` blocks: its outputs' lists exist once it is reached.
        if k == 0 {
            for (i, o) in p.outputs.iter().enumerate() {
                if p.within(o.each, Some(l)) && shape(o.each).1 {
                    let h = &handles[i];
                    before.extend(quote!(#h = ::core::option::Option::Some(::std::vec::Vec::new());));
                }
            }
        }
        // Bindings of the loop used after it: the map of their values by key, built in their wave (an `Option`
        // in a later wave: `None` when an element's binding was not built).
        for (j, b) in p.bindings.iter().enumerate() {
            if b.each != Some(l) || vals.binding_stage[j] != k {
                continue;
            }
            for bname in b.names() {
                let used_after = all_uses.iter().any(|(n, x, _)| n == bname && *x == Use::Map(j));
                if !used_after {
                    continue;
                }
                let map = map_var(bname);
                let ty = value_ty(Use::Map(j), bname);
                let (m, v) = (local("map"), local("value"));
                if k == 0 {
                    before.extend(quote!(let mut #map: #ty = ::std::collections::BTreeMap::new();));
                    inserts.extend(
                        quote!(#map.insert(::core::clone::Clone::clone(&#key), ::core::clone::Clone::clone(&#bname));),
                    );
                } else {
                    let ok = local("complete");
                    before.extend(quote! {
                        let mut #map: ::core::option::Option<#ty> =
                            ::core::option::Option::Some(::std::collections::BTreeMap::new());
                    });
                    inserts.extend(quote! {
                        let #ok = match (&mut #map, &#bname) {
                            (::core::option::Option::Some(#m), ::core::option::Option::Some(#v)) => {
                                #m.insert(::core::clone::Clone::clone(&#key), ::core::clone::Clone::clone(#v));
                                true
                            }
                            _ => false,
                        };
                        if !#ok {
                            #map = ::core::option::Option::None;
                        }
                    });
                }
                after.extend(quote!(let #bname = #map;));
            }
        }
        let mut lets = quote!(let _ = (&#elem, &#key););
        if let Some(v) = &lp.value {
            lets.extend(quote!(let _ = &#v;));
        }
        let pattern = match &lp.value {
            Some(v) => quote!((#key, #v)),
            None => quote!(#key),
        };
        let collect = if lp.value.is_some() {
            quote!(::dagger::__private::each_pair)
        } else {
            quote!(::dagger::__private::each_key)
        };
        // Maps made after this loop are names of the block around it: saved with that block's.
        quote! {
            #before
            for (#elem, #pattern) in #collect(::core::clone::Clone::clone(&#input)).into_iter().enumerate() {
                #lets
                #restored
                #inner
                #inserts
                #saved_here
            }
            #after
        }
    };
    // Wave 0: handles, saved bindings, the body; then waves 1.. as nested closures.
    let mut schedule = TokenStream::new();
    for (i, o) in p.outputs.iter().enumerate() {
        let h = &handles[i];
        let hty = &handle_tys[i];
        schedule.extend(match shape(o.each) {
            (None, false) => quote!(let #h: #hty;),
            _ => quote!(let mut #h: #hty = ::core::default::Default::default();),
        });
    }
    schedule.extend(state_decls(0));
    schedule.extend(walk(p, checked, None, 0, &item, &enter));
    let mut deferred = TokenStream::new();
    if max_stage > 0 {
        let dag_owned = local("dag_owned");
        let needs_var = local("needs");
        // The slots of the values wave k reads (every element's, for a loop output).
        let needs_of = |k: usize| -> TokenStream {
            let mut read: Vec<usize> = all_uses
                .iter()
                .filter(|(_, _, kk)| *kk == k)
                .filter_map(|(_, x, _)| match x {
                    Use::Value(v) => Some(*v),
                    _ => None,
                })
                .collect();
            read.sort_unstable();
            read.dedup();
            let hs = read.iter().map(|&v| &handles[v]);
            quote! {
                let mut #needs_var: ::std::vec::Vec<usize> = ::std::vec::Vec::new();
                #(#needs_var.extend(::dagger::__private::slots_of(&#hs));)*
            }
        };
        let mut inner = TokenStream::new();
        for k in (1..=max_stage).rev() {
            let decls = state_decls(k);
            let body = walk(p, checked, None, k, &item, &enter);
            let needs = needs_of(k);
            inner = quote! {
                #needs
                #run_var.defer(#needs_var, move |#run_var: &mut ::dagger::__private::Run,
                                               #values_var: &::dagger::__private::Values<'_>| {
                    let #dag: &::dagger::Query = &#dag_owned;
                    let _ = (#dag, #values_var);
                    #decls
                    #body
                    #inner
                });
            };
        }
        let copies = handles
            .iter()
            .map(|h| quote!(let #h = ::core::clone::Clone::clone(&#h);));
        deferred = quote! {
            {
                let #dag_owned: ::dagger::Query = ::core::clone::Clone::clone(#dag);
                #(#copies)*
                #inner
            }
        };
    }

    // Static metadata.
    let after_traits = std::cell::RefCell::new(TokenStream::new());
    let meta_outputs = p.outputs.iter().enumerate().map(|(i, o)| {
        let oname = o.name.to_string();
        let target = o.target.to_string();
        let step = p
            .binding(&target)
            .map(|(_, b)| b.step.to_token_stream().to_string().replace(' ', ""))
            .unwrap_or_else(|| format!("input `{target}`"));
        let leaf = o.leaf.to_string();
        let after = checked.edges.iter().filter(|&&(_, b)| b == i).map(|&(a, _)| quote!(#a));
        // Outputs of used pipelines: one (`after checks.log`, found by the name's hash), or all of them
        // (`after checks`).
        let after_one: Vec<TokenStream> = checked
            .composed_after
            .iter()
            .filter(|(x, _, f)| *x == i && f.is_some())
            .enumerate()
            .filter_map(|(n, (_, j, f))| {
                let first = first_of(*j);
                f.as_ref().map(|f| {
                    let (def, index) = after_field(p, i, n, *j, f);
                    after_traits.borrow_mut().extend(def);
                    quote_spanned!(f.span()=> #first + #index)
                })
            })
            .collect();
        let after_all = checked
            .composed_after
            .iter()
            .filter(|(x, _, f)| *x == i && f.is_none())
            .map(|(_, j, _)| {
                let (first, used) = (first_of(*j), used_type(p, *j));
                quote!((#first, <#used as ::dagger::__private::Composable>::OUTPUTS))
            });
        // `if` blocks have one instance per output: only loops pair instances by element.
        let each = p.enclosing_loop(o.each).map_or(0, |l| l + 1);
        quote!(::dagger::__private::OutputMeta {
            name: #oname, binding: #target, step: #step, leaf: #leaf, after: &[#(#after,)* #(#after_one,)*],
            after_ranges: &[#(#after_all),*], each: #each
        })
    });
    let meta_outputs: Vec<TokenStream> = meta_outputs.collect();
    let after_traits = after_traits.into_inner();
    let fail_fast = p.fail_fast;
    let level_names = checked.levels.iter().map(|l| {
        let names = l.iter().map(|&i| p.outputs[i].name.to_string());
        quote!(&[#(#names),*])
    });
    let steps = p.bindings.iter().flat_map(|b| {
        let mut step = b.step.to_token_stream().to_string().replace(' ', "");
        if b.pipeline {
            step.push_str("::run");
        }
        b.names().map(move |n| {
            let bname = n.to_string();
            quote!((#bname, #step))
        })
    });
    let mut edges: Vec<(String, String)> = Vec::new();
    for lp in p.loops.iter().filter(|l| l.cond.is_none()) {
        edges.push((lp.input.to_string(), lp.key.to_string()));
        if let Some(v) = &lp.value {
            edges.push((lp.input.to_string(), v.to_string()));
        }
    }
    for b in &p.bindings {
        for u in &b.uses {
            for n in b.names() {
                edges.push((u.to_string(), n.to_string()));
            }
        }
    }
    for o in &p.outputs {
        edges.push((o.target.to_string(), o.name.to_string()));
        for u in &o.uses {
            edges.push((u.to_string(), o.name.to_string()));
        }
    }
    for &(a, b) in &checked.edges {
        edges.push((p.outputs[a].name.to_string(), p.outputs[b].name.to_string()));
    }
    for (o, j, field) in &checked.composed_after {
        let from = p.bindings[*j].pattern_text();
        let from = field.as_ref().map_or_else(|| from.clone(), |f| format!("{from}.{f}"));
        edges.push((from, p.outputs[*o].name.to_string()));
    }
    edges.sort();
    edges.dedup();
    let edge_tokens = edges.iter().map(|(a, b)| quote!((#a, #b)));
    let outputs_doc = format!("The values of `{name_str}`'s outputs, once every output succeeded.");
    let partial_doc = format!(
        "The outputs of `{name_str}` that completed before a failure (`None`, or missing from a loop's map: failed \
         or not run)."
    );
    let takes = p.outputs.iter().zip(&handles).map(|(o, h)| {
        let v = local("taken");
        match shape(o.each) {
            (None, false) => quote!(#results.take(#h)),
            (None, true) => quote! {
                match #h {
                    ::core::option::Option::Some(#v) => #results.take(#v),
                    ::core::option::Option::None => ::core::option::Option::None,
                }
            },
            (Some(_), false) => quote!(#results.take_each(#h)),
            (Some(_), true) => quote! {
                match #h {
                    ::core::option::Option::Some(#v) => ::core::option::Option::Some(#results.take_each(#v)),
                    ::core::option::Option::None => ::core::option::Option::None,
                }
            },
        }
    });

    // The pipelines used in this one: a field of `Outputs` and `Partial` each, by binding name.
    let c_names: Vec<Ident> = composed
        .iter()
        .filter_map(|&j| p.bindings[j].names().next().cloned())
        .collect();
    let c_paths: Vec<TokenStream> = composed
        .iter()
        .map(|&j| {
            let used = used_type(p, j);
            quote!(<#used as ::dagger::__private::Composable>)
        })
        .collect();
    let c_handles: Vec<Ident> = composed.iter().map(|&j| composed_handle(j)).collect();
    let c_docs = composed.iter().map(|&j| {
        let b = &p.bindings[j];
        let d = format!(
            "The outputs of pipeline `{}`, used here as `{}`.",
            b.step.to_token_stream().to_string().replace(' ', ""),
            b.pattern_text()
        );
        quote!(#[doc = #d])
    });
    let c_docs: Vec<TokenStream> = c_docs.collect();

    // `checks.built` in a pipeline using this one: the object behind each `sync` output outside blocks (and
    // known before the run); the other outputs are values, known once it is over.
    let object_fields: Vec<(TokenStream, TokenStream)> = p
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let on_top = |name: &Ident| match p.binding(&name.to_string()) {
                Some((j, b)) => b.each.is_none() && !b.pipeline && checked.values.binding_stage[j] == 0,
                None => p.input(&name.to_string()).is_some(),
            };
            let object =
                o.leaf == "sync" && o.each.is_none() && checked.values.output_stage[i] == 0 && on_top(&o.target);
            if object {
                let target = &o.target;
                (type_of(target), quote!(::core::clone::Clone::clone(&#target)))
            } else {
                (
                    quote!(::dagger::__private::ValueOfAnOutputOfAUsedPipeline),
                    quote!(::dagger::__private::ValueOfAnOutputOfAUsedPipeline),
                )
            }
        })
        .collect();
    let object_tys = object_fields.iter().map(|(t, _)| t);
    let object_values = object_fields.iter().map(|(_, v)| v);
    let indexes = (0..p.outputs.len()).map(|i| quote!(#i));

    // `Partial` → `Outputs` when every output finished (the used pipelines' too), and back.
    let complete_own = p.outputs.iter().map(|o| {
        let n = &o.name;
        match o.each {
            Some(_) => quote!(#n),
            None => quote!(::core::option::Option::Some(#n)),
        }
    });
    let back_own = p.outputs.iter().map(|o| {
        let n = &o.name;
        match o.each {
            Some(_) => quote!(#n),
            None => quote!(::core::option::Option::Some(#n)),
        }
    });
    let own_names: Vec<&Ident> = p.outputs.iter().map(|o| &o.name).collect();
    let lookup = step_lookup(p);
    let used_lookup = used_lookup(p);
    let graph = graph(p, checked);
    let inputs_var = local("inputs");
    let input_tys_again: Vec<Vec<&syn::Type>> = p.outputs.iter().map(|_| input_tys.clone()).collect();
    let input_tys_again = input_tys_again.iter().map(|tys| quote!((#(#tys,)*)));
    let name_hashes = p
        .outputs
        .iter()
        .map(|o| proc_macro2::Literal::u64_suffixed(name_hash(&o.name.to_string())));
    let (objects_var, outputs_var, handles_var) = (local("objects"), local("outputs"), local("handles"));

    quote! {
        #(#attrs)*
        #[allow(
            non_snake_case, unused_imports, unused_mut, unused_assignments, unused_labels, unreachable_patterns,
            unreachable_code, private_interfaces, clippy::all
        )]
        #vis mod #name {
            use super::*;

            /// The pipeline's name.
            pub const NAME: &str = #name_str;
            /// The pipeline's documentation.
            pub const DOC: &str = #doc;
            /// `(binding, step)` for every binding, in order.
            pub const STEPS: &[(&str, &str)] = &[#(#steps),*];
            /// `(from, to)` dependencies between inputs, bindings and outputs (data and `after`).
            pub const EDGES: &[(&str, &str)] = &[#(#edge_tokens),*];
            /// Output names by depth of `after` edges: level 1 waits for nothing, level n + 1 waits for
            /// outputs of levels up to n. Requests follow dependencies, not levels (see `plan`).
            pub const LEVELS: &[&[&str]] = &[#(#level_names),*];
            /// The pipeline's graph: `GRAPH.mermaid()` and `GRAPH.dot()` draw it.
            pub static GRAPH: ::dagger::Graph = #graph;

            #lookup

            #[doc(hidden)]
            pub static __META: ::dagger::__private::PipelineMeta = ::dagger::__private::PipelineMeta {
                name: #name_str,
                outputs: &[#(#meta_outputs),*],
                fail_fast: #fail_fast,
                graph: ::core::option::Option::Some(&GRAPH),
            };

            #used_lookup
            #after_traits

            /// This pipeline, as a pipeline using it sees it (`let used = this::run(…);`): `__P`. (Generic over
            /// the inputs, so that inputs of types less visible than the pipeline are not a "private type in
            /// public interface" of its `Composable` implementation.)
            #[doc(hidden)]
            pub struct __Pipeline<I>(::core::marker::PhantomData<I>);

            /// This pipeline, as a pipeline using it sees it.
            #[doc(hidden)]
            pub type __P = __Pipeline<(#(#input_tys,)*)>;

            impl ::dagger::__private::KnownPipeline for __Pipeline<(#(#input_tys,)*)> {}

            // The index of each output among the pipeline's own, by the hash of its name (`after used.name`).
            #(
                impl ::dagger::__private::OutputNamed<#name_hashes> for __Pipeline<#input_tys_again> {
                    const INDEX: usize = #indexes;
                }
            )*

            impl ::dagger::__private::Composable for __Pipeline<(#(#input_tys,)*)> {
                type Inputs = (#(#input_tys,)*);
                type Outputs = Outputs;
                type Partial = Partial;
                type Handles = __Handles;
                type Objects = Objects;
                const OUTPUTS: usize = __OUTPUTS;
                const GRAPH: &'static ::dagger::Graph = &GRAPH;
                fn meta() -> &'static ::dagger::__private::PipelineMeta {
                    &__META
                }
                fn compose(
                    #run_var: &mut ::dagger::__private::Run,
                    #scope: usize,
                    #dag: &::dagger::Query,
                    #inputs_var: Self::Inputs,
                ) -> (__Handles, Objects) {
                    let (#(#input_names,)*) = #inputs_var;
                    __schedule_into(#run_var, #scope, #dag, #(#input_names),*)
                }
                fn take(#handles_var: __Handles, #results: &mut ::dagger::__private::Results) -> Partial {
                    __take(#handles_var, #results)
                }
                fn complete(#partial: Partial) -> ::core::result::Result<Outputs, Partial> {
                    __complete(#partial)
                }
                fn partial(#outputs_var: ::core::result::Result<Outputs, Partial>) -> Partial {
                    __partial(#outputs_var)
                }
            }

            #[doc = #outputs_doc]
            #[derive(Debug)]
            pub struct Outputs {
                #(#out_docs pub #out_names: #out_tys,)*
                #(#c_docs pub #c_names: #c_paths::Outputs,)*
            }

            #[doc = #partial_doc]
            #[derive(Debug, Default)]
            pub struct Partial {
                #(#out_docs pub #out_names: #partial_tys,)*
                #(#c_docs pub #c_names: #c_paths::Partial,)*
            }

            /// What a pipeline using this one sees of it as `used.name`: the object of each `sync` output.
            #[doc(hidden)]
            #[derive(Clone, Debug)]
            pub struct Objects {
                #(pub #own_names: #object_tys,)*
            }

            /// How many outputs this pipeline adds to a run: its own and those of the pipelines it uses.
            #[doc(hidden)]
            pub const __OUTPUTS: usize = #n_own #(+ #c_paths::OUTPUTS)*;

            /// The handles of this pipeline's outputs in a run (a struct, not a tuple alias: its field types name
            /// this module's private `__Steps`, which a signature seen from another module must not).
            #[doc(hidden)]
            pub struct __Handles(#(pub #handle_tys,)* #(pub #c_paths::Handles,)*);

            fn __schedule_into(
                #run_var: &mut ::dagger::__private::Run,
                #scope: usize,
                #dag: &::dagger::Query,
                #input_params
            ) -> (__Handles, Objects) {
                #schedule
                let #objects_var = Objects { #(#own_names: #object_values,)* };
                #deferred
                (__Handles(#(#handles,)* #(#c_handles,)*), #objects_var)
            }

            /// The values of the outputs behind `handles`, as far as they finished.
            #[doc(hidden)]
            pub fn __take(
                __Handles(#(#handles,)* #(#c_handles,)*): __Handles,
                #results: &mut ::dagger::__private::Results,
            ) -> Partial {
                Partial {
                    #(#out_names: #takes,)*
                    #(#c_names: #c_paths::take(#c_handles, #results),)*
                }
            }

            /// `Outputs` when every output finished, else the `Partial` back.
            #[doc(hidden)]
            pub fn __complete(#partial: Partial) -> ::core::result::Result<Outputs, Partial> {
                let Partial { #(#own_names,)* #(#c_names,)* } = #partial;
                #(let #c_names = #c_paths::complete(#c_names);)*
                match (#(#own_names,)* #(#c_names,)*) {
                    (#(#complete_own,)* #(::core::result::Result::Ok(#c_names),)*) => {
                        ::core::result::Result::Ok(Outputs { #(#own_names,)* #(#c_names,)* })
                    }
                    (#(#own_names,)* #(#c_names,)*) => ::core::result::Result::Err(Partial {
                        #(#own_names,)*
                        #(#c_names: #c_paths::partial(#c_names),)*
                    }),
                }
            }

            /// `Outputs` as a `Partial`, or the `Partial` itself.
            #[doc(hidden)]
            pub fn __partial(#outputs_var: ::core::result::Result<Outputs, Partial>) -> Partial {
                match #outputs_var {
                    ::core::result::Result::Ok(Outputs { #(#own_names,)* #(#c_names,)* }) => Partial {
                        #(#own_names: #back_own,)*
                        #(#c_names: #c_paths::partial(::core::result::Result::Ok(#c_names)),)*
                    },
                    ::core::result::Result::Err(#partial) => #partial,
                }
            }

            /// Runs the pipeline: each request (a group of outputs, with the object IDs later ones need) is
            /// sent as soon as the requests it waits for are done; a failure skips only what waits for it.
            pub async fn run(#dag: &::dagger::Query, #input_params)
                -> ::core::result::Result<Outputs, ::dagger::PipelineError<Partial>>
            {
                let mut #run_var = ::dagger::__private::Run::new(&__META);
                let (#handles_var, _) = __schedule_into(&mut #run_var, 0, #dag, #(#input_names),*);
                let mut #results = #run_var.execute().await;
                let #partial = __take(#handles_var, &mut #results);
                if #results.complete() {
                    match __complete(#partial) {
                        ::core::result::Result::Ok(#outputs_var) => ::core::result::Result::Ok(#outputs_var),
                        ::core::result::Result::Err(#partial) => ::core::result::Result::Err(#results.into_error(#partial)),
                    }
                } else {
                    ::core::result::Result::Err(#results.into_error(#partial))
                }
            }

            /// The requests `run` sends, computed offline (object IDs are placeholders such as `<id:a0>`).
            pub fn plan(#input_params) -> ::dagger::Plan {
                let #dag = ::dagger::Query::detached();
                let mut #run_var = ::dagger::__private::Run::new(&__META);
                let _ = __schedule_into(&mut #run_var, 0, &#dag, #(#input_names),*);
                #run_var.plan()
            }
        }
    }
}

/// Rewrites every input, binding or value name an argument uses into a clone of it, so one value can feed
/// several steps and outputs (objects are cheap to clone).
fn clone_if_name(expr: &Expr, p: &Pipeline) -> TokenStream {
    super::names::clone_names(expr, &|ident: &Ident| p.is_name(&ident.to_string()))
}

/// `Ident::new`, escaping keywords as raw identifiers.
trait NewRaw {
    fn new_raw_or_plain(s: &str, span: proc_macro2::Span) -> Ident;
}

impl NewRaw for Ident {
    fn new_raw_or_plain(s: &str, span: proc_macro2::Span) -> Ident {
        match s {
            "ref" | "type" | "move" | "box" | "match" | "use" | "mod" | "fn" | "in" | "for" | "loop" | "where" => {
                Ident::new_raw(s, span)
            }
            _ => Ident::new(s, span),
        }
    }
}

/// The steps the pipeline names (`toolchain`, `ci::steps::build`), in order of first use: each is reached
/// through `<__Steps as Pick<k>>::T`, which resolves to the `#[step]` struct when it is in scope and to a
/// stand-in struct of the same name otherwise (see `step_lookup`).
fn lookup_steps(p: &Pipeline) -> Vec<syn::ExprPath> {
    let mut out: Vec<syn::ExprPath> = Vec::new();
    for b in p.bindings.iter().filter(|b| !b.pipeline) {
        if b.step.qself.is_none() && !out.iter().any(|o| same_path(o, &b.step)) {
            out.push(b.step.clone());
        }
    }
    out
}

fn same_path(a: &syn::ExprPath, b: &syn::ExprPath) -> bool {
    a.to_token_stream().to_string() == b.to_token_stream().to_string()
}

/// A path as written (`ci::steps::build`), for messages and metadata.
fn path_text(path: &syn::Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

/// The step of binding `b` as a type: `<__Steps as Pick<k>>::T` (or the path itself, for a `<T as …>` path).
fn step_type(p: &Pipeline, b: &super::ast::Binding) -> TokenStream {
    let step = &b.step;
    let k = lookup_steps(p).iter().position(|s| same_path(s, step));
    match k {
        Some(k) if !b.pipeline => quote_spanned!(step.span()=> <__Steps as ::dagger::__private::Pick<#k>>::T),
        _ => step.to_token_stream(),
    }
}

/// `path` as seen from a module `depth` levels below the one `pipeline!` is called in: a leading `self` or
/// `super` moves down with it (`super::x` from the pipeline's module is `super::super::x`).
fn path_below(path: &syn::Path, depth: usize) -> TokenStream {
    let mut segments = path.segments.iter().peekable();
    let mut out = TokenStream::new();
    let supers = |n: usize| {
        let s = (0..n).map(|_| quote!(super));
        quote!(#(#s)::*)
    };
    match segments.peek().map(|s| s.ident.to_string()) {
        Some(first) if first == "self" && path.leading_colon.is_none() => {
            segments.next();
            out.extend(supers(depth));
        }
        Some(first) if first == "super" && path.leading_colon.is_none() => {
            out.extend(supers(depth));
        }
        _ => {
            let lead = &path.leading_colon;
            out.extend(quote!(#lead));
            if let Some(s) = segments.next() {
                out.extend(quote!(#s));
            }
        }
    }
    for s in segments {
        if out.is_empty() {
            out.extend(quote!(#s));
        } else {
            out.extend(quote!(::#s));
        }
    }
    out
}

/// How the last name of `path` can fall back to a stand-in in a lookup module below the pipeline's (see
/// `step_lookup`): `None` for one name (looked up from the parent's names), `Some(prefix)` for a path whose
/// module is imported (`ci::steps` for `ci::steps::build`); `Err` when a stand-in cannot be used (the first
/// name is the last one, or the path goes through `Self` or generics).
fn fallback_prefix(path: &syn::Path) -> Result<Option<syn::Path>, ()> {
    if path.segments.iter().any(|s| !s.arguments.is_none()) {
        return Err(());
    }
    let n = path.segments.len();
    if n == 1 {
        return if path.leading_colon.is_some() {
            Err(())
        } else {
            Ok(None)
        };
    }
    let first = &path.segments[0].ident;
    let last = &path.segments[n - 1].ident;
    if first == last {
        return Err(());
    }
    let mut prefix = path.clone();
    prefix.segments.pop();
    prefix.segments.pop_punct();
    Ok(Some(prefix))
}

/// The stand-in for a step that is not a `#[step]` in scope: a `Step` whose parameters take anything and
/// whose output has the leaves the pipeline calls on it, so nothing else about its bindings is reported.
fn stand_in_step(p: &Pipeline, path: &syn::ExprPath, name: &Ident, vis: TokenStream) -> TokenStream {
    let users: Vec<&super::ast::Binding> = p
        .bindings
        .iter()
        .filter(|b| !b.pipeline && same_path(&b.step, path))
        .collect();
    let arity = users.first().map_or(0, |b| b.args.len());
    let params = (0..arity).map(|_| quote!(::dagger::__private::UnknownArg));
    let name_str = name.to_string();
    // The leaves the pipeline calls on bindings of this step, with as many arguments as it passes.
    let mut leaves: Vec<(Ident, usize)> = Vec::new();
    for o in &p.outputs {
        let made_here = p
            .binding(&o.target.to_string())
            .is_some_and(|(_, b)| users.iter().any(|u| std::ptr::eq(*u, b)));
        if made_here && !leaves.iter().any(|(l, _)| *l == o.leaf) {
            leaves.push((o.leaf.clone(), o.args.len()));
        }
    }
    let methods = leaves.iter().map(|(leaf, n)| {
        let tys: Vec<Ident> = (0..*n).map(|i| quote::format_ident!("A{}", i)).collect();
        quote! {
            #vis fn #leaf<#(#tys),*>(&self, #(_: #tys),*) -> ::dagger::Leaf<::std::string::String> {
                ::dagger::__private::unknown_leaf()
            }
        }
    });
    let mut traits: Vec<Ident> = Vec::new();
    for (leaf, _) in &leaves {
        let text = leaf.to_string();
        let base = Ident::new_raw_or_plain(text.strip_suffix("_opts").unwrap_or(&text), leaf.span());
        if !traits.contains(&base) {
            traits.push(base);
        }
    }
    quote! {
        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #name {}

        #[allow(dead_code)]
        impl #name {
            #(#methods)*
        }

        // (Never recommended in messages: the stand-in exists only for misspelled names.)
        #[diagnostic::do_not_recommend]
        impl ::dagger::__private::Step for #name {
            type Inputs = (#(#params,)*);
            type Output = #name;
            const NAME: &'static str = #name_str;
            const DOC: &'static str = "";
            const PARAMS: &'static [&'static str] = &[];
            const ARITY: usize = #arity;
            fn call(_: &::dagger::Query, _: Self::Inputs) -> Self::Output {
                #name {}
            }
        }

        #(
            #[diagnostic::do_not_recommend]
            impl ::dagger::__private::leaves::#traits for #name {
                type Output = ::std::string::String;
            }
            #[diagnostic::do_not_recommend]
            impl ::dagger::__private::has::#traits for #name {}
        )*
    }
}

/// How the steps are found. A step named by one identifier: a block-scope glob import of the parent module's
/// names (where the `#[step]` structs are) takes precedence over the pipeline module's own items, which hold
/// a stand-in struct per name. A step named by a path (`ci::steps::build`): in a module of its own holding a
/// stand-in named like its last name, a block imports the path's module (`use ci::steps::*;`), whose items
/// take precedence over that stand-in. A name that is not a `#[step]` in scope (a typo, a plain function)
/// still resolves — to its stand-in — so the one error is the macro's own message ("is not a `#[step]`
/// function in scope here", once per name), not rustc's "cannot find type". (A path whose module itself does
/// not exist still gets rustc's error: an import cannot fall back.)
fn step_lookup(p: &Pipeline) -> TokenStream {
    let steps = lookup_steps(p);
    let mut out = TokenStream::new();
    let mut picks = TokenStream::new();
    for (k, path) in steps.iter().enumerate() {
        let check_span = p
            .bindings
            .iter()
            .find(|b| !b.pipeline && same_path(&b.step, path))
            .map_or_else(Span::call_site, |b| b.step.span());
        let Some(last) = path.path.segments.last().map(|s| s.ident.clone()) else {
            continue;
        };
        match fallback_prefix(&path.path) {
            Ok(None) => {
                out.extend(stand_in_step(p, path, &last, quote!()));
                let check = quote_spanned!(check_span=>
                    ::dagger::__private::is_step::<<__Steps as ::dagger::__private::Pick<#k>>::T>();
                );
                out.extend(quote! {
                    const _: () = {
                        #[allow(dead_code)]
                        fn __check() {
                            #check
                        }
                    };
                });
                picks.extend(quote!(impl ::dagger::__private::Pick<#k> for __Steps { type T = #last; }));
            }
            Ok(Some(prefix)) => {
                let module = Ident::new(&format!("__step_{k}"), Span::call_site());
                let stand_in = stand_in_step(p, path, &last, quote!(pub));
                let prefix = path_below(&prefix, 2);
                out.extend(quote! {
                    #[allow(non_snake_case, unused_imports, dead_code)]
                    mod #module {
                        use super::*;
                        #stand_in
                        const _: () = {
                            use #prefix::*;
                            impl ::dagger::__private::Pick<#k> for super::__Steps { type T = #last; }
                        };
                    }
                });
                // The message names the path as written.
                let text = path_text(&path.path);
                let message = format!("`{text}` is not a `#[step]` function in scope here");
                let check_trait = Ident::new(&format!("__IsStep{k}"), Span::call_site());
                let ty = spanning_path(quote!(<__Steps as ::dagger::__private::Pick<#k>>::T), &path.path);
                let check = quote_spanned!(check_span=> __is::<#ty>(););
                out.extend(quote! {
                    #[diagnostic::on_unimplemented(
                        message = #message,
                        label = "no `#[step]` function of this name",
                        note = "add `#[step]` to the function, call a function that has it, or check the path: a step must \
                                be in scope where the pipeline is"
                    )]
                    trait #check_trait {}
                    #[diagnostic::do_not_recommend]
                    impl<T: ::dagger::__private::KnownStep> #check_trait for T {}
                    const _: () = {
                        #[allow(dead_code)]
                        fn __check() {
                            fn __is<T: #check_trait>() {}
                            #check
                        }
                    };
                });
            }
            Err(()) => {
                let direct = path_below(&path.path, 1);
                out.extend(quote! {
                    const _: () = {
                        impl ::dagger::__private::Pick<#k> for __Steps { type T = #direct; }
                    };
                });
            }
        }
    }
    quote! {
        #[doc(hidden)]
        struct __Steps;
        #out
        const _: () = {
            use super::*;
            #picks
        };
    }
}

/// FNV-1a: the hash of an output's name, which `OutputNamed` is keyed by (the same in every expansion).
fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The used pipeline of binding `j`, as a type: `<__Used as Pick<c>>::T`, the `__P` of its module or a
/// stand-in (see `used_lookup`).
fn used_type(p: &Pipeline, j: usize) -> TokenStream {
    let c = p.bindings[..j].iter().filter(|b| b.pipeline).count();
    let span = p.bindings[j].step.span();
    quote_spanned!(span=> <__Used as ::dagger::__private::Pick<#c>>::T)
}

/// How the pipelines used in this one are found, as `step_lookup` finds steps: the `__P` type of the
/// module named (`lint::__P`), or a stand-in module of the same name whose `__P` takes any
/// inputs and has every output, so the one error for a name that is not a pipeline is the macro's own. Also
/// the per-site checks of `after checks.name`.
fn used_lookup(p: &Pipeline) -> TokenStream {
    let mut out = TokenStream::new();
    let composed: Vec<usize> = (0..p.bindings.len()).filter(|&j| p.bindings[j].pipeline).collect();
    for (c, &j) in composed.iter().enumerate() {
        let b = &p.bindings[j];
        let path = &b.step.path;
        let span = b.step.span();
        let Some(last) = path.segments.last().map(|s| s.ident.clone()) else {
            continue;
        };
        let bname = b.pattern_text();
        // The objects of the used pipeline that arguments take (`checks.ready`): fields of the stand-in.
        let mut fields: Vec<Ident> = Vec::new();
        let args = p
            .bindings
            .iter()
            .flat_map(|b| &b.args)
            .chain(p.outputs.iter().flat_map(|o| &o.args));
        for a in args {
            for (base, field) in super::names::fields(a) {
                if base == bname && !fields.contains(&field) {
                    fields.push(field);
                }
            }
        }
        let arity = b.args.len();
        let params = (0..arity).map(|_| quote!(::dagger::__private::UnknownArg));
        let clone_body = match fields.first() {
            Some(f) => quote!(match self.#f {}),
            None => quote!(Objects {}),
        };
        let stand_in = quote! {
            pub(super) mod #last {
                pub struct __P;
                #[derive(Debug)]
                pub struct Objects {
                    #(pub #fields: ::dagger::__private::UnknownObject,)*
                }
                impl ::core::clone::Clone for Objects {
                    fn clone(&self) -> Self {
                        #clone_body
                    }
                }
                impl ::dagger::__private::Composable for __P {
                    type Inputs = (#(#params,)*);
                    type Outputs = ::dagger::__private::UnknownPipeline;
                    type Partial = ::dagger::__private::UnknownPipeline;
                    type Handles = ();
                    type Objects = Objects;
                    const OUTPUTS: usize = 0;
                    const GRAPH: &'static ::dagger::Graph = &::dagger::__private::UNKNOWN_GRAPH;
                    fn meta() -> &'static ::dagger::__private::PipelineMeta {
                        &::dagger::__private::UNKNOWN_PIPELINE
                    }
                    fn compose(
                        _: &mut ::dagger::__private::Run,
                        _: usize,
                        _: &::dagger::Query,
                        _: Self::Inputs,
                    ) -> ((), Objects) {
                        ::dagger::__private::unknown_pipeline()
                    }
                    fn take(_: (), _: &mut ::dagger::__private::Results) -> Self::Partial {
                        ::dagger::__private::UnknownPipeline
                    }
                    fn complete(partial: Self::Partial) -> ::core::result::Result<Self::Outputs, Self::Partial> {
                        ::core::result::Result::Ok(partial)
                    }
                    fn partial(outputs: ::core::result::Result<Self::Outputs, Self::Partial>) -> Self::Partial {
                        match outputs {
                            ::core::result::Result::Ok(p) | ::core::result::Result::Err(p) => p,
                        }
                    }
                }
                impl<const H: u64> ::dagger::__private::OutputNamed<H> for __P {
                    const INDEX: usize = 0;
                }
            }
        };
        let module = Ident::new(&format!("__used_{c}"), Span::call_site());
        let pick = |ty: TokenStream| quote!(impl ::dagger::__private::Pick<#c> for super::__Used { type T = #ty; });
        out.extend(match fallback_prefix(path) {
            Ok(None) => {
                let p = pick(quote!(#last::__P));
                quote! {
                    #[allow(non_snake_case, unused_imports, dead_code)]
                    mod #module {
                        #stand_in
                        const _: () = {
                            use super::super::*;
                            #p
                        };
                    }
                }
            }
            Ok(Some(prefix)) => {
                let prefix = path_below(&prefix, 2);
                let p = pick(quote!(#last::__P));
                quote! {
                    #[allow(non_snake_case, unused_imports, dead_code)]
                    mod #module {
                        use super::*;
                        #stand_in
                        const _: () = {
                            use #prefix::*;
                            #p
                        };
                    }
                }
            }
            Err(()) => {
                let direct = path_below(path, 1);
                quote! {
                    const _: () = {
                        impl ::dagger::__private::Pick<#c> for __Used { type T = #direct::__P; }
                    };
                }
            }
        });
        // Rule: a used pipeline is a `pipeline!` in scope (checked by type, with the path as written).
        let text = path_text(path);
        let message = format!("`{text}` is not a pipeline in scope here");
        let check_trait = Ident::new(&format!("__IsPipeline{c}"), Span::call_site());
        let ty = spanning_path(used_type(p, j), path);
        let check = quote_spanned!(span=> __is::<#ty>(););
        out.extend(quote! {
            #[diagnostic::on_unimplemented(
                message = #message,
                label = "no `pipeline!` of this name",
                note = "a pipeline is used by the name of the module its `pipeline!` declares, followed by `::run`: \
                        `let checks = lint::run(…);`; check the name, and that the pipeline is in scope where this \
                        one is"
            )]
            trait #check_trait {}
            #[diagnostic::do_not_recommend]
            impl<T: ::dagger::__private::KnownPipeline> #check_trait for T {}
            const _: () = {
                #[allow(dead_code)]
                fn __check() {
                    fn __is<T: #check_trait>() {}
                    #check
                }
            };
        });
    }
    if composed.is_empty() {
        return out;
    }
    quote! {
        #[doc(hidden)]
        struct __Used;
        #out
    }
}

/// The trait that checks `after checks.field` (output `o`'s `n`-th such name) and gives the index of that
/// output, and its use: `(definition, index expression)`.
fn after_field(p: &Pipeline, o: usize, n: usize, j: usize, field: &Ident) -> (TokenStream, TokenStream) {
    let b = &p.bindings[j];
    let bname = b.pattern_text();
    let text = path_text(&b.step.path);
    let hash = proc_macro2::Literal::u64_suffixed(name_hash(&field.to_string()));
    let message = format!("`{bname}.{field}`: the pipeline used as `{bname}` (`{text}`) has no output `{field}`");
    let label = format!("not an output of `{text}`");
    let note = format!(
        "`after {bname}.name` waits for one output of the pipeline used as `{bname}`: one of the fields of \
         `{text}::Outputs` (`after {bname}` waits for all of them)"
    );
    let check_trait = Ident::new(&format!("__After{o}x{n}"), Span::call_site());
    let def = quote! {
        #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note)]
        trait #check_trait {
            const INDEX: usize;
        }
        #[diagnostic::do_not_recommend]
        impl<T: ::dagger::__private::OutputNamed<#hash>> #check_trait for T {
            const INDEX: usize = <T as ::dagger::__private::OutputNamed<#hash>>::INDEX;
        }
    };
    let ty = respan(used_type(p, j), field.span());
    let index = quote_spanned!(field.span()=> <#ty as #check_trait>::INDEX);
    (def, index)
}

/// The type of the binding `name` made by `b`: the step's output, or its element for a tuple.
fn binding_ty(p: &Pipeline, b: &super::ast::Binding, name: &str) -> TokenStream {
    let step = &b.step;
    let step_here = step_type(p, b);
    let output = quote_spanned!(step.span()=> <#step_here as ::dagger::__private::Step>::Output);
    match b.element(name) {
        Some(i) => quote_spanned!(step.span()=> <#output as ::dagger::__private::Element<#i>>::T),
        None => output,
    }
}

/// `tokens` spanning all of `path` in errors: the first token on its first name, the last on its last name
/// (rustc underlines from one to the other).
fn spanning_path(tokens: TokenStream, path: &syn::Path) -> TokenStream {
    let first = path.segments.first().map_or_else(Span::call_site, |s| s.ident.span());
    let last = path.segments.last().map_or(first, |s| s.ident.span());
    let mut trees: Vec<proc_macro2::TokenTree> = respan(tokens, first).into_iter().collect();
    if let Some(t) = trees.last_mut() {
        t.set_span(last);
    }
    trees.into_iter().collect()
}

/// `tokens` with every span replaced by `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let proc_macro2::TokenTree::Group(g) = &tree {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tree = proc_macro2::TokenTree::Group(group);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}

/// An item of a block, for the walk that builds a wave.
#[derive(Clone, Copy)]
enum Item {
    Binding(usize),
    Output(usize),
}

/// A type as written, with rustfmt's spacing (`Vec<String>`, `BTreeMap<String, bool>`, `&'static str`).
fn type_text(ty: &syn::Type) -> String {
    let raw = ty.to_token_stream().to_string();
    let mut out = raw
        .replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" ::", "::")
        .replace(" < ", "<")
        .replace("< ", "<")
        .replace(" <", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace("& ", "&")
        .replace("( ", "(")
        .replace(" )", ")")
        .replace("[ ", "[")
        .replace(" ]", "]")
        .replace(" ;", ";");
    while out.contains("> >") {
        out = out.replace("> >", ">>");
    }
    out
}

/// The `GRAPH` static of a pipeline (see `dagger::Graph`).
fn graph(p: &Pipeline, checked: &Checked) -> TokenStream {
    let vals = &checked.values;
    let name = p.name.to_string();
    let inputs = p.inputs.iter().map(|i| {
        let (n, ty) = (i.name.to_string(), type_text(&i.ty));
        quote!(::dagger::graph::GraphInput { name: #n, ty: #ty })
    });
    let opt = |x: Option<usize>| match x {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    };
    // The names an argument uses (`checks.ready` for an object of a used pipeline).
    let arg_names = |a: &Expr| -> Vec<String> {
        let fields = super::names::fields(a);
        let mut out: Vec<String> = Vec::new();
        for u in super::names::mentions(a) {
            let text = u.to_string();
            if !p.is_name(&text) {
                continue;
            }
            let dotted: Vec<String> = fields
                .iter()
                .filter(|(base, _)| *base == text && p.binding(&text).is_some_and(|(_, b)| b.pipeline))
                .map(|(base, f)| format!("{base}.{f}"))
                .collect();
            let names = if dotted.is_empty() { vec![text] } else { dotted };
            for n in names {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    };
    let is_value = |n: &str| p.binding(n).is_none() && p.input(n).is_none() && p.output(n).is_some();
    let mut edges: Vec<(String, String, &str)> = Vec::new();
    let bindings: Vec<TokenStream> = p
        .bindings
        .iter()
        .enumerate()
        .map(|(j, b)| {
            let names: Vec<String> = b
                .names
                .iter()
                .map(|n| n.as_ref().map_or_else(|| "_".to_owned(), ToString::to_string))
                .collect();
            let mut step = path_text(&b.step.path);
            if b.pipeline {
                step.push_str("::run");
            }
            let args: Vec<Vec<String>> = b.args.iter().map(&arg_names).collect();
            if !b.pipeline
                && let Some(first) = b.names().next()
            {
                for n in args.iter().flatten() {
                    let kind = if is_value(n) { "Value" } else { "Data" };
                    edges.push((n.clone(), first.to_string(), kind));
                }
            }
            let args = args.iter().map(|a| quote!(&[#(#a),*]));
            let tuple = b.tuple;
            let block = opt(b.each);
            let wave = vals.binding_stage[j] + 1;
            let pipeline = if b.pipeline {
                let used = used_type(p, j);
                quote!(::core::option::Option::Some(<#used as ::dagger::__private::Composable>::GRAPH))
            } else {
                quote!(::core::option::Option::None)
            };
            quote!(::dagger::graph::GraphBinding {
                names: &[#(#names),*], tuple: #tuple, step: #step, args: &[#(#args),*], block: #block,
                wave: #wave, pipeline: #pipeline
            })
        })
        .collect();
    let outputs: Vec<TokenStream> = p
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let (n, target, leaf) = (o.name.to_string(), o.target.to_string(), o.leaf.to_string());
            edges.push((target.clone(), n.clone(), "Data"));
            for u in o.args.iter().flat_map(&arg_names) {
                let kind = if is_value(&u) { "Value" } else { "Data" };
                edges.push((u, n.clone(), kind));
            }
            for a in &o.after {
                let a = a.to_string();
                // An output, or a used pipeline (all of its outputs: drawn from its subgraph).
                if p.output(&a).is_some() || p.binding(&a).is_some_and(|(_, b)| b.pipeline) {
                    edges.push((a, n.clone(), "After"));
                } else {
                    for other in p.outputs.iter().filter(|x| x.target == a && x.name != o.name) {
                        edges.push((other.name.to_string(), n.clone(), "After"));
                    }
                }
            }
            for (b, f) in &o.after_fields {
                edges.push((format!("{b}.{f}"), n.clone(), "After"));
            }
            let block = opt(o.each);
            let level = checked.levels.iter().position(|l| l.contains(&i)).map_or(1, |l| l + 1);
            let wave = vals.output_stage[i] + 1;
            let args = o.args.len();
            quote!(::dagger::graph::GraphOutput {
                name: #n, target: #target, leaf: #leaf, args: #args, block: #block, level: #level, wave: #wave
            })
        })
        .collect();
    let blocks = p.loops.iter().map(|l| {
        let input = l.input.to_string();
        let parent = opt(l.parent);
        let kind = match (l.cond, &l.value) {
            (Some(negated), _) => quote!(::dagger::graph::GraphBlockKind::If { negated: #negated }),
            (None, value) => {
                let key = l.key.to_string();
                let value = match value {
                    Some(v) => {
                        let v = v.to_string();
                        quote!(::core::option::Option::Some(#v))
                    }
                    None => quote!(::core::option::Option::None),
                };
                quote!(::dagger::graph::GraphBlockKind::For { key: #key, value: #value })
            }
        };
        quote!(::dagger::graph::GraphBlock { kind: #kind, input: #input, parent: #parent })
    });
    let mut seen: Vec<(String, String, &str)> = Vec::new();
    for e in edges {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    let edges = seen.iter().map(|(from, to, kind)| {
        let kind = Ident::new(kind, Span::call_site());
        quote!(::dagger::graph::GraphEdge { from: #from, to: #to, kind: ::dagger::graph::EdgeKind::#kind })
    });
    quote! {
        ::dagger::Graph {
            name: #name,
            inputs: &[#(#inputs),*],
            bindings: &[#(#bindings),*],
            outputs: &[#(#outputs),*],
            blocks: &[#(#blocks),*],
            edges: &[#(#edges),*],
        }
    }
}
