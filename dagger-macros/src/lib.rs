//! Procedural macros for the `dagger` crate: `#[step]` and `pipeline!`.
//!
//! Use them through `dagger` (`use dagger::prelude::*;`), never from this crate directly: the code they
//! generate names the runtime as `::dagger::__private`.

mod errors;
#[cfg(test)]
mod expansion_snapshot;
mod leaves;
mod pipeline;
mod step;

use proc_macro::TokenStream;

/// Marks a function as a pipeline step, callable from [`pipeline!`].
///
/// A step is a plain, sync function that *builds* part of a pipeline and returns the Dagger object it
/// built. It stays an ordinary function you can call and unit-test yourself.
///
/// ```ignore
/// use dagger::prelude::*;
///
/// /// A Rust toolchain with the sources mounted.
/// #[step]
/// fn toolchain(dag: &Query, src: Directory) -> Container {
///     dag.container().from("rust:1-slim").with_directory("/src", src).with_workdir("/src")
/// }
///
/// #[step]
/// fn unit_tests(toolchain: Container, filter: &str) -> Container {
///     toolchain.with_exec(["cargo", "test", filter])
/// }
/// ```
///
/// # Rules (each is a compile error with a message that says how to fix it)
/// - an optional first parameter `&Query` receives the pipeline's root; it is not passed in `pipeline!`;
/// - other parameters are taken by value and may have any `Clone` type: Dagger objects (`Container`,
///   `Directory`, `File`, …), which become IDs in the query, or plain values (`String`, `&str`, integers,
///   `bool`, `Option<String>`, enums, your own config structs), which only shape the query the step builds;
/// - the return type is a Dagger object, or a tuple of them (`-> (File, Directory)`, bound in a pipeline
///   with `let (bin, docs) = build(tc);`);
/// - a step is not `async`, not generic, and has no `self` receiver.
#[proc_macro_attribute]
pub fn step(attr: TokenStream, item: TokenStream) -> TokenStream {
    step::expand(attr.into(), item.into()).into()
}

/// Declares a pipeline: typed inputs, steps bound to names, and the outputs to evaluate.
///
/// ```ignore
/// pipeline! {
///     /// Test, build and publish the app.
///     pub ci(src: Directory, registry: String) {
///         let tc = toolchain(src);
///         let tests = unit_tests(tc, "--quiet");
///         let bin = binary(tc);
///         let img = image(bin);
///
///         /// The test log.
///         out test_log = tests.stdout();
///         out image_ref = img.publish(registry) after test_log;
///     }
/// }
/// ```
///
/// # Grammar
/// ```text
/// pipeline! { PIPELINE* }
/// PIPELINE := ATTR* VIS NAME ( INPUT,* ) { ITEM* }
/// INPUT    := NAME : TYPE
/// ITEM     := BINDING | OUTPUT
///           | for NAME in INPUT { (BINDING | OUTPUT)* }
///           | for ( NAME , NAME ) in INPUT { (BINDING | OUTPUT)* }
///           | if [!] INPUT { (BINDING | OUTPUT)* }
/// BINDING  := let (NAME | ( NAME_OR_UNDERSCORE,* )) = STEP_PATH ( EXPR,* ) ;
/// OUTPUT   := ATTR* out NAME = TARGET . LEAF ( EXPR,* ) [after NAME, …] ;
/// ```
/// - `let` binds the object a `#[step]` returns. Arguments are inputs, earlier bindings, literals, or
///   expressions over them (`tc.directory("/out")`); a bare name is cloned, so one value may feed many
///   steps. Steps may live anywhere in scope (`ci::steps::build`).
/// - `out` evaluates one leaf (`sync`, `stdout`, `contents`, `export`, `publish`, `*_opts`, …) of an input or
///   binding; its value becomes a field of the generated `Outputs` struct.
/// - `after` orders outputs that no data orders: an output waits for the named outputs (or for every output
///   of a named binding) to succeed.
/// - `for v in versions { … }` repeats its bindings and outputs for every element of a collection input;
///   its outputs become `BTreeMap`s keyed by element, and every element's work goes in the same requests.
/// - `if publish { … }` (or `if !draft`) keeps its bindings and outputs only when a `bool` input holds; its
///   outputs become `Option`s, and nothing it needs is sent otherwise.
/// - An output's value (a `String`, an integer, …) may be an argument of a later step or leaf, by the
///   output's name; the run builds what needs it once the value is known.
/// - `#[fail_fast]` on a pipeline makes the first failure stop every request not sent yet.
///
/// # What it generates
/// A module named after the pipeline with:
/// - `run(&Query, inputs…) -> Result<Outputs, PipelineError<Partial>>`: resolves the object arguments the
///   outputs need in batched requests, then sends outputs grouped by dependencies: outputs that wait for
///   the same requests and are awaited by the same outputs share one request, with one aliased field each,
///   and a request goes out as soon as the ones it waits for are done. A failed output skips only the
///   outputs that wait for it (`#[fail_fast]` on the pipeline: everything not sent yet); outputs that
///   finished are in the error's `partial` value, and `?` converts the error into `dagger::Error`;
/// - `plan(inputs…) -> Plan`: the documents `run` sends, computed offline, `Display`able for snapshots;
/// - `Outputs`, `Partial`, and the constants `NAME`, `DOC`, `STEPS`, `EDGES`, `LEVELS`.
///
/// # Compile-time rules
/// Every problem in one invocation is reported at once, underlining the offending construct:
/// unknown binding (with a suggestion), use before definition, a binding used as its own argument, duplicate
/// inputs/bindings/outputs, an unknown leaf (with a suggestion), a builder method used as an output, a
/// binding no output uses (prefix `_` to keep it), a pipeline without outputs, `after` naming itself, an
/// unknown name or a binding without outputs after `after`, a cycle through `after` (printed), a
/// function that is not a `#[step]`, a wrong number of step arguments, an argument whose type does not fit
/// the step's parameter, and a leaf the binding's type does not have.
#[proc_macro]
pub fn pipeline(input: TokenStream) -> TokenStream {
    pipeline::expand(input.into()).into()
}

/// [`pipeline!`] written as a function: `#[pipeline_fn] pub fn ci(src: Directory) { … }` declares the same
/// module `ci` as `pipeline! { pub ci(src: Directory) { … } }`, through the same parser, checks and
/// expansion. The body is ordinary Rust syntax, so rustfmt formats it and rust-analyzer completes inside it;
/// an output is a `let` marked `#[out]`:
///
/// ```ignore
/// #[pipeline_fn]
/// /// Test, then publish.
/// pub fn ci(src: Directory, publish: bool) {
///     let tc = toolchain(src);
///     let tests = unit_tests(tc);
///     /// The test log.
///     #[out]
///     let test_log = tests.stdout();
///     if publish {
///         let img = image(binary(tc));
///         #[out(after(test_log))]
///         let image_ref = img.publish("registry.example/app:1");
///     }
/// }
/// ```
///
/// (An attribute cannot be named `pipeline` too: Rust keeps attribute and function-like macros in one
/// namespace.)
#[proc_macro_attribute]
pub fn pipeline_fn(attr: TokenStream, item: TokenStream) -> TokenStream {
    pipeline::expand_fn(attr.into(), item.into()).into()
}
