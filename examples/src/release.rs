//! A release with `pipeline!`: tests on a matrix of toolchain images, the version read from the sources
//! feeding the image's tag and label, and a publish that happens only when an input says so.
//!
//! - `for image in toolchains { … }` runs the tests on every toolchain image given at run time; all of them
//!   go in one request, and `test_logs` is a map from image to log.
//! - `out version = vfile.contents();` reads `VERSION`; its value is an argument of the `image` step and of
//!   the publish address, so the run builds the image once the version is known, and the plan shows
//!   `<value:version>` where it goes.
//! - `if publish { … }` holds the image and the publish: when `publish` is false, neither is built nor sent,
//!   and `published` is `None`.
//!
//! [`plan`] prints the requests without an engine; [`run`] runs them.

use dagger::prelude::*;

use crate::BoxError;

/// The program the release ships: prints its version.
pub const APP_SH: &str = "echo \"app $VERSION\"\n";

/// The project's tests: the program must print its version.
pub const TEST_SH: &str =
    "set -eu\nout=$(VERSION=test sh app.sh)\n[ \"$out\" = \"app test\" ]\necho \"tests ok on $(uname -m)\"\n";

/// The sources, created in the engine with `version` in `VERSION` (a real project would use
/// `dag.host().directory(".")`).
pub fn sources(dag: &Query, version: &str) -> Directory {
    dag.directory()
        .with_new_file("VERSION", format!("{version}\n"))
        .with_new_file("app.sh", APP_SH)
        .with_new_file("test.sh", TEST_SH)
}

/// A toolchain image with the sources.
#[step]
pub fn toolchain(dag: &Query, image: String, src: Directory) -> Container {
    dag.container()
        .from(image)
        .with_directory("/src", src)
        .with_workdir("/src")
}

/// The tests, run in a toolchain.
#[step]
pub fn tests(toolchain: Container) -> Container {
    toolchain.with_exec(["sh", "test.sh"])
}

/// The file holding the version.
#[step]
pub fn version_file(src: Directory) -> File {
    src.file("VERSION")
}

/// The runtime image of `version`: the program on `base`, with the version in its environment and label.
#[step]
pub fn image(dag: &Query, base: String, src: Directory, version: String) -> Container {
    let version = version.trim().to_owned();
    dag.container()
        .from(base)
        .with_file("/usr/local/bin/app", src.file("app.sh"))
        .with_env_variable("VERSION", version.clone())
        .with_label("org.opencontainers.image.version", version)
        .with_entrypoint(["sh", "/usr/local/bin/app"])
}

pipeline! {
    /// Tests on every toolchain image, reads the version, and publishes the image tagged with it when asked.
    pub release(src: Directory, toolchains: Vec<String>, base: String, registry: String, publish: bool) {
        for toolchain_image in toolchains {
            let tc = toolchain(toolchain_image, src);
            let tested = tests(tc);
            /// What the tests printed, by toolchain image.
            out test_logs = tested.stdout();
        }
        let vfile = version_file(src);
        /// The version, as `VERSION` holds it.
        out version = vfile.contents();
        if publish {
            let img = image(base, src, version);
            /// The published image, pinned by digest (`None` when not asked to publish).
            out published = img.publish(format!("{}/app:{}", registry, version.trim())) after test_logs;
        }
    }
}

/// What to release, and where.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The version written into the sources' `VERSION`.
    pub version: String,
    /// The toolchain images the tests run on.
    pub toolchains: Vec<String>,
    /// The runtime image's base.
    pub base: String,
    /// The registry host the image is published to (`127.0.0.1:5000`).
    pub registry: String,
    /// Whether to publish.
    pub publish: bool,
}

/// The requests [`run`] sends, computed without an engine.
pub fn plan(s: &Settings) -> Plan {
    let dag = Query::detached();
    release::plan(
        sources(&dag, &s.version),
        s.toolchains.clone(),
        s.base.clone(),
        s.registry.clone(),
        s.publish,
    )
}

/// Runs the release; `?` turns a failed pipeline into a [`dagger::Error::Pipeline`].
pub async fn run(dag: &Query, s: &Settings) -> Result<release::Outputs, BoxError> {
    let out = release::run(
        dag,
        sources(dag, &s.version),
        s.toolchains.clone(),
        s.base.clone(),
        s.registry.clone(),
        s.publish,
    )
    .await
    .map_err(dagger::Error::from)?;
    Ok(out)
}
