//! The SDK against a real HTTP server on loopback: what it sends, and how it reads every kind of answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dagger::{Connection, ContainerWithExecOpts, Error, Query, ReturnType};
use serde_json::{Value, json};
use testkit::{FakeEngine, auto_reply, basic};

const TOKEN: &str = "s3cret-token";

async fn connect(engine: &FakeEngine) -> Query {
    Connection::builder()
        .endpoint(engine.url(), TOKEN)
        .quiet()
        .connect()
        .await
        .expect("connect")
        .query()
}

/// Answers `id` leaves with an ID derived from the path, anything else with a string.
fn ids_and_strings(path: &[String]) -> Value {
    match path.last().map(String::as_str) {
        Some("id" | "sync") => json!(format!("id-of-{}", path[..path.len() - 1].join("."))),
        Some(_) => json!("out"),
        None => Value::Null,
    }
}

#[tokio::test]
async fn sends_the_chain_with_basic_auth_and_decodes_the_leaf() {
    let engine = FakeEngine::graphql(TOKEN, |_| json!("hi\n")).await;
    let dag = connect(&engine).await;
    let out = dag
        .container()
        .from("alpine:3.20")
        .with_exec(["echo", "hi"])
        .stdout()
        .await
        .expect("stdout");
    assert_eq!(out, "hi\n");

    let reqs = engine.requests();
    assert_eq!(reqs.len(), 1, "one leaf, one request");
    let req = &reqs[0];
    assert_eq!(req.request_line, "POST /query HTTP/1.1");
    assert_eq!(req.headers.get("authorization"), Some(&basic(TOKEN)));
    assert_eq!(
        req.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert!(
        !req.headers.contains_key("traceparent"),
        "no TRACEPARENT in this process"
    );
    let body: Value = serde_json::from_str(&req.body).expect("JSON body");
    assert_eq!(
        body,
        json!({"query": r#"query{container{from(address:"alpine:3.20"){withExec(args:["echo","hi"]){stdout}}}}"#})
    );
}

#[tokio::test]
async fn builders_send_nothing_until_a_leaf_runs() {
    let engine = FakeEngine::graphql(TOKEN, ids_and_strings).await;
    let dag = connect(&engine).await;
    let src = dag.host().directory(".");
    let _ctr = dag.container().from("alpine").with_directory("/src", src);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(engine.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn object_arguments_resolve_concurrently_once_and_lazily() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let (cur, max) = (in_flight.clone(), max_in_flight.clone());
    let engine = FakeEngine::start(move |req| {
        let doc = req.document();
        if doc.ends_with("{id}}}") || doc.ends_with("{id}}}}") {
            let now = cur.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            // Hold the request open so that a concurrent sibling overlaps with it.
            std::thread::sleep(Duration::from_millis(300));
            cur.fetch_sub(1, Ordering::SeqCst);
        }
        (
            200,
            "application/json",
            json!({"data": auto_reply(&doc, &ids_and_strings)}).to_string(),
        )
    })
    .await;
    let dag = connect(&engine).await;

    let src = dag.host().directory("src");
    let cfg = dag.directory().with_new_file("app.toml", "x = 1").file("app.toml");
    let ctr = dag
        .container()
        .from("alpine")
        .with_directory("/src", src.clone())
        .with_file("/etc/app.toml", &cfg);
    ctr.stdout().await.expect("first leaf");
    ctr.stderr().await.expect("second leaf reuses the IDs");

    let docs = engine.documents();
    assert_eq!(docs.len(), 4, "two ID requests, then one request per leaf: {docs:#?}");
    let mut id_docs = docs[..2].to_vec();
    id_docs.sort();
    assert_eq!(
        id_docs,
        vec![
            r#"query{directory{withNewFile(path:"app.toml",contents:"x = 1"){file(path:"app.toml"){id}}}}"#,
            r#"query{host{directory(path:"src"){id}}}"#,
        ]
    );
    assert_eq!(
        docs[2],
        r#"query{container{from(address:"alpine"){withDirectory(path:"/src",source:"id-of-host.directory"){withFile(path:"/etc/app.toml",source:"id-of-directory.withNewFile.file"){stdout}}}}}"#
    );
    assert!(docs[3].ends_with("{stderr}}}}}"));
    assert_eq!(
        max_in_flight.load(Ordering::SeqCst),
        2,
        "the two IDs were asked concurrently"
    );
}

#[tokio::test]
async fn nested_object_arguments_resolve_depth_first() {
    let engine = FakeEngine::graphql(TOKEN, ids_and_strings).await;
    let dag = connect(&engine).await;
    let inner = dag.directory().with_new_file("a", "1");
    let outer = dag.directory().with_directory("sub", inner);
    dag.container()
        .with_directory("/x", outer)
        .stdout()
        .await
        .expect("stdout");
    let docs = engine.documents();
    assert_eq!(docs.len(), 3, "{docs:#?}");
    assert_eq!(docs[0], r#"query{directory{withNewFile(path:"a",contents:"1"){id}}}"#);
    assert_eq!(
        docs[1],
        r#"query{directory{withDirectory(path:"sub",source:"id-of-directory.withNewFile"){id}}}"#
    );
}

#[tokio::test]
async fn a_failure_while_resolving_an_argument_is_the_leafs_error() {
    let engine = FakeEngine::start(|req| {
        let doc = req.document();
        if doc.contains("{id}") {
            let body =
                json!({"data": null, "errors": [{"message": "no such path: nope", "path": ["host", "directory"]}]});
            (200, "application/json", body.to_string())
        } else {
            (
                200,
                "application/json",
                json!({"data": auto_reply(&doc, &ids_and_strings)}).to_string(),
            )
        }
    })
    .await;
    let dag = connect(&engine).await;
    let err = dag
        .container()
        .with_directory("/src", dag.host().directory("nope"))
        .stdout()
        .await
        .expect_err("resolution fails");
    match &err {
        Error::Query { message, path } => {
            assert_eq!(message, "no such path: nope");
            assert_eq!(path, &["host", "directory"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.to_string(), "no such path: nope (at `host.directory`)");
    assert_eq!(engine.requests().len(), 1, "the leaf itself was never sent");
}

#[tokio::test]
async fn sync_then_continue_loads_the_object_by_id() {
    let engine = FakeEngine::graphql(TOKEN, ids_and_strings).await;
    let dag = connect(&engine).await;
    let built = dag.container().from("alpine").with_exec(["make"]);
    let synced = built.sync().await.expect("sync");
    synced.with_exec(["ls"]).stdout().await.expect("stdout");
    // Passing either handle as an argument costs no request: the ID is known.
    dag.container()
        .with_mounted_directory("/a", synced.directory("/out"))
        .stdout()
        .await
        .ok();
    dag.container().with_rootfs(built.rootfs()).stdout().await.ok();

    let docs = engine.documents();
    assert_eq!(
        docs[0],
        r#"query{container{from(address:"alpine"){withExec(args:["make"]){sync}}}}"#
    );
    assert_eq!(
        docs[1],
        r#"query{node(id:"id-of-container.from.withExec"){... on Container{withExec(args:["ls"]){stdout}}}}"#
    );
    assert_eq!(
        docs[2],
        r#"query{node(id:"id-of-container.from.withExec"){... on Container{directory(path:"/out"){id}}}}"#
    );
    // `rootfs` of the original handle is a new object: its ID is asked through the original chain.
    assert_eq!(
        docs[4],
        r#"query{container{from(address:"alpine"){withExec(args:["make"]){rootfs{id}}}}}"#
    );
}

#[tokio::test]
async fn load_from_id_and_id_leaf() {
    let engine = FakeEngine::graphql(TOKEN, ids_and_strings).await;
    let dag = connect(&engine).await;
    let id = dag.directory().with_new_file("f", "x").id().await.expect("id");
    assert_eq!(id.as_str(), "id-of-directory.withNewFile");
    let again = dag.load_directory_from_id(id.clone());
    assert_eq!(again.id().await.expect("known id"), id, "a loaded object knows its ID");
    again.entries().await.ok();
    let docs = engine.documents();
    assert_eq!(docs.len(), 2, "{docs:#?}");
    assert_eq!(
        docs[1],
        r#"query{node(id:"id-of-directory.withNewFile"){... on Directory{entries}}}"#
    );
}

#[tokio::test]
async fn lists_of_objects_come_back_as_loaded_objects() {
    let engine = FakeEngine::start(|req| {
        let doc = req.document();
        let data = if doc.contains("envVariables{id}") {
            json!({"container": {"from": {"envVariables": [{"id": "ev1"}, {"id": "ev2"}]}}})
        } else {
            auto_reply(&doc, &|_| json!("PATH"))
        };
        (200, "application/json", json!({ "data": data }).to_string())
    })
    .await;
    let dag = connect(&engine).await;
    let vars = dag.container().from("alpine").env_variables().await.expect("list");
    assert_eq!(vars.len(), 2);
    assert_eq!(vars[1].name().await.expect("name"), "PATH");
    let docs = engine.documents();
    assert_eq!(docs[0], r#"query{container{from(address:"alpine"){envVariables{id}}}}"#);
    assert_eq!(docs[1], r#"query{node(id:"ev2"){... on EnvVariable{name}}}"#);
}

#[tokio::test]
async fn scalar_enum_list_and_optional_leaves_decode() {
    let engine = FakeEngine::start(|req| {
        let doc = req.document();
        let data = auto_reply(&doc, &|path| match path.last().map(String::as_str) {
            Some("entries") => json!(["a/", "b.txt"]),
            Some("exitCode") => json!(3),
            Some("exists") => json!(true),
            Some("envVariable") => Value::Null,
            Some("fileType") => json!("DIRECTORY"),
            Some("defaultPlatform") => json!("linux/amd64"),
            _ => json!("?"),
        });
        (200, "application/json", json!({ "data": data }).to_string())
    })
    .await;
    let dag = connect(&engine).await;
    let ctr = dag.container().from("alpine");
    assert_eq!(dag.directory().entries().await.expect("entries"), vec!["a/", "b.txt"]);
    let failing = ctr.with_exec_opts(["false"], ContainerWithExecOpts::default().expect(ReturnType::Any));
    assert_eq!(failing.exit_code().await.expect("exit code"), 3);
    assert!(ctr.exists("/etc").await.expect("exists"));
    assert_eq!(ctr.env_variable("NOPE").await.expect("optional"), None);
    assert_eq!(
        ctr.stat("/etc").file_type().await.expect("enum"),
        Some(dagger::FileType::Directory)
    );
    assert_eq!(dag.default_platform().await.expect("platform").0, "linux/amd64");
    assert!(engine.documents()[1].contains("withExec(args:[\"false\"],expect:ANY){exitCode}"));
}

#[tokio::test]
async fn exec_errors_are_typed() {
    let engine = FakeEngine::start(|_| {
        let body = json!({
            "data": null,
            "errors": [{
                "message": "process \"sh -c echo out; echo err >&2; exit 3\" did not complete successfully: exit code: 3",
                "path": ["container", "from", "withExec", "stdout"],
                "extensions": {
                    "_type": "EXEC_ERROR",
                    "cmd": ["sh", "-c", "echo out; echo err >&2; exit 3"],
                    "exitCode": 3,
                    "stdout": "out\n",
                    "stderr": "err\n"
                }
            }]
        });
        (200, "application/json", body.to_string())
    })
    .await;
    let dag = connect(&engine).await;
    let err = dag
        .container()
        .from("alpine")
        .with_exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
        .stdout()
        .await
        .expect_err("exec fails");
    let Error::Exec(exec) = &err else {
        panic!("expected an exec error, got {err:?}");
    };
    assert_eq!(exec.cmd, ["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(exec.exit_code, 3);
    assert_eq!(exec.stdout, "out\n");
    assert_eq!(exec.stderr, "err\n");
    assert!(exec.message.contains("exit code: 3"));
    insta::assert_snapshot!("exec_error_display", err.to_string());
}

#[tokio::test]
async fn wrong_token_is_a_clear_error() {
    let engine = FakeEngine::graphql(TOKEN, ids_and_strings).await;
    let dag = Connection::builder()
        .endpoint(engine.url(), "not-the-token")
        .quiet()
        .connect()
        .await
        .expect("connect is lazy")
        .query();
    let err = dag.version().await.expect_err("401");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("wrong session token"), "{err}");
}

#[tokio::test]
async fn html_answers_and_http_failures_are_distinct_errors() {
    let engine = FakeEngine::start(|req| {
        if req.document().contains("version") {
            (
                200,
                "text/html",
                "<html><body>Welcome to nginx!</body></html>".to_owned(),
            )
        } else {
            (502, "text/html", "<html>Bad Gateway</html>".to_owned())
        }
    })
    .await;
    let dag = connect(&engine).await;
    let err = dag.version().await.expect_err("html");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("not a GraphQL JSON response"), "{err}");
    assert!(err.to_string().contains("Welcome to nginx"), "{err}");

    let err = dag.default_platform().await.expect_err("502");
    match &err {
        Error::Http { status, body, .. } => {
            assert_eq!(*status, 502);
            assert!(body.contains("Bad Gateway"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn graphql_errors_with_a_4xx_status_are_query_errors() {
    let engine = FakeEngine::start(|_| {
        let body = json!({"errors": [{"message": "Cannot query field \"nope\" on type \"Query\"."}]});
        (422, "application/json", body.to_string())
    })
    .await;
    let err = connect(&engine).await.version().await.expect_err("422");
    assert!(
        matches!(&err, Error::Query { message, .. } if message.contains("Cannot query field")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_response_missing_the_path_is_a_clear_error() {
    let engine = FakeEngine::start(|_| (200, "application/json", r#"{"data":{"container":{}}}"#.to_owned())).await;
    let err = connect(&engine)
        .await
        .container()
        .from("alpine")
        .stdout()
        .await
        .expect_err("missing");
    match &err {
        Error::MissingData { path } => assert_eq!(path, "container.from"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("no value at `container.from`"), "{err}");
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_a_decode_error() {
    let engine = FakeEngine::graphql(TOKEN, |_| json!({"unexpected": "object"})).await;
    let err = connect(&engine).await.version().await.expect_err("wrong type");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_engine_is_a_connect_error() {
    // Bind, learn the port, close: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dag = Connection::builder()
        .endpoint(format!("http://127.0.0.1:{port}"), TOKEN)
        .quiet()
        .connect()
        .await
        .expect("connect is lazy")
        .query();
    let err = dag.version().await.expect_err("refused");
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("could not reach the engine"), "{err}");
}

#[tokio::test]
async fn a_detached_query_prints_but_does_not_run() {
    let err = Query::detached().version().await.expect_err("detached");
    assert!(matches!(err, Error::NotConnected));
}

#[tokio::test]
async fn query_is_shared_across_tasks() {
    let engine = FakeEngine::graphql(TOKEN, |_| json!("v")).await;
    let dag = connect(&engine).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let dag = dag.clone();
            tokio::spawn(async move { dag.container().with_env_variable("I", i.to_string()).stdout().await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("leaf"), "v");
    }
    assert_eq!(engine.requests().len(), 8);
}
