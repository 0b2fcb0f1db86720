//! The quickstart examples end to end on the embedded engine: `rust:1-slim` and `debian:bookworm-slim` come
//! from the offline registry on `127.0.0.1:5000` (built on first use by `testkit::images::ensure`, which
//! `cargo run -p xtask -- images` runs too), through the same `docker.io` mirror setting users set; the app
//! image is published to a registry of the test's own, pulled back, and run.

use dagger::prelude::*;
use dagger_engine::oci::RegistryConfig;
use dagger_engine::{Config, Session};
use examples::quickstart::{self, BINARY, CHECK_PASSED, Report, Settings};
use examples::quickstart_dsl;
use testkit::registry::LocalRegistry;

// Blocking, and before any runtime exists: `ensure` runs its own.
fn offline_images() {
    if let Err(e) = testkit::images::ensure() {
        panic!("offline images: {e}");
    }
}

async fn engine(cache: &tempfile::TempDir) -> (Session, Query) {
    let registries = RegistryConfig::parse(testkit::images::MIRRORS, "").expect("mirror setting");
    testkit::start_engine(Config {
        registries: Some(registries),
        ..Config::for_dir(cache.path())
    })
    .await
}

fn settings(registry: &LocalRegistry, tag: &str) -> Settings {
    Settings {
        address: format!("{}/quickstart-app:{tag}", registry.host()),
        ..Settings::default()
    }
}

// What both forms must have produced: passing tests, an image in the test's registry, and its self-test.
async fn check_report(dag: &Query, registry: &LocalRegistry, report: &Report) {
    assert_eq!(
        quickstart::test_summary(&report.test_log)
            .first()
            .map(|l| l.split(';').next()),
        Some(Some("test result: ok. 4 passed")),
        "{}",
        report.test_log
    );
    assert!(
        report
            .published
            .starts_with(&format!("{}/quickstart-app:", registry.host()))
            && report.published.contains("@sha256:"),
        "{}",
        report.published
    );
    report.check().unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = report.output.lines().collect();
    assert_eq!(
        lines,
        [
            "GET /health -> 200 ok",
            "GET / -> 200 Hello, world!",
            "GET /greet/quickstart -> 200 Hello, quickstart!",
            "GET /version -> 200 0.1.0",
            "GET /nope -> 404 no route for /nope",
            CHECK_PASSED,
        ]
    );
    let image = dag.container().from(report.published.as_str());
    assert_eq!(image.entrypoint().await.expect("entrypoint"), [BINARY]);
    assert_eq!(image.default_args().await.expect("default args"), ["serve"]);
    let version = image
        .with_exec(["app", "--version"])
        .stdout()
        .await
        .expect("app --version");
    assert_eq!(version, "app 0.1.0\n");
    // The runtime image is Debian's, not the toolchain's: no compiler in it.
    let cargo = image
        .with_exec(["sh", "-c", "command -v cargo || echo none"])
        .stdout()
        .await
        .expect("sh");
    assert_eq!(cargo, "none\n");
}

#[test]
fn quickstart_publishes_an_image_that_runs() {
    offline_images();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let registry = LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
        let cache = tempfile::tempdir().expect("cache dir");
        let (_session, dag) = engine(&cache).await;
        let report = quickstart::run(&dag, &settings(&registry, "plain"))
            .await
            .unwrap_or_else(|e| panic!("quickstart failed: {e}"));
        check_report(&dag, &registry, &report).await;
    });
}

#[test]
fn quickstart_dsl_publishes_an_image_that_runs() {
    offline_images();
    // Tests and build, then the publish, then the published image's self-test (fed by its reference).
    assert_eq!(quickstart_dsl::quickstart::LEVELS.len(), 3);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let registry = LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
        let cache = tempfile::tempdir().expect("cache dir");
        let (_session, dag) = engine(&cache).await;
        let report = quickstart_dsl::run(&dag, &settings(&registry, "dsl"))
            .await
            .unwrap_or_else(|e| panic!("quickstart_dsl failed: {e}"));
        check_report(&dag, &registry, &report).await;
    });
}

#[test]
fn quickstart_dsl_plan_tests_and_builds_before_publishing() {
    let plan = quickstart_dsl::plan(&Settings::default());
    // One ID round, the tests with the build, the publish, then the published image run by its reference.
    assert_eq!(plan.documents.len(), 4, "{plan}");
    let last = &plan.documents[3];
    assert_eq!(last.title, "output (with the value of `published`)", "{plan}");
    assert!(last.query.contains(r#"from(address:"<value:published>")"#), "{plan}");
    let text = plan.to_string();
    let publish = text.find("publish(address: \"127.0.0.1:5000/quickstart-app:latest\")");
    let test = text.find("withExec(args: [\"cargo\", \"test\", \"--locked\"])");
    assert!(test.is_some() && publish.is_some() && test < publish, "{text}");
}
