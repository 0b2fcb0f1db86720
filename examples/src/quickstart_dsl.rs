//! The quickstart pipeline with `#[step]` and `pipeline!`: the same work as [`crate::quickstart`], with the
//! graph checked at compile time and sent as one request per level.
//!
//! The test log and the release binary go first (together, in one request), then the publish, which waits
//! for the tests through `after`. Running the published image needs the reference the publish returned: the
//! `published` output's value is the argument of the `published_image` and `app_client` steps, so the run
//! builds them once the reference is known and sends their outputs in one more request (the plan shows
//! `<value:published>`): the self-test, and (when `serve` is on) the requests a second container sends to the
//! image running as a service.

use dagger::prelude::*;

use crate::BoxError;
use crate::quickstart::{BINARY, CHECK, Report, Settings, TARGET_DIR, app_service, route_client, served_lines, source};

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

/// A client container requesting every route of the published image, which runs as a service it binds.
#[step]
pub fn app_client(dag: &Query, reference: String, client_image: String) -> Container {
    route_client(dag, app_service(dag, &reference), &client_image)
}

pipeline! {
    /// Test and build the sample app, publish its image once the tests passed, then run the published image:
    /// its self-test, and as a server that another container requests (when `serve` is on).
    pub quickstart(
        src: Directory,
        rust_image: String,
        runtime_image: String,
        address: String,
        client_image: String,
        serve: bool,
    ) {
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
        let checked = published_image(published);
        /// What the published image's self-test printed.
        out output = checked.stdout();
        if serve {
            let client = app_client(published, client_image);
            /// The raw responses of the published image, running as a service, to the client's requests.
            out responses = client.stdout();
        }
    }
}

/// Runs the pipeline (which runs the published image too); the same report as [`crate::quickstart::run`].
pub async fn run(dag: &Query, settings: &Settings) -> Result<Report, BoxError> {
    let outputs = quickstart::run(
        dag,
        source(dag, settings),
        settings.rust_image.clone(),
        settings.runtime_image.clone(),
        settings.address.clone(),
        settings.client_image.clone(),
        settings.serve,
    )
    .await
    .map_err(dagger::Error::from)?;
    Ok(Report {
        test_log: outputs.test_log,
        published: outputs.published,
        output: outputs.output,
        served: outputs.responses.as_deref().map(served_lines),
    })
}

/// The requests [`run`] sends for the pipeline, computed without an engine.
pub fn plan(settings: &Settings) -> Plan {
    quickstart::plan(
        source(&Query::detached(), settings),
        settings.rust_image.clone(),
        settings.runtime_image.clone(),
        settings.address.clone(),
        settings.client_image.clone(),
        settings.serve,
    )
}
