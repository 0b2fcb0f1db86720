//! # dagger-engine — an embedded engine for the Dagger v0.21 protocol
//!
//! # Layout
//! Five layers, each using only its own and those below it:
//! - [`report`]: run reports (the events of a session as an HTML timeline and JSON lines) and the progress
//!   text people read, made from events alone;
//! - [`graphql`]: the HTTP server, the executor (generic over a resolver), input coercion, the served schema,
//!   and the core API as a resolver;
//! - `ops`: the engine of a session ([`Engine`], [`Config`]), one module per core type (directory, file,
//!   host, secret, cache volume, container, service), the field router, the value enum;
//! - `solver`: the call registry, evaluation with in-flight deduplication and the results cache, events;
//! - `worker`: the OCI runtime, snapshots, networking, running services, cache volumes, images ([`oci`]),
//!   cleanup;
//! - [`store`]: the on-disk, content-addressed cache directory;
//! - [`model`]: calls and digests, directory trees, the error type.
//!
//! A request flows `graphql::server` → `graphql::executor` → `graphql::resolver`; builders register a
//! [`model::ids::Call`] and return its digest as the object's ID; leaves ask `Engine::eval`, which has the
//! `solver::Solver` compute each call once (`ops::router::compute`) and keep results in memory and in the
//! [`store::Store`].

pub mod graphql;
pub mod model;
pub(crate) mod ops;
pub mod report;
pub(crate) mod solver;
pub mod store;
pub(crate) mod worker;

pub use graphql::{schema, server};
pub use model::{ids, tree};
pub use ops::engine::{Config, ConfigError, Engine};
pub use solver::events::{EdgeKind, Event, EventKind, GraphEdge, GraphNode, NodeKind, OpInfo, PipelineGraph, Role};
/// Running the engine without root, as root of a user namespace (see the module's documentation).
pub use worker::userns as rootless;
pub use worker::{cleanup, network, oci, runtime, snapshot};

/// Where the engine's session types were before the layers: `engine::{Config, Engine, Event, EventKind}`.
pub mod engine {
    pub use crate::ops::engine::{Config, ConfigError, Engine};
    pub use crate::solver::events::{Event, EventKind};
}

/// A running in-process session: its port and token, and the handle that stops it.
pub struct Session {
    /// The loopback port it listens on.
    pub port: u16,
    /// The session token.
    pub token: String,
    /// The engine behind it.
    pub engine: std::sync::Arc<Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Session {
    /// Starts an engine and serves it on `127.0.0.1:0` with a random token, in the current tokio runtime.
    pub async fn start(config: Config) -> std::io::Result<Session> {
        Self::start_with_token(config, server::random_token()).await
    }

    /// Starts an engine and serves it on `127.0.0.1:0` with `token`, in the current tokio runtime.
    ///
    /// An empty token is refused ([`server::TokenError::Empty`]): it would let any local client in.
    pub async fn start_with_token(config: Config, token: String) -> std::io::Result<Session> {
        server::check_token(&token).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let engine = Engine::new(config).map_err(std::io::Error::other)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Session::serve(listener, token, engine)
    }

    /// Serves `engine` on `listener` with `token`, in the current tokio runtime. An empty token is refused,
    /// as by [`Session::start_with_token`].
    pub fn serve(
        listener: tokio::net::TcpListener,
        token: String,
        engine: std::sync::Arc<Engine>,
    ) -> std::io::Result<Session> {
        server::check_token(&token).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let port = listener.local_addr()?.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve_engine = engine.clone();
        let serve_token = token.clone();
        let server = tokio::spawn(async move {
            let _ = server::run(listener, serve_token, serve_engine, async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(Session {
            port,
            token,
            engine,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// Stops the session for a process that is about to exit (the CLI on `SIGTERM`, `SIGINT` or end of
    /// input): stops accepting connections, kills the running containers, waits up to `grace` for the
    /// requests in flight to end, then removes what this process still has in the cache directory and on the
    /// host (see [`cleanup::stop`]).
    pub async fn shutdown(mut self, grace: std::time::Duration) -> cleanup::Collected {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.engine.stop_containers().await;
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(grace, server).await;
        }
        cleanup::stop(&self.engine.store)
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Session {
    /// The session ends: the server stops accepting requests and every container the engine runs (execs and
    /// services) is killed now. The engine itself may live on a little in tasks that hold it, but nothing it
    /// started outlives the session — not even when the cache directory is removed right after (a test's
    /// temporary directory), which would leave the runtime unable to find its containers later.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            self.engine.stop_containers_now();
        }
    }
}
