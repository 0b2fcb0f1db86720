//! A stand-in for an engine CLI, for provisioning tests: `fake-cli session [--label …] [--workdir …]`.
//!
//! The `FAKE_CLI_MODE` variable picks its behaviour:
//! - `serve` (default): serve GraphQL on `127.0.0.1:0` (answering `version` with `fake-cli`), print the
//!   one-line handshake, and exit when stdin closes;
//! - `exit-early`: write to stderr and exit with code 3 before any handshake;
//! - `hang`: print nothing and wait forever;
//! - `garbage`: print a line that is not a handshake.
//!
//! With `FAKE_CLI_LOG=<file>`, it appends its arguments, and `stdin closed` when its stdin closes.

use std::io::Write;

use serde_json::json;
use testkit::FakeEngine;
use tokio::io::AsyncReadExt;

fn log(line: &str) {
    if let Ok(path) = std::env::var("FAKE_CLI_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    log(&format!("args: {}", args.join(" ")));
    match std::env::var("FAKE_CLI_MODE").as_deref().unwrap_or("serve") {
        "exit-early" => {
            eprintln!("fake-cli: cannot start the engine: no runtime found");
            std::process::exit(3);
        }
        "hang" => {
            eprintln!("fake-cli: starting…");
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
        "garbage" => {
            println!("Welcome to the engine!");
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
        _ => {
            let token = "fake-cli-token";
            let engine = FakeEngine::graphql(token, |_| json!("fake-cli")).await;
            eprintln!("fake-cli: engine up");
            println!("{}", json!({ "port": engine.port, "session_token": token }));
            let mut stdin = tokio::io::stdin();
            let mut buf = Vec::new();
            let _ = stdin.read_to_end(&mut buf).await;
            log("stdin closed");
        }
    }
}
