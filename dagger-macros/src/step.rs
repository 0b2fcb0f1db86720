//! `#[step]`: checks a step function and publishes its signature for `pipeline!`.
//!
//! The function is emitted unchanged. Beside it (in the type namespace, so the names do not clash) comes a
//! hidden braced struct with the same name implementing `dagger::__private::Step`: its input tuple, output
//! type, name, doc and parameter names. `pipeline!` calls steps through that trait.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, ReturnType, Type};

pub(crate) use crate::errors::Errors;

/// How a parameter reaches the step function.
enum Param {
    /// The leading `&Query`.
    Query,
    /// A value passed as it is.
    Value { name: String, ty: Box<Type> },
    /// A `&str`, stored as a `String` in the input tuple and passed by reference.
    Str { name: String },
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let msg = syn::Error::new(
                e.span(),
                "`#[step]` goes on a plain function: `fn name(…) -> Container`",
            );
            let err = msg.to_compile_error();
            return quote!(#err #item);
        }
    };
    let mut errors = Errors::default();
    if !attr.is_empty() {
        errors.push_spanned(
            &attr,
            "`#[step]` takes no arguments; the step's name is the function's name",
        );
    }
    let sig = &func.sig;

    // Rule: steps are sync builders; the engine does the work when an output is evaluated.
    if let Some(a) = &sig.asyncness {
        errors.push(
            a.span(),
            "a step cannot be `async`: steps only build pipelines (lazily); remove `async`, the engine runs the work \
             when an output is evaluated",
        );
    }
    // Rule: the macro must name the step's exact types; generic steps have none.
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push_spanned(
            &sig.generics,
            "a step cannot be generic: `pipeline!` needs its exact parameter and output types; use concrete types: \
             any `Clone` type works (`Container`, `String`, `Option<String>`, an enum, your own config struct)",
        );
    }
    // Whether the step can still be described to `pipeline!` despite its errors (its types are known), so
    // that pipelines using it do not fail again because of it.
    let mut describable = sig.generics.params.is_empty() && sig.generics.where_clause.is_none();
    // Rule: a step is a free function; methods cannot be named from a pipeline.
    if let Some(r) = sig.receiver() {
        // A method's struct and impl could not be emitted where the method is.
        describable = false;
        errors.push_spanned(
            r,
            "a step cannot take `self`: make it a free function and pass the value as a parameter",
        );
    }
    // Rule: the output is what later steps and outputs build on.
    let output_ty = match &sig.output {
        ReturnType::Default => {
            errors.push(
                sig.ident.span(),
                format!(
                    "step `{}` has no return type: a step returns the Dagger object it builds, such as `-> Container`",
                    sig.ident
                ),
            );
            None
        }
        ReturnType::Type(_, ty) => Some((**ty).clone()),
    };

    let mut params = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(pt) = input else { continue };
        let name = match &*pt.pat {
            Pat::Ident(p) => p.ident.to_string(),
            Pat::Wild(_) => format!("_{i}"),
            other => {
                errors.push_spanned(other, "step parameters must be plain names, such as `src: Directory`");
                format!("_{i}")
            }
        };
        match &*pt.ty {
            Type::Reference(r) if is_query(&r.elem) => {
                if i == 0 {
                    params.push(Param::Query);
                } else {
                    errors.push_spanned(&pt.ty, "`&Query` must be the first parameter of a step");
                }
            }
            Type::Reference(r) if is_str(&r.elem) => params.push(Param::Str { name }),
            Type::Reference(r) => {
                let inner = r.elem.to_token_stream();
                errors.push_spanned(
                    &pt.ty,
                    format!(
                        "step parameters are taken by value: write `{inner}` instead of `&{inner}` (objects are cheap to \
                         clone)"
                    ),
                );
                // Described as the fix would have it, so pipelines using the step are not errors too.
                params.push(Param::Value {
                    name,
                    ty: r.elem.clone(),
                });
            }
            Type::ImplTrait(_) => {
                describable = false;
                errors.push_spanned(
                    &pt.ty,
                    "a step parameter cannot be `impl Trait`: `pipeline!` needs its exact type",
                );
            }
            ty => params.push(Param::Value {
                name,
                ty: Box::new(ty.clone()),
            }),
        }
    }

    let errs = errors.into_compile_errors();
    let Some(output_ty) = output_ty.filter(|_| describable) else {
        // Keep the function so the rest of the crate still compiles and the IDE keeps working.
        return quote!(#errs #func);
    };

    let ident = &sig.ident;
    let vis = &func.vis;
    let name = ident.to_string();
    let doc = doc_string(&func.attrs);
    let value_params: Vec<&Param> = params.iter().filter(|p| !matches!(p, Param::Query)).collect();
    let input_tys: Vec<TokenStream> = value_params
        .iter()
        .map(|p| match p {
            Param::Value { ty, .. } => ty.to_token_stream(),
            Param::Str { .. } => quote!(::std::string::String),
            Param::Query => unreachable_tokens(),
        })
        .collect();
    let param_names: Vec<&str> = value_params
        .iter()
        .map(|p| match p {
            Param::Value { name, .. } | Param::Str { name } => name.as_str(),
            Param::Query => "",
        })
        .collect();
    let arity = value_params.len();
    let mut call_args = Vec::new();
    let mut index = 0usize;
    for p in &params {
        match p {
            Param::Query => call_args.push(quote!(dag)),
            Param::Value { .. } => {
                let i = syn::Index::from(index);
                call_args.push(quote!(inputs.#i));
                index += 1;
            }
            Param::Str { .. } => {
                let i = syn::Index::from(index);
                call_args.push(quote!(&inputs.#i));
                index += 1;
            }
        }
    }
    let uses_dag = params.iter().any(|p| matches!(p, Param::Query));
    let ignore_dag = if uses_dag { quote!() } else { quote!(let _ = dag;) };
    let ignore_inputs = if arity == 0 { quote!(let _ = inputs;) } else { quote!() };
    // Each check carries the span of the user's type, so the error lands on it.
    let param_checks = value_params.iter().filter_map(|p| match p {
        Param::Value { ty, .. } => Some(quote_spanned!(ty.span()=> ::dagger::__private::assert_step_param::<#ty>();)),
        _ => None,
    });
    let output_check = quote_spanned!(output_ty.span()=> ::dagger::__private::assert_step_output::<#output_ty>(););
    // `toolchain::plan(src)`: the step's work as a plan, for a snapshot of one step. The root is a local of
    // the expansion (mixed-site hygiene), so a parameter named `dag` does not clash with it.
    let root = syn::Ident::new("dag", proc_macro2::Span::mixed_site());
    let built = syn::Ident::new("built", proc_macro2::Span::mixed_site());
    let mut plan_params = Vec::new();
    let mut plan_args = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(pt) = input else { continue };
        match (params.get(i), &*pt.pat) {
            (Some(Param::Query), _) => {}
            (param, pat) => {
                let name = match pat {
                    Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
                    _ => quote::format_ident!("arg{}", i),
                };
                let ty = &pt.ty;
                plan_params.push(quote!(#name: #ty));
                // The input tuple holds a `String` for a `&str` parameter.
                plan_args.push(match param {
                    Some(Param::Str { .. }) => quote!(::std::borrow::ToOwned::to_owned(#name)),
                    _ => quote!(#name),
                });
            }
        }
    }
    let plan_doc = format!("The requests that asking for the result of step `{name}` sends, computed offline.");

    let describe = |call: TokenStream| {
        quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types, dead_code, unreachable_pub)]
            #vis struct #ident {}

            impl ::dagger::__private::KnownStep for #ident {}

            impl ::dagger::__private::Step for #ident {
                type Inputs = (#(#input_tys,)*);
                type Output = #output_ty;
                const NAME: &'static str = #name;
                const DOC: &'static str = #doc;
                const PARAMS: &'static [&'static str] = &[#(#param_names),*];
                const ARITY: usize = #arity;

                fn call(dag: &::dagger::Query, inputs: Self::Inputs) -> Self::Output {
                    #call
                }
            }
        }
    };
    if let Some(errs) = errs {
        // The step is described anyway (the build fails on `errs`, so `call` never runs): a pipeline using
        // it reports nothing more.
        let described = describe(quote! {
            let _ = (dag, inputs);
            ::core::unreachable!("this step did not compile")
        });
        return quote!(#errs #func #described);
    }
    let described = describe(quote! {
        #ignore_dag
        #ignore_inputs
        #ident(#(#call_args),*)
    });

    quote! {
        #func

        #described

        impl #ident {
            #[doc = #plan_doc]
            #[allow(dead_code, clippy::needless_pass_by_value)]
            #vis fn plan(#(#plan_params),*) -> ::dagger::Plan {
                use ::dagger::__private::{PlanObject as _, PlanOther as _};
                let #root = ::dagger::Query::detached();
                // Through the `Step` trait (the type namespace): a parameter may have the step's own name.
                let #built = <#ident as ::dagger::__private::Step>::call(
                    &#root,
                    (#(#plan_args,)*),
                );
                (&&::dagger::__private::PlanOf(#built)).plan_of(#name)
            }
        }

        const _: () = {
            #[allow(dead_code)]
            fn __check_step_types() {
                #(#param_checks)*
                #output_check
            }
        };
    }
}

fn unreachable_tokens() -> TokenStream {
    quote!(())
}

fn last_segment_is(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == name),
        _ => false,
    }
}

fn is_query(ty: &Type) -> bool {
    last_segment_is(ty, "Query")
}

fn is_str(ty: &Type) -> bool {
    last_segment_is(ty, "str")
}

/// The `///` doc comment lines of an item, joined.
pub(crate) fn doc_string(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &attr.meta
            && let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s), ..
            }) = &nv.value
        {
            lines.push(s.value().trim().to_owned());
        }
    }
    lines.join("\n")
}
