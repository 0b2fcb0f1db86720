//! The quickstart pipeline with `#[step]` and `pipeline!`: the same work as [`crate::quickstart`], with the
//! graph checked at compile time and sent as one request per level.
//!
//! The test log and the release binary go first (together, in one request), then the publish, which waits
//! for the tests through `after`. Running the published image needs the reference the publish returned: the
//! `published` output's value is the argument of the `published_image` step, so the run builds that step once
//! the reference is known and sends its output in one more request (the plan shows `<value:published>`).

use dagger::prelude::*;

use crate::BoxError;
use crate::quickstart::{BINARY, CHECK, Report, Settings, TARGET_DIR, source};

/// A Rust toolchain with the app's sources and cargo's caches mounted.
#[step]
pub fn toolchain(dag: &Query, src: Directory, image: String) -> Container {
    dag.container()
        .from(image)
        .with_mounted_cache(
            "/usr/local/cargo/registry",
            dag.cache_volume("quickstart-cargo-registry"),
        )
        .with_mounted_cache(TARGET_DIR, dag.cache_volume("quickstart-cargo-target"))
        .with_env_variable("CARGO_TARGET_DIR", TARGET_DIR)
        .with_directory("/src", src)
        .with_workdir("/src")
}

/// The unit tests.
#[step]
pub fn unit_tests(toolchain: Container) -> Container {
    toolchain.with_exec(["cargo", "test", "--locked"])
}

/// The release binary, copied out of the target cache.
#[step]
pub fn binary(toolchain: Container) -> File {
    toolchain
        .with_exec([
            "sh",
            "-c",
            &format!("cargo build --release --locked && cp {TARGET_DIR}/release/app /app"),
        ])
        .file("/app")
}

/// The runtime image: the binary on a slim base, serving by default.
#[step]
pub fn image(dag: &Query, binary: File, base: String) -> Container {
    dag.container()
        .from(base)
        .with_file(BINARY, binary)
        .with_label("org.opencontainers.image.title", "quickstart-app")
        .with_exposed_port(8080)
        .with_entrypoint([BINARY])
        .with_default_args(["serve"])
}

/// The published image, pulled by the reference the publish returned, running its self-test.
#[step]
pub fn published_image(dag: &Query, reference: String) -> Container {
    dag.container().from(reference).with_exec(CHECK.to_vec())
}

pipeline! {
    /// Test and build the sample app, then publish its image once the tests passed.
    pub quickstart(src: Directory, rust_image: String, runtime_image: String, address: String) {
        let tc = toolchain(src, rust_image);
        let tests = unit_tests(tc);
        let bin = binary(tc);
        let img = image(bin, runtime_image);

        /// What `cargo test` printed.
        out test_log = tests.stdout();
        /// The release binary, built while the tests run.
        out built = bin.sync();
        /// The published image, pinned by digest.
        out published = img.publish(address) after test_log, built;
        let served = published_image(published);
        /// What the published image's self-test printed.
        out output = served.stdout();
    }
}

/// The pipeline's inputs from the settings.
fn inputs(dag: &Query, settings: &Settings) -> (Directory, String, String, String) {
    (
        source(dag, settings),
        settings.rust_image.clone(),
        settings.runtime_image.clone(),
        settings.address.clone(),
    )
}

/// Runs the pipeline (which runs the published image too); the same report as [`crate::quickstart::run`].
pub async fn run(dag: &Query, settings: &Settings) -> Result<Report, BoxError> {
    let (src, rust_image, runtime_image, address) = inputs(dag, settings);
    let outputs = quickstart::run(dag, src, rust_image, runtime_image, address)
        .await
        .map_err(dagger::Error::from)?;
    Ok(Report {
        test_log: outputs.test_log,
        published: outputs.published,
        output: outputs.output,
    })
}

/// The requests [`run`] sends for the pipeline, computed without an engine.
pub fn plan(settings: &Settings) -> Plan {
    let (src, rust_image, runtime_image, address) = inputs(&Query::detached(), settings);
    quickstart::plan(src, rust_image, runtime_image, address)
}
