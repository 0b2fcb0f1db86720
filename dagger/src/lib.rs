//! # dagger — CI/CD pipelines as typed, lazy Rust code
//!
//! This crate is an SDK for engines that speak the Dagger v0.21 protocol: build pipelines with a typed,
//! lazy API, and run them in containers with [`connect`].
//!
//! ```no_run
//! use dagger::prelude::*;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), dagger::Error> {
//!     dagger::connect(|dag| async move {
//!         let src = dag.host().directory(".");
//!         let tests = dag
//!             .container()
//!             .from("rust:1-slim")
//!             .with_directory("/src", src)
//!             .with_workdir("/src")
//!             .with_exec(["cargo", "test"]);
//!         println!("{}", tests.stdout().await?);
//!         Ok(())
//!     })
//!     .await
//! }
//! ```
//!
//! ## Concepts
//! - **Laziness.** Builder methods (`from`, `with_exec`, `with_directory`, …) only record calls; they are
//!   sync, cheap (one `Arc` per call) and never fail. Leaves (`stdout`, `sync`, `export`, `id`, …) are `async`
//!   and send one query that evaluates the whole chain.
//! - **Objects as arguments.** Passing a [`Directory`] to [`Container::with_directory`] passes its ID. The SDK
//!   asks for the IDs a leaf needs right before sending it, concurrently, and remembers them, so an object
//!   used by many leaves is resolved once.
//! - **Errors.** Every failure is an [`Error`]; a failed command is [`Error::Exec`] with its exit code,
//!   stdout and stderr.
//! - **Sessions.** [`connect`] and [`Connection::builder`] find an engine in this order: an explicit
//!   endpoint, `DAGGER_SESSION_PORT`/`DAGGER_SESSION_TOKEN`, an engine CLI started as `session`
//!   (`_EXPERIMENTAL_DAGGER_CLI_BIN` or `dagger` on `PATH`), and — with the `embedded` feature, on by
//!   default — the engine of this project started in-process, which runs containers with runc. Set
//!   `DAGGER_RS_EMBEDDED=0` (or build with `default-features = false`) to require an external engine.
//!
//! ## Pipelines checked at compile time
//! [`step`] marks a function as a pipeline step and [`pipeline!`] wires steps into a named pipeline whose
//! graph (unknown names, cycles, type mismatches between steps, leaves that do not exist) is checked by
//! the compiler. Outputs that become ready together are sent as one GraphQL document, each request as soon as
//! the ones it waits for are done, and `plan(..)` prints those documents with no engine, for snapshot tests.
//!
//! ```no_run
//! use dagger::prelude::*;
//!
//! #[step]
//! fn build(dag: &Query, src: Directory) -> Container {
//!     dag.container().from("rust:1-slim").with_directory("/src", src).with_workdir("/src")
//! }
//!
//! #[step]
//! fn unit_tests(build: Container) -> Container {
//!     build.with_exec(["cargo", "test"])
//! }
//!
//! pipeline! {
//!     /// Build, then test.
//!     pub ci(src: Directory) {
//!         let b = build(src);
//!         let t = unit_tests(b);
//!         out log = t.stdout();
//!     }
//! }
//!
//! async fn run(dag: Query) -> Result<(), Box<dyn std::error::Error>> {
//!     let out = ci::run(&dag, dag.host().directory(".")).await?;
//!     println!("{}", out.log);
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! The typed API is generated from the contract `schema/core.graphql` (`cargo run -p xtask -- codegen`);
//! the guide in the repository's `docs/` covers sessions, caching, the DSL's rules and the engine.

#[path = "gen.rs"]
mod api;
mod connection;
mod core;
mod dsl;
mod engineconn;
mod error;
pub mod graph;
mod logs;
mod pipeline;
pub mod querybuilder;
mod scalars;
mod transport;

pub use api::*;
pub use connection::{Connection, ConnectionBuilder, connect};
pub use core::{BoxFuture, FromResponse, Leaf, Object, ToValue};
pub use error::{Error, ExecError, SessionError};
pub use graph::Graph;
pub use logs::{LogSink, StderrLogs};
pub use pipeline::{AnyPartial, OutputFailure, PipelineError, Plan, PlanDocument};
pub use scalars::{Id, Json, Platform};
pub use transport::{GraphQlError, Response};

pub use dagger_macros::{pipeline, pipeline_fn, step};

/// What the macros' expansions use. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::api::{has, leaves};
    pub use crate::dsl::{
        Composable, Condition, Element, ExactInputs, IntoStepArg, KeyOf, KnownPipeline, KnownStep, Nth, ObjectTypeName,
        OtherTypeName, OutputNamed, Pair, PairKeyOf, Pick, PlanObject, PlanOf, PlanOther, Step, StepOutput, StepParam,
        Tuple, TypeOf, UNKNOWN_PIPELINE, UnknownArg, UnknownObject, UnknownPipeline, ValueOfAnOutputOfAUsedPipeline,
        assert_step_output, assert_step_param, condition, each_key, each_pair, is_step, step_arg, unknown_leaf,
        unknown_pipeline,
    };
    pub use crate::graph::{
        EdgeKind, GraphBinding, GraphBlock, GraphBlockKind, GraphEdge, GraphInput, GraphOutput, UNKNOWN_GRAPH,
    };
    pub use crate::pipeline::{
        Handle, Handles, OutputMeta, PipelineMeta, Results, Run, ValueArg, Values, handle_at, restore, slots_of,
        value_of, without_id_reuse,
    };
}

/// The names most pipelines need: `use dagger::prelude::*;`.
pub mod prelude {
    pub use crate::api::*;
    pub use crate::{
        Connection, Error, ExecError, Id, Object, PipelineError, Plan, Platform, connect, pipeline, pipeline_fn, step,
    };
}
