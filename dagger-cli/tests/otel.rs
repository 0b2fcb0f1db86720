//! OpenTelemetry traces from `dagger-rs session`: with the standard `OTEL_EXPORTER_OTLP_*` variables set, the
//! engine sends a span per operation to a small OTLP/HTTP receiver on loopback (JSON encoding, so the test
//! reads it without protobuf), parented on the `traceparent` the client's request carried, or on a session
//! span of its own when the request carried none.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use testkit::http::{FakeServer, RawReply};

const BIN: &str = env!("CARGO_BIN_EXE_dagger-rs");
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// What the receiver got: the request line and content type, and the body.
type Received = (String, Vec<u8>);

/// Posts a query with the session token and, when given, a `traceparent`.
async fn post(port: u16, token: &str, traceparent: Option<&str>, query: &str) -> Value {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/query"))
        .basic_auth(token, Some(""))
        .header("content-type", "application/json")
        .body(json!({ "query": query }).to_string());
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let resp = req.send().await.expect("request");
    serde_json::from_str(&resp.text().await.expect("body")).expect("JSON")
}

/// Every span the receiver got, each with its resource's attributes under `resource`.
fn spans(bodies: &[Vec<u8>]) -> Vec<Value> {
    let mut out = Vec::new();
    for body in bodies {
        let v: Value = serde_json::from_slice(body).expect("an OTLP/JSON body");
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    let mut span = span.clone();
                    span["resource"] = rs["resource"].clone();
                    out.push(span);
                }
            }
        }
    }
    out
}

/// The string value of attribute `key` in `list` (a span's or a resource's attributes).
fn attr<'a>(list: &'a Value, key: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|a| a["key"] == key).map(|a| &a["value"])
}

fn text_attr(span: &Value, key: &str) -> String {
    attr(&span["attributes"], key)
        .and_then(|v| v["stringValue"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_is_a_span_parented_on_the_clients_traceparent() {
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let sink = received.clone();
    let receiver = FakeServer::start(move |_, req| {
        sink.lock().expect("lock").push((
            format!(
                "{} {} {}",
                req.method,
                req.target,
                req.headers.get("content-type").cloned().unwrap_or_default()
            ),
            req.body,
        ));
        RawReply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
        }
    })
    .await;
    let cache = tempfile::tempdir().expect("cache");
    let mut child = Command::new(BIN)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["--progress", "plain", "session"])
        .env_remove("DAGGER_RS_REPORT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", receiver.port),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dagger-rs session");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("handshake");
    let handshake: Value = serde_json::from_str(&line).expect("handshake JSON");
    let port = handshake["port"].as_u64().expect("port") as u16;
    let token = handshake["session_token"].as_str().expect("token").to_owned();

    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let traced = post(
        port,
        &token,
        Some(&traceparent),
        r#"{directory{withNewFile(path:"traced.txt",contents:"x"){withNewDirectory(path:"sub"){entries}}}}"#,
    )
    .await;
    assert!(traced["errors"].is_null(), "{traced}");
    let untraced = post(
        port,
        &token,
        None,
        r#"{directory{withNewFile(path:"untraced.txt",contents:"y"){entries}}}"#,
    )
    .await;
    assert!(untraced["errors"].is_null(), "{untraced}");
    let failing = post(
        port,
        &token,
        Some(&traceparent),
        r#"{directory{file(path:"missing.txt"){contents}}}"#,
    )
    .await;
    assert!(!failing["errors"].is_null(), "{failing}");

    // Closing stdin ends the session, which sends the last spans before it exits.
    drop(child.stdin.take());
    let status = tokio::task::spawn_blocking(move || {
        testkit::process::wait_for_exit(&mut child, Duration::from_secs(60), "dagger-rs session")
    })
    .await
    .expect("join");
    assert!(status.success(), "{status}");

    let received = received.lock().expect("lock").clone();
    assert!(!received.is_empty(), "no span was sent");
    for (what, _) in &received {
        assert_eq!(
            what, "POST /v1/traces application/json",
            "OTLP/HTTP JSON to the traces path"
        );
    }
    let bodies: Vec<Vec<u8>> = received.into_iter().map(|(_, b)| b).collect();
    let spans = spans(&bodies);
    let by_detail = |detail: &str| -> &Value {
        spans
            .iter()
            .find(|s| text_attr(s, "dagger_rs.detail") == detail)
            .unwrap_or_else(|| panic!("no span for {detail}: {spans:#?}"))
    };

    // The request's operations are children of the client's span, in its trace.
    for detail in ["traced.txt", "sub"] {
        let span = by_detail(detail);
        assert_eq!(span["traceId"], TRACE, "{span}");
        assert_eq!(span["parentSpanId"], CLIENT_SPAN, "{span}");
        assert!(
            span["name"].as_str().is_some_and(|n| n.starts_with("Directory.")),
            "{span}"
        );
        assert_eq!(text_attr(span, "dagger_rs.role"), "work");
        let start: u64 = span["startTimeUnixNano"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("start");
        let end: u64 = span["endTimeUnixNano"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("end");
        assert!(end >= start && start > 0, "{span}");
        assert_eq!(
            attr(&span["resource"]["attributes"], "service.name").and_then(|v| v["stringValue"].as_str()),
            Some("dagger-rs")
        );
    }
    let args = text_attr(by_detail("traced.txt"), "dagger_rs.args");
    assert!(args.contains("\"contents\":\"x\""), "the arguments: {args}");

    // Without a traceparent: a child of the session's own span, in its own trace.
    let untraced = by_detail("untraced.txt");
    let session = spans
        .iter()
        .find(|s| s["name"] == "dagger-rs session")
        .unwrap_or_else(|| panic!("no session span: {spans:#?}"));
    assert_eq!(untraced["parentSpanId"], session["spanId"]);
    assert_eq!(untraced["traceId"], session["traceId"]);
    assert_ne!(untraced["traceId"], TRACE);

    // A failed operation carries an error status with its message.
    let failed = by_detail("missing.txt");
    assert_eq!(failed["name"], "Directory.file");
    assert_eq!(failed["parentSpanId"], CLIENT_SPAN);
    let code = &failed["status"]["code"];
    assert!(code == 2 || code == "STATUS_CODE_ERROR", "{failed}");
    assert!(
        failed["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing.txt")),
        "{failed}"
    );
}

#[test]
fn an_unsupported_protocol_is_refused_before_anything_runs() {
    let cache = tempfile::tempdir().expect("cache");
    let out = Command::new(BIN)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["query", "{version}"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .expect("query");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http/protobuf") && err.contains("4318"), "{err}");
}
