//! The HTTP server's and executor's defences: the session token (never empty, compared as a whole, scheme
//! name in any case), authentication before the body is read, GraphQL-style bodies on every error status,
//! variables coerced to their types before anything runs, fragments expanded once, and a request's work
//! stopped when its client goes away.

use std::time::{Duration, Instant};

use dagger_engine::{Config, Session};
use serde_json::{Value, json};
use testkit::process::processes_with;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An engine working in `dir`, with its cache in `dir/cache`.
fn config(dir: &tempfile::TempDir) -> Config {
    Config {
        cache_dir: dir.path().join("cache"),
        ..Config::for_dir(dir.path())
    }
}

struct Env {
    session: Session,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().expect("temporary directory");
    let session = Session::start(config(&dir)).await.expect("engine");
    Env { session, _dir: dir }
}

impl Env {
    fn url(&self) -> String {
        format!("{}/query", self.session.url())
    }

    /// Status and JSON body of a request with variables, authenticated.
    async fn post(&self, query: &str, variables: Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.url())
            .basic_auth(&self.session.token, Some(""))
            .body(json!({ "query": query, "variables": variables }).to_string())
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
        )
    }

    /// A raw HTTP/1.1 exchange: writes `head` (and nothing more), returns what the server answers.
    async fn raw(&self, head: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.session.port))
            .await
            .expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write");
        read_response(&mut stream).await
    }
}

/// Reads one HTTP response (headers and a `Content-Length` body), failing after 10 s.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("read: {e}"),
            Err(_) => panic!(
                "no complete response within 10 s; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        };
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
        if n == 0 {
            return text;
        }
    }
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"))
}

fn json_body(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("body not JSON ({e}): {response}"))
}

fn has_graphql_error(v: &Value, needle: &str) -> bool {
    v["errors"].as_array().is_some_and(|errors| {
        errors
            .iter()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)))
    })
}

fn basic(credentials: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(credentials)
}

// ---- 1. the token ----

#[tokio::test]
async fn an_empty_token_is_refused_by_the_server_and_the_session() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = dagger_engine::Engine::new(config(&dir)).expect("engine");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let served = tokio::time::timeout(
        Duration::from_secs(10),
        dagger_engine::server::run(listener, String::new(), engine.clone(), std::future::pending()),
    )
    .await
    .expect("run returns at once with an empty token");
    let err = served.expect_err("an empty token is an error");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("token is empty"), "{err}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let blank = dagger_engine::server::run(listener, "  ".into(), engine, std::future::pending()).await;
    assert!(blank.is_err(), "a blank token is refused too");

    let err = Session::start_with_token(config(&dir), String::new())
        .await
        .err()
        .expect("an empty session token is an error");
    assert!(err.to_string().contains("token is empty"), "{err}");
    let ok = Session::start_with_token(config(&dir), "chosen".into())
        .await
        .expect("a chosen token");
    assert_eq!(ok.token, "chosen");
}

#[tokio::test]
async fn credentials_other_than_the_token_are_rejected_with_a_graphql_body() {
    let env = start().await;
    let token = env.session.token.clone();
    let query = r#"{"query":"{version}"}"#;
    let cases = [
        (None, 401),
        (Some(format!("Basic {}", basic(":"))), 401),
        (Some(format!("Basic {}", basic(""))), 401),
        (Some(format!("Basic {}", basic(&format!("{token}x:")))), 401),
        (Some(format!("Basic {}", basic(&token[..token.len() - 1]))), 401),
        (Some(format!("Basic {}", basic(&format!("{token}:pw")))), 401),
        (Some(format!("Bearer {token}")), 401),
        (Some(format!("Basic {}", basic(&format!("{token}:")))), 200),
        (Some(format!("basic {}", basic(&format!("{token}:")))), 200),
        (Some(format!("BASIC {}", basic(&format!("{token}:")))), 200),
    ];
    for (auth, expected) in cases {
        let auth_line = auth
            .as_ref()
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let response = env
            .raw(&format!(
                "POST /query HTTP/1.1\r\nHost: x\r\n{auth_line}Content-Type: application/json\r\nContent-Length: \
                 {}\r\nConnection: close\r\n\r\n{query}",
                query.len()
            ))
            .await;
        assert_eq!(status_of(&response), expected, "{auth:?}: {response}");
        let body = json_body(&response);
        if expected == 401 {
            assert!(has_graphql_error(&body, "session token"), "{response}");
            assert!(
                response.to_ascii_lowercase().contains("www-authenticate: basic"),
                "{response}"
            );
            assert!(body.get("data").is_none(), "{response}");
        } else {
            assert!(body["data"]["version"].is_string(), "{response}");
        }
    }
}

// ---- 2. authentication before the body ----

#[tokio::test]
async fn an_unauthenticated_request_is_answered_without_waiting_for_its_body() {
    let env = start().await;
    // A large declared body that never comes: the answer must not wait for it.
    let response = env
        .raw("POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000000\r\n\r\n{")
        .await;
    assert_eq!(status_of(&response), 401, "{response}");
    assert!(has_graphql_error(&json_body(&response), "session token"), "{response}");
    assert_eq!(
        env.session.engine.requests.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_a_graphql_body() {
    let env = start().await;
    let auth = basic(&format!("{}:", env.session.token));
    // Declared too large: refused from the headers.
    let too_big = dagger_engine::server::MAX_BODY + 1;
    let response = env
        .raw(&format!(
            "POST /query HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: {too_big}\r\n\r\n{{"
        ))
        .await;
    assert_eq!(status_of(&response), 413, "{response}");
    assert!(has_graphql_error(&json_body(&response), "MAX_BODY"), "{response}");

    // Streamed (chunked) past the limit: refused once it gets there.
    let mut stream = TcpStream::connect(("127.0.0.1", env.session.port))
        .await
        .expect("connect");
    let head =
        format!("POST /query HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nTransfer-Encoding: chunked\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b' '; 1 << 20];
    let framed = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk, b"\r\n".to_vec()].concat();
    for _ in 0..(dagger_engine::server::MAX_BODY >> 20) + 2 {
        if stream.write_all(&framed).await.is_err() {
            break; // the server answered and closed
        }
    }
    let response = read_response(&mut stream).await;
    assert_eq!(status_of(&response), 413, "{response}");
    assert!(has_graphql_error(&json_body(&response), "MAX_BODY"), "{response}");
}

// ---- 3. error statuses carry GraphQL bodies ----

#[tokio::test]
async fn wrong_methods_and_paths_get_graphql_bodies() {
    let env = start().await;
    let auth = basic(&format!("{}:", env.session.token));
    let response = env
        .raw(&format!(
            "GET /query HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(status_of(&response), 405, "{response}");
    assert!(has_graphql_error(&json_body(&response), "POST /query"), "{response}");
    assert!(response.to_ascii_lowercase().contains("allow: post"), "{response}");

    let response = env
        .raw(&format!(
            "POST /nowhere HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: 2\r\nConnection: \
             close\r\n\r\n{{}}"
        ))
        .await;
    assert_eq!(status_of(&response), 404, "{response}");
    assert!(has_graphql_error(&json_body(&response), "/nowhere"), "{response}");

    // Without the token, neither path nor method is revealed.
    let response = env
        .raw("GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status_of(&response), 401, "{response}");
    let response = env
        .raw("GET /query HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status_of(&response), 401, "{response}");
}

// ---- 4. variables ----

#[tokio::test]
async fn bad_variables_are_request_errors_naming_the_variable_and_nothing_runs() {
    let env = start().await;
    let doc = r#"query($path: String!, $contents: String!, $drop: [String!]!) {
        directory { withNewFile(path: $path, contents: $contents) { withoutFiles(paths: $drop) { entries } } }
    }"#;
    let bad = [
        (json!({ "contents": "x", "drop": [] }), "$path"),
        (json!({ "path": null, "contents": "x", "drop": [] }), "$path"),
        (json!({ "path": 5, "contents": "x", "drop": [] }), "$path"),
        (json!({ "path": "a", "contents": ["x"], "drop": [] }), "$contents"),
        (json!({ "path": "a", "contents": "x", "drop": [1, 2] }), "$drop"),
        (json!({ "path": "a", "contents": "x", "drop": ["ok", null] }), "$drop"),
        (json!({ "path": "a", "contents": "x", "drop": {"a": 1} }), "$drop"),
    ];
    for (vars, name) in bad {
        let (status, v) = env.post(doc, vars.clone()).await;
        assert_eq!(status, 200, "{v}");
        assert!(v.get("data").is_none(), "a request error has no data: {vars} → {v}");
        assert!(has_graphql_error(&v, &format!("Variable \"{name}\"")), "{vars} → {v}");
    }
    let typed = env
        .post(doc, json!({ "path": "a", "contents": "x", "drop": [1] }))
        .await
        .1;
    assert!(has_graphql_error(&typed, "expected type String!"), "{typed}");
    assert_eq!(
        env.session.engine.computed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no field ran for a bad request"
    );

    // Good values work, a single value stands for a list of one, and defaults apply.
    let (_, v) = env
        .post(doc, json!({ "path": "a", "contents": "x", "drop": "a", "unused": 1 }))
        .await;
    assert_eq!(
        v,
        json!({ "data": { "directory": { "withNewFile": { "withoutFiles": { "entries": [] } } } } })
    );
    let with_default = r#"query($path: String = "dflt", $p: Int = 384) {
        directory { withNewFile(path: $path, contents: "x", permissions: $p) { file(path: "dflt") { name } } }
    }"#;
    let (_, v) = env.post(with_default, json!({})).await;
    assert_eq!(v["data"]["directory"]["withNewFile"]["file"]["name"], "dflt", "{v}");
    // An Int variable holding a fraction or too large a number is refused.
    for bad in [json!(1.5), json!(1u64 << 40), json!("420")] {
        let (_, v) = env.post(with_default, json!({ "p": bad })).await;
        assert!(has_graphql_error(&v, "Variable \"$p\""), "{bad} → {v}");
        assert!(v.get("data").is_none(), "{v}");
    }
    // Enums: a name of the enum, nothing else.
    let enum_doc = r#"query($t: ExistsType) { directory { withNewFile(path: "f", contents: "") { exists(path: "f", expectedType: $t) } } }"#;
    let (_, v) = env.post(enum_doc, json!({ "t": "REGULAR_TYPE" })).await;
    assert_eq!(v["data"]["directory"]["withNewFile"]["exists"], true, "{v}");
    let (_, v) = env.post(enum_doc, json!({ "t": "NOT_A_TYPE" })).await;
    assert!(has_graphql_error(&v, "Variable \"$t\""), "{v}");
    // An unknown variable type is refused.
    let (_, v) = env.post("query($x: Nope) { version }", json!({ "x": 1 })).await;
    assert!(
        v.get("data").is_none() && v["errors"].as_array().is_some_and(|e| !e.is_empty()),
        "{v}"
    );
}

#[tokio::test]
async fn inline_arguments_are_checked_against_their_types() {
    let env = start().await;
    for doc in [
        r#"{ directory { withNewFile(path: 5, contents: "x") { entries } } }"#,
        r#"{ directory { withNewFile(path: "a", contents: "x", permissions: "rw") { entries } } }"#,
        r#"{ directory { withNewFile(path: "a", contents: "x", permissions: 1.5) { entries } } }"#,
        r#"{ directory { withoutFiles(paths: [1]) { entries } } }"#,
        r#"{ directory { withNewFile(path: "a") { entries } } }"#,
        r#"{ directory { exists(path: "a", expectedType: NOPE) } }"#,
    ] {
        let (_, v) = env.post(doc, json!({})).await;
        assert!(v.get("data").is_none(), "{doc} → {v}");
        assert!(v["errors"].as_array().is_some_and(|e| !e.is_empty()), "{doc} → {v}");
    }
    // A single literal where a list is expected is a list of one.
    let (_, v) = env
        .post(
            r#"{ directory { withNewFile(path: "a", contents: "") { withoutFiles(paths: "a") { entries } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        v["data"]["directory"]["withNewFile"]["withoutFiles"]["entries"],
        json!([]),
        "{v}"
    );
    assert!(env.session.engine.computed.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

// ---- 5. fragments and cancellation ----

/// `levels` fragments, each spreading the next twice (2^levels expansions if done naively).
fn doubling_query(levels: usize) -> String {
    let mut doc = String::from(r#"{ directory { withNewFile(path: "f", contents: "hi") { ...F0 } } }"#);
    for i in 0..levels {
        doc.push_str(&format!(" fragment F{i} on Directory {{ ...F{n} ...F{n} }}", n = i + 1));
    }
    doc.push_str(&format!(
        " fragment F{levels} on Directory {{ entries f: file(path: \"f\") {{ contents }} }}"
    ));
    doc
}

#[tokio::test]
async fn repeated_fragment_spreads_are_expanded_once() {
    let env = start().await;
    let doc = doubling_query(30);
    assert!(doc.len() < 2000, "a small document: {}", doc.len());
    let started = Instant::now();
    let (status, v) = env.post(&doc, json!({})).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({ "data": { "directory": { "withNewFile": { "entries": ["f"], "f": { "contents": "hi" } } } } })
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[tokio::test]
async fn a_document_that_multiplies_into_too_many_fields_is_stopped() {
    let env = start().await;
    // Two aliases at every level: the response itself would double 24 times (the same calls, so cheap ones).
    let mut doc = String::from("{ directory { ...F0 } }");
    let levels = 24;
    for i in 0..levels {
        doc.push_str(&format!(
            " fragment F{i} on Directory {{ a: withNewDirectory(path: \"a\") {{ ...F{n} }} b: withNewDirectory(path: \"a\") {{ ...F{n} }} }}",
            n = i + 1
        ));
    }
    doc.push_str(&format!(" fragment F{levels} on Directory {{ entries }}"));
    let started = Instant::now();
    let (_, v) = env.post(&doc, json!({})).await;
    assert!(
        has_graphql_error(&v, "exec::MAX_FIELDS"),
        "{}",
        &v.to_string()[..500.min(v.to_string().len())]
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_stops_its_request() {
    let registry = testkit::registry::LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
    let image = testkit::registry::push_busybox(&registry, "busybox:latest").await;
    let env = start().await;
    let mut events = env.session.engine.subscribe();
    let marker = format!("cancel-marker-{}", dagger_engine::server::random_token());
    // Runs far longer than the test waits after the disconnect: only cancellation ends it in time.
    let script = format!("sleep 40; echo {marker}");
    let stream = send_exec_raw(&env, &image, &script).await;
    // The command starts …
    wait_until_running(&marker).await;
    // The network namespace the command runs in (one of the engine's, under /var/run/netns).
    let netns_of = |pid: u32| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino()).ok()
    };
    let named_netns = |ino: u64| {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir("/var/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("drs-") && e.metadata().is_ok_and(|m| m.ino() == ino))
    };
    let netns = processes_with(&marker)
        .into_iter()
        .find_map(netns_of)
        .filter(|ino| named_netns(*ino));
    // … the client goes away …
    drop(stream);
    // … and the command is stopped, long before it would have finished.
    let gone = Instant::now();
    while !processes_with(&marker).is_empty() {
        assert!(
            gone.elapsed() < Duration::from_secs(20),
            "the command still runs 20 s after its client disconnected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its network namespace is deleted too.
    if let Some(ino) = netns {
        while named_netns(ino) {
            assert!(
                gone.elapsed() < Duration::from_secs(20),
                "the exec's network namespace is left behind"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Nothing reports the exec as done.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(event) = events.try_recv() {
        assert!(
            !(event.op == "Container.withExec" && matches!(event.kind, dagger_engine::EventKind::Done(_))),
            "{event}"
        );
    }

    // The same request from a client that stays gets its answer: nothing stale is left in flight.
    let quick = format!(
        r#"{{ container {{ from(address: "{image}") {{ withExec(args: ["sh", "-c", "echo {marker}-again"]) {{ stdout }} }} }} }}"#
    );
    let (_, v) = env.post(&quick, json!({})).await;
    assert_eq!(
        v["data"]["container"]["from"]["withExec"]["stdout"],
        format!("{marker}-again\n"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluation_shared_with_a_client_that_stays_goes_on_when_another_disconnects() {
    let registry = testkit::registry::LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
    let image = testkit::registry::push_busybox(&registry, "busybox:latest").await;
    let env = start().await;
    let mut events = env.session.engine.subscribe();
    let marker = format!("shared-marker-{}", dagger_engine::server::random_token());
    let script = format!("sleep 3; echo {marker}");
    let body = json!({ "query": exec_query(&image, &script) }).to_string();
    let leaving = send_exec_raw(&env, &image, &script).await;
    wait_until_running(&marker).await;
    // A second client asks for the same thing and joins the evaluation in flight; then the first leaves.
    let url = env.url();
    let token = env.session.token.clone();
    let staying = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .basic_auth(token, Some(""))
            .body(body)
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(leaving);
    let answer: Value = serde_json::from_str(&staying.await.expect("client")).expect("JSON");
    assert_eq!(
        answer["data"]["container"]["from"]["withExec"]["stdout"],
        format!("{marker}\n"),
        "{answer}"
    );
    let mut execs = 0;
    while let Ok(event) = events.try_recv() {
        if event.op == "Container.withExec" && event.kind == dagger_engine::EventKind::Started {
            execs += 1;
        }
    }
    assert_eq!(execs, 1, "the command ran once, for both clients");
}

/// A query running `sh -c script` in `image` and asking for its stdout.
fn exec_query(image: &str, script: &str) -> String {
    format!(
        r#"{{ container {{ from(address: "{image}") {{ withExec(args: ["sh", "-c", {script:?}]) {{ stdout }} }} }} }}"#
    )
}

/// Sends `exec_query(image, script)` over a raw connection and returns it, unread, so the test can drop it
/// (disconnect) while the command runs.
async fn send_exec_raw(env: &Env, image: &str, script: &str) -> TcpStream {
    let body = json!({ "query": exec_query(image, script) }).to_string();
    let auth = basic(&format!("{}:", env.session.token));
    let mut stream = TcpStream::connect(("127.0.0.1", env.session.port))
        .await
        .expect("connect");
    let request = format!(
        "POST /query HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    stream
}

/// Waits until a process whose command line holds `marker` runs.
async fn wait_until_running(marker: &str) {
    let started = Instant::now();
    while processes_with(marker).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the command never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
