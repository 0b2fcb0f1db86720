//! Session provisioning, end to end: a real program (`probe`) started with chosen environments, against a
//! fake engine on loopback and a fake engine CLI (`fake-cli`) that speaks the session handshake.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dagger::{Connection, Error, SessionError};
use serde_json::json;
use testkit::FakeEngine;

const PROBE: &str = env!("CARGO_BIN_EXE_probe");
const FAKE_CLI: &str = env!("CARGO_BIN_EXE_fake-cli");

/// Runs the probe with exactly these environment variables (nothing inherited).
fn probe(vars: &[(&str, &str)]) -> (bool, String) {
    let out: Output = Command::new(PROBE)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success(), stdout)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dagger-provisioning-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn empty_path_dir() -> PathBuf {
    scratch("empty-path")
}

#[tokio::test(flavor = "multi_thread")]
async fn session_env_vars_connect() {
    let engine = FakeEngine::graphql("tok", |_| json!("0.21.8")).await;
    let port = engine.port.to_string();
    let (ok, out) =
        tokio::task::spawn_blocking(move || probe(&[("DAGGER_SESSION_PORT", &port), ("DAGGER_SESSION_TOKEN", "tok")]))
            .await
            .expect("join");
    assert!(ok, "{out}");
    assert_eq!(out, "OK 0.21.8");
}

#[tokio::test(flavor = "multi_thread")]
async fn traceparent_is_forwarded() {
    let engine = FakeEngine::graphql("tok", |_| json!("v")).await;
    let port = engine.port.to_string();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (ok, out) = tokio::task::spawn_blocking(move || {
        probe(&[
            ("DAGGER_SESSION_PORT", &port),
            ("DAGGER_SESSION_TOKEN", "tok"),
            ("TRACEPARENT", tp),
        ])
    })
    .await
    .expect("join");
    assert!(ok, "{out}");
    let reqs = engine.requests();
    assert_eq!(reqs[0].headers.get("traceparent").map(String::as_str), Some(tp));
}

#[test]
fn a_bad_port_is_an_error_not_a_fallthrough() {
    let path = empty_path_dir();
    for bad in ["abc", "0", "99999"] {
        let (ok, out) = probe(&[
            ("DAGGER_SESSION_PORT", bad),
            ("DAGGER_SESSION_TOKEN", "t"),
            ("_EXPERIMENTAL_DAGGER_CLI_BIN", FAKE_CLI),
            ("PATH", path.to_str().expect("utf-8")),
        ]);
        assert!(!ok);
        assert_eq!(
            out,
            format!("ERR DAGGER_SESSION_PORT is `{bad}`, which is not a port number (1-65535); fix it or unset it")
        );
    }
}

#[test]
fn a_port_without_a_token_is_an_error() {
    let (ok, out) = probe(&[("DAGGER_SESSION_PORT", "4242")]);
    assert!(!ok);
    assert!(
        out.contains("DAGGER_SESSION_PORT is set but DAGGER_SESSION_TOKEN is not"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_session_token_says_so() {
    let engine = FakeEngine::graphql("right", |_| json!("v")).await;
    let port = engine.port.to_string();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        probe(&[("DAGGER_SESSION_PORT", &port), ("DAGGER_SESSION_TOKEN", "wrong")])
    })
    .await
    .expect("join");
    assert!(!ok);
    assert!(out.contains("401") && out.contains("wrong session token"), "{out}");
}

#[test]
fn nothing_found_lists_what_was_tried() {
    let path = empty_path_dir();
    let (ok, out) = probe(&[("PATH", path.to_str().expect("utf-8")), ("DAGGER_RS_EMBEDDED", "0")]);
    assert!(!ok);
    insta::assert_snapshot!("nothing_found", out);
}

#[test]
fn with_nothing_configured_the_embedded_engine_runs() {
    let path = empty_path_dir();
    let cache = scratch("embedded-cache");
    let (ok, out) = probe(&[
        ("PATH", path.to_str().expect("utf-8")),
        ("DAGGER_RS_CACHE_DIR", cache.to_str().expect("utf-8")),
    ]);
    assert!(ok, "{out}");
    assert_eq!(out, format!("OK dagger-rs-engine v{}", env!("CARGO_PKG_VERSION")));
}

/// Runs the probe with exactly these environment variables; returns whether it succeeded, its stdout and
/// its stderr (where the SDK's default log sink writes).
fn probe_logs(vars: &[(&str, &str)]) -> (bool, String, String) {
    let out: Output = Command::new(PROBE)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("run probe");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_embedded_engine_writes_the_report_the_builder_or_the_environment_asks_for() {
    let path = empty_path_dir();
    let dir = scratch("report-out");
    for (var, name) in [("PROBE_REPORT", "builder.html"), ("DAGGER_RS_REPORT", "env.html")] {
        // A cache of its own each time, so every operation runs.
        let cache = dir.join(format!("{name}-cache"));
        let html = dir.join(name);
        let (ok, out, err) = probe_logs(&[
            ("PATH", path.to_str().expect("utf-8")),
            ("DAGGER_RS_CACHE_DIR", cache.to_str().expect("utf-8")),
            ("PROBE_WORK", "1"),
            (var, html.to_str().expect("utf-8")),
        ]);
        assert!(ok, "{out}\n{err}");
        // Progress by what each operation does, then the summary line naming the report.
        assert!(err.contains("withNewFile probe.txt ["), "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.contains(" run, ") && last.ends_with(&format!("· report: {}", html.display())),
            "{err}"
        );
        let page = std::fs::read_to_string(&html).expect("the report");
        for op in ["Directory.withNewFile", "Directory.withNewDirectory"] {
            assert!(page.contains(&format!("data-op=\"{op}\"")), "{op} in the {name} report");
        }
        assert!(html.with_extension("jsonl").exists(), "its events beside it");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_engine_sends_spans_parented_on_the_programs_traceparent() {
    let bodies: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>> = std::sync::Arc::default();
    let sink = bodies.clone();
    let receiver = testkit::http::FakeServer::start(move |_, req| {
        if req.target == "/v1/traces" {
            sink.lock().expect("lock").push(req.body);
        }
        testkit::http::RawReply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
        }
    })
    .await;
    let path = empty_path_dir();
    let cache = scratch("otel-cache");
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        probe_logs(&[
            ("PATH", path.to_str().expect("utf-8")),
            ("DAGGER_RS_CACHE_DIR", cache.to_str().expect("utf-8")),
            ("PROBE_WORK", "1"),
            ("TRACEPARENT", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
    })
    .await
    .expect("join");
    assert!(ok, "{out}\n{err}");
    let mut names = Vec::new();
    for body in bodies.lock().expect("lock").iter() {
        let v: serde_json::Value = serde_json::from_slice(body).expect("OTLP/JSON");
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736", "{span}");
                    assert_eq!(span["parentSpanId"], "00f067aa0ba902b7", "{span}");
                    names.push(span["name"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
    }
    assert!(
        names.iter().any(|n| n == "Directory.withNewFile") && names.iter().any(|n| n == "Directory.withNewDirectory"),
        "{names:?}"
    );
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the fake CLI has logged that its stdin closed (the SDK ended the session).
fn wait_for_stdin_closed(log: &Path) -> String {
    for _ in 0..100 {
        let text = read_log(log);
        if text.contains("stdin closed") {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    read_log(log)
}

#[test]
fn the_cli_from_the_environment_is_started_as_a_session_and_ended() {
    let dir = scratch("cli-env");
    let log = dir.join("cli.log");
    let path = empty_path_dir();
    let (ok, out) = probe(&[
        ("_EXPERIMENTAL_DAGGER_CLI_BIN", FAKE_CLI),
        ("FAKE_CLI_LOG", log.to_str().expect("utf-8")),
        ("PATH", path.to_str().expect("utf-8")),
    ]);
    assert!(ok, "{out}");
    assert_eq!(out, "OK fake-cli");
    let text = wait_for_stdin_closed(&log);
    assert!(
        text.contains(&format!(
            "args: session --label dagger.io/sdk.name:rust --label dagger.io/sdk.version:{}",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        text.contains("stdin closed"),
        "the session ends when the SDK is done: {text}"
    );
}

#[test]
fn a_dagger_cli_on_path_is_used() {
    let dir = scratch("cli-path");
    std::os::unix::fs::symlink(FAKE_CLI, dir.join("dagger")).expect("symlink");
    let (ok, out) = probe(&[("PATH", dir.to_str().expect("utf-8"))]);
    assert!(ok, "{out}");
    assert_eq!(out, "OK fake-cli");
}

#[test]
fn a_cli_that_exits_early_reports_its_stderr() {
    let (ok, out) = probe(&[
        ("_EXPERIMENTAL_DAGGER_CLI_BIN", FAKE_CLI),
        ("FAKE_CLI_MODE", "exit-early"),
    ]);
    assert!(!ok);
    assert!(
        out.contains("exited (exit status: 3) before the session started"),
        "{out}"
    );
    assert!(
        out.contains("fake-cli: cannot start the engine: no runtime found"),
        "{out}"
    );
}

#[test]
fn a_missing_cli_binary_is_a_spawn_error() {
    let (ok, out) = probe(&[("_EXPERIMENTAL_DAGGER_CLI_BIN", "/nonexistent/dagger")]);
    assert!(!ok);
    assert!(
        out.contains("could not start the engine CLI `/nonexistent/dagger`"),
        "{out}"
    );
}

#[tokio::test]
async fn a_cli_that_never_answers_times_out() {
    // SAFETY of the test: the fake CLI reads its mode from its own environment, set on the child only.
    let dir = scratch("cli-hang");
    let wrapper = dir.join("hang-cli");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nFAKE_CLI_MODE=hang exec {FAKE_CLI} \"$@\"\n"),
    )
    .expect("write");
    make_executable(&wrapper);
    let err = Connection::builder()
        .cli_bin(&wrapper)
        .cli_timeout(Duration::from_millis(700))
        .quiet()
        .connect()
        .await
        .expect_err("timeout");
    match &err {
        Error::Session(SessionError::CliTimeout { timeout, stderr, .. }) => {
            assert_eq!(*timeout, Duration::from_millis(700));
            assert!(stderr.contains("fake-cli: starting"), "{stderr}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().contains("printed no session handshake within 700ms"),
        "{err}"
    );
}

#[tokio::test]
async fn a_cli_that_prints_garbage_is_a_handshake_error() {
    let dir = scratch("cli-garbage");
    let wrapper = dir.join("garbage-cli");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nFAKE_CLI_MODE=garbage exec {FAKE_CLI} \"$@\"\n"),
    )
    .expect("write");
    make_executable(&wrapper);
    let err = Connection::builder()
        .cli_bin(&wrapper)
        .quiet()
        .connect()
        .await
        .expect_err("garbage");
    assert!(
        matches!(err, Error::Session(SessionError::CliHandshake { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("printed `Welcome to the engine!`"), "{err}");
}

#[tokio::test]
async fn cli_logs_reach_the_log_sink() {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let conn = Connection::builder()
        .cli_bin(FAKE_CLI)
        .log_sink(move |line: &str| sink.lock().expect("lock").push(line.to_owned()))
        .connect()
        .await
        .expect("connect");
    assert_eq!(conn.query().version().await.expect("version"), "fake-cli");
    assert!(lines.lock().expect("lock").iter().any(|l| l == "fake-cli: engine up"));
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
