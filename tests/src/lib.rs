//! Test support shared by the integration tests.
//!
//! [`FakeEngine`] is a real HTTP/1.1 server on `127.0.0.1:0` that records every request and answers with a
//! handler the test chooses; [`auto_reply`] builds a `data` object shaped like any query document, so tests
//! can answer chains without spelling out the nesting. [`registry`] holds the image fixtures: a real registry
//! on loopback, a busybox image, and a scriptable fake registry; [`images`] keeps the long-running offline
//! registry on `127.0.0.1:5000` with Debian images that stand in for Docker Hub's.

pub mod images;
pub mod registry;

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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

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

/// An answer: status, content type, body.
pub type Reply = (u16, &'static str, String);

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A real HTTP server on loopback that records requests and answers with a handler.
pub struct FakeEngine {
    /// The port it listens on.
    pub port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeEngine {
    /// Starts a server answering every request with `handler`.
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    // Keep-alive: serve requests on this connection until the client closes it.
                    while let Some(req) = read_request(&mut reader).await {
                        recorded.lock().expect("lock").push(req.clone());
                        let (status, content_type, body) = handler(&req);
                        let head = format!(
                            "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
                            reason(status),
                            body.len()
                        );
                        if write.write_all(head.as_bytes()).await.is_err()
                            || write.write_all(body.as_bytes()).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        Self { port, requests, task }
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

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `Authorization` header value for a session token (token as user, empty password).
pub fn basic(token: &str) -> String {
    format!("Basic {}", base64(format!("{token}:").as_bytes()))
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Status",
    }
}

async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> Option<Recorded> {
    let (request_line, headers, body) = read_http_request(reader).await?;
    Some(Recorded {
        request_line,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Reads one HTTP/1.1 request: its request line (trimmed), headers (names lowercased) and body
/// (`Content-Length` bytes). `None` when the connection closes first.
pub(crate) async fn read_http_request<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Option<(String, HashMap<String, String>, Vec<u8>)> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await.ok()? == 0 {
        return None;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await.ok()?;
    Some((request_line.trim_end().to_owned(), headers, body))
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
