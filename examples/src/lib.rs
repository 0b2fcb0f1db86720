//! Sample pipelines built with the `dagger` crate. Each binary in `src/bin/` is one runnable example; the
//! larger ones keep their pipeline here so the integration tests run exactly what the binaries run.
//!
//! - [`quickstart`]: test, build, package and publish the sample web app in `examples/app`, then run the
//!   published image (`cargo run -p examples --bin quickstart`), with the plain API;
//! - [`quickstart_dsl`]: the same pipeline with `#[step]` and `pipeline!` (`--bin quickstart_dsl`).

pub mod quickstart;
pub mod quickstart_dsl;

/// Any error an example reports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Prints `error` and the chain of its sources to standard error, one per line.
pub fn print_error(error: &(dyn std::error::Error + 'static)) {
    eprintln!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}
