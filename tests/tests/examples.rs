//! The quickstart examples end to end on the embedded engine: `rust:1-slim` and `debian:bookworm-slim` come
//! from the offline registry on `127.0.0.1:5000` (built on first use by `testkit::images::ensure`, which
//! `cargo run -p xtask -- images` runs too), through the same `docker.io` mirror setting users set; the app
//! image is published to a registry of the test's own, pulled back, and run: its self-test, and as a service
//! that a busybox container requests by its alias.

use dagger::prelude::*;
use dagger_engine::oci::RegistryConfig;
use dagger_engine::{Config, Session};
use examples::quickstart::{self, ALIAS, BINARY, CHECK_PASSED, ROUTES, Report, Settings};
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

// What both forms must have produced: passing tests, an image in the test's registry, its self-test, and the
// answers of the image running as a service to a client container's requests.
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
    // The same answers over the network, from the image running as a server (`app serve`), to another
    // container that knows it as `app`: every route, the 404 with its body.
    let served = report.served.as_ref().expect("the image ran as a service");
    assert_eq!(
        served,
        &[
            "GET /health -> 200 ok",
            "GET / -> 200 Hello, world!",
            "GET /greet/quickstart -> 200 Hello, quickstart!",
            "GET /version -> 200 0.1.0",
            "GET /nope -> 404 no route for /nope",
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
    // One ID round, the tests with the build, the publish, an ID round for the service made of the published
    // image (a client binds it by ID), then the self-test and the client's requests together.
    assert_eq!(plan.documents.len(), 5, "{plan}");
    let ids = &plan.documents[3];
    assert!(ids.query.contains("asService"), "{plan}");
    let last = &plan.documents[4];
    assert_eq!(
        last.title, "responses, output (with the value of `published`)",
        "{plan}"
    );
    assert!(last.query.contains(r#"from(address:"<value:published>")"#), "{plan}");
    assert!(last.query.contains(r#"withServiceBinding(alias:"app""#), "{plan}");
    let text = plan.to_string();
    let publish = text.find("publish(address: \"127.0.0.1:5000/quickstart-app:latest\")");
    let test = text.find("withExec(args: [\"cargo\", \"test\", \"--locked\"])");
    assert!(test.is_some() && publish.is_some() && test < publish, "{text}");

    // Without the service step, nothing of it is sent: the self-test is the last request, as before.
    let plan = quickstart_dsl::plan(&Settings {
        serve: false,
        ..Settings::default()
    });
    assert_eq!(plan.documents.len(), 4, "{plan}");
    assert_eq!(
        plan.documents[3].title, "output (with the value of `published`)",
        "{plan}"
    );
    assert!(!plan.to_string().contains("asService"), "{plan}");
}

/// The check of a report compares what the server answered over the network with its self-test, route by
/// route; the raw responses of `nc` are read into the self-test's lines.
#[test]
fn the_report_check_needs_the_served_answers_to_be_the_self_tests() {
    let raw = "\
>>> GET /health
HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok

>>> GET /nope
HTTP/1.1 404 Not Found\r\ncontent-length: 18\r\n\r\nno route for /nope

>>> GET /broken
garbage
";
    assert_eq!(
        quickstart::served_lines(raw),
        [
            "GET /health -> 200 ok",
            "GET /nope -> 404 no route for /nope",
            "GET /broken -> not an HTTP response: \"garbage\"",
        ]
    );

    let self_test = [
        "GET /health -> 200 ok",
        "GET / -> 200 Hello, world!",
        "GET /greet/quickstart -> 200 Hello, quickstart!",
        "GET /version -> 200 0.1.0",
        "GET /nope -> 404 no route for /nope",
    ];
    assert_eq!(ROUTES.len(), self_test.len());
    let mut report = Report {
        test_log: String::new(),
        published: "127.0.0.1:5000/quickstart-app:latest@sha256:00".into(),
        output: format!("{}\n{CHECK_PASSED}\n", self_test.join("\n")),
        served: Some(self_test.iter().map(|l| l.to_string()).collect()),
    };
    report.check().unwrap_or_else(|e| panic!("{e}"));
    // Not asked to serve: the self-test alone decides.
    report.served = None;
    report.check().unwrap_or_else(|e| panic!("{e}"));
    // A route answered otherwise, a route missing: both fail, naming the alias and what the client got.
    let mut other: Vec<String> = self_test.iter().map(|l| l.to_string()).collect();
    other[4] = "GET /nope -> 200 oops".into();
    report.served = Some(other);
    let err = report.check().expect_err("a different answer");
    assert!(
        err.contains(&format!("`{ALIAS}`")) && err.contains("GET /nope -> 200 oops"),
        "{err}"
    );
    report.served = Some(self_test[..4].iter().map(|l| l.to_string()).collect());
    report.check().expect_err("a missing route");
    // A failed self-test fails whatever the server answered.
    report.output = "GET /health -> 500\n".into();
    report.check().expect_err("no self-test");
}

/// `--no-serve` and `QUICKSTART_SERVE=0` turn the service step off; `--client-image` names the client's image.
#[test]
fn the_settings_read_the_service_flags() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (s, rest) =
        Settings::from_args(args(&["--no-serve", "--client-image=busybox:1.36", "--plan"])).expect("parsed");
    assert!(!s.serve);
    assert_eq!(s.client_image, "busybox:1.36");
    assert_eq!(rest, ["--plan"]);
    let (s, _) = Settings::from_args(args(&[])).expect("parsed");
    assert!(s.serve, "on by default");
    assert_eq!(s.client_image, quickstart::CLIENT_IMAGE);
    assert!(Settings::from_args(args(&["--client-image"])).is_err());
}
