//! The engine under test, as its own process: `dagger-rs serve` on a loopback port, so its memory can be read
//! from `/proc` and its runtime and network chosen with environment variables, apart from the harness.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dagger::prelude::*;

/// How to start one engine.
#[derive(Clone, Debug)]
pub(crate) struct EngineOpts {
    /// `runc` or `crun`.
    pub(crate) runtime: &'static str,
    /// `DAGGER_RS_NETWORK=none`: loopback-only namespaces instead of the bridge.
    pub(crate) network_none: bool,
    /// `DAGGER_RS_SNAPSHOTTER` (`overlay`, `copy`); `None` leaves the engine's own choice.
    pub(crate) snapshotter: Option<&'static str>,
    pub(crate) cache_dir: PathBuf,
    pub(crate) workdir: PathBuf,
    /// Where the engine writes its progress events, one JSON object a line (`--events`).
    pub(crate) events: Option<PathBuf>,
}

/// An ordinary user to run an engine as (rootless mode): the engine binary re-runs itself in a user namespace.
#[derive(Clone, Debug)]
pub(crate) struct RunAs {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// A running `dagger-rs serve`, stopped (SIGINT, then SIGKILL) on [`EngineProc::stop`] or drop.
pub(crate) struct EngineProc {
    child: tokio::process::Child,
    pub(crate) port: u16,
    pub(crate) token: String,
    pub(crate) pid: u32,
    veths_before: BTreeSet<String>,
}

/// The engine's host-side veth devices (`drsv…`) present now.
fn engine_veths() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("drsv"))
                .collect()
        })
        .unwrap_or_default()
}

/// The `dagger-rs` binary next to this one; built with cargo first (a no-op when it is up to date).
pub(crate) fn engine_binary(workspace: &Path) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    let dir = exe.parent().ok_or("the bench binary has no directory")?.to_owned();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--quiet", "-p", "dagger-cli", "--bin", "dagger-rs"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| format!("cargo build of dagger-rs: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of dagger-rs failed ({status})"));
    }
    let bin = dir.join("dagger-rs");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} was not built", bin.display()))
    }
}

pub(crate) fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl EngineProc {
    pub(crate) async fn start(bin: &Path, opts: &EngineOpts, log: &Path) -> Result<Self, String> {
        Self::start_as(bin, opts, log, None).await
    }

    /// [`EngineProc::start`], as `user` when given: with that user's IDs (no supplementary groups) and a clean
    /// environment (`HOME`, `USER`, `PATH`), as a login would give it. `bin`, the cache directory and the work
    /// directory must be the user's to use.
    pub(crate) async fn start_as(
        bin: &Path,
        opts: &EngineOpts,
        log: &Path,
        user: Option<&RunAs>,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(&opts.cache_dir).map_err(|e| format!("{}: {e}", opts.cache_dir.display()))?;
        let port = free_port()?;
        let token = format!("bench-{}", std::process::id());
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("--quiet").arg("--cache-dir").arg(&opts.cache_dir);
        if let Some(events) = &opts.events {
            cmd.arg("--events").arg(events);
        }
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--token", &token])
            .arg("--workdir")
            .arg(&opts.workdir)
            .env("DAGGER_RS_RUNTIME", opts.runtime)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .kill_on_drop(true);
        if let Some(u) = user {
            // std drops root's supplementary groups when it changes the uid.
            cmd.env_clear()
                .env("HOME", format!("/home/{}", u.name))
                .env("USER", &u.name)
                .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin")
                .env("TMPDIR", "/tmp")
                .env("DAGGER_RS_RUNTIME", opts.runtime)
                .uid(u.uid)
                .gid(u.gid);
        }
        match opts.snapshotter {
            Some(s) => cmd.env("DAGGER_RS_SNAPSHOTTER", s),
            None => cmd.env_remove("DAGGER_RS_SNAPSHOTTER"),
        };
        if opts.network_none {
            cmd.env("DAGGER_RS_NETWORK", "none");
        } else {
            cmd.env_remove("DAGGER_RS_NETWORK");
        }
        let veths_before = engine_veths();
        let mut child = cmd.spawn().map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("the engine exited at once")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the engine exited ({status}) before serving:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                return Err("the engine did not listen within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            child,
            port,
            token,
            pid,
            veths_before,
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client connected to this engine (or to `url`, a proxy in front of it).
    pub(crate) async fn client_at(&self, url: &str) -> Result<Query, String> {
        Connection::builder()
            .endpoint(url, self.token.clone())
            .quiet()
            .connect()
            .await
            .map(|c| c.query())
            .map_err(|e| format!("connecting to the engine: {e}"))
    }

    pub(crate) async fn client(&self) -> Result<Query, String> {
        self.client_at(&self.url()).await
    }

    /// One GraphQL request sent over plain HTTP (basic auth: the token as user name, an empty password), without
    /// the SDK; returns the response body as text. For documents too deep for a JSON parser's recursion limit.
    pub(crate) async fn post_query(&self, document: &str) -> Result<String, String> {
        let body = serde_json::to_vec(&serde_json::json!({ "query": document })).map_err(|e| e.to_string())?;
        let response = reqwest::Client::new()
            .post(format!("{}/query", self.url()))
            .basic_auth(&self.token, Some(""))
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(|e| format!("POST /query: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("reading the response: {e}"))?;
        if !status.is_success() {
            let head: String = text.chars().take(300).collect();
            return Err(format!("POST /query answered {status}: {head}"));
        }
        Ok(text)
    }

    /// Kills the engine with SIGKILL, as a crash would (it cleans nothing up), and waits for it to be gone.
    pub(crate) async fn kill(mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait().await;
    }

    /// Stops the engine: SIGINT (it shuts down gracefully), SIGKILL after 10 s.
    pub(crate) async fn stop(mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        // The kernel removes a deleted namespace's veth pair asynchronously; an engine started right after
        // this one may hand out the same address and name (`drsv<n>`) and fail with "File exists". Wait for
        // this engine's devices to be gone (see the findings in BENCHMARKS.md).
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && engine_veths().difference(&self.veths_before).next().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
