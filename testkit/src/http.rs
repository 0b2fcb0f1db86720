//! The HTTP server under the fakes ([`crate::FakeEngine`], [`crate::registry::FakeRegistry`]): axum on a free
//! `127.0.0.1` port, every method and path going to one synchronous handler that sees the whole request.
//!
//! The handler runs on tokio's blocking pool, so a handler that waits (for another request, say) holds no
//! runtime worker. The server stops accepting connections when the [`FakeServer`] is dropped.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;

/// One request as a fake server received it.
#[derive(Clone, Debug)]
pub struct RawRequest {
    /// `GET`, `POST`, `HEAD`, …
    pub method: String,
    /// The request target: the path and query, such as `/v2/app/manifests/latest`.
    pub target: String,
    /// The protocol version, such as `HTTP/1.1`.
    pub version: String,
    /// Header names (lowercase) and values; of a repeated header, the last value.
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

/// What a fake server answers: status, headers, body.
#[derive(Clone, Debug)]
pub struct RawReply {
    /// The status code.
    pub status: u16,
    /// Header names and values, sent as given (`content-length` comes from the body).
    pub headers: Vec<(String, String)>,
    /// The body (not sent for `HEAD`).
    pub body: Vec<u8>,
}

/// A handler: the server's own port (for answers that point back at it) and the whole request in, the whole
/// answer out.
type RawHandler = Arc<dyn Fn(u16, RawRequest) -> RawReply + Send + Sync>;

/// An axum server on loopback, serving until dropped.
pub struct FakeServer {
    /// The port it listens on.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// Binds `127.0.0.1:0` and serves every request with `handler`, which also gets the server's port.
    /// Panics when it cannot bind: a test cannot go on without its server.
    pub async fn start(handler: impl Fn(u16, RawRequest) -> RawReply + Send + Sync + 'static) -> Self {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind 127.0.0.1:0: {e}"),
        };
        let port = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(e) => panic!("the fake server's address: {e}"),
        };
        let handler: RawHandler = Arc::new(handler);
        let app = axum::Router::new().fallback(move |req: Request| answer(handler.clone(), port, req));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake server on 127.0.0.1:{port}: {e}");
            }
        });
        Self { port, task }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(handler: RawHandler, port: u16, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b.to_vec(),
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("fake server: reading the body: {e}")),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let request = RawRequest {
        method: parts.method.as_str().to_owned(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.to_string(), |p| p.as_str().to_owned()),
        version: format!("{:?}", parts.version),
        headers,
        body,
    };
    let reply = match tokio::task::spawn_blocking(move || handler(port, request)).await {
        Ok(r) => r,
        Err(e) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("fake server: the test's handler failed: {e}"),
            );
        }
    };
    let mut response = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        response = response.header(k.as_str(), v.as_str());
    }
    match response.body(Body::from(reply.body)) {
        Ok(r) => r,
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("fake server: the test's reply is not valid HTTP: {e}"),
        ),
    }
}

fn plain(status: StatusCode, message: String) -> Response {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    response
}
