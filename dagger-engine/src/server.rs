//! The HTTP side: `POST /query` on loopback, guarded by the session token.
//!
//! `run(listener, token, engine, shutdown)` takes everything it needs, so tests bind `127.0.0.1:0` and the
//! CLI and the SDK's embedded mode share it.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::json;
use tokio::net::TcpListener;

use crate::engine::Engine;
use crate::exec::{self, Request};

/// The largest request body accepted (413 above it).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// The stack each request executes on: every chained call is one level of nesting.
const EXEC_STACK: usize = 256 * 1024 * 1024;

#[derive(Clone)]
struct AppState {
    engine: Arc<Engine>,
    token: Arc<str>,
}

/// Serves the session until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    token: String,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState {
        engine,
        token: token.into(),
    };
    let app = Router::new()
        .route("/query", post(query))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    // The token is the user name; the password is empty.
    decoded == format!("{token}:").as_bytes()
}

fn graphql_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "errors": [{ "message": message.into() }] }))).into_response()
}

async fn query(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers, &state.token) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"dagger\"")],
            "wrong or missing session token: authenticate with HTTP basic auth, the token as user name\n",
        )
            .into_response();
    }
    let req: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return graphql_error(
                StatusCode::BAD_REQUEST,
                format!("the request body is not a GraphQL JSON request ({e}); send {{\"query\": \"…\"}}"),
            );
        }
    };
    let engine = state.engine.clone();
    engine.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Deep chains nest deeply: execute on a thread with a large stack (committed only as used).
    let spawned = std::thread::Builder::new()
        .name("dagger-rs-exec".into())
        .stack_size(EXEC_STACK)
        .spawn(move || {
            let response = handle.block_on(exec::execute(&engine, req));
            // Serialized (and dropped) here too: a deep chain is a deep response.
            let _ = tx.send(serde_json::to_vec(&response));
            drop(response);
        });
    if let Err(e) = spawned {
        return graphql_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot start an execution thread: {e}"),
        );
    }
    match rx.await {
        Ok(Ok(body)) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(e)) => graphql_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: cannot write the response: {e}"),
        ),
        Err(_) => graphql_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the execution thread stopped",
        ),
    }
}

/// A random session token (32 hex characters from the operating system's random source).
pub fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !ok {
        // Fall back to time and process identity: weaker, but the server only listens on loopback.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes[..8].copy_from_slice(&(t as u64).to_le_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
