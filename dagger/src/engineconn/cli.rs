//! Strategy 3: start an engine CLI as `<cli> session` and read its one-line JSON handshake.
//!
//! The CLI comes from the connection builder, `_EXPERIMENTAL_DAGGER_CLI_BIN`, or `dagger` on `PATH`. It prints
//! `{"port":N,"session_token":"…"}` on stdout, logs on stderr, and lives until its stdin is closed: dropping
//! the [`CliGuard`] closes it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use super::{Endpoint, EnvLookup, Options};
use crate::error::SessionError;
use crate::logs::Logs;

/// How many stderr lines are kept for an error message.
const STDERR_TAIL: usize = 40;

/// Keeps the CLI session alive; dropping it closes the CLI's stdin, which ends the session.
///
/// The child is not killed: it shuts down cleanly on its own once stdin closes, and tokio reaps it.
pub(crate) struct CliGuard {
    _stdin: ChildStdin,
    _child: Child,
}

#[derive(Deserialize)]
struct Handshake {
    port: u16,
    session_token: String,
}

/// The CLI to start, or why there is none.
pub(crate) fn find(opts: &Options, env: EnvLookup<'_>) -> Result<PathBuf, String> {
    if let Some(bin) = &opts.cli_bin {
        return Ok(bin.clone());
    }
    if let Some(bin) = env("_EXPERIMENTAL_DAGGER_CLI_BIN") {
        return Ok(PathBuf::from(bin));
    }
    match env("PATH") {
        Some(path) => std::env::split_paths(&path)
            .map(|dir| dir.join("dagger"))
            .find(|candidate| is_executable(candidate))
            .ok_or_else(|| "an engine CLI: _EXPERIMENTAL_DAGGER_CLI_BIN is not set and no `dagger` is on PATH".into()),
        None => Err("an engine CLI: _EXPERIMENTAL_DAGGER_CLI_BIN and PATH are not set".into()),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Starts `bin session …` and waits for its handshake.
pub(crate) async fn start(bin: &Path, opts: &Options, logs: &Logs) -> Result<(Endpoint, CliGuard), SessionError> {
    let mut cmd = Command::new(bin);
    cmd.arg("session")
        .arg("--label")
        .arg("dagger.io/sdk.name:rust")
        .arg("--label")
        .arg(concat!("dagger.io/sdk.version:", env!("CARGO_PKG_VERSION")));
    if let Some(dir) = &opts.workdir {
        cmd.arg("--workdir").arg(dir);
    }
    // A report asked of the builder: `dagger-rs session` reads the variable (other CLIs ignore it).
    if let Some(report) = &opts.report {
        cmd.env(super::REPORT_ENV, report);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| SessionError::CliSpawn {
        bin: bin.to_owned(),
        source,
    })?;
    let io_err = |source| SessionError::CliIo {
        bin: bin.to_owned(),
        source,
    };
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| io_err(std::io::Error::other("no stdin pipe")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io_err(std::io::Error::other("no stdout pipe")))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| io_err(std::io::Error::other("no stderr pipe")))?;

    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let stderr_task = forward_stderr(stderr, logs.clone(), tail.clone());
    let mut lines = BufReader::new(stdout).lines();

    let first = tokio::time::timeout(opts.cli_timeout, lines.next_line()).await;
    let line = match first {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => {
            // stdout closed: the CLI is exiting; report how it ended and what it said.
            let status = match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                Ok(Ok(status)) => status.to_string(),
                Ok(Err(e)) => format!("status unknown: {e}"),
                Err(_) => "closed its stdout but kept running".to_owned(),
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
            return Err(SessionError::CliExited {
                bin: bin.to_owned(),
                status,
                stderr: joined(&tail),
            });
        }
        Ok(Err(e)) => return Err(io_err(e)),
        Err(_) => {
            let _ = child.kill().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
            return Err(SessionError::CliTimeout {
                bin: bin.to_owned(),
                timeout: opts.cli_timeout,
                stderr: joined(&tail),
            });
        }
    };

    let handshake: Handshake = match serde_json::from_str(line.trim()) {
        Ok(h) => h,
        Err(e) => {
            let _ = child.kill().await;
            return Err(SessionError::CliHandshake {
                bin: bin.to_owned(),
                line: line.chars().take(200).collect(),
                reason: e.to_string(),
            });
        }
    };

    // Drain anything else the CLI prints so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    Ok((
        Endpoint {
            base: format!("http://127.0.0.1:{}", handshake.port),
            token: handshake.session_token,
        },
        CliGuard {
            _stdin: stdin,
            _child: child,
        },
    ))
}

/// Forwards the CLI's stderr to the log sink, keeping the last lines for error messages.
fn forward_stderr(
    stderr: impl AsyncRead + Unpin + Send + 'static,
    logs: Logs,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            logs.line(&line);
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    })
}

fn joined(tail: &Mutex<VecDeque<String>>) -> String {
    tail.lock()
        .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}
