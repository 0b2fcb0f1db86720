//! Opening a session: [`connect`] for the common case, [`Connection::builder`] for options.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::Query;
use crate::core::{Ctx, Object};
use crate::engineconn::{self, Options};
use crate::error::Error;
use crate::logs::{LogSink, Logs, StderrLogs};
use crate::querybuilder::Selection;
use crate::transport::Transport;

/// Opens a session, runs `f` with its [`Query`] root, and closes the session when `f` is done.
///
/// The session is found as [`ConnectionBuilder::connect`] describes. `f` may return any error type that a
/// [`dagger::Error`](Error) converts into (`anyhow::Error`, `Box<dyn Error>`, or `dagger::Error` itself), so
/// `?` works on every leaf inside it.
///
/// ```no_run
/// # async fn demo() -> Result<(), dagger::Error> {
/// let out = dagger::connect(|dag| async move {
///     dag.container()
///         .from("alpine:3.20")
///         .with_exec(["echo", "hello"])
///         .stdout()
///         .await
/// })
/// .await?;
/// assert_eq!(out, "hello\n");
/// # Ok(()) }
/// ```
pub async fn connect<F, Fut, T, E>(f: F) -> Result<T, E>
where
    F: FnOnce(Query) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<Error>,
{
    let conn = Connection::builder().connect().await?;
    let out = f(conn.query()).await;
    conn.close();
    out
}

/// An open session with an engine.
///
/// The session stays open while the connection or any object built from its [`Query`] is alive; dropping
/// the last of them ends it (a CLI-started session is asked to shut down by closing its stdin).
#[derive(Debug)]
pub struct Connection {
    query: Query,
}

impl Connection {
    /// Options for opening a connection.
    pub fn builder() -> ConnectionBuilder {
        ConnectionBuilder::default()
    }

    /// The root of the API: every pipeline starts here. Cheap to clone, `Send + Sync`.
    pub fn query(&self) -> Query {
        self.query.clone()
    }

    /// The `/query` URL of the session.
    pub fn url(&self) -> &str {
        self.query.ctx().client.as_ref().map(|c| c.url()).unwrap_or_default()
    }

    /// Closes this handle. The session ends once objects built from it are dropped too.
    pub fn close(self) {}
}

/// Builds a [`Connection`]: where to find the engine, and where its logs go.
#[derive(Clone)]
pub struct ConnectionBuilder {
    opts: Options,
    logs: Logs,
}

impl Default for ConnectionBuilder {
    fn default() -> Self {
        Self {
            opts: Options::default(),
            logs: Logs(Some(Arc::new(StderrLogs))),
        }
    }
}

impl std::fmt::Debug for ConnectionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionBuilder")
            .field("cli_bin", &self.opts.cli_bin)
            .field("cli_timeout", &self.opts.cli_timeout)
            .field("workdir", &self.opts.workdir)
            .field("report", &self.opts.report)
            .field("logs", &self.logs)
            .finish_non_exhaustive()
    }
}

impl ConnectionBuilder {
    /// Connects to a running session at `url` (`http://127.0.0.1:PORT`) with its session token, skipping
    /// every other strategy.
    pub fn endpoint(mut self, url: impl Into<String>, token: impl Into<String>) -> Self {
        self.opts.endpoint = Some((url.into(), token.into()));
        self
    }

    /// Uses this engine CLI (started as `<bin> session`) instead of `_EXPERIMENTAL_DAGGER_CLI_BIN` or `dagger`
    /// on `PATH`. An explicit endpoint and `DAGGER_SESSION_PORT` still come first.
    pub fn cli_bin(mut self, bin: impl Into<PathBuf>) -> Self {
        self.opts.cli_bin = Some(bin.into());
        self
    }

    /// How long to wait for a started CLI's handshake (default: 300 s, as a first start may pull images).
    pub fn cli_timeout(mut self, timeout: Duration) -> Self {
        self.opts.cli_timeout = timeout;
        self
    }

    /// The working directory a started CLI session resolves host paths against (`--workdir`).
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.opts.workdir = Some(dir.into());
        self
    }

    /// Whether to start the engine in-process when no other session is found (default: on, with the
    /// `embedded` feature; `DAGGER_RS_EMBEDDED=0` also turns it off).
    pub fn embedded(mut self, on: bool) -> Self {
        self.opts.embedded = on;
        self
    }

    /// Writes a report of the session's run to `path` when the session ends: one self-contained HTML file
    /// (a timeline of every operation, its arguments with secrets as `***`, its logs and errors, a summary)
    /// and its events as JSON lines beside it (`path` with the extension `.jsonl`). The path is also logged,
    /// with a summary line.
    ///
    /// The embedded engine writes it (`DAGGER_RS_REPORT=path` does the same without code); a `dagger-rs
    /// session` started by the SDK is asked to through that variable; a session found through
    /// `DAGGER_SESSION_PORT` writes one only when its own command line asks (`dagger-rs run --report`).
    pub fn report(mut self, path: impl Into<PathBuf>) -> Self {
        self.opts.report = Some(path.into());
        self
    }

    /// Sends session logs (the CLI's stderr, engine progress) to `sink` instead of standard error.
    pub fn log_sink(mut self, sink: impl LogSink + 'static) -> Self {
        self.logs = Logs(Some(Arc::new(sink)));
        self
    }

    /// Drops session logs.
    pub fn quiet(mut self) -> Self {
        self.logs = Logs(None);
        self
    }

    /// Opens the session, trying in order: the explicit [`endpoint`](Self::endpoint);
    /// `DAGGER_SESSION_PORT` + `DAGGER_SESSION_TOKEN`; an engine CLI ([`cli_bin`](Self::cli_bin),
    /// `_EXPERIMENTAL_DAGGER_CLI_BIN`, or `dagger` on `PATH`) started as `session`; the engine started in
    /// this process (feature `embedded`).
    ///
    /// A strategy that applies but fails is an error at once ([`SessionError`](crate::SessionError)); when
    /// none applies, the error lists what was tried. No request is sent until the first leaf runs.
    pub async fn connect(self) -> Result<Connection, Error> {
        let session = engineconn::provision(&self.opts, &engineconn::process_env, &self.logs).await?;
        let transport = Transport::new(&session.endpoint.base, session.endpoint.token, session.keepalive)?;
        let ctx = Ctx::new(Selection::root(), Some(Arc::new(transport)));
        Ok(Connection {
            query: Query::from_ctx(ctx),
        })
    }
}

impl Query {
    /// A root that is not connected to any engine.
    ///
    /// Pipelines built from it can be printed (through [`Object::selection`](crate::Object::selection), or a
    /// pipeline's `plan()`), but their leaves fail with [`Error::NotConnected`]. Useful for offline plans and
    /// snapshot tests.
    pub fn detached() -> Self {
        Query::from_ctx(Ctx::default())
    }
}
