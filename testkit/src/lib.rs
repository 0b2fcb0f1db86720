//! Test fixtures shared by the test suites (`dagger-engine`, `dagger-cli` and `tests` dev-depend on this crate).
//!
//! [`FakeEngine`] is a real HTTP/1.1 server on `127.0.0.1:0` (axum, see [`http`]) that records every request
//! and answers with a handler the test chooses; [`auto_reply`] builds a `data` object shaped like any query
//! document, so tests can answer chains without spelling out the nesting. [`registry`] holds the image
//! fixtures: a real registry on loopback, a busybox image, and a scriptable fake registry; [`images`] keeps the
//! long-running offline registry on `127.0.0.1:5000` with Debian images that stand in for Docker Hub's.
//! [`start_engine`] and [`connect_to`] start an in-process engine and connect the SDK to it; [`process`] holds
//! helpers for tests that run programs (free ports, waiting for exits, finding processes); [`users`] makes the
//! ordinary users the rootless tests run as.

pub mod http;
pub mod images;
pub mod process;
pub mod registry;
pub mod users;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use crate::http::{FakeServer, RawReply, RawRequest};

/// Starts an in-process engine with `config` and connects the SDK to it (quietly). Panics when either fails:
/// a test cannot go on without its engine.
pub async fn start_engine(config: dagger_engine::Config) -> (dagger_engine::Session, dagger::Query) {
    let session = match dagger_engine::Session::start(config).await {
        Ok(s) => s,
        Err(e) => panic!("the engine does not start: {e}"),
    };
    let dag = connect_to(&session).await;
    (session, dag)
}

/// Connects the SDK (quietly) to a running in-process engine.
pub async fn connect_to(session: &dagger_engine::Session) -> dagger::Query {
    match dagger::Connection::builder()
        .endpoint(session.url(), session.token.clone())
        .quiet()
        .connect()
        .await
    {
        Ok(c) => c.query(),
        Err(e) => panic!("cannot connect to the engine: {e}"),
    }
}

/// One request the fake engine received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Request line, such as `POST /query HTTP/1.1`.
    pub request_line: String,
    /// Header names (lowercase) and values.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: String,
}

impl Recorded {
    /// The `query` string of a GraphQL JSON body.
    pub fn document(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("query").and_then(|q| q.as_str()).map(str::to_owned))
            .unwrap_or_default()
    }
}

impl From<RawRequest> for Recorded {
    fn from(req: RawRequest) -> Self {
        Self {
            request_line: format!("{} {} {}", req.method, req.target, req.version),
            headers: req.headers,
            body: String::from_utf8_lossy(&req.body).into_owned(),
        }
    }
}

/// An answer: status, content type, body.
pub type Reply = (u16, &'static str, String);

/// A real HTTP server on loopback that records requests and answers with a handler.
pub struct FakeEngine {
    /// The port it listens on.
    pub port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    _server: FakeServer,
}

impl FakeEngine {
    /// Starts a server answering every request with `handler`.
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let server = FakeServer::start(move |_port, raw: RawRequest| {
            let req = Recorded::from(raw);
            recorded.lock().expect("lock").push(req.clone());
            let (status, content_type, body) = handler(&req);
            RawReply {
                status,
                headers: vec![("content-type".to_owned(), content_type.to_owned())],
                body: body.into_bytes(),
            }
        })
        .await;
        Self {
            port: server.port,
            requests,
            _server: server,
        }
    }

    /// A server that answers every query with [`auto_reply`] and `leaf`, after checking the token.
    pub async fn graphql(token: &'static str, leaf: impl Fn(&[String]) -> Value + Send + Sync + 'static) -> Self {
        Self::start(move |req| {
            if req.headers.get("authorization") != Some(&basic(token)) {
                return (401, "text/plain", "unauthorized".to_owned());
            }
            (
                200,
                "application/json",
                json!({ "data": auto_reply(&req.document(), &leaf) }).to_string(),
            )
        })
        .await
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// The GraphQL documents received so far, in order.
    pub fn documents(&self) -> Vec<String> {
        self.requests().iter().map(Recorded::document).collect()
    }
}

/// The `Authorization` header value for a session token (token as user, empty password).
pub fn basic(token: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{token}:"))
    )
}

/// Builds a `data` object shaped like `document`: every leaf field gets `leaf(path)`, where `path` holds the
/// response keys (aliases where given) from the root. Inline fragments merge into their parent.
pub fn auto_reply(document: &str, leaf: &dyn Fn(&[String]) -> Value) -> Value {
    let mut p = Parser {
        s: document.as_bytes(),
        i: 0,
    };
    p.skip_ws();
    if p.s[p.i..].starts_with(b"query") {
        p.i += 5;
    }
    let mut path = Vec::new();
    p.selection_set(&mut path, leaf)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && (self.s[self.i].is_ascii_whitespace() || self.s[self.i] == b',') {
            self.i += 1;
        }
    }

    fn name(&mut self) -> String {
        self.skip_ws();
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_') {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn peek(&mut self) -> u8 {
        self.skip_ws();
        self.s.get(self.i).copied().unwrap_or(0)
    }

    fn skip_args(&mut self) {
        // At `(`: skip to the matching `)`, minding strings and escapes.
        let mut depth = 0;
        let mut in_str = false;
        while self.i < self.s.len() {
            let c = self.s[self.i];
            self.i += 1;
            if in_str {
                if c == b'\\' {
                    self.i += 1;
                } else if c == b'"' {
                    in_str = false;
                }
                continue;
            }
            match c {
                b'"' => in_str = true,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    fn selection_set(&mut self, path: &mut Vec<String>, leaf: &dyn Fn(&[String]) -> Value) -> Value {
        let mut out = Map::new();
        if self.peek() != b'{' {
            return Value::Object(out);
        }
        self.i += 1;
        loop {
            match self.peek() {
                b'}' => {
                    self.i += 1;
                    break;
                }
                0 => break,
                b'.' => {
                    self.i += 3;
                    let _on = self.name();
                    let _type = self.name();
                    if let Value::Object(inner) = self.selection_set(path, leaf) {
                        out.extend(inner);
                    }
                }
                _ => {
                    let key = self.name();
                    if self.peek() == b':' {
                        // `key` is an alias: the response uses it; the field name that follows does not matter.
                        self.i += 1;
                        let _field = self.name();
                    }
                    if self.peek() == b'(' {
                        self.skip_args();
                    }
                    path.push(key.clone());
                    let value = if self.peek() == b'{' {
                        self.selection_set(path, leaf)
                    } else {
                        leaf(path)
                    };
                    path.pop();
                    out.insert(key, value);
                }
            }
        }
        Value::Object(out)
    }
}
