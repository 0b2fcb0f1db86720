//! `pipeline!`: parse → check → expand.

mod ast;
mod check;
mod expand;
mod names;
pub(crate) mod parse;

use proc_macro2::TokenStream;
use quote::quote;

use crate::errors::Errors;

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let parse::Pipelines(pipelines) = match syn::parse2(input) {
        Ok(p) => p,
        Err(e) => return e.to_compile_error(),
    };
    expand_all(&pipelines)
}

/// `#[pipeline_fn]`: the same parse (in its function form), checks and expansion as `pipeline!`.
pub(crate) fn expand_fn(attr: TokenStream, item: TokenStream) -> TokenStream {
    match parse::parse_fn_form(attr, item) {
        Ok(p) => expand_all(std::slice::from_ref(&p)),
        Err(e) => e.to_compile_error(),
    }
}

fn expand_all(pipelines: &[ast::Pipeline]) -> TokenStream {
    let mut out = TokenStream::new();
    for p in pipelines {
        let mut errors = Errors::default();
        let checked = check::check(p, &mut errors);
        match errors.into_compile_errors() {
            None => out.extend(expand::expand(p, &checked)),
            Some(errs) => {
                // Still define the module, so uses of it elsewhere do not pile up unrelated errors.
                let vis = &p.vis;
                let name = &p.name;
                out.extend(quote! {
                    #errs
                    #[allow(dead_code, non_snake_case)]
                    #vis mod #name {}
                });
            }
        }
    }
    out
}
