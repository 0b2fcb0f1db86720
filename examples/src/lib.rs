//! Sample pipelines built with the `dagger` crate; each binary in `src/bin/` is one runnable example.
//!
//! The longer examples keep their pipelines here, as plain async functions over a [`dagger::Query`], so the
//! binaries stay thin and the integration tests (`tests/tests/examples.rs`, `tests/tests/examples_more.rs`)
//! run the very same code against the embedded engine.
//!
//! | module | binary | what it shows |
//! |---|---|---|
//! | [`hello`] | `hello` | the smallest pipeline: one command in a container |
//! | [`quickstart`] | `quickstart` | test, build, package and publish the sample web app in `examples/app`, then run the published image: its self-test, and as a service a second container requests, with the plain API |
//! | [`quickstart_dsl`] | `quickstart_dsl` | the same pipeline with `#[step]` and `pipeline!` |
//! | [`integration`] | `integration` | a real database (Redis) as a service bound as `db`: a writer and a reader in other containers, a counter incremented by concurrent clients of the one instance |
//! | [`matrix`] | `matrix` | a `pipeline!` looping over variants given at run time, run concurrently, gathered into one exported directory |
//! | [`release`] | — | a `pipeline!` with a matrix of toolchain images, a version read from the sources feeding the image tag, and a publish only when asked |
//! | [`lint`] | — | a step library: steps and a small `lint` pipeline, exported for other pipelines (and crates) to use |
//! | [`composed`] | — | two pipelines built on the shared `lint` pipeline, its outputs batched with theirs |
//! | [`chaining`] | `chaining` | results of one pipeline (a string, a file, a directory ID) feeding the next |
//! | [`errors`] | `errors` | a failed command as `ExecError`, tolerated exit codes, and a failed `pipeline!` run |

pub mod chaining;
pub mod composed;
pub mod errors;
pub mod hello;
pub mod integration;
pub mod lint;
pub mod matrix;
pub mod quickstart;
pub mod quickstart_dsl;
pub mod release;

/// The error type of the examples' own functions: a [`dagger::Error`], or an answer the example did not
/// expect (a build that printed something else).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The `n`-th command-line argument (from 1), else the environment variable `var`, else `default`.
///
/// The examples take image references this way, so the same binary runs on a connected machine with the
/// public default, or against a local registry (`127.0.0.1:5000/busybox:latest`) without a rebuild.
pub fn arg_or_env(n: usize, var: &str, default: &str) -> String {
    std::env::args()
        .nth(n)
        .filter(|a| !a.is_empty())
        .or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| default.to_owned())
}

/// Prints `error` and the chain of its sources to standard error, one per line.
pub fn print_error(error: &(dyn std::error::Error + 'static)) {
    eprintln!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}
