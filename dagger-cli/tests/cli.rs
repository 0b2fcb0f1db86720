//! The `dagger-rs` binary as SDKs and people use it: the session handshake, `run`, `query`, `serve`, the
//! cache commands, progress output and `--help`. Every test runs the real binary with its own cache directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::process::{free_port, wait_for_exit};

const BIN: &str = env!("CARGO_BIN_EXE_dagger-rs");

/// The binary with a fresh cache directory (kept alive by the returned guard).
fn dagger_rs(cache: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--cache-dir").arg(cache.path());
    // The caller's environment must not leak into the tests.
    cmd.env_remove("DAGGER_SESSION_TOKEN")
        .env_remove("DAGGER_SESSION_PORT")
        .env_remove("DAGGER_RS_PROGRESS")
        .env_remove("DAGGER_RS_REPORT")
        .env_remove("DAGGER_RS_EVENTS");
    cmd
}

fn cache() -> tempfile::TempDir {
    tempfile::tempdir().expect("cache dir")
}

fn run_with_stdin(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dagger-rs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Posts a query with an optional token; returns the status and the body.
async fn post(port: u16, token: Option<&str>, query: &str) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/query"))
        .header("content-type", "application/json")
        .body(json!({ "query": query }).to_string());
    if let Some(t) = token {
        req = req.basic_auth(t, Some(""));
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn session_prints_one_handshake_line_serves_with_its_token_and_ends_when_stdin_closes() {
    let cache = cache();
    let work = tempfile::tempdir().expect("workdir");
    std::fs::write(work.path().join("marker.txt"), "here").expect("marker");
    let mut child = dagger_rs(&cache)
        .args([
            "session",
            "--label",
            "dagger.io/sdk.name:test",
            "--label",
            "k:v",
            "--workdir",
        ])
        .arg(work.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn session");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("handshake line");
    let handshake = json_of(&line);
    let obj = handshake.as_object().expect("an object");
    assert_eq!(obj.len(), 2, "exactly `port` and `session_token`: {line}");
    let port = u16::try_from(obj["port"].as_u64().expect("numeric port")).expect("a port");
    let token = obj["session_token"].as_str().expect("token").to_owned();
    assert!(token.len() >= 16, "a token worth its name: {token}");

    let (status, body) = post(port, Some(&token), "{version}").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        json_of(&body)["data"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("dagger-rs-engine v")),
        "{body}"
    );
    // `--workdir` is where relative host paths resolve.
    let (_, body) = post(port, Some(&token), r#"{host{directory(path:"."){entries}}}"#).await;
    assert_eq!(
        json_of(&body)["data"]["host"]["directory"]["entries"],
        json!(["marker.txt"])
    );
    assert_eq!(post(port, None, "{version}").await.0, 401);
    assert_eq!(post(port, Some("wrong"), "{version}").await.0, 401);

    drop(child.stdin.take());
    let status = wait_for_exit(&mut child, Duration::from_secs(20), "the session");
    assert!(status.success(), "a clean exit: {status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("rest of stdout");
    assert_eq!(rest, "", "nothing but the handshake on stdout");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(
        stderr.contains("dagger.io/sdk.name:test, k:v"),
        "labels are logged: {stderr}"
    );
}

#[test]
fn session_rejects_a_label_without_a_colon() {
    let cache = cache();
    let out = run_with_stdin(
        {
            let mut c = dagger_rs(&cache);
            c.args(["session", "--label", "novalue"]);
            c
        },
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("write it `key:value`"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "", "no handshake");
}

#[test]
fn run_forwards_the_exit_code() {
    let cache = cache();
    let out = dagger_rs(&cache)
        .args(["--quiet", "run", "--", "sh", "-c", "exit 3"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = dagger_rs(&cache)
        .args(["--quiet", "run", "sh", "-c", "kill -TERM $$"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(128 + 15), "a signal is reported as shells do");
}

#[test]
fn run_gives_the_command_a_session() {
    let cache = cache();
    // The child is a real client: it reads the variables and queries the engine with the token.
    let client = r#"
import base64, json, os, urllib.request
port, token = os.environ["DAGGER_SESSION_PORT"], os.environ["DAGGER_SESSION_TOKEN"]
req = urllib.request.Request(
    f"http://127.0.0.1:{port}/query",
    data=json.dumps({"query": "{version}"}).encode(),
    headers={"Content-Type": "application/json",
             "Authorization": "Basic " + base64.b64encode(f"{token}:".encode()).decode()},
)
print(json.load(urllib.request.urlopen(req))["data"]["version"])
"#;
    let out = dagger_rs(&cache)
        .args(["--quiet", "run", "python3", "-c", client])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("dagger-rs-engine v"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn run_says_clearly_when_the_command_is_missing() {
    let cache = cache();
    let out = dagger_rs(&cache)
        .args(["--quiet", "run", "dagger-rs-no-such-command"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(127));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot run `dagger-rs-no-such-command`: command not found"),
        "{err}"
    );
    let out = dagger_rs(&cache).arg("run").output().expect("run");
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(text(&out.stderr).contains("<COMMAND>"), "{}", text(&out.stderr));
}

const BUILD: &str = r#"{directory{withNewFile(path:"a.txt",contents:"x"){entries}}}"#;

#[test]
fn query_prints_the_data_of_a_document_from_the_argument_or_stdin() {
    let cache = cache();
    let expected = json!({"directory": {"withNewFile": {"entries": ["a.txt"]}}});
    let out = dagger_rs(&cache).args(["-q", "query", BUILD]).output().expect("query");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json_of(&text(&out.stdout)), expected);

    let mut cmd = dagger_rs(&cache);
    cmd.args(["-q", "query"]);
    let out = run_with_stdin(cmd, BUILD);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json_of(&text(&out.stdout)), expected);
}

#[test]
fn query_errors_go_to_stderr_and_fail() {
    let cache = cache();
    let out = dagger_rs(&cache)
        .args(["-q", "query", r#"{directory{file(path:"missing.txt"){contents}}}"#])
        .output()
        .expect("query");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("error at `directory.file.contents`") && err.contains("missing.txt"),
        "{err}"
    );
    assert_eq!(text(&out.stdout), "", "`data` is null: nothing to print");

    let out = dagger_rs(&cache)
        .args(["-q", "query", "{nope}"])
        .output()
        .expect("query");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));

    let mut cmd = dagger_rs(&cache);
    cmd.args(["-q", "query"]);
    let out = run_with_stdin(cmd, "  \n");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no query"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn serve_listens_on_the_given_address_with_the_given_token() {
    let cache = cache();
    let port = free_port();
    let mut child = dagger_rs(&cache)
        .args([
            "-q",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token",
            "s3cret",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let start = Instant::now();
    let (status, body) = loop {
        match reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/query"))
            .basic_auth("s3cret", Some(""))
            .body(json!({"query": "{version}"}).to_string())
            .send()
            .await
        {
            Ok(resp) => break (resp.status().as_u16(), resp.text().await.expect("body")),
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                let _ = child.kill();
                panic!("serve never answered: {e}");
            }
        }
    };
    assert_eq!(status, 200, "{body}");
    assert!(json_of(&body)["data"]["version"].is_string(), "{body}");
    assert_eq!(post(port, Some("other"), "{version}").await.0, 401);

    // Ctrl-C stops it cleanly.
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let status = wait_for_exit(&mut child, Duration::from_secs(20), "serve");
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(
        stderr.contains(&format!("serving on http://127.0.0.1:{port}/query")),
        "{stderr}"
    );
}

fn cache_size(cache: &tempfile::TempDir) -> u64 {
    let out = dagger_rs(cache).args(["cache", "info"]).output().expect("cache info");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    assert!(line.starts_with(&cache.path().display().to_string()), "{line}");
    line.trim()
        .rsplit(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("`<dir>: <n> bytes`: {line}"))
}

#[test]
fn cache_info_and_prune() {
    let cache = cache();
    let before = cache_size(&cache);
    let out = dagger_rs(&cache)
        .args(["-q", "query", r#"{directory{withNewFile(path:"big",contents:"0123456789"){withNewFile(path:"more",contents:"abcdefghij"){entries}}}}"#])
        .output()
        .expect("query");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let filled = cache_size(&cache);
    assert!(filled > before, "results were stored: {before} -> {filled}");

    let out = dagger_rs(&cache).args(["cache", "prune"]).output().expect("prune");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("freed "), "{}", text(&out.stdout));
    assert!(cache_size(&cache) < filled, "pruning frees space");

    let out = dagger_rs(&cache)
        .args(["cache", "prune", "--max-size", "12 parsecs"])
        .output()
        .expect("prune");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown size unit"), "{}", text(&out.stderr));
}

#[test]
fn progress_is_plain_lines_off_a_terminal_and_quiet_silences_it() {
    let cache = cache();
    let out = dagger_rs(&cache).args(["query", BUILD]).output().expect("query");
    let err = text(&out.stderr);
    assert!(
        err.contains("✔ withNewFile a.txt ["),
        "each operation by what it does: {err}"
    );
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.starts_with("✔ 1 run, 0 cached, 0 failed in ")),
        "a summary line ends it: {err}"
    );
    assert!(!err.contains('\x1b'), "no escape codes off a terminal: {err:?}");

    let out = dagger_rs(&cache)
        .args([
            "--progress",
            "tty",
            "query",
            r#"{directory{withNewFile(path:"b",contents:"y"){entries}}}"#,
        ])
        .output()
        .expect("query");
    let err = text(&out.stderr);
    assert!(err.contains("withNewFile b") && err.contains('\x1b'), "{err:?}");

    let out = dagger_rs(&cache)
        .args([
            "--quiet",
            "query",
            r#"{directory{withNewFile(path:"c",contents:"z"){entries}}}"#,
        ])
        .output()
        .expect("query");
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "");

    let out = dagger_rs(&cache)
        .args(["--progress", "fancy", "query", BUILD])
        .output()
        .expect("query");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("possible values: auto, plain, tty"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn report_writes_an_html_timeline_and_json_lines_and_the_summary_says_where() {
    let cache = cache();
    let dir = tempfile::tempdir().expect("dir");
    let html = dir.path().join("out/report.html");
    let out = dagger_rs(&cache)
        .arg("--report")
        .arg(&html)
        .args(["query", BUILD])
        .output()
        .expect("query");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.ends_with(&format!("· report: {}", html.display()))),
        "{err}"
    );
    let page = std::fs::read_to_string(&html).expect("the report");
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("data-op=\"Directory.withNewFile\""));
    let events = std::fs::read_to_string(dir.path().join("out/report.jsonl")).expect("the events");
    let kinds: Vec<String> = events
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            assert!(v["at"].as_u64().is_some(), "{l}");
            format!(
                "{} {}",
                v["op"].as_str().unwrap_or(""),
                v["kind"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        kinds.contains(&"Directory.withNewFile started".to_owned())
            && kinds.contains(&"Directory.withNewFile done".to_owned()),
        "{kinds:?}"
    );

    // The events make the same report again.
    let again = dir.path().join("again.html");
    let out = dagger_rs(&cache)
        .args(["report"])
        .arg(dir.path().join("out/report.jsonl"))
        .arg("--output")
        .arg(&again)
        .output()
        .expect("report");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 operations run, 0 cached, 0 failed"),
        "{}",
        text(&out.stdout)
    );
    let again = std::fs::read_to_string(&again).expect("the report again");
    assert!(again.contains("data-op=\"Directory.withNewFile\""));

    // The environment variable does the same; a path that cannot be written fails before anything runs.
    let from_env = dir.path().join("env.html");
    let out = dagger_rs(&cache)
        .env("DAGGER_RS_REPORT", &from_env)
        .args(["--quiet", "query", BUILD])
        .output()
        .expect("query");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(from_env.exists() && dir.path().join("env.jsonl").exists());
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, b"").expect("file");
    let out = dagger_rs(&cache)
        .arg("--report")
        .arg(blocked.join("report.html"))
        .args(["query", BUILD])
        .output()
        .expect("query");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("report file"), "{}", text(&out.stderr));
    assert!(text(&out.stdout).is_empty(), "nothing ran");
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &[][..],
        &["session"],
        &["run"],
        &["query"],
        &["serve"],
        &["report"],
        &["cache"],
        &["cache", "prune"],
        &["cache", "info"],
    ] {
        let out = Command::new(BIN).args(args).arg("--help").output().expect("help");
        let help = text(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(help.contains("Usage: dagger-rs"), "{args:?}: {help}");
        assert!(
            help.contains("--progress") && help.contains("--report"),
            "the global flags are listed for {args:?}: {help}"
        );
    }
    let top = text(&Command::new(BIN).arg("--help").output().expect("help").stdout);
    for sub in ["session", "run", "query", "serve", "report", "cache"] {
        assert!(top.contains(sub), "`{sub}` is listed: {top}");
    }
}

#[test]
fn the_configuration_file_is_read_and_its_errors_name_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_dir = dir.path().join("from-file");
    let file = dir.path().join("engine.json");
    std::fs::write(
        &file,
        serde_json::json!({ "cacheDir": cache_dir, "registryMirrors": { "docker.io": ["http://127.0.0.1:1"] } })
            .to_string(),
    )
    .expect("write config");
    let out = Command::new(BIN)
        .env("DAGGER_RS_CONFIG", &file)
        .env_remove("DAGGER_RS_CACHE_DIR")
        .args(["cache", "info"])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&cache_dir.display().to_string()),
        "{}",
        text(&out.stdout)
    );

    std::fs::write(&file, r#"{ "cacheDir": "/x", "runtime": "runc", "bogus": 1 }"#).expect("write config");
    let out = Command::new(BIN)
        .env("DAGGER_RS_CONFIG", &file)
        .args(["cache", "info"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&file.display().to_string()) && err.contains("bogus"),
        "{err}"
    );

    std::fs::write(&file, r#"{ "registryTimeout": "idle=soon" }"#).expect("write config");
    let out = Command::new(BIN)
        .env("DAGGER_RS_CONFIG", &file)
        .env_remove("DAGGER_RS_REGISTRY_TIMEOUT")
        .args(["cache", "info"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("registryTimeout") && err.contains("`soon`"), "{err}");

    let out = Command::new(BIN)
        .env("DAGGER_RS_CONFIG", dir.path().join("missing.json"))
        .args(["cache", "info"])
        .output()
        .expect("runs");
    assert!(!out.status.success(), "an explicitly named file must exist");
}

#[test]
fn serve_refuses_an_empty_token_from_the_flag_or_the_environment() {
    for (flag, env) in [(Some(""), None), (None, Some("")), (Some(" "), None)] {
        let cache = tempfile::tempdir().expect("cache");
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("--cache-dir")
            .arg(cache.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("DAGGER_SESSION_TOKEN")
            .stdin(std::process::Stdio::null());
        if let Some(t) = flag {
            cmd.args(["--token", t]);
        }
        if let Some(t) = env {
            cmd.env("DAGGER_SESSION_TOKEN", t);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let status = wait_for_exit(
            &mut child,
            Duration::from_secs(20),
            &format!("`serve` with token {flag:?} / env {env:?}"),
        );
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
        assert!(!status.success(), "{flag:?} / {env:?}: {stderr}");
        assert!(
            stderr.contains("token is empty") && stderr.contains("--token"),
            "{stderr}"
        );
    }
}
