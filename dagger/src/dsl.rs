//! What `#[step]` and `pipeline!` expand to: the `Step` trait and the checks that turn type errors into
//! readable messages. Reached only through `dagger::__private`.

use std::collections::BTreeMap;

use crate::core::Object;
use crate::{Query, scalars::Platform};

/// A function marked `#[step]`, described for `pipeline!`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pipeline step",
    label = "not a `#[step]` function in scope here",
    note = "add `#[step]` to the function, call a function that has it, or check the name: a step must be in scope \
            where the pipeline is (a pipeline is used as `name::run(…)`)"
)]
pub trait Step {
    /// The parameters after the optional leading `&Query`, as a tuple (`&str` becomes `String`).
    type Inputs;
    /// The object the step returns (checked separately, for a readable error).
    type Output;
    /// The function's name.
    const NAME: &'static str;
    /// The function's doc comment.
    const DOC: &'static str;
    /// The parameter names, in order (without the `&Query`).
    const PARAMS: &'static [&'static str];
    /// The number of parameters `pipeline!` passes.
    const ARITY: usize;
    /// Calls the function.
    fn call(dag: &Query, inputs: Self::Inputs) -> Self::Output;
}

/// Types a step parameter may have: any `Clone` type. Objects (`Container`, `Directory`, …) become IDs in the
/// query; plain values (`String`, integers, `bool`, `Option<String>`, enums, your own config structs) stay in
/// the process and only shape the query the step builds. A name passed to several steps is cloned for each.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a step parameter: it is not `Clone`",
    label = "not `Clone`",
    note = "`pipeline!` clones an argument for every step and output that uses it: derive or implement `Clone` \
            for `{Self}` (Dagger objects, `String`, integers, `bool`, `Option<T>`, `Vec<T>` and `BTreeMap<K, V>` \
            of `Clone` types already are)"
)]
pub trait StepParam {}

impl<T: Clone> StepParam for T {}

/// Types a step may return: a Dagger object, or a tuple of them (`let (bin, docs) = build(tc);`).
#[diagnostic::on_unimplemented(
    message = "a step must return a Dagger object (or a tuple of them), not `{Self}`",
    label = "not a Dagger object",
    note = "return the object the step builds (`Container`, `Directory`, `File`, …), or a tuple such as \
            `(File, Directory)` bound with `let (bin, docs) = step(…);`; run leaves such as `stdout` as pipeline \
            outputs instead"
)]
pub trait StepOutput {}

impl<T: Object> StepOutput for T {}

/// A step's output bound with `let (a, b, …) = step(…);`: a tuple of exactly `N` objects.
#[diagnostic::on_unimplemented(
    message = "the step returns `{Self}`, which is not a tuple with one element per name of this binding",
    label = "one name per element of the tuple the step returns",
    note = "bind a step returning one object with `let name = step(…);`, and one returning a tuple with as many \
            names as it has elements, `_` for those the pipeline does not use"
)]
pub trait Tuple<const N: usize> {
    /// The tuple itself.
    type Parts;
    /// The tuple itself.
    fn parts(self) -> Self::Parts;
}

/// Element `I` of a step's tuple.
pub trait Element<const I: usize> {
    /// Its type.
    type T;
}

macro_rules! tuple_outputs {
    ($($n:literal ($($t:ident),+)),*) => {$(
        impl<$($t: Object),+> StepOutput for ($($t,)+) {}

        impl<$($t),+> Tuple<$n> for ($($t,)+) {
            type Parts = Self;
            fn parts(self) -> Self {
                self
            }
        }

        impl<$($t: Object),+> PlanObject for &PlanOf<($($t,)+)> {
            #[allow(non_snake_case)]
            fn plan_of(&self, name: &'static str) -> crate::Plan {
                let ($($t,)+) = &self.0;
                crate::Plan::of_objects(name, vec![$(crate::core::Leaf::own_id($t)),+])
            }
        }
    )*};
}
tuple_outputs!(
    1(A),
    2(A, B),
    3(A, B, C),
    4(A, B, C, D),
    5(A, B, C, D, E),
    6(A, B, C, D, E, F)
);

/// A single object: every "element" is the object itself. (A tuple binding of a step returning one object
/// is reported once, by [`Tuple`]; its names still get a type, so their uses add no errors.)
impl<T: Object, const I: usize> Element<I> for T {
    type T = T;
}

macro_rules! elements {
    ($all:tt $($i:literal => $t:ident),*) => {$( elements!(@one $all $i $t); )*};
    (@one [$($all:ident),*] $i:literal $t:ident) => {
        impl<$($all),*> Element<$i> for ($($all,)*) {
            type T = $t;
        }
    };
}
// Names past the end of a tuple (reported once, by `Tuple`) get its last element's type.
elements!([A] 0 => A, 1 => A, 2 => A, 3 => A, 4 => A, 5 => A);
elements!([A, B] 0 => A, 1 => B, 2 => B, 3 => B, 4 => B, 5 => B);
elements!([A, B, C] 0 => A, 1 => B, 2 => C, 3 => C, 4 => C, 5 => C);
elements!([A, B, C, D] 0 => A, 1 => B, 2 => C, 3 => D, 4 => D, 5 => D);
elements!([A, B, C, D, E] 0 => A, 1 => B, 2 => C, 3 => D, 4 => E, 5 => E);
elements!([A, B, C, D, E, F] 0 => A, 1 => B, 2 => C, 3 => D, 4 => E, 5 => F);

/// Values that can be passed where a step expects a `T`.
#[diagnostic::on_unimplemented(
    message = "this argument is `{Self}`, but the step's parameter is `{T}`",
    label = "expected `{T}` here",
    note = "pass a value of the parameter's type: a binding made by a step returning `{T}`, an input of that type, \
            or a literal"
)]
pub trait IntoStepArg<T> {
    /// Converts the argument.
    fn into_step_arg(self) -> T;
}

/// A value of the parameter's own type.
impl<T: Clone> IntoStepArg<T> for T {
    fn into_step_arg(self) -> T {
        self
    }
}

/// A reference to one (`&tc`, `&settings`): cloned.
impl<T: Clone> IntoStepArg<T> for &T {
    fn into_step_arg(self) -> T {
        self.clone()
    }
}

impl IntoStepArg<String> for &str {
    fn into_step_arg(self) -> String {
        self.to_owned()
    }
}

impl IntoStepArg<Platform> for &str {
    fn into_step_arg(self) -> Platform {
        Platform(self.to_owned())
    }
}

impl IntoStepArg<Vec<String>> for Vec<&str> {
    fn into_step_arg(self) -> Vec<String> {
        self.into_iter().map(str::to_owned).collect()
    }
}

impl<const N: usize> IntoStepArg<Vec<String>> for [&str; N] {
    fn into_step_arg(self) -> Vec<String> {
        self.into_iter().map(str::to_owned).collect()
    }
}

/// The key of the outputs of `for key in collection { … }`: the element itself.
pub type KeyOf<C> = <C as IntoIterator>::Item;

/// The key of the outputs of `for (key, value) in collection { … }`.
pub type PairKeyOf<C> = <<C as IntoIterator>::Item as Pair>::Key;

/// An element of a collection iterated as `(key, value)`.
#[diagnostic::on_unimplemented(
    message = "`for (key, value) in …` needs a collection of pairs, such as `BTreeMap<K, V>` or `Vec<(K, V)>`; \
               its elements are `{Self}`",
    label = "not a pair"
)]
pub trait Pair {
    /// The first half: the key of the loop's outputs.
    type Key;
    /// The second half.
    type Value;
}

impl<K, V> Pair for (K, V) {
    type Key = K;
    type Value = V;
}

/// The input of an `if` block.
#[diagnostic::on_unimplemented(
    message = "`if` needs a `bool` input, not `{Self}`",
    label = "not a `bool`",
    note = "a condition is one of the pipeline's `bool` inputs: `if publish {{ … }}` or `if !draft {{ … }}`"
)]
pub trait Condition {
    /// The value tested.
    fn holds(self) -> bool;
}

impl Condition for bool {
    fn holds(self) -> bool {
        self
    }
}

/// Tests an `if` block's input (a readable error when it is not a `bool`).
pub fn condition<C: Condition>(c: C) -> bool {
    c.holds()
}

/// Collects a loop's collection into its elements, sorted and without duplicates: the loop's outputs are
/// maps keyed by element, so equal elements would be one entry anyway.
pub fn each_key<C: IntoIterator>(collection: C) -> std::collections::BTreeSet<C::Item>
where
    C::Item: Ord,
{
    collection.into_iter().collect()
}

/// Collects a loop's collection of `(key, value)` pairs into a map (the last value of a key wins).
pub fn each_pair<C: IntoIterator<Item = (K, V)>, K: Ord, V>(collection: C) -> BTreeMap<K, V> {
    collection.into_iter().collect()
}

/// The type of parameter `N` of a step's input tuple.
#[diagnostic::on_unimplemented(
    message = "too many arguments for this step: its parameters are `{Self}`",
    label = "one argument too many",
    note = "pass exactly the step's parameters, in order, without the leading `&Query`"
)]
pub trait Nth<const N: usize> {
    /// The parameter's type.
    type T;
}

macro_rules! nth {
    ($all:tt $($n:literal => $t:ident),*) => {$( nth!(@one $all $n $t); )*};
    (@one [$($all:ident),*] $n:literal $t:ident) => {
        impl<$($all),*> Nth<$n> for ($($all,)*) {
            type T = $t;
        }
    };
}
nth!([A] 0 => A);
nth!([A, B] 0 => A, 1 => B);
nth!([A, B, C] 0 => A, 1 => B, 2 => C);
nth!([A, B, C, D] 0 => A, 1 => B, 2 => C, 3 => D);
nth!([A, B, C, D, E] 0 => A, 1 => B, 2 => C, 3 => D, 4 => E);
nth!([A, B, C, D, E, F] 0 => A, 1 => B, 2 => C, 3 => D, 4 => E, 5 => F);
nth!([A, B, C, D, E, F, G] 0 => A, 1 => B, 2 => C, 3 => D, 4 => E, 5 => F, 6 => G);
nth!([A, B, C, D, E, F, G, H] 0 => A, 1 => B, 2 => C, 3 => D, 4 => E, 5 => F, 6 => G, 7 => H);
nth!([A, B, C, D, E, F, G, H, I] 0 => A, 1 => B, 2 => C, 3 => D, 4 => E, 5 => F, 6 => G, 7 => H, 8 => I);
nth!([A, B, C, D, E, F, G, H, I, J] 0 => A, 1 => B, 2 => C, 3 => D, 4 => E, 5 => F, 6 => G, 7 => H, 8 => I, 9 => J);
nth!([A, B, C, D, E, F, G, H, I, J, K] 0 => A, 1 => B, 2 => C, 3 => D, 4 => E, 5 => F, 6 => G, 7 => H, 8 => I, 9 => J, 10 => K);
nth!([A, B, C, D, E, F, G, H, I, J, K, L] 0 => A, 1 => B, 2 => C, 3 => D, 4 => E, 5 => F, 6 => G, 7 => H, 8 => I, 9 => J, 10 => K, 11 => L);

/// The converted arguments of a step call, which must be exactly the step's input tuple.
#[diagnostic::on_unimplemented(
    message = "wrong number of arguments for this step: it takes `{T}`, the pipeline passes `{Self}`",
    label = "pass exactly the step's parameters, without the leading `&Query`"
)]
pub trait ExactInputs<T> {
    /// The input tuple.
    fn into_inputs(self) -> T;
}

impl<T> ExactInputs<T> for T {
    fn into_inputs(self) -> T {
        self
    }
}

/// Converts a pipeline argument to the step's parameter type (the target type is inferred from the step).
pub fn step_arg<T, A: IntoStepArg<T>>(arg: A) -> T {
    arg.into_step_arg()
}

/// Fails to compile, with a readable message, when `T` cannot be a step parameter.
pub fn assert_step_param<T: StepParam>() {}

/// Fails to compile, with a readable message, when `T` cannot be a step's output.
pub fn assert_step_output<T: StepOutput>() {}

/// The value a step's `plan()` plans; `(&&PlanOf(v)).plan_of(name)` picks [`PlanObject`] when `v` is a Dagger
/// object, and the empty fallback otherwise (a step returning something else already fails to compile with
/// its own message, which this keeps from being repeated).
pub struct PlanOf<T>(pub T);

/// Plans the ID of a step's object (the usual case).
pub trait PlanObject {
    /// The requests that asking for the object's ID sends.
    fn plan_of(&self, name: &'static str) -> crate::Plan;
}

impl<T: Object> PlanObject for &PlanOf<T> {
    fn plan_of(&self, name: &'static str) -> crate::Plan {
        crate::Plan::of_object(name, &self.0)
    }
}

/// The fallback for a step whose output is not an object (a compile error is reported elsewhere).
pub trait PlanOther {
    /// An empty plan.
    fn plan_of(&self, name: &'static str) -> crate::Plan;
}

impl<T> PlanOther for PlanOf<T> {
    fn plan_of(&self, name: &'static str) -> crate::Plan {
        crate::Plan {
            pipeline: name,
            documents: Vec::new(),
        }
    }
}

/// The GraphQL type name of a pipeline value when it is a Dagger object: `(&&TypeOf(&x)).type_name()` picks
/// [`ObjectTypeName`] for an object and the `None` fallback otherwise (a leaf on something else already
/// fails to compile with its own message).
pub struct TypeOf<'a, T>(pub &'a T);

/// The type name of an object (the usual case).
pub trait ObjectTypeName {
    /// `Some("Container")` for a `Container`.
    fn type_name(&self) -> Option<&'static str>;
}

impl<T: Object> ObjectTypeName for &TypeOf<'_, T> {
    fn type_name(&self) -> Option<&'static str> {
        Some(T::TYPE_NAME)
    }
}

/// The fallback for values that are not objects.
pub trait OtherTypeName {
    /// `None`.
    fn type_name(&self) -> Option<&'static str>;
}

impl<T> OtherTypeName for TypeOf<'_, T> {
    fn type_name(&self) -> Option<&'static str> {
        None
    }
}

/// What `checks.log` is, in the pipeline using `checks`, when `log` is not a `sync` output: its value is only
/// known once the run is over, in `Outputs::checks`, so it cannot be a step argument (yet).
#[derive(Clone, Copy, Debug)]
pub struct ValueOfAnOutputOfAUsedPipeline;

/// The step a pipeline names by one identifier, found without a "cannot find type" error (see the expansion's
/// `__Steps`): `T` is the `#[step]` struct, or a fallback that is not a [`Step`].
pub trait Pick<const K: usize> {
    /// The step (or its fallback).
    type T;
}

/// Implemented by every `#[step]` struct: what `pipeline!` checks a step name against, once per name.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `#[step]` function in scope here",
    label = "no `#[step]` function of this name",
    note = "add `#[step]` to the function, call a function that has it, or check the name: a step must be in scope \
            where the pipeline is (a pipeline is used as `name::run(…)`)"
)]
pub trait KnownStep {}

/// Fails to compile, with a readable message, when `T` is not a `#[step]` struct.
pub fn is_step<T: KnownStep>() {}

/// The parameter type of a step `pipeline!` could not find: any argument converts to it, so a misspelled step
/// name is reported once (by [`KnownStep`]), not once per argument.
pub struct UnknownArg;

impl<A> IntoStepArg<UnknownArg> for A {
    fn into_step_arg(self) -> UnknownArg {
        UnknownArg
    }
}

/// The leaves of the stand-in for a step `pipeline!` could not find (see [`KnownStep`]): a leaf that is never
/// run, as the build fails.
pub fn unknown_leaf() -> crate::Leaf<String> {
    Query::detached().version()
}

/// A pipeline, as a pipeline using it (`let checks = lint::run(…);`) sees it: `pipeline!` implements it for
/// the hidden `__Pipeline` type of every pipeline module, and the using pipeline reaches it by type, so a
/// module name that is not a pipeline gets one readable error (see [`KnownPipeline`]).
pub trait Composable {
    /// The inputs, as a tuple in declaration order.
    type Inputs;
    /// The pipeline's `Outputs` struct.
    type Outputs: std::fmt::Debug;
    /// The pipeline's `Partial` struct.
    type Partial: std::fmt::Debug + Default;
    /// The handles of its outputs in a run.
    type Handles;
    /// The objects of its `sync` outputs (`checks.ready`).
    type Objects;
    /// How many outputs it adds to a run (its own and those of the pipelines it uses).
    const OUTPUTS: usize;
    /// Its graph (the module's `GRAPH`).
    const GRAPH: &'static crate::Graph;
    /// What `pipeline!` recorded about it.
    fn meta() -> &'static crate::pipeline::PipelineMeta;
    /// Adds its outputs to `run`, in segment `scope`.
    fn compose(
        run: &mut crate::pipeline::Run,
        scope: usize,
        dag: &Query,
        inputs: Self::Inputs,
    ) -> (Self::Handles, Self::Objects);
    /// The values of its outputs behind `handles`, as far as they finished.
    fn take(handles: Self::Handles, results: &mut crate::pipeline::Results) -> Self::Partial;
    /// `Outputs` when every output finished, else the `Partial` back.
    fn complete(partial: Self::Partial) -> Result<Self::Outputs, Self::Partial>;
    /// `Outputs` as a `Partial`, or the `Partial` itself.
    fn partial(outputs: Result<Self::Outputs, Self::Partial>) -> Self::Partial;
}

/// Implemented by the `__Pipeline` type of every `pipeline!`: what a pipeline using another checks its
/// name against (with a message of its own, naming the module it looked for).
pub trait KnownPipeline {}

/// Output number `INDEX` of a pipeline is named by the hash `H` of its name (see `pipeline!`'s expansion):
/// how `after checks.log` finds `log` among the outputs of the pipeline used as `checks`, with a readable
/// error when there is no such output.
pub trait OutputNamed<const H: u64> {
    /// The output's index among the pipeline's own.
    const INDEX: usize;
}

/// What an object of a pipeline `pipeline!` could not find is (`checks.ready`): it converts to any step
/// parameter, so the only error is the one naming the pipeline. It has no values: code holding one is never
/// built, as the pipeline naming it does not compile.
#[derive(Debug)]
pub enum UnknownObject {}

impl<T: Clone> IntoStepArg<T> for UnknownObject {
    fn into_step_arg(self) -> T {
        match self {}
    }
}

/// The `Outputs` and `Partial` of a pipeline `pipeline!` could not find.
#[derive(Debug, Default)]
pub struct UnknownPipeline;

/// The description of a pipeline `pipeline!` could not find.
pub static UNKNOWN_PIPELINE: crate::pipeline::PipelineMeta = crate::pipeline::PipelineMeta {
    name: "unknown",
    outputs: &[],
    fail_fast: false,
    graph: None,
};

/// What the stand-in for a pipeline `pipeline!` could not find returns from `compose`: never called, as a
/// pipeline naming it does not compile (its one error says the name is not a pipeline in scope).
pub fn unknown_pipeline<T>() -> T {
    unreachable!("a pipeline using an unknown pipeline does not compile")
}
