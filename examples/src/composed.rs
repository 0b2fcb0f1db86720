//! Two pipelines built on the shared [`crate::lint`] pipeline: `ci` tests and packages the project once the
//! lint passed; `nightly` runs the lint beside a longer test run on several images.
//!
//! `let checks = lint::run(image, src);` puts the lint's outputs into each pipeline's graph: the documents
//! batch them with the pipeline's own outputs (the plan shows `checks.syntax_log` beside the tests), `after
//! checks` waits for all of them, and `checks.ready` — the lint's synced toolchain — is an object the
//! pipeline's steps build on (loaded by its ID, not rebuilt). The results come back as `outputs.checks`.

use dagger::prelude::*;

use crate::BoxError;
use crate::lint::lint;

/// The project's tests: the program must greet.
pub const TEST_SH: &str = "set -eu\n[ \"$(sh app.sh)\" = \"hello\" ]\necho tests ok\n";

/// The sources: the program and its tests (`bad` puts a trailing space in the program, which the lint finds).
pub fn sources(dag: &Query, bad: bool) -> Directory {
    let app = if bad { "echo hello \n" } else { "echo hello\n" };
    dag.directory()
        .with_new_file("app.sh", app)
        .with_new_file("test.sh", TEST_SH)
}

/// The tests, in a toolchain.
#[step]
pub fn tests(toolchain: Container, rounds: i64) -> Container {
    toolchain.with_exec([
        "sh",
        "-c",
        &format!("for i in $(seq {rounds}); do sh test.sh >/dev/null || exit 1; done; sh test.sh"),
    ])
}

/// The package: the program in a tarball.
#[step]
pub fn package(toolchain: Container) -> File {
    toolchain
        .with_exec(["tar", "-cf", "/app.tar", "app.sh"])
        .file("/app.tar")
}

/// A toolchain of another image with the same sources.
#[step]
pub fn toolchain_on(dag: &Query, image: String, src: Directory) -> Container {
    crate::lint::toolchain(dag, image, src)
}

pipeline! {
    /// The lint, then the tests and the package on the lint's toolchain.
    pub ci(image: String, src: Directory) {
        let checks = lint::run(image, src);
        let tested = tests(checks.ready, 1);
        let tarball = package(checks.ready);
        /// What the tests printed.
        out test_log = tested.stdout() after checks;
        /// The package's size.
        out package_size = tarball.size() after checks;
    }

    /// The lint beside a longer test run on every image given; nothing waits for the lint.
    pub nightly(image: String, src: Directory, images: Vec<String>) {
        let checks = lint::run(image, src);
        for other in images {
            let tc = toolchain_on(other, src);
            let soaked = tests(tc, 20);
            /// The test log on each image.
            out soak_logs = soaked.stdout();
        }
    }
}

/// The requests [`ci`] sends, computed without an engine.
pub fn ci_plan(image: &str, bad: bool) -> Plan {
    ci::plan(image.to_owned(), sources(&Query::detached(), bad))
}

/// Runs [`ci`]; `?` turns a failed pipeline into a [`dagger::Error::Pipeline`].
pub async fn run_ci(dag: &Query, image: &str, bad: bool) -> Result<ci::Outputs, BoxError> {
    Ok(ci::run(dag, image.to_owned(), sources(dag, bad))
        .await
        .map_err(dagger::Error::from)?)
}

/// Runs [`nightly`].
pub async fn run_nightly(dag: &Query, image: &str, images: Vec<String>) -> Result<nightly::Outputs, BoxError> {
    Ok(nightly::run(dag, image.to_owned(), sources(dag, false), images)
        .await
        .map_err(dagger::Error::from)?)
}
