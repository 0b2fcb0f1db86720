//! Composition: pipelines used inside other pipelines (`let checks = lint::run(…);`), across crates — the
//! `lint` pipeline and its steps come from the `examples` crate's step library. Plans (snapshots), runs
//! against a fake engine (the documents are the plan's; a failure inside a used pipeline is named through
//! it), and runs on the embedded engine.

use dagger::prelude::*;
use dagger_engine::Config;
use examples::composed;
use examples::lint::lint;
use serde_json::{Value, json};
use testkit::registry::{LocalRegistry, push_busybox};
use testkit::{FakeEngine, auto_reply};

/// The files of a toolchain: a step of this crate on an object of the used pipeline.
#[step]
fn listing(toolchain: Container) -> File {
    toolchain.with_exec(["sh", "-c", "ls > /listing"]).file("/listing")
}

pipeline! {
    /// The lint of the step library twice (on two images), and a step of this crate on the first one's
    /// toolchain once both passed their syntax check.
    pub checked(image: String, other: String, src: Directory) {
        let checks = lint::run(image, src);
        let strict = lint::run(other, src);
        let files = listing(checks.ready);
        /// The files the linted toolchain holds.
        out names = files.contents() after checks, strict.syntax_log;
    }
}

pipeline! {
    /// Pipelines that use pipelines: `ci` (which uses `lint`) and `nightly`, in one graph.
    pub everything(image: String, src: Directory, images: Vec<String>) {
        let main = composed::ci::run(image, src);
        let soak = composed::nightly::run(image, src, images);
    }
}

fn src() -> Directory {
    composed::sources(&Query::detached(), false)
}

#[test]
fn a_used_pipeline_is_a_subgraph_of_the_graph() {
    // `lint` twice, its inputs fed by this pipeline's, its `ready` feeding a step of this one, `after` a whole
    // used pipeline and one of its outputs.
    let mermaid = checked::GRAPH.mermaid();
    assert!(
        mermaid.contains(r#"subgraph checks__["checks = lint::run(…)"]"#),
        "{mermaid}"
    );
    assert!(mermaid.contains("in_other --> strict__in_image"), "{mermaid}");
    assert!(mermaid.contains("checks__o_ready --> b2"), "{mermaid}");
    assert!(
        mermaid.contains("strict__o_syntax_log -.->|after| o_names"),
        "{mermaid}"
    );
    insta::assert_snapshot!("graph_checked_mermaid", mermaid);
    insta::assert_snapshot!("graph_checked_dot", checked::GRAPH.dot());
    // Nested: `ci` uses `lint`, and `everything` uses `ci`.
    let nested = everything::GRAPH.mermaid();
    assert!(
        nested.contains(r#"subgraph main__checks__["checks = lint::run(…)"]"#),
        "{nested}"
    );
}

#[test]
fn a_used_pipeline_is_batched_with_the_one_using_it() {
    let plan = checked::plan("busybox".into(), "alpine".into(), src());
    let titles: Vec<(&str, &[usize])> = plan
        .documents
        .iter()
        .map(|d| (d.title.as_str(), &d.after[..]))
        .collect();
    assert_eq!(
        titles,
        [
            // The sources' ID, shared by both lints.
            ("resolve object IDs (round 1)", &[][..]),
            ("checks.ready", &[1]),
            ("strict.ready", &[1]),
            ("checks.syntax_log, checks.whitespace_log", &[2]),
            // `names` waits for `strict.syntax_log` only, so it is a request of its own.
            ("strict.syntax_log", &[3]),
            ("strict.whitespace_log", &[3]),
            ("names", &[2, 4, 5]),
        ],
        "{plan}"
    );
    // `checks.ready` is the lint's synced toolchain: `listing` builds on it by its ID.
    assert!(
        plan.documents[6]
            .query
            .contains(r#"o0:node(id:"<id:o1>"){... on Container{withExec(args:["sh","-c","ls > /listing"])"#),
        "{plan}"
    );
    assert_eq!(checked::STEPS[0], ("checks", "lint::run"));
    assert!(checked::EDGES.contains(&("checks", "names")));
    assert!(checked::EDGES.contains(&("strict.syntax_log", "names")));
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn pipelines_that_use_pipelines_nest() {
    let plan = everything::plan("busybox".into(), src(), vec!["a".into(), "b".into()]);
    let titles: Vec<&str> = plan.documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "resolve object IDs (round 1)",
            "main.checks.ready",
            "soak.soak_logs × 2",
            "soak.checks.ready",
            "main.checks.syntax_log, main.checks.whitespace_log",
            "soak.checks.syntax_log, soak.checks.whitespace_log",
            "main.test_log, main.package_size",
        ],
        "{plan}"
    );
    // One ID round for the sources every part shares.
    assert_eq!(plan.documents[0].query.matches("id}").count(), 1, "{plan}");
}

/// Answers like the engine would, with the plan's placeholders as IDs; fails the field `fail_on`.
fn engine(fail_on: Option<&'static str>) -> impl Fn(&testkit::Recorded) -> testkit::Reply + Send + Sync {
    move |req| {
        let doc = req.document();
        let mut data = auto_reply(&doc, &|path: &[String]| match path.last().map(String::as_str) {
            Some("id" | "sync") => json!(format!("<id:{}>", path[0])),
            Some("size") => json!(10),
            _ => json!(format!("value of {}", path[0])),
        });
        let mut body = json!({});
        if let Some(bad) = fail_on.filter(|bad| doc.contains(&format!("{bad}:"))) {
            if let Some(d) = data.as_object_mut() {
                d.insert(bad.to_owned(), Value::Null);
            }
            body["errors"] = json!([{
                "message": "process \"sh -c …\" did not complete successfully: exit code: 1",
                "path": [bad],
                "extensions": {"_type": "EXEC_ERROR", "cmd": ["sh", "-c", "…"], "exitCode": 1,
                               "stdout": "app.sh:1:echo hello ", "stderr": "trailing whitespace"}
            }]);
        }
        body["data"] = data;
        (200, "application/json", body.to_string())
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
async fn a_run_sends_the_combined_plan_and_returns_the_used_pipelines_outputs() {
    let fake = FakeEngine::start(engine(None)).await;
    let dag = connect(&fake).await;
    let plan = checked::plan("busybox".into(), "alpine".into(), src());
    let out = checked::run(&dag, "busybox".into(), "alpine".into(), composed::sources(&dag, false))
        .await
        .unwrap_or_else(|e| panic!("runs: {e}"));
    assert_eq!(out.names, "value of o0");
    assert_eq!(out.checks.syntax_log, "value of o2");
    assert_eq!(out.strict.whitespace_log, "value of o6");
    let mut sent = fake.documents();
    let mut planned: Vec<String> = plan.documents.iter().map(|d| d.query.clone()).collect();
    sent.sort();
    planned.sort();
    assert_eq!(sent, planned, "the run sends exactly the planned documents");

    // One flat graph rides with the first request: the used pipelines drawn inline, their outputs named as
    // their fields are (`checks.syntax_log`), and `after checks` starting at each of checks' outputs.
    let first: serde_json::Value = serde_json::from_str(&fake.requests()[0].body).expect("JSON");
    let graph = dagger_engine::PipelineGraph::from_extension(&first["extensions"]["pipeline"]).expect("a graph");
    assert_eq!(graph.name, "checked");
    let served: Vec<&str> = graph.nodes.iter().filter_map(|n| n.serves.as_deref()).collect();
    for name in ["names", "checks.syntax_log", "strict.whitespace_log"] {
        assert!(served.contains(&name), "{name} in {served:?}");
    }
    let mut named: Vec<String> = Vec::new();
    for r in fake.requests() {
        let body: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
        if let Some(m) = body["extensions"]["serves"].as_object() {
            named.extend(m.values().filter_map(|v| v.as_str().map(str::to_owned)));
        }
    }
    named.sort();
    let mut outputs: Vec<String> = served.iter().map(|s| s.to_string()).collect();
    outputs.sort();
    assert_eq!(named, outputs, "every output is sent under the name its node has");
    let afters: Vec<&str> = graph
        .edges
        .iter()
        .filter(|e| e.kind == dagger_engine::EdgeKind::After && e.to == "o_names")
        .map(|e| e.from.as_str())
        .collect();
    let checks_outputs = graph.nodes.iter().filter(|n| n.id.starts_with("checks__o_")).count();
    assert!(checks_outputs > 1);
    assert!(
        afters.iter().filter(|f| f.starts_with("checks__o_")).count() == checks_outputs,
        "{afters:?}"
    );
}

#[tokio::test]
async fn a_failure_inside_a_used_pipeline_is_named_through_it() {
    // o3 is `checks.whitespace_log`: `names` waits for every output of `checks`.
    let fake = FakeEngine::start(engine(Some("o3"))).await;
    let dag = connect(&fake).await;
    let err = checked::run(&dag, "busybox".into(), "alpine".into(), composed::sources(&dag, true))
        .await
        .expect_err("the whitespace check fails");
    assert_eq!(err.failures.len(), 1, "{err}");
    let f = &err.failures[0];
    assert_eq!(
        (f.output, &f.within[..], f.step),
        ("whitespace_log", &["checks"][..], "whitespace")
    );
    assert_eq!(err.skipped, ["names"]);
    assert!(
        err.to_string().starts_with(
            "pipeline `checked` failed\n- output `checks.whitespace_log` (binding `spaces`, step `whitespace`)"
        ),
        "{err}"
    );
    // What finished is in the partial outputs, the used pipelines' included.
    assert_eq!(err.partial.checks.syntax_log.as_deref(), Some("value of o2"));
    assert!(err.partial.checks.whitespace_log.is_none());
    assert_eq!(err.partial.strict.whitespace_log.as_deref(), Some("value of o6"));
    assert!(err.partial.names.is_none());
}

#[tokio::test]
async fn nested_pipelines_return_nested_outputs() {
    let fake = FakeEngine::start(engine(None)).await;
    let dag = connect(&fake).await;
    let out = everything::run(&dag, "busybox".into(), composed::sources(&dag, false), vec!["a".into()])
        .await
        .unwrap_or_else(|e| panic!("runs: {e}"));
    assert_eq!(out.main.package_size, 10);
    assert!(out.main.checks.syntax_log.starts_with("value of o"), "{out:?}");
    assert_eq!(out.soak.soak_logs.len(), 1);
}

struct Env {
    _registry: LocalRegistry,
    image: String,
    _session: dagger_engine::Session,
    dag: Query,
    _cache: tempfile::TempDir,
}

async fn start() -> Env {
    let registry = LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
    push_busybox(&registry, "busybox:latest").await;
    let cache = tempfile::tempdir().expect("cache");
    let (session, dag) = testkit::start_engine(Config::for_dir(cache.path())).await;
    Env {
        image: format!("{}/busybox:latest", registry.host()),
        _registry: registry,
        _session: session,
        dag,
        _cache: cache,
    }
}

#[tokio::test]
async fn the_shared_lint_runs_in_both_pipelines_on_the_embedded_engine() {
    use std::sync::atomic::Ordering;
    let env = start().await;
    let plan = composed::ci_plan(&env.image, false);
    let before = env._session.engine.requests.load(Ordering::Relaxed);
    let out = composed::run_ci(&env.dag, &env.image, false)
        .await
        .unwrap_or_else(|e| panic!("ci runs: {e}"));
    let sent = env._session.engine.requests.load(Ordering::Relaxed) - before;
    assert_eq!(sent, plan.documents.len(), "{plan}");
    assert_eq!(out.checks.syntax_log, "syntax ok\n");
    assert_eq!(out.checks.whitespace_log, "whitespace ok\n");
    assert_eq!(out.test_log, "tests ok\n");
    assert!(out.package_size > 0);

    let nightly = composed::run_nightly(&env.dag, &env.image, vec![env.image.clone()])
        .await
        .unwrap_or_else(|e| panic!("nightly runs: {e}"));
    assert_eq!(nightly.checks.syntax_log, "syntax ok\n");
    assert_eq!(
        nightly.soak_logs.get(&env.image).map(String::as_str),
        Some("tests ok\n")
    );

    // A trailing space: the lint fails inside `ci`, and only what waits for it is skipped.
    let err = composed::ci::run(&env.dag, env.image.clone(), composed::sources(&env.dag, true))
        .await
        .expect_err("the whitespace check fails");
    assert_eq!(err.failures.len(), 1, "{err}");
    assert_eq!(
        (err.failures[0].output, &err.failures[0].within[..]),
        ("whitespace_log", &["checks"][..])
    );
    let dagger::Error::Exec(exec) = &err.failures[0].error else {
        panic!("expected an exec error: {err}");
    };
    assert_eq!(exec.stderr, "trailing whitespace\n");
    let mut skipped = err.skipped.clone();
    skipped.sort();
    assert_eq!(skipped, ["package_size", "test_log"]);
    assert_eq!(err.partial.checks.syntax_log.as_deref(), Some("syntax ok\n"));
}
