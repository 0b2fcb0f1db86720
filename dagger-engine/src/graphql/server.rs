//! The HTTP side: `POST /query` on loopback, guarded by the session token.
//!
//! `run(listener, token, engine, shutdown)` takes everything it needs, so tests bind `127.0.0.1:0` and the
//! CLI and the SDK's embedded mode share it.
//!
//! Every request is authenticated from its headers before its body is read, so an unauthenticated client
//! costs no buffering; every answer that is not a GraphQL response (401, 404, 405, 413, 400) still carries a
//! GraphQL-style `{"errors":[{"message":…}]}` body. A request whose client disconnects stops executing: the
//! execution is dropped, and with it every evaluation no other request is waiting for.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::net::TcpListener;

use crate::graphql::executor::Request;
use crate::ops::engine::Engine;

/// The largest request body accepted (413 above it).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// The stack each request executes on: every chained call is one level of nesting.
const EXEC_STACK: usize = 256 * 1024 * 1024;

/// A session token that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is empty (or only white space): it would let any local client in.
    #[error(
        "the session token is empty, which would let any local client use the engine: give a non-empty \
         token (`--token`, DAGGER_SESSION_TOKEN) or leave both unset for a random one"
    )]
    Empty,
}

/// Checks that `token` can guard a session: it must not be empty.
pub fn check_token(token: &str) -> Result<(), TokenError> {
    if token.trim().is_empty() {
        return Err(TokenError::Empty);
    }
    Ok(())
}

#[derive(Clone)]
struct AppState {
    engine: Arc<Engine>,
    /// The SHA-256 of the only accepted basic-auth credentials, `TOKEN:` (compared in constant time).
    expected: [u8; 32],
}

/// Serves the session until `shutdown` completes.
///
/// Fails at once, serving nothing, when `token` is empty (see [`check_token`]).
pub async fn run(
    listener: TcpListener,
    token: String,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    check_token(&token).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let state = AppState {
        engine,
        expected: sha256(format!("{token}:").as_bytes()),
    };
    let app = Router::new()
        .route("/query", post(query))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        // Around every route and fallback: nothing is read, routed or answered before the token is checked.
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// Whether two digests are equal, looking at every byte whatever the first difference.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether the request carries `Authorization: Basic base64(TOKEN:)` (the scheme name in any case).
///
/// The credentials are hashed and the digests compared without an early exit, so the time taken says
/// nothing about how much of a guess was right (nor about the token's length).
fn authorized(headers: &HeaderMap, expected: &[u8; 32]) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    // The token is the user name; the password is empty.
    same_digest(&sha256(&decoded), expected)
}

fn graphql_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "errors": [{ "message": message.into() }] }))).into_response()
}

/// Rejects a request without the session token before anything else looks at it (its body is never read).
async fn authenticate(State(state): State<AppState>, request: HttpRequest, next: Next) -> Response {
    if !authorized(request.headers(), &state.expected) {
        let mut response = graphql_error(
            StatusCode::UNAUTHORIZED,
            "wrong or missing session token: authenticate with HTTP basic auth, the token as user name and an \
             empty password",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"dagger\""),
        );
        return response;
    }
    next.run(request).await
}

async fn method_not_allowed(request: HttpRequest) -> Response {
    let mut response = graphql_error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed here: send GraphQL requests as POST /query",
            request.method()
        ),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    response
}

async fn not_found(request: HttpRequest) -> Response {
    graphql_error(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint `{}`: send GraphQL requests as POST /query",
            request.uri().path()
        ),
    )
}

fn too_large() -> Response {
    graphql_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than {MAX_BODY} bytes (server::MAX_BODY): send a smaller query, and large inputs as files or directories"
        ),
    )
}

/// The body, read up to [`MAX_BODY`] bytes; the error response otherwise.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| graphql_error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")))?;
        if out.len() + chunk.len() > MAX_BODY {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn query(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let req: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return graphql_error(
                StatusCode::BAD_REQUEST,
                format!("the request body is not a GraphQL JSON request ({e}); send {{\"query\": \"…\"}}"),
            );
        }
    };
    drop(body);
    // The client's trace context, when it sends a well-formed one: the spans of what this request runs are
    // its children.
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| crate::solver::events::valid_traceparent(v))
        .map(str::to_owned);
    let engine = state.engine.clone();
    engine.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let handle = tokio::runtime::Handle::current();
    let (mut tx, rx) = tokio::sync::oneshot::channel();
    // Deep chains nest deeply: execute on a thread with a large stack (committed only as used).
    let spawned = std::thread::Builder::new()
        .name("dagger-rs-exec".into())
        .stack_size(EXEC_STACK)
        .spawn(move || {
            handle.block_on(async move {
                // When the client goes away, hyper drops this handler and with it `rx`: stop executing. The
                // execution is dropped here, on the large stack, as deep as it nests.
                let execution = crate::solver::events::with_traceparent(
                    traceparent,
                    crate::graphql::resolver::execute(&engine, req),
                );
                let response = tokio::select! {
                    response = execution => response,
                    () = tx.closed() => return,
                };
                // Serialized (and dropped) here too: a deep chain is a deep response.
                let _ = tx.send(serde_json::to_vec(&response));
                drop(response);
            });
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
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_32_hex_characters_and_differ() {
        let tokens: std::collections::HashSet<String> = (0..16).map(|_| random_token()).collect();
        assert_eq!(tokens.len(), 16);
        for t in &tokens {
            assert_eq!(t.len(), 32);
            assert!(t.bytes().all(|b| b.is_ascii_hexdigit()), "{t}");
            assert!(check_token(t).is_ok());
        }
    }
}
