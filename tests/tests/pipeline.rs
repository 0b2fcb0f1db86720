//! `#[step]` and `pipeline!` end to end: offline plans (snapshots), and runs against a real HTTP server that
//! counts requests and checks that one level's outputs arrive in one document.

use dagger::prelude::*;
use dagger::{ContainerWithExecOpts, ReturnType};
use serde_json::{Value, json};
use tests::{FakeEngine, auto_reply};

/// A toolchain with the sources mounted and a registry cache.
#[step]
fn toolchain(dag: &Query, src: Directory) -> Container {
    dag.container()
        .from("rust:1-slim")
        .with_mounted_cache("/usr/local/cargo/registry", dag.cache_volume("cargo-registry"))
        .with_directory("/src", src)
        .with_workdir("/src")
}

#[step]
fn unit_tests(toolchain: Container, filter: &str) -> Container {
    toolchain.with_exec(["cargo", "test", filter])
}

#[step]
fn lint(toolchain: Container) -> Container {
    toolchain.with_exec(["cargo", "clippy", "--", "-D", "warnings"])
}

#[step]
fn binary(toolchain: Container) -> File {
    toolchain
        .with_exec(["cargo", "build", "--release"])
        .file("target/release/app")
}

#[step]
fn image(dag: &Query, binary: File, base: String) -> Container {
    dag.container().from(base).with_file("/usr/local/bin/app", binary)
}

#[step]
fn smoke(image: Container) -> Container {
    image.with_exec_opts(
        ["app", "--version"],
        ContainerWithExecOpts::default().expect(ReturnType::Any),
    )
}

mod steps {
    use dagger::prelude::*;

    /// A step in another module.
    #[step]
    pub(crate) fn report(dag: &Query, title: String, count: i64) -> File {
        dag.file("report.txt", format!("{title}: {count}"))
    }
}

pipeline! {
    /// Test, then build: a linear chain of levels.
    pub linear(src: Directory) {
        let tc = toolchain(src);
        let tests = unit_tests(tc, "--quiet");
        let bin = binary(tc);
        out tested = tests.sync();
        out size = bin.size() after tested;
        out digest = bin.digest() after size;
    }
}

pipeline! {
    /// Independent outputs of one toolchain: one level, one request.
    pub fan_out(src: Directory) {
        let tc = toolchain(src);
        let tests = unit_tests(tc, "");
        let clippy = lint(tc);
        let bin = binary(tc);
        let summary = steps::report("checks", 3);
        out test_log = tests.stdout();
        out lint_log = clippy.stderr();
        out bin_size = bin.size();
        out report = summary.contents();
    }
}

pipeline! {
    /// Build once, then test and lint side by side, then publish.
    pub diamond(src: Directory, base: String) {
        let tc = toolchain(src);
        let tests = unit_tests(tc, "");
        let clippy = lint(tc);
        let img = image(binary(tc), base);
        out built = tc.sync();
        out test_log = tests.stdout() after built;
        out lint_log = clippy.stdout() after built;
        out image_ref = img.publish("127.0.0.1:5000/app:latest") after test_log, lint_log;
    }
}

pipeline! {
    /// Publish only after the smoke test passed, although no data orders them.
    pub ordered(src: Directory, base: String) {
        let tc = toolchain(src);
        let bin = binary(tc);
        let img = image(bin, base);
        let check = smoke(img);
        out smoke_code = check.exit_code();
        out image_ref = img.publish("127.0.0.1:5000/app:v1") after check;
    }
}

fn src() -> Directory {
    Query::detached().host().directory(".")
}

#[test]
fn linear_plan() {
    insta::assert_snapshot!(linear::plan(src()).to_string());
}

#[test]
fn fan_out_plan() {
    insta::assert_snapshot!(fan_out::plan(src()).to_string());
}

#[test]
fn diamond_plan() {
    insta::assert_snapshot!(diamond::plan(src(), "debian:bookworm-slim".into()).to_string());
}

#[test]
fn ordered_plan() {
    insta::assert_snapshot!(ordered::plan(src(), "debian:bookworm-slim".into()).to_string());
}

#[test]
fn static_metadata() {
    assert_eq!(linear::NAME, "linear");
    assert_eq!(linear::DOC, "Test, then build: a linear chain of levels.");
    assert_eq!(linear::LEVELS, &[&["tested"][..], &["size"], &["digest"]]);
    assert_eq!(fan_out::LEVELS, &[&["test_log", "lint_log", "bin_size", "report"][..]]);
    assert_eq!(
        diamond::LEVELS,
        &[&["built"][..], &["test_log", "lint_log"], &["image_ref"]]
    );
    assert_eq!(ordered::LEVELS, &[&["smoke_code"][..], &["image_ref"]]);
    assert_eq!(fan_out::STEPS[4], ("summary", "steps::report"));
    assert!(diamond::EDGES.contains(&("test_log", "image_ref")));
    assert!(diamond::EDGES.contains(&("tc", "tests")));
}

#[test]
fn steps_stay_plain_functions() {
    let dag = Query::detached();
    let tc = toolchain(&dag, dag.directory());
    let printed = unit_tests(tc, "x")
        .selection()
        .select("stdout", vec![])
        .print(dagger::querybuilder::IdMode::Placeholder(&|o| o.type_name.to_owned()))
        .expect("prints");
    assert!(printed.contains(r#"withExec(args:["cargo","test","x"])"#), "{printed}");
}

/// Answers ID requests with the plan's placeholders, so documents of a run equal the plan's.
fn plan_like_engine(fail_on: Option<&'static str>) -> impl Fn(&tests::Recorded) -> tests::Reply + Send + Sync {
    move |req| {
        let doc = req.document();
        let data = auto_reply(&doc, &|path: &[String]| match path.last().map(String::as_str) {
            Some("id") => json!(format!("<id:{}>", path[0])),
            Some("size") => json!(1234),
            Some("exitCode") => json!(0),
            Some("sync") => json!(format!("synced-{}", path[0])),
            _ => json!(format!("value of {}", path[0])),
        });
        if let Some(bad) = fail_on.filter(|bad| doc.contains(&format!("{bad}:"))) {
            let body = json!({
                "data": data,
                "errors": [{
                    "message": "process \"cargo test\" did not complete successfully: exit code: 101",
                    "path": [bad],
                    "extensions": {"_type": "EXEC_ERROR", "cmd": ["cargo", "test"], "exitCode": 101,
                                   "stdout": "test result: FAILED", "stderr": "thread panicked"}
                }]
            });
            let mut body = body;
            if let Some(d) = body.get_mut("data").and_then(Value::as_object_mut) {
                d.insert(bad.to_owned(), Value::Null);
            }
            return (200, "application/json", body.to_string());
        }
        (200, "application/json", json!({ "data": data }).to_string())
    }
}

async fn connect(engine: &FakeEngine) -> Query {
    Connection::builder()
        .endpoint(engine.url(), "t")
        .quiet()
        .connect()
        .await
        .expect("connect")
        .query()
}

#[tokio::test]
async fn a_run_sends_exactly_the_plan_one_request_per_level() {
    let engine = FakeEngine::start(plan_like_engine(None)).await;
    let dag = connect(&engine).await;
    let plan = diamond::plan(src(), "debian:bookworm-slim".into());
    let out = diamond::run(&dag, dag.host().directory("."), "debian:bookworm-slim".into())
        .await
        .expect("runs");
    assert_eq!(out.test_log, "value of o1");
    assert_eq!(out.image_ref, "value of o3");
    assert!(
        out.built.selection().known_id().is_some(),
        "sync returns the loaded object"
    );

    let sent = engine.documents();
    let planned: Vec<String> = plan.documents.iter().map(|d| d.query.clone()).collect();
    assert_eq!(sent, planned, "the run sends exactly the planned documents");
    let id_rounds = plan.documents.iter().filter(|d| d.title.starts_with("resolve")).count();
    assert_eq!(sent.len(), diamond::LEVELS.len() + id_rounds);
    // One level's two outputs arrive in one document.
    assert!(sent.iter().any(|d| d.contains("o1:") && d.contains("o2:")), "{sent:#?}");
}

#[tokio::test]
async fn fan_out_costs_levels_plus_one_requests() {
    let engine = FakeEngine::start(plan_like_engine(None)).await;
    let dag = connect(&engine).await;
    let out = fan_out::run(&dag, dag.host().directory(".")).await.expect("runs");
    assert_eq!(out.bin_size, 1234);
    assert_eq!(out.report, "value of o3");
    // The host directory and the cache volume are resolved together; then the one level.
    assert_eq!(
        engine.requests().len(),
        fan_out::LEVELS.len() + 1,
        "{:#?}",
        engine.documents()
    );
}

#[tokio::test]
async fn a_failed_output_names_its_binding_and_step_and_keeps_partial_results() {
    let engine = FakeEngine::start(plan_like_engine(Some("o1"))).await;
    let dag = connect(&engine).await;
    let err = diamond::run(&dag, dag.host().directory("."), "debian:bookworm-slim".into())
        .await
        .expect_err("o1 fails");
    assert_eq!(err.failures.len(), 1);
    let failure = &err.failures[0];
    assert_eq!(
        (failure.output, failure.binding, failure.step),
        ("test_log", "tests", "unit_tests")
    );
    let Error::Exec(exec) = &failure.error else {
        panic!("expected an exec error, got {:?}", failure.error);
    };
    assert_eq!(exec.exit_code, 101);
    assert_eq!(exec.stderr, "thread panicked");
    // The sibling in the same level finished; the later level did not run.
    assert_eq!(err.partial.lint_log.as_deref(), Some("value of o2"));
    assert!(err.partial.built.is_some());
    assert!(err.partial.image_ref.is_none());
    assert_eq!(err.skipped, vec!["image_ref"]);
    assert!(
        !engine.documents().iter().any(|d| d.contains("o3:")),
        "the last level was not sent"
    );
    insta::assert_snapshot!("failed_output_display", err.to_string());
}
